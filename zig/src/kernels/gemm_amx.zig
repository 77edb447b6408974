//! bf16 GEMM with f32 accumulation on AMX tiles (AMX-BF16, `tdpbf16ps`): C = alpha · op(A) ·
//! op(B) + beta · C, row-major, for the opt-in bf16 precision of a program.
//!
//! Why AMX and not only AVX512_BF16: on the Intel CPUs that have both (Sapphire Rapids and
//! later), `vdpbf16ps` issues about once every three cycles, a third of an f32 FMA's rate at
//! twice its flops per instruction, so gemm_bf16.zig runs at 0.5–0.8× the f32 kernel there
//! (bench/native/bf16_bench.zig). One `tdpbf16ps` multiplies a 16 × 32 bf16 tile by a 32 × 16
//! one into 16 × 16 f32 sums: 16,384 flops in about 16 cycles, ten times the f32 kernel's peak.
//!
//! Tiles and layouts (both operands hold two consecutive depths per 32-bit word, the even one in
//! the low half, as the instruction pairs them):
//! - an A tile is 16 rows × 16 depth pairs: `PackedA` stores op(A) row-major in words, rows
//!   padded to a multiple of 16 and pairs to a multiple of 16 with zeros, so a tile is one
//!   strided load;
//! - a B tile is 16 depth pairs × 16 columns: `PackedB` stores op(B) in slivers of 16 columns,
//!   each sliver pair-row after pair-row (a tile is 1 KiB contiguous), columns and pairs padded.
//! The constant operand (weights) is packed once at load; the other one is converted to bf16
//! (round to nearest even) while it is packed per call into thread-local scratch. The register
//! block is 2 × 2 tiles (32 rows × 32 columns, tmm0–3), with two A tiles and two B tiles
//! (tmm4–7) loaded per 16 depth pairs: every loaded tile feeds two multiplications.
//!
//! Linux hands out AMX's tile state only to a process that asks (arch_prctl
//! ARCH_REQ_XCOMP_PERM); `supported()` asks once. Each run loads its tile configuration and
//! releases the tiles before it returns, so no other code runs with tile state in use.
const std = @import("std");
const builtin = @import("builtin");
const gemm = @import("gemm.zig");
const bf16 = @import("gemm_bf16.zig");
const status = @import("../status.zig");
const cpu_level = @import("../cpu_level.zig");

const assert = std.debug.assert;
const Error = status.Error;

pub const Matrix = bf16.Matrix;
pub const Indirect = bf16.Indirect;

/// Rows and columns of a tile, and depth pairs per tile.
const tile = 16;
/// Rows of C per register block (two A tiles), and columns (two B tiles).
pub const block_rows = 2 * tile;
pub const block_cols = 2 * tile;
/// Depth pairs per packed block: the scratch B block is col_block × depth_block_pairs words.
const depth_block_pairs = 128;
/// Columns of B packed at once when B is not pre-packed: 512 KiB of scratch (L2). Wide
/// blocks read each row of B in long runs: with 128 columns, packing a 24-row product's B
/// was latency-bound and ran at 38 GFLOPS; with 1024, 66 (bench-bf16, det 24x864x25600).
const col_block = 1024;
/// Rows of A packed at once when A is not pre-packed: 128 KiB of scratch.
const row_block = 64;

const lanes = 16;
const VF = @Vector(lanes, f32);
const VU = @Vector(lanes, u32);

/// Whether this compilation holds the kernel: x86-64 builds with AVX-512 (every CPU with AMX
/// has it; the packing uses 16-lane vectors), so a forced lower CPU level leaves it out.
pub const compiled = builtin.cpu.arch == .x86_64 and std.Target.x86.featureSetHas(builtin.cpu.features, .avx512f) and
    builtin.os.tag == .linux;

const detection = cpu_level.Once(detect);

