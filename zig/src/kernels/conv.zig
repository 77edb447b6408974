//! 2-D convolution kernels, NCHW float32: im2col and its adjoint col2im (which turn a
//! convolution into a GEMM), the bias-and-relu epilogue, and direct row kernels for depthwise
//! convolutions (the whole-plane one is in conv_depthwise.zig). Every kernel works on one image plane (or one block of columns) handed to
//! it by ops/conv.zig, which checks the shapes and splits the work over the intra-op pool.
//!
//! The scalar references at the bottom are direct loops with f64 accumulation; the tests
//! compare every kernel against them.
const std = @import("std");
const math = @import("math.zig");

const lanes = math.lanes;
const V = math.V;

/// How a kernel window slides over an image. Axis 0 is height, axis 1 is width. Position g
/// on the grid with kernel tap k reads image index g·stride − padding + k·dilation.
///
/// A convolution reads its input (the image) at every output position (the grid); a
/// transposed convolution scatters every input position (the grid) into its output (the
/// image); pooling windows read their input like a convolution.
pub const Window = struct {
    image: [2]usize,
    grid: [2]usize,
    kernel: [2]usize,
    stride: [2]usize,
    padding: [2]usize,
    dilation: [2]usize,

    pub fn imagePlane(window: Window) usize {
        return window.image[0] * window.image[1];
    }

    pub fn gridPlane(window: Window) usize {
        return window.grid[0] * window.grid[1];
    }

    pub fn taps(window: Window) usize {
        return window.kernel[0] * window.kernel[1];
    }

    /// The grid positions along `axis` at which kernel tap `tap` reads inside the image.
    pub fn span(window: Window, axis: u1, tap: usize) Span {
        return validSpan(window.grid[axis], window.image[axis], window.stride[axis], window.padding[axis], tap * window.dilation[axis]);
    }

    /// The kernel taps along `axis` that read inside the image at grid position `position`.
    pub fn tapSpan(window: Window, axis: u1, position: usize) Span {
        const base = position * window.stride[axis];
        const dilation = window.dilation[axis];
        const padding = window.padding[axis];
        // Tap k reads base + k·dilation − padding: inside iff padding ≤ base + k·d < limit.
        const limit = window.image[axis] + padding;
        if (base >= limit) return .{ .begin = 0, .end = 0 };
        const begin = if (padding > base) std.math.divCeil(usize, padding - base, dilation) catch unreachable else 0;
        const end = @min(window.kernel[axis], (limit - base - 1) / dilation + 1);
        return .{ .begin = @min(begin, end), .end = end };
    }

    /// The image index read at grid position `position` by tap `tap`; `position` must lie in
    /// `span(axis, tap)`.
    pub fn imageIndex(window: Window, axis: u1, position: usize, tap: usize) usize {
        const index = position * window.stride[axis] + tap * window.dilation[axis] - window.padding[axis];
        std.debug.assert(index < window.image[axis]);
        return index;
    }
};

/// A half-open range [begin, end) of grid positions.
pub const Span = struct {
    begin: usize,
    end: usize,

    pub fn contains(s: Span, position: usize) bool {
        return position >= s.begin and position < s.end;
    }
};

/// Grid positions g in [0, grid) with 0 ≤ g·stride − padding + offset < image.
pub fn validSpan(grid: usize, image: usize, stride: usize, padding: usize, offset: usize) Span {
    std.debug.assert(stride > 0);
    const limit = image + padding;
    if (offset >= limit) return .{ .begin = 0, .end = 0 };
    const begin = if (padding > offset) std.math.divCeil(usize, padding - offset, stride) catch unreachable else 0;
    const end = @min(grid, (limit - offset - 1) / stride + 1);
    return .{ .begin = @min(begin, end), .end = end };
}

/// Unfolds image channels into a [channels·kh·kw, column_count] block (row-major, rows
/// (channel, ky, kx), columns the grid positions column_begin …): each column holds the
/// window read at that grid position, zero where it falls in the padding.
pub fn im2col(window: Window, image: []const f32, channels: usize, column_begin: usize, column_count: usize, columns: []f32) void {
    const plane = window.imagePlane();
    std.debug.assert(image.len >= channels * plane);
    std.debug.assert(columns.len >= channels * window.taps() * column_count);
    std.debug.assert(column_begin + column_count <= window.gridPlane());
    var row: usize = 0;
    for (0..channels) |channel| {
        const source = image[channel * plane ..][0..plane];
        for (0..window.kernel[0]) |ky| for (0..window.kernel[1]) |kx| {
            unfoldRow(window, source, ky, kx, column_begin, columns[row * column_count ..][0..column_count]);
            row += 1;
        };
    }
}

/// One row of im2col: tap (ky, kx) of one channel at grid positions column_begin ….
fn unfoldRow(window: Window, source: []const f32, ky: usize, kx: usize, column_begin: usize, destination: []f32) void {
    const rows = window.span(0, ky);
    const cols = window.span(1, kx);
    const grid_width = window.grid[1];
    var gy = column_begin / grid_width;
    var gx = column_begin % grid_width;
    var written: usize = 0;
    // Padding leaves a few zeros at each segment's ends; one memset of the whole row beats a
    // pair of tiny memsets per segment (narrow grids have many segments per row).
    const padded = window.padding[0] != 0 or window.padding[1] != 0;
    if (padded) @memset(destination, 0);
    while (written < destination.len) {
        const count = @min(grid_width - gx, destination.len - written);
        const segment = destination[written..][0..count];
        if (rows.contains(gy)) {
            const iy = window.imageIndex(0, gy, ky);
            const source_row = source[iy * window.image[1] ..][0..window.image[1]];
            const inside = insideOf(segment.len, gx, cols);
            if (!padded) {
                @memset(segment[0..inside.begin], 0);
                @memset(segment[inside.end..], 0);
            }
            if (inside.end > inside.begin) {
                const first = window.imageIndex(1, gx + inside.begin, kx);
                const target = segment[inside.begin..inside.end];
                switch (window.stride[1]) {
                    1 => @memcpy(target, source_row[first..][0..target.len]),
                    // The rest of the plane, not just the row: a short last vector may then
                    // load past the row's end (into the next row, values it does not keep).
                    2 => gatherStrided(2, target, source[iy * window.image[1] ..], first),
                    else => |stride| for (target, 0..) |*x, i| {
                        x.* = source_row[first + i * stride];
                    },
                }
            }
        } else if (!padded) @memset(segment, 0);
        written += count;
        gy += 1;
        gx = 0;
    }
}

