//! Int8 GEMM: u8 activations × s8 weights → i32, the integer core of quantized MatMul and
//! Conv (ops/quantized.zig). Pure functions over slices; the op layer tiles and threads.
//!
//! Layouts. A is quantized row by row into u8 (activations of any signedness are shifted by
//! -qmin so they are u8: s8 + 128), each row zero-padded to a multiple of 4 bytes. B is packed
//! once, at import, into blocks of 16 columns: for each group of 4 consecutive k, 16 i32
//! lanes each holding the 4 s8 weights of one column (byte j = k 4g+j). That is the operand
//! layout of `vpdpbusd` (AVX512-VNNI: 4 u8×s8 products summed into each i32 lane), so the
//! VNNI kernel loads one 64-byte vector per group and block, and broadcasts 4 bytes of A.
//!
//! Kernels, picked at run time (`Kernel.pick`):
//! - `vnni`: vpdpbusd on zmm registers, when the compilation has AVX-512 and CPUID says
//!   AVX512-VNNI (x86-64-v4 does not imply it, so the portable library's v4 copy asks CPUID).
//! - `widened`: every other CPU. On AVX2 (`halves`) each packed group's weights become two
//!   vectors of sign-extended 16-bit pairs and each row's 4 bytes two broadcasts of
//!   zero-extended pairs, and vpmaddwd sums pairs of products into i32 lanes: two
//!   vpmaddwd per 8 columns × 4 k. Elsewhere LLVM's code for plain i32 products (`micro`).
//!   No vpmaddubsw: its u8×s8 pair sums saturate at i16 (255·127·2 > 32767), which
//!   onnxruntime accepts on AVX2 (its docs advise 7-bit weights, reduce_range) and oneDNN
//!   avoids with a compensation; 16-bit pairs are exact for any weights, with as many
//!   multiplies per product as vpmaddubsw followed by vpmaddwd.
//! - `reference`: plain loops, the tests' oracle.
const std = @import("std");
const builtin = @import("builtin");
const cpu_level = @import("../cpu_level.zig");

/// Columns per packed block (one zmm of i32 lanes).
pub const block_n = 16;
/// k values per i32 lane.
pub const group_k = 4;

/// k groups of a K-long row.
pub fn groups(k: usize) usize {
    return (k + group_k - 1) / group_k;
}

/// Column blocks of N columns.
pub fn blocks(n: usize) usize {
    return (n + block_n - 1) / block_n;
}

/// i32 elements of packed B for K × N.
pub fn packedLen(k: usize, n: usize) usize {
    return blocks(n) * groups(k) * block_n;
}

/// Packs B (s8 values held in i32, each in [-128, 127]) into `packed`. `transposed`: B is
/// [N, K] row-major (ONNX Conv weights, Gemm with transB); else [K, N]. Padding is zero.
pub fn packB(b: []const i32, k: usize, n: usize, transposed: bool, packed_b: []i32) void {
    std.debug.assert(b.len == k * n);
    std.debug.assert(packed_b.len == packedLen(k, n));
    const group_count = groups(k);
    for (0..blocks(n)) |block| {
        for (0..group_count) |group| {
            for (0..block_n) |lane| {
                const column = block * block_n + lane;
                var word: u32 = 0;
                for (0..group_k) |j| {
                    const row = group * group_k + j;
                    if (column >= n or row >= k) continue;
                    const value = if (transposed) b[column * k + row] else b[row * n + column];
                    std.debug.assert(value >= -128 and value <= 127);
                    const byte: u8 = @bitCast(@as(i8, @intCast(value)));
                    word |= @as(u32, byte) << @intCast(8 * j);
                }
                packed_b[(block * group_count + group) * block_n + lane] = @bitCast(word);
            }
        }
    }
}

