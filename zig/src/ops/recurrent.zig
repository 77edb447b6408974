//! ONNX LSTM, GRU and RNN (layout 0): shape checks, the packed output, and the schedule. Per
//! direction, one GEMM projects the input of every time step at once (X·Wᵀ); then each step
//! runs one small GEMM, H·Rᵀ (two for GRU without linear_before_reset), and the cell over
//! (batch row, hidden unit) items split over the intra-op pool. Scratch is allocated once
//! per call; the states live in the output itself.
//!
//! Ops return one tensor, so the output packs Y and the final states: it is
//! [seq + states, directions, batch, hidden], rows 0 … seq − 1 are Y, row seq is Y_h and, for
//! LSTM, row seq + 1 is Y_c. The ONNX importer slices the parts out as views.
const std = @import("std");
const status = @import("../status.zig");
const tensor = @import("../tensor.zig");
const settings = @import("../settings.zig");
const intra_op = @import("../pool/intra_op.zig");
const parallel = @import("parallel.zig");
const shape_ops = @import("shape.zig");
const linalg = @import("linalg.zig");
const kernels = @import("../kernels/recurrent.zig");

const Error = status.Error;
const Tensor = tensor.Tensor;
const Cell = kernels.Cell;
const Activation = kernels.Activation;

pub const Direction = kernels.Direction;

/// The parameters of a recurrent op, decoded from its schema (ops.zig `Recurrent`).
pub const Config = struct {
    cell: Cell,
    direction: Direction = .forward,
    hidden_size: ?i64 = null,
    clip: ?f64 = null,
    /// Activation codes (Activation.Kind), cell.activations() per direction; empty for the
    /// defaults. alpha and beta, when given, hold one value per activation.
    activations: []const i64 = &.{},
    activation_alpha: []const f64 = &.{},
    activation_beta: []const f64 = &.{},
    linear_before_reset: bool = false,
    input_forget: bool = false,
};

/// The tensor inputs, in ONNX's order.
pub const Inputs = struct {
    x: *Tensor,
    w: *Tensor,
    r: *Tensor,
    bias: ?*Tensor = null,
    sequence_lens: ?*Tensor = null,
    initial_h: ?*Tensor = null,
    initial_c: ?*Tensor = null,
    peepholes: ?*Tensor = null,
};

/// The sizes of one call, from the input shapes.
const Dims = struct {
    cell: Cell,
    directions: usize,
    seq: usize,
    batch: usize,
    input: usize,
    hidden: usize,

    fn width(dims: Dims) usize {
        return dims.cell.gates() * dims.hidden;
    }

    /// Floats of one [batch, hidden] block of the output.
    fn block(dims: Dims) usize {
        return dims.batch * dims.hidden;
    }
};

/// Runs the layer; returns the packed output (see the module comment).
pub fn recurrent(config: Config, inputs: Inputs) Error!*Tensor {
    const dims = try checkShapes(config, inputs);
    const activations = try resolveActivations(config, dims);
    if (config.clip) |clip| {
        if (!(clip > 0)) return status.fail(error.InvalidArgument, "{s}: clip must be positive, got {d}", .{ @tagName(config.cell), clip });
    }
    const out = try tensor.createUninit(.float32, &.{ dims.seq + dims.cell.states(), dims.directions, dims.batch, dims.hidden });
    errdefer out.release();
    if (out.numel() == 0) return out;
    var data = try Data.init(inputs);
    defer data.deinit();
    const lengths = try sequenceLengths(dims, inputs.sequence_lens);
    defer if (lengths) |l| l.release();
    const width = dims.width();
    const reset_floats = if (config.cell == .gru and !config.linear_before_reset) dims.block() else 0;
    const sizes = [_]usize{ dims.seq * dims.batch * width, dims.batch * width, reset_floats, width, dims.hidden, dims.hidden * width };
    var total: usize = 0;
    for (sizes) |size| total += size;
    // Each direction has its own buffers, so that both can run at once.
    const scratch = try tensor.createUninit(.float32, &.{ dims.directions, total });
    defer scratch.release();
    var schedules: [2]Schedule = undefined;
    for (schedules[0..dims.directions], 0..) |*schedule, direction| {
        var parts: [sizes.len][]f32 = undefined;
        var offset: usize = direction * total;
        for (sizes, &parts) |size, *part| {
            part.* = scratch.f32Slice()[offset..][0..size];
            offset += size;
        }
        // Rows past their sequence length skip the cell but still go through the second GRU
        // GEMM.
        @memset(parts[2], 0);
        schedule.* = .{
            .config = config,
            .dims = dims,
            .data = &data,
            .out = out.f32Slice(),
            .lengths = if (lengths) |l| l.i64Slice() else null,
            .activations = activations,
            .direction = direction,
            .projected = parts[0],
            .gates = parts[1],
            .reset_hidden = parts[2],
            .bias = parts[3],
            .reset_bias = parts[4],
            .recurrent_transposed = parts[5],
        };
        try schedule.project();
    }
    try recur(schedules[0..dims.directions]);
    return out;
}

