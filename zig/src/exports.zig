//! Every exported C function of libspindle (each `pub fn spindle_*` with `callconv(.c)`,
//! exported by the comptime block below). Each converts its C arguments to checked Zig
//! values, calls into the library, and maps Zig errors to status codes. ffi/symbols.ts lists
//! these functions in the same order with the same C prototypes.
//!
//! Besides them lives only OpTask, the context of an op forked through spindle_fork_op:
//! this layer is where ops meet the inter-op pool, which knows tasks and futures, not ops
//! (pool/inter_op.zig, pool/future.zig).
const std = @import("std");
const build_options = @import("build_options");
const status = @import("status.zig");
const settings = @import("settings.zig");
const topology = @import("topology.zig");
const tensor = @import("tensor.zig");
const ops = @import("ops.zig");
const Pool = @import("pool/inter_op.zig");
const Future = @import("pool/future.zig");
const intra_op = @import("pool/intra_op.zig");
const openblas = @import("kernels/openblas.zig");
const info = @import("info.zig");
const abi = @import("abi.zig");
const program = @import("interpreter/program.zig");
const execute = @import("interpreter/execute.zig");
const call = @import("interpreter/call.zig");
const channels = @import("pool/channels.zig");

const Error = status.Error;
const Handle = tensor.Handle;

/// Bumped whenever an exported signature or status/op code changes meaning.
/// 2: op parameters in the schema's flat encoding (ops/schema.zig), spindle_describe_json.
/// 3: spindle_program_load takes the program's memory budget.
/// 4: spindle_program_load takes the program's precision.
pub const abi_version: u32 = 4;

/// The C name of export `name` in this copy of the library. A native build exports the plain
/// names; the portable x86-64 build links one copy per CPU level (build.zig, portable.zig),
/// each exporting its names with the level's suffix, hidden, and portable.zig exports the
/// plain names, forwarding to the copy chosen once from CPUID.
pub fn symbolName(comptime name: []const u8) []const u8 {
    return name ++ build_options.symbol_suffix;
}

comptime {
    // `pub fn` + @export rather than `export fn`: only so can the suffix and visibility
    // depend on the build (the dispatcher imports this file for the signatures alone).
    if (build_options.portable_role != .dispatcher) {
        for (@typeInfo(@This()).@"struct".decls) |decl| {
            if (!std.mem.startsWith(u8, decl.name, "spindle_")) continue;
            @export(&@field(@This(), decl.name), .{
                .name = symbolName(decl.name),
                .visibility = if (build_options.portable_role == .level) .hidden else .default,
            });
        }
    }
}

comptime {
    // Handles cross the boundary as u64 (BigInt in TypeScript): keep them one word.
    std.debug.assert(@sizeOf(Handle) == 8);
    std.debug.assert(@sizeOf(status.Status) == 4);
}

/// u32 spindle_abi_version(void)
pub fn spindle_abi_version() callconv(.c) u32 {
    // The loader calls this first: pin the library so Deno's dlclose at exit cannot unmap
    // code that worker threads still run.
    @import("pin.zig").pin();
    return abi_version;
}

/// size_t spindle_last_error(uint8_t *buffer, size_t capacity)
pub fn spindle_last_error(buffer: ?[*]u8, capacity: usize) callconv(.c) usize {
    const destination = buffer orelse return 0;
    return status.lastMessage(destination[0..capacity]);
}

/// size_t spindle_info_json(uint8_t *buffer, size_t capacity): writes the parallel_info
/// facts as JSON and returns the full length (call again with a larger buffer if needed).
pub fn spindle_info_json(buffer: ?[*]u8, capacity: usize) callconv(.c) usize {
    const destination: []u8 = if (buffer) |pointer| pointer[0..capacity] else &.{};
    return info.writeJson(destination);
}

/// int32_t spindle_get_num_threads(void)
pub fn spindle_get_num_threads() callconv(.c) i32 {
    return @intCast(settings.getNumThreads());
}

/// int32_t spindle_set_num_threads(int64_t count)
pub fn spindle_set_num_threads(count: i64) callconv(.c) i32 {
    status.clearMessage();
    return status.toStatus(settings.setNumThreads(count));
}

/// int32_t spindle_get_num_interop_threads(void)
pub fn spindle_get_num_interop_threads() callconv(.c) i32 {
    return @intCast(settings.getNumInteropThreads());
}

/// int32_t spindle_set_num_interop_threads(int64_t count)
pub fn spindle_set_num_interop_threads(count: i64) callconv(.c) i32 {
    status.clearMessage();
    return status.toStatus(settings.setNumInteropThreads(count));
}

fn readShape(ndim: u32, shape: ?[*]const i64, buffer: *[tensor.max_dims]usize) Error![]const usize {
    if (ndim > tensor.max_dims) {
        return status.fail(error.InvalidArgument, "tensors have at most {d} dimensions, got {d}", .{ tensor.max_dims, ndim });
    }
    if (ndim == 0) return buffer[0..0];
    const raw = (shape orelse return status.fail(error.InvalidArgument, "shape pointer is null", .{}))[0..ndim];
    for (raw, 0..) |d, axis| {
        if (d < 0) return status.fail(error.InvalidArgument, "dimension {d} is negative ({d})", .{ axis, d });
        buffer[axis] = @intCast(d);
    }
    return buffer[0..ndim];
}

fn publish(t: *tensor.Tensor, out: ?*Handle) Error!void {
    const destination = out orelse {
        t.release();
        return status.fail(error.InvalidArgument, "output handle pointer is null", .{});
    };
    errdefer t.release();
    destination.* = try tensor.table.register(t);
}

/// int32_t spindle_tensor_create(uint32_t dtype, uint32_t ndim, const int64_t *shape,
///     const uint8_t *data, size_t data_bytes, uint64_t *out): copies `data` (or zeroes
///     when data is null) into a new contiguous tensor.
pub fn spindle_tensor_create(dtype_code: u32, ndim: u32, shape: ?[*]const i64, data: ?[*]const u8, data_bytes: usize, out: ?*Handle) callconv(.c) i32 {
    status.clearMessage();
    return status.toStatus(tensorCreate(dtype_code, ndim, shape, data, data_bytes, out));
}

fn tensorCreate(dtype_code: u32, ndim: u32, shape: ?[*]const i64, data: ?[*]const u8, data_bytes: usize, out: ?*Handle) Error!void {
    const dtype = try tensor.DType.fromInt(dtype_code);
    var shape_buffer: [tensor.max_dims]usize = undefined;
    const dims = try readShape(ndim, shape, &shape_buffer);
    const count = try tensor.checkedNumel(dims, dtype);
    const t = try tensor.createUninit(dtype, dims);
    errdefer t.release();
    if (data) |bytes| {
        if (data_bytes != count * dtype.size()) {
            return status.fail(error.ShapeMismatch, "tensor: {d} bytes of data for shape {f} of {s} (needs {d})", .{ data_bytes, status.shape(dims), dtype.name(), count * dtype.size() });
        }
        @memcpy(t.byteSlice(), bytes[0..data_bytes]);
    } else {
        @memset(t.byteSlice(), 0);
    }
    try publish(t, out);
}

/// int32_t spindle_tensor_borrow(uint32_t dtype, uint32_t ndim, const int64_t *shape,
///     uint8_t *data, size_t data_bytes, uint64_t *out): a contiguous tensor over the
///     caller's `data` (64-byte aligned, exactly numel · element size bytes), no copy. The
///     caller keeps the bytes alive and unchanged until every run reading the tensor has
///     ended, then calls spindle_tensor_detach before it reuses or frees them.
pub fn spindle_tensor_borrow(dtype_code: u32, ndim: u32, shape: ?[*]const i64, data: ?[*]u8, data_bytes: usize, out: ?*Handle) callconv(.c) i32 {
    status.clearMessage();
    return status.toStatus(tensorBorrow(dtype_code, ndim, shape, data, data_bytes, out));
}

