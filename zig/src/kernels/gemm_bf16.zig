//! bf16 GEMM with f32 accumulation (AVX512_BF16): C = alpha · op(A) · op(B) + beta · C,
//! row-major, for the opt-in bf16 precision of a program (ops/bf16.zig).
//!
//! `vdpbf16ps` multiplies two registers of 32 bf16 values pairwise and adds each pair of
//! products into one f32 lane: lane i += a[2i]·b[2i] + a[2i+1]·b[2i+1]. So both operands are
//! packed with two consecutive depths per 32-bit word (the even depth in the low half):
//! - A in panels of `panel_rows` rows: panel g, depth pair q, row r is word
//!   g·pairs·panel_rows + q·panel_rows + r; the kernel broadcasts one word per row.
//! - B in slivers of `panel_cols` columns: sliver s, depth pair q, column j is word
//!   s·pairs·panel_cols + q·panel_cols + j; the kernel loads three zmm registers per pair.
//! An odd depth is padded with a zero pair half; columns past n with zero words.
//!
//! The constant operand (weights) is packed once at load (`PackedA` for convolutions, whose
//! weights are the left operand, `PackedB` for matrix products by a weight); the other one is
//! converted to bf16 while it is packed, rounding to nearest even as `vcvtne2ps2bf16` does.
//! The register block is 8 rows × 48 columns: 24 accumulators, 3 B registers and a broadcast
//! (8 rows because PaddleOCR's and most CNNs' channel counts are multiples of 8).
//!
//! On Intel CPUs with AMX (Sapphire Rapids on), `vdpbf16ps` issues about once per three cycles
//! and this kernel runs at 0.5–0.8× the f32 one (bench/native/bf16_bench.zig); gemm_amx.zig
//! is the bf16 kernel there, and this one serves CPUs with AVX512_BF16 but no AMX (Zen 4,
//! Cooper Lake).
//!
//! The instruction exists only in AVX-512 compilations of this file (the portable library's
//! v4 copy, or a native build for an AVX-512 CPU); callers check `supported()` (CPUID) first.
const std = @import("std");
const builtin = @import("builtin");
const gemm = @import("gemm.zig");
const status = @import("../status.zig");
const cpu_level = @import("../cpu_level.zig");
const env = @import("../env.zig");

const assert = std.debug.assert;
const Error = status.Error;

/// Rows of C per register block (rows of an A panel).
pub const panel_rows = 8;
const lanes = 16;
const panel_vectors = 3;
/// Columns of C per register block (columns of a B sliver).
pub const panel_cols = lanes * panel_vectors;
/// Depth pairs per packed block: an A panel of a block is 6 KiB, a B sliver 36 KiB (L1/L2).
const depth_block_pairs = 192;
/// Columns of B packed at once when B is not pre-packed: 10 slivers, 360 KiB (L2).
const col_block = panel_cols * 10;
/// Rows of A packed at once when A is not pre-packed.
const row_block = panel_rows * 8;

const VF = @Vector(lanes, f32);
const VU = @Vector(lanes, u32);

fn hasX86(comptime feature: std.Target.x86.Feature) bool {
    return builtin.cpu.arch == .x86_64 and std.Target.x86.featureSetHas(builtin.cpu.features, feature);
}

/// Whether this compilation holds the kernel (the assembler takes `vdpbf16ps` in any
/// AVX-512 compilation; only zmm registers hold its operands).
pub const compiled = hasX86(.avx512f) and hasX86(.avx512bw);

const detection = cpu_level.Once(detect);

/// Whether this process can run the kernel: compiled in, the CPU has AVX512_BF16 (CPUID leaf
/// 7 sub-leaf 1, EAX bit 5), and SPINDLE_CPU_LEVEL does not force a level below AVX-512 (so a
/// native build can test the fallback the way the portable one selects a lower copy).
pub fn supported() bool {
    if (comptime !compiled) return false;
    return detection.get();
}

fn detect() bool {
    return cpuHasBf16() and !forcedLower();
}

/// Whether SPINDLE_BF16_KERNEL=avx512 asks for this kernel (over AMX, and where it does not
/// pay).
pub fn forced() bool {
    const text = env.get("SPINDLE_BF16_KERNEL") orelse return false;
    return std.mem.eql(u8, text, "avx512");
}

/// Whether this kernel beats the f32 kernels here: `supported()`, and `vdpbf16ps` makes at
/// least 1.25× the products per cycle of f32 FMA (each converted activation costs a few
/// instructions on top). Measured once per process (a few hundred µs): on Zen 4 and Zen 5 it
/// makes twice as many, but on Intel Xeons (Sapphire Rapids class) with AMX hidden by the
/// hypervisor it issues once per two cycles against two FMAs per cycle, half as many products,
/// and the bf16 kernels ran PaddleOCR 0.70–0.93× as fast as f32 (bench:peers, 215360e).
pub fn pays() bool {
    if (comptime !compiled) return false;
    return payoff.get();
}

const payoff = cpu_level.Once(measurePayoff);

