//! Index-mapping ops for model import (where, compare, expand, cast, pad, take, resize):
//! shape and dtype checks, output allocation, and the split over the intra-op pool (grains
//! from parallel.zig). The element loops live in kernels/indexing.zig.
const std = @import("std");
const status = @import("../status.zig");
const tensor = @import("../tensor.zig");
const intra_op = @import("../pool/intra_op.zig");
const parallel = @import("parallel.zig");
const kernels = @import("../kernels/indexing.zig");
const shape_ops = @import("shape.zig");
const elementwise = @import("elementwise.zig");
const normalizeDim = @import("dims.zig").normalizeDim;

const Error = status.Error;
const Tensor = tensor.Tensor;
const max_dims = tensor.max_dims;

/// Operand view of contiguous `t` broadcast to `shape` (right-aligned).
fn operand(t: *const Tensor, shape: []const usize) kernels.Operand {
    std.debug.assert(t.isContiguous());
    std.debug.assert(t.ndim <= shape.len);
    var result: kernels.Operand = .{ .bytes = t.byteSlice(), .dtype = t.dtype };
    var stride: usize = 1;
    var axis = t.ndim;
    const offset = shape.len - t.ndim;
    while (axis > 0) {
        axis -= 1;
        result.strides[axis + offset] = if (t.shape[axis] == 1) 0 else stride;
        stride *= t.shape[axis];
    }
    return result;
}

/// Runs `body(context, begin, end)` over [0, count) on the intra-op pool.
fn split(count: usize, context: anytype, comptime body: fn (@TypeOf(context), usize, usize) Error!void) Error!void {
    if (count == 0) return;
    try intra_op.parallelForTyped(0, count, parallel.grain(.medium, 1), context, body);
}

pub fn where(cond_input: *Tensor, x_input: *Tensor, y_input: *Tensor) Error!*Tensor {
    if (x_input.dtype != y_input.dtype) {
        return status.fail(error.DTypeMismatch, "where: x is {s}, y is {s}", .{ x_input.dtype.name(), y_input.dtype.name() });
    }
    var first: [max_dims]usize = undefined;
    const partial = try elementwise.broadcastShape("where", cond_input.dims(), x_input.dims(), &first);
    var shape_buffer: [max_dims]usize = undefined;
    const shape = try elementwise.broadcastShape("where", partial, y_input.dims(), &shape_buffer);
    const cond = try shape_ops.contiguous(cond_input);
    defer cond.release();
    const x = try shape_ops.contiguous(x_input);
    defer x.release();
    const y = try shape_ops.contiguous(y_input);
    defer y.release();
    const out = try tensor.createUninit(x.dtype, shape);
    errdefer out.release();
    const Context = struct {
        shape: []const usize,
        operands: [3]kernels.Operand,
        out: []u8,
        fn body(c: *const @This(), begin: usize, end: usize) Error!void {
            kernels.where(c.shape, c.operands[0], c.operands[1], c.operands[2], c.out, begin, end);
        }
    };
    const context: Context = .{ .shape = shape, .operands = .{ operand(cond, shape), operand(x, shape), operand(y, shape) }, .out = out.byteSlice() };
    try split(out.numel(), &context, Context.body);
    return out;
}

pub fn compare(kind_raw: i64, a_input: *Tensor, b_input: *Tensor) Error!*Tensor {
    const kind = std.meta.intToEnum(kernels.Comparison, kind_raw) catch
        return status.fail(error.InvalidArgument, "compare: kind must be 0 to 4, got {d}", .{kind_raw});
    var shape_buffer: [max_dims]usize = undefined;
    const shape = try elementwise.broadcastShape("compare", a_input.dims(), b_input.dims(), &shape_buffer);
    const a = try shape_ops.contiguous(a_input);
    defer a.release();
    const b = try shape_ops.contiguous(b_input);
    defer b.release();
    const out = try tensor.createUninit(.int32, shape);
    errdefer out.release();
    const Context = struct {
        kind: kernels.Comparison,
        shape: []const usize,
        a: kernels.Operand,
        b: kernels.Operand,
        out: []i32,
        fn body(c: *const @This(), begin: usize, end: usize) Error!void {
            kernels.compare(c.kind, c.shape, c.a, c.b, c.out, begin, end);
        }
    };
    const context: Context = .{ .kind = kind, .shape = shape, .a = operand(a, shape), .b = operand(b, shape), .out = out.i32Slice() };
    try split(out.numel(), &context, Context.body);
    return out;
}

