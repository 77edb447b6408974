//! Memory-bound kernel benchmark (issue: intra-op kernels), measured in one run:
//!
//! - add on 16M floats against memcpy of 16M floats (bytes moved per second), at 1 and 2
//!   threads, both into preallocated buffers, plus the eager op (which allocates its output);
//! - gelu, sigmoid and softmax on 1M floats (cache-resident): scaling from 1 to 2 threads;
//! - embedding_bag (sum) on a 1M×64 table, 1500 indices in 64 bags: ns per lookup and GB/s.
//!
//!   cd zig && zig build bench-kernels        (ReleaseFast)
//!
//! Figures are medians over repetitions; on a shared machine they are noisy.
const std = @import("std");
const spindle = @import("spindle");

const settings = spindle.settings;
const intra_op = spindle.intra_op;
const tensor = spindle.tensor;
const ops = spindle.ops;
const elementwise = spindle.kernels.elementwise;
const normalization = spindle.kernels.normalization;
const Error = spindle.status.Error;

const big = 16 * 1024 * 1024;
const small = 1024 * 1024;

fn nowNs() u64 {
    return @intCast(std.time.nanoTimestamp());
}

/// Median wall time in ns of `repetitions` calls of `run(context)` after one warm-up.
fn medianNs(repetitions: usize, context: anytype, comptime run: fn (@TypeOf(context)) anyerror!void) !u64 {
    var samples: [64]u64 = undefined;
    std.debug.assert(repetitions <= samples.len);
    try run(context);
    for (samples[0..repetitions]) |*sample| {
        const start = nowNs();
        try run(context);
        sample.* = nowNs() - start;
    }
    std.mem.sort(u64, samples[0..repetitions], {}, std.sort.asc(u64));
    return samples[repetitions / 2];
}

const Buffers = struct {
    a: []f32,
    b: []f32,
    out: []f32,
};

const grain = 64 * 1024;

fn memcpyParallel(buffers: *const Buffers) anyerror!void {
    const Context = struct {
        buffers: *const Buffers,
        fn body(context: *const @This(), begin: usize, end: usize) Error!void {
            @memcpy(context.buffers.out[begin..end], context.buffers.a[begin..end]);
        }
    };
    const context: Context = .{ .buffers = buffers };
    try intra_op.parallelForTyped(0, buffers.out.len, grain, &context, Context.body);
}

fn addParallel(buffers: *const Buffers) anyerror!void {
    const Context = struct {
        buffers: *const Buffers,
        fn body(context: *const @This(), begin: usize, end: usize) Error!void {
            const bs = context.buffers;
            elementwise.binary(.add, bs.a[begin..end], 1, bs.b[begin..end], 1, bs.out[begin..end]);
        }
    };
    const context: Context = .{ .buffers = buffers };
    try intra_op.parallelForTyped(0, buffers.out.len, grain, &context, Context.body);
}

const EagerAdd = struct {
    a: *tensor.Tensor,
    b: *tensor.Tensor,
    fn run(self: *const EagerAdd) anyerror!void {
        const out = try ops.execute(.{ .add = .{} }, &.{ self.a, self.b });
        out.release();
    }
};

const UnaryRun = struct {
    op: elementwise.Unary,
    input: []const f32,
    output: []f32,
    fn run(self: *const UnaryRun) anyerror!void {
        const Context = struct {
            run: *const UnaryRun,
            fn body(context: *const @This(), begin: usize, end: usize) Error!void {
                const r = context.run;
                elementwise.unary(r.op, .{}, r.input[begin..end], r.output[begin..end]);
            }
        };
        const context: Context = .{ .run = self };
        try intra_op.parallelForTyped(0, self.input.len, 4096, &context, Context.body);
    }
};

const SoftmaxRun = struct {
    input: []const f32,
    output: []f32,
    row: usize,
    fn run(self: *const SoftmaxRun) anyerror!void {
        const Context = struct {
            run: *const SoftmaxRun,
            fn body(context: *const @This(), begin: usize, end: usize) Error!void {
                const r = context.run;
                for (begin..end) |row| {
                    normalization.softmaxRow(r.input[row * r.row ..][0..r.row], r.output[row * r.row ..][0..r.row], false);
                }
            }
        };
        const context: Context = .{ .run = self };
        try intra_op.parallelForTyped(0, self.input.len / self.row, 1, &context, Context.body);
    }
};

const BagRun = struct {
    table: *tensor.Tensor,
    indices: *tensor.Tensor,
    offsets: *tensor.Tensor,
    fn run(self: *const BagRun) anyerror!void {
        const out = try ops.execute(.{ .embedding_bag = .{ .mode = .sum, .has_offsets = true } }, &.{ self.table, self.indices, self.offsets });
        out.release();
    }
};

fn gbPerSecond(bytes: usize, ns: u64) f64 {
    return @as(f64, @floatFromInt(bytes)) / @as(f64, @floatFromInt(ns));
}

