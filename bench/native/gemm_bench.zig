//! GFLOPS of Spindle's native SGEMM against OpenBLAS's cblas_sgemm, measured in the same run
//! on the same buffers, at 1 and 2 threads, for square sizes and the skinny shapes of
//! inference (M rows of activations times a K × N weight, B plain "NN" or transposed "NT" as
//! nn.Linear stores it). "packed" is Spindle with B packed once beforehand (PackedB), the way
//! `linear` will use fixed weights.
//!
//!   cd zig && zig build bench-gemm                          full table
//!   cd zig && zig build bench-gemm -- --threads 1 --shapes square --repeats 3 --min-ms 50
//!   cd zig && zig build bench-gemm -- --rounds 3      best of 3 passes over the table
//!
//! Spindle's 2-thread runs split the tiles of gemm.plan over the caller and one spinning
//! helper thread (as the omp backend does); OpenBLAS gets openblas_set_num_threads(2).
//! Each number is the best of `repeats` timed runs of at least `min-ms` each: the machine may
//! be shared, and the best run is the least disturbed one.
const std = @import("std");
const kernels = @import("spindle").kernels;
const gemm = kernels.gemm;
const gemm_native = kernels.gemm_native;
const native = gemm_native.native;

const openblas = kernels.openblas;
const CblasRowMajor = openblas.CblasRowMajor;
const CblasNoTrans = openblas.CblasNoTrans;
const CblasTrans = openblas.CblasTrans;
const cblas_sgemm = openblas.cblas_sgemm;
const openblas_set_num_threads = openblas.openblas_set_num_threads;
const openblas_get_config = openblas.openblas_get_config;

const Shape = struct { m: usize, n: usize, k: usize, trans_b: bool };

const Options = struct {
    threads: []const usize = &.{ 1, 2 },
    square: bool = true,
    skinny: bool = true,
    repeats: usize = 3,
    rounds: usize = 1,
    min_ns: u64 = 60 * std.time.ns_per_ms,
    /// `--shape MxNxK` or `MxNxKt` (B transposed): that one shape instead of the table.
    only: ?Shape = null,
};

/// One GEMM's buffers and the argument structs that every implementation runs on.
const Problem = struct {
    shape: Shape,
    args: gemm.Args,
    packed_b: native.PackedB,
    packed_args: native.PackedArgs,

    fn init(allocator: std.mem.Allocator, shape: Shape) !*Problem {
        const a = try allocator.alloc(f32, shape.m * shape.k);
        const b = try allocator.alloc(f32, shape.k * shape.n);
        const c = try allocator.alloc(f32, shape.m * shape.n);
        for (a, 0..) |*x, i| x.* = @as(f32, @floatFromInt(i % 1000)) / 500 - 1;
        for (b, 0..) |*x, i| x.* = @as(f32, @floatFromInt((i * 7) % 1000)) / 500 - 1;
        @memset(c, 0);
        const problem = try allocator.create(Problem);
        problem.shape = shape;
        problem.args = .{
            .trans_a = false,
            .trans_b = shape.trans_b,
            .m = shape.m,
            .n = shape.n,
            .k = shape.k,
            .alpha = 1,
            .a = a,
            .lda = shape.k,
            .b = b,
            .ldb = if (shape.trans_b) shape.k else shape.n,
            .beta = 0,
            .c = c,
            .ldc = shape.n,
        };
        try problem.args.validate();
        problem.packed_b = try native.PackedB.init(allocator, shape.trans_b, shape.k, shape.n, b, problem.args.ldb);
        problem.packed_args = .{
            .trans_a = false,
            .m = shape.m,
            .alpha = 1,
            .a = a,
            .lda = shape.k,
            .packed_b = &problem.packed_b,
            .beta = 0,
            .c = c,
            .ldc = shape.n,
        };
        try problem.packed_args.validate();
        return problem;
    }

    fn deinit(problem: *Problem, allocator: std.mem.Allocator) void {
        problem.packed_b.deinit(allocator);
        allocator.free(problem.args.a);
        allocator.free(problem.args.b);
        allocator.free(problem.args.c);
        allocator.destroy(problem);
    }

    fn flops(problem: *const Problem) f64 {
        const shape = problem.shape;
        return 2 * @as(f64, @floatFromInt(shape.m * shape.n * shape.k));
    }
};

