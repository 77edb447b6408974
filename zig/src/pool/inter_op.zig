//! Inter-op parallelism: one process-wide pool for forked tasks, and the futures they
//! complete (threading spec §5).
//!
//! Interim implementation for the foundation: a std.Thread.Pool sized by the inter-op
//! settings, futures guarded by a mutex and condition variable, and a blocking wait. The
//! inter-op issue replaces it with intrusive tasks, help-while-waiting and a completion
//! queue for TypeScript.
const std = @import("std");
const status = @import("../status.zig");
const settings = @import("../settings.zig");
const tensor = @import("../tensor.zig");
const ops = @import("../ops.zig");

const Error = status.Error;
const Tensor = tensor.Tensor;
const allocator = std.heap.c_allocator;

pub const Future = struct {
    const State = enum { pending, succeeded, failed };

    mutex: std.Thread.Mutex = .{},
    done_condition: std.Thread.Condition = .{},
    state: State = .pending,
    value: ?*Tensor = null,
    failure: Error = error.Internal,
    message_buffer: [status.message_capacity]u8 = undefined,
    message_len: usize = 0,
    /// Holders: the handle table, the running task. Release/Acquire as in tensor.zig.
    refs: std.atomic.Value(u32) = .init(1),

    pub fn retain(future: *Future) void {
        const previous = future.refs.fetchAdd(1, .monotonic);
        std.debug.assert(previous > 0);
    }

    pub fn release(future: *Future) void {
        const previous = future.refs.fetchSub(1, .release);
        std.debug.assert(previous > 0);
        if (previous == 1) {
            _ = future.refs.load(.acquire);
            if (future.value) |value| value.release();
            allocator.destroy(future);
        }
    }

    fn complete(future: *Future, result: Error!*Tensor) void {
        future.mutex.lock();
        defer future.mutex.unlock();
        std.debug.assert(future.state == .pending);
        if (result) |value| {
            future.value = value;
            future.state = .succeeded;
        } else |err| {
            future.failure = err;
            future.message_len = status.lastMessage(&future.message_buffer);
            future.state = .failed;
        }
        future.done_condition.broadcast();
    }

    pub fn isDone(future: *Future) bool {
        future.mutex.lock();
        defer future.mutex.unlock();
        return future.state != .pending;
    }

    /// Blocks until the future completes; returns its value with a new reference, or its
    /// error with the task's message recorded on this thread.
    pub fn wait(future: *Future) Error!*Tensor {
        future.mutex.lock();
        defer future.mutex.unlock();
        while (future.state == .pending) future.done_condition.wait(&future.mutex);
        switch (future.state) {
            .pending => unreachable,
            .succeeded => {
                const value = future.value.?;
                value.retain();
                return value;
            },
            .failed => return status.fail(future.failure, "{s}", .{future.message_buffer[0..future.message_len]}),
        }
    }
};

pub var futures: @import("../handles.zig").Table(Future, "future") = .{};

const Task = struct {
    future: *Future,
    op: ops.OpCode,
    inputs: [ops.max_inputs]*Tensor,
    input_count: usize,
    params: [ops.max_params]f64,
    param_count: usize,

    fn run(task: *Task) void {
        defer allocator.destroy(task);
        defer for (task.inputs[0..task.input_count]) |input| input.release();
        defer task.future.release();
        status.clearMessage();
        const result = ops.run(task.op, task.inputs[0..task.input_count], task.params[0..task.param_count]);
        task.future.complete(result);
    }
};

var pool: std.Thread.Pool = undefined;
var pool_once = std.once(startPool);
var pool_started = false;

fn startPool() void {
    const threads = settings.startInterop();
    pool.init(.{ .allocator = allocator, .n_jobs = threads }) catch return;
    pool_started = true;
}

/// Forks `op` on the inter-op pool. Takes a new reference to every input so the tensors
/// stay alive until the task finishes, whatever the caller does with its handles.
pub fn forkOp(op: ops.OpCode, inputs: []const *Tensor, params: []const f64) Error!*Future {
    if (inputs.len > ops.max_inputs or params.len > ops.max_params) {
        return status.fail(error.InvalidArgument, "fork: too many inputs or parameters", .{});
    }
    pool_once.call();
    if (!pool_started) return status.fail(error.Internal, "fork: the inter-op pool could not start", .{});
    const future = allocator.create(Future) catch return error.OutOfMemory;
    future.* = .{};
    errdefer allocator.destroy(future);
    const task = allocator.create(Task) catch return error.OutOfMemory;
    task.* = .{
        .future = future,
        .op = op,
        .inputs = undefined,
        .input_count = inputs.len,
        .params = undefined,
        .param_count = params.len,
    };
    for (inputs, 0..) |input, i| {
        input.retain();
        task.inputs[i] = input;
    }
    @memcpy(task.params[0..params.len], params);
    future.retain(); // the task's reference
    pool.spawn(Task.run, .{task}) catch {
        for (inputs) |input| input.release();
        allocator.destroy(task);
        future.refs.store(1, .monotonic);
        return error.OutOfMemory;
    };
    return future;
}

test "forked mm completes and wait returns its value" {
    const a = try tensor.createZeroed(.float32, &.{ 3, 4 });
    defer a.release();
    const b = try tensor.createZeroed(.float32, &.{ 4, 5 });
    defer b.release();
    const future = try forkOp(.mm, &.{ a, b }, &.{});
    defer future.release();
    const value = try future.wait();
    defer value.release();
    try std.testing.expectEqualSlices(usize, &.{ 3, 5 }, value.dims());
    try std.testing.expect(future.isDone());
}

test "a failing forked op stores its error for wait" {
    const a = try tensor.createZeroed(.float32, &.{ 3, 4 });
    defer a.release();
    const future = try forkOp(.mm, &.{ a, a }, &.{});
    defer future.release();
    try std.testing.expectError(error.ShapeMismatch, future.wait());
    var buffer: [128]u8 = undefined;
    const count = status.lastMessage(&buffer);
    try std.testing.expect(std.mem.indexOf(u8, buffer[0..count], "mm:") != null);
}
