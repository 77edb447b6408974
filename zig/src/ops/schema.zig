//! The op schema mechanism. Each op's parameters are the fields of one Zig struct, its
//! options (ops.zig `Options`): the field type says what a parameter is, the field default is
//! its default, and the struct's `bounds` declaration gives valid ranges. Everything else is
//! derived from that struct, here, by reflection:
//!
//! - `decodeFlat` reads the f64 array that eager ops and forks pass through the FFI;
//! - `decodeJson` reads the named parameters of a model file's node (once, at load);
//! - `describe` writes the schema as JSON, from which ffi/abi.ts is generated.
//!
//! Parameter kinds (field types): `bool`; `i64`; `f64`; an enum (named by its tags, values
//! 0 … n-1); `?T` of a scalar kind (absent = null); `[N]i64` (a fixed list, e.g. [height,
//! width]); `List(i64|f64, capacity)` (a list of up to `capacity` values).
//!
//! The flat encoding, in field order: a scalar is one value (bool 0/1, enum its ordinal); an
//! optional is a presence flag (0/1) followed by one value (0 when absent); `[N]i64` is N
//! values; a `List` is its length followed by its items.
//!
//! An options struct may declare:
//! - `inputs`: the names of its tensor inputs; a trailing `?` marks an optional input and a
//!   trailing `...` a variadic one (up to max_inputs);
//! - `bounds`: a struct literal mapping field names to `Bound`s (list fields: each item);
//! - `check(options, op, input_count)`: cross-field rules, run after decoding;
//! - `parameter_inputs` (input indices) or `isParameterInput(options, index)`: the inputs
//!   whose values the op takes as parameters (a shape, a bound, a divisor), for the
//!   load-time check, which runs on made-up values (interpreter/execute.zig).
const std = @import("std");
const status = @import("../status.zig");

const Error = status.Error;

/// At most this many tensor inputs per op (concat's variadic list).
pub const max_inputs = 16;
/// At most this many f64 values in a flat parameter array.
pub const max_flat_values = 64;

/// An inclusive range for an integer or float parameter (NaN is outside every range).
pub const Bound = struct {
    min: f64,
    max: f64,

    pub const any_integer: Bound = .{ .min = -9.0e15, .max = 9.0e15 };
    pub const positive: Bound = .{ .min = 1, .max = 9.0e15 };
    pub const non_negative: Bound = .{ .min = 0, .max = 9.0e15 };
    pub const finite: Bound = .{ .min = -std.math.floatMax(f64), .max = std.math.floatMax(f64) };
    pub const not_nan: Bound = .{ .min = -std.math.inf(f64), .max = std.math.inf(f64) };

    fn contains(bound: Bound, value: f64) bool {
        return value >= bound.min and value <= bound.max;
    }
};

/// A list parameter of up to `capacity` items of type `Item` (i64 or f64).
pub fn List(comptime Item: type, comptime capacity: usize) type {
    comptime std.debug.assert(Item == i64 or Item == f64);
    comptime std.debug.assert(capacity > 0 and capacity < 256);
    return struct {
        const Self = @This();
        pub const is_schema_list = true;
        pub const item_type = Item;
        pub const item_capacity = capacity;

        len: u8 = 0,
        items: [capacity]Item = @splat(0),

        pub fn slice(list: *const Self) []const Item {
            return list.items[0..list.len];
        }

        /// A list holding `values` (which must fit; for tests and built-in defaults).
        pub fn of(values: []const Item) Self {
            std.debug.assert(values.len <= capacity);
            var list: Self = .{ .len = @intCast(values.len) };
            @memcpy(list.items[0..values.len], values);
            return list;
        }
    };
}

fn isList(comptime T: type) bool {
    return @typeInfo(T) == .@"struct" and @hasDecl(T, "is_schema_list");
}