fn measurePayoff() bool {
    if (!supported()) return false;
    var dot_ns: u64 = std.math.maxInt(u64);
    var fma_ns: u64 = std.math.maxInt(u64);
    // Alternating rounds, the best of each: preemption only ever adds time.
    for (0..7) |_| {
        dot_ns = @min(dot_ns, timeChains(.dot));
        fma_ns = @min(fma_ns, timeChains(.fma));
    }
    // The same instruction count each: a dot makes two products per lane, an FMA one, so the
    // dot makes 1.25× the products per second when dot_ns · 1.25 < fma_ns · 2.
    return dot_ns * 5 < fma_ns * 8;
}

/// Nanoseconds for `chain_steps` rounds of 12 independent accumulations (enough chains to
/// cover either instruction's latency at its throughput).
fn timeChains(comptime which: enum { dot, fma }) u64 {
    if (comptime !compiled) unreachable;
    const chain_steps = 2048;
    var sums: [12]VF = @splat(@splat(0));
    // Normal values only (denormal results would take a microcode assist in FMA).
    const a: VF = @splat(1.0);
    const b: VF = @splat(1.0 / 1024.0);
    const pair: VU = @splat(pairWord(1.0, 1.0 / 1024.0));
    var timer = std.time.Timer.start() catch return 0;
    for (0..chain_steps) |_| {
        inline for (&sums) |*sum| {
            sum.* = switch (which) {
                .dot => dot(sum.*, pair, pair),
                .fma => fma(sum.*, a, b),
            };
        }
    }
    const elapsed = timer.read();
    var total: f32 = 0;
    for (sums) |sum| total += @reduce(.Add, sum);
    std.mem.doNotOptimizeAway(total);
    return elapsed;
}

/// result += a · b, lane by lane, as one vfmadd231ps (inline, so the compiler neither fuses
/// nor reorders the chains).
inline fn fma(sum: VF, a: VF, b: VF) VF {
    return asm ("vfmadd231ps %[b], %[a], %[result]"
        : [result] "=v" (-> VF),
        : [sum] "0" (sum),
          [a] "v" (a),
          [b] "v" (b),
    );
}

pub fn forcedLower() bool {
    const text = env.get("SPINDLE_CPU_LEVEL") orelse return false;
    const level = cpu_level.parseLevel(text) orelse return false;
    return level != .avx512;
}

fn cpuHasBf16() bool {
    const max_leaf = cpu_level.cpuid(0, 0).eax;
    if (max_leaf < 7) return false;
    // Leaf 7 sub-leaf 0 EAX is the highest sub-leaf.
    if (cpu_level.cpuid(7, 0).eax < 1) return false;
    return cpu_level.cpuid(7, 1).eax >> 5 & 1 == 1;
}

// -------------------------------------------------------------------------------------------
// Conversion.

/// f32 → bf16, rounding to nearest even; NaN stays a (quiet) NaN.
pub fn toBf16(x: f32) u16 {
    const bits: u32 = @bitCast(x);
    if (std.math.isNan(x)) return @intCast(bits >> 16 | 0x40);
    return @intCast((bits +% 0x7FFF +% (bits >> 16 & 1)) >> 16);
}

pub fn fromBf16(value: u16) f32 {
    return @bitCast(@as(u32, value) << 16);
}

/// One packed word: the even depth in the low half, the odd one in the high half.
pub fn pairWord(even: f32, odd: f32) u32 {
    return @as(u32, toBf16(even)) | @as(u32, toBf16(odd)) << 16;
}

/// toBf16 of 16 values, left in the upper halves of the lanes (the lower halves are junk).
pub inline fn roundHigh(x: VF) VU {
    const bits: VU = @bitCast(x);
    const rounded = bits +% @as(VU, @splat(0x7FFF)) +% (bits >> @splat(16) & @as(VU, @splat(1)));
    return @select(u32, x != x, bits | @as(VU, @splat(0x40_0000)), rounded);
}

/// pairWord of 16 columns: two rows of B become one row of packed words without shuffles.
pub inline fn pairVector(even: VF, odd: VF) VU {
    return (roundHigh(even) >> @splat(16)) | (roundHigh(odd) & @as(VU, @splat(0xFFFF_0000)));
}

pub fn pairsOf(depth: usize) usize {
    return (depth + 1) / 2;
}

const divideCeil = @import("math.zig").divideCeil;

// -------------------------------------------------------------------------------------------
// Operands.

/// An f32 matrix operand: element (i, j) of op(X) is values[i·ld + j], or values[j·ld + i]
/// when transposed.
pub const Matrix = struct {
    trans: bool,
    values: []const f32,
    ld: usize,

    inline fn at(matrix: Matrix, i: usize, j: usize) f32 {
        return if (matrix.trans) matrix.values[j * matrix.ld + i] else matrix.values[i * matrix.ld + j];
    }
};

