//! Errors that cross the FFI boundary: one Zig error set, one C status enum, an exhaustive
//! mapping between them, and a thread-local message that names what was wrong.
const std = @import("std");

/// Every error a native entry point can return. Kept small and semantic: callers in
/// TypeScript switch on the status code, humans read the message.
pub const Error = error{
    InvalidArgument,
    ShapeMismatch,
    DTypeMismatch,
    IndexOutOfRange,
    InvalidHandle,
    OutOfMemory,
    TooLarge,
    ThreadSettings,
    MalformedModel,
    Unsupported,
    TaskFailed,
    Internal,
};

/// The C status enum. The numbers are part of the ABI: append, never renumber.
/// ffi/status.ts mirrors this list in the same order.
pub const Status = enum(i32) {
    ok = 0,
    invalid_argument = 1,
    shape_mismatch = 2,
    dtype_mismatch = 3,
    index_out_of_range = 4,
    invalid_handle = 5,
    out_of_memory = 6,
    too_large = 7,
    thread_settings = 8,
    malformed_model = 9,
    unsupported = 10,
    task_failed = 11,
    internal = 12,
};

pub fn fromError(err: Error) Status {
    return switch (err) {
        error.InvalidArgument => .invalid_argument,
        error.ShapeMismatch => .shape_mismatch,
        error.DTypeMismatch => .dtype_mismatch,
        error.IndexOutOfRange => .index_out_of_range,
        error.InvalidHandle => .invalid_handle,
        error.OutOfMemory => .out_of_memory,
        error.TooLarge => .too_large,
        error.ThreadSettings => .thread_settings,
        error.MalformedModel => .malformed_model,
        error.Unsupported => .unsupported,
        error.TaskFailed => .task_failed,
        error.Internal => .internal,
    };
}

pub const message_capacity = 512;

/// Formats a shape (a slice of usize or i64) as `[2, 3]` in error messages (`{f}`).
pub fn shape(dims: anytype) ShapeFormat(@TypeOf(dims)) {
    return .{ .dims = dims };
}

fn ShapeFormat(comptime Dims: type) type {
    return struct {
        dims: Dims,

        pub fn format(self: @This(), writer: *std.Io.Writer) std.Io.Writer.Error!void {
            try writer.writeByte('[');
            for (self.dims, 0..) |d, i| {
                if (i > 0) try writer.writeAll(", ");
                try writer.print("{d}", .{d});
            }
            try writer.writeByte(']');
        }
    };
}

/// The message of the last error raised on this thread. FFI calls are synchronous on the
/// calling thread, so the caller reads it right after the failing call.
threadlocal var message_buffer: [message_capacity]u8 = undefined;
threadlocal var message_len: usize = 0;

/// Records a message for `err` on this thread and returns `err`, so that call sites read
/// `return status.fail(error.ShapeMismatch, "mm: ...", .{...});`.
pub fn fail(err: Error, comptime format: []const u8, args: anytype) Error {
    record(format, args);
    return err;
}

/// Records a message on this thread without choosing an error.
pub fn record(comptime format: []const u8, args: anytype) void {
    const written = std.fmt.bufPrint(&message_buffer, format, args) catch blk: {
        // The message did not fit: keep the truncated prefix, marked as such.
        const ellipsis = "...";
        @memcpy(message_buffer[message_capacity - ellipsis.len ..], ellipsis);
        break :blk message_buffer[0..];
    };
    message_len = written.len;
}

/// Copies this thread's last error message into `destination` (truncating) and returns
/// the number of bytes written.
pub fn lastMessage(destination: []u8) usize {
    const count = @min(destination.len, message_len);
    @memcpy(destination[0..count], message_buffer[0..count]);
    return count;
}

pub fn clearMessage() void {
    message_len = 0;
}

/// Appends as much of `bytes` as fits after buffer[0..length.*] and advances `length`: how
/// messages are composed into fixed buffers (a future's message, the unobserved list).
pub fn appendTruncated(buffer: []u8, length: *usize, bytes: []const u8) void {
    std.debug.assert(length.* <= buffer.len);
    const count = @min(bytes.len, buffer.len - length.*);
    @memcpy(buffer[length.*..][0..count], bytes[0..count]);
    length.* += count;
}

/// Converts a Zig error union result into a status code for an `export fn`.
pub fn toStatus(result: Error!void) i32 {
    if (result) |_| {
        return @intFromEnum(Status.ok);
    } else |err| {
        if (err == error.OutOfMemory and message_len == 0) {
            record("out of memory", .{});
        }
        return @intFromEnum(fromError(err));
    }
}

test "fail records a message and toStatus maps the error" {
    clearMessage();
    const result: Error!void = fail(error.ShapeMismatch, "mm: {d} != {d}", .{ 3, 4 });
    try std.testing.expectEqual(@as(i32, 2), toStatus(result));
    var buffer: [64]u8 = undefined;
    const count = lastMessage(&buffer);
    try std.testing.expectEqualStrings("mm: 3 != 4", buffer[0..count]);
}

test "fail truncates long messages instead of failing" {
    const long = "x" ** (message_capacity + 10);
    record("{s}", .{long});
    var buffer: [message_capacity * 2]u8 = undefined;
    const count = lastMessage(&buffer);
    try std.testing.expectEqual(@as(usize, message_capacity), count);
    try std.testing.expectEqualStrings("...", buffer[count - 3 .. count]);
}

test "shapes format like Python lists" {
    const dims = [_]usize{ 2, 3 };
    record("got {f} and {f}", .{ shape(&dims), shape(@as([]const i64, &.{-1})) });
    var buffer: [64]u8 = undefined;
    try std.testing.expectEqualStrings("got [2, 3] and [-1]", buffer[0..lastMessage(&buffer)]);
}

test "every status code is distinct" {
    const errors = @typeInfo(Error).error_set.?;
    var seen = std.StaticBitSet(64).initEmpty();
    inline for (errors) |e| {
        const code: usize = @intCast(@intFromEnum(fromError(@field(anyerror, e.name))));
        try std.testing.expect(!seen.isSet(code));
        seen.set(code);
    }
}
