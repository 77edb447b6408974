//! The op layer's front door: op codes, each op's schema (its options struct), and one
//! switch from options to op. Eager TypeScript ops, forked tasks and the interpreter all run
//! ops through `execute`; each op group lives in ops/*.zig (shape checks, output allocation,
//! the split over the intra-op pool) and calls kernels/*.zig.
//!
//! An op's parameters are written once, here, as the fields of its options struct (see
//! ops/schema.zig for what a field's type, default and bounds mean). The flat f64 encoding
//! of the FFI, the named parameters of model files and the TypeScript descriptors
//! (ffi/abi.ts, generated from `describe`) all derive from these structs.
//!
//! Adding an op: an `OpCode`, a field of `Options` (its options struct, with `inputs`), an
//! arm in `execute`, and the op itself in ops/*.zig; then `deno task gen` regenerates the
//! TypeScript descriptors.
const std = @import("std");
const status = @import("status.zig");
const tensor = @import("tensor.zig");
const schema = @import("ops/schema.zig");
const elementwise = @import("ops/elementwise.zig");
const reduction = @import("ops/reduction.zig");
const normalization = @import("ops/normalization.zig");
const embedding = @import("ops/embedding.zig");
const shape = @import("ops/shape.zig");
const linalg = @import("ops/linalg.zig");
const conv = @import("ops/conv.zig");
const pooling = @import("ops/pooling.zig");
const indexing = @import("ops/indexing.zig");
const recurrent = @import("ops/recurrent.zig");
const dynamic = @import("ops/dynamic.zig");
const scatter = @import("ops/scatter.zig");
const detection = @import("ops/detection.zig");
const grid_sample = @import("ops/grid_sample.zig");
const quantized = @import("ops/quantized.zig");
const elementwise_kernels = @import("kernels/elementwise.zig");
const conv_kernels = @import("kernels/conv.zig");
const indexing_kernels = @import("kernels/indexing.zig");
const recurrent_kernels = @import("kernels/recurrent.zig");

const Error = status.Error;
const Tensor = tensor.Tensor;
const Bound = schema.Bound;
const List = schema.List;
const max_dims = tensor.max_dims;

pub const max_inputs = schema.max_inputs;
pub const max_flat_values = schema.max_flat_values;

/// Op codes are part of the ABI (the FFI passes them): append only.
pub const OpCode = enum(u32) {
    mm = 0,
    add = 1,
    sub = 2,
    mul = 3,
    div = 4,
    pow = 5,
    maximum = 6,
    minimum = 7,
    relu = 8,
    gelu = 9,
    sigmoid = 10,
    tanh = 11,
    exp = 12,
    log = 13,
    sqrt = 14,
    neg = 15,
    abs = 16,
    clamp = 17,
    sum = 18,
    mean = 19,
    max = 20,
    min = 21,
    argmax = 22,
    softmax = 23,
    log_softmax = 24,
    layer_norm = 25,
    batch_norm = 26,
    embedding = 27,
    embedding_bag = 28,
    reshape = 29,
    flatten = 30,
    squeeze = 31,
    unsqueeze = 32,
    transpose = 33,
    permute = 34,
    slice = 35,
    concat = 36,
    gather = 37,
    contiguous = 38,
    conv2d = 39,
    conv_transpose2d = 40,
    max_pool2d = 41,
    avg_pool2d = 42,
    adaptive_avg_pool2d = 43,
    matmul = 44,
    gemm = 45,
    leaky_relu = 46,
    hard_sigmoid = 47,
    hard_swish = 48,
    erf = 49,
    where = 50,
    compare = 51,
    expand = 52,
    cast = 53,
    pad = 54,
    resize = 55,
    take = 56,
    elu = 57,
    cum_sum = 58,
    lstm = 59,
    gru = 60,
    rnn = 61,
    shape_of = 62,
    int_binary = 63,
    reshape_to = 64,
    expand_to = 65,
    constant_of_shape = 66,
    range = 67,
    slice_to = 68,
    resize_to = 69,
    unary_math = 70,
    prod = 71,
    cum_prod = 72,
    gather_elements = 73,
    scatter_elements = 74,
    gather_nd = 75,
    scatter_nd = 76,
    top_k = 77,
    fmod = 78,
    quantize_linear = 79,
    dequantize_linear = 80,
    dynamic_quantize = 81,
    pack_int8 = 82,
    matmul_int8 = 83,
    conv2d_int8 = 84,
    non_max_suppression = 85,
    non_zero = 86,
    grid_sample = 87,
    quantized_pointwise = 90,

    pub fn fromInt(raw: u32) Error!OpCode {
        return std.meta.intToEnum(OpCode, raw) catch
            status.fail(error.InvalidArgument, "unknown op code {d}", .{raw});
    }
};

// ---------------------------------------------------------------------------------------
// The schema: one options struct per op (shared where ops take the same parameters).

const one_input: []const []const u8 = &.{"x"};
const two_inputs: []const []const u8 = &.{ "a", "b" };

/// An op of one tensor and no parameters.
pub const Unary = struct {
    pub const inputs = one_input;
};

/// An op of two tensors and no parameters.
pub const Pair = struct {
    pub const inputs = two_inputs;
};

/// add, sub, mul, div, pow, maximum, minimum, fmod: two tensors broadcast (NumPy rules), or one
/// tensor and a number (`scalar`, on the left when `scalar_first`).
pub const Binary = struct {
    pub const inputs: []const []const u8 = &.{ "a", "b?" };
    scalar: ?f64 = null,
    scalar_first: bool = false,

    pub fn check(options: Binary, op: []const u8, input_count: usize) Error!void {
        if ((input_count == 1) != (options.scalar != null)) {
            return status.fail(error.InvalidArgument, "{s}: takes two tensors, or one tensor and a scalar", .{op});
        }
    }
};

pub const Gelu = struct {
    pub const inputs = one_input;
    pub const Approximate = enum(u8) { none, tanh };
    approximate: Approximate = .none,
};

/// Bounds that are absent (null) leave that side open.
pub const Clamp = struct {
    pub const inputs = one_input;
    pub const bounds = .{ .min = Bound.not_nan, .max = Bound.not_nan };
    min: ?f64 = null,
    max: ?f64 = null,
};

pub const LeakyRelu = struct {
    pub const inputs = one_input;
    pub const bounds = .{ .alpha = Bound.finite };
    alpha: f64 = 0.01,
};

/// max(0, min(1, alpha·x + beta)).
pub const HardSigmoid = struct {
    pub const inputs = one_input;
    pub const bounds = .{ .alpha = Bound.finite, .beta = Bound.finite };
    alpha: f64 = 0.2,
    beta: f64 = 0.5,
};

/// sum, mean, max, min over `dims` (all dims when empty).
pub const Reduce = struct {
    pub const inputs = one_input;
    dims: List(i64, max_dims) = .{},
    keepdim: bool = false,
};

/// The index of the largest value along `dim`, or in the flattened tensor when null: the
/// first of equal maxima, or the last when `last` (ONNX's select_last_index).
pub const Argmax = struct {
    pub const inputs = one_input;
    dim: ?i64 = null,
    keepdim: bool = false,
    last: bool = false,
};

pub const Softmax = struct {
    pub const inputs = one_input;
    dim: i64,
};

/// Normalises over the last `normalized_ndim` dims; weight and bias are optional inputs,
/// present as the flags say.
pub const LayerNorm = struct {
    pub const inputs: []const []const u8 = &.{ "x", "weight?", "bias?" };
    pub const bounds = .{ .normalized_ndim = Bound{ .min = 1, .max = max_dims }, .eps = Bound{ .min = 0, .max = 1 } };
    normalized_ndim: i64 = 1,
    eps: f64 = 1e-5,
    has_weight: bool = false,
    has_bias: bool = false,

    pub fn check(options: LayerNorm, op: []const u8, input_count: usize) Error!void {
        try expectFlagged(op, input_count, 1, .{ .has_weight = options.has_weight, .has_bias = options.has_bias });
    }
};

/// Inference batch norm over dim 1 with running statistics.
pub const BatchNorm = struct {
    pub const inputs: []const []const u8 = &.{ "x", "mean", "variance", "weight?", "bias?" };
    pub const bounds = .{ .eps = Bound{ .min = 0, .max = 1 } };
    eps: f64 = 1e-5,
    has_weight: bool = false,
    has_bias: bool = false,

    pub fn check(options: BatchNorm, op: []const u8, input_count: usize) Error!void {
        try expectFlagged(op, input_count, 3, .{ .has_weight = options.has_weight, .has_bias = options.has_bias });
    }
};

pub const Embedding = struct {
    pub const inputs: []const []const u8 = &.{ "weight", "indices" };
};

pub const EmbeddingBag = struct {
    pub const inputs: []const []const u8 = &.{ "weight", "indices", "offsets?", "per_sample_weights?" };
    mode: embedding.Mode = .mean,
    has_offsets: bool = false,
    has_weights: bool = false,
    /// Offsets hold one more entry, the end of the last bag (PyTorch's include_last_offset).
    include_last_offset: bool = false,

    pub fn check(options: EmbeddingBag, op: []const u8, input_count: usize) Error!void {
        try expectFlagged(op, input_count, 2, .{ .has_offsets = options.has_offsets, .has_weights = options.has_weights });
    }
};

/// The dims of a new shape; one may be -1 (inferred).
pub const Shape = struct {
    pub const inputs = one_input;
    shape: List(i64, max_dims) = .{},
};

