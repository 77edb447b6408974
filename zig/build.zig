//! Builds libspindle.so, the native half of Spindle, and its unit tests.
//!
//!   zig build                       ReleaseFast library into zig-out/lib
//!   zig build -Dportable=true       x86-64: one library for any x86-64 CPU, its kernels compiled
//!                                   per level (x86_64, _v3 AVX2, _v4 AVX-512) and chosen at
//!                                   run time from CPUID (src/portable.zig); SPINDLE_CPU_LEVEL=
//!                                   baseline|avx2 forces a lower one. Other CPUs: plain build.
//!   zig build test                  unit tests (ReleaseSafe: bounds checks stay on)
//!   zig build test-levels           the kernel tests compiled for each x86-64 level
//!   -Dthreading=omp|tbb             intra-op backend (fork-join team per caller | shared pool)
//!   -Dblas=native|openblas          GEMM backend (Spindle's own, the default | system OpenBLAS)
//!   -Dtsan=true                     build everything with ThreadSanitizer (BLAS: native)
//!   zig build test -Dtsan=true      race-check the unit tests (Debug unless -Dtest-optimize)
//!   zig build bench-interop         inter-op pool benchmark (ReleaseFast)
//!   zig build bench-pool            the intra-op pool benchmark, zig-out/bin/spindle-pool-bench
//!                                   (bench/native/run_pool_bench.sh runs it with the C baselines)
//!   zig build bench-kernels         memory-bound kernel benchmark (ReleaseFast)
//!   zig build bench-conv            conv2d vs GEMM on ResNet layer shapes (ReleaseFast)
//!   zig build bench-depthwise       depthwise conv2d on PaddleOCR's layers (ReleaseFast)
//!   zig build bench-gemm [-- args]  native GEMM vs OpenBLAS, GFLOPS table (ReleaseFast)
//!   zig build bench-packed          PaddleOCR's f32 convs on weights packed at load, GFLOPS
//!   zig build bench-bf16            bf16 GEMM vs the f32 one, 1 thread, GFLOPS (ReleaseFast)
//!   zig build bench-int8            conv2d_int8 on det's layers, float and QDQ outputs
//!   zig build bench-build           build every benchmark above into zig-out/bin, run none
const std = @import("std");

pub const Threading = enum { omp, tbb };
pub const Blas = enum { openblas, native };
/// What one compilation of src/exports.zig is: the whole library (none), one CPU level's
/// copy inside the portable library (level: suffixed, hidden exports), or the portable
/// library's dispatcher (src/portable.zig, which imports exports.zig for its signatures).
pub const PortableRole = enum { none, level, dispatcher };

