//! 2-D pooling kernels, NCHW float32, one output row of one plane per call: max pooling
//! (with dilation), average pooling (PyTorch's count_include_pad and divisor rules) and
//! adaptive average pooling. ops/pooling.zig checks the shapes and splits rows over the
//! intra-op pool. The references at the bottom are direct loops written from PyTorch's
//! definitions, independent of the window arithmetic the kernels share with conv.zig.
const std = @import("std");
const conv = @import("conv.zig");

pub const Window = conv.Window;

/// Max over the window of each output in row `oy`; positions in the padding are skipped
/// (never chosen), NaN wins as in PyTorch.
pub fn maxPoolRow(window: Window, plane: []const f32, oy: usize, output: []f32) void {
    std.debug.assert(plane.len == window.imagePlane());
    std.debug.assert(output.len == window.grid[1]);
    std.debug.assert(oy < window.grid[0]);
    const width = window.image[1];
    if (isPairs(window)) {
        const top = plane[2 * oy * width ..][0..width];
        return maxPoolPairs(top, plane[(2 * oy + 1) * width ..][0..width], output);
    }
    const rows = window.tapSpan(0, oy);
    // Interior: positions whose every tap along the width lies inside the row.
    const first_tap = window.span(1, 0);
    const last_tap = window.span(1, window.kernel[1] - 1);
    const inner: conv.Span = .{ .begin = first_tap.begin, .end = @max(first_tap.begin, last_tap.end) };
    const done: conv.Span = .{ .begin = inner.begin, .end = switch (window.stride[1]) {
        inline 1, 2 => |stride| maxPoolInterior(stride, window, plane, oy, rows, inner, output),
        else => inner.begin,
    } };
    for (output, 0..) |*out, ox| {
        if (done.contains(ox)) continue;
        const cols = window.tapSpan(1, ox);
        var best = -std.math.inf(f32);
        for (rows.begin..rows.end) |ky| {
            const row = plane[window.imageIndex(0, oy, ky) * width ..][0..width];
            for (cols.begin..cols.end) |kx| {
                const x = row[window.imageIndex(1, ox, kx)];
                if (x > best or std.math.isNan(x)) best = x;
            }
        }
        out.* = best;
    }
}

const lanes = @import("math.zig").lanes;
const V = @Vector(lanes, f32);

/// A 2 × 2 window at stride 2 with no padding or dilation, every window inside the image
/// (floor mode, or even sizes): cls's max pool on 200 × 2 × 96 planes.
fn isPairs(window: Window) bool {
    return window.kernel[0] == 2 and window.kernel[1] == 2 and window.stride[0] == 2 and window.stride[1] == 2 and
        window.padding[0] == 0 and window.padding[1] == 0 and window.dilation[0] == 1 and window.dilation[1] == 1 and
        2 * window.grid[0] <= window.image[0] and 2 * window.grid[1] <= window.image[1];
}

/// max(a, b) with NaN winning, as the pooling rows scan a window: b replaces a when greater
/// or NaN.
inline fn maxNan(a: V, b: V) V {
    return @select(f32, b != b, b, @select(f32, b > a, b, a));
}