/// Whether this process can run the kernel: compiled in, CPUID reports AMX-TILE and AMX-BF16
/// (leaf 7 EDX bits 24 and 22), no lower CPU level is forced, and Linux granted the tile
/// state. SPINDLE_BF16_KERNEL=avx512 turns it off (to test gemm_bf16's kernel on this CPU).
pub fn supported() bool {
    if (comptime !compiled) return false;
    return detection.get();
}

fn detect() bool {
    if (comptime !compiled) return false;
    if (bf16.forcedLower()) return false;
    if (bf16.forced()) return false;
    if (cpu_level.cpuid(0, 0).eax < 7) return false;
    const edx = cpu_level.cpuid(7, 0).edx;
    const amx_bf16 = edx >> 22 & 1 == 1;
    const amx_tile = edx >> 24 & 1 == 1;
    if (!amx_bf16 or !amx_tile) return false;
    return requestTileData();
}

/// Asks Linux for the AMX tile state (also gemm_amx_int8.zig's): ARCH_REQ_XCOMP_PERM
/// (0x1023) for XFEATURE_XTILEDATA (18), 0 on success. Idempotent.
pub fn requestTileData() bool {
    if (comptime !compiled) return false;
    const result = std.os.linux.syscall2(.arch_prctl, 0x1023, 18);
    return result == 0;
}

const divideCeil = @import("math.zig").divideCeil;

/// Depth pairs of `k`, padded to whole tiles.
fn paddedPairs(k: usize) usize {
    return divideCeil(bf16.pairsOf(k), tile) * tile;
}

// -------------------------------------------------------------------------------------------
// Operands.

/// op(A) (m × k) packed once (see the top): row r, pair q is word r · paddedPairs(k) + q.
pub const PackedA = struct {
    m: usize,
    k: usize,
    values: []const u32,

    pub fn length(m: usize, k: usize) usize {
        return divideCeil(@max(m, 1), tile) * tile * paddedPairs(k);
    }

    /// Packs op(A) into `out` (length(m, k) words).
    pub fn pack(a: Matrix, m: usize, k: usize, out: []u32) void {
        assert(out.len == length(m, k));
        const stride = paddedPairs(k);
        @memset(out, 0);
        for (0..m) |row| packRow(a, row, 0, k, out[row * stride ..][0..stride]);
    }
};

/// op(B) (k × n) packed once into 16-column slivers: sliver s, pair q, column j is word
/// (s · paddedPairs(k) + q) · 16 + j.
pub const PackedB = struct {
    k: usize,
    n: usize,
    values: []const u32,

    pub fn length(k: usize, n: usize) usize {
        return divideCeil(@max(n, 1), tile) * tile * paddedPairs(k);
    }

    /// Packs op(B) into `out` (length(k, n) words).
    pub fn pack(b: Matrix, k: usize, n: usize, out: []u32) void {
        assert(out.len == length(k, n));
        @memset(out, 0);
        const pairs = paddedPairs(k);
        var first: usize = 0;
        while (first < n) : (first += tile) {
            const sliver = out[(first / tile) * pairs * tile ..][0 .. pairs * tile];
            packSliver(.{ .matrix = b }, k, 0, bf16.pairsOf(k), first, @min(tile, n - first), sliver);
        }
    }
};

const operands = bf16.Operands(PackedA, PackedB);
pub const Left = operands.LeftOperand;
pub const Right = operands.RightOperand;
pub const Args = operands.GemmArgs;

// -------------------------------------------------------------------------------------------
// Packing.

