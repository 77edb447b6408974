//! Direct bf16 convolution at stride 1 on AMX tiles (`tdpbf16ps`), for the opt-in bf16
//! precision: no im2col, and the input is converted to bf16 once per call, not once per tap.
//!
//! Why not gemm_amx.zig's implicit GEMM: it converts the im2col rows to bf16 while it packs
//! them, so each input value is converted kh · kw times and each conversion feeds only
//! out-channels products. PaddleOCR det's 24 × 96 × 3 × 3 convs spent more on that than AMX
//! saved and stayed f32 (2.6–2.8 ms each at 80 × 80, 1 thread, against OpenVINO's 1.0).
//!
//! The layouts (a word holds two consecutive input channels, the even one in the low half):
//! - the input becomes zero-padded pair planes: plane q holds channels 2q and 2q + 1 of the
//!   padded image, flat (y · W' + x), `plane_stride` words apart, zero past the image. The
//!   output is computed at every flat position y · W' + x (the columns x ≥ the output width
//!   are junk, dropped by the caller), so tap (ky, kx) of output column p reads word
//!   p + offsets[tap] of each plane: a B tile (16 pairs × 16 output columns) is one
//!   `tileloadd` with the plane stride as its row stride, straight from the planes.
//! - the weights [out, channels, kh, kw] are packed once at load: row r (output channel),
//!   tap t, pair q is word (r · taps + t) · pairs + q, so an A tile (16 output channels ×
//!   16 pairs of one tap) is one strided load too. Rows are padded to 32, pairs to 16.
//! The register block is 32 output channels × 32 columns (tmm0–3), stored straight into the
//! flat f32 output (rows padded to 32, `ldc` a multiple of 32).
const std = @import("std");
const gemm_amx = @import("gemm_amx.zig");
const bf16 = @import("gemm_bf16.zig");
const status = @import("../status.zig");

const assert = std.debug.assert;
const Error = status.Error;

/// Rows and columns of a tile, and pairs per tile.
const tile = 16;
/// Output channels and columns of one register block (2 × 2 tiles).
pub const block = 2 * tile;
/// The flat output's row stride is a multiple of the register block.
pub const ldc_alignment = block;

/// Whether this process can run the kernel (gemm_amx's AMX check: CPU, level and Linux).
pub const supported = gemm_amx.supported;

const divideCeil = @import("math.zig").divideCeil;

/// Channel pairs padded to whole tiles: the planes (and packed weights) there are zero.
pub fn pairsPadded(channels: usize) usize {
    return divideCeil(@max(bf16.pairsOf(channels), 1), tile) * tile;
}

/// Output channels padded to whole register blocks: the flat output has this many rows.
pub fn rowsPadded(out_channels: usize) usize {
    return divideCeil(@max(out_channels, 1), block) * block;
}

/// Words of the packed weights of `out_channels` × `channels` × `taps`.
pub fn weightsLength(out_channels: usize, channels: usize, taps: usize) usize {
    return rowsPadded(out_channels) * taps * pairsPadded(channels);
}

/// Packs weight [out_channels, channels, taps] (f32, contiguous) into `out` (see the top).
pub fn packWeights(weight: []const f32, out_channels: usize, channels: usize, taps: usize, out: []u32) void {
    assert(out.len == weightsLength(out_channels, channels, taps));
    packPanels(1, weight, out_channels, channels, taps, pairsPadded(channels), out);
}

