/**
 * `spindle serve`: every Open Inference Protocol endpoint, JSON and binary tensors, output
 * selection, every error status, dynamic batching, bad input, and graceful shutdown. Servers
 * run in this process on a free port (the CLI and shutdown in a subprocess), driven by fetch
 * and, for malformed HTTP, by raw TCP.
 *
 * @module
 */
import { onnx } from "../tools/fuzz_corpus.ts";
import assert from "node:assert/strict";
import { load, type Module, tensor } from "../mod.ts";
import { type ServedModel, servedModule, type Values, valuesOutput } from "../lib/serve/model.ts";
import { type InferenceServer, type ServeOptions, startServer } from "../lib/serve/server.ts";
import { Deadlines } from "../lib/serve/deadlines.ts";
import { parseInferRequest, type RequestPlan, type TensorSpec } from "../lib/serve/protocol.ts";
import { fakeModel, mutate, random, testOptions, writeTestModel } from "./serve/fixture.ts";
import { ROOT } from "./helpers.ts";

const MODEL_PATH = await writeTestModel();
globalThis.addEventListener("unload", () => Deno.removeSync(MODEL_PATH));

const X = new Float32Array([0.5, -1.25, 3, 2e-7, -0.1, 7, 1 / 3, -4]); // [2, 4]
const IDS = new BigInt64Array([1n, 9n, 0n, 4n]); // [2, 2]

async function openModule(): Promise<Module> {
  return await load(MODEL_PATH);
}

/** The model's outputs for X and IDS computed in-process, as raw bytes. */
async function expectedOutputs(module: Module, x = X, ids = IDS, rows = 2): Promise<Record<string, Uint8Array>> {
  using xt = tensor(x, [rows, 4]);
  using it = tensor(ids, [rows, 2], { dtype: "int64" });
  const outputs = await module.forwardAll(xt, it);
  const result: Record<string, Uint8Array> = {};
  outputs.forEach((t, i) => {
    result[module.outputNames[i]] = new Uint8Array(t.toArray().buffer);
    t.dispose();
  });
  return result;
}

async function withServer(
  options: Partial<ServeOptions>,
  fn: (url: string, server: InferenceServer, model: ServedModel) => Promise<void>,
  model?: ServedModel,
): Promise<void> {
  const served = model ?? servedModule("m", MODEL_PATH, await openModule());
  const server = await startServer(testOptions(served, options));
  try {
    await fn(`http://127.0.0.1:${server.port}`, server, served);
  } finally {
    await server.shutdown();
    served.dispose();
  }
}

function jsonRequest(rows = 2, x = X, ids = IDS, extra: Record<string, unknown> = {}) {
  return {
    inputs: [
      { name: "x", datatype: "FP32", shape: [rows, 4], data: Array.from(x) },
      { name: "ids", datatype: "INT64", shape: [rows, 2], data: Array.from(ids, Number) },
    ],
    ...extra,
  };
}

async function post(url: string, body: unknown, headers: Record<string, string> = {}): Promise<Response> {
  return await fetch(url, {
    method: "POST",
    body: body instanceof Uint8Array ? body as Uint8Array<ArrayBuffer> : JSON.stringify(body),
    headers,
  });
}

/** A binary request: JSON header, then x's and ids' bytes. */
function binaryRequest(outputs?: unknown[], x = X): { body: Uint8Array; headerLength: number } {
  const header = new TextEncoder().encode(JSON.stringify({
    inputs: [
      { name: "x", datatype: "FP32", shape: [2, 4], parameters: { binary_data_size: X.byteLength } },
      { name: "ids", datatype: "INT64", shape: [2, 2], parameters: { binary_data_size: IDS.byteLength } },
    ],
    ...(outputs === undefined ? { parameters: { binary_data_output: true } } : { outputs }),
  }));
  const body = new Uint8Array(header.byteLength + X.byteLength + IDS.byteLength);
  body.set(header);
  body.set(new Uint8Array(x.buffer, x.byteOffset, x.byteLength), header.byteLength);
  body.set(new Uint8Array(IDS.buffer), header.byteLength + X.byteLength);
  return { body, headerLength: header.byteLength };
}

/** Splits a binary response into its JSON header and each binary output's bytes. */
async function binaryResponse(response: Response) {
  const length = Number(response.headers.get("inference-header-content-length"));
  const bytes = new Uint8Array(await response.arrayBuffer());
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(0, length)));
  const data: Record<string, Uint8Array> = {};
  let offset = length;
  for (const output of header.outputs) {
    const size = output.parameters?.binary_data_size;
    if (size === undefined) continue;
    data[output.name] = bytes.slice(offset, offset + size);
    offset += size;
  }
  assert.equal(offset, bytes.byteLength);
  return { header, data };
}

function jsonBytes(output: { datatype: string; data: number[] }): Uint8Array {
  return new Uint8Array(Float32Array.from(output.data).buffer);
}

async function expectError(response: Response, status: number, message: RegExp): Promise<void> {
  const body = await response.json();
  assert.equal(response.status, status, JSON.stringify(body));
  assert.equal(typeof body.error, "string");
  assert.match(body.error, message);
}

