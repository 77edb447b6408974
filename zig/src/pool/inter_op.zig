//! The inter-op pool: the worker threads that run forked tasks (threading spec §5). It
//! schedules intrusive tasks and knows nothing of what they compute: future.zig forks
//! futures onto it, and the FFI layer (exports.zig's OpTask) and the interpreter
//! (interpreter/execute.zig's GraphTask) fork through future.zig.
//!
//! Shape (after kprotty/zap): every worker owns a bounded deque of tasks (deque.zig); tasks
//! scheduled on a worker go to its own deque, tasks scheduled from any other thread (or
//! spilled from a full deque) go to the pool's injector queue (FIFO). An idle worker takes
//! from its deque, then the injector, then steals the oldest task of another worker. Idle
//! workers spin briefly, then sleep on the wake epoch (wake_epoch.zig); a schedule wakes at
//! most one sleeper, and none while some worker is already searching.
//!
//! Threads that wait on a future (future.zig) run tasks on top of their own stack. A Frame
//! counts them, at most max_frames deep, and remembers where the worker's deque stood when
//! the task began: helpOnce() then runs only tasks pushed above that mark, the subtree of
//! the task running now, the only tasks a waiting worker may safely help with.
//!
//! A task that a waiter claimed and ran inline stays queued until some thread pops it (its
//! run_fn then only drops what the queue holds: for a future, its node). So that a deep
//! fork tree run mostly inline does not keep one node per fork alive until its root
//! completes, claimed tasks (Task.is_claimed_fn) are popped early from the newest end of
//! the queues: from a worker's deque after each inline run (dropClaimed, down to the mark),
//! and from the injector's tail whenever a task is pushed there (all but its head, which
//! the next pop takes anyway). Both stop at the first task still to run, so the cost is one
//! look at the newest task.
//!
//! Placement: schedule() records the scheduling thread's CPU in the task. A worker that
//! picks a task scheduled by another thread up on that same CPU (the scheduler wakes it
//! beside its forker when the other CPUs are busy) moves to another CPU before running it
//! (runPickedUp, placement.zig): beside the forker the two would only take turns.
//!
//! Public surface: Task, init, deinit, schedule, threadCount and the process-wide global();
//! for waiters Frame, helpOnce, dropClaimed and onWorkerThread.
const std = @import("std");
const builtin = @import("builtin");
const status = @import("../status.zig");
const settings = @import("../settings.zig");
const WakeEpoch = @import("wake_epoch.zig");
const placement = @import("placement.zig");

const Error = status.Error;
const Atomic = std.atomic.Value;
const assert = std.debug.assert;
const allocator = std.heap.c_allocator;

const Pool = @This();

/// Tasks run on top of each other on one thread (inline runs and helping). Past it a waiter
/// sleeps instead of running more tasks, so the stack stays bounded. Each frame has
/// worker_stack_bytes / max_frames = 32 KiB of worker stack, far more than a frame uses.
const max_frames: u32 = 512;
const worker_stack_bytes: usize = 16 << 20;
/// Per-worker deque slots; a fan-out beyond it spills to the injector.
const deque_capacity = 256;
/// Spin iterations before an idle worker sleeps: long enough to catch the next task of a
/// fork loop, short enough not to burn a shared core (≈ 10–40 µs).
const spin_limit_idle = 512;

comptime {
    assert(worker_stack_bytes / max_frames >= 16 << 10);
}

workers: []Worker,
injector: Injector = .{},
/// Tasks in the injector and all deques, counted before the push and after the pop, so it
/// is never below the true count. Idle workers poll it instead of locking queues.
pending: Atomic(usize) = .init(0),
/// Workers spinning in idle(); a schedule wakes nobody while one of them will find it.
searching: Atomic(u32) = .init(0),
/// Workers asleep (or about to sleep) on wake_epoch.
sleepers: Atomic(u32) = .init(0),
/// Where idle workers sleep; bumped to wake them (wake_epoch.zig).
wake_epoch: WakeEpoch = .{},
shutting_down: Atomic(bool) = .init(false),

