//! Elementwise ops on tensors: NumPy broadcasting, scalar operands, and the split of the flat
//! output range over the intra-op pool (grains from parallel.zig). The inner loops live in
//! kernels/elementwise.zig.
const std = @import("std");
const status = @import("../status.zig");
const tensor = @import("../tensor.zig");
const shape_ops = @import("shape.zig");
const intra_op = @import("../pool/intra_op.zig");
const parallel = @import("parallel.zig");
const kernels = @import("../kernels/elementwise.zig");

const Error = status.Error;
const Tensor = tensor.Tensor;
const max_dims = tensor.max_dims;

pub fn requireFloat(comptime op: []const u8, t: *const Tensor) Error!void {
    if (t.dtype != .float32) {
        return status.fail(error.DTypeMismatch, op ++ ": expected a float32 tensor, got {s}", .{t.dtype.name()});
    }
}

/// y = op(x), elementwise.
pub fn unary(op: kernels.Unary, params: kernels.UnaryParams, input: *Tensor) Error!*Tensor {
    if (input.dtype != .float32) {
        return status.fail(error.DTypeMismatch, "{s}: expected a float32 tensor, got {s}", .{ @tagName(op), input.dtype.name() });
    }
    if (op == .clamp and params.min > params.max) {
        return status.fail(error.InvalidArgument, "clamp: min ({d}) is greater than max ({d})", .{ params.min, params.max });
    }
    const x = try shape_ops.contiguous(input);
    defer x.release();
    const out = try tensor.createUninit(.float32, x.dims());
    errdefer out.release();
    const Context = struct {
        op: kernels.Unary,
        params: kernels.UnaryParams,
        input: []const f32,
        output: []f32,
        fn body(context: *const @This(), begin: usize, end: usize) Error!void {
            kernels.unary(context.op, context.params, context.input[begin..end], context.output[begin..end]);
        }
    };
    const context: Context = .{ .op = op, .params = params, .input = x.f32Slice(), .output = out.f32Slice() };
    const grain = parallel.grain(if (kernels.unaryIsTranscendental(op)) .transcendental else .light, 1);
    try intra_op.parallelForTyped(0, context.output.len, grain, &context, Context.body);
    return out;
}

/// The broadcast of two shapes (right-aligned, dims equal or 1), or a ShapeMismatch error.
pub fn broadcastShape(comptime op: []const u8, a: []const usize, b: []const usize, out: *[max_dims]usize) Error![]usize {
    const ndim = @max(a.len, b.len);
    for (0..ndim) |i| {
        const a_dim = if (i < ndim - a.len) 1 else a[i - (ndim - a.len)];
        const b_dim = if (i < ndim - b.len) 1 else b[i - (ndim - b.len)];
        if (a_dim != b_dim and a_dim != 1 and b_dim != 1) {
            return status.fail(error.ShapeMismatch, op ++ ": shapes {f} and {f} cannot be broadcast (dimension {d}: {d} vs {d})", .{ status.shape(a), status.shape(b), i, a_dim, b_dim });
        }
        out[i] = if (a_dim == 1) b_dim else a_dim;
    }
    return out[0..ndim];
}

/// Strides (in elements) of a contiguous operand of shape `shape` seen through the broadcast
/// output shape `out_shape`: 0 along broadcast dimensions.
pub fn broadcastStrides(shape: []const usize, out_shape: []const usize) [max_dims]usize {
    var strides: [max_dims]usize = @splat(0);
    var stride: usize = 1;
    var i = shape.len;
    const offset = out_shape.len - shape.len;
    while (i > 0) {
        i -= 1;
        strides[i + offset] = if (shape[i] == 1) 0 else stride;
        stride *= shape[i];
    }
    return strides;
}

/// A broadcast iteration space with adjacent compatible dimensions merged, so that the
/// inner run is as long as possible.
const Layout = struct {
    ndim: usize,
    shape: [max_dims]usize,
    a_strides: [max_dims]usize,
    b_strides: [max_dims]usize,

    fn init(out_shape: []const usize, a_strides: [max_dims]usize, b_strides: [max_dims]usize) Layout {
        var layout: Layout = .{ .ndim = 0, .shape = undefined, .a_strides = undefined, .b_strides = undefined };
        for (out_shape, 0..) |d, i| {
            if (d == 1) continue; // size-1 dims contribute nothing to the iteration
            const n = layout.ndim;
            if (n > 0 and layout.a_strides[n - 1] == a_strides[i] * d and layout.b_strides[n - 1] == b_strides[i] * d) {
                layout.shape[n - 1] *= d;
                layout.a_strides[n - 1] = a_strides[i];
                layout.b_strides[n - 1] = b_strides[i];
                continue;
            }
            layout.shape[n] = d;
            layout.a_strides[n] = a_strides[i];
            layout.b_strides[n] = b_strides[i];
            layout.ndim += 1;
        }
        if (layout.ndim == 0) {
            layout.ndim = 1;
            layout.shape[0] = 1;
            layout.a_strides[0] = 0;
            layout.b_strides[0] = 0;
        }
        return layout;
    }

    fn inner(layout: *const Layout) usize {
        return layout.shape[layout.ndim - 1];
    }

    /// Element offsets of a and b at the start of outer row `row`.
    fn rowOffsets(layout: *const Layout, row: usize) struct { a: usize, b: usize } {
        var remaining = row;
        var a_offset: usize = 0;
        var b_offset: usize = 0;
        var axis = layout.ndim - 1;
        while (axis > 0) {
            axis -= 1;
            const index = remaining % layout.shape[axis];
            remaining /= layout.shape[axis];
            a_offset += index * layout.a_strides[axis];
            b_offset += index * layout.b_strides[axis];
        }
        return .{ .a = a_offset, .b = b_offset };
    }
};

