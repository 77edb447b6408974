//! The f32 GEMM-backed convolutions and products of PaddleOCR rec and det as a program runs
//! them: the weight packed once at load (ops/packed_f32.zig), then conv2d / gemm on it with
//! the bias and a hard-swish epilogue, at 1 and 2 threads. Layer shapes are the slowest
//! nodes of `main.ts infer --profile` on rec [1x3x48x320] and det [1x3x320x320].
//!
//!   cd zig && zig build bench-packed [-- FILTER [cold]]   (ReleaseFast; FILTER keeps the
//!       layers whose name contains it, e.g. "rec"; "cold" cycles through copies of the weight,
//!       so that it comes from L3 as in a model rather than staying in L2)
//!
//! Figures are medians over repetitions; on a shared machine they are noisy.
const std = @import("std");
const spindle = @import("spindle");

const settings = spindle.settings;
const tensor = spindle.tensor;
const ops = spindle.ops;
const packed_f32 = spindle.packed_f32;

const Layer = struct {
    name: []const u8,
    in_channels: usize,
    out_channels: usize,
    height: usize,
    width: usize,
    kernel: usize = 1,
    padding: usize = 0,

    fn flops(layer: Layer) f64 {
        return 2 * @as(f64, @floatFromInt(layer.out_channels * layer.height * layer.width * layer.in_channels * layer.kernel * layer.kernel));
    }
};

const layers = [_]Layer{
    .{ .name = "rec 1x1 480->480 @6x80", .in_channels = 480, .out_channels = 480, .height = 6, .width = 80 },
    .{ .name = "rec 1x1 480->480 @3x80", .in_channels = 480, .out_channels = 480, .height = 3, .width = 80 },
    .{ .name = "rec 1x1 240->480 @6x80", .in_channels = 240, .out_channels = 480, .height = 6, .width = 80 },
    .{ .name = "rec 1x1 240->240 @12x80", .in_channels = 240, .out_channels = 240, .height = 12, .width = 80 },
    .{ .name = "rec 1x1 128->240 @12x80", .in_channels = 128, .out_channels = 240, .height = 12, .width = 80 },
    .{ .name = "rec 1x1 128->128 @12x160", .in_channels = 128, .out_channels = 128, .height = 12, .width = 160 },
    .{ .name = "rec 1x1 64->128 @12x160", .in_channels = 64, .out_channels = 128, .height = 12, .width = 160 },
    .{ .name = "rec SE 1x1 480->120 @1x1", .in_channels = 480, .out_channels = 120, .height = 1, .width = 1 },
    .{ .name = "rec 1x1 960->60 @1x40", .in_channels = 960, .out_channels = 60, .height = 1, .width = 40 },
    .{ .name = "rec 1x3 960->60 @1x40", .in_channels = 960, .out_channels = 60, .height = 1, .width = 40, .kernel = 3, .padding = 1 },
    .{ .name = "det 3x3 96->24 @80x80", .in_channels = 96, .out_channels = 24, .height = 80, .width = 80, .kernel = 3, .padding = 1 },
    .{ .name = "det 3x3 96->24 @40x40", .in_channels = 96, .out_channels = 24, .height = 40, .width = 40, .kernel = 3, .padding = 1 },
    .{ .name = "resnet 3x3 128->128 @28x28", .in_channels = 128, .out_channels = 128, .height = 28, .width = 28, .kernel = 3, .padding = 1 },
    .{ .name = "det 1x1 384->384 @10x10", .in_channels = 384, .out_channels = 384, .height = 10, .width = 10 },
    .{ .name = "det 1x1 192->192 @20x20", .in_channels = 192, .out_channels = 192, .height = 20, .width = 20 },
    .{ .name = "det 1x1 96->96 @40x40", .in_channels = 96, .out_channels = 96, .height = 40, .width = 40 },
    .{ .name = "det 1x1 96->24 @80x80", .in_channels = 96, .out_channels = 24, .height = 80, .width = 80 },
};

fn nowNs() u64 {
    return @intCast(std.time.nanoTimestamp());
}

/// CPU time of the calling thread: at 1 thread it leaves out the time the thread waited for a
/// core that other processes held, so that figures from a shared machine compare.
fn threadCpuNs() u64 {
    const time = std.posix.clock_gettime(std.posix.CLOCK.THREAD_CPUTIME_ID) catch return 0;
    return @as(u64, @intCast(time.sec)) * std.time.ns_per_s + @as(u64, @intCast(time.nsec));
}

/// Copies of the packed weight a cold run cycles through: 8 × a 1 MiB weight is past L2, as
/// in a model, where each layer's weight comes from L3.
const cold_copies = 8;

/// One node: its options, inputs and packed weight; the output is released at once.
const Call = struct {
    options: ops.Options,
    inputs: []const *tensor.Tensor,
    /// One packed weight (warm: it stays in L2 from call to call) or cold_copies of it.
    weights: []const packed_f32.Weights,
    next: *usize,

    fn run(call: *const Call) !void {
        const weights = &call.weights[call.next.* % call.weights.len];
        call.next.* += 1;
        const out = try packed_f32.execute(call.options, call.inputs, weights);
        out.release();
    }
};

