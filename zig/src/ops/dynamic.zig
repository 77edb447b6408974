//! Shape computations at run time (ONNX Shape, integer arithmetic on shapes, and the ops that
//! take a shape, size or bound as a tensor: Reshape, Expand, ConstantOfShape, Range, Slice,
//! Resize), and NonZero, whose output size is its input's count of nonzero values. Imported models whose input sizes are symbolic keep these in the graph instead of
//! folding them from a probe run, as onnxruntime does. The tensors involved are tiny (a shape
//! has at most max_dims values), so the loops are plain and single-threaded; what they
//! produce (a filled or ranged tensor) is bounded by the same size and budget checks as any
//! other allocation.
const std = @import("std");
const status = @import("../status.zig");
const tensor = @import("../tensor.zig");
const shape_ops = @import("shape.zig");
const indexing = @import("indexing.zig");
const elementwise = @import("elementwise.zig");
const kernels = @import("../kernels/indexing.zig");

const Error = status.Error;
const Tensor = tensor.Tensor;
const max_dims = tensor.max_dims;

/// Integer arithmetic of int_binary (ONNX Add, Sub, Mul, Div, Mod, Max, Min on integers).
/// Shape arithmetic, then the integer family of ONNX's logical and bitwise ops: bools and
/// small integers ride as int32 (lib/onnx/host.ts), so And/Or/Xor on 0/1 values are the
/// bitwise kinds. `rem` is C's remainder (the dividend's sign: ONNX Mod with fmod = 1);
/// shifts by a negative count or by 64 or more give 0.
pub const IntKind = enum(u8) { add, sub, mul, div, mod, max, min, bit_and, bit_or, bit_xor, shift_left, shift_right, rem };

/// The values of integer tensor `t` (int64 or int32, 0-D or 1-D, at most max_dims values),
/// for ops that take a shape or a list of bounds as a tensor.
fn readInts(comptime op: []const u8, comptime what: []const u8, t: *Tensor, buffer: *[max_dims]i64) Error![]i64 {
    if (t.dtype == .float32) return status.fail(error.DTypeMismatch, op ++ ": " ++ what ++ " must be int64 or int32, got float32", .{});
    if (t.ndim > 1) return status.fail(error.InvalidArgument, op ++ ": " ++ what ++ " must be 1-D, got shape {f}", .{status.shape(t.dims())});
    const count = t.numel();
    if (count > max_dims) return status.fail(error.InvalidArgument, op ++ ": " ++ what ++ " has {d} values, at most {d}", .{ count, max_dims });
    const source = try shape_ops.contiguous(t);
    defer source.release();
    switch (source.dtype) {
        .int64 => @memcpy(buffer[0..count], source.i64Slice()),
        .int32 => for (buffer[0..count], source.i32Slice()) |*d, s| {
            d.* = s;
        },
        .float32 => unreachable,
    }
    return buffer[0..count];
}

/// Dims from a shape tensor's values: each non-negative.
fn toDims(comptime op: []const u8, values: []const i64, buffer: *[max_dims]usize) Error![]usize {
    for (values, 0..) |v, i| {
        if (v < 0) return status.fail(error.InvalidArgument, op ++ ": dim {d} of shape {f} is negative", .{ i, status.shape(values) });
        buffer[i] = std.math.cast(usize, v) orelse return status.fail(error.TooLarge, op ++ ": shape {f} is too large", .{status.shape(values)});
    }
    return buffer[0..values.len];
}

/// ONNX Shape: dims [start, end) of x as int64 (negative bounds count from the end; both are
/// clamped to [0, rank]).
pub fn shapeOf(x: *const Tensor, start_raw: ?i64, end_raw: ?i64) Error!*Tensor {
    const rank: i64 = @intCast(x.ndim);
    const start = clampBound(start_raw orelse 0, rank);
    const end = @max(start, clampBound(end_raw orelse rank, rank));
    const count: usize = @intCast(end - start);
    const out = try tensor.createUninit(.int64, &.{count});
    for (out.i64Slice(), x.dims()[@intCast(start)..@intCast(end)]) |*d, s| d.* = @intCast(s);
    return out;
}

