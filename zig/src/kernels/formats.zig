//! Rounding float32 values to the narrow element types ONNX casts to (float16, bfloat16, the
//! float8 and float4 formats, float8e8m0, int4/uint4/int2/uint2). Spindle carries those
//! types in float32 (int32 for the small integers), so a Cast to one of them is this
//! rounding: the result is the float32 value of the nearest representable number, as
//! ml_dtypes (ONNX's reference) computes it. Scalar functions; elementwise.zig maps them
//! over a range.
const std = @import("std");

/// A binary floating-point format: `mantissa_bits` stored fraction bits, `min_exponent` the
/// exponent of its smallest normal number, `max` its largest finite value.
pub const Float = struct {
    mantissa_bits: u5,
    min_exponent: i32,
    max: f64,
    /// What a finite value past `max` (and an infinity) becomes without saturation.
    overflow: enum { infinity, nan, saturate },
    /// Whether −0 exists (the "uz" formats have one zero).
    negative_zero: bool = true,
};

pub const float16: Float = .{ .mantissa_bits = 10, .min_exponent = -14, .max = 65504, .overflow = .infinity };
pub const bfloat16: Float = .{ .mantissa_bits = 7, .min_exponent = -126, .max = 3.3895313892515355e38, .overflow = .infinity };
pub const e4m3fn: Float = .{ .mantissa_bits = 3, .min_exponent = -6, .max = 448, .overflow = .nan };
pub const e4m3fnuz: Float = .{ .mantissa_bits = 3, .min_exponent = -7, .max = 240, .overflow = .nan, .negative_zero = false };
pub const e5m2: Float = .{ .mantissa_bits = 2, .min_exponent = -14, .max = 57344, .overflow = .infinity };
pub const e5m2fnuz: Float = .{ .mantissa_bits = 2, .min_exponent = -15, .max = 57344, .overflow = .nan, .negative_zero = false };
/// float4e2m1 has no infinity or NaN: out-of-range values saturate.
pub const e2m1: Float = .{ .mantissa_bits = 1, .min_exponent = 0, .max = 6, .overflow = .saturate };

/// Round half to even.
fn roundEven(value: f64) f64 {
    const floor = @floor(value);
    const fraction = value - floor;
    if (fraction > 0.5) return floor + 1;
    if (fraction < 0.5) return floor;
    return if (@mod(floor, 2) == 0) floor else floor + 1;
}

/// x rounded to the nearest value of `format` (ties to even), subnormals included; with
/// `saturate`, values past the largest finite one (infinities too) clamp to it first.
pub fn toFloat(format: Float, x: f32, saturate: bool) f32 {
    // float4e2m1 has no NaN: ml_dtypes (ONNX's reference) makes it 0.
    if (std.math.isNan(x)) return if (format.overflow == .saturate) 0 else x;
    const sign: f64 = if (std.math.signbit(x)) -1 else 1;
    var magnitude: f64 = @abs(@as(f64, x));
    if (saturate or format.overflow == .saturate) magnitude = @min(magnitude, format.max);
    if (std.math.isInf(magnitude)) return if (format.overflow == .infinity) x else std.math.nan(f32);
    if (magnitude == 0) return if (format.negative_zero) x else 0;
    // The quantum at x's binade (the subnormal one below the smallest normal): a power of
    // two, so scaling by it is exact in f64.
    const exponent = std.math.frexp(magnitude).exponent - 1;
    const quantum = std.math.ldexp(@as(f64, 1), @max(exponent, format.min_exponent) - @as(i32, format.mantissa_bits));
    const rounded = roundEven(magnitude / quantum) * quantum;
    if (rounded > format.max) {
        return switch (format.overflow) {
            .infinity => @floatCast(sign * std.math.inf(f64)),
            .nan => std.math.nan(f32),
            .saturate => @floatCast(sign * format.max),
        };
    }
    if (rounded == 0 and !format.negative_zero) return 0;
    return @floatCast(sign * rounded);
}

/// float8e8m0 (a power of two, 2^-127 … 2^127, no sign, NaN): x's exponent, rounded up when
/// x has fraction bits (`mode` up), to nearest (nearest), or down, as ONNX's Cast defines.
pub const E8m0Rounding = enum(u8) { up, nearest, down };

pub fn toE8m0(x: f32, saturate: bool, mode: E8m0Rounding) f32 {
    const bits: u32 = @bitCast(x);
    var exponent: u32 = (bits >> 23) & 0xff;
    if (exponent == 0xff) return std.math.nan(f32);
    const fraction = bits & 0x7fffff;
    const round_up = switch (mode) {
        .up => fraction != 0,
        // Guard bit set, and round, sticky or the exponent's lowest bit (ONNX's reference).
        .nearest => (bits & 0x400000) != 0 and ((bits & 0x200000) != 0 or (bits & 0x1fffff) != 0 or exponent > 0),
        .down => false,
    };
    if (round_up and !(saturate and exponent == 0xfe)) exponent += 1;
    if (exponent == 0xff) return std.math.nan(f32);
    return @floatCast(std.math.ldexp(@as(f64, 1), @as(i32, @intCast(exponent)) - 127));
}

