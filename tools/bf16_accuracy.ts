/**
 * How far the bf16 precision moves PaddleOCR's outputs from f32 (issue 16): each model loaded
 * twice, `load(file)` and `load(file, { precision: "bf16" })`, run on the same synthetic
 * inputs, and compared:
 * - cls: max abs and max relative error of the class probabilities, top-1 agreement;
 * - rec: max abs error of the per-step character probabilities, and whether greedy CTC
 *   decoding (ppocr_keys_v1.txt) gives the same text;
 * - det: max abs error of the probability map, and the IoU of the maps thresholded at 0.3.
 *
 * The inputs are text-like images drawn here (dark strokes of random widths on a light,
 * slightly noisy background, in lines of "characters"), normalised as PaddleOCR does
 * (rec/cls: x/255·2 − 1; det: ImageNet mean and std), plus plain random ones for cls.
 *
 *   tools/deno run -A tools/bf16_accuracy.ts [--count 32]
 *
 * Measured (--count 64, AMX, with the direct 3×3 kernel): cls max abs 4.0e-3, top-1 64/64;
 * rec max abs 0.53 (a character probability), CTC text equal 60/64; det max abs 0.27 on the
 * map, IoU at 0.3 at least 0.9969. So bf16 is safe for cls and for det's thresholded boxes, not for rec where
 * the exact text of low-confidence lines matters: there, stay f32 (OpenVINO's bf16 default
 * moves rec's probabilities by up to 0.53 too).
 *
 * @module
 */
import { parseArgs } from "node:util";
import { bf16Supported, load, type Module, tensor } from "../mod.ts";

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const ASSETS = `${ROOT}/.cache/models/package/assets`;

const { values: flags } = parseArgs({ args: Deno.args, options: { count: { type: "string", default: "32" } } });
const COUNT = Number(flags.count);
if (!Number.isInteger(COUNT) || COUNT < 2) {
  throw new RangeError(`--count must be a whole number >= 2, got ${flags.count}`);
}

/** A fixed-seed generator (xorshift32), so every run draws the same images. */
function random(seed: number): () => number {
  let state = seed >>> 0 || 1;
  return () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) / 2 ** 32;
  };
}

/**
 * A grey text-like image (height × width, values 0..255): `lines` rows of glyph-sized dark
 * boxes made of a few vertical and horizontal strokes.
 */
function textImage(height: number, width: number, lines: number, seed: number): Float32Array {
  const next = random(seed);
  const image = new Float32Array(height * width);
  const background = 200 + next() * 50;
  for (let i = 0; i < image.length; i++) image[i] = background + (next() - 0.5) * 12;
  const lineHeight = Math.floor(height / lines);
  for (let line = 0; line < lines; line++) {
    const glyph = Math.max(6, Math.floor(lineHeight * (0.5 + next() * 0.3)));
    const top = line * lineHeight + Math.floor((lineHeight - glyph) / 2);
    let x = Math.floor(next() * glyph);
    const end = width - Math.floor(next() * width * 0.3);
    while (x + glyph < end) {
      const strokes = 2 + Math.floor(next() * 3);
      const ink = 20 + next() * 60;
      for (let s = 0; s < strokes; s++) {
        const vertical = next() < 0.6;
        const thickness = 1 + Math.floor(next() * Math.max(1, glyph / 8));
        const at = Math.floor(next() * (glyph - thickness));
        for (let dy = 0; dy < glyph; dy++) {
          for (let dx = 0; dx < glyph; dx++) {
            const inside = vertical ? dx >= at && dx < at + thickness : dy >= at && dy < at + thickness;
            if (inside) image[(top + dy) * width + x + dx] = ink;
          }
        }
      }
      x += glyph + Math.floor(next() * glyph * 0.6) + (next() < 0.15 ? glyph : 0);
    }
  }
  return image;
}

/** [3, h, w] from a grey image, normalised per channel as (v/255 − mean)/std. */
function normalise(grey: Float32Array, mean: number[], std: number[]): Float32Array {
  const out = new Float32Array(3 * grey.length);
  for (let c = 0; c < 3; c++) {
    for (let i = 0; i < grey.length; i++) out[c * grey.length + i] = (grey[i] / 255 - mean[c]) / std[c];
  }
  return out;
}

function run(module: Module, data: Float32Array, shape: number[]): Float32Array {
  using x = tensor(data, shape);
  using y = module.forwardSync(x);
  return y.toArray() as Float32Array;
}

interface Errors {
  abs: number;
  rel: number;
}

/** Max abs error, and max error relative to the largest f32 magnitude (1 for probabilities). */
function errors(expected: Float32Array, got: Float32Array, into: Errors): void {
  let scale = 0;
  for (const v of expected) scale = Math.max(scale, Math.abs(v));
  for (let i = 0; i < expected.length; i++) {
    const difference = Math.abs(expected[i] - got[i]);
    into.abs = Math.max(into.abs, difference);
    into.rel = Math.max(into.rel, difference / Math.max(scale, 1e-12));
  }
}

function argmax(values: Float32Array, begin: number, count: number): number {
  let best = 0;
  for (let i = 1; i < count; i++) if (values[begin + i] > values[begin + best]) best = i;
  return best;
}

