//! Direct bf16 convolution at stride 1 with `vdpbf16ps` (AVX512_BF16, no AMX), for the opt-in
//! bf16 precision: no im2col, and the input is converted to bf16 once per call, not once per
//! tap as gemm_bf16.zig's implicit GEMM converts its indirect rows.
//!
//! It shares conv_amx.zig's input layout (conv_amx.Planes): channel pairs as zero-padded
//! planes of words (the even channel in the low half), the output computed at every flat
//! position y · W' + x of the padded width, so tap (ky, kx) of output column p reads word
//! p + offsets[tap] of each plane. For one pair and one tap, 16 consecutive output columns
//! are one unaligned 16-word load from the plane: exactly the operand `vdpbf16ps` pairs with a
//! broadcast weight word (lane i += a.lo · b[i].lo + a.hi · b[i].hi).
//!
//! The weights [out, channels, kh, kw] are packed once at load in panels of `panel_rows`
//! output channels: panel g, tap t, pair q, row r is word ((g · taps + t) · pairs + q) ·
//! panel_rows + r, so the register block's broadcasts for one (tap, pair) are consecutive.
//! Rows are padded to whole panels with zero weights; pairs are not padded (an odd channel
//! count has a zero high half in its last plane and weight words).
//!
//! The register block is 8 output channels × 48 columns: 24 accumulators, 3 plane loads and 8
//! broadcasts per 24 `vdpbf16ps`. Its loop runs over every tap and pair, so the plane words of
//! one column block (pairs × kh rows of about 48 + kw words) are read once from L2 by the
//! first panel and from L1 by the others.
//!
//! The instruction exists only in AVX-512 compilations of this file (gemm_bf16.compiled);
//! callers check `supported()` (CPUID) first.
const std = @import("std");
const bf16 = @import("gemm_bf16.zig");
const conv_amx = @import("conv_amx.zig");
const status = @import("../status.zig");

const assert = std.debug.assert;
const Error = status.Error;

/// Output channels per register block (rows of a weight panel).
pub const panel_rows = 8;
const lanes = 16;
const block_vectors = 3;
/// Output columns per register block: workers split the flat output's columns at multiples
/// of it.
pub const block = lanes * block_vectors;
/// The flat output's row stride is a multiple of one vector: a last block of 16 or 32
/// columns runs a narrower register block (10 × 10 maps: 112 columns, not 144).
pub const ldc_alignment = lanes;

const VF = @Vector(lanes, f32);
const VU = @Vector(lanes, u32);

/// Whether this process can run the kernel (gemm_bf16's check: compiled in, CPUID, level).
pub const supported = bf16.supported;

/// The input layout: conv_amx.zig's pair planes (its slack covers this kernel's last block).
pub const Planes = conv_amx.Planes;
/// Input channels per plane word: a bf16 pair.
pub const channels_per_word = conv_amx.channels_per_word;

const divideCeil = @import("math.zig").divideCeil;

/// Channel pairs of the planes and packed weights (not padded: see the top).
pub fn pairsPadded(channels: usize) usize {
    return @max(bf16.pairsOf(channels), 1);
}

/// Output channels padded to whole panels: the flat output has this many rows.
pub fn rowsPadded(out_channels: usize) usize {
    return divideCeil(@max(out_channels, 1), panel_rows) * panel_rows;
}

/// Words of the packed weights of `out_channels` × `channels` × `taps`.
pub fn weightsLength(out_channels: usize, channels: usize, taps: usize) usize {
    return rowsPadded(out_channels) * taps * pairsPadded(channels);
}

/// Packs weight [out_channels, channels, taps] (f32, contiguous) into `out` (see the top).
pub fn packWeights(weight: []const f32, out_channels: usize, channels: usize, taps: usize, out: []u32) void {
    assert(out.len == weightsLength(out_channels, channels, taps));
    conv_amx.packPanels(panel_rows, weight, out_channels, channels, taps, pairsPadded(channels), out);
}

/// One image's convolution: flat (rows × ldc, f32) = packed weights · the pair planes read
/// at each tap's offset (conv_amx.DirectArgs: the same fields and checks as the AMX kernel's).
pub const Args = conv_amx.DirectArgs(Registers);

/// The register block of Args.
const Registers = struct {
    pub const row_multiple = panel_rows;
    pub const pair_multiple = 1;
    pub const ldc_multiple = ldc_alignment;

    /// Computes columns [column_begin, column_end) of every row: column_begin a multiple of
    /// `block`, column_end too or ldc. `validate` must have passed and `supported()` be true.
    pub fn run(args: *const Args, column_begin: usize, column_end: usize) void {
        runPanels(Args, panel_rows, block_vectors, registerBlock, args, column_begin, column_end);
    }

    /// Rows [panel · 8, +8) × columns [column, +16 · vectors) of flat, summed over every tap
    /// and pair.
    fn registerBlock(comptime vectors: usize, args: *const Args, panel: usize, column: usize) void {
        const tap_words = args.pairs * panel_rows;
        const panel_words = args.taps * tap_words;
        // Bounds: validate checked rows · taps · pairs weight words, and that the columns up to
        // ldc (a multiple of 16) plus any offset stay inside each of the `pairs` planes.
        const weights = args.weights[panel * panel_words ..][0..panel_words];
        var sums: [panel_rows][vectors]VF = @splat(@splat(@splat(0)));
        for (args.offsets, 0..) |offset, t| {
            const a = weights[t * tap_words ..][0..tap_words];
            var b_start = column + offset;
            for (0..args.pairs) |q| {
                var b: [vectors]VU = undefined;
                inline for (0..vectors) |v| b[v] = args.planes[b_start + v * lanes ..][0..lanes].*;
                inline for (0..panel_rows) |r| {
                    const broadcast: VU = @splat(a[q * panel_rows + r]);
                    inline for (0..vectors) |v| sums[r][v] = bf16.dot(sums[r][v], broadcast, b[v]);
                }
                b_start += args.plane_stride;
            }
        }
        inline for (0..panel_rows) |r| inline for (0..vectors) |v| {
            args.flat[(panel * panel_rows + r) * args.ldc + column + v * lanes ..][0..lanes].* = sums[r][v];
        };
    }
};