fn tensorBorrow(dtype_code: u32, ndim: u32, shape: ?[*]const i64, data: ?[*]u8, data_bytes: usize, out: ?*Handle) Error!void {
    const dtype = try tensor.DType.fromInt(dtype_code);
    var shape_buffer: [tensor.max_dims]usize = undefined;
    const dims = try readShape(ndim, shape, &shape_buffer);
    const count = try tensor.checkedNumel(dims, dtype);
    if (count == 0) return status.fail(error.InvalidArgument, "borrow: the tensor is empty (create it instead)", .{});
    const pointer = data orelse return status.fail(error.InvalidArgument, "borrow: data is null", .{});
    if (@intFromPtr(pointer) % tensor.alignment != 0) {
        return status.fail(error.InvalidArgument, "borrow: data at 0x{x} is not {d}-byte aligned (copy it instead)", .{ @intFromPtr(pointer), tensor.alignment });
    }
    const bytes: []align(tensor.alignment) u8 = @alignCast(pointer[0..data_bytes]);
    try publish(try tensor.createBorrowed(dtype, dims, bytes), out);
}

/// int32_t spindle_tensor_detach(uint64_t handle): ends the borrow of a spindle_tensor_borrow
///     tensor's bytes (no-op for others): when anything but this handle still holds its
///     storage (a view, an output aliasing it), the bytes are copied into library memory
///     first. Call it after every run that read the tensor has ended; afterwards the
///     library no longer reads the caller's bytes.
pub fn spindle_tensor_detach(handle: Handle) callconv(.c) i32 {
    status.clearMessage();
    return status.toStatus(tensorDetach(handle));
}

fn tensorDetach(handle: Handle) Error!void {
    const t = try tensor.table.acquire(handle);
    defer t.release();
    // Two references are the caller's: the handle table's and this acquire's.
    try tensor.detachBorrowed(t, 2);
}

/// int32_t spindle_tensor_full(uint32_t dtype, uint32_t ndim, const int64_t *shape,
///     double value, uint64_t *out)
pub fn spindle_tensor_full(dtype_code: u32, ndim: u32, shape: ?[*]const i64, value: f64, out: ?*Handle) callconv(.c) i32 {
    status.clearMessage();
    return status.toStatus(tensorFull(dtype_code, ndim, shape, value, out));
}

fn tensorFull(dtype_code: u32, ndim: u32, shape: ?[*]const i64, value: f64, out: ?*Handle) Error!void {
    const dtype = try tensor.DType.fromInt(dtype_code);
    var shape_buffer: [tensor.max_dims]usize = undefined;
    const dims = try readShape(ndim, shape, &shape_buffer);
    const t = try tensor.createUninit(dtype, dims);
    errdefer t.release();
    switch (dtype) {
        .float32 => @memset(t.f32Slice(), @floatCast(value)),
        .int64, .int32 => {
            if (std.math.isNan(value) or @trunc(value) != value or @abs(value) > 9.007199254740992e15) {
                return status.fail(error.InvalidArgument, "full: {d} is not an integer fill value for {s}", .{ value, dtype.name() });
            }
            const integer: i64 = @intFromFloat(value);
            if (dtype == .int64) @memset(t.i64Slice(), integer) else {
                const narrow = std.math.cast(i32, integer) orelse
                    return status.fail(error.InvalidArgument, "full: {d} does not fit in int32", .{integer});
                @memset(t.i32Slice(), narrow);
            }
        },
    }
    try publish(t, out);
}

/// int32_t spindle_tensor_random(uint32_t ndim, const int64_t *shape, uint64_t seed,
///     uint32_t normal, uint64_t *out): float32 uniform [0, 1) or standard normal values,
///     the same for the same seed on every machine.
pub fn spindle_tensor_random(ndim: u32, shape: ?[*]const i64, seed: u64, normal: u32, out: ?*Handle) callconv(.c) i32 {
    status.clearMessage();
    return status.toStatus(tensorRandom(ndim, shape, seed, normal != 0, out));
}

fn tensorRandom(ndim: u32, shape: ?[*]const i64, seed: u64, normal: bool, out: ?*Handle) Error!void {
    var shape_buffer: [tensor.max_dims]usize = undefined;
    const dims = try readShape(ndim, shape, &shape_buffer);
    const t = try tensor.createUninit(.float32, dims);
    errdefer t.release();
    var prng = std.Random.DefaultPrng.init(seed);
    const random = prng.random();
    if (normal) {
        for (t.f32Slice()) |*x| x.* = random.floatNorm(f32);
    } else {
        for (t.f32Slice()) |*x| x.* = random.float(f32);
    }
    try publish(t, out);
}

/// int32_t spindle_tensor_info(uint64_t handle, int64_t *out /* [12] */): out[0] = dtype,
///     out[1] = ndim, out[2] = address of the tensor's storage, out[3] = the storage's byte
///     count, out[4..12] = shape. TypeScript reports the storage to V8 as external memory
///     (an ArrayBuffer over it that nothing reads), so that the GC runs as native memory
///     grows and finalises tensors nobody disposed.
pub fn spindle_tensor_info(handle: Handle, out: ?*[4 + tensor.max_dims]i64) callconv(.c) i32 {
    status.clearMessage();
    return status.toStatus(tensorInfo(handle, out));
}

fn tensorInfo(handle: Handle, out: ?*[4 + tensor.max_dims]i64) Error!void {
    const destination = out orelse return status.fail(error.InvalidArgument, "info pointer is null", .{});
    const t = try tensor.table.acquire(handle);
    defer t.release();
    destination.* = @splat(0);
    destination[0] = @intFromEnum(t.dtype);
    destination[1] = t.ndim;
    destination[2] = @intCast(@intFromPtr(t.storage.bytes.ptr));
    destination[3] = @intCast(t.storage.bytes.len);
    for (t.dims(), 0..) |d, axis| destination[4 + axis] = @intCast(d);
}

/// int32_t spindle_tensor_read(uint64_t handle, uint8_t *destination, size_t bytes):
///     copies the values in row-major order; `bytes` must equal numel · element size.
pub fn spindle_tensor_read(handle: Handle, destination: ?[*]u8, bytes: usize) callconv(.c) i32 {
    status.clearMessage();
    return status.toStatus(tensorRead(handle, destination, bytes));
}

fn tensorRead(handle: Handle, destination: ?[*]u8, bytes: usize) Error!void {
    const t = try tensor.table.acquire(handle);
    defer t.release();
    const needed = t.numel() * t.dtype.size();
    if (bytes != needed) {
        return status.fail(error.ShapeMismatch, "read: destination has {d} bytes, the tensor has {d}", .{ bytes, needed });
    }
    if (needed == 0) return;
    const pointer = destination orelse return status.fail(error.InvalidArgument, "read: destination is null", .{});
    tensor.copyToContiguous(t, pointer[0..bytes]);
}

/// int32_t spindle_tensor_dispose(uint64_t handle)
pub fn spindle_tensor_dispose(handle: Handle) callconv(.c) i32 {
    status.clearMessage();
    return status.toStatus(tensor.table.dispose(handle));
}

