//! Depthwise convolution at stride 1 or 2 on both axes, square 3×3 or 5×5 kernels, with the
//! input copied into a ring of zero-padded rows one row at a time, a group of output rows
//! ahead (at stride 2 split into its even and odd columns on the way).
//!
//! The phased planes of conv_depthwise.zig copy the whole plane (into its stride phases)
//! before any arithmetic: on det's 32×160×160 → 80×80 layer the copy took 0.17 of 0.26 ms,
//! bound by reading the input from L3, with the arithmetic after it rather than beside it.
//! Here each input row is split into its even and odd padded columns (two shuffles per 32
//! floats) into a small ring of rows in L1, while the output rows before it are summed, so
//! the reading of the input overlaps the arithmetic and the split rows are read while still
//! in L1. (Shuffling the pair of vectors each tap reads instead, with no copy at all, needs a
//! shuffle per tap and input vector and measured slower on det's 20×20 and 40×40 layers.)
//!
//! Output row y reads input rows s·y − p₀ … s·y − p₀ + k − 1; output column x, tap kx reads
//! padded column s·x + kx: at stride 2 column x + ⌊kx / 2⌋ of the row's phase kx mod 2. Rows
//! outside the image read a shared zero row, and columns outside it the zero padding of the
//! ring rows.
const std = @import("std");
const math = @import("math.zig");
const conv = @import("conv.zig");
const depthwise = @import("conv_depthwise.zig");

const lanes = math.lanes;
const V = math.V;
const Window = conv.Window;
const Epilogue = conv.Epilogue;

/// Output vectors per row one group takes at a time, and output rows per group for each count
/// of vectors: eight or more sums in flight to cover the FMA latency, within the 32 vector
/// registers beside the kernel column's weights.
const row_vectors_max = 4;
const group_rows = [row_vectors_max + 1]usize{ 0, 8, 6, 4, 4 };
/// Input rows one group reads at most: s · rows + k − s, the most at stride 2.
const sources_max = 2 * group_rows[1] + 5 - 2;

/// Fewest input floats per plane for which conv_depthwise.zig picks this kernel over its
/// phase planes. Measured at stride 2 (zig build bench-depthwise, 1 thread, alternating runs
/// at load 7): det's 32×160×160 layer 0.26 → 0.21 ms and 48×80×80 0.060 → 0.054 ms, but
/// 96×40×40 0.035 → 0.039 ms and 192×20×20 (5×5) 0.035 → 0.044 ms: a small plane's phases
/// stay in L1 whole, and the row groups' bookkeeping costs more than the copy there.
pub const plane_floats_min = 4096;

/// Whether `plane` handles this window: the same stride 1 or 2 on both axes, no dilation, a
/// 3×3 or 5×5 kernel (det's depthwise layers).
pub fn applies(window: Window) bool {
    return window.stride[0] == window.stride[1] and (window.stride[0] == 1 or window.stride[0] == 2) and
        window.dilation[0] == 1 and window.dilation[1] == 1 and
        window.kernel[0] == window.kernel[1] and (window.kernel[0] == 3 or window.kernel[0] == 5);
}

/// What every plane of one call shares, worked out once per call.
pub const Plan = struct {
    window: Window,
    /// Floats of one column phase of a ring row (the whole row at stride 1): the farthest
    /// column the last output vector reads, and the whole vectors the copy writes.
    half: usize,
    /// Output vectors per output row (the last one may be partial).
    row_vectors: usize,
    /// Output rows per group.
    rows: usize,
    /// Rows of the ring: a power of two that holds the rows of two groups (the one summed
    /// and the one split ahead), so that a row's slot is a mask rather than a division.
    ring_rows: usize,

    pub fn of(window: Window) Plan {
        std.debug.assert(applies(window));
        const k = window.kernel[1];
        const s = window.stride[1];
        const row_vectors = std.math.divCeil(usize, window.grid[1], lanes) catch unreachable;
        const rows = group_rows[@min(row_vectors, row_vectors_max)];
        // The last vector's tap kw − 1 reads up to lanes · row_vectors + (kw − 1) / s; the
        // copy writes whole vectors from column ⌈p₁ / s⌉ for every s · 16 input floats.
        const reach = lanes * row_vectors + (k - 1) / s;
        const written = (window.padding[1] + s - 1) / s + lanes * (std.math.divCeil(usize, window.image[1], s * lanes) catch unreachable);
        return .{
            .window = window,
            .half = std.mem.alignForward(usize, @max(reach, written), lanes),
            .row_vectors = row_vectors,
            .rows = rows,
            .ring_rows = std.math.ceilPowerOfTwoAssert(usize, 2 * s * rows + k - s),
        };
    }

    /// Floats of one ring row: at stride 2 its even phase, then its odd phase.
    fn width(plan: Plan) usize {
        return plan.window.stride[1] * plan.half;
    }

    /// Floats of scratch one worker needs: the ring and one zero row.
    pub fn scratchFloats(plan: Plan) usize {
        return (plan.ring_rows + 1) * plan.width();
    }
};

