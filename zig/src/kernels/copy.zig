//! Strided copy: materialises a run of a strided view into contiguous memory. The caller
//! passes a flat output range; runs along the last dim become memcpy when its stride is 1.
const std = @import("std");

/// A strided source: element (i0, …, in) lives at offset + Σ ik · strides[k].
pub fn Source(comptime T: type) type {
    return struct {
        data: []const T,
        offset: usize,
        shape: []const usize,
        strides: []const usize,
    };
}

/// Copies elements [begin, end) (row-major order of `source.shape`) into out[begin..end].
pub fn stridedRange(comptime T: type, source: Source(T), out: []T, begin: usize, end: usize) void {
    const ndim = source.shape.len;
    std.debug.assert(end <= out.len);
    if (begin >= end) return;
    if (ndim == 0) {
        out[0] = source.data[source.offset];
        return;
    }
    const inner = source.shape[ndim - 1];
    const inner_stride = source.strides[ndim - 1];
    var position = begin;
    while (position < end) {
        const row = position / inner;
        const column = position % inner;
        const count = @min(inner - column, end - position);
        // Offset of (row, column): decompose the row index over the outer dims.
        var remaining = row;
        var offset = source.offset + column * inner_stride;
        var axis = ndim - 1;
        while (axis > 0) {
            axis -= 1;
            offset += (remaining % source.shape[axis]) * source.strides[axis];
            remaining /= source.shape[axis];
        }
        const destination = out[position .. position + count];
        if (inner_stride == 1) {
            @memcpy(destination, source.data[offset .. offset + count]);
        } else {
            for (destination, 0..) |*d, k| d.* = source.data[offset + k * inner_stride];
        }
        position += count;
    }
}

test "stridedRange copies a transposed view in any split" {
    var data: [12]f32 = undefined;
    for (&data, 0..) |*x, i| x.* = @floatFromInt(i);
    // [3, 4] viewed transposed as [4, 3] with strides [1, 4].
    const source: Source(f32) = .{ .data = &data, .offset = 0, .shape = &.{ 4, 3 }, .strides = &.{ 1, 4 } };
    var whole: [12]f32 = undefined;
    stridedRange(f32, source, &whole, 0, 12);
    try std.testing.expectEqualSlices(f32, &.{ 0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11 }, &whole);
    var pieces: [12]f32 = undefined;
    stridedRange(f32, source, &pieces, 0, 5);
    stridedRange(f32, source, &pieces, 5, 7);
    stridedRange(f32, source, &pieces, 7, 12);
    try std.testing.expectEqualSlices(f32, &whole, &pieces);
    // A row slice with offset: rows 1..3 of the [3, 4] matrix.
    const rows: Source(f32) = .{ .data = &data, .offset = 4, .shape = &.{ 2, 4 }, .strides = &.{ 4, 1 } };
    var out: [8]f32 = undefined;
    stridedRange(f32, rows, &out, 0, 8);
    try std.testing.expectEqualSlices(f32, data[4..12], &out);
}
