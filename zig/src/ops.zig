//! Op dispatch: one switch from op code to op. Eager TypeScript ops, forked tasks and the
//! interpreter all run ops through `run`. Each op group lives in ops/*.zig (shape checks,
//! output allocation, the split over the intra-op pool) and calls kernels/*.zig.
//!
//! Parameters arrive as f64 values (the FFI passes one array); the comment on each op code
//! gives its inputs and parameters.
const std = @import("std");
const status = @import("status.zig");
const tensor = @import("tensor.zig");
const Params = @import("ops/params.zig").Params;
const elementwise = @import("ops/elementwise.zig");
const reduction = @import("ops/reduction.zig");
const normalization = @import("ops/normalization.zig");
const embedding = @import("ops/embedding.zig");
const shape = @import("ops/shape.zig");
const linalg = @import("ops/linalg.zig");
const conv = @import("ops/conv.zig");
const pool = @import("ops/pool.zig");
const indexing = @import("ops/indexing.zig");
const elementwise_kernels = @import("kernels/elementwise.zig");
const conv_kernels = @import("kernels/conv.zig");

const Error = status.Error;
const Tensor = tensor.Tensor;

/// Op codes are part of the ABI (lib/ops/dispatch.ts mirrors them): append only.
pub const OpCode = enum(u32) {
    mm = 0, // (a [m,k], b [k,n])
    add = 1, // (a, b) broadcasting, or (a) with [scalar, scalar_first]
    sub = 2,
    mul = 3,
    div = 4,
    pow = 5,
    maximum = 6,
    minimum = 7,
    relu = 8, // (x)
    gelu = 9, // (x) [approximate: 0 erf, 1 tanh]
    sigmoid = 10,
    tanh = 11,
    exp = 12,
    log = 13,
    sqrt = 14,
    neg = 15,
    abs = 16,
    clamp = 17, // (x) [min, max], NaN = unbounded
    sum = 18, // (x) [keepdim, dims...] (no dims = all)
    mean = 19,
    max = 20,
    min = 21,
    argmax = 22, // (x) [keepdim, dim?]
    softmax = 23, // (x) [dim]
    log_softmax = 24,
    layer_norm = 25, // (x, weight?, bias?) [normalized_ndim, eps, has_weight, has_bias]
    batch_norm = 26, // (x, mean, variance, weight?, bias?) [eps, has_weight, has_bias]
    embedding = 27, // (weight, indices)
    embedding_bag = 28, // (weight, indices, offsets?, per_sample_weights?) [mode, has_offsets, has_weights, include_last_offset]
    reshape = 29, // (x) [shape... with one -1 allowed]
    flatten = 30, // (x) [start, end]
    squeeze = 31, // (x) [dim?]
    unsqueeze = 32, // (x) [dim]
    transpose = 33, // (x) [dim0, dim1]
    permute = 34, // (x) [dims...]
    slice = 35, // (x) [dim, start, end, step]
    concat = 36, // (x0, x1, ...) [dim]
    gather = 37, // (x, index) [dim]
    contiguous = 38, // (x)
    conv2d = 39, // (x, weight, bias?) [stride_h, stride_w, padding_h, padding_w, dilation_h, dilation_w, groups, has_bias, activation (0 none, 1 relu, 2 hard_swish), post_scale?, post_shift?]
    conv_transpose2d = 40, // (x, weight, bias?) [stride_h, stride_w, padding_h, padding_w, output_padding_h, output_padding_w, dilation_h, dilation_w, groups, has_bias, activation, post_scale?, post_shift?]
    max_pool2d = 41, // (x) [kernel_h, kernel_w, stride_h, stride_w, padding_h, padding_w, dilation_h, dilation_w, ceil_mode]
    avg_pool2d = 42, // (x) [kernel_h, kernel_w, stride_h, stride_w, padding_h, padding_w, ceil_mode, count_include_pad, divisor (0 = window size)]
    adaptive_avg_pool2d = 43, // (x) [output_h, output_w]
    matmul = 44, // (a, b) NumPy matmul: batch broadcast, 1-D promotion, transposed views in place
    gemm = 45, // (a, b, bias?) [trans_a, trans_b, alpha, beta, has_bias]: batched, broadcasting; + beta·bias[n]
    leaky_relu = 46, // (x) [alpha]
    hard_sigmoid = 47, // (x) [alpha, beta]: max(0, min(1, alpha·x + beta))
    hard_swish = 48, // (x)
    erf = 49, // (x)
    where = 50, // (cond, x, y) broadcasting; cond nonzero picks x
    compare = 51, // (a, b) [kind: 0 ==, 1 <, 2 >, 3 <=, 4 >=] → int32 0/1, broadcasting
    expand = 52, // (x) [shape...]: broadcast to broadcast(x.shape, shape)
    cast = 53, // (x) [dtype code (0 float32, 1 int64, 2 int32), as_bool]
    pad = 54, // (x) [mode (0 constant, 1 reflect, 2 edge), value, begin pads..., end pads...]
    resize = 55, // (x) [mode (0 nearest, 1 linear), coordinate mode, nearest mode, (size or -1, scale) per dim]
    take = 56, // (x, indices) [axis]: ONNX Gather (indices of any shape, negative wrap)

    pub fn fromInt(raw: u32) Error!OpCode {
        return std.meta.intToEnum(OpCode, raw) catch
            status.fail(error.InvalidArgument, "unknown op code {d}", .{raw});
    }

    /// Inclusive bounds on the number of tensor inputs.
    pub fn arity(op: OpCode) struct { min: usize, max: usize } {
        return switch (op) {
            .mm, .matmul, .embedding, .gather, .compare, .take => .{ .min = 2, .max = 2 },
            .gemm => .{ .min = 2, .max = 3 },
            .where => .{ .min = 3, .max = 3 },
            .add, .sub, .mul, .div, .pow, .maximum, .minimum => .{ .min = 1, .max = 2 },
            .layer_norm => .{ .min = 1, .max = 3 },
            .batch_norm => .{ .min = 3, .max = 5 },
            .embedding_bag => .{ .min = 2, .max = 4 },
            .conv2d, .conv_transpose2d => .{ .min = 2, .max = 3 },
            .concat => .{ .min = 1, .max = max_inputs },
            else => .{ .min = 1, .max = 1 },
        };
    }
};

