//! Depthwise convolution of one whole NCHW plane at a time through a zero-padded copy of
//! the plane split into its stride phases, for strides 1 and 2 on either axis.
//!
//! Phase (py, px) of the padded plane holds padded rows py, py + s₀, … and columns px,
//! px + s₁, …, each phase a plane of `height` × `width` floats. Output (y, x) then reads
//! tap (ky, kx) at phase (ky·d₀ mod s₀, kx·d₁ mod s₁), row y + ⌊ky·d₀ / s₀⌋, column
//! x + ⌊kx·d₁ / s₁⌋: the same position y·width + x of every phase plus a per-tap offset,
//! whatever the stride. So the whole plane is one long 1-D convolution over flat positions
//! y·width + x: whole vectors run across row ends (the few columns past the output width are
//! computed and dropped), which keeps the lanes full on the small maps of mobile networks
//! (10×10, 20×20) where a vector per output row would leave most of them idle, and eight
//! vectors are summed at a time so that the FMA latency is hidden. The epilogue runs in
//! registers before the flat sums are stored, and a last pass packs the rows of the flat
//! output into the output plane.
//!
//! The padding of the phase planes is zeroed once per worker (`prepare`), not per plane:
//! `plane` rewrites only the positions the input lands on, each plane in the same place.
const std = @import("std");
const builtin = @import("builtin");
const math = @import("math.zig");
const conv = @import("conv.zig");
const ring = @import("conv_depthwise_ring.zig");

const lanes = math.lanes;
const V = math.V;
const Window = conv.Window;
const Epilogue = conv.Epilogue;

/// Most taps the kernel takes (7×7): the tap offsets live in a stack array.
pub const taps_max = 49;
/// Output vectors summed together: eight independent FMA chains cover the FMA latency
/// (four cycles, two issued per cycle).
const group_vectors = 8;

/// Where `plane` keeps the phase planes and the flat output inside a worker's scratch.
pub const Layout = struct {
    stride: [2]usize,
    /// Columns of one phase plane (the padded width over the column stride, rounded up).
    width: usize,
    /// Rows of one phase plane.
    height: usize,
    /// Floats from one phase plane to the next: the plane and a gap of one vector, into
    /// which the vector stores of the last row's copy may spill.
    phase_len: usize,
    /// Floats of the phase planes and the slack the farthest tap of the last flat vector
    /// reads (zero, never written).
    area_len: usize,
    /// Floats of the flat output: output rows × width, whole vectors, and one vector more
    /// for the packing pass's last read.
    flat_len: usize,

    pub fn of(window: Window) Layout {
        const stride = window.stride;
        std.debug.assert(stride[0] >= 1 and stride[0] <= 2);
        std.debug.assert(stride[1] >= 1 and stride[1] <= 2);
        const padded_h = window.image[0] + 2 * window.padding[0];
        const padded_w = window.image[1] + 2 * window.padding[1];
        const width = std.math.divCeil(usize, padded_w, stride[1]) catch unreachable;
        const height = std.math.divCeil(usize, padded_h, stride[0]) catch unreachable;
        const phase_len = height * width + lanes;
        const flat_vectors_len = std.mem.alignForward(usize, window.grid[0] * width, lanes);
        var layout: Layout = .{
            .stride = stride,
            .width = width,
            .height = height,
            .phase_len = phase_len,
            .area_len = 0,
            .flat_len = flat_vectors_len + lanes,
        };
        const farthest = layout.tapOffset(window, window.kernel[0] - 1, window.kernel[1] - 1);
        layout.area_len = @max(stride[0] * stride[1] * phase_len, flat_vectors_len + farthest);
        return layout;
    }

    /// Offset in the phase area of tap (ky, kx) of output position 0.
    pub fn tapOffset(layout: Layout, window: Window, ky: usize, kx: usize) usize {
        const row = ky * window.dilation[0];
        const column = kx * window.dilation[1];
        const phase = (row % layout.stride[0]) * layout.stride[1] + column % layout.stride[1];
        return phase * layout.phase_len + row / layout.stride[0] * layout.width + column / layout.stride[1];
    }

    pub fn scratchLen(layout: Layout) usize {
        return layout.area_len + layout.flat_len;
    }
};

