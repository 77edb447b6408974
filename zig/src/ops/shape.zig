//! Shape ops. Views (reshape of contiguous data, flatten, squeeze, unsqueeze, transpose,
//! permute, slice) share storage and copy nothing; materialising (contiguous, concat,
//! gather, reshape of a non-contiguous view) runs a parallel copy kernel (grains from
//! parallel.zig).
const std = @import("std");
const status = @import("../status.zig");
const tensor = @import("../tensor.zig");
const intra_op = @import("../pool/intra_op.zig");
const parallel = @import("parallel.zig");
const copy = @import("../kernels/copy.zig");
const dims_module = @import("dims.zig");

const Error = status.Error;
const Tensor = tensor.Tensor;
const max_dims = tensor.max_dims;
const normalizeDim = dims_module.normalizeDim;

fn CopyContext(comptime T: type) type {
    return struct {
        source: copy.Source(T),
        output: []T,
        fn body(context: *const @This(), begin: usize, end: usize) Error!void {
            copy.stridedRange(T, context.source, context.output, begin, end);
        }
    };
}

fn typedBase(comptime T: type, t: *const Tensor) []const T {
    const count = t.storage.bytes.len / @sizeOf(T);
    const base: [*]const T = @ptrCast(@alignCast(t.storage.bytes.ptr));
    return base[0..count];
}

/// Copies any view into `out` (a contiguous tensor of the same shape and dtype), in parallel.
pub fn materializeInto(t: *const Tensor, out: *Tensor) Error!void {
    std.debug.assert(out.isContiguous());
    std.debug.assert(std.mem.eql(usize, t.dims(), out.dims()));
    switch (t.dtype) {
        inline else => |dtype| {
            const T = switch (dtype) {
                .float32 => f32,
                .int64 => i64,
                .int32 => i32,
            };
            const output: []T = @as([*]T, @ptrCast(@alignCast(out.storage.bytes.ptr)))[out.offset..][0..out.numel()];
            const context: CopyContext(T) = .{
                .source = .{ .data = typedBase(T, t), .offset = t.offset, .shape = t.dims(), .strides = t.strides[0..t.ndim] },
                .output = output,
            };
            try intra_op.parallelForTyped(0, output.len, parallel.grain(.copy, 1), &context, CopyContext(T).body);
        },
    }
}

/// A contiguous tensor with t's values: t itself (retained) when already contiguous.
pub fn contiguous(t: *Tensor) Error!*Tensor {
    if (t.isContiguous()) {
        t.retain();
        return t;
    }
    const out = try tensor.createUninit(t.dtype, t.dims());
    errdefer out.release();
    try materializeInto(t, out);
    return out;
}

/// Reshape: `raw_shape` may hold one -1 (inferred). A view when t is contiguous, else a copy.
pub fn reshape(t: *Tensor, raw_shape: []const i64) Error!*Tensor {
    if (raw_shape.len > max_dims) return status.fail(error.InvalidArgument, "reshape: at most {d} dims, got {d}", .{ max_dims, raw_shape.len });
    var shape: [max_dims]usize = undefined;
    var inferred: ?usize = null;
    var known: usize = 1;
    for (raw_shape, 0..) |d, i| {
        if (d == -1) {
            if (inferred != null) return status.fail(error.InvalidArgument, "reshape: only one dimension can be -1, shape {f}", .{status.shape(raw_shape)});
            inferred = i;
            continue;
        }
        if (d < 0) return status.fail(error.InvalidArgument, "reshape: invalid dimension {d} in {f}", .{ d, status.shape(raw_shape) });
        shape[i] = @intCast(d);
        known = std.math.mul(usize, known, shape[i]) catch return status.fail(error.TooLarge, "reshape: shape {f} overflows", .{status.shape(raw_shape)});
    }
    const count = t.numel();
    if (inferred) |i| {
        if (known == 0 or count % known != 0) {
            return status.fail(error.ShapeMismatch, "reshape: shape {f} is invalid for {d} elements", .{ status.shape(raw_shape), count });
        }
        shape[i] = count / known;
    } else if (known != count) {
        return status.fail(error.ShapeMismatch, "reshape: shape {f} is invalid for {d} elements", .{ status.shape(raw_shape), count });
    }
    const dims = shape[0..raw_shape.len];
    // The element count matches; an empty tensor's other dims must still be sane.
    _ = try tensor.checkedNumel(dims, t.dtype);
    const source = try contiguous(t);
    defer source.release();
    var strides: [max_dims]usize = undefined;
    contiguousStrides(dims, &strides);
    return tensor.createView(source, dims, strides[0..dims.len], source.offset);
}

