//! A bounded cache of large tensor blocks. Eager ops allocate their outputs; for large
//! tensors malloc hands out fresh mmap'd pages, and the first write to each page faults —
//! measured here, that made an eager 16M-float add 5× slower than the same kernel into a
//! reused buffer. Freed large blocks are kept (up to `max_cached_bytes`) and handed back to
//! the next allocation of the same size class, so steady-state inference touches warm pages.
const std = @import("std");

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
    const capacity = sizeClass(@max(byte_count, 1));
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
    if (block.len < min_cached_bytes or block.len > max_cached_bytes) return allocator.free(block);
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

/// Frees every cached block (tests, and callers that want the memory back).
pub fn trim() void {
    mutex.lock();
    defer mutex.unlock();
    for (&slots) |*slot| {
        if (slot.*) |block| allocator.free(block);
        slot.* = null;
    }
    cached_bytes = 0;
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
