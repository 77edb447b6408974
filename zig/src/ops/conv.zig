//! conv2d and conv_transpose2d on NCHW float32 tensors: shape checks, output allocation, the
//! choice of algorithm and the split over the intra-op pool (grains and thread counts from
//! parallel.zig). Kernels live in kernels/conv.zig and the GEMM in kernels/gemm.zig.
//!
//! conv2d picks, per shape:
//! - depthwise (one input channel per group): direct vectorised kernels, whole planes split
//!   into stride phases (kernels/conv_depthwise.zig) in parallel, or rows for wide maps;
//! - pointwise (1×1, stride 1, no padding): with few input channels a direct kernel
//!   (kernels/conv_pointwise.zig), else a GEMM straight on the input, no unfolding;
//! - few input channels (in · kh · kw ≤ 64, an RGB stem): a direct kernel on buffered input
//!   rows (kernels/conv_pointwise.zig);
//! - stride 1 or 2 with the native GEMM: an implicit GEMM reading, in place, copies of the
//!   input split by stride phase (or column tap) instead of the unfolded matrix (runImplicit);
//! - otherwise im2col + GEMM, in column blocks sized for L2, each worker unfolding its own
//!   block into its own slice of one scratch buffer allocated per call (at most 64 MiB).
//! The epilogue (bias, activation, affine) is applied to each GEMM block while it is still in cache.
//!
//! conv_transpose2d is a GEMM (weightᵀ · input) into column blocks and a col2im scatter;
//! with a 2×2 kernel of stride 2 and few input channels, a direct kernel that stores each
//! product in place (kernels/conv_pointwise.zig), no scatter.
const std = @import("std");
const status = @import("../status.zig");
const tensor = @import("../tensor.zig");
const settings = @import("../settings.zig");
const intra_op = @import("../pool/intra_op.zig");
const parallel = @import("parallel.zig");
const storage_cache = @import("../storage_cache.zig");
const gemm = @import("../kernels/gemm.zig");
const gemm_native = @import("../kernels/gemm_native.zig");
const build_options = @import("build_options");
const kernels = @import("../kernels/conv.zig");
const pointwise_kernels = @import("../kernels/conv_pointwise.zig");
const depthwise_kernels = @import("../kernels/conv_depthwise.zig");
const depthwise_lanes = @import("../kernels/conv_depthwise_lanes.zig");
const squeeze_kernels = @import("../kernels/conv_squeeze.zig");
const f32_direct = @import("../kernels/conv_f32_direct.zig");
const shape_ops = @import("shape.zig");
const linalg = @import("linalg.zig");
const bf16 = @import("bf16.zig");
const packed_f32 = @import("packed_f32.zig");

const Error = status.Error;
const Tensor = tensor.Tensor;
const Geometry = kernels.Geometry;
const Window = kernels.Window;

/// Parameters as they arrive from the FFI (checked here). Pairs are [height, width].
pub const Options = struct {
    stride: [2]i64 = .{ 1, 1 },
    padding: [2]i64 = .{ 0, 0 },
    dilation: [2]i64 = .{ 1, 1 },
    /// Transposed convolution only: extra rows and columns at the bottom and right.
    output_padding: [2]i64 = .{ 0, 0 },
    groups: i64 = 1,
    /// Fused after the bias, for graph fusion: activation, then · scale + shift.
    epilogue: kernels.Epilogue = .{},
};

/// Upper bound on the im2col / col2im scratch of one call, over all workers.
pub const scratch_bytes_max: usize = 64 << 20;
/// Target size of one worker's unfolded block, about one core's L2: the GEMM reads it
/// while it is still in cache. (On the 2-core EPYC dev machine 256 KiB to 2 MiB measured
/// within noise of each other; larger blocks mean fewer GEMM calls, smaller ones less
/// cache traffic.)
const block_bytes_target: usize = 1 << 20;
/// Narrower blocks make the GEMM repack its A panel too often for the work it gets.
const block_columns_min: usize = 256;

pub fn requireFloat(comptime op: []const u8, comptime which: []const u8, t: *const Tensor) Error!void {
    if (t.dtype != .float32) {
        return status.fail(error.DTypeMismatch, op ++ ": " ++ which ++ " must be float32, got {s}", .{t.dtype.name()});
    }
}

/// A [height, width] parameter that must be ≥ `minimum`.
pub fn checkedPair(comptime op: []const u8, comptime name: []const u8, value: [2]i64, comptime minimum: i64) Error![2]usize {
    if (value[0] < minimum or value[1] < minimum) {
        const what = comptime if (minimum > 0) "positive" else "non-negative";
        return status.fail(error.InvalidArgument, op ++ ": " ++ name ++ " must be " ++ what ++ ", got {f}", .{status.shape(&value)});
    }
    return .{ @intCast(value[0]), @intCast(value[1]) };
}

/// The [C, H, W] or [N, C, H, W] input as (batch, channels, height, width).
pub fn imageDims(comptime op: []const u8, input: *const Tensor) Error![4]usize {
    const dims = input.dims();
    if (dims.len != 3 and dims.len != 4) {
        return status.fail(error.ShapeMismatch, op ++ ": expected a 3-D [C, H, W] or 4-D [N, C, H, W] input, got shape {f}", .{status.shape(dims)});
    }
    const batch = if (dims.len == 4) dims[0] else 1;
    const rest = dims[dims.len - 3 ..];
    if (rest[1] == 0 or rest[2] == 0) {
        return status.fail(error.ShapeMismatch, op ++ ": input {f} has an empty spatial dimension", .{status.shape(dims)});
    }
    return .{ batch, rest[0], rest[1], rest[2] };
}

/// Output dims with the input's rank: [N, C, H, W], or [C, H, W] for an unbatched input.
pub fn outputDims(input: *const Tensor, batch: usize, channels: usize, size: [2]usize) struct { dims: [4]usize, len: usize } {
    if (input.ndim == 3) return .{ .dims = .{ channels, size[0], size[1], 0 }, .len = 3 };
    return .{ .dims = .{ batch, channels, size[0], size[1] }, .len = 4 };
}

/// dilation · (kernel − 1) + 1 on each axis, refusing overflow.
pub fn effectiveKernel(comptime op: []const u8, kernel: [2]usize, dilation: [2]usize) Error![2]usize {
    var effective: [2]usize = undefined;
    for (0..2) |axis| {
        const span = std.math.mul(usize, dilation[axis], kernel[axis] - 1) catch
            return status.fail(error.TooLarge, op ++ ": dilation {f} times kernel {f} overflows", .{ status.shape(&dilation), status.shape(&kernel) });
        effective[axis] = span + 1;
    }
    return effective;
}

fn checkBias(comptime op: []const u8, bias: ?*const Tensor, out_channels: usize) Error!void {
    const b = bias orelse return;
    try requireFloat(op, "bias", b);
    if (b.ndim != 1 or b.shape[0] != out_channels) {
        return status.fail(error.ShapeMismatch, op ++ ": bias has shape {f}, expected [{d}]", .{ status.shape(b.dims()), out_channels });
    }
}

fn checkKernel(comptime op: []const u8, weight: *const Tensor, options: Options) Error![2]usize {
    try requireFloat(op, "weight", weight);
    if (weight.ndim != 4) return status.fail(error.ShapeMismatch, op ++ ": expected a 4-D weight, got shape {f}", .{status.shape(weight.dims())});
    if (weight.shape[2] == 0 or weight.shape[3] == 0) {
        return status.fail(error.ShapeMismatch, op ++ ": weight {f} has an empty kernel", .{status.shape(weight.dims())});
    }
    if (options.groups < 1) return status.fail(error.InvalidArgument, op ++ ": groups must be positive, got {d}", .{options.groups});
    return .{ weight.shape[2], weight.shape[3] };
}

/// Checks conv2d's arguments and returns its geometry: the window's image is the input and
/// its grid the output.
fn convGeometry(input: *const Tensor, weight: *const Tensor, bias: ?*const Tensor, options: Options) Error!Geometry {
    const op = "conv2d";
    try requireFloat(op, "input", input);
    const image = try imageDims(op, input);
    const kernel = try checkKernel(op, weight, options);
    const groups: usize = @intCast(options.groups);
    const stride = try checkedPair(op, "stride", options.stride, 1);
    const padding = try checkedPair(op, "padding", options.padding, 0);
    const dilation = try checkedPair(op, "dilation", options.dilation, 1);
    const expected_channels = std.math.mul(usize, weight.shape[1], groups) catch std.math.maxInt(usize);
    if (image[1] != expected_channels) {
        return status.fail(error.ShapeMismatch, op ++ ": input {f} has {d} channels, but weight {f} with groups={d} expects {d}", .{
            status.shape(input.dims()), image[1], status.shape(weight.dims()), groups, expected_channels,
        });
    }
    const out_channels = weight.shape[0];
    if (out_channels % groups != 0) {
        return status.fail(error.ShapeMismatch, op ++ ": weight {f} has {d} output channels, not divisible by groups={d}", .{ status.shape(weight.dims()), out_channels, groups });
    }
    try checkBias(op, bias, out_channels);
    const effective = try effectiveKernel(op, kernel, dilation);
    // Both padded sizes first: the message below prints the pair whole.
    var padded: [2]usize = @splat(0);
    for (0..2) |axis| {
        // Saturated, the doubled padding makes the sum overflow: one check, one message.
        padded[axis] = std.math.add(usize, image[2 + axis], 2 *| padding[axis]) catch
            return status.fail(error.TooLarge, op ++ ": padding {f} overflows the padded size", .{status.shape(&padding)});
    }
    var grid: [2]usize = @splat(0);
    for (0..2) |axis| {
        if (effective[axis] > padded[axis]) {
            return status.fail(error.ShapeMismatch, op ++ ": input {f} padded to {f} is smaller than the dilated kernel {f} of weight {f}", .{
                status.shape(input.dims()), status.shape(&padded), status.shape(&effective), status.shape(weight.dims()),
            });
        }
        grid[axis] = (padded[axis] - effective[axis]) / stride[axis] + 1;
    }
    return .{
        .batch = image[0],
        .in_channels = image[1],
        .out_channels = out_channels,
        .groups = groups,
        .window = .{ .image = .{ image[2], image[3] }, .grid = grid, .kernel = kernel, .stride = stride, .padding = padding, .dilation = dilation },
    };
}

/// Checks conv_transpose2d's arguments and returns its geometry: the window's grid is the
/// input and its image the output.
fn transposeGeometry(input: *const Tensor, weight: *const Tensor, bias: ?*const Tensor, options: Options) Error!Geometry {
    const op = "conv_transpose2d";
    try requireFloat(op, "input", input);
    const image = try imageDims(op, input);
    const kernel = try checkKernel(op, weight, options);
    const groups: usize = @intCast(options.groups);
    const stride = try checkedPair(op, "stride", options.stride, 1);
    const padding = try checkedPair(op, "padding", options.padding, 0);
    const dilation = try checkedPair(op, "dilation", options.dilation, 1);
    const output_padding = try checkedPair(op, "output padding", options.output_padding, 0);
    if (image[1] != weight.shape[0]) {
        return status.fail(error.ShapeMismatch, op ++ ": input {f} has {d} channels, but weight {f} expects {d}", .{
            status.shape(input.dims()), image[1], status.shape(weight.dims()), weight.shape[0],
        });
    }
    if (image[1] % groups != 0) {
        return status.fail(error.ShapeMismatch, op ++ ": input {f} has {d} channels, not divisible by groups={d}", .{ status.shape(input.dims()), image[1], groups });
    }
    const out_channels = std.math.mul(usize, weight.shape[1], groups) catch
        return status.fail(error.TooLarge, op ++ ": weight {f} with groups={d} overflows the channel count", .{ status.shape(weight.dims()), groups });
    try checkBias(op, bias, out_channels);
    for (0..2) |axis| {
        if (output_padding[axis] >= @max(stride[axis], dilation[axis])) {
            return status.fail(error.InvalidArgument, op ++ ": output padding {f} must be smaller than either stride {f} or dilation {f}", .{
                status.shape(&output_padding), status.shape(&stride), status.shape(&dilation),
            });
        }
    }
    const effective = try effectiveKernel(op, kernel, dilation);
    var size: [2]usize = undefined;
    for (0..2) |axis| {
        // (in − 1)·stride + effective kernel + output padding − 2·padding
        const spread = std.math.mul(usize, image[2 + axis] - 1, stride[axis]) catch
            return status.fail(error.TooLarge, op ++ ": input {f} with stride {f} overflows the output size", .{ status.shape(input.dims()), status.shape(&stride) });
        const full = std.math.add(usize, spread, effective[axis] +| output_padding[axis]) catch
            return status.fail(error.TooLarge, op ++ ": input {f} and weight {f} overflow the output size", .{ status.shape(input.dims()), status.shape(weight.dims()) });
        const trimmed = std.math.mul(usize, 2, padding[axis]) catch std.math.maxInt(usize);
        if (trimmed >= full) {
            return status.fail(error.ShapeMismatch, op ++ ": padding {f} is too large for input {f} and weight {f}: the output would be empty", .{
                status.shape(&padding), status.shape(input.dims()), status.shape(weight.dims()),
            });
        }
        size[axis] = full - trimmed;
    }
    return .{
        .batch = image[0],
        .in_channels = image[1],
        .out_channels = out_channels,
        .groups = groups,
        .window = .{ .image = size, .grid = .{ image[2], image[3] }, .kernel = kernel, .stride = stride, .padding = padding, .dilation = dilation },
    };
}

