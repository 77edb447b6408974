//! Runs a Program: the nodes of a graph one by one on the calling (inference) thread, forks
//! as tasks on the inter-op pool, waits as joins (which help rather than block, see
//! pool/future.zig). Values are released right after their last use, so buffers return to
//! the storage cache and the next op reuses them.
const std = @import("std");
const status = @import("../status.zig");
const tensor = @import("../tensor.zig");
const ops = @import("../ops.zig");
const bf16 = @import("../ops/bf16.zig");
const packed_f32 = @import("../ops/packed_f32.zig");
const Pool = @import("../pool/inter_op.zig");
const Future = @import("../pool/future.zig");
const program_module = @import("program.zig");
const plan_module = @import("plan.zig");
const shape_plans = @import("shape_plans.zig");
const control = @import("control.zig");
const call = @import("call.zig");

const Error = status.Error;
const Tensor = tensor.Tensor;
const Program = program_module.Program;
const Graph = program_module.Graph;

const Slot = union(enum) {
    empty,
    tensor: *Tensor,
    future: *Future,

    fn release(slot: *Slot) void {
        switch (slot.*) {
            .empty => {},
            .tensor => |t| t.release(),
            .future => |f| f.release(),
        }
        slot.* = .empty;
    }
};

/// Values held on the stack up to this count; larger graphs allocate their frame once per run.
const stack_slots = 256;

/// Forks run inline because calls queued for the inference threads (see runNode), process-
/// wide: a statistic for tests and diagnostics, Monotonic (it orders nothing).
pub var saturated_inline_forks: std.atomic.Value(u64) = .init(0);

/// Runs graph `graph_index` on `inputs` (borrowed) and writes one new reference per graph
/// output into `outputs`. The run holds at most the program's memory budget of tensors at
/// once (counted on this thread, tensor.Budget: the inputs are not counted, the outputs
/// are); past it, an allocation fails with TooLarge before it is made. Every forked graph
/// runs (on its pool thread) under a budget of its own of the same size, so a run with k
/// forks in flight may hold up to k + 1 budgets.
pub fn run(program: *Program, graph_index: usize, inputs: []const *Tensor, outputs: []*Tensor) Error!void {
    var budget: tensor.Budget = undefined;
    tensor.enterBudget(&budget, program.memory_budget);
    defer tensor.leaveBudget(&budget);
    if (graph_index == 0 and program.plans[0] == null and hasOpenDims(&program.graphs[0]) and inputs.len <= ops.max_inputs) {
        return runPlannedByShape(program, inputs, outputs);
    }
    return runWith(program, graph_index, inputs, outputs, .pool, null);
}

/// Per-op timings of a profiled run (spindle_program_profile): each op node run appends a
/// record; records past the buffer are counted, not written, so the caller can retry with a
/// larger one. Set on the calling thread for the run's duration only.
pub const Profile = struct {
    records: []Record,
    count: usize = 0,

    /// One op node's run: where it is, how long it took, and the shapes it saw (the first
    /// two inputs are enough for the FLOP counts of convolution and matrix products).
    pub const Record = extern struct {
        graph: u64,
        node: u64,
        ns: u64,
        output: Shape,
        inputs: [2]Shape,
    };
    pub const Shape = extern struct {
        rank: u64 = 0,
        dims: [tensor.max_dims]u64 = @splat(0),

        fn of(t: *const Tensor) Shape {
            var shape: Shape = .{ .rank = t.dims().len };
            for (t.dims(), 0..) |d, i| shape.dims[i] = d;
            return shape;
        }
    };

    fn add(profile: *Profile, entry: Record) void {
        if (profile.count < profile.records.len) profile.records[profile.count] = entry;
        profile.count += 1;
    }
};

comptime {
    // TypeScript reads records as 30 u64s (lib/program/program.ts PROFILE_RECORD_WORDS).
    std.debug.assert(@sizeOf(Profile.Record) == (3 + 3 * (1 + tensor.max_dims)) * 8);
}

threadlocal var active_profile: ?*Profile = null;

/// Runs graph `graph_index` as run() does, timing every op node into `profile`. Forked graphs
/// run inline on this thread, so that every op is timed alone (the timings add up to the
/// run, at the cost of the overlap forks would give).
pub fn runProfiled(program: *Program, graph_index: usize, inputs: []const *Tensor, outputs: []*Tensor, profile: *Profile) Error!void {
    var budget: tensor.Budget = undefined;
    tensor.enterBudget(&budget, program.memory_budget);
    defer tensor.leaveBudget(&budget);
    std.debug.assert(active_profile == null);
    active_profile = profile;
    defer active_profile = null;
    return runWith(program, graph_index, inputs, outputs, .inline_forks, null);
}

fn hasOpenDims(graph: *const Graph) bool {
    for (graph.inputs) |spec| for (spec.shape) |dim| if (dim == null) return true;
    return false;
}

/// Runs graph 0 with the memory plan of these input shapes (shape_plans.zig); the first run
/// at new shapes is recorded, as the load-time check records, and planned for the next.
fn runPlannedByShape(program: *Program, inputs: []const *Tensor, outputs: []*Tensor) Error!void {
    const key = shape_plans.Key.of(inputs);
    if (program.shape_plans.acquire(&key)) |entry| {
        defer entry.release();
        return runWithPlan(program, 0, inputs, outputs, .pool, null, entry.plan);
    }
    const entry = try shape_plans.ShapePlans.create(&key);
    var inserted = false;
    defer if (!inserted) entry.release();
    const allocator = entry.arena.allocator();
    var recorder: Recorder = .{
        .recordings = allocator.alloc(?plan_module.Recording, program.graphs.len) catch return error.OutOfMemory,
        .allocator = allocator,
    };
    @memset(recorder.recordings, null);
    try runWith(program, 0, inputs, outputs, .pool, &recorder);
    // A run that failed planned nothing; one that ran is worth planning (or remembering
    // that nothing can be planned), whatever the budget says of the next.
    if (recorder.recordings[0]) |recording| entry.plan = try plan_module.build(allocator, &program.graphs[0], recording);
    inserted = true;
    program.shape_plans.insert(entry);
}