/// Broadcasts `input` to the broadcast of its shape and `target` (ONNX Expand).
pub fn expand(input: *Tensor, target: []const i64) Error!*Tensor {
    if (target.len > max_dims) return status.fail(error.InvalidArgument, "expand: at most {d} dims", .{max_dims});
    var target_shape: [max_dims]usize = undefined;
    for (target, 0..) |d, i| {
        if (d < 0) return status.fail(error.InvalidArgument, "expand: negative size {d}", .{d});
        target_shape[i] = @intCast(d);
    }
    var shape_buffer: [max_dims]usize = undefined;
    const shape = try elementwise.broadcastShape("expand", input.dims(), target_shape[0..target.len], &shape_buffer);
    const x = try shape_ops.contiguous(input);
    defer x.release();
    const out = try tensor.createUninit(x.dtype, shape);
    errdefer out.release();
    const Context = struct {
        shape: []const usize,
        x: kernels.Operand,
        out: []u8,
        fn body(c: *const @This(), begin: usize, end: usize) Error!void {
            kernels.broadcastCopy(c.shape, c.x, c.out, begin, end);
        }
    };
    const context: Context = .{ .shape = shape, .x = operand(x, shape), .out = out.byteSlice() };
    try split(out.numel(), &context, Context.body);
    return out;
}

pub fn cast(input: *Tensor, dtype_raw: i64, as_bool: bool) Error!*Tensor {
    const dtype = try tensor.DType.fromInt(dtype_raw);
    const x = try shape_ops.contiguous(input);
    defer x.release();
    const out = try tensor.createUninit(dtype, x.dims());
    errdefer out.release();
    const Context = struct {
        from: tensor.DType,
        to: tensor.DType,
        input: []const u8,
        output: []u8,
        as_bool: bool,
        fn body(c: *const @This(), begin: usize, end: usize) Error!void {
            kernels.cast(c.from, c.input, c.to, c.output, c.as_bool, begin, end);
        }
    };
    const context: Context = .{ .from = x.dtype, .to = dtype, .input = x.byteSlice(), .output = out.byteSlice(), .as_bool = as_bool };
    try split(out.numel(), &context, Context.body);
    return out;
}