/// The x86-64 levels of the portable library: symbol suffix and CPU model. The suffixes
/// must match cpu_level.Level.suffix.
const portable_levels = [_]struct { suffix: []const u8, model: *const std.Target.Cpu.Model }{
    .{ .suffix = "_x86_64", .model = &std.Target.x86.cpu.x86_64 },
    .{ .suffix = "_x86_64_v3", .model = &std.Target.x86.cpu.x86_64_v3 },
    .{ .suffix = "_x86_64_v4", .model = &std.Target.x86.cpu.x86_64_v4 },
};

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
    const tsan = b.option(bool, "tsan", "Build with ThreadSanitizer (implies -Dblas=native)") orelse false;
    // OpenBLAS pulls in libgfortran/libquadmath, whose constructors call calloc before the
    // statically linked TSan runtime is initialised: the binary crashes at load.
    // Spindle's own GEMM is the default: on AVX-512 machines it matches OpenBLAS's best
    // kernel and beats the one Debian's OpenBLAS picks when OPENBLAS_CORETYPE pins it to
    // Haswell (bench/results/gemm_bench*.txt). OpenBLAS stays one option away.
    const blas = b.option(Blas, "blas", "GEMM backend: native (default) or openblas") orelse .native;
    // Tests default to Debug under ThreadSanitizer: TSan reports are clearest there.
    const test_optimize = b.option(
        std.builtin.OptimizeMode,
        "test-optimize",
        "Optimization mode of the unit tests (default ReleaseSafe; Debug with -Dtsan=true)",
    ) orelse if (tsan) std.builtin.OptimizeMode.Debug else .ReleaseSafe;
    const test_filters = b.option([]const []const u8, "test-filter", "Run only the unit tests whose names contain this") orelse &.{};
    const portable = b.option(bool, "portable", "x86-64: kernels for every CPU level, chosen at run time (default false: this CPU's)") orelse false;
    const strip = b.option(bool, "strip", "Strip the library's symbols and debug info (default false)");

    if (blas == .openblas and tsan) {
        std.debug.print("error: -Dtsan=true cannot be combined with -Dblas=openblas (TSan crashes while " ++
            "libgfortran loads); leave -Dblas out or use -Dblas=native\n", .{});
        std.process.exit(1);
    }
    if (blas == .openblas and !openblasAvailable()) {
        std.debug.print(
            "error: -Dblas=openblas but libopenblas.so was not found; install libopenblas-dev " ++
                "(apt-get install libopenblas-dev) or build with -Dblas=native\n",
            .{},
        );
        std.process.exit(1);
    }

    const options = buildOptions(b, threading, blas, tsan, .none, "");

    const dispatch = portable and target.result.cpu.arch == .x86_64;
    const library_module = if (dispatch) portableModule(b, target, optimize, threading, blas, tsan, strip) else createRootModule(b, target, optimize, blas, tsan, options);
    library_module.strip = strip;
    const library = b.addLibrary(.{
        .name = "spindle",
        .linkage = .dynamic,
        .root_module = library_module,
        // Always LLVM, Debug included: Zig 0.15's own x86-64 backend (its Debug default) rejects
        // the kernels' inline assembly (AVX-512 register constraints, AMX mnemonics), ignores
        // -fsanitize-thread, and drops the hidden visibility of @export, so the portable
        // build's suffixed symbols would all be exported.
        .use_llvm = true,
    });
    b.installArtifact(library);

    const test_module = createRootModule(b, target, test_optimize, blas, tsan, options);
    // LLVM for the same reasons as the library: Zig's own x86-64 backend (used for Debug)
    // rejects the kernels' inline assembly and ignores -fsanitize-thread.
    const unit_tests = b.addTest(.{
        .root_module = test_module,
        .filters = test_filters,
        .use_llvm = true,
    });
    const run_tests = b.addRunArtifact(unit_tests);
    const test_step = b.step("test", "Run the Zig unit tests");
    test_step.dependOn(&run_tests.step);

    // The portable library runs each level's copy of the kernels: test each copy, compiled
    // exactly as portable.zig links it (the kernels pick their SIMD configuration from the
    // compilation's CPU). A level the building CPU lacks (x86_64_v4 on an AVX2-only CPU) is
    // compiled but not run: its test binary would die of SIGILL.
    const levels_step = b.step("test-levels", "Run the kernel unit tests compiled for x86_64, x86_64_v3 and x86_64_v4");
    if (target.result.cpu.arch == .x86_64) {
        for (portable_levels) |level| {
            const level_target = levelTarget(b, target, level.model);
            const kernel_tests = b.addTest(.{
                .name = b.fmt("kernels{s}", .{level.suffix}),
                .root_module = b.createModule(.{
                    .root_source_file = b.path("src/kernels_test.zig"),
                    .target = level_target,
                    .optimize = test_optimize,
                    .link_libc = true,
                    .omit_frame_pointer = false,
                }),
                .filters = test_filters,
                // LLVM as above: with -Dtest-optimize=Debug (CI's choice: a 15 s compile per
                // level where ReleaseSafe takes minutes) the self-hosted backend would be used.
                .use_llvm = true,
            });
            kernel_tests.root_module.addOptions("build_options", options);
            if (hostRuns(b, level_target.result.cpu)) {
                levels_step.dependOn(&b.addRunArtifact(kernel_tests).step);
            } else {
                levels_step.dependOn(&kernel_tests.step);
            }
        }
    }

    // Every native benchmark imports one module, the library's Zig API (src/root.zig), as
    // "spindle"; benchmarks are always ReleaseFast, whatever -Doptimize says.
    const spindle_module = b.createModule(.{
        .root_source_file = b.path("src/root.zig"),
        .target = target,
        .optimize = .ReleaseFast,
        .link_libc = true,
        .sanitize_thread = tsan,
        .omit_frame_pointer = false,
    });
    spindle_module.addOptions("build_options", options);
    if (blas == .openblas) spindle_module.linkSystemLibrary("openblas", .{});

    // `bench-build` compiles and installs every benchmark without running one.
    const build_step = b.step("bench-build", "Build every native benchmark into zig-out/bin without running it");
    // Run by their steps, and installed into zig-out/bin to rerun them or run them elsewhere.
    const interop_bench = addBench(b, target, spindle_module, "interop_bench", "interop_bench", build_step);
    addRunStep(b, interop_bench, "bench-interop", "Benchmark the inter-op pool (bench/native/interop_bench.zig)");
    const kernels_bench = addBench(b, target, spindle_module, "kernels_bench", "kernels_bench", build_step);
    addRunStep(b, kernels_bench, "bench-kernels", "Benchmark the memory-bound kernels (bench/native/kernels_bench.zig)");
    const conv_bench = addBench(b, target, spindle_module, "conv_bench", "conv_bench", build_step);
    addRunStep(b, conv_bench, "bench-conv", "Benchmark conv2d against GEMM on ResNet layers (bench/native/conv_bench.zig)");
    const depthwise_bench = addBench(b, target, spindle_module, "depthwise_bench", "depthwise_bench", build_step);
    addRunStep(b, depthwise_bench, "bench-depthwise", "Depthwise conv2d on the PaddleOCR det/rec layers (bench/native/depthwise_bench.zig)");
    const packed_bench = addBench(b, target, spindle_module, "packed_conv_bench", "packed_conv_bench", build_step);
    addRunStep(b, packed_bench, "bench-packed", "PaddleOCR's f32 convs and gemm on weights packed at load (bench/native/packed_conv_bench.zig)");
    const int8_bench = addBench(b, target, spindle_module, "int8_conv_bench", "int8_conv_bench", build_step);
    addRunStep(b, int8_bench, "bench-int8", "conv2d_int8 on PaddleOCR det's layers, float and QDQ outputs (bench/native/int8_conv_bench.zig)");
    const bf16_bench = addBench(b, target, spindle_module, "bf16_bench", "bf16_bench", build_step);
    addRunStep(b, bf16_bench, "bench-bf16", "bf16 GEMM against the f32 one at 1 thread (bench/native/bf16_bench.zig)");
    // Only installed: bench/native/run_pool_bench.sh runs it beside the C baselines.
    const pool_bench = addBench(b, target, spindle_module, "pool_bench", "spindle-pool-bench", build_step);
    const pool_bench_step = b.step("bench-pool", "Build the intra-op pool benchmark into zig-out/bin");
    pool_bench_step.dependOn(&b.addInstallArtifact(pool_bench, .{}).step);
    addGemmBench(b, target, spindle_module, tsan, build_step);
}

