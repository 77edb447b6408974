//! Reading an op's numeric parameters (f64 from the FFI) as checked integers, dims and flags.
const std = @import("std");
const status = @import("../status.zig");

const Error = status.Error;

pub const Params = struct {
    op: []const u8,
    values: []const f64,

    pub fn count(params: Params) usize {
        return params.values.len;
    }

    pub fn expectCount(params: Params, minimum: usize, maximum: usize) Error!void {
        if (params.values.len < minimum or params.values.len > maximum) {
            return status.fail(error.InvalidArgument, "{s}: expected {d} to {d} parameters, got {d}", .{ params.op, minimum, maximum, params.values.len });
        }
    }

    /// Parameter `index` as an integer; refuses NaN, fractions and out-of-range values.
    pub fn int(params: Params, index: usize, name: []const u8) Error!i64 {
        if (index >= params.values.len) {
            return status.fail(error.InvalidArgument, "{s}: missing parameter '{s}'", .{ params.op, name });
        }
        const value = params.values[index];
        if (!std.math.isFinite(value) or @trunc(value) != value or @abs(value) > 9.0e15) {
            return status.fail(error.InvalidArgument, "{s}: '{s}' must be an integer, got {d}", .{ params.op, name, value });
        }
        return @intFromFloat(value);
    }

    pub fn float(params: Params, index: usize, name: []const u8) Error!f64 {
        if (index >= params.values.len) {
            return status.fail(error.InvalidArgument, "{s}: missing parameter '{s}'", .{ params.op, name });
        }
        return params.values[index];
    }

    pub fn flag(params: Params, index: usize, name: []const u8) Error!bool {
        const value = try params.int(index, name);
        if (value != 0 and value != 1) {
            return status.fail(error.InvalidArgument, "{s}: '{s}' must be 0 or 1, got {d}", .{ params.op, name, value });
        }
        return value == 1;
    }

    /// A dimension index in [-ndim, ndim), normalised to [0, ndim).
    pub fn dim(params: Params, index: usize, ndim: usize) Error!usize {
        return normalizeDim(params.op, try params.int(index, "dim"), ndim);
    }
};

pub fn normalizeDim(op: []const u8, raw: i64, ndim: usize) Error!usize {
    const n: i64 = @intCast(ndim);
    if (raw < -n or raw >= n or (ndim == 0 and raw != 0 and raw != -1)) {
        return status.fail(error.IndexOutOfRange, "{s}: dimension {d} is out of range for a {d}-D tensor", .{ op, raw, ndim });
    }
    if (ndim == 0) return 0;
    return @intCast(if (raw < 0) raw + n else raw);
}

test "params convert and check integers and dims" {
    const params: Params = .{ .op = "test", .values = &.{ 2, -1, 1.5, std.math.nan(f64), 1 } };
    try std.testing.expectEqual(@as(i64, 2), try params.int(0, "a"));
    try std.testing.expectEqual(@as(usize, 2), try params.dim(1, 3));
    try std.testing.expectError(error.InvalidArgument, params.int(2, "c"));
    try std.testing.expectError(error.InvalidArgument, params.int(3, "d"));
    try std.testing.expectError(error.InvalidArgument, params.int(9, "missing"));
    try std.testing.expect(try params.flag(4, "flag"));
    try std.testing.expectError(error.IndexOutOfRange, params.dim(0, 2));
    try std.testing.expectError(error.IndexOutOfRange, normalizeDim("x", -3, 2));
}