/// One output row of a 2 × 2, stride-2 max pool from its two input rows: the rows' maxima,
/// then the maxima of their even and odd columns, 16 outputs from 4 loads and 4 shuffles
/// (the general row path paid the window arithmetic and strided loads per tap: cls's
/// 200 × 2 × 96 → 1 × 48 pool took 70 µs at batch 8). Taps compare in the general path's
/// order (row by row, column by column), so NaN payloads and signed zeros come out the same.
fn maxPoolPairs(top: []const f32, bottom: []const f32, output: []f32) void {
    std.debug.assert(top.len == bottom.len and 2 * output.len <= top.len);
    const even = comptime conv.stridedMask(2);
    const odd = comptime odd: {
        var mask = conv.stridedMask(2);
        for (&mask) |*m| m.* += 1;
        break :odd mask;
    };
    var ox: usize = 0;
    while (ox + lanes <= output.len) : (ox += lanes) {
        const t: @Vector(2 * lanes, f32) = top[2 * ox ..][0 .. 2 * lanes].*;
        const b: @Vector(2 * lanes, f32) = bottom[2 * ox ..][0 .. 2 * lanes].*;
        // Window order: (0, 0), (0, 1), (1, 0), (1, 1).
        const top_max = maxNan(@shuffle(f32, t, undefined, even), @shuffle(f32, t, undefined, odd));
        const with_bottom = maxNan(top_max, @shuffle(f32, b, undefined, even));
        output[ox..][0..lanes].* = maxNan(with_bottom, @shuffle(f32, b, undefined, odd));
    }
    while (ox < output.len) : (ox += 1) {
        var best = -std.math.inf(f32);
        for ([_]f32{ top[2 * ox], top[2 * ox + 1], bottom[2 * ox], bottom[2 * ox + 1] }) |x| {
            if (x > best or std.math.isNan(x)) best = x;
        }
        output[ox] = best;
    }
}

/// Whole vectors of interior outputs from `inner.begin` on, each tap one strided vector
/// load; returns where it stopped (the rest of `inner` goes point by point).
fn maxPoolInterior(comptime stride: usize, window: Window, plane: []const f32, oy: usize, rows: conv.Span, inner: conv.Span, output: []f32) usize {
    const width = window.image[1];
    var ox = inner.begin;
    while (ox + lanes <= inner.end) : (ox += lanes) {
        var best: V = @splat(-std.math.inf(f32));
        for (rows.begin..rows.end) |ky| {
            const row = plane[window.imageIndex(0, oy, ky) * width ..][0..width];
            for (0..window.kernel[1]) |kx| {
                best = maxNan(best, conv.stridedLoad(stride, row, window.imageIndex(1, ox, kx)));
            }
        }
        output[ox..][0..lanes].* = best;
    }
    return ox;
}

pub const AverageOptions = struct {
    count_include_pad: bool,
    /// Divides every window sum by this instead of the window size (PyTorch's divisor_override).
    divisor: ?f32 = null,
};

/// The window of one output along one axis, PyTorch's way: `padded` is clipped to the
/// padded image only (its length is the count_include_pad divisor), `inside` to the image.
const AverageWindow = struct { padded: usize, inside: conv.Span };

fn averageWindow(position: usize, image: usize, kernel: usize, stride: usize, padding: usize) AverageWindow {
    // In padded coordinates (image index + padding) the window is [start, start + kernel).
    const start = position * stride;
    const end = @min(start + kernel, image + 2 * padding);
    const inside_begin = std.math.clamp(start, padding, padding + image) - padding;
    const inside_end = std.math.clamp(end, padding, padding + image) - padding;
    return .{ .padded = end -| start, .inside = .{ .begin = inside_begin, .end = @max(inside_begin, inside_end) } };
}

/// Widths up to this many floats sum their window rows in a stack buffer (`avgPoolRow`).
const column_sum_capacity = 2048;

