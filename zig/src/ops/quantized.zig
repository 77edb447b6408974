//! Quantized ops (ONNX QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear and the
//! integer MatMul/Conv that import builds from QLinearMatMul, MatMulInteger, QLinearConv,
//! ConvInteger and QDQ pairs; lib/onnx/quantized.ts).
//!
//! Quantized activations ride as float32 tensors holding integer values (u8 0…255, s8
//! -128…127 are exact in f32): every existing op that only moves or compares values (reshape,
//! transpose, concat, max pooling, nearest resize, slices) then works on them unchanged, and
//! the integer kernels read float32 either way, since they quantize real activations on the
//! fly. No new dtype was needed: the bytes the kernels multiply live in per-call scratch.
//!
//! `matmul_int8` and `conv2d_int8` share one path: quantize (or gather, for conv: im2col)
//! the rows of A into u8 scratch with their row sums, run the int8 GEMM (kernels/gemm_int8.zig)
//! on tiles of rows × column blocks, and finish each tile in an epilogue that applies the
//! zero-point corrections, per-column scales and bias, and optionally requantizes.
const std = @import("std");
const status = @import("../status.zig");
const tensor = @import("../tensor.zig");
const intra_op = @import("../pool/intra_op.zig");
const storage_cache = @import("../storage_cache.zig");
const parallel = @import("parallel.zig");
const shape_ops = @import("shape.zig");
const kernels = @import("../kernels/gemm_int8.zig");

const Error = status.Error;
const Tensor = tensor.Tensor;

/// Round half to even (ONNX's rounding for quantization) of |v| < 2^22; larger values are
/// integers already (the callers clamp to the quantized range afterwards).
pub fn roundEven(v: f32) f32 {
    const magic: f32 = 0x1.8p23;
    if (!(@abs(v) < 0x1p22)) return v;
    return (v + magic) - magic;
}

/// saturate(round(x / scale) + zero_point) to [qmin, qmax]. NaN saturates to qmin (the
/// clamps take the other operand of a NaN, as the vector code's do).
pub fn quantizeValue(x: f32, scale: f32, zero_point: f32, qmin: f32, qmax: f32) f32 {
    const scaled = @min(@max(x / scale, -0x1p21), 0x1p21);
    return @min(@max(roundEven(scaled) + zero_point, qmin), qmax);
}

const lanes = 16;
const VF = @Vector(lanes, f32);

/// `quantizeValue` on 16 lanes, its constants splatted once (`init`) outside the caller's loop:
/// the epilogue recomputed 1 / scale (a vdivss) and the bound per vector of every row,
/// because its output stores may alias the call's parameters (perf, det_qdq on Zen 5).
/// x / scale is taken as x · (1 / scale) (a division per element made the QDQ passes of det
/// twice as slow), except in lanes within a few ulps of a rounding tie, which are divided
/// again: the result is exactly the spec's (and onnxruntime's).
const Quantizer = struct {
    inverse: VF,
    scale: VF,
    low: VF,
    high: VF,
    tie: VF,
    zero_point: VF,
    qmin: VF,
    qmax: VF,

    fn init(scale: f32, zero_point: f32, qmin: f32, qmax: f32) Quantizer {
        // Past ±bound every value saturates, so the product is clamped there first: then one
        // tolerance covers the 2 ulps by which x · (1 / scale) can miss x / scale, and the tie
        // test reads the rounding's own remainder (5 operations fewer than measuring the
        // distance to the floor's .5).
        const bound = @min(@max(qmax - zero_point, zero_point - qmin) + 1, 0x1p21);
        return .{
            .inverse = @splat(1 / scale),
            .scale = @splat(scale),
            .low = @splat(-bound),
            .high = @splat(bound),
            .tie = @splat(0.5 - bound * 0x1p-20),
            .zero_point = @splat(zero_point),
            .qmin = @splat(qmin),
            .qmax = @splat(qmax),
        };
    }

    inline fn apply(quantizer: *const Quantizer, x: VF) VF {
        const magic: VF = @splat(0x1.8p23);
        const product = clamp(x * quantizer.inverse, quantizer.low, quantizer.high);
        var rounded = (product + magic) - magic;
        const near = @abs(product - rounded) >= quantizer.tie;
        if (@reduce(.Or, near)) {
            const quotient = clamp(x / quantizer.scale, quantizer.low, quantizer.high);
            rounded = @select(f32, near, (quotient + magic) - magic, rounded);
        }
        return clamp(rounded + quantizer.zero_point, quantizer.qmin, quantizer.qmax);
    }
};

/// min(max(x, low), high) with NaN taken to low, as selects (one vmaxps and one vminps):
/// @min/@max keep the non-NaN operand too, but LLVM spends a compare and a blend on each
/// to prove it.
inline fn clamp(x: VF, low: VF, high: VF) VF {
    const above = @select(f32, x > low, x, low);
    return @select(f32, above < high, above, high);
}

/// `quantizeValue` on 16 lanes (tests; loops build their Quantizer once).
fn quantizeVector(x: VF, scale: f32, zero_point: f32, qmin: f32, qmax: f32) VF {
    return Quantizer.init(scale, zero_point, qmin, qmax).apply(x);
}

/// dst = quantize(src) for one scale and zero point.
fn quantizeSlice(src: []const f32, dst: []f32, scale: f32, zero_point: f32, qmin: f32, qmax: f32) void {
    std.debug.assert(src.len == dst.len);
    const quantizer = Quantizer.init(scale, zero_point, qmin, qmax);
    var i: usize = 0;
    while (i + lanes <= src.len) : (i += lanes) {
        dst[i..][0..lanes].* = quantizer.apply(src[i..][0..lanes].*);
    }
    while (i < src.len) : (i += 1) dst[i] = quantizeValue(src[i], scale, zero_point, qmin, qmax);
}

/// dst = dequantize(quantize(src)).
fn roundTripSlice(src: []const f32, dst: []f32, scale: f32, zero_point: f32, qmin: f32, qmax: f32) void {
    std.debug.assert(src.len == dst.len);
    const quantizer = Quantizer.init(scale, zero_point, qmin, qmax);
    var i: usize = 0;
    while (i + lanes <= src.len) : (i += lanes) {
        const q = quantizer.apply(src[i..][0..lanes].*);
        dst[i..][0..lanes].* = (q - quantizer.zero_point) * quantizer.scale;
    }
    while (i < src.len) : (i += 1) dst[i] = (quantizeValue(src[i], scale, zero_point, qmin, qmax) - zero_point) * scale;
}

/// dst = quantize(src) - qmin as bytes (the u8 operand of the int8 GEMM).
fn quantizeBytes(src: []const f32, dst: []u8, scale: f32, zero_point: f32, qmin: f32, qmax: f32) void {
    std.debug.assert(src.len == dst.len);
    const quantizer = Quantizer.init(scale, zero_point, qmin, qmax);
    var i: usize = 0;
    while (i + lanes <= src.len) : (i += lanes) {
        const q = quantizer.apply(src[i..][0..lanes].*) - quantizer.qmin;
        const wide: @Vector(lanes, i32) = @intFromFloat(q);
        dst[i..][0..lanes].* = @as(@Vector(lanes, u8), @intCast(wide));
    }
    while (i < src.len) : (i += 1) dst[i] = @intFromFloat(quantizeValue(src[i], scale, zero_point, qmin, qmax) - qmin);
}

/// quantize(src) - qmin of up to 16 values as u32 lanes (0 past src.len): a short tail
/// takes the vector path too, on a padded copy.
fn quantizeLanes(src: []const f32, quantizer: *const Quantizer) @Vector(lanes, u32) {
    std.debug.assert(src.len <= lanes);
    // Full vectors load straight from src (a copy through the stack stalled the load).
    const values: VF = if (src.len == lanes) src[0..lanes].* else tail: {
        var padded_values: [lanes]f32 = @splat(0);
        for (padded_values[0..src.len], src) |*dst, v| dst.* = v;
        break :tail padded_values;
    };
    const q = quantizer.apply(values) - quantizer.qmin;
    const wide: @Vector(lanes, i32) = @intFromFloat(q);
    return @intCast(wide);
}

/// dst = (src - zero_point) · scale.
fn dequantizeSlice(src: []const f32, dst: []f32, scale: f32, zero_point: f32) void {
    std.debug.assert(src.len == dst.len);
    var i: usize = 0;
    while (i + lanes <= src.len) : (i += lanes) {
        const v: VF = src[i..][0..lanes].*;
        dst[i..][0..lanes].* = (v - @as(VF, @splat(zero_point))) * @as(VF, @splat(scale));
    }
    while (i < src.len) : (i += 1) dst[i] = (src[i] - zero_point) * scale;
}

fn requireFloat(comptime op: []const u8, comptime which: []const u8, t: *const Tensor) Error!void {
    if (t.dtype != .float32) {
        return status.fail(error.DTypeMismatch, op ++ ": " ++ which ++ " must be float32, got {s}", .{t.dtype.name()});
    }
}

/// Values of a scale or zero-point tensor (float32 or int32) as f32.
fn valueAt(t: *const Tensor, index: usize) f32 {
    return switch (t.dtype) {
        .float32 => t.f32Slice()[index],
        .int32 => @floatFromInt(t.i32Slice()[index]),
        .int64 => @floatFromInt(t.i64Slice()[index]),
    };
}

/// Per-axis parameters: `count` scales and zero points checked (scale finite and > 0, zero
/// point an integer in [qmin, qmax]) and copied, once per call, into `scales`/`zeros`.
const Parameters = struct {
    outer: usize,
    channels: usize,
    inner: usize,

    fn of(comptime op: []const u8, x: *const Tensor, scale: *Tensor, zero_point: ?*Tensor, axis: i64, qmin: f32, qmax: f32) Error!Parameters {
        const count = scale.numel();
        if (zero_point) |zp| if (zp.numel() != count) {
            return status.fail(error.ShapeMismatch, op ++ ": {d} scales but {d} zero points; give one zero point per scale", .{ count, zp.numel() });
        };
        if (!scale.isContiguous() or (zero_point != null and !zero_point.?.isContiguous())) {
            return status.fail(error.InvalidArgument, op ++ ": scale and zero point must be contiguous", .{});
        }
        for (0..count) |i| {
            const s = valueAt(scale, i);
            if (!(s > 0) or !std.math.isFinite(s)) {
                return status.fail(error.InvalidArgument, op ++ ": scale {d} is {d}; scales must be finite and greater than 0", .{ i, s });
            }
            if (zero_point) |zp| {
                const z = valueAt(zp, i);
                if (z != @round(z) or z < qmin or z > qmax) {
                    return status.fail(error.InvalidArgument, op ++ ": zero point {d} is {d}, outside the type's range [{d}, {d}]", .{ i, z, qmin, qmax });
                }
            }
        }
        const dims = x.dims();
        if (count == 1) return .{ .outer = 1, .channels = 1, .inner = x.numel() };
        const rank: i64 = @intCast(dims.len);
        if (axis < -rank or axis >= rank) {
            return status.fail(error.InvalidArgument, op ++ ": axis {d} is out of range for a rank-{d} input", .{ axis, rank });
        }
        const dim: usize = @intCast(if (axis < 0) axis + rank else axis);
        if (dims[dim] != count) {
            return status.fail(error.ShapeMismatch, op ++ ": {d} per-channel scales for axis {d} of size {d}; give one scale per index of the axis", .{ count, axis, dims[dim] });
        }
        var outer: usize = 1;
        for (dims[0..dim]) |d| outer *= d;
        var inner: usize = 1;
        for (dims[dim + 1 ..]) |d| inner *= d;
        return .{ .outer = outer, .channels = count, .inner = inner };
    }
};

/// round_trip: dequantize(quantize(x)), a QDQ pair in one pass.
const Direction = enum { quantize, dequantize, round_trip };

fn linear(comptime direction: Direction, x_input: *Tensor, scale: *Tensor, zero_point: ?*Tensor, axis: i64, qmin: f32, qmax: f32) Error!*Tensor {
    const op = if (direction == .dequantize) "dequantize_linear" else "quantize_linear";
    if (direction != .dequantize) try requireFloat(op, "x", x_input);
    if (x_input.dtype == .int64) return status.fail(error.DTypeMismatch, op ++ ": x must be float32 or int32, got int64", .{});
    const p = try Parameters.of(op, x_input, scale, zero_point, axis, qmin, qmax);
    const x = try shape_ops.contiguous(x_input);
    defer x.release();
    const out = try tensor.createUninit(.float32, x.dims());
    errdefer out.release();
    // Per-tensor parameters: the whole tensor is one plane; split it into chunks so that
    // threads share it.
    const chunk: usize = if (p.channels == 1) @max(p.inner, 1) else p.inner;
    const pieces: usize = if (p.channels == 1) divCeil(p.inner, 16 * 1024) else 1;
    const Context = struct {
        x: *const Tensor,
        out: []f32,
        scale: *const Tensor,
        zero_point: ?*const Tensor,
        p: Parameters,
        pieces: usize,
        chunk: usize,
        qmin: f32,
        qmax: f32,
        fn body(c: *const @This(), begin: usize, end: usize) Error!void {
            for (begin..end) |item| {
                const plane = item / c.pieces;
                const piece = item % c.pieces;
                const channel = plane % c.p.channels;
                const s = valueAt(c.scale, channel);
                const z = if (c.zero_point) |zp| valueAt(zp, channel) else 0;
                const piece_len = divCeil(c.p.inner, c.pieces);
                const start = plane * c.p.inner + @min(piece * piece_len, c.p.inner);
                const stop = plane * c.p.inner + @min((piece + 1) * piece_len, c.p.inner);
                const dst = c.out[start..stop];
                if (c.x.dtype == .float32) {
                    const src = c.x.f32Slice()[start..stop];
                    switch (direction) {
                        .quantize => quantizeSlice(src, dst, s, z, c.qmin, c.qmax),
                        .dequantize => dequantizeSlice(src, dst, s, z),
                        .round_trip => roundTripSlice(src, dst, s, z, c.qmin, c.qmax),
                    }
                } else {
                    for (dst, start..) |*o, i| o.* = (valueAt(c.x, i) - z) * s;
                }
            }
        }
    };
    const context: Context = .{ .x = x, .out = out.f32Slice(), .scale = scale, .zero_point = zero_point, .p = p, .pieces = pieces, .chunk = chunk, .qmin = qmin, .qmax = qmax };
    const items = p.outer * p.channels * pieces;
    try intra_op.parallelForTyped(0, items, parallel.grain(.medium, divCeil(p.inner, pieces)), &context, Context.body);
    return out;
}

/// ONNX QuantizeLinear: saturate(round_half_even(x / scale) + zero_point), per tensor or
/// per `axis`, as float32 integers in [qmin, qmax]; with `dequantize_output`, those values
/// dequantized again (a QDQ pair of the QDQ format, in one pass).
pub fn quantizeLinear(x: *Tensor, scale: *Tensor, zero_point: ?*Tensor, axis: i64, qmin: i64, qmax: i64, dequantize_output: bool) Error!*Tensor {
    if (dequantize_output) return linear(.round_trip, x, scale, zero_point, axis, @floatFromInt(qmin), @floatFromInt(qmax));
    return linear(.quantize, x, scale, zero_point, axis, @floatFromInt(qmin), @floatFromInt(qmax));
}

/// ONNX DequantizeLinear: (x - zero_point) · scale, per tensor or per `axis`.
pub fn dequantizeLinear(x: *Tensor, scale: *Tensor, zero_point: ?*Tensor, axis: i64, qmin: i64, qmax: i64) Error!*Tensor {
    return linear(.dequantize, x, scale, zero_point, axis, @floatFromInt(qmin), @floatFromInt(qmax));
}

/// ONNX DynamicQuantizeLinear's parameters: float32 [scale, zero_point] for u8 over the
/// range of x widened to include 0. An all-zero x gets scale 1 (onnxruntime's 0 would make
/// the following quantization divide by zero; every value quantizes to 0 either way).
pub fn dynamicQuantize(x_input: *Tensor) Error!*Tensor {
    try requireFloat("dynamic_quantize", "x", x_input);
    const x = try shape_ops.contiguous(x_input);
    defer x.release();
    var low: f32 = 0;
    var high: f32 = 0;
    for (x.f32Slice()) |v| {
        if (std.math.isNan(v)) return status.fail(error.InvalidArgument, "dynamic_quantize: x holds NaN; its range has no quantization", .{});
        low = @min(low, v);
        high = @max(high, v);
    }
    if (std.math.isInf(low) or std.math.isInf(high)) return status.fail(error.InvalidArgument, "dynamic_quantize: x holds an infinity; its range has no quantization", .{});
    const range = high - low;
    const scale: f32 = if (range > 0) range / 255 else 1;
    const zero_point = std.math.clamp(roundEven(0 - low / scale), 0, 255);
    const out = try tensor.createUninit(.float32, &.{2});
    out.f32Slice()[0] = scale;
    out.f32Slice()[1] = zero_point;
    return out;
}

/// Packs int8 weights (int32 values in [-128, 127]) for the int8 GEMM: [K, N], or [N, K]
/// when `transposed`. Import runs it once per weight (a constant fold).
pub fn packInt8(w_input: *Tensor, k_value: i64, n_value: i64, transposed: bool) Error!*Tensor {
    if (w_input.dtype != .int32) return status.fail(error.DTypeMismatch, "pack_int8: weights must be int32 holding s8 values, got {s}", .{w_input.dtype.name()});
    const k: usize = @intCast(k_value);
    const n: usize = @intCast(n_value);
    if (w_input.numel() != k * n) return status.fail(error.ShapeMismatch, "pack_int8: {d} weights for k {d} × n {d}", .{ w_input.numel(), k, n });
    const w = try shape_ops.contiguous(w_input);
    defer w.release();
    for (w.i32Slice(), 0..) |v, i| if (v < -128 or v > 127) {
        return status.fail(error.InvalidArgument, "pack_int8: weight {d} is {d}, outside s8's [-128, 127]", .{ i, v });
    };
    const out = try tensor.createUninit(.int32, &.{kernels.packedLen(k, n)});
    kernels.packB(w.i32Slice(), k, n, transposed, out.i32Slice());
    return out;
}

/// The int8 GEMM kernel calls use: the best the CPU runs, or a lower one that
/// SPINDLE_INT8_KERNEL (vnni | widened | reference) asks for (tests and benchmarks of the fallback;
/// a higher one than the CPU runs is ignored).
pub fn selectedKernel() kernels.Kernel {
    const best = kernels.Kernel.pick();
    const wanted = requestedKernel() orelse return best;
    return if (@intFromEnum(wanted) < @intFromEnum(best)) wanted else best;
}

