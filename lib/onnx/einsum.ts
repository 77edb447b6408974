/**
 * ONNX Einsum, lowered at import to native ops: a repeated label in one operand takes the
 * diagonal (a reshape and a strided slice), a label no other operand and not the output
 * names is summed (`sum`), and operands are contracted pairwise, left to right, as one
 * batched `gemm` each: [batch…, kept labels of a, summed labels] × [batch…, summed labels,
 * kept labels of b], batch dims broadcasting as gemm's do. A final `sum` and `permute` give
 * the output's labels in order.
 *
 * @module
 */
import { shapeOf, unsupported, type Value } from "./graph.ts";
import { asDType, attrString, input, type NodeContext, reshapeTo } from "./ops.ts";

/**
 * A parsed equation: each operand's labels, one per dim, and the output's. Letters label
 * themselves; the dims an ellipsis stands for are labelled "…0", "…1", … counted from the
 * left of the widest ellipsis, so that narrower ones line up on the right (numpy's broadcast).
 */
export interface EinsumEquation {
  inputs: string[][];
  output: string[];
}

function malformed(equation: string, what: string): never {
  throw new RangeError(`Einsum's equation '${equation}' ${what}`);
}

/** The labels of one term: letters, and at most one "..." (returned as the index it sits at). */
function parseTerm(equation: string, term: string, which: string): { letters: string[]; ellipsisAt?: number } {
  const letters: string[] = [];
  let ellipsisAt: number | undefined;
  for (let i = 0; i < term.length; i++) {
    const c = term[i];
    if (c === ".") {
      if (term.slice(i, i + 3) !== "...") malformed(equation, `has a '.' in ${which} that is not part of '...'`);
      if (ellipsisAt !== undefined) malformed(equation, `has two ellipses in ${which}`);
      ellipsisAt = letters.length;
      i += 2;
    } else if (/^[A-Za-z]$/.test(c)) {
      letters.push(c);
    } else {
      malformed(equation, `has '${c}' in ${which}: terms hold letters and '...', separated by ',' and '->'`);
    }
  }
  return { letters, ellipsisAt };
}

function ellipsisLabels(count: number, width: number): string[] {
  return Array.from({ length: count }, (_, k) => `…${width - count + k}`);
}

/**
 * Parses an Einsum equation for operands of the given ranks. Spaces are ignored. Without
 * "->", the output is the ellipsis's dims, then the letters named once, in alphabetical
 * (ASCII) order, as numpy and ONNX say.
 *
 * @throws {RangeError} naming the equation and what is wrong with it.
 */
export function parseEinsum(equation: string, ranks: number[]): EinsumEquation {
  const text = equation.replace(/\s+/g, "");
  const sides = text.split("->");
  if (sides.length > 2) malformed(equation, "has more than one '->'");
  const terms = sides[0].split(",");
  if (terms.length !== ranks.length) {
    malformed(equation, `has ${terms.length} input terms for ${ranks.length} inputs`);
  }
  const parsed = terms.map((term, k) => parseTerm(equation, term, `input term ${k} ('${term}')`));
  const widths = parsed.map(({ letters, ellipsisAt }, k) => {
    const rank = ranks[k];
    if (ellipsisAt === undefined ? letters.length !== rank : letters.length > rank) {
      malformed(
        equation,
        `names ${letters.length} dims in input term ${k} ('${terms[k]}'), but input ${k} has rank ${rank}`,
      );
    }
    return rank - letters.length;
  });
  const width = Math.max(0, ...widths);
  const inputs = parsed.map(({ letters, ellipsisAt }, k) => {
    if (ellipsisAt === undefined) return letters;
    return [...letters.slice(0, ellipsisAt), ...ellipsisLabels(widths[k], width), ...letters.slice(ellipsisAt)];
  });
  const anyEllipsis = parsed.some((p) => p.ellipsisAt !== undefined);
  let output: string[];
  if (sides.length === 2) {
    const { letters, ellipsisAt } = parseTerm(equation, sides[1], `the output term ('${sides[1]}')`);
    if (ellipsisAt !== undefined && !anyEllipsis) malformed(equation, "has '...' in its output but in no input");
    const named = new Set<string>();
    for (const letter of letters) {
      if (named.has(letter)) malformed(equation, `names '${letter}' twice in its output`);
      if (!inputs.some((labels) => labels.includes(letter))) {
        malformed(equation, `has '${letter}' in its output but in no input term`);
      }
      named.add(letter);
    }
    // Dims under an ellipsis missing from the output are summed (numpy's rule).
    output = ellipsisAt === undefined
      ? letters
      : [...letters.slice(0, ellipsisAt), ...ellipsisLabels(width, width), ...letters.slice(ellipsisAt)];
  } else {
    const counts = new Map<string, number>();
    for (const labels of inputs) for (const l of labels) if (l.length === 1) counts.set(l, (counts.get(l) ?? 0) + 1);
    const once = [...counts].filter(([, c]) => c === 1).map(([l]) => l).sort();
    output = [...ellipsisLabels(width, width), ...once];
  }
  return { inputs, output };
}

