//! -Dthreading=omp: a fork-join team per calling thread, as OpenMP does (threading spec §4).
//!
//! Each thread that starts a parallel region (an inference thread, an inter-op worker) gets
//! its own Team on first use: worker threads that run chunk 1, 2, … of the regions that
//! thread starts, while the calling thread runs chunk 0 and then waits at the join. Chunks
//! are static and contiguous (worker i runs chunk i), except that the caller, done with its
//! own chunk, takes the chunk of any worker that has not started yet (see Worker.claim):
//! a worker that is asleep or not scheduled never holds up a region. The team grows when a region
//! has more chunks than it has workers (setNumThreads went up); it never shrinks: workers a
//! smaller region does not need are not woken and stay asleep.
//!
//! A worker asleep that ran its latest chunk on the owner's CPU is left asleep (skipsWake,
//! except every 16th region): woken, it would take turns with the owner on that CPU.
//!
//! Nothing is allocated per region or per chunk: the region's state lives in the caller's
//! stack frame, workers are allocated when spawned. Waiting is bounded spinning, then a
//! futex: an idle process uses no CPU.
//!
//! Lifetime: a team belongs to its calling thread and is freed, its workers joined, when
//! that thread exits (a pthread key destructor). Teams are therefore bounded by the number
//! of live calling threads, and each by max_threads - 1 workers. The main thread's team
//! lives until the process exits.
const std = @import("std");
const builtin = @import("builtin");
const settings = @import("../settings.zig");
const status = @import("../status.zig");
const intra_op = @import("intra_op.zig");
const placement = @import("placement.zig");

const assert = std.debug.assert;
const Futex = std.Thread.Futex;
const Error = status.Error;
const Region = intra_op.Region;
const FirstError = intra_op.FirstError;

const Team = @This();

const workers_max = intra_op.workers_max;

/// Spin iterations (each a pause instruction and a load) before a waiting thread sleeps:
/// tens to hundreds of microseconds, long enough to catch back-to-back regions. When more
/// threads already spin than the machine has CPUs to spare, spinning only steals time from
/// the threads being waited for, so waits spin briefly (as libgomp throttles). Only threads
/// spinning right now count: the sleeping workers of idle teams (one team per calling
/// thread, e.g. each Deno blocking-pool thread that ran a model) cost no CPU, and counting
/// them made every region of a busy team pay a futex wake-up.
const spin_limit = 1 << 12;
const spin_limit_oversubscribed = 1 << 6;

/// Threads spinning in awaitRing() or join() right now (for beginSpin()).
var spinning_total: std.atomic.Value(u32) = .init(0);

/// Picks this wait's spin length and counts the caller as spinning until endSpin().
/// `leaving` of the threads counted spinning are about to stop (see Worker.spinForRing) and
/// do not count against this wait.
fn beginSpin(leaving: u32) u32 {
    // The CPUs the spinning threads share.
    const cpu_count = placement.cpuCount();
    // Monotonic: a heuristic; a stale count only picks the other spin length once.
    const spinning = spinning_total.fetchAdd(1, .monotonic) -| leaving;
    // The thread being waited for runs too: at most cpu_count - 1 others may spin.
    return if (spinning + 1 >= cpu_count) spin_limit_oversubscribed else spin_limit;
}

fn endSpin() void {
    // Monotonic: pairs with the fetchAdd in beginSpin() only as a counter.
    _ = spinning_total.fetchSub(1, .monotonic);
}

const cpu_unknown = placement.cpu_unknown;
const currentCpu = placement.currentCpu;

/// Whether a thread that would spin on `cpu` shares it with the thread it waits for (or
/// that waits for it): spinning there only takes that thread's time slices. The scheduler
/// puts a woken worker beside its waker when the other CPUs are busy for a moment (on a
/// 2-core machine, with the JavaScript or HTTP thread running), and a spinning pair stays
/// put: the serve helper measured the classifier's 2-thread forward at 830–1,030 µs in
/// such processes against 469–494 µs, the worker in ~90% of its samples spinning.
const sharesCpu = placement.sharesCpu;

