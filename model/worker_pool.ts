/**
 * A small pool of module workers for the CPU passes over many windows (evaluation, calibration): each worker gets one
 * `init` message, then numbered tasks one at a time, claimed in order by whichever worker is free; every reply carries
 * its task's `id` (−1 for `init`) and either a result or an error ({@link errorReply}).
 *
 * @module
 */

import type { Backend } from "../core/backend.ts";
import {
  BackendError,
  ConvergenceError,
  NonFiniteError,
  OptionError,
  type PtqError,
  ShapeError,
} from "../core/errors.ts";

/** The default worker count: the cores the runtime reports, 1 where it reports none. */
export const DEFAULT_WORKERS: number = (typeof navigator !== "undefined" ? navigator.hardwareConcurrency : undefined) ??
  1;

/** @throws {OptionError} unless `workers` is a positive integer. */
export function checkWorkers(workers: number): void {
  if (!Number.isInteger(workers) || workers < 1) {
    throw new OptionError(`workers must be a positive integer, got ${workers}`);
  }
}

/** The backends a pool worker can run, single-threaded. */
export type PoolBackend = "wasm" | "ts";

/** A single-threaded backend of a pool: WASM of the given build, or the TS reference. */
export async function startPoolBackend(name: PoolBackend, relaxed?: boolean): Promise<Backend> {
  if (name === "wasm") return (await import("../backends/wasm/mod.ts")).createWasmBackend({ threads: 1, relaxed });
  return (await import("../backends/ts/mod.ts")).tsBackend;
}

/** What every reply of a pool worker carries. */
export type WorkerReply = { readonly id: number } & (WorkerError | Record<string, unknown>);

/** A worker's failure: the error's class name and message. */
export interface WorkerError {
  readonly error: string;
  readonly errorName?: string;
}

/** The reply a worker sends for a task that threw `err`. */
export function errorReply(id: number, err: unknown): { readonly id: number } & WorkerError {
  return err instanceof Error ? { id, error: err.message, errorName: err.name } : { id, error: String(err) };
}

/** The library's errors whose class survives the trip from a worker (the others arrive as `Error`). */
const ERROR_CLASSES: Record<string, new (message: string) => PtqError> = {
  ShapeError,
  NonFiniteError,
  OptionError,
  ConvergenceError,
  BackendError,
};

/** A worker's error rebuilt here, of the same class where it is one of the library's plain ones, its message prefixed. */
function rebuildError(reply: WorkerError, what: string): Error {
  const Class = reply.errorName ? ERROR_CLASSES[reply.errorName] : undefined;
  const message = `${what}: ${reply.error}`;
  return Class ? new Class(message) : new Error(message);
}

/** What a pool worker's module sees of its global scope. */
export interface WorkerScope {
  onmessage: ((e: MessageEvent) => void) | null;
  postMessage(message: unknown, transfer?: Transferable[]): void;
}

/**
 * The worker side of a pool: `start(init)` answers the message of kind "init" (its result is the worker's state), and
 * `handle(state, task)` each numbered task after it, as {@link startWorkerPool} expects: the task's `id` on every reply,
 * a failure replied by {@link errorReply}.
 * @param handle returns the reply's fields besides `id`, and what to transfer.
 */
export function servePool<Init extends { kind: "init" }, Task extends { id: number }, State>(
  scope: WorkerScope,
  what: string,
  start: (init: Init) => Promise<State>,
  handle: (state: State, task: Task) => Promise<{ reply?: Record<string, unknown>; transfer?: Transferable[] }>,
): void {
  let state: Promise<State> | undefined;
  scope.onmessage = async (e: MessageEvent<Init | Task>) => {
    const message = e.data;
    const id = "kind" in message && message.kind === "init" ? -1 : (message as Task).id;
    try {
      if (id === -1) {
        state = start(message as Init);
        await state;
        scope.postMessage({ id });
        return;
      }
      if (!state) throw new Error(`${what}: a task before init`);
      const { reply, transfer = [] } = await handle(await state, message as Task);
      scope.postMessage({ ...reply, id }, transfer);
    } catch (err) {
      scope.postMessage(errorReply(id, err));
    }
  };
}

/** Workers started by {@link startWorkerPool}. */
export interface WorkerPool<Request, Reply extends WorkerReply> {
  /** Workers in the pool. */
  readonly size: number;
  /**
   * Runs tasks `0 … tasks−1`: `request(i)` is posted (with its transferables) to a free worker, and `onReply(i, reply)`
   * called when it answers. Resolves when all have answered. Runs queue behind each other.
   * @throws {Error} (of the worker's error class where it is one of the library's) when a task fails: no more tasks
   *   are handed out, and the pool is unusable afterwards (its later runs reject); the signal's reason at once on an
   *   abort, with the same effect.
   */
  run(
    tasks: number,
    request: (i: number) => { message: Request; transfer?: Transferable[] },
    onReply: (i: number, reply: Reply) => void,
    signal?: AbortSignal,
  ): Promise<void>;
  /** Terminates the workers. */
  close(): void;
}

/**
 * Starts `count` workers of the module at `url` and sends each `init` (the reply to it is awaited).
 * @param what names the workers in error messages ("perplexity worker").
 * @throws {OptionError} unless `count` is a positive integer; a worker's error as {@link WorkerPool.run} does.
 */