/// SPINDLE_INT8_KERNEL's kernel: 0 not read yet, 1 unset or not a kernel's name, else the
/// kernel's tag + 2.
var requested_kernel = std.atomic.Value(u8).init(0);

/// The kernel SPINDLE_INT8_KERNEL names, read from the environment once per process rather
/// than on every op call (a getenv beside a concurrent setenv, Deno.env.set, is a data race).
fn requestedKernel() ?kernels.Kernel {
    // Monotonic: threads racing to read the environment store the same value, which carries
    // no other data (as cpu_level.Once).
    var state = requested_kernel.load(.monotonic);
    if (state == 0) {
        const text = @import("../env.zig").get("SPINDLE_INT8_KERNEL");
        const kernel = if (text) |name| std.meta.stringToEnum(kernels.Kernel, name) else null;
        state = if (kernel) |k| @as(u8, @intFromEnum(k)) + 2 else 1;
        requested_kernel.store(state, .monotonic);
    }
    return if (state == 1) null else @enumFromInt(state - 2);
}

/// parallel_info's description of the int8 kernel in use.
pub fn kernelDescription() []const u8 {
    return switch (selectedKernel()) {
        .amx => "AMX int8 (tdpbusd) on 16-row tiles, AVX512-VNNI on the rest",
        .vnni => "AVX512-VNNI (vpdpbusd)",
        .widened => "16-bit widened u8×s8 (vpmaddwd on AVX2)",
        .reference => "reference loops (forced by SPINDLE_INT8_KERNEL)",
    };
}

/// What matmul_int8 and conv2d_int8 compute around the integer GEMM (ops.zig's QGemm).
pub const Quantization = struct {
    n: usize,
    k: usize,
    /// A holds integers already (QLinear ops' inputs) instead of reals to quantize.
    a_integer: bool,
    a_min: f32,
    a_max: f32,
    requantize: bool,
    dequantize_output: bool,
    out_scale: f32,
    out_zero: f32,
    out_min: f32,
    out_max: f32,
};

/// Conv geometry (symmetric padding, NCHW).
pub const Window = struct {
    kernel: [2]usize,
    stride: [2]usize,
    padding: [2]usize,
    dilation: [2]usize,
};

const rows_per_task = 32;
const blocks_per_task = 8;

/// The shared state of one call: A's rows as u8 in `a` (row r at r · lda; the kernel reads
/// groups(k) · 4 bytes from there, past k into bytes whose weights are 0), their sums when
/// some weight zero point is not 0, then tiles of C finished into `out`.
const Call = struct {
    q: Quantization,
    packed_b: []const i32,
    b_scale: []const f32,
    bias: []const f32,
    b_zero: []const f32,
    col_sum: []const f32,
    /// Whether any weight zero point is nonzero (then the row sums are needed).
    b_zero_any: bool,
    a_scale: f32,
    a_zero: f32,
    rows: usize,
    lda: usize,
    a: []const u8 = &.{},
    row_sums: []i32 = &.{},
    kernel: kernels.Kernel,
    out: []f32,
    /// A pointwise chain (conv2d_int8's folded quantized_pointwise; columns are its
    /// channels) run on each value before it is stored.
    steps: []const Step = &.{},
    /// The chain's steps after its first quantization as a level table (Table), when they
    /// read no per-channel operand: one table serves every column.
    levels: ?*align(64) const [Table.len]f32 = null,
    split: usize = 0,
    /// The whole chain's result per requantized output level, when the output is
    /// requantized and dequantized (a QDQ pair) to at most 256 levels and no step reads a
    /// per-channel operand: the chain's input is then one of those levels' values.
    output_levels: ?*align(64) const [Table.len]f32 = null,
    /// Output element of (row, column): row · row_stride + column · column_stride.
    row_stride: usize,
    column_stride: usize,
    /// Set when conv2d_int8 multiplies its padded NHWC image without im2col.
    implicit: ?Implicit = null,

    /// The u8 value of real 0 in A (the zero point shifted into u8).
    fn zeroByte(call: *const Call) u8 {
        return @intFromFloat(call.a_zero - call.q.a_min);
    }

    fn rowTiles(call: *const Call) usize {
        const implicit = call.implicit orelse return divCeil(call.rows, rows_per_task);
        return call.rows / implicit.out_width * divCeil(implicit.out_width, rows_per_task);
    }

    fn tiles(call: *const Call) usize {
        return call.rowTiles() * divCeil(kernels.blocks(call.q.n), blocks_per_task);
    }

    /// The first row and the row count of row tile `index`: an implicit convolution's tiles
    /// stay inside one output row (its pixels are lda bytes apart only there).
    fn rowSpan(call: *const Call, index: usize) [2]usize {
        const implicit = call.implicit orelse {
            const row = index * rows_per_task;
            return .{ row, @min(rows_per_task, call.rows - row) };
        };
        const per_line = divCeil(implicit.out_width, rows_per_task);
        const ox = index % per_line * rows_per_task;
        return .{ index / per_line * implicit.out_width + ox, @min(rows_per_task, implicit.out_width - ox) };
    }

    fn tile(call: *const Call, index: usize) void {
        const column_tiles = divCeil(kernels.blocks(call.q.n), blocks_per_task);
        const row, const rows = call.rowSpan(index / column_tiles);
        const block = index % column_tiles * blocks_per_task;
        const block_end = @min(block + blocks_per_task, kernels.blocks(call.q.n));
        const ldc: usize = blocks_per_task * kernels.block_n;
        var c: [rows_per_task * blocks_per_task * kernels.block_n]i32 = undefined;
        const group_count = kernels.groups(call.q.k);
        // The tile buffer starts at the tile's first block: offset packed B alike.
        const packed_b = call.packed_b[block * group_count * kernels.block_n ..];
        // Columns of the tile that finish reads (kernels skip whole padded 8-column halves).
        const column_end = @min(block_end * kernels.block_n, call.q.n) - block * kernels.block_n;
        if (call.implicit) |implicit| {
            implicit.multiply(call, packed_b, row, rows, block_end - block, column_end, &c, ldc);
        } else {
            const args: kernels.Args = .{
                .rows = rows,
                .k = call.q.k,
                .a = call.a[row * call.lda ..],
                .lda = call.lda,
                .packed_b = packed_b,
                .block_begin = 0,
                .block_end = block_end - block,
                .c = &c,
                .ldc = ldc,
                .column_end = column_end,
            };
            call.kernel.run(&args);
        }
        call.finish(c[0 .. rows * ldc], ldc, row, rows, block * kernels.block_n, @min(block_end * kernels.block_n, call.q.n));
    }

    /// The epilogue of rows [row, row + rows) and columns [first, end), 16 columns at a
    /// time: Σ (a - za)(b - zb) = Σab - zb·Σa - za·Σb + K·za·zb (the corrections in f32:
    /// each an integer below 2^24 for K ≤ 2^16), then scales and bias, then the optional
    /// requantization. Conv outputs (NCHW: rows contiguous) go through a small transposed
    /// buffer so that each column's rows are written as one run.
    fn finish(call: *const Call, c: []const i32, ldc: usize, row: usize, rows: usize, first: usize, end: usize) void {
        std.debug.assert(rows <= rows_per_task);
        const k: f32 = @floatFromInt(call.q.k);
        const a_zero = call.a_zero - call.q.a_min;
        // The call's fields as locals: the output stores may alias the call as far as the
        // compiler knows, so read through `call` they were reloaded (and 1 / scale divided
        // again) for every vector.
        const requantize = call.q.requantize;
        const dequantize_output = call.q.dequantize_output;
        const output_levels = call.output_levels;
        const b_zero_any = call.b_zero_any;
        const row_sums = call.row_sums;
        const quantizer: Quantizer = .init(call.q.out_scale, call.q.out_zero, call.q.out_min, call.q.out_max);
        var column = first;
        while (column < end) : (column += lanes) {
            const count = @min(lanes, end - column);
            const b_zero = padded(call.b_zero, column, count);
            const scale = padded(call.b_scale, column, count) * @as(VF, @splat(call.a_scale));
            const bias = padded(call.bias, column, count);
            const offset = (b_zero * @as(VF, @splat(k * a_zero))) - padded(call.col_sum, column, count) * @as(VF, @splat(a_zero));
            var results: [rows_per_task]VF = undefined;
            for (0..rows) |r| {
                const row_sum: f32 = if (b_zero_any) @floatFromInt(row_sums[row + r]) else 0;
                const acc: VF = @floatFromInt(@as(@Vector(lanes, i32), c[r * ldc + column - first ..][0..lanes].*));
                const v = (acc - b_zero * @as(VF, @splat(row_sum)) + offset) * scale + bias;
                results[r] = if (requantize) requantized(v, &quantizer, dequantize_output, output_levels) else v;
            }
            // A convolution's chain runs on its 1-pixel outputs too (column stride 1: an
            // earlier test of the stride alone stored them without the chain).
            if (call.steps.len > 0 and call.output_levels == null) call.chain(results[0..rows], .{ .columns = .{ column, count } });
            if (call.column_stride == 1) {
                for (results[0..rows], 0..) |v, r| {
                    const values: [lanes]f32 = v;
                    @memcpy(call.out[(row + r) * call.row_stride + column ..][0..count], values[0..count]);
                }
            } else {
                call.storeColumns(results[0..rows], row, column, count);
            }
        }
    }

    /// Stores a tile's values (a vector of 16 columns per row) into the NCHW output, 16
    /// rows at a time transposed in registers so that each column's rows take one vector
    /// store (a scalar store per value was 4% of det_qdq's time in perf).
    fn storeColumns(call: *const Call, values: []const VF, row: usize, column: usize, count: usize) void {
        std.debug.assert(values.len <= rows_per_task and call.row_stride == 1);
        var first: usize = 0;
        while (first < values.len) : (first += lanes) {
            const rows = @min(lanes, values.len - first);
            var block: [lanes]VF = @splat(@splat(0));
            @memcpy(block[0..rows], values[first..][0..rows]);
            const columns: [lanes][lanes]f32 = @bitCast(transpose(block));
            for (columns[0..count], 0..) |values_of_column, j| {
                const out = call.out[(column + j) * call.column_stride + row + first ..][0..rows];
                if (rows == lanes) out[0..lanes].* = values_of_column else @memcpy(out, values_of_column[0..rows]);
            }
        }
    }

    /// Runs the chain on a tile's values of columns column … column + count, a loop per
    /// step (a switch per vector and step cost 1.7 times quantized_pointwise's time on cls).
    fn chain(call: *const Call, values: []VF, operands: Operands) void {
        std.debug.assert(values.len <= rows_per_task);
        var saved: [rows_per_task]VF = undefined;
        const levels = call.levels orelse return chainVectors(call.steps, values, saved[0..values.len], operands);
        const q = call.steps[call.split];
        chainVectors(call.steps[0..call.split], values, saved[0..values.len], operands);
        const quantizer: Quantizer = .init(q.a, q.b, q.c, q.d);
        for (values) |*v| v.* = lookUpVector(&quantizer, v.*, levels);
    }
};

/// The epilogue's requantization of v, then its dequantization (a QDQ pair) or the chain's
/// table of output levels when there is one.
inline fn requantized(v: VF, quantizer: *const Quantizer, dequantize_output: bool, output_levels: ?*align(64) const [Table.len]f32) VF {
    const q = quantizer.apply(v);
    if (output_levels) |levels| return lookUpIndices(q - quantizer.qmin, levels);
    return if (dequantize_output) (q - quantizer.zero_point) * quantizer.scale else q;
}

/// The 16 × 16 transpose (rows[r][j] becomes the result's [j][r]): at each distance d the
/// off-diagonal d × d blocks of every 2d × 2d block swap, two shuffles per pair of rows.
fn transpose(rows: [lanes]VF) [lanes]VF {
    var m = rows;
    inline for (.{ 8, 4, 2, 1 }) |d| {
        const masks = comptime masks: {
            var low: [lanes]i32 = undefined;
            var high: [lanes]i32 = undefined;
            for (0..lanes) |e| {
                if (e & d == 0) {
                    low[e] = e;
                    high[e] = e + d;
                } else {
                    low[e] = ~@as(i32, e - d);
                    high[e] = ~@as(i32, e);
                }
            }
            break :masks .{ low, high };
        };
        inline for (0..lanes) |i| if (i & d == 0) {
            const a = m[i];
            const b = m[i + d];
            m[i] = @shuffle(f32, a, b, masks[0]);
            m[i + d] = @shuffle(f32, a, b, masks[1]);
        };
    }
    return m;
}

/// A convolution multiplied straight from its padded NHWC image (no im2col copy): with
/// dilation 1 along x, a kernel row's taps of output pixel (oy, ox) are kw · C adjacent
/// bytes of image row oy · stride + ky · dilation, and the next pixel's start stride · C
/// bytes later. So each kernel row is one GEMM over overlapping rows (lda = stride · C) on
/// its run of packed B's groups (K is tap-major), summed into the tile. im2col copied 9
/// times the image for det's 3 × 3 convolutions over 96 channels.
const Implicit = struct {
    image: []const u8,
    window: Window,
    channels: usize,
    padded_width: usize,
    out_width: usize,

    /// Whether `window` over `channels` can run this way: kernel rows of whole 4-byte groups
    /// (packed B's groups must not straddle two rows), x dilation 1, no weight zero points
    /// (their row sums need rows of A), and output rows of at least 16 pixels (an AMX tile;
    /// shorter rows run better as im2col rows across output rows).
    fn fits(window: Window, channels: usize, out_width: usize, b_zero_any: bool) bool {
        const taps = window.kernel[0] * window.kernel[1];
        return taps > 1 and window.dilation[1] == 1 and window.kernel[1] * channels % kernels.group_k == 0 and
            !b_zero_any and out_width >= 16;
    }

    fn multiply(implicit: Implicit, call: *const Call, packed_b: []const i32, row: usize, rows: usize, block_end: usize, column_end: usize, c: []i32, ldc: usize) void {
        const w = implicit.window;
        const oy = row / implicit.out_width;
        const ox = row % implicit.out_width;
        std.debug.assert(ox + rows <= implicit.out_width);
        const segment = w.kernel[1] * implicit.channels;
        for (0..w.kernel[0]) |ky| {
            const iy = oy * w.stride[0] + ky * w.dilation[0];
            const args: kernels.Args = .{
                .rows = rows,
                .k = segment,
                .a = implicit.image[(iy * implicit.padded_width + ox * w.stride[1]) * implicit.channels ..],
                .lda = w.stride[1] * implicit.channels,
                .packed_b = packed_b[ky * kernels.groups(segment) * kernels.block_n ..],
                .block_begin = 0,
                .block_end = block_end,
                .c = c,
                .ldc = ldc,
                .b_groups = kernels.groups(call.q.k),
                .accumulate = ky > 0,
                .column_end = column_end,
            };
            call.kernel.run(&args);
        }
    }
};

/// values[column .. column + count] as a vector, zero past count.
fn padded(values: []const f32, column: usize, count: usize) VF {
    if (count == lanes) return values[column..][0..lanes].*;
    var lanes_values: [lanes]f32 = @splat(0);
    for (lanes_values[0..count], values[column..][0..count]) |*dst, v| dst.* = v;
    return lanes_values;
}

const divCeil = @import("../kernels/math.zig").divideCeil;

/// The per-column info tensor: float32 [4, N] rows b_scale, bias, b_zero, col_sum.
fn infoRows(comptime op: []const u8, info: *Tensor, n: usize) Error![4][]const f32 {
    try requireFloat(op, "info", info);
    if (!info.isContiguous() or info.numel() != 4 * n) {
        return status.fail(error.ShapeMismatch, op ++ ": info must be a contiguous float32 [4, {d}], got {f}", .{ n, status.shape(info.dims()) });
    }
    const v = info.f32Slice();
    return .{ v[0..n], v[n .. 2 * n], v[2 * n .. 3 * n], v[3 * n .. 4 * n] };
}

fn scalarOf(comptime op: []const u8, comptime which: []const u8, t: *Tensor) Error!f32 {
    if (t.numel() != 1 or !t.isContiguous()) return status.fail(error.ShapeMismatch, op ++ ": " ++ which ++ " must hold one value, got {f}", .{status.shape(t.dims())});
    return valueAt(t, 0);
}

fn prepare(comptime op: []const u8, q: Quantization, packed_b: *Tensor, info: *Tensor, a_scale: *Tensor, a_zero: *Tensor, rows: usize, out: []f32) Error!Call {
    if (packed_b.dtype != .int32 or !packed_b.isContiguous() or packed_b.numel() != kernels.packedLen(q.k, q.n)) {
        return status.fail(error.ShapeMismatch, op ++ ": packed weights must be int32 of {d} values (pack_int8 of k {d}, n {d})", .{ kernels.packedLen(q.k, q.n), q.k, q.n });
    }
    const rows_info = try infoRows(op, info, q.n);
    const scale = try scalarOf(op, "a_scale", a_scale);
    const zero = try scalarOf(op, "a_zero", a_zero);
    if (!(scale > 0) or !std.math.isFinite(scale)) return status.fail(error.InvalidArgument, op ++ ": activation scale is {d}; it must be finite and greater than 0", .{scale});
    if (zero != @round(zero) or zero < q.a_min or zero > q.a_max) return status.fail(error.InvalidArgument, op ++ ": activation zero point {d} is outside [{d}, {d}]", .{ zero, q.a_min, q.a_max });
    if (q.requantize and (!(q.out_scale > 0) or !std.math.isFinite(q.out_scale))) return status.fail(error.InvalidArgument, op ++ ": output scale is {d}; it must be finite and greater than 0", .{q.out_scale});
    var b_zero_any = false;
    for (rows_info[2]) |z| b_zero_any = b_zero_any or z != 0;
    return .{
        .q = q,
        .packed_b = packed_b.i32Slice(),
        .b_scale = rows_info[0],
        .bias = rows_info[1],
        .b_zero = rows_info[2],
        .col_sum = rows_info[3],
        .b_zero_any = b_zero_any,
        .a_scale = scale,
        .a_zero = zero,
        .rows = rows,
        .lda = kernels.groups(q.k) * kernels.group_k,
        .kernel = selectedKernel(),
        .out = out,
        .row_stride = q.n,
        .column_stride = 1,
    };
}

/// Per-call scratch from the storage cache (bytes, 64-byte aligned blocks).
const Scratch = struct {
    block: ?storage_cache.Block,
    bytes: []u8,

    fn init(comptime op: []const u8, count: usize) Error!Scratch {
        if (count == 0) return .{ .block = null, .bytes = &.{} };
        const block = storage_cache.allocate(count) catch
            return status.fail(error.OutOfMemory, op ++ ": out of memory allocating {d} bytes of scratch", .{count});
        const base: [*]u8 = @ptrCast(block.ptr);
        return .{ .block = block, .bytes = base[0..count] };
    }

    fn release(scratch: Scratch) void {
        if (scratch.block) |block| storage_cache.free(block);
    }
};