/// target[i] = source[first + i·stride] for a compile-time stride: vector loads of the
/// spanned elements, every stride-th one kept.
fn gatherStrided(comptime stride: usize, target: []f32, source: []const f32, first: usize) void {
    std.debug.assert(target.len > 0);
    std.debug.assert(first + (target.len - 1) * stride < source.len);
    const loaded_lanes = (lanes - 1) * stride + 1;
    const keep = comptime stridedMask(stride);
    var i: usize = 0;
    while (i + lanes <= target.len) : (i += lanes) {
        target[i..][0..lanes].* = stridedLoad(stride, source, first + i * stride);
    }
    if (i < target.len and first + i * stride + loaded_lanes <= source.len) {
        // A short tail as one vector when the loaded span stays inside `source`.
        const loaded: @Vector(loaded_lanes, f32) = source[first + i * stride ..][0..loaded_lanes].*;
        const kept: [lanes]f32 = @shuffle(f32, loaded, undefined, keep);
        @memcpy(target[i..], kept[0 .. target.len - i]);
        return;
    }
    while (i < target.len) : (i += 1) target[i] = source[first + i * stride];
}

/// Shuffle mask picking lanes 0, stride, 2·stride, … of a loaded vector.
pub fn stridedMask(comptime stride: usize) [lanes]i32 {
    var mask: [lanes]i32 = undefined;
    for (&mask, 0..) |*m, i| m.* = @intCast(i * stride);
    return mask;
}

/// Lanes source[first], source[first + stride], …, source[first + (lanes − 1)·stride], the
/// last of which must lie in `source`. Where `source` goes on past it, as whole vectors:
/// loading exactly the (lanes − 1)·stride + 1 floats needed (31 at stride 2) makes LLVM
/// assemble the last vector piecemeal (six loads and inserts on AVX-512).
pub inline fn stridedLoad(comptime stride: usize, source: []const f32, first: usize) V {
    const exact = (lanes - 1) * stride + 1;
    const whole = lanes * stride;
    const keep = comptime stridedMask(stride);
    std.debug.assert(first + exact <= source.len);
    if (stride == 1) return source[first..][0..lanes].*;
    if (first + whole <= source.len) {
        const loaded: @Vector(whole, f32) = source[first..][0..whole].*;
        return @shuffle(f32, loaded, undefined, keep);
    }
    const loaded: @Vector(exact, f32) = source[first..][0..exact].*;
    return @shuffle(f32, loaded, undefined, keep);
}

/// The part of a segment (grid positions [start, start + length)) inside `valid`, as
/// offsets into the segment.
fn insideOf(length: usize, start: usize, valid: Span) Span {
    const begin = std.math.clamp(valid.begin, start, start + length) - start;
    const end = std.math.clamp(valid.end, start + begin, start + length) - start;
    return .{ .begin = begin, .end = end };
}

/// The adjoint of im2col: adds each column value of a [channels·kh·kw, column_count] block
/// into the image position its tap reads. Used by the transposed convolution, where the
/// grid is the input and the image the output. Channels [channel_begin, channel_end) only,
/// so that threads can own disjoint output planes.
pub fn col2im(
    window: Window,
    columns: []const f32,
    column_begin: usize,
    column_count: usize,
    channel_begin: usize,
    channel_end: usize,
    image: []f32,
) void {
    const plane = window.imagePlane();
    std.debug.assert(image.len >= channel_end * plane);
    std.debug.assert(columns.len >= channel_end * window.taps() * column_count);
    std.debug.assert(column_begin + column_count <= window.gridPlane());
    for (channel_begin..channel_end) |channel| {
        const target = image[channel * plane ..][0..plane];
        var row = channel * window.taps();
        for (0..window.kernel[0]) |ky| for (0..window.kernel[1]) |kx| {
            foldRow(window, columns[row * column_count ..][0..column_count], ky, kx, column_begin, target);
            row += 1;
        };
    }
}

fn foldRow(window: Window, source: []const f32, ky: usize, kx: usize, column_begin: usize, target: []f32) void {
    const rows = window.span(0, ky);
    const cols = window.span(1, kx);
    const grid_width = window.grid[1];
    var gy = column_begin / grid_width;
    var gx = column_begin % grid_width;
    var read: usize = 0;
    while (read < source.len) {
        const count = @min(grid_width - gx, source.len - read);
        if (rows.contains(gy)) {
            const iy = window.imageIndex(0, gy, ky);
            const target_row = target[iy * window.image[1] ..][0..window.image[1]];
            const inside = insideOf(count, gx, cols);
            if (inside.end > inside.begin) {
                const first = window.imageIndex(1, gx + inside.begin, kx);
                const values = source[read + inside.begin .. read + inside.end];
                const stride = window.stride[1];
                for (values, 0..) |x, i| target_row[first + i * stride] += x;
            }
        }
        read += count;
        gy += 1;
        gx = 0;
    }
}

/// The activation a convolution's epilogue applies after the bias.
pub const Activation = enum(u8) {
    none = 0,
    relu = 1,
    /// x · clamp(x / 6 + 1/2, 0, 1), as ONNX HardSwish and torch.nn.Hardswish.
    hard_swish = 2,
};

/// What a convolution does to each output value after the sum of products, fused so that
/// the values are touched once while still in cache: y = act(sum + bias) · scale + shift.
/// (The ONNX importer folds the chains PaddleOCR-style models export, Conv → Mul/Add by a
/// constant → HardSwish → Mul/Add by a constant, into this.) NaN stays NaN throughout, as in
/// PyTorch.
pub const Epilogue = struct {
    activation: Activation = .none,
    scale: f32 = 1,
    shift: f32 = 0,

    pub const relu: Epilogue = .{ .activation = .relu };

    /// Whether only a bias remains to add (nothing to do when the bias is 0 too).
    pub fn isLinear(epilogue: Epilogue) bool {
        return epilogue.activation == .none and epilogue.scale == 1 and epilogue.shift == 0;
    }

    pub fn vector(epilogue: Epilogue, x: V) V {
        const zero: V = @splat(0);
        const y = switch (epilogue.activation) {
            .none => x,
            .relu => @select(f32, x < zero, zero, x),
            // min/max written as selects that keep NaN (x < lo is false for NaN).
            .hard_swish => blk: {
                const t = @mulAdd(V, x, @as(V, @splat(1.0 / 6.0)), @as(V, @splat(0.5)));
                const low = @select(f32, t < zero, zero, t);
                const one: V = @splat(1);
                break :blk x * @select(f32, low > one, one, low);
            },
        };
        if (epilogue.scale == 1 and epilogue.shift == 0) return y;
        return @mulAdd(V, y, @as(V, @splat(epilogue.scale)), @as(V, @splat(epilogue.shift)));
    }

    pub fn scalar(epilogue: Epilogue, x: f32) f32 {
        const y = switch (epilogue.activation) {
            .none => x,
            .relu => if (x < 0) 0 else x,
            .hard_swish => blk: {
                const t = @mulAdd(f32, x, 1.0 / 6.0, 0.5);
                const low = if (t < 0) 0 else t;
                break :blk x * (if (low > 1) 1 else low);
            },
        };
        if (epilogue.scale == 1 and epilogue.shift == 0) return y;
        return @mulAdd(f32, y, epilogue.scale, epilogue.shift);
    }

    /// destination = epilogue(source + bias): the copy and the epilogue in one pass.
    pub fn applyCopy(epilogue: Epilogue, destination: []f32, source: []const f32, bias: f32) void {
        std.debug.assert(destination.len == source.len);
        const bias_vector: V = @splat(bias);
        var i: usize = 0;
        while (i + lanes <= source.len) : (i += lanes) destination[i..][0..lanes].* = epilogue.vector(@as(V, source[i..][0..lanes].*) + bias_vector);
        for (destination[i..], source[i..]) |*d, x| d.* = epilogue.scalar(x + bias);
    }

    /// row = epilogue(row + bias).
    pub fn apply(epilogue: Epilogue, row: []f32, bias: f32) void {
        if (bias == 0 and epilogue.isLinear()) return;
        const bias_vector: V = @splat(bias);
        var i: usize = 0;
        while (i + lanes <= row.len) : (i += lanes) {
            row[i..][0..lanes].* = epilogue.vector(@as(V, row[i..][0..lanes].*) + bias_vector);
        }
        for (row[i..]) |*x| x.* = epilogue.scalar(x.* + bias);
    }
};