pub const Flatten = struct {
    pub const inputs = one_input;
    start: i64 = 0,
    end: i64 = -1,
};

/// Removes `dim` if its size is 1, or every size-1 dim when null.
pub const Squeeze = struct {
    pub const inputs = one_input;
    dim: ?i64 = null,
};

pub const Unsqueeze = struct {
    pub const inputs = one_input;
    dim: i64,
};

pub const Transpose = struct {
    pub const inputs = one_input;
    dim0: i64,
    dim1: i64,
};

pub const Permute = struct {
    pub const inputs = one_input;
    dims: List(i64, max_dims) = .{},
};

/// Elements start, start + step, … before end along dim (Python slice rules).
pub const Slice = struct {
    pub const inputs = one_input;
    pub const bounds = .{ .step = Bound.positive };
    dim: i64 = 0,
    start: i64 = 0,
    end: i64 = std.math.maxInt(i32),
    step: i64 = 1,
};

pub const Concat = struct {
    pub const inputs: []const []const u8 = &.{"inputs..."};
    dim: i64 = 0,
};

/// torch.gather: out[i][j] = x[index[i][j]][j] for dim 0.
pub const Gather = struct {
    pub const inputs: []const []const u8 = &.{ "x", "index" };
    dim: i64,
};

const conv_bounds = .{
    .stride = Bound.positive,
    .padding = Bound.non_negative,
    .output_padding = Bound.non_negative,
    .dilation = Bound.positive,
    .groups = Bound.positive,
    .post_scale = Bound.finite,
    .post_shift = Bound.finite,
};

/// 2-D convolution (NCHW, symmetric padding); pairs are [height, width]. The epilogue
/// (activation, then · post_scale + post_shift) is fused after the bias by graph fusion.
pub const Conv2d = struct {
    pub const inputs: []const []const u8 = &.{ "x", "weight", "bias?" };
    pub const bounds = conv_bounds;
    stride: [2]i64 = .{ 1, 1 },
    padding: [2]i64 = .{ 0, 0 },
    dilation: [2]i64 = .{ 1, 1 },
    groups: i64 = 1,
    has_bias: bool = false,
    activation: conv_kernels.Activation = .none,
    post_scale: f64 = 1,
    post_shift: f64 = 0,

    pub fn check(options: Conv2d, op: []const u8, input_count: usize) Error!void {
        try expectFlagged(op, input_count, 2, .{ .has_bias = options.has_bias });
    }
};

/// The transposed 2-D convolution; output_padding adds rows and columns at the bottom right.
pub const ConvTranspose2d = struct {
    pub const inputs: []const []const u8 = &.{ "x", "weight", "bias?" };
    pub const bounds = conv_bounds;
    stride: [2]i64 = .{ 1, 1 },
    padding: [2]i64 = .{ 0, 0 },
    output_padding: [2]i64 = .{ 0, 0 },
    dilation: [2]i64 = .{ 1, 1 },
    groups: i64 = 1,
    has_bias: bool = false,
    activation: conv_kernels.Activation = .none,
    post_scale: f64 = 1,
    post_shift: f64 = 0,

    pub fn check(options: ConvTranspose2d, op: []const u8, input_count: usize) Error!void {
        try expectFlagged(op, input_count, 2, .{ .has_bias = options.has_bias });
    }
};

const pool_bounds = .{ .kernel_size = Bound.positive, .stride = Bound.positive, .padding = Bound.non_negative, .dilation = Bound.positive };

pub const MaxPool2d = struct {
    pub const inputs = one_input;
    pub const bounds = pool_bounds;
    kernel_size: [2]i64,
    stride: [2]i64,
    padding: [2]i64 = .{ 0, 0 },
    dilation: [2]i64 = .{ 1, 1 },
    ceil_mode: bool = false,
};

/// Windows divide by `divisor` when given, else by the window size (with or without the
/// padding, as count_include_pad says).
pub const AvgPool2d = struct {
    pub const inputs = one_input;
    pub const bounds = .{ .kernel_size = Bound.positive, .stride = Bound.positive, .padding = Bound.non_negative, .divisor = Bound.positive };
    kernel_size: [2]i64,
    stride: [2]i64,
    padding: [2]i64 = .{ 0, 0 },
    ceil_mode: bool = false,
    count_include_pad: bool = true,
    divisor: ?i64 = null,
};

pub const AdaptiveAvgPool2d = struct {
    pub const inputs = one_input;
    pub const bounds = .{ .output_size = Bound.positive };
    output_size: [2]i64,
};

/// alpha · op(a) · op(b) + beta · bias, batched and broadcasting; bias is a [n] row.
pub const Gemm = struct {
    pub const inputs: []const []const u8 = &.{ "a", "b", "bias?" };
    pub const bounds = .{ .alpha = Bound.finite, .beta = Bound.finite };
    trans_a: bool = false,
    trans_b: bool = false,
    alpha: f64 = 1,
    beta: f64 = 1,
    has_bias: bool = false,
    /// Applied to every output value after the bias (fused by the graph optimiser).
    activation: linalg.Activation = .none,

    pub fn check(options: Gemm, op: []const u8, input_count: usize) Error!void {
        try expectFlagged(op, input_count, 2, .{ .has_bias = options.has_bias });
    }
};

/// condition ? x : y, broadcasting; a nonzero condition picks x.
pub const Where = struct {
    pub const inputs: []const []const u8 = &.{ "condition", "x", "y" };
};

/// a ⋈ b as int32 0/1, broadcasting.
pub const Compare = struct {
    pub const inputs = two_inputs;
    kind: indexing_kernels.Comparison,
};

/// Broadcasts x to broadcast(x.shape, shape).
pub const Expand = struct {
    pub const inputs = one_input;
    shape: List(i64, max_dims) = .{},
};

/// Converts to `dtype`; `as_bool` maps every nonzero value to 1 first.
pub const Cast = struct {
    pub const inputs = one_input;
    dtype: tensor.DType,
    as_bool: bool = false,
};

/// `pads` = [begin_0 … begin_{n-1}, end_0 … end_{n-1}].
pub const Pad = struct {
    pub const inputs = one_input;
    pub const bounds = .{ .pads = Bound{ .min = 0, .max = 1 << 32 }, .value = Bound.not_nan };
    mode: indexing_kernels.PadMode = .constant,
    value: f64 = 0,
    pads: List(i64, 2 * max_dims) = .{},
};

/// Per dim: the output size, or -1 for floor(size × scale); the scale maps coordinates.
pub const Resize = struct {
    pub const inputs = one_input;
    pub const Mode = enum(u8) { nearest, linear, cubic };
    pub const bounds = .{ .sizes = Bound{ .min = -1, .max = 1 << 32 }, .scales = Bound{ .min = 0, .max = 1 << 32 }, .cubic_coeff_a = Bound.finite };
    mode: Mode = .nearest,
    coordinate: indexing_kernels.Coordinate = .half_pixel,
    nearest: indexing_kernels.Nearest = .round_prefer_floor,
    sizes: List(i64, max_dims) = .{},
    scales: List(f64, max_dims) = .{},
    /// Cubic only: Keys' coefficient, and whether taps past the edge are left out (the rest
    /// renormalized) instead of repeating the edge.
    cubic_coeff_a: f64 = -0.75,
    exclude_outside: bool = false,

    pub fn check(options: Resize, op: []const u8, _: usize) Error!void {
        if (options.sizes.len != options.scales.len) {
            return status.fail(error.InvalidArgument, "{s}: {d} sizes and {d} scales (one of each per dim)", .{ op, options.sizes.len, options.scales.len });
        }
    }
};

/// ONNX Gather: indices of any shape along `axis`, negative indices wrap.
pub const Take = struct {
    pub const inputs: []const []const u8 = &.{ "x", "indices" };
    axis: i64 = 0,
};

/// x for x > 0, alpha · (exp(x) − 1) below (ONNX Elu, torch.nn.ELU).
pub const Elu = struct {
    pub const inputs = one_input;
    pub const bounds = .{ .alpha = Bound.finite };
    alpha: f64 = 1,
};

/// Running sums along `dim` (ONNX CumSum, torch.cumsum); `exclusive` leaves each element out
/// of its own sum, `reverse` sums from the end.
pub const CumSum = struct {
    pub const inputs = one_input;
    dim: i64,
    exclusive: bool = false,
    reverse: bool = false,
};

