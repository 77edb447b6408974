//! Matrix products on tensors: shape checks, output allocation, and the split of GEMM tiles
//! over the intra-op pool (thread counts from parallel.zig). The tiles themselves are
//! computed in kernels/gemm.zig.
const std = @import("std");
const status = @import("../status.zig");
const tensor = @import("../tensor.zig");
const settings = @import("../settings.zig");
const intra_op = @import("../pool/intra_op.zig");
const parallel = @import("parallel.zig");
const gemm = @import("../kernels/gemm.zig");
const shape_ops = @import("shape.zig");
const elementwise = @import("elementwise.zig");
const elementwise_kernels = @import("../kernels/elementwise.zig");

const Error = status.Error;
const Tensor = tensor.Tensor;

fn requireFloat(comptime op: []const u8, comptime which: []const u8, t: *const Tensor) Error!void {
    if (t.dtype != .float32) {
        return status.fail(error.DTypeMismatch, op ++ ": " ++ which ++ " must be float32, got {s}", .{t.dtype.name()});
    }
}

/// Matrix product of a [m, k] and b [k, n].
pub fn mm(a_input: *Tensor, b_input: *Tensor) Error!*Tensor {
    try requireFloat("mm", "input", a_input);
    try requireFloat("mm", "mat2", b_input);
    if (a_input.ndim != 2 or b_input.ndim != 2) {
        return status.fail(error.ShapeMismatch, "mm: expected 2-D tensors, got {d}-D and {d}-D", .{ a_input.ndim, b_input.ndim });
    }
    if (a_input.shape[1] != b_input.shape[0]) {
        return status.fail(error.ShapeMismatch, "mm: shapes [{d}, {d}] and [{d}, {d}] cannot be multiplied", .{
            a_input.shape[0], a_input.shape[1], b_input.shape[0], b_input.shape[1],
        });
    }
    // Row- or column-major views (a transposed key, a slice of a wider product's columns)
    // are read in place through the GEMM's transpose flags and leading dimensions.
    const a_view = InPlace.of(a_input);
    const a_copy = if (a_view == null) try shape_ops.contiguous(a_input) else null;
    defer if (a_copy) |t| t.release();
    const b_view = InPlace.of(b_input);
    const b_copy = if (b_view == null) try shape_ops.contiguous(b_input) else null;
    defer if (b_copy) |t| t.release();
    const a = a_view orelse InPlace.of(a_copy.?).?;
    const b = b_view orelse InPlace.of(b_copy.?).?;
    const m = a_input.shape[0];
    const k = a_input.shape[1];
    const n = b_input.shape[1];
    const out = try tensor.createUninit(.float32, &.{ m, n });
    errdefer out.release();
    try matmulInto(a.trans, b.trans, m, n, k, a.values, a.ld, b.values, b.ld, out.f32Slice(), n);
    return out;
}

/// A 2-D float32 tensor as a GEMM operand read in place: its storage from its first element
/// on, and the transpose flag and leading dimension of its layout (MatrixView, as the
/// batched product reads its operands); null for any other layout (a broadcast row, a
/// strided column), which is copied. The GEMM checks that every element it reads lies
/// inside `values`.
const InPlace = struct {
    values: []const f32,
    trans: bool,
    ld: usize,

    fn of(t: *const Tensor) ?InPlace {
        std.debug.assert(t.ndim == 2 and t.dtype == .float32);
        const view = MatrixView.of(t.shape[0], t.shape[1], t.strides[0], t.strides[1]) orelse return null;
        const base: [*]const f32 = @ptrCast(@alignCast(t.storage.bytes.ptr));
        const all = base[0 .. t.storage.bytes.len / @sizeOf(f32)];
        if (t.offset > all.len) return null;
        return .{ .values = all[t.offset..], .trans = view.transposed, .ld = view.leading };
    }
};

/// Parallel GEMM over the intra-op pool: C = op(A)·op(B) (beta = 0).
pub fn matmulInto(
    trans_a: bool,
    trans_b: bool,
    m: usize,
    n: usize,
    k: usize,
    a: []const f32,
    lda: usize,
    b: []const f32,
    ldb: usize,
    c: []f32,
    ldc: usize,
) Error!void {
    const args: gemm.Args = .{
        .trans_a = trans_a,
        .trans_b = trans_b,
        .m = m,
        .n = n,
        .k = k,
        .alpha = 1,
        .a = a,
        .lda = lda,
        .b = b,
        .ldb = ldb,
        .beta = 0,
        .c = c,
        .ldc = ldc,
    };
    try args.validate();
    if (m == 0 or n == 0) return;
    const workers = parallel.threadsForFlops(2 * m * n * @max(k, 1));
    const Context = struct {
        args: *const gemm.Args,
        tiling: gemm.Tiling,
        fn body(context: *const @This(), begin: usize, end: usize) Error!void {
            gemm.runTiles(context.args, context.tiling, begin, end);
        }
    };
    const context: Context = .{ .args = &args, .tiling = gemm.plan(m, n, workers) };
    try intra_op.parallelForTyped(0, context.tiling.count(), 1, &context, Context.body);
}

