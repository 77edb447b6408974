//! The opt-in bf16 precision of a program: weights packed once at load into bf16 pairs,
//! products in bf16 with f32 accumulation (kernels/gemm_amx.zig and conv_amx.zig where the
//! CPU has AMX, else kernels/gemm_bf16.zig and conv_bf16.zig with AVX512_BF16), everything
//! else in f32.
//!
//! A program loaded with precision bf16 (interpreter/program.zig) packs the constant weight of
//! every conv2d (groups with more than one input channel: depthwise stays f32), gemm, mm and
//! matmul node whose weight is a 2-D constant, and runs those nodes through `execute` here.
//! A node whose runtime shapes do not fit its packed weight (a batched gemm, a weight used
//! under another shape) runs the f32 op instead, so bf16 never changes what a program
//! accepts. Without a kernel (no AVX512_BF16, or a lower CPU level forced) nothing is packed
//! and the program is plain f32; TypeScript warns once (lib/program/program.ts).
const std = @import("std");
const status = @import("../status.zig");
const tensor = @import("../tensor.zig");
const ops = @import("../ops.zig");
const intra_op = @import("../pool/intra_op.zig");
const settings = @import("../settings.zig");
const parallel = @import("parallel.zig");
const shape_ops = @import("shape.zig");
const conv = @import("conv.zig");
const linalg = @import("linalg.zig");
const gemm = @import("../kernels/gemm.zig");
const gemm_bf16 = @import("../kernels/gemm_bf16.zig");
const gemm_amx = @import("../kernels/gemm_amx.zig");
const conv_amx = @import("../kernels/conv_amx.zig");
const conv_bf16 = @import("../kernels/conv_bf16.zig");

const Error = status.Error;
const Tensor = tensor.Tensor;
const assert = std.debug.assert;

/// What a program asks for at load (spindle_program_load's `precision`).
pub const Precision = enum(u32) { f32 = 0, bf16 = 1 };

/// The bf16 kernel this process runs.
pub const Kernel = enum { amx, avx512 };

/// AMX where the CPU has it and Linux grants it, else AVX512_BF16 where it beats f32 (or
/// SPINDLE_BF16_KERNEL=avx512 asks for it), else none.
pub fn kernel() ?Kernel {
    if (gemm_amx.supported()) return .amx;
    if (gemm_bf16.supported() and (gemm_bf16.forced() or gemm_bf16.pays())) return .avx512;
    return null;
}

/// The precisions line of parallel_info.
pub fn description() []const u8 {
    return switch (kernel() orelse return if (gemm_bf16.supported())
        "f32 (bf16 falls back to f32: this CPU's AVX512_BF16 makes fewer products per cycle than its f32 FMA and it exposes no AMX; SPINDLE_BF16_KERNEL=avx512 forces the bf16 kernel)"
    else
        "f32 (bf16 falls back to f32: no AVX512_BF16 or AMX kernel on this CPU or level)") {
        .amx => "f32, bf16 (AMX tiles)",
        .avx512 => "f32, bf16 (AVX512_BF16)",
    };
}

/// The fewest output rows per group (conv) or output columns (matmul, gemm) that bf16 runs:
/// the other operand is converted to bf16 pairs on every call, and each converted value feeds
/// that many products, so a narrow product spends more on conversion than AMX saves. PaddleOCR
/// det at 1 thread: 24 × 864 × 25,600 took 29.7 ms in bf16 against 20.7 in f32, 192 × 192 ×
/// 1,600 1.1 against 1.8 (infer --profile).
pub const width_min = 48;
/// The same for a convolution at stride 1 with a kernel larger than 1×1: conv.zig reads its
/// padded input in place (no im2col copy), which leaves only the conversion per call. det's
/// 24 × 864 × 25,600 then measured 17–19 ms in bf16 against 17–18 in f32: no gain at 24.
pub const implicit_width_min = 32;
/// The fewest depths: AMX pads the depth to 32, so shallower products waste most of a tile.
pub const depth_min = 32;
/// The fewest output channels of a direct AMX convolution (kernels/conv_amx.zig), which
/// converts its input once per call rather than once per tap: with 16 it fills half of its
/// 32-row register block; det's 24-channel 3×3 convs fill three quarters.
pub const direct_rows_min = 16;
/// The same for the direct AVX512_BF16 convolution (kernels/conv_bf16.zig): one 8-row panel;
/// the input is converted once per call and each converted word then feeds rows · taps
/// products. 1×1 convs stay on gemm_bf16.zig's GEMM (pre-packed weights, the input packed
/// into slivers), which measured faster: det 320×320 bf16 at 1 thread took 4.53 ms with them
/// on the GEMM against 4.86 with them direct (A/B, 9 rounds, load 2.8); rec 0.99×.
pub const direct_avx512_rows_min = 8;

