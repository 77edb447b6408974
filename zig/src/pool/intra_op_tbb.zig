//! -Dthreading=tbb: one process-wide work-stealing pool shared by every caller, as oneTBB
//! does (threading spec §4). However many threads start regions at once, the pool never
//! runs more than `threads - 1` workers: callers participate instead of adding threads.
//!
//! Work: a region is an intrusive Task (in the caller's stack frame) plus a range of chunk
//! indices. Whoever runs a range of more than one chunk splits it in halves, pushes the upper
//! half on its own deque (thieves take it) and keeps the lower one, down to one chunk, as
//! TBB's parallel_for splits a blocked_range. Workers own a deque each (deque.zig, shared
//! with the inter-op pool); a caller borrows one of `callers_max` caller deques for the
//! duration of its region. An idle worker steals the oldest (largest) entry of another
//! deque. A caller that finished its own chunks helps only its own region: it pops its
//! deque, then steals entries of its region, then sleeps until the last chunk completes.
//! Nothing is allocated per region or per chunk.
//!
//! Sleeping and waking: a worker that finds nothing spins (bounded), then sleeps on the wake
//! epoch (wake_epoch.zig, the futex protocol it shares with the inter-op pool). Pushing work
//! wakes at most one sleeper and only when no worker is searching; the woken worker counts
//! as searching at once, and wakes the next one only when it finds work itself (wake
//! throttling, as in kprotty/zap). An idle process uses no CPU.
//!
//! Thread count: workers are spawned on demand, up to min(threads - 1, chunks - 1). When
//! setNumThreads goes down, the excess workers exit once idle, highest index first, from
//! the next parallel region on.
const std = @import("std");
const settings = @import("../settings.zig");
const status = @import("../status.zig");
const intra_op = @import("intra_op.zig");
const WakeEpoch = @import("wake_epoch.zig");

const assert = std.debug.assert;
const Futex = std.Thread.Futex;
const Error = status.Error;
const Region = intra_op.Region;
const FirstError = intra_op.FirstError;

const Pool = @This();

const workers_max = intra_op.workers_max;
/// Callers that can run a region at once; more run their regions serially (the pool's
/// threads are busy anyway).
const callers_max = 64;
/// A range of at most max_threads chunks is split at most log2(max_threads) times before its
/// owner pops anything, so this many entries always suffice (push still checks).
const deque_capacity = 16;
comptime {
    assert(deque_capacity > std.math.log2_int_ceil(u32, settings.max_threads));
}
/// Attempts (a scan of the deques and a pause) before a caller stops helping and sleeps:
/// tens of microseconds.
const spin_limit = 1 << 11;
/// A searching worker's attempts before it sleeps, and the most pause instructions between
/// two: the pause doubles after each empty scan, so an idle worker neither hammers the
/// deques' cache lines nor races callers for the chunks of tiny regions, and still sleeps
/// within about a millisecond.
const search_attempts = 1 << 9;
const search_pause_max = 1 << 6;

/// Worker i's deque and thread; allocated when worker i is first spawned, kept for later
/// workers at the same index, freed at deinit. Write-once: thieves read entries below
/// `worker_count` without a lock.
worker_slots: [workers_max]?*WorkerSlot = @splat(null),
/// Workers 0 ..< worker_count are running. Changes under spawn_mutex.
worker_count: std.atomic.Value(u32) = .init(0),
/// The most workers ever running at once (tests check it against threads - 1).
worker_count_max: u32 = 0,
spawn_mutex: std.Thread.Mutex = .{},
/// Deques lent to calling threads: bit i of caller_slots_busy is set while caller_slots[i]
/// is lent.
caller_slots: [callers_max]Deque = @splat(.{}),
caller_slots_busy: std.atomic.Value(u64) = .init(0),
/// Sleeping workers, searching workers and wake tokens, packed (see Idle).
idle: std.atomic.Value(u32) align(std.atomic.cache_line) = .init(0),
/// The futex word sleepers wait on (wake_epoch.zig).
wake_epoch: WakeEpoch align(std.atomic.cache_line) = .{},
shutting_down: std.atomic.Value(bool) = .init(false),
allocator: std.mem.Allocator = std.heap.c_allocator,

