//! Element-indexed ops for model import: ONNX GatherElements, ScatterElements, GatherND,
//! ScatterND and TopK. Shape, dtype and index checks (every index is read, checked and
//! wrapped here, before a kernel runs, so a bad one is an IndexOutOfRange error naming it),
//! output allocation, and the split over the intra-op pool; the loops live in
//! kernels/scatter.zig.
const std = @import("std");
const status = @import("../status.zig");
const tensor = @import("../tensor.zig");
const intra_op = @import("../pool/intra_op.zig");
const parallel = @import("parallel.zig");
const kernels = @import("../kernels/scatter.zig");
const shape_ops = @import("shape.zig");
const normalizeDim = @import("dims.zig").normalizeDim;

const Error = status.Error;
const Tensor = tensor.Tensor;
const max_dims = tensor.max_dims;
const allocator = std.heap.c_allocator;

pub const Reduction = kernels.Reduction;

/// Row-major element strides of `shape`.
fn contiguousStrides(shape: []const usize, out: *[max_dims]usize) []usize {
    var stride: usize = 1;
    var axis = shape.len;
    while (axis > 0) {
        axis -= 1;
        out[axis] = stride;
        stride *= shape[axis];
    }
    return out[0..shape.len];
}

fn product(dims: []const usize) usize {
    var total: usize = 1;
    for (dims) |d| total *= d;
    return total;
}

fn indexAt(t: *const Tensor, i: usize) i64 {
    return switch (t.dtype) {
        .int64 => t.i64Slice()[i],
        .int32 => t.i32Slice()[i],
        .float32 => unreachable, // refused by requireIndices
    };
}

fn requireIndices(comptime op: []const u8, t: *const Tensor) Error!void {
    if (t.dtype == .float32) return status.fail(error.DTypeMismatch, op ++ ": indices must be int64 or int32, got float32", .{});
}

/// `raw` wrapped into [0, size) (negative counts from the end), or IndexOutOfRange.
fn wrap(comptime op: []const u8, raw: i64, axis: usize, size: usize) Error!usize {
    const signed: i64 = @intCast(size);
    const index = if (raw < 0) raw +% signed else raw;
    if (index < 0 or index >= signed) {
        return status.fail(error.IndexOutOfRange, op ++ ": index {d} is out of range for axis {d} of size {d}", .{ raw, axis, size });
    }
    return @intCast(index);
}

/// Checks that the indices have the data's rank and fit inside it on every axis but `axis`,
/// then reads and wraps them (a new buffer the caller frees).
fn elementIndices(comptime op: []const u8, data_shape: []const usize, index_tensor: *const Tensor, axis: usize) Error![]usize {
    const index_shape = index_tensor.dims();
    if (index_shape.len != data_shape.len) {
        return status.fail(error.ShapeMismatch, op ++ ": indices of shape {f} need the rank of the data, shape {f}", .{ status.shape(index_shape), status.shape(data_shape) });
    }
    for (index_shape, data_shape, 0..) |index_dim, data_dim, d| if (d != axis and index_dim > data_dim) {
        return status.fail(error.ShapeMismatch, op ++ ": indices of shape {f} exceed the data, shape {f}, on axis {d}", .{ status.shape(index_shape), status.shape(data_shape), d });
    };
    const indices = allocator.alloc(usize, index_tensor.numel()) catch return error.OutOfMemory;
    errdefer allocator.free(indices);
    for (indices, 0..) |*slot, i| slot.* = try wrap(op, indexAt(index_tensor, i), axis, data_shape[axis]);
    return indices;
}