fn requireFloat(cell: Cell, comptime which: []const u8, t: *const Tensor) Error!void {
    if (t.dtype != .float32) {
        return status.fail(error.DTypeMismatch, "{s}: " ++ which ++ " must be float32, got {s}", .{ @tagName(cell), t.dtype.name() });
    }
}

fn requireShape(cell: Cell, comptime which: []const u8, t: *const Tensor, expected: []const usize) Error!void {
    if (!std.mem.eql(usize, t.dims(), expected)) {
        return status.fail(error.ShapeMismatch, "{s}: " ++ which ++ " has shape {f}, expected {f}", .{ @tagName(cell), status.shape(t.dims()), status.shape(expected) });
    }
}

fn requireRank3(cell: Cell, comptime which: []const u8, t: *const Tensor) Error!void {
    try requireFloat(cell, which, t);
    if (t.ndim != 3) {
        return status.fail(error.ShapeMismatch, "{s}: " ++ which ++ " must be 3-D, got shape {f}", .{ @tagName(cell), status.shape(t.dims()) });
    }
}

/// Checks every input's dtype and shape against X and R, and the inputs only one cell takes.
fn checkShapes(config: Config, inputs: Inputs) Error!Dims {
    const cell = config.cell;
    const name = @tagName(cell);
    if (cell != .lstm and (inputs.initial_c != null or inputs.peepholes != null or config.input_forget)) {
        return status.fail(error.InvalidArgument, "{s}: initial_c, peepholes and input_forget are LSTM's only", .{name});
    }
    if (cell != .gru and config.linear_before_reset) {
        return status.fail(error.InvalidArgument, "{s}: linear_before_reset is GRU's only", .{name});
    }
    try requireRank3(cell, "X", inputs.x);
    try requireRank3(cell, "W", inputs.w);
    try requireRank3(cell, "R", inputs.r);
    const dims: Dims = .{
        .cell = cell,
        .directions = if (config.direction == .bidirectional) 2 else 1,
        .seq = inputs.x.shape[0],
        .batch = inputs.x.shape[1],
        .input = inputs.x.shape[2],
        .hidden = inputs.r.shape[2],
    };
    if (dims.input == 0 or dims.hidden == 0) {
        return status.fail(error.ShapeMismatch, "{s}: input size {d} and hidden size {d} (the last dims of X and R) must be positive", .{ name, dims.input, dims.hidden });
    }
    if (config.hidden_size) |hidden_size| {
        if (hidden_size != dims.hidden) {
            return status.fail(error.ShapeMismatch, "{s}: hidden_size is {d} but R has shape {f} (hidden size {d})", .{ name, hidden_size, status.shape(inputs.r.dims()), dims.hidden });
        }
    }
    try requireShape(cell, "W", inputs.w, &.{ dims.directions, dims.width(), dims.input });
    try requireShape(cell, "R", inputs.r, &.{ dims.directions, dims.width(), dims.hidden });
    if (inputs.bias) |b| {
        try requireFloat(cell, "B", b);
        try requireShape(cell, "B", b, &.{ dims.directions, 2 * dims.width() });
    }
    const state_shape = [_]usize{ dims.directions, dims.batch, dims.hidden };
    if (inputs.initial_h) |h| {
        try requireFloat(cell, "initial_h", h);
        try requireShape(cell, "initial_h", h, &state_shape);
    }
    if (inputs.initial_c) |c| {
        try requireFloat(cell, "initial_c", c);
        try requireShape(cell, "initial_c", c, &state_shape);
    }
    if (inputs.peepholes) |p| {
        try requireFloat(cell, "P", p);
        try requireShape(cell, "P", p, &.{ dims.directions, 3 * dims.hidden });
    }
    if (inputs.sequence_lens) |l| {
        if (l.dtype == .float32) return status.fail(error.DTypeMismatch, "{s}: sequence_lens must be int32 or int64, got float32", .{name});
        try requireShape(cell, "sequence_lens", l, &.{dims.batch});
    }
    return dims;
}

