//! Single-precision GEMM: C = alpha · op(A) · op(B) + beta · C, row-major, with op = identity
//! or transpose. The kernel has the shape every kernel has here: arguments plus a range (of
//! output tiles); threading lives in the caller (ops.zig), which splits tiles over the
//! intra-op pool. The BLAS backend is chosen at build time with -Dblas.
const std = @import("std");
const build_options = @import("build_options");
const status = @import("../status.zig");
const openblas = @import("openblas.zig");

const Error = status.Error;

pub const Args = struct {
    trans_a: bool,
    trans_b: bool,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: []const f32,
    lda: usize,
    b: []const f32,
    ldb: usize,
    beta: f32,
    c: []f32,
    ldc: usize,

    /// Checks that every element the kernel will touch lies inside the given slices.
    pub fn validate(args: *const Args) Error!void {
        const a_rows = if (args.trans_a) args.k else args.m;
        const a_cols = if (args.trans_a) args.m else args.k;
        const b_rows = if (args.trans_b) args.n else args.k;
        const b_cols = if (args.trans_b) args.k else args.n;
        try checkMatrix("A", args.a.len, a_rows, a_cols, args.lda);
        try checkMatrix("B", args.b.len, b_rows, b_cols, args.ldb);
        try checkMatrix("C", args.c.len, args.m, args.n, args.ldc);
    }

    fn checkMatrix(comptime name: []const u8, len: usize, rows: usize, cols: usize, ld: usize) Error!void {
        if (rows == 0 or cols == 0) return;
        if (ld < cols) {
            return status.fail(error.InvalidArgument, "sgemm: ld" ++ name ++ " = {d} is smaller than the {d} columns of " ++ name, .{ ld, cols });
        }
        const last = std.math.mul(usize, rows - 1, ld) catch return error.TooLarge;
        const needed = std.math.add(usize, last, cols) catch return error.TooLarge;
        if (needed > len) {
            return status.fail(error.IndexOutOfRange, "sgemm: " ++ name ++ " of {d}x{d} (ld {d}) needs {d} elements, the buffer has {d}", .{ rows, cols, ld, needed, len });
        }
    }

    fn aAt(args: *const Args, row: usize, depth: usize) f32 {
        return if (args.trans_a) args.a[depth * args.lda + row] else args.a[row * args.lda + depth];
    }

    fn bAt(args: *const Args, depth: usize, col: usize) f32 {
        return if (args.trans_b) args.b[col * args.ldb + depth] else args.b[depth * args.ldb + col];
    }
};

/// How the output is cut into tiles for the intra-op pool.
pub const Tiling = struct {
    rows_per_tile: usize,
    cols_per_tile: usize,
    row_tiles: usize,
    col_tiles: usize,

    pub fn count(tiling: Tiling) usize {
        return tiling.row_tiles * tiling.col_tiles;
    }
};

/// Chooses tiles so that `threads` workers get balanced, reasonably large blocks: split the
/// rows when there are enough of them, otherwise the columns.
pub fn plan(m: usize, n: usize, threads: usize) Tiling {
    const workers = @max(threads, 1);
    const min_rows = 16;
    const min_cols = 64;
    var row_tiles = @max(1, @min(workers, m / min_rows));
    var col_tiles: usize = 1;
    if (row_tiles < workers) col_tiles = @max(1, @min(workers / row_tiles, n / min_cols));
    if (m == 0) row_tiles = 1;
    const rows_per_tile = @max(1, std.math.divCeil(usize, m, row_tiles) catch unreachable);
    var cols_per_tile = @max(1, std.math.divCeil(usize, n, col_tiles) catch unreachable);
    // Keep column tiles a multiple of the vector width so edges stay on one tile.
    if (col_tiles > 1) cols_per_tile = std.mem.alignForward(usize, cols_per_tile, 16);
    return .{
        .rows_per_tile = rows_per_tile,
        .cols_per_tile = cols_per_tile,
        .row_tiles = std.math.divCeil(usize, @max(m, 1), rows_per_tile) catch unreachable,
        .col_tiles = std.math.divCeil(usize, @max(n, 1), cols_per_tile) catch unreachable,
    };
}

/// Computes output tiles [tile_begin, tile_end) of `tiling`. `args` must be validated.
pub fn runTiles(args: *const Args, tiling: Tiling, tile_begin: usize, tile_end: usize) void {
    std.debug.assert(tile_end <= tiling.count());
    for (tile_begin..tile_end) |tile| {
        const row_begin = (tile / tiling.col_tiles) * tiling.rows_per_tile;
        const col_begin = (tile % tiling.col_tiles) * tiling.cols_per_tile;
        if (row_begin >= args.m or col_begin >= args.n) continue;
        const rows = @min(tiling.rows_per_tile, args.m - row_begin);
        const cols = @min(tiling.cols_per_tile, args.n - col_begin);
        switch (build_options.blas) {
            .openblas => openblas.sgemmBlock(args, row_begin, rows, col_begin, cols),
            .native => nativeBlock(args, row_begin, rows, col_begin, cols),
        }
    }
}

const vector_width = 16;
const V = @Vector(vector_width, f32);

