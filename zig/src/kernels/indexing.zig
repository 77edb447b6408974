//! Index-mapping kernels for model import: where, compare, expand, cast, pad, take and
//! resize. Each computes output elements [begin, end) of a contiguous output from contiguous
//! inputs described by `Operand`s (broadcast strides of 0 where a dim is broadcast); threading
//! lives in ops/indexing.zig. They move elements of any dtype, so they work on bytes and read
//! values through `load`/`store`.
const std = @import("std");
const tensor = @import("../tensor.zig");
const DType = tensor.DType;
const max_dims = tensor.max_dims;

/// A contiguous input read through per-output-dim element strides (0 = broadcast).
pub const Operand = struct {
    bytes: []const u8,
    dtype: DType,
    strides: [max_dims]usize = @splat(0),
};

pub fn load(dtype: DType, bytes: []const u8, index: usize) f64 {
    return switch (dtype) {
        .float32 => std.mem.bytesToValue(f32, bytes[index * 4 ..][0..4]),
        .int32 => @floatFromInt(std.mem.bytesToValue(i32, bytes[index * 4 ..][0..4])),
        .int64 => @floatFromInt(std.mem.bytesToValue(i64, bytes[index * 8 ..][0..8])),
    };
}

/// Converts with saturation: NaN becomes 0 and out-of-range values clamp (never UB).
fn saturate(comptime T: type, value: f64) T {
    if (std.math.isNan(value)) return 0;
    const low: f64 = @floatFromInt(std.math.minInt(T));
    const high: f64 = @floatFromInt(std.math.maxInt(T));
    if (value <= low) return std.math.minInt(T);
    if (value >= high) return std.math.maxInt(T);
    return @intFromFloat(@trunc(value));
}

pub fn store(dtype: DType, bytes: []u8, index: usize, value: f64) void {
    switch (dtype) {
        .float32 => std.mem.bytesAsValue(f32, bytes[index * 4 ..][0..4]).* = @floatCast(value),
        .int32 => std.mem.bytesAsValue(i32, bytes[index * 4 ..][0..4]).* = saturate(i32, value),
        .int64 => std.mem.bytesAsValue(i64, bytes[index * 8 ..][0..8]).* = saturate(i64, value),
    }
}

/// Coordinates of flat `index` in `shape` (row-major).
pub fn unravel(index: usize, shape: []const usize, coordinates: *[max_dims]usize) void {
    std.debug.assert(shape.len <= max_dims);
    var rest = index;
    var axis = shape.len;
    while (axis > 0) {
        axis -= 1;
        coordinates[axis] = rest % shape[axis];
        rest /= shape[axis];
    }
}

/// Steps `coordinates` to the next element of `shape`.
fn advance(shape: []const usize, coordinates: *[max_dims]usize) void {
    var axis = shape.len;
    while (axis > 0) {
        axis -= 1;
        coordinates[axis] += 1;
        if (coordinates[axis] < shape[axis]) return;
        coordinates[axis] = 0;
    }
}

fn offsetOf(operand: *const Operand, rank: usize, coordinates: *const [max_dims]usize) usize {
    var offset: usize = 0;
    for (0..rank) |axis| offset += coordinates[axis] * operand.strides[axis];
    return offset;
}

/// out = cond != 0 ? x : y (x, y and out share a dtype).
pub fn where(shape: []const usize, cond: Operand, x: Operand, y: Operand, out: []u8, begin: usize, end: usize) void {
    const size = x.dtype.size();
    var coordinates: [max_dims]usize = undefined;
    unravel(begin, shape, &coordinates);
    for (begin..end) |i| {
        const pick = load(cond.dtype, cond.bytes, offsetOf(&cond, shape.len, &coordinates)) != 0;
        const source = if (pick) &x else &y;
        const at = offsetOf(source, shape.len, &coordinates);
        @memcpy(out[i * size ..][0..size], source.bytes[at * size ..][0..size]);
        advance(shape, &coordinates);
    }
}

pub const Comparison = enum(u8) { equal, less, greater, less_equal, greater_equal };