/// Output rows [row_begin, row_end) of one depthwise plane (one input plane per output
/// plane): output[oy, ox] = bias + Σ weights[ky·kw + kx] · plane[oy·s − p + ky·d,
/// ox·s − p + kx·d], then the epilogue. `output` is the whole output plane. Where every tap of a
/// row lies inside the image, 16 outputs at a time sum all taps in one vector register (the
/// last block overlaps the one before instead of leaving a scalar tail); the padded borders
/// go point by point.
pub fn depthwiseRows(window: Window, plane: []const f32, weights: []const f32, bias: f32, epilogue: Epilogue, row_begin: usize, row_end: usize, output: []f32) void {
    std.debug.assert(plane.len == window.imagePlane());
    std.debug.assert(weights.len == window.taps());
    std.debug.assert(output.len == window.gridPlane());
    std.debug.assert(row_begin <= row_end and row_end <= window.grid[0]);
    switch (window.stride[1]) {
        inline 1, 2 => |stride| if (depthwiseRowsPadded(stride, window, plane, weights, bias, epilogue, row_begin, row_end, output)) return,
        else => {},
    }
    // Interior: from the first position where tap 0 is inside to the last where the last tap is.
    const first_tap = window.span(1, 0);
    const last_tap = window.span(1, window.kernel[1] - 1);
    const inner: Span = .{ .begin = first_tap.begin, .end = @max(first_tap.begin, last_tap.end) };
    const width = window.grid[1];
    for (row_begin..row_end) |oy| {
        const row = output[oy * width ..][0..width];
        const rows = window.tapSpan(0, oy);
        for (0..inner.begin) |ox| row[ox] = depthwisePoint(window, plane, weights, bias, oy, rows, ox);
        for (inner.end..width) |ox| row[ox] = depthwisePoint(window, plane, weights, bias, oy, rows, ox);
        if (inner.end - inner.begin < lanes) {
            for (inner.begin..inner.end) |ox| row[ox] = depthwisePoint(window, plane, weights, bias, oy, rows, ox);
        } else switch (window.stride[1]) {
            1 => depthwiseInterior(1, window, plane, weights, bias, oy, rows, inner, row),
            2 => depthwiseInterior(2, window, plane, weights, bias, oy, rows, inner, row),
            else => for (inner.begin..inner.end) |ox| {
                row[ox] = depthwisePoint(window, plane, weights, bias, oy, rows, ox);
            },
        }
        epilogue.apply(row, 0);
    }
}

/// Floats of stack scratch `depthwiseRowsBuffered` may use: the kernel-height input rows,
/// each split into its stride phases (32 KiB, well inside L1 plus the stack budget the
/// other depthwise path already takes).
const buffered_floats_max = 8192;
/// Most kernel rows (one buffered input row each) and columns the buffered path takes.
const buffered_rows_max = 16;
/// Output vectors computed together: eight independent FMA chains hide the FMA latency
/// (four cycles, two issued per cycle) on every tap.
const buffered_vectors = 8;

/// How `depthwiseRowsBuffered` lays out one buffered input row: `stride` phases of
/// `phase_len` floats, phase p holding padded columns p, p + stride, p + 2·stride, …, so
/// that tap kx of output x reads phase (kx·d mod s) at x + ⌊kx·d / s⌋: a contiguous run
/// for every stride, no gathers in the inner loop.
pub const PhasedRow = struct {
    phase_len: usize,
    stride: usize,

    pub fn of(window: Window) PhasedRow {
        const blocks = std.math.divCeil(usize, window.grid[1], lanes) catch unreachable;
        const reach = (window.kernel[1] - 1) * window.dilation[1] / window.stride[1];
        return .{ .phase_len = blocks * lanes + reach, .stride = window.stride[1] };
    }

    pub fn len(row: PhasedRow) usize {
        return row.phase_len * row.stride;
    }

    /// Offset in a buffered row of tap kx's run.
    pub fn tapOffset(row: PhasedRow, window: Window, kx: usize) usize {
        const shift = kx * window.dilation[1];
        return (shift % row.stride) * row.phase_len + shift / row.stride;
    }
};

/// Whether `depthwiseRowsBuffered` handles this window (its rows fit the stack scratch).
pub fn bufferedApplies(window: Window) bool {
    if (window.kernel[0] > buffered_rows_max or window.kernel[1] > buffered_rows_max) return false;
    const row = PhasedRow.of(window).len();
    return row <= buffered_floats_max / window.kernel[0];
}

