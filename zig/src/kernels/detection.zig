//! Non-maximum suppression (ONNX NonMaxSuppression) for one (batch, class) pair: the greedy
//! selection over boxes in descending score order, a box kept when its IoU with every box
//! kept before it is at most the threshold. Pure functions over slices and caller-owned
//! scratch; the op layer (ops/detection.zig) checks inputs, splits the pairs over the pool
//! and gathers the output. The arithmetic is float32 in the order of ONNX's reference
//! (onnx/reference/ops/op_non_max_suppression.py), so that IoUs on the threshold decide alike.
const std = @import("std");

/// A box as its extent on each axis (min ≤ max whatever order the corners came in) and area.
pub const Box = struct {
    x_min: f32,
    x_max: f32,
    y_min: f32,
    y_max: f32,
    area: f32,
};

/// The box at `raw[0..4]`: [y1, x1, y2, x2] (any two opposite corners) or, with
/// `center_point`, [x_center, y_center, width, height].
pub fn boxOf(raw: []const f32, center_point: bool) Box {
    std.debug.assert(raw.len >= 4);
    var box: Box = undefined;
    if (center_point) {
        const half_width = raw[2] / 2;
        const half_height = raw[3] / 2;
        box = .{ .x_min = raw[0] - half_width, .x_max = raw[0] + half_width, .y_min = raw[1] - half_height, .y_max = raw[1] + half_height, .area = 0 };
    } else {
        box = .{ .x_min = @min(raw[1], raw[3]), .x_max = @max(raw[1], raw[3]), .y_min = @min(raw[0], raw[2]), .y_max = @max(raw[0], raw[2]), .area = 0 };
    }
    box.area = (box.x_max - box.x_min) * (box.y_max - box.y_min);
    return box;
}

/// Whether `candidate` is suppressed by `kept`: IoU > threshold. Boxes that do not overlap,
/// and boxes of no area, suppress nothing.
pub fn suppresses(kept: Box, candidate: Box, iou_threshold: f32) bool {
    const x_min = @max(kept.x_min, candidate.x_min);
    const x_max = @min(kept.x_max, candidate.x_max);
    if (x_max <= x_min) return false;
    const y_min = @max(kept.y_min, candidate.y_min);
    const y_max = @min(kept.y_max, candidate.y_max);
    if (y_max <= y_min) return false;
    const intersection = (x_max - x_min) * (y_max - y_min);
    if (intersection <= 0) return false;
    const union_area = candidate.area + kept.area - intersection;
    if (candidate.area <= 0 or kept.area <= 0 or union_area <= 0) return false;
    return intersection / union_area > iou_threshold;
}

const Order = struct {
    scores: []const f32,

    /// Higher score first; equal scores in box order (the reference's tie-break).
    fn before(order: Order, a: u32, b: u32) bool {
        const score_a = order.scores[a];
        const score_b = order.scores[b];
        return score_a > score_b or (score_a == score_b and a < b);
    }
};

/// Restores the heap property below `start`: every parent ranks before its children.
fn siftDown(heap: []u32, start: usize, ranking: Order) void {
    var parent = start;
    while (true) {
        var first = parent;
        const left = 2 * parent + 1;
        if (left < heap.len and ranking.before(heap[left], heap[first])) first = left;
        if (left + 1 < heap.len and ranking.before(heap[left + 1], heap[first])) first = left + 1;
        if (first == parent) return;
        std.mem.swap(u32, &heap[parent], &heap[first]);
        parent = first;
    }
}