/// Depths [2·pair_start, k) of row `row` of op(A) into `out` (pairs beyond k are left as
/// they are: the callers zero them). An untransposed row is 32 consecutive floats per 16
/// words, so the pairs come out of one rounding pass without shuffles.
fn packRow(a: Matrix, row: usize, pair_start: usize, k: usize, out: []u32) void {
    const depth_start = 2 * pair_start;
    if (depth_start >= k) return;
    const depths = @min(k - depth_start, 2 * out.len);
    const words: []u16 = @as([*]u16, @ptrCast(out.ptr))[0..depths];
    if (a.trans) {
        for (words, depth_start..) |*half, p| half.* = bf16.toBf16(a.values[p * a.ld + row]);
        return;
    }
    const source = a.values[row * a.ld + depth_start ..][0..depths];
    var p: usize = 0;
    while (p + lanes <= depths) : (p += lanes) {
        const high = bf16.roundHigh(source[p..][0..lanes].*) >> @splat(16);
        words[p..][0..lanes].* = @as(@Vector(lanes, u16), @truncate(high));
    }
    while (p < depths) : (p += 1) words[p] = bf16.toBf16(source[p]);
    // The odd half of the last word past k stays as the caller zeroed it.
}

/// Depth pairs [pair_start, +pairs) of columns [first, +cols) (cols ≤ 16) of op(B) into one
/// sliver: pair-row q is words q·16 .. q·16 + 16. Pair rows past k and columns past cols
/// must already be zero.
fn packSliver(b: Right, k: usize, pair_start: usize, pairs: usize, first: usize, cols: usize, out: []u32) void {
    assert(cols >= 1 and cols <= tile);
    for (0..pairs) |q| {
        const depth = 2 * (pair_start + q);
        if (depth >= k) break;
        packPairRow(b, k, depth, first, out[q * tile ..][0..cols]);
    }
}

/// Depths `depth` and `depth` + 1 (zero past k) of columns [first, +out.len) of op(B) as
/// one row of pair words: the one place the packers read B.
fn packPairRow(b: Right, k: usize, depth: usize, first: usize, out: []u32) void {
    if (b == .matrix and b.matrix.trans) {
        const matrix = b.matrix;
        for (out, first..) |*word, j| {
            const odd = if (depth + 1 < k) matrix.values[j * matrix.ld + depth + 1] else 0;
            word.* = bf16.pairWord(matrix.values[j * matrix.ld + depth], odd);
        }
        return;
    }
    const even = rowSource(b, depth)[first..][0..out.len];
    const odd: ?[]const f32 = if (depth + 1 < k) rowSource(b, depth + 1)[first..][0..out.len] else null;
    bf16.packRowPair(even, odd, out);
}

/// Row `depth` of an untransposed B from its start: the only difference between a matrix
/// and an indirect operand.
fn rowSource(b: Right, depth: usize) []const f32 {
    return switch (b) {
        .matrix => |matrix| matrix.values[depth * matrix.ld ..],
        .indirect => |indirect| indirect.values[indirect.offsets[depth]..],
        .packed_b => unreachable,
    };
}

/// Depth pairs [pair_start, +pairs) of columns [col_start, +cols) of op(B) into the slivers
/// of `out` (sliver s at word s · pairs · 16), zero past k and past cols. Pair-row by pair-row,
/// so that an untransposed B is read in runs of `cols` floats rather than 16 at a stride.
fn packBlock(b: Right, k: usize, pair_start: usize, pairs: usize, col_start: usize, cols: usize, out: []u32) void {
    const slivers = divideCeil(cols, tile);
    assert(out.len == slivers * pairs * tile);
    if (cols % tile != 0 or 2 * (pair_start + pairs) > k) @memset(out, 0);
    for (0..pairs) |q| {
        const depth = 2 * (pair_start + q);
        if (depth >= k) break;
        for (0..slivers) |s| {
            const first = col_start + s * tile;
            const used = @min(tile, col_start + cols - first);
            packPairRow(b, k, depth, first, out[(s * pairs + q) * tile ..][0..used]);
        }
    }
}

/// Per-thread packing buffers and the staging block of C, so that the kernel never allocates.
const Scratch = struct {
    a: [row_block * depth_block_pairs]u32 align(64),
    b: [col_block * depth_block_pairs]u32 align(64),
    c: [block_rows * block_cols]f32 align(64),
};
threadlocal var scratch: Scratch = undefined;

// -------------------------------------------------------------------------------------------
// Compute.