/// Output rows [row_begin, row_end) of one depthwise plane, like `depthwiseRows`, through
/// a small ring of zero-padded input rows split into stride phases (see PhasedRow): each
/// input row is copied once per call however many output rows read it, every tap of every
/// output (borders included) is one contiguous vector load, and eight output vectors are
/// summed at a time with the epilogue applied in registers. No plane-sized copy: the input
/// is read once from memory and the output written once. Callers check `bufferedApplies`.
pub fn depthwiseRowsBuffered(window: Window, plane: []const f32, weights: []const f32, bias: f32, epilogue: Epilogue, row_begin: usize, row_end: usize, output: []f32) void {
    std.debug.assert(plane.len == window.imagePlane());
    std.debug.assert(weights.len == window.taps());
    std.debug.assert(output.len == window.gridPlane());
    std.debug.assert(row_begin <= row_end and row_end <= window.grid[0]);
    std.debug.assert(bufferedApplies(window));
    const layout = PhasedRow.of(window);
    const row_len = layout.len();
    const kernel_h = window.kernel[0];
    const kernel_w = window.kernel[1];
    var buffer: [buffered_floats_max]f32 = undefined;
    // tags[slot]: the padded input row held in slot, or none.
    const none = std.math.maxInt(usize);
    var tags: [buffered_rows_max]usize = @splat(none);
    var bases: [buffered_rows_max]usize = undefined;
    var tap_offsets: [buffered_rows_max]usize = undefined;
    for (0..kernel_w) |kx| tap_offsets[kx] = layout.tapOffset(window, kx);
    const out_w = window.grid[1];
    const blocks = std.math.divCeil(usize, out_w, lanes) catch unreachable;
    for (row_begin..row_end) |oy| {
        const top = oy * window.stride[0];
        for (0..kernel_h) |ky| {
            const slot = bufferedSlot(tags[0..kernel_h], top, window.dilation[0], top + ky * window.dilation[0]);
            bases[ky] = slot * row_len;
            if (tags[slot] != top + ky * window.dilation[0]) {
                tags[slot] = top + ky * window.dilation[0];
                fillPhases(window, plane, tags[slot], layout, buffer[bases[ky]..][0..row_len]);
            }
        }
        const row = output[oy * out_w ..][0..out_w];
        var block: usize = 0;
        while (block < blocks) {
            const count = @min(blocks - block, buffered_vectors);
            switch (count) {
                inline 1...buffered_vectors => |c| bufferedVectors(c, buffer[0 .. kernel_h * row_len], bases[0..kernel_h], tap_offsets[0..kernel_w], weights, bias, epilogue, block * lanes, row),
                else => unreachable,
            }
            block += count;
        }
    }
}

/// The slot of the ring holding padded row `wanted`, or the one to refill with it: a slot
/// whose row the current output row (kernel rows top, top + dilation, …) does not read.
pub fn bufferedSlot(tags: []const usize, top: usize, dilation: usize, wanted: usize) usize {
    for (tags, 0..) |tag, slot| if (tag == wanted) return slot;
    for (tags, 0..) |tag, slot| {
        const needed = tag != std.math.maxInt(usize) and tag >= top and (tag - top) % dilation == 0 and (tag - top) / dilation < tags.len;
        if (!needed) return slot;
    }
    // At most kernel_h − 1 other needed rows are held, so a free slot always exists.
    unreachable;
}

/// Padded input row `padded_row` of `plane`, split into phases: phase p, index j holds
/// padded column p + j·stride (zero in the padding and past the image).
pub fn fillPhases(window: Window, plane: []const f32, padded_row: usize, layout: PhasedRow, target: []f32) void {
    std.debug.assert(target.len == layout.len());
    const pad_top = window.padding[0];
    if (padded_row < pad_top or padded_row - pad_top >= window.image[0]) {
        @memset(target, 0);
        return;
    }
    const in_w = window.image[1];
    // The rest of the plane, not just the row: gatherStrided may then load a whole vector
    // past the row's end (values it does not keep).
    const source = plane[(padded_row - pad_top) * in_w ..];
    for (0..layout.stride) |phase| {
        const destination = target[phase * layout.phase_len ..][0..layout.phase_len];
        const inside = validSpan(layout.phase_len, in_w, layout.stride, window.padding[1], phase);
        @memset(destination[0..inside.begin], 0);
        @memset(destination[inside.end..], 0);
        if (inside.end == inside.begin) continue;
        const first = inside.begin * layout.stride + phase - window.padding[1];
        const values = destination[inside.begin..inside.end];
        switch (layout.stride) {
            1 => copyShort(values, source[first..][0..values.len]),
            2 => gatherStrided(2, values, source, first),
            else => |stride| for (values, 0..) |*x, i| {
                x.* = source[first + i * stride];
            },
        }
    }
}

/// `count` vectors of outputs from x = start on, every tap a contiguous run of a buffered
/// row, the epilogue applied before the store (the last vector stored partly when the row
/// ends inside it).
fn bufferedVectors(
    comptime count: usize,
    buffer: []const f32,
    bases: []const usize,
    tap_offsets: []const usize,
    weights: []const f32,
    bias: f32,
    epilogue: Epilogue,
    start: usize,
    row: []f32,
) void {
    const kernel_w = tap_offsets.len;
    var sums: [count]V = @splat(@splat(bias));
    for (bases, 0..) |base, ky| {
        for (tap_offsets, 0..) |offset, kx| {
            const weight: V = @splat(weights[ky * kernel_w + kx]);
            const source = buffer[base + offset + start ..][0 .. count * lanes];
            inline for (&sums, 0..) |*sum, k| sum.* = @mulAdd(V, weight, source[k * lanes ..][0..lanes].*, sum.*);
        }
    }
    inline for (sums, 0..) |sum, k| {
        const at = start + k * lanes;
        const y = epilogue.vector(sum);
        if (at + lanes <= row.len) {
            row[at..][0..lanes].* = y;
        } else if (at < row.len) {
            const values: [lanes]f32 = y;
            @memcpy(row[at..], values[0 .. row.len - at]);
        }
    }
}

/// One copy of an image plane for an implicit GEMM (ops/conv.zig runImplicit): `target`
/// (size[0] rows of size[1]) holds at (j, i) the zero-padded plane at padded row
/// j·stride[0] + offset[0] and column i·stride[1] + offset[1], zero in the padding and past
/// it. offset[0] is a row phase (below the stride), offset[1] a column phase or a column
/// tap's offset kx·d.
/// Rows are often short: inline vector copies, not a libc call per row.
pub fn phasePlane(window: Window, plane: []const f32, offset: [2]usize, size: [2]usize, target: []f32) void {
    std.debug.assert(plane.len == window.imagePlane());
    std.debug.assert(target.len == size[0] * size[1]);
    std.debug.assert(offset[0] < window.stride[0]);
    const in_w = window.image[1];
    const rows = validSpan(size[0], window.image[0], window.stride[0], window.padding[0], offset[0]);
    const cols = validSpan(size[1], in_w, window.stride[1], window.padding[1], offset[1]);
    @memset(target[0 .. rows.begin * size[1]], 0);
    @memset(target[rows.end * size[1] ..], 0);
    for (rows.begin..rows.end) |j| {
        const row = target[j * size[1] ..][0..size[1]];
        for (row[0..cols.begin]) |*x| x.* = 0;
        for (row[cols.end..]) |*x| x.* = 0;
        if (cols.end == cols.begin) continue;
        const iy = j * window.stride[0] + offset[0] - window.padding[0];
        const first = cols.begin * window.stride[1] + offset[1] - window.padding[1];
        const inside = row[cols.begin..cols.end];
        switch (window.stride[1]) {
            1 => copyShort(inside, plane[iy * in_w + first ..][0..inside.len]),
            // The rest of the plane, not just the row (as unfoldRow).
            2 => gatherStrided(2, inside, plane[iy * in_w ..], first),
            else => |stride| for (inside, 0..) |*x, i| {
                x.* = plane[iy * in_w + first + i * stride];
            },
        }
    }
}

