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
//! one) and sleep on a condition variable when the queue is empty, after a bounded spin (see
//! worker_spin_ns and awaitCompletion). Lowering the limit lets running jobs finish; workers
//! over the limit then exit.
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
/// for the next completion before it sleeps, when no CPU is spare for the longer spins below
/// (≈ 15 µs at the ~30 ns a pause takes on Zen 5, as the inter-op pool's idle spin): a caller
/// that awaits a short forward and then starts the next hands it over in that window,
/// without the two futex wake-ups a sleep would cost. Bounded: then they sleep.
const spin_limit = 512;
/// With a CPU spare (spareCpuLocked), a worker that finished a job spins this long for the
/// next one before it sleeps. The caller's turnaround (the waiter's return, the JavaScript
/// thread woken to settle the promise, the next `forward` submitted) takes 50–100 µs on a
/// virtual machine, where waking a sleeping thread on an idle CPU costs 35–50 µs (a
/// condition-variable ping-pong between two threads: 67 µs a round trip on the 2-core
/// Zen 5 VM): with only the short spin above, each forward of a 0.3 ms model paid two such
/// wake-ups on top of the JavaScript thread's own.
const worker_spin_ns: u64 = 250 * std.time.ns_per_us;
/// How long past the predicted end a spinning waiter keeps spinning (the prediction is a
/// moving average; a job may run long), and the longest spin of one wait in all.
const waiter_spin_past_ns: u64 = 200 * std.time.ns_per_us;
const waiter_spin_max_ns: u64 = 2 * std.time.ns_per_ms;
/// A waiter whose channel's lone job is predicted (Pool.typical_ns) to end later than its
/// lead sleeps until that lead before the end, then spins (the waiter on its tokio thread,
/// awaitCompletion) or hands over to the JavaScript thread, which spins (waitOrWake,
/// spinForCompletion). The leads are measured, not assumed: a timed sleep wakes late by
/// Pool.sleep_late_ns (on the 2-core Firecracker VM, which does not poll before halting
/// an idle CPU, nanosleep of 20–500 µs overshoots by 87–103 µs at the median, 100–115 µs
/// at p90), and the JavaScript thread takes Pool.javascript_wake_ns to run after the
/// waiter returns; lead_margin_ns covers their spread. Both start at these guesses.
const lead_margin_ns: u64 = 30 * std.time.ns_per_us;
const sleep_late_guess_ns: u64 = 100 * std.time.ns_per_us;
const javascript_wake_guess_ns: u64 = 50 * std.time.ns_per_us;
/// One sample of either latency counts at most this much (a preempted thread's outlier).
const latency_sample_max_ns: u64 = std.time.ns_per_ms;
/// spinForCompletion spins only for a job predicted to end within this, and at most this
/// long past the prediction: the JavaScript thread's event loop waits meanwhile.
const javascript_spin_ns: u64 = 200 * std.time.ns_per_us;

