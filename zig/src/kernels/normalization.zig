//! Softmax, log-softmax, layer norm and batch norm (inference) kernels. Softmax works on a
//! [reduced, inner] block: rows when inner = 1, vector columns otherwise.
const std = @import("std");
const math = @import("math.zig");
const reduction = @import("reduction.zig");

const lanes = math.lanes;
const V = math.V;

fn splat(value: f32) V {
    return @splat(value);
}

/// Softmax (or log-softmax) of one contiguous row, in place from `input` to `output`.
pub fn softmaxRow(input: []const f32, output: []f32, log: bool) void {
    std.debug.assert(input.len == output.len);
    if (input.len == 0) return;
    const maximum = reduction.row(.max, input);
    // All -inf (or a NaN maximum): subtracting would give NaN; PyTorch gives NaN too.
    const shift: V = splat(maximum);
    var sum_vector: V = splat(0);
    var i: usize = 0;
    while (i + lanes <= input.len) : (i += lanes) {
        const e = math.exp(input[i..][0..lanes].* - shift);
        if (!log) output[i..][0..lanes].* = e;
        sum_vector += e;
    }
    var sum = @reduce(.Add, sum_vector);
    if (i < input.len) {
        var tail: [lanes]f32 = @splat(-std.math.inf(f32));
        const rest = input.len - i;
        @memcpy(tail[0..rest], input[i..]);
        const e: [lanes]f32 = math.exp(@as(V, tail) - shift);
        if (!log) @memcpy(output[i..], e[0..rest]);
        for (e[0..rest]) |x| sum += x;
    }
    if (log) {
        const offset = maximum + @log(sum);
        for (input, output) |x, *y| y.* = x - offset;
    } else {
        const scale = splat(1 / sum);
        i = 0;
        while (i + lanes <= output.len) : (i += lanes) {
            const scaled: V = @as(V, output[i..][0..lanes].*) * scale;
            output[i..][0..lanes].* = scaled;
        }
        for (output[i..]) |*y| y.* /= sum;
    }
}

/// Softmax along the middle axis of a [reduced, inner] block for inner positions
/// [inner_begin, inner_end): vectorised across the inner positions.
pub fn softmaxColumns(block: []const f32, out: []f32, reduced: usize, inner: usize, inner_begin: usize, inner_end: usize, log: bool) void {
    std.debug.assert(block.len >= reduced * inner and out.len >= reduced * inner);
    var j = inner_begin;
    while (j < inner_end) {
        const width = @min(lanes, inner_end - j);
        var maximum: [lanes]f32 = @splat(-std.math.inf(f32));
        for (0..reduced) |r| for (0..width) |k| {
            maximum[k] = reduction.combine(.max, maximum[k], block[r * inner + j + k]);
        };
        var sum: V = splat(0);
        for (0..reduced) |r| {
            var column: [lanes]f32 = @splat(-std.math.inf(f32));
            @memcpy(column[0..width], block[r * inner + j ..][0..width]);
            const e: [lanes]f32 = math.exp(@as(V, column) - @as(V, maximum));
            if (!log) @memcpy(out[r * inner + j ..][0..width], e[0..width]);
            sum += e;
        }
        const sums: [lanes]f32 = sum;
        for (0..reduced) |r| for (0..width) |k| {
            const index = r * inner + j + k;
            out[index] = if (log) block[index] - maximum[k] - @log(sums[k]) else out[index] / sums[k];
        };
        j += width;
    }
}

