//! embedding and embedding_bag on tensors: index validation (before any memory is read),
//! output allocation and the split of rows or bags over the intra-op pool (grains from
//! parallel.zig). The gathers live in kernels/embedding.zig.
const std = @import("std");
const status = @import("../status.zig");
const tensor = @import("../tensor.zig");
const shape_ops = @import("shape.zig");
const intra_op = @import("../pool/intra_op.zig");
const parallel = @import("parallel.zig");
const kernels = @import("../kernels/embedding.zig");

const Error = status.Error;
const Tensor = tensor.Tensor;
const allocator = std.heap.c_allocator;

pub const Mode = kernels.Mode;

/// Reads an int64 or int32 index tensor into checked usize values in [0, limit).
fn readIndices(comptime op: []const u8, comptime which: []const u8, t: *Tensor, limit: usize, inclusive: bool) Error![]usize {
    const indices = try shape_ops.contiguous(t);
    defer indices.release();
    const out = allocator.alloc(usize, indices.numel()) catch return error.OutOfMemory;
    errdefer allocator.free(out);
    for (out, 0..) |*slot, i| {
        const raw: i64 = switch (indices.dtype) {
            .int64 => indices.i64Slice()[i],
            .int32 => indices.i32Slice()[i],
            .float32 => return status.fail(error.DTypeMismatch, op ++ ": " ++ which ++ " must be int64 or int32, got float32", .{}),
        };
        const bound: i64 = @intCast(limit);
        if (raw < 0 or raw > bound or (raw == bound and !inclusive)) {
            return status.fail(error.IndexOutOfRange, op ++ ": " ++ which ++ "[{d}] = {d} is out of range [0, {d}{s}", .{ i, raw, limit, if (inclusive) "]" else ")" });
        }
        slot.* = @intCast(raw);
    }
    return out;
}

fn requireTable(comptime op: []const u8, weight: *Tensor) Error!void {
    if (weight.dtype != .float32) return status.fail(error.DTypeMismatch, op ++ ": weight must be float32, got {s}", .{weight.dtype.name()});
    if (weight.ndim != 2) return status.fail(error.ShapeMismatch, op ++ ": weight must be 2-D [rows, width], got {f}", .{status.shape(weight.dims())});
}

/// out[..., :] = weight[indices[...], :]
pub fn embedding(weight_input: *Tensor, indices_input: *Tensor) Error!*Tensor {
    try requireTable("embedding", weight_input);
    if (indices_input.ndim >= tensor.max_dims) {
        return status.fail(error.InvalidArgument, "embedding: indices may have at most {d} dims", .{tensor.max_dims - 1});
    }
    const rows = weight_input.shape[0];
    const width = weight_input.shape[1];
    const indices = try readIndices("embedding", "indices", indices_input, rows, false);
    defer allocator.free(indices);
    const weight = try shape_ops.contiguous(weight_input);
    defer weight.release();
    var shape: [tensor.max_dims]usize = undefined;
    @memcpy(shape[0..indices_input.ndim], indices_input.dims());
    shape[indices_input.ndim] = width;
    const out = try tensor.createUninit(.float32, shape[0 .. indices_input.ndim + 1]);
    errdefer out.release();
    const Context = struct {
        table: []const f32,
        width: usize,
        indices: []const usize,
        output: []f32,
        fn body(context: *const @This(), begin: usize, end: usize) Error!void {
            for (begin..end) |i| {
                kernels.gatherRow(context.table, context.width, context.indices[i], context.output[i * context.width ..][0..context.width]);
            }
        }
    };
    const context: Context = .{ .table = weight.f32Slice(), .width = width, .indices = indices, .output = out.f32Slice() };
    try intra_op.parallelForTyped(0, indices.len, parallel.grain(.medium, width), &context, Context.body);
    return out;
}

pub const BagOptions = struct {
    mode: Mode,
    /// Offsets hold one more entry, the end of the last bag (PyTorch's include_last_offset).
    include_last_offset: bool = false,
};