fn contiguousStrides(shape: []const usize, strides: *[max_dims]usize) void {
    var stride: usize = 1;
    var axis = shape.len;
    while (axis > 0) {
        axis -= 1;
        strides[axis] = stride;
        stride *= @max(shape[axis], 1);
    }
}

/// Merges dims [start, end] into one.
pub fn flatten(t: *Tensor, start_raw: i64, end_raw: i64) Error!*Tensor {
    if (t.ndim == 0) return reshape(t, &.{1});
    const start = try normalizeDim("flatten", start_raw, t.ndim);
    const end = try normalizeDim("flatten", end_raw, t.ndim);
    if (start > end) return status.fail(error.InvalidArgument, "flatten: start dim {d} is after end dim {d}", .{ start_raw, end_raw });
    var shape: [max_dims]i64 = undefined;
    var n: usize = 0;
    for (t.dims(), 0..) |d, axis| {
        if (axis > start and axis <= end) {
            shape[n - 1] *= @intCast(d);
            continue;
        }
        shape[n] = @intCast(d);
        n += 1;
    }
    return reshape(t, shape[0..n]);
}

/// Removes dim `dim` if it has size 1 (all size-1 dims when dim is null).
pub fn squeeze(t: *Tensor, dim_raw: ?i64) Error!*Tensor {
    var shape: [max_dims]usize = undefined;
    var strides: [max_dims]usize = undefined;
    var n: usize = 0;
    const only: ?usize = if (dim_raw) |raw| try normalizeDim("squeeze", raw, t.ndim) else null;
    for (t.dims(), 0..) |d, axis| {
        const drop = d == 1 and (only == null or only.? == axis);
        if (drop) continue;
        shape[n] = d;
        strides[n] = t.strides[axis];
        n += 1;
    }
    return tensor.createView(t, shape[0..n], strides[0..n], t.offset);
}

/// Inserts a size-1 dim at `dim` (in [-ndim-1, ndim]).
pub fn unsqueeze(t: *Tensor, dim_raw: i64) Error!*Tensor {
    if (t.ndim >= max_dims) return status.fail(error.InvalidArgument, "unsqueeze: a {d}-D tensor cannot grow past {d} dims", .{ t.ndim, max_dims });
    const dim = try normalizeDim("unsqueeze", dim_raw, t.ndim + 1);
    var shape: [max_dims]usize = undefined;
    var strides: [max_dims]usize = undefined;
    var n: usize = 0;
    for (0..t.ndim + 1) |axis| {
        if (axis == dim) {
            shape[n] = 1;
            strides[n] = if (axis < t.ndim) t.strides[axis] * t.shape[axis] else 1;
            n += 1;
        }
        if (axis < t.ndim) {
            shape[n] = t.shape[axis];
            strides[n] = t.strides[axis];
            n += 1;
        }
    }
    return tensor.createView(t, shape[0..n], strides[0..n], t.offset);
}

/// Reorders dims: output dim i is input dim dims[i].
pub fn permute(t: *Tensor, dims_raw: []const i64) Error!*Tensor {
    if (dims_raw.len != t.ndim) {
        return status.fail(error.InvalidArgument, "permute: expected {d} dims, got {d}", .{ t.ndim, dims_raw.len });
    }
    var seen: [max_dims]bool = @splat(false);
    var shape: [max_dims]usize = undefined;
    var strides: [max_dims]usize = undefined;
    for (dims_raw, 0..) |raw, i| {
        const axis = try normalizeDim("permute", raw, t.ndim);
        if (seen[axis]) return status.fail(error.InvalidArgument, "permute: dimension {d} repeats in {f}", .{ raw, status.shape(dims_raw) });
        seen[axis] = true;
        shape[i] = t.shape[axis];
        strides[i] = t.strides[axis];
    }
    return tensor.createView(t, shape[0..t.ndim], strides[0..t.ndim], t.offset);
}

