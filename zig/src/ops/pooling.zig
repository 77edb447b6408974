//! max_pool2d, avg_pool2d and adaptive_avg_pool2d on NCHW float32 tensors: PyTorch's shape
//! rules (output size, ceil mode, padding at most half the kernel), output allocation and
//! the split of output rows over the intra-op pool (grains from parallel.zig). Kernels live
//! in kernels/pooling.zig.
const std = @import("std");
const status = @import("../status.zig");
const tensor = @import("../tensor.zig");
const settings = @import("../settings.zig");
const intra_op = @import("../pool/intra_op.zig");
const parallel = @import("parallel.zig");
const kernels = @import("../kernels/pooling.zig");
const conv = @import("conv.zig");
const shape_ops = @import("shape.zig");

const Error = status.Error;
const Tensor = tensor.Tensor;
const Window = kernels.Window;

/// Parameters as they arrive from the FFI (checked here). Pairs are [height, width].
pub const Options = struct {
    kernel: [2]i64,
    stride: [2]i64,
    padding: [2]i64 = .{ 0, 0 },
    dilation: [2]i64 = .{ 1, 1 },
    ceil_mode: bool = false,
};

pub const Kind = union(enum) {
    max,
    average: kernels.AverageOptions,
};

/// PyTorch's pooling output size along one axis; the effective kernel fits the padded
/// input (checked by the caller).
fn outputSize(image: usize, effective: usize, stride: usize, padding: usize, ceil_mode: bool) usize {
    const padded = image + 2 * padding;
    std.debug.assert(effective <= padded);
    const rounding = if (ceil_mode) stride - 1 else 0;
    var size = ((padded - effective) +| rounding) / stride + 1;
    // In ceil mode the last window must start inside the input or its left padding.
    if (ceil_mode and (size - 1) *| stride >= image + padding) size -= 1;
    return size;
}

fn poolWindow(comptime op: []const u8, input: *const Tensor, image: [4]usize, options: Options) Error!Window {
    const kernel = try conv.checkedPair(op, "kernel size", options.kernel, 1);
    const stride = try conv.checkedPair(op, "stride", options.stride, 1);
    const padding = try conv.checkedPair(op, "padding", options.padding, 0);
    const dilation = try conv.checkedPair(op, "dilation", options.dilation, 1);
    const effective = try conv.effectiveKernel(op, kernel, dilation);
    if (padding[0] > effective[0] / 2 or padding[1] > effective[1] / 2) {
        return status.fail(error.InvalidArgument, op ++ ": padding {f} must be at most half of the effective kernel size {f}", .{ status.shape(&padding), status.shape(&effective) });
    }
    var grid: [2]usize = undefined;
    for (0..2) |axis| {
        // 2·padding ≤ effective, which fits in usize; the sum with the image may not.
        const padded = std.math.add(usize, image[2 + axis], 2 * padding[axis]) catch
            return status.fail(error.TooLarge, op ++ ": padding {f} overflows the padded size", .{status.shape(&padding)});
        if (effective[axis] > padded) {
            return status.fail(error.ShapeMismatch, op ++ ": input {f} is smaller than the kernel {f} (dilated to {f}, padding {f})", .{
                status.shape(input.dims()), status.shape(&kernel), status.shape(&effective), status.shape(&padding),
            });
        }
        grid[axis] = outputSize(image[2 + axis], effective[axis], stride[axis], padding[axis], options.ceil_mode);
    }
    return .{ .image = .{ image[2], image[3] }, .grid = grid, .kernel = kernel, .stride = stride, .padding = padding, .dilation = dilation };
}

/// Max or average pooling, as torch.nn.functional.max_pool2d / avg_pool2d, of a [N, C, H, W]
/// or [C, H, W] input.
pub fn pool2d(comptime op: []const u8, kind: Kind, input: *Tensor, options: Options) Error!*Tensor {
    try conv.requireFloat(op, "input", input);
    const image = try conv.imageDims(op, input);
    if (image[1] == 0) return status.fail(error.ShapeMismatch, op ++ ": input {f} has no channels", .{status.shape(input.dims())});
    if (kind == .average) {
        if (options.dilation[0] != 1 or options.dilation[1] != 1) return status.fail(error.InvalidArgument, op ++ ": average pooling has no dilation", .{});
        if (kind.average.divisor) |d| {
            if (!(d != 0) or !std.math.isFinite(d)) return status.fail(error.InvalidArgument, op ++ ": divisor must be a finite non-zero number, got {d}", .{d});
        }
    }
    const window = try poolWindow(op, input, image, options);
    const x = try shape_ops.contiguous(input);
    defer x.release();
    const shape = conv.outputDims(input, image[0], image[1], window.grid);
    const out = try tensor.createUninit(.float32, shape.dims[0..shape.len]);
    errdefer out.release();
    if (out.numel() == 0) return out;
    const Context = struct {
        window: Window,
        kind: Kind,
        input: []const f32,
        output: []f32,
        fn body(context: *const @This(), begin: usize, end: usize) Error!void {
            const w = context.window;
            for (begin..end) |row| {
                const plane_index = row / w.grid[0];
                const oy = row % w.grid[0];
                const plane = context.input[plane_index * w.imagePlane() ..][0..w.imagePlane()];
                const output = context.output[row * w.grid[1] ..][0..w.grid[1]];
                switch (context.kind) {
                    .max => kernels.maxPoolRow(w, plane, oy, output),
                    .average => |average| kernels.avgPoolRow(w, plane, oy, average, output),
                }
            }
        }
    };
    const context: Context = .{ .window = window, .kind = kind, .input = x.f32Slice(), .output = out.f32Slice() };
    const rows = image[0] * image[1] * window.grid[0];
    const work_per_row = @max(1, window.grid[1] * window.taps());
    try intra_op.parallelForTyped(0, rows, parallel.grain(.medium, work_per_row), &context, Context.body);
    return out;
}