/// Pools bags of rows. Either `indices` is 1-D with `offsets` (bag starts), or 2-D [bags,
/// length] without offsets. `per_sample_weights` (same shape as indices) needs mode sum.
pub fn embeddingBag(
    weight_input: *Tensor,
    indices_input: *Tensor,
    offsets_input: ?*Tensor,
    per_sample_weights_input: ?*Tensor,
    options: BagOptions,
) Error!*Tensor {
    try requireTable("embedding_bag", weight_input);
    const rows = weight_input.shape[0];
    const width = weight_input.shape[1];
    if (per_sample_weights_input != null and options.mode != .sum) {
        return status.fail(error.InvalidArgument, "embedding_bag: per_sample_weights only work with mode 'sum', got '{s}'", .{@tagName(options.mode)});
    }
    const indices = try readIndices("embedding_bag", "indices", indices_input, rows, false);
    defer allocator.free(indices);
    const starts = try bagStarts(indices_input, offsets_input, indices.len, options.include_last_offset);
    defer allocator.free(starts);
    const bags = starts.len - 1;
    const weights = try sampleWeights(per_sample_weights_input, indices_input);
    defer if (weights) |w| w.release();
    const weight = try shape_ops.contiguous(weight_input);
    defer weight.release();
    const out = try tensor.createUninit(.float32, &.{ bags, width });
    errdefer out.release();
    const Context = struct {
        mode: Mode,
        table: []const f32,
        width: usize,
        indices: []const usize,
        starts: []const usize,
        weights: ?[]const f32,
        output: []f32,
        fn body(context: *const @This(), begin: usize, end: usize) Error!void {
            for (begin..end) |bag| {
                const first = context.starts[bag];
                const last = context.starts[bag + 1];
                kernels.poolBag(
                    context.mode,
                    context.table,
                    context.width,
                    context.indices[first..last],
                    if (context.weights) |w| w[first..last] else null,
                    context.output[bag * context.width ..][0..context.width],
                );
            }
        }
    };
    const context: Context = .{
        .mode = options.mode,
        .table = weight.f32Slice(),
        .width = width,
        .indices = indices,
        .starts = starts,
        .weights = if (weights) |w| w.f32Slice() else null,
        .output = out.f32Slice(),
    };
    const per_bag = @max(1, width * (indices.len / @max(bags, 1)));
    try intra_op.parallelForTyped(0, bags, parallel.grain(.medium, per_bag), &context, Context.body);
    return out;
}

/// Bag boundaries: starts[b]..starts[b+1] for b < bags. Checked: non-decreasing, within
/// the index count, first offset 0.
fn bagStarts(indices: *Tensor, offsets_input: ?*Tensor, count: usize, include_last_offset: bool) Error![]usize {
    if (offsets_input == null) {
        if (indices.ndim != 2) {
            return status.fail(error.ShapeMismatch, "embedding_bag: indices without offsets must be 2-D [bags, length], got {f}", .{status.shape(indices.dims())});
        }
        const bags = indices.shape[0];
        const length = indices.shape[1];
        const starts = allocator.alloc(usize, bags + 1) catch return error.OutOfMemory;
        for (starts, 0..) |*s, b| s.* = b * length;
        return starts;
    }
    if (indices.ndim != 1) {
        return status.fail(error.ShapeMismatch, "embedding_bag: indices with offsets must be 1-D, got {f}", .{status.shape(indices.dims())});
    }
    const offsets_tensor = offsets_input.?;
    if (offsets_tensor.ndim != 1) return status.fail(error.ShapeMismatch, "embedding_bag: offsets must be 1-D, got {f}", .{status.shape(offsets_tensor.dims())});
    const offsets = try readIndices("embedding_bag", "offsets", offsets_tensor, count, true);
    defer allocator.free(offsets);
    if (include_last_offset and offsets.len == 0) {
        return status.fail(error.InvalidArgument, "embedding_bag: include_last_offset needs at least one offset", .{});
    }
    if (offsets.len > 0 and offsets[0] != 0) {
        return status.fail(error.InvalidArgument, "embedding_bag: offsets[0] must be 0, got {d}", .{offsets[0]});
    }
    // offsets[1..] of no offsets would be out of bounds.
    if (offsets.len > 1) for (offsets[1..], 1..) |o, i| if (o < offsets[i - 1]) {
        return status.fail(error.InvalidArgument, "embedding_bag: offsets must be non-decreasing, offsets[{d}] = {d} < {d}", .{ i, o, offsets[i - 1] });
    };
    const bags = if (include_last_offset) offsets.len - 1 else offsets.len;
    const starts = allocator.alloc(usize, bags + 1) catch return error.OutOfMemory;
    @memcpy(starts[0..bags], offsets[0..bags]);
    starts[bags] = if (include_last_offset) offsets[bags] else count;
    return starts;
}

fn sampleWeights(per_sample_weights: ?*Tensor, indices: *Tensor) Error!?*Tensor {
    const w = per_sample_weights orelse return null;
    if (w.dtype != .float32) return status.fail(error.DTypeMismatch, "embedding_bag: per_sample_weights must be float32, got {s}", .{w.dtype.name()});
    if (!std.mem.eql(usize, w.dims(), indices.dims())) {
        return status.fail(error.ShapeMismatch, "embedding_bag: per_sample_weights has shape {f}, indices {f}", .{ status.shape(w.dims()), status.shape(indices.dims()) });
    }
    return try shape_ops.contiguous(w);
}