/// The fewest output rows of a 1×1 conv (stride 1) on gemm_bf16.zig without AMX: its
/// register block has 8 rows, and the input's conversion feeds every row. Single Conv+Relu
/// models, bf16 on the GEMM against f32, 1 thread (A/B, 5 rounds, load 5.2): 96 × 24 at
/// 160 × 160 0.68×, 32 × 16 at 160 × 160 0.85×, 96 × 12 at 80 × 80 0.85×, 42 × 192 at
/// 20 × 20 0.78×, 24 × 96 at 80 × 80 0.91×, 18 × 96 at 40 × 40 0.97×, 16 × 64 at 40 × 40
/// 0.98×, but 12 × 48 at 80 × 80 1.08× (12 rows fill 2 panels).
pub const pointwise_avx512_rows_min = 16;
/// The fewest depths of the same (AMX's depth_min of 32 is its tile's: this kernel pads the
/// depth to pairs only); 12 was the shallowest measured above.
pub const pointwise_avx512_depth_min = 12;

/// A weight packed at load for one node. `words` is an int32 tensor holding the packed
/// pairs: it is allocated like any load-time tensor, so the program's memory budget counts it.
pub const Weights = struct {
    kernel: Kernel,
    /// conv: the left operand, per group (out/groups rows × in/groups · kh · kw depths);
    /// direct: the weights of kernels/conv_amx.zig or kernels/conv_bf16.zig (one group,
    /// stride 1, `taps` > 1); rows and cols as for conv; matrix: the right operand of a
    /// matmul or gemm (k × n, as op(B)).
    form: enum { conv, direct, matrix },
    rows: usize,
    cols: usize,
    groups: usize,
    /// Words per group (conv) or in all (matrix).
    group_words: usize,
    words: *Tensor,
    /// kh · kw of a direct conv's weight (cols / taps input channels).
    taps: usize = 1,

    pub fn release(weights: *const Weights) void {
        weights.words.release();
    }

    /// The packed words of a direct conv (conv_amx.Args.weights or conv_bf16.Args.weights).
    pub fn directWords(weights: *const Weights) []const u32 {
        assert(weights.form == .direct);
        return weights.group(0);
    }

    fn group(weights: *const Weights, index: usize) []const u32 {
        const all: [*]const u32 = @ptrCast(@alignCast(weights.words.storage.bytes.ptr));
        return all[index * weights.group_words ..][0..weights.group_words];
    }
};

fn packedLength(which: Kernel, comptime form: enum { left, right }, rows: usize, cols: usize) usize {
    return switch (which) {
        .amx => if (form == .left) gemm_amx.PackedA.length(rows, cols) else gemm_amx.PackedB.length(rows, cols),
        .avx512 => if (form == .left) gemm_bf16.PackedA.length(rows, cols) else gemm_bf16.PackedB.length(rows, cols),
    };
}

fn wordTensor(count: usize) Error!*Tensor {
    return tensor.createUninit(.int32, &.{@max(count, 1)});
}

fn wordSlice(t: *Tensor) []u32 {
    const all: [*]u32 = @ptrCast(@alignCast(t.storage.bytes.ptr));
    return all[0..t.numel()];
}