/// Adaptive average pooling to `size` = [height, width], as
/// torch.nn.functional.adaptive_avg_pool2d.
pub fn adaptiveAvgPool2d(input: *Tensor, size_input: [2]i64) Error!*Tensor {
    const op = "adaptive_avg_pool2d";
    try conv.requireFloat(op, "input", input);
    const image = try conv.imageDims(op, input);
    const size = try conv.checkedPair(op, "output size", size_input, 0);
    for (0..2) |axis| {
        // adaptiveRange computes (o + 1)·in: keep it from overflowing.
        _ = std.math.mul(usize, size[axis], image[2 + axis]) catch
            return status.fail(error.TooLarge, op ++ ": output size {f} is too large for input {f}", .{ status.shape(&size), status.shape(input.dims()) });
    }
    const x = try shape_ops.contiguous(input);
    defer x.release();
    const shape = conv.outputDims(input, image[0], image[1], size);
    const out = try tensor.createUninit(.float32, shape.dims[0..shape.len]);
    errdefer out.release();
    if (out.numel() == 0) return out;
    const Context = struct {
        image: [2]usize,
        size: [2]usize,
        input: []const f32,
        output: []f32,
        fn body(context: *const @This(), begin: usize, end: usize) Error!void {
            const plane_size = context.image[0] * context.image[1];
            for (begin..end) |row| {
                const plane = context.input[(row / context.size[0]) * plane_size ..][0..plane_size];
                const output = context.output[row * context.size[1] ..][0..context.size[1]];
                kernels.adaptiveAvgRow(plane, context.image[0], context.image[1], context.size[0], row % context.size[0], output);
            }
        }
    };
    const context: Context = .{ .image = .{ image[2], image[3] }, .size = size, .input = x.f32Slice(), .output = out.f32Slice() };
    const rows = image[0] * image[1] * size[0];
    const window_area = (std.math.divCeil(usize, image[2], size[0]) catch unreachable) * (std.math.divCeil(usize, image[3], size[1]) catch unreachable);
    const work_per_row = @max(1, size[1] * (window_area + 1));
    try intra_op.parallelForTyped(0, rows, parallel.grain(.medium, work_per_row), &context, Context.body);
    return out;
}

const testing = std.testing;

fn randomInput(random: std.Random, dims: []const usize) !*Tensor {
    const t = try tensor.createUninit(.float32, dims);
    for (t.f32Slice()) |*x| x.* = random.float(f32) * 2 - 1;
    return t;
}

test "pool2d matches the plane references at 1 and 2 threads" {
    settings.resetForTesting();
    defer settings.resetForTesting();
    var prng = std.Random.DefaultPrng.init(41);
    const cases = [_]Options{
        .{ .kernel = .{ 1, 1 }, .stride = .{ 1, 1 } },
        .{ .kernel = .{ 3, 3 }, .stride = .{ 2, 2 }, .padding = .{ 1, 1 } },
        .{ .kernel = .{ 3, 3 }, .stride = .{ 2, 2 }, .padding = .{ 1, 1 }, .ceil_mode = true },
        .{ .kernel = .{ 2, 3 }, .stride = .{ 3, 1 }, .padding = .{ 1, 1 }, .ceil_mode = true },
        .{ .kernel = .{ 3, 2 }, .stride = .{ 1, 2 }, .padding = .{ 2, 0 }, .dilation = .{ 2, 1 } },
    };
    for ([_]i64{ 1, 2 }) |threads| {
        try settings.setNumThreads(threads);
        for ([_][4]usize{ .{ 1, 1, 1, 1 }, .{ 3, 5, 7, 11 }, .{ 1, 64, 40, 40 } }) |dims| for (cases) |options| {
            const x = try randomInput(prng.random(), &dims);
            defer x.release();
            const effective_h = (options.kernel[0] - 1) * options.dilation[0] + 1;
            if (@as(usize, @intCast(effective_h)) > dims[2] + 2 * @as(usize, @intCast(options.padding[0]))) continue;
            if (@as(usize, @intCast(options.kernel[1])) > dims[3] + 2 * @as(usize, @intCast(options.padding[1]))) continue;
            const is_dilated = options.dilation[0] != 1;
            for ([_]Kind{ .max, .{ .average = .{ .count_include_pad = true } }, .{ .average = .{ .count_include_pad = false, .divisor = 2 } } }) |kind| {
                if (kind == .average and is_dilated) continue;
                const out = try pool2d("pool", kind, x, options);
                defer out.release();
                const window = try poolWindow("pool", x, dims, options);
                var expected: [2048]f32 = undefined;
                for (0..dims[0] * dims[1]) |plane| {
                    const source = x.f32Slice()[plane * window.imagePlane() ..][0..window.imagePlane()];
                    const got = out.f32Slice()[plane * window.gridPlane() ..][0..window.gridPlane()];
                    const want = expected[0..window.gridPlane()];
                    switch (kind) {
                        .max => kernels.referenceMaxPool(window, source, want),
                        .average => |average| kernels.referenceAvgPool(window, source, average, want),
                    }
                    for (want, got) |w, g| try testing.expectApproxEqAbs(w, g, 1e-6);
                }
            }
        };
    }
}