/// Selects up to `max_output` boxes of one class: the candidates (score above
/// `score_threshold` when there is one) in descending score order, each kept unless a box
/// kept before it suppresses it. Writes the kept box indices, in selection order, to
/// `selected` and returns how many. `order` is scratch of one index per box. Scores must not
/// be NaN (the op layer refuses them).
pub fn selectClass(
    boxes: []const Box,
    scores: []const f32,
    score_threshold: ?f32,
    iou_threshold: f32,
    max_output: usize,
    order: []u32,
    selected: []u32,
) usize {
    std.debug.assert(scores.len == boxes.len and order.len >= boxes.len);
    std.debug.assert(selected.len >= @min(max_output, boxes.len));
    var candidates: usize = 0;
    for (scores, 0..) |score, i| {
        if (score_threshold) |threshold| if (!(score > threshold)) continue;
        order[candidates] = @intCast(i);
        candidates += 1;
    }
    // A heap, not a sort: selection stops after max_output boxes, usually long before the
    // candidates run out, so only the boxes popped pay a log factor.
    const ranking: Order = .{ .scores = scores };
    var heap = order[0..candidates];
    var parent = candidates / 2;
    while (parent > 0) {
        parent -= 1;
        siftDown(heap, parent, ranking);
    }
    var count: usize = 0;
    while (heap.len > 0 and count < max_output) {
        const index = heap[0];
        heap[0] = heap[heap.len - 1];
        heap = heap[0 .. heap.len - 1];
        siftDown(heap, 0, ranking);
        const candidate = boxes[index];
        const kept = for (selected[0..count]) |previous| {
            if (suppresses(boxes[previous], candidate, iou_threshold)) break false;
        } else true;
        if (!kept) continue;
        selected[count] = index;
        count += 1;
    }
    return count;
}

// ---------------------------------------------------------------------------------------

const testing = std.testing;

/// The reference, written as plainly as ONNX's: IoU from the raw coordinates, candidates
/// sorted by repeated selection of the best remaining one (no sort routine shared).
fn referenceSelect(raw: []const f32, center_point: bool, scores: []const f32, score_threshold: ?f32, iou_threshold: f32, max_output: usize, out: []u32) usize {
    const n = scores.len;
    var taken: [64]bool = @splat(false);
    std.debug.assert(n <= taken.len);
    var count: usize = 0;
    while (count < max_output) {
        var best: ?usize = null;
        for (0..n) |i| {
            if (taken[i]) continue;
            if (score_threshold) |t| if (!(scores[i] > t)) continue;
            if (best == null or scores[i] > scores[best.?]) best = i;
        }
        const i = best orelse break;
        taken[i] = true;
        var keep = true;
        for (out[0..count]) |j| {
            if (referenceIou(raw[j * 4 ..][0..4], raw[i * 4 ..][0..4], center_point) > iou_threshold) keep = false;
        }
        if (keep) {
            out[count] = @intCast(i);
            count += 1;
        }
    }
    return count;
}

/// IoU of two raw boxes, 0 where they do not overlap or either has no area.
fn referenceIou(a: *const [4]f32, b: *const [4]f32, center_point: bool) f32 {
    var lo: [2][2]f32 = undefined; // [box][axis: x, y]
    var hi: [2][2]f32 = undefined;
    for ([_]*const [4]f32{ a, b }, 0..) |r, k| {
        if (center_point) {
            lo[k] = .{ r[0] - r[2] / 2, r[1] - r[3] / 2 };
            hi[k] = .{ r[0] + r[2] / 2, r[1] + r[3] / 2 };
        } else {
            lo[k] = .{ @min(r[1], r[3]), @min(r[0], r[2]) };
            hi[k] = .{ @max(r[1], r[3]), @max(r[0], r[2]) };
        }
    }
    const width = @min(hi[0][0], hi[1][0]) - @max(lo[0][0], lo[1][0]);
    const height = @min(hi[0][1], hi[1][1]) - @max(lo[0][1], lo[1][1]);
    if (width <= 0 or height <= 0) return 0;
    const area_a = (hi[0][0] - lo[0][0]) * (hi[0][1] - lo[0][1]);
    const area_b = (hi[1][0] - lo[1][0]) * (hi[1][1] - lo[1][1]);
    const intersection = width * height;
    const union_area = area_b + area_a - intersection;
    if (intersection <= 0 or area_a <= 0 or area_b <= 0 or union_area <= 0) return 0;
    return intersection / union_area;
}