/// What the load-time check records for planning: per graph, per node (see plan.zig).
const Recorder = struct {
    recordings: []?plan_module.Recording,
    allocator: std.mem.Allocator,
    /// The load-time check: graph 0's inputs hold made-up values (zeros), not a request's.
    stand_in_values: bool = false,
    /// Set when an op refused values computed from the made-up ones; the run stopped there.
    stopped: bool = false,

    fn forGraph(recorder: *Recorder, program: *Program, graph_index: usize) Error!?plan_module.Recording {
        if (recorder.recordings[graph_index] != null) return null; // record each graph once
        const count = program.graphs[graph_index].nodes.len;
        const recording: plan_module.Recording = .{
            .fresh_bytes = recorder.allocator.alloc(usize, count) catch return error.OutOfMemory,
            .alias_of = recorder.allocator.alloc(?u32, count) catch return error.OutOfMemory,
        };
        @memset(recording.fresh_bytes, 0);
        @memset(recording.alias_of, null);
        return recording;
    }
};

/// Notes whether `result` of `node` was allocated fresh or shares an input's storage.
fn record(recording: plan_module.Recording, node: *const program_module.Node, index: usize, frame: []const Slot, result: *const Tensor) void {
    for (node.inputs) |v| {
        if (frame[v] == .tensor and frame[v].tensor.storage == result.storage) {
            recording.alias_of[index] = v;
            return;
        }
    }
    const bytes = result.numel() * result.dtype.size();
    if (result.offset == 0 and result.isContiguous() and result.storage.bytes.len == bytes and result.storage.refs.load(.monotonic) == 1) {
        recording.fresh_bytes[index] = bytes;
    }
}

/// Where fork nodes run: on the inter-op pool, or inline on the calling thread (the load-time
/// shape check, which must not start the pool: setNumInteropThreads stays possible).
pub const ForkMode = enum { pool, inline_forks };

fn runWith(program: *Program, graph_index: usize, inputs: []const *Tensor, outputs: []*Tensor, mode: ForkMode, recorder: ?*Recorder) Error!void {
    std.debug.assert(graph_index < program.graphs.len);
    return runWithPlan(program, graph_index, inputs, outputs, mode, recorder, if (recorder == null) program.plans[graph_index] else null);
}

fn runWithPlan(program: *Program, graph_index: usize, inputs: []const *Tensor, outputs: []*Tensor, mode: ForkMode, recorder: ?*Recorder, memory_plan: ?plan_module.GraphPlan) Error!void {
    std.debug.assert(graph_index < program.graphs.len);
    std.debug.assert(recorder == null or memory_plan == null);
    const recording: ?plan_module.Recording = if (recorder) |r| try r.forGraph(program, graph_index) else null;
    // One arena per run of a planned graph (a cached block, so warm pages after the first).
    const arena: ?*tensor.Arena = if (memory_plan) |p| try tensor.Arena.create(p.arena_bytes) else null;
    defer if (arena) |a| a.release();
    const graph = &program.graphs[graph_index];
    try checkInputs(graph, graph_index, inputs);
    if (outputs.len != graph.outputs.len) {
        return status.fail(error.InvalidArgument, "run: graph {d} has {d} outputs, {d} requested", .{ graph_index, graph.outputs.len, outputs.len });
    }
    var stack_frame: [stack_slots]Slot = undefined;
    const heap_frame = if (graph.value_count > stack_slots)
        std.heap.c_allocator.alloc(Slot, graph.value_count) catch return error.OutOfMemory
    else
        null;
    defer if (heap_frame) |frame| std.heap.c_allocator.free(frame);
    const frame = heap_frame orelse stack_frame[0..graph.value_count];
    @memset(frame, .empty);
    defer for (frame) |*slot| slot.release();
    for (inputs, 0..) |input, i| {
        input.retain();
        frame[i] = .{ .tensor = input };
    }
    const context: NodeContext = .{ .mode = mode, .recorder = recorder, .recording = recording, .plan = memory_plan, .arena = arena };
    // In the load-time check: which values derive from the made-up input values.
    const made_up: ?MadeUp = if (recorder) |r| if (r.stand_in_values and graph_index == 0) try .init(r.allocator, graph.value_count, inputs.len) else null else null;
    for (graph.nodes, 0..) |*node, index| {
        runNode(program, graph, graph_index, node, index, frame, context) catch |err| {
            const marks = made_up orelse return err;
            if (err == error.OutOfMemory or !marks.decides(node)) return err;
            recorder.?.stopped = true;
            return;
        };
        if (made_up) |marks| marks.mark(node);
    }
    if (recording) |r| recorder.?.recordings[graph_index] = r;
    for (graph.outputs, outputs) |value, *out| {
        const t = frame[value].tensor;
        t.retain();
        out.* = t;
    }
}

/// Which values of graph 0 derive from the made-up input values of the load-time check
/// (zeros): their values, and their shapes (an op that takes a shape or bound as a tensor
/// gives a made-up shape when that tensor's values are made up, a zero-step Range none at all).
const MadeUp = struct {
    values: []bool,
    shapes: []bool,

    fn init(allocator: std.mem.Allocator, value_count: usize, input_count: usize) Error!MadeUp {
        std.debug.assert(input_count <= value_count);
        const values = allocator.alloc(bool, value_count) catch return error.OutOfMemory;
        const shapes = allocator.alloc(bool, value_count) catch return error.OutOfMemory;
        @memset(values, false);
        @memset(values[0..input_count], true);
        // The inputs' shapes are the declared ones (or the graph's check shapes): real.
        @memset(shapes, false);
        return .{ .values = values, .shapes = shapes };
    }

    /// Whether made-up values decide what `node` does: a shape it reads, or a parameter
    /// tensor's values (ops.isParameterInput). Only then can a refusal be the zeros' fault
    /// rather than the model's.
    fn decides(marks: MadeUp, node: *const program_module.Node) bool {
        for (node.inputs, 0..) |v, i| {
            if (marks.shapes[v]) return true;
            if (marks.values[v] and node.kind == .op and ops.isParameterInput(node.options, i)) return true;
        }
        return false;
    }

    /// A node's outputs are made up when an input is; their shapes when made-up values
    /// decided them. shape_of reads only its input's shape.
    fn mark(marks: MadeUp, node: *const program_module.Node) void {
        const shapes = marks.decides(node);
        const shape_only = node.kind == .op and node.options == .shape_of;
        const values = shapes or for (node.inputs) |v| {
            if (marks.values[v] and !shape_only) break true;
        } else false;
        const defined = if (node.outputs.len != 0) node.outputs else (&node.output)[0..1];
        for (defined) |v| {
            marks.values[v] = values;
            marks.shapes[v] = shapes;
        }
    }
};

/// Names a graph input in messages: "input 2 'x'", or "input 2" when the model names none.
const InputLabel = struct {
    index: usize,
    name: []const u8,

    pub fn format(label: InputLabel, writer: *std.Io.Writer) std.Io.Writer.Error!void {
        try writer.print("input {d}", .{label.index});
        if (label.name.len > 0) try writer.print(" '{f}'", .{status.printable(label.name)});
    }
};

