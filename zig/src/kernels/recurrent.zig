//! Recurrent cells (ONNX LSTM, GRU and RNN): the gate arithmetic of one time step over a
//! range of (batch row, hidden unit) items, the activations ONNX allows in a cell, and a
//! scalar reference of whole sequences for the tests. The GEMMs (the input projections of
//! all steps at once, H·Rᵀ per step) and the split over the intra-op pool live in
//! ops/recurrent.zig; these functions know no pool.
//!
//! Gate order is ONNX's: LSTM i, o, f, c (peepholes i, o, f); GRU z, r, h; RNN one gate.
const std = @import("std");
const elementwise = @import("elementwise.zig");

pub const Cell = enum(u8) {
    lstm,
    gru,
    rnn,

    /// Gates per hidden unit: the row count of W and R is gates × hidden.
    pub fn gates(cell: Cell) usize {
        return switch (cell) {
            .lstm => 4,
            .gru => 3,
            .rnn => 1,
        };
    }

    /// Activation functions per direction (ONNX's f, g, h).
    pub fn activations(cell: Cell) usize {
        return switch (cell) {
            .lstm => 3,
            .gru => 2,
            .rnn => 1,
        };
    }

    /// State tensors after the sequence: Y_h, and Y_c for LSTM.
    pub fn states(cell: Cell) usize {
        return if (cell == .lstm) 2 else 1;
    }

    /// ONNX's default activations: f = Sigmoid, g = h = Tanh (RNN: Tanh).
    pub fn defaultActivation(cell: Cell, index: usize) Activation {
        std.debug.assert(index < cell.activations());
        const kind: Activation.Kind = if (cell == .rnn or index > 0) .tanh else .sigmoid;
        return .{ .kind = kind };
    }
};

pub const Direction = enum(u8) { forward, reverse, bidirectional };

/// An activation of a recurrent cell, with ONNX's alpha and beta (unused by most kinds).
pub const Activation = struct {
    /// Codes are the schema's (ops.zig `Recurrent.activations`): append only.
    pub const Kind = enum(u8) { sigmoid, tanh, relu, leaky_relu, thresholded_relu, scaled_tanh, hard_sigmoid, elu, softsign, softplus, affine };

    kind: Kind,
    alpha: f32 = 0,
    beta: f32 = 0,

    /// The activation with ONNX's default alpha and beta for its kind.
    pub fn withDefaults(kind: Kind) Activation {
        return switch (kind) {
            .leaky_relu => .{ .kind = kind, .alpha = 0.01 },
            .thresholded_relu, .elu, .affine => .{ .kind = kind, .alpha = 1 },
            .scaled_tanh => .{ .kind = kind, .alpha = 1, .beta = 1 },
            .hard_sigmoid => .{ .kind = kind, .alpha = 0.2, .beta = 0.5 },
            .sigmoid, .tanh, .relu, .softsign, .softplus => .{ .kind = kind },
        };
    }

    /// Applies the activation to `values` in place.
    pub fn apply(activation: Activation, values: []f32) void {
        const params: elementwise.UnaryParams = .{ .alpha = activation.alpha, .beta = activation.beta };
        switch (activation.kind) {
            .sigmoid => elementwise.unary(.sigmoid, params, values, values),
            .tanh => elementwise.unary(.tanh, params, values, values),
            .relu => elementwise.unary(.relu, params, values, values),
            .leaky_relu => elementwise.unary(.leaky_relu, params, values, values),
            .hard_sigmoid => elementwise.unary(.hard_sigmoid, params, values, values),
            .elu => elementwise.unary(.elu, params, values, values),
            .scaled_tanh => {
                for (values) |*v| v.* *= activation.beta;
                elementwise.unary(.tanh, params, values, values);
                for (values) |*v| v.* *= activation.alpha;
            },
            .thresholded_relu, .softsign, .softplus, .affine => for (values) |*v| {
                v.* = @floatCast(activation.reference(v.*));
            },
        }
    }

    /// The activation of one value, in f64: the reference `apply` is tested against.
    pub fn reference(activation: Activation, x: f64) f64 {
        const alpha: f64 = activation.alpha;
        const beta: f64 = activation.beta;
        return switch (activation.kind) {
            .sigmoid => 1 / (1 + @exp(-x)),
            .tanh => std.math.tanh(x),
            .relu => @max(x, 0),
            .leaky_relu => if (x < 0) alpha * x else x,
            .thresholded_relu => if (x > alpha) x else 0,
            .scaled_tanh => alpha * std.math.tanh(beta * x),
            .hard_sigmoid => @min(@max(alpha * x + beta, 0), 1),
            .elu => if (x > 0) x else alpha * (@exp(x) - 1),
            .softsign => x / (1 + @abs(x)),
            // log(1 + e^x) without overflow for large x.
            .softplus => if (x > 30) x else std.math.log1p(@exp(x)),
            .affine => alpha * x + beta,
        };
    }
};