/// One GEMM over rows [0, rows) of quantized A and column blocks [block_begin, block_end):
/// c[r * ldc + column] = Σ_k a[r * lda + k] · b[k, column] (raw sums; the op adds zero-point
/// corrections and scales). Each row is read as groups(k) · 4 bytes from r · lda (rows may overlap):
/// bytes past k meet zero weights, and `a` must have them (slack after the last row).
pub const Args = struct {
    rows: usize,
    k: usize,
    a: []const u8,
    lda: usize,
    packed_b: []const i32,
    block_begin: usize,
    block_end: usize,
    c: []i32,
    ldc: usize,
    /// Groups from one column block of packed_b to the next: groups(k) (0 says so), or more
    /// when packed_b holds a longer K of which this call multiplies the first groups(k)
    /// (a convolution's kernel rows, one call each).
    b_groups: usize = 0,
    /// Add the sums to c instead of storing them.
    accumulate: bool = false,
    /// Columns of C from here on are not read by the caller (0: every column of the blocks).
    /// The AVX2 kernel skips a block's upper 8 columns when they all lie past it (det's 24
    /// output channels fill a block and a half) and stores zeros there instead.
    column_end: usize = 0,

    pub fn blockGroups(args: *const Args) usize {
        return if (args.b_groups == 0) groups(args.k) else args.b_groups;
    }

    fn check(args: *const Args) void {
        std.debug.assert(args.b_groups == 0 or args.b_groups >= groups(args.k));
        std.debug.assert(args.block_end == 0 or args.packed_b.len >= ((args.block_end - 1) * args.blockGroups() + groups(args.k)) * block_n);
        // Rows may overlap (lda < k): a convolution's pixels read each other's bytes.
        std.debug.assert(args.lda > 0 or args.rows <= 1);
        std.debug.assert(args.rows == 0 or args.a.len >= (args.rows - 1) * args.lda + groups(args.k) * group_k);
        std.debug.assert(args.block_end * block_n <= args.ldc or args.rows <= 1);
        std.debug.assert(args.c.len >= args.rows * args.ldc or args.rows == 0);
    }
};

pub const Kernel = enum {
    reference,
    widened,
    vnni,
    /// AMX tiles (gemm_amx_int8.zig) on whole 16-row tiles when K spans at least one 64-byte
    /// tile row, VNNI on the rest (a shorter K loads tiles mostly empty).
    amx,

    /// The fastest kernel this process's CPU runs (the test hook `forced` overrides it).
    pub fn pick() Kernel {
        if (forced) |kernel| return kernel;
        if (amx_int8.supported()) return .amx;
        return if (vnniSupported()) .vnni else .widened;
    }

    pub fn run(kernel: Kernel, args: *const Args) void {
        args.check();
        switch (kernel) {
            .reference => reference(args),
            .widened => widened(args),
            .vnni => if (comptime has_avx512) tiled(.vnni, args) else widened(args),
            .amx => if (comptime amx_int8.compiled) runAmx(args) else Kernel.vnni.run(args),
        }
    }
};

const amx_int8 = @import("gemm_amx_int8.zig");

fn runAmx(args: *const Args) void {
    const done = if (args.k >= amx_min_k) amx_int8.run(args) else 0;
    if (done == args.rows) return;
    var rest = args.*;
    rest.rows = args.rows - done;
    rest.a = args.a[done * args.lda ..];
    rest.c = args.c[done * args.ldc ..];
    tiled(.vnni, &rest);
}

/// K below one tile row (64 bytes) runs on VNNI: its tiles would be mostly padding.
const amx_min_k = 64;

/// Tests and SPINDLE_INT8_KERNEL force a lower kernel here (ops/quantized.zig sets it).
pub var forced: ?Kernel = null;

/// Whether this copy of the library has AVX-512 registers: VNNI kernels (vpdpbusd on zmm)
/// exist only where it does; callers of `channelTile` check it at comptime.
pub const has_avx512 = builtin.cpu.arch == .x86_64 and std.Target.x86.featureSetHas(builtin.cpu.features, .avx512f) and
    std.Target.x86.featureSetHas(builtin.cpu.features, .avx512bw);

const vnni_detection = cpu_level.Once(detectVnni);

/// Whether this CPU has AVX512-VNNI (CPUID leaf 7 ECX bit 11); false in copies compiled
/// without AVX-512 (their registers cannot hold the operands).
pub fn vnniSupported() bool {
    if (comptime !has_avx512) return false;
    return vnni_detection.get();
}

fn detectVnni() bool {
    return cpu_level.cpuid(0, 0).eax >= 7 and cpu_level.cpuid(7, 0).ecx >> 11 & 1 == 1;
}

fn reference(args: *const Args) void {
    for (0..args.rows) |r| {
        for (args.block_begin * block_n..args.block_end * block_n) |column| {
            const block = column / block_n;
            const lane = column % block_n;
            var sum: i32 = if (args.accumulate) args.c[r * args.ldc + column] else 0;
            for (0..groups(args.k)) |group| {
                const word: u32 = @bitCast(args.packed_b[(block * args.blockGroups() + group) * block_n + lane]);
                for (0..group_k) |j| {
                    const weight: i8 = @bitCast(@as(u8, @truncate(word >> @intCast(8 * j))));
                    sum += @as(i32, args.a[r * args.lda + group * group_k + j]) * weight;
                }
            }
            args.c[r * args.ldc + column] = sum;
        }
    }
}

