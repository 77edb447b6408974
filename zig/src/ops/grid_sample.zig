//! ONNX GridSample on 4-D inputs (opsets 16 and 20): out[n, c, h, w] samples x[n, c] at the
//! normalised location grid[n, h, w] = (x, y) in [-1, 1], by nearest, bilinear or bicubic
//! (Keys, a = -0.75) interpolation; locations outside read zeros, the border, or the
//! reflection, as ONNX's reference and PyTorch's grid_sampler define them. Every tap is
//! bounds-checked: an out-of-range one reads 0 (zeros) or an index folded into range.
const std = @import("std");
const status = @import("../status.zig");
const tensor = @import("../tensor.zig");
const intra_op = @import("../pool/intra_op.zig");
const parallel = @import("parallel.zig");
const shape_ops = @import("shape.zig");

const Error = status.Error;
const Tensor = tensor.Tensor;

pub const Mode = enum(u8) { nearest, linear, cubic };
pub const Padding = enum(u8) { zeros, border, reflection };

pub const Options = struct {
    mode: Mode = .linear,
    padding: Padding = .zeros,
    align_corners: bool = false,
};

/// One axis: its length and how its coordinates map and fold.
const Axis = struct {
    len: usize,
    options: Options,

    /// A normalised coordinate in pixels.
    fn denormalize(axis: Axis, v: f32) f32 {
        const len: f32 = @floatFromInt(axis.len);
        return if (axis.options.align_corners) (v + 1) / 2 * (len - 1) else ((v + 1) * len - 1) / 2;
    }

    /// The reflection borders: [0, len − 1] with aligned corners, [−0.5, len − 0.5] without.
    fn bounds(axis: Axis) [2]f32 {
        const len: f32 = @floatFromInt(axis.len);
        return if (axis.options.align_corners) .{ 0, len - 1 } else .{ -0.5, len - 0.5 };
    }

    /// A location outside the borders folded in by the padding mode (zeros leaves it). Far
    /// locations (and infinities) are first brought within ±2^40 pixels, where every tap
    /// is still outside and index arithmetic stays exact.
    fn fold(axis: Axis, raw: f32) f32 {
        const v = std.math.clamp(raw, -far, far);
        const b = axis.bounds();
        if (v >= b[0] and v <= b[1]) return v;
        return switch (axis.options.padding) {
            .zeros => v,
            .border => std.math.clamp(v, 0, @as(f32, @floatFromInt(axis.len)) - 1),
            .reflection => reflect(v, b[0], b[1]),
        };
    }

    /// The index of integer tap `i`, or null for a zero (padding zeros, outside).
    fn tap(axis: Axis, i: i64) ?usize {
        const len: i64 = @intCast(axis.len);
        if (i >= 0 and i < len) return @intCast(i);
        return switch (axis.options.padding) {
            .zeros => null,
            .border => @intCast(std.math.clamp(i, 0, len - 1)),
            .reflection => blk: {
                const b = axis.bounds();
                const folded: i64 = @intFromFloat(@trunc(reflect(@floatFromInt(i), b[0], b[1])));
                break :blk @intCast(std.math.clamp(folded, 0, len - 1));
            },
        };
    }
};

const far: f32 = 1 << 40;

/// The integer tap at or below v (v within ±far).
fn floorIndex(v: f32) i64 {
    return @intFromFloat(@floor(std.math.clamp(v, -far, far)));
}

/// Rounds to the nearest integer, ties to even (nearbyint, PyTorch's 2-D nearest).
fn roundEven(v: f32) f32 {
    const r = @round(v);
    if (@abs(v - @trunc(v)) == 0.5 and @mod(r, 2) != 0) return r - std.math.sign(v);
    return r;
}

/// Reflects v by the nearer border until it lies within [low, high] (ONNX's _gs_reflect).
fn reflect(v: f32, low: f32, high: f32) f32 {
    const range = high - low;
    if (range <= 0) return low;
    if (v < low) {
        const d = low - v;
        const flips = @floor(d / range);
        const r = d - flips * range;
        return if (@mod(flips, 2) == 0) low + r else high - r;
    }
    if (v > high) {
        const d = v - high;
        const flips = @floor(d / range);
        const r = d - flips * range;
        return if (@mod(flips, 2) == 0) high - r else low + r;
    }
    return v;
}

fn cubicCoefficients(t: f32) [4]f32 {
    const a: f32 = -0.75;
    const x = @abs(t);
    return .{
        ((a * (x + 1) - 5 * a) * (x + 1) + 8 * a) * (x + 1) - 4 * a,
        ((a + 2) * x - (a + 3)) * x * x + 1,
        ((a + 2) * (1 - x) - (a + 3)) * (1 - x) * (1 - x) + 1,
        ((a * (2 - x) - 5 * a) * (2 - x) + 8 * a) * (2 - x) - 4 * a,
    };
}