/// One time step of one direction. Rows of `gates` hold H·Rᵀ on entry (for GRU without
/// linear_before_reset, the h columns are filled between `gruGates` and `gruOutput`) and the
/// activated gates after; `h`, `c` are the states, updated in place (an item reads and
/// writes only its own unit, so the ranges of a parallel split never overlap).
pub const Step = struct {
    cell: Cell,
    hidden: usize,
    /// [batch, gates × hidden]: H·Rᵀ, then activated gates.
    gates: []f32,
    /// [batch, gates × hidden]: X·Wᵀ of this time step.
    projected: []const f32,
    /// [gates × hidden]: Wb + Rb (for GRU with linear_before_reset, the h part is Wb only).
    bias: []const f32,
    /// GRU with linear_before_reset: Rb of the h gate, added inside the reset product.
    reset_bias: ?[]const f32 = null,
    /// [3 × hidden]: LSTM peepholes (i, o, f).
    peepholes: ?[]const f32 = null,
    /// [batch, hidden]: the hidden state.
    h: []f32,
    /// [batch, hidden]: the LSTM cell state (empty for GRU and RNN).
    c: []f32 = &.{},
    /// [batch, hidden]: GRU without linear_before_reset: r ⊙ H, the left operand of the
    /// second GEMM.
    reset_hidden: []f32 = &.{},
    /// [batch, hidden]: this step's rows of Y.
    y: []f32,
    /// Sequence lengths per batch row (null: every row runs all steps), and this step's time.
    lengths: ?[]const i64 = null,
    time: usize,
    activations: [3]Activation,
    clip: ?f32 = null,
    linear_before_reset: bool = false,
    input_forget: bool = false,

    fn active(step: *const Step, row: usize) bool {
        const lengths = step.lengths orelse return true;
        return @as(i64, @intCast(step.time)) < lengths[row];
    }

    /// The pre-activation of gate `gate` for units [low, high) of `row`: H·Rᵀ + X·Wᵀ + bias.
    fn preactivate(step: *const Step, row: usize, gate: usize, low: usize, high: usize) []f32 {
        const width = step.cell.gates() * step.hidden;
        const begin = row * width + gate * step.hidden;
        const values = step.gates[begin + low .. begin + high];
        const projected = step.projected[begin + low .. begin + high];
        const bias = step.bias[gate * step.hidden + low .. gate * step.hidden + high];
        for (values, projected, bias) |*v, p, b| v.* += p + b;
        return values;
    }

    fn clipped(step: *const Step, values: []f32) void {
        const limit = step.clip orelse return;
        for (values) |*v| v.* = std.math.clamp(v.*, -limit, limit);
    }
};

/// Runs `segment(step, row, low, high)` on the runs of items [begin, end) (item = row ×
/// hidden + unit) that lie in one row; rows past their sequence length get zero outputs.
fn forSegments(step: *const Step, begin: usize, end: usize, comptime segment: fn (*const Step, usize, usize, usize) void) void {
    std.debug.assert(begin <= end);
    std.debug.assert(end * step.cell.gates() <= step.gates.len);
    var item = begin;
    while (item < end) {
        const row = item / step.hidden;
        const low = item % step.hidden;
        const high = @min(step.hidden, low + (end - item));
        item += high - low;
        if (step.active(row)) {
            segment(step, row, low, high);
        } else {
            @memset(step.y[row * step.hidden + low .. row * step.hidden + high], 0);
        }
    }
}

