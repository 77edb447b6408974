//! f32 weights packed once at load for the native GEMM (kernels/gemm_native.zig): a program
//! (interpreter/program.zig, the same hook as ops/bf16.zig's packing) packs the constant
//! weight of every conv2d (the left operand, per group, as `PackedA`), gemm, mm and matmul
//! node (the right operand, as `PackedB`), and runs those nodes through `execute` here. The
//! ops otherwise pack their weight on every call: for PaddleOCR rec's 1×1 convolutions at
//! batch 1 (80 to 320 pixels per image) each weight element met only that many products per
//! packing copy.
//!
//! A node whose runtime shapes do not fit its packed weight (a weight used under another
//! shape, a batched right operand) runs the plain op, so packing never changes what a program
//! accepts or computes beyond rounding order. With another BLAS (-Dblas=openblas) nothing is
//! packed: OpenBLAS packs its own operands.
const std = @import("std");
const build_options = @import("build_options");
const status = @import("../status.zig");
const tensor = @import("../tensor.zig");
const ops = @import("../ops.zig");
const intra_op = @import("../pool/intra_op.zig");
const parallel = @import("parallel.zig");
const shape_ops = @import("shape.zig");
const conv = @import("conv.zig");
const linalg = @import("linalg.zig");
const gemm = @import("../kernels/gemm.zig");
const gemm_native = @import("../kernels/gemm_native.zig");
const gemm_small = @import("../kernels/gemm_small.zig");
const pointwise_kernels = @import("../kernels/conv_pointwise.zig");

const Error = status.Error;
const Tensor = tensor.Tensor;
const assert = std.debug.assert;
const native = gemm_native.native;

/// Whether this build packs f32 weights: only the native GEMM reads them.
pub fn available() bool {
    return build_options.blas == .native;
}

/// A weight packed at load for one node. `storage` is a float32 tensor, allocated like any
/// load-time tensor, so the program's memory budget counts it.
pub const Weights = struct {
    /// conv: the left operand per group (out/groups rows × in/groups · kh · kw depths);
    /// matrix: the right operand of a matmul or gemm (k × n, as op(B)).
    form: enum { conv, matrix },
    rows: usize,
    cols: usize,
    groups: usize,
    /// Floats per group (conv) or in all (matrix).
    group_floats: usize,
    storage: *Tensor,

    pub fn release(weights: *const Weights) void {
        weights.storage.release();
    }

    /// Group `group`'s packed left operand.
    pub fn left(weights: *const Weights, group: usize) native.PackedA {
        assert(weights.form == .conv and group < weights.groups);
        return .{ .m = weights.rows, .k = weights.cols, .values = weights.storage.f32Slice()[group * weights.group_floats ..][0..weights.group_floats] };
    }

    /// The packed right operand.
    pub fn right(weights: *const Weights) native.PackedB {
        assert(weights.form == .matrix);
        return .{ .k = weights.rows, .n = weights.cols, .values = weights.storage.f32Slice()[0..weights.group_floats] };
    }
};

/// Packs a conv2d weight [out, in/groups, kh, kw] (float32) for `groups`, or returns null
/// when the op never reads it through the GEMM: depthwise (its own kernel), or one group of
/// at most conv_pointwise.channels_max depths (the direct kernels read the weight in place).
pub fn packConv(weight: *Tensor, groups: usize) Error!?Weights {
    if (!available() or weight.dtype != .float32 or weight.ndim != 4 or groups == 0) return null;
    const out_channels = weight.shape[0];
    if (out_channels == 0 or out_channels % groups != 0 or weight.shape[1] <= 1) return null;
    const rows = out_channels / groups;
    const depth = weight.shape[1] * weight.shape[2] * weight.shape[3];
    if (groups == 1 and depth <= pointwise_kernels.channels_max) return null;
    const source = try shape_ops.contiguous(weight);
    defer source.release();
    const values = source.f32Slice();
    const group_floats = try native.PackedA.length(rows, depth);
    const storage = try tensor.createUninit(.float32, &.{@max(group_floats * groups, 1)});
    errdefer storage.release();
    const all = storage.f32Slice();
    for (0..groups) |g| {
        _ = try native.PackedA.pack(false, rows, depth, values[g * rows * depth ..][0 .. rows * depth], depth, all[g * group_floats ..][0..group_floats]);
    }
    return .{ .form = .conv, .rows = rows, .cols = depth, .groups = groups, .group_floats = group_floats, .storage = storage };
}