const BinaryContext = struct {
    op: kernels.Binary,
    layout: Layout,
    a: []const f32,
    b: []const f32,
    output: []f32,

    fn body(context: *const BinaryContext, begin: usize, end: usize) Error!void {
        const layout = &context.layout;
        const inner = layout.inner();
        const a_step: u1 = @intCast(layout.a_strides[layout.ndim - 1]);
        const b_step: u1 = @intCast(layout.b_strides[layout.ndim - 1]);
        var position = begin;
        while (position < end) {
            const row = position / inner;
            const column = position % inner;
            const count = @min(inner - column, end - position);
            const offsets = layout.rowOffsets(row);
            const a_start = offsets.a + column * a_step;
            const b_start = offsets.b + column * b_step;
            kernels.binary(
                context.op,
                context.a[a_start..],
                a_step,
                context.b[b_start..],
                b_step,
                context.output[position .. position + count],
            );
            position += count;
        }
    }
};

/// out = a ⊕ b with broadcasting.
pub fn binary(op: kernels.Binary, a_input: *Tensor, b_input: *Tensor) Error!*Tensor {
    const name = @tagName(op);
    if (a_input.dtype != .float32 or b_input.dtype != .float32) {
        return status.fail(error.DTypeMismatch, "{s}: expected float32 tensors, got {s} and {s}", .{ name, a_input.dtype.name(), b_input.dtype.name() });
    }
    var shape_buffer: [max_dims]usize = undefined;
    const out_shape = switch (op) {
        inline else => |comptime_op| try broadcastShape(@tagName(comptime_op), a_input.dims(), b_input.dims(), &shape_buffer),
    };
    const a = try shape_ops.contiguous(a_input);
    defer a.release();
    const b = try shape_ops.contiguous(b_input);
    defer b.release();
    const out = try tensor.createUninit(.float32, out_shape);
    errdefer out.release();
    if (out.numel() == 0) return out;
    const layout = Layout.init(out_shape, broadcastStrides(a.dims(), out_shape), broadcastStrides(b.dims(), out_shape));
    // The innermost stride of each operand is 0 (broadcast) or 1 (contiguous) by construction.
    std.debug.assert(layout.a_strides[layout.ndim - 1] <= 1 and layout.b_strides[layout.ndim - 1] <= 1);
    const context: BinaryContext = .{ .op = op, .layout = layout, .a = a.f32Slice(), .b = b.f32Slice(), .output = out.f32Slice() };
    const grain = parallel.grain(if (op == .pow) .transcendental else .light, 1);
    try intra_op.parallelForTyped(0, context.output.len, grain, &context, BinaryContext.body);
    return out;
}

/// out = a ⊕ scalar (scalar_first = false) or scalar ⊕ a (scalar_first = true).
pub fn binaryScalar(op: kernels.Binary, input: *Tensor, scalar: f32, scalar_first: bool) Error!*Tensor {
    if (input.dtype != .float32) {
        return status.fail(error.DTypeMismatch, "{s}: expected a float32 tensor, got {s}", .{ @tagName(op), input.dtype.name() });
    }
    const x = try shape_ops.contiguous(input);
    defer x.release();
    const out = try tensor.createUninit(.float32, x.dims());
    errdefer out.release();
    const Context = struct {
        op: kernels.Binary,
        input: []const f32,
        scalar: [1]f32,
        scalar_first: bool,
        output: []f32,
        fn body(context: *const @This(), begin: usize, end: usize) Error!void {
            const values = context.input[begin..end];
            const output = context.output[begin..end];
            if (context.scalar_first) {
                kernels.binary(context.op, &context.scalar, 0, values, 1, output);
            } else {
                kernels.binary(context.op, values, 1, &context.scalar, 0, output);
            }
        }
    };
    const context: Context = .{ .op = op, .input = x.f32Slice(), .scalar = .{scalar}, .scalar_first = scalar_first, .output = out.f32Slice() };
    const grain = parallel.grain(if (op == .pow) .transcendental else .light, 1);
    try intra_op.parallelForTyped(0, context.output.len, grain, &context, Context.body);
    return out;
}

// ---------------------------------------------------------------------------------------
// Tests: every op against the scalar reference, with broadcasting corners, at 1 and 3 threads.

const settings = @import("../settings.zig");

fn randomTensor(random: std.Random, shape: []const usize) !*Tensor {
    const t = try tensor.createUninit(.float32, shape);
    for (t.f32Slice()) |*x| x.* = random.float(f32) * 4 - 2;
    return t;
}