/// Median wall time and median CPU time of the calling thread, in ns, of `repetitions` calls
/// after a few warm-ups.
fn medianNs(repetitions: usize, call: *const Call) ![2]u64 {
    var wall: [256]u64 = undefined;
    var cpu: [256]u64 = undefined;
    std.debug.assert(repetitions <= wall.len);
    for (0..3) |_| try call.run();
    for (wall[0..repetitions], cpu[0..repetitions]) |*wall_sample, *cpu_sample| {
        const start = nowNs();
        const cpu_start = threadCpuNs();
        try call.run();
        cpu_sample.* = threadCpuNs() - cpu_start;
        wall_sample.* = nowNs() - start;
    }
    std.mem.sort(u64, wall[0..repetitions], {}, std.sort.asc(u64));
    std.mem.sort(u64, cpu[0..repetitions], {}, std.sort.asc(u64));
    return .{ wall[repetitions / 2], cpu[repetitions / 2] };
}

fn randomTensor(random: std.Random, dims: []const usize) !*tensor.Tensor {
    const t = try tensor.createUninit(.float32, dims);
    for (t.f32Slice()) |*x| x.* = random.float(f32) * 2 - 1;
    return t;
}

fn repetitionsFor(flops: f64) usize {
    return if (flops < 2e7) 201 else if (flops < 1e8) 81 else 41;
}

pub fn main() !void {
    var prng = std.Random.DefaultPrng.init(1);
    const random = prng.random();
    var out_buffer: [4096]u8 = undefined;
    var writer = std.fs.File.stdout().writerStreaming(&out_buffer);
    const out = &writer.interface;
    var args = std.process.args();
    _ = args.skip();
    const filter = args.next() orelse "";
    // "cold" as the second argument: each call's weight is another copy (see cold_copies).
    const cold = std.mem.eql(u8, args.next() orelse "", "cold");
    var next: usize = 0;

    try out.print("== packed-weight f32 conv2d / gemm (bias + hard-swish), batch 1, medians; noisy on a shared machine\n", .{});
    try out.print("(cpu: the calling thread's CPU time, at 1 thread the time without waits for a core)\n", .{});
    try out.print("{s:<30} {s:>3} {s:>9} {s:>9} {s:>9} {s:>9}\n", .{ "layer", "thr", "wall ms", "GFLOPS", "cpu ms", "GFLOPS" });
    for (layers) |layer| {
        if (std.mem.indexOf(u8, layer.name, filter) == null) continue;
        const x = try randomTensor(random, &.{ 1, layer.in_channels, layer.height, layer.width });
        defer x.release();
        const kernel_h = if (layer.height == 1) 1 else layer.kernel;
        const weight = try randomTensor(random, &.{ layer.out_channels, layer.in_channels, kernel_h, layer.kernel });
        defer weight.release();
        const bias = try randomTensor(random, &.{layer.out_channels});
        defer bias.release();
        var copies: [cold_copies]packed_f32.Weights = undefined;
        const count: usize = if (cold) cold_copies else 1;
        var packed_count: usize = 0;
        defer for (copies[0..packed_count]) |*copy| copy.release();
        while (packed_count < count) : (packed_count += 1) {
            copies[packed_count] = (try packed_f32.packConv(weight, 1)) orelse break;
        }
        if (packed_count == 0) {
            try out.print("{s:<30} not packed (direct kernel)\n", .{layer.name});
            continue;
        }
        const padding: i64 = @intCast(layer.padding);
        const call: Call = .{
            .options = .{ .conv2d = .{
                .padding = .{ if (kernel_h == 1) 0 else padding, padding },
                .has_bias = true,
                .activation = .hard_swish,
            } },
            .inputs = &.{ x, weight, bias },
            .weights = copies[0..packed_count],
            .next = &next,
        };
        const flops = 2 * @as(f64, @floatFromInt(layer.out_channels * layer.height * layer.width * layer.in_channels * kernel_h * layer.kernel));
        try report(out, layer.name, &call, flops);
    }
    if (std.mem.indexOf(u8, "rec gemm 40x120 * 120x6625", filter) != null) {
        const a = try randomTensor(random, &.{ 1, 40, 120 });
        defer a.release();
        const b = try randomTensor(random, &.{ 120, 6625 });
        defer b.release();
        const bias = try randomTensor(random, &.{6625});
        defer bias.release();
        const weights = (try packed_f32.packMatrix(b, false)).?;
        defer weights.release();
        const call: Call = .{ .options = .{ .gemm = .{ .has_bias = true } }, .inputs = &.{ a, b, bias }, .weights = (&weights)[0..1], .next = &next };
        try report(out, "rec gemm 40x120 * 120x6625", &call, 2 * 40 * 120 * 6625);
    }
    try out.flush();
}

fn report(out: *std.Io.Writer, name: []const u8, call: *const Call, flops: f64) !void {
    for ([_]u32{ 1, 2 }) |threads| {
        try settings.setNumThreads(threads);
        const ns = try medianNs(repetitionsFor(flops), call);
        const wall: f64 = @floatFromInt(ns[0]);
        const cpu: f64 = @floatFromInt(ns[1]);
        if (threads == 1) {
            try out.print("{s:<30} {d:>3} {d:>9.3} {d:>9.1} {d:>9.3} {d:>9.1}\n", .{ name, threads, wall / 1e6, flops / wall, cpu / 1e6, flops / cpu });
        } else {
            try out.print("{s:<30} {d:>3} {d:>9.3} {d:>9.1}\n", .{ name, threads, wall / 1e6, flops / wall });
        }
        try out.flush();
    }
}
