//! The futex word that idle workers sleep on, shared by the two pools whose workers sleep
//! when they find no work anywhere: the inter-op pool (inter_op.zig) and the tbb-style
//! intra-op pool (intra_op_tbb.zig). (The omp teams ring one doorbell per worker instead:
//! there a worker waits for its own chunk, not for any work.)
//!
//! The protocol: a waker first publishes what a sleeper must see (a queued task, a wake
//! token, the shutdown flag), then bumps the epoch and wakes. A sleeper observes the epoch
//! *before* its last look for work and sleeps only while the epoch still holds that value,
//! so a wake that lands between the look and the sleep makes Futex.wait return at once:
//! no wake-up is lost.
//!
//! Whom to wake and when (wake throttling: one sleeper at a time, none while a worker is
//! searching) stays with each pool, because the two count different things: the inter-op
//! pool counts queued tasks, the tbb pool hands wake tokens to sleepers it counts in one
//! packed word. Both spin (bounded) before they sleep here.
const std = @import("std");

const Futex = std.Thread.Futex;

const WakeEpoch = @This();

/// Bumped by every wake; compared by every sleep.
value: std.atomic.Value(u32) = .init(0),

/// The epoch to pass to sleep(): read it before the last look for work.
pub fn observe(epoch: *const WakeEpoch) u32 {
    // Acquire pairs with the Release bump in wake(): a sleeper that reads the new epoch
    // also sees whatever the waker published before it.
    return epoch.value.load(.acquire);
}

/// Sleeps until a wake() after `observed` was read (at once if one already happened). May
/// also return spuriously: callers look for work again either way.
pub fn sleep(epoch: *WakeEpoch, observed: u32) void {
    Futex.wait(&epoch.value, observed);
}

/// Wakes up to `count` sleepers, after the caller published what they should find.
pub fn wake(epoch: *WakeEpoch, count: u32) void {
    // Release pairs with the Acquire load in observe(). The bump precedes the futex wake,
    // so a sleeper that observed the old value either sees the new one in Futex.wait's
    // check or is queued on the futex before the wake and is woken by it.
    _ = epoch.value.fetchAdd(1, .release);
    Futex.wake(&epoch.value, count);
}

// ---------------------------------------------------------------------------------------
// Tests.

test "a wake between observe and sleep is not lost" {
    var epoch: WakeEpoch = .{};
    const observed = epoch.observe();
    epoch.wake(1); // Nobody sleeps yet.
    epoch.sleep(observed); // Returns at once: the value changed.
    try std.testing.expect(epoch.observe() != observed);
}

test "sleepers wake and see what the waker published before the wake" {
    const Shared = struct {
        epoch: WakeEpoch = .{},
        /// Monotonic: published by the epoch's Release bump, read after its Acquire load.
        flag: std.atomic.Value(bool) = .init(false),

        fn sleeper(shared: *@This()) void {
            while (true) {
                const observed = shared.epoch.observe();
                if (shared.flag.load(.monotonic)) return;
                shared.epoch.sleep(observed);
            }
        }
    };
    var shared: Shared = .{};
    var threads: [3]std.Thread = undefined;
    for (&threads) |*thread| thread.* = try std.Thread.spawn(.{}, Shared.sleeper, .{&shared});
    std.Thread.sleep(std.time.ns_per_ms); // Let some of them sleep.
    shared.flag.store(true, .monotonic);
    shared.epoch.wake(std.math.maxInt(u32));
    for (threads) |thread| thread.join();
}