/// x converted to a `bits`-bit integer as a NumPy cast does: truncated toward zero, then
/// wrapped to the width (two's complement when `signed`); NaN, infinities and values
/// beyond 2^63 give 0.
pub fn toSmallInteger(x: f32, comptime bits: u4, comptime signed: bool) f32 {
    if (!std.math.isFinite(x) or @abs(x) >= 9.2e18) return 0;
    const whole: i64 = @intFromFloat(@trunc(x));
    const modulus: i64 = @as(i64, 1) << bits;
    var wrapped = @mod(whole, modulus);
    if (signed and wrapped >= @divExact(modulus, 2)) wrapped -= modulus;
    return @floatFromInt(wrapped);
}

test "toFloat rounds to nearest even, saturates or overflows as each format says" {
    // Ties to even: 2.25 between 2 and 2.5 in e4m3fn (quantum 0.25 → tie 2.25 → 2.25 exact).
    try std.testing.expectEqual(@as(f32, 2.25), toFloat(e4m3fn, 2.25, false));
    try std.testing.expectEqual(@as(f32, 2.5), toFloat(e4m3fn, 2.5625, false));
    try std.testing.expectEqual(@as(f32, 448), toFloat(e4m3fn, 464, false)); // tie → even 448
    try std.testing.expect(std.math.isNan(toFloat(e4m3fn, 470, false)));
    try std.testing.expectEqual(@as(f32, 448), toFloat(e4m3fn, 1e9, true));
    try std.testing.expectEqual(@as(f32, -448), toFloat(e4m3fn, -std.math.inf(f32), true));
    try std.testing.expect(std.math.isNan(toFloat(e4m3fnuz, 300, false)));
    try std.testing.expectEqual(@as(f32, 0.40625), toFloat(e4m3fn, 0.4, false));
    try std.testing.expectEqual(@as(f32, 0.375), toFloat(e5m2, 0.4, false));
    try std.testing.expectEqual(std.math.inf(f32), toFloat(e5m2, 1e9, false));
    try std.testing.expectEqual(@as(f32, 57344), toFloat(e5m2, std.math.inf(f32), true));
    try std.testing.expectEqual(@as(f32, -10), toFloat(e5m2fnuz, -9.3, false));
    try std.testing.expect(!std.math.signbit(toFloat(e4m3fnuz, -0.0, false)));
    try std.testing.expect(std.math.signbit(toFloat(e4m3fn, -0.0, false)));
    // Subnormals: e4m3fn's smallest is 2^-9; half of it ties to 0 (even).
    try std.testing.expectEqual(@as(f32, 0x1p-9), toFloat(e4m3fn, 0x1.2p-9, false));
    try std.testing.expectEqual(@as(f32, 0), toFloat(e4m3fn, 0x1p-10, false));
    try std.testing.expectEqual(@as(f32, 2), toFloat(e2m1, 2.5, false));
    try std.testing.expectEqual(@as(f32, 6), toFloat(e2m1, 100, false));
    try std.testing.expectEqual(@as(f32, 0.5), toFloat(e2m1, 0.4, false));
    try std.testing.expectEqual(@as(f32, 0), toFloat(e2m1, std.math.nan(f32), false));
    try std.testing.expectEqual(@as(f32, 65504), toFloat(float16, 65519, false));
    try std.testing.expectEqual(std.math.inf(f32), toFloat(float16, 65520, false));
    try std.testing.expectEqual(@as(f32, 7.90625), toFloat(bfloat16, 7.9, false));
    // float16 agrees with Zig's own conversion on a sweep of float32 values.
    var prng = std.Random.DefaultPrng.init(7);
    for (0..20000) |_| {
        const value = std.math.ldexp(prng.random().float(f32) * 2 - 1, prng.random().intRangeAtMost(i32, -30, 17));
        try std.testing.expectEqual(@as(f32, @as(f16, @floatCast(value))), toFloat(float16, value, false));
    }
}

test "toE8m0 and toSmallInteger follow ONNX's reference" {
    try std.testing.expectEqual(@as(f32, 4), toE8m0(3, true, .up));
    try std.testing.expectEqual(@as(f32, 2), toE8m0(3, true, .down));
    try std.testing.expectEqual(@as(f32, 4), toE8m0(-3.5, true, .nearest));
    try std.testing.expectEqual(@as(f32, 2), toE8m0(2.5, true, .nearest));
    try std.testing.expect(std.math.isNan(toE8m0(std.math.inf(f32), true, .up)));
    try std.testing.expectEqual(@as(f32, 0x1p127), toE8m0(std.math.floatMax(f32), true, .up));
    try std.testing.expect(std.math.isNan(toE8m0(std.math.floatMax(f32), false, .up)));
    try std.testing.expectEqual(@as(f32, -8), toSmallInteger(8.4, 4, true));
    try std.testing.expectEqual(@as(f32, 7), toSmallInteger(-9.3, 4, true));
    try std.testing.expectEqual(@as(f32, 14), toSmallInteger(-2.5, 4, false));
    try std.testing.expectEqual(@as(f32, -1), toSmallInteger(7.9, 2, true));
    try std.testing.expectEqual(@as(f32, 0), toSmallInteger(std.math.nan(f32), 2, false));
}