const Implementation = enum { spindle, spindle_packed, openblas };

/// What one thread of a Spindle run executes: its contiguous share of the plan's tiles.
const Job = struct {
    problem: *const Problem,
    implementation: Implementation,
    tiling: gemm.Tiling,
    parts: usize,

    fn runPart(job: *const Job, part: usize) void {
        std.debug.assert(part < job.parts);
        const count = job.tiling.count();
        const share = (count + job.parts - 1) / job.parts;
        const begin = @min(count, part * share);
        const end = @min(count, begin + share);
        if (job.implementation == .spindle_packed) {
            gemm_native.runTilesPacked(&job.problem.packed_args, job.tiling, begin, end);
            return;
        }
        const args = &job.problem.args;
        for (begin..end) |tile| {
            const block = job.tiling.block(tile, args.m, args.n) orelse continue;
            native.runBlock(args, block.row_begin, block.rows, block.col_begin, block.cols);
        }
    }
};

/// The caller plus one helper thread, as a fork-join team does. A waiter spins briefly, then
/// yields its CPU between checks, then sleeps on a futex: spinning alone collapses on a
/// shared machine, where the partner may be queued behind the spinner on the same CPU until
/// the spinner's time slice ends (~1 ms a call); sleeping alone would measure thread wake-up
/// on small GEMMs.
const Team = struct {
    job: ?*const Job = null,
    generation: std.atomic.Value(u32) = .init(0),
    finished: std.atomic.Value(u32) = .init(0),
    stop: std.atomic.Value(bool) = .init(false),
    /// Threads in (or about to enter) Futex.wait; wakers skip the syscall while it is 0.
    sleepers: std.atomic.Value(u32) = .init(0),

    const spin_limit = 2_000;
    const yield_limit = 2_000;

    /// Waits until `value` differs from `seen`. The seq_cst increment of `sleepers` before
    /// the re-check pairs with the seq_cst store and `sleepers` load in `publish`: either
    /// the waker sees the sleeper, or the sleeper sees the new value.
    fn await(team: *Team, value: *const std.atomic.Value(u32), seen: u32) void {
        var spins: usize = 0;
        while (value.load(.acquire) == seen) : (spins += 1) {
            if (spins < spin_limit) {
                std.atomic.spinLoopHint();
                continue;
            }
            if (spins < spin_limit + yield_limit) {
                std.Thread.yield() catch {};
                continue;
            }
            _ = team.sleepers.fetchAdd(1, .seq_cst);
            if (value.load(.seq_cst) == seen) std.Thread.Futex.wait(value, seen);
            _ = team.sleepers.fetchSub(1, .seq_cst);
        }
    }

    fn publish(team: *Team, value: *std.atomic.Value(u32), new: u32) void {
        value.store(new, .seq_cst);
        if (team.sleepers.load(.seq_cst) != 0) std.Thread.Futex.wake(value, 1);
    }

    fn helperMain(team: *Team) void {
        var seen: u32 = 0;
        while (true) {
            // Acquire in await pairs with the store in run(): the job is visible here.
            team.await(&team.generation, seen);
            seen +%= 1;
            if (team.stop.load(.acquire)) return;
            team.job.?.runPart(1);
            team.publish(&team.finished, seen);
        }
    }

    fn run(team: *Team, job: *const Job) void {
        std.debug.assert(job.parts == 2);
        team.job = job;
        const generation = team.generation.load(.monotonic);
        team.publish(&team.generation, generation +% 1);
        job.runPart(0);
        // Acquire in await pairs with the helper's store: its half of C is complete.
        team.await(&team.finished, generation);
    }

    fn finish(team: *Team) void {
        team.stop.store(true, .release);
        team.publish(&team.generation, team.generation.load(.monotonic) +% 1);
    }
};