Deno.test("serve: server, health, model metadata and readiness endpoints", async () => {
  await withServer({}, async (url) => {
    assert.deepEqual(await (await fetch(`${url}/v2`)).json(), {
      name: "spindle",
      version: "test",
      extensions: ["binary_tensor_data"],
    });
    for (const path of ["/v2/health/live", "/v2/health/ready", "/v2/models/m/ready", "/v2/models/m/versions/1/ready"]) {
      const response = await fetch(url + path);
      await response.body?.cancel();
      assert.equal(response.status, 200, path);
    }
    const metadata = {
      name: "m",
      versions: ["1"],
      platform: "spindle",
      inputs: [{ name: "x", datatype: "FP32", shape: [-1, 4] }, { name: "ids", datatype: "INT64", shape: [-1, 2] }],
      outputs: [
        { name: "y", datatype: "FP32", shape: [-1, 3] },
        { name: "z", datatype: "FP32", shape: [-1, 4] },
        { name: "e", datatype: "FP32", shape: [-1, 2, 3] },
      ],
    };
    assert.deepEqual(await (await fetch(`${url}/v2/models/m`)).json(), metadata);
    assert.deepEqual(await (await fetch(`${url}/v2/models/m/versions/1`)).json(), metadata);
    assert.deepEqual(await (await fetch(`${url}/v2/models/m/config`)).json(), {
      name: "m",
      platform: "spindle",
      backend: "spindle",
      max_batch_size: 0,
      input: [{ name: "x", data_type: "TYPE_FP32", dims: [-1, 4] }, {
        name: "ids",
        data_type: "TYPE_INT64",
        dims: [-1, 2],
      }],
      output: [
        { name: "y", data_type: "TYPE_FP32", dims: [-1, 3] },
        { name: "z", data_type: "TYPE_FP32", dims: [-1, 4] },
        { name: "e", data_type: "TYPE_FP32", dims: [-1, 2, 3] },
      ],
    });
    const index = await fetch(`${url}/v2/repository/index`, { method: "POST", body: "{}" });
    assert.deepEqual(await index.json(), [{ name: "m", version: "1", state: "READY" }]);
    await expectError(await fetch(`${url}/v2/models/nope`), 404, /unknown model 'nope' \(serving: m\)/);
    await expectError(await fetch(`${url}/v2/models/m/versions/2`), 404, /no version '2' \(versions: 1\)/);
    await expectError(await fetch(`${url}/v2/models/nope/ready`), 404, /unknown model/);
    await expectError(await fetch(`${url}/v3`), 404, /no route/);
    await expectError(await fetch(`${url}/v2/models/m/infer`), 405, /POST/);
  });
});

Deno.test("serve: JSON and binary infer are bit-identical to in-process forward, with output selection", async () => {
  using module = await openModule();
  const expected = await expectedOutputs(module);
  await withServer({}, async (url) => {
    const response = await post(`${url}/v2/models/m/infer`, jsonRequest(2, X, IDS, { id: "r1" }));
    assert.equal(response.status, 200);
    assert.equal(response.headers.get("content-type"), "application/json");
    const body = await response.json();
    assert.equal(body.id, "r1");
    assert.equal(body.model_name, "m");
    assert.equal(body.model_version, "1");
    assert.deepEqual(body.outputs.map((o: { name: string }) => o.name), ["y", "z", "e"]);
    assert.deepEqual(body.outputs.map((o: { shape: number[] }) => o.shape), [[2, 3], [2, 4], [2, 2, 3]]);
    for (const output of body.outputs) assert.deepEqual(jsonBytes(output), expected[output.name], output.name);

    // Versioned URL, binary inputs, binary outputs.
    const binary = binaryRequest();
    const raw = await post(`${url}/v2/models/m/versions/1/infer`, binary.body, {
      "inference-header-content-length": String(binary.headerLength),
    });
    assert.equal(raw.status, 200);
    const { header, data } = await binaryResponse(raw);
    assert.deepEqual(Object.keys(data), ["y", "z", "e"]);
    for (const name of ["y", "z", "e"]) assert.deepEqual(data[name], expected[name], name);
    assert.equal(header.outputs[0].parameters.binary_data_size, 24);

    // Output selection, mixing a binary and a JSON output, in the order asked.
    const selected = binaryRequest([{ name: "e", parameters: { binary_data: true } }, { name: "y" }]);
    const mixed = await binaryResponse(
      await post(`${url}/v2/models/m/infer`, selected.body, {
        "inference-header-content-length": String(selected.headerLength),
      }),
    );
    assert.deepEqual(mixed.header.outputs.map((o: { name: string }) => o.name), ["e", "y"]);
    assert.deepEqual(mixed.data.e, expected.e);
    assert.deepEqual(jsonBytes(mixed.header.outputs[1]), expected.y);

    // Nested row-major JSON data is read the same as flat data.
    const nested = jsonRequest(2, X, IDS, { outputs: [{ name: "z" }] });
    nested.inputs[0].data = [Array.from(X.subarray(0, 4)), Array.from(X.subarray(4))] as unknown as number[];
    const z = await (await post(`${url}/v2/models/m/infer`, nested)).json();
    assert.deepEqual(jsonBytes(z.outputs[0]), expected.z);
  });
});

Deno.test("serve: concurrent binary responses each carry their own outputs (the response buffer is reused)", async () => {
  // Each connection encodes its binary responses into a buffer it reuses, and a batch of
  // forwards settles many requests in one go: if two requests shared a buffer before their
  // responses were written, their bytes would mix and this would fail.
  using module = await openModule();
  const xs = Array.from({ length: 8 }, (_, r) => X.map((v, i) => v * (r + 1) - i));
  const expected = await Promise.all(xs.map((x) => expectedOutputs(module, x)));
  await withServer({ concurrency: 2 }, async (url) => {
    const responses = await Promise.all(xs.map((x) => {
      const request = binaryRequest(undefined, x);
      return post(`${url}/v2/models/m/infer`, request.body, {
        "inference-header-content-length": String(request.headerLength),
      });
    }));
    for (const [r, response] of responses.entries()) {
      assert.equal(response.status, 200);
      const { data } = await binaryResponse(response);
      for (const name of ["y", "z", "e"]) assert.deepEqual(data[name], expected[r][name], `${r} ${name}`);
    }
  });
});

Deno.test("serve: --inline-max-us: a short forward alone in a one-slot server runs inline, same outputs", async () => {
  const module = await openModule();
  const expected = await expectedOutputs(module);
  module.dispose();
  const sequential = async (url: string) => {
    for (let i = 0; i < 6; i++) {
      const { body, headerLength } = binaryRequest();
      const response = await post(`${url}/v2/models/m/infer`, body, {
        "inference-header-content-length": String(headerLength),
      });
      assert.equal(response.status, 200);
      const { data } = await binaryResponse(response);
      assert.deepEqual(data, expected);
    }
  };
  // The first forward of a size goes to the pool (its time is unknown); the next run inline.
  await withServer({ concurrency: 1, inlineMaxUs: 1e6 }, async (url, server) => {
    await sequential(url);
    assert.equal(server.metrics.inlineCount("m"), 5);
    assert.match(server.metrics.render(), /^spindle_inline_forwards_total\{model="m"\} 5$/m);
    // Requests that overlap are not alone: at least one of them goes to the pool.
    const before = server.metrics.inlineCount("m");
    const { body, headerLength } = binaryRequest();
    const headers = { "inference-header-content-length": String(headerLength) };
    const responses = await Promise.all(
      Array.from({ length: 4 }, () => post(`${url}/v2/models/m/infer`, body, headers)),
    );
    for (const response of responses) assert.deepEqual((await binaryResponse(response)).data, expected);
    assert.ok(server.metrics.inlineCount("m") - before < 4);
  });
  // Off by default, for forwards longer than the bound, and with more than one slot.
  for (
    const options of [{ concurrency: 1 }, { concurrency: 1, inlineMaxUs: 1 }, { concurrency: 2, inlineMaxUs: 1e6 }]
  ) {
    await withServer(options, async (url, server) => {
      await sequential(url);
      assert.equal(server.metrics.inlineCount("m"), 0, JSON.stringify(options));
    });
  }
});

