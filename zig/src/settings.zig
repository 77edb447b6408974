//! Process-wide thread settings (threading spec §3).
//!
//! Intra-op threads: MKL_NUM_THREADS, else OMP_NUM_THREADS, else physical cores; the API
//! overrides both and may be called at any time. A change applies to the next parallel
//! region on every thread (better than PyTorch, where OpenMP keeps per-thread counts).
//!
//! Inter-op threads: physical cores by default; setNumInteropThreads works once, and only
//! before the inter-op pool starts.
const std = @import("std");
const status = @import("status.zig");
const topology = @import("topology.zig");

/// Upper bound on any thread count: far above any machine, low enough that a typo
/// (setNumThreads(1e9)) is refused instead of spawning a billion threads.
pub const max_threads: u32 = 1024;

pub const EnvSource = enum(u8) { default, omp_num_threads, mkl_num_threads };

/// The resolved defaults; computed once, on first use.
const Defaults = struct {
    intra_op: u32,
    intra_op_source: EnvSource,
    inter_op: u32,
    physical_cores: u32,
};

var defaults_once = std.once(computeDefaults);
var defaults: Defaults = undefined;

/// 0 means "not set through the API": use the environment default. Relaxed ordering is
/// enough: the value is a single word with no data published alongside it, and readers
/// only need some recent value at the start of their next parallel region.
var intra_op_override = std.atomic.Value(u32).init(0);

/// 0 means "not set": the default follows the intra-op count. Relaxed, as intra_op_override:
/// one word, nothing published with it; the inference pool reads it on each submit.
var inference_override = std.atomic.Value(u32).init(0);

const InteropState = enum(u32) { unset, set, started };

/// Guards inter-op state transitions: set-once and start-once must be atomic together.
var interop_mutex: std.Thread.Mutex = .{};
var interop_state: InteropState = .unset;
var interop_threads: u32 = 0;

fn computeDefaults() void {
    const physical = topology.physicalCores();
    var intra_op = physical;
    var source: EnvSource = .default;
    if (parseEnv("OMP_NUM_THREADS")) |value| {
        intra_op = value;
        source = .omp_num_threads;
    }
    if (parseEnv("MKL_NUM_THREADS")) |value| {
        intra_op = value;
        source = .mkl_num_threads;
    }
    defaults = .{ .intra_op = intra_op, .intra_op_source = source, .inter_op = physical, .physical_cores = physical };
}

/// Parses a thread-count variable. Unset or empty → null silently; invalid → null with one
/// warning on stderr (this runs once per process, so the warning is printed once).
fn parseEnv(comptime name: []const u8) ?u32 {
    const raw = @import("env.zig").get(name) orelse return null;
    if (raw.len == 0) return null;
    if (parseThreadCount(raw)) |value| return value;
    std.debug.print(
        "spindle: warning: ignoring " ++ name ++ "='{s}': expected a positive integer up to {d}; using the default\n",
        .{ raw, max_threads },
    );
    return null;
}

/// OpenMP allows a comma-separated list (one count per nesting level): take the first.
pub fn parseThreadCount(raw: []const u8) ?u32 {
    const first = std.mem.sliceTo(raw, ',');
    const trimmed = std.mem.trim(u8, first, " \t");
    const value = std.fmt.parseInt(u32, trimmed, 10) catch return null;
    if (value == 0 or value > max_threads) return null;
    return value;
}

fn ensureDefaults() void {
    defaults_once.call();
}

pub fn getNumThreads() u32 {
    const override = intra_op_override.load(.monotonic);
    if (override != 0) return override;
    ensureDefaults();
    return defaults.intra_op;
}

/// Where the current intra-op count comes from: the API, an environment variable, or the
/// physical core count.
pub fn numThreadsSource() enum { api, omp_num_threads, mkl_num_threads, default } {
    if (intra_op_override.load(.monotonic) != 0) return .api;
    ensureDefaults();
    return switch (defaults.intra_op_source) {
        .default => .default,
        .omp_num_threads => .omp_num_threads,
        .mkl_num_threads => .mkl_num_threads,
    };
}

pub fn setNumThreads(count: i64) status.Error!void {
    if (count <= 0 or count > max_threads) {
        return status.fail(
            error.InvalidArgument,
            "set_num_threads expects a positive integer up to {d}, got {d}",
            .{ max_threads, count },
        );
    }
    intra_op_override.store(@intCast(count), .monotonic);
}