/// op(A) (m × k) packed once into panels (see the top); `values` may be shared by several
/// views (a grouped convolution's groups).
pub const PackedA = struct {
    m: usize,
    k: usize,
    values: []const u32,

    pub fn length(m: usize, k: usize) usize {
        return divideCeil(m, panel_rows) * pairsOf(k) * panel_rows;
    }

    /// Packs op(A) into `out` (length(m, k) words).
    pub fn pack(a: Matrix, m: usize, k: usize, out: []u32) void {
        assert(out.len == length(m, k));
        packPanels(a, 0, m, 0, pairsOf(k), k, out);
    }
};

/// op(B) (k × n) packed once into slivers (see the top).
pub const PackedB = struct {
    k: usize,
    n: usize,
    values: []const u32,

    pub fn length(k: usize, n: usize) usize {
        return divideCeil(n, panel_cols) * pairsOf(k) * panel_cols;
    }

    /// Packs op(B) into `out` (length(k, n) words).
    pub fn pack(b: Matrix, k: usize, n: usize, out: []u32) void {
        assert(out.len == length(k, n));
        packSlivers(.{ .matrix = b }, k, 0, pairsOf(k), 0, n, out);
    }
};

/// B given row by row: element (p, j) is values[offsets[p] + j] (an implicit im2col matrix,
/// as gemm_native's IndirectB).
pub const Indirect = struct {
    values: []const f32,
    offsets: []const usize,
};

const operands = Operands(PackedA, PackedB);
pub const Left = operands.LeftOperand;
pub const Right = operands.RightOperand;
pub const Args = operands.GemmArgs;

/// The operands and arguments of a bf16 GEMM whose pre-packed forms are `PackedA` and
/// `PackedB` (this file's layouts, or gemm_amx.zig's tiles): each type has `length(rows,
/// cols)` and the fields m/k (A) or k/n (B) and `values`.
pub fn Operands(comptime PackedA_: type, comptime PackedB_: type) type {
    return struct {
        pub const LeftOperand = union(enum) {
            matrix: Matrix,
            packed_a: PackedA_,
        };

        pub const RightOperand = union(enum) {
            matrix: Matrix,
            indirect: Indirect,
            packed_b: PackedB_,
        };

        pub const GemmArgs = struct {
            m: usize,
            n: usize,
            k: usize,
            alpha: f32 = 1,
            a: LeftOperand,
            b: RightOperand,
            beta: f32 = 0,
            c: []f32,
            ldc: usize,

            /// Checks that every element the kernel will touch lies inside the given slices.
            pub fn validate(args: *const GemmArgs) Error!void {
                switch (args.a) {
                    .matrix => |a| try gemm.Args.checkMatrix("A", a.values.len, if (a.trans) args.k else args.m, if (a.trans) args.m else args.k, a.ld),
                    .packed_a => |a| if (a.m != args.m or a.k != args.k or a.values.len != PackedA_.length(a.m, a.k)) {
                        return status.fail(error.ShapeMismatch, "bf16 gemm: packed A is {d}x{d}, the product needs {d}x{d}", .{ a.m, a.k, args.m, args.k });
                    },
                }
                switch (args.b) {
                    .matrix => |b| try gemm.Args.checkMatrix("B", b.values.len, if (b.trans) args.n else args.k, if (b.trans) args.k else args.n, b.ld),
                    .packed_b => |b| if (b.k != args.k or b.n != args.n or b.values.len != PackedB_.length(b.k, b.n)) {
                        return status.fail(error.ShapeMismatch, "bf16 gemm: packed B is {d}x{d}, the product needs {d}x{d}", .{ b.k, b.n, args.k, args.n });
                    },
                    .indirect => |b| {
                        if (b.offsets.len != args.k) return status.fail(error.ShapeMismatch, "bf16 gemm: {d} indirect rows for depth {d}", .{ b.offsets.len, args.k });
                        if (args.n > 0) for (b.offsets, 0..) |offset, p| {
                            if (offset > b.values.len or b.values.len - offset < args.n) {
                                return status.fail(error.IndexOutOfRange, "bf16 gemm: indirect B row {d} at {d} with {d} columns overruns {d} elements", .{ p, offset, args.n, b.values.len });
                            }
                        };
                    },
                }
                try gemm.Args.checkMatrix("C", args.c.len, args.m, args.n, args.ldc);
            }
        };
    };
}

// -------------------------------------------------------------------------------------------
// Packing.

/// Packs rows [row_start, +rows) × depth pairs [pair_start, +pairs) of op(A) (depth k) into
/// panels starting at out[0], panel_rows words per pair; lanes past the rows are zero.
fn packPanels(a: Matrix, row_start: usize, rows: usize, pair_start: usize, pairs: usize, k: usize, out: []u32) void {
    const panels = divideCeil(rows, panel_rows);
    assert(out.len >= panels * pairs * panel_rows);
    for (0..panels) |panel| {
        const words = out[panel * pairs * panel_rows ..][0 .. pairs * panel_rows];
        const panel_first = row_start + panel * panel_rows;
        const used: usize = @min(panel_rows, row_start + rows - panel_first);
        if (used < panel_rows) @memset(words, 0);
        for (0..used) |r| {
            const row = panel_first + r;
            for (0..pairs) |q| {
                const depth = 2 * (pair_start + q);
                const odd = if (depth + 1 < k) a.at(row, depth + 1) else 0;
                words[q * panel_rows + r] = pairWord(a.at(row, depth), odd);
            }
        }
    }
}

