//! layer_norm and batch_norm (inference form) on tensors, rows or planes split over the
//! intra-op pool (grains from parallel.zig); the row and plane kernels live in
//! kernels/normalization.zig.
const std = @import("std");
const status = @import("../status.zig");
const tensor = @import("../tensor.zig");
const shape_ops = @import("shape.zig");
const intra_op = @import("../pool/intra_op.zig");
const parallel = @import("parallel.zig");
const kernels = @import("../kernels/normalization.zig");

const Error = status.Error;
const Tensor = tensor.Tensor;

fn requireFloat(comptime op: []const u8, comptime which: []const u8, t: *const Tensor) Error!void {
    if (t.dtype != .float32) {
        return status.fail(error.DTypeMismatch, op ++ ": " ++ which ++ " must be float32, got {s}", .{t.dtype.name()});
    }
}

fn requireShape(comptime op: []const u8, comptime which: []const u8, t: *const Tensor, expected: []const usize) Error!void {
    if (!std.mem.eql(usize, t.dims(), expected)) {
        return status.fail(error.ShapeMismatch, op ++ ": " ++ which ++ " has shape {f}, expected {f}", .{ status.shape(t.dims()), status.shape(expected) });
    }
}

/// Normalises over the last `normalized_ndim` dims, then applies weight and bias (each of
/// the normalised shape, optional).
pub fn layerNorm(input: *Tensor, normalized_ndim: usize, weight_input: ?*Tensor, bias_input: ?*Tensor, eps: f64) Error!*Tensor {
    try requireFloat("layer_norm", "input", input);
    if (normalized_ndim == 0 or normalized_ndim > input.ndim) {
        return status.fail(error.InvalidArgument, "layer_norm: normalized shape of {d} dims does not fit a {d}-D input", .{ normalized_ndim, input.ndim });
    }
    if (!(eps >= 0) or !std.math.isFinite(eps)) return status.fail(error.InvalidArgument, "layer_norm: eps must be a finite non-negative number, got {d}", .{eps});
    const normalized_shape = input.dims()[input.ndim - normalized_ndim ..];
    var row_length: usize = 1;
    for (normalized_shape) |d| row_length *= d;
    const weight = if (weight_input) |w| try shape_ops.contiguous(w) else null;
    defer if (weight) |w| w.release();
    const bias = if (bias_input) |b| try shape_ops.contiguous(b) else null;
    defer if (bias) |b| b.release();
    if (weight) |w| {
        try requireFloat("layer_norm", "weight", w);
        try requireShape("layer_norm", "weight", w, normalized_shape);
    }
    if (bias) |b| {
        try requireFloat("layer_norm", "bias", b);
        try requireShape("layer_norm", "bias", b, normalized_shape);
    }
    const x = try shape_ops.contiguous(input);
    defer x.release();
    const out = try tensor.createUninit(.float32, x.dims());
    errdefer out.release();
    if (out.numel() == 0) return out;
    const Context = struct {
        input: []const f32,
        output: []f32,
        row_length: usize,
        weight: ?[]const f32,
        bias: ?[]const f32,
        eps: f32,
        fn body(context: *const @This(), begin: usize, end: usize) Error!void {
            const start = begin * context.row_length;
            const length = (end - begin) * context.row_length;
            kernels.layerNormRows(
                context.input[start..][0..length],
                context.output[start..][0..length],
                context.row_length,
                context.weight,
                context.bias,
                context.eps,
            );
        }
    };
    const context: Context = .{
        .input = x.f32Slice(),
        .output = out.f32Slice(),
        .row_length = row_length,
        .weight = if (weight) |w| w.f32Slice() else null,
        .bias = if (bias) |b| b.f32Slice() else null,
        .eps = @floatCast(eps),
    };
    const rows = x.numel() / row_length;
    try intra_op.parallelForTyped(0, rows, parallel.grain(.heavy, row_length), &context, Context.body);
    return out;
}

