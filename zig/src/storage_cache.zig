//! A bounded cache of large tensor blocks. Eager ops allocate their outputs; for large
//! tensors malloc hands out fresh mmap'd pages, and the first write to each page faults —
//! measured here, that made an eager 16M-float add 5× slower than the same kernel into a
//! reused buffer. Freed large blocks are kept (up to `max_cached_bytes`) and handed back to
//! the next allocation of the same size class, so steady-state inference touches warm pages.
//!
//! Idle memory goes back to the OS: once the process has allocated nothing through this
//! cache for `idle_trim_ns`, a trimmer thread frees the cached blocks and asks the C
//! allocator to return its free pages (malloc_trim, glibc). The thread is started by the
//! first allocation and sleeps on a futex while nothing needs trimming: an idle process
//! pays no wake-ups, and a busy one pays one relaxed load per allocation.
const std = @import("std");
const builtin = @import("builtin");

const allocator = std.heap.c_allocator;

pub const alignment = 64;
/// Blocks below this go straight to malloc, which recycles small blocks well by itself.
pub const min_cached_bytes = 256 * 1024;
/// Upper bound on memory held by the cache.
pub const max_cached_bytes: usize = 1 << 30;
const slot_count = 32;

pub const Block = []align(alignment) u8;

/// Sizes round up to one of four classes per power of two, so that a block can serve
/// requests up to 25% smaller than itself.
pub fn sizeClass(byte_count: usize) usize {
    if (byte_count < min_cached_bytes) return byte_count;
    const power = std.math.floorPowerOfTwo(usize, byte_count);
    const step = power / 4;
    return std.mem.alignForward(usize, byte_count, step);
}

/// Guards `slots`, `cached_bytes` and `next_age`: a few loads and stores per allocation.
var mutex: std.Thread.Mutex = .{};
var slots: [slot_count]?Block = @splat(null);
var ages: [slot_count]u64 = @splat(0);
var cached_bytes: usize = 0;
var next_age: u64 = 0;

/// Calls that went to the system allocator (not served from a cache), process-wide: tests
/// use it to check that steady-state inference does not allocate per op. Monotonic: a
/// statistic, read without ordering.
pub var system_allocations: std.atomic.Value(u64) = .init(0);

/// A block of at least `byte_count` bytes (exactly `sizeClass(byte_count)` when cached-size).
pub fn allocate(byte_count: usize) error{OutOfMemory}!Block {
    noteActivity();
    const capacity = sizeClass(@max(byte_count, 1));
    if (SmallBlocks.take(capacity)) |block| return block;
    if (capacity >= min_cached_bytes) {
        mutex.lock();
        defer mutex.unlock();
        for (&slots) |*slot| {
            const block = slot.* orelse continue;
            if (block.len != capacity) continue;
            slot.* = null;
            cached_bytes -= capacity;
            return block;
        }
    }
    _ = system_allocations.fetchAdd(1, .monotonic);
    return allocator.alignedAlloc(u8, .fromByteUnits(alignment), capacity);
}

/// Returns a block from `allocate`: kept for reuse when large and the cache has room
/// (evicting the oldest blocks), freed otherwise.
pub fn free(block: Block) void {
    noteActivity();
    if (block.len < min_cached_bytes) {
        if (SmallBlocks.keep(block)) |evicted| allocator.free(evicted);
        return;
    }
    if (block.len > max_cached_bytes) return allocator.free(block);
    var evicted: [slot_count]?Block = @splat(null);
    defer for (evicted) |maybe| if (maybe) |old| allocator.free(old);
    mutex.lock();
    defer mutex.unlock();
    // Make room: evict oldest blocks until the new one fits under the byte bound and a slot
    // is free. Frees happen after unlocking (the defer above runs last).
    while (true) {
        var free_slot: ?usize = null;
        var oldest: ?usize = null;
        for (slots, 0..) |slot, i| {
            if (slot == null) {
                free_slot = free_slot orelse i;
            } else if (oldest == null or ages[i] < ages[oldest.?]) {
                oldest = i;
            }
        }
        if (free_slot != null and cached_bytes + block.len <= max_cached_bytes) {
            slots[free_slot.?] = block;
            ages[free_slot.?] = next_age;
            next_age += 1;
            cached_bytes += block.len;
            return;
        }
        const victim = oldest orelse break; // empty cache and still no room: free the block
        evicted[victim] = slots[victim];
        cached_bytes -= slots[victim].?.len;
        slots[victim] = null;
    }
    allocator.free(block);
}