/// The contiguous operands of one call and its output.
const Data = struct {
    input: []const f32,
    weight: []const f32,
    bias: ?[]const f32,
    output: []f32,
    epilogue: kernels.Epilogue,
    /// The weight packed for a bf16 program (conv2dBf16): the GEMMs run on it instead.
    bf16: ?*const bf16.Weights = null,
    /// The weight packed in f32 at load (conv2dPacked): the GEMMs read its panels instead
    /// of packing the weight on every call.
    packed_f32: ?*const packed_f32.Weights = null,
};

/// Contiguous copies (or retained originals) of a call's tensors, released together.
const Operands = struct {
    input: *Tensor,
    weight: *Tensor,
    bias: ?*Tensor,

    fn init(input: *Tensor, weight: *Tensor, bias: ?*Tensor) Error!Operands {
        const x = try shape_ops.contiguous(input);
        errdefer x.release();
        const w = try shape_ops.contiguous(weight);
        errdefer w.release();
        const b = if (bias) |t| try shape_ops.contiguous(t) else null;
        return .{ .input = x, .weight = w, .bias = b };
    }

    fn deinit(operands: Operands) void {
        operands.input.release();
        operands.weight.release();
        if (operands.bias) |b| b.release();
    }

    fn data(operands: Operands, output: *Tensor, epilogue: kernels.Epilogue) Data {
        return .{
            .input = operands.input.f32Slice(),
            .weight = operands.weight.f32Slice(),
            .bias = if (operands.bias) |b| b.f32Slice() else null,
            .output = output.f32Slice(),
            .epilogue = epilogue,
        };
    }
};

/// One conv2d call's contiguous operands and its allocated output (conv2d, conv2dBf16).
const Call = struct {
    operands: Operands,
    out: *Tensor,
    data: Data,

    fn prepare(input: *Tensor, weight: *Tensor, bias: ?*Tensor, geometry: Geometry, epilogue: kernels.Epilogue) Error!Call {
        const operands = try Operands.init(input, weight, bias);
        errdefer operands.deinit();
        const shape = outputDims(input, geometry.batch, geometry.out_channels, geometry.window.grid);
        const out = try tensor.createUninit(.float32, shape.dims[0..shape.len]);
        return .{ .operands = operands, .out = out, .data = operands.data(out, epilogue) };
    }
};

/// 2-D convolution, as torch.nn.functional.conv2d: input [N, C, H, W] (or [C, H, W]),
/// weight [out, C / groups, kh, kw], bias [out].
pub fn conv2d(input: *Tensor, weight: *Tensor, bias: ?*Tensor, options: Options) Error!*Tensor {
    return conv2dWith(input, weight, bias, options, null);
}

/// conv2d with the weight packed in f32 at load (ops/packed_f32.zig): the same algorithms,
/// their GEMMs on the packed panels. A call whose weight does not match the packed one runs
/// conv2d as is.
pub fn conv2dPacked(input: *Tensor, weight: *Tensor, bias: ?*Tensor, options: Options, weights: *const packed_f32.Weights) Error!*Tensor {
    const groups = std.math.cast(usize, options.groups) orelse 0;
    const fits = weight.ndim == 4 and weights.groups == groups and weights.rows * groups == weight.shape[0] and
        weights.cols == weight.shape[1] * weight.shape[2] * weight.shape[3];
    return conv2dWith(input, weight, bias, options, if (fits) weights else null);
}

fn conv2dWith(input: *Tensor, weight: *Tensor, bias: ?*Tensor, options: Options, packed_weights: ?*const packed_f32.Weights) Error!*Tensor {
    const geometry = try convGeometry(input, weight, bias, options);
    const call = try Call.prepare(input, weight, bias, geometry, options.epilogue);
    defer call.operands.deinit();
    errdefer call.out.release();
    const out = call.out;
    if (out.numel() == 0) return out;
    var data = call.data;
    data.packed_f32 = packed_weights;
    const implicit = implicitScratch(geometry, implicit_stride_max);
    if (geometry.inPerGroup() == 1) {
        try runDepthwise(geometry, data);
    } else if (isOnePixel(geometry)) {
        try runOnePixel(geometry, data);
    } else if (isPointwise(geometry.window) and geometry.groups == 1 and pointwise_kernels.applies(geometry.in_channels)) {
        try runPointwise(geometry, data);
    } else if (geometry.groups == 1 and pointwise_kernels.smallApplies(geometry.window, geometry.in_channels) and !(isOneByOne(geometry.window) and implicit != null)) {
        try runSmall(geometry, data);
    } else if (directF32Scratch(geometry)) |floats| {
        try runDirect(f32_direct, geometry, data, null, floats);
    } else if (implicit) |floats| {
        try runImplicit(geometry, data, floats);
    } else {
        try runUnfolded(geometry, data);
    }
    return out;
}

/// conv2d with the weight packed for bf16 at load (ops/bf16.zig): the direct kernel (AMX or
/// AVX512_BF16) at stride 1 where the weight was packed for it (runDirect), else the bf16 GEMM on the packed
/// weight, reading the padded input in place at stride 1 (runImplicit), else after im2col
/// (none for a plain 1×1), with the same bias and epilogue. A call whose
/// weight does not match the packed one, or a depthwise one, runs conv2d in f32.
pub fn conv2dBf16(input: *Tensor, weight: *Tensor, bias: ?*Tensor, options: Options, weights: *const bf16.Weights) Error!*Tensor {
    const geometry = try convGeometry(input, weight, bias, options);
    const depth = geometry.inPerGroup() * geometry.window.taps();
    const fits = geometry.inPerGroup() > 1 and weights.groups == geometry.groups and weights.rows == geometry.outPerGroup() and weights.cols == depth;
    const direct_scratch = if (weights.form != .direct) null else switch (weights.kernel) {
        inline else => |which| if (weights.taps == geometry.window.taps()) directScratch(bf16.directKernel(which), geometry, false) else null,
    };
    // A one-pixel 1×1 (squeeze-and-excitation) in f32: a few dot products, which the bf16
    // GEMMs would pad to whole tiles.
    if (!fits or (weights.form == .direct and direct_scratch == null) or isOnePixel(geometry)) return conv2d(input, weight, bias, options);
    const call = try Call.prepare(input, weight, bias, geometry, options.epilogue);
    defer call.operands.deinit();
    errdefer call.out.release();
    const out = call.out;
    if (out.numel() == 0) return out;
    var data = call.data;
    data.bf16 = weights;
    if (direct_scratch) |floats| {
        switch (weights.kernel) {
            inline else => |which| try runDirect(bf16.directKernel(which), geometry, data, weights.directWords(), floats),
        }
    } else if (implicitScratch(geometry, 1)) |floats| {
        try runImplicit(geometry, data, floats);
    } else {
        try runUnfolded(geometry, data);
    }
    return out;
}

/// 2-D transposed convolution, as torch.nn.functional.conv_transpose2d: input [N, C, H, W]
/// (or [C, H, W]), weight [C, out / groups, kh, kw], bias [out].
pub fn convTranspose2d(input: *Tensor, weight: *Tensor, bias: ?*Tensor, options: Options) Error!*Tensor {
    const geometry = try transposeGeometry(input, weight, bias, options);
    const operands = try Operands.init(input, weight, bias);
    defer operands.deinit();
    const shape = outputDims(input, geometry.batch, geometry.out_channels, geometry.window.image);
    const out = try tensor.createUninit(.float32, shape.dims[0..shape.len]);
    errdefer out.release();
    if (out.numel() == 0) return out;
    // Validated non-negative by transposeGeometry.
    const output_padding: [2]usize = .{ @intCast(options.output_padding[0]), @intCast(options.output_padding[1]) };
    if (pointwise_kernels.upsampleApplies(geometry.window, geometry.in_channels, geometry.groups, output_padding)) {
        try runUpsample(geometry, operands.data(out, options.epilogue));
    } else {
        try runTransposed(geometry, operands.data(out, options.epilogue));
    }
    return out;
}

// ---------------------------------------------------------------------------------------
// Depthwise: one input plane per output plane, output rows in parallel.

fn runDepthwise(geometry: Geometry, data: Data) Error!void {
    const window = geometry.window;
    std.debug.assert(geometry.inPerGroup() == 1);
    const Context = struct {
        geometry: Geometry,
        data: Data,
        /// Rows [begin, end) of the stacked output planes, one plane's share at a time.
        fn body(context: *const @This(), begin: usize, end: usize) Error!void {
            const g = context.geometry;
            const w = g.window;
            var row = begin;
            while (row < end) {
                const plane = row / w.grid[0];
                const oy = row % w.grid[0];
                const rows = @min(end - row, w.grid[0] - oy);
                const p = DepthwisePlane.of(g, context.data, plane);
                if (kernels.bufferedApplies(w)) {
                    kernels.depthwiseRowsBuffered(w, p.source, p.weights, p.bias, context.data.epilogue, oy, oy + rows, p.output);
                } else {
                    kernels.depthwiseRows(w, p.source, p.weights, p.bias, context.data.epilogue, oy, oy + rows, p.output);
                }
                row += rows;
            }
        }
    };
    const planes = geometry.batch * geometry.out_channels;
    const flops = (2 *| data.output.len) *| window.taps();
    const threads = parallel.threadsForFlops(flops);
    // Short rows without a channel multiplier: channels in the lanes (see lanes_width_max).
    if (geometry.outPerGroup() == 1 and depthwise_lanes.applies(window) and window.grid[1] <= lanes_width_max) {
        const lanes_plan: depthwise_lanes.Plan = .of(window);
        if (lanes_plan.scratchFloats() <= plane_scratch_max) return runDepthwiseLanes(geometry, data, threads, &lanes_plan);
    }
    // Phased planes (kernels/conv_depthwise.zig) where their output rows go by row groups
    // (kernel height 3 or 5) or the rows are narrow: bench/native/depthwise_bench.zig, 1
    // thread, against the buffered rows: 1.3-3.9x faster on det's layers and 1.0-1.8x on
    // rec's but det's 160-wide stride-1 one (within 2%). The flat pass they fall back to for
    // other kernel heights loses to the buffered rows on wide maps.
    const plan: depthwise_kernels.Plan = if (depthwise_kernels.applies(window)) .of(window) else undefined;
    const wide = window.grid[1] >= buffered_width_min and kernels.bufferedApplies(window);
    const phased = depthwise_kernels.applies(window) and (plan.by_rows or !wide);
    if (phased and planes >= threads and plan.scratchFloats() <= plane_scratch_max) {
        return runDepthwisePlanes(geometry, data, @min(threads, planes), &plan);
    }
    const context: Context = .{ .geometry = geometry, .data = data };
    const rows = geometry.batch * geometry.out_channels * window.grid[0];
    std.debug.assert(rows * window.grid[1] == data.output.len);
    const work_per_row = @max(1, window.grid[1] * window.taps());
    try intra_op.parallelForTyped(0, rows, parallel.grain(.medium, work_per_row), &context, Context.body);
}

/// Widest output rows that take the channels-in-lanes kernel (kernels/conv_depthwise_lanes.zig)
/// rather than the phased planes. Kernel alone, 1 thread, whole layers, fastest of 200 calls
/// (Zen 5): 384 × 10 × 10 5 × 5 24.5 against 52.2 µs, 192 × 20 × 20 5 × 5 at stride 2
/// (10 columns) 19.3 against 32.2; 20-column outputs measured faster alone (192 × 20 × 20
/// 5 × 5 36.9 against 42.4, 96 × 40 × 40 3 × 3 at stride 2 25.9 against 30.0) but not inside
/// det (infer --profile, 1 thread, 5 alternating rounds: 0.99-1.01× and 1.27×), and 40 or
/// more columns lose alone too (96 × 40 × 40 3 × 3 45.8 against 40.8, rec's 80 and 160
/// 1.3-1.5×). det's 10 × 10 layers inside the model: 0.058 → 0.043 ms (0.74×) and
/// 0.036 → 0.034 ms (0.94×).
const lanes_width_max = 12;

