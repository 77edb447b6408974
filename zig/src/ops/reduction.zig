//! Reductions (sum, mean, max, min, argmax over any dims, keepdim) and softmax / log-softmax
//! over a dim. Every reduction is seen as [outer, reduced, inner] blocks; the intra-op pool
//! splits outer rows, inner columns, or — for a single long row — the row itself, with
//! partials combined in chunk order so results are deterministic for a thread count. Grains
//! and thread counts come from parallel.zig.
const std = @import("std");
const status = @import("../status.zig");
const tensor = @import("../tensor.zig");
const shape_ops = @import("shape.zig");
const settings = @import("../settings.zig");
const intra_op = @import("../pool/intra_op.zig");
const parallel = @import("parallel.zig");
const kernels = @import("../kernels/reduction.zig");
const normalization = @import("../kernels/normalization.zig");
const elementwise = @import("elementwise.zig");

const Error = status.Error;
const Tensor = tensor.Tensor;
const max_dims = tensor.max_dims;

pub const Kind = enum { sum, mean, max, min, prod, argmax };

/// A reduced axis of a contiguous buffer seen as [outer, reduced, inner].
const Block = struct {
    outer: usize,
    reduced: usize,
    inner: usize,

    fn of(shape: []const usize, first: usize, last: usize) Block {
        var block: Block = .{ .outer = 1, .reduced = 1, .inner = 1 };
        for (shape, 0..) |d, axis| {
            if (axis < first) block.outer *= d else if (axis <= last) block.reduced *= d else block.inner *= d;
        }
        return block;
    }
};

const ReduceContext = struct {
    op: kernels.Reduce,
    block: Block,
    input: []const f32,
    output: []f32,

    /// Work item w covers outer row w / inner_tiles and a tile of 64 inner positions.
    const inner_tile = 64;

    fn innerTiles(context: *const ReduceContext) usize {
        return std.math.divCeil(usize, context.block.inner, inner_tile) catch unreachable;
    }

    fn body(context: *const ReduceContext, begin: usize, end: usize) Error!void {
        const block = context.block;
        const tiles = context.innerTiles();
        for (begin..end) |item| {
            const outer = item / tiles;
            const inner_begin = (item % tiles) * inner_tile;
            const inner_end = @min(block.inner, inner_begin + inner_tile);
            const source = context.input[outer * block.reduced * block.inner ..][0 .. block.reduced * block.inner];
            const destination = context.output[outer * block.inner + inner_begin .. outer * block.inner + inner_end];
            if (block.inner == 1) {
                destination[0] = kernels.row(context.op, source);
            } else {
                kernels.columns(context.op, source, block.reduced, block.inner, inner_begin, destination);
            }
        }
    }
};

/// Reduces one long row with partial results per chunk, combined left to right.
fn reduceLongRow(op: kernels.Reduce, values: []const f32) Error!f32 {
    const max_partials = 64;
    const chunks = @min(max_partials, parallel.threads(), @max(1, values.len / parallel.Work.medium.unitsPerChunk()));
    var partials: [max_partials]f32 = undefined;
    const Context = struct {
        op: kernels.Reduce,
        values: []const f32,
        chunks: usize,
        partials: []f32,
        fn body(context: *const @This(), begin: usize, end: usize) Error!void {
            const size = std.math.divCeil(usize, context.values.len, context.chunks) catch unreachable;
            for (begin..end) |chunk| {
                const first = @min(context.values.len, chunk * size);
                const last = @min(context.values.len, first + size);
                context.partials[chunk] = kernels.row(context.op, context.values[first..last]);
            }
        }
    };
    const context: Context = .{ .op = op, .values = values, .chunks = chunks, .partials = partials[0..chunks] };
    try intra_op.parallelForTyped(0, chunks, 1, &context, Context.body);
    var result = kernels.identityOf(op);
    for (partials[0..chunks]) |partial| result = kernels.combine(op, result, partial);
    return result;
}

