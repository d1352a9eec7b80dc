/**
 * A worker for `model/worker_pool_test.ts`: answers `init`, then each task `{ id, value, delay, fail }` after `delay`
 * ms with `{ id, value }`, or with an error (an `OptionError` when `fail` is "option", a plain `Error` otherwise).
 *
 * @module
 */

/// <reference lib="deno.worker" />

import { OptionError } from "../core/errors.ts";
import { servePool } from "../model/worker_pool.ts";

type Task = { id: number; value: number; delay?: number; fail?: string };

servePool<{ kind: "init" }, Task, null>(self, "echo worker", () => Promise.resolve(null), async (_, task) => {
  await new Promise((resolve) => setTimeout(resolve, task.delay ?? 0));
  if (task.fail) throw task.fail === "option" ? new OptionError("bad task") : new Error("broke");
  return { reply: { value: task.value } };
});