/// ONNX GatherElements: out (the indices' shape) takes x's element at each index's
/// coordinates with the `axis` one replaced by the index.
pub fn gatherElements(input: *Tensor, index_input: *Tensor, axis_raw: i64) Error!*Tensor {
    try requireIndices("gather_elements", index_input);
    if (input.ndim == 0) return status.fail(error.InvalidArgument, "gather_elements: cannot index a 0-D tensor", .{});
    const axis = try normalizeDim("gather_elements", axis_raw, input.ndim);
    const x = try shape_ops.contiguous(input);
    defer x.release();
    const index_tensor = try shape_ops.contiguous(index_input);
    defer index_tensor.release();
    const indices = try elementIndices("gather_elements", x.dims(), index_tensor, axis);
    defer allocator.free(indices);
    const out = try tensor.createUninit(x.dtype, index_tensor.dims());
    errdefer out.release();
    var strides: [max_dims]usize = undefined;
    const Context = struct {
        x: []const u8,
        strides: []const usize,
        shape: []const usize,
        axis: usize,
        indices: []const usize,
        width: usize,
        out: []u8,
        fn body(c: *const @This(), begin: usize, end: usize) Error!void {
            kernels.gatherElements(c.x, c.strides, c.shape, c.axis, c.indices, c.width, c.out, begin, end);
        }
    };
    const context: Context = .{
        .x = x.byteSlice(),
        .strides = contiguousStrides(x.dims(), &strides),
        .shape = index_tensor.dims(),
        .axis = axis,
        .indices = indices,
        .width = x.dtype.size(),
        .out = out.byteSlice(),
    };
    if (indices.len > 0) try intra_op.parallelForTyped(0, indices.len, parallel.grain(.medium, 1), &context, Context.body);
    return out;
}

/// A contiguous copy of `data` with updates of its dtype to scatter into.
fn scatterTarget(comptime op: []const u8, data: *Tensor, updates: *const Tensor) Error!*Tensor {
    if (updates.dtype != data.dtype) {
        return status.fail(error.DTypeMismatch, op ++ ": updates are {s}, the data {s} (they must match)", .{ updates.dtype.name(), data.dtype.name() });
    }
    const out = try tensor.createUninit(data.dtype, data.dims());
    errdefer out.release();
    try shape_ops.materializeInto(data, out);
    return out;
}

/// ONNX ScatterElements: a copy of data where each update lands at its coordinates with the
/// `axis` one replaced by its index, combined by `reduction` in update order.
pub fn scatterElements(data: *Tensor, index_input: *Tensor, update_input: *Tensor, axis_raw: i64, reduction: Reduction) Error!*Tensor {
    try requireIndices("scatter_elements", index_input);
    if (data.ndim == 0) return status.fail(error.InvalidArgument, "scatter_elements: cannot index a 0-D tensor", .{});
    const axis = try normalizeDim("scatter_elements", axis_raw, data.ndim);
    if (!std.mem.eql(usize, index_input.dims(), update_input.dims())) {
        return status.fail(error.ShapeMismatch, "scatter_elements: updates of shape {f} and indices of shape {f} (they must match)", .{ status.shape(update_input.dims()), status.shape(index_input.dims()) });
    }
    const index_tensor = try shape_ops.contiguous(index_input);
    defer index_tensor.release();
    const updates = try shape_ops.contiguous(update_input);
    defer updates.release();
    const indices = try elementIndices("scatter_elements", data.dims(), index_tensor, axis);
    defer allocator.free(indices);
    const out = try scatterTarget("scatter_elements", data, updates);
    errdefer out.release();
    var strides_buffer: [max_dims]usize = undefined;
    const strides = contiguousStrides(out.dims(), &strides_buffer);
    const shape = updates.dims();
    switch (out.dtype) {
        .float32 => kernels.scatterElements(f32, out.f32Slice(), strides, shape, axis, indices, updates.f32Slice(), reduction),
        .int32 => kernels.scatterElements(i32, out.i32Slice(), strides, shape, axis, indices, updates.i32Slice(), reduction),
        .int64 => kernels.scatterElements(i64, out.i64Slice(), strides, shape, axis, indices, updates.i64Slice(), reduction),
    }
    return out;
}

/// The element offsets in data of the index tuples of GatherND/ScatterND (indices
/// [..., k]; the first `batch_dims` dims pair with the data's), each checked and wrapped.
fn tupleOffsets(comptime op: []const u8, data_shape: []const usize, index_tensor: *const Tensor, batch_dims: usize) Error![]usize {
    const index_shape = index_tensor.dims();
    if (index_shape.len == 0) return status.fail(error.InvalidArgument, op ++ ": indices must have rank 1 or more", .{});
    const k = index_shape[index_shape.len - 1];
    if (batch_dims >= index_shape.len or batch_dims + k > data_shape.len) {
        return status.fail(error.ShapeMismatch, op ++ ": index tuples of length {d} after {d} batch dims do not fit data of shape {f}", .{ k, batch_dims, status.shape(data_shape) });
    }
    for (0..batch_dims) |d| if (index_shape[d] != data_shape[d]) {
        return status.fail(error.ShapeMismatch, op ++ ": batch dim {d} is {d} in the indices and {d} in the data", .{ d, index_shape[d], data_shape[d] });
    };
    var strides_buffer: [max_dims]usize = undefined;
    const strides = contiguousStrides(data_shape, &strides_buffer);
    const tuples = product(index_shape[0 .. index_shape.len - 1]);
    const per_batch = product(index_shape[batch_dims .. index_shape.len - 1]);
    const batch_stride = product(data_shape[batch_dims..]);
    const offsets = allocator.alloc(usize, tuples) catch return error.OutOfMemory;
    errdefer allocator.free(offsets);
    for (offsets, 0..) |*slot, j| {
        var offset = (j / per_batch) * batch_stride;
        for (0..k) |t| {
            const axis = batch_dims + t;
            offset += try wrap(op, indexAt(index_tensor, j * k + t), axis, data_shape[axis]) * strides[axis];
        }
        slot.* = offset;
    }
    return offsets;
}

