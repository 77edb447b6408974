//! The inference pool: the threads that run asynchronous forward passes (threading spec §1,
//! level 1). TypeScript submits a job per `forward`; at most `limit` jobs run at once, one
//! per worker thread, and the rest wait in a FIFO queue holding no thread. A finished job
//! goes to the pool's completion queue (completion_queue.zig), which one waiter (a
//! `nonblocking` FFI call) drains for every pending forward.
//!
//! Why a pool of Spindle's own: run as plain nonblocking FFI calls, every concurrent forward
//! took one of Deno's blocking-pool threads, and with the omp backend each of those drives
//! an intra-op team of its own — 48 concurrent calls took a 2-core process from 7 to 46
//! threads, and bounding the calls in JavaScript still let Deno rotate work over new threads
//! (each with a new team). Here the threads are the pool's: their number is `limit`,
//! however many calls are pending, and each keeps its team.
//!
//! Completions go to channels (channels.zig): each JavaScript isolate (the main thread, every
//! Worker) opens one and waits only on it, so that one isolate's waiter never takes the
//! token of another's call.
//!
//! Workers start lazily (a submit with no idle worker and fewer than `limit` workers starts
//! one) and sleep on a condition variable when the queue is empty: no spinning. Lowering the
//! limit lets running jobs finish; workers over the limit then exit.
//!
//! Public surface: Job, Pool (a struct with a limit function), submit, wait/poll/interrupt
//! for a channel's completions, load, deinit.
const std = @import("std");
const status = @import("../status.zig");
const channels = @import("channels.zig");
const placement = @import("placement.zig");

const Error = status.Error;
const assert = std.debug.assert;

/// Jobs alive at once (queued, running, or completed and not yet taken by the waiter). A
/// bound on memory: TypeScript keeps a pinned call per pending forward, bounded the same way
/// (interpreter/call.zig `max_pinned_calls`).
pub const max_live_jobs: usize = 1 << 16;
/// Workers at most (settings.zig `max_threads`).
pub const max_workers: u32 = 1024;
const worker_stack_bytes: usize = 16 << 20;
/// Pause instructions a worker spins for its next job after finishing one, and the waiter
/// for the next completion before it sleeps (≈ 10–40 µs, as the inter-op pool's idle spin):
/// a caller that awaits one forward and then starts the next hands it over in that window,
/// without the two futex wake-ups a sleep would cost. Bounded: then they sleep.
const spin_limit = 512;

/// An intrusive unit of work: the owner embeds it and recovers itself with @fieldParentPtr.
pub const Job = struct {
    /// Link in the run queue, owned by the pool while queued.
    next: ?*Job = null,
    /// Link in the completion queue (completion_queue.zig's Node contract).
    completion_next: ?*Job = null,
    /// What the waiter receives once the job has run, and the queue (its channel's) it goes to.
    watch_token: u64 = 0,
    queue: *channels.Queues(Job, max_live_jobs).Queue = undefined,
    /// Runs the job on a worker thread; it must not fail (it records its own outcome).
    run_fn: *const fn (job: *Job) void,
    /// Called once the waiter has taken the token: the owner may reuse the job.
    release_fn: *const fn (job: *Job) void,

    pub fn release(job: *Job) void {
        job.release_fn(job);
    }
};

/// How many workers may run jobs at once; read on every submit and by idle workers.
pub const LimitFn = *const fn () u32;