fn clampBound(raw: i64, rank: i64) i64 {
    std.debug.assert(rank >= 0 and rank <= max_dims);
    const wrapped = if (raw < 0) raw +| rank else raw;
    return std.math.clamp(wrapped, 0, rank);
}

/// a ⋈ b on integers of one dtype, broadcasting. Overflow wraps (as in onnxruntime's C++);
/// Div truncates toward zero and Mod takes the divisor's sign (ONNX Mod with fmod = 0); a
/// zero divisor is an error.
pub fn intBinary(kind: IntKind, a_input: *Tensor, b_input: *Tensor) Error!*Tensor {
    if (a_input.dtype != b_input.dtype or a_input.dtype == .float32) {
        return status.fail(error.DTypeMismatch, "int_binary: takes two int64 or two int32 tensors, got {s} and {s}", .{ a_input.dtype.name(), b_input.dtype.name() });
    }
    var shape_buffer: [max_dims]usize = undefined;
    const shape = try elementwise.broadcastShape("int_binary", a_input.dims(), b_input.dims(), &shape_buffer);
    const a = try shape_ops.contiguous(a_input);
    defer a.release();
    const b = try shape_ops.contiguous(b_input);
    defer b.release();
    const out = try tensor.createUninit(a.dtype, shape);
    errdefer out.release();
    const a_strides = elementwise.broadcastStrides(a.dims(), shape);
    const b_strides = elementwise.broadcastStrides(b.dims(), shape);
    var coordinates: [max_dims]usize = undefined;
    for (0..out.numel()) |i| {
        kernels.unravel(i, shape, &coordinates);
        const x = loadInt(a, offset(&a_strides, shape.len, &coordinates));
        const y = loadInt(b, offset(&b_strides, shape.len, &coordinates));
        storeInt(out, i, try applyInt(kind, x, y));
    }
    return out;
}

fn applyInt(kind: IntKind, x: i64, y: i64) Error!i64 {
    return switch (kind) {
        .add => x +% y,
        .sub => x -% y,
        .mul => x *% y,
        .max => @max(x, y),
        .min => @min(x, y),
        .bit_and => x & y,
        .bit_or => x | y,
        .bit_xor => x ^ y,
        .shift_left => if (y < 0 or y >= 64) 0 else x << @intCast(y),
        .shift_right => if (y < 0 or y >= 64) (if (x < 0) -1 else 0) else x >> @intCast(y),
        .div, .mod, .rem => {
            if (y == 0) return status.fail(error.InvalidArgument, "int_binary: integer division of {d} by zero", .{x});
            // minInt / -1 is the one quotient that overflows: it wraps, as in C++.
            if (y == -1) return if (kind == .div) 0 -% x else 0;
            return switch (kind) {
                .div => @divTrunc(x, y),
                .mod => @mod(x, y),
                else => @rem(x, y),
            };
        },
    };
}

fn offset(strides: *const [max_dims]usize, rank: usize, coordinates: *const [max_dims]usize) usize {
    var total: usize = 0;
    for (0..rank) |axis| total += coordinates[axis] * strides[axis];
    return total;
}

fn loadInt(t: *const Tensor, index: usize) i64 {
    return switch (t.dtype) {
        .int64 => t.i64Slice()[index],
        .int32 => t.i32Slice()[index],
        .float32 => unreachable,
    };
}

fn storeInt(t: *const Tensor, index: usize, value: i64) void {
    switch (t.dtype) {
        .int64 => t.i64Slice()[index] = value,
        .int32 => t.i32Slice()[index] = @truncate(value),
        .float32 => unreachable,
    }
}

/// ONNX Reshape with its shape as a tensor: 0 copies the input's dim at that position
/// (unless allow_zero), one -1 is inferred.
pub fn reshapeTo(x: *Tensor, shape_tensor: *Tensor, allow_zero: bool) Error!*Tensor {
    var buffer: [max_dims]i64 = undefined;
    const dims = try readInts("reshape_to", "the shape", shape_tensor, &buffer);
    if (!allow_zero) for (dims, 0..) |*d, i| if (d.* == 0) {
        if (i >= x.ndim) return status.fail(error.InvalidArgument, "reshape_to: the 0 at position {d} of {f} copies a dim the {d}-D input lacks", .{ i, status.shape(dims), x.ndim });
        d.* = @intCast(x.shape[i]);
    };
    return shape_ops.reshape(x, dims);
}