/// Reduces axes [first, last] of a contiguous float32 buffer of `shape` into `output`.
fn reduceAxes(op: kernels.Reduce, input: []const f32, shape: []const usize, first: usize, last: usize, output: []f32) Error!void {
    const block = Block.of(shape, first, last);
    std.debug.assert(output.len == block.outer * block.inner);
    if (output.len == 0) return;
    if (block.outer * block.inner == 1) {
        output[0] = try reduceLongRow(op, input);
        return;
    }
    const context: ReduceContext = .{ .op = op, .block = block, .input = input, .output = output };
    const items = block.outer * context.innerTiles();
    const per_item = block.reduced * @min(block.inner, ReduceContext.inner_tile);
    try intra_op.parallelForTyped(0, items, parallel.grain(.medium, per_item), &context, ReduceContext.body);
}

/// Which axes to reduce: `dims` (empty = all), checked and normalised.
fn reducedMask(comptime op: []const u8, dims: []const i64, ndim: usize) Error![max_dims]bool {
    var mask: [max_dims]bool = @splat(dims.len == 0);
    if (dims.len == 0) return mask;
    for (dims) |raw| {
        const axis = try @import("dims.zig").normalizeDim(op, raw, ndim);
        if (ndim == 0) continue;
        if (mask[axis]) return status.fail(error.InvalidArgument, op ++ ": dimension {d} appears twice", .{raw});
        mask[axis] = true;
    }
    return mask;
}

fn outputShape(shape: []const usize, mask: [max_dims]bool, keepdim: bool, buffer: *[max_dims]usize) []usize {
    var n: usize = 0;
    for (shape, 0..) |d, axis| {
        if (!mask[axis]) {
            buffer[n] = d;
            n += 1;
        } else if (keepdim) {
            buffer[n] = 1;
            n += 1;
        }
    }
    return buffer[0..n];
}

/// sum / mean / max / min over `dims` (all when empty), or argmax over one dim or all.
pub fn reduce(kind: Kind, input: *Tensor, dims: []const i64, keepdim: bool) Error!*Tensor {
    return reduceSelecting(kind, input, dims, keepdim, false);
}

/// `reduce`, with argmax picking the last of equal maxima when `last`.
pub fn reduceSelecting(kind: Kind, input: *Tensor, dims: []const i64, keepdim: bool, last: bool) Error!*Tensor {
    const name = @tagName(kind);
    try elementwiseRequireFloat(name, input);
    const mask = switch (kind) {
        inline else => |k| try reducedMask(@tagName(k), dims, input.ndim),
    };
    if (kind == .argmax and dims.len > 1) {
        return status.fail(error.InvalidArgument, "argmax: reduces one dimension or all of them, got {d}", .{dims.len});
    }
    const x = try shape_ops.contiguous(input);
    defer x.release();
    var reduced_count: usize = 1;
    for (x.dims(), 0..) |d, axis| if (mask[axis]) {
        reduced_count *= d;
    };
    if (reduced_count == 0 and kind != .sum and kind != .mean and kind != .prod) {
        return status.fail(error.InvalidArgument, "{s}: cannot reduce over a zero-size dimension (shape {f})", .{ name, status.shape(x.dims()) });
    }
    var shape_buffer: [max_dims]usize = undefined;
    const out_shape = outputShape(x.dims(), mask, keepdim, &shape_buffer);
    if (kind == .argmax) return argmax(x, mask, dims.len == 0, out_shape, last);
    const op: kernels.Reduce = switch (kind) {
        .sum, .mean => .sum,
        .max => .max,
        .min => .min,
        .prod => .prod,
        .argmax => unreachable,
    };
    const out = try reduceMasked(op, x, mask);
    errdefer out.release();
    if (kind == .mean) {
        const scale: f32 = if (reduced_count == 0) std.math.nan(f32) else 1 / @as(f32, @floatFromInt(reduced_count));
        for (out.f32Slice()) |*value| value.* *= scale;
    }
    // Reshape in place: the reduced buffer already holds the kept dims in order.
    @memcpy(out.shape[0..out_shape.len], out_shape);
    out.ndim = @intCast(out_shape.len);
    var stride: usize = 1;
    var axis = out.ndim;
    while (axis > 0) {
        axis -= 1;
        out.strides[axis] = stride;
        stride *= out.shape[axis];
    }
    return out;
}

