//! The Spindle model file: a self-describing container for graphs and their weights.
//!
//!   offset  size  field
//!        0     8  magic "SPINDLE\x00"
//!        8     4  format version (little-endian u32), currently 2
//!       12     4  reserved, 0
//!       16     8  graph description offset (u64)    — UTF-8 JSON, see `Description`
//!       24     8  graph description length (u64)
//!       32     8  tensor data offset (u64), a multiple of 64
//!       40     8  tensor data length (u64)
//!       48    16  reserved, 0
//!
//! Tensor data is little-endian; each tensor starts at a multiple of 64 bytes inside the data
//! region, so weights can be used in place. The same bytes are how TypeScript hands a traced
//! graph to the interpreter, so `script()` and `load()` share one validated path.
const std = @import("std");
const builtin = @import("builtin");
const status = @import("../status.zig");
const tensor = @import("../tensor.zig");

const Error = status.Error;

pub const magic = "SPINDLE\x00";
/// Version 2 names each op's parameters (version 1 listed them by position).
pub const version: u32 = 2;
pub const header_size = 64;
pub const data_alignment = 64;

/// Bounds that keep a hostile file from exhausting memory or time before it is rejected.
pub const max_description_bytes: u64 = 256 << 20;
pub const max_graphs = 64;
pub const max_nodes_per_graph = 1 << 20;
pub const max_values_per_graph = 1 << 22;
pub const max_tensors = 1 << 20;

comptime {
    // Tensor data is read in place as little-endian.
    std.debug.assert(builtin.cpu.arch.endian() == .little);
}

pub const Header = struct {
    description_offset: u64,
    description_length: u64,
    data_offset: u64,
    data_length: u64,
};

fn readU64(bytes: []const u8, offset: usize) u64 {
    return std.mem.readInt(u64, bytes[offset..][0..8], .little);
}

/// Checks the header and that both regions lie inside the file without overlapping it.
pub fn parseHeader(bytes: []const u8) Error!Header {
    if (bytes.len < header_size) {
        return status.fail(error.MalformedModel, "model: {d} bytes is too short for the {d}-byte header", .{ bytes.len, header_size });
    }
    if (!std.mem.eql(u8, bytes[0..8], magic)) return status.fail(error.MalformedModel, "model: not a Spindle model file (bad magic)", .{});
    const file_version = std.mem.readInt(u32, bytes[8..12], .little);
    if (file_version == 1) {
        return status.fail(error.MalformedModel, "model: this file uses format version 1 (op parameters by position), which this build no longer reads; re-save it with this version of Spindle (run the script that built it, or import the .onnx file again)", .{});
    }
    if (file_version != version) {
        return status.fail(error.MalformedModel, "model: format version {d} is not supported (this build reads version {d})", .{ file_version, version });
    }
    const header: Header = .{
        .description_offset = readU64(bytes, 16),
        .description_length = readU64(bytes, 24),
        .data_offset = readU64(bytes, 32),
        .data_length = readU64(bytes, 40),
    };
    const size: u64 = bytes.len;
    if (header.description_length > max_description_bytes) {
        return status.fail(error.MalformedModel, "model: graph description of {d} bytes exceeds the {d}-byte limit", .{ header.description_length, max_description_bytes });
    }
    if (header.description_offset < header_size or header.description_offset > size or header.description_length > size - header.description_offset) {
        return status.fail(error.MalformedModel, "model: graph description [{d}, +{d}) lies outside the {d}-byte file", .{ header.description_offset, header.description_length, size });
    }
    if (header.data_offset % data_alignment != 0) {
        return status.fail(error.MalformedModel, "model: tensor data offset {d} is not a multiple of {d}", .{ header.data_offset, data_alignment });
    }
    if (header.data_offset < header_size or header.data_offset > size or header.data_length > size - header.data_offset) {
        return status.fail(error.MalformedModel, "model: tensor data [{d}, +{d}) lies outside the {d}-byte file", .{ header.data_offset, header.data_length, size });
    }
    const description_end = header.description_offset + header.description_length;
    const data_end = header.data_offset + header.data_length;
    if (header.description_offset < data_end and header.data_offset < description_end) {
        return status.fail(error.MalformedModel, "model: graph description and tensor data overlap", .{});
    }
    return header;
}

