//! The Zig-level API of libspindle for native benchmarks and tools (bench/native/*.zig):
//! the one module root that build.zig gives them, as "spindle". The library's C surface is
//! exports.zig; this file only re-exports the layers by name, bottom up.
pub const status = @import("status.zig");
pub const settings = @import("settings.zig");
pub const tensor = @import("tensor.zig");
/// Pure functions over ranges; they know no pool and no graph.
pub const kernels = struct {
    pub const gemm = @import("kernels/gemm.zig");
    pub const gemm_native = @import("kernels/gemm_native.zig");
    pub const gemm_bf16 = @import("kernels/gemm_bf16.zig");
    pub const gemm_amx = @import("kernels/gemm_amx.zig");
    pub const conv_amx = @import("kernels/conv_amx.zig");
    pub const conv_bf16 = @import("kernels/conv_bf16.zig");
    pub const openblas = @import("kernels/openblas.zig");
    pub const elementwise = @import("kernels/elementwise.zig");
    pub const normalization = @import("kernels/normalization.zig");
    pub const embedding = @import("kernels/embedding.zig");
    pub const reduction = @import("kernels/reduction.zig");
    pub const conv = @import("kernels/conv.zig");
    pub const conv_pointwise = @import("kernels/conv_pointwise.zig");
    pub const conv_depthwise = @import("kernels/conv_depthwise.zig");
    pub const conv_depthwise_lanes = @import("kernels/conv_depthwise_lanes.zig");
    pub const pooling = @import("kernels/pooling.zig");
};
/// parallel_for on the build's backend (omp or tbb).
pub const intra_op = @import("pool/intra_op.zig");
/// The inter-op pool and the futures forked onto it.
pub const inter_op = struct {
    pub const Pool = @import("pool/inter_op.zig");
    pub const Future = @import("pool/future.zig");
    /// Completion channels: one per waiter of watched futures (an isolate in TypeScript).
    pub const channels = @import("pool/channels.zig");
};
/// The op layer: validation, output allocation and the parallel split over the kernels.
pub const ops = @import("ops.zig");
/// Weights packed at load for the native f32 GEMM, and the nodes that run on them.
pub const packed_f32 = @import("ops/packed_f32.zig");
/// The integer convolution and matrix product (ONNX's quantized ops).
pub const quantized = @import("ops/quantized.zig");