/// Pads with `pads` = [begin_0 … begin_{n-1}, end_0 … end_{n-1}].
pub fn pad(input: *Tensor, mode_raw: i64, value: f64, pads: []const i64) Error!*Tensor {
    const mode = std.meta.intToEnum(kernels.PadMode, mode_raw) catch
        return status.fail(error.InvalidArgument, "pad: mode must be 0 (constant), 1 (reflect) or 2 (edge), got {d}", .{mode_raw});
    const rank = input.ndim;
    if (pads.len != 2 * rank) return status.fail(error.InvalidArgument, "pad: {d} pads for a {d}-D tensor (expected {d})", .{ pads.len, rank, 2 * rank });
    var before: [max_dims]usize = undefined;
    var shape: [max_dims]usize = undefined;
    for (0..rank) |axis| {
        const low = pads[axis];
        const high = pads[rank + axis];
        if (low < 0 or high < 0 or low > 1 << 32 or high > 1 << 32) {
            return status.fail(error.InvalidArgument, "pad: pads must be 0 to 2^32, got {d} and {d} for dim {d}", .{ low, high, axis });
        }
        const size = input.shape[axis];
        if (size == 0 and mode != .constant and low + high > 0) return status.fail(error.InvalidArgument, "pad: cannot {s}-pad an empty dim", .{@tagName(mode)});
        if (mode == .reflect and (low + high > 0) and (size < 2 or low >= size or high >= size)) {
            return status.fail(error.InvalidArgument, "pad: reflect pads ({d}, {d}) need a dim longer than both, dim {d} has {d}", .{ low, high, axis, size });
        }
        before[axis] = @intCast(low);
        shape[axis] = size + @as(usize, @intCast(low + high));
    }
    const x = try shape_ops.contiguous(input);
    defer x.release();
    const out = try tensor.createUninit(x.dtype, shape[0..rank]);
    errdefer out.release();
    const Context = struct {
        mode: kernels.PadMode,
        in_shape: []const usize,
        before: []const usize,
        out_shape: []const usize,
        value: f64,
        x: kernels.Operand,
        out: []u8,
        fn body(c: *const @This(), begin: usize, end: usize) Error!void {
            kernels.pad(c.mode, c.in_shape, c.before, c.out_shape, c.value, c.x, c.out, begin, end);
        }
    };
    const context: Context = .{
        .mode = mode,
        .in_shape = x.dims(),
        .before = before[0..rank],
        .out_shape = out.dims(),
        .value = value,
        .x = operand(x, x.dims()),
        .out = out.byteSlice(),
    };
    try split(out.numel(), &context, Context.body);
    return out;
}

/// ONNX Gather: out = x[..., indices, ...] along `axis` (indices of any shape, negative wrap).
pub fn take(input: *Tensor, index_input: *Tensor, axis_raw: i64) Error!*Tensor {
    if (index_input.dtype == .float32) return status.fail(error.DTypeMismatch, "take: indices must be int64 or int32", .{});
    if (input.ndim == 0) return status.fail(error.InvalidArgument, "take: cannot index a 0-D tensor", .{});
    const axis = try normalizeDim("take", axis_raw, input.ndim);
    if (input.ndim - 1 + index_input.ndim > max_dims) return status.fail(error.InvalidArgument, "take: the result would have more than {d} dims", .{max_dims});
    const x = try shape_ops.contiguous(input);
    defer x.release();
    const index_tensor = try shape_ops.contiguous(index_input);
    defer index_tensor.release();
    const count = index_tensor.numel();
    const indices = std.heap.c_allocator.alloc(usize, count) catch return error.OutOfMemory;
    defer std.heap.c_allocator.free(indices);
    const size_along = x.shape[axis];
    for (indices, 0..) |*slot, i| {
        // Read as integers: through f64 an int64 near its limits would round, or not
        // convert back at all.
        const raw: i64 = switch (index_tensor.dtype) {
            .int64 => index_tensor.i64Slice()[i],
            .int32 => index_tensor.i32Slice()[i],
            .float32 => unreachable, // refused above
        };
        const wrapped = if (raw < 0) raw + @as(i64, @intCast(size_along)) else raw;
        if (wrapped < 0 or wrapped >= @as(i64, @intCast(size_along))) {
            return status.fail(error.IndexOutOfRange, "take: index {d} is out of range for dim {d} of size {d}", .{ raw, axis, size_along });
        }
        slot.* = @intCast(wrapped);
    }
    var shape: [max_dims]usize = undefined;
    var n: usize = 0;
    for (x.dims()[0..axis]) |d| {
        shape[n] = d;
        n += 1;
    }
    for (index_tensor.dims()) |d| {
        shape[n] = d;
        n += 1;
    }
    for (x.dims()[axis + 1 ..]) |d| {
        shape[n] = d;
        n += 1;
    }
    const out = try tensor.createUninit(x.dtype, shape[0..n]);
    errdefer out.release();
    var outer: usize = 1;
    for (x.dims()[0..axis]) |d| outer *= d;
    var inner: usize = 1;
    for (x.dims()[axis + 1 ..]) |d| inner *= d;
    const Context = struct {
        x: []const u8,
        indices: []const usize,
        size_along: usize,
        inner_bytes: usize,
        out: []u8,
        fn body(c: *const @This(), begin: usize, end: usize) Error!void {
            kernels.take(c.x, c.indices, c.size_along, c.inner_bytes, c.out, begin, end);
        }
    };
    const context: Context = .{ .x = x.byteSlice(), .indices = indices, .size_along = size_along, .inner_bytes = inner * x.dtype.size(), .out = out.byteSlice() };
    if (inner > 0) try intra_op.parallelForTyped(0, outer * count, parallel.grain(.medium, inner), &context, Context.body);
    return out;
}