/// The activations of both directions (the second copies the first when there is one).
fn resolveActivations(config: Config, dims: Dims) Error![2][3]Activation {
    const name = @tagName(config.cell);
    const per_direction = config.cell.activations();
    const count = config.activations.len;
    if (count != 0 and count != per_direction * dims.directions) {
        return status.fail(error.InvalidArgument, "{s}: {d} activations given, expected {d} ({d} per direction)", .{ name, count, per_direction * dims.directions, per_direction });
    }
    for ([_][]const f64{ config.activation_alpha, config.activation_beta }) |values| {
        if (values.len != 0 and values.len != count) {
            return status.fail(error.InvalidArgument, "{s}: {d} activation alphas or betas for {d} activations (give one per activation, or none)", .{ name, values.len, count });
        }
    }
    var result: [2][3]Activation = undefined;
    for (0..2) |direction| for (0..3) |index| {
        result[direction][index] = kernels.Cell.defaultActivation(config.cell, @min(index, per_direction - 1));
        const at = @min(direction, dims.directions - 1) * per_direction + index;
        if (count == 0 or index >= per_direction) continue;
        const code = config.activations[at];
        if (code < 0 or code >= @typeInfo(Activation.Kind).@"enum".fields.len) {
            return status.fail(error.InvalidArgument, "{s}: activation code {d} is unknown", .{ name, code });
        }
        var activation = Activation.withDefaults(@enumFromInt(code));
        if (config.activation_alpha.len != 0) activation.alpha = @floatCast(config.activation_alpha[at]);
        if (config.activation_beta.len != 0) activation.beta = @floatCast(config.activation_beta[at]);
        result[direction][index] = activation;
    };
    return result;
}

/// sequence_lens as int64, each checked to lie in [0, seq]; null when absent.
fn sequenceLengths(dims: Dims, input: ?*Tensor) Error!?*Tensor {
    const source = input orelse return null;
    const lengths = try tensor.createUninit(.int64, &.{dims.batch});
    errdefer lengths.release();
    const values = lengths.i64Slice();
    const contiguous = try shape_ops.contiguous(source);
    defer contiguous.release();
    switch (contiguous.dtype) {
        .int64 => @memcpy(values, contiguous.i64Slice()),
        .int32 => for (values, contiguous.i32Slice()) |*v, raw| {
            v.* = raw;
        },
        .float32 => unreachable, // refused by checkShapes
    }
    for (values, 0..) |length, row| {
        if (length < 0 or length > dims.seq) {
            return status.fail(error.IndexOutOfRange, "{s}: sequence_lens[{d}] is {d}, outside [0, {d}] (the sequence length of X)", .{ @tagName(dims.cell), row, length, dims.seq });
        }
    }
    return lengths;
}

/// Contiguous copies (or references) of the inputs, released together.
const Data = struct {
    held: [7]?*Tensor = @splat(null),
    x: []const f32,
    w: []const f32,
    r: []const f32,
    bias: ?[]const f32,
    initial_h: ?[]const f32,
    initial_c: ?[]const f32,
    peepholes: ?[]const f32,

    fn init(inputs: Inputs) Error!Data {
        var data: Data = .{ .x = &.{}, .w = &.{}, .r = &.{}, .bias = null, .initial_h = null, .initial_c = null, .peepholes = null };
        errdefer data.deinit();
        data.x = (try data.hold(0, inputs.x)).?;
        data.w = (try data.hold(1, inputs.w)).?;
        data.r = (try data.hold(2, inputs.r)).?;
        data.bias = try data.hold(3, inputs.bias);
        data.initial_h = try data.hold(4, inputs.initial_h);
        data.initial_c = try data.hold(5, inputs.initial_c);
        data.peepholes = try data.hold(6, inputs.peepholes);
        return data;
    }

    fn hold(data: *Data, slot: usize, input: ?*Tensor) Error!?[]const f32 {
        const t = try shape_ops.contiguous(input orelse return null);
        data.held[slot] = t;
        return t.f32Slice();
    }

    fn deinit(data: *Data) void {
        for (data.held) |held| if (held) |t| t.release();
    }
};

