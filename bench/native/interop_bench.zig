//! Inter-op pool benchmark: fork+wait latency of an empty task, fork throughput with two
//! workers, and completion-queue throughput with 1000 futures in flight.
//!
//!   cd zig && zig build bench-interop        (ReleaseFast)
//!
//! Every figure is measured in this run on this machine; on a shared machine they are
//! noisy, so latencies are medians of many samples and throughputs medians of 500 rounds
//! of 1000 forks (with the best round beside it).
const std = @import("std");
const spindle = @import("spindle");

const tensor = spindle.tensor;
const Pool = spindle.inter_op.Pool;
const Future = spindle.inter_op.Future;
const Tensor = tensor.Tensor;
const Error = spindle.status.Error;

const workers = 2;
const latency_samples = 100_000;
const throughput_batch = 1000;
const throughput_rounds = 500;
const in_flight = 1000;
const completions_total = 500_000;

/// The empty task: returns a new reference to a shared tensor (a fetch-add).
const Empty = struct {
    value: *Tensor,
    pub fn run(empty: *Empty) Error!*Tensor {
        empty.value.retain();
        return empty.value;
    }
};

/// Counts its runs and wakes the forking thread after the last one, so the throughput loop
/// waits for the workers without waiting on (and so running inline) any future, and
/// without spinning on a core the workers need.
const Counted = struct {
    value: *Tensor,
    batch: *Batch,
    pub fn run(counted: *Counted) Error!*Tensor {
        counted.value.retain();
        // AcqRel: the last increment sees every other task's and publishes to set().
        if (counted.batch.done.fetchAdd(1, .acq_rel) + 1 == throughput_batch) counted.batch.finished.set();
        return counted.value;
    }
};

const Batch = struct {
    done: std.atomic.Value(usize) = .init(0),
    finished: std.Thread.ResetEvent = .{},
};

/// Spins briefly, then yields: on a loaded machine a pure spin would take the core the
/// worker needs.
fn spinUntilDone(future: *const Future) void {
    var spins: u32 = 0;
    while (!future.isDone()) : (spins += 1) {
        if (spins < 1000) std.atomic.spinLoopHint() else std.Thread.yield() catch {};
    }
}

fn median(samples: []u64) u64 {
    std.mem.sortUnstable(u64, samples, {}, std.sort.asc(u64));
    return samples[samples.len / 2];
}

fn percentile(samples: []u64, p: usize) u64 {
    // Sorted by median().
    return samples[@min(samples.len - 1, samples.len * p / 100)];
}

/// fork + wait, as a caller would write it: wait may run the task inline when no worker
/// has picked it up yet.
fn forkWaitLatency(pool: *Pool, value: *Tensor, samples: []u64) !void {
    for (samples) |*sample| {
        var timer = try std.time.Timer.start();
        const future = try Future.fork(pool, "empty", Empty, .{ .value = value });
        const result = try future.wait();
        sample.* = timer.read();
        result.release();
        future.release();
    }
}

/// fork, then spin until a worker completed it: the cross-thread hand-off alone.
fn handoffLatency(pool: *Pool, value: *Tensor, samples: []u64) !void {
    for (samples) |*sample| {
        var timer = try std.time.Timer.start();
        const future = try Future.fork(pool, "empty", Empty, .{ .value = value });
        spinUntilDone(future);
        sample.* = timer.read();
        (try future.wait()).release();
        future.release();
    }
}

const Rate = struct { median: f64, best: f64 };

/// Forks per second from round times of `throughput_batch` forks each.
fn rate(round_ns: []u64) Rate {
    const batch: f64 = throughput_batch * std.time.ns_per_s;
    const median_ns = median(round_ns);
    return .{ .median = batch / @as(f64, @floatFromInt(median_ns)), .best = batch / @as(f64, @floatFromInt(round_ns[0])) };
}

/// Forks batches of `throughput_batch` empty tasks and waits until the workers (never
/// this thread) have run them.
fn forkThroughput(pool: *Pool, value: *Tensor) !Rate {
    var futures: [throughput_batch]*Future = undefined;
    var round_ns: [throughput_rounds]u64 = undefined;
    for (&round_ns) |*round| {
        var batch: Batch = .{};
        var timer = try std.time.Timer.start();
        for (&futures) |*f| f.* = try Future.fork(pool, "counted", Counted, .{ .value = value, .batch = &batch });
        batch.finished.wait();
        round.* = timer.read();
        // Completion follows the count; wait() returns at once or after a few spins.
        for (futures) |f| {
            (try f.wait()).release();
            f.release();
        }
    }
    return rate(&round_ns);
}