/// ONNX Expand with its shape as a tensor.
pub fn expandTo(x: *Tensor, shape_tensor: *Tensor) Error!*Tensor {
    var buffer: [max_dims]i64 = undefined;
    return indexing.expand(x, try readInts("expand_to", "the shape", shape_tensor, &buffer));
}

/// ONNX ConstantOfShape: a tensor of `dtype` and the given shape, every element `value`.
pub fn constantOfShape(shape_tensor: *Tensor, dtype: tensor.DType, value: f64) Error!*Tensor {
    var buffer: [max_dims]i64 = undefined;
    const values = try readInts("constant_of_shape", "the shape", shape_tensor, &buffer);
    var dims_buffer: [max_dims]usize = undefined;
    const dims = try toDims("constant_of_shape", values, &dims_buffer);
    const out = try tensor.createUninit(dtype, dims);
    switch (dtype) {
        .float32 => @memset(out.f32Slice(), @floatCast(value)),
        .int64 => @memset(out.i64Slice(), std.math.lossyCast(i64, value)),
        .int32 => @memset(out.i32Slice(), std.math.lossyCast(i32, value)),
    }
    return out;
}

/// ONNX Range: start, start + delta, … while before limit; three one-element tensors of one
/// dtype. The count is max(ceil((limit − start) / delta), 0), bounded like any tensor.
pub fn range(start: *Tensor, limit: *Tensor, delta: *Tensor) Error!*Tensor {
    for ([_]*Tensor{ start, limit, delta }) |t| {
        if (t.dtype != start.dtype) return status.fail(error.DTypeMismatch, "range: start is {s}, limit or delta is {s}", .{ start.dtype.name(), t.dtype.name() });
        if (t.numel() != 1) return status.fail(error.InvalidArgument, "range: start, limit and delta each hold one value, got shape {f}", .{status.shape(t.dims())});
    }
    if (start.dtype == .float32) return rangeFloat(scalarFloat(start), scalarFloat(limit), scalarFloat(delta));
    const first = scalarInt(start);
    const step = scalarInt(delta);
    if (step == 0) return status.fail(error.InvalidArgument, "range: delta is 0", .{});
    // In i128, so that no span between two int64 values overflows.
    const span: i128 = @as(i128, scalarInt(limit)) - first;
    const count_wide: i128 = @max(0, std.math.divCeil(i128, span, step) catch unreachable);
    const count = std.math.cast(usize, count_wide) orelse return status.fail(error.TooLarge, "range: {d} elements", .{count_wide});
    const out = try tensor.createUninit(start.dtype, &.{count});
    for (0..count) |i| storeInt(out, i, @intCast(@as(i128, first) + @as(i128, step) * @as(i128, @intCast(i))));
    return out;
}

fn rangeFloat(first: f32, limit: f32, step: f32) Error!*Tensor {
    if (!std.math.isFinite(first) or !std.math.isFinite(limit) or !std.math.isFinite(step) or step == 0) {
        return status.fail(error.InvalidArgument, "range: start {d}, limit {d} and delta {d} must be finite, delta nonzero", .{ first, limit, step });
    }
    const wanted = @max(0, @ceil((@as(f64, limit) - first) / step));
    if (wanted > 1 << 40) return status.fail(error.TooLarge, "range: {d} elements", .{wanted});
    const out = try tensor.createUninit(.float32, &.{@intFromFloat(wanted)});
    // As onnxruntime: start + i · delta in float32.
    for (out.f32Slice(), 0..) |*v, i| v.* = first + @as(f32, @floatFromInt(i)) * step;
    return out;
}

fn scalarInt(t: *Tensor) i64 {
    std.debug.assert(t.numel() == 1);
    const index = t.offset;
    const base = t.storage.bytes;
    return switch (t.dtype) {
        .int64 => std.mem.bytesToValue(i64, base[index * 8 ..][0..8]),
        .int32 => std.mem.bytesToValue(i32, base[index * 4 ..][0..4]),
        .float32 => unreachable,
    };
}

