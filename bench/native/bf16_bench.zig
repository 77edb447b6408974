//! GFLOPS of the bf16 GEMMs (kernels/gemm_bf16.zig, vdpbf16ps; kernels/gemm_amx.zig, AMX) against the f32 one
//! (gemm_native) at one thread, on square sizes and convolution-like shapes (M = output
//! channels, K = 9 · input channels, N = output pixels), measured in the same run on the same
//! buffers. The weights are packed once beforehand for both, as the programs that use them
//! do: the left operand (convolution weights) for bf16, and for f32 the right operand where it
//! has a packed form (f32 "packed"), so each side runs its fastest path.
//!
//!   cd zig && zig build bench-bf16 [-- FILTER]
//!
//! Each figure is the best of 5 timed runs of at least 40 ms: the machine may be shared.
const std = @import("std");
const kernels = @import("spindle").kernels;
const gemm = kernels.gemm;
const gemm_native = kernels.gemm_native;
const native = gemm_native.native;
const bf16 = kernels.gemm_bf16;
const amx = kernels.gemm_amx;

const Shape = struct { name: []const u8, m: usize, n: usize, k: usize };

const shapes = [_]Shape{
    .{ .name = "square 256", .m = 256, .n = 256, .k = 256 },
    .{ .name = "square 512", .m = 512, .n = 512, .k = 512 },
    .{ .name = "square 1024", .m = 1024, .n = 1024, .k = 1024 },
    .{ .name = "conv 64x(9*64) @56", .m = 64, .n = 56 * 56, .k = 9 * 64 },
    .{ .name = "conv 128x(9*128) @28", .m = 128, .n = 28 * 28, .k = 9 * 128 },
    .{ .name = "conv 256x(9*256) @14", .m = 256, .n = 14 * 14, .k = 9 * 256 },
    .{ .name = "conv 96x(9*96) @40", .m = 96, .n = 40 * 40, .k = 9 * 96 },
    .{ .name = "det 24x(9*96) @160", .m = 24, .n = 160 * 160, .k = 9 * 96 },
    .{ .name = "1x1 64x256 @80", .m = 64, .n = 80 * 80, .k = 256 },
    .{ .name = "1x1 96x24 @160", .m = 96, .n = 160 * 160, .k = 24 },
    .{ .name = "rec-like 48x(9*48) @8x80", .m = 48, .n = 8 * 80, .k = 9 * 48 },
    .{ .name = "rec 1x1 480x480 @6x80", .m = 480, .n = 6 * 80, .k = 480 },
    .{ .name = "rec 1x1 480x480 @3x80", .m = 480, .n = 3 * 80, .k = 480 },
    .{ .name = "rec 1x1 240x240 @12x80", .m = 240, .n = 12 * 80, .k = 240 },
    .{ .name = "rec 1x1 64x64 @24x160", .m = 64, .n = 24 * 160, .k = 64 },
    .{ .name = "rec gemm classifier", .m = 40, .n = 6625, .k = 120 },
    .{ .name = "rec gemm svtr 120x360", .m = 40, .n = 360, .k = 120 },
    .{ .name = "rec gemm svtr 240x120", .m = 40, .n = 120, .k = 240 },
};

fn bestGflops(comptime function: anytype, context: anytype, flops: f64) f64 {
    var best: f64 = 0;
    for (0..5) |_| {
        var timer = std.time.Timer.start() catch unreachable;
        var runs: usize = 0;
        while (timer.read() < 40 * std.time.ns_per_ms) : (runs += 1) function(context);
        const seconds = @as(f64, @floatFromInt(timer.read())) / std.time.ns_per_s;
        best = @max(best, flops * @as(f64, @floatFromInt(runs)) / seconds / 1e9);
    }
    return best;
}

fn runF32(args: *const gemm.Args) void {
    native.runBlock(args, 0, args.m, 0, args.n);
}

fn runF32Packed(args: *const native.PackedArgs) void {
    native.runBlockPacked(args, 0, args.m, 0, args.packed_b.n);
}

fn runBf16(args: *const bf16.Args) void {
    bf16.runBlock(args, 0, args.m, 0, args.n);
}

