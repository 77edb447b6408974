//! The memory plan of a graph: which op outputs live in one per-run arena, and where. Built
//! once at load from a recording of the load-time shape check (which ran every graph on
//! inputs of its declared shapes), so each op's output size is known. Outputs whose
//! lifetimes (definition to last use, views included) do not overlap share bytes, so a run
//! takes one block (from the block cache) instead of one allocation per op.
const std = @import("std");
const status = @import("../status.zig");
const program_module = @import("program.zig");

const Error = status.Error;
const Graph = program_module.Graph;

/// What the shape check saw for each node of a graph.
pub const Recording = struct {
    /// Bytes of the node's output when the op allocated it fresh (0 otherwise).
    fresh_bytes: []usize,
    /// The input value whose storage the output shares (a view), if any.
    alias_of: []?u32,
};

pub const GraphPlan = struct {
    arena_bytes: usize,
    /// Per node: where its output goes in the arena (null: the op allocates as usual).
    offsets: []?usize,
    /// Per node: the output's size (meaningful where offsets[n] != null).
    bytes: []usize,
};

/// Plans bigger than this are not worth one block: fall back to per-op allocation.
const max_arena_bytes: usize = 4 << 30;
const alignment = 64;

fn find(parents: []u32, value: u32) u32 {
    var v = value;
    while (parents[v] != v) {
        parents[v] = parents[parents[v]]; // path halving keeps the chains short
        v = parents[v];
    }
    return v;
}

const Group = struct {
    plannable: bool = true,
    definer: ?u32 = null, // the node that allocated the group's storage
    start: u32 = std.math.maxInt(u32),
    end: u32 = 0,
};

/// Builds the plan, or returns null when nothing can be planned.
pub fn build(allocator: std.mem.Allocator, graph: *const Graph, recording: Recording) Error!?GraphPlan {
    const values = graph.value_count;
    const nodes = graph.nodes.len;
    const parents = allocator.alloc(u32, values) catch return error.OutOfMemory;
    for (parents, 0..) |*p, v| p.* = @intCast(v);
    const defined_by = allocator.alloc(u32, values) catch return error.OutOfMemory;
    @memset(defined_by, std.math.maxInt(u32)); // graph inputs: defined outside
    for (graph.nodes, 0..) |node, n| {
        defined_by[node.output] = @intCast(n);
        if (node.kind == .op) if (recording.alias_of[n]) |source| {
            const a = find(parents, node.output);
            const b = find(parents, source);
            parents[a] = b;
        };
    }
    const groups = allocator.alloc(Group, values) catch return error.OutOfMemory;
    @memset(groups, .{});
    for (0..values) |v| {
        const group = &groups[find(parents, @intCast(v))];
        const n = defined_by[v];
        // Values made outside the arena (inputs, constants, futures, waited results,
        // outputs the op did not allocate fresh) make their whole group unplannable.
        if (n == std.math.maxInt(u32)) {
            group.plannable = false;
            continue;
        }
        const node = graph.nodes[n];
        if (node.kind == .op and recording.fresh_bytes[n] > 0) {
            if (group.definer != null) group.plannable = false;
            group.definer = n;
        } else if (!(node.kind == .op and recording.alias_of[n] != null)) {
            group.plannable = false;
        }
        const last = graph.last_use[v];
        if (last == program_module.kept) group.plannable = false;
        group.start = @min(group.start, n);
        group.end = @max(group.end, if (last == program_module.never_read) n else last);
    }
    // A control-flow node's subgraph may hand an input back as an output (a branch returning
    // a captured value), so what such a node reads lives on past it: out of the arena.
    for (graph.nodes) |node| {
        if (node.kind != .@"if" and node.kind != .loop and node.kind != .scan) continue;
        for (node.inputs) |v| groups[find(parents, v)].plannable = false;
    }
    // A forked task reads its inputs until the future is waited on.
    for (graph.nodes, 0..) |node, n| {
        if (node.kind != .fork) continue;
        var until: u32 = @intCast(nodes);
        for (graph.nodes[n..], n..) |later, m| {
            if (later.kind == .wait and later.inputs[0] == node.output) {
                until = @intCast(m);
                break;
            }
        }
        for (node.inputs) |v| {
            const group = &groups[find(parents, v)];
            group.end = @max(group.end, until);
        }
    }
    return assign(allocator, graph, recording, groups, parents);
}

