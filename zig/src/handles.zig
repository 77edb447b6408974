//! A table of opaque 64-bit handles (slot index + generation) for objects TypeScript holds.
//! A stale, double-freed or forged handle is detected and refused, never dereferenced.
const std = @import("std");
const status = @import("status.zig");

const Error = status.Error;

pub const Handle = u64;

/// `T` must have `retain()` and `release()`: the table holds one reference per live handle
/// and hands out extra ones from `acquire`.
pub fn Table(comptime T: type, comptime kind: []const u8) type {
    return struct {
        const Self = @This();
        const Slot = struct { generation: u32, object: ?*T };

        /// Guards slots and free_list. Critical sections are a few loads and stores; the only
        /// allocation is growing the table.
        mutex: std.Thread.Mutex = .{},
        slots: std.ArrayListUnmanaged(Slot) = .empty,
        free_list: std.ArrayListUnmanaged(u32) = .empty,
        live: usize = 0,

        /// Takes ownership of one reference of `object` and returns its handle.
        pub fn register(table: *Self, object: *T) Error!Handle {
            table.mutex.lock();
            defer table.mutex.unlock();
            const index: u32 = if (table.free_list.pop()) |reused| reused else blk: {
                if (table.slots.items.len >= std.math.maxInt(u32) - 1) {
                    return status.fail(error.TooLarge, "{d} handles are live; dispose of some first", .{table.slots.items.len});
                }
                table.slots.append(std.heap.c_allocator, .{ .generation = 1, .object = null }) catch
                    return error.OutOfMemory;
                break :blk @intCast(table.slots.items.len - 1);
            };
            const slot = &table.slots.items[index];
            std.debug.assert(slot.object == null);
            slot.object = object;
            table.live += 1;
            return (@as(u64, slot.generation) << 32) | (@as(u64, index) + 1);
        }

        fn slotOf(table: *Self, handle: Handle) Error!*Slot {
            const low: u32 = @truncate(handle);
            const generation: u32 = @truncate(handle >> 32);
            if (low != 0 and low - 1 < table.slots.items.len) {
                const slot = &table.slots.items[low - 1];
                if (slot.generation == generation and slot.object != null) return slot;
            }
            return status.fail(error.InvalidHandle, kind ++ " handle 0x{x} is not live (disposed or never created)", .{handle});
        }

        /// The object behind `handle`, with one extra reference the caller must release.
        pub fn acquire(table: *Self, handle: Handle) Error!*T {
            table.mutex.lock();
            defer table.mutex.unlock();
            const object = (try table.slotOf(handle)).object.?;
            object.retain();
            return object;
        }

        /// Drops the table's reference; the handle is dead from now on.
        pub fn dispose(table: *Self, handle: Handle) Error!void {
            const object = blk: {
                table.mutex.lock();
                defer table.mutex.unlock();
                const slot = try table.slotOf(handle);
                const object = slot.object.?;
                slot.object = null;
                // Generation 0 never appears in a live handle, so wrap-around skips it.
                slot.generation +%= 1;
                if (slot.generation == 0) slot.generation = 1;
                // A slot that cannot be recycled (no memory) is leaked, which is harmless.
                table.free_list.append(std.heap.c_allocator, @as(u32, @truncate(handle)) - 1) catch {};
                table.live -= 1;
                break :blk object;
            };
            object.release();
        }

        pub fn liveCount(table: *Self) usize {
            table.mutex.lock();
            defer table.mutex.unlock();
            return table.live;
        }
    };
}

test "handles round-trip and refuse reuse after dispose" {
    const Counted = struct {
        refs: u32 = 1,
        fn retain(c: *@This()) void {
            c.refs += 1;
        }
        fn release(c: *@This()) void {
            c.refs -= 1;
        }
    };
    var table: Table(Counted, "test") = .{};
    var object: Counted = .{};
    const handle = try table.register(&object);
    try std.testing.expectEqual(@as(usize, 1), table.liveCount());
    const acquired = try table.acquire(handle);
    try std.testing.expectEqual(@as(u32, 2), acquired.refs);
    acquired.release();
    try table.dispose(handle);
    try std.testing.expectEqual(@as(u32, 0), object.refs);
    try std.testing.expectError(error.InvalidHandle, table.acquire(handle));
    try std.testing.expectError(error.InvalidHandle, table.dispose(handle));
    try std.testing.expectError(error.InvalidHandle, table.acquire(0));
    try std.testing.expectError(error.InvalidHandle, table.acquire(0xdead_0000_beef));
    // The slot is reused with a new generation: the old handle stays dead.
    object.refs = 1;
    const second = try table.register(&object);
    try std.testing.expect(second != handle);
    try std.testing.expectError(error.InvalidHandle, table.acquire(handle));
    try table.dispose(second);
}