/// Tallest planes whose row groups skip the padding rows. bench-depthwise, 1 thread, against
/// the groups reading every row: 2-12 rows (cls's 2 × 96 and 3 × 96, rec's 3, 6 and 12 × 80
/// with 5 × 5 kernels) 10-30% faster, det's 20 × 20 and 40 × 40 10-20% slower.
const short_rows_max = 12;

/// Whether `plane` handles this window.
pub fn applies(window: Window) bool {
    return window.stride[0] <= 2 and window.stride[1] <= 2 and window.taps() <= taps_max;
}

/// What every plane of one call shares, worked out once per call (the divisions of the
/// layout and the tap offsets would otherwise cost as much as a small plane's arithmetic).
pub const Plan = struct {
    window: Window,
    layout: Layout,
    /// Offset in the phase area of each tap, row-major over the kernel.
    offsets: [taps_max]usize,
    /// Whether output rows go through `rowGroup` (unit row dilation, kernel height 3 or 5),
    /// else through the flat 1-D pass.
    by_rows: bool,
    /// Planes of at most `short_rows_max` rows: their row groups skip the padding rows
    /// (see imageRows). On taller planes the checks cost more than the rows they skip.
    short_planes: bool,
    /// Large planes at stride 1 or 2 on both axes with a 3×3 or 5×5 kernel: copied (split
    /// into phases) a row at a time (conv_depthwise_ring.zig) instead of a whole plane at a
    /// time.
    ring: ?ring.Plan,

    pub fn of(window: Window) Plan {
        std.debug.assert(applies(window));
        // Small planes at the same stride on both axes with a 5 × 5 kernel and rows of under
        // one vector (det's 192 × 20 × 20 → 10 × 10 at stride 2, 384 × 10 × 10 at stride 1)
        // take the flat pass: its vectors run over the flat phase positions, 10 of every 12
        // or 14 useful, where rows of 10 output columns fill 10 of 16 lanes in `rowGroup`.
        // bench-depthwise, 1 thread, alternating with the row groups, medians of rounds
        // (each the fastest of 41-101 calls): stride 2 0.0274 → 0.0261 ms (3 rounds, load
        // 5.5), stride 1 0.0496 → 0.0477 ms (7 rounds, load 1-4). With a 3 × 3 kernel (det's
        // 96 × 40 × 40 → 20 × 20) the flat pass measured 8% slower (0.0254 → 0.0274 ms).
        // Large planes take the ring of rows whatever `by_rows` says.
        const ring_plan: ?ring.Plan = if (ring.applies(window) and window.imagePlane() >= ring.plane_floats_min) .of(window) else null;
        const flat_stride_2 = window.stride[0] == window.stride[1] and window.kernel[0] == 5 and window.grid[1] < lanes and ring_plan == null;
        var plan: Plan = .{
            .window = window,
            .layout = Layout.of(window),
            .offsets = undefined,
            .by_rows = window.dilation[0] == 1 and (window.kernel[0] == 3 or window.kernel[0] == 5) and !flat_stride_2,
            .short_planes = window.image[0] <= short_rows_max,
            .ring = ring_plan,
        };
        for (0..window.kernel[0]) |ky| for (0..window.kernel[1]) |kx| {
            plan.offsets[ky * window.kernel[1] + kx] = plan.layout.tapOffset(window, ky, kx);
        };
        return plan;
    }

    /// Floats of scratch one worker needs.
    pub fn scratchFloats(plan: Plan) usize {
        if (plan.ring) |r| return r.scratchFloats();
        return plan.layout.scratchLen();
    }
};

/// Zeroes a worker's scratch before its first plane: the padding of the phase planes and
/// the slack stay zero from then on, since `plane` only writes where the input lands.
pub fn prepare(plan: *const Plan, scratch: []f32) void {
    std.debug.assert(scratch.len >= plan.scratchFloats());
    @memset(scratch, 0);
}