fn makeIndices(dtype: tensor.DType, values: []const i64) !*Tensor {
    const t = try tensor.createUninit(dtype, &.{values.len});
    for (values, 0..) |v, i| switch (dtype) {
        .int64 => t.i64Slice()[i] = v,
        .int32 => t.i32Slice()[i] = @intCast(v),
        .float32 => unreachable,
    };
    return t;
}

test "embedding gathers rows and refuses out-of-range indices before reading" {
    const table = try tensor.createUninit(.float32, &.{ 4, 3 });
    defer table.release();
    for (table.f32Slice(), 0..) |*v, i| v.* = @floatFromInt(i);
    for ([_]tensor.DType{ .int64, .int32 }) |dtype| {
        const ids = try makeIndices(dtype, &.{ 3, 0, 3 });
        defer ids.release();
        const out = try embedding(table, ids);
        defer out.release();
        try std.testing.expectEqualSlices(usize, &.{ 3, 3 }, out.dims());
        try std.testing.expectEqualSlices(f32, &.{ 9, 10, 11, 0, 1, 2, 9, 10, 11 }, out.f32Slice());
        const bad = try makeIndices(dtype, &.{ 1, 4 });
        defer bad.release();
        try std.testing.expectError(error.IndexOutOfRange, embedding(table, bad));
        const negative = try makeIndices(dtype, &.{-1});
        defer negative.release();
        try std.testing.expectError(error.IndexOutOfRange, embedding(table, negative));
    }
}

test "embedding_bag with offsets, 2-D indices, weights and bad offsets" {
    const table = try tensor.createUninit(.float32, &.{ 5, 2 });
    defer table.release();
    for (table.f32Slice(), 0..) |*v, i| v.* = @floatFromInt(i);
    const ids = try makeIndices(.int64, &.{ 0, 1, 4, 2 });
    defer ids.release();
    const offsets = try makeIndices(.int64, &.{ 0, 2, 2 });
    defer offsets.release();
    const summed = try embeddingBag(table, ids, offsets, null, .{ .mode = .sum });
    defer summed.release();
    // Bags: {0, 1}, {} (empty), {4, 2}.
    try std.testing.expectEqualSlices(f32, &.{ 2, 4, 0, 0, 12, 14 }, summed.f32Slice());
    const maxed = try embeddingBag(table, ids, offsets, null, .{ .mode = .max });
    defer maxed.release();
    try std.testing.expectEqualSlices(f32, &.{ 2, 3, 0, 0, 8, 9 }, maxed.f32Slice());
    const weights = try tensor.createUninit(.float32, &.{4});
    defer weights.release();
    @memcpy(weights.f32Slice(), &[_]f32{ 1, 0, 0.5, 0 });
    const weighted = try embeddingBag(table, ids, offsets, weights, .{ .mode = .sum });
    defer weighted.release();
    try std.testing.expectEqualSlices(f32, &.{ 0, 1, 0, 0, 4, 4.5 }, weighted.f32Slice());
    try std.testing.expectError(error.InvalidArgument, embeddingBag(table, ids, offsets, weights, .{ .mode = .mean }));
    const decreasing = try makeIndices(.int64, &.{ 0, 3, 1 });
    defer decreasing.release();
    try std.testing.expectError(error.InvalidArgument, embeddingBag(table, ids, decreasing, null, .{ .mode = .sum }));
    const beyond = try makeIndices(.int64, &.{ 0, 5 });
    defer beyond.release();
    try std.testing.expectError(error.IndexOutOfRange, embeddingBag(table, ids, beyond, null, .{ .mode = .sum }));
    const last = try makeIndices(.int64, &.{ 0, 2, 4 });
    defer last.release();
    const with_last = try embeddingBag(table, ids, last, null, .{ .mode = .mean, .include_last_offset = true });
    defer with_last.release();
    try std.testing.expectEqualSlices(f32, &.{ 1, 2, 6, 7 }, with_last.f32Slice());
    // No offsets at all: no bags.
    const none = try makeIndices(.int64, &.{});
    defer none.release();
    const no_bags = try embeddingBag(table, ids, none, null, .{ .mode = .sum });
    defer no_bags.release();
    try std.testing.expectEqualSlices(usize, &.{ 0, 2 }, no_bags.dims());
}