allocator: std.mem.Allocator,
/// The thread that owns the team; only it runs regions on it.
owner: std.Thread.Id,
/// workers[i] runs chunk i + 1. Only the owner reads or writes the array.
workers: [workers_max]*Worker = undefined,
worker_count: u32 = 0,
/// Counts regions; only the owner writes it. A worker's doorbell holds it shifted by one.
generation: u32 = 0,
/// The region being run, or null to tell rung workers to exit. Written by the owner before
/// ringing, read by rung workers: the doorbell's Release/Acquire orders the two.
current: ?*RegionState = null,
/// Workers still running a chunk of this region, shifted by one; bit 0 set when the owner
/// sleeps in join().
pending: std.atomic.Value(u32) align(std.atomic.cache_line) = .init(0),
/// The CPU the owner ran on when it started the latest region (cpu_unknown before): a
/// worker on that CPU sleeps instead of spinning (sharesCpu).
owner_cpu: std.atomic.Value(u32) align(std.atomic.cache_line) = .init(cpu_unknown),
/// Set by the owner when it leaves Spindle (park()): its workers stop spinning for the next
/// region and sleep at once. Each Deno blocking-pool thread that runs a model owns a team;
/// without this, the workers of the team a request just left spin on a core while the next
/// request's team (on another thread) waits for its own workers to be scheduled, and every
/// region of that request pays for it. Cleared by run().
parked: std.atomic.Value(bool) align(std.atomic.cache_line) = .init(false),
/// Set while the owner spins in join() (counted in spinning_total), for the worker that
/// finishes a region's last chunk: that spin is about to end (see Worker.spinForRing).
owner_joining: std.atomic.Value(bool) align(std.atomic.cache_line) = .init(false),

const pending_one: u32 = 2;
/// One region in this many wakes a sleeping worker even when it shares the owner's CPU
/// (skipsWake).
const wake_probe_interval: u32 = 16;
/// Worker.claim value that makes the worker exit (odd: never an armed rung).
const exit_claim: u32 = std.math.maxInt(u32);
const owner_sleeping: u32 = 1;
const worker_sleeping: u32 = 1;

/// One region in flight, in the owner's stack frame.
const RegionState = struct {
    region: *const Region,
    first_error: FirstError = .{},

    fn runChunk(state: *RegionState, index: usize) void {
        state.region.runChunk(index) catch |err| state.first_error.record(index, err);
    }
};

