//! Spindle's own SGEMM (-Dblas=native): C = alpha · op(A) · op(B) + beta · C, row-major.
//!
//! The structure is Goto's / BLIS's. A tile of C is cut into column blocks (col_block), depth
//! blocks (depth_block) and row blocks (row_block). For each depth block, op(B) is packed into
//! slivers of `panel_cols` columns, stored depth-row after depth-row, and op(A) into panels of
//! `panel_rows` rows, stored depth-column after depth-column. A register-blocked micro-kernel
//! then multiplies one A panel by one B sliver, keeping the panel_rows × panel_cols block of C
//! in vector registers for the whole depth block, so the inner loop is loads and FMAs only.
//! Packing makes every load of the inner loop contiguous whatever the transposes and leading
//! dimensions, and the blocks keep each packed operand in the cache level that reuses it: the
//! A block (row_block × depth_block) in L2 while it meets every B sliver of the column block,
//! the B block (depth_block × col_block) in L2/L3 while it meets every row block. (On Zen 5 a
//! deep depth block, fewer passes over C, beats fitting the B sliver in L1: L2 feeds it.)
//!
//! Three shortcuts skip packing B, for the skinny products of inference:
//! - op(B) = B and a tile of at most `direct_rows_max` rows: each B element meets only a few
//!   A panels, so packing would copy B to read it a few times. The micro-kernel reads B's rows
//!   in place, prefetching rows ahead (only a ragged last sliver is packed, zero-padded), and
//!   blocks of 1-4 rows cover several slivers at once to read long runs of each B row.
//! - op(B) = Bᵀ, op(A) = A and at most `dot_rows_max` rows: rows of A and of B are both
//!   contiguous in depth, so the kernel takes their dot products (see dotBlock).
//! - A weight matrix that multiplies many inputs is packed once into a `PackedB` and reused
//!   with `runBlockPacked` / `runTilesPacked`; a weight on the left (a convolution's) into a
//!   `PackedA`, reused with `runBlockPackedA` or an indirect B (`IndirectArgs.packed_a`).
//!
//! Packing buffers are per thread and static: one `Scratch` (threadlocal, about
//! (row_block + col_block + panel_cols) × depth_block floats, 2.4 MiB with AVX-512), so the
//! kernel never allocates. With glibc the loader allocates (and zeroes) a thread's block the
//! first time the thread touches any of the library's thread-locals, so every thread that
//! calls into Spindle pays it once; `PackedB.init` is the one allocation, made by the caller
//! when it plans.
const std = @import("std");
const builtin = @import("builtin");
const gemm = @import("gemm.zig");
const status = @import("../status.zig");
const math = @import("math.zig");
const Epilogue = @import("conv.zig").Epilogue;

const assert = std.debug.assert;
const Error = status.Error;

/// The shape of the kernel: vector length, register block and cache blocks.
pub const Config = struct {
    /// f32 lanes per vector register.
    vector_length: usize,
    /// Rows of C in the register block (MR): rows of an A panel.
    panel_rows: usize,
    /// Vectors across a row of the register block: panel_cols = panel_vectors · vector_length.
    panel_vectors: usize,
    /// Depth of a packed block (KC): sizes the A block to L2 and sets how often C is passed.
    depth_block: usize,
    /// Rows of the packed A block (MC), a multiple of panel_rows.
    row_block: usize,
    /// Columns of the packed B block (NC), a multiple of panel_cols.
    col_block: usize,
    /// Tiles with at most this many rows read an untransposed B in place (see the top).
    direct_rows_max: usize,
    /// Reading B in place, prefetch this many depth rows ahead: each row of a sliver lies
    /// ldb floats from the last, a stride the hardware prefetchers follow poorly.
    direct_prefetch_rows: usize,
    /// Tiles with at most this many rows of an untransposed A times a transposed B skip
    /// packing and take dot products of rows (see dotBlock).
    dot_rows_max: usize,
    /// Vector accumulators the dot-product kernel may keep in registers.
    dot_accumulators: usize,
    /// Whether the target has fused multiply-add; without it @mulAdd becomes a libcall.
    fused_multiply_add: bool,

    fn panelCols(config: Config) usize {
        return config.panel_vectors * config.vector_length;
    }
};

const x86 = builtin.cpu.arch == .x86_64;
fn hasX86(comptime feature: std.Target.x86.Feature) bool {
    return x86 and std.Target.x86.featureSetHas(builtin.cpu.features, feature);
}

/// 32 zmm registers: 14 × 2 accumulators + 2 B vectors + 1 broadcast (folded into the FMA).
const avx512_config: Config = .{
    .vector_length = 16,
    .panel_rows = 14,
    .panel_vectors = 2,
    // Measured on Zen 5: a deep block (fewer passes over C) beats keeping the 64 KiB B
    // sliver in L1; L2 feeds it fast enough.
    .depth_block = 512,
    .row_block = 14 * 12,
    .col_block = 1024,
    .direct_rows_max = 64,
    .direct_prefetch_rows = 8,
    .dot_rows_max = 32,
    .dot_accumulators = 24,
    .fused_multiply_add = true,
};

/// 16 ymm registers: the classic 6 × 16 block, 12 accumulators + 2 B vectors + 1 broadcast.
const avx2_config: Config = .{
    .vector_length = 8,
    .panel_rows = 6,
    .panel_vectors = 2,
    .depth_block = 256,
    .row_block = 6 * 24,
    .col_block = 2048,
    .direct_rows_max = 24,
    .direct_prefetch_rows = 8,
    .dot_rows_max = 4,
    .dot_accumulators = 12,
    .fused_multiply_add = true,
};

/// Any other target: 4-lane vectors (SSE, NEON, or scalar code from LLVM) in a 6 × 8 block.
const portable_config: Config = .{
    .vector_length = 4,
    .panel_rows = 6,
    .panel_vectors = 2,
    .depth_block = 256,
    .row_block = 6 * 16,
    .col_block = 1024,
    .direct_rows_max = 24,
    .direct_prefetch_rows = 8,
    .dot_rows_max = 4,
    .dot_accumulators = 12,
    .fused_multiply_add = builtin.cpu.arch == .aarch64 or hasX86(.fma),
};

pub const target_config: Config = if (hasX86(.avx512f))
    avx512_config
else if (hasX86(.avx2) and hasX86(.fma))
    avx2_config
else
    portable_config;

/// The kernel for this build's target. gemm.plan aligns tiles to its panel_rows and
/// panel_cols, so that only the last tile of each dimension has ragged panels.
pub const native = Kernel(target_config);

/// Computes output tiles [tile_begin, tile_end) of `tiling` with a pre-packed B. `args` must
/// be validated and `tiling` come from gemm.plan (column tiles are multiples of panel_cols).
pub fn runTilesPacked(args: *const native.PackedArgs, tiling: gemm.Tiling, tile_begin: usize, tile_end: usize) void {
    assert(tile_begin <= tile_end);
    assert(tile_end <= tiling.count());
    for (tile_begin..tile_end) |tile| {
        const block = tiling.block(tile, args.m, args.packed_b.n) orelse continue;
        native.runBlockPacked(args, block.row_begin, block.rows, block.col_begin, block.cols);
    }
}

const divideCeil = @import("math.zig").divideCeil;