/// The process-wide pool: the executor of -Dthreading=tbb. Never deinitialized.
pub var shared: Pool = .{};

/// The fields of `idle`. A token is a wake issued by notify() and not yet taken by a
/// sleeper; the worker that takes it is already counted as searching.
const Idle = struct {
    const field_bits = 10;
    const sleeper_one: u32 = 1;
    const searcher_one: u32 = 1 << field_bits;
    const token_one: u32 = 1 << (2 * field_bits);
    const field_mask: u32 = (1 << field_bits) - 1;

    comptime {
        assert(workers_max <= field_mask);
    }

    fn sleepers(state: u32) u32 {
        return state & field_mask;
    }
    fn searchers(state: u32) u32 {
        return (state >> field_bits) & field_mask;
    }
    fn tokens(state: u32) u32 {
        return (state >> (2 * field_bits)) & field_mask;
    }
};

/// An intrusive task: the pool runs chunks of it, one `runFn` call per chunk, and knows
/// nothing else about it. Embedded in RegionRun, found back with @fieldParentPtr.
const Task = struct {
    runFn: *const fn (task: *Task, chunk: u32) void,
};

/// Chunks [begin, end) of a task.
const Entry = struct {
    task: *Task,
    begin: u32,
    end: u32,

    /// Whether the entry is a range of `task` (Deque.stealIf: a caller helps only its own
    /// region).
    fn belongsTo(task: *Task, entry: Entry) bool {
        return entry.task == task;
    }
};

/// A worker's or a lent caller deque of entries (deque.zig). Entries belong to one task.
const Deque = @import("deque.zig").Deque(Entry, deque_capacity);

const WorkerSlot = struct {
    deque: Deque = .{},
    /// The worker running at this index; null once it retired (detached) or was joined.
    /// Guarded by spawn_mutex.
    thread: ?std.Thread = null,
};

/// One region in flight, in the caller's stack frame.
const RegionRun = struct {
    task: Task = .{ .runFn = runChunk },
    region: *const Region,
    count: u32,
    first_error: FirstError = .{},
    /// Completed chunks, shifted by one; bit 0 set while the caller sleeps.
    completed: std.atomic.Value(u32) align(std.atomic.cache_line) = .init(0),

    const completed_one: u32 = 2;
    const caller_sleeping: u32 = 1;

    fn runChunk(task: *Task, chunk: u32) void {
        const region_run: *RegionRun = @alignCast(@fieldParentPtr("task", task));
        assert(chunk < region_run.count);
        const last_with_caller_asleep = (region_run.count - 1) * completed_one | caller_sleeping;
        const completed = &region_run.completed;
        region_run.region.runChunk(chunk) catch |err| region_run.first_error.record(chunk, err);
        // Release: publishes the chunk's writes and its error to the caller's Acquire loads
        // in isComplete() and awaitCompletion(). Once it lands the caller may return and
        // the RegionRun be gone: only the futex address is used after it.
        const previous = completed.fetchAdd(completed_one, .release);
        if (previous == last_with_caller_asleep) Futex.wake(completed, 1);
    }

    fn isComplete(region_run: *const RegionRun) bool {
        // Acquire: pairs with the Release fetchAdd in runChunk().
        return region_run.completed.load(.acquire) >> 1 == region_run.count;
    }

    fn awaitCompletion(region_run: *RegionRun) void {
        const done = region_run.count * completed_one | caller_sleeping;
        // Acquire: pairs with the Release fetchAdd in runChunk().
        var value = region_run.completed.fetchOr(caller_sleeping, .acquire) | caller_sleeping;
        while (value != done) {
            Futex.wait(&region_run.completed, value);
            // Acquire: as above.
            value = region_run.completed.load(.acquire);
        }
    }
};

