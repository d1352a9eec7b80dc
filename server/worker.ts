/**
 * The Deno worker that runs one job (see `server/deno.ts`). Jobs run off the main thread because ptq's kernels are
 * CPU-bound and resolve as microtasks: on the server's own thread a job would hold the event loop for its whole
 * length, and no request (a status query, an SSE write, a cancellation) would be served meanwhile.
 *
 * Messages: in, `{ input, cancel }` where `cancel` is a one-element shared Int32Array that the server sets to 1 to
 * cancel (a posted message would only be read once the job yields to the event loop, which it never does); out,
 * `{ type: "progress", progress }`, then `{ type: "done", output }` or `{ type: "error", error, cancelled }`. A worker may run several jobs, one after
 * the other.
 *
 * @module
 */

import { loadModel } from "../model/load.ts";
import { saveQuantized } from "../model/save.ts";
import { executeJob, JobCancelledError, type JobIo } from "./pipeline.ts";
import type { StartMessage, WorkerReply } from "./worker_messages.ts";

/** At most this many progress messages per second (phase changes and phase ends always go). */
const PROGRESS_PER_SECOND = 20;

/** File access of a job; checkpoints go to a new folder under `checkpointRoot`. */
function jobIo(checkpointRoot: string | undefined): JobIo {
  return {
    loadModel: (path) => loadModel(path),
    readText: (path) => Deno.readTextFile(path),
    saveCheckpoint: checkpointRoot === undefined ? undefined : async (format, model, layers, source) => {
      const dir = await Deno.makeTempDir({ dir: checkpointRoot, prefix: "job-" });
      try {
        // GGUF is one file; the other formats are folders, written into `dir` itself.
        const gguf = format.startsWith("gguf");
        const r = await saveQuantized(gguf ? `${dir}/model.gguf` : dir, format, model, layers, source);
        const files = r.files.map((f) => f.slice(f.lastIndexOf("/") + 1));
        return { format, dir, files, bytes: r.bytes, notes: r.notes };
      } catch (e) {
        await Deno.remove(dir, { recursive: true }).catch(() => {});
        throw e;
      }
    },
  };
}

// The worker global scope, typed by hand: this file is type-checked with the main thread's libs.
const scope = globalThis as unknown as {
  onmessage: ((e: MessageEvent<StartMessage>) => void) | null;
  postMessage(message: WorkerReply): void;
};

// One job at a time: the server sends the next only after this one's "done" or "error".
scope.onmessage = async (e) => {
  const { input, cancel, checkpointRoot } = e.data;
  const flag = new Int32Array(cancel);
  let lastSent = 0;
  let lastPhase = "";
  try {
    const output = await executeJob(input, jobIo(checkpointRoot), {
      aborted: () => Atomics.load(flag, 0) !== 0,
      progress: (progress) => {
        const now = performance.now();
        if (
          progress.phase === lastPhase && progress.done < progress.total && now - lastSent < 1000 / PROGRESS_PER_SECOND
        ) {
          return;
        }
        lastSent = now;
        lastPhase = progress.phase;
        scope.postMessage({ type: "progress", progress });
      },
    });
    scope.postMessage({ type: "done", output });
  } catch (err) {
    const error = err instanceof Error
      ? { name: err.name, message: err.message }
      : { name: "Error", message: String(err) };
    scope.postMessage({ type: "error", error, cancelled: err instanceof JobCancelledError });
  }
};