/// An intrusive unit of work. The pool calls `run_fn` exactly once per `schedule`; the
/// owner embeds the task and recovers itself with @fieldParentPtr.
pub const Task = struct {
    /// Link in the injector; owned by whichever list holds the task.
    next: ?*Task = null,
    /// Back link in the injector, whose tail drops claimed tasks (Injector.push).
    prev: ?*Task = null,
    run_fn: *const fn (task: *Task) void,
    /// Whether a waiter has claimed the queued task (run it inline), so that its run_fn
    /// would only drop what the queue holds: the pool then pops it early (module comment).
    /// Once true it stays true; a stale false only leaves the task queued. Null: never.
    is_claimed_fn: ?*const fn (task: *const Task) bool = null,
    /// The CPU of the thread that scheduled the task, for claimable ones (placement.zig): a worker
    /// that picks the task up on that CPU runs it elsewhere (runPickedUp). Written before
    /// the push, read after the pop: the queue's mutex orders the two.
    origin_cpu: u32 = placement.cpu_unknown,

    fn isClaimed(_: void, task: *Task) bool {
        const is_claimed = task.is_claimed_fn orelse return false;
        return is_claimed(task);
    }
};

const Deque = @import("deque.zig").Deque(*Task, deque_capacity);

/// The worker this thread is, if it is one; tasks scheduled here go to its deque.
threadlocal var current_worker: ?*Worker = null;
/// Tasks running on top of each other on this thread (bounded by max_frames).
threadlocal var frames: u32 = 0;

/// Starts a pool with `thread_count` workers. The process-wide pool is `global()`; tests
/// and benchmarks create private ones to choose the size.
pub fn init(thread_count: u32) Error!*Pool {
    assert(thread_count >= 1);
    assert(thread_count <= settings.max_threads);
    const pool = allocator.create(Pool) catch return error.OutOfMemory;
    errdefer allocator.destroy(pool);
    const workers = allocator.alloc(Worker, thread_count) catch return error.OutOfMemory;
    errdefer allocator.free(workers);
    pool.* = .{ .workers = workers };
    for (workers, 0..) |*worker, index| worker.* = .{ .pool = pool, .index = @intCast(index) };
    for (workers, 0..) |*worker, started| {
        worker.thread = std.Thread.spawn(.{ .stack_size = worker_stack_bytes }, workerMain, .{worker}) catch |err| {
            pool.stopAndJoin(workers[0..started]);
            return status.fail(error.Internal, "inter-op pool: could not start thread {d}: {s}", .{ started, @errorName(err) });
        };
        var name_buffer: [std.Thread.max_name_len]u8 = undefined;
        const name = std.fmt.bufPrint(&name_buffer, "spindle-interop{d}", .{started}) catch "spindle-interop";
        worker.thread.setName(name) catch {}; // Names only help debuggers.
    }
    return pool;
}

/// Stops the workers once every queued task has run, and frees the pool. The caller
/// guarantees no thread schedules into this pool any more.
pub fn deinit(pool: *Pool) void {
    pool.stopAndJoin(pool.workers);
    // Monotonic: the joins ordered every worker's updates before this load.
    assert(pool.pending.load(.monotonic) == 0);
    assert(pool.injector.head == null);
    allocator.free(pool.workers);
    allocator.destroy(pool);
}

fn stopAndJoin(pool: *Pool, started: []Worker) void {
    // SeqCst: pairs with the SeqCst loads in idle(). The epoch's Release bump in wake()
    // also publishes it to a sleeper that observes the new epoch.
    pool.shutting_down.store(true, .seq_cst);
    pool.wake(std.math.maxInt(u32));
    for (started) |*worker| worker.thread.join();
}

pub fn threadCount(pool: *const Pool) u32 {
    return @intCast(pool.workers.len);
}

/// Queues `task` to run once on some thread of the pool.
pub fn schedule(pool: *Pool, task: *Task) void {
    // SeqCst, before the push: Dekker pairing with idle(), which increments `sleepers` and
    // then loads `pending`; one of the two sides sees the other, so a worker never sleeps
    // through this task. Counting first also keeps `pending` from underflowing.
    _ = pool.pending.fetchAdd(1, .seq_cst);
    // Only claimable tasks can move (runPickedUp); other tasks skip the lookup.
    if (task.is_claimed_fn != null) task.origin_cpu = placement.currentCpu();
    const pushed_locally = if (current_worker) |worker| worker.pool == pool and worker.deque.push(task) else false;
    const claimed = if (pushed_locally) null else pool.injector.push(task);
    pool.notify();
    pool.drop(claimed); // After the wake-up: nothing waits on these releases.
}

