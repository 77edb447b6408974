//! Depthwise convolution benchmark: every depthwise layer of PaddleOCR det (1×3×320×320) and
//! rec (1×3×48×320), with the bias and hard-swish the ONNX importer fuses into them, run as
//! eager ops at 1 and 2 threads; per layer the median time and GFLOPS, per model the sum
//! over its layers (each layer times the number of nodes of that shape), which is what
//! `deno task bench:layers` reports as "conv depthwise" beside OpenVINO.
//!
//!   cd zig && zig build bench-depthwise [-- FILTER]   (ReleaseFast; FILTER keeps the layers
//!                                                     whose name contains it, e.g. "rec")
//!
//! At 1 thread a second pair of columns times the phased plane kernel alone
//! (kernels/conv_depthwise.zig) over the layer's planes, whichever kernel the op picks.
//!
//! Figures are the fastest of the repetitions; on a shared machine they are noisy, so compare two
//! builds by alternating runs of their installed binaries (zig-out/bin/depthwise_bench).
const std = @import("std");
const spindle = @import("spindle");

const settings = spindle.settings;
const tensor = spindle.tensor;
const ops = spindle.ops;
const kernels = spindle.kernels.conv;
const depthwise = spindle.kernels.conv_depthwise;

const Layer = struct {
    name: []const u8,
    /// Nodes of this shape in the model.
    count: usize,
    channels: usize,
    height: usize,
    width: usize,
    kernel: usize,
    /// Both strides, except the codes 0 = (2, 1) and 3 = (1, 2) (see `strides`).
    stride: usize = 1,
};

// The depthwise nodes of bench:layers' profile of det at 1×3×320×320 and rec at 1×3×48×320,
// and of the PaddleOCR mobile v2 classifier (cls) at 1×3×48×192.
const layers = [_]Layer{
    .{ .name = "det 16ch 160x160 k3", .count = 1, .channels = 16, .height = 160, .width = 160, .kernel = 3 },
    .{ .name = "det 32ch 160x160 k3/2", .count = 1, .channels = 32, .height = 160, .width = 160, .kernel = 3, .stride = 2 },
    .{ .name = "det 48ch 80x80 k3", .count = 1, .channels = 48, .height = 80, .width = 80, .kernel = 3 },
    .{ .name = "det 48ch 80x80 k3/2", .count = 1, .channels = 48, .height = 80, .width = 80, .kernel = 3, .stride = 2 },
    .{ .name = "det 96ch 40x40 k3", .count = 1, .channels = 96, .height = 40, .width = 40, .kernel = 3 },
    .{ .name = "det 96ch 40x40 k3/2", .count = 1, .channels = 96, .height = 40, .width = 40, .kernel = 3, .stride = 2 },
    .{ .name = "det 192ch 20x20 k5", .count = 4, .channels = 192, .height = 20, .width = 20, .kernel = 5 },
    .{ .name = "det 192ch 20x20 k5/2", .count = 1, .channels = 192, .height = 20, .width = 20, .kernel = 5, .stride = 2 },
    .{ .name = "det 384ch 10x10 k5", .count = 3, .channels = 384, .height = 10, .width = 10, .kernel = 5 },
    .{ .name = "rec 16ch 24x160 k3", .count = 1, .channels = 16, .height = 24, .width = 160, .kernel = 3 },
    .{ .name = "rec 32ch 24x160 k3", .count = 1, .channels = 32, .height = 24, .width = 160, .kernel = 3 },
    .{ .name = "rec 64ch 24x160 k3", .count = 1, .channels = 64, .height = 24, .width = 160, .kernel = 3 },
    .{ .name = "rec 64ch 24x160 k3/(2,1)", .count = 1, .channels = 64, .height = 24, .width = 160, .kernel = 3, .stride = 0 },
    .{ .name = "rec 128ch 12x160 k3", .count = 1, .channels = 128, .height = 12, .width = 160, .kernel = 3 },
    .{ .name = "rec 128ch 12x160 k3/(1,2)", .count = 1, .channels = 128, .height = 12, .width = 160, .kernel = 3, .stride = 3 },
    .{ .name = "rec 240ch 12x80 k5", .count = 4, .channels = 240, .height = 12, .width = 80, .kernel = 5 },
    .{ .name = "rec 240ch 12x80 k5/(2,1)", .count = 1, .channels = 240, .height = 12, .width = 80, .kernel = 5, .stride = 0 },
    .{ .name = "rec 480ch 6x80 k5", .count = 1, .channels = 480, .height = 6, .width = 80, .kernel = 5 },
    .{ .name = "rec 480ch 6x80 k5/(2,1)", .count = 1, .channels = 480, .height = 6, .width = 80, .kernel = 5, .stride = 0 },
    .{ .name = "rec 480ch 3x80 k5", .count = 1, .channels = 480, .height = 3, .width = 80, .kernel = 5 },
    .{ .name = "cls 8ch 24x96 k3/(2,1)", .count = 1, .channels = 8, .height = 24, .width = 96, .kernel = 3, .stride = 0 },
    .{ .name = "cls 24ch 12x96 k3/(2,1)", .count = 1, .channels = 24, .height = 12, .width = 96, .kernel = 3, .stride = 0 },
    .{ .name = "cls 32ch 6x96 k3", .count = 1, .channels = 32, .height = 6, .width = 96, .kernel = 3 },
    .{ .name = "cls 32ch 6x96 k5/(2,1)", .count = 1, .channels = 32, .height = 6, .width = 96, .kernel = 5, .stride = 0 },
    .{ .name = "cls 88ch 3x96 k5", .count = 2, .channels = 88, .height = 3, .width = 96, .kernel = 5 },
    .{ .name = "cls 40ch 3x96 k5", .count = 1, .channels = 40, .height = 3, .width = 96, .kernel = 5 },
    .{ .name = "cls 48ch 3x96 k5", .count = 1, .channels = 48, .height = 3, .width = 96, .kernel = 5 },
    .{ .name = "cls 104ch 3x96 k5/(2,1)", .count = 1, .channels = 104, .height = 3, .width = 96, .kernel = 5, .stride = 0 },
    .{ .name = "cls 200ch 2x96 k5", .count = 2, .channels = 200, .height = 2, .width = 96, .kernel = 5 },
};

