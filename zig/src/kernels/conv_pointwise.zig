//! Direct 1×1 convolution for few input channels, NCHW float32: output [M, N] = weight
//! [M, K] · input [K, N] (N the pixels), bias and epilogue applied in registers. With K
//! small (the 16 → 32 or 12 → 96 expansions of mobile networks) a packed GEMM spends more
//! time packing its panels than multiplying them; here the input rows are read in place
//! (K rows of a block of columns stay in L1 while every output row reads them) and the
//! weights are broadcast from L1. The caller (ops/conv.zig) splits the columns over the
//! intra-op pool; the kernel knows no pool.
//!
//! The same register tile also computes a transposed convolution whose kernel equals its
//! stride, 2×2 (a decoder's upsampling): there every input pixel writes its own 2×2 output
//! block, so the product rows (out channel, ky, kx) go straight to their output positions,
//! no column buffer and no col2im scatter.
const std = @import("std");
const builtin = @import("builtin");
const math = @import("math.zig");
const conv = @import("conv.zig");

const lanes = math.lanes;
const V = math.V;
const Epilogue = conv.Epilogue;

const avx512 = builtin.cpu.arch == .x86_64 and std.Target.x86.featureSetHas(builtin.cpu.features, .avx512f);
/// Output rows of one register tile and vectors of columns per row: 12 × 2 accumulators
/// plus two loaded vectors and a broadcast fit AVX-512's 32 registers; with 16 registers
/// (AVX2, where one vector is two registers) 4 × 1.
const tile_rows = if (avx512) 12 else 4;
const tile_vectors = if (avx512) 2 else 1;
const tile_columns = tile_vectors * lanes;

/// Most input channels the direct kernels take: beyond it the GEMM's packing pays off.
pub const channels_max = 64;
/// Columns of one block: K rows of it stay in L1 (64 · 256 floats = 64 KiB at most).
pub const block_columns = 256;

/// Whether the direct pointwise kernel takes K input channels.
pub fn applies(in_channels: usize) bool {
    return in_channels > 0 and in_channels <= channels_max;
}

/// Columns [column_begin, column_end) of output [M, n] (row stride n) = weight [M, K] ·
/// input [K, n] (row stride n) + bias, through the epilogue.
pub fn pointwise(
    weight: []const f32,
    bias: ?[]const f32,
    epilogue: Epilogue,
    in_channels: usize,
    input: []const f32,
    n: usize,
    column_begin: usize,
    column_end: usize,
    output: []f32,
) void {
    const m = weight.len / in_channels;
    std.debug.assert(applies(in_channels) and weight.len == m * in_channels);
    std.debug.assert(input.len == in_channels * n and output.len == m * n);
    std.debug.assert(column_begin <= column_end and column_end <= n);
    if (bias) |values| std.debug.assert(values.len == m);
    var tail: [channels_max * tile_columns]f32 = undefined;
    var block = column_begin;
    while (block < column_end) : (block += block_columns) {
        const block_end = @min(block + block_columns, column_end);
        var row: usize = 0;
        while (row < m) : (row += tile_rows) {
            const rows = @min(tile_rows, m - row);
            var x = block;
            while (x < block_end) : (x += tile_columns) {
                const columns = @min(tile_columns, block_end - x);
                const target: Target = .{ .plain = .{ .output = output, .n = n, .x = x, .columns = columns } };
                const operands: Operands = .{ .weight = weight, .row_stride = in_channels, .k_stride = 1, .bias = bias, .bias_shift = 0, .epilogue = epilogue };
                if (x + tile_columns <= n) {
                    // Whole vectors of every input row (the block may end mid-tile: the
                    // extra columns are computed and not stored).
                    dispatch(rows, operands, row, in_channels, input[x..], n, target);
                } else {
                    // The image's last columns: a zero-padded copy, so no load runs past it.
                    const padded = padTail(&tail, in_channels, input, n, x, n - x);
                    dispatch(rows, operands, row, in_channels, padded, tile_columns, target);
                }
            }
        }
    }
}