/// Runs every chunk of `region` on the pool and the calling thread; returns the error of
/// the lowest failing chunk.
pub fn run(pool: *Pool, region: *const Region) Error!void {
    const count: u32 = @intCast(region.split.count);
    assert(count >= 2);
    assert(count <= settings.max_threads);
    pool.adjustWorkers(count);
    const slot = pool.acquireCallerSlot() orelse return region.runAllOnCaller();
    defer pool.releaseCallerSlot(slot);
    const deque = &pool.caller_slots[slot];
    var region_run: RegionRun = .{ .region = region, .count = count };
    pool.execute(deque, .{ .task = &region_run.task, .begin = 0, .end = count });
    pool.helpUntilComplete(deque, &region_run);
    return region_run.first_error.result();
}

/// Stops and joins every worker. No region may be in flight.
pub fn deinit(pool: *Pool) void {
    // Monotonic: the caller guarantees no region is in flight; this only checks it.
    assert(pool.caller_slots_busy.load(.monotonic) == 0);
    // Monotonic: published by the epoch's Release bump in wake(), which every sleeper
    // acquires (WakeEpoch.observe()).
    pool.shutting_down.store(true, .monotonic);
    pool.wake(std.math.maxInt(u32));
    // Join every worker before freeing any slot: a worker still searching reads them all.
    // Retired workers were detached; they touch nothing but spawn_mutex on their way out.
    for (pool.worker_slots) |entry| {
        const slot = entry orelse break;
        const thread = blk: {
            pool.spawn_mutex.lock();
            defer pool.spawn_mutex.unlock();
            defer slot.thread = null;
            break :blk slot.thread;
        };
        if (thread) |running| running.join();
    }
    for (&pool.worker_slots) |*entry| {
        const slot = entry.* orelse break;
        pool.allocator.destroy(slot);
        entry.* = null;
    }
    // Monotonic: every worker has been joined; nobody else reads it any more.
    pool.worker_count.store(0, .monotonic);
}

/// Running workers (tests and benchmarks).
pub fn workerCount(pool: *const Pool) u32 {
    // Monotonic: a statistic.
    return pool.worker_count.load(.monotonic);
}

/// True when every worker sleeps on the futex (tests and benchmarks).
pub fn allWorkersAsleep(pool: *const Pool) bool {
    // Monotonic (both loads): statistics; they need not agree at one instant for a test.
    const state = pool.idle.load(.monotonic);
    const workers = pool.worker_count.load(.monotonic);
    return Idle.sleepers(state) == workers and Idle.tokens(state) == 0;
}

/// Runs the range of `entry`: splits off upper halves onto `deque` (the thread's own) while
/// more than one chunk remains, then runs the rest.
fn execute(pool: *Pool, deque: *Deque, entry: Entry) void {
    assert(entry.begin < entry.end);
    var end = entry.end;
    while (end - entry.begin > 1) {
        const middle = entry.begin + (end - entry.begin) / 2;
        if (!deque.push(.{ .task = entry.task, .begin = middle, .end = end })) break;
        pool.notify();
        end = middle;
    }
    // After the last chunk of the task completes, `entry.task` may dangle: the loop ends
    // there and does not touch it again.
    for (entry.begin..end) |chunk| entry.task.runFn(entry.task, @intCast(chunk));
}

/// The caller, done with its own chunks: runs what is left on its deque, steals entries of
/// its own region, and sleeps once nothing is left to take.
fn helpUntilComplete(pool: *Pool, deque: *Deque, region_run: *RegionRun) void {
    for (0..spin_limit) |_| {
        while (deque.pop()) |entry| pool.execute(deque, entry);
        if (region_run.isComplete()) return;
        if (pool.stealFromWorkers(null, &region_run.task, 0)) |entry| {
            pool.execute(deque, entry);
        } else {
            std.atomic.spinLoopHint();
        }
    }
    // What is left is running, or queued on the deque of a worker that is running (a worker
    // sleeps only with an empty deque): it completes without this thread.
    while (deque.pop()) |entry| pool.execute(deque, entry);
    region_run.awaitCompletion();
}

