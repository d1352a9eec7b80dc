/**
 * Load on the HTTP service: `--jobs` small jobs (RTN 4-bit on the bundled stories260K, evaluated on one short window)
 * submitted at once by concurrent clients, each then following its job's SSE stream to the end. Reports throughput,
 * submission and completion latencies, how responsive `/health` stayed meanwhile, and that every job was accounted
 * for (none lost, none failed). The server runs in this process with jobs in workers, on a free loopback port.
 *
 * Usage: `deno run -A bench/server_load.ts [--jobs 50] [--max-jobs 2] [--method rtn]`
 *
 * @module
 */

import { parseArgs } from "node:util";
import { PtqClient, PtqHttpError } from "../server/client.ts";
import { serve } from "../server/deno.ts";
import { fmt, markdownTable } from "./timing.ts";

const { values } = parseArgs({
  options: {
    jobs: { type: "string", default: "50" },
    "max-jobs": { type: "string", default: "2" },
    method: { type: "string", default: "rtn" },
  },
});
const count = Number(values.jobs), maxJobs = Number(values["max-jobs"]);
const data = new URL("../examples/data/", import.meta.url).pathname;
const text = (await Deno.readTextFile(`${data}/tinystories/tinystories-valid.txt`)).slice(0, 4000);

const server = await serve({ roots: [data], port: 0, maxJobs, maxQueued: count });
const client = new PtqClient(server.url);
const spec = {
  model: "stories260K/stories260K.bin",
  method: values.method,
  bits: 4,
  seqlen: 64,
  windows: 1,
  "eval-text": text,
  ...(values.method === "rtn" ? {} : { "calib-text": text, samples: 4 }),
};

const quantile = (xs: number[], q: number) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(q * xs.length))];

// Probe /health every 100 ms while the jobs run: the event loop must stay free with jobs in workers.
const healthMs: number[] = [];
let probing = true;
const probe = (async () => {
  while (probing) {
    const t = performance.now();
    await (await fetch(`${server.url}/health`)).body?.cancel();
    healthMs.push(performance.now() - t);
    await new Promise((r) => setTimeout(r, 100));
  }
})();

const submitMs: number[] = [], doneMs: number[] = [];
/** Seconds inside each job (from its summary) and from start to finish as the queue saw it: the difference is the
 * per-job overhead (worker start-up, module loading, messages). */
const inJob: number[] = [], runSeconds: number[] = [];
const outcome = new Map<string, number>();
const t0 = performance.now();
try {
  await Promise.all(Array.from({ length: count }, async () => {
    const start = performance.now();
    let status: string;
    try {
      const job = await client.submit(spec);
      submitMs.push(performance.now() - start);
      const view = await client.wait(job.id);
      status = view.status;
      if (status === "succeeded") {
        const summary = await client.result(job.id);
        if (!Number.isFinite(summary.ppl["eval-text"])) status = "bad ppl";
        inJob.push(Object.values(summary.seconds).reduce((a, b) => a + b, 0));
        runSeconds.push((Date.parse(view.finishedAt!) - Date.parse(view.startedAt!)) / 1000);
      }
    } catch (e) {
      status = e instanceof PtqHttpError ? `http ${e.status}` : `error ${(e as Error).message}`;
    }
    doneMs.push(performance.now() - start);
    outcome.set(status, (outcome.get(status) ?? 0) + 1);
  }));
} finally {
  probing = false;
  await probe;
}
const seconds = (performance.now() - t0) / 1000;
const stats = server.jobs.stats();
await server.shutdown();

const succeeded = outcome.get("succeeded") ?? 0;
console.log(
  `\n## Server load: ${count} concurrent ${values.method} jobs on stories260K, ${maxJobs} at a time (jobs in workers)\n`,
);
console.log(markdownTable(["measure", "value"], [
  ["wall seconds", fmt(seconds)],
  ["jobs / second", fmt(count / seconds)],
  ["succeeded / submitted", `${succeeded} / ${stats.submitted}`],
  ["outcomes", [...outcome].map(([k, v]) => `${k}: ${v}`).join(", ")],
  ["submit latency p50 / p95 ms", `${fmt(quantile(submitMs, 0.5))} / ${fmt(quantile(submitMs, 0.95))}`],
  ["completion latency p50 / p95 s", `${fmt(quantile(doneMs, 0.5) / 1000)} / ${fmt(quantile(doneMs, 0.95) / 1000)}`],
  [
    "per job: running / inside the job, mean s",
    `${fmt(runSeconds.reduce((a, b) => a + b, 0) / runSeconds.length)} / ${
      fmt(inJob.reduce((a, b) => a + b, 0) / inJob.length)
    }`,
  ],
  [
    "/health during load p50 / max ms",
    `${fmt(quantile(healthMs, 0.5))} / ${fmt(Math.max(...healthMs))} (${healthMs.length} probes)`,
  ],
  ["queue counters", JSON.stringify(stats)],
]));
const lost = count - [...outcome.values()].reduce((a, b) => a + b, 0);
if (lost !== 0 || succeeded !== count || stats.succeeded !== count) {
  console.error(`LOST OR FAILED JOBS: ${count - succeeded} of ${count}`);
  Deno.exitCode = 1;
}