/// A layer's strides: `stride` on both axes, except the codes 0 = (2, 1) and 3 = (1, 2) of
/// rec's height-only and width-only downsampling.
fn strides(layer: Layer) [2]usize {
    return switch (layer.stride) {
        0 => .{ 2, 1 },
        3 => .{ 1, 2 },
        else => .{ layer.stride, layer.stride },
    };
}

fn outputs(layer: Layer) usize {
    const s = strides(layer);
    const padding = layer.kernel / 2;
    const height = (layer.height + 2 * padding - layer.kernel) / s[0] + 1;
    const width = (layer.width + 2 * padding - layer.kernel) / s[1] + 1;
    return layer.channels * height * width;
}

fn flopsOf(layer: Layer) f64 {
    return 2 * @as(f64, @floatFromInt(outputs(layer) * layer.kernel * layer.kernel));
}

fn nowNs() u64 {
    return @intCast(std.time.nanoTimestamp());
}

/// Wall time in ns of `repetitions` calls after two warm-ups, the fastest: on a machine
/// shared with other work the fastest call is the one least disturbed (the median moves
/// with the load). Each output is released at once.
fn fastestNs(repetitions: usize, options: ops.Options, inputs: []const *tensor.Tensor) !u64 {
    var samples: [101]u64 = undefined;
    std.debug.assert(repetitions <= samples.len);
    for (0..2) |_| (try ops.execute(options, inputs)).release();
    for (samples[0..repetitions]) |*sample| {
        const start = nowNs();
        const out = try ops.execute(options, inputs);
        sample.* = nowNs() - start;
        out.release();
    }
    std.mem.sort(u64, samples[0..repetitions], {}, std.sort.asc(u64));
    return samples[0];
}

