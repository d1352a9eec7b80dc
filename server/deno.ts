/**
 * The Deno adapter of the HTTP service: file access confined to the roots by real paths, a job runner that runs each
 * job in its own worker, and `Deno.serve`.
 *
 * @example
 * ```ts ignore
 * const server = await serve({ roots: ["./models"], port: 8787 });
 * console.log(`listening on ${server.url}`);
 * await server.shutdown();
 * ```
 * @module
 */

import { listBackends } from "../backends/registry.ts";
import { type CheckpointFiles, createApp, DEFAULT_MAX_UPLOAD_BYTES, type FileAccess } from "./app.ts";
import { HttpError } from "./errors.ts";
import { type JobContext, JobQueue, type JobRunner } from "./jobs.ts";
import { candidatePaths, isInside } from "./paths.ts";
import { JobCancelledError, type JobInput, type JobOutput } from "./pipeline.ts";
import type { SpecLimits } from "./spec.ts";
import type { StartMessage, WorkerReply } from "./worker_messages.ts";

/**
 * File access confined to `roots`: a requested path is refused (403) when it lies outside every root lexically (`..`
 * included), and again when its real path (symbolic links resolved) does; a model folder's entries that are links
 * must also stay inside, since the loaders open them.
 *
 * @param roots Folders jobs may read from; each must exist.
 * @throws {Deno.errors.NotFound} when a root does not exist; {TypeError} when one is not a folder or none is given.
 */
export async function createRootedFileAccess(roots: readonly string[]): Promise<FileAccess> {
  if (roots.length === 0) throw new TypeError("at least one root folder is needed");
  const real: string[] = [];
  for (const r of roots) {
    const p = await Deno.realPath(r);
    if (!(await Deno.stat(p)).isDirectory) throw new TypeError(`root ${r} is not a folder`);
    real.push(p);
  }
  const inside = (p: string) => real.some((r) => isInside(p, r));
  const outside = (path: string, how: string) =>
    new HttpError(403, "forbidden", `${JSON.stringify(path)} ${how} outside the server's root folders`);

  const resolve = async (path: string): Promise<{ path: string; info: Deno.FileInfo }> => {
    if (typeof path !== "string" || path.includes("\0")) throw new HttpError(400, "bad_request", "invalid path");
    const candidates = candidatePaths(path, real);
    if (candidates.length === 0) throw outside(path, "is");
    for (const candidate of candidates) {
      let resolved: string;
      try {
        resolved = await Deno.realPath(candidate);
      } catch (e) {
        if (e instanceof Deno.errors.NotFound) continue;
        throw new HttpError(400, "bad_request", `${JSON.stringify(path)}: ${(e as Error).message}`);
      }
      if (!inside(resolved)) throw outside(path, "leads (through a symbolic link)");
      return { path: resolved, info: await Deno.stat(resolved) };
    }
    throw new HttpError(400, "bad_request", `${JSON.stringify(path)}: no such file or folder under the roots`);
  };

  /** Every entry of `dir` that is a link must point inside the roots: the loaders open files by name there. */
  const checkEntries = async (dir: string, path: string) => {
    for await (const e of Deno.readDir(dir)) {
      if (!e.isSymlink) continue;
      let target: string;
      try {
        target = await Deno.realPath(`${dir}/${e.name}`);
      } catch {
        continue; // a dangling link opens nothing
      }
      if (!inside(target)) throw outside(`${path}/${e.name}`, "leads (through a symbolic link)");
    }
  };

  return {
    async resolveFile(path) {
      const r = await resolve(path);
      if (!r.info.isFile) throw new HttpError(400, "bad_request", `${JSON.stringify(path)} is not a file`);
      return r.path;
    },
    async resolveModel(path) {
      const r = await resolve(path);
      if (r.info.isFile) {
        if (!r.path.endsWith(".bin")) {
          throw new HttpError(
            400,
            "bad_request",
            `${JSON.stringify(path)}: expected a model folder or a llama2.c .bin`,
          );
        }
        // The tokenizer is looked for beside the checkpoint.
        await checkEntries(r.path.slice(0, r.path.lastIndexOf("/")) || "/", path.replace(/\/[^/]*$/, "") || ".");
      } else if (r.info.isDirectory) {
        await checkEntries(r.path, path.replace(/\/+$/, ""));
      } else {
        throw new HttpError(400, "bad_request", `${JSON.stringify(path)} is neither a file nor a folder`);
      }
      return r.path;
    },
  };
}

/**
 * Checkpoint files for the app: read from the folders jobs wrote (paths come from the job's output, never from the
 * request), deleted when a job is forgotten.
 */