Deno.test("serve: infer paths answer the same the first time and from the resolved-path cache", async () => {
  const module = await openModule();
  const expected = await expectedOutputs(module);
  module.dispose();
  await withServer({}, async (url, server) => {
    const statuses: Record<string, number[]> = {};
    const paths = [
      "/v2/models/m/infer",
      "/v2/models/%6D/infer",
      "/v2/models/m/versions/1/infer",
      "/v2/models/m/infer/",
      "/v2/models/m/versions/2/infer",
      "/v2/models/nope/infer",
      "/v2/models/%E0%A4%A/infer",
    ];
    for (let round = 0; round < 2; round++) {
      for (const path of paths) {
        const { body, headerLength } = binaryRequest();
        const response = await post(`${url}${path}`, body, { "inference-header-content-length": String(headerLength) });
        (statuses[path] ??= []).push(response.status);
        if (response.status === 200) assert.deepEqual((await binaryResponse(response)).data, expected, path);
        else await response.body?.cancel();
      }
    }
    assert.deepEqual(statuses, {
      "/v2/models/m/infer": [200, 200],
      "/v2/models/%6D/infer": [200, 200],
      "/v2/models/m/versions/1/infer": [200, 200],
      "/v2/models/m/infer/": [200, 200],
      "/v2/models/m/versions/2/infer": [404, 404],
      "/v2/models/nope/infer": [404, 404],
      "/v2/models/%E0%A4%A/infer": [400, 400],
    });
    // Other methods on a resolved path still get their own answer.
    const get = await fetch(`${url}/v2/models/m/infer`);
    assert.equal(get.status, 405);
    await get.body?.cancel();
    assert.equal(server.metrics.count("m", 200), 8);
    assert.equal(server.metrics.count("_unknown", 404), 2);
    // 404s for another version of a served model count under its name.
    assert.equal(server.metrics.count("m", 404), 2);
  });
});

Deno.test("serve: a run's binary inputs and outputs are not reported to V8 as external memory; same outputs", async () => {
  const { builtinModel } = await import("../lib/models/builtin.ts");
  const built = builtinModel("example");
  const served = servedModule("ex", "builtin:example", built.module, () => built.dispose());
  try {
    const values = new Float32Array(64 * 1024).map((_, i) => Math.sin(i));
    using x = tensor(values, [64, 1024]);
    const [reference] = built.module.forwardAllSync(x);
    const expected = new Uint8Array((reference.toArray() as Float32Array).buffer);
    reference.dispose();
    const input = { dtype: "float32" as const, shape: [64, 1024], data: new Uint8Array(values.buffer) };
    for (const inline of [false, true]) {
      const into = new Uint8Array(expected.byteLength);
      const before = Deno.memoryUsage().external;
      // Reported, the 256 KB input and the 256 KB output would add 512 KB while finish runs.
      const grown = await served.run([input], ([output]) => {
        const grown = Deno.memoryUsage().external - before;
        output.read(into);
        return grown;
      }, { inline });
      assert.ok(grown < expected.byteLength / 2, `external memory grew ${grown} B (inline: ${inline})`);
      assert.deepEqual(into, expected);
    }
  } finally {
    served.dispose();
  }
});

Deno.test("serve: deadlines on one timer expire in order, once, and not when cancelled", async () => {
  const deadlines = new Deadlines();
  const expired: string[] = [];
  const late = deadlines.add(40, () => expired.push("late"));
  deadlines.add(10, () => expired.push("early"));
  const met = deadlines.add(5, () => expired.push("met"));
  deadlines.cancel(met);
  await new Promise((resolve) => setTimeout(resolve, 20));
  assert.deepEqual(expired, ["early"]);
  await new Promise((resolve) => setTimeout(resolve, 40));
  assert.deepEqual(expired, ["early", "late"]);
  deadlines.cancel(late); // already expired: nothing happens
  assert.equal(deadlines.size, 0);
});

Deno.test("serve: a repeated binary header is parsed from the plan cache, identically; other lengths are checked", () => {
  const inputs: TensorSpec[] = [
    { name: "x", dtype: "float32", shape: [-1, 4] },
    { name: "ids", dtype: "int64", shape: [-1, 2] },
  ];
  const outputs: TensorSpec[] = [{ name: "y", dtype: "float32", shape: [-1, 3] }];
  const plans = new Map<string, RequestPlan>();
  const request = binaryRequest();
  const header = String(request.headerLength);
  const first = parseInferRequest(request.body, header, inputs, outputs, plans);
  assert.equal(plans.size, 1);
  const again = binaryRequest(undefined, X.map((v) => v + 1));
  const second = parseInferRequest(again.body, header, inputs, outputs, plans);
  assert.deepEqual(second.outputs, first.outputs);
  assert.deepEqual(second.inputs.map((t) => [t.name, t.shape]), first.inputs.map((t) => [t.name, t.shape]));
  assert.deepEqual(second.inputs[0].data, again.body.subarray(request.headerLength, request.headerLength + 32));
  // The same header with a body cut short or too long is parsed in full and refused as before.
  assert.throws(
    () => parseInferRequest(request.body.subarray(0, request.body.length - 1), header, inputs, outputs, plans),
    /ends before its 32 bytes/,
  );
  const longer = new Uint8Array(request.body.length + 1);
  longer.set(request.body);
  assert.throws(() => parseInferRequest(longer, header, inputs, outputs, plans), /1 bytes after the tensors/);
});