const Worker = struct {
    /// The last generation rung, shifted left by one; bit 0 set while the worker sleeps.
    /// Its own cache line: the owner writes it, the worker spins on it.
    doorbell: std.atomic.Value(u32) align(std.atomic.cache_line),
    team: *Team,
    /// The chunk this worker runs (1-based: the owner runs chunk 0).
    chunk: u32,
    /// Who runs this worker's chunk of the region rung as R (= generation << 1): the owner
    /// arms it to R before ringing; the worker, or the owner once its own chunks are done,
    /// takes it by a compare-exchange to R | 1. A worker that is late (asleep, or not
    /// scheduled: another process holds the core) loses the chunk to the owner instead of
    /// holding up the join. `exit_claim` tells the worker to exit.
    claim: std.atomic.Value(u32) align(std.atomic.cache_line) = .init(1),
    /// The CPU the worker ran its latest chunk on: the owner does not spin in join() while
    /// a worker shares its CPU.
    cpu: std.atomic.Value(u32) = .init(cpu_unknown),
    thread: std.Thread = undefined,

    fn main(worker: *Worker, rung_first: u32) void {
        var rung = rung_first;
        var ran_last_chunk = false;
        while (true) {
            rung = worker.awaitRing(rung, ran_last_chunk);
            // Monotonic: awaitRing's Acquire load of the doorbell already ordered the
            // owner's arming (before its Release ring) before this load.
            if (worker.claim.load(.monotonic) == exit_claim) return;
            // Acquire on success: with the doorbell's, the region the owner published is
            // visible. Failure: the owner ran the chunk (or a newer region was armed): the
            // worker then touches nothing of the region and waits for the next ring.
            if (worker.claim.cmpxchgStrong(rung, rung | 1, .acquire, .monotonic) != null) continue;
            // Monotonic: a hint for join()'s spin; a stale value costs a spin or a sleep.
            worker.cpu.store(currentCpu(), .monotonic);
            // The owner waits in join() for this chunk, so `current` stays this region's.
            worker.team.current.?.runChunk(worker.chunk);
            ran_last_chunk = worker.team.finishChunk();
        }
    }

    /// Returns the new doorbell value once the owner rang (the value differs from `rung`).
    /// `ran_last_chunk`: this worker just finished the region's last chunk (see spinForRing).
    fn awaitRing(worker: *Worker, rung: u32, ran_last_chunk: bool) u32 {
        assert(rung & worker_sleeping == 0);
        return worker.spinForRing(rung, ran_last_chunk) orelse worker.sleep(rung);
    }

    /// Spins (counted in spinning_total) until the owner rings; null when the spin ends.
    fn spinForRing(worker: *Worker, rung: u32, ran_last_chunk: bool) ?u32 {
        // Monotonic: a hint (see sharesCpu); the doorbell orders what matters.
        if (sharesCpu(currentCpu(), worker.team.owner_cpu.load(.monotonic))) return null;
        // The owner spinning in join() for the chunk this worker just finished last stops
        // as soon as it sees the count reach zero: it does not compete with this spin.
        // Counted, it put every worker of a 2-thread team on 2 CPUs on the short spin: the
        // worker slept after each region: at 2 threads 38% of PaddleOCR rec's regions
        // (30,521 of 80,000) paid a futex wake-up, and in 20% the owner took over the chunk
        // of a worker not yet awake. Monotonic: a hint; a stale flag picks the other spin
        // length once.
        const leaving: u32 = @intFromBool(ran_last_chunk and worker.team.owner_joining.load(.monotonic));
        const limit = beginSpin(leaving);
        defer endSpin();
        for (0..limit) |_| {
            // Acquire: pairs with the Release swap in ring(): the owner's writes of
            // `current` and `pending` happen before this worker reads them.
            const value = worker.doorbell.load(.acquire);
            if (value != rung) return value;
            // Monotonic: a hint to stop spinning; sleep() still catches a ring that races
            // with it (its cmpxchg fails), so a stale value costs at most a wake-up.
            if (worker.team.parked.load(.monotonic)) return null;
            std.atomic.spinLoopHint();
        }
        return null;
    }

    fn sleep(worker: *Worker, rung: u32) u32 {
        // Acquire on failure: the failure means the owner rang (Release swap in ring()), and
        // this worker is about to read what the owner published. On success the bit only
        // tells ring() to call Futex.wake; Acquire there is only because the success order
        // may not be weaker than the failure order.
        if (worker.doorbell.cmpxchgStrong(rung, rung | worker_sleeping, .acquire, .acquire)) |value| {
            return value;
        }
        while (true) {
            Futex.wait(&worker.doorbell, rung | worker_sleeping);
            // Acquire: pairs with the Release swap in ring(), as in awaitRing().
            const value = worker.doorbell.load(.acquire);
            if (value != rung | worker_sleeping) return value;
        }
    }

    /// Called by the owner: hands the worker the region published in `team.current`.
    fn ring(worker: *Worker, value: u32) void {
        assert(value & worker_sleeping == 0);
        // Release: publishes `current` and `pending` to the Acquire loads in awaitRing() and
        // sleep(). The swap also clears the sleeping bit and tells whether to wake.
        const previous = worker.doorbell.swap(value, .release);
        assert(previous != value);
        if (previous & worker_sleeping != 0) Futex.wake(&worker.doorbell, 1);
    }
};

pub fn init(allocator: std.mem.Allocator) Team {
    return .{ .allocator = allocator, .owner = std.Thread.getCurrentId() };
}

/// Stops and joins the workers. Called by the owner, with no region in flight.
pub fn deinit(team: *Team) void {
    assert(team.owner == std.Thread.getCurrentId());
    team.current = null;
    team.generation +%= 1;
    for (team.workers[0..team.worker_count]) |worker| {
        // Monotonic: published by the Release swap in ring().
        worker.claim.store(exit_claim, .monotonic);
        worker.ring(team.generation << 1);
    }
    for (team.workers[0..team.worker_count]) |worker| {
        worker.thread.join();
        team.allocator.destroy(worker);
    }
    team.worker_count = 0;
}

