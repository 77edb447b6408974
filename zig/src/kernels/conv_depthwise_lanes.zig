//! Depthwise convolution with channels in the vector lanes, for maps with short rows (the
//! 5 × 5 and 3 × 3 depthwise layers of mobile networks at 10 × 10 to 40 × 40).
//!
//! The plane kernels (conv_depthwise.zig) put output columns in the lanes: a 10-column row
//! fills 10 of 16 lanes, every tap of every vector needs its own unaligned load, and the
//! per-plane copy and packing cost as much as the arithmetic of a 100-position plane. Here a
//! block of 16 channels is transposed once into a zero-padded [row][column][16 channels]
//! copy, so that one tap of one output position is one FMA of a whole vector (16 channels)
//! by that tap's 16 weights, with no wasted lane; 16 (or 8, or 4) output columns of a row
//! are summed at a time in registers, each tap's weight vector loaded once for all of them.
//! The sums, after the epilogue, are transposed back to 16 rows of channels and stored into
//! the NCHW output planes.
//!
//! The padding of the copy is zeroed once per worker (`prepare`): `block` rewrites only the
//! positions the image lands on, in all 16 lanes (zeros past the block's channels).
//!
//! AVX-512 only (`applies`): with 8-lane registers the 16 sums of 16 lanes would spill.
const std = @import("std");
const builtin = @import("builtin");
const math = @import("math.zig");
const conv = @import("conv.zig");

pub const lanes = math.lanes;
const V = math.V;
const Window = conv.Window;
const Epilogue = conv.Epilogue;

const has_avx512 = builtin.cpu.arch == .x86_64 and std.Target.x86.featureSetHas(builtin.cpu.features, .avx512f);

/// Most taps (7 × 7): the weight vectors of a block live in a stack array.
pub const taps_max = 49;

/// Whether `block` handles this window (any padding and dilation; column stride 1 or 2).
pub fn applies(window: Window) bool {
    return has_avx512 and window.taps() <= taps_max and window.stride[1] >= 1 and window.stride[1] <= 2 and
        window.stride[0] >= 1 and window.grid[0] > 0 and window.grid[1] > 0;
}

/// Output columns summed together at `remaining` columns from a row's end: 16 while 12 or
/// more remain, then 8, then 4 (a 10-column row computes 8 + 4, a 20-column one 16 + 4).
fn chunkColumns(remaining: usize) usize {
    return if (remaining >= 12) 16 else if (remaining > 4) 8 else 4;
}

/// What every block of one call shares.
pub const Plan = struct {
    window: Window,
    /// Positions per row of the padded copy: every column the computed chunks read.
    width: usize,
    /// Rows of the padded copy: every row the output rows read.
    height: usize,
    /// Position offset in the copy of each tap (row-major over the kernel) from the tap (0, 0).
    offsets: [taps_max]usize,
    /// Positions of the flat output buffer: the output plane rounded up to whole transposes,
    /// and the few columns the last row's chunks compute past the row.
    flat: usize,

    pub fn of(window: Window) Plan {
        std.debug.assert(applies(window));
        var computed: usize = 0;
        while (computed < window.grid[1]) computed += chunkColumns(window.grid[1] - computed);
        const width = (computed - 1) * window.stride[1] + (window.kernel[1] - 1) * window.dilation[1] + 1;
        const height = (window.grid[0] - 1) * window.stride[0] + (window.kernel[0] - 1) * window.dilation[0] + 1;
        const flat = std.mem.alignForward(usize, window.gridPlane() + computed - window.grid[1], lanes);
        var plan: Plan = .{ .window = window, .width = width, .height = height, .offsets = undefined, .flat = flat };
        for (0..window.kernel[0]) |ky| for (0..window.kernel[1]) |kx| {
            plan.offsets[ky * window.kernel[1] + kx] = ky * window.dilation[0] * width + kx * window.dilation[1];
        };
        return plan;
    }

    /// Floats of one worker's scratch: the padded copy, then the flat output.
    pub fn scratchFloats(plan: *const Plan) usize {
        return (plan.height * plan.width + plan.flat) * lanes;
    }
};

/// Zeroes a worker's padded copy once: the padding positions are never written after.
pub fn prepare(plan: *const Plan, scratch: []f32) void {
    @memset(scratch[0 .. plan.height * plan.width * lanes], 0);
}