/// One depthwise output plane: output[y, x] = epilogue(bias + Σ weights[ky·kw + kx] ·
/// input[y·s₀ − p₀ + ky·d₀, x·s₁ − p₁ + kx·d₁]), zero outside the image. `scratch` holds
/// `plan.scratchFloats()` floats and went through `prepare` (and only through `plane` with
/// the same plan since).
pub fn plane(plan: *const Plan, input: []const f32, weights: []const f32, bias: f32, epilogue: Epilogue, scratch: []f32, output: []f32) void {
    const window = plan.window;
    const layout = plan.layout;
    std.debug.assert(input.len == window.imagePlane());
    std.debug.assert(weights.len == window.taps());
    std.debug.assert(output.len == window.gridPlane());
    std.debug.assert(scratch.len >= plan.scratchFloats());
    if (plan.ring) |*r| return ring.plane(r, input, weights, bias, epilogue, scratch, output);
    const area = scratch[0..layout.area_len];
    const flat = scratch[layout.area_len..][0..layout.flat_len];
    switch (layout.stride[0]) {
        inline 1, 2 => |row_stride| switch (layout.stride[1]) {
            inline 1, 2 => |column_stride| fillPhases(row_stride, column_stride, window, layout, input, area),
            else => unreachable,
        },
        else => unreachable,
    }
    if (plan.by_rows) {
        switch (window.kernel[0]) {
            inline 3, 5 => |kernel_h| switch (layout.stride[0]) {
                inline 1, 2 => |row_stride| if (plan.short_planes) {
                    byRows(kernel_h, row_stride, true, plan, area, weights, bias, epilogue, output);
                } else {
                    byRows(kernel_h, row_stride, false, plan, area, weights, bias, epilogue, output);
                },
                else => unreachable,
            },
            else => unreachable,
        }
        return;
    }
    const offsets = plan.offsets[0..weights.len];
    const vectors = (layout.flat_len - lanes) / lanes;
    var vector: usize = 0;
    while (vector < vectors) {
        const count = @min(vectors - vector, group_vectors);
        switch (count) {
            inline 1...group_vectors => |c| flatGroup(c, area, weights, offsets, bias, epilogue, flat, vector * lanes),
            else => unreachable,
        }
        vector += count;
    }
    packRows(window.grid[1], layout.width, flat, output);
}

/// Output vectors per row `rowGroup` takes at a time, and output rows per group for each
/// count of vectors: enough sums in flight (eight or more) to cover the FMA latency, within
/// the 32 vector registers beside the kernel column's weights and the loaded inputs.
const row_vectors_max = 4;
/// On planes of at most `wide_rows_max` output rows (cls's 2 × 96 and 3 × 96) a group takes
/// up to `wide_vectors_max` vectors of every row at once: 96 columns in one group of 12-18
/// sums rather than groups of 4 and 2 vectors, the second with too few sums in flight to
/// cover the FMA latency (4 chains of 10 FMAs on a 2-row plane with a 5 × 5 kernel). Only
/// with AVX-512's 32 registers: below it a vector is two registers or more and 18 sums spill.
const wide_rows_max = 3;
const wide_vectors_max = if (avx512) 6 else row_vectors_max;
const avx512 = builtin.cpu.arch == .x86_64 and std.Target.x86.featureSetHas(builtin.cpu.features, .avx512f);
const group_rows = [_]usize{ 0, 8, 6, 4, 4, wide_rows_max, wide_rows_max };

