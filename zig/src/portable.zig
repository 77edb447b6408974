//! Root of the portable x86-64 library (`zig build -Dportable=true`): run-time CPU dispatch in
//! the manner of PyTorch's CPU_CAPABILITY. build.zig compiles the whole library (exports.zig
//! and everything under it) once per CPU level, as objects for x86_64, x86_64_v3 (AVX2/FMA)
//! and x86_64_v4 (AVX-512), each exporting its C functions with the level's suffix and hidden
//! visibility. This file, compiled for baseline x86-64, exports the plain names; each one
//! forwards to the copy chosen once, at the first call, from CPUID (and SPINDLE_CPU_LEVEL).
//!
//! Why whole-library copies rather than per-kernel objects: kernels are Zig functions over
//! slices and comptime-configured structs, called from ~40 op sites; only the C ABI is stable
//! across separately compiled objects, and the exports are already that ABI (38 functions of
//! scalars and pointers). Zig 0.15 has no per-function target attribute, and a source file
//! cannot belong to two modules of one compilation, so each level must be its own object.
//! One process uses one copy: the others' globals (pools, handles) are never touched.
const std = @import("std");
const builtin = @import("builtin");
const exports = @import("exports.zig");

comptime {
    std.debug.assert(builtin.cpu.arch == .x86_64);
}

const cpu_level = @import("cpu_level.zig");
const Level = cpu_level.Level;

/// 0 until the first call has chosen; then 1 + @intFromEnum(level). Stored with .release
/// in `chooseOnce`, loaded with .acquire in `level`: the pair publishes `reason_buffer`.
var chosen = std.atomic.Value(u8).init(0);
var reason_buffer: [160]u8 = undefined;
/// Serialises the first choice (its mutex is taken once; later calls see `chosen` set).
var once = std.once(chooseOnce);

/// The level every forwarded call uses, chosen at the first call.
fn level() Level {
    const value = chosen.load(.acquire);
    if (value != 0) return @enumFromInt(value - 1);
    once.call();
    return @enumFromInt(chosen.load(.acquire) - 1);
}

fn chooseOnce() void {
    const requested = @import("env.zig").get("SPINDLE_CPU_LEVEL");
    const result = cpu_level.resolve(cpu_level.detected(), requested, &reason_buffer);
    if (std.mem.indexOf(u8, result[1], "ignored") != null) {
        // A bad override is not fatal (the library still works) but must not pass silently.
        std.debug.print("spindle: warning: {s}\n", .{result[1]});
    }
    const reason_len = @min(result[1].len, reason_buffer.len - 1);
    reason_buffer[reason_len] = 0;
    // Tell the chosen copy how it was chosen, for its parallel_info facts (info.zig), before
    // any call reaches it. (The dispatcher exports nothing but the plain names: a hidden
    // export of its own would still be exported from a Windows DLL.)
    switch (result[0]) {
        inline else => |l| @extern(*const fn ([*:0]const u8) callconv(.c) void, .{
            .name = "spindle_portable_reason_set" ++ l.suffix(),
            .visibility = .hidden,
        })(@ptrCast(&reason_buffer)),
    }
    chosen.store(@intFromEnum(result[0]) + 1, .release);
}

comptime {
    for (@typeInfo(exports).@"struct".decls) |decl| {
        if (!std.mem.startsWith(u8, decl.name, "spindle_")) continue;
        const F = @TypeOf(@field(exports, decl.name));
        @export(forwarder(decl.name, F), .{ .name = decl.name });
    }
}

/// The copy of export `name` for the chosen level.
inline fn pick(comptime name: []const u8, comptime F: type) *const F {
    return switch (level()) {
        inline else => |l| @extern(*const F, .{ .name = name ++ l.suffix(), .visibility = .hidden }),
    };
}

/// A C function with F's signature that calls `pick(name, F)` with its arguments.
fn forwarder(comptime name: []const u8, comptime F: type) *const F {
    const info = @typeInfo(F).@"fn";
    const R = info.return_type.?;
    const P = info.params;
    return switch (P.len) {
        0 => &struct {
            fn f() callconv(.c) R {
                return pick(name, F)();
            }
        }.f,
        1 => &struct {
            fn f(a: P[0].type.?) callconv(.c) R {
                return pick(name, F)(a);
            }
        }.f,
        2 => &struct {
            fn f(a: P[0].type.?, b: P[1].type.?) callconv(.c) R {
                return pick(name, F)(a, b);
            }
        }.f,
        3 => &struct {
            fn f(a: P[0].type.?, b: P[1].type.?, c: P[2].type.?) callconv(.c) R {
                return pick(name, F)(a, b, c);
            }
        }.f,
        4 => &struct {
            fn f(a: P[0].type.?, b: P[1].type.?, c: P[2].type.?, d: P[3].type.?) callconv(.c) R {
                return pick(name, F)(a, b, c, d);
            }
        }.f,
        5 => &struct {
            fn f(a: P[0].type.?, b: P[1].type.?, c: P[2].type.?, d: P[3].type.?, e: P[4].type.?) callconv(.c) R {
                return pick(name, F)(a, b, c, d, e);
            }
        }.f,
        6 => &struct {
            fn f(a: P[0].type.?, b: P[1].type.?, c: P[2].type.?, d: P[3].type.?, e: P[4].type.?, g: P[5].type.?) callconv(.c) R {
                return pick(name, F)(a, b, c, d, e, g);
            }
        }.f,
        7 => &struct {
            fn f(a: P[0].type.?, b: P[1].type.?, c: P[2].type.?, d: P[3].type.?, e: P[4].type.?, g: P[5].type.?, h: P[6].type.?) callconv(.c) R {
                return pick(name, F)(a, b, c, d, e, g, h);
            }
        }.f,
        8 => &struct {
            fn f(a: P[0].type.?, b: P[1].type.?, c: P[2].type.?, d: P[3].type.?, e: P[4].type.?, g: P[5].type.?, h: P[6].type.?, i: P[7].type.?) callconv(.c) R {
                return pick(name, F)(a, b, c, d, e, g, h, i);
            }
        }.f,
        9 => &struct {
            fn f(a: P[0].type.?, b: P[1].type.?, c: P[2].type.?, d: P[3].type.?, e: P[4].type.?, g: P[5].type.?, h: P[6].type.?, i: P[7].type.?, j: P[8].type.?) callconv(.c) R {
                return pick(name, F)(a, b, c, d, e, g, h, i, j);
            }
        }.f,
        10 => &struct {
            fn f(a: P[0].type.?, b: P[1].type.?, c: P[2].type.?, d: P[3].type.?, e: P[4].type.?, g: P[5].type.?, h: P[6].type.?, i: P[7].type.?, j: P[8].type.?, k: P[9].type.?) callconv(.c) R {
                return pick(name, F)(a, b, c, d, e, g, h, i, j, k);
            }
        }.f,
        11 => &struct {
            fn f(a: P[0].type.?, b: P[1].type.?, c: P[2].type.?, d: P[3].type.?, e: P[4].type.?, g: P[5].type.?, h: P[6].type.?, i: P[7].type.?, j: P[8].type.?, k: P[9].type.?, l: P[10].type.?) callconv(.c) R {
                return pick(name, F)(a, b, c, d, e, g, h, i, j, k, l);
            }
        }.f,
        else => @compileError(name ++ ": add a forwarder arity in portable.zig"),
    };
}