/// ONNX GatherND: out [indices.shape[..-1], data.shape[batch_dims + k ..]].
pub fn gatherNd(input: *Tensor, index_input: *Tensor, batch_dims: usize) Error!*Tensor {
    try requireIndices("gather_nd", index_input);
    const x = try shape_ops.contiguous(input);
    defer x.release();
    const index_tensor = try shape_ops.contiguous(index_input);
    defer index_tensor.release();
    const offsets = try tupleOffsets("gather_nd", x.dims(), index_tensor, batch_dims);
    defer allocator.free(offsets);
    const index_shape = index_tensor.dims();
    const k = index_shape[index_shape.len - 1];
    const tail = x.dims()[batch_dims + k ..];
    if (index_shape.len - 1 + tail.len > max_dims) return status.fail(error.InvalidArgument, "gather_nd: the result would have more than {d} dims", .{max_dims});
    var shape: [max_dims]usize = undefined;
    @memcpy(shape[0 .. index_shape.len - 1], index_shape[0 .. index_shape.len - 1]);
    @memcpy(shape[index_shape.len - 1 ..][0..tail.len], tail);
    const out = try tensor.createUninit(x.dtype, shape[0 .. index_shape.len - 1 + tail.len]);
    errdefer out.release();
    const width = x.dtype.size();
    for (offsets) |*offset| offset.* *= width;
    const Context = struct {
        x: []const u8,
        offsets: []const usize,
        slice_bytes: usize,
        out: []u8,
        fn body(c: *const @This(), begin: usize, end: usize) Error!void {
            kernels.gatherSlices(c.x, c.offsets, c.slice_bytes, c.out, begin, end);
        }
    };
    const slice_elements = product(tail);
    const context: Context = .{ .x = x.byteSlice(), .offsets = offsets, .slice_bytes = slice_elements * width, .out = out.byteSlice() };
    if (offsets.len > 0 and slice_elements > 0) {
        try intra_op.parallelForTyped(0, offsets.len, parallel.grain(.copy, slice_elements), &context, Context.body);
    }
    return out;
}

/// ONNX ScatterND: a copy of data with each update slice combined in at its index tuple;
/// updates are [indices.shape[..-1], data.shape[k ..]].
pub fn scatterNd(data: *Tensor, index_input: *Tensor, update_input: *Tensor, reduction: Reduction) Error!*Tensor {
    try requireIndices("scatter_nd", index_input);
    const index_tensor = try shape_ops.contiguous(index_input);
    defer index_tensor.release();
    const updates = try shape_ops.contiguous(update_input);
    defer updates.release();
    const offsets = try tupleOffsets("scatter_nd", data.dims(), index_tensor, 0);
    defer allocator.free(offsets);
    const index_shape = index_tensor.dims();
    const k = index_shape[index_shape.len - 1];
    const lead = index_shape[0 .. index_shape.len - 1];
    const tail = data.dims()[k..];
    const expected_rank = lead.len + tail.len;
    const matches = updates.ndim == expected_rank and std.mem.eql(usize, updates.dims()[0..lead.len], lead) and
        std.mem.eql(usize, updates.dims()[lead.len..], tail);
    if (!matches) {
        return status.fail(error.ShapeMismatch, "scatter_nd: updates of shape {f} must be the indices' leading dims {f} then the data's {f}", .{ status.shape(updates.dims()), status.shape(lead), status.shape(tail) });
    }
    const out = try scatterTarget("scatter_nd", data, updates);
    errdefer out.release();
    const slice_len = product(tail);
    switch (out.dtype) {
        .float32 => kernels.scatterSlices(f32, out.f32Slice(), offsets, slice_len, updates.f32Slice(), reduction),
        .int32 => kernels.scatterSlices(i32, out.i32Slice(), offsets, slice_len, updates.i32Slice(), reduction),
        .int64 => kernels.scatterSlices(i64, out.i64Slice(), offsets, slice_len, updates.i64Slice(), reduction),
    }
    return out;
}