/// Takes claimed tasks, popped early and linked by `next`, off the books: each run_fn only
/// drops the queue's hold (a future's runQueued() does not run a claimed task).
fn drop(pool: *Pool, claimed: ?*Task) void {
    var next = claimed;
    while (next) |task| {
        next = task.next; // Read first: run_fn may free the task.
        task.next = null;
        pool.took();
        task.run_fn(task);
    }
}

/// Wakes one sleeping worker for a newly queued task, unless a searching worker will find
/// it anyway: one wake-up at a time keeps a fork loop out of the kernel.
fn notify(pool: *Pool) void {
    // SeqCst loads pair with the SeqCst updates in idle(): a searcher decrements `searching`
    // and only then checks `pending`, so seeing it here means it will see our task;
    // `sleepers` is the Dekker pairing described in schedule().
    if (pool.searching.load(.seq_cst) > 0) return;
    if (pool.sleepers.load(.seq_cst) == 0) return;
    pool.wake(1);
}

/// Wakes `count` sleepers once a task or the shutdown flag was published (the epoch's
/// Release bump makes both visible to a sleeper that observes the new epoch).
fn wake(pool: *Pool, count: u32) void {
    pool.wake_epoch.wake(count);
}

/// Where findTask() took a task from: a task from the worker's own deque was scheduled by
/// this thread, which is not running beside it.
const Source = enum { own_deque, elsewhere };

const Found = struct { task: *Task, source: Source };

/// A queued task for an idle worker: its own deque, the injector, then another worker's
/// oldest task.
fn findTask(pool: *Pool, worker: *Worker) ?Found {
    // Monotonic: only a hint to skip locking empty queues; the queues' mutexes order the
    // tasks themselves.
    if (pool.pending.load(.monotonic) == 0) return null;
    const found: Found = if (worker.deque.popAbove(worker.mark)) |task|
        .{ .task = task, .source = .own_deque }
    else if (pool.injector.pop() orelse pool.steal(worker)) |task|
        .{ .task = task, .source = .elsewhere }
    else
        return null;
    pool.took();
    return found;
}

fn steal(pool: *Pool, thief: *Worker) ?*Task {
    const count = pool.workers.len;
    for (1..count) |offset| {
        const victim = &pool.workers[(thief.index + offset) % count];
        if (victim.deque.steal()) |task| return task;
    }
    return null;
}

fn took(pool: *Pool) void {
    // Monotonic: a count, decremented after the pop that the queue's mutex ordered.
    const previous = pool.pending.fetchSub(1, .monotonic);
    assert(previous > 0);
}

/// Spins, then sleeps until work may be queued. False when the pool is shutting down and
/// nothing is left to run.
///
/// Every operation on searching, sleepers and pending here is SeqCst: together with the
/// SeqCst operations in schedule() and notify() they form a Dekker handshake (this side
/// writes its counter then reads `pending`; a forker writes `pending` then reads the
/// counters), which needs a single total order: at least one side sees the other.
fn idle(pool: *Pool) bool {
    // Pairs with notify()'s load of `searching`: while we count, forkers skip the wake.
    _ = pool.searching.fetchAdd(1, .seq_cst);
    var spins: u32 = 0;
    while (spins < spin_limit_idle) : (spins += 1) {
        // Pairs with schedule()'s increment: a task queued from now on is seen here.
        if (pool.pending.load(.seq_cst) > 0) {
            // Pairs with notify(): after this, forkers wake sleepers again.
            const last_searcher = pool.searching.fetchSub(1, .seq_cst) == 1;
            // More work than this worker will take: wake the next one, so a burst of forks
            // ramps up the pool one worker at a time. (Same handshake as notify.)
            if (last_searcher and pool.pending.load(.seq_cst) > 1 and pool.sleepers.load(.seq_cst) > 0) pool.wake(1);
            return true;
        }
        // Monotonic: only ends spinning early; the SeqCst load below decides.
        if (pool.shutting_down.load(.monotonic)) break;
        std.atomic.spinLoopHint();
    }
    // Pairs with notify()'s load: a forker that sees zero searchers will wake sleepers, and
    // we re-check `pending` below after announcing ourselves as a sleeper.
    _ = pool.searching.fetchSub(1, .seq_cst);
    // Observed before the checks below, so a wake after them changes the value sleep()
    // compares; its Acquire pairs with wake()'s Release bump.
    const epoch = pool.wake_epoch.observe();
    // Pairs with notify()'s load of `sleepers` (the Dekker handshake).
    _ = pool.sleepers.fetchAdd(1, .seq_cst);
    // Pairs with the SeqCst store in stopAndJoin().
    const shutting_down = pool.shutting_down.load(.seq_cst);
    // Pairs with schedule()'s increment (the Dekker handshake).
    if (!shutting_down and pool.pending.load(.seq_cst) == 0) pool.wake_epoch.sleep(epoch);
    // Pairs with notify()'s load: fewer sleepers, fewer needless wake calls.
    _ = pool.sleepers.fetchSub(1, .seq_cst);
    // Both pair as above: exit only once shut down with nothing left queued.
    return !(pool.shutting_down.load(.seq_cst) and pool.pending.load(.seq_cst) == 0);
}

