//! Control flow run natively, as onnxruntime runs ONNX If, Loop and Scan: a node names its
//! subgraphs (program.zig Control), the interpreter reads the condition or trip count at run
//! time, runs the chosen branch or the body once per step with the node's captured values
//! bound as the subgraph's trailing inputs, and binds the subgraph's outputs. A branch not
//! taken costs nothing. Subgraphs are never planned (program.zig Graph.body): their values'
//! sizes may change from branch to branch and step to step, so each run allocates from the
//! storage cache under the run's memory budget, and a loop is bounded in steps.
const std = @import("std");
const status = @import("../status.zig");
const tensor = @import("../tensor.zig");
const program_module = @import("program.zig");
const execute = @import("execute.zig");

const Error = status.Error;
const Tensor = tensor.Tensor;
const Program = program_module.Program;
const Node = program_module.Node;
const max_values = program_module.max_control_values;

/// The most steps one loop or scan may run: a hostile or mistaken trip count (or a condition
/// that never turns false) fails with TooLarge instead of running for hours or stacking
/// scanned outputs without end.
pub const max_steps: usize = 1 << 20;

/// Runs a subgraph on the calling thread (execute.runBody), unplanned.
const RunBody = *const fn (program: *Program, graph_index: usize, inputs: []const *Tensor, outputs: []*Tensor) Error!void;

/// Runs an if, loop or scan node on `inputs`, writing one new reference per node output.
pub fn run(program: *Program, node: *const Node, inputs: []const *Tensor, outputs: []*Tensor, run_body: RunBody) Error!void {
    std.debug.assert(inputs.len == node.inputs.len);
    std.debug.assert(outputs.len == node.outputs.len);
    switch (node.kind) {
        .@"if" => {
            const taken = try truth(inputs[0], "if", "condition");
            const branch = node.control.graphs[if (taken) 0 else 1];
            try run_body(program, branch, inputs[1..], outputs);
        },
        .loop => try runLoop(program, node, inputs, outputs, run_body),
        .scan => try runScan(program, node, inputs, outputs, run_body),
        .op, .constant, .fork, .wait => unreachable,
    }
}

/// A condition's value: it must hold exactly one element (nonzero = true; ONNX bool rides as
/// int32 in Spindle).
fn truth(t: *const Tensor, comptime op: []const u8, comptime what: []const u8) Error!bool {
    if (t.numel() != 1) {
        return status.fail(error.InvalidArgument, op ++ ": the " ++ what ++ " has shape {f}; it must hold exactly one value (a bool scalar)", .{status.shape(t.dims())});
    }
    return switch (t.dtype) {
        .float32 => elementAt(f32, t) != 0,
        .int64 => elementAt(i64, t) != 0,
        .int32 => elementAt(i32, t) != 0,
    };
}

/// The first element of `t` (any layout: a one-element view reads its offset).
fn elementAt(comptime T: type, t: *const Tensor) T {
    const base: [*]const T = @ptrCast(@alignCast(t.storage.bytes.ptr));
    return base[t.offset];
}

/// A loop's trip count: one integer, 0 to max_steps.
fn tripCount(t: *const Tensor) Error!usize {
    if (t.numel() != 1 or t.dtype == .float32) {
        return status.fail(error.InvalidArgument, "loop: the trip count is a {s} of shape {f}; it must be one int64 value", .{ t.dtype.name(), status.shape(t.dims()) });
    }
    const count: i64 = if (t.dtype == .int64) elementAt(i64, t) else elementAt(i32, t);
    if (count < 0) return status.fail(error.InvalidArgument, "loop: the trip count is {d}; it must be 0 or more", .{count});
    if (count > max_steps) {
        return status.fail(error.TooLarge, "loop: the trip count {d} is over the limit of {d} steps per run", .{ count, max_steps });
    }
    return @intCast(count);
}

