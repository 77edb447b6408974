//! Pinned calls: the program and the input tensors of one program run, acquired on the
//! calling (JavaScript) thread into a call record, so that the run itself — a nonblocking FFI
//! call that Deno starts later on one of its blocking-pool threads — looks up no handle.
//! Whatever TypeScript disposes after the call (the inputs, the module: what `using` does at
//! the end of a scope), the run sees the objects it was called with.
//!
//! A record is named by a token (slot index + generation, as in handles.zig) and is taken
//! once: `take` empties its slot under the mutex, so a second run, or a dispose after the
//! run, finds the token dead and fails with InvalidHandle; nothing is released twice.
//!
//! What allocates: slots, in chunks of `chunk_slots` whenever the number of pinned calls
//! exceeds its previous peak. Chunks live as long as the process, so in steady state pinning
//! a call allocates nothing.
const std = @import("std");
const status = @import("../status.zig");
const tensor = @import("../tensor.zig");
const ops = @import("../ops.zig");
const storage_cache = @import("../storage_cache.zig");
const program_module = @import("program.zig");
const execute = @import("execute.zig");
const settings = @import("../settings.zig");
const inference = @import("../pool/inference.zig");
const intra_op = @import("../pool/intra_op.zig");

const assert = std.debug.assert;
const Error = status.Error;
const Tensor = tensor.Tensor;
const Program = program_module.Program;

/// Names a pinned call across the FFI boundary, as a handle names a tensor.
pub const Token = u64;

/// Calls pinned and not yet run, at most (as many as live futures, pool/future.zig): each
/// is a pending nonblocking FFI call, and Deno runs at most a few hundred at once.
pub const max_pinned_calls: u32 = 1 << 16;
const chunk_slots: u32 = 64;

/// A program run's arguments, holding one reference to the program and to each input until
/// whoever took it from the table releases it.
pub const Call = struct {
    program: *Program,
    graph: u32,
    input_count: u8,
    inputs: [ops.max_inputs]*Tensor,

    pub fn inputSlice(call: *const Call) []const *Tensor {
        return call.inputs[0..call.input_count];
    }

    /// Runs the pinned graph on the calling thread and writes one new reference per graph
    /// output into `outputs` (execute.run).
    pub fn run(call: *const Call, outputs: []*Tensor) Error!void {
        return execute.run(call.program, call.graph, call.inputSlice(), outputs);
    }

    /// Drops the call's references: once per call, by whoever took it from the table.
    pub fn release(call: *const Call) void {
        for (call.inputSlice()) |input| input.release();
        call.program.release();
    }
};

/// The pinned calls of the process, by token.
pub var table: Table(chunk_slots, max_pinned_calls) = .{};