/// ONNX LSTM, GRU and RNN in layout 0: x [seq, batch, input], w [directions, gates ×
/// hidden, input], r [directions, gates × hidden, hidden], and the optional inputs as the
/// flags say. The output packs Y and the final states, [seq + states, directions, batch,
/// hidden]: rows 0 … seq − 1 are Y, row seq is Y_h, and (LSTM) row seq + 1 is Y_c.
/// `activations` are codes, cell.activations() per direction (none: ONNX's defaults):
/// 0 sigmoid, 1 tanh, 2 relu, 3 leaky_relu, 4 thresholded_relu, 5 scaled_tanh,
/// 6 hard_sigmoid, 7 elu, 8 softsign, 9 softplus, 10 affine; alpha and beta hold one value per
/// activation, or none for each kind's defaults.
pub const Recurrent = struct {
    pub const inputs: []const []const u8 = &.{ "x", "w", "r", "bias?", "sequence_lens?", "initial_h?", "initial_c?", "peepholes?" };
    pub const bounds = .{
        .hidden_size = Bound.positive,
        .clip = Bound{ .min = 0, .max = std.math.floatMax(f64) },
        .activations = Bound{ .min = 0, .max = @typeInfo(recurrent_kernels.Activation.Kind).@"enum".fields.len - 1 },
        .activation_alpha = Bound.finite,
        .activation_beta = Bound.finite,
    };
    direction: recurrent_kernels.Direction = .forward,
    hidden_size: ?i64 = null,
    clip: ?f64 = null,
    activations: List(i64, 6) = .{},
    activation_alpha: List(f64, 6) = .{},
    activation_beta: List(f64, 6) = .{},
    /// GRU: apply the reset gate after multiplying by R_h.
    linear_before_reset: bool = false,
    /// LSTM: couple the forget gate to the input gate (f = 1 − i).
    input_forget: bool = false,
    has_bias: bool = false,
    has_sequence_lens: bool = false,
    has_initial_h: bool = false,
    has_initial_c: bool = false,
    has_peepholes: bool = false,

    pub fn check(options: Recurrent, op: []const u8, input_count: usize) Error!void {
        try expectFlagged(op, input_count, 3, .{
            .has_bias = options.has_bias,
            .has_sequence_lens = options.has_sequence_lens,
            .has_initial_h = options.has_initial_h,
            .has_initial_c = options.has_initial_c,
            .has_peepholes = options.has_peepholes,
        });
    }

    /// The tensor inputs by name (the optional ones in order, as the flags say).
    fn tensors(options: Recurrent, list: []const *Tensor) recurrent.Inputs {
        const present = [_]bool{ options.has_bias, options.has_sequence_lens, options.has_initial_h, options.has_initial_c, options.has_peepholes };
        var optional: [present.len]?*Tensor = @splat(null);
        var next: usize = 3;
        for (present, &optional) |flag, *slot| if (flag) {
            slot.* = list[next];
            next += 1;
        };
        std.debug.assert(next == list.len);
        return .{
            .x = list[0],
            .w = list[1],
            .r = list[2],
            .bias = optional[0],
            .sequence_lens = optional[1],
            .initial_h = optional[2],
            .initial_c = optional[3],
            .peepholes = optional[4],
        };
    }

    fn config(options: *const Recurrent, cell: recurrent_kernels.Cell) recurrent.Config {
        return .{
            .cell = cell,
            .direction = options.direction,
            .hidden_size = options.hidden_size,
            .clip = options.clip,
            .activations = options.activations.slice(),
            .activation_alpha = options.activation_alpha.slice(),
            .activation_beta = options.activation_beta.slice(),
            .linear_before_reset = options.linear_before_reset,
            .input_forget = options.input_forget,
        };
    }
};

// Shape computations at run time (ops/dynamic.zig): what an imported model computes from
// the sizes of its inputs, kept in the graph when those sizes are symbolic.

/// ONNX Shape: dims [start, end) of x as int64 (negative counts from the end; clamped).
pub const ShapeOf = struct {
    pub const inputs = one_input;
    start: ?i64 = null,
    end: ?i64 = null,
};

/// Integer a ⋈ b (two int64 or two int32 tensors), broadcasting; div truncates, mod takes the
/// divisor's sign, overflow wraps.
pub const IntBinary = struct {
    pub const inputs = two_inputs;
    kind: dynamic.IntKind,

    /// A divisor's values decide whether the op runs (division by zero).
    pub fn isParameterInput(options: IntBinary, index: usize) bool {
        return index == 1 and (options.kind == .div or options.kind == .mod or options.kind == .rem);
    }
};

/// Reshape to the values of an integer tensor: 0 copies the input's dim unless allow_zero,
/// one -1 is inferred.
pub const ReshapeTo = struct {
    pub const inputs: []const []const u8 = &.{ "x", "shape" };
    pub const parameter_inputs: []const usize = &.{1};
    allow_zero: bool = false,
};

/// Broadcasts x to broadcast(x.shape, the values of an integer tensor).
pub const ExpandTo = struct {
    pub const inputs: []const []const u8 = &.{ "x", "shape" };
    pub const parameter_inputs: []const usize = &.{1};
};

/// A `dtype` tensor of the shape an integer tensor holds, every element `value`.
pub const ConstantOfShape = struct {
    pub const inputs: []const []const u8 = &.{"shape"};
    pub const parameter_inputs: []const usize = &.{0};
    pub const bounds = .{ .value = Bound.not_nan };
    dtype: tensor.DType = .float32,
    value: f64 = 0,
};

/// start, start + delta, … before limit (three one-element tensors of one dtype).
pub const Range = struct {
    pub const inputs: []const []const u8 = &.{ "start", "limit", "delta" };
    pub const parameter_inputs: []const usize = &.{ 0, 1, 2 };
};

/// ONNX Slice with starts and ends as integer tensors; axes (default 0 … n − 1) and steps
/// (default 1, positive) as parameters.
pub const SliceTo = struct {
    pub const inputs: []const []const u8 = &.{ "x", "starts", "ends" };
    pub const parameter_inputs: []const usize = &.{ 1, 2 };
    pub const bounds = .{ .axes = Bound.any_integer, .steps = Bound.positive };
    axes: List(i64, max_dims) = .{},
    steps: List(i64, max_dims) = .{},
};

/// Resize to sizes held by an integer tensor, one per axis in `axes` (default all); each
/// scale is output size / input size.
pub const ResizeTo = struct {
    pub const inputs: []const []const u8 = &.{ "x", "sizes" };
    pub const parameter_inputs: []const usize = &.{1};
    mode: Resize.Mode = .nearest,
    coordinate: indexing_kernels.Coordinate = .half_pixel,
    nearest: indexing_kernels.Nearest = .round_prefer_floor,
    axes: List(i64, max_dims) = .{},
};

/// ONNX's remaining one-input float functions as one op (kernels/elementwise.zig `Unary`
/// holds their definitions). alpha and beta are the ONNX attributes the kind takes: selu
/// alpha and gamma (beta); thresholded_relu, celu and swish alpha; shrink lambd (alpha) and
/// bias (beta); is_nan and is_inf give 1 or 0 (is_inf: alpha 1 detects −inf, beta 1 +inf).
/// The to_* kinds round to the narrow types Spindle carries in float32 (ONNX Cast to them):
/// alpha 1 saturates the float8 ones, beta is float8e8m0's rounding (0 up, 1 nearest, 2 down).
pub const UnaryMath = struct {
    pub const inputs = one_input;
    /// The tags of elementwise_kernels.Unary from `reciprocal` on, numbered from 0: one list
    /// of the family, in the kernel's enum.
    pub const Kind = family: {
        const all = @typeInfo(elementwise_kernels.Unary).@"enum".fields;
        const first = @intFromEnum(elementwise_kernels.Unary.reciprocal);
        var fields: [all.len - first]std.builtin.Type.EnumField = undefined;
        for (all[first..], 0..) |field, i| fields[i] = .{ .name = field.name, .value = i };
        const final = fields;
        break :family @Type(.{ .@"enum" = .{ .tag_type = u8, .fields = &final, .decls = &.{}, .is_exhaustive = true } });
    };
    pub const bounds = .{ .alpha = Bound.finite, .beta = Bound.finite };
    kind: Kind,
    alpha: f64 = 0,
    beta: f64 = 0,

    pub fn check(options: UnaryMath, op: []const u8, _: usize) Error!void {
        if (options.kind == .celu and options.alpha == 0) {
            return status.fail(error.InvalidArgument, "{s}: celu's alpha must be nonzero (it divides by it)", .{op});
        }
    }

    fn kernel(options: UnaryMath) elementwise_kernels.Unary {
        return switch (options.kind) {
            inline else => |kind| @field(elementwise_kernels.Unary, @tagName(kind)),
        };
    }
};

// Element-indexed ops (ops/scatter.zig): every index is checked against the data before a
// kernel runs; negative ones count from the end.

/// ONNX GatherElements: out (the indices' shape) takes x's element at each index's
/// coordinates, the `axis` one replaced by the index.
pub const GatherElements = struct {
    pub const inputs: []const []const u8 = &.{ "x", "indices" };
    axis: i64 = 0,
};

/// ONNX ScatterElements: a copy of data with each update placed at its coordinates, the
/// `axis` one replaced by its index, combined by `reduction` in update order.
pub const ScatterElements = struct {
    pub const inputs: []const []const u8 = &.{ "data", "indices", "updates" };
    axis: i64 = 0,
    reduction: scatter.Reduction = .none,
};

/// ONNX GatherND: the slices of x at index tuples (the indices' last dim), the first
/// `batch_dims` dims of x and the indices paired.
pub const GatherNd = struct {
    pub const inputs: []const []const u8 = &.{ "x", "indices" };
    pub const bounds = .{ .batch_dims = Bound{ .min = 0, .max = max_dims } };
    batch_dims: i64 = 0,
};

/// ONNX ScatterND: a copy of data with update slices combined in at index tuples.
pub const ScatterNd = struct {
    pub const inputs: []const []const u8 = &.{ "data", "indices", "updates" };
    reduction: scatter.Reduction = .none,
};

/// The int64 indices of the k largest (or smallest) elements along `axis`, sorted, ties by
/// lower index (ONNX TopK's Indices; its Values are x gathered at them).
pub const TopK = struct {
    pub const inputs = one_input;
    pub const bounds = .{ .k = Bound.non_negative };
    k: i64,
    axis: i64 = -1,
    largest: bool = true,
};