/// Packs depth pairs [pair_start, +pairs) × columns [col_start, +cols) of op(B) (depth k)
/// into slivers starting at out[0], panel_cols words per pair; columns past cols are zero.
fn packSlivers(b: Right, k: usize, pair_start: usize, pairs: usize, col_start: usize, cols: usize, out: []u32) void {
    const slivers = divideCeil(cols, panel_cols);
    assert(out.len >= slivers * pairs * panel_cols);
    for (0..slivers) |sliver| {
        const words = out[sliver * pairs * panel_cols ..][0 .. pairs * panel_cols];
        const first = col_start + sliver * panel_cols;
        const used: usize = @min(panel_cols, col_start + cols - first);
        for (0..pairs) |q| {
            const depth = 2 * (pair_start + q);
            const row = words[q * panel_cols ..][0..panel_cols];
            switch (b) {
                .matrix => |matrix| if (matrix.trans) {
                    for (row[0..used], first..) |*word, j| {
                        const odd = if (depth + 1 < k) matrix.values[j * matrix.ld + depth + 1] else 0;
                        word.* = pairWord(matrix.values[j * matrix.ld + depth], odd);
                    }
                } else {
                    const even = matrix.values[depth * matrix.ld + first ..][0..used];
                    const odd: ?[]const f32 = if (depth + 1 < k) matrix.values[(depth + 1) * matrix.ld + first ..][0..used] else null;
                    packRowPair(even, odd, row[0..used]);
                },
                .indirect => |indirect| {
                    const even = indirect.values[indirect.offsets[depth] + first ..][0..used];
                    var odd: ?[]const f32 = null;
                    if (depth + 1 < k) {
                        const start = indirect.offsets[depth + 1] + first;
                        odd = indirect.values[start..][0..used];
                    }
                    packRowPair(even, odd, row[0..used]);
                },
                .packed_b => unreachable,
            }
            @memset(row[used..], 0);
        }
    }
}

/// Two rows of B (the odd one absent past the depth) into one row of words, 16 at a time.
pub fn packRowPair(even: []const f32, odd: ?[]const f32, out: []u32) void {
    assert(out.len == even.len);
    var j: usize = 0;
    while (j + lanes <= out.len) : (j += lanes) {
        const odd_vector: VF = if (odd) |values| values[j..][0..lanes].* else @splat(0);
        out[j..][0..lanes].* = pairVector(even[j..][0..lanes].*, odd_vector);
    }
    while (j < out.len) : (j += 1) out[j] = pairWord(even[j], if (odd) |values| values[j] else 0);
}

/// Per-thread packing buffers, so that the kernel never allocates.
const Scratch = struct {
    a: [row_block * depth_block_pairs]u32 align(64),
    b: [col_block * depth_block_pairs]u32 align(64),
};
threadlocal var scratch: Scratch = undefined;

// -------------------------------------------------------------------------------------------
// Compute.

/// Where rows of the current depth block's A panels are: row r is word
/// ((r − origin) / panel_rows) · panel_stride + (r − origin) % panel_rows of `words`.
const PanelView = struct { words: []const u32, panel_stride: usize, origin: usize };
/// Where columns of the current depth block's B slivers are, relative to the column block.
const SliverView = struct { words: []const u32, sliver_stride: usize };