/// uint64_t spindle_system_allocations(void): allocations that went to the system allocator
///     so far (tests check that steady-state inference does not allocate per op).
pub fn spindle_system_allocations() callconv(.c) u64 {
    return @import("storage_cache.zig").system_allocations.load(.monotonic);
}

/// void spindle_memory_stats(uint64_t *out /* [3] */): out = { bytes in the block cache, idle
///     trims so far, system allocations so far } (tests and the memory soak).
pub fn spindle_memory_stats(out: ?*[3]u64) callconv(.c) void {
    const cache = @import("storage_cache.zig");
    const destination = out orelse return;
    destination.* = .{ cache.cachedBytes(), cache.idle_trims.load(.monotonic), cache.system_allocations.load(.monotonic) };
}

/// size_t spindle_tensor_live_count(void): live tensor handles (leak checks in tests).
pub fn spindle_tensor_live_count() callconv(.c) usize {
    return tensor.table.liveCount();
}

/// Acquires the tensors behind `handles` into `buffer`; on error releases what it took.
fn acquireInputs(handles: ?[*]const Handle, count: usize, buffer: *[ops.max_inputs]*tensor.Tensor) Error![]*tensor.Tensor {
    if (count > ops.max_inputs) {
        return status.fail(error.InvalidArgument, "at most {d} inputs, got {d}", .{ ops.max_inputs, count });
    }
    if (count == 0) return buffer[0..0];
    const raw = (handles orelse return status.fail(error.InvalidArgument, "input handles pointer is null", .{}))[0..count];
    for (raw, 0..) |handle, i| {
        buffer[i] = tensor.table.acquire(handle) catch |err| {
            for (buffer[0..i]) |t| t.release();
            return err;
        };
    }
    return buffer[0..count];
}

fn readParams(params: ?[*]const f64, count: usize) Error![]const f64 {
    if (count > ops.max_flat_values) {
        return status.fail(error.InvalidArgument, "at most {d} parameter values, got {d}", .{ ops.max_flat_values, count });
    }
    if (count == 0) return &.{};
    const pointer = params orelse return status.fail(error.InvalidArgument, "parameter pointer is null", .{});
    return pointer[0..count];
}

/// size_t spindle_describe_json(uint8_t *buffer, size_t capacity): writes the ABI facts
///     TypeScript derives its constants from (abi.zig) as JSON; returns the full length
///     (call again with a larger buffer when it exceeds capacity).
pub fn spindle_describe_json(buffer: ?[*]u8, capacity: usize) callconv(.c) usize {
    const destination: []u8 = if (buffer) |pointer| pointer[0..capacity] else &.{};
    return abi.writeJson(destination);
}

/// int32_t spindle_op_run(uint32_t op, const uint64_t *inputs, size_t input_count,
///     const double *params, size_t param_count, uint64_t *out)
pub fn spindle_op_run(op_code: u32, inputs: ?[*]const Handle, input_count: usize, params: ?[*]const f64, param_count: usize, out: ?*Handle) callconv(.c) i32 {
    status.clearMessage();
    return status.toStatus(opRun(op_code, inputs, input_count, params, param_count, out));
}

fn opRun(op_code: u32, inputs: ?[*]const Handle, input_count: usize, params: ?[*]const f64, param_count: usize, out: ?*Handle) Error!void {
    const op = try ops.OpCode.fromInt(op_code);
    const parameters = try readParams(params, param_count);
    var buffer: [ops.max_inputs]*tensor.Tensor = undefined;
    const tensors = try acquireInputs(inputs, input_count, &buffer);
    defer for (tensors) |t| t.release();
    try publish(try ops.run(op, tensors, parameters), out);
}

/// int32_t spindle_fork_op(uint32_t op, const uint64_t *inputs, size_t input_count,
///     const double *params, size_t param_count, uint64_t *out_future)
pub fn spindle_fork_op(op_code: u32, inputs: ?[*]const Handle, input_count: usize, params: ?[*]const f64, param_count: usize, out: ?*Handle) callconv(.c) i32 {
    status.clearMessage();
    return status.toStatus(forkOp(op_code, inputs, input_count, params, param_count, out));
}

fn forkOp(op_code: u32, inputs: ?[*]const Handle, input_count: usize, params: ?[*]const f64, param_count: usize, out: ?*Handle) Error!void {
    const op = try ops.OpCode.fromInt(op_code);
    const parameters = try readParams(params, param_count);
    const destination = out orelse return status.fail(error.InvalidArgument, "output future pointer is null", .{});
    var buffer: [ops.max_inputs]*tensor.Tensor = undefined;
    const tensors = try acquireInputs(inputs, input_count, &buffer);
    defer for (tensors) |t| t.release();
    // Parameters are decoded here, on the calling thread, so a bad one fails the fork call.
    const options = try ops.decodeFlat(op, tensors.len, parameters);
    const future = try OpTask.fork(try Pool.global(), options, tensors);
    errdefer future.release();
    destination.* = try Future.table.register(future);
}

/// A forked op: its decoded options and its inputs (one reference each, held until it has
/// run), copied at fork time so the caller's buffers may go at once.
const OpTask = struct {
    options: ops.Options,
    input_count: u8,
    inputs: [ops.max_inputs]*tensor.Tensor = undefined,

    comptime {
        std.debug.assert(@sizeOf(OpTask) <= Future.payload_capacity);
    }

    /// Forks the op `options` names (decoded and checked by the caller) on `inputs` onto
    /// `pool`. Takes a new reference to every input so the tensors stay alive until the task
    /// finishes, whatever the caller does with its own.
    fn fork(pool: *Pool, options: ops.Options, inputs: []const *tensor.Tensor) Error!*Future {
        const name = @tagName(std.meta.activeTag(options));
        if (inputs.len > ops.max_inputs) {
            return status.fail(error.InvalidArgument, "fork {s}: at most {d} inputs, got {d}", .{ name, ops.max_inputs, inputs.len });
        }
        var task: OpTask = .{ .options = options, .input_count = @intCast(inputs.len) };
        @memcpy(task.inputs[0..inputs.len], inputs);
        for (inputs) |input| input.retain();
        return Future.fork(pool, name, OpTask, task) catch |err| {
            for (inputs) |input| input.release();
            return err;
        };
    }

    pub fn run(task: *OpTask) Error!*tensor.Tensor {
        return ops.execute(task.options, task.inputs[0..task.input_count]);
    }

    pub fn deinit(task: *OpTask) void {
        for (task.inputs[0..task.input_count]) |input| input.release();
    }
};

/// int32_t spindle_future_wait(uint64_t future, uint64_t *out): blocks until done (running
///     the task on the calling thread when no worker has started it yet), then publishes
///     the value as a new tensor handle or returns the task's error (and marks it observed).
///     Returns at once after the future's completion token was taken.
pub fn spindle_future_wait(handle: Handle, out: ?*Handle) callconv(.c) i32 {
    status.clearMessage();
    return status.toStatus(futureWait(handle, out));
}

fn futureWait(handle: Handle, out: ?*Handle) Error!void {
    const future = try Future.table.acquire(handle);
    defer future.release();
    try publish(try future.wait(), out);
}

/// int32_t spindle_future_done(uint64_t future): 1 when complete, 0 when pending, or a
///     negative status when the handle is invalid.
pub fn spindle_future_done(handle: Handle) callconv(.c) i32 {
    status.clearMessage();
    const future = Future.table.acquire(handle) catch |err| return -@intFromEnum(status.fromError(err));
    defer future.release();
    return @intFromBool(future.isDone());
}

/// int32_t spindle_future_dispose(uint64_t future)
pub fn spindle_future_dispose(handle: Handle) callconv(.c) i32 {
    status.clearMessage();
    return status.toStatus(Future.table.dispose(handle));
}