/// LSTM: i, f, c̃ from the previous states; C = f ⊙ C' + i ⊙ c̃; o (peeping at the new C);
/// H = o ⊙ h(C).
pub fn lstm(step: *const Step, begin: usize, end: usize) void {
    std.debug.assert(step.cell == .lstm);
    forSegments(step, begin, end, lstmSegment);
}

fn lstmSegment(step: *const Step, row: usize, low: usize, high: usize) void {
    const state = row * step.hidden;
    const c = step.c[state + low .. state + high];
    const input = step.preactivate(row, 0, low, high);
    const output = step.preactivate(row, 1, low, high);
    const forget = step.preactivate(row, 2, low, high);
    const candidate = step.preactivate(row, 3, low, high);
    if (step.peepholes) |p| {
        for (input, p[low..high], c) |*v, weight, cell| v.* += weight * cell;
        for (forget, p[2 * step.hidden + low .. 2 * step.hidden + high], c) |*v, weight, cell| v.* += weight * cell;
    }
    for ([_][]f32{ input, forget, candidate }) |values| step.clipped(values);
    step.activations[0].apply(input);
    if (step.input_forget) {
        for (forget, input) |*f, i| f.* = 1 - i;
    } else {
        step.activations[0].apply(forget);
    }
    step.activations[1].apply(candidate);
    for (c, forget, input, candidate) |*cell, f, i, g| cell.* = f * cell.* + i * g;
    if (step.peepholes) |p| {
        for (output, p[step.hidden + low .. step.hidden + high], c) |*v, weight, cell| v.* += weight * cell;
    }
    step.clipped(output);
    step.activations[0].apply(output);
    // candidate is spent: it holds h(C), then the new H.
    @memcpy(candidate, c);
    step.activations[2].apply(candidate);
    for (candidate, output) |*h, o| h.* *= o;
    @memcpy(step.h[state + low .. state + high], candidate);
    @memcpy(step.y[state + low .. state + high], candidate);
}

/// GRU, first half: z and r; without linear_before_reset also r ⊙ H into `reset_hidden`,
/// which the caller multiplies by R_hᵀ into the h columns of `gates` before `gruOutput`.
/// With linear_before_reset the h columns already hold H·R_hᵀ and the caller may run
/// `gruOutput` on the same range right after.
pub fn gruGates(step: *const Step, begin: usize, end: usize) void {
    std.debug.assert(step.cell == .gru);
    forSegments(step, begin, end, gruGatesSegment);
}

fn gruGatesSegment(step: *const Step, row: usize, low: usize, high: usize) void {
    const update = step.preactivate(row, 0, low, high);
    const reset = step.preactivate(row, 1, low, high);
    step.clipped(update);
    step.clipped(reset);
    step.activations[0].apply(update);
    step.activations[0].apply(reset);
    if (!step.linear_before_reset) {
        const state = row * step.hidden;
        for (step.reset_hidden[state + low .. state + high], reset, step.h[state + low .. state + high]) |*out, r, h| out.* = r * h;
    }
}

/// GRU, second half: h̃ = g(X·W_hᵀ + r ⊙ (H·R_hᵀ + Rb_h) + Wb_h) with linear_before_reset,
/// else g(X·W_hᵀ + (r ⊙ H)·R_hᵀ + Rb_h + Wb_h); H = (1 − z) ⊙ h̃ + z ⊙ H.
pub fn gruOutput(step: *const Step, begin: usize, end: usize) void {
    std.debug.assert(step.cell == .gru);
    forSegments(step, begin, end, gruOutputSegment);
}