/// ONNX NonMaxSuppression (ops/detection.zig): int64 [selected, 3] rows of (batch, class,
/// box). The optional inputs are one-element tensors (absent or empty: 0 boxes, IoU 0, no
/// score threshold); their values, and the boxes' and scores', decide the output's length.
pub const NonMaxSuppression = struct {
    pub const inputs: []const []const u8 = &.{ "boxes", "scores", "max_output_boxes_per_class?", "iou_threshold?", "score_threshold?" };
    pub const parameter_inputs: []const usize = &.{ 0, 1, 2, 3, 4 };
    /// Boxes as [x_center, y_center, width, height] rather than [y1, x1, y2, x2].
    center_point_box: bool = false,
};

/// ONNX NonZero (ops/dynamic.zig): the int64 [rank, count] coordinates of x's nonzero
/// elements; x's values decide the output's length.
pub const NonZero = struct {
    pub const inputs = one_input;
    pub const parameter_inputs: []const usize = &.{0};
};

/// ONNX GridSample on 4-D inputs (ops/grid_sample.zig): x [N, C, H, W] sampled at the
/// normalised (x, y) locations of grid [N, H_out, W_out, 2].
pub const GridSample = struct {
    pub const inputs: []const []const u8 = &.{ "x", "grid" };
    mode: grid_sample.Mode = .linear,
    padding: grid_sample.Padding = .zeros,
    align_corners: bool = false,
};

// Quantized ops (ops/quantized.zig): quantized values ride as float32 integers.

const quantized_bounds = .{
    .qmin = Bound{ .min = -(1 << 31), .max = (1 << 32) - 1 },
    .qmax = Bound{ .min = -(1 << 31), .max = (1 << 32) - 1 },
    .axis = Bound{ .min = -max_dims, .max = max_dims - 1 },
};

/// ONNX QuantizeLinear / DequantizeLinear: per tensor (one scale) or along `axis`; the
/// quantized type's range is [qmin, qmax] (u8 0…255, s8 -128…127). quantize_linear with
/// dequantize_output is a QDQ pair in one pass (dequantize_linear ignores the flag).
pub const QuantizeLinear = struct {
    pub const inputs: []const []const u8 = &.{ "x", "scale", "zero_point?" };
    pub const bounds = quantized_bounds;
    axis: i64 = 1,
    qmin: i64 = 0,
    qmax: i64 = 255,
    dequantize_output: bool = false,

    pub fn check(options: QuantizeLinear, op: []const u8, _: usize) Error!void {
        if (options.qmin >= options.qmax) return status.fail(error.InvalidArgument, "{s}: qmin {d} must be below qmax {d}", .{ op, options.qmin, options.qmax });
    }
};

/// A chain of elementwise steps between QDQ pairs in one pass (lib/onnx/fuse_int8.ts builds
/// it): `program` is float32, `steps` records of 5 values, then per-channel tables
/// (ops/quantized.zig's `pointwise` gives the step codes); `a` and `b` are the tensors its
/// operand steps read (a residual Add's other input, a squeeze-excitation Mul's scales).
pub const QuantizedPointwise = struct {
    pub const inputs: []const []const u8 = &.{ "x", "program", "a?", "b?" };
    pub const bounds = .{ .steps = Bound{ .min = 1, .max = 1 << 10 } };
    steps: i64,
};

/// Packs int8 weights, [K, N] (or [N, K] when transposed), for matmul_int8/conv2d_int8.
pub const PackInt8 = struct {
    pub const inputs = one_input;
    pub const bounds = .{ .k = Bound{ .min = 1, .max = 1 << 16 }, .n = Bound{ .min = 1, .max = 1 << 24 } };
    k: i64,
    n: i64,
    transposed: bool = false,
};

/// The integer GEMM of quantized MatMul/Conv: A (float32 reals quantized with a_scale and
/// a_zero into [a_min, a_max], or integers when a_integer) times packed int8 weights; the
/// `info` input is float32 [4, n]: per-column weight scale, bias, weight zero point, weight
/// column sum. Optionally requantized to out_scale/out_zero in [out_min, out_max], and
/// dequantized back (a QDQ pair after the op). conv2d_int8 adds the window fields, and may
/// take a quantized_pointwise program (`steps` records) that its epilogue runs on each output
/// value: the chain import folded into it (lib/onnx/fuse_int8.ts).
pub const QGemm = struct {
    pub const inputs: []const []const u8 = &.{ "a", "packed", "info", "a_scale", "a_zero", "program?" };
    pub const bounds = .{
        .n = Bound{ .min = 1, .max = 1 << 24 },
        .k = Bound{ .min = 1, .max = 1 << 16 },
        .a_min = Bound{ .min = -128, .max = 0 },
        .a_max = Bound{ .min = 1, .max = 255 },
        .out_scale = Bound.not_nan,
        .out_min = Bound.any_integer,
        .out_max = Bound.any_integer,
        .kernel = Bound{ .min = 1, .max = 1 << 12 },
        .stride = Bound{ .min = 1, .max = 1 << 12 },
        .padding = Bound{ .min = 0, .max = 1 << 20 },
        .dilation = Bound{ .min = 1, .max = 1 << 12 },
        .steps = Bound{ .min = 0, .max = 1 << 10 },
    };
    n: i64,
    k: i64,
    a_integer: bool = false,
    a_min: i64 = 0,
    a_max: i64 = 255,
    requantize: bool = false,
    dequantize_output: bool = false,
    out_scale: f64 = 1,
    out_zero: i64 = 0,
    out_min: i64 = 0,
    out_max: i64 = 255,
    kernel: [2]i64 = .{ 1, 1 },
    stride: [2]i64 = .{ 1, 1 },
    padding: [2]i64 = .{ 0, 0 },
    dilation: [2]i64 = .{ 1, 1 },
    /// Steps of the pointwise program input (0: none).
    steps: i64 = 0,

    pub fn check(options: QGemm, op: []const u8, input_count: usize) Error!void {
        if (options.a_max - options.a_min != 255) return status.fail(error.InvalidArgument, "{s}: activations must span 8 bits, got [{d}, {d}]", .{ op, options.a_min, options.a_max });
        const chained = options.steps > 0 and std.mem.eql(u8, op, "conv2d_int8");
        if (options.steps > 0 and !chained) return status.fail(error.InvalidArgument, "{s}: only conv2d_int8 takes a pointwise program, got steps {d}", .{ op, options.steps });
        try expectFlagged(op, input_count, 5, .{ .program = chained });
    }

    fn quantization(options: QGemm) quantized.Quantization {
        return .{
            .n = @intCast(options.n),
            .k = @intCast(options.k),
            .a_integer = options.a_integer,
            .a_min = @floatFromInt(options.a_min),
            .a_max = @floatFromInt(options.a_max),
            .requantize = options.requantize,
            .dequantize_output = options.dequantize_output,
            .out_scale = @floatCast(options.out_scale),
            .out_zero = @floatFromInt(options.out_zero),
            .out_min = @floatFromInt(options.out_min),
            .out_max = @floatFromInt(options.out_max),
        };
    }

    fn window(options: QGemm) quantized.Window {
        var result: quantized.Window = undefined;
        for (0..2) |axis| {
            result.kernel[axis] = @intCast(options.kernel[axis]);
            result.stride[axis] = @intCast(options.stride[axis]);
            result.padding[axis] = @intCast(options.padding[axis]);
            result.dilation[axis] = @intCast(options.dilation[axis]);
        }
        return result;
    }
};

/// Every op's options, tagged by op code.
pub const Options = union(OpCode) {
    mm: Pair,
    add: Binary,
    sub: Binary,
    mul: Binary,
    div: Binary,
    pow: Binary,
    maximum: Binary,
    minimum: Binary,
    relu: Unary,
    gelu: Gelu,
    sigmoid: Unary,
    tanh: Unary,
    exp: Unary,
    log: Unary,
    sqrt: Unary,
    neg: Unary,
    abs: Unary,
    clamp: Clamp,
    sum: Reduce,
    mean: Reduce,
    max: Reduce,
    min: Reduce,
    argmax: Argmax,
    softmax: Softmax,
    log_softmax: Softmax,
    layer_norm: LayerNorm,
    batch_norm: BatchNorm,
    embedding: Embedding,
    embedding_bag: EmbeddingBag,
    reshape: Shape,
    flatten: Flatten,
    squeeze: Squeeze,
    unsqueeze: Unsqueeze,
    transpose: Transpose,
    permute: Permute,
    slice: Slice,
    concat: Concat,
    gather: Gather,
    contiguous: Unary,
    conv2d: Conv2d,
    conv_transpose2d: ConvTranspose2d,
    max_pool2d: MaxPool2d,
    avg_pool2d: AvgPool2d,
    adaptive_avg_pool2d: AdaptiveAvgPool2d,
    matmul: Pair,
    gemm: Gemm,
    leaky_relu: LeakyRelu,
    hard_sigmoid: HardSigmoid,
    hard_swish: Unary,
    erf: Unary,
    where: Where,
    compare: Compare,
    expand: Expand,
    cast: Cast,
    pad: Pad,
    resize: Resize,
    take: Take,
    elu: Elu,
    cum_sum: CumSum,
    lstm: Recurrent,
    gru: Recurrent,
    rnn: Recurrent,
    shape_of: ShapeOf,
    int_binary: IntBinary,
    reshape_to: ReshapeTo,
    expand_to: ExpandTo,
    constant_of_shape: ConstantOfShape,
    range: Range,
    slice_to: SliceTo,
    resize_to: ResizeTo,
    unary_math: UnaryMath,
    prod: Reduce,
    cum_prod: CumSum,
    gather_elements: GatherElements,
    scatter_elements: ScatterElements,
    gather_nd: GatherNd,
    scatter_nd: ScatterNd,
    top_k: TopK,
    fmod: Binary,
    quantize_linear: QuantizeLinear,
    dequantize_linear: QuantizeLinear,
    dynamic_quantize: Unary,
    pack_int8: PackInt8,
    matmul_int8: QGemm,
    conv2d_int8: QGemm,
    non_max_suppression: NonMaxSuppression,
    non_zero: NonZero,
    grid_sample: GridSample,
    quantized_pointwise: QuantizedPointwise,
};