const Placed = struct { offset: usize, size: usize, end: u32 };

/// Greedy first fit in order of definition: a region is reused once the group that held it
/// is past its last use (strictly before the new group's first node).
fn assign(allocator: std.mem.Allocator, graph: *const Graph, recording: Recording, groups: []Group, parents: []u32) Error!?GraphPlan {
    const nodes = graph.nodes.len;
    const offsets = allocator.alloc(?usize, nodes) catch return error.OutOfMemory;
    @memset(offsets, null);
    const bytes = allocator.alloc(usize, nodes) catch return error.OutOfMemory;
    @memset(bytes, 0);
    var live: std.ArrayListUnmanaged(Placed) = .empty;
    var top: usize = 0;
    var planned: usize = 0;
    for (graph.nodes, 0..) |node, n| {
        if (node.kind != .op or recording.fresh_bytes[n] == 0) continue;
        const group = groups[find(parents, node.output)];
        if (!group.plannable or group.definer != @as(u32, @intCast(n))) continue;
        const size = std.mem.alignForward(usize, recording.fresh_bytes[n], alignment);
        // Drop regions whose groups ended before this node.
        var i: usize = 0;
        while (i < live.items.len) {
            if (live.items[i].end < n) _ = live.orderedRemove(i) else i += 1;
        }
        std.mem.sort(Placed, live.items, {}, struct {
            fn less(_: void, a: Placed, b: Placed) bool {
                return a.offset < b.offset;
            }
        }.less);
        var offset: usize = 0;
        for (live.items) |region| {
            if (offset + size <= region.offset) break;
            offset = @max(offset, region.offset + region.size);
        }
        live.append(allocator, .{ .offset = offset, .size = size, .end = group.end }) catch return error.OutOfMemory;
        offsets[n] = offset;
        bytes[n] = recording.fresh_bytes[n];
        top = @max(top, offset + size);
        planned += 1;
    }
    if (planned == 0 or top > max_arena_bytes) return null;
    return .{ .arena_bytes = top, .offsets = offsets, .bytes = bytes };
}

test "outputs with disjoint lifetimes share the arena, overlapping ones do not" {
    // x -> a = relu(x) -> b = relu(a) -> c = add(a, b) -> d = relu(c): a lives until c, so b
    // cannot reuse a's bytes; d can reuse a's (a and b end at node 2).
    var arena_state = std.heap.ArenaAllocator.init(std.testing.allocator);
    defer arena_state.deinit();
    const allocator = arena_state.allocator();
    const Node = program_module.Node;
    const nodes = [_]Node{
        .{ .kind = .op, .inputs = &.{0}, .output = 1, .options = .{ .relu = .{} }, .target = 0 },
        .{ .kind = .op, .inputs = &.{1}, .output = 2, .options = .{ .relu = .{} }, .target = 0 },
        .{ .kind = .op, .inputs = &.{ 1, 2 }, .output = 3, .options = .{ .add = .{} }, .target = 0 },
        .{ .kind = .op, .inputs = &.{3}, .output = 4, .options = .{ .relu = .{} }, .target = 0 },
        .{ .kind = .op, .inputs = &.{4}, .output = 5, .options = .{ .relu = .{} }, .target = 0 },
    };
    const last_use = [_]u32{ 0, 2, 2, 3, 4, program_module.kept };
    const graph: Graph = .{
        .name = "test",
        .inputs = &.{},
        .value_count = 6,
        .nodes = &nodes,
        .outputs = &.{5},
        .value_kinds = &(.{.tensor} ** 6),
        .last_use = &last_use,
    };
    var fresh = [_]usize{ 100, 100, 100, 100, 100 };
    var alias = [_]?u32{ null, null, null, null, null };
    const plan = (try build(allocator, &graph, .{ .fresh_bytes = &fresh, .alias_of = &alias })).?;
    try std.testing.expect(plan.offsets[0].? != plan.offsets[1].?); // a and b overlap in time
    try std.testing.expect(plan.offsets[2].? != plan.offsets[0].? and plan.offsets[2].? != plan.offsets[1].?);
    try std.testing.expect(plan.offsets[3].? == plan.offsets[0].? or plan.offsets[3].? == plan.offsets[1].?);
    try std.testing.expectEqual(@as(?usize, null), plan.offsets[4]); // the graph output escapes
    try std.testing.expectEqual(@as(usize, 3 * 128), plan.arena_bytes);
}
