//! Elementwise kernels on contiguous float32 runs: unary functions and binary operators with
//! a stride of 0 or 1 per operand (stride 0 is how broadcasting reaches the inner loop).
//! Callers pass the sub-slices of their range; threading lives in ops/elementwise.zig.
const std = @import("std");
const math = @import("math.zig");
const formats = @import("formats.zig");

const lanes = math.lanes;
const V = math.V;

pub const Unary = enum(u8) {
    relu,
    gelu_erf,
    gelu_tanh,
    sigmoid,
    tanh,
    exp,
    log,
    sqrt,
    neg,
    abs,
    clamp,
    leaky_relu,
    hard_sigmoid,
    hard_swish,
    erf,
    elu,
    // The math family (ops.zig `UnaryMath`): ONNX's remaining one-input float functions.
    reciprocal,
    sin,
    cos,
    tan,
    asin,
    acos,
    atan,
    sinh,
    cosh,
    asinh,
    acosh,
    atanh,
    floor,
    ceil,
    round,
    sign,
    softsign,
    softplus,
    selu,
    thresholded_relu,
    celu,
    mish,
    shrink,
    swish,
    is_nan,
    is_inf,
    // Casts to the narrow types carried in float32 (kernels/formats.zig): alpha ≠ 0
    // saturates (float8), beta picks float8e8m0's rounding (0 up, 1 nearest, 2 down).
    to_float16,
    to_bfloat16,
    to_e4m3fn,
    to_e4m3fnuz,
    to_e5m2,
    to_e5m2fnuz,
    to_e2m1,
    to_e8m0,
    to_int4,
    to_uint4,
    to_int2,
    to_uint2,
};

/// Bounds of clamp (±inf for "no bound"); leaky_relu's slope is alpha; hard_sigmoid is
/// max(0, min(1, alpha·x + beta)). The math family reads alpha and beta as ONNX names them:
/// selu alpha and gamma (beta), thresholded_relu and celu and swish alpha, shrink lambd
/// (alpha) and bias (beta), is_inf detect_negative (alpha ≠ 0) and detect_positive (beta ≠ 0).
pub const UnaryParams = struct {
    min: f32 = -std.math.inf(f32),
    max: f32 = std.math.inf(f32),
    alpha: f32 = 0,
    beta: f32 = 0,
};

fn splat(value: f32) V {
    return @splat(value);
}

/// NaN-propagating max/min (PyTorch semantics; Zig's @max returns the non-NaN operand).
fn maxPropagate(a: V, b: V) V {
    return @select(f32, a != a, a, @select(f32, b != b, b, @max(a, b)));
}

fn minPropagate(a: V, b: V) V {
    return @select(f32, a != a, a, @select(f32, b != b, b, @min(a, b)));
}

