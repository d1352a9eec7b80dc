/**
 * The HTTP service as a runtime-free hono app: jobs are submitted, watched, fetched and cancelled over JSON and
 * server-sent events. File access and the job runner are injected, so the same app serves from Deno (`server/deno.ts`),
 * or from any runtime hono supports, given those two.
 *
 * ```
 * GET    /health                  {"status":"ok"}                       (no token needed)
 * POST   /jobs                    JSON spec (server/spec.ts), or multipart: spec + model file (+ config, tokenizer)
 *                                 → 202 {"job": JobView}, Location: /jobs/<id>
 * GET    /jobs                    {"jobs": [JobView, ...]}
 * GET    /jobs/:id                JobView
 * GET    /jobs/:id/events         text/event-stream: "status" (JobView) and "progress" (JobProgress) events, then "end"
 * GET    /jobs/:id/result         {"job": JobView, "summary": JobSummary}; 409 until the job has succeeded
 * GET    /jobs/:id/checkpoint     with "save": {"format", "bytes", "notes", "files": [{"name", "url"}]}
 * GET    /jobs/:id/checkpoint/:f  one file of it
 * DELETE /jobs/:id                 queued or running: cancel (202); finished: forget it (200)
 * ```
 *
 * Errors are `{"error": {"status", "code", "message"}}`: 400 malformed JSON, unknown key or method, bad value; 401 a
 * missing or wrong bearer token; 403 a path outside the roots; 404 an unknown job or route; 409 a result asked for
 * too early; 413 a body over the limit; 415 another content type; 429 a full queue (with `Retry-After`).
 *
 * @module
 */

import { Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import { streamSSE } from "hono/streaming";
import type { Context } from "hono";
import { PtqError } from "../core/errors.ts";
import { errorBody, HttpError } from "./errors.ts";
import { isFinal, type JobEvent, JobQueue, type JobQueueOptions, type JobRunner, QueueFullError } from "./jobs.ts";
import type { JobInput, JobOutput, UploadedModel } from "./pipeline.ts";
import { type JobSpec, parseJobSpec, type SpecLimits, type TextSource } from "./spec.ts";

/** How the app reaches files: every path a request names goes through here, confined to the server's roots. */
export interface FileAccess {
  /**
   * The real path of a text file under the roots.
   * @throws {HttpError} 403 when the path (or a link on it) leads outside the roots; 400 when there is no such file.
   */
  resolveFile(path: string): Promise<string>;
  /**
   * The real path of a model (a folder, or a llama2.c `.bin`), after checking that every file the loader may read
   * beside it stays under the roots too.
   * @throws {HttpError} as {@link FileAccess.resolveFile}.
   */
  resolveModel(path: string): Promise<string>;
}

/** Reading and deleting the checkpoints jobs wrote (see `server/deno.ts` for Deno's). */
export interface CheckpointFiles {
  /** A file of a checkpoint folder, or undefined when it is gone. */
  open(dir: string, file: string): Promise<{ body: ReadableStream<Uint8Array>; size: number } | undefined>;
  /** Deletes a checkpoint folder. */
  remove(dir: string): Promise<void>;
}

/** Options of {@link createApp}. */
export interface AppOptions {
  /** Path confinement. */
  readonly files: FileAccess;
  /** Runs jobs; the app makes its own queue around it. Give `jobs` instead to share a queue (and close it). */
  readonly runner?: JobRunner<JobInput, JobOutput>;
  /** A queue to submit to (takes precedence over `runner` and the queue options). */
  readonly jobs?: JobQueue<JobInput, JobOutput>;
  /** Queue sizes when the app makes the queue. */
  readonly queue?: JobQueueOptions;
  /** Bearer token every route but /health requires; none when undefined or empty. */
  readonly token?: string;
  /** Largest request body, JSON or upload, in bytes; default 64 MiB. */
  readonly maxUploadBytes?: number;
  /** Backend names a job may ask for; any when undefined. */
  readonly backends?: readonly string[];
  /** Backend of jobs that name none; the runner's default when undefined. */
  readonly defaultBackend?: string;
  /** Bounds on a job's size. */
  readonly limits?: SpecLimits;
  /** Seconds between SSE keep-alive comments; default 15. */
  readonly heartbeatSeconds?: number;
  /** Serves the checkpoints jobs write (`"save"`); without it, jobs asking to save are refused (400). */
  readonly checkpoints?: CheckpointFiles;
  /** Called with unexpected errors (500s); default `console.error`. */
  readonly onUnexpectedError?: (e: unknown) => void;
}

/** Default body limit: 64 MiB. */
export const DEFAULT_MAX_UPLOAD_BYTES: number = 64 * 1024 * 1024;

/**
 * Builds the app.
 *
 * @example
 * ```ts ignore
 * const app = createApp({ files, runner });
 * Deno.serve({ port: 8787 }, app.fetch);
 * ```
 * @throws {TypeError} when neither `runner` nor `jobs` is given.
 */
export function createApp(options: AppOptions): Hono {
  const jobs = options.jobs ??
    (options.runner ? new JobQueue(options.runner, options.queue) : undefined);
  if (!jobs) throw new TypeError("createApp needs a runner or a job queue");
  const { files, token, backends, defaultBackend, limits, checkpoints } = options;
  const maxBody = options.maxUploadBytes ?? DEFAULT_MAX_UPLOAD_BYTES;
  const heartbeatMs = (options.heartbeatSeconds ?? 15) * 1000;
  const onUnexpected = options.onUnexpectedError ?? ((e: unknown) => console.error("ptq serve: unexpected error", e));

  const app = new Hono();

  app.onError((err, c) => {
    let e: HttpError;
    if (err instanceof HttpError) e = err;
    else if (err instanceof PtqError) e = new HttpError(400, "bad_request", err.message);
    else {
      onUnexpected(err);
      e = new HttpError(500, "internal", "internal server error");
    }
    return c.json(errorBody(e), e.status as 400, e.headers);
  });
  app.notFound((c) =>
    c.json(errorBody(new HttpError(404, "not_found", `no route ${c.req.method} ${c.req.path}`)), 404)
  );

  app.get("/health", (c) => c.json({ status: "ok" }));

  if (token) {
    const expected = new TextEncoder().encode(token);
    app.use("*", async (c, next) => {
      const header = c.req.header("authorization") ?? "";
      const m = /^Bearer\s+(.+)$/i.exec(header);
      if (!m || !constantTimeEqual(new TextEncoder().encode(m[1].trim()), expected)) {
        throw new HttpError(401, "unauthorized", m ? "wrong bearer token" : "a bearer token is required", {
          "WWW-Authenticate": 'Bearer realm="ptq"',
        });
      }
      await next();
    });
  }

  app.post(
    "/jobs",
    bodyLimit({
      maxSize: maxBody,
      onError: () => {
        throw new HttpError(413, "payload_too_large", `the request body is larger than ${maxBody} bytes`);
      },
    }),
    async (c) => {
      const { spec, upload, label } = await readSubmission(c, { backends, limits });
      if (spec.save && !checkpoints) throw new HttpError(400, "bad_request", "this server does not keep checkpoints");
      if (spec.save && upload) {
        throw new HttpError(
          400,
          "bad_request",
          `"save" needs a model under the roots: the writer copies config and tokenizer from the source`,
        );
      }
      const resolved = await resolvePaths(spec, files);
      const input: JobInput = {
        spec: defaultBackend && !resolved.backend ? { ...resolved, backend: defaultBackend } : resolved,
        upload,
        modelLabel: label,
      };
      let job;
      try {
        job = jobs.submit(input);
      } catch (e) {
        if (e instanceof QueueFullError) {
          throw new HttpError(429, "too_many_jobs", e.message, { "Retry-After": "5" });
        }
        throw e;
      }
      c.header("Location", `/jobs/${job.id}`);
      return c.json({ job }, 202);
    },
  );

  app.get("/jobs", (c) => c.json({ jobs: jobs.list(), stats: jobs.stats() }));

  const known = (id: string) => {
    const job = jobs.get(id);
    if (!job) throw new HttpError(404, "not_found", `no job "${id}"`);
    return job;
  };

  app.get("/jobs/:id", (c) => c.json(known(c.req.param("id"))));

  app.get("/jobs/:id/result", (c) => {
    const id = c.req.param("id");
    known(id);
    const { job, output } = jobs.result(id)!;
    if (job.status !== "succeeded" || !output) {
      const why = job.status === "failed"
        ? `the job failed: ${job.error?.message ?? "unknown error"}`
        : job.status === "cancelled"
        ? "the job was cancelled"
        : `the job is ${job.status}; wait for it (GET /jobs/${id}/events)`;
      throw new HttpError(409, "conflict", why);
    }
    return c.json({ job, summary: output.summary });
  });

  const checkpointOf = (id: string) => {
    known(id);
    const { job, output } = jobs.result(id)!;
    if (job.status !== "succeeded") {
      throw new HttpError(409, "conflict", `the job is ${job.status}; a checkpoint exists once it has succeeded`);
    }
    if (!output?.checkpoint) throw new HttpError(404, "not_found", `job "${id}" did not ask to save a checkpoint`);
    return output.checkpoint;
  };

  app.get("/jobs/:id/checkpoint", (c) => {
    const id = c.req.param("id");
    const cp = checkpointOf(id);
    return c.json({
      format: cp.format,
      bytes: cp.bytes,
      notes: cp.notes,
      files: cp.files.map((name) => ({ name, url: `/jobs/${id}/checkpoint/${encodeURIComponent(name)}` })),
    });
  });

  app.get("/jobs/:id/checkpoint/:file", async (c) => {
    const id = c.req.param("id"), file = c.req.param("file");
    const cp = checkpointOf(id);
    // Only names the job listed: the request never forms a path.
    if (!cp.files.includes(file)) throw new HttpError(404, "not_found", `the checkpoint has no file "${file}"`);
    const opened = await checkpoints!.open(cp.dir, file);
    if (!opened) throw new HttpError(404, "not_found", `"${file}" is gone`);
    return c.body(opened.body, 200, {
      "content-type": file.endsWith(".json") ? "application/json" : "application/octet-stream",
      "content-length": String(opened.size),
      "content-disposition": `attachment; filename="${file.replace(/["\\]/g, "_")}"`,
    });
  });

  app.delete("/jobs/:id", (c) => {
    const id = c.req.param("id");
    const before = known(id);
    if (isFinal(before.status)) {
      jobs.remove(id);
      return c.json({ job: before, removed: true }, 200);
    }
    return c.json({ job: jobs.cancel(id)! }, 202);
  });

  app.get("/jobs/:id/events", (c) => {
    const id = c.req.param("id");
    known(id);
    return streamSSE(c, async (stream) => {
      const pending: JobEvent[] = [];
      let wake: (() => void) | undefined;
      let closed = false;
      // Subscribe before taking the snapshot so that no event falls between the two.
      const unsubscribe = jobs.subscribe(id, (e) => {
        const last = pending.at(-1);
        // A slow reader only needs the latest progress, not every intermediate one.
        if (e.type === "progress" && last?.type === "progress") pending[pending.length - 1] = e;
        else pending.push(e);
        wake?.();
      });
      stream.onAbort(() => {
        closed = true;
        wake?.();
      });
      try {
        const first = jobs.get(id);
        if (!first) return;
        await stream.writeSSE({ event: "status", data: JSON.stringify(first) });
        if (first.progress && !isFinal(first.status)) {
          await stream.writeSSE({ event: "progress", data: JSON.stringify(first.progress) });
        }
        let final = isFinal(first.status);
        while (!final && !closed) {
          if (pending.length === 0) {
            let timer: ReturnType<typeof setTimeout> | undefined;
            await new Promise<void>((resolve) => {
              wake = resolve;
              timer = setTimeout(resolve, heartbeatMs);
            });
            clearTimeout(timer);
            wake = undefined;
            // Keep-alive: a comment line, ignored by EventSource, keeps proxies from closing an idle stream.
            if (pending.length === 0 && !closed) await stream.write(": keep-alive\n\n");
            continue;
          }
          const e = pending.shift()!;
          if (e.type === "progress") {
            await stream.writeSSE({ event: "progress", data: JSON.stringify(e.progress) });
          } else {
            await stream.writeSSE({ event: "status", data: JSON.stringify(e.job) });
            final = isFinal(e.job.status);
          }
        }
        // EventSource reconnects when a stream ends; "end" tells a client to close instead.
        if (!closed) await stream.writeSSE({ event: "end", data: "{}" });
      } finally {
        unsubscribe?.();
      }
    });
  });

  return app;
}

/** Byte-wise comparison whose time does not depend on where the first difference is. */
function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  let diff = a.length ^ b.length;
  // Always walks the expected token's length, whatever was sent.
  for (let i = 0; i < b.length; i++) diff |= (a[i] ?? 0) ^ b[i];
  return diff === 0;
}