/// One call's buffers and the step loop over them.
const Schedule = struct {
    config: Config,
    dims: Dims,
    data: *const Data,
    out: []f32,
    lengths: ?[]const i64,
    activations: [2][3]Activation,
    direction: usize,
    /// [seq × batch, width]: X·Wᵀ of this direction.
    projected: []f32,
    /// [batch, width]: H·Rᵀ, then the activated gates.
    gates: []f32,
    reset_hidden: []f32,
    bias: []f32,
    reset_bias: []f32,
    /// [hidden, width]: Rᵀ of the direction being run. The per-step GEMM reads op(B) = B in
    /// place (the kernel's skinny path, no packing per step), where Rᵀ as a transposed
    /// operand would be packed or taken as dot products at every step.
    recurrent_transposed: []f32,

    /// The output block [batch, hidden] at packed row `row` (time step, or seq + state).
    fn outBlock(schedule: *const Schedule, row: usize, direction: usize) []f32 {
        const block = schedule.dims.block();
        return schedule.out[(row * schedule.dims.directions + direction) * block ..][0..block];
    }

    /// X·Wᵀ for every time step at once, the biases and Rᵀ: what the steps read.
    fn project(schedule: *const Schedule) Error!void {
        const dims = schedule.dims;
        const width = dims.width();
        const w = schedule.data.w[schedule.direction * width * dims.input ..][0 .. width * dims.input];
        try linalg.matmulInto(false, true, dims.seq * dims.batch, width, dims.input, schedule.data.x, dims.input, w, dims.input, schedule.projected, width);
        schedule.prepareBias();
        schedule.transposeRecurrent();
    }

    /// The recurrence, one step after the other.
    fn run(schedule: *const Schedule) Error!void {
        const dims = schedule.dims;
        const width = dims.width();
        const direction = schedule.direction;
        const h = schedule.outBlock(dims.seq, direction);
        const c: []f32 = if (dims.cell == .lstm) schedule.outBlock(dims.seq + 1, direction) else &.{};
        if (schedule.data.initial_h) |initial| @memcpy(h, initial[direction * dims.block() ..][0..dims.block()]) else @memset(h, 0);
        if (schedule.data.initial_c) |initial| @memcpy(c, initial[direction * dims.block() ..][0..dims.block()]) else @memset(c, 0);
        const reverse = schedule.config.direction == .reverse or direction == 1;
        for (0..dims.seq) |s| {
            const time = if (reverse) dims.seq - 1 - s else s;
            const step: kernels.Step = .{
                .cell = dims.cell,
                .hidden = dims.hidden,
                .gates = schedule.gates,
                .projected = schedule.projected[time * dims.batch * width ..][0 .. dims.batch * width],
                .bias = schedule.bias,
                .reset_bias = if (dims.cell == .gru and schedule.config.linear_before_reset) schedule.reset_bias else null,
                .peepholes = if (schedule.data.peepholes) |p| p[direction * 3 * dims.hidden ..][0 .. 3 * dims.hidden] else null,
                .h = h,
                .c = c,
                .reset_hidden = schedule.reset_hidden,
                .y = schedule.outBlock(time, direction),
                .lengths = schedule.lengths,
                .time = time,
                .activations = schedule.activations[direction],
                .clip = if (schedule.config.clip) |clip| @floatCast(clip) else null,
                .linear_before_reset = schedule.config.linear_before_reset,
                .input_forget = schedule.config.input_forget,
            };
            try schedule.runStep(&step);
        }
    }

    /// Wb + Rb per gate; GRU with linear_before_reset keeps Rb of the h gate apart.
    fn prepareBias(schedule: *const Schedule) void {
        const direction = schedule.direction;
        const width = schedule.dims.width();
        const hidden = schedule.dims.hidden;
        const b = schedule.data.bias orelse {
            @memset(schedule.bias, 0);
            @memset(schedule.reset_bias, 0);
            return;
        };
        const input_bias = b[direction * 2 * width ..][0..width];
        const recurrent_bias = b[direction * 2 * width + width ..][0..width];
        for (schedule.bias, input_bias, recurrent_bias) |*sum, wb, rb| sum.* = wb + rb;
        if (schedule.dims.cell == .gru and schedule.config.linear_before_reset) {
            @memcpy(schedule.reset_bias, recurrent_bias[2 * hidden ..]);
            @memcpy(schedule.bias[2 * hidden ..], input_bias[2 * hidden ..]);
        }
    }

    fn transposeRecurrent(schedule: *const Schedule) void {
        const direction = schedule.direction;
        const width = schedule.dims.width();
        const hidden = schedule.dims.hidden;
        const r = schedule.data.r[direction * width * hidden ..][0 .. width * hidden];
        // In 16 × 16 tiles, so that the strided writes stay within a few cache lines.
        const tile = 16;
        var row_begin: usize = 0;
        while (row_begin < width) : (row_begin += tile) {
            var column_begin: usize = 0;
            while (column_begin < hidden) : (column_begin += tile) {
                for (row_begin..@min(row_begin + tile, width)) |row| {
                    for (column_begin..@min(column_begin + tile, hidden)) |column| {
                        schedule.recurrent_transposed[column * width + row] = r[row * hidden + column];
                    }
                }
            }
        }
    }

    fn runStep(schedule: *const Schedule, step: *const kernels.Step) Error!void {
        const dims = schedule.dims;
        const width = dims.width();
        const r_transposed = schedule.recurrent_transposed;
        const two_gemms = dims.cell == .gru and !schedule.config.linear_before_reset;
        const columns = if (two_gemms) 2 * dims.hidden else width;
        try linalg.matmulInto(false, false, dims.batch, columns, dims.hidden, step.h, dims.hidden, r_transposed, width, schedule.gates, width);
        switch (dims.cell) {
            .lstm => try cells(step, kernels.lstm),
            .rnn => try cells(step, kernels.rnn),
            .gru => if (two_gemms) {
                try cells(step, kernels.gruGates);
                const r_h = r_transposed[2 * dims.hidden ..];
                try linalg.matmulInto(false, false, dims.batch, dims.hidden, dims.hidden, schedule.reset_hidden, dims.hidden, r_h, width, schedule.gates[2 * dims.hidden ..], width);
                try cells(step, kernels.gruOutput);
            } else {
                try cells(step, kernels.gru);
            },
        }
    }
};