fn runOnce(problem: *const Problem, implementation: Implementation, threads: usize, team: ?*Team) void {
    if (implementation == .openblas) {
        const args = &problem.args;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, if (args.trans_b) CblasTrans else CblasNoTrans, @intCast(args.m), @intCast(args.n), @intCast(args.k), args.alpha, args.a.ptr, @intCast(args.lda), args.b.ptr, @intCast(args.ldb), args.beta, args.c.ptr, @intCast(args.ldc));
        return;
    }
    const job: Job = .{
        .problem = problem,
        .implementation = implementation,
        .tiling = gemm.plan(problem.shape.m, problem.shape.n, threads),
        .parts = threads,
    };
    if (threads == 1) job.runPart(0) else team.?.run(&job);
}

/// Best GFLOPS over `repeats` runs of at least `min_ns` each.
fn measure(problem: *const Problem, implementation: Implementation, threads: usize, options: Options) !f64 {
    std.debug.assert(threads == 1 or threads == 2);
    var team: Team = .{};
    var helper: ?std.Thread = null;
    if (threads == 2 and implementation != .openblas) helper = try std.Thread.spawn(.{}, Team.helperMain, .{&team});
    defer if (helper) |thread| {
        team.finish();
        thread.join();
    };
    openblas_set_num_threads(@intCast(threads));
    runOnce(problem, implementation, threads, &team); // warm caches and page tables
    var best: f64 = 0;
    for (0..options.repeats) |_| {
        var timer = try std.time.Timer.start();
        var iterations: usize = 0;
        while (timer.read() < options.min_ns) : (iterations += 1) runOnce(problem, implementation, threads, &team);
        const seconds = @as(f64, @floatFromInt(timer.read())) / std.time.ns_per_s;
        best = @max(best, problem.flops() * @as(f64, @floatFromInt(iterations)) / seconds / 1e9);
    }
    if (implementation == .openblas and threads > 1) {
        // OpenBLAS's threads spin for a while after a call: let them sleep before the next
        // measurement, so that they do not steal the second core from it.
        std.Thread.sleep(200 * std.time.ns_per_ms);
    }
    return best;
}

fn shapes(allocator: std.mem.Allocator, options: Options) ![]Shape {
    var list: std.ArrayList(Shape) = .empty;
    if (options.only) |shape| {
        try list.append(allocator, shape);
        return list.toOwnedSlice(allocator);
    }
    if (options.square) for ([_]usize{ 64, 128, 256, 512, 1024, 2048 }) |size| {
        try list.append(allocator, .{ .m = size, .n = size, .k = size, .trans_b = false });
    };
    const depth_width = [_][2]usize{ .{ 512, 512 }, .{ 1024, 1024 }, .{ 1024, 4096 }, .{ 4096, 1024 } };
    if (options.skinny) for ([_]bool{ false, true }) |trans_b| for (depth_width) |kn| for ([_]usize{ 1, 8, 32, 64 }) |m| {
        try list.append(allocator, .{ .m = m, .n = kn[1], .k = kn[0], .trans_b = trans_b });
    };
    return list.toOwnedSlice(allocator);
}

fn parseOptions(arguments: []const [:0]const u8) !Options {
    var options: Options = .{};
    var index: usize = 1;
    while (index + 1 < arguments.len) : (index += 2) {
        const name = arguments[index];
        const value = arguments[index + 1];
        if (std.mem.eql(u8, name, "--threads")) {
            options.threads = if (std.mem.eql(u8, value, "1")) &.{1} else if (std.mem.eql(u8, value, "2")) &.{2} else &.{ 1, 2 };
        } else if (std.mem.eql(u8, name, "--shapes")) {
            options.square = !std.mem.eql(u8, value, "skinny");
            options.skinny = !std.mem.eql(u8, value, "square");
        } else if (std.mem.eql(u8, name, "--repeats")) {
            options.repeats = @max(1, try std.fmt.parseInt(usize, value, 10));
        } else if (std.mem.eql(u8, name, "--rounds")) {
            options.rounds = @max(1, try std.fmt.parseInt(usize, value, 10));
        } else if (std.mem.eql(u8, name, "--shape")) {
            const trans_b = std.mem.endsWith(u8, value, "t");
            var parts = std.mem.splitScalar(u8, if (trans_b) value[0 .. value.len - 1] else value, 'x');
            var dims: [3]usize = undefined;
            for (&dims) |*dim| dim.* = try std.fmt.parseInt(usize, parts.next() orelse return error.BadShape, 10);
            if (parts.next() != null) return error.BadShape;
            options.only = .{ .m = dims[0], .n = dims[1], .k = dims[2], .trans_b = trans_b };
        } else if (std.mem.eql(u8, name, "--min-ms")) {
            options.min_ns = try std.fmt.parseInt(u64, value, 10) * std.time.ns_per_ms;
        } else return error.UnknownOption;
    }
    return options;
}

