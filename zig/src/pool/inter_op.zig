//! Inter-op parallelism: one process-wide pool for forked tasks, the futures they complete,
//! and the completion queue through which TypeScript awaits them (threading spec §5).
//!
//! Shape of the pool (after kprotty/zap): every worker owns a bounded deque of intrusive
//! tasks; forks made on a worker go to its own deque, forks from any other thread go to the
//! pool's injector queue (FIFO). An idle worker takes from its deque, then the injector, then
//! steals the oldest task of another worker. Idle workers spin briefly, then sleep on a
//! futex; a fork wakes at most one sleeper, and none while some worker is already searching.
//!
//! Waiting never deadlocks, whatever the pool size (spec §5, PyTorch issue #109782):
//!   1. A waiter first claims the awaited task itself when no thread has started it yet, and
//!      runs it inline. Every queued task can be claimed this way, wherever it is queued.
//!   2. A pool worker whose awaited task runs elsewhere helps: it runs tasks from its own
//!      deque that were pushed since its current task started. Those are that task's own
//!      subtree, so they can never wait on a frame below them on this stack.
//!   3. Otherwise it spins, then sleeps on the future: the awaited task is running on
//!      another thread, and that thread can always finish it by rules 1 and 2.
//! Why this holds: futures reach a task only as fork arguments or from its own forks (as in
//! TorchScript), so a task waits only on futures created before it or inside its subtree;
//! nothing run on top of a frame by rules 1 and 2 can wait on that frame or one below it.
//! Helping with *unrelated* tasks is deliberately not done: X waits on F, helps with U
//! (forked later, with X's future as argument), U waits on X, which sits below U on the
//! same stack and can never resume. Limits: a future smuggled through shared state into
//! the subtree it depends on breaks the argument, and past max_frames a waiter sleeps
//! instead of running tasks inline.
//!
//! A task claimed by a waiter (rule 1) stays queued, holding its future node, until some
//! thread pops it. So that a deep fork tree run mostly inline does not keep one node per
//! fork alive until its root completes, claimed tasks are popped early from the newest end
//! of the queues: from a worker's deque after each inline run, and from the injector's
//! tail whenever a task is pushed there.
//!
//! What allocates: the pool (once), and future nodes in slabs of `slab_nodes` whenever the
//! number of live futures exceeds its previous peak. Slabs are recycled, never freed, so a
//! fork in steady state takes a node from the free list and allocates nothing.
const std = @import("std");
const builtin = @import("builtin");
const status = @import("../status.zig");
const settings = @import("../settings.zig");
const tensor = @import("../tensor.zig");
const ops = @import("../ops.zig");

const Error = status.Error;
const Tensor = tensor.Tensor;
const Atomic = std.atomic.Value;
const Futex = std.Thread.Futex;
const assert = std.debug.assert;
const allocator = std.heap.c_allocator;

/// Futures alive at once (pending or held). Each node is about 1.3 KiB, so the bound keeps
/// a runaway fork loop under 100 MiB instead of exhausting memory.
pub const max_live_futures: u32 = 1 << 16;
/// Forks nested inside forked tasks. TorchScript has no recursion, so real programs nest a
/// handful of levels; the bound turns runaway recursion into an error, not a stack overflow.
pub const max_fork_depth: u32 = 256;
/// Tasks run on top of each other on one thread (inline runs and helping). Past it a waiter
/// sleeps instead of running more tasks, so the stack stays bounded. Each frame has
/// worker_stack_bytes / max_frames = 32 KiB of worker stack, far more than a frame uses.
const max_frames: u32 = 512;
const worker_stack_bytes: usize = 16 << 20;
/// Per-worker deque slots; a fan-out beyond it spills to the injector.
const deque_capacity = 256;
/// Spin iterations before sleeping: long enough to catch the next task of a fork loop or a
/// short task's completion, short enough not to burn a shared core (≈ 10–40 µs).
const spin_limit_idle = 512;
const spin_limit_wait = 512;
/// Bytes a fork's context may occupy inside the future node (an op with all its inputs and
/// parameters needs 264).
pub const payload_capacity = 320;
pub const payload_alignment = 16;
const slab_nodes = 64;

comptime {
    assert(std.math.isPowerOfTwo(deque_capacity));
    assert(worker_stack_bytes / max_frames >= 16 << 10);
    assert(@sizeOf(OpTask) <= payload_capacity);
    assert(max_live_futures % slab_nodes == 0);
}

// ---------------------------------------------------------------------------------------
// Thread-local settings that travel with a forked task.

/// The forking thread's thread-local settings, captured at fork and installed on the
/// thread that runs the task for as long as it runs (spec §5: grad mode in PyTorch).
pub const ThreadLocalState = struct {
    /// Whether ops record what autograd would need; placeholder for the grad-mode flag.
    grad_enabled: bool = true,
    /// The request the work belongs to (0: none), so logs and cancellation can follow a
    /// request across threads.
    request_id: u64 = 0,

    threadlocal var current: ThreadLocalState = .{};

    pub fn get() ThreadLocalState {
        return current;
    }

    pub fn set(state: ThreadLocalState) void {
        current = state;
    }

    /// Installs `state` and returns the state it replaced, to be restored afterwards.
    fn exchange(state: ThreadLocalState) ThreadLocalState {
        const previous = current;
        current = state;
        return previous;
    }
};

// ---------------------------------------------------------------------------------------
// Tasks and the pool.

/// An intrusive unit of work. The pool calls `run_fn` exactly once per `schedule`; the
/// owner embeds the task and recovers itself with @fieldParentPtr.
pub const Task = struct {
    /// Link in the injector or a free list; owned by whichever list holds the task.
    next: ?*Task = null,
    /// Back link in the injector, whose tail drops claimed tasks (see Injector.push).
    prev: ?*Task = null,
    run_fn: *const fn (task: *Task) void,
};

/// The worker this thread is, if it is one; forks made here go to its deque.
threadlocal var current_worker: ?*Worker = null;
/// Tasks running on top of each other on this thread (bounded by max_frames).
threadlocal var frames: u32 = 0;
/// Fork depth of the future whose task runs on this thread (0 outside tasks).
threadlocal var fork_depth: u32 = 0;