/// Layer norm of one row: y = (x - mean) / sqrt(var + eps) · weight + bias (biased variance,
/// two passes for accuracy).
pub fn layerNormRow(input: []const f32, output: []f32, weight: ?[]const f32, bias: ?[]const f32, eps: f32) void {
    std.debug.assert(input.len == output.len);
    std.debug.assert((weight == null or weight.?.len == input.len) and (bias == null or bias.?.len == input.len));
    if (input.len == 0) return;
    const n: f32 = @floatFromInt(input.len);
    const mean = reduction.row(.sum, input) / n;
    var variance_vector: V = splat(0);
    var i: usize = 0;
    while (i + lanes <= input.len) : (i += lanes) {
        const centered = input[i..][0..lanes].* - splat(mean);
        variance_vector = @mulAdd(V, centered, centered, variance_vector);
    }
    var variance = @reduce(.Add, variance_vector);
    for (input[i..]) |x| variance += (x - mean) * (x - mean);
    variance /= n;
    const inverse = 1 / @sqrt(variance + eps);
    // Vectors first: the optional weight and bias are the same on every step, so the branches
    // cost nothing, and a scalar loop here was most of a 96-wide row's time.
    var k: usize = 0;
    while (k + lanes <= input.len) : (k += lanes) {
        var value = (input[k..][0..lanes].* - splat(mean)) * splat(inverse);
        if (weight) |w| value *= w[k..][0..lanes].*;
        if (bias) |b| value += b[k..][0..lanes].*;
        output[k..][0..lanes].* = value;
    }
    for (input[k..], output[k..], k..) |x, *y, j| {
        var value = (x - mean) * inverse;
        if (weight) |w| value *= w[j];
        if (bias) |b| value += b[j];
        y.* = value;
    }
}

/// y = x · scale + shift over one plane (batch norm in inference form, folded per channel).
pub fn affinePlane(input: []const f32, output: []f32, scale: f32, shift: f32) void {
    std.debug.assert(input.len == output.len);
    var i: usize = 0;
    while (i + lanes <= input.len) : (i += lanes) {
        output[i..][0..lanes].* = @mulAdd(V, input[i..][0..lanes].*, splat(scale), splat(shift));
    }
    while (i < input.len) : (i += 1) output[i] = @mulAdd(f32, input[i], scale, shift);
}

fn softmaxReference(values: []const f32, index: usize, log: bool) f64 {
    var maximum: f64 = -std.math.inf(f64);
    for (values) |x| maximum = @max(maximum, x);
    var sum: f64 = 0;
    for (values) |x| sum += @exp(@as(f64, x) - maximum);
    const shifted = @as(f64, values[index]) - maximum;
    return if (log) shifted - @log(sum) else @exp(shifted) / sum;
}

test "softmax rows and columns match the reference on awkward sizes" {
    var prng = std.Random.DefaultPrng.init(9);
    for ([_]usize{ 1, 2, 15, 16, 17, 100 }) |n| for ([_]bool{ false, true }) |log| {
        var input: [100]f32 = undefined;
        for (input[0..n]) |*x| x.* = prng.random().float(f32) * 20 - 10;
        var output: [100]f32 = undefined;
        softmaxRow(input[0..n], output[0..n], log);
        for (0..n) |k| try std.testing.expectApproxEqAbs(@as(f32, @floatCast(softmaxReference(input[0..n], k, log))), output[k], 2e-6);
        // The same values as a column block: [n, 3] with the row in column 1.
        var block: [300]f32 = @splat(0);
        for (0..n) |r| block[r * 3 + 1] = input[r];
        var out: [300]f32 = undefined;
        softmaxColumns(&block, &out, n, 3, 0, 3, log);
        for (0..n) |r| try std.testing.expectApproxEqAbs(output[r], out[r * 3 + 1], 2e-6);
    };
}

test "layer norm row normalises and applies the affine parameters" {
    const input = [_]f32{ 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17 };
    var output: [17]f32 = undefined;
    const weight: [17]f32 = @splat(2);
    const bias: [17]f32 = @splat(1);
    layerNormRow(&input, &output, &weight, &bias, 1e-5);
    var mean: f64 = 0;
    for (output) |y| mean += y;
    mean /= 17;
    try std.testing.expectApproxEqAbs(@as(f64, 1), mean, 1e-5);
    const expected_first = (1.0 - 9.0) / @sqrt(24.0 + 1e-5) * 2 + 1;
    try std.testing.expectApproxEqAbs(@as(f32, @floatCast(expected_first)), output[0], 1e-5);
}