pub const V = @Vector(block_n, i32);
const blocks_max = 4;

/// Rows per micro tile for nb column blocks: VNNI keeps about 16 accumulators in flight
/// (vpdpbusd's latency times its two pipes needs more than the 8 that 4 rows × 2 blocks
/// gave det's 24- and 32-channel convolutions), within 32 zmm registers with the nb weight
/// vectors and a broadcast. The widened kernel keeps 4 rows: its AVX2 copy has 16 ymm
/// registers, and each V takes two.
fn rowsMax(comptime kind: Kernel, comptime nb: usize) usize {
    comptime std.debug.assert(nb >= 1 and nb <= blocks_max);
    if (kind != .vnni) return 4;
    return switch (nb) {
        1, 2 => 8,
        3 => 5,
        else => 4,
    };
}

/// Column blocks outside, rows inside: each run of up to blocks_max blocks takes the row
/// count its accumulators allow.
fn tiled(comptime kind: Kernel, args: *const Args) void {
    var block = args.block_begin;
    while (block < args.block_end) {
        const count = @min(blocks_max, args.block_end - block);
        switch (count) {
            inline 1...blocks_max => |nb| tiledRows(kind, nb, args, block),
            else => unreachable,
        }
        block += count;
    }
}

fn tiledRows(comptime kind: Kernel, comptime nb: usize, args: *const Args, block: usize) void {
    const mr_max = comptime rowsMax(kind, nb);
    var r: usize = 0;
    while (r < args.rows) : (r += mr_max) {
        switch (@min(mr_max, args.rows - r)) {
            inline 1...mr_max => |mr| micro(kind, mr, nb, args, r, block),
            else => unreachable,
        }
    }
}

/// mr rows × nb blocks of C, accumulated in registers over all of K.
inline fn micro(comptime kind: Kernel, comptime mr: usize, comptime nb: usize, args: *const Args, row: usize, block: usize) void {
    const zero: V = @splat(0);
    var acc: [mr][nb]V = @splat(@splat(zero));
    if (args.accumulate) inline for (0..mr) |i| inline for (0..nb) |j| {
        acc[i][j] = args.c[(row + i) * args.ldc + (block + j) * block_n ..][0..block_n].*;
    };
    const group_count = groups(args.k);
    const block_groups = args.blockGroups();
    for (0..group_count) |group| {
        var b: [nb]V = undefined;
        inline for (0..nb) |j| {
            const offset = ((block + j) * block_groups + group) * block_n;
            b[j] = args.packed_b[offset..][0..block_n].*;
        }
        inline for (0..mr) |i| {
            const bytes = args.a[(row + i) * args.lda + group * group_k ..][0..group_k];
            if (kind == .vnni) {
                const a: V = @splat(std.mem.readInt(i32, bytes, .little));
                inline for (0..nb) |j| acc[i][j] = dpbusd(acc[i][j], a, b[j]);
            } else {
                inline for (0..nb) |j| {
                    inline for (0..group_k) |byte| {
                        // Byte `byte` of each lane, sign-extended: (w << 24-8j) >> 24.
                        const weight = (b[j] << @splat(24 - 8 * byte)) >> @splat(24);
                        acc[i][j] += @as(V, @splat(@as(i32, bytes[byte]))) * weight;
                    }
                }
            }
        }
    }
    inline for (0..mr) |i| {
        inline for (0..nb) |j| {
            const column = (block + j) * block_n;
            args.c[(row + i) * args.ldc + column ..][0..block_n].* = acc[i][j];
        }
    }
}

/// The widened kernel: on AVX2, pairs of 16-bit products summed by vpmaddwd (`halves`);
/// elsewhere (SSE2, NEON, scalar) LLVM's code for `micro`.
fn widened(args: *const Args) void {
    if (comptime has_avx2) halves(args) else tiled(.widened, args);
}

/// Whether this copy of the library may use AVX2 instructions (the x86_64_v3 copy and up).
const has_avx2 = builtin.cpu.arch == .x86_64 and std.Target.x86.featureSetHas(builtin.cpu.features, .avx2);

const V8 = @Vector(8, i32);
const V16 = @Vector(16, i16);

/// Rows of the AVX2 micro tile for nh 8-column halves: 16 ymm registers hold nh · 2
/// sign-extended weight vectors, mr · nh accumulators, the two widened activation
/// broadcasts and a product.
fn halvesRows(comptime nh: usize) usize {
    return switch (nh) {
        1 => 6,
        2 => 4,
        else => unreachable,
    };
}

