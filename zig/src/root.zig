//! The Zig-level API of libspindle for native benchmarks and tools (bench/native/*.zig).
//! The library's C surface is exports.zig; this file only re-exports modules by name.
pub const status = @import("status.zig");
pub const settings = @import("settings.zig");
pub const tensor = @import("tensor.zig");
pub const ops = @import("ops.zig");
pub const inter_op = @import("pool/inter_op.zig");
pub const intra_op = @import("pool/intra_op.zig");
pub const kernels = struct {
    pub const elementwise = @import("kernels/elementwise.zig");
    pub const normalization = @import("kernels/normalization.zig");
    pub const embedding = @import("kernels/embedding.zig");
    pub const reduction = @import("kernels/reduction.zig");
    pub const conv = @import("kernels/conv.zig");
    pub const pool = @import("kernels/pool.zig");
};
