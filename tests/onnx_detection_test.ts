import assert from "node:assert/strict";
// A test peer kept out of deno.lock: run with --lock=deno.dev.lock, as tools/test.ts does.
// deno-lint-ignore no-import-prefix
import * as ort from "npm:onnxruntime-node@1.30.0";
import { importOnnx, SpindleError, tensor } from "../mod.ts";
import { Program } from "../lib/program/program.ts";
import { generator } from "./reference.ts";
import { type Initializer, onnx } from "../tools/fuzz_corpus.ts";

// ONNX NonMaxSuppression imported by Spindle and run by onnxruntime-node on the same boxes.

interface NmsCase {
  batches: number;
  classes: number;
  boxes: number;
  centerPointBox: 0 | 1;
  maxOutput?: number;
  iou?: number;
  score?: number;
  seed: number;
}

/** Boxes on a coarse grid (shared edges, equal and flipped boxes happen) and tied scores. */
function data(c: NmsCase): { boxes: Float32Array; scores: Float32Array } {
  const random = generator(c.seed);
  const grid = () => Math.floor(random() * 12) / 2 - 1;
  const boxes = Float32Array.from({ length: c.batches * c.boxes * 4 }, (_, i) => {
    const v = grid();
    return c.centerPointBox === 1 && i % 4 >= 2 ? Math.abs(v) : v;
  });
  const scores = Float32Array.from({ length: c.batches * c.classes * c.boxes }, () => Math.floor(random() * 8) / 8);
  return { boxes, scores };
}

function model(c: NmsCase): Uint8Array {
  const initializers: Initializer[] = [];
  const names = ["boxes", "scores", "", "", ""];
  if (c.maxOutput !== undefined) {
    initializers.push({ name: "max_output", dims: [1], int64: [c.maxOutput] });
    names[2] = "max_output";
  }
  if (c.iou !== undefined) {
    initializers.push({ name: "iou", dims: [1], float: [c.iou] });
    names[3] = "iou";
  }
  if (c.score !== undefined) {
    initializers.push({ name: "score", dims: [1], float: [c.score] });
    names[4] = "score";
  }
  while (names.at(-1) === "") names.pop();
  return onnx({
    opset: 11,
    nodes: [{
      op: "NonMaxSuppression",
      inputs: names,
      outputs: ["selected"],
      attributes: { center_point_box: { i: c.centerPointBox } },
    }],
    initializers,
    inputs: [
      { name: "boxes", dims: [c.batches, c.boxes, 4] },
      { name: "scores", dims: [c.batches, c.classes, c.boxes] },
    ],
    outputs: [{ name: "selected", type: 7, dims: ["selected", 3] }],
  });
}

function runSpindle(bytes: Uint8Array, boxes: Float32Array, scores: Float32Array, c: NmsCase) {
  const program = Program.load(importOnnx(bytes));
  const inputs = [tensor(boxes, [c.batches, c.boxes, 4]), tensor(scores, [c.batches, c.classes, c.boxes])];
  try {
    const [selected] = program.runSync(inputs);
    using _ = selected;
    return { shape: selected.shape, values: Array.from(selected.toArray() as BigInt64Array, Number) };
  } finally {
    program.dispose();
    for (const t of inputs) t.dispose();
  }
}

Deno.test("NonMaxSuppression matches onnxruntime on tied scores, flipped and degenerate boxes, both box formats", async () => {
  const cases: NmsCase[] = [];
  let seed = 1;
  for (const centerPointBox of [0, 1] as const) {
    for (const [maxOutput, iou, score] of [[3, 0.5, undefined], [100, 0, 0.25], [2, 1, undefined], [7, 0.3, 0.5]]) {
      cases.push({ batches: 2, classes: 3, boxes: 37, centerPointBox, maxOutput, iou, score, seed: seed++ });
    }
    cases.push({ batches: 1, classes: 1, boxes: 5, centerPointBox, seed: seed++ }); // no max: nothing selected
    cases.push({ batches: 3, classes: 2, boxes: 1, centerPointBox, maxOutput: 4, seed: seed++ });
  }
  for (const c of cases) {
    const bytes = model(c);
    const { boxes, scores } = data(c);
    const session = await ort.InferenceSession.create(bytes, { intraOpNumThreads: 1, interOpNumThreads: 1 });
    const results = await session.run({
      boxes: new ort.Tensor("float32", boxes, [c.batches, c.boxes, 4]),
      scores: new ort.Tensor("float32", scores, [c.batches, c.classes, c.boxes]),
    });
    await session.release();
    const want = results.selected;
    const got = runSpindle(bytes, boxes, scores, c);
    assert.deepEqual(got.shape, [...want.dims], JSON.stringify(c));
    assert.deepEqual(got.values, Array.from(want.data as BigInt64Array, Number), JSON.stringify(c));
  }
});