/// The kernel reads whole groups of 4 bytes: this much slack after the last row.
const row_slack = kernels.group_k;

/// Row sums of A (only when some weight zero point is nonzero).
fn sumRows(call: *Call, sums: []i32) Error!void {
    call.row_sums = sums;
    if (!call.b_zero_any) return;
    const Context = struct {
        fn body(c: *const Call, begin: usize, end: usize) Error!void {
            for (begin..end) |row| {
                var sum: u32 = 0;
                for (c.a[row * c.lda ..][0..c.q.k]) |byte| sum += byte;
                c.row_sums[row] = @intCast(sum);
            }
        }
    };
    try intra_op.parallelForTyped(0, call.rows, parallel.grain(.light, call.q.k), @as(*const Call, call), Context.body);
}

fn runTiles(call: *const Call) Error!void {
    const Context = struct {
        fn body(c: *const Call, begin: usize, end: usize) Error!void {
            for (begin..end) |index| c.tile(index);
        }
    };
    const flops = 2 * call.rows * call.q.n * call.q.k;
    const grain: usize = if (parallel.threadsForFlops(flops) == 1) call.tiles() else 1;
    try intra_op.parallelForTyped(0, call.tiles(), @max(grain, 1), call, Context.body);
}

/// A [..., K] (float32: reals, or integers when a_integer) times packed int8 B [K, N]:
/// float32 [..., N] (see `Quantization` for the epilogue).
pub fn matmulInt8(q: Quantization, a_input: *Tensor, packed_b: *Tensor, info: *Tensor, a_scale: *Tensor, a_zero: *Tensor) Error!*Tensor {
    try requireFloat("matmul_int8", "a", a_input);
    const dims = a_input.dims();
    if (dims.len == 0 or dims[dims.len - 1] != q.k) {
        return status.fail(error.ShapeMismatch, "matmul_int8: a {f} must end in k = {d}", .{ status.shape(dims), q.k });
    }
    const a = try shape_ops.contiguous(a_input);
    defer a.release();
    var out_shape: [tensor.max_dims]usize = undefined;
    @memcpy(out_shape[0..dims.len], dims);
    out_shape[dims.len - 1] = q.n;
    const out = try tensor.createUninit(.float32, out_shape[0..dims.len]);
    errdefer out.release();
    const rows = a.numel() / @max(q.k, 1);
    var call = try prepare("matmul_int8", q, packed_b, info, a_scale, a_zero, rows, out.f32Slice());
    if (rows == 0) return out;
    const bytes = rows * call.lda;
    const scratch = try Scratch.init("matmul_int8", bytes + row_slack + rows * @sizeOf(i32) + @alignOf(i32));
    defer scratch.release();
    const a_bytes = scratch.bytes[0 .. bytes + row_slack];
    @memset(a_bytes[bytes..], 0);
    call.a = a_bytes;
    const Rows = struct {
        call: *const Call,
        a: []const f32,
        dst: []u8,
        fn body(c: *const @This(), begin: usize, end: usize) Error!void {
            const k = c.call.q.k;
            const scale: f32 = if (c.call.q.a_integer) 1 else c.call.a_scale;
            const zero: f32 = if (c.call.q.a_integer) 0 else c.call.a_zero;
            for (begin..end) |row| {
                const dst = c.dst[row * c.call.lda ..][0..c.call.lda];
                quantizeBytes(c.a[row * k ..][0..k], dst[0..k], scale, zero, c.call.q.a_min, c.call.q.a_max);
                @memset(dst[k..], 0);
            }
        }
    };
    const rows_context: Rows = .{ .call = &call, .a = a.f32Slice(), .dst = a_bytes };
    try intra_op.parallelForTyped(0, rows, parallel.grain(.medium, q.k), &rows_context, Rows.body);
    try sumRows(&call, sumsIn(scratch.bytes[bytes + row_slack ..], rows));
    try runTiles(&call);
    return out;
}

fn sumsIn(bytes: []u8, rows: usize) []i32 {
    const aligned = std.mem.alignForward(usize, @intFromPtr(bytes.ptr), @alignOf(i32)) - @intFromPtr(bytes.ptr);
    const sums: [*]i32 = @ptrCast(@alignCast(bytes.ptr + aligned));
    std.debug.assert(aligned + rows * @sizeOf(i32) <= bytes.len);
    return sums[0..rows];
}

/// 2-D convolution (groups 1, NCHW) of x with packed int8 weights [C_out, kh·kw·C_in] (K in
/// tap-major order: k = (ky·kw + kx)·C_in + c). x is quantized once into a padded NHWC u8
/// image (padding is the zero point: a real 0, or for integer inputs the zero point itself),
/// whose rows of C_in bytes per tap make each im2col row by plain copies; a 1×1 stride-1
/// convolution reads that image as A directly.
pub fn conv2dInt8(q: Quantization, window: Window, x_input: *Tensor, packed_b: *Tensor, info: *Tensor, a_scale: *Tensor, a_zero: *Tensor, chain: ?Chain) Error!*Tensor {
    try requireFloat("conv2d_int8", "x", x_input);
    if (x_input.ndim != 4) return status.fail(error.ShapeMismatch, "conv2d_int8: x must be 4-D NCHW, got {f}", .{status.shape(x_input.dims())});
    const dims = x_input.dims();
    const taps = window.kernel[0] * window.kernel[1];
    if (dims[1] != q.k / taps or q.k % taps != 0) {
        return status.fail(error.ShapeMismatch, "conv2d_int8: x has {d} channels but the weights expect k = {d} (channels × {d} taps)", .{ dims[1], q.k, taps });
    }
    var out_hw: [2]usize = undefined;
    var padded_hw: [2]usize = undefined;
    for (0..2) |axis| {
        const span = window.dilation[axis] * (window.kernel[axis] - 1) + 1;
        padded_hw[axis] = dims[2 + axis] + 2 * window.padding[axis];
        if (padded_hw[axis] < span) return status.fail(error.ShapeMismatch, "conv2d_int8: input {f} is smaller than the kernel window", .{status.shape(dims)});
        out_hw[axis] = (padded_hw[axis] - span) / window.stride[axis] + 1;
    }
    const x = try shape_ops.contiguous(x_input);
    defer x.release();
    const plane = out_hw[0] * out_hw[1];
    const out = try tensor.createUninit(.float32, &.{ dims[0], q.n, out_hw[0], out_hw[1] });
    errdefer out.release();
    var call = try prepare("conv2d_int8", q, packed_b, info, a_scale, a_zero, plane, out.f32Slice());
    var steps_buffer: [max_steps]Step = undefined;
    var levels: [Table.len]f32 align(64) = undefined;
    var output_levels: [Table.len]f32 align(64) = undefined;
    var program: ?*Tensor = null;
    defer if (program) |p| p.release();
    if (chain) |c| {
        try requireFloat("conv2d_int8", "program", c.program);
        if (c.steps < 1 or c.steps > max_steps) return status.fail(error.InvalidArgument, "conv2d_int8: a program has 1 to {d} steps, got {d}", .{ max_steps, c.steps });
        program = try shape_ops.contiguous(c.program);
        const steps = steps_buffer[0..@intCast(c.steps)];
        try checkProgram("conv2d_int8", program.?.f32Slice(), steps.len, q.n, 0, steps);
        call.steps = steps;
        if (outputTable(q, steps, &output_levels)) {
            call.output_levels = &output_levels;
        } else if (Table.of(steps, plane)) |table| if (!table.per_channel) {
            table.build(steps, 0, &levels);
            call.levels = &levels;
            call.split = table.split;
        };
    }
    if (plane == 0) return out;
    call.row_stride = 1;
    call.column_stride = plane;
    const direct = taps == 1 and window.stride[0] == 1 and window.stride[1] == 1 and window.padding[0] == 0 and window.padding[1] == 0;
    // Comptime: copies without AVX-512 (the portable build's x86_64 and v3, other
    // architectures) must not compile channelTile's vpdpbusd at all.
    if (comptime kernels.has_avx512) {
        if ((direct or PixelLanes.fitsWindow(window, dims[1])) and PixelLanes.fits(&call)) {
            try PixelLanes.run(&call, window, x.f32Slice(), dims[0], dims[1..4].*, out_hw, out.f32Slice());
            return out;
        }
    }
    var channels = dims[1];
    // A stem's 3 channels (or 1, 2) padded to 4 with zero weights: the image's kernel rows
    // are then whole 4-byte groups, so it runs without im2col (cls's 3-channel stem spent
    // most of its time copying 9 runs of 3 bytes per output pixel).
    const padded_channels = channels < kernels.group_k and !direct and Implicit.fits(window, kernels.group_k, out_hw[1], call.b_zero_any) and implicitAllowed();
    const padded_weights = if (padded_channels) kernels.packedLen(taps * kernels.group_k, q.n) * @sizeOf(i32) else 0;
    if (padded_channels) channels = kernels.group_k;
    const image_bytes = padded_hw[0] * padded_hw[1] * channels;
    const implicit = !direct and Implicit.fits(window, channels, out_hw[1], call.b_zero_any) and implicitAllowed();
    const a_bytes = if (direct or implicit) 0 else plane * call.lda;
    const scratch = try Scratch.init("conv2d_int8", padded_weights + image_bytes + a_bytes + 2 * row_slack + plane * @sizeOf(i32) + @alignOf(i32));
    defer scratch.release();
    if (padded_channels) {
        // Scratch blocks are 64-byte aligned, so the weights at its start are i32-aligned.
        const weights: [*]i32 = @ptrCast(@alignCast(scratch.bytes.ptr));
        call.packed_b = weights[0 .. padded_weights / @sizeOf(i32)];
        padWeightChannels(packed_b.i32Slice(), q.n, taps, dims[1], weights[0 .. padded_weights / @sizeOf(i32)]);
        // K counts the padding now; it enters the epilogue only times the weight zero
        // points, which are 0 here (Implicit.fits).
        call.q.k = taps * kernels.group_k;
    }
    const image = scratch.bytes[padded_weights..][0 .. image_bytes + row_slack];
    @memset(image[image_bytes..], 0);
    const a_region = scratch.bytes[padded_weights + image.len ..][0 .. a_bytes + row_slack];
    const sums = sumsIn(scratch.bytes[padded_weights + image.len + a_region.len ..], plane);
    const image_size = dims[1] * dims[2] * dims[3];
    for (0..dims[0]) |index| {
        call.out = out.f32Slice()[index * q.n * plane ..][0 .. q.n * plane];
        try quantizeImage(&call, x.f32Slice()[index * image_size ..][0..image_size], dims[1..4], channels, window.padding, padded_hw, image);
        if (direct) {
            call.a = image;
            call.lda = channels;
        } else if (implicit) {
            call.implicit = .{ .image = image, .window = window, .channels = channels, .padded_width = padded_hw[1], .out_width = out_hw[1] };
        } else {
            @memset(a_region[a_bytes..], 0);
            call.a = a_region;
            try gatherRows(&call, window, image, channels, padded_hw[1], out_hw[1], a_region);
        }
        try sumRows(&call, sums);
        try runTiles(&call);
    }
    return out;
}

/// Packed weights of K = taps · channels (channels below 4, tap-major) re-laid out for
/// taps · 4: each tap's channels fill one 4-byte group, zero weights past them.
fn padWeightChannels(packed_b: []const i32, n: usize, taps: usize, channels: usize, dst: []i32) void {
    std.debug.assert(channels < kernels.group_k and dst.len == kernels.packedLen(taps * kernels.group_k, n));
    const group_count = kernels.groups(taps * channels);
    std.debug.assert(packed_b.len == kernels.blocks(n) * group_count * kernels.block_n);
    for (0..kernels.blocks(n)) |block| for (0..taps) |tap| for (0..kernels.block_n) |lane| {
        var word: u32 = 0;
        for (0..channels) |channel| {
            const k = tap * channels + channel;
            const source: u32 = @bitCast(packed_b[(block * group_count + k / kernels.group_k) * kernels.block_n + lane]);
            const byte = source >> @intCast(8 * (k % kernels.group_k)) & 0xff;
            word |= byte << @intCast(8 * channel);
        }
        dst[(block * taps + tap) * kernels.block_n + lane] = @bitCast(word);
    };
}

/// Whether conv2d_int8 may skip im2col (`Implicit`); SPINDLE_INT8_IM2COL=1 keeps it (tests
/// compare both, and benchmarks measure the difference).
fn implicitAllowed() bool {
    return !force_im2col and !envSet("SPINDLE_INT8_IM2COL");
}

/// Whether the environment variable `name` is "1".
fn envSet(comptime name: []const u8) bool {
    const value = @import("../env.zig").get(name) orelse return false;
    return std.mem.eql(u8, value, "1");
}

/// Tests set this to run direct 1×1 convolutions on the row-major GEMM instead of
/// `PixelLanes` (SPINDLE_INT8_ROWS=1 does the same for benchmarks).
var force_rows = false;

fn rowsRequested() bool {
    return envSet("SPINDLE_INT8_ROWS");
}

/// SPINDLE_INT8_ROWS, read once per process rather than on every conv2d_int8 call.
const rows_requested = @import("../cpu_level.zig").Once(rowsRequested);

