//! Intra-op parallelism: parallel_for and parallel_reduce (threading spec §2).
//!
//! This file owns the rules every backend shares: when a region runs serially, how a range
//! is split into contiguous chunks, how errors are reported. The grain, how much work a
//! chunk must hold, is the caller's choice (the op layer's policy: ops/parallel.zig); the
//! pool knows no ops and no kernels. The backend, chosen at build
//! time with -Dthreading, only runs `split.count` chunks of a Region and joins them:
//!
//!   omp (intra_op_omp.zig)  a fork-join team per calling thread, static chunks
//!   tbb (intra_op_tbb.zig)  one process-wide work-stealing pool shared by every caller
//!
//! Both backends are compiled into every build so that their tests run in every build; only
//! the chosen one ever starts threads in production.
const std = @import("std");
const build_options = @import("build_options");
const settings = @import("../settings.zig");
const status = @import("../status.zig");
const omp = @import("intra_op_omp.zig");
const tbb = @import("intra_op_tbb.zig");

const assert = std.debug.assert;
const Error = status.Error;

/// Worker threads a backend runs for one region at most: the calling thread runs a chunk
/// too, and a region has at most settings.max_threads chunks.
pub const workers_max = settings.max_threads - 1;

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

/// Called when the calling thread leaves Spindle for a while (the end of a model run): with
/// the omp backend its team's workers stop spinning and sleep (see Team.parked); the tbb
/// pool is shared and needs nothing.
pub fn parkCaller() void {
    switch (build_options.threading) {
        .omp => omp.parkCallingThreadTeam(),
        .tbb => {},
    }
}

/// What runs the regions of parallelFor: anything with `run(*const Region) Error!void`.
/// The build's backend in production; the backends' tests pass their own instances.
const default_executor = switch (build_options.threading) {
    .omp => omp.per_thread_team,
    .tbb => &tbb.shared,
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
    return parallelForOn(default_executor, begin, end, grain, context, body);
}

/// parallelFor on a given executor (a backend instance). The thread count is read once, so
/// a concurrent setNumThreads applies to the next region, never half of this one.
pub fn parallelForOn(
    executor: anytype,
    begin: usize,
    end: usize,
    grain: usize,
    context: *const anyopaque,
    body: Body,
) Error!void {
    if (end <= begin) return;
    const n = end - begin;
    const threads: usize = settings.getNumThreads();
    if (runsSerially(n, grain, threads)) return runSerially(begin, end, context, body);
    const region: Region = .{
        .begin = begin,
        .end = end,
        .split = Split.of(n, grain, threads),
        .context = context,
        .body = body,
    };
    assert(region.split.count >= 2);
    assert(region.split.count <= settings.max_threads);
    return executor.run(&region);
}

fn runSerially(begin: usize, end: usize, context: *const anyopaque, body: Body) Error!void {
    const was_in_region = in_region;
    in_region = true;
    defer in_region = was_in_region;
    return body(context, begin, end);
}

/// Typed convenience over parallelFor: `context` is a pointer, `body` takes it back typed.
pub fn parallelForTyped(
    begin: usize,
    end: usize,
    grain: usize,
    context: anytype,
    comptime body: fn (@TypeOf(context), usize, usize) Error!void,
) Error!void {
    return parallelForTypedOn(default_executor, begin, end, grain, context, body);
}

/// parallelForTyped on a given executor.
pub fn parallelForTypedOn(
    executor: anytype,
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
    return parallelForOn(executor, begin, end, grain, @ptrCast(context), Erased.call);
}

/// Bound on the stack parallelReduce spends on partials (one per chunk, at most max_threads).
const reduce_partials_bytes_max = 64 * 1024;

/// parallel_reduce (spec §2): `reduce` folds [chunk_begin, chunk_end) starting from
/// `identity`; the chunks' partials are combined left to right in chunk order, starting from
/// `identity`, so the result is deterministic for a given thread count. Serial cases (the
/// same rules as parallelFor) return `reduce(context, begin, end, identity)`.
pub fn parallelReduce(
    comptime T: type,
    begin: usize,
    end: usize,
    grain: usize,
    identity: T,
    context: anytype,
    comptime reduce: fn (@TypeOf(context), usize, usize, T) Error!T,
    comptime combine: fn (T, T) T,
) Error!T {
    comptime assert(@sizeOf(T) * settings.max_threads <= reduce_partials_bytes_max);
    if (end <= begin) return identity;
    const n = end - begin;
    const threads: usize = settings.getNumThreads();
    if (runsSerially(n, grain, threads)) {
        const was_in_region = in_region;
        in_region = true;
        defer in_region = was_in_region;
        return reduce(context, begin, end, identity);
    }
    const split = Split.of(n, grain, threads);
    assert(split.count >= 2);
    assert(split.count <= settings.max_threads);
    var partials: [settings.max_threads]T = undefined;
    @memset(partials[0..split.count], identity);

    const Reduction = struct {
        context: @TypeOf(context),
        partials: []T,
        begin: usize,
        size: usize,
        identity: T,

        fn body(reduction: *const @This(), chunk_begin: usize, chunk_end: usize) Error!void {
            const index = (chunk_begin - reduction.begin) / reduction.size;
            reduction.partials[index] = try reduce(reduction.context, chunk_begin, chunk_end, reduction.identity);
        }
    };
    const reduction: Reduction = .{
        .context = context,
        .partials = partials[0..split.count],
        .begin = begin,
        .size = split.size,
        .identity = identity,
    };
    const region: Region = .{
        .begin = begin,
        .end = end,
        .split = split,
        .context = @ptrCast(&reduction),
        .body = erase(*const Reduction, Reduction.body),
    };
    // The join orders every chunk's write of its partial before the reads below.
    try default_executor.run(&region);
    var total = identity;
    for (partials[0..split.count]) |partial| total = combine(total, partial);
    return total;
}