/// Packs a 2-D float32 weight as op(B) (k × n; `trans`: the weight is [n, k]), or returns
/// null when it is not one, or is one column: a matrix–vector product (a classifier's or a
/// recommender's last layer, n = 1) runs as dot products of A's rows with the column,
/// where a packed sliver would pad it to panel_cols columns (dlrm's [64, 256] · [256, 1]
/// took 11.5 µs packed).
pub fn packMatrix(weight: *Tensor, trans: bool) Error!?Weights {
    if (!available() or weight.dtype != .float32 or weight.ndim != 2) return null;
    const k = if (trans) weight.shape[1] else weight.shape[0];
    const n = if (trans) weight.shape[0] else weight.shape[1];
    if (k == 0 or n <= 1) return null;
    const source = try shape_ops.contiguous(weight);
    defer source.release();
    const floats = try native.PackedB.length(k, n);
    const storage = try tensor.createUninit(.float32, &.{floats});
    errdefer storage.release();
    _ = native.PackedB.pack(trans, k, n, source.f32Slice(), weight.shape[1], storage.f32Slice());
    return .{ .form = .matrix, .rows = k, .cols = n, .groups = 1, .group_floats = floats, .storage = storage };
}

/// Runs a node with a packed weight: on it when the runtime shapes fit, else the plain op.
pub fn execute(options: ops.Options, inputs: []const *Tensor, weights: *const Weights) Error!*Tensor {
    switch (options) {
        .conv2d => |o| if (weights.form == .conv) {
            return conv.conv2dPacked(inputs[0], inputs[1], if (o.has_bias) inputs[2] else null, .{
                .stride = o.stride,
                .padding = o.padding,
                .dilation = o.dilation,
                .groups = o.groups,
                .epilogue = ops.epilogue(o.activation, o.post_scale, o.post_shift),
            }, weights);
        },
        .matmul, .mm => if (weights.form == .matrix) {
            if (try matmul(inputs[0], inputs[1], weights)) |out| return out;
        },
        .gemm => |o| if (weights.form == .matrix and !o.trans_a) {
            if (try gemmBias(inputs[0], inputs[1], if (o.has_bias) inputs[2] else null, @floatCast(o.alpha), @floatCast(o.beta), o.trans_b, o.activation, weights)) |out| return out;
        },
        else => {},
    }
    return ops.execute(options, inputs);
}

/// Whether `weight` (the node's right operand at run time) is the matrix packed into
/// `weights`: same shape as op(B) once transposed back.
fn sameMatrix(weight: *const Tensor, trans: bool, weights: *const Weights) bool {
    if (weight.dtype != .float32 or weight.ndim != 2) return false;
    const k = if (trans) weight.shape[1] else weight.shape[0];
    const n = if (trans) weight.shape[0] else weight.shape[1];
    return k == weights.rows and n == weights.cols;
}

/// matmul(a, weight) for a float32 a [..., k] and the packed weight (k × n), or null when
/// the shapes do not fit it (the caller runs the plain op).
fn matmul(a_input: *Tensor, b_input: *Tensor, weights: *const Weights) Error!?*Tensor {
    const k = weights.rows;
    const n = weights.cols;
    if (!sameMatrix(b_input, false, weights)) return null;
    const call = try linalg.PackedGemm.prepare(a_input, null, 0, k, n, 1) orelse return null;
    return multiplyPrepared(weights, call, 1, .none);
}

/// gemm(a, weight, bias) = alpha · a · op(weight) + beta · bias for a [..., m, k] (the batch
/// dims of a 2-D weight broadcast: one product of all rows), or null when the shapes do not
/// fit the packed weight (the caller runs the plain op).
fn gemmBias(a_input: *Tensor, b_input: *Tensor, bias_input: ?*Tensor, alpha: f32, beta: f32, trans_b: bool, activation: linalg.Activation, weights: *const Weights) Error!?*Tensor {
    const k = weights.rows;
    const n = weights.cols;
    if (!sameMatrix(b_input, trans_b, weights)) return null;
    const call = try linalg.PackedGemm.prepare(a_input, bias_input, beta, k, n, 2) orelse return null;
    return multiplyPrepared(weights, call, alpha, activation);
}

