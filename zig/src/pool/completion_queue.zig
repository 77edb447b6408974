//! The completion queue: how TypeScript awaits many futures without one blocked thread per
//! future. A watched future (future.zig) is pushed here when it completes; a waiter (a
//! `nonblocking` FFI call from TypeScript, see exports.zig) takes the tokens of completed
//! futures in batches, FIFO in completion order.
//!
//! Thread-safe: any thread completes futures into it, and any number of threads may take
//! tokens (each token goes to exactly one of them). A mutex and a condition variable order
//! everything; no lock is held while a node is released.
const std = @import("std");

const assert = std.debug.assert;

/// A queue of `Node`s, at most `capacity` at once. A Node has `completion_next: ?*Node` (the
/// queue's link), `watch_token: u64` (what a waiter receives) and `release()`: the queue
/// holds one reference of each queued node and drops it once the token is taken.
pub fn CompletionQueue(comptime Node: type, comptime capacity: usize) type {
    return struct {
        const Self = @This();

        mutex: std.Thread.Mutex = .{},
        condition: std.Thread.Condition = .{},
        head: ?*Node = null,
        tail: ?*Node = null,
        count: usize = 0,
        interrupted: bool = false,
        /// `count`, readable without the lock: a hint for spinning waiters (inference.zig awaitCompletion).
        /// Monotonic both ways: the mutex orders the tokens; the hint only ends a spin early.
        available: std.atomic.Value(usize) = .init(0),

        /// Queues `node`, taking over one reference of it (the watch's).
        pub fn push(queue: *Self, node: *Node) void {
            {
                queue.mutex.lock();
                defer queue.mutex.unlock();
                node.completion_next = null;
                if (queue.tail) |tail| tail.completion_next = node else queue.head = node;
                queue.tail = node;
                queue.count += 1;
                assert(queue.count <= capacity);
                queue.available.store(queue.count, .monotonic);
            }
            queue.condition.signal();
        }

        /// Copies available tokens (at most tokens.len) without blocking; returns the count.
        pub fn poll(queue: *Self, tokens: []u64) usize {
            queue.mutex.lock();
            const taken = queue.takeLocked(tokens);
            queue.mutex.unlock();
            return releaseTaken(taken, tokens);
        }

        /// Blocks until a token is available, the timeout passes, or interrupt() is called;
        /// then copies available tokens like poll().
        pub fn wait(queue: *Self, tokens: []u64, timeout_ns: u64) usize {
            var timer = std.time.Timer.start() catch unreachable; // Linux always has a clock.
            queue.mutex.lock();
            while (queue.count == 0 and !queue.interrupted and tokens.len > 0) {
                const elapsed = timer.read();
                if (elapsed >= timeout_ns) break;
                queue.condition.timedWait(&queue.mutex, timeout_ns - elapsed) catch break;
            }
            queue.interrupted = false;
            const taken = queue.takeLocked(tokens);
            queue.mutex.unlock();
            return releaseTaken(taken, tokens);
        }

        /// Sleeps until a token is available, interrupt() is called, or `ns` pass (or a
        /// spurious wake-up); takes nothing.
        pub fn sleepFor(queue: *Self, ns: u64) void {
            queue.mutex.lock();
            defer queue.mutex.unlock();
            if (queue.count == 0 and !queue.interrupted and ns > 0) queue.condition.timedWait(&queue.mutex, ns) catch {};
        }

        /// Makes the current (or next) wait() return at once, even with no token.
        pub fn interrupt(queue: *Self) void {
            {
                queue.mutex.lock();
                defer queue.mutex.unlock();
                queue.interrupted = true;
            }
            queue.condition.broadcast();
        }

        const Taken = struct { first: ?*Node, count: usize };

        fn takeLocked(queue: *Self, tokens: []u64) Taken {
            const first = queue.head;
            var count: usize = 0;
            var last: ?*Node = null;
            while (count < tokens.len) : (count += 1) {
                const node = queue.head orelse break;
                tokens[count] = node.watch_token;
                last = node;
                queue.head = node.completion_next;
            }
            if (last) |node| node.completion_next = null;
            if (queue.head == null) queue.tail = null;
            queue.count -= count;
            queue.available.store(queue.count, .monotonic);
            return .{ .first = if (count > 0) first else null, .count = count };
        }

        /// Drops the queue's references of the taken nodes, outside the lock: releasing the
        /// last reference frees a node, which may take other locks.
        fn releaseTaken(taken: Taken, tokens: []u64) usize {
            assert(taken.count <= tokens.len);
            var next = taken.first;
            while (next) |node| {
                next = node.completion_next;
                node.release();
            }
            return taken.count;
        }
    };
}

