//! Reduction kernels over the middle axis of a [outer, reduced, inner] block: rows
//! (inner = 1, horizontal vector reductions) and columns (inner > 1, vertical vector
//! reductions across contiguous inner elements). NaN propagates through max/min/argmax as in
//! PyTorch (NaN is the maximum).
const std = @import("std");
const math = @import("math.zig");

const lanes = math.lanes;
const V = math.V;

pub const Reduce = enum(u8) { sum, max, min, prod };

fn identity(comptime op: Reduce) f32 {
    return switch (op) {
        .sum => 0,
        .max => -std.math.inf(f32),
        .min => std.math.inf(f32),
        .prod => 1,
    };
}

inline fn combineVector(comptime op: Reduce, a: V, b: V) V {
    return switch (op) {
        .sum => a + b,
        .prod => a * b,
        // NaN wins: a NaN accumulator stays NaN, a NaN input replaces the accumulator.
        .max => @select(f32, a != a, a, @select(f32, b != b, b, @max(a, b))),
        .min => @select(f32, a != a, a, @select(f32, b != b, b, @min(a, b))),
    };
}

inline fn combineScalar(comptime op: Reduce, a: f32, b: f32) f32 {
    return switch (op) {
        .sum => a + b,
        .prod => a * b,
        .max => if (a != a) a else if (b != b) b else @max(a, b),
        .min => if (a != a) a else if (b != b) b else @min(a, b),
    };
}

fn rowTyped(comptime op: Reduce, values: []const f32) f32 {
    // Four independent accumulators hide the add latency and, for sums, keep partial sums
    // smaller (a little pairwise accuracy for free).
    var accumulators: [4]V = @splat(@splat(identity(op)));
    var i: usize = 0;
    while (i + 4 * lanes <= values.len) : (i += 4 * lanes) {
        inline for (0..4) |k| {
            accumulators[k] = combineVector(op, accumulators[k], values[i + k * lanes ..][0..lanes].*);
        }
    }
    while (i + lanes <= values.len) : (i += lanes) {
        accumulators[0] = combineVector(op, accumulators[0], values[i..][0..lanes].*);
    }
    const folded = combineVector(op, combineVector(op, accumulators[0], accumulators[1]), combineVector(op, accumulators[2], accumulators[3]));
    const folded_array: [lanes]f32 = folded;
    var result = identity(op);
    for (folded_array) |x| result = combineScalar(op, result, x);
    for (values[i..]) |x| result = combineScalar(op, result, x);
    return result;
}

/// Reduces a contiguous row to one value (identity for an empty row).
pub fn row(op: Reduce, values: []const f32) f32 {
    return switch (op) {
        inline else => |comptime_op| rowTyped(comptime_op, values),
    };
}

fn columnsTyped(comptime op: Reduce, block: []const f32, reduced: usize, inner: usize, inner_begin: usize, out: []f32) void {
    // out[j] = reduce_r block[r * inner + inner_begin + j], vectorised across j.
    var j: usize = 0;
    while (j + lanes <= out.len) : (j += lanes) {
        var accumulator: V = @splat(identity(op));
        for (0..reduced) |r| {
            accumulator = combineVector(op, accumulator, block[r * inner + inner_begin + j ..][0..lanes].*);
        }
        out[j..][0..lanes].* = accumulator;
    }
    while (j < out.len) : (j += 1) {
        var accumulator = identity(op);
        for (0..reduced) |r| accumulator = combineScalar(op, accumulator, block[r * inner + inner_begin + j]);
        out[j] = accumulator;
    }
}

/// Reduces the middle axis of one [reduced, inner] block for inner positions
/// [inner_begin, inner_begin + out.len).
pub fn columns(op: Reduce, block: []const f32, reduced: usize, inner: usize, inner_begin: usize, out: []f32) void {
    std.debug.assert(block.len >= reduced * inner);
    std.debug.assert(inner_begin + out.len <= inner);
    switch (op) {
        inline else => |comptime_op| columnsTyped(comptime_op, block, reduced, inner, inner_begin, out),
    }
}

pub fn combine(op: Reduce, a: f32, b: f32) f32 {
    return switch (op) {
        inline else => |comptime_op| combineScalar(comptime_op, a, b),
    };
}

