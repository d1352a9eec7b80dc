/**
 * The WASM backend's runtime: instantiates one of the generated modules over one linear memory, lays kernel operands
 * out in a growable arena, serialises kernel calls, and fans work out to Web Workers that share the memory.
 *
 * Memory is shared (and workers are started) only where `SharedArrayBuffer`, `Worker` and shared WebAssembly memories
 * exist; otherwise the module's shared-memory import is patched to a plain one and everything runs on the calling
 * thread. Work is split by output blocks whose arithmetic does not depend on the split, so results are bit-identical
 * for any thread count.
 *
 * @module
 */

import { BackendError } from "../../core/errors.ts";
import { SOURCE_HASH as RELAXED_HASH, WASM_BASE64 as RELAXED_WASM } from "./generated/relaxed.ts";
import { SOURCE_HASH as SIMD_HASH, WASM_BASE64 as SIMD_WASM } from "./generated/simd.ts";
import { workerMain } from "./worker.ts";

/** The numeric exports of the module (every kernel takes and returns numbers). */
export type Exports = Record<string, (...args: number[]) => number>;

/** One kernel invocation: export name and arguments. */
export type Call = readonly [name: string, ...args: number[]];

/** Workers are terminated after this long without work, so that an idle backend does not keep a program alive. */
const IDLE_MS = 500;
/** Largest memory the module may grow to, in 64 KiB pages (4 GiB, the 32-bit limit). */
const MAX_PAGES = 65536;

function decodeBase64(b64: string): Uint8Array<ArrayBuffer> {
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** The module bytes of a build, and the hash of the sources it came from. */
export function moduleBytes(relaxed: boolean): { bytes: Uint8Array<ArrayBuffer>; hash: string } {
  return relaxed ? { bytes: decodeBase64(RELAXED_WASM), hash: RELAXED_HASH } : {
    bytes: decodeBase64(SIMD_WASM),
    hash: SIMD_HASH,
  };
}

/** Whether this engine accepts the relaxed-SIMD build (Node 20 does not without a flag). */
export function relaxedSimdSupported(): boolean {
  try {
    return WebAssembly.validate(moduleBytes(true).bytes);
  } catch {
    return false;
  }
}

/** Whether threads can be used here: shared memories, `SharedArrayBuffer` and Web Workers all exist. */
export function threadsSupported(): boolean {
  if (typeof SharedArrayBuffer !== "function" || typeof Worker !== "function") return false;
  try {
    return new WebAssembly.Memory({ initial: 1, maximum: 1, shared: true } as WebAssembly.MemoryDescriptor)
      .buffer instanceof
      SharedArrayBuffer;
  } catch {
    return false;
  }
}

function readLeb(bytes: Uint8Array, pos: number): [value: number, next: number] {
  let value = 0, shift = 0, b: number;
  do {
    b = bytes[pos++];
    value += (b & 0x7f) * 2 ** shift;
    shift += 7;
  } while (b & 0x80);
  return [value, pos];
}

/**
 * A copy of the module whose imported memory is declared unshared: the limits flag of the `env.memory` import goes
 * from "shared, with maximum" (3) to "with maximum" (1), a one-byte change that leaves every offset in place.
 */
export function unsharedMemoryVariant(bytes: Uint8Array<ArrayBuffer>): Uint8Array<ArrayBuffer> {
  const out = bytes.slice();
  let pos = 8;
  while (pos < out.length) {
    const id = out[pos];
    const [size, start] = readLeb(out, pos + 1);
    if (id === 2) {
      let [count, p] = readLeb(out, start);
      while (count-- > 0) {
        let len: number;
        [len, p] = readLeb(out, p);
        p += len;
        [len, p] = readLeb(out, p);
        p += len;
        const kind = out[p++];
        if (kind === 2) {
          if (out[p] === 3) out[p] = 1;
          return out;
        }
        if (kind === 0) [, p] = readLeb(out, p); // function: type index
        else if (kind === 1) { // table: reftype, limits
          p++;
          const flags = out[p++];
          [, p] = readLeb(out, p);
          if (flags & 1) [, p] = readLeb(out, p);
        } else if (kind === 3) p += 2; // global: valtype, mutability
        else break;
      }
      break;
    }
    pos = start + size;
  }
  throw new BackendError("wasm: the module imports no memory to unshare");
}

/** A worker that could not start (no module workers, a blocked blob URL, ...): its share runs on the calling thread. */
class WorkerStartError extends BackendError {}

interface PendingJob {
  resolve(): void;
  reject(e: Error): void;
}

/** A worker that instantiated the module over the shared memory and runs lists of calls. */
class KernelWorker {
  readonly #worker: Worker;
  readonly #ready: Promise<void>;
  #pending: PendingJob | undefined;

  constructor(url: string, module: WebAssembly.Module, memory: WebAssembly.Memory) {
    this.#worker = new Worker(url, { type: "module" });
    let readyResolve!: () => void, readyReject!: (e: Error) => void;
    this.#ready = new Promise((res, rej) => (readyResolve = res, readyReject = rej));
    let started = false;
    this.#worker.onmessage = (e: MessageEvent) => {
      const msg = e.data as { ready?: boolean; error?: string };
      if (!started) {
        started = true;
        return msg.ready
          ? readyResolve()
          : readyReject(new WorkerStartError(`wasm worker failed to start: ${msg.error}`));
      }
      const job = this.#pending;
      this.#pending = undefined;
      if (msg.error !== undefined) job?.reject(new BackendError(`wasm worker: ${msg.error}`));
      else job?.resolve();
    };
    this.#worker.onerror = (e: ErrorEvent) => {
      e.preventDefault();
      const err = new BackendError(`wasm worker failed: ${e.message}`);
      readyReject(new WorkerStartError(err.message));
      this.#pending?.reject(err);
      this.#pending = undefined;
    };
    this.#worker.postMessage({ module, memory });
  }

  /** Settles when the worker has instantiated the module (rejects with a {@link WorkerStartError} if it cannot). */
  get ready(): Promise<void> {
    return this.#ready;
  }

  /** Posts `calls` at once (the worker must be {@link KernelWorker.ready}); settles when the worker has run them. */
  run(calls: readonly Call[]): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.#pending = { resolve, reject };
      this.#worker.postMessage({ calls });
    });
  }

  terminate(): void {
    this.#worker.terminate();
    this.#pending?.reject(new BackendError("wasm worker terminated"));
    this.#pending = undefined;
  }
}

