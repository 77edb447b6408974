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

/// Formats text that comes from outside (names in a model file, its strings) for an error
/// message (`'{f}'`): valid UTF-8 as it is, control bytes and invalid UTF-8 as `\xNN`, so
/// that a message is always printable UTF-8 whatever the file held.
pub fn printable(text: []const u8) PrintableFormat {
    return .{ .text = text };
}

const PrintableFormat = struct {
    text: []const u8,

    pub fn format(self: PrintableFormat, writer: *std.Io.Writer) std.Io.Writer.Error!void {
        var index: usize = 0;
        while (index < self.text.len) {
            const length = sequenceLength(self.text[index..]);
            if (length == 0) {
                try writer.print("\\x{x:0>2}", .{self.text[index]});
                index += 1;
            } else {
                try writer.writeAll(self.text[index..][0..length]);
                index += length;
            }
        }
    }

    /// The length of the printable UTF-8 sequence that `text` starts with, 0 when it starts
    /// with a control byte or invalid UTF-8.
    fn sequenceLength(text: []const u8) usize {
        std.debug.assert(text.len > 0);
        if (isControl(text[0])) return 0;
        const length = std.unicode.utf8ByteSequenceLength(text[0]) catch return 0;
        if (length > text.len or !std.unicode.utf8ValidateSlice(text[0..length])) return 0;
        return length;
    }
};

fn isControl(byte: u8) bool {
    return byte < 0x20 or byte == 0x7f;
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
    var writer: std.Io.Writer = .fixed(&message_buffer);
    writer.print(format, args) catch {
        // The message did not fit: keep the prefix written, marked as truncated. The cut
        // backs off to the start of a UTF-8 sequence so that the message stays valid UTF-8.
        const ellipsis = "...";
        var end = @min(writer.end, message_capacity - ellipsis.len);
        while (end > 0 and end < writer.end and message_buffer[end] & 0b1100_0000 == 0b1000_0000) end -= 1;
        @memcpy(message_buffer[end..][0..ellipsis.len], ellipsis);
        message_len = end + ellipsis.len;
        return;
    };
    message_len = writer.end;
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

// ---------------------------------------------------------------------------------------
// Test support: finding messages that print uninitialised memory.

/// The byte Debug builds write over `undefined` memory. Tests run ReleaseSafe, which writes
/// nothing there: `paintStack` leaves the byte in dead stack slots instead.
pub const undefined_byte: u8 = 0xAA;

/// Writes `undefined_byte` over the 64 KiB of stack below the caller's frame, so that a call
/// made right after finds it in every stack slot it reads before writing, as a Debug build
/// would. Test support.
pub noinline fn paintStack() void {
    var bytes: [64 << 10]u8 = undefined;
    @memset(&bytes, undefined_byte);
    // Nothing reads the bytes back: keep the memset anyway.
    std.mem.doNotOptimizeAway(&bytes);
}

/// How a value made of `undefined_byte`s prints ({d}, less the sign) at each width a
/// message may print, and in hex.
const undefined_spellings = spellings: {
    @setEvalBranchQuota(100_000);
    var spellings: []const []const u8 = &.{"aaaaaaaa"};
    for ([_]type{ u16, u32, u64 }) |Unsigned| {
        const Signed = std.meta.Int(.signed, @bitSizeOf(Unsigned));
        const bits: Unsigned = @bitCast([_]u8{undefined_byte} ** @sizeOf(Unsigned));
        const negated = -@as(Signed, @bitCast(bits));
        spellings = spellings ++ .{ std.fmt.comptimePrint("{d}", .{bits}), std.fmt.comptimePrint("{d}", .{negated}) };
    }
    for ([_]type{ f32, f64 }) |Float| {
        const Bits = std.meta.Int(.unsigned, @bitSizeOf(Float));
        const bits: Bits = @bitCast([_]u8{undefined_byte} ** @sizeOf(Float));
        const negated = -@as(Float, @bitCast(bits));
        spellings = spellings ++ .{std.fmt.comptimePrint("{d}", .{negated})};
    }
    break :spellings spellings;
};

/// What is wrong with `message` as an error message, or null when nothing is: it is empty,
/// prints a value of `undefined_byte`s, is not UTF-8, or holds a control byte. Test support.
pub fn messageDefect(message: []const u8) ?[]const u8 {
    if (message.len == 0) return "it is empty";
    for (undefined_spellings) |spelling| {
        if (std.ascii.indexOfIgnoreCase(message, spelling) != null) return "it prints uninitialised memory";
    }
    if (!std.unicode.utf8ValidateSlice(message)) return "it is not UTF-8";
    for (message) |byte| if (isControl(byte)) return "it holds a control byte";
    return null;
}

/// This thread's last message, copied into `buffer`; fails the calling test, printing the
/// message, when it has a `messageDefect`. Test support.
pub fn expectFitMessage(buffer: *[message_capacity]u8) error{TestUnexpectedResult}![]const u8 {
    const message = buffer[0..lastMessage(buffer)];
    if (messageDefect(message)) |defect| {
        std.debug.print("a message is unfit to show, as {s}: '{f}'\n", .{ defect, printable(message) });
        return error.TestUnexpectedResult;
    }
    return message;
}

/// Issue 17's conv2d bug in miniature: writes half of a pair and prints all of it.
noinline fn recordHalfOfPair(value: usize) void {
    var pair: [2]usize = undefined;
    pair[0] = value;
    // Opaque to the optimiser: it must read pair[1] from the stack, as a formatter behind
    // a call would.
    std.mem.doNotOptimizeAway(&pair);
    record("padded to {f}", .{shape(&pair)});
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

test "undefined_spellings holds the decimal forms of 0xAA bytes" {
    for ([_][]const u8{ "12297829382473034410", "6148914691236517206", "2863311530", "1431655766", "43690", "21846" }) |spelling| {
        for (undefined_spellings) |known| {
            if (std.mem.eql(u8, known, spelling)) break;
        } else return error.TestUnexpectedResult;
    }
}

test "a message printing uninitialised stack memory is caught after paintStack" {
    paintStack();
    recordHalfOfPair(2);
    var buffer: [message_capacity]u8 = undefined;
    const message = buffer[0..lastMessage(&buffer)];
    try std.testing.expectEqualStrings("it prints uninitialised memory", messageDefect(message) orelse message);
    record("padded to {f}", .{shape(&[_]usize{ 2, 2 })});
    try std.testing.expectEqual(@as(?[]const u8, null), messageDefect(buffer[0..lastMessage(&buffer)]));
}

test "printable escapes control bytes and invalid UTF-8 and keeps the rest" {
    record("unknown op '{f}'", .{printable("r\x1b[31melu\xff\xc3 é\x00")});
    var buffer: [message_capacity]u8 = undefined;
    const message = buffer[0..lastMessage(&buffer)];
    try std.testing.expectEqualStrings("unknown op 'r\\x1b[31melu\\xff\\xc3 é\\x00'", message);
    try std.testing.expectEqual(@as(?[]const u8, null), messageDefect(message));
}

test "a truncated message stays UTF-8" {
    for (0..3) |shift| {
        record("{s}{s}", .{ "xx"[0..shift], "é" ** message_capacity });
        var buffer: [message_capacity]u8 = undefined;
        const message = buffer[0..lastMessage(&buffer)];
        try std.testing.expect(std.mem.endsWith(u8, message, "..."));
        try std.testing.expect(message.len > message_capacity - 5);
        try std.testing.expectEqual(@as(?[]const u8, null), messageDefect(message));
    }
}
