//! Direct f32 convolution at stride 1 for layers with few output channels (PaddleOCR det's
//! 24 × 96 × 3 × 3 head convolutions): the register block is 8 output channels × 48 columns
//! of the output, 24 accumulators fed by 3 plane loads and 8 weight broadcasts per 24 FMAs,
//! summed over every tap and input channel.
//!
//! Why not the implicit GEMM (gemm_native's IndirectB): with M = 24 its micro tiles split
//! the rows into 14 + 10, and each panel re-reads the depth's scattered B runs; det's two
//! 3 × 3 96 → 24 convolutions on 80 × 80 took 2.4-3.3 ms each at 1 thread on a Xeon
//! (70-110 GFLOPS of a 167 GFLOPS FMA peak), 36% of det's f32 time, where OpenVINO's take 2.2.
//!
//! The layouts are conv_bf16.zig's with one f32 channel per plane in place of a bf16 pair:
//! - the input becomes zero-padded planes, one per channel, flat (y · W' + x), `stride`
//!   words apart (f32 bits in u32 words, so conv_amx.DirectArgs checks the bounds), zero
//!   past the image. The output is computed at every flat position y · W' + x (the
//!   columns x ≥ the output width are junk, dropped by ops/conv.zig's finishFlat), so tap
//!   (ky, kx) of output column p reads word p + offsets[tap] of each plane.
//! - the weights [out, channels, kh, kw] are packed per call in panels of 8 output
//!   channels: panel g, channel c, tap t, row r is word ((g · channels + c) · taps + t) · 8 + r;
//!   rows past the output channels are zero.
//! The block's loop runs over channels and, inside, over taps: each channel's few lines of
//! plane serve all its taps from L1.
//!
//! Only AVX-512 compilations use it (`compiled`): the 24 accumulators are 48 ymm registers
//! on AVX2, which has 16.
const std = @import("std");
const builtin = @import("builtin");
const conv_amx = @import("conv_amx.zig");
const conv_bf16 = @import("conv_bf16.zig");

const assert = std.debug.assert;
const testing = std.testing;

/// Output channels per register block (rows of a weight panel).
pub const panel_rows = 8;
const lanes = 16;
const block_vectors = 3;
/// Output columns per register block: workers split the flat output's columns at multiples
/// of it.
pub const block = lanes * block_vectors;
/// The flat output's row stride is a multiple of one vector: a last block of 16 or 32
/// columns runs a narrower register block.
pub const ldc_alignment = lanes;

const VF = @Vector(lanes, f32);
const VU = @Vector(lanes, u32);

/// Whether this compilation has the kernel: x86-64 with AVX-512F (the library's v4 level).
pub const compiled = builtin.cpu.arch == .x86_64 and std.Target.x86.featureSetHas(builtin.cpu.features, .avx512f);

const divideCeil = @import("math.zig").divideCeil;

/// Planes of the input: one per channel (the DirectArgs field is still called `pairs`).
pub fn pairsPadded(channels: usize) usize {
    return @max(channels, 1);
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
    assert(weight.len == out_channels * channels * taps and out.len == weightsLength(out_channels, channels, taps));
    const planes = pairsPadded(channels);
    @memset(out, 0);
    for (0..out_channels) |r| for (0..channels) |c| for (0..taps) |t| {
        out[((r / panel_rows * planes + c) * taps + t) * panel_rows + r % panel_rows] = @bitCast(weight[(r * channels + c) * taps + t]);
    };
}

/// The input planes: conv_amx.zig's geometry, one channel's f32 bits per word.
pub const Planes = conv_amx.PlanesOf(channels_per_word);
/// Input channels per plane word: one f32.
pub const channels_per_word = 1;

/// One image's convolution: flat (rows × ldc, f32) = packed weights · the planes read at
/// each tap's offset (conv_amx.DirectArgs: its fields and bounds checks).
pub const Args = conv_amx.DirectArgs(Registers);