/// The AVX2 kernel over 8-column halves of packed B's 16-column blocks. Exact for any u8 and
/// s8: each i32 lane of a packed group holds one column's 4 weights w0…w3, which become two
/// vectors of 16-bit pairs, (w0, w2) and (w1, w3); the row's 4 bytes become (a0, a2) and
/// (a1, a3) zero-extended; two vpmaddwd then give a0·w0 + a2·w2 and a1·w1 + a3·w3, each
/// within i32. Half the multiply rate of vpmaddubsw, which saturates at i16.
fn halves(args: *const Args) void {
    const first = args.block_begin * 2;
    const all = args.block_end * 2;
    // Halves wholly past column_end are zeros (see Args.column_end).
    const end = if (args.column_end == 0) all else @max(first, @min(all, divCeil(args.column_end, 8)));
    var half = first;
    while (half < end) {
        const nh: usize = @min(2, end - half);
        switch (nh) {
            inline 1, 2 => |count| {
                const mr_max = comptime halvesRows(count);
                var r: usize = 0;
                while (r < args.rows) : (r += mr_max) {
                    switch (@min(mr_max, args.rows - r)) {
                        inline 1...mr_max => |mr| halvesTile(mr, count, args, r, half),
                        else => unreachable,
                    }
                }
            },
            else => unreachable,
        }
        half += nh;
    }
    for (end..all) |skipped| for (0..args.rows) |r| {
        args.c[r * args.ldc + skipped * 8 ..][0..8].* = @splat(0);
    };
}

fn divCeil(a: usize, b: usize) usize {
    return (a + b - 1) / b;
}

/// mr rows × nh halves (8 columns each, from half `half` on) of C over all of K.
inline fn halvesTile(comptime mr: usize, comptime nh: usize, args: *const Args, row: usize, half: usize) void {
    var acc: [mr][nh]V8 = @splat(@splat(@splat(0)));
    if (args.accumulate) inline for (0..mr) |i| inline for (0..nh) |j| {
        acc[i][j] = args.c[(row + i) * args.ldc + (half + j) * 8 ..][0..8].*;
    };
    const block_groups = args.blockGroups();
    var weights: [nh][*]const i32 = undefined;
    inline for (&weights, 0..) |*w, j| {
        const h = half + j;
        w.* = args.packed_b[h / 2 * block_groups * block_n + h % 2 * 8 ..].ptr;
    }
    var rows: [mr][*]const u8 = undefined;
    inline for (&rows, 0..) |*a, i| a.* = args.a[(row + i) * args.lda ..].ptr;
    const low_bytes: V8 = @splat(0x00ff00ff);
    for (0..groups(args.k)) |group| {
        var even: [nh]V8 = undefined;
        var odd: [nh]V8 = undefined;
        inline for (0..nh) |j| {
            const w: V16 = @bitCast(@as(V8, weights[j][group * block_n ..][0..8].*));
            // Bytes 0 and 2 of each lane sign-extended into its 16-bit halves, then bytes 1 and 3.
            even[j] = @bitCast((w << @splat(8)) >> @splat(8));
            odd[j] = @bitCast(w >> @splat(8));
        }
        inline for (0..mr) |i| {
            const word: V8 = @splat(std.mem.readInt(i32, rows[i][group * group_k ..][0..group_k], .little));
            const a_even = word & low_bytes;
            const a_odd: V8 = @bitCast(@as(@Vector(16, u16), @bitCast(word)) >> @splat(8));
            inline for (0..nh) |j| {
                acc[i][j] +%= maddwd(a_even, even[j]);
                acc[i][j] +%= maddwd(a_odd, odd[j]);
            }
        }
    }
    inline for (0..mr) |i| inline for (0..nh) |j| {
        args.c[(row + i) * args.ldc + (half + j) * 8 ..][0..8].* = acc[i][j];
    };
}

/// Σ of each lane's two 16-bit products (vpmaddwd on ymm; AVX2 copies only).
inline fn maddwd(a: V8, b: V8) V8 {
    return asm ("vpmaddwd %[b], %[a], %[result]"
        : [result] "=x" (-> V8),
        : [a] "x" (a),
          [b] "x" (b),
    );
}

/// The most pixel vectors and output channels of one `channelTile`: 16 accumulators, as the
/// row-major micro tiles keep in flight, with the 4 activation vectors and a broadcast.
pub const tile_vectors_max = 4;
pub const tile_channels_max = 4;