fn scalarFloat(t: *Tensor) f32 {
    std.debug.assert(t.numel() == 1 and t.dtype == .float32);
    return std.mem.bytesToValue(f32, t.storage.bytes[t.offset * 4 ..][0..4]);
}

/// ONNX Slice with starts and ends as tensors, over `axes` (default 0 … n − 1) with `steps`
/// (default 1; positive). Python rules for negative and out-of-range bounds.
pub fn sliceTo(x: *Tensor, starts_tensor: *Tensor, ends_tensor: *Tensor, axes_raw: []const i64, steps_raw: []const i64) Error!*Tensor {
    var starts_buffer: [max_dims]i64 = undefined;
    var ends_buffer: [max_dims]i64 = undefined;
    const starts = try readInts("slice_to", "starts", starts_tensor, &starts_buffer);
    const ends = try readInts("slice_to", "ends", ends_tensor, &ends_buffer);
    if (ends.len != starts.len) return status.fail(error.InvalidArgument, "slice_to: {d} starts and {d} ends", .{ starts.len, ends.len });
    if (axes_raw.len != 0 and axes_raw.len != starts.len) return status.fail(error.InvalidArgument, "slice_to: {d} axes for {d} starts", .{ axes_raw.len, starts.len });
    if (steps_raw.len != 0 and steps_raw.len != starts.len) return status.fail(error.InvalidArgument, "slice_to: {d} steps for {d} starts", .{ steps_raw.len, starts.len });
    var out = x;
    out.retain();
    errdefer out.release();
    for (starts, ends, 0..) |start, end, i| {
        const axis: i64 = if (axes_raw.len == 0) @intCast(i) else axes_raw[i];
        const step: i64 = if (steps_raw.len == 0) 1 else steps_raw[i];
        const next = try shape_ops.slice(out, axis, start, end, step);
        out.release();
        out = next;
    }
    return out;
}

/// ONNX Resize with its output sizes as a tensor (one per axis in `axes`, default all): the
/// scale of each resized axis is size / input size, as onnxruntime derives it.
pub fn resizeTo(x: *Tensor, sizes_tensor: *Tensor, axes_raw: []const i64, mode: i64, coordinate: i64, nearest: i64) Error!*Tensor {
    var buffer: [max_dims]i64 = undefined;
    const given = try readInts("resize_to", "sizes", sizes_tensor, &buffer);
    const axis_count = if (axes_raw.len == 0) x.ndim else axes_raw.len;
    if (given.len != axis_count) return status.fail(error.InvalidArgument, "resize_to: {d} sizes for {d} axes", .{ given.len, axis_count });
    var sizes: [max_dims]i64 = undefined;
    var scales: [max_dims]f64 = undefined;
    for (0..x.ndim) |d| {
        sizes[d] = @intCast(x.shape[d]);
        scales[d] = 1;
    }
    for (given, 0..) |size, i| {
        const axis = try @import("dims.zig").normalizeDim("resize_to", if (axes_raw.len == 0) @intCast(i) else axes_raw[i], x.ndim);
        if (size < 0) return status.fail(error.InvalidArgument, "resize_to: size {d} of axis {d} is negative", .{ size, axis });
        if (x.shape[axis] == 0) return status.fail(error.InvalidArgument, "resize_to: cannot resize the empty axis {d}", .{axis});
        sizes[axis] = size;
        scales[axis] = @as(f64, @floatFromInt(size)) / @as(f64, @floatFromInt(x.shape[axis]));
    }
    return indexing.resize(x, mode, coordinate, nearest, sizes[0..x.ndim], scales[0..x.ndim]);
}

// ---------------------------------------------------------------------------------------
// Tests

const testing = std.testing;

fn ints(values: []const i64) !*Tensor {
    const t = try tensor.createUninit(.int64, &.{values.len});
    @memcpy(t.i64Slice(), values);
    return t;
}

fn scalar64(value: i64) !*Tensor {
    const t = try tensor.createUninit(.int64, &.{});
    t.i64Slice()[0] = value;
    return t;
}