fn gruOutputSegment(step: *const Step, row: usize, low: usize, high: usize) void {
    const width = 3 * step.hidden;
    const update = step.gates[row * width + low .. row * width + high];
    const reset = step.gates[row * width + step.hidden + low .. row * width + step.hidden + high];
    const candidate = step.gates[row * width + 2 * step.hidden + low .. row * width + 2 * step.hidden + high];
    if (step.reset_bias) |reset_bias| {
        for (candidate, reset, reset_bias[low..high]) |*v, r, b| v.* = r * (v.* + b);
    }
    _ = step.preactivate(row, 2, low, high);
    step.clipped(candidate);
    step.activations[1].apply(candidate);
    const state = row * step.hidden;
    const h = step.h[state + low .. state + high];
    for (h, update, candidate) |*hidden, z, g| hidden.* = (1 - z) * g + z * hidden.*;
    @memcpy(step.y[state + low .. state + high], h);
}

/// GRU with linear_before_reset: both halves in one pass (the h columns of `gates` already
/// hold H·R_hᵀ).
pub fn gru(step: *const Step, begin: usize, end: usize) void {
    std.debug.assert(step.linear_before_reset);
    gruGates(step, begin, end);
    gruOutput(step, begin, end);
}

/// RNN: H = f(X·Wᵀ + H·Rᵀ + Wb + Rb).
pub fn rnn(step: *const Step, begin: usize, end: usize) void {
    std.debug.assert(step.cell == .rnn);
    forSegments(step, begin, end, rnnSegment);
}

fn rnnSegment(step: *const Step, row: usize, low: usize, high: usize) void {
    const values = step.preactivate(row, 0, low, high);
    step.clipped(values);
    step.activations[0].apply(values);
    const state = row * step.hidden;
    @memcpy(step.h[state + low .. state + high], values);
    @memcpy(step.y[state + low .. state + high], values);
}

// ---------------------------------------------------------------------------------------
// The reference: ONNX's equations, one scalar at a time, in f64.