fn erase(comptime Context: type, comptime body: fn (Context, usize, usize) Error!void) Body {
    return struct {
        fn call(erased: *const anyopaque, chunk_begin: usize, chunk_end: usize) Error!void {
            return body(@ptrCast(@alignCast(erased)), chunk_begin, chunk_end);
        }
    }.call;
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

    /// Runs every chunk on the calling thread: what a backend does when it cannot get
    /// threads (spawn failed, no slot left). Same error contract as a parallel run.
    pub fn runAllOnCaller(region: *const Region) Error!void {
        var first_error: FirstError = .{};
        for (0..region.split.count) |index| {
            region.runChunk(index) catch |err| first_error.record(index, err);
        }
        return first_error.result();
    }
};

/// The error a region returns. Of all failing chunks, the one with the lowest index wins, so
/// the error a caller sees does not depend on timing (and is the one a serial loop would
/// have hit first). Chunks record concurrently with a single atomic min, no lock.
pub const FirstError = struct {
    const none: u64 = std.math.maxInt(u64);
    const code_bits = @bitSizeOf(std.meta.Int(.unsigned, @bitSizeOf(anyerror)));

    /// (chunk index << code_bits) | error code, or `none`.
    encoded: std.atomic.Value(u64) = .init(none),

    pub fn record(first_error: *FirstError, chunk_index: usize, err: Error) void {
        assert(chunk_index < settings.max_threads);
        const code: u64 = @intFromError(err);
        assert(code != 0);
        const encoded = (@as(u64, chunk_index) << code_bits) | code;
        // Monotonic: the value is read only after the region's join, whose Release (the
        // chunk's completion) / Acquire (the caller's wait) pair orders this before result().
        _ = first_error.encoded.fetchMin(encoded, .monotonic);
    }

    /// The recorded error, if any. Call only after the join.
    pub fn result(first_error: *const FirstError) Error!void {
        // Monotonic: ordered after every record() by the join, see record().
        const encoded = first_error.encoded.load(.monotonic);
        if (encoded == none) return;
        const code: std.meta.Int(.unsigned, code_bits) = @truncate(encoded);
        return @errorCast(@errorFromInt(code));
    }
};

