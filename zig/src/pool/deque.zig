//! The bounded work-stealing deque of both stealing pools: every worker of the inter-op pool
//! (inter_op.zig) and every worker and caller of the tbb-style intra-op pool
//! (intra_op_tbb.zig) owns one.
//!
//! Chase-Lev's vocabulary: the owner pushes and pops at the bottom (the newest item);
//! thieves steal at the top (the oldest). Unlike Chase-Lev's lock-free deque, a mutex
//! guards the slots: critical sections are a few loads and stores, contention is limited to
//! steals, and ThreadSanitizer understands it. An atomic `length` beside the lock lets the
//! owner, thieves and sleepers skip an empty deque without locking it.
//!
//! Positions are u64 and never wrap (2^64 pushes is centuries), so an owner may remember
//! the bottom (a mark) and later pop only what was pushed above it (popAbove).
//!
//! Both ends also take a predicate that may refuse the item there, leaving the deque as it
//! was: a tbb caller steals only its own region's ranges (stealIf), and an inter-op worker
//! pops early the tasks at its bottom that a waiter has already run inline (popAboveIf).
const std = @import("std");

const assert = std.debug.assert;
const Atomic = std.atomic.Value;

/// A deque of at most `capacity` items, owned by one thread and robbed by any.
pub fn Deque(comptime Item: type, comptime capacity: u32) type {
    comptime assert(std.math.isPowerOfTwo(capacity));
    return struct {
        const Self = @This();

        /// Aligned so that neighbouring deques (arrays of them) never share a cache line.
        mutex: std.Thread.Mutex align(std.atomic.cache_line) = .{},
        /// Position of the oldest item, the thieves' end. Guarded by mutex.
        top: u64 = 0,
        /// One past the newest item, the owner's end. Guarded by mutex; written by the
        /// owner only, so the owner also reads it without the lock (bottomPosition()).
        bottom: u64 = 0,
        /// bottom - top, stored under the lock after every change, read without it.
        length: Atomic(u32) = .init(0),
        /// Slot of position p: items[p % capacity]; top <= bottom <= top + capacity.
        items: [capacity]Item = undefined,

        /// The owner adds its newest item. False when full: the caller queues or runs the
        /// item elsewhere.
        pub fn push(deque: *Self, item: Item) bool {
            deque.mutex.lock();
            defer deque.mutex.unlock();
            const length = deque.bottom - deque.top;
            assert(length <= capacity);
            if (length == capacity) return false;
            deque.items[deque.bottom % capacity] = item;
            deque.bottom += 1;
            // SeqCst, so that a pool may make this store one side of a Dekker handshake
            // with its sleepers: the pusher stores the length and then loads the sleepers'
            // word (SeqCst); a sleeper announces itself in that word (SeqCst RMW) and then
            // loads the lengths (isEmpty(), SeqCst). One of the two sees the other. The tbb
            // pool relies on it; the inter-op pool counts pending tasks instead, and this is
            // one locked store more on its nested forks.
            deque.length.store(@intCast(length + 1), .seq_cst);
            return true;
        }

        /// The owner takes its newest item.
        pub fn pop(deque: *Self) ?Item {
            return deque.popAbove(0);
        }

        /// The owner takes its newest item if that was pushed at or above position `floor`
        /// (a bottomPosition() it remembered): what it pushed since, and nothing older.
        pub fn popAbove(deque: *Self, floor: u64) ?Item {
            return deque.popAboveIf(floor, {}, acceptsAny);
        }

        /// The owner takes its newest item if that was pushed at or above `floor` and
        /// `accepts(context, item)`; otherwise it leaves the deque as it was (the inter-op
        /// pool pops the tasks that a waiter already ran inline, and stops at the first
        /// other one).
        pub fn popAboveIf(deque: *Self, floor: u64, context: anytype, comptime accepts: fn (@TypeOf(context), Item) bool) ?Item {
            // Monotonic: only the owner makes the deque grow, so a zero here is exact for
            // it; a stale non-zero only costs the lock.
            if (deque.length.load(.monotonic) == 0) return null;
            deque.mutex.lock();
            defer deque.mutex.unlock();
            if (deque.bottom <= @max(deque.top, floor)) return null;
            const item = deque.items[(deque.bottom - 1) % capacity];
            if (!accepts(context, item)) return null;
            deque.bottom -= 1;
            deque.shrunk();
            return item;
        }

        /// A thief takes the oldest item.
        pub fn steal(deque: *Self) ?Item {
            return deque.stealIf({}, acceptsAny);
        }

        fn acceptsAny(_: void, _: Item) bool {
            return true;
        }

        /// A thief takes the oldest item if `accepts(context, item)`; otherwise it leaves
        /// the deque as it was (a caller of the tbb pool takes only its own region's work).
        pub fn stealIf(deque: *Self, context: anytype, comptime accepts: fn (@TypeOf(context), Item) bool) ?Item {
            // Monotonic: a hint; a stale zero only delays the steal to the thief's next
            // attempt, and a pool about to sleep rechecks with isEmpty() (SeqCst).
            if (deque.length.load(.monotonic) == 0) return null;
            deque.mutex.lock();
            defer deque.mutex.unlock();
            if (deque.bottom == deque.top) return null;
            const item = deque.items[deque.top % capacity];
            if (!accepts(context, item)) return null;
            deque.top += 1;
            deque.shrunk();
            return item;
        }

        /// The owner's bottom position, to pass to popAbove() later. Owner only: it is the
        /// only writer of `bottom`, so it reads it without the lock.
        pub fn bottomPosition(deque: *const Self) u64 {
            return deque.bottom;
        }

        /// Whether the deque is empty, for a sleeper's last look before it sleeps, or for
        /// assertions.
        pub fn isEmpty(deque: *const Self) bool {
            // SeqCst: the sleeper's side of the Dekker handshake described in push().
            return deque.length.load(.seq_cst) == 0;
        }

        fn shrunk(deque: *Self) void {
            // Monotonic: a shrink publishes nothing; a reader that misses it only locks and
            // finds the deque empty.
            deque.length.store(@intCast(deque.bottom - deque.top), .monotonic);
        }
    };
}