// ---------------------------------------------------------------------------------------
// The graph description (JSON). Field names are the file format: change them only with the
// version number.

pub const TensorDescription = struct {
    name: []const u8 = "",
    dtype: []const u8,
    shape: []const i64,
    /// Byte offset inside the tensor data region (a multiple of 64).
    offset: u64,
    /// Byte length: element count × element size.
    bytes: u64,
};

/// A graph input, or (in `GraphDescription.results`) a graph output.
pub const InputDescription = struct {
    name: []const u8 = "",
    dtype: []const u8,
    /// -1 marks a dimension of any size.
    shape: []const i64,
    /// Names of symbolic dimensions (ONNX dim_param), one per dimension, null where a
    /// dimension has none; empty when none has one. Only TypeScript reads them.
    symbols: []const ?[]const u8 = &.{},
};

pub const NodeDescription = struct {
    /// An op name from ops.zig's OpCode, or "constant", "fork", "wait", "if", "loop", "scan".
    op: []const u8,
    inputs: []const u32 = &.{},
    outputs: []const u32,
    /// Named parameters, as the op's schema (ops.zig `Options`) names them; absent ones take
    /// their defaults. Non-finite floats are the strings "NaN", "Infinity", "-Infinity".
    params: ?std.json.Value = null,
    /// fork: the graph to run.
    graph: ?u32 = null,
    /// if: the then and else graphs; loop, scan: the body (program.zig Control).
    graphs: []const u32 = &.{},
    /// constant: the tensor it produces.
    tensor: ?u32 = null,
};

pub const GraphDescription = struct {
    name: []const u8 = "",
    /// Values 0 .. inputs.len - 1 are the graph's inputs.
    inputs: []const InputDescription,
    /// Values are numbered 0 .. values - 1; each is defined once.
    values: u32,
    nodes: []const NodeDescription,
    outputs: []const u32,
    /// Name, dtype and shape of each output (in the order of `outputs`), or empty. Only
    /// TypeScript reads them (a module's output metadata).
    results: []const InputDescription = &.{},
    /// One shape per input that the model accepts (its open dims given sizes), or empty: the
    /// sizes the load-time check runs open dims at (else 1). An imported model whose sizes
    /// must be multiples of 32 (a CNN detector) fails at 1 but runs at every size it allows.
    check_shapes: []const []const i64 = &.{},
};

pub const Description = struct {
    format: []const u8,
    version: u32,
    graphs: []const GraphDescription,
    tensors: []const TensorDescription,
};

/// Parses the JSON description into `arena`. Any syntax or schema error is a MalformedModel.
pub fn parseDescription(arena: std.mem.Allocator, json: []const u8) Error!Description {
    const description = std.json.parseFromSliceLeaky(Description, arena, json, .{
        .ignore_unknown_fields = false,
        .duplicate_field_behavior = .@"error",
        .allocate = .alloc_always,
    }) catch |err| {
        if (err == error.OutOfMemory) return error.OutOfMemory;
        return status.fail(error.MalformedModel, "model: the graph description is not valid ({s})", .{@errorName(err)});
    };
    if (!std.mem.eql(u8, description.format, "spindle-graph")) {
        return status.fail(error.MalformedModel, "model: description format is '{f}', expected 'spindle-graph'", .{status.printable(description.format)});
    }
    if (description.version != version) {
        return status.fail(error.MalformedModel, "model: description version {d} is not supported", .{description.version});
    }
    if (description.graphs.len == 0 or description.graphs.len > max_graphs) {
        return status.fail(error.MalformedModel, "model: {d} graphs (expected 1 to {d})", .{ description.graphs.len, max_graphs });
    }
    if (description.tensors.len > max_tensors) {
        return status.fail(error.MalformedModel, "model: {d} tensors exceeds the limit of {d}", .{ description.tensors.len, max_tensors });
    }
    try checkSignatures(arena, description.graphs);
    return description;
}

