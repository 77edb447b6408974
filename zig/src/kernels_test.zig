//! Root of `zig build test-levels`: every kernel file's tests, compiled once per x86-64 CPU
//! level of the portable library (build.zig), so each level's SIMD configuration (GEMM
//! micro-kernel shapes, vector widths) is checked against the reference implementations.
test {
    _ = @import("kernels/gemm.zig");
    _ = @import("kernels/gemm_native.zig");
    _ = @import("kernels/gemm_small.zig");
    _ = @import("kernels/gemm_int8.zig");
    _ = @import("kernels/gemm_bf16.zig");
    _ = @import("kernels/gemm_amx.zig");
    _ = @import("kernels/conv_amx.zig");
    _ = @import("kernels/conv_bf16.zig");
    _ = @import("kernels/conv_f32_direct.zig");
    _ = @import("kernels/math.zig");
    _ = @import("kernels/elementwise.zig");
    _ = @import("kernels/reduction.zig");
    _ = @import("kernels/normalization.zig");
    _ = @import("kernels/embedding.zig");
    _ = @import("kernels/copy.zig");
    _ = @import("kernels/conv.zig");
    _ = @import("kernels/conv_pointwise.zig");
    _ = @import("kernels/conv_depthwise.zig");
    _ = @import("kernels/conv_depthwise_lanes.zig");
    _ = @import("kernels/conv_squeeze.zig");
    _ = @import("kernels/pooling.zig");
    _ = @import("kernels/indexing.zig");
    _ = @import("kernels/scatter.zig");
    _ = @import("kernels/detection.zig");
    _ = @import("kernels/formats.zig");
    _ = @import("kernels/recurrent.zig");
    _ = @import("cpu_level.zig");
}
