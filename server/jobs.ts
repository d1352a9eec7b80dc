/**
 * Job state and scheduling, free of HTTP and of any runtime: a bounded queue in front of at most `maxRunning`
 * concurrent runs, each with an `AbortSignal` for cancellation and a stream of events for listeners (the SSE
 * endpoint). Finished jobs are kept, up to `retain` of them, so their results can be fetched; the oldest finished ones
 * are forgotten first.
 *
 * @example
 * ```ts
 * import { JobQueue } from "./jobs.ts";
 * const queue = new JobQueue<number, number>(async (n, ctx) => {
 *   ctx.progress({ phase: "quantize", done: 1, total: 1, fraction: 1 });
 *   return n * 2;
 * });
 * const job = queue.submit(21);
 * console.assert((await queue.settled(job.id))?.output === 42);
 * ```
 * @module
 */

/** Where a job is in its life. The last three are final. */
export type JobStatus = "queued" | "running" | "succeeded" | "failed" | "cancelled";

/** A progress report from a running job. */
export interface JobProgress {
  /** What the job is doing: loading, evaluating the unquantized model, quantizing, evaluating, saving the result. */
  readonly phase: "load" | "baseline" | "quantize" | "eval" | "save";
  /** Units done and in all within the phase (calibration steps, linear layers, windows). */
  readonly done: number;
  readonly total: number;
  /** Estimated fraction of the whole job done, 0 to 1. */
  readonly fraction: number;
  /** A short human-readable note ("layer 3/5 q_proj", "ppl 7.12"). */
  readonly note?: string;
}

/** What a runner gets besides its input. */
export interface JobContext {
  /** Aborted when the job is cancelled or the queue closes; runners check it between steps. */
  readonly signal: AbortSignal;
  /** Reports progress to listeners. */
  progress(p: JobProgress): void;
}

/** Runs one job. Rejecting after `signal` aborted marks the job cancelled; any other rejection marks it failed. */
export type JobRunner<I, O> = (input: I, ctx: JobContext) => Promise<O>;

/** Why a job failed, as reported to clients. */
export interface JobFailure {
  /** The error's class name (`FormatError`, `OptionError`, ...). */
  readonly name: string;
  readonly message: string;
}

/** A snapshot of a job, as the status endpoint reports it. */
export interface JobView {
  readonly id: string;
  readonly status: JobStatus;
  /** A cancellation was asked for and the runner has not stopped yet. */
  readonly cancelRequested: boolean;
  /** Jobs ahead of this one in the queue (0 = next); only while queued. */
  readonly position?: number;
  /** ISO times. */
  readonly createdAt: string;
  readonly startedAt?: string;
  readonly finishedAt?: string;
  /** The latest progress report. */
  readonly progress?: JobProgress;
  readonly error?: JobFailure;
}

/** An event a listener receives: a status change (with the new snapshot) or a progress report. */
export type JobEvent =
  | { readonly type: "status"; readonly job: JobView }
  | { readonly type: "progress"; readonly progress: JobProgress };

/** Thrown by {@link JobQueue.submit} when the queue is full. */
export class QueueFullError extends Error {
  /**
   * @param running Jobs running now.
   * @param queued Jobs waiting.
   */
  constructor(readonly running: number, readonly queued: number) {
    super(`too many jobs: ${running} running and ${queued} queued; try again later`);
    this.name = "QueueFullError";
  }
}

/** Options of {@link JobQueue}. */
export interface JobQueueOptions {
  /** Jobs running at once; default 1. */
  readonly maxRunning?: number;
  /** Jobs waiting beyond those; default 16. 0 = refuse anything that cannot start at once. */
  readonly maxQueued?: number;
  /** Finished jobs kept for their results; default 100. */
  readonly retain?: number;
}

/** Called with a succeeded job's output when the queue forgets it (to delete files the output refers to). */
export type ForgetHook<O> = (output: O) => void;

/** Counters over the queue's life. */
export interface QueueStats {
  readonly running: number;
  readonly queued: number;
  readonly retained: number;
  readonly submitted: number;
  readonly succeeded: number;
  readonly failed: number;
  readonly cancelled: number;
  readonly rejected: number;
}

interface Entry<I, O> {
  readonly id: string;
  input: I | undefined;
  status: JobStatus;
  readonly controller: AbortController;
  readonly createdAt: Date;
  startedAt?: Date;
  finishedAt?: Date;
  progress?: JobProgress;
  output?: O;
  error?: JobFailure;
  readonly listeners: Set<(e: JobEvent) => void>;
  readonly done: Promise<void>;
  resolveDone: () => void;
}

const FINAL: ReadonlySet<JobStatus> = new Set(["succeeded", "failed", "cancelled"]);