fn checkInputs(graph: *const Graph, graph_index: usize, inputs: []const *Tensor) Error!void {
    if (inputs.len != graph.inputs.len) {
        return status.fail(error.InvalidArgument, "run: graph {d} takes {d} inputs, got {d}", .{ graph_index, graph.inputs.len, inputs.len });
    }
    for (graph.inputs, inputs, 0..) |spec, input, i| {
        if (spec.dtype != input.dtype) {
            return status.fail(error.DTypeMismatch, "run: {f} is {s}, the model expects {s} {f}", .{
                InputLabel{ .index = i, .name = spec.name }, input.dtype.name(), spec.dtype.name(), spec,
            });
        }
        const matches = spec.shape.len == input.ndim and for (spec.shape, input.dims()) |want, got| {
            if (want != null and want.? != got) break false;
        } else true;
        if (!matches) {
            return status.fail(error.ShapeMismatch, "run: {f} has shape {f}, the model expects {f}", .{
                InputLabel{ .index = i, .name = spec.name }, status.shape(input.dims()), spec,
            });
        }
    }
}

const NodeContext = struct {
    mode: ForkMode,
    recorder: ?*Recorder,
    recording: ?plan_module.Recording,
    plan: ?plan_module.GraphPlan,
    arena: ?*tensor.Arena,
};

fn runNode(program: *Program, graph: *const Graph, graph_index: usize, node: *const program_module.Node, index: usize, frame: []Slot, context: NodeContext) Error!void {
    const mode = context.mode;
    switch (node.kind) {
        .constant => {
            const constant = program.constants[node.target];
            constant.retain();
            frame[node.output] = .{ .tensor = constant };
        },
        .op => {
            var inputs: [ops.max_inputs]*Tensor = undefined;
            for (node.inputs, 0..) |v, i| inputs[i] = frame[v].tensor;
            if (context.plan) |p| if (p.offsets[index]) |offset| tensor.planNextOutput(context.arena.?, offset, p.bytes[index]);
            defer tensor.clearPlannedOutput();
            const started = if (active_profile != null) std.time.Instant.now() catch null else null;
            const packed_weights = if (graph.bf16_weights.len != 0) graph.bf16_weights[index] else null;
            const f32_weights = if (graph.f32_weights.len != 0) graph.f32_weights[index] else null;
            const result = (if (packed_weights) |weights|
                bf16.execute(node.options, inputs[0..node.inputs.len], weights)
            else if (f32_weights) |weights|
                packed_f32.execute(node.options, inputs[0..node.inputs.len], weights)
            else
                ops.execute(node.options, inputs[0..node.inputs.len])) catch |err|
                return annotate(err, graph_index, index, @tagName(node.options));
            if (context.recording) |r| record(r, node, index, frame, result);
            if (started) |begin| addProfileRecord(begin, graph_index, index, inputs[0..node.inputs.len], result);
            frame[node.output] = .{ .tensor = result };
        },
        .fork => if (mode == .inline_forks) {
            // Run the callee now; the "future" slot holds its value until the wait.
            var callee_inputs: [ops.max_inputs]*Tensor = undefined;
            for (node.inputs, 0..) |v, i| callee_inputs[i] = frame[v].tensor;
            var result: [1]*Tensor = undefined;
            try runWith(program, node.target, callee_inputs[0..node.inputs.len], &result, mode, context.recorder);
            frame[node.output] = .{ .tensor = result[0] };
        } else if (call.inference_pool.saturated()) {
            // Asynchronous calls queue for the inference threads: every core already runs a
            // request, so a fork would only hand its graph to an inter-op thread competing
            // for the same cores (a wake-up, a context switch, a sleep on the future). Run it
            // now, as the pool would (run: a budget and a plan of its own); the "future"
            // slot holds its value until the wait.
            var callee_inputs: [ops.max_inputs]*Tensor = undefined;
            for (node.inputs, 0..) |v, i| callee_inputs[i] = frame[v].tensor;
            var result: [1]*Tensor = undefined;
            _ = saturated_inline_forks.fetchAdd(1, .monotonic);
            try run(program, node.target, callee_inputs[0..node.inputs.len], &result);
            frame[node.output] = .{ .tensor = result[0] };
        } else {
            var task: GraphTask = .{ .program = program, .graph = node.target, .input_count = @intCast(node.inputs.len) };
            for (node.inputs, 0..) |v, i| task.inputs[i] = frame[v].tensor;
            // Through a local: a failed fork must leave the slot empty (a result location
            // would get the `.future` tag before the fork has returned).
            const future = try task.fork();
            frame[node.output] = .{ .future = future };
        },
        .@"if", .loop, .scan => {
            var inputs: [program_module.max_control_values]*Tensor = undefined;
            for (node.inputs, 0..) |v, i| inputs[i] = frame[v].tensor;
            var results: [program_module.max_control_values]*Tensor = undefined;
            const count = node.outputs.len;
            const body_mode = switch (mode) {
                .pool => &runBodyPooled,
                .inline_forks => &runBodyInline,
            };
            control.run(program, node, inputs[0..node.inputs.len], results[0..count], body_mode) catch |err|
                return annotate(err, graph_index, index, @tagName(node.kind));
            for (node.outputs, results[0..count]) |v, t| frame[v] = .{ .tensor = t };
        },
        .wait => {
            if (frame[node.inputs[0]] == .tensor) {
                // An inline fork: the value is already there.
                const value = frame[node.inputs[0]].tensor;
                value.retain();
                frame[node.output] = .{ .tensor = value };
                return releaseConsumed(graph, node, index, frame);
            }
            const future = frame[node.inputs[0]].future;
            const result = future.wait() catch |err| return annotate(err, graph_index, index, "wait");
            frame[node.output] = .{ .tensor = result };
        },
    }
    releaseConsumed(graph, node, index, frame);
}

/// Runs a control-flow node's subgraph on this thread, unplanned and unrecorded (its sizes
/// may differ on each step), its own forks on the pool or inline as the caller's are.
fn runBodyPooled(program: *Program, graph_index: usize, inputs: []const *Tensor, outputs: []*Tensor) Error!void {
    return runWithPlan(program, graph_index, inputs, outputs, .pool, null, null);
}

fn runBodyInline(program: *Program, graph_index: usize, inputs: []const *Tensor, outputs: []*Tensor) Error!void {
    return runWithPlan(program, graph_index, inputs, outputs, .inline_forks, null, null);
}