const Worker = struct {
    pool: *Pool,
    index: u32,
    thread: std.Thread = undefined,
    deque: Deque = .{},
    /// Deque position where the innermost task running on this worker started: tasks at or
    /// above it were scheduled by that task's subtree, the only ones it may help with.
    /// Read and written by this worker's thread only.
    mark: u64 = 0,
};

fn workerMain(worker: *Worker) void {
    current_worker = worker;
    defer current_worker = null;
    const pool = worker.pool;
    while (true) {
        if (pool.findTask(worker)) |found| {
            runPickedUp(found);
            continue;
        }
        if (!pool.idle()) return;
    }
}

/// Runs a task an idle worker found. One scheduled by another thread on this very CPU
/// (often its forker, which the scheduler woke this worker beside while the other CPUs
/// were busy) would only take turns with that thread: the worker first moves to another
/// CPU, and then runs it unless a waiter claimed it meanwhile (future.zig rule 1: the
/// forker runs it inline once it waits). Measured on builtin:example (two 0.5 ms mm's, one
/// forked) at 1 intra-op thread on 2 loaded cores: about one fork in ten woke its worker
/// on the forker's CPU, each such request taking two mm's time instead of one.
fn runPickedUp(found: Found) void {
    const task = found.task;
    const cpu = placement.currentCpu();
    // Only tasks a waiter can claim: another task moved off its forker's CPU could wait
    // for a CPU longer than running it here would take.
    // Nor when this process's inference jobs already fill every CPU: the move would only
    // trade places with another of them, for three system calls and a migration
    // (builtin:transformer, 4 concurrent requests on 2 CPUs: 2-3% of throughput).
    const move = found.source == .elsewhere and task.is_claimed_fn != null and
        placement.sharesCpu(cpu, task.origin_cpu) and !Task.isClaimed({}, task) and
        !placement.cpusFull();
    if (!move) return runTask(task);
    const saved = placement.moveOff(cpu) orelse return runTask(task);
    // Given back at once: the thread stays on the CPU it moved to (allowed again), and
    // the task runs with the affinity it had.
    placement.restore(&saved);
    runTask(task);
}

/// Bookkeeping around every task run on a thread: the frame count, and the worker's mark so
/// that helping inside this task stays within its subtree.
pub const Frame = struct {
    worker: ?*Worker,
    saved_mark: u64,

    /// Enters a frame to run a task on top of this thread's stack; null past max_frames,
    /// where the caller must not run one (a waiter sleeps instead).
    pub fn enter() ?Frame {
        if (frames >= max_frames) return null;
        frames += 1;
        const worker = current_worker;
        var saved_mark: u64 = 0;
        if (worker) |w| {
            saved_mark = w.mark;
            w.mark = w.deque.bottomPosition();
        }
        return .{ .worker = worker, .saved_mark = saved_mark };
    }

    pub fn leave(frame: Frame) void {
        assert(frames > 0);
        frames -= 1;
        if (frame.worker) |w| w.mark = frame.saved_mark;
    }
};

fn runTask(task: *Task) void {
    // Callers run tasks at frame 0 (workerMain) or below max_frames (helpOnce).
    const frame = Frame.enter() orelse unreachable;
    defer frame.leave();
    task.run_fn(task);
}