/** Checks that each label has one size over all operands (under an ellipsis, 1 broadcasts). */
function checkSizes(equation: string, parsed: EinsumEquation, shapes: number[][]): void {
  const sizes = new Map<string, number>();
  parsed.inputs.forEach((labels, k) => {
    labels.forEach((label, axis) => {
      const size = shapes[k][axis];
      const known = sizes.get(label);
      if (known === undefined || known === 1 && label.startsWith("…")) {
        sizes.set(label, size);
      } else if (size !== known && !(size === 1 && label.startsWith("…")) && size >= 0 && known >= 0) {
        const what = label.startsWith("…") ? "a dim under '...'" : `label '${label}'`;
        malformed(equation, `gives ${what} sizes ${known} and ${size}, which do not match (input ${k}, dim ${axis})`);
      }
    });
  });
}

/** A value with a label per dim. */
interface Term {
  value: Value;
  labels: string[];
}

/** The product of sizes, or -1 when one of them is dynamic. */
function product(sizes: number[]): number {
  return sizes.some((s) => s < 0) ? -1 : sizes.reduce((p, q) => p * q, 1);
}

function permuteTo(n: NodeContext, term: Term, labels: string[]): Term {
  const dims = labels.map((l) => term.labels.indexOf(l));
  if (dims.every((d, i) => d === i)) return { value: term.value, labels };
  return { value: n.b.emit("permute", [term.value], { dims }), labels };
}

function sumOut(n: NodeContext, term: Term, drop: (label: string) => boolean): Term {
  const dims = term.labels.flatMap((l, i) => drop(l) ? [i] : []);
  if (dims.length === 0) return term;
  return {
    value: n.b.emit("sum", [term.value], { dims, keepdim: false }),
    labels: term.labels.filter((l) => !drop(l)),
  };
}

/** x[…, i, …, i, …] → x[…, i, …]: the two axes moved last, merged, and every (n+1)-th taken. */
function diagonal(n: NodeContext, term: Term): Term {
  let current = term;
  for (;;) {
    const label = current.labels.find((l, i) => current.labels.indexOf(l) !== i);
    if (label === undefined) return current;
    const first = current.labels.indexOf(label);
    const second = current.labels.indexOf(label, first + 1);
    const rest = current.labels.filter((_, i) => i !== first && i !== second);
    // The two axes go last (by position: the label names both).
    const dims = [...current.labels.keys()].filter((i) => i !== first && i !== second).concat([first, second]);
    const value = dims.every((d, i) => d === i) ? current.value : n.b.emit("permute", [current.value], { dims });
    const shape = shapeOf(value);
    const size = shape[shape.length - 1];
    if (size < 0) unsupported("Einsum's diagonal over a dynamic dimension");
    const flat = reshapeTo(n.b, value, [...shape.slice(0, -2), size * size]);
    const taken = n.b.emit("slice", [flat], { dim: -1, start: 0, end: size * size, step: size + 1 });
    current = { value: taken, labels: [...rest, label] };
  }
}