inline fn unaryVector(comptime op: Unary, params: UnaryParams, x: V) V {
    return switch (op) {
        .relu => @select(f32, x > splat(0), x, @select(f32, x != x, x, splat(0))),
        .gelu_erf => x * math.normalCdf(x),
        .gelu_tanh => blk: {
            // (1 + tanh(u)) / 2 = sigmoid(2u): the same value without cancellation for x ≪ 0.
            const inner = splat(0.7978845608028654) * @mulAdd(V, splat(0.044715) * x * x, x, x);
            break :blk x * math.sigmoid(inner + inner);
        },
        .sigmoid => math.sigmoid(x),
        .tanh => math.tanh(x),
        .exp => math.exp(x),
        .log => @log(x),
        .sqrt => @sqrt(x),
        .neg => -x,
        .abs => @abs(x),
        .clamp => minPropagate(maxPropagate(x, splat(params.min)), splat(params.max)),
        .leaky_relu => @select(f32, x < splat(0), x * splat(params.alpha), x),
        .hard_sigmoid => minPropagate(maxPropagate(@mulAdd(V, x, splat(params.alpha), splat(params.beta)), splat(0)), splat(1)),
        // ONNX HardSwish: x · max(0, min(1, x/6 + 1/2)).
        .hard_swish => x * minPropagate(maxPropagate(@mulAdd(V, x, splat(1.0 / 6.0), splat(0.5)), splat(0)), splat(1)),
        .erf => math.erf(x),
        .elu => @select(f32, x > splat(0), x, splat(params.alpha) * (math.exp(x) - splat(1))),
        .reciprocal => splat(1) / x,
        .sin => @sin(x),
        .cos => @cos(x),
        .tan => @tan(x),
        .asin => perLane(std.math.asin, x),
        .acos => perLane(std.math.acos, x),
        .atan => perLane(std.math.atan, x),
        .sinh => perLane(std.math.sinh, x),
        .cosh => perLane(std.math.cosh, x),
        .asinh => perLane(std.math.asinh, x),
        .acosh => perLane(std.math.acosh, x),
        .atanh => perLane(std.math.atanh, x),
        .floor => @floor(x),
        .ceil => @ceil(x),
        // ONNX Round: halves go to the even neighbour (@round takes them away from zero).
        .round => blk: {
            const away = @round(x);
            break :blk @select(f32, @abs(away - x) == splat(0.5), splat(2) * @round(x * splat(0.5)), away);
        },
        .sign => @select(f32, x > splat(0), splat(1), @select(f32, x < splat(0), splat(-1), x * splat(0))),
        .softsign => x / (splat(1) + @abs(x)),
        // log(1 + e^x) = max(x, 0) + log(1 + e^-|x|): no overflow for large x.
        .softplus => @max(x, splat(0)) + perLane(std.math.log1p, math.exp(-@abs(x))),
        .selu => splat(params.beta) * @select(f32, x > splat(0), x, splat(params.alpha) * (math.exp(x) - splat(1))),
        .thresholded_relu => @select(f32, x > splat(params.alpha), x, splat(0)),
        .celu => @max(x, splat(0)) + @min(splat(0), splat(params.alpha) * (math.exp(x / splat(params.alpha)) - splat(1))),
        .mish => x * math.tanh(@max(x, splat(0)) + perLane(std.math.log1p, math.exp(-@abs(x)))),
        .shrink => @select(f32, x < splat(-params.alpha), x + splat(params.beta), @select(f32, x > splat(params.alpha), x - splat(params.beta), splat(0))),
        .swish => x * math.sigmoid(splat(params.alpha) * x),
        .is_nan => @select(f32, x != x, splat(1), splat(0)),
        .is_inf => blk: {
            const positive = @select(f32, x == splat(std.math.inf(f32)), splat(params.beta), splat(0));
            const negative = @select(f32, x == splat(-std.math.inf(f32)), splat(params.alpha), splat(0));
            break :blk @select(f32, (positive + negative) != splat(0), splat(1), splat(0));
        },
        .to_float16 => toFormat(formats.float16, params, x),
        .to_bfloat16 => toFormat(formats.bfloat16, params, x),
        .to_e4m3fn => toFormat(formats.e4m3fn, params, x),
        .to_e4m3fnuz => toFormat(formats.e4m3fnuz, params, x),
        .to_e5m2 => toFormat(formats.e5m2, params, x),
        .to_e5m2fnuz => toFormat(formats.e5m2fnuz, params, x),
        .to_e2m1 => toFormat(formats.e2m1, params, x),
        .to_e8m0 => blk: {
            const values: [lanes]f32 = x;
            var result: [lanes]f32 = undefined;
            const mode = std.meta.intToEnum(formats.E8m0Rounding, @as(u8, @intFromFloat(std.math.clamp(params.beta, 0, 2)))) catch .up;
            for (&result, values) |*r, value| r.* = formats.toE8m0(value, params.alpha != 0, mode);
            break :blk result;
        },
        .to_int4 => smallInteger(4, true, x),
        .to_uint4 => smallInteger(4, false, x),
        .to_int2 => smallInteger(2, true, x),
        .to_uint2 => smallInteger(2, false, x),
    };
}

fn toFormat(comptime format: formats.Float, params: UnaryParams, x: V) V {
    const values: [lanes]f32 = x;
    var result: [lanes]f32 = undefined;
    for (&result, values) |*r, value| r.* = formats.toFloat(format, value, params.alpha != 0);
    return result;
}