fn adjustWorkers(pool: *Pool, count: u32) void {
    const target = settings.getNumThreads() - 1;
    const wanted = @min(target, count - 1);
    // Monotonic: a hint, decided again under spawn_mutex.
    const workers = pool.worker_count.load(.monotonic);
    if (workers < wanted) {
        pool.spawnWorkers(wanted);
    } else if (workers > target) {
        // Excess workers exit when idle; wake the sleeping ones so they notice.
        pool.wake(std.math.maxInt(u32));
    }
}

fn spawnWorkers(pool: *Pool, wanted: u32) void {
    assert(wanted <= workers_max);
    pool.spawn_mutex.lock();
    defer pool.spawn_mutex.unlock();
    // Spawn failures leave fewer workers: callers then run more chunks themselves.
    // Monotonic (both loads): worker_count changes only under spawn_mutex, held here.
    while (pool.worker_count.load(.monotonic) < wanted) pool.spawnWorker() catch return;
    pool.worker_count_max = @max(pool.worker_count_max, pool.worker_count.load(.monotonic));
}

/// Spawns worker `worker_count`. Called with spawn_mutex held.
fn spawnWorker(pool: *Pool) !void {
    // Monotonic: worker_count changes only under spawn_mutex, which this thread holds.
    const index = pool.worker_count.load(.monotonic);
    assert(index < workers_max);
    const slot = pool.worker_slots[index] orelse blk: {
        const created = try pool.allocator.create(WorkerSlot);
        created.* = .{};
        pool.worker_slots[index] = created;
        break :blk created;
    };
    // The deque has had no owner since its worker retired.
    assert(slot.deque.isEmpty());
    assert(slot.thread == null);
    const thread = try std.Thread.spawn(.{}, workerMain, .{ pool, index });
    // Named for top -H and perf (best effort: a name is not worth failing a spawn).
    thread.setName("spindle-tbb") catch {};
    slot.thread = thread;
    // Release: publishes worker_slots[index] to thieves' Acquire loads of worker_count.
    pool.worker_count.store(index + 1, .release);
}

fn workerMain(pool: *Pool, index: u32) void {
    // The spawn orders the slot's creation before this read.
    const deque = &pool.worker_slots[index].?.deque;
    var random: u32 = index *% 2654435761 | 1;
    // SeqCst: every change of `idle` is in the total order notify() reasons about.
    _ = pool.idle.fetchAdd(Idle.searcher_one, .seq_cst);
    while (pool.search(deque, index, &random)) |entry| {
        pool.execute(deque, entry);
        while (deque.pop()) |own| pool.execute(deque, own);
        // SeqCst: as above. Searching again: notify() need not wake anyone.
        _ = pool.idle.fetchAdd(Idle.searcher_one, .seq_cst);
    }
}

/// A searching worker looks for an entry; null when it must exit (shutdown or retired).
fn search(pool: *Pool, own: *Deque, index: u32, random: *u32) ?Entry {
    while (true) {
        var pause: u32 = 1;
        for (0..search_attempts) |_| {
            if (pool.steal(own, random)) |entry| {
                pool.stopSearching();
                return entry;
            }
            for (0..pause) |_| std.atomic.spinLoopHint();
            pause = @min(pause * 2, search_pause_max);
        }
        if (!pool.sleep(index)) return null;
    }
}