/// The output planes of `count` (1…16) consecutive channels: `input` starts at the first
/// channel's image plane (it may run on past the block: reads beyond its last plane stay
/// inside it), `weights` holds count · taps values, `bias` count values or none, `output`
/// count output planes.
pub fn block(plan: *const Plan, input: []const f32, count: usize, weights: []const f32, bias: ?[]const f32, epilogue: Epilogue, scratch: []f32, output: []f32) void {
    const window = plan.window;
    const taps = window.taps();
    std.debug.assert(count >= 1 and count <= lanes);
    std.debug.assert(input.len >= count * window.imagePlane());
    std.debug.assert(weights.len >= count * taps);
    std.debug.assert(output.len == count * window.gridPlane());
    const area = scratch[0 .. plan.height * plan.width * lanes];
    const flat = scratch[area.len..][0 .. plan.flat * lanes];
    fill(plan, input, count, area);
    var tap_vectors: [taps_max]V = undefined;
    for (0..taps) |t| {
        var values: [lanes]f32 = @splat(0);
        for (0..count) |c| values[c] = weights[c * taps + t];
        tap_vectors[t] = values;
    }
    var bias_values: [lanes]f32 = @splat(0);
    if (bias) |values| for (0..count) |c| {
        bias_values[c] = values[c];
    };
    switch (window.stride[1]) {
        1 => outputRows(1, plan, &tap_vectors, bias_values, epilogue, area, flat),
        2 => outputRows(2, plan, &tap_vectors, bias_values, epilogue, area, flat),
        else => unreachable,
    }
    unpack(plan, flat, count, output);
}

/// Copies the image positions the output reads into `area`, channels into lanes: 16 flat
/// positions of the image planes (across row ends) of 16 channels at a time through one
/// transpose, each position then stored at its padded row and column.
fn fill(plan: *const Plan, input: []const f32, count: usize, area: []f32) void {
    const window = plan.window;
    const rows = @min(window.image[0], plan.height -| window.padding[0]);
    const columns = @min(window.image[1], plan.width -| window.padding[1]);
    const plane = window.imagePlane();
    const positions = rows * window.image[1];
    var iy: usize = 0;
    var ix: usize = 0;
    var q: usize = 0;
    while (q < positions) : (q += lanes) {
        const valid = @min(lanes, positions - q);
        var by_channel: [lanes]V = @splat(@splat(0));
        for (0..count) |c| {
            const at = c * plane + q;
            // Lanes past `valid` hold the next plane's floats (or zeros at the input's end):
            // their transposed positions are not stored.
            if (at + lanes <= input.len) {
                by_channel[c] = input[at..][0..lanes].*;
            } else {
                var values: [lanes]f32 = @splat(0);
                @memcpy(values[0..valid], input[at..][0..valid]);
                by_channel[c] = values;
            }
        }
        const by_position = transpose(by_channel);
        for (0..valid) |j| {
            if (ix < columns) area[((iy + window.padding[0]) * plan.width + ix + window.padding[1]) * lanes ..][0..lanes].* = by_position[j];
            ix += 1;
            if (ix == window.image[1]) {
                ix = 0;
                iy += 1;
            }
        }
    }
}

fn outputRows(comptime column_stride: usize, plan: *const Plan, tap_vectors: *const [taps_max]V, bias: V, epilogue: Epilogue, area: []const f32, flat: []f32) void {
    const window = plan.window;
    for (0..window.grid[0]) |oy| {
        // The kernel rows whose taps read image rows: the others read the zero padding above
        // or below the image, products of zero (on a 2-row map with a 5 × 5 kernel, 3 of every
        // 5). Skipping them changes no sum unless a weight is infinite or NaN, as in the plane
        // kernels (conv_depthwise.zig, rowGroup).
        const rows = window.tapSpan(0, oy);
        var ox: usize = 0;
        while (ox < window.grid[1]) {
            const columns = chunkColumns(window.grid[1] - ox);
            switch (columns) {
                16 => chunk(16, column_stride, plan, tap_vectors, bias, epilogue, area, flat, oy, ox, rows),
                8 => chunk(8, column_stride, plan, tap_vectors, bias, epilogue, area, flat, oy, ox, rows),
                else => chunk(4, column_stride, plan, tap_vectors, bias, epilogue, area, flat, oy, ox, rows),
            }
            ox += columns;
        }
    }
}

