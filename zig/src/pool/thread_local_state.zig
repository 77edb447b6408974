//! The thread-local settings that travel with a forked task (threading spec §5: grad mode in
//! PyTorch): future.zig captures the forking thread's state at fork and installs it on the
//! thread that runs the task for as long as the task runs.
const std = @import("std");

const ThreadLocalState = @This();

/// Whether ops record what autograd would need; placeholder for the grad-mode flag.
grad_enabled: bool = true,
/// The request the work belongs to (0: none), so logs and cancellation can follow a request
/// across threads.
request_id: u64 = 0,

threadlocal var current: ThreadLocalState = .{};

pub fn get() ThreadLocalState {
    return current;
}

pub fn set(state: ThreadLocalState) void {
    current = state;
}

/// Installs `state` and returns the state it replaced, to be restored afterwards.
pub fn exchange(state: ThreadLocalState) ThreadLocalState {
    const previous = current;
    current = state;
    return previous;
}

test "exchange installs a state and hands back the one to restore" {
    const saved = get();
    defer set(saved);
    set(.{ .grad_enabled = false, .request_id = 7 });
    const previous = exchange(.{ .request_id = 8 });
    try std.testing.expectEqual(ThreadLocalState{ .grad_enabled = false, .request_id = 7 }, previous);
    try std.testing.expectEqual(ThreadLocalState{ .request_id = 8 }, get());
}