/// ONNX NonZero: the int64 [rank, count] coordinates of x's nonzero elements (NaN counts as
/// nonzero, as x != 0 says), in row-major order; a 0-D x reads as 1-D, as numpy's nonzero
/// does. Two passes (count, then fill), so the output is allocated once at its exact size.
pub fn nonZero(input: *Tensor) Error!*Tensor {
    const x = try shape_ops.contiguous(input);
    defer x.release();
    var count: usize = 0;
    switch (x.dtype) {
        inline else => |dtype| for (typedSlice(dtype, x)) |v| {
            count += @intFromBool(v != 0);
        },
    }
    const rank: usize = @max(x.ndim, 1);
    const out = try tensor.createUninit(.int64, &.{ rank, count });
    errdefer out.release();
    const coords = out.i64Slice();
    const shape = if (x.ndim == 0) &[_]usize{1} else x.dims();
    var at = [_]usize{0} ** max_dims;
    var next: usize = 0;
    switch (x.dtype) {
        inline else => |dtype| for (typedSlice(dtype, x)) |v| {
            if (v != 0) {
                for (0..rank) |axis| coords[axis * count + next] = @intCast(at[axis]);
                next += 1;
            }
            // The row-major successor of `at`.
            var axis = rank;
            while (axis > 0) {
                axis -= 1;
                at[axis] += 1;
                if (at[axis] < shape[axis]) break;
                at[axis] = 0;
            }
        },
    }
    std.debug.assert(next == count);
    return out;
}

fn typedSlice(comptime dtype: tensor.DType, t: *const Tensor) switch (dtype) {
    .float32 => []f32,
    .int64 => []i64,
    .int32 => []i32,
} {
    return switch (dtype) {
        .float32 => t.f32Slice(),
        .int64 => t.i64Slice(),
        .int32 => t.i32Slice(),
    };
}

test "shape_of takes a clamped range of dims" {
    const x = try tensor.createZeroed(.float32, &.{ 2, 3, 5, 7 });
    defer x.release();
    const all = try shapeOf(x, null, null);
    defer all.release();
    try testing.expectEqualSlices(i64, &.{ 2, 3, 5, 7 }, all.i64Slice());
    const tail = try shapeOf(x, -2, 100);
    defer tail.release();
    try testing.expectEqualSlices(i64, &.{ 5, 7 }, tail.i64Slice());
    const empty = try shapeOf(x, 3, 1);
    defer empty.release();
    try testing.expectEqual(@as(usize, 0), empty.numel());
    const extreme = try shapeOf(x, std.math.minInt(i64), std.math.maxInt(i64));
    defer extreme.release();
    try testing.expectEqual(@as(usize, 4), extreme.numel());
}

