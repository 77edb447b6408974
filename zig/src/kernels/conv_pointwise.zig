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
                if (x + tile_columns <= n) {
                    // Whole vectors of every input row (the block may end mid-tile: the
                    // extra columns are computed and not stored).
                    dispatch(rows, weight[row * in_channels ..][0 .. rows * in_channels], in_channels, bias, row, epilogue, input[x..], n, target);
                } else {
                    // The image's last columns: a zero-padded copy, so no load runs past it.
                    for (0..in_channels) |k| {
                        const destination = tail[k * tile_columns ..][0..tile_columns];
                        @memset(destination, 0);
                        @memcpy(destination[0 .. n - x], input[k * n + x ..][0 .. n - x]);
                    }
                    dispatch(rows, weight[row * in_channels ..][0 .. rows * in_channels], in_channels, bias, row, epilogue, tail[0 .. in_channels * tile_columns], tile_columns, target);
                }
            }
        }
    }
}

/// Where a tile's results go.
const Target = union(enum) {
    /// Rows of output [M, n], columns [x, x + columns).
    plain: struct { output: []f32, n: usize, x: usize, columns: usize },
};

fn dispatch(rows: usize, weight: []const f32, in_channels: usize, bias: ?[]const f32, row: usize, epilogue: Epilogue, input: []const f32, stride: usize, target: Target) void {
    switch (rows) {
        inline 1...tile_rows => |r| tile(r, weight, in_channels, bias, row, epilogue, input, stride, target),
        else => unreachable,
    }
}

/// One register tile: `rows` output rows (from `row` on) × tile_columns columns, summed over
/// the K input rows (row stride `stride`) of `input`, then bias, epilogue and store.
fn tile(comptime rows: usize, weight: []const f32, in_channels: usize, bias: ?[]const f32, row: usize, epilogue: Epilogue, input: []const f32, stride: usize, target: Target) void {
    var sums: [rows][tile_vectors]V = undefined;
    inline for (0..rows) |r| {
        const b: V = @splat(if (bias) |values| values[row + r] else 0);
        inline for (0..tile_vectors) |v| sums[r][v] = b;
    }
    for (0..in_channels) |k| {
        var loaded: [tile_vectors]V = undefined;
        inline for (0..tile_vectors) |v| loaded[v] = input[k * stride + v * lanes ..][0..lanes].*;
        inline for (0..rows) |r| {
            const w: V = @splat(weight[r * in_channels + k]);
            inline for (0..tile_vectors) |v| sums[r][v] = @mulAdd(V, w, loaded[v], sums[r][v]);
        }
    }
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