fn addProfileRecord(begin: std.time.Instant, graph_index: usize, index: usize, inputs: []const *Tensor, result: *const Tensor) void {
    const profile = active_profile orelse return;
    const end = std.time.Instant.now() catch begin;
    var entry: Profile.Record = .{
        .graph = graph_index,
        .node = index,
        .ns = end.since(begin),
        .output = .of(result),
        .inputs = .{ .{}, .{} },
    };
    for (inputs[0..@min(inputs.len, 2)], 0..) |input, i| entry.inputs[i] = .of(input);
    profile.add(entry);
}

/// Frees what `node` was the last to read (a value read twice by it is freed once), and its
/// output if nothing reads it.
fn releaseConsumed(graph: *const Graph, node: *const program_module.Node, index: usize, frame: []Slot) void {
    for (node.inputs) |v| {
        if (graph.last_use[v] == index) frame[v].release();
    }
    for (node.outputs) |v| if (graph.last_use[v] == program_module.never_read) frame[v].release();
}

/// Runs graph 0 once on zero-filled inputs of its declared shapes (open dimensions at the
/// sizes of the graph's check shapes, else 1), forks inline, so that shape and dtype mismatches anywhere in the program are
/// found when it is loaded rather than on the first request.
pub fn checkShapes(program: *Program) Error!void {
    const graph = &program.graphs[0];
    if (graph.inputs.len > ops.max_inputs) {
        return status.fail(error.MalformedModel, "model: graph 0 takes {d} inputs, at most {d} are supported", .{ graph.inputs.len, ops.max_inputs });
    }
    var inputs: [ops.max_inputs]*Tensor = undefined;
    var created: usize = 0;
    defer for (inputs[0..created]) |t| t.release();
    for (graph.inputs, 0..) |spec, i| {
        var shape: [tensor.max_dims]usize = undefined;
        for (spec.shape, 0..) |dim, axis| shape[axis] = dim orelse if (spec.check_shape.len != 0) spec.check_shape[axis] else 1;
        inputs[i] = tensor.createZeroed(spec.dtype, shape[0..spec.shape.len]) catch |err| {
            if (err == error.OutOfMemory) return err;
            var reason: [status.message_capacity]u8 = undefined;
            const length = status.lastMessage(&reason);
            if (err == error.TooLarge) return status.fail(error.TooLarge, "model: {f}: {s}", .{ InputLabel{ .index = i, .name = spec.name }, reason[0..length] });
            return status.fail(error.MalformedModel, "model: graph 0 input {d} has an impossible shape", .{i});
        };
        created += 1;
    }
    var outputs: [64]*Tensor = undefined;
    if (graph.outputs.len > outputs.len) return status.fail(error.MalformedModel, "model: graph 0 has {d} outputs, at most {d} are supported", .{ graph.outputs.len, outputs.len });
    var recorder: Recorder = .{
        .recordings = program.arena.allocator().alloc(?plan_module.Recording, program.graphs.len) catch return error.OutOfMemory,
        .allocator = program.arena.allocator(),
        .stand_in_values = true,
    };
    @memset(recorder.recordings, null);
    runWith(program, 0, inputs[0..created], outputs[0..graph.outputs.len], .inline_forks, &recorder) catch |err| {
        if (err == error.OutOfMemory) return err;
        var original: [status.message_capacity]u8 = undefined;
        const length = status.lastMessage(&original);
        if (err == error.TooLarge) return status.fail(error.TooLarge, "model: checking the graph on inputs of its declared shapes: {s}", .{original[0..length]});
        return status.fail(error.MalformedModel, "model: the graph does not check out on inputs of its declared shapes: {s}", .{original[0..length]});
    };
    // An op refused the zeros the check made up (a Range whose delta is a graph input): the
    // rest of the graph cannot run on them, and only a request's values can tell whether
    // the model is at fault, so the model loads unchecked past that node and unplanned.
    if (recorder.stopped) return;
    for (outputs[0..graph.outputs.len]) |t| t.release();
    // Plans only where every input shape is fixed: a run with other sizes would not fit.
    for (program.graphs) |g| if (!g.body) for (g.inputs) |spec| for (spec.shape) |dim| if (dim == null) return;
    for (program.graphs, recorder.recordings, program.plans) |*g, recording, *slot| {
        const r = recording orelse continue;
        slot.* = try plan_module.build(program.arena.allocator(), g, r);
    }
}

/// Prefixes the op's own message with where in the program it failed.
fn annotate(err: Error, graph_index: usize, node_index: usize, name: []const u8) Error {
    var original: [status.message_capacity]u8 = undefined;
    const length = status.lastMessage(&original);
    return status.fail(err, "graph {d} node {d} ({s}): {s}", .{ graph_index, node_index, name, original[0..length] });
}

/// A forked sub-graph: holds references to the program and its inputs until it has run.
const GraphTask = struct {
    program: *Program,
    graph: u32,
    input_count: u8,
    inputs: [ops.max_inputs]*Tensor = undefined,

    fn fork(task: GraphTask) Error!*Future {
        const pool = try Pool.global();
        task.program.retain();
        for (task.inputs[0..task.input_count]) |input| input.retain();
        return Future.fork(pool, "graph", GraphTask, task) catch |err| {
            var copy = task;
            copy.deinit();
            return err;
        };
    }

    pub fn run(task: *GraphTask) Error!*Tensor {
        // Under a budget of its own (run): the caller's is on another thread.
        var output: [1]*Tensor = undefined;
        try run_graph(task.program, task.graph, task.inputs[0..task.input_count], &output);
        return output[0];
    }

    pub fn deinit(task: *GraphTask) void {
        for (task.inputs[0..task.input_count]) |input| input.release();
        task.program.release();
    }
};

const run_graph = run;

// ---------------------------------------------------------------------------------------
// Tests: the spec's example end to end, errors with context, and a fuzz of mutated files.

const format = @import("format.zig");
const settings = @import("../settings.zig");

const example_json =
    \\{"format":"spindle-graph","version":2,
    \\ "tensors":[{"name":"wy","dtype":"float32","shape":[3,2],"offset":0,"bytes":24},
    \\            {"name":"wz","dtype":"float32","shape":[3,2],"offset":64,"bytes":24}],
    \\ "graphs":[
    \\  {"name":"forward","inputs":[{"dtype":"float32","shape":[-1,3]}],"values":7,
    \\   "nodes":[{"op":"constant","outputs":[1],"tensor":0},
    \\            {"op":"fork","graph":1,"inputs":[0],"outputs":[2]},
    \\            {"op":"mm","inputs":[0,1],"outputs":[3]},
    \\            {"op":"wait","inputs":[2],"outputs":[4]},
    \\            {"op":"add","inputs":[3,4],"outputs":[5]},
    \\            {"op":"clamp","inputs":[5],"outputs":[6],"params":{"max":100}}],
    \\   "outputs":[6]},
    \\  {"name":"compute_z","inputs":[{"dtype":"float32","shape":[-1,3]}],"values":3,
    \\   "nodes":[{"op":"constant","outputs":[1],"tensor":1},
    \\            {"op":"mm","inputs":[0,1],"outputs":[2]}],
    \\   "outputs":[2]}]}
