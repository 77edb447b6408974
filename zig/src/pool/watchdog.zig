//! For tests of the inter-op pool and futures: panics if a test has not finished within a
//! bound, so that a deadlock fails loudly instead of hanging the test run.
const std = @import("std");

const Watchdog = @This();

done: std.Thread.ResetEvent = .{},
thread: std.Thread = undefined,
/// Names the test in the panic message.
what: []const u8,

pub fn start(watchdog: *Watchdog, seconds: u64) !void {
    watchdog.thread = try std.Thread.spawn(.{}, watch, .{ watchdog, seconds });
}

fn watch(watchdog: *Watchdog, seconds: u64) void {
    watchdog.done.timedWait(seconds * std.time.ns_per_s) catch
        std.debug.panic("deadlock: '{s}' did not finish within {d} s", .{ watchdog.what, seconds });
}

pub fn stop(watchdog: *Watchdog) void {
    watchdog.done.set();
    watchdog.thread.join();
}
