//! Vectorised transcendental functions on @Vector(N, f32), accurate to a few ulp, so that
//! elementwise kernels stay in vector registers (LLVM would otherwise call scalar libm once
//! per lane). Each has a scalar f64 reference for the tests. Also the integer divideCeil
//! that the kernels' blocking shares.
const std = @import("std");

/// ⌈numerator / denominator⌉ for sizes (blocks, slivers, tiles); denominator > 0.
pub fn divideCeil(numerator: usize, denominator: usize) usize {
    std.debug.assert(denominator > 0);
    return (numerator + denominator - 1) / denominator;
}

/// Lanes per vector: 16 floats (one AVX-512 register, two AVX2 registers).
pub const lanes = 16;
pub const V = @Vector(lanes, f32);
const VI = @Vector(lanes, i32);

fn splat(value: f32) V {
    return @splat(value);
}

/// exp's core: x = n·ln2 + r with |r| ≤ ln2/2 and a degree-6 polynomial for e^r; returns
/// n and e^r (e^x = 2^n · e^r).
inline fn reduced(x: V) struct { V, V } {
    const n = @round(x * splat(1.442695040888963)); // x / ln2
    // Two-constant ln2 (Cody-Waite) keeps r exact to float precision.
    var r = @mulAdd(V, n, splat(-0.693145751953125), x);
    r = @mulAdd(V, n, splat(-1.428606765330187e-6), r);
    var p = splat(1.9875691500e-4);
    p = @mulAdd(V, p, r, splat(1.3981999507e-3));
    p = @mulAdd(V, p, r, splat(8.3334519073e-3));
    p = @mulAdd(V, p, r, splat(4.1665795894e-2));
    p = @mulAdd(V, p, r, splat(1.6666665459e-1));
    p = @mulAdd(V, p, r, splat(5.0000001201e-1));
    return .{ n, @mulAdd(V, p, r * r, r + splat(1.0)) };
}

/// exp(x): range reduction x = n·ln2 + r with |r| ≤ ln2/2, a degree-6 polynomial for e^r,
/// then scaling by 2^n through the exponent bits. Inputs beyond ±88.7 saturate to inf / 0.
pub fn exp(x: V) V {
    const max_input = splat(88.72283);
    const min_input = splat(-103.97208);
    const clamped = @min(@max(x, min_input), max_input);
    const n, const p = reduced(clamped);
    // 2^n in two steps so that n down to -150 (denormal results) does not underflow the
    // exponent field: 2^n = 2^(n/2) · 2^(n - n/2).
    const n_int: VI = @intFromFloat(n);
    const half = n_int >> @splat(1);
    const scale_a: V = @bitCast((half + @as(VI, @splat(127))) << @splat(23));
    const scale_b: V = @bitCast((n_int - half + @as(VI, @splat(127))) << @splat(23));
    const result = p * scale_a * scale_b;
    const overflow = x > max_input;
    const underflow = x < min_input;
    const nan = x != x;
    const saturated = @select(f32, underflow, splat(0), @select(f32, overflow, splat(std.math.inf(f32)), result));
    return @select(f32, nan, x, saturated);
}

/// 1 / (1 + e^-x), with the exponent clamped so that large |x| gives exactly 0 or 1.
pub fn sigmoid(x: V) V {
    return splat(1.0) / (splat(1.0) + exp(-x));
}

/// tanh(x) as a 13/6 rational function on [-7.9, 7.9] (Eigen's coefficients, a few ulp);
/// beyond that float tanh is ±1. Rational rather than via exp: no cancellation near 0.
pub fn tanh(x: V) V {
    const limit = splat(7.90531110763549805);
    const c = @min(@max(x, -limit), limit);
    const x2 = c * c;
    var p = splat(-2.76076847742355e-16);
    p = @mulAdd(V, p, x2, splat(2.00018790482477e-13));
    p = @mulAdd(V, p, x2, splat(-8.60467152213735e-11));
    p = @mulAdd(V, p, x2, splat(5.12229709037114e-08));
    p = @mulAdd(V, p, x2, splat(1.48572235717979e-05));
    p = @mulAdd(V, p, x2, splat(6.37261928875436e-04));
    p = @mulAdd(V, p, x2, splat(4.89352455891786e-03));
    p = p * c;
    var q = splat(1.19825839466702e-06);
    q = @mulAdd(V, q, x2, splat(1.18534705686654e-04));
    q = @mulAdd(V, q, x2, splat(2.26843463243900e-03));
    q = @mulAdd(V, q, x2, splat(4.89352518554385e-03));
    const tiny = @abs(x) < splat(0.0004);
    // Float tanh rounds to exactly ±1 from |x| = 9 on; make the saturation exact so that
    // expressions like 1 + tanh(x) reach 0.
    const saturated = @select(f32, x > splat(0), splat(1), splat(-1));
    const result = @select(f32, tiny, x, @select(f32, @abs(x) >= splat(9), saturated, p / q));
    return @select(f32, x != x, x, result); // the clamp above turned NaN into a number
}