pub fn transpose(t: *Tensor, a_raw: i64, b_raw: i64) Error!*Tensor {
    if (t.ndim < 2) {
        t.retain();
        return t;
    }
    const a = try normalizeDim("transpose", a_raw, t.ndim);
    const b = try normalizeDim("transpose", b_raw, t.ndim);
    var dims: [max_dims]i64 = undefined;
    for (0..t.ndim) |i| dims[i] = @intCast(i);
    dims[a] = @intCast(b);
    dims[b] = @intCast(a);
    return permute(t, dims[0..t.ndim]);
}

/// t[..., start:end:step, ...] along `dim`, Python semantics for negative and out-of-range
/// bounds (clamped); step must be positive.
pub fn slice(t: *Tensor, dim_raw: i64, start_raw: i64, end_raw: i64, step_raw: i64) Error!*Tensor {
    if (t.ndim == 0) return status.fail(error.InvalidArgument, "slice: cannot slice a 0-D tensor", .{});
    const dim = try normalizeDim("slice", dim_raw, t.ndim);
    if (step_raw <= 0) return status.fail(error.InvalidArgument, "slice: step must be positive, got {d}", .{step_raw});
    const size: i64 = @intCast(t.shape[dim]);
    const start: i64 = std.math.clamp(if (start_raw < 0) start_raw + size else start_raw, 0, size);
    const end: i64 = std.math.clamp(if (end_raw < 0) end_raw + size else end_raw, 0, size);
    const length: usize = if (end <= start) 0 else @intCast(@divFloor(end - start - 1, step_raw) + 1);
    var shape: [max_dims]usize = undefined;
    var strides: [max_dims]usize = undefined;
    @memcpy(shape[0..t.ndim], t.dims());
    @memcpy(strides[0..t.ndim], t.strides[0..t.ndim]);
    shape[dim] = length;
    // Only a step between two elements taken is a stride; a larger one would overflow.
    if (length > 1) strides[dim] = t.strides[dim] * @as(usize, @intCast(step_raw));
    const offset = t.offset + (if (length == 0) 0 else @as(usize, @intCast(start)) * t.strides[dim]);
    return tensor.createView(t, shape[0..t.ndim], strides[0..t.ndim], offset);
}

/// Joins tensors of equal shape except along `dim`.
pub fn concat(inputs: []const *Tensor, dim_raw: i64) Error!*Tensor {
    if (inputs.len == 0) return status.fail(error.InvalidArgument, "concat: expected at least one tensor", .{});
    const first = inputs[0];
    if (first.ndim == 0) return status.fail(error.InvalidArgument, "concat: cannot join 0-D tensors", .{});
    const dim = try normalizeDim("concat", dim_raw, first.ndim);
    var shape: [max_dims]usize = undefined;
    @memcpy(shape[0..first.ndim], first.dims());
    shape[dim] = 0;
    for (inputs, 0..) |t, i| {
        if (t.dtype != first.dtype) return status.fail(error.DTypeMismatch, "concat: tensor {d} is {s}, tensor 0 is {s}", .{ i, t.dtype.name(), first.dtype.name() });
        if (t.ndim != first.ndim) return status.fail(error.ShapeMismatch, "concat: tensor {d} has {d} dims, tensor 0 has {d}", .{ i, t.ndim, first.ndim });
        for (t.dims(), 0..) |d, axis| if (axis != dim and d != first.shape[axis]) {
            return status.fail(error.ShapeMismatch, "concat: tensor {d} has shape {f}, incompatible with {f} along dim {d}", .{ i, status.shape(t.dims()), status.shape(first.dims()), dim });
        };
        shape[dim] += t.shape[dim];
    }
    const out = try tensor.createUninit(first.dtype, shape[0..first.ndim]);
    errdefer out.release();
    if (out.numel() == 0) return out;
    // Each input is `outer` slabs of t.shape[dim]·inner contiguous elements, which land at
    // stride shape[dim]·inner in the output: one memcpy per slab.
    var sources: [max_concat_inputs]*Tensor = undefined;
    if (inputs.len > max_concat_inputs) return status.fail(error.InvalidArgument, "concat: at most {d} tensors, got {d}", .{ max_concat_inputs, inputs.len });
    var made: usize = 0;
    defer for (sources[0..made]) |t| t.release();
    for (inputs) |t| {
        sources[made] = try contiguous(t);
        made += 1;
    }
    var outer: usize = 1;
    for (shape[0..dim]) |d| outer *= d;
    var inner: usize = first.dtype.size();
    for (shape[dim + 1 .. first.ndim]) |d| inner *= d;
    var context: ConcatContext = .{ .sources = sources[0..made], .output = out.byteSlice(), .row = shape[dim] * inner };
    var position: usize = 0;
    for (sources[0..made], 0..) |t, i| {
        context.slab[i] = t.shape[dim] * inner;
        context.position[i] = position;
        position += context.slab[i];
    }
    const slab_bytes = @max(1, out.byteSlice().len / (outer * made));
    try intra_op.parallelForTyped(0, outer * made, parallel.grain(.copy_bytes, slab_bytes), &context, ConcatContext.body);
    return out;
}