/// A one-element tensor of the dtype and rank `spec` declares (a body's iteration number or
/// condition input), holding `value`.
fn scalarFor(spec: program_module.InputSpec, value: i64) Error!*Tensor {
    var shape: [tensor.max_dims]usize = @splat(1);
    const t = try tensor.createUninit(spec.dtype, shape[0..spec.shape.len]);
    switch (spec.dtype) {
        .float32 => t.f32Slice()[0] = @floatFromInt(value),
        .int64 => t.i64Slice()[0] = value,
        .int32 => t.i32Slice()[0] = @intCast(std.math.clamp(value, std.math.minInt(i32), std.math.maxInt(i32))),
    }
    return t;
}

/// The tensors each step of a loop or scan stacks, per scanned output.
const Stacks = struct {
    lists: [max_values]std.ArrayListUnmanaged(*Tensor) = @splat(.empty),
    count: usize,

    fn deinit(stacks: *Stacks) void {
        for (stacks.lists[0..stacks.count]) |*list| {
            for (list.items) |t| t.release();
            list.deinit(std.heap.c_allocator);
        }
    }

    fn append(stacks: *Stacks, index: usize, t: *Tensor) Error!void {
        stacks.lists[index].append(std.heap.c_allocator, t) catch return error.OutOfMemory;
    }
};

fn runLoop(program: *Program, node: *const Node, inputs: []const *Tensor, outputs: []*Tensor, run_body: RunBody) Error!void {
    const control = node.control.*;
    const body = &program.graphs[control.graphs[0]];
    var next: usize = 0;
    const trips: ?usize = if (control.trip_count) blk: {
        next += 1;
        break :blk try tripCount(inputs[0]);
    } else null;
    var going = true;
    if (control.condition) {
        going = try truth(inputs[next], "loop", "initial condition");
        next += 1;
    }
    const carried = control.carried;
    const captured = inputs[next + carried ..];
    const scanned = outputs.len - carried;
    // The body's inputs: [iteration, cond, carried…, captured…]; state holds references.
    var body_inputs: [max_values + 2]*Tensor = undefined;
    var state: [max_values]*Tensor = undefined;
    for (inputs[next..][0..carried], state[0..carried]) |t, *slot| {
        t.retain();
        slot.* = t;
    }
    defer for (state[0..carried]) |t| t.release();
    var stacks: Stacks = .{ .count = scanned };
    defer stacks.deinit();
    var step: usize = 0;
    while (going and (trips == null or step < trips.?)) : (step += 1) {
        if (step == max_steps) {
            return status.fail(error.TooLarge, "loop: still running after {d} steps, the limit per run (its condition never turned false)", .{max_steps});
        }
        const iteration = try scalarFor(body.inputs[0], @intCast(step));
        defer iteration.release();
        const condition = try scalarFor(body.inputs[1], 1);
        defer condition.release();
        body_inputs[0] = iteration;
        body_inputs[1] = condition;
        @memcpy(body_inputs[2..][0..carried], state[0..carried]);
        @memcpy(body_inputs[2 + carried ..][0..captured.len], captured);
        var body_outputs: [max_values + 1]*Tensor = undefined;
        try run_body(program, control.graphs[0], body_inputs[0 .. 2 + carried + captured.len], body_outputs[0 .. 1 + outputs.len]);
        // From here the body's outputs are ours: the state takes the carried ones, the
        // stacks the scanned ones.
        const keep_going = truth(body_outputs[0], "loop", "condition the body returns");
        body_outputs[0].release();
        for (state[0..carried], body_outputs[1..][0..carried]) |*slot, t| {
            slot.*.release();
            slot.* = t;
        }
        var appended: usize = 0;
        errdefer for (body_outputs[1 + carried + appended ..][0 .. scanned - appended]) |t| t.release();
        for (body_outputs[1 + carried ..][0..scanned], 0..) |t, i| {
            try stacks.append(i, t);
            appended += 1;
        }
        // Without a condition input the loop is a for loop: the body's condition is ignored.
        if (control.condition) going = try keep_going;
    }
    try finish(body, carried, state[0..carried], &stacks, null, outputs);
}