/// Activations with pixels in the lanes (conv2d_int8's direct paths): `a` holds rows of
/// `stride` pixels × 4 bytes, the byte j of pixel p in row g being channel 4g + j (a byte
/// interleave of 4 NCHW channel rows, no transpose). Channels past k meet zero weights.
/// With several `offsets` (a convolution's taps, K tap-major: k = tap · C + channel, C a
/// multiple of 4) there are groups(k) / taps rows, and tap t reads pixel p + offsets[t]
/// for output pixel p: the pixels are then positions in a padded image's rows, where a
/// stride-1 tap is a fixed shift.
pub const PixelArgs = struct {
    a: []const u8,
    /// Pixels per row of `a` (a multiple of 16: a tile loads whole vectors).
    stride: usize,
    k: usize,
    n: usize,
    packed_b: []const i32,
    /// Each tap's shift in pixels (one tap of shift 0 for a 1×1 convolution).
    offsets: []const usize = &.{0},

    fn check(args: *const PixelArgs, channel: usize, pixel: usize, comptime nr: usize, comptime pv: usize) void {
        const taps = args.offsets.len;
        std.debug.assert(taps >= 1 and groups(args.k) % taps == 0 and (taps == 1 or args.k % (taps * group_k) == 0));
        const shift_max = std.mem.max(usize, args.offsets);
        std.debug.assert(args.stride % block_n == 0 and pixel + shift_max + pv * block_n <= args.stride);
        std.debug.assert(channel + nr <= args.n and args.a.len >= groups(args.k) / taps * args.stride * group_k);
        std.debug.assert(args.packed_b.len >= packedLen(args.k, args.n));
    }
};

/// Output channels channel … channel + nr of pixels pixel … pixel + 16 · pv as VNNI sums:
/// result[j][v] lane i = Σ_t Σ_c a(c, pixel + offsets[t] + 16v + i) · b[t · C + c, channel + j].
/// vpdpbusd takes the pixels' 4 bytes as its u8 operand and channel j's 4 weights of the
/// group (one i32 of packed B) broadcast as its s8 operand, so the sums come out as rows of
/// NCHW output. Callers check `vnniSupported` first.
pub inline fn channelTile(comptime nr: usize, comptime pv: usize, comptime shifted: bool, args: *const PixelArgs, channel: usize, pixel: usize) [nr][pv]V {
    comptime std.debug.assert(nr >= 1 and nr <= tile_channels_max and pv >= 1 and pv <= tile_vectors_max);
    args.check(channel, pixel, nr, pv);
    std.debug.assert(shifted or args.offsets.len == 1 and args.offsets[0] == 0);
    const group_count = groups(args.k);
    var weights: [nr][*]const i32 = undefined;
    inline for (&weights, 0..) |*w, j| {
        const column = channel + j;
        w.* = args.packed_b[column / block_n * group_count * block_n + column % block_n ..].ptr;
    }
    var acc: [nr][pv]V = @splat(@splat(@splat(0)));
    // Comptime: one tap (1×1) keeps the plain loop; a runtime loop of one tap around it, with
    // a division for the groups per tap, made det's small 1×1 tiles 5-14% slower in an A/B.
    if (!shifted) {
        for (0..group_count) |group| groupStep(nr, pv, args, &weights, group, group * args.stride + pixel, &acc);
        return acc;
    }
    const tap_groups = group_count / args.offsets.len;
    for (args.offsets, 0..) |shift, tap| {
        for (0..tap_groups) |group| groupStep(nr, pv, args, &weights, tap * tap_groups + group, group * args.stride + pixel + shift, &acc);
    }
    return acc;
}

/// One group of channelTile: 4 bytes of pv pixel vectors from pixel `first` of `a`, times
/// each channel's weights of packed B's group `b_group`.
inline fn groupStep(comptime nr: usize, comptime pv: usize, args: *const PixelArgs, weights: *const [nr][*]const i32, b_group: usize, first: usize, acc: *[nr][pv]V) void {
    var a: [pv]V = undefined;
    inline for (&a, 0..) |*vector, v| {
        vector.* = @bitCast(args.a[(first + v * block_n) * group_k ..][0 .. block_n * group_k].*);
    }
    inline for (0..nr) |j| {
        const b: V = @splat(weights[j][b_group * block_n]);
        inline for (0..pv) |v| acc[j][v] = dpbusd(acc[j][v], a[v], b);
    }
}

