import assert from "node:assert/strict";
import { randn } from "../mod.ts";
import { encodeImage, type NodeDescription, type ProgramSource } from "../lib/program/format.ts";
import { Program } from "../lib/program/program.ts";
import { forkBranches } from "../lib/onnx/branches.ts";
import { dropDeadConstants } from "../lib/onnx/fuse.ts";

function wave(count: number, phase: number): number[] {
  return Array.from({ length: count }, (_, i) => Math.sin(i * 0.37 + phase));
}

/** x [1, 4, 6, 6] fans out into three conv chains that meet in adds; one also feeds an output. */
function fanOut(): ProgramSource {
  const weight = (phase: number) => ({
    dtype: "float32" as const,
    shape: [4, 4, 3, 3],
    data: new Uint8Array(Float32Array.from(wave(144, phase)).buffer),
  });
  const conv = (input: number, weightValue: number, output: number): NodeDescription => ({
    op: "conv2d",
    inputs: [input, weightValue],
    outputs: [output],
    params: { padding: [1, 1], activation: "relu" },
  });
  return {
    tensors: [weight(0), weight(1), weight(2)],
    graphs: [{
      inputs: [{ dtype: "float32", shape: [1, 4, 6, 6] }],
      values: 14,
      nodes: [
        { op: "constant", outputs: [1], tensor: 0 },
        { op: "constant", outputs: [2], tensor: 1 },
        { op: "constant", outputs: [3], tensor: 2 },
        { op: "relu", inputs: [0], outputs: [4] },
        conv(4, 1, 5),
        { op: "sigmoid", inputs: [5], outputs: [6] },
        conv(4, 2, 7),
        conv(4, 3, 8),
        { op: "tanh", inputs: [8], outputs: [9] },
        { op: "add", inputs: [6, 7], outputs: [10] },
        { op: "add", inputs: [10, 9], outputs: [11] },
        conv(11, 1, 12),
        { op: "neg", inputs: [12], outputs: [13] },
      ],
      outputs: [13, 12],
    }],
  };
}

Deno.test("forkBranches forks all but one heavy chain of a fan-out and computes the same", async () => {
  const source = fanOut();
  const forked = structuredClone(source);
  const count = forkBranches(forked, {
    spec: (v) => (v === 4 ? { dtype: "float32", shape: [1, 4, 6, 6] } : undefined),
  });
  dropDeadConstants(forked);
  assert.equal(count, 2);
  assert.equal(forked.graphs.length, 3);
  const ops = forked.graphs[0].nodes.map((n) => n.op).filter((op) => op !== "constant");
  assert.deepEqual(ops, ["relu", "fork", "fork", "conv2d", "tanh", "wait", "wait", "add", "add", "conv2d", "neg"]);
  assert.deepEqual(forked.graphs[1].nodes.map((n) => n.op), ["constant", "conv2d", "sigmoid"]);
  // The conv after the join reads a value with one reader: not a branch.
  const plain = Program.load(encodeImage(source));
  const parallel = Program.load(encodeImage(forked));
  try {
    using x = randn([1, 4, 6, 6], { seed: 5 });
    const want = plain.runSync([x]);
    for (const got of [parallel.runSync([x]), await parallel.run([x])]) {
      got.forEach((t, i) => {
        assert.deepEqual(t.toArray(), want[i].toArray());
        t.dispose();
      });
    }
    want.forEach((t) => t.dispose());
  } finally {
    plain.dispose();
    parallel.dispose();
  }
});

Deno.test("forkBranches leaves graphs without heavy branches, or without value specs, alone", () => {
  const light = fanOut();
  for (const node of light.graphs[0].nodes) if (node.op === "conv2d") node.op = "relu";
  for (const node of light.graphs[0].nodes) if (node.op === "relu") node.inputs = node.inputs!.slice(0, 1);
  assert.equal(forkBranches(light, { spec: () => ({ dtype: "float32", shape: [1, 4, 6, 6] }) }), 0);
  assert.equal(forkBranches(fanOut(), { spec: () => undefined }), 0);
});