/// Average of each output's window in row `oy` (no dilation: PyTorch's avg_pool2d has none).
/// The window's rows are first added column by column in vectors, then each output sums its
/// columns of that row: rec's [3, 2] windows over 480 planes of 3 × 80 took 9 ns per output
/// one window at a time, every row of every window walked anew.
pub fn avgPoolRow(window: Window, plane: []const f32, oy: usize, options: AverageOptions, output: []f32) void {
    std.debug.assert(plane.len == window.imagePlane());
    std.debug.assert(output.len == window.grid[1]);
    std.debug.assert(window.dilation[0] == 1 and window.dilation[1] == 1);
    const width = window.image[1];
    const rows = averageWindow(oy, window.image[0], window.kernel[0], window.stride[0], window.padding[0]);
    const row_count = rows.inside.end - rows.inside.begin;
    if (row_count == 0) return @memset(output, 0);
    var buffer: [column_sum_capacity]f32 = undefined;
    const column_sums: []const f32 = if (row_count == 1) plane[rows.inside.begin * width ..][0..width] else if (width <= column_sum_capacity) blk: {
        const sums = buffer[0..width];
        @memcpy(sums, plane[rows.inside.begin * width ..][0..width]);
        for (rows.inside.begin + 1..rows.inside.end) |iy| addRow(sums, plane[iy * width ..][0..width]);
        break :blk sums;
    } else return avgPoolRowDirect(window, plane, rows, options, output);
    const kernel = window.kernel[1];
    const stride = window.stride[1];
    const padding = window.padding[1];
    // Outputs whose windows lie wholly inside the row, [inner_begin, inner_end), share one
    // divisor and run in vectors (stride 1 and 2); the others one by one.
    const inner_begin = @min(output.len, (padding + stride - 1) / stride);
    const inner_end = if (width + padding >= kernel) @min(output.len, (width + padding - kernel) / stride + 1) else 0;
    var ox: usize = 0;
    if (inner_begin < inner_end and stride <= 2) {
        averageColumns(window, column_sums, rows, row_count, options, 0, inner_begin, output);
        const count = if (options.count_include_pad) rows.padded * kernel else row_count * kernel;
        const divisor: V = @splat(options.divisor orelse @as(f32, @floatFromInt(count)));
        ox = switch (stride) {
            inline 1, 2 => |s| averageInterior(s, column_sums, kernel, padding, divisor, inner_begin, inner_end, output),
            else => unreachable,
        };
    }
    averageColumns(window, column_sums, rows, row_count, options, ox, output.len, output);
}

/// Outputs [begin, end) of a row from its column sums, one window at a time.
fn averageColumns(window: Window, column_sums: []const f32, rows: AverageWindow, row_count: usize, options: AverageOptions, begin: usize, end: usize, output: []f32) void {
    for (output[begin..end], begin..) |*out, ox| {
        const cols = averageWindow(ox, window.image[1], window.kernel[1], window.stride[1], window.padding[1]);
        if (cols.inside.end == cols.inside.begin) {
            out.* = 0;
            continue;
        }
        var sum: f32 = 0;
        for (column_sums[cols.inside.begin..cols.inside.end]) |x| sum += x;
        out.* = average(sum, row_count * (cols.inside.end - cols.inside.begin), rows.padded * cols.padded, options);
    }
}

/// A window's sum over its divisor: the given one, else the count of its taps inside the
/// image (`inside`) or, counting the padding, all of them (`padded`).
fn average(sum: f32, inside: usize, padded: usize, options: AverageOptions) f32 {
    const count = if (options.count_include_pad) padded else inside;
    return sum / (options.divisor orelse @as(f32, @floatFromInt(count)));
}

/// Outputs from `begin` while whole vectors fit before `end`, whose windows lie inside the
/// row: the same sums in the same order as averageColumns, 16 outputs at a time (taps of
/// `stride` 2 are the even lanes of two vectors). Returns the first output not computed.
fn averageInterior(comptime stride: usize, column_sums: []const f32, kernel: usize, padding: usize, divisor: V, begin: usize, end: usize, output: []f32) usize {
    const even = comptime blk: {
        var mask: [lanes]i32 = undefined;
        for (&mask, 0..) |*m, i| m.* = 2 * i;
        break :blk mask;
    };
    var ox = begin;
    while (ox + lanes <= end) : (ox += lanes) {
        const start = ox * stride - padding;
        // The last tap's vector reads lanes · stride floats.
        if (start + kernel - 1 + lanes * stride > column_sums.len) break;
        var sum: V = @splat(0);
        for (0..kernel) |kx| {
            const taps = column_sums[start + kx ..][0 .. lanes * stride];
            sum += if (stride == 1) taps[0..lanes].* else @shuffle(f32, @as(@Vector(2 * lanes, f32), taps[0 .. 2 * lanes].*), undefined, even);
        }
        output[ox..][0..lanes].* = sum / divisor;
    }
    return ox;
}

