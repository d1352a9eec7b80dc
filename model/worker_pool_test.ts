import assert from "node:assert/strict";
import { BackendError, OptionError } from "../core/errors.ts";
import { startWorkerPool, type WorkerPool } from "./worker_pool.ts";

type Task = { id: number; value: number; delay: number; fail?: string };
type Reply = { id: number; value: number };

const URL_ = new URL("../tests/echo_worker.ts", import.meta.url);
const poolTest = (name: string, fn: () => Promise<void>) =>
  Deno.test({ name, sanitizeOps: false, sanitizeResources: false, fn });

/** Runs `values` as tasks; each reply's value goes to its index. */
async function collect(pool: WorkerPool<Task, Reply>, values: number[], delay = (_i: number) => 0, fail?: number) {
  const got: number[] = [];
  await pool.run(values.length, (i) => ({
    message: { id: i, value: values[i], delay: delay(i), fail: i === fail ? "option" : undefined },
  }), (i, r) => void (got[i] = r.value));
  return got;
}

poolTest("worker pool: every task answered once, whatever the order they finish in; runs queue", async () => {
  const pool = await startWorkerPool<Task, Reply>(URL_, 3, { kind: "init" }, "echo worker");
  try {
    const values = Array.from({ length: 10 }, (_, i) => i * i);
    assert.deepEqual(await collect(pool, values, (i) => (i % 3) * 15), values);
    // Two runs at once: the second waits for the first instead of mixing their replies.
    const [a, b] = await Promise.all([collect(pool, [1, 2, 3], () => 20), collect(pool, [4, 5, 6, 7])]);
    assert.deepEqual(a, [1, 2, 3]);
    assert.deepEqual(b, [4, 5, 6, 7]);
  } finally {
    pool.close();
  }
});

poolTest("worker pool: a failed task rejects with its class; the pool refuses later runs", async () => {
  const pool = await startWorkerPool<Task, Reply>(URL_, 2, { kind: "init" }, "echo worker");
  try {
    // Task 0 fails at once while task 1 is still under way in the other worker.
    await assert.rejects(collect(pool, [1, 2, 3], (i) => (i === 1 ? 200 : 0), 0), (e: Error) => {
      return e instanceof OptionError && e.message === "echo worker: bad task";
    });
    await assert.rejects(collect(pool, [1]), BackendError);
  } finally {
    pool.close();
  }
});

poolTest("worker pool: an abort rejects at once with its reason; a count below 1 is refused", async () => {
  const pool = await startWorkerPool<Task, Reply>(URL_, 2, { kind: "init" }, "echo worker");
  try {
    const controller = new AbortController();
    const t0 = performance.now();
    const run = pool.run(4, (i) => ({ message: { id: i, value: i, delay: 1000 } }), () => {}, controller.signal);
    setTimeout(() => controller.abort(new Error("stop")), 20);
    await assert.rejects(run, /stop/);
    assert.ok(performance.now() - t0 < 900, "not after the tasks under way");
  } finally {
    pool.close();
  }
  await assert.rejects(startWorkerPool(URL_, 0, { kind: "init" }, "echo worker"), OptionError);
});