/// The int64 indices of the k largest (smallest unless `largest`) elements along `axis`,
/// sorted (ties: lower index first; NaN as the largest). ONNX TopK's values are these
/// indices gathered (gather_elements).
pub fn topK(input: *Tensor, k: usize, axis_raw: i64, largest: bool) Error!*Tensor {
    if (input.dtype != .float32) return status.fail(error.DTypeMismatch, "top_k: expected a float32 tensor, got {s}", .{input.dtype.name()});
    if (input.ndim == 0) return status.fail(error.InvalidArgument, "top_k: cannot select from a 0-D tensor", .{});
    const axis = try normalizeDim("top_k", axis_raw, input.ndim);
    const count = input.shape[axis];
    if (k > count) return status.fail(error.InvalidArgument, "top_k: k = {d} is more than the {d} elements along axis {d}", .{ k, count, axis });
    const x = try shape_ops.contiguous(input);
    defer x.release();
    var shape: [max_dims]usize = undefined;
    @memcpy(shape[0..x.ndim], x.dims());
    shape[axis] = k;
    const out = try tensor.createUninit(.int64, shape[0..x.ndim]);
    errdefer out.release();
    const outer = product(x.dims()[0..axis]);
    const inner = product(x.dims()[axis + 1 ..]);
    if (out.numel() == 0) return out;
    // One candidate list per line, allocated once per call (not per line or per chunk).
    const scratch = allocator.alloc(kernels.Candidate, outer * count * inner) catch return error.OutOfMemory;
    defer allocator.free(scratch);
    const Context = struct {
        x: []const f32,
        outer: usize,
        count: usize,
        inner: usize,
        k: usize,
        largest: bool,
        scratch: []kernels.Candidate,
        out: []i64,
        fn body(c: *const @This(), begin: usize, end: usize) Error!void {
            kernels.topK(c.x, c.outer, c.count, c.inner, c.k, c.largest, c.scratch, c.out, begin, end);
        }
    };
    const context: Context = .{ .x = x.f32Slice(), .outer = outer, .count = count, .inner = inner, .k = k, .largest = largest, .scratch = scratch, .out = out.i64Slice() };
    try intra_op.parallelForTyped(0, outer * inner, parallel.grain(.medium, count), &context, Context.body);
    return out;
}

// ---------------------------------------------------------------------------------------

const testing = std.testing;
const settings = @import("../settings.zig");

fn filled(dtype: tensor.DType, shape: []const usize, random: std.Random) !*Tensor {
    const t = try tensor.createUninit(dtype, shape);
    switch (dtype) {
        .float32 => for (t.f32Slice()) |*v| {
            v.* = @floatFromInt(random.intRangeAtMost(i32, -50, 50));
        },
        .int32 => for (t.i32Slice()) |*v| {
            v.* = random.intRangeAtMost(i32, -50, 50);
        },
        .int64 => for (t.i64Slice()) |*v| {
            v.* = random.intRangeAtMost(i64, -50, 50);
        },
    }
    return t;
}

/// Random in-range indices (negative half the time) for an axis of `size`.
fn randomIndices(dtype: tensor.DType, shape: []const usize, size: usize, random: std.Random) !*Tensor {
    const t = try tensor.createUninit(dtype, shape);
    const signed: i64 = @intCast(size);
    for (0..t.numel()) |i| {
        const index = random.intRangeLessThan(i64, 0, signed);
        const value = if (random.boolean()) index - signed else index;
        switch (dtype) {
            .int64 => t.i64Slice()[i] = value,
            .int32 => t.i32Slice()[i] = @intCast(value),
            .float32 => unreachable,
        }
    }
    return t;
}

fn wrapped(t: *const Tensor, i: usize, size: usize) usize {
    const raw = indexAt(t, i);
    return @intCast(if (raw < 0) raw + @as(i64, @intCast(size)) else raw);
}