/// vdpbf16ps issue rate alone: 24 independent accumulators in registers, no memory (the
/// kernel's register block), so a kernel's GFLOPS divided by this is its efficiency.
fn peakLoop(iterations: *const usize) void {
    var sums: [24]@Vector(16, f32) = @splat(@splat(0));
    const a: @Vector(16, u32) = @splat(0x3F80_3F80);
    const b: @Vector(16, u32) = @splat(0x3C00_3C00);
    for (0..iterations.*) |_| {
        inline for (&sums) |*sum| sum.* = bf16.dot(sum.*, a, b);
    }
    std.mem.doNotOptimizeAway(&sums);
}

/// The same for f32 FMAs (vfmadd231ps): 32 flops an instruction against vdpbf16ps's 64.
fn peakLoopF32(iterations: *const usize) void {
    var sums: [24]@Vector(16, f32) = @splat(@splat(0));
    var a: @Vector(16, f32) = @splat(1.0);
    var b: @Vector(16, f32) = @splat(0.5);
    std.mem.doNotOptimizeAway(&a);
    std.mem.doNotOptimizeAway(&b);
    for (0..iterations.*) |_| {
        inline for (&sums) |*sum| sum.* = @mulAdd(@Vector(16, f32), a, b, sum.*);
    }
    std.mem.doNotOptimizeAway(&sums);
}

fn runAmx(args: *const amx.Args) void {
    amx.runBlock(args, 0, args.m, 0, args.n);
}