test "int_binary matches a reference on broadcast shapes, wraps and refuses zero divisors" {
    // [3, 1] ⋈ [4]: every kind against a direct computation.
    const a = try tensor.createUninit(.int64, &.{ 3, 1 });
    defer a.release();
    @memcpy(a.i64Slice(), &[_]i64{ -7, 0, 13 });
    const b = try ints(&.{ 2, -3, 5, -1 });
    defer b.release();
    inline for (@typeInfo(IntKind).@"enum".fields) |field| {
        const kind: IntKind = @enumFromInt(field.value);
        const out = try intBinary(kind, a, b);
        defer out.release();
        try testing.expectEqualSlices(usize, &.{ 3, 4 }, out.dims());
        for (0..3) |i| for (0..4) |j| {
            const x = a.i64Slice()[i];
            const y = b.i64Slice()[j];
            const want: i64 = switch (kind) {
                .add => x + y,
                .sub => x - y,
                .mul => x * y,
                .div => @divTrunc(x, y),
                .mod => @mod(x, y),
                .max => @max(x, y),
                .min => @min(x, y),
                .bit_and => x & y,
                .bit_or => x | y,
                .bit_xor => x ^ y,
                .shift_left => if (y < 0 or y >= 64) 0 else x << @intCast(y),
                .shift_right => if (y < 0 or y >= 64) (if (x < 0) -1 else 0) else x >> @intCast(y),
                .rem => @rem(x, y),
            };
            try testing.expectEqual(want, out.i64Slice()[i * 4 + j]);
        };
    }
    // ONNX Div on integers truncates: -7 / 2 = -3; Mod takes the divisor's sign: -7 mod 2 = 1.
    const quotient = try intBinary(.div, a, b);
    defer quotient.release();
    try testing.expectEqual(@as(i64, -3), quotient.i64Slice()[0]);
    const low = try scalar64(std.math.minInt(i64));
    defer low.release();
    const minus_one = try scalar64(-1);
    defer minus_one.release();
    const wrapped = try intBinary(.div, low, minus_one);
    defer wrapped.release();
    try testing.expectEqual(@as(i64, std.math.minInt(i64)), wrapped.i64Slice()[0]);
    const sum = try intBinary(.add, low, minus_one);
    defer sum.release();
    try testing.expectEqual(@as(i64, std.math.maxInt(i64)), sum.i64Slice()[0]);
    const zero = try scalar64(0);
    defer zero.release();
    try testing.expectError(error.InvalidArgument, intBinary(.div, a, zero));
    try testing.expectError(error.InvalidArgument, intBinary(.mod, a, zero));
    const floats = try tensor.createZeroed(.float32, &.{4});
    defer floats.release();
    try testing.expectError(error.DTypeMismatch, intBinary(.add, a, floats));
    const narrow = try tensor.createZeroed(.int32, &.{4});
    defer narrow.release();
    try testing.expectError(error.DTypeMismatch, intBinary(.add, a, narrow));
    const five = try ints(&.{ 1, 2, 3, 4, 5 });
    defer five.release();
    try testing.expectError(error.ShapeMismatch, intBinary(.add, b, five));
}

test "reshape_to copies zeros, infers one -1, and refuses bad shapes" {
    const x = try tensor.createZeroed(.float32, &.{ 2, 3, 5 });
    defer x.release();
    const target = try ints(&.{ 0, -1 });
    defer target.release();
    const out = try reshapeTo(x, target, false);
    defer out.release();
    try testing.expectEqualSlices(usize, &.{ 2, 15 }, out.dims());
    // An int32 shape (a model that casts its shape arithmetic to int32) reads the same.
    const narrow = try tensor.createUninit(.int32, &.{3});
    defer narrow.release();
    @memcpy(narrow.i32Slice(), &[_]i32{ 5, 0, -1 });
    const from_narrow = try reshapeTo(x, narrow, false);
    defer from_narrow.release();
    try testing.expectEqualSlices(usize, &.{ 5, 3, 2 }, from_narrow.dims());
    const zero_kept = try ints(&.{ 0, 7 });
    defer zero_kept.release();
    try testing.expectError(error.ShapeMismatch, reshapeTo(x, zero_kept, true));
    const far_zero = try ints(&.{ 30, 1, 1, 0 });
    defer far_zero.release();
    try testing.expectError(error.InvalidArgument, reshapeTo(x, far_zero, false));
    const two_inferred = try ints(&.{ -1, -1 });
    defer two_inferred.release();
    try testing.expectError(error.InvalidArgument, reshapeTo(x, two_inferred, false));
    const negative = try ints(&.{ -5, 6 });
    defer negative.release();
    try testing.expectError(error.InvalidArgument, reshapeTo(x, negative, false));
    const huge = try ints(&.{ std.math.maxInt(i64), std.math.maxInt(i64) });
    defer huge.release();
    try testing.expectError(error.TooLarge, reshapeTo(x, huge, false));
    const floats = try tensor.createZeroed(.float32, &.{2});
    defer floats.release();
    try testing.expectError(error.DTypeMismatch, reshapeTo(x, floats, false));
    const matrix = try tensor.createZeroed(.int64, &.{ 1, 2 });
    defer matrix.release();
    try testing.expectError(error.InvalidArgument, reshapeTo(x, matrix, false));
    const too_many = try tensor.createZeroed(.int64, &.{max_dims + 1});
    defer too_many.release();
    try testing.expectError(error.InvalidArgument, reshapeTo(x, too_many, false));
}

