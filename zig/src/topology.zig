//! CPU topology: logical CPUs the process may use, and the physical cores behind them.
//! PyTorch defaults its thread counts to physical cores: hyper-threads share one core's
//! FMA units, so a second thread per core adds contention, not throughput.
const std = @import("std");
const builtin = @import("builtin");

/// Logical CPUs this process may run on (affinity mask aware), at least 1.
pub fn logicalCpus() u32 {
    const count = std.Thread.getCpuCount() catch 1;
    return @intCast(@max(1, @min(count, std.math.maxInt(u16))));
}

/// Physical cores, counted as distinct (package, core) pairs in
/// /sys/devices/system/cpu/cpuN/topology. Falls back to the logical count where sysfs is
/// unavailable (containers without /sys, other operating systems).
pub fn physicalCores() u32 {
    if (builtin.os.tag != .linux) return logicalCpus();
    const counted = countPhysicalCoresSysfs() catch return logicalCpus();
    if (counted == 0) return logicalCpus();
    return @min(counted, logicalCpus());
}

const max_cpus = 4096;

fn countPhysicalCoresSysfs() !u32 {
    // Pairs of (package, core) seen so far; a small fixed table keeps this allocation-free.
    var seen: [max_cpus]u64 = undefined;
    var seen_count: usize = 0;
    var cpu: u32 = 0;
    var misses: u32 = 0;
    // CPU numbers can have holes (offline CPUs): stop after a run of missing entries.
    while (cpu < max_cpus and misses < 64) : (cpu += 1) {
        const package = readTopologyValue(cpu, "physical_package_id") catch {
            misses += 1;
            continue;
        };
        const core = readTopologyValue(cpu, "core_id") catch {
            misses += 1;
            continue;
        };
        misses = 0;
        const key = (@as(u64, package) << 32) | core;
        if (std.mem.indexOfScalar(u64, seen[0..seen_count], key) == null) {
            seen[seen_count] = key;
            seen_count += 1;
        }
    }
    return @intCast(seen_count);
}

fn readTopologyValue(cpu: u32, comptime name: []const u8) !u32 {
    var path_buffer: [96]u8 = undefined;
    const path = try std.fmt.bufPrint(&path_buffer, "/sys/devices/system/cpu/cpu{d}/topology/" ++ name, .{cpu});
    var file = try std.fs.openFileAbsolute(path, .{});
    defer file.close();
    var content_buffer: [32]u8 = undefined;
    const count = try file.read(&content_buffer);
    const text = std.mem.trim(u8, content_buffer[0..count], " \n\t");
    // physical_package_id is -1 on some virtual machines: treat it as one package.
    if (std.mem.eql(u8, text, "-1")) return 0;
    return std.fmt.parseInt(u32, text, 10);
}

test "physical cores are between 1 and the logical CPU count" {
    const physical = physicalCores();
    try std.testing.expect(physical >= 1);
    try std.testing.expect(physical <= logicalCpus());
}