fn smallInteger(comptime bits: u4, comptime signed: bool, x: V) V {
    const values: [lanes]f32 = x;
    var result: [lanes]f32 = undefined;
    for (&result, values) |*r, value| r.* = formats.toSmallInteger(value, bits, signed);
    return result;
}

/// f per lane: the inverse trigonometric and hyperbolic functions have no vector form here;
/// libm keeps their corner cases (domain edges, infinities) right.
inline fn perLane(comptime f: anytype, x: V) V {
    const values: [lanes]f32 = x;
    var result: [lanes]f32 = undefined;
    for (&result, values) |*r, value| r.* = f(value);
    return result;
}

fn unaryTyped(comptime op: Unary, params: UnaryParams, input: []const f32, output: []f32) void {
    std.debug.assert(input.len == output.len);
    var i: usize = 0;
    while (i + lanes <= input.len) : (i += lanes) {
        output[i..][0..lanes].* = unaryVector(op, params, input[i..][0..lanes].*);
    }
    if (i < input.len) {
        // The tail goes through the same vector code on a padded copy, so that every element
        // gets bit-identical results whatever its position.
        var padded: [lanes]f32 = @splat(0);
        const rest = input.len - i;
        @memcpy(padded[0..rest], input[i..]);
        const result: [lanes]f32 = unaryVector(op, params, padded);
        @memcpy(output[i..], result[0..rest]);
    }
}

/// output[i] = op(input[i]). `input` and `output` may be the same slice.
pub fn unary(op: Unary, params: UnaryParams, input: []const f32, output: []f32) void {
    switch (op) {
        inline else => |comptime_op| unaryTyped(comptime_op, params, input, output),
    }
}

/// Whether `op` is expensive enough per element to be worth threads on smaller inputs.
pub fn unaryIsTranscendental(op: Unary) bool {
    return switch (op) {
        .relu, .neg, .abs, .clamp, .leaky_relu, .hard_sigmoid, .hard_swish => false,
        .reciprocal, .floor, .ceil, .round, .sign, .softsign, .thresholded_relu, .shrink, .is_nan, .is_inf => false,
        .to_float16, .to_bfloat16, .to_e4m3fn, .to_e4m3fnuz, .to_e5m2, .to_e5m2fnuz, .to_e2m1, .to_e8m0 => true,
        .to_int4, .to_uint4, .to_int2, .to_uint2 => true,
        .gelu_erf, .gelu_tanh, .sigmoid, .tanh, .exp, .log, .sqrt, .erf, .elu => true,
        .sin, .cos, .tan, .asin, .acos, .atan, .sinh, .cosh, .asinh, .acosh, .atanh => true,
        .softplus, .selu, .celu, .mish, .swish => true,
    };
}