/// destination = source for short rows: vectors, then a scalar tail.
fn copyShort(destination: []f32, source: []const f32) void {
    std.debug.assert(destination.len == source.len);
    var i: usize = 0;
    while (i + lanes <= source.len) : (i += lanes) destination[i..][0..lanes].* = source[i..][0..lanes].*;
    for (destination[i..], source[i..]) |*d, x| d.* = x;
}

/// Floats of stack scratch for the padded depthwise path: the kernel-height input rows one
/// output row reads, each zero-padded to cover whole 16-lane blocks.
const depthwise_scratch = 8192;

/// Depthwise rows through a zero-padded copy of the input rows each output row reads: every
/// output, border or not, is then one strided vector load per tap (no per-point bounds
/// checks, which cost more than the arithmetic on the small feature maps of mobile CNNs).
/// Returns false when the padded rows would not fit the scratch.
fn depthwiseRowsPadded(comptime stride: usize, window: Window, plane: []const f32, weights: []const f32, bias: f32, epilogue: Epilogue, row_begin: usize, row_end: usize, output: []f32) bool {
    const kernel_h = window.kernel[0];
    const kernel_w = window.kernel[1];
    const out_w = window.grid[1];
    const in_w = window.image[1];
    const blocks = std.math.divCeil(usize, out_w, lanes) catch unreachable;
    const padded_width = (blocks * lanes - 1) * stride + (kernel_w - 1) * window.dilation[1] + 1;
    // Wide rows are mostly interior, where the unpadded path (four blocks in flight, no copy)
    // is faster; narrow ones are mostly border.
    if (blocks == 0 or out_w > 48 or padded_width * kernel_h > depthwise_scratch) return false;
    var scratch: [depthwise_scratch]f32 = undefined;
    const pad_left = window.padding[1];
    for (row_begin..row_end) |oy| {
        for (0..kernel_h) |ky| {
            const destination = scratch[ky * padded_width ..][0..padded_width];
            @memset(destination, 0);
            const top = oy * window.stride[0] + ky * window.dilation[0];
            if (top < window.padding[0] or top - window.padding[0] >= window.image[0]) continue;
            const source = plane[(top - window.padding[0]) * in_w ..][0..in_w];
            if (pad_left >= padded_width) continue;
            const copied = @min(in_w, padded_width - pad_left);
            @memcpy(destination[pad_left..][0..copied], source[0..copied]);
        }
        const row = output[oy * out_w ..][0..out_w];
        for (0..blocks) |block| {
            const start = block * lanes;
            var sum: V = @splat(bias);
            for (0..kernel_h) |ky| {
                const source = scratch[ky * padded_width ..][0..padded_width];
                for (0..kernel_w) |kx| {
                    const weight: V = @splat(weights[ky * kernel_w + kx]);
                    const at = start * stride + kx * window.dilation[1];
                    sum = @mulAdd(V, weight, stridedLoad(stride, source, at), sum);
                }
            }
            const count = @min(lanes, out_w - start);
            const values: [lanes]f32 = sum;
            @memcpy(row[start..][0..count], values[0..count]);
        }
        epilogue.apply(row, 0);
    }
    return true;
}

/// Vector blocks of 16 outputs at `inner.begin`, +16, … and a last one ending at
/// `inner.end`, computed up to four at a time so that four independent FMA chains hide
/// the FMA latency.
fn depthwiseInterior(comptime stride: usize, window: Window, plane: []const f32, weights: []const f32, bias: f32, oy: usize, rows: Span, inner: Span, row: []f32) void {
    std.debug.assert(inner.end - inner.begin >= lanes);
    const blocks = std.math.divCeil(usize, inner.end - inner.begin, lanes) catch unreachable;
    var block: usize = 0;
    while (block < blocks) {
        const count = @min(blocks - block, 4);
        var starts: [4]usize = undefined;
        for (0..count) |i| starts[i] = @min(inner.begin + (block + i) * lanes, inner.end - lanes);
        switch (count) {
            inline 1...4 => |c| depthwiseVectors(stride, c, window, plane, weights, bias, oy, rows, starts[0..c].*, row),
            else => unreachable,
        }
        block += count;
    }
}

/// One output of a depthwise row, taps checked against the image borders.
fn depthwisePoint(window: Window, plane: []const f32, weights: []const f32, bias: f32, oy: usize, rows: Span, ox: usize) f32 {
    const cols = window.tapSpan(1, ox);
    const width = window.image[1];
    var sum = bias;
    for (rows.begin..rows.end) |ky| {
        const row = plane[window.imageIndex(0, oy, ky) * width ..][0..width];
        for (cols.begin..cols.end) |kx| sum = @mulAdd(f32, weights[ky * window.kernel[1] + kx], row[window.imageIndex(1, ox, kx)], sum);
    }
    return sum;
}

/// `count` blocks of 16 outputs (at `starts`) of a depthwise row whose every tap is inside
/// the image along the width, for a compile-time stride: each tap is one (strided) vector
/// load per block.
fn depthwiseVectors(
    comptime stride: usize,
    comptime count: usize,
    window: Window,
    plane: []const f32,
    weights: []const f32,
    bias: f32,
    oy: usize,
    rows: Span,
    starts: [count]usize,
    row: []f32,
) void {
    const width = window.image[1];
    var sums: [count]V = @splat(@splat(bias));
    for (rows.begin..rows.end) |ky| {
        const source = plane[window.imageIndex(0, oy, ky) * width ..][0..width];
        for (0..window.kernel[1]) |kx| {
            const weight: V = @splat(weights[ky * window.kernel[1] + kx]);
            inline for (&sums, starts) |*sum, start| {
                sum.* = @mulAdd(V, weight, stridedLoad(stride, source, window.imageIndex(1, start, kx)), sum.*);
            }
        }
    }
    inline for (sums, starts) |sum, start| row[start..][0..lanes].* = sum;
}