/// The bound that applies to field `name` of `T` (its items, for a list).
fn boundOf(comptime T: type, comptime name: []const u8, comptime Item: type) ?Bound {
    if (@hasDecl(T, "bounds") and @hasField(@TypeOf(T.bounds), name)) return @field(T.bounds, name);
    if (Item == i64) return Bound.any_integer;
    return null;
}

/// The minimum and maximum number of tensor inputs `T` takes.
pub fn arity(comptime T: type) struct { min: usize, max: usize } {
    // Evaluated at comptime for every op in one `inline else` (ops.arity): the default
    // quota of 1000 branches ran out at quantized_pointwise's four inputs.
    @setEvalBranchQuota(10_000);
    var minimum: usize = 0;
    var maximum: usize = 0;
    for (T.inputs) |name| {
        if (std.mem.endsWith(u8, name, "...")) {
            maximum = max_inputs;
            minimum += 1;
        } else if (std.mem.endsWith(u8, name, "?")) {
            maximum += 1;
        } else {
            minimum += 1;
            maximum += 1;
        }
    }
    return .{ .min = minimum, .max = maximum };
}

/// Checks the input count against `T.inputs`.
pub fn checkArity(comptime T: type, op: []const u8, input_count: usize) Error!void {
    const bounds = comptime arity(T);
    if (input_count < bounds.min or input_count > bounds.max) {
        return status.fail(error.InvalidArgument, "{s}: expected {d} to {d} inputs, got {d}", .{ op, bounds.min, bounds.max, input_count });
    }
}

// ---------------------------------------------------------------------------------------
// Decoding the flat f64 encoding.

const FlatReader = struct {
    op: []const u8,
    values: []const f64,
    index: usize = 0,

    fn next(reader: *FlatReader, name: []const u8) Error!f64 {
        if (reader.index >= reader.values.len) {
            return status.fail(error.InvalidArgument, "{s}: missing parameter '{s}' ({d} values given)", .{ reader.op, name, reader.values.len });
        }
        defer reader.index += 1;
        return reader.values[reader.index];
    }

    fn integer(reader: *FlatReader, name: []const u8) Error!i64 {
        const value = try reader.next(name);
        return toInteger(reader.op, name, value);
    }
};

fn toInteger(op: []const u8, name: []const u8, value: f64) Error!i64 {
    if (!std.math.isFinite(value) or @trunc(value) != value or @abs(value) > 9.0e15) {
        return status.fail(error.InvalidArgument, "{s}: '{s}' must be an integer, got {d}", .{ op, name, value });
    }
    return @intFromFloat(value);
}

fn toFlag(op: []const u8, name: []const u8, value: i64) Error!bool {
    if (value != 0 and value != 1) {
        return status.fail(error.InvalidArgument, "{s}: '{s}' must be 0 or 1, got {d}", .{ op, name, value });
    }
    return value == 1;
}

fn toEnum(comptime E: type, op: []const u8, name: []const u8, value: i64) Error!E {
    if (value < 0 or value >= @typeInfo(E).@"enum".fields.len) {
        return status.fail(error.InvalidArgument, "{s}: '{s}' must be one of {s} (0 to {d}), got {d}", .{ op, name, comptime tagList(E), @typeInfo(E).@"enum".fields.len - 1, value });
    }
    return @enumFromInt(value);
}

fn tagList(comptime E: type) []const u8 {
    comptime {
        var text: []const u8 = "";
        for (@typeInfo(E).@"enum".fields, 0..) |field, i| {
            text = text ++ (if (i == 0) "" else ", ") ++ field.name;
        }
        return text;
    }
}

fn readScalar(comptime T: type, reader: *FlatReader, name: []const u8) Error!T {
    return switch (@typeInfo(T)) {
        .bool => toFlag(reader.op, name, try reader.integer(name)),
        .int => @intCast(try reader.integer(name)),
        .float => @floatCast(try reader.next(name)),
        .@"enum" => toEnum(T, reader.op, name, try reader.integer(name)),
        else => @compileError("schema: unsupported scalar parameter type " ++ @typeName(T)),
    };
}