/// Packs a conv2d weight [out, in/groups, kh, kw] (float32) for `groups`, or returns null
/// when the node stays f32 (depthwise, narrow or shallow, an empty or non-float weight).
pub fn packConv(which: Kernel, weight: *Tensor, groups: usize, stride: [2]i64) Error!?Weights {
    if (weight.dtype != .float32 or weight.ndim != 4 or groups == 0) return null;
    const implicit = stride[0] == 1 and stride[1] == 1 and weight.shape[2] * weight.shape[3] > 1;
    const out_channels = weight.shape[0];
    if (out_channels == 0 or out_channels % groups != 0 or weight.shape[1] <= 1) return null;
    const rows = out_channels / groups;
    const depth = weight.shape[1] * weight.shape[2] * weight.shape[3];
    if (which == .amx and implicit and groups == 1 and rows >= direct_rows_min and depth >= depth_min) {
        return try packDirect(.amx, weight);
    }
    if (which == .avx512 and implicit and groups == 1 and rows >= direct_avx512_rows_min and depth >= depth_min) {
        return try packDirect(.avx512, weight);
    }
    const pointwise = weight.shape[2] * weight.shape[3] == 1 and stride[0] == 1 and stride[1] == 1;
    const rows_min: usize = if (which == .avx512 and pointwise) pointwise_avx512_rows_min else if (implicit) implicit_width_min else width_min;
    const depth_floor: usize = if (which == .avx512 and pointwise) pointwise_avx512_depth_min else depth_min;
    if (rows < rows_min or depth < depth_floor) return null;
    const source = try shape_ops.contiguous(weight);
    defer source.release();
    const values = source.f32Slice();
    const group_words = packedLength(which, .left, rows, depth);
    const words = try wordTensor(group_words * groups);
    const all = wordSlice(words);
    for (0..groups) |g| {
        const matrix: gemm_bf16.Matrix = .{ .trans = false, .values = values[g * rows * depth ..][0 .. rows * depth], .ld = depth };
        const out = all[g * group_words ..][0..group_words];
        switch (which) {
            .amx => gemm_amx.PackedA.pack(matrix, rows, depth, out),
            .avx512 => gemm_bf16.PackedA.pack(matrix, rows, depth, out),
        }
    }
    return .{ .kernel = which, .form = .conv, .rows = rows, .cols = depth, .groups = groups, .group_words = group_words, .words = words };
}

/// Packs a conv2d weight [out, in, kh, kw] for the direct kernel of `which`
/// (kernels/conv_amx.zig or kernels/conv_bf16.zig).
fn packDirect(comptime which: Kernel, weight: *Tensor) Error!Weights {
    const K = directKernel(which);
    const source = try shape_ops.contiguous(weight);
    defer source.release();
    const rows = weight.shape[0];
    const channels = weight.shape[1];
    const taps = weight.shape[2] * weight.shape[3];
    const count = K.weightsLength(rows, channels, taps);
    const words = try wordTensor(count);
    K.packWeights(source.f32Slice(), rows, channels, taps, wordSlice(words)[0..count]);
    return .{ .kernel = which, .form = .direct, .rows = rows, .cols = channels * taps, .groups = 1, .group_words = count, .words = words, .taps = taps };
}

/// The direct convolution kernel of `which` (the same layout functions and Args).
pub fn directKernel(comptime which: Kernel) type {
    return if (which == .amx) conv_amx else conv_bf16;
}

/// Packs a 2-D float32 weight as op(B) (k × n; `trans`: the weight is [n, k]), or returns
/// null when it is not one.
pub fn packMatrix(which: Kernel, weight: *Tensor, trans: bool) Error!?Weights {
    if (weight.dtype != .float32 or weight.ndim != 2) return null;
    const k = if (trans) weight.shape[1] else weight.shape[0];
    const n = if (trans) weight.shape[0] else weight.shape[1];
    if (n < width_min or k < depth_min) return null;
    const source = try shape_ops.contiguous(weight);
    defer source.release();
    const matrix: gemm_bf16.Matrix = .{ .trans = trans, .values = source.f32Slice(), .ld = weight.shape[1] };
    const group_words = packedLength(which, .right, k, n);
    const words = try wordTensor(group_words);
    const out = wordSlice(words)[0..group_words];
    switch (which) {
        .amx => gemm_amx.PackedB.pack(matrix, k, n, out),
        .avx512 => gemm_bf16.PackedB.pack(matrix, k, n, out),
    }
    return .{ .kernel = which, .form = .matrix, .rows = k, .cols = n, .groups = 1, .group_words = group_words, .words = words };
}

