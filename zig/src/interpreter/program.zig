//! A loaded, validated program: graphs of nodes over numbered values, constant tensors, and
//! the plan computed once at load (value kinds, last uses for freeing buffers early). A
//! Program is immutable after load and shared by every thread that runs it.
const std = @import("std");
const status = @import("../status.zig");
const tensor = @import("../tensor.zig");
const ops = @import("../ops.zig");
const format = @import("format.zig");
const bf16 = @import("../ops/bf16.zig");
const packed_f32 = @import("../ops/packed_f32.zig");

const Error = status.Error;
const Tensor = tensor.Tensor;

pub const NodeKind = enum(u8) { op, constant, fork, wait, @"if", loop, scan };
pub const ValueKind = enum(u8) { tensor, future };

pub const Node = struct {
    kind: NodeKind,
    /// An op node's op and its parameters, decoded and checked at load (other kinds: unused).
    options: ops.Options,
    inputs: []const u32,
    /// The first of `outputs` (every node but a control-flow one has exactly one).
    output: u32,
    /// fork: the graph to run; constant: the tensor index.
    target: u32,
    /// Every value the node defines: one, or a control-flow node's several.
    outputs: []const u32 = &.{},
    /// if, loop, scan: their subgraphs and how their inputs and outputs line up (behind a
    /// pointer: the interpreter walks the nodes of every run, and most are ops).
    control: *const Control = &no_control,

    /// The graphs this node runs (a fork's callee, a control-flow node's subgraphs).
    pub fn callees(node: *const Node) []const u32 {
        return switch (node.kind) {
            .fork => (&node.target)[0..1],
            .@"if" => &node.control.graphs,
            .loop, .scan => node.control.graphs[0..1],
            .op, .constant, .wait => &.{},
        };
    }
};

const no_control: Control = .{};

/// The most inputs or outputs a control-flow node may have (captured values included): their
/// tensors are gathered on the stack for each run of a subgraph.
pub const max_control_values = 64;

/// How a control-flow node's values line up with its subgraphs' (control.zig runs them).
///   if:   inputs [cond, captured…]; both branches take [captured…] and return the outputs.
///   loop: inputs [trip count?, cond?, carried…, captured…]; the body takes [iteration, cond,
///         carried…, captured…] and returns [cond, carried…, scanned…]; the node's outputs
///         are the final carried values, then each scanned value stacked over iterations.
///   scan: inputs [state…, scanned…, captured…]; the body takes [state…, one slice of each
///         scanned input, captured…] and returns [state…, per-step outputs…]; the node's
///         outputs are the final states, then the per-step outputs stacked.
pub const Control = struct {
    /// if: then, else; loop and scan: the body (then graphs[1] is unused).
    graphs: [2]u32 = .{ 0, 0 },
    /// loop and scan: how many values the body carries from step to step.
    carried: u32 = 0,
    /// loop: whether the node's first input is the trip count, and whether the next is the
    /// initial condition (ONNX leaves either out).
    trip_count: bool = false,
    condition: bool = false,
    /// scan: how many inputs it slices, and per sliced input and per stacked output the axis
    /// and whether it runs from the end.
    scan_inputs: u32 = 0,
    input_axes: []const i64 = &.{},
    input_reverse: []const bool = &.{},
    output_axes: []const i64 = &.{},
    output_reverse: []const bool = &.{},
};

/// The parameters of a control-flow node as the file names them.
const ControlParams = struct {
    carried: u32 = 0,
    trip_count: bool = false,
    condition: bool = false,
    scan_inputs: u32 = 0,
    input_axes: []const i64 = &.{},
    input_reverse: []const i64 = &.{},
    output_axes: []const i64 = &.{},
    output_reverse: []const i64 = &.{},
};

pub const InputSpec = struct {
    /// The input's name ("" when the model gives none), for error messages.
    name: []const u8,
    dtype: tensor.DType,
    /// Dimensions; null = any size.
    shape: []const ?usize,
    /// Per dimension, the model's name for it (ONNX dim_param) or null; empty when none.
    symbols: []const ?[]const u8,
    /// A size for each dim that the load-time check uses for the open ones; empty: 1.
    check_shape: []const usize = &.{},

    /// Formats the shape as the model declares it: `[batch, 3, ?, 224]`.
    pub fn format(spec: InputSpec, writer: *std.Io.Writer) std.Io.Writer.Error!void {
        try writer.writeByte('[');
        for (spec.shape, 0..) |dim, axis| {
            if (axis > 0) try writer.writeAll(", ");
            const symbol = if (spec.symbols.len == spec.shape.len) spec.symbols[axis] else null;
            if (dim) |size| {
                try writer.print("{d}", .{size});
            } else if (symbol) |name| {
                try writer.print("{f}", .{status.printable(name)});
            } else {
                try writer.writeByte('?');
            }
        }
        try writer.writeByte(']');
    }
};

/// Marks a value that no node reads (released right after it is made).
pub const never_read = std.math.maxInt(u32);
/// Marks a graph output (never released by the interpreter).
pub const kept = std.math.maxInt(u32) - 1;

