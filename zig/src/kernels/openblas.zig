//! OpenBLAS through its C interface. Spindle keeps one intra-op pool per process, so in the
//! default mode OpenBLAS runs single-threaded inside each tile; `setOwnThreads` is the opt-in
//! mode where OpenBLAS uses its own threads and Spindle does not split the GEMM.
const std = @import("std");
const build_options = @import("build_options");
const enabled = build_options.blas == .openblas;

// The C interface, public for the native benchmarks (bench/native/gemm_bench.zig).
pub const CblasRowMajor: c_int = 101;
pub const CblasNoTrans: c_int = 111;
pub const CblasTrans: c_int = 112;

pub extern fn cblas_sgemm(
    order: c_int,
    trans_a: c_int,
    trans_b: c_int,
    m: c_int,
    n: c_int,
    k: c_int,
    alpha: f32,
    a: [*]const f32,
    lda: c_int,
    b: [*]const f32,
    ldb: c_int,
    beta: f32,
    c: [*]f32,
    ldc: c_int,
) void;
pub extern fn openblas_set_num_threads(count: c_int) void;
pub extern fn openblas_get_num_threads() c_int;
pub extern fn openblas_get_config() [*:0]const u8;

var init_once = std.once(holdSingleThreaded);

fn holdSingleThreaded() void {
    if (enabled) openblas_set_num_threads(1);
}

/// Ensures OpenBLAS is held at one thread before its first use.
pub fn ensureInitialized() void {
    init_once.call();
}

pub fn version() []const u8 {
    if (!enabled) return "";
    return std.mem.sliceTo(openblas_get_config(), 0);
}

pub fn numThreads() u32 {
    if (!enabled) return 0;
    ensureInitialized();
    return @intCast(@max(openblas_get_num_threads(), 1));
}

/// One block of C: rows [row_begin, row_begin + rows) × cols [col_begin, col_begin + cols).
/// Sizes are validated by the caller; they fit in c_int because tensors are limited to
/// 64 GiB and OpenBLAS indexes with int.
pub fn sgemmBlock(args: anytype, row_begin: usize, rows: usize, col_begin: usize, cols: usize) void {
    if (!enabled) unreachable;
    ensureInitialized();
    if (rows == 0 or cols == 0) return;
    const a_offset = if (args.trans_a) row_begin else row_begin * args.lda;
    const b_offset = if (args.trans_b) col_begin * args.ldb else col_begin;
    const c_offset = row_begin * args.ldc + col_begin;
    if (args.k == 0) {
        // OpenBLAS handles k = 0 as C = beta·C, but with empty A/B slices the pointers below
        // could be one past the end: scale C by hand instead.
        for (0..rows) |row| {
            const c_row = args.c[c_offset + row * args.ldc ..][0..cols];
            if (args.beta == 0) @memset(c_row, 0) else for (c_row) |*x| {
                x.* *= args.beta;
            }
        }
        return;
    }
    cblas_sgemm(
        CblasRowMajor,
        if (args.trans_a) CblasTrans else CblasNoTrans,
        if (args.trans_b) CblasTrans else CblasNoTrans,
        @intCast(rows),
        @intCast(cols),
        @intCast(args.k),
        args.alpha,
        args.a.ptr + a_offset,
        @intCast(args.lda),
        args.b.ptr + b_offset,
        @intCast(args.ldb),
        args.beta,
        args.c.ptr + c_offset,
        @intCast(args.ldc),
    );
}
