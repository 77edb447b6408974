//! Futures: forking a task onto the inter-op pool (inter_op.zig) and the result it
//! completes, a tensor or an error (threading spec §5). fork() copies the task's context
//! into a future node and schedules the node's Task; wait() joins it. Reference counted:
//! the holders are the caller (or the handle table, `table`), the queued task, and a
//! registered watch, whose completion token goes through the completion queue
//! (completion_queue.zig) to TypeScript. A failed future dropped unobserved is reported to
//! the unobserved list (unobserved.zig). Contexts come from the layers above: exports.zig
//! forks ops (OpTask), interpreter/execute.zig forks graphs (GraphTask).
//!
//! Waiting never deadlocks, whatever the pool size (spec §5, PyTorch issue #109782):
//!   1. A waiter first claims the awaited task itself when no thread has started it yet, and
//!      runs it inline. Every queued task can be claimed this way, wherever it is queued.
//!   2. A pool worker whose awaited task runs elsewhere helps: it runs tasks from its own
//!      deque that were pushed since its current task started (Pool.helpOnce). Those are
//!      that task's own subtree, so they can never wait on a frame below them on this stack.
//!   3. Otherwise it spins, then sleeps on the future: the awaited task is running on
//!      another thread, and that thread can always finish it by rules 1 and 2.
//! Why this holds: futures reach a task only as fork arguments or from its own forks (as in
//! TorchScript), so a task waits only on futures created before it or inside its subtree;
//! nothing run on top of a frame by rules 1 and 2 can wait on that frame or one below it.
//! Helping with *unrelated* tasks is deliberately not done: X waits on F, helps with U
//! (forked later, with X's future as argument), U waits on X, which sits below U on the
//! same stack and can never resume. Limits: a future smuggled through shared state into
//! the subtree it depends on breaks the argument, and past the pool's frame bound a waiter
//! sleeps instead of running tasks inline.
//!
//! A task claimed by rule 1 stays queued, holding the queue's reference to its node, until
//! some thread pops it. The pool pops such tasks early (isClaimedTask tells it which): a
//! worker's waiter, once it has run a task inline, pops the claimed tasks at the top of its
//! deque (Pool.dropClaimed), and a push onto the injector first drops the claimed tasks at
//! its tail. So a deep fork tree run mostly inline keeps a few nodes per level alive, not
//! one per fork until its root completes (and never nears max_live_futures).
//!
//! What allocates: future nodes, in slabs of `slab_nodes` whenever the number of live
//! futures exceeds its previous peak (slab.zig). Slabs are recycled, never freed, so a fork
//! in steady state takes a node from the free list and allocates nothing.
const std = @import("std");
const status = @import("../status.zig");
const tensor = @import("../tensor.zig");
const handles = @import("../handles.zig");
const Pool = @import("inter_op.zig");
const ThreadLocalState = @import("thread_local_state.zig");
const Slab = @import("slab.zig").Slab;
const channels = @import("channels.zig");
const Unobserved = @import("unobserved.zig");

const Error = status.Error;
const Tensor = tensor.Tensor;
const Atomic = std.atomic.Value;
const Futex = std.Thread.Futex;
const assert = std.debug.assert;
const appendTruncated = status.appendTruncated;

const Future = @This();

/// Futures alive at once (pending or held). A bound on memory, not a count programs meet:
/// fire-and-forget code (forks nobody waits on, released only when JavaScript's GC finalises
/// their wrappers) may hold hundreds of thousands, and the slab grows for them. Each node is
/// about 1.3 KiB, so a runaway fork loop stops near 1.4 GiB instead of exhausting memory.
pub const max_live_futures: u32 = 1 << 20;
/// Forks nested inside forked tasks. TorchScript has no recursion, so real programs nest a
/// handful of levels; the bound turns runaway recursion into an error, not a stack overflow.
pub const max_fork_depth: u32 = 256;
/// Bytes a fork's context may occupy inside the future node (exports.zig's OpTask, an op
/// with all its inputs and parameters, needs 352: the recurrent ops' activation lists).
pub const payload_capacity = 384;
pub const payload_alignment = 16;
/// Future nodes allocated at once when the free list runs dry.
const slab_nodes = 64;
/// Spin iterations of a waiter before it sleeps on the future: long enough to catch a short
/// task's completion, short enough not to burn a shared core (≈ 10–40 µs).
const spin_limit_wait = 512;

