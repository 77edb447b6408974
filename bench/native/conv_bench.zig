//! Convolution benchmark (issue: GEMM/conv), measured in one run: conv2d on ResNet-18 and
//! ResNet-50 layer shapes at batch 1, at 1 and 2 threads, against a plain GEMM of the same
//! M×N×K (M = out channels, N = output pixels, K = in channels · kh · kw) — the GEMM that
//! im2col turns the convolution into. Both run as eager ops (output allocated per call).
//! The depthwise layer is compared with a dense GEMM of the same FLOP count (M = channels,
//! K = 9), since its own per-channel GEMMs (M = 1) would flatter it.
//!
//!   cd zig && zig build bench-conv [-- FILTER]   (ReleaseFast; FILTER keeps the layers whose
//!                                                name contains it, e.g. "det" or "dw")
//!
//! Figures are medians over repetitions; on a shared machine they are noisy.
const std = @import("std");
const spindle = @import("spindle");

const settings = spindle.settings;
const tensor = spindle.tensor;
const ops = spindle.ops;

const Layer = struct {
    name: []const u8,
    in_channels: usize,
    out_channels: usize,
    size: usize,
    kernel: usize,
    stride: usize = 1,
    padding: usize = 0,
    groups: usize = 1,

    fn outSize(layer: Layer) usize {
        return (layer.size + 2 * layer.padding - layer.kernel) / layer.stride + 1;
    }

    /// The GEMM with the convolution's FLOPs: out channels × pixels × in/groups·k² (for
    /// groups = 1 exactly the im2col GEMM; for depthwise a dense stand-in).
    fn gemmShape(layer: Layer) [3]usize {
        const n = layer.outSize() * layer.outSize();
        return .{ layer.out_channels, n, layer.in_channels / layer.groups * layer.kernel * layer.kernel };
    }

    fn flops(layer: Layer) f64 {
        const shape = layer.gemmShape();
        return 2 * @as(f64, @floatFromInt(shape[0] * shape[1] * shape[2]));
    }
};

const layers = [_]Layer{
    .{ .name = "r18 conv1 7x7/2 3->64 @224", .in_channels = 3, .out_channels = 64, .size = 224, .kernel = 7, .stride = 2, .padding = 3 },
    .{ .name = "r18 3x3 64->64 @56", .in_channels = 64, .out_channels = 64, .size = 56, .kernel = 3, .padding = 1 },
    .{ .name = "r18 3x3 128->128 @28", .in_channels = 128, .out_channels = 128, .size = 28, .kernel = 3, .padding = 1 },
    .{ .name = "r18 3x3/2 128->128 @28", .in_channels = 128, .out_channels = 128, .size = 28, .kernel = 3, .stride = 2, .padding = 1 },
    .{ .name = "r18 3x3 256->256 @14", .in_channels = 256, .out_channels = 256, .size = 14, .kernel = 3, .padding = 1 },
    .{ .name = "r18 3x3 512->512 @7", .in_channels = 512, .out_channels = 512, .size = 7, .kernel = 3, .padding = 1 },
    .{ .name = "r50 1x1 256->64 @56", .in_channels = 256, .out_channels = 64, .size = 56, .kernel = 1 },
    .{ .name = "r50 1x1 64->256 @56", .in_channels = 64, .out_channels = 256, .size = 56, .kernel = 1 },
    .{ .name = "r50 1x1 1024->256 @14", .in_channels = 1024, .out_channels = 256, .size = 14, .kernel = 1 },
    .{ .name = "r50 1x1 2048->512 @7", .in_channels = 2048, .out_channels = 512, .size = 7, .kernel = 1 },
    .{ .name = "dw 3x3 128ch @56", .in_channels = 128, .out_channels = 128, .size = 56, .kernel = 3, .padding = 1, .groups = 128 },
    // PaddleOCR det (640×640 input): its slowest layers in bench/results/layers_det.txt.
    .{ .name = "det stem 3x3/2 3->16 @640", .in_channels = 3, .out_channels = 16, .size = 640, .kernel = 3, .stride = 2, .padding = 1 },
    .{ .name = "det dw 3x3 16ch @320", .in_channels = 16, .out_channels = 16, .size = 320, .kernel = 3, .padding = 1, .groups = 16 },
    .{ .name = "det dw 3x3/2 32ch @320", .in_channels = 32, .out_channels = 32, .size = 320, .kernel = 3, .stride = 2, .padding = 1, .groups = 32 },
    .{ .name = "det dw 3x3 48ch @160", .in_channels = 48, .out_channels = 48, .size = 160, .kernel = 3, .padding = 1, .groups = 48 },
    .{ .name = "det 1x1 16->32 @320", .in_channels = 16, .out_channels = 32, .size = 320, .kernel = 1 },
    .{ .name = "det 1x1 12->96 @160", .in_channels = 12, .out_channels = 96, .size = 160, .kernel = 1 },
    .{ .name = "det 1x1 48->48 @160", .in_channels = 48, .out_channels = 48, .size = 160, .kernel = 1 },
    .{ .name = "det 3x3 96->24 @160", .in_channels = 96, .out_channels = 24, .size = 160, .kernel = 3, .padding = 1 },
};

