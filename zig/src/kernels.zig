//! The kernels as a Zig module, for programs built beside the library that call them
//! directly rather than through the C ABI (bench/native/gemm_bench.zig).
pub const gemm = @import("kernels/gemm.zig");
pub const gemm_native = @import("kernels/gemm_native.zig");
pub const openblas = @import("kernels/openblas.zig");