/// The plane by groups of output rows: output rows y … y + R − 1 read rows y … y + R − 1 +
/// ⌊(kh − 1 − py) / s₀⌋ of each row phase py, so each input vector is loaded once per group
/// and feeds every output row it reaches (up to kh), where the flat pass loads it kh times.
/// Vectors of each row start at column 0, so that loads line up across rows; lanes past the
/// output width are dropped on store.
fn byRows(comptime kernel_h: usize, comptime row_stride: usize, comptime short_planes: bool, plan: *const Plan, area: []const f32, weights: []const f32, bias: f32, epilogue: Epilogue, output: []f32) void {
    const window = plan.window;
    const out_h = window.grid[0];
    const out_w = window.grid[1];
    const row_vectors = std.math.divCeil(usize, out_w, lanes) catch unreachable;
    var column_offsets: [taps_max]usize = undefined;
    const kernel_w = window.kernel[1];
    for (0..kernel_w) |kx| column_offsets[kx] = plan.offsets[kx];
    const image_rows = imageRows(row_stride, window);
    const vectors_max: usize = if (out_h <= wide_rows_max) wide_vectors_max else row_vectors_max;
    var vector: usize = 0;
    while (vector < row_vectors) {
        const vectors = @min(row_vectors - vector, vectors_max);
        switch (vectors) {
            inline 1...wide_vectors_max => |v| {
                const rows_max = group_rows[v];
                var y: usize = 0;
                while (y < out_h) {
                    const rows = @min(out_h - y, rows_max);
                    switch (rows) {
                        inline 1...rows_max => |r| if (!short_planes or readsOnlyImage(kernel_h, row_stride, r, image_rows, y)) {
                            rowGroup(kernel_h, row_stride, r, v, false, plan.layout, image_rows, area, weights, column_offsets[0..kernel_w], bias, epilogue, y, vector * lanes, out_w, output);
                        } else {
                            rowGroup(kernel_h, row_stride, r, v, true, plan.layout, image_rows, area, weights, column_offsets[0..kernel_w], bias, epilogue, y, vector * lanes, out_w, output);
                        },
                        else => unreachable,
                    }
                    y += rows;
                }
            },
            else => unreachable,
        }
        vector += vectors;
    }
}

/// The rows of each row phase that hold image rows, [begin, end): the others are zero
/// padding, whose taps add nothing. On the 2- and 3-row planes of small classifiers (cls:
/// 200 × 2 × 96 with a 5 × 5 kernel) most taps of every output row fall on padding.
fn imageRows(comptime row_stride: usize, window: Window) [row_stride][2]usize {
    const first = window.padding[0];
    const end = first + window.image[0];
    var rows: [row_stride][2]usize = undefined;
    inline for (&rows, 0..) |*range, phase| {
        // Phase row i is padded row i·s₀ + phase: an image row when first ≤ it < end.
        range[0] = std.math.divCeil(usize, first -| phase, row_stride) catch unreachable;
        range[1] = std.math.divCeil(usize, end -| phase, row_stride) catch unreachable;
    }
    return rows;
}

/// Whether output rows y … y + rows − 1 read image rows only, no padding row of any phase:
/// those groups go through rowGroup without its padding checks.
fn readsOnlyImage(comptime kernel_h: usize, comptime row_stride: usize, comptime rows: usize, image_rows: [row_stride][2]usize, y: usize) bool {
    inline for (image_rows, 0..) |range, phase| {
        const reach = (kernel_h - 1 - phase) / row_stride;
        if (y < range[0] or y + rows + reach > range[1]) return false;
    }
    return true;
}

/// Output rows y … y + rows − 1, `vectors` vectors from column x: for each kernel column,
/// its kh weights in registers, then every phase row the group reads that holds an image
/// row (with `skip_padding`; else every row, the group reading no padding row), loaded once.
/// Tap ky of output row r reads row phase ky mod s₀ at row y + r + ⌊ky / s₀⌋. Skipping the
/// padding rows skips products of zero: the sums are the same unless a weight is infinite or
/// NaN (where the zero-padded sum would be NaN).
fn rowGroup(
    comptime kernel_h: usize,
    comptime row_stride: usize,
    comptime rows: usize,
    comptime vectors: usize,
    comptime skip_padding: bool,
    layout: Layout,
    image_rows: [row_stride][2]usize,
    area: []const f32,
    weights: []const f32,
    column_offsets: []const usize,
    bias: f32,
    epilogue: Epilogue,
    y: usize,
    x: usize,
    out_w: usize,
    output: []f32,
) void {
    const kernel_w = column_offsets.len;
    var sums: [rows][vectors]V = @splat(@splat(@splat(bias)));
    for (column_offsets, 0..) |column_offset, kx| {
        var w: [kernel_h]V = undefined;
        inline for (&w, 0..) |*weight, ky| weight.* = @splat(weights[ky * kernel_w + kx]);
        inline for (0..row_stride) |phase| {
            // Rows y + j, j up to rows − 1 plus the farthest tap of this phase.
            const reach = (kernel_h - 1 - phase) / row_stride;
            const phase_start = phase * layout.stride[1] * layout.phase_len + column_offset + x;
            inline for (0..rows + reach) |j| {
                // A branch per kernel column and row, against rows × vectors FMAs it skips.
                if (!skip_padding or (y + j >= image_rows[phase][0] and y + j < image_rows[phase][1])) {
                    const source = area[phase_start + (y + j) * layout.width ..][0 .. vectors * lanes];
                    inline for (0..vectors) |c| {
                        const loaded: V = source[c * lanes ..][0..lanes].*;
                        inline for (0..rows) |r| {
                            if (j >= r and j - r <= reach) sums[r][c] = @mulAdd(V, w[(j - r) * row_stride + phase], loaded, sums[r][c]);
                        }
                    }
                }
            }
        }
    }
    inline for (0..rows) |r| inline for (0..vectors) |c| {
        ring.storeRowVector(epilogue.vector(sums[r][c]), y + r, x + c * lanes, out_w, output);
    };
}

