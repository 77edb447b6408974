//! Unobserved errors: the messages of failed futures dropped before any wait() returned
//! their error (like an unhandled promise rejection). future.zig reports them when it frees
//! such a future; TypeScript drains them (exports.zig: spindle_unobserved_errors). Until
//! TypeScript first drains the list, and whenever the list is full, a report goes to stderr
//! instead, so it is never silently lost.
const std = @import("std");
const status = @import("../status.zig");

const appendTruncated = status.appendTruncated;

const Unobserved = @This();

pub const capacity = 64;

/// Guards every field but `total`.
mutex: std.Thread.Mutex = .{},
listening: bool = false,
first: usize = 0,
count: usize = 0,
lengths: [capacity]usize = undefined,
messages: [capacity][status.message_capacity]u8 = undefined,
/// Every unobserved error reported in this process, queued or printed.
total: std.atomic.Value(u64) = .init(0),

pub fn report(list: *Unobserved, message: []const u8) void {
    // Monotonic: a statistic for tests and diagnostics.
    _ = list.total.fetchAdd(1, .monotonic);
    const queued = blk: {
        list.mutex.lock();
        defer list.mutex.unlock();
        if (!list.listening or list.count == capacity) break :blk false;
        const slot = (list.first + list.count) % capacity;
        const length = @min(message.len, status.message_capacity);
        @memcpy(list.messages[slot][0..length], message[0..length]);
        list.lengths[slot] = length;
        list.count += 1;
        break :blk true;
    };
    if (!queued) std.debug.print("spindle: warning: a forked task failed and its error was never observed: {s}\n", .{message});
}

/// Moves queued messages into `buffer`, one per line, and returns the bytes written. A
/// message longer than the whole buffer is truncated rather than left to block the list.
/// Marks TypeScript as listening: later reports are queued, not printed.
pub fn drain(list: *Unobserved, buffer: []u8) usize {
    list.mutex.lock();
    defer list.mutex.unlock();
    list.listening = true;
    var length: usize = 0;
    while (list.count > 0) {
        const message = list.messages[list.first][0..list.lengths[list.first]];
        const fits = length + message.len + 1 <= buffer.len;
        if (!fits and length > 0) break;
        if (buffer.len == 0) break;
        appendTruncated(buffer[0 .. buffer.len - 1], &length, message);
        appendTruncated(buffer, &length, "\n");
        list.first = (list.first + 1) % capacity;
        list.count -= 1;
    }
    return length;
}

pub fn totalReported(list: *const Unobserved) u64 {
    // Monotonic: a statistic; callers order it with the frees they wait for.
    return list.total.load(.monotonic);
}

test "reports queue once drained, one line each, and an oversized message is truncated" {
    var list: Unobserved = .{};
    var buffer: [6]u8 = undefined;
    try std.testing.expectEqual(@as(usize, 0), list.drain(&buffer)); // Now listening.
    list.report("ab");
    list.report("cd");
    list.report("too long");
    try std.testing.expectEqual(@as(u64, 3), list.totalReported());
    // Both short lines fit; the long one waits for the next drain.
    try std.testing.expectEqualStrings("ab\ncd\n", buffer[0..list.drain(&buffer)]);
    try std.testing.expectEqualStrings("too l\n", buffer[0..list.drain(&buffer)]);
    try std.testing.expectEqual(@as(usize, 0), list.drain(&buffer));
}