/// The interim native GEMM: row-wise axpy with vector registers. Correct for every shape,
/// far from peak; the packed, register-blocked kernel replaces it.
fn nativeBlock(args: *const Args, row_begin: usize, rows: usize, col_begin: usize, cols: usize) void {
    for (row_begin..row_begin + rows) |row| {
        const c_row = args.c[row * args.ldc + col_begin ..][0..cols];
        if (args.beta == 0) @memset(c_row, 0) else if (args.beta != 1) {
            for (c_row) |*x| x.* *= args.beta;
        }
        for (0..args.k) |depth| {
            const a_value = args.alpha * args.aAt(row, depth);
            if (args.trans_b) {
                for (c_row, 0..) |*x, j| x.* += a_value * args.bAt(depth, col_begin + j);
                continue;
            }
            const b_row = args.b[depth * args.ldb + col_begin ..][0..cols];
            const a_splat: V = @splat(a_value);
            var j: usize = 0;
            while (j + vector_width <= cols) : (j += vector_width) {
                const b_vector: V = b_row[j..][0..vector_width].*;
                const c_vector: V = c_row[j..][0..vector_width].*;
                c_row[j..][0..vector_width].* = @mulAdd(V, a_splat, b_vector, c_vector);
            }
            while (j < cols) : (j += 1) c_row[j] = @mulAdd(f32, a_value, b_row[j], c_row[j]);
        }
    }
}

/// The simple reference every implementation is tested against (f64 accumulation).
pub fn reference(args: *const Args) void {
    for (0..args.m) |row| {
        for (0..args.n) |col| {
            var sum: f64 = 0;
            for (0..args.k) |depth| sum += @as(f64, args.aAt(row, depth)) * @as(f64, args.bAt(depth, col));
            const c = &args.c[row * args.ldc + col];
            const scaled_c: f64 = if (args.beta == 0) 0 else @as(f64, args.beta) * c.*;
            c.* = @floatCast(@as(f64, args.alpha) * sum + scaled_c);
        }
    }
}

fn fillRandom(random: std.Random, values: []f32) void {
    for (values) |*x| x.* = random.float(f32) * 2 - 1;
}

test "runTiles matches the reference on awkward shapes, every transpose, alpha and beta" {
    var prng = std.Random.DefaultPrng.init(42);
    const random = prng.random();
    const sizes = [_]usize{ 0, 1, 2, 7, 16, 17, 31, 64, 67 };
    const allocator = std.testing.allocator;
    for (sizes) |m| for (sizes) |n| for ([_]usize{ 0, 1, 5, 33 }) |k| {
        for ([_]bool{ false, true }) |trans_a| for ([_]bool{ false, true }) |trans_b| {
            const lda = (if (trans_a) m else k) + 1;
            const ldb = (if (trans_b) k else n) + 2;
            const ldc = n + 3;
            const a = try allocator.alloc(f32, @max(1, (if (trans_a) k else m) * lda));
            defer allocator.free(a);
            const b = try allocator.alloc(f32, @max(1, (if (trans_b) n else k) * ldb));
            defer allocator.free(b);
            const c = try allocator.alloc(f32, @max(1, m * ldc));
            defer allocator.free(c);
            const expected = try allocator.alloc(f32, c.len);
            defer allocator.free(expected);
            fillRandom(random, a);
            fillRandom(random, b);
            fillRandom(random, c);
            @memcpy(expected, c);
            var args: Args = .{
                .trans_a = trans_a,
                .trans_b = trans_b,
                .m = m,
                .n = n,
                .k = k,
                .alpha = 0.5,
                .a = a,
                .lda = lda,
                .b = b,
                .ldb = ldb,
                .beta = if (k == 5) 0 else 0.25,
                .c = c,
                .ldc = ldc,
            };
            try args.validate();
            for ([_]usize{ 1, 2, 3 }) |threads| {
                @memcpy(c, expected);
                const tiling = plan(m, n, threads);
                for (0..tiling.count()) |tile| runTiles(&args, tiling, tile, tile + 1);
                var reference_args = args;
                const reference_c = try allocator.dupe(f32, expected);
                defer allocator.free(reference_c);
                reference_args.c = reference_c;
                reference(&reference_args);
                for (c, reference_c) |got, want| try std.testing.expectApproxEqAbs(want, got, 1e-4 * @as(f32, @floatFromInt(k + 1)));
            }
        };
    };
}

test "validate refuses short buffers and bad leading dimensions" {
    var a: [6]f32 = undefined;
    var b: [6]f32 = undefined;
    var c: [4]f32 = undefined;
    var args: Args = .{
        .trans_a = false,
        .trans_b = false,
        .m = 2,
        .n = 2,
        .k = 3,
        .alpha = 1,
        .a = &a,
        .lda = 3,
        .b = &b,
        .ldb = 2,
        .beta = 0,
        .c = &c,
        .ldc = 2,
    };
    try args.validate();
    args.lda = 2;
    try std.testing.expectError(error.InvalidArgument, args.validate());
    args.lda = 3;
    args.m = 3;
    try std.testing.expectError(error.IndexOutOfRange, args.validate());
}