/// size_t spindle_future_live_count(void): futures alive in the process, pending or held
///     (leak checks in tests).
pub fn spindle_future_live_count() callconv(.c) usize {
    return Future.liveCount();
}

/// int32_t spindle_channel_open(uint32_t *out): opens a completion channel for one JavaScript
///     isolate: the tokens of the futures it watches and of the calls it submits come out
///     of its channel only (pool/channels.zig). Channels are never reused; a process opens
///     at most 65,536.
pub fn spindle_channel_open(out: ?*u32) callconv(.c) i32 {
    status.clearMessage();
    const destination = out orelse return status.toStatus(status.fail(error.InvalidArgument, "channel pointer is null", .{}));
    destination.* = channels.open() catch |err| return status.toStatus(err);
    return 0;
}

/// int32_t spindle_future_watch(uint64_t future, uint32_t channel, uint64_t token): registers
///     `token` for the completion queue of `channel`. It is queued once, when the future
///     completes (at once when it already has). At most one token per future; the future
///     stays alive until its token is taken, even after spindle_future_dispose.
pub fn spindle_future_watch(handle: Handle, channel: u32, token: u64) callconv(.c) i32 {
    status.clearMessage();
    return status.toStatus(futureWatch(handle, channel, token));
}

fn futureWatch(handle: Handle, channel: u32, token: u64) Error!void {
    const future = try Future.table.acquire(handle);
    defer future.release();
    try future.watch(channel, token);
}

/// Largest completion wait: a bound, so that a forgotten waiter returns within a minute.
const completions_timeout_ms_max: u32 = 60_000;

/// size_t spindle_completions_wait(uint32_t channel, uint64_t *tokens, size_t capacity,
///     uint32_t timeout_ms): blocks until at least one token is queued on `channel`,
///     `timeout_ms` passes (at most 60000), or spindle_completions_interrupt is called;
///     then moves up to `capacity` tokens, in completion order, into `tokens` and returns
///     their count (0 on timeout, or for a channel never opened). Thread-safe: each token
///     goes to exactly one caller. Meant for a Deno `nonblocking` call.
pub fn spindle_completions_wait(channel: u32, tokens: ?[*]u64, capacity: usize, timeout_ms: u32) callconv(.c) usize {
    const destination = tokens orelse return 0;
    const queue = Future.completion_queues.get(channel) catch return 0;
    const timeout_ns = @as(u64, @min(timeout_ms, completions_timeout_ms_max)) * std.time.ns_per_ms;
    return queue.wait(destination[0..capacity], timeout_ns);
}

/// size_t spindle_completions_poll(uint32_t channel, uint64_t *tokens, size_t capacity): like
///     spindle_completions_wait without blocking.
pub fn spindle_completions_poll(channel: u32, tokens: ?[*]u64, capacity: usize) callconv(.c) usize {
    const destination = tokens orelse return 0;
    const queue = Future.completion_queues.get(channel) catch return 0;
    return queue.poll(destination[0..capacity]);
}

/// void spindle_completions_interrupt(uint32_t channel): makes the pending (or next)
///     spindle_completions_wait on `channel` return at once, e.g. to shut down.
pub fn spindle_completions_interrupt(channel: u32) callconv(.c) void {
    const queue = Future.completion_queues.get(channel) catch return;
    queue.interrupt();
}

/// size_t spindle_unobserved_errors(uint8_t *buffer, size_t capacity): moves the messages of
///     failed futures dropped without being waited on into `buffer`, one per line, and
///     returns the bytes written (0: none left). The first call switches the reports from
///     stderr to this list (up to 64 queued; beyond that they go to stderr).
pub fn spindle_unobserved_errors(buffer: ?[*]u8, capacity: usize) callconv(.c) usize {
    const destination: []u8 = if (buffer) |pointer| pointer[0..capacity] else &.{};
    return Future.unobserved.drain(destination);
}

/// int32_t spindle_program_load(const uint8_t *bytes, size_t length, uint64_t memory_budget,
///     uint32_t precision, uint64_t *out): parses and validates a model image (see
///     interpreter/format.zig), copying its tensors. `precision` 1 (bf16) packs the weights of
///     its convolutions and matrix products for the bf16 kernel (ops/bf16.zig), counted
///     against the budget like the tensors; without a bf16 kernel it loads f32 (0). `memory_budget` (0: no cap) caps the tensor bytes the load holds
///     (its tensors and the check on inputs of the declared shapes) and, from then on, each
///     run of the program (spindle_program_run, spindle_call_run): past it, a load or run
///     fails with too_large, naming the tensor and the bytes, before allocating them.
pub fn spindle_program_load(bytes: ?[*]const u8, length: usize, memory_budget: u64, precision: u32, out: ?*Handle) callconv(.c) i32 {
    status.clearMessage();
    return status.toStatus(programLoad(bytes, length, memory_budget, precision, out));
}

fn programLoad(bytes: ?[*]const u8, length: usize, memory_budget: u64, precision_code: u32, out: ?*Handle) Error!void {
    const destination = out orelse return status.fail(error.InvalidArgument, "output handle pointer is null", .{});
    const image: []const u8 = if (length == 0) &.{} else (bytes orelse return status.fail(error.InvalidArgument, "model bytes pointer is null", .{}))[0..length];
    const limit: ?usize = if (memory_budget == 0) null else @intCast(memory_budget);
    var budget: tensor.Budget = undefined;
    tensor.enterBudget(&budget, limit);
    defer tensor.leaveBudget(&budget);
    const precision = std.meta.intToEnum(@import("ops/bf16.zig").Precision, precision_code) catch
        return status.fail(error.InvalidArgument, "precision {d} is neither 0 (f32) nor 1 (bf16)", .{precision_code});
    const loaded = try program.loadWithPrecision(image, precision);
    errdefer loaded.release();
    // Set before the program is shared (registered): runs only read it.
    loaded.memory_budget = limit;
    try execute.checkShapes(loaded);
    destination.* = try program.table.register(loaded);
}

/// int32_t spindle_program_info(uint64_t program, uint32_t graph, uint64_t *out /* [5] */):
///     out = { graph count, inputs, outputs, nodes, planned arena bytes (0: unplanned) }.
pub fn spindle_program_info(handle: Handle, graph: u32, out: ?*[5]u64) callconv(.c) i32 {
    status.clearMessage();
    return status.toStatus(programInfo(handle, graph, out));
}

fn programInfo(handle: Handle, graph: u32, out: ?*[5]u64) Error!void {
    const destination = out orelse return status.fail(error.InvalidArgument, "info pointer is null", .{});
    const loaded = try program.table.acquire(handle);
    defer loaded.release();
    if (graph >= loaded.graphs.len) return status.fail(error.IndexOutOfRange, "program has {d} graphs, asked for graph {d}", .{ loaded.graphs.len, graph });
    const g = loaded.graphs[graph];
    const arena_bytes: u64 = if (loaded.plans[graph]) |p| p.arena_bytes else 0;
    destination.* = .{ loaded.graphs.len, g.inputs.len, g.outputs.len, g.nodes.len, arena_bytes };
}