/** The instantiated module, its memory and workers. */
export class WasmRuntime {
  readonly exports: Exports;
  readonly memory: WebAssembly.Memory;
  /** Threads kernels may use: the calling one plus `threads − 1` workers. */
  readonly threads: number;
  readonly relaxed: boolean;
  /** Kernels below this many flops stay on the calling thread (the worker round trip costs ~0.1 ms). */
  readonly parallelThreshold: number;
  readonly #module: WebAssembly.Module;
  readonly #maxPages: number;
  readonly #base: number;
  #top: number;
  #workers: KernelWorker[] = [];
  #workerUrl: string | undefined;
  #idleTimer: ReturnType<typeof setTimeout> | undefined;
  #queue: Promise<unknown> = Promise.resolve();
  #disposed = false;
  #workersBroken = false;
  #f32: Float32Array | undefined;
  #f64: Float64Array | undefined;
  #i32: Int32Array | undefined;
  #u8: Uint8Array | undefined;

  private constructor(
    module: WebAssembly.Module,
    memory: WebAssembly.Memory,
    threads: number,
    relaxed: boolean,
    parallelThreshold: number,
    maxPages: number,
  ) {
    this.#maxPages = maxPages;
    this.#module = module;
    this.memory = memory;
    this.threads = threads;
    this.relaxed = relaxed;
    this.parallelThreshold = parallelThreshold;
    const instance = new WebAssembly.Instance(module, { env: { memory } });
    this.exports = instance.exports as unknown as Exports;
    this.#base = this.exports.heapBase();
    this.#top = this.#base;
  }