pub const max_inputs = 16;
pub const max_params = 16;

/// Runs `op` on `inputs` and returns a new tensor owned by the caller (one reference).
pub fn run(op: OpCode, inputs: []const *Tensor, values: []const f64) Error!*Tensor {
    const bounds = op.arity();
    if (inputs.len < bounds.min or inputs.len > bounds.max) {
        return status.fail(error.InvalidArgument, "{s}: expected {d} to {d} inputs, got {d}", .{ @tagName(op), bounds.min, bounds.max, inputs.len });
    }
    if (values.len > max_params) return status.fail(error.InvalidArgument, "{s}: too many parameters ({d})", .{ @tagName(op), values.len });
    const params: Params = .{ .op = @tagName(op), .values = values };
    return switch (op) {
        .mm => linalg.mm(inputs[0], inputs[1]),
        .matmul => blk: {
            try params.expectCount(0, 0);
            break :blk linalg.matmul(inputs[0], inputs[1]);
        },
        .add, .sub, .mul, .div, .pow, .maximum, .minimum => binary(op, inputs, params),
        .relu, .gelu, .sigmoid, .tanh, .exp, .log, .sqrt, .neg, .abs, .clamp => unary(op, inputs[0], params),
        .leaky_relu, .hard_sigmoid, .hard_swish, .erf => unary(op, inputs[0], params),
        .gemm => gemm(inputs, params),
        .where => blk: {
            try params.expectCount(0, 0);
            break :blk indexing.where(inputs[0], inputs[1], inputs[2]);
        },
        .compare => blk: {
            try params.expectCount(1, 1);
            break :blk indexing.compare(try params.int(0, "kind"), inputs[0], inputs[1]);
        },
        .expand => blk: {
            var dims: [tensor.max_dims]i64 = undefined;
            if (params.count() > tensor.max_dims) return status.fail(error.InvalidArgument, "expand: at most {d} dims", .{tensor.max_dims});
            for (0..params.count()) |i| dims[i] = try params.int(i, "shape");
            break :blk indexing.expand(inputs[0], dims[0..params.count()]);
        },
        .cast => blk: {
            try params.expectCount(2, 2);
            break :blk indexing.cast(inputs[0], try params.int(0, "dtype"), try params.flag(1, "as_bool"));
        },
        .pad => blk: {
            try params.expectCount(2, 2 + 2 * 7);
            var pads: [2 * 7]i64 = undefined;
            const count = params.count() - 2;
            for (0..count) |i| pads[i] = try params.int(2 + i, "pads");
            break :blk indexing.pad(inputs[0], try params.int(0, "mode"), try params.float(1, "value"), pads[0..count]);
        },
        .resize => blk: {
            try params.expectCount(3, 3 + 2 * 6);
            if ((params.count() - 3) % 2 != 0) return status.fail(error.InvalidArgument, "resize: expected (size, scale) pairs", .{});
            const rank = (params.count() - 3) / 2;
            var sizes: [6]i64 = undefined;
            var scales: [6]f64 = undefined;
            for (0..rank) |d| {
                sizes[d] = try params.int(3 + 2 * d, "size");
                scales[d] = try params.float(4 + 2 * d, "scale");
            }
            break :blk indexing.resize(inputs[0], try params.int(0, "mode"), try params.int(1, "coordinate"), try params.int(2, "nearest"), sizes[0..rank], scales[0..rank]);
        },
        .take => blk: {
            try params.expectCount(1, 1);
            break :blk indexing.take(inputs[0], inputs[1], try params.int(0, "axis"));
        },
        .sum, .mean, .max, .min => reduce(op, inputs[0], params),
        .argmax => argmax(inputs[0], params),
        .softmax, .log_softmax => blk: {
            try params.expectCount(1, 1);
            break :blk reduction.softmax(inputs[0], try params.int(0, "dim"), op == .log_softmax);
        },
        .layer_norm => layerNorm(inputs, params),
        .batch_norm => batchNorm(inputs, params),
        .embedding => embedding.embedding(inputs[0], inputs[1]),
        .embedding_bag => embeddingBag(inputs, params),
        .reshape => blk: {
            var dims: [tensor.max_dims]i64 = undefined;
            if (params.count() > tensor.max_dims) return status.fail(error.InvalidArgument, "reshape: at most {d} dims", .{tensor.max_dims});
            for (0..params.count()) |i| dims[i] = try params.int(i, "shape");
            break :blk shape.reshape(inputs[0], dims[0..params.count()]);
        },
        .flatten => blk: {
            try params.expectCount(2, 2);
            break :blk shape.flatten(inputs[0], try params.int(0, "start"), try params.int(1, "end"));
        },
        .squeeze => blk: {
            try params.expectCount(0, 1);
            break :blk shape.squeeze(inputs[0], if (params.count() == 1) try params.int(0, "dim") else null);
        },
        .unsqueeze => blk: {
            try params.expectCount(1, 1);
            break :blk shape.unsqueeze(inputs[0], try params.int(0, "dim"));
        },
        .transpose => blk: {
            try params.expectCount(2, 2);
            break :blk shape.transpose(inputs[0], try params.int(0, "dim0"), try params.int(1, "dim1"));
        },
        .permute => blk: {
            var dims: [tensor.max_dims]i64 = undefined;
            if (params.count() > tensor.max_dims) return status.fail(error.InvalidArgument, "permute: at most {d} dims", .{tensor.max_dims});
            for (0..params.count()) |i| dims[i] = try params.int(i, "dims");
            break :blk shape.permute(inputs[0], dims[0..params.count()]);
        },
        .slice => blk: {
            try params.expectCount(4, 4);
            break :blk shape.slice(inputs[0], try params.int(0, "dim"), try params.int(1, "start"), try params.int(2, "end"), try params.int(3, "step"));
        },
        .concat => blk: {
            try params.expectCount(1, 1);
            break :blk shape.concat(inputs, try params.int(0, "dim"));
        },
        .gather => blk: {
            try params.expectCount(1, 1);
            break :blk shape.gather(inputs[0], try params.int(0, "dim"), inputs[1]);
        },
        .contiguous => blk: {
            try params.expectCount(0, 0);
            const out = try tensor.createUninit(inputs[0].dtype, inputs[0].dims());
            errdefer out.release();
            try shape.materializeInto(inputs[0], out);
            break :blk out;
        },
        .conv2d, .conv_transpose2d => convolution(op, inputs, params),
        .max_pool2d => blk: {
            try params.expectCount(9, 9);
            break :blk pool.pool2d("max_pool2d", .max, inputs[0], .{
                .kernel = try pair(params, 0, "kernel_size"),
                .stride = try pair(params, 2, "stride"),
                .padding = try pair(params, 4, "padding"),
                .dilation = try pair(params, 6, "dilation"),
                .ceil_mode = try params.flag(8, "ceil_mode"),
            });
        },
        .avg_pool2d => blk: {
            try params.expectCount(9, 9);
            const divisor = try params.float(8, "divisor");
            break :blk pool.pool2d("avg_pool2d", .{ .average = .{
                .count_include_pad = try params.flag(7, "count_include_pad"),
                .divisor = if (divisor == 0) null else @floatCast(divisor),
            } }, inputs[0], .{
                .kernel = try pair(params, 0, "kernel_size"),
                .stride = try pair(params, 2, "stride"),
                .padding = try pair(params, 4, "padding"),
                .ceil_mode = try params.flag(6, "ceil_mode"),
            });
        },
        .adaptive_avg_pool2d => blk: {
            try params.expectCount(2, 2);
            break :blk pool.adaptiveAvgPool2d(inputs[0], try pair(params, 0, "output_size"));
        },
    };
}