pub const Pool = struct {
    limit_fn: LimitFn,
    mutex: std.Thread.Mutex = .{},
    /// Signalled when a job is queued or the limit or shutdown changes (idle workers).
    work: std.Thread.Condition = .{},
    /// Signalled when a worker exits (deinit waits for all of them).
    exited: std.Thread.Condition = .{},
    head: ?*Job = null,
    tail: ?*Job = null,
    queued: usize = 0,
    /// `queued`, readable without the lock by a spinning worker. Monotonic: the mutex orders
    /// the queue itself; the hint only ends a spin early.
    queued_hint: std.atomic.Value(usize) = .init(0),
    /// Workers spinning for their next job (unlocked, not idle): a submit lets them take it
    /// instead of starting another worker.
    spinning: u32 = 0,
    /// Jobs submitted and not yet released by the waiter (≤ max_live_jobs).
    live: usize = 0,
    /// Worker threads alive, and how many of them sleep waiting for work.
    workers: u32 = 0,
    idle: u32 = 0,
    /// Jobs running now, and the most that ever ran at once (tests check the bound).
    running: u32 = 0,
    running_peak: u32 = 0,
    shutting_down: bool = false,
    /// The completion queue of each channel (channels.zig), created on its first submit.
    completions: channels.Queues(Job, max_live_jobs) = .{},

    /// Queues `job`, whose token will come out of `channel`, and makes sure a worker will
    /// run it.
    pub fn submit(pool: *Pool, job: *Job, channel: u32, token: u64) Error!void {
        job.queue = try pool.completions.get(channel);
        job.watch_token = token;
        job.next = null;
        var start_worker = false;
        {
            pool.mutex.lock();
            defer pool.mutex.unlock();
            if (pool.shutting_down) return status.fail(error.InvalidArgument, "the inference pool is shutting down", .{});
            if (pool.live >= max_live_jobs) {
                return status.fail(error.TooLarge, "{d} forward calls are pending, the most Spindle holds at once; await some before starting more", .{max_live_jobs});
            }
            if (pool.tail) |tail| tail.next = job else pool.head = job;
            pool.tail = job;
            pool.queued += 1;
            pool.queued_hint.store(pool.queued, .monotonic);
            pool.live += 1;
            // Wake a sleeping worker for it, and start another while under the limit when
            // more jobs wait than workers can take them (sleeping ones count until they have
            // woken, so a burst of submits starts workers up to the limit).
            if (pool.idle > 0) pool.work.signal();
            start_worker = pool.queued > pool.idle + pool.spinning and pool.workers < pool.limit();
            if (start_worker) pool.workers += 1;
        }
        if (!start_worker) return;
        const thread = std.Thread.spawn(.{ .stack_size = worker_stack_bytes }, workerMain, .{pool}) catch {
            pool.mutex.lock();
            defer pool.mutex.unlock();
            pool.workers -= 1;
            if (pool.workers > 0) return; // a running worker takes the job when it is done
            // No worker can run it: take the job back out (it is the only one queued, since
            // any earlier job would have a worker) and fail the submit.
            assert(pool.head == job and pool.tail == job);
            pool.head = null;
            pool.tail = null;
            pool.queued -= 1;
            pool.queued_hint.store(pool.queued, .monotonic);
            pool.live -= 1;
            return status.fail(error.OutOfMemory, "could not start an inference thread", .{});
        };
        thread.detach();
    }

    /// The limit, clamped to 1…max_workers.
    fn limit(pool: *const Pool) u32 {
        return std.math.clamp(pool.limit_fn(), 1, max_workers);
    }

    /// Wakes idle workers after the limit changed: a raised limit may need more workers (the
    /// next submit starts them), a lowered one lets extra workers exit.
    pub fn limitChanged(pool: *Pool) void {
        pool.mutex.lock();
        defer pool.mutex.unlock();
        pool.work.broadcast();
        // Queued jobs may now run on more workers: start what the new limit allows.
        while (pool.queued > pool.idle and pool.workers < pool.limit()) {
            const thread = std.Thread.spawn(.{ .stack_size = worker_stack_bytes }, workerMain, .{pool}) catch break;
            thread.detach();
            pool.workers += 1;
        }
    }

    fn workerMain(pool: *Pool) void {
        pool.mutex.lock();
        var may_spin = false;
        while (true) {
            // Over the limit (it was lowered) or shutting down with nothing left: exit.
            if (pool.workers > pool.limit() or (pool.shutting_down and pool.head == null)) break;
            const job = pool.head orelse {
                if (may_spin) {
                    // Right after a job: spin a little for the next one, then look again.
                    may_spin = false;
                    pool.spinning += 1;
                    pool.mutex.unlock();
                    var spins: u32 = 0;
                    while (spins < spin_limit and pool.queued_hint.load(.monotonic) == 0) : (spins += 1) {
                        std.atomic.spinLoopHint();
                    }
                    pool.mutex.lock();
                    pool.spinning -= 1;
                    continue;
                }
                pool.idle += 1;
                pool.work.wait(&pool.mutex);
                pool.idle -= 1;
                continue;
            };
            may_spin = true;
            pool.head = job.next;
            if (pool.head == null) pool.tail = null;
            pool.queued -= 1;
            pool.queued_hint.store(pool.queued, .monotonic);
            pool.running += 1;
            pool.running_peak = @max(pool.running_peak, pool.running);
            pool.mutex.unlock();
            // Read before the run: the job may be reused once its token is taken.
            const queue = job.queue;
            placement.jobStarted();
            job.run_fn(job);
            placement.jobFinished();
            pool.mutex.lock();
            pool.running -= 1;
            // The completion queue holds the job until the waiter takes its token, then
            // releases it (Job.release). Pushed under the pool's mutex (the queue's own lock
            // nests inside it, never the other way round), so that a waiter that has the
            // token sees the run counted as over.
            queue.push(job);
        }
        pool.workers -= 1;
        // A submit may have woken this worker for a job it now leaves: pass the wake-up on
        // (the limit can drop without limitChanged, as when setNumThreads changes the
        // default; another worker remains, since only workers over the limit exit).
        if (pool.head != null) pool.work.signal();
        pool.exited.broadcast();
        pool.mutex.unlock();
    }

    /// Blocks until some jobs completed (or the timeout passes, or interrupt()), copies their
    /// tokens into `tokens` and returns how many.
    pub fn wait(pool: *Pool, channel: u32, tokens: []u64, timeout_ns: u64) Error!usize {
        const queue = try pool.completions.get(channel);
        const count = queue.waitSpinning(tokens, timeout_ns, spin_limit);
        pool.forget(count);
        return count;
    }

    /// Like wait() without blocking.
    pub fn poll(pool: *Pool, channel: u32, tokens: []u64) Error!usize {
        const queue = try pool.completions.get(channel);
        const count = queue.poll(tokens);
        pool.forget(count);
        return count;
    }

    fn forget(pool: *Pool, count: usize) void {
        if (count == 0) return;
        pool.mutex.lock();
        defer pool.mutex.unlock();
        assert(pool.live >= count);
        pool.live -= count;
    }

    pub fn interrupt(pool: *Pool, channel: u32) Error!void {
        (try pool.completions.get(channel)).interrupt();
    }

    /// Runs every queued job, then stops the workers and waits for them to exit. Completed
    /// jobs stay in the completion queue for wait()/poll().
    pub fn deinit(pool: *Pool) void {
        pool.mutex.lock();
        defer pool.mutex.unlock();
        pool.shutting_down = true;
        pool.work.broadcast();
        while (pool.workers > 0) pool.exited.wait(&pool.mutex);
        assert(pool.head == null);
        pool.shutting_down = false;
    }

    /// Stops the workers and frees the completion queues (tests: a process-wide pool lives
    /// as long as the process). Every token must have been taken.
    pub fn freeChannels(pool: *Pool) void {
        pool.deinit();
        pool.completions.deinit();
    }

    /// Whether calls wait in the queue: every worker the limit allows is busy with one, so
    /// the cores are taken by requests. A hint (a Monotonic load of `queued_hint`, which the
    /// queue's updates store under the mutex): it orders nothing, a stale answer only picks
    /// the other, equally correct, way to run a fork (interpreter/execute.zig).
    pub fn saturated(pool: *Pool) bool {
        return pool.queued_hint.load(.monotonic) > 0;
    }

    /// Workers alive, running jobs, queued jobs (diagnostics and tests).
    pub fn load(pool: *Pool) struct { workers: u32, idle: u32, running: u32, queued: usize } {
        pool.mutex.lock();
        defer pool.mutex.unlock();
        return .{ .workers = pool.workers, .idle = pool.idle, .running = pool.running, .queued = pool.queued };
    }
};