  /**
   * Instantiates the module.
   * @param threads wanted threads; fewer (1) where threads are unsupported.
   * @param relaxed true: the relaxed-SIMD build (throws where unsupported); false: plain SIMD; undefined: the best one.
   * @throws {BackendError} when the engine lacks SIMD or the relaxed build was required but is not supported.
   */
  static async create(threads: number, relaxed: boolean | undefined, parallelThreshold: number): Promise<WasmRuntime> {
    const relaxedOk = relaxedSimdSupported();
    if (relaxed && !relaxedOk) throw new BackendError("wasm: this engine does not support relaxed SIMD");
    const useRelaxed = relaxed ?? relaxedOk;
    let { bytes } = moduleBytes(useRelaxed);
    const shared = threads > 1 && threadsSupported();
    if (!shared) bytes = unsharedMemoryVariant(bytes);
    if (!WebAssembly.validate(bytes)) throw new BackendError("wasm: this engine does not support WebAssembly SIMD");
    const module = await WebAssembly.compile(bytes);
    // Reserve the 32-bit maximum where the engine allows; smaller reservations where address space is short.
    let memory: WebAssembly.Memory | undefined, maxPages = MAX_PAGES;
    while (!memory) {
      try {
        memory = new WebAssembly.Memory({ initial: 16, maximum: maxPages, shared } as WebAssembly.MemoryDescriptor);
      } catch (cause) {
        if (maxPages <= 4096) throw new BackendError(`wasm: could not create the module's memory: ${cause}`);
        maxPages /= 2;
      }
    }
    return new WasmRuntime(module, memory, shared ? threads : 1, useRelaxed, parallelThreshold, maxPages);
  }