const phase_mask: u32 = 0b11;
const phase_pending: u32 = 0;
const phase_succeeded: u32 = 1;
const phase_failed: u32 = 2;
/// Set while pending when some thread sleeps on the state word: completion wakes them.
const waiters_bit: u32 = 1 << 2;
/// Set while pending when a completion token is registered: completion enqueues it.
const watched_bit: u32 = 1 << 3;

/// The node's link into the pool: scheduled once per fork, runs runQueued().
task: Pool.Task,
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
/// The completion queue of the watcher's channel (set with watch_token).
watch_queue: ?*CompletionQueues.Queue = null,
/// Link in the completion queue (holds the watch's reference).
completion_next: ?*Future = null,
thread_state: ThreadLocalState,
name: []const u8,
run_fn: *const fn (payload: *anyopaque) Error!*Tensor,
deinit_fn: *const fn (payload: *anyopaque) void,
payload: [payload_capacity]u8 align(payload_alignment) = undefined,
message: [status.message_capacity]u8 = undefined,

/// Fork depth of the future whose task runs on this thread (0 outside tasks).
threadlocal var fork_depth: u32 = 0;

/// Future nodes of the process.
var slab: Slab(Future, slab_nodes, max_live_futures) = .{};
/// Tokens of completed watched futures, per channel (one per JavaScript isolate), for each
/// isolate's waiter (exports.zig).
const CompletionQueues = channels.Queues(Future, max_live_futures);
pub var completion_queues: CompletionQueues = .{};
/// Errors of failed futures dropped before anyone waited on them.
pub var unobserved: Unobserved = .{};
/// Handles of the futures TypeScript holds.
pub var table: handles.Table(Future, "future") = .{};