/// A matrix operand of a GEMM: how to read a [rows, cols] view without copying it.
const MatrixView = struct {
    transposed: bool,
    leading: usize,

    /// Row-major with unit column stride, or column-major (a transposed view) with unit row
    /// stride; null when neither (the caller copies). A dim of size 1 has no meaningful
    /// stride; a leading dimension below the other dim's size would make rows (columns)
    /// overlap, as a broadcast's do, which no leading dimension describes: copied too.
    fn of(rows: usize, cols: usize, row_stride: usize, col_stride: usize) ?MatrixView {
        if ((col_stride == 1 or cols <= 1) and (row_stride >= cols or rows <= 1)) {
            return .{ .transposed = false, .leading = @max(row_stride, cols, 1) };
        }
        if ((row_stride == 1 or rows <= 1) and (col_stride >= rows or cols <= 1)) {
            return .{ .transposed = true, .leading = @max(col_stride, rows, 1) };
        }
        return null;
    }
};

const max_dims = tensor.max_dims;

/// NumPy/PyTorch matmul: 1-D operands are promoted to a row (left) or a column (right) and
/// the added dim is removed; leading (batch) dims broadcast. Transposed views are read in
/// place (GEMM transpose flags); other strided inputs are copied once.
pub fn matmul(a_input: *Tensor, b_input: *Tensor) Error!*Tensor {
    try requireFloat("matmul", "input", a_input);
    try requireFloat("matmul", "other", b_input);
    if (a_input.ndim == 0 or b_input.ndim == 0) {
        return status.fail(error.ShapeMismatch, "matmul: both operands need at least one dimension, got {f} and {f}", .{ status.shape(a_input.dims()), status.shape(b_input.dims()) });
    }
    // Promote vectors to matrices through views.
    const a = if (a_input.ndim == 1) try shape_ops.unsqueeze(a_input, 0) else blk: {
        a_input.retain();
        break :blk a_input;
    };
    defer a.release();
    const b = if (b_input.ndim == 1) try shape_ops.unsqueeze(b_input, 1) else blk: {
        b_input.retain();
        break :blk b_input;
    };
    defer b.release();
    const m = a.shape[a.ndim - 2];
    const k = a.shape[a.ndim - 1];
    const n = b.shape[b.ndim - 1];
    if (b.shape[b.ndim - 2] != k) {
        return status.fail(error.ShapeMismatch, "matmul: shapes {f} and {f} cannot be multiplied ({d} != {d})", .{ status.shape(a_input.dims()), status.shape(b_input.dims()), k, b.shape[b.ndim - 2] });
    }
    var batch_buffer: [max_dims]usize = undefined;
    const batch = try @import("elementwise.zig").broadcastShape("matmul", a.dims()[0 .. a.ndim - 2], b.dims()[0 .. b.ndim - 2], &batch_buffer);
    var out_shape: [max_dims]usize = undefined;
    var out_ndim: usize = 0;
    for (batch) |d| {
        out_shape[out_ndim] = d;
        out_ndim += 1;
    }
    if (a_input.ndim > 1) {
        out_shape[out_ndim] = m;
        out_ndim += 1;
    }
    if (b_input.ndim > 1) {
        out_shape[out_ndim] = n;
        out_ndim += 1;
    }
    if (out_ndim > max_dims) return status.fail(error.InvalidArgument, "matmul: result would have {d} dims", .{out_ndim});
    const out = try tensor.createUninit(.float32, out_shape[0..out_ndim]);
    errdefer out.release();
    try batched(a, b, .{}, batch, m, n, k, false, out.f32Slice());
    return out;
}

