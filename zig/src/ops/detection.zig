//! ONNX NonMaxSuppression (opsets 10 and 11): checks every input (shapes, dtypes, the
//! thresholds, NaN scores and non-finite boxes), runs kernels/detection.zig's greedy
//! selection per (batch, class) pair over the intra-op pool, and gathers the selections into
//! an int64 [count, 3] tensor of (batch, class, box) rows, in batch, then class, then
//! selection order. The count depends on the values, so the output is allocated once the
//! selections are known (as Range's length is).
const std = @import("std");
const status = @import("../status.zig");
const tensor = @import("../tensor.zig");
const intra_op = @import("../pool/intra_op.zig");
const parallel = @import("parallel.zig");
const shape_ops = @import("shape.zig");
const kernels = @import("../kernels/detection.zig");

const Error = status.Error;
const Tensor = tensor.Tensor;
const allocator = std.heap.c_allocator;

/// The optional scalar inputs, as ONNX gives them (absent or empty: the defaults).
pub const Limits = struct {
    max_output_boxes_per_class: ?*Tensor = null,
    iou_threshold: ?*Tensor = null,
    score_threshold: ?*Tensor = null,
};

/// The one value of an optional one-element input, null when absent or empty.
fn scalarOf(comptime what: []const u8, t: ?*Tensor, comptime dtypes: []const tensor.DType) Error!?f64 {
    const input = t orelse return null;
    const allowed = for (dtypes) |d| {
        if (input.dtype == d) break true;
    } else false;
    if (!allowed) return status.fail(error.DTypeMismatch, "non_max_suppression: " ++ what ++ " is {s}, expected {s}", .{ input.dtype.name(), dtypes[0].name() });
    if (input.ndim > 1) return status.fail(error.ShapeMismatch, "non_max_suppression: " ++ what ++ " must be a scalar or 1-D, got shape {f}", .{status.shape(input.dims())});
    const count = input.numel();
    if (count == 0) return null;
    if (count != 1) return status.fail(error.ShapeMismatch, "non_max_suppression: " ++ what ++ " holds one value, got shape {f}", .{status.shape(input.dims())});
    const x = try shape_ops.contiguous(input);
    defer x.release();
    return switch (x.dtype) {
        .float32 => x.f32Slice()[0],
        .int64 => @floatFromInt(x.i64Slice()[0]),
        .int32 => @floatFromInt(x.i32Slice()[0]),
    };
}

fn checkShapes(boxes: *const Tensor, scores: *const Tensor) Error!void {
    for ([_]*const Tensor{ boxes, scores }, [_][]const u8{ "boxes", "scores" }) |t, name| {
        if (t.dtype != .float32) return status.fail(error.DTypeMismatch, "non_max_suppression: {s} must be float32, got {s}", .{ name, t.dtype.name() });
        if (t.ndim != 3) return status.fail(error.ShapeMismatch, "non_max_suppression: {s} must be 3-D, got shape {f}", .{ name, status.shape(t.dims()) });
    }
    if (boxes.shape[2] != 4) {
        return status.fail(error.ShapeMismatch, "non_max_suppression: boxes must be [batches, boxes, 4], got shape {f}", .{status.shape(boxes.dims())});
    }
    if (scores.shape[0] != boxes.shape[0] or scores.shape[2] != boxes.shape[1]) {
        return status.fail(error.ShapeMismatch, "non_max_suppression: scores {f} must be [batches, classes, boxes] for boxes {f}", .{ status.shape(scores.dims()), status.shape(boxes.dims()) });
    }
    if (boxes.shape[1] > std.math.maxInt(u32)) {
        return status.fail(error.TooLarge, "non_max_suppression: {d} boxes per batch, at most {d}", .{ boxes.shape[1], std.math.maxInt(u32) });
    }
}