/// The sample of plane `plane` ([rows.len × cols.len], row-major) at pixel location (y, x).
fn sample(plane: []const f32, rows: Axis, cols: Axis, y_raw: f32, x_raw: f32) f32 {
    const at = struct {
        fn read(p: []const f32, r: Axis, c: Axis, i: i64, j: i64) f32 {
            const row = r.tap(i) orelse return 0;
            const col = c.tap(j) orelse return 0;
            return p[row * c.len + col];
        }
    }.read;
    switch (rows.options.mode) {
        .nearest => {
            // As the reference: round (ties to even), fold, then truncate to the tap.
            const y = rows.fold(roundEven(std.math.clamp(y_raw, -far, far)));
            const x = cols.fold(roundEven(std.math.clamp(x_raw, -far, far)));
            const i: i64 = @intFromFloat(@trunc(y));
            const j: i64 = @intFromFloat(@trunc(x));
            return at(plane, rows, cols, i, j);
        },
        .linear => {
            const y = rows.fold(y_raw);
            const x = cols.fold(x_raw);
            const i = floorIndex(y);
            const j = floorIndex(x);
            const ty = y - @as(f32, @floatFromInt(i));
            const tx = x - @as(f32, @floatFromInt(j));
            const top = (1 - tx) * at(plane, rows, cols, i, j) + tx * at(plane, rows, cols, i, j + 1);
            const bottom = (1 - tx) * at(plane, rows, cols, i + 1, j) + tx * at(plane, rows, cols, i + 1, j + 1);
            return (1 - ty) * top + ty * bottom;
        },
        .cubic => {
            // As onnxruntime and PyTorch: the location is not folded, each of the 16 taps is
            // (ONNX's reference folds the location first, which differs near the border).
            const y = std.math.clamp(y_raw, -far, far);
            const x = std.math.clamp(x_raw, -far, far);
            const i = floorIndex(y);
            const j = floorIndex(x);
            const cy = cubicCoefficients(y - @as(f32, @floatFromInt(i)));
            const cx = cubicCoefficients(x - @as(f32, @floatFromInt(j)));
            var total: f32 = 0;
            for (0..4) |dy| {
                var row: f32 = 0;
                for (0..4) |dx| row += cx[dx] * at(plane, rows, cols, i - 1 + @as(i64, @intCast(dy)), j - 1 + @as(i64, @intCast(dx)));
                total += cy[dy] * row;
            }
            return total;
        },
    }
}

/// GridSample of x [N, C, H, W] at grid [N, Ho, Wo, 2] (x then y, normalised): [N, C, Ho, Wo].
pub fn gridSample(x_input: *Tensor, grid_input: *Tensor, options: Options) Error!*Tensor {
    if (x_input.dtype != .float32 or grid_input.dtype != .float32) {
        return status.fail(error.DTypeMismatch, "grid_sample: x and grid must be float32, got {s} and {s}", .{ x_input.dtype.name(), grid_input.dtype.name() });
    }
    if (x_input.ndim != 4) {
        return status.fail(error.ShapeMismatch, "grid_sample: x must be 4-D [N, C, H, W] (volumetric inputs are not supported), got shape {f}", .{status.shape(x_input.dims())});
    }
    if (grid_input.ndim != 4 or grid_input.shape[3] != 2 or grid_input.shape[0] != x_input.shape[0]) {
        return status.fail(error.ShapeMismatch, "grid_sample: grid must be [N, H_out, W_out, 2] with N = {d}, got shape {f}", .{ x_input.shape[0], status.shape(grid_input.dims()) });
    }
    for (grid_input.dims()[0..3]) |d| if (d > std.math.maxInt(i32)) {
        return status.fail(error.TooLarge, "grid_sample: grid shape {f} is too large", .{status.shape(grid_input.dims())});
    };
    if (x_input.shape[2] > 1 << 30 or x_input.shape[3] > 1 << 30) {
        return status.fail(error.TooLarge, "grid_sample: x shape {f} is too large", .{status.shape(x_input.dims())});
    }
    const x = try shape_ops.contiguous(x_input);
    defer x.release();
    const grid = try shape_ops.contiguous(grid_input);
    defer grid.release();
    const n = x.shape[0];
    const channels = x.shape[1];
    const out_h = grid.shape[1];
    const out_w = grid.shape[2];
    const out = try tensor.createUninit(.float32, &.{ n, channels, out_h, out_w });
    errdefer out.release();
    const Context = struct {
        x: []const f32,
        grid: []const f32,
        out: []f32,
        channels: usize,
        rows: Axis,
        cols: Axis,
        points: usize,

        fn body(c: *const @This(), begin: usize, end: usize) Error!void {
            const plane_len = c.rows.len * c.cols.len;
            for (begin..end) |plane_index| {
                const batch = plane_index / c.channels;
                const plane = c.x[plane_index * plane_len ..][0..plane_len];
                const points = c.grid[batch * c.points * 2 ..][0 .. c.points * 2];
                const dest = c.out[plane_index * c.points ..][0..c.points];
                for (dest, 0..) |*d, p| {
                    const gx = points[2 * p];
                    const gy = points[2 * p + 1];
                    // A NaN location reads NaN, as the reference's arithmetic does.
                    if (std.math.isNan(gx) or std.math.isNan(gy)) {
                        d.* = std.math.nan(f32);
                        continue;
                    }
                    d.* = sample(plane, c.rows, c.cols, c.rows.denormalize(gy), c.cols.denormalize(gx));
                }
            }
        }
    };
    const points = out_h * out_w;
    const context: Context = .{
        .x = x.f32Slice(),
        .grid = grid.f32Slice(),
        .out = out.f32Slice(),
        .channels = channels,
        .rows = .{ .len = x.shape[2], .options = options },
        .cols = .{ .len = x.shape[3], .options = options },
        .points = points,
    };
    if (n * channels > 0 and points > 0 and x.shape[2] * x.shape[3] == 0) {
        return status.fail(error.ShapeMismatch, "grid_sample: x has an empty plane {f} to sample from", .{status.shape(x.dims())});
    }
    const taps: usize = switch (options.mode) {
        .nearest => 1,
        .linear => 4,
        .cubic => 16,
    };
    try intra_op.parallelForTyped(0, n * channels, parallel.grain(.medium, points * taps), &context, Context.body);
    return out;
}