/// At most `capacity` pinned calls, their slots allocated `slots_per_chunk` at a time.
pub fn Table(comptime slots_per_chunk: u32, comptime capacity: u32) type {
    comptime {
        assert(slots_per_chunk > 0);
        assert(capacity % slots_per_chunk == 0);
        // Tokens keep the slot index + 1 in their low 32 bits.
        assert(capacity < std.math.maxInt(u32));
    }
    return struct {
        const Self = @This();
        const none = std.math.maxInt(u32);
        const Slot = struct {
            /// Advanced whenever the slot's call is taken, so the tokens of earlier calls in
            /// this slot stay dead. Never 0: token 0 is never live.
            generation: u32,
            /// The next slot of the free list, while this one is free.
            next_free: u32,
            call: ?Call,
        };
        const Chunk = [slots_per_chunk]Slot;

        /// Guards every field; critical sections are a few loads and stores (and the
        /// allocation of a chunk, once per `slots_per_chunk` new peak calls).
        mutex: std.Thread.Mutex = .{},
        chunks: [capacity / slots_per_chunk]?*Chunk = @splat(null),
        /// Slots handed out so far (the peak); the slots below it are initialised.
        used: u32 = 0,
        /// The most recently freed slot, or `none`.
        free: u32 = none,
        live: u32 = 0,

        /// Pins a run of graph `graph` of `program` on `inputs` and returns its token. Takes
        /// over one reference to `program` and to each input, also when it fails (it then
        /// releases them), so the caller acquires them and never releases them itself.
        pub fn pin(calls: *Self, program: *Program, graph: u32, inputs: []const *Tensor) Error!Token {
            errdefer {
                for (inputs) |input| input.release();
                program.release();
            }
            if (graph >= program.graphs.len) {
                return status.fail(error.IndexOutOfRange, "program has {d} graphs, asked for graph {d}", .{ program.graphs.len, graph });
            }
            if (inputs.len > ops.max_inputs) {
                return status.fail(error.InvalidArgument, "at most {d} inputs, got {d}", .{ ops.max_inputs, inputs.len });
            }
            var call: Call = .{ .program = program, .graph = graph, .input_count = @intCast(inputs.len), .inputs = undefined };
            @memcpy(call.inputs[0..inputs.len], inputs);
            // Unlocked before the errdefer above releases: no release runs under the mutex.
            calls.mutex.lock();
            defer calls.mutex.unlock();
            const index = try calls.claim();
            const slot = calls.slotAt(index);
            assert(slot.call == null);
            slot.call = call;
            calls.live += 1;
            return (@as(u64, slot.generation) << 32) | (@as(u64, index) + 1);
        }

        /// Removes the call `token` names and hands its references to the caller, who must
        /// release it. The token is dead from now on: a second take is InvalidHandle.
        pub fn take(calls: *Self, token: Token) Error!Call {
            calls.mutex.lock();
            defer calls.mutex.unlock();
            const low: u32 = @truncate(token);
            const generation: u32 = @truncate(token >> 32);
            if (low == 0 or low - 1 >= calls.used) return dead(token);
            const index = low - 1;
            const slot = calls.slotAt(index);
            if (slot.generation != generation) return dead(token);
            const call = slot.call orelse return dead(token);
            slot.call = null;
            slot.generation +%= 1;
            if (slot.generation == 0) slot.generation = 1;
            slot.next_free = calls.free;
            calls.free = index;
            assert(calls.live > 0);
            calls.live -= 1;
            return call;
        }

        /// Drops the call `token` names without running it.
        pub fn dispose(calls: *Self, token: Token) Error!void {
            const call = try calls.take(token);
            call.release();
        }

        /// Frees the chunks of a table no call is pinned in (tests: the process-wide table
        /// lives as long as the process).
        pub fn deinit(calls: *Self) void {
            assert(calls.live == 0);
            for (calls.chunks) |chunk| if (chunk) |c| std.heap.c_allocator.destroy(c);
            calls.* = undefined;
        }

        /// Calls pinned and not yet taken.
        pub fn liveCount(calls: *Self) usize {
            calls.mutex.lock();
            defer calls.mutex.unlock();
            return calls.live;
        }

        fn dead(token: Token) Error {
            return status.fail(error.InvalidHandle, "call 0x{x} is not pinned (it already ran, was disposed, or never existed)", .{token});
        }

        fn slotAt(calls: *Self, index: u32) *Slot {
            assert(index < calls.used);
            return &calls.chunks[index / slots_per_chunk].?[index % slots_per_chunk];
        }

        /// A free slot: a recycled one, else the next unused one (allocating its chunk first
        /// when it starts one). Called with the mutex held.
        fn claim(calls: *Self) Error!u32 {
            if (calls.free != none) {
                const index = calls.free;
                calls.free = calls.slotAt(index).next_free;
                return index;
            }
            if (calls.used == capacity) {
                return status.fail(error.TooLarge, "{d} calls are pinned and not yet run; await some first", .{capacity});
            }
            const chunk = calls.used / slots_per_chunk;
            if (calls.used % slots_per_chunk == 0) {
                assert(calls.chunks[chunk] == null);
                calls.chunks[chunk] = std.heap.c_allocator.create(Chunk) catch return error.OutOfMemory;
                // Monotonic: a statistic (storage_cache.zig), read without ordering.
                _ = storage_cache.system_allocations.fetchAdd(1, .monotonic);
            }
            const index = calls.used;
            calls.used += 1;
            calls.slotAt(index).* = .{ .generation = 1, .next_free = none, .call = null };
            return index;
        }
    };
}