/// For a waiter on a pool worker: runs one task that the task running now (or its subtree)
/// scheduled on this worker's deque and nobody took yet. False when there is none, when
/// this thread is no worker, or past max_frames. Only this thread pushes to its deque, so
/// once this returns false nothing new to help with appears until it schedules again.
pub fn helpOnce() bool {
    const worker = current_worker orelse return false;
    if (frames >= max_frames) return false;
    const task = worker.deque.popAbove(worker.mark) orelse return false;
    worker.pool.took();
    runTask(task);
    return true;
}

/// For a waiter that ran a task inline and has left that task's frame: pops the claimed
/// tasks at the top of this worker's deque, down to the mark of the task running now. The
/// task just run, and whatever its subtree forked and ran inline itself, would otherwise
/// stay queued beneath the next forks. Does nothing on other threads (their claimed tasks
/// wait in the injector, whose pushes drop them).
pub fn dropClaimed() void {
    const worker = current_worker orelse return;
    while (worker.deque.popAboveIf(worker.mark, {}, Task.isClaimed)) |task| {
        task.next = null;
        worker.pool.drop(task);
    }
}

/// Whether this thread is a worker of some inter-op pool.
pub fn onWorkerThread() bool {
    return current_worker != null;
}

/// FIFO of tasks scheduled from outside the pool (or spilled from a full deque).
const Injector = struct {
    mutex: std.Thread.Mutex = .{},
    head: ?*Task = null,
    tail: ?*Task = null,

    /// Queues `task` at the tail, after unlinking the claimed tasks that end the queue
    /// (forks whose waiter ran them inline); returns those, linked by `next`, for
    /// Pool.drop to release outside the lock. The head stays even when claimed: the next
    /// pop takes it anyway, and a fork-then-wait loop from outside the pool leaves that
    /// release to an idle worker instead of adding it to every fork.
    fn push(injector: *Injector, task: *Task) ?*Task {
        injector.mutex.lock();
        defer injector.mutex.unlock();
        var claimed: ?*Task = null;
        while (injector.tail) |tail| {
            if (tail == injector.head or !Task.isClaimed({}, tail)) break;
            const new_tail = tail.prev.?; // Not the head, so not the first.
            new_tail.next = null;
            injector.tail = new_tail;
            tail.prev = null;
            tail.next = claimed;
            claimed = tail;
        }
        task.next = null;
        task.prev = injector.tail;
        if (injector.tail) |tail| tail.next = task else injector.head = task;
        injector.tail = task;
        return claimed;
    }

    fn pop(injector: *Injector) ?*Task {
        injector.mutex.lock();
        defer injector.mutex.unlock();
        const task = injector.head orelse return null;
        injector.head = task.next;
        if (injector.head) |head| head.prev = null else injector.tail = null;
        task.next = null;
        return task;
    }
};

// ---------------------------------------------------------------------------------------
// The process-wide pool.

var global_mutex: std.Thread.Mutex = .{};
var global_pool: Atomic(?*Pool) = .init(null);

/// The process-wide pool, started at the first fork with settings.startInterop() threads
/// (which freezes the inter-op thread count).
pub fn global() Error!*Pool {
    // Acquire pairs with the Release store in startGlobal(): the pool is initialised.
    if (global_pool.load(.acquire)) |pool| return pool;
    return startGlobal();
}

fn startGlobal() Error!*Pool {
    global_mutex.lock();
    defer global_mutex.unlock();
    // Monotonic: under the mutex, which orders it after any earlier start.
    if (global_pool.load(.monotonic)) |pool| return pool;
    const pool = try Pool.init(settings.startInterop());
    // Release pairs with the Acquire fast path in global().
    global_pool.store(pool, .release);
    return pool;
}

/// Test-only: stops the global pool so the next fork starts a new one with the current
/// settings. No other thread may be forking.
pub fn deinitGlobalForTesting() void {
    if (!builtin.is_test) @compileError("deinitGlobalForTesting is for tests only");
    global_mutex.lock();
    defer global_mutex.unlock();
    // Monotonic: under the mutex; the test runner forks from this thread only.
    const pool = global_pool.swap(null, .monotonic) orelse return;
    pool.deinit();
}