test "selectClass matches the reference on random, flipped, degenerate and tied boxes" {
    var prng = std.Random.DefaultPrng.init(0x5e1ec7);
    const random = prng.random();
    var raw: [64 * 4]f32 = undefined;
    var scores: [64]f32 = undefined;
    var boxes: [64]Box = undefined;
    var order: [64]u32 = undefined;
    var got: [64]u32 = undefined;
    var want: [64]u32 = undefined;
    for (0..600) |round| {
        const n = random.uintAtMost(usize, 63) + 1;
        const center_point = random.boolean();
        for (0..n) |i| {
            for (raw[i * 4 ..][0..4]) |*v| {
                // Coarse values: shared edges, equal boxes and zero-area boxes happen often.
                v.* = @as(f32, @floatFromInt(random.intRangeAtMost(i32, -4, 8))) / 2;
            }
            if (center_point) {
                raw[i * 4 + 2] = @abs(raw[i * 4 + 2]);
                raw[i * 4 + 3] = @abs(raw[i * 4 + 3]);
            }
            // Few distinct scores: ties decide by box index.
            scores[i] = @as(f32, @floatFromInt(random.intRangeAtMost(i32, -3, 3))) / 4;
            boxes[i] = boxOf(raw[i * 4 ..][0..4], center_point);
        }
        const score_threshold: ?f32 = if (random.boolean()) @as(f32, @floatFromInt(random.intRangeAtMost(i32, -4, 4))) / 4 else null;
        const thresholds = [_]f32{ 0, 0.25, 0.5, 1.0 / 3.0, 1 };
        const iou_threshold = thresholds[round % thresholds.len];
        const max_output = random.uintAtMost(usize, n + 2);
        const count = selectClass(boxes[0..n], scores[0..n], score_threshold, iou_threshold, max_output, &order, &got);
        const expected = referenceSelect(raw[0 .. n * 4], center_point, scores[0..n], score_threshold, iou_threshold, max_output, &want);
        try testing.expectEqualSlices(u32, want[0..expected], got[0..count]);
    }
}

test "selectClass keeps nothing for max_output 0 and every box when none overlap" {
    const raw = [_]f32{ 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5 };
    var boxes: [3]Box = undefined;
    for (&boxes, 0..) |*b, i| b.* = boxOf(raw[i * 4 ..][0..4], false);
    const scores = [_]f32{ 0.1, 0.9, 0.5 };
    var order: [3]u32 = undefined;
    var selected: [3]u32 = undefined;
    try testing.expectEqual(@as(usize, 0), selectClass(&boxes, &scores, null, 0, 0, &order, &selected));
    try testing.expectEqual(@as(usize, 3), selectClass(&boxes, &scores, null, 0, 10, &order, &selected));
    try testing.expectEqualSlices(u32, &.{ 1, 2, 0 }, &selected);
    // A score equal to the threshold is not above it.
    try testing.expectEqual(@as(usize, 1), selectClass(&boxes, &scores, 0.5, 0, 10, &order, &selected));
}

test "suppresses: flipped corners are the same box; touching boxes and empty boxes suppress nothing" {
    const box = boxOf(&.{ 0, 0, 2, 2 }, false);
    const flipped = boxOf(&.{ 2, 2, 0, 0 }, false);
    try testing.expect(suppresses(box, flipped, 0.99));
    try testing.expect(!suppresses(box, flipped, 1));
    try testing.expect(!suppresses(box, boxOf(&.{ 0, 2, 2, 4 }, false), 0));
    try testing.expect(!suppresses(box, boxOf(&.{ 1, 1, 1, 1 }, false), 0));
    // Center format: a 2×2 box at (1, 1) is the corner box [0, 0, 2, 2].
    try testing.expect(suppresses(box, boxOf(&.{ 1, 1, 2, 2 }, true), 0.99));
}