/// One operand of a batched product: its matrices read in place when they are row- or
/// column-major (a transposed view flips the GEMM transpose flag), else a contiguous copy.
const Operand = struct {
    owner: *Tensor,
    data: []const f32,
    offset: usize,
    /// The GEMM transpose flag and leading dimension of each matrix.
    trans: bool,
    leading: usize,
    /// Element stride of each broadcast batch dim (0 where the operand has size 1 or lacks it).
    batch_strides: [max_dims]usize,

    /// `t`'s last two dims are a stored [rows, cols] matrix, multiplied as op(stored) with
    /// op = transpose when `trans`.
    fn init(t: *Tensor, trans: bool, batch: []const usize) Error!Operand {
        const rows = t.shape[t.ndim - 2];
        const cols = t.shape[t.ndim - 1];
        const in_place = MatrixView.of(rows, cols, t.strides[t.ndim - 2], t.strides[t.ndim - 1]);
        const owner = if (in_place == null) try shape_ops.contiguous(t) else blk: {
            t.retain();
            break :blk t;
        };
        const view = in_place orelse MatrixView.of(rows, cols, owner.strides[owner.ndim - 2], owner.strides[owner.ndim - 1]).?;
        var strides: [max_dims]usize = @splat(0);
        const own = owner.ndim - 2;
        for (0..own) |axis| {
            if (owner.shape[axis] != 1) strides[axis + batch.len - own] = owner.strides[axis];
        }
        const base: [*]const f32 = @ptrCast(@alignCast(owner.storage.bytes.ptr));
        return .{
            .owner = owner,
            .data = base[0 .. owner.storage.bytes.len / 4],
            .offset = owner.offset,
            .trans = trans != view.transposed,
            .leading = view.leading,
            .batch_strides = strides,
        };
    }

    fn release(operand: Operand) void {
        operand.owner.release();
    }

    /// The elements of batch item `coordinates` from its first on.
    fn matrix(operand: *const Operand, coordinates: []const usize) []const f32 {
        var offset = operand.offset;
        for (coordinates, 0..) |c, d| offset += c * operand.batch_strides[d];
        return operand.data[offset..];
    }
};

/// c[item] = alpha · op(a[item]) · op(b[item]) + (accumulate ? c[item] : 0) for every item of
/// the broadcast `batch`, c contiguous [batch…, m, n]. Small products run one matrix per
/// task spread over the batch; large ones are tiled within each matrix.
fn batched(a_input: *Tensor, b_input: *Tensor, options: GemmOptions, batch: []const usize, m: usize, n: usize, k: usize, accumulate: bool, c: []f32) Error!void {
    var batch_count: usize = 1;
    for (batch) |d| batch_count *= d;
    if (m == 0 or n == 0 or batch_count == 0) return;
    if (k == 0) {
        if (!accumulate) @memset(c, 0);
        // No products: C is the bias (or zero) through the activation.
        options.activation.applyBlock(c, n, 0, batch_count * m, 0, n);
        return;
    }
    const a = try Operand.init(a_input, options.trans_a, batch);
    defer a.release();
    const b = try Operand.init(b_input, options.trans_b, batch);
    defer b.release();
    const threads = parallel.threadsForFlops(2 * m * n * k);
    // With a matrix per thread, each matrix is one task: tiling it would only add tasks.
    const per_matrix_workers = if (batch_count >= threads) 1 else threads;
    const Context = struct {
        a: *const Operand,
        b: *const Operand,
        c: []f32,
        m: usize,
        n: usize,
        k: usize,
        alpha: f32,
        accumulate: bool,
        activation: Activation,
        batch: []const usize,
        tiling: gemm.Tiling,

        fn body(context: *const @This(), begin: usize, end: usize) Error!void {
            const tiles = context.tiling.count();
            for (begin..end) |task| {
                const index = task / tiles;
                const tile = task % tiles;
                var coordinates: [max_dims]usize = undefined;
                var rest = index;
                var axis = context.batch.len;
                while (axis > 0) {
                    axis -= 1;
                    coordinates[axis] = rest % context.batch[axis];
                    rest /= context.batch[axis];
                }
                const args: gemm.Args = .{
                    .trans_a = context.a.trans,
                    .trans_b = context.b.trans,
                    .m = context.m,
                    .n = context.n,
                    .k = context.k,
                    .alpha = context.alpha,
                    .a = context.a.matrix(coordinates[0..context.batch.len]),
                    .lda = context.a.leading,
                    .b = context.b.matrix(coordinates[0..context.batch.len]),
                    .ldb = context.b.leading,
                    .beta = if (context.accumulate) 1 else 0,
                    .c = context.c[index * context.m * context.n ..][0 .. context.m * context.n],
                    .ldc = context.n,
                };
                try args.validate();
                gemm.runTiles(&args, context.tiling, tile, tile + 1);
                context.activation.applyTiles(args.c, context.m, context.n, context.tiling, tile, tile + 1);
            }
        }
    };
    const context: Context = .{
        .a = &a,
        .b = &b,
        .c = c,
        .m = m,
        .n = n,
        .k = k,
        .alpha = options.alpha,
        .accumulate = accumulate,
        .activation = options.activation,
        .batch = batch,
        .tiling = gemm.plan(m, n, per_matrix_workers),
    };
    try intra_op.parallelForTyped(0, batch_count * context.tiling.count(), 1, &context, Context.body);
}

pub const GemmOptions = struct {
    trans_a: bool = false,
    trans_b: bool = false,
    alpha: f32 = 1,
    beta: f32 = 1,
    activation: Activation = .none,
};