// ---------------------------------------------------------------------------------------
// Asynchronous runs: a taken call queued on the inference pool (pool/inference.zig), with
// the TypeScript buffers its run writes into. TypeScript keeps those buffers referenced
// until the job's token comes back from spindle_inference_wait; the pool's completion
// queue orders the writes before the token is read (its mutex).

/// The pool that runs asynchronous forward passes, sized by settings.getNumInferenceThreads.
pub var inference_pool: inference.Pool = .{ .limit_fn = settings.getNumInferenceThreads, .threads_per_job_fn = settings.getNumThreads };

/// A queued run and where its results go.
pub const RunJob = struct {
    job: inference.Job = .{ .run_fn = runJob, .release_fn = releaseJob },
    call: Call = undefined,
    outputs: []tensor.Handle = &.{},
    message: []u8 = &.{},
    /// [status, nanoseconds the run took] (TypeScript decides from the time whether the
    /// model's next runs are worth the hop to a pool thread).
    result_out: *[2]i64 = undefined,
    next_free: ?*RunJob = null,
};

/// Run jobs come from a free list that grows by chunks (never freed), so that in steady
/// state a submit allocates nothing.
const job_chunk = 64;
var jobs_mutex: std.Thread.Mutex = .{};
var jobs_free: ?*RunJob = null;
var jobs_allocated: usize = 0;

fn acquireJob() Error!*RunJob {
    jobs_mutex.lock();
    defer jobs_mutex.unlock();
    if (jobs_free == null) {
        if (jobs_allocated >= inference.max_live_jobs) {
            return status.fail(error.TooLarge, "{d} forward calls are pending; await some before starting more", .{jobs_allocated});
        }
        const chunk = std.heap.c_allocator.alloc(RunJob, job_chunk) catch return error.OutOfMemory;
        // Monotonic: a statistic (storage_cache.zig), read without ordering.
        _ = storage_cache.system_allocations.fetchAdd(1, .monotonic);
        jobs_allocated += job_chunk;
        for (chunk) |*job| {
            job.* = .{ .next_free = jobs_free };
            jobs_free = job;
        }
    }
    const job = jobs_free.?;
    jobs_free = job.next_free;
    return job;
}

fn recycle(job: *RunJob) void {
    jobs_mutex.lock();
    defer jobs_mutex.unlock();
    job.* = .{ .next_free = jobs_free };
    jobs_free = job;
}

/// Queues a run of the pinned call `token` on the inference pool: its output handles go to
/// `outputs`, its status and run time to `result_out` and, on error, its message to `message`; `watch`
/// is the token that channel `channel`'s wait returns once all of that is written. The call is
/// taken (its token dead) whatever happens; on failure it is released here.
pub fn submit(token: Token, outputs: []tensor.Handle, message: []u8, result_out: *[2]i64, channel: u32, watch: u64) Error!void {
    const call = try table.take(token);
    const job = acquireJob() catch |err| {
        call.release();
        return err;
    };
    job.call = call;
    job.outputs = outputs;
    job.message = message;
    job.result_out = result_out;
    inference_pool.submit(&job.job, channel, watch) catch |err| {
        call.release();
        recycle(job);
        return err;
    };
}

fn runJob(job: *inference.Job) void {
    const run_job: *RunJob = @fieldParentPtr("job", job);
    status.clearMessage();
    const started = std.time.Instant.now() catch null;
    const result = runAndPublish(&run_job.call, run_job.outputs);
    const elapsed: u64 = if (started) |begin| (std.time.Instant.now() catch begin).since(begin) else 0;
    run_job.call.release();
    run_job.result_out.* = .{ finish(result, run_job.message), @intCast(@min(elapsed, std.math.maxInt(i64))) };
}