pub fn unaryReference(op: Unary, params: UnaryParams, x: f64) f64 {
    return switch (op) {
        .relu => if (std.math.isNan(x)) x else @max(x, 0),
        .gelu_erf => 0.5 * x * (1 + math.erfReference(x / std.math.sqrt2)),
        .gelu_tanh => x / (1 + @exp(-2 * 0.7978845608028654 * (x + 0.044715 * x * x * x))),
        .sigmoid => 1 / (1 + @exp(-x)),
        .tanh => std.math.tanh(x),
        .exp => @exp(x),
        .log => @log(x),
        .sqrt => @sqrt(x),
        .neg => -x,
        .abs => @abs(x),
        .clamp => if (std.math.isNan(x)) x else @min(@max(x, params.min), params.max),
        .leaky_relu => if (x < 0) x * params.alpha else x,
        .hard_sigmoid => if (std.math.isNan(x)) x else @min(@max(x * params.alpha + params.beta, 0), 1),
        .hard_swish => if (std.math.isNan(x)) x else x * @min(@max(x / 6 + 0.5, 0), 1),
        .erf => math.erfReference(x),
        .elu => if (x > 0) x else params.alpha * (@exp(x) - 1),
        .reciprocal => 1 / x,
        .sin => @sin(x),
        .cos => @cos(x),
        .tan => @tan(x),
        .asin => std.math.asin(x),
        .acos => std.math.acos(x),
        .atan => std.math.atan(x),
        .sinh => std.math.sinh(x),
        .cosh => std.math.cosh(x),
        .asinh => std.math.asinh(x),
        .acosh => std.math.acosh(x),
        .atanh => std.math.atanh(x),
        .floor => @floor(x),
        .ceil => @ceil(x),
        .round => if (@abs(x - @trunc(x)) == 0.5) 2 * @round(x / 2) else @round(x),
        .sign => if (std.math.isNan(x)) x else if (x > 0) 1 else if (x < 0) -1 else 0,
        .softsign => x / (1 + @abs(x)),
        .softplus => @log(1 + @exp(x)),
        .selu => params.beta * (if (x > 0) x else params.alpha * (@exp(x) - 1)),
        .thresholded_relu => if (x > params.alpha) x else 0,
        .celu => @max(x, 0) + @min(0, params.alpha * (@exp(x / params.alpha) - 1)),
        .mish => x * std.math.tanh(@log(1 + @exp(x))),
        .shrink => if (x < -params.alpha) x + params.beta else if (x > params.alpha) x - params.beta else 0,
        .swish => x / (1 + @exp(-params.alpha * x)),
        .is_nan => if (std.math.isNan(x)) 1 else 0,
        .is_inf => if ((x == std.math.inf(f64) and params.beta != 0) or (x == -std.math.inf(f64) and params.alpha != 0)) 1 else 0,
        // The format conversions' references are formats.zig's own tests; here they must agree
        // with themselves lane by lane (the vector path is a per-lane map).
        .to_float16 => formats.toFloat(formats.float16, @floatCast(x), params.alpha != 0),
        .to_bfloat16 => formats.toFloat(formats.bfloat16, @floatCast(x), params.alpha != 0),
        .to_e4m3fn => formats.toFloat(formats.e4m3fn, @floatCast(x), params.alpha != 0),
        .to_e4m3fnuz => formats.toFloat(formats.e4m3fnuz, @floatCast(x), params.alpha != 0),
        .to_e5m2 => formats.toFloat(formats.e5m2, @floatCast(x), params.alpha != 0),
        .to_e5m2fnuz => formats.toFloat(formats.e5m2fnuz, @floatCast(x), params.alpha != 0),
        .to_e2m1 => formats.toFloat(formats.e2m1, @floatCast(x), params.alpha != 0),
        .to_e8m0 => formats.toE8m0(@floatCast(x), params.alpha != 0, .up),
        .to_int4 => formats.toSmallInteger(@floatCast(x), 4, true),
        .to_uint4 => formats.toSmallInteger(@floatCast(x), 4, false),
        .to_int2 => formats.toSmallInteger(@floatCast(x), 2, true),
        .to_uint2 => formats.toSmallInteger(@floatCast(x), 2, false),
    };
}

/// fmod: C's remainder, with the dividend's sign (ONNX Mod with fmod = 1 on floats).
pub const Binary = enum(u8) { add, sub, mul, div, pow, maximum, minimum, fmod };

inline fn binaryVector(comptime op: Binary, a: V, b: V) V {
    return switch (op) {
        .add => a + b,
        .sub => a - b,
        .mul => a * b,
        .div => a / b,
        .maximum => maxPropagate(a, b),
        .minimum => minPropagate(a, b),
        .fmod => @rem(a, b),
        .pow => blk: {
            // No vector pow in hardware; libm per lane keeps every IEEE corner case right.
            var result: [lanes]f32 = undefined;
            const a_array: [lanes]f32 = a;
            const b_array: [lanes]f32 = b;
            for (&result, a_array, b_array) |*r, x, y| r.* = std.math.pow(f32, x, y);
            break :blk result;
        },
    };
}

/// Loads lanes from `values` at `index` with stride 0 (broadcast one value) or 1.
inline fn load(values: []const f32, comptime stride: u1, index: usize) V {
    return if (stride == 0) splat(values[0]) else values[index..][0..lanes].*;
}