/// The 64-byte tile configuration `ldtilecfg` reads (palette 1): eight 16 × 64-byte tiles.
const TileConfig = extern struct {
    palette: u8 = 1,
    start_row: u8 = 0,
    reserved: [14]u8 = @splat(0),
    bytes_per_row: [16]u16 = [_]u16{64} ** 8 ++ [_]u16{0} ** 8,
    rows: [16]u8 = [_]u8{16} ** 8 ++ [_]u8{0} ** 8,
};
comptime {
    assert(@sizeOf(TileConfig) == 64);
}
const tile_config: TileConfig align(64) = .{};

/// Loads the configuration every AMX kernel here uses (eight 16 × 64-byte tiles); pairs with
/// releaseTiles, which the caller defers. Only where `supported()` is true.
pub fn loadTileConfig() void {
    asm volatile ("ldtilecfg (%[config])"
        :
        : [config] "r" (&tile_config),
        : .{ .memory = true });
}

/// Frees the tile state loadTileConfig claimed, so no other code runs with it in use.
pub fn releaseTiles() void {
    asm volatile ("tilerelease" ::: .{ .memory = true });
}

/// Where the current depth block's A rows are: row r (relative to the view) starts at word
/// r · row_stride of `words`, its first 16-pair tile at word 0 of that row.
const RowView = struct { words: []const u32, row_stride: usize };
/// Where the current depth block's B slivers are: sliver s (relative to the view) starts at
/// word s · sliver_stride.
const SliverView = struct { words: []const u32, sliver_stride: usize };

/// Computes rows [row_begin, +rows) × cols [col_begin, +cols) of C. `args` must be validated
/// and `supported()` true; with a pre-packed A `row_begin` must be a multiple of 16, with a
/// pre-packed B `col_begin`. Blocks of one product may run in any order and on any threads,
/// as long as they do not overlap.
pub fn runBlock(args: *const Args, row_begin: usize, rows: usize, col_begin: usize, cols: usize) void {
    assert(row_begin + rows <= args.m and col_begin + cols <= args.n);
    assert(args.a != .packed_a or row_begin % tile == 0);
    assert(args.b != .packed_b or col_begin % tile == 0);
    if (rows == 0 or cols == 0) return;
    if (args.k == 0 or args.alpha == 0) return scaleBlock(args, row_begin, rows, col_begin, cols);
    if (comptime !compiled) unreachable;
    loadTileConfig();
    // Pairs with loadTileConfig: the tiles are free again before any other code runs.
    defer releaseTiles();
    const pairs_total = paddedPairs(args.k);
    const buffers = &scratch;
    var pair_start: usize = 0;
    while (pair_start < pairs_total) : (pair_start += depth_block_pairs) {
        const pairs: usize = @min(depth_block_pairs, pairs_total - pair_start);
        // The first depth block applies beta; later ones accumulate into C.
        const beta = if (pair_start == 0) args.beta else 1;
        const col_step = if (args.b == .packed_b) cols else col_block;
        var col_start = col_begin;
        while (col_start < col_begin + cols) : (col_start += col_step) {
            const col_count = @min(col_step, col_begin + cols - col_start);
            const slivers: SliverView = switch (args.b) {
                .packed_b => |b| .{ .words = b.values[(col_start / tile) * pairs_total * tile + pair_start * tile ..], .sliver_stride = pairs_total * tile },
                else => blk: {
                    const words = buffers.b[0 .. divideCeil(col_count, tile) * pairs * tile];
                    packBlock(args.b, args.k, pair_start, pairs, col_start, col_count, words);
                    break :blk .{ .words = words, .sliver_stride = pairs * tile };
                },
            };
            const row_step = if (args.a == .packed_a) rows else row_block;
            var row_start = row_begin;
            while (row_start < row_begin + rows) : (row_start += row_step) {
                const row_count = @min(row_step, row_begin + rows - row_start);
                const panel: RowView = switch (args.a) {
                    .packed_a => |a| .{ .words = a.values[row_start * pairs_total + pair_start ..], .row_stride = pairs_total },
                    .matrix => |a| blk: {
                        const padded_rows = divideCeil(row_count, tile) * tile;
                        const words = buffers.a[0 .. padded_rows * pairs];
                        @memset(words, 0);
                        for (0..row_count) |r| packRow(a, row_start + r, pair_start, args.k, words[r * pairs ..][0..pairs]);
                        break :blk .{ .words = words, .row_stride = pairs };
                    },
                };
                macroKernel(args, panel, slivers, pairs, row_start, row_count, col_start, col_count, beta, &buffers.c);
            }
        }
    }
}