/// Depthwise with channels in the vector lanes (kernels/conv_depthwise_lanes.zig): blocks of
/// 16 channels of one image, each worker its contiguous share in its own scratch, zeroed once.
fn runDepthwiseLanes(geometry: Geometry, data: Data, threads: usize, plan: *const depthwise_lanes.Plan) Error!void {
    const lanes = depthwise_lanes.lanes;
    const Work = struct {
        geometry: Geometry,
        data: Data,
        plan: *const depthwise_lanes.Plan,
        blocks_per_image: usize,

        fn prepare(work: *const @This(), own: []f32) void {
            depthwise_lanes.prepare(work.plan, own);
        }

        fn run(work: *const @This(), own: []f32, item: usize) void {
            const g = work.geometry;
            const w = g.window;
            const d = work.data;
            const image = item / work.blocks_per_image;
            const first = item % work.blocks_per_image * lanes;
            const count = @min(lanes, g.out_channels - first);
            const plane = image * g.out_channels + first;
            depthwise_lanes.block(
                work.plan,
                d.input[plane * w.imagePlane() ..],
                count,
                d.weight[first * w.taps() ..][0 .. count * w.taps()],
                if (d.bias) |values| values[first..][0..count] else null,
                d.epilogue,
                own,
                d.output[plane * w.gridPlane() ..][0 .. count * w.gridPlane()],
            );
        }
    };
    const blocks_per_image = std.math.divCeil(usize, geometry.out_channels, lanes) catch unreachable;
    const blocks = geometry.batch * blocks_per_image;
    const work: Work = .{ .geometry = geometry, .data = data, .plan = plan, .blocks_per_image = blocks_per_image };
    try runShares(Work, &work, blocks, @max(1, @min(threads, blocks)), plan.scratchFloats());
}

/// Narrowest output rows the buffered depthwise rows take rather than the phased flat pass
/// (see runDepthwise).
const buffered_width_min = 64;

/// The operands of output plane `plane` (batch-major, then channel) of a depthwise conv.
const DepthwisePlane = struct {
    source: []const f32,
    weights: []const f32,
    bias: f32,
    output: []f32,

    fn of(g: Geometry, data: Data, plane: usize) DepthwisePlane {
        const w = g.window;
        const b = plane / g.out_channels;
        const channel = plane % g.out_channels;
        const input_channel = channel / g.outPerGroup();
        return .{
            .source = data.input[(b * g.in_channels + input_channel) * w.imagePlane() ..][0..w.imagePlane()],
            .weights = data.weight[channel * w.taps() ..][0..w.taps()],
            .bias = if (data.bias) |values| values[channel] else 0,
            .output = data.output[plane * w.gridPlane() ..][0..w.gridPlane()],
        };
    }
};

/// Floats of padded plane (and flat output) one depthwise worker may use: 1 MiB, about one
/// core's L2, so the plane stays in cache while every tap reads it.
const plane_scratch_max = (1 << 20) / @sizeOf(f32);

/// Depthwise by whole planes (kernels/conv_depthwise.zig), each worker its contiguous share
/// of the planes in its own scratch, zeroed once.
fn runDepthwisePlanes(geometry: Geometry, data: Data, workers: usize, plan: *const depthwise_kernels.Plan) Error!void {
    const Work = struct {
        geometry: Geometry,
        data: Data,
        plan: *const depthwise_kernels.Plan,

        fn prepare(work: *const @This(), own: []f32) void {
            depthwise_kernels.prepare(work.plan, own);
        }

        fn run(work: *const @This(), own: []f32, plane: usize) void {
            const p = DepthwisePlane.of(work.geometry, work.data, plane);
            depthwise_kernels.plane(work.plan, p.source, p.weights, p.bias, work.data.epilogue, own, p.output);
        }
    };
    const work: Work = .{ .geometry = geometry, .data = data, .plan = plan };
    try runShares(Work, &work, geometry.batch * geometry.out_channels, workers, plan.scratchFloats());
}

/// Runs `work.run(own, item)` for items [0, items) in `workers` contiguous shares, each worker
/// with its own `per_worker` floats of scratch, prepared once by `work.prepare(own)`.
fn runShares(comptime Work: type, work: *const Work, items: usize, workers: usize, per_worker: usize) Error!void {
    const scratch = try Scratch.init("conv2d", workers * per_worker);
    defer scratch.release();
    const Context = struct {
        work: *const Work,
        items: usize,
        workers: usize,
        per_worker: usize,
        scratch: []f32,

        fn body(context: *const @This(), begin: usize, end: usize) Error!void {
            for (begin..end) |worker| {
                const own = context.scratch[worker * context.per_worker ..][0..context.per_worker];
                context.work.prepare(own);
                for (context.items * worker / context.workers..context.items * (worker + 1) / context.workers) |item| {
                    context.work.run(own, item);
                }
            }
        }
    };
    const context: Context = .{ .work = work, .items = items, .workers = workers, .per_worker = per_worker, .scratch = scratch.values };
    try intra_op.parallelForTyped(0, workers, 1, &context, Context.body);
}

// ---------------------------------------------------------------------------------------
// Pointwise with few input channels: the direct kernel, column blocks in parallel.

fn runPointwise(geometry: Geometry, data: Data) Error!void {
    std.debug.assert(geometry.groups == 1 and isPointwise(geometry.window));
    const Context = struct {
        geometry: Geometry,
        data: Data,
        blocks_per_image: usize,

        /// Tasks [begin, end): column blocks of the images, image-major.
        fn body(context: *const @This(), begin: usize, end: usize) Error!void {
            const g = context.geometry;
            const n = g.window.gridPlane();
            for (begin..end) |task| {
                const image = task / context.blocks_per_image;
                const column_begin = (task % context.blocks_per_image) * pointwise_kernels.block_columns;
                const column_end = @min(n, column_begin + pointwise_kernels.block_columns);
                const d = context.data;
                pointwise_kernels.pointwise(d.weight, d.bias, d.epilogue, g.in_channels, d.input[image * g.in_channels * n ..][0 .. g.in_channels * n], n, column_begin, column_end, d.output[image * g.out_channels * n ..][0 .. g.out_channels * n]);
            }
        }
    };
    const n = geometry.window.gridPlane();
    const blocks_per_image = std.math.divCeil(usize, n, pointwise_kernels.block_columns) catch unreachable;
    const context: Context = .{ .geometry = geometry, .data = data, .blocks_per_image = blocks_per_image };
    const work_per_block = geometry.out_channels * geometry.in_channels * pointwise_kernels.block_columns;
    try intra_op.parallelForTyped(0, geometry.batch * blocks_per_image, parallel.grain(.medium, work_per_block), &context, Context.body);
}

/// A 1×1 convolution of one-pixel images (ungrouped, at least one input channel): one dot
/// product per output (kernels/conv_squeeze.zig), squeeze-and-excitation's fully connected
/// layers.
fn isOnePixel(geometry: Geometry) bool {
    return geometry.groups == 1 and geometry.in_channels > 0 and isPointwise(geometry.window) and geometry.window.imagePlane() == 1;
}

/// Outputs of one-pixel images through kernels/conv_squeeze.zig, image-major outputs in
/// parallel (in practice one chunk: a whole layer is M · K ≈ 10⁴ products).
fn runOnePixel(geometry: Geometry, data: Data) Error!void {
    std.debug.assert(isOnePixel(geometry));
    const Context = struct {
        geometry: Geometry,
        data: Data,

        /// Outputs [begin, end) of the stacked images, one image's share at a time.
        fn body(context: *const @This(), begin: usize, end: usize) Error!void {
            const g = context.geometry;
            const d = context.data;
            var at = begin;
            while (at < end) {
                const image = at / g.out_channels;
                const row = at % g.out_channels;
                const count = @min(end - at, g.out_channels - row);
                const input = d.input[image * g.in_channels ..][0..g.in_channels];
                const output = d.output[image * g.out_channels ..][0..g.out_channels];
                squeeze_kernels.rows(d.weight, d.bias, d.epilogue, input, row, row + count, output);
                at += count;
            }
        }
    };
    const context: Context = .{ .geometry = geometry, .data = data };
    try intra_op.parallelForTyped(0, geometry.batch * geometry.out_channels, parallel.grain(.medium, geometry.in_channels), &context, Context.body);
}

/// A convolution with few input channels (in · kh · kw ≤ 64: a network's first layer on
/// RGB) through the direct kernel, output rows of the stacked images in parallel.
fn runSmall(geometry: Geometry, data: Data) Error!void {
    std.debug.assert(geometry.groups == 1);
    const Context = struct {
        geometry: Geometry,
        data: Data,

        /// Output rows [begin, end) of the stacked images, one image's share at a time.
        fn body(context: *const @This(), begin: usize, end: usize) Error!void {
            const g = context.geometry;
            const w = g.window;
            const d = context.data;
            var row = begin;
            while (row < end) {
                const image = row / w.grid[0];
                const oy = row % w.grid[0];
                const rows = @min(end - row, w.grid[0] - oy);
                const input = d.input[image * g.in_channels * w.imagePlane() ..][0 .. g.in_channels * w.imagePlane()];
                const output = d.output[image * g.out_channels * w.gridPlane() ..][0 .. g.out_channels * w.gridPlane()];
                pointwise_kernels.smallConvRows(w, g.in_channels, input, d.weight, d.bias, d.epilogue, oy, oy + rows, output);
                row += rows;
            }
        }
    };
    const window = geometry.window;
    const context: Context = .{ .geometry = geometry, .data = data };
    const work_per_row = geometry.out_channels * geometry.in_channels * window.taps() * window.grid[1];
    try intra_op.parallelForTyped(0, geometry.batch * window.grid[0], parallel.grain(.medium, work_per_row), &context, Context.body);
}

// ---------------------------------------------------------------------------------------
// im2col + GEMM (and the pointwise GEMM without unfolding).

/// How a convolution's GEMMs are cut into tasks. Per image (batch × group) the GEMM is
/// C [m = out/groups, n = output pixels] = A [m, depth] · B [depth, n]; a task is one block of
/// rows × columns of C. Tasks run in order (image, column block, row block) and each worker
/// takes a contiguous range of them, so a worker unfolds a column block once for all its
/// row blocks.
const Plan = struct {
    images: usize,
    rows_per_block: usize,
    row_blocks: usize,
    columns_per_block: usize,
    column_blocks: usize,
    workers: usize,
    /// Floats of scratch each worker unfolds into (0 without unfolding).
    scratch_per_worker: usize,

    fn tasks(plan: Plan) usize {
        return plan.images * plan.column_blocks * plan.row_blocks;
    }
};

/// The widest column block that keeps one unfolded block near L2 size and `slots` blocks
/// of `depth` floats per column under the scratch limit.
fn blockColumnLimit(comptime op: []const u8, n: usize, depth: usize, slots: usize) Error!usize {
    const column_bytes = @max(depth, 1) * @sizeOf(f32);
    const cap = scratch_bytes_max / (column_bytes * slots);
    if (cap == 0) {
        return status.fail(error.TooLarge, op ++ ": one unfolded column of {d} floats per thread exceeds the {d}-byte scratch limit", .{ depth, scratch_bytes_max });
    }
    return @min(n, cap, @max(block_columns_min, block_bytes_target / column_bytes));
}

/// `packed_weight`: the weight (A) was packed at load, so a block repeats only B's packing
/// (or unfolding), never A's.
fn planBlocks(comptime op: []const u8, images: usize, m: usize, n: usize, depth: usize, threads: usize, unfold: bool, packed_weight: bool) Error!Plan {
    std.debug.assert(images > 0 and m > 0 and n > 0);
    std.debug.assert(threads > 0);
    const column_limit = if (unfold) try blockColumnLimit(op, n, depth, threads) else n;
    var column_blocks = std.math.divCeil(usize, n, column_limit) catch unreachable;
    var row_blocks: usize = 1;
    const parts = std.math.divCeil(usize, threads, images) catch unreachable;
    if (column_blocks < parts) {
        // Too few blocks for the workers. A row split repeats the B panel (and its
        // unfolding) per block, a column split repeats A: split the larger dimension, or
        // the columns when A is packed already (while they make 16-wide blocks).
        const rows_first = if (packed_weight) n / 16 < parts else m >= n;
        if (rows_first and m >= 32) {
            row_blocks = @min(std.math.divCeil(usize, parts, column_blocks) catch unreachable, m / 16);
        } else {
            column_blocks = @max(column_blocks, @min(parts, n / 16));
        }
    } else if (parts > 1 and column_blocks % parts != 0) {
        // One image: give every worker the same number of blocks.
        column_blocks = @min(std.mem.alignForward(usize, column_blocks, parts), @max(column_blocks, n / 16));
    }
    const columns_per_block = std.math.divCeil(usize, n, column_blocks) catch unreachable;
    const rows_per_block = std.math.divCeil(usize, m, row_blocks) catch unreachable;
    var plan: Plan = .{
        .images = images,
        .rows_per_block = rows_per_block,
        .row_blocks = std.math.divCeil(usize, m, rows_per_block) catch unreachable,
        .columns_per_block = columns_per_block,
        .column_blocks = std.math.divCeil(usize, n, columns_per_block) catch unreachable,
        .workers = 1,
        .scratch_per_worker = if (unfold) depth * columns_per_block else 0,
    };
    plan.workers = @min(threads, plan.tasks());
    std.debug.assert(plan.scratch_per_worker * plan.workers * @sizeOf(f32) <= scratch_bytes_max);
    return plan;
}

