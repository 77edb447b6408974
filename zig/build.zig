//! Builds libspindle.so, the native half of Spindle, and its unit tests.
//!
//!   zig build                       ReleaseFast library into zig-out/lib
//!   zig build test                  unit tests (ReleaseSafe: bounds checks stay on)
//!   -Dthreading=omp|tbb             intra-op backend (fork-join team per caller | shared pool)
//!   -Dblas=openblas|native          GEMM backend (system OpenBLAS | Spindle's own)
//!   -Dtsan=true                     build everything with ThreadSanitizer; tests default to
//!                                   Debug then (zig build test -Dtsan=true -Dthreading=tbb)
//!   zig build bench-pool            the intra-op pool benchmark, zig-out/bin/spindle-pool-bench
//!                                   (bench/native/run_pool_bench.sh runs it with the C baselines)
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
    const threading = b.option(Threading, "threading", "Intra-op backend: omp or tbb (default omp)") orelse .omp;
    const blas_default: Blas = if (openblasAvailable()) .openblas else .native;
    const blas = b.option(Blas, "blas", "GEMM backend: openblas or native (default openblas when installed)") orelse blas_default;
    const tsan = b.option(bool, "tsan", "Build with ThreadSanitizer") orelse false;
    // A ReleaseSafe test binary with ThreadSanitizer and OpenBLAS crashes before main (in
    // libquadmath's constructor, inside TSan's calloc); a Debug one runs. Hence Debug tests
    // under -Dtsan=true unless asked otherwise.
    const test_optimize = b.option(
        std.builtin.OptimizeMode,
        "test-optimize",
        "Optimization mode of the unit tests (default ReleaseSafe; Debug with -Dtsan=true)",
    ) orelse if (tsan) std.builtin.OptimizeMode.Debug else .ReleaseSafe;
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

    addPoolBench(b, target, optimize, options);
}

/// `zig build bench-pool`: bench/native/pool_bench.zig against the pools (no FFI exports).
fn addPoolBench(
    b: *std.Build,
    target: std.Build.ResolvedTarget,
    optimize: std.builtin.OptimizeMode,
    options: *std.Build.Step.Options,
) void {
    const pools_module = b.createModule(.{
        .root_source_file = b.path("src/bench_api.zig"),
        .target = target,
        .optimize = optimize,
        .link_libc = true,
    });
    pools_module.addOptions("build_options", options);
    const bench_module = b.createModule(.{
        .root_source_file = b.path("../bench/native/pool_bench.zig"),
        .target = target,
        .optimize = optimize,
        .link_libc = true,
    });
    bench_module.addImport("spindle_pools", pools_module);
    const bench = b.addExecutable(.{ .name = "spindle-pool-bench", .root_module = bench_module });
    const bench_step = b.step("bench-pool", "Build the intra-op pool benchmark into zig-out/bin");
    bench_step.dependOn(&b.addInstallArtifact(bench, .{}).step);
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