/// The ReleaseFast executable `exe_name` of bench/native/SOURCE.zig, which imports "spindle",
/// installed by `build_step`.
fn addBench(
    b: *std.Build,
    target: std.Build.ResolvedTarget,
    spindle_module: *std.Build.Module,
    comptime source: []const u8,
    exe_name: []const u8,
    build_step: *std.Build.Step,
) *std.Build.Step.Compile {
    const exe = b.addExecutable(.{
        .name = exe_name,
        .root_module = b.createModule(.{
            .root_source_file = b.path("../bench/native/" ++ source ++ ".zig"),
            .target = target,
            .optimize = .ReleaseFast,
            .link_libc = true,
            .imports = &.{.{ .name = "spindle", .module = spindle_module }},
        }),
    });
    build_step.dependOn(&b.addInstallArtifact(exe, .{}).step);
    return exe;
}

/// `zig build STEP` runs `exe` and installs it into zig-out/bin.
fn addRunStep(b: *std.Build, exe: *std.Build.Step.Compile, step_name: []const u8, description: []const u8) void {
    const step = b.step(step_name, description);
    const run = b.addRunArtifact(exe);
    // `zig build bench-conv -- det` passes "det" on to the benchmark.
    if (b.args) |args| run.addArgs(args);
    step.dependOn(&run.step);
    step.dependOn(&b.addInstallArtifact(exe, .{}).step);
}