fn scaleBlock(args: *const Args, row_begin: usize, rows: usize, col_begin: usize, cols: usize) void {
    for (row_begin..row_begin + rows) |row| {
        const c_row = args.c[row * args.ldc + col_begin ..][0..cols];
        if (args.beta == 0) {
            @memset(c_row, 0);
        } else if (args.beta != 1) {
            for (c_row) |*value| value.* *= args.beta;
        }
    }
}

fn macroKernel(args: *const Args, panel: RowView, slivers: SliverView, pairs: usize, row_start: usize, rows: usize, col_start: usize, cols: usize, beta: f32, staging: *[block_rows * block_cols]f32) void {
    assert(pairs % tile == 0);
    const view: BlockView = .{ .args = args, .panel = panel, .slivers = slivers, .pairs = pairs, .row_start = row_start, .rows = rows, .col_start = col_start, .cols = cols, .beta = beta, .staging = staging };
    if (args.b == .packed_b) {
        // A pre-packed B spans every column (rec's CTC head: 1.7 MB of weights): each of its
        // blocks is read once, from L1 for every row block, rather than once per row block.
        var c: usize = 0;
        while (c < cols) : (c += block_cols) {
            var r: usize = 0;
            while (r < rows) : (r += block_rows) view.block(r, c);
        }
        return;
    }
    var r: usize = 0;
    while (r < rows) : (r += block_rows) {
        var c: usize = 0;
        while (c < cols) : (c += block_cols) view.block(r, c);
    }
}

/// One macroKernel call's operands and the block of C it computes.
const BlockView = struct {
    args: *const Args,
    panel: RowView,
    slivers: SliverView,
    pairs: usize,
    row_start: usize,
    rows: usize,
    col_start: usize,
    cols: usize,
    beta: f32,
    staging: *[block_rows * block_cols]f32,

    /// The register block at rows r, columns c of the view.
    inline fn block(view: *const BlockView, r: usize, c: usize) void {
        const args = view.args;
        const row_tiles: usize = if (view.rows - r > tile) 2 else 1;
        const col_tiles: usize = if (view.cols - c > tile) 2 else 1;
        const a = view.panel.words[r * view.panel.row_stride ..];
        const b = view.slivers.words[(c / tile) * view.slivers.sliver_stride ..];
        const whole = view.rows - r >= block_rows and view.cols - c >= block_cols;
        if (whole and args.alpha == 1 and (view.beta == 0 or view.beta == 1)) {
            // A whole block with nothing to scale: the tiles accumulate onto C itself (or
            // from zero) and store straight back, no staging copy. rec's CTC head
            // (40 × 120 × 6625) is mostly such stores: k is a few tiles deep.
            const block_c = args.c[(view.row_start + r) * args.ldc + view.col_start + c ..];
            assert(block_c.len >= (block_rows - 1) * args.ldc + block_cols);
            if (view.beta == 0) zeroAccumulators() else loadAccumulators(block_c.ptr, args.ldc);
            tileKernel(2, 2, a, view.panel.row_stride, b, view.slivers.sliver_stride, view.pairs);
            storeAccumulators(block_c.ptr, args.ldc);
            return;
        }
        zeroAccumulators();
        switch (row_tiles) {
            inline 1, 2 => |tiles_down| switch (col_tiles) {
                inline 1, 2 => |tiles_across| tileKernel(tiles_down, tiles_across, a, view.panel.row_stride, b, view.slivers.sliver_stride, view.pairs),
                else => unreachable,
            },
            else => unreachable,
        }
        storeAccumulators(view.staging, block_cols);
        storeBlock(args, view.staging, view.row_start + r, @min(block_rows, view.rows - r), view.col_start + c, @min(block_cols, view.cols - c), view.beta);
    }
};