/// conv2d_int8's paths with pixels in the vector lanes (kernels.channelTile): direct 1×1
/// convolutions, and stride-1 convolutions over channels in whole groups of 4.
/// Each image is quantized from its NCHW rows into groups of 4 channels per pixel
/// ([C/4][pixels][4] u8: a byte interleave, where the row-major GEMM needs an NHWC transpose),
/// and the sums come out as rows of the NCHW output, which the epilogue dequantizes (and
/// requantizes) straight into place (the row-major epilogue transposes 16 × 16 blocks back).
/// In perf those two conversions took about a third of det_qdq's time, around 1×1 GEMMs
/// whose own share had become small.
/// With taps, the pixels are positions in the padded image (pitch = padded width): output
/// pixel (oy, ox) is position oy · pitch + ox, and tap (ky, kx) reads position + ky · dy ·
/// pitch + kx · dx. Positions with ox ≥ the output width are computed and dropped (2 of 82
/// for det's 80-pixel rows). The row-major implicit GEMM wasted half of its second 16-lane
/// block on det's 96 → 24 3 × 3 convolutions; here out channels go 4 to a tile.
const PixelLanes = struct {
    call: *const Call,
    x: []const f32,
    args: kernels.PixelArgs,
    bytes: []u8,
    geometry: Geometry,
    quantizer: Quantizer,
    out_quantizer: Quantizer,

    /// Pixels and output channels per task: 4 vectors (a tile's most), and 64 channels so
    /// that a wide layer on a small map (cls's 32 → 200 on 192 pixels) still splits.
    const task_pixels = kernels.tile_vectors_max * lanes;
    const task_channels = 64;
    /// The most taps (a 5 × 5 kernel); larger kernels keep the row-major paths.
    const taps_max = 25;

    const Geometry = struct {
        /// Input image: channels, height, width, and its padding.
        in_chw: [3]usize,
        padding: [2]usize,
        /// Output height and width (height · width = the output plane).
        out_hw: [2]usize,
        /// Positions per row of the padded image (the output width for a 1×1 convolution).
        pitch: usize,
        /// Padded image rows (the output height for a 1×1 convolution).
        padded_height: usize,
        /// Positions computed: out height · pitch.
        positions: usize,

        fn plane(g: *const Geometry) usize {
            return g.out_hw[0] * g.out_hw[1];
        }

        fn inPlane(g: *const Geometry) usize {
            return g.in_chw[1] * g.in_chw[2];
        }
    };

    /// VNNI without weight zero points (their corrections need per-pixel sums).
    fn fits(call: *const Call) bool {
        return !call.b_zero_any and call.kernel == .vnni and kernels.vnniSupported() and !force_rows and !rows_requested.get();
    }

    /// Whether a convolution with taps runs here: stride 1, at most taps_max taps, and
    /// channels in whole groups (packed B's groups then never straddle two taps).
    fn fitsWindow(window: Window, in_channels: usize) bool {
        const taps = window.kernel[0] * window.kernel[1];
        return taps > 1 and taps <= taps_max and window.stride[0] == 1 and window.stride[1] == 1 and
            in_channels % kernels.group_k == 0;
    }

    fn run(call: *Call, window: Window, x: []const f32, images: usize, in_chw: [3]usize, out_hw: [2]usize, out: []f32) Error!void {
        const taps = window.kernel[0] * window.kernel[1];
        std.debug.assert(taps <= taps_max and x.len == images * in_chw[0] * in_chw[1] * in_chw[2]);
        const pitch = if (taps == 1) out_hw[1] else in_chw[2] + 2 * window.padding[1];
        const padded_height = if (taps == 1) out_hw[0] else in_chw[1] + 2 * window.padding[0];
        const geometry: Geometry = .{ .in_chw = in_chw, .padding = window.padding, .out_hw = out_hw, .pitch = pitch, .padded_height = padded_height, .positions = out_hw[0] * pitch };
        var offsets: [taps_max]usize = undefined;
        for (0..window.kernel[0]) |ky| for (0..window.kernel[1]) |kx| {
            offsets[ky * window.kernel[1] + kx] = ky * window.dilation[0] * pitch + kx * window.dilation[1];
        };
        const shift_max = offsets[taps - 1];
        // Every tile reads whole vectors from its first position plus a tap's shift.
        const stride = divCeil(@max(padded_height * pitch, divCeil(geometry.positions, lanes) * lanes + shift_max), lanes) * lanes;
        const byte_count = kernels.groups(call.q.k) / taps * stride * kernels.group_k;
        const scratch = try Scratch.init("conv2d_int8", byte_count);
        defer scratch.release();
        var lanes_call: PixelLanes = .{
            .call = call,
            .x = undefined,
            .args = .{ .a = scratch.bytes[0..byte_count], .stride = stride, .k = call.q.k, .n = call.q.n, .packed_b = call.packed_b, .offsets = offsets[0..taps] },
            .bytes = scratch.bytes[0..byte_count],
            .geometry = geometry,
            .quantizer = inputQuantizer(call),
            .out_quantizer = .init(call.q.out_scale, call.q.out_zero, call.q.out_min, call.q.out_max),
        };
        const plane = geometry.plane();
        const tasks = divCeil(geometry.positions, task_pixels) * divCeil(call.q.n, task_channels);
        const flops = 2 * plane * call.q.n * call.q.k;
        const grain: usize = if (parallel.threadsForFlops(flops) == 1) tasks else 1;
        const image_size = in_chw[0] * geometry.inPlane();
        for (0..images) |index| {
            call.out = out[index * call.q.n * plane ..][0 .. call.q.n * plane];
            lanes_call.x = x[index * image_size ..][0..image_size];
            if (taps == 1) {
                try intra_op.parallelForTyped(0, kernels.groups(call.q.k), parallel.grain(.medium, stride * kernels.group_k), &lanes_call, quantizeGroups);
            } else {
                try intra_op.parallelForTyped(0, in_chw[0] / kernels.group_k, parallel.grain(.medium, stride * kernels.group_k), &lanes_call, quantizePaddedGroups);
            }
            try intra_op.parallelForTyped(0, tasks, grain, &lanes_call, runTasks);
        }
    }

    /// Rows of 4 channels' bytes per pixel (channels past k as 0, pixels past the plane as
    /// the quantized 0.0: their sums are never stored).
    fn quantizeGroups(c: *const PixelLanes, begin: usize, end: usize) Error!void {
        const plane = c.geometry.plane();
        for (begin..end) |group| {
            const first = group * kernels.group_k;
            const row = c.bytes[group * c.args.stride * kernels.group_k ..][0 .. c.args.stride * kernels.group_k];
            var pixel: usize = 0;
            while (pixel < plane) : (pixel += lanes) {
                const count = @min(lanes, plane - pixel);
                const interleaved = switch (@min(kernels.group_k, c.args.k - first)) {
                    inline 1...kernels.group_k => |n| c.words(first, n, pixel, count),
                    else => unreachable,
                };
                row[pixel * kernels.group_k ..][0 .. lanes * kernels.group_k].* = @bitCast(interleaved);
            }
        }
    }

    /// The padded image's rows of 4 whole channels per group (taps > 1): the border and the
    /// positions past the image (read only for dropped positions) hold real 0's byte.
    fn quantizePaddedGroups(c: *const PixelLanes, begin: usize, end: usize) Error!void {
        const g = &c.geometry;
        const zero_word = @as(u32, c.call.zeroByte()) * 0x01010101;
        const in_width = g.in_chw[2];
        for (begin..end) |group| {
            const first = group * kernels.group_k;
            const words_of_group: []align(1) u32 = std.mem.bytesAsSlice(u32, c.bytes[group * c.args.stride * kernels.group_k ..][0 .. c.args.stride * kernels.group_k]);
            @memset(words_of_group[0 .. g.padding[0] * g.pitch], zero_word);
            for (0..g.in_chw[1]) |y| {
                const row = words_of_group[(g.padding[0] + y) * g.pitch ..][0..g.pitch];
                @memset(row[0..g.padding[1]], zero_word);
                @memset(row[g.padding[1] + in_width ..], zero_word);
                var x0: usize = 0;
                while (x0 < in_width) : (x0 += lanes) {
                    const count = @min(lanes, in_width - x0);
                    const values: [lanes]u32 = c.words(first, kernels.group_k, y * in_width + x0, count);
                    @memcpy(row[g.padding[1] + x0 ..][0..count], values[0..count]);
                }
            }
            @memset(words_of_group[(g.padding[0] + g.in_chw[1]) * g.pitch ..], zero_word);
        }
    }

    /// Channels first … first + n of `count` input pixels from `pixel` as u32 lanes, channel
    /// first + j in byte j.
    fn words(c: *const PixelLanes, first: usize, comptime n: usize, pixel: usize, count: usize) @Vector(lanes, u32) {
        const in_plane = c.geometry.inPlane();
        var result: @Vector(lanes, u32) = @splat(0);
        inline for (0..n) |j| {
            const bytes = quantizeLanes(c.x[(first + j) * in_plane + pixel ..][0..count], &c.quantizer);
            result |= bytes << @splat(8 * j);
        }
        return result;
    }

    fn runTasks(c: *const PixelLanes, begin: usize, end: usize) Error!void {
        // Comptime: a 1×1 convolution's tiles keep channelTile's plain loop.
        if (c.args.offsets.len == 1) c.runTiles(false, begin, end) else c.runTiles(true, begin, end);
    }

    fn runTiles(c: *const PixelLanes, comptime shifted: bool, begin: usize, end: usize) void {
        const channel_tasks = divCeil(c.args.n, task_channels);
        for (begin..end) |index| {
            const pixel = index / channel_tasks * task_pixels;
            const first = index % channel_tasks * task_channels;
            const last = @min(first + task_channels, c.args.n);
            switch (@min(kernels.tile_vectors_max, divCeil(c.geometry.positions - pixel, lanes))) {
                inline 1...kernels.tile_vectors_max => |pv| c.channels(pv, shifted, pixel, first, last),
                else => unreachable,
            }
        }
    }

    fn channels(c: *const PixelLanes, comptime pv: usize, comptime shifted: bool, pixel: usize, first: usize, last: usize) void {
        var channel = first;
        while (channel < last) {
            const nr = @min(kernels.tile_channels_max, last - channel);
            switch (nr) {
                inline 1...kernels.tile_channels_max => |r| c.finish(r, pv, shifted, pixel, channel, kernels.channelTile(r, pv, shifted, &c.args, channel, pixel)),
                else => unreachable,
            }
            channel += nr;
        }
    }

    /// The epilogue of `Call.finish` on channel rows: the same float operations per value
    /// (with no weight zero points the row-sum term is 0), so the same results bit for bit.
    fn finish(c: *const PixelLanes, comptime nr: usize, comptime pv: usize, comptime shifted: bool, pixel: usize, channel: usize, sums: [nr][pv]kernels.V) void {
        const call = c.call;
        const k: f32 = @floatFromInt(call.q.k);
        const a_zero = call.a_zero - call.q.a_min;
        const plane = c.geometry.plane();
        // With dropped positions, each vector's first position as (row, x): one division
        // per tile (one per vector and channel cost a 1×1 convolution 15% in an A/B).
        const pitch = c.geometry.pitch;
        const dropping = shifted and pitch != c.geometry.out_hw[1];
        var starts: [pv][2]usize = undefined;
        if (dropping) {
            var y = pixel / pitch;
            var x = pixel % pitch;
            for (&starts) |*start| {
                start.* = .{ y, x };
                x += lanes;
                while (x >= pitch) : (y += 1) x -= pitch;
            }
        }
        for (0..nr) |j| {
            const column = channel + j;
            const scale: VF = @splat(call.b_scale[column] * call.a_scale);
            const bias: VF = @splat(call.bias[column]);
            const offset: VF = @splat(call.b_zero[column] * (k * a_zero) - call.col_sum[column] * a_zero);
            var results: [pv]VF = undefined;
            for (&results, 0..) |*result, v| {
                const acc: VF = @floatFromInt(sums[j][v]);
                const value = (acc + offset) * scale + bias;
                result.* = if (call.q.requantize) requantized(value, &c.out_quantizer, call.q.dequantize_output, call.output_levels) else value;
            }
            if (call.steps.len > 0 and call.output_levels == null) call.chain(&results, .{ .channel = column });
            const row = call.out[column * plane ..][0..plane];
            for (results, 0..) |result, v| {
                const values: [lanes]f32 = result;
                if (dropping) {
                    c.storeDropping(row, starts[v], values);
                } else {
                    // No dropped positions (a 1×1 convolution): the rows are one run.
                    const first = pixel + v * lanes;
                    if (first + lanes <= plane) row[first..][0..lanes].* = values else @memcpy(row[first..], values[0 .. plane - first]);
                }
            }
        }
    }

    /// Stores one vector of positions from (y, x) into an output channel's row: the lanes
    /// at x ≥ the output width are dropped, and rows past the output's are not stored.
    inline fn storeDropping(c: *const PixelLanes, row: []f32, start: [2]usize, values: [lanes]f32) void {
        const width = c.geometry.out_hw[1];
        var y, var x = start;
        if (x + lanes <= width and (y + 1) * width <= row.len) {
            row[y * width + x ..][0..lanes].* = values;
            return;
        }
        var i: usize = 0;
        while (i < lanes and y < c.geometry.out_hw[0]) {
            const span = @min(lanes - i, c.geometry.pitch - x);
            if (x < width) {
                const count = @min(span, width - x);
                @memcpy(row[y * width + x ..][0..count], values[i..][0..count]);
            }
            i += span;
            y += 1;
            x = 0;
        }
    }
};

/// The quantizer of conv2d_int8's input: integer inputs (QLinearConv's) are already levels
/// (scale 1, zero point 0).
fn inputQuantizer(call: *const Call) Quantizer {
    return if (call.q.a_integer) .init(1, 0, call.q.a_min, call.q.a_max) else .init(call.a_scale, call.a_zero, call.q.a_min, call.q.a_max);
}

/// Tests set this to run the im2col path where `Implicit` fits.
var force_im2col = false;

/// Quantizes one NCHW image into `image`: u8, padded height × padded width × pixel_bytes
/// (the channels, or 4 for fewer channels padded with zero bytes), the border filled with
/// the zero point's byte.
fn quantizeImage(call: *const Call, x: []const f32, chw: []const usize, pixel_bytes: usize, padding: [2]usize, padded_hw: [2]usize, image: []u8) Error!void {
    std.debug.assert(pixel_bytes == chw[0] or (chw[0] < kernels.group_k and pixel_bytes == kernels.group_k));
    const Context = struct {
        call: *const Call,
        x: []const f32,
        channels: usize,
        pixel_bytes: usize,
        height: usize,
        width: usize,
        padding: [2]usize,
        padded_width: usize,
        image: []u8,
        quantizer: Quantizer,
        fn body(c: *const @This(), begin: usize, end: usize) Error!void {
            const zero_byte = c.call.zeroByte();
            const row_bytes = c.padded_width * c.pixel_bytes;
            for (begin..end) |padded_y| {
                const dst = c.image[padded_y * row_bytes ..][0..row_bytes];
                if (padded_y < c.padding[0] or padded_y >= c.padding[0] + c.height) {
                    @memset(dst, zero_byte);
                    continue;
                }
                @memset(dst[0 .. c.padding[1] * c.pixel_bytes], zero_byte);
                @memset(dst[(c.padding[1] + c.width) * c.pixel_bytes ..], zero_byte);
                const y = padded_y - c.padding[0];
                var x0: usize = 0;
                while (x0 < c.width) : (x0 += lanes) c.pixels(dst[(c.padding[1] + x0) * c.pixel_bytes ..], y, x0, @min(lanes, c.width - x0));
            }
        }

        /// Quantizes channels channel … channel + count_channels (at most 4) of up to 16
        /// pixels of row y into u32 lanes, channel + j in byte j of pixel i's lane.
        fn words(c: *const @This(), y: usize, x0: usize, count: usize, channel: usize, comptime count_channels: usize) @Vector(lanes, u32) {
            std.debug.assert(count_channels <= 4 and channel + count_channels <= c.channels);
            var result: @Vector(lanes, u32) = @splat(0);
            inline for (0..count_channels) |j| {
                const src = c.x[((channel + j) * c.height + y) * c.width + x0 ..][0..count];
                const bytes: @Vector(lanes, u32) = quantizeLanes(src, &c.quantizer);
                result |= bytes << @splat(8 * j);
            }
            return result;
        }

        /// `count` pixels (at most 16) of row y into dst (their NHWC bytes). The words of 16
        /// channels are transposed in registers so that each pixel takes one 16-byte store
        /// (a u32 store per pixel and 4 channels, and a byte store per odd channel, were most
        /// of this pass in perf: det_qdq's pre-pass took 18% of its time).
        fn pixels(c: *const @This(), dst: []u8, y: usize, x0: usize, count: usize) void {
            const channels = c.channels;
            std.debug.assert(dst.len >= count * channels);
            if (channels < 4) {
                const pixel_words = switch (channels) {
                    inline 1...3 => |n| c.words(y, x0, count, 0, n),
                    else => unreachable,
                };
                if (c.pixel_bytes == 4) {
                    // Padded to 4 channels: each pixel's word as it is (zero bytes past).
                    const bytes: [lanes * 4]u8 = @bitCast(pixel_words);
                    @memcpy(dst[0 .. count * 4], bytes[0 .. count * 4]);
                    return;
                }
                // The stem's 3 channels (and 1 or 2): the pixels are contiguous, so the
                // lanes' low bytes are packed into one run of count · channels bytes.
                const packed_bytes: [lanes * 4]u8 = switch (channels) {
                    inline 1...3 => |n| compressed(n, pixel_words),
                    else => unreachable,
                };
                @memcpy(dst[0 .. count * channels], packed_bytes[0 .. count * channels]);
                return;
            }
            var channel: usize = 0;
            while (channel + 16 <= channels) : (channel += 16) {
                const w0 = c.words(y, x0, count, channel, 4);
                const w1 = c.words(y, x0, count, channel + 4, 4);
                const w2 = c.words(y, x0, count, channel + 8, 4);
                const w3 = c.words(y, x0, count, channel + 12, 4);
                const low: @Vector(lanes, u64) = @bitCast(interleave(u32, w0, w1));
                const high: @Vector(lanes, u64) = @bitCast(interleave(u32, w2, w3));
                const rows: [lanes][16]u8 = @bitCast(interleave(u64, low, high));
                for (rows[0..count], 0..) |row, i| dst[i * channels + channel ..][0..16].* = row;
            }
            if (channel + 8 <= channels) {
                const rows: [lanes][8]u8 = @bitCast(interleave(u32, c.words(y, x0, count, channel, 4), c.words(y, x0, count, channel + 4, 4)));
                for (rows[0..count], 0..) |row, i| dst[i * channels + channel ..][0..8].* = row;
                channel += 8;
            }
            if (channel + 4 <= channels) {
                const values: [lanes][4]u8 = @bitCast(c.words(y, x0, count, channel, 4));
                for (values[0..count], 0..) |value, i| dst[i * channels + channel ..][0..4].* = value;
                channel += 4;
            }
            switch (channels - channel) {
                0 => {},
                inline 1...3 => |rest| {
                    const values: [lanes][4]u8 = @bitCast(c.words(y, x0, count, channel, rest));
                    for (values[0..count], 0..) |value, i| dst[i * channels + channel ..][0..rest].* = value[0..rest].*;
                },
                else => unreachable,
            }
        }
    };
    const context: Context = .{
        .call = call,
        .x = x,
        .channels = chw[0],
        .pixel_bytes = pixel_bytes,
        .height = chw[1],
        .width = chw[2],
        .padding = padding,
        .padded_width = padded_hw[1],
        .image = image,
        .quantizer = inputQuantizer(call),
    };
    try intra_op.parallelForTyped(0, padded_hw[0], parallel.grain(.medium, padded_hw[1] * pixel_bytes), &context, @TypeOf(context).body);
}

/// [a[0], b[0], a[1], b[1], …]: the 2 × 16 transpose step of quantizeImage's byte layout.
fn interleave(comptime T: type, a: @Vector(lanes, T), b: @Vector(lanes, T)) @Vector(2 * lanes, T) {
    const mask = comptime mask: {
        var m: [2 * lanes]i32 = undefined;
        for (0..lanes) |i| {
            m[2 * i] = i;
            m[2 * i + 1] = ~@as(i32, i);
        }
        break :mask m;
    };
    return @shuffle(T, a, b, mask);
}

/// The low `n` bytes of each lane of `words`, packed one lane after another (the first
/// 16 · n bytes of the result; the rest are zero).
fn compressed(comptime n: usize, words: @Vector(lanes, u32)) [lanes * 4]u8 {
    const bytes: @Vector(lanes * 4, u8) = @bitCast(words);
    const mask = comptime mask: {
        var m: [lanes * 4]i32 = undefined;
        for (&m, 0..) |*index, i| index.* = if (i < lanes * n) @intCast(i / n * 4 + i % n) else ~@as(i32, 0);
        break :mask m;
    };
    return @shuffle(u8, bytes, @as(@Vector(1, u8), @splat(0)), mask);
}

/// im2col rows from the padded NHWC image: per output pixel, for each tap, C bytes.
fn gatherRows(call: *const Call, window: Window, image: []const u8, channels: usize, padded_width: usize, out_width: usize, a: []u8) Error!void {
    const Context = struct {
        call: *const Call,
        window: Window,
        image: []const u8,
        channels: usize,
        padded_width: usize,
        out_width: usize,
        a: []u8,
        fn body(c: *const @This(), begin: usize, end: usize) Error!void {
            const w = c.window;
            for (begin..end) |row| {
                const oy = row / c.out_width;
                const ox = row % c.out_width;
                const dst = c.a[row * c.call.lda ..][0..c.call.lda];
                var offset: usize = 0;
                for (0..w.kernel[0]) |ky| {
                    const iy = oy * w.stride[0] + ky * w.dilation[0];
                    if (w.dilation[1] == 1) {
                        // A kernel row's taps are adjacent pixels: one copy of kw · C bytes
                        // (det's 3-channel stem made 9 calls of 3 bytes per row).
                        const span = w.kernel[1] * c.channels;
                        copyBytes(dst[offset..][0..span], c.image[(iy * c.padded_width + ox * w.stride[1]) * c.channels ..][0..span]);
                        offset += span;
                        continue;
                    }
                    for (0..w.kernel[1]) |kx| {
                        const ix = ox * w.stride[1] + kx * w.dilation[1];
                        copyBytes(dst[offset..][0..c.channels], c.image[(iy * c.padded_width + ix) * c.channels ..][0..c.channels]);
                        offset += c.channels;
                    }
                }
                @memset(dst[offset..], 0);
            }
        }
    };
    const context: Context = .{ .call = call, .window = window, .image = image, .channels = channels, .padded_width = padded_width, .out_width = out_width, .a = a };
    try intra_op.parallelForTyped(0, call.rows, parallel.grain(.copy_bytes, call.lda), &context, @TypeOf(context).body);
}

/// dst = src for the short runs of im2col (9 bytes for det's stem, up to a few hundred):
/// fixed-size moves, the last one overlapping the one before, instead of a call to memcpy
/// per run (memcpy was 8% of det_qdq's time in perf). Reads and writes stay inside the two
/// slices.
inline fn copyBytes(dst: []u8, src: []const u8) void {
    std.debug.assert(dst.len == src.len);
    const len = src.len;
    inline for (.{ 64, 16, 4 }) |size| {
        if (len >= size) {
            var i: usize = 0;
            while (i + size < len) : (i += size) dst[i..][0..size].* = src[i..][0..size].*;
            dst[len - size ..][0..size].* = src[len - size ..][0..size].*;
            return;
        }
    }
    for (dst, src) |*d, v| d.* = v;
}

