/**
 * A worker for `model/worker_pool_test.ts`: answers `init`, then each task `{ id, value, delay, fail }` after `delay`
 * ms with `{ id, value }`, or with an error (an `OptionError` when `fail` is "option", a plain `Error` otherwise).
 *
 * @module
 */

/// <reference lib="deno.worker" />

import { OptionError } from "../core/errors.ts";
import { errorReply } from "../model/worker_pool.ts";

self.onmessage = async (e: MessageEvent<{ id?: number; value?: number; delay?: number; fail?: string }>) => {
  const { id = -1, value, delay = 0, fail } = e.data;
  await new Promise((resolve) => setTimeout(resolve, delay));
  if (fail) self.postMessage(errorReply(id, fail === "option" ? new OptionError("bad task") : new Error("broke")));
  else self.postMessage({ id, value });
};