/// out (int32) = a ⋈ b ? 1 : 0.
pub fn compare(kind: Comparison, shape: []const usize, a: Operand, b: Operand, out: []i32, begin: usize, end: usize) void {
    var coordinates: [max_dims]usize = undefined;
    unravel(begin, shape, &coordinates);
    for (begin..end) |i| {
        const x = load(a.dtype, a.bytes, offsetOf(&a, shape.len, &coordinates));
        const y = load(b.dtype, b.bytes, offsetOf(&b, shape.len, &coordinates));
        const result = switch (kind) {
            .equal => x == y,
            .less => x < y,
            .greater => x > y,
            .less_equal => x <= y,
            .greater_equal => x >= y,
        };
        out[i] = @intFromBool(result);
        advance(shape, &coordinates);
    }
}

/// Copies the (broadcast) elements of `x` into out: expand.
pub fn broadcastCopy(shape: []const usize, x: Operand, out: []u8, begin: usize, end: usize) void {
    const size = x.dtype.size();
    var coordinates: [max_dims]usize = undefined;
    unravel(begin, shape, &coordinates);
    for (begin..end) |i| {
        const at = offsetOf(&x, shape.len, &coordinates);
        @memcpy(out[i * size ..][0..size], x.bytes[at * size ..][0..size]);
        advance(shape, &coordinates);
    }
}

/// Converts elements [begin, end) to `to`; as_bool maps nonzero to 1.
pub fn cast(from: DType, input: []const u8, to: DType, output: []u8, as_bool: bool, begin: usize, end: usize) void {
    for (begin..end) |i| {
        const value = load(from, input, i);
        store(to, output, i, if (as_bool) @floatFromInt(@intFromBool(value != 0)) else value);
    }
}

pub const PadMode = enum(u8) { constant, reflect, edge };

/// Maps an output coordinate to an input one, or null for the constant border.
fn padSource(mode: PadMode, coordinate: usize, before: usize, size: usize) ?usize {
    const shifted = @as(i64, @intCast(coordinate)) - @as(i64, @intCast(before));
    const n: i64 = @intCast(size);
    if (shifted >= 0 and shifted < n) return @intCast(shifted);
    switch (mode) {
        .constant => return null,
        .edge => return @intCast(std.math.clamp(shifted, 0, n - 1)),
        .reflect => {
            // Period 2(n-1): ...2 1 [0 1 2 ... n-1] n-2 ... (numpy 'reflect'); n ≥ 2 checked.
            const period = 2 * (n - 1);
            var m = @mod(shifted, period);
            if (m >= n) m = period - m;
            return @intCast(m);
        },
    }
}

/// Pad: `before[d]` elements before each dim of `in_shape`; out_shape is the padded shape.
pub fn pad(
    mode: PadMode,
    in_shape: []const usize,
    before: []const usize,
    out_shape: []const usize,
    value: f64,
    x: Operand,
    out: []u8,
    begin: usize,
    end: usize,
) void {
    const size = x.dtype.size();
    var coordinates: [max_dims]usize = undefined;
    unravel(begin, out_shape, &coordinates);
    outer: for (begin..end) |i| {
        defer advance(out_shape, &coordinates);
        var at: usize = 0;
        for (0..out_shape.len) |axis| {
            const source = padSource(mode, coordinates[axis], before[axis], in_shape[axis]) orelse {
                store(x.dtype, out, i, value);
                continue :outer;
            };
            at += source * x.strides[axis];
        }
        @memcpy(out[i * size ..][0..size], x.bytes[at * size ..][0..size]);
    }
}

/// take: out[o, j, k] = x[o, indices[j], k] for the `outer × count × inner` view; indices are
/// already checked and made non-negative. Range over (o, j) pairs.
pub fn take(x: []const u8, indices: []const usize, size_along: usize, inner_bytes: usize, out: []u8, begin: usize, end: usize) void {
    const count = indices.len;
    for (begin..end) |pair| {
        const o = pair / count;
        const j = pair % count;
        const source = (o * size_along + indices[j]) * inner_bytes;
        @memcpy(out[pair * inner_bytes ..][0..inner_bytes], x[source..][0..inner_bytes]);
    }
}