/// The function a gemm applies to each output value after the bias (ops.zig `Gemm`), fused
/// by the graph optimiser (lib/onnx/fuse.ts) from the activation op that read the product
/// alone. Each tile of the output gets it right after the tile is computed, while the tile
/// is still in cache, by the same vector code as the unfused op (bit-identical results).
pub const Activation = enum(u8) {
    none = 0,
    relu = 1,
    /// x · Φ(x), ONNX Gelu and torch.nn.GELU().
    gelu = 2,
    /// The tanh approximation: ONNX Gelu(approximate="tanh"), torch.nn.GELU("tanh").
    gelu_tanh = 3,
    sigmoid = 4,
    tanh = 5,
    hard_swish = 6,

    fn unary(activation: Activation) ?elementwise_kernels.Unary {
        return switch (activation) {
            .none => null,
            .relu => .relu,
            .gelu => .gelu_erf,
            .gelu_tanh => .gelu_tanh,
            .sigmoid => .sigmoid,
            .tanh => .tanh,
            .hard_swish => .hard_swish,
        };
    }

    /// Applies the activation in place to rows [row_begin, +rows) × columns [col_begin,
    /// +cols) of the row-major matrix c (row stride ldc).
    pub fn applyBlock(activation: Activation, c: []f32, ldc: usize, row_begin: usize, rows: usize, col_begin: usize, cols: usize) void {
        const kind = activation.unary() orelse return;
        if (rows == 0 or cols == 0) return;
        std.debug.assert(col_begin + cols <= ldc and (row_begin + rows - 1) * ldc + col_begin + cols <= c.len);
        for (row_begin..row_begin + rows) |r| {
            const row = c[r * ldc + col_begin ..][0..cols];
            elementwise_kernels.unary(kind, .{}, row, row);
        }
    }

    /// applyBlock over the blocks of tiles [begin, end) of `tiling` (an m × n output).
    pub fn applyTiles(activation: Activation, c: []f32, m: usize, n: usize, tiling: gemm.Tiling, begin: usize, end: usize) void {
        if (activation == .none) return;
        for (begin..end) |tile| {
            const block = tiling.block(tile, m, n) orelse continue;
            activation.applyBlock(c, n, block.row_begin, block.rows, block.col_begin, block.cols);
        }
    }
};

/// Batched, broadcasting matrix product with an optional bias over the last dim:
/// out[..., m, n] = alpha · op(a)[..., m, k] · op(b)[..., k, n] + beta · bias[n].
/// Batch dims broadcast like numpy; op = transpose of the last two dims when asked.
pub fn gemmBias(a_input: *Tensor, b_input: *Tensor, bias_input: ?*Tensor, options: GemmOptions) Error!*Tensor {
    try requireFloat("gemm", "a", a_input);
    try requireFloat("gemm", "b", b_input);
    if (a_input.ndim < 2 or b_input.ndim < 2) {
        return status.fail(error.ShapeMismatch, "gemm: expected tensors of at least 2 dims, got {d}-D and {d}-D", .{ a_input.ndim, b_input.ndim });
    }
    const a_rows = a_input.shape[a_input.ndim - 2];
    const a_cols = a_input.shape[a_input.ndim - 1];
    const b_rows = b_input.shape[b_input.ndim - 2];
    const b_cols = b_input.shape[b_input.ndim - 1];
    const m = if (options.trans_a) a_cols else a_rows;
    const k = if (options.trans_a) a_rows else a_cols;
    const k_b = if (options.trans_b) b_cols else b_rows;
    const n = if (options.trans_b) b_rows else b_cols;
    if (k != k_b) {
        return status.fail(error.ShapeMismatch, "gemm: shapes {f} and {f} cannot be multiplied (k = {d} vs {d})", .{ status.shape(a_input.dims()), status.shape(b_input.dims()), k, k_b });
    }
    var batch_buffer: [tensor.max_dims]usize = undefined;
    const batch = try elementwise.broadcastShape("gemm", a_input.dims()[0 .. a_input.ndim - 2], b_input.dims()[0 .. b_input.ndim - 2], &batch_buffer);
    if (batch.len + 2 > tensor.max_dims) return status.fail(error.InvalidArgument, "gemm: too many batch dims", .{});
    var out_shape: [tensor.max_dims]usize = undefined;
    @memcpy(out_shape[0..batch.len], batch);
    out_shape[batch.len] = m;
    out_shape[batch.len + 1] = n;
    if (bias_input) |bias| {
        try requireFloat("gemm", "bias", bias);
        if (bias.numel() != n or (bias.ndim > 0 and bias.shape[bias.ndim - 1] != n)) {
            return status.fail(error.ShapeMismatch, "gemm: bias {f} does not match the {d} output columns", .{ status.shape(bias.dims()), n });
        }
    }
    const out = try tensor.createUninit(.float32, out_shape[0 .. batch.len + 2]);
    errdefer out.release();
    const c = out.f32Slice();
    if (bias_input) |bias_tensor| {
        const bias = try shape_ops.contiguous(bias_tensor);
        defer bias.release();
        const row = bias.f32Slice();
        var offset: usize = 0;
        while (offset < c.len) : (offset += n) {
            for (c[offset..][0..n], row) |*x, value| x.* = options.beta * value;
        }
    }
    try batched(a_input, b_input, options, batch, m, n, k, bias_input != null, c);
    return out;
}