/// The steps of `pointwise`: each a record [code, a, b, c, d] of the program. `acc` starts
/// as x; `t` is a per-channel table (a = its offset in the program, one value per index of
/// axis 1); `root` is x itself (a step of the chain that reads the chain's input again, as
/// HardSwish's x · clip(x + 3) does). The float operations are the elementwise ops' own
/// (division divides), so a chain computes exactly what its nodes did one by one.
pub const PointwiseStep = enum(u8) {
    /// dequantize(quantize(acc)): a = scale, b = zero point, c = qmin, d = qmax.
    round_trip = 0,
    add = 1,
    sub = 2,
    /// a - acc
    sub_from = 3,
    mul = 4,
    div = 5,
    /// a / acc
    div_into = 6,
    add_channel = 7,
    sub_channel = 8,
    sub_from_channel = 9,
    mul_channel = 10,
    div_channel = 11,
    div_into_channel = 12,
    add_root = 13,
    mul_root = 14,
    /// root = acc: the value two chains shared (read by both steps of x · clip(x + 3))
    /// becomes the root of the steps after it, so the two chains run as one.
    set_root = 15,
    /// quantize(acc) (QOperator ops' outputs): a, b, c, d as for round_trip.
    quantize = 16,
    /// (acc - b) · a (QOperator ops' inputs).
    dequantize = 17,
    /// acc + operand a (a = 0 or 1: quantized_pointwise's input `a` or `b`), an operand of
    /// x's shape or one value per plane ([N, C, 1, 1] of an NCHW x): a residual Add or a
    /// squeeze-excitation Mul between two QDQ round trips, fused with them.
    add_operand = 18,
    /// acc · operand a (as add_operand).
    mul_operand = 19,
    /// @mulAdd(acc, t[c], t[C + c]) with the table t at a (2 · C values: scales, then shifts):
    /// batch_norm with constant statistics, as its kernel computes it (one rounding).
    affine_channel = 20,
};

/// The most tensor operands (quantized_pointwise's optional inputs `a` and `b`).
pub const max_operands = 2;

/// A run-time operand's values for one piece: the piece's own elements, or one value (a
/// per-plane operand) that every element of the piece takes.
const Operand = struct {
    values: []const f32 = &.{},
    broadcast: bool = false,
};
/// For steps that read no operands (conv2d_int8's, a level table's).
const no_operands: [max_operands]Operand = @splat(.{});

const step_len = 5;
/// The most steps a program holds (the ops' `steps` bound).
const max_steps = 1 << 10;

/// conv2d_int8's optional chain: a quantized_pointwise program of `steps` records.
pub const Chain = struct {
    program: *Tensor,
    steps: i64,
};
/// Elements per piece: a piece is worked step by step in a stack buffer.
const pointwise_piece = 1024;

/// A checked program step.
const Step = struct {
    code: PointwiseStep,
    a: f32,
    b: f32,
    c: f32,
    d: f32,
    table: []const f32 = &.{},
};

/// Checks a program's records into `steps`; operand steps may name operands below
/// `operand_count` only (conv2d_int8's epilogue takes none).
fn checkProgram(comptime op: []const u8, program: []const f32, step_count: usize, channels: usize, operand_count: usize, steps: []Step) Error!void {
    if (program.len < step_count * step_len) return status.fail(error.ShapeMismatch, op ++ ": a program of {d} steps needs at least {d} values, got {d}", .{ step_count, step_count * step_len, program.len });
    for (steps, 0..) |*step, i| {
        const record = program[i * step_len ..][0..step_len];
        const raw = record[0];
        if (!(raw >= 0 and raw <= @intFromEnum(PointwiseStep.affine_channel)) or raw != @round(raw)) {
            return status.fail(error.InvalidArgument, op ++ ": step {d} has code {d}; codes are integers 0 to {d}", .{ i, raw, @intFromEnum(PointwiseStep.affine_channel) });
        }
        const code: PointwiseStep = @enumFromInt(@as(u8, @intFromFloat(raw)));
        step.* = .{ .code = code, .a = record[1], .b = record[2], .c = record[3], .d = record[4] };
        switch (code) {
            .dequantize => if (!std.math.isFinite(step.a) or !std.math.isFinite(step.b)) {
                return status.fail(error.InvalidArgument, op ++ ": step {d}'s scale {d} and zero point {d} must be finite", .{ i, step.a, step.b });
            },
            .round_trip, .quantize => {
                if (!(step.a > 0) or !std.math.isFinite(step.a)) return status.fail(error.InvalidArgument, op ++ ": step {d}'s scale is {d}; it must be finite and greater than 0", .{ i, step.a });
                if (!(step.c < step.d) or step.c != @round(step.c) or step.d != @round(step.d) or step.c < -(1 << 24) or step.d > 1 << 24) {
                    return status.fail(error.InvalidArgument, op ++ ": step {d}'s range [{d}, {d}] must be integers, low below high", .{ i, step.c, step.d });
                }
                if (step.b != @round(step.b) or step.b < step.c or step.b > step.d) return status.fail(error.InvalidArgument, op ++ ": step {d}'s zero point {d} is outside [{d}, {d}]", .{ i, step.b, step.c, step.d });
            },
            .add_channel, .sub_channel, .sub_from_channel, .mul_channel, .div_channel, .div_into_channel, .affine_channel => {
                // affine_channel's table holds a scale and a shift per channel.
                const len = if (code == .affine_channel) 2 * channels else channels;
                const offset = step.a;
                if (!(offset >= 0) or offset != @round(offset) or offset + @as(f32, @floatFromInt(len)) > @as(f32, @floatFromInt(program.len))) {
                    return status.fail(error.InvalidArgument, op ++ ": step {d}'s table at {d} does not hold {d} values inside a program of {d} values", .{ i, offset, len, program.len });
                }
                const start: usize = @intFromFloat(offset);
                step.table = program[start..][0..len];
            },
            .add_operand, .mul_operand => if (!(step.a >= 0 and step.a < @as(f32, @floatFromInt(operand_count))) or step.a != @round(step.a)) {
                return status.fail(error.InvalidArgument, op ++ ": step {d} reads operand {d}, but {d} operands were given", .{ i, step.a, operand_count });
            },
            else => {},
        }
    }
}

/// Runs a chain of elementwise steps over x (float32; per-channel steps along axis 1) in one
/// pass: what a QDQ model's Mul, Add, Div and QuantizeLinear/DequantizeLinear pairs between
/// two convolutions did in as many passes over memory.
/// `operands` (at most max_operands) are the tensors add_operand/mul_operand steps read: each
/// of x's shape, or of x's first two dims then 1's (one value per plane).
pub fn pointwise(x_input: *Tensor, program_input: *Tensor, step_count_value: i64, operand_inputs: []const *Tensor) Error!*Tensor {
    try requireFloat("quantized_pointwise", "x", x_input);
    try requireFloat("quantized_pointwise", "program", program_input);
    const step_count: usize = std.math.cast(usize, step_count_value) orelse 0;
    const program_tensor = try shape_ops.contiguous(program_input);
    defer program_tensor.release();
    const dims = x_input.dims();
    const channels: usize = if (dims.len >= 2) dims[1] else 1;
    var steps_buffer: [max_steps]Step = undefined;
    if (step_count < 1 or step_count > max_steps) return status.fail(error.InvalidArgument, "quantized_pointwise: a program has 1 to {d} steps, got {d}", .{ max_steps, step_count });
    const steps = steps_buffer[0..step_count];
    if (operand_inputs.len > max_operands) return status.fail(error.InvalidArgument, "quantized_pointwise: at most {d} operands, got {d}", .{ max_operands, operand_inputs.len });
    try checkProgram("quantized_pointwise", program_tensor.f32Slice(), step_count, channels, operand_inputs.len, steps);
    const x = try shape_ops.contiguous(x_input);
    defer x.release();
    var operand_tensors: [max_operands]*Tensor = undefined;
    var operand_count: usize = 0;
    defer for (operand_tensors[0..operand_count]) |t| t.release();
    var operand_values: [max_operands][]const f32 = undefined;
    var broadcast: [max_operands]bool = undefined;
    for (operand_inputs, 0..) |input, i| {
        try requireFloat("quantized_pointwise", "operand", input);
        broadcast[i] = try operandIsPerPlane(input, dims);
        operand_tensors[i] = try shape_ops.contiguous(input);
        operand_count += 1;
        operand_values[i] = operand_tensors[i].f32Slice();
    }
    const out = try tensor.createUninit(.float32, dims);
    errdefer out.release();
    var inner: usize = 1;
    if (dims.len >= 2) for (dims[2..]) |d| {
        inner *= d;
    };
    const pieces = divCeil(@max(inner, 1), pointwise_piece);
    const planes = if (inner == 0) 0 else x.numel() / inner;
    const Context = struct {
        x: []const f32,
        out: []f32,
        steps: []const Step,
        channels: usize,
        inner: usize,
        pieces: usize,
        table: ?Table,
        operands: []const []const f32,
        broadcast: []const bool,
        fn body(c: *const @This(), begin: usize, end: usize) Error!void {
            var acc: [pointwise_piece]f32 align(64) = undefined;
            var saved: [pointwise_piece]f32 align(64) = undefined;
            var levels: [Table.len]f32 align(64) = undefined;
            var levels_channel: ?usize = null;
            for (begin..end) |item| {
                const plane = item / c.pieces;
                const piece = item % c.pieces;
                const channel = plane % c.channels;
                const start = plane * c.inner + piece * pointwise_piece;
                const len = @min(pointwise_piece, c.inner - piece * pointwise_piece);
                const root: []const f32 = c.x[start..][0..len];
                var piece_operands: [max_operands]Operand = @splat(.{});
                for (c.operands, c.broadcast, piece_operands[0..c.operands.len]) |values, per_plane, *piece_operand| {
                    piece_operand.* = if (per_plane) .{ .values = values[plane..][0..1], .broadcast = true } else .{ .values = values[start..][0..len] };
                }
                const table = c.table orelse {
                    runStepsInto(c.steps, root, acc[0..len], saved[0..len], channel, &piece_operands, c.out[start..][0..len]);
                    continue;
                };
                if (levels_channel == null or (table.per_channel and levels_channel.? != channel)) {
                    table.build(c.steps, channel, &levels);
                    levels_channel = channel;
                }
                // The steps before the table's quantization (none when it is the first: the
                // table then looks the input up directly).
                const before = c.steps[0..table.split];
                if (before.len > 0) runStepsInto(before, root, acc[0..len], saved[0..len], channel, &piece_operands, acc[0..len]);
                lookUp(c.steps[table.split], if (before.len > 0) acc[0..len] else root, &levels, c.out[start..][0..len]);
            }
        }
    };
    const context: Context = .{ .x = x.f32Slice(), .out = out.f32Slice(), .steps = steps, .channels = channels, .inner = inner, .pieces = pieces, .table = Table.of(steps, inner), .operands = operand_values[0..operand_count], .broadcast = broadcast[0..operand_count] };
    try intra_op.parallelForTyped(0, planes * pieces, parallel.grain(.medium, @min(inner, pointwise_piece) * step_count), &context, Context.body);
    return out;
}

/// Whether a quantized_pointwise operand holds one value per plane of x (x's first two dims,
/// then 1's) rather than x's own shape; other shapes are refused.
fn operandIsPerPlane(operand: *const Tensor, dims: []const usize) Error!bool {
    const od = operand.dims();
    if (std.mem.eql(usize, od, dims)) return false;
    const per_plane = od.len == dims.len and dims.len >= 2 and std.mem.eql(usize, od[0..2], dims[0..2]) and
        for (od[2..]) |d| {
            if (d != 1) break false;
        } else true;
    if (!per_plane) return status.fail(error.ShapeMismatch, "quantized_pointwise: an operand of shape {f} fits neither x's {f} nor one value per plane", .{ status.shape(od), status.shape(dims) });
    return true;
}

/// Runs `steps` over acc (a piece of one channel's plane, whose input `root` is), `saved`
/// holding the value a set_root step keeps, `operands` the piece's operand values.
fn runSteps(steps: []const Step, acc: []f32, root_input: []const f32, saved: []f32, channel: usize, operands: *const [max_operands]Operand) void {
    std.debug.assert(acc.len == root_input.len and saved.len == acc.len);
    var root = root_input;
    for (steps) |step| {
        if (step.code == .set_root) {
            @memcpy(saved, acc);
            root = saved;
        } else {
            run(step, acc, acc, root, channel, operands);
        }
    }
}

/// runSteps on a piece whose input is `input` (not copied into acc first: the first step
/// reads it) and whose result goes to `out` (the last step writes it there, not into acc
/// for a copy after): two passes fewer over each piece. Operands and channel as runSteps.
fn runStepsInto(steps: []const Step, input: []const f32, acc: []f32, saved: []f32, channel: usize, operands: *const [max_operands]Operand, out: []f32) void {
    std.debug.assert(steps.len > 0 and acc.len == input.len and saved.len == acc.len and out.len == acc.len);
    var root = input;
    // Where the value so far is: the input until a step writes acc.
    var value: []const f32 = input;
    for (steps, 0..) |step, i| {
        const last = i + 1 == steps.len;
        if (step.code == .set_root) {
            // The value so far becomes the root; before any step it is the input itself.
            if (value.ptr != input.ptr) {
                @memcpy(saved, value);
                root = saved;
            }
            if (last and out.ptr != value.ptr) @memcpy(out, value);
            continue;
        }
        const dst = if (last) out else acc;
        run(step, value, dst, root, channel, operands);
        value = dst;
    }
}

/// A program's steps after its first quantization as a table of their results per
/// quantized level. After a round_trip or quantize step to at most 256 levels, every later
/// step is a function of the level alone (unless it reads a root set before that step), so
/// they run once on each of the 256 values and every element looks its result up: the
/// same float operations on the same values, so the same results as running the steps one by
/// one. Rec's hard-swish chains (14 steps, six round trips) ran at 6 ns an element.
const Table = struct {
    /// Index of the quantization step: the steps before it run on every element.
    split: usize,
    /// Whether a later step reads a per-channel operand (then one table per channel).
    per_channel: bool,

    const len = 256;

    /// The table form of `steps` on planes of `inner` elements, or null where a later step
    /// reads the chain's input, the range is wider than 256 levels, or per-channel tables
    /// would cost more than the steps (planes below two tables' worth of elements).
    fn of(steps: []const Step, inner: usize) ?Table {
        const split = for (steps, 0..) |step, i| {
            if (step.code == .round_trip or step.code == .quantize) break i;
        } else return null;
        const q = steps[split];
        if (q.d - q.c >= len) return null;
        var per_channel = false;
        var root_set = false;
        for (steps[split + 1 ..]) |step| {
            switch (step.code) {
                .set_root => root_set = true,
                .add_root, .mul_root => if (!root_set) return null,
                // Per-element operands: the later steps are no function of the level alone.
                .add_operand, .mul_operand => return null,
                else => per_channel = per_channel or isChannelStep(step.code),
            }
        }
        if (per_channel and inner < 2 * len) return null;
        return .{ .split = split, .per_channel = per_channel };
    }

    /// levels[i] = the later steps' result for quantized level q.c + i (entries past the
    /// range repeat its top; no element indexes them).
    fn build(table: Table, steps: []const Step, channel: usize, levels: *[len]f32) void {
        const q = steps[table.split];
        var saved: [len]f32 align(64) = undefined;
        for (levels, 0..) |*level, i| {
            const value = @min(q.c + @as(f32, @floatFromInt(i)), q.d);
            // round_trip's own dequantization, (q - zero point) · scale, as the vector code does it.
            level.* = if (q.code == .round_trip) (value - q.b) * q.a else value;
        }
        // `of` refused a root read before a set_root here, so `saved` needs no contents, and
        // operand steps, so no operands are needed.
        runSteps(steps[table.split + 1 ..], levels, &saved, &saved, channel, &no_operands);
    }
};

/// out = levels[quantize(acc) - qmin], the quantization as `run` does it (vectors of 16, then
/// one by one), so each element gets the level the step-by-step path gives it.
fn lookUp(q: Step, acc: []const f32, levels: *const [Table.len]f32, out: []f32) void {
    std.debug.assert(acc.len == out.len);
    const table_vectors: [Table.len / lanes]VF = @bitCast(levels.*);
    const quantizer: Quantizer = .init(q.a, q.b, q.c, q.d);
    var i: usize = 0;
    while (i + lanes <= acc.len) : (i += lanes) {
        const level = quantizer.apply(acc[i..][0..lanes].*) - quantizer.qmin;
        const indices: @Vector(lanes, i32) = @intFromFloat(level);
        if (comptime has_avx512) {
            out[i..][0..lanes].* = permuteLookUp(&table_vectors, indices);
        } else {
            const array: [lanes]i32 = indices;
            inline for (0..lanes) |j| out[i + j] = levels[@intCast(array[j])];
        }
    }
    while (i < acc.len) : (i += 1) {
        out[i] = levels[@intFromFloat(quantizeValue(acc[i], q.a, q.b, q.c, q.d) - q.c)];
    }
}

/// Fills levels with the chain's result on each requantized output level's value
/// ((level - zero point) · scale, as the epilogue dequantizes), when conv2d_int8's output is
/// a QDQ pair of at most 256 levels and no step reads a per-channel operand.
fn outputTable(q: Quantization, steps: []const Step, levels: *align(64) [Table.len]f32) bool {
    if (!q.requantize or !q.dequantize_output or q.out_max - q.out_min >= Table.len) return false;
    for (steps) |step| if (isChannelStep(step.code)) return false;
    var inputs: [Table.len]f32 align(64) = undefined;
    var saved: [Table.len]f32 align(64) = undefined;
    for (&inputs, 0..) |*input, i| {
        const level = @min(q.out_min + @as(f32, @floatFromInt(i)), q.out_max);
        input.* = (level - q.out_zero) * q.out_scale;
    }
    levels.* = inputs;
    // conv2d_int8's programs have no operand steps (checkProgram with 0 operands).
    runSteps(steps, levels, &inputs, &saved, 0, &no_operands);
    return true;
}

/// levels[indices] (float indices in [0, 256)).
inline fn lookUpIndices(indices_float: VF, levels: *align(64) const [Table.len]f32) VF {
    const indices: @Vector(lanes, i32) = @intFromFloat(indices_float);
    if (comptime has_avx512) {
        const table_vectors: *const [Table.len / lanes]VF = @ptrCast(levels);
        return permuteLookUp(table_vectors, indices);
    }
    const array: [lanes]i32 = indices;
    var out: [lanes]f32 = undefined;
    inline for (0..lanes) |j| out[j] = levels[@intCast(array[j])];
    return out;
}

/// levels[quantize(v) - qmin] on one vector, as `lookUp` does it.
inline fn lookUpVector(quantizer: *const Quantizer, v: VF, levels: *align(64) const [Table.len]f32) VF {
    return lookUpIndices(quantizer.apply(v) - quantizer.qmin, levels);
}