// ---------------------------------------------------------------------------------------
// Tests

const testing = std.testing;
const Atomic = std.atomic.Value;

var test_limit: Atomic(u32) = .init(2);

fn testLimit() u32 {
    // Monotonic: the tests change the limit between phases, never racing a decision on it.
    return test_limit.load(.monotonic);
}

const TestJob = struct {
    job: Job = .{ .run_fn = run, .release_fn = release },
    concurrent: *Atomic(u32),
    peak: *Atomic(u32),
    ran: bool = false,
    released: bool = false,

    fn run(job: *Job) void {
        const self: *TestJob = @fieldParentPtr("job", job);
        // The counters only measure overlap; acq_rel keeps the increments of concurrent
        // jobs in one order, so the peak seen is a peak that happened.
        const now = self.concurrent.fetchAdd(1, .acq_rel) + 1;
        _ = self.peak.fetchMax(now, .acq_rel);
        std.Thread.sleep(200 * std.time.ns_per_us);
        _ = self.concurrent.fetchSub(1, .acq_rel);
        self.ran = true;
    }

    fn release(job: *Job) void {
        const self: *TestJob = @fieldParentPtr("job", job);
        self.released = true;
    }
};

/// `count` test jobs sharing the overlap counters in `counters`.
fn testJobs(comptime count: usize, counters: *Counters) [count]TestJob {
    var jobs: [count]TestJob = undefined;
    for (&jobs) |*job| job.* = .{ .concurrent = &counters.concurrent, .peak = &counters.peak };
    return jobs;
}

