//! 1×1 convolution of a one-pixel map: output [M] = weight [M, K] · input [K] + bias,
//! through the epilogue. These are the two fully connected layers of a squeeze-and-excitation
//! block (global pool → 1×1 → relu → 1×1 → hard sigmoid) of mobile networks. As a GEMM with
//! one column, the column-blocked pointwise kernel computes (and zero-pads) a whole tile of
//! columns for the one it keeps and the packed GEMM packs for a single dot product per row:
//! cls's 200 × 50 layer took 5 µs that way. Here every output is one dot product of a weight
//! row, which is contiguous, with the input vector, four rows at a time so that four
//! independent FMA chains share each loaded input vector.
const std = @import("std");
const math = @import("math.zig");
const conv = @import("conv.zig");

const lanes = math.lanes;
const V = math.V;
const Epilogue = conv.Epilogue;

/// Weight rows summed together: four FMA chains (each as long as K's vectors) in flight.
const group_rows = 4;

/// Outputs [row_begin, row_end) of one image: output[r] = epilogue(bias[r] + Σₖ weight[r·K +
/// k] · input[k]). `output` is the image's whole [M].
pub fn rows(weight: []const f32, bias: ?[]const f32, epilogue: Epilogue, input: []const f32, row_begin: usize, row_end: usize, output: []f32) void {
    const k = input.len;
    std.debug.assert(k > 0 and weight.len == output.len * k);
    std.debug.assert(row_begin <= row_end and row_end <= output.len);
    if (bias) |values| std.debug.assert(values.len == output.len);
    var row = row_begin;
    while (row < row_end) {
        const count = @min(row_end - row, group_rows);
        switch (count) {
            inline 1...group_rows => |c| group(c, weight[row * k ..][0 .. c * k], input, bias, epilogue, row, output),
            else => unreachable,
        }
        row += count;
    }
}

/// Outputs row … row + count − 1: whole vectors of K in registers, the reduction, then the
/// last K mod 16 products one at a time.
fn group(comptime count: usize, weight: []const f32, input: []const f32, bias: ?[]const f32, epilogue: Epilogue, row: usize, output: []f32) void {
    const k = input.len;
    const whole = k - k % lanes;
    var sums: [count]V = @splat(@splat(0));
    var at: usize = 0;
    while (at < whole) : (at += lanes) {
        const x: V = input[at..][0..lanes].*;
        inline for (&sums, 0..) |*sum, r| sum.* = @mulAdd(V, weight[r * k + at ..][0..lanes].*, x, sum.*);
    }
    inline for (sums, 0..) |sum, r| {
        var total = @reduce(.Add, sum);
        for (whole..k) |tail| total = @mulAdd(f32, weight[r * k + tail], input[tail], total);
        const b = if (bias) |values| values[row + r] else 0;
        output[row + r] = epilogue.scalar(total + b);
    }
}

test "one-pixel 1x1 rows match the direct sum on awkward sizes" {
    const allocator = std.testing.allocator;
    var prng = std.Random.DefaultPrng.init(16);
    const random = prng.random();
    // M, K: single rows and columns, K below, at and past a vector, M past a group of four.
    const cases = [_][2]usize{ .{ 1, 1 }, .{ 3, 7 }, .{ 5, 16 }, .{ 8, 17 }, .{ 13, 50 }, .{ 200, 50 }, .{ 50, 200 }, .{ 7, 33 } };
    const epilogues = [_]Epilogue{ .{}, Epilogue.relu, .{ .activation = .hard_swish, .scale = 0.5, .shift = -1 } };
    for (cases, 0..) |c, index| {
        const m = c[0];
        const k = c[1];
        const weight = try allocator.alloc(f32, m * k);
        defer allocator.free(weight);
        const input = try allocator.alloc(f32, k);
        defer allocator.free(input);
        const bias = try allocator.alloc(f32, m);
        defer allocator.free(bias);
        const got = try allocator.alloc(f32, m);
        defer allocator.free(got);
        for (weight) |*x| x.* = random.float(f32) * 2 - 1;
        for (input) |*x| x.* = random.float(f32) * 2 - 1;
        for (bias) |*x| x.* = random.float(f32) * 2 - 1;
        const epilogue = epilogues[index % epilogues.len];
        const with_bias: ?[]const f32 = if (index % 2 == 0) bias else null;
        @memset(got, std.math.nan(f32));
        // Two ranges, the split ops/conv.zig makes across workers, the first ending mid-group.
        const split = @min(m, 5);
        rows(weight, with_bias, epilogue, input, 0, split, got);
        rows(weight, with_bias, epilogue, input, split, m, got);
        for (0..m) |r| {
            var expected: f32 = if (with_bias) |values| values[r] else 0;
            for (0..k) |i| expected += weight[r * k + i] * input[i];
            try std.testing.expectApproxEqAbs(epilogue.scalar(expected), got[r], 1e-5 * @as(f32, @floatFromInt(k)));
        }
    }
}