/// Runs a node with a packed weight: the bf16 path when the runtime shapes fit it, else the
/// f32 op.
pub fn execute(options: ops.Options, inputs: []const *Tensor, weights: *const Weights) Error!*Tensor {
    switch (options) {
        .conv2d => |o| if (weights.form != .matrix) {
            return conv.conv2dBf16(inputs[0], inputs[1], if (o.has_bias) inputs[2] else null, .{
                .stride = o.stride,
                .padding = o.padding,
                .dilation = o.dilation,
                .groups = o.groups,
                .epilogue = ops.epilogue(o.activation, o.post_scale, o.post_shift),
            }, weights);
        },
        .matmul, .mm => if (weights.form == .matrix) {
            if (try matmul(inputs[0], inputs[1], weights)) |out| return out;
        },
        .gemm => |o| if (weights.form == .matrix and !o.trans_a) {
            if (try gemmBias(inputs[0], if (o.has_bias) inputs[2] else null, @floatCast(o.alpha), @floatCast(o.beta), o.activation, weights)) |out| return out;
        },
        else => {},
    }
    return ops.execute(options, inputs);
}

/// Rows [row_begin, +rows) × all columns of one convolution group's GEMM on one thread:
/// C (ldc) = packed weights of `group` · B (k × columns, ldb). Called by conv.zig's
/// unfolded path, whose row blocks are multiples of 16 for this.
pub fn convBlock(weights: *const Weights, group: usize, row_begin: usize, rows: usize, b: []const f32, ldb: usize, columns: usize, c: []f32, ldc: usize) Error!void {
    assert(weights.form == .conv and group < weights.groups);
    const m = weights.rows;
    const k = weights.cols;
    const right: gemm_bf16.Matrix = .{ .trans = false, .values = b, .ld = ldb };
    switch (weights.kernel) {
        .amx => {
            const args: gemm_amx.Args = .{ .m = m, .n = columns, .k = k, .a = .{ .packed_a = .{ .m = m, .k = k, .values = weights.group(group) } }, .b = .{ .matrix = right }, .c = c, .ldc = ldc };
            try args.validate();
            gemm_amx.runBlock(&args, row_begin, rows, 0, columns);
        },
        .avx512 => {
            const args: gemm_bf16.Args = .{ .m = m, .n = columns, .k = k, .a = .{ .packed_a = .{ .m = m, .k = k, .values = weights.group(group) } }, .b = .{ .matrix = right }, .c = c, .ldc = ldc };
            try args.validate();
            gemm_bf16.runBlock(&args, row_begin, rows, 0, columns);
        },
    }
}

/// Tiles for an m × n product on the packed weight's kernel (aligned to its register block).
pub fn plan(weights: *const Weights, m: usize, n: usize, threads: usize) gemm.Tiling {
    return switch (weights.kernel) {
        .amx => gemm_amx.plan(m, n, threads),
        .avx512 => gemm_bf16.plan(m, n, threads),
    };
}

/// Tiles [begin, end) of `tiling` (from `plan`) of the flat output C (m × n) = packed weights
/// of `group` · B, where B's row p is values[offsets[p]..][0..n] (conv.zig's implicit GEMM on
/// the padded input: no im2col copy; rows are converted to bf16 as they are packed).
pub fn indirectTiles(weights: *const Weights, group: usize, values: []const f32, offsets: []const usize, n: usize, c: []f32, tiling: gemm.Tiling, begin: usize, end: usize) Error!void {
    assert(weights.form == .conv and group < weights.groups);
    const m = weights.rows;
    const k = weights.cols;
    const indirect: gemm_bf16.Indirect = .{ .values = values, .offsets = offsets };
    switch (weights.kernel) {
        inline else => |which| {
            const K = if (which == .amx) gemm_amx else gemm_bf16;
            const args: K.Args = .{ .m = m, .n = n, .k = k, .a = .{ .packed_a = .{ .m = m, .k = k, .values = weights.group(group) } }, .b = .{ .indirect = indirect }, .c = c, .ldc = n };
            try args.validate();
            K.runTiles(&args, tiling, begin, end);
        },
    }
}