/// Steals the oldest entry of a caller's deque (they hold the largest ranges), else of a
/// worker's deque, starting at a random one to spread thieves.
fn steal(pool: *Pool, own: *Deque, random: *u32) ?Entry {
    // Monotonic: a lent deque is found on a later attempt if missed; hasWork() rechecks.
    var busy = pool.caller_slots_busy.load(.monotonic);
    while (busy != 0) : (busy &= busy - 1) {
        if (pool.caller_slots[@ctz(busy)].steal()) |entry| return entry;
    }
    random.* ^= random.* << 13;
    random.* ^= random.* >> 17;
    random.* ^= random.* << 5;
    return pool.stealFromWorkers(own, null, random.*);
}

/// Steals from the workers' deques (not `own`), visiting them from `start` (modulo their
/// count) on: any entry, or only entries of `task`.
fn stealFromWorkers(pool: *Pool, own: ?*Deque, task: ?*Task, start: u32) ?Entry {
    // Acquire: pairs with the Release store in spawnWorker(): worker_slots[i] is set.
    const workers = pool.worker_count.load(.acquire);
    assert(workers <= workers_max);
    for (0..workers) |offset| {
        const deque = &pool.worker_slots[(start + offset) % workers].?.deque;
        if (deque == own) continue;
        const stolen = if (task) |own_task| deque.stealIf(own_task, Entry.belongsTo) else deque.steal();
        if (stolen) |entry| return entry;
    }
    return null;
}

/// A worker that found work stops searching; the last searcher to do so hands the search to
/// a sleeper, since more work may follow.
fn stopSearching(pool: *Pool) void {
    // SeqCst: every change of `idle` is in the total order notify() reasons about.
    const previous = pool.idle.fetchSub(Idle.searcher_one, .seq_cst);
    assert(Idle.searchers(previous) >= 1);
    if (Idle.searchers(previous) == 1) pool.notify();
}

/// Called after a push: wakes one sleeper, unless a worker is searching (it will find the
/// entry). The woken worker is counted as searching at once, so a burst of pushes wakes one
/// worker, which wakes the next when it finds work (stopSearching).
fn notify(pool: *Pool) void {
    // SeqCst: the pusher's side of the Dekker pair with sleep(), after Deque.push()'s
    // SeqCst length store.
    var state = pool.idle.load(.seq_cst);
    while (true) {
        if (Idle.searchers(state) > 0) return;
        if (Idle.sleepers(state) <= Idle.tokens(state)) return;
        const next = state + Idle.token_one + Idle.searcher_one;
        // SeqCst: as above.
        state = pool.idle.cmpxchgWeak(state, next, .seq_cst, .seq_cst) orelse break;
    }
    pool.wake(1);
}

/// Wakes sleepers after a token or the shutdown flag was published: the epoch's Release
/// bump makes both visible to a sleeper that observes the new epoch.
fn wake(pool: *Pool, waiters: u32) void {
    pool.wake_epoch.wake(waiters);
}

/// A searcher that found nothing sleeps until it is handed a token or sees work; returns
/// false when it must exit instead.
fn sleep(pool: *Pool, index: u32) bool {
    // SeqCst: the sleeper's side of the Dekker pair with Deque.push() + notify(): this
    // announcement, then hasWork()'s SeqCst loads.
    _ = pool.idle.fetchAdd(Idle.sleeper_one -% Idle.searcher_one, .seq_cst);
    while (true) {
        // Observed before the checks below, so a wake after them is not lost.
        const epoch = pool.wake_epoch.observe();
        // Monotonic: ordered by observe()'s Acquire, see deinit().
        if (pool.shutting_down.load(.monotonic)) {
            _ = pool.leaveSleep(false);
            pool.stopSearching();
            return false;
        }
        // A retired worker no longer touches the pool: it may be freed (see deinit()).
        if (pool.retire(index)) return false;
        if (pool.leaveSleep(true)) return true;
        if (pool.hasWork()) return pool.leaveSleep(false);
        pool.wake_epoch.sleep(epoch);
    }
}