fn runScan(program: *Program, node: *const Node, inputs: []const *Tensor, outputs: []*Tensor, run_body: RunBody) Error!void {
    const control = node.control.*;
    const body = &program.graphs[control.graphs[0]];
    const carried = control.carried;
    const sliced = inputs[carried..][0..control.scan_inputs];
    const captured = inputs[carried + control.scan_inputs ..];
    const scanned = outputs.len - carried;
    // Every scanned input runs the same number of steps along its axis.
    var axes: [max_values]usize = undefined;
    var steps: ?usize = null;
    for (sliced, control.input_axes, 0..) |t, raw_axis, i| {
        axes[i] = try normalizeAxis(raw_axis, t.ndim, "scan input");
        const length = t.dims()[axes[i]];
        if (steps != null and steps.? != length) {
            return status.fail(error.ShapeMismatch, "scan: scanned input {d} has {d} steps along axis {d}, the first has {d}; all must agree", .{ i, length, axes[i], steps.? });
        }
        steps = length;
    }
    if (steps.? > max_steps) return status.fail(error.TooLarge, "scan: {d} steps is over the limit of {d} per run", .{ steps.?, max_steps });
    var state: [max_values]*Tensor = undefined;
    for (inputs[0..carried], state[0..carried]) |t, *slot| {
        t.retain();
        slot.* = t;
    }
    defer for (state[0..carried]) |t| t.release();
    var stacks: Stacks = .{ .count = scanned };
    defer stacks.deinit();
    var body_inputs: [max_values]*Tensor = undefined;
    for (0..steps.?) |step| {
        @memcpy(body_inputs[0..carried], state[0..carried]);
        var slices: [max_values]*Tensor = undefined;
        var made: usize = 0;
        defer for (slices[0..made]) |t| t.release();
        for (sliced, 0..) |t, i| {
            const position = if (control.input_reverse[i]) steps.? - 1 - step else step;
            slices[i] = try sliceAt(t, axes[i], position);
            made += 1;
        }
        @memcpy(body_inputs[carried..][0..sliced.len], slices[0..sliced.len]);
        @memcpy(body_inputs[carried + sliced.len ..][0..captured.len], captured);
        var body_outputs: [max_values]*Tensor = undefined;
        try run_body(program, control.graphs[0], body_inputs[0..inputs.len], body_outputs[0..outputs.len]);
        for (state[0..carried], body_outputs[0..carried]) |*slot, t| {
            slot.*.release();
            slot.* = t;
        }
        var appended: usize = 0;
        errdefer for (body_outputs[carried + appended ..][0 .. scanned - appended]) |t| t.release();
        for (body_outputs[carried..][0..scanned], 0..) |t, i| {
            try stacks.append(i, t);
            appended += 1;
        }
    }
    try finish(body, carried, state[0..carried], &stacks, control, outputs);
}

fn normalizeAxis(raw: i64, rank: usize, comptime what: []const u8) Error!usize {
    const signed_rank: i64 = @intCast(rank);
    const axis = if (raw < 0) raw + signed_rank else raw;
    if (axis < 0 or axis >= signed_rank) {
        return status.fail(error.InvalidArgument, "scan: axis {d} is out of range for a " ++ what ++ " of rank {d}", .{ raw, rank });
    }
    return @intCast(axis);
}

/// Writes the node's outputs: the final carried values, then each stack of step outputs as
/// one tensor (scan: at its output axis, reversed where asked; loop: at axis 0).
fn finish(body: *const program_module.Graph, carried: usize, state: []const *Tensor, stacks: *Stacks, scan: ?program_module.Control, outputs: []*Tensor) Error!void {
    var written: usize = 0;
    errdefer for (outputs[0..written]) |t| t.release();
    for (0..stacks.count) |i| {
        const spec: ?program_module.InputSpec = if (body.output_specs.len != 0) body.output_specs[body.output_specs.len - stacks.count + i] else null;
        const axis_raw: i64 = if (scan) |c| c.output_axes[i] else 0;
        const reverse = if (scan) |c| c.output_reverse[i] else false;
        outputs[carried + i] = try stack(stacks.lists[i].items, axis_raw, reverse, spec);
        written += 1;
    }
    for (state, outputs[0..carried]) |t, *out| {
        t.retain();
        out.* = t;
    }
}

