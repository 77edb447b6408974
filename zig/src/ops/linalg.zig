//! Matrix products on tensors: shape checks, output allocation, and the split of GEMM tiles
//! over the intra-op pool. The tiles themselves are computed in kernels/gemm.zig.
const std = @import("std");
const status = @import("../status.zig");
const tensor = @import("../tensor.zig");
const settings = @import("../settings.zig");
const intra_op = @import("../pool/intra_op.zig");
const gemm = @import("../kernels/gemm.zig");
const shape_ops = @import("shape.zig");
const elementwise = @import("elementwise.zig");

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
    const a = try shape_ops.contiguous(a_input);
    defer a.release();
    const b = try shape_ops.contiguous(b_input);
    defer b.release();
    const m = a.shape[0];
    const k = a.shape[1];
    const n = b.shape[1];
    const out = try tensor.createUninit(.float32, &.{ m, n });
    errdefer out.release();
    try matmulInto(false, false, m, n, k, a.f32Slice(), k, b.f32Slice(), n, out.f32Slice(), n);
    return out;
}

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
    const threads: usize = if (intra_op.inParallelRegion()) 1 else settings.getNumThreads();
    // Below ~64 KFLOP per thread the fork-join costs more than it saves.
    const flops = 2 * m * n * @max(k, 1);
    const workers = if (flops < 65536 * 2) 1 else threads;
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

pub const MatmulOptions = struct {
    trans_a: bool = false,
    trans_b: bool = false,
    alpha: f32 = 1,
    beta: f32 = 1,
};

/// Batched, broadcasting matrix product with an optional bias over the last dim:
/// out[..., m, n] = alpha · op(a)[..., m, k] · op(b)[..., k, n] + beta · bias[n].
/// Batch dims broadcast like numpy; op = transpose of the last two dims when asked.
pub fn matmul(a_input: *Tensor, b_input: *Tensor, bias_input: ?*Tensor, options: MatmulOptions) Error!*Tensor {
    try requireFloat("matmul", "a", a_input);
    try requireFloat("matmul", "b", b_input);
    if (a_input.ndim < 2 or b_input.ndim < 2) {
        return status.fail(error.ShapeMismatch, "matmul: expected tensors of at least 2 dims, got {d}-D and {d}-D", .{ a_input.ndim, b_input.ndim });
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
        return status.fail(error.ShapeMismatch, "matmul: shapes {f} and {f} cannot be multiplied (k = {d} vs {d})", .{ status.shape(a_input.dims()), status.shape(b_input.dims()), k, k_b });
    }
    var batch_buffer: [tensor.max_dims]usize = undefined;
    const batch = try elementwise.broadcastShape("matmul", a_input.dims()[0 .. a_input.ndim - 2], b_input.dims()[0 .. b_input.ndim - 2], &batch_buffer);
    if (batch.len + 2 > tensor.max_dims) return status.fail(error.InvalidArgument, "matmul: too many batch dims", .{});
    var out_shape: [tensor.max_dims]usize = undefined;
    @memcpy(out_shape[0..batch.len], batch);
    out_shape[batch.len] = m;
    out_shape[batch.len + 1] = n;
    if (bias_input) |bias| {
        try requireFloat("matmul", "bias", bias);
        if (bias.numel() != n or (bias.ndim > 0 and bias.shape[bias.ndim - 1] != n)) {
            return status.fail(error.ShapeMismatch, "matmul: bias {f} does not match the {d} output columns", .{ status.shape(bias.dims()), n });
        }
    }
    const a = try shape_ops.contiguous(a_input);
    defer a.release();
    const b = try shape_ops.contiguous(b_input);
    defer b.release();
    const out = try tensor.createUninit(.float32, out_shape[0 .. batch.len + 2]);
    errdefer out.release();
    var batch_count: usize = 1;
    for (batch) |d| batch_count *= d;
    if (m == 0 or n == 0 or batch_count == 0) return out;
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
    const a_batch_strides = batchStrides(a.dims(), batch, m * k);
    const b_batch_strides = batchStrides(b.dims(), batch, k * n);
    const threads: usize = if (intra_op.inParallelRegion()) 1 else settings.getNumThreads();
    const flops = 2 * m * n * @max(k, 1);
    // Small matrices: one tile each, spread over the batch; large: tiles within each matrix.
    const per_matrix_workers = if (flops < 65536 * 2 or batch_count >= threads) 1 else threads;
    const Context = struct {
        a: []const f32,
        b: []const f32,
        c: []f32,
        m: usize,
        n: usize,
        k: usize,
        options: MatmulOptions,
        has_bias: bool,
        batch: []const usize,
        a_strides: [tensor.max_dims]usize,
        b_strides: [tensor.max_dims]usize,
        tiling: gemm.Tiling,
        fn body(context: *const @This(), begin: usize, end: usize) Error!void {
            const tiles = context.tiling.count();
            for (begin..end) |task| {
                const index = task / tiles;
                const tile = task % tiles;
                var coordinates: [tensor.max_dims]usize = undefined;
                var rest = index;
                var axis = context.batch.len;
                while (axis > 0) {
                    axis -= 1;
                    coordinates[axis] = rest % context.batch[axis];
                    rest /= context.batch[axis];
                }
                var a_offset: usize = 0;
                var b_offset: usize = 0;
                for (0..context.batch.len) |d| {
                    a_offset += coordinates[d] * context.a_strides[d];
                    b_offset += coordinates[d] * context.b_strides[d];
                }
                const mk = context.m * context.k;
                const kn = context.k * context.n;
                const args: gemm.Args = .{
                    .trans_a = context.options.trans_a,
                    .trans_b = context.options.trans_b,
                    .m = context.m,
                    .n = context.n,
                    .k = context.k,
                    .alpha = context.options.alpha,
                    .a = context.a[a_offset..][0..mk],
                    .lda = if (context.options.trans_a) context.m else context.k,
                    .b = context.b[b_offset..][0..kn],
                    .ldb = if (context.options.trans_b) context.k else context.n,
                    .beta = if (context.has_bias) 1 else 0,
                    .c = context.c[index * context.m * context.n ..][0 .. context.m * context.n],
                    .ldc = context.n,
                };
                gemm.runTiles(&args, context.tiling, tile, tile + 1);
            }
        }
    };
    const context: Context = .{
        .a = a.f32Slice(),
        .b = b.f32Slice(),
        .c = c,
        .m = m,
        .n = n,
        .k = k,
        .options = options,
        .has_bias = bias_input != null,
        .batch = batch,
        .a_strides = a_batch_strides,
        .b_strides = b_batch_strides,
        .tiling = gemm.plan(m, n, per_matrix_workers),
    };
    if (k == 0) {
        if (bias_input == null) @memset(c, 0);
        return out;
    }
    try intra_op.parallelForTyped(0, batch_count * context.tiling.count(), 1, &context, Context.body);
    return out;
}