fn referenceAt(shape: []const usize, out_shape: []const usize, flat: usize) usize {
    // Index of the broadcast element `flat` of out_shape inside a contiguous `shape`.
    var remaining = flat;
    var index: usize = 0;
    var stride: usize = 1;
    var axis = out_shape.len;
    while (axis > 0) {
        axis -= 1;
        const coordinate = remaining % out_shape[axis];
        remaining /= out_shape[axis];
        const source_axis = @as(isize, @intCast(axis)) - @as(isize, @intCast(out_shape.len - shape.len));
        if (source_axis < 0) continue;
        const d = shape[@intCast(source_axis)];
        if (d != 1) index += coordinate * stride;
        stride *= d;
    }
    return index;
}

test "binary broadcasting matches the reference on awkward shapes at 1 and 3 threads" {
    settings.resetForTesting();
    defer settings.resetForTesting();
    var prng = std.Random.DefaultPrng.init(11);
    const random = prng.random();
    const cases = [_][2][]const usize{
        .{ &.{ 3, 5 }, &.{ 3, 5 } }, .{ &.{ 3, 5 }, &.{5} },         .{ &.{ 3, 1 }, &.{ 1, 5 } },
        .{ &.{1}, &.{ 7, 3 } },      .{ &.{}, &.{ 2, 3 } },          .{ &.{ 2, 1, 4 }, &.{ 3, 1 } },
        .{ &.{ 0, 3 }, &.{3} },      .{ &.{ 1, 1 }, &.{ 1, 1 } },    .{ &.{ 5, 1, 17 }, &.{ 1, 3, 17 } },
        .{ &.{70001}, &.{70001} },   .{ &.{ 2, 40000 }, &.{40000} }, .{ &.{ 40000, 2 }, &.{ 40000, 1 } },
    };
    for ([_]i64{ 1, 3 }) |threads| {
        try settings.setNumThreads(threads);
        for (cases) |case| for (std.enums.values(kernels.Binary)) |op| {
            const a = try randomTensor(random, case[0]);
            defer a.release();
            const b = try randomTensor(random, case[1]);
            defer b.release();
            const out = try binary(op, a, b);
            defer out.release();
            var shape_buffer: [max_dims]usize = undefined;
            const out_shape = try broadcastShape("test", case[0], case[1], &shape_buffer);
            try std.testing.expectEqualSlices(usize, out_shape, out.dims());
            for (out.f32Slice(), 0..) |got, flat| {
                const x = a.f32Slice()[referenceAt(case[0], out_shape, flat)];
                const y = b.f32Slice()[referenceAt(case[1], out_shape, flat)];
                try std.testing.expect(kernels.close(kernels.binaryReference(op, x, y), got, 1e-6, 1e-7));
            }
        };
    }
}

test "incompatible shapes and dtypes are refused" {
    const a = try tensor.createZeroed(.float32, &.{ 2, 3 });
    defer a.release();
    const b = try tensor.createZeroed(.float32, &.{ 4, 3 });
    defer b.release();
    try std.testing.expectError(error.ShapeMismatch, binary(.add, a, b));
    const ids = try tensor.createZeroed(.int64, &.{3});
    defer ids.release();
    try std.testing.expectError(error.DTypeMismatch, binary(.add, a, ids));
    try std.testing.expectError(error.DTypeMismatch, unary(.relu, .{}, ids));
    try std.testing.expectError(error.InvalidArgument, unary(.clamp, .{ .min = 2, .max = 1 }, a));
}

test "binary on a transposed view and scalar operands" {
    const base = try tensor.createUninit(.float32, &.{ 2, 3 });
    defer base.release();
    for (base.f32Slice(), 0..) |*x, i| x.* = @floatFromInt(i);
    const transposed = try tensor.createView(base, &.{ 3, 2 }, &.{ 1, 3 }, 0);
    defer transposed.release();
    const out = try binary(.mul, transposed, transposed);
    defer out.release();
    try std.testing.expectEqualSlices(f32, &.{ 0, 9, 1, 16, 4, 25 }, out.f32Slice());
    const minus = try binaryScalar(.sub, base, 1, true);
    defer minus.release();
    try std.testing.expectEqualSlices(f32, &.{ 1, 0, -1, -2, -3, -4 }, minus.f32Slice());
    const halves = try binaryScalar(.div, base, 2, false);
    defer halves.release();
    try std.testing.expectEqualSlices(f32, &.{ 0, 0.5, 1, 1.5, 2, 2.5 }, halves.f32Slice());
}

test "unary over a large range is identical at 1 and 2 threads" {
    settings.resetForTesting();
    defer settings.resetForTesting();
    var prng = std.Random.DefaultPrng.init(3);
    const x = try randomTensor(prng.random(), &.{100003});
    defer x.release();
    try settings.setNumThreads(1);
    const one = try unary(.gelu_erf, .{}, x);
    defer one.release();
    try settings.setNumThreads(2);
    const two = try unary(.gelu_erf, .{}, x);
    defer two.release();
    try std.testing.expectEqualSlices(f32, one.f32Slice(), two.f32Slice());
}