/// The best GFLOPS seen for one shape and thread count, over every round.
const Result = struct {
    spindle: f64 = 0,
    spindle_packed: f64 = 0,
    openblas: f64 = 0,

    fn improve(result: *Result, problem: *const Problem, threads: usize, options: Options) !void {
        result.spindle = @max(result.spindle, try measure(problem, .spindle, threads, options));
        result.spindle_packed = @max(result.spindle_packed, try measure(problem, .spindle_packed, threads, options));
        result.openblas = @max(result.openblas, try measure(problem, .openblas, threads, options));
    }

    fn print(result: Result, out: *std.Io.Writer, shape: Shape, threads: usize) !void {
        try out.print("{s:<6} {d:>5} {d:>5} {d:>5} {d:>3} | {d:>8.1} {d:>8.1} {d:>6.2} | {d:>8.1} {d:>6.2}\n", .{
            if (shape.trans_b) "NT" else "NN",       shape.m,                          shape.n,
            shape.k,                                 threads,                          result.spindle,
            result.openblas,                         result.spindle / result.openblas, result.spindle_packed,
            result.spindle_packed / result.openblas,
        });
        try out.flush();
    }
};

pub fn main() !void {
    var gpa: std.heap.DebugAllocator(.{}) = .init;
    defer _ = gpa.deinit();
    const allocator = gpa.allocator();
    const arguments = try std.process.argsAlloc(allocator);
    defer std.process.argsFree(allocator, arguments);
    const options = try parseOptions(arguments);
    const shape_list = try shapes(allocator, options);
    defer allocator.free(shape_list);
    const results = try allocator.alloc(Result, options.threads.len * shape_list.len);
    defer allocator.free(results);
    @memset(results, .{});

    var buffer: [4096]u8 = undefined;
    // Streaming, not positional: appending to a redirected file must not overwrite it.
    var stdout_writer = std.fs.File.stdout().writerStreaming(&buffer);
    const out = &stdout_writer.interface;
    const config = gemm_native.target_config;
    try out.print("# Spindle native: {d}-lane vectors, {d}x{d} register block, blocks KC {d} MC {d} NC {d}\n", .{
        config.vector_length, config.panel_rows, config.panel_vectors * config.vector_length, config.depth_block, config.row_block, config.col_block,
    });
    try out.print("# {s}\n", .{openblas_get_config()});
    try out.print("# GFLOPS, best of {d} round(s) x {d} runs of >= {d} ms; ratio = Spindle / OpenBLAS\n", .{
        options.rounds, options.repeats, options.min_ns / std.time.ns_per_ms,
    });
    try out.print("{s:<6} {s:>5} {s:>5} {s:>5} {s:>3} | {s:>8} {s:>8} {s:>6} | {s:>8} {s:>6}\n", .{ "layout", "M", "N", "K", "thr", "spindle", "openblas", "ratio", "packed", "ratio" });
    try out.flush();
    // Rounds revisit every cell minutes apart, so that a burst of load from other users of
    // the machine spoils one round of a cell rather than the whole table.
    for (0..options.rounds) |round| {
        for (options.threads, 0..) |threads, thread_index| {
            for (shape_list, 0..) |shape, shape_index| {
                const problem = try Problem.init(allocator, shape);
                defer problem.deinit(allocator);
                const result = &results[thread_index * shape_list.len + shape_index];
                try result.improve(problem, threads, options);
                if (round + 1 == options.rounds) try result.print(out, shape, threads);
            }
        }
    }
}
