//! The facts behind parallel_info (threading spec §6), as one JSON object. TypeScript prints
//! the PyTorch-shaped report from it, so the numbers come from the library that uses them.
const std = @import("std");
const builtin = @import("builtin");
const build_options = @import("build_options");
const settings = @import("settings.zig");
const topology = @import("topology.zig");
const openblas = @import("kernels/openblas.zig");

pub const Facts = struct {
    version: []const u8,
    abi_version: u32,
    num_threads: u32,
    num_threads_source: []const u8,
    num_interop_threads: u32,
    interop_started: bool,
    num_inference_threads: u32,
    num_inference_threads_source: []const u8,
    intra_op_backend: []const u8,
    blas: []const u8,
    blas_version: []const u8,
    blas_threads: u32,
    blas_threading: []const u8,
    hardware_concurrency: u32,
    physical_cores: u32,
    omp_num_threads: ?[]const u8,
    mkl_num_threads: ?[]const u8,
    cpu: []const u8,
    kernels: []const u8,
    kernels_selection: []const u8,
    int8_kernels: []const u8,
    precisions: []const u8,
    tsan: bool,
};

/// The SIMD level this copy's kernels were compiled for, as parallel_info names it.
pub const kernels: []const u8 = switch (builtin.cpu.arch) {
    .x86_64 => if (hasX86(.avx512f)) "AVX-512" else if (hasX86(.avx2) and hasX86(.fma)) "AVX2" else "baseline",
    .aarch64 => "NEON",
    else => "baseline",
};

fn hasX86(comptime feature: std.Target.x86.Feature) bool {
    return std.Target.x86.featureSetHas(builtin.cpu.features, feature);
}

/// How this copy came to run: compiled for the build's CPU, or chosen at run time by the
/// portable library's dispatcher (portable.zig), which says why.
fn kernelsSelection() []const u8 {
    return switch (build_options.portable_role) {
        .level => std.mem.span(portable_reason),
        else => "compiled for " ++ builtin.cpu.model.name,
    };
}

/// Set by the portable dispatcher, once, before it forwards the first call to this copy:
/// written before portable.zig's `chosen.store(.release)`, read by calls forwarded after
/// its `chosen.load(.acquire)`, so the pair orders it without an atomic of its own.
var portable_reason: [*:0]const u8 = "chosen by CPUID";

fn setPortableReason(reason: [*:0]const u8) callconv(.c) void {
    portable_reason = reason;
}

comptime {
    if (build_options.portable_role == .level) {
        @export(&setPortableReason, .{
            .name = "spindle_portable_reason_set" ++ build_options.symbol_suffix,
            .visibility = .hidden,
        });
    }
}

pub fn collect() Facts {
    return .{
        .version = build_options.version,
        .abi_version = @import("exports.zig").abi_version,
        .num_threads = settings.getNumThreads(),
        .num_threads_source = @tagName(settings.numThreadsSource()),
        .num_interop_threads = settings.getNumInteropThreads(),
        .interop_started = settings.interopStarted(),
        .num_inference_threads = settings.getNumInferenceThreads(),
        .num_inference_threads_source = @tagName(settings.numInferenceThreadsSource()),
        .intra_op_backend = @tagName(build_options.threading),
        .blas = @tagName(build_options.blas),
        .blas_version = if (build_options.blas == .openblas) openblas.version() else "Spindle native GEMM",
        // GEMM runs on the intra-op pool with BLAS single-threaded inside each tile.
        .blas_threads = if (build_options.blas == .openblas) openblas.numThreads() else 1,
        .blas_threading = "spindle intra-op pool",
        .hardware_concurrency = topology.logicalCpus(),
        .physical_cores = topology.physicalCores(),
        .omp_num_threads = @import("env.zig").get("OMP_NUM_THREADS"),
        .mkl_num_threads = @import("env.zig").get("MKL_NUM_THREADS"),
        .cpu = builtin.cpu.model.name,
        .kernels = kernels,
        .kernels_selection = kernelsSelection(),
        .int8_kernels = @import("ops/quantized.zig").kernelDescription(),
        .precisions = @import("ops/bf16.zig").description(),
        .tsan = build_options.tsan,
    };
}

/// Writes the facts into `destination` (truncated if short) and returns the full length.
pub fn writeJson(destination: []u8) usize {
    var buffer: [4096]u8 = undefined;
    var writer: std.Io.Writer = .fixed(&buffer);
    std.json.Stringify.value(collect(), .{}, &writer) catch {
        // 4 KiB holds the facts with room to spare; only absurd environment values can
        // overflow it, and then the report says so instead of emitting broken JSON.
        const fallback = "{\"error\":\"parallel_info facts do not fit in 4096 bytes\"}";
        const count = @min(destination.len, fallback.len);
        @memcpy(destination[0..count], fallback[0..count]);
        return fallback.len;
    };
    const json = writer.buffered();
    const count = @min(destination.len, json.len);
    @memcpy(destination[0..count], json[0..count]);
    return json.len;
}

test "writeJson produces parseable JSON with the thread counts" {
    var buffer: [4096]u8 = undefined;
    const length = writeJson(&buffer);
    try std.testing.expect(length < buffer.len);
    const parsed = try std.json.parseFromSlice(std.json.Value, std.testing.allocator, buffer[0..length], .{});
    defer parsed.deinit();
    const threads = parsed.value.object.get("num_threads").?.integer;
    try std.testing.expectEqual(@as(i64, settings.getNumThreads()), threads);
    try std.testing.expect(parsed.value.object.get("physical_cores").?.integer >= 1);
}