pub fn identityOf(op: Reduce) f32 {
    return switch (op) {
        inline else => |comptime_op| identity(comptime_op),
    };
}

/// Running sums (products when `product`) along a strided line of `count` elements: out[k] =
/// Σ x[j] over j ≤ k (j < k when `exclusive`), counting from the far end when `reverse`.
/// Integers wrap on overflow, as NumPy's and PyTorch's do.
pub fn cumsumLine(comptime T: type, input: []const T, output: []T, count: usize, stride: usize, exclusive: bool, reverse: bool, product: bool) void {
    std.debug.assert(count == 0 or (count - 1) * stride < input.len);
    std.debug.assert(input.len == output.len);
    var total: T = if (product) 1 else 0;
    for (0..count) |step| {
        const at = (if (reverse) count - 1 - step else step) * stride;
        const x = input[at];
        if (exclusive) output[at] = total;
        if (@typeInfo(T) == .int) {
            total = if (product) total *% x else total +% x;
        } else {
            total = if (product) total * x else total + x;
        }
        if (!exclusive) output[at] = total;
    }
}

/// Index of the first maximum of a strided run (the last one when `last`: ONNX's
/// select_last_index; NaN counts as the maximum, the first NaN wins); 0 if empty.
pub fn argmax(block: []const f32, count: usize, stride: usize, last: bool) usize {
    var best: usize = 0;
    if (count == 0) return 0;
    var best_value = block[0];
    for (1..count) |r| {
        const value = block[r * stride];
        if (best_value != best_value) break; // the first NaN is final
        if (value != value or value > best_value or (last and value == best_value)) {
            best = r;
            best_value = value;
        }
    }
    return best;
}

test "row reductions match a scalar loop on awkward lengths, with NaN" {
    var prng = std.Random.DefaultPrng.init(5);
    for ([_]usize{ 0, 1, 15, 16, 17, 63, 64, 65, 1000 }) |n| {
        var values: [1000]f32 = undefined;
        for (values[0..n]) |*x| x.* = prng.random().float(f32) * 2 - 1;
        var sum: f64 = 0;
        var maximum = -std.math.inf(f32);
        var minimum = std.math.inf(f32);
        for (values[0..n]) |x| {
            sum += x;
            maximum = @max(maximum, x);
            minimum = @min(minimum, x);
        }
        try std.testing.expectApproxEqAbs(@as(f32, @floatCast(sum)), row(.sum, values[0..n]), 1e-4);
        try std.testing.expectEqual(maximum, row(.max, values[0..n]));
        try std.testing.expectEqual(minimum, row(.min, values[0..n]));
        if (n > 2) {
            values[n / 2] = std.math.nan(f32);
            try std.testing.expect(std.math.isNan(row(.max, values[0..n])));
            try std.testing.expect(std.math.isNan(row(.min, values[0..n])));
            try std.testing.expectEqual(n / 2, argmax(values[0..n], n, 1, false));
            try std.testing.expectEqual(n / 2, argmax(values[0..n], n, 1, true));
        }
    }
}

test "column reductions match a scalar loop" {
    var block: [7 * 37]f32 = undefined;
    for (&block, 0..) |*x, i| x.* = @floatFromInt(@as(i64, @intCast(i % 13)) - 6);
    var out: [30]f32 = undefined;
    columns(.sum, &block, 7, 37, 5, &out);
    for (out, 0..) |got, j| {
        var expected: f32 = 0;
        for (0..7) |r| expected += block[r * 37 + 5 + j];
        try std.testing.expectEqual(expected, got);
    }
    columns(.max, &block, 7, 37, 0, out[0..17]);
    for (out[0..17], 0..) |got, j| {
        var expected = -std.math.inf(f32);
        for (0..7) |r| expected = @max(expected, block[r * 37 + j]);
        try std.testing.expectEqual(expected, got);
    }
    try std.testing.expectEqual(@as(usize, 0), argmax(&.{ 3, 1, 3 }, 3, 1, false));
    try std.testing.expectEqual(@as(usize, 2), argmax(&.{ 3, 1, 3 }, 3, 1, true));
}
