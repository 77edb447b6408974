//! Keeps libspindle mapped until the process exits. Worker threads (intra-op teams, the
//! inter-op pool) and pthread-key destructors run library code until the very end; Deno
//! closes FFI libraries when its runtime shuts down, before those threads are gone. Without
//! this, a thread that exits after the dlclose jumps into unmapped code (a crash at exit,
//! seen in practice). Re-opening ourselves with RTLD_NODELETE makes dlclose a no-op.
const std = @import("std");
const builtin = @import("builtin");

const DlInfo = extern struct {
    file_name: ?[*:0]const u8,
    file_base: ?*anyopaque,
    symbol_name: ?[*:0]const u8,
    symbol_address: ?*anyopaque,
};

extern "c" fn dladdr(address: *const anyopaque, info: *DlInfo) c_int;

var once = std.once(pinSelf);

fn pinSelf() void {
    if (builtin.os.tag != .linux) return;
    var info: DlInfo = undefined;
    if (dladdr(@ptrCast(&pinSelf), &info) == 0) return;
    const path = info.file_name orelse return;
    // The handle is leaked on purpose: holding it is what keeps the library mapped.
    _ = std.c.dlopen(path, .{ .NOW = true, .NODELETE = true });
}

/// Idempotent; cheap after the first call.
pub fn pin() void {
    once.call();
}