pub const Graph = struct {
    name: []const u8,
    inputs: []const InputSpec,
    value_count: u32,
    nodes: []const Node,
    outputs: []const u32,
    value_kinds: []const ValueKind,
    /// For each value, the index of the last node that reads it (or never_read / kept).
    last_use: []const u32,
    /// A control-flow node's subgraph (then/else branch, loop or scan body): run once per
    /// branch taken or step, never planned (its values' sizes may change from step to step).
    body: bool = false,
    /// The dtype and shape (null: any size) of each output, where the file describes them: a
    /// loop that runs no step stacks its scanned outputs as empty tensors of these.
    output_specs: []const InputSpec = &.{},
    /// Per node, the weight packed for a bf16 program (empty for an f32 one): such a node
    /// runs through bf16.execute.
    bf16_weights: []const ?*const bf16.Weights = &.{},
    /// Per node, the weight packed in f32 for the native GEMM (empty with another BLAS):
    /// such a node (without a bf16 weight) runs through packed_f32.execute.
    f32_weights: []const ?*const packed_f32.Weights = &.{},
};

pub const Program = struct {
    arena: std.heap.ArenaAllocator,
    graphs: []const Graph,
    /// Memory plans per graph, filled by the load-time shape check (execute.checkShapes)
    /// before the program is shared; read-only afterwards.
    plans: []?@import("plan.zig").GraphPlan,
    /// Graph 0's plans per input shape, for a program whose inputs have open dims (filled by
    /// execute.run as runs meet new shapes; bounded, thread-safe).
    shape_plans: @import("shape_plans.zig").ShapePlans = .{},
    constants: []const *Tensor,
    /// The most tensor bytes one run may hold at once (execute.run; null: no cap), set by
    /// whoever loads the program before it is shared.
    memory_budget: ?usize = null,
    /// Every weight packed for bf16 (in the graphs' bf16_weights), released with the program.
    packed_weights: []const bf16.Weights = &.{},
    /// Every weight packed in f32 (in the graphs' f32_weights), released with the program.
    packed_f32_weights: []const packed_f32.Weights = &.{},
    /// Holders: the handle table and every running call. Release/Acquire as in tensor.zig.
    refs: std.atomic.Value(u32),

    pub fn retain(program: *Program) void {
        const previous = program.refs.fetchAdd(1, .monotonic);
        std.debug.assert(previous > 0);
    }

    pub fn release(program: *Program) void {
        const previous = program.refs.fetchSub(1, .release);
        std.debug.assert(previous > 0);
        if (previous == 1) {
            _ = program.refs.load(.acquire);
            for (program.constants) |constant| constant.release();
            for (program.packed_weights) |*weights| weights.release();
            for (program.packed_f32_weights) |*weights| weights.release();
            program.shape_plans.deinit();
            var arena = program.arena;
            arena.deinit();
        }
    }
};

/// Programs TypeScript holds, by handle.
pub var table: @import("../handles.zig").Table(Program, "program") = .{};

/// Parses and validates a model image, copying its tensors into native storage. Every
/// defect is a MalformedModel error naming what is wrong; nothing is trusted.
pub fn load(bytes: []const u8) Error!*Program {
    return loadWithPrecision(bytes, .f32);
}

/// Loads a program; with precision bf16 and a bf16 kernel on this CPU, packs the weights of
/// its convolutions and matrix products (see ops/bf16.zig). Without a kernel it loads f32.
pub fn loadWithPrecision(bytes: []const u8, precision: bf16.Precision) Error!*Program {
    const header = try format.parseHeader(bytes);
    var arena = std.heap.ArenaAllocator.init(std.heap.c_allocator);
    errdefer arena.deinit();
    const allocator = arena.allocator();
    const json = bytes[header.description_offset..][0..header.description_length];
    const description = try format.parseDescription(allocator, json);
    const data = bytes[header.data_offset..][0..header.data_length];
    const constants = try loadTensors(allocator, description.tensors, data);
    errdefer for (constants) |constant| constant.release();
    const graphs = allocator.alloc(Graph, description.graphs.len) catch return error.OutOfMemory;
    for (description.graphs, 0..) |graph_description, index| {
        graphs[index] = try buildGraph(allocator, graph_description, index, description.graphs, constants.len);
    }
    try markBodies(graphs);
    try checkForkCycles(graphs);
    try flushSubnormalWeights(allocator, graphs, constants);
    const plans = allocator.alloc(?@import("plan.zig").GraphPlan, graphs.len) catch return error.OutOfMemory;
    @memset(plans, null);
    const program = allocator.create(Program) catch return error.OutOfMemory;
    program.* = .{ .arena = undefined, .graphs = graphs, .plans = plans, .constants = constants, .refs = .init(1) };
    if (precision == .bf16) if (bf16.kernel()) |which| {
        program.packed_weights = try packWeights(Bf16Packer{ .which = which }, allocator, graphs, constants);
    };
    errdefer for (program.packed_weights) |*weights| weights.release();
    // Every precision: the nodes bf16 does not run pack their f32 weight once, here, instead
    // of on every call.
    if (packed_f32.available()) program.packed_f32_weights = try packWeights(F32Packer{}, allocator, graphs, constants);
    // The arena must move into the program last: it owns the program's own memory.
    program.arena = arena;
    return program;
}