/// Packs weight [out_channels, channels, taps] (f32, contiguous) in panels of `panel_rows`
/// output channels, `pairs` (at least the channel pairs) per tap: row r, tap t, pair q is word
/// ((r / panel_rows · taps + t) · pairs + q) · panel_rows + r % panel_rows; words past the
/// channels or rows are zero. With one row per panel, this file's layout; with 8,
/// conv_bf16.zig's.
pub fn packPanels(comptime panel_rows: usize, weight: []const f32, out_channels: usize, channels: usize, taps: usize, pairs: usize, out: []u32) void {
    assert(weight.len == out_channels * channels * taps);
    assert(pairs >= bf16.pairsOf(channels) and out.len >= divideCeil(out_channels, panel_rows) * panel_rows * taps * pairs);
    @memset(out, 0);
    for (0..out_channels) |r| for (0..taps) |t| for (0..bf16.pairsOf(channels)) |q| {
        const even = weight[(r * channels + 2 * q) * taps + t];
        const odd = if (2 * q + 1 < channels) weight[(r * channels + 2 * q + 1) * taps + t] else 0;
        out[((r / panel_rows * taps + t) * pairs + q) * panel_rows + r % panel_rows] = bf16.pairWord(even, odd);
    };
}

/// Input channels per plane word: a bf16 pair.
pub const channels_per_word = 2;

/// Where one image's pair planes lie and how they are padded.
pub const Planes = PlanesOf(channels_per_word);

/// Zero-padded input planes of `per_word` channels per u32 word: 2, this file's and
/// conv_bf16.zig's bf16 pairs (the even channel in the low half); 1, conv_f32_direct.zig's
/// f32 bits.
pub fn PlanesOf(comptime per_word: usize) type {
    comptime assert(per_word == 1 or per_word == 2);
    return struct {
        /// Input height and width, and the zero rows above and columns left of it.
        image: [2]usize,
        padding: [2]usize,
        /// The padded width W' and height H'.
        width: usize,
        height: usize,
        /// Words from one plane to the next: H' · W' plus the zero slack the last columns read.
        stride: usize,

        const Self = @This();

        /// Words of slack: the junk columns of the last block read up to `block` words plus the
        /// widest tap offset past H' · W' (see Args.validate, which checks; blocks of other
        /// kernels are at most this file's, and they stop at ldc too).
        pub fn init(image: [2]usize, padding: [2]usize, kernel: [2]usize, dilation: [2]usize) Self {
            const width = image[1] + 2 * padding[1];
            const height = image[0] + 2 * padding[0];
            const slack = (kernel[1] - 1) * dilation[1] + 2 * block;
            return .{ .image = image, .padding = padding, .width = width, .height = height, .stride = std.mem.alignForward(usize, height * width + slack, tile) };
        }

        /// Converts planes [plane_begin, plane_end) of `input` (channels × H × W, f32) into
        /// `out` (planes × stride words), padding and slack zeroed; planes past the channels
        /// are zero.
        pub fn pack(planes: Self, input: []const f32, channels: usize, out: []u32, plane_begin: usize, plane_end: usize) void {
            const area = planes.image[0] * planes.image[1];
            assert(input.len == channels * area);
            assert(out.len >= plane_end * planes.stride);
            if (per_word == 2) assert(plane_end <= pairsPadded(channels));
            for (plane_begin..plane_end) |q| {
                const plane = out[q * planes.stride ..][0..planes.stride];
                const first = per_word * q;
                if (first >= channels) {
                    @memset(plane, 0);
                    continue;
                }
                const top = planes.padding[0] * planes.width;
                @memset(plane[0..top], 0);
                for (0..planes.image[0]) |y| {
                    const row = plane[top + y * planes.width ..][0..planes.width];
                    const left = planes.padding[1];
                    @memset(row[0..left], 0);
                    const even = input[first * area + y * planes.image[1] ..][0..planes.image[1]];
                    const words = row[left..][0..planes.image[1]];
                    if (per_word == 1) {
                        @memcpy(words, @as([]const u32, @ptrCast(even)));
                    } else {
                        const odd: ?[]const f32 = if (first + 1 < channels) input[(first + 1) * area + y * planes.image[1] ..][0..planes.image[1]] else null;
                        bf16.packRowPair(even, odd, words);
                    }
                    @memset(row[left + planes.image[1] ..], 0);
                }
                @memset(plane[top + planes.image[0] * planes.width ..], 0);
            }
        }
    };
}

/// One image's convolution on this file's tiles (see DirectArgs).
pub const Args = DirectArgs(Tiles);