/** True for a status a job never leaves. */
export function isFinal(status: JobStatus): boolean {
  return FINAL.has(status);
}

/** The queue. `I` is a job's input, `O` its output. */
export class JobQueue<I, O> {
  readonly #runner: JobRunner<I, O>;
  readonly #maxRunning: number;
  readonly #maxQueued: number;
  readonly #retain: number;
  /** Every known job, in submission order (Map keeps insertion order, which eviction relies on). */
  readonly #jobs = new Map<string, Entry<I, O>>();
  readonly #waiting: Entry<I, O>[] = [];
  /** Ids of finished jobs in the order they finished (a Set keeps insertion order): eviction forgets the oldest. */
  readonly #finished = new Set<string>();
  #running = 0;
  #closed = false;
  #onForget: ForgetHook<O> | undefined;
  #counts = { submitted: 0, succeeded: 0, failed: 0, cancelled: 0, rejected: 0 };

  /**
   * @param runner Runs one job.
   * @param options See {@link JobQueueOptions}.
   * @param onForget Called with the output of a succeeded job that is forgotten (evicted or removed).
   * @throws {RangeError} for a non-positive `maxRunning` or negative `maxQueued` or `retain`.
   */
  constructor(runner: JobRunner<I, O>, options: JobQueueOptions = {}, onForget?: ForgetHook<O>) {
    const { maxRunning = 1, maxQueued = 16, retain = 100 } = options;
    if (!Number.isInteger(maxRunning) || maxRunning < 1) throw new RangeError(`maxRunning must be ≥ 1`);
    if (!Number.isInteger(maxQueued) || maxQueued < 0) throw new RangeError(`maxQueued must be ≥ 0`);
    if (!Number.isInteger(retain) || retain < 0) throw new RangeError(`retain must be ≥ 0`);
    this.#runner = runner;
    this.#maxRunning = maxRunning;
    this.#maxQueued = maxQueued;
    this.#retain = retain;
    this.#onForget = onForget;
  }