/// The fastest of `repetitions` passes of the phased plane kernel alone over every plane of
/// `layer` on this thread (scratch and output allocated once): the op's time less its
/// allocation and fork-join. Null when the layer does not take that kernel.
fn kernelNs(repetitions: usize, layer: Layer, input: []const f32, weights: []const f32, bias: []const f32) !?u64 {
    const s = strides(layer);
    const padding = layer.kernel / 2;
    const window: kernels.Window = .{
        .image = .{ layer.height, layer.width },
        .grid = .{ (layer.height + 2 * padding - layer.kernel) / s[0] + 1, (layer.width + 2 * padding - layer.kernel) / s[1] + 1 },
        .kernel = .{ layer.kernel, layer.kernel },
        .stride = s,
        .padding = .{ padding, padding },
        .dilation = .{ 1, 1 },
    };
    if (!depthwise.applies(window)) return null;
    const plan: depthwise.Plan = .of(window);
    const allocator = std.heap.page_allocator;
    const scratch = try allocator.alloc(f32, plan.scratchFloats());
    defer allocator.free(scratch);
    const output = try allocator.alloc(f32, layer.channels * window.gridPlane());
    defer allocator.free(output);
    var best: u64 = std.math.maxInt(u64);
    for (0..repetitions + 2) |_| {
        const start = nowNs();
        depthwise.prepare(&plan, scratch);
        for (0..layer.channels) |c| {
            depthwise.plane(&plan, input[c * window.imagePlane() ..][0..window.imagePlane()], weights[c * window.taps() ..][0..window.taps()], bias[c], .{ .activation = .hard_swish }, scratch, output[c * window.gridPlane() ..][0..window.gridPlane()]);
        }
        best = @min(best, nowNs() - start);
    }
    return best;
}

fn randomTensor(random: std.Random, dims: []const usize) !*tensor.Tensor {
    const t = try tensor.createUninit(.float32, dims);
    for (t.f32Slice()) |*x| x.* = random.float(f32) * 2 - 1;
    return t;
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

    try out.print("== depthwise conv2d + bias + hard-swish, batch 1 (fastest of 41-101 calls; noisy on a shared machine)\n", .{});
    try out.print("{s:<28} {s:>3} {s:>3} {s:>9} {s:>9} {s:>9} {s:>9}\n", .{ "layer", "n", "thr", "ms", "GFLOPS", "plane ms", "GFLOPS" });
    // totals[model][threads]: det, rec and cls at 1 and 2 threads.
    const models = [_][]const u8{ "det", "rec", "cls" };
    var totals: [models.len][2]f64 = @splat(.{ 0, 0 });
    for (layers) |layer| {
        if (std.mem.indexOf(u8, layer.name, filter) == null) continue;
        const x = try randomTensor(random, &.{ 1, layer.channels, layer.height, layer.width });
        defer x.release();
        const weight = try randomTensor(random, &.{ layer.channels, 1, layer.kernel, layer.kernel });
        defer weight.release();
        const bias = try randomTensor(random, &.{layer.channels});
        defer bias.release();
        const s = strides(layer);
        const padding: i64 = @intCast(layer.kernel / 2);
        const options: ops.Options = .{ .conv2d = .{
            .stride = .{ @intCast(s[0]), @intCast(s[1]) },
            .padding = .{ padding, padding },
            .groups = @intCast(layer.channels),
            .has_bias = true,
            .activation = .hard_swish,
        } };
        const inputs = [_]*tensor.Tensor{ x, weight, bias };
        const repetitions: usize = if (flopsOf(layer) < 4e6) 101 else 41;
        for ([_]u32{ 1, 2 }, 0..) |threads, t| {
            try settings.setNumThreads(threads);
            const ns = try fastestNs(repetitions, options, &inputs);
            const ms = @as(f64, @floatFromInt(ns)) / 1e6;
            const model = for (models, 0..) |prefix, index| {
                if (std.mem.startsWith(u8, layer.name, prefix)) break index;
            } else unreachable;
            totals[model][t] += ms * @as(f64, @floatFromInt(layer.count));
            try out.print("{s:<28} {d:>3} {d:>3} {d:>9.4} {d:>9.1}", .{ layer.name, layer.count, threads, ms, flopsOf(layer) / @as(f64, @floatFromInt(ns)) });
            if (t == 0) {
                if (try kernelNs(repetitions, layer, x.f32Slice(), weight.f32Slice(), bias.f32Slice())) |kernel_ns| {
                    try out.print(" {d:>9.4} {d:>9.1}", .{ @as(f64, @floatFromInt(kernel_ns)) / 1e6, flopsOf(layer) / @as(f64, @floatFromInt(kernel_ns)) });
                }
            }
            try out.print("\n", .{});
            try out.flush();
        }
    }
    for (models, totals) |model, total| {
        try out.print("total {s}: {d:.3} ms at 1 thread, {d:.3} ms at 2\n", .{ model, total[0], total[1] });
    }
    try out.flush();
}