/// The GEMM for one `Config`. Generic so that the tests can also run the portable shape on
/// a machine whose own target picks another.
pub fn Kernel(comptime config: Config) type {
    return struct {
        pub const panel_rows = config.panel_rows;
        pub const panel_cols = config.panelCols();
        pub const lanes = config.vector_length;
        const panel_vectors = config.panel_vectors;
        const depth_block = config.depth_block;
        const row_block = config.row_block;
        const col_block = config.col_block;
        const V = @Vector(lanes, f32);

        comptime {
            assert(std.math.isPowerOfTwo(lanes));
            assert(panel_rows >= 1 and panel_rows <= 16);
            assert(panel_vectors >= 1 and panel_vectors <= 4);
            assert(row_block % panel_rows == 0);
            assert(col_block % panel_cols == 0);
            assert(depth_block % 16 == 0);
            assert(config.direct_rows_max <= row_block);
        }

        /// Cache-line alignment for the packed buffers, so that B vectors never split lines.
        const alignment_floats = 16;

        /// The per-thread packing buffers. Each array has slack for aligning its start at
        /// run time: the loader's alignment of dynamic TLS is not relied upon.
        const Scratch = struct {
            a: [row_block * depth_block + alignment_floats]f32,
            b: [depth_block * col_block + alignment_floats]f32,
            edge: [depth_block * panel_cols + alignment_floats]f32,
        };
        threadlocal var scratch: Scratch = undefined;

        fn aligned(buffer: []f32, length: usize) []f32 {
            const address = @intFromPtr(buffer.ptr);
            const skip = (std.mem.alignForward(usize, address, alignment_floats * 4) - address) / 4;
            assert(skip + length <= buffer.len);
            return buffer[skip..][0..length];
        }

        // ---------------------------------------------------------------------------------
        // Operands: one view over a plain B and a pre-packed B, so both share one driver.

        const Operands = struct {
            trans_a: bool,
            a: []const f32,
            lda: usize,
            /// op(A) packed at load: its panels replace packA (and `a` is not read).
            packed_a: ?*const PackedA = null,
            b: union(enum) {
                matrix: struct { trans: bool, values: []const f32, ld: usize },
                packed_b: *const PackedB,
                indirect: *const IndirectB,
            },
            m: usize,
            n: usize,
            k: usize,
            alpha: f32,
            beta: f32,
            c: []f32,
            ldc: usize,
        };

        /// Computes rows [row_begin, +rows) × cols [col_begin, +cols) of C. `args` must be
        /// validated. Blocks of one GEMM may run in any order and on any threads, as long as
        /// they do not overlap.
        pub fn runBlock(args: *const gemm.Args, row_begin: usize, rows: usize, col_begin: usize, cols: usize) void {
            const operands: Operands = .{
                .trans_a = args.trans_a,
                .a = args.a,
                .lda = args.lda,
                .b = .{ .matrix = .{ .trans = args.trans_b, .values = args.b, .ld = args.ldb } },
                .m = args.m,
                .n = args.n,
                .k = args.k,
                .alpha = args.alpha,
                .beta = args.beta,
                .c = args.c,
                .ldc = args.ldc,
            };
            runOperands(&operands, row_begin, rows, col_begin, cols);
        }

        /// As runBlock, with B pre-packed; `col_begin` must be a multiple of panel_cols.
        pub fn runBlockPacked(args: *const PackedArgs, row_begin: usize, rows: usize, col_begin: usize, cols: usize) void {
            assert(col_begin % panel_cols == 0);
            const operands: Operands = .{
                .trans_a = args.trans_a,
                .a = args.a,
                .lda = args.lda,
                .b = .{ .packed_b = args.packed_b },
                .m = args.m,
                .n = args.packed_b.n,
                .k = args.packed_b.k,
                .alpha = args.alpha,
                .beta = args.beta,
                .c = args.c,
                .ldc = args.ldc,
            };
            runOperands(&operands, row_begin, rows, col_begin, cols);
        }

        /// B given row by row: element (p, j) is values[offsets[p] + j]. Convolutions use it
        /// to read the rows of an implicit im2col matrix straight from the padded input,
        /// without unfolding it (see ops/conv.zig runImplicit).
        pub const IndirectB = struct {
            values: []const f32,
            offsets: []const usize,
            n: usize,

            /// Checks that every row lies inside `values`.
            pub fn validate(b: *const IndirectB) Error!void {
                if (b.n == 0) return;
                for (b.offsets, 0..) |offset, p| {
                    if (offset > b.values.len or b.values.len - offset < b.n) {
                        return status.fail(error.IndexOutOfRange, "sgemm: indirect B row {d} at {d} with {d} columns overruns {d} elements", .{ p, offset, b.n, b.values.len });
                    }
                }
            }
        };

        /// C = alpha · A · B + beta · C with an indirect B (validated); A is m × k, untransposed,
        /// or packed at load (`packed_a`, then `a` is not read and row blocks start at
        /// multiples of panel_rows).
        pub const IndirectArgs = struct {
            m: usize,
            a: []const f32,
            lda: usize,
            packed_a: ?*const PackedA = null,
            b: *const IndirectB,
            alpha: f32,
            beta: f32,
            c: []f32,
            ldc: usize,

            pub fn validate(args: *const IndirectArgs) Error!void {
                try args.b.validate();
                if (args.packed_a) |packed_a| {
                    try packed_a.check(args.m, args.b.offsets.len);
                } else {
                    try gemm.Args.checkMatrix("A", args.a.len, args.m, args.b.offsets.len, args.lda);
                }
                try gemm.Args.checkMatrix("C", args.c.len, args.m, args.b.n, args.ldc);
            }
        };

        /// As runBlock, with an indirect B.
        pub fn runBlockIndirect(args: *const IndirectArgs, row_begin: usize, rows: usize, col_begin: usize, cols: usize) void {
            if (args.packed_a != null) assert(row_begin % panel_rows == 0);
            const operands: Operands = .{
                .trans_a = false,
                .a = args.a,
                .lda = args.lda,
                .packed_a = args.packed_a,
                .b = .{ .indirect = args.b },
                .m = args.m,
                .n = args.b.n,
                .k = args.b.offsets.len,
                .alpha = args.alpha,
                .beta = args.beta,
                .c = args.c,
                .ldc = args.ldc,
            };
            runOperands(&operands, row_begin, rows, col_begin, cols);
        }

        fn runOperands(operands: *const Operands, row_begin: usize, rows: usize, col_begin: usize, cols: usize) void {
            assert(row_begin + rows <= operands.m);
            assert(col_begin + cols <= operands.n);
            if (rows == 0 or cols == 0) return;
            if (operands.k == 0 or operands.alpha == 0) {
                // BLAS semantics: A and B are not read, C = beta · C.
                scaleBlock(operands, row_begin, rows, col_begin, cols);
                return;
            }
            // The shortcuts below read A's rows in place; a packed A has none.
            if (operands.packed_a == null) {
                if (shortcut(operands, row_begin, rows, col_begin, cols)) return;
            }
            runPanels(operands, row_begin, rows, col_begin, cols);
        }

        /// The products that skip the panels: few rows times a transposed B, or one column.
        /// Returns whether it computed the block.
        fn shortcut(operands: *const Operands, row_begin: usize, rows: usize, col_begin: usize, cols: usize) bool {
            if (operands.b == .matrix and operands.b.matrix.trans and !operands.trans_a and rows <= config.dot_rows_max) {
                dotBlock(operands, row_begin, rows, col_begin, cols);
                return true;
            }
            // A matrix–vector product (a classifier's last layer): packing would pad the one
            // column of B to a whole sliver, 32× the work; dot products of A's rows with the
            // column read A once, whatever the rows. An untransposed n × 1 B with ldb = 1 is
            // the same column as a transposed one (element p at p).
            if (operands.b == .matrix and !operands.trans_a and cols == 1) {
                const matrix = operands.b.matrix;
                if (matrix.trans or (operands.n == 1 and matrix.ld == 1)) {
                    var column = operands.*;
                    column.b = .{ .matrix = .{ .trans = true, .values = matrix.values, .ld = if (matrix.trans) matrix.ld else operands.k } };
                    dotBlock(&column, row_begin, rows, col_begin, cols);
                    return true;
                }
            }
            return false;
        }

        /// The packed path: panels of A and slivers of B through the micro-kernel.
        fn runPanels(operands: *const Operands, row_begin: usize, rows: usize, col_begin: usize, cols: usize) void {
            const buffers = &scratch;
            const packed_a = aligned(&buffers.a, row_block * depth_block);
            // A pre-packed B needs no column blocks: it is already packed, and one block
            // over all columns packs each A block once.
            const col_step = if (operands.b == .packed_b) cols else col_block;
            var col_start = col_begin;
            while (col_start < col_begin + cols) : (col_start += col_step) {
                const col_count = @min(col_step, col_begin + cols - col_start);
                var depth_start: usize = 0;
                while (depth_start < operands.k) : (depth_start += depth_block) {
                    const depth = @min(depth_block, operands.k - depth_start);
                    const panels = preparePanels(operands, buffers, depth_start, depth, col_start, col_count, rows);
                    // The first depth block applies beta; later ones accumulate into C.
                    const beta = if (depth_start == 0) operands.beta else 1;
                    var row_start = row_begin;
                    while (row_start < row_begin + rows) : (row_start += row_block) {
                        const row_count = @min(row_block, row_begin + rows - row_start);
                        const a_block = if (operands.packed_a) |prepacked| prepacked.rowBlock(row_start, row_count, depth_start, depth) else blk: {
                            packA(operands.trans_a, operands.a, operands.lda, row_start, row_count, depth_start, depth, packed_a);
                            break :blk packed_a;
                        };
                        const c = operands.c[row_start * operands.ldc + col_start ..];
                        macroKernel(a_block, operands.packed_a != null, panels, row_count, col_count, depth, c, operands.ldc, operands.alpha, beta);
                    }
                }
            }
        }

        fn scaleBlock(operands: *const Operands, row_begin: usize, rows: usize, col_begin: usize, cols: usize) void {
            for (row_begin..row_begin + rows) |row| {
                const c_row = operands.c[row * operands.ldc + col_begin ..][0..cols];
                if (operands.beta == 0) {
                    @memset(c_row, 0);
                } else if (operands.beta != 1) {
                    for (c_row) |*value| value.* *= operands.beta;
                }
            }
        }

        // ---------------------------------------------------------------------------------
        // Packing.

        /// Where the micro-kernel finds the B slivers of one depth block.
        const Panels = struct {
            base: [*]const f32,
            /// Distance between the first elements of adjacent slivers.
            sliver_stride: usize,
            /// Distance between consecutive depth rows inside a sliver.
            row_stride: usize,
            /// B is read in place (a plain B's rows), not from packed slivers.
            direct: bool,
            /// Read in place: the ragged last sliver, packed with zero padding.
            edge: ?[*]const f32,
            /// An indirect B: depth row p of every sliver starts offsets[p] past its base.
            offsets: ?[*]const usize = null,
            /// Packed slivers lie sliver_stride apart and come from memory (a weight packed
            /// at load, read once per product): the first row panel of each sliver prefetches
            /// the next one (see Shape.prefetch_next).
            prefetch_next: bool = false,

            const Sliver = struct { values: [*]const f32, row_stride: usize, direct: bool, offsets: ?[*]const usize = null };

            fn sliver(panels: Panels, index: usize, cols: usize) Sliver {
                assert(cols >= 1 and cols <= panel_cols);
                if (cols < panel_cols) {
                    if (panels.edge) |edge| return .{ .values = edge, .row_stride = panel_cols, .direct = false };
                }
                return .{
                    .values = panels.base + index * panels.sliver_stride,
                    .row_stride = panels.row_stride,
                    .direct = panels.direct,
                    .offsets = panels.offsets,
                };
            }
        };

        fn preparePanels(
            operands: *const Operands,
            buffers: *Scratch,
            depth_start: usize,
            depth: usize,
            col_start: usize,
            col_count: usize,
            rows: usize,
        ) Panels {
            switch (operands.b) {
                .packed_b => |packed_b| return packed_b.panels(depth_start, depth, col_start),
                .indirect => |indirect| return indirectPanels(indirect, buffers, depth_start, depth, col_start, col_count),
                .matrix => |matrix| {
                    if (!matrix.trans and rows <= config.direct_rows_max) {
                        return directPanels(matrix.values, matrix.ld, buffers, depth_start, depth, col_start, col_count);
                    }
                    const packed_b = aligned(&buffers.b, depth_block * col_block);
                    packB(matrix.trans, matrix.values, matrix.ld, depth_start, depth, col_start, col_count, packed_b);
                    return .{ .base = packed_b.ptr, .sliver_stride = depth * panel_cols, .row_stride = panel_cols, .direct = false, .edge = null };
                },
            }
        }

        fn indirectPanels(b: *const IndirectB, buffers: *Scratch, depth_start: usize, depth: usize, col_start: usize, col_count: usize) Panels {
            const offsets = b.offsets[depth_start..][0..depth];
            const ragged = col_count % panel_cols;
            var edge: ?[*]const f32 = null;
            if (ragged != 0) {
                const edge_buffer = aligned(&buffers.edge, depth_block * panel_cols);
                const edge_col = col_start + col_count - ragged;
                for (offsets, 0..) |offset, p| {
                    const row = edge_buffer[p * panel_cols ..][0..panel_cols];
                    @memcpy(row[0..ragged], b.values[offset + edge_col ..][0..ragged]);
                    @memset(row[ragged..], 0);
                }
                edge = edge_buffer.ptr;
            }
            return .{
                .base = b.values[col_start..].ptr,
                .sliver_stride = panel_cols,
                .row_stride = 0,
                .direct = true,
                .edge = edge,
                .offsets = offsets.ptr,
            };
        }

        fn directPanels(
            b: []const f32,
            ldb: usize,
            buffers: *Scratch,
            depth_start: usize,
            depth: usize,
            col_start: usize,
            col_count: usize,
        ) Panels {
            const ragged = col_count % panel_cols;
            var edge: ?[*]const f32 = null;
            if (ragged != 0) {
                const edge_buffer = aligned(&buffers.edge, depth_block * panel_cols);
                const edge_col = col_start + col_count - ragged;
                packB(false, b, ldb, depth_start, depth, edge_col, ragged, edge_buffer);
                edge = edge_buffer.ptr;
            }
            return .{
                .base = b[depth_start * ldb + col_start ..].ptr,
                .sliver_stride = panel_cols,
                .row_stride = ldb,
                .direct = true,
                .edge = edge,
            };
        }

        /// Packs rows [row_start, +rows) × depth [depth_start, +depth) of op(A) into panels of
        /// panel_rows rows: panel g holds out[g·panel_rows·depth + p·panel_rows + r] =
        /// op(A)[row_start + g·panel_rows + r, depth_start + p]. A ragged last panel keeps the
        /// stride; its missing rows are never read.
        fn packA(trans_a: bool, a: []const f32, lda: usize, row_start: usize, rows: usize, depth_start: usize, depth: usize, out: []f32) void {
            assert(rows >= 1 and rows <= row_block);
            assert(depth >= 1 and depth <= depth_block);
            var group: usize = 0;
            while (group * panel_rows < rows) : (group += 1) {
                const group_rows = @min(panel_rows, rows - group * panel_rows);
                const first_row = row_start + group * panel_rows;
                const panel = out[group * panel_rows * depth ..][0 .. panel_rows * depth];
                if (trans_a) {
                    // op(A) row r is column r of A: each depth step is a contiguous run.
                    for (0..depth) |p| {
                        const source = a[(depth_start + p) * lda + first_row ..][0..group_rows];
                        @memcpy(panel[p * panel_rows ..][0..group_rows], source);
                    }
                } else {
                    packRowsAcrossPanel(a, lda, first_row, group_rows, depth_start, depth, panel);
                }
            }
        }

        /// op(A) = A: row r of the panel is row first_row + r of A, contiguous in depth.
        /// Runs of `lanes` rows × `lanes` depths are transposed in registers, as for B.
        fn packRowsAcrossPanel(a: []const f32, lda: usize, first_row: usize, rows: usize, depth_start: usize, depth: usize, panel: []f32) void {
            assert(rows >= 1 and rows <= panel_rows);
            assert(panel.len == depth * panel_rows);
            var chunk_row: usize = 0;
            while (chunk_row < rows) : (chunk_row += lanes) {
                const chunk_rows = @min(lanes, rows - chunk_row);
                // Lanes past the panel's rows are not stored: they would overwrite the next
                // depth step.
                const stored = @min(lanes, panel_rows - chunk_row);
                var p: usize = 0;
                while (p + lanes <= depth) : (p += lanes) {
                    var block: [lanes]V = @splat(@splat(0));
                    for (0..chunk_rows) |i| {
                        block[i] = a[(first_row + chunk_row + i) * lda + depth_start + p ..][0..lanes].*;
                    }
                    transposeSquare(&block);
                    inline for (0..lanes) |q| {
                        const values: [lanes]f32 = block[q];
                        @memcpy(panel[(p + q) * panel_rows + chunk_row ..][0..stored], values[0..stored]);
                    }
                }
                while (p < depth) : (p += 1) {
                    for (0..chunk_rows) |i| {
                        panel[p * panel_rows + chunk_row + i] = a[(first_row + chunk_row + i) * lda + depth_start + p];
                    }
                }
            }
        }

        /// Packs depth [depth_start, +depth) × cols [col_start, +cols) of op(B) into slivers of
        /// panel_cols columns: sliver s holds out[s·depth·panel_cols + p·panel_cols + j] =
        /// op(B)[depth_start + p, col_start + s·panel_cols + j], zero past the last column, so
        /// the micro-kernel never needs a column mask.
        fn packB(trans: bool, b: []const f32, ldb: usize, depth_start: usize, depth: usize, col_start: usize, cols: usize, out: []f32) void {
            assert(depth >= 1 and depth <= depth_block);
            assert(cols >= 1);
            const slivers = divideCeil(cols, panel_cols);
            assert(out.len >= slivers * depth * panel_cols);
            const ragged = cols % panel_cols;
            if (ragged != 0) @memset(out[(slivers - 1) * depth * panel_cols ..][0 .. depth * panel_cols], 0);
            if (!trans) {
                // Row by row: each row of B is read once, front to back, which the hardware
                // prefetchers follow; sliver by sliver would jump ldb every 128 bytes.
                for (0..depth) |p| {
                    const source = b[(depth_start + p) * ldb + col_start ..][0..cols];
                    for (0..slivers) |sliver_index| {
                        const sliver_cols = if (sliver_index + 1 == slivers and ragged != 0) ragged else panel_cols;
                        const destination = out[(sliver_index * depth + p) * panel_cols ..][0..sliver_cols];
                        @memcpy(destination, source[sliver_index * panel_cols ..][0..sliver_cols]);
                    }
                }
                return;
            }
            for (0..slivers) |sliver_index| {
                const sliver_cols = @min(panel_cols, cols - sliver_index * panel_cols);
                const sliver = out[sliver_index * depth * panel_cols ..][0 .. depth * panel_cols];
                packTransposedSliver(b, ldb, depth_start, depth, col_start + sliver_index * panel_cols, sliver_cols, sliver);
            }
        }

        /// op(B) column j is row j of B, contiguous in depth: each run of `lanes` rows ×
        /// `lanes` depths is loaded as vectors and transposed in registers, so the gather
        /// costs a few shuffles per vector instead of one load and one store per element.
        fn packTransposedSliver(b: []const f32, ldb: usize, depth_start: usize, depth: usize, first_col: usize, cols: usize, sliver: []f32) void {
            assert(cols >= 1 and cols <= panel_cols);
            assert(sliver.len == depth * panel_cols);
            for (0..panel_vectors) |vector_index| {
                const group_col = vector_index * lanes;
                if (group_col >= cols) break;
                const group_cols = @min(lanes, cols - group_col);
                var p: usize = 0;
                while (p + lanes <= depth) : (p += lanes) {
                    var block: [lanes]V = @splat(@splat(0));
                    for (0..group_cols) |i| {
                        block[i] = b[(first_col + group_col + i) * ldb + depth_start + p ..][0..lanes].*;
                    }
                    transposeSquare(&block);
                    inline for (0..lanes) |q| sliver[(p + q) * panel_cols + group_col ..][0..lanes].* = block[q];
                }
                while (p < depth) : (p += 1) {
                    for (0..group_cols) |i| {
                        sliver[p * panel_cols + group_col + i] = b[(first_col + group_col + i) * ldb + depth_start + p];
                    }
                }
            }
        }

        /// Transposes a lanes × lanes block held as row vectors in log2(lanes) butterfly
        /// stages: stage `width` swaps the off-diagonal width × width sub-blocks of every
        /// 2·width × 2·width block.
        inline fn transposeSquare(block: *[lanes]V) void {
            comptime var width: usize = 1;
            inline while (width < lanes) : (width *= 2) {
                const low = comptime butterflyMask(width, false);
                const high = comptime butterflyMask(width, true);
                inline for (0..lanes) |i| {
                    if (i & width == 0) {
                        const upper = block[i];
                        const lower = block[i + width];
                        block[i] = @shuffle(f32, upper, lower, low);
                        block[i + width] = @shuffle(f32, upper, lower, high);
                    }
                }
            }
        }

        /// Lane l of the upper row keeps its own element where bit `width` of l is clear and
        /// takes the lower row's element `width` lanes left where it is set; the lower row
        /// mirrors it. (A negative index ~x selects element x of the second operand.)
        fn butterflyMask(comptime width: usize, comptime lower_row: bool) @Vector(lanes, i32) {
            var mask: @Vector(lanes, i32) = undefined;
            for (0..lanes) |l| {
                const lane: i32 = @intCast(l);
                const distance: i32 = @intCast(width);
                const bit_set = l & width != 0;
                mask[l] = if (!lower_row)
                    (if (bit_set) ~(lane - distance) else lane)
                else
                    (if (bit_set) ~lane else lane + distance);
            }
            return mask;
        }

        // ---------------------------------------------------------------------------------
        // Compute.

        /// Multiplies a packed A block (rows × depth) by the B slivers of `panels` into the
        /// rows × cols block of C starting at c[0]: C = alpha · A·B + beta · C.
        fn macroKernel(
            packed_a: []const f32,
            /// A was packed at load (a weight, likely from memory), not just now by packA.
            cold_a: bool,
            panels: Panels,
            rows: usize,
            cols: usize,
            depth: usize,
            c: []f32,
            ldc: usize,
            alpha: f32,
            beta: f32,
        ) void {
            assert(rows >= 1 and rows <= row_block);
            assert(c.len >= (rows - 1) * ldc + cols);
            var sliver_index: usize = 0;
            if (panels.direct and panels.offsets == null and rows <= wide_rows_max) {
                switch (rows) {
                    inline 1...wide_rows_max => |used| {
                        sliver_index = wideSweep(used, packed_a, panels, cols, depth, c, ldc, alpha, beta);
                    },
                    else => unreachable,
                }
            }
            while (sliver_index * panel_cols < cols) : (sliver_index += 1) {
                const sliver_cols = @min(panel_cols, cols - sliver_index * panel_cols);
                const sliver = panels.sliver(sliver_index, sliver_cols);
                var group: usize = 0;
                while (group * panel_rows < rows) : (group += 1) {
                    const group_rows = @min(panel_rows, rows - group * panel_rows);
                    const panel = packed_a[group * panel_rows * depth ..][0 .. panel_rows * depth];
                    const tile = c[group * panel_rows * ldc + sliver_index * panel_cols ..];
                    const tile_c: Tile = .{ .values = tile.ptr, .ld = ldc, .cols = sliver_cols, .alpha = alpha, .beta = beta };
                    switch (group_rows) {
                        inline 1...panel_rows => |used| if (sliver.offsets) |offsets| {
                            if (cold_a and sliver_index == 0) {
                                const shape: Shape = .{ .rows = used, .vectors = panel_vectors, .direct = true, .indirect = true, .prefetch_a = true };
                                microKernel(shape, depth, panel.ptr, sliver.values, offsets, tile_c);
                            } else {
                                const shape: Shape = .{ .rows = used, .vectors = panel_vectors, .direct = true, .indirect = true };
                                microKernel(shape, depth, panel.ptr, sliver.values, offsets, tile_c);
                            }
                        } else if (sliver.direct) {
                            const shape: Shape = .{ .rows = used, .vectors = panel_vectors, .direct = true };
                            microKernel(shape, depth, panel.ptr, sliver.values, sliver.row_stride, tile_c);
                        } else if (panel_vectors > 1 and sliver_cols <= lanes) {
                            // A ragged last sliver of at most one vector (a convolution's flat
                            // output of 8 × 10 = 80 columns: 64 + 16) multiplies only that
                            // vector, not the zero padding of a whole sliver (as convSliver).
                            const shape: Shape = .{ .rows = used, .vectors = 1, .direct = false };
                            microKernel(shape, depth, panel.ptr, sliver.values, sliver.row_stride, tile_c);
                        } else if (panels.prefetch_next and group == 0) {
                            const shape: Shape = .{ .rows = used, .vectors = panel_vectors, .direct = false, .prefetch_next = true };
                            microKernel(shape, depth, panel.ptr, sliver.values, panel_cols, tile_c);
                        } else {
                            const shape: Shape = .{ .rows = used, .vectors = panel_vectors, .direct = false };
                            microKernel(shape, depth, panel.ptr, sliver.values, panel_cols, tile_c);
                        },
                        else => unreachable,
                    }
                }
            }
        }

        /// Accumulator vectors of a wide block (see wideSweep): most of the registers.
        const wide_accumulators = if (lanes >= 16) 16 else 8;
        const wide_rows_max = 4;

        /// Reading B in place for a few rows of A, a sliver's depth rows are short runs
        /// ldb apart, each on a new page, and the stride defeats the hardware prefetchers.
        /// A wide block covers several adjacent slivers at once, so each depth step reads a
        /// long run of B's row instead. Returns how many whole slivers it covered; the
        /// caller runs the rest as usual.
        fn wideSweep(
            comptime rows: usize,
            packed_a: []const f32,
            panels: Panels,
            cols: usize,
            depth: usize,
            c: []f32,
            ldc: usize,
            alpha: f32,
            beta: f32,
        ) usize {
            const vectors = wide_accumulators / rows / panel_vectors * panel_vectors;
            const shape: Shape = .{ .rows = rows, .vectors = vectors, .direct = true };
            const slivers_per_block = comptime shape.cols() / panel_cols;
            comptime assert(shape.cols() % panel_cols == 0);
            assert(panels.sliver_stride == panel_cols);
            const blocks = cols / shape.cols();
            for (0..blocks) |block| {
                const first = block * slivers_per_block;
                const tile_c: Tile = .{ .values = c[first * panel_cols ..].ptr, .ld = ldc, .cols = shape.cols(), .alpha = alpha, .beta = beta };
                microKernel(shape, depth, packed_a.ptr, panels.base + first * panel_cols, panels.row_stride, tile_c);
            }
            return blocks * slivers_per_block;
        }

        /// The register block of one micro-kernel instance.
        const Shape = struct {
            rows: usize,
            vectors: usize,
            /// B is read in place (prefetch rows ahead) rather than from a packed sliver.
            direct: bool,
            /// B's depth rows are found through an offset table (IndirectB).
            indirect: bool = false,
            /// B is a packed sliver (depth rows panel_cols apart) whose next sliver follows
            /// it, depth · panel_cols floats on: each depth step prefetches the same row of
            /// the next sliver. A weight packed at load (rec's classifier, 120 × 6625, 3.2
            /// MB) is read once per product, from memory, and the hardware prefetchers ran
            /// too little ahead of the sliver-by-sliver reads to keep the FMAs fed.
            prefetch_next: bool = false,
            /// A is a panel packed at load whose rows' next panel lies a_ahead floats on (see
            /// accumulate): each depth step prefetches the next panel's line. The first
            /// sliver of a block meets every panel of a convolution's weight first, from
            /// memory, and the panels of one depth piece lie a whole panel's depth apart, a
            /// jump the hardware prefetchers do not follow.
            prefetch_a: bool = false,

            fn cols(shape: Shape) usize {
                return shape.vectors * lanes;
            }

            fn Sums(shape: Shape) type {
                return [shape.rows][shape.vectors]V;
            }

            /// Independent accumulator sets, so that at least ~12 FMA chains are in flight:
            /// FMA latency (4 cycles) × throughput (2 a cycle) plus slack. Blocks with few
            /// accumulators split the depth loop over several sets and add them at the end.
            fn chains(shape: Shape) usize {
                return @min(4, divideCeil(12, shape.rows * shape.vectors));
            }
        };

        /// The block of C a micro-kernel call updates.
        const Tile = struct {
            values: [*]f32,
            ld: usize,
            cols: usize,
            alpha: f32,
            beta: f32,
        };

        /// How a micro-kernel steps from one depth row of B to the next: a stride, or (for
        /// an indirect B) a table of row offsets from `b`.
        fn RowStep(comptime shape: Shape) type {
            return if (shape.indirect) [*]const usize else usize;
        }

        fn microKernel(comptime shape: Shape, depth: usize, a: [*]const f32, b: [*]const f32, b_rows: RowStep(shape), tile: Tile) void {
            assert(tile.cols >= 1 and tile.cols <= shape.cols());
            // C is read (and written) only after the depth loop: start its cache misses now
            // so they overlap the loop. The last element of each row covers a line split.
            inline for (0..shape.rows) |r| {
                const row = tile.values + r * tile.ld;
                @prefetch(row, .{ .rw = .write });
                @prefetch(row + tile.cols - 1, .{ .rw = .write });
            }
            // Panels of a packed A block lie panel_rows · depth apart.
            const a_ahead = panel_rows * depth;
            const sums = if (shape.indirect) accumulateIndirect(shape, depth, a, b, b_rows, a_ahead) else accumulate(shape, depth, a, b, b_rows, a_ahead);
            if (tile.cols == shape.cols()) {
                storeFull(shape, &sums, tile);
            } else {
                storePartial(shape, &sums, tile);
            }
        }

        /// Prefetches one depth row of a block read in place: one prefetch per cache line,
        /// plus the last element for a run that straddles one more. The row may lie past the
        /// end of B (prefetches do not fault), so its address is formed as an integer rather
        /// than by pointer arithmetic, which must stay inside the object.
        inline fn prefetchRow(comptime shape: Shape, row_address: usize) void {
            inline for (0..comptime divideCeil(shape.cols(), 16)) |line| {
                @prefetch(@as([*]const f32, @ptrFromInt(row_address + line * 64)), .{});
            }
            @prefetch(@as([*]const f32, @ptrFromInt(row_address + (shape.cols() - 1) * 4)), .{});
        }

        inline fn multiplyAdd(x: V, y: V, z: V) V {
            return if (config.fused_multiply_add) @mulAdd(V, x, y, z) else x * y + z;
        }

        /// One depth step: sums[r][v] += a[r] · b[v·lanes ..].
        inline fn depthStep(comptime shape: Shape, sums: *shape.Sums(), a: [*]const f32, b: [*]const f32) void {
            var b_vectors: [shape.vectors]V = undefined;
            inline for (0..shape.vectors) |v| b_vectors[v] = b[v * lanes ..][0..lanes].*;
            inline for (0..shape.rows) |r| {
                const a_value: V = @splat(a[r]);
                inline for (0..shape.vectors) |v| sums[r][v] = multiplyAdd(a_value, b_vectors[v], sums[r][v]);
            }
        }

        inline fn accumulate(comptime shape: Shape, depth: usize, a: [*]const f32, b: [*]const f32, b_stride: usize, a_ahead: usize) shape.Sums() {
            const chains = comptime shape.chains();
            var sums = std.mem.zeroes([chains]shape.Sums());
            var a_cursor = a;
            var b_cursor = b;
            var remaining = depth;
            while (remaining >= chains) : (remaining -= chains) {
                if (shape.direct and config.direct_prefetch_rows > 0) {
                    inline for (0..chains) |chain| {
                        prefetchRow(shape, @intFromPtr(b_cursor) + (config.direct_prefetch_rows + chain) * b_stride * 4);
                    }
                }
                if (shape.prefetch_a) prefetchPanel(chains, @intFromPtr(a_cursor) + a_ahead * @sizeOf(f32));
                if (shape.prefetch_next) {
                    // As an integer: past the last sliver the address lies outside B.
                    // A packed row is whole cache lines (the storage is line-aligned).
                    const next = @intFromPtr(b_cursor) + depth * panel_cols * @sizeOf(f32);
                    inline for (0..chains) |chain| inline for (0..comptime divideCeil(shape.cols(), 16)) |line| {
                        @prefetch(@as([*]const f32, @ptrFromInt(next + chain * b_stride * @sizeOf(f32) + line * 64)), .{});
                    };
                }
                inline for (0..chains) |chain| {
                    depthStep(shape, &sums[chain], a_cursor + chain * panel_rows, b_cursor + chain * b_stride);
                }
                a_cursor += chains * panel_rows;
                b_cursor += chains * b_stride;
            }
            while (remaining > 0) : (remaining -= 1) {
                depthStep(shape, &sums[0], a_cursor, b_cursor);
                a_cursor += panel_rows;
                b_cursor += b_stride;
            }
            return combineChains(shape, chains, &sums);
        }

        /// Prefetches `steps` depth steps of a packed A panel at `address` (an integer: past
        /// the last panel it lies outside A): a step is panel_rows floats, at most a line.
        inline fn prefetchPanel(comptime steps: usize, address: usize) void {
            comptime assert(panel_rows * @sizeOf(f32) <= 64);
            inline for (0..steps) |step| @prefetch(@as([*]const f32, @ptrFromInt(address + step * panel_rows * @sizeOf(f32))), .{});
        }

        /// accumulate for an indirect B: depth row p of the sliver starts at b + offsets[p].
        inline fn accumulateIndirect(comptime shape: Shape, depth: usize, a: [*]const f32, b: [*]const f32, offsets: [*]const usize, a_ahead: usize) shape.Sums() {
            const chains = comptime shape.chains();
            var sums = std.mem.zeroes([chains]shape.Sums());
            var p: usize = 0;
            while (p + chains <= depth) : (p += chains) {
                // Only rows inside the table: `offsets` ends at the depth block.
                if (config.direct_prefetch_rows > 0 and p + config.direct_prefetch_rows + chains <= depth) {
                    inline for (0..chains) |chain| prefetchRow(shape, @intFromPtr(b + offsets[p + config.direct_prefetch_rows + chain]));
                }
                if (shape.prefetch_a) prefetchPanel(chains, @intFromPtr(a + p * panel_rows) + a_ahead * @sizeOf(f32));
                inline for (0..chains) |chain| {
                    depthStep(shape, &sums[chain], a + (p + chain) * panel_rows, b + offsets[p + chain]);
                }
            }
            while (p < depth) : (p += 1) depthStep(shape, &sums[0], a + p * panel_rows, b + offsets[p]);
            return combineChains(shape, chains, &sums);
        }

        /// The sum of the accumulator sets.
        inline fn combineChains(comptime shape: Shape, comptime chains: usize, sums: *[chains]shape.Sums()) shape.Sums() {
            inline for (1..chains) |chain| {
                inline for (0..shape.rows) |r| inline for (0..shape.vectors) |v| {
                    sums[0][r][v] += sums[chain][r][v];
                };
            }
            return sums[0];
        }

        inline fn storeFull(comptime shape: Shape, sums: *const shape.Sums(), tile: Tile) void {
            const alpha: V = @splat(tile.alpha);
            const beta: V = @splat(tile.beta);
            if (tile.beta == 0) {
                // beta = 0 overwrites: C is not read, so NaN or garbage in it does not leak.
                inline for (0..shape.rows) |r| inline for (0..shape.vectors) |v| {
                    const destination = tile.values[r * tile.ld + v * lanes ..][0..lanes];
                    destination.* = sums[r][v] * alpha;
                };
            } else {
                inline for (0..shape.rows) |r| inline for (0..shape.vectors) |v| {
                    const destination = tile.values[r * tile.ld + v * lanes ..][0..lanes];
                    const old: V = destination.*;
                    destination.* = multiplyAdd(old, beta, sums[r][v] * alpha);
                };
            }
        }

        fn storePartial(comptime shape: Shape, sums: *const shape.Sums(), tile: Tile) void {
            assert(tile.cols < shape.cols());
            var spill: [shape.rows][shape.cols()]f32 = undefined;
            const alpha: V = @splat(tile.alpha);
            inline for (0..shape.rows) |r| inline for (0..shape.vectors) |v| {
                spill[r][v * lanes ..][0..lanes].* = sums[r][v] * alpha;
            };
            for (0..shape.rows) |r| {
                const destination = tile.values[r * tile.ld ..][0..tile.cols];
                if (tile.beta == 0) {
                    @memcpy(destination, spill[r][0..tile.cols]);
                } else {
                    for (destination, spill[r][0..tile.cols]) |*value, product| {
                        value.* = value.* * tile.beta + product;
                    }
                }
            }
        }

        // ---------------------------------------------------------------------------------
        // Few rows times a transposed B: dot products.
        //
        // With op(B) = Bᵀ and op(A) = A, row i of A and row j of B are both contiguous in
        // depth, and C[i, j] is their dot product. For a few rows of A (decoding one token
        // through nn.Linear weights stored out × in) packing B would transpose all of it to
        // use each element a handful of times; instead the kernel streams rows of B as they
        // are, vectorised along depth, and adds each accumulator's lanes at the end.

        /// Rows of A per dot-product register block.
        const dot_group_rows = 4;
        /// Columns per outer step: the B rows of one chunk stay in L2 while every row group
        /// of the tile passes over them. A multiple of every dotCols.
        const dot_chunk_cols = 48;

        /// Columns of a dot-product register block of `rows` rows: as many as the
        /// accumulators allow, at most 12 (12 B streams are already plenty).
        fn dotCols(comptime rows: usize) usize {
            return @min(12, @max(1, config.dot_accumulators / rows));
        }

        fn dotBlock(operands: *const Operands, row_begin: usize, rows: usize, col_begin: usize, cols: usize) void {
            assert(!operands.trans_a and operands.b.matrix.trans);
            assert(rows >= 1 and cols >= 1 and operands.k >= 1);
            var col = col_begin;
            while (col < col_begin + cols) : (col += dot_chunk_cols) {
                const chunk_cols = @min(dot_chunk_cols, col_begin + cols - col);
                var row = row_begin;
                while (row < row_begin + rows) {
                    const group_rows = @min(dot_group_rows, row_begin + rows - row);
                    switch (group_rows) {
                        inline 1...dot_group_rows => |used| dotRowGroup(used, operands, row, col, chunk_cols),
                        else => unreachable,
                    }
                    row += group_rows;
                }
            }
        }

        fn dotRowGroup(comptime rows: usize, operands: *const Operands, row: usize, col_start: usize, cols: usize) void {
            const group_cols = comptime dotCols(rows);
            const matrix = operands.b.matrix;
            var col = col_start;
            while (col < col_start + cols) : (col += group_cols) {
                const used_cols = @min(group_cols, col_start + cols - col);
                var a_rows: [rows][*]const f32 = undefined;
                for (&a_rows, 0..) |*a_row, r| a_row.* = operands.a[(row + r) * operands.lda ..][0..operands.k].ptr;
                var b_rows: [group_cols][*]const f32 = undefined;
                // A ragged last group repeats its last column; those sums are dropped.
                for (&b_rows, 0..) |*b_row, j| {
                    b_row.* = matrix.values[(col + @min(j, used_cols - 1)) * matrix.ld ..][0..operands.k].ptr;
                }
                const sums = dotProducts(rows, group_cols, operands.k, &a_rows, &b_rows);
                for (0..rows) |r| {
                    const c_row = operands.c[(row + r) * operands.ldc + col ..][0..used_cols];
                    for (c_row, sums[r][0..used_cols]) |*value, sum| {
                        const product = operands.alpha * sum;
                        value.* = if (operands.beta == 0) product else value.* * operands.beta + product;
                    }
                }
            }
        }

        fn dotProducts(
            comptime rows: usize,
            comptime cols: usize,
            depth: usize,
            a_rows: *const [rows][*]const f32,
            b_rows: *const [cols][*]const f32,
        ) [rows][cols]f32 {
            var sums = std.mem.zeroes([rows][cols]V);
            const whole = depth - depth % lanes;
            var p: usize = 0;
            while (p < whole) : (p += lanes) {
                var a_vectors: [rows]V = undefined;
                inline for (0..rows) |r| a_vectors[r] = a_rows[r][p..][0..lanes].*;
                inline for (0..cols) |j| {
                    const b_vector: V = b_rows[j][p..][0..lanes].*;
                    inline for (0..rows) |r| sums[r][j] = multiplyAdd(a_vectors[r], b_vector, sums[r][j]);
                }
            }
            if (whole < depth) {
                // The ragged end of depth, copied into zero-padded vectors.
                var a_tail = std.mem.zeroes([rows][lanes]f32);
                var b_tail = std.mem.zeroes([cols][lanes]f32);
                for (0..rows) |r| @memcpy(a_tail[r][0 .. depth - whole], a_rows[r][whole..depth]);
                for (0..cols) |j| @memcpy(b_tail[j][0 .. depth - whole], b_rows[j][whole..depth]);
                inline for (0..rows) |r| inline for (0..cols) |j| {
                    sums[r][j] = multiplyAdd(a_tail[r], b_tail[j], sums[r][j]);
                };
            }
            var totals: [rows][cols]f32 = undefined;
            inline for (0..rows) |r| inline for (0..cols) |j| {
                totals[r][j] = @reduce(.Add, sums[r][j]);
            };
            return totals;
        }

        // ---------------------------------------------------------------------------------
        // Pre-packed B.

        /// op(B) packed once, for a weight matrix that multiplies many inputs. Depth block d
        /// (depth_block rows, the last one shorter) starts at d·depth_block·padded_n and holds
        /// the block's slivers one after the other, exactly as packB lays them out.
        pub const PackedB = struct {
            k: usize,
            n: usize,
            values: []const f32,

            pub fn paddedCols(n: usize) usize {
                return divideCeil(n, panel_cols) * panel_cols;
            }

            /// Floats the packed op(B) (k × n) takes, or TooLarge.
            pub fn length(k: usize, n: usize) Error!usize {
                return std.math.mul(usize, k, paddedCols(n)) catch
                    status.fail(error.TooLarge, "sgemm: packing B of {d}x{d} overflows its size", .{ k, n });
            }

            /// Packs op(B) (k × n) into storage allocated from `allocator`.
            pub fn init(allocator: std.mem.Allocator, trans_b: bool, k: usize, n: usize, b: []const f32, ldb: usize) Error!PackedB {
                const b_rows = if (trans_b) n else k;
                const b_cols = if (trans_b) k else n;
                try gemm.Args.checkMatrix("B", b.len, b_rows, b_cols, ldb);
                const values = allocator.alloc(f32, try length(k, n)) catch return error.OutOfMemory;
                return pack(trans_b, k, n, b, ldb, values);
            }

            /// Packs op(B) (k × n, its bounds checked by the caller) into `out` (`length`
            /// floats), which the result then views.
            pub fn pack(trans_b: bool, k: usize, n: usize, b: []const f32, ldb: usize, out: []f32) PackedB {
                assert(out.len == k * paddedCols(n));
                const packed_b: PackedB = .{ .k = k, .n = n, .values = out };
                if (n == 0) return packed_b;
                var depth_start: usize = 0;
                while (depth_start < k) : (depth_start += depth_block) {
                    const depth = @min(depth_block, k - depth_start);
                    const block = out[depth_start * paddedCols(n) ..][0 .. depth * paddedCols(n)];
                    packB(trans_b, b, ldb, depth_start, depth, 0, n, block);
                }
                return packed_b;
            }

            pub fn deinit(packed_b: *PackedB, allocator: std.mem.Allocator) void {
                allocator.free(packed_b.values);
                packed_b.* = undefined;
            }

            fn panels(packed_b: *const PackedB, depth_start: usize, depth: usize, col_start: usize) Panels {
                assert(depth_start % depth_block == 0);
                assert(col_start % panel_cols == 0);
                const block = packed_b.values[depth_start * paddedCols(packed_b.n) ..];
                const first_sliver = col_start / panel_cols;
                return .{
                    .base = block[first_sliver * depth * panel_cols ..].ptr,
                    .sliver_stride = depth * panel_cols,
                    .row_stride = panel_cols,
                    .direct = false,
                    .edge = null,
                    .prefetch_next = true,
                };
            }
        };

        /// op(A) packed once, for a weight on the left that multiplies many inputs (a
        /// convolution's). Depth block d (depth_block deep, the last shallower) starts at
        /// d·depth_block·paddedRows(m) and holds the panels of all rows one after the other,
        /// exactly as packA lays them out; the ragged last panel's missing rows are zero.
        pub const PackedA = struct {
            m: usize,
            k: usize,
            values: []const f32,

            pub fn paddedRows(m: usize) usize {
                return divideCeil(m, panel_rows) * panel_rows;
            }

            /// Floats the packed op(A) (m × k) takes, or TooLarge.
            pub fn length(m: usize, k: usize) Error!usize {
                return std.math.mul(usize, k, paddedRows(m)) catch
                    status.fail(error.TooLarge, "sgemm: packing A of {d}x{d} overflows its size", .{ m, k });
            }

            /// Packs op(A) (m × k) into `out` (`length` floats), which the result then views.
            pub fn pack(trans_a: bool, m: usize, k: usize, a: []const f32, lda: usize, out: []f32) Error!PackedA {
                try gemm.Args.checkMatrix("A", a.len, if (trans_a) k else m, if (trans_a) m else k, lda);
                if (out.len != try length(m, k)) {
                    return status.fail(error.InvalidArgument, "sgemm: packing A of {d}x{d} needs {d} floats, got {d}", .{ m, k, try length(m, k), out.len });
                }
                @memset(out, 0);
                var depth_start: usize = 0;
                while (depth_start < k) : (depth_start += depth_block) {
                    const depth = @min(depth_block, k - depth_start);
                    const panels = out[depth_start * paddedRows(m) ..][0 .. depth * paddedRows(m)];
                    var row_start: usize = 0;
                    while (row_start < m) : (row_start += row_block) {
                        const rows = @min(row_block, m - row_start);
                        packA(trans_a, a, lda, row_start, rows, depth_start, depth, panels[row_start * depth ..]);
                    }
                }
                return .{ .m = m, .k = k, .values = out };
            }

            /// Checks that the packed matrix is m × k.
            pub fn check(packed_a: *const PackedA, m: usize, k: usize) Error!void {
                if (packed_a.m != m or packed_a.k != k) {
                    return status.fail(error.ShapeMismatch, "sgemm: packed A is {d}x{d}, the product needs {d}x{d}", .{ packed_a.m, packed_a.k, m, k });
                }
            }

            /// The panels of rows [row_start, +rows) in the depth block at depth_start, laid
            /// out as packA would pack them.
            fn rowBlock(packed_a: *const PackedA, row_start: usize, rows: usize, depth_start: usize, depth: usize) []const f32 {
                assert(row_start % panel_rows == 0 and depth_start % depth_block == 0);
                assert(row_start + rows <= packed_a.m);
                const base = depth_start * paddedRows(packed_a.m) + row_start * depth;
                return packed_a.values[base..][0 .. paddedRows(rows) * depth];
            }
        };

        // ---------------------------------------------------------------------------------
        // A convolution's product: its weight packed at load times the input, with the
        // bias and the epilogue applied in registers.
        //
        // The plain driver (runPanels) packs a whole block of B (depth_block × col_block, up
        // to 2 MiB) before the first product, so the copy goes out to L2 and comes back,
        // and a separate pass over C adds the bias. Here each sliver of B (panel_cols
        // columns) is copied into a small buffer just before the row panels use it, and
        // every panel of the row chunk meets it while it is in L1; its depth is cut into
        // pieces of at most sliver_depth_max so that a piece stays in L1 (48 KiB on recent
        // x86) while the A panels stream from L2. The last piece's store adds the bias and
        // applies the epilogue, so C is written once.

        /// Deepest piece of a packed sliver that the micro-kernel reads at once: 32 KiB.
        const sliver_depth_max = @min(depth_block, 32 * 1024 / (panel_cols * @sizeOf(f32)));
        /// Bytes of packed A one sliver meets before the next: the row chunk's panels stay
        /// in L2 while the slivers pass.
        const conv_a_chunk_bytes: usize = 512 * 1024;

        /// C (m × n) = packed A (m × k) · B (k × n, row p at p·ldb), then C[r, j] =
        /// epilogue(C[r, j] + bias[r]).
        pub const ConvArgs = struct {
            packed_a: *const PackedA,
            b: []const f32,
            ldb: usize,
            n: usize,
            c: []f32,
            ldc: usize,
            /// One value per row of C; null adds nothing.
            bias: ?[]const f32 = null,
            epilogue: Epilogue = .{},

            pub fn validate(args: *const ConvArgs) Error!void {
                try gemm.Args.checkMatrix("B", args.b.len, args.packed_a.k, args.n, args.ldb);
                try gemm.Args.checkMatrix("C", args.c.len, args.packed_a.m, args.n, args.ldc);
                if (args.bias) |bias| {
                    if (bias.len != args.packed_a.m) {
                        return status.fail(error.ShapeMismatch, "sgemm: {d} bias values for {d} rows", .{ bias.len, args.packed_a.m });
                    }
                }
            }
        };

        /// Computes rows [row_begin, +rows) × cols [col_begin, +cols) of a convolution's
        /// product; `row_begin` must be a multiple of panel_rows. Blocks may run in any order
        /// and on any threads, as long as they do not overlap.
        pub fn runBlockConv(args: *const ConvArgs, row_begin: usize, rows: usize, col_begin: usize, cols: usize) void {
            assert(row_begin % panel_rows == 0);
            assert(row_begin + rows <= args.packed_a.m and col_begin + cols <= args.n);
            if (rows == 0 or cols == 0) return;
            const k = args.packed_a.k;
            if (k == 0) {
                // No products: C is the bias through the epilogue.
                for (row_begin..row_begin + rows) |r| {
                    const row = args.c[r * args.ldc + col_begin ..][0..cols];
                    @memset(row, 0);
                    args.epilogue.applyCopy(row, row, if (args.bias) |bias| bias[r] else 0);
                }
                return;
            }
            const depth_max: usize = @min(k, depth_block);
            const chunk_rows = @max(panel_rows, conv_a_chunk_bytes / (depth_max * @sizeOf(f32)) / panel_rows * panel_rows);
            var row_start = row_begin;
            while (row_start < row_begin + rows) : (row_start += chunk_rows) {
                const row_count = @min(chunk_rows, row_begin + rows - row_start);
                var col = col_begin;
                while (col < col_begin + cols) : (col += panel_cols) {
                    convSliver(args, row_start, row_count, col, @min(panel_cols, col_begin + cols - col), col == col_begin);
                }
            }
        }

        /// One sliver of C's columns (sliver_cols ≤ panel_cols from col on) over a row chunk;
        /// the chunk's first sliver prefetches the weight's panels (Shape.prefetch_a).
        fn convSliver(args: *const ConvArgs, row_start: usize, rows: usize, col: usize, sliver_cols: usize, first_sliver: bool) void {
            const k = args.packed_a.k;
            const buffer = aligned(&scratch.edge, sliver_depth_max * panel_cols);
            var depth_start: usize = 0;
            while (depth_start < k) : (depth_start += depth_block) {
                const depth = @min(depth_block, k - depth_start);
                const a_block = args.packed_a.rowBlock(row_start, rows, depth_start, depth);
                const pieces = divideCeil(depth, sliver_depth_max);
                for (0..pieces) |piece| {
                    // Pieces of equal depth: K = 480 is two of 240, not 256 + 224.
                    const piece_start = depth * piece / pieces;
                    const piece_depth = depth * (piece + 1) / pieces - piece_start;
                    // A few rows (at most direct_rows_max) read a matrix B in place, as the
                    // plain driver does: each sliver meets too few panels to repay its copy.
                    // The ragged last sliver is copied, so that no load runs past B.
                    const direct = rows <= config.direct_rows_max and sliver_cols == panel_cols;
                    const b_piece: [*]const f32 = if (direct) args.b[(depth_start + piece_start) * args.ldb + col ..].ptr else buffer.ptr;
                    if (!direct) packConvRows(args.b, args.ldb, depth_start + piece_start, piece_depth, col, sliver_cols, buffer);
                    const first = depth_start == 0 and piece == 0;
                    const last = depth_start + depth == k and piece + 1 == pieces;
                    var group: usize = 0;
                    while (group * panel_rows < rows) : (group += 1) {
                        const group_rows = @min(panel_rows, rows - group * panel_rows);
                        const first_row = row_start + group * panel_rows;
                        const panel = a_block[group * panel_rows * depth + piece_start * panel_rows ..];
                        const tile: ConvTile = .{
                            .values = args.c[first_row * args.ldc + col ..].ptr,
                            .ld = args.ldc,
                            .cols = sliver_cols,
                            .accumulate = !first,
                            .bias = if (last) (if (args.bias) |bias| bias[first_row..].ptr else null) else null,
                            .epilogue = if (last) args.epilogue else null,
                        };
                        switch (group_rows) {
                            inline 1...panel_rows => |used| if (direct) {
                                const shape: Shape = .{ .rows = used, .vectors = panel_vectors, .direct = true };
                                convKernel(shape, piece_depth, panel.ptr, b_piece, args.ldb, 0, tile);
                            } else if (panel_vectors > 1 and sliver_cols <= lanes) {
                                // A ragged last sliver of one vector (N = 100: 96 + 4, rec's
                                // 240 = 224 + 16) multiplies only that vector.
                                const shape: Shape = .{ .rows = used, .vectors = 1, .direct = false };
                                convKernel(shape, piece_depth, panel.ptr, b_piece, panel_cols, 0, tile);
                            } else if (first_sliver) {
                                const shape: Shape = .{ .rows = used, .vectors = panel_vectors, .direct = false, .prefetch_a = true };
                                convKernel(shape, piece_depth, panel.ptr, b_piece, panel_cols, panel_rows * depth, tile);
                            } else {
                                const shape: Shape = .{ .rows = used, .vectors = panel_vectors, .direct = false };
                                convKernel(shape, piece_depth, panel.ptr, b_piece, panel_cols, 0, tile);
                            },
                            else => unreachable,
                        }
                    }
                }
            }
        }

        /// Copies depth rows [depth_start, +depth) × columns [col, +cols) of B into `buffer`
        /// (panel_cols floats a row, zero past cols). The rows lie a plane of the input
        /// apart, a stride the hardware prefetchers follow poorly: each copy prefetches the
        /// row prefetch_rows ahead.
        fn packConvRows(values: []const f32, ldb: usize, depth_start: usize, depth: usize, col: usize, cols: usize, buffer: []f32) void {
            assert(depth >= 1 and depth <= sliver_depth_max and cols >= 1 and cols <= panel_cols);
            assert(buffer.len >= depth * panel_cols);
            const prefetch_rows = 8;
            for (0..depth) |p| {
                const row_at = (depth_start + p) * ldb;
                if (p + prefetch_rows < depth) {
                    const ahead = row_at + prefetch_rows * ldb;
                    // As an integer: the last line may lie past B (prefetches do not fault).
                    const line = @intFromPtr(values.ptr) + (ahead + col) * @sizeOf(f32);
                    inline for (0..panel_vectors) |v| @prefetch(@as([*]const f32, @ptrFromInt(line + v * lanes * @sizeOf(f32))), .{});
                    @prefetch(@as([*]const f32, @ptrFromInt(line + (panel_cols - 1) * @sizeOf(f32))), .{});
                }
                const row = buffer[p * panel_cols ..][0..panel_cols];
                if (cols == panel_cols) {
                    row.* = values[row_at + col ..][0..panel_cols].*;
                } else {
                    @memcpy(row[0..cols], values[row_at + col ..][0..cols]);
                    @memset(row[cols..], 0);
                }
            }
        }

        /// The block of C a convolution's micro-kernel call updates, and what its store does.
        const ConvTile = struct {
            values: [*]f32,
            ld: usize,
            cols: usize,
            /// Add to what C holds (a later depth piece) rather than overwrite it.
            accumulate: bool,
            /// The last piece: bias (from the tile's first row on) and epilogue.
            bias: ?[*]const f32,
            epilogue: ?Epilogue,
        };

        fn convKernel(comptime shape: Shape, depth: usize, a: [*]const f32, b: [*]const f32, b_stride: usize, a_ahead: usize, tile: ConvTile) void {
            assert(tile.cols >= 1 and tile.cols <= shape.cols());
            inline for (0..shape.rows) |r| {
                const row = tile.values + r * tile.ld;
                @prefetch(row, .{ .rw = .write });
                @prefetch(row + tile.cols - 1, .{ .rw = .write });
            }
            const sums = accumulate(shape, depth, a, b, b_stride, a_ahead);
            // The epilogue works on math.V; on a target whose vectors are shorter it runs on
            // the stored rows instead (still in L1).
            const in_registers = comptime lanes == math.lanes;
            if (tile.cols == shape.cols()) {
                inline for (0..shape.rows) |r| {
                    const bias: V = @splat(if (tile.bias) |bias| bias[r] else 0);
                    inline for (0..shape.vectors) |v| {
                        const destination = tile.values[r * tile.ld + v * lanes ..][0..lanes];
                        var x = sums[r][v];
                        if (tile.accumulate) x += destination.*;
                        if (in_registers) {
                            if (tile.epilogue) |epilogue| x = epilogue.vector(x + bias);
                        }
                        destination.* = x;
                    }
                }
            } else {
                var spill: [shape.rows][shape.cols()]f32 = undefined;
                inline for (0..shape.rows) |r| inline for (0..shape.vectors) |v| {
                    spill[r][v * lanes ..][0..lanes].* = sums[r][v];
                };
                for (0..shape.rows) |r| {
                    const destination = tile.values[r * tile.ld ..][0..tile.cols];
                    if (tile.accumulate) {
                        for (destination, spill[r][0..tile.cols]) |*value, sum| value.* += sum;
                    } else {
                        @memcpy(destination, spill[r][0..tile.cols]);
                    }
                    if (in_registers) {
                        if (tile.epilogue) |epilogue| epilogue.applyCopy(destination, destination, if (tile.bias) |bias| bias[r] else 0);
                    }
                }
            }
            if (!in_registers) {
                if (tile.epilogue) |epilogue| for (0..shape.rows) |r| {
                    const destination = tile.values[r * tile.ld ..][0..tile.cols];
                    epilogue.applyCopy(destination, destination, if (tile.bias) |bias| bias[r] else 0);
                };
            }
        }

        /// C = alpha · A · op(B) + beta · C with A packed at load; m and k come from packed_a.
        pub const PackedAArgs = struct {
            packed_a: *const PackedA,
            trans_b: bool,
            n: usize,
            b: []const f32,
            ldb: usize,
            alpha: f32,
            beta: f32,
            c: []f32,
            ldc: usize,

            pub fn validate(args: *const PackedAArgs) Error!void {
                const k = args.packed_a.k;
                try gemm.Args.checkMatrix("B", args.b.len, if (args.trans_b) args.n else k, if (args.trans_b) k else args.n, args.ldb);
                try gemm.Args.checkMatrix("C", args.c.len, args.packed_a.m, args.n, args.ldc);
            }
        };

        /// As runBlock, with A packed at load; `row_begin` must be a multiple of panel_rows.
        pub fn runBlockPackedA(args: *const PackedAArgs, row_begin: usize, rows: usize, col_begin: usize, cols: usize) void {
            assert(row_begin % panel_rows == 0);
            const operands: Operands = .{
                .trans_a = false,
                .a = &.{},
                .lda = 0,
                .packed_a = args.packed_a,
                .b = .{ .matrix = .{ .trans = args.trans_b, .values = args.b, .ld = args.ldb } },
                .m = args.packed_a.m,
                .n = args.n,
                .k = args.packed_a.k,
                .alpha = args.alpha,
                .beta = args.beta,
                .c = args.c,
                .ldc = args.ldc,
            };
            runOperands(&operands, row_begin, rows, col_begin, cols);
        }

        /// C = alpha · op(A) · B + beta · C with B pre-packed; n and k come from packed_b.
        pub const PackedArgs = struct {
            trans_a: bool,
            m: usize,
            alpha: f32,
            a: []const f32,
            lda: usize,
            packed_b: *const PackedB,
            beta: f32,
            c: []f32,
            ldc: usize,

            pub fn validate(args: *const PackedArgs) Error!void {
                const k = args.packed_b.k;
                const n = args.packed_b.n;
                try gemm.Args.checkMatrix("A", args.a.len, if (args.trans_a) k else args.m, if (args.trans_a) args.m else k, args.lda);
                try gemm.Args.checkMatrix("C", args.c.len, args.m, n, args.ldc);
            }
        };
    };
}

