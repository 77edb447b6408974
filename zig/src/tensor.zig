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
    /// What the allocation counted against a budget, given back when the storage is freed
    /// (see Budget): none for a region of an arena, whose bytes the arena's charge covers.
    charge: Charge = .{},
    /// Set when the bytes belong to the caller (createBorrowed): releasing the storage then
    /// frees only this struct, and detachBorrowed copies the bytes out while others hold it.
    borrowed: bool = false,
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
            refund(storage.charge);
            if (storage.arena) |arena| arena.release() else if (!storage.borrowed) storage_cache.free(storage.block);
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

/// One block that the interpreter carves into op outputs according to its plan. Every
/// storage placed in it holds a reference, so the block outlives any tensor that escapes.
pub const Arena = struct {
    block: storage_cache.Block,
    /// The whole block counted against the budget of the run that made it (see Budget).
    charge: Charge,
    /// Holders: the run that made it and each storage placed in it. Release/Acquire as in
    /// Storage.refs.
    refs: std.atomic.Value(u32),

    pub fn create(byte_count: usize) Error!*Arena {
        const charge = chargeBudget(byte_count) orelse
            return refuse("the memory plan's arena for one run's op outputs", .{}, byte_count);
        errdefer refund(charge);
        _ = storage_cache.system_allocations.fetchAdd(1, .monotonic);
        const arena = allocator.create(Arena) catch return error.OutOfMemory;
        errdefer allocator.destroy(arena);
        const block = storage_cache.allocate(@max(byte_count, 1)) catch return error.OutOfMemory;
        arena.* = .{ .block = block, .charge = charge, .refs = .init(1) };
        return arena;
    }

    pub fn release(arena: *Arena) void {
        const previous = arena.refs.fetchSub(1, .release);
        std.debug.assert(previous > 0);
        if (previous == 1) {
            _ = arena.refs.load(.acquire);
            refund(arena.charge);
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

/// A cap on the tensor bytes one thread holds at once while it is installed. Every run of a
/// program installs one of its own (execute.run: the program's memory budget), as do a model
/// load (its check on inputs of the declared shapes) and ONNX import (ops on stand-in
/// inputs), so that neither a small hostile file nor an oversized request can make them
/// allocate without bound. Budgets nest: a run started on a thread that already has one (a
/// forked graph run while its caller waits, a load during import) installs its own on top and
/// puts the hidden one back when it ends.
///
/// Each allocation records its charge with the id of the budget charged, and freeing gives
/// the bytes back to that budget only, and only while it is installed on the freeing thread:
/// bytes never return to a budget that did not count them. What is freed on another thread,
/// or after its budget was removed, stays counted (or is forgotten with the budget), which
/// errs on the safe side.
pub const Budget = struct {
    limit: usize,
    used: usize,
    /// Distinct for every budget installed in the process (never 0): a charge finds the
    /// budget that took it and no other.
    id: u64,
    /// The budget this one hides on its thread, put back by leaveBudget.
    previous: ?*Budget,
};

/// What one allocation counted against a budget, to give back when it is freed.
pub const Charge = struct {
    bytes: usize = 0,
    /// The id of the budget charged (0: none).
    budget: u64 = 0,
};

/// The innermost budget of this thread (null: allocations are not counted). Thread-local:
/// intra-op workers, which allocate nothing, never see it.
threadlocal var current_budget: ?*Budget = null;
/// Where setAllocationBudget keeps the budget it installs.
threadlocal var thread_budget: Budget = undefined;
/// The next budget id. Monotonic: ids need only be distinct; nothing is published through
/// them (a budget is read and written only by the thread that installed it).
var next_budget_id: std.atomic.Value(u64) = .init(1);

/// Installs `budget`, capped at `limit` bytes (null: uncapped, yet counted apart from the
/// budget it hides), as this thread's innermost one until leaveBudget(budget).
pub fn enterBudget(budget: *Budget, limit: ?usize) void {
    budget.* = .{
        .limit = limit orelse std.math.maxInt(usize),
        .used = 0,
        .id = next_budget_id.fetchAdd(1, .monotonic),
        .previous = current_budget,
    };
    std.debug.assert(budget.id != 0);
    current_budget = budget;
}

/// Removes `budget`, this thread's innermost one, and puts back the one it hid. Storage it
/// charged that is still alive (a run's outputs) is given back to no budget.
pub fn leaveBudget(budget: *Budget) void {
    std.debug.assert(current_budget == budget);
    current_budget = budget.previous;
}

/// Starts counting this thread's tensor allocations against `limit` bytes (null: no cap),
/// replacing the budget this function installed before. Called only outside scoped budgets
/// (enterBudget), which are left before the native call that entered them returns.
pub fn setAllocationBudget(limit: ?usize) void {
    std.debug.assert(current_budget == null or current_budget == &thread_budget);
    current_budget = null;
    if (limit) |bytes| enterBudget(&thread_budget, bytes);
}

/// Bytes held against this thread's innermost budget now (0 without one).
pub fn allocationBudgetUsed() usize {
    return if (current_budget) |budget| budget.used else 0;
}

/// Counts `bytes` against this thread's innermost budget: the charge to record (empty
/// without a budget), or null when they would take it past its limit.
fn chargeBudget(bytes: usize) ?Charge {
    const budget = current_budget orelse return .{};
    std.debug.assert(budget.used <= budget.limit);
    if (bytes > budget.limit - budget.used) return null;
    budget.used += bytes;
    return .{ .bytes = bytes, .budget = budget.id };
}

/// The too_large error for `bytes` of `what` that chargeBudget refused.
fn refuse(comptime what: []const u8, what_arguments: anytype, bytes: usize) Error {
    const budget = current_budget.?;
    return status.fail(error.TooLarge, what ++ " ({d} bytes) would take the allocations past the {d}-byte memory budget ({d} bytes used); raise the budget (the memoryBudget option of load, importOnnx or Module.fromScript) if the model really needs it", what_arguments ++ .{ bytes, budget.limit, budget.used });
}

/// Gives `charge` back to the budget that took it, if that budget is installed on this
/// thread; the walk is as long as the budgets nest here (forks nest at most
/// pool/future.zig's max_fork_depth deep).
fn refund(charge: Charge) void {
    if (charge.bytes == 0) return;
    var scope = current_budget;
    while (scope) |budget| : (scope = budget.previous) {
        if (budget.id != charge.budget) continue;
        std.debug.assert(budget.used >= charge.bytes);
        budget.used -= charge.bytes;
        return;
    }
}

/// A new contiguous float32 tensor holding `values` (one per element of `shape`).
pub fn fromF32(shape: []const usize, values: []const f32) Error!*Tensor {
    const t = try createUninit(.float32, shape);
    errdefer t.release();
    if (t.numel() != values.len) {
        return status.fail(error.ShapeMismatch, "{d} values for a tensor of shape {f}", .{ values.len, status.shape(shape) });
    }
    @memcpy(t.f32Slice(), values);
    return t;
}

/// A new contiguous tensor with uninitialised data.
pub fn createUninit(dtype: DType, shape: []const usize) Error!*Tensor {
    const count = try checkedNumel(shape, dtype);
    const bytes = count * dtype.size();
    // A planned output takes a region of an arena, whose charge covers it.
    const storage = try takePlanned(bytes) orelse try createCharged(shape, bytes);
    errdefer storage.release();
    return contiguousOver(storage, dtype, shape);
}

/// A contiguous tensor of `shape` at the start of `storage`, taking over its reference.
fn contiguousOver(storage: *Storage, dtype: DType, shape: []const usize) Error!*Tensor {
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

/// A contiguous tensor over `bytes`, memory the caller owns (an HTTP request's body): no
/// allocation and no copy. The caller keeps the bytes alive and unchanged until every run
/// that reads the tensor has ended, then calls detachBorrowed before it reuses them.
/// Nothing is charged to a budget: the library allocates nothing for it.
pub fn createBorrowed(dtype: DType, shape: []const usize, bytes: []align(alignment) u8) Error!*Tensor {
    const count = try checkedNumel(shape, dtype);
    if (bytes.len != count * dtype.size()) {
        return status.fail(error.ShapeMismatch, "tensor: {d} borrowed bytes for shape {f} of {s} (needs {d})", .{ bytes.len, status.shape(shape), dtype.name(), count * dtype.size() });
    }
    const storage = try StructCache(Storage).create();
    errdefer StructCache(Storage).destroy(storage);
    storage.* = .{ .bytes = bytes, .block = bytes, .borrowed = true, .refs = .init(1) };
    return contiguousOver(storage, dtype, shape);
}

/// Ends the borrow of a createBorrowed tensor's bytes, for a caller about to reuse them: when
/// anything besides the caller's own `holders` references of `t` still holds the storage (a
/// view, an output aliasing the input, a task), its bytes are first copied into memory the
/// library owns, so that those holders keep valid values. Nothing may read the storage
/// meanwhile: the caller calls this after every run that used the tensor has ended.
pub fn detachBorrowed(t: *Tensor, holders: u32) Error!void {
    const storage = t.storage;
    if (!storage.borrowed) return;
    // Acquire: pairs with the Release decrements of holders that let go (their reads of the
    // bytes happen before the count we see).
    const shared = t.refs.load(.acquire) > holders or storage.refs.load(.acquire) > 1;
    if (!shared) return;
    const block = storage_cache.allocate(@max(storage.bytes.len, 1)) catch
        return status.fail(error.OutOfMemory, "out of memory copying {d} borrowed bytes", .{storage.bytes.len});
    const owned = block[0..storage.bytes.len];
    @memcpy(owned, storage.bytes);
    storage.bytes = owned;
    storage.block = block;
    storage.borrowed = false;
}

fn createCharged(shape: []const usize, bytes: usize) Error!*Storage {
    const charge = chargeBudget(bytes) orelse return refuse("a tensor of shape {f}", .{status.shape(shape)}, bytes);
    errdefer refund(charge);
    const storage = try Storage.create(bytes);
    storage.charge = charge;
    return storage;
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

test "nested budgets hide and restore the outer one, each counting only its own tensors" {
    var outer: Budget = undefined;
    enterBudget(&outer, 1000);
    defer leaveBudget(&outer);
    const first = try createZeroed(.float32, &.{100}); // 400 bytes
    var inner: Budget = undefined;
    enterBudget(&inner, 500);
    try std.testing.expectEqual(@as(usize, 0), allocationBudgetUsed());
    const second = try createZeroed(.float32, &.{100});
    // The inner cap applies, though the outer budget has room.
    try std.testing.expectError(error.TooLarge, createZeroed(.float32, &.{100}));
    var message: [status.message_capacity]u8 = undefined;
    const text = message[0..status.lastMessage(&message)];
    try std.testing.expect(std.mem.indexOf(u8, text, "shape [100] (400 bytes)") != null);
    try std.testing.expect(std.mem.indexOf(u8, text, "memoryBudget") != null);
    // Freed while nested, a tensor of the outer budget goes back to it, not to the inner one.
    first.release();
    try std.testing.expectEqual(@as(usize, 400), inner.used);
    try std.testing.expectEqual(@as(usize, 0), outer.used);
    leaveBudget(&inner);
    try std.testing.expectEqual(@as(usize, 0), allocationBudgetUsed());
    // The inner budget is gone: its tensor, freed now, is given back to no one.
    const third = try createZeroed(.float32, &.{50});
    second.release();
    try std.testing.expectEqual(@as(usize, 200), allocationBudgetUsed());
    third.release();
    try std.testing.expectEqual(@as(usize, 0), allocationBudgetUsed());
}

test "storage freed under another budget, or on another thread, is not refunded to it" {
    setAllocationBudget(1000);
    defer setAllocationBudget(null);
    const old = try createZeroed(.float32, &.{100});
    // A new budget replaces the first: the old tensor's 400 bytes are not its to give back.
    setAllocationBudget(1000);
    const held = try createZeroed(.float32, &.{100});
    old.release();
    try std.testing.expectEqual(@as(usize, 400), allocationBudgetUsed());
    // Another thread with a budget of its own frees our tensor: its count does not drop, and
    // ours keeps the bytes (freed elsewhere: counted until the budget goes).
    const Other = struct {
        fn run(victim: *Tensor, used_after: *usize) void {
            setAllocationBudget(1000);
            defer setAllocationBudget(null);
            const own = createZeroed(.float32, &.{100}) catch return;
            defer own.release();
            victim.release();
            used_after.* = allocationBudgetUsed();
        }
    };
    var used_after: usize = 0;
    const thread = try std.Thread.spawn(.{}, Other.run, .{ held, &used_after });
    thread.join();
    try std.testing.expectEqual(@as(usize, 400), used_after);
    try std.testing.expectEqual(@as(usize, 400), allocationBudgetUsed());
}

test "an arena is charged whole, and the outputs planned into it are not charged again" {
    var budget: Budget = undefined;
    enterBudget(&budget, 1000);
    defer leaveBudget(&budget);
    const arena = try Arena.create(768);
    try std.testing.expectEqual(@as(usize, 768), budget.used);
    try std.testing.expectError(error.TooLarge, Arena.create(512));
    var message: [status.message_capacity]u8 = undefined;
    try std.testing.expect(std.mem.indexOf(u8, message[0..status.lastMessage(&message)], "arena") != null);
    planNextOutput(arena, 0, 400);
    const planned = try createUninit(.float32, &.{100});
    try std.testing.expect(planned.storage.arena == arena);
    try std.testing.expectEqual(@as(usize, 768), budget.used);
    arena.release(); // the planned tensor still holds the arena
    try std.testing.expectEqual(@as(usize, 768), budget.used);
    planned.release();
    try std.testing.expectEqual(@as(usize, 0), budget.used);
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

test "a borrowed tensor reads the caller's bytes in place and frees none of them" {
    var bytes: [16]u8 align(alignment) = undefined;
    @memcpy(std.mem.bytesAsSlice(f32, &bytes), &[_]f32{ 1, 2, 3, 4 });
    const t = try createBorrowed(.float32, &.{ 2, 2 }, &bytes);
    try std.testing.expectEqual(@intFromPtr(&bytes), @intFromPtr(t.storage.bytes.ptr));
    try std.testing.expectEqualSlices(f32, &.{ 1, 2, 3, 4 }, t.f32Slice());
    // Only holder: detach leaves it in place.
    try detachBorrowed(t, 1);
    try std.testing.expect(t.storage.borrowed);
    try std.testing.expectEqual(@intFromPtr(&bytes), @intFromPtr(t.storage.bytes.ptr));
    t.release(); // frees the structs, not the caller's (stack) bytes
    try std.testing.expectError(error.ShapeMismatch, createBorrowed(.float32, &.{ 2, 3 }, &bytes));
    try std.testing.expectError(error.ShapeMismatch, createBorrowed(.int64, &.{ 2, 2 }, &bytes));
}

test "detaching a borrowed tensor that a view still holds copies its bytes for the view" {
    var bytes: [24]u8 align(alignment) = undefined;
    @memcpy(std.mem.bytesAsSlice(i32, &bytes), &[_]i32{ 1, 2, 3, 4, 5, 6 });
    const t = try createBorrowed(.int32, &.{ 2, 3 }, &bytes);
    const view = try createView(t, &.{ 3, 2 }, &.{ 1, 3 }, 0); // the transpose
    try detachBorrowed(t, 1);
    try std.testing.expect(!t.storage.borrowed);
    t.release();
    // The caller reuses its bytes: the view keeps the values it had.
    @memset(&bytes, 0xff);
    var out: [6]i32 = undefined;
    copyToContiguous(view, std.mem.sliceAsBytes(&out));
    try std.testing.expectEqualSlices(i32, &.{ 1, 4, 2, 5, 3, 6 }, &out);
    view.release();
    // A tensor retained by another holder (a task) is copied out too.
    @memcpy(std.mem.bytesAsSlice(i32, &bytes), &[_]i32{ 7, 8, 9, 10, 11, 12 });
    const held = try createBorrowed(.int32, &.{6}, &bytes);
    held.retain();
    try detachBorrowed(held, 1);
    held.release();
    @memset(&bytes, 0);
    try std.testing.expectEqualSlices(i32, &.{ 7, 8, 9, 10, 11, 12 }, held.i32Slice());
    held.release();
}