const has_avx512 = @import("builtin").cpu.arch == .x86_64 and std.Target.x86.featureSetHas(@import("builtin").cpu.features, .avx512f);
/// table[indices] for 16 indices in [0, 256), the table in 16 registers: vpermi2ps picks
/// from each 32-entry pair by an index's low 5 bits, then bits 5, 6 and 7 choose among the
/// 8 pairs' picks. One vgatherdps per 16 elements still took 60% of a chain's time in perf
/// (rec_qdq); these permutes and blends are single-cycle register operations.
inline fn permuteLookUp(table: *const [Table.len / lanes]VF, indices: @Vector(lanes, i32)) VF {
    var picks: [8]VF = undefined;
    inline for (&picks, 0..) |*pick, pair| {
        var selected: @Vector(lanes, i32) = indices;
        asm ("vpermi2ps %[high], %[low], %[selected]"
            : [selected] "+v" (selected),
            : [low] "v" (table[2 * pair]),
              [high] "v" (table[2 * pair + 1]),
        );
        pick.* = @bitCast(selected);
    }
    const zero: @Vector(lanes, i32) = @splat(0);
    comptime var width: usize = 8;
    inline for (5..8) |bit| {
        const high = (indices & @as(@Vector(lanes, i32), @splat(1 << bit))) != zero;
        width /= 2;
        inline for (0..width) |j| picks[j] = @select(f32, high, picks[2 * j + 1], picks[2 * j]);
    }
    return picks[0];
}

/// One step over a piece of one channel's plane.
fn run(step: Step, src: []const f32, dst: []f32, root: []const f32, channel: usize, operands: *const [max_operands]Operand) void {
    std.debug.assert(src.len == dst.len);
    switch (step.code) {
        .round_trip => roundTripSlice(src, dst, step.a, step.b, step.c, step.d),
        .quantize => quantizeSlice(src, dst, step.a, step.b, step.c, step.d),
        .dequantize => dequantizeSlice(src, dst, step.a, step.b),
        .set_root => unreachable,
        .affine_channel => {
            const channels = step.table.len / 2;
            const scale = step.table[channel];
            const shift = step.table[channels + channel];
            var i: usize = 0;
            while (i + lanes <= src.len) : (i += lanes) {
                dst[i..][0..lanes].* = @mulAdd(VF, src[i..][0..lanes].*, @splat(scale), @splat(shift));
            }
            while (i < src.len) : (i += 1) dst[i] = @mulAdd(f32, src[i], scale, shift);
        },
        inline .add_operand, .mul_operand => |code| {
            // checkProgram bounded a by the operand count.
            const operand = operands[@intFromFloat(step.a)];
            if (operand.broadcast) {
                runOperand(code, src, dst, operand.values[0..1], true);
            } else {
                runOperand(code, src, dst, operand.values[0..src.len], false);
            }
        },
        // A loop per code: a switch inside the loop cost 3 times the arithmetic.
        inline else => |code| {
            const operand: f32 = if (comptime isChannelStep(code)) step.table[channel] else step.a;
            var i: usize = 0;
            const s: VF = @splat(operand);
            while (i + lanes <= src.len) : (i += lanes) {
                const v: VF = src[i..][0..lanes].*;
                const r: VF = root[i..][0..lanes].*;
                dst[i..][0..lanes].* = apply(VF, code, v, s, r);
            }
            while (i < src.len) : (i += 1) dst[i] = apply(f32, code, src[i], operand, root[i]);
        },
    }
}

/// dst = src + operand or src · operand, the operand one value (broadcast) or src's length.
inline fn runOperand(comptime code: PointwiseStep, src: []const f32, dst: []f32, operand: []const f32, comptime broadcast: bool) void {
    const Apply = struct {
        inline fn op(comptime T: type, v: T, o: T) T {
            return if (code == .add_operand) v + o else v * o;
        }
    };
    var i: usize = 0;
    while (i + lanes <= src.len) : (i += lanes) {
        const o: VF = if (broadcast) @splat(operand[0]) else operand[i..][0..lanes].*;
        dst[i..][0..lanes].* = Apply.op(VF, src[i..][0..lanes].*, o);
    }
    while (i < src.len) : (i += 1) dst[i] = Apply.op(f32, src[i], operand[if (broadcast) 0 else i]);
}

/// Which channels a chain's vectors hold: `columns` (column, count): one pixel's channels
/// column … column + count each, lanes past count padding that is never stored (the GEMM
/// epilogue); `channel`: pixels of that one channel (the 1×1 path with pixels in lanes).
const Operands = union(enum) {
    columns: [2]usize,
    channel: usize,
};

/// The chain's steps on output vectors (see `Operands`), `saved` holding the root. Each step
/// is the vector code of `run` (per-channel operands taken per lane), and the table path
/// gives the steps' own values: the same float operations as quantized_pointwise, so the same
/// results.
fn chainVectors(steps: []const Step, values: []VF, saved: []VF, operands: Operands) void {
    std.debug.assert(values.len == saved.len);
    // The chain's input is its root until a set_root step.
    @memcpy(saved, values);
    for (steps) |step| switch (step.code) {
        .round_trip => {
            const quantizer: Quantizer = .init(step.a, step.b, step.c, step.d);
            for (values) |*v| v.* = (quantizer.apply(v.*) - quantizer.zero_point) * quantizer.scale;
        },
        .quantize => {
            const quantizer: Quantizer = .init(step.a, step.b, step.c, step.d);
            for (values) |*v| v.* = quantizer.apply(v.*);
        },
        .dequantize => for (values) |*v| {
            v.* = (v.* - @as(VF, @splat(step.b))) * @as(VF, @splat(step.a));
        },
        .set_root => @memcpy(saved, values),
        // checkProgram refused operand steps in conv2d_int8's programs.
        .add_operand, .mul_operand => unreachable,
        .affine_channel => {
            const channels = step.table.len / 2;
            const scale: VF, const shift: VF = switch (operands) {
                .columns => |span| .{ padded(step.table[0..channels], span[0], span[1]), padded(step.table[channels..], span[0], span[1]) },
                .channel => |channel| .{ @splat(step.table[channel]), @splat(step.table[channels + channel]) },
            };
            for (values) |*v| v.* = @mulAdd(VF, v.*, scale, shift);
        },
        inline else => |code| {
            const operand: VF = if (comptime !isChannelStep(code)) @splat(step.a) else switch (operands) {
                .columns => |span| padded(step.table, span[0], span[1]),
                .channel => |channel| @splat(step.table[channel]),
            };
            for (values, saved) |*v, r| v.* = apply(VF, code, v.*, operand, r);
        },
    };
}

fn isChannelStep(code: PointwiseStep) bool {
    return switch (code) {
        .add_channel, .sub_channel, .sub_from_channel, .mul_channel, .div_channel, .div_into_channel, .affine_channel => true,
        else => false,
    };
}

inline fn apply(comptime T: type, comptime code: PointwiseStep, v: T, s: T, r: T) T {
    return switch (code) {
        .add, .add_channel => v + s,
        .sub, .sub_channel => v - s,
        .sub_from, .sub_from_channel => s - v,
        .mul, .mul_channel => v * s,
        .div, .div_channel => v / s,
        .div_into, .div_into_channel => s / v,
        .add_root => r + v,
        .mul_root => r * v,
        .round_trip, .set_root, .quantize, .dequantize, .add_operand, .mul_operand, .affine_channel => unreachable,
    };
}

// ---------------------------------------------------------------------------------------

const testing = std.testing;

test "transpose swaps rows and columns; copyBytes copies runs of every length exactly" {
    var rows: [lanes]VF = undefined;
    for (&rows, 0..) |*row, r| {
        for (0..lanes) |j| row[j] = @floatFromInt(r * 100 + j);
    }
    const columns = transpose(rows);
    for (0..lanes) |j| for (0..lanes) |r| try testing.expectEqual(rows[r][j], columns[j][r]);
    var source: [300]u8 = undefined;
    for (&source, 0..) |*byte, i| byte.* = @truncate(i * 7 + 1);
    for (0..source.len - 2) |len| {
        // Sentinels on both sides: a copy must not write outside its run.
        var target: [300]u8 = @splat(0xAA);
        copyBytes(target[1..][0..len], source[2..][0..len]);
        try testing.expectEqual(@as(u8, 0xAA), target[0]);
        try testing.expectEqualSlices(u8, source[2..][0..len], target[1..][0..len]);
        for (target[1 + len ..]) |byte| try testing.expectEqual(@as(u8, 0xAA), byte);
    }
}

test "quantizeVector equals quantizeValue: ties, near ties, saturation, infinities and NaN" {
    var prng = std.Random.DefaultPrng.init(11);
    const random = prng.random();
    const ranges = [_][3]f32{ .{ 0, 255, 0 }, .{ 0, 255, 131 }, .{ -128, 127, 0 }, .{ -128, 127, -128 }, .{ -(1 << 24), 1 << 24, 0 } };
    for (0..2000) |round| {
        const range = ranges[round % ranges.len];
        const scale = std.math.exp2(random.float(f32) * 24 - 16) * (1 + random.float(f32));
        var x: VF = undefined;
        for (0..lanes) |i| {
            const level: f32 = @floatFromInt(random.intRangeAtMost(i32, -300, 300));
            x[i] = switch (i % 4) {
                // Ties and a few ulps either side of them.
                0 => (level + 0.5) * scale,
                1 => std.math.nextAfter(f32, (level + 0.5) * scale, std.math.inf(f32)),
                2 => std.math.nextAfter(f32, (level + 0.5) * scale, -std.math.inf(f32)),
                else => (random.float(f32) - 0.5) * scale * 1000,
            };
        }
        if (round % 7 == 0) {
            x[3] = std.math.inf(f32);
            x[7] = -std.math.inf(f32);
            x[11] = std.math.nan(f32);
            x[15] = 3e38;
        }
        const got: [lanes]f32 = quantizeVector(x, scale, range[2], range[0], range[1]);
        for (0..lanes) |i| try testing.expectEqual(quantizeValue(x[i], scale, range[2], range[0], range[1]), got[i]);
    }
}

test "roundEven rounds ties to even and saturates through quantizeValue" {
    try testing.expectEqual(@as(f32, 0), roundEven(0.5));
    try testing.expectEqual(@as(f32, 2), roundEven(1.5));
    try testing.expectEqual(@as(f32, 2), roundEven(2.5));
    try testing.expectEqual(@as(f32, -2), roundEven(-2.5));
    try testing.expectEqual(@as(f32, 3), roundEven(2.6));
    try testing.expectEqual(@as(f32, 255), quantizeValue(1e9, 0.1, 3, 0, 255));
    try testing.expectEqual(@as(f32, -128), quantizeValue(-1e30, 0.1, 0, -128, 127));
    try testing.expectEqual(@as(f32, 4), quantizeValue(0.25, 0.5, 4, 0, 255));
    try testing.expectEqual(@as(f32, 6), quantizeValue(0.75, 0.5, 4, 0, 255));
}

test "quantize_linear per channel, and bad scales and zero points are refused" {
    const x = try tensor.createUninit(.float32, &.{ 2, 3 });
    defer x.release();
    @memcpy(x.f32Slice(), &[_]f32{ 1, 2, 3, -1, -2, 300 });
    const scale = try tensor.createUninit(.float32, &.{3});
    defer scale.release();
    @memcpy(scale.f32Slice(), &[_]f32{ 0.5, 1, 2 });
    const zero = try tensor.createUninit(.int32, &.{3});
    defer zero.release();
    @memcpy(zero.i32Slice(), &[_]i32{ 10, 0, -1 });
    const q = try quantizeLinear(x, scale, zero, 1, -128, 127, false);
    defer q.release();
    try testing.expectEqualSlices(f32, &[_]f32{ 12, 2, 1, 8, -2, 127 }, q.f32Slice());
    const d = try dequantizeLinear(q, scale, zero, -1, -128, 127);
    defer d.release();
    try testing.expectEqualSlices(f32, &[_]f32{ 1, 2, 4, -1, -2, 256 }, d.f32Slice());
    const round_trip = try quantizeLinear(x, scale, zero, 1, -128, 127, true);
    defer round_trip.release();
    try testing.expectEqualSlices(f32, d.f32Slice(), round_trip.f32Slice());
    scale.f32Slice()[1] = 0;
    try testing.expectError(error.InvalidArgument, quantizeLinear(x, scale, zero, 1, -128, 127, false));
    scale.f32Slice()[1] = std.math.nan(f32);
    try testing.expectError(error.InvalidArgument, quantizeLinear(x, scale, zero, 1, -128, 127, false));
    scale.f32Slice()[1] = 1;
    zero.i32Slice()[0] = 200;
    try testing.expectError(error.InvalidArgument, quantizeLinear(x, scale, zero, 1, -128, 127, false));
    zero.i32Slice()[0] = 0;
    try testing.expectError(error.ShapeMismatch, quantizeLinear(x, scale, zero, 0, -128, 127, false));
    try testing.expectError(error.InvalidArgument, quantizeLinear(x, scale, zero, 2, -128, 127, false));
}

fn testInfo(n: usize, b_scale: f32, b_zero: []const f32, col_sum: []const f32, bias: f32) !*Tensor {
    const info = try tensor.createUninit(.float32, &.{ 4, n });
    const v = info.f32Slice();
    for (0..n) |j| {
        v[j] = b_scale;
        v[n + j] = bias;
        v[2 * n + j] = b_zero[j];
        v[3 * n + j] = col_sum[j];
    }
    return info;
}

/// A 1-D float32 tensor of `values` (a test's program).
fn vectorTensor(values: []const f32) !*Tensor {
    const t = try tensor.createUninit(.float32, &.{values.len});
    @memcpy(t.f32Slice(), values);
    return t;
}

fn scalarTensor(value: f32) !*Tensor {
    const t = try tensor.createUninit(.float32, &.{1});
    t.f32Slice()[0] = value;
    return t;
}

test "matmul_int8 matches a reference on quantized values, zero points and requantization included" {
    var prng = std.Random.DefaultPrng.init(7);
    const random = prng.random();
    const m = 37;
    const k = 23;
    const n = 19;
    const a = try tensor.createUninit(.float32, &.{ m, k });
    defer a.release();
    for (a.f32Slice()) |*v| v.* = random.float(f32) * 4 - 2;
    const w = try tensor.createUninit(.int32, &.{ k, n });
    defer w.release();
    for (w.i32Slice()) |*v| v.* = random.intRangeAtMost(i32, -128, 127);
    const packed_b = try packInt8(w, k, n, false);
    defer packed_b.release();
    var b_zero: [n]f32 = undefined;
    var col_sum: [n]f32 = @splat(0);
    for (0..n) |j| {
        b_zero[j] = @floatFromInt(random.intRangeAtMost(i32, -3, 3));
        for (0..k) |i| col_sum[j] += @floatFromInt(w.i32Slice()[i * n + j]);
    }
    const info = try testInfo(n, 0.01, &b_zero, &col_sum, 0.5);
    defer info.release();
    const a_scale = try scalarTensor(4.0 / 255.0);
    defer a_scale.release();
    const a_zero = try scalarTensor(-3);
    defer a_zero.release();
    const q: Quantization = .{ .n = n, .k = k, .a_integer = false, .a_min = -128, .a_max = 127, .requantize = true, .dequantize_output = false, .out_scale = 0.05, .out_zero = 10, .out_min = 0, .out_max = 255 };
    for ([_]kernels.Kernel{ .reference, .widened, .vnni, .amx }) |kernel| {
        if (kernel == .vnni and !kernels.vnniSupported()) continue;
        if (kernel == .amx and kernels.Kernel.pick() != .amx) continue;
        kernels.forced = kernel;
        defer kernels.forced = null;
        const out = try matmulInt8(q, a, packed_b, info, a_scale, a_zero);
        defer out.release();
        for (0..m) |r| for (0..n) |j| {
            var acc: f32 = 0;
            for (0..k) |i| {
                const qa = quantizeValue(a.f32Slice()[r * k + i], 4.0 / 255.0, -3, -128, 127);
                acc += (qa + 3) * (@as(f32, @floatFromInt(w.i32Slice()[i * n + j])) - b_zero[j]);
            }
            const expected = quantizeValue(acc * (4.0 / 255.0) * 0.01 + 0.5, 0.05, 10, 0, 255);
            try testing.expectApproxEqAbs(expected, out.f32Slice()[r * n + j], 1);
        };
    }
}

test "conv2d_int8 equals a direct convolution of the quantized input, with padding and stride" {
    // Channels 1, 2, 3 (packed pixels), 7 (4, then 3), 8, 16 and 29 (16, 8, 4, then 1),
    // widths below and above 16 pixels (a short tail), 21 output channels (16, then 5) over
    // 15 to 105 output pixels (full and short 16-row transposes), at 1 and 2 threads.
    const settings = @import("../settings.zig");
    settings.resetForTesting();
    defer settings.resetForTesting();
    var prng = std.Random.DefaultPrng.init(3);
    const random = prng.random();
    const c_out = 21;
    const height = 6;
    for ([_][2]usize{ .{ 3, 7 }, .{ 7, 19 }, .{ 8, 35 }, .{ 1, 19 }, .{ 2, 5 }, .{ 16, 17 }, .{ 29, 35 } }) |config| {
        const c_in = config[0];
        const width = config[1];
        const x = try tensor.createUninit(.float32, &.{ 2, c_in, height, width });
        defer x.release();
        for (x.f32Slice()) |*v| v.* = @floatFromInt(random.intRangeAtMost(i32, 0, 255));
        const k = c_in * 9;
        const w = try tensor.createUninit(.int32, &.{ c_out, k });
        defer w.release();
        for (w.i32Slice()) |*v| v.* = random.intRangeAtMost(i32, -128, 127);
        const packed_b = try packInt8(w, @intCast(k), c_out, true);
        defer packed_b.release();
        var b_zero: [c_out]f32 = @splat(0);
        var col_sum: [c_out]f32 = @splat(0);
        for (0..c_out) |j| for (0..k) |i| {
            col_sum[j] += @floatFromInt(w.i32Slice()[j * k + i]);
        };
        b_zero[1] = 2;
        const info = try testInfo(c_out, 1, &b_zero, &col_sum, 0);
        defer info.release();
        const one = try scalarTensor(1);
        defer one.release();
        const a_zero = try scalarTensor(17);
        defer a_zero.release();
        const q: Quantization = .{ .n = c_out, .k = k, .a_integer = true, .a_min = 0, .a_max = 255, .requantize = false, .dequantize_output = false, .out_scale = 1, .out_zero = 0, .out_min = 0, .out_max = 0 };
        const window: Window = .{ .kernel = .{ 3, 3 }, .stride = .{ 2, 1 }, .padding = .{ 1, 1 }, .dilation = .{ 1, 1 } };
        for ([_]i64{ 1, 2 }) |threads| {
            try settings.setNumThreads(threads);
            const out = try conv2dInt8(q, window, x, packed_b, info, one, a_zero, null);
            defer out.release();
            try testing.expectEqualSlices(usize, &.{ 2, c_out, 3, width }, out.dims());
            for (0..2) |image| for (0..c_out) |co| for (0..3) |oy| for (0..width) |ox| {
                var acc: f32 = 0;
                for (0..c_in) |ci| for (0..3) |ky| for (0..3) |kx| {
                    const iy = @as(isize, @intCast(oy * 2 + ky)) - 1;
                    const ix = @as(isize, @intCast(ox + kx)) - 1;
                    const value: f32 = if (iy < 0 or ix < 0 or iy >= height or ix >= width) 17 else x.f32Slice()[((image * c_in + ci) * height + @as(usize, @intCast(iy))) * width + @as(usize, @intCast(ix))];
                    const weight: f32 = @floatFromInt(w.i32Slice()[co * k + (ky * 3 + kx) * c_in + ci]);
                    acc += (value - 17) * (weight - b_zero[co]);
                };
                try testing.expectEqual(acc, out.f32Slice()[((image * c_out + co) * 3 + oy) * width + ox]);
            };
        }
    }
}