/// Zeroes a worker's scratch before its first plane: the padding columns of the ring rows and
/// the zero row stay zero from then on, since `plane` only writes the image's columns (and
/// zeros past the row's end, in whole vectors).
pub fn prepare(plan: *const Plan, scratch: []f32) void {
    std.debug.assert(scratch.len >= plan.scratchFloats());
    @memset(scratch[0..plan.scratchFloats()], 0);
}

/// One depthwise output plane, as conv_depthwise.plane: output[y, x] = epilogue(bias +
/// Σ weights[ky·k + kx] · input[s·y − p₀ + ky, s·x − p₁ + kx]), zero outside the image.
/// `scratch` went through `prepare` with this plan (and only through `plane` since).
pub fn plane(plan: *const Plan, input: []const f32, weights: []const f32, bias: f32, epilogue: Epilogue, scratch: []f32, output: []f32) void {
    const window = plan.window;
    std.debug.assert(input.len == window.imagePlane());
    std.debug.assert(weights.len == window.taps());
    std.debug.assert(output.len == window.gridPlane());
    std.debug.assert(scratch.len >= plan.scratchFloats());
    switch (window.kernel[0]) {
        inline 3, 5 => |k| switch (window.stride[0]) {
            inline 1, 2 => |s| byGroups(k, s, plan, input, weights, bias, epilogue, scratch, output),
            else => unreachable,
        },
        else => unreachable,
    }
}

/// Copies input rows [begin, end) into their ring rows, at stride 2 split into the phases.
fn splitRows(comptime s: usize, plan: *const Plan, input: []const f32, begin: usize, end: usize, scratch: []f32) void {
    const window = plan.window;
    const in_w = window.image[1];
    const p = window.padding[1];
    for (begin..end) |row| {
        const slot = scratch[(row & (plan.ring_rows - 1)) * plan.width() ..][0..plan.width()];
        if (s == 1) {
            depthwise.copyRow(input[row * in_w ..], in_w, slot[p..]);
            continue;
        }
        // Input column ix lands at padded column ix + p₁: even ix in phase p₁ mod 2 from
        // column p₁ / 2, odd ix in the other phase from (p₁ + 1) / 2.
        const even = slot[(p % 2) * plan.half + p / 2 ..];
        const odd = slot[(1 - p % 2) * plan.half + (p + 1) / 2 ..];
        depthwise.splitRow(input[row * in_w ..], in_w, even, odd);
    }
}