/// Checks that the optional inputs after `required` ones are there exactly as `flags` (a
/// struct of bools, in input order) say.
fn expectFlagged(op: []const u8, input_count: usize, required: usize, flags: anytype) Error!void {
    var expected = required;
    inline for (@typeInfo(@TypeOf(flags)).@"struct".fields) |field| expected += @intFromBool(@field(flags, field.name));
    if (input_count != expected) {
        return status.fail(error.InvalidArgument, "{s}: {d} inputs do not match the flags {any}", .{ op, input_count, flags });
    }
}

// ---------------------------------------------------------------------------------------
// Decoding.

/// Decodes `op`'s flat parameters (the FFI's encoding) for `input_count` inputs.
pub fn decodeFlat(op: OpCode, input_count: usize, values: []const f64) Error!Options {
    if (values.len > max_flat_values) return status.fail(error.InvalidArgument, "{s}: too many parameter values ({d})", .{ @tagName(op), values.len });
    switch (op) {
        inline else => |tag| {
            const T = @FieldType(Options, @tagName(tag));
            try schema.checkArity(T, @tagName(tag), input_count);
            return @unionInit(Options, @tagName(tag), try schema.decodeFlat(T, @tagName(tag), values, input_count));
        },
    }
}

/// Decodes `op`'s named parameters from a model file (null: all defaults).
pub fn decodeNamed(op: OpCode, input_count: usize, params: ?std.json.Value) Error!Options {
    switch (op) {
        inline else => |tag| {
            const T = @FieldType(Options, @tagName(tag));
            schema.checkArity(T, @tagName(tag), input_count) catch return error.MalformedModel;
            return @unionInit(Options, @tagName(tag), try schema.decodeJson(T, @tagName(tag), params, input_count));
        },
    }
}

/// The inclusive bounds on `op`'s number of tensor inputs.
pub fn arity(op: OpCode) struct { min: usize, max: usize } {
    switch (op) {
        inline else => |tag| {
            const bounds = comptime schema.arity(@FieldType(Options, @tagName(tag)));
            return .{ .min = bounds.min, .max = bounds.max };
        },
    }
}

/// Writes every op's schema as JSON: {"<name>": {"code", "inputs", "params"}, …}.
pub fn describe(writer: *std.json.Stringify) !void {
    try writer.beginObject();
    inline for (@typeInfo(OpCode).@"enum".fields) |field| {
        try writer.objectField(field.name);
        try writer.beginObject();
        try writer.objectField("code");
        try writer.write(field.value);
        try writer.objectField("schema");
        try schema.describeOptions(@FieldType(Options, field.name), writer);
        try writer.endObject();
    }
    try writer.endObject();
}

/// Whether input `index` of an op is a parameter given as a tensor (a shape, a bound, a
/// step, a divisor): its values, not only its shape, decide what the op gives or whether it
/// runs. The options struct says so (schema.zig: `parameter_inputs`, `isParameterInput`).
pub fn isParameterInput(options: Options, index: usize) bool {
    switch (options) {
        inline else => |o| {
            const T = @TypeOf(o);
            if (@typeInfo(T) != .@"struct") return false;
            if (@hasDecl(T, "isParameterInput")) return o.isParameterInput(index);
            if (!@hasDecl(T, "parameter_inputs")) return false;
            return std.mem.indexOfScalar(usize, T.parameter_inputs, index) != null;
        },
    }
}

/// Decodes flat parameters and runs `op` on `inputs`: the eager path. Returns a new tensor
/// owned by the caller (one reference).
pub fn run(op: OpCode, inputs: []const *Tensor, values: []const f64) Error!*Tensor {
    return execute(try decodeFlat(op, inputs.len, values), inputs);
}

// ---------------------------------------------------------------------------------------
// Running decoded options.