/// Batch norm with running statistics: x is [N, C, ...]; mean, variance, weight and bias are
/// [C]. y = (x - mean) / sqrt(variance + eps) · weight + bias.
pub fn batchNorm(input: *Tensor, mean_input: *Tensor, variance_input: *Tensor, weight_input: ?*Tensor, bias_input: ?*Tensor, eps: f64) Error!*Tensor {
    try requireFloat("batch_norm", "input", input);
    if (input.ndim < 2) return status.fail(error.ShapeMismatch, "batch_norm: expected an [N, C, ...] input, got {d}-D", .{input.ndim});
    if (!(eps >= 0) or !std.math.isFinite(eps)) return status.fail(error.InvalidArgument, "batch_norm: eps must be a finite non-negative number, got {d}", .{eps});
    const channels = input.shape[1];
    const parameters = [_]?*Tensor{ mean_input, variance_input, weight_input, bias_input };
    const names = [_][]const u8{ "running mean", "running variance", "weight", "bias" };
    var slices: [4]?[]const f32 = @splat(null);
    var held: [4]?*Tensor = @splat(null);
    defer for (held) |h| if (h) |t| t.release();
    for (parameters, names, 0..) |maybe, name, i| {
        const t = maybe orelse continue;
        if (t.dtype != .float32) return status.fail(error.DTypeMismatch, "batch_norm: {s} must be float32, got {s}", .{ name, t.dtype.name() });
        if (t.ndim != 1 or t.shape[0] != channels) {
            return status.fail(error.ShapeMismatch, "batch_norm: {s} has shape {f}, expected [{d}]", .{ name, status.shape(t.dims()), channels });
        }
        held[i] = try shape_ops.contiguous(t);
        slices[i] = held[i].?.f32Slice();
    }
    const x = try shape_ops.contiguous(input);
    defer x.release();
    const out = try tensor.createUninit(.float32, x.dims());
    errdefer out.release();
    var plane: usize = 1;
    for (x.dims()[2..]) |d| plane *= d;
    const Context = struct {
        input: []const f32,
        output: []f32,
        plane: usize,
        channels: usize,
        mean: []const f32,
        variance: []const f32,
        weight: ?[]const f32,
        bias: ?[]const f32,
        eps: f32,
        fn body(context: *const @This(), begin: usize, end: usize) Error!void {
            for (begin..end) |index| {
                const channel = index % context.channels;
                const inverse = 1 / @sqrt(context.variance[channel] + context.eps);
                const scale = inverse * (if (context.weight) |w| w[channel] else 1);
                const shift = (if (context.bias) |b| b[channel] else 0) - context.mean[channel] * scale;
                const start = index * context.plane;
                kernels.affinePlane(context.input[start..][0..context.plane], context.output[start..][0..context.plane], scale, shift);
            }
        }
    };
    const context: Context = .{
        .input = x.f32Slice(),
        .output = out.f32Slice(),
        .plane = plane,
        .channels = channels,
        .mean = slices[0].?,
        .variance = slices[1].?,
        .weight = slices[2],
        .bias = slices[3],
        .eps = @floatCast(eps),
    };
    const planes = x.shape[0] * channels;
    try intra_op.parallelForTyped(0, planes, parallel.grain(.light, plane), &context, Context.body);
    return out;
}

test "layer_norm checks shapes and matches a direct computation" {
    const x = try tensor.createUninit(.float32, &.{ 4, 3, 5 });
    defer x.release();
    for (x.f32Slice(), 0..) |*v, i| v.* = @floatFromInt(i % 7);
    const weight = try tensor.createUninit(.float32, &.{ 3, 5 });
    defer weight.release();
    @memset(weight.f32Slice(), 0.5);
    const out = try layerNorm(x, 2, weight, null, 1e-5);
    defer out.release();
    const row = x.f32Slice()[15..30];
    var mean: f64 = 0;
    for (row) |v| mean += v;
    mean /= 15;
    var variance: f64 = 0;
    for (row) |v| variance += (v - mean) * (v - mean);
    variance /= 15;
    for (row, out.f32Slice()[15..30]) |v, y| {
        try std.testing.expectApproxEqAbs(@as(f32, @floatCast((v - mean) / @sqrt(variance + 1e-5) * 0.5)), y, 1e-5);
    }
    try std.testing.expectError(error.ShapeMismatch, layerNorm(x, 1, weight, null, 1e-5));
    try std.testing.expectError(error.InvalidArgument, layerNorm(x, 4, null, null, 1e-5));
    try std.testing.expectError(error.InvalidArgument, layerNorm(x, 1, null, null, std.math.nan(f64)));
}

test "layer_norm gives the same values at 1 and 2 threads" {
    const settings = @import("../settings.zig");
    settings.resetForTesting();
    defer settings.resetForTesting();
    // 37 rows of 96: more than two groups of 16, split over the team at 2 threads.
    const x = try tensor.createUninit(.float32, &.{ 1, 37, 96 });
    defer x.release();
    for (x.f32Slice(), 0..) |*v, i| v.* = @as(f32, @floatFromInt((i * 7919) % 1000)) / 250 - 1;
    const weight = try tensor.createUninit(.float32, &.{96});
    defer weight.release();
    for (weight.f32Slice(), 0..) |*v, i| v.* = 1 + @as(f32, @floatFromInt(i % 5)) / 10;
    try settings.setNumThreads(1);
    const one = try layerNorm(x, 1, weight, weight, 1e-5);
    defer one.release();
    try settings.setNumThreads(2);
    const two = try layerNorm(x, 1, weight, weight, 1e-5);
    defer two.release();
    try std.testing.expectEqualSlices(f32, one.f32Slice(), two.f32Slice());
}

test "batch_norm folds statistics per channel and checks shapes" {
    const x = try tensor.createUninit(.float32, &.{ 2, 3, 2 });
    defer x.release();
    for (x.f32Slice(), 0..) |*v, i| v.* = @floatFromInt(i);
    const mean = try tensor.createUninit(.float32, &.{3});
    defer mean.release();
    @memcpy(mean.f32Slice(), &[_]f32{ 1, 2, 3 });
    const variance = try tensor.createUninit(.float32, &.{3});
    defer variance.release();
    @memcpy(variance.f32Slice(), &[_]f32{ 4, 1, 0.25 });
    const out = try batchNorm(x, mean, variance, null, null, 0);
    defer out.release();
    try std.testing.expectApproxEqAbs(@as(f32, -0.5), out.f32Slice()[0], 1e-6);
    try std.testing.expectApproxEqAbs(@as(f32, 0), out.f32Slice()[2], 1e-6);
    try std.testing.expectApproxEqAbs(@as(f32, 16), out.f32Slice()[11], 1e-6);
    const wrong = try tensor.createZeroed(.float32, &.{4});
    defer wrong.release();
    try std.testing.expectError(error.ShapeMismatch, batchNorm(x, wrong, variance, null, null, 1e-5));
}