/// Runs a prepared product on the packed weight; the output is the caller's.
fn multiplyPrepared(weights: *const Weights, call: linalg.PackedGemm, alpha: f32, activation: linalg.Activation) Error!*Tensor {
    defer call.a.release();
    errdefer call.out.release();
    if (call.m > 0) try multiplyRight(weights, call.a.f32Slice(), call.m, alpha, call.kernel_beta, activation, call.out.f32Slice());
    return call.out;
}

/// C (m × n, beta 0 or 1 over what C holds) = alpha · A (m × k, row-major) · packed B, over
/// the intra-op pool.
fn multiplyRight(weights: *const Weights, a: []const f32, m: usize, alpha: f32, beta: f32, activation: linalg.Activation, c: []f32) Error!void {
    const k = weights.rows;
    const n = weights.cols;
    const packed_b = weights.right();
    const args: native.PackedArgs = .{ .trans_a = false, .m = m, .alpha = alpha, .a = a, .lda = k, .packed_b = &packed_b, .beta = beta, .c = c, .ldc = n };
    try args.validate();
    const Context = struct {
        args: *const native.PackedArgs,
        tiling: gemm.Tiling,
        activation: linalg.Activation,
        fn body(context: *const @This(), begin: usize, end: usize) Error!void {
            const m_rows = context.args.m;
            const n_cols = context.args.packed_b.n;
            if (!gemm_small.native.fits(m_rows, context.args.packed_b)) {
                gemm_native.runTilesPacked(context.args, context.tiling, begin, end);
            } else {
                // Few rows times a small B: A read in place, no panels (kernels/gemm_small.zig).
                for (begin..end) |tile| {
                    const block = context.tiling.block(tile, m_rows, n_cols) orelse continue;
                    gemm_small.native.runBlock(context.args, block.row_begin, block.rows, block.col_begin, block.cols);
                }
            }
            context.activation.applyTiles(context.args.c, m_rows, n_cols, context.tiling, begin, end);
        }
    };
    const context: Context = .{ .args = &args, .tiling = gemm.plan(m, n, parallel.threadsForFlops((2 *| m) *| n *| k)), .activation = activation };
    try intra_op.parallelForTyped(0, context.tiling.count(), 1, &context, Context.body);
}

// -------------------------------------------------------------------------------------------
// Tests.

const testing = std.testing;
const settings = @import("../settings.zig");
const conv_kernels = @import("../kernels/conv.zig");

fn randomTensor(random: std.Random, shape: []const usize) !*Tensor {
    const t = try tensor.createUninit(.float32, shape);
    for (t.f32Slice()) |*x| x.* = random.float(f32) * 2 - 1;
    return t;
}

/// Packed and plain results differ only in rounding order.
fn expectClose(expected: []const f32, got: []const f32, depth: usize) !void {
    try testing.expectEqual(expected.len, got.len);
    const tolerance = 2e-6 * @as(f32, @floatFromInt(depth + 8));
    for (expected, got, 0..) |want, value, index| {
        if (@abs(want - value) > tolerance * (1 + @abs(want))) {
            std.debug.print("element {d}: packed {d}, expected {d}\n", .{ index, value, want });
            return error.TestExpectedApproxEqAbs;
        }
    }
}