/// Checks what only TypeScript reads — names, symbolic dimensions, output descriptions — so
/// that a description that loads is consistent for it too.
fn checkSignatures(arena: std.mem.Allocator, graphs: []const GraphDescription) Error!void {
    for (graphs, 0..) |graph, index| {
        if (graph.results.len != 0 and graph.results.len != graph.outputs.len) {
            return status.fail(error.MalformedModel, "model: graph {d} describes {d} outputs but has {d}", .{ index, graph.results.len, graph.outputs.len });
        }
        for (graph.inputs) |input| try checkValue(input, index, "input");
        for (graph.results) |result| {
            if (std.meta.stringToEnum(tensor.DType, result.dtype) == null) {
                return status.fail(error.MalformedModel, "model: graph {d} has an output of unknown dtype '{f}'", .{ index, status.printable(result.dtype) });
            }
            try checkValue(result, index, "output");
        }
    }
    try checkNames(arena, graphs[0].inputs, "input");
    try checkNames(arena, graphs[0].results, "output");
}

fn checkValue(value: InputDescription, graph_index: usize, comptime what: []const u8) Error!void {
    if (value.shape.len > tensor.max_dims) {
        return status.fail(error.MalformedModel, "model: graph {d} has an " ++ what ++ " with {d} dims", .{ graph_index, value.shape.len });
    }
    if (value.symbols.len != 0 and value.symbols.len != value.shape.len) {
        return status.fail(error.MalformedModel, "model: graph {d} has an " ++ what ++ " with {d} symbols for {d} dims", .{ graph_index, value.symbols.len, value.shape.len });
    }
    for (value.shape, 0..) |dim, axis| {
        if (dim < -1) return status.fail(error.MalformedModel, "model: graph {d} has an " ++ what ++ " dimension {d}", .{ graph_index, dim });
        const named = value.symbols.len != 0 and value.symbols[axis] != null;
        if (named and dim != -1) {
            return status.fail(error.MalformedModel, "model: graph {d} names an " ++ what ++ " dimension of fixed size {d}", .{ graph_index, dim });
        }
    }
}

/// The entry graph's inputs (or outputs) are named all or none, without repeats: TypeScript
/// gives unnamed ones default names and feeds inputs by name.
fn checkNames(arena: std.mem.Allocator, values: []const InputDescription, comptime what: []const u8) Error!void {
    var seen: std.StringHashMapUnmanaged(void) = .empty;
    for (values) |value| {
        if (value.name.len == 0) continue;
        const entry = seen.getOrPut(arena, value.name) catch return error.OutOfMemory;
        if (entry.found_existing) return status.fail(error.MalformedModel, "model: graph 0 has two " ++ what ++ "s named '{f}'", .{status.printable(value.name)});
    }
    if (seen.count() != 0 and seen.count() != values.len) {
        return status.fail(error.MalformedModel, "model: graph 0 names {d} of its {d} " ++ what ++ "s (name all or none)", .{ seen.count(), values.len });
    }
}

/// Builds a file image: header, description, then the data region (already laid out by the
/// caller at 64-byte offsets). Used by tests and by native save.
pub fn writeImage(allocator: std.mem.Allocator, description_json: []const u8, data: []const u8) ![]u8 {
    const description_offset: u64 = header_size;
    const data_offset = std.mem.alignForward(u64, description_offset + description_json.len, data_alignment);
    const total = data_offset + data.len;
    const image = try allocator.alloc(u8, total);
    @memset(image, 0);
    @memcpy(image[0..8], magic);
    std.mem.writeInt(u32, image[8..12], version, .little);
    std.mem.writeInt(u64, image[16..24], description_offset, .little);
    std.mem.writeInt(u64, image[24..32], description_json.len, .little);
    std.mem.writeInt(u64, image[32..40], data_offset, .little);
    std.mem.writeInt(u64, image[40..48], data.len, .little);
    @memcpy(image[description_offset..][0..description_json.len], description_json);
    @memcpy(image[data_offset..][0..data.len], data);
    return image;
}