Deno.test("serve: every error is JSON {error} with its status, and the server keeps serving", async () => {
  await withServer({ maxBody: 4096 }, async (url, server) => {
    const infer = `${url}/v2/models/m/infer`;
    const cases: [unknown, number, RegExp][] = [
      ['{"inputs": [', 400, /malformed JSON/],
      [[1, 2], 400, /JSON object with an 'inputs' array/],
      [
        { inputs: [{ name: "x", datatype: "FP16", shape: [2, 4], data: [1] }] },
        400,
        /datatype 'FP16' is not supported/,
      ],
      [{ inputs: [{ name: "x", datatype: "COMPLEX", shape: [2, 4], data: [1] }] }, 400, /'COMPLEX' is not a protocol/],
      [{ inputs: [{ name: "x", datatype: "INT32", shape: [2, 4], data: [1] }] }, 400, /is INT32; the model takes FP32/],
      [
        { inputs: [{ name: "x", datatype: "FP32", shape: [2, 5], data: [] }] },
        400,
        /does not match the model's \[-1, 4\]/,
      ],
      [{ inputs: [{ name: "x", datatype: "FP32", shape: [4], data: [] }] }, 400, /has 1 dims/],
      [
        { inputs: [{ name: "x", datatype: "FP32", shape: [1, 4], data: [1, 2, 3] }] },
        400,
        /3 elements; the shape needs 4/,
      ],
      [{ inputs: [{ name: "x", datatype: "FP32", shape: [1, 4], data: [1, 2, 3, "a"] }] }, 400, /element 3 is "a"/],
      [jsonRequest(2, X, IDS, { inputs: [jsonRequest().inputs[0]] }), 400, /missing input 'ids'/],
      [
        { inputs: [...jsonRequest().inputs, { name: "w", datatype: "FP32", shape: [1], data: [1] }] },
        400,
        /unknown input 'w'/,
      ],
      [jsonRequest(2, X, IDS, { outputs: [{ name: "q" }] }), 400, /unknown output 'q'; the model has 'y', 'z', 'e'/],
      [{ inputs: [{ name: "x", datatype: "FP32", shape: [2 ** 40, 2 ** 40], data: [] }] }, 400, /more elements than/],
      [jsonRequest(2, X, new BigInt64Array([1n, 2n, 3n, 99n])), 400, /rejected the inputs: .*(range|99)/],
      [{ inputs: [{ name: "x", datatype: "FP32", shape: [1, 4], data: [1, 2, 3, 4.5e300] }] }, 400, /missing input/],
    ];
    for (const [body, status, message] of cases) {
      const response = await post(infer, typeof body === "string" ? new TextEncoder().encode(body) : body);
      await expectError(response, status, message);
    }
    await expectError(
      await post(infer, jsonRequest(), { "content-encoding": "gzip" }),
      400,
      /Content-Encoding 'gzip' is not supported; send the body uncompressed/,
    );
    await expectError(await post(`${url}/v2/models/zz/infer`, jsonRequest()), 404, /unknown model 'zz'/);
    await expectError(await post(`${url}/v2/models/m/versions/7/infer`, jsonRequest()), 404, /no version '7'/);
    // Over --max-body: refused from Content-Length, and from a chunked body while streaming.
    await expectError(await post(infer, new Uint8Array(5000)), 413, /5000 bytes, over the 4096-byte limit/);
    let sent = 0;
    const chunks = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent++ < 10) controller.enqueue(new Uint8Array(1000));
        else controller.close();
      },
    });
    await expectError(await fetch(infer, { method: "POST", body: chunks }), 413, /over the 4096-byte limit/);
    // Binary framing that does not add up.
    const binary = binaryRequest();
    const framing: [string, Uint8Array, RegExp][] = [
      ["99999", binary.body, /Inference-Header-Content-Length is '99999'/],
      ["abc", binary.body, /Inference-Header-Content-Length is 'abc'/],
      [String(binary.headerLength), binary.body.subarray(0, binary.body.length - 3), /body ends before its 32 bytes/],
      [String(binary.headerLength), new Uint8Array([...binary.body, 0]), /1 bytes after the tensors/],
    ];
    for (const [length, body, message] of framing) {
      await expectError(await post(infer, body, { "inference-header-content-length": length }), 400, message);
    }
    const ok = await post(infer, jsonRequest());
    assert.equal(ok.status, 200);
    await ok.body?.cancel();
    const metrics = await (await fetch(`${url}/metrics`)).text();
    assert.match(metrics, /^spindle_requests_total\{model="m",status="200"\} 1$/m);
    assert.match(metrics, /^spindle_requests_total\{model="m",status="413"\} 2$/m);
    assert.match(metrics, /^spindle_requests_total\{model="_unknown",status="404"\} 1$/m);
    assert.match(metrics, /^spindle_compute_seconds_count\{model="m"\} \d+$/m);
    assert.match(metrics, /^spindle_queue_seconds_bucket\{model="m",le="\+Inf"\} \d+$/m);
    assert.match(metrics, /^spindle_batch_size_bucket\{model="m",le="1"\} \d+$/m);
    assert.match(metrics, /^spindle_queue_depth 0$/m);
    assert.match(metrics, /^spindle_intra_op_threads 1$/m);
    assert.match(metrics, /^spindle_inference_slots 2$/m);
    assert.ok(server.metrics.count("m", 400) >= 15);
  });
});

const ONE_ROW = { inputs: [{ name: "x", datatype: "FP32", shape: [1, 4], data: [1, 2, 3, 4] }] };