// ---------------------------------------------------------------------------------------
// Tests.

const testing = std.testing;

test "the owner pops newest first, thieves steal oldest first" {
    var deque: Deque(u32, 8) = .{};
    for (0..4) |i| try testing.expect(deque.push(@intCast(i)));
    try testing.expectEqual(@as(?u32, 3), deque.pop());
    try testing.expectEqual(@as(?u32, 0), deque.steal());
    try testing.expectEqual(@as(?u32, 2), deque.pop());
    try testing.expectEqual(@as(?u32, 1), deque.steal());
    try testing.expect(deque.isEmpty());
    try testing.expectEqual(@as(?u32, null), deque.pop());
    try testing.expectEqual(@as(?u32, null), deque.steal());
}

test "push refuses a full deque, and positions carry on across wrap-around of the slots" {
    var deque: Deque(u32, 4) = .{};
    for (0..3) |round| {
        for (0..4) |i| try testing.expect(deque.push(@intCast(round * 10 + i)));
        try testing.expect(!deque.push(99));
        for (0..4) |i| try testing.expectEqual(@as(?u32, @intCast(round * 10 + i)), deque.steal());
    }
    try testing.expectEqual(@as(u64, 12), deque.bottomPosition());
}

test "popAbove takes only what was pushed since the mark" {
    var deque: Deque(u32, 8) = .{};
    try testing.expect(deque.push(1));
    try testing.expect(deque.push(2));
    const mark = deque.bottomPosition();
    try testing.expect(deque.push(3));
    try testing.expectEqual(@as(?u32, 3), deque.popAbove(mark));
    try testing.expectEqual(@as(?u32, null), deque.popAbove(mark));
    // A thief took items below the mark: the floor is the top, not the mark.
    try testing.expectEqual(@as(?u32, 1), deque.steal());
    try testing.expectEqual(@as(?u32, 2), deque.pop());
}