;

fn exampleImage(allocator: std.mem.Allocator, json: []const u8) ![]u8 {
    var data: [128]u8 = @splat(0);
    const wy = [_]f32{ 1, 0, 0, 1, 1, 1 };
    const wz = [_]f32{ 2, 0, 0, 2, 0, 0 };
    @memcpy(data[0..24], std.mem.sliceAsBytes(&wy));
    @memcpy(data[64..88], std.mem.sliceAsBytes(&wz));
    return format.writeImage(allocator, json, &data);
}

test "the spec's fork/wait example runs from a model image, its fork inline while calls queue" {
    const image = try exampleImage(std.testing.allocator, example_json);
    defer std.testing.allocator.free(image);
    const program = try program_module.load(image);
    defer program.release();
    const x = try tensor.createUninit(.float32, &.{ 2, 3 });
    defer x.release();
    @memcpy(x.f32Slice(), &[_]f32{ 1, 2, 3, 4, 5, 6 });
    // The second run as while a call queues for the inference threads (the pool's queue
    // updates record one): the fork then runs inline, with the same values.
    const pool = &call.inference_pool;
    defer pool.queued_hint.store(0, .monotonic);
    for ([_]bool{ false, true }) |saturated| {
        pool.queued_hint.store(@intFromBool(saturated), .monotonic);
        try std.testing.expectEqual(saturated, pool.saturated());
        const inline_before = saturated_inline_forks.load(.monotonic);
        var outputs: [1]*Tensor = undefined;
        try run(program, 0, &.{x}, &outputs);
        defer outputs[0].release();
        // mm(x, wy) = [[4, 5], [10, 11]]; mm(x, wz) = [[2, 4], [8, 10]].
        try std.testing.expectEqualSlices(f32, &.{ 6, 9, 18, 21 }, outputs[0].f32Slice());
        try std.testing.expectEqual(inline_before + @intFromBool(saturated), saturated_inline_forks.load(.monotonic));
    }
    const wrong = try tensor.createZeroed(.float32, &.{ 2, 4 });
    defer wrong.release();
    var outputs: [1]*Tensor = undefined;
    try std.testing.expectError(error.ShapeMismatch, run(program, 0, &.{wrong}, &outputs));
}

test "a planned run (arena outputs) gives the same values as an unplanned one" {
    // Plans need fixed input shapes.
    const fixed = try std.mem.replaceOwned(u8, std.testing.allocator, example_json, "[-1,3]", "[2,3]");
    defer std.testing.allocator.free(fixed);
    const image = try exampleImage(std.testing.allocator, fixed);
    defer std.testing.allocator.free(image);
    const program = try program_module.load(image);
    defer program.release();
    try checkShapes(program);
    try std.testing.expect(program.plans[0] != null);
    try std.testing.expect(program.plans[0].?.arena_bytes > 0);
    const x = try tensor.createUninit(.float32, &.{ 2, 3 });
    defer x.release();
    @memcpy(x.f32Slice(), &[_]f32{ 1, 2, 3, 4, 5, 6 });
    for (0..3) |_| {
        var outputs: [1]*Tensor = undefined;
        try run(program, 0, &.{x}, &outputs);
        defer outputs[0].release();
        try std.testing.expectEqualSlices(f32, &.{ 6, 9, 18, 21 }, outputs[0].f32Slice());
        try std.testing.expect(outputs[0].storage.arena == null); // outputs never live in the arena
    }
}

test "an op failing inside a forked graph names the graph, node and op" {
    // compute_z multiplies by a [3, 2] weight: a [2, 2] input fails inside the fork.
    const json = try std.mem.replaceOwned(u8, std.testing.allocator, example_json, "\"shape\":[-1,3]}],\"values\":3", "\"shape\":[-1,-1]}],\"values\":3");
    defer std.testing.allocator.free(json);
    const relaxed = try std.mem.replaceOwned(u8, std.testing.allocator, json, "\"shape\":[-1,3]}],\"values\":7", "\"shape\":[-1,-1]}],\"values\":7");
    defer std.testing.allocator.free(relaxed);
    const image = try exampleImage(std.testing.allocator, relaxed);
    defer std.testing.allocator.free(image);
    const program = try program_module.load(image);
    defer program.release();
    const x = try tensor.createZeroed(.float32, &.{ 2, 2 });
    defer x.release();
    var outputs: [1]*Tensor = undefined;
    try std.testing.expectError(error.ShapeMismatch, run(program, 0, &.{x}, &outputs));
    var buffer: [status.message_capacity]u8 = undefined;
    const message = buffer[0..status.lastMessage(&buffer)];
    try std.testing.expect(std.mem.indexOf(u8, message, "node 1 (mm)") != null or std.mem.indexOf(u8, message, "node 2 (mm)") != null);
}

test "a program without tensors loads and runs" {
    const json =
        \\{"format":"spindle-graph","version":2,"tensors":[],
        \\ "graphs":[{"inputs":[{"dtype":"float32","shape":[2]}],"values":2,
        \\   "nodes":[{"op":"relu","inputs":[0],"outputs":[1]}],"outputs":[1]}]}
    ;
    const image = try format.writeImage(std.testing.allocator, json, &.{});
    defer std.testing.allocator.free(image);
    const program = try program_module.load(image);
    defer program.release();
    const x = try tensor.createUninit(.float32, &.{2});
    defer x.release();
    @memcpy(x.f32Slice(), &[_]f32{ -1, 2 });
    var outputs: [1]*Tensor = undefined;
    try run(program, 0, &.{x}, &outputs);
    defer outputs[0].release();
    try std.testing.expectEqualSlices(f32, &.{ 0, 2 }, outputs[0].f32Slice());
}

/// neg(relu(x)) for a float32 x of any length: a run holds 8 bytes per element at most (the
/// input is not counted).
const relu_neg_json =
    \\{"format":"spindle-graph","version":2,"tensors":[],
    \\ "graphs":[{"inputs":[{"dtype":"float32","shape":[-1]}],"values":3,
    \\   "nodes":[{"op":"relu","inputs":[0],"outputs":[1]},
    \\            {"op":"neg","inputs":[1],"outputs":[2]}],"outputs":[2]}]}