/// Output columns [ox, ox + columns) of row oy for the block's channels: the sums in
/// registers, the epilogue, and a store per column into the flat output (columns computed
/// past the row land on the next row's first positions, which its chunks then rewrite).
fn chunk(
    comptime columns: usize,
    comptime column_stride: usize,
    plan: *const Plan,
    tap_vectors: *const [taps_max]V,
    bias: V,
    epilogue: Epilogue,
    area: []const f32,
    flat: []f32,
    oy: usize,
    ox: usize,
    kernel_rows: conv.Span,
) void {
    const window = plan.window;
    const kernel_w = window.kernel[1];
    var sums: [columns]V = @splat(bias);
    const start = oy * window.stride[0] * plan.width + ox * column_stride;
    const span = ((columns - 1) * column_stride + 1) * lanes;
    // Taps are row-major: kernel rows [begin, end) are one run of them.
    const first_tap = kernel_rows.begin * kernel_w;
    const end_tap = kernel_rows.end * kernel_w;
    for (tap_vectors[first_tap..end_tap], plan.offsets[first_tap..end_tap]) |weight, offset| {
        const source = area[(start + offset) * lanes ..][0..span];
        inline for (&sums, 0..) |*sum, j| sum.* = @mulAdd(V, source[j * column_stride * lanes ..][0..lanes].*, weight, sum.*);
    }
    const at = (oy * window.grid[1] + ox) * lanes;
    inline for (sums, 0..) |sum, j| flat[at + j * lanes ..][0..lanes].* = epilogue.vector(sum);
}

/// The flat output, 16 positions of 16 channels at a time through one transpose, into the
/// channels' output planes.
fn unpack(plan: *const Plan, flat: []const f32, count: usize, output: []f32) void {
    const plane = plan.window.gridPlane();
    var q: usize = 0;
    while (q < plane) : (q += lanes) {
        var by_position: [lanes]V = undefined;
        inline for (&by_position, 0..) |*v, j| v.* = flat[(q + j) * lanes ..][0..lanes].*;
        const by_channel = transpose(by_position);
        const valid = @min(lanes, plane - q);
        for (0..count) |c| {
            const values: [lanes]f32 = by_channel[c];
            if (valid == lanes) {
                output[c * plane + q ..][0..lanes].* = values;
            } else {
                @memcpy(output[c * plane + q ..][0..valid], values[0..valid]);
            }
        }
    }
}

/// The 16 × 16 transpose of `rows` (row i lane j → row j lane i): four rounds of pairwise
/// block swaps, 64 two-source shuffles.
pub fn transpose(rows: [lanes]V) [lanes]V {
    var r = rows;
    comptime var half: usize = lanes / 2;
    inline while (half >= 1) : (half /= 2) {
        inline for (0..lanes) |i| {
            if (i % (2 * half) < half) {
                const a = r[i];
                const b = r[i + half];
                r[i] = @shuffle(f32, a, b, swapMask(half, false));
                r[i + half] = @shuffle(f32, a, b, swapMask(half, true));
            }
        }
    }
    return r;
}

/// The shuffle mask of one block swap of `transpose`: blocks of `half` lanes, the low row
/// taking a's even blocks and b's even blocks shifted up, the high row the odd ones.
fn swapMask(comptime half: usize, comptime high: bool) @Vector(lanes, i32) {
    @setEvalBranchQuota(10_000);
    var mask: [lanes]i32 = undefined;
    for (0..lanes) |j| {
        const in_low_block = j % (2 * half) < half;
        mask[j] = if (!high)
            (if (in_low_block) @as(i32, @intCast(j)) else ~@as(i32, @intCast(j - half)))
        else
            (if (in_low_block) @as(i32, @intCast(j + half)) else ~@as(i32, @intCast(j)));
    }
    return mask;
}

test "transpose swaps rows and lanes" {
    var rows: [lanes]V = undefined;
    for (0..lanes) |i| {
        var values: [lanes]f32 = undefined;
        for (0..lanes) |j| values[j] = @floatFromInt(i * 100 + j);
        rows[i] = values;
    }
    const t = transpose(rows);
    for (0..lanes) |i| for (0..lanes) |j| try std.testing.expectEqual(@as(f32, @floatFromInt(j * 100 + i)), t[i][j]);
}

