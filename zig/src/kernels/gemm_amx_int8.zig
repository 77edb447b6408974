//! AMX int8 GEMM (`tdpbusd`: u8 × s8 tiles summed into i32) over gemm_int8.zig's layouts, so
//! the op layer packs nothing new: 16 groups of one packed B block (16 columns × 4 k each, 64
//! bytes a group) are one 16-row B tile, and 64 bytes of 16 A rows are one A tile. K's last
//! groups (fewer than 16) run through a second pair of tiles configured that short. Rows
//! beyond the last full 16 are left to the caller (gemm_int8's VNNI kernel): an A tile reads
//! 16 whole rows.
const std = @import("std");
const gemm_int8 = @import("gemm_int8.zig");
const amx = @import("gemm_amx.zig");
const bf16 = @import("gemm_bf16.zig");
const cpu_level = @import("../cpu_level.zig");

const assert = std.debug.assert;
const tile = 16;
/// Bytes of one tile row: 16 groups of 4 k (A), 16 columns of 4 bytes (B), 16 i32 (C).
const row_bytes = 64;

/// Whether this compilation holds the kernel (x86-64 Linux builds with AVX-512).
pub const compiled = amx.compiled;

const detection = cpu_level.Once(detect);

/// Whether this process runs the kernel: compiled in, CPUID leaf 7 EDX reports AMX-TILE (bit
/// 24) and AMX-INT8 (bit 25), no lower CPU level is forced, and Linux granted the tile state.
pub fn supported() bool {
    if (comptime !compiled) return false;
    return detection.get();
}

fn detect() bool {
    if (bf16.forcedLower()) return false;
    if (cpu_level.cpuid(0, 0).eax < 7) return false;
    const edx = cpu_level.cpuid(7, 0).edx;
    if (edx >> 24 & 1 == 0 or edx >> 25 & 1 == 0) return false;
    return amx.requestTileData();
}

/// Palette 1: tmm0, tmm1 C of two column blocks; tmm2 A; tmm3, tmm6 B of the two blocks;
/// tmm4 the A tail (16 rows of `tail` groups), tmm5, tmm7 the B tails (`tail` rows).
const TileConfig = extern struct {
    palette: u8 = 1,
    start_row: u8 = 0,
    reserved: [14]u8 = @splat(0),
    bytes_per_row: [16]u16 = @splat(0),
    rows: [16]u8 = @splat(0),

    fn of(tail_groups: usize) TileConfig {
        assert(tail_groups < tile);
        var config: TileConfig = .{};
        for ([_]usize{ 0, 1, 2, 3, 6 }) |t| {
            config.bytes_per_row[t] = row_bytes;
            config.rows[t] = tile;
        }
        if (tail_groups > 0) {
            config.bytes_per_row[4] = @intCast(tail_groups * gemm_int8.group_k);
            config.rows[4] = tile;
            for ([_]usize{ 5, 7 }) |t| {
                config.bytes_per_row[t] = row_bytes;
                config.rows[t] = @intCast(tail_groups);
            }
        }
        return config;
    }
};
comptime {
    assert(@sizeOf(TileConfig) == 64);
}

/// Computes rows [0, rows - rows % 16) of `args` (gemm_int8.Args: raw sums into c) and
/// returns how many; `supported()` must be true.
pub fn run(args: *const gemm_int8.Args) usize {
    if (comptime !compiled) unreachable;
    const full_rows = args.rows / tile * tile;
    if (full_rows == 0 or args.block_begin == args.block_end) return 0;
    const group_count = gemm_int8.groups(args.k);
    const config: TileConfig align(64) = .of(group_count % tile);
    asm volatile ("ldtilecfg (%[config])"
        :
        : [config] "r" (&config),
        : .{ .memory = true });
    // Pairs with the ldtilecfg above: the tiles are free again before any other code runs.
    defer asm volatile ("tilerelease" ::: .{ .memory = true });
    var row: usize = 0;
    while (row < full_rows) : (row += tile) {
        var block = args.block_begin;
        while (block < args.block_end) {
            const count: usize = if (block + 1 < args.block_end) 2 else 1;
            switch (count) {
                inline 1, 2 => |blocks| tileBlocks(blocks, args, row, block, group_count),
                else => unreachable,
            }
            block += count;
        }
    }
    return full_rows;
}

