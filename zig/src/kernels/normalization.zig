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

/// Rows of at most this many floats go through `softmaxShortRows`: held in registers, read
/// once and written once.
pub const short_row_max = 4 * lanes;

/// Softmax (or log-softmax) of `rows` contiguous rows of `n` ≤ short_row_max floats each,
/// from `input` to `output` (each rows × n floats). A row is read into at most four vectors,
/// its maximum, exponentials and sum taken in registers, and stored once: the attention
/// softmax of transformers ([heads, tokens, tokens], rows of a few dozen) spent most of its
/// time in softmaxRow's three passes and their scalar tails (rec's [8, 40, 40]: 42 µs, 0.13
/// µs a row). A row's last partial vector reads past its end into the next row where there
/// is one (the lanes past the end are then replaced by -inf); the last row's goes through a
/// copy. Stores stop at the row's end.
pub fn softmaxShortRows(input: []const f32, output: []f32, rows: usize, n: usize, log: bool) void {
    std.debug.assert(n >= 1 and n <= short_row_max);
    std.debug.assert(input.len == rows * n and output.len == rows * n);
    switch (std.math.divCeil(usize, n, lanes) catch unreachable) {
        inline 1...4 => |vectors| for (0..rows) |r| shortRow(vectors, input, output, r * n, n, log),
        else => unreachable,
    }
}

