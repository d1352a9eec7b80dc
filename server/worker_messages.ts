/**
 * The messages between the server and a job worker (`server/worker.ts`), apart from the worker itself so that the
 * server's modules import only types, never the worker module.
 *
 * @module
 */

import type { JobProgress } from "./jobs.ts";
import type { JobInput } from "./pipeline.ts";

/** What the server posts to start a job. */
export interface StartMessage {
  readonly input: JobInput;
  readonly cancel: SharedArrayBuffer;
  /** Folder under which checkpoints are written (one subfolder per job); none = no checkpoints. */
  readonly checkpointRoot?: string;
}

/** What the worker posts back. */
export type WorkerReply =
  | { readonly type: "progress"; readonly progress: JobProgress }
  | { readonly type: "done"; readonly output: unknown }
  | { readonly type: "error"; readonly error: { name: string; message: string }; readonly cancelled: boolean };