/// Slots for blocks below min_cached_bytes. A run of a small model allocates the same few
/// sizes on every call (its memory plan's arena, its outputs); measured on a 25 × 96 model,
/// glibc spent about 1.5% of the run on them (malloc_consolidate: a large-bin request after
/// the interpreter's and V8's small frees). The cache keeps the last few freed small blocks
/// and hands one back to an allocation of exactly its size. Process-wide, under `mutex` (a
/// per-thread cache would strand its blocks when Deno retires a blocking-pool thread), and
/// bounded: `small_slot_count` blocks of at most `small_bytes_max`, the oldest going back to
/// malloc first; the idle trimmer frees them with the large blocks.
const SmallBlocks = struct {
    const small_slot_count = 8;
    const small_bytes_max = 64 * 1024;
    var small_slots: [small_slot_count]?Block = @splat(null);
    /// The slot the next eviction empties: round robin, so the oldest block goes first.
    var next_victim: usize = 0;

    fn take(capacity: usize) ?Block {
        if (capacity > small_bytes_max) return null;
        mutex.lock();
        defer mutex.unlock();
        for (&small_slots) |*slot| {
            const block = slot.* orelse continue;
            if (block.len != capacity) continue;
            slot.* = null;
            return block;
        }
        return null;
    }

    /// Keeps `block`; returns the block to free instead (it, when too large, or an evicted one).
    fn keep(block: Block) ?Block {
        if (block.len > small_bytes_max) return block;
        mutex.lock();
        defer mutex.unlock();
        for (&small_slots) |*slot| if (slot.* == null) {
            slot.* = block;
            return null;
        };
        const evicted = small_slots[next_victim];
        small_slots[next_victim] = block;
        next_victim = (next_victim + 1) % small_slot_count;
        return evicted;
    }

    /// Takes every kept block (trim frees them after unlocking); the caller holds `mutex`.
    fn takeAll() [small_slot_count]?Block {
        const taken = small_slots;
        small_slots = @splat(null);
        return taken;
    }
};

/// Frees every cached block (the idle trimmer, tests, and callers that want the memory
/// back). The frees happen after unlocking, so allocations meanwhile do not wait on them.
pub fn trim() void {
    var taken: [slot_count]?Block = @splat(null);
    var small: [SmallBlocks.small_slot_count]?Block = @splat(null);
    {
        mutex.lock();
        defer mutex.unlock();
        taken = slots;
        slots = @splat(null);
        cached_bytes = 0;
        small = SmallBlocks.takeAll();
    }
    for (taken) |maybe| if (maybe) |block| allocator.free(block);
    for (small) |maybe| if (maybe) |block| allocator.free(block);
}

/// How long the process must allocate nothing before cached blocks and the C allocator's
/// free pages go back to the OS. Long enough that a server between requests keeps its warm
/// blocks; short enough that an application done with inference gets its memory back.
pub const idle_trim_ns: u64 = 3 * std.time.ns_per_s;

/// The trimmer's view of the process, a futex word: `active` (something allocated since the
/// trimmer last looked), `quiet` (nothing yet: the trimmer is timing an idle interval),
/// `asleep` (trimmed; the trimmer sleeps until the next allocation wakes it) or `unstarted`
/// (no allocation yet, no thread). Monotonic throughout: the word carries no data, only
/// whether to trim, and Futex.wait re-checks it atomically, so a wake cannot be lost between
/// the trimmer's check and its sleep.
const Activity = enum(u32) { active, quiet, asleep, unstarted };
var activity: std.atomic.Value(u32) = .init(@intFromEnum(Activity.unstarted));
var trimmer: ?std.Thread = null;
/// Idle trims done so far (a statistic, for tests).
pub var idle_trims: std.atomic.Value(u64) = .init(0);

/// Marks the process as active: a relaxed load on the hot path; a store (and, when the
/// trimmer sleeps, a futex wake) only on the first allocation after a quiet moment. The
/// first allocation of the process starts the trimmer.
fn noteActivity() void {
    if (activity.load(.monotonic) == @intFromEnum(Activity.active)) return;
    switch (@as(Activity, @enumFromInt(activity.swap(@intFromEnum(Activity.active), .monotonic)))) {
        .active, .quiet => {},
        .asleep => std.Thread.Futex.wake(&activity, 1),
        .unstarted => {
            // Without a thread (out of resources) nothing is trimmed when idle; all else holds.
            // The thread runs for the life of the process; its handle is never joined. Default
            // stack: glibc carves the (large) static TLS of this library out of it.
            trimmer = std.Thread.spawn(.{}, trimWhenIdle, .{}) catch return;
        },
    }
}

/// The trimmer looks this many times per idle_trim_ns, so it trims between idle_trim_ns and
/// idle_trim_ns · (1 + 1 / checks_per_interval) after the last allocation.
const checks_per_interval = 4;