/// Runs every chunk of `region`: chunk i on worker i - 1, chunk 0 on the calling thread,
/// then joins. Returns the error of the lowest failing chunk.
pub fn run(team: *Team, region: *const Region) Error!void {
    const count: u32 = @intCast(region.split.count);
    assert(count >= 2);
    assert(count <= settings.max_threads);
    if (std.debug.runtime_safety) assert(team.owner == std.Thread.getCurrentId());
    const helpers = team.grow(count - 1);
    // Monotonic: a hint read by spinning workers (see `parked`); the ring below wakes the
    // sleeping ones whatever they read.
    team.parked.store(false, .monotonic);
    const owner_cpu = currentCpu();
    // Monotonic: a hint read by spinning workers (see sharesCpu).
    team.owner_cpu.store(owner_cpu, .monotonic);
    var current: RegionState = .{ .region = region };
    team.current = &current;
    team.generation +%= 1;
    // Monotonic: published to the workers by the Release swap in ring(); no worker of an
    // earlier region touches `pending` any more (the previous join saw it reach zero).
    team.pending.store(helpers * pending_one, .monotonic);
    const rung = team.generation << 1;
    for (team.workers[0..helpers]) |worker| {
        // Monotonic: published by the Release swap in ring().
        worker.claim.store(rung, .monotonic);
        if (!team.skipsWake(worker, owner_cpu)) worker.ring(rung);
    }
    current.runChunk(0);
    // Chunks of workers that could not be spawned run here.
    for (helpers + 1..count) |index| current.runChunk(index);
    // Chunks whose worker has not started yet run here too: a sleeping or descheduled
    // worker would otherwise hold up the join by its wake-up or the scheduler's time slice.
    for (team.workers[0..helpers]) |worker| {
        // Monotonic: the owner reads nothing the worker wrote; on success the worker will
        // fail its own exchange and touch nothing of this region.
        if (worker.claim.cmpxchgStrong(rung, rung | 1, .monotonic, .monotonic) == null) {
            current.runChunk(worker.chunk);
            // Monotonic: the owner's own count; join() reads it on this thread.
            _ = team.pending.fetchSub(pending_one, .monotonic);
        }
    }
    team.join(helpers);
    return current.first_error.result();
}

/// Whether run() leaves `worker` asleep and takes its chunk itself: the worker sleeps and
/// ran its latest chunk on the owner's CPU, so a wake-up would most likely put it there
/// again, to preempt the owner and run its chunk while the owner waits: one region after
/// the other, each paying two context switches. Every wake_probe_interval-th region wakes
/// it anyway, so that a worker the scheduler would now place on a free CPU gets there.
fn skipsWake(team: *const Team, worker: *const Worker, owner_cpu: u32) bool {
    if (team.generation % wake_probe_interval == 0) return false;
    // Monotonic: a hint (see sharesCpu); a stale CPU costs a wake-up or one region run on
    // the owner.
    if (!sharesCpu(owner_cpu, worker.cpu.load(.monotonic))) return false;
    // Monotonic: with the bit set the worker waits on the futex (or is about to) for the
    // doorbell to change, and stays asleep while it does not; without it, ring() as usual
    // (a worker setting the bit after this load fails its exchange in sleep() or is woken
    // by ring()'s swap).
    return worker.doorbell.load(.monotonic) & worker_sleeping != 0;
}

/// Spawns workers until there are `wanted`; returns how many are available (fewer when the
/// system refuses threads: their chunks then run on the owner).
fn grow(team: *Team, wanted: u32) u32 {
    assert(wanted <= workers_max);
    while (team.worker_count < wanted) team.spawnWorker() catch break;
    return @min(team.worker_count, wanted);
}