pub fn main() !void {
    const allocator = std.heap.page_allocator;
    var prng = std.Random.DefaultPrng.init(1);
    const random = prng.random();
    const stdout_file = std.fs.File.stdout();
    var out_buffer: [4096]u8 = undefined;
    // Streaming, not positional: when stdout is a file that a script appended to first, a
    // positional writer would overwrite from offset 0.
    var writer = stdout_file.writerStreaming(&out_buffer);
    const out = &writer.interface;

    const a = try allocator.alloc(f32, big);
    const b = try allocator.alloc(f32, big);
    const c = try allocator.alloc(f32, big);
    for (a, b, c) |*x, *y, *z| {
        x.* = random.float(f32);
        y.* = random.float(f32);
        z.* = 0; // touch every page before timing
    }
    const buffers: Buffers = .{ .a = a, .b = b, .out = c };
    const a_tensor = try tensor.createUninit(.float32, &.{big});
    @memcpy(a_tensor.f32Slice(), a);
    const b_tensor = try tensor.createUninit(.float32, &.{big});
    @memcpy(b_tensor.f32Slice(), b);
    const eager: EagerAdd = .{ .a = a_tensor, .b = b_tensor };

    try out.print("== add vs memcpy, 16M floats (GB/s = bytes moved / time; add moves 3 x 64 MiB, memcpy 2 x 64 MiB)\n", .{});
    try out.print("{s:<8} {s:>12} {s:>12} {s:>14} {s:>10}\n", .{ "threads", "memcpy GB/s", "add GB/s", "eager add GB/s", "add/memcpy" });
    for ([_]i64{ 1, 2 }) |threads| {
        try settings.setNumThreads(threads);
        const copy_ns = try medianNs(15, &buffers, memcpyParallel);
        const add_ns = try medianNs(15, &buffers, addParallel);
        const eager_ns = try medianNs(15, &eager, EagerAdd.run);
        const copy_rate = gbPerSecond(2 * big * 4, copy_ns);
        const add_rate = gbPerSecond(3 * big * 4, add_ns);
        const eager_rate = gbPerSecond(3 * big * 4, eager_ns);
        try out.print("{d:<8} {d:>12.2} {d:>12.2} {d:>14.2} {d:>10.3}\n", .{ @as(u64, @intCast(threads)), copy_rate, add_rate, eager_rate, add_rate / copy_rate });
        try out.flush();
    }

    try out.print("\n== cache-resident compute, 1M floats: median time and 1 -> 2 thread scaling\n", .{});
    try out.print("{s:<10} {s:>12} {s:>12} {s:>9}\n", .{ "op", "1 thread us", "2 threads us", "scaling" });
    const input = a[0..small];
    const output = c[0..small];
    const unary_ops = [_]elementwise.Unary{ .gelu_erf, .gelu_tanh, .sigmoid, .tanh, .exp };
    for (unary_ops) |op| {
        const run: UnaryRun = .{ .op = op, .input = input, .output = output };
        var times: [2]u64 = undefined;
        for ([_]i64{ 1, 2 }, 0..) |threads, i| {
            try settings.setNumThreads(threads);
            times[i] = try medianNs(41, &run, UnaryRun.run);
        }
        try printScaling(out, @tagName(op), times);
    }
    const softmax: SoftmaxRun = .{ .input = input, .output = output, .row = 1024 };
    var softmax_times: [2]u64 = undefined;
    for ([_]i64{ 1, 2 }, 0..) |threads, i| {
        try settings.setNumThreads(threads);
        softmax_times[i] = try medianNs(41, &softmax, SoftmaxRun.run);
    }
    try printScaling(out, "softmax", softmax_times);

    try out.print("\n== embedding_bag sum: 1M x 64 table, 1500 indices in 64 bags\n", .{});
    const rows = 1 << 20;
    const table = try tensor.createUninit(.float32, &.{ rows, 64 });
    for (table.f32Slice()) |*x| x.* = random.float(f32);
    const indices = try tensor.createUninit(.int64, &.{1500});
    for (indices.i64Slice()) |*x| x.* = random.intRangeLessThan(i64, 0, rows);
    const offsets = try tensor.createUninit(.int64, &.{64});
    for (offsets.i64Slice(), 0..) |*x, i| x.* = @intCast(i * 1500 / 64);
    const bag: BagRun = .{ .table = table, .indices = indices, .offsets = offsets };
    try out.print("{s:<8} {s:>10} {s:>14} {s:>8}\n", .{ "threads", "time us", "ns per lookup", "GB/s" });
    for ([_]i64{ 1, 2 }) |threads| {
        try settings.setNumThreads(threads);
        const ns = try medianNs(63, &bag, BagRun.run);
        try out.print("{d:<8} {d:>10.1} {d:>14.1} {d:>8.2}\n", .{
            @as(u64, @intCast(threads)),
            @as(f64, @floatFromInt(ns)) / 1000,
            @as(f64, @floatFromInt(ns)) / 1500,
            gbPerSecond(1500 * 64 * 4, ns),
        });
    }
    try out.flush();
}

fn printScaling(out: *std.Io.Writer, name: []const u8, times: [2]u64) !void {
    try out.print("{s:<10} {d:>12.1} {d:>12.1} {d:>9.2}\n", .{
        name,
        @as(f64, @floatFromInt(times[0])) / 1000,
        @as(f64, @floatFromInt(times[1])) / 1000,
        @as(f64, @floatFromInt(times[0])) / @as(f64, @floatFromInt(times[1])),
    });
    try out.flush();
}