// ---------------------------------------------------------------------------------------

const testing = std.testing;

test "grid_sample: corners and centre of a 2x2 image in every mode, with and without aligned corners" {
    const x = try tensor.fromF32(&.{ 1, 1, 2, 2 }, &.{ 1, 2, 3, 4 });
    defer x.release();
    // (x, y) = (-1, -1), (1, 1), (0, 0).
    const grid = try tensor.fromF32(&.{ 1, 1, 3, 2 }, &.{ -1, -1, 1, 1, 0, 0 });
    defer grid.release();
    const cases = [_]struct { options: Options, expected: [3]f32 }{
        .{ .options = .{ .align_corners = true }, .expected = .{ 1, 4, 2.5 } },
        // Unaligned: (-1, -1) is pixel (-0.5, -0.5), a quarter of pixel 0 with zeros around.
        .{ .options = .{}, .expected = .{ 0.25, 1, 2.5 } },
        .{ .options = .{ .padding = .border }, .expected = .{ 1, 4, 2.5 } },
        // Nearest rounds ties to even: the centre (0.5, 0.5) is pixel (0, 0).
        .{ .options = .{ .mode = .nearest, .align_corners = true }, .expected = .{ 1, 4, 1 } },
    };
    for (cases) |case| {
        const out = try gridSample(x, grid, case.options);
        defer out.release();
        try testing.expectEqualSlices(usize, &.{ 1, 1, 1, 3 }, out.dims());
        for (case.expected, out.f32Slice()) |want, got| try testing.expectApproxEqAbs(want, got, 1e-6);
    }
}

test "grid_sample: reflection folds back in, and cubic reproduces a linear ramp inside" {
    try testing.expectApproxEqAbs(@as(f32, 0.5), reflect(-0.5, 0, 3), 1e-6);
    try testing.expectApproxEqAbs(@as(f32, 2.0), reflect(4, 0, 3), 1e-6);
    try testing.expectApproxEqAbs(@as(f32, 1.0), reflect(7, 0, 3), 1e-6);
    const ramp = try tensor.fromF32(&.{ 1, 1, 1, 6 }, &.{ 0, 1, 2, 3, 4, 5 });
    defer ramp.release();
    // Aligned: x = 0.2 is pixel 3; cubic reproduces linear data away from the edges.
    const grid = try tensor.fromF32(&.{ 1, 1, 1, 2 }, &.{ 0.2, 0 });
    defer grid.release();
    const out = try gridSample(ramp, grid, .{ .mode = .cubic, .align_corners = true });
    defer out.release();
    try testing.expectApproxEqAbs(@as(f32, 3), out.f32Slice()[0], 1e-5);
}

test "grid_sample refuses bad shapes and dtypes with typed errors" {
    const x = try tensor.fromF32(&.{ 1, 1, 2, 2 }, &.{ 1, 2, 3, 4 });
    defer x.release();
    const bad_grid = try tensor.fromF32(&.{ 1, 1, 1, 3 }, &.{ 0, 0, 0 });
    defer bad_grid.release();
    try testing.expectError(error.ShapeMismatch, gridSample(x, bad_grid, .{}));
    const other_batch = try tensor.fromF32(&.{ 2, 1, 1, 2 }, &.{ 0, 0, 0, 0 });
    defer other_batch.release();
    try testing.expectError(error.ShapeMismatch, gridSample(x, other_batch, .{}));
    const flat = try tensor.fromF32(&.{ 4, 1 }, &.{ 1, 2, 3, 4 });
    defer flat.release();
    try testing.expectError(error.ShapeMismatch, gridSample(flat, bad_grid, .{}));
}