/// Sets the subnormal values (|w| < 2^-126) of float32 constants that only conv, matrix
/// product and recurrent ops read to zero, as OpenVINO does at load.
///
/// Trained weights hold them (PaddleOCR rec: 31,350, most in its squeeze-excitation convs;
/// det 1,579), and on x86 every vector multiply with a subnormal operand takes a microcode
/// assist: rec's 120×480 excitation conv on [1, 480, 1, 1] took 0.493 ms for 57,600
/// products, 0.030 ms with them flushed. Each such product is below 2^-126 times the input,
/// far under the rounding of any sum it joins. A constant that any other op, a control-flow
/// node or a graph output reads (a divisor, an epsilon) is left as it is. The constants are
/// the program's own copies (loadTensors), so the file's bytes are untouched.
fn flushSubnormalWeights(allocator: std.mem.Allocator, graphs: []const Graph, constants: []const *Tensor) Error!void {
    const Reads = enum(u8) { none, products, other };
    const reads = allocator.alloc(Reads, constants.len) catch return error.OutOfMemory;
    @memset(reads, .none);
    for (graphs) |graph| {
        const sources = try constantSources(allocator, graph);
        for (graph.nodes) |node| {
            const product = node.kind == .op and switch (node.options) {
                .conv2d, .conv_transpose2d, .gemm, .matmul, .mm, .lstm, .gru, .rnn => true,
                else => false,
            };
            for (node.inputs) |value| if (sources[value]) |target| {
                if (!product) reads[target] = .other else if (reads[target] == .none) reads[target] = .products;
            };
        }
        for (graph.outputs) |value| if (sources[value]) |target| {
            reads[target] = .other;
        };
    }
    for (constants, reads) |constant, read| {
        if (read == .products and constant.dtype == .float32) _ = flushSubnormals(constant.f32Slice());
    }
}

/// The constant tensor behind each value of `graph` that a constant node defines (null for
/// the others), in `allocator`'s memory.
fn constantSources(allocator: std.mem.Allocator, graph: Graph) Error![]?u32 {
    const sources = allocator.alloc(?u32, graph.value_count) catch return error.OutOfMemory;
    @memset(sources, null);
    for (graph.nodes) |node| if (node.kind == .constant) {
        sources[node.output] = node.target;
    };
    return sources;
}

/// Sets the subnormals of `values` to zero of the same sign; returns how many there were.
fn flushSubnormals(values: []f32) usize {
    const lanes = 16;
    const U = @Vector(lanes, u32);
    const exponent: U = @splat(0x7f80_0000);
    const fraction: U = @splat(0x007f_ffff);
    const sign: U = @splat(0x8000_0000);
    const zero: U = @splat(0);
    var count: usize = 0;
    var i: usize = 0;
    while (i + lanes <= values.len) : (i += lanes) {
        const bits: U = @bitCast(values[i..][0..lanes].*);
        const subnormal = ((bits & exponent) == zero) & ((bits & fraction) != zero);
        if (!@reduce(.Or, subnormal)) continue;
        count += std.simd.countTrues(subnormal);
        values[i..][0..lanes].* = @bitCast(@select(u32, subnormal, bits & sign, bits));
    }
    for (values[i..]) |*value| {
        const bits: u32 = @bitCast(value.*);
        if (bits & 0x7f80_0000 != 0 or bits & 0x007f_ffff == 0) continue;
        value.* = @bitCast(bits & 0x8000_0000);
        count += 1;
    }
    return count;
}

/// Packs weights for bf16: conv2d, matmul and gemm nodes with a bf16 kernel's layout.
const Bf16Packer = struct {
    which: bf16.Kernel,

    const Weights = bf16.Weights;
    const slots = "bf16_weights";

    fn pack(packer: Bf16Packer, kind: Packable, node: Node, weight: *Tensor) Error!?bf16.Weights {
        return switch (kind) {
            .conv => try bf16.packConv(packer.which, weight, @intCast(node.options.conv2d.groups), node.options.conv2d.stride),
            .matrix => try bf16.packMatrix(packer.which, weight, false),
            .matrix_transposed => try bf16.packMatrix(packer.which, weight, true),
        };
    }
};

/// Packs f32 weights for the native GEMM, for the nodes that have no bf16 weight.
const F32Packer = struct {
    const Weights = packed_f32.Weights;
    const slots = "f32_weights";

    fn pack(_: F32Packer, kind: Packable, node: Node, weight: *Tensor) Error!?packed_f32.Weights {
        return switch (kind) {
            .conv => try packed_f32.packConv(weight, @intCast(node.options.conv2d.groups)),
            .matrix => try packed_f32.packMatrix(weight, false),
            .matrix_transposed => try packed_f32.packMatrix(weight, true),
        };
    }
};