/// Copies the input plane into its phase planes: input row iy goes to padded row
/// iy + p₀, that is phase row (iy + p₀) / s₀ of the phases (iy + p₀) mod s₀, its columns
/// split by (ix + p₁) mod s₁. Vectors of input columns, stored whole: lanes past the row's
/// end are zero and land in the padding, the next rows (written after) or the phase's gap.
/// Compile-time strides keep the divisions out of the row loop.
fn fillPhases(comptime row_stride: usize, comptime column_stride: usize, window: Window, layout: Layout, input: []const f32, area: []f32) void {
    const in_h = window.image[0];
    const in_w = window.image[1];
    for (0..in_h) |iy| {
        const padded_row = iy + window.padding[0];
        const phase_row = (padded_row % row_stride) * column_stride;
        const row_start = phase_row * layout.phase_len + padded_row / row_stride * layout.width;
        const source = input[iy * in_w ..];
        switch (column_stride) {
            1 => copyRow(source, in_w, area[row_start + window.padding[1] ..]),
            2 => {
                // Input column ix lands at padded column ix + p₁: even ix in phase p₁ mod 2
                // from column p₁ / 2, odd ix in the other phase from (p₁ + 1) / 2.
                const even_phase = window.padding[1] % 2;
                const even = area[row_start + even_phase * layout.phase_len + window.padding[1] / 2 ..];
                const odd = area[row_start + (1 - even_phase) * layout.phase_len + (window.padding[1] + 1) / 2 ..];
                splitRow(source, in_w, even, odd);
            },
            else => comptime unreachable,
        }
    }
}

/// target[0..count] = source[0..count], in whole vectors whose lanes past `count` are zero.
/// `source` may end before a whole vector (the plane's last row): that part goes through a
/// zeroed copy.
pub fn copyRow(source: []const f32, count: usize, target: []f32) void {
    std.debug.assert(source.len >= count);
    var column: usize = 0;
    while (column < count) : (column += lanes) {
        const valid = @min(lanes, count - column);
        if (valid == lanes) {
            target[column..][0..lanes].* = source[column..][0..lanes].*;
        } else {
            target[column..][0..lanes].* = keepFirst(loadPartial(lanes, source[column..], valid), valid);
        }
    }
}

/// even[i] = source[2i], odd[i] = source[2i + 1] for the first `count` source floats, in
/// whole vectors whose lanes past the row's end are zero.
pub fn splitRow(source: []const f32, count: usize, even: []f32, odd: []f32) void {
    std.debug.assert(source.len >= count);
    const even_mask = comptime conv.stridedMask(2);
    const odd_mask = comptime blk: {
        var mask: [lanes]i32 = undefined;
        for (&mask, 0..) |*m, i| m.* = @intCast(2 * i + 1);
        break :blk mask;
    };
    var column: usize = 0;
    while (column < count) : (column += 2 * lanes) {
        const valid = @min(2 * lanes, count - column);
        const at = column / 2;
        if (valid == 2 * lanes) {
            // A whole pair of vectors: no lanes to clear (most of a wide row).
            const loaded: @Vector(2 * lanes, f32) = source[column..][0 .. 2 * lanes].*;
            even[at..][0..lanes].* = @shuffle(f32, loaded, undefined, even_mask);
            odd[at..][0..lanes].* = @shuffle(f32, loaded, undefined, odd_mask);
            continue;
        }
        const loaded = loadPartial(2 * lanes, source[column..], valid);
        even[at..][0..lanes].* = keepFirst(@shuffle(f32, loaded, undefined, even_mask), (valid + 1) / 2);
        odd[at..][0..lanes].* = keepFirst(@shuffle(f32, loaded, undefined, odd_mask), valid / 2);
    }
}