pub const Pool = struct {
    workers: []Worker,
    injector: Injector = .{},
    /// Tasks in the injector and all deques, counted before the push and after the pop, so
    /// it is never below the true count. Idle workers poll it instead of locking queues.
    pending: Atomic(usize) = .init(0),
    /// Workers spinning in idle(); a fork wakes nobody while one of them will find it.
    searching: Atomic(u32) = .init(0),
    /// Workers asleep (or about to sleep) on wake_epoch.
    sleepers: Atomic(u32) = .init(0),
    /// Futex word: bumped to wake sleepers, so a wake between a sleeper's last check and its
    /// futex wait is not lost.
    wake_epoch: Atomic(u32) = .init(0),
    shutting_down: Atomic(bool) = .init(false),

    /// Starts a pool with `thread_count` workers. The process-wide pool is `global()`;
    /// tests create private ones to choose the size.
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
    /// guarantees no thread forks into this pool any more. Futures outlive their pool.
    pub fn deinit(pool: *Pool) void {
        pool.stopAndJoin(pool.workers);
        // Monotonic: the joins ordered every worker's updates before this load.
        assert(pool.pending.load(.monotonic) == 0);
        assert(pool.injector.head == null);
        allocator.free(pool.workers);
        allocator.destroy(pool);
    }

    fn stopAndJoin(pool: *Pool, started: []Worker) void {
        // SeqCst: ordered before the epoch bump, so a worker that reads the new epoch also
        // sees the flag (it pairs with the SeqCst load in idle()).
        pool.shutting_down.store(true, .seq_cst);
        pool.wake(std.math.maxInt(u32));
        for (started) |*worker| worker.thread.join();
    }

    pub fn threadCount(pool: *const Pool) u32 {
        return @intCast(pool.workers.len);
    }

    /// Queues `task` to run once on some thread of the pool.
    pub fn schedule(pool: *Pool, task: *Task) void {
        // SeqCst, before the push: Dekker pairing with idle(), which increments `sleepers`
        // and then loads `pending`; one of the two sides sees the other, so a worker never
        // sleeps through this task. Counting first also keeps `pending` from underflowing.
        _ = pool.pending.fetchAdd(1, .seq_cst);
        const pushed_locally = if (current_worker) |worker| worker.pool == pool and worker.deque.push(task) else false;
        if (!pushed_locally) pool.drop(pool.injector.push(task));
        pool.notify();
    }

    /// Takes popped tasks that a waiter has already claimed off the books: each one only
    /// drops the queue's reference to its future (runQueued does not run a claimed task).
    fn drop(pool: *Pool, claimed: ?*Task) void {
        var next = claimed;
        while (next) |task| {
            next = task.next; // Read first: the release may recycle the node.
            pool.took();
            task.run_fn(task);
        }
    }

    /// Wakes one sleeping worker for a newly queued task, unless a searching worker will
    /// find it anyway: one wake-up at a time keeps a fork loop out of the kernel.
    fn notify(pool: *Pool) void {
        // SeqCst loads pair with the SeqCst updates in idle(): a searcher decrements
        // `searching` and only then checks `pending`, so seeing it here means it will see
        // our task; `sleepers` is the Dekker pairing described in schedule().
        if (pool.searching.load(.seq_cst) > 0) return;
        if (pool.sleepers.load(.seq_cst) == 0) return;
        pool.wake(1);
    }

    fn wake(pool: *Pool, count: u32) void {
        // SeqCst: a sleeper that read the old epoch either sees the new value in its futex
        // check or is woken by the wake below; it pairs with the Acquire load in idle().
        _ = pool.wake_epoch.fetchAdd(1, .seq_cst);
        Futex.wake(&pool.wake_epoch, count);
    }

    /// A queued task for an idle worker: its own deque, the injector, then another
    /// worker's oldest task.
    fn findTask(pool: *Pool, worker: *Worker) ?*Task {
        // Monotonic: only a hint to skip locking empty queues; the queues' mutexes order
        // the tasks themselves.
        if (pool.pending.load(.monotonic) == 0) return null;
        const task = worker.deque.pop(worker.mark) orelse pool.injector.pop() orelse pool.steal(worker) orelse
            return null;
        pool.took();
        return task;
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

    /// Spins, then sleeps until work may be queued. False when the pool is shutting down
    /// and nothing is left to run.
    ///
    /// Every operation on searching, sleepers and pending here is SeqCst: together with the
    /// SeqCst operations in schedule() and notify() they form a Dekker handshake (this
    /// side writes its counter then reads `pending`; a forker writes `pending` then reads
    /// the counters), which needs a single total order: at least one side sees the other.
    fn idle(pool: *Pool) bool {
        // Pairs with notify()'s load of `searching`: while we count, forkers skip the wake.
        _ = pool.searching.fetchAdd(1, .seq_cst);
        var spins: u32 = 0;
        while (spins < spin_limit_idle) : (spins += 1) {
            // Pairs with schedule()'s increment: a task queued from now on is seen here.
            if (pool.pending.load(.seq_cst) > 0) {
                // Pairs with notify(): after this, forkers wake sleepers again.
                const last_searcher = pool.searching.fetchSub(1, .seq_cst) == 1;
                // More work than this worker will take: wake the next one, so a burst of
                // forks ramps up the pool one worker at a time. (Same handshake as notify.)
                if (last_searcher and pool.pending.load(.seq_cst) > 1 and pool.sleepers.load(.seq_cst) > 0) pool.wake(1);
                return true;
            }
            // Monotonic: only ends spinning early; the SeqCst load below decides.
            if (pool.shutting_down.load(.monotonic)) break;
            std.atomic.spinLoopHint();
        }
        // Pairs with notify()'s load: a forker that sees zero searchers will wake sleepers,
        // and we re-check `pending` below after announcing ourselves as a sleeper.
        _ = pool.searching.fetchSub(1, .seq_cst);
        // Acquire pairs with the SeqCst bump in wake(): reading the new epoch means the
        // shutdown flag and the counters written before it are visible. Read before the
        // checks below, so a wake after them changes the value Futex.wait compares.
        const epoch = pool.wake_epoch.load(.acquire);
        // Pairs with notify()'s load of `sleepers` (the Dekker handshake).
        _ = pool.sleepers.fetchAdd(1, .seq_cst);
        // Pairs with the SeqCst store in stopAndJoin().
        const shutting_down = pool.shutting_down.load(.seq_cst);
        // Pairs with schedule()'s increment (the Dekker handshake).
        if (!shutting_down and pool.pending.load(.seq_cst) == 0) Futex.wait(&pool.wake_epoch, epoch);
        // Pairs with notify()'s load: fewer sleepers, fewer needless wake calls.
        _ = pool.sleepers.fetchSub(1, .seq_cst);
        // Both pair as above: exit only once shut down with nothing left queued.
        return !(pool.shutting_down.load(.seq_cst) and pool.pending.load(.seq_cst) == 0);
    }

    /// Forks `context.run()` as a task and returns its future with one reference for the
    /// caller. `Context` is copied into the future node (no allocation); it declares
    /// `fn run(*Context) Error!*Tensor` and may declare `fn deinit(*Context) void`, called
    /// once the task has run (to drop the references it held). `name` (static) names the
    /// task in error messages. On error the context is not consumed.
    pub fn fork(pool: *Pool, name: []const u8, comptime Context: type, context: Context) Error!*Future {
        comptime assert(@sizeOf(Context) <= payload_capacity);
        comptime assert(@alignOf(Context) <= payload_alignment);
        const depth = fork_depth + 1;
        if (depth > max_fork_depth) {
            return status.fail(error.TooLarge, "fork {s}: forks nested deeper than {d}", .{ name, max_fork_depth });
        }
        const future = try slab.acquire();
        const Erased = ErasedContext(Context);
        future.* = .{
            .task = .{ .run_fn = Future.runQueued },
            .refs = .init(2), // The caller's, and the queue's (dropped by whoever pops it).
            .depth = depth,
            .thread_state = ThreadLocalState.get(),
            .name = name,
            .run_fn = Erased.run,
            .deinit_fn = Erased.deinit,
        };
        const typed: *Context = @ptrCast(@alignCast(&future.payload));
        typed.* = context;
        pool.schedule(&future.task);
        return future;
    }

    /// Forks `run_fn(context)`. The caller keeps `context` alive until the future completes.
    pub fn forkFn(pool: *Pool, name: []const u8, context: *anyopaque, run_fn: *const fn (context: *anyopaque) Error!*Tensor) Error!*Future {
        return pool.fork(name, FnTask, .{ .context = context, .run_fn = run_fn });
    }

    /// Forks `op` on `inputs` and `params`. Takes a new reference to every input so the
    /// tensors stay alive until the task finishes, whatever the caller does with its own.
    pub fn forkOp(pool: *Pool, op: ops.OpCode, inputs: []const *Tensor, params: []const f64) Error!*Future {
        if (inputs.len > ops.max_inputs or params.len > ops.max_params) {
            return status.fail(error.InvalidArgument, "fork {s}: at most {d} inputs and {d} parameters, got {d} and {d}", .{
                @tagName(op), ops.max_inputs, ops.max_params, inputs.len, params.len,
            });
        }
        var context: OpTask = .{ .op = op, .input_count = @intCast(inputs.len), .param_count = @intCast(params.len) };
        @memcpy(context.inputs[0..inputs.len], inputs);
        @memcpy(context.params[0..params.len], params);
        for (inputs) |input| input.retain();
        return pool.fork(@tagName(op), OpTask, context) catch |err| {
            for (inputs) |input| input.release();
            return err;
        };
    }
};

fn ErasedContext(comptime Context: type) type {
    return struct {
        fn run(payload: *anyopaque) Error!*Tensor {
            const context: *Context = @ptrCast(@alignCast(payload));
            return context.run();
        }

        fn deinit(payload: *anyopaque) void {
            const context: *Context = @ptrCast(@alignCast(payload));
            if (@hasDecl(Context, "deinit")) context.deinit();
        }
    };
}

const FnTask = struct {
    context: *anyopaque,
    run_fn: *const fn (context: *anyopaque) Error!*Tensor,

    pub fn run(task: *FnTask) Error!*Tensor {
        return task.run_fn(task.context);
    }
};

const OpTask = struct {
    op: ops.OpCode,
    input_count: u8,
    param_count: u8,
    inputs: [ops.max_inputs]*Tensor = undefined,
    params: [ops.max_params]f64 = undefined,

    pub fn run(task: *OpTask) Error!*Tensor {
        return ops.run(task.op, task.inputs[0..task.input_count], task.params[0..task.param_count]);
    }

    pub fn deinit(task: *OpTask) void {
        for (task.inputs[0..task.input_count]) |input| input.release();
    }
};

const Worker = struct {
    pool: *Pool,
    index: u32,
    thread: std.Thread = undefined,
    deque: Deque = .{},
    /// Deque position where the innermost task running on this worker started: tasks at
    /// or above it were forked by that task's subtree, the only ones it may help with.
    /// Read and written by this worker's thread only.
    mark: u64 = 0,

    /// Pops the claimed tasks at the top of this worker's deque, down to its mark. Called
    /// after a waiter on this worker ran a task inline: the task and whatever its subtree
    /// forked and claimed itself would otherwise stay queued below the next forks.
    fn dropClaimed(worker: *Worker) void {
        while (worker.deque.popClaimed(worker.mark)) |task| {
            task.next = null;
            worker.pool.drop(task);
        }
    }
};

fn workerMain(worker: *Worker) void {
    current_worker = worker;
    defer current_worker = null;
    const pool = worker.pool;
    while (true) {
        if (pool.findTask(worker)) |task| {
            runTask(task);
            continue;
        }
        if (!pool.idle()) return;
    }
}

/// Bookkeeping around every task run on a thread: the frame count, and the worker's mark
/// so that helping inside this task stays within its subtree.
const Frame = struct {
    worker: ?*Worker,
    saved_mark: u64,

    fn enter() Frame {
        assert(frames < max_frames + 1);
        frames += 1;
        const worker = current_worker;
        var saved_mark: u64 = 0;
        if (worker) |w| {
            saved_mark = w.mark;
            w.mark = w.deque.top();
        }
        return .{ .worker = worker, .saved_mark = saved_mark };
    }

    fn leave(frame: Frame) void {
        assert(frames > 0);
        frames -= 1;
        if (frame.worker) |w| w.mark = frame.saved_mark;
    }
};

fn runTask(task: *Task) void {
    const frame = Frame.enter();
    defer frame.leave();
    task.run_fn(task);
}

/// A worker's bounded deque. The owner pushes and pops the newest end; thieves take the
/// oldest. A mutex keeps it simple and sanitizer-friendly: critical sections are a few
/// loads and stores, and contention is limited to steals.
const Deque = struct {
    mutex: std.Thread.Mutex = .{},
    /// Monotonic positions; slot = position % capacity. head ≤ tail, tail - head ≤ capacity.
    head: u64 = 0,
    tail: u64 = 0,
    slots: [deque_capacity]*Task = undefined,

    /// False when full: the caller queues the task elsewhere.
    fn push(deque: *Deque, task: *Task) bool {
        deque.mutex.lock();
        defer deque.mutex.unlock();
        assert(deque.tail - deque.head <= deque_capacity);
        if (deque.tail - deque.head == deque_capacity) return false;
        deque.slots[deque.tail % deque_capacity] = task;
        deque.tail += 1;
        return true;
    }

    /// The newest task, if it sits at or above `floor`.
    fn pop(deque: *Deque, floor: u64) ?*Task {
        deque.mutex.lock();
        defer deque.mutex.unlock();
        if (deque.tail <= @max(deque.head, floor)) return null;
        deque.tail -= 1;
        return deque.slots[deque.tail % deque_capacity];
    }

    /// The newest task, if it sits at or above `floor` and a waiter has claimed it.
    fn popClaimed(deque: *Deque, floor: u64) ?*Task {
        deque.mutex.lock();
        defer deque.mutex.unlock();
        if (deque.tail <= @max(deque.head, floor)) return null;
        const task = deque.slots[(deque.tail - 1) % deque_capacity];
        if (!Future.isClaimedTask(task)) return null;
        deque.tail -= 1;
        return task;
    }

    fn steal(deque: *Deque) ?*Task {
        deque.mutex.lock();
        defer deque.mutex.unlock();
        if (deque.head == deque.tail) return null;
        const task = deque.slots[deque.head % deque_capacity];
        deque.head += 1;
        return task;
    }

    /// The owner's current top position. Only the owner writes `tail`, so it reads it
    /// without the lock.
    fn top(deque: *const Deque) u64 {
        return deque.tail;
    }
};

/// FIFO of tasks forked from outside the pool (or spilled from a full deque).
const Injector = struct {
    mutex: std.Thread.Mutex = .{},
    head: ?*Task = null,
    tail: ?*Task = null,

    /// Queues `task` at the tail, after unlinking the claimed tasks that end the queue
    /// (forks whose waiter ran them inline); returns those, linked by `next`, for
    /// Pool.drop to release outside the lock.
    fn push(injector: *Injector, task: *Task) ?*Task {
        injector.mutex.lock();
        defer injector.mutex.unlock();
        var claimed: ?*Task = null;
        while (injector.tail) |tail| {
            if (!Future.isClaimedTask(tail)) break;
            injector.tail = tail.prev;
            if (injector.tail) |new_tail| new_tail.next = null else injector.head = null;
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
// Futures.

const phase_mask: u32 = 0b11;
const phase_pending: u32 = 0;
const phase_succeeded: u32 = 1;
const phase_failed: u32 = 2;
/// Set while pending when some thread sleeps on the state word: completion wakes them.
const waiters_bit: u32 = 1 << 2;
/// Set while pending when a completion token is registered: completion enqueues it.
const watched_bit: u32 = 1 << 3;

/// The result of a forked task: a tensor or an error. Reference counted; holders are the
/// caller (or the handle table), the queued task, and a registered watch.
pub const Future = struct {
    task: Task,
    /// Futex word: the phase, plus the waiters and watched bits while pending.
    state: Atomic(u32) = .init(phase_pending),
    /// Set by the one thread that runs the task (a worker, or an inline waiter).
    claimed: Atomic(bool) = .init(false),
    /// Set when wait() has returned the error to someone: it is not reported on drop.
    observed: Atomic(bool) = .init(false),
    /// Set by the first watch(); a future has at most one completion token.
    watch_registered: Atomic(bool) = .init(false),
    refs: Atomic(u32),
    depth: u32,
    value: ?*Tensor = null,
    failure: Error = error.Internal,
    message_len: usize = 0,
    watch_token: u64 = 0,
    /// Link in the completion queue (holds the watch's reference).
    completion_next: ?*Future = null,
    thread_state: ThreadLocalState,
    name: []const u8,
    run_fn: *const fn (payload: *anyopaque) Error!*Tensor,
    deinit_fn: *const fn (payload: *anyopaque) void,
    payload: [payload_capacity]u8 align(payload_alignment) = undefined,
    message: [status.message_capacity]u8 = undefined,

    pub fn retain(future: *Future) void {
        // Monotonic: the caller already holds a reference, so nothing needs publishing.
        const previous = future.refs.fetchAdd(1, .monotonic);
        assert(previous > 0);
    }

    pub fn release(future: *Future) void {
        // Release: this holder's reads and writes (the `observed` flag) happen before the
        // destruction; pairs with the Acquire load on the last holder's side.
        const previous = future.refs.fetchSub(1, .release);
        assert(previous > 0);
        if (previous != 1) return;
        _ = future.refs.load(.acquire);
        future.destroy();
    }

    fn destroy(future: *Future) void {
        // Monotonic: the Acquire in release() already ordered complete()'s swap (done
        // before the runner dropped its reference) before this load.
        const phase = future.state.load(.monotonic) & phase_mask;
        // The queued task holds a reference until it has completed the future.
        assert(phase != phase_pending);
        // Monotonic: ordered by the Acquire in release() after every holder's Release.
        if (phase == phase_failed and !future.observed.load(.monotonic)) unobserved.report(future.messageSlice());
        if (future.value) |value| value.release();
        slab.recycle(future);
    }

    pub fn isDone(future: *const Future) bool {
        // Acquire pairs with the Release in complete(): value and message are visible.
        return future.state.load(.acquire) & phase_mask != phase_pending;
    }

    /// Whether some thread has started the task (tests use it to pin a task to a worker).
    fn isStarted(future: *const Future) bool {
        // Monotonic: a hint; a caller that needs the results goes through isDone().
        return future.claimed.load(.monotonic);
    }

    /// Whether the queued `task` (every queued task is a future's) has been claimed, so
    /// that popping it would only drop the queue's reference. A claim is never undone; a
    /// stale false only leaves the task queued for a worker to pop as usual.
    fn isClaimedTask(task: *Task) bool {
        const future: *const Future = @alignCast(@fieldParentPtr("task", task));
        return future.isStarted();
    }

    /// Waits until the future completes (running it inline when no thread started it yet,
    /// helping on a pool worker) and returns its value with a new reference, or its error
    /// with the task's message recorded on this thread. The caller holds a reference.
    /// Any number of threads may wait on one future.
    pub fn wait(future: *Future) Error!*Tensor {
        if (!future.isDone()) future.waitUntilDone();
        assert(future.isDone());
        return future.result();
    }

    fn result(future: *Future) Error!*Tensor {
        // Acquire pairs with the Release in complete(): value and message are visible.
        switch (future.state.load(.acquire) & phase_mask) {
            phase_succeeded => {
                const value = future.value.?;
                value.retain();
                return value;
            },
            phase_failed => {
                // Monotonic: read by destroy(), ordered by the refcount (see release()).
                future.observed.store(true, .monotonic);
                return status.fail(future.failure, "{s}", .{future.messageSlice()});
            },
            else => unreachable,
        }
    }

    fn waitUntilDone(future: *Future) void {
        if (frames < max_frames and future.claim()) {
            {
                const frame = Frame.enter();
                defer frame.leave();
                future.execute();
            }
            if (current_worker) |worker| worker.dropClaimed();
            return;
        }
        const worker = current_worker;
        var spins: u32 = 0;
        while (!future.isDone()) {
            if (worker) |w| {
                if (frames < max_frames) {
                    if (w.deque.pop(w.mark)) |task| {
                        w.pool.took();
                        runTask(task);
                        spins = 0;
                        continue;
                    }
                }
            }
            if (spins < spin_limit_wait) {
                spins += 1;
                std.atomic.spinLoopHint();
                continue;
            }
            // Only this thread pushes to its deque, so nothing new to help with can appear
            // while it sleeps: sleep until the future completes.
            future.sleepUntilDone();
        }
    }

    fn sleepUntilDone(future: *Future) void {
        // Acquire pairs with the Release in complete().
        var current = future.state.load(.acquire);
        while (current & phase_mask == phase_pending) {
            if (current & waiters_bit == 0) {
                // Monotonic: the bit publishes nothing, it only asks complete() to call
                // wake. A completed state seen on failure ends the loop, and the caller's
                // isDone() does the Acquire load that pairs with complete().
                if (future.state.cmpxchgWeak(current, current | waiters_bit, .monotonic, .monotonic)) |actual| {
                    current = actual;
                    continue;
                }
                current |= waiters_bit;
            }
            Futex.wait(&future.state, current);
            // Acquire pairs with the Release in complete().
            current = future.state.load(.acquire);
        }
    }

    /// True for exactly one caller: the one that runs the task.
    fn claim(future: *Future) bool {
        // Monotonic: the exchange only elects one runner. The payload it reads was written
        // by fork() before the future was published (through a queue mutex to workers,
        // through whatever handed the future over to a waiter).
        return !future.claimed.swap(true, .monotonic);
    }

    /// Task.run_fn of futures: runs when popped from a queue, unless a waiter claimed it
    /// first; drops the queue's reference either way.
    fn runQueued(task: *Task) void {
        const future: *Future = @alignCast(@fieldParentPtr("task", task));
        if (future.claim()) future.execute();
        future.release();
    }

    fn execute(future: *Future) void {
        assert(future.isStarted());
        assert(!future.isDone());
        const saved_state = ThreadLocalState.exchange(future.thread_state);
        defer _ = ThreadLocalState.exchange(saved_state);
        const saved_depth = fork_depth;
        fork_depth = future.depth;
        defer fork_depth = saved_depth;
        status.clearMessage();
        const outcome = future.run_fn(&future.payload);
        // Inputs are released before completion: once wait() returns, the task holds no
        // tensor any more.
        future.deinit_fn(&future.payload);
        future.complete(outcome);
    }

    fn complete(future: *Future, outcome: Error!*Tensor) void {
        var phase = phase_succeeded;
        if (outcome) |value| {
            future.value = value;
        } else |err| {
            future.failure = err;
            future.recordMessage(err);
            phase = phase_failed;
        }
        // Release publishes value/failure/message to every Acquire load of the state
        // (isDone, sleepUntilDone, result). Acquire pairs with the Release CAS in watch(),
        // making watch_token visible when the watched bit is set.
        const previous = future.state.swap(phase, .acq_rel);
        assert(previous & phase_mask == phase_pending);
        // The caller holds a reference (queue or inline waiter) across both calls.
        if (previous & watched_bit != 0) completion_queue.push(future);
        if (previous & waiters_bit != 0) Futex.wake(&future.state, std.math.maxInt(u32));
    }

    /// Copies the failing thread's message, prefixed with the task's name unless it already
    /// starts with it (op messages do: "mm: ..."), so every error names what failed.
    fn recordMessage(future: *Future, err: Error) void {
        var recorded_buffer: [status.message_capacity]u8 = undefined;
        const recorded = recorded_buffer[0..status.lastMessage(&recorded_buffer)];
        var length: usize = 0;
        if (recorded.len == 0) {
            appendTruncated(&future.message, &length, future.name);
            appendTruncated(&future.message, &length, ": ");
            appendTruncated(&future.message, &length, @errorName(err));
        } else {
            if (!std.mem.startsWith(u8, recorded, future.name)) {
                appendTruncated(&future.message, &length, future.name);
                appendTruncated(&future.message, &length, ": ");
            }
            appendTruncated(&future.message, &length, recorded);
        }
        future.message_len = length;
    }

    fn messageSlice(future: *const Future) []const u8 {
        return future.message[0..future.message_len];
    }

    /// Registers `token` for the completion queue: it is pushed when the future completes,
    /// or now when it already has. At most one token per future.
    pub fn watch(future: *Future, token: u64) Error!void {
        // Monotonic: only elects the first watcher; the token is published by the CAS below.
        if (future.watch_registered.swap(true, .monotonic)) {
            return status.fail(error.InvalidArgument, "future_watch: the future already has a completion token", .{});
        }
        future.watch_token = token;
        future.retain(); // The watch's reference, handed to the completion queue.
        // Monotonic: only chooses between the CAS and pushing now; a completed future is
        // pushed as is, and whoever takes its token waits on it with Acquire loads.
        var current = future.state.load(.monotonic);
        while (current & phase_mask == phase_pending) {
            // Release on success publishes watch_token to complete()'s Acquire swap.
            current = future.state.cmpxchgWeak(current, current | watched_bit, .release, .monotonic) orelse return;
        }
        // Already complete: complete() saw no watched bit, so the token is ours to push.
        completion_queue.push(future);
    }
};

fn appendTruncated(buffer: []u8, length: *usize, bytes: []const u8) void {
    const count = @min(bytes.len, buffer.len - length.*);
    @memcpy(buffer[length.*..][0..count], bytes[0..count]);
    length.* += count;
}

/// Futures alive now: pending, completed but still held, or queued for TypeScript.
pub fn liveFutures() usize {
    return slab.liveCount();
}

/// Future nodes: a free list refilled with slabs of `slab_nodes`. Slabs live as long as
/// the process, so a node address stays valid for every stale reader of a recycled node.
const Slab = struct {
    mutex: std.Thread.Mutex = .{},
    free: ?*Task = null,
    live: usize = 0,
    allocated: usize = 0,

    fn acquire(s: *Slab) Error!*Future {
        s.mutex.lock();
        defer s.mutex.unlock();
        if (s.live == max_live_futures) {
            return status.fail(error.TooLarge, "fork: {d} futures are alive; release some first", .{max_live_futures});
        }
        if (s.free == null) try s.grow();
        const link = s.free.?;
        s.free = link.next;
        s.live += 1;
        assert(s.live <= s.allocated);
        return @alignCast(@fieldParentPtr("task", link));
    }

    fn grow(s: *Slab) Error!void {
        assert(s.free == null);
        const nodes = allocator.alloc(Future, slab_nodes) catch
            return status.fail(error.OutOfMemory, "fork: out of memory for future nodes", .{});
        for (nodes) |*node| {
            node.task = .{ .next = s.free, .run_fn = Future.runQueued };
            s.free = &node.task;
        }
        s.allocated += slab_nodes;
    }

    fn recycle(s: *Slab, future: *Future) void {
        s.mutex.lock();
        defer s.mutex.unlock();
        assert(s.live > 0);
        future.task.next = s.free;
        s.free = &future.task;
        s.live -= 1;
    }

    fn liveCount(s: *Slab) usize {
        s.mutex.lock();
        defer s.mutex.unlock();
        return s.live;
    }
};

var slab: Slab = .{};

// ---------------------------------------------------------------------------------------
// The completion queue: how TypeScript awaits futures without one thread per future.

/// Tokens of completed watched futures, FIFO in completion order. Thread-safe: any thread
/// completes futures into it, and any number of threads may take tokens (each token goes
/// to exactly one of them); TypeScript uses one waiter (a `nonblocking` FFI call) at a time.
/// A mutex and a condition variable order everything; no lock is held while a future is
/// released.
pub const CompletionQueue = struct {
    mutex: std.Thread.Mutex = .{},
    condition: std.Thread.Condition = .{},
    head: ?*Future = null,
    tail: ?*Future = null,
    count: usize = 0,
    interrupted: bool = false,

    /// Takes over the watch's reference of `future`.
    fn push(queue: *CompletionQueue, future: *Future) void {
        {
            queue.mutex.lock();
            defer queue.mutex.unlock();
            future.completion_next = null;
            if (queue.tail) |tail| tail.completion_next = future else queue.head = future;
            queue.tail = future;
            queue.count += 1;
            assert(queue.count <= max_live_futures);
        }
        queue.condition.signal();
    }

    /// Copies available tokens (at most tokens.len) without blocking; returns the count.
    pub fn poll(queue: *CompletionQueue, tokens: []u64) usize {
        queue.mutex.lock();
        const taken = queue.takeLocked(tokens);
        queue.mutex.unlock();
        return releaseTaken(taken, tokens);
    }

    /// Blocks until a token is available, the timeout passes, or interrupt() is called;
    /// then copies available tokens like poll().
    pub fn wait(queue: *CompletionQueue, tokens: []u64, timeout_ns: u64) usize {
        var timer = std.time.Timer.start() catch unreachable; // Linux always has a clock.
        queue.mutex.lock();
        while (queue.count == 0 and !queue.interrupted and tokens.len > 0) {
            const elapsed = timer.read();
            if (elapsed >= timeout_ns) break;
            queue.condition.timedWait(&queue.mutex, timeout_ns - elapsed) catch break;
        }
        queue.interrupted = false;
        const taken = queue.takeLocked(tokens);
        queue.mutex.unlock();
        return releaseTaken(taken, tokens);
    }

    /// Makes the current (or next) wait() return at once, even with no token.
    pub fn interrupt(queue: *CompletionQueue) void {
        {
            queue.mutex.lock();
            defer queue.mutex.unlock();
            queue.interrupted = true;
        }
        queue.condition.broadcast();
    }

    const Taken = struct { first: ?*Future, count: usize };

    fn takeLocked(queue: *CompletionQueue, tokens: []u64) Taken {
        const first = queue.head;
        var count: usize = 0;
        var last: ?*Future = null;
        while (count < tokens.len) : (count += 1) {
            const future = queue.head orelse break;
            tokens[count] = future.watch_token;
            last = future;
            queue.head = future.completion_next;
        }
        if (last) |future| future.completion_next = null;
        if (queue.head == null) queue.tail = null;
        queue.count -= count;
        return .{ .first = if (count > 0) first else null, .count = count };
    }

    fn releaseTaken(taken: Taken, tokens: []u64) usize {
        assert(taken.count <= tokens.len);
        var next = taken.first;
        while (next) |future| {
            next = future.completion_next;
            future.release();
        }
        return taken.count;
    }
};

pub var completion_queue: CompletionQueue = .{};

// ---------------------------------------------------------------------------------------
// Unobserved errors: failed futures dropped before anyone waited on them.

/// Messages of failed futures dropped before any wait() returned their error (like an
/// unhandled promise rejection). Until TypeScript first drains them, and whenever the list
/// is full, a report goes to stderr instead, so it is never silently lost.
pub const Unobserved = struct {
    pub const capacity = 64;

    mutex: std.Thread.Mutex = .{},
    listening: bool = false,
    first: usize = 0,
    count: usize = 0,
    lengths: [capacity]usize = undefined,
    messages: [capacity][status.message_capacity]u8 = undefined,
    /// Every unobserved error reported in this process, queued or printed.
    total: Atomic(u64) = .init(0),

    fn report(list: *Unobserved, message: []const u8) void {
        // Monotonic: a statistic for tests and diagnostics.
        _ = list.total.fetchAdd(1, .monotonic);
        const queued = blk: {
            list.mutex.lock();
            defer list.mutex.unlock();
            if (!list.listening or list.count == capacity) break :blk false;
            const slot = (list.first + list.count) % capacity;
            const length = @min(message.len, status.message_capacity);
            @memcpy(list.messages[slot][0..length], message[0..length]);
            list.lengths[slot] = length;
            list.count += 1;
            break :blk true;
        };
        if (!queued) std.debug.print("spindle: warning: a forked task failed and its error was never observed: {s}\n", .{message});
    }

    /// Moves queued messages into `buffer`, one per line, and returns the bytes written. A
    /// message longer than the whole buffer is truncated rather than left to block the
    /// list. Marks TypeScript as listening: later reports are queued, not printed.
    pub fn drain(list: *Unobserved, buffer: []u8) usize {
        list.mutex.lock();
        defer list.mutex.unlock();
        list.listening = true;
        var length: usize = 0;
        while (list.count > 0) {
            const message = list.messages[list.first][0..list.lengths[list.first]];
            const fits = length + message.len + 1 <= buffer.len;
            if (!fits and length > 0) break;
            if (buffer.len == 0) break;
            appendTruncated(buffer[0 .. buffer.len - 1], &length, message);
            appendTruncated(buffer, &length, "\n");
            list.first = (list.first + 1) % capacity;
            list.count -= 1;
        }
        return length;
    }

    pub fn totalReported(list: *const Unobserved) u64 {
        // Monotonic: a statistic; callers order it with the frees they wait for.
        return list.total.load(.monotonic);
    }
};

pub var unobserved: Unobserved = .{};

// ---------------------------------------------------------------------------------------
// The process-wide pool and the API used by exports.zig.

pub var futures: @import("../handles.zig").Table(Future, "future") = .{};

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

pub fn fork(name: []const u8, comptime Context: type, context: Context) Error!*Future {
    return (try global()).fork(name, Context, context);
}

pub fn forkFn(name: []const u8, context: *anyopaque, run_fn: *const fn (context: *anyopaque) Error!*Tensor) Error!*Future {
    return (try global()).forkFn(name, context, run_fn);
}

pub fn forkOp(op: ops.OpCode, inputs: []const *Tensor, params: []const f64) Error!*Future {
    return (try global()).forkOp(op, inputs, params);
}

// ---------------------------------------------------------------------------------------
// Tests.

const testing = std.testing;

/// Panics if a test has not finished within `seconds`: a deadlock fails loudly instead of
/// hanging the test run.
const Watchdog = struct {
    done: std.Thread.ResetEvent = .{},
    thread: std.Thread = undefined,
    what: []const u8,

    fn start(watchdog: *Watchdog, seconds: u64) !void {
        watchdog.thread = try std.Thread.spawn(.{}, watch_, .{ watchdog, seconds });
    }

    fn watch_(watchdog: *Watchdog, seconds: u64) void {
        watchdog.done.timedWait(seconds * std.time.ns_per_s) catch
            std.debug.panic("deadlock: '{s}' did not finish within {d} s", .{ watchdog.what, seconds });
    }

    fn stop(watchdog: *Watchdog) void {
        watchdog.done.set();
        watchdog.thread.join();
    }
};

fn waitUntilStarted(future: *const Future) void {
    while (!future.isStarted()) std.Thread.yield() catch {};
}

/// Waits until every future has been released (tasks whose futures were dropped may still
/// be running), with a bound so a lost task fails the test instead of hanging it.
fn expectLiveFutures(expected: usize) !void {
    var attempts: u32 = 0;
    while (liveFutures() != expected and attempts < 20_000) : (attempts += 1) std.Thread.sleep(std.time.ns_per_ms);
    try testing.expectEqual(expected, liveFutures());
}

fn drainUnobserved() void {
    var buffer: [4096]u8 = undefined;
    while (unobserved.drain(&buffer) > 0) {}
}

test "forked mm completes and wait returns its value" {
    const a = try tensor.createZeroed(.float32, &.{ 3, 4 });
    defer a.release();
    const b = try tensor.createZeroed(.float32, &.{ 4, 5 });
    defer b.release();
    const future = try forkOp(.mm, &.{ a, b }, &.{});
    defer future.release();
    const value = try future.wait();
    defer value.release();
    try testing.expectEqualSlices(usize, &.{ 3, 5 }, value.dims());
    try testing.expect(future.isDone());
    // The task released its references to the inputs before completing.
    // Monotonic: complete()'s Release and wait()'s Acquire ordered the task's release.
    try testing.expectEqual(@as(u32, 1), a.refs.load(.monotonic));
}

test "a failing forked op stores its error for wait" {
    const a = try tensor.createZeroed(.float32, &.{ 3, 4 });
    defer a.release();
    const future = try forkOp(.mm, &.{ a, a }, &.{});
    defer future.release();
    try testing.expectError(error.ShapeMismatch, future.wait());
    var buffer: [128]u8 = undefined;
    const count = status.lastMessage(&buffer);
    try testing.expect(std.mem.startsWith(u8, buffer[0..count], "mm: "));
}

test "the global pool takes the inter-op setting and freezes it" {
    deinitGlobalForTesting();
    settings.resetForTesting();
    defer {
        deinitGlobalForTesting();
        settings.resetForTesting();
    }
    try settings.setNumInteropThreads(1);
    const a = try tensor.createZeroed(.float32, &.{ 2, 2 });
    defer a.release();
    const future = try forkOp(.add, &.{ a, a }, &.{});
    defer future.release();
    (try future.wait()).release();
    try testing.expectEqual(@as(u32, 1), (try global()).threadCount());
    try testing.expectError(error.ThreadSettings, settings.setNumInteropThreads(2));
    var buffer: [256]u8 = undefined;
    try testing.expectEqualStrings(settings.interop_error_message, buffer[0..status.lastMessage(&buffer)]);
}

/// Returns (a new reference to) a shared tensor: tests count its references to prove every
/// value and input was released.
const Leaf = struct {
    value: *Tensor,
    pub fn run(leaf: *Leaf) Error!*Tensor {
        leaf.value.retain();
        return leaf.value;
    }
};

test "errors name the task and are delivered to wait, or reported once when dropped" {
    drainUnobserved();
    const baseline = liveFutures();
    const reported = unobserved.totalReported();
    const a = try tensor.createZeroed(.float32, &.{ 3, 4 });
    defer a.release();
    const pool = try Pool.init(2);
    defer pool.deinit();

    // Waited twice: both waits get the error; it is observed, so never reported.
    const waited = try pool.forkOp(.mm, &.{ a, a }, &.{});
    try testing.expectError(error.ShapeMismatch, waited.wait());
    try testing.expectError(error.ShapeMismatch, waited.wait());
    waited.release();
    try testing.expectEqual(reported, unobserved.totalReported());

    // Dropped unobserved: reported exactly once, when the last reference goes.
    const dropped = try pool.forkOp(.mm, &.{ a, a }, &.{});
    dropped.release();
    try expectLiveFutures(baseline);
    try testing.expectEqual(reported + 1, unobserved.totalReported());
    var buffer: [1024]u8 = undefined;
    const length = unobserved.drain(&buffer);
    try testing.expect(std.mem.startsWith(u8, buffer[0..length], "mm: shapes [3, 4] and [3, 4]"));
    try testing.expectEqual(@as(u8, '\n'), buffer[length - 1]);
    try testing.expectEqual(@as(usize, 0), unobserved.drain(&buffer));

    // A task that fails without a message is named by its task name.
    const Silent = struct {
        unused: u8 = 0,
        pub fn run(_: *@This()) Error!*Tensor {
            return error.TaskFailed;
        }
    };
    const silent = try pool.fork("custom", Silent, .{});
    defer silent.release();
    try testing.expectError(error.TaskFailed, silent.wait());
    try testing.expectEqualStrings("custom: TaskFailed", buffer[0..status.lastMessage(&buffer)]);
}

/// Blocks its worker until `release` is set, then returns the shared value.
const Gate = struct {
    release: *std.Thread.ResetEvent,
    value: *Tensor,
    fail: bool = false,
    pub fn run(gate: *Gate) Error!*Tensor {
        gate.release.wait();
        if (gate.fail) return status.fail(error.TaskFailed, "gate: told to fail", .{});
        gate.value.retain();
        return gate.value;
    }
};

test "several threads wait on one future and all get its value or its error" {
    const shared = try tensor.createZeroed(.float32, &.{1});
    defer shared.release();
    const baseline = liveFutures();
    const reported = unobserved.totalReported();
    const pool = try Pool.init(1);
    defer pool.deinit();
    for ([_]bool{ false, true }) |fail| {
        var release: std.Thread.ResetEvent = .{};
        const future = try pool.fork("gate", Gate, .{ .release = &release, .value = shared, .fail = fail });
        waitUntilStarted(future);
        const Waiter = struct {
            fn main(f: *Future, outcome: *?Error) void {
                if (f.wait()) |value| value.release() else |err| outcome.* = err;
            }
        };
        var outcomes: [4]?Error = @splat(null);
        var threads: [4]std.Thread = undefined;
        for (&threads, &outcomes) |*thread, *outcome| thread.* = try std.Thread.spawn(.{}, Waiter.main, .{ future, outcome });
        std.Thread.sleep(std.time.ns_per_ms); // Let the waiters go to sleep on the future.
        release.set();
        for (threads) |thread| thread.join();
        for (outcomes) |outcome| try testing.expectEqual(if (fail) @as(?Error, error.TaskFailed) else null, outcome);
        future.release();
    }
    try expectLiveFutures(baseline);
    try testing.expectEqual(reported, unobserved.totalReported());
    // Monotonic: every holder's release happened before the futures were freed, which
    // expectLiveFutures observed through the slab's mutex.
    try testing.expectEqual(@as(u32, 1), shared.refs.load(.monotonic));
}

/// Forks itself `depth` levels deep and waits at every level.
const Nest = struct {
    pool: *Pool,
    depth: u32,
    value: *Tensor,
    on_worker: *Atomic(u32),

    pub fn run(nest: *Nest) Error!*Tensor {
        // Monotonic: a counter, read after the root's wait (which orders it).
        if (current_worker != null) _ = nest.on_worker.fetchAdd(1, .monotonic);
        if (nest.depth == 0) {
            nest.value.retain();
            return nest.value;
        }
        const child = try nest.pool.fork("nest", Nest, .{ .pool = nest.pool, .depth = nest.depth - 1, .value = nest.value, .on_worker = nest.on_worker });
        defer child.release();
        return child.wait();
    }
};

test "nested fork and wait eight levels deep completes on one inter-op thread" {
    var watchdog: Watchdog = .{ .what = "nested fork/wait" };
    try watchdog.start(60);
    defer watchdog.stop();
    const shared = try tensor.createZeroed(.float32, &.{1});
    defer shared.release();
    const pool = try Pool.init(1);
    defer pool.deinit();
    var on_worker: Atomic(u32) = .init(0);
    const root = try pool.fork("nest", Nest, .{ .pool = pool, .depth = 8, .value = shared, .on_worker = &on_worker });
    defer root.release();
    waitUntilStarted(root); // The worker, not this thread, runs the root.
    const value = try root.wait();
    value.release();
    // Monotonic: each increment happened before its task completed, and wait() returned.
    try testing.expectEqual(@as(u32, 9), on_worker.load(.monotonic));
}

/// Forks `count` leaves, then waits on all of them.
const FanOut = struct {
    pool: *Pool,
    count: u32,
    value: *Tensor,

    pub fn run(fan: *FanOut) Error!*Tensor {
        var children: [1000]*Future = undefined;
        assert(fan.count <= children.len);
        var forked: usize = 0;
        defer for (children[0..forked]) |child| child.release();
        while (forked < fan.count) : (forked += 1) children[forked] = try fan.pool.fork("leaf", Leaf, .{ .value = fan.value });
        for (children[0..forked]) |child| (try child.wait()).release();
        fan.value.retain();
        return fan.value;
    }
};

test "a fan-out of 1000 forks from a task completes on one inter-op thread" {
    var watchdog: Watchdog = .{ .what = "fan-out" };
    try watchdog.start(60);
    defer watchdog.stop();
    const shared = try tensor.createZeroed(.float32, &.{1});
    defer shared.release();
    const baseline = liveFutures();
    const pool = try Pool.init(1);
    defer pool.deinit();
    const root = try pool.fork("fan-out", FanOut, .{ .pool = pool, .count = 1000, .value = shared });
    waitUntilStarted(root);
    (try root.wait()).release();
    root.release();
    // And 1000 forks from outside the pool, waited from outside.
    var futures_out: [1000]*Future = undefined;
    for (&futures_out) |*f| f.* = try pool.fork("leaf", Leaf, .{ .value = shared });
    for (futures_out) |f| (try f.wait()).release();
    for (futures_out) |f| f.release();
    try expectLiveFutures(baseline);
    // Monotonic: every holder's release happened before the futures were freed, which
    // expectLiveFutures observed through the slab's mutex.
    try testing.expectEqual(@as(u32, 1), shared.refs.load(.monotonic));
}

/// Forks two children `depth` levels deep, waits on both, and notes the most futures alive
/// at any leaf.
const Tree = struct {
    pool: *Pool,
    depth: u32,
    value: *Tensor,
    peak_live: *Atomic(usize),

    pub fn run(tree: *Tree) Error!*Tensor {
        if (tree.depth == 0) {
            // Monotonic: a maximum, read after the root's wait (which orders it).
            _ = tree.peak_live.fetchMax(liveFutures(), .monotonic);
            tree.value.retain();
            return tree.value;
        }
        const child: Tree = .{ .pool = tree.pool, .depth = tree.depth - 1, .value = tree.value, .peak_live = tree.peak_live };
        const left = try tree.pool.fork("tree", Tree, child);
        defer left.release();
        const right = try tree.pool.fork("tree", Tree, child);
        defer right.release();
        (try left.wait()).release();
        (try right.wait()).release();
        tree.value.retain();
        return tree.value;
    }
};

test "a binary fork tree whose waits run the forks inline keeps few futures alive" {
    // Each claimed fork stays queued until popped; without popping them early, all 2^13
    // nodes of the tree would stay alive until the root completes.
    var watchdog: Watchdog = .{ .what = "binary fork tree" };
    try watchdog.start(60);
    defer watchdog.stop();
    const shared = try tensor.createZeroed(.float32, &.{1});
    defer shared.release();
    const baseline = liveFutures();
    const pool = try Pool.init(1);
    defer pool.deinit();
    var peak_live: Atomic(usize) = .init(0);
    const tree: Tree = .{ .pool = pool, .depth = 12, .value = shared, .peak_live = &peak_live };
    // On the worker (its deque), then from this thread (the injector).
    const root = try pool.fork("tree", Tree, tree);
    waitUntilStarted(root);
    (try root.wait()).release();
    root.release();
    var outside = tree;
    (try outside.run()).release();
    try expectLiveFutures(baseline);
    // Monotonic: see Tree.run.
    try testing.expect(peak_live.load(.monotonic) - baseline <= 4 * 12);
}

test "a waiting worker runs its own subtree while the awaited task runs elsewhere" {
    // The first child blocks until the second has run. The second sits in the waiting
    // worker's deque, so without help-while-waiting this deadlocks.
    var watchdog: Watchdog = .{ .what = "help while waiting" };
    try watchdog.start(60);
    defer watchdog.stop();
    const shared = try tensor.createZeroed(.float32, &.{1});
    defer shared.release();
    const pool = try Pool.init(2);
    defer pool.deinit();
    const Parent = struct {
        pool: *Pool,
        value: *Tensor,
        pub fn run(parent: *@This()) Error!*Tensor {
            var gate_open: std.Thread.ResetEvent = .{};
            const blocked = try parent.pool.fork("gate", Gate, .{ .release = &gate_open, .value = parent.value });
            defer blocked.release();
            const Opener = struct {
                gate: *std.Thread.ResetEvent,
                value: *Tensor,
                pub fn run(opener: *@This()) Error!*Tensor {
                    opener.gate.set();
                    opener.value.retain();
                    return opener.value;
                }
            };
            const opener = try parent.pool.fork("opener", Opener, .{ .gate = &gate_open, .value = parent.value });
            defer opener.release();
            waitUntilStarted(blocked); // Stolen by the other worker.
            (try blocked.wait()).release();
            return opener.wait();
        }
    };
    const root = try pool.fork("parent", Parent, .{ .pool = pool, .value = shared });
    defer root.release();
    waitUntilStarted(root);
    (try root.wait()).release();
}

test "thread-local state travels with the task and is restored afterwards" {
    const shared = try tensor.createZeroed(.float32, &.{1});
    defer shared.release();
    const pool = try Pool.init(1);
    defer pool.deinit();
    const Probe = struct {
        pool: *Pool,
        value: *Tensor,
        seen: *ThreadLocalState,
        seen_by_child: *ThreadLocalState,
        pub fn run(probe: *@This()) Error!*Tensor {
            probe.seen.* = ThreadLocalState.get();
            if (probe.seen_by_child != probe.seen) {
                // Forked from inside a task: the child inherits the installed state.
                const child = try probe.pool.fork("probe", @This(), .{ .pool = probe.pool, .value = probe.value, .seen = probe.seen_by_child, .seen_by_child = probe.seen_by_child });
                defer child.release();
                (try child.wait()).release();
            }
            probe.value.retain();
            return probe.value;
        }
    };
    const saved = ThreadLocalState.get();
    defer ThreadLocalState.set(saved);
    ThreadLocalState.set(.{ .grad_enabled = false, .request_id = 42 });
    var seen: ThreadLocalState = .{};
    var seen_by_child: ThreadLocalState = .{};
    const first = try pool.fork("probe", Probe, .{ .pool = pool, .value = shared, .seen = &seen, .seen_by_child = &seen_by_child });
    defer first.release();
    waitUntilStarted(first);
    (try first.wait()).release();
    try testing.expectEqual(ThreadLocalState{ .grad_enabled = false, .request_id = 42 }, seen);
    try testing.expectEqual(ThreadLocalState{ .grad_enabled = false, .request_id = 42 }, seen_by_child);
    // The worker went back to its own state: a task forked with defaults sees defaults.
    ThreadLocalState.set(.{});
    const second = try pool.fork("probe", Probe, .{ .pool = pool, .value = shared, .seen = &seen, .seen_by_child = &seen });
    defer second.release();
    waitUntilStarted(second);
    (try second.wait()).release();
    try testing.expectEqual(ThreadLocalState{}, seen);
}

fn processCpuMicroseconds() i64 {
    const usage = std.posix.getrusage(std.posix.rusage.SELF);
    const user = usage.utime.sec * std.time.us_per_s + usage.utime.usec;
    return user + usage.stime.sec * std.time.us_per_s + usage.stime.usec;
}

test "idle workers sleep on the futex and use no CPU" {
    const shared = try tensor.createZeroed(.float32, &.{1});
    defer shared.release();
    const pool = try Pool.init(2);
    defer pool.deinit();
    const future = try pool.fork("leaf", Leaf, .{ .value = shared });
    (try future.wait()).release();
    future.release();
    // Both workers finish spinning and sleep (bounded: a spinning worker fails the test).
    var attempts: u32 = 0;
    // SeqCst: the counter idle() maintains; any order would do for polling.
    while (pool.sleepers.load(.seq_cst) != 2 and attempts < 5000) : (attempts += 1) std.Thread.sleep(std.time.ns_per_ms);
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

test "fork refuses nesting deeper than max_fork_depth" {
    const pool = try Pool.init(1);
    defer pool.deinit();
    const saved = fork_depth;
    defer fork_depth = saved;
    fork_depth = max_fork_depth;
    const baseline = liveFutures();
    const Never = struct {
        fn run(_: *anyopaque) Error!*Tensor {
            unreachable;
        }
    };
    var context: u8 = 0;
    try testing.expectError(error.TooLarge, pool.forkFn("deep", &context, Never.run));
    try testing.expectEqual(baseline, liveFutures());
}

/// Random trees of forks, waits and injected failures; every decision comes from the
/// node's own seed, so the tree is the same whatever the schedule.
const Stress = struct {
    pool: *Pool,
    value: *Tensor,
    forked: Atomic(u32) = .init(0),
    ran: Atomic(u32) = .init(0),
    injected: Atomic(u32) = .init(0),
    observed: Atomic(u32) = .init(0),

    const max_depth = 5;
    const max_children = 4;

    const Node = struct {
        stress: *Stress,
        seed: u64,
        depth: u32,

        pub fn run(node: *Node) Error!*Tensor {
            const stress = node.stress;
            // Monotonic for all counters: read after every task has finished (see stressOnce).
            _ = stress.ran.fetchAdd(1, .monotonic);
            var prng = std.Random.DefaultPrng.init(node.seed);
            const random = prng.random();
            const child_count = if (node.depth < max_depth) random.uintLessThan(u32, max_children + 1) else 0;
            var children: [max_children]*Future = undefined;
            for (children[0..child_count], 0..) |*child, index| {
                child.* = stress.forkNode(random.int(u64), node.depth + 1) catch |err| {
                    for (children[0..index]) |forked| stress.settle(forked, random);
                    return err;
                };
            }
            for (children[0..child_count]) |child| stress.settle(child, random);
            if (random.uintLessThan(u32, 8) == 0) {
                _ = stress.injected.fetchAdd(1, .monotonic);
                return status.fail(error.TaskFailed, "stress: injected failure in node {x}", .{node.seed});
            }
            stress.value.retain();
            return stress.value;
        }
    };

    fn forkNode(stress: *Stress, seed: u64, depth: u32) Error!*Future {
        const future = try stress.pool.fork("stress", Node, .{ .stress = stress, .seed = seed, .depth = depth });
        // Monotonic: a counter, read once every future is freed (ordered by the slab mutex).
        _ = stress.forked.fetchAdd(1, .monotonic);
        return future;
    }

    /// Waits on the future (once or twice) or drops it unobserved, then releases it.
    fn settle(stress: *Stress, future: *Future, random: std.Random) void {
        defer future.release();
        const action = random.uintLessThan(u32, 8);
        if (action < 2) return; // Dropped: an error in it is reported when it is freed.
        const waits: u32 = if (action == 7) 2 else 1;
        var failed = false;
        for (0..waits) |_| {
            if (future.wait()) |value| value.release() else |_| failed = true;
        }
        // Monotonic: a counter, read once every future is freed (ordered by the slab mutex).
        if (failed) _ = stress.observed.fetchAdd(1, .monotonic);
    }
};

fn stressOnce(thread_count: u32, seed: u64) !void {
    drainUnobserved();
    const shared = try tensor.createZeroed(.float32, &.{1});
    defer shared.release();
    const baseline_futures = liveFutures();
    const baseline_tensors = tensor.table.liveCount();
    const baseline_reported = unobserved.totalReported();
    const pool = try Pool.init(thread_count);
    var stress: Stress = .{ .pool = pool, .value = shared };
    var prng = std.Random.DefaultPrng.init(seed);
    const random = prng.random();
    var roots: [16]*Future = undefined;
    for (&roots) |*root| root.* = try stress.forkNode(random.int(u64), 0);
    for (roots) |root| stress.settle(root, random);
    try expectLiveFutures(baseline_futures);
    pool.deinit();
    // Monotonic loads: every task has finished (the futures are freed) and the pool joined.
    const forked = stress.forked.load(.monotonic);
    try testing.expect(forked > roots.len);
    try testing.expectEqual(forked, stress.ran.load(.monotonic));
    const injected = stress.injected.load(.monotonic);
    const reported: u32 = @intCast(unobserved.totalReported() - baseline_reported);
    try testing.expect(injected > 0);
    try testing.expectEqual(injected, stress.observed.load(.monotonic) + reported);
    var drained_lines: u32 = 0;
    var buffer: [4096]u8 = undefined;
    while (true) {
        const length = unobserved.drain(&buffer);
        if (length == 0) break;
        drained_lines += @intCast(std.mem.count(u8, buffer[0..length], "\n"));
    }
    try testing.expectEqual(@min(reported, Unobserved.capacity), drained_lines);
    try testing.expectEqual(baseline_tensors, tensor.table.liveCount());
    // Monotonic: every holder's release happened before the futures were freed, which
    // expectLiveFutures observed through the slab's mutex.
    try testing.expectEqual(@as(u32, 1), shared.refs.load(.monotonic));
}

test "stress: random nested forks, waits and failures on one, two and four threads" {
    var watchdog: Watchdog = .{ .what = "stress" };
    try watchdog.start(300);
    defer watchdog.stop();
    var seed: u64 = 0x5eed_0001;
    for ([_]u32{ 1, 2, 4 }) |thread_count| {
        for (0..8) |_| {
            try stressOnce(thread_count, seed);
            seed += 1;
        }
    }
}

test "the completion queue delivers each watched future's token once" {
    var tokens: [8]u64 = undefined;
    while (completion_queue.poll(&tokens) > 0) {}
    const shared = try tensor.createZeroed(.float32, &.{1});
    defer shared.release();
    const baseline = liveFutures();
    const pool = try Pool.init(1);
    defer pool.deinit();

    // Watched while pending: the token arrives when it completes.
    var release: std.Thread.ResetEvent = .{};
    const pending = try pool.fork("gate", Gate, .{ .release = &release, .value = shared });
    try pending.watch(7);
    try testing.expectError(error.InvalidArgument, pending.watch(8));
    try testing.expectEqual(@as(usize, 0), completion_queue.poll(&tokens));
    release.set();
    try testing.expectEqual(@as(usize, 1), completion_queue.wait(&tokens, 10 * std.time.ns_per_s));
    try testing.expectEqual(@as(u64, 7), tokens[0]);
    try testing.expect(pending.isDone());
    (try pending.wait()).release();
    pending.release();

    // Watched when already complete: the token is queued at once.
    const done = try pool.fork("leaf", Leaf, .{ .value = shared });
    (try done.wait()).release();
    try done.watch(9);
    done.release(); // The queue keeps it alive until the token is taken.
    try testing.expectEqual(@as(usize, 1), completion_queue.poll(&tokens));
    try testing.expectEqual(@as(u64, 9), tokens[0]);

    // Empty: wait times out; interrupt makes it return at once.
    try testing.expectEqual(@as(usize, 0), completion_queue.wait(&tokens, std.time.ns_per_ms));
    completion_queue.interrupt();
    try testing.expectEqual(@as(usize, 0), completion_queue.wait(&tokens, 10 * std.time.ns_per_s));
    try expectLiveFutures(baseline);
}

test "the completion queue takes 1000 futures in flight from a blocked waiter" {
    var watchdog: Watchdog = .{ .what = "completion queue" };
    try watchdog.start(60);
    defer watchdog.stop();
    const shared = try tensor.createZeroed(.float32, &.{1});
    defer shared.release();
    const baseline = liveFutures();
    const pool = try Pool.init(2);
    defer pool.deinit();
    const count = 1000;
    const Collector = struct {
        fn main(seen: *[count]u8) void {
            var tokens: [64]u64 = undefined;
            var total: usize = 0;
            while (total < count) {
                const taken = completion_queue.wait(&tokens, 10 * std.time.ns_per_s);
                for (tokens[0..taken]) |token| seen[token] += 1;
                total += taken;
            }
        }
    };
    var seen: [count]u8 = @splat(0);
    const collector = try std.Thread.spawn(.{}, Collector.main, .{&seen});
    for (0..count) |token| {
        const future = try pool.fork("leaf", Leaf, .{ .value = shared });
        try future.watch(token);
        future.release();
    }
    collector.join();
    for (seen) |times| try testing.expectEqual(@as(u8, 1), times);
    try expectLiveFutures(baseline);
    // Monotonic: every holder's release happened before the futures were freed, which
    // expectLiveFutures observed through the slab's mutex.
    try testing.expectEqual(@as(u32, 1), shared.refs.load(.monotonic));
}
