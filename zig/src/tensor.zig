//! Native tensors: a shared, reference-counted storage and a strided view over it, plus the
//! handle table through which TypeScript refers to them.
//!
//! TypeScript never sees a raw pointer: it holds a 64-bit handle (slot index + generation),
//! so a stale or forged handle is detected and refused instead of dereferenced.
const std = @import("std");
const status = @import("status.zig");
const handles = @import("handles.zig");
const storage_cache = @import("storage_cache.zig");

const Error = status.Error;
const allocator = std.heap.c_allocator;

pub const DType = enum(u8) {
    float32 = 0,
    int64 = 1,
    int32 = 2,

    pub fn size(dtype: DType) usize {
        return switch (dtype) {
            .float32, .int32 => 4,
            .int64 => 8,
        };
    }

    pub fn name(dtype: DType) []const u8 {
        return @tagName(dtype);
    }

    pub fn fromInt(raw: i64) Error!DType {
        return switch (raw) {
            0 => .float32,
            1 => .int64,
            2 => .int32,
            else => status.fail(error.InvalidArgument, "unknown dtype code {d}", .{raw}),
        };
    }
};

pub const max_dims = 8;
/// Largest tensor we agree to allocate: 64 GiB. Anything larger is a bug or an attack.
pub const max_bytes: usize = 64 << 30;
/// Storage is aligned for the widest vector loads (AVX-512) and for in-place model weights.
pub const alignment = 64;

/// Per-thread caches of Tensor and Storage structs, so that an op in steady state takes its
/// output's bookkeeping from a free list instead of malloc. A struct freed on another thread
/// lands in that thread's list (lists are per thread, never shared, so no locking). Bounded:
/// beyond `struct_cache_capacity` structs go back to malloc; at most that many per thread
/// stay cached when a thread exits.
const struct_cache_capacity = 64;

fn StructCache(comptime T: type) type {
    return struct {
        threadlocal var items: [struct_cache_capacity]*T = undefined;
        threadlocal var count: usize = 0;

        fn create() Error!*T {
            if (count > 0) {
                count -= 1;
                return items[count];
            }
            _ = storage_cache.system_allocations.fetchAdd(1, .monotonic);
            return allocator.create(T) catch error.OutOfMemory;
        }

        fn destroy(item: *T) void {
            if (count < struct_cache_capacity) {
                items[count] = item;
                count += 1;
                return;
            }
            allocator.destroy(item);
        }
    };
}

pub const Storage = struct {
    /// The tensor's bytes: the first `byte_count` bytes of `block`.
    bytes: []align(alignment) u8,
    /// The whole allocation, which may be larger (a size class of storage_cache); unused
    /// when the bytes live in an arena.
    block: storage_cache.Block,
    /// Set when the bytes are a region of an interpreter arena: releasing the storage then
    /// releases the arena instead of freeing a block.
    arena: ?*Arena = null,
    /// Bytes counted against the allocating thread's budget (0: none), given back when the
    /// storage is freed on a thread with a budget.
    charged: usize = 0,
    /// Incremented by every tensor viewing this storage. Release decrement synchronises
    /// with the Acquire load of the thread that frees, so all writes happen before free.
    refs: std.atomic.Value(u32),

    fn create(byte_count: usize) Error!*Storage {
        const storage = try StructCache(Storage).create();
        errdefer StructCache(Storage).destroy(storage);
        // Allocate at least one byte so that empty tensors still own a valid pointer.
        const block = storage_cache.allocate(@max(byte_count, 1)) catch
            return status.fail(error.OutOfMemory, "out of memory allocating {d} bytes", .{byte_count});
        storage.* = .{ .bytes = block[0..@max(byte_count, 1)], .block = block, .refs = .init(1) };
        return storage;
    }

    fn retain(storage: *Storage) void {
        // Monotonic: taking a reference needs no ordering, the caller already holds one.
        const previous = storage.refs.fetchAdd(1, .monotonic);
        std.debug.assert(previous > 0);
    }

    fn release(storage: *Storage) void {
        // Release: our writes to the bytes happen-before the free on whichever thread
        // drops the last reference; it pairs with the Acquire fence below.
        const previous = storage.refs.fetchSub(1, .release);
        std.debug.assert(previous > 0);
        if (previous == 1) {
            _ = storage.refs.load(.acquire);
            refundBudget(storage.charged);
            if (storage.arena) |arena| arena.release() else storage_cache.free(storage.block);
            StructCache(Storage).destroy(storage);
        }
    }
};