fn elementwiseRequireFloat(name: []const u8, t: *const Tensor) Error!void {
    if (t.dtype != .float32) {
        return status.fail(error.DTypeMismatch, "{s}: expected a float32 tensor, got {s}", .{ name, t.dtype.name() });
    }
}

/// Reduces every masked axis, one run of consecutive axes at a time (last run first), and
/// returns a tensor holding the kept dims (as a flat shape; the caller sets the final one).
fn reduceMasked(op: kernels.Reduce, x: *Tensor, mask: [max_dims]bool) Error!*Tensor {
    var shape: [max_dims]usize = undefined;
    const ndim = x.ndim;
    @memcpy(shape[0..ndim], x.dims());
    var current = x;
    current.retain();
    errdefer current.release();
    var axis: usize = ndim;
    var current_ndim: usize = ndim;
    while (axis > 0) {
        axis -= 1;
        if (!mask[axis]) continue;
        var first = axis;
        while (first > 0 and mask[first - 1]) first -= 1;
        var kept: [max_dims]usize = undefined;
        var kept_n: usize = 0;
        for (shape[0..current_ndim], 0..) |d, i| if (i < first or i > axis) {
            kept[kept_n] = d;
            kept_n += 1;
        };
        const next = try tensor.createUninit(.float32, kept[0..kept_n]);
        reduceAxes(op, current.f32Slice(), shape[0..current_ndim], first, axis, next.f32Slice()) catch |err| {
            next.release();
            return err;
        };
        current.release();
        current = next;
        @memcpy(shape[0..kept_n], kept[0..kept_n]);
        current_ndim = kept_n;
        axis = first;
    }
    if (current == x) {
        // Nothing reduced (e.g. a 0-D input with dims = all): return a copy, never the input.
        const copy = try tensor.createUninit(.float32, x.dims());
        @memcpy(copy.f32Slice(), x.f32Slice());
        current.release();
        return copy;
    }
    return current;
}

fn argmax(x: *Tensor, mask: [max_dims]bool, all: bool, out_shape: []const usize, last: bool) Error!*Tensor {
    const out = try tensor.createUninit(.int64, out_shape);
    errdefer out.release();
    const values = x.f32Slice();
    if (all or x.ndim == 0) {
        out.i64Slice()[0] = @intCast(kernels.argmax(values, values.len, 1, last));
        return out;
    }
    const axis = std.mem.indexOfScalar(bool, mask[0..x.ndim], true).?;
    const block = Block.of(x.dims(), axis, axis);
    const indices = out.i64Slice();
    for (0..block.outer) |o| for (0..block.inner) |i| {
        const start = o * block.reduced * block.inner + i;
        indices[o * block.inner + i] = @intCast(kernels.argmax(values[start..], block.reduced, block.inner, last));
    };
    return out;
}

/// Running sums (products when `product`: ONNX CumProd) along `dim` (ONNX CumSum,
/// torch.cumsum) of a float32, int32 or int64 tensor.
pub fn cumsum(input: *Tensor, dim_raw: i64, exclusive: bool, reverse: bool, product: bool) Error!*Tensor {
    const axis = try @import("dims.zig").normalizeDim(if (product) "cum_prod" else "cum_sum", dim_raw, input.ndim);
    const x = try shape_ops.contiguous(input);
    defer x.release();
    const out = try tensor.createUninit(x.dtype, x.dims());
    errdefer out.release();
    if (out.numel() == 0) return out;
    const block = Block.of(x.dims(), axis, axis);
    switch (x.dtype) {
        .float32 => try cumsumTyped(f32, block, x.f32Slice(), out.f32Slice(), exclusive, reverse, product),
        .int64 => try cumsumTyped(i64, block, x.i64Slice(), out.i64Slice(), exclusive, reverse, product),
        .int32 => try cumsumTyped(i32, block, x.i32Slice(), out.i32Slice(), exclusive, reverse, product),
    }
    return out;
}