/// The shape of a (possibly transposed, possibly grouped) convolution over a batch.
/// For conv2d the window's image is the input and its grid the output; for the transposed
/// convolution it is the other way round.
pub const Geometry = struct {
    batch: usize,
    in_channels: usize,
    out_channels: usize,
    groups: usize,
    window: Window,

    pub fn inPerGroup(geometry: Geometry) usize {
        return geometry.in_channels / geometry.groups;
    }

    pub fn outPerGroup(geometry: Geometry) usize {
        return geometry.out_channels / geometry.groups;
    }
};

/// The epilogue in f64, written out from its definition.
fn referenceEpilogue(epilogue: Epilogue, sum: f64) f32 {
    const y: f64 = switch (epilogue.activation) {
        .none => sum,
        .relu => @max(sum, 0),
        .hard_swish => sum * std.math.clamp(sum / 6 + 0.5, 0, 1),
    };
    return @floatCast(y * epilogue.scale + epilogue.shift);
}

/// The epilogues the tests run every kernel with.
pub const test_epilogues = [_]Epilogue{ .{}, Epilogue.relu, .{ .activation = .hard_swish, .scale = 0.75, .shift = -0.5 }, .{ .scale = 2, .shift = 0.25 } };

/// Direct convolution: output [batch, out_channels, grid] from input [batch, in_channels,
/// image] and weight [out_channels, in_channels / groups, kh, kw].
pub fn reference(geometry: Geometry, input: []const f32, weight: []const f32, bias: ?[]const f32, epilogue: Epilogue, output: []f32) void {
    const w = geometry.window;
    const in_group = geometry.inPerGroup();
    const out_group = geometry.outPerGroup();
    for (0..geometry.batch) |b| for (0..geometry.out_channels) |oc| {
        const group = oc / out_group;
        for (0..w.grid[0]) |oy| for (0..w.grid[1]) |ox| {
            var sum: f64 = if (bias) |values| values[oc] else 0;
            for (0..in_group) |c| for (0..w.kernel[0]) |ky| for (0..w.kernel[1]) |kx| {
                const iy = @as(i64, @intCast(oy * w.stride[0] + ky * w.dilation[0])) - @as(i64, @intCast(w.padding[0]));
                const ix = @as(i64, @intCast(ox * w.stride[1] + kx * w.dilation[1])) - @as(i64, @intCast(w.padding[1]));
                if (iy < 0 or ix < 0 or iy >= w.image[0] or ix >= w.image[1]) continue;
                const ic = group * in_group + c;
                const x = input[((b * geometry.in_channels + ic) * w.image[0] + @as(usize, @intCast(iy))) * w.image[1] + @as(usize, @intCast(ix))];
                sum += @as(f64, x) * weight[((oc * in_group + c) * w.kernel[0] + ky) * w.kernel[1] + kx];
            };
            output[((b * geometry.out_channels + oc) * w.grid[0] + oy) * w.grid[1] + ox] = referenceEpilogue(epilogue, sum);
        };
    };
}

/// Direct transposed convolution: output [batch, out_channels, image] from input [batch,
/// in_channels, grid] and weight [in_channels, out_channels / groups, kh, kw]. Written as a
/// gather (which input positions land on this output?) so that it shares no code with the
/// col2im scatter it checks.
pub fn referenceTranspose(geometry: Geometry, input: []const f32, weight: []const f32, bias: ?[]const f32, epilogue: Epilogue, output: []f32) void {
    const w = geometry.window;
    const in_group = geometry.inPerGroup();
    const out_group = geometry.outPerGroup();
    for (0..geometry.batch) |b| for (0..geometry.out_channels) |oc| {
        const group = oc / out_group;
        for (0..w.image[0]) |oy| for (0..w.image[1]) |ox| {
            var sum: f64 = if (bias) |values| values[oc] else 0;
            for (0..in_group) |c| for (0..w.kernel[0]) |ky| for (0..w.kernel[1]) |kx| {
                const ty = @as(i64, @intCast(oy + w.padding[0])) - @as(i64, @intCast(ky * w.dilation[0]));
                const tx = @as(i64, @intCast(ox + w.padding[1])) - @as(i64, @intCast(kx * w.dilation[1]));
                if (ty < 0 or tx < 0) continue;
                if (@mod(ty, @as(i64, @intCast(w.stride[0]))) != 0 or @mod(tx, @as(i64, @intCast(w.stride[1]))) != 0) continue;
                const iy: usize = @intCast(@divExact(ty, @as(i64, @intCast(w.stride[0]))));
                const ix: usize = @intCast(@divExact(tx, @as(i64, @intCast(w.stride[1]))));
                if (iy >= w.grid[0] or ix >= w.grid[1]) continue;
                const ic = group * in_group + c;
                const x = input[((b * geometry.in_channels + ic) * w.grid[0] + iy) * w.grid[1] + ix];
                sum += @as(f64, x) * weight[((ic * out_group + oc % out_group) * w.kernel[0] + ky) * w.kernel[1] + kx];
            };
            output[((b * geometry.out_channels + oc) * w.image[0] + oy) * w.image[1] + ox] = referenceEpilogue(epilogue, sum);
        };
    };
}

// ---------------------------------------------------------------------------------------
// Tests: each kernel, serially, against the references (ops/conv.zig tests the parallel
// split at 1 and 2 threads).

const testing = std.testing;

fn fillRandom(random: std.Random, values: []f32) void {
    for (values) |*x| x.* = random.float(f32) * 2 - 1;
}

/// Output size of a convolution along one axis (the op computes it with overflow checks).
fn outputSize(image: usize, kernel: usize, stride: usize, padding: usize, dilation: usize) usize {
    return (image + 2 * padding - dilation * (kernel - 1) - 1) / stride + 1;
}

const TestCase = struct {
    image: [2]usize,
    kernel: [2]usize,
    stride: [2]usize = .{ 1, 1 },
    padding: [2]usize = .{ 0, 0 },
    dilation: [2]usize = .{ 1, 1 },

    fn window(case: TestCase) Window {
        var grid: [2]usize = undefined;
        for (0..2) |axis| grid[axis] = outputSize(case.image[axis], case.kernel[axis], case.stride[axis], case.padding[axis], case.dilation[axis]);
        return .{ .image = case.image, .grid = grid, .kernel = case.kernel, .stride = case.stride, .padding = case.padding, .dilation = case.dilation };
    }
};