fn trimWhenIdle() void {
    var quiet_checks: u32 = 0;
    while (true) {
        // Time one check; count it quiet if nothing allocated during it.
        if (activity.swap(@intFromEnum(Activity.quiet), .monotonic) == @intFromEnum(Activity.quiet)) {
            quiet_checks += 1;
        } else {
            quiet_checks = 0;
        }
        if (quiet_checks < checks_per_interval) {
            std.Thread.sleep(idle_trim_ns / checks_per_interval);
            continue;
        }
        quiet_checks = 0;
        if (activity.cmpxchgStrong(@intFromEnum(Activity.quiet), @intFromEnum(Activity.asleep), .monotonic, .monotonic) != null) continue;
        trim();
        trimCAllocator();
        _ = idle_trims.fetchAdd(1, .monotonic);
        while (activity.load(.monotonic) == @intFromEnum(Activity.asleep)) {
            std.Thread.Futex.wait(&activity, @intFromEnum(Activity.asleep));
        }
    }
}

extern "c" fn malloc_trim(pad: usize) c_int;

/// Returns the C allocator's free pages to the OS (glibc; other C libraries keep theirs).
pub fn trimCAllocator() void {
    if (comptime builtin.target.isGnuLibC()) _ = malloc_trim(0);
}

pub fn cachedBytes() usize {
    mutex.lock();
    defer mutex.unlock();
    return cached_bytes;
}

test "size classes round up by at most a quarter" {
    try std.testing.expectEqual(@as(usize, 100), sizeClass(100));
    try std.testing.expectEqual(@as(usize, 1 << 20), sizeClass(1 << 20));
    try std.testing.expectEqual(@as(usize, (1 << 20) + (1 << 18)), sizeClass((1 << 20) + 1));
    const n: usize = 3_000_001;
    try std.testing.expect(sizeClass(n) >= n and sizeClass(n) <= n + n / 4);
}

test "a freed large block is reused for the same size class, small ones are not cached" {
    trim();
    const first = try allocate(1 << 20);
    const address = first.ptr;
    free(first);
    try std.testing.expectEqual(@as(usize, 1 << 20), cachedBytes());
    const second = try allocate((1 << 20) - 100);
    try std.testing.expectEqual(address, second.ptr);
    try std.testing.expectEqual(@as(usize, 0), cachedBytes());
    free(second);
    const tiny = try allocate(64);
    free(tiny);
    try std.testing.expectEqual(@as(usize, 1 << 20), cachedBytes());
    trim();
    try std.testing.expectEqual(@as(usize, 0), cachedBytes());
}

test "an idle process trims the cache; an allocation wakes the trimmer again" {
    trim();
    const block = try allocate(1 << 20);
    free(block);
    try std.testing.expectEqual(@as(usize, 1 << 20), cachedBytes());
    const trims_before = idle_trims.load(.monotonic);
    // Nothing allocates through the cache for a little over one interval: it is trimmed.
    var waited: u64 = 0;
    while (idle_trims.load(.monotonic) == trims_before and waited < 4 * idle_trim_ns) : (waited += std.time.ns_per_s / 10) {
        std.Thread.sleep(std.time.ns_per_s / 10);
    }
    try std.testing.expect(idle_trims.load(.monotonic) > trims_before);
    try std.testing.expectEqual(@as(usize, 0), cachedBytes());
    // The next allocation wakes the trimmer, which trims again after the next idle interval.
    // Right after it the state is `active`, or already `quiet` if the woken trimmer ran a
    // check in between; never `asleep`.
    free(try allocate(1 << 20));
    try std.testing.expect(@as(Activity, @enumFromInt(activity.load(.monotonic))) != .asleep);
}

test "a freed small block is reused by the next allocation of its size, boundedly, until a trim" {
    trim();
    const first = try allocate(9600);
    const address = first.ptr;
    free(first);
    const before = system_allocations.load(.monotonic);
    const second = try allocate(9600);
    try std.testing.expectEqual(address, second.ptr);
    try std.testing.expectEqual(before, system_allocations.load(.monotonic));
    // Another size is a fresh block; more frees than slots evict the oldest, never grow.
    const other = try allocate(4000);
    try std.testing.expect(other.ptr != second.ptr);
    free(other);
    var blocks: [SmallBlocks.small_slot_count + 2]Block = undefined;
    for (&blocks, 0..) |*block, i| block.* = try allocate(1000 + 64 * i);
    for (blocks) |block| free(block);
    var kept: usize = 0;
    for (SmallBlocks.small_slots) |slot| kept += @intFromBool(slot != null);
    try std.testing.expectEqual(@as(usize, SmallBlocks.small_slot_count), kept);
    free(second);
    trim();
    for (SmallBlocks.small_slots) |slot| try std.testing.expect(slot == null);
}
