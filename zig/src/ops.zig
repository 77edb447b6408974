//! Op dispatch: one switch from op code to kernel. Eager TypeScript ops, forked tasks and
//! (later) the interpreter all run ops through `run`. This layer knows both the kernels and
//! the intra-op pool: it validates shapes, allocates outputs, and splits work into ranges.
const std = @import("std");
const status = @import("status.zig");
const tensor = @import("tensor.zig");
const intra_op = @import("pool/intra_op.zig");
const settings = @import("settings.zig");
const gemm = @import("kernels/gemm.zig");

const Error = status.Error;
const Tensor = tensor.Tensor;

/// Op codes are part of the ABI (ffi/symbols.ts mirrors them in lib/ops/codes.ts): append only.
pub const OpCode = enum(u32) {
    mm = 0,
    add = 1,

    pub fn fromInt(raw: u32) Error!OpCode {
        return std.meta.intToEnum(OpCode, raw) catch
            status.fail(error.InvalidArgument, "unknown op code {d}", .{raw});
    }

    pub fn arity(op: OpCode) usize {
        return switch (op) {
            .mm, .add => 2,
        };
    }
};

pub const max_inputs = 16;
pub const max_params = 16;

/// Runs `op` on `inputs` and returns a new tensor owned by the caller (one reference).
pub fn run(op: OpCode, inputs: []const *Tensor, params: []const f64) Error!*Tensor {
    if (inputs.len != op.arity()) {
        return status.fail(error.InvalidArgument, "{s}: expected {d} inputs, got {d}", .{ @tagName(op), op.arity(), inputs.len });
    }
    if (params.len > max_params) return status.fail(error.InvalidArgument, "{s}: too many parameters", .{@tagName(op)});
    return switch (op) {
        .mm => mm(inputs[0], inputs[1]),
        .add => add(inputs[0], inputs[1]),
    };
}

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
    const a = try tensor.contiguous(a_input);
    defer a.release();
    const b = try tensor.contiguous(b_input);
    defer b.release();
    const m = a.shape[0];
    const k = a.shape[1];
    const n = b.shape[1];
    const out = try tensor.createUninit(.float32, &.{ m, n });
    errdefer out.release();
    try matmulInto(false, false, m, n, k, a.f32Slice(), k, b.f32Slice(), n, out.f32Slice(), n);
    return out;
}

/// Parallel GEMM over the intra-op pool: C = A·B (beta = 0).
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

/// Elementwise sum of two float32 tensors of the same shape (broadcasting arrives with the
/// elementwise kernels).
pub fn add(a_input: *Tensor, b_input: *Tensor) Error!*Tensor {
    try requireFloat("add", "input", a_input);
    try requireFloat("add", "other", b_input);
    if (!std.mem.eql(usize, a_input.dims(), b_input.dims())) {
        return status.fail(error.ShapeMismatch, "add: shapes {any} and {any} differ", .{ a_input.dims(), b_input.dims() });
    }
    const a = try tensor.contiguous(a_input);
    defer a.release();
    const b = try tensor.contiguous(b_input);
    defer b.release();
    const out = try tensor.createUninit(.float32, a.dims());
    errdefer out.release();
    const Context = struct {
        a: []const f32,
        b: []const f32,
        out: []f32,
        fn body(context: *const @This(), begin: usize, end: usize) Error!void {
            for (context.out[begin..end], context.a[begin..end], context.b[begin..end]) |*o, x, y| o.* = x + y;
        }
    };
    const context: Context = .{ .a = a.f32Slice(), .b = b.f32Slice(), .out = out.f32Slice() };
    try intra_op.parallelForTyped(0, context.out.len, 32768, &context, Context.body);
    return out;
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
