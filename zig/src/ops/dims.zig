//! Dimension indices as ops take them: Python-style, negative from the end.
const std = @import("std");
const status = @import("../status.zig");

const Error = status.Error;

/// A dimension index in [-ndim, ndim), normalised to [0, ndim).
pub fn normalizeDim(op: []const u8, raw: i64, ndim: usize) Error!usize {
    const n: i64 = @intCast(ndim);
    if (raw < -n or raw >= n or (ndim == 0 and raw != 0 and raw != -1)) {
        return status.fail(error.IndexOutOfRange, "{s}: dimension {d} is out of range for a {d}-D tensor", .{ op, raw, ndim });
    }
    if (ndim == 0) return 0;
    return @intCast(if (raw < 0) raw + n else raw);
}

test "normalizeDim wraps negative dims and refuses out-of-range ones" {
    try std.testing.expectEqual(@as(usize, 2), try normalizeDim("x", -1, 3));
    try std.testing.expectEqual(@as(usize, 0), try normalizeDim("x", 0, 3));
    try std.testing.expectError(error.IndexOutOfRange, normalizeDim("x", 2, 2));
    try std.testing.expectError(error.IndexOutOfRange, normalizeDim("x", -3, 2));
    try std.testing.expectError(error.IndexOutOfRange, normalizeDim("x", 1, 0));
}