/// Test-only: waits (up to 20 s) until the global pool, if started, holds no task: none
/// queued and every worker idle. A worker may still hold a task an earlier test dropped
/// (runPickedUp moves it first, which takes the scheduler's time), and release it, or report
/// its error, in the middle of a later test's count: tests that count live futures or
/// unobserved errors settle the pool first.
pub fn quiesceGlobalForTesting() void {
    if (!builtin.is_test) @compileError("quiesceGlobalForTesting is for tests only");
    // Acquire pairs with the Release store in startGlobal().
    const pool = global_pool.load(.acquire) orelse return;
    const workers: u32 = @intCast(pool.workers.len);
    var attempts: u32 = 0;
    while (attempts < 20_000) : (attempts += 1) {
        // SeqCst, as idle() updates them: a worker counts itself in `searching` or
        // `sleepers` only inside idle(), holding no task. One moving between the two
        // counters is missed for a moment, which only prolongs the wait.
        const idle_workers = pool.searching.load(.seq_cst) + pool.sleepers.load(.seq_cst);
        if (pool.pending.load(.seq_cst) == 0 and idle_workers == workers) return;
        std.Thread.sleep(std.time.ns_per_ms);
    }
}

// ---------------------------------------------------------------------------------------
// Tests, on plain tasks; future.zig tests forks, waits and helping on top of the pool.

const testing = std.testing;

/// Sets `done` when it runs.
const Signal = struct {
    task: Task = .{ .run_fn = run },
    done: std.Thread.ResetEvent = .{},

    fn run(task: *Task) void {
        const signal: *Signal = @alignCast(@fieldParentPtr("task", task));
        signal.done.set();
    }
};

test "the global pool takes the inter-op setting and freezes it" {
    deinitGlobalForTesting();
    settings.resetForTesting();
    defer {
        deinitGlobalForTesting();
        settings.resetForTesting();
    }
    try settings.setNumInteropThreads(1);
    const pool = try global();
    var signal: Signal = .{};
    pool.schedule(&signal.task);
    signal.done.wait();
    try testing.expectEqual(@as(u32, 1), (try global()).threadCount());
    try testing.expectError(error.ThreadSettings, settings.setNumInteropThreads(2));
    var buffer: [256]u8 = undefined;
    try testing.expectEqualStrings(settings.interop_error_message, buffer[0..status.lastMessage(&buffer)]);
}

/// Outer tasks, scheduled from outside the pool, each schedule `children` inner tasks from
/// the worker that runs them.
const Fanned = struct {
    const outer_count = 100;
    const children = 10;
    const total = outer_count * (1 + children);

    pool: *Pool,
    nodes: [total]Node = undefined,
    /// AcqRel: the last increment sees every other run and publishes them to set().
    ran: Atomic(u32) = .init(0),
    finished: std.Thread.ResetEvent = .{},
    /// Inner tasks scheduled on a worker thread; Monotonic: read after `finished`.
    on_worker: Atomic(u32) = .init(0),

    const Node = struct {
        task: Task = .{ .run_fn = run },
        fanned: *Fanned,
        index: u32,
        /// Monotonic: read after `finished`.
        runs: Atomic(u32) = .init(0),

        fn run(task: *Task) void {
            const node: *Node = @alignCast(@fieldParentPtr("task", task));
            const fanned = node.fanned;
            _ = node.runs.fetchAdd(1, .monotonic);
            if (node.index < outer_count) {
                if (onWorkerThread()) _ = fanned.on_worker.fetchAdd(children, .monotonic);
                for (0..children) |child| fanned.pool.schedule(&fanned.nodes[outer_count + node.index * children + child].task);
            }
            if (fanned.ran.fetchAdd(1, .acq_rel) + 1 == total) fanned.finished.set();
        }
    };
};

test "tasks scheduled from outside and from workers each run exactly once" {
    // Created before the pool, so the pool's deinit joins the workers before it is freed.
    const fanned = try testing.allocator.create(Fanned);
    defer testing.allocator.destroy(fanned);
    const pool = try Pool.init(2);
    defer pool.deinit();
    fanned.* = .{ .pool = pool };
    for (&fanned.nodes, 0..) |*node, index| node.* = .{ .fanned = fanned, .index = @intCast(index) };
    for (fanned.nodes[0..Fanned.outer_count]) |*node| pool.schedule(&node.task);
    fanned.finished.wait();
    for (&fanned.nodes) |*node| try testing.expectEqual(@as(u32, 1), node.runs.load(.monotonic));
    try testing.expectEqual(@as(u32, Fanned.outer_count * Fanned.children), fanned.on_worker.load(.monotonic));
}