fn readField(comptime T: type, reader: *FlatReader, name: []const u8) Error!T {
    if (comptime isList(T)) {
        const count = try reader.integer(name);
        if (count < 0 or count > T.item_capacity) {
            return status.fail(error.InvalidArgument, "{s}: '{s}' takes at most {d} values, got {d}", .{ reader.op, name, T.item_capacity, count });
        }
        var list: T = .{ .len = @intCast(count) };
        for (list.items[0..list.len]) |*item| item.* = try readScalar(T.item_type, reader, name);
        return list;
    }
    switch (@typeInfo(T)) {
        .optional => |optional| {
            const present = try toFlag(reader.op, name, try reader.integer(name));
            const value = try readScalar(optional.child, reader, name);
            return if (present) value else null;
        },
        .array => |array| {
            var result: T = undefined;
            for (&result) |*item| item.* = try readScalar(array.child, reader, name);
            return result;
        },
        else => return readScalar(T, reader, name),
    }
}

/// Decodes the flat encoding of `T` (see the module comment) and checks it. No values at all
/// stands for every parameter's default.
pub fn decodeFlat(comptime T: type, op: []const u8, values: []const f64, input_count: usize) Error!T {
    if (values.len == 0) return decodeDefaults(T, op, input_count);
    var reader: FlatReader = .{ .op = op, .values = values };
    var options: T = undefined;
    inline for (@typeInfo(T).@"struct".fields) |field| {
        @field(options, field.name) = try readField(field.type, &reader, field.name);
    }
    if (reader.index != values.len) {
        return status.fail(error.InvalidArgument, "{s}: expected {d} parameter values, got {d}", .{ op, reader.index, values.len });
    }
    try check(T, options, op, input_count);
    return options;
}

fn decodeDefaults(comptime T: type, op: []const u8, input_count: usize) Error!T {
    var options: T = undefined;
    inline for (@typeInfo(T).@"struct".fields) |field| {
        @field(options, field.name) = field.defaultValue() orelse
            return status.fail(error.InvalidArgument, "{s}: missing parameter '{s}'", .{ op, field.name });
    }
    try check(T, options, op, input_count);
    return options;
}

// ---------------------------------------------------------------------------------------
// Decoding named JSON parameters (model files).

const Value = std.json.Value;

fn jsonNumber(op: []const u8, name: []const u8, value: Value) Error!f64 {
    return switch (value) {
        .integer => |i| @floatFromInt(i),
        .float => |f| f,
        // Non-finite numbers are written as strings (JSON has no spelling for them);
        // ±1e999 overflows to a number_string.
        .string, .number_string => |text| if (std.mem.eql(u8, text, "NaN"))
            std.math.nan(f64)
        else if (std.mem.eql(u8, text, "Infinity"))
            std.math.inf(f64)
        else if (std.mem.eql(u8, text, "-Infinity"))
            -std.math.inf(f64)
        else if (value == .number_string)
            std.fmt.parseFloat(f64, text) catch unreachable
        else
            status.fail(error.MalformedModel, "{s}: '{s}' must be a number, got the string '{f}'", .{ op, name, status.printable(text) }),
        else => status.fail(error.MalformedModel, "{s}: '{s}' must be a number, got {s}", .{ op, name, @tagName(value) }),
    };
}

fn jsonScalar(comptime T: type, op: []const u8, name: []const u8, value: Value) Error!T {
    switch (@typeInfo(T)) {
        .bool => return switch (value) {
            .bool => |b| b,
            else => status.fail(error.MalformedModel, "{s}: '{s}' must be true or false, got {s}", .{ op, name, @tagName(value) }),
        },
        .int => {
            const number = try jsonNumber(op, name, value);
            return @intCast(toInteger(op, name, number) catch
                return status.fail(error.MalformedModel, "{s}: '{s}' must be an integer, got {d}", .{ op, name, number }));
        },
        .float => return @floatCast(try jsonNumber(op, name, value)),
        .@"enum" => {
            if (value != .string) {
                return status.fail(error.MalformedModel, "{s}: '{s}' must be one of {s}, got {s}", .{ op, name, comptime tagList(T), @tagName(value) });
            }
            return std.meta.stringToEnum(T, value.string) orelse
                status.fail(error.MalformedModel, "{s}: '{s}' must be one of {s}, got '{f}'", .{ op, name, comptime tagList(T), status.printable(value.string) });
        },
        else => @compileError("schema: unsupported scalar parameter type " ++ @typeName(T)),
    }
}