/// Row alignment conv.zig's row blocks keep for convBlock.
pub const conv_row_alignment = gemm_amx.block_rows;

/// C (m × n, beta 0 or 1 over what C holds) = alpha · A (m × k, row-major) · packed B, over
/// the intra-op pool.
fn multiplyRight(weights: *const Weights, a: []const f32, m: usize, alpha: f32, beta: f32, activation: linalg.Activation, c: []f32) Error!void {
    const k = weights.rows;
    const n = weights.cols;
    const left: gemm_bf16.Matrix = .{ .trans = false, .values = a, .ld = k };
    const threads = parallel.threadsForFlops((2 *| m) *| n *| k);
    switch (weights.kernel) {
        inline else => |which| {
            const K = if (which == .amx) gemm_amx else gemm_bf16;
            const args: K.Args = .{ .m = m, .n = n, .k = k, .alpha = alpha, .beta = beta, .a = .{ .matrix = left }, .b = .{ .packed_b = .{ .k = k, .n = n, .values = weights.group(0) } }, .c = c, .ldc = n };
            try args.validate();
            const Context = struct {
                args: *const K.Args,
                tiling: gemm.Tiling,
                activation: linalg.Activation,
                fn body(context: *const @This(), begin: usize, end: usize) Error!void {
                    K.runTiles(context.args, context.tiling, begin, end);
                    context.activation.applyTiles(context.args.c, context.args.m, context.args.n, context.tiling, begin, end);
                }
            };
            const context: Context = .{ .args = &args, .tiling = K.plan(m, n, threads), .activation = activation };
            try intra_op.parallelForTyped(0, context.tiling.count(), 1, &context, Context.body);
        },
    }
}

/// matmul(a, weight) for a float32 a [..., k] and the packed weight (k × n), or null when
/// the shapes do not fit it (the caller runs the f32 op).
fn matmul(a_input: *Tensor, b_input: *Tensor, weights: *const Weights) Error!?*Tensor {
    const k = weights.rows;
    const n = weights.cols;
    if (b_input.ndim != 2 or b_input.shape[0] != k or b_input.shape[1] != n) return null;
    const call = try linalg.PackedGemm.prepare(a_input, null, 0, k, n, 1) orelse return null;
    return multiplyPrepared(weights, call, 1, .none);
}

/// gemm(a, weight, bias) = alpha · a · op(weight) + beta · bias for a [..., m, k] (the batch
/// dims of a 2-D weight broadcast: one product of all rows), or null when the shapes do not
/// fit the packed weight (the caller runs the f32 op).
fn gemmBias(a_input: *Tensor, bias_input: ?*Tensor, alpha: f32, beta: f32, activation: linalg.Activation, weights: *const Weights) Error!?*Tensor {
    const k = weights.rows;
    const n = weights.cols;
    const call = try linalg.PackedGemm.prepare(a_input, bias_input, beta, k, n, 2) orelse return null;
    return multiplyPrepared(weights, call, alpha, activation);
}

/// Runs a prepared product on the packed weight; the output is the caller's.
fn multiplyPrepared(weights: *const Weights, call: linalg.PackedGemm, alpha: f32, activation: linalg.Activation) Error!*Tensor {
    defer call.a.release();
    errdefer call.out.release();
    if (call.m > 0) try multiplyRight(weights, call.a.f32Slice(), call.m, alpha, call.kernel_beta, activation, call.out.f32Slice());
    return call.out;
}

// -------------------------------------------------------------------------------------------
// Tests.

const testing = std.testing;

