//! Spindle's intra-op pool benchmark (`zig build bench-pool -Dthreading=omp|tbb`); the
//! backend is the one the build selects. bench/native/run_pool_bench.sh runs every mode
//! for both backends next to the C baselines and prints ratios.
//!
//!   spindle-pool-bench overhead   median ns per parallel_for region: 2 threads, 2 chunks,
//!                                 a tiny body (same shape as omp_overhead.c, tbb_overhead.cpp)
//!   spindle-pool-bench callers    8 threads start regions at once (4 intra-op threads):
//!                                 prints the process thread count while they run
//!   spindle-pool-bench idle       CPU time the process uses in the 300 ms after parallel
//!                                 work ends (the pools must sleep, not spin)
//!
//! Output: one `key value` line per figure, for the script to read.
const std = @import("std");
const spindle = @import("spindle");

const intra_op = spindle.intra_op;
const settings = spindle.settings;

pub fn main() !void {
    var arguments = std.process.args();
    _ = arguments.skip();
    const mode = arguments.next() orelse "overhead";
    var buffer: [256]u8 = undefined;
    var writer = std.fs.File.stdout().writerStreaming(&buffer);
    const out = &writer.interface;
    try out.print("backend {s}\n", .{intra_op.backend_name});
    if (std.mem.eql(u8, mode, "overhead")) {
        try out.print("median_ns_per_region {d:.1}\n", .{try overheadMedianNs()});
    } else if (std.mem.eql(u8, mode, "callers")) {
        try out.print("threads_with_8_callers {d}\n", .{try threadsWithConcurrentCallers()});
    } else if (std.mem.eql(u8, mode, "idle")) {
        try out.print("idle_cpu_ms_in_300ms {d:.2}\n", .{try idleCpuMs()});
    } else {
        std.debug.print("usage: spindle-pool-bench overhead|callers|idle\n", .{});
        std.process.exit(2);
    }
    try out.flush();
}

/// Each chunk bumps its own cache line, as the C baselines do.
const Sink = struct {
    const stride = 8;
    values: [64 * stride]u64 = @splat(0),

    fn bump(sink: *Sink, begin: usize, end: usize) spindle.status.Error!void {
        for (begin..end) |index| {
            const slot: *volatile u64 = &sink.values[(index % 64) * stride];
            slot.* +%= 1;
        }
    }
};

const samples = 201;
const regions_per_sample = 500;
const warmup_regions = 20_000;

fn overheadMedianNs() !f64 {
    try settings.setNumThreads(2);
    var sink: Sink = .{};
    for (0..warmup_regions) |_| try intra_op.parallelForTyped(0, 2, 1, &sink, Sink.bump);
    var per_region_ns: [samples]f64 = undefined;
    for (&per_region_ns) |*sample| {
        var timer = try std.time.Timer.start();
        for (0..regions_per_sample) |_| try intra_op.parallelForTyped(0, 2, 1, &sink, Sink.bump);
        sample.* = @as(f64, @floatFromInt(timer.read())) / regions_per_sample;
    }
    std.mem.sort(f64, &per_region_ns, {}, std.sort.asc(f64));
    return per_region_ns[samples / 2];
}

const callers = 8;
const regions_per_caller = 100;

const Callers = struct {
    started: std.atomic.Value(u32) = .init(0),
    release: std.atomic.Value(bool) = .init(false),

    fn main(shared: *Callers) void {
        var sink: Sink = .{};
        runRegions(&sink, 1);
        // Release/Acquire: the main thread counts callers that have started regions.
        _ = shared.started.fetchAdd(1, .release);
        while (!shared.release.load(.acquire)) std.Thread.sleep(std.time.ns_per_ms);
        runRegions(&sink, regions_per_caller);
    }

    fn runRegions(sink: *Sink, count: usize) void {
        for (0..count) |_| intra_op.parallelForTyped(0, 4096, 1, sink, Sink.bump) catch unreachable;
    }
};

/// Every caller has run a region (so its team, or the shared pool, exists) when the thread
/// count is read.
fn threadsWithConcurrentCallers() !u32 {
    try settings.setNumThreads(4);
    var shared: Callers = .{};
    var threads: [callers]std.Thread = undefined;
    for (&threads) |*thread| thread.* = try std.Thread.spawn(.{}, Callers.main, .{&shared});
    while (shared.started.load(.acquire) < callers) std.Thread.sleep(std.time.ns_per_ms);
    const count = try processThreadCount();
    shared.release.store(true, .release);
    for (threads) |thread| thread.join();
    return count;
}

fn processThreadCount() !u32 {
    var buffer: [4096]u8 = undefined;
    const status = try std.fs.cwd().readFile("/proc/self/status", &buffer);
    var lines = std.mem.splitScalar(u8, status, '\n');
    while (lines.next()) |line| {
        if (!std.mem.startsWith(u8, line, "Threads:")) continue;
        const value = std.mem.trim(u8, line["Threads:".len..], " \t");
        return std.fmt.parseInt(u32, value, 10);
    }
    return error.NoThreadsLine;
}

fn cpuTimeNs() u64 {
    const usage = std.posix.getrusage(std.posix.rusage.SELF);
    const user: u64 = @intCast(usage.utime.sec * std.time.ns_per_s + usage.utime.usec * std.time.ns_per_us);
    const system: u64 = @intCast(usage.stime.sec * std.time.ns_per_s + usage.stime.usec * std.time.ns_per_us);
    return user + system;
}

fn idleCpuMs() !f64 {
    try settings.setNumThreads(2);
    var sink: Sink = .{};
    var timer = try std.time.Timer.start();
    while (timer.read() < 200 * std.time.ns_per_ms) {
        try intra_op.parallelForTyped(0, 4096, 1, &sink, Sink.bump);
    }
    const before = cpuTimeNs();
    std.Thread.sleep(300 * std.time.ns_per_ms);
    const after = cpuTimeNs();
    return @as(f64, @floatFromInt(after - before)) / std.time.ns_per_ms;
}