  /**
   * Queues a job (it starts at once when a slot is free).
   *
   * @returns The new job's snapshot.
   * @throws {QueueFullError} when `maxRunning` jobs run and `maxQueued` wait; {Error} after {@link close}.
   */
  submit(input: I): JobView {
    if (this.#closed) throw new Error("the job queue is closed");
    if (this.#running >= this.#maxRunning && this.#waiting.length >= this.#maxQueued) {
      this.#counts.rejected++;
      throw new QueueFullError(this.#running, this.#waiting.length);
    }
    let resolveDone!: () => void;
    const done = new Promise<void>((r) => resolveDone = r);
    const entry: Entry<I, O> = {
      id: crypto.randomUUID(),
      input,
      status: "queued",
      controller: new AbortController(),
      createdAt: new Date(),
      listeners: new Set(),
      done,
      resolveDone,
    };
    this.#jobs.set(entry.id, entry);
    this.#waiting.push(entry);
    this.#counts.submitted++;
    this.#pump();
    return this.#view(entry);
  }

  /** A job's snapshot, or undefined for an unknown (or forgotten) id. */
  get(id: string): JobView | undefined {
    const e = this.#jobs.get(id);
    return e && this.#view(e);
  }

  /** A finished job's output (succeeded) or failure, with its snapshot; undefined for an unknown id. */
  result(id: string): { job: JobView; output?: O } | undefined {
    const e = this.#jobs.get(id);
    return e && { job: this.#view(e), output: e.output };
  }

  /** Every known job, oldest first. */
  list(): JobView[] {
    return [...this.#jobs.values()].map((e) => this.#view(e));
  }

  /**
   * Cancels a queued job at once, or asks a running one to stop (it becomes "cancelled" when its runner returns).
   * A finished job is left as it is.
   *
   * @returns The job's snapshot after the request, or undefined for an unknown id.
   */
  cancel(id: string): JobView | undefined {
    const e = this.#jobs.get(id);
    if (!e) return undefined;
    if (e.status === "queued") {
      this.#waiting.splice(this.#waiting.indexOf(e), 1);
      e.controller.abort();
      this.#finish(e, "cancelled");
    } else if (e.status === "running") {
      if (!e.controller.signal.aborted) {
        e.controller.abort();
        this.#emit(e, { type: "status", job: this.#view(e) });
      }
    }
    return this.#view(e);
  }

  /**
   * Forgets a finished job (its result is freed).
   *
   * @returns true when it was finished and is now gone; false when it is unknown or not finished.
   */
  remove(id: string): boolean {
    const e = this.#jobs.get(id);
    if (!e || !isFinal(e.status)) return false;
    this.#forget(e);
    return true;
  }

  /**
   * Listens to a job's events until it finishes (a final status event is the last one).
   *
   * @returns An unsubscribe function, or undefined for an unknown id.
   */
  subscribe(id: string, listener: (e: JobEvent) => void): (() => void) | undefined {
    const e = this.#jobs.get(id);
    if (!e) return undefined;
    e.listeners.add(listener);
    return () => e.listeners.delete(listener);
  }

  /** Resolves when the job is final (at once if it is); undefined for an unknown id. */
  async settled(id: string): Promise<{ job: JobView; output?: O } | undefined> {
    const e = this.#jobs.get(id);
    if (!e) return undefined;
    await e.done;
    return { job: this.#view(e), output: e.output };
  }

  /** Counters. */
  stats(): QueueStats {
    return { running: this.#running, queued: this.#waiting.length, retained: this.#finished.size, ...this.#counts };
  }

  /** Refuses new jobs, cancels every queued and running one, and waits for the runners to return. */
  async close(): Promise<void> {
    this.#closed = true;
    const pending = [...this.#jobs.values()].filter((e) => !isFinal(e.status));
    for (const e of pending) this.cancel(e.id);
    await Promise.all(pending.map((e) => e.done));
  }

  #view(e: Entry<I, O>): JobView {
    const position = e.status === "queued" ? this.#waiting.indexOf(e) : undefined;
    return {
      id: e.id,
      status: e.status,
      cancelRequested: e.controller.signal.aborted && e.status === "running",
      ...(position !== undefined && position >= 0 ? { position } : {}),
      createdAt: e.createdAt.toISOString(),
      ...(e.startedAt ? { startedAt: e.startedAt.toISOString() } : {}),
      ...(e.finishedAt ? { finishedAt: e.finishedAt.toISOString() } : {}),
      ...(e.progress ? { progress: e.progress } : {}),
      ...(e.error ? { error: e.error } : {}),
    };
  }

  #emit(e: Entry<I, O>, event: JobEvent): void {
    for (const l of [...e.listeners]) {
      try {
        l(event);
      } catch {
        // A listener's failure (a closed stream) must not stop the job or the other listeners.
      }
    }
  }

  #pump(): void {
    while (this.#running < this.#maxRunning && this.#waiting.length) {
      const e = this.#waiting.shift()!;
      this.#start(e);
    }
  }

  #start(e: Entry<I, O>): void {
    this.#running++;
    e.status = "running";
    e.startedAt = new Date();
    this.#emit(e, { type: "status", job: this.#view(e) });
    const input = e.input!;
    // The queue keeps no reference to the input once running: an upload can be freed when the runner drops it.
    e.input = undefined;
    const ctx: JobContext = {
      signal: e.controller.signal,
      progress: (p) => {
        if (isFinal(e.status)) return;
        e.progress = p;
        this.#emit(e, { type: "progress", progress: p });
      },
    };
    let run: Promise<O>;
    try {
      run = this.#runner(input, ctx);
    } catch (err) {
      run = Promise.reject(err);
    }
    run.then(
      (output) => {
        e.output = output;
        this.#finish(e, "succeeded");
      },
      (err) => {
        if (e.controller.signal.aborted) this.#finish(e, "cancelled");
        else {
          e.error = failureOf(err);
          this.#finish(e, "failed");
        }
      },
    ).finally(() => {
      this.#running--;
      this.#pump();
    });
  }

  #finish(e: Entry<I, O>, status: "succeeded" | "failed" | "cancelled"): void {
    e.status = status;
    e.finishedAt = new Date();
    e.input = undefined;
    this.#counts[status]++;
    this.#emit(e, { type: "status", job: this.#view(e) });
    e.listeners.clear();
    e.resolveDone();
    this.#finished.add(e.id);
    // Forget the jobs that finished longest ago beyond `retain`.
    for (const id of this.#finished) {
      if (this.#finished.size <= this.#retain) break;
      this.#forget(this.#jobs.get(id)!);
    }
  }

  #forget(e: Entry<I, O>): void {
    this.#jobs.delete(e.id);
    this.#finished.delete(e.id);
    if (e.output !== undefined && this.#onForget) {
      try {
        this.#onForget(e.output);
      } catch {
        // Cleaning up after a job must not break the queue.
      }
    }
  }
}

function failureOf(err: unknown): JobFailure {
  if (err instanceof Error) return { name: err.name, message: err.message };
  if (typeof err === "object" && err !== null && "message" in err) {
    const o = err as { name?: unknown; message: unknown };
    return { name: typeof o.name === "string" ? o.name : "Error", message: String(o.message) };
  }
  return { name: "Error", message: String(err) };
}