/// Forks `throughput_batch` tasks, then waits on each (helping inline): the throughput a
/// caller sees when it joins its own forks.
fn forkJoinThroughput(pool: *Pool, value: *Tensor) !Rate {
    var futures: [throughput_batch]*Future = undefined;
    var round_ns: [throughput_rounds]u64 = undefined;
    for (&round_ns) |*round| {
        var timer = try std.time.Timer.start();
        for (&futures) |*f| f.* = try Future.fork(pool, "empty", Empty, .{ .value = value });
        for (futures) |f| {
            (try f.wait()).release();
            f.release();
        }
        round.* = timer.read();
    }
    return rate(&round_ns);
}

/// Keeps `in_flight` watched futures pending; one thread takes completion tokens (as the
/// TypeScript waiter would) and forks a replacement for each. Returns completions/second.
fn completionThroughput(pool: *Pool, value: *Tensor) !f64 {
    const channel = try spindle.inter_op.channels.open();
    const queue = try Future.completion_queues.get(channel);
    var next_token: u64 = 0;
    for (0..in_flight) |_| try forkWatched(pool, value, channel, &next_token);
    var tokens: [256]u64 = undefined;
    var completed: usize = 0;
    var timer = try std.time.Timer.start();
    while (completed < completions_total) {
        const count = queue.wait(&tokens, std.time.ns_per_s);
        if (count == 0) return error.CompletionTimeout;
        completed += count;
        for (0..count) |_| {
            if (next_token < completions_total) try forkWatched(pool, value, channel, &next_token);
        }
    }
    const elapsed = timer.read();
    // Drain what is still in flight so the pool ends idle.
    while (completed < next_token) completed += queue.wait(&tokens, std.time.ns_per_s);
    return @as(f64, @floatFromInt(completions_total)) * std.time.ns_per_s / @as(f64, @floatFromInt(elapsed));
}

fn forkWatched(pool: *Pool, value: *Tensor, channel: u32, next_token: *u64) !void {
    const future = try Future.fork(pool, "empty", Empty, .{ .value = value });
    defer future.release(); // The watch keeps it alive until its token is taken.
    try future.watch(channel, next_token.*);
    next_token.* += 1;
}

pub fn main() !void {
    const value = try tensor.createZeroed(.float32, &.{1});
    defer value.release();
    const pool = try Pool.init(workers);
    defer pool.deinit();
    const samples = try std.heap.page_allocator.alloc(u64, latency_samples);
    defer std.heap.page_allocator.free(samples);

    std.debug.print("inter-op pool, {d} workers, {d} CPUs (figures are noisy on a shared machine)\n", .{
        workers, std.Thread.getCpuCount() catch 0,
    });
    try forkWaitLatency(pool, value, samples[0 .. latency_samples / 10]); // Warm up.
    try forkWaitLatency(pool, value, samples);
    const fork_wait_median = median(samples);
    std.debug.print("  fork+wait, empty task:      median {d} ns, p99 {d} ns (target <= 2000 ns)\n", .{
        fork_wait_median, percentile(samples, 99),
    });
    try handoffLatency(pool, value, samples);
    std.debug.print("  fork -> worker done:        median {d} ns, p99 {d} ns (no inline run)\n", .{
        median(samples), percentile(samples, 99),
    });
    const workers_rate = try forkThroughput(pool, value);
    std.debug.print("  forks/s, run by 2 workers:  median {d:.2} M/s, best {d:.2} M/s (target >= 1 M/s)\n", .{
        workers_rate.median / 1e6, workers_rate.best / 1e6,
    });
    const join_rate = try forkJoinThroughput(pool, value);
    std.debug.print("  forks/s, fork then wait all: median {d:.2} M/s, best {d:.2} M/s (caller helps inline)\n", .{
        join_rate.median / 1e6, join_rate.best / 1e6,
    });
    const completion_rate = try completionThroughput(pool, value);
    std.debug.print("  completion queue, {d} in flight: {d:.2} M completions/s\n", .{ in_flight, completion_rate / 1e6 });
    if (Future.liveCount() != 0) return error.FutureLeak;
}