/// One slice of `t` at `position` along `axis`, the axis dropped, as a new contiguous tensor.
fn sliceAt(t: *const Tensor, axis: usize, position: usize) Error!*Tensor {
    std.debug.assert(axis < t.ndim);
    std.debug.assert(position < t.dims()[axis]);
    var shape: [tensor.max_dims]usize = undefined;
    var rank: usize = 0;
    var outer: usize = 1;
    var inner: usize = 1;
    for (t.dims(), 0..) |d, a| {
        if (a == axis) continue;
        shape[rank] = d;
        rank += 1;
        if (a < axis) outer *= d else inner *= d;
    }
    const out = try tensor.createUninit(t.dtype, shape[0..rank]);
    errdefer out.release();
    const source = try contiguousCopy(t);
    defer source.release();
    const size = t.dtype.size();
    const length = t.dims()[axis];
    const from = source.byteSlice();
    const to = out.byteSlice();
    for (0..outer) |o| {
        @memcpy(to[o * inner * size ..][0 .. inner * size], from[(o * length + position) * inner * size ..][0 .. inner * size]);
    }
    return out;
}

/// `t` itself (retained) when contiguous, else a contiguous copy.
fn contiguousCopy(t: *const Tensor) Error!*Tensor {
    const shape_ops = @import("../ops/shape.zig");
    return shape_ops.contiguous(@constCast(t));
}

/// Stacks same-shaped step outputs along a new axis (`reverse`: the last step first). No
/// steps: an empty tensor of the body's declared output (open dims 0), float32 [0] if none.
fn stack(items: []const *Tensor, axis_raw: i64, reverse: bool, spec: ?program_module.InputSpec) Error!*Tensor {
    if (items.len == 0) {
        var shape: [tensor.max_dims]usize = @splat(0);
        const s = spec orelse return tensor.createUninit(.float32, &.{0});
        if (s.shape.len + 1 > tensor.max_dims) return tensor.createUninit(s.dtype, &.{0});
        // The step axis (0 long) where the stack would put it, the declared dims around it.
        const axis = try normalizeAxis(axis_raw, s.shape.len + 1, "stacked output");
        for (s.shape, 0..) |dim, a| shape[if (a < axis) a else a + 1] = dim orelse 0;
        return tensor.createUninit(s.dtype, shape[0 .. s.shape.len + 1]);
    }
    const first = items[0];
    if (first.ndim + 1 > tensor.max_dims) return status.fail(error.Unsupported, "scan: stacking outputs of rank {d} (at most {d} dims)", .{ first.ndim, tensor.max_dims - 1 });
    const axis = try normalizeAxis(axis_raw, first.ndim + 1, "stacked output");
    for (items, 0..) |t, step| {
        if (t.dtype != first.dtype or !std.mem.eql(usize, t.dims(), first.dims())) {
            return status.fail(error.ShapeMismatch, "loop/scan: step {d} made a {s} {f}, step 0 a {s} {f}; stacked outputs must keep their shape", .{
                step, t.dtype.name(), status.shape(t.dims()), first.dtype.name(), status.shape(first.dims()),
            });
        }
    }
    var shape: [tensor.max_dims]usize = undefined;
    var outer: usize = 1;
    var inner: usize = 1;
    for (first.dims(), 0..) |d, a| if (a < axis) {
        outer *= d;
    } else {
        inner *= d;
    };
    @memcpy(shape[0..axis], first.dims()[0..axis]);
    shape[axis] = items.len;
    @memcpy(shape[axis + 1 ..][0 .. first.ndim - axis], first.dims()[axis..]);
    const out = try tensor.createUninit(first.dtype, shape[0 .. first.ndim + 1]);
    errdefer out.release();
    const size = first.dtype.size();
    const to = out.byteSlice();
    for (items, 0..) |t, step| {
        const position = if (reverse) items.len - 1 - step else step;
        const source = try contiguousCopy(t);
        defer source.release();
        const from = source.byteSlice();
        for (0..outer) |o| {
            @memcpy(to[(o * items.len + position) * inner * size ..][0 .. inner * size], from[o * inner * size ..][0 .. inner * size]);
        }
    }
    return out;
}