fn jsonField(comptime T: type, op: []const u8, name: []const u8, value: Value) Error!T {
    if (comptime isList(T)) {
        if (value != .array) return status.fail(error.MalformedModel, "{s}: '{s}' must be a list, got {s}", .{ op, name, @tagName(value) });
        const items = value.array.items;
        if (items.len > T.item_capacity) {
            return status.fail(error.MalformedModel, "{s}: '{s}' takes at most {d} values, got {d}", .{ op, name, T.item_capacity, items.len });
        }
        var list: T = .{ .len = @intCast(items.len) };
        for (items, list.items[0..items.len]) |item, *slot| slot.* = try jsonScalar(T.item_type, op, name, item);
        return list;
    }
    switch (@typeInfo(T)) {
        .optional => |optional| return if (value == .null) null else try jsonScalar(optional.child, op, name, value),
        .array => |array| {
            if (value != .array or value.array.items.len != array.len) {
                return status.fail(error.MalformedModel, "{s}: '{s}' must be a list of {d} values", .{ op, name, array.len });
            }
            var result: T = undefined;
            for (value.array.items, &result) |item, *slot| slot.* = try jsonScalar(array.child, op, name, item);
            return result;
        },
        else => return jsonScalar(T, op, name, value),
    }
}

fn fieldNames(comptime T: type) []const u8 {
    comptime {
        const fields = @typeInfo(T).@"struct".fields;
        if (fields.len == 0) return "none";
        var text: []const u8 = "";
        for (fields, 0..) |field, i| text = text ++ (if (i == 0) "" else ", ") ++ field.name;
        return text;
    }
}

/// Decodes named parameters (a JSON object, or null for all defaults) into `T` and checks
/// them. Unknown names, missing required parameters and wrong types are MalformedModel.
pub fn decodeJson(comptime T: type, op: []const u8, params: ?Value, input_count: usize) Error!T {
    const fields = @typeInfo(T).@"struct".fields;
    const object: ?std.json.ObjectMap = if (params) |p| switch (p) {
        .object => |o| o,
        .null => null,
        else => return status.fail(error.MalformedModel, "{s}: params must be an object of named parameters, got {s}", .{ op, @tagName(p) }),
    } else null;
    if (object) |o| {
        for (o.keys()) |key| {
            const known = inline for (fields) |field| {
                if (std.mem.eql(u8, key, field.name)) break true;
            } else false;
            if (!known) return status.fail(error.MalformedModel, "{s}: unknown parameter '{f}' (its parameters: {s})", .{ op, status.printable(key), comptime fieldNames(T) });
        }
    }
    if (object == null) return decodeDefaults(T, op, input_count) catch |err| if (err == error.InvalidArgument) error.MalformedModel else err;
    var options: T = undefined;
    inline for (fields) |field| {
        const given: ?Value = object.?.get(field.name);
        if (given) |value| {
            @field(options, field.name) = try jsonField(field.type, op, field.name, value);
        } else if (field.defaultValue()) |default| {
            @field(options, field.name) = default;
        } else {
            return status.fail(error.MalformedModel, "{s}: missing parameter '{s}'", .{ op, field.name });
        }
    }
    check(T, options, op, input_count) catch |err| return if (err == error.InvalidArgument) error.MalformedModel else err;
    return options;
}

// ---------------------------------------------------------------------------------------
// Checks shared by both decoders.