/// Packs the constant weight of every conv2d, matmul and gemm node `packer` takes, and points
/// the node's slot (the graph's `Packer.slots` field) at it. A weight read by several nodes is
/// packed per node: they may read it as different operands. A node that already has a bf16
/// weight is skipped.
fn packWeights(packer: anytype, allocator: std.mem.Allocator, graphs: []Graph, constants: []const *Tensor) Error![]const @TypeOf(packer).Weights {
    const Packer = @TypeOf(packer);
    var count: usize = 0;
    for (graphs) |graph| {
        for (graph.nodes) |node| count += @intFromBool(packable(node) != null);
    }
    const all = allocator.alloc(Packer.Weights, count) catch return error.OutOfMemory;
    var made: usize = 0;
    errdefer for (all[0..made]) |*weights| weights.release();
    for (graphs) |*graph| {
        const sources = try constantSources(allocator, graph.*);
        const slots = allocator.alloc(?*const Packer.Weights, graph.nodes.len) catch return error.OutOfMemory;
        @memset(slots, null);
        for (graph.nodes, slots, 0..) |node, *slot, index| {
            const kind = packable(node) orelse continue;
            if (graph.bf16_weights.len != 0 and graph.bf16_weights[index] != null) continue;
            const source = sources[node.inputs[1]] orelse continue;
            const weight = constants[source];
            const weights = try packer.pack(kind, node, weight) orelse continue;
            all[made] = weights;
            slot.* = &all[made];
            made += 1;
        }
        @field(graph, Packer.slots) = slots;
    }
    return all[0..made];
}

const Packable = enum { conv, matrix, matrix_transposed };

/// Whether a packed weight can run `node` (given a constant weight), and as which operand.
fn packable(node: Node) ?Packable {
    if (node.kind != .op or node.inputs.len < 2) return null;
    return switch (node.options) {
        .conv2d => .conv,
        .matmul, .mm => .matrix,
        .gemm => |o| if (o.trans_a) null else if (o.trans_b) .matrix_transposed else .matrix,
        else => null,
    };
}

fn parseDType(name: []const u8, comptime what: []const u8, index: usize) Error!tensor.DType {
    return std.meta.stringToEnum(tensor.DType, name) orelse
        status.fail(error.MalformedModel, "model: " ++ what ++ " {d} has unknown dtype '{f}'", .{ index, status.printable(name) });
}

fn loadTensors(allocator: std.mem.Allocator, descriptions: []const format.TensorDescription, data: []const u8) Error![]*Tensor {
    // Overlap check: sort (offset, end) pairs; any tensor starting before the previous end
    // overlaps it.
    const Range = struct { begin: u64, end: u64, index: usize };
    const ranges = allocator.alloc(Range, descriptions.len) catch return error.OutOfMemory;
    const constants = allocator.alloc(*Tensor, descriptions.len) catch return error.OutOfMemory;
    var created: usize = 0;
    errdefer for (constants[0..created]) |constant| constant.release();
    for (descriptions, 0..) |d, i| {
        const dtype = try parseDType(d.dtype, "tensor", i);
        if (d.shape.len > tensor.max_dims) {
            return status.fail(error.MalformedModel, "model: tensor {d} has {d} dims (at most {d})", .{ i, d.shape.len, tensor.max_dims });
        }
        var shape: [tensor.max_dims]usize = undefined;
        for (d.shape, 0..) |dim, axis| {
            if (dim < 0) return status.fail(error.MalformedModel, "model: tensor {d} has negative dimension {d}", .{ i, dim });
            shape[axis] = @intCast(dim);
        }
        const count = tensor.checkedNumel(shape[0..d.shape.len], dtype) catch
            return status.fail(error.MalformedModel, "model: tensor {d} has an absurd shape {f}", .{ i, status.shape(d.shape) });
        if (d.bytes != count * dtype.size()) {
            return status.fail(error.MalformedModel, "model: tensor {d} declares {d} bytes, its shape {f} of {s} needs {d}", .{
                i, d.bytes, status.shape(d.shape), dtype.name(), count * dtype.size(),
            });
        }
        if (d.offset % format.data_alignment != 0) {
            return status.fail(error.MalformedModel, "model: tensor {d} starts at {d}, not a multiple of {d}", .{ i, d.offset, format.data_alignment });
        }
        if (d.offset > data.len or d.bytes > data.len - d.offset) {
            return status.fail(error.MalformedModel, "model: tensor {d} [{d}, +{d}) lies outside the {d}-byte data region", .{ i, d.offset, d.bytes, data.len });
        }
        ranges[i] = .{ .begin = d.offset, .end = d.offset + d.bytes, .index = i };
        const t = try tensor.createUninit(dtype, shape[0..d.shape.len]);
        @memcpy(t.byteSlice(), data[d.offset..][0..d.bytes]);
        constants[i] = t;
        created += 1;
    }
    std.mem.sort(Range, ranges, {}, struct {
        fn less(_: void, a: Range, b: Range) bool {
            return a.begin < b.begin;
        }
    }.less);
    if (ranges.len < 2) return constants;
    for (ranges[1..], 1..) |range, i| {
        const previous = ranges[i - 1];
        if (range.begin < previous.end and range.end > range.begin) {
            return status.fail(error.MalformedModel, "model: tensors {d} and {d} overlap", .{ previous.index, range.index });
        }
    }
    return constants;
}

