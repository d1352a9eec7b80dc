/**
 * A small pool of module workers for the CPU passes over many windows (evaluation, calibration): each worker gets one
 * `init` message, then numbered tasks one at a time, claimed in order by whichever worker is free; every reply carries
 * its task's `id` (−1 for `init`) and either a result or an `error` message.
 *
 * @module
 */

/** What every reply of a pool worker carries. */
export type WorkerReply = { readonly id: number } & ({ readonly error: string } | Record<string, unknown>);

/** Workers started by {@link startWorkerPool}. */
export interface WorkerPool<Request, Reply extends WorkerReply> {
  /** Workers in the pool. */
  readonly size: number;
  /**
   * Runs tasks `0 … tasks−1`: `request(i)` is posted (with its transferables) to a free worker, and `onReply(i, reply)`
   * called when it answers. Resolves when all have answered.
   * @throws {Error} with a worker's message when a task fails (no more tasks are handed out), or the signal's reason
   *   at once on an abort.
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
 */
export async function startWorkerPool<Request, Reply extends WorkerReply>(
  url: URL,
  count: number,
  init: unknown,
  what: string,
): Promise<WorkerPool<Request, Reply>> {
  const workers = Array.from({ length: count }, () => new Worker(url.href, { type: "module" }));
  const ask = (worker: Worker, message: unknown, id: number, transfer: Transferable[] = []) =>
    new Promise<Reply>((resolve, reject) => {
      worker.onmessage = (e: MessageEvent<Reply>) => {
        const reply = e.data;
        if ("error" in reply) reject(new Error(`${what}: ${reply.error}`));
        else if (reply.id !== id) reject(new Error(`${what}: reply ${reply.id}, expected ${id}`));
        else resolve(reply);
      };
      worker.onerror = (e) => {
        e.preventDefault();
        reject(new Error(`${what}: ${e.message}`));
      };
      worker.postMessage(message, transfer);
    });
  const close = () => workers.forEach((w) => w.terminate());
  try {
    await Promise.all(workers.map((w) => ask(w, init, -1)));
  } catch (e) {
    close();
    throw e;
  }
  return {
    size: count,
    close,
    async run(tasks, request, onReply, signal) {
      signal?.throwIfAborted();
      let next = 0;
      const drive = async (worker: Worker) => {
        for (let i = next++; i < tasks; i = next++) {
          signal?.throwIfAborted();
          const { message, transfer } = request(i);
          onReply(i, await ask(worker, message, i, transfer));
        }
      };
      // An abort rejects at once, not after the tasks under way (the caller closes the pool).
      let onAbort = () => {};
      const aborted = new Promise<never>((_, reject) => {
        onAbort = () => reject(signal!.reason);
        signal?.addEventListener("abort", onAbort, { once: true });
      });
      try {
        await Promise.race([Promise.all(workers.slice(0, Math.max(1, Math.min(count, tasks))).map(drive)), aborted]);
      } finally {
        signal?.removeEventListener("abort", onAbort);
        next = tasks; // a failed or aborted run hands out no more work
      }
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