/// The register block of Args.
const Registers = struct {
    pub const row_multiple = panel_rows;
    pub const pair_multiple = 1;
    pub const ldc_multiple = ldc_alignment;

    /// Computes columns [column_begin, column_end) of every row: column_begin a multiple of
    /// `block`, column_end too or ldc. `validate` must have passed.
    pub fn run(args: *const Args, column_begin: usize, column_end: usize) void {
        conv_bf16.runPanels(Args, panel_rows, block_vectors, registerBlock, args, column_begin, column_end);
    }

    /// Rows [panel · 8, +8) × columns [column, +16 · vectors) of flat, summed over every tap
    /// and channel.
    fn registerBlock(comptime vectors: usize, args: *const Args, panel: usize, column: usize) void {
        const channel_words = args.taps * panel_rows;
        const panel_words = args.pairs * channel_words;
        // Bounds: validate checked rows · taps · planes weight words, and that the columns up
        // to ldc (a multiple of 16) plus any offset stay inside each plane.
        const weights = args.weights[panel * panel_words ..][0..panel_words];
        var sums: [panel_rows][vectors]VF = @splat(@splat(@splat(0)));
        // Channels outside, taps inside: a channel's few lines of plane (kh rows of about 48 +
        // kw words) serve all its taps from L1 while the next channel's arrive (taps outside
        // cycled through every channel's lines per tap, past L1, and stalled on L2 in perf).
        for (0..args.pairs) |c| {
            const a = weights[c * channel_words ..][0..channel_words];
            const plane = args.planes[c * args.plane_stride + column ..];
            for (args.offsets, 0..) |offset, t| {
                var b: [vectors]VF = undefined;
                inline for (0..vectors) |v| b[v] = @bitCast(@as(VU, plane[offset + v * lanes ..][0..lanes].*));
                inline for (0..panel_rows) |r| {
                    const broadcast: VF = @splat(@as(f32, @bitCast(a[t * panel_rows + r])));
                    inline for (0..vectors) |v| sums[r][v] = @mulAdd(VF, broadcast, b[v], sums[r][v]);
                }
            }
        }
        inline for (0..panel_rows) |r| inline for (0..vectors) |v| {
            args.flat[(panel * panel_rows + r) * args.ldc + column + v * lanes ..][0..lanes].* = sums[r][v];
        };
    }
};

// -------------------------------------------------------------------------------------------
// Tests: against conv_amx.zig's scalar convolution in f64.

fn expectMatches(random: std.Random, case: conv_amx.TestCase) !void {
    return conv_amx.expectKernelMatches(@This(), random, case);
}

test "f32 direct conv matches a scalar convolution: awkward shapes, padding, dilation, 1x1, ragged panels and blocks, 1 and N threads" {
    var prng = std.Random.DefaultPrng.init(0xc0f);
    const random = prng.random();
    for ([_]conv_amx.TestCase{
        // det's head layer (96 -> 24, 3 × 3) on a 12 × 12 map: 4 column blocks, the last ragged.
        .{ .channels = 96, .out_channels = 24, .image = .{ 12, 12 }, .kernel = .{ 3, 3 }, .padding = .{ 1, 1 } },
        .{ .channels = 96, .out_channels = 24, .image = .{ 12, 12 }, .kernel = .{ 3, 3 }, .padding = .{ 1, 1 }, .threads = 2 },
        .{ .channels = 1, .out_channels = 1, .image = .{ 1, 1 }, .kernel = .{ 1, 1 }, .padding = .{ 0, 0 } },
        .{ .channels = 2, .out_channels = 9, .image = .{ 1, 1 }, .kernel = .{ 1, 1 }, .padding = .{ 0, 0 }, .threads = 2 },
        .{ .channels = 3, .out_channels = 17, .image = .{ 7, 5 }, .kernel = .{ 3, 2 }, .padding = .{ 2, 0 }, .threads = 3 },
        .{ .channels = 33, .out_channels = 40, .image = .{ 9, 13 }, .kernel = .{ 5, 5 }, .padding = .{ 2, 2 }, .threads = 2 },
        .{ .channels = 35, .out_channels = 33, .image = .{ 11, 6 }, .kernel = .{ 3, 3 }, .padding = .{ 0, 3 }, .dilation = .{ 2, 1 } },
        .{ .channels = 64, .out_channels = 7, .image = .{ 3, 31 }, .kernel = .{ 1, 3 }, .padding = .{ 0, 1 }, .threads = 5 },
        .{ .channels = 16, .out_channels = 24, .image = .{ 21, 37 }, .kernel = .{ 3, 3 }, .padding = .{ 1, 1 }, .threads = 2 },
    }) |case| try expectMatches(random, case);
}
