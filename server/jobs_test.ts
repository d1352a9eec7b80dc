import { deepEqual, equal, ok, throws } from "node:assert/strict";
import { type JobContext, type JobEvent, JobQueue, QueueFullError } from "./jobs.ts";
import { candidatePaths, isInside, normalizePath } from "./paths.ts";

/** A runner whose jobs finish when the test says so, reporting one progress step first. */
function controlledRunner() {
  const gates = new Map<number, { resolve: (v: number) => void; reject: (e: Error) => void }>();
  const runner = (n: number, ctx: JobContext) =>
    new Promise<number>((resolve, reject) => {
      ctx.progress({ phase: "quantize", done: 0, total: 1, fraction: 0 });
      gates.set(n, { resolve, reject });
      ctx.signal.addEventListener("abort", () => reject(new Error("aborted")));
    });
  return { runner, gates };
}

Deno.test("jobs: concurrency, queue order, a full queue, events", async () => {
  const { runner, gates } = controlledRunner();
  const q = new JobQueue<number, number>(runner, { maxRunning: 2, maxQueued: 1 });
  const a = q.submit(1), b = q.submit(2), c = q.submit(3);
  deepEqual([a.status, b.status, c.status], ["running", "running", "queued"]);
  equal(c.position, 0);
  throws(() => q.submit(4), QueueFullError);
  const events: JobEvent[] = [];
  q.subscribe(c.id, (e) => events.push(e));
  gates.get(1)!.resolve(10);
  equal((await q.settled(a.id))!.output, 10);
  await Promise.resolve();
  equal(q.get(c.id)!.status, "running", "c starts when a slot frees");
  gates.get(2)!.reject(new TypeError("boom"));
  const failed = await q.settled(b.id);
  deepEqual(failed!.job.error, { name: "TypeError", message: "boom" });
  gates.get(3)!.resolve(30);
  await q.settled(c.id);
  deepEqual(events.map((e) => e.type === "status" ? e.job.status : e.progress.phase), [
    "running",
    "quantize",
    "succeeded",
  ]);
  deepEqual({ ...q.stats() }, {
    running: 0,
    queued: 0,
    retained: 3,
    submitted: 3,
    succeeded: 2,
    failed: 1,
    cancelled: 0,
    rejected: 1,
  });
});

Deno.test("jobs: cancel queued and running jobs; close; retain", async () => {
  const { runner, gates } = controlledRunner();
  const q = new JobQueue<number, number>(runner, { maxRunning: 1, maxQueued: 5, retain: 1 });
  const a = q.submit(1), b = q.submit(2);
  equal(q.cancel(b.id)!.status, "cancelled", "a queued job is cancelled at once");
  const view = q.cancel(a.id)!;
  equal(view.status, "running");
  equal(view.cancelRequested, true);
  equal((await q.settled(a.id))!.job.status, "cancelled");
  equal(q.get(b.id), undefined, "only the newest finished job is retained");
  ok(q.remove(a.id));
  equal(q.get(a.id), undefined);
  const c = q.submit(3);
  equal(q.remove(c.id), false, "a running job is not removed");
  await q.close();
  equal(q.get(c.id)!.status, "cancelled");
  throws(() => q.submit(4), /closed/);
  equal(gates.size, 2);
});

Deno.test("paths: normalization and confinement", () => {
  equal(normalizePath("/srv/a/../b/./c//"), "/srv/b/c");
  equal(normalizePath("/../.."), "/");
  equal(normalizePath("../a"), "../a");
  ok(isInside("/srv/root/x", "/srv/root"));
  ok(isInside("/srv/root", "/srv/root"));
  ok(!isInside("/srv/rootkit", "/srv/root"), "a sibling with the same prefix is outside");
  deepEqual(candidatePaths("models/m", ["/a", "/b"]), ["/a/models/m", "/b/models/m"]);
  deepEqual(candidatePaths("../b/x", ["/a"]), []);
  deepEqual(candidatePaths("/b/x/../../a/y", ["/a"]), ["/a/y"]);
  deepEqual(candidatePaths("/etc/passwd", ["/a"]), []);
});