/// The f32 side of a gemm or matmul on a weight packed at load (ops/bf16.zig,
/// ops/packed_f32.zig): `a` [..., k] (at least `min_rank` dims: 2 for gemm, 1 for matmul,
/// whose vector a [k] gives [n]) made contiguous, the output [..., n] allocated, and the bias
/// written into it as beta · bias per row (kernel_beta 1) so that the kernel accumulates
/// onto it. Null when a or the bias does not fit k and n: the caller runs the plain op.
pub const PackedGemm = struct {
    a: *Tensor,
    out: *Tensor,
    m: usize,
    kernel_beta: f32,

    pub fn prepare(a_input: *Tensor, bias_input: ?*Tensor, beta: f32, k: usize, n: usize, min_rank: usize) Error!?PackedGemm {
        if (a_input.dtype != .float32 or a_input.ndim < @max(min_rank, 1) or a_input.shape[a_input.ndim - 1] != k) return null;
        if (bias_input) |bias| if (bias.dtype != .float32 or bias.numel() != n or (bias.ndim > 0 and bias.shape[bias.ndim - 1] != n)) return null;
        const a = try shape_ops.contiguous(a_input);
        errdefer a.release();
        var out_shape: [tensor.max_dims]usize = undefined;
        @memcpy(out_shape[0..a.ndim], a.dims());
        out_shape[a.ndim - 1] = n;
        const out = try tensor.createUninit(.float32, out_shape[0..a.ndim]);
        errdefer out.release();
        const c = out.f32Slice();
        var kernel_beta: f32 = 0;
        if (bias_input) |bias_tensor| if (beta != 0) {
            const bias = try shape_ops.contiguous(bias_tensor);
            defer bias.release();
            const row = bias.f32Slice();
            var offset: usize = 0;
            while (offset < c.len) : (offset += n) {
                for (c[offset..][0..n], row) |*x, value| x.* = beta * value;
            }
            kernel_beta = 1;
        };
        return .{ .a = a, .out = out, .m = a.numel() / k, .kernel_beta = kernel_beta };
    }
};

test "gemm broadcasts batches, transposes and adds a bias, against a reference" {
    settings.resetForTesting();
    defer settings.resetForTesting();
    var prng = std.Random.DefaultPrng.init(11);
    const a = try tensor.createUninit(.float32, &.{ 3, 1, 5, 7 });
    defer a.release();
    for (a.f32Slice()) |*x| x.* = prng.random().float(f32) - 0.5;
    const b = try tensor.createUninit(.float32, &.{ 2, 3, 7 }); // trans_b: [n = 3, k = 7]
    defer b.release();
    for (b.f32Slice()) |*x| x.* = prng.random().float(f32) - 0.5;
    const bias = try tensor.createUninit(.float32, &.{3});
    defer bias.release();
    @memcpy(bias.f32Slice(), &[_]f32{ 1, 2, 3 });
    for ([_]i64{ 1, 2 }) |threads| {
        try settings.setNumThreads(threads);
        const out = try gemmBias(a, b, bias, .{ .trans_b = true, .alpha = 0.5, .beta = 2 });
        defer out.release();
        try std.testing.expectEqualSlices(usize, &.{ 3, 2, 5, 3 }, out.dims());
        for (0..3) |i| for (0..2) |j| for (0..5) |row| for (0..3) |col| {
            var sum: f64 = 0;
            for (0..7) |p| sum += @as(f64, a.f32Slice()[(i * 5 + row) * 7 + p]) * b.f32Slice()[(j * 3 + col) * 7 + p];
            const expected = 0.5 * sum + 2 * bias.f32Slice()[col];
            try std.testing.expectApproxEqAbs(@as(f32, @floatCast(expected)), out.f32Slice()[((i * 2 + j) * 5 + row) * 3 + col], 1e-4);
        };
    }
    // A transposed view with trans_b (read in place, the flags cancel) equals the copy, and
    // a view that is neither row- nor column-major (copied) does too.
    const b_view = try shape_ops.transpose(b, -1, -2); // [2, 7, 3]
    defer b_view.release();
    const plain = try gemmBias(a, b, bias, .{ .trans_b = true });
    defer plain.release();
    const in_place = try gemmBias(a, b_view, bias, .{});
    defer in_place.release();
    try std.testing.expectEqualSlices(f32, plain.f32Slice(), in_place.f32Slice());
    const strided = try shape_ops.slice(a, 3, 0, 7, 2); // [3, 1, 5, 4], column stride 2
    defer strided.release();
    const strided_copy = try shape_ops.contiguous(strided);
    defer strided_copy.release();
    const short_b = try shape_ops.slice(b, 2, 0, 4, 1); // [2, 3, 4]
    defer short_b.release();
    const from_view = try gemmBias(strided, short_b, null, .{ .trans_b = true });
    defer from_view.release();
    const from_copy = try gemmBias(strided_copy, short_b, null, .{ .trans_b = true });
    defer from_copy.release();
    try std.testing.expectEqualSlices(f32, from_copy.f32Slice(), from_view.f32Slice());
    try std.testing.expectError(error.ShapeMismatch, gemmBias(a, b, null, .{}));
    try std.testing.expectError(error.ShapeMismatch, gemmBias(a, b, a, .{ .trans_b = true }));
}