/// Runs each direction's recurrence. Steps too short to split over threads
/// (parallel.recurrent_step_flops_min) run in one region: the two directions of a
/// bidirectional layer side by side, each step's GEMMs and cells serially (a nested region
/// runs serially). Longer steps run one direction after the other, each step split.
fn recur(schedules: []const Schedule) Error!void {
    std.debug.assert(schedules.len == 1 or schedules.len == 2);
    const dims = schedules[0].dims;
    const step_flops = 2 * dims.batch * dims.width() * dims.hidden;
    if (step_flops >= parallel.recurrent_step_flops_min) {
        for (schedules) |*schedule| try schedule.run();
        return;
    }
    const Context = struct {
        schedules: []const Schedule,
        fn body(context: *const @This(), begin: usize, end: usize) Error!void {
            for (context.schedules[begin..end]) |*schedule| try schedule.run();
        }
    };
    const context: Context = .{ .schedules = schedules };
    try intra_op.parallelForTyped(0, schedules.len, 1, &context, Context.body);
}

/// Runs a cell kernel over every (batch row, hidden unit) item, split over the pool.
fn cells(step: *const kernels.Step, comptime kernel: fn (*const kernels.Step, usize, usize) void) Error!void {
    const Context = struct {
        step: *const kernels.Step,
        fn body(context: *const @This(), begin: usize, end: usize) Error!void {
            kernel(context.step, begin, end);
        }
    };
    const items = step.y.len;
    const context: Context = .{ .step = step };
    try intra_op.parallelForTyped(0, items, parallel.grain(.transcendental, step.cell.gates()), &context, Context.body);
}

// ---------------------------------------------------------------------------------------
// Tests: every cell and direction against the scalar reference (kernels/recurrent.zig).

const Case = struct {
    cell: Cell,
    direction: Direction,
    seq: usize,
    batch: usize,
    hidden: usize,
    input: usize = 3,
    with_bias: bool = true,
    with_lengths: bool = false,
    with_initial: bool = false,
    with_peepholes: bool = false,
    linear_before_reset: bool = false,
    clip: ?f64 = null,
    activations: []const i64 = &.{},
    activation_alpha: []const f64 = &.{},
};

fn randomTensor(random: std.Random, shape: []const usize) !*Tensor {
    const t = try tensor.createUninit(.float32, shape);
    for (t.f32Slice()) |*v| v.* = random.float(f32) * 2 - 1;
    return t;
}

