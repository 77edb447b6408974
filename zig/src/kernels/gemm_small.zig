//! A few rows of A times a weight packed at load (gemm_native's `PackedB`): the products of
//! small models, e.g. 25 tokens through a 96 × 96 linear layer, where the math is a few µs.
//!
//! The general path (gemm_native.runBlockPacked) packs A into panels of panel_rows rows
//! before multiplying: for 25 × 96 rows of A that copy was about a sixth of the product's
//! time (measured with perf on the bench:overhead model), since each A element then meets
//! only three B slivers. Here the micro-kernel broadcasts A's elements straight from its
//! rows (row-major, `lda` apart) and covers several B slivers at once, so each block of
//! rows reads A once per column block, and the sums stay in registers across all depth
//! blocks of the packed B (no second pass over C). Same sums in the same depth order as the
//! general path, so results differ from it only by the accumulator split.
const std = @import("std");
const gemm_native = @import("gemm_native.zig");

const assert = std.debug.assert;

/// The kernel for `config`, reading a `PackedB` of `Kernel(config)`.
pub fn SmallRows(comptime config: gemm_native.Config) type {
    return struct {
        const Native = gemm_native.Kernel(config);
        const lanes = config.vector_length;
        const V = @Vector(lanes, f32);
        const panel_cols = Native.panel_cols;
        /// Vectors across one B sliver.
        const sliver_vectors = panel_cols / lanes;
        const depth_block = config.depth_block;
        /// Rows of a register block.
        pub const block_rows = 4;
        /// Accumulator vectors of a register block: most of the registers, leaving some for
        /// B vectors and broadcasts (32 zmm registers with AVX-512, 16 otherwise).
        const accumulators = if (lanes >= 16) 24 else 12;

        comptime {
            assert(panel_cols % lanes == 0);
            assert(accumulators >= block_rows * sliver_vectors);
        }

        /// Slivers a block of `rows` rows covers: as many as the accumulators allow.
        fn blockSlivers(comptime rows: usize) usize {
            return accumulators / (rows * sliver_vectors);
        }

        /// Rows at most that this path takes; more rows amortise packing A (the general path).
        pub const rows_max = 64;
        /// Packed B floats at most (256 KiB): each block of rows streams all of B, so B must
        /// stay in L2 across the blocks. The general path reads each B sliver from L1 for
        /// every panel of rows, which a large B (builtin:example's 1024 × 1024) needs.
        pub const packed_floats_max = 64 * 1024;

        /// Whether this path takes an m-row product with `packed_b` (else the general one).
        pub fn fits(m: usize, packed_b: *const Native.PackedB) bool {
            return m <= rows_max and packed_b.values.len <= packed_floats_max;
        }

        /// Computes rows [row_begin, +rows) × cols [col_begin, +cols) of
        /// C = alpha · A · packed B + beta · C, as Native.runBlockPacked does. `args` must be
        /// validated, A untransposed, `col_begin` a multiple of panel_cols.
        pub fn runBlock(args: *const Native.PackedArgs, row_begin: usize, rows: usize, col_begin: usize, cols: usize) void {
            assert(!args.trans_a);
            assert(col_begin % panel_cols == 0);
            assert(row_begin + rows <= args.m and col_begin + cols <= args.packed_b.n);
            if (rows == 0 or cols == 0) return;
            if (args.packed_b.k == 0 or args.alpha == 0) {
                // BLAS semantics, as the general path: A and B are not read.
                return Native.runBlockPacked(args, row_begin, rows, col_begin, cols);
            }
            var row = row_begin;
            while (row < row_begin + rows) {
                const used = @min(block_rows, row_begin + rows - row);
                switch (used) {
                    inline 1...block_rows => |comptime_rows| rowBlock(comptime_rows, args, row, col_begin, cols),
                    else => unreachable,
                }
                row += used;
            }
        }

        /// One block of `rows` rows across the columns, `blockSlivers(rows)` slivers at a time.
        fn rowBlock(comptime rows: usize, args: *const Native.PackedArgs, row: usize, col_begin: usize, cols: usize) void {
            const slivers_max = comptime blockSlivers(rows);
            const first_sliver = col_begin / panel_cols;
            const sliver_count = (cols + panel_cols - 1) / panel_cols;
            var sliver: usize = 0;
            while (sliver < sliver_count) {
                const used = @min(slivers_max, sliver_count - sliver);
                switch (used) {
                    inline 1...slivers_max => |slivers| {
                        const block_col = sliver * panel_cols;
                        const block_cols = @min(slivers * panel_cols, cols - block_col);
                        const sums = accumulate(rows, slivers, args, row, first_sliver + sliver);
                        store(rows, slivers, &sums, args, row, col_begin + block_col, block_cols);
                    },
                    else => unreachable,
                }
                sliver += used;
            }
        }

        fn Sums(comptime rows: usize, comptime slivers: usize) type {
            return [rows][slivers * sliver_vectors]V;
        }

        /// sums[r][v] = Σ_p A[row + r][p] · B[p][first_sliver · panel_cols + v · lanes ..],
        /// over every depth block of the packed B.
        inline fn accumulate(comptime rows: usize, comptime slivers: usize, args: *const Native.PackedArgs, row: usize, first_sliver: usize) Sums(rows, slivers) {
            const k = args.packed_b.k;
            const padded_cols = Native.PackedB.paddedCols(args.packed_b.n);
            var sums = std.mem.zeroes(Sums(rows, slivers));
            var a_rows: [rows][*]const f32 = undefined;
            inline for (0..rows) |r| a_rows[r] = args.a[(row + r) * args.lda ..][0..k].ptr;
            var depth_start: usize = 0;
            while (depth_start < k) : (depth_start += depth_block) {
                const depth = @min(depth_block, k - depth_start);
                // Depth block: its slivers one after the other, each depth × panel_cols.
                const block = args.packed_b.values[depth_start * padded_cols ..][0 .. depth * padded_cols];
                assert((first_sliver + slivers) * depth * panel_cols <= block.len);
                var b_slivers: [slivers][*]const f32 = undefined;
                inline for (0..slivers) |s| b_slivers[s] = block[(first_sliver + s) * depth * panel_cols ..].ptr;
                for (0..depth) |p| {
                    var b_vectors: [slivers * sliver_vectors]V = undefined;
                    inline for (0..slivers) |s| inline for (0..sliver_vectors) |v| {
                        b_vectors[s * sliver_vectors + v] = b_slivers[s][p * panel_cols + v * lanes ..][0..lanes].*;
                    };
                    inline for (0..rows) |r| {
                        const a_value: V = @splat(a_rows[r][depth_start + p]);
                        inline for (0..slivers * sliver_vectors) |v| sums[r][v] = multiplyAdd(a_value, b_vectors[v], sums[r][v]);
                    }
                }
            }
            return sums;
        }

        inline fn multiplyAdd(x: V, y: V, z: V) V {
            return if (config.fused_multiply_add) @mulAdd(V, x, y, z) else x * y + z;
        }

        /// C[row + r][col ..][0..cols] = alpha · sums[r] + beta · C (C not read when beta = 0).
        fn store(comptime rows: usize, comptime slivers: usize, sums: *const Sums(rows, slivers), args: *const Native.PackedArgs, row: usize, col: usize, cols: usize) void {
            const vectors = slivers * sliver_vectors;
            assert(cols >= 1 and cols <= vectors * lanes);
            const alpha: V = @splat(args.alpha);
            const beta: V = @splat(args.beta);
            inline for (0..rows) |r| {
                const c_row = args.c[(row + r) * args.ldc + col ..][0..cols];
                inline for (0..vectors) |v| {
                    const product = sums[r][v] * alpha;
                    if ((v + 1) * lanes <= cols) {
                        const destination = c_row[v * lanes ..][0..lanes];
                        // beta = 0 overwrites: NaN or garbage in C does not leak.
                        destination.* = if (args.beta == 0) product else multiplyAdd(destination.*, beta, product);
                    } else if (v * lanes < cols) {
                        const values: [lanes]f32 = product;
                        for (c_row[v * lanes ..], values[0 .. cols - v * lanes]) |*value, p| {
                            value.* = if (args.beta == 0) p else value.* * args.beta + p;
                        }
                    }
                }
            }
        }
    };
}