test "expand_to and constant_of_shape build from a shape tensor; huge or negative shapes fail" {
    const x = try tensor.createUninit(.float32, &.{ 3, 1 });
    defer x.release();
    @memcpy(x.f32Slice(), &[_]f32{ 1, 2, 3 });
    const target = try ints(&.{ 2, 3, 2 });
    defer target.release();
    const wide = try expandTo(x, target);
    defer wide.release();
    try testing.expectEqualSlices(usize, &.{ 2, 3, 2 }, wide.dims());
    try testing.expectEqualSlices(f32, &.{ 1, 1, 2, 2, 3, 3, 1, 1, 2, 2, 3, 3 }, wide.f32Slice());
    const filled = try constantOfShape(target, .int64, 7);
    defer filled.release();
    try testing.expectEqual(@as(usize, 12), filled.numel());
    for (filled.i64Slice()) |v| try testing.expectEqual(@as(i64, 7), v);
    const empty_shape = try ints(&.{});
    defer empty_shape.release();
    const scalar = try constantOfShape(empty_shape, .float32, 0.5);
    defer scalar.release();
    try testing.expectEqual(@as(usize, 0), scalar.ndim);
    try testing.expectEqual(@as(f32, 0.5), scalar.f32Slice()[0]);
    const negative = try ints(&.{ 2, -1 });
    defer negative.release();
    try testing.expectError(error.InvalidArgument, constantOfShape(negative, .float32, 0));
    try testing.expectError(error.InvalidArgument, expandTo(x, negative));
    const huge = try ints(&.{ 1 << 40, 1 << 40 });
    defer huge.release();
    try testing.expectError(error.TooLarge, constantOfShape(huge, .float32, 0));
}

test "range matches a reference for ints and floats, counts empty ranges as 0, bounds the count" {
    const cases = [_][3]i64{ .{ 0, 5, 1 }, .{ 10, 1, -3 }, .{ 3, 3, 1 }, .{ 5, 0, 1 }, .{ -4, 7, 5 } };
    for (cases) |case| {
        const start = try scalar64(case[0]);
        defer start.release();
        const limit = try scalar64(case[1]);
        defer limit.release();
        const delta = try scalar64(case[2]);
        defer delta.release();
        const out = try range(start, limit, delta);
        defer out.release();
        var expected: usize = 0;
        var v = case[0];
        while ((case[2] > 0 and v < case[1]) or (case[2] < 0 and v > case[1])) : (v += case[2]) {
            try testing.expectEqual(v, out.i64Slice()[expected]);
            expected += 1;
        }
        try testing.expectEqual(expected, out.numel());
    }
    const low = try scalar64(std.math.minInt(i64));
    defer low.release();
    const high = try scalar64(std.math.maxInt(i64));
    defer high.release();
    const one = try scalar64(1);
    defer one.release();
    try testing.expectError(error.TooLarge, range(low, high, one));
    const zero = try scalar64(0);
    defer zero.release();
    try testing.expectError(error.InvalidArgument, range(zero, one, zero));
    const float_start = try tensor.createUninit(.float32, &.{1});
    defer float_start.release();
    float_start.f32Slice()[0] = 0.5;
    try testing.expectError(error.DTypeMismatch, range(float_start, one, one));
    const float_limit = try tensor.createUninit(.float32, &.{});
    defer float_limit.release();
    float_limit.f32Slice()[0] = 2;
    const float_delta = try tensor.createUninit(.float32, &.{});
    defer float_delta.release();
    float_delta.f32Slice()[0] = 0.5;
    const floats = try range(float_start, float_limit, float_delta);
    defer floats.release();
    try testing.expectEqualSlices(f32, &.{ 0.5, 1, 1.5 }, floats.f32Slice());
    float_delta.f32Slice()[0] = std.math.nan(f32);
    try testing.expectError(error.InvalidArgument, range(float_start, float_limit, float_delta));
    const pair = try ints(&.{ 1, 2 });
    defer pair.release();
    try testing.expectError(error.InvalidArgument, range(pair, one, one));
}