fn releaseJob(job: *inference.Job) void {
    recycle(@fieldParentPtr("job", job));
}

fn runAndPublish(call: *const Call, outputs: []tensor.Handle) Error!void {
    var results: [max_outputs]*Tensor = undefined;
    if (outputs.len > max_outputs) return status.fail(error.InvalidArgument, "at most {d} outputs", .{max_outputs});
    try call.run(results[0..outputs.len]);
    try publishOutputs(results[0..outputs.len], outputs);
}

/// Outputs of one program run, at most.
pub const max_outputs = 64;

/// Publishes a run's outputs (one reference each, taken over) as handles into `destination`;
/// on error releases them all and disposes the handles already published.
pub fn publishOutputs(results: []const *Tensor, destination: []tensor.Handle) Error!void {
    assert(results.len == destination.len);
    var published: usize = 0;
    errdefer for (destination[0..published]) |h| tensor.table.dispose(h) catch {};
    errdefer for (results[published..]) |t| t.release();
    for (results, destination) |t, *slot| {
        slot.* = try tensor.table.register(t);
        published += 1;
    }
}

/// The status of a finished run, its message also copied (NUL-terminated when it fits) into
/// `message` on error: a run on a pool thread has a thread-local message the caller cannot
/// read. The run is over and this thread waits for its next job (or goes back to Deno): its
/// intra-op workers sleep rather than spin.
pub fn finish(result: Error!void, message: []u8) i32 {
    const code = status.toStatus(result);
    intra_op.parkCaller();
    if (code != 0 and message.len > 0) {
        const length = status.lastMessage(message);
        if (length < message.len) message[length] = 0;
    }
    return code;
}

// ---------------------------------------------------------------------------------------
// Tests: pin, take and run, release once, refuse a second run, release on failures.

const format = @import("format.zig");
const testing = std.testing;

/// A program of one graph: relu of a float32 [2] input.
fn reluProgram() !*Program {
    const json =
        \\{"format":"spindle-graph","version":2,"tensors":[],
        \\ "graphs":[{"inputs":[{"dtype":"float32","shape":[2]}],"values":2,
        \\   "nodes":[{"op":"relu","inputs":[0],"outputs":[1]}],"outputs":[1]}]}
    ;
    const image = try format.writeImage(testing.allocator, json, &.{});
    defer testing.allocator.free(image);
    return program_module.load(image);
}

fn refsOf(object: anytype) u32 {
    // Monotonic: the reference changes of these tests happened on this thread or on threads
    // it joined since, which orders them before this load.
    return object.refs.load(.monotonic);
}

test "a pinned call holds its program and inputs until it is taken, runs and is released" {
    var calls: Table(4, 8) = .{};
    defer calls.deinit();
    const program = try reluProgram();
    defer program.release();
    const x = try tensor.createUninit(.float32, &.{2});
    defer x.release();
    @memcpy(x.f32Slice(), &[_]f32{ -1, 2 });
    // What spindle_call_pin does: acquire, then hand the references to the call.
    program.retain();
    x.retain();
    const token = try calls.pin(program, 0, &.{x});
    try testing.expectEqual(@as(usize, 1), calls.liveCount());
    try testing.expectEqual(@as(u32, 2), refsOf(program));
    try testing.expectEqual(@as(u32, 2), refsOf(x));
    const call = try calls.take(token);
    var outputs: [1]*Tensor = undefined;
    try call.run(&outputs);
    call.release();
    defer outputs[0].release();
    try testing.expectEqualSlices(f32, &.{ 0, 2 }, outputs[0].f32Slice());
    try testing.expectEqual(@as(u32, 1), refsOf(program));
    try testing.expectEqual(@as(u32, 1), refsOf(x));
    try testing.expectEqual(@as(usize, 0), calls.liveCount());
}