/// acc + Σ_j a.byte(j) · b.byte(j) per i32 lane (u8 × s8), AVX512-VNNI's vpdpbusd. The
/// assembler takes it in any AVX-512 compilation; callers check `vnniSupported` first.
inline fn dpbusd(acc: V, a: V, b: V) V {
    var result = acc;
    asm ("vpdpbusd %[b], %[a], %[result]"
        : [result] "+v" (result),
        : [a] "v" (a),
          [b] "v" (b),
    );
    return result;
}

test "packB lays out 4 k per lane, 16 columns per block, zero padding" {
    // K = 5, N = 3, [K, N] row-major: b[k, n] = 10k + n (small enough for s8).
    var b: [15]i32 = undefined;
    for (0..5) |k| for (0..3) |n| {
        b[k * 3 + n] = @intCast(10 * k + n);
    };
    var packed_b: [packedLen(5, 3)]i32 = undefined;
    packB(&b, 5, 3, false, &packed_b);
    try std.testing.expectEqual(@as(usize, 2 * 16), packed_b.len);
    // Block 0, group 0, lane 1: k 0..3 of column 1 = 1, 11, 21, 31.
    try std.testing.expectEqual(@as(u32, 1 | 11 << 8 | 21 << 16 | 31 << 24), @as(u32, @bitCast(packed_b[1])));
    // Group 1, lane 2: k = 4 (42), then padding.
    try std.testing.expectEqual(@as(i32, 42), packed_b[16 + 2]);
    try std.testing.expectEqual(@as(i32, 0), packed_b[16 + 3]);
    // The transposed layout packs the same.
    var bt: [15]i32 = undefined;
    for (0..5) |k| for (0..3) |n| {
        bt[n * 5 + k] = b[k * 3 + n];
    };
    var packed_t: [packedLen(5, 3)]i32 = undefined;
    packB(&bt, 5, 3, true, &packed_t);
    try std.testing.expectEqualSlices(i32, &packed_b, &packed_t);
}

/// Random s8 weights [K, N] (often -128, the extreme), packed, and a C of `rows` rows.
const TestOperands = struct {
    b: []i32,
    packed_b: []i32,
    c: []i32,
    ldc: usize,

    fn init(random: std.Random, rows: usize, k: usize, n: usize) !TestOperands {
        const allocator = std.testing.allocator;
        const b = try allocator.alloc(i32, k * n);
        errdefer allocator.free(b);
        for (b) |*value| value.* = if (random.boolean()) -128 else random.intRangeAtMost(i32, -128, 127);
        const packed_b = try allocator.alloc(i32, packedLen(k, n));
        errdefer allocator.free(packed_b);
        packB(b, k, n, false, packed_b);
        const ldc = blocks(n) * block_n;
        return .{ .b = b, .packed_b = packed_b, .c = try allocator.alloc(i32, rows * ldc), .ldc = ldc };
    }

    fn deinit(operands: TestOperands) void {
        std.testing.allocator.free(operands.b);
        std.testing.allocator.free(operands.packed_b);
        std.testing.allocator.free(operands.c);
    }
};

fn checkKernel(kernel: Kernel, rows: usize, k: usize, n: usize, seed: u64) !void {
    const allocator = std.testing.allocator;
    var prng = std.Random.DefaultPrng.init(seed);
    const random = prng.random();
    const lda = groups(k) * group_k;
    const a = try allocator.alloc(u8, rows * lda);
    defer allocator.free(a);
    @memset(a, 0);
    for (0..rows) |r| for (0..k) |i| {
        // Extremes often: 255 × -128 is the product that saturates vpmaddubsw.
        a[r * lda + i] = if (random.boolean()) 255 else random.int(u8);
    };
    const operands = try TestOperands.init(random, rows, k, n);
    defer operands.deinit();
    const b, const packed_b, const c, const ldc = .{ operands.b, operands.packed_b, operands.c, operands.ldc };
    const args: Args = .{ .rows = rows, .k = k, .a = a, .lda = lda, .packed_b = packed_b, .block_begin = 0, .block_end = blocks(n), .c = c, .ldc = ldc, .column_end = n };
    kernel.run(&args);
    for (0..rows) |r| for (0..n) |column| {
        var expected: i32 = 0;
        for (0..k) |i| expected += @as(i32, a[r * lda + i]) * b[i * n + column];
        try std.testing.expectEqual(expected, c[r * ldc + column]);
    };
}

test "int8 GEMM kernels match plain sums on awkward shapes, extremes included" {
    const shapes = [_][3]usize{ .{ 1, 1, 1 }, .{ 3, 7, 5 }, .{ 4, 64, 16 }, .{ 5, 129, 67 }, .{ 9, 301, 17 }, .{ 13, 33, 130 } };
    for (shapes, 0..) |shape, seed| {
        try checkKernel(.reference, shape[0], shape[1], shape[2], seed);
        try checkKernel(.widened, shape[0], shape[1], shape[2], seed);
        if (vnniSupported()) try checkKernel(.vnni, shape[0], shape[1], shape[2], seed);
    }
}