const test_cases = [_]TestCase{
    .{ .image = .{ 1, 1 }, .kernel = .{ 1, 1 } },
    .{ .image = .{ 1, 1 }, .kernel = .{ 3, 3 }, .padding = .{ 1, 1 } },
    .{ .image = .{ 7, 11 }, .kernel = .{ 3, 3 }, .padding = .{ 1, 1 } },
    .{ .image = .{ 3, 2 }, .kernel = .{ 5, 5 }, .padding = .{ 2, 2 } },
    .{ .image = .{ 13, 17 }, .kernel = .{ 2, 3 }, .stride = .{ 4, 5 }, .padding = .{ 1, 0 } },
    .{ .image = .{ 9, 10 }, .kernel = .{ 3, 2 }, .padding = .{ 2, 1 }, .dilation = .{ 2, 3 } },
    .{ .image = .{ 11, 37 }, .kernel = .{ 3, 3 }, .stride = .{ 2, 2 }, .padding = .{ 1, 1 } },
    .{ .image = .{ 5, 40 }, .kernel = .{ 1, 3 }, .stride = .{ 1, 2 }, .padding = .{ 0, 1 } },
    .{ .image = .{ 4, 53 }, .kernel = .{ 3, 3 }, .padding = .{ 1, 1 }, .dilation = .{ 1, 2 } },
    .{ .image = .{ 3, 70 }, .kernel = .{ 2, 5 }, .stride = .{ 1, 3 }, .padding = .{ 1, 2 } },
    // Mobile-network depthwise layers: 5×5 on small maps, stride 2, a vertical-only stride.
    .{ .image = .{ 20, 20 }, .kernel = .{ 5, 5 }, .padding = .{ 2, 2 } },
    .{ .image = .{ 21, 19 }, .kernel = .{ 5, 5 }, .stride = .{ 2, 2 }, .padding = .{ 2, 2 } },
    .{ .image = .{ 6, 9 }, .kernel = .{ 3, 3 }, .stride = .{ 2, 1 }, .padding = .{ 1, 1 } },
    .{ .image = .{ 2, 3 }, .kernel = .{ 7, 7 }, .padding = .{ 3, 3 } },
    // Rows wider than eight vectors (the buffered depthwise path's group), odd widths,
    // stride 2 with an odd input, a dilated row stride that makes buffered rows collide.
    .{ .image = .{ 5, 161 }, .kernel = .{ 3, 3 }, .padding = .{ 1, 1 } },
    .{ .image = .{ 7, 321 }, .kernel = .{ 3, 3 }, .stride = .{ 2, 2 }, .padding = .{ 1, 1 } },
    .{ .image = .{ 12, 45 }, .kernel = .{ 3, 5 }, .stride = .{ 2, 3 }, .padding = .{ 2, 1 }, .dilation = .{ 3, 2 } },
};

test "validSpan keeps exactly the in-image positions" {
    for (1..6) |grid| for (1..6) |image| for (1..4) |stride| for (0..3) |padding| for (0..7) |offset| {
        const s = validSpan(grid, image, stride, padding, offset);
        for (0..grid) |g| {
            const index = @as(i64, @intCast(g * stride + offset)) - @as(i64, @intCast(padding));
            try testing.expectEqual(index >= 0 and index < image, s.contains(g));
        }
    };
}

test "stridedLoad gathers every stride-th float, at the source's end too" {
    var source: [4 * lanes + 3]f32 = undefined;
    for (&source, 0..) |*x, i| x.* = @floatFromInt(i);
    inline for (.{ 1, 2, 3 }) |stride| {
        const exact = (lanes - 1) * stride + 1;
        // Every start with a whole vector after it, a shorter run, or exactly the lanes needed
        // (each length of the slice ends it right after the last lane or further on).
        for (0..source.len - exact + 1) |first| for (first + exact..source.len + 1) |end| {
            const got: [lanes]f32 = stridedLoad(stride, source[0..end], first);
            for (got, 0..) |value, lane| try std.testing.expectEqual(source[first + lane * stride], value);
        };
    }
}

test "tapSpan keeps exactly the taps inside the image" {
    for (1..5) |image| for (1..4) |kernel| for (1..3) |stride| for (0..3) |padding| for (1..3) |dilation| for (0..6) |position| {
        const window: Window = .{ .image = .{ image, 1 }, .grid = .{ 6, 1 }, .kernel = .{ kernel, 1 }, .stride = .{ stride, 1 }, .padding = .{ padding, 0 }, .dilation = .{ dilation, 1 } };
        const s = window.tapSpan(0, position);
        for (0..kernel) |k| {
            const index = @as(i64, @intCast(position * stride + k * dilation)) - @as(i64, @intCast(padding));
            try testing.expectEqual(index >= 0 and index < image, s.contains(k));
        }
    };
}

test "phasePlane holds every row phase and column offset of the zero-padded plane" {
    var prng = std.Random.DefaultPrng.init(0x9a5e);
    const random = prng.random();
    var plane: [13 * 11]f32 = undefined;
    var target: [16 * 16]f32 = undefined;
    for (&plane) |*x| x.* = random.float(f32) + 1; // never 0: a missed copy shows
    for ([_]usize{ 1, 2, 3 }) |stride| for ([_]usize{ 0, 1, 2 }) |padding| for ([_][2]usize{ .{ 13, 11 }, .{ 1, 1 }, .{ 2, 7 }, .{ 9, 1 } }) |image| {
        const window: Window = .{ .image = image, .grid = .{ 1, 1 }, .kernel = .{ 1, 1 }, .stride = .{ stride, stride }, .padding = .{ padding, padding }, .dilation = .{ 1, 1 } };
        const source = plane[0 .. image[0] * image[1]];
        var size: [2]usize = undefined;
        for (0..2) |axis| size[axis] = std.math.divCeil(usize, image[axis] + 2 * padding, stride) catch unreachable;
        size[1] = @max(1, size[1] -| (stride - 1)); // not always the phase width
        for (0..stride) |py| for (0..stride + 3) |px| {
            const phase = target[0 .. size[0] * size[1]];
            @memset(phase, std.math.nan(f32));
            phasePlane(window, source, .{ py, px }, size, phase);
            for (0..size[0]) |j| for (0..size[1]) |i| {
                const y = j * stride + py;
                const x = i * stride + px;
                const inside = y >= padding and y < padding + image[0] and x >= padding and x < padding + image[1];
                const expected = if (inside) source[(y - padding) * image[1] + x - padding] else 0;
                try testing.expectEqual(expected, phase[j * size[1] + i]);
            };
        };
    };
}