/// sums[i] += row[i], in vectors.
fn addRow(sums: []f32, row: []const f32) void {
    var i: usize = 0;
    while (i + lanes <= sums.len) : (i += lanes) {
        sums[i..][0..lanes].* = @as(V, sums[i..][0..lanes].*) + @as(V, row[i..][0..lanes].*);
    }
    while (i < sums.len) : (i += 1) sums[i] += row[i];
}

/// avgPoolRow for rows wider than its buffer: each window summed where it lies.
fn avgPoolRowDirect(window: Window, plane: []const f32, rows: AverageWindow, options: AverageOptions, output: []f32) void {
    const width = window.image[1];
    for (output, 0..) |*out, ox| {
        const cols = averageWindow(ox, width, window.kernel[1], window.stride[1], window.padding[1]);
        const inside_count = (rows.inside.end - rows.inside.begin) * (cols.inside.end - cols.inside.begin);
        if (inside_count == 0) {
            out.* = 0;
            continue;
        }
        var sum: f32 = 0;
        for (rows.inside.begin..rows.inside.end) |iy| {
            for (plane[iy * width + cols.inside.begin .. iy * width + cols.inside.end]) |x| sum += x;
        }
        out.* = average(sum, inside_count, rows.padded * cols.padded, options);
    }
}

/// The input range [floor(o·in/out), ceil((o+1)·in/out)) pooled into adaptive output o.
/// The op checks that out·in does not overflow.
pub fn adaptiveRange(position: usize, input_size: usize, output_size: usize) conv.Span {
    std.debug.assert(position < output_size);
    const begin = position * input_size / output_size;
    const end = std.math.divCeil(usize, (position + 1) * input_size, output_size) catch unreachable;
    return .{ .begin = begin, .end = end };
}

/// Adaptive average pooling of row `oy` of a [in_height, in_width] plane into `output`
/// (one row of an [out_height, output.len] grid).
pub fn adaptiveAvgRow(plane: []const f32, in_height: usize, in_width: usize, out_height: usize, oy: usize, output: []f32) void {
    std.debug.assert(plane.len == in_height * in_width);
    const rows = adaptiveRange(oy, in_height, out_height);
    for (output, 0..) |*out, ox| {
        const cols = adaptiveRange(ox, in_width, output.len);
        var sum: f32 = 0;
        for (rows.begin..rows.end) |iy| {
            for (plane[iy * in_width + cols.begin .. iy * in_width + cols.end]) |x| sum += x;
        }
        out.* = sum / @as(f32, @floatFromInt((rows.end - rows.begin) * (cols.end - cols.begin)));
    }
}

/// Max pooling of one plane by the definition: every tap, bounds-checked in signed arithmetic.
pub fn referenceMaxPool(window: Window, plane: []const f32, output: []f32) void {
    for (0..window.grid[0]) |oy| for (0..window.grid[1]) |ox| {
        var best = -std.math.inf(f64);
        for (0..window.kernel[0]) |ky| for (0..window.kernel[1]) |kx| {
            const iy = @as(i64, @intCast(oy * window.stride[0] + ky * window.dilation[0])) - @as(i64, @intCast(window.padding[0]));
            const ix = @as(i64, @intCast(ox * window.stride[1] + kx * window.dilation[1])) - @as(i64, @intCast(window.padding[1]));
            if (iy < 0 or ix < 0 or iy >= window.image[0] or ix >= window.image[1]) continue;
            const x: f64 = plane[@as(usize, @intCast(iy)) * window.image[1] + @as(usize, @intCast(ix))];
            if (x > best or std.math.isNan(x)) best = x;
        };
        output[oy * window.grid[1] + ox] = @floatCast(best);
    };
}