// -------------------------------------------------------------------------------------------
// Tests: every kernel shape against gemm.reference.

const testing = std.testing;

/// Every shape the build might pick, so that each is tested on any machine (a shape whose
/// vectors are wider than the machine's still runs, as LLVM splits them).
const test_configs = [_]Config{ avx512_config, avx2_config, portable_config };

const Case = struct {
    trans_a: bool = false,
    trans_b: bool = false,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32 = 1,
    beta: f32 = 0,
    /// Extra elements beyond the width of each row, for leading dimensions > width.
    lda_pad: usize = 0,
    ldb_pad: usize = 0,
    ldc_pad: usize = 0,
    /// Fill C with NaN before the call (only meaningful with beta = 0).
    nan_c: bool = false,
};

const TestMatrices = struct {
    args: gemm.Args,
    expected: []f32,

    fn init(allocator: std.mem.Allocator, random: std.Random, case: Case) !TestMatrices {
        const lda = (if (case.trans_a) case.m else case.k) + case.lda_pad;
        const ldb = (if (case.trans_b) case.k else case.n) + case.ldb_pad;
        const ldc = case.n + case.ldc_pad;
        const a = try allocator.alloc(f32, (if (case.trans_a) case.k else case.m) * lda);
        errdefer allocator.free(a);
        const b = try allocator.alloc(f32, (if (case.trans_b) case.n else case.k) * ldb);
        errdefer allocator.free(b);
        const c = try allocator.alloc(f32, case.m * ldc);
        errdefer allocator.free(c);
        const expected = try allocator.alloc(f32, c.len);
        for (a) |*x| x.* = random.float(f32) * 2 - 1;
        for (b) |*x| x.* = random.float(f32) * 2 - 1;
        for (c) |*x| x.* = if (case.nan_c) std.math.nan(f32) else random.float(f32) * 2 - 1;
        const args: gemm.Args = .{
            .trans_a = case.trans_a,
            .trans_b = case.trans_b,
            .m = case.m,
            .n = case.n,
            .k = case.k,
            .alpha = case.alpha,
            .a = a,
            .lda = lda,
            .b = b,
            .ldb = ldb,
            .beta = case.beta,
            .c = c,
            .ldc = ldc,
        };
        try args.validate();
        @memcpy(expected, c);
        var reference_args = args;
        reference_args.c = expected;
        gemm.reference(&reference_args);
        return .{ .args = args, .expected = expected };
    }

    fn deinit(matrices: *TestMatrices, allocator: std.mem.Allocator) void {
        allocator.free(matrices.args.a);
        allocator.free(matrices.args.b);
        allocator.free(matrices.args.c);
        allocator.free(matrices.expected);
    }

    /// Compares C with the reference, padding included (it must be left untouched).
    fn check(matrices: *const TestMatrices) !void {
        const k: f32 = @floatFromInt(matrices.args.k);
        const tolerance = 4e-6 * (k + 8);
        for (matrices.args.c, matrices.expected, 0..) |got, want, index| {
            const in_padding = index % matrices.args.ldc >= matrices.args.n;
            if (in_padding and std.math.isNan(want) and std.math.isNan(got)) continue;
            if (@abs(got - want) <= tolerance) continue;
            std.debug.print("C[{d}, {d}] = {d}, expected {d}\n", .{ index / matrices.args.ldc, index % matrices.args.ldc, got, want });
            return error.TestExpectedApproxEqAbs;
        }
    }
};