/// An input's check shape: one positive size per dim, equal to the fixed dims.
fn checkShape(allocator: std.mem.Allocator, shape: []const ?usize, given: []const i64, graph_index: usize) Error![]const usize {
    if (given.len != shape.len) return status.fail(error.MalformedModel, "model: graph {d} has a check shape of {d} dims for an input of {d}", .{ graph_index, given.len, shape.len });
    const sizes = allocator.alloc(usize, given.len) catch return error.OutOfMemory;
    for (given, shape, sizes) |size, dim, *slot| {
        if (size < 1 or size > 1 << 20 or (dim != null and dim.? != size)) {
            return status.fail(error.MalformedModel, "model: graph {d} has a check shape {f} that does not fit its input", .{ graph_index, status.shape(given) });
        }
        slot.* = @intCast(size);
    }
    return sizes;
}

fn buildInputs(allocator: std.mem.Allocator, descriptions: []const format.InputDescription, check_shapes: []const []const i64, graph_index: usize) Error![]InputSpec {
    if (check_shapes.len != 0 and check_shapes.len != descriptions.len) {
        return status.fail(error.MalformedModel, "model: graph {d} has {d} check shapes for {d} inputs", .{ graph_index, check_shapes.len, descriptions.len });
    }
    const specs = allocator.alloc(InputSpec, descriptions.len) catch return error.OutOfMemory;
    for (descriptions, specs, 0..) |d, *spec, i| {
        const dtype = try parseDType(d.dtype, "graph input of graph", graph_index);
        if (d.shape.len > tensor.max_dims) {
            return status.fail(error.MalformedModel, "model: graph {d} has an input with {d} dims", .{ graph_index, d.shape.len });
        }
        const shape = allocator.alloc(?usize, d.shape.len) catch return error.OutOfMemory;
        for (d.shape, shape) |dim, *slot| {
            if (dim < -1 or dim > 1 << 40) return status.fail(error.MalformedModel, "model: graph {d} has an input dimension {d}", .{ graph_index, dim });
            slot.* = if (dim == -1) null else @intCast(dim);
        }
        spec.* = .{ .name = d.name, .dtype = dtype, .shape = shape, .symbols = d.symbols };
        if (check_shapes.len != 0) spec.check_shape = try checkShape(allocator, shape, check_shapes[i], graph_index);
    }
    return specs;
}

fn nodeKind(name: []const u8) ?struct { kind: NodeKind, op: ops.OpCode } {
    // "constant", "fork" and "wait" are not op names; their `op` is unused.
    if (std.mem.eql(u8, name, "constant")) return .{ .kind = .constant, .op = .contiguous };
    if (std.mem.eql(u8, name, "fork")) return .{ .kind = .fork, .op = .contiguous };
    if (std.mem.eql(u8, name, "wait")) return .{ .kind = .wait, .op = .contiguous };
    if (std.mem.eql(u8, name, "if")) return .{ .kind = .@"if", .op = .contiguous };
    if (std.mem.eql(u8, name, "loop")) return .{ .kind = .loop, .op = .contiguous };
    if (std.mem.eql(u8, name, "scan")) return .{ .kind = .scan, .op = .contiguous };
    const op = std.meta.stringToEnum(ops.OpCode, name) orelse return null;
    return .{ .kind = .op, .op = op };
}