pub fn main() !void {
    var gpa: std.heap.GeneralPurposeAllocator(.{}) = .init;
    defer _ = gpa.deinit();
    const allocator = gpa.allocator();
    const arguments = try std.process.argsAlloc(allocator);
    defer std.process.argsFree(allocator, arguments);
    const filter: []const u8 = if (arguments.len > 1) arguments[1] else "";
    var buffer: [4096]u8 = undefined;
    var stdout_writer = std.fs.File.stdout().writerStreaming(&buffer);
    const out = &stdout_writer.interface;
    if (!bf16.supported()) {
        try out.print("bf16 GEMM not supported on this CPU or build (AVX512_BF16 absent or a lower level forced)\n", .{});
        try out.flush();
        return;
    }
    const has_amx = amx.supported();
    try out.print("# 1 thread, GFLOPS, best of 5 runs of >= 40 ms; vdpbf16ps block {d}x{d}, AMX {s}\n", .{ bf16.panel_rows, bf16.panel_cols, if (has_amx) "present" else "absent" });
    const peak_iterations: usize = 10_000;
    const peak = bestGflops(peakLoop, &peak_iterations, 24 * 64 * @as(f64, @floatFromInt(peak_iterations)));
    const peak_f32 = bestGflops(peakLoopF32, &peak_iterations, 24 * 32 * @as(f64, @floatFromInt(peak_iterations)));
    try out.print("# vdpbf16ps peak (24 accumulators, no memory): {d:.1} GFLOPS; f32 FMA peak {d:.1}\n", .{ peak, peak_f32 });
    try out.print("# ratio: the best bf16 over the best f32\n", .{});
    try out.print("{s:<26} {s:>5} {s:>6} {s:>5} | {s:>7} {s:>7} | {s:>7} {s:>7} | {s:>7} {s:>7} | {s:>5}\n", .{ "shape", "M", "N", "K", "f32", "f32 pkB", "dp pA", "dp pB", "amx pA", "amx pB", "ratio" });
    for (shapes) |shape| {
        if (std.mem.indexOf(u8, shape.name, filter) == null) continue;
        const a = try allocator.alloc(f32, shape.m * shape.k);
        defer allocator.free(a);
        const b = try allocator.alloc(f32, shape.k * shape.n);
        defer allocator.free(b);
        const c = try allocator.alloc(f32, shape.m * shape.n);
        defer allocator.free(c);
        for (a, 0..) |*x, i| x.* = @as(f32, @floatFromInt(i % 1000)) / 500 - 1;
        for (b, 0..) |*x, i| x.* = @as(f32, @floatFromInt((i * 7) % 1000)) / 500 - 1;
        const flops = 2 * @as(f64, @floatFromInt(shape.m * shape.n * shape.k));
        const args: gemm.Args = .{ .trans_a = false, .trans_b = false, .m = shape.m, .n = shape.n, .k = shape.k, .alpha = 1, .a = a, .lda = shape.k, .b = b, .ldb = shape.n, .beta = 0, .c = c, .ldc = shape.n };
        try args.validate();
        var packed_b = try native.PackedB.init(allocator, false, shape.k, shape.n, b, shape.n);
        defer packed_b.deinit(allocator);
        const packed_args: native.PackedArgs = .{ .trans_a = false, .m = shape.m, .alpha = 1, .a = a, .lda = shape.k, .packed_b = &packed_b, .beta = 0, .c = c, .ldc = shape.n };
        try packed_args.validate();
        const a_words = try allocator.alloc(u32, bf16.PackedA.length(shape.m, shape.k));
        defer allocator.free(a_words);
        const a_matrix: bf16.Matrix = .{ .trans = false, .values = a, .ld = shape.k };
        const b_matrix: bf16.Matrix = .{ .trans = false, .values = b, .ld = shape.n };
        bf16.PackedA.pack(a_matrix, shape.m, shape.k, a_words);
        const b_words = try allocator.alloc(u32, bf16.PackedB.length(shape.k, shape.n));
        defer allocator.free(b_words);
        bf16.PackedB.pack(b_matrix, shape.k, shape.n, b_words);
        const args_a: bf16.Args = .{ .m = shape.m, .n = shape.n, .k = shape.k, .a = .{ .packed_a = .{ .m = shape.m, .k = shape.k, .values = a_words } }, .b = .{ .matrix = b_matrix }, .c = c, .ldc = shape.n };
        try args_a.validate();
        const args_b: bf16.Args = .{ .m = shape.m, .n = shape.n, .k = shape.k, .a = .{ .matrix = a_matrix }, .b = .{ .packed_b = .{ .k = shape.k, .n = shape.n, .values = b_words } }, .c = c, .ldc = shape.n };
        try args_b.validate();
        const amx_a_words = try allocator.alloc(u32, amx.PackedA.length(shape.m, shape.k));
        defer allocator.free(amx_a_words);
        amx.PackedA.pack(a_matrix, shape.m, shape.k, amx_a_words);
        const amx_b_words = try allocator.alloc(u32, amx.PackedB.length(shape.k, shape.n));
        defer allocator.free(amx_b_words);
        amx.PackedB.pack(b_matrix, shape.k, shape.n, amx_b_words);
        const amx_a: amx.Args = .{ .m = shape.m, .n = shape.n, .k = shape.k, .a = .{ .packed_a = .{ .m = shape.m, .k = shape.k, .values = amx_a_words } }, .b = .{ .matrix = b_matrix }, .c = c, .ldc = shape.n };
        try amx_a.validate();
        const amx_b: amx.Args = .{ .m = shape.m, .n = shape.n, .k = shape.k, .a = .{ .matrix = a_matrix }, .b = .{ .packed_b = .{ .k = shape.k, .n = shape.n, .values = amx_b_words } }, .c = c, .ldc = shape.n };
        try amx_b.validate();
        const f32_plain = bestGflops(runF32, &args, flops);
        const f32_packed = bestGflops(runF32Packed, &packed_args, flops);
        const bf16_a = bestGflops(runBf16, &args_a, flops);
        const bf16_b = bestGflops(runBf16, &args_b, flops);
        const amx_pa = if (has_amx) bestGflops(runAmx, &amx_a, flops) else 0;
        const amx_pb = if (has_amx) bestGflops(runAmx, &amx_b, flops) else 0;
        const best_bf16 = @max(@max(bf16_a, bf16_b), @max(amx_pa, amx_pb));
        try out.print("{s:<26} {d:>5} {d:>6} {d:>5} | {d:>7.1} {d:>7.1} | {d:>7.1} {d:>7.1} | {d:>7.1} {d:>7.1} | {d:>5.2}\n", .{ shape.name, shape.m, shape.n, shape.k, f32_plain, f32_packed, bf16_a, bf16_b, amx_pa, amx_pb, best_bf16 / @max(f32_plain, f32_packed) });
        try out.flush();
    }
}