fn spawnWorker(team: *Team) !void {
    assert(team.worker_count < workers_max);
    const worker = try team.allocator.create(Worker);
    errdefer team.allocator.destroy(worker);
    const rung = team.generation << 1;
    worker.* = .{ .doorbell = .init(rung), .team = team, .chunk = team.worker_count + 1 };
    // The spawn orders the writes above before the worker's first read.
    worker.thread = try std.Thread.spawn(.{}, Worker.main, .{ worker, rung });
    // Named for top -H and perf (best effort: a name is not worth failing a spawn).
    worker.thread.setName("spindle-omp") catch {};
    team.workers[team.worker_count] = worker;
    team.worker_count += 1;
}

/// Called by a worker after its chunk; true when it was the region's last chunk. After the
/// decrement the worker no longer touches the owner's RegionState: the owner may have
/// returned.
fn finishChunk(team: *Team) bool {
    // Release: publishes the chunk's writes (and its error) to the owner's Acquire loads in
    // join().
    const previous = team.pending.fetchSub(pending_one, .release);
    assert(previous >= pending_one);
    if (previous == pending_one | owner_sleeping) Futex.wake(&team.pending, 1);
    return previous & ~owner_sleeping == pending_one;
}

/// Spins (counted in spinning_total) until every worker finished; false when the spin ends,
/// or at once when one of the `helpers` rung ran its latest chunk on the owner's CPU.
fn spinForWorkers(team: *Team, helpers: u32) bool {
    const cpu = currentCpu();
    for (team.workers[0..helpers]) |worker| {
        // Monotonic: a hint (see sharesCpu); a worker that already finished costs only a
        // futex wait that returns at once.
        if (sharesCpu(cpu, worker.cpu.load(.monotonic))) return false;
    }
    const limit = beginSpin(0);
    defer endSpin();
    // Monotonic: a hint for the worker's spin length (see Worker.spinForRing).
    team.owner_joining.store(true, .monotonic);
    defer team.owner_joining.store(false, .monotonic);
    for (0..limit) |_| {
        // Acquire: pairs with the Release fetchSub in finishChunk(): the workers' chunks
        // happen before the owner reads the results.
        if (team.pending.load(.acquire) == 0) return true;
        std.atomic.spinLoopHint();
    }
    return false;
}

/// Waits until every rung worker (the first `helpers`) finished its chunk.
fn join(team: *Team, helpers: u32) void {
    if (team.spinForWorkers(helpers)) return;
    // Acquire: as above, for a decrement that lands between the last load and this.
    var value = team.pending.fetchOr(owner_sleeping, .acquire) | owner_sleeping;
    while (value != owner_sleeping) {
        Futex.wait(&team.pending, value);
        // Acquire: pairs with the Release fetchSub in finishChunk().
        value = team.pending.load(.acquire);
    }
}

/// Tells the team's spinning workers to sleep now: the owner is leaving Spindle (the end of
/// a model run) and will not start a region soon. The next region wakes them.
pub fn park(team: *Team) void {
    // Monotonic: see `parked`.
    team.parked.store(true, .monotonic);
}

/// park() for the calling thread's team, if it has one.
pub fn parkCallingThreadTeam() void {
    if (calling_thread_team) |team| team.park();
}

/// The executor for the process: the calling thread's own team, created on first use.
pub const per_thread_team: PerThreadTeam = .{};

const PerThreadTeam = struct {
    pub fn run(_: PerThreadTeam, region: *const Region) Error!void {
        const team = callingThreadTeam() orelse return region.runAllOnCaller();
        return team.run(region);
    }
};

/// The calling thread's team: a thread-local for speed, and a thread-exit key (a pthread
/// key; a fiber-local-storage index on Windows, whose callback also runs at thread exit)
/// whose destructor frees the team when the thread exits.
threadlocal var calling_thread_team: ?*Team = null;
var team_key: ExitKey = undefined;
var team_key_once = std.once(createTeamKey);
var team_key_ok = false;
/// Teams alive in the process (for tests and benchmarks).
var live_teams: std.atomic.Value(u32) = .init(0);

pub fn liveTeamCount() u32 {
    // Monotonic: a statistic, nothing is read through it.
    return live_teams.load(.monotonic);
}