/// Scratch floats from the block cache (warm pages on repeated calls), freed by `release`.
const Scratch = struct {
    block: ?storage_cache.Block,
    values: []f32,

    fn init(comptime op: []const u8, count: usize) Error!Scratch {
        if (count == 0) return .{ .block = null, .values = &.{} };
        const bytes = count * @sizeOf(f32);
        std.debug.assert(bytes <= scratch_bytes_max);
        const block = storage_cache.allocate(bytes) catch
            return status.fail(error.OutOfMemory, op ++ ": out of memory allocating {d} bytes of scratch", .{bytes});
        const values: [*]f32 = @ptrCast(block.ptr);
        return .{ .block = block, .values = values[0..count] };
    }

    fn release(scratch: Scratch) void {
        if (scratch.block) |block| storage_cache.free(block);
    }
};

fn isPointwise(window: Window) bool {
    return window.kernel[0] == 1 and window.kernel[1] == 1 and window.stride[0] == 1 and window.stride[1] == 1 and
        window.padding[0] == 0 and window.padding[1] == 0;
}

fn runUnfolded(geometry: Geometry, data: Data) Error!void {
    const window = geometry.window;
    const m = geometry.outPerGroup();
    const n = window.gridPlane();
    const depth = geometry.inPerGroup() * window.taps();
    const images = geometry.batch * geometry.groups;
    const unfold = !isPointwise(window);
    const flops = (2 *| images) *| m *| n *| @max(depth, 1);
    var plan = try planBlocks("conv2d", images, m, n, depth, parallel.threadsForFlops(flops), unfold, data.packed_f32 != null);
    if (data.bf16 != null) {
        // The packed weight's row blocks start at multiples of the kernel's block rows.
        plan.rows_per_block = std.mem.alignForward(usize, plan.rows_per_block, bf16.conv_row_alignment);
        plan.row_blocks = std.math.divCeil(usize, m, plan.rows_per_block) catch unreachable;
        plan.workers = @min(plan.workers, plan.tasks());
    }
    if (data.packed_f32 != null) {
        // So do the f32 packed weight's, at multiples of its panels (14 rows: not a power of 2).
        plan.rows_per_block = std.mem.alignForwardAnyAlign(usize, plan.rows_per_block, gemm_native.native.panel_rows);
        plan.row_blocks = std.math.divCeil(usize, m, plan.rows_per_block) catch unreachable;
        if (!unfold) {
            // Column blocks of whole slivers: rec's 240 columns at 2 threads as 128 + 112,
            // not 120 + 120 (each with a ragged sliver). (Unfolded blocks keep their size:
            // it sizes the scratch.)
            plan.columns_per_block = std.mem.alignForward(usize, plan.columns_per_block, gemm_native.native.panel_cols);
            plan.column_blocks = std.math.divCeil(usize, n, plan.columns_per_block) catch unreachable;
        }
        plan.workers = @min(plan.workers, plan.tasks());
    }
    const scratch = try Scratch.init("conv2d", plan.workers * plan.scratch_per_worker);
    defer scratch.release();
    const context: UnfoldedContext = .{ .geometry = geometry, .data = data, .plan = plan, .unfold = unfold, .scratch = scratch.values };
    try intra_op.parallelForTyped(0, plan.workers, 1, &context, UnfoldedContext.body);
}

const UnfoldedContext = struct {
    geometry: Geometry,
    data: Data,
    plan: Plan,
    unfold: bool,
    scratch: []f32,

    /// Runs workers [begin, end): each its contiguous share of the tasks, in its own scratch.
    fn body(context: *const UnfoldedContext, begin: usize, end: usize) Error!void {
        const plan = context.plan;
        for (begin..end) |worker| {
            const scratch = context.scratch[worker * plan.scratch_per_worker ..][0..plan.scratch_per_worker];
            const task_begin = plan.tasks() * worker / plan.workers;
            const task_end = plan.tasks() * (worker + 1) / plan.workers;
            var unfolded: ?usize = null;
            for (task_begin..task_end) |task| try context.runTask(task, scratch, &unfolded);
        }
    }

    /// One block of one image's output: unfold (unless this worker just did), GEMM, bias
    /// and the epilogue.
    fn runTask(context: *const UnfoldedContext, task: usize, scratch: []f32, unfolded: *?usize) Error!void {
        const g = context.geometry;
        const plan = context.plan;
        const window = g.window;
        const row_block = task % plan.row_blocks;
        const column_task = task / plan.row_blocks;
        const column_block = column_task % plan.column_blocks;
        const image = column_task / plan.column_blocks;
        const b = image / g.groups;
        const group = image % g.groups;
        const m = g.outPerGroup();
        const n = window.gridPlane();
        const depth = g.inPerGroup() * window.taps();
        const row_begin = row_block * plan.rows_per_block;
        const rows = @min(plan.rows_per_block, m - row_begin);
        const column_begin = column_block * plan.columns_per_block;
        const columns = @min(plan.columns_per_block, n - column_begin);
        std.debug.assert(rows > 0 and columns > 0);

        const input = context.data.input[(b * g.in_channels + group * g.inPerGroup()) * window.imagePlane() ..][0 .. g.inPerGroup() * window.imagePlane()];
        var b_matrix: []const f32 = input[column_begin..];
        var ldb = n;
        if (context.unfold) {
            b_matrix = scratch[0 .. depth * columns];
            ldb = columns;
            if (unfolded.* != column_task) {
                kernels.im2col(window, input, g.inPerGroup(), column_begin, columns, scratch[0 .. depth * columns]);
                unfolded.* = column_task;
            }
        }
        const channel = group * m + row_begin;
        const c_offset = (b * g.out_channels + channel) * n + column_begin;
        if (context.data.bf16) |weights| {
            // The group's whole C block from row 0: the packed weight indexes rows from there.
            const group_offset = (b * g.out_channels + group * m) * n + column_begin;
            const c = context.data.output[group_offset..][0 .. (m - 1) * n + columns];
            try bf16.convBlock(weights, group, row_begin, rows, b_matrix, ldb, columns, c, n);
        } else if (context.data.packed_f32) |weights| {
            // The bias and epilogue are applied as the product is stored.
            return context.multiplyPacked(weights, group, row_begin, rows, columns, b_matrix, ldb, b * g.out_channels + group * m, column_begin);
        } else {
            try context.multiplyF32(rows, columns, depth, channel * depth, b_matrix, ldb, c_offset);
        }
        if (context.data.bias == null and context.data.epilogue.isLinear()) return;
        for (0..rows) |r| {
            const bias = if (context.data.bias) |values| values[channel + r] else 0;
            context.data.epilogue.apply(context.data.output[c_offset + r * n ..][0..columns], bias);
        }
    }

    /// Rows [row_begin, +rows) × `columns` of one group's GEMM on the f32 packed weight, into
    /// the output from plane `first_plane` (the group's first channel) and column_begin on,
    /// with the group's bias and the epilogue.
    fn multiplyPacked(context: *const UnfoldedContext, weights: *const packed_f32.Weights, group: usize, row_begin: usize, rows: usize, columns: usize, b_matrix: []const f32, ldb: usize, first_plane: usize, column_begin: usize) Error!void {
        const n = context.geometry.window.gridPlane();
        const m = weights.rows;
        const packed_a = weights.left(group);
        // The group's whole C block from row 0: the packed weight indexes rows from there.
        const args: gemm_native.native.ConvArgs = .{
            .packed_a = &packed_a,
            .b = b_matrix,
            .ldb = ldb,
            .n = columns,
            .c = context.data.output[first_plane * n + column_begin ..][0 .. (m - 1) * n + columns],
            .ldc = n,
            .bias = if (context.data.bias) |bias| bias[group * m ..][0..m] else null,
            .epilogue = context.data.epilogue,
        };
        try args.validate();
        gemm_native.native.runBlockConv(&args, row_begin, rows, 0, columns);
    }

    fn multiplyF32(context: *const UnfoldedContext, rows: usize, columns: usize, depth: usize, a_offset: usize, b_matrix: []const f32, ldb: usize, c_offset: usize) Error!void {
        const n = context.geometry.window.gridPlane();
        const args: gemm.Args = .{
            .trans_a = false,
            .trans_b = false,
            .m = rows,
            .n = columns,
            .k = depth,
            .alpha = 1,
            .a = context.data.weight[a_offset..][0 .. rows * depth],
            .lda = depth,
            .b = b_matrix,
            .ldb = ldb,
            .beta = 0,
            .c = context.data.output[c_offset..][0 .. (rows - 1) * n + columns],
            .ldc = n,
        };
        try args.validate();
        const tiling = gemm.plan(rows, columns, 1);
        gemm.runTiles(&args, tiling, 0, tiling.count());
    }
};

// ---------------------------------------------------------------------------------------
// Implicit GEMM (native BLAS): no unfolded matrix at all.
//
// Row (channel c, tap ky, kx) of the im2col matrix holds, at output position (oy, ox), the
// zero-padded input at (oy·s + ky·d, ox·s + kx·d). Split the padded input's rows into their
// stride phases (rows py, py + s, … for each py = ky·d mod s that some tap has), and its
// columns likewise into phases px (columns px, px + s, …), each copy ⌈W'/s⌉ wide: that row
// of im2col is then copy (py, px = kx·d mod s) itself, read from row ky·d / s, column
// kx·d / s on as one contiguous run per output row, if the flat output is computed at every
// column of the copies' width (the columns past the output width dropped afterwards). The
// GEMM reads those runs in place through an offset table (gemm_native IndirectB). Where
// those dropped columns would cost more than copying the input once per column tap, the
// columns are copied per tap instead (copy (py, kx) holds columns ox·s + kx·d, the output
// width): the flat output is then the output's own layout. Either way the copies hold the
// input at most kw times; im2col holds it kh·kw / s² times. The flat output is then copied
// to the real one with the bias and epilogue.

/// Largest stride the implicit GEMM takes: a copy per stride phase (only those taps read).
const implicit_stride_max = 2;
/// Fewest GEMM rows (output channels per group) for which the implicit GEMM copies the
/// input's columns per tap (see Phases.of).
const per_tap_rows_min = 96;

/// The copies of runImplicit's input: per input channel, one plane per (row phase, column
/// phase or column tap), `size` = [rows, columns] of each.
const Phases = struct {
    window: Window,
    /// Rows and columns of one copy: the padded input's rows over the row stride (rounded
    /// up), and its columns over the column stride, or the output width (per-tap columns).
    size: [2]usize,
    /// Columns copied per column tap (else per column phase).
    per_tap: bool,
    /// Per axis, whether some tap reads phase p (its offset k·d ≡ p modulo the stride).
    used: [2][implicit_stride_max]bool,
    /// Per axis, the slot of phase p among the used ones (copies are stored by slot).
    slot: [2][implicit_stride_max]usize,
    /// Per axis, how many phases are used.
    count: [2]usize,

    /// The copies of `window` for a GEMM of `rows` output channels (per group), or null
    /// past implicit_stride_max.
    fn of(window: Window, rows: usize) ?Phases {
        var phases: Phases = .{ .window = window, .size = undefined, .per_tap = false, .used = @splat(@splat(false)), .slot = undefined, .count = .{ 0, 0 } };
        for (0..2) |axis| {
            const stride = window.stride[axis];
            if (stride == 0 or stride > implicit_stride_max) return null;
            phases.size[axis] = std.math.divCeil(usize, window.image[axis] + 2 * window.padding[axis], stride) catch unreachable;
            for (0..window.kernel[axis]) |k| phases.used[axis][(k * window.dilation[axis]) % stride] = true;
            for (0..stride) |p| {
                phases.slot[axis][p] = phases.count[axis];
                if (phases.used[axis][p]) phases.count[axis] += 1;
            }
        }
        // Per-tap columns where the phase width passes the output width by more than 1/16
        // (an 8 × 8 map: 10 columns for 8) and the GEMM has rows enough to repay copying
        // the input kw times. Measured on Zen 5 at 1 thread (bench/results/conv_implicit.txt):
        // 128 rows on 8 × 8 maps 0.86x the time of phase columns at stride 1, 0.92x at
        // stride 2; 64 rows on 16 × 16 alike; 24 rows (det's neck) on 20 × 20 and 10 × 10
        // 1.16x and 1.19x; a 32 × 32 map (34 columns for 32) 1.1-1.6x, so it keeps phases.
        if (phases.size[1] * 16 > window.grid[1] * 17 and rows >= per_tap_rows_min) {
            phases.per_tap = true;
            phases.size[1] = window.grid[1];
            phases.count[1] = window.kernel[1];
        }
        return phases;
    }

    fn planeFloats(phases: Phases) usize {
        return phases.size[0] * phases.size[1];
    }

    /// Floats of one input channel's copies, stored one plane after the other.
    fn channelFloats(phases: Phases) usize {
        return phases.count[0] * phases.count[1] * phases.planeFloats();
    }

    /// Where the run of tap (ky, kx) starts in its channel's copies.
    fn tapOffset(phases: Phases, ky: usize, kx: usize) usize {
        const w = phases.window;
        const oy = ky * w.dilation[0];
        const ox = kx * w.dilation[1];
        const column_slot = if (phases.per_tap) kx else phases.slot[1][ox % w.stride[1]];
        const column = if (phases.per_tap) 0 else ox / w.stride[1];
        const slot = phases.slot[0][oy % w.stride[0]] * phases.count[1] + column_slot;
        return slot * phases.planeFloats() + (oy / w.stride[0]) * phases.size[1] + column;
    }

    /// Fills one channel's copies (channelFloats) from its image plane.
    fn fill(phases: Phases, plane: []const f32, target: []f32) void {
        std.debug.assert(target.len == phases.channelFloats());
        const w = phases.window;
        const columns = if (phases.per_tap) w.kernel[1] else w.stride[1];
        for (0..w.stride[0]) |py| for (0..columns) |column| {
            if (!phases.used[0][py]) continue;
            if (!phases.per_tap and !phases.used[1][column]) continue;
            const column_slot = if (phases.per_tap) column else phases.slot[1][column];
            const offset = if (phases.per_tap) column * w.dilation[1] else column;
            const slot = phases.slot[0][py] * phases.count[1] + column_slot;
            kernels.phasePlane(w, plane, .{ py, offset }, phases.size, target[slot * phases.planeFloats() ..][0..phases.planeFloats()]);
        };
    }
};

