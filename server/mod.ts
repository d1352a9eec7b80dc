/**
 * ptq's HTTP service: a runtime-free hono app ({@link createApp}) with its job queue, and the Deno adapter
 * ({@link serve}) that `ptq serve` runs.
 *
 * @example
 * ```ts ignore
 * import { serve } from "./mod.ts";
 * const server = await serve({ roots: ["./models"], port: 8787, token: "secret" });
 * // POST /jobs {"model": "llama-12m", "method": "gptq", "bits": 4, "calib": "calib.txt", "eval": "heldout.txt"}
 * await server.shutdown();
 * ```
 * @module
 */

export { createApp, DEFAULT_MAX_UPLOAD_BYTES } from "./app.ts";
export type { AppOptions, CheckpointFiles, FileAccess } from "./app.ts";
export { type ErrorBody, type ErrorCode, HttpError } from "./errors.ts";
export {
  isFinal,
  type JobContext,
  type JobEvent,
  type JobFailure,
  type JobProgress,
  JobQueue,
  type JobQueueOptions,
  type JobRunner,
  type JobStatus,
  type JobView,
  QueueFullError,
  type QueueStats,
} from "./jobs.ts";
export {
  executeJob,
  JobCancelledError,
  type JobHooks,
  type JobInput,
  type JobIo,
  type JobOutput,
  type JobSummary,
  loadUpload,
  type SavedCheckpoint,
  type UploadedModel,
} from "./pipeline.ts";
export { JOB_METHODS, type JobSpec, parseJobSpec, type SpecLimits, type TextSource } from "./spec.ts";
export {
  createRootedFileAccess,
  createWorkerRunner,
  denoCheckpointFiles,
  type PtqServer,
  serve,
  type ServeOptions,
  type WorkerRunner,
  type WorkerRunnerOptions,
} from "./deno.ts";
export { type JobStreamEvent, PtqClient, PtqHttpError, type SseEvent, sseEvents } from "./client.ts";