/// Parameters [index, index + 1] as a [height, width] pair of integers.
fn pair(params: Params, index: usize, name: []const u8) Error![2]i64 {
    return .{ try params.int(index, name), try params.int(index + 1, name) };
}

fn convolution(op: OpCode, inputs: []const *Tensor, params: Params) Error!*Tensor {
    const transposed = op == .conv_transpose2d;
    // [..., groups, has_bias, activation] and optionally [post_scale, post_shift].
    const base: usize = if (transposed) 11 else 9;
    try params.expectCount(base, base + 2);
    if (params.count() == base + 1) return status.fail(error.InvalidArgument, "{s}: post_scale without post_shift", .{@tagName(op)});
    const has_bias = try params.flag(base - 2, "has_bias");
    if (inputs.len != 2 + @as(usize, @intFromBool(has_bias))) {
        return status.fail(error.InvalidArgument, "{s}: {d} inputs do not match has_bias={}", .{ @tagName(op), inputs.len, has_bias });
    }
    const bias: ?*Tensor = if (has_bias) inputs[2] else null;
    const activation = try params.int(base - 1, "activation");
    if (activation < 0 or activation > @intFromEnum(conv_kernels.Activation.hard_swish)) {
        return status.fail(error.InvalidArgument, "{s}: activation must be 0 (none), 1 (relu) or 2 (hard_swish), got {d}", .{ @tagName(op), activation });
    }
    var epilogue: conv_kernels.Epilogue = .{ .activation = @enumFromInt(activation) };
    if (params.count() == base + 2) {
        const scale = try params.float(base, "post_scale");
        const shift = try params.float(base + 1, "post_shift");
        if (!std.math.isFinite(scale) or !std.math.isFinite(shift)) {
            return status.fail(error.InvalidArgument, "{s}: post_scale and post_shift must be finite, got {d} and {d}", .{ @tagName(op), scale, shift });
        }
        epilogue.scale = @floatCast(scale);
        epilogue.shift = @floatCast(shift);
    }
    var options: conv.Options = .{
        .stride = try pair(params, 0, "stride"),
        .padding = try pair(params, 2, "padding"),
        .groups = try params.int(base - 3, "groups"),
        .epilogue = epilogue,
    };
    if (transposed) {
        options.output_padding = try pair(params, 4, "output_padding");
        options.dilation = try pair(params, 6, "dilation");
        return conv.convTranspose2d(inputs[0], inputs[1], bias, options);
    }
    options.dilation = try pair(params, 4, "dilation");
    return conv.conv2d(inputs[0], inputs[1], bias, options);
}