/// The first `valid` floats of `source` as an n-lane vector; the other lanes are whatever
/// lies behind them in `source`, or zero where `source` ends.
fn loadPartial(comptime n: usize, source: []const f32, valid: usize) @Vector(n, f32) {
    std.debug.assert(valid <= n and valid <= source.len);
    if (source.len >= n) return source[0..n].*;
    var values: [n]f32 = @splat(0);
    @memcpy(values[0..valid], source[0..valid]);
    return values;
}

/// `values` with the lanes from `valid` on set to zero.
fn keepFirst(values: V, valid: usize) V {
    const index = std.simd.iota(u32, lanes);
    return @select(f32, index < @as(@Vector(lanes, u32), @splat(@intCast(valid))), values, @as(V, @splat(0)));
}

/// `count` flat output vectors from flat position `at`: bias plus every tap, then the
/// epilogue, in registers.
fn flatGroup(
    comptime count: usize,
    area: []const f32,
    weights: []const f32,
    offsets: []const usize,
    bias: f32,
    epilogue: Epilogue,
    flat: []f32,
    at: usize,
) void {
    var sums: [count]V = @splat(@splat(bias));
    for (weights, offsets) |weight, offset| {
        const w: V = @splat(weight);
        const source = area[at + offset ..][0 .. count * lanes];
        inline for (&sums, 0..) |*sum, k| sum.* = @mulAdd(V, w, source[k * lanes ..][0..lanes].*, sum.*);
    }
    inline for (sums, 0..) |sum, k| flat[at + k * lanes ..][0..lanes].* = epilogue.vector(sum);
}

/// output row y = flat[y·width ..][0..out_w], in whole vectors: a vector running past the
/// row writes the next row's first floats, which that row then overwrites; only vectors
/// that would run past the plane's end are cut.
fn packRows(out_w: usize, width: usize, flat: []const f32, output: []f32) void {
    std.debug.assert(output.len % out_w == 0);
    const out_h = output.len / out_w;
    for (0..out_h) |y| {
        var x: usize = 0;
        while (x < out_w) : (x += lanes) {
            const at = y * out_w + x;
            const values: [lanes]f32 = flat[y * width + x ..][0..lanes].*;
            if (at + lanes <= output.len) {
                output[at..][0..lanes].* = values;
            } else {
                @memcpy(output[at..], values[0 .. output.len - at]);
            }
        }
    }
}

test {
    _ = ring;
}