// ---------------------------------------------------------------------------------------
// Tests: each node kind from a model image, the errors of bad conditions and trip counts,
// and malformed control-flow nodes.

const format = @import("format.zig");

fn loadJson(json: []const u8) !*Program {
    const image = try format.writeImage(std.testing.allocator, json, &.{});
    defer std.testing.allocator.free(image);
    return program_module.load(image);
}

fn scalar(dtype: tensor.DType, value: i64, shape: []const usize) !*Tensor {
    const t = try tensor.createUninit(dtype, shape);
    for (0..t.numel()) |i| switch (dtype) {
        .int64 => t.i64Slice()[i] = value,
        .int32 => t.i32Slice()[i] = @intCast(value),
        .float32 => t.f32Slice()[i] = @floatFromInt(value),
    };
    return t;
}

fn expectMessage(part: []const u8) !void {
    var buffer: [status.message_capacity]u8 = undefined;
    const message = buffer[0..status.lastMessage(&buffer)];
    if (std.mem.indexOf(u8, message, part) == null) {
        std.debug.print("message: {s}\n", .{message});
        return error.TestUnexpectedResult;
    }
}

/// if (cond) relu(x) else neg(x): both branches capture x.
const if_json =
    \\{"format":"spindle-graph","version":2,"tensors":[],"graphs":[
    \\ {"inputs":[{"dtype":"int32","shape":[]},{"dtype":"float32","shape":[-1]}],"values":3,
    \\  "nodes":[{"op":"if","inputs":[0,1],"outputs":[2],"graphs":[1,2]}],"outputs":[2]},
    \\ {"inputs":[{"dtype":"float32","shape":[-1]}],"values":2,
    \\  "nodes":[{"op":"relu","inputs":[0],"outputs":[1]}],"outputs":[1]},
    \\ {"inputs":[{"dtype":"float32","shape":[-1]}],"values":2,
    \\  "nodes":[{"op":"neg","inputs":[0],"outputs":[1]}],"outputs":[1]}]}
;

test "if runs the branch its run-time condition picks, and only that one" {
    const program = try loadJson(if_json);
    defer program.release();
    try execute.checkShapes(program);
    const x = try tensor.fromF32(&.{3}, &.{ -1, 2, -3 });
    defer x.release();
    for ([_]i64{ 1, 0, 7 }) |value| {
        const cond = try scalar(.int32, value, &.{});
        defer cond.release();
        var outputs: [1]*Tensor = undefined;
        try execute.run(program, 0, &.{ cond, x }, &outputs);
        defer outputs[0].release();
        const want: []const f32 = if (value != 0) &.{ 0, 2, 0 } else &.{ 1, -2, 3 };
        try std.testing.expectEqualSlices(f32, want, outputs[0].f32Slice());
    }
    // A profiled run times the taken branch's op alone.
    const cond = try scalar(.int32, 1, &.{});
    defer cond.release();
    var records: [4]execute.Profile.Record = undefined;
    var profile: execute.Profile = .{ .records = &records };
    var outputs: [1]*Tensor = undefined;
    try execute.runProfiled(program, 0, &.{ cond, x }, &outputs, &profile);
    outputs[0].release();
    try std.testing.expectEqual(@as(usize, 1), profile.count);
    try std.testing.expectEqual(@as(u64, 1), records[0].graph);
}

test "if refuses a condition that is not a single value" {
    const program = try loadJson(if_json);
    defer program.release();
    const x = try tensor.fromF32(&.{2}, &.{ -1, 2 });
    defer x.release();
    // The graph declares a scalar condition; a body-level check covers the rest, so run the
    // node itself on a two-element condition.
    const cond = try scalar(.int32, 1, &.{2});
    defer cond.release();
    var outputs: [1]*Tensor = undefined;
    try std.testing.expectError(error.InvalidArgument, run(program, &program.graphs[0].nodes[0], &.{ cond, x }, &outputs, &testBody));
    try expectMessage("exactly one value");
}