/// Runs the op `options` names on `inputs` (their count already checked by decoding) and
/// returns a new tensor owned by the caller. Parses nothing: the interpreter calls this with
/// options decoded at load.
pub fn execute(options: Options, inputs: []const *Tensor) Error!*Tensor {
    return switch (options) {
        .mm => linalg.mm(inputs[0], inputs[1]),
        .matmul => linalg.matmul(inputs[0], inputs[1]),
        .add, .sub, .mul, .div, .pow, .maximum, .minimum, .fmod => |o| binary(std.meta.activeTag(options), inputs, o),
        .relu, .sigmoid, .tanh, .exp, .log, .sqrt, .neg, .abs, .hard_swish, .erf => elementwise.unary(unaryKind(std.meta.activeTag(options)), .{}, inputs[0]),
        .gelu => |o| elementwise.unary(if (o.approximate == .tanh) .gelu_tanh else .gelu_erf, .{}, inputs[0]),
        .clamp => |o| elementwise.unary(.clamp, .{
            .min = if (o.min) |low| @floatCast(low) else -std.math.inf(f32),
            .max = if (o.max) |high| @floatCast(high) else std.math.inf(f32),
        }, inputs[0]),
        .leaky_relu => |o| elementwise.unary(.leaky_relu, .{ .alpha = @floatCast(o.alpha) }, inputs[0]),
        .elu => |o| elementwise.unary(.elu, .{ .alpha = @floatCast(o.alpha) }, inputs[0]),
        .hard_sigmoid => |o| elementwise.unary(.hard_sigmoid, .{ .alpha = @floatCast(o.alpha), .beta = @floatCast(o.beta) }, inputs[0]),
        .gemm => |o| linalg.gemmBias(inputs[0], inputs[1], if (o.has_bias) inputs[2] else null, .{
            .trans_a = o.trans_a,
            .trans_b = o.trans_b,
            .alpha = @floatCast(o.alpha),
            .beta = @floatCast(o.beta),
            .activation = o.activation,
        }),
        .where => indexing.where(inputs[0], inputs[1], inputs[2]),
        .compare => |o| indexing.compare(@intFromEnum(o.kind), inputs[0], inputs[1]),
        .expand => |o| indexing.expand(inputs[0], o.shape.slice()),
        .cast => |o| indexing.cast(inputs[0], @intFromEnum(o.dtype), o.as_bool),
        .pad => |o| indexing.pad(inputs[0], @intFromEnum(o.mode), o.value, o.pads.slice()),
        .resize => |o| indexing.resizeCubic(inputs[0], @intFromEnum(o.mode), @intFromEnum(o.coordinate), @intFromEnum(o.nearest), .{ .a = o.cubic_coeff_a, .exclude_outside = o.exclude_outside }, o.sizes.slice(), o.scales.slice()),
        .take => |o| indexing.take(inputs[0], inputs[1], o.axis),
        .sum, .mean, .max, .min, .prod => |o| reduction.reduce(reduceKind(std.meta.activeTag(options)), inputs[0], o.dims.slice(), o.keepdim),
        .argmax => |o| if (o.dim) |dim| reduction.reduceSelecting(.argmax, inputs[0], &.{dim}, o.keepdim, o.last) else reduction.reduceSelecting(.argmax, inputs[0], &.{}, o.keepdim, o.last),
        .lstm => |o| recurrent.recurrent(o.config(.lstm), o.tensors(inputs)),
        .gru => |o| recurrent.recurrent(o.config(.gru), o.tensors(inputs)),
        .rnn => |o| recurrent.recurrent(o.config(.rnn), o.tensors(inputs)),
        .cum_sum => |o| reduction.cumsum(inputs[0], o.dim, o.exclusive, o.reverse, false),
        .cum_prod => |o| reduction.cumsum(inputs[0], o.dim, o.exclusive, o.reverse, true),
        .gather_elements => |o| scatter.gatherElements(inputs[0], inputs[1], o.axis),
        .scatter_elements => |o| scatter.scatterElements(inputs[0], inputs[1], inputs[2], o.axis, o.reduction),
        .gather_nd => |o| scatter.gatherNd(inputs[0], inputs[1], @intCast(o.batch_dims)),
        .scatter_nd => |o| scatter.scatterNd(inputs[0], inputs[1], inputs[2], o.reduction),
        .top_k => |o| scatter.topK(inputs[0], @intCast(o.k), o.axis, o.largest),
        .non_max_suppression => |o| detection.nonMaxSuppression(inputs[0], inputs[1], .{
            .max_output_boxes_per_class = if (inputs.len > 2) inputs[2] else null,
            .iou_threshold = if (inputs.len > 3) inputs[3] else null,
            .score_threshold = if (inputs.len > 4) inputs[4] else null,
        }, o.center_point_box),
        .non_zero => dynamic.nonZero(inputs[0]),
        .grid_sample => |o| grid_sample.gridSample(inputs[0], inputs[1], .{ .mode = o.mode, .padding = o.padding, .align_corners = o.align_corners }),
        .unary_math => |o| elementwise.unary(o.kernel(), .{ .alpha = @floatCast(o.alpha), .beta = @floatCast(o.beta) }, inputs[0]),
        .softmax => |o| reduction.softmax(inputs[0], o.dim, false),
        .log_softmax => |o| reduction.softmax(inputs[0], o.dim, true),
        .layer_norm => |o| normalization.layerNorm(inputs[0], @intCast(o.normalized_ndim), if (o.has_weight) inputs[1] else null, if (o.has_bias) inputs[inputs.len - 1] else null, o.eps),
        .batch_norm => |o| normalization.batchNorm(inputs[0], inputs[1], inputs[2], if (o.has_weight) inputs[3] else null, if (o.has_bias) inputs[inputs.len - 1] else null, o.eps),
        .embedding => embedding.embedding(inputs[0], inputs[1]),
        .embedding_bag => |o| embedding.embeddingBag(inputs[0], inputs[1], if (o.has_offsets) inputs[2] else null, if (o.has_weights) inputs[inputs.len - 1] else null, .{
            .mode = o.mode,
            .include_last_offset = o.include_last_offset,
        }),
        .reshape => |o| shape.reshape(inputs[0], o.shape.slice()),
        .flatten => |o| shape.flatten(inputs[0], o.start, o.end),
        .squeeze => |o| shape.squeeze(inputs[0], o.dim),
        .unsqueeze => |o| shape.unsqueeze(inputs[0], o.dim),
        .transpose => |o| shape.transpose(inputs[0], o.dim0, o.dim1),
        .permute => |o| shape.permute(inputs[0], o.dims.slice()),
        .slice => |o| shape.slice(inputs[0], o.dim, o.start, o.end, o.step),
        .concat => |o| shape.concat(inputs, o.dim),
        .gather => |o| shape.gather(inputs[0], o.dim, inputs[1]),
        .contiguous => blk: {
            const out = try tensor.createUninit(inputs[0].dtype, inputs[0].dims());
            errdefer out.release();
            try shape.materializeInto(inputs[0], out);
            break :blk out;
        },
        .conv2d => |o| conv.conv2d(inputs[0], inputs[1], if (o.has_bias) inputs[2] else null, .{
            .stride = o.stride,
            .padding = o.padding,
            .dilation = o.dilation,
            .groups = o.groups,
            .epilogue = epilogue(o.activation, o.post_scale, o.post_shift),
        }),
        .conv_transpose2d => |o| conv.convTranspose2d(inputs[0], inputs[1], if (o.has_bias) inputs[2] else null, .{
            .stride = o.stride,
            .padding = o.padding,
            .output_padding = o.output_padding,
            .dilation = o.dilation,
            .groups = o.groups,
            .epilogue = epilogue(o.activation, o.post_scale, o.post_shift),
        }),
        .max_pool2d => |o| pooling.pool2d("max_pool2d", .max, inputs[0], .{
            .kernel = o.kernel_size,
            .stride = o.stride,
            .padding = o.padding,
            .dilation = o.dilation,
            .ceil_mode = o.ceil_mode,
        }),
        .avg_pool2d => |o| pooling.pool2d("avg_pool2d", .{ .average = .{
            .count_include_pad = o.count_include_pad,
            .divisor = if (o.divisor) |d| @floatFromInt(d) else null,
        } }, inputs[0], .{
            .kernel = o.kernel_size,
            .stride = o.stride,
            .padding = o.padding,
            .ceil_mode = o.ceil_mode,
        }),
        .adaptive_avg_pool2d => |o| pooling.adaptiveAvgPool2d(inputs[0], o.output_size),
        .shape_of => |o| dynamic.shapeOf(inputs[0], o.start, o.end),
        .int_binary => |o| dynamic.intBinary(o.kind, inputs[0], inputs[1]),
        .reshape_to => |o| dynamic.reshapeTo(inputs[0], inputs[1], o.allow_zero),
        .expand_to => dynamic.expandTo(inputs[0], inputs[1]),
        .constant_of_shape => |o| dynamic.constantOfShape(inputs[0], o.dtype, o.value),
        .range => dynamic.range(inputs[0], inputs[1], inputs[2]),
        .slice_to => |o| dynamic.sliceTo(inputs[0], inputs[1], inputs[2], o.axes.slice(), o.steps.slice()),
        .quantize_linear => |o| quantized.quantizeLinear(inputs[0], inputs[1], if (inputs.len > 2) inputs[2] else null, o.axis, o.qmin, o.qmax, o.dequantize_output),
        .dequantize_linear => |o| quantized.dequantizeLinear(inputs[0], inputs[1], if (inputs.len > 2) inputs[2] else null, o.axis, o.qmin, o.qmax),
        .dynamic_quantize => quantized.dynamicQuantize(inputs[0]),
        .pack_int8 => |o| quantized.packInt8(inputs[0], o.k, o.n, o.transposed),
        .matmul_int8 => |o| quantized.matmulInt8(o.quantization(), inputs[0], inputs[1], inputs[2], inputs[3], inputs[4]),
        .conv2d_int8 => |o| quantized.conv2dInt8(o.quantization(), o.window(), inputs[0], inputs[1], inputs[2], inputs[3], inputs[4], if (inputs.len > 5) .{ .program = inputs[5], .steps = o.steps } else null),
        .quantized_pointwise => |o| quantized.pointwise(inputs[0], inputs[1], o.steps, inputs[2..]),
        .resize_to => |o| dynamic.resizeTo(inputs[0], inputs[1], o.axes.slice(), @intFromEnum(o.mode), @intFromEnum(o.coordinate), @intFromEnum(o.nearest)),
    };
}

pub fn epilogue(activation: conv_kernels.Activation, scale: f64, shift: f64) conv_kernels.Epilogue {
    return .{ .activation = activation, .scale = @floatCast(scale), .shift = @floatCast(shift) };
}

fn binary(op: OpCode, inputs: []const *Tensor, options: Binary) Error!*Tensor {
    const kind: elementwise_kernels.Binary = switch (op) {
        .add => .add,
        .sub => .sub,
        .mul => .mul,
        .div => .div,
        .pow => .pow,
        .maximum => .maximum,
        .minimum => .minimum,
        .fmod => .fmod,
        else => unreachable,
    };
    if (options.scalar) |scalar| return elementwise.binaryScalar(kind, inputs[0], @floatCast(scalar), options.scalar_first);
    return elementwise.binary(kind, inputs[0], inputs[1]);
}

fn unaryKind(op: OpCode) elementwise_kernels.Unary {
    return switch (op) {
        .relu => .relu,
        .sigmoid => .sigmoid,
        .tanh => .tanh,
        .exp => .exp,
        .log => .log,
        .sqrt => .sqrt,
        .neg => .neg,
        .abs => .abs,
        .erf => .erf,
        .hard_swish => .hard_swish,
        else => unreachable,
    };
}

fn reduceKind(op: OpCode) reduction.Kind {
    return switch (op) {
        .sum => .sum,
        .mean => .mean,
        .max => .max,
        .min => .min,
        .prod => .prod,
        else => unreachable,
    };
}

test {
    _ = elementwise;
    _ = reduction;
    _ = normalization;
    _ = embedding;
    _ = shape;
    _ = linalg;
    _ = conv;
    _ = pooling;
    _ = indexing;
    _ = recurrent;
    _ = @import("kernels/indexing.zig");
    _ = schema;
    _ = @import("ops/dims.zig");
    _ = @import("ops/dynamic.zig");
    _ = scatter;
    _ = @import("kernels/scatter.zig");
    _ = detection;
    _ = grid_sample;
    _ = @import("kernels/detection.zig");
    _ = @import("kernels/formats.zig");
    _ = @import("ops/quantized.zig");
    _ = @import("ops/bf16.zig");
    _ = @import("ops/packed_f32.zig");
    _ = @import("kernels/gemm_int8.zig");
    _ = @import("kernels/math.zig");
    _ = @import("kernels/elementwise.zig");
    _ = @import("kernels/reduction.zig");
    _ = @import("kernels/normalization.zig");
    _ = @import("kernels/embedding.zig");
    _ = @import("kernels/copy.zig");
    _ = @import("kernels/conv.zig");
    _ = @import("kernels/conv_pointwise.zig");
    _ = @import("kernels/conv_depthwise.zig");
    _ = @import("kernels/conv_depthwise_lanes.zig");
    _ = @import("kernels/conv_squeeze.zig");
    _ = @import("kernels/pooling.zig");
}

test "run checks arity and parameters" {
    const a = try tensor.createZeroed(.float32, &.{ 2, 3 });
    defer a.release();
    try std.testing.expectError(error.InvalidArgument, run(.mm, &.{a}, &.{}));
    try std.testing.expectError(error.InvalidArgument, run(.relu, &.{a}, &.{1}));
    try std.testing.expectError(error.InvalidArgument, run(.softmax, &.{a}, &.{0.5}));
    // add: two tensors, or one tensor and a scalar (presence flag, value, scalar_first).
    try std.testing.expectError(error.InvalidArgument, run(.add, &.{a}, &.{ 0, 0, 0 }));
    try std.testing.expectError(error.InvalidArgument, run(.add, &.{ a, a }, &.{ 1, 2, 0 }));
    const doubled = try run(.mul, &.{a}, &.{ 1, 2, 0 });
    defer doubled.release();
    // sum: dims (a list: length, items), keepdim.
    const summed = try run(.sum, &.{a}, &.{ 1, 1, 0 });
    defer summed.release();
    try std.testing.expectEqualSlices(usize, &.{2}, summed.dims());
}