export const denoCheckpointFiles: CheckpointFiles = {
  async open(dir, file) {
    try {
      const f = await Deno.open(`${dir}/${file}`, { read: true });
      const { size } = await f.stat();
      return { body: f.readable, size };
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return undefined;
      throw e;
    }
  },
  async remove(dir) {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  },
};

/** Options of {@link createWorkerRunner}. */
export interface WorkerRunnerOptions {
  /** Milliseconds a cancelled job may take to notice before its worker is terminated; default 5000. */
  readonly graceMs?: number;
  /** Idle workers kept warm for the next job; default 1. 0 = a fresh worker per job. */
  readonly keepWarm?: number;
  /** Milliseconds an idle worker is kept before it is terminated; default 30000. */
  readonly idleMs?: number;
  /** Folder where jobs write checkpoints (a subfolder each); none = jobs cannot save checkpoints. */
  readonly checkpointRoot?: string;
}

/** A job runner that owns workers: {@link WorkerRunner.close} terminates them. */
export interface WorkerRunner extends JobRunner<JobInput, JobOutput> {
  /** Terminates the idle workers; jobs must have finished (close the queue first). */
  close(): void;
}

interface IdleWorker {
  readonly worker: Worker;
  readonly timer: ReturnType<typeof setTimeout>;
}

/**
 * A runner that runs each job in a module worker (`server/worker.ts`), so jobs never block the server's event loop.
 * Workers that finished a job are kept warm (up to `keepWarm`, for `idleMs`): a fresh isolate costs a few hundred
 * milliseconds of module loading and compilation, more than a small job itself. Cancellation sets a shared flag the
 * job checks between steps; a job that has not stopped after `graceMs` has its worker terminated. A worker whose job
 * was cancelled or crashed is never reused.
 */
export function createWorkerRunner(options: WorkerRunnerOptions = {}): WorkerRunner {
  const { graceMs = 5000, keepWarm = 1, idleMs = 30_000, checkpointRoot } = options;
  const idle: IdleWorker[] = [];
  let closed = false;

  const take = (): Worker => {
    const w = idle.pop();
    if (w) {
      clearTimeout(w.timer);
      return w.worker;
    }
    return new Worker(new URL("./worker.ts", import.meta.url), { type: "module" });
  };
  const giveBack = (worker: Worker) => {
    if (closed || idle.length >= keepWarm) return worker.terminate();
    worker.onmessage = null;
    worker.onerror = null;
    const entry: IdleWorker = {
      worker,
      timer: setTimeout(() => {
        idle.splice(idle.indexOf(entry), 1);
        worker.terminate();
      }, idleMs),
    };
    idle.push(entry);
  };

  const run = (input: JobInput, ctx: JobContext) =>
    new Promise<JobOutput>((resolve, reject) => {
      if (ctx.signal.aborted) return reject(new JobCancelledError());
      const worker = take();
      const cancel = new SharedArrayBuffer(4);
      let settled = false;
      let graceTimer: ReturnType<typeof setTimeout> | undefined;
      const finish = (reusable: boolean, f: () => void) => {
        if (settled) return;
        settled = true;
        clearTimeout(graceTimer);
        ctx.signal.removeEventListener("abort", onAbort);
        if (reusable && !ctx.signal.aborted) giveBack(worker);
        else worker.terminate();
        f();
      };
      const onAbort = () => {
        Atomics.store(new Int32Array(cancel), 0, 1);
        graceTimer = setTimeout(() => finish(false, () => reject(new JobCancelledError())), graceMs);
      };
      ctx.signal.addEventListener("abort", onAbort);
      worker.onmessage = (e: MessageEvent<WorkerReply>) => {
        const m = e.data;
        if (m.type === "progress") ctx.progress(m.progress);
        else if (m.type === "done") finish(true, () => resolve(m.output as JobOutput));
        else {
          const err = m.cancelled ? new JobCancelledError() : Object.assign(new Error(m.error.message), {
            name: m.error.name,
          });
          finish(true, () => reject(err));
        }
      };
      worker.onerror = (e: ErrorEvent) => {
        // Handled here: an unhandled worker error would otherwise take the whole server down.
        e.preventDefault();
        finish(false, () => reject(new Error(`job worker failed: ${e.message}`)));
      };
      const bytes = input.upload?.bytes;
      // Hand a whole upload buffer over instead of copying it.
      const transfer = bytes && bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength &&
          bytes.buffer instanceof ArrayBuffer
        ? [bytes.buffer]
        : [];
      const message: StartMessage = { input, cancel, checkpointRoot };
      worker.postMessage(message, transfer);
    });

  return Object.assign(run, {
    close() {
      closed = true;
      for (const w of idle.splice(0)) clearTimeout(w.timer), w.worker.terminate();
    },
  });
}