/// One image's convolution: flat (rows × ldc, f32) = packed weights · the pair planes read
/// at each tap's offset. `Kernel` (this file's Tiles, conv_bf16.zig's Registers) has the
/// multiples its blocks need (row_multiple, pair_multiple, ldc_multiple) and
/// `run(args, column_begin, column_end)`.
pub fn DirectArgs(comptime Kernel: type) type {
    return struct {
        /// Output channels padded (rowsPadded), taps and channel pairs padded (pairsPadded).
        rows: usize,
        taps: usize,
        pairs: usize,
        weights: []const u32,
        planes: []const u32,
        plane_stride: usize,
        /// Per tap (ky · kw + kx): ky · dh · W' + kx · dw.
        offsets: []const usize,
        flat: []f32,
        /// Flat row stride, a multiple of `Kernel.ldc_multiple`: columns [0, ldc) are
        /// computed.
        ldc: usize,

        const Self = @This();

        /// Checks that every word the kernel loads and every float it stores lies inside the
        /// given slices (the tile instructions are not bounds-checked, nor is the library).
        pub fn validate(args: *const Self) Error!void {
            if (args.rows % Kernel.row_multiple != 0 or args.pairs == 0 or args.pairs % Kernel.pair_multiple != 0 or args.ldc % Kernel.ldc_multiple != 0 or args.taps == 0 or args.offsets.len != args.taps) {
                return status.fail(error.ShapeMismatch, "direct conv: rows {d}, pairs {d}, ldc {d} must be whole blocks and {d} offsets match {d} taps", .{ args.rows, args.pairs, args.ldc, args.offsets.len, args.taps });
            }
            if (args.weights.len != args.rows * args.taps * args.pairs) {
                return status.fail(error.ShapeMismatch, "direct conv: {d} packed weight words for {d} rows × {d} taps × {d} pairs", .{ args.weights.len, args.rows, args.taps, args.pairs });
            }
            if (args.planes.len < args.pairs * args.plane_stride or args.flat.len < args.rows * args.ldc) {
                return status.fail(error.IndexOutOfRange, "direct conv: {d} plane words or {d} output floats are too few", .{ args.planes.len, args.flat.len });
            }
            for (args.offsets) |offset| if (offset + args.ldc > args.plane_stride) {
                return status.fail(error.IndexOutOfRange, "direct conv: tap offset {d} plus {d} columns overruns a plane of {d} words", .{ offset, args.ldc, args.plane_stride });
            };
        }

        /// Computes columns [column_begin, column_end) of every row (see Kernel.run).
        /// `validate` must have passed and the kernel be supported.
        pub fn run(args: *const Self, column_begin: usize, column_end: usize) void {
            Kernel.run(args, column_begin, column_end);
        }
    };
}

/// The AMX register block of Args.
const Tiles = struct {
    pub const row_multiple = block;
    pub const pair_multiple = tile;
    pub const ldc_multiple = ldc_alignment;

    /// Columns [column_begin, column_end) (multiples of `block`) of every row.
    pub fn run(args: *const Args, column_begin: usize, column_end: usize) void {
        assert(column_begin % block == 0 and column_end % block == 0 and column_end <= args.ldc);
        if (column_begin == column_end) return;
        if (comptime !gemm_amx.compiled) unreachable;
        gemm_amx.loadTileConfig();
        // Pairs with loadTileConfig: the tiles are free again before any other code runs.
        defer gemm_amx.releaseTiles();
        var column = column_begin;
        while (column < column_end) : (column += block) {
            var row: usize = 0;
            while (row < args.rows) : (row += block) registerBlock(args, row, column);
        }
    }

    /// Rows [row, +32) × columns [column, +32) of flat, summed over every tap and pair.
    fn registerBlock(args: *const Args, row: usize, column: usize) void {
        const a_stride = args.taps * args.pairs;
        const a_stride_bytes = a_stride * @sizeOf(u32);
        const b_stride_bytes = args.plane_stride * @sizeOf(u32);
        gemm_amx.zeroAccumulators();
        for (args.offsets, 0..) |offset, t| {
            var q: usize = 0;
            while (q < args.pairs) : (q += tile) {
                // Bounds: validate checked rows · taps · pairs words of weights and that
                // column + 31 + offset stays inside each of the `pairs` planes.
                const a0 = args.weights[(row * args.taps + t) * args.pairs + q ..].ptr;
                const b0 = args.planes[q * args.plane_stride + column + offset ..].ptr;
                gemm_amx.multiply2x2(a0, a0 + tile * a_stride, a_stride_bytes, b0, b0 + tile, b_stride_bytes);
            }
        }
        gemm_amx.storeAccumulators(args.flat[row * args.ldc + column ..].ptr, args.ldc);
    }
};