/// Adds `pairs` depth pairs of a row_tiles × col_tiles block to the accumulators (tmm0 | tmm1
/// over tmm2 | tmm3, which the caller zeroes or loads and stores). `a` holds row_tiles · 16
/// rows of row_stride words; `b` holds col_tiles slivers sliver_stride words apart; each read
/// stays inside its view.
fn tileKernel(comptime row_tiles: usize, comptime col_tiles: usize, a: []const u32, row_stride: usize, b: []const u32, sliver_stride: usize, pairs: usize) void {
    comptime assert(row_tiles >= 1 and row_tiles <= 2 and col_tiles >= 1 and col_tiles <= 2);
    assert(a.len >= (row_tiles * tile - 1) * row_stride + pairs);
    assert(b.len >= (col_tiles - 1) * sliver_stride + pairs * tile);
    const a_stride_bytes = row_stride * @sizeOf(u32);
    const b_stride_bytes: usize = tile * @sizeOf(u32);
    var q: usize = 0;
    while (q < pairs) : (q += tile) {
        const a0 = a[q..].ptr;
        const b0 = b[q * tile ..].ptr;
        if (row_tiles == 2 and col_tiles == 2) {
            multiply2x2(a0, a0 + tile * row_stride, a_stride_bytes, b0, b0 + sliver_stride, b_stride_bytes);
        } else if (row_tiles == 2) {
            asm volatile (
                \\tileloadd (%[a0], %[sa], 1), %%tmm4
                \\tileloadd (%[b0], %[sb], 1), %%tmm6
                \\tdpbf16ps %%tmm6, %%tmm4, %%tmm0
                \\tileloadd (%[a1], %[sa], 1), %%tmm5
                \\tdpbf16ps %%tmm6, %%tmm5, %%tmm2
                :
                : [a0] "r" (a0),
                  [a1] "r" (a0 + tile * row_stride),
                  [b0] "r" (b0),
                  [sa] "r" (a_stride_bytes),
                  [sb] "r" (b_stride_bytes),
                : .{ .memory = true });
        } else if (col_tiles == 2) {
            asm volatile (
                \\tileloadd (%[a0], %[sa], 1), %%tmm4
                \\tileloadd (%[b0], %[sb], 1), %%tmm6
                \\tileloadd (%[b1], %[sb], 1), %%tmm7
                \\tdpbf16ps %%tmm6, %%tmm4, %%tmm0
                \\tdpbf16ps %%tmm7, %%tmm4, %%tmm1
                :
                : [a0] "r" (a0),
                  [b0] "r" (b0),
                  [b1] "r" (b0 + sliver_stride),
                  [sa] "r" (a_stride_bytes),
                  [sb] "r" (b_stride_bytes),
                : .{ .memory = true });
        } else {
            asm volatile (
                \\tileloadd (%[a0], %[sa], 1), %%tmm4
                \\tileloadd (%[b0], %[sb], 1), %%tmm6
                \\tdpbf16ps %%tmm6, %%tmm4, %%tmm0
                :
                : [a0] "r" (a0),
                  [b0] "r" (b0),
                  [sa] "r" (a_stride_bytes),
                  [sb] "r" (b_stride_bytes),
                : .{ .memory = true });
        }
    }
}

/// Zeroes the four accumulator tiles of a 2 × 2 register block (tmm0–3).
pub inline fn zeroAccumulators() void {
    asm volatile (
        \\tilezero %%tmm0
        \\tilezero %%tmm1
        \\tilezero %%tmm2
        \\tilezero %%tmm3
        ::: .{ .memory = true });
}