fn buildGraph(
    allocator: std.mem.Allocator,
    d: format.GraphDescription,
    graph_index: usize,
    all: []const format.GraphDescription,
    tensor_count: usize,
) Error!Graph {
    if (d.values > format.max_values_per_graph or d.nodes.len > format.max_nodes_per_graph) {
        return status.fail(error.MalformedModel, "model: graph {d} has {d} values and {d} nodes, over the limits", .{ graph_index, d.values, d.nodes.len });
    }
    if (d.inputs.len > d.values) return status.fail(error.MalformedModel, "model: graph {d} has more inputs than values", .{graph_index});
    const inputs = try buildInputs(allocator, d.inputs, d.check_shapes, graph_index);
    const kinds = allocator.alloc(ValueKind, d.values) catch return error.OutOfMemory;
    const defined = allocator.alloc(bool, d.values) catch return error.OutOfMemory;
    const last_use = allocator.alloc(u32, d.values) catch return error.OutOfMemory;
    @memset(defined, false);
    @memset(last_use, never_read);
    @memset(kinds, .tensor);
    for (0..d.inputs.len) |v| defined[v] = true;
    const nodes = allocator.alloc(Node, d.nodes.len) catch return error.OutOfMemory;
    for (d.nodes, nodes, 0..) |nd, *node, n| {
        const where = .{ graph_index, n, nd.op };
        const kind = nodeKind(nd.op) orelse return status.fail(error.MalformedModel, "model: graph {d} node {d}: unknown op '{f}'", .{ graph_index, n, status.printable(nd.op) });
        const control_flow = kind.kind == .@"if" or kind.kind == .loop or kind.kind == .scan;
        if (nd.outputs.len != 1 and !(control_flow and nd.outputs.len >= 1 and nd.outputs.len <= max_control_values)) {
            return status.fail(error.MalformedModel, "model: graph {d} node {d} ({s}) must have exactly one output", where);
        }
        if (!control_flow and nd.graphs.len != 0) return status.fail(error.MalformedModel, "model: graph {d} node {d} ({s}) names graphs but is no control-flow node", where);
        const output = nd.outputs[0];
        for (nd.inputs) |v| {
            if (v >= d.values or !defined[v]) {
                return status.fail(error.MalformedModel, "model: graph {d} node {d} ({s}) reads value {d} before it is defined", .{ graph_index, n, nd.op, v });
            }
            last_use[v] = @intCast(n);
        }
        if (output >= d.values or defined[output]) {
            return status.fail(error.MalformedModel, "model: graph {d} node {d} ({s}) defines value {d} twice or out of range", .{ graph_index, n, nd.op, output });
        }
        var options: ops.Options = .{ .contiguous = .{} };
        var target: u32 = 0;
        var control: *const Control = &no_control;
        switch (kind.kind) {
            .@"if", .loop, .scan => {
                for (nd.inputs) |v| if (kinds[v] != .tensor) return status.fail(error.MalformedModel, "model: graph {d} node {d} ({s}) reads future {d} without waiting on it", .{ graph_index, n, nd.op, v });
                control = try buildControl(allocator, kind.kind, nd, graph_index, n, all);
            },
            .op => {
                const bounds = ops.arity(kind.op);
                if (nd.inputs.len < bounds.min or nd.inputs.len > bounds.max) {
                    return status.fail(error.MalformedModel, "model: graph {d} node {d} ({s}) has {d} inputs, expected {d} to {d}", .{ graph_index, n, nd.op, nd.inputs.len, bounds.min, bounds.max });
                }
                for (nd.inputs) |v| if (kinds[v] != .tensor) {
                    return status.fail(error.MalformedModel, "model: graph {d} node {d} ({s}) reads future {d} without waiting on it", .{ graph_index, n, nd.op, v });
                };
                options = ops.decodeNamed(kind.op, nd.inputs.len, nd.params) catch |err| {
                    if (err != error.MalformedModel) return err;
                    var reason: [status.message_capacity]u8 = undefined;
                    const length = status.lastMessage(&reason);
                    return status.fail(error.MalformedModel, "model: graph {d} node {d}: {s}", .{ graph_index, n, reason[0..length] });
                };
            },
            .constant => {
                target = nd.tensor orelse return status.fail(error.MalformedModel, "model: graph {d} node {d}: constant without a tensor", .{ graph_index, n });
                if (target >= tensor_count or nd.inputs.len != 0) return status.fail(error.MalformedModel, "model: graph {d} node {d}: constant names tensor {d} of {d}", .{ graph_index, n, target, tensor_count });
            },
            .fork => {
                target = nd.graph orelse return status.fail(error.MalformedModel, "model: graph {d} node {d}: fork without a graph", .{ graph_index, n });
                if (target >= all.len) return status.fail(error.MalformedModel, "model: graph {d} node {d}: fork of graph {d}, the file has {d}", .{ graph_index, n, target, all.len });
                const callee = all[target];
                if (callee.inputs.len != nd.inputs.len or callee.outputs.len != 1 or nd.inputs.len > ops.max_inputs) {
                    return status.fail(error.MalformedModel, "model: graph {d} node {d}: fork passes {d} inputs to graph {d}, which takes {d} and must return one tensor", .{ graph_index, n, nd.inputs.len, target, callee.inputs.len });
                }
                for (nd.inputs) |v| if (kinds[v] != .tensor) return status.fail(error.MalformedModel, "model: graph {d} node {d}: fork of a future", .{ graph_index, n });
                kinds[output] = .future;
            },
            .wait => {
                if (nd.inputs.len != 1 or kinds[nd.inputs[0]] != .future) {
                    return status.fail(error.MalformedModel, "model: graph {d} node {d}: wait needs exactly one future input", .{ graph_index, n });
                }
            },
        }
        for (nd.outputs[1..]) |extra| {
            if (extra >= d.values or defined[extra] or extra == output) {
                return status.fail(error.MalformedModel, "model: graph {d} node {d} ({s}) defines value {d} twice or out of range", .{ graph_index, n, nd.op, extra });
            }
            defined[extra] = true;
        }
        defined[output] = true;
        if (kind.kind != .op and !control_flow and nd.params != null) return status.fail(error.MalformedModel, "model: graph {d} node {d} ({s}) takes no params", where);
        node.* = .{ .kind = kind.kind, .options = options, .inputs = nd.inputs, .output = output, .target = target, .outputs = nd.outputs, .control = control };
    }
    if (d.outputs.len == 0) return status.fail(error.MalformedModel, "model: graph {d} has no outputs", .{graph_index});
    for (d.outputs) |v| {
        if (v >= d.values or !defined[v] or kinds[v] != .tensor) {
            return status.fail(error.MalformedModel, "model: graph {d} output {d} is not a defined tensor value", .{ graph_index, v });
        }
        last_use[v] = kept;
    }
    const output_specs = allocator.alloc(InputSpec, d.results.len) catch return error.OutOfMemory;
    for (d.results, output_specs) |result, *spec| {
        const shape = allocator.alloc(?usize, result.shape.len) catch return error.OutOfMemory;
        for (result.shape, shape) |dim, *slot| slot.* = if (dim < 0) null else @intCast(dim);
        spec.* = .{ .name = result.name, .dtype = try parseDType(result.dtype, "graph output of graph", graph_index), .shape = shape, .symbols = &.{} };
    }
    return .{
        .output_specs = output_specs,
        .name = d.name,
        .inputs = inputs,
        .value_count = d.values,
        .nodes = nodes,
        .outputs = d.outputs,
        .value_kinds = kinds,
        .last_use = last_use,
    };
}