fn binaryTyped(comptime op: Binary, comptime a_stride: u1, comptime b_stride: u1, a: []const f32, b: []const f32, output: []f32) void {
    var i: usize = 0;
    while (i + lanes <= output.len) : (i += lanes) {
        output[i..][0..lanes].* = binaryVector(op, load(a, a_stride, i), load(b, b_stride, i));
    }
    if (i == output.len) return;
    var a_tail: [lanes]f32 = @splat(1);
    var b_tail: [lanes]f32 = @splat(1);
    const rest = output.len - i;
    if (a_stride == 0) a_tail = @splat(a[0]) else @memcpy(a_tail[0..rest], a[i..][0..rest]);
    if (b_stride == 0) b_tail = @splat(b[0]) else @memcpy(b_tail[0..rest], b[i..][0..rest]);
    const result: [lanes]f32 = binaryVector(op, a_tail, b_tail);
    @memcpy(output[i..], result[0..rest]);
}

/// output[i] = op(a[i·a_stride], b[i·b_stride]) with strides 0 or 1. The caller guarantees
/// a.len ≥ output.len when a_stride = 1 (and ≥ 1 when 0), the same for b.
pub fn binary(op: Binary, a: []const f32, a_stride: u1, b: []const f32, b_stride: u1, output: []f32) void {
    std.debug.assert(if (a_stride == 1) a.len >= output.len else a.len >= 1);
    std.debug.assert(if (b_stride == 1) b.len >= output.len else b.len >= 1);
    // x² as x · x, onnxruntime's own special case for Pow by a scalar 2 (so the same bits,
    // correctly rounded where libm's mantissa-and-exponent pow rounds twice in subnormals):
    // the decomposed LayerNorms of quantized SVTR (rec_qdq) square with Pow, at 10 ns an
    // element per lane of libm.
    if (op == .pow and b_stride == 0 and b[0] == 2) {
        if (a_stride == 0) return binaryTyped(.mul, 0, 0, a, a, output);
        return binaryTyped(.mul, 1, 1, a, a, output);
    }
    switch (op) {
        inline else => |comptime_op| switch (@as(u2, a_stride) * 2 + b_stride) {
            0 => binaryTyped(comptime_op, 0, 0, a, b, output),
            1 => binaryTyped(comptime_op, 0, 1, a, b, output),
            2 => binaryTyped(comptime_op, 1, 0, a, b, output),
            3 => binaryTyped(comptime_op, 1, 1, a, b, output),
        },
    }
}

pub fn binaryReference(op: Binary, a: f64, b: f64) f64 {
    return switch (op) {
        .add => a + b,
        .sub => a - b,
        .mul => a * b,
        .div => a / b,
        .pow => std.math.pow(f64, a, b),
        .fmod => @rem(a, b),
        .maximum => if (std.math.isNan(a) or std.math.isNan(b)) std.math.nan(f64) else @max(a, b),
        .minimum => if (std.math.isNan(a) or std.math.isNan(b)) std.math.nan(f64) else @min(a, b),
    };
}

/// Tolerance of a float32 kernel against its f64 reference.
pub fn close(expected: f64, got: f32, relative: f64, absolute: f64) bool {
    if (std.math.isNan(expected)) return std.math.isNan(got);
    if (std.math.isInf(expected)) return @as(f64, got) == expected;
    return @abs(@as(f64, got) - expected) <= @max(absolute, relative * @abs(expected));
}

test "unary kernels match their references on awkward lengths, with NaN and infinities" {
    var prng = std.Random.DefaultPrng.init(1);
    const random = prng.random();
    const lengths = [_]usize{ 0, 1, 2, 15, 16, 17, 31, 33, 97 };
    for (std.enums.values(Unary)) |op| for (lengths) |n| {
        var input: [97]f32 = undefined;
        for (input[0..n]) |*x| x.* = (random.float(f32) - 0.5) * 12;
        if (n > 3) {
            input[0] = std.math.nan(f32);
            input[1] = std.math.inf(f32);
            input[2] = -std.math.inf(f32);
        }
        if (op == .log or op == .sqrt) for (input[@min(3, n)..n]) |*x| {
            x.* = @abs(x.*);
        };
        // Inside each function's domain (outside it both sides give NaN; NaN is checked above).
        if (op == .asin or op == .acos or op == .atanh) for (input[@min(3, n)..n]) |*x| {
            x.* = x.* / 6.5;
        };
        if (op == .acosh) for (input[@min(3, n)..n]) |*x| {
            x.* = 1 + @abs(x.*);
        };
        // Exact halves, where round's ties go to even.
        if (op == .round and n > 6) {
            input[3] = 2.5;
            input[4] = -0.5;
            input[5] = 3.5;
        }
        var output: [97]f32 = undefined;
        const params: UnaryParams = .{ .min = -1.5, .max = 2, .alpha = 0.3, .beta = 0.4 };
        unary(op, params, input[0..n], output[0..n]);
        // tan near its poles and cosh/sinh of large inputs amplify float32 input rounding.
        const relative: f64 = switch (op) {
            .tan, .sinh, .cosh, .celu => 2e-5,
            else => 2e-6,
        };
        for (input[0..n], output[0..n]) |x, y| {
            const expected = unaryReference(op, params, x);
            if (!close(expected, y, relative, 4e-7)) {
                std.debug.print("{s}({d}) = {d}, expected {d}\n", .{ @tagName(op), x, y, expected });
                return error.TestUnexpectedResult;
            }
        }
    };
}