fn checkBound(op: []const u8, name: []const u8, bound: ?Bound, value: f64) Error!void {
    const b = bound orelse return;
    if (!b.contains(value)) {
        return status.fail(error.InvalidArgument, "{s}: '{s}' must be in [{d}, {d}], got {d}", .{ op, name, b.min, b.max, value });
    }
}

fn asFloat(value: anytype) f64 {
    return switch (@typeInfo(@TypeOf(value))) {
        .int => @floatFromInt(value),
        .float => @floatCast(value),
        else => unreachable,
    };
}

fn checkField(comptime T: type, comptime name: []const u8, op: []const u8, value: anytype) Error!void {
    const F = @TypeOf(value);
    if (comptime isList(F)) {
        const bound = comptime boundOf(T, name, F.item_type);
        for (value.slice()) |item| try checkBound(op, name, bound, asFloat(item));
        return;
    }
    switch (@typeInfo(F)) {
        .int, .float => try checkBound(op, name, comptime boundOf(T, name, F), asFloat(value)),
        .optional => |optional| if (value) |inner| switch (@typeInfo(optional.child)) {
            .int, .float => try checkBound(op, name, comptime boundOf(T, name, optional.child), asFloat(inner)),
            else => {},
        },
        .array => |array| for (value) |item| try checkBound(op, name, comptime boundOf(T, name, array.child), asFloat(item)),
        else => {},
    }
}

fn check(comptime T: type, options: T, op: []const u8, input_count: usize) Error!void {
    inline for (@typeInfo(T).@"struct".fields) |field| {
        try checkField(T, field.name, op, @field(options, field.name));
    }
    if (@hasDecl(T, "check")) try T.check(options, op, input_count);
}

// ---------------------------------------------------------------------------------------
// Describing the schema (JSON, for the generated TypeScript descriptors).

fn writeNumber(writer: *std.json.Stringify, value: f64) !void {
    if (std.math.isNan(value)) return writer.write("NaN");
    if (std.math.isInf(value)) return writer.write(if (value > 0) "Infinity" else "-Infinity");
    if (@trunc(value) == value and @abs(value) < 1e16) return writer.write(@as(i64, @intFromFloat(value)));
    return writer.write(value);
}

fn writeDefault(writer: *std.json.Stringify, value: anytype) !void {
    const T = @TypeOf(value);
    if (comptime isList(T)) {
        try writer.beginArray();
        for (value.slice()) |item| try writeNumber(writer, asFloat(item));
        return writer.endArray();
    }
    switch (@typeInfo(T)) {
        .bool => try writer.write(value),
        .int, .float => try writeNumber(writer, asFloat(value)),
        .@"enum" => try writer.write(@tagName(value)),
        .optional => if (value) |inner| try writeDefault(writer, inner) else try writer.write(null),
        .array => {
            try writer.beginArray();
            for (value) |item| try writeNumber(writer, asFloat(item));
            try writer.endArray();
        },
        else => @compileError("schema: unsupported parameter type " ++ @typeName(T)),
    }
}

/// The scalar kind of a field type, after unwrapping optionals, arrays and lists.
fn scalarType(comptime T: type) type {
    if (isList(T)) return T.item_type;
    return switch (@typeInfo(T)) {
        .optional => |optional| optional.child,
        .array => |array| array.child,
        else => T,
    };
}

fn kindName(comptime T: type) []const u8 {
    return switch (@typeInfo(T)) {
        .bool => "bool",
        .int => "int",
        .float => "float",
        .@"enum" => "enum",
        else => @compileError("schema: unsupported parameter type " ++ @typeName(T)),
    };
}

