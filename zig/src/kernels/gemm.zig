//! Single-precision GEMM: C = alpha · op(A) · op(B) + beta · C, row-major, with op = identity
//! or transpose. The kernel has the shape every kernel has here: arguments plus a range (of
//! output tiles); threading lives in the caller (ops.zig), which splits tiles over the
//! intra-op pool. The BLAS backend is chosen at build time with -Dblas: OpenBLAS, called
//! single-threaded per tile (openblas.zig), or Spindle's own packed GEMM (gemm_native.zig,
//! which also offers a pre-packed B for fixed weights: PackedB and runTilesPacked).
const std = @import("std");
const build_options = @import("build_options");
const status = @import("../status.zig");
const openblas = @import("openblas.zig");
const gemm_native = @import("gemm_native.zig");
const native = gemm_native.native;

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

    pub fn checkMatrix(comptime name: []const u8, len: usize, rows: usize, cols: usize, ld: usize) Error!void {
        if (rows == 0 or cols == 0) return;
        if (ld < cols) {
            return status.fail(error.InvalidArgument, "sgemm: ld" ++ name ++ " = {d} is smaller than the {d} columns of " ++ name, .{ ld, cols });
        }
        const needed = std.math.add(usize, (rows - 1) *| ld, cols) catch
            return status.fail(error.TooLarge, "sgemm: " ++ name ++ " of {d}x{d} (ld {d}) overflows the index range", .{ rows, cols, ld });
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

/// How the output is cut into tiles for the intra-op pool: a grid of row_tiles × col_tiles
/// blocks, numbered row-major; the last block of each dimension may be shorter.
pub const Tiling = struct {
    rows_per_tile: usize,
    cols_per_tile: usize,
    row_tiles: usize,
    col_tiles: usize,

    pub fn count(tiling: Tiling) usize {
        return tiling.row_tiles * tiling.col_tiles;
    }

    pub const Block = struct { row_begin: usize, rows: usize, col_begin: usize, cols: usize };

    /// The part of an m × n output that `tile` covers, or null when it covers nothing.
    pub fn block(tiling: Tiling, tile: usize, m: usize, n: usize) ?Block {
        std.debug.assert(tile < tiling.count());
        const row_begin = (tile / tiling.col_tiles) * tiling.rows_per_tile;
        const col_begin = (tile % tiling.col_tiles) * tiling.cols_per_tile;
        if (row_begin >= m or col_begin >= n) return null;
        return .{
            .row_begin = row_begin,
            .rows = @min(tiling.rows_per_tile, m - row_begin),
            .col_begin = col_begin,
            .cols = @min(tiling.cols_per_tile, n - col_begin),
        };
    }
};

/// Upper bound on the workers plan() balances over; more threads than this share tiles.
pub const workers_max = 256;

/// Chooses at most `threads` tiles, aligned to the native kernel's register block so that
/// only the last tile of each dimension has ragged panels. Among the grids that fit, it takes
/// the one whose largest tile is smallest (the critical path); on a tie, the one whose tiles
/// have the smallest rows + columns, since each tile packs its own slice of A and of B.
pub fn plan(m: usize, n: usize, threads: usize) Tiling {
    const workers = std.math.clamp(threads, 1, workers_max);
    const row_groups = @max(1, std.math.divCeil(usize, m, native.panel_rows) catch unreachable);
    const col_groups = @max(1, std.math.divCeil(usize, n, native.panel_cols) catch unreachable);
    var best: ?Tiling = null;
    var best_area: usize = 0;
    var best_perimeter: usize = 0;
    for (1..@min(workers, row_groups) + 1) |row_tiles| {
        const col_tiles = @min(col_groups, workers / row_tiles);
        const tiling = grid(m, n, row_groups, row_tiles, col_groups, col_tiles);
        const rows = @min(tiling.rows_per_tile, @max(m, 1));
        const cols = @min(tiling.cols_per_tile, @max(n, 1));
        const better = best == null or rows * cols < best_area or
            (rows * cols == best_area and rows + cols < best_perimeter);
        if (better) {
            best = tiling;
            best_area = rows * cols;
            best_perimeter = rows + cols;
        }
    }
    std.debug.assert(best.?.count() <= workers);
    return best.?;
}

fn grid(m: usize, n: usize, row_groups: usize, row_tiles: usize, col_groups: usize, col_tiles: usize) Tiling {
    std.debug.assert(row_tiles >= 1 and row_tiles <= row_groups);
    std.debug.assert(col_tiles >= 1 and col_tiles <= col_groups);
    const rows_per_tile = native.panel_rows * (std.math.divCeil(usize, row_groups, row_tiles) catch unreachable);
    const cols_per_tile = native.panel_cols * (std.math.divCeil(usize, col_groups, col_tiles) catch unreachable);
    return .{
        .rows_per_tile = rows_per_tile,
        .cols_per_tile = cols_per_tile,
        .row_tiles = std.math.divCeil(usize, @max(m, 1), rows_per_tile) catch unreachable,
        .col_tiles = std.math.divCeil(usize, @max(n, 1), cols_per_tile) catch unreachable,
    };
}

/// Computes output tiles [tile_begin, tile_end) of `tiling`. `args` must be validated.
pub fn runTiles(args: *const Args, tiling: Tiling, tile_begin: usize, tile_end: usize) void {
    std.debug.assert(tile_begin <= tile_end);
    std.debug.assert(tile_end <= tiling.count());
    for (tile_begin..tile_end) |tile| {
        const block = tiling.block(tile, args.m, args.n) orelse continue;
        switch (build_options.blas) {
            .openblas => openblas.sgemmBlock(args, block.row_begin, block.rows, block.col_begin, block.cols),
            .native => native.runBlock(args, block.row_begin, block.rows, block.col_begin, block.cols),
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

test "plan covers every element of C exactly once, in at most `threads` aligned tiles" {
    var prng = std.Random.DefaultPrng.init(3);
    const random = prng.random();
    var hits: [300 * 300]u8 = undefined;
    for (0..200) |_| {
        const m = random.uintLessThan(usize, 300);
        const n = random.uintLessThan(usize, 300);
        const threads = 1 + random.uintLessThan(usize, 9);
        const tiling = plan(m, n, threads);
        try std.testing.expect(tiling.count() >= 1 and tiling.count() <= threads);
        try std.testing.expect(tiling.cols_per_tile % native.panel_cols == 0);
        try std.testing.expect(tiling.rows_per_tile % native.panel_rows == 0);
        @memset(hits[0 .. m * n], 0);
        for (0..tiling.count()) |tile| {
            const block = tiling.block(tile, m, n) orelse continue;
            for (block.row_begin..block.row_begin + block.rows) |row| {
                for (hits[row * n + block.col_begin ..][0..block.cols]) |*hit| hit.* += 1;
            }
        }
        for (hits[0 .. m * n]) |hit| try std.testing.expectEqual(@as(u8, 1), hit);
    }
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