/// A tiling with tiles of random size (aligned to `col_multiple` columns), returned with its
/// tiles in a random order.
fn randomTiling(random: std.Random, m: usize, n: usize, col_multiple: usize, order: []usize) struct { gemm.Tiling, []usize } {
    const rows_per_tile = 1 + random.uintLessThan(usize, @max(m, 1));
    const col_units = divideCeil(@max(n, 1), col_multiple);
    const cols_per_tile = col_multiple * (1 + random.uintLessThan(usize, col_units));
    const tiling: gemm.Tiling = .{
        .rows_per_tile = rows_per_tile,
        .cols_per_tile = cols_per_tile,
        .row_tiles = divideCeil(@max(m, 1), rows_per_tile),
        .col_tiles = divideCeil(@max(n, 1), cols_per_tile),
    };
    assert(tiling.count() <= order.len);
    const tiles = order[0..tiling.count()];
    for (tiles, 0..) |*tile, index| tile.* = index;
    random.shuffle(usize, tiles);
    return .{ tiling, tiles };
}

fn expectKernelMatches(comptime config: Config, random: std.Random, case: Case) !void {
    const K = Kernel(config);
    var matrices = try TestMatrices.init(testing.allocator, random, case);
    defer matrices.deinit(testing.allocator);
    var order: [4096]usize = undefined;
    const tiling, const tiles = randomTiling(random, case.m, case.n, 1, &order);
    for (tiles) |tile| {
        const block = tiling.block(tile, case.m, case.n) orelse continue;
        K.runBlock(&matrices.args, block.row_begin, block.rows, block.col_begin, block.cols);
    }
    try matrices.check();
}