/// Refuses NaN scores and non-finite box coordinates, naming the first.
fn checkValues(boxes: []const f32, scores: []const f32, classes: usize, count: usize) Error!void {
    for (scores, 0..) |s, i| if (std.math.isNan(s)) {
        return status.fail(error.InvalidArgument, "non_max_suppression: the score of batch {d}, class {d}, box {d} is NaN", .{ i / (classes * count), i / count % classes, i % count });
    };
    for (boxes, 0..) |v, i| if (!std.math.isFinite(v)) {
        return status.fail(error.InvalidArgument, "non_max_suppression: coordinate {d} of batch {d}, box {d} is {d}; boxes must be finite", .{ i % 4, i / 4 / count, i / 4 % count, v });
    };
}

/// ONNX NonMaxSuppression on boxes [batches, boxes, 4] and scores [batches, classes, boxes].
pub fn nonMaxSuppression(boxes_input: *Tensor, scores_input: *Tensor, limits: Limits, center_point_box: bool) Error!*Tensor {
    try checkShapes(boxes_input, scores_input);
    const max_wanted = try scalarOf("max_output_boxes_per_class", limits.max_output_boxes_per_class, &.{ .int64, .int32 }) orelse 0;
    const iou = try scalarOf("iou_threshold", limits.iou_threshold, &.{.float32}) orelse 0;
    const score_threshold = try scalarOf("score_threshold", limits.score_threshold, &.{.float32});
    if (!(iou >= 0 and iou <= 1)) return status.fail(error.InvalidArgument, "non_max_suppression: iou_threshold is {d}; it must be in [0, 1]", .{iou});
    if (score_threshold) |t| if (std.math.isNan(t)) return status.fail(error.InvalidArgument, "non_max_suppression: score_threshold is NaN", .{});
    const batches = boxes_input.shape[0];
    const count = boxes_input.shape[1];
    const classes = scores_input.shape[1];
    // A negative maximum selects nothing, as the reference's max(value, 0).
    const max_output: usize = @min(count, @as(usize, @intFromFloat(@max(0, @min(max_wanted, @as(f64, @floatFromInt(count)))))));
    const boxes = try shape_ops.contiguous(boxes_input);
    defer boxes.release();
    const scores = try shape_ops.contiguous(scores_input);
    defer scores.release();
    try checkValues(boxes.f32Slice(), scores.f32Slice(), classes, count);
    const pairs = batches * classes;
    if (pairs == 0 or max_output == 0) return tensor.createUninit(.int64, &.{ 0, 3 });

    // Scratch, once per call: each box in extent form, and per pair an order and a selection.
    const corner_boxes = allocator.alloc(kernels.Box, batches * count) catch return error.OutOfMemory;
    defer allocator.free(corner_boxes);
    for (corner_boxes, 0..) |*b, i| b.* = kernels.boxOf(boxes.f32Slice()[i * 4 ..][0..4], center_point_box);
    const order = allocator.alloc(u32, pairs * count) catch return error.OutOfMemory;
    defer allocator.free(order);
    const selected = allocator.alloc(u32, pairs * max_output) catch return error.OutOfMemory;
    defer allocator.free(selected);
    const selected_counts = allocator.alloc(usize, pairs) catch return error.OutOfMemory;
    defer allocator.free(selected_counts);

    const Context = struct {
        boxes: []const kernels.Box,
        scores: []const f32,
        classes: usize,
        count: usize,
        score_threshold: ?f32,
        iou_threshold: f32,
        max_output: usize,
        order: []u32,
        selected: []u32,
        selected_counts: []usize,
        fn body(c: *const @This(), begin: usize, end: usize) Error!void {
            for (begin..end) |pair| {
                const batch = pair / c.classes;
                c.selected_counts[pair] = kernels.selectClass(
                    c.boxes[batch * c.count ..][0..c.count],
                    c.scores[pair * c.count ..][0..c.count],
                    c.score_threshold,
                    c.iou_threshold,
                    c.max_output,
                    c.order[pair * c.count ..][0..c.count],
                    c.selected[pair * c.max_output ..][0..c.max_output],
                );
            }
        }
    };
    const context: Context = .{
        .boxes = corner_boxes,
        .scores = scores.f32Slice(),
        .classes = classes,
        .count = count,
        .score_threshold = if (score_threshold) |t| @floatCast(t) else null,
        .iou_threshold = @floatCast(iou),
        .max_output = max_output,
        .order = order,
        .selected = selected,
        .selected_counts = selected_counts,
    };
    // A pair costs a sort and up to count · max_output IoUs.
    try intra_op.parallelForTyped(0, pairs, parallel.grain(.medium, count * @min(max_output, 16)), &context, Context.body);

    var total: usize = 0;
    for (selected_counts) |c| total += c;
    const out = try tensor.createUninit(.int64, &.{ total, 3 });
    const rows = out.i64Slice();
    var row: usize = 0;
    for (selected_counts, 0..) |c, pair| {
        for (selected[pair * max_output ..][0..c]) |box| {
            rows[row * 3 ..][0..3].* = .{ @intCast(pair / classes), @intCast(pair % classes), box };
            row += 1;
        }
    }
    std.debug.assert(row == total);
    return out;
}