pub const Coordinate = enum(u8) { half_pixel, asymmetric, pytorch_half_pixel, align_corners, half_pixel_symmetric };
pub const Nearest = enum(u8) { round_prefer_floor, round_prefer_ceil, floor, ceil };

pub const ResizeDim = struct { in: usize, out: usize, scale: f64 };

/// The input coordinate (continuous) that output coordinate `x` maps to.
pub fn sourceCoordinate(mode: Coordinate, x: usize, dim: ResizeDim) f64 {
    const xf: f64 = @floatFromInt(x);
    const in: f64 = @floatFromInt(dim.in);
    const out: f64 = @floatFromInt(dim.out);
    return switch (mode) {
        .half_pixel => (xf + 0.5) / dim.scale - 0.5,
        .asymmetric => xf / dim.scale,
        .pytorch_half_pixel => if (dim.out > 1) (xf + 0.5) / dim.scale - 0.5 else 0,
        // ONNX divides by in·scale - 1 (the unrounded output length) when scales are given.
        .align_corners => if (dim.out == 1) 0 else xf * (in - 1) / (in * dim.scale - 1),
        .half_pixel_symmetric => blk: {
            const adjustment = out / (dim.scale * in);
            const offset = in / 2 * (1 - adjustment);
            break :blk offset + (xf + 0.5) / dim.scale - 0.5;
        },
    };
}

fn nearestIndex(mode: Nearest, x: f64, size: usize) usize {
    const rounded = switch (mode) {
        .round_prefer_floor => if (x - @floor(x) == 0.5) @floor(x) else @round(x),
        .round_prefer_ceil => if (x - @floor(x) == 0.5) @ceil(x) else @round(x),
        .floor => @floor(x),
        .ceil => @ceil(x),
    };
    const high: f64 = @floatFromInt(size - 1);
    return @intFromFloat(std.math.clamp(rounded, 0, high));
}

/// Cubic interpolation (Keys' kernel with coefficient `a`; ONNX's cubic_coeff_a), taps past
/// the edge repeating it, or left out and the rest renormalized when `exclude_outside`.
pub const Cubic = struct { a: f64 = -0.75, exclude_outside: bool = false };

pub const ResizeArgs = struct {
    linear: bool,
    /// Set: cubic interpolation (then `linear` is ignored).
    cubic: ?Cubic = null,
    coordinate: Coordinate,
    nearest: Nearest,
    dims: []const ResizeDim,
    input: []const f32,
    output: []f32,
};

/// Output shape, input strides and the dims that actually change size.
const ResizeLayout = struct {
    out_shape: [max_dims]usize,
    in_strides: [max_dims]usize,
    resized: [max_dims]usize,
    resized_count: usize,

    fn of(args: *const ResizeArgs) ResizeLayout {
        var layout: ResizeLayout = .{ .out_shape = undefined, .in_strides = undefined, .resized = undefined, .resized_count = 0 };
        var stride: usize = 1;
        var axis = args.dims.len;
        while (axis > 0) {
            axis -= 1;
            layout.out_shape[axis] = args.dims[axis].out;
            layout.in_strides[axis] = stride;
            stride *= args.dims[axis].in;
        }
        // Dims that keep their size at scale 1 map every coordinate to itself in every
        // coordinate mode: read them directly and interpolate only over the resized ones
        // (for NCHW that is 4 corners instead of 16).
        for (args.dims, 0..) |dim, d| {
            if (dim.in == dim.out and dim.scale == 1) continue;
            layout.resized[layout.resized_count] = d;
            layout.resized_count += 1;
        }
        return layout;
    }
};

/// Resize (nearest or N-linear) of output elements [begin, end).
pub fn resize(args: *const ResizeArgs, begin: usize, end: usize) void {
    const layout = ResizeLayout.of(args);
    if (args.cubic) |cubic| return resizeCubic(args, cubic, &layout, begin, end);
    if (args.dims.len >= 2 and resizePlanar(args, layout.resized[0..layout.resized_count], begin, end)) return;
    resizeGeneral(args, &layout, begin, end);
}

