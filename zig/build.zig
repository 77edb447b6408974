//! Builds libspindle.so, the native half of Spindle, and its unit tests.
//!
//!   zig build                       ReleaseFast library into zig-out/lib
//!   zig build test                  unit tests (ReleaseSafe: bounds checks stay on)
//!   -Dthreading=omp|tbb             intra-op backend (fork-join team per caller | shared pool)
//!   -Dblas=openblas|native          GEMM backend (system OpenBLAS | Spindle's own)
//!   -Dtsan=true                     build everything with ThreadSanitizer
//!   zig build bench-gemm [-- args]  native GEMM vs OpenBLAS, GFLOPS table (ReleaseFast)
const std = @import("std");

pub const Threading = enum { omp, tbb };
pub const Blas = enum { openblas, native };

/// Directories where Debian and most distributions install libopenblas.so.
const openblas_dirs = [_][]const u8{
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/usr/local/lib",
};

fn openblasAvailable() bool {
    for (openblas_dirs) |dir| {
        var buffer: [256]u8 = undefined;
        const path = std.fmt.bufPrint(&buffer, "{s}/libopenblas.so", .{dir}) catch continue;
        std.fs.accessAbsolute(path, .{}) catch continue;
        return true;
    }
    return false;
}

pub fn build(b: *std.Build) void {
    const target = b.standardTargetOptions(.{});
    const optimize = b.option(
        std.builtin.OptimizeMode,
        "optimize",
        "Optimization mode of the library (default ReleaseFast)",
    ) orelse .ReleaseFast;
    const test_optimize = b.option(
        std.builtin.OptimizeMode,
        "test-optimize",
        "Optimization mode of the unit tests (default ReleaseSafe)",
    ) orelse .ReleaseSafe;
    const threading = b.option(Threading, "threading", "Intra-op backend: omp or tbb (default omp)") orelse .omp;
    const blas_default: Blas = if (openblasAvailable()) .openblas else .native;
    const blas = b.option(Blas, "blas", "GEMM backend: openblas or native (default openblas when installed)") orelse blas_default;
    const tsan = b.option(bool, "tsan", "Build with ThreadSanitizer") orelse false;
    const test_filters = b.option([]const []const u8, "test-filter", "Run only the unit tests whose names contain this") orelse &.{};

    if (blas == .openblas and !openblasAvailable()) {
        std.debug.print(
            "error: -Dblas=openblas but libopenblas.so was not found; install libopenblas-dev " ++
                "(apt-get install libopenblas-dev) or build with -Dblas=native\n",
            .{},
        );
        std.process.exit(1);
    }

    const options = b.addOptions();
    options.addOption(Threading, "threading", threading);
    options.addOption(Blas, "blas", blas);
    options.addOption(bool, "tsan", tsan);
    options.addOption([]const u8, "version", "0.1.0");

    const library_module = createRootModule(b, target, optimize, blas, tsan, options);
    const library = b.addLibrary(.{
        .name = "spindle",
        .linkage = .dynamic,
        .root_module = library_module,
    });
    b.installArtifact(library);

    const test_module = createRootModule(b, target, test_optimize, blas, tsan, options);
    const unit_tests = b.addTest(.{ .root_module = test_module, .filters = test_filters });
    const run_tests = b.addRunArtifact(unit_tests);
    const test_step = b.step("test", "Run the Zig unit tests");
    test_step.dependOn(&run_tests.step);

    addGemmBench(b, target, options);
}

/// The native GEMM against OpenBLAS, always ReleaseFast and always linked with OpenBLAS
/// (the baseline), whatever -Dblas says: it calls the native kernel directly.
fn addGemmBench(b: *std.Build, target: std.Build.ResolvedTarget, options: *std.Build.Step.Options) void {
    const bench_step = b.step("bench-gemm", "Benchmark the native GEMM against OpenBLAS (GFLOPS table)");
    if (!openblasAvailable()) {
        const fail = b.addFail("bench-gemm needs OpenBLAS as its baseline: apt-get install libopenblas-dev");
        bench_step.dependOn(&fail.step);
        return;
    }
    const kernels = b.createModule(.{
        .root_source_file = b.path("src/kernels.zig"),
        .target = target,
        .optimize = .ReleaseFast,
        .link_libc = true,
    });
    kernels.addOptions("build_options", options);
    const bench_module = b.createModule(.{
        .root_source_file = b.path("../bench/native/gemm_bench.zig"),
        .target = target,
        .optimize = .ReleaseFast,
        .link_libc = true,
    });
    bench_module.addImport("kernels", kernels);
    bench_module.linkSystemLibrary("openblas", .{});
    const bench = b.addExecutable(.{ .name = "gemm_bench", .root_module = bench_module });
    const run_bench = b.addRunArtifact(bench);
    if (b.args) |args| run_bench.addArgs(args);
    bench_step.dependOn(&run_bench.step);
}

fn createRootModule(
    b: *std.Build,
    target: std.Build.ResolvedTarget,
    optimize: std.builtin.OptimizeMode,
    blas: Blas,
    tsan: bool,
    options: *std.Build.Step.Options,
) *std.Build.Module {
    const module = b.createModule(.{
        .root_source_file = b.path("src/exports.zig"),
        .target = target,
        .optimize = optimize,
        .link_libc = true,
        .sanitize_thread = tsan,
        // Callers index tensors of many gigabytes; keep frame pointers for profilers.
        .omit_frame_pointer = false,
    });
    module.addOptions("build_options", options);
    if (blas == .openblas) module.linkSystemLibrary("openblas", .{});
    return module;
}