/// Resize: params are [mode (0 nearest, 1 linear), coordinate mode, nearest mode] and per dim
/// (out size or -1 = floor(in × scale), scale).
pub fn resize(input: *Tensor, mode_raw: i64, coordinate_raw: i64, nearest_raw: i64, sizes: []const i64, scales: []const f64) Error!*Tensor {
    return resizeCubic(input, mode_raw, coordinate_raw, nearest_raw, .{}, sizes, scales);
}

/// `resize`, with cubic's coefficient and exclude_outside for mode 2 (cubic).
pub fn resizeCubic(input: *Tensor, mode_raw: i64, coordinate_raw: i64, nearest_raw: i64, cubic: kernels.Cubic, sizes: []const i64, scales: []const f64) Error!*Tensor {
    if (input.dtype != .float32) return status.fail(error.DTypeMismatch, "resize: expected float32, got {s}", .{input.dtype.name()});
    if (mode_raw < 0 or mode_raw > 2) return status.fail(error.InvalidArgument, "resize: mode must be 0 (nearest), 1 (linear) or 2 (cubic), got {d}", .{mode_raw});
    if (!std.math.isFinite(cubic.a)) return status.fail(error.InvalidArgument, "resize: the cubic coefficient must be finite, got {d}", .{cubic.a});
    const coordinate = std.meta.intToEnum(kernels.Coordinate, coordinate_raw) catch
        return status.fail(error.InvalidArgument, "resize: unknown coordinate mode {d}", .{coordinate_raw});
    const nearest = std.meta.intToEnum(kernels.Nearest, nearest_raw) catch
        return status.fail(error.InvalidArgument, "resize: unknown nearest mode {d}", .{nearest_raw});
    if (sizes.len != input.ndim) return status.fail(error.InvalidArgument, "resize: {d} sizes for a {d}-D tensor", .{ sizes.len, input.ndim });
    var dims: [max_dims]kernels.ResizeDim = undefined;
    var shape: [max_dims]usize = undefined;
    for (0..input.ndim) |d| {
        const in = input.shape[d];
        const scale = scales[d];
        if (!(scale > 0) or !std.math.isFinite(scale)) return status.fail(error.InvalidArgument, "resize: scale {d} of dim {d} must be positive", .{ scale, d });
        const wanted: f64 = if (sizes[d] >= 0) @floatFromInt(sizes[d]) else @floor(@as(f64, @floatFromInt(in)) * scale);
        if (wanted > 1 << 32) return status.fail(error.TooLarge, "resize: dim {d} would have {d} elements", .{ d, wanted });
        const out: usize = @intFromFloat(wanted);
        if (in == 0 and out > 0) return status.fail(error.InvalidArgument, "resize: cannot resize an empty dim {d}", .{d});
        dims[d] = .{ .in = in, .out = out, .scale = scale };
        shape[d] = out;
    }
    const x = try shape_ops.contiguous(input);
    defer x.release();
    const out = try tensor.createUninit(.float32, shape[0..input.ndim]);
    errdefer out.release();
    const args: kernels.ResizeArgs = .{
        .linear = mode_raw == 1,
        .cubic = if (mode_raw == 2) cubic else null,
        .coordinate = coordinate,
        .nearest = nearest,
        .dims = dims[0..input.ndim],
        .input = x.f32Slice(),
        .output = out.f32Slice(),
    };
    const Context = struct {
        args: kernels.ResizeArgs,
        fn body(c: *const @This(), begin: usize, end: usize) Error!void {
            kernels.resize(&c.args, begin, end);
        }
    };
    const context: Context = .{ .args = args };
    const plane = if (input.ndim >= 2) shape[input.ndim - 2] * shape[input.ndim - 1] else 1;
    try intra_op.parallelForTyped(0, out.numel(), parallel.resizeGrain(plane, out.numel()), &context, Context.body);
    return out;
}