/// Forks `context.run()` as a task on `pool` and returns its future with one reference for
/// the caller. `Context` is copied into the future node (no allocation); it declares
/// `fn run(*Context) Error!*Tensor` and may declare `fn deinit(*Context) void`, called once
/// the task has run (to drop the references it held). `name` (static) names the task in
/// error messages. On error the context is not consumed.
pub fn fork(pool: *Pool, name: []const u8, comptime Context: type, context: Context) Error!*Future {
    comptime assert(@sizeOf(Context) <= payload_capacity);
    comptime assert(@alignOf(Context) <= payload_alignment);
    const depth = fork_depth + 1;
    if (depth > max_fork_depth) {
        return status.fail(error.TooLarge, "fork {s}: forks nested deeper than {d}", .{ name, max_fork_depth });
    }
    const future = slab.acquire() catch |err| return switch (err) {
        error.TooLarge => status.fail(error.TooLarge, "fork: {d} futures are alive (about {d} MiB of future nodes); wait on or drop some before forking more", .{ max_live_futures, max_live_futures * @sizeOf(Future) >> 20 }),
        error.OutOfMemory => status.fail(error.OutOfMemory, "fork: out of memory for future nodes", .{}),
    };
    const Erased = ErasedContext(Context);
    future.* = .{
        .task = .{ .run_fn = runQueued, .is_claimed_fn = isClaimedTask },
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

/// Forks `run_fn(context)` on `pool`. The caller keeps `context` alive until the future
/// completes.
pub fn forkFn(pool: *Pool, name: []const u8, context: *anyopaque, run_fn: *const fn (context: *anyopaque) Error!*Tensor) Error!*Future {
    return fork(pool, name, FnTask, .{ .context = context, .run_fn = run_fn });
}

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

/// Futures alive now: pending, completed but still held, or queued for TypeScript.
pub fn liveCount() usize {
    return slab.liveCount();
}

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
    // Monotonic: the Acquire in release() already ordered complete()'s swap (done before
    // the runner dropped its reference) before this load.
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

/// Whether some thread has started the task (isClaimedTask asks it for the pool; tests use
/// it to pin a task to a worker).
fn isStarted(future: *const Future) bool {
    // Monotonic: a hint; a caller that needs the results goes through isDone(). Pairs with
    // nothing: claim()'s exchange publishes nothing either.
    return future.claimed.load(.monotonic);
}

/// Task.is_claimed_fn of futures: whether the queued task's future has been claimed, so that
/// popping it would only drop the queue's reference. A claim is never undone; a stale false
/// only leaves the task queued for a worker to pop as usual.
fn isClaimedTask(task: *const Pool.Task) bool {
    const future: *const Future = @alignCast(@fieldParentPtr("task", task));
    // isStarted()'s Monotonic load: nothing is read through the answer. A task popped
    // because of it goes to runQueued(), whose claim() exchange (an RMW, so it sees the
    // claim) declines to run it again.
    return future.isStarted();
}

/// Waits until the future completes (running it inline when no thread started it yet,
/// helping on a pool worker) and returns its value with a new reference, or its error with
/// the task's message recorded on this thread. The caller holds a reference. Any number of
/// threads may wait on one future.
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

/// The three rules of the module comment, in order.
fn waitUntilDone(future: *Future) void {
    if (Pool.Frame.enter()) |frame| {
        const ran_inline = future.claim();
        if (ran_inline) future.execute();
        frame.leave();
        if (ran_inline) {
            // Outside the frame, so that the mark is the waiting task's again and the
            // task just run (queued beneath the frame's mark) can be popped as well.
            Pool.dropClaimed();
            return;
        }
    }
    var spins: u32 = 0;
    while (!future.isDone()) {
        if (Pool.helpOnce()) {
            spins = 0;
            continue;
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
            // Monotonic: the bit publishes nothing, it only asks complete() to call wake. A
            // completed state seen on failure ends the loop, and the caller's isDone() does
            // the Acquire load that pairs with complete().
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
    // Monotonic: the exchange only elects one runner. The payload it reads was written by
    // fork() before the future was published (through a queue mutex to workers, through
    // whatever handed the future over to a waiter).
    return !future.claimed.swap(true, .monotonic);
}

/// Task.run_fn of futures: runs when popped from a queue, unless a waiter claimed it first;
/// drops the queue's reference either way.
fn runQueued(task: *Pool.Task) void {
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
    // Inputs are released before completion: once wait() returns, the task holds no tensor
    // any more.
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
    // Release publishes value/failure/message to every Acquire load of the state (isDone,
    // sleepUntilDone, result). Acquire pairs with the Release CAS in watch(), making
    // watch_token visible when the watched bit is set.
    const previous = future.state.swap(phase, .acq_rel);
    assert(previous & phase_mask == phase_pending);
    // The caller holds a reference (queue or inline waiter) across both calls.
    if (previous & watched_bit != 0) future.watch_queue.?.push(future);
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

/// Registers `token` for the completion queue of `channel`: it is pushed when the future
/// completes, or now when it already has. At most one token per future.
pub fn watch(future: *Future, channel: u32, token: u64) Error!void {
    const queue = try completion_queues.get(channel);
    // Monotonic: only elects the first watcher; the token is published by the CAS below.
    if (future.watch_registered.swap(true, .monotonic)) {
        return status.fail(error.InvalidArgument, "future_watch: the future already has a completion token", .{});
    }
    future.watch_token = token;
    future.watch_queue = queue;
    future.retain(); // The watch's reference, handed to the completion queue.
    // Monotonic: only chooses between the CAS and pushing now; a completed future is pushed
    // as is, and whoever takes its token waits on it with Acquire loads.
    var current = future.state.load(.monotonic);
    while (current & phase_mask == phase_pending) {
        // Release on success publishes watch_token to complete()'s Acquire swap.
        current = future.state.cmpxchgWeak(current, current | watched_bit, .release, .monotonic) orelse return;
    }
    // Already complete: complete() saw no watched bit, so the token is ours to push.
    queue.push(future);
}

// ---------------------------------------------------------------------------------------
// Tests.

const testing = std.testing;
const Watchdog = @import("watchdog.zig");

fn waitUntilStarted(future: *const Future) void {
    while (!future.isStarted()) std.Thread.yield() catch {};
}

/// Waits until every future has been released (tasks whose futures were dropped may still
/// be running), with a bound so a lost task fails the test instead of hanging it.
fn expectLiveFutures(expected: usize) !void {
    var attempts: u32 = 0;
    while (liveCount() != expected and attempts < 20_000) : (attempts += 1) std.Thread.sleep(std.time.ns_per_ms);
    try testing.expectEqual(expected, liveCount());
}

fn drainUnobserved() void {
    var buffer: [4096]u8 = undefined;
    while (unobserved.drain(&buffer) > 0) {}
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

/// Fails as an op does: its message starts with the op's name, which is also the task's.
const FailingOp = struct {
    unused: u8 = 0,
    pub fn run(_: *FailingOp) Error!*Tensor {
        return status.fail(error.ShapeMismatch, "mm: shapes [3, 4] and [3, 4] cannot be multiplied", .{});
    }
};

test "errors name the task and are delivered to wait, or reported once when dropped" {
    Pool.quiesceGlobalForTesting();
    drainUnobserved();
    const baseline = liveCount();
    const reported = unobserved.totalReported();
    const pool = try Pool.init(2);
    defer pool.deinit();

    // Waited twice: both waits get the error; it is observed, so never reported.
    const waited = try fork(pool, "mm", FailingOp, .{});
    try testing.expectError(error.ShapeMismatch, waited.wait());
    try testing.expectError(error.ShapeMismatch, waited.wait());
    waited.release();
    try testing.expectEqual(reported, unobserved.totalReported());

    // Dropped unobserved: reported exactly once, when the last reference goes. The message
    // already names the op: it is not prefixed again.
    const dropped = try fork(pool, "mm", FailingOp, .{});
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
    const silent = try fork(pool, "custom", Silent, .{});
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
    Pool.quiesceGlobalForTesting();
    const baseline = liveCount();
    const reported = unobserved.totalReported();
    const pool = try Pool.init(1);
    defer pool.deinit();
    for ([_]bool{ false, true }) |fail| {
        var opened: std.Thread.ResetEvent = .{};
        const future = try fork(pool, "gate", Gate, .{ .release = &opened, .value = shared, .fail = fail });
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
        opened.set();
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
        if (Pool.onWorkerThread()) _ = nest.on_worker.fetchAdd(1, .monotonic);
        if (nest.depth == 0) {
            nest.value.retain();
            return nest.value;
        }
        const child = try fork(nest.pool, "nest", Nest, .{ .pool = nest.pool, .depth = nest.depth - 1, .value = nest.value, .on_worker = nest.on_worker });
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
    const root = try fork(pool, "nest", Nest, .{ .pool = pool, .depth = 8, .value = shared, .on_worker = &on_worker });
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
        while (forked < fan.count) : (forked += 1) children[forked] = try fork(fan.pool, "leaf", Leaf, .{ .value = fan.value });
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
    Pool.quiesceGlobalForTesting();
    const baseline = liveCount();
    const pool = try Pool.init(1);
    defer pool.deinit();
    const root = try fork(pool, "fan-out", FanOut, .{ .pool = pool, .count = 1000, .value = shared });
    waitUntilStarted(root);
    (try root.wait()).release();
    root.release();
    // And 1000 forks from outside the pool, waited from outside.
    var futures_out: [1000]*Future = undefined;
    for (&futures_out) |*f| f.* = try fork(pool, "leaf", Leaf, .{ .value = shared });
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
            _ = tree.peak_live.fetchMax(liveCount(), .monotonic);
            tree.value.retain();
            return tree.value;
        }
        const child: Tree = .{ .pool = tree.pool, .depth = tree.depth - 1, .value = tree.value, .peak_live = tree.peak_live };
        const left = try fork(tree.pool, "tree", Tree, child);
        defer left.release();
        const right = try fork(tree.pool, "tree", Tree, child);
        defer right.release();
        (try left.wait()).release();
        (try right.wait()).release();
        tree.value.retain();
        return tree.value;
    }
};

test "a binary fork tree whose waits run the forks inline keeps few futures alive" {
    // A fork that its waiter ran inline must not stay alive until the root completes:
    // otherwise all 2^13 nodes of the tree would be alive at once.
    var watchdog: Watchdog = .{ .what = "binary fork tree" };
    try watchdog.start(60);
    defer watchdog.stop();
    const shared = try tensor.createZeroed(.float32, &.{1});
    defer shared.release();
    Pool.quiesceGlobalForTesting();
    const baseline = liveCount();
    const pool = try Pool.init(1);
    defer pool.deinit();
    var peak_live: Atomic(usize) = .init(0);
    const tree: Tree = .{ .pool = pool, .depth = 12, .value = shared, .peak_live = &peak_live };
    // On the worker (its deque), then from this thread (the injector).
    const root = try fork(pool, "tree", Tree, tree);
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
            const blocked = try fork(parent.pool, "gate", Gate, .{ .release = &gate_open, .value = parent.value });
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
            const opener = try fork(parent.pool, "opener", Opener, .{ .gate = &gate_open, .value = parent.value });
            defer opener.release();
            waitUntilStarted(blocked); // Stolen by the other worker.
            (try blocked.wait()).release();
            return opener.wait();
        }
    };
    const root = try fork(pool, "parent", Parent, .{ .pool = pool, .value = shared });
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
                const child = try fork(probe.pool, "probe", @This(), .{ .pool = probe.pool, .value = probe.value, .seen = probe.seen_by_child, .seen_by_child = probe.seen_by_child });
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
    const first = try fork(pool, "probe", Probe, .{ .pool = pool, .value = shared, .seen = &seen, .seen_by_child = &seen_by_child });
    defer first.release();
    waitUntilStarted(first);
    (try first.wait()).release();
    try testing.expectEqual(ThreadLocalState{ .grad_enabled = false, .request_id = 42 }, seen);
    try testing.expectEqual(ThreadLocalState{ .grad_enabled = false, .request_id = 42 }, seen_by_child);
    // The worker went back to its own state: a task forked with defaults sees defaults.
    ThreadLocalState.set(.{});
    const second = try fork(pool, "probe", Probe, .{ .pool = pool, .value = shared, .seen = &seen, .seen_by_child = &seen });
    defer second.release();
    waitUntilStarted(second);
    (try second.wait()).release();
    try testing.expectEqual(ThreadLocalState{}, seen);
}

test "fork refuses nesting deeper than max_fork_depth" {
    const pool = try Pool.init(1);
    defer pool.deinit();
    const saved = fork_depth;
    defer fork_depth = saved;
    fork_depth = max_fork_depth;
    Pool.quiesceGlobalForTesting();
    const baseline = liveCount();
    const Never = struct {
        fn run(_: *anyopaque) Error!*Tensor {
            unreachable;
        }
    };
    var context: u8 = 0;
    try testing.expectError(error.TooLarge, forkFn(pool, "deep", &context, Never.run));
    try testing.expectEqual(baseline, liveCount());
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
        const future = try fork(stress.pool, "stress", Node, .{ .stress = stress, .seed = seed, .depth = depth });
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
    Pool.quiesceGlobalForTesting();
    drainUnobserved();
    const shared = try tensor.createZeroed(.float32, &.{1});
    defer shared.release();
    const baseline_futures = liveCount();
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
    const channel = try channels.open();
    const completion_queue = try completion_queues.get(channel);
    const shared = try tensor.createZeroed(.float32, &.{1});
    defer shared.release();
    Pool.quiesceGlobalForTesting();
    const baseline = liveCount();
    const pool = try Pool.init(1);
    defer pool.deinit();

    // Watched while pending: the token arrives when it completes.
    var opened: std.Thread.ResetEvent = .{};
    const pending = try fork(pool, "gate", Gate, .{ .release = &opened, .value = shared });
    try pending.watch(channel, 7);
    try testing.expectError(error.InvalidArgument, pending.watch(channel, 8));
    try testing.expectEqual(@as(usize, 0), completion_queue.poll(&tokens));
    opened.set();
    try testing.expectEqual(@as(usize, 1), completion_queue.wait(&tokens, 10 * std.time.ns_per_s));
    try testing.expectEqual(@as(u64, 7), tokens[0]);
    try testing.expect(pending.isDone());
    (try pending.wait()).release();
    pending.release();

    // Watched when already complete: the token is queued at once.
    const done = try fork(pool, "leaf", Leaf, .{ .value = shared });
    (try done.wait()).release();
    try done.watch(channel, 9);
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
    Pool.quiesceGlobalForTesting();
    const baseline = liveCount();
    const pool = try Pool.init(2);
    defer pool.deinit();
    const count = 1000;
    const channel = try channels.open();
    const Collector = struct {
        fn main(queue: *CompletionQueues.Queue, seen: *[count]u8) void {
            var tokens: [64]u64 = undefined;
            var total: usize = 0;
            while (total < count) {
                const taken = queue.wait(&tokens, 10 * std.time.ns_per_s);
                for (tokens[0..taken]) |token| seen[token] += 1;
                total += taken;
            }
        }
    };
    var seen: [count]u8 = @splat(0);
    const collector = try std.Thread.spawn(.{}, Collector.main, .{ try completion_queues.get(channel), &seen });
    for (0..count) |token| {
        const future = try fork(pool, "leaf", Leaf, .{ .value = shared });
        try future.watch(channel, token);
        future.release();
    }
    collector.join();
    for (seen) |times| try testing.expectEqual(@as(u8, 1), times);
    try expectLiveFutures(baseline);
    // Monotonic: every holder's release happened before the futures were freed, which
    // expectLiveFutures observed through the slab's mutex.
    try testing.expectEqual(@as(u32, 1), shared.refs.load(.monotonic));
}