/// The general path, element by element.
fn resizeGeneral(args: *const ResizeArgs, layout: *const ResizeLayout, begin: usize, end: usize) void {
    const rank = args.dims.len;
    const out_shape = layout.out_shape[0..rank];
    const in_strides = layout.in_strides[0..rank];
    const resized = layout.resized[0..layout.resized_count];
    const resized_count = resized.len;
    var coordinates: [max_dims]usize = undefined;
    unravel(begin, out_shape, &coordinates);
    for (begin..end) |i| {
        defer advance(out_shape, &coordinates);
        var base: usize = 0;
        for (0..rank) |d| base += coordinates[d] * in_strides[d];
        var low: [max_dims]usize = undefined;
        var high: [max_dims]usize = undefined;
        var weight: [max_dims]f64 = undefined;
        for (resized[0..resized_count], 0..) |d, r| {
            const dim = args.dims[d];
            // Replace this dim's identity contribution by the source position.
            base -= coordinates[d] * in_strides[d];
            const x = sourceCoordinate(args.coordinate, coordinates[d], dim);
            if (!args.linear) {
                low[r] = nearestIndex(args.nearest, x, dim.in);
                high[r] = low[r];
                weight[r] = 0;
                continue;
            }
            const top: f64 = @floatFromInt(dim.in - 1);
            const clamped = std.math.clamp(x, 0, top);
            const floor = @floor(clamped);
            low[r] = @intFromFloat(floor);
            high[r] = @min(low[r] + 1, dim.in - 1);
            weight[r] = clamped - floor;
        }
        var sum: f64 = 0;
        const corners: usize = if (args.linear) @as(usize, 1) << @intCast(resized_count) else 1;
        for (0..corners) |corner| {
            var w: f64 = 1;
            var at: usize = base;
            for (resized[0..resized_count], 0..) |d, r| {
                const up = (corner >> @intCast(r)) & 1 == 1;
                w *= if (up) weight[r] else 1 - weight[r];
                at += (if (up) high[r] else low[r]) * in_strides[d];
            }
            if (w != 0 or corners == 1) sum += w * args.input[at];
        }
        args.output[i] = @floatCast(sum);
    }
}

/// Keys' cubic convolution kernel at distance `s`.
fn keys(a: f64, distance: f64) f64 {
    const s = @abs(distance);
    if (s <= 1) return ((a + 2) * s - (a + 3)) * s * s + 1;
    if (s < 2) return ((a * s - 5 * a) * s + 8 * a) * s - 4 * a;
    return 0;
}

/// Cubic resize, element by element: 4 taps per resized dim (floor(x) − 1 … floor(x) + 2).
fn resizeCubic(args: *const ResizeArgs, cubic: Cubic, layout: *const ResizeLayout, begin: usize, end: usize) void {
    const rank = args.dims.len;
    const out_shape = layout.out_shape[0..rank];
    const in_strides = layout.in_strides[0..rank];
    const resized = layout.resized[0..layout.resized_count];
    var coordinates: [max_dims]usize = undefined;
    unravel(begin, out_shape, &coordinates);
    for (begin..end) |i| {
        defer advance(out_shape, &coordinates);
        var base: usize = 0;
        for (0..rank) |d| base += coordinates[d] * in_strides[d];
        var taps: [max_dims][4]usize = undefined;
        var weights: [max_dims][4]f64 = undefined;
        for (resized, 0..) |d, r| {
            const dim = args.dims[d];
            base -= coordinates[d] * in_strides[d];
            const x = sourceCoordinate(args.coordinate, coordinates[d], dim);
            const floor = @floor(x);
            const t = x - floor;
            const top: f64 = @floatFromInt(dim.in - 1);
            var total: f64 = 0;
            for (0..4) |k| {
                const position = floor - 1 + @as(f64, @floatFromInt(k));
                const outside = position < 0 or position > top;
                weights[r][k] = if (outside and cubic.exclude_outside) 0 else keys(cubic.a, t + 1 - @as(f64, @floatFromInt(k)));
                taps[r][k] = @intFromFloat(std.math.clamp(position, 0, top));
                total += weights[r][k];
            }
            if (cubic.exclude_outside and total != 0) for (&weights[r]) |*w| {
                w.* /= total;
            };
        }
        // Every combination of one tap per resized dim (4^resized, at most 4^max_dims).
        var sum: f64 = 0;
        const combinations = @as(usize, 1) << @intCast(2 * resized.len);
        for (0..combinations) |combination| {
            var w: f64 = 1;
            var at: usize = base;
            for (resized, 0..) |d, r| {
                const k = (combination >> @intCast(2 * r)) & 3;
                w *= weights[r][k];
                at += taps[r][k] * in_strides[d];
            }
            if (w != 0) sum += w * args.input[at];
        }
        args.output[i] = @floatCast(sum);
    }
}