pub const Tensor = struct {
    storage: *Storage,
    /// Offset of element [0, 0, …] in elements of `dtype`.
    offset: usize,
    dtype: DType,
    ndim: u8,
    shape: [max_dims]usize,
    /// Strides in elements; views (transpose, slice) make them non-contiguous.
    strides: [max_dims]usize,
    /// Holders: the handle table, in-flight tasks. Same ordering protocol as Storage.refs.
    refs: std.atomic.Value(u32),

    pub fn dims(t: *const Tensor) []const usize {
        return t.shape[0..t.ndim];
    }

    pub fn numel(t: *const Tensor) usize {
        var count: usize = 1;
        for (t.dims()) |d| count *= d;
        return count;
    }

    pub fn isContiguous(t: *const Tensor) bool {
        var expected: usize = 1;
        var axis = t.ndim;
        while (axis > 0) {
            axis -= 1;
            if (t.shape[axis] != 1 and t.strides[axis] != expected) return false;
            expected *= t.shape[axis];
        }
        return true;
    }

    /// Contiguous float32 data. The caller checks dtype and contiguity first.
    pub fn f32Slice(t: *const Tensor) []f32 {
        std.debug.assert(t.dtype == .float32);
        std.debug.assert(t.isContiguous());
        const base: [*]f32 = @ptrCast(@alignCast(t.storage.bytes.ptr));
        return base[t.offset .. t.offset + t.numel()];
    }

    pub fn i64Slice(t: *const Tensor) []i64 {
        std.debug.assert(t.dtype == .int64);
        std.debug.assert(t.isContiguous());
        const base: [*]i64 = @ptrCast(@alignCast(t.storage.bytes.ptr));
        return base[t.offset .. t.offset + t.numel()];
    }

    pub fn i32Slice(t: *const Tensor) []i32 {
        std.debug.assert(t.dtype == .int32);
        std.debug.assert(t.isContiguous());
        const base: [*]i32 = @ptrCast(@alignCast(t.storage.bytes.ptr));
        return base[t.offset .. t.offset + t.numel()];
    }

    /// Contiguous bytes of this tensor.
    pub fn byteSlice(t: *const Tensor) []u8 {
        std.debug.assert(t.isContiguous());
        const start = t.offset * t.dtype.size();
        return t.storage.bytes[start .. start + t.numel() * t.dtype.size()];
    }

    pub fn retain(t: *Tensor) void {
        const previous = t.refs.fetchAdd(1, .monotonic);
        std.debug.assert(previous > 0);
    }

    pub fn release(t: *Tensor) void {
        const previous = t.refs.fetchSub(1, .release);
        std.debug.assert(previous > 0);
        if (previous == 1) {
            // Acquire pairs with the Release decrements of every other holder.
            _ = t.refs.load(.acquire);
            t.storage.release();
            StructCache(Tensor).destroy(t);
        }
    }
};