/// erf(x), Abramowitz & Stegun 7.1.26 refined: absolute error below 1.5e-7 in exact arithmetic (4e-7 in float) — the same
/// approximation PyTorch's vectorised CPU kernels use.
pub fn erf(x: V) V {
    const sign = @select(f32, x < splat(0), splat(-1.0), splat(1.0));
    const a = @abs(x);
    const t = splat(1.0) / @mulAdd(V, splat(0.3275911), a, splat(1.0));
    var p = splat(1.061405429);
    p = @mulAdd(V, p, t, splat(-1.453152027));
    p = @mulAdd(V, p, t, splat(1.421413741));
    p = @mulAdd(V, p, t, splat(-0.284496736));
    p = @mulAdd(V, p, t, splat(0.254829592));
    const y = splat(1.0) - p * t * exp(-a * a);
    // Near 0 the subtraction above cancels: use the Maclaurin series up to x^9 instead
    // (its truncation error is below 2e-9 for |x| < 0.3).
    return @select(f32, a < splat(0.3), erfSeries(x), sign * y);
}

/// erf(x) by its Maclaurin series up to x^9: what erf uses near 0, where the A&S form
/// cancels (truncation error below 2e-9 for |x| < 0.3; wrong far from 0).
fn erfSeries(x: V) V {
    const x2 = x * x;
    var s = splat(1.0 / 216.0);
    s = @mulAdd(V, s, x2, splat(-1.0 / 42.0));
    s = @mulAdd(V, s, x2, splat(1.0 / 10.0));
    s = @mulAdd(V, s, x2, splat(-1.0 / 3.0));
    s = @mulAdd(V, s, x2, splat(1.0));
    return x * s * splat(1.1283791670955126); // 2 / sqrt(pi)
}

/// e^x for x ≤ 0 where only an absolute accuracy near 2^-126 matters (erfc's factor
/// e^(-a²)): exp's range reduction and polynomial, with the input clamped at -87 (where
/// e^x ≈ 1.6e-38, still normal) so that 2^n is one exponent field, 0 below it, and none of
/// exp's other selects (a NaN gives a number: the caller keeps NaN itself).
fn expNonPositive(x: V) V {
    const clamped = @max(@min(x, splat(0)), splat(-87));
    const n, const p = reduced(clamped);
    const n_int: VI = @intFromFloat(n);
    const result = p * @as(V, @bitCast((n_int + @as(VI, @splat(127))) << @splat(23)));
    // Below the clamp: 0, so that far tails (gelu(-40)) are exactly 0 as in f64.
    return @select(f32, x < splat(-87), splat(0), result);
}

/// erfc(a) for a ≥ 0 by the same A&S approximation (no cancellation: a product of terms).
/// Absolute error below 1.5e-7 in exact arithmetic, so near a = 0 (erfc ≈ 1) it is also
/// relatively accurate.
fn erfcNonNegative(a: V) V {
    const t = splat(1.0) / @mulAdd(V, splat(0.3275911), a, splat(1.0));
    var p = splat(1.061405429);
    p = @mulAdd(V, p, t, splat(-1.453152027));
    p = @mulAdd(V, p, t, splat(1.421413741));
    p = @mulAdd(V, p, t, splat(-0.284496736));
    p = @mulAdd(V, p, t, splat(0.254829592));
    return p * t * expNonPositive(-a * a);
}

/// Φ(x) = (1 + erf(x/√2)) / 2, the standard normal CDF, from erfc on either side: 1 − erfc/2
/// for x ≥ 0 (erfc/2 ≤ 1/2, so within 1.5e-7 relative of Φ ≥ 1/2 there) and erfc/2 for x < 0,
/// so that gelu(x) = x·Φ(x) does not lose its small negative values to the cancellation of
/// 1 + erf. NaN gives a number (gelu's x · Φ keeps the NaN). No series branch near 0: its
/// lanes paid for both forms (a fifth of gelu's operations), and Φ ≈ 1/2 there has no
/// cancellation to avoid (gelu within 6.2e-7 relative of f64 on |x| < 0.43).
pub fn normalCdf(x: V) V {
    const a = @abs(x) * splat(0.7071067811865476);
    const half_tail = splat(0.5) * erfcNonNegative(a);
    return @select(f32, x < splat(0), half_tail, splat(1) - half_tail);
}

// ---------------------------------------------------------------------------------------
// Scalar references in f64.