/// Floats of zeros past the last channel's copies: with phase columns the last rows' runs
/// end up to (kw − 1)·dw / sw past them (see IndirectB.validate, which checks).
fn implicitSlack(window: Window) usize {
    return (window.kernel[1] - 1) * window.dilation[1] + 64;
}

/// The scratch floats of runImplicit (copies, flat output, offset table), or null when it
/// does not apply: another BLAS, a stride past `stride_max` (1 for the bf16 kernels), a
/// plain pointwise conv (already a GEMM on its input), or scratch beyond the limit.
fn implicitScratch(geometry: Geometry, stride_max: usize) ?usize {
    const window = geometry.window;
    if (build_options.blas != .native) return null;
    if (window.stride[0] > stride_max or window.stride[1] > stride_max or isPointwise(window)) return null;
    const phases = Phases.of(window, geometry.outPerGroup()) orelse return null;
    const padded = std.math.mul(usize, geometry.inPerGroup(), phases.channelFloats()) catch return null;
    const flat = std.math.mul(usize, geometry.outPerGroup(), window.grid[0] * phases.size[1]) catch return null;
    const offsets = implicitOffsetFloats(geometry.inPerGroup() * window.taps());
    const total = padded +| implicitSlack(window) +| flat +| offsets;
    return if (total *| @sizeOf(f32) <= scratch_bytes_max) total else null;
}

fn isOneByOne(window: Window) bool {
    return window.kernel[0] == 1 and window.kernel[1] == 1;
}

/// Floats the offset table of `depth` rows takes, rounded to keep what follows aligned.
fn implicitOffsetFloats(depth: usize) usize {
    return std.mem.alignForward(usize, depth * (@sizeOf(usize) / @sizeOf(f32)), 16);
}

fn runImplicit(geometry: Geometry, data: Data, scratch_floats: usize) Error!void {
    const window = geometry.window;
    const phases = Phases.of(window, geometry.outPerGroup()).?;
    const channels = geometry.inPerGroup();
    const m = geometry.outPerGroup();
    const n = window.grid[0] * phases.size[1];
    const depth = channels * window.taps();
    const scratch = try Scratch.init("conv2d", scratch_floats);
    defer scratch.release();
    // The offset table first (the block is 64-byte aligned), then the phases.
    const offset_floats = implicitOffsetFloats(depth);
    const offsets = @as([*]usize, @ptrCast(@alignCast(scratch.values.ptr)))[0..depth];
    const padded_len = channels * phases.channelFloats() + implicitSlack(window);
    const padded = scratch.values[offset_floats..][0..padded_len];
    const flat = scratch.values[offset_floats + padded_len ..][0 .. m * n];
    for (0..channels) |c| for (0..window.kernel[0]) |ky| for (0..window.kernel[1]) |kx| {
        offsets[(c * window.kernel[0] + ky) * window.kernel[1] + kx] = c * phases.channelFloats() + phases.tapOffset(ky, kx);
    };
    @memset(padded[channels * phases.channelFloats() ..], 0);
    const b: gemm_native.native.IndirectB = .{ .values = padded, .offsets = offsets, .n = n };
    const threads = parallel.threadsForFlops((2 *| m) *| n *| depth);
    const tiling = if (data.bf16) |weights| bf16.plan(weights, m, n, threads) else gemm.plan(m, n, threads);
    var context: ImplicitContext = .{ .geometry = geometry, .data = data, .phases = phases, .padded = padded, .offsets = offsets, .flat = flat, .args = undefined, .packed_a = undefined, .tiling = tiling, .image = 0 };
    for (0..geometry.batch * geometry.groups) |image| {
        context.image = image;
        // The weight rows of this image's group times the padded input, into `flat`.
        const group = image % geometry.groups;
        context.args = .{
            .m = m,
            .a = data.weight[group * m * depth ..][0 .. m * depth],
            .lda = depth,
            .b = &b,
            .alpha = 1,
            .beta = 0,
            .c = flat,
            .ldc = n,
        };
        if (data.packed_f32) |weights| {
            context.packed_a = weights.left(group);
            context.args.packed_a = &context.packed_a;
        }
        try context.args.validate();
        const shared: *const ImplicitContext = &context;
        try intra_op.parallelForTyped(0, channels, parallel.grain(.medium, phases.channelFloats()), shared, ImplicitContext.pad);
        try intra_op.parallelForTyped(0, tiling.count(), 1, shared, ImplicitContext.multiply);
        try intra_op.parallelForTyped(0, m, parallel.grain(.medium, n), shared, ImplicitContext.finish);
    }
}

const ImplicitContext = struct {
    geometry: Geometry,
    data: Data,
    phases: Phases,
    padded: []f32,
    /// The offset table of the padded planes' rows (the bf16 GEMM's indirect operand).
    offsets: []const usize,
    flat: []f32,
    /// The current image's GEMM (validated by runImplicit).
    args: gemm_native.native.IndirectArgs,
    /// The current group's f32 packed weight, when the call has one (args.packed_a).
    packed_a: gemm_native.native.PackedA,
    tiling: gemm.Tiling,
    /// batch · groups + group of the image being computed.
    image: usize,

    /// Copies input channels [begin, end) of the current image into their phases.
    fn pad(context: *const ImplicitContext, begin: usize, end: usize) Error!void {
        const g = context.geometry;
        const w = g.window;
        const floats = context.phases.channelFloats();
        const b = context.image / g.groups;
        const group = context.image % g.groups;
        const input = context.data.input[(b * g.in_channels + group * g.inPerGroup()) * w.imagePlane() ..][0 .. g.inPerGroup() * w.imagePlane()];
        for (begin..end) |c| {
            context.phases.fill(input[c * w.imagePlane() ..][0..w.imagePlane()], context.padded[c * floats ..][0..floats]);
        }
    }

    /// GEMM tiles [begin, end) of the flat output.
    fn multiply(context: *const ImplicitContext, begin: usize, end: usize) Error!void {
        if (context.data.bf16) |weights| {
            const group = context.image % context.geometry.groups;
            return bf16.indirectTiles(weights, group, context.padded, context.offsets, context.args.b.n, context.flat, context.tiling, begin, end);
        }
        const args = &context.args;
        for (begin..end) |tile| {
            const block = context.tiling.block(tile, args.m, args.b.n) orelse continue;
            gemm_native.native.runBlockIndirect(args, block.row_begin, block.rows, block.col_begin, block.cols);
        }
    }

    /// Output channels [begin, end) of the current image (see finishFlat).
    fn finish(context: *const ImplicitContext, begin: usize, end: usize) Error!void {
        finishFlat(context.geometry, context.data, context.image, context.flat, context.args.b.n, context.phases.size[1], begin, end);
    }
};