fn shortRow(comptime vectors: usize, input: []const f32, output: []f32, start: usize, n: usize, log: bool) void {
    const negative_infinity = splat(-std.math.inf(f32));
    const rest = n - (vectors - 1) * lanes; // 1 … lanes floats in the last vector
    const lane_index = std.simd.iota(u32, lanes);
    const valid = lane_index < @as(@Vector(lanes, u32), @splat(@intCast(rest)));
    var x: [vectors]V = undefined;
    inline for (0..vectors - 1) |v| x[v] = input[start + v * lanes ..][0..lanes].*;
    const last = start + (vectors - 1) * lanes;
    const loaded: V = if (last + lanes <= input.len) input[last..][0..lanes].* else blk: {
        var copy: [lanes]f32 = @splat(0);
        for (copy[0..rest], input[last..][0..rest]) |*c, value| c.* = value;
        break :blk copy;
    };
    x[vectors - 1] = @select(f32, valid, loaded, negative_infinity);
    // The maximum as reduction.row takes it: NaN wins.
    var maximum_vector = x[0];
    inline for (1..vectors) |v| {
        const a = maximum_vector;
        const b = x[v];
        maximum_vector = @select(f32, a != a, a, @select(f32, b != b, b, @max(a, b)));
    }
    const maximum = @reduce(.Max, maximum_vector);
    const any_nan = @reduce(.Or, maximum_vector != maximum_vector);
    const shift = splat(if (any_nan) std.math.nan(f32) else maximum);
    var e: [vectors]V = undefined;
    var sum_vector = splat(0);
    inline for (0..vectors) |v| {
        e[v] = math.exp(x[v] - shift);
        // Lanes past the row's end hold exp(-inf - max) = 0, or NaN when the maximum is
        // -inf or NaN (every output is NaN then anyway).
        sum_vector += if (v == vectors - 1) @select(f32, valid, e[v], splat(0)) else e[v];
    }
    const sum = @reduce(.Add, sum_vector);
    var y: [vectors]V = undefined;
    if (log) {
        const offset = splat(maximum + @log(sum));
        inline for (0..vectors) |v| y[v] = x[v] - offset;
    } else {
        const scale = splat(1 / sum);
        inline for (0..vectors) |v| y[v] = e[v] * scale;
    }
    inline for (0..vectors - 1) |v| output[start + v * lanes ..][0..lanes].* = y[v];
    const tail: [lanes]f32 = y[vectors - 1];
    for (output[last..][0..rest], tail[0..rest]) |*o, value| o.* = value;
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

/// Rows a layer norm group handles together (see layerNormRows): one vector of statistics.
const group_rows = lanes;
comptime {
    std.debug.assert(group_rows == lanes); // the statistics of a group are one vector
}

/// The sum of a vector's lanes as a tree (log2(lanes) shuffle-and-add steps). `@reduce(.Add)`
/// on floats must keep lane order, a chain of lanes - 1 dependent adds: for a 96-wide row
/// those chains were most of a layer norm's time.
inline fn laneSum(vector: V) f32 {
    var folded = vector;
    comptime var width = lanes / 2;
    inline while (width >= 1) : (width /= 2) {
        const rotate = comptime blk: {
            var mask: [lanes]i32 = undefined;
            for (&mask, 0..) |*m, i| m.* = @intCast((i + width) % lanes);
            break :blk mask;
        };
        folded += @shuffle(f32, folded, undefined, rotate);
    }
    return folded[0];
}

/// The sum of a row (two vector accumulators, then lanes as a tree, then the ragged tail).
fn rowSum(values: []const f32) f32 {
    var even: V = splat(0);
    var odd: V = splat(0);
    var i: usize = 0;
    while (i + 2 * lanes <= values.len) : (i += 2 * lanes) {
        even += values[i..][0..lanes].*;
        odd += values[i + lanes ..][0..lanes].*;
    }
    if (i + lanes <= values.len) {
        even += values[i..][0..lanes].*;
        i += lanes;
    }
    var sum = laneSum(even + odd);
    for (values[i..]) |x| sum += x;
    return sum;
}

/// The sum of squared distances from `mean` over a row.
fn rowCenteredSquares(values: []const f32, mean: f32) f32 {
    const center = splat(mean);
    var even: V = splat(0);
    var odd: V = splat(0);
    var i: usize = 0;
    while (i + 2 * lanes <= values.len) : (i += 2 * lanes) {
        const first = values[i..][0..lanes].* - center;
        const second = values[i + lanes ..][0..lanes].* - center;
        even = @mulAdd(V, first, first, even);
        odd = @mulAdd(V, second, second, odd);
    }
    if (i + lanes <= values.len) {
        const centered = values[i..][0..lanes].* - center;
        even = @mulAdd(V, centered, centered, even);
        i += lanes;
    }
    var sum = laneSum(even + odd);
    for (values[i..]) |x| sum += (x - mean) * (x - mean);
    return sum;
}

/// y = (x - mean) · inverse · weight + bias over one row.
fn normalizeRow(input: []const f32, output: []f32, mean: f32, inverse: f32, weight: ?[]const f32, bias: ?[]const f32) void {
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

/// Layer norm of consecutive rows of `row_length`: y = (x - mean) / sqrt(var + eps) · weight
/// + bias per row (biased variance, two passes for accuracy). Rows go in groups of
/// `group_rows`: each row's statistics are independent dependency chains, so a group's sums
/// overlap, and the group's square roots and divisions are one vector operation each rather
/// than a scalar chain per row. Each row's result does not depend on its group.
pub fn layerNormRows(input: []const f32, output: []f32, row_length: usize, weight: ?[]const f32, bias: ?[]const f32, eps: f32) void {
    std.debug.assert(input.len == output.len);
    std.debug.assert(row_length > 0 and input.len % row_length == 0);
    std.debug.assert((weight == null or weight.?.len == row_length) and (bias == null or bias.?.len == row_length));
    const rows = input.len / row_length;
    const n: f32 = @floatFromInt(row_length);
    var first: usize = 0;
    while (first < rows) : (first += group_rows) {
        const count = @min(group_rows, rows - first);
        var means: [group_rows]f32 = @splat(0);
        for (means[0..count], first..) |*mean, row| mean.* = rowSum(input[row * row_length ..][0..row_length]) / n;
        var squares: [group_rows]f32 = @splat(0);
        for (squares[0..count], means[0..count], first..) |*square, mean, row| {
            square.* = rowCenteredSquares(input[row * row_length ..][0..row_length], mean);
        }
        const inverses: [group_rows]f32 = splat(1) / @sqrt(@as(V, squares) / splat(n) + splat(eps));
        for (means[0..count], inverses[0..count], first..) |mean, inverse, row| {
            const start = row * row_length;
            normalizeRow(input[start..][0..row_length], output[start..][0..row_length], mean, inverse, weight, bias);
        }
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

test "short softmax rows match softmaxRow on every length up to four vectors, with -inf and NaN" {
    var prng = std.Random.DefaultPrng.init(21);
    const rows = 5;
    var input: [rows * short_row_max]f32 = undefined;
    var expected: [rows * short_row_max]f32 = undefined;
    var got: [rows * short_row_max]f32 = undefined;
    for (1..short_row_max + 1) |n| for ([_]bool{ false, true }) |log| {
        for (input[0 .. rows * n]) |*x| x.* = prng.random().float(f32) * 40 - 20;
        input[n + n / 2] = -std.math.inf(f32); // row 1: one -inf
        for (input[2 * n ..][0..n]) |*x| x.* = -std.math.inf(f32); // row 2: all -inf
        input[3 * n + n - 1] = std.math.nan(f32); // row 3: a NaN in its last vector
        for (0..rows) |r| softmaxRow(input[r * n ..][0..n], expected[r * n ..][0..n], log);
        // Past the rows: values that must not leak in (the last row reads through a copy).
        @memset(got[rows * n ..], 1234);
        softmaxShortRows(input[0 .. rows * n], got[0 .. rows * n], rows, n, log);
        for (expected[0 .. rows * n], got[0 .. rows * n]) |want, have| {
            if (std.math.isNan(want)) {
                try std.testing.expect(std.math.isNan(have));
            } else if (std.math.isInf(want)) {
                try std.testing.expectEqual(want, have);
            } else {
                // Log-softmax outputs reach -40: a float's spacing there is 4e-6.
                try std.testing.expectApproxEqAbs(want, have, @max(2e-6, 2e-7 * @abs(want)));
            }
        }
        for (got[rows * n ..]) |untouched| try std.testing.expectEqual(@as(f32, 1234), untouched);
    };
}

test "layer norm row normalises and applies the affine parameters" {
    const input = [_]f32{ 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17 };
    var output: [17]f32 = undefined;
    const weight: [17]f32 = @splat(2);
    const bias: [17]f32 = @splat(1);
    layerNormRows(&input, &output, input.len, &weight, &bias, 1e-5);
    var mean: f64 = 0;
    for (output) |y| mean += y;
    mean /= 17;
    try std.testing.expectApproxEqAbs(@as(f64, 1), mean, 1e-5);
    const expected_first = (1.0 - 9.0) / @sqrt(24.0 + 1e-5) * 2 + 1;
    try std.testing.expectApproxEqAbs(@as(f32, @floatCast(expected_first)), output[0], 1e-5);
}

fn layerNormReference(row: []const f32, index: usize, weight: ?[]const f32, bias: ?[]const f32, eps: f32) f64 {
    var mean: f64 = 0;
    for (row) |x| mean += x;
    mean /= @floatFromInt(row.len);
    var variance: f64 = 0;
    for (row) |x| variance += (x - mean) * (x - mean);
    variance /= @floatFromInt(row.len);
    var value = (row[index] - mean) / @sqrt(variance + eps);
    if (weight) |w| value *= w[index];
    if (bias) |b| value += b[index];
    return value;
}

test "layer norm rows match the reference on awkward sizes, whatever the grouping" {
    var prng = std.Random.DefaultPrng.init(0x1a7e);
    const random = prng.random();
    // Row counts around the group of 16, row lengths around the vector width and its double.
    for ([_]usize{ 1, 2, 15, 16, 17, 33 }) |rows| for ([_]usize{ 1, 7, 16, 31, 32, 33, 96, 100 }) |row_length| {
        const input = try std.testing.allocator.alloc(f32, rows * row_length);
        defer std.testing.allocator.free(input);
        // An offset mean, as activations have: two passes keep the variance accurate.
        for (input) |*x| x.* = random.float(f32) * 4 - 1 + 3;
        const output = try std.testing.allocator.alloc(f32, input.len);
        defer std.testing.allocator.free(output);
        const split = try std.testing.allocator.alloc(f32, input.len);
        defer std.testing.allocator.free(split);
        var weight: [100]f32 = undefined;
        var bias: [100]f32 = undefined;
        for (&weight, &bias) |*w, *b| {
            w.* = random.float(f32) + 0.5;
            b.* = random.float(f32) - 0.5;
        }
        for ([_]bool{ false, true }) |affine| {
            const w: ?[]const f32 = if (affine) weight[0..row_length] else null;
            const b: ?[]const f32 = if (affine) bias[0..row_length] else null;
            layerNormRows(input, output, row_length, w, b, 1e-5);
            for (0..rows) |r| for (0..row_length) |k| {
                const expected = layerNormReference(input[r * row_length ..][0..row_length], k, w, b, 1e-5);
                try std.testing.expectApproxEqAbs(@as(f32, @floatCast(expected)), output[r * row_length + k], 2e-5);
            };
            // The rows cut at another point (as another thread count splits them): the same bits.
            const cut = rows / 3;
            layerNormRows(input[0 .. cut * row_length], split[0 .. cut * row_length], row_length, w, b, 1e-5);
            layerNormRows(input[cut * row_length ..], split[cut * row_length ..], row_length, w, b, 1e-5);
            try std.testing.expectEqualSlices(f32, output, split);
        }
    };
}