fn expectPackedMatches(comptime config: Config, random: std.Random, case: Case) !void {
    const K = Kernel(config);
    var matrices = try TestMatrices.init(testing.allocator, random, case);
    defer matrices.deinit(testing.allocator);
    const args = &matrices.args;
    var packed_b = try K.PackedB.init(testing.allocator, args.trans_b, args.k, args.n, args.b, args.ldb);
    defer packed_b.deinit(testing.allocator);
    const packed_args: K.PackedArgs = .{
        .trans_a = args.trans_a,
        .m = args.m,
        .alpha = args.alpha,
        .a = args.a,
        .lda = args.lda,
        .packed_b = &packed_b,
        .beta = args.beta,
        .c = args.c,
        .ldc = args.ldc,
    };
    try packed_args.validate();
    var order: [4096]usize = undefined;
    const tiling, const tiles = randomTiling(random, case.m, case.n, K.panel_cols, &order);
    for (tiles) |tile| {
        const block = tiling.block(tile, case.m, case.n) orelse continue;
        K.runBlockPacked(&packed_args, block.row_begin, block.rows, block.col_begin, block.cols);
    }
    try matrices.check();
}

/// Runs `case` with op(A) packed into a PackedA (unpadded and packed alike checked against
/// the reference), over tiles whose rows start at multiples of panel_rows, in random order.
/// A random tiling of an m × n product (row tiles whole panels of a packed A) and its tiles
/// in a random order, held in `order`.
fn shuffledTiles(comptime panel_rows: usize, random: std.Random, m: usize, n: usize, order: *[8192]usize) struct { tiling: gemm.Tiling, order: []const usize } {
    const rows_per_tile = panel_rows * (1 + random.uintLessThan(usize, divideCeil(@max(m, 1), panel_rows)));
    const cols_per_tile = 1 + random.uintLessThan(usize, @max(n, 1));
    const tiling: gemm.Tiling = .{
        .rows_per_tile = rows_per_tile,
        .cols_per_tile = cols_per_tile,
        .row_tiles = divideCeil(@max(m, 1), rows_per_tile),
        .col_tiles = divideCeil(@max(n, 1), cols_per_tile),
    };
    const tiles = order[0..tiling.count()];
    for (tiles, 0..) |*tile, index| tile.* = index;
    random.shuffle(usize, tiles);
    return .{ .tiling = tiling, .order = tiles };
}