const windows = builtin.os.tag == .windows;
const ExitKey = if (windows) u32 else std.c.pthread_key_t;
const fls_out_of_indexes: u32 = 0xffff_ffff;
extern "kernel32" fn FlsAlloc(callback: *const fn (?*anyopaque) callconv(.winapi) void) callconv(.winapi) u32;
extern "kernel32" fn FlsSetValue(index: u32, value: ?*anyopaque) callconv(.winapi) i32;

fn createTeamKey() void {
    if (windows) {
        team_key = FlsAlloc(destroyCallingThreadTeamFls);
        team_key_ok = team_key != fls_out_of_indexes;
    } else {
        team_key_ok = std.c.pthread_key_create(&team_key, destroyCallingThreadTeam) == .SUCCESS;
    }
}

/// Binds `team` to the calling thread's exit key; false if the OS refused.
fn setTeamKey(team: *Team) bool {
    if (windows) return FlsSetValue(team_key, team) != 0;
    return std.c.pthread_setspecific(team_key, team) == 0;
}

/// The FLS callback: like the pthread destructor, called with the value at thread exit (and
/// never with null, which FlsSetValue is not given).
fn destroyCallingThreadTeamFls(pointer: ?*anyopaque) callconv(.winapi) void {
    if (pointer) |team| destroyCallingThreadTeam(team);
}

/// Null when no team can be made (no key, no memory): regions then run on the caller.
fn callingThreadTeam() ?*Team {
    if (calling_thread_team) |team| return team;
    team_key_once.call();
    if (!team_key_ok) return null;
    const allocator = std.heap.c_allocator;
    const team = allocator.create(Team) catch return null;
    team.* = .init(allocator);
    if (!setTeamKey(team)) {
        allocator.destroy(team);
        return null;
    }
    calling_thread_team = team;
    // Monotonic: a statistic.
    _ = live_teams.fetchAdd(1, .monotonic);
    return team;
}

/// Runs on the exiting owner thread (pthread key destructor).
fn destroyCallingThreadTeam(pointer: *anyopaque) callconv(.c) void {
    const team: *Team = @ptrCast(@alignCast(pointer));
    team.deinit();
    team.allocator.destroy(team);
    calling_thread_team = null;
    // Monotonic: a statistic.
    _ = live_teams.fetchSub(1, .monotonic);
}

// Tests. Each runs on its own Team (or, for many callers, on the per-thread teams). Test
// counters use Monotonic atomics: they are read only after the join of the region or of the
// threads, which orders every update before the read.

const testing = intra_op.testing;

fn createTestTeam() !*Team {
    const team = try std.testing.allocator.create(Team);
    team.* = .init(std.testing.allocator);
    return team;
}

fn destroyTestTeam(team: *Team) void {
    team.deinit();
    std.testing.allocator.destroy(team);
}

test "omp team covers every index exactly once for n in 0, 1, 2, 3, 97, 1000 and 100003" {
    settings.resetForTesting();
    defer settings.resetForTesting();
    const team = try createTestTeam();
    defer destroyTestTeam(team);
    for ([_]u32{ 2, 3, 4 }) |threads| {
        try settings.setNumThreads(threads);
        try testing.expectEachIndexOnceForAllSizes(team);
    }
}

test "omp team follows the grain rules: serial when n <= grain or threads == 1" {
    settings.resetForTesting();
    defer settings.resetForTesting();
    const team = try createTestTeam();
    defer destroyTestTeam(team);
    try settings.setNumThreads(1);
    try testing.expectEachIndexOnce(team, 1000, 1);
    try std.testing.expectEqual(@as(u32, 0), team.worker_count);
    try settings.setNumThreads(4);
    try testing.expectEachIndexOnce(team, 100, 100);
    try std.testing.expectEqual(@as(u32, 0), team.worker_count);
    try testing.expectEachIndexOnce(team, 100, 50); // two chunks: one worker
    try std.testing.expectEqual(@as(u32, 1), team.worker_count);
}

test "omp team runs nested regions serially" {
    settings.resetForTesting();
    defer settings.resetForTesting();
    const team = try createTestTeam();
    defer destroyTestTeam(team);
    try settings.setNumThreads(3);
    try testing.expectNestedRegionsSerial(team);
}