Deno.test("serve: a full queue is 503 with Retry-After, a passed deadline 504, a failing model 500", async () => {
  await withServer({ concurrency: 1, queue: 1 }, async (url) => {
    const responses = await Promise.all(Array.from({ length: 5 }, () => post(`${url}/v2/models/m/infer`, ONE_ROW)));
    const statuses = responses.map((r) => r.status).sort();
    assert.deepEqual(statuses, [200, 200, 503, 503, 503]);
    for (const response of responses) {
      if (response.status === 503) {
        assert.equal(response.headers.get("retry-after"), "1");
        await expectError(response, 503, /server is full .*--queue/);
      } else {
        await response.body?.cancel();
      }
    }
    // The slots and the queue are free again.
    assert.equal((await post(`${url}/v2/models/m/infer`, ONE_ROW).then((r) => (r.body?.cancel(), r))).status, 200);
  }, fakeModel(150));
  await withServer({ concurrency: 1, timeoutMs: 100 }, async (url, server) => {
    const [first, second] = await Promise.all([
      post(`${url}/v2/models/m/infer`, ONE_ROW),
      post(`${url}/v2/models/m/infer`, ONE_ROW),
    ]);
    await expectError(first, 504, /passed its \d+ ms deadline/);
    await expectError(second, 504, /passed its \d+ ms deadline/);
    // The slot comes back once the forward completes: later requests are served.
    await new Promise((resolve) => setTimeout(resolve, 400));
    assert.equal(server.metrics.count("m", 504), 2);
  }, fakeModel(300));
  await withServer({}, async (url) => {
    await expectError(await post(`${url}/v2/models/m/infer`, ONE_ROW), 500, /model 'm' failed: kernel exploded/);
    assert.equal((await fetch(`${url}/v2/health/live`).then((r) => (r.body?.cancel(), r))).status, 200);
  }, fakeModel(1, true));
});

Deno.test("serve: while shutting down, admitted requests finish and new ones get 503; then it stops", async () => {
  const server = await startServer(testOptions(fakeModel(300), { concurrency: 1, queue: 4 }));
  const url = `http://127.0.0.1:${server.port}`;
  const first = post(`${url}/v2/models/m/infer`, ONE_ROW);
  while (server.metrics.inflight === 0) await new Promise((resolve) => setTimeout(resolve, 2));
  const stopped = server.shutdown();
  const late = await post(`${url}/v2/models/m/infer`, ONE_ROW);
  assert.equal(late.headers.get("retry-after"), "1");
  await expectError(late, 503, /shutting down/);
  const ready = await fetch(`${url}/v2/health/ready`);
  assert.equal(ready.status, 503);
  await ready.body?.cancel();
  const answer = await first;
  assert.equal(answer.status, 200);
  assert.deepEqual((await answer.json()).outputs[0].data, [1, 2, 3, 4]);
  await stopped;
  await server.finished;
  await assert.rejects(fetch(`${url}/v2/health/live`));
});

Deno.test("serve: dynamic batching stacks concurrent requests into fewer forwards, outputs unchanged", async () => {
  using module = await openModule();
  const rows = 12;
  const xs = Array.from(
    { length: rows },
    (_, r) => Float32Array.from({ length: 4 }, (_, i) => Math.sin(r * 4 + i) * 3),
  );
  const ids = Array.from({ length: rows }, (_, r) => BigInt64Array.from([BigInt(r % 10), BigInt((r * 7) % 10)]));
  const expected = await Promise.all(xs.map((x, r) => expectedOutputs(module, x, ids[r], 1)));
  await withServer({ concurrency: 1, maxBatch: 8, batchDelayUs: 20_000 }, async (url, server) => {
    const config = await (await fetch(`${url}/v2/models/m/config`)).json();
    assert.equal(config.max_batch_size, 8);
    assert.deepEqual(config.input[0].dims, [4]);
    const bodies = xs.map((x, r) => jsonRequest(1, x, ids[r]));
    bodies[5] = jsonRequest(1, xs[5], new BigInt64Array([1n, 50n])); // out of range: fails alone
    const responses = await Promise.all(bodies.map((body) => post(`${url}/v2/models/m/infer`, body)));
    for (const [r, response] of responses.entries()) {
      const body = await response.json();
      if (r === 5) {
        assert.equal(response.status, 400, JSON.stringify(body));
        continue;
      }
      assert.equal(response.status, 200, JSON.stringify(body));
      for (const output of body.outputs) {
        assert.deepEqual(output.shape[0], 1);
        if (output.name !== "y") {
          assert.deepEqual(jsonBytes(output), expected[r][output.name], `${r} ${output.name}`);
          continue;
        }
        // A GEMM over 8 rows may block its sums differently from one over 1 row: the last bit may differ.
        const want = new Float32Array(expected[r].y.buffer);
        output.data.forEach((v: number, i: number) =>
          assert.ok(Math.abs(v - want[i]) <= 1e-6 * Math.max(1, Math.abs(want[i])))
        );
      }
    }
    const metrics = server.metrics.render();
    const forwards = Number(metrics.match(/^spindle_batch_size_count\{model="m"\} (\d+)$/m)![1]);
    const stacked = Number(metrics.match(/^spindle_batch_size_sum\{model="m"\} (\d+)$/m)![1]);
    assert.equal(stacked, rows);
    assert.ok(forwards < rows, `${forwards} forwards for ${rows} requests`);
  });
});

/** Sends raw bytes on a new connection; returns what came back before the server closed it (or `waitMs`). */
async function raw(port: number, chunks: (Uint8Array | number)[], waitMs = 3000): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const received: Uint8Array[] = [];
  const reading = (async () => {
    const buffer = new Uint8Array(65536);
    try {
      while (true) {
        const n = await conn.read(buffer);
        if (n === null) break;
        received.push(buffer.slice(0, n));
      }
    } catch { /* reset by the server */ }
  })();
  try {
    for (const chunk of chunks) {
      if (typeof chunk === "number") await new Promise((resolve) => setTimeout(resolve, chunk));
      else await conn.write(chunk).catch(() => {});
    }
    await Promise.race([reading, new Promise((resolve) => setTimeout(resolve, waitMs))]);
  } finally {
    try {
      conn.close();
    } catch { /* already closed */ }
  }
  await reading;
  return new TextDecoder().decode(new Uint8Array(received.flatMap((c) => [...c])));
}

function httpRequest(body: string | Uint8Array, contentLength: number, extra = ""): Uint8Array {
  const bytes = typeof body === "string" ? new TextEncoder().encode(body) : body;
  const head = new TextEncoder().encode(
    `POST /v2/models/m/infer HTTP/1.1\r\nhost: x\r\ncontent-length: ${contentLength}\r\n${extra}\r\n`,
  );
  return new Uint8Array([...head, ...bytes]);
}