/// Average pooling of one plane, following PyTorch's kernel line by line (signed starts,
/// ends clipped to the padded size, then to the image).
pub fn referenceAvgPool(window: Window, plane: []const f32, options: AverageOptions, output: []f32) void {
    const height: i64 = @intCast(window.image[0]);
    const width: i64 = @intCast(window.image[1]);
    const pad_h: i64 = @intCast(window.padding[0]);
    const pad_w: i64 = @intCast(window.padding[1]);
    for (0..window.grid[0]) |oy| for (0..window.grid[1]) |ox| {
        var h_start = @as(i64, @intCast(oy * window.stride[0])) - pad_h;
        var w_start = @as(i64, @intCast(ox * window.stride[1])) - pad_w;
        var h_end = @min(h_start + @as(i64, @intCast(window.kernel[0])), height + pad_h);
        var w_end = @min(w_start + @as(i64, @intCast(window.kernel[1])), width + pad_w);
        const pool_size = (h_end - h_start) * (w_end - w_start);
        h_start = @max(h_start, 0);
        w_start = @max(w_start, 0);
        h_end = @min(h_end, height);
        w_end = @min(w_end, width);
        const index = oy * window.grid[1] + ox;
        if (h_start >= h_end or w_start >= w_end) {
            output[index] = 0;
            continue;
        }
        var sum: f64 = 0;
        var y = h_start;
        while (y < h_end) : (y += 1) {
            var x = w_start;
            while (x < w_end) : (x += 1) sum += plane[@intCast(y * width + x)];
        }
        const count: f64 = @floatFromInt(if (options.count_include_pad) pool_size else (h_end - h_start) * (w_end - w_start));
        output[index] = @floatCast(sum / (if (options.divisor) |d| @as(f64, d) else count));
    };
}

/// Adaptive average pooling of one plane with floor/ceil computed in floating point.
pub fn referenceAdaptiveAvg(plane: []const f32, in_height: usize, in_width: usize, out_height: usize, out_width: usize, output: []f32) void {
    const scale_h = @as(f64, @floatFromInt(in_height)) / @as(f64, @floatFromInt(out_height));
    const scale_w = @as(f64, @floatFromInt(in_width)) / @as(f64, @floatFromInt(out_width));
    for (0..out_height) |oy| for (0..out_width) |ox| {
        const y0: usize = @intFromFloat(@floor(@as(f64, @floatFromInt(oy)) * scale_h));
        const y1: usize = @intFromFloat(@ceil(@as(f64, @floatFromInt(oy + 1)) * scale_h));
        const x0: usize = @intFromFloat(@floor(@as(f64, @floatFromInt(ox)) * scale_w));
        const x1: usize = @intFromFloat(@ceil(@as(f64, @floatFromInt(ox + 1)) * scale_w));
        var sum: f64 = 0;
        for (y0..y1) |y| for (x0..x1) |x| {
            sum += plane[y * in_width + x];
        };
        output[oy * out_width + ox] = @floatCast(sum / @as(f64, @floatFromInt((y1 - y0) * (x1 - x0))));
    };
}

const testing = std.testing;

/// PyTorch's pooling output size (the op computes it with overflow checks).
fn poolOutput(image: usize, kernel: usize, stride: usize, padding: usize, dilation: usize, ceil_mode: bool) usize {
    const span = image + 2 * padding - dilation * (kernel - 1) - 1 + (if (ceil_mode) stride - 1 else 0);
    var size = span / stride + 1;
    if (ceil_mode and (size - 1) * stride >= image + padding) size -= 1;
    return size;
}

const PoolCase = struct {
    image: [2]usize,
    kernel: [2]usize,
    stride: [2]usize,
    padding: [2]usize = .{ 0, 0 },
    dilation: [2]usize = .{ 1, 1 },
    ceil_mode: bool = false,

    fn window(case: PoolCase) Window {
        var grid: [2]usize = undefined;
        for (0..2) |axis| grid[axis] = poolOutput(case.image[axis], case.kernel[axis], case.stride[axis], case.padding[axis], case.dilation[axis], case.ceil_mode);
        return .{ .image = case.image, .grid = grid, .kernel = case.kernel, .stride = case.stride, .padding = case.padding, .dilation = case.dilation };
    }
};