/// How many test jobs run at once, and the most that ever did.
const Counters = struct {
    concurrent: Atomic(u32) = .init(0),
    peak: Atomic(u32) = .init(0),
};

fn drainTokens(pool: *Pool, channel: u32, seen: []bool, expected: usize) !void {
    var tokens: [16]u64 = undefined;
    var received: usize = 0;
    while (received < expected) {
        const count = try pool.wait(channel, &tokens, 5 * std.time.ns_per_s);
        try testing.expect(count > 0); // five seconds without a completion: a lost job
        for (tokens[0..count]) |token| {
            try testing.expect(!seen[token]);
            seen[token] = true;
        }
        received += count;
    }
}

test "the inference pool runs every job once, at most `limit` at a time, from many submitters" {
    test_limit.store(2, .monotonic);
    var pool: Pool = .{ .limit_fn = testLimit };
    defer pool.freeChannels();
    const channel = try channels.open();
    var counters: Counters = .{};
    const job_count = 64;
    var jobs = testJobs(job_count, &counters);

    const Submitter = struct {
        fn main(p: *Pool, c: u32, batch: []TestJob, first_token: u64) void {
            for (batch, 0..) |*job, i| p.submit(&job.job, c, first_token + i) catch unreachable;
        }
    };
    var threads: [4]std.Thread = undefined;
    for (&threads, 0..) |*thread, t| {
        thread.* = try std.Thread.spawn(.{}, Submitter.main, .{ &pool, channel, jobs[t * 16 .. (t + 1) * 16], t * 16 });
    }
    for (threads) |thread| thread.join();

    var seen = [_]bool{false} ** job_count;
    try drainTokens(&pool, channel, &seen, job_count);
    for (jobs) |job| {
        try testing.expect(job.ran);
        try testing.expect(job.released);
    }
    try testing.expect(counters.peak.load(.acquire) <= 2);
    try testing.expect(pool.load().workers <= 2);
    try testing.expect(pool.running_peak <= 2);
}

test "a burst of submits from one thread starts workers up to the limit" {
    test_limit.store(4, .monotonic);
    var pool: Pool = .{ .limit_fn = testLimit };
    defer pool.freeChannels();
    const channel = try channels.open();
    var counters: Counters = .{};
    var jobs = testJobs(16, &counters);
    var seen = [_]bool{false} ** 16;
    // Warm: one worker, then asleep.
    try pool.submit(&jobs[0].job, channel, 0);
    try drainTokens(&pool, channel, &seen, 1);
    for (jobs[1..], 1..) |*job, i| try pool.submit(&job.job, channel, i);
    try drainTokens(&pool, channel, &seen, 15);
    try testing.expect(pool.load().workers > 1);
    try testing.expect(pool.load().workers <= 4);
}

test "the inference pool follows a raised and a lowered limit" {
    test_limit.store(1, .monotonic);
    var pool: Pool = .{ .limit_fn = testLimit };
    defer pool.freeChannels();
    const channel = try channels.open();
    var counters: Counters = .{};
    var jobs = testJobs(24, &counters);
    var seen = [_]bool{false} ** 24;

    for (jobs[0..8], 0..) |*job, i| try pool.submit(&job.job, channel, i);
    try drainTokens(&pool, channel, &seen, 8);
    try testing.expectEqual(@as(u32, 1), counters.peak.load(.acquire));

    test_limit.store(3, .monotonic);
    pool.limitChanged();
    for (jobs[8..24], 8..) |*job, i| try pool.submit(&job.job, channel, i);
    try drainTokens(&pool, channel, &seen, 16);
    try testing.expect(counters.peak.load(.acquire) <= 3);
    try testing.expect(pool.load().workers <= 3);

    // Lowered: idle workers over the limit exit once woken.
    test_limit.store(1, .monotonic);
    pool.limitChanged();
    var waited: u32 = 0;
    while (pool.load().workers > 1 and waited < 20_000) : (waited += 1) std.Thread.sleep(std.time.ns_per_ms);
    try testing.expectEqual(@as(u32, 1), pool.load().workers);
}