/** a and b contracted over their shared labels that `keep` lacks, as one batched gemm. */
function contract(n: NodeContext, a: Term, b: Term, keep: Set<string>): Term {
  const shared = a.labels.filter((l) => b.labels.includes(l));
  // A summed label that broadcasts (size 1 on one side) is summed on each side first.
  const sizeIn = (t: Term, l: string) => shapeOf(t.value)[t.labels.indexOf(l)];
  const uneven = shared.filter((l) => !keep.has(l) && sizeIn(a, l) !== sizeIn(b, l));
  if (uneven.length > 0) {
    a = sumOut(n, a, (l) => uneven.includes(l));
    b = sumOut(n, b, (l) => uneven.includes(l));
    return contract(n, a, b, keep);
  }
  const batch = shared.filter((l) => keep.has(l));
  const summed = shared.filter((l) => !keep.has(l));
  const aOnly = a.labels.filter((l) => !b.labels.includes(l));
  const bOnly = b.labels.filter((l) => !a.labels.includes(l));
  const left = permuteTo(n, a, [...batch, ...aOnly, ...summed]);
  const right = permuteTo(n, b, [...batch, ...summed, ...bOnly]);
  const dimsOf = (t: Term, labels: string[]) => labels.map((l) => sizeIn(t, l));
  const leftShape = [...dimsOf(left, batch), product(dimsOf(left, aOnly)), product(dimsOf(left, summed))];
  const rightShape = [...dimsOf(right, batch), product(dimsOf(right, summed)), product(dimsOf(right, bOnly))];
  // A group of one label needs no reshape: then dynamic sizes (a symbolic batch or
  // sequence) need none either.
  const single = (...groups: string[][]) => groups.every((g) => g.length === 1);
  const matrixA = single(aOnly, summed) ? left.value : reshapeTo(n.b, left.value, leftShape);
  const matrixB = single(summed, bOnly) ? right.value : reshapeTo(n.b, right.value, rightShape);
  const result = n.b.emit("gemm", [matrixA, matrixB]);
  const batchSizes = batch.map((l) => {
    const [p, q] = [sizeIn(a, l), sizeIn(b, l)];
    return p < 0 || q < 0 ? -1 : Math.max(p, q);
  });
  const outShape = [...batchSizes, ...dimsOf(left, aOnly), ...dimsOf(right, bOnly)];
  const value = single(aOnly, bOnly) ? result : reshapeTo(n.b, result, outShape);
  return { value, labels: [...batch, ...aOnly, ...bOnly] };
}

/** The Einsum handler (opset 12 on): float32 math, as Spindle's gemm does it. */
export function einsum(n: NodeContext): Value[] {
  const equation = attrString(n, "equation", "");
  const operands = n.inputs.map((_, k) => {
    const x = input(n, k);
    if (x.kind === "runtime" && x.dtype !== "float32") unsupported(`Einsum of ${x.dtype} tensors`);
    return asDType(x, "float32");
  });
  if (operands.length === 0) throw new RangeError("Einsum needs at least one input");
  const shapes = operands.map((x) => shapeOf(x));
  const parsed = parseEinsum(equation, shapes.map((s) => s.length));
  checkSizes(equation, parsed, shapes);
  const output = new Set(parsed.output);
  let terms: Term[] = operands.map((value, k) => diagonal(n, { value, labels: parsed.inputs[k] }));
  // Labels only one operand has and the output lacks are summed before any product.
  const namedElsewhere = (k: number, l: string) =>
    output.has(l) || terms.some((t, j) => j !== k && t.labels.includes(l));
  terms = terms.map((t, k) => sumOut(n, t, (l) => !namedElsewhere(k, l)));
  let combined = terms[0];
  for (let k = 1; k < terms.length; k++) {
    const keep = new Set([...output, ...terms.slice(k + 1).flatMap((t) => t.labels)]);
    combined = contract(n, combined, terms[k], keep);
  }
  combined = sumOut(n, combined, (l) => !output.has(l));
  return [permuteTo(n, combined, parsed.output).value];
}