test "gemm's fused activation equals the activation op on the product, bit for bit, 1 and 3 threads" {
    settings.resetForTesting();
    defer settings.resetForTesting();
    var prng = std.Random.DefaultPrng.init(0xac7);
    const random = prng.random();
    // Shapes off the register block and the vector length, one with a batch; k = 0 (the
    // output is the bias through the activation).
    for ([_][4]usize{ .{ 1, 37, 45, 19 }, .{ 2, 5, 17, 3 }, .{ 1, 64, 200, 130 }, .{ 1, 3, 7, 0 } }) |shape| {
        const batch = shape[0];
        const m = shape[1];
        const n = shape[2];
        const k = shape[3];
        const a = try tensor.createUninit(.float32, &.{ batch, m, k });
        defer a.release();
        for (a.f32Slice()) |*x| x.* = random.float(f32) * 4 - 2;
        const b = try tensor.createUninit(.float32, &.{ k, n });
        defer b.release();
        for (b.f32Slice()) |*x| x.* = random.float(f32) * 4 - 2;
        const bias = try tensor.createUninit(.float32, &.{n});
        defer bias.release();
        for (bias.f32Slice()) |*x| x.* = random.float(f32) - 0.5;
        bias.f32Slice()[0] = std.math.nan(f32); // NaN goes through every activation as NaN
        for ([_]i64{ 1, 3 }) |threads| {
            try settings.setNumThreads(threads);
            const product = try gemmBias(a, b, bias, .{ .alpha = 0.75 });
            defer product.release();
            inline for (comptime std.enums.values(Activation)) |activation| {
                const fused = try gemmBias(a, b, bias, .{ .alpha = 0.75, .activation = activation });
                defer fused.release();
                if (comptime activation.unary()) |kind| {
                    const unfused = try elementwise.unary(kind, .{}, product);
                    defer unfused.release();
                    try std.testing.expectEqualSlices(u32, @ptrCast(unfused.f32Slice()), @ptrCast(fused.f32Slice()));
                } else {
                    try std.testing.expectEqualSlices(u32, @ptrCast(product.f32Slice()), @ptrCast(fused.f32Slice()));
                }
                try std.testing.expect(std.math.isNan(fused.f32Slice()[0]));
            }
        }
    }
}

test "mm checks shapes and dtypes" {
    const a = try tensor.createZeroed(.float32, &.{ 2, 3 });
    defer a.release();
    const b = try tensor.createZeroed(.float32, &.{ 2, 3 });
    defer b.release();
    try std.testing.expectError(error.ShapeMismatch, mm(a, b));
    const indices = try tensor.createZeroed(.int64, &.{ 3, 2 });
    defer indices.release();
    try std.testing.expectError(error.DTypeMismatch, mm(a, indices));
}

test "mm of a transposed view matches the reference, 1 and 2 threads" {
    settings.resetForTesting();
    defer settings.resetForTesting();
    var prng = std.Random.DefaultPrng.init(7);
    const a = try tensor.createUninit(.float32, &.{ 37, 129 });
    defer a.release();
    for (a.f32Slice()) |*x| x.* = prng.random().float(f32);
    const b_storage = try tensor.createUninit(.float32, &.{ 53, 129 });
    defer b_storage.release();
    for (b_storage.f32Slice()) |*x| x.* = prng.random().float(f32);
    const b = try tensor.createView(b_storage, &.{ 129, 53 }, &.{ 1, 129 }, 0);
    defer b.release();
    for ([_]i64{ 1, 2 }) |threads| {
        try settings.setNumThreads(threads);
        const out = try mm(a, b);
        defer out.release();
        const values = out.f32Slice();
        for (0..37) |i| for (0..53) |j| {
            var sum: f64 = 0;
            for (0..129) |p| sum += @as(f64, a.f32Slice()[i * 129 + p]) * b_storage.f32Slice()[j * 129 + p];
            try std.testing.expectApproxEqAbs(@as(f32, @floatCast(sum)), values[i * 53 + j], 1e-3);
        };
    }
}