/** Parses the body of POST /jobs: a JSON spec, or a multipart upload. */
async function readSubmission(
  c: Context,
  options: { backends?: readonly string[]; limits?: SpecLimits },
): Promise<{ spec: JobSpec; upload?: UploadedModel; label: string }> {
  const type = (c.req.header("content-type") ?? "").split(";")[0].trim().toLowerCase();
  if (type === "application/json" || type === "") {
    const spec = parseJobSpec(parseJson(await c.req.text(), "the request body"), options);
    return { spec, label: spec.model! };
  }
  if (type !== "multipart/form-data") {
    throw new HttpError(415, "unsupported_media_type", `send application/json or multipart/form-data, not ${type}`);
  }
  let form: FormData;
  try {
    form = await c.req.formData();
  } catch (e) {
    throw new HttpError(400, "bad_request", `malformed multipart body: ${(e as Error).message}`);
  }
  const specField = form.get("spec");
  const spec = parseJobSpec(
    specField === null ? {} : parseJson(await fieldText(specField), 'the "spec" field'),
    { ...options, uploaded: true },
  );
  const model = form.get("model");
  if (!(model instanceof File)) throw new HttpError(400, "bad_request", `an upload needs a "model" file field`);
  const bytes = new Uint8Array(await model.arrayBuffer());
  const format = model.name.endsWith(".safetensors")
    ? "safetensors"
    : model.name.endsWith(".bin")
    ? "llama2c"
    : looksLikeSafetensors(bytes)
    ? "safetensors"
    : "llama2c";
  const configField = form.get("config");
  if (format === "safetensors" && configField === null) {
    throw new HttpError(400, "bad_request", `a safetensors upload needs a "config" field (its config.json)`);
  }
  const tokenizerField = form.get("tokenizer");
  const tokenizerConfigField = form.get("tokenizer_config");
  const needsText = spec.calib !== undefined || spec.eval.length > 0;
  if (needsText && tokenizerField === null) {
    throw new HttpError(400, "bad_request", `calibration or eval texts need a "tokenizer" field with the upload`);
  }
  const tokenizerConfig = tokenizerConfigField === null
    ? undefined
    : parseJson(await fieldText(tokenizerConfigField), 'the "tokenizer_config" field');
  if (tokenizerConfig !== undefined && (typeof tokenizerConfig !== "object" || Array.isArray(tokenizerConfig))) {
    throw new HttpError(400, "bad_request", `"tokenizer_config" must be a JSON object`);
  }
  const upload: UploadedModel = {
    name: model.name || "upload",
    format,
    bytes,
    config: configField === null ? undefined : parseJson(await fieldText(configField), 'the "config" field'),
    tokenizer: tokenizerField === null ? undefined : {
      name: tokenizerField instanceof File ? tokenizerField.name : "tokenizer.json",
      bytes: tokenizerField instanceof File
        ? new Uint8Array(await tokenizerField.arrayBuffer())
        : new TextEncoder().encode(tokenizerField),
    },
    tokenizerConfig: tokenizerConfig as Record<string, unknown> | undefined,
  };
  return { spec, upload, label: upload.name };
}

function parseJson(text: string, what: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new HttpError(400, "bad_json", `${what} is not valid JSON: ${(e as Error).message}`);
  }
}

async function fieldText(v: FormDataEntryValue): Promise<string> {
  return typeof v === "string" ? v : await v.text();
}

/** A safetensors file starts with a little-endian u64 header length and then the header's "{". */
function looksLikeSafetensors(bytes: Uint8Array): boolean {
  return bytes.length > 9 && bytes[8] === 0x7b && bytes[6] === 0 && bytes[7] === 0;
}

/** The spec with every path replaced by its real path under the roots. */
async function resolvePaths(spec: JobSpec, files: FileAccess): Promise<JobSpec> {
  const text = async (s: TextSource): Promise<TextSource> =>
    s.kind === "path" ? { ...s, path: await files.resolveFile(s.path) } : s;
  return {
    ...spec,
    model: spec.model === undefined ? undefined : await files.resolveModel(spec.model),
    calib: spec.calib && await text(spec.calib),
    eval: await Promise.all(spec.eval.map(text)),
  };
}
