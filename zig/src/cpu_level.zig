//! The x86-64 CPU levels of the portable library (portable.zig): which one this processor
//! supports, and how SPINDLE_CPU_LEVEL may lower it. Pure functions, tested here.
const std = @import("std");
const builtin = @import("builtin");

/// The CPU levels, lowest first: the order `SPINDLE_CPU_LEVEL` may only go down.
pub const Level = enum(u8) {
    baseline,
    avx2,
    avx512,

    /// The symbol suffix of this level's copy (build.zig gives each object the same one).
    pub fn suffix(level: Level) []const u8 {
        return switch (level) {
            .baseline => "_x86_64",
            .avx2 => "_x86_64_v3",
            .avx512 => "_x86_64_v4",
        };
    }
};

/// The highest level whose instructions the processor supports and whose vector registers
/// the OS saves (XGETBV). The bits are the ISA features of LLVM's x86-64-v3/v4 models (the
/// models build.zig compiles each copy for); tuning flags need no check.
/// (std's CPUID detection, std.zig.system.x86, is not public in Zig 0.15.)
pub fn detected() Level {
    const max_leaf = cpuid(0, 0).eax;
    if (max_leaf < 7) return .baseline;
    const leaf1 = cpuid(1, 0);
    const leaf7 = cpuid(7, 0);
    const extended = cpuid(0x8000_0001, 0);
    const v2 = bit(leaf1.ecx, 0) and bit(leaf1.ecx, 9) and bit(leaf1.ecx, 13) and bit(leaf1.ecx, 19) and
        bit(leaf1.ecx, 20) and bit(leaf1.ecx, 23) and bit(extended.ecx, 0);
    // OSXSAVE (leaf 1 ECX 27) says XGETBV is usable; XCR0 bits 1-2 are SSE and AVX state.
    if (!v2 or !bit(leaf1.ecx, 26) or !bit(leaf1.ecx, 27)) return .baseline;
    const xcr0 = xgetbv0();
    const avx_state = xcr0 & 0b110 == 0b110;
    const v3 = avx_state and bit(leaf1.ecx, 28) and bit(leaf1.ecx, 12) and bit(leaf1.ecx, 22) and
        bit(leaf1.ecx, 29) and bit(leaf7.ebx, 3) and bit(leaf7.ebx, 5) and bit(leaf7.ebx, 8) and
        bit(extended.ecx, 5);
    if (!v3) return .baseline;
    // XCR0 bits 5-7: opmask, upper halves of ZMM0-15, ZMM16-31. (macOS enables them lazily,
    // at the first AVX-512 instruction; there this reports avx2, a safe answer.)
    const avx512_state = xcr0 & 0b1110_0000 == 0b1110_0000;
    const v4 = avx512_state and bit(leaf7.ebx, 16) and bit(leaf7.ebx, 17) and bit(leaf7.ebx, 28) and
        bit(leaf7.ebx, 30) and bit(leaf7.ebx, 31);
    return if (v4) .avx512 else .avx2;
}

fn bit(register: u32, comptime index: u5) bool {
    return register >> index & 1 == 1;
}

pub const Registers = struct { eax: u32, ebx: u32, ecx: u32, edx: u32 };

/// CPUID of `leaf`, `subleaf` (x86-64 only: callers outside this file check their compile
/// target first).
pub fn cpuid(leaf: u32, subleaf: u32) Registers {
    var eax: u32 = undefined;
    var ebx: u32 = undefined;
    var ecx: u32 = undefined;
    var edx: u32 = undefined;
    asm volatile ("cpuid"
        : [eax] "={eax}" (eax),
          [ebx] "={ebx}" (ebx),
          [ecx] "={ecx}" (ecx),
          [edx] "={edx}" (edx),
        : [leaf] "{eax}" (leaf),
          [subleaf] "{ecx}" (subleaf),
    );
    return .{ .eax = eax, .ebx = ebx, .ecx = ecx, .edx = edx };
}