fn expectPackedAMatches(comptime config: Config, random: std.Random, case: Case) !void {
    const K = Kernel(config);
    var matrices = try TestMatrices.init(testing.allocator, random, case);
    defer matrices.deinit(testing.allocator);
    const args = &matrices.args;
    const storage = try testing.allocator.alloc(f32, try K.PackedA.length(args.m, args.k));
    defer testing.allocator.free(storage);
    const packed_a = try K.PackedA.pack(args.trans_a, args.m, args.k, args.a, args.lda, storage);
    const packed_args: K.PackedAArgs = .{ .packed_a = &packed_a, .trans_b = args.trans_b, .n = args.n, .b = args.b, .ldb = args.ldb, .alpha = args.alpha, .beta = args.beta, .c = args.c, .ldc = args.ldc };
    try packed_args.validate();
    var order: [8192]usize = undefined;
    const tiles = shuffledTiles(K.panel_rows, random, args.m, args.n, &order);
    for (tiles.order) |tile| {
        const block = tiles.tiling.block(tile, args.m, args.n) orelse continue;
        K.runBlockPackedA(&packed_args, block.row_begin, block.rows, block.col_begin, block.cols);
    }
    try matrices.check();
}

test "a packed A matches the reference and the unpacked kernel on awkward shapes" {
    var prng = std.Random.DefaultPrng.init(0xa9a);
    const random = prng.random();
    inline for (test_configs) |config| {
        // M, N, K around the register block (14 or 6 rows, 32 or 16 columns) and past the
        // row and depth blocks; one row, one column, one depth.
        const shapes = [_][3]usize{
            .{ 1, 1, 1 },       .{ 13, 33, 7 },   .{ 14, 32, 16 },   .{ 15, 31, 17 },
            .{ 29, 65, 513 },   .{ 43, 1, 300 },  .{ 5, 200, 1025 }, .{ config.row_block + 3, 47, config.depth_block + 5 },
            .{ 120, 1050, 72 }, .{ 96, 80, 480 },
        };
        for (shapes) |shape| for ([_]bool{ false, true }) |trans_a| for ([_]bool{ false, true }) |trans_b| {
            const case: Case = .{
                .trans_a = trans_a,
                .trans_b = trans_b,
                .m = shape[0],
                .n = shape[1],
                .k = shape[2],
                .alpha = if (random.boolean()) 1 else -0.5,
                .beta = ([_]f32{ 0, 1, 0.5 })[random.uintLessThan(usize, 3)],
                .lda_pad = random.uintLessThan(usize, 3),
                .ldb_pad = random.uintLessThan(usize, 3),
                .ldc_pad = random.uintLessThan(usize, 3),
            };
            expectPackedAMatches(config, random, case) catch |err| {
                std.debug.print("failed: {any} with {any}\n", .{ case, config });
                return err;
            };
            // The same product unpacked, for the three-way agreement.
            try expectKernelMatches(config, random, case);
        };
    }
}