/// int32_t spindle_program_run(uint64_t program, uint32_t graph, const uint64_t *inputs,
///     size_t input_count, uint64_t *outputs, size_t output_count, uint8_t *message,
///     size_t message_capacity): runs a graph on the calling thread and publishes one tensor
///     handle per output. On error the message is also copied into `message`, as
///     spindle_call_run does. Looks its handles up when it runs: not for a nonblocking call
///     (pin one with spindle_call_pin and run that instead).
pub fn spindle_program_run(
    handle: Handle,
    graph: u32,
    inputs: ?[*]const Handle,
    input_count: usize,
    outputs: ?[*]Handle,
    output_count: usize,
    message: ?[*]u8,
    message_capacity: usize,
) callconv(.c) i32 {
    status.clearMessage();
    return finishRun(programRun(handle, graph, inputs, input_count, outputs, output_count, null), message, message_capacity);
}

/// The status of a finished run, its message also copied into `message` on error.
fn finishRun(result: Error!void, message: ?[*]u8, message_capacity: usize) i32 {
    const buffer: []u8 = if (message) |m| m[0..message_capacity] else &.{};
    return call.finish(result, buffer);
}

const max_program_outputs = call.max_outputs;

/// Runs a graph on the calling thread, timing its ops into `profile` when there is one.
fn programRun(handle: Handle, graph: u32, inputs: ?[*]const Handle, input_count: usize, outputs: ?[*]Handle, output_count: usize, profile: ?*execute.Profile) Error!void {
    const loaded = try program.table.acquire(handle);
    defer loaded.release();
    if (graph >= loaded.graphs.len) return status.fail(error.IndexOutOfRange, "program has {d} graphs, asked for graph {d}", .{ loaded.graphs.len, graph });
    var buffer: [ops.max_inputs]*tensor.Tensor = undefined;
    const tensors = try acquireInputs(inputs, input_count, &buffer);
    defer for (tensors) |t| t.release();
    const destination = try outputSlots(outputs, output_count);
    var results: [max_program_outputs]*tensor.Tensor = undefined;
    if (profile) |p| {
        try execute.runProfiled(loaded, graph, tensors, results[0..output_count], p);
    } else {
        try execute.run(loaded, graph, tensors, results[0..output_count]);
    }
    try publishOutputs(results[0..output_count], destination);
}

fn outputSlots(outputs: ?[*]Handle, output_count: usize) Error![]Handle {
    if (output_count > max_program_outputs) return status.fail(error.InvalidArgument, "at most {d} outputs", .{max_program_outputs});
    return (outputs orelse return status.fail(error.InvalidArgument, "outputs pointer is null", .{}))[0..output_count];
}

const publishOutputs = call.publishOutputs;

/// int32_t spindle_program_profile(uint64_t program, uint32_t graph, const uint64_t *inputs,
///     size_t input_count, uint64_t *outputs, size_t output_count, uint64_t *records,
///     size_t record_capacity, uint64_t *record_count, uint8_t *message,
///     size_t message_capacity): runs a graph on the calling thread as spindle_program_run
///     does, forks inline, timing every op node. Each record is 3 + 3 × (1 + 8) u64s:
///     graph, node, nanoseconds, then the output's and the first two inputs' shapes (rank,
///     8 dims). `*record_count` is the number of op nodes run, also past `record_capacity`
///     (then only the first record_capacity are written: retry with a larger buffer).
pub fn spindle_program_profile(
    handle: Handle,
    graph: u32,
    inputs: ?[*]const Handle,
    input_count: usize,
    outputs: ?[*]Handle,
    output_count: usize,
    records: ?[*]execute.Profile.Record,
    record_capacity: usize,
    record_count: ?*u64,
    message: ?[*]u8,
    message_capacity: usize,
) callconv(.c) i32 {
    status.clearMessage();
    const result = programProfile(handle, graph, inputs, input_count, outputs, output_count, records, record_capacity, record_count);
    return finishRun(result, message, message_capacity);
}

fn programProfile(
    handle: Handle,
    graph: u32,
    inputs: ?[*]const Handle,
    input_count: usize,
    outputs: ?[*]Handle,
    output_count: usize,
    records: ?[*]execute.Profile.Record,
    record_capacity: usize,
    record_count: ?*u64,
) Error!void {
    const count_out = record_count orelse return status.fail(error.InvalidArgument, "record count pointer is null", .{});
    const buffer: []execute.Profile.Record = if (record_capacity == 0) &.{} else (records orelse return status.fail(error.InvalidArgument, "records pointer is null", .{}))[0..record_capacity];
    var profile: execute.Profile = .{ .records = buffer };
    try programRun(handle, graph, inputs, input_count, outputs, output_count, &profile);
    count_out.* = profile.count;
}

/// int32_t spindle_program_dispose(uint64_t program)
pub fn spindle_program_dispose(handle: Handle) callconv(.c) i32 {
    status.clearMessage();
    return status.toStatus(program.table.dispose(handle));
}

/// int32_t spindle_call_pin(uint64_t program, uint32_t graph, const uint64_t *inputs,
///     size_t input_count, uint64_t *out_call): acquires the program and the inputs on the
///     calling thread into a call of graph `graph`, which holds them until it is run
///     (spindle_call_run) or disposed, whatever happens to their handles meanwhile.
pub fn spindle_call_pin(handle: Handle, graph: u32, inputs: ?[*]const Handle, input_count: usize, out: ?*Handle) callconv(.c) i32 {
    status.clearMessage();
    return status.toStatus(callPin(handle, graph, inputs, input_count, out));
}

fn callPin(handle: Handle, graph: u32, inputs: ?[*]const Handle, input_count: usize, out: ?*Handle) Error!void {
    const destination = out orelse return status.fail(error.InvalidArgument, "output call pointer is null", .{});
    const loaded = try program.table.acquire(handle);
    var buffer: [ops.max_inputs]*tensor.Tensor = undefined;
    const tensors = acquireInputs(inputs, input_count, &buffer) catch |err| {
        loaded.release();
        return err;
    };
    // The call takes over these references, also when it fails.
    destination.* = try call.table.pin(loaded, graph, tensors);
}

/// int32_t spindle_call_run(uint64_t call, uint64_t *outputs, size_t output_count,
///     uint8_t *message, size_t message_capacity): runs a pinned call on the calling thread —
///     an inference thread when called nonblocking from Deno — publishes one tensor handle
///     per output, and releases what the call pinned, also when the run fails. A call runs
///     once: running it again is invalid_handle. On error the message is also copied into
///     `message`, since a nonblocking call runs on a pool thread whose thread-local message
///     the caller cannot read.
pub fn spindle_call_run(token: Handle, outputs: ?[*]Handle, output_count: usize, message: ?[*]u8, message_capacity: usize) callconv(.c) i32 {
    status.clearMessage();
    return finishRun(callRun(token, outputs, output_count), message, message_capacity);
}

fn callRun(token: Handle, outputs: ?[*]Handle, output_count: usize) Error!void {
    const pinned = try call.table.take(token);
    defer pinned.release();
    const destination = try outputSlots(outputs, output_count);
    var results: [max_program_outputs]*tensor.Tensor = undefined;
    try pinned.run(results[0..output_count]);
    try publishOutputs(results[0..output_count], destination);
}

/// int32_t spindle_call_dispose(uint64_t call): releases a pinned call without running it.
pub fn spindle_call_dispose(token: Handle) callconv(.c) i32 {
    status.clearMessage();
    return status.toStatus(call.table.dispose(token));
}

/// size_t spindle_call_live_count(void): calls pinned and not yet run or disposed (leak
///     checks in tests).
pub fn spindle_call_live_count() callconv(.c) usize {
    return call.table.liveCount();
}