fn binary(op: OpCode, inputs: []const *Tensor, params: Params) Error!*Tensor {
    const kind: elementwise_kernels.Binary = switch (op) {
        .add => .add,
        .sub => .sub,
        .mul => .mul,
        .div => .div,
        .pow => .pow,
        .maximum => .maximum,
        .minimum => .minimum,
        else => unreachable,
    };
    if (inputs.len == 2) {
        try params.expectCount(0, 0);
        return elementwise.binary(kind, inputs[0], inputs[1]);
    }
    try params.expectCount(2, 2);
    const scalar = try params.float(0, "scalar");
    return elementwise.binaryScalar(kind, inputs[0], @floatCast(scalar), try params.flag(1, "scalar_first"));
}

fn unary(op: OpCode, input: *Tensor, params: Params) Error!*Tensor {
    var unary_params: elementwise_kernels.UnaryParams = .{};
    const kind: elementwise_kernels.Unary = switch (op) {
        .relu => .relu,
        .gelu => blk: {
            try params.expectCount(0, 1);
            const tanh_form = params.count() == 1 and try params.flag(0, "approximate");
            break :blk if (tanh_form) .gelu_tanh else .gelu_erf;
        },
        .sigmoid => .sigmoid,
        .tanh => .tanh,
        .exp => .exp,
        .log => .log,
        .sqrt => .sqrt,
        .neg => .neg,
        .abs => .abs,
        .erf => .erf,
        .hard_swish => .hard_swish,
        .leaky_relu => blk: {
            try params.expectCount(1, 1);
            unary_params.alpha = @floatCast(try params.float(0, "alpha"));
            break :blk .leaky_relu;
        },
        .hard_sigmoid => blk: {
            try params.expectCount(2, 2);
            unary_params.alpha = @floatCast(try params.float(0, "alpha"));
            unary_params.beta = @floatCast(try params.float(1, "beta"));
            break :blk .hard_sigmoid;
        },
        .clamp => blk: {
            try params.expectCount(2, 2);
            const low = try params.float(0, "min");
            const high = try params.float(1, "max");
            if (!std.math.isNan(low)) unary_params.min = @floatCast(low);
            if (!std.math.isNan(high)) unary_params.max = @floatCast(high);
            break :blk .clamp;
        },
        else => unreachable,
    };
    if (op != .gelu and op != .clamp and op != .leaky_relu and op != .hard_sigmoid) try params.expectCount(0, 0);
    return elementwise.unary(kind, unary_params, input);
}