/** Options of {@link serve}. */
export interface ServeOptions {
  /** Folders jobs may read models and texts from. */
  readonly roots: readonly string[];
  /** Default 127.0.0.1 (loopback: exposing the service is a deliberate choice). */
  readonly hostname?: string;
  /** Default 8787; 0 picks a free port. */
  readonly port?: number;
  /** Bearer token; none when undefined or empty. */
  readonly token?: string;
  /** Jobs running at once; default 1. */
  readonly maxJobs?: number;
  /** Jobs waiting beyond those; default 16. */
  readonly maxQueued?: number;
  /** Finished jobs kept; default 100. */
  readonly retain?: number;
  /** Largest request body in bytes; default 64 MiB. */
  readonly maxUploadBytes?: number;
  /** Backend of jobs that name none. */
  readonly backend?: string;
  /** Bounds on a job's size. */
  readonly limits?: SpecLimits;
  /** See {@link WorkerRunnerOptions.graceMs}. */
  readonly graceMs?: number;
  /** Idle workers kept warm; default `maxJobs`. See {@link WorkerRunnerOptions.keepWarm}. */
  readonly keepWarm?: number;
  /** Seconds between SSE keep-alives; default 15. */
  readonly heartbeatSeconds?: number;
  /**
   * Folder for the checkpoints jobs write (`"save"`); default a new temporary folder, removed at shutdown. Each
   * job's checkpoint is deleted when the job is forgotten (DELETE, or evicted beyond `retain`).
   */
  readonly checkpointDir?: string;
}

/** A running server. */
export interface PtqServer {
  /** `http://host:port`. */
  readonly url: string;
  readonly hostname: string;
  readonly port: number;
  /** The job queue (for statistics and tests). */
  readonly jobs: JobQueue<JobInput, JobOutput>;
  /** Where checkpoints are written. */
  readonly checkpointDir: string;
  /** Cancels every job, waits for them, and stops listening. */
  shutdown(): Promise<void>;
  /** Resolves when the server has stopped. */
  readonly finished: Promise<void>;
}

/**
 * Starts the service on `Deno.serve`.
 *
 * @throws {Deno.errors.NotFound} or {TypeError} for a bad root; {Deno.errors.AddrInUse} when the port is taken.
 */
export async function serve(options: ServeOptions): Promise<PtqServer> {
  const files = await createRootedFileAccess(options.roots);
  const ownDir = options.checkpointDir === undefined;
  const checkpointDir = options.checkpointDir ?? await Deno.makeTempDir({ prefix: "ptq-serve-" });
  const maxJobs = options.maxJobs ?? 1;
  const runner = createWorkerRunner({
    graceMs: options.graceMs,
    keepWarm: options.keepWarm ?? maxJobs,
    checkpointRoot: checkpointDir,
  });
  const jobs = new JobQueue<JobInput, JobOutput>(runner, {
    maxRunning: maxJobs,
    maxQueued: options.maxQueued ?? 16,
    retain: options.retain ?? 100,
  }, (output) => {
    if (output.checkpoint) denoCheckpointFiles.remove(output.checkpoint.dir);
  });
  const app = createApp({
    files,
    jobs,
    token: options.token,
    maxUploadBytes: options.maxUploadBytes ?? DEFAULT_MAX_UPLOAD_BYTES,
    backends: listBackends(),
    defaultBackend: options.backend,
    limits: options.limits,
    heartbeatSeconds: options.heartbeatSeconds,
    checkpoints: denoCheckpointFiles,
  });
  const server = Deno.serve({
    hostname: options.hostname ?? "127.0.0.1",
    port: options.port ?? 8787,
    onListen: () => {},
  }, app.fetch);
  const addr = server.addr;
  const host = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
  let stopping: Promise<void> | undefined;
  return {
    url: `http://${host}:${addr.port}`,
    hostname: addr.hostname,
    port: addr.port,
    jobs,
    checkpointDir,
    shutdown() {
      // Jobs first: their SSE streams end when they reach a final status, which lets the server drain.
      stopping ??= jobs.close().then(async () => {
        runner.close();
        await server.shutdown();
        if (ownDir) await Deno.remove(checkpointDir, { recursive: true }).catch(() => {});
      });
      return stopping;
    },
    finished: server.finished,
  };
}
