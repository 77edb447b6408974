/**
 * THE symbol table of libspindle: one entry per exported `pub fn spindle_*` in zig/src/exports.zig, in
 * the same order, with its C prototype in a comment. Nothing else in Spindle names a native
 * symbol.
 *
 * Handles (tensors, futures, programs, pinned calls) are `u64` — BigInt in JavaScript. Out-parameters are passed
 * as typed-array `buffer`s.
 *
 * @module
 */

export const symbols = {
  // uint32_t spindle_abi_version(void)
  spindle_abi_version: { parameters: [], result: "u32" },
  // uint32_t spindle_abi_version(void), on Deno's blocking pool: benchmarks use it to
  // measure the raw cost of one nonblocking FFI call.
  spindle_abi_version_async: { name: "spindle_abi_version", parameters: [], result: "u32", nonblocking: true },
  // size_t spindle_last_error(uint8_t *buffer, size_t capacity)
  spindle_last_error: { parameters: ["buffer", "usize"], result: "usize" },
  // size_t spindle_info_json(uint8_t *buffer, size_t capacity)
  spindle_info_json: { parameters: ["buffer", "usize"], result: "usize" },
  // int32_t spindle_get_num_threads(void)
  spindle_get_num_threads: { parameters: [], result: "i32" },
  // int32_t spindle_set_num_threads(int64_t count)
  spindle_set_num_threads: { parameters: ["i64"], result: "i32" },
  // int32_t spindle_get_num_interop_threads(void)
  spindle_get_num_interop_threads: { parameters: [], result: "i32" },
  // int32_t spindle_set_num_interop_threads(int64_t count)
  spindle_set_num_interop_threads: { parameters: ["i64"], result: "i32" },
  // int32_t spindle_tensor_create(uint32_t dtype, uint32_t ndim, const int64_t *shape,
  //     const uint8_t *data, size_t data_bytes, uint64_t *out)
  spindle_tensor_create: {
    parameters: ["u32", "u32", "buffer", "buffer", "usize", "buffer"],
    result: "i32",
  },
  // int32_t spindle_tensor_borrow(uint32_t dtype, uint32_t ndim, const int64_t *shape,
  //     uint8_t *data, size_t data_bytes, uint64_t *out)
  spindle_tensor_borrow: {
    parameters: ["u32", "u32", "buffer", "buffer", "usize", "buffer"],
    result: "i32",
  },
  // int32_t spindle_tensor_detach(uint64_t handle)
  spindle_tensor_detach: { parameters: ["u64"], result: "i32" },
  // int32_t spindle_tensor_full(uint32_t dtype, uint32_t ndim, const int64_t *shape,
  //     double value, uint64_t *out)
  spindle_tensor_full: {
    parameters: ["u32", "u32", "buffer", "f64", "buffer"],
    result: "i32",
  },
  // int32_t spindle_tensor_random(uint32_t ndim, const int64_t *shape, uint64_t seed,
  //     uint32_t normal, uint64_t *out)
  spindle_tensor_random: {
    parameters: ["u32", "buffer", "u64", "u32", "buffer"],
    result: "i32",
  },
  // int32_t spindle_tensor_info(uint64_t handle, int64_t *out /* [12] */)
  spindle_tensor_info: { parameters: ["u64", "buffer"], result: "i32" },
  // int32_t spindle_tensor_read(uint64_t handle, uint8_t *destination, size_t bytes)
  spindle_tensor_read: { parameters: ["u64", "buffer", "usize"], result: "i32" },
  // int32_t spindle_tensor_dispose(uint64_t handle)
  spindle_tensor_dispose: { parameters: ["u64"], result: "i32" },
  // uint64_t spindle_system_allocations(void)
  spindle_system_allocations: { parameters: [], result: "u64" },
  // void spindle_memory_stats(uint64_t *out /* [3] */)
  spindle_memory_stats: { parameters: ["buffer"], result: "void" },
  // size_t spindle_tensor_live_count(void)
  spindle_tensor_live_count: { parameters: [], result: "usize" },
  // size_t spindle_describe_json(uint8_t *buffer, size_t capacity)
  spindle_describe_json: { parameters: ["buffer", "usize"], result: "usize" },
  // int32_t spindle_op_run(uint32_t op, const uint64_t *inputs, size_t input_count,
  //     const double *params, size_t param_count, uint64_t *out)
  spindle_op_run: {
    parameters: ["u32", "buffer", "usize", "buffer", "usize", "buffer"],
    result: "i32",
  },
  // int32_t spindle_fork_op(uint32_t op, const uint64_t *inputs, size_t input_count,
  //     const double *params, size_t param_count, uint64_t *out_future)
  spindle_fork_op: {
    parameters: ["u32", "buffer", "usize", "buffer", "usize", "buffer"],
    result: "i32",
  },
  // int32_t spindle_future_wait(uint64_t future, uint64_t *out)
  spindle_future_wait: { parameters: ["u64", "buffer"], result: "i32" },
  // int32_t spindle_future_done(uint64_t future)
  spindle_future_done: { parameters: ["u64"], result: "i32" },
  // int32_t spindle_future_dispose(uint64_t future)
  spindle_future_dispose: { parameters: ["u64"], result: "i32" },
  // size_t spindle_future_live_count(void)
  spindle_future_live_count: { parameters: [], result: "usize" },
  // int32_t spindle_channel_open(uint32_t *out)
  spindle_channel_open: { parameters: ["buffer"], result: "i32" },
  // int32_t spindle_future_watch(uint64_t future, uint32_t channel, uint64_t token)
  spindle_future_watch: { parameters: ["u64", "u32", "u64"], result: "i32" },
  // size_t spindle_completions_wait(uint32_t channel, uint64_t *tokens, size_t capacity,
  //     uint32_t timeout_ms), on Deno's blocking pool: one waiter per isolate drains its
  //     channel's completion queue for every pending future, so awaiting takes one thread
  //     however many futures are in flight.
  spindle_completions_wait: {
    parameters: ["u32", "buffer", "usize", "u32"],
    result: "usize",
    nonblocking: true,
  },
  // size_t spindle_completions_poll(uint32_t channel, uint64_t *tokens, size_t capacity)
  spindle_completions_poll: { parameters: ["u32", "buffer", "usize"], result: "usize" },
  // void spindle_completions_interrupt(uint32_t channel)
  spindle_completions_interrupt: { parameters: ["u32"], result: "void" },
  // size_t spindle_unobserved_errors(uint8_t *buffer, size_t capacity)
  spindle_unobserved_errors: { parameters: ["buffer", "usize"], result: "usize" },
  // int32_t spindle_program_load(const uint8_t *bytes, size_t length, uint64_t memory_budget,
  //     uint32_t precision, uint64_t *out)
  spindle_program_load: { parameters: ["buffer", "usize", "u64", "u32", "buffer"], result: "i32" },
  // int32_t spindle_program_info(uint64_t program, uint32_t graph, uint64_t *out /* [5] */)
  spindle_program_info: { parameters: ["u64", "u32", "buffer"], result: "i32" },
  // int32_t spindle_program_run(uint64_t program, uint32_t graph, const uint64_t *inputs,
  //     size_t input_count, uint64_t *outputs, size_t output_count, uint8_t *message,
  //     size_t message_capacity)
  spindle_program_run: {
    parameters: ["u64", "u32", "buffer", "usize", "buffer", "usize", "buffer", "usize"],
    result: "i32",
  },
  // int32_t spindle_program_profile(uint64_t program, uint32_t graph, const uint64_t *inputs,
  //     size_t input_count, uint64_t *outputs, size_t output_count, uint64_t *records,
  //     size_t record_capacity, uint64_t *record_count, uint8_t *message,
  //     size_t message_capacity)
  spindle_program_profile: {
    parameters: ["u64", "u32", "buffer", "usize", "buffer", "usize", "buffer", "usize", "buffer", "buffer", "usize"],
    result: "i32",
  },
  // int32_t spindle_program_dispose(uint64_t program)
  spindle_program_dispose: { parameters: ["u64"], result: "i32" },
  // int32_t spindle_call_pin(uint64_t program, uint32_t graph, const uint64_t *inputs,
  //     size_t input_count, uint64_t *out_call)
  spindle_call_pin: { parameters: ["u64", "u32", "buffer", "usize", "buffer"], result: "i32" },
  // int32_t spindle_call_run(uint64_t call, uint64_t *outputs, size_t output_count,
  //     uint8_t *message, size_t message_capacity)
  spindle_call_run: { parameters: ["u64", "buffer", "usize", "buffer", "usize"], result: "i32" },
  // int32_t spindle_call_dispose(uint64_t call)
  spindle_call_dispose: { parameters: ["u64"], result: "i32" },
  // size_t spindle_call_live_count(void)
  spindle_call_live_count: { parameters: [], result: "usize" },
  // int32_t spindle_call_submit(uint64_t call, uint64_t *outputs, size_t output_count,
  //     uint8_t *message, size_t message_capacity, int64_t *result /* [2] */,
  //     uint32_t channel, uint64_t watch)
  spindle_call_submit: {
    parameters: ["u64", "buffer", "usize", "buffer", "usize", "buffer", "u32", "u64"],
    result: "i32",
  },
  // size_t spindle_inference_wait(uint32_t channel, uint64_t *tokens, size_t capacity,
  //     uint32_t timeout_ms), on Deno's blocking pool: one waiter per isolate takes the
  //     tokens of every finished call it submitted.
  spindle_inference_wait: { parameters: ["u32", "buffer", "usize", "u32"], result: "usize", nonblocking: true },
  // size_t spindle_inference_spin(uint32_t channel, uint64_t *tokens, size_t capacity), on
  //     the JavaScript thread after a wait returned none: spins (at most 200 µs) for a
  //     call predicted to finish now, then takes tokens like a wait.
  spindle_inference_spin: { parameters: ["u32", "buffer", "usize"], result: "usize" },
  // void spindle_inference_interrupt(uint32_t channel)
  spindle_inference_interrupt: { parameters: ["u32"], result: "void" },
  // int32_t spindle_get_num_inference_threads(void)
  spindle_get_num_inference_threads: { parameters: [], result: "i32" },
  // int32_t spindle_set_num_inference_threads(int64_t count)
  spindle_set_num_inference_threads: { parameters: ["i64"], result: "i32" },
  // void spindle_inference_load(uint64_t *out /* [3] */)
  spindle_inference_load: { parameters: ["buffer"], result: "void" },
  // void spindle_set_allocation_budget(uint64_t bytes)
  spindle_set_allocation_budget: { parameters: ["u64"], result: "void" },
} as const satisfies Deno.ForeignLibraryInterface;

/** The type of the loaded library's `symbols` object. */
export type Symbols = Deno.DynamicLibrary<typeof symbols>["symbols"];