fn gemm(inputs: []const *Tensor, params: Params) Error!*Tensor {
    try params.expectCount(5, 5);
    const has_bias = try params.flag(4, "has_bias");
    if (inputs.len != 2 + @as(usize, @intFromBool(has_bias))) {
        return status.fail(error.InvalidArgument, "gemm: {d} inputs do not match has_bias={}", .{ inputs.len, has_bias });
    }
    return linalg.gemmBias(inputs[0], inputs[1], if (has_bias) inputs[2] else null, .{
        .trans_a = try params.flag(0, "trans_a"),
        .trans_b = try params.flag(1, "trans_b"),
        .alpha = @floatCast(try params.float(2, "alpha")),
        .beta = @floatCast(try params.float(3, "beta")),
    });
}

fn reduce(op: OpCode, input: *Tensor, params: Params) Error!*Tensor {
    try params.expectCount(1, 1 + tensor.max_dims);
    const keepdim = try params.flag(0, "keepdim");
    var dims: [tensor.max_dims]i64 = undefined;
    const count = params.count() - 1;
    for (0..count) |i| dims[i] = try params.int(1 + i, "dims");
    const kind: reduction.Kind = switch (op) {
        .sum => .sum,
        .mean => .mean,
        .max => .max,
        .min => .min,
        else => unreachable,
    };
    return reduction.reduce(kind, input, dims[0..count], keepdim);
}