/// runBlockConv over random tiles in random order against the reference product plus bias,
/// through `epilogue` (applied to the reference with Epilogue.scalar).
fn expectConvMatches(comptime config: Config, random: std.Random, case: Case, epilogue: Epilogue, with_bias: bool) !void {
    const K = Kernel(config);
    var matrices = try TestMatrices.init(testing.allocator, random, case);
    defer matrices.deinit(testing.allocator);
    const args = &matrices.args;
    assert(!args.trans_a and !args.trans_b and args.alpha == 1 and args.beta == 0);
    const storage = try testing.allocator.alloc(f32, try K.PackedA.length(args.m, args.k));
    defer testing.allocator.free(storage);
    const packed_a = try K.PackedA.pack(false, args.m, args.k, args.a, args.lda, storage);
    const bias = try testing.allocator.alloc(f32, args.m);
    defer testing.allocator.free(bias);
    for (bias) |*value| value.* = random.float(f32) * 2 - 1;
    const conv_args: K.ConvArgs = .{ .packed_a = &packed_a, .b = args.b, .ldb = args.ldb, .n = args.n, .c = args.c, .ldc = args.ldc, .bias = if (with_bias) bias else null, .epilogue = epilogue };
    try conv_args.validate();
    for (0..args.m) |r| for (0..args.n) |j| {
        const expected = &matrices.expected[r * args.ldc + j];
        expected.* = epilogue.scalar(expected.* + if (with_bias) bias[r] else 0);
    };
    var order: [8192]usize = undefined;
    const tiles = shuffledTiles(K.panel_rows, random, args.m, args.n, &order);
    for (tiles.order) |tile| {
        const block = tiles.tiling.block(tile, args.m, args.n) orelse continue;
        K.runBlockConv(&conv_args, block.row_begin, block.rows, block.col_begin, block.cols);
    }
    try matrices.check();
}

test "a convolution's product (packed A, bias, epilogue in the store) matches the reference" {
    var prng = std.Random.DefaultPrng.init(0xc0f);
    const random = prng.random();
    const epilogues = [_]Epilogue{ .{}, .relu, .{ .activation = .hard_swish, .scale = 0.5, .shift = -1 } };
    inline for (test_configs) |config| {
        // Rows up to and past direct_rows_max (B read in place, then copied per sliver) and
        // past a row chunk (512 KiB of A: 218 rows at K = 600); depth past a piece (256 or
        // 512) and a depth block; ragged slivers; one row, one column, one depth.
        const shapes = [_][3]usize{
            .{ 1, 1, 1 },      .{ 13, 33, 7 },   .{ 14, 32, 16 },   .{ 15, 31, 257 },
            .{ 64, 64, 96 },   .{ 65, 47, 240 }, .{ 70, 100, 480 }, .{ 29, 65, 513 },
            .{ 230, 40, 600 }, .{ 97, 1, 33 },   .{ 24, 200, 864 },
        };
        for (shapes) |shape| for (epilogues, 0..) |epilogue, index| {
            const case: Case = .{ .m = shape[0], .n = shape[1], .k = shape[2], .ldb_pad = random.uintLessThan(usize, 3), .ldc_pad = random.uintLessThan(usize, 3), .nan_c = index == 0 };
            expectConvMatches(config, random, case, epilogue, index != 1) catch |err| {
                std.debug.print("failed: {any} with {any}, epilogue {any}\n", .{ case, config, epilogue });
                return err;
            };
        };
    }
}

test "a convolution's product with no depth is the bias through the epilogue" {
    const K = Kernel(avx512_config);
    const storage = [_]f32{};
    const packed_a: K.PackedA = .{ .m = 2, .k = 0, .values = &storage };
    var c = [_]f32{std.math.nan(f32)} ** 6;
    const args: K.ConvArgs = .{ .packed_a = &packed_a, .b = &.{}, .ldb = 3, .n = 3, .c = &c, .ldc = 3, .bias = &.{ -1, 2 }, .epilogue = .relu };
    try args.validate();
    K.runBlockConv(&args, 0, 2, 0, 3);
    try testing.expectEqualSlices(f32, &.{ 0, 0, 0, 2, 2, 2 }, &c);
}

test "PackedA refuses a short A, a wrong buffer and a mismatched product" {
    var a: [10]f32 = undefined;
    var out: [64]f32 = undefined;
    try testing.expectError(error.IndexOutOfRange, native.PackedA.pack(false, 3, 4, &a, 4, &out));
    try testing.expectError(error.InvalidArgument, native.PackedA.pack(false, 2, 4, &a, 4, &out));
    const storage = try testing.allocator.alloc(f32, try native.PackedA.length(2, 4));
    defer testing.allocator.free(storage);
    const packed_a = try native.PackedA.pack(false, 2, 4, &a, 4, storage);
    try testing.expectError(error.ShapeMismatch, packed_a.check(2, 5));
}