/// One depth step of a 2 × 2 register block: A tiles at a0 and a1 (tmm4, tmm5), B tiles at
/// b0 and b1 (tmm6, tmm7), each loaded once and used twice. The caller checks the bounds of
/// 16 rows of 64 bytes at each address and stride.
pub inline fn multiply2x2(a0: [*]const u32, a1: [*]const u32, a_stride_bytes: usize, b0: [*]const u32, b1: [*]const u32, b_stride_bytes: usize) void {
    asm volatile (
        \\tileloadd (%[a0], %[sa], 1), %%tmm4
        \\tileloadd (%[b0], %[sb], 1), %%tmm6
        \\tileloadd (%[b1], %[sb], 1), %%tmm7
        \\tdpbf16ps %%tmm6, %%tmm4, %%tmm0
        \\tileloadd (%[a1], %[sa], 1), %%tmm5
        \\tdpbf16ps %%tmm7, %%tmm4, %%tmm1
        \\tdpbf16ps %%tmm6, %%tmm5, %%tmm2
        \\tdpbf16ps %%tmm7, %%tmm5, %%tmm3
        :
        : [a0] "r" (a0),
          [a1] "r" (a1),
          [b0] "r" (b0),
          [b1] "r" (b1),
          [sa] "r" (a_stride_bytes),
          [sb] "r" (b_stride_bytes),
        : .{ .memory = true });
}

/// Loads tmm0 | tmm1 over tmm2 | tmm3 from `base` (as storeAccumulators stores them), so a
/// product accumulates onto what C holds. The caller checks the bounds.
pub inline fn loadAccumulators(base: [*]const f32, ld: usize) void {
    asm volatile (
        \\tileloadd (%[c0], %[sc], 1), %%tmm0
        \\tileloadd (%[c1], %[sc], 1), %%tmm1
        \\tileloadd (%[c2], %[sc], 1), %%tmm2
        \\tileloadd (%[c3], %[sc], 1), %%tmm3
        :
        : [c0] "r" (base),
          [c1] "r" (base + tile),
          [c2] "r" (base + tile * ld),
          [c3] "r" (base + tile * ld + tile),
          [sc] "r" (ld * @sizeOf(f32)),
        : .{ .memory = true });
}

/// Stores tmm0 | tmm1 over tmm2 | tmm3 (16 rows of 16 floats each) at `base`, rows `ld`
/// floats apart. The caller checks that 32 rows of 32 floats fit there.
pub inline fn storeAccumulators(base: [*]f32, ld: usize) void {
    asm volatile (
        \\tilestored %%tmm0, (%[c0], %[sc], 1)
        \\tilestored %%tmm1, (%[c1], %[sc], 1)
        \\tilestored %%tmm2, (%[c2], %[sc], 1)
        \\tilestored %%tmm3, (%[c3], %[sc], 1)
        :
        : [c0] "r" (base),
          [c1] "r" (base + tile),
          [c2] "r" (base + tile * ld),
          [c3] "r" (base + tile * ld + tile),
          [sc] "r" (ld * @sizeOf(f32)),
        : .{ .memory = true });
}

/// C[rows × cols at (row, col)] = alpha · staging + beta · C.
fn storeBlock(args: *const Args, staging: *const [block_rows * block_cols]f32, row: usize, rows: usize, col: usize, cols: usize, beta: f32) void {
    assert(rows <= block_rows and cols <= block_cols);
    for (0..rows) |r| {
        const source = staging[r * block_cols ..][0..cols];
        const destination = args.c[(row + r) * args.ldc + col ..][0..cols];
        if (cols == block_cols) {
            inline for (0..block_cols / lanes) |v| {
                const sums: VF = source[v * lanes ..][0..lanes].*;
                const target = destination[v * lanes ..][0..lanes];
                // beta = 0 overwrites: C is not read, so NaN or garbage in it does not leak.
                target.* = if (beta == 0) sums * @as(VF, @splat(args.alpha)) else target.* * @as(VF, @splat(beta)) + sums * @as(VF, @splat(args.alpha));
            }
            continue;
        }
        for (destination, source) |*value, sum| {
            value.* = if (beta == 0) args.alpha * sum else value.* * beta + args.alpha * sum;
        }
    }
}