test "each channel gets only the tokens of its own jobs" {
    test_limit.store(2, .monotonic);
    var pool: Pool = .{ .limit_fn = testLimit };
    defer pool.freeChannels();
    const first = try channels.open();
    const second = try channels.open();
    try testing.expect(first != second);
    var counters: Counters = .{};
    var jobs = testJobs(16, &counters);
    // Interleaved: tokens below 100 go to `first`, from 100 on to `second`.
    for (&jobs, 0..) |*job, i| {
        if (i % 2 == 0) try pool.submit(&job.job, first, i) else try pool.submit(&job.job, second, 100 + i);
    }
    for ([_]u32{ first, second }) |channel| {
        var tokens: [16]u64 = undefined;
        var got: usize = 0;
        while (got < 8) {
            const count = try pool.wait(channel, tokens[got..], 5 * std.time.ns_per_s);
            try testing.expect(count > 0); // five seconds without a completion: a lost job
            for (tokens[got..][0..count]) |token| try testing.expectEqual(channel == second, token >= 100);
            got += count;
        }
        try testing.expectEqual(@as(usize, 0), try pool.poll(channel, &tokens));
    }
}

test "a worker leaving over a lowered limit passes a submit's wake-up on" {
    var watchdog: @import("watchdog.zig") = .{ .what = "inference pool lowered limit" };
    try watchdog.start(30);
    defer watchdog.stop();
    test_limit.store(2, .monotonic);
    var pool: Pool = .{ .limit_fn = testLimit };
    defer pool.freeChannels();
    const channel = try channels.open();
    var counters: Counters = .{};
    var jobs = testJobs(6, &counters);
    var seen = [_]bool{false} ** 6;
    // Two workers, both asleep. A submit starts the second worker only while the first has
    // not become free: on a loaded machine the first can finish its job and spin before the
    // test thread's next submit (seen in CI under ThreadSanitizer), so pairs are submitted
    // until the second worker exists.
    var rounds: usize = 0;
    while (pool.load().workers < 2) : (rounds += 1) {
        if (rounds == 1000) return error.TestUnexpectedResult;
        var pair = testJobs(2, &counters);
        var pair_seen = [_]bool{false} ** 2;
        for (&pair, 0..) |*job, i| try pool.submit(&job.job, channel, i);
        try drainTokens(&pool, channel, &pair_seen, 2);
    }
    // Both asleep: up to 20 s (the watchdog's 30 s bounds the test).
    const started = try std.time.Instant.now();
    while (pool.load().workers != 2 or pool.load().idle != 2) {
        if ((try std.time.Instant.now()).since(started) > 20 * std.time.ns_per_s) return error.TestUnexpectedResult;
        std.Thread.sleep(std.time.ns_per_ms);
    }
    // The limit drops with no limitChanged (setNumThreads moves the default like this): the
    // worker a submit wakes leaves, and the other must run the job, one at a time (a later
    // submit would wake the other worker anyway and hide a lost wake-up).
    test_limit.store(1, .monotonic);
    for (jobs[2..6], 2..) |*job, i| {
        try pool.submit(&job.job, channel, i);
        try drainTokens(&pool, channel, &seen, 1);
    }
}

test "the inference pool refuses jobs past its bound and while shutting down" {
    test_limit.store(1, .monotonic);
    var pool: Pool = .{ .limit_fn = testLimit };
    defer pool.freeChannels();
    const channel = try channels.open();
    pool.live = max_live_jobs; // as if that many forwards were pending
    var counters: Counters = .{};
    var job: TestJob = .{ .concurrent = &counters.concurrent, .peak = &counters.peak };
    try testing.expectError(error.TooLarge, pool.submit(&job.job, channel, 1));
    pool.live = 0;
    try testing.expectError(error.InvalidArgument, pool.submit(&job.job, channel + 1, 1)); // never opened
    pool.shutting_down = true;
    try testing.expectError(error.InvalidArgument, pool.submit(&job.job, channel, 1));
    pool.shutting_down = false;
    try testing.expect(!job.ran);
    var tokens: [1]u64 = undefined;
    try testing.expectError(error.InvalidArgument, pool.poll(channel + 1, &tokens));
}