;

/// The same, forked: the entry graph allocates nothing itself.
const forked_relu_neg_json =
    \\{"format":"spindle-graph","version":2,"tensors":[],
    \\ "graphs":[{"inputs":[{"dtype":"float32","shape":[-1]}],"values":3,
    \\   "nodes":[{"op":"fork","graph":1,"inputs":[0],"outputs":[1]},
    \\            {"op":"wait","inputs":[1],"outputs":[2]}],"outputs":[2]},
    \\  {"inputs":[{"dtype":"float32","shape":[-1]}],"values":3,
    \\   "nodes":[{"op":"relu","inputs":[0],"outputs":[1]},
    \\            {"op":"neg","inputs":[1],"outputs":[2]}],"outputs":[2]}]}
;

fn budgetedProgram(json: []const u8, memory_budget: usize) !*Program {
    const image = try format.writeImage(std.testing.allocator, json, &.{});
    defer std.testing.allocator.free(image);
    const program = try program_module.load(image);
    program.memory_budget = memory_budget;
    return program;
}

/// Runs `program` on 100, 200 and 100 zeros under a 1000-byte budget: the 200 (1600 bytes)
/// must fail with TooLarge, with a message containing `refused`.
fn expectBudgetRefuses(program: *Program, refused: []const u8) !void {
    for ([_]usize{ 100, 200, 100 }) |length| {
        const x = try tensor.createZeroed(.float32, &.{length});
        defer x.release();
        var outputs: [1]*Tensor = undefined;
        if (length == 100) {
            try run(program, 0, &.{x}, &outputs);
            outputs[0].release();
            continue;
        }
        try std.testing.expectError(error.TooLarge, run(program, 0, &.{x}, &outputs));
        var buffer: [status.message_capacity]u8 = undefined;
        const message = buffer[0..status.lastMessage(&buffer)];
        try std.testing.expect(std.mem.indexOf(u8, message, refused) != null);
        try std.testing.expect(std.mem.indexOf(u8, message, "memoryBudget") != null);
    }
}

test "a run past its program's memory budget fails with TooLarge, and the program still runs" {
    const program = try budgetedProgram(relu_neg_json, 1000);
    defer program.release();
    try expectBudgetRefuses(program, "graph 0 node 1 (neg): a tensor of shape [200] (800 bytes)");
}

test "a forked graph runs under a budget of its own" {
    const program = try budgetedProgram(forked_relu_neg_json, 1000);
    defer program.release();
    try expectBudgetRefuses(program, "graph 1 node 1 (neg): a tensor of shape [200] (800 bytes)");
}

test "a run nested in a budget counts apart from it and puts it back" {
    const program = try budgetedProgram(relu_neg_json, 1000);
    defer program.release();
    tensor.setAllocationBudget(500);
    defer tensor.setAllocationBudget(null);
    const x = try tensor.createZeroed(.float32, &.{100});
    defer x.release();
    try std.testing.expectEqual(@as(usize, 400), tensor.allocationBudgetUsed());
    // The run's 800 bytes would not fit the outer 500-byte budget: they are the run's own.
    var outputs: [1]*Tensor = undefined;
    try run(program, 0, &.{x}, &outputs);
    try std.testing.expectEqual(@as(usize, 400), tensor.allocationBudgetUsed());
    // The output was charged to the run's budget: freeing it gives the outer one nothing.
    outputs[0].release();
    try std.testing.expectEqual(@as(usize, 400), tensor.allocationBudgetUsed());
}

test "the load-time shape check finds mismatches without starting the inter-op pool" {
    const json = try std.mem.replaceOwned(u8, std.testing.allocator, example_json, "\"shape\":[3,2],\"offset\":64", "\"shape\":[2,3],\"offset\":64");
    defer std.testing.allocator.free(json);
    const image = try exampleImage(std.testing.allocator, json);
    defer std.testing.allocator.free(image);
    const program = try program_module.load(image);
    defer program.release();
    try std.testing.expectError(error.MalformedModel, checkShapes(program));
    var buffer: [status.message_capacity]u8 = undefined;
    const message = buffer[0..status.lastMessage(&buffer)];
    try std.testing.expect(std.mem.indexOf(u8, message, "graph 1 node 1 (mm)") != null);
    const good = try exampleImage(std.testing.allocator, example_json);
    defer std.testing.allocator.free(good);
    const valid = try program_module.load(good);
    defer valid.release();
    try checkShapes(valid);
}

test "malformed descriptions are refused with MalformedModel" {
    const cases = [_][2][]const u8{
        .{ "\"op\":\"mm\",\"inputs\":[0,1]", "\"op\":\"frobnicate\",\"inputs\":[0,1]" }, // unknown op
        .{ "\"inputs\":[3,4],\"outputs\":[5]", "\"inputs\":[3,9],\"outputs\":[5]" }, // undefined value
        .{ "\"graph\":1,", "\"graph\":0," }, // a graph forking itself
        .{ "\"graph\":1,", "\"graph\":7," }, // missing graph
        .{ "\"offset\":64", "\"offset\":16" }, // overlapping, unaligned tensors
        .{ "\"bytes\":24}]", "\"bytes\":28}]" }, // bytes do not match the shape
        .{ "\"shape\":[3,2],\"offset\":0", "\"shape\":[3000000000000,2],\"offset\":0" }, // absurd dims
        .{ "\"inputs\":[2],\"outputs\":[4]", "\"inputs\":[3],\"outputs\":[4]" }, // wait on a tensor
        .{ "\"outputs\":[6]}", "\"outputs\":[2]}" }, // a future as graph output
        .{ "\"version\":2", "\"version\":3" },
        .{ "\"params\":{\"max\":100}", "\"params\":{\"maximum\":100}" }, // unknown parameter name
        .{ "\"params\":{\"max\":100}", "\"params\":{\"max\":\"high\"}" }, // wrong parameter type
        .{ "\"params\":{\"max\":100}", "\"params\":[null,100]" }, // positional (version 1) parameters
        .{ "\"op\":\"wait\",", "\"op\":\"wait\",\"params\":{\"dim\":1}," }, // params on a wait
        .{ "\"tensor\":0}", "\"tensor\":5}" },
        .{ "\"outputs\":[3]}", "\"outputs\":[1]}" }, // value defined twice
        // Strings the messages quote, with control bytes in them.
        .{ "\"op\":\"mm\",\"inputs\":[0,1]", "\"op\":\"mm\\u001b[2J\\u0000\",\"inputs\":[0,1]" },
        .{ "\"dtype\":\"float32\",\"shape\":[3,2],\"offset\":0", "\"dtype\":\"f\\u0007\",\"shape\":[3,2],\"offset\":0" },
        .{ "\"format\":\"spindle-graph\"", "\"format\":\"spindle\\ngraph\"" },
        .{ "\"params\":{\"max\":100}", "\"params\":{\"max\\t\":100}" },
        .{ "\"params\":{\"max\":100}", "\"params\":{\"max\":\"\\u0001\"}" },
    };
    for (cases) |case| {
        const json = try std.mem.replaceOwned(u8, std.testing.allocator, example_json, case[0], case[1]);
        defer std.testing.allocator.free(json);
        try std.testing.expect(!std.mem.eql(u8, json, example_json));
        const image = try exampleImage(std.testing.allocator, json);
        defer std.testing.allocator.free(image);
        status.clearMessage();
        status.paintStack();
        try std.testing.expectError(error.MalformedModel, program_module.load(image));
        var buffer: [status.message_capacity]u8 = undefined;
        _ = try status.expectFitMessage(&buffer);
    }
}

