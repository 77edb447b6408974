//! The facts of the C ABI that TypeScript must agree with, written once here and read by
//! `spindle_describe_json`: status codes, size limits and every op's schema.
//! ffi/abi.ts is generated from this JSON (`deno task gen`), and a test checks that the
//! committed file matches the library, so the two sides cannot drift apart.
const std = @import("std");
const status = @import("status.zig");
const tensor = @import("tensor.zig");
const settings = @import("settings.zig");
const ops = @import("ops.zig");

fn write(writer: *std.json.Stringify) !void {
    try writer.beginObject();
    try writer.objectField("status");
    try writer.beginArray();
    inline for (@typeInfo(status.Status).@"enum".fields, 0..) |field, i| {
        comptime std.debug.assert(field.value == i); // TypeScript indexes names by code
        try writer.write(field.name);
    }
    try writer.endArray();
    try writer.objectField("constants");
    try writer.write(.{
        .max_dims = tensor.max_dims,
        .max_inputs = ops.max_inputs,
        .max_flat_values = ops.max_flat_values,
        .message_capacity = status.message_capacity,
        .max_threads = settings.max_threads,
    });
    try writer.objectField("dtypes");
    try writer.beginArray();
    inline for (@typeInfo(tensor.DType).@"enum".fields, 0..) |field, i| {
        comptime std.debug.assert(field.value == i);
        try writer.write(field.name);
    }
    try writer.endArray();
    try writer.objectField("ops");
    try ops.describe(writer);
    try writer.endObject();
}

/// Writes the description into `destination` (truncated if short); returns its full length.
pub fn writeJson(destination: []u8) usize {
    var counting: std.Io.Writer.Discarding = .init(&.{});
    var counter: std.json.Stringify = .{ .writer = &counting.writer };
    write(&counter) catch unreachable; // a discarding writer cannot fail
    const length: usize = @intCast(counting.fullCount());
    if (length > destination.len) return length;
    var fixed: std.Io.Writer = .fixed(destination);
    var writer: std.json.Stringify = .{ .writer = &fixed };
    write(&writer) catch unreachable; // the destination holds `length` bytes
    return length;
}

test "writeJson describes every op and reports its length to short buffers" {
    var short: [16]u8 = undefined;
    const length = writeJson(&short);
    try std.testing.expect(length > short.len);
    const buffer = try std.testing.allocator.alloc(u8, length);
    defer std.testing.allocator.free(buffer);
    try std.testing.expectEqual(length, writeJson(buffer));
    const parsed = try std.json.parseFromSlice(std.json.Value, std.testing.allocator, buffer, .{});
    defer parsed.deinit();
    const described = parsed.value.object.get("ops").?.object;
    try std.testing.expectEqual(@typeInfo(ops.OpCode).@"enum".fields.len, described.count());
    const conv = described.get("conv2d").?.object;
    try std.testing.expectEqual(@as(i64, 39), conv.get("code").?.integer);
}