// -------------------------------------------------------------------------------------------
// Tiling.

/// Up to `threads` tiles aligned to the register block (as pre-packed operands need).
pub fn plan(m: usize, n: usize, threads: usize) gemm.Tiling {
    return bf16.planAligned(m, n, threads, block_rows, block_cols);
}

/// Computes tiles [tile_begin, tile_end) of `tiling` (from `plan`).
pub fn runTiles(args: *const Args, tiling: gemm.Tiling, tile_begin: usize, tile_end: usize) void {
    assert(tile_begin <= tile_end and tile_end <= tiling.count());
    for (tile_begin..tile_end) |index| {
        const block = tiling.block(index, args.m, args.n) orelse continue;
        runBlock(args, block.row_begin, block.rows, block.col_begin, block.cols);
    }
}

// -------------------------------------------------------------------------------------------
// Tests: against gemm_bf16.zig's scalar reference on bf16-rounded inputs.

const testing = std.testing;

const Case = bf16.TestCase;

/// gemm_bf16.zig's reference test runner, on this kernel.
fn expectMatches(random: std.Random, case: Case) !void {
    return bf16.expectKernelMatches(@This(), random, case);
}

test "AMX bf16 GEMM matches the bf16-rounded reference: awkward shapes, transposes, every operand form, 1 and N threads" {
    if (!supported()) return error.SkipZigTest;
    var prng = std.Random.DefaultPrng.init(0xa3a);
    const random = prng.random();
    const rows = [_]usize{ 1, 7, 16, 17, 33, 70 };
    const cols = [_]usize{ 1, 15, 16, 31, 33, 100, 300 };
    const depths = [_]usize{ 1, 2, 3, 17, 32, 33, 1023, 1024, 1025, 2100 };
    var index: usize = 0;
    for (rows) |m| for (cols) |n| for ([_]bool{ false, true }) |trans_a| for ([_]bool{ false, true }) |trans_b| {
        index += 1;
        const form: @FieldType(Case, "form") = @enumFromInt(index % 4);
        try expectMatches(random, .{
            .m = m,
            .n = n,
            .k = depths[index % depths.len],
            .trans_a = trans_a and form != .packed_a,
            .trans_b = trans_b and form != .indirect,
            .alpha = if (index % 3 == 0) 1 else -0.75,
            .beta = ([_]f32{ 0, 1, 0.5, -2 })[index % 4],
            .form = form,
            .threads = 1 + index % 3,
        });
    };
}

test "AMX bf16 GEMM: k = 0 and alpha = 0 only scale C; blocks past every cache block" {
    if (!supported()) return error.SkipZigTest;
    var prng = std.Random.DefaultPrng.init(8);
    const random = prng.random();
    try expectMatches(random, .{ .m = 9, .n = 50, .k = 0, .beta = 0.5 });
    try expectMatches(random, .{ .m = 9, .n = 50, .k = 10, .alpha = 0, .beta = 0.5, .form = .packed_b });
    for ([_]@FieldType(Case, "form"){ .packed_a, .packed_b, .plain, .indirect }) |form| {
        try expectMatches(random, .{ .m = row_block + 13, .n = col_block + 37, .k = 2 * depth_block_pairs * 2 + 3, .beta = 0.25, .form = form, .threads = 3 });
    }
}

test "AMX plan covers C once with tiles aligned to the register block" {
    for ([_]usize{ 1, 16, 33, 100 }) |m| for ([_]usize{ 1, 32, 49, 1000 }) |n| for (1..6) |threads| {
        const tiling = plan(m, n, threads);
        try testing.expect(tiling.count() >= 1 and tiling.count() <= threads);
        try testing.expect(tiling.cols_per_tile % block_cols == 0 and tiling.rows_per_tile % block_rows == 0);
    };
}
