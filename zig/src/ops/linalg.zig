//! Matrix products on tensors: shape checks, output allocation, and the split of GEMM tiles
//! over the intra-op pool. The tiles themselves are computed in kernels/gemm.zig.
const std = @import("std");
const status = @import("../status.zig");
const tensor = @import("../tensor.zig");
const settings = @import("../settings.zig");
const intra_op = @import("../pool/intra_op.zig");
const gemm = @import("../kernels/gemm.zig");
const shape_ops = @import("shape.zig");

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
