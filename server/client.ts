/**
 * A small client for the service: server-sent events as an async iterator (`EventSource` does not exist in every
 * runtime and cannot send a bearer token), and job submission that waits for the result. Used by the tests and
 * `bench/server_load.ts`; runtime-free (only `fetch`).
 *
 * @example
 * ```ts ignore
 * const client = new PtqClient("http://127.0.0.1:8787", { token: "secret" });
 * const { id } = await client.submit({ model: "stories260K", method: "rtn", bits: 4 });
 * for await (const e of client.events(id)) if (e.event === "progress") console.log(e.data);
 * console.log(await client.result(id));
 * ```
 * @module
 */

import type { JobProgress, JobView } from "./jobs.ts";
import type { JobSummary } from "./pipeline.ts";

/** One server-sent event. */
export interface SseEvent {
  /** The `event:` field ("message" when absent). */
  readonly event: string;
  /** The `data:` lines joined with newlines. */
  readonly data: string;
}

/**
 * The events of a `text/event-stream` body, in order; comments (keep-alives) are skipped. Ends with the stream.
 *
 * @param body The response body.
 */
export async function* sseEvents(body: ReadableStream<Uint8Array>): AsyncGenerator<SseEvent> {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      buffer += value.replace(/\r\n?/g, "\n");
      for (let end = buffer.indexOf("\n\n"); end >= 0; end = buffer.indexOf("\n\n")) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let event = "message";
        const data: string[] = [];
        for (const line of block.split("\n")) {
          if (line.startsWith(":")) continue;
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (field === "event") event = value;
          else if (field === "data") data.push(value);
        }
        if (data.length) yield { event, data: data.join("\n") };
      }
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
}

/** An error response of the service. */
export class PtqHttpError extends Error {
  /**
   * @param status HTTP status.
   * @param code The service's error code (`too_many_jobs`, ...).
   */
  constructor(readonly status: number, readonly code: string, message: string) {
    super(message);
    this.name = "PtqHttpError";
  }
}

/** Events of {@link PtqClient.events}, parsed. */
export type JobStreamEvent =
  | { readonly event: "status"; readonly job: JobView }
  | { readonly event: "progress"; readonly progress: JobProgress };

/** A client of one server. */
export class PtqClient {
  readonly #base: string;
  readonly #headers: Record<string, string>;

  /**
   * @param baseUrl `http://host:port`.
   * @param options `token`: sent as a bearer token.
   */
  constructor(baseUrl: string, options: { token?: string } = {}) {
    this.#base = baseUrl.replace(/\/+$/, "");
    this.#headers = options.token ? { authorization: `Bearer ${options.token}` } : {};
  }

  async #json<T>(path: string, init: RequestInit = {}): Promise<T> {
    const res = await fetch(`${this.#base}${path}`, {
      ...init,
      headers: { ...this.#headers, ...(init.headers as Record<string, string> | undefined) },
    });
    const body = await res.json();
    if (!res.ok) {
      throw new PtqHttpError(res.status, body?.error?.code ?? "unknown", body?.error?.message ?? res.statusText);
    }
    return body as T;
  }

  /**
   * Submits a job spec (see `server/spec.ts`).
   * @throws {PtqHttpError} on a refused request (400, 403, 413, 429, ...).
   */
  async submit(spec: Record<string, unknown>): Promise<JobView> {
    const { job } = await this.#json<{ job: JobView }>("/jobs", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(spec),
    });
    return job;
  }

  /** A job's snapshot. @throws {PtqHttpError} 404 for an unknown id. */
  status(id: string): Promise<JobView> {
    return this.#json<JobView>(`/jobs/${encodeURIComponent(id)}`);
  }

  /** Cancels (or, when finished, forgets) a job. */
  cancel(id: string): Promise<{ job: JobView; removed?: boolean }> {
    return this.#json(`/jobs/${encodeURIComponent(id)}`, { method: "DELETE" });
  }

  /** A succeeded job's summary. @throws {PtqHttpError} 409 before it succeeded. */
  async result(id: string): Promise<JobSummary> {
    return (await this.#json<{ summary: JobSummary }>(`/jobs/${encodeURIComponent(id)}/result`)).summary;
  }

  /** The job's events until it is final (status and progress, parsed). */
  async *events(id: string): AsyncGenerator<JobStreamEvent> {
    const res = await fetch(`${this.#base}/jobs/${encodeURIComponent(id)}/events`, { headers: this.#headers });
    if (!res.ok || !res.body) {
      const body = await res.json().catch(() => ({}));
      throw new PtqHttpError(res.status, body?.error?.code ?? "unknown", body?.error?.message ?? res.statusText);
    }
    for await (const e of sseEvents(res.body)) {
      if (e.event === "status") yield { event: "status", job: JSON.parse(e.data) };
      else if (e.event === "progress") yield { event: "progress", progress: JSON.parse(e.data) };
      else if (e.event === "end") return;
    }
  }

  /** Waits for a job to be final (through its events) and returns its last snapshot. */
  async wait(id: string): Promise<JobView> {
    let last: JobView | undefined;
    for await (const e of this.events(id)) if (e.event === "status") last = e.job;
    return last ?? await this.status(id);
  }
}