Deno.test("serve: a forward still reading its request's body after a 504 sees it unchanged while the next request arrives", async () => {
  // Inputs are read in place (InputValues.borrow): this model checks, at the end of its slow
  // "forward", that the bytes it was given are those it started with.
  const slow = fakeModel(300);
  let runs = 0;
  let changed = 0;
  const watching: ServedModel = {
    ...slow,
    async run(inputs, finish, options) {
      const data = inputs[0].data as Uint8Array;
      const before = data.slice();
      const result = await slow.run(inputs, finish, options);
      runs++;
      if (!inputs[0].borrow || data.some((byte, i) => byte !== before[i])) changed++;
      return result;
    },
  };
  const binary = (rows: number, fill: number) => {
    const header = new TextEncoder().encode(JSON.stringify({
      inputs: [{ name: "x", datatype: "FP32", shape: [rows, 4], parameters: { binary_data_size: rows * 16 } }],
    }));
    const body = new Uint8Array(header.byteLength + rows * 16);
    body.set(header);
    new Float32Array(body.buffer, 0, body.byteLength >> 2).fill(fill, Math.ceil(header.byteLength / 4));
    body.fill(fill & 0xff, header.byteLength, header.byteLength + 3);
    return httpRequest(body, body.byteLength, `inference-header-content-length: ${header.byteLength}\r\n`);
  };
  await withServer({ concurrency: 2, timeoutMs: 100 }, async (_, server) => {
    // A large body (a pooled buffer the connection keeps) and a small one (its own buffer),
    // each followed, once the first is answered 504, by another on the same connection.
    for (const rows of [5000, 2]) {
      const text = await raw(server.port, [binary(rows, 1), 150, binary(rows, 2), 700], 1200);
      assert.deepEqual([...text.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => m[1]), ["504", "504"]);
    }
  }, watching);
  assert.equal(runs, 4);
  assert.equal(changed, 0);
});

Deno.test("serve: truncated, lying and slow bodies are answered or dropped, never hang the server", async () => {
  await withServer({ timeoutMs: 500, maxBody: 4096 }, async (url, server) => {
    const body = JSON.stringify(jsonRequest());
    // Truncated: Content-Length promises more than is sent, then the client goes quiet: 408.
    const slow = await raw(server.port, [httpRequest(body.slice(0, 40), body.length, "connection: close\r\n")]);
    assert.match(slow, /^HTTP\/1\.1 408 /);
    assert.match(slow, /did not arrive within the 500 ms deadline/);
    // Truncated then closed: nobody to answer, and the server carries on.
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    await conn.write(httpRequest(body.slice(0, 40), body.length));
    conn.close();
    // Lying Content-Length, shorter than the body: only the declared bytes are read (malformed JSON);
    // the rest is not taken as part of this request.
    const short = await raw(server.port, [httpRequest(body, 20, "connection: close\r\n")]);
    assert.match(short, /^HTTP\/1\.1 400 /);
    assert.match(short, /malformed JSON/);
    // A Content-Length over --max-body is refused before the body is read.
    const huge = await raw(server.port, [httpRequest("", 1e12, "connection: close\r\n")]);
    assert.match(huge, /^HTTP\/1\.1 413 /);
    // A slow but complete body within the deadline is served.
    const bytes = new TextEncoder().encode(body);
    const trickle = await raw(server.port, [
      httpRequest(bytes.subarray(0, 10), bytes.length, "connection: close\r\n"),
      100,
      bytes.subarray(10, 100),
      100,
      bytes.subarray(100),
    ]);
    assert.match(trickle, /^HTTP\/1\.1 200 /);
    const healthy = await fetch(`${url}/v2/health/ready`);
    assert.equal(healthy.status, 200);
    await healthy.body?.cancel();
  });
});

Deno.test("serve: 300 random mutations of valid requests get well-formed answers; RSS stays flat", async () => {
  await withServer({ maxBody: 1 << 16 }, async (url) => {
    const next = random(15);
    const binary = binaryRequest();
    const json = new TextEncoder().encode(JSON.stringify(jsonRequest()));
    const statuses = new Map<number, number>();
    const rssBefore = Deno.memoryUsage().rss;
    for (let i = 0; i < 300; i++) {
      const useBinary = next() < 0.5;
      const { body, header } = mutate(next, useBinary ? binary.body : json, useBinary ? binary.headerLength : null);
      const headers: Record<string, string> = header === undefined ? {} : { "inference-header-content-length": header };
      const response = await post(`${url}/v2/models/m/infer`, body, headers);
      statuses.set(response.status, (statuses.get(response.status) ?? 0) + 1);
      assert.ok([200, 400].includes(response.status), `mutation ${i}: status ${response.status}`);
      if (response.status === 200) {
        await response.body?.cancel();
      } else {
        const answer = await response.json();
        assert.equal(typeof answer.error, "string", `mutation ${i}`);
      }
    }
    const grown = Deno.memoryUsage().rss - rssBefore;
    console.log(
      `statuses ${JSON.stringify(Object.fromEntries(statuses))}, RSS grew ${(grown / 2 ** 20).toFixed(1)} MiB`,
    );
    assert.ok(grown < 64 * 2 ** 20, `RSS grew ${grown} bytes`);
    const healthy = await fetch(`${url}/v2/health/live`);
    assert.equal(healthy.status, 200);
    await healthy.body?.cancel();
  });
});

Deno.test("serve: binary NaN inputs flow through; JSON cannot carry NaN and says so", async () => {
  await withServer({}, async (url) => {
    const x = new Float32Array([NaN, 1, -Infinity, 2]);
    const header = new TextEncoder().encode(JSON.stringify({
      inputs: [
        { name: "x", datatype: "FP32", shape: [1, 4], parameters: { binary_data_size: 16 } },
        { name: "ids", datatype: "INT64", shape: [1, 2], data: [0, 1] },
      ],
      outputs: [{ name: "z", parameters: { binary_data: true } }],
    }));
    const response = await post(`${url}/v2/models/m/infer`, new Uint8Array([...header, ...new Uint8Array(x.buffer)]), {
      "inference-header-content-length": String(header.byteLength),
    });
    assert.equal(response.status, 200);
    const { data } = await binaryResponse(response);
    const z = new Float32Array(data.z.buffer);
    assert.ok(Number.isNaN(z[0]));
    assert.deepEqual([...z.subarray(1)], [1, 0, 2]);
    const bad = new TextEncoder().encode(
      '{"inputs":[{"name":"x","datatype":"FP32","shape":[1,4],"data":[NaN,1,2,3]}]}',
    );
    await expectError(await post(`${url}/v2/models/m/infer`, bad), 400, /malformed JSON/);
  });
});