export async function startWorkerPool<Request, Reply extends WorkerReply>(
  url: URL,
  count: number,
  init: unknown,
  what: string,
): Promise<WorkerPool<Request, Reply>> {
  if (!Number.isInteger(count) || count < 1) throw new OptionError(`${what}s: count must be ≥ 1, got ${count}`);
  const workers: Worker[] = [];
  const close = () => workers.forEach((w) => w.terminate());
  const ask = (worker: Worker, message: unknown, id: number, transfer: Transferable[] = []) =>
    new Promise<Reply>((resolve, reject) => {
      worker.onmessage = (e: MessageEvent<Reply>) => {
        const reply = e.data;
        if ("error" in reply) reject(rebuildError(reply as WorkerError, what));
        else if (reply.id !== id) reject(new Error(`${what}: reply ${reply.id}, expected ${id}`));
        else resolve(reply);
      };
      worker.onerror = (e) => {
        e.preventDefault();
        reject(new Error(`${what}: ${e.message}`));
      };
      worker.postMessage(message, transfer);
    });
  try {
    for (let i = 0; i < count; i++) workers.push(new Worker(url.href, { type: "module" }));
    await Promise.all(workers.map((w) => ask(w, init, -1)));
  } catch (e) {
    close();
    throw e;
  }
  // A failed or aborted run may leave tasks under way in other workers, whose late replies would answer the next
  // run's tasks: the pool is broken then, and refuses further runs.
  let broken: unknown;
  let queue = Promise.resolve();
  const runNow = async (
    tasks: number,
    request: (i: number) => { message: Request; transfer?: Transferable[] },
    onReply: (i: number, reply: Reply) => void,
    signal?: AbortSignal,
  ) => {
    if (broken) throw new BackendError(`${what}s unusable after an earlier failure: ${broken}`);
    signal?.throwIfAborted();
    let next = 0, live = true;
    const drive = async (worker: Worker) => {
      for (let i = next++; i < tasks; i = next++) {
        signal?.throwIfAborted();
        const { message, transfer } = request(i);
        const reply = await ask(worker, message, i, transfer);
        if (live) onReply(i, reply);
      }
    };
    // An abort rejects at once, not after the tasks under way.
    let onAbort = () => {};
    const aborted = new Promise<never>((_, reject) => {
      onAbort = () => reject(signal!.reason);
      signal?.addEventListener("abort", onAbort, { once: true });
    });
    try {
      await Promise.race([Promise.all(workers.slice(0, Math.min(count, tasks)).map(drive)), aborted]);
    } catch (e) {
      broken = e instanceof Error ? e.message : String(e);
      throw e;
    } finally {
      live = false;
      signal?.removeEventListener("abort", onAbort);
      next = tasks; // hand out no more work
    }
  };
  return {
    size: count,
    close,
    run(tasks, request, onReply, signal) {
      const result = queue.then(() => runNow(tasks, request, onReply, signal));
      queue = result.catch(() => undefined);
      return result;
    },
  };
}

/**
 * `value` with every Float32Array in it copied into one `SharedArrayBuffer` (arrays and objects that are one stay one,
 * as a tied embedding's are), so that posting it to workers shares the arrays instead of copying them. Returns `value`
 * itself where the runtime has no `SharedArrayBuffer`.
 */
export function shareFloatArrays<T>(value: T): T {
  if (typeof SharedArrayBuffer === "undefined") return value;
  const arrays = new Set<Float32Array>();
  const collect = (v: unknown): void => {
    if (v instanceof Float32Array) arrays.add(v);
    else if (Array.isArray(v)) v.forEach(collect);
    else if (v && typeof v === "object" && !ArrayBuffer.isView(v)) Object.values(v).forEach(collect);
  };
  collect(value);
  let floats = 0;
  for (const a of arrays) floats += a.length;
  const buffer = new SharedArrayBuffer(floats * 4);
  const copies = new Map<Float32Array, Float32Array>();
  let offset = 0;
  for (const a of arrays) {
    const copy = new Float32Array(buffer, offset * 4, a.length);
    copy.set(a);
    copies.set(a, copy);
    offset += a.length;
  }
  // Objects met twice (a tied embedding's matrix) are rebuilt once, so they stay one object.
  const rebuilt = new Map<object, unknown>();
  const rebuild = (v: unknown): unknown => {
    if (v instanceof Float32Array) return copies.get(v);
    if (!v || typeof v !== "object" || ArrayBuffer.isView(v)) return v;
    if (!rebuilt.has(v)) {
      rebuilt.set(
        v,
        Array.isArray(v) ? v.map(rebuild) : Object.fromEntries(Object.entries(v).map(([k, x]) => [k, rebuild(x)])),
      );
    }
    return rebuilt.get(v);
  };
  return rebuild(value) as T;
}

/** A Float32Array of `length` zeros in shared memory where the runtime has it (an ordinary one otherwise). */
export function sharedFloats(length: number): Float32Array {
  return typeof SharedArrayBuffer === "undefined"
    ? new Float32Array(length)
    : new Float32Array(new SharedArrayBuffer(length * 4));
}