/** Greedy CTC: the argmax per step, repeats merged, blanks (0) dropped. */
function ctcDecode(probabilities: Float32Array, steps: number, classes: number, keys: string[]): string {
  let text = "";
  let previous = -1;
  for (let t = 0; t < steps; t++) {
    const index = argmax(probabilities, t * classes, classes);
    if (index !== 0 && index !== previous) text += keys[index - 1] ?? "?";
    previous = index;
  }
  return text;
}

if (!bf16Supported()) {
  console.log("bf16 is not supported on this CPU or kernel level: both loads would be f32; nothing to compare");
  Deno.exit(0);
}
const load2 = async (file: string, shape: number[]) => {
  const inputShapes = { x: shape };
  return [
    await load(`${ASSETS}/${file}`, { inputShapes }),
    await load(`${ASSETS}/${file}`, { inputShapes, precision: "bf16" }),
  ];
};
const rows: string[][] = [];

// cls: text images (upright) and plain random inputs.
{
  const [f32, bf16] = await load2("ch_ppocr_mobile_v2.0_cls_infer.onnx", [1, 3, 48, 192]);
  const e: Errors = { abs: 0, rel: 0 };
  let agree = 0;
  let closest = Infinity;
  for (let i = 0; i < COUNT; i++) {
    const next = random(7000 + i);
    const data = i % 2 === 0
      ? normalise(textImage(48, 192, 1, 100 + i), [0.5, 0.5, 0.5], [0.5, 0.5, 0.5])
      : Float32Array.from({ length: 3 * 48 * 192 }, () => next() * 2 - 1);
    const a = run(f32, data, [1, 3, 48, 192]);
    const b = run(bf16, data, [1, 3, 48, 192]);
    errors(a, b, e);
    if (argmax(a, 0, 2) === argmax(b, 0, 2)) agree++;
    closest = Math.min(closest, Math.abs(a[0] - a[1]));
  }
  rows.push([
    "cls",
    `${COUNT} (half text, half random)`,
    e.abs.toExponential(2),
    e.rel.toExponential(2),
    `top-1 ${agree}/${COUNT} (closest f32 margin ${closest.toFixed(3)})`,
  ]);
  f32.dispose();
  bf16.dispose();
}

// rec: one text line per input, greedy CTC text compared.
{
  const keys = (await Deno.readTextFile(`${ASSETS}/ppocr_keys_v1.txt`)).split("\n").filter((k) => k.length > 0);
  keys.push(" ");
  const [f32, bf16] = await load2("ch_PP-OCRv4_rec_infer.onnx", [1, 3, 48, 320]);
  const e: Errors = { abs: 0, rel: 0 };
  let same = 0;
  let example = "";
  for (let i = 0; i < COUNT; i++) {
    const data = normalise(textImage(48, 320, 1, 200 + i), [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]);
    const a = run(f32, data, [1, 3, 48, 320]);
    const b = run(bf16, data, [1, 3, 48, 320]);
    errors(a, b, e);
    const classes = keys.length + 1;
    const steps = a.length / classes;
    const textA = ctcDecode(a, steps, classes, keys);
    const textB = ctcDecode(b, steps, classes, keys);
    if (textA === textB) same++;
    else if (example === "") example = ` first difference: '${textA}' vs '${textB}'`;
  }
  rows.push([
    "rec",
    `${COUNT} text lines`,
    e.abs.toExponential(2),
    e.rel.toExponential(2),
    `CTC text equal ${same}/${COUNT}${example}`,
  ]);
  f32.dispose();
  bf16.dispose();
}

// det: text pages at 640×640, the probability map thresholded at 0.3.
{
  const [f32, bf16] = await load2("ch_PP-OCRv4_det_infer.onnx", [1, 3, 640, 640]);
  const e: Errors = { abs: 0, rel: 0 };
  const pages = Math.max(2, Math.floor(COUNT / 8));
  let worstIou = 1;
  let pixels = 0;
  for (let i = 0; i < pages; i++) {
    const data = normalise(textImage(640, 640, 12 + (i % 4) * 4, 300 + i), [0.485, 0.456, 0.406], [
      0.229,
      0.224,
      0.225,
    ]);
    const a = run(f32, data, [1, 3, 640, 640]);
    const b = run(bf16, data, [1, 3, 640, 640]);
    errors(a, b, e);
    let both = 0;
    let either = 0;
    for (let p = 0; p < a.length; p++) {
      const x = a[p] > 0.3;
      const y = b[p] > 0.3;
      if (x && y) both++;
      if (x || y) either++;
    }
    pixels += either;
    worstIou = Math.min(worstIou, either === 0 ? 1 : both / either);
  }
  rows.push([
    "det",
    `${pages} text pages 640x640`,
    e.abs.toExponential(2),
    e.rel.toExponential(2),
    `IoU at 0.3: worst ${worstIou.toFixed(4)} (${pixels} text pixels)`,
  ]);
  f32.dispose();
  bf16.dispose();
}

console.log("bf16 against f32 on PaddleOCR (same inputs; error relative to the largest f32 output)");
console.log(["model", "inputs", "max abs", "max rel", "agreement"].join(" | "));
for (const row of rows) console.log(row.join(" | "));