/// 16 rows × `blocks` column blocks of C, summed over all of K in tiles.
fn tileBlocks(comptime blocks: usize, args: *const gemm_int8.Args, row: usize, block: usize, group_count: usize) void {
    // Each tile load stays inside its operand: A rows row..row+15 read groups · 4 bytes, the
    // B blocks group_count · 16 words each (Args.check bounds A; C and B are checked here).
    const block_groups = args.blockGroups();
    assert(((block + blocks - 1) * block_groups + group_count) * gemm_int8.block_n <= args.packed_b.len);
    assert((row + tile - 1) * args.ldc + (block + blocks) * gemm_int8.block_n <= args.c.len);
    const a_stride = args.lda;
    const b_stride: usize = row_bytes;
    const a_rows: [*]const u8 = args.a[row * args.lda ..].ptr;
    const b_words = args.packed_b.ptr;
    const b0: [*]const i32 = b_words + block * block_groups * gemm_int8.block_n;
    const b1: [*]const i32 = b0 + block_groups * gemm_int8.block_n;
    const c0: [*]i32 = args.c[row * args.ldc + block * gemm_int8.block_n ..].ptr;
    const c_stride = args.ldc * @sizeOf(i32);
    if (args.accumulate) {
        asm volatile ("tileloadd (%[c], %[sc], 1), %%tmm0"
            :
            : [c] "r" (c0),
              [sc] "r" (c_stride),
            : .{ .memory = true });
        if (blocks == 2) {
            asm volatile ("tileloadd (%[c], %[sc], 1), %%tmm1"
                :
                : [c] "r" (c0 + gemm_int8.block_n),
                  [sc] "r" (c_stride),
                : .{ .memory = true });
        }
    } else {
        asm volatile (
            \\tilezero %%tmm0
            \\tilezero %%tmm1
            ::: .{ .memory = true });
    }
    const chunks = group_count / tile;
    for (0..chunks) |chunk| {
        const offset = chunk * tile * gemm_int8.block_n;
        multiply(blocks, false, a_rows + chunk * row_bytes, b0 + offset, b1 + offset, a_stride, b_stride);
    }
    if (group_count % tile != 0) {
        const offset = chunks * tile * gemm_int8.block_n;
        multiply(blocks, true, a_rows + chunks * row_bytes, b0 + offset, b1 + offset, a_stride, b_stride);
    }
    asm volatile ("tilestored %%tmm0, (%[c], %[sc], 1)"
        :
        : [c] "r" (c0),
          [sc] "r" (c_stride),
        : .{ .memory = true });
    if (blocks == 2) {
        asm volatile ("tilestored %%tmm1, (%[c], %[sc], 1)"
            :
            : [c] "r" (c0 + gemm_int8.block_n),
              [sc] "r" (c_stride),
            : .{ .memory = true });
    }
}

/// One step of 16 groups (or the K tail, in the tiles configured that short) of 16 rows ×
/// `blocks` column blocks: A in tmm2 (tail tmm4), the B blocks in tmm3, tmm6 (tail tmm5,
/// tmm7), summed into tmm0, tmm1. b1 is read only when `blocks` is 2. The caller checks the
/// bounds.
inline fn multiply(comptime blocks: usize, comptime tail: bool, a: [*]const u8, b0: [*]const i32, b1: [*]const i32, a_stride: usize, b_stride: usize) void {
    const a_tile, const b0_tile, const b1_tile = if (tail) .{ "4", "5", "7" } else .{ "2", "3", "6" };
    const loads = "tileloadd (%[a], %[sa], 1), %%tmm" ++ a_tile ++ "\n" ++
        "tileloadd (%[b0], %[sb], 1), %%tmm" ++ b0_tile ++ "\n";
    const first = "tdpbusd %%tmm" ++ b0_tile ++ ", %%tmm" ++ a_tile ++ ", %%tmm0";
    const code = if (blocks == 2)
        loads ++ "tileloadd (%[b1], %[sb], 1), %%tmm" ++ b1_tile ++ "\n" ++ first ++ "\n" ++
            "tdpbusd %%tmm" ++ b1_tile ++ ", %%tmm" ++ a_tile ++ ", %%tmm1"
    else
        loads ++ first;
    asm volatile (code
        :
        : [a] "r" (a),
          [b0] "r" (b0),
          [b1] "r" (b1),
          [sa] "r" (a_stride),
          [sb] "r" (b_stride),
        : .{ .memory = true });
}