test "run reads convolution and pooling parameters" {
    const x = try tensor.createZeroed(.float32, &.{ 1, 2, 5, 5 });
    defer x.release();
    const weight = try tensor.createZeroed(.float32, &.{ 4, 2, 3, 3 });
    defer weight.release();
    // stride, padding, dilation (pairs), groups, has_bias, activation, post_scale, post_shift.
    const conv_params = [_]f64{ 2, 2, 1, 1, 1, 1, 1, 0, 1, 1, 0 };
    const y = try run(.conv2d, &.{ x, weight }, &conv_params);
    defer y.release();
    try std.testing.expectEqualSlices(usize, &.{ 1, 4, 3, 3 }, y.dims());
    // has_bias = 1 without a bias input, a missing parameter, a fractional stride.
    try std.testing.expectError(error.InvalidArgument, run(.conv2d, &.{ x, weight }, &.{ 2, 2, 1, 1, 1, 1, 1, 1, 0, 1, 0 }));
    try std.testing.expectError(error.InvalidArgument, run(.conv2d, &.{ x, weight }, conv_params[0..10]));
    try std.testing.expectError(error.InvalidArgument, run(.conv2d, &.{ x, weight }, &.{ 1.5, 2, 1, 1, 1, 1, 1, 0, 0, 1, 0 }));
    // Activation codes 0–2 only; post_scale and post_shift finite. A zero input through
    // hard_swish, then · 3 + 0.5, is 0.5 everywhere.
    try std.testing.expectError(error.InvalidArgument, run(.conv2d, &.{ x, weight }, &.{ 2, 2, 1, 1, 1, 1, 1, 0, 3, 1, 0 }));
    try std.testing.expectError(error.InvalidArgument, run(.conv2d, &.{ x, weight }, &.{ 2, 2, 1, 1, 1, 1, 1, 0, 2, std.math.inf(f64), 0 }));
    const shifted = try run(.conv2d, &.{ x, weight }, &.{ 2, 2, 1, 1, 1, 1, 1, 0, 2, 3, 0.5 });
    defer shifted.release();
    for (shifted.f32Slice()) |value| try std.testing.expectEqual(@as(f32, 0.5), value);
    // stride, padding, output_padding, dilation, groups, has_bias, activation, scale, shift.
    const t = try run(.conv_transpose2d, &.{ y, weight }, &.{ 2, 2, 1, 1, 0, 0, 1, 1, 2, 0, 0, 1, 0 });
    defer t.release();
    try std.testing.expectEqualSlices(usize, &.{ 1, 4, 5, 5 }, t.dims());
    const pooled = try run(.max_pool2d, &.{x}, &.{ 3, 3, 2, 2, 1, 1, 1, 1, 1 });
    defer pooled.release();
    try std.testing.expectEqualSlices(usize, &.{ 1, 2, 3, 3 }, pooled.dims());
    // kernel, stride, padding, ceil_mode, count_include_pad, divisor (absent).
    const averaged = try run(.avg_pool2d, &.{x}, &.{ 2, 2, 2, 2, 0, 0, 1, 0, 0, 0 });
    defer averaged.release();
    try std.testing.expectEqualSlices(usize, &.{ 1, 2, 3, 3 }, averaged.dims());
    const adaptive = try run(.adaptive_avg_pool2d, &.{x}, &.{ 1, 2 });
    defer adaptive.release();
    try std.testing.expectEqualSlices(usize, &.{ 1, 2, 1, 2 }, adaptive.dims());
}