test "mm and matmul read row- and column-major views in place and copy the others, 1 and 2 threads" {
    settings.resetForTesting();
    defer settings.resetForTesting();
    var prng = std.Random.DefaultPrng.init(11);
    // A wide product [40, 3 · 24]: column slices of it are row-major views with ld = 72 and
    // an offset, as a fused query/key/value projection's are.
    const wide = try tensor.createUninit(.float32, &.{ 40, 72 });
    defer wide.release();
    for (wide.f32Slice()) |*x| x.* = prng.random().float(f32) * 2 - 1;
    const Case = struct { a: *Tensor, b: *Tensor };
    const queries = try shape_ops.slice(wide, 1, 0, 24, 1);
    defer queries.release();
    const keys = try shape_ops.slice(wide, 1, 24, 48, 1);
    defer keys.release();
    const values = try shape_ops.slice(wide, 1, 48, 72, 1);
    defer values.release();
    const rows_q = try shape_ops.slice(queries, 0, 7, 30, 1); // [23, 24], offset 7 · 72
    defer rows_q.release();
    const keys_t = try shape_ops.transpose(keys, 0, 1); // [24, 40], column-major
    defer keys_t.release();
    const rows_v = try shape_ops.slice(values, 0, 0, 24, 1); // [24, 24]
    defer rows_v.release();
    // Every other row of a column slice: neither layout, copied.
    const strided = try shape_ops.slice(queries, 0, 0, 40, 2); // [20, 24]
    defer strided.release();
    // A broadcast row (stride 0): copied, not read as 20 rows past the storage.
    const row_storage = try tensor.createUninit(.float32, &.{ 1, 24 });
    defer row_storage.release();
    for (row_storage.f32Slice()) |*x| x.* = prng.random().float(f32);
    const broadcast = try tensor.createView(row_storage, &.{ 20, 24 }, &.{ 0, 1 }, 0);
    defer broadcast.release();
    const one_column = try shape_ops.slice(keys, 1, 5, 6, 1); // [40, 1], ld 72
    defer one_column.release();
    const one_column_t = try shape_ops.transpose(one_column, 0, 1); // [1, 40]
    defer one_column_t.release();
    const cases = [_]Case{
        .{ .a = rows_q, .b = keys_t },
        .{ .a = keys_t, .b = values },
        .{ .a = rows_q, .b = rows_v },
        .{ .a = strided, .b = rows_v },
        .{ .a = broadcast, .b = rows_v },
        .{ .a = one_column, .b = one_column_t },
        .{ .a = one_column_t, .b = one_column },
    };
    for ([_]i64{ 1, 2 }) |threads| {
        try settings.setNumThreads(threads);
        for (cases) |case| {
            const out = try mm(case.a, case.b);
            defer out.release();
            const a = try shape_ops.contiguous(case.a);
            defer a.release();
            const b = try shape_ops.contiguous(case.b);
            defer b.release();
            const m = a.shape[0];
            const k = a.shape[1];
            const n = b.shape[1];
            // matmul's batched path reads its operands by the same layout rule.
            const batched_out = try matmul(case.a, case.b);
            defer batched_out.release();
            try std.testing.expectEqualSlices(usize, &.{ m, n }, out.dims());
            try std.testing.expectEqualSlices(usize, &.{ m, n }, batched_out.dims());
            for (0..m) |i| for (0..n) |j| {
                var sum: f64 = 0;
                for (0..k) |p| sum += @as(f64, a.f32Slice()[i * k + p]) * b.f32Slice()[p * n + j];
                try std.testing.expectApproxEqAbs(@as(f32, @floatCast(sum)), out.f32Slice()[i * n + j], 1e-4);
                try std.testing.expectApproxEqAbs(@as(f32, @floatCast(sum)), batched_out.f32Slice()[i * n + j], 1e-4);
            };
        }
    }
}