Deno.test("serve CLI: startup log, and SIGTERM finishes in-flight requests then exits 0", async () => {
  // A batch of m waits up to 400 ms for more rows (--batch-delay-us), so the requests below
  // are still in flight when the signal comes however slow the machine is: with plain
  // forwards of example, a loaded CI machine answered all but one before the signal.
  const server = await startCli([
    "--model",
    "ex=builtin:example",
    "--model",
    `m=${MODEL_PATH}`,
    "--concurrency",
    "1",
    "--max-batch",
    "16",
    "--batch-delay-us",
    "400000",
  ]);
  const { port, child, lines } = server;
  let log = server.log;
  assert.match(
    log,
    /^model ex \(builtin:example\): inputs input0 FP32 \[64, 1024\]; outputs output0 FP32 \[64, 1024\]/m,
  );
  assert.match(log, /^model m \(.*\.onnx\): inputs x FP32 \[-1, 4\], ids INT64 \[-1, 2\]; outputs y FP32 \[-1, 3\]/m);
  assert.match(log, /^threads: intra-op \d+, inter-op \d+, inference slots 1 \(physical cores \d+\), queue 64/m);
  const inFlight = Array.from(
    { length: 6 },
    () => post(`http://127.0.0.1:${port}/v2/models/m/infer`, jsonRequest(2, X, IDS)),
  );
  // Signal once all six are admitted (requests arriving later get 503: the server stops accepting)
  // and at least two are still in flight.
  const metricsUrl = `http://127.0.0.1:${port}/metrics`;
  const giveUp = Date.now() + 30_000;
  let inflight = 0;
  while (Date.now() < giveUp) {
    const text = await (await fetch(metricsUrl)).text();
    inflight = Number(text.match(/^spindle_inflight_requests (\d+)$/m)?.[1]);
    const answered = Number(text.match(/^spindle_requests_total\{model="m",status="200"\} (\d+)$/m)?.[1] ?? 0);
    if (inflight + answered === 6) break;
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
  child.kill("SIGTERM");
  assert.ok(inflight >= 2, `${inflight} requests in flight at SIGTERM`);
  const responses = await Promise.all(inFlight);
  for (const response of responses) {
    const answer = await response.json();
    assert.equal(response.status, 200, JSON.stringify(answer));
    assert.equal(answer.outputs[0].shape.join("x"), "2x3");
  }
  const status = await child.status;
  for (let r = await lines.read(); !r.done; r = await lines.read()) log += r.value;
  await child.stderr.cancel();
  assert.equal(status.code, 0, log);
  assert.match(log, /serve: shutting down; finishing requests in flight\nserve: stopped/);
  await assert.rejects(fetch(`http://127.0.0.1:${port}/v2/health/live`));
});

Deno.test("serve CLI: an ONNX model with symbolic dims other than the batch serves requests of any size", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/symbolic.onnx`;
  await Deno.writeFile(
    path,
    onnx({
      opset: 17,
      nodes: [{ op: "Relu", inputs: ["x"], outputs: ["y"] }],
      initializers: [],
      inputs: [{ name: "x", dims: ["batch", "width"] }],
      outputs: [{ name: "y", dims: ["batch", "width"] }],
    }),
  );
  const { port, stop } = await startCli(["--model", `s=${path}`]);
  try {
    for (const width of [3, 5]) {
      const data = Array.from({ length: 2 * width }, (_, i) => i - width);
      const response = await post(`http://127.0.0.1:${port}/v2/models/s/infer`, {
        inputs: [{ name: "x", datatype: "FP32", shape: [2, width], data }],
      });
      assert.equal(response.status, 200);
      const { outputs } = await response.json();
      assert.deepEqual(outputs[0].shape, [2, width]);
      assert.deepEqual(outputs[0].data, data.map((v) => Math.max(v, 0)));
    }
  } finally {
    await stop();
    await Deno.remove(dir, { recursive: true });
  }
});

/** A `main.ts serve` process: its port, its stdout so far and the reader of the rest. */
interface CliServer {
  port: number;
  log: string;
  child: Deno.ChildProcess;
  lines: ReadableStreamDefaultReader<string>;
  /** SIGTERM, then waits for the exit and drops the rest of the output. */
  stop(): Promise<void>;
}

/** Starts `main.ts serve ARGS --port 0`; resolves once it listens. */
async function startCli(args: string[]): Promise<CliServer> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}/main.ts`, "serve", ...args, "--port", "0"],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let log = "";
  while (!/listening on http:\/\/127\.0\.0\.1:(\d+)/.test(log)) {
    const { done, value } = await lines.read();
    if (done) break;
    log += value;
  }
  const port = Number(log.match(/listening on http:\/\/127\.0\.0\.1:(\d+)/)?.[1]);
  const stop = async () => {
    child.kill("SIGTERM");
    await child.status;
    await lines.cancel().catch(() => {});
    await child.stderr.cancel();
  };
  if (!(port > 0)) {
    await stop();
    throw new Error(`serve did not start: ${log}`);
  }
  return { port, log, child, lines, stop };
}

Deno.test("serve CLI: a short forward alone runs inline by default with --concurrency 1, not with --inline-max-us 0", async () => {
  const module = await openModule();
  const expected = await expectedOutputs(module);
  module.dispose();
  for (const extra of [[], ["--inline-max-us", "0"]]) {
    const { port, stop } = await startCli(["--model", `m=${MODEL_PATH}`, "--concurrency", "1", ...extra]);
    try {
      // The first forward of a size goes to the pool (its time is unknown); the next run inline
      // once the recent runs' second smallest time is under the bound (a cold first run under
      // load can hold that off for a request or two).
      for (let i = 0; i < 8; i++) {
        const { body, headerLength } = binaryRequest();
        const response = await post(`http://127.0.0.1:${port}/v2/models/m/infer`, body, {
          "inference-header-content-length": String(headerLength),
        });
        assert.equal(response.status, 200);
        assert.deepEqual((await binaryResponse(response)).data, expected);
      }
      const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      const count = Number(metrics.match(/^spindle_inline_forwards_total\{model="m"\} (\d+)$/m)?.[1] ?? 0);
      if (extra.length === 0) assert.ok(count >= 4, `${count} of 8 forwards inline by default`);
      else assert.equal(count, 0, "with --inline-max-us 0");
    } finally {
      await stop();
    }
  }
});