/// erf in f64: Maclaurin series for |x| < 2.5, Lentz-free continued fraction for erfc above.
pub fn erfReference(x: f64) f64 {
    const a = @abs(x);
    if (std.math.isNan(x)) return x;
    var result: f64 = undefined;
    if (a < 2.5) {
        var term = a;
        var sum = a;
        var n: f64 = 0;
        while (@abs(term) > 1e-17 * @abs(sum)) {
            n += 1;
            term *= -a * a / n;
            sum += term / (2 * n + 1);
        }
        result = sum * 2 / @sqrt(std.math.pi);
    } else {
        var k = a;
        var n: f64 = 80;
        while (n >= 1) : (n -= 1) k = a + (n / 2) / k;
        result = 1 - @exp(-a * a) / @sqrt(std.math.pi) / k;
    }
    return if (x < 0) -result else result;
}

fn expectClose(expected: f64, got: f32, relative: f64, absolute: f64) !void {
    const e: f32 = @floatCast(expected);
    if (std.math.isNan(expected)) return std.testing.expect(std.math.isNan(got));
    if (std.math.isInf(e)) return std.testing.expectEqual(e, got);
    const tolerance = @max(absolute, relative * @abs(expected));
    if (@abs(@as(f64, got) - expected) > tolerance) {
        std.debug.print("expected {d}, got {d}\n", .{ expected, got });
        return error.TestExpectedApproxEq;
    }
}

fn sweep(comptime f: fn (V) V, comptime reference: fn (f64) f64, low: f32, high: f32, relative: f64, absolute: f64) !void {
    const steps = 4096;
    var i: usize = 0;
    while (i < steps) : (i += lanes) {
        var input: [lanes]f32 = undefined;
        for (&input, 0..) |*x, lane| {
            const t = @as(f32, @floatFromInt(i + lane)) / steps;
            x.* = low + (high - low) * t;
        }
        const output: [lanes]f32 = f(input);
        for (input, output) |x, y| try expectClose(reference(x), y, relative, absolute);
    }
}

fn expReference(x: f64) f64 {
    return @exp(x);
}
fn sigmoidReference(x: f64) f64 {
    return 1 / (1 + @exp(-x));
}
fn tanhReference(x: f64) f64 {
    return std.math.tanh(x);
}

test "exp matches f64 within a few ulp across its range, saturating at the ends" {
    try sweep(exp, expReference, -87, 88, 4e-7, 0);
    try sweep(exp, expReference, -1, 1, 3e-7, 0);
    const special: [lanes]f32 = exp(V{ 0, -200, 200, std.math.inf(f32), -std.math.inf(f32), std.math.nan(f32), 1, -1, 0, 0, 0, 0, 0, 0, 0, 0 });
    try std.testing.expectEqual(@as(f32, 1), special[0]);
    try std.testing.expectEqual(@as(f32, 0), special[1]);
    try std.testing.expect(std.math.isInf(special[2]));
    try std.testing.expect(std.math.isInf(special[3]));
    try std.testing.expectEqual(@as(f32, 0), special[4]);
    try std.testing.expect(std.math.isNan(special[5]));
}

test "sigmoid, tanh and erf match their references" {
    try sweep(sigmoid, sigmoidReference, -30, 30, 1e-6, 1e-7);
    try sweep(tanh, tanhReference, -12, 12, 1e-6, 1e-7);
    try sweep(tanh, tanhReference, -0.1, 0.1, 1e-6, 1e-9);
    try sweep(tanh, tanhReference, -1e-3, 1e-3, 1e-6, 1e-12);
    try sweep(erf, erfReference, -6, 6, 0, 3e-7);
    try sweep(erf, erfReference, -0.3, 0.3, 1e-6, 1e-9);
}

fn gelu(x: V) V {
    return x * normalCdf(x);
}
fn geluReference(x: f64) f64 {
    return 0.5 * x * (1 + erfReference(x / std.math.sqrt2));
}

test "gelu from normalCdf: relative accuracy near 0 and through the positive side, absolute in the negative tail" {
    try sweep(gelu, geluReference, -0.43, 0.43, 1e-6, 1e-12);
    try sweep(gelu, geluReference, 0.43, 12, 1e-6, 0);
    try sweep(gelu, geluReference, -12, -0.43, 0, 4e-7);
    const special: [lanes]f32 = gelu(V{ std.math.nan(f32), std.math.inf(f32), 0, -0.0, 40, -40, 1e-30, -1e-30, 0, 0, 0, 0, 0, 0, 0, 0 });
    try std.testing.expect(std.math.isNan(special[0]));
    try std.testing.expect(std.math.isInf(special[1]));
    try std.testing.expectEqual(@as(f32, 0), special[2]);
    try std.testing.expectEqual(@as(f32, 40), special[4]);
    try std.testing.expectEqual(@as(f32, 0), special[5]);
    try std.testing.expectEqual(@as(f32, 5e-31), special[6]);
}

test "erfReference agrees with known values" {
    try std.testing.expectApproxEqAbs(@as(f64, 0.8427007929497149), erfReference(1), 1e-15);
    try std.testing.expectApproxEqAbs(@as(f64, 0.9999779095030014), erfReference(3), 1e-15);
    try std.testing.expectApproxEqAbs(@as(f64, -0.5204998778130465), erfReference(-0.5), 1e-15);
}