fn byGroups(comptime k: usize, comptime s: usize, plan: *const Plan, input: []const f32, weights: []const f32, bias: f32, epilogue: Epilogue, scratch: []f32, output: []f32) void {
    const window = plan.window;
    const in_h = window.image[0];
    const out_h = window.grid[0];
    const zero_row = scratch[plan.ring_rows * plan.width() ..][0..plan.width()];
    var sources: [sources_max][]const f32 = undefined;
    // Input rows [0, split) are in the ring. Before a group is summed, the rows of the group
    // after it are split too, so their stores are done by the time they are read.
    var split: usize = 0;
    var y: usize = 0;
    while (y < out_h) {
        const rows = @min(out_h - y, plan.rows);
        const ahead_end = @min(out_h, y + rows + plan.rows);
        // Padded rows of the groups up to ahead_end: up to s · ahead_end + k − s.
        const split_end = std.math.clamp(s * ahead_end + k - s, window.padding[0], window.padding[0] + in_h) - window.padding[0];
        if (split_end > split) {
            splitRows(s, plan, input, split, split_end, scratch);
            split = split_end;
        }
        for (sources[0 .. s * rows + k - s], 0..) |*source, j| {
            // Input row s·y − p₀ + j, with the padding rows on the zero row.
            const padded_row = s * y + j;
            if (padded_row < window.padding[0] or padded_row - window.padding[0] >= in_h) {
                source.* = zero_row;
                continue;
            }
            const row = padded_row - window.padding[0];
            std.debug.assert(row < split and row + plan.ring_rows >= split);
            source.* = scratch[(row & (plan.ring_rows - 1)) * plan.width() ..][0..plan.width()];
        }
        var vector: usize = 0;
        while (vector < plan.row_vectors) {
            const vectors = @min(plan.row_vectors - vector, row_vectors_max);
            switch (vectors) {
                inline 1...row_vectors_max => |v| switch (rows) {
                    inline 1...group_rows[v] => |r| rowGroup(k, s, r, v, plan.half, sources[0 .. s * r + k - s], weights, bias, epilogue, y, vector * lanes, window.grid[1], output),
                    else => unreachable,
                },
                else => unreachable,
            }
            vector += vectors;
        }
        y += rows;
    }
}

/// Output rows y … y + rows − 1, `vectors` vectors from column x. Per kernel column its k
/// weights sit in registers; each source row's vector at that column (at stride 2 phase
/// kx mod 2, column x + ⌊kx / 2⌋) is loaded once and feeds every output row that reads it
/// (tap ky = j − s·r of output row r).
fn rowGroup(
    comptime k: usize,
    comptime s: usize,
    comptime rows: usize,
    comptime vectors: usize,
    half: usize,
    sources: []const []const f32,
    weights: []const f32,
    bias: f32,
    epilogue: Epilogue,
    y: usize,
    x: usize,
    out_w: usize,
    output: []f32,
) void {
    std.debug.assert(sources.len == s * rows + k - s);
    // (s · rows + k − s) · vectors · rows unrolled steps: 19 · 8 at most.
    @setEvalBranchQuota(4000);
    var sums: [rows][vectors]V = @splat(@splat(@splat(bias)));
    // A loop (not unrolled) over the kernel columns: unrolled, the compiler hoists the loads
    // of every column ahead of the sums and spills them to the stack.
    for (0..k) |kx| {
        var w: [k]V = undefined;
        inline for (&w, 0..) |*weight, ky| weight.* = @splat(weights[ky * k + kx]);
        const column = (kx % s) * half + x + kx / s;
        inline for (0..s * rows + k - s) |j| {
            const source = sources[j][column..][0 .. vectors * lanes];
            inline for (0..vectors) |c| {
                const loaded: V = source[c * lanes ..][0..lanes].*;
                inline for (0..rows) |r| {
                    if (j >= s * r and j - s * r < k) sums[r][c] = @mulAdd(V, w[j - s * r], loaded, sums[r][c]);
                }
            }
        }
    }
    inline for (0..rows) |r| inline for (0..vectors) |c| {
        storeRowVector(epilogue.vector(sums[r][c]), y + r, x + c * lanes, out_w, output);
    };
}

/// Stores output row `y`'s vector from column `column`, cut at the row's end: the lanes past
/// it belong to the next row (kept) or lie past the plane (not written).
pub fn storeRowVector(values: V, y: usize, column: usize, out_w: usize, output: []f32) void {
    const at = y * out_w + column;
    if (column + lanes <= out_w) {
        output[at..][0..lanes].* = values;
    } else if (at + lanes <= output.len) {
        const index = std.simd.iota(u32, lanes);
        const kept = index < @as(@Vector(lanes, u32), @splat(@intCast(out_w - column)));
        output[at..][0..lanes].* = @select(f32, kept, values, @as(V, output[at..][0..lanes].*));
    } else {
        const array: [lanes]f32 = values;
        @memcpy(output[at..][0 .. out_w - column], array[0 .. out_w - column]);
    }
}