Deno.test("NonMaxSuppression refuses NaN scores at run time, and a bad center_point_box at import", () => {
  const c: NmsCase = { batches: 1, classes: 2, boxes: 3, centerPointBox: 0, maxOutput: 3, seed: 9 };
  const { boxes, scores } = data(c);
  scores[4] = NaN;
  assert.throws(
    () => runSpindle(model(c), boxes, scores, c),
    (error: unknown) =>
      error instanceof SpindleError && error.code === "invalid_argument" &&
      /the score of batch 0, class 1, box 1 is NaN/.test(error.message),
  );
  const bad = model({ ...c, centerPointBox: 2 as 0 });
  assert.throws(
    () => importOnnx(bad),
    (error: unknown) =>
      error instanceof SpindleError && error.code === "malformed_model" && /center_point_box is 2/.test(error.message),
  );
});

Deno.test("NonMaxSuppression's rows of any length feed the ops after it (the selected boxes gathered), as onnxruntime", async () => {
  // selected[:, 2] → Gather(boxes[0], ·): the usual post-processing of a one-batch detector.
  const c: NmsCase = { batches: 1, classes: 2, boxes: 29, centerPointBox: 0, maxOutput: 5, iou: 0.4, seed: 41 };
  const bytes = onnx({
    opset: 13,
    nodes: [
      { op: "NonMaxSuppression", inputs: ["boxes", "scores", "max_output", "iou"], outputs: ["selected"] },
      { op: "Gather", inputs: ["selected", "column"], outputs: ["index"], attributes: { axis: { i: 1 } } },
      { op: "Squeeze", inputs: ["boxes", "zero"], outputs: ["all_boxes"] },
      { op: "Gather", inputs: ["all_boxes", "index"], outputs: ["kept"], attributes: { axis: { i: 0 } } },
    ],
    initializers: [
      { name: "max_output", dims: [1], int64: [c.maxOutput!] },
      { name: "iou", dims: [1], float: [c.iou!] },
      { name: "column", dims: [], int64: [2] },
      { name: "zero", dims: [1], int64: [0] },
    ],
    inputs: [
      { name: "boxes", dims: [c.batches, c.boxes, 4] },
      { name: "scores", dims: [c.batches, c.classes, c.boxes] },
    ],
    outputs: [{ name: "kept", dims: ["kept", 4] }],
  });
  for (const seed of [41, 42, 43]) {
    const { boxes, scores } = data({ ...c, seed });
    const session = await ort.InferenceSession.create(bytes);
    const want = (await session.run({
      boxes: new ort.Tensor("float32", boxes, [c.batches, c.boxes, 4]),
      scores: new ort.Tensor("float32", scores, [c.batches, c.classes, c.boxes]),
    })).kept;
    await session.release();
    const program = Program.load(importOnnx(bytes));
    const inputs = [tensor(boxes, [c.batches, c.boxes, 4]), tensor(scores, [c.batches, c.classes, c.boxes])];
    try {
      const [kept] = program.runSync(inputs);
      using _ = kept;
      assert.deepEqual(kept.shape, [...want.dims]);
      assert.deepEqual(Array.from(kept.toArray() as Float32Array), Array.from(want.data as Float32Array));
    } finally {
      program.dispose();
      for (const t of inputs) t.dispose();
    }
  }
});
