//! Completion channels: where finished work's tokens go so that the right JavaScript isolate
//! takes them. The library is process-wide, but each isolate (the main thread, every Worker)
//! numbers its own tokens and runs its own waiter; one shared queue would let one isolate's
//! waiter take another's tokens. So each isolate opens a channel (a number, never reused, so
//! a late token cannot reach a later isolate) and every kind of completion (futures, calls
//! on the inference pool) keeps one queue per channel, created the first time the channel
//! is used for that kind.
//!
//! What allocates: the table of queue pointers (max_channels of them) on first use, and each
//! queue on its channel's first use; nothing afterwards. Queues live as long as the table.
const std = @import("std");
const status = @import("../status.zig");
const CompletionQueue = @import("completion_queue.zig").CompletionQueue;

const Error = status.Error;

/// Channels opened per process, at most (one per isolate).
pub const max_channels: u32 = 1 << 16;

/// Channels opened so far; channel numbers are 0 … opened - 1. Monotonic: a counter with
/// nothing published alongside it (a queue is looked up under its table's mutex).
var opened: std.atomic.Value(u32) = .init(0);

/// Opens a channel and returns its number.
pub fn open() Error!u32 {
    var current = opened.load(.monotonic);
    while (true) {
        if (current >= max_channels) {
            return status.fail(error.TooLarge, "{d} completion channels are open, the most a process gets (one per isolate)", .{max_channels});
        }
        current = opened.cmpxchgWeak(current, current + 1, .monotonic, .monotonic) orelse return current;
    }
}

fn checkOpen(channel: u32) Error!void {
    if (channel >= opened.load(.monotonic)) {
        return status.fail(error.InvalidArgument, "completion channel {d} was never opened", .{channel});
    }
}

/// One completion queue of `Node`s per channel.
pub fn Queues(comptime Node: type, comptime capacity: usize) type {
    return struct {
        const Self = @This();
        pub const Queue = CompletionQueue(Node, capacity);

        mutex: std.Thread.Mutex = .{},
        table: []?*Queue = &.{},

        /// The queue of `channel`, created on its first use. Fails for a channel never opened.
        pub fn get(queues: *Self, channel: u32) Error!*Queue {
            try checkOpen(channel);
            queues.mutex.lock();
            defer queues.mutex.unlock();
            if (queues.table.len == 0) {
                queues.table = std.heap.c_allocator.alloc(?*Queue, max_channels) catch return error.OutOfMemory;
                @memset(queues.table, null);
            }
            if (queues.table[channel]) |queue| return queue;
            const queue = std.heap.c_allocator.create(Queue) catch return error.OutOfMemory;
            queue.* = .{};
            queues.table[channel] = queue;
            return queue;
        }

        /// Frees every queue (tests; each must be empty).
        pub fn deinit(queues: *Self) void {
            for (queues.table) |entry| if (entry) |queue| std.heap.c_allocator.destroy(queue);
            if (queues.table.len > 0) std.heap.c_allocator.free(queues.table);
            queues.table = &.{};
        }
    };
}

test "channels open in order, and a never-opened channel is refused" {
    const first = try open();
    const second = try open();
    try std.testing.expect(second == first + 1);
    const Node = struct {
        completion_next: ?*@This() = null,
        watch_token: u64 = 0,
        pub fn release(_: *@This()) void {}
    };
    var queues: Queues(Node, 4) = .{};
    defer queues.deinit();
    const a = try queues.get(first);
    try std.testing.expect(a == try queues.get(first));
    try std.testing.expect(a != try queues.get(second));
    try std.testing.expectError(error.InvalidArgument, queues.get(second + 1000));
}