test "slice_to and resize_to take their bounds and sizes from tensors" {
    const x = try tensor.createUninit(.float32, &.{ 4, 6 });
    defer x.release();
    for (x.f32Slice(), 0..) |*v, i| v.* = @floatFromInt(i);
    const starts = try ints(&.{ 1, -4 });
    defer starts.release();
    const ends = try ints(&.{ std.math.maxInt(i64), -1 });
    defer ends.release();
    const out = try sliceTo(x, starts, ends, &.{ 1, 0 }, &.{ 2, 1 });
    defer out.release();
    // Axis 1 from 1 by 2 (1, 3, 5); axis 0 from 0 to 3.
    try testing.expectEqualSlices(usize, &.{ 3, 3 }, out.dims());
    const dense = try shape_ops.contiguous(out);
    defer dense.release();
    try testing.expectEqualSlices(f32, &.{ 1, 3, 5, 7, 9, 11, 13, 15, 17 }, dense.f32Slice());
    try testing.expectError(error.InvalidArgument, sliceTo(x, starts, ends, &.{1}, &.{}));
    try testing.expectError(error.InvalidArgument, sliceTo(x, starts, ends, &.{}, &.{ 0, 1 }));
    try testing.expectError(error.IndexOutOfRange, sliceTo(x, starts, ends, &.{ 5, 0 }, &.{}));
    const one_end = try ints(&.{3});
    defer one_end.release();
    try testing.expectError(error.InvalidArgument, sliceTo(x, starts, one_end, &.{}, &.{}));
    const image = try tensor.createZeroed(.float32, &.{ 1, 1, 2, 3 });
    defer image.release();
    const sizes = try ints(&.{ 4, 9 });
    defer sizes.release();
    const grown = try resizeTo(image, sizes, &.{ 2, 3 }, 0, 0, 0);
    defer grown.release();
    try testing.expectEqualSlices(usize, &.{ 1, 1, 4, 9 }, grown.dims());
    try testing.expectError(error.InvalidArgument, resizeTo(image, sizes, &.{}, 0, 0, 0));
    const negative = try ints(&.{ 4, -9 });
    defer negative.release();
    try testing.expectError(error.InvalidArgument, resizeTo(image, negative, &.{ 2, 3 }, 0, 0, 0));
    const huge = try ints(&.{ 4, std.math.maxInt(i64) });
    defer huge.release();
    try testing.expectError(error.TooLarge, resizeTo(image, huge, &.{ 2, 3 }, 0, 0, 0));
    const floats = try tensor.createZeroed(.float32, &.{2});
    defer floats.release();
    try testing.expectError(error.DTypeMismatch, resizeTo(image, floats, &.{ 2, 3 }, 0, 0, 0));
}

test "non_zero gives row-major coordinates of nonzeros (NaN included) for 0-D to 3-D inputs" {
    const x = try tensor.createUninit(.float32, &.{ 2, 3 });
    defer x.release();
    @memcpy(x.f32Slice(), &[_]f32{ 0, 1.5, 0, std.math.nan(f32), 0, -2 });
    const out = try nonZero(x);
    defer out.release();
    try testing.expectEqualSlices(usize, &.{ 2, 3 }, out.dims());
    try testing.expectEqualSlices(i64, &.{ 0, 1, 1, 1, 0, 2 }, out.i64Slice());

    const cube = try tensor.createUninit(.int32, &.{ 2, 1, 3 });
    defer cube.release();
    @memcpy(cube.i32Slice(), &[_]i32{ 0, 0, 7, 1, 0, 0 });
    const cube_out = try nonZero(cube);
    defer cube_out.release();
    try testing.expectEqualSlices(usize, &.{ 3, 2 }, cube_out.dims());
    try testing.expectEqualSlices(i64, &.{ 0, 1, 0, 0, 2, 0 }, cube_out.i64Slice());

    const scalar = try tensor.createUninit(.int64, &.{});
    defer scalar.release();
    scalar.i64Slice()[0] = 3;
    const scalar_out = try nonZero(scalar);
    defer scalar_out.release();
    try testing.expectEqualSlices(usize, &.{ 1, 1 }, scalar_out.dims());
    try testing.expectEqualSlices(i64, &.{0}, scalar_out.i64Slice());

    const empty = try tensor.createUninit(.float32, &.{ 4, 0 });
    defer empty.release();
    const empty_out = try nonZero(empty);
    defer empty_out.release();
    try testing.expectEqualSlices(usize, &.{ 2, 0 }, empty_out.dims());
}