// ---------------------------------------------------------------------------------------

const testing = std.testing;

fn scalar(dtype: tensor.DType, value: f64) !*Tensor {
    const t = try tensor.createUninit(dtype, &.{1});
    switch (dtype) {
        .float32 => t.f32Slice()[0] = @floatCast(value),
        .int64 => t.i64Slice()[0] = @intFromFloat(value),
        .int32 => t.i32Slice()[0] = @intFromFloat(value),
    }
    return t;
}

test "non_max_suppression selects per batch and class, as ONNX's two-batch example" {
    // test_nonmaxsuppression_two_batches: six boxes, two batches, one class.
    const one_batch = [_]f32{ 0, 0, 1, 1, 0, 0.1, 1, 1.1, 0, -0.1, 1, 0.9, 0, 10, 1, 11, 0, 10.1, 1, 11.1, 0, 100, 1, 101 };
    const boxes = try tensor.fromF32(&.{ 2, 6, 4 }, &(one_batch ++ one_batch));
    defer boxes.release();
    const one_scores = [_]f32{ 0.9, 0.75, 0.6, 0.95, 0.5, 0.3 };
    const scores = try tensor.fromF32(&.{ 2, 1, 6 }, &(one_scores ++ one_scores));
    defer scores.release();
    const max_output = try scalar(.int64, 2);
    defer max_output.release();
    const iou = try scalar(.float32, 0.5);
    defer iou.release();
    const threshold = try scalar(.float32, 0);
    defer threshold.release();
    const out = try nonMaxSuppression(boxes, scores, .{ .max_output_boxes_per_class = max_output, .iou_threshold = iou, .score_threshold = threshold }, false);
    defer out.release();
    try testing.expectEqualSlices(usize, &.{ 4, 3 }, out.dims());
    try testing.expectEqualSlices(i64, &.{ 0, 0, 3, 0, 0, 0, 1, 0, 3, 1, 0, 0 }, out.i64Slice());
}

