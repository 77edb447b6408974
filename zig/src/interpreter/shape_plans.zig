//! Memory plans of a program's entry graph per input shape, for programs whose inputs have
//! open dims (an imported model with symbolic sizes). The load-time check can plan only a
//! program whose shapes are all fixed; here the first run at a new set of input shapes is
//! recorded (as the check records) and planned, and later runs at those shapes take one
//! arena instead of one allocation per op. At most `capacity` shapes are kept, the least
//! recently used one making room: a recogniser fed every text width stays bounded.
const std = @import("std");
const status = @import("../status.zig");
const tensor = @import("../tensor.zig");
const ops = @import("../ops.zig");
const plan_module = @import("plan.zig");

const Error = status.Error;
const Tensor = tensor.Tensor;
const max_dims = tensor.max_dims;

/// The most input shapes whose plans a program keeps.
pub const capacity = 8;

/// The shapes of a run's inputs (at most ops.max_inputs, each at most max_dims dims).
pub const Key = struct {
    count: u8 = 0,
    ranks: [ops.max_inputs]u8 = @splat(0),
    dims: [ops.max_inputs][max_dims]usize = @splat(@splat(0)),

    pub fn of(inputs: []const *Tensor) Key {
        std.debug.assert(inputs.len <= ops.max_inputs);
        var key: Key = .{ .count = @intCast(inputs.len) };
        for (inputs, 0..) |input, i| {
            key.ranks[i] = input.ndim;
            @memcpy(key.dims[i][0..input.ndim], input.dims());
        }
        return key;
    }

    fn eql(a: *const Key, b: *const Key) bool {
        if (a.count != b.count) return false;
        for (0..a.count) |i| {
            if (a.ranks[i] != b.ranks[i]) return false;
            if (!std.mem.eql(usize, a.dims[i][0..a.ranks[i]], b.dims[i][0..b.ranks[i]])) return false;
        }
        return true;
    }
};

/// One shape's plan (null: the recording found nothing to plan), with the memory it lives in.
pub const Entry = struct {
    key: Key,
    plan: ?plan_module.GraphPlan,
    arena: std.heap.ArenaAllocator,
    last_used: u64,
    /// Holders: the cache while the entry is in it, and each run using its plan. Release in
    /// release() synchronizes with the Acquire load before the entry is freed.
    refs: std.atomic.Value(u32),

    pub fn release(entry: *Entry) void {
        const previous = entry.refs.fetchSub(1, .release);
        std.debug.assert(previous > 0);
        if (previous == 1) {
            // Acquire pairs with the Release decrements of every other holder.
            _ = entry.refs.load(.acquire);
            var arena = entry.arena;
            arena.deinit();
            std.heap.c_allocator.destroy(entry);
        }
    }
};

pub const ShapePlans = struct {
    mutex: std.Thread.Mutex = .{},
    entries: [capacity]?*Entry = @splat(null),
    tick: u64 = 0,

    /// The entry for `key`, retained for the caller (who releases it), or null.
    pub fn acquire(plans: *ShapePlans, key: *const Key) ?*Entry {
        plans.mutex.lock();
        defer plans.mutex.unlock();
        for (plans.entries) |slot| if (slot) |entry| if (entry.key.eql(key)) {
            plans.tick += 1;
            entry.last_used = plans.tick;
            // Monotonic: the cache's own reference keeps the entry alive while we hold the lock.
            _ = entry.refs.fetchAdd(1, .monotonic);
            return entry;
        };
        return null;
    }

    /// A new entry for `key`, not yet in the cache: the caller builds its plan in its arena,
    /// then inserts it (or releases it).
    pub fn create(key: *const Key) Error!*Entry {
        const entry = std.heap.c_allocator.create(Entry) catch return error.OutOfMemory;
        entry.* = .{ .key = key.*, .plan = null, .arena = .init(std.heap.c_allocator), .last_used = 0, .refs = .init(1) };
        return entry;
    }

    /// Puts `entry` in the cache, which takes the caller's reference; the least recently used
    /// entry makes room when the cache is full. A run that planned the same shapes meanwhile
    /// wins: `entry` is released.
    pub fn insert(plans: *ShapePlans, entry: *Entry) void {
        var evicted: ?*Entry = null;
        {
            plans.mutex.lock();
            defer plans.mutex.unlock();
            var victim: usize = 0;
            for (plans.entries, 0..) |slot, i| {
                const held = slot orelse {
                    victim = i;
                    break;
                };
                if (held.key.eql(&entry.key)) {
                    evicted = entry;
                    break;
                }
                if (held.last_used < plans.entries[victim].?.last_used) victim = i;
            } else {
                evicted = plans.entries[victim];
            }
            if (evicted != entry) {
                plans.tick += 1;
                entry.last_used = plans.tick;
                plans.entries[victim] = entry;
            }
        }
        // Outside the lock: freeing takes time, and a run may still hold the evicted entry.
        if (evicted) |old| old.release();
    }

    /// Releases every entry (the program is being freed: no run holds one).
    pub fn deinit(plans: *ShapePlans) void {
        for (&plans.entries) |*slot| if (slot.*) |entry| {
            entry.release();
            slot.* = null;
        };
    }

    /// How many shapes have a plan entry (for tests and diagnostics).
    pub fn count(plans: *ShapePlans) usize {
        plans.mutex.lock();
        defer plans.mutex.unlock();
        var total: usize = 0;
        for (plans.entries) |slot| total += @intFromBool(slot != null);
        return total;
    }
};

test "shape plans keep at most `capacity` entries, evicting the least recently used" {
    var plans: ShapePlans = .{};
    defer plans.deinit();
    var sizes: [capacity + 3]*Tensor = undefined;
    for (&sizes, 0..) |*t, i| t.* = try tensor.createZeroed(.float32, &.{ i + 1, 2 });
    defer for (sizes) |t| t.release();
    for (sizes[0..capacity]) |t| plans.insert(try ShapePlans.create(&Key.of(&.{t})));
    try std.testing.expectEqual(@as(usize, capacity), plans.count());
    // Touch the first, then add three more: the first survives, shapes 1, 2 and 3 go.
    const first = plans.acquire(&Key.of(&.{sizes[0]})).?;
    first.release();
    for (sizes[capacity..]) |t| plans.insert(try ShapePlans.create(&Key.of(&.{t})));
    try std.testing.expectEqual(@as(usize, capacity), plans.count());
    const kept = plans.acquire(&Key.of(&.{sizes[0]})) orelse return error.TestUnexpectedResult;
    kept.release();
    for (sizes[1..4]) |t| try std.testing.expect(plans.acquire(&Key.of(&.{t})) == null);
    // A duplicate insert keeps the entry already there.
    const duplicate = try ShapePlans.create(&Key.of(&.{sizes[0]}));
    plans.insert(duplicate);
    try std.testing.expectEqual(@as(usize, capacity), plans.count());
    // An entry held by a run outlives its eviction.
    const held = plans.acquire(&Key.of(&.{sizes[5]})).?;
    for (sizes[1..4]) |t| plans.insert(try ShapePlans.create(&Key.of(&.{t})));
    try std.testing.expect(held.key.eql(&Key.of(&.{sizes[5]})));
    held.release();
}