test "deinit runs every queued task before it stops the workers" {
    var signals: [100]Signal = @splat(.{});
    const pool = try Pool.init(1);
    for (&signals) |*signal| pool.schedule(&signal.task);
    pool.deinit();
    for (&signals) |*signal| try testing.expect(signal.done.isSet());
}

test "a push onto the injector first unlinks the claimed tasks at its tail, never the head" {
    const Claimable = struct {
        task: Task = .{ .run_fn = run, .is_claimed_fn = isClaimed },
        claimed: bool = false,

        fn run(_: *Task) void {}

        fn isClaimed(task: *const Task) bool {
            const claimable: *const @This() = @alignCast(@fieldParentPtr("task", task));
            return claimable.claimed;
        }
    };
    var tasks: [5]Claimable = @splat(.{});
    var injector: Injector = .{};
    for (tasks[0..3]) |*t| try testing.expectEqual(@as(?*Task, null), injector.push(&t.task));
    // The two newest are claimed: the next push returns them, newest last.
    tasks[1].claimed = true;
    tasks[2].claimed = true;
    const dropped = injector.push(&tasks[3].task);
    try testing.expectEqual(@as(?*Task, &tasks[1].task), dropped);
    try testing.expectEqual(@as(?*Task, &tasks[2].task), dropped.?.next);
    try testing.expectEqual(@as(?*Task, null), tasks[2].task.next);
    // Every task left is claimed: the push unlinks all but the head, which a pop takes.
    tasks[0].claimed = true;
    tasks[3].claimed = true;
    const all_but_head = injector.push(&tasks[4].task);
    try testing.expectEqual(@as(?*Task, &tasks[3].task), all_but_head);
    try testing.expectEqual(@as(?*Task, null), all_but_head.?.next);
    try testing.expectEqual(@as(?*Task, &tasks[0].task), injector.pop());
    try testing.expectEqual(@as(?*Task, &tasks[4].task), injector.pop());
    try testing.expectEqual(@as(?*Task, null), injector.pop());
    try testing.expectEqual(@as(?*Task, null), injector.tail);
}

fn processCpuMicroseconds() i64 {
    const usage = std.posix.getrusage(std.posix.rusage.SELF);
    const user = usage.utime.sec * std.time.us_per_s + usage.utime.usec;
    return user + usage.stime.sec * std.time.us_per_s + usage.stime.usec;
}

test "idle workers sleep on the futex and use no CPU" {
    const pool = try Pool.init(2);
    defer pool.deinit();
    var signal: Signal = .{};
    pool.schedule(&signal.task);
    signal.done.wait();
    // Both workers finish spinning and sleep (bounded: a spinning worker fails the test).
    var attempts: u32 = 0;
    // SeqCst: the counter idle() maintains; any order would do for polling.
    while (pool.sleepers.load(.seq_cst) != 2 and attempts < 20_000) : (attempts += 1) std.Thread.sleep(std.time.ns_per_ms);
    try testing.expectEqual(@as(u32, 2), pool.sleepers.load(.seq_cst));
    // The least CPU used in a few 100 ms windows: other threads of the test process (the
    // runner's) may be busy in one of them; two spinning workers would fill all of them.
    var least_used: i64 = std.math.maxInt(i64);
    for (0..4) |_| {
        const before = processCpuMicroseconds();
        std.Thread.sleep(100 * std.time.ns_per_ms);
        least_used = @min(least_used, processCpuMicroseconds() - before);
    }
    try testing.expect(least_used < 10 * std.time.us_per_ms);
}