fn nowNs() u64 {
    return @intCast(std.time.nanoTimestamp());
}

/// One op call with its inputs and typed options (ops.zig's schema); the output is released
/// at once.
const Call = struct {
    options: ops.Options,
    inputs: []const *tensor.Tensor,

    fn run(call: *const Call) !void {
        const out = try ops.execute(call.options, call.inputs);
        out.release();
    }
};

/// Median wall time in ns of `repetitions` calls after two warm-ups.
fn medianNs(repetitions: usize, call: *const Call) !u64 {
    var samples: [64]u64 = undefined;
    std.debug.assert(repetitions <= samples.len);
    try call.run();
    try call.run();
    for (samples[0..repetitions]) |*sample| {
        const start = nowNs();
        try call.run();
        sample.* = nowNs() - start;
    }
    std.mem.sort(u64, samples[0..repetitions], {}, std.sort.asc(u64));
    return samples[repetitions / 2];
}

fn randomTensor(random: std.Random, dims: []const usize) !*tensor.Tensor {
    const t = try tensor.createUninit(.float32, dims);
    for (t.f32Slice()) |*x| x.* = random.float(f32) * 2 - 1;
    return t;
}

fn gflops(flops: f64, ns: u64) f64 {
    return flops / @as(f64, @floatFromInt(ns));
}

pub fn main() !void {
    var prng = std.Random.DefaultPrng.init(1);
    const random = prng.random();
    const stdout_file = std.fs.File.stdout();
    var out_buffer: [4096]u8 = undefined;
    // Streaming, not positional: when stdout is a file that a script appended to first, a
    // positional writer would overwrite from offset 0.
    var writer = stdout_file.writerStreaming(&out_buffer);
    const out = &writer.interface;

    try out.print("== conv2d vs GEMM of the same M x N x K, batch 1 (GFLOPS, medians; noisy on a shared machine)\n", .{});
    try out.print("{s:<28} {s:>16} {s:>3} {s:>9} {s:>9} {s:>9} {s:>7}\n", .{ "layer", "M x N x K", "thr", "conv ms", "conv GF/s", "gemm GF/s", "ratio" });
    var ratio_product: [2]f64 = .{ 1, 1 };
    // An optional argument keeps only the layers whose name contains it ("det", "dw").
    var args = std.process.args();
    _ = args.skip();
    const filter = args.next() orelse "";
    var count_run: usize = 0;
    for (layers) |layer| {
        if (std.mem.indexOf(u8, layer.name, filter) == null) continue;
        count_run += 1;
        const x = try randomTensor(random, &.{ 1, layer.in_channels, layer.size, layer.size });
        defer x.release();
        const weight = try randomTensor(random, &.{ layer.out_channels, layer.in_channels / layer.groups, layer.kernel, layer.kernel });
        defer weight.release();
        const bias = try randomTensor(random, &.{layer.out_channels});
        defer bias.release();
        const shape = layer.gemmShape();
        const a = try randomTensor(random, &.{ shape[0], shape[2] });
        defer a.release();
        const b = try randomTensor(random, &.{ shape[2], shape[1] });
        defer b.release();
        const stride: i64 = @intCast(layer.stride);
        const padding: i64 = @intCast(layer.padding);
        const conv_call: Call = .{
            .options = .{ .conv2d = .{
                .stride = .{ stride, stride },
                .padding = .{ padding, padding },
                .groups = @intCast(layer.groups),
                .has_bias = true,
            } },
            .inputs = &.{ x, weight, bias },
        };
        const gemm_call: Call = .{ .options = .{ .mm = .{} }, .inputs = &.{ a, b } };
        const repetitions: usize = if (layer.flops() < 5e7) 41 else 21;
        for ([_]u32{ 1, 2 }, 0..) |threads, t| {
            try settings.setNumThreads(threads);
            const conv_ns = try medianNs(repetitions, &conv_call);
            const gemm_ns = try medianNs(repetitions, &gemm_call);
            const conv_rate = gflops(layer.flops(), conv_ns);
            const gemm_rate = gflops(layer.flops(), gemm_ns);
            ratio_product[t] *= conv_rate / gemm_rate;
            var dims_buffer: [32]u8 = undefined;
            const dims = try std.fmt.bufPrint(&dims_buffer, "{d}x{d}x{d}", .{ shape[0], shape[1], shape[2] });
            try out.print("{s:<28} {s:>16} {d:>3} {d:>9.3} {d:>9.1} {d:>9.1} {d:>7.2}\n", .{
                layer.name, dims, threads, @as(f64, @floatFromInt(conv_ns)) / 1e6, conv_rate, gemm_rate, conv_rate / gemm_rate,
            });
            try out.flush();
        }
    }
    const count: f64 = @floatFromInt(@max(count_run, 1));
    try out.print("geometric mean ratio: {d:.2} at 1 thread, {d:.2} at 2 threads\n", .{
        std.math.pow(f64, ratio_product[0], 1 / count),
        std.math.pow(f64, ratio_product[1], 1 / count),
    });
    try out.flush();
}