fn testBody(program: *Program, graph_index: usize, inputs: []const *Tensor, outputs: []*Tensor) Error!void {
    return execute.run(program, graph_index, inputs, outputs);
}

/// for i < M: v = v + v, scanning v: a trip-count loop carrying one value, stacking one.
const loop_json =
    \\{"format":"spindle-graph","version":2,"tensors":[],"graphs":[
    \\ {"inputs":[{"dtype":"int64","shape":[]},{"dtype":"int32","shape":[]},{"dtype":"float32","shape":[2]}],"values":5,
    \\  "nodes":[{"op":"loop","inputs":[0,1,2],"outputs":[3,4],"graphs":[1],
    \\            "params":{"carried":1,"trip_count":true,"condition":true}}],"outputs":[3,4]},
    \\ {"inputs":[{"dtype":"int64","shape":[]},{"dtype":"int32","shape":[]},{"dtype":"float32","shape":[2]}],"values":4,
    \\  "nodes":[{"op":"add","inputs":[2,2],"outputs":[3]}],"outputs":[1,3,3],
    \\  "results":[{"dtype":"int32","shape":[]},{"dtype":"float32","shape":[2]},{"dtype":"float32","shape":[2]}]}]}
;

test "loop carries values over its steps and stacks its scanned outputs" {
    const program = try loadJson(loop_json);
    defer program.release();
    try execute.checkShapes(program);
    const x = try tensor.fromF32(&.{2}, &.{ 1, 2 });
    defer x.release();
    const yes = try scalar(.int32, 1, &.{});
    defer yes.release();
    const trips = try scalar(.int64, 3, &.{});
    defer trips.release();
    var outputs: [2]*Tensor = undefined;
    try execute.run(program, 0, &.{ trips, yes, x }, &outputs);
    try std.testing.expectEqualSlices(f32, &.{ 8, 16 }, outputs[0].f32Slice());
    try std.testing.expectEqualSlices(usize, &.{ 3, 2 }, outputs[1].dims());
    try std.testing.expectEqualSlices(f32, &.{ 2, 4, 4, 8, 8, 16 }, outputs[1].f32Slice());
    for (outputs) |t| t.release();
    // A false initial condition runs no step: the input comes back, the stack is empty.
    const no = try scalar(.int32, 0, &.{});
    defer no.release();
    try execute.run(program, 0, &.{ trips, no, x }, &outputs);
    try std.testing.expectEqualSlices(f32, &.{ 1, 2 }, outputs[0].f32Slice());
    try std.testing.expectEqualSlices(usize, &.{ 0, 2 }, outputs[1].dims());
    for (outputs) |t| t.release();
}

test "loop refuses negative and huge trip counts and non-scalar conditions with typed errors" {
    const program = try loadJson(loop_json);
    defer program.release();
    const x = try tensor.fromF32(&.{2}, &.{ 1, 2 });
    defer x.release();
    const yes = try scalar(.int32, 1, &.{});
    defer yes.release();
    var outputs: [2]*Tensor = undefined;
    const negative = try scalar(.int64, -1, &.{});
    defer negative.release();
    try std.testing.expectError(error.InvalidArgument, execute.run(program, 0, &.{ negative, yes, x }, &outputs));
    try expectMessage("trip count is -1");
    const huge = try scalar(.int64, 1 << 40, &.{});
    defer huge.release();
    try std.testing.expectError(error.TooLarge, execute.run(program, 0, &.{ huge, yes, x }, &outputs));
    try expectMessage("over the limit");
    const node = &program.graphs[0].nodes[0];
    const trips = try scalar(.int64, 2, &.{});
    defer trips.release();
    const pair = try scalar(.int32, 1, &.{2});
    defer pair.release();
    try std.testing.expectError(error.InvalidArgument, run(program, node, &.{ trips, pair, x }, &outputs, &testBody));
    try expectMessage("initial condition has shape [2]");
    const float_trips = try scalar(.float32, 2, &.{});
    defer float_trips.release();
    try std.testing.expectError(error.InvalidArgument, run(program, node, &.{ float_trips, yes, x }, &outputs, &testBody));
    try expectMessage("one int64 value");
}

