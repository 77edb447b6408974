/**
 * A small SVG line-plot writer for the sweeps (no dependencies): axes with ticks, one
 * polyline per series with markers, a legend, optional log-2 x axis.
 *
 * @module
 */

/** One line of a plot. */
export interface Series {
  label: string;
  points: [number, number][];
}

/** What to draw. */
export interface PlotOptions {
  title: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
  /** Log-2 x axis (thread counts). */
  logX?: boolean;
  width?: number;
  height?: number;
}

const COLORS = [
  "#1f77b4",
  "#ff7f0e",
  "#2ca02c",
  "#d62728",
  "#9467bd",
  "#8c564b",
  "#e377c2",
  "#7f7f7f",
  "#bcbd22",
  "#17becf",
];

function niceTicks(low: number, high: number, count = 5): number[] {
  if (!(high > low)) return [low];
  const raw = (high - low) / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * magnitude).find((s) => s >= raw) ?? raw;
  const ticks: number[] = [];
  for (let t = Math.ceil(low / step) * step; t <= high + 1e-9 * step; t += step) ticks.push(Number(t.toPrecision(12)));
  return ticks;
}

function escape(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

/** Renders the plot as an SVG document. */
export function renderSvg(options: PlotOptions): string {
  const width = options.width ?? 760;
  const height = options.height ?? 460;
  const margin = { left: 70, right: 200, top: 40, bottom: 55 };
  const plotWidth = width - margin.left - margin.right;
  const plotHeight = height - margin.top - margin.bottom;
  const all = options.series.flatMap((s) => s.points);
  const fx = (x: number) => (options.logX ? Math.log2(x) : x);
  const xs = all.map(([x]) => fx(x));
  const ys = all.map(([, y]) => y);
  let [xMin, xMax] = [Math.min(...xs), Math.max(...xs)];
  if (xMin === xMax) [xMin, xMax] = [xMin - 1, xMax + 1];
  const yMax = Math.max(...ys) * 1.08 || 1;
  const yMin = 0;
  const px = (x: number) => margin.left + ((fx(x) - xMin) / (xMax - xMin)) * plotWidth;
  const py = (y: number) => margin.top + plotHeight - ((y - yMin) / (yMax - yMin)) * plotHeight;
  const parts: string[] = [];
  parts.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12">`,
  );
  parts.push(`<rect width="${width}" height="${height}" fill="white"/>`);
  parts.push(
    `<text x="${width / 2 - margin.right / 2}" y="22" text-anchor="middle" font-size="15">${
      escape(options.title)
    }</text>`,
  );
  // Axes and ticks.
  parts.push(
    `<line x1="${margin.left}" y1="${margin.top + plotHeight}" x2="${margin.left + plotWidth}" y2="${
      margin.top + plotHeight
    }" stroke="black"/>`,
  );
  parts.push(
    `<line x1="${margin.left}" y1="${margin.top}" x2="${margin.left}" y2="${margin.top + plotHeight}" stroke="black"/>`,
  );
  const xTicks = options.logX
    ? Array.from({ length: Math.round(xMax - xMin) + 1 }, (_, i) => 2 ** (Math.round(xMin) + i))
    : niceTicks(xMin, xMax);
  for (const t of xTicks) {
    const x = px(t);
    parts.push(
      `<line x1="${x}" y1="${margin.top + plotHeight}" x2="${x}" y2="${margin.top + plotHeight + 5}" stroke="black"/>`,
    );
    parts.push(`<text x="${x}" y="${margin.top + plotHeight + 18}" text-anchor="middle">${t}</text>`);
  }
  for (const t of niceTicks(yMin, yMax)) {
    const y = py(t);
    parts.push(`<line x1="${margin.left - 5}" y1="${y}" x2="${margin.left + plotWidth}" y2="${y}" stroke="#e0e0e0"/>`);
    parts.push(`<text x="${margin.left - 8}" y="${y + 4}" text-anchor="end">${t}</text>`);
  }
  parts.push(
    `<text x="${margin.left + plotWidth / 2}" y="${height - 12}" text-anchor="middle">${escape(options.xLabel)}</text>`,
  );
  parts.push(
    `<text transform="translate(16 ${margin.top + plotHeight / 2}) rotate(-90)" text-anchor="middle">${
      escape(options.yLabel)
    }</text>`,
  );
  options.series.forEach((series, i) => {
    const color = COLORS[i % COLORS.length];
    const path = series.points.map(([x, y]) => `${px(x).toFixed(1)},${py(y).toFixed(1)}`).join(" ");
    parts.push(`<polyline fill="none" stroke="${color}" stroke-width="2" points="${path}"/>`);
    for (const [x, y] of series.points) {
      parts.push(`<circle cx="${px(x).toFixed(1)}" cy="${py(y).toFixed(1)}" r="3" fill="${color}"/>`);
    }
    const ly = margin.top + 10 + i * 18;
    parts.push(
      `<line x1="${margin.left + plotWidth + 15}" y1="${ly}" x2="${
        margin.left + plotWidth + 35
      }" y2="${ly}" stroke="${color}" stroke-width="2"/>`,
    );
    parts.push(`<text x="${margin.left + plotWidth + 40}" y="${ly + 4}">${escape(series.label)}</text>`);
  });
  parts.push("</svg>");
  return parts.join("\n") + "\n";
}

/** Writes rows as CSV (header from the first row's keys). */
export function toCsv(rows: Record<string, string | number>[]): string {
  if (rows.length === 0) return "";
  const keys = Object.keys(rows[0]);
  return [keys.join(","), ...rows.map((row) => keys.map((k) => String(row[k])).join(","))].join("\n") + "\n";
}