test "binary kernels match their references for every stride combination" {
    var prng = std.Random.DefaultPrng.init(2);
    const random = prng.random();
    for (std.enums.values(Binary)) |op| for ([_]usize{ 0, 1, 7, 16, 19, 40 }) |n| {
        for ([_]u1{ 0, 1 }) |a_stride| for ([_]u1{ 0, 1 }) |b_stride| {
            var a: [40]f32 = undefined;
            var b: [40]f32 = undefined;
            for (&a, &b) |*x, *y| {
                x.* = random.float(f32) * 4 - 1;
                y.* = random.float(f32) * 4 - 1;
            }
            a[0] = if (n % 2 == 0) std.math.nan(f32) else a[0];
            var output: [40]f32 = undefined;
            binary(op, &a, a_stride, &b, b_stride, output[0..n]);
            for (output[0..n], 0..) |got, i| {
                const x = a[if (a_stride == 1) i else 0];
                const y = b[if (b_stride == 1) i else 0];
                const expected = binaryReference(op, x, y);
                if (!close(expected, got, 1e-6, 1e-7)) {
                    std.debug.print("{s}({d}, {d}) = {d}, expected {d}\n", .{ @tagName(op), x, y, got, expected });
                    return error.TestUnexpectedResult;
                }
            }
        };
    };
}

test "pow by a scalar 2 is x · x exactly: tails, broadcast x, NaN, infinities, signed zeros, subnormals" {
    var a: [37]f32 = undefined;
    var prng = std.Random.DefaultPrng.init(3);
    const random = prng.random();
    for (&a) |*x| x.* = (random.float(f32) * 8 - 4) * std.math.pow(f32, 2, @floatFromInt(random.intRangeAtMost(i32, -80, 70)));
    a[0..6].* = .{ std.math.nan(f32), std.math.inf(f32), -std.math.inf(f32), -0.0, 0x1p-70, -0x1.8p-64 };
    const two = [_]f32{2};
    for ([_]usize{ 0, 1, 5, 16, 17, 37 }) |n| {
        var output: [37]f32 = undefined;
        binary(.pow, &a, 1, &two, 0, output[0..n]);
        for (output[0..n], a[0..n]) |got, x| {
            const expected = x * x;
            if (std.math.isNan(expected)) try std.testing.expect(std.math.isNan(got)) else try std.testing.expectEqual(@as(u32, @bitCast(expected)), @as(u32, @bitCast(got)));
        }
        // A broadcast x (stride 0) squares the one value into every element.
        binary(.pow, a[1..2], 0, &two, 0, output[0..n]);
        for (output[0..n]) |got| try std.testing.expectEqual(std.math.inf(f32), got);
    }
    // Other exponents still take libm's pow.
    var cube: [1]f32 = undefined;
    binary(.pow, &[_]f32{2}, 0, &[_]f32{3}, 0, &cube);
    try std.testing.expectEqual(@as(f32, 8), cube[0]);
}

test "unary kernels work in place" {
    var values = [_]f32{ -1, 0, 1, 2 };
    unary(.relu, .{}, &values, &values);
    try std.testing.expectEqualSlices(f32, &.{ 0, 0, 1, 2 }, &values);
}