test "every kernel shape matches the reference on awkward shapes, transposes, alpha, beta" {
    var prng = std.Random.DefaultPrng.init(0x5eed);
    const random = prng.random();
    const rows = [_]usize{ 0, 1, 2, 5, 6, 7, 13, 14, 15, 16, 17, 29, 43 };
    const cols = [_]usize{ 0, 1, 3, 8, 15, 16, 17, 31, 32, 33, 47, 65 };
    const depths = [_]usize{ 0, 1, 2, 7, 17, 64, 255, 256, 257 };
    inline for (test_configs) |config| {
        var index: usize = 0;
        for (rows) |m| for (cols) |n| for ([_]bool{ false, true }) |trans_a| for ([_]bool{ false, true }) |trans_b| {
            index += 1;
            const case: Case = .{
                .trans_a = trans_a,
                .trans_b = trans_b,
                .m = m,
                .n = n,
                .k = depths[index % depths.len],
                .alpha = if (index % 3 == 0) 1 else -0.75,
                .beta = ([_]f32{ 0, 1, 0.5, -2 })[index % 4],
                .lda_pad = random.uintLessThan(usize, 3),
                .ldb_pad = random.uintLessThan(usize, 3),
                .ldc_pad = random.uintLessThan(usize, 3),
            };
            expectKernelMatches(config, random, case) catch |err| {
                std.debug.print("failed: {any} with {any}\n", .{ case, config });
                return err;
            };
        };
    }
}

test "tall-skinny products (M = 1..64, N and K up to 1000) match the reference" {
    var prng = std.Random.DefaultPrng.init(0x7a11);
    const random = prng.random();
    for (1..65) |m| {
        const case: Case = .{
            .trans_a = random.boolean(),
            .trans_b = random.boolean(),
            .m = m,
            .n = 1 + random.uintLessThan(usize, 1000),
            .k = 1 + random.uintLessThan(usize, 1000),
            .alpha = 1,
            .beta = if (random.boolean()) 0 else 1,
            .ldb_pad = random.uintLessThan(usize, 20),
        };
        expectKernelMatches(target_config, random, case) catch |err| {
            std.debug.print("failed: {any}\n", .{case});
            return err;
        };
    }
}

test "matrix-vector products (N = 1, a contiguous column of B) match the reference at any M" {
    var prng = std.Random.DefaultPrng.init(0x6e7);
    const random = prng.random();
    inline for (test_configs) |config| {
        for ([_]usize{ 1, 31, 33, 64, 100, 257 }) |m| for ([_]usize{ 1, 13, 256, 1000 }) |k| {
            for ([_]bool{ false, true }) |trans_a| for ([_]bool{ false, true }) |trans_b| {
                const case: Case = .{
                    .trans_a = trans_a,
                    .trans_b = trans_b,
                    .m = m,
                    .n = 1,
                    .k = k,
                    .alpha = 0.5,
                    .beta = if (k == 13) 0 else 1,
                    .lda_pad = random.uintLessThan(usize, 3),
                    // ldb = 1 for an untransposed B: its one column is contiguous.
                    .ldb_pad = if (trans_b) random.uintLessThan(usize, 3) else 0,
                };
                expectKernelMatches(config, random, case) catch |err| {
                    std.debug.print("failed: {any} with {any}\n", .{ case, config });
                    return err;
                };
            };
        };
    }
}

test "beta = 0 ignores NaN in C; alpha = 0 or K = 0 only scales C" {
    var prng = std.Random.DefaultPrng.init(0xa7);
    const random = prng.random();
    inline for (test_configs) |config| {
        for ([_]usize{ 1, 5, 16, 33 }) |n| for ([_]bool{ false, true }) |trans_b| {
            try expectKernelMatches(config, random, .{ .trans_b = trans_b, .m = 15, .n = n, .k = 9, .nan_c = true, .ldc_pad = 3 });
            try expectKernelMatches(config, random, .{ .trans_b = trans_b, .m = 15, .n = n, .k = 0, .nan_c = true });
            try expectKernelMatches(config, random, .{ .trans_b = trans_b, .m = 15, .n = n, .k = 9, .alpha = 0, .beta = 0.5 });
            try expectKernelMatches(config, random, .{ .trans_b = trans_b, .m = 15, .n = n, .k = 0, .beta = -1 });
            try expectPackedMatches(config, random, .{ .trans_b = trans_b, .m = 15, .n = n, .k = 9, .nan_c = true });
        };
    }
}

test "blocks larger than every cache block, tiles in random order and partition" {
    var prng = std.Random.DefaultPrng.init(0xb16);
    const random = prng.random();
    inline for (test_configs) |config| {
        const case: Case = .{
            .trans_a = random.boolean(),
            .trans_b = random.boolean(),
            .m = config.row_block + 37,
            .n = config.col_block + 45,
            .k = 2 * config.depth_block + 3,
            .alpha = 0.5,
            .beta = 0.25,
            .lda_pad = 5,
            .ldb_pad = 7,
            .ldc_pad = 9,
        };
        try expectKernelMatches(config, random, case);
        try expectPackedMatches(config, random, case);
    }
}

test "a pre-packed B matches the reference for every transpose and tiling" {
    var prng = std.Random.DefaultPrng.init(0xbacc);
    const random = prng.random();
    inline for (test_configs) |config| {
        for ([_]usize{ 1, 3, 14, 40 }) |m| for ([_]usize{ 1, 31, 32, 100 }) |n| for ([_]usize{ 1, 5, 300 }) |k| {
            const case: Case = .{
                .trans_a = random.boolean(),
                .trans_b = random.boolean(),
                .m = m,
                .n = n,
                .k = k,
                .alpha = -1.5,
                .beta = if (random.boolean()) 0 else 2,
                .lda_pad = random.uintLessThan(usize, 3),
                .ldb_pad = random.uintLessThan(usize, 3),
                .ldc_pad = random.uintLessThan(usize, 3),
            };
            expectPackedMatches(config, random, case) catch |err| {
                std.debug.print("failed: {any}\n", .{case});
                return err;
            };
        };
    }
}

test "PackedB refuses a B buffer that is too short" {
    var b: [10]f32 = undefined;
    try testing.expectError(error.IndexOutOfRange, native.PackedB.init(testing.allocator, false, 3, 4, &b, 4));
    try testing.expectError(error.InvalidArgument, native.PackedB.init(testing.allocator, true, 3, 4, &b, 2));
}

test "runTilesPacked over gemm.plan tiles, in reverse order, matches the reference" {
    var prng = std.Random.DefaultPrng.init(0x9e7);
    const random = prng.random();
    for ([_]usize{ 1, 2, 3, 8 }) |threads| for ([_]usize{ 1, 20, 70 }) |m| {
        const case: Case = .{ .trans_b = random.boolean(), .m = m, .n = 1 + random.uintLessThan(usize, 200), .k = 1 + random.uintLessThan(usize, 600), .beta = 0.5 };
        var matrices = try TestMatrices.init(testing.allocator, random, case);
        defer matrices.deinit(testing.allocator);
        const args = &matrices.args;
        var packed_b = try native.PackedB.init(testing.allocator, args.trans_b, args.k, args.n, args.b, args.ldb);
        defer packed_b.deinit(testing.allocator);
        const packed_args: native.PackedArgs = .{
            .trans_a = false,
            .m = args.m,
            .alpha = args.alpha,
            .a = args.a,
            .lda = args.lda,
            .packed_b = &packed_b,
            .beta = args.beta,
            .c = args.c,
            .ldc = args.ldc,
        };
        try packed_args.validate();
        const tiling = gemm.plan(args.m, args.n, threads);
        var tile = tiling.count();
        while (tile > 0) : (tile -= 1) runTilesPacked(&packed_args, tiling, tile - 1, tile);
        try matrices.check();
    };
}

test "an indirect B (rows found through an offset table) matches the reference, every kernel shape" {
    var prng = std.Random.DefaultPrng.init(0x1d1);
    const random = prng.random();
    inline for (test_configs) |config| {
        const K = Kernel(config);
        // Depth past one depth block, rows past one row block, ragged columns (a last sliver
        // of at most one vector: 80 = 64 + 16, 16 alone), single ones.
        const shapes = [_][3]usize{ .{ 1, 1, 1 }, .{ 24, 67, 864 }, .{ 3, 200, 17 }, .{ 170, 45, 530 }, .{ 14, 32, 9 }, .{ 5, 1000, 3 }, .{ 30, 80, 300 }, .{ 17, 16, 40 } };
        for (shapes) |shape| {
            const case: Case = .{ .m = shape[0], .n = shape[1], .k = shape[2], .alpha = if (random.boolean()) 1 else 0.75, .beta = if (random.boolean()) 0 else 0.5, .ldb_pad = random.uintLessThan(usize, 3), .ldc_pad = 1 };
            var matrices = try TestMatrices.init(testing.allocator, random, case);
            defer matrices.deinit(testing.allocator);
            const args = &matrices.args;
            // Rows of B scattered in a bigger buffer in shuffled order.
            const order = try testing.allocator.alloc(usize, args.k);
            defer testing.allocator.free(order);
            for (order, 0..) |*o, i| o.* = i;
            random.shuffle(usize, order);
            const stride = args.ldb + 5;
            const values = try testing.allocator.alloc(f32, args.k * stride);
            defer testing.allocator.free(values);
            @memset(values, std.math.nan(f32)); // nothing outside the rows may be read into C
            const offsets = try testing.allocator.alloc(usize, args.k);
            defer testing.allocator.free(offsets);
            for (0..args.k) |p| {
                offsets[p] = order[p] * stride + 2;
                @memcpy(values[offsets[p]..][0..args.n], args.b[p * args.ldb ..][0..args.n]);
            }
            const b: K.IndirectB = .{ .values = values, .offsets = offsets, .n = args.n };
            const indirect: K.IndirectArgs = .{ .m = args.m, .a = args.a, .lda = args.lda, .b = &b, .alpha = args.alpha, .beta = args.beta, .c = args.c, .ldc = args.ldc };
            try indirect.validate();
            var order_buffer: [4096]usize = undefined;
            const tiling, const tiles = randomTiling(random, args.m, args.n, K.panel_cols, &order_buffer);
            const original_c = try testing.allocator.dupe(f32, args.c);
            defer testing.allocator.free(original_c);
            for (tiles) |tile| {
                const block = tiling.block(tile, args.m, args.n) orelse continue;
                K.runBlockIndirect(&indirect, block.row_begin, block.rows, block.col_begin, block.cols);
            }
            try matrices.check();
            // Again with A packed at load, over gemm.plan-like tiles (rows at panel multiples).
            @memcpy(args.c, original_c);
            const storage = try testing.allocator.alloc(f32, try K.PackedA.length(args.m, args.k));
            defer testing.allocator.free(storage);
            const packed_a = try K.PackedA.pack(false, args.m, args.k, args.a, args.lda, storage);
            var packed_indirect = indirect;
            packed_indirect.a = &.{};
            packed_indirect.packed_a = &packed_a;
            try packed_indirect.validate();
            const rows_per_tile = K.panel_rows * (1 + random.uintLessThan(usize, 3));
            var row: usize = 0;
            while (row < args.m) : (row += rows_per_tile) {
                K.runBlockIndirect(&packed_indirect, row, @min(rows_per_tile, args.m - row), 0, args.n);
            }
            try matrices.check();
        }
    }
    // A row that would run past the buffer is refused.
    var values: [10]f32 = undefined;
    const offsets = [_]usize{ 0, 7 };
    const b: native.IndirectB = .{ .values = &values, .offsets = &offsets, .n = 4 };
    try testing.expectError(error.IndexOutOfRange, b.validate());
}