/// Runs `case` natively and through the reference, and compares Y, Y_h and Y_c.
fn expectMatchesReference(case: Case, random: std.Random) !void {
    const directions: usize = if (case.direction == .bidirectional) 2 else 1;
    const width = case.cell.gates() * case.hidden;
    const x = try randomTensor(random, &.{ case.seq, case.batch, case.input });
    defer x.release();
    const w = try randomTensor(random, &.{ directions, width, case.input });
    defer w.release();
    const r = try randomTensor(random, &.{ directions, width, case.hidden });
    defer r.release();
    const b = try randomTensor(random, &.{ directions, 2 * width });
    defer b.release();
    const h0 = try randomTensor(random, &.{ directions, case.batch, case.hidden });
    defer h0.release();
    const c0 = try randomTensor(random, &.{ directions, case.batch, case.hidden });
    defer c0.release();
    const p = try randomTensor(random, &.{ directions, 3 * case.hidden });
    defer p.release();
    const lengths = try tensor.createUninit(.int32, &.{case.batch});
    defer lengths.release();
    for (lengths.i32Slice(), 0..) |*l, row| l.* = @intCast((case.seq * (row + 1) + 1) / (case.batch + 1));
    var lengths64: [8]i64 = undefined;
    for (lengths.i32Slice(), 0..) |l, row| lengths64[row] = l;
    const lstm_state = case.cell == .lstm and case.with_initial;
    const config: Config = .{
        .cell = case.cell,
        .direction = case.direction,
        .hidden_size = @intCast(case.hidden),
        .clip = case.clip,
        .activations = case.activations,
        .activation_alpha = case.activation_alpha,
        .linear_before_reset = case.linear_before_reset,
    };
    const out = try recurrent(config, .{
        .x = x,
        .w = w,
        .r = r,
        .bias = if (case.with_bias) b else null,
        .sequence_lens = if (case.with_lengths) lengths else null,
        .initial_h = if (case.with_initial) h0 else null,
        .initial_c = if (lstm_state) c0 else null,
        .peepholes = if (case.with_peepholes) p else null,
    });
    defer out.release();
    const activations = try resolveActivations(config, .{ .cell = case.cell, .directions = directions, .seq = case.seq, .batch = case.batch, .input = case.input, .hidden = case.hidden });
    var flat: [6]Activation = undefined;
    const per_direction = case.cell.activations();
    for (0..directions) |d| @memcpy(flat[d * per_direction ..][0..per_direction], activations[d][0..per_direction]);
    const reference: kernels.Reference = .{
        .cell = case.cell,
        .direction = case.direction,
        .seq = case.seq,
        .batch = case.batch,
        .input_size = case.input,
        .hidden = case.hidden,
        .x = x.f32Slice(),
        .w = w.f32Slice(),
        .r = r.f32Slice(),
        .b = if (case.with_bias) b.f32Slice() else null,
        .lengths = if (case.with_lengths) lengths64[0..case.batch] else null,
        .initial_h = if (case.with_initial) h0.f32Slice() else null,
        .initial_c = if (lstm_state) c0.f32Slice() else null,
        .peepholes = if (case.with_peepholes) p.f32Slice() else null,
        .activations = flat[0 .. directions * per_direction],
        .clip = if (case.clip) |clip| @floatCast(clip) else null,
        .linear_before_reset = case.linear_before_reset,
    };
    const block = directions * case.batch * case.hidden;
    var expected: [(7 + 2) * 2 * 3 * 5]f64 = undefined;
    std.debug.assert((case.seq + 2) * block <= expected.len);
    reference.run(expected[0 .. case.seq * block], expected[case.seq * block ..][0..block], expected[(case.seq + 1) * block ..][0..block]);
    try std.testing.expectEqualSlices(usize, &.{ case.seq + case.cell.states(), directions, case.batch, case.hidden }, out.dims());
    for (out.f32Slice(), expected[0..out.numel()], 0..) |got, want, i| {
        if (@abs(got - want) > 1e-4 * @max(1, @abs(want))) {
            std.debug.print("{any}: element {d} is {d}, expected {d}\n", .{ case, i, got, want });
            return error.TestExpectedApproxEqAbs;
        }
    }
}

test "lstm, gru and rnn match the reference in every direction, with and without states and lengths, at 1 and 4 threads" {
    settings.resetForTesting();
    defer settings.resetForTesting();
    var prng = std.Random.DefaultPrng.init(59);
    for ([_]i64{ 1, 4 }) |threads| {
        try settings.setNumThreads(threads);
        for ([_]Cell{ .lstm, .gru, .rnn }) |cell| for ([_]Direction{ .forward, .reverse, .bidirectional }) |direction| {
            for ([_]usize{ 1, 7 }) |seq| for ([_]usize{ 1, 3 }) |batch| for ([_]usize{ 1, 5 }) |hidden| {
                for ([_]bool{ false, true }) |with_initial| for ([_]bool{ false, true }) |with_lengths| {
                    try expectMatchesReference(.{
                        .cell = cell,
                        .direction = direction,
                        .seq = seq,
                        .batch = batch,
                        .hidden = hidden,
                        .with_initial = with_initial,
                        .with_lengths = with_lengths,
                        .with_bias = with_initial or hidden == 5,
                        .linear_before_reset = with_lengths and cell == .gru,
                    }, prng.random());
                };
            };
        };
    }
}

