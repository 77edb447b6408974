//! Environment variables, the same way on every OS: through libc's getenv, which every
//! build links (std.posix.getenv refuses to compile for Windows, whose native environment
//! is UTF-16; the C runtime keeps the narrow copy Spindle's ASCII names and values need).
const std = @import("std");

/// The value of `name`, or null when unset. Valid until the environment changes.
pub fn get(comptime name: []const u8) ?[]const u8 {
    const value = std.c.getenv(std.fmt.comptimePrint("{s}", .{name})) orelse return null;
    return std.mem.span(value);
}

test "get reads a set variable and returns null for an unset one" {
    try std.testing.expect(get("PATH") != null);
    try std.testing.expectEqual(@as(?[]const u8, null), get("SPINDLE_SURELY_UNSET_VARIABLE"));
}
