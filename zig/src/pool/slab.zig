//! Fixed-size nodes from slabs that are recycled, never freed: the future nodes of
//! future.zig. A node comes from a free list refilled with a slab of `slab_nodes` whenever
//! the number of live nodes exceeds its previous peak, so in steady state taking a node
//! allocates nothing. Slabs live as long as the process, so a node's address stays valid
//! for anything that still holds it after it was recycled (a futex wake on one of its words).
const std = @import("std");

const assert = std.debug.assert;
const allocator = std.heap.c_allocator;

/// While a node is free its first bytes hold the free list's link.
const FreeLink = struct { next: ?*FreeLink };

/// At most `live_max` nodes of type `Node` alive at once, allocated `slab_nodes` at a time.
pub fn Slab(comptime Node: type, comptime slab_nodes: u32, comptime live_max: u32) type {
    comptime {
        assert(slab_nodes > 0);
        assert(live_max % slab_nodes == 0);
        assert(@sizeOf(Node) >= @sizeOf(FreeLink));
        assert(@alignOf(Node) >= @alignOf(FreeLink));
    }
    return struct {
        const Self = @This();

        pub const AcquireError = error{
            /// `live_max` nodes are alive.
            TooLarge,
            /// No memory for a new slab.
            OutOfMemory,
        };

        /// Guards every field; the critical sections are a few loads and stores (and the
        /// allocation of a new slab, once per `slab_nodes` new peak nodes).
        mutex: std.Thread.Mutex = .{},
        free: ?*FreeLink = null,
        live: u32 = 0,
        allocated: u32 = 0,

        /// A node, uninitialised: the caller writes every field it reads later.
        pub fn acquire(slab: *Self) AcquireError!*Node {
            slab.mutex.lock();
            defer slab.mutex.unlock();
            if (slab.live == live_max) return error.TooLarge;
            if (slab.free == null) try slab.grow();
            const link = slab.free.?;
            slab.free = link.next;
            slab.live += 1;
            assert(slab.live <= slab.allocated);
            return @ptrCast(@alignCast(link));
        }

        fn grow(slab: *Self) error{OutOfMemory}!void {
            assert(slab.free == null);
            assert(slab.allocated + slab_nodes <= live_max);
            const nodes = try allocator.alloc(Node, slab_nodes);
            for (nodes) |*node| {
                const link: *FreeLink = @ptrCast(@alignCast(node));
                link.* = .{ .next = slab.free };
                slab.free = link;
            }
            slab.allocated += slab_nodes;
        }

        /// Returns `node` to the free list; nobody may read its fields any more.
        pub fn recycle(slab: *Self, node: *Node) void {
            slab.mutex.lock();
            defer slab.mutex.unlock();
            assert(slab.live > 0);
            const link: *FreeLink = @ptrCast(@alignCast(node));
            link.* = .{ .next = slab.free };
            slab.free = link;
            slab.live -= 1;
        }

        /// Nodes taken and not recycled.
        pub fn liveCount(slab: *Self) usize {
            slab.mutex.lock();
            defer slab.mutex.unlock();
            return slab.live;
        }
    };
}

test "nodes are recycled before a new slab is allocated, and the live bound holds" {
    const Node = struct { a: u64, b: u64 };
    var slab: Slab(Node, 4, 8) = .{};
    var nodes: [8]*Node = undefined;
    for (&nodes) |*node| node.* = try slab.acquire();
    try std.testing.expectEqual(@as(usize, 8), slab.liveCount());
    try std.testing.expectError(error.TooLarge, slab.acquire());
    slab.recycle(nodes[3]);
    const again = try slab.acquire();
    try std.testing.expectEqual(nodes[3], again);
    try std.testing.expectEqual(@as(u32, 8), slab.allocated);
    for (nodes) |node| slab.recycle(node);
    try std.testing.expectEqual(@as(usize, 0), slab.liveCount());
    // Slabs are never freed (by design): the two of this test stay allocated.
}