test "parseHeader accepts a well-formed image and refuses broken ones" {
    const allocator = std.testing.allocator;
    const image = try writeImage(allocator, "{}", &([_]u8{1} ** 64));
    defer allocator.free(image);
    const header = try parseHeader(image);
    try std.testing.expectEqual(@as(u64, 64), header.description_offset);
    try std.testing.expectEqual(@as(u64, 128), header.data_offset);
    try std.testing.expectError(error.MalformedModel, parseHeader(image[0..10]));
    try std.testing.expectError(error.MalformedModel, parseHeader(image[0 .. image.len - 1]));
    var broken = try allocator.dupe(u8, image);
    defer allocator.free(broken);
    broken[0] = 'X';
    try std.testing.expectError(error.MalformedModel, parseHeader(broken));
    @memcpy(broken[0..8], magic);
    std.mem.writeInt(u64, broken[32..40], 100, .little); // unaligned data
    try std.testing.expectError(error.MalformedModel, parseHeader(broken));
    std.mem.writeInt(u64, broken[32..40], 64, .little); // overlaps the description
    try std.testing.expectError(error.MalformedModel, parseHeader(broken));
    std.mem.writeInt(u64, broken[24..32], std.math.maxInt(u64), .little); // overflow attempt
    try std.testing.expectError(error.MalformedModel, parseHeader(broken));
}

test "parseDescription reads names, symbolic dimensions and output descriptions, and checks them" {
    var arena_state = std.heap.ArenaAllocator.init(std.testing.allocator);
    defer arena_state.deinit();
    const arena = arena_state.allocator();
    const good = "{\"format\":\"spindle-graph\",\"version\":" ++ std.fmt.comptimePrint("{d}", .{version}) ++
        \\,"tensors":[],"graphs":[{
        \\ "inputs":[{"name":"x","dtype":"float32","shape":[-1,4],"symbols":["batch",null]}],
        \\ "values":2,"nodes":[{"op":"relu","inputs":[0],"outputs":[1]}],"outputs":[1,1],
        \\ "results":[{"name":"y","dtype":"float32","shape":[-1,4],"symbols":["batch",null]},
        \\            {"name":"z","dtype":"int64","shape":[2]}]}]}
    ;
    const description = try parseDescription(arena, good);
    const graph = description.graphs[0];
    try std.testing.expectEqualStrings("batch", graph.inputs[0].symbols[0].?);
    try std.testing.expectEqual(@as(?[]const u8, null), graph.inputs[0].symbols[1]);
    try std.testing.expectEqualStrings("z", graph.results[1].name);
    try std.testing.expectEqual(@as(usize, 0), graph.results[1].symbols.len);
    const broken = [_]struct { []const u8, []const u8 }{
        .{ "\"symbols\":[\"batch\",null]}]", "\"symbols\":[\"batch\"]}]" }, // one symbol for two dims
        .{ "\"symbols\":[\"batch\",null]}]", "\"symbols\":[\"batch\",\"four\"]}]" }, // a fixed dim named
        .{ "\"dtype\":\"int64\"", "\"dtype\":\"float16\"" }, // an unknown output dtype
        .{ "\"name\":\"z\",", "\"name\":\"y\"," }, // two outputs named y
        .{ "\"name\":\"z\",", "" }, // one output named, one not
        .{ "\"outputs\":[1,1]", "\"outputs\":[1]" }, // two descriptions for one output
    };
    for (broken) |edit| {
        const json = try std.mem.replaceOwned(u8, arena, good, edit[0], edit[1]);
        try std.testing.expect(!std.mem.eql(u8, json, good));
        try std.testing.expectError(error.MalformedModel, parseDescription(arena, json));
    }
}