/// Output channels [begin, end) of group image % groups of image image / groups: the flat
/// rows (ldc apart, padded_width per output row) without their padding columns, plus bias,
/// through the epilogue.
fn finishFlat(g: Geometry, data: Data, image: usize, flat: []const f32, ldc: usize, padded_width: usize, begin: usize, end: usize) void {
    const w = g.window;
    const b = image / g.groups;
    const group = image % g.groups;
    for (begin..end) |r| {
        const channel = group * g.outPerGroup() + r;
        const bias = if (data.bias) |values| values[channel] else 0;
        const output = data.output[(b * g.out_channels + channel) * w.gridPlane() ..][0..w.gridPlane()];
        const source = flat[r * ldc ..][0 .. (w.grid[0] - 1) * padded_width + w.grid[1]];
        for (0..w.grid[0]) |y| {
            data.epilogue.applyCopy(output[y * w.grid[1] ..][0..w.grid[1]], source[y * padded_width ..][0..w.grid[1]], bias);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Direct convolution, stride 1, one group: bf16 (kernels/conv_amx.zig on AMX,
// kernels/conv_bf16.zig with AVX512_BF16) and f32 (kernels/conv_f32_direct.zig, below). Each
// image's input is converted once into zero-padded planes (bf16 pairs, or f32 channels), the
// kernel reading them straight at every tap, the flat output copied out as runImplicit's is.
// K is the kernel's module: all three share the planes' geometry and the Args layout, and
// differ in block sizes, padding and channels per plane word.

/// The scratch floats of runDirect (tap offsets, the weight when `pack_weight`, planes, flat
/// output), or null when the call does not fit the kernel (a stride, groups) or the scratch
/// passes the limit.
fn directScratch(comptime K: type, geometry: Geometry, pack_weight: bool) ?usize {
    const window = geometry.window;
    if (window.stride[0] != 1 or window.stride[1] != 1 or geometry.groups != 1) return null;
    const planes = K.Planes.init(window.image, window.padding, window.kernel, window.dilation);
    const plane_words = std.math.mul(usize, K.pairsPadded(geometry.in_channels), planes.stride) catch return null;
    const ldc = std.mem.alignForward(usize, window.grid[0] *| planes.width, K.ldc_alignment);
    const flat = std.math.mul(usize, K.rowsPadded(geometry.out_channels), ldc) catch return null;
    const weight_words = if (pack_weight) K.weightsLength(geometry.out_channels, geometry.in_channels, window.taps()) else 0;
    // u32 words and f32 floats are the same size.
    const total = implicitOffsetFloats(window.taps()) +| weight_words +| plane_words +| flat;
    return if (total *| @sizeOf(f32) <= scratch_bytes_max) total else null;
}

/// `packed_words`: the weight packed at load for K (bf16 programs); null packs it into the
/// scratch on every call (the f32 kernel: 24 × 96 × 9 words for det's layers, microseconds
/// against milliseconds of FMAs).
fn runDirect(comptime K: type, geometry: Geometry, data: Data, packed_words: ?[]const u32, scratch_floats: usize) Error!void {
    const window = geometry.window;
    const planes = K.Planes.init(window.image, window.padding, window.kernel, window.dilation);
    const pairs = K.pairsPadded(geometry.in_channels);
    const rows = K.rowsPadded(geometry.out_channels);
    const ldc = std.mem.alignForward(usize, window.grid[0] * planes.width, K.ldc_alignment);
    const taps = window.taps();
    const scratch = try Scratch.init("conv2d", scratch_floats);
    defer scratch.release();
    // The offset table first (the block is 64-byte aligned), then any weight, the planes and
    // flat.
    const offset_floats = implicitOffsetFloats(taps);
    const offsets = @as([*]usize, @ptrCast(@alignCast(scratch.values.ptr)))[0..taps];
    const words: [*]u32 = @ptrCast(scratch.values[offset_floats..].ptr);
    const weight_words = if (packed_words == null) words[0..K.weightsLength(geometry.out_channels, geometry.in_channels, taps)] else words[0..0];
    const plane_words = words[weight_words.len..][0 .. pairs * planes.stride];
    const flat = scratch.values[offset_floats + weight_words.len + plane_words.len ..][0 .. rows * ldc];
    for (0..window.kernel[0]) |ky| for (0..window.kernel[1]) |kx| {
        offsets[ky * window.kernel[1] + kx] = ky * window.dilation[0] * planes.width + kx * window.dilation[1];
    };
    if (packed_words == null) K.packWeights(data.weight[0 .. geometry.out_channels * geometry.in_channels * taps], geometry.out_channels, geometry.in_channels, taps, weight_words);
    const args: K.Args = .{ .rows = rows, .taps = taps, .pairs = pairs, .weights = packed_words orelse weight_words, .planes = plane_words, .plane_stride = planes.stride, .offsets = offsets, .flat = flat, .ldc = ldc };
    try args.validate();
    const flops = (2 *| rows) *| ldc *| taps *| (K.channels_per_word * pairs);
    const blocks = std.math.divCeil(usize, ldc, K.block) catch unreachable;
    const workers = @min(parallel.threadsForFlops(flops), blocks);
    const Context = DirectContext(K);
    var context: Context = .{ .geometry = geometry, .data = data, .planes = planes, .plane_words = plane_words, .args = &args, .blocks = blocks, .workers = workers, .image = 0 };
    const shared: *const Context = &context;
    for (0..geometry.batch) |image| {
        context.image = image;
        try intra_op.parallelForTyped(0, pairs, parallel.grain(.medium, K.channels_per_word * planes.stride), shared, Context.pack);
        try intra_op.parallelForTyped(0, workers, 1, shared, Context.multiply);
        try intra_op.parallelForTyped(0, geometry.out_channels, parallel.grain(.medium, ldc), shared, Context.finish);
    }
}

// ---------------------------------------------------------------------------------------
// Direct f32 convolution (kernels/conv_f32_direct.zig) at stride 1 with few output channels,
// through runDirect with the weight packed per call.

/// Most output channels the f32 direct kernel takes: past them the implicit GEMM's panels
/// are full.
const f32_direct_rows_max = 32;
/// Fewest output positions: smaller maps keep the GEMM, whose blocks fit them better.
const f32_direct_plane_min = 256;

fn f32DirectAllowed() bool {
    const value = @import("../env.zig").get("SPINDLE_F32_DIRECT") orelse return true;
    return !std.mem.eql(u8, value, "0");
}

/// SPINDLE_F32_DIRECT=0 keeps the implicit GEMM (A/B benchmarks), read once.
const f32_direct_allowed = @import("../cpu_level.zig").Once(f32DirectAllowed);

/// Tests set this to compare the direct kernel with the GEMM paths in one process.
var f32_direct_off_for_testing = false;

/// runDirect's scratch floats for the f32 kernel, or null when the call is not one for it.
fn directF32Scratch(geometry: Geometry) ?usize {
    if (comptime !f32_direct.compiled) return null;
    const window = geometry.window;
    if (geometry.out_channels > f32_direct_rows_max or geometry.in_channels < 4 or window.taps() < 2 or window.gridPlane() < f32_direct_plane_min) return null;
    if (f32_direct_off_for_testing or !f32_direct_allowed.get()) return null;
    return directScratch(f32_direct, geometry, true);
}

fn DirectContext(comptime K: type) type {
    return struct {
        geometry: Geometry,
        data: Data,
        planes: K.Planes,
        plane_words: []u32,
        args: *const K.Args,
        /// Column blocks of the flat output (the last may be narrower), split evenly over
        /// `workers`.
        blocks: usize,
        workers: usize,
        /// The image being computed.
        image: usize,

        const Context = @This();

        /// Converts channel pairs [begin, end) of the current image into their planes.
        fn pack(context: *const Context, begin: usize, end: usize) Error!void {
            const g = context.geometry;
            const plane = g.window.imagePlane();
            const input = context.data.input[context.image * g.in_channels * plane ..][0 .. g.in_channels * plane];
            context.planes.pack(input, g.in_channels, context.plane_words, begin, end);
        }

        /// Workers [begin, end): each computes its share of the column blocks.
        fn multiply(context: *const Context, begin: usize, end: usize) Error!void {
            for (begin..end) |worker| {
                const first = context.blocks * worker / context.workers;
                const last = context.blocks * (worker + 1) / context.workers;
                context.args.run(first * K.block, @min(last * K.block, context.args.ldc));
            }
        }

        fn finish(context: *const Context, begin: usize, end: usize) Error!void {
            finishFlat(context.geometry, context.data, context.image, context.args.flat, context.args.ldc, context.planes.width, begin, end);
        }
    };
}

// ---------------------------------------------------------------------------------------
// Transposed convolution: columns = weightᵀ · input per column block, then col2im.

fn runTransposed(geometry: Geometry, data: Data) Error!void {
    const window = geometry.window;
    const rows = geometry.outPerGroup() * window.taps();
    const n = window.gridPlane();
    const images = geometry.batch * geometry.groups;
    const flops = (2 *| images) *| rows *| n *| @max(geometry.inPerGroup(), 1);
    const threads = parallel.threadsForFlops(flops);
    // Enough images: each worker runs whole images (GEMM and scatter) in its own scratch.
    // Otherwise images run one after another, each block's GEMM and scatter in parallel.
    const per_image = images >= threads;
    const slots = if (per_image) @min(threads, images) else 1;
    const column_blocks = std.math.divCeil(usize, n, try blockColumnLimit("conv_transpose2d", n, rows, slots)) catch unreachable;
    const columns_per_block = std.math.divCeil(usize, n, column_blocks) catch unreachable;
    const scratch = try Scratch.init("conv_transpose2d", slots * rows * columns_per_block);
    defer scratch.release();
    var context: TransposedContext = .{
        .geometry = geometry,
        .data = data,
        .columns_per_block = columns_per_block,
        .column_blocks = std.math.divCeil(usize, n, columns_per_block) catch unreachable,
        .slots = slots,
        .scratch = scratch.values,
        .image = 0,
        .block = 0,
    };
    const shared: *const TransposedContext = &context;
    if (per_image) return intra_op.parallelForTyped(0, slots, 1, shared, TransposedContext.wholeImages);
    for (0..images) |image| for (0..context.column_blocks) |block| {
        context.image = image;
        context.block = block;
        _ = try shared.multiply(scratch.values, false);
        try intra_op.parallelForTyped(0, geometry.outPerGroup(), 1, shared, TransposedContext.scatterChannels);
    };
}

/// The 2×2, stride 2 transposed convolution with few input channels: each input pixel
/// writes its own 2×2 output block, so the direct kernel stores the product in place
/// (kernels/conv_pointwise.zig), input rows in parallel.
fn runUpsample(geometry: Geometry, data: Data) Error!void {
    const window = geometry.window;
    std.debug.assert(window.image[0] == 2 * window.grid[0] and window.image[1] == 2 * window.grid[1]);
    const Context = struct {
        geometry: Geometry,
        data: Data,

        /// Input rows [begin, end) of the stacked images, one image's share at a time.
        fn body(context: *const @This(), begin: usize, end: usize) Error!void {
            const g = context.geometry;
            const w = g.window;
            const d = context.data;
            const n = w.gridPlane();
            var row = begin;
            while (row < end) {
                const image = row / w.grid[0];
                const y = row % w.grid[0];
                const rows = @min(end - row, w.grid[0] - y);
                const input = d.input[image * g.in_channels * n ..][0 .. g.in_channels * n];
                const output = d.output[image * g.out_channels * w.imagePlane() ..][0 .. g.out_channels * w.imagePlane()];
                pointwise_kernels.upsample2(d.weight, d.bias, d.epilogue, g.in_channels, input, w.grid, y, y + rows, output);
                row += rows;
            }
        }
    };
    const context: Context = .{ .geometry = geometry, .data = data };
    const work_per_row = 4 * geometry.out_channels * geometry.in_channels * window.grid[1];
    try intra_op.parallelForTyped(0, geometry.batch * window.grid[0], parallel.grain(.medium, work_per_row), &context, Context.body);
}

const TransposedContext = struct {
    geometry: Geometry,
    data: Data,
    columns_per_block: usize,
    column_blocks: usize,
    slots: usize,
    scratch: []f32,
    /// The image and block the shared-scratch path is working on.
    image: usize,
    block: usize,

    fn blockColumns(context: *const TransposedContext, block: usize) usize {
        const n = context.geometry.window.gridPlane();
        return @min(context.columns_per_block, n - block * context.columns_per_block);
    }

    /// The unfolded output of one block of `context.image`: weight[group]ᵀ · input[group]
    /// into `scratch`, with the GEMM split over the pool unless `serial`.
    fn multiply(context: *const TransposedContext, scratch: []f32, serial: bool) Error![]f32 {
        const g = context.geometry;
        const window = g.window;
        const n = window.gridPlane();
        const rows = g.outPerGroup() * window.taps();
        const b = context.image / g.groups;
        const group = context.image % g.groups;
        const column_begin = context.block * context.columns_per_block;
        const columns = context.blockColumns(context.block);
        const input = context.data.input[(b * g.in_channels + group * g.inPerGroup()) * n ..][0 .. g.inPerGroup() * n];
        const weight = context.data.weight[group * g.inPerGroup() * rows ..][0 .. g.inPerGroup() * rows];
        const target = scratch[0 .. rows * columns];
        if (serial) {
            const args: gemm.Args = .{
                .trans_a = true,
                .trans_b = false,
                .m = rows,
                .n = columns,
                .k = g.inPerGroup(),
                .alpha = 1,
                .a = weight,
                .lda = rows,
                .b = input[column_begin..],
                .ldb = n,
                .beta = 0,
                .c = target,
                .ldc = columns,
            };
            try args.validate();
            const tiling = gemm.plan(rows, columns, 1);
            gemm.runTiles(&args, tiling, 0, tiling.count());
        } else {
            try linalg.matmulInto(true, false, rows, columns, g.inPerGroup(), weight, rows, input[column_begin..], n, target, columns);
        }
        return target;
    }

    /// Scatters the current block into output channels [begin, end) of the current group:
    /// the first block starts each plane from the bias, the last one applies the epilogue.
    fn scatter(context: *const TransposedContext, columns: []const f32, begin: usize, end: usize) void {
        const g = context.geometry;
        const window = g.window;
        const plane = window.imagePlane();
        const b = context.image / g.groups;
        const group = context.image % g.groups;
        const first_channel = group * g.outPerGroup();
        const output = context.data.output[(b * g.out_channels + first_channel) * plane ..][0 .. g.outPerGroup() * plane];
        if (context.block == 0) for (begin..end) |channel| {
            const bias = if (context.data.bias) |values| values[first_channel + channel] else 0;
            @memset(output[channel * plane ..][0..plane], bias);
        };
        const column_begin = context.block * context.columns_per_block;
        kernels.col2im(window, columns, column_begin, context.blockColumns(context.block), begin, end, output);
        if (context.block + 1 == context.column_blocks) context.data.epilogue.apply(output[begin * plane .. end * plane], 0);
    }

    fn scatterChannels(context: *const TransposedContext, begin: usize, end: usize) Error!void {
        const columns = context.blockColumns(context.block);
        const rows = context.geometry.outPerGroup() * context.geometry.window.taps();
        context.scatter(context.scratch[0 .. rows * columns], begin, end);
    }

    /// Runs slots [begin, end): each its contiguous share of the images, serially.
    fn wholeImages(context: *const TransposedContext, begin: usize, end: usize) Error!void {
        const g = context.geometry;
        const images = g.batch * g.groups;
        const per_slot = context.scratch.len / context.slots;
        for (begin..end) |slot| {
            var local = context.*;
            const scratch = context.scratch[slot * per_slot ..][0..per_slot];
            for (images * slot / context.slots..images * (slot + 1) / context.slots) |image| {
                local.image = image;
                for (0..context.column_blocks) |block| {
                    local.block = block;
                    const columns = try local.multiply(scratch, true);
                    local.scatter(columns, 0, g.outPerGroup());
                }
            }
        }
    }
};

// ---------------------------------------------------------------------------------------
// Tests: every path against the direct references, at 1 and 2 threads.

const testing = std.testing;

const Case = struct {
    batch: usize,
    in_channels: usize,
    size: [2]usize,
    out_channels: usize,
    kernel: [2]usize,
    options: Options = .{},
};

fn randomTensor(random: std.Random, dims: []const usize) !*Tensor {
    const t = try tensor.createUninit(.float32, dims);
    for (t.f32Slice()) |*x| x.* = random.float(f32) * 2 - 1;
    return t;
}

fn expectClose(expected: []const f32, got: []const f32, depth: usize) !void {
    try testing.expectEqual(expected.len, got.len);
    const tolerance = 1e-5 * @as(f32, @floatFromInt(depth + 1));
    for (expected, got) |want, value| try testing.expectApproxEqAbs(want, value, tolerance);
}

fn checkCase(case: Case, transposed: bool, random: std.Random) !void {
    const groups: usize = @intCast(case.options.groups);
    const x = try randomTensor(random, &.{ case.batch, case.in_channels, case.size[0], case.size[1] });
    defer x.release();
    const weight_dims: [4]usize = if (transposed)
        .{ case.in_channels, case.out_channels / groups, case.kernel[0], case.kernel[1] }
    else
        .{ case.out_channels, case.in_channels / groups, case.kernel[0], case.kernel[1] };
    const weight = try randomTensor(random, &weight_dims);
    defer weight.release();
    const bias = try randomTensor(random, &.{case.out_channels});
    defer bias.release();
    for ([_]bool{ false, true }) |with_bias| for (kernels.test_epilogues) |epilogue| {
        var options = case.options;
        options.epilogue = epilogue;
        const b: ?*Tensor = if (with_bias) bias else null;
        const out = if (transposed) try convTranspose2d(x, weight, b, options) else try conv2d(x, weight, b, options);
        defer out.release();
        const geometry = if (transposed) try transposeGeometry(x, weight, b, options) else try convGeometry(x, weight, b, options);
        const expected = try testing.allocator.alloc(f32, out.numel());
        defer testing.allocator.free(expected);
        const bias_values: ?[]const f32 = if (with_bias) bias.f32Slice() else null;
        if (transposed) {
            kernels.referenceTranspose(geometry, x.f32Slice(), weight.f32Slice(), bias_values, epilogue, expected);
        } else {
            kernels.reference(geometry, x.f32Slice(), weight.f32Slice(), bias_values, epilogue, expected);
        }
        try expectClose(expected, out.f32Slice(), weight_dims[1] * case.kernel[0] * case.kernel[1]);
    };
}

const conv_cases = [_]Case{
    // 1×1 images, pointwise and padded 3×3.
    .{ .batch = 1, .in_channels = 3, .size = .{ 1, 1 }, .out_channels = 4, .kernel = .{ 1, 1 } },
    .{ .batch = 1, .in_channels = 3, .size = .{ 1, 1 }, .out_channels = 5, .kernel = .{ 3, 3 }, .options = .{ .padding = .{ 1, 1 } } },
    // Prime sizes, batch 3.
    .{ .batch = 3, .in_channels = 5, .size = .{ 7, 11 }, .out_channels = 7, .kernel = .{ 3, 3 }, .options = .{ .padding = .{ 1, 1 } } },
    // Kernel larger than the input, with padding.
    .{ .batch = 1, .in_channels = 2, .size = .{ 3, 2 }, .out_channels = 3, .kernel = .{ 5, 5 }, .options = .{ .padding = .{ 2, 2 } } },
    // Stride larger than the kernel.
    .{ .batch = 2, .in_channels = 3, .size = .{ 13, 17 }, .out_channels = 4, .kernel = .{ 2, 3 }, .options = .{ .stride = .{ 4, 5 }, .padding = .{ 1, 0 } } },
    // Dilation.
    .{ .batch = 1, .in_channels = 4, .size = .{ 9, 10 }, .out_channels = 6, .kernel = .{ 3, 2 }, .options = .{ .padding = .{ 2, 1 }, .dilation = .{ 2, 3 } } },
    // Groups 2, and depthwise (groups = C) with stride 1 and 2, and a channel multiplier.
    .{ .batch = 3, .in_channels = 6, .size = .{ 8, 7 }, .out_channels = 4, .kernel = .{ 3, 3 }, .options = .{ .stride = .{ 2, 1 }, .padding = .{ 1, 1 }, .groups = 2 } },
    .{ .batch = 2, .in_channels = 6, .size = .{ 7, 5 }, .out_channels = 4, .kernel = .{ 3, 3 }, .options = .{ .padding = .{ 1, 2 }, .groups = 2 } },
    .{ .batch = 1, .in_channels = 7, .size = .{ 10, 37 }, .out_channels = 7, .kernel = .{ 3, 3 }, .options = .{ .padding = .{ 1, 1 }, .groups = 7 } },
    .{ .batch = 3, .in_channels = 5, .size = .{ 11, 40 }, .out_channels = 5, .kernel = .{ 3, 3 }, .options = .{ .stride = .{ 2, 2 }, .padding = .{ 1, 1 }, .groups = 5 } },
    .{ .batch = 1, .in_channels = 3, .size = .{ 6, 6 }, .out_channels = 6, .kernel = .{ 3, 3 }, .options = .{ .padding = .{ 1, 1 }, .dilation = .{ 2, 1 }, .groups = 3 } },
    // Depthwise through phased planes: 5×5 by rows (batch 2, an odd plane count), a
    // row-strided 5×5 (the flat pass), and a wide width-strided map; and a wide stride-1 map
    // through the buffered rows.
    .{ .batch = 2, .in_channels = 5, .size = .{ 9, 21 }, .out_channels = 5, .kernel = .{ 5, 5 }, .options = .{ .padding = .{ 2, 2 }, .groups = 5 } },
    .{ .batch = 1, .in_channels = 4, .size = .{ 7, 19 }, .out_channels = 4, .kernel = .{ 5, 5 }, .options = .{ .stride = .{ 2, 1 }, .padding = .{ 2, 2 }, .groups = 4 } },
    .{ .batch = 1, .in_channels = 3, .size = .{ 5, 141 }, .out_channels = 3, .kernel = .{ 3, 3 }, .options = .{ .stride = .{ 1, 2 }, .padding = .{ 1, 1 }, .groups = 3 } },
    .{ .batch = 1, .in_channels = 3, .size = .{ 4, 67 }, .out_channels = 3, .kernel = .{ 3, 3 }, .options = .{ .padding = .{ 1, 1 }, .groups = 3 } },
    // Depthwise 5×5 on planes of 2 and 3 rows (a small classifier's), whose padding rows
    // the row groups skip: stride 1 over an odd plane count at batch 2, and row stride 2.
    .{ .batch = 2, .in_channels = 7, .size = .{ 2, 37 }, .out_channels = 7, .kernel = .{ 5, 5 }, .options = .{ .padding = .{ 2, 2 }, .groups = 7 } },
    .{ .batch = 1, .in_channels = 9, .size = .{ 3, 50 }, .out_channels = 9, .kernel = .{ 5, 5 }, .options = .{ .stride = .{ 2, 1 }, .padding = .{ 2, 2 }, .groups = 9 } },
    // Depthwise planes of 4096 floats or more, copied a row at a time
    // (kernels/conv_depthwise_ring.zig): stride 2 3×3 on an odd width, 5×5 at batch 2, and
    // stride 1 3×3.
    .{ .batch = 1, .in_channels = 3, .size = .{ 61, 83 }, .out_channels = 3, .kernel = .{ 3, 3 }, .options = .{ .stride = .{ 2, 2 }, .padding = .{ 1, 1 }, .groups = 3 } },
    .{ .batch = 2, .in_channels = 3, .size = .{ 66, 64 }, .out_channels = 3, .kernel = .{ 5, 5 }, .options = .{ .stride = .{ 2, 2 }, .padding = .{ 2, 2 }, .groups = 3 } },
    .{ .batch = 1, .in_channels = 3, .size = .{ 67, 70 }, .out_channels = 3, .kernel = .{ 3, 3 }, .options = .{ .padding = .{ 1, 1 }, .groups = 3 } },
    // Depthwise with channels in the lanes (output rows of at most lanes_width_max = 12
    // columns): a partial last block of 16 channels at batch 2 (5 × 5, stride 1, 10 columns),
    // stride 2 with dilation 2 over 18 channels (11 columns), and a 3 × 5 kernel at a row
    // stride only (12 columns).
    .{ .batch = 2, .in_channels = 37, .size = .{ 10, 10 }, .out_channels = 37, .kernel = .{ 5, 5 }, .options = .{ .padding = .{ 2, 2 }, .groups = 37 } },
    .{ .batch = 1, .in_channels = 18, .size = .{ 13, 21 }, .out_channels = 18, .kernel = .{ 3, 3 }, .options = .{ .stride = .{ 2, 2 }, .padding = .{ 2, 2 }, .dilation = .{ 2, 2 }, .groups = 18 } },
    .{ .batch = 1, .in_channels = 16, .size = .{ 9, 12 }, .out_channels = 16, .kernel = .{ 3, 5 }, .options = .{ .stride = .{ 2, 1 }, .padding = .{ 1, 2 }, .groups = 16 } },
    // Depthwise 5×5 at stride 2 on a small plane, rows of under a vector: the flat pass (on
    // CPUs without AVX-512; with it, the channels-in-lanes kernel).
    .{ .batch = 2, .in_channels = 5, .size = .{ 19, 23 }, .out_channels = 5, .kernel = .{ 5, 5 }, .options = .{ .stride = .{ 2, 2 }, .padding = .{ 2, 2 }, .groups = 5 } },
    // Pointwise: plain, grouped, strided (unfolded).
    .{ .batch = 3, .in_channels = 7, .size = .{ 5, 9 }, .out_channels = 5, .kernel = .{ 1, 1 } },
    .{ .batch = 2, .in_channels = 6, .size = .{ 4, 4 }, .out_channels = 9, .kernel = .{ 1, 1 }, .options = .{ .groups = 3 } },
    .{ .batch = 1, .in_channels = 8, .size = .{ 7, 7 }, .out_channels = 16, .kernel = .{ 1, 1 }, .options = .{ .stride = .{ 2, 2 } } },
    // One-pixel 1×1 (squeeze-and-excitation, kernels/conv_squeeze.zig): K past and below a
    // vector, M not a multiple of the row group, batch 3.
    .{ .batch = 3, .in_channels = 50, .size = .{ 1, 1 }, .out_channels = 201, .kernel = .{ 1, 1 } },
    .{ .batch = 1, .in_channels = 7, .size = .{ 1, 1 }, .out_channels = 13, .kernel = .{ 1, 1 } },
    // Several column blocks per image, and a row split (many channels, few pixels).
    .{ .batch = 1, .in_channels = 64, .size = .{ 30, 30 }, .out_channels = 8, .kernel = .{ 3, 3 }, .options = .{ .padding = .{ 1, 1 } } },
    .{ .batch = 1, .in_channels = 16, .size = .{ 5, 5 }, .out_channels = 80, .kernel = .{ 3, 3 }, .options = .{ .padding = .{ 1, 1 } } },
    .{ .batch = 1, .in_channels = 48, .size = .{ 1, 300 }, .out_channels = 12, .kernel = .{ 1, 1 } },
    // Strided with more input taps than the direct small kernel takes: im2col + GEMM.
    .{ .batch = 2, .in_channels = 9, .size = .{ 11, 13 }, .out_channels = 10, .kernel = .{ 3, 3 }, .options = .{ .stride = .{ 2, 2 }, .padding = .{ 1, 1 } } },
    // Stride 2 through the implicit GEMM on stride phases (runImplicit): a row stride only,
    // a dilation that leaves one phase per axis, a strided pointwise (one phase), a 2×2
    // kernel without padding, groups; and stride 3 (im2col again).
    .{ .batch = 1, .in_channels = 20, .size = .{ 9, 14 }, .out_channels = 17, .kernel = .{ 3, 3 }, .options = .{ .stride = .{ 2, 1 }, .padding = .{ 1, 1 } } },
    .{ .batch = 2, .in_channels = 8, .size = .{ 12, 9 }, .out_channels = 30, .kernel = .{ 3, 3 }, .options = .{ .stride = .{ 2, 2 }, .padding = .{ 2, 2 }, .dilation = .{ 2, 2 } } },
    .{ .batch = 1, .in_channels = 70, .size = .{ 7, 10 }, .out_channels = 5, .kernel = .{ 1, 1 }, .options = .{ .stride = .{ 2, 2 } } },
    .{ .batch = 1, .in_channels = 17, .size = .{ 8, 9 }, .out_channels = 16, .kernel = .{ 2, 2 }, .options = .{ .stride = .{ 2, 2 } } },
    .{ .batch = 2, .in_channels = 16, .size = .{ 10, 11 }, .out_channels = 6, .kernel = .{ 3, 3 }, .options = .{ .stride = .{ 2, 2 }, .padding = .{ 1, 1 }, .groups = 2 } },
    .{ .batch = 1, .in_channels = 8, .size = .{ 13, 13 }, .out_channels = 9, .kernel = .{ 3, 3 }, .options = .{ .stride = .{ 3, 3 }, .padding = .{ 1, 1 } } },
    // The implicit GEMM's copies by column phase (a width the padding barely widens) at
    // stride 1 and 2, and per column tap (narrow maps, 96 or more output channels).
    .{ .batch = 2, .in_channels = 12, .size = .{ 5, 40 }, .out_channels = 15, .kernel = .{ 3, 3 }, .options = .{ .padding = .{ 1, 1 } } },
    .{ .batch = 1, .in_channels = 10, .size = .{ 7, 66 }, .out_channels = 9, .kernel = .{ 3, 3 }, .options = .{ .stride = .{ 2, 2 }, .padding = .{ 1, 1 } } },
    .{ .batch = 1, .in_channels = 20, .size = .{ 6, 7 }, .out_channels = 100, .kernel = .{ 3, 3 }, .options = .{ .padding = .{ 1, 1 } } },
    .{ .batch = 2, .in_channels = 9, .size = .{ 9, 12 }, .out_channels = 97, .kernel = .{ 3, 3 }, .options = .{ .stride = .{ 2, 2 }, .padding = .{ 1, 1 } } },
    // Pointwise through the direct kernel over several column blocks, and through the GEMM
    // (more input channels than the direct kernel takes).
    .{ .batch = 2, .in_channels = 16, .size = .{ 19, 23 }, .out_channels = 13, .kernel = .{ 1, 1 } },
    .{ .batch = 2, .in_channels = 70, .size = .{ 3, 5 }, .out_channels = 6, .kernel = .{ 1, 1 } },
    // The f32 direct kernel (kernels/conv_f32_direct.zig, AVX-512 builds): det's head shape
    // (fewer input channels) at batch 2 on an odd map, a ragged last panel with dilation and
    // a wide kernel, and 32 output channels (the most it takes) on 256 positions (the
    // fewest), unpadded.
    .{ .batch = 2, .in_channels = 24, .size = .{ 17, 19 }, .out_channels = 24, .kernel = .{ 3, 3 }, .options = .{ .padding = .{ 1, 1 } } },
    .{ .batch = 1, .in_channels = 5, .size = .{ 20, 30 }, .out_channels = 9, .kernel = .{ 3, 5 }, .options = .{ .padding = .{ 2, 1 }, .dilation = .{ 2, 1 } } },
    .{ .batch = 1, .in_channels = 8, .size = .{ 18, 18 }, .out_channels = 32, .kernel = .{ 3, 3 } },
};

test "conv2d matches the direct reference on awkward shapes, 1 and 2 threads" {
    settings.resetForTesting();
    defer settings.resetForTesting();
    var prng = std.Random.DefaultPrng.init(31);
    for ([_]i64{ 1, 2 }) |threads| {
        try settings.setNumThreads(threads);
        for (conv_cases) |case| try checkCase(case, false, prng.random());
    }
}

test "the f32 direct kernel takes det's head convolutions (AVX-512 builds) and agrees with the GEMM path" {
    // det's 96 → 24 3 × 3 on a 20 × 20 map (its layers run on 80 × 80 down to 10 × 10).
    const x_dims = [_]usize{ 1, 96, 20, 20 };
    var prng = std.Random.DefaultPrng.init(77);
    const random = prng.random();
    const x = try randomTensor(random, &x_dims);
    defer x.release();
    const weight = try randomTensor(random, &.{ 24, 96, 3, 3 });
    defer weight.release();
    const bias = try randomTensor(random, &.{24});
    defer bias.release();
    const options: Options = .{ .padding = .{ 1, 1 }, .epilogue = .{ .activation = .hard_swish } };
    const geometry = try convGeometry(x, weight, bias, options);
    try testing.expectEqual(f32_direct.compiled, directF32Scratch(geometry) != null);
    // Past the output channels it takes, and on a strided window, it steps aside.
    const wide = try randomTensor(random, &.{ 33, 96, 3, 3 });
    defer wide.release();
    try testing.expectEqual(@as(?usize, null), directF32Scratch(try convGeometry(x, wide, null, options)));
    var strided = options;
    strided.stride = .{ 2, 2 };
    try testing.expectEqual(@as(?usize, null), directF32Scratch(try convGeometry(x, weight, bias, strided)));
    settings.resetForTesting();
    defer settings.resetForTesting();
    for ([_]i64{ 1, 2 }) |threads| {
        try settings.setNumThreads(threads);
        const direct = try conv2d(x, weight, bias, options);
        defer direct.release();
        f32_direct_off_for_testing = true;
        defer f32_direct_off_for_testing = false;
        const gemm_path = try conv2d(x, weight, bias, options);
        defer gemm_path.release();
        try expectClose(gemm_path.f32Slice(), direct.f32Slice(), 96 * 9);
    }
}

test "the implicit GEMM copies columns per tap on narrow maps with many rows, else by phase" {
    const narrow: Window = .{ .image = .{ 8, 8 }, .grid = .{ 8, 8 }, .kernel = .{ 3, 3 }, .stride = .{ 1, 1 }, .padding = .{ 1, 1 }, .dilation = .{ 1, 1 } };
    const phases = Phases.of(narrow, 128).?;
    try testing.expect(!Phases.of(narrow, 24).?.per_tap);
    try testing.expect(phases.per_tap);
    try testing.expectEqual(3 * 10 * 8, phases.channelFloats());
    // Tap (2, 1) reads copy kx = 1 (8 × 8 after 10 × 8) from row 2.
    try testing.expectEqual(10 * 8 + 2 * 8, phases.tapOffset(2, 1));
    var wide = narrow;
    wide.image = .{ 32, 32 };
    wide.grid = .{ 16, 16 };
    wide.stride = .{ 2, 2 };
    const strided = Phases.of(wide, 128).?;
    try testing.expect(!strided.per_tap);
    // Tap (2, 1) reads row phase 0 from row 1, column phase 1 from column 0.
    try testing.expectEqual(17 * 17 + 17, strided.tapOffset(2, 1));
    wide.stride = .{ 3, 3 };
    try testing.expect(Phases.of(wide, 128) == null);
}

const transpose_cases = [_]Case{
    .{ .batch = 1, .in_channels = 3, .size = .{ 1, 1 }, .out_channels = 4, .kernel = .{ 3, 3 } },
    .{ .batch = 2, .in_channels = 4, .size = .{ 5, 7 }, .out_channels = 6, .kernel = .{ 3, 2 }, .options = .{ .stride = .{ 2, 3 }, .padding = .{ 1, 0 }, .output_padding = .{ 1, 2 }, .groups = 2 } },
    .{ .batch = 1, .in_channels = 3, .size = .{ 4, 5 }, .out_channels = 2, .kernel = .{ 3, 3 }, .options = .{ .stride = .{ 2, 2 }, .padding = .{ 2, 2 }, .output_padding = .{ 0, 1 }, .dilation = .{ 2, 2 } } },
    .{ .batch = 3, .in_channels = 5, .size = .{ 6, 6 }, .out_channels = 5, .kernel = .{ 3, 3 }, .options = .{ .stride = .{ 2, 2 }, .padding = .{ 1, 1 }, .output_padding = .{ 1, 1 }, .groups = 5 } },
    .{ .batch = 1, .in_channels = 7, .size = .{ 3, 11 }, .out_channels = 3, .kernel = .{ 1, 1 } },
    .{ .batch = 1, .in_channels = 32, .size = .{ 24, 24 }, .out_channels = 9, .kernel = .{ 4, 4 }, .options = .{ .stride = .{ 2, 2 }, .padding = .{ 1, 1 } } },
    // 2×2 stride 2: the direct upsampling kernel (batch 2, odd sizes), and with output
    // padding, groups or many input channels the GEMM and scatter.
    .{ .batch = 2, .in_channels = 5, .size = .{ 7, 37 }, .out_channels = 6, .kernel = .{ 2, 2 }, .options = .{ .stride = .{ 2, 2 } } },
    .{ .batch = 1, .in_channels = 4, .size = .{ 3, 5 }, .out_channels = 2, .kernel = .{ 2, 2 }, .options = .{ .stride = .{ 2, 2 }, .output_padding = .{ 1, 1 } } },
    .{ .batch = 1, .in_channels = 4, .size = .{ 3, 5 }, .out_channels = 6, .kernel = .{ 2, 2 }, .options = .{ .stride = .{ 2, 2 }, .groups = 2 } },
    .{ .batch = 1, .in_channels = 70, .size = .{ 3, 5 }, .out_channels = 3, .kernel = .{ 2, 2 }, .options = .{ .stride = .{ 2, 2 } } },
};

test "conv_transpose2d matches the direct reference on awkward shapes, 1 and 2 threads" {
    settings.resetForTesting();
    defer settings.resetForTesting();
    var prng = std.Random.DefaultPrng.init(32);
    for ([_]i64{ 1, 2 }) |threads| {
        try settings.setNumThreads(threads);
        for (transpose_cases) |case| try checkCase(case, true, prng.random());
    }
}

test "planBlocks bounds the scratch and keeps every worker busy" {
    // ResNet 3×3 64→64 at 56×56: L2-sized column blocks, split evenly over 2 workers.
    const plan = try planBlocks("test", 1, 64, 56 * 56, 576, 2, true, false);
    try testing.expectEqual(@as(usize, 1), plan.row_blocks);
    try testing.expectEqual(@as(usize, 0), plan.column_blocks % 2);
    try testing.expect(plan.scratch_per_worker * @sizeOf(f32) <= block_bytes_target + 64 * 576 * @sizeOf(f32));
    // Few pixels, many channels: rows split instead.
    const deep = try planBlocks("test", 1, 512, 49, 4608, 2, true, false);
    try testing.expectEqual(@as(usize, 2), deep.row_blocks);
    try testing.expectEqual(@as(usize, 2), deep.workers);
    // The same with the weight packed at load: the columns split (each worker packs only its
    // half of B), unless they are too few for 16-wide blocks.
    const packed_deep = try planBlocks("test", 1, 512, 49, 4608, 2, true, true);
    try testing.expectEqual(@as(usize, 1), packed_deep.row_blocks);
    try testing.expectEqual(@as(usize, 2), packed_deep.column_blocks);
    const narrow = try planBlocks("test", 1, 512, 20, 4608, 2, true, true);
    try testing.expectEqual(@as(usize, 2), narrow.row_blocks);
    // A huge depth still fits the scratch limit, in narrow blocks.
    const huge = try planBlocks("test", 1, 8, 1 << 20, 1 << 20, 4, true, false);
    try testing.expect(huge.workers * huge.scratch_per_worker * @sizeOf(f32) <= scratch_bytes_max);
    try testing.expectError(error.TooLarge, planBlocks("test", 1, 8, 100, 1 << 24, 2, true, false));
}

test "conv2d refuses bad shapes and parameters with typed errors" {
    const x = try tensor.createZeroed(.float32, &.{ 1, 4, 5, 5 });
    defer x.release();
    const weight = try tensor.createZeroed(.float32, &.{ 6, 2, 3, 3 });
    defer weight.release();
    try testing.expectError(error.ShapeMismatch, conv2d(x, weight, null, .{}));
    try testing.expectError(error.ShapeMismatch, conv2d(x, weight, null, .{ .groups = 4 }));
    try testing.expectError(error.InvalidArgument, conv2d(x, weight, null, .{ .groups = 0 }));
    try testing.expectError(error.InvalidArgument, conv2d(x, weight, null, .{ .groups = 2, .stride = .{ 0, 1 } }));
    try testing.expectError(error.InvalidArgument, conv2d(x, weight, null, .{ .groups = 2, .dilation = .{ 1, -1 } }));
    try testing.expectError(error.InvalidArgument, conv2d(x, weight, null, .{ .groups = 2, .padding = .{ -1, 0 } }));
    try testing.expectError(error.ShapeMismatch, conv2d(x, weight, null, .{ .groups = 2, .dilation = .{ 3, 1 } }));
    try testing.expectError(error.TooLarge, conv2d(x, weight, null, .{ .groups = 2, .padding = .{ 1 << 40, 1 << 40 } }));
    const wrong_bias = try tensor.createZeroed(.float32, &.{5});
    defer wrong_bias.release();
    try testing.expectError(error.ShapeMismatch, conv2d(x, weight, wrong_bias, .{ .groups = 2 }));
    const indices = try tensor.createZeroed(.int64, &.{ 6, 2, 3, 3 });
    defer indices.release();
    try testing.expectError(error.DTypeMismatch, conv2d(x, indices, null, .{ .groups = 2 }));
    const flat = try tensor.createZeroed(.float32, &.{ 4, 25 });
    defer flat.release();
    try testing.expectError(error.ShapeMismatch, conv2d(flat, weight, null, .{ .groups = 2 }));
    const ok = try conv2d(x, weight, null, .{ .groups = 2, .padding = .{ 1, 0 } });
    defer ok.release();
    try testing.expectEqualSlices(usize, &.{ 1, 6, 5, 3 }, ok.dims());
}

test "conv_transpose2d refuses bad output padding and padding that empties the output" {
    const x = try tensor.createZeroed(.float32, &.{ 2, 4, 3 });
    defer x.release();
    const weight = try tensor.createZeroed(.float32, &.{ 2, 3, 3, 3 });
    defer weight.release();
    const out = try convTranspose2d(x, weight, null, .{ .stride = .{ 2, 2 }, .output_padding = .{ 1, 0 } });
    defer out.release();
    try testing.expectEqualSlices(usize, &.{ 3, 10, 7 }, out.dims());
    try testing.expectError(error.InvalidArgument, convTranspose2d(x, weight, null, .{ .output_padding = .{ 1, 0 } }));
    try testing.expectError(error.ShapeMismatch, convTranspose2d(x, weight, null, .{ .padding = .{ 3, 0 } }));
    try testing.expectError(error.ShapeMismatch, convTranspose2d(x, weight, null, .{ .groups = 4 }));
}