/// The `count` columns from x on of the K input rows (row stride n) in `tail`, zero-padded
/// to whole tiles, so that no load runs past the input.
fn padTail(tail: *[channels_max * tile_columns]f32, in_channels: usize, input: []const f32, n: usize, x: usize, count: usize) []const f32 {
    std.debug.assert(count > 0 and count <= tile_columns);
    for (0..in_channels) |k| {
        const destination = tail[k * tile_columns ..][0..tile_columns];
        @memset(destination, 0);
        @memcpy(destination[0..count], input[k * n + x ..][0..count]);
    }
    return tail[0 .. in_channels * tile_columns];
}

/// The product's left operand, element (row r, input channel k) at r·row_stride +
/// k·k_stride, and what follows the sum: bias[r >> bias_shift], the epilogue.
const Operands = struct {
    weight: []const f32,
    row_stride: usize,
    k_stride: usize,
    bias: ?[]const f32,
    bias_shift: u2,
    epilogue: Epilogue,
};

/// Where a tile's results go.
const Target = union(enum) {
    /// Rows of output [M, n], columns [x, x + columns).
    plain: struct { output: []f32, n: usize, x: usize, columns: usize },
    /// Product row r = (channel, ky, kx) of input pixel (y, x + i) goes to output pixel
    /// (2y + ky, 2(x + i) + kx) of that channel's plane: the 2×2, stride 2 transposed
    /// convolution. `output` is one image's output, `width` its row length (2W).
    upsample: struct { output: []f32, width: usize, plane: usize, y: usize, x: usize, columns: usize },
};

/// Where the tile finds input row k: at k·stride, or at offsets[k] (the buffered rows of
/// smallConvRows).
const Rows = union(enum) {
    strided: usize,
    table: []const usize,

    fn at(rows: Rows, k: usize) usize {
        return switch (rows) {
            .strided => |stride| k * stride,
            .table => |offsets| offsets[k],
        };
    }
};

fn dispatch(rows: usize, operands: Operands, row: usize, in_channels: usize, input: []const f32, stride: usize, target: Target) void {
    dispatchRows(rows, operands, row, in_channels, input, .{ .strided = stride }, target);
}

fn dispatchRows(rows: usize, operands: Operands, row: usize, in_channels: usize, input: []const f32, input_rows: Rows, target: Target) void {
    switch (rows) {
        inline 1...tile_rows => |r| tile(r, operands, row, in_channels, input, input_rows, target),
        else => unreachable,
    }
}