test "omp team runs every chunk and keeps the error of the lowest failing chunk" {
    settings.resetForTesting();
    defer settings.resetForTesting();
    const team = try createTestTeam();
    defer destroyTestTeam(team);
    try settings.setNumThreads(4);
    try testing.expectLowestChunkErrorKept(team);
}

test "omp team follows setNumThreads between regions: 1, 2, 3, 1" {
    settings.resetForTesting();
    defer settings.resetForTesting();
    const team = try createTestTeam();
    defer destroyTestTeam(team);
    const expected_workers = [_]u32{ 0, 1, 2, 2 };
    for ([_]u32{ 1, 2, 3, 1 }, expected_workers) |threads, workers| {
        // Static chunks: each chunk runs on its own thread. The chunks wait for each other,
        // so a worker left asleep on the owner's CPU (skipsWake) would join only once the
        // owner gave up waiting: this test is about the team's size, not placement.
        for (team.workers[0..team.worker_count]) |worker| worker.cpu.store(cpu_unknown, .monotonic);
        try std.testing.expectEqual(@as(usize, threads), try testing.distinctThreadsOfRegion(team, threads));
        try std.testing.expectEqual(workers, team.worker_count);
    }
}

fn expectTeamAsleep(team: *Team) !void {
    // Generous: a loaded machine under ThreadSanitizer; a worker that spins forever still fails.
    const deadline_ns = 10 * std.time.ns_per_s;
    var timer = try std.time.Timer.start();
    for (team.workers[0..team.worker_count]) |worker| {
        // Monotonic: only the sleeping bit is inspected.
        while (worker.doorbell.load(.monotonic) & worker_sleeping == 0) {
            if (timer.read() > deadline_ns) return error.TestUnexpectedResult;
            std.Thread.sleep(std.time.ns_per_ms);
        }
    }
}

test "omp team workers sleep on the futex once regions stop" {
    settings.resetForTesting();
    defer settings.resetForTesting();
    const team = try createTestTeam();
    defer destroyTestTeam(team);
    try settings.setNumThreads(3);
    for (0..100) |_| try testing.expectEachIndexOnce(team, 97, 1);
    try std.testing.expectEqual(@as(u32, 2), team.worker_count);
    try expectTeamAsleep(team);
    // And they wake up again.
    try testing.expectEachIndexOnce(team, 97, 1);
    try expectTeamAsleep(team);
}

test "omp team parked between regions: workers sleep at once, and every region still runs" {
    settings.resetForTesting();
    defer settings.resetForTesting();
    const team = try createTestTeam();
    defer destroyTestTeam(team);
    try settings.setNumThreads(3);
    try testing.expectEachIndexOnce(team, 97, 1);
    team.park();
    // Asleep well before the spin limit would have run out (it waits up to 10 s).
    try expectTeamAsleep(team);
    for (0..300) |i| {
        try testing.expectEachIndexOnce(team, 1000, 1);
        if (i % 3 == 0) team.park(); // parks racing with the next region's ring
    }
    try std.testing.expect(!team.parked.load(.monotonic));
}

/// Runs a team whose owner and workers are all pinned to the CPU the thread runs on, as
/// the scheduler may place them: workers sleep rather than spin beside the owner, and every
/// region still runs each index once.
const PinnedOwner = struct {
    fn main(result: *?anyerror, cpu_seen: *u32) void {
        pinnedRun(cpu_seen) catch |err| {
            result.* = err;
        };
    }

    fn pinnedRun(cpu_seen: *u32) !void {
        const cpu = currentCpu();
        var set = std.mem.zeroes(std.os.linux.cpu_set_t);
        const word_bits = @bitSizeOf(usize);
        set[cpu / word_bits] |= @as(usize, 1) << @intCast(cpu % word_bits);
        // The team's workers are spawned below, so they inherit the one-CPU mask.
        try std.os.linux.sched_setaffinity(0, &set);
        cpu_seen.* = currentCpu();
        const team = try createTestTeam();
        defer destroyTestTeam(team);
        try settings.setNumThreads(3);
        // Regions whose ring skipped a worker asleep on the owner's CPU: its doorbell then
        // still holds an older region's rung. Without skipsWake every region rings them all.
        var left_asleep: u32 = 0;
        for (0..320) |_| {
            try testing.expectEachIndexOnce(team, 1000, 1);
            for (team.workers[0..team.worker_count]) |worker| {
                // Monotonic: only the owner writes the rung; the worker only the bit.
                if (worker.doorbell.load(.monotonic) & ~worker_sleeping != team.generation << 1) left_asleep += 1;
            }
        }
        try std.testing.expect(left_asleep > 0);
        try std.testing.expectEqual(cpu, team.owner_cpu.load(.monotonic));
        for (team.workers[0..team.worker_count]) |worker| {
            const worker_cpu = worker.cpu.load(.monotonic);
            // A worker whose chunks the owner always took never recorded a CPU.
            if (worker_cpu != cpu_unknown) try std.testing.expectEqual(cpu, worker_cpu);
        }
        try expectTeamAsleep(team);
    }
};