test "a call runs once: a second take or a dispose after it is InvalidHandle" {
    var calls: Table(4, 8) = .{};
    defer calls.deinit();
    const program = try reluProgram();
    defer program.release();
    program.retain();
    const token = try calls.pin(program, 0, &.{});
    (try calls.take(token)).release();
    try testing.expectError(error.InvalidHandle, calls.take(token));
    try testing.expectError(error.InvalidHandle, calls.dispose(token));
    var buffer: [status.message_capacity]u8 = undefined;
    try testing.expect(std.mem.indexOf(u8, buffer[0..status.lastMessage(&buffer)], "not pinned") != null);
    // The slot is reused with a new generation: the old token stays dead.
    program.retain();
    const second = try calls.pin(program, 0, &.{});
    try testing.expect(second != token);
    try testing.expectError(error.InvalidHandle, calls.take(token));
    try testing.expectError(error.InvalidHandle, calls.take(0));
    try testing.expectError(error.InvalidHandle, calls.take(second + 1));
    try calls.dispose(second);
    try testing.expectEqual(@as(u32, 1), refsOf(program));
}

test "a failing run and a refused pin release every reference" {
    var calls: Table(4, 8) = .{};
    defer calls.deinit();
    const program = try reluProgram();
    defer program.release();
    const wrong = try tensor.createZeroed(.float32, &.{3});
    defer wrong.release();
    // The run fails (the graph takes a [2] input); whoever took the call still releases it.
    program.retain();
    wrong.retain();
    const token = try calls.pin(program, 0, &.{wrong});
    const call = try calls.take(token);
    var outputs: [1]*Tensor = undefined;
    try testing.expectError(error.ShapeMismatch, call.run(&outputs));
    call.release();
    // A pin of a graph the program does not have releases what it was given.
    program.retain();
    wrong.retain();
    try testing.expectError(error.IndexOutOfRange, calls.pin(program, 1, &.{wrong}));
    try testing.expectEqual(@as(u32, 1), refsOf(program));
    try testing.expectEqual(@as(u32, 1), refsOf(wrong));
    try testing.expectEqual(@as(usize, 0), calls.liveCount());
}

test "pinning is bounded and, below the peak, reuses slots without allocating" {
    var calls: Table(4, 8) = .{};
    defer calls.deinit();
    const program = try reluProgram();
    defer program.release();
    var tokens: [8]Token = undefined;
    for (&tokens) |*token| {
        program.retain();
        token.* = try calls.pin(program, 0, &.{});
    }
    program.retain();
    try testing.expectError(error.TooLarge, calls.pin(program, 0, &.{}));
    try testing.expectEqual(@as(u32, 9), refsOf(program));
    for (tokens) |token| try calls.dispose(token);
    const chunks = calls.chunks;
    for (0..100) |_| {
        program.retain();
        try calls.dispose(try calls.pin(program, 0, &.{}));
    }
    try testing.expectEqual(@as(u32, 8), calls.used);
    try testing.expectEqualSlices(?*@TypeOf(calls).Chunk, &chunks, &calls.chunks);
    try testing.expectEqual(@as(u32, 1), refsOf(program));
}