test "pooling refuses bad windows with typed errors and keeps 3-D inputs 3-D" {
    const x = try tensor.createZeroed(.float32, &.{ 2, 5, 6 });
    defer x.release();
    const max_kind: Kind = .max;
    try testing.expectError(error.InvalidArgument, pool2d("max_pool2d", max_kind, x, .{ .kernel = .{ 2, 2 }, .stride = .{ 2, 2 }, .padding = .{ 2, 0 } }));
    try testing.expectError(error.InvalidArgument, pool2d("max_pool2d", max_kind, x, .{ .kernel = .{ 0, 2 }, .stride = .{ 2, 2 } }));
    try testing.expectError(error.InvalidArgument, pool2d("max_pool2d", max_kind, x, .{ .kernel = .{ 2, 2 }, .stride = .{ 0, 2 } }));
    try testing.expectError(error.ShapeMismatch, pool2d("max_pool2d", max_kind, x, .{ .kernel = .{ 7, 2 }, .stride = .{ 1, 1 } }));
    try testing.expectError(error.InvalidArgument, pool2d("avg_pool2d", .{ .average = .{ .count_include_pad = true, .divisor = 0 } }, x, .{ .kernel = .{ 2, 2 }, .stride = .{ 2, 2 } }));
    const out = try pool2d("max_pool2d", max_kind, x, .{ .kernel = .{ 2, 2 }, .stride = .{ 2, 2 }, .ceil_mode = true });
    defer out.release();
    try testing.expectEqualSlices(usize, &.{ 2, 3, 3 }, out.dims());
    try testing.expectError(error.InvalidArgument, adaptiveAvgPool2d(x, .{ -1, 2 }));
    try testing.expectError(error.TooLarge, adaptiveAvgPool2d(x, .{ 1 << 40, 1 << 40 }));
    const flat = try tensor.createZeroed(.float32, &.{ 5, 6 });
    defer flat.release();
    try testing.expectError(error.ShapeMismatch, adaptiveAvgPool2d(flat, .{ 1, 1 }));
}

test "adaptive_avg_pool2d matches the reference at 1 and 2 threads" {
    settings.resetForTesting();
    defer settings.resetForTesting();
    var prng = std.Random.DefaultPrng.init(42);
    for ([_]i64{ 1, 2 }) |threads| {
        try settings.setNumThreads(threads);
        for ([_][2][4]usize{ .{ .{ 3, 5, 7, 11 }, .{ 0, 0, 3, 4 } }, .{ .{ 1, 2, 3, 5 }, .{ 0, 0, 7, 8 } }, .{ .{ 1, 200, 7, 7 }, .{ 0, 0, 1, 1 } } }) |case| {
            const dims = case[0];
            const x = try randomInput(prng.random(), &dims);
            defer x.release();
            const out = try adaptiveAvgPool2d(x, .{ @intCast(case[1][2]), @intCast(case[1][3]) });
            defer out.release();
            var expected: [64]f32 = undefined;
            const in_plane = dims[2] * dims[3];
            const out_plane = case[1][2] * case[1][3];
            for (0..dims[0] * dims[1]) |plane| {
                kernels.referenceAdaptiveAvg(x.f32Slice()[plane * in_plane ..][0..in_plane], dims[2], dims[3], case[1][2], case[1][3], expected[0..out_plane]);
                for (expected[0..out_plane], out.f32Slice()[plane * out_plane ..][0..out_plane]) |w, g| try testing.expectApproxEqAbs(w, g, 1e-6);
            }
        }
    }
}