/// Checks out = matmul(a, b) element by element with explicit broadcasting index math.
fn expectMatmulReference(a: *const Tensor, b: *const Tensor, out: *const Tensor) !void {
    var a_shape: [max_dims]usize = undefined;
    var b_shape: [max_dims]usize = undefined;
    const a_dims: []usize = if (a.ndim == 1) blk: {
        a_shape[0] = 1;
        a_shape[1] = a.shape[0];
        break :blk a_shape[0..2];
    } else blk: {
        @memcpy(a_shape[0..a.ndim], a.dims());
        break :blk a_shape[0..a.ndim];
    };
    const b_dims: []usize = if (b.ndim == 1) blk: {
        b_shape[0] = b.shape[0];
        b_shape[1] = 1;
        break :blk b_shape[0..2];
    } else blk: {
        @memcpy(b_shape[0..b.ndim], b.dims());
        break :blk b_shape[0..b.ndim];
    };
    const m = a_dims[a_dims.len - 2];
    const k = a_dims[a_dims.len - 1];
    const n = b_dims[b_dims.len - 1];
    const batch_rank = @max(a_dims.len, b_dims.len) - 2;
    var batch: [max_dims]usize = undefined;
    for (0..batch_rank) |i| {
        const ai = @as(isize, @intCast(i)) - @as(isize, @intCast(batch_rank - (a_dims.len - 2)));
        const bi = @as(isize, @intCast(i)) - @as(isize, @intCast(batch_rank - (b_dims.len - 2)));
        const ad = if (ai >= 0) a_dims[@intCast(ai)] else 1;
        const bd = if (bi >= 0) b_dims[@intCast(bi)] else 1;
        batch[i] = @max(ad, bd);
    }
    var batch_count: usize = 1;
    for (batch[0..batch_rank]) |d| batch_count *= d;
    try std.testing.expectEqual(batch_count * m * n, out.numel());
    for (0..batch_count) |item| {
        // Offsets of this batch item in a and b (contiguous inputs, broadcast dims of size 1).
        var remaining = item;
        var a_offset: usize = 0;
        var b_offset: usize = 0;
        var a_stride: usize = m * k;
        var b_stride: usize = k * n;
        var axis = batch_rank;
        while (axis > 0) {
            axis -= 1;
            const coordinate = remaining % batch[axis];
            remaining /= batch[axis];
            const ai = @as(isize, @intCast(axis)) - @as(isize, @intCast(batch_rank - (a_dims.len - 2)));
            const bi = @as(isize, @intCast(axis)) - @as(isize, @intCast(batch_rank - (b_dims.len - 2)));
            if (ai >= 0) {
                const d = a_dims[@intCast(ai)];
                if (d != 1) a_offset += coordinate * a_stride;
                a_stride *= d;
            }
            if (bi >= 0) {
                const d = b_dims[@intCast(bi)];
                if (d != 1) b_offset += coordinate * b_stride;
                b_stride *= d;
            }
        }
        for (0..m) |i| for (0..n) |j| {
            var sum: f64 = 0;
            for (0..k) |p| sum += @as(f64, a.f32Slice()[a_offset + i * k + p]) * b.f32Slice()[b_offset + p * n + j];
            try std.testing.expectApproxEqAbs(@as(f32, @floatCast(sum)), out.f32Slice()[item * m * n + i * n + j], 1e-4);
        };
    }
}

test "matmul broadcasts batches, promotes vectors and reads transposed views in place" {
    var prng = std.Random.DefaultPrng.init(31);
    const random = prng.random();
    const cases = [_][2][]const usize{
        .{ &.{ 3, 4 }, &.{ 4, 5 } },       .{ &.{ 2, 3, 4 }, &.{ 4, 5 } }, .{ &.{ 2, 1, 3, 4 }, &.{ 5, 4, 2 } },
        .{ &.{4}, &.{ 4, 5 } },            .{ &.{ 3, 4 }, &.{4} },         .{ &.{4}, &.{4} },
        .{ &.{ 1, 7, 1 }, &.{ 3, 1, 6 } },
    };
    for (cases) |case| {
        const a = try tensor.createUninit(.float32, case[0]);
        defer a.release();
        const b = try tensor.createUninit(.float32, case[1]);
        defer b.release();
        for (a.f32Slice()) |*x| x.* = random.float(f32) - 0.5;
        for (b.f32Slice()) |*x| x.* = random.float(f32) - 0.5;
        const out = try matmul(a, b);
        defer out.release();
        try expectMatmulReference(a, b, out);
    }
    // Transposed view: matmul(x, transpose(w)) equals matmul(x, contiguous(transpose(w))).
    const x = try tensor.createUninit(.float32, &.{ 5, 7 });
    defer x.release();
    const w = try tensor.createUninit(.float32, &.{ 6, 7 });
    defer w.release();
    for (x.f32Slice()) |*v| v.* = random.float(f32);
    for (w.f32Slice()) |*v| v.* = random.float(f32);
    const w_t = try shape_ops.transpose(w, 0, 1);
    defer w_t.release();
    const direct = try matmul(x, w_t);
    defer direct.release();
    const copied_t = try shape_ops.contiguous(w_t);
    defer copied_t.release();
    const reference = try mm(x, copied_t);
    defer reference.release();
    for (direct.f32Slice(), reference.f32Slice()) |got, want| try std.testing.expectApproxEqAbs(want, got, 1e-5);
    const bad = try tensor.createZeroed(.float32, &.{ 3, 3 });
    defer bad.release();
    try std.testing.expectError(error.ShapeMismatch, matmul(x, bad));
}