/// A running sum over the rows of xs, scanning each partial sum.
const scan_json =
    \\{"format":"spindle-graph","version":2,"tensors":[],"graphs":[
    \\ {"inputs":[{"dtype":"float32","shape":[2]},{"dtype":"float32","shape":[-1,2]}],"values":4,
    \\  "nodes":[{"op":"scan","inputs":[0,1],"outputs":[2,3],"graphs":[1],
    \\            "params":{"carried":1,"scan_inputs":1,REVERSE}}],"outputs":[2,3]},
    \\ {"inputs":[{"dtype":"float32","shape":[2]},{"dtype":"float32","shape":[2]}],"values":3,
    \\  "nodes":[{"op":"add","inputs":[0,1],"outputs":[2]}],"outputs":[2,2]}]}
;

test "scan slices its inputs step by step, forward or reversed, and stacks at its axes" {
    const cases = [_]struct { params: []const u8, sums: []const f32, shape: []const usize }{
        .{ .params = "\"input_reverse\":[0]", .sums = &.{ 1, 2, 4, 6, 9, 12 }, .shape = &.{ 3, 2 } },
        .{ .params = "\"input_reverse\":[1]", .sums = &.{ 5, 6, 8, 10, 9, 12 }, .shape = &.{ 3, 2 } },
        .{ .params = "\"output_reverse\":[1]", .sums = &.{ 9, 12, 4, 6, 1, 2 }, .shape = &.{ 3, 2 } },
        .{ .params = "\"output_axes\":[1]", .sums = &.{ 1, 4, 9, 2, 6, 12 }, .shape = &.{ 2, 3 } },
    };
    for (cases) |case| {
        const json = try std.mem.replaceOwned(u8, std.testing.allocator, scan_json, "REVERSE", case.params);
        defer std.testing.allocator.free(json);
        const program = try loadJson(json);
        defer program.release();
        try execute.checkShapes(program);
        const initial = try tensor.fromF32(&.{2}, &.{ 0, 0 });
        defer initial.release();
        const xs = try tensor.fromF32(&.{ 3, 2 }, &.{ 1, 2, 3, 4, 5, 6 });
        defer xs.release();
        var outputs: [2]*Tensor = undefined;
        try execute.run(program, 0, &.{ initial, xs }, &outputs);
        defer for (outputs) |t| t.release();
        try std.testing.expectEqualSlices(f32, &.{ 9, 12 }, outputs[0].f32Slice());
        try std.testing.expectEqualSlices(usize, case.shape, outputs[1].dims());
        try std.testing.expectEqualSlices(f32, case.sums, outputs[1].f32Slice());
    }
}

test "a scan of no steps stacks empty outputs of the body's declared shape at their axes" {
    const json = try std.mem.replaceOwned(u8, std.testing.allocator, scan_json, "\"outputs\":[2,2]}]}", "\"outputs\":[2,2],\"results\":[{\"dtype\":\"float32\",\"shape\":[2]},{\"dtype\":\"float32\",\"shape\":[2]}]}]}");
    defer std.testing.allocator.free(json);
    const axes = try std.mem.replaceOwned(u8, std.testing.allocator, json, "REVERSE", "\"output_axes\":[1]");
    defer std.testing.allocator.free(axes);
    const program = try loadJson(axes);
    defer program.release();
    const initial = try tensor.fromF32(&.{2}, &.{ 1, 2 });
    defer initial.release();
    const xs = try tensor.createZeroed(.float32, &.{ 0, 2 });
    defer xs.release();
    var outputs: [2]*Tensor = undefined;
    try execute.run(program, 0, &.{ initial, xs }, &outputs);
    defer for (outputs) |t| t.release();
    try std.testing.expectEqualSlices(f32, &.{ 1, 2 }, outputs[0].f32Slice());
    try std.testing.expectEqualSlices(usize, &.{ 2, 0 }, outputs[1].dims());
}