test "fuzz: thousands of mutated images load or fail cleanly, never crash, with fit messages" {
    const image = try exampleImage(std.testing.allocator, example_json);
    defer std.testing.allocator.free(image);
    var prng = std.Random.DefaultPrng.init(0x5eed);
    const random = prng.random();
    const mutated = try std.testing.allocator.alloc(u8, image.len);
    defer std.testing.allocator.free(mutated);
    var loaded: usize = 0;
    for (0..3000) |_| {
        @memcpy(mutated, image);
        const edits = random.intRangeAtMost(usize, 1, 4);
        for (0..edits) |_| {
            const position = random.uintLessThan(usize, mutated.len);
            switch (random.uintLessThan(u8, 4)) {
                0 => mutated[position] = random.int(u8),
                1 => mutated[position] ^= @as(u8, 1) << random.int(u3),
                2 => mutated[position] = "0123456789[]{},:\"-"[random.uintLessThan(usize, 18)],
                else => mutated[position] = 0,
            }
        }
        const length = if (random.boolean()) mutated.len else random.uintLessThan(usize, mutated.len);
        // Each failure's message is checked over a painted stack (status.paintStack).
        var buffer: [status.message_capacity]u8 = undefined;
        status.clearMessage();
        status.paintStack();
        const program = program_module.load(mutated[0..length]) catch {
            _ = try status.expectFitMessage(&buffer);
            continue;
        };
        defer program.release();
        status.clearMessage();
        status.paintStack();
        checkShapes(program) catch {
            _ = try status.expectFitMessage(&buffer);
            continue;
        };
        loaded += 1;
        // What loads must also run (or fail cleanly) on a valid input.
        const x = try tensor.createZeroed(.float32, &.{ 2, 3 });
        defer x.release();
        var outputs: [8]*Tensor = undefined;
        const count = program.graphs[0].outputs.len;
        if (count > outputs.len or program.graphs[0].inputs.len != 1) continue;
        status.clearMessage();
        status.paintStack();
        run(program, 0, &.{x}, outputs[0..count]) catch {
            _ = try status.expectFitMessage(&buffer);
            continue;
        };
        for (outputs[0..count]) |o| o.release();
    }
    try std.testing.expect(loaded > 0); // some mutations (e.g. inside tensor data) stay valid
}

test "a profiled run times every op node, forked graphs included, and counts records past its buffer" {
    const image = try exampleImage(std.testing.allocator, example_json);
    defer std.testing.allocator.free(image);
    const program = try program_module.load(image);
    defer program.release();
    const x = try tensor.createUninit(.float32, &.{ 2, 3 });
    defer x.release();
    @memcpy(x.f32Slice(), &[_]f32{ 1, 2, 3, 4, 5, 6 });
    var records: [8]Profile.Record = undefined;
    var profile: Profile = .{ .records = &records };
    var outputs: [1]*Tensor = undefined;
    try runProfiled(program, 0, &.{x}, &outputs, &profile);
    defer outputs[0].release();
    try std.testing.expectEqualSlices(f32, &.{ 6, 9, 18, 21 }, outputs[0].f32Slice());
    // Op nodes: mm, add and clamp in graph 0, mm in the forked graph 1.
    try std.testing.expectEqual(@as(usize, 4), profile.count);
    var forked: usize = 0;
    for (records[0..profile.count]) |entry| {
        if (entry.graph == 1) forked += 1;
        try std.testing.expectEqual(@as(u64, 2), entry.output.rank);
        try std.testing.expectEqual(@as(u64, 2), entry.inputs[0].dims[0]);
    }
    try std.testing.expectEqual(@as(usize, 1), forked);
    try std.testing.expect(active_profile == null);

    // A buffer too small: the count still says how many there were.
    var small: [1]Profile.Record = undefined;
    var short: Profile = .{ .records = &small };
    var again: [1]*Tensor = undefined;
    try runProfiled(program, 0, &.{x}, &again, &short);
    again[0].release();
    try std.testing.expectEqual(@as(usize, 4), short.count);
}

test "the load-time check runs open dims at the graph's check shapes, which must fit its inputs" {
    // reshape to [-1, 4] needs a multiple of 4 elements: size 1 fails, the check shape 8 runs.
    const json =
        \\{"format":"spindle-graph","version":2,"tensors":[],"graphs":[
        \\ {"inputs":[{"dtype":"float32","shape":[-1]}],"values":2,CHECK
        \\  "nodes":[{"op":"reshape","inputs":[0],"outputs":[1],"params":{"shape":[-1,4]}}],"outputs":[1]}]}
    ;
    const cases = [_]struct { check: []const u8, outcome: ?anyerror }{
        .{ .check = "", .outcome = error.MalformedModel },
        .{ .check = "\"check_shapes\":[[8]],", .outcome = null },
        .{ .check = "\"check_shapes\":[[0]],", .outcome = error.MalformedModel },
        .{ .check = "\"check_shapes\":[[8,1]],", .outcome = error.MalformedModel },
        .{ .check = "\"check_shapes\":[[8],[8]],", .outcome = error.MalformedModel },
    };
    for (cases) |case| {
        const text = try std.mem.replaceOwned(u8, std.testing.allocator, json, "CHECK", case.check);
        defer std.testing.allocator.free(text);
        const image = try format.writeImage(std.testing.allocator, text, &.{});
        defer std.testing.allocator.free(image);
        const loaded = program_module.load(image);
        if (loaded) |program| {
            defer program.release();
            if (case.outcome) |expected| {
                try std.testing.expectError(expected, checkShapes(program));
            } else {
                try checkShapes(program);
                // Any size the graph allows still runs.
                const x = try tensor.createZeroed(.float32, &.{12});
                defer x.release();
                var outputs: [1]*Tensor = undefined;
                try run(program, 0, &.{x}, &outputs);
                defer outputs[0].release();
                try std.testing.expectEqualSlices(usize, &.{ 3, 4 }, outputs[0].dims());
            }
        } else |err| try std.testing.expectEqual(case.outcome.?, err);
    }
}