test "take wraps negative indices and refuses out-of-range ones" {
    const x = try tensor.createUninit(.float32, &.{ 3, 2 });
    defer x.release();
    for (x.f32Slice(), 0..) |*v, i| v.* = @floatFromInt(i);
    const index = try tensor.createUninit(.int64, &.{ 2, 1 });
    defer index.release();
    @memcpy(index.i64Slice(), &[_]i64{ -1, 0 });
    const out = try take(x, index, 0);
    defer out.release();
    try std.testing.expectEqualSlices(usize, &.{ 2, 1, 2 }, out.dims());
    try std.testing.expectEqualSlices(f32, &.{ 4, 5, 0, 1 }, out.f32Slice());
    index.i64Slice()[0] = 3;
    try std.testing.expectError(error.IndexOutOfRange, take(x, index, 0));
    // Indices at int64's limits (no round trip through f64).
    for ([_]i64{ std.math.maxInt(i64), std.math.minInt(i64) }) |extreme| {
        index.i64Slice()[0] = extreme;
        try std.testing.expectError(error.IndexOutOfRange, take(x, index, 0));
    }
}

test "pad and resize refuse bad parameters" {
    const x = try tensor.createZeroed(.float32, &.{ 1, 2 });
    defer x.release();
    try std.testing.expectError(error.InvalidArgument, pad(x, 1, 0, &.{ 0, 2, 0, 0 }));
    try std.testing.expectError(error.InvalidArgument, pad(x, 0, 0, &.{ 0, 1 }));
    try std.testing.expectError(error.InvalidArgument, pad(x, 7, 0, &.{ 0, 0, 0, 0 }));
    try std.testing.expectError(error.InvalidArgument, resize(x, 0, 0, 0, &.{ -1, -1 }, &.{ 1, 0 }));
    const grown = try resize(x, 1, 3, 0, &.{ -1, 4 }, &.{ 1, 2 });
    defer grown.release();
    try std.testing.expectEqualSlices(usize, &.{ 1, 4 }, grown.dims());
    const padded = try pad(x, 2, 0, &.{ 1, 0, 0, 1 });
    defer padded.release();
    try std.testing.expectEqualSlices(usize, &.{ 2, 3 }, padded.dims());
}

test "where, compare, expand and cast on tensors" {
    const a = try tensor.createUninit(.float32, &.{ 2, 1 });
    defer a.release();
    @memcpy(a.f32Slice(), &[_]f32{ 1, 2 });
    const b = try tensor.createUninit(.float32, &.{3});
    defer b.release();
    @memcpy(b.f32Slice(), &[_]f32{ 1, 2, 3 });
    const flags = try compare(0, a, b);
    defer flags.release();
    try std.testing.expectEqualSlices(i32, &.{ 1, 0, 0, 0, 1, 0 }, flags.i32Slice());
    const picked = try where(flags, a, b);
    defer picked.release();
    try std.testing.expectEqualSlices(f32, &.{ 1, 2, 3, 1, 2, 3 }, picked.f32Slice());
    const wide = try expand(a, &.{ 2, 2 });
    defer wide.release();
    try std.testing.expectEqualSlices(f32, &.{ 1, 1, 2, 2 }, wide.f32Slice());
    const ints = try cast(a, 1, false);
    defer ints.release();
    try std.testing.expectEqualSlices(i64, &.{ 1, 2 }, ints.i64Slice());
    try std.testing.expectError(error.ShapeMismatch, expand(b, &.{2}));
}