/// int32_t spindle_call_submit(uint64_t call, uint64_t *outputs, size_t output_count,
///     uint8_t *message, size_t message_capacity, int64_t *result /* [2] */,
///     uint32_t channel, uint64_t watch): queues a pinned call on the inference pool (at
///     most spindle_get_num_inference_threads runs at once; the rest wait in order). When
///     it has run, its output handles are in `outputs`, its status and run time in
///     nanoseconds in `result` (and its message in `message` on error), and `watch` comes
///     out of spindle_inference_wait on `channel` (spindle_inference_channel). The buffers
///     must stay valid until then. The call is taken whatever happens: on failure it is
///     released here.
pub fn spindle_call_submit(
    token: Handle,
    outputs: ?[*]Handle,
    output_count: usize,
    message: ?[*]u8,
    message_capacity: usize,
    result_out: ?*[2]i64,
    channel: u32,
    watch: u64,
) callconv(.c) i32 {
    status.clearMessage();
    return status.toStatus(callSubmit(token, outputs, output_count, message, message_capacity, result_out, channel, watch));
}

fn callSubmit(token: Handle, outputs: ?[*]Handle, output_count: usize, message: ?[*]u8, message_capacity: usize, result_out: ?*[2]i64, channel: u32, watch: u64) Error!void {
    const failed = result_out == null or (message == null and message_capacity > 0) or
        (outputs == null and output_count > 0) or output_count > max_program_outputs;
    if (failed) {
        call.table.dispose(token) catch {};
        if (output_count > max_program_outputs) return status.fail(error.InvalidArgument, "at most {d} outputs", .{max_program_outputs});
        return status.fail(error.InvalidArgument, "spindle_call_submit: a null buffer pointer", .{});
    }
    const destination: []Handle = if (output_count == 0) &.{} else outputs.?[0..output_count];
    const buffer: []u8 = if (message_capacity == 0) &.{} else message.?[0..message_capacity];
    return call.submit(token, destination, buffer, result_out.?, channel, watch);
}

/// size_t spindle_inference_wait(uint32_t channel, uint64_t *tokens, size_t capacity,
///     uint32_t timeout_ms): blocks (at most timeout_ms, capped at 60 s) until calls
///     submitted to `channel` have run, then moves up to `capacity` of their watch tokens
///     into `tokens` and returns how many (0 also for a channel never opened). Called
///     nonblocking: one waiter per isolate serves every pending call. It may return 0
///     early, just before a lone running call's predicted end, so that the JavaScript
///     thread it wakes is awake when the call finishes: the caller then calls
///     spindle_inference_spin.
pub fn spindle_inference_wait(channel: u32, tokens: ?[*]u64, capacity: usize, timeout_ms: u32) callconv(.c) usize {
    const destination = tokens orelse return 0;
    const timeout_ns = @as(u64, @min(timeout_ms, completions_timeout_ms_max)) * std.time.ns_per_ms;
    return call.inference_pool.waitOrWake(channel, destination[0..capacity], timeout_ns) catch 0;
}

/// size_t spindle_inference_spin(uint32_t channel, uint64_t *tokens, size_t capacity): on
///     the JavaScript thread after spindle_inference_wait returned 0: when a lone running
///     call is predicted to finish within 200 µs and a CPU is spare, spins until it does
///     (at most that long), then moves available tokens into `tokens` without blocking
///     and returns how many.
pub fn spindle_inference_spin(channel: u32, tokens: ?[*]u64, capacity: usize) callconv(.c) usize {
    const destination = tokens orelse return 0;
    return call.inference_pool.spinForCompletion(channel, destination[0..capacity]) catch 0;
}

/// void spindle_inference_interrupt(uint32_t channel): makes the current (or next)
///     spindle_inference_wait on `channel` return at once.
pub fn spindle_inference_interrupt(channel: u32) callconv(.c) void {
    call.inference_pool.interrupt(channel) catch {};
}

/// int32_t spindle_get_num_inference_threads(void): forward passes the inference pool runs
///     at once: set, else physical cores / intra-op threads (at least 1).
pub fn spindle_get_num_inference_threads() callconv(.c) i32 {
    return @intCast(settings.getNumInferenceThreads());
}

/// int32_t spindle_set_num_inference_threads(int64_t count): any time; a raised count starts
///     waiting calls at once, a lowered one lets running calls finish.
pub fn spindle_set_num_inference_threads(count: i64) callconv(.c) i32 {
    status.clearMessage();
    const result = settings.setNumInferenceThreads(count);
    if (result) |_| call.inference_pool.limitChanged() else |_| {}
    return status.toStatus(result);
}

/// void spindle_inference_load(uint64_t *out /* [3] */): inference threads alive, runs in
///     progress, runs waiting (diagnostics and tests).
pub fn spindle_inference_load(out: ?*[3]u64) callconv(.c) void {
    const destination = out orelse return;
    const load = call.inference_pool.load();
    destination.* = .{ load.workers, load.running, load.queued };
}

/// void spindle_set_allocation_budget(uint64_t bytes): caps the tensor bytes the calling
///     thread may allocate from now on (0: no cap); ONNX import runs its ops under one. A
///     call that would pass it fails with too_large, naming the tensor and the bytes. Loads
///     and runs of a program install their own (spindle_program_load's memory_budget).
pub fn spindle_set_allocation_budget(bytes: u64) callconv(.c) void {
    tensor.setAllocationBudget(if (bytes == 0) null else @intCast(bytes));
}

test {
    // Reference every file so `zig build test` runs the tests at the bottom of each.
    std.testing.refAllDecls(@This());
    _ = status;
    _ = settings;
    _ = topology;
    _ = tensor;
    _ = @import("handles.zig");
    _ = @import("storage_cache.zig");
    _ = ops;
    _ = Pool;
    _ = Future;
    _ = intra_op;
    _ = @import("kernels/gemm.zig");
    _ = @import("kernels/gemm_native.zig");
    _ = @import("kernels/gemm_bf16.zig");
    _ = @import("kernels/gemm_amx.zig");
    _ = @import("kernels/conv_amx.zig");
    _ = @import("kernels/conv_bf16.zig");
    _ = openblas;
    _ = info;
    _ = @import("cpu_level.zig");
    _ = @import("env.zig");
    _ = @import("interpreter/format.zig");
    _ = @import("interpreter/program.zig");
    _ = @import("interpreter/execute.zig");
    _ = @import("interpreter/plan.zig");
    _ = call;
    _ = @import("pool/inference.zig");
    _ = @import("pool/placement.zig");
    _ = channels;
}

test "exported tensor round trip and bad arguments" {
    const shape = [_]i64{ 2, 2 };
    const values = [_]f32{ 1, 2, 3, 4 };
    var handle: Handle = 0;
    try std.testing.expectEqual(@as(i32, 0), spindle_tensor_create(0, 2, &shape, std.mem.sliceAsBytes(&values).ptr, 16, &handle));
    var out: [4]f32 = undefined;
    try std.testing.expectEqual(@as(i32, 0), spindle_tensor_read(handle, std.mem.sliceAsBytes(&out).ptr, 16));
    try std.testing.expectEqualSlices(f32, &values, &out);
    try std.testing.expectEqual(@intFromEnum(status.Status.shape_mismatch), spindle_tensor_read(handle, std.mem.sliceAsBytes(&out).ptr, 12));
    try std.testing.expectEqual(@as(i32, 0), spindle_tensor_dispose(handle));
    try std.testing.expectEqual(@intFromEnum(status.Status.invalid_handle), spindle_tensor_dispose(handle));
    const negative = [_]i64{ 2, -1 };
    try std.testing.expectEqual(@intFromEnum(status.Status.invalid_argument), spindle_tensor_create(0, 2, &negative, null, 0, &handle));
    try std.testing.expectEqual(@intFromEnum(status.Status.invalid_argument), spindle_tensor_create(9, 2, &shape, null, 0, &handle));
    try std.testing.expectEqual(@intFromEnum(status.Status.invalid_argument), spindle_op_run(999, null, 0, null, 0, &handle));
}