test "control-flow nodes that do not line up with their subgraphs, or recurse, are refused at load" {
    const cases = [_][2][]const u8{
        .{ "\"graphs\":[1,2]", "\"graphs\":[1]" }, // an if with one branch
        .{ "\"graphs\":[1,2]", "\"graphs\":[1,9]" }, // a missing graph
        .{ "\"graphs\":[1,2]", "\"graphs\":[0,2]" }, // the entry graph as a branch
        .{ "\"outputs\":[2],\"graphs\"", "\"outputs\":[2,2],\"graphs\"" }, // a value defined twice
        .{ "\"op\":\"neg\",\"inputs\":[0],\"outputs\":[1]", "\"op\":\"if\",\"inputs\":[0,0],\"outputs\":[1],\"graphs\":[1,2]" }, // recursion
        .{ "\"graphs\":[1,2]}", "\"graphs\":[1,2],\"params\":{\"carried\":1,\"scan_inputs\":1}}" }, // scan params on an if
        .{ "\"op\":\"relu\",", "\"op\":\"relu\",\"graphs\":[2]," }, // graphs on an op
    };
    for (cases) |case| {
        const json = try std.mem.replaceOwned(u8, std.testing.allocator, if_json, case[0], case[1]);
        defer std.testing.allocator.free(json);
        try std.testing.expect(!std.mem.eql(u8, json, if_json));
        try std.testing.expectError(error.MalformedModel, loadJson(json));
    }
    const loop_cases = [_][2][]const u8{
        .{ "\"carried\":1,", "\"carried\":2," },
        .{ "\"condition\":true", "\"condition\":false" },
        .{ "\"trip_count\":true", "\"trip_count\":1" },
    };
    for (loop_cases) |case| {
        const json = try std.mem.replaceOwned(u8, std.testing.allocator, loop_json, case[0], case[1]);
        defer std.testing.allocator.free(json);
        try std.testing.expectError(error.MalformedModel, loadJson(json));
    }
}

test "a planned graph keeps what a control-flow node reads out of its arena: a branch may hand it back" {
    // relu(x) feeds an if whose then branch returns it as it is; the entry graph then adds
    // relu(x) to the if's result. Were relu(x) in the arena, its bytes could be reused while
    // the if's output still shares them.
    const json =
        \\{"format":"spindle-graph","version":2,"tensors":[],"graphs":[
        \\ {"inputs":[{"dtype":"int32","shape":[]},{"dtype":"float32","shape":[4]}],"values":6,
        \\  "nodes":[{"op":"relu","inputs":[1],"outputs":[2]},
        \\           {"op":"if","inputs":[0,2],"outputs":[3],"graphs":[1,2]},
        \\           {"op":"neg","inputs":[1],"outputs":[4]},
        \\           {"op":"add","inputs":[3,4],"outputs":[5]}],"outputs":[5]},
        \\ {"inputs":[{"dtype":"float32","shape":[4]}],"values":1,"nodes":[],"outputs":[0]},
        \\ {"inputs":[{"dtype":"float32","shape":[4]}],"values":2,
        \\  "nodes":[{"op":"neg","inputs":[0],"outputs":[1]}],"outputs":[1]}]}
    ;
    const program = try loadJson(json);
    defer program.release();
    try execute.checkShapes(program);
    const plan = program.plans[0] orelse return error.TestUnexpectedResult;
    try std.testing.expect(plan.offsets[0] == null); // relu's output: read by the if
    try std.testing.expect(program.plans[1] == null and program.plans[2] == null); // bodies
    const x = try tensor.fromF32(&.{4}, &.{ -1, 2, -3, 4 });
    defer x.release();
    for (0..3) |_| for ([_]i64{ 1, 0 }) |value| {
        const cond = try scalar(.int32, value, &.{});
        defer cond.release();
        var outputs: [1]*Tensor = undefined;
        try execute.run(program, 0, &.{ cond, x }, &outputs);
        defer outputs[0].release();
        // then: relu(x) - x; else: -relu(x) - x.
        const want: []const f32 = if (value != 0) &.{ 1, 0, 3, 0 } else &.{ 1, -4, 3, -8 };
        try std.testing.expectEqualSlices(f32, want, outputs[0].f32Slice());
    };
}
