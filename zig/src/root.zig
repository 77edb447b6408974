//! The Zig-level API of libspindle for native benchmarks and tools (bench/native/*.zig).
//! The library's C surface is exports.zig; this file only re-exports modules by name.
pub const status = @import("status.zig");
pub const settings = @import("settings.zig");
pub const tensor = @import("tensor.zig");
pub const ops = @import("ops.zig");
pub const inter_op = @import("pool/inter_op.zig");