test "exported borrow reads the caller's bytes, refuses misaligned or short ones, and detach copies for views" {
    var words: [9]u64 align(tensor.alignment) = .{ 1, 2, 3, 4, 5, 6, 7, 8, 9 };
    const bytes = std.mem.sliceAsBytes(&words);
    const shape = [_]i64{ 2, 4 };
    var handle: Handle = 0;
    try std.testing.expectEqual(@as(i32, 0), spindle_tensor_borrow(1, 2, &shape, bytes.ptr, 64, &handle));
    var described: [4 + tensor.max_dims]i64 = undefined;
    try std.testing.expectEqual(@as(i32, 0), spindle_tensor_info(handle, &described));
    try std.testing.expectEqual(@as(i64, @intCast(@intFromPtr(bytes.ptr))), described[2]);
    // Detach with no other holder leaves the tensor on the caller's bytes.
    try std.testing.expectEqual(@as(i32, 0), spindle_tensor_detach(handle));
    try std.testing.expectEqual(@as(i32, 0), spindle_tensor_info(handle, &described));
    try std.testing.expectEqual(@as(i64, @intCast(@intFromPtr(bytes.ptr))), described[2]);
    // A view (the transpose) still holds the storage when the borrow ends: it keeps its values
    // once the caller reuses the bytes.
    const t = try tensor.table.acquire(handle);
    const view = try tensor.createView(t, &.{ 4, 2 }, &.{ 1, 4 }, 0);
    t.release();
    defer view.release();
    try std.testing.expectEqual(@as(i32, 0), spindle_tensor_detach(handle));
    try std.testing.expectEqual(@as(i32, 0), spindle_tensor_dispose(handle));
    @memset(bytes, 0);
    var values: [8]u64 = undefined;
    tensor.copyToContiguous(view, std.mem.sliceAsBytes(&values));
    try std.testing.expectEqualSlices(u64, &.{ 1, 5, 2, 6, 3, 7, 4, 8 }, &values);
    try std.testing.expectEqual(@intFromEnum(status.Status.invalid_handle), spindle_tensor_detach(handle));
    // Misaligned, short, empty and null data are refused with a status, never read.
    try std.testing.expectEqual(@intFromEnum(status.Status.invalid_argument), spindle_tensor_borrow(1, 2, &shape, bytes.ptr + 8, 64, &handle));
    try std.testing.expectEqual(@intFromEnum(status.Status.shape_mismatch), spindle_tensor_borrow(1, 2, &shape, bytes.ptr, 56, &handle));
    const empty = [_]i64{ 0, 4 };
    try std.testing.expectEqual(@intFromEnum(status.Status.invalid_argument), spindle_tensor_borrow(1, 2, &empty, bytes.ptr, 0, &handle));
    try std.testing.expectEqual(@intFromEnum(status.Status.invalid_argument), spindle_tensor_borrow(1, 2, &shape, null, 64, &handle));
}

test "exported fork, watch, completion queue and wait" {
    var tokens: [4]u64 = undefined;
    var channel: u32 = 0;
    try std.testing.expectEqual(@as(i32, 0), spindle_channel_open(&channel));
    try std.testing.expectEqual(@as(usize, 0), spindle_completions_poll(channel, &tokens, tokens.len));
    const baseline_futures = spindle_future_live_count();
    const baseline_tensors = spindle_tensor_live_count();
    const shape = [_]i64{ 2, 2 };
    var a: Handle = 0;
    try std.testing.expectEqual(@as(i32, 0), spindle_tensor_full(0, 2, &shape, 1.5, &a));
    const inputs = [_]Handle{ a, a };
    var future: Handle = 0;
    try std.testing.expectEqual(@as(i32, 0), spindle_fork_op(@intFromEnum(ops.OpCode.add), &inputs, 2, null, 0, &future));
    try std.testing.expectEqual(@intFromEnum(status.Status.invalid_argument), spindle_future_watch(future, channel + 1000, 42));
    try std.testing.expectEqual(@as(i32, 0), spindle_future_watch(future, channel, 42));
    try std.testing.expectEqual(@intFromEnum(status.Status.invalid_argument), spindle_future_watch(future, channel, 43));
    // The input handle can go at once: the task holds its own references.
    try std.testing.expectEqual(@as(i32, 0), spindle_tensor_dispose(a));
    try std.testing.expectEqual(@as(usize, 1), spindle_completions_wait(channel, &tokens, tokens.len, 10_000));
    try std.testing.expectEqual(@as(u64, 42), tokens[0]);
    try std.testing.expectEqual(@as(i32, 1), spindle_future_done(future));
    var sum: Handle = 0;
    try std.testing.expectEqual(@as(i32, 0), spindle_future_wait(future, &sum));
    var values: [4]f32 = undefined;
    try std.testing.expectEqual(@as(i32, 0), spindle_tensor_read(sum, std.mem.sliceAsBytes(&values).ptr, 16));
    try std.testing.expectEqualSlices(f32, &.{ 3, 3, 3, 3 }, &values);
    try std.testing.expectEqual(@as(i32, 0), spindle_tensor_dispose(sum));
    try std.testing.expectEqual(@as(i32, 0), spindle_future_dispose(future));
    try std.testing.expectEqual(@intFromEnum(status.Status.invalid_handle), spindle_future_watch(future, channel, 1));
    try std.testing.expectEqual(baseline_tensors, spindle_tensor_live_count());
    // The worker drops the queue's reference just after completing: allow it a moment.
    var attempts: u32 = 0;
    while (spindle_future_live_count() != baseline_futures and attempts < 1000) : (attempts += 1) std.Thread.sleep(std.time.ns_per_ms);
    try std.testing.expectEqual(baseline_futures, spindle_future_live_count());
    try std.testing.expectEqual(@as(usize, 0), spindle_completions_wait(channel, &tokens, tokens.len, 1));
}

test "forked mm completes and wait returns its value" {
    const a = try tensor.createZeroed(.float32, &.{ 3, 4 });
    defer a.release();
    const b = try tensor.createZeroed(.float32, &.{ 4, 5 });
    defer b.release();
    const future = try OpTask.fork(try Pool.global(), .{ .mm = .{} }, &.{ a, b });
    defer future.release();
    const value = try future.wait();
    defer value.release();
    try std.testing.expectEqualSlices(usize, &.{ 3, 5 }, value.dims());
    try std.testing.expect(future.isDone());
    // The task released its references to the inputs before completing.
    // Monotonic: complete()'s Release and wait()'s Acquire ordered the task's release.
    try std.testing.expectEqual(@as(u32, 1), a.refs.load(.monotonic));
}

test "a failing forked op stores its error for wait" {
    const a = try tensor.createZeroed(.float32, &.{ 3, 4 });
    defer a.release();
    const future = try OpTask.fork(try Pool.global(), .{ .mm = .{} }, &.{ a, a });
    defer future.release();
    try std.testing.expectError(error.ShapeMismatch, future.wait());
    var buffer: [128]u8 = undefined;
    const count = status.lastMessage(&buffer);
    try std.testing.expect(std.mem.startsWith(u8, buffer[0..count], "mm: "));
}