Deno.test("serve CLI: bad flags are usage errors", async () => {
  const { runCli } = await import("./helpers.ts");
  const none = await runCli(["serve"]);
  assert.equal(none.code, 2);
  assert.match(none.stderr, /give at least one --model NAME=PATH/);
  const bad = await runCli(["serve", "--model", "nope"]);
  assert.match(bad.stderr, /--model expects NAME=PATH/);
  const builtin = await runCli(["serve", "--model", "a=builtin:zzz"]);
  assert.match(builtin.stderr, /unknown model 'builtin:zzz'/);
  const twice = await runCli(["serve", "--model", "a=builtin:mlp", "--model", "a=builtin:mlp"]);
  assert.match(twice.stderr, /names 'a' twice/);
  const missing = await runCli(["serve", "--model", "a=/nonexistent.spindle"]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /no model file at '\/nonexistent.spindle'/);
  const precision = await runCli(["serve", "--model", "a=builtin:mlp", "--precision", "f16"]);
  assert.equal(precision.code, 2);
  assert.match(precision.stderr, /--precision must be f32 or bf16, got 'f16'/);
  const inline = await runCli(["serve", "--model", "a=builtin:mlp", "--inline-max-us", "-5"]);
  assert.equal(inline.code, 2);
  assert.match(inline.stderr, /--inline-max-us expects an integer from 1 to 10000000, got '-5'/);
});

Deno.test("serve CLI: --input-shape applies to every model, or to one with MODEL:", async () => {
  const { inputShapesFor } = await import("../lib/cli/serve.ts");
  const models = new Set(["cls", "rec"]);
  const values = ["x=-1x3x48x192", "rec:x=-1x3x48x320", "input:0=1x2"];
  assert.deepEqual(inputShapesFor("cls", values, models), { x: [-1, 3, 48, 192], "input:0": [1, 2] });
  assert.deepEqual(inputShapesFor("rec", values, models), { x: [-1, 3, 48, 320], "input:0": [1, 2] });
  const { UsageError } = await import("../lib/cli/usage.ts");
  assert.throws(() => inputShapesFor("rec", ["rec:x=oops"], models), UsageError);
});

Deno.test("serve(): the API serves modules it does not own and checks its options", async () => {
  const { Module, relu, script, serve, zeros } = await import("../mod.ts");
  using x = zeros([2, 2]);
  using model = Module.fromScript(script((input) => relu(input)), [x], { inputNames: ["x"], outputNames: ["y"] });
  const server = await serve({ relu: model }, { port: 0, concurrency: 1 });
  const response = await post(`http://127.0.0.1:${server.port}/v2/models/relu/infer`, {
    inputs: [{ name: "x", datatype: "FP32", shape: [2, 2], data: [-1, 2, -3, 4] }],
  });
  assert.deepEqual((await response.json()).outputs, [{
    name: "y",
    datatype: "FP32",
    shape: [2, 2],
    data: [0, 2, 0, 4],
  }]);
  await server.shutdown();
  await server.finished;
  using again = model.forwardSync(x); // still the caller's, not disposed by the server
  assert.deepEqual(again.shape, [2, 2]);
  await assert.rejects(
    serve({ relu: model }, { port: 0, concurrency: 33 }),
    /concurrency must be an integer from 1 to 32/,
  );
  await assert.rejects(
    serve({ relu: model }, { port: 0, inlineMaxUs: -1 }),
    /inlineMaxUs must be an integer from 0 to 10000000/,
  );
  await assert.rejects(serve({ "a/b": model }, { port: 0 }), /model name 'a\/b'/);
  await assert.rejects(serve({ m: {} as typeof model }, { port: 0 }), /model 'm' is not a Module/);
});

/** A model that says its forwards take `recentUs` and whose forward takes `ms` (busy inline, as a real one). */
function timedFakeModel(recentUs: number, ms: number): ServedModel {
  const fake = fakeModel(ms);
  return {
    ...fake,
    recentMicros: () => recentUs,
    run(inputs, finish, options) {
      if (!options?.inline) return fake.run(inputs, finish, options);
      const until = performance.now() + ms;
      while (performance.now() < until) { /* the event loop is held, as by an inline forward */ }
      const { dtype, shape, data } = inputs[0];
      return Promise.resolve(finish([valuesOutput({ dtype, shape, data: data as Values["data"] })]));
    },
  };
}

Deno.test("serve: --inline-max-us keeps --timeout-ms: a request near its deadline goes to the pool, an inline forward past it is 504", async () => {
  // One request to a one-slot inline server with this deadline: its status and whether it ran inline.
  const once = async (timeoutMs: number, model: ServedModel) => {
    let result = { status: 0, inline: 0, timeouts: 0 };
    await withServer({ concurrency: 1, inlineMaxUs: 1e6, timeoutMs }, async (url, server) => {
      const response = await post(`${url}/v2/models/m/infer`, ONE_ROW);
      if (response.status === 504) await expectError(response, 504, /passed its \d+ ms deadline/);
      else await response.body?.cancel();
      result = {
        status: response.status,
        inline: server.metrics.inlineCount("m"),
        timeouts: server.metrics.count("m", 504),
      };
    }, model);
    return result;
  };
  // 30 ms lately against a 100 ms deadline: less than 4 times the run time left, so the pool.
  assert.deepEqual(await once(100, timedFakeModel(30_000, 5)), { status: 200, inline: 0, timeouts: 0 });
  // 1 ms lately, so inline; this forward takes 150 ms, past the 100 ms deadline: 504, as on the pool.
  assert.deepEqual(await once(100, timedFakeModel(1000, 150)), { status: 504, inline: 1, timeouts: 1 });
  // The same forward within a longer deadline is answered.
  assert.deepEqual(await once(1000, timedFakeModel(1000, 150)), { status: 200, inline: 1, timeouts: 0 });
});