/// Per-output-coordinate source positions along one dim, computed once per call instead of
/// per element: this is what makes upsampling a feature map cheap.
const max_table = 2048;

const Table = struct {
    low: [max_table]u32,
    high: [max_table]u32,
    weight: [max_table]f32,

    /// k when entry o is o / k for every output o (out = k · in), else null.
    fn factor(table: *const Table, dim: ResizeDim) ?usize {
        if (dim.out % dim.in != 0) return null;
        const k = dim.out / dim.in;
        for (table.low[0..dim.out], 0..) |low, o| if (low != o / k) return null;
        return k;
    }

    fn fill(table: *Table, args: *const ResizeArgs, dim: ResizeDim) void {
        for (0..dim.out) |o| {
            const x = sourceCoordinate(args.coordinate, o, dim);
            if (!args.linear) {
                const index: u32 = @intCast(nearestIndex(args.nearest, x, dim.in));
                table.low[o] = index;
                table.high[o] = index;
                table.weight[o] = 0;
                continue;
            }
            const top: f64 = @floatFromInt(dim.in - 1);
            const clamped = std.math.clamp(x, 0, top);
            const floor = @floor(clamped);
            table.low[o] = @intFromFloat(floor);
            table.high[o] = @intCast(@min(@as(usize, @intFromFloat(floor)) + 1, dim.in - 1));
            table.weight[o] = @floatCast(clamped - floor);
        }
    }
};

/// The common case — only the last two dims (H, W) resized, each at most `max_table` long:
/// rows of output computed from two input rows with tables. Returns false when it does not
/// apply (the caller then takes the general path).
fn resizePlanar(args: *const ResizeArgs, resized: []const usize, begin: usize, end: usize) bool {
    const rank = args.dims.len;
    for (resized) |d| if (d < rank - 2) return false;
    const h = args.dims[rank - 2];
    const w = args.dims[rank - 1];
    if (h.out > max_table or w.out > max_table) return false;
    var rows: Table = undefined;
    var columns: Table = undefined;
    rows.fill(args, h);
    columns.fill(args, w);
    // Nearest only: a whole factor by which the width repeats each column (checked once).
    const repeat = if (args.linear) null else columns.factor(w);
    const out_plane = h.out * w.out;
    const in_plane = h.in * w.in;
    var i = begin;
    while (i < end) {
        const plane = i / out_plane;
        const within = i % out_plane;
        const oy = within / w.out;
        const ox_begin = within % w.out;
        const count = @min(w.out - ox_begin, end - i);
        const source = args.input[plane * in_plane ..][0..in_plane];
        const top = source[@as(usize, rows.low[oy]) * w.in ..][0..w.in];
        const bottom = source[@as(usize, rows.high[oy]) * w.in ..][0..w.in];
        const wy = rows.weight[oy];
        const out = args.output[i..][0..count];
        if (!args.linear) {
            // Nearest: a whole row that reads the same source row as the one above it (in
            // this call) is a copy of it; otherwise a gather, or a run-length repeat when
            // the width scales by a whole factor.
            if (count == w.out and oy > 0 and rows.low[oy] == rows.low[oy - 1] and i >= begin + w.out) {
                @memcpy(out, args.output[i - w.out ..][0..w.out]);
            } else if (count == w.out and repeat != null) {
                repeatEach(top, repeat.?, out);
            } else {
                for (out, ox_begin..) |*o, ox| o.* = top[columns.low[ox]];
            }
            i += count;
            continue;
        }
        for (out, ox_begin..) |*o, ox| {
            const x0 = columns.low[ox];
            const x1 = columns.high[ox];
            const wx = columns.weight[ox];
            const upper = top[x0] + wx * (top[x1] - top[x0]);
            const lower = bottom[x0] + wx * (bottom[x1] - bottom[x0]);
            o.* = upper + wy * (lower - upper);
        }
        i += count;
    }
    return true;
}