/// Validates a shape and returns its element count, refusing overflow and absurd sizes.
pub fn checkedNumel(shape: []const usize, dtype: DType) Error!usize {
    if (shape.len > max_dims) {
        return status.fail(error.InvalidArgument, "tensors have at most {d} dimensions, got {d}", .{ max_dims, shape.len });
    }
    var count: usize = 1;
    for (shape) |d| {
        count = std.math.mul(usize, count, d) catch
            return status.fail(error.TooLarge, "shape {f} overflows the element count", .{status.shape(shape)});
    }
    // An empty tensor's other dims still multiply into strides and byte offsets: their
    // product, in bytes, must fit in a usize too.
    var extent: usize = dtype.size();
    for (shape) |d| {
        extent = std.math.mul(usize, extent, @max(d, 1)) catch
            return status.fail(error.TooLarge, "shape {f} is too large: its nonzero dims overflow the byte count", .{status.shape(shape)});
    }
    const bytes = std.math.mul(usize, count, dtype.size()) catch
        return status.fail(error.TooLarge, "shape {f} overflows the byte count", .{status.shape(shape)});
    if (bytes > max_bytes) {
        return status.fail(error.TooLarge, "shape {f} needs {d} bytes, over the {d}-byte limit", .{ status.shape(shape), bytes, max_bytes });
    }
    return count;
}

/// A new contiguous tensor with uninitialised data.
/// One block that the interpreter carves into op outputs according to its plan. Every
/// storage placed in it holds a reference, so the block outlives any tensor that escapes.
pub const Arena = struct {
    block: storage_cache.Block,
    /// Holders: the run that made it and each storage placed in it. Release/Acquire as in
    /// Storage.refs.
    refs: std.atomic.Value(u32),

    pub fn create(byte_count: usize) Error!*Arena {
        _ = storage_cache.system_allocations.fetchAdd(1, .monotonic);
        const arena = allocator.create(Arena) catch return error.OutOfMemory;
        errdefer allocator.destroy(arena);
        const block = storage_cache.allocate(@max(byte_count, 1)) catch return error.OutOfMemory;
        arena.* = .{ .block = block, .refs = .init(1) };
        return arena;
    }

    pub fn release(arena: *Arena) void {
        const previous = arena.refs.fetchSub(1, .release);
        std.debug.assert(previous > 0);
        if (previous == 1) {
            _ = arena.refs.load(.acquire);
            storage_cache.free(arena.block);
            allocator.destroy(arena);
        }
    }
};

const PlannedOutput = struct { arena: *Arena, offset: usize, bytes: usize };

/// The region the interpreter reserved for the output of the op it is about to run on this
/// thread. The first allocation of exactly that size takes it. Thread-local: intra-op
/// workers never see it.
threadlocal var planned_output: ?PlannedOutput = null;

pub fn planNextOutput(arena: *Arena, offset: usize, bytes: usize) void {
    std.debug.assert(offset % alignment == 0);
    std.debug.assert(offset + bytes <= arena.block.len);
    planned_output = .{ .arena = arena, .offset = offset, .bytes = bytes };
}

pub fn clearPlannedOutput() void {
    planned_output = null;
}

fn takePlanned(byte_count: usize) Error!?*Storage {
    const planned = planned_output orelse return null;
    if (planned.bytes != byte_count or byte_count == 0) return null;
    planned_output = null;
    const storage = try StructCache(Storage).create();
    const region: []align(alignment) u8 = @alignCast(planned.arena.block[planned.offset..][0..byte_count]);
    // Monotonic: the run holds a reference, so the arena cannot be freed meanwhile.
    _ = planned.arena.refs.fetchAdd(1, .monotonic);
    storage.* = .{ .bytes = region, .block = region, .arena = planned.arena, .refs = .init(1) };
    return storage;
}

/// A cap on the tensor bytes one thread may hold at once while it is set. Loading a model
/// (its check on inputs of the declared shapes) and ONNX import (ops run on stand-in
/// inputs) run under one, so that a small hostile file cannot make them allocate without
/// bound. Storage freed on the same thread gives its bytes back; storage freed elsewhere
/// (rare while loading) keeps them counted, which only errs on the safe side.
pub const Budget = struct {
    limit: usize,
    used: usize = 0,
};