const pool_cases = [_]PoolCase{
    .{ .image = .{ 1, 1 }, .kernel = .{ 1, 1 }, .stride = .{ 1, 1 } },
    .{ .image = .{ 7, 11 }, .kernel = .{ 3, 3 }, .stride = .{ 2, 2 }, .padding = .{ 1, 1 } },
    .{ .image = .{ 7, 11 }, .kernel = .{ 3, 3 }, .stride = .{ 2, 2 }, .padding = .{ 1, 1 }, .ceil_mode = true },
    .{ .image = .{ 5, 5 }, .kernel = .{ 2, 2 }, .stride = .{ 2, 2 }, .ceil_mode = true },
    .{ .image = .{ 6, 6 }, .kernel = .{ 3, 3 }, .stride = .{ 4, 4 }, .padding = .{ 1, 1 }, .ceil_mode = true },
    .{ .image = .{ 4, 13 }, .kernel = .{ 3, 2 }, .stride = .{ 3, 5 }, .padding = .{ 1, 1 }, .ceil_mode = true },
    .{ .image = .{ 2, 3 }, .kernel = .{ 2, 3 }, .stride = .{ 1, 1 }, .padding = .{ 1, 1 } },
    // Rows wide enough for whole vectors of interior outputs, stride 1 and 2.
    .{ .image = .{ 3, 70 }, .kernel = .{ 2, 2 }, .stride = .{ 2, 2 } },
    .{ .image = .{ 4, 53 }, .kernel = .{ 3, 3 }, .stride = .{ 1, 1 }, .padding = .{ 1, 1 } },
    .{ .image = .{ 5, 41 }, .kernel = .{ 3, 3 }, .stride = .{ 2, 2 }, .padding = .{ 1, 1 }, .ceil_mode = true },
    // rec's [3, 2] windows, and one-row windows.
    .{ .image = .{ 3, 80 }, .kernel = .{ 3, 2 }, .stride = .{ 3, 2 } },
    // Rows with vector interiors beside padded edges, stride 1 and 2.
    .{ .image = .{ 2, 150 }, .kernel = .{ 2, 3 }, .stride = .{ 1, 1 }, .padding = .{ 1, 1 } },
    .{ .image = .{ 2, 151 }, .kernel = .{ 2, 5 }, .stride = .{ 1, 2 }, .padding = .{ 0, 2 } },
    .{ .image = .{ 4, 35 }, .kernel = .{ 1, 3 }, .stride = .{ 1, 2 }, .padding = .{ 0, 1 } },
    // Stride 2 at widths where the last vector's taps end at the row's end: cls's 2×2 on
    // 2×96, and a 3-wide window on an odd width.
    .{ .image = .{ 2, 96 }, .kernel = .{ 2, 2 }, .stride = .{ 2, 2 } },
    // 2 × 2 at stride 2 on odd sizes (the last row and column left out) and two vectors
    // and a tail of outputs per row.
    .{ .image = .{ 5, 75 }, .kernel = .{ 2, 2 }, .stride = .{ 2, 2 } },
    .{ .image = .{ 4, 100 }, .kernel = .{ 2, 2 }, .stride = .{ 2, 2 } },
    .{ .image = .{ 3, 99 }, .kernel = .{ 1, 3 }, .stride = .{ 1, 2 } },
};

test "max pooling rows match the reference, with dilation and NaN" {
    var prng = std.Random.DefaultPrng.init(21);
    var plane: [512]f32 = undefined;
    var expected: [512]f32 = undefined;
    var row: [160]f32 = undefined;
    for (pool_cases) |case| for ([_][2]usize{ .{ 1, 1 }, .{ 2, 1 }, .{ 1, 2 } }) |dilation| {
        var with_dilation = case;
        with_dilation.dilation = dilation;
        const fits = for (0..2) |axis| {
            const extent = (case.kernel[axis] - 1) * dilation[axis] + 1;
            if (case.padding[axis] * 2 > extent or extent > case.image[axis] + 2 * case.padding[axis]) break false;
        } else true;
        if (!fits) continue;
        const window = with_dilation.window();
        const input = plane[0..window.imagePlane()];
        for (input) |*x| x.* = prng.random().float(f32) * 2 - 1;
        if (input.len > 3) input[3] = std.math.nan(f32);
        if (input.len > 100) input[100] = std.math.nan(f32); // inside the vector interior
        referenceMaxPool(window, input, &expected);
        for (0..window.grid[0]) |oy| {
            maxPoolRow(window, input, oy, row[0..window.grid[1]]);
            for (row[0..window.grid[1]], expected[oy * window.grid[1] ..][0..window.grid[1]]) |got, want| {
                if (std.math.isNan(want)) try testing.expect(std.math.isNan(got)) else try testing.expectEqual(want, got);
            }
        }
    };
}