test "int8 GEMM kernels match plain sums for every micro tile: 1 to 4 column blocks, row counts around each tile height" {
    // VNNI tiles are 8 rows for 1-2 blocks, 5 for 3, 4 for 4: rows just below, at and past
    // each height (and two tiles plus a tail), on 1-5 blocks with a partial last block.
    const row_counts = [_]usize{ 1, 4, 5, 7, 8, 9, 11, 17 };
    const column_counts = [_]usize{ 9, 32, 41, 64, 77 };
    for (row_counts, 0..) |rows, i| for (column_counts, 0..) |n, j| {
        const seed = 300 + i * column_counts.len + j;
        try checkKernel(.widened, rows, 27, n, seed);
        if (vnniSupported()) try checkKernel(.vnni, rows, 27, n, seed);
    };
}

/// A convolution's three kernel rows as three calls over one packed K of 3 · segment:
/// overlapping rows of A (lda below the segment), b_groups past the segment, accumulate.
fn checkSegments(kernel: Kernel, rows: usize, segment: usize, lda: usize, n: usize, seed: u64) !void {
    const allocator = std.testing.allocator;
    var prng = std.Random.DefaultPrng.init(seed);
    const random = prng.random();
    std.debug.assert(segment % group_k == 0);
    const k = 3 * segment;
    const row_step = rows * lda + segment;
    const image = try allocator.alloc(u8, 3 * row_step);
    defer allocator.free(image);
    for (image) |*byte| byte.* = if (random.boolean()) 255 else random.int(u8);
    const operands = try TestOperands.init(random, rows, k, n);
    defer operands.deinit();
    const b, const packed_b, const c, const ldc = .{ operands.b, operands.packed_b, operands.c, operands.ldc };
    for (0..3) |s| {
        const args: Args = .{
            .rows = rows,
            .k = segment,
            .a = image[s * row_step ..],
            .lda = lda,
            .packed_b = packed_b[s * groups(segment) * block_n ..],
            .block_begin = 0,
            .block_end = blocks(n),
            .c = c,
            .ldc = ldc,
            .b_groups = groups(k),
            .accumulate = s > 0,
        };
        kernel.run(&args);
    }
    for (0..rows) |r| for (0..n) |column| {
        var expected: i32 = 0;
        for (0..3) |s| for (0..segment) |i| {
            expected += @as(i32, image[s * row_step + r * lda + i]) * b[(s * segment + i) * n + column];
        };
        try std.testing.expectEqual(expected, c[r * ldc + column]);
    };
}

test "int8 GEMM kernels sum a convolution's kernel rows: overlapping rows, a block stride past K, accumulation" {
    // Segments of 288 (det's 3 × 96 channels: AMX tiles and a tail), 12 and 100; lda of one
    // or two pixels; rows past 16 (AMX then VNNI); 24 and 40 columns.
    const shapes = [_][4]usize{ .{ 32, 288, 96, 24 }, .{ 21, 12, 4, 40 }, .{ 16, 100, 50, 17 }, .{ 5, 288, 192, 24 } };
    for (shapes, 0..) |shape, seed| {
        try checkSegments(.reference, shape[0], shape[1], shape[2], shape[3], seed + 200);
        try checkSegments(.widened, shape[0], shape[1], shape[2], shape[3], seed + 200);
        if (vnniSupported()) try checkSegments(.vnni, shape[0], shape[1], shape[2], shape[3], seed + 200);
        if (amx_int8.supported()) try checkSegments(.amx, shape[0], shape[1], shape[2], shape[3], seed + 200);
    }
}

test "the AMX int8 kernel matches plain sums: K tails, rows past the last full tile, odd blocks" {
    if (!amx_int8.supported()) return error.SkipZigTest;
    // K = 64 (one tile row), 100 (a tail of 9 groups), 864 (det's 3×3 over 96 channels: 13
    // full tiles and a tail of 8 groups), 1024 (no tail), 37 (VNNI only); rows 16, 35, 64;
    // 1, 3 and 4 column blocks.
    const shapes = [_][3]usize{ .{ 16, 64, 16 }, .{ 35, 100, 40 }, .{ 64, 864, 24 }, .{ 33, 1024, 64 }, .{ 17, 37, 5 } };
    for (shapes, 0..) |shape, seed| try checkKernel(.amx, shape[0], shape[1], shape[2], seed + 100);
}