/// Writes one op's schema: {"inputs": [...], "params": [{name, kind, ...}]}.
pub fn describeOptions(comptime T: type, writer: *std.json.Stringify) !void {
    try writer.beginObject();
    try writer.objectField("inputs");
    try writer.write(T.inputs);
    try writer.objectField("params");
    try writer.beginArray();
    inline for (@typeInfo(T).@"struct".fields) |field| {
        const Scalar = scalarType(field.type);
        try writer.beginObject();
        try writer.objectField("name");
        try writer.write(field.name);
        try writer.objectField("kind");
        try writer.write(comptime kindName(Scalar));
        if (@typeInfo(field.type) == .optional) {
            try writer.objectField("optional");
            try writer.write(true);
        }
        if (@typeInfo(field.type) == .array) {
            try writer.objectField("length");
            try writer.write(@typeInfo(field.type).array.len);
        }
        if (comptime isList(field.type)) {
            try writer.objectField("capacity");
            try writer.write(field.type.item_capacity);
        }
        if (@typeInfo(Scalar) == .@"enum") {
            try writer.objectField("values");
            try writer.beginArray();
            inline for (@typeInfo(Scalar).@"enum".fields, 0..) |tag, i| {
                comptime std.debug.assert(tag.value == i); // the flat encoding sends ordinals
                try writer.write(tag.name);
            }
            try writer.endArray();
        }
        if (comptime boundOf(T, field.name, Scalar)) |bound| if (@typeInfo(Scalar) == .int or @typeInfo(Scalar) == .float) {
            try writer.objectField("min");
            try writeNumber(writer, bound.min);
            try writer.objectField("max");
            try writeNumber(writer, bound.max);
        };
        if (field.defaultValue()) |default| {
            try writer.objectField("default");
            try writeDefault(writer, default);
        }
        try writer.endObject();
    }
    try writer.endArray();
    try writer.endObject();
}

// ---------------------------------------------------------------------------------------

const Example = struct {
    pub const inputs: []const []const u8 = &.{ "x", "bias?" };
    pub const bounds = .{ .stride = Bound.positive, .eps = Bound{ .min = 0, .max = 1 }, .dims = Bound{ .min = -8, .max = 7 } };
    pub const Mode = enum(u8) { sum, mean };

    stride: [2]i64 = .{ 1, 1 },
    eps: f64 = 1e-5,
    mode: Mode = .mean,
    has_bias: bool = false,
    scalar: ?f64 = null,
    dims: List(i64, 4) = .{},
    size: i64,

    pub fn check(options: Example, op: []const u8, input_count: usize) Error!void {
        if (input_count != 1 + @as(usize, @intFromBool(options.has_bias))) {
            return status.fail(error.InvalidArgument, "{s}: {d} inputs do not match has_bias={}", .{ op, input_count, options.has_bias });
        }
    }
};

test "decodeFlat reads every kind in field order and checks bounds" {
    const options = try decodeFlat(Example, "example", &.{ 2, 3, 0.5, 1, 1, 1, 7, 2, -1, 3, 9 }, 2);
    try std.testing.expectEqual([2]i64{ 2, 3 }, options.stride);
    try std.testing.expectEqual(@as(f64, 0.5), options.eps);
    try std.testing.expectEqual(Example.Mode.mean, options.mode);
    try std.testing.expect(options.has_bias);
    try std.testing.expectEqual(@as(?f64, 7), options.scalar);
    try std.testing.expectEqualSlices(i64, &.{ -1, 3 }, options.dims.slice());
    try std.testing.expectEqual(@as(i64, 9), options.size);
    const absent = try decodeFlat(Example, "example", &.{ 1, 1, 0, 0, 0, 0, 0, 0, 4 }, 1);
    try std.testing.expectEqual(@as(?f64, null), absent.scalar);
    try std.testing.expectEqual(@as(usize, 0), absent.dims.slice().len);
    // A stride of 0, eps out of range, an unknown enum ordinal, a fractional size, a dims
    // item out of range, a list too long, values left over, values missing, inputs that
    // do not match has_bias.
    const bad = [_][]const f64{
        &.{ 0, 1, 0, 0, 0, 0, 0, 0, 4 },
        &.{ 1, 1, 2, 0, 0, 0, 0, 0, 4 },
        &.{ 1, 1, 0, 2, 0, 0, 0, 0, 4 },
        &.{ 1, 1, 0, 0, 0, 0, 0, 0, 4.5 },
        &.{ 1, 1, 0, 0, 0, 0, 0, 1, 8, 4 },
        &.{ 1, 1, 0, 0, 0, 0, 0, 5, 1, 1, 1, 1, 1, 4 },
        &.{ 1, 1, 0, 0, 0, 0, 0, 0, 4, 4 },
        &.{ 1, 1, 0, 0, 0, 0, 0, 0 },
        &.{ 1, 1, 0, 0, 1, 0, 0, 0, 4 },
    };
    for (bad) |values| try std.testing.expectError(error.InvalidArgument, decodeFlat(Example, "example", values, 1));
}