fn randomTensor(random: std.Random, shape: []const usize) !*Tensor {
    const t = try tensor.createUninit(.float32, shape);
    for (t.f32Slice()) |*x| x.* = random.float(f32) * 2 - 1;
    return t;
}

fn expectClose(expected: *Tensor, got: *Tensor, tolerance: f32) !void {
    try testing.expectEqualSlices(usize, expected.dims(), got.dims());
    for (expected.f32Slice(), got.f32Slice()) |want, value| {
        if (@abs(want - value) > tolerance * (1 + @abs(want))) {
            std.debug.print("bf16 {d} against f32 {d}\n", .{ value, want });
            return error.TestExpectedApproxEqAbs;
        }
    }
}

/// Grouped and plain 3×3 convs (strided and not, with bias and an epilogue), a 1×1 and the
/// direct AMX kernel's shapes, against conv2d in f32.
fn checkConvs(which: Kernel, random: std.Random) !void {
    const Case = struct { c: usize, out: usize, size: usize, kernel: usize, stride: i64, groups: i64 };
    for ([_]Case{
        .{ .c = 24, .out = 57, .size = 13, .kernel = 3, .stride = 1, .groups = 1 },
        .{ .c = 40, .out = 32, .size = 21, .kernel = 3, .stride = 1, .groups = 1 },
        .{ .c = 16, .out = 96, .size = 17, .kernel = 3, .stride = 2, .groups = 2 },
        .{ .c = 64, .out = 50, .size = 9, .kernel = 1, .stride = 1, .groups = 1 },
        // det's narrow 3×3 convs: a direct kernel (kernels/conv_amx.zig or conv_bf16.zig).
        .{ .c = 96, .out = 24, .size = 20, .kernel = 3, .stride = 1, .groups = 1 },
        .{ .c = 17, .out = 16, .size = 11, .kernel = 5, .stride = 1, .groups = 1 },
    }) |case| {
        const x = try randomTensor(random, &.{ 2, case.c, case.size, case.size });
        defer x.release();
        const w = try randomTensor(random, &.{ case.out, case.c / @as(usize, @intCast(case.groups)), case.kernel, case.kernel });
        defer w.release();
        const bias = try randomTensor(random, &.{case.out});
        defer bias.release();
        const pad: i64 = @intCast(case.kernel / 2);
        const options: conv.Options = .{ .stride = .{ case.stride, case.stride }, .padding = .{ pad, pad }, .groups = case.groups, .epilogue = .{ .activation = .relu } };
        const expected = try conv.conv2d(x, w, bias, options);
        defer expected.release();
        const weights = (try packConv(which, w, @intCast(case.groups), options.stride)).?;
        defer weights.release();
        try testing.expectEqual(case.kernel > 1 and case.stride == 1 and case.groups == 1, weights.form == .direct);
        const got = try conv.conv2dBf16(x, w, bias, options, &weights);
        defer got.release();
        // bf16 keeps 8 bits: each product errs by about 2^-8 relative, and the error of a sum
        // grows with the square root of its terms: 0.05 for ~200 terms.
        const depth: f32 = @floatFromInt(w.numel() / case.out);
        try expectClose(expected, got, 0.05 * @max(1, @sqrt(depth / 216)));
    }
}

/// A 1×1 conv of `channels` → `out` at 13 × 11 (a ragged last sliver) with bias and relu on
/// the AVX512_BF16 GEMM at `threads` threads, against conv2d in f32.
fn checkPointwise(random: std.Random, channels: usize, out: usize, threads: i64) !void {
    try settings.setNumThreads(threads);
    const x = try randomTensor(random, &.{ 2, channels, 13, 11 });
    defer x.release();
    const w = try randomTensor(random, &.{ out, channels, 1, 1 });
    defer w.release();
    const bias = try randomTensor(random, &.{out});
    defer bias.release();
    const options: conv.Options = .{ .epilogue = .{ .activation = .relu } };
    const expected = try conv.conv2d(x, w, bias, options);
    defer expected.release();
    const weights = (try packConv(.avx512, w, 1, options.stride)).?;
    defer weights.release();
    try testing.expect(weights.form == .conv);
    const got = try conv.conv2dBf16(x, w, bias, options, &weights);
    defer got.release();
    try expectClose(expected, got, 0.05);
}