/// out[j·k + r] = source[j] for r < k: each value repeated k times, as vector shuffles for
/// k = 2 and 4.
fn repeatEach(source: []const f32, k: usize, out: []f32) void {
    std.debug.assert(out.len == source.len * k);
    var j: usize = 0;
    switch (k) {
        inline 2, 4 => |factor| {
            const per_vector = 16 / factor;
            const mask = comptime blk: {
                var m: [16]i32 = undefined;
                for (&m, 0..) |*x, lane| x.* = @intCast(lane / factor);
                break :blk m;
            };
            while (j + per_vector <= source.len) : (j += per_vector) {
                const loaded: @Vector(per_vector, f32) = source[j..][0..per_vector].*;
                out[j * factor ..][0..16].* = @shuffle(f32, loaded, undefined, mask);
            }
        },
        else => {},
    }
    while (j < source.len) : (j += 1) @memset(out[j * k ..][0..k], source[j]);
}

test "nearest upsampling by whole factors: row copies and repeats match the general path" {
    var prng = std.Random.DefaultPrng.init(21);
    var input: [2 * 5 * 9]f32 = undefined;
    for (&input) |*x| x.* = prng.random().float(f32);
    for ([_]usize{ 1, 2, 3, 4, 8 }) |k| for (std.enums.values(Coordinate)) |coordinate| {
        const dims = [_]ResizeDim{
            .{ .in = 2, .out = 2, .scale = 1 },
            .{ .in = 5, .out = 5 * k, .scale = @floatFromInt(k) },
            .{ .in = 9, .out = 9 * k, .scale = @floatFromInt(k) },
        };
        const total = 2 * 5 * k * 9 * k;
        var planar: [2 * 5 * 8 * 9 * 8]f32 = undefined;
        var general: [2 * 5 * 8 * 9 * 8]f32 = undefined;
        const args: ResizeArgs = .{ .linear = false, .coordinate = coordinate, .nearest = .floor, .dims = &dims, .input = &input, .output = planar[0..total] };
        // Chunks that start and end mid-row.
        const cut = total / 3 + 1;
        try std.testing.expect(resizePlanar(&args, &.{ 1, 2 }, 0, cut));
        try std.testing.expect(resizePlanar(&args, &.{ 1, 2 }, cut, total));
        var general_args = args;
        general_args.output = general[0..total];
        resizeGeneral(&general_args, &ResizeLayout.of(&general_args), 0, total);
        try std.testing.expectEqualSlices(f32, general[0..total], planar[0..total]);
    };
}

test "the planar resize path matches the general path" {
    var prng = std.Random.DefaultPrng.init(12);
    var input: [2 * 3 * 5 * 7]f32 = undefined;
    for (&input) |*x| x.* = prng.random().float(f32);
    for ([_]bool{ false, true }) |linear| for (std.enums.values(Coordinate)) |coordinate| {
        const dims = [_]ResizeDim{
            .{ .in = 2, .out = 2, .scale = 1 },    .{ .in = 3, .out = 3, .scale = 1 },
            .{ .in = 5, .out = 11, .scale = 2.2 }, .{ .in = 7, .out = 4, .scale = 4.0 / 7.0 },
        };
        var planar: [2 * 3 * 11 * 4]f32 = undefined;
        var general: [2 * 3 * 11 * 4]f32 = undefined;
        const args: ResizeArgs = .{ .linear = linear, .coordinate = coordinate, .nearest = .round_prefer_floor, .dims = &dims, .input = &input, .output = &planar };
        try std.testing.expect(resizePlanar(&args, &.{ 2, 3 }, 0, 50));
        try std.testing.expect(resizePlanar(&args, &.{ 2, 3 }, 50, planar.len));
        // The general path: force it with a fake resized batch dim list.
        var general_args = args;
        general_args.output = &general;
        resizeGeneral(&general_args, &ResizeLayout.of(&general_args), 0, general.len);
        for (planar, general) |a, b| try std.testing.expectApproxEqAbs(b, a, 1e-5);
    };
}