test "the load-time check excuses only refusals of values it made up, and what follows from them" {
    const json =
        \\{"format":"spindle-graph","version":2,"tensors":[],"graphs":[
        \\ {"inputs":[{"dtype":"float32","shape":[]},{"dtype":"float32","shape":[]},{"dtype":"float32","shape":[]},
        \\   {"dtype":"int64","shape":[2]}],"values":9,
        \\  "nodes":[{"op":"neg","inputs":[0],"outputs":[4]},
        \\           {"op":"constant_of_shape","inputs":[3],"outputs":[5]},NODES],"outputs":[OUTPUT]}]}
    ;
    const cases = [_]struct { nodes: []const u8, output: []const u8, loads: bool }{
        // Range's delta is the zero the check made up: the model is not at fault.
        .{ .nodes = "{\"op\":\"range\",\"inputs\":[4,1,2],\"outputs\":[6]}", .output = "6", .loads = true },
        // A shape computed from made-up values ([0, 0]) meets a real one: excused too.
        .{ .nodes = "{\"op\":\"reshape\",\"inputs\":[5],\"outputs\":[6],\"params\":{\"shape\":[3]}}", .output = "6", .loads = true },
        // Made-up values as data, in an op whose shapes are wrong: the model's fault.
        .{ .nodes = "{\"op\":\"reshape\",\"inputs\":[3],\"outputs\":[6],\"params\":{\"shape\":[3]}}", .output = "6", .loads = false },
        .{ .nodes = "{\"op\":\"shape_of\",\"inputs\":[3],\"outputs\":[6]},{\"op\":\"reshape_to\",\"inputs\":[3,6],\"outputs\":[7]},{\"op\":\"mm\",\"inputs\":[7,7],\"outputs\":[8]}", .output = "8", .loads = false },
    };
    for (cases) |case| {
        const with_nodes = try std.mem.replaceOwned(u8, std.testing.allocator, json, "NODES", case.nodes);
        defer std.testing.allocator.free(with_nodes);
        const text = try std.mem.replaceOwned(u8, std.testing.allocator, with_nodes, "OUTPUT", case.output);
        defer std.testing.allocator.free(text);
        const image = try format.writeImage(std.testing.allocator, text, &.{});
        defer std.testing.allocator.free(image);
        const program = try program_module.load(image);
        defer program.release();
        if (!case.loads) {
            try std.testing.expectError(error.MalformedModel, checkShapes(program));
            continue;
        }
        try checkShapes(program);
        if (program.plans[0] != null) return error.TestUnexpectedResult; // the check stopped early
    }
    // The model that loaded runs on real values, and a real zero delta is refused.
    const text = try std.mem.replaceOwned(u8, std.testing.allocator, json, "NODES", "{\"op\":\"range\",\"inputs\":[4,1,2],\"outputs\":[6]}");
    defer std.testing.allocator.free(text);
    const final = try std.mem.replaceOwned(u8, std.testing.allocator, text, "OUTPUT", "6");
    defer std.testing.allocator.free(final);
    const image = try format.writeImage(std.testing.allocator, final, &.{});
    defer std.testing.allocator.free(image);
    const program = try program_module.load(image);
    defer program.release();
    try checkShapes(program);
    var scalars: [3]*Tensor = undefined;
    for (&scalars, [_]f32{ -1, 5, 2 }) |*t, v| {
        t.* = try tensor.createUninit(.float32, &.{});
        t.*.f32Slice()[0] = v;
    }
    defer for (scalars) |t| t.release();
    const shape = try tensor.createZeroed(.int64, &.{2});
    defer shape.release();
    var outputs: [1]*Tensor = undefined;
    try run(program, 0, &.{ scalars[0], scalars[1], scalars[2], shape }, &outputs);
    defer outputs[0].release();
    try std.testing.expectEqualSlices(f32, &.{ 1, 3 }, outputs[0].f32Slice());
    scalars[2].f32Slice()[0] = 0;
    try std.testing.expectError(error.InvalidArgument, run(program, 0, &.{ scalars[0], scalars[1], scalars[2], shape }, &outputs));
}

test {
    _ = shape_plans;
    _ = control;
}

test "a program with open dims plans each input shape on its first run, boundedly, with the same results" {
    const json =
        \\{"format":"spindle-graph","version":2,"tensors":[],"graphs":[
        \\ {"inputs":[{"dtype":"float32","shape":[-1,4]}],"values":4,
        \\  "nodes":[{"op":"neg","inputs":[0],"outputs":[1]},{"op":"relu","inputs":[1],"outputs":[2]},
        \\           {"op":"neg","inputs":[2],"outputs":[3]}],"outputs":[3]}]}
    ;
    const image = try format.writeImage(std.testing.allocator, json, &.{});
    defer std.testing.allocator.free(image);
    const program = try program_module.load(image);
    defer program.release();
    try checkShapes(program);
    try std.testing.expect(program.plans[0] == null);
    // Twice per size, over more sizes than the cache keeps: -relu(-x) is min(x, 0) each time.
    for (0..2 * (shape_plans.capacity + 3)) |step| {
        const rows = step / 2 + 1;
        const x = try tensor.createUninit(.float32, &.{ rows, 4 });
        defer x.release();
        for (x.f32Slice(), 0..) |*v, i| v.* = @as(f32, @floatFromInt(i % 5)) - 2;
        var outputs: [1]*Tensor = undefined;
        try run(program, 0, &.{x}, &outputs);
        defer outputs[0].release();
        for (outputs[0].f32Slice(), x.f32Slice()) |got, want| try std.testing.expectEqual(@min(want, 0), got);
        const entry = program.shape_plans.acquire(&shape_plans.Key.of(&.{x})) orelse return error.TestUnexpectedResult;
        defer entry.release();
        try std.testing.expect(entry.plan != null and entry.plan.?.arena_bytes > 0);
    }
    try std.testing.expectEqual(@as(usize, shape_plans.capacity), program.shape_plans.count());
}