/// Marks the subgraphs of control-flow nodes as bodies. Graph 0 is the entry, never a body.
fn markBodies(graphs: []Graph) Error!void {
    for (graphs) |graph| for (graph.nodes) |*node| {
        if (node.kind != .@"if" and node.kind != .loop and node.kind != .scan) continue;
        for (node.callees()) |callee| {
            if (callee == 0) return status.fail(error.MalformedModel, "model: a control-flow node runs graph 0, the entry graph", .{});
            graphs[callee].body = true;
        }
    };
}

fn parseControlParams(allocator: std.mem.Allocator, params: ?std.json.Value, graph_index: usize, n: usize) Error!ControlParams {
    const value = params orelse return .{};
    return std.json.parseFromValueLeaky(ControlParams, allocator, value, .{ .ignore_unknown_fields = false }) catch |err| {
        if (err == error.OutOfMemory) return error.OutOfMemory;
        return status.fail(error.MalformedModel, "model: graph {d} node {d}: control-flow params are not valid ({s})", .{ graph_index, n, @errorName(err) });
    };
}

/// Checks a control-flow node against its subgraphs: counts of inputs and outputs line up as
/// Control describes.
fn buildControl(allocator: std.mem.Allocator, kind: NodeKind, nd: format.NodeDescription, graph_index: usize, n: usize, all: []const format.GraphDescription) Error!*const Control {
    const where = .{ graph_index, n, @tagName(kind) };
    const params = try parseControlParams(allocator, nd.params, graph_index, n);
    const wanted_graphs: usize = if (kind == .@"if") 2 else 1;
    if (nd.graphs.len != wanted_graphs) return status.fail(error.MalformedModel, "model: graph {d} node {d} ({s}) names {d} graphs, expected {d}", .{ graph_index, n, @tagName(kind), nd.graphs.len, wanted_graphs });
    if (nd.inputs.len > max_control_values) return status.fail(error.MalformedModel, "model: graph {d} node {d} ({s}) has over 64 inputs", where);
    var control: Control = .{ .carried = params.carried, .trip_count = params.trip_count, .condition = params.condition, .scan_inputs = params.scan_inputs };
    for (nd.graphs, 0..) |g, i| {
        if (g >= all.len) return status.fail(error.MalformedModel, "model: graph {d} node {d} ({s}) runs graph {d}, the file has {d}", .{ graph_index, n, @tagName(kind), g, all.len });
        control.graphs[i] = g;
    }
    const body = all[control.graphs[0]];
    const inputs = nd.inputs.len;
    const outputs = nd.outputs.len;
    const fits = switch (kind) {
        .@"if" => inputs >= 1 and body.inputs.len == inputs - 1 and body.outputs.len == outputs and
            all[control.graphs[1]].inputs.len == inputs - 1 and all[control.graphs[1]].outputs.len == outputs,
        .loop => blk: {
            const leading = @as(usize, @intFromBool(params.trip_count)) + @intFromBool(params.condition);
            break :blk inputs >= leading + params.carried and outputs >= params.carried and
                body.inputs.len == 2 + inputs - leading and body.outputs.len == 1 + outputs;
        },
        .scan => params.scan_inputs >= 1 and inputs >= params.carried + params.scan_inputs and outputs >= params.carried and
            body.inputs.len == inputs and body.outputs.len == outputs,
        else => unreachable,
    };
    if (!fits) return status.fail(error.MalformedModel, "model: graph {d} node {d} ({s}): its inputs and outputs do not line up with its subgraphs'", where);
    if (kind == .scan) {
        const scanned_outputs = outputs - params.carried;
        control.input_axes = try listOr(allocator, i64, params.input_axes, params.scan_inputs, 0);
        control.input_reverse = try flags(allocator, try listOr(allocator, i64, params.input_reverse, params.scan_inputs, 0));
        control.output_axes = try listOr(allocator, i64, params.output_axes, scanned_outputs, 0);
        control.output_reverse = try flags(allocator, try listOr(allocator, i64, params.output_reverse, scanned_outputs, 0));
        for (control.input_axes) |axis| if (axis < -@as(i64, tensor.max_dims) or axis >= tensor.max_dims) return status.fail(error.MalformedModel, "model: graph {d} node {d} (scan): axis {d} is out of range", .{ graph_index, n, axis });
        for (control.output_axes) |axis| if (axis < -@as(i64, tensor.max_dims) or axis >= tensor.max_dims) return status.fail(error.MalformedModel, "model: graph {d} node {d} (scan): axis {d} is out of range", .{ graph_index, n, axis });
    } else if (params.scan_inputs != 0 or params.input_axes.len + params.input_reverse.len + params.output_axes.len + params.output_reverse.len != 0) {
        return status.fail(error.MalformedModel, "model: graph {d} node {d} ({s}) takes no scan params", where);
    }
    const stored = allocator.create(Control) catch return error.OutOfMemory;
    stored.* = control;
    return stored;
}

