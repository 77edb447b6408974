//! Element-indexed gathers and scatters (ONNX GatherElements, ScatterElements, GatherND,
//! ScatterND) and top-k selection, on contiguous buffers whose indices the op layer
//! (ops/scatter.zig) has already checked and wrapped, so nothing here can index out of
//! bounds. Gathers and top-k take a range of their output; scatters run serially, in update
//! order, because ONNX defines repeated targets as combining in that order.
const std = @import("std");
const tensor = @import("../tensor.zig");
const indexing = @import("indexing.zig");

const max_dims = tensor.max_dims;

/// How a scatter combines an update with the value already there.
pub const Reduction = enum(u8) { none, add, mul, max, min };

fn combine(comptime T: type, reduction: Reduction, old: T, new: T) T {
    const integer = @typeInfo(T) == .int;
    return switch (reduction) {
        .none => new,
        .add => if (integer) old +% new else old + new,
        .mul => if (integer) old *% new else old * new,
        .max => @max(old, new),
        .min => @min(old, new),
    };
}

/// Element offset of `coordinates` (first `strides.len` of them) through `strides`.
fn offsetOf(coordinates: *const [max_dims]usize, strides: []const usize) usize {
    var offset: usize = 0;
    for (strides, coordinates[0..strides.len]) |stride, coordinate| offset += coordinate * stride;
    return offset;
}

/// GatherElements for outputs [begin, end): out[i] is the element of x at i's coordinates
/// in `index_shape` with the `axis` coordinate replaced by indices[i]. Elements are `width`
/// bytes; `x_strides` are x's element strides.
pub fn gatherElements(x: []const u8, x_strides: []const usize, index_shape: []const usize, axis: usize, indices: []const usize, width: usize, out: []u8, begin: usize, end: usize) void {
    std.debug.assert(x_strides.len == index_shape.len);
    std.debug.assert(end <= indices.len and out.len == indices.len * width);
    var coordinates: [max_dims]usize = undefined;
    for (begin..end) |i| {
        indexing.unravel(i, index_shape, &coordinates);
        coordinates[axis] = indices[i];
        const offset = offsetOf(&coordinates, x_strides);
        @memcpy(out[i * width ..][0..width], x[offset * width ..][0..width]);
    }
}

/// ScatterElements: data[update i's coordinates, axis replaced by indices[i]] combined with
/// updates[i], in order.
pub fn scatterElements(comptime T: type, data: []T, data_strides: []const usize, update_shape: []const usize, axis: usize, indices: []const usize, updates: []const T, reduction: Reduction) void {
    std.debug.assert(indices.len == updates.len);
    var coordinates: [max_dims]usize = undefined;
    for (updates, indices, 0..) |update, index, i| {
        indexing.unravel(i, update_shape, &coordinates);
        coordinates[axis] = index;
        const offset = offsetOf(&coordinates, data_strides);
        data[offset] = combine(T, reduction, data[offset], update);
    }
}

/// GatherND for index tuples [begin, end): copies the `slice_bytes` at byte offset
/// offsets[j] of x to slot j of out.
pub fn gatherSlices(x: []const u8, offsets: []const usize, slice_bytes: usize, out: []u8, begin: usize, end: usize) void {
    std.debug.assert(out.len == offsets.len * slice_bytes);
    for (offsets[begin..end], begin..) |offset, j| {
        @memcpy(out[j * slice_bytes ..][0..slice_bytes], x[offset..][0..slice_bytes]);
    }
}

/// ScatterND: combines slice j of updates (`slice_len` elements) into data at element
/// offset offsets[j], tuple by tuple in order.
pub fn scatterSlices(comptime T: type, data: []T, offsets: []const usize, slice_len: usize, updates: []const T, reduction: Reduction) void {
    std.debug.assert(updates.len == offsets.len * slice_len);
    for (offsets, 0..) |offset, j| {
        for (data[offset..][0..slice_len], updates[j * slice_len ..][0..slice_len]) |*target, update| {
            target.* = combine(T, reduction, target.*, update);
        }
    }
}

/// One candidate of a top-k line: its value and its position along the line.
pub const Candidate = struct { value: f32, index: usize };

/// Whether a comes before b: larger (smaller) values first, ties by lower index (ONNX).
/// NaN counts as the largest value.
fn before(largest: bool, a: Candidate, b: Candidate) bool {
    const a_nan = a.value != a.value;
    const b_nan = b.value != b.value;
    if (a_nan or b_nan) {
        if (a_nan and b_nan) return a.index < b.index;
        return if (largest) a_nan else b_nan;
    }
    if (a.value != b.value) return if (largest) a.value > b.value else a.value < b.value;
    return a.index < b.index;
}

/// Top-k indices of lines [begin, end) of x viewed as [outer, count, inner]: line l is outer
/// row l / inner, column l % inner. `scratch` holds `count` candidates per line.
pub fn topK(x: []const f32, outer_count: usize, count: usize, inner: usize, k: usize, largest: bool, scratch: []Candidate, out: []i64, begin: usize, end: usize) void {
    std.debug.assert(k <= count);
    std.debug.assert(scratch.len >= outer_count * inner * count and out.len == outer_count * k * inner);
    for (begin..end) |line| {
        const row = line / inner;
        const column = line % inner;
        const candidates = scratch[line * count ..][0..count];
        for (candidates, 0..) |*candidate, r| {
            candidate.* = .{ .value = x[(row * count + r) * inner + column], .index = r };
        }
        std.sort.pdq(Candidate, candidates, largest, before);
        for (candidates[0..k], 0..) |candidate, r| out[(row * k + r) * inner + column] = @intCast(candidate.index);
    }
}

test "gatherElements picks along the axis; scatterElements combines in order" {
    // x = [[1, 2, 3], [4, 5, 6]] as float32 bytes, gathered along axis 1.
    const x = [_]f32{ 1, 2, 3, 4, 5, 6 };
    const indices = [_]usize{ 2, 0, 1, 1 };
    var out: [4]f32 = undefined;
    gatherElements(std.mem.sliceAsBytes(&x), &.{ 3, 1 }, &.{ 2, 2 }, 1, &indices, 4, std.mem.sliceAsBytes(&out), 0, 4);
    try std.testing.expectEqualSlices(f32, &.{ 3, 1, 5, 5 }, &out);
    var data = [_]i32{ 0, 0, 0, 0, 0, 0 };
    // Two updates to [1, 1] add up; the other two land once.
    scatterElements(i32, &data, &.{ 3, 1 }, &.{ 2, 2 }, 1, &indices, &.{ 10, 20, 30, 40 }, .add);
    try std.testing.expectEqualSlices(i32, &.{ 20, 0, 10, 0, 70, 0 }, &data);
    scatterElements(i32, &data, &.{ 3, 1 }, &.{ 2, 2 }, 1, &indices, &.{ 1, 2, 3, 4 }, .none);
    try std.testing.expectEqualSlices(i32, &.{ 2, 0, 1, 0, 4, 0 }, &data);
}

test "topK orders by value, ties by index, NaN as the largest" {
    const x = [_]f32{ 3, 1, 3, std.math.nan(f32), 2 };
    var scratch: [5]Candidate = undefined;
    var out: [3]i64 = undefined;
    topK(&x, 1, 5, 1, 3, true, &scratch, &out, 0, 1);
    try std.testing.expectEqualSlices(i64, &.{ 3, 0, 2 }, &out);
    topK(&x, 1, 5, 1, 3, false, &scratch, &out, 0, 1);
    try std.testing.expectEqualSlices(i64, &.{ 1, 4, 0 }, &out);
}