// -------------------------------------------------------------------------------------------
// Tests: against a scalar convolution on bf16-rounded inputs, in f64.

const testing = std.testing;

/// One convolution of the reference tests, shared with conv_bf16.zig's.
pub const TestCase = struct {
    channels: usize,
    out_channels: usize,
    image: [2]usize,
    kernel: [2]usize,
    padding: [2]usize,
    dilation: [2]usize = .{ 1, 1 },
    threads: usize = 1,
};

fn rounded(x: f32) f64 {
    return bf16.fromBf16(bf16.toBf16(x));
}

fn expectMatches(random: std.Random, case: TestCase) !void {
    return expectKernelMatches(@This(), random, case);
}

/// Runs `case` on kernel module K (this file, conv_bf16.zig or conv_f32_direct.zig: Planes,
/// pairsPadded, rowsPadded, weightsLength, packWeights, block, ldc_alignment, Args,
/// channels_per_word) over `case.threads` workers and compares the flat output with the
/// reference in f64: on bf16-rounded inputs for the bf16 kernels, on the inputs themselves
/// for the f32 one (within a few ulps of the sum of the products' magnitudes). For tests only.
pub fn expectKernelMatches(comptime K: type, random: std.Random, case: TestCase) !void {
    const allocator = testing.allocator;
    const taps = case.kernel[0] * case.kernel[1];
    const area = case.image[0] * case.image[1];
    const input = try allocator.alloc(f32, case.channels * area);
    defer allocator.free(input);
    const weight = try allocator.alloc(f32, case.out_channels * case.channels * taps);
    defer allocator.free(weight);
    for (input) |*x| x.* = random.float(f32) * 2 - 1;
    for (weight) |*x| x.* = random.float(f32) * 2 - 1;

    const planes = K.Planes.init(case.image, case.padding, case.kernel, case.dilation);
    const grid = [2]usize{
        planes.height - (case.kernel[0] - 1) * case.dilation[0],
        planes.width - (case.kernel[1] - 1) * case.dilation[1],
    };
    const pairs = K.pairsPadded(case.channels);
    const rows = K.rowsPadded(case.out_channels);
    const ldc = std.mem.alignForward(usize, grid[0] * planes.width, K.ldc_alignment);
    const packed_weights = try allocator.alloc(u32, K.weightsLength(case.out_channels, case.channels, taps));
    defer allocator.free(packed_weights);
    K.packWeights(weight, case.out_channels, case.channels, taps, packed_weights);
    const plane_words = try allocator.alloc(u32, pairs * planes.stride);
    defer allocator.free(plane_words);
    // Two halves, as two workers would convert them.
    planes.pack(input, case.channels, plane_words, 0, pairs / 2);
    planes.pack(input, case.channels, plane_words, pairs / 2, pairs);
    const offsets = try allocator.alloc(usize, taps);
    defer allocator.free(offsets);
    for (0..case.kernel[0]) |ky| for (0..case.kernel[1]) |kx| {
        offsets[ky * case.kernel[1] + kx] = ky * case.dilation[0] * planes.width + kx * case.dilation[1];
    };
    const flat = try allocator.alloc(f32, rows * ldc);
    defer allocator.free(flat);
    const args: K.Args = .{ .rows = rows, .taps = taps, .pairs = pairs, .weights = packed_weights, .planes = plane_words, .plane_stride = planes.stride, .offsets = offsets, .flat = flat, .ldc = ldc };
    try args.validate();
    const blocks = std.math.divCeil(usize, ldc, K.block) catch unreachable;
    const workers = @min(case.threads, blocks);
    var threads: [8]std.Thread = undefined;
    for (0..workers) |w| {
        const begin = blocks * w / workers * K.block;
        const end = @min(blocks * (w + 1) / workers * K.block, ldc);
        threads[w] = try std.Thread.spawn(.{}, K.Args.run, .{ &args, begin, end });
    }
    for (threads[0..workers]) |thread| thread.join();

    for (0..case.out_channels) |o| for (0..grid[0]) |y| for (0..grid[1]) |x| {
        var sum: f64 = 0;
        var magnitude: f64 = 0;
        for (0..case.channels) |c| for (0..case.kernel[0]) |ky| for (0..case.kernel[1]) |kx| {
            const iy = @as(isize, @intCast(y + ky * case.dilation[0])) - @as(isize, @intCast(case.padding[0]));
            const ix = @as(isize, @intCast(x + kx * case.dilation[1])) - @as(isize, @intCast(case.padding[1]));
            if (iy < 0 or ix < 0 or iy >= case.image[0] or ix >= case.image[1]) continue;
            const value = input[c * area + @as(usize, @intCast(iy)) * case.image[1] + @as(usize, @intCast(ix))];
            const w = weight[(o * case.channels + c) * taps + ky * case.kernel[1] + kx];
            sum += if (K.channels_per_word == 1) @as(f64, value) * w else rounded(value) * rounded(w);
            magnitude += @abs(@as(f64, value) * w);
        };
        const got = flat[o * ldc + y * planes.width + x];
        const tolerance = if (K.channels_per_word == 1) 1e-6 * (magnitude + 1) else 2e-6 * @as(f64, @floatFromInt(case.channels * taps + 8));
        if (@abs(got - sum) > tolerance) {
            std.debug.print("out[{d}, {d}, {d}] = {d}, expected {d} in {any}\n", .{ o, y, x, got, sum, case });
            return error.TestExpectedApproxEqAbs;
        }
    };
}