fn cumsumTyped(comptime T: type, block: Block, input: []const T, output: []T, exclusive: bool, reverse: bool, product: bool) Error!void {
    const Context = struct {
        block: Block,
        input: []const T,
        output: []T,
        exclusive: bool,
        reverse: bool,
        product: bool,
        /// Line l is outer row l / inner, column l % inner.
        fn body(context: *const @This(), begin: usize, end: usize) Error!void {
            const b = context.block;
            const span = (b.reduced - 1) * b.inner + 1;
            for (begin..end) |line| {
                const base = (line / b.inner) * b.reduced * b.inner + line % b.inner;
                kernels.cumsumLine(T, context.input[base..][0..span], context.output[base..][0..span], b.reduced, b.inner, context.exclusive, context.reverse, context.product);
            }
        }
    };
    const context: Context = .{ .block = block, .input = input, .output = output, .exclusive = exclusive, .reverse = reverse, .product = product };
    try intra_op.parallelForTyped(0, block.outer * block.inner, parallel.grain(.medium, block.reduced), &context, Context.body);
}

/// softmax or log-softmax along `dim`.
pub fn softmax(input: *Tensor, dim_raw: i64, log: bool) Error!*Tensor {
    const name = if (log) "log_softmax" else "softmax";
    try elementwiseRequireFloat(name, input);
    const axis = try @import("dims.zig").normalizeDim(name, dim_raw, input.ndim);
    const x = try shape_ops.contiguous(input);
    defer x.release();
    const out = try tensor.createUninit(.float32, x.dims());
    errdefer out.release();
    if (out.numel() == 0) return out;
    const block = if (x.ndim == 0) Block{ .outer = 1, .reduced = 1, .inner = 1 } else Block.of(x.dims(), axis, axis);
    const Context = struct {
        block: Block,
        input: []const f32,
        output: []f32,
        log: bool,
        const tile = 64;
        fn tiles(context: *const @This()) usize {
            return std.math.divCeil(usize, context.block.inner, tile) catch unreachable;
        }
        fn body(context: *const @This(), begin: usize, end: usize) Error!void {
            const b = context.block;
            if (b.inner == 1 and b.reduced <= normalization.short_row_max) {
                // Rows begin … end − 1 (one tile each): their floats are contiguous.
                const span = context.input[begin * b.reduced .. end * b.reduced];
                normalization.softmaxShortRows(span, context.output[begin * b.reduced .. end * b.reduced], end - begin, b.reduced, context.log);
                return;
            }
            for (begin..end) |item| {
                const outer = item / context.tiles();
                const inner_begin = (item % context.tiles()) * tile;
                const base = outer * b.reduced * b.inner;
                const source = context.input[base..][0 .. b.reduced * b.inner];
                const destination = context.output[base..][0 .. b.reduced * b.inner];
                if (b.inner == 1) {
                    normalization.softmaxRow(source, destination, context.log);
                } else {
                    normalization.softmaxColumns(source, destination, b.reduced, b.inner, inner_begin, @min(b.inner, inner_begin + tile), context.log);
                }
            }
        }
    };
    const context: Context = .{ .block = block, .input = x.f32Slice(), .output = out.f32Slice(), .log = log };
    const per_item = block.reduced * @min(block.inner, Context.tile);
    try intra_op.parallelForTyped(0, block.outer * context.tiles(), parallel.grain(.transcendental, per_item), &context, Context.body);
    return out;
}