/// Computes rows [row_begin, +rows) × cols [col_begin, +cols) of C. `args` must be validated,
/// `supported()` true, and with a pre-packed B `col_begin` a multiple of panel_cols. Blocks
/// of one product may run in any order and on any threads, as long as they do not overlap.
pub fn runBlock(args: *const Args, row_begin: usize, rows: usize, col_begin: usize, cols: usize) void {
    assert(row_begin + rows <= args.m and col_begin + cols <= args.n);
    assert(args.b != .packed_b or col_begin % panel_cols == 0);
    if (rows == 0 or cols == 0) return;
    if (args.k == 0 or args.alpha == 0) return scaleBlock(args, row_begin, rows, col_begin, cols);
    const pairs_total = pairsOf(args.k);
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
            var slivers: SliverView = undefined;
            if (args.b == .packed_b) {
                const b = args.b.packed_b;
                const first = (col_start / panel_cols) * pairs_total * panel_cols + pair_start * panel_cols;
                slivers = .{ .words = b.values[first..], .sliver_stride = pairs_total * panel_cols };
            } else {
                packSlivers(args.b, args.k, pair_start, pairs, col_start, col_count, &buffers.b);
                slivers = .{ .words = &buffers.b, .sliver_stride = pairs * panel_cols };
            }
            const row_step = if (args.a == .packed_a) rows else row_block;
            var row_start = row_begin;
            while (row_start < row_begin + rows) : (row_start += row_step) {
                const row_count = @min(row_step, row_begin + rows - row_start);
                const panels: PanelView = switch (args.a) {
                    .packed_a => |a| .{ .words = a.values[pair_start * panel_rows ..], .panel_stride = pairs_total * panel_rows, .origin = 0 },
                    .matrix => |a| blk: {
                        packPanels(a, row_start, row_count, pair_start, pairs, args.k, &buffers.a);
                        break :blk .{ .words = &buffers.a, .panel_stride = pairs * panel_rows, .origin = row_start };
                    },
                };
                macroKernel(args, panels, slivers, pairs, row_start, row_count, col_start, col_count, beta);
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

fn macroKernel(args: *const Args, panels: PanelView, slivers: SliverView, pairs: usize, row_start: usize, rows: usize, col_start: usize, cols: usize, beta: f32) void {
    const sliver_count = divideCeil(cols, panel_cols);
    if (args.b == .packed_b) {
        // A weight as B is packed whole, not in L2-sized column blocks: sweep each sliver
        // over all the rows' panels (a few KiB in L1) while it is in L1, so that B streams
        // from memory once, not once per 8 rows. rec's classifier, 40 × 6,625 × 120 (B
        // 1.6 MiB), read it 5 times.
        for (0..sliver_count) |sliver| {
            var row = row_start;
            while (row < row_start + rows) row += registerBlock(args, panels, slivers, pairs, row, row_start + rows - row, col_start, cols, sliver, beta);
        }
        return;
    }
    var row = row_start;
    while (row < row_start + rows) {
        var chunk: usize = undefined;
        for (0..sliver_count) |sliver| chunk = registerBlock(args, panels, slivers, pairs, row, row_start + rows - row, col_start, cols, sliver, beta);
        row += chunk;
    }
}

/// One register block: rows from `row` to the end of its panel (at most `rows_left`) × one
/// sliver; returns the rows it computed.
inline fn registerBlock(args: *const Args, panels: PanelView, slivers: SliverView, pairs: usize, row: usize, rows_left: usize, col_start: usize, cols: usize, sliver: usize, beta: f32) usize {
    // A pre-packed A may start mid-panel: the chunk runs to the panel's end.
    const lane = (row - panels.origin) % panel_rows;
    const chunk: usize = @min(panel_rows - lane, rows_left);
    const a = panels.words[((row - panels.origin) / panel_rows) * panels.panel_stride + lane ..];
    const used: usize = @min(panel_cols, cols - sliver * panel_cols);
    const b = slivers.words[sliver * slivers.sliver_stride ..][0 .. pairs * panel_cols];
    const c = args.c[row * args.ldc + col_start + sliver * panel_cols ..];
    // A ragged last sliver computes only the vectors it uses: det's 10 × 10 maps (100
    // columns: 48 + 48 + 4) 7 vectors of products, not 9.
    switch (chunk) {
        inline 1...panel_rows => |chunk_rows| switch (divideCeil(used, lanes)) {
            inline 1...panel_vectors => |vectors| microKernel(chunk_rows, vectors, pairs, a, b, c, args.ldc, used, args.alpha, beta),
            else => unreachable,
        },
        else => unreachable,
    }
    return chunk;
}

/// C[0..rows, 0..cols] = alpha · Σ_q a-pairs · b-pairs + beta · C, one register block of
/// the first `vectors` vectors of a sliver (cols ≤ 16 · vectors).
fn microKernel(comptime rows: usize, comptime vectors: usize, pairs: usize, a: []const u32, b: []const u32, c: []f32, ldc: usize, cols: usize, alpha: f32, beta: f32) void {
    assert(pairs >= 1 and b.len == pairs * panel_cols and vectors <= panel_vectors);
    assert(a.len >= (pairs - 1) * panel_rows + rows and cols <= vectors * lanes);
    var sums: [rows][vectors]VF = @splat(@splat(@splat(0)));
    for (0..pairs) |q| {
        var b_vectors: [vectors]VU = undefined;
        inline for (0..vectors) |v| b_vectors[v] = b[q * panel_cols + v * lanes ..][0..lanes].*;
        // A separate broadcast per row, reused by the row's `vectors` products: the
        // instruction's own memory broadcast ({1to16}, one load per product) measured 10-16%
        // slower on Zen 5 (bench-bf16, rec's 480 × 480 and 240 × 240 1x1 shapes, A/B).
        inline for (0..rows) |r| {
            const a_vector: VU = @splat(a[q * panel_rows + r]);
            inline for (0..vectors) |v| sums[r][v] = dot(sums[r][v], a_vector, b_vectors[v]);
        }
    }
    // Convolutions (alpha 1) skip the scaling: up to 24 multiplies a block that the
    // product does not need.
    if (alpha != 1) {
        const alpha_vector: VF = @splat(alpha);
        inline for (0..rows) |r| inline for (0..vectors) |v| {
            sums[r][v] *= alpha_vector;
        };
    }
    if (cols == vectors * lanes) {
        inline for (0..rows) |r| inline for (0..vectors) |v| {
            const destination = c[r * ldc + v * lanes ..][0..lanes];
            // beta = 0 overwrites: C is not read, so NaN or garbage in it does not leak.
            destination.* = if (beta == 0) sums[r][v] else destination.* * @as(VF, @splat(beta)) + sums[r][v];
        };
        return;
    }
    var spill: [rows][vectors * lanes]f32 = undefined;
    inline for (0..rows) |r| inline for (0..vectors) |v| {
        spill[r][v * lanes ..][0..lanes].* = sums[r][v];
    };
    for (0..rows) |r| {
        const destination = c[r * ldc ..][0..cols];
        for (destination, spill[r][0..cols]) |*value, product| {
            value.* = if (beta == 0) product else value.* * beta + product;
        }
    }
}

/// result += Σ pairs of bf16 products, lane by lane (vdpbf16ps).
pub inline fn dot(sum: VF, a: VU, b: VU) VF {
    if (comptime !compiled) unreachable;
    // The sum is tied to the output register ("0"): the instruction accumulates in place.
    return asm ("vdpbf16ps %[b], %[a], %[result]"
        : [result] "=v" (-> VF),
        : [sum] "0" (sum),
          [a] "v" (a),
          [b] "v" (b),
    );
}

// -------------------------------------------------------------------------------------------
// Tiling.

/// Up to `threads` tiles aligned to the register block (columns to whole slivers, as a
/// pre-packed B needs), balanced as gemm.plan balances its own.
pub fn plan(m: usize, n: usize, threads: usize) gemm.Tiling {
    return planAligned(m, n, threads, panel_rows, panel_cols);
}

/// `plan` for a register block of `panel_rows` × `panel_cols` (the AMX kernel's is larger).
pub fn planAligned(m: usize, n: usize, threads: usize, comptime block_rows: usize, comptime block_cols: usize) gemm.Tiling {
    const workers = std.math.clamp(threads, 1, gemm.workers_max);
    const row_groups = @max(1, divideCeil(m, block_rows));
    const col_groups = @max(1, divideCeil(n, block_cols));
    var best: ?gemm.Tiling = null;
    var best_area: usize = 0;
    for (1..@min(workers, row_groups) + 1) |row_tiles| {
        const col_tiles = @max(1, @min(col_groups, workers / row_tiles));
        const rows_per_tile = block_rows * divideCeil(row_groups, row_tiles);
        const cols_per_tile = block_cols * divideCeil(col_groups, col_tiles);
        const tiling: gemm.Tiling = .{
            .rows_per_tile = rows_per_tile,
            .cols_per_tile = cols_per_tile,
            .row_tiles = divideCeil(@max(m, 1), rows_per_tile),
            .col_tiles = divideCeil(@max(n, 1), cols_per_tile),
        };
        const area = @min(rows_per_tile, @max(m, 1)) * @min(cols_per_tile, @max(n, 1));
        if (best == null or area < best_area) {
            best = tiling;
            best_area = area;
        }
    }
    assert(best.?.count() <= workers);
    return best.?;
}

/// Computes tiles [tile_begin, tile_end) of `tiling` (from `plan`).
pub fn runTiles(args: *const Args, tiling: gemm.Tiling, tile_begin: usize, tile_end: usize) void {
    assert(tile_begin <= tile_end and tile_end <= tiling.count());
    for (tile_begin..tile_end) |tile| {
        const block = tiling.block(tile, args.m, args.n) orelse continue;
        runBlock(args, block.row_begin, block.rows, block.col_begin, block.cols);
    }
}

// -------------------------------------------------------------------------------------------
// Tests: against a scalar reference on bf16-rounded inputs.

const testing = std.testing;

/// C = alpha · op(A)·op(B) + beta · C with both inputs rounded to bf16, in f64.
fn reference(m: usize, n: usize, k: usize, alpha: f32, a: Matrix, b: Matrix, beta: f32, c: []f32, ldc: usize) void {
    for (0..m) |i| for (0..n) |j| {
        var sum: f64 = 0;
        for (0..k) |p| sum += @as(f64, fromBf16(toBf16(a.at(i, p)))) * fromBf16(toBf16(b.at(p, j)));
        const old: f64 = if (beta == 0) 0 else @as(f64, beta) * c[i * ldc + j];
        c[i * ldc + j] = @floatCast(@as(f64, alpha) * sum + old);
    };
}

test "toBf16 rounds to nearest even and keeps NaN and infinities" {
    try testing.expectEqual(@as(u16, 0x3F80), toBf16(1.0));
    // 1 + 2^-8 is halfway between bf16 1.0 and 1.0078125: ties go to the even one (1.0).
    try testing.expectEqual(@as(u16, 0x3F80), toBf16(1.0 + 1.0 / 256.0));
    try testing.expectEqual(@as(u16, 0x3F81), toBf16(1.0 + 1.0 / 256.0 + 1.0 / 4096.0));
    // 1.0078125 + 2^-8 is halfway between 0x3F81 and 0x3F82: to even (0x3F82).
    try testing.expectEqual(@as(u16, 0x3F82), toBf16(1.0078125 + 1.0 / 256.0));
    try testing.expectEqual(@as(u16, 0x7F80), toBf16(std.math.inf(f32)));
    try testing.expectEqual(@as(u16, 0xFF80), toBf16(-std.math.inf(f32)));
    try testing.expect(std.math.isNan(fromBf16(toBf16(std.math.nan(f32)))));
    try testing.expectEqual(@as(u16, 0x7F80), toBf16(std.math.floatMax(f32)));
    // The vector conversion agrees with the scalar one.
    var prng = std.Random.DefaultPrng.init(16);
    for (0..64) |_| {
        var even: [lanes]f32 = undefined;
        var odd: [lanes]f32 = undefined;
        for (&even, &odd) |*x, *y| {
            x.* = @bitCast(prng.random().int(u32));
            y.* = @bitCast(prng.random().int(u32));
        }
        const words: [lanes]u32 = pairVector(even, odd);
        for (words, even, odd) |word, x, y| {
            if (std.math.isNan(x) or std.math.isNan(y)) continue;
            try testing.expectEqual(pairWord(x, y), word);
        }
    }
}

/// One product of the reference tests, shared with gemm_amx.zig's.
pub const TestCase = struct {
    m: usize,
    n: usize,
    k: usize,
    trans_a: bool = false,
    trans_b: bool = false,
    alpha: f32 = 1,
    beta: f32 = 0,
    /// Which operand is pre-packed: the left (convolution weights), the right (matmul
    /// weights), neither, or the right given as an indirect row table.
    form: enum { packed_a, packed_b, plain, indirect } = .packed_a,
    threads: usize = 1,
};

fn expectMatches(random: std.Random, case: TestCase) !void {
    return expectKernelMatches(@This(), random, case);
}

/// Runs `case` on kernel module K (this file or gemm_amx.zig: Args, Left, Right, PackedA,
/// PackedB, plan, runTiles) and compares C with the bf16-rounded reference, every operand
/// form and 1 or N threads. For tests only.
pub fn expectKernelMatches(comptime K: type, random: std.Random, case: TestCase) !void {
    const allocator = testing.allocator;
    const lda = (if (case.trans_a) case.m else case.k) + 1;
    const ldb = (if (case.trans_b) case.k else case.n) + 2;
    const ldc = case.n + 3;
    const a_values = try allocator.alloc(f32, @max(1, (if (case.trans_a) case.k else case.m) * lda));
    defer allocator.free(a_values);
    const b_values = try allocator.alloc(f32, @max(1, (if (case.trans_b) case.n else case.k) * ldb));
    defer allocator.free(b_values);
    const c = try allocator.alloc(f32, @max(1, case.m * ldc));
    defer allocator.free(c);
    const expected = try allocator.alloc(f32, c.len);
    defer allocator.free(expected);
    for (a_values) |*x| x.* = random.float(f32) * 2 - 1;
    for (b_values) |*x| x.* = random.float(f32) * 2 - 1;
    for (c) |*x| x.* = if (case.beta == 0) std.math.nan(f32) else random.float(f32) * 2 - 1;
    @memcpy(expected, c);
    const a: Matrix = .{ .trans = case.trans_a, .values = a_values, .ld = lda };
    const b: Matrix = .{ .trans = case.trans_b, .values = b_values, .ld = ldb };
    reference(case.m, case.n, case.k, case.alpha, a, b, case.beta, expected, ldc);

    const packed_a = try allocator.alloc(u32, K.PackedA.length(case.m, case.k));
    defer allocator.free(packed_a);
    K.PackedA.pack(a, case.m, case.k, packed_a);
    const packed_b = try allocator.alloc(u32, K.PackedB.length(case.k, case.n));
    defer allocator.free(packed_b);
    K.PackedB.pack(b, case.k, case.n, packed_b);
    const offsets = try allocator.alloc(usize, case.k);
    defer allocator.free(offsets);
    for (offsets, 0..) |*offset, p| offset.* = p * ldb;
    const left: K.Left = if (case.form == .packed_a) .{ .packed_a = .{ .m = case.m, .k = case.k, .values = packed_a } } else .{ .matrix = a };
    const right: K.Right = switch (case.form) {
        .packed_b => .{ .packed_b = .{ .k = case.k, .n = case.n, .values = packed_b } },
        .indirect => .{ .indirect = .{ .values = b_values, .offsets = offsets } },
        else => .{ .matrix = b },
    };
    const args: K.Args = .{ .m = case.m, .n = case.n, .k = case.k, .alpha = case.alpha, .a = left, .b = right, .beta = case.beta, .c = c, .ldc = ldc };
    try args.validate();
    const tiling = K.plan(case.m, case.n, case.threads);
    if (case.threads == 1) {
        K.runTiles(&args, tiling, 0, tiling.count());
    } else {
        // Each tile on its own thread, as the op layer's pool runs them.
        var threads: [16]std.Thread = undefined;
        const count = tiling.count();
        assert(count <= threads.len);
        for (0..count) |tile| threads[tile] = try std.Thread.spawn(.{}, K.runTiles, .{ &args, tiling, tile, tile + 1 });
        for (threads[0..count]) |thread| thread.join();
    }
    const tolerance = 2e-6 * @as(f32, @floatFromInt(case.k + 8));
    for (c, expected, 0..) |got, want, index| {
        const in_padding = index % ldc >= case.n;
        if (in_padding) {
            // Padding is never written.
            try testing.expect((std.math.isNan(want) and std.math.isNan(got)) or got == want);
            continue;
        }
        if (@abs(got - want) <= tolerance) continue;
        std.debug.print("C[{d}, {d}] = {d}, expected {d} in {any}\n", .{ index / ldc, index % ldc, got, want, case });
        return error.TestExpectedApproxEqAbs;
    }
}

test "bf16 GEMM matches the bf16-rounded reference: awkward shapes, transposes, every operand form, 1 and N threads" {
    if (!supported()) return error.SkipZigTest;
    var prng = std.Random.DefaultPrng.init(0xbf16);
    const random = prng.random();
    const rows = [_]usize{ 1, 2, 7, 8, 9, 17, 70 };
    const cols = [_]usize{ 1, 15, 16, 47, 48, 49, 100, 500 };
    const depths = [_]usize{ 1, 2, 3, 17, 64, 383, 384, 385, 801 };
    var index: usize = 0;
    for (rows) |m| for (cols) |n| for ([_]bool{ false, true }) |trans_a| for ([_]bool{ false, true }) |trans_b| {
        index += 1;
        const form: @FieldType(TestCase, "form") = @enumFromInt(index % 4);
        const case: TestCase = .{
            .m = m,
            .n = n,
            .k = depths[index % depths.len],
            .trans_a = trans_a and form != .packed_a,
            // The indirect form reads plain rows.
            .trans_b = trans_b and form != .indirect,
            .alpha = if (index % 3 == 0) 1 else -0.75,
            .beta = ([_]f32{ 0, 1, 0.5, -2 })[index % 4],
            .form = form,
            .threads = 1 + index % 3,
        };
        try expectMatches(random, case);
    };
}

test "bf16 GEMM: k = 0 and alpha = 0 only scale C; blocks past every cache block" {
    if (!supported()) return error.SkipZigTest;
    var prng = std.Random.DefaultPrng.init(7);
    const random = prng.random();
    try expectMatches(random, .{ .m = 9, .n = 50, .k = 0, .beta = 0.5 });
    try expectMatches(random, .{ .m = 9, .n = 50, .k = 10, .alpha = 0, .beta = 0.5, .form = .packed_b });
    for ([_]@FieldType(TestCase, "form"){ .packed_a, .packed_b, .plain, .indirect }) |form| {
        try expectMatches(random, .{ .m = row_block + 13, .n = col_block + 37, .k = 2 * depth_block_pairs * 2 + 3, .beta = 0.25, .form = form, .threads = 3 });
    }
}

test "plan covers C once with tiles aligned to the register block" {
    for ([_]usize{ 1, 8, 9, 100 }) |m| for ([_]usize{ 1, 48, 49, 1000 }) |n| for (1..6) |threads| {
        const tiling = plan(m, n, threads);
        try testing.expect(tiling.count() >= 1 and tiling.count() <= threads);
        try testing.expect(tiling.cols_per_tile % panel_cols == 0 and tiling.rows_per_tile % panel_rows == 0);
        var covered: usize = 0;
        for (0..tiling.count()) |tile| if (tiling.block(tile, m, n)) |block| {
            covered += block.rows * block.cols;
        };
        try testing.expectEqual(m * n, covered);
    };
}

test "validate refuses packed operands of the wrong shape and short indirect rows" {
    var c: [4]f32 = undefined;
    const words = [_]u32{0} ** PackedA.length(2, 3);
    var args: Args = .{ .m = 2, .n = 2, .k = 3, .a = .{ .packed_a = .{ .m = 2, .k = 4, .values = &words } }, .b = .{ .matrix = .{ .trans = false, .values = &[_]f32{0} ** 6, .ld = 2 } }, .c = &c, .ldc = 2 };
    try testing.expectError(error.ShapeMismatch, args.validate());
    args.a = .{ .packed_a = .{ .m = 2, .k = 3, .values = &words } };
    try args.validate();
    const values = [_]f32{0} ** 5;
    args.b = .{ .indirect = .{ .values = &values, .offsets = &.{ 0, 2, 4 } } };
    try testing.expectError(error.IndexOutOfRange, args.validate());
}

test "the payoff measurement times both chains and keeps one answer per process" {
    if (!supported()) {
        try testing.expect(!pays());
        return;
    }
    // Both loops run 24,576 instructions: at any clock and throughput that takes over 1 µs.
    try testing.expect(timeChains(.dot) > 1000 and timeChains(.fma) > 1000);
    const first = pays();
    for (0..3) |_| try testing.expectEqual(first, pays());
}