/// Turns this sleeper into a searcher: by taking a token (notify() counted the searcher
/// already) or, unless `token_required`, by counting itself. False when no token was left.
fn leaveSleep(pool: *Pool, token_required: bool) bool {
    // Monotonic: a first guess for the cmpxchg, which reads the latest value.
    var state = pool.idle.load(.monotonic);
    while (true) {
        assert(Idle.sleepers(state) >= 1);
        const next = if (Idle.tokens(state) > 0)
            state - Idle.token_one - Idle.sleeper_one
        else if (token_required)
            return false
        else
            state - Idle.sleeper_one + Idle.searcher_one;
        // SeqCst: every change of `idle` is in the total order notify() reasons about.
        state = pool.idle.cmpxchgWeak(state, next, .seq_cst, .monotonic) orelse return true;
    }
}

/// SeqCst scan of every deque, for sleep(): see Deque.push().
fn hasWork(pool: *Pool) bool {
    // SeqCst: a caller lends its deque (SeqCst cmpxchg) before pushing on it.
    var busy = pool.caller_slots_busy.load(.seq_cst);
    while (busy != 0) : (busy &= busy - 1) {
        // isEmpty() loads SeqCst: see Deque.push().
        if (!pool.caller_slots[@ctz(busy)].isEmpty()) return true;
    }
    // SeqCst: stronger than the Acquire the slots need (see spawnWorker()).
    const workers = pool.worker_count.load(.seq_cst);
    for (pool.worker_slots[0..workers]) |slot| {
        // isEmpty() loads SeqCst: see Deque.push().
        if (!slot.?.deque.isEmpty()) return true;
    }
    return false;
}

/// An idle worker beyond threads - 1 exits, highest index first. True when `index` retired:
/// then its accounting is done and its thread detached, so the caller must only return.
fn retire(pool: *Pool, index: u32) bool {
    const target = settings.getNumThreads() - 1;
    // Monotonic: a hint, decided again under spawn_mutex.
    if (index < target or index + 1 != pool.worker_count.load(.monotonic)) return false;
    pool.spawn_mutex.lock();
    defer pool.spawn_mutex.unlock();
    // Monotonic: deinit() sets the flag before it takes spawn_mutex; the mutex orders them.
    if (pool.shutting_down.load(.monotonic)) return false;
    // Monotonic: worker_count changes only under spawn_mutex.
    if (index + 1 != pool.worker_count.load(.monotonic)) return false;
    const slot = pool.worker_slots[index].?;
    // Only this worker pushes on its deque, and it is empty.
    assert(slot.deque.isEmpty());
    // Monotonic: a decrease publishes nothing; the slot stays valid for late thieves.
    pool.worker_count.store(index, .monotonic);
    _ = pool.leaveSleep(false);
    pool.stopSearching();
    // The next excess worker may be asleep: wake everyone to let it check.
    pool.wake(std.math.maxInt(u32));
    // Detached, the thread frees its stack when it returns; nobody joins it.
    slot.thread.?.detach();
    slot.thread = null;
    return true;
}

fn acquireCallerSlot(pool: *Pool) ?u6 {
    // Monotonic: a first guess for the cmpxchg.
    var busy = pool.caller_slots_busy.load(.monotonic);
    while (busy != std.math.maxInt(u64)) {
        const slot: u6 = @intCast(@ctz(~busy));
        const bit = @as(u64, 1) << slot;
        // SeqCst: the lent deque must be in a sleeper's SeqCst scan (hasWork()) before this
        // caller's first push on it; see Deque.push().
        busy = pool.caller_slots_busy.cmpxchgWeak(busy, busy | bit, .seq_cst, .monotonic) orelse return slot;
    }
    return null;
}

fn releaseCallerSlot(pool: *Pool, slot: u6) void {
    // The region is complete, so no entry of it is left anywhere.
    assert(pool.caller_slots[slot].isEmpty());
    // Monotonic: the deque's contents are guarded by its mutex; the bit only lends it.
    _ = pool.caller_slots_busy.fetchAnd(~(@as(u64, 1) << slot), .monotonic);
}