test "conv2d_int8 without im2col equals the im2col path bit for bit: strides, dilation, odd widths, requantized" {
    // Channels 4, 12 and 96 (AMX tiles with a K tail), output widths 16 to 40 (16-row AMX
    // tiles, then VNNI rows; tiles stop at each output row), strides 1 and 2, a 3 × 3 and a
    // 1 × 3 kernel, y dilation 2, 24 output channels, at 1 and 2 threads.
    const settings = @import("../settings.zig");
    settings.resetForTesting();
    defer settings.resetForTesting();
    defer force_im2col = false;
    var prng = std.Random.DefaultPrng.init(5);
    const random = prng.random();
    const c_out = 24;
    const Config = struct { c_in: usize, height: usize, width: usize, window: Window };
    const configs = [_]Config{
        .{ .c_in = 96, .height = 5, .width = 19, .window = .{ .kernel = .{ 3, 3 }, .stride = .{ 1, 1 }, .padding = .{ 1, 1 }, .dilation = .{ 1, 1 } } },
        .{ .c_in = 12, .height = 7, .width = 40, .window = .{ .kernel = .{ 3, 3 }, .stride = .{ 1, 1 }, .padding = .{ 1, 1 }, .dilation = .{ 2, 1 } } },
        .{ .c_in = 4, .height = 6, .width = 67, .window = .{ .kernel = .{ 3, 3 }, .stride = .{ 2, 2 }, .padding = .{ 1, 1 }, .dilation = .{ 1, 1 } } },
        .{ .c_in = 12, .height = 3, .width = 33, .window = .{ .kernel = .{ 1, 3 }, .stride = .{ 1, 1 }, .padding = .{ 0, 0 }, .dilation = .{ 1, 1 } } },
        // Fewer than 4 channels, padded to 4 with zero weights: a stem's 3 (stride 2, odd
        // width), 1 with y dilation, 2 on a 1 × 3 kernel.
        .{ .c_in = 3, .height = 9, .width = 37, .window = .{ .kernel = .{ 3, 3 }, .stride = .{ 2, 2 }, .padding = .{ 1, 1 }, .dilation = .{ 1, 1 } } },
        .{ .c_in = 1, .height = 7, .width = 21, .window = .{ .kernel = .{ 3, 3 }, .stride = .{ 1, 1 }, .padding = .{ 1, 1 }, .dilation = .{ 2, 1 } } },
        .{ .c_in = 2, .height = 4, .width = 50, .window = .{ .kernel = .{ 1, 3 }, .stride = .{ 1, 1 }, .padding = .{ 0, 1 }, .dilation = .{ 1, 1 } } },
    };
    for (configs) |config| {
        const x = try tensor.createUninit(.float32, &.{ 2, config.c_in, config.height, config.width });
        defer x.release();
        for (x.f32Slice()) |*v| v.* = (random.float(f32) - 0.3) * 4;
        const taps = config.window.kernel[0] * config.window.kernel[1];
        const k = config.c_in * taps;
        const w = try tensor.createUninit(.int32, &.{ c_out, k });
        defer w.release();
        for (w.i32Slice()) |*v| v.* = random.intRangeAtMost(i32, -128, 127);
        const packed_b = try packInt8(w, @intCast(k), c_out, true);
        defer packed_b.release();
        const b_zero: [c_out]f32 = @splat(0);
        var col_sum: [c_out]f32 = @splat(0);
        for (0..c_out) |j| for (0..k) |i| {
            col_sum[j] += @floatFromInt(w.i32Slice()[j * k + i]);
        };
        const info = try testInfo(c_out, 0.01, &b_zero, &col_sum, 0.25);
        defer info.release();
        const a_scale = try scalarTensor(0.02);
        defer a_scale.release();
        const a_zero = try scalarTensor(40);
        defer a_zero.release();
        const q: Quantization = .{ .n = c_out, .k = k, .a_integer = false, .a_min = 0, .a_max = 255, .requantize = true, .dequantize_output = true, .out_scale = 0.05, .out_zero = 128, .out_min = 0, .out_max = 255 };
        for ([_]i64{ 1, 2 }) |threads| {
            try settings.setNumThreads(threads);
            force_im2col = true;
            const expected = try conv2dInt8(q, config.window, x, packed_b, info, a_scale, a_zero, null);
            defer expected.release();
            force_im2col = false;
            const got = try conv2dInt8(q, config.window, x, packed_b, info, a_scale, a_zero, null);
            defer got.release();
            try testing.expectEqualSlices(usize, expected.dims(), got.dims());
            try testing.expectEqualSlices(f32, expected.f32Slice(), got.f32Slice());
        }
    }
}

test "quantized_pointwise equals its steps run one by one, per-channel tables and the root included, at 1 and 2 threads" {
    const settings = @import("../settings.zig");
    settings.resetForTesting();
    defer settings.resetForTesting();
    var prng = std.Random.DefaultPrng.init(11);
    const random = prng.random();
    // Odd sizes: 3 channels, planes of 5 · 7 and of 1030 (two pieces, a ragged tail).
    for ([_][4]usize{ .{ 2, 3, 5, 7 }, .{ 1, 3, 2, 515 } }) |shape| {
        const x = try tensor.createUninit(.float32, &shape);
        defer x.release();
        for (x.f32Slice()) |*v| v.* = random.float(f32) * 8 - 4;
        const s: f32 = 0.037;
        const table = [3]f32{ 0.5, -1.25, 2 };
        const bias = [3]f32{ 0.1, 0.2, -0.3 };
        const program = [_]f32{
            @intFromEnum(PointwiseStep.mul_channel), 10 * 5,      0,   0,    0,
            @intFromEnum(PointwiseStep.round_trip),  s,           100, 0,    255,
            @intFromEnum(PointwiseStep.add_root),    0,           0,   0,    0,
            @intFromEnum(PointwiseStep.set_root),    0,           0,   0,    0,
            @intFromEnum(PointwiseStep.add),         3,           0,   0,    0,
            @intFromEnum(PointwiseStep.round_trip),  6.0 / 255.0, 0,   0,    255,
            @intFromEnum(PointwiseStep.mul_root),    0,           0,   0,    0,
            @intFromEnum(PointwiseStep.div),         6,           0,   0,    0,
            @intFromEnum(PointwiseStep.sub_channel), 10 * 5 + 3,  0,   0,    0,
            @intFromEnum(PointwiseStep.round_trip),  s,           -3,  -128, 127,
        } ++ table ++ bias;
        const program_tensor = try vectorTensor(&program);
        defer program_tensor.release();
        // The reference: y = QDQ(x · t[c]) + x (the new root), g = QDQ(y + 3),
        // QDQ(y · g / 6 - b[c]).
        const expected = try tensor.createUninit(.float32, &shape);
        defer expected.release();
        const plane = shape[2] * shape[3];
        for (expected.f32Slice(), x.f32Slice(), 0..) |*e, v, i| {
            const c = i / plane % 3;
            const y = v + (quantizeValue(v * table[c], s, 100, 0, 255) - 100) * s;
            const gate = quantizeValue(y + 3, 6.0 / 255.0, 0, 0, 255) * (6.0 / 255.0);
            e.* = (quantizeValue(y * gate / 6 - bias[c], s, -3, -128, 127) + 3) * s;
        }
        for ([_]i64{ 1, 2 }) |threads| {
            try settings.setNumThreads(threads);
            const out = try pointwise(x, program_tensor, 10, &.{});
            defer out.release();
            for (expected.f32Slice(), out.f32Slice()) |e, o| try testing.expectEqual(e, o);
        }
    }
}

test "quantized_pointwise reads its input and writes its output in place of copies: set_root first and last, one step, tables with and without steps before" {
    const settings = @import("../settings.zig");
    settings.resetForTesting();
    defer settings.resetForTesting();
    var prng = std.Random.DefaultPrng.init(23);
    const random = prng.random();
    const shape = [4]usize{ 2, 3, 2, 515 };
    const plane = shape[2] * shape[3];
    const x = try tensor.createUninit(.float32, &shape);
    defer x.release();
    for (x.f32Slice()) |*v| v.* = random.float(f32) * 8 - 4;
    const q = [4]f32{ 0.05, 7, 0, 255 };
    const none = [4]f32{ 0, 0, 0, 0 };
    const programs = [_][]const [step_len]f32{
        &.{ stepRecord(.set_root, none), stepRecord(.add, .{ 1, 0, 0, 0 }), stepRecord(.mul_root, none), stepRecord(.round_trip, q) },
        &.{ stepRecord(.add, .{ 0.5, 0, 0, 0 }), stepRecord(.set_root, none) },
        &.{stepRecord(.mul, .{ 2, 0, 0, 0 })},
        &.{ stepRecord(.round_trip, q), stepRecord(.add, .{ 1, 0, 0, 0 }) },
        &.{ stepRecord(.mul, .{ 2, 0, 0, 0 }), stepRecord(.set_root, none), stepRecord(.round_trip, q), stepRecord(.add_root, none) },
        &.{ stepRecord(.add, .{ 1, 0, 0, 0 }), stepRecord(.set_root, none), stepRecord(.round_trip, q), stepRecord(.mul, .{ 3, 0, 0, 0 }) },
    };
    for (programs) |records| {
        var values: [8 * step_len]f32 = undefined;
        for (records, 0..) |record, i| values[i * step_len ..][0..step_len].* = record;
        const program_tensor = try vectorTensor(values[0 .. records.len * step_len]);
        defer program_tensor.release();
        var steps: [8]Step = undefined;
        try checkProgram("test", values[0 .. records.len * step_len], records.len, shape[1], 0, steps[0..records.len]);
        // The reference: each plane copied, then the steps one by one in place.
        const expected = try tensor.createUninit(.float32, &shape);
        defer expected.release();
        @memcpy(expected.f32Slice(), x.f32Slice());
        var saved: [plane]f32 = undefined;
        for (0..shape[0] * shape[1]) |p| {
            runSteps(steps[0..records.len], expected.f32Slice()[p * plane ..][0..plane], x.f32Slice()[p * plane ..][0..plane], &saved, p % shape[1], &no_operands);
        }
        for ([_]i64{ 1, 2 }) |threads| {
            try settings.setNumThreads(threads);
            const out = try pointwise(x, program_tensor, @intCast(records.len), &.{});
            defer out.release();
            for (expected.f32Slice(), out.f32Slice()) |e, o| try testing.expectEqual(e, o);
        }
    }
}

/// One program record: the step's code, then its four values.
fn stepRecord(code: PointwiseStep, values: [step_len - 1]f32) [step_len]f32 {
    return [1]f32{@floatFromInt(@intFromEnum(code))} ++ values;
}

test "quantized_pointwise's operand steps equal a residual Add and a per-plane Mul between round trips, at 1 and 2 threads" {
    var prng = std.Random.DefaultPrng.init(17);
    const random = prng.random();
    const settings = @import("../settings.zig");
    settings.resetForTesting();
    defer settings.resetForTesting();
    // Odd sizes: planes of 5 · 7, of 1030 (two pieces, a ragged tail) and of 1 (a 1 × 1 map,
    // where a per-plane operand has x's own shape).
    for ([_][4]usize{ .{ 2, 3, 5, 7 }, .{ 1, 3, 2, 515 }, .{ 3, 5, 1, 1 } }) |shape| {
        const x = try tensor.createUninit(.float32, &shape);
        defer x.release();
        const residual = try tensor.createUninit(.float32, &shape);
        defer residual.release();
        const gates = try tensor.createUninit(.float32, &.{ shape[0], shape[1], 1, 1 });
        defer gates.release();
        for (x.f32Slice()) |*v| v.* = random.float(f32) * 8 - 4;
        for (residual.f32Slice()) |*v| v.* = random.float(f32) * 6 - 3;
        for (gates.f32Slice()) |*v| v.* = random.float(f32);
        const s: f32 = 0.037;
        // QDQ(QDQ(x · gate[n, c]) + residual) + 0.5, the squeeze-excitation Mul and the
        // residual Add of det's blocks; `b` is the gates, `a` the residual.
        const program = stepRecord(.mul_operand, .{ 1, 0, 0, 0 }) ++ stepRecord(.round_trip, .{ s, 100, 0, 255 }) ++
            stepRecord(.add_operand, .{ 0, 0, 0, 0 }) ++ stepRecord(.round_trip, .{ s, 90, 0, 255 }) ++ stepRecord(.add, .{ 0.5, 0, 0, 0 });
        const program_tensor = try vectorTensor(&program);
        defer program_tensor.release();
        const expected = try tensor.createUninit(.float32, &shape);
        defer expected.release();
        const plane = shape[2] * shape[3];
        for (expected.f32Slice(), x.f32Slice(), residual.f32Slice(), 0..) |*e, v, r, i| {
            const product = (quantizeValue(v * gates.f32Slice()[i / plane], s, 100, 0, 255) - 100) * s;
            e.* = (quantizeValue(product + r, s, 90, 0, 255) - 90) * s + 0.5;
        }
        for ([_]i64{ 1, 2 }) |threads| {
            try settings.setNumThreads(threads);
            const out = try pointwise(x, program_tensor, 5, &.{ residual, gates });
            defer out.release();
            for (expected.f32Slice(), out.f32Slice()) |e, o| try testing.expectEqual(e, o);
        }
        // An operand the program names but that was not given, and an operand of another shape.
        try testing.expectError(error.InvalidArgument, pointwise(x, program_tensor, 5, &.{residual}));
        try testing.expectError(error.ShapeMismatch, pointwise(x, program_tensor, 5, &.{ residual, program_tensor }));
    }
}

test "quantized_pointwise's affine_channel equals batch_norm's multiply-add per channel, at 1 and 2 threads" {
    var prng = std.Random.DefaultPrng.init(19);
    const random = prng.random();
    const settings = @import("../settings.zig");
    settings.resetForTesting();
    defer settings.resetForTesting();
    // Planes of 5 · 7 and of 1030 (two pieces, a ragged tail), 3 channels; then a round trip
    // (its steps before the split run per element).
    for ([_][4]usize{ .{ 2, 3, 5, 7 }, .{ 1, 3, 2, 515 } }) |shape| {
        const x = try tensor.createUninit(.float32, &shape);
        defer x.release();
        for (x.f32Slice()) |*v| v.* = random.float(f32) * 8 - 4;
        const scales = [3]f32{ 0.37, -1.9, 2.2 };
        const shifts = [3]f32{ 0.11, 0.7, -0.45 };
        const program = stepRecord(.affine_channel, .{ 2 * step_len, 0, 0, 0 }) ++ stepRecord(.round_trip, .{ 0.043, 120, 0, 255 }) ++ scales ++ shifts;
        const program_tensor = try vectorTensor(&program);
        defer program_tensor.release();
        const plane = shape[2] * shape[3];
        for ([_]i64{ 1, 2 }) |threads| {
            try settings.setNumThreads(threads);
            const out = try pointwise(x, program_tensor, 2, &.{});
            defer out.release();
            for (out.f32Slice(), x.f32Slice(), 0..) |o, v, i| {
                const c = i / plane % 3;
                try testing.expectEqual((quantizeValue(@mulAdd(f32, v, scales[c], shifts[c]), 0.043, 120, 0, 255) - 120) * 0.043, o);
            }
        }
        // A table of scales and shifts that runs past the program's end.
        const short = try vectorTensor(&(stepRecord(.affine_channel, .{ step_len + 1, 0, 0, 0 }) ++ scales ++ shifts));
        defer short.release();
        try testing.expectError(error.InvalidArgument, pointwise(x, short, 1, &.{}));
    }
}

test "quantized_pointwise refuses bad programs with errors" {
    const x = try tensor.createUninit(.float32, &.{ 1, 2, 3 });
    defer x.release();
    @memset(x.f32Slice(), 1);
    const program = try tensor.createUninit(.float32, &.{5});
    defer program.release();
    for ([_][5]f32{ .{ 99, 0, 0, 0, 0 }, .{ 0.5, 0, 0, 0, 0 }, .{ 0, 0, 0, 0, 255 }, .{ 0, 1, 300, 0, 255 }, .{ 7, 4, 0, 0, 0 }, .{ std.math.nan(f32), 0, 0, 0, 0 }, .{ 17, std.math.inf(f32), 0, 0, 0 }, .{ 16, 0.5, 0, 3, 2 } }) |record| {
        @memcpy(program.f32Slice(), &record);
        try testing.expectError(error.InvalidArgument, pointwise(x, program, 1, &.{}));
    }
    try testing.expectError(error.ShapeMismatch, pointwise(x, program, 2, &.{}));
}

test "quantized_pointwise dequantizes and quantizes as QOperator ops do" {
    const x = try tensor.createUninit(.float32, &.{ 1, 3, 37 });
    defer x.release();
    for (x.f32Slice(), 0..) |*v, i| v.* = @floatFromInt(i % 256);
    const program_values = [_]f32{ 17, 0.5, 3, 0, 0, 1, 1, 0, 0, 0, 16, 0.25, 10, 0, 255 };
    const program = try tensor.createUninit(.float32, &.{program_values.len});
    defer program.release();
    @memcpy(program.f32Slice(), &program_values);
    const out = try pointwise(x, program, 3, &.{});
    defer out.release();
    for (x.f32Slice(), out.f32Slice()) |v, o| try testing.expectEqual(quantizeValue((v - 3) * 0.5 + 1, 0.25, 10, 0, 255), o);
}