test "non_max_suppression refuses bad inputs with typed errors naming them" {
    const boxes = try tensor.fromF32(&.{ 1, 2, 4 }, &.{ 0, 0, 1, 1, 0, 0, 1, 1 });
    defer boxes.release();
    const scores = try tensor.fromF32(&.{ 1, 1, 2 }, &.{ 0.5, std.math.nan(f32) });
    defer scores.release();
    const good_scores = try tensor.fromF32(&.{ 1, 1, 2 }, &.{ 0.5, 0.25 });
    defer good_scores.release();
    const wrong_boxes = try tensor.fromF32(&.{ 1, 2, 3 }, &.{ 0, 0, 1, 1, 0, 0 });
    defer wrong_boxes.release();
    const wrong_count = try tensor.fromF32(&.{ 1, 1, 3 }, &.{ 0.5, 0.25, 0.1 });
    defer wrong_count.release();
    const bad_iou = try scalar(.float32, 1.5);
    defer bad_iou.release();
    const nan_threshold = try scalar(.float32, std.math.nan(f64));
    defer nan_threshold.release();
    const float_max = try scalar(.float32, 3);
    defer float_max.release();
    const two = try tensor.createZeroed(.int64, &.{2});
    defer two.release();
    const infinite_boxes = try tensor.fromF32(&.{ 1, 2, 4 }, &.{ 0, 0, 1, std.math.inf(f32), 0, 0, 1, 1 });
    defer infinite_boxes.release();
    const cases = [_]struct { boxes: *Tensor, scores: *Tensor, limits: Limits, err: Error, text: []const u8 }{
        .{ .boxes = boxes, .scores = scores, .limits = .{}, .err = error.InvalidArgument, .text = "batch 0, class 0, box 1 is NaN" },
        .{ .boxes = wrong_boxes, .scores = good_scores, .limits = .{}, .err = error.ShapeMismatch, .text = "[batches, boxes, 4]" },
        .{ .boxes = boxes, .scores = wrong_count, .limits = .{}, .err = error.ShapeMismatch, .text = "[batches, classes, boxes]" },
        .{ .boxes = boxes, .scores = boxes, .limits = .{}, .err = error.ShapeMismatch, .text = "[batches, classes, boxes]" },
        .{ .boxes = boxes, .scores = good_scores, .limits = .{ .iou_threshold = bad_iou }, .err = error.InvalidArgument, .text = "iou_threshold is 1.5" },
        .{ .boxes = boxes, .scores = good_scores, .limits = .{ .score_threshold = nan_threshold }, .err = error.InvalidArgument, .text = "score_threshold is NaN" },
        .{ .boxes = boxes, .scores = good_scores, .limits = .{ .max_output_boxes_per_class = float_max }, .err = error.DTypeMismatch, .text = "max_output_boxes_per_class is float32" },
        .{ .boxes = boxes, .scores = good_scores, .limits = .{ .max_output_boxes_per_class = two }, .err = error.ShapeMismatch, .text = "holds one value" },
        .{ .boxes = infinite_boxes, .scores = good_scores, .limits = .{}, .err = error.InvalidArgument, .text = "coordinate 3 of batch 0, box 0" },
    };
    var buffer: [status.message_capacity]u8 = undefined;
    for (cases) |case| {
        try testing.expectError(case.err, nonMaxSuppression(case.boxes, case.scores, case.limits, false));
        const message = buffer[0..status.lastMessage(&buffer)];
        if (std.mem.indexOf(u8, message, case.text) == null) {
            std.debug.print("message: {s}\n", .{message});
            return error.TestUnexpectedResult;
        }
    }
}

test "non_max_suppression: no limit selects nothing; empty batches, classes and boxes give [0, 3]" {
    const boxes = try tensor.fromF32(&.{ 1, 2, 4 }, &.{ 0, 0, 1, 1, 0, 0, 1, 1 });
    defer boxes.release();
    const scores = try tensor.fromF32(&.{ 1, 1, 2 }, &.{ 0.5, 0.25 });
    defer scores.release();
    const none = try nonMaxSuppression(boxes, scores, .{}, false);
    defer none.release();
    try testing.expectEqualSlices(usize, &.{ 0, 3 }, none.dims());
    const empty_boxes = try tensor.createZeroed(.float32, &.{ 3, 0, 4 });
    defer empty_boxes.release();
    const empty_scores = try tensor.createZeroed(.float32, &.{ 3, 2, 0 });
    defer empty_scores.release();
    const negative = try scalar(.int32, -3);
    defer negative.release();
    const plenty = try scalar(.int32, 1000);
    defer plenty.release();
    const empty = try nonMaxSuppression(empty_boxes, empty_scores, .{ .max_output_boxes_per_class = plenty }, true);
    defer empty.release();
    try testing.expectEqualSlices(usize, &.{ 0, 3 }, empty.dims());
    const negative_out = try nonMaxSuppression(boxes, scores, .{ .max_output_boxes_per_class = negative }, false);
    defer negative_out.release();
    try testing.expectEqualSlices(usize, &.{ 0, 3 }, negative_out.dims());
    // Identical boxes at IoU threshold 1 (IoU = 1 is not above it): both kept, best first.
    const one = try scalar(.float32, 1);
    defer one.release();
    const both = try nonMaxSuppression(boxes, scores, .{ .max_output_boxes_per_class = plenty, .iou_threshold = one }, false);
    defer both.release();
    try testing.expectEqualSlices(i64, &.{ 0, 0, 0, 0, 0, 1 }, both.i64Slice());
}
