//! Root of the module the native benchmarks import (bench/native/*.zig, `zig build
//! bench-pool`): the intra-op pools and the thread settings, without the FFI exports.
pub const intra_op = @import("pool/intra_op.zig");
pub const settings = @import("settings.zig");
pub const Error = @import("status.zig").Error;