test "where, compare and broadcastCopy broadcast like numpy" {
    const cond = [_]i32{ 1, 0 };
    const x = [_]f32{ 1, 2, 3, 4 };
    const y = [_]f32{-1};
    var out: [4]f32 = undefined;
    const shape = [_]usize{ 2, 2 };
    // cond [2, 1] broadcast over columns; y a scalar.
    where(&shape, .{ .bytes = std.mem.sliceAsBytes(&cond), .dtype = .int32, .strides = .{ 1, 0, 0, 0, 0, 0, 0, 0 } }, .{ .bytes = std.mem.sliceAsBytes(&x), .dtype = .float32, .strides = .{ 2, 1, 0, 0, 0, 0, 0, 0 } }, .{ .bytes = std.mem.sliceAsBytes(&y), .dtype = .float32 }, std.mem.sliceAsBytes(&out), 0, 4);
    try std.testing.expectEqualSlices(f32, &.{ 1, 2, -1, -1 }, &out);
    var flags: [4]i32 = undefined;
    compare(.greater, &shape, .{ .bytes = std.mem.sliceAsBytes(&x), .dtype = .float32, .strides = .{ 2, 1, 0, 0, 0, 0, 0, 0 } }, .{ .bytes = std.mem.sliceAsBytes(&[_]f32{2.5}), .dtype = .float32 }, &flags, 0, 4);
    try std.testing.expectEqualSlices(i32, &.{ 0, 0, 1, 1 }, &flags);
    var expanded: [4]f32 = undefined;
    broadcastCopy(&shape, .{ .bytes = std.mem.sliceAsBytes(x[0..2]), .dtype = .float32, .strides = .{ 0, 1, 0, 0, 0, 0, 0, 0 } }, std.mem.sliceAsBytes(&expanded), 1, 4);
    try std.testing.expectEqualSlices(f32, &.{ 2, 1, 2 }, expanded[1..4]);
}

test "cast saturates and maps NaN to zero" {
    const values = [_]f32{ 1.7, -2.5, std.math.nan(f32), 1e30 };
    var out: [4]i32 = undefined;
    cast(.float32, std.mem.sliceAsBytes(&values), .int32, std.mem.sliceAsBytes(&out), false, 0, 4);
    try std.testing.expectEqualSlices(i32, &.{ 1, -2, 0, std.math.maxInt(i32) }, &out);
    cast(.float32, std.mem.sliceAsBytes(&values), .int32, std.mem.sliceAsBytes(&out), true, 0, 4);
    try std.testing.expectEqualSlices(i32, &.{ 1, 1, 1, 1 }, &out);
}

test "pad matches numpy's constant, reflect and edge modes" {
    const x = [_]f32{ 1, 2, 3 };
    const operand: Operand = .{ .bytes = std.mem.sliceAsBytes(&x), .dtype = .float32, .strides = .{ 1, 0, 0, 0, 0, 0, 0, 0 } };
    var out: [7]f32 = undefined;
    const expected = [_][7]f32{ .{ 9, 9, 1, 2, 3, 9, 9 }, .{ 3, 2, 1, 2, 3, 2, 1 }, .{ 1, 1, 1, 2, 3, 3, 3 } };
    for ([_]PadMode{ .constant, .reflect, .edge }, expected) |mode, want| {
        pad(mode, &.{3}, &.{2}, &.{7}, 9, operand, std.mem.sliceAsBytes(&out), 0, 7);
        try std.testing.expectEqualSlices(f32, &want, &out);
    }
}

