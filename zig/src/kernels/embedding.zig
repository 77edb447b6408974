//! Embedding lookups: gather rows of a [rows, width] table, and pool bags of rows (sum, mean,
//! max, with optional per-sample weights) as DLRM-style recommenders do. Indices are checked
//! by the caller before any row is read.
const std = @import("std");
const math = @import("math.zig");

const lanes = math.lanes;
const V = math.V;

pub const Mode = enum(u8) { sum, mean, max };

/// Copies row `index` of `table` into `out`.
pub fn gatherRow(table: []const f32, width: usize, index: usize, out: []f32) void {
    std.debug.assert(out.len == width);
    @memcpy(out, table[index * width ..][0..width]);
}

/// Pools the rows named by `indices` into `out` (zeros for an empty bag).
pub fn poolBag(
    mode: Mode,
    table: []const f32,
    width: usize,
    indices: []const usize,
    weights: ?[]const f32,
    out: []f32,
) void {
    std.debug.assert(out.len == width);
    if (weights) |w| std.debug.assert(w.len == indices.len);
    if (indices.len == 0) {
        @memset(out, 0);
        return;
    }
    switch (mode) {
        .sum, .mean => {
            @memset(out, 0);
            for (indices, 0..) |index, k| {
                const scale: f32 = if (weights) |w| w[k] else 1;
                accumulate(out, table[index * width ..][0..width], scale);
            }
            if (mode == .mean) {
                const inverse = 1 / @as(f32, @floatFromInt(indices.len));
                for (out) |*x| x.* *= inverse;
            }
        },
        .max => {
            @memcpy(out, table[indices[0] * width ..][0..width]);
            for (indices[1..]) |index| maximum(out, table[index * width ..][0..width]);
        },
    }
}

fn accumulate(out: []f32, row: []const f32, scale: f32) void {
    const scale_vector: V = @splat(scale);
    var i: usize = 0;
    while (i + lanes <= out.len) : (i += lanes) {
        out[i..][0..lanes].* = @mulAdd(V, row[i..][0..lanes].*, scale_vector, out[i..][0..lanes].*);
    }
    while (i < out.len) : (i += 1) out[i] = @mulAdd(f32, row[i], scale, out[i]);
}

fn maximum(out: []f32, row: []const f32) void {
    // NaN propagates, as in PyTorch's max mode.
    for (out, row) |*x, y| x.* = if (x.* != x.*) x.* else if (y != y) y else @max(x.*, y);
}

test "poolBag sums, averages, takes the max, and weights samples" {
    const table = [_]f32{ 1, 2, 3, 10, 20, 30, -1, 5, 0 }; // 3 rows of width 3
    var out: [3]f32 = undefined;
    poolBag(.sum, &table, 3, &.{ 0, 2, 0 }, null, &out);
    try std.testing.expectEqualSlices(f32, &.{ 1, 9, 6 }, &out);
    poolBag(.mean, &table, 3, &.{ 0, 1 }, null, &out);
    try std.testing.expectEqualSlices(f32, &.{ 5.5, 11, 16.5 }, &out);
    poolBag(.max, &table, 3, &.{ 2, 0 }, null, &out);
    try std.testing.expectEqualSlices(f32, &.{ 1, 5, 3 }, &out);
    poolBag(.sum, &table, 3, &.{ 1, 2 }, &.{ 0.5, 2 }, &out);
    try std.testing.expectEqualSlices(f32, &.{ 3, 20, 15 }, &out);
    poolBag(.max, &table, 3, &.{}, null, &out);
    try std.testing.expectEqualSlices(f32, &.{ 0, 0, 0 }, &out);
}