/// One register tile: `rows` product rows (from `row` on) × tile_columns columns, summed
/// over the K input rows (row stride `stride`) of `input`, then bias, epilogue and store.
fn tile(comptime rows: usize, operands: Operands, row: usize, in_channels: usize, input: []const f32, input_rows: Rows, target: Target) void {
    var sums: [rows][tile_vectors]V = undefined;
    inline for (0..rows) |r| {
        const b: V = @splat(if (operands.bias) |values| values[(row + r) >> operands.bias_shift] else 0);
        inline for (0..tile_vectors) |v| sums[r][v] = b;
    }
    const weight = operands.weight[row * operands.row_stride ..];
    for (0..in_channels) |k| {
        var loaded: [tile_vectors]V = undefined;
        const source = input[input_rows.at(k)..][0..tile_columns];
        inline for (0..tile_vectors) |v| loaded[v] = source[v * lanes ..][0..lanes].*;
        const column = weight[k * operands.k_stride ..];
        inline for (0..rows) |r| {
            const w: V = @splat(column[r * operands.row_stride]);
            inline for (0..tile_vectors) |v| sums[r][v] = @mulAdd(V, w, loaded[v], sums[r][v]);
        }
    }
    const epilogue = operands.epilogue;
    switch (target) {
        .plain => |plain| inline for (0..rows) |r| {
            const destination = plain.output[(row + r) * plain.n + plain.x ..];
            inline for (0..tile_vectors) |v| {
                const at = v * lanes;
                const y = epilogue.vector(sums[r][v]);
                if (at + lanes <= plain.columns) {
                    destination[at..][0..lanes].* = y;
                } else if (at < plain.columns) {
                    const values: [lanes]f32 = y;
                    @memcpy(destination[at..plain.columns], values[0 .. plain.columns - at]);
                }
            }
        },
        .upsample => |up| {
            // Only upsample2 targets this, with whole (kx = 0, kx = 1) pairs.
            if (rows % 2 != 0) unreachable;
            // Rows come in (kx = 0, kx = 1) pairs: interleaved, they are 2·lanes
            // consecutive outputs of one output row.
            inline for (0..rows / 2) |pair| {
                const r = row + 2 * pair;
                const channel = r / 4;
                const ky = (r / 2) % 2;
                const destination = up.output[channel * up.plane + (2 * up.y + ky) * up.width + 2 * up.x ..];
                inline for (0..tile_vectors) |v| {
                    const even = epilogue.vector(sums[2 * pair][v]);
                    const odd = epilogue.vector(sums[2 * pair + 1][v]);
                    const halves = [2]V{ @shuffle(f32, even, odd, interleave(0)), @shuffle(f32, even, odd, interleave(lanes / 2)) };
                    inline for (halves, 0..) |half, h| {
                        const first = v * lanes + h * lanes / 2; // input column of the half's lane 0
                        if (first + lanes / 2 <= up.columns) {
                            destination[2 * first ..][0..lanes].* = half;
                        } else if (first < up.columns) {
                            const values: [lanes]f32 = half;
                            @memcpy(destination[2 * first ..][0 .. 2 * (up.columns - first)], values[0 .. 2 * (up.columns - first)]);
                        }
                    }
                }
            }
        },
    }
}

/// Shuffle mask interleaving lanes from..from + lanes/2 of two vectors: a0 b0 a1 b1 ….
fn interleave(comptime from: usize) [lanes]i32 {
    var mask: [lanes]i32 = undefined;
    for (&mask, 0..) |*m, i| m.* = if (i % 2 == 0) @intCast(from + i / 2) else ~@as(i32, @intCast(from + i / 2));
    return mask;
}

/// Floats of stack scratch smallConvRows may use (32 KiB): its buffered input rows.
const small_buffer_floats = 8192;

/// The buffered row layout of smallConvRows: phases padded to whole tiles, so that a tile's
/// last vector never reads past its phase.
fn smallLayout(window: conv.Window) conv.PhasedRow {
    const tiles = std.math.divCeil(usize, window.grid[1], tile_columns) catch unreachable;
    const reach = (window.kernel[1] - 1) * window.dilation[1] / window.stride[1];
    return .{ .phase_len = tiles * tile_columns + reach, .stride = window.stride[1] };
}

/// Whether smallConvRows computes this (ungrouped) convolution: in_channels · kh · kw at
/// most channels_max (a network's first layer on RGB), its buffered rows on the stack.
pub fn smallApplies(window: conv.Window, in_channels: usize) bool {
    const depth = in_channels * window.taps();
    if (depth == 0 or depth > channels_max) return false;
    return in_channels * window.kernel[0] * smallLayout(window).len() <= small_buffer_floats;
}