/// A claimable task (as a future's) that records where it ran; its forker spins on `ran`.
const Placed = struct {
    task: Task = .{ .run_fn = run, .is_claimed_fn = isClaimed },
    cpu: u32 = placement.cpu_unknown,
    /// Release in run() pairs with the forker's Acquire load: `cpu` is visible.
    ran: Atomic(bool) = .init(false),

    fn run(task: *Task) void {
        const placed: *Placed = @alignCast(@fieldParentPtr("task", task));
        placed.cpu = placement.currentCpu();
        placed.ran.store(true, .release);
    }

    fn isClaimed(_: *const Task) bool {
        return false;
    }
};

/// A plain task that brings the worker running it to `cpu` (pinned there for a moment, then
/// given its affinity back: the thread stays on `cpu`).
const Beckon = struct {
    task: Task = .{ .run_fn = run },
    cpu: u32,
    /// Release in run() pairs with the forker's Acquire load: the task is done with.
    ran: Atomic(bool) = .init(false),

    fn run(task: *Task) void {
        const beckon: *Beckon = @alignCast(@fieldParentPtr("task", task));
        const allowed = std.posix.sched_getaffinity(0) catch unreachable;
        std.os.linux.sched_setaffinity(0, &onlyCpu(beckon.cpu)) catch {};
        placement.restore(&allowed);
        beckon.ran.store(true, .release);
    }
};

fn onlyCpu(cpu: u32) std.os.linux.cpu_set_t {
    var one = std.mem.zeroes(std.os.linux.cpu_set_t);
    one[cpu / @bitSizeOf(usize)] |= @as(usize, 1) << @intCast(cpu % @bitSizeOf(usize));
    return one;
}

/// The scene of issue #14 on a test: the forker keeps its CPU (pinned there, spinning on
/// the result as a forker busy with its own half would), a hog keeps every other CPU busy,
/// and before each fork a plain task brings the worker to the forker's CPU, where the
/// scheduler would also wake it when the other CPUs are busy. The worker must run each
/// claimable task elsewhere; without the move it runs them beside the forker.
const PlacementScene = struct {
    const rounds = 40;

    stop_hog: Atomic(bool) = .init(false),
    result: ?anyerror = null,

    fn hog(scene: *PlacementScene, cpu: u32) void {
        _ = placement.moveOff(cpu); // Never restored: the thread ends with the test.
        // Monotonic: a stop flag; nothing is read through it.
        while (!scene.stop_hog.load(.monotonic)) std.atomic.spinLoopHint();
    }

    fn forker(scene: *PlacementScene, pool: *Pool, cpu: u32) void {
        scene.forkAll(pool, cpu) catch |err| {
            scene.result = err;
        };
    }

    fn forkAll(_: *PlacementScene, pool: *Pool, cpu: u32) !void {
        try std.os.linux.sched_setaffinity(0, &onlyCpu(cpu));
        for (0..rounds) |_| {
            var beckon: Beckon = .{ .cpu = cpu };
            pool.schedule(&beckon.task);
            // Acquire pairs with the Release store in Beckon.run(). Bounded by the watchdog.
            while (!beckon.ran.load(.acquire)) std.atomic.spinLoopHint();
            var placed: Placed = .{};
            pool.schedule(&placed.task);
            // Acquire pairs with the Release store in Placed.run().
            while (!placed.ran.load(.acquire)) std.atomic.spinLoopHint();
            try testing.expect(placed.cpu != placement.cpu_unknown);
            try testing.expect(placed.cpu != cpu);
        }
    }
};

test "a worker that picks up a task on its forker's CPU runs it on another CPU" {
    if (builtin.os.tag != .linux or !builtin.link_libc) return error.SkipZigTest;
    const allowed = try std.posix.sched_getaffinity(0);
    if (std.os.linux.CPU_COUNT(allowed) < 2) return error.SkipZigTest;
    var watchdog: @import("watchdog.zig") = .{ .what = "placement scene" };
    try watchdog.start(60);
    defer watchdog.stop();
    const pool = try Pool.init(1);
    defer pool.deinit();
    const cpu = placement.currentCpu();
    var scene: PlacementScene = .{};
    // Both on threads of their own: the test runner's thread keeps its affinity.
    const hog = try std.Thread.spawn(.{}, PlacementScene.hog, .{ &scene, cpu });
    const forker = try std.Thread.spawn(.{}, PlacementScene.forker, .{ &scene, pool, cpu });
    forker.join();
    scene.stop_hog.store(true, .monotonic);
    hog.join();
    if (scene.result) |err| return err;
}