test "im2col then a plain product matches the direct convolution" {
    var prng = std.Random.DefaultPrng.init(11);
    const allocator = testing.allocator;
    for (test_cases) |case| for ([_]usize{ 1, 3 }) |channels| {
        const window = case.window();
        const out_channels = 2;
        const depth = channels * window.taps();
        const columns_total = window.gridPlane();
        const input = try allocator.alloc(f32, channels * window.imagePlane());
        defer allocator.free(input);
        const weight = try allocator.alloc(f32, out_channels * depth);
        defer allocator.free(weight);
        const expected = try allocator.alloc(f32, out_channels * columns_total);
        defer allocator.free(expected);
        const columns = try allocator.alloc(f32, depth * columns_total);
        defer allocator.free(columns);
        fillRandom(prng.random(), input);
        fillRandom(prng.random(), weight);
        const geometry: Geometry = .{ .batch = 1, .in_channels = channels, .out_channels = out_channels, .groups = 1, .window = window };
        reference(geometry, input, weight, null, .{}, expected);
        // Unfold in blocks of 5 columns: blocks start mid-row and end mid-row.
        var begin: usize = 0;
        while (begin < columns_total) : (begin += 5) {
            const count = @min(5, columns_total - begin);
            im2col(window, input, channels, begin, count, columns[0 .. depth * count]);
            for (0..out_channels) |oc| for (0..count) |j| {
                var sum: f32 = 0;
                for (0..depth) |r| sum += weight[oc * depth + r] * columns[r * count + j];
                try testing.expectApproxEqAbs(expected[oc * columns_total + begin + j], sum, 1e-5);
            };
        }
    };
}

test "col2im of a product matches the direct transposed convolution" {
    var prng = std.Random.DefaultPrng.init(12);
    const allocator = testing.allocator;
    for (test_cases) |case| {
        // Transposed: the case's grid is the input, its image the output.
        const window = case.window();
        const in_channels = 3;
        const out_channels = 2;
        const depth = out_channels * window.taps();
        const input = try allocator.alloc(f32, in_channels * window.gridPlane());
        defer allocator.free(input);
        const weight = try allocator.alloc(f32, in_channels * depth);
        defer allocator.free(weight);
        const expected = try allocator.alloc(f32, out_channels * window.imagePlane());
        defer allocator.free(expected);
        const got = try allocator.alloc(f32, expected.len);
        defer allocator.free(got);
        fillRandom(prng.random(), input);
        fillRandom(prng.random(), weight);
        const geometry: Geometry = .{ .batch = 1, .in_channels = in_channels, .out_channels = out_channels, .groups = 1, .window = window };
        referenceTranspose(geometry, input, weight, null, .{}, expected);
        @memset(got, 0);
        const columns_total = window.gridPlane();
        var begin: usize = 0;
        while (begin < columns_total) : (begin += 7) {
            const count = @min(7, columns_total - begin);
            var columns: [2 * 49 * 7]f32 = undefined;
            for (0..depth) |r| for (0..count) |j| {
                var sum: f32 = 0;
                for (0..in_channels) |c| sum += weight[c * depth + r] * input[c * columns_total + begin + j];
                columns[r * count + j] = sum;
            };
            col2im(window, columns[0 .. depth * count], begin, count, 0, 1, got);
            col2im(window, columns[0 .. depth * count], begin, count, 1, out_channels, got);
        }
        for (expected, got) |want, value| try testing.expectApproxEqAbs(want, value, 1e-5);
    }
}

const depthwise = @import("conv_depthwise.zig");

test "depthwise rows and planes match the direct convolution, with bias and every epilogue" {
    var prng = std.Random.DefaultPrng.init(13);
    const allocator = testing.allocator;
    for (test_cases) |case| for (test_epilogues) |epilogue| {
        const window = case.window();
        const plane = try allocator.alloc(f32, window.imagePlane());
        defer allocator.free(plane);
        const weights = try allocator.alloc(f32, window.taps());
        defer allocator.free(weights);
        const expected = try allocator.alloc(f32, window.gridPlane());
        defer allocator.free(expected);
        const got = try allocator.alloc(f32, window.gridPlane());
        defer allocator.free(got);
        fillRandom(prng.random(), plane);
        fillRandom(prng.random(), weights);
        const bias = [_]f32{0.25};
        const geometry: Geometry = .{ .batch = 1, .in_channels = 1, .out_channels = 1, .groups = 1, .window = window };
        reference(geometry, plane, weights, &bias, epilogue, expected);
        // Rows in two calls, split mid-plane.
        const half = window.grid[0] / 2;
        depthwiseRows(window, plane, weights, bias[0], epilogue, 0, half, got);
        depthwiseRows(window, plane, weights, bias[0], epilogue, half, window.grid[0], got);
        for (expected, got) |want, value| try testing.expectApproxEqAbs(want, value, 1e-5);
        if (bufferedApplies(window)) {
            @memset(got, std.math.nan(f32));
            depthwiseRowsBuffered(window, plane, weights, bias[0], epilogue, 0, half, got);
            depthwiseRowsBuffered(window, plane, weights, bias[0], epilogue, half, window.grid[0], got);
            for (expected, got) |want, value| try testing.expectApproxEqAbs(want, value, 1e-5);
        }
        if (!depthwise.applies(window)) continue;
        const plan: depthwise.Plan = .of(window);
        const scratch = try allocator.alloc(f32, plan.scratchFloats());
        defer allocator.free(scratch);
        @memset(scratch, std.math.nan(f32)); // prepare must clear what plane does not write
        @memset(got, std.math.nan(f32));
        depthwise.prepare(&plan, scratch);
        depthwise.plane(&plan, plane, weights, bias[0], epilogue, scratch, got);
        for (expected, got) |want, value| try testing.expectApproxEqAbs(want, value, 1e-5);
    };
}

test "the epilogue adds the bias, applies the activation and the affine, and keeps NaN" {
    var row = [_]f32{ -3, -1, 0.5, std.math.nan(f32) } ++ [_]f32{-2} ** 17;
    Epilogue.relu.apply(&row, 1);
    try testing.expectEqual(@as(f32, 0), row[0]);
    try testing.expectEqual(@as(f32, 0), row[1]);
    try testing.expectEqual(@as(f32, 1.5), row[2]);
    try testing.expect(std.math.isNan(row[3]));
    for (row[4..]) |x| try testing.expectEqual(@as(f32, 0), x);
    // hard_swish(x) = x·clamp(x/6 + 1/2, 0, 1): 0 below −3, x above 3, then ·2 − 1; vector
    // lanes and the scalar tail agree.
    const swish: Epilogue = .{ .activation = .hard_swish, .scale = 2, .shift = -1 };
    var values: [19]f32 = undefined;
    for (&values, 0..) |*x, i| x.* = @as(f32, @floatFromInt(i)) * 0.5 - 4.5;
    const original = values;
    swish.apply(&values, 0.5);
    for (original, values) |x, got| {
        const y = x + 0.5;
        const want = y * std.math.clamp(y / 6 + 0.5, 0, 1) * 2 - 1;
        try testing.expectApproxEqAbs(want, got, 1e-6);
    }
    var nan = [_]f32{std.math.nan(f32)} ** 17;
    swish.apply(&nan, 0);
    for (nan) |x| try testing.expect(std.math.isNan(x));
}