/// Checks the backends' tests share: each backend file runs them on its own instance, so
/// both backends are tested in every build. Their counters use Monotonic atomics: they are
/// read only after the region's join, which orders every update before the read.
pub const testing = struct {
    const expect = std.testing.expect;
    const expectEqual = std.testing.expectEqual;

    const index_count_max = 100_003;

    /// Counts the calls and the times each index is visited.
    const Coverage = struct {
        hits: []std.atomic.Value(u32),
        begin: usize,
        calls: std.atomic.Value(u32) = .init(0),

        fn body(coverage: *Coverage, chunk_begin: usize, chunk_end: usize) Error!void {
            assert(chunk_begin < chunk_end);
            // Monotonic: the counters are read after the join, which orders them.
            _ = coverage.calls.fetchAdd(1, .monotonic);
            for (chunk_begin..chunk_end) |index| _ = coverage.hits[index - coverage.begin].fetchAdd(1, .monotonic);
        }
    };

    /// Runs a region of `n` indices (offset by 7, so chunks never start at 0), checks that
    /// every index ran exactly once and returns the number of body calls (chunks).
    pub fn expectEachIndexCovered(executor: anytype, n: usize, grain: usize) !u32 {
        assert(n <= index_count_max);
        const hits = try std.testing.allocator.alloc(std.atomic.Value(u32), n);
        defer std.testing.allocator.free(hits);
        for (hits) |*hit| hit.* = .init(0);
        const begin = 7;
        var coverage: Coverage = .{ .hits = hits, .begin = begin };
        try parallelForTypedOn(executor, begin, begin + n, grain, &coverage, Coverage.body);
        for (hits) |*hit| try expectEqual(@as(u32, 1), hit.load(.monotonic));
        return coverage.calls.load(.monotonic);
    }

    /// expectEachIndexCovered, and the chunk count follows the spec for the current thread
    /// count (which must not change meanwhile).
    pub fn expectEachIndexOnce(executor: anytype, n: usize, grain: usize) !void {
        const calls = try expectEachIndexCovered(executor, n, grain);
        const threads = settings.getNumThreads();
        if (n == 0) {
            try expectEqual(@as(u32, 0), calls);
        } else if (n <= 1 or n <= grain or threads == 1) {
            try expectEqual(@as(u32, 1), calls);
        } else {
            try expectEqual(@as(u32, @intCast(Split.of(n, grain, threads).count)), calls);
        }
    }

    pub fn expectEachIndexOnceForAllSizes(executor: anytype) !void {
        const sizes = [_]usize{ 0, 1, 2, 3, 97, 1_000, index_count_max };
        const grains = [_]usize{ 0, 1, 2, 50, 1_000_000 };
        for (sizes) |n| {
            for (grains) |grain| try expectEachIndexOnce(executor, n, grain);
        }
    }

    /// Fails chunks `fail_low` and `fail_high` with different errors.
    const Failing = struct {
        split_size: usize,
        fail_low: usize,
        fail_high: usize,
        ran: std.atomic.Value(u32) = .init(0),

        fn body(failing: *Failing, chunk_begin: usize, chunk_end: usize) Error!void {
            assert(chunk_begin < chunk_end);
            // Monotonic: read after the join.
            _ = failing.ran.fetchAdd(1, .monotonic);
            const chunk = chunk_begin / failing.split_size;
            if (chunk == failing.fail_high) return error.ShapeMismatch;
            if (chunk == failing.fail_low) return error.IndexOutOfRange;
        }
    };

    /// With threads == 4 and four chunks, chunks 1 and 3 fail: every chunk still runs and
    /// the error of chunk 1 is returned, whatever the timing.
    pub fn expectLowestChunkErrorKept(executor: anytype) !void {
        assert(settings.getNumThreads() == 4);
        for (0..50) |_| {
            var failing: Failing = .{ .split_size = 25, .fail_low = 1, .fail_high = 3 };
            const result = parallelForTypedOn(executor, 0, 100, 1, &failing, Failing.body);
            try std.testing.expectError(error.IndexOutOfRange, result);
            try expectEqual(@as(u32, 4), failing.ran.load(.monotonic));
        }
        var caller_fails: Failing = .{ .split_size = 25, .fail_low = 0, .fail_high = 2 };
        const result = parallelForTypedOn(executor, 0, 100, 1, &caller_fails, Failing.body);
        try std.testing.expectError(error.IndexOutOfRange, result);
    }

    const Nested = struct {
        inner_calls: std.atomic.Value(u32) = .init(0),
        inner_not_flagged: std.atomic.Value(u32) = .init(0),

        fn outer(nested: *Nested, chunk_begin: usize, chunk_end: usize) Error!void {
            assert(chunk_begin < chunk_end);
            if (!inParallelRegion()) return error.Internal;
            try parallelForTyped(0, 1000, 1, nested, inner);
        }

        fn inner(nested: *Nested, chunk_begin: usize, chunk_end: usize) Error!void {
            // Monotonic: read after the outer join.
            _ = nested.inner_calls.fetchAdd(1, .monotonic);
            if (chunk_begin != 0 or chunk_end != 1000) return error.Internal;
            if (!inParallelRegion()) _ = nested.inner_not_flagged.fetchAdd(1, .monotonic);
        }
    };

    /// A region inside a chunk runs serially: one call over the whole inner range per chunk.
    pub fn expectNestedRegionsSerial(executor: anytype) !void {
        const threads = settings.getNumThreads();
        assert(threads >= 2);
        var nested: Nested = .{};
        try parallelForTypedOn(executor, 0, 64, 1, &nested, Nested.outer);
        try expectEqual(@as(u32, @intCast(Split.of(64, 1, threads).count)), nested.inner_calls.load(.monotonic));
        try expectEqual(@as(u32, 0), nested.inner_not_flagged.load(.monotonic));
        try expect(!inParallelRegion());
    }

    const Participants = struct {
        const capacity = 64;
        ids: [capacity]std.atomic.Value(u64) = @splat(.init(0)),
        /// Chunks that have started; each waits (bounded) until all `expected` have, so that
        /// no thread can run a second chunk before every thread of the region ran one — even
        /// when a worker is slow to wake on a loaded machine and the caller would otherwise
        /// take its chunk.
        started: std.atomic.Value(u32) = .init(0),
        expected: u32,

        fn body(participants: *Participants, chunk_begin: usize, chunk_end: usize) Error!void {
            assert(chunk_end - chunk_begin == 1);
            assert(chunk_begin < capacity);
            const id: u64 = std.Thread.getCurrentId();
            // Monotonic: read after the join.
            participants.ids[chunk_begin].store(id, .monotonic);
            // Monotonic: a counter polled below; no data is published through it.
            _ = participants.started.fetchAdd(1, .monotonic);
            const deadline_ns = 5 * std.time.ns_per_s;
            var timer = std.time.Timer.start() catch return;
            while (participants.started.load(.monotonic) < participants.expected and timer.read() < deadline_ns) {
                std.Thread.sleep(50 * std.time.ns_per_us);
            }
        }

        fn distinct(participants: *const Participants, count: usize) usize {
            var result: usize = 0;
            for (0..count) |i| {
                const id = participants.ids[i].load(.monotonic);
                var seen = false;
                for (0..i) |j| seen = seen or participants.ids[j].load(.monotonic) == id;
                if (!seen) result += 1;
            }
            return result;
        }
    };

    /// Runs a region of `threads` one-index chunks; returns how many distinct threads ran them.
    pub fn distinctThreadsOfRegion(executor: anytype, threads: u32) !usize {
        assert(threads <= Participants.capacity);
        try settings.setNumThreads(threads);
        var participants: Participants = .{ .expected = threads };
        try parallelForTypedOn(executor, 0, threads, 1, &participants, Participants.body);
        return participants.distinct(threads);
    }
};