// Tests. Each runs on its own Pool. Test counters use Monotonic atomics: they are read only
// after the join of the region or of the threads, which orders every update before the read.

const testing = intra_op.testing;

fn createTestPool() !*Pool {
    const pool = try std.testing.allocator.create(Pool);
    pool.* = .{ .allocator = std.testing.allocator };
    return pool;
}

fn destroyTestPool(pool: *Pool) void {
    pool.deinit();
    std.testing.allocator.destroy(pool);
}

test "tbb pool covers every index exactly once for n in 0, 1, 2, 3, 97, 1000 and 100003" {
    settings.resetForTesting();
    defer settings.resetForTesting();
    const pool = try createTestPool();
    defer destroyTestPool(pool);
    for ([_]u32{ 2, 3, 4 }) |threads| {
        try settings.setNumThreads(threads);
        try testing.expectEachIndexOnceForAllSizes(pool);
    }
}

test "tbb pool follows the grain rules: serial when n <= grain or threads == 1" {
    settings.resetForTesting();
    defer settings.resetForTesting();
    const pool = try createTestPool();
    defer destroyTestPool(pool);
    try settings.setNumThreads(1);
    try testing.expectEachIndexOnce(pool, 1000, 1);
    try std.testing.expectEqual(@as(u32, 0), pool.workerCount());
    try settings.setNumThreads(4);
    try testing.expectEachIndexOnce(pool, 100, 100);
    try std.testing.expectEqual(@as(u32, 0), pool.workerCount());
    try testing.expectEachIndexOnce(pool, 100, 50); // two chunks: one worker
    try std.testing.expectEqual(@as(u32, 1), pool.workerCount());
}

test "tbb pool runs nested regions serially" {
    settings.resetForTesting();
    defer settings.resetForTesting();
    const pool = try createTestPool();
    defer destroyTestPool(pool);
    try settings.setNumThreads(3);
    try testing.expectNestedRegionsSerial(pool);
}

test "tbb pool runs every chunk and keeps the error of the lowest failing chunk" {
    settings.resetForTesting();
    defer settings.resetForTesting();
    const pool = try createTestPool();
    defer destroyTestPool(pool);
    try settings.setNumThreads(4);
    try testing.expectLowestChunkErrorKept(pool);
}

fn expectWorkerCountEventually(pool: *Pool, expected: u32) !void {
    var timer = try std.time.Timer.start();
    while (pool.workerCount() != expected) {
        if (timer.read() > 2 * std.time.ns_per_s) return error.TestUnexpectedResult;
        std.Thread.sleep(std.time.ns_per_ms);
    }
}

test "tbb pool follows setNumThreads between regions: 1, 2, 3, 1, then retires workers" {
    settings.resetForTesting();
    defer settings.resetForTesting();
    const pool = try createTestPool();
    defer destroyTestPool(pool);
    const expected_workers = [_]u32{ 0, 1, 2 };
    for ([_]u32{ 1, 2, 3 }, expected_workers) |threads, workers| {
        const distinct = try testing.distinctThreadsOfRegion(pool, threads);
        try std.testing.expect(distinct >= 1 and distinct <= threads);
        try std.testing.expectEqual(workers, pool.workerCount());
    }
    // Back to 1: serial. Workers that go idle after the change retire, the others sleep.
    try std.testing.expectEqual(@as(usize, 1), try testing.distinctThreadsOfRegion(pool, 1));
    try std.testing.expect(pool.workerCount() <= 2);
    // The next region with 2 threads wakes them: the excess worker exits.
    _ = try testing.distinctThreadsOfRegion(pool, 2);
    try expectWorkerCountEventually(pool, 1);
    try std.testing.expectEqual(@as(u32, 2), pool.worker_count_max);
}