/// Output rows [row_begin, row_end) of one image of a convolution with few input channels:
/// an implicit GEMM of weight [M, C·kh·kw] with the unfolded input, its rows (c, ky, kx)
/// read in place from a ring of zero-padded input rows split into stride phases (the
/// buffered rows of kernels/conv.zig's depthwise path), so that nothing is unfolded and
/// every tap is a contiguous run. `input` is the image's [C, H, W], `output` its [M, OH, OW].
pub fn smallConvRows(
    window: conv.Window,
    in_channels: usize,
    input: []const f32,
    weight: []const f32,
    bias: ?[]const f32,
    epilogue: Epilogue,
    row_begin: usize,
    row_end: usize,
    output: []f32,
) void {
    const depth = in_channels * window.taps();
    const m = weight.len / @max(depth, 1);
    const plane = window.imagePlane();
    const grid_plane = window.gridPlane();
    std.debug.assert(smallApplies(window, in_channels) and weight.len == m * depth);
    std.debug.assert(input.len == in_channels * plane and output.len == m * grid_plane);
    std.debug.assert(row_begin <= row_end and row_end <= window.grid[0]);
    const layout = smallLayout(window);
    const row_len = layout.len();
    const kernel_h = window.kernel[0];
    const kernel_w = window.kernel[1];
    var buffer: [small_buffer_floats]f32 = undefined;
    var tags: [channels_max]usize = @splat(std.math.maxInt(usize));
    var offsets: [channels_max]usize = undefined;
    const operands: Operands = .{ .weight = weight, .row_stride = depth, .k_stride = 1, .bias = bias, .bias_shift = 0, .epilogue = epilogue };
    const out_w = window.grid[1];
    for (row_begin..row_end) |oy| {
        const top = oy * window.stride[0];
        for (0..in_channels) |c| {
            const ring = tags[c * kernel_h ..][0..kernel_h];
            for (0..kernel_h) |ky| {
                const wanted = top + ky * window.dilation[0];
                const slot = conv.bufferedSlot(ring, top, window.dilation[0], wanted);
                const base = (c * kernel_h + slot) * row_len;
                if (ring[slot] != wanted) {
                    ring[slot] = wanted;
                    conv.fillPhases(window, input[c * plane ..][0..plane], wanted, layout, buffer[base..][0..row_len]);
                }
                for (0..kernel_w) |kx| offsets[(c * kernel_h + ky) * kernel_w + kx] = base + layout.tapOffset(window, kx);
            }
        }
        if (oy + 1 < window.grid[0]) prefetchNextRow(window, in_channels, input, m, output, oy + 1);
        var x: usize = 0;
        while (x < out_w) : (x += tile_columns) {
            const target: Target = .{ .plain = .{ .output = output, .n = grid_plane, .x = oy * out_w + x, .columns = @min(tile_columns, out_w - x) } };
            var row: usize = 0;
            while (row < m) : (row += tile_rows) {
                dispatchRows(@min(tile_rows, m - row), operands, row, depth, buffer[x..], .{ .table = offsets[0..depth] }, target);
            }
        }
    }
}

/// Starts loading the input rows output row `oy` reads first (those below the rows of row
/// oy − 1) and takes its output lines for writing, while row oy − 1 computes. A network's
/// first layer reads its input and writes its output cold (det's 3×320×320 → 16×160×160:
/// 0.18 ms with both in cache, 0.28–0.32 ms after 16 MB written elsewhere); without this
/// each row's phase copy waits for its input lines and its stores for their lines.
fn prefetchNextRow(window: conv.Window, in_channels: usize, input: []const f32, m: usize, output: []f32, oy: usize) void {
    const in_w = window.image[1];
    const plane = window.imagePlane();
    const stride = window.stride[0];
    const dilation = window.dilation[0];
    // Padded rows up to here were read by row oy − 1 (the caller's rows start no later).
    const seen = (oy - 1) * stride + (window.kernel[0] - 1) * dilation;
    for (0..window.kernel[0]) |ky| {
        const wanted = oy * stride + ky * dilation;
        if (wanted <= seen or wanted < window.padding[0]) continue;
        const row = wanted - window.padding[0];
        if (row >= window.image[0]) break;
        for (0..in_channels) |c| prefetchSpan(f32, input[c * plane + row * in_w ..][0..in_w], .read);
    }
    const out_w = window.grid[1];
    const grid_plane = window.gridPlane();
    for (0..m) |r| prefetchSpan(f32, output[r * grid_plane + oy * out_w ..][0..out_w], .write);
}