const max_concat_inputs = 64;

const ConcatContext = struct {
    sources: []const *Tensor,
    output: []u8,
    /// Bytes of one output slab: the whole concat dim (times the dims after it).
    row: usize,
    /// Per input: bytes of its slab, and where the slab starts within an output slab.
    slab: [max_concat_inputs]usize = undefined,
    position: [max_concat_inputs]usize = undefined,

    /// Slabs [begin, end) in (outer index, input) order.
    fn body(context: *const ConcatContext, begin: usize, end: usize) Error!void {
        const count = context.sources.len;
        for (begin..end) |task| {
            const o = task / count;
            const i = task % count;
            const slab = context.slab[i];
            const source = context.sources[i].byteSlice()[o * slab ..][0..slab];
            @memcpy(context.output[o * context.row + context.position[i] ..][0..slab], source);
        }
    }
};

/// out[i][j][k] = x[index[i][j][k]][j][k] for dim 0 (and likewise for other dims).
pub fn gather(input: *Tensor, dim_raw: i64, index_input: *Tensor) Error!*Tensor {
    if (index_input.ndim != input.ndim) {
        return status.fail(error.ShapeMismatch, "gather: index has {d} dims, input has {d}", .{ index_input.ndim, input.ndim });
    }
    if (index_input.dtype == .float32) return status.fail(error.DTypeMismatch, "gather: index must be int64 or int32", .{});
    if (input.ndim == 0) return status.fail(error.InvalidArgument, "gather: cannot gather from a 0-D tensor", .{});
    const dim = try normalizeDim("gather", dim_raw, input.ndim);
    for (index_input.dims(), 0..) |d, axis| if (axis != dim and d > input.shape[axis]) {
        return status.fail(error.ShapeMismatch, "gather: index shape {f} exceeds input shape {f} at dim {d}", .{ status.shape(index_input.dims()), status.shape(input.dims()), axis });
    };
    const x = try contiguous(input);
    defer x.release();
    const index = try contiguous(index_input);
    defer index.release();
    const out = try tensor.createUninit(x.dtype, index.dims());
    errdefer out.release();
    const size = x.dtype.size();
    const bound = x.shape[dim];
    var coordinates: [max_dims]usize = @splat(0);
    var x_strides: [max_dims]usize = undefined;
    contiguousStrides(x.dims(), &x_strides);
    for (0..out.numel()) |flat| {
        const raw: i64 = if (index.dtype == .int64) index.i64Slice()[flat] else index.i32Slice()[flat];
        if (raw < 0 or raw >= @as(i64, @intCast(bound))) {
            return status.fail(error.IndexOutOfRange, "gather: index {d} is out of range [0, {d}) for dim {d}", .{ raw, bound, dim });
        }
        var element: usize = 0;
        for (0..x.ndim) |axis| {
            const c = if (axis == dim) @as(usize, @intCast(raw)) else coordinates[axis];
            element += c * x_strides[axis];
        }
        @memcpy(out.byteSlice()[flat * size ..][0..size], x.byteSlice()[element * size ..][0..size]);
        var axis = out.ndim;
        while (axis > 0) {
            axis -= 1;
            coordinates[axis] += 1;
            if (coordinates[axis] < out.shape[axis]) break;
            coordinates[axis] = 0;
        }
    }
    return out;
}

// ---------------------------------------------------------------------------------------

fn iota(shape: []const usize) !*Tensor {
    const t = try tensor.createUninit(.float32, shape);
    for (t.f32Slice(), 0..) |*x, i| x.* = @floatFromInt(i);
    return t;
}

