/**
 * `ptq serve`: the HTTP service (`server/`) on `Deno.serve`, until SIGINT or SIGTERM.
 *
 * ```
 * ptq serve --root DIR [--root DIR ...] [--port 8787] [--host 127.0.0.1] [--token T] [--max-jobs 1]
 *   [--max-queue 16] [--max-upload 64] [--backend NAME]
 * ```
 *
 * @module
 */

import { listBackends } from "../backends/registry.ts";
import { serve } from "../server/deno.ts";
import { failure, intOption, parseCommand, UsageError } from "./common.ts";

const USAGE = `Usage: ptq serve --root DIR [options]

Serves quantization jobs over HTTP: POST /jobs (a JSON spec with ptq quantize's options, or a multipart upload),
GET /jobs/:id/events (progress as server-sent events), GET /jobs/:id/result, DELETE /jobs/:id (cancel).

Options:
  --root DIR        folder jobs may read models and texts from (repeatable; required); paths in requests are
                    relative to the roots, and nothing outside them is read (symbolic links included)
  --port N          port (default 8787; 0 picks a free one)
  --host H          interface (default 127.0.0.1, loopback only)
  --token T         require "Authorization: Bearer T" (default: the PTQ_TOKEN environment variable, else none)
  --max-jobs N      jobs running at once, each in its own worker (default 1)
  --max-queue N     jobs waiting beyond those; more are refused with 429 (default 16)
  --max-upload MB   largest request body, JSON or upload, in MiB (default 64)
  --backend NAME    backend of jobs that name none (${listBackends().join(", ")}; default ts)
  -h, --help        show this help
`;

/** Runs `ptq serve`; returns the exit status (0 after a signal, 1 on failure, 2 on a bad command line). */
export async function serveCommand(args: string[]): Promise<number> {
  const values = parseCommand("serve", USAGE, args, {
    root: { type: "string", multiple: true },
    port: { type: "string" },
    host: { type: "string" },
    token: { type: "string" },
    "max-jobs": { type: "string" },
    "max-queue": { type: "string" },
    "max-upload": { type: "string" },
    backend: { type: "string" },
  });
  if (typeof values === "number") return values;
  try {
    const roots = values.root ?? [];
    if (roots.length === 0) throw new UsageError("--root is required");
    if (values.backend && !listBackends().includes(values.backend)) {
      throw new UsageError(`--backend must be one of ${listBackends().join(", ")}, got "${values.backend}"`);
    }
    for (const r of roots) {
      const info = await Deno.stat(r).catch(() => undefined);
      if (!info?.isDirectory) throw new UsageError(`--root ${r}: no such folder`);
    }
    const token = values.token ?? Deno.env.get("PTQ_TOKEN") ?? undefined;
    const server = await serve({
      roots,
      port: intOption(values.port, "port", 8787, 0, 65535),
      hostname: values.host ?? "127.0.0.1",
      token: token || undefined,
      maxJobs: intOption(values["max-jobs"], "max-jobs", 1, 1, 256),
      maxQueued: intOption(values["max-queue"], "max-queue", 16, 0, 100_000),
      maxUploadBytes: intOption(values["max-upload"], "max-upload", 64, 1, 1 << 20) * 1024 * 1024,
      backend: values.backend,
    });
    console.error(
      `ptq serve: listening on ${server.url} (roots: ${roots.join(", ")}${token ? "; bearer token required" : ""})`,
    );
    const stop = () => {
      console.error("ptq serve: shutting down (cancelling running jobs)");
      server.shutdown();
    };
    const signals: Deno.Signal[] = ["SIGINT", "SIGTERM"];
    for (const s of signals) Deno.addSignalListener(s, stop);
    try {
      await server.finished;
    } finally {
      for (const s of signals) Deno.removeSignalListener(s, stop);
    }
    return 0;
  } catch (e) {
    return failure("serve", e, USAGE);
  }
}

if (import.meta.main) Deno.exit(await serveCommand(Deno.args));