test "calls pinned on one thread run and release on others, while it pins more" {
    const count = 256;
    const Pinned = Table(4, 64);
    var calls: Pinned = .{};
    defer calls.deinit();
    const program = try reluProgram();
    defer program.release();
    const x = try tensor.createUninit(.float32, &.{2});
    defer x.release();
    @memcpy(x.f32Slice(), &[_]f32{ -3, 4 });
    // The pinning thread plays the JavaScript thread, the runners Deno's blocking pool.
    const Shared = struct {
        calls: *Pinned,
        tokens: [count]Token = undefined,
        /// Tokens written so far. Release in the pinning loop pairs with the Acquire load
        /// in run(): a runner reads only tokens written before the count it loaded.
        published: std.atomic.Value(u32) = .init(0),
        /// The next token to run. Monotonic: it only hands out indices; `published` orders
        /// the tokens themselves.
        next: std.atomic.Value(u32) = .init(0),
        /// Monotonic: a counter, read after join(), which orders it.
        failures: std.atomic.Value(u32) = .init(0),

        fn run(shared: *@This()) void {
            while (true) {
                const index = shared.next.fetchAdd(1, .monotonic);
                if (index >= count) return;
                while (shared.published.load(.acquire) <= index) std.Thread.yield() catch {};
                if (!runOne(shared.calls, shared.tokens[index])) _ = shared.failures.fetchAdd(1, .monotonic);
            }
        }

        fn runOne(pinned: *Pinned, token: Token) bool {
            const call = pinned.take(token) catch return false;
            defer call.release();
            var outputs: [1]*Tensor = undefined;
            call.run(&outputs) catch return false;
            defer outputs[0].release();
            return std.mem.eql(f32, outputs[0].f32Slice(), &.{ 0, 4 });
        }
    };
    var shared: Shared = .{ .calls = &calls };
    var runners: [2]std.Thread = undefined;
    for (&runners) |*runner| runner.* = try std.Thread.spawn(.{}, Shared.run, .{&shared});
    for (0..count) |index| {
        program.retain();
        x.retain();
        // At most 64 calls are pinned at once: wait for the runners when the table is full.
        shared.tokens[index] = while (true) {
            if (calls.pin(program, 0, &.{x})) |token| break token else |err| {
                try testing.expectEqual(error.TooLarge, err);
                program.retain();
                x.retain();
                std.Thread.yield() catch {};
            }
        };
        shared.published.store(@intCast(index + 1), .release);
    }
    for (runners) |runner| runner.join();
    try testing.expectEqual(@as(u32, 0), shared.failures.load(.monotonic));
    try testing.expectEqual(@as(usize, 0), calls.liveCount());
    try testing.expectEqual(@as(u32, 1), refsOf(program));
    try testing.expectEqual(@as(u32, 1), refsOf(x));
}

test "submitted calls run on the inference pool, write their outputs and status, and come back by token" {
    const program = try reluProgram();
    defer program.release();
    const x = try tensor.createUninit(.float32, &.{2});
    defer x.release();
    @memcpy(x.f32Slice(), &[_]f32{ -1, 2 });
    const count = 12;
    var outputs: [count][1]tensor.Handle = undefined;
    var messages: [count][64]u8 = undefined;
    var results = [_][2]i64{.{ -1, -1 }} ** count;
    const channel = try @import("../pool/channels.zig").open();
    for (0..count) |i| {
        program.retain();
        x.retain();
        // Every third call gets the wrong number of inputs: its run fails, by status.
        const token = if (i % 3 == 2) try table.pin(program, 0, &.{}) else try table.pin(program, 0, &.{x});
        if (i % 3 == 2) x.release();
        try submit(token, &outputs[i], &messages[i], &results[i], channel, 100 + i);
        // The token is taken: running or disposing it again is refused.
        try testing.expectError(error.InvalidHandle, table.dispose(token));
    }
    var seen = [_]bool{false} ** count;
    var received: usize = 0;
    var tokens: [4]u64 = undefined;
    while (received < count) {
        const got = try inference_pool.wait(channel, &tokens, 5 * std.time.ns_per_s);
        try testing.expect(got > 0);
        for (tokens[0..got]) |watch| {
            const i = watch - 100;
            try testing.expect(!seen[i]);
            seen[i] = true;
        }
        received += got;
    }
    for (0..count) |i| {
        try testing.expect(results[i][1] >= 0); // the run's time
        if (i % 3 == 2) {
            try testing.expect(results[i][0] != 0);
            try testing.expect(std.mem.indexOfScalar(u8, &messages[i], 0) != null);
            continue;
        }
        try testing.expectEqual(@as(i64, 0), results[i][0]);
        const y = try tensor.table.acquire(outputs[i][0]);
        try testing.expectEqualSlices(f32, &.{ 0, 2 }, y.f32Slice());
        y.release();
        try tensor.table.dispose(outputs[i][0]);
    }
    try testing.expectEqual(@as(u32, 1), refsOf(program));
    try testing.expectEqual(@as(u32, 1), refsOf(x));
    try testing.expect(inference_pool.load().workers <= settings.getNumInferenceThreads());
}