fn expectAllWorkersAsleep(pool: *Pool) !void {
    var timer = try std.time.Timer.start();
    while (!pool.allWorkersAsleep()) {
        if (timer.read() > 2 * std.time.ns_per_s) return error.TestUnexpectedResult;
        std.Thread.sleep(std.time.ns_per_ms);
    }
}

test "tbb pool workers sleep on the futex once regions stop" {
    settings.resetForTesting();
    defer settings.resetForTesting();
    const pool = try createTestPool();
    defer destroyTestPool(pool);
    try settings.setNumThreads(3);
    for (0..100) |_| try testing.expectEachIndexOnce(pool, 97, 1);
    try std.testing.expectEqual(@as(u32, 2), pool.workerCount());
    try expectAllWorkersAsleep(pool);
    // And they wake up again.
    try testing.expectEachIndexOnce(pool, 97, 1);
    try expectAllWorkersAsleep(pool);
}

const Caller = struct {
    const regions = 200;

    fn main(pool: *Pool, failures: *std.atomic.Value(u32)) void {
        for (0..regions) |_| {
            testing.expectEachIndexOnce(pool, 1000, 1) catch {
                _ = failures.fetchAdd(1, .monotonic);
            };
        }
    }
};

test "tbb pool serves 8 concurrent callers with at most threads - 1 workers" {
    settings.resetForTesting();
    defer settings.resetForTesting();
    const pool = try createTestPool();
    defer destroyTestPool(pool);
    try settings.setNumThreads(3);
    var failures: std.atomic.Value(u32) = .init(0);
    var threads: [8]std.Thread = undefined;
    for (&threads) |*thread| thread.* = try std.Thread.spawn(.{}, Caller.main, .{ pool, &failures });
    for (threads) |thread| thread.join();
    try std.testing.expectEqual(@as(u32, 0), failures.load(.monotonic));
    try std.testing.expectEqual(@as(u32, 2), pool.worker_count_max);
    try std.testing.expectEqual(@as(u32, 2), pool.workerCount());
}

test "tbb pool runs a region on the caller when every caller deque is lent" {
    settings.resetForTesting();
    defer settings.resetForTesting();
    const pool = try createTestPool();
    defer destroyTestPool(pool);
    try settings.setNumThreads(4);
    // Monotonic: no region is in flight on this pool; the next ones see it in program order.
    pool.caller_slots_busy.store(std.math.maxInt(u64), .monotonic);
    try testing.expectEachIndexOnce(pool, 1000, 1);
    try testing.expectLowestChunkErrorKept(pool);
    // Monotonic: as above.
    pool.caller_slots_busy.store(0, .monotonic);
}

const ChurnCaller = struct {
    /// Regions while another thread changes the thread count: the chunk count of each is
    /// unknown, only coverage and the bound on chunks are checked.
    fn main(pool: *Pool, failures: *std.atomic.Value(u32)) void {
        for (0..Caller.regions) |_| {
            const calls = testing.expectEachIndexCovered(pool, 1000, 1) catch 0;
            // Monotonic: read after the join.
            if (calls == 0 or calls > 4) _ = failures.fetchAdd(1, .monotonic);
        }
    }
};

test "tbb pool keeps every index covered while setNumThreads changes under running callers" {
    settings.resetForTesting();
    defer settings.resetForTesting();
    const pool = try createTestPool();
    defer destroyTestPool(pool);
    try settings.setNumThreads(4);
    var failures: std.atomic.Value(u32) = .init(0);
    var threads: [4]std.Thread = undefined;
    for (&threads) |*thread| thread.* = try std.Thread.spawn(.{}, ChurnCaller.main, .{ pool, &failures });
    // Spawns and retirements race with the callers' regions.
    for (0..200) |step| {
        try settings.setNumThreads(@intCast(1 + step % 4));
        std.Thread.sleep(100 * std.time.ns_per_us);
    }
    for (threads) |thread| thread.join();
    try std.testing.expectEqual(@as(u32, 0), failures.load(.monotonic));
    try std.testing.expect(pool.worker_count_max <= 3);
}