fn values(t: *Tensor, buffer: []f32) ![]f32 {
    const c = try contiguous(t);
    defer c.release();
    @memcpy(buffer[0..c.numel()], c.f32Slice());
    return buffer[0..c.numel()];
}

test "views: transpose, permute, slice, squeeze, unsqueeze, reshape, flatten" {
    const x = try iota(&.{ 2, 3, 4 });
    defer x.release();
    var buffer: [64]f32 = undefined;
    const t = try transpose(x, 0, 2);
    defer t.release();
    try std.testing.expectEqualSlices(usize, &.{ 4, 3, 2 }, t.dims());
    try std.testing.expectEqual(@as(f32, 13), (try values(t, &buffer))[1 * 6 + 0 * 2 + 1]); // x[1][0][1]
    const s = try slice(x, -1, 1, 100, 2);
    defer s.release();
    try std.testing.expectEqualSlices(usize, &.{ 2, 3, 2 }, s.dims());
    try std.testing.expectEqualSlices(f32, &.{ 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23 }, try values(s, &buffer));
    const empty = try slice(x, 1, 2, 1, 1);
    defer empty.release();
    try std.testing.expectEqual(@as(usize, 0), empty.numel());
    const u = try unsqueeze(x, -1);
    defer u.release();
    try std.testing.expectEqualSlices(usize, &.{ 2, 3, 4, 1 }, u.dims());
    const q = try squeeze(u, null);
    defer q.release();
    try std.testing.expectEqualSlices(usize, &.{ 2, 3, 4 }, q.dims());
    const r = try reshape(t, &.{ -1, 6 }); // non-contiguous: copies
    defer r.release();
    try std.testing.expectEqualSlices(usize, &.{ 4, 6 }, r.dims());
    try std.testing.expectEqualSlices(f32, try values(t, buffer[0..24]), r.f32Slice());
    const f = try flatten(x, 1, -1);
    defer f.release();
    try std.testing.expectEqualSlices(usize, &.{ 2, 12 }, f.dims());
    try std.testing.expect(f.storage == x.storage); // a view, no copy
    try std.testing.expectError(error.ShapeMismatch, reshape(x, &.{ 5, -1 }));
    try std.testing.expectError(error.InvalidArgument, reshape(x, &.{ -1, -1 }));
    try std.testing.expectError(error.InvalidArgument, permute(x, &.{ 0, 0, 1 }));
    try std.testing.expectError(error.IndexOutOfRange, slice(x, 3, 0, 1, 1));
    try std.testing.expectError(error.InvalidArgument, slice(x, 0, 0, 1, 0));
    // A step far past the end takes one element; its stride would overflow.
    const first = try slice(x, 0, 0, 2, 9e15);
    defer first.release();
    try std.testing.expectEqualSlices(usize, &.{ 1, 3, 4 }, first.dims());
    // An empty tensor's other dims may not multiply past a usize.
    try std.testing.expectError(error.TooLarge, reshape(empty, &.{ 0, 1 << 40, 1 << 40 }));
}

test "concat along each dim and gather" {
    const a = try iota(&.{ 2, 3 });
    defer a.release();
    const b = try iota(&.{ 2, 1 });
    defer b.release();
    const joined = try concat(&.{ a, b }, 1);
    defer joined.release();
    try std.testing.expectEqualSlices(f32, &.{ 0, 1, 2, 0, 3, 4, 5, 1 }, joined.f32Slice());
    const stacked = try concat(&.{ a, a }, 0);
    defer stacked.release();
    try std.testing.expectEqualSlices(usize, &.{ 4, 3 }, stacked.dims());
    try std.testing.expectError(error.ShapeMismatch, concat(&.{ a, b }, 0));
    const index = try tensor.createUninit(.int64, &.{ 2, 2 });
    defer index.release();
    @memcpy(index.i64Slice(), &[_]i64{ 2, 0, 1, 1 });
    const gathered = try gather(a, 1, index);
    defer gathered.release();
    try std.testing.expectEqualSlices(f32, &.{ 2, 0, 4, 4 }, gathered.f32Slice());
    index.i64Slice()[0] = 3;
    try std.testing.expectError(error.IndexOutOfRange, gather(a, 1, index));
}