/// A quarter of each new sample: follows a change within a few samples.
fn movingAverage(average: u64, sample: u64) u64 {
    return if (average == 0) sample else average - average / 4 + sample / 4;
}

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
    /// The threads one running job keeps busy (its intra-op team); null counts 1.
    threads_per_job_fn: ?LimitFn = null,
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
    /// Waiters spinning for a completion now (awaitCompletion).
    waiters_spinning: u32 = 0,
    /// Moving average of how long jobs ran (ns; 0 before the first), and when the latest
    /// job started: the waiter's prediction of the next completion.
    typical_ns: u64 = 0,
    latest_start: ?std.time.Instant = null,
    /// Moving averages of how late a waiter's timed sleep wakes and how long the JavaScript
    /// thread takes to run after waitOrWake returned early (see lead_margin_ns), and when
    /// that return was.
    sleep_late_ns: u64 = sleep_late_guess_ns,
    javascript_wake_ns: u64 = javascript_wake_guess_ns,
    early_return: ?std.time.Instant = null,
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
                    // Right after a job: spin for the next one (long while a CPU is spare,
                    // else briefly), then look again.
                    may_spin = false;
                    const spare = pool.spareCpuLocked(.worker);
                    pool.spinning += 1;
                    pool.mutex.unlock();
                    if (spare) spinFor(&pool.queued_hint, worker_spin_ns) else spinCount(&pool.queued_hint, spin_limit);
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
            const started = std.time.Instant.now() catch null;
            if (started != null) pool.latest_start = started;
            pool.mutex.unlock();
            // Read before the run: the job may be reused once its token is taken.
            const queue = job.queue;
            placement.jobStarted();
            job.run_fn(job);
            placement.jobFinished();
            const finished = std.time.Instant.now() catch null;
            pool.mutex.lock();
            pool.running -= 1;
            if (started != null and finished != null) {
                const took = finished.?.since(started.?);
                pool.typical_ns = movingAverage(pool.typical_ns, took);
            }
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
        var timer = std.time.Timer.start() catch unreachable; // Linux always has a clock.
        if (tokens.len > 0) pool.awaitCompletion(queue, timeout_ns);
        const count = queue.wait(tokens, timeout_ns -| timer.read());
        pool.forget(count);
        return count;
    }

    /// wait() for the JavaScript waiter: may return 0 early, shortly before the predicted
    /// end of a lone running job (one running, none queued; once per job, as an overdue
    /// job gets none): the caller then calls spinForCompletion on its own thread.
    pub fn waitOrWake(pool: *Pool, channel: u32, tokens: []u64, timeout_ns: u64) Error!usize {
        const queue = try pool.completions.get(channel);
        if (tokens.len > 0 and queue.available.load(.monotonic) == 0) {
            if (pool.loneRemaining(.waiter)) |remaining| {
                pool.mutex.lock();
                const lead = pool.sleep_late_ns + pool.javascript_wake_ns + lead_margin_ns;
                pool.mutex.unlock();
                if (remaining > lead) pool.sleepTimed(queue, @min(remaining - lead, timeout_ns));
                if (remaining > 0 and queue.available.load(.monotonic) == 0) {
                    pool.mutex.lock();
                    pool.early_return = std.time.Instant.now() catch null;
                    pool.mutex.unlock();
                    return 0;
                }
            }
        }
        return pool.wait(channel, tokens, timeout_ns);
    }

    /// On the JavaScript thread, after waitOrWake returned 0: spins for a lone running job
    /// predicted to end within javascript_spin_ns (up to that long past the prediction)
    /// while a CPU is spare, then takes what is available without blocking.
    pub fn spinForCompletion(pool: *Pool, channel: u32, tokens: []u64) Error!usize {
        const queue = try pool.completions.get(channel);
        {
            pool.mutex.lock();
            defer pool.mutex.unlock();
            if (pool.early_return) |returned| {
                pool.early_return = null;
                if (std.time.Instant.now()) |now| {
                    pool.javascript_wake_ns = movingAverage(pool.javascript_wake_ns, @min(now.since(returned), latency_sample_max_ns));
                } else |_| {}
            }
        }
        if (tokens.len > 0 and queue.available.load(.monotonic) == 0) {
            if (pool.loneRemaining(.waiter)) |remaining| {
                if (remaining <= javascript_spin_ns) pool.spinCounted(queue, remaining + javascript_spin_ns);
            }
        }
        return pool.poll(channel, tokens);
    }

    /// Sleeps on `queue` for `ns` (a completion or an interrupt ends it sooner); a sleep
    /// that ran its course tells how late timed sleeps wake (sleep_late_ns).
    fn sleepTimed(pool: *Pool, queue: *CompletionQueue, ns: u64) void {
        const start = std.time.Instant.now() catch return;
        queue.sleepFor(ns);
        const now = std.time.Instant.now() catch return;
        const slept = now.since(start);
        if (slept < ns or queue.available.load(.monotonic) != 0) return; // woken, not timed out
        pool.mutex.lock();
        defer pool.mutex.unlock();
        pool.sleep_late_ns = movingAverage(pool.sleep_late_ns, @min(slept - ns, latency_sample_max_ns));
    }

    /// Spins for a completion on `queue` for at most `ns`, counted as a spinning waiter.
    fn spinCounted(pool: *Pool, queue: *CompletionQueue, ns: u64) void {
        pool.mutex.lock();
        pool.waiters_spinning += 1;
        pool.mutex.unlock();
        spinFor(&queue.available, ns);
        pool.mutex.lock();
        pool.waiters_spinning -= 1;
        pool.mutex.unlock();
    }

    /// The predicted time left (ns, 0 when overdue) of the only job running, when none is
    /// queued and `as` may spin (spareCpuLocked); null otherwise or before any prediction.
    /// An overdue job gets no early return (waitOrWake) and only one bounded spin. A lone job
    /// queued while none runs (submitted, not yet taken by a worker: the JavaScript waiter
    /// often asks right after the submit) is predicted to run its time from now; without
    /// this its waiter slept until the completion woke it, and `await forward` on cls at 1
    /// thread cost 67-80 µs more than forwardSync instead of 30.
    fn loneRemaining(pool: *Pool, as: SpinAs) ?u64 {
        pool.mutex.lock();
        defer pool.mutex.unlock();
        if (pool.typical_ns == 0) return null;
        // The queued job counts as running for the spare CPU: it will be, in a moment.
        if (pool.running == 0 and pool.queued == 1) return if (pool.spareCpuFor(as, 1)) pool.typical_ns else null;
        if (pool.running != 1 or pool.queued != 0 or !pool.spareCpuLocked(as)) return null;
        const start = pool.latest_start orelse return null;
        const now = std.time.Instant.now() catch return null;
        return pool.typical_ns -| now.since(start);
    }

    /// Before a waiter sleeps on its queue: while a lone job runs and a CPU is spare, it
    /// sleeps until shortly before the job's predicted end (a completion wakes it sooner)
    /// and then spins, so that a completion near the prediction is taken with no wake-up;
    /// otherwise it spins briefly (spin_limit). Spends at most `budget_ns`, and at most
    /// waiter_spin_max_ns spinning.
    fn awaitCompletion(pool: *Pool, queue: *CompletionQueue, budget_ns: u64) void {
        if (queue.available.load(.monotonic) != 0) return;
        var timer = std.time.Timer.start() catch unreachable; // Linux always has a clock.
        const remaining = pool.loneRemaining(.waiter) orelse {
            spinCount(&queue.available, spin_limit);
            return;
        };
        pool.mutex.lock();
        const lead = pool.sleep_late_ns + lead_margin_ns;
        pool.mutex.unlock();
        if (remaining > lead) {
            pool.sleepTimed(queue, @min(remaining - lead, budget_ns));
            if (queue.available.load(.monotonic) != 0) return;
            // Other jobs may have started meanwhile: spin only while a CPU is still spare.
            pool.mutex.lock();
            const spare = pool.spareCpuLocked(.waiter);
            pool.mutex.unlock();
            if (!spare) return;
        }
        const spin_ns = @min(@min(remaining, lead) + waiter_spin_past_ns, waiter_spin_max_ns);
        pool.spinCounted(queue, @min(spin_ns, budget_ns -| timer.read()));
    }

    /// Whether a worker (`as` .worker) or a waiter (.waiter) may spin without taking a CPU
    /// from a running job or from the thread it hands work to: the running jobs' threads,
    /// the spinning workers and the caller, plus one CPU for the JavaScript side (its
    /// thread, or its waiter while the thread sleeps; more when several waiters spin), fit
    /// in the CPUs. So on 2 CPUs, at 1 intra-op thread and one call at a time, both the
    /// waiter and the worker after its job spin; with a 2-thread team, or two jobs running,
    /// only the worker after its job. Under the mutex.
    fn spareCpuLocked(pool: *const Pool, as: SpinAs) bool {
        return pool.spareCpuFor(as, pool.running);
    }

    /// spareCpuLocked with `running` jobs running. Under the mutex.
    fn spareCpuFor(pool: *const Pool, as: SpinAs, running: u32) bool {
        const per_job: u64 = if (pool.threads_per_job_fn) |threads| @max(threads(), 1) else 1;
        const workers = @as(u64, running) * per_job + pool.spinning + @intFromBool(as == .worker);
        const javascript = @max(@as(u64, pool.waiters_spinning) + @intFromBool(as == .waiter), 1);
        return workers + javascript <= placement.cpuCount();
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

const CompletionQueue = channels.Queues(Job, max_live_jobs).Queue;
const SpinAs = enum { worker, waiter };

/// Spins until `hint` reads nonzero or `ns` pass (the clock read every 64 pauses).
/// Monotonic loads: the hint only ends the spin; the mutex the caller takes next orders
/// what it protects.
fn spinFor(hint: *const std.atomic.Value(usize), ns: u64) void {
    const start = std.time.Instant.now() catch return;
    while (true) {
        for (0..64) |_| {
            if (hint.load(.monotonic) != 0) return;
            std.atomic.spinLoopHint();
        }
        const now = std.time.Instant.now() catch return;
        if (now.since(start) >= ns) return;
    }
}

/// Spins until `hint` reads nonzero, at most `limit` pauses (Monotonic, as spinFor).
fn spinCount(hint: *const std.atomic.Value(usize), limit: u32) void {
    var spins: u32 = 0;
    while (spins < limit and hint.load(.monotonic) == 0) : (spins += 1) std.atomic.spinLoopHint();
}

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
    /// How long the job runs.
    sleep_ns: u64 = 200 * std.time.ns_per_us,
    ran: bool = false,
    released: bool = false,

    fn run(job: *Job) void {
        const self: *TestJob = @fieldParentPtr("job", job);
        // The counters only measure overlap; acq_rel keeps the increments of concurrent
        // jobs in one order, so the peak seen is a peak that happened.
        const now = self.concurrent.fetchAdd(1, .acq_rel) + 1;
        _ = self.peak.fetchMax(now, .acq_rel);
        std.Thread.sleep(self.sleep_ns);
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

test "a waiter predicting a running job's end gets its token, keeps to its timeout, hands over to the JavaScript thread, and spins only with a CPU spare" {
    test_limit.store(1, .monotonic);
    var pool: Pool = .{ .limit_fn = testLimit };
    defer pool.freeChannels();
    const channel = try channels.open();
    var counters: Counters = .{};
    // Jobs of 200 µs each: after the first, typical_ns predicts the next one's end.
    var jobs = testJobs(8, &counters);
    var seen = [_]bool{false} ** 8;
    for (&jobs, 0..) |*job, i| {
        try pool.submit(&job.job, channel, i);
        try drainTokens(&pool, channel, &seen, 1);
    }
    for (jobs) |job| try testing.expect(job.ran and job.released);
    pool.mutex.lock();
    const typical = pool.typical_ns;
    const spinners = pool.spinning + pool.waiters_spinning;
    pool.mutex.unlock();
    // Slept 200 µs each (at least; a loaded machine stretches it).
    try testing.expect(typical >= 200 * std.time.ns_per_us);
    try testing.expect(spinners <= 1); // the worker may still spin for a next job
    // A wait shorter than the running job returns empty, within its timeout (plus the
    // scheduler's slack), having slept, not spun, most of it.
    var long: TestJob = .{ .concurrent = &counters.concurrent, .peak = &counters.peak, .sleep_ns = 50 * std.time.ns_per_ms };
    try pool.submit(&long.job, channel, 100);
    var tokens: [4]u64 = undefined;
    var timer = try std.time.Timer.start();
    try testing.expectEqual(@as(usize, 0), try pool.wait(channel, &tokens, std.time.ns_per_ms));
    try testing.expect(timer.read() < 40 * std.time.ns_per_ms);
    try testing.expectEqual(@as(usize, 1), try pool.wait(channel, &tokens, 5 * std.time.ns_per_s));
    try testing.expectEqual(@as(u64, 100), tokens[0]);
    try testing.expect(long.ran);
    // The JavaScript waiter's path: predicted to run 50 ms, a lone job's waitOrWake sleeps
    // most of that, returns empty shortly before the end (when a CPU is spare: not on a
    // 1-CPU machine, where it waits as wait() does), and spinForCompletion or a later wait
    // takes the token, once.
    var predicted: TestJob = .{ .concurrent = &counters.concurrent, .peak = &counters.peak, .sleep_ns = 50 * std.time.ns_per_ms };
    pool.mutex.lock();
    pool.typical_ns = 50 * std.time.ns_per_ms;
    pool.mutex.unlock();
    try pool.submit(&predicted.job, channel, 200);
    timer.reset();
    var got = try pool.waitOrWake(channel, &tokens, 5 * std.time.ns_per_s);
    if (got == 0) {
        try testing.expect(placement.cpuCount() >= 2);
        try testing.expect(timer.read() >= 25 * std.time.ns_per_ms); // slept, did not spin
        got = try pool.spinForCompletion(channel, &tokens);
        if (got == 0) got = try pool.wait(channel, &tokens, 5 * std.time.ns_per_s);
    }
    try testing.expectEqual(@as(usize, 1), got);
    try testing.expectEqual(@as(u64, 200), tokens[0]);
    try testing.expect(predicted.ran);
    try testing.expectEqual(@as(usize, 0), try pool.poll(channel, &tokens));
    // No CPU is spare when each job's team fills the machine: the pool says so.
    pool.mutex.lock();
    defer pool.mutex.unlock();
    pool.threads_per_job_fn = struct {
        fn all() u32 {
            return placement.cpuCount();
        }
    }.all;
    pool.running = 1;
    defer pool.running = 0;
    try testing.expect(!pool.spareCpuLocked(.waiter));
}

test "a lone job queued while none runs is predicted to run its time from now, when a CPU is spare with it running" {
    var pool: Pool = .{ .limit_fn = testLimit };
    defer pool.freeChannels();
    pool.typical_ns = 300 * std.time.ns_per_us;
    pool.queued = 1;
    defer pool.queued = 0;
    // One thread per job: the job and the JavaScript side fit on 2 CPUs.
    if (placement.cpuCount() >= 2) {
        try testing.expectEqual(@as(?u64, 300 * std.time.ns_per_us), pool.loneRemaining(.waiter));
    } else {
        try testing.expectEqual(@as(?u64, null), pool.loneRemaining(.waiter));
    }
    // Two queued: no lone job. Before any prediction: none either.
    pool.queued = 2;
    try testing.expectEqual(@as(?u64, null), pool.loneRemaining(.waiter));
    pool.queued = 1;
    pool.typical_ns = 0;
    try testing.expectEqual(@as(?u64, null), pool.loneRemaining(.waiter));
    pool.typical_ns = 300 * std.time.ns_per_us;
    // A job whose team fills the machine leaves no CPU spare once it runs: no prediction.
    pool.threads_per_job_fn = struct {
        fn all() u32 {
            return placement.cpuCount();
        }
    }.all;
    try testing.expectEqual(@as(?u64, null), pool.loneRemaining(.waiter));
}