test "depthwise planes through the ring of rows match the direct convolution on awkward shapes" {
    const allocator = std.testing.allocator;
    var prng = std.Random.DefaultPrng.init(41);
    const random = prng.random();
    // image h, w, kernel, padding h, w, stride
    const cases = [_][6]usize{
        .{ 1, 1, 3, 1, 1, 2 },
        .{ 1, 1, 5, 2, 2, 2 },
        .{ 2, 3, 3, 1, 1, 2 },
        .{ 3, 3, 3, 0, 0, 2 },
        .{ 7, 13, 3, 1, 1, 2 },
        .{ 11, 17, 3, 0, 0, 2 },
        .{ 20, 20, 5, 2, 2, 2 },
        .{ 21, 19, 5, 2, 2, 2 },
        .{ 9, 33, 3, 1, 1, 2 },
        .{ 40, 40, 3, 1, 1, 2 },
        .{ 17, 35, 5, 1, 3, 2 },
        .{ 37, 129, 3, 1, 1, 2 },
        .{ 30, 161, 3, 2, 0, 2 },
        .{ 45, 200, 5, 2, 2, 2 },
        .{ 12, 31, 5, 0, 0, 2 },
        .{ 1, 1, 3, 1, 1, 1 },
        .{ 2, 3, 5, 2, 2, 1 },
        .{ 7, 13, 3, 1, 1, 1 },
        .{ 11, 17, 3, 0, 0, 1 },
        .{ 33, 70, 3, 1, 1, 1 },
        .{ 20, 20, 5, 2, 2, 1 },
        .{ 19, 81, 5, 2, 1, 1 },
        .{ 30, 161, 3, 1, 2, 1 },
    };
    const epilogues = [_]Epilogue{ .{}, Epilogue.relu, .{ .activation = .hard_swish }, .{ .activation = .hard_swish, .scale = 0.5, .shift = -1 } };
    for (cases, 0..) |c, index| {
        const kernel = c[2];
        const stride = c[5];
        const window: Window = .{
            .image = .{ c[0], c[1] },
            .grid = .{ (c[0] + 2 * c[3] - kernel) / stride + 1, (c[1] + 2 * c[4] - kernel) / stride + 1 },
            .kernel = .{ kernel, kernel },
            .stride = .{ stride, stride },
            .padding = .{ c[3], c[4] },
            .dilation = .{ 1, 1 },
        };
        if (c[0] + 2 * c[3] < kernel or c[1] + 2 * c[4] < kernel) continue;
        const channels = 3;
        const geometry: conv.Geometry = .{ .batch = 1, .in_channels = channels, .out_channels = channels, .groups = channels, .window = window };
        const input = try allocator.alloc(f32, channels * window.imagePlane());
        defer allocator.free(input);
        const weights = try allocator.alloc(f32, channels * window.taps());
        defer allocator.free(weights);
        var bias: [channels]f32 = undefined;
        for (input) |*x| x.* = random.float(f32) * 2 - 1;
        for (weights) |*x| x.* = random.float(f32) * 2 - 1;
        for (&bias) |*x| x.* = random.float(f32) * 2 - 1;
        const expected = try allocator.alloc(f32, channels * window.gridPlane());
        defer allocator.free(expected);
        const got = try allocator.alloc(f32, channels * window.gridPlane());
        defer allocator.free(got);
        @memset(got, std.math.nan(f32));
        const plan: Plan = .of(window);
        const scratch = try allocator.alloc(f32, plan.scratchFloats());
        defer allocator.free(scratch);
        // NaN in the scratch would reach the output if a read strayed off the zeroed padding.
        @memset(scratch, std.math.nan(f32));
        const epilogue = epilogues[index % epilogues.len];
        conv.reference(geometry, input, weights, &bias, epilogue, expected);
        prepare(&plan, scratch);
        // The channels in turn through one scratch, as a worker runs its planes.
        for (0..channels) |channel| {
            plane(&plan, input[channel * window.imagePlane() ..][0..window.imagePlane()], weights[channel * window.taps() ..][0..window.taps()], bias[channel], epilogue, scratch, got[channel * window.gridPlane() ..][0..window.gridPlane()]);
        }
        for (expected, got) |e, g| try std.testing.expectApproxEqAbs(e, g, 1e-4 * @as(f32, @floatFromInt(window.taps())));
    }
}