test "recurrent options: gru reset placement, peepholes, clip and other activations match the reference" {
    var prng = std.Random.DefaultPrng.init(60);
    for ([_]Direction{ .forward, .reverse, .bidirectional }) |direction| {
        const base: Case = .{ .cell = .gru, .direction = direction, .seq = 7, .batch = 3, .hidden = 5, .with_lengths = true, .with_initial = true };
        for ([_]bool{ false, true }) |linear_before_reset| {
            var case = base;
            case.linear_before_reset = linear_before_reset;
            try expectMatchesReference(case, prng.random());
        }
        var peephole = base;
        peephole.cell = .lstm;
        peephole.with_peepholes = true;
        try expectMatchesReference(peephole, prng.random());
        peephole.clip = 0.3;
        try expectMatchesReference(peephole, prng.random());
        // Relu, LeakyRelu(0.2), Softsign per direction; then every other kind once.
        const lstm_codes = [_]i64{ 2, 3, 8, 6, 7, 9 };
        const lstm_alpha = [_]f64{ 0, 0.2, 0, 0.3, 0.7, 0 };
        const count: usize = if (direction == .bidirectional) 6 else 3;
        var custom = peephole;
        custom.clip = null;
        custom.activations = lstm_codes[0..count];
        custom.activation_alpha = lstm_alpha[0..count];
        try expectMatchesReference(custom, prng.random());
        const rnn_codes = [_]i64{ 4, 5 };
        const rnn_alpha = [_]f64{ 0.1, 0.8 };
        var rnn_case = base;
        rnn_case.cell = .rnn;
        rnn_case.activations = rnn_codes[0 .. count / 3];
        rnn_case.activation_alpha = rnn_alpha[0 .. count / 3];
        try expectMatchesReference(rnn_case, prng.random());
        const gru_codes = [_]i64{ 10, 2, 0, 1 };
        var gru_case = base;
        gru_case.activations = gru_codes[0 .. 2 * count / 3];
        try expectMatchesReference(gru_case, prng.random());
    }
}

test "a recurrent step split over threads gives the one-thread result up to rounding" {
    settings.resetForTesting();
    defer settings.resetForTesting();
    var prng = std.Random.DefaultPrng.init(61);
    const random = prng.random();
    // 3 rows of 700 units: 2100 items, more than one chunk for LSTM and GRU, with chunks
    // ending mid-row; the GEMMs are split into tiles.
    const x = try randomTensor(random, &.{ 3, 3, 4 });
    defer x.release();
    for ([_]Cell{ .lstm, .gru, .rnn }) |cell| for ([_]bool{ false, true }) |linear_before_reset| {
        if (linear_before_reset and cell != .gru) continue;
        const width = cell.gates() * 700;
        const w = try randomTensor(random, &.{ 2, width, 4 });
        defer w.release();
        const r = try randomTensor(random, &.{ 2, width, 700 });
        defer r.release();
        for (r.f32Slice()) |*v| v.* *= 0.05;
        var results: [2]*Tensor = undefined;
        for ([_]i64{ 1, 4 }, 0..) |threads, i| {
            try settings.setNumThreads(threads);
            results[i] = try recurrent(.{ .cell = cell, .direction = .bidirectional, .linear_before_reset = linear_before_reset }, .{ .x = x, .w = w, .r = r });
        }
        defer for (results) |t| t.release();
        // The GEMM's tiles may sum in another order on more threads: equal up to rounding.
        for (results[0].f32Slice(), results[1].f32Slice()) |one, four| try std.testing.expectApproxEqAbs(one, four, 1e-5);
    };
}