test "AMX direct bf16 conv matches the bf16-rounded reference: awkward shapes, padding, dilation, 1 and N threads" {
    if (!supported()) return error.SkipZigTest;
    var prng = std.Random.DefaultPrng.init(0xc0a);
    const random = prng.random();
    for ([_]TestCase{
        .{ .channels = 96, .out_channels = 24, .image = .{ 20, 20 }, .kernel = .{ 3, 3 }, .padding = .{ 1, 1 } },
        .{ .channels = 96, .out_channels = 24, .image = .{ 20, 20 }, .kernel = .{ 3, 3 }, .padding = .{ 1, 1 }, .threads = 2 },
        .{ .channels = 1, .out_channels = 1, .image = .{ 1, 1 }, .kernel = .{ 1, 1 }, .padding = .{ 0, 0 } },
        .{ .channels = 3, .out_channels = 17, .image = .{ 7, 5 }, .kernel = .{ 3, 2 }, .padding = .{ 2, 0 }, .threads = 3 },
        .{ .channels = 33, .out_channels = 40, .image = .{ 9, 13 }, .kernel = .{ 5, 5 }, .padding = .{ 2, 2 }, .threads = 2 },
        .{ .channels = 35, .out_channels = 33, .image = .{ 11, 6 }, .kernel = .{ 3, 3 }, .padding = .{ 0, 3 }, .dilation = .{ 2, 1 } },
        .{ .channels = 64, .out_channels = 70, .image = .{ 3, 31 }, .kernel = .{ 1, 3 }, .padding = .{ 0, 1 }, .threads = 5 },
    }) |case| try expectMatches(random, case);
}
