//! The op layer's parallel-split policy: how much work makes a chunk worth a thread, and how
//! many threads an op plans for. Every op under ops/ takes its grain and thread count from
//! here, so each choice is made (and measured, bench/native/kernels_bench.zig) in one place.
//!
//! The pool (pool/intra_op.zig) owns the mechanics: a range of n items with grain g runs in
//! at most min(threads, ceil(n / g)) chunks, and serially when n <= g, when one thread is
//! set, or inside another region. This file only chooses g, in units of work: an op whose
//! items cost w units of some kind of work asks for grain(kind, w) items per chunk.
const std = @import("std");
const settings = @import("../settings.zig");
const status = @import("../status.zig");
const intra_op = @import("../pool/intra_op.zig");

/// Kinds of work, from the cheapest per unit to the dearest. A chunk should hold
/// `unitsPerChunk()` units: below that, waking a thread and joining it cost more than the
/// chunk saves.
pub const Work = enum {
    /// Moving elements: strided copies (contiguous(), expand).
    copy,
    /// Moving bytes whatever the dtype (concat): as many bytes as a float32 copy chunk.
    copy_bytes,
    /// One cheap arithmetic operation per element of a contiguous loop: add, mul, relu, the
    /// affine of batch norm. Memory-bound, so chunks are large.
    light,
    /// An element that costs index arithmetic, a multiply-add or a window of taps: gathers
    /// (embedding, take), where/compare/cast, reductions, pooling and depthwise rows.
    medium,
    /// Several passes per element: layer norm (mean, variance, normalise).
    heavy,
    /// A transcendental per element (exp, tanh, erf, pow; softmax): threads pay off earliest.
    transcendental,

    pub fn unitsPerChunk(work: Work) usize {
        return switch (work) {
            .copy => 64 * 1024,
            .copy_bytes => 64 * 1024 * @sizeOf(f32),
            .light => 32 * 1024,
            .medium => 16 * 1024,
            .heavy => 8 * 1024,
            .transcendental => 4 * 1024,
        };
    }
};

/// The grain of a loop whose items each cost `units_per_item` units of `work`: items per
/// chunk, at least one.
pub fn grain(work: Work, units_per_item: usize) usize {
    return @max(1, work.unitsPerChunk() / @max(units_per_item, 1));
}

/// The grain of resize's output elements: whole planes where there are at least eight of
/// them, so that a chunk builds its index tables once and copies repeated rows within
/// itself; never below a transcendental chunk (an output interpolates several inputs).
pub fn resizeGrain(plane_elements: usize, output_elements: usize) usize {
    return @max(Work.transcendental.unitsPerChunk(), @min(plane_elements, output_elements / 8));
}

/// Threads an op plans its own split for (GEMM tiles, partial results): the intra-op
/// setting, or 1 inside a parallel region, where a nested region runs serially anyway.
pub fn threads() usize {
    return if (intra_op.inParallelRegion()) 1 else settings.getNumThreads();
}

/// Below this many flops (64 K multiply-adds) a GEMM-shaped op runs on one thread: the
/// fork-join costs more than tiling saves.
pub const gemm_flops_min: usize = 1 << 17;

/// Threads for a GEMM-shaped op of `flops` (matmul, conv): 1 below gemm_flops_min, else
/// threads().
pub fn threadsForFlops(flops: usize) usize {
    return if (flops < gemm_flops_min) 1 else threads();
}

/// Below this many flops per time step (H·Rᵀ), a recurrent layer's steps are too short to
/// split over threads: a fork-join per step costs more than it saves (bench/recurrent_bench.ts:
/// LSTM hidden 128 at batch 8, 1 M flops a step, ran slower on 2 threads than on 1).
/// Bidirectional layers then run their two directions side by side instead.
pub const recurrent_step_flops_min: usize = 1 << 23;

test "grains are the work per chunk over the work per item, at least one item" {
    try std.testing.expectEqual(@as(usize, 16 * 1024), grain(.medium, 1));
    try std.testing.expectEqual(@as(usize, 16 * 1024), grain(.medium, 0));
    try std.testing.expectEqual(@as(usize, 128), grain(.medium, 128));
    try std.testing.expectEqual(@as(usize, 1), grain(.medium, 1 << 20));
    try std.testing.expectEqual(@as(usize, 256 * 1024 / 6), grain(.copy_bytes, 6));
    try std.testing.expectEqual(@as(usize, 4096), resizeGrain(16, 1 << 20));
    try std.testing.expectEqual(@as(usize, 1 << 14), resizeGrain(1 << 14, 1 << 20));
    try std.testing.expectEqual(@as(usize, 1 << 14), resizeGrain(1 << 20, 1 << 17));
}

test "small or nested GEMMs plan for one thread" {
    settings.resetForTesting();
    defer settings.resetForTesting();
    try settings.setNumThreads(3);
    try std.testing.expectEqual(@as(usize, 1), threadsForFlops(gemm_flops_min - 1));
    try std.testing.expectEqual(@as(usize, 3), threadsForFlops(gemm_flops_min));
    const Nested = struct {
        fn body(seen: *std.atomic.Value(usize), _: usize, _: usize) status.Error!void {
            // Monotonic: read after the region's join.
            seen.store(threadsForFlops(gemm_flops_min), .monotonic);
        }
    };
    var seen: std.atomic.Value(usize) = .init(0);
    try intra_op.parallelForTyped(0, 1, 1, &seen, Nested.body);
    try std.testing.expectEqual(@as(usize, 1), seen.load(.monotonic));
}