test "conv2d on a packed weight matches the plain op and the reference, 1 and 2 threads" {
    if (!available()) return error.SkipZigTest;
    settings.resetForTesting();
    defer settings.resetForTesting();
    var prng = std.Random.DefaultPrng.init(0xf32);
    const random = prng.random();
    const Case = struct { batch: usize, c: usize, out: usize, h: usize, w: usize, kernel: usize, stride: i64, groups: usize };
    // 1×1 over 64 channels (the GEMM on the input), 3×3 at stride 1 (implicit GEMM) and 2
    // (im2col on this small map), grouped; out channels and pixels off the register block
    // (14 × 32).
    const cases = [_]Case{
        .{ .batch = 1, .c = 67, .out = 29, .h = 3, .w = 41, .kernel = 1, .stride = 1, .groups = 1 },
        .{ .batch = 2, .c = 120, .out = 43, .h = 1, .w = 80, .kernel = 1, .stride = 1, .groups = 1 },
        .{ .batch = 2, .c = 24, .out = 57, .h = 13, .w = 11, .kernel = 3, .stride = 1, .groups = 1 },
        .{ .batch = 1, .c = 16, .out = 30, .h = 17, .w = 9, .kernel = 3, .stride = 2, .groups = 2 },
        .{ .batch = 3, .c = 66, .out = 1, .h = 5, .w = 7, .kernel = 1, .stride = 1, .groups = 1 },
        .{ .batch = 1, .c = 600, .out = 170, .h = 1, .w = 2, .kernel = 1, .stride = 1, .groups = 1 },
        // Past 64 rows (the input's slivers copied), 240 columns split as 128 + 112 at 2
        // threads, the last sliver one vector wide.
        .{ .batch = 1, .c = 130, .out = 71, .h = 3, .w = 80, .kernel = 1, .stride = 1, .groups = 1 },
        // Stride 2 through the implicit GEMM on stride phases: 3×3 (four phases), and 1×1
        // (one phase, the input subsampled).
        .{ .batch = 2, .c = 24, .out = 29, .h = 20, .w = 31, .kernel = 3, .stride = 2, .groups = 1 },
        .{ .batch = 1, .c = 80, .out = 17, .h = 9, .w = 14, .kernel = 1, .stride = 2, .groups = 1 },
        // Columns copied per tap: a narrow map, 100 output channels.
        .{ .batch = 1, .c = 24, .out = 100, .h = 6, .w = 7, .kernel = 3, .stride = 1, .groups = 1 },
    };
    for (cases) |case| for ([_]i64{ 1, 2 }) |threads| {
        try settings.setNumThreads(threads);
        const x = try randomTensor(random, &.{ case.batch, case.c, case.h, case.w });
        defer x.release();
        const w = try randomTensor(random, &.{ case.out, case.c / case.groups, case.kernel, case.kernel });
        defer w.release();
        const bias = try randomTensor(random, &.{case.out});
        defer bias.release();
        const pad: i64 = @intCast(case.kernel / 2);
        const options: conv.Options = .{ .stride = .{ case.stride, case.stride }, .padding = .{ pad, pad }, .groups = @intCast(case.groups), .epilogue = .{ .activation = .relu } };
        const expected = try conv.conv2d(x, w, bias, options);
        defer expected.release();
        const weights = (try packConv(w, case.groups)).?;
        defer weights.release();
        const got = try conv.conv2dPacked(x, w, bias, options, &weights);
        defer got.release();
        try testing.expectEqualSlices(usize, expected.dims(), got.dims());
        const depth = case.c / case.groups * case.kernel * case.kernel;
        try expectClose(expected.f32Slice(), got.f32Slice(), depth);
        // And the plain reference.
        const size = expected.dims();
        const geometry: conv_kernels.Geometry = .{ .batch = case.batch, .in_channels = case.c, .out_channels = case.out, .groups = case.groups, .window = .{
            .image = .{ case.h, case.w },
            .grid = .{ size[2], size[3] },
            .kernel = .{ case.kernel, case.kernel },
            .stride = .{ @intCast(case.stride), @intCast(case.stride) },
            .padding = .{ @intCast(pad), @intCast(pad) },
            .dilation = .{ 1, 1 },
        } };
        const reference = try testing.allocator.alloc(f32, expected.numel());
        defer testing.allocator.free(reference);
        conv_kernels.reference(geometry, x.f32Slice(), w.f32Slice(), bias.f32Slice(), options.epilogue, reference);
        try expectClose(reference, got.f32Slice(), depth);
    };
}

test "packConv leaves depthwise and few-channel convolutions to their direct kernels" {
    var prng = std.Random.DefaultPrng.init(0xd3);
    const random = prng.random();
    const depthwise = try randomTensor(random, &.{ 32, 1, 3, 3 });
    defer depthwise.release();
    try testing.expect((try packConv(depthwise, 32)) == null);
    const shallow = try randomTensor(random, &.{ 32, 3, 3, 3 });
    defer shallow.release();
    try testing.expect((try packConv(shallow, 1)) == null);
}

