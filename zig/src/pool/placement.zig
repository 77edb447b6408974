//! Where pool threads run: the CPU a thread is on now, and moving a thread off the CPU of
//! the thread it works beside. On a machine with few cores the scheduler often wakes a
//! pool thread on its waker's CPU (the other CPUs are busy for a moment), and the two then
//! take turns on one CPU instead of running side by side. intra_op_omp.zig uses it to
//! sleep rather than spin there; inter_op.zig to run a forked task elsewhere.
//!
//! Linux only (sched_getcpu and the affinity calls); elsewhere every CPU is cpu_unknown and
//! nothing moves.
const std = @import("std");
const builtin = @import("builtin");
const topology = @import("../topology.zig");

const linux = std.os.linux;
const assert = std.debug.assert;

/// No CPU known: never equal to a CPU number, so it never stops a spin or moves a thread.
pub const cpu_unknown: u32 = std.math.maxInt(u32);

const has_affinity = builtin.os.tag == .linux and builtin.link_libc;

extern "c" fn sched_getcpu() c_int;

/// The CPU the calling thread runs on (glibc and musl read it without a system call), or
/// cpu_unknown where the C library has no sched_getcpu.
pub fn currentCpu() u32 {
    if (!has_affinity) return cpu_unknown;
    const cpu = sched_getcpu();
    return if (cpu < 0) cpu_unknown else @intCast(cpu);
}

/// Whether a thread on `cpu` shares it with a thread last seen on `other`.
pub fn sharesCpu(cpu: u32, other: u32) bool {
    return cpu != cpu_unknown and cpu == other;
}

/// A thread's allowed CPUs, as moveOff() saved them for restore().
pub const Affinity = if (has_affinity) linux.cpu_set_t else void;

const word_bits = @bitSizeOf(usize);

/// Moves the calling thread, now on `cpu`, to another CPU it is allowed on: it narrows the
/// thread's affinity to its other allowed CPUs, and the kernel migrates a running thread
/// before the call returns. Returns the saved affinity, which the caller gives back with
/// restore() (the thread then stays where it is: its CPU is allowed again). Null when it
/// cannot move: not Linux, `cpu` unknown or its only allowed CPU, or the system refused.
/// Costs three system calls; callers use it only when sharing the CPU costs far more.
pub fn moveOff(cpu: u32) ?Affinity {
    if (!has_affinity) return null;
    var saved: linux.cpu_set_t = undefined;
    if (linux.sched_getaffinity(0, @sizeOf(linux.cpu_set_t), &saved) != 0) return null;
    if (cpu >= @sizeOf(linux.cpu_set_t) * 8) return null; // Also excludes cpu_unknown.
    var others = saved;
    others[cpu / word_bits] &= ~(@as(usize, 1) << @intCast(cpu % word_bits));
    if (linux.CPU_COUNT(others) == 0) return null;
    linux.sched_setaffinity(0, &others) catch return null;
    return saved;
}

/// Gives the calling thread back the affinity moveOff() saved. A failure leaves the thread
/// on a subset of its CPUs, which only narrows where it may run: nothing to report.
pub fn restore(saved: *const Affinity) void {
    if (!has_affinity) return;
    assert(linux.CPU_COUNT(saved.*) > 0);
    linux.sched_setaffinity(0, saved) catch {};
}

/// Inference jobs running now in this process (inference.zig counts each run). When they
/// are at least as many as the CPUs the process may use, every CPU already has one of them,
/// and a thread moved off its CPU would only take turns with another: cpusFull() tells
/// inter_op.zig not to move then. Monotonic: the count is a hint read once per decision,
/// orders no other memory, and a stale value only picks the other (correct) path.
var running_jobs: std.atomic.Value(u32) = .init(0);
var cpu_count_once = std.once(countCpus);
var cpu_count: u32 = 1;

fn countCpus() void {
    cpu_count = topology.logicalCpus();
}

/// Counts an inference job as running until jobFinished().
pub fn jobStarted() void {
    _ = running_jobs.fetchAdd(1, .monotonic);
}

pub fn jobFinished() void {
    const before = running_jobs.fetchSub(1, .monotonic);
    assert(before > 0);
}

/// Whether running inference jobs fill every CPU the process may use (see running_jobs).
pub fn cpusFull() bool {
    return running_jobs.load(.monotonic) >= cpuCount();
}

/// The CPUs the process may use (affinity aware, counted once), at least 1.
pub fn cpuCount() u32 {
    cpu_count_once.call();
    return cpu_count;
}

test "moveOff puts the thread on another allowed CPU, restore gives the affinity back" {
    if (!has_affinity) return error.SkipZigTest;
    const Mover = struct {
        fn main(result: *?anyerror) void {
            run() catch |err| {
                result.* = err;
            };
        }

        fn run() !void {
            const before = try std.posix.sched_getaffinity(0);
            if (linux.CPU_COUNT(before) < 2) return;
            for (0..20) |_| {
                const cpu = currentCpu();
                try std.testing.expect(cpu != cpu_unknown);
                const saved = moveOff(cpu) orelse return error.TestUnexpectedResult;
                // The kernel migrated the thread before sched_setaffinity returned.
                try std.testing.expect(currentCpu() != cpu);
                restore(&saved);
                try std.testing.expectEqual(before, try std.posix.sched_getaffinity(0));
            }
            // A thread allowed on one CPU has nowhere to go.
            const only = currentCpu();
            var one = std.mem.zeroes(linux.cpu_set_t);
            one[only / word_bits] |= @as(usize, 1) << @intCast(only % word_bits);
            try linux.sched_setaffinity(0, &one);
            defer restore(&before);
            try std.testing.expectEqual(@as(?Affinity, null), moveOff(only));
            try std.testing.expectEqual(@as(?Affinity, null), moveOff(cpu_unknown));
        }
    };
    var result: ?anyerror = null;
    // On its own thread: the test runner's thread keeps its affinity.
    const thread = try std.Thread.spawn(.{}, Mover.main, .{&result});
    thread.join();
    if (result) |err| return err;
}

test "cpusFull once running inference jobs reach the CPU count" {
    cpu_count_once.call();
    const baseline = running_jobs.load(.monotonic);
    // Other tests' inference jobs may run in this process: start from what they hold.
    if (baseline >= cpu_count) return error.SkipZigTest;
    var started: u32 = 0;
    defer while (started > 0) : (started -= 1) jobFinished();
    while (baseline + started < cpu_count) : (started += 1) {
        try std.testing.expect(!cpusFull());
        jobStarted();
    }
    try std.testing.expect(cpusFull());
    jobFinished();
    started -= 1;
    try std.testing.expect(!cpusFull());
}