fn argmax(input: *Tensor, params: Params) Error!*Tensor {
    try params.expectCount(1, 2);
    const keepdim = try params.flag(0, "keepdim");
    if (params.count() == 2) {
        const dim = [_]i64{try params.int(1, "dim")};
        return reduction.reduce(.argmax, input, &dim, keepdim);
    }
    return reduction.reduce(.argmax, input, &.{}, keepdim);
}

fn layerNorm(inputs: []const *Tensor, params: Params) Error!*Tensor {
    try params.expectCount(4, 4);
    const normalized = try params.int(0, "normalized_ndim");
    if (normalized <= 0 or normalized > tensor.max_dims) {
        return status.fail(error.InvalidArgument, "layer_norm: normalized shape must have 1 to {d} dims, got {d}", .{ tensor.max_dims, normalized });
    }
    const has_weight = try params.flag(2, "has_weight");
    const has_bias = try params.flag(3, "has_bias");
    if (inputs.len != 1 + @as(usize, @intFromBool(has_weight)) + @intFromBool(has_bias)) {
        return status.fail(error.InvalidArgument, "layer_norm: {d} inputs do not match has_weight={} has_bias={}", .{ inputs.len, has_weight, has_bias });
    }
    const weight: ?*Tensor = if (has_weight) inputs[1] else null;
    const bias: ?*Tensor = if (has_bias) inputs[inputs.len - 1] else null;
    return normalization.layerNorm(inputs[0], @intCast(normalized), weight, bias, try params.float(1, "eps"));
}

fn batchNorm(inputs: []const *Tensor, params: Params) Error!*Tensor {
    try params.expectCount(3, 3);
    const has_weight = try params.flag(1, "has_weight");
    const has_bias = try params.flag(2, "has_bias");
    if (inputs.len != 3 + @as(usize, @intFromBool(has_weight)) + @intFromBool(has_bias)) {
        return status.fail(error.InvalidArgument, "batch_norm: {d} inputs do not match has_weight={} has_bias={}", .{ inputs.len, has_weight, has_bias });
    }
    const weight: ?*Tensor = if (has_weight) inputs[3] else null;
    const bias: ?*Tensor = if (has_bias) inputs[inputs.len - 1] else null;
    return normalization.batchNorm(inputs[0], inputs[1], inputs[2], weight, bias, try params.float(0, "eps"));
}

fn embeddingBag(inputs: []const *Tensor, params: Params) Error!*Tensor {
    try params.expectCount(4, 4);
    const mode_raw = try params.int(0, "mode");
    const mode: embedding.Mode = switch (mode_raw) {
        0 => .sum,
        1 => .mean,
        2 => .max,
        else => return status.fail(error.InvalidArgument, "embedding_bag: mode must be 0 (sum), 1 (mean) or 2 (max), got {d}", .{mode_raw}),
    };
    const has_offsets = try params.flag(1, "has_offsets");
    const has_weights = try params.flag(2, "has_weights");
    if (inputs.len != 2 + @as(usize, @intFromBool(has_offsets)) + @intFromBool(has_weights)) {
        return status.fail(error.InvalidArgument, "embedding_bag: {d} inputs do not match has_offsets={} has_weights={}", .{ inputs.len, has_offsets, has_weights });
    }
    const offsets: ?*Tensor = if (has_offsets) inputs[2] else null;
    const weights: ?*Tensor = if (has_weights) inputs[inputs.len - 1] else null;
    return embedding.embeddingBag(inputs[0], inputs[1], offsets, weights, .{
        .mode = mode,
        .include_last_offset = try params.flag(3, "include_last_offset"),
    });
}

test {
    _ = elementwise;
    _ = reduction;
    _ = normalization;
    _ = embedding;
    _ = shape;
    _ = linalg;
    _ = conv;
    _ = pool;
    _ = indexing;
    _ = @import("kernels/indexing.zig");
    _ = @import("ops/params.zig");
    _ = @import("kernels/math.zig");
    _ = @import("kernels/elementwise.zig");
    _ = @import("kernels/reduction.zig");
    _ = @import("kernels/normalization.zig");
    _ = @import("kernels/embedding.zig");
    _ = @import("kernels/copy.zig");
    _ = @import("kernels/conv.zig");
    _ = @import("kernels/pool.zig");
}