test "a weight of another shape than the packed one runs the plain conv2d" {
    if (!available()) return error.SkipZigTest;
    var prng = std.Random.DefaultPrng.init(0x5a);
    const random = prng.random();
    const packed_source = try randomTensor(random, &.{ 20, 70, 1, 1 });
    defer packed_source.release();
    const weights = (try packConv(packed_source, 1)).?;
    defer weights.release();
    const x = try randomTensor(random, &.{ 1, 70, 2, 5 });
    defer x.release();
    const other = try randomTensor(random, &.{ 21, 70, 1, 1 });
    defer other.release();
    const expected = try conv.conv2d(x, other, null, .{});
    defer expected.release();
    const got = try conv.conv2dPacked(x, other, null, .{}, &weights);
    defer got.release();
    try testing.expectEqualSlices(f32, expected.f32Slice(), got.f32Slice());
}

test "matmul and gemm on a packed weight match the plain ops, 1 and 2 threads" {
    if (!available()) return error.SkipZigTest;
    settings.resetForTesting();
    defer settings.resetForTesting();
    var prng = std.Random.DefaultPrng.init(0x3a7);
    const random = prng.random();
    // m: one row, a few, past the direct-read limit (64); n and k off the register block.
    for ([_][3]usize{ .{ 1, 70, 100 }, .{ 40, 6625 / 5, 120 }, .{ 77, 33, 513 }, .{ 3, 2, 17 } }) |shape| for ([_]i64{ 1, 2 }) |threads| {
        try settings.setNumThreads(threads);
        const m = shape[0];
        const n = shape[1];
        const k = shape[2];
        const a = try randomTensor(random, &.{ 1, m, k });
        defer a.release();
        const b = try randomTensor(random, &.{ k, n });
        defer b.release();
        const expected = try linalg.matmul(a, b);
        defer expected.release();
        const weights = (try packMatrix(b, false)).?;
        defer weights.release();
        const got = (try matmul(a, b, &weights)).?;
        defer got.release();
        try testing.expectEqualSlices(usize, expected.dims(), got.dims());
        try expectClose(expected.f32Slice(), got.f32Slice(), k);

        const bt = try randomTensor(random, &.{ n, k });
        defer bt.release();
        const bias = try randomTensor(random, &.{n});
        defer bias.release();
        const expected_gemm = try linalg.gemmBias(a, bt, bias, .{ .trans_b = true, .alpha = 0.5, .beta = 2 });
        defer expected_gemm.release();
        const transposed = (try packMatrix(bt, true)).?;
        defer transposed.release();
        const got_gemm = (try gemmBias(a, bt, bias, 0.5, 2, true, .none, &transposed)).?;
        defer got_gemm.release();
        try expectClose(expected_gemm.f32Slice(), got_gemm.f32Slice(), k);
        // A fused activation is the activation of the same product, per tile.
        const activated = (try gemmBias(a, bt, bias, 0.5, 2, true, .gelu, &transposed)).?;
        defer activated.release();
        const expected_activated = try linalg.gemmBias(a, bt, bias, .{ .trans_b = true, .alpha = 0.5, .beta = 2, .activation = .gelu });
        defer expected_activated.release();
        try expectClose(expected_activated.f32Slice(), activated.f32Slice(), k);
        const unfused = try @import("elementwise.zig").unary(.gelu_erf, .{}, got_gemm);
        defer unfused.release();
        try testing.expectEqualSlices(f32, unfused.f32Slice(), activated.f32Slice());
        // A weight of another shape is not the packed one: the caller runs the plain op.
        try testing.expect((try gemmBias(a, bt, bias, 0.5, 2, false, .none, &transposed)) == null or n == k);
    };
    // One column is not packed: the plain op's dot products serve it.
    const column = try randomTensor(random, &.{ 17, 1 });
    defer column.release();
    try testing.expect((try packMatrix(column, false)) == null);
    try testing.expect((try packMatrix(column, true)) != null); // [17, 1] transposed: n = 17
}