/// A whole recurrent layer, as ONNX defines it (layout 0), for the tests.
pub const Reference = struct {
    cell: Cell,
    direction: Direction,
    seq: usize,
    batch: usize,
    input_size: usize,
    hidden: usize,
    x: []const f32,
    w: []const f32,
    r: []const f32,
    b: ?[]const f32 = null,
    lengths: ?[]const i64 = null,
    initial_h: ?[]const f32 = null,
    initial_c: ?[]const f32 = null,
    peepholes: ?[]const f32 = null,
    /// Per direction, `cell.activations()` each.
    activations: []const Activation,
    clip: ?f32 = null,
    linear_before_reset: bool = false,

    pub fn directions(reference: Reference) usize {
        return if (reference.direction == .bidirectional) 2 else 1;
    }

    /// Writes Y [seq, directions, batch, hidden], Y_h and Y_c [directions, batch, hidden].
    pub fn run(reference: Reference, y: []f64, y_h: []f64, y_c: []f64) void {
        const hidden = reference.hidden;
        @memset(y, 0);
        for (0..reference.directions()) |d| for (0..reference.batch) |b| {
            const state = (d * reference.batch + b) * hidden;
            for (0..hidden) |j| {
                y_h[state + j] = if (reference.initial_h) |h| h[state + j] else 0;
                y_c[state + j] = if (reference.initial_c) |c| c[state + j] else 0;
            }
            const length: usize = if (reference.lengths) |l| @intCast(l[b]) else reference.seq;
            const reverse = reference.direction == .reverse or d == 1;
            for (0..length) |s| {
                const t = if (reverse) length - 1 - s else s;
                reference.step(d, b, t, y_h[state..][0..hidden], y_c[state..][0..hidden]);
                for (0..hidden) |j| y[((t * reference.directions() + d) * reference.batch + b) * hidden + j] = y_h[state + j];
            }
        };
    }

    /// x_t · W_gᵀ (+ Wb) for unit j of gate g, or h · R_gᵀ (+ Rb).
    fn dot(reference: Reference, d: usize, g: usize, j: usize, vector: []const f64, matrix: []const f32, bias_offset: usize) f64 {
        const depth = vector.len;
        const rows = reference.cell.gates() * reference.hidden;
        const row = d * rows + g * reference.hidden + j;
        var sum: f64 = 0;
        for (0..depth) |k| sum += vector[k] * matrix[row * depth + k];
        if (reference.b) |b| sum += b[d * 2 * rows + bias_offset + g * reference.hidden + j];
        return sum;
    }

    fn act(reference: Reference, d: usize, index: usize, x: f64) f64 {
        const clipped = if (reference.clip) |limit| std.math.clamp(x, -limit, limit) else x;
        return reference.activations[d * reference.cell.activations() + index].reference(clipped);
    }

    /// x_t · W_gᵀ + h · R_gᵀ + Wb_g + Rb_g for unit j of gate g.
    fn gate(reference: Reference, d: usize, g: usize, j: usize, xs: []const f64, hs: []const f64) f64 {
        const rows = reference.cell.gates() * reference.hidden;
        return reference.dot(d, g, j, xs, reference.w, 0) + reference.dot(d, g, j, hs, reference.r, rows);
    }

    fn step(reference: Reference, d: usize, b: usize, t: usize, h: []f64, c: []f64) void {
        const hidden = reference.hidden;
        var x: [16]f64 = undefined;
        var previous: [16]f64 = undefined;
        var next: [16]f64 = undefined;
        std.debug.assert(reference.input_size <= x.len and hidden <= previous.len);
        for (0..reference.input_size) |k| x[k] = reference.x[(t * reference.batch + b) * reference.input_size + k];
        @memcpy(previous[0..hidden], h);
        const xs = x[0..reference.input_size];
        const hs = previous[0..hidden];
        switch (reference.cell) {
            .rnn => for (0..hidden) |j| {
                next[j] = reference.act(d, 0, reference.gate(d, 0, j, xs, hs));
            },
            .lstm => reference.lstmStep(d, xs, hs, c, next[0..hidden]),
            .gru => reference.gruStep(d, xs, hs, next[0..hidden]),
        }
        @memcpy(h, next[0..hidden]);
    }

    /// Peephole weight of gate `g` (0 = i, 1 = o, 2 = f) times the cell state.
    fn peep(reference: Reference, d: usize, g: usize, j: usize, cell: f64) f64 {
        const p = reference.peepholes orelse return 0;
        return p[(d * 3 + g) * reference.hidden + j] * cell;
    }

    fn lstmStep(reference: Reference, d: usize, xs: []const f64, hs: []const f64, c: []f64, next: []f64) void {
        for (0..reference.hidden) |j| {
            const i = reference.act(d, 0, reference.gate(d, 0, j, xs, hs) + reference.peep(d, 0, j, c[j]));
            const f = reference.act(d, 0, reference.gate(d, 2, j, xs, hs) + reference.peep(d, 2, j, c[j]));
            const g = reference.act(d, 1, reference.gate(d, 3, j, xs, hs));
            c[j] = f * c[j] + i * g;
            const o = reference.act(d, 0, reference.gate(d, 1, j, xs, hs) + reference.peep(d, 1, j, c[j]));
            next[j] = o * reference.activations[d * 3 + 2].reference(c[j]);
        }
    }

    /// GRU needs every r before any h̃ (without linear_before_reset, h̃_j reads (r ⊙ H)·R_hᵀ).
    fn gruStep(reference: Reference, d: usize, xs: []const f64, hs: []const f64, next: []f64) void {
        const hidden = reference.hidden;
        const rows = 3 * hidden;
        var reset_hidden: [16]f64 = undefined;
        var z: [16]f64 = undefined;
        var r: [16]f64 = undefined;
        for (0..hidden) |j| {
            z[j] = reference.act(d, 0, reference.gate(d, 0, j, xs, hs));
            r[j] = reference.act(d, 0, reference.gate(d, 1, j, xs, hs));
            reset_hidden[j] = r[j] * hs[j];
        }
        for (0..hidden) |j| {
            const recurrent = if (reference.linear_before_reset)
                r[j] * reference.dot(d, 2, j, hs, reference.r, rows)
            else
                reference.dot(d, 2, j, reset_hidden[0..hidden], reference.r, rows);
            const g = reference.act(d, 1, reference.dot(d, 2, j, xs, reference.w, 0) + recurrent);
            next[j] = (1 - z[j]) * g + z[j] * hs[j];
        }
    }
};