  /** Runs `fn` after every kernel call queued before it: the arena and workers serve one call at a time. */
  exclusive<T>(fn: () => T | Promise<T>): Promise<T> {
    if (this.#disposed) return Promise.reject(new BackendError("wasm backend used after dispose()"));
    const run = this.#queue.then(() => {
      this.#top = this.#base;
      return fn();
    });
    this.#queue = run.catch(() => undefined);
    return run;
  }

  /** Reserves `bytes` (64-byte aligned) in the arena of the current call; returns the byte offset. */
  alloc(bytes: number): number {
    const ptr = this.#top;
    const end = ptr + Math.ceil(bytes / 64) * 64;
    if (end > this.#maxPages * 65536) {
      throw new BackendError(
        `wasm: a kernel needs ${(end / 2 ** 30).toFixed(2)} GiB, over the ${this.#maxPages / 16384} GiB memory limit`,
      );
    }
    const have = this.memory.buffer.byteLength;
    if (end > have) this.memory.grow(Math.ceil((end - have) / 65536));
    this.#top = end;
    return ptr;
  }

  /** The arena's current top, for {@link WasmRuntime.release}. */
  mark(): number {
    return this.#top;
  }

  /** Frees every block allocated since `mark` was taken (within the current call). */
  release(mark: number): void {
    this.#top = mark;
  }

  /** Copies `src` into a fresh arena block; returns its byte offset. */
  put(src: Float32Array | Float64Array | Int32Array | Uint8Array): number {
    const ptr = this.alloc(src.byteLength);
    this.u8().set(new Uint8Array(src.buffer, src.byteOffset, src.byteLength), ptr);
    return ptr;
  }

  f32(): Float32Array {
    if (this.#f32?.buffer !== this.memory.buffer || this.#f32.byteLength !== this.memory.buffer.byteLength) {
      this.#f32 = new Float32Array(this.memory.buffer);
    }
    return this.#f32;
  }

  f64(): Float64Array {
    if (this.#f64?.buffer !== this.memory.buffer || this.#f64.byteLength !== this.memory.buffer.byteLength) {
      this.#f64 = new Float64Array(this.memory.buffer);
    }
    return this.#f64;
  }

  i32(): Int32Array {
    if (this.#i32?.buffer !== this.memory.buffer || this.#i32.byteLength !== this.memory.buffer.byteLength) {
      this.#i32 = new Int32Array(this.memory.buffer);
    }
    return this.#i32;
  }

  u8(): Uint8Array {
    if (this.#u8?.buffer !== this.memory.buffer || this.#u8.byteLength !== this.memory.buffer.byteLength) {
      this.#u8 = new Uint8Array(this.memory.buffer);
    }
    return this.#u8;
  }

  /** A float32 copy of `length` values at byte offset `ptr`. */
  takeF32(ptr: number, length: number): Float32Array {
    return this.f32().slice(ptr >> 2, (ptr >> 2) + length);
  }

  /** A float64 copy of `length` values at byte offset `ptr`. */
  takeF64(ptr: number, length: number): Float64Array {
    return this.f64().slice(ptr >> 3, (ptr >> 3) + length);
  }

  /** Threads worth using for `flops` of work split into at most `parts` pieces. */
  threadsFor(flops: number, parts = Infinity): number {
    if (this.threads === 1 || flops < this.parallelThreshold) return 1;
    return Math.max(1, Math.min(this.threads, parts));
  }

  /**
   * Runs `perThread[t]` on thread `t`: the first list here, the others on workers, and waits for all. The lists must
   * touch disjoint outputs.
   */
  async parallel(perThread: readonly (readonly Call[])[]): Promise<void> {
    if (perThread.length > this.threads) {
      throw new BackendError(`wasm: ${perThread.length} parts for ${this.threads} threads`);
    }
    if (this.#idleTimer !== undefined) clearTimeout(this.#idleTimer);
    this.#idleTimer = undefined;
    const jobs: Promise<void>[] = [];
    try {
      // Every worker must be ready before any share starts: the shares are posted together, synchronously, and only
      // then does this thread run its own. (Posting after an `await` would let this thread take every block of a
      // shared counter before the workers had even received their calls.)
      const workers: KernelWorker[] = [];
      if (!this.#workersBroken) {
        try {
          for (let t = 1; t < perThread.length; t++) workers.push(this.#worker(t - 1));
        } catch {
          this.#workersBroken = true; // `new Worker` itself refused (a blocked blob URL, no module workers, ...)
        }
        // Started together; a worker that cannot start leaves every share to this thread, now and later.
        const started = await Promise.allSettled(workers.map((w) => w.ready));
        if (started.some((s) => s.status === "rejected")) this.#workersBroken = true;
      }
      for (let t = 1; t < perThread.length; t++) {
        const calls = perThread[t], worker = workers[t - 1];
        let job: Promise<void>;
        try {
          job = worker && !this.#workersBroken
            ? worker.run(calls)
            : Promise.reject(new WorkerStartError("workers unavailable"));
        } catch (e) {
          job = Promise.reject(new WorkerStartError(String(e)));
        }
        // A worker that cannot start leaves its share to this thread (shares are independent), now and later.
        jobs.push(job.catch((e) => {
          if (!(e instanceof WorkerStartError)) throw e;
          this.#workersBroken = true;
          this.run(calls);
        }));
      }
      let error: unknown;
      try {
        this.run(perThread[0] ?? []);
      } catch (e) {
        error = e;
      }
      const settled = await Promise.allSettled(jobs);
      if (error) throw error;
      for (const s of settled) if (s.status === "rejected") throw s.reason;
    } finally {
      if (this.#workers.length && !this.#disposed) this.#idleTimer = setTimeout(() => this.#stopWorkers(), IDLE_MS);
    }
  }

  /** Runs calls on the calling thread. */
  run(calls: readonly Call[]): void {
    for (const [name, ...args] of calls) this.exports[name](...args);
  }

  #worker(i: number): KernelWorker {
    while (this.#workers.length <= i) {
      this.#workerUrl ??= URL.createObjectURL(
        new Blob([`(${workerMain.toString()})();`], { type: "application/javascript" }),
      );
      this.#workers.push(new KernelWorker(this.#workerUrl, this.#module, this.memory));
    }
    return this.#workers[i];
  }

  #stopWorkers(): void {
    for (const w of this.#workers) w.terminate();
    this.#workers = [];
    this.#idleTimer = undefined;
  }

  /** Terminates the workers; later calls fail. */
  dispose(): void {
    this.#disposed = true;
    if (this.#idleTimer !== undefined) clearTimeout(this.#idleTimer);
    this.#stopWorkers();
    if (this.#workerUrl) URL.revokeObjectURL(this.#workerUrl);
    this.#workerUrl = undefined;
  }
}