test "bf16 conv2d, matmul and gemm with packed weights stay within bf16 rounding of f32, 1 and 2 threads" {
    const which = kernel() orelse return error.SkipZigTest;
    settings.resetForTesting();
    defer settings.resetForTesting();
    var prng = std.Random.DefaultPrng.init(0xbf);
    const random = prng.random();
    for ([_]i64{ 1, 2 }) |threads| {
        try settings.setNumThreads(threads);
        try checkConvs(which, random);
    }
    const a = try randomTensor(random, &.{ 3, 7, 100 });
    defer a.release();
    const b = try randomTensor(random, &.{ 100, 70 });
    defer b.release();
    const expected = try linalg.matmul(a, b);
    defer expected.release();
    const weights = (try packMatrix(which, b, false)).?;
    defer weights.release();
    const got = (try matmul(a, b, &weights)).?;
    defer got.release();
    try expectClose(expected, got, 0.05);

    const a2 = try randomTensor(random, &.{ 5, 100 });
    defer a2.release();
    const bt = try randomTensor(random, &.{ 70, 100 });
    defer bt.release();
    const bias = try randomTensor(random, &.{70});
    defer bias.release();
    const expected_gemm = try linalg.gemmBias(a2, bt, bias, .{ .trans_b = true, .alpha = 0.5, .beta = 2 });
    defer expected_gemm.release();
    const transposed = (try packMatrix(which, bt, true)).?;
    defer transposed.release();
    const got_gemm = (try gemmBias(a2, bias, 0.5, 2, .none, &transposed)).?;
    defer got_gemm.release();
    try expectClose(expected_gemm, got_gemm, 0.05);
    // A fused activation is the activation of the same bf16 product.
    for ([_]i64{ 1, 2 }) |threads| {
        try settings.setNumThreads(threads);
        const activated = (try gemmBias(a2, bias, 0.5, 2, .relu, &transposed)).?;
        defer activated.release();
        for (got_gemm.f32Slice(), activated.f32Slice()) |x, y| try std.testing.expectEqual(@max(x, 0), y);
    }
    // A batched a (ONNX MatMul + Add fused into gemm) is one product of all its rows.
    const a3 = try randomTensor(random, &.{ 2, 5, 100 });
    defer a3.release();
    const expected_batched = try linalg.gemmBias(a3, bt, bias, .{ .trans_b = true, .alpha = 0.5, .beta = 2 });
    defer expected_batched.release();
    const got_batched = (try gemmBias(a3, bias, 0.5, 2, .none, &transposed)).?;
    defer got_batched.release();
    try expectClose(expected_batched, got_batched, 0.05);
    // Without AMX, 1×1 convs run bf16 from 16 rows and 12 depths (AMX keeps 48 and 32).
    if (which == .avx512) {
        try checkPointwise(random, 12, 24, 1);
        try checkPointwise(random, 96, 18, 2);
        const few_rows = try randomTensor(random, &.{ 12, 48, 1, 1 });
        defer few_rows.release();
        try testing.expect((try packConv(which, few_rows, 1, .{ 1, 1 })) == null);
        const shallow = try randomTensor(random, &.{ 16, 10, 1, 1 });
        defer shallow.release();
        try testing.expect((try packConv(which, shallow, 1, .{ 1, 1 })) == null);
    }
    // Narrow or shallow products stay f32: nothing is packed for them.
    const narrow = try randomTensor(random, &.{ 24, 96, 3, 3 });
    defer narrow.release();
    try testing.expect((try packConv(which, narrow, 1, .{ 2, 2 })) == null);
    const thin = try randomTensor(random, &.{ 100, 20 });
    defer thin.release();
    try testing.expect((try packMatrix(which, thin, false)) == null);
    // A shape the packed weight does not fit falls back to f32.
    const other = try randomTensor(random, &.{ 4, 99 });
    defer other.release();
    try testing.expect((try matmul(other, b, &weights)) == null);
}
