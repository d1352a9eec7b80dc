/**
 * Timing helpers for benchmarks: best-of-N wall time after a warm-up, so a busy machine inflates nothing but the
 * spread. Benchmarks report; they never assert.
 *
 * @module
 */

/**
 * Seconds of the fastest run of `fn`, after `warmup` untimed runs: at least `repeats` runs, and more until `minSeconds`
 * have passed (on a shared machine a few fast kernels can all land in one slow second).
 */
export async function bestSeconds(
  fn: () => unknown,
  { repeats = 3, warmup = 1, minSeconds = 0 } = {},
): Promise<number> {
  for (let i = 0; i < warmup; i++) await fn();
  let best = Infinity;
  const start = performance.now();
  for (let i = 0; i < repeats || (performance.now() - start) / 1000 < minSeconds; i++) {
    const t0 = performance.now();
    await fn();
    best = Math.min(best, (performance.now() - t0) / 1000);
  }
  return best;
}

/** A Markdown table from a header and rows of cells. */
export function markdownTable(header: string[], rows: (string | number)[][]): string {
  const line = (cells: (string | number)[]) => `| ${cells.join(" | ")} |`;
  return [line(header), line(header.map(() => "---")), ...rows.map(line)].join("\n");
}

/** A number with `digits` significant digits, for tables. */
export function fmt(x: number, digits = 3): string {
  if (!Number.isFinite(x)) return String(x);
  return x >= 10 ** digits ? x.toFixed(0) : x.toPrecision(digits);
}