test {
    // Both backends' tests run in every build, whichever backend the build selects.
    _ = omp;
    _ = tbb;
}

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

// The tests' counters use Monotonic atomics: they are read after the region's join.

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

test "FirstError keeps the error of the lowest chunk" {
    var first_error: FirstError = .{};
    try first_error.result();
    first_error.record(5, error.ShapeMismatch);
    first_error.record(2, error.IndexOutOfRange);
    first_error.record(9, error.Internal);
    try std.testing.expectError(error.IndexOutOfRange, first_error.result());
}

const SumOfSquares = struct {
    fn reduce(values: []const f64, begin: usize, end: usize, identity: f64) Error!f64 {
        var sum = identity;
        for (values[begin..end]) |value| sum += value * value;
        return sum;
    }

    fn combine(a: f64, b: f64) f64 {
        return a + b;
    }
};

test "parallelReduce combines partials in chunk order, deterministically" {
    settings.resetForTesting();
    defer settings.resetForTesting();
    var values: [1001]f64 = undefined;
    for (&values, 0..) |*value, i| value.* = 1.0 / @as(f64, @floatFromInt(i + 1));
    const reduce = SumOfSquares.reduce;
    const combine = SumOfSquares.combine;
    for ([_]u32{ 1, 2, 3, 7 }) |threads| {
        try settings.setNumThreads(threads);
        const first = try parallelReduce(f64, 0, values.len, 10, 0, @as([]const f64, &values), reduce, combine);
        // The same left-to-right order of the same partials, computed here serially.
        var expected: f64 = 0;
        if (threads == 1) {
            expected = try reduce(&values, 0, values.len, 0);
        } else {
            const split = Split.of(values.len, 10, threads);
            for (0..split.count) |chunk| {
                const chunk_end = @min(values.len, (chunk + 1) * split.size);
                expected = combine(expected, try reduce(&values, chunk * split.size, chunk_end, 0));
            }
        }
        try std.testing.expectEqual(expected, first);
        for (0..20) |_| {
            const again = try parallelReduce(f64, 0, values.len, 10, 0, @as([]const f64, &values), reduce, combine);
            try std.testing.expectEqual(first, again);
        }
    }
    const empty = try parallelReduce(f64, 3, 3, 1, 42, @as([]const f64, &values), reduce, combine);
    try std.testing.expectEqual(@as(f64, 42), empty);
}

test "parallelReduce returns the first error after running every chunk" {
    settings.resetForTesting();
    defer settings.resetForTesting();
    try settings.setNumThreads(4);
    const Context = struct {
        fn reduce(ran: *std.atomic.Value(u32), begin: usize, end: usize, identity: u64) Error!u64 {
            _ = ran.fetchAdd(1, .monotonic);
            if (begin >= 50) return error.ShapeMismatch;
            if (begin >= 25) return error.IndexOutOfRange;
            return identity + end - begin;
        }
        fn combine(a: u64, b: u64) u64 {
            return a + b;
        }
    };
    var ran: std.atomic.Value(u32) = .init(0);
    const result = parallelReduce(u64, 0, 100, 1, 0, &ran, Context.reduce, Context.combine);
    try std.testing.expectError(error.IndexOutOfRange, result);
    try std.testing.expectEqual(@as(u32, 4), ran.load(.monotonic));
}