test "gather_elements and scatter_elements match a direct reference on awkward shapes at 1 and 3 threads" {
    settings.resetForTesting();
    defer settings.resetForTesting();
    var prng = std.Random.DefaultPrng.init(41);
    const random = prng.random();
    const shapes = [_][]const usize{ &.{7}, &.{ 3, 5 }, &.{ 1, 4, 1 }, &.{ 2, 3, 17 }, &.{ 5, 1, 2, 3 } };
    for ([_]i64{ 1, 3 }) |threads| {
        try settings.setNumThreads(threads);
        for (shapes) |shape| for (0..shape.len) |axis| {
            // Indices as large as the data on the other axes, a different size along the axis.
            var index_shape: [max_dims]usize = undefined;
            @memcpy(index_shape[0..shape.len], shape);
            index_shape[axis] = random.intRangeAtMost(usize, 1, 6);
            const x = try filled(.float32, shape, random);
            defer x.release();
            const indices = try randomIndices(if (axis % 2 == 0) .int64 else .int32, index_shape[0..shape.len], shape[axis], random);
            defer indices.release();
            const gathered = try gatherElements(x, indices, @intCast(axis));
            defer gathered.release();
            var strides: [max_dims]usize = undefined;
            _ = contiguousStrides(shape, &strides);
            var coordinates: [max_dims]usize = undefined;
            for (gathered.f32Slice(), 0..) |got, i| {
                @import("../kernels/indexing.zig").unravel(i, index_shape[0..shape.len], &coordinates);
                coordinates[axis] = wrapped(indices, i, shape[axis]);
                var offset: usize = 0;
                for (0..shape.len) |d| offset += coordinates[d] * strides[d];
                try testing.expectEqual(x.f32Slice()[offset], got);
            }
            for (std.enums.values(Reduction)) |reduction| {
                const updates = try filled(.float32, index_shape[0..shape.len], random);
                defer updates.release();
                const scattered = try scatterElements(x, indices, updates, @as(i64, @intCast(axis)) - @as(i64, @intCast(shape.len)), reduction);
                defer scattered.release();
                const expected = try tensor.createUninit(.float32, shape);
                defer expected.release();
                @memcpy(expected.f32Slice(), x.f32Slice());
                for (updates.f32Slice(), 0..) |update, i| {
                    @import("../kernels/indexing.zig").unravel(i, index_shape[0..shape.len], &coordinates);
                    coordinates[axis] = wrapped(indices, i, shape[axis]);
                    var offset: usize = 0;
                    for (0..shape.len) |d| offset += coordinates[d] * strides[d];
                    const old = expected.f32Slice()[offset];
                    expected.f32Slice()[offset] = switch (reduction) {
                        .none => update,
                        .add => old + update,
                        .mul => old * update,
                        .max => @max(old, update),
                        .min => @min(old, update),
                    };
                }
                try testing.expectEqualSlices(f32, expected.f32Slice(), scattered.f32Slice());
            }
        };
    }
}

test "gather_nd and scatter_nd take index tuples, with batch dims" {
    // data [2, 2, 3] as 0 … 11; tuples of 2 pick rows; with 1 batch dim, tuples of 1.
    const data = try tensor.createUninit(.int64, &.{ 2, 2, 3 });
    defer data.release();
    for (data.i64Slice(), 0..) |*v, i| v.* = @intCast(i);
    const pairs = try tensor.createUninit(.int32, &.{ 2, 2 });
    defer pairs.release();
    @memcpy(pairs.i32Slice(), &[_]i32{ 1, 0, 0, -1 });
    const rows = try gatherNd(data, pairs, 0);
    defer rows.release();
    try testing.expectEqualSlices(usize, &.{ 2, 3 }, rows.dims());
    try testing.expectEqualSlices(i64, &.{ 6, 7, 8, 3, 4, 5 }, rows.i64Slice());
    const batched_indices = try tensor.createUninit(.int64, &.{ 2, 1 });
    defer batched_indices.release();
    @memcpy(batched_indices.i64Slice(), &[_]i64{ 1, 0 });
    const batched = try gatherNd(data, batched_indices, 1);
    defer batched.release();
    try testing.expectEqualSlices(usize, &.{ 2, 3 }, batched.dims());
    try testing.expectEqualSlices(i64, &.{ 3, 4, 5, 6, 7, 8 }, batched.i64Slice());
    // Scatter the two rows back doubled with add: [1, 0] and [0, 1] gain 2× themselves.
    const doubled = try tensor.createUninit(.int64, &.{ 2, 3 });
    defer doubled.release();
    for (doubled.i64Slice(), rows.i64Slice()) |*d, r| d.* = 2 * r;
    const added = try scatterNd(data, pairs, doubled, .add);
    defer added.release();
    try testing.expectEqualSlices(i64, &.{ 0, 1, 2, 9, 12, 15, 18, 21, 24, 9, 10, 11 }, added.i64Slice());
    // An empty set of tuples changes nothing.
    const none = try tensor.createUninit(.int64, &.{ 0, 2 });
    defer none.release();
    const no_updates = try tensor.createUninit(.int64, &.{ 0, 3 });
    defer no_updates.release();
    const unchanged = try scatterNd(data, none, no_updates, .none);
    defer unchanged.release();
    try testing.expectEqualSlices(i64, data.i64Slice(), unchanged.i64Slice());
}