/// Inference threads (forward passes run at once by the inference pool): set by the API,
/// else physical cores / intra-op threads, at least 1 — inference × intra-op threads within
/// the cores, as PyTorch's threading note advises. The default follows setNumThreads.
pub fn getNumInferenceThreads() u32 {
    const override = inference_override.load(.monotonic);
    if (override != 0) return override;
    ensureDefaults();
    return @max(1, defaults.physical_cores / getNumThreads());
}

pub fn numInferenceThreadsSource() enum { api, default } {
    return if (inference_override.load(.monotonic) != 0) .api else .default;
}

pub fn setNumInferenceThreads(count: i64) status.Error!void {
    if (count <= 0 or count > max_threads) {
        return status.fail(
            error.InvalidArgument,
            "set_num_inference_threads expects a positive integer up to {d}, got {d}",
            .{ max_threads, count },
        );
    }
    inference_override.store(@intCast(count), .monotonic);
}

pub fn getNumInteropThreads() u32 {
    interop_mutex.lock();
    defer interop_mutex.unlock();
    if (interop_state != .unset) return interop_threads;
    ensureDefaults();
    return defaults.inter_op;
}

pub const interop_error_message =
    "cannot set number of interop threads after parallel work has started or set_num_interop_threads called";

pub fn setNumInteropThreads(count: i64) status.Error!void {
    if (count <= 0 or count > max_threads) {
        return status.fail(
            error.InvalidArgument,
            "set_num_interop_threads expects a positive integer up to {d}, got {d}",
            .{ max_threads, count },
        );
    }
    interop_mutex.lock();
    defer interop_mutex.unlock();
    if (interop_state != .unset) {
        return status.fail(error.ThreadSettings, interop_error_message, .{});
    }
    interop_state = .set;
    interop_threads = @intCast(count);
}

/// Called by the inter-op pool when it starts: freezes the inter-op thread count and
/// returns it. Idempotent.
pub fn startInterop() u32 {
    interop_mutex.lock();
    defer interop_mutex.unlock();
    switch (interop_state) {
        .unset => {
            ensureDefaults();
            interop_threads = defaults.inter_op;
            interop_state = .started;
        },
        .set => interop_state = .started,
        .started => {},
    }
    return interop_threads;
}

pub fn interopStarted() bool {
    interop_mutex.lock();
    defer interop_mutex.unlock();
    return interop_state == .started;
}

/// Test-only: forget API settings so tests stay independent. Never exported.
pub fn resetForTesting() void {
    intra_op_override.store(0, .monotonic);
    inference_override.store(0, .monotonic);
    interop_mutex.lock();
    defer interop_mutex.unlock();
    interop_state = .unset;
    interop_threads = 0;
}

test "parseThreadCount accepts positive integers and OpenMP lists" {
    try std.testing.expectEqual(@as(?u32, 3), parseThreadCount("3"));
    try std.testing.expectEqual(@as(?u32, 4), parseThreadCount(" 4 "));
    try std.testing.expectEqual(@as(?u32, 4), parseThreadCount("4,2"));
    try std.testing.expectEqual(@as(?u32, null), parseThreadCount("0"));
    try std.testing.expectEqual(@as(?u32, null), parseThreadCount("-2"));
    try std.testing.expectEqual(@as(?u32, null), parseThreadCount("abc"));
    try std.testing.expectEqual(@as(?u32, null), parseThreadCount("2.5"));
    try std.testing.expectEqual(@as(?u32, null), parseThreadCount("99999"));
}

test "setNumThreads overrides the default and rejects bad values" {
    resetForTesting();
    defer resetForTesting();
    try setNumThreads(3);
    try std.testing.expectEqual(@as(u32, 3), getNumThreads());
    try std.testing.expectError(error.InvalidArgument, setNumThreads(0));
    try std.testing.expectError(error.InvalidArgument, setNumThreads(-1));
    try std.testing.expectError(error.InvalidArgument, setNumThreads(max_threads + 1));
    try std.testing.expectEqual(@as(u32, 3), getNumThreads());
}

test "setNumInteropThreads works once, then fails even with the same value" {
    resetForTesting();
    defer resetForTesting();
    try setNumInteropThreads(2);
    try std.testing.expectEqual(@as(u32, 2), getNumInteropThreads());
    try std.testing.expectError(error.ThreadSettings, setNumInteropThreads(2));
    try std.testing.expectEqual(@as(u32, 2), startInterop());
    try std.testing.expectError(error.ThreadSettings, setNumInteropThreads(3));
}

test "setNumInteropThreads fails after the pool started" {
    resetForTesting();
    defer resetForTesting();
    const count = startInterop();
    try std.testing.expect(count >= 1);
    try std.testing.expectError(error.ThreadSettings, setNumInteropThreads(1));
    try std.testing.expectEqual(count, getNumInteropThreads());
}