/// Prefetches every cache line of `span` (one address per 64 bytes, and its last element).
fn prefetchSpan(comptime T: type, span: []const T, comptime rw: std.builtin.PrefetchOptions.Rw) void {
    if (span.len == 0) return;
    const per_line = 64 / @sizeOf(T);
    var i: usize = 0;
    while (i < span.len) : (i += per_line) @prefetch(span[i..].ptr, .{ .rw = rw });
    @prefetch(span[span.len - 1 ..].ptr, .{ .rw = rw });
}

/// Whether `upsample2` computes this transposed convolution: kernel 2×2, stride 2, no
/// padding, dilation or output padding, one group, few input channels.
pub fn upsampleApplies(window: conv.Window, in_channels: usize, groups: usize, output_padding: [2]usize) bool {
    for (0..2) |axis| {
        if (window.kernel[axis] != 2 or window.stride[axis] != 2 or window.padding[axis] != 0) return false;
        if (window.dilation[axis] != 1 or output_padding[axis] != 0) return false;
    }
    return groups == 1 and applies(in_channels);
}

/// Input rows [row_begin, row_end) of one image of a 2×2, stride 2 transposed convolution:
/// output [C, 2H, 2W] from input [K, H, W] and weight [K, C, 2, 2] (read as the product's
/// transposed left operand, rows (c, ky, kx)), bias per output channel, the epilogue.
pub fn upsample2(
    weight: []const f32,
    bias: ?[]const f32,
    epilogue: Epilogue,
    in_channels: usize,
    input: []const f32,
    size: [2]usize,
    row_begin: usize,
    row_end: usize,
    output: []f32,
) void {
    const rows_total = weight.len / in_channels; // 4 · out channels
    const n = size[0] * size[1];
    const width = size[1];
    std.debug.assert(applies(in_channels) and rows_total % 4 == 0 and weight.len == rows_total * in_channels);
    std.debug.assert(input.len == in_channels * n and output.len == rows_total * n);
    std.debug.assert(row_begin <= row_end and row_end <= size[0]);
    if (bias) |values| std.debug.assert(values.len * 4 == rows_total);
    comptime std.debug.assert(tile_rows % 2 == 0);
    const operands: Operands = .{ .weight = weight, .row_stride = 1, .k_stride = rows_total, .bias = bias, .bias_shift = 2, .epilogue = epilogue };
    var tail: [channels_max * tile_columns]f32 = undefined;
    for (row_begin..row_end) |y| {
        var x: usize = 0;
        while (x < width) : (x += tile_columns) {
            const columns = @min(tile_columns, width - x);
            const padded: ?[]const f32 = if (columns < tile_columns) padTail(&tail, in_channels, input, n, y * width + x, columns) else null;
            var row: usize = 0;
            while (row < rows_total) : (row += tile_rows) {
                const rows = @min(tile_rows, rows_total - row);
                const target: Target = .{ .upsample = .{ .output = output, .width = 2 * width, .plane = 4 * n, .y = y, .x = x, .columns = columns } };
                switch (rows) {
                    // Rows come in whole (kx = 0, kx = 1) pairs: 4 · channels rows, tiles of an
                    // even height.
                    inline 1...tile_rows => |r| if (r % 2 == 0) {
                        if (padded) |values| {
                            tile(r, operands, row, in_channels, values, .{ .strided = tile_columns }, target);
                        } else {
                            tile(r, operands, row, in_channels, input[y * width + x ..], .{ .strided = n }, target);
                        }
                    } else unreachable,
                    else => unreachable,
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Tests: against the direct reference of kernels/conv.zig.

const testing = std.testing;

test "pointwise matches the direct convolution on awkward shapes, in column ranges" {
    var prng = std.Random.DefaultPrng.init(41);
    const random = prng.random();
    const allocator = testing.allocator;
    // (K, M, pixels): one channel, K = channels_max, M not a multiple of the tile, pixels
    // below a vector, not a multiple of a vector, across several blocks.
    const cases = [_][3]usize{ .{ 1, 1, 1 }, .{ 3, 5, 7 }, .{ 16, 32, 333 }, .{ 12, 96, 600 }, .{ 64, 13, 47 }, .{ 7, 25, 16 }, .{ 5, 12, 32 } };
    for (cases) |case| for (conv.test_epilogues) |epilogue| {
        const k, const m, const n = case;
        const input = try allocator.alloc(f32, k * n);
        defer allocator.free(input);
        const weight = try allocator.alloc(f32, m * k);
        defer allocator.free(weight);
        const bias = try allocator.alloc(f32, m);
        defer allocator.free(bias);
        const expected = try allocator.alloc(f32, m * n);
        defer allocator.free(expected);
        const got = try allocator.alloc(f32, m * n);
        defer allocator.free(got);
        for ([_][]f32{ input, weight, bias }) |values| for (values) |*x| {
            x.* = random.float(f32) * 2 - 1;
        };
        const geometry: conv.Geometry = .{ .batch = 1, .in_channels = k, .out_channels = m, .groups = 1, .window = .{
            .image = .{ 1, n },
            .grid = .{ 1, n },
            .kernel = .{ 1, 1 },
            .stride = .{ 1, 1 },
            .padding = .{ 0, 0 },
            .dilation = .{ 1, 1 },
        } };
        conv.reference(geometry, input, weight, bias, epilogue, expected);
        @memset(got, std.math.nan(f32));
        // Two ranges split at an odd column.
        const split = n / 3;
        pointwise(weight, bias, epilogue, k, input, n, 0, split, got);
        pointwise(weight, bias, epilogue, k, input, n, split, n, got);
        for (expected, got) |want, value| try testing.expectApproxEqAbs(want, value, 1e-5 * @as(f32, @floatFromInt(k + 1)));
    };
}

test "upsample2 matches the direct transposed convolution on awkward shapes, in row ranges" {
    var prng = std.Random.DefaultPrng.init(42);
    const random = prng.random();
    const allocator = testing.allocator;
    // (K, C, H, W): widths below, at and above a tile, channels not a multiple of the tile.
    const cases = [_][4]usize{ .{ 1, 1, 1, 1 }, .{ 3, 5, 4, 7 }, .{ 24, 24, 5, 32 }, .{ 64, 7, 3, 45 }, .{ 5, 3, 6, 70 } };
    for (cases) |case| for (conv.test_epilogues) |epilogue| {
        const k, const c, const h, const w = case;
        const input = try allocator.alloc(f32, k * h * w);
        defer allocator.free(input);
        const weight = try allocator.alloc(f32, k * c * 4);
        defer allocator.free(weight);
        const bias = try allocator.alloc(f32, c);
        defer allocator.free(bias);
        const expected = try allocator.alloc(f32, c * 4 * h * w);
        defer allocator.free(expected);
        const got = try allocator.alloc(f32, expected.len);
        defer allocator.free(got);
        for ([_][]f32{ input, weight, bias }) |values| for (values) |*x| {
            x.* = random.float(f32) * 2 - 1;
        };
        const window: conv.Window = .{ .image = .{ 2 * h, 2 * w }, .grid = .{ h, w }, .kernel = .{ 2, 2 }, .stride = .{ 2, 2 }, .padding = .{ 0, 0 }, .dilation = .{ 1, 1 } };
        try testing.expect(upsampleApplies(window, k, 1, .{ 0, 0 }));
        const geometry: conv.Geometry = .{ .batch = 1, .in_channels = k, .out_channels = c, .groups = 1, .window = window };
        conv.referenceTranspose(geometry, input, weight, bias, epilogue, expected);
        @memset(got, std.math.nan(f32));
        upsample2(weight, bias, epilogue, k, input, .{ h, w }, 0, h / 2, got);
        upsample2(weight, bias, epilogue, k, input, .{ h, w }, h / 2, h, got);
        for (expected, got) |want, value| try testing.expectApproxEqAbs(want, value, 1e-5 * @as(f32, @floatFromInt(k + 1)));
    };
}

test "smallConvRows matches the direct convolution on awkward shapes, in row ranges" {
    var prng = std.Random.DefaultPrng.init(43);
    const random = prng.random();
    const allocator = testing.allocator;
    const Case = struct { channels: usize, out: usize, image: [2]usize, kernel: [2]usize, stride: [2]usize = .{ 1, 1 }, padding: [2]usize = .{ 0, 0 }, dilation: [2]usize = .{ 1, 1 } };
    const cases = [_]Case{
        // An RGB stem (3×3 stride 2, odd input), a 7×7 one, one channel, a dilated strided one.
        .{ .channels = 3, .out = 16, .image = .{ 9, 67 }, .kernel = .{ 3, 3 }, .stride = .{ 2, 2 }, .padding = .{ 1, 1 } },
        .{ .channels = 1, .out = 13, .image = .{ 11, 40 }, .kernel = .{ 7, 7 }, .stride = .{ 2, 2 }, .padding = .{ 3, 3 } },
        .{ .channels = 2, .out = 5, .image = .{ 1, 1 }, .kernel = .{ 3, 3 }, .padding = .{ 1, 1 } },
        .{ .channels = 4, .out = 25, .image = .{ 10, 33 }, .kernel = .{ 3, 3 }, .stride = .{ 1, 2 }, .padding = .{ 2, 1 }, .dilation = .{ 2, 2 } },
        .{ .channels = 7, .out = 3, .image = .{ 6, 20 }, .kernel = .{ 3, 3 }, .stride = .{ 3, 3 }, .padding = .{ 1, 0 } },
    };
    for (cases) |case| for (conv.test_epilogues) |epilogue| {
        var grid: [2]usize = undefined;
        for (0..2) |axis| grid[axis] = (case.image[axis] + 2 * case.padding[axis] - case.dilation[axis] * (case.kernel[axis] - 1) - 1) / case.stride[axis] + 1;
        const window: conv.Window = .{ .image = case.image, .grid = grid, .kernel = case.kernel, .stride = case.stride, .padding = case.padding, .dilation = case.dilation };
        try testing.expect(smallApplies(window, case.channels));
        const depth = case.channels * window.taps();
        const input = try allocator.alloc(f32, case.channels * window.imagePlane());
        defer allocator.free(input);
        const weight = try allocator.alloc(f32, case.out * depth);
        defer allocator.free(weight);
        const bias = try allocator.alloc(f32, case.out);
        defer allocator.free(bias);
        const expected = try allocator.alloc(f32, case.out * window.gridPlane());
        defer allocator.free(expected);
        const got = try allocator.alloc(f32, expected.len);
        defer allocator.free(got);
        for ([_][]f32{ input, weight, bias }) |values| for (values) |*x| {
            x.* = random.float(f32) * 2 - 1;
        };
        const geometry: conv.Geometry = .{ .batch = 1, .in_channels = case.channels, .out_channels = case.out, .groups = 1, .window = window };
        conv.reference(geometry, input, weight, bias, epilogue, expected);
        @memset(got, std.math.nan(f32));
        smallConvRows(window, case.channels, input, weight, bias, epilogue, 0, grid[0] / 2, got);
        smallConvRows(window, case.channels, input, weight, bias, epilogue, grid[0] / 2, grid[0], got);
        for (expected, got) |want, value| try testing.expectApproxEqAbs(want, value, 1e-5 * @as(f32, @floatFromInt(depth + 1)));
    };
}