test "every op's options decode from the defaults of its schema" {
    // Each op with only defaulted parameters decodes from an empty object; the others name
    // the missing parameter. Either way nothing crashes and the tag is the op's.
    inline for (@typeInfo(OpCode).@"enum".fields) |field| {
        const op: OpCode = @enumFromInt(field.value);
        if (decodeNamed(op, arity(op).min, null)) |options| {
            try std.testing.expectEqual(op, std.meta.activeTag(options));
        } else |err| {
            try std.testing.expectEqual(error.MalformedModel, err);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Hostile inputs: whatever an op is given, its errors carry a message fit to show.

const settings = @import("settings.zig");

/// The shapes of the tensors the hostile-input test draws from: every rank from 0 to 6 and
/// the maximum, empty tensors, zero-size dims among non-empty ones, and small images and
/// kernels of every aspect.
const hostile_shapes = [_][]const usize{
    &.{},                         &.{0},            &.{1},               &.{2},
    &.{3},                        &.{ 2, 3 },       &.{ 3, 2 },          &.{ 0, 3 },
    &.{ 3, 0 },                   &.{ 1, 3, 2 },    &.{ 1, 1, 2, 2 },    &.{ 1, 1, 3, 3 },
    &.{ 1, 1, 1, 3 },             &.{ 1, 1, 3, 1 }, &.{ 2, 1, 3, 3 },    &.{ 1, 2, 3, 3 },
    &.{ 2, 2, 1, 1 },             &.{ 1, 1, 0, 3 }, &.{ 1, 2, 2, 2, 2 }, &.{ 1, 1, 1, 1, 1, 2 },
    &.{ 2, 1, 1, 1, 1, 1, 1, 3 },
};

/// Integer tensor contents: indices mostly in range, or far out of it both ways.
const index_values = [_]i64{ 0, 1, 2, 1, 0 };
const hostile_index_values = [_]i64{ -1, std.math.maxInt(i64), std.math.minInt(i64), 1 << 40, 0, 7 };

/// Every hostile shape as float32, and as int64 and int32 with either kind of contents,
/// plus transposed views of the 2-D ones.
const HostileTensors = struct {
    items: [hostile_shapes.len * 10]*Tensor = undefined,
    len: usize = 0,
    /// Indices of the float32 tensors in `items`.
    floats: [hostile_shapes.len * 2]u8 = undefined,
    float_count: usize = 0,

    fn init() Error!HostileTensors {
        var pool: HostileTensors = .{};
        errdefer pool.deinit();
        for (hostile_shapes) |dims| {
            const float = try tensor.createUninit(.float32, dims);
            for (float.f32Slice(), 0..) |*x, i| x.* = @as(f32, @floatFromInt(i % 7)) * 0.5 - 1;
            pool.add(float);
            for ([_][]const i64{ &index_values, &hostile_index_values }) |contents| {
                const wide = try tensor.createUninit(.int64, dims);
                for (wide.i64Slice(), 0..) |*x, i| x.* = contents[i % contents.len];
                pool.add(wide);
                const narrow = try tensor.createUninit(.int32, dims);
                for (narrow.i32Slice(), 0..) |*x, i| x.* = std.math.lossyCast(i32, contents[i % contents.len]);
                pool.add(narrow);
            }
        }
        for (pool.items[0..pool.len]) |t| if (t.ndim == 2) pool.add(try shape.transpose(t, 0, 1));
        return pool;
    }

    fn add(pool: *HostileTensors, t: *Tensor) void {
        if (t.dtype == .float32) {
            pool.floats[pool.float_count] = @intCast(pool.len);
            pool.float_count += 1;
        }
        pool.items[pool.len] = t;
        pool.len += 1;
    }

    fn deinit(pool: *HostileTensors) void {
        for (pool.items[0..pool.len]) |t| t.release();
    }

    /// A float32 vector as long as a random dim of tensor `first` (a bias, a norm's weight),
    /// else a random tensor.
    fn vectorAlong(pool: *const HostileTensors, first: u8, random: std.Random) u8 {
        const dims = pool.items[first].dims();
        if (dims.len == 0) return pool.index(random);
        const length = dims[random.uintLessThan(usize, dims.len)];
        for (pool.floats[0..pool.float_count]) |i| {
            if (std.mem.eql(usize, pool.items[i].dims(), &.{length})) return i;
        }
        return pool.index(random);
    }

    /// A random tensor's index, float32 one time in two: most ops take floats.
    fn index(pool: *const HostileTensors, random: std.Random) u8 {
        if (random.boolean()) return pool.floats[random.uintLessThan(usize, pool.float_count)];
        return @intCast(random.uintLessThan(usize, pool.len));
    }
};

/// A flat parameter encoding (ops/schema.zig) under construction; values past the buffer
/// are dropped.
const HostileParameters = struct {
    items: [max_flat_values + 8]f64 = undefined,
    len: usize = 0,

    const small_integers = [_]f64{ 0, 1, 1, 2, 3, -1 };
    const hostile_integers = [_]f64{ 7, -2, -9, 1 << 31, 1 << 32, 9e15, -9e15, 9.5e15, 0.5, std.math.nan(f64), std.math.inf(f64) };
    const small_floats = [_]f64{ 0, 1, -1, 0.5, 1e-5 };
    const hostile_floats = [_]f64{ 1e300, -1e300, std.math.inf(f64), -std.math.inf(f64), std.math.nan(f64), 3.5e38, 1e-320 };
    const flags = [_]f64{ 0, 1 };
    const hostile_flags = [_]f64{ 2, -1, 0.5 };
    const any = small_integers ++ hostile_integers ++ small_floats ++ hostile_floats ++ hostile_flags;

    /// Random parameters for options struct `T`: mostly values that decode, so that the op's
    /// own checks run, and, unless `benign`, one in five out of range or of the wrong kind.
    fn of(comptime T: type, random: std.Random, benign: bool) HostileParameters {
        var parameters: HostileParameters = .{};
        inline for (@typeInfo(T).@"struct".fields) |field| parameters.appendField(field.type, random, benign);
        return parameters;
    }

    fn slice(parameters: *const HostileParameters) []const f64 {
        return parameters.items[0..parameters.len];
    }

    fn append(parameters: *HostileParameters, value: f64) void {
        if (parameters.len == parameters.items.len) return;
        parameters.items[parameters.len] = value;
        parameters.len += 1;
    }

    fn appendField(parameters: *HostileParameters, comptime F: type, random: std.Random, benign: bool) void {
        if (@typeInfo(F) == .@"struct" and @hasDecl(F, "is_schema_list")) {
            const length: f64 = if (!benign and random.uintLessThan(u8, 5) == 0)
                pick(random, &.{ -1, F.item_capacity + 1, 0.5 })
            else
                @floatFromInt(random.uintAtMost(usize, @min(F.item_capacity, 2 * max_dims)));
            parameters.append(length);
            const items: usize = if (length >= 0 and length <= F.item_capacity) @intFromFloat(length) else 0;
            for (0..items) |_| parameters.append(scalar(F.item_type, random, benign));
            return;
        }
        switch (@typeInfo(F)) {
            .optional => |optional| {
                parameters.append(scalar(bool, random, benign));
                parameters.append(scalar(optional.child, random, benign));
            },
            .array => |array| for (0..array.len) |_| parameters.append(scalar(array.child, random, benign)),
            else => parameters.append(scalar(F, random, benign)),
        }
    }

    fn scalar(comptime S: type, random: std.Random, benign: bool) f64 {
        const hostile = !benign and random.uintLessThan(u8, 5) == 0;
        return switch (@typeInfo(S)) {
            .bool => pick(random, if (hostile) &hostile_flags else &flags),
            .int => pick(random, if (hostile) &hostile_integers else &small_integers),
            .float => pick(random, if (hostile) &hostile_floats else &small_floats),
            .@"enum" => |e| if (hostile)
                pick(random, &.{ -1, e.fields.len, 0.5 })
            else
                @floatFromInt(random.uintLessThan(usize, e.fields.len)),
            else => @compileError("hostile parameters: unsupported type " ++ @typeName(S)),
        };
    }

    fn pick(random: std.Random, choices: []const f64) f64 {
        return choices[random.uintLessThan(usize, choices.len)];
    }
};

/// One call of an op: its inputs (indices into the HostileTensors) and parameter values.
const HostileCase = struct {
    inputs: [max_inputs + 1]u8 = undefined,
    input_count: usize = 0,
    parameters: HostileParameters = .{},

    /// A fresh case: mostly an input count `T` takes, and unless `benign` sometimes one it
    /// does not; after the first, unrelated tensors, the first repeated or vectors along
    /// its dims (so that shapes agree and the op's later checks run); one in four with
    /// every parameter left to its default.
    fn random(comptime T: type, pool: *const HostileTensors, generator: std.Random, benign: bool) HostileCase {
        const bounds = comptime schema.arity(T);
        var case: HostileCase = .{};
        case.input_count = if (!benign and generator.uintLessThan(u8, 8) == 0)
            generator.uintAtMost(usize, @min(bounds.max + 1, max_inputs))
        else
            generator.intRangeAtMost(usize, bounds.min, @min(bounds.max, bounds.min + 3));
        const repeat = generator.boolean();
        for (case.inputs[0..case.input_count], 0..) |*slot, i| {
            slot.* = if (i == 0) pool.index(generator) else switch (generator.uintLessThan(u8, 3)) {
                0 => pool.index(generator),
                1 => if (repeat) case.inputs[0] else pool.index(generator),
                else => pool.vectorAlong(case.inputs[0], generator),
            };
        }
        if (generator.uintLessThan(u8, 4) != 0) case.parameters = .of(T, generator, benign);
        return case;
    }

    /// `case` with one or two things changed: an input swapped, dropped or added, a
    /// parameter value replaced.
    fn mutated(case: HostileCase, pool: *const HostileTensors, generator: std.Random) HostileCase {
        var result = case;
        for (0..generator.intRangeAtMost(usize, 1, 2)) |_| switch (generator.uintLessThan(u8, 4)) {
            0 => if (result.input_count > 0) {
                result.inputs[generator.uintLessThan(usize, result.input_count)] = pool.index(generator);
            },
            1 => if (generator.boolean() and result.input_count > 0) {
                result.input_count -= 1;
            } else if (result.input_count < max_inputs) {
                result.inputs[result.input_count] = pool.index(generator);
                result.input_count += 1;
            },
            else => if (result.parameters.len > 0) {
                const slot = generator.uintLessThan(usize, result.parameters.len);
                result.parameters.items[slot] = HostileParameters.pick(generator, &HostileParameters.any);
            },
        };
        return result;
    }
};

/// Runs `case` as the FFI would, over a painted stack. Returns whether the op failed; a
/// failure's message must be fit to show, and is counted in `messages` by its hash.
fn runHostile(op: OpCode, case: *const HostileCase, pool: *const HostileTensors, messages: *std.AutoHashMapUnmanaged(u64, void)) !bool {
    var tensors: [max_inputs + 1]*Tensor = undefined;
    for (case.inputs[0..case.input_count], tensors[0..case.input_count]) |i, *input| input.* = pool.items[i];
    const inputs = tensors[0..case.input_count];
    const values = case.parameters.slice();
    status.clearMessage();
    status.paintStack();
    const out = run(op, inputs, values) catch |err| {
        var buffer: [status.message_capacity]u8 = undefined;
        const message = status.expectFitMessage(&buffer) catch |failure| {
            std.debug.print("  from {s} failing with {s}, parameters {any}, inputs", .{ @tagName(op), @errorName(err), values });
            for (inputs) |t| std.debug.print(" {s}{f}", .{ t.dtype.name(), status.shape(t.dims()) });
            std.debug.print("\n", .{});
            return failure;
        };
        try messages.put(std.testing.allocator, std.hash.Wyhash.hash(0, message), {});
        return true;
    };
    out.release();
    return false;
}

/// Per op: a search for cases that succeed (seeds, from benign random cases), hostile random
/// cases, then mutations of the seeds, whose errors come from the op's later checks.
const hostile_seed_attempts = 20_000;
const hostile_seeds_max = 64;
const hostile_random_cases = 3000;
const hostile_mutated_cases = 3000;

test "every op fails hostile inputs and parameters with messages fit to show" {
    // Each op meets hostile tensors (each rank up to the maximum, empty and zero-size dims,
    // each dtype, indices far out of range, views), hostile parameters (huge, negative,
    // fractional, NaN, wrong kinds, lists too long) and wrong input counts, over a painted
    // stack (status.paintStack) so that a message printing uninitialised memory shows
    // 0xAA values. A budget turns the huge outputs some parameters ask for into errors.
    settings.resetForTesting();
    defer settings.resetForTesting();
    var pool = try HostileTensors.init();
    defer pool.deinit();
    tensor.setAllocationBudget(64 << 20);
    defer tensor.setAllocationBudget(null);
    var prng = std.Random.DefaultPrng.init(17);
    const random = prng.random();
    var messages: std.AutoHashMapUnmanaged(u64, void) = .empty;
    defer messages.deinit(std.testing.allocator);
    inline for (@typeInfo(Options).@"union".fields) |field| {
        const op = @field(OpCode, field.name);
        messages.clearRetainingCapacity();
        var seeds: [hostile_seeds_max]HostileCase = undefined;
        var seed_count: usize = 0;
        var cases: usize = 0;
        var failures: usize = 0;
        for (0..hostile_seed_attempts) |_| {
            if (seed_count == seeds.len) break;
            const case: HostileCase = .random(field.type, &pool, random, true);
            cases += 1;
            if (try runHostile(op, &case, &pool, &messages)) {
                failures += 1;
            } else {
                seeds[seed_count] = case;
                seed_count += 1;
            }
        }
        for (0..hostile_random_cases) |_| {
            const case: HostileCase = .random(field.type, &pool, random, false);
            cases += 1;
            failures += @intFromBool(try runHostile(op, &case, &pool, &messages));
        }
        if (seed_count > 0) for (0..hostile_mutated_cases) |_| {
            const case = seeds[random.uintLessThan(usize, seed_count)].mutated(&pool, random);
            cases += 1;
            failures += @intFromBool(try runHostile(op, &case, &pool, &messages));
        };
        if (failures == 0) {
            std.debug.print("{s}: no hostile case failed\n", .{field.name});
            return error.TestUnexpectedResult;
        }
        // Every output and every temporary of a failed call was released.
        try std.testing.expectEqual(@as(usize, 0), tensor.allocationBudgetUsed());
        if (hostile_report) {
            std.debug.print("{s}: {d} cases, {d} failed with {d} distinct messages; {d} seeds\n", .{ field.name, cases, failures, messages.count(), seed_count });
        }
    }
}

/// Set to print, per op, how many cases ran and failed, with how many distinct messages.
const hostile_report = false;