/// A CPU capability asked once per process (CPUID, the kernel's permission for AMX tiles):
/// `detect` runs on the first `get`, later calls return its answer. Each kernel that picks
/// itself at run time holds one.
pub fn Once(comptime detect: fn () bool) type {
    return struct {
        /// 0 not asked yet, 1 no, 2 yes. Threads may race to ask; the first answer stored wins
        /// (a detection that measures, like gemm_bf16.pays, could answer differently in two
        /// racing threads, and the process must keep one answer). .monotonic on the load and
        /// the exchange is enough: the value carries no other data.
        var state = std.atomic.Value(u8).init(0);

        pub fn get() bool {
            const known = state.load(.monotonic);
            if (known != 0) return known == 2;
            const answer: u8 = if (detect()) 2 else 1;
            const first = state.cmpxchgStrong(0, answer, .monotonic, .monotonic) orelse answer;
            return first == 2;
        }
    };
}

fn xgetbv0() u64 {
    var low: u32 = undefined;
    var high: u32 = undefined;
    asm volatile ("xgetbv"
        : [low] "={eax}" (low),
          [high] "={edx}" (high),
        : [index] "{ecx}" (@as(u32, 0)),
    );
    return @as(u64, high) << 32 | low;
}

/// Parses a SPINDLE_CPU_LEVEL value; null when it names no level.
pub fn parseLevel(text: []const u8) ?Level {
    return std.meta.stringToEnum(Level, text);
}

/// `detected`, lowered to `requested` when that is lower; with the reason, for parallel_info.
pub fn resolve(best: Level, requested: ?[]const u8, reason: []u8) struct { Level, []const u8 } {
    const text = requested orelse
        return .{ best, std.fmt.bufPrint(reason, "chosen by CPUID", .{}) catch reason };
    const wanted = parseLevel(text) orelse {
        const message = std.fmt.bufPrint(
            reason,
            "chosen by CPUID; SPINDLE_CPU_LEVEL={s} ignored: not baseline, avx2 or avx512",
            .{text[0..@min(text.len, 32)]},
        ) catch reason;
        return .{ best, message };
    };
    if (@intFromEnum(wanted) > @intFromEnum(best)) {
        const message = std.fmt.bufPrint(
            reason,
            "chosen by CPUID; SPINDLE_CPU_LEVEL={s} ignored: this CPU supports at most {s}",
            .{ @tagName(wanted), @tagName(best) },
        ) catch reason;
        return .{ best, message };
    }
    return .{ wanted, std.fmt.bufPrint(reason, "forced by SPINDLE_CPU_LEVEL={s}", .{@tagName(wanted)}) catch reason };
}

test "this CPU's level: at least what the build's CPU has" {
    if (builtin.cpu.arch != .x86_64) return error.SkipZigTest;
    const level = detected();
    const has = std.Target.x86.featureSetHas;
    if (has(builtin.cpu.features, .avx512f) and has(builtin.cpu.features, .avx512vl)) {
        try std.testing.expectEqual(Level.avx512, level);
    } else if (has(builtin.cpu.features, .avx2) and has(builtin.cpu.features, .fma)) {
        try std.testing.expect(@intFromEnum(level) >= @intFromEnum(Level.avx2));
    }
}

test "resolve lowers, never raises, and names a bad value" {
    var reason: [160]u8 = undefined;
    const lowered = resolve(.avx512, "avx2", &reason);
    try std.testing.expectEqual(Level.avx2, lowered[0]);
    try std.testing.expectEqualStrings("forced by SPINDLE_CPU_LEVEL=avx2", lowered[1]);
    const raised = resolve(.avx2, "avx512", &reason);
    try std.testing.expectEqual(Level.avx2, raised[0]);
    try std.testing.expect(std.mem.indexOf(u8, raised[1], "at most avx2") != null);
    const unknown = resolve(.baseline, "sse9", &reason);
    try std.testing.expectEqual(Level.baseline, unknown[0]);
    try std.testing.expect(std.mem.indexOf(u8, unknown[1], "sse9 ignored") != null);
    try std.testing.expectEqual(Level.avx512, resolve(.avx512, null, &reason)[0]);
}