/// Element strides of each batch dim of a contiguous operand seen through the broadcast
/// batch shape (0 where the operand has size 1 or lacks the dim).
fn batchStrides(dims: []const usize, batch: []const usize, matrix: usize) [tensor.max_dims]usize {
    var strides: [tensor.max_dims]usize = @splat(0);
    const own = dims[0 .. dims.len - 2];
    var stride = matrix;
    var axis = own.len;
    const offset = batch.len - own.len;
    while (axis > 0) {
        axis -= 1;
        strides[axis + offset] = if (own[axis] == 1) 0 else stride;
        stride *= own[axis];
    }
    return strides;
}

test "matmul broadcasts batches, transposes and adds a bias, against a reference" {
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
        const out = try matmul(a, b, bias, .{ .trans_b = true, .alpha = 0.5, .beta = 2 });
        defer out.release();
        try std.testing.expectEqualSlices(usize, &.{ 3, 2, 5, 3 }, out.dims());
        for (0..3) |i| for (0..2) |j| for (0..5) |row| for (0..3) |col| {
            var sum: f64 = 0;
            for (0..7) |p| sum += @as(f64, a.f32Slice()[(i * 5 + row) * 7 + p]) * b.f32Slice()[(j * 3 + col) * 7 + p];
            const expected = 0.5 * sum + 2 * bias.f32Slice()[col];
            try std.testing.expectApproxEqAbs(@as(f32, @floatCast(expected)), out.f32Slice()[((i * 2 + j) * 5 + row) * 3 + col], 1e-4);
        };
    }
    try std.testing.expectError(error.ShapeMismatch, matmul(a, b, null, .{}));
    try std.testing.expectError(error.ShapeMismatch, matmul(a, b, a, .{ .trans_b = true }));
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