/// Directions as the file gives them (1: from the end, as ONNX's scan directions) as flags.
fn flags(allocator: std.mem.Allocator, directions: []const i64) Error![]const bool {
    const list = allocator.alloc(bool, directions.len) catch return error.OutOfMemory;
    for (directions, list) |direction, *flag| {
        if (direction != 0 and direction != 1) return status.fail(error.MalformedModel, "model: a scan direction is {d}, expected 0 or 1", .{direction});
        flag.* = direction == 1;
    }
    return list;
}

/// `given` when it has `count` entries, `fallback` repeated when it is empty.
fn listOr(allocator: std.mem.Allocator, comptime T: type, given: []const T, count: usize, fallback: T) Error![]const T {
    if (given.len == count) return given;
    if (given.len != 0) return status.fail(error.MalformedModel, "model: a scan lists {d} axes or directions for {d} values", .{ given.len, count });
    const list = allocator.alloc(T, count) catch return error.OutOfMemory;
    @memset(list, fallback);
    return list;
}

/// Forks and control-flow nodes form a call graph between graphs; a cycle would recurse
/// forever.
fn checkForkCycles(graphs: []const Graph) Error!void {
    const Color = enum { white, grey, black };
    var colors: [format.max_graphs]Color = @splat(.white);
    var stack: [format.max_graphs]struct { graph: usize, node: usize } = undefined;
    for (0..graphs.len) |root| {
        if (colors[root] != .white) continue;
        var depth: usize = 1;
        stack[0] = .{ .graph = root, .node = 0 };
        colors[root] = .grey;
        while (depth > 0) {
            const top = &stack[depth - 1];
            const graph = graphs[top.graph];
            if (top.node == graph.nodes.len) {
                colors[top.graph] = .black;
                depth -= 1;
                continue;
            }
            const node = &graph.nodes[top.node];
            top.node += 1;
            // A grey callee is on the stack, so at most one white callee is pushed per
            // visit of a node: a node with two (an if's branches) is visited again.
            for (node.callees()) |callee| switch (colors[callee]) {
                .grey => return status.fail(error.MalformedModel, "model: graph {d} runs itself (directly or through other graphs)", .{callee}),
                .black => {},
                .white => {
                    colors[callee] = .grey;
                    top.node -= 1;
                    stack[depth] = .{ .graph = callee, .node = 0 };
                    depth += 1;
                    break;
                },
            };
        }
    }
}

test "flushSubnormals zeroes subnormals of either sign and keeps every other value" {
    const tiny = std.math.floatTrueMin(f32);
    const smallest_normal = std.math.floatMin(f32);
    var values: [37]f32 = undefined;
    for (&values, 0..) |*v, i| v.* = @as(f32, @floatFromInt(i)) - 18.5;
    // Subnormals in a whole vector, in the scalar tail, and at both ends of the range.
    values[3] = tiny;
    values[15] = -smallest_normal / 2;
    values[35] = smallest_normal * 0.75;
    values[4] = smallest_normal;
    values[5] = -0.0;
    values[6] = std.math.nan(f32);
    values[7] = -std.math.inf(f32);
    var expected = values;
    expected[3] = 0;
    expected[15] = -0.0;
    expected[35] = 0;
    try std.testing.expectEqual(@as(usize, 3), flushSubnormals(&values));
    for (values, expected) |got, want| {
        try std.testing.expectEqual(@as(u32, @bitCast(want)), @as(u32, @bitCast(got)));
    }
    try std.testing.expectEqual(@as(usize, 0), flushSubnormals(&values));
}