test "recurrent refuses bad shapes, lengths and options with typed errors" {
    var prng = std.Random.DefaultPrng.init(62);
    const random = prng.random();
    const x = try randomTensor(random, &.{ 4, 2, 3 });
    defer x.release();
    const w = try randomTensor(random, &.{ 1, 8, 3 });
    defer w.release();
    const r = try randomTensor(random, &.{ 1, 8, 2 });
    defer r.release();
    const lstm: Config = .{ .cell = .lstm };
    const ok = try recurrent(lstm, .{ .x = x, .w = w, .r = r });
    ok.release();
    // W's gate rows, R's rank, X's rank, W for two directions, hidden_size.
    try std.testing.expectError(error.ShapeMismatch, recurrent(.{ .cell = .gru }, .{ .x = x, .w = w, .r = r }));
    try std.testing.expectError(error.ShapeMismatch, recurrent(lstm, .{ .x = x, .w = w, .r = w }));
    try std.testing.expectError(error.ShapeMismatch, recurrent(lstm, .{ .x = r, .w = w, .r = r }));
    try std.testing.expectError(error.ShapeMismatch, recurrent(.{ .cell = .lstm, .direction = .bidirectional }, .{ .x = x, .w = w, .r = r }));
    try std.testing.expectError(error.ShapeMismatch, recurrent(.{ .cell = .lstm, .hidden_size = 3 }, .{ .x = x, .w = w, .r = r }));
    const r3 = try tensor.createZeroed(.float32, &.{ 1, 8 });
    defer r3.release();
    try std.testing.expectError(error.ShapeMismatch, recurrent(lstm, .{ .x = x, .w = w, .r = r3 }));
    // B and initial_h of the wrong shape, P for GRU, linear_before_reset for LSTM.
    try std.testing.expectError(error.ShapeMismatch, recurrent(lstm, .{ .x = x, .w = w, .r = r, .bias = r3 }));
    try std.testing.expectError(error.ShapeMismatch, recurrent(lstm, .{ .x = x, .w = w, .r = r, .initial_h = x }));
    try std.testing.expectError(error.InvalidArgument, recurrent(.{ .cell = .rnn }, .{ .x = x, .w = w, .r = r, .peepholes = r3 }));
    try std.testing.expectError(error.InvalidArgument, recurrent(.{ .cell = .lstm, .linear_before_reset = true }, .{ .x = x, .w = w, .r = r }));
    // sequence_lens: out of range either side, float, the wrong length.
    const lengths = try tensor.createUninit(.int64, &.{2});
    defer lengths.release();
    for ([_][2]i64{ .{ 1, 5 }, .{ -1, 2 } }) |values| {
        @memcpy(lengths.i64Slice(), &values);
        try std.testing.expectError(error.IndexOutOfRange, recurrent(lstm, .{ .x = x, .w = w, .r = r, .sequence_lens = lengths }));
    }
    try std.testing.expectError(error.DTypeMismatch, recurrent(lstm, .{ .x = x, .w = w, .r = r, .sequence_lens = r3 }));
    const wrong_batch = try tensor.createZeroed(.int32, &.{3});
    defer wrong_batch.release();
    try std.testing.expectError(error.ShapeMismatch, recurrent(lstm, .{ .x = x, .w = w, .r = r, .sequence_lens = wrong_batch }));
    // Activations: a wrong count, an unknown code, alphas that do not pair up; clip ≤ 0.
    try std.testing.expectError(error.InvalidArgument, recurrent(.{ .cell = .lstm, .activations = &.{ 0, 1 } }, .{ .x = x, .w = w, .r = r }));
    try std.testing.expectError(error.InvalidArgument, recurrent(.{ .cell = .lstm, .activations = &.{ 0, 1, 11 } }, .{ .x = x, .w = w, .r = r }));
    try std.testing.expectError(error.InvalidArgument, recurrent(.{ .cell = .lstm, .activations = &.{ 0, 1, 1 }, .activation_alpha = &.{1} }, .{ .x = x, .w = w, .r = r }));
    try std.testing.expectError(error.InvalidArgument, recurrent(.{ .cell = .lstm, .clip = 0 }, .{ .x = x, .w = w, .r = r }));
    // Empty batch and empty sequence: no steps, the states are the initial ones.
    const empty = try tensor.createZeroed(.float32, &.{ 0, 2, 3 });
    defer empty.release();
    const h0 = try randomTensor(random, &.{ 1, 2, 2 });
    defer h0.release();
    const states = try recurrent(lstm, .{ .x = empty, .w = w, .r = r, .initial_h = h0 });
    defer states.release();
    try std.testing.expectEqualSlices(usize, &.{ 2, 1, 2, 2 }, states.dims());
    try std.testing.expectEqualSlices(f32, h0.f32Slice(), states.f32Slice()[0..4]);
}
