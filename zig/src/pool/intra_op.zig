//! Intra-op parallelism: parallel_for and parallel_reduce (threading spec §2).
//!
//! This file owns the rules every backend shares: when a region runs serially, how a range
//! is split into contiguous chunks, how errors are reported. The backend, chosen at build
//! time with -Dthreading, only runs `chunk_count` chunks and joins them.
const std = @import("std");
const build_options = @import("build_options");
const settings = @import("../settings.zig");
const status = @import("../status.zig");

const Error = status.Error;

/// A chunk body: runs the half-open range [begin, end) of the caller's iteration space.
pub const Body = *const fn (context: *const anyopaque, begin: usize, end: usize) Error!void;

/// True on any thread while it runs a chunk of a parallel region (including the caller's
/// own chunk). Nested regions see it and run serially.
threadlocal var in_region: bool = false;

pub fn inParallelRegion() bool {
    return in_region;
}

pub const backend_name: []const u8 = switch (build_options.threading) {
    .omp => "omp",
    .tbb => "tbb",
};

/// How a range splits: `count` contiguous chunks of `size` elements, the last one shorter.
pub const Split = struct {
    count: usize,
    size: usize,

    pub fn of(n: usize, grain: usize, threads: usize) Split {
        std.debug.assert(n > 0);
        std.debug.assert(threads > 1);
        const grain_nonzero = @max(grain, 1);
        const by_grain = std.math.divCeil(usize, n, grain_nonzero) catch unreachable;
        const wanted = @min(threads, by_grain);
        const size = std.math.divCeil(usize, n, wanted) catch unreachable;
        // Rounding the size up can leave trailing chunks empty: recount.
        const count = std.math.divCeil(usize, n, size) catch unreachable;
        return .{ .count = count, .size = size };
    }
};

/// Decides whether [begin, end) runs serially on the caller, per the spec's rules.
fn runsSerially(n: usize, grain: usize, threads: usize) bool {
    return n <= 1 or n <= grain or threads <= 1 or in_region;
}

/// Runs body over [begin, end) split into at most min(threads, ceil(n / grain)) chunks. The
/// caller runs one chunk; every chunk runs even when one fails; the first error is returned
/// after the join.
pub fn parallelFor(begin: usize, end: usize, grain: usize, context: *const anyopaque, body: Body) Error!void {
    if (end <= begin) return;
    const n = end - begin;
    const threads: usize = settings.getNumThreads();
    if (runsSerially(n, grain, threads)) {
        const was_in_region = in_region;
        in_region = true;
        defer in_region = was_in_region;
        return body(context, begin, end);
    }
    const split = Split.of(n, grain, threads);
    return backend.run(.{
        .begin = begin,
        .end = end,
        .split = split,
        .context = context,
        .body = body,
    });
}

/// Typed convenience over parallelFor: `context` is a pointer, `body` takes it back typed.
pub fn parallelForTyped(
    begin: usize,
    end: usize,
    grain: usize,
    context: anytype,
    comptime body: fn (@TypeOf(context), usize, usize) Error!void,
) Error!void {
    const Context = @TypeOf(context);
    comptime std.debug.assert(@typeInfo(Context) == .pointer);
    const Erased = struct {
        fn call(erased: *const anyopaque, chunk_begin: usize, chunk_end: usize) Error!void {
            const typed: Context = @ptrCast(@alignCast(@constCast(erased)));
            return body(typed, chunk_begin, chunk_end);
        }
    };
    return parallelFor(begin, end, grain, @ptrCast(context), Erased.call);
}

/// One region handed to the backend.
pub const Region = struct {
    begin: usize,
    end: usize,
    split: Split,
    context: *const anyopaque,
    body: Body,

    /// Runs chunk `index` with the nested-region flag set; returns its error, if any.
    pub fn runChunk(region: *const Region, index: usize) Error!void {
        std.debug.assert(index < region.split.count);
        const chunk_begin = region.begin + index * region.split.size;
        const chunk_end = @min(region.end, chunk_begin + region.split.size);
        std.debug.assert(chunk_begin < chunk_end);
        const was_in_region = in_region;
        in_region = true;
        defer in_region = was_in_region;
        return region.body(region.context, chunk_begin, chunk_end);
    }
};

/// Interim backend: a fixed std.Thread.Pool. Replaced by the omp and tbb backends.
const backend = struct {
    var pool: std.Thread.Pool = undefined;
    var pool_once = std.once(initPool);
    var pool_ok = false;

    fn initPool() void {
        pool.init(.{ .allocator = std.heap.c_allocator, .n_jobs = settings.max_threads / 64 }) catch return;
        pool_ok = true;
    }

    const ErrorSlot = struct {
        mutex: std.Thread.Mutex = .{},
        first: ?Error = null,

        fn record(slot: *ErrorSlot, err: Error) void {
            slot.mutex.lock();
            defer slot.mutex.unlock();
            if (slot.first == null) slot.first = err;
        }
    };

    fn worker(region: *const Region, index: usize, slot: *ErrorSlot) void {
        region.runChunk(index) catch |err| slot.record(err);
    }

    fn run(region: Region) Error!void {
        pool_once.call();
        var slot: ErrorSlot = .{};
        if (!pool_ok) {
            for (0..region.split.count) |index| region.runChunk(index) catch |err| slot.record(err);
            return if (slot.first) |err| err else {};
        }
        var wait_group: std.Thread.WaitGroup = .{};
        for (1..region.split.count) |index| pool.spawnWg(&wait_group, worker, .{ &region, index, &slot });
        region.runChunk(0) catch |err| slot.record(err);
        wait_group.wait();
        return if (slot.first) |err| err else {};
    }
};

test "Split respects grain and thread count" {
    const a = Split.of(100, 10, 4);
    try std.testing.expectEqual(@as(usize, 4), a.count);
    try std.testing.expectEqual(@as(usize, 25), a.size);
    const b = Split.of(100, 60, 4);
    try std.testing.expectEqual(@as(usize, 2), b.count);
    const c = Split.of(5, 1, 4);
    try std.testing.expectEqual(@as(usize, 3), c.count); // sizes 2, 2, 1
    try std.testing.expectEqual(@as(usize, 2), c.size);
}

test "parallelFor covers every index exactly once and reports the first error" {
    settings.resetForTesting();
    defer settings.resetForTesting();
    try settings.setNumThreads(2);
    const Context = struct {
        hits: []std.atomic.Value(u32),
        fail_at: usize,
        fn body(context: *const @This(), begin: usize, end: usize) Error!void {
            for (begin..end) |i| _ = context.hits[i].fetchAdd(1, .monotonic);
            if (context.fail_at >= begin and context.fail_at < end) return error.IndexOutOfRange;
        }
    };
    var hits: [97]std.atomic.Value(u32) = undefined;
    for (&hits) |*h| h.* = .init(0);
    const context: Context = .{ .hits = &hits, .fail_at = 90 };
    try std.testing.expectError(error.IndexOutOfRange, parallelForTyped(0, hits.len, 1, &context, Context.body));
    for (&hits) |*h| try std.testing.expectEqual(@as(u32, 1), h.load(.monotonic));
    try parallelForTyped(5, 5, 1, &context, Context.body); // empty: body not called
}
