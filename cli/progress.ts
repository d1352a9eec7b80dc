/**
 * Progress for long CLI steps: a redrawn bar with rate and ETA on a terminal, a plain line every few seconds when
 * stderr is not a terminal, nothing at all when silenced (`--json`).
 *
 * @module
 */

/** A progress reporter for one step. */
export interface Progress {
  /** Reports `done` of `total` units; `note` is shown beside the bar. */
  update(done: number, total: number, note?: string): void;
  /** Ends the step with a final line. */
  finish(note?: string): void;
}

/** Options of {@link createProgress}. */
export interface ProgressOptions {
  /** Print nothing (machine-readable output on stdout). */
  readonly silent?: boolean;
  /** Unit shown in the rate ("windows", "layers"). */
  readonly unit?: string;
  /** Minimum seconds between plain lines when not on a terminal; default 5. */
  readonly plainInterval?: number;
}

const encoder = new TextEncoder();

function write(s: string): void {
  Deno.stderr.writeSync(encoder.encode(s));
}

function duration(s: number): string {
  if (!Number.isFinite(s)) return "?";
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)}s`;
  const m = Math.floor(s / 60);
  return m < 60 ? `${m}m${String(Math.round(s % 60)).padStart(2, "0")}s` : `${Math.floor(m / 60)}h${m % 60}m`;
}

/** A reporter for a step called `label`. */
export function createProgress(label: string, options: ProgressOptions = {}): Progress {
  const { silent = false, unit = "", plainInterval = 5 } = options;
  const tty = !silent && Deno.stderr.isTerminal();
  const start = performance.now();
  let lastPlain = -Infinity;
  let last = "";
  const line = (done: number, total: number, note = "") => {
    const s = (performance.now() - start) / 1000;
    const rate = s > 0 ? done / s : 0;
    const eta = rate > 0 ? (total - done) / rate : Infinity;
    const frac = total > 0 ? Math.min(1, done / total) : 0;
    const width = 24, filled = Math.round(frac * width);
    const bar = tty ? `[${"█".repeat(filled)}${"·".repeat(width - filled)}] ` : "";
    const rateText = rate >= 10 ? rate.toFixed(0) : rate.toPrecision(2);
    return `${label} ${bar}${done}/${total} ${unit ? `${rateText} ${unit}/s ` : ""}` +
      `${duration(s)} elapsed, ETA ${done >= total ? "0s" : duration(eta)}${note ? `  ${note}` : ""}`;
  };
  return {
    update(done, total, note) {
      if (silent) return;
      last = line(done, total, note);
      if (tty) write(`\r\x1b[2K${last}`);
      else if ((performance.now() - lastPlain) / 1000 >= plainInterval || done >= total) {
        lastPlain = performance.now();
        write(`${last}\n`);
      }
    },
    finish(note) {
      if (silent) return;
      const s = (performance.now() - start) / 1000;
      const text = `${label} done in ${duration(s)}${note ? `  ${note}` : ""}`;
      write(tty ? `\r\x1b[2K${text}\n` : `${text}\n`);
    },
  };
}