/// Thread-local: set and cleared by the thread that loads; intra-op workers never see it.
threadlocal var allocation_budget: ?Budget = null;

/// Starts counting this thread's tensor allocations against `limit` bytes (null: no cap).
pub fn setAllocationBudget(limit: ?usize) void {
    allocation_budget = if (limit) |bytes| .{ .limit = bytes } else null;
}

/// Bytes held against this thread's budget now (0 without one).
pub fn allocationBudgetUsed() usize {
    return if (allocation_budget) |budget| budget.used else 0;
}

fn chargeBudget(shape: []const usize, bytes: usize) Error!void {
    const budget = &(allocation_budget orelse return);
    if (bytes > budget.limit - budget.used) {
        return status.fail(error.TooLarge, "a tensor of shape {f} ({d} bytes) would take the allocations past the {d}-byte memory budget ({d} bytes used); raise the budget (load's memoryBudget option) if the model really needs it", .{
            status.shape(shape), bytes, budget.limit, budget.used,
        });
    }
    budget.used += bytes;
}

fn refundBudget(bytes: usize) void {
    const budget = &(allocation_budget orelse return);
    budget.used -= @min(bytes, budget.used);
}

pub fn createUninit(dtype: DType, shape: []const usize) Error!*Tensor {
    const count = try checkedNumel(shape, dtype);
    const bytes = count * dtype.size();
    try chargeBudget(shape, bytes);
    const storage = (takePlanned(bytes) catch |err| {
        refundBudget(bytes);
        return err;
    }) orelse Storage.create(bytes) catch |err| {
        refundBudget(bytes);
        return err;
    };
    if (allocation_budget != null) storage.charged = bytes;
    errdefer storage.release();
    const t = try StructCache(Tensor).create();
    t.* = .{
        .storage = storage,
        .offset = 0,
        .dtype = dtype,
        .ndim = @intCast(shape.len),
        .shape = @splat(1),
        .strides = @splat(1),
        .refs = .init(1),
    };
    @memcpy(t.shape[0..shape.len], shape);
    setContiguousStrides(t);
    return t;
}

pub fn createZeroed(dtype: DType, shape: []const usize) Error!*Tensor {
    const t = try createUninit(dtype, shape);
    @memset(t.storage.bytes, 0);
    return t;
}

fn setContiguousStrides(t: *Tensor) void {
    var stride: usize = 1;
    var axis = t.ndim;
    while (axis > 0) {
        axis -= 1;
        t.strides[axis] = stride;
        stride *= t.shape[axis];
    }
}

/// A view sharing `source`'s storage with another shape and strides.
pub fn createView(source: *const Tensor, shape: []const usize, strides: []const usize, offset: usize) Error!*Tensor {
    std.debug.assert(shape.len == strides.len);
    std.debug.assert(shape.len <= max_dims);
    const t = try StructCache(Tensor).create();
    source.storage.retain();
    t.* = .{
        .storage = source.storage,
        .offset = offset,
        .dtype = source.dtype,
        .ndim = @intCast(shape.len),
        .shape = @splat(1),
        .strides = @splat(1),
        .refs = .init(1),
    };
    @memcpy(t.shape[0..shape.len], shape);
    @memcpy(t.strides[0..shape.len], strides);
    return t;
}

/// Copies a (possibly strided) tensor into `destination` in row-major order.
pub fn copyToContiguous(t: *const Tensor, destination: []u8) void {
    const element_size = t.dtype.size();
    std.debug.assert(destination.len == t.numel() * element_size);
    if (t.isContiguous()) {
        @memcpy(destination, t.byteSlice());
        return;
    }
    var index: [max_dims]usize = @splat(0);
    const count = t.numel();
    var written: usize = 0;
    while (written < count) : (written += 1) {
        var source_element = t.offset;
        for (0..t.ndim) |axis| source_element += index[axis] * t.strides[axis];
        const source_byte = source_element * element_size;
        @memcpy(
            destination[written * element_size ..][0..element_size],
            t.storage.bytes[source_byte..][0..element_size],
        );
        // Advance the multi-index, last axis fastest.
        var axis = t.ndim;
        while (axis > 0) {
            axis -= 1;
            index[axis] += 1;
            if (index[axis] < t.shape[axis]) break;
            index[axis] = 0;
        }
    }
}