// ---------------------------------------------------------------------------------------

fn referenceReduce(kind: Kind, x: *const Tensor, mask: [max_dims]bool, flat_out: usize, out_count: usize) f64 {
    _ = out_count;
    // Walk every input element; keep those whose kept coordinates map to flat_out.
    var accumulator: f64 = switch (kind) {
        .sum, .mean => 0,
        .max, .argmax => -std.math.inf(f64),
        .min => std.math.inf(f64),
        .prod => 1,
    };
    var count: f64 = 0;
    const values = x.f32Slice();
    for (values, 0..) |value, flat| {
        var remaining = flat;
        var out_index: usize = 0;
        var out_stride: usize = 1;
        var axis = x.ndim;
        while (axis > 0) {
            axis -= 1;
            const coordinate = remaining % x.shape[axis];
            remaining /= x.shape[axis];
            if (!mask[axis]) {
                out_index += coordinate * out_stride;
                out_stride *= x.shape[axis];
            }
        }
        if (out_index != flat_out) continue;
        count += 1;
        switch (kind) {
            .sum, .mean => accumulator += value,
            .max, .argmax => accumulator = @max(accumulator, value),
            .min => accumulator = @min(accumulator, value),
            .prod => accumulator *= value,
        }
    }
    return if (kind == .mean) accumulator / count else accumulator;
}

test "reductions over any dims match the reference at 1 and 2 threads" {
    settings.resetForTesting();
    defer settings.resetForTesting();
    var prng = std.Random.DefaultPrng.init(21);
    const shapes = [_][]const usize{ &.{ 3, 5, 7 }, &.{ 1, 17, 1 }, &.{ 2, 3, 4, 5 }, &.{70001}, &.{ 3, 2053 } };
    const dim_sets = [_][]const i64{ &.{}, &.{0}, &.{-1}, &.{ 0, 2 }, &.{1} };
    for ([_]i64{ 1, 2 }) |threads| {
        try settings.setNumThreads(threads);
        for (shapes) |shape| for (dim_sets) |dims| {
            if (dims.len > 0 and (dims[dims.len - 1] >= @as(i64, @intCast(shape.len)))) continue;
            const x = try tensor.createUninit(.float32, shape);
            defer x.release();
            for (x.f32Slice()) |*v| v.* = prng.random().float(f32) * 2 - 1;
            const mask = try reducedMask("test", dims, shape.len);
            for ([_]Kind{ .sum, .mean, .max, .min, .prod }) |kind| for ([_]bool{ false, true }) |keepdim| {
                const out = try reduce(kind, x, dims, keepdim);
                defer out.release();
                for (out.f32Slice(), 0..) |got, i| {
                    const expected = referenceReduce(kind, x, mask, i, out.numel());
                    try std.testing.expectApproxEqAbs(@as(f32, @floatCast(expected)), got, 2e-3);
                }
                if (keepdim) try std.testing.expectEqual(@as(u8, @intCast(shape.len)), out.ndim);
            };
        };
    }
}