test "resize: nearest doubles, linear interpolates, against a scalar reference" {
    const x = [_]f32{ 0, 10 };
    var out: [4]f32 = undefined;
    const dims = [_]ResizeDim{.{ .in = 2, .out = 4, .scale = 2 }};
    var args: ResizeArgs = .{ .linear = false, .coordinate = .asymmetric, .nearest = .floor, .dims = &dims, .input = &x, .output = &out };
    resize(&args, 0, 4);
    try std.testing.expectEqualSlices(f32, &.{ 0, 0, 10, 10 }, &out);
    args.linear = true;
    args.coordinate = .half_pixel;
    resize(&args, 0, 4);
    // half_pixel: x = (i + 0.5) / 2 - 0.5 → -0.25, 0.25, 0.75, 1.25 → clamped to [0, 1].
    try std.testing.expectEqualSlices(f32, &.{ 0, 2.5, 7.5, 10 }, &out);
}

test "take copies rows by index" {
    const x = [_]f32{ 1, 2, 3, 4, 5, 6 };
    var out: [4]f32 = undefined;
    take(std.mem.sliceAsBytes(&x), &.{ 2, 0 }, 3, 2 * 4, std.mem.sliceAsBytes(&out), 0, 2);
    try std.testing.expectEqualSlices(f32, &.{ 5, 6, 1, 2 }, &out);
}

test "resize: cubic keeps constants, reproduces ramps inside (a = -0.5), and is separable" {
    // A constant stays constant with edge taps repeated or excluded.
    const flat = [_]f32{ 3, 3, 3, 3, 3 };
    var out: [13]f32 = undefined;
    for ([_]bool{ false, true }) |exclude| {
        const args: ResizeArgs = .{ .linear = false, .cubic = .{ .exclude_outside = exclude }, .coordinate = .half_pixel, .nearest = .floor, .dims = &.{.{ .in = 5, .out = 13, .scale = 2.6 }}, .input = &flat, .output = &out };
        resize(&args, 0, 13);
        for (out) |v| try std.testing.expectApproxEqAbs(@as(f32, 3), v, 1e-5);
    }
    // Keys' kernel with a = -0.5 reproduces x ↦ 2x + 1 wherever all four taps are inside.
    var ramp: [9]f32 = undefined;
    for (&ramp, 0..) |*v, k| v.* = 2 * @as(f32, @floatFromInt(k)) + 1;
    var up: [17]f32 = undefined;
    const dim: ResizeDim = .{ .in = 9, .out = 17, .scale = 17.0 / 9.0 };
    const args: ResizeArgs = .{ .linear = false, .cubic = .{ .a = -0.5 }, .coordinate = .asymmetric, .nearest = .floor, .dims = &.{dim}, .input = &ramp, .output = &up };
    resize(&args, 0, 17);
    for (up, 0..) |v, o| {
        const x = sourceCoordinate(.asymmetric, o, dim);
        if (x < 1 or x > 6.9) continue;
        try std.testing.expectApproxEqAbs(@as(f32, @floatCast(2 * x + 1)), v, 1e-4);
    }
    // 2-D: resizing [3, 4] → [5, 7] equals resizing rows, then columns.
    var grid: [12]f32 = undefined;
    for (&grid, 0..) |*v, k| v.* = @floatFromInt((k * 7) % 5);
    const rows: ResizeDim = .{ .in = 3, .out = 5, .scale = 5.0 / 3.0 };
    const columns: ResizeDim = .{ .in = 4, .out = 7, .scale = 7.0 / 4.0 };
    var both: [35]f32 = undefined;
    resize(&.{ .linear = false, .cubic = .{}, .coordinate = .half_pixel, .nearest = .floor, .dims = &.{ rows, columns }, .input = &grid, .output = &both }, 0, 35);
    var wide: [21]f32 = undefined;
    resize(&.{ .linear = false, .cubic = .{}, .coordinate = .half_pixel, .nearest = .floor, .dims = &.{ .{ .in = 3, .out = 3, .scale = 1 }, columns }, .input = &grid, .output = &wide }, 0, 21);
    var separable: [35]f32 = undefined;
    resize(&.{ .linear = false, .cubic = .{}, .coordinate = .half_pixel, .nearest = .floor, .dims = &.{ rows, .{ .in = 7, .out = 7, .scale = 1 } }, .input = &wide, .output = &separable }, 0, 35);
    for (both, separable) |a, b| try std.testing.expectApproxEqAbs(a, b, 1e-5);
}