test "run checks arity and parameters" {
    const a = try tensor.createZeroed(.float32, &.{ 2, 3 });
    defer a.release();
    try std.testing.expectError(error.InvalidArgument, run(.mm, &.{a}, &.{}));
    try std.testing.expectError(error.InvalidArgument, run(.relu, &.{a}, &.{1}));
    try std.testing.expectError(error.InvalidArgument, run(.softmax, &.{a}, &.{0.5}));
    try std.testing.expectError(error.InvalidArgument, run(.add, &.{a}, &.{ 1, 2 }));
    const doubled = try run(.mul, &.{a}, &.{ 2, 0 });
    defer doubled.release();
    const summed = try run(.sum, &.{a}, &.{ 0, 1 });
    defer summed.release();
    try std.testing.expectEqualSlices(usize, &.{2}, summed.dims());
}

test "run reads convolution and pooling parameters" {
    const x = try tensor.createZeroed(.float32, &.{ 1, 2, 5, 5 });
    defer x.release();
    const weight = try tensor.createZeroed(.float32, &.{ 4, 2, 3, 3 });
    defer weight.release();
    const conv_params = [_]f64{ 2, 2, 1, 1, 1, 1, 1, 0, 1 };
    const y = try run(.conv2d, &.{ x, weight }, &conv_params);
    defer y.release();
    try std.testing.expectEqualSlices(usize, &.{ 1, 4, 3, 3 }, y.dims());
    // has_bias = 1 without a bias input, a missing parameter, a fractional stride.
    try std.testing.expectError(error.InvalidArgument, run(.conv2d, &.{ x, weight }, &.{ 2, 2, 1, 1, 1, 1, 1, 1, 0 }));
    try std.testing.expectError(error.InvalidArgument, run(.conv2d, &.{ x, weight }, conv_params[0..8]));
    try std.testing.expectError(error.InvalidArgument, run(.conv2d, &.{ x, weight }, &.{ 1.5, 2, 1, 1, 1, 1, 1, 0, 0 }));
    // Activation codes 0–2 only; post_scale needs post_shift; both finite. A zero input
    // through hard_swish, then · 3 + 0.5, is 0.5 everywhere.
    try std.testing.expectError(error.InvalidArgument, run(.conv2d, &.{ x, weight }, &.{ 2, 2, 1, 1, 1, 1, 1, 0, 3 }));
    try std.testing.expectError(error.InvalidArgument, run(.conv2d, &.{ x, weight }, &.{ 2, 2, 1, 1, 1, 1, 1, 0, 2, 3 }));
    try std.testing.expectError(error.InvalidArgument, run(.conv2d, &.{ x, weight }, &.{ 2, 2, 1, 1, 1, 1, 1, 0, 2, std.math.inf(f64), 0 }));
    const shifted = try run(.conv2d, &.{ x, weight }, &.{ 2, 2, 1, 1, 1, 1, 1, 0, 2, 3, 0.5 });
    defer shifted.release();
    for (shifted.f32Slice()) |value| try std.testing.expectEqual(@as(f32, 0.5), value);
    const t = try run(.conv_transpose2d, &.{ y, weight }, &.{ 2, 2, 1, 1, 0, 0, 1, 1, 2, 0, 0 });
    defer t.release();
    try std.testing.expectEqualSlices(usize, &.{ 1, 4, 5, 5 }, t.dims());
    const pooled = try run(.max_pool2d, &.{x}, &.{ 3, 3, 2, 2, 1, 1, 1, 1, 1 });
    defer pooled.release();
    try std.testing.expectEqualSlices(usize, &.{ 1, 2, 3, 3 }, pooled.dims());
    const averaged = try run(.avg_pool2d, &.{x}, &.{ 2, 2, 2, 2, 0, 0, 1, 0, 0 });
    defer averaged.release();
    try std.testing.expectEqualSlices(usize, &.{ 1, 2, 3, 3 }, averaged.dims());
    const adaptive = try run(.adaptive_avg_pool2d, &.{x}, &.{ 1, 2 });
    defer adaptive.release();
    try std.testing.expectEqualSlices(usize, &.{ 1, 2, 1, 2 }, adaptive.dims());
}