test "argmax, empty reductions and bad dims" {
    const x = try tensor.createUninit(.float32, &.{ 2, 3 });
    defer x.release();
    @memcpy(x.f32Slice(), &[_]f32{ 1, 5, 2, 7, 0, 7 });
    const along_rows = try reduce(.argmax, x, &.{1}, false);
    defer along_rows.release();
    try std.testing.expectEqualSlices(i64, &.{ 1, 0 }, along_rows.i64Slice());
    const all = try reduce(.argmax, x, &.{}, false);
    defer all.release();
    try std.testing.expectEqualSlices(i64, &.{3}, all.i64Slice());
    // select_last_index: the last of the tied 7s, along the rows and over everything.
    const last_along_rows = try reduceSelecting(.argmax, x, &.{1}, true, true);
    defer last_along_rows.release();
    try std.testing.expectEqualSlices(i64, &.{ 1, 2 }, last_along_rows.i64Slice());
    try std.testing.expectEqualSlices(usize, &.{ 2, 1 }, last_along_rows.dims());
    const last_all = try reduceSelecting(.argmax, x, &.{}, false, true);
    defer last_all.release();
    try std.testing.expectEqualSlices(i64, &.{5}, last_all.i64Slice());
    try std.testing.expectError(error.IndexOutOfRange, reduce(.sum, x, &.{2}, false));
    try std.testing.expectError(error.InvalidArgument, reduce(.sum, x, &.{ 1, -1 }, false));
    const empty = try tensor.createZeroed(.float32, &.{ 0, 3 });
    defer empty.release();
    const summed = try reduce(.sum, empty, &.{0}, false);
    defer summed.release();
    try std.testing.expectEqualSlices(f32, &.{ 0, 0, 0 }, summed.f32Slice());
    try std.testing.expectError(error.InvalidArgument, reduce(.max, empty, &.{0}, false));
}

test "softmax along every dim sums to one" {
    var prng = std.Random.DefaultPrng.init(4);
    const x = try tensor.createUninit(.float32, &.{ 3, 19, 5 });
    defer x.release();
    for (x.f32Slice()) |*v| v.* = prng.random().float(f32) * 10 - 5;
    for ([_]i64{ 0, 1, 2, -1 }) |dim| {
        const out = try softmax(x, dim, false);
        defer out.release();
        const summed = try reduce(.sum, out, &.{dim}, false);
        defer summed.release();
        for (summed.f32Slice()) |s| try std.testing.expectApproxEqAbs(@as(f32, 1), s, 1e-5);
        const logged = try softmax(x, dim, true);
        defer logged.release();
        for (out.f32Slice(), logged.f32Slice()) |p, l| try std.testing.expectApproxEqAbs(@log(p), l, 1e-4);
    }
    try std.testing.expectError(error.IndexOutOfRange, softmax(x, 3, false));
}

comptime {
    _ = elementwise;
}

test "cumsum and cumprod along every dim match a running sum and product, forward, reverse and exclusive" {
    settings.resetForTesting();
    defer settings.resetForTesting();
    const dims = [_]usize{ 3, 17, 5 };
    const x = try tensor.createUninit(.float32, &dims);
    defer x.release();
    for (x.f32Slice(), 0..) |*v, i| v.* = @floatFromInt(@as(i64, @intCast(i % 7)) - 3);
    for ([_]u32{ 1, 2 }) |threads| {
        try settings.setNumThreads(threads);
        for (0..3) |axis| for ([_]bool{ false, true }) |exclusive| for ([_]bool{ false, true }) |reverse| for ([_]bool{ false, true }) |product| {
            const y = try cumsum(x, @intCast(axis), exclusive, reverse, product);
            defer y.release();
            const block = Block.of(&dims, axis, axis);
            for (0..block.outer) |o| for (0..block.inner) |i| {
                var total: f32 = if (product) 1 else 0;
                for (0..block.reduced) |step| {
                    const r = if (reverse) block.reduced - 1 - step else step;
                    const at = (o * block.reduced + r) * block.inner + i;
                    if (exclusive) try std.testing.expectEqual(total, y.f32Slice()[at]);
                    total = if (product) total * x.f32Slice()[at] else total + x.f32Slice()[at];
                    if (!exclusive) try std.testing.expectEqual(total, y.f32Slice()[at]);
                }
            };
        };
    }
    const wide = try tensor.createZeroed(.int32, &.{ 2, 0 });
    defer wide.release();
    const empty = try cumsum(wide, -1, false, false, true);
    defer empty.release();
    try std.testing.expectEqual(@as(usize, 0), empty.numel());
    try std.testing.expectError(error.IndexOutOfRange, cumsum(x, 3, false, false, false));
}