test "top_k returns sorted indices along any axis at 1 and 2 threads" {
    settings.resetForTesting();
    defer settings.resetForTesting();
    var prng = std.Random.DefaultPrng.init(43);
    const random = prng.random();
    for ([_]i64{ 1, 2 }) |threads| {
        try settings.setNumThreads(threads);
        const x = try filled(.float32, &.{ 3, 9, 5 }, random);
        defer x.release();
        for (0..3) |axis| for ([_]bool{ false, true }) |largest| {
            const count = x.shape[axis];
            const k = count - 1;
            const out = try topK(x, k, @intCast(axis), largest);
            defer out.release();
            const picked = try gatherElements(x, out, @intCast(axis));
            defer picked.release();
            var strides: [max_dims]usize = undefined;
            _ = contiguousStrides(out.dims(), &strides);
            // Along each line the picked values are ordered and every other value is beyond them.
            for (0..out.numel()) |i| {
                var coordinates: [max_dims]usize = undefined;
                @import("../kernels/indexing.zig").unravel(i, out.dims(), &coordinates);
                if (coordinates[axis] == 0) continue;
                const previous = picked.f32Slice()[i - strides[axis]];
                const current = picked.f32Slice()[i];
                try testing.expect(if (largest) previous >= current else previous <= current);
                if (previous == current) try testing.expect(out.i64Slice()[i - strides[axis]] < out.i64Slice()[i]);
            }
        };
    }
}

test "bad indices, shapes and k are typed errors" {
    const x = try tensor.createZeroed(.float32, &.{ 2, 3 });
    defer x.release();
    const far = try tensor.createUninit(.int64, &.{ 2, 1 });
    defer far.release();
    @memcpy(far.i64Slice(), &[_]i64{ 0, 3 });
    try testing.expectError(error.IndexOutOfRange, gatherElements(x, far, 1));
    const column = try tensor.createZeroed(.float32, &.{ 2, 1 });
    defer column.release();
    try testing.expectError(error.IndexOutOfRange, scatterElements(x, far, column, 1, .none));
    try testing.expectError(error.ShapeMismatch, scatterElements(x, far, x, 1, .none));
    try testing.expectError(error.IndexOutOfRange, gatherElements(x, far, 2));
    @memcpy(far.i64Slice(), &[_]i64{ 0, -4 });
    try testing.expectError(error.IndexOutOfRange, gatherElements(x, far, 1));
    const flat = try tensor.createZeroed(.int64, &.{2});
    defer flat.release();
    try testing.expectError(error.ShapeMismatch, gatherElements(x, flat, 0));
    try testing.expectError(error.DTypeMismatch, gatherElements(x, x, 0));
    const tuple = try tensor.createUninit(.int64, &.{ 1, 2 });
    defer tuple.release();
    @memcpy(tuple.i64Slice(), &[_]i64{ 2, 0 });
    try testing.expectError(error.IndexOutOfRange, gatherNd(x, tuple, 0));
    const long = try tensor.createZeroed(.int64, &.{ 1, 3 });
    defer long.release();
    try testing.expectError(error.ShapeMismatch, gatherNd(x, long, 0));
    try testing.expectError(error.InvalidArgument, topK(x, 4, 1, true));
    try testing.expectError(error.IndexOutOfRange, topK(x, 1, 2, true));
}
