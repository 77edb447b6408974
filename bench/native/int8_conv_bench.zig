//! conv2d_int8 on the layers of PaddleOCR det quantized by onnxruntime (det_qdq), where
//! `main.ts infer --profile` shows int8 slower than f32: the stem and the small 1 × 1
//! convolutions on large planes, and the 3 × 3 96 → 24 on 80 × 80. Each layer runs with a
//! float output and with a requantized, dequantized one (a QDQ pair, as det_qdq's convs
//! end), at 1 and 2 threads. Besides time it prints the output's bytes per ns: the small-K
//! layers move 4-byte activations in and out for a few multiplies each.
//!
//!   cd zig && zig build bench-int8 [-- FILTER]   (ReleaseFast; FILTER keeps the layers
//!       whose name contains it)
//!
//! Figures are medians over repetitions; on a shared machine they are noisy.
const std = @import("std");
const spindle = @import("spindle");

const settings = spindle.settings;
const tensor = spindle.tensor;
const quantized = spindle.quantized;

const Layer = struct {
    name: []const u8,
    in_channels: usize,
    out_channels: usize,
    /// Input height and width.
    height: usize,
    width: usize,
    kernel: usize = 1,
    stride: usize = 1,
    padding: usize = 0,

    fn outSize(layer: Layer, size: usize) usize {
        return (size + 2 * layer.padding - layer.kernel) / layer.stride + 1;
    }

    fn macs(layer: Layer) f64 {
        const plane = layer.outSize(layer.height) * layer.outSize(layer.width);
        return @floatFromInt(plane * layer.out_channels * layer.in_channels * layer.kernel * layer.kernel);
    }
};

const layers = [_]Layer{
    .{ .name = "det stem 3x3/2 3->16 @320", .in_channels = 3, .out_channels = 16, .height = 320, .width = 320, .kernel = 3, .stride = 2, .padding = 1 },
    .{ .name = "det 1x1 16->32 @160", .in_channels = 16, .out_channels = 32, .height = 160, .width = 160 },
    .{ .name = "det 1x1 32->48 @80", .in_channels = 32, .out_channels = 48, .height = 80, .width = 80 },
    .{ .name = "det 1x1 48->48 @80", .in_channels = 48, .out_channels = 48, .height = 80, .width = 80 },
    .{ .name = "det 1x1 12->96 @80", .in_channels = 12, .out_channels = 96, .height = 80, .width = 80 },
    .{ .name = "det 1x1 192->192 @20", .in_channels = 192, .out_channels = 192, .height = 20, .width = 20 },
    .{ .name = "det 3x3 96->24 @80", .in_channels = 96, .out_channels = 24, .height = 80, .width = 80, .kernel = 3, .padding = 1 },
};

fn nowNs() u64 {
    return @intCast(std.time.nanoTimestamp());
}

const Call = struct {
    q: quantized.Quantization,
    window: quantized.Window,
    x: *tensor.Tensor,
    packed_b: *tensor.Tensor,
    info: *tensor.Tensor,
    a_scale: *tensor.Tensor,
    a_zero: *tensor.Tensor,

    fn run(call: *const Call) !void {
        const out = try quantized.conv2dInt8(call.q, call.window, call.x, call.packed_b, call.info, call.a_scale, call.a_zero, null);
        out.release();
    }
};

fn medianNs(repetitions: usize, call: *const Call) !u64 {
    var wall: [256]u64 = undefined;
    std.debug.assert(repetitions <= wall.len);
    for (0..3) |_| try call.run();
    for (wall[0..repetitions]) |*sample| {
        const start = nowNs();
        try call.run();
        sample.* = nowNs() - start;
    }
    std.mem.sort(u64, wall[0..repetitions], {}, std.sort.asc(u64));
    return wall[repetitions / 2];
}

fn scalar(value: f32) !*tensor.Tensor {
    const t = try tensor.createUninit(.float32, &.{1});
    t.f32Slice()[0] = value;
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

    try out.print("== conv2d_int8 (u8 activations, s8 weights, per-channel scales), batch 1, medians; noisy on a shared machine\n", .{});
    try out.print("{s:<28} {s:<6} {s:>3} {s:>9} {s:>9} {s:>11}\n", .{ "layer", "output", "thr", "ms", "GMAC/s", "out GB/s" });
    for (layers) |layer| {
        if (std.mem.indexOf(u8, layer.name, filter) == null) continue;
        const x = try tensor.createUninit(.float32, &.{ 1, layer.in_channels, layer.height, layer.width });
        defer x.release();
        // Post-activation values as det's are: mostly small, a long positive tail.
        for (x.f32Slice()) |*v| v.* = @max(random.floatNorm(f32), -0.3);
        const k = layer.in_channels * layer.kernel * layer.kernel;
        const w = try tensor.createUninit(.int32, &.{ layer.out_channels, k });
        defer w.release();
        for (w.i32Slice()) |*v| v.* = random.intRangeAtMost(i32, -127, 127);
        const packed_b = try quantized.packInt8(w, @intCast(k), @intCast(layer.out_channels), true);
        defer packed_b.release();
        const n = layer.out_channels;
        const info = try tensor.createUninit(.float32, &.{ 4, n });
        defer info.release();
        const rows = info.f32Slice();
        for (0..n) |j| {
            var sum: f32 = 0;
            for (w.i32Slice()[j * k ..][0..k]) |v| sum += @floatFromInt(v);
            rows[j] = 0.002 * (1 + random.float(f32));
            rows[n + j] = random.float(f32) - 0.5;
            rows[2 * n + j] = 0;
            rows[3 * n + j] = sum;
        }
        const a_scale = try scalar(4.0 / 255.0);
        defer a_scale.release();
        const a_zero = try scalar(20);
        defer a_zero.release();
        const window: quantized.Window = .{
            .kernel = .{ layer.kernel, layer.kernel },
            .stride = .{ layer.stride, layer.stride },
            .padding = .{ layer.padding, layer.padding },
            .dilation = .{ 1, 1 },
        };
        const out_bytes: f64 = @floatFromInt(n * layer.outSize(layer.height) * layer.outSize(layer.width) * @sizeOf(f32));
        for ([_]bool{ false, true }) |requantize| {
            const call: Call = .{
                .q = .{ .n = n, .k = k, .a_integer = false, .a_min = 0, .a_max = 255, .requantize = requantize, .dequantize_output = requantize, .out_scale = 0.05, .out_zero = 10, .out_min = 0, .out_max = 255 },
                .window = window,
                .x = x,
                .packed_b = packed_b,
                .info = info,
                .a_scale = a_scale,
                .a_zero = a_zero,
            };
            for ([_]u32{ 1, 2 }) |threads| {
                try settings.setNumThreads(threads);
                const ns: f64 = @floatFromInt(try medianNs(if (layer.macs() < 2e7) 201 else 81, &call));
                try out.print("{s:<28} {s:<6} {d:>3} {d:>9.3} {d:>9.1} {d:>11.2}\n", .{ layer.name, if (requantize) "qdq" else "float", threads, ns / 1e6, layer.macs() / ns, out_bytes / ns });
                try out.flush();
            }
        }
    }
    try out.flush();
}