fn parseForTest(text: []const u8) !std.json.Parsed(Value) {
    return std.json.parseFromSlice(Value, std.testing.allocator, text, .{});
}

test "decodeJson reads named parameters, fills defaults and refuses the rest" {
    const parsed = try parseForTest(
        \\{"stride": [2, 3], "mode": "sum", "scalar": "NaN", "dims": [0, -1], "size": 4, "has_bias": true}
    );
    defer parsed.deinit();
    const options = try decodeJson(Example, "example", parsed.value, 2);
    try std.testing.expectEqual([2]i64{ 2, 3 }, options.stride);
    try std.testing.expectEqual(@as(f64, 1e-5), options.eps);
    try std.testing.expectEqual(Example.Mode.sum, options.mode);
    try std.testing.expect(std.math.isNan(options.scalar.?));
    try std.testing.expectEqualSlices(i64, &.{ 0, -1 }, options.dims.slice());
    const bad = [_][]const u8{
        \\{"size": 4, "strides": [1, 1]}
        ,
        \\{"stride": [1, 1]}
        ,
        \\{"size": 4, "mode": "median"}
        ,
        \\{"size": 4, "mode": 1}
        ,
        \\{"size": 4, "stride": [1]}
        ,
        \\{"size": 4, "stride": [0, 1]}
        ,
        \\{"size": 4.5}
        ,
        \\{"size": 4, "has_bias": 1}
        ,
        \\{"size": 4, "dims": [1, 2, 3, 4, 5]}
        ,
        \\{"size": 4, "eps": "Infinity"}
        ,
        \\[4]
    };
    for (bad) |text| {
        const p = try parseForTest(text);
        defer p.deinit();
        try std.testing.expectError(error.MalformedModel, decodeJson(Example, "example", p.value, 1));
    }
}

test "arity counts optional and variadic inputs" {
    try std.testing.expectEqual(@as(usize, 1), arity(Example).min);
    try std.testing.expectEqual(@as(usize, 2), arity(Example).max);
    const Variadic = struct {
        pub const inputs: []const []const u8 = &.{"inputs..."};
    };
    try std.testing.expectEqual(@as(usize, max_inputs), arity(Variadic).max);
    try std.testing.expectError(error.InvalidArgument, checkArity(Example, "example", 3));
}

test "describeOptions writes kinds, defaults and bounds" {
    var buffer: std.Io.Writer.Allocating = .init(std.testing.allocator);
    defer buffer.deinit();
    var writer: std.json.Stringify = .{ .writer = &buffer.writer };
    try describeOptions(Example, &writer);
    const text = buffer.written();
    try std.testing.expect(std.mem.indexOf(u8, text, "\"name\":\"stride\",\"kind\":\"int\",\"length\":2,\"min\":1,\"max\":9000000000000000,\"default\":[1,1]") != null);
    try std.testing.expect(std.mem.indexOf(u8, text, "\"name\":\"mode\",\"kind\":\"enum\",\"values\":[\"sum\",\"mean\"],\"default\":\"mean\"") != null);
    try std.testing.expect(std.mem.indexOf(u8, text, "\"name\":\"scalar\",\"kind\":\"float\",\"optional\":true,\"default\":null") != null);
    try std.testing.expect(std.mem.indexOf(u8, text, "\"name\":\"size\",\"kind\":\"int\",\"min\":-9000000000000000,\"max\":9000000000000000}") != null);
}