// ---------------------------------------------------------------------------------------
// Tests, on stand-in nodes; future.zig tests the queue with real futures.

const testing = std.testing;

const TestNode = struct {
    completion_next: ?*TestNode = null,
    watch_token: u64,
    /// Monotonic: read after the joins (or on the releasing thread).
    released: std.atomic.Value(u32) = .init(0),

    pub fn release(node: *TestNode) void {
        _ = node.released.fetchAdd(1, .monotonic);
    }
};

test "tokens come out once each, in push order, in batches of at most tokens.len" {
    var queue: CompletionQueue(TestNode, 8) = .{};
    var nodes: [5]TestNode = undefined;
    for (&nodes, 0..) |*node, index| {
        node.* = .{ .watch_token = 100 + index };
        queue.push(node);
    }
    var tokens: [2]u64 = undefined;
    try testing.expectEqual(@as(usize, 2), queue.poll(&tokens));
    try testing.expectEqualSlices(u64, &.{ 100, 101 }, &tokens);
    try testing.expectEqual(@as(usize, 2), queue.wait(&tokens, std.time.ns_per_s));
    try testing.expectEqualSlices(u64, &.{ 102, 103 }, &tokens);
    try testing.expectEqual(@as(usize, 1), queue.poll(&tokens));
    try testing.expectEqual(@as(u64, 104), tokens[0]);
    try testing.expectEqual(@as(usize, 0), queue.poll(&tokens));
    for (&nodes) |*node| try testing.expectEqual(@as(u32, 1), node.released.load(.monotonic));
}

test "wait times out when empty, and interrupt makes one wait return at once" {
    var queue: CompletionQueue(TestNode, 8) = .{};
    var tokens: [4]u64 = undefined;
    try testing.expectEqual(@as(usize, 0), queue.wait(&tokens, std.time.ns_per_ms));
    queue.interrupt();
    try testing.expectEqual(@as(usize, 0), queue.wait(&tokens, 10 * std.time.ns_per_s));
    // The interrupt was consumed: the next wait times out again.
    try testing.expectEqual(@as(usize, 0), queue.wait(&tokens, std.time.ns_per_ms));
}

test "a blocked waiter takes tokens pushed from other threads" {
    const count = 300;
    const Queue = CompletionQueue(TestNode, count);
    const Pusher = struct {
        fn main(queue: *Queue, nodes: []TestNode) void {
            for (nodes) |*node| queue.push(node);
        }
    };
    var queue: Queue = .{};
    var nodes: [count]TestNode = undefined;
    for (&nodes, 0..) |*node, index| node.* = .{ .watch_token = index };
    var pushers: [3]std.Thread = undefined;
    for (&pushers, 0..) |*thread, index| {
        thread.* = try std.Thread.spawn(.{}, Pusher.main, .{ &queue, nodes[index * 100 ..][0..100] });
    }
    var seen: [count]u8 = @splat(0);
    var total: usize = 0;
    var tokens: [16]u64 = undefined;
    while (total < count) {
        const taken = queue.wait(&tokens, 10 * std.time.ns_per_s);
        try testing.expect(taken > 0);
        for (tokens[0..taken]) |token| seen[token] += 1;
        total += taken;
    }
    for (pushers) |thread| thread.join();
    for (seen) |times| try testing.expectEqual(@as(u8, 1), times);
}