/// A contiguous tensor with the same values: `t` itself (retained) when already contiguous.
pub fn contiguous(t: *Tensor) Error!*Tensor {
    if (t.isContiguous()) {
        t.retain();
        return t;
    }
    const copy = try createUninit(t.dtype, t.dims());
    copyToContiguous(t, copy.byteSlice());
    return copy;
}

// ---------------------------------------------------------------------------------------
// The handle table through which TypeScript refers to tensors.

pub const Handle = handles.Handle;
pub var table: handles.Table(Tensor, "tensor") = .{};

test "an allocation budget refuses the tensor that would pass it, and only on its thread" {
    setAllocationBudget(1000);
    defer setAllocationBudget(null);
    const first = try createZeroed(.float32, &.{ 10, 10 });
    const second = try createZeroed(.float32, &.{ 10, 10 });
    try std.testing.expectEqual(@as(usize, 800), allocationBudgetUsed());
    // 800 held: a third 400 does not fit until one is freed.
    try std.testing.expectError(error.TooLarge, createZeroed(.float32, &.{ 10, 10 }));
    try std.testing.expectEqual(@as(usize, 800), allocationBudgetUsed());
    first.release();
    try std.testing.expectEqual(@as(usize, 400), allocationBudgetUsed());
    const third = try createZeroed(.float32, &.{ 10, 10 });
    third.release();
    second.release();
    try std.testing.expectEqual(@as(usize, 0), allocationBudgetUsed());
    const Other = struct {
        fn run(result: *bool) void {
            const t = createZeroed(.float32, &.{ 1000, 1000 }) catch return;
            t.release();
            result.* = true;
        }
    };
    var allocated = false;
    const thread = try std.Thread.spawn(.{}, Other.run, .{&allocated});
    thread.join();
    try std.testing.expect(allocated);
    setAllocationBudget(null);
    const free = try createZeroed(.float32, &.{ 1000, 1000 });
    free.release();
}

test "checkedNumel refuses overflow, too many dims and huge sizes" {
    try std.testing.expectEqual(@as(usize, 0), try checkedNumel(&.{ 3, 0 }, .float32));
    try std.testing.expectEqual(@as(usize, 1), try checkedNumel(&.{}, .float32));
    const huge = std.math.maxInt(usize) / 2;
    try std.testing.expectError(error.TooLarge, checkedNumel(&.{ huge, 4 }, .float32));
    try std.testing.expectError(error.TooLarge, checkedNumel(&.{ 1 << 20, 1 << 20, 1 << 10 }, .float32));
    try std.testing.expectError(error.InvalidArgument, checkedNumel(&(.{1} ** 9), .float32));
    // Empty, but its strides would overflow.
    try std.testing.expectError(error.TooLarge, checkedNumel(&.{ 0, 1 << 40, 1 << 40 }, .float32));
}

test "views share storage and copyToContiguous follows strides" {
    const t = try createUninit(.float32, &.{ 2, 3 });
    defer t.release();
    for (t.f32Slice(), 0..) |*x, i| x.* = @floatFromInt(i);
    const transposed = try createView(t, &.{ 3, 2 }, &.{ 1, 3 }, 0);
    defer transposed.release();
    try std.testing.expect(!transposed.isContiguous());
    var out: [6]f32 = undefined;
    copyToContiguous(transposed, std.mem.sliceAsBytes(&out));
    try std.testing.expectEqualSlices(f32, &.{ 0, 3, 1, 4, 2, 5 }, &out);
}