/// A one-node model image, y = relu(x) for x of shape `shape` (JSON), for the pinned-call
/// tests.
fn reluImage(comptime shape: []const u8) ![]u8 {
    const json =
        \\{"format":"spindle-graph","version":2,"tensors":[],
        \\ "graphs":[{"inputs":[{"dtype":"float32","shape":
    ++ shape ++
        \\}],"values":2,
        \\   "nodes":[{"op":"relu","inputs":[0],"outputs":[1]}],"outputs":[1]}]}
    ;
    return @import("interpreter/format.zig").writeImage(std.testing.allocator, json, &.{});
}

/// Loads reluImage(shape) with a memory budget of `memory_budget` bytes (0: none) and
/// returns the program's handle (the image is copied: it is freed at once).
fn loadRelu(comptime shape: []const u8, memory_budget: u64) !Handle {
    const image = try reluImage(shape);
    defer std.testing.allocator.free(image);
    var loaded: Handle = 0;
    try std.testing.expectEqual(@as(i32, 0), spindle_program_load(image.ptr, image.len, memory_budget, 0, &loaded));
    return loaded;
}

test "exported pinned call: handles disposed after the pin, one run, everything released" {
    const baseline_tensors = spindle_tensor_live_count();
    const baseline_calls = spindle_call_live_count();
    const loaded = try loadRelu("[2]", 0);
    // Watch the program's references through one of our own.
    const watched = try program.table.acquire(loaded);
    defer watched.release();
    const shape = [_]i64{2};
    const values = [_]f32{ -1, 2 };
    var x: Handle = 0;
    try std.testing.expectEqual(@as(i32, 0), spindle_tensor_create(0, 1, &shape, std.mem.sliceAsBytes(&values).ptr, 8, &x));
    var token: Handle = 0;
    try std.testing.expectEqual(@as(i32, 0), spindle_call_pin(loaded, 0, &.{x}, 1, &token));
    // What `using` does at the end of a scope: the handles go before the run starts.
    try std.testing.expectEqual(@as(i32, 0), spindle_tensor_dispose(x));
    try std.testing.expectEqual(@as(i32, 0), spindle_program_dispose(loaded));
    var output: Handle = 0;
    var message: [status.message_capacity]u8 = undefined;
    try std.testing.expectEqual(@as(i32, 0), spindle_call_run(token, (&output)[0..1], 1, &message, message.len));
    var out: [2]f32 = undefined;
    try std.testing.expectEqual(@as(i32, 0), spindle_tensor_read(output, std.mem.sliceAsBytes(&out).ptr, 8));
    try std.testing.expectEqualSlices(f32, &.{ 0, 2 }, &out);
    try std.testing.expectEqual(@as(i32, 0), spindle_tensor_dispose(output));
    // Monotonic: the run released on this thread.
    try std.testing.expectEqual(@as(u32, 1), watched.refs.load(.monotonic));
    // A call runs once: the second run and a dispose after it are invalid_handle, with a
    // message in the caller's buffer.
    const invalid_handle = @intFromEnum(status.Status.invalid_handle);
    try std.testing.expectEqual(invalid_handle, spindle_call_run(token, (&output)[0..1], 1, &message, message.len));
    try std.testing.expect(std.mem.indexOf(u8, std.mem.sliceTo(&message, 0), "not pinned") != null);
    try std.testing.expectEqual(invalid_handle, spindle_call_dispose(token));
    // Disposed handles cannot be pinned.
    try std.testing.expectEqual(invalid_handle, spindle_call_pin(loaded, 0, &.{x}, 1, &token));
    try std.testing.expectEqual(baseline_calls, spindle_call_live_count());
    try std.testing.expectEqual(baseline_tensors, spindle_tensor_live_count());
}

test "exported pinned call: refused pins and failing runs release what they took" {
    const baseline_calls = spindle_call_live_count();
    const loaded = try loadRelu("[2]", 0);
    defer _ = spindle_program_dispose(loaded);
    const watched = try program.table.acquire(loaded);
    defer watched.release();
    const wrong_shape = [_]i64{3};
    var wrong: Handle = 0;
    try std.testing.expectEqual(@as(i32, 0), spindle_tensor_full(0, 1, &wrong_shape, 1, &wrong));
    defer _ = spindle_tensor_dispose(wrong);
    const tensor_watched = try tensor.table.acquire(wrong);
    defer tensor_watched.release();
    var token: Handle = 0;
    try std.testing.expectEqual(@intFromEnum(status.Status.index_out_of_range), spindle_call_pin(loaded, 3, &.{wrong}, 1, &token));
    try std.testing.expectEqual(@intFromEnum(status.Status.invalid_handle), spindle_call_pin(loaded, 0, &.{ wrong, 0xdead }, 2, &token));
    var output: Handle = 0;
    var message: [status.message_capacity]u8 = undefined;
    // The run fails on the input's shape; bad output arguments fail it too. Both release.
    try std.testing.expectEqual(@as(i32, 0), spindle_call_pin(loaded, 0, &.{wrong}, 1, &token));
    try std.testing.expectEqual(@intFromEnum(status.Status.shape_mismatch), spindle_call_run(token, (&output)[0..1], 1, &message, message.len));
    try std.testing.expect(std.mem.startsWith(u8, &message, "run: input 0"));
    try std.testing.expectEqual(@as(i32, 0), spindle_call_pin(loaded, 0, &.{wrong}, 1, &token));
    try std.testing.expectEqual(@intFromEnum(status.Status.invalid_argument), spindle_call_run(token, null, 1, &message, message.len));
    // A pinned call disposed without running releases too.
    try std.testing.expectEqual(@as(i32, 0), spindle_call_pin(loaded, 0, &.{wrong}, 1, &token));
    try std.testing.expectEqual(@as(i32, 0), spindle_call_dispose(token));
    try std.testing.expectEqual(baseline_calls, spindle_call_live_count());
    // Monotonic: every release happened on this thread. The table and `watched` remain.
    try std.testing.expectEqual(@as(u32, 2), watched.refs.load(.monotonic));
    try std.testing.expectEqual(@as(u32, 2), tensor_watched.refs.load(.monotonic));
}

test "exported runs, pinned or not, hold at most the memory budget given at load" {
    const baseline_tensors = spindle_tensor_live_count();
    const loaded = try loadRelu("[-1]", 1000);
    defer _ = spindle_program_dispose(loaded);
    var message: [status.message_capacity]u8 = undefined;
    var output: Handle = 0;
    // relu of 100 floats makes 400 bytes, of 300 floats 1200: past the budget.
    for ([_]i64{ 100, 300, 100 }) |length| {
        const shape = [_]i64{length};
        var x: Handle = 0;
        try std.testing.expectEqual(@as(i32, 0), spindle_tensor_full(0, 1, &shape, -1, &x));
        defer _ = spindle_tensor_dispose(x);
        for ([_]bool{ false, true }) |pinned| {
            var token: Handle = 0;
            if (pinned) try std.testing.expectEqual(@as(i32, 0), spindle_call_pin(loaded, 0, &.{x}, 1, &token));
            const code = if (pinned)
                spindle_call_run(token, (&output)[0..1], 1, &message, message.len)
            else
                spindle_program_run(loaded, 0, &.{x}, 1, (&output)[0..1], 1, &message, message.len);
            if (length == 100) {
                try std.testing.expectEqual(@as(i32, 0), code);
                try std.testing.expectEqual(@as(i32, 0), spindle_tensor_dispose(output));
                continue;
            }
            try std.testing.expectEqual(@intFromEnum(status.Status.too_large), code);
            try std.testing.expect(std.mem.indexOf(u8, std.mem.sliceTo(&message, 0), "a tensor of shape [300] (1200 bytes)") != null);
        }
    }
    try std.testing.expectEqual(baseline_tensors, spindle_tensor_live_count());
}