test "channels-in-lanes depthwise blocks match the direct convolution on awkward shapes" {
    if (!has_avx512) return error.SkipZigTest;
    const allocator = std.testing.allocator;
    var prng = std.Random.DefaultPrng.init(23);
    const random = prng.random();
    // channels, image h, w, kernel h, w, stride h, w, padding h, w, dilation h, w
    const cases = [_][11]usize{
        // det's shapes: 10 × 10 and 20 × 20 5 × 5, stride 2 from 20 × 20, 40 × 40 3 × 3.
        .{ 384, 10, 10, 5, 5, 1, 1, 2, 2, 1, 1 },
        .{ 192, 20, 20, 5, 5, 1, 1, 2, 2, 1, 1 },
        .{ 192, 20, 20, 5, 5, 2, 2, 2, 2, 1, 1 },
        .{ 96, 40, 40, 3, 3, 2, 2, 1, 1, 1, 1 },
        // Channel counts that leave a partial last block, rows of 1-3 columns (chunks of 4
        // past the row), 7 × 7, dilation, no padding, a row stride only, padding larger than
        // the image, and a 1 × 1 plane.
        .{ 17, 9, 11, 3, 3, 1, 1, 1, 1, 1, 1 },
        .{ 5, 13, 3, 5, 5, 1, 2, 2, 2, 1, 1 },
        .{ 33, 6, 2, 3, 3, 2, 1, 1, 1, 1, 1 },
        .{ 20, 15, 19, 7, 7, 1, 1, 3, 3, 1, 1 },
        .{ 3, 14, 23, 3, 3, 1, 1, 2, 2, 2, 2 },
        .{ 31, 12, 17, 3, 5, 2, 2, 0, 0, 1, 1 },
        .{ 16, 2, 3, 5, 5, 1, 1, 3, 3, 1, 1 },
        .{ 1, 1, 1, 3, 3, 1, 1, 1, 1, 1, 1 },
        .{ 18, 5, 37, 3, 3, 2, 1, 1, 1, 1, 2 },
        // cls's short wide maps, most taps on the padding rows: 2 × 96 and 3 × 96 with 5 × 5,
        // 3 × 96 at stride (2, 1), and a dilated 3-row map whose kernel overhangs both sides.
        .{ 20, 2, 96, 5, 5, 1, 1, 2, 2, 1, 1 },
        .{ 17, 3, 96, 5, 5, 2, 1, 2, 2, 1, 1 },
        .{ 9, 3, 50, 3, 3, 1, 1, 3, 1, 3, 1 },
    };
    const epilogues = [_]Epilogue{ .{}, Epilogue.relu, .{ .activation = .hard_swish }, .{ .activation = .hard_swish, .scale = 0.5, .shift = -1 } };
    for (cases, 0..) |c, index| {
        const channels = c[0];
        const window: Window = .{
            .image = .{ c[1], c[2] },
            .grid = .{ (c[1] + 2 * c[7] - (c[3] - 1) * c[9] - 1) / c[5] + 1, (c[2] + 2 * c[8] - (c[4] - 1) * c[10] - 1) / c[6] + 1 },
            .kernel = .{ c[3], c[4] },
            .stride = .{ c[5], c[6] },
            .padding = .{ c[7], c[8] },
            .dilation = .{ c[9], c[10] },
        };
        const geometry: conv.Geometry = .{ .batch = 1, .in_channels = channels, .out_channels = channels, .groups = channels, .window = window };
        const input = try allocator.alloc(f32, channels * window.imagePlane());
        defer allocator.free(input);
        const weights = try allocator.alloc(f32, channels * window.taps());
        defer allocator.free(weights);
        const bias = try allocator.alloc(f32, channels);
        defer allocator.free(bias);
        for (input) |*x| x.* = random.float(f32) * 2 - 1;
        for (weights) |*x| x.* = random.float(f32) * 2 - 1;
        for (bias) |*x| x.* = random.float(f32) * 2 - 1;
        const expected = try allocator.alloc(f32, channels * window.gridPlane());
        defer allocator.free(expected);
        const got = try allocator.alloc(f32, channels * window.gridPlane());
        defer allocator.free(got);
        const plan: Plan = .of(window);
        const scratch = try allocator.alloc(f32, plan.scratchFloats());
        defer allocator.free(scratch);
        // NaN in the scratch would reach the output if a read strayed off the zeroed padding.
        @memset(scratch, std.math.nan(f32));
        @memset(got, std.math.nan(f32));
        const epilogue = epilogues[index % epilogues.len];
        const with_bias = index % 2 == 0;
        conv.reference(geometry, input, weights, if (with_bias) bias else null, epilogue, expected);
        prepare(&plan, scratch);
        // The blocks in turn through one scratch, as a worker runs its share.
        var c0: usize = 0;
        while (c0 < channels) : (c0 += lanes) {
            const count = @min(lanes, channels - c0);
            block(&plan, input[c0 * window.imagePlane() ..], count, weights[c0 * window.taps() ..][0 .. count * window.taps()], if (with_bias) bias[c0..][0..count] else null, epilogue, scratch, got[c0 * window.gridPlane() ..][0 .. count * window.gridPlane()]);
        }
        for (expected, got) |e, g| try std.testing.expectApproxEqAbs(e, g, 1e-4 * @as(f32, @floatFromInt(window.taps())));
    }
}