test "average pooling rows match PyTorch's rules for padding, ceil mode and divisors" {
    var prng = std.Random.DefaultPrng.init(22);
    var plane: [512]f32 = undefined;
    var expected: [512]f32 = undefined;
    var row: [160]f32 = undefined;
    for (pool_cases) |case| for ([_]bool{ false, true }) |include_pad| for ([_]?f32{ null, 3 }) |divisor| {
        const window = case.window();
        const input = plane[0..window.imagePlane()];
        for (input) |*x| x.* = prng.random().float(f32) * 2 - 1;
        const options: AverageOptions = .{ .count_include_pad = include_pad, .divisor = divisor };
        referenceAvgPool(window, input, options, &expected);
        for (0..window.grid[0]) |oy| {
            avgPoolRow(window, input, oy, options, row[0..window.grid[1]]);
            for (row[0..window.grid[1]], expected[oy * window.grid[1] ..][0..window.grid[1]]) |got, want| {
                try testing.expectApproxEqAbs(want, got, 1e-6);
            }
        }
    };
}

test "average pooling rows wider than the column-sum buffer match the reference" {
    var prng = std.Random.DefaultPrng.init(24);
    const case: PoolCase = .{ .image = .{ 3, column_sum_capacity + 37 }, .kernel = .{ 3, 3 }, .stride = .{ 2, 2 }, .padding = .{ 1, 1 } };
    const window = case.window();
    const input = try testing.allocator.alloc(f32, window.imagePlane());
    defer testing.allocator.free(input);
    const expected = try testing.allocator.alloc(f32, window.grid[0] * window.grid[1]);
    defer testing.allocator.free(expected);
    const row = try testing.allocator.alloc(f32, window.grid[1]);
    defer testing.allocator.free(row);
    for (input) |*x| x.* = prng.random().float(f32) * 2 - 1;
    for ([_]bool{ false, true }) |include_pad| {
        const options: AverageOptions = .{ .count_include_pad = include_pad };
        referenceAvgPool(window, input, options, expected);
        for (0..window.grid[0]) |oy| {
            avgPoolRow(window, input, oy, options, row);
            for (row, expected[oy * window.grid[1] ..][0..window.grid[1]]) |got, want| try testing.expectApproxEqAbs(want, got, 1e-6);
        }
    }
}

test "adaptive average rows match the reference when shrinking and growing" {
    var prng = std.Random.DefaultPrng.init(23);
    var plane: [512]f32 = undefined;
    var expected: [512]f32 = undefined;
    var row: [160]f32 = undefined;
    const cases = [_][4]usize{ .{ 7, 11, 3, 4 }, .{ 5, 5, 5, 5 }, .{ 4, 4, 1, 1 }, .{ 3, 5, 7, 8 }, .{ 1, 1, 2, 3 }, .{ 13, 2, 5, 2 } };
    for (cases) |case| {
        const input = plane[0 .. case[0] * case[1]];
        for (input) |*x| x.* = prng.random().float(f32) * 2 - 1;
        referenceAdaptiveAvg(input, case[0], case[1], case[2], case[3], &expected);
        for (0..case[2]) |oy| {
            adaptiveAvgRow(input, case[0], case[1], case[2], oy, row[0..case[3]]);
            for (row[0..case[3]], expected[oy * case[3] ..][0..case[3]]) |got, want| try testing.expectApproxEqAbs(want, got, 1e-6);
        }
    }
}