test "phased depthwise planes match the direct convolution on awkward shapes" {
    const allocator = std.testing.allocator;
    var prng = std.Random.DefaultPrng.init(14);
    const random = prng.random();
    // image h, w, kernel h, w, stride h, w, padding h, w, dilation h, w
    const cases = [_][10]usize{
        .{ 1, 1, 1, 1, 1, 1, 0, 0, 1, 1 },
        .{ 1, 1, 3, 3, 1, 1, 1, 1, 1, 1 },
        .{ 1, 1, 5, 5, 2, 2, 2, 2, 1, 1 },
        .{ 10, 10, 5, 5, 1, 1, 2, 2, 1, 1 },
        .{ 20, 20, 5, 5, 2, 2, 2, 2, 1, 1 },
        .{ 7, 13, 3, 3, 1, 1, 1, 1, 1, 1 },
        .{ 7, 13, 3, 3, 2, 2, 1, 1, 1, 1 },
        .{ 9, 33, 3, 3, 2, 1, 1, 1, 1, 1 },
        .{ 12, 35, 5, 5, 1, 2, 2, 2, 1, 1 },
        .{ 11, 17, 3, 3, 1, 1, 0, 0, 1, 1 },
        .{ 11, 17, 3, 3, 2, 2, 0, 0, 1, 1 },
        .{ 13, 19, 3, 3, 1, 1, 2, 2, 2, 2 },
        .{ 13, 19, 3, 5, 2, 2, 2, 1, 2, 1 },
        .{ 6, 40, 5, 5, 2, 1, 2, 2, 1, 1 },
        .{ 3, 80, 5, 5, 1, 1, 2, 2, 1, 1 },
        .{ 40, 40, 3, 3, 2, 2, 1, 1, 1, 1 },
        .{ 5, 31, 7, 7, 1, 2, 3, 3, 1, 1 },
        .{ 2, 3, 3, 3, 2, 2, 1, 1, 1, 1 },
        // Planes of 2-3 rows, where most taps fall on padding rows (skipped), at both row
        // strides and both phases of the first image row; and padding taller than the
        // image, where whole output rows see no image row (bias only).
        .{ 2, 96, 5, 5, 1, 1, 2, 2, 1, 1 },
        .{ 2, 9, 5, 5, 1, 1, 2, 2, 1, 1 },
        .{ 3, 37, 5, 5, 2, 1, 2, 2, 1, 1 },
        .{ 3, 21, 5, 5, 2, 1, 1, 2, 1, 1 },
        .{ 1, 50, 5, 3, 1, 1, 3, 1, 1, 1 },
        .{ 2, 17, 3, 3, 2, 2, 3, 1, 1, 1 },
        // At most three output rows, whose groups take up to six vectors of each row: five
        // vectors, six, and seven (a group of six and one of one), at both row strides.
        .{ 2, 80, 3, 3, 1, 1, 1, 1, 1, 1 },
        .{ 5, 90, 5, 5, 2, 1, 2, 2, 1, 1 },
        .{ 3, 100, 5, 5, 1, 1, 2, 2, 1, 1 },
        .{ 1, 111, 3, 5, 1, 1, 1, 2, 1, 1 },
        // Stride 2 on both axes (5 × 5 by the flat pass, 3 × 3 by rows): odd heights and
        // widths, vectors that end past the plane, padding on one axis only, and rows of one
        // output column.
        .{ 21, 19, 5, 5, 2, 2, 2, 2, 1, 1 },
        .{ 39, 41, 3, 3, 2, 2, 1, 1, 1, 1 },
        .{ 17, 35, 5, 5, 2, 2, 1, 2, 1, 1 },
        .{ 23, 2, 3, 3, 2, 2, 0, 1, 1, 1 },
        .{ 9, 63, 3, 3, 2, 2, 1, 0, 1, 1 },
        // Stride 1, 5 × 5, rows of under one vector: the flat pass too.
        .{ 13, 11, 5, 5, 1, 1, 2, 2, 1, 1 },
        .{ 4, 15, 5, 5, 1, 1, 1, 2, 1, 1 },
    };
    const epilogues = [_]Epilogue{ .{}, Epilogue.relu, .{ .activation = .hard_swish }, .{ .activation = .hard_swish, .scale = 0.5, .shift = -1 } };
    for (cases, 0..) |c, index| {
        const window: Window = .{
            .image = .{ c[0], c[1] },
            .grid = .{ (c[0] + 2 * c[6] - (c[2] - 1) * c[8] - 1) / c[4] + 1, (c[1] + 2 * c[7] - (c[3] - 1) * c[9] - 1) / c[5] + 1 },
            .kernel = .{ c[2], c[3] },
            .stride = .{ c[4], c[5] },
            .padding = .{ c[6], c[7] },
            .dilation = .{ c[8], c[9] },
        };
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
        const plan: Plan = .of(window);
        const scratch = try allocator.alloc(f32, plan.scratchFloats());
        defer allocator.free(scratch);
        // NaN in the scratch would show up in the output if a read strayed off the zeroed
        // padding; prepare must clear it.
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