/// The native GEMM against OpenBLAS, always linked with OpenBLAS (the baseline), whatever
/// -Dblas says: it calls the native kernel directly.
fn addGemmBench(
    b: *std.Build,
    target: std.Build.ResolvedTarget,
    spindle_module: *std.Build.Module,
    tsan: bool,
    build_step: *std.Build.Step,
) void {
    const bench_step = b.step("bench-gemm", "Benchmark the native GEMM against OpenBLAS (GFLOPS table)");
    if (!openblasAvailable() or tsan) {
        const fail = b.addFail(if (tsan)
            "bench-gemm links OpenBLAS, which crashes at load under -Dtsan=true"
        else
            "bench-gemm needs OpenBLAS as its baseline: apt-get install libopenblas-dev");
        bench_step.dependOn(&fail.step);
        return;
    }
    const bench = addBench(b, target, spindle_module, "gemm_bench", "gemm_bench", build_step);
    bench.root_module.linkSystemLibrary("openblas", .{});
    const run_bench = b.addRunArtifact(bench);
    if (b.args) |args| run_bench.addArgs(args);
    bench_step.dependOn(&run_bench.step);
}

fn buildOptions(
    b: *std.Build,
    threading: Threading,
    blas: Blas,
    tsan: bool,
    role: PortableRole,
    symbol_suffix: []const u8,
) *std.Build.Step.Options {
    const options = b.addOptions();
    options.addOption(Threading, "threading", threading);
    options.addOption(Blas, "blas", blas);
    options.addOption(bool, "tsan", tsan);
    options.addOption([]const u8, "version", "0.1.0");
    options.addOption(PortableRole, "portable_role", role);
    options.addOption([]const u8, "symbol_suffix", symbol_suffix);
    return options;
}

/// `target` with its CPU model replaced by `model` (same OS and ABI).
fn levelTarget(b: *std.Build, target: std.Build.ResolvedTarget, model: *const std.Target.Cpu.Model) std.Build.ResolvedTarget {
    var query = target.query;
    query.cpu_arch = .x86_64;
    query.os_tag = target.result.os.tag;
    query.abi = target.result.abi;
    query.cpu_model = .{ .explicit = model };
    query.cpu_features_add = .empty;
    query.cpu_features_sub = .empty;
    return b.resolveTargetQuery(query);
}

/// The root module of the portable x86-64 library: src/portable.zig for baseline x86-64,
/// with one object per CPU level holding a whole copy of the library (suffixed exports).
fn portableModule(
    b: *std.Build,
    target: std.Build.ResolvedTarget,
    optimize: std.builtin.OptimizeMode,
    threading: Threading,
    blas: Blas,
    tsan: bool,
    strip: ?bool,
) *std.Build.Module {
    const baseline = levelTarget(b, target, &std.Target.x86.cpu.x86_64);
    const module = b.createModule(.{
        .root_source_file = b.path("src/portable.zig"),
        .target = baseline,
        .optimize = optimize,
        .link_libc = true,
        .sanitize_thread = tsan,
        .omit_frame_pointer = false,
    });
    module.addOptions("build_options", buildOptions(b, threading, blas, tsan, .dispatcher, ""));
    for (portable_levels) |level| {
        const level_options = buildOptions(b, threading, blas, tsan, .level, level.suffix);
        const level_module = createRootModule(b, levelTarget(b, target, level.model), optimize, blas, tsan, level_options);
        level_module.pic = true;
        level_module.strip = strip;
        const object = b.addObject(.{
            .name = b.fmt("spindle{s}", .{level.suffix}),
            .root_module = level_module,
            .use_llvm = true, // hidden visibility, see `library` in build()
        });
        module.addObject(object);
    }
    if (blas == .openblas) module.linkSystemLibrary("openblas", .{});
    return module;
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

/// Whether the building machine's CPU has every instruction-set feature of `cpu` that the
/// x86-64 levels add (tuning flags aside), so that code compiled for `cpu` runs here.
fn hostRuns(b: *std.Build, cpu: std.Target.Cpu) bool {
    const host = b.graph.host.result.cpu;
    if (host.arch != cpu.arch) return false;
    const Feature = std.Target.x86.Feature;
    const isa = [_]Feature{ .cx16, .sahf, .popcnt, .sse3, .sse4_1, .sse4_2, .ssse3, .avx, .avx2, .bmi, .bmi2, .f16c, .fma, .lzcnt, .movbe, .xsave, .avx512f, .avx512bw, .avx512cd, .avx512dq, .avx512vl };
    for (isa) |feature| {
        if (std.Target.x86.featureSetHas(cpu.features, feature) and !std.Target.x86.featureSetHas(host.features, feature)) return false;
    }
    return true;
}