test "omp team pinned to one CPU: workers sleep instead of spinning beside the owner and are left asleep, every region runs" {
    if (builtin.os.tag != .linux or !builtin.link_libc) return error.SkipZigTest;
    settings.resetForTesting();
    defer settings.resetForTesting();
    const cpu = currentCpu();
    try std.testing.expect(cpu != cpu_unknown and cpu < try std.Thread.getCpuCount());
    try std.testing.expect(sharesCpu(cpu, cpu) and !sharesCpu(cpu_unknown, cpu_unknown));
    var result: ?anyerror = null;
    var cpu_seen: u32 = cpu_unknown;
    // On its own thread: the test runner's thread keeps its affinity.
    const thread = try std.Thread.spawn(.{}, PinnedOwner.main, .{ &result, &cpu_seen });
    thread.join();
    if (result) |err| return err;
    try std.testing.expect(cpu_seen != cpu_unknown);
}

const Caller = struct {
    const regions = 200;

    fn main(failures: *std.atomic.Value(u32)) void {
        for (0..regions) |_| {
            testing.expectEachIndexOnce(per_thread_team, 1000, 1) catch {
                _ = failures.fetchAdd(1, .monotonic);
            };
        }
    }
};

test "omp teams serve 8 concurrent callers and are freed when the callers exit" {
    settings.resetForTesting();
    defer settings.resetForTesting();
    try settings.setNumThreads(2);
    const teams_before = liveTeamCount();
    var failures: std.atomic.Value(u32) = .init(0);
    var threads: [8]std.Thread = undefined;
    for (&threads) |*thread| thread.* = try std.Thread.spawn(.{}, Caller.main, .{&failures});
    for (threads) |thread| thread.join();
    try std.testing.expectEqual(@as(u32, 0), failures.load(.monotonic));
    // The key destructor ran on each caller before join() returned.
    try std.testing.expectEqual(teams_before, liveTeamCount());
}

const ChurnCaller = struct {
    /// Regions while another thread changes the thread count: the chunk count of each is
    /// unknown, only coverage and the bound on chunks are checked.
    fn main(failures: *std.atomic.Value(u32)) void {
        for (0..Caller.regions) |_| {
            const calls = testing.expectEachIndexCovered(per_thread_team, 1000, 1) catch 0;
            // Monotonic: read after the join.
            if (calls == 0 or calls > 4) _ = failures.fetchAdd(1, .monotonic);
        }
    }
};

test "omp teams keep every index covered while setNumThreads changes under running callers" {
    settings.resetForTesting();
    defer settings.resetForTesting();
    try settings.setNumThreads(4);
    var failures: std.atomic.Value(u32) = .init(0);
    var threads: [4]std.Thread = undefined;
    for (&threads) |*thread| thread.* = try std.Thread.spawn(.{}, ChurnCaller.main, .{&failures});
    for (0..200) |step| {
        try settings.setNumThreads(@intCast(1 + step % 4));
        std.Thread.sleep(100 * std.time.ns_per_us);
    }
    for (threads) |thread| thread.join();
    try std.testing.expectEqual(@as(u32, 0), failures.load(.monotonic));
}