/// The kernel for this build's target.
pub const native = SmallRows(gemm_native.target_config);

// -------------------------------------------------------------------------------------------
// Tests.

const testing = std.testing;
const gemm = @import("gemm.zig");

test "few rows times a packed B match the reference on awkward shapes, any tiling" {
    const Native = gemm_native.native;
    var prng = std.Random.DefaultPrng.init(0x5a11);
    const random = prng.random();
    const allocator = testing.allocator;
    // Rows around the register block and the limit; columns off the slivers; depths across
    // the packed depth blocks (512 with AVX-512, 256 otherwise) and off the vector width.
    const Shape = struct { m: usize, n: usize, k: usize, alpha: f32 = 1, beta: f32 = 0 };
    const shapes = [_]Shape{
        .{ .m = 25, .n = 96, .k = 96 },
        .{ .m = 1, .n = 1, .k = 1 },
        .{ .m = 3, .n = 17, .k = 5 },
        .{ .m = 7, .n = 400, .k = 33 },
        .{ .m = 64, .n = 33, .k = 1100, .alpha = 0.5, .beta = 2 },
        .{ .m = 5, .n = 97, .k = 600, .beta = 1 },
        .{ .m = 13, .n = 64, .k = 0, .beta = 0.5 },
    };
    for (shapes) |shape| for ([_]usize{ 1, 2 }) |threads| {
        const a = try allocator.alloc(f32, shape.m * (shape.k + 3));
        defer allocator.free(a);
        for (a) |*x| x.* = random.float(f32) * 2 - 1;
        const b = try allocator.alloc(f32, shape.k * shape.n);
        defer allocator.free(b);
        for (b) |*x| x.* = random.float(f32) * 2 - 1;
        const c = try allocator.alloc(f32, shape.m * shape.n);
        defer allocator.free(c);
        for (c) |*x| x.* = random.float(f32);
        const expected = try allocator.dupe(f32, c);
        defer allocator.free(expected);
        var packed_b = try Native.PackedB.init(allocator, false, shape.k, shape.n, b, shape.n);
        defer packed_b.deinit(allocator);
        const lda = shape.k + 3;
        const args: Native.PackedArgs = .{ .trans_a = false, .m = shape.m, .alpha = shape.alpha, .a = a, .lda = lda, .packed_b = &packed_b, .beta = shape.beta, .c = c, .ldc = shape.n };
        try args.validate();
        // The tiles of the plan a team of `threads` would split.
        const tiling = gemm.plan(shape.m, shape.n, threads);
        for (0..tiling.count()) |tile| {
            const block = tiling.block(tile, shape.m, shape.n) orelse continue;
            native.runBlock(&args, block.row_begin, block.rows, block.col_begin, block.cols);
        }
        for (0..shape.m) |i| for (0..shape.n) |j| {
            var sum: f64 = 0;
            for (0..shape.k) |p| sum += @as(f64, a[i * lda + p]) * b[p * shape.n + j];
            const want = shape.alpha * sum + shape.beta * expected[i * shape.n + j];
            const tolerance = 1e-6 * @as(f64, @floatFromInt(shape.k + 8)) * (1 + @abs(want));
            if (@abs(want - c[i * shape.n + j]) > tolerance) {
                std.debug.print("{any} threads {d}: C[{d}][{d}] = {d}, expected {d}\n", .{ shape, threads, i, j, c[i * shape.n + j], want });
                return error.TestExpectedApproxEqAbs;
            }
        };
    };
}

test "beta = 0 overwrites C without reading it" {
    const Native = gemm_native.native;
    const allocator = testing.allocator;
    const a = [_]f32{ 1, 2, 3, 4, 5, 6 }; // 2 × 3
    const b = [_]f32{ 1, 0, 0, 1, 1, 1 }; // 3 × 2
    var c: [4]f32 = @splat(std.math.nan(f32));
    var packed_b = try Native.PackedB.init(allocator, false, 3, 2, &b, 2);
    defer packed_b.deinit(allocator);
    const args: Native.PackedArgs = .{ .trans_a = false, .m = 2, .alpha = 1, .a = &a, .lda = 3, .packed_b = &packed_b, .beta = 0, .c = &c, .ldc = 2 };
    try args.validate();
    native.runBlock(&args, 0, 2, 0, 2);
    try testing.expectEqualSlices(f32, &.{ 4, 5, 10, 11 }, &c);
}