/// Every panel of `panel_rows` rows over column blocks of `block_vectors` vectors in
/// [column_begin, column_end) (column_begin a multiple of a block, column_end too or ldc; a
/// last block of fewer columns runs a narrower register block): the loop of this file's
/// kernel and of conv_f32_direct.zig's, around their `registerBlock(vectors, args, panel,
/// column)`.
pub fn runPanels(comptime A: type, comptime panel_rows_of: usize, comptime block_vectors_of: usize, comptime registerBlock: anytype, args: *const A, column_begin: usize, column_end: usize) void {
    const block_of = lanes * block_vectors_of;
    assert(column_begin % block_of == 0 and column_end <= args.ldc);
    assert(column_end % block_of == 0 or column_end == args.ldc);
    var column = column_begin;
    while (column < column_end) : (column += block_of) {
        const vectors = @min(block_of, column_end - column) / lanes;
        var panel: usize = 0;
        while (panel * panel_rows_of < args.rows) : (panel += 1) switch (vectors) {
            inline 1...block_vectors_of => |count| registerBlock(count, args, panel, column),
            else => unreachable,
        };
    }
}

// -------------------------------------------------------------------------------------------
// Tests: against conv_amx.zig's scalar convolution on bf16-rounded inputs, in f64.

const testing = std.testing;

const Case = conv_amx.TestCase;

fn expectMatches(random: std.Random, case: Case) !void {
    return conv_amx.expectKernelMatches(@This(), random, case);
}

test "AVX512_BF16 direct conv matches the bf16-rounded reference: awkward shapes, padding, dilation, 1x1, 1 and N threads" {
    if (!supported()) return error.SkipZigTest;
    var prng = std.Random.DefaultPrng.init(0xc0b);
    const random = prng.random();
    for ([_]Case{
        .{ .channels = 96, .out_channels = 24, .image = .{ 20, 20 }, .kernel = .{ 3, 3 }, .padding = .{ 1, 1 } },
        .{ .channels = 96, .out_channels = 24, .image = .{ 20, 20 }, .kernel = .{ 3, 3 }, .padding = .{ 1, 1 }, .threads = 2 },
        .{ .channels = 1, .out_channels = 1, .image = .{ 1, 1 }, .kernel = .{ 1, 1 }, .padding = .{ 0, 0 } },
        .{ .channels = 2, .out_channels = 9, .image = .{ 1, 1 }, .kernel = .{ 1, 1 }, .padding = .{ 0, 0 }, .threads = 2 },
        .{ .channels = 3, .out_channels = 17, .image = .{ 7, 5 }, .kernel = .{ 3, 2 }, .padding = .{ 2, 0 }, .threads = 3 },
        .{ .channels = 33, .out_channels = 40, .image = .{ 9, 13 }, .kernel = .{ 5, 5 }, .padding = .{ 2, 2 }, .threads = 2 },
        .{ .channels = 35, .out_channels = 33, .image = .{ 11, 6 }, .kernel = .{ 3, 3 }, .padding = .{ 0, 3 }, .dilation = .{ 2, 1 } },
        .{ .channels = 64, .out_channels = 70, .image = .{ 3, 31 }, .kernel = .{ 1, 3 }, .padding = .{ 0, 1 }, .threads = 5 },
        // Pointwise: taps = 1, no padding; an odd channel count and a ragged last panel.
        .{ .channels = 57, .out_channels = 23, .image = .{ 7, 11 }, .kernel = .{ 1, 1 }, .padding = .{ 0, 0 }, .threads = 2 },
        .{ .channels = 128, .out_channels = 8, .image = .{ 10, 10 }, .kernel = .{ 1, 1 }, .padding = .{ 0, 0 } },
    }) |case| try expectMatches(random, case);
}

test "validate refuses ragged blocks, short weights and offsets past a plane" {
    const words = [_]u32{0} ** (8 * 2 * 1);
    const planes = [_]u32{0} ** (2 * 100);
    var flat: [8 * block]f32 = undefined;
    var args: Args = .{ .rows = 8, .taps = 1, .pairs = 2, .weights = &words, .planes = &planes, .plane_stride = 100, .offsets = &.{0}, .flat = &flat, .ldc = block };
    try args.validate();
    args.offsets = &.{60};
    try testing.expectError(error.IndexOutOfRange, args.validate());
    args.offsets = &.{0};
    args.ldc = lanes + 1;
    try testing.expectError(error.ShapeMismatch, args.validate());
    args.ldc = block;
    args.weights = words[1..];
    try testing.expectError(error.ShapeMismatch, args.validate());
}