test "popAboveIf pops accepted items down to the mark and stops at the first refused" {
    var deque: Deque(u32, 8) = .{};
    try testing.expect(deque.push(1));
    const mark = deque.bottomPosition();
    for ([_]u32{ 3, 4, 5, 7 }) |item| try testing.expect(deque.push(item));
    const Odd = struct {
        fn accepts(_: void, item: u32) bool {
            return item % 2 == 1;
        }
    };
    try testing.expectEqual(@as(?u32, 7), deque.popAboveIf(mark, {}, Odd.accepts));
    try testing.expectEqual(@as(?u32, 5), deque.popAboveIf(mark, {}, Odd.accepts));
    // 4 is refused and stays, and so does 3 beneath it.
    try testing.expectEqual(@as(?u32, null), deque.popAboveIf(mark, {}, Odd.accepts));
    try testing.expectEqual(@as(?u32, 4), deque.pop());
    try testing.expectEqual(@as(?u32, 3), deque.popAboveIf(mark, {}, Odd.accepts));
    // 1 is accepted but below the mark.
    try testing.expectEqual(@as(?u32, null), deque.popAboveIf(mark, {}, Odd.accepts));
    try testing.expectEqual(@as(?u32, 1), deque.pop());
    try testing.expectEqual(@as(?u32, null), deque.popAboveIf(0, {}, Odd.accepts));
}

test "stealIf leaves an item it does not accept" {
    var deque: Deque(u32, 8) = .{};
    try testing.expect(deque.push(7));
    try testing.expect(deque.push(8));
    const Odd = struct {
        fn accepts(_: void, item: u32) bool {
            return item % 2 == 1;
        }
    };
    try testing.expectEqual(@as(?u32, 7), deque.stealIf({}, Odd.accepts));
    try testing.expectEqual(@as(?u32, null), deque.stealIf({}, Odd.accepts));
    try testing.expectEqual(@as(?u32, 8), deque.pop());
}

test "an owner and three thieves take every item exactly once" {
    const item_count = 20_000;
    const Shared = struct {
        deque: Deque(u32, 64) = .{},
        /// Times each item was taken. Monotonic: read after the joins.
        taken: [item_count]Atomic(u8) = @splat(.init(0)),
        /// Set by the owner once it has pushed everything. Release pairs with the thieves'
        /// Acquire load: after seeing it and an empty deque, nothing is left to steal.
        done: Atomic(bool) = .init(false),

        fn thief(shared: *@This()) void {
            while (true) {
                if (shared.deque.steal()) |item| {
                    _ = shared.taken[item].fetchAdd(1, .monotonic);
                    continue;
                }
                if (shared.done.load(.acquire) and shared.deque.isEmpty()) return;
                std.atomic.spinLoopHint();
            }
        }
    };
    var shared: Shared = .{};
    var thieves: [3]std.Thread = undefined;
    for (&thieves) |*thread| thread.* = try std.Thread.spawn(.{}, Shared.thief, .{&shared});
    var next: u32 = 0;
    while (next < item_count) {
        // Push a burst, then pop part of it back, as a worker splitting work does.
        while (next < item_count and shared.deque.push(next)) next += 1;
        for (0..8) |_| {
            const item = shared.deque.pop() orelse break;
            _ = shared.taken[item].fetchAdd(1, .monotonic);
        }
    }
    while (shared.deque.pop()) |item| _ = shared.taken[item].fetchAdd(1, .monotonic);
    shared.done.store(true, .release);
    for (thieves) |thread| thread.join();
    for (&shared.taken) |*count| try testing.expectEqual(@as(u8, 1), count.load(.monotonic));
}