test "int8 GEMM channelTile (pixels in lanes) matches plain sums: every tile shape, K tails, channels past a block" {
    // Comptime first: without AVX-512 registers channelTile's vpdpbusd cannot be compiled.
    if (comptime !has_avx512) return error.SkipZigTest;
    if (!vnniSupported()) return error.SkipZigTest;
    const allocator = std.testing.allocator;
    var prng = std.Random.DefaultPrng.init(400);
    const random = prng.random();
    // K of 1 and 3 (one partial group), 32 and 37 (a tail); N of 5 and 21 (tiles crossing a
    // 16-column block); 80 pixels per row (5 vectors: every pv at offsets 0 and 16).
    for ([_]usize{ 1, 3, 32, 37 }) |k| for ([_]usize{ 5, 21 }) |n| {
        const stride = 80;
        const a = try allocator.alloc(u8, groups(k) * stride * group_k);
        defer allocator.free(a);
        for (a) |*byte| byte.* = if (random.boolean()) 255 else random.int(u8);
        const operands = try TestOperands.init(random, 0, k, n);
        defer operands.deinit();
        const args: PixelArgs = .{ .a = a, .stride = stride, .k = k, .n = n, .packed_b = operands.packed_b };
        inline for (1..tile_channels_max + 1) |nr| inline for (1..tile_vectors_max + 1) |pv| {
            var channel: usize = 0;
            while (channel + nr <= n) : (channel += 3) for ([_]usize{ 0, block_n }) |pixel| {
                const sums = channelTile(nr, pv, false, &args, channel, pixel);
                for (0..nr) |j| for (0..pv * block_n) |i| {
                    const p = pixel + i;
                    var expected: i32 = 0;
                    for (0..k) |c| expected += @as(i32, a[(c / group_k * stride + p) * group_k + c % group_k]) * operands.b[c * n + channel + j];
                    const lanes_of: [pv * block_n]i32 = @bitCast(sums[j]);
                    try std.testing.expectEqual(expected, lanes_of[i]);
                };
            };
        };
    };
}

test "int8 GEMM channelTile with tap offsets matches plain sums: 3 × 3 and 1 × 3 taps, odd pitches" {
    if (comptime !has_avx512) return error.SkipZigTest;
    if (!vnniSupported()) return error.SkipZigTest;
    const allocator = std.testing.allocator;
    var prng = std.Random.DefaultPrng.init(401);
    const random = prng.random();
    // Channels 4, 8 and 12 per tap; pitches 7 (several rows in one vector) and 19; 3 × 3
    // taps (shifts up to 2 · pitch + 2) and 1 × 3 taps; N of 5 and 21.
    for ([_]usize{ 4, 8, 12 }) |channels| for ([_]usize{ 7, 19 }) |pitch| for ([_]usize{ 3, 1 }) |kh| for ([_]usize{ 5, 21 }) |n| {
        var offsets: [9]usize = undefined;
        for (0..kh) |ky| for (0..3) |kx| {
            offsets[ky * 3 + kx] = ky * pitch + kx;
        };
        const taps = kh * 3;
        const k = taps * channels;
        const stride = 96 + 48;
        const a = try allocator.alloc(u8, channels / group_k * stride * group_k);
        defer allocator.free(a);
        for (a) |*byte| byte.* = if (random.boolean()) 255 else random.int(u8);
        const operands = try TestOperands.init(random, 0, k, n);
        defer operands.deinit();
        const args: PixelArgs = .{ .a = a, .stride = stride, .k = k, .n = n, .packed_b = operands.packed_b, .offsets = offsets[0..taps] };
        inline for (1..tile_channels_max + 1) |nr| inline for (1..tile_vectors_max + 1) |pv| {
            var channel: usize = 0;
            while (channel + nr <= n) : (channel += 3) for ([_]usize{ 0, 3, 32 }) |pixel| {
                const sums = channelTile(nr, pv, true, &args, channel, pixel);
                for (0..nr) |j| for (0..pv * block_n) |i| {
                    var expected: i32 = 0;
                    for (0..taps) |t| for (0..channels) |c| {
                        const p = pixel + i + offsets[t];
                        expected += @as(i32, a[(c / group_k * stride + p) * group_k + c % group_k]) * operands.b[(t * channels + c) * n + channel + j];
                    };
                    const lanes_of: [pv * block_n]i32 = @bitCast(sums[j]);
                    try std.testing.expectEqual(expected, lanes_of[i]);
                };
            };
        };
    };
}