test "quantized_pointwise's level tables give the steps' own results, per-channel tables and tails included" {
    const settings = @import("../settings.zig");
    settings.resetForTesting();
    defer settings.resetForTesting();
    var prng = std.Random.DefaultPrng.init(5);
    const random = prng.random();
    const s: f32 = 0.1509;
    // Rec's hard-swish chain (a scalar prefix, then tables), and the same with a per-channel
    // step after the split; QOperator's quantize as the split too.
    const hard_swish = [_]f32{
        @intFromEnum(PointwiseStep.mul),        1.384,       0,   0, 0,
        @intFromEnum(PointwiseStep.round_trip), s,           100, 0, 255,
        @intFromEnum(PointwiseStep.add),        0.5861,      0,   0, 0,
        @intFromEnum(PointwiseStep.round_trip), s,           96,  0, 255,
        @intFromEnum(PointwiseStep.set_root),   0,           0,   0, 0,
        @intFromEnum(PointwiseStep.add),        3,           0,   0, 0,
        @intFromEnum(PointwiseStep.round_trip), 6.0 / 255.0, 0,   0, 255,
        @intFromEnum(PointwiseStep.mul_root),   0,           0,   0, 0,
        @intFromEnum(PointwiseStep.div),        6,           0,   0, 0,
        @intFromEnum(PointwiseStep.round_trip), 0.0956,      4,   0, 255,
    };
    const channel_step = [_]f32{ @intFromEnum(PointwiseStep.add_channel), 11 * 5, 0, 0, 0 };
    const quantize_first = [_]f32{
        @intFromEnum(PointwiseStep.quantize),   0.05,  -3, -128, 127,
        @intFromEnum(PointwiseStep.dequantize), 0.05,  -3, 0,    0,
        @intFromEnum(PointwiseStep.sub_from),   1,     0,  0,    0,
        @intFromEnum(PointwiseStep.round_trip), 0.025, 7,  0,    255,
    };
    const with_channel = hard_swish ++ channel_step ++ [_]f32{ 0.25, -0.5, 1 };
    const programs = [_]struct { values: []const f32, steps: usize, table: bool }{
        .{ .values = &hard_swish, .steps = 10, .table = true },
        .{ .values = &with_channel, .steps = 11, .table = true },
        .{ .values = &quantize_first, .steps = 4, .table = true },
    };
    for ([_][4]usize{ .{ 2, 3, 5, 7 }, .{ 1, 3, 2, 515 } }) |shape| {
        const x = try tensor.createUninit(.float32, &shape);
        defer x.release();
        for (x.f32Slice()) |*v| v.* = random.float(f32) * 40 - 20;
        // Ties of the first round trip's scale, and NaN.
        x.f32Slice()[3] = 2.5 * s / 1.384;
        x.f32Slice()[4] = std.math.nan(f32);
        const plane = shape[2] * shape[3];
        for (programs) |program| {
            const program_tensor = try tensor.createUninit(.float32, &.{program.values.len});
            defer program_tensor.release();
            @memcpy(program_tensor.f32Slice(), program.values);
            var steps: [16]Step = undefined;
            try checkProgram("quantized_pointwise", program.values, program.steps, 3, 0, steps[0..program.steps]);
            // Per-channel tables on planes of 35 elements would cost more than the steps.
            const expect_table = program.steps != 11 or plane >= 2 * Table.len;
            try testing.expectEqual(expect_table, Table.of(steps[0..program.steps], plane) != null);
            const expected = try tensor.createUninit(.float32, &shape);
            defer expected.release();
            @memcpy(expected.f32Slice(), x.f32Slice());
            const saved = try testing.allocator.alloc(f32, plane);
            defer testing.allocator.free(saved);
            for (0..shape[0] * 3) |p| {
                runSteps(steps[0..program.steps], expected.f32Slice()[p * plane ..][0..plane], x.f32Slice()[p * plane ..][0..plane], saved, p % 3, &no_operands);
            }
            for ([_]i64{ 1, 2 }) |threads| {
                try settings.setNumThreads(threads);
                const out = try pointwise(x, program_tensor, @intCast(program.steps), &.{});
                defer out.release();
                for (expected.f32Slice(), out.f32Slice(), 0..) |e, o, i| {
                    if (@as(u32, @bitCast(e)) != @as(u32, @bitCast(o))) std.debug.print("program {d} shape {any} element {d}: x {d} expected {d} got {d}\n", .{ program.steps, shape, i, x.f32Slice()[i], e, o });
                    try testing.expectEqual(@as(u32, @bitCast(e)), @as(u32, @bitCast(o)));
                }
            }
        }
    }
}

test "conv2d_int8 with a chain equals conv2d_int8 then quantized_pointwise, bit for bit, at 1 and 2 threads" {
    // 19 output channels (a vector of 16, then a tail of 3 whose per-channel operands are
    // padded), widths 7 and 19, 3×3 stride 2 and a direct 1×1, a requantized output as QDQ
    // models have; hard-swish on the conv output (round trips, the root, a per-channel step).
    const settings = @import("../settings.zig");
    settings.resetForTesting();
    defer settings.resetForTesting();
    defer force_rows = false;
    var prng = std.Random.DefaultPrng.init(13);
    const random = prng.random();
    const c_in = 5;
    const c_out = 19;
    const s: f32 = 0.1509;
    // The hard-swish reads the conv output as its root (steps throughout); the second
    // program quantizes first, so its later steps run as a level table.
    var root_first = [_]f32{
        @intFromEnum(PointwiseStep.set_root),       0,             0,   0,    0,
        @intFromEnum(PointwiseStep.add),            3,             0,   0,    0,
        @intFromEnum(PointwiseStep.round_trip),     6.0 / 255.0,   0,   0,    255,
        @intFromEnum(PointwiseStep.mul_root),       0,             0,   0,    0,
        @intFromEnum(PointwiseStep.div),            6,             0,   0,    0,
        @intFromEnum(PointwiseStep.round_trip),     s,             100, 0,    255,
        @intFromEnum(PointwiseStep.mul_channel),    9 * 5,         0,   0,    0,
        @intFromEnum(PointwiseStep.affine_channel), 9 * 5 + c_out, 0,   0,    0,
        @intFromEnum(PointwiseStep.quantize),       0.05,          -3,  -128, 127,
    } ++ @as([3 * c_out]f32, @splat(0));
    // mul_channel's table, then affine_channel's scales and shifts.
    for (root_first[9 * 5 ..], 0..) |*v, i| v.* = 0.25 + @as(f32, @floatFromInt(i % c_out)) * 0.125 - @as(f32, @floatFromInt(i / c_out)) * 0.3;
    const tabled = [_]f32{
        @intFromEnum(PointwiseStep.mul),        1.384,       0,   0, 0,
        @intFromEnum(PointwiseStep.round_trip), s,           100, 0, 255,
        @intFromEnum(PointwiseStep.add),        0.5861,      0,   0, 0,
        @intFromEnum(PointwiseStep.round_trip), s,           96,  0, 255,
        @intFromEnum(PointwiseStep.set_root),   0,           0,   0, 0,
        @intFromEnum(PointwiseStep.add),        3,           0,   0, 0,
        @intFromEnum(PointwiseStep.round_trip), 6.0 / 255.0, 0,   0, 255,
        @intFromEnum(PointwiseStep.mul_root),   0,           0,   0, 0,
        @intFromEnum(PointwiseStep.div),        6,           0,   0, 0,
        @intFromEnum(PointwiseStep.round_trip), 0.0956,      4,   0, 255,
    };
    const root_program = try tensor.createUninit(.float32, &.{root_first.len});
    defer root_program.release();
    @memcpy(root_program.f32Slice(), &root_first);
    const table_program = try tensor.createUninit(.float32, &.{tabled.len});
    defer table_program.release();
    @memcpy(table_program.f32Slice(), &tabled);
    const programs = [_]struct { tensor: *Tensor, steps: i64 }{ .{ .tensor = root_program, .steps = 9 }, .{ .tensor = table_program, .steps = 10 } };
    const program = root_program;
    const windows = [_]Window{
        .{ .kernel = .{ 3, 3 }, .stride = .{ 2, 2 }, .padding = .{ 1, 1 }, .dilation = .{ 1, 1 } },
        .{ .kernel = .{ 1, 1 }, .stride = .{ 1, 1 }, .padding = .{ 0, 0 }, .dilation = .{ 1, 1 } },
    };
    // Also a 1 × 1 image: 1-pixel outputs (a column stride of 1) run the chain too.
    for ([_][2]usize{ .{ 5, 7 }, .{ 5, 19 }, .{ 1, 1 } }) |hw| for (windows) |window| {
        const height, const width = hw;
        const taps = window.kernel[0] * window.kernel[1];
        const k = c_in * taps;
        const x = try tensor.createUninit(.float32, &.{ 2, c_in, height, width });
        defer x.release();
        for (x.f32Slice()) |*v| v.* = random.float(f32) * 6 - 3;
        const w = try tensor.createUninit(.int32, &.{ c_out, k });
        defer w.release();
        for (w.i32Slice()) |*v| v.* = random.intRangeAtMost(i32, -128, 127);
        const packed_b = try packInt8(w, @intCast(k), c_out, true);
        defer packed_b.release();
        var b_zero: [c_out]f32 = @splat(0);
        var col_sum: [c_out]f32 = @splat(0);
        for (0..c_out) |j| for (0..k) |i| {
            col_sum[j] += @floatFromInt(w.i32Slice()[j * k + i]);
        };
        const info = try testInfo(c_out, 0.004, &b_zero, &col_sum, 0.3);
        defer info.release();
        const a_scale = try scalarTensor(6.0 / 255.0);
        defer a_scale.release();
        const a_zero = try scalarTensor(128);
        defer a_zero.release();
        // A requantized output (a QDQ pair: the chain as one table of output levels) and a
        // float one (tables after the chain's first quantization, or steps).
        // Direct 1 × 1 convolutions on both paths (pixels in lanes, and the row-major GEMM).
        for ([_]bool{ true, false }) |requantize| for ([_]i64{ 1, 2 }) |threads| for ([_]bool{ false, true }) |rows| {
            force_rows = rows;
            const q: Quantization = .{ .n = c_out, .k = k, .a_integer = false, .a_min = 0, .a_max = 255, .requantize = requantize, .dequantize_output = requantize, .out_scale = 0.02, .out_zero = 120, .out_min = 0, .out_max = 255 };
            try settings.setNumThreads(threads);
            const plain = try conv2dInt8(q, window, x, packed_b, info, a_scale, a_zero, null);
            defer plain.release();
            for (programs) |chain| {
                const expected = try pointwise(plain, chain.tensor, chain.steps, &.{});
                defer expected.release();
                const fused = try conv2dInt8(q, window, x, packed_b, info, a_scale, a_zero, .{ .program = chain.tensor, .steps = chain.steps });
                defer fused.release();
                try testing.expectEqualSlices(usize, expected.dims(), fused.dims());
                for (expected.f32Slice(), fused.f32Slice()) |e, f| try testing.expectEqual(@as(u32, @bitCast(e)), @as(u32, @bitCast(f)));
            }
        };
        const q: Quantization = .{ .n = c_out, .k = k, .a_integer = false, .a_min = 0, .a_max = 255, .requantize = true, .dequantize_output = true, .out_scale = 0.02, .out_zero = 120, .out_min = 0, .out_max = 255 };
        // A bad program is refused with a typed error, not run.
        program.f32Slice()[0] = 99;
        defer program.f32Slice()[0] = @intFromEnum(PointwiseStep.set_root);
        try testing.expectError(error.InvalidArgument, conv2dInt8(q, window, x, packed_b, info, a_scale, a_zero, .{ .program = program, .steps = 8 }));
        try testing.expectError(error.InvalidArgument, conv2dInt8(q, window, x, packed_b, info, a_scale, a_zero, .{ .program = program, .steps = 0 }));
    };
}

test "conv2d_int8's paths with pixels in lanes equal the row-major GEMM paths bit for bit: 1×1 and stride-1 windows" {
    // 1×1: channels 1, 3 (one partial group), 4, 5, 29 and 32; planes of 1, 15, 17, 64 and
    // 130 pixels (vector and task tails); 5, 21 and 70 output channels (tile tails, a second
    // task of channels). Windows (channels in groups of 4): 3 × 3 with and without padding,
    // 1 × 3, 3 × 1, a dilated 3 × 3 and a 5 × 5, on rows narrower than a vector (dropped
    // positions inside one vector), odd widths and a second task of positions. Float and
    // integer inputs, float, requantized and QDQ outputs, and a chain, at 1 and 2 threads.
    if (!kernels.vnniSupported()) return error.SkipZigTest;
    const settings = @import("../settings.zig");
    settings.resetForTesting();
    defer settings.resetForTesting();
    defer force_rows = false;
    var prng = std.Random.DefaultPrng.init(17);
    const random = prng.random();
    const tabled = [_]f32{
        @intFromEnum(PointwiseStep.mul),         1.384,       0,   0, 0,
        @intFromEnum(PointwiseStep.round_trip),  0.1509,      100, 0, 255,
        @intFromEnum(PointwiseStep.set_root),    0,           0,   0, 0,
        @intFromEnum(PointwiseStep.add),         3,           0,   0, 0,
        @intFromEnum(PointwiseStep.round_trip),  6.0 / 255.0, 0,   0, 255,
        @intFromEnum(PointwiseStep.mul_root),    0,           0,   0, 0,
        @intFromEnum(PointwiseStep.mul_channel), 7 * 5,       0,   0, 0,
    } ++ @as([70]f32, @splat(0.75));
    const program = try tensor.createUninit(.float32, &.{tabled.len});
    defer program.release();
    @memcpy(program.f32Slice(), &tabled);
    for (program.f32Slice()[7 * 5 ..], 0..) |*v, i| v.* = 0.5 + @as(f32, @floatFromInt(i)) * 0.0625;
    const one: Window = .{ .kernel = .{ 1, 1 }, .stride = .{ 1, 1 }, .padding = .{ 0, 0 }, .dilation = .{ 1, 1 } };
    for ([_][4]usize{ .{ 1, 1, 1, 5 }, .{ 3, 3, 5, 21 }, .{ 4, 1, 17, 70 }, .{ 5, 8, 8, 21 }, .{ 29, 10, 13, 70 }, .{ 32, 2, 96, 5 } }) |shape| {
        try checkPixelLanes(random, program, one, shape);
    }
    const windows = [_]Window{
        .{ .kernel = .{ 3, 3 }, .stride = .{ 1, 1 }, .padding = .{ 1, 1 }, .dilation = .{ 1, 1 } },
        .{ .kernel = .{ 3, 3 }, .stride = .{ 1, 1 }, .padding = .{ 0, 0 }, .dilation = .{ 1, 1 } },
        .{ .kernel = .{ 1, 3 }, .stride = .{ 1, 1 }, .padding = .{ 0, 1 }, .dilation = .{ 1, 1 } },
        .{ .kernel = .{ 3, 1 }, .stride = .{ 1, 1 }, .padding = .{ 1, 0 }, .dilation = .{ 1, 1 } },
        .{ .kernel = .{ 3, 3 }, .stride = .{ 1, 1 }, .padding = .{ 2, 2 }, .dilation = .{ 2, 2 } },
        .{ .kernel = .{ 5, 5 }, .stride = .{ 1, 1 }, .padding = .{ 2, 2 }, .dilation = .{ 1, 1 } },
    };
    for (windows) |window| {
        try testing.expect(PixelLanes.fitsWindow(window, 4));
        for ([_][4]usize{ .{ 4, 1, 17, 70 }, .{ 8, 7, 9, 21 }, .{ 12, 3, 20, 5 }, .{ 32, 5, 6, 24 }, .{ 96, 9, 21, 24 } }) |shape| {
            try checkPixelLanes(random, program, window, shape);
        }
    }
}

/// conv2d_int8 on `window` over x of shape (2, channels, height, width) = shape[0..3] to
/// shape[3] channels, on the row-major paths and on PixelLanes, compared bit for bit.
/// Shapes smaller than the window are skipped.
fn checkPixelLanes(random: std.Random, program: *Tensor, window: Window, shape: [4]usize) !void {
    const settings = @import("../settings.zig");
    const c_in, const height, const width, const c_out = shape;
    for (0..2) |axis| if (shape[1 + axis] + 2 * window.padding[axis] < window.dilation[axis] * (window.kernel[axis] - 1) + 1) return;
    const k = c_in * window.kernel[0] * window.kernel[1];
    const x = try tensor.createUninit(.float32, &.{ 2, c_in, height, width });
    defer x.release();
    for (x.f32Slice()) |*v| v.* = @round(random.float(f32) * 255);
    const w = try tensor.createUninit(.int32, &.{ c_out, k });
    defer w.release();
    for (w.i32Slice()) |*v| v.* = if (random.boolean()) -128 else random.intRangeAtMost(i32, -128, 127);
    const packed_b = try packInt8(w, @intCast(k), @intCast(c_out), true);
    defer packed_b.release();
    var col_sum: [70]f32 = @splat(0);
    for (0..c_out) |j| for (0..k) |i| {
        col_sum[j] += @floatFromInt(w.i32Slice()[j * k + i]);
    };
    const b_zero: [70]f32 = @splat(0);
    const info = try testInfo(c_out, 0.003, b_zero[0..c_out], col_sum[0..c_out], 0.2);
    defer info.release();
    // Per-channel scales and biases: each row must take its own channel's.
    for (0..c_out) |j| {
        info.f32Slice()[j] = 0.003 * @as(f32, @floatFromInt(1 + j % 7));
        info.f32Slice()[c_out + j] = 0.1 * @as(f32, @floatFromInt(j)) - 1;
    }
    const a_scale = try scalarTensor(0.02);
    defer a_scale.release();
    const a_zero = try scalarTensor(37);
    defer a_zero.release();
    for ([_]bool{ false, true }) |a_integer| for ([_][2]bool{ .{ false, false }, .{ true, false }, .{ true, true } }) |output| {
        const q: Quantization = .{ .n = c_out, .k = k, .a_integer = a_integer, .a_min = 0, .a_max = 255, .requantize = output[0], .dequantize_output = output[1], .out_scale = 0.05, .out_zero = 120, .out_min = 0, .out_max = 255 };
        for ([_]?Chain{ null, .{ .program = program, .steps = 7 } }) |chain| for ([_]i64{ 1, 2 }) |threads| {
            try settings.setNumThreads(threads);
            force_rows = true;
            const expected = try conv2dInt8(q, window, x, packed_b, info, a_scale, a_zero, chain);
            defer expected.release();
            force_rows = false;
            const got = try conv2dInt8(q, window, x, packed_b, info, a_scale, a_zero, chain);
            defer got.release();
            try testing.expectEqualSlices(usize, expected.dims(), got.dims());
            for (expected.f32Slice(), got.f32Slice()) |e, g| try testing.expectEqual(@as(u32, @bitCast(e)), @as(u32, @bitCast(g)));
        };
    };
}
