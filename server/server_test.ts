/**
 * The service over real HTTP on loopback, with real jobs (stories260K, bundled in examples/data) run in workers:
 * the happy path with SSE progress, every refused request with its status code, the bearer token, a full queue,
 * cancellation, uploads; after each, the server still answers.
 */

import { deepEqual, equal, ok, rejects } from "node:assert/strict";
import { encodeHeader, encodeTensor } from "../model/safetensors.ts";
import { parseLlama2cCheckpoint } from "../model/llama2c.ts";
import { PtqClient, PtqHttpError, sseEvents } from "./client.ts";
import { type PtqServer, serve, type ServeOptions } from "./deno.ts";
import type { JobView } from "./jobs.ts";

const DATA = new URL("../examples/data/", import.meta.url);

/**
 * A root folder with the model and a text, a folder outside it with a "secret", and links that try to escape:
 * `root/leak.txt` → the secret, `root/leaky/` a model folder whose tokenizer is a link to outside.
 */
async function makeFixture(): Promise<{ base: string; root: string; cleanup: () => Promise<void> }> {
  const base = await Deno.makeTempDir({ prefix: "ptq-server-test-" });
  const root = `${base}/root`, outside = `${base}/outside`;
  for (const d of [`${root}/stories260K`, `${root}/data`, `${root}/leaky`, outside]) {
    await Deno.mkdir(d, { recursive: true });
  }
  for (const f of ["stories260K.bin", "tok512.bin"]) {
    await Deno.copyFile(new URL(`stories260K/${f}`, DATA), `${root}/stories260K/${f}`);
  }
  await Deno.copyFile(new URL("tinystories/tinystories-valid.txt", DATA), `${root}/data/stories.txt`);
  await Deno.writeTextFile(`${outside}/secret.txt`, "secret");
  await Deno.symlink(`${outside}/secret.txt`, `${root}/leak.txt`);
  await Deno.copyFile(new URL("stories260K/stories260K.bin", DATA), `${root}/leaky/stories260K.bin`);
  await Deno.copyFile(new URL("stories260K/tok512.bin", DATA), `${outside}/tok512.bin`);
  await Deno.symlink(`${outside}/tok512.bin`, `${root}/leaky/tok512.bin`);
  return { base, root, cleanup: () => Deno.remove(base, { recursive: true }) };
}

/** Runs `fn` against a fresh server on a free loopback port, and always shuts it down. */
async function withServer(
  options: Partial<ServeOptions>,
  fn: (server: PtqServer, root: string) => Promise<void>,
): Promise<void> {
  const fixture = await makeFixture();
  const server = await serve({ roots: [fixture.root], port: 0, ...options });
  try {
    await fn(server, fixture.root);
  } finally {
    await server.shutdown();
    await fixture.cleanup();
  }
}

async function post(server: PtqServer, body: BodyInit, headers: Record<string, string> = {}): Promise<Response> {
  return await fetch(`${server.url}/jobs`, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body,
  });
}

/** Asserts an error response's status and code, and that the server still answers afterwards. */
async function expectError(res: Response, status: number, code: string, server: PtqServer): Promise<void> {
  const body = await res.json();
  equal(res.status, status, JSON.stringify(body));
  equal(body.error.code, code, JSON.stringify(body));
  equal(body.error.status, status);
  ok(typeof body.error.message === "string" && body.error.message.length > 0);
  equal((await fetch(`${server.url}/health`)).status, 200, "the server is still up");
}

const SMALL_RTN = { model: "stories260K/stories260K.bin", method: "rtn", bits: 4, seqlen: 128 };
/** A job long enough to cancel: GPTQ calibration over 128 windows of 256 tokens, then evaluation. */
const LONG_GPTQ = {
  model: "stories260K",
  method: "gptq",
  calib: "data/stories.txt",
  samples: 128,
  seqlen: 256,
  eval: "data/stories.txt",
};

Deno.test("server: submit → SSE progress → result, and the numbers make sense", async () => {
  await withServer({}, async (server) => {
    const res = await post(
      server,
      JSON.stringify({
        ...SMALL_RTN,
        eval: "data/stories.txt",
        windows: 4,
        baseline: true,
        save: "ptq",
        "factor-precision": "f32",
      }),
    );
    equal(res.status, 202);
    const { job } = await res.json();
    equal(res.headers.get("location"), `/jobs/${job.id}`);
    ok(["queued", "running"].includes(job.status));

    const events = await fetch(`${server.url}/jobs/${job.id}/events`);
    equal(events.headers.get("content-type"), "text/event-stream");
    const seen: { event: string; data: unknown }[] = [];
    for await (const e of sseEvents(events.body!)) seen.push({ event: e.event, data: JSON.parse(e.data) });
    const phases = seen.filter((e) => e.event === "progress").map((e) => (e.data as { phase: string }).phase);
    for (const phase of ["load", "baseline", "quantize", "eval", "save"]) {
      ok(phases.includes(phase), `saw ${phase}: ${phases}`);
    }
    const fractions = seen.filter((e) => e.event === "progress").map((e) => (e.data as { fraction: number }).fraction);
    ok(fractions.every((f, i) => i === 0 || f >= fractions[i - 1]), `fractions never go back: ${fractions}`);
    const last = seen.at(-2)!;
    equal(last.event, "status");
    equal((last.data as JobView).status, "succeeded");
    equal(seen.at(-1)!.event, "end");

    const result = await (await fetch(`${server.url}/jobs/${job.id}/result`)).json();
    const s = result.summary;
    equal(s.method, "rtn");
    equal(s.factor_precision, "f32");
    equal(s.layers, 35);
    ok(s.avg_bits > 4 && s.avg_bits < 4.5, `avg_bits ${s.avg_bits}`);
    const ppl = s.ppl["stories.txt"], fp = s.ppl_fp["stories.txt"];
    ok(Number.isFinite(ppl) && Number.isFinite(fp) && ppl >= fp && fp > 1, `ppl ${ppl}, fp ${fp}`);
    equal(s.model, "stories260K/stories260K.bin", "the summary names the model as the client did");

    // The checkpoint: listed, each file downloadable, nothing else.
    equal(s.checkpoint.format, "ptq");
    const listing = await (await fetch(`${server.url}/jobs/${job.id}/checkpoint`)).json();
    deepEqual(listing.files.map((f: { name: string }) => f.name), s.checkpoint.files);
    let total = 0;
    for (const f of listing.files) {
      const r = await fetch(`${server.url}${f.url}`);
      equal(r.status, 200);
      total += (await r.arrayBuffer()).byteLength;
    }
    ok(total >= s.checkpoint.bytes, `downloaded ${total} bytes of a ${s.checkpoint.bytes}-byte checkpoint`);
    await expectError(
      await fetch(`${server.url}/jobs/${job.id}/checkpoint/..%2F..%2Fetc%2Fpasswd`),
      404,
      "not_found",
      server,
    );
    const written = [...Deno.readDirSync(server.checkpointDir)];
    equal(written.length, 1, "one checkpoint folder on disk");

    // GET status, list; DELETE of a finished job forgets it, and its checkpoint with it.
    equal((await (await fetch(`${server.url}/jobs/${job.id}`)).json()).status, "succeeded");
    ok((await (await fetch(`${server.url}/jobs`)).json()).jobs.some((j: JobView) => j.id === job.id));
    const del = await fetch(`${server.url}/jobs/${job.id}`, { method: "DELETE" });
    equal(del.status, 200);
    equal((await del.json()).removed, true);
    await expectError(await fetch(`${server.url}/jobs/${job.id}`), 404, "not_found", server);
    await new Promise((r) => setTimeout(r, 50));
    equal([...Deno.readDirSync(server.checkpointDir)].length, 0, "the checkpoint was deleted with the job");
  });
});

Deno.test("server: malformed and forbidden requests get JSON errors and the server stays up", async () => {
  await withServer({ maxUploadBytes: 64 * 1024 }, async (server, root) => {
    await expectError(await post(server, "{not json"), 400, "bad_json", server);
    await expectError(await post(server, "[1, 2]"), 400, "bad_request", server);
    await expectError(
      await post(server, JSON.stringify({ ...SMALL_RTN, method: "awq9" })),
      400,
      "unknown_method",
      server,
    );
    await expectError(await post(server, JSON.stringify({ model: "stories260K" })), 400, "unknown_method", server);
    await expectError(await post(server, JSON.stringify({ ...SMALL_RTN, bitz: 4 })), 400, "bad_request", server);
    await expectError(await post(server, JSON.stringify({ ...SMALL_RTN, bits: 9 })), 400, "bad_request", server);
    await expectError(await post(server, JSON.stringify({ ...SMALL_RTN, bits: "4" })), 400, "bad_request", server);
    await expectError(
      await post(server, JSON.stringify({ ...SMALL_RTN, "factor-precision": "f16" })),
      400,
      "bad_request",
      server,
    );
    await expectError(
      await post(
        server,
        JSON.stringify({ ...SMALL_RTN, method: "oac", calib: "data/stories.txt", "oac-role": "salience" }),
      ),
      400,
      "bad_request",
      server,
    );
    await expectError(
      await post(
        server,
        JSON.stringify({
          ...SMALL_RTN,
          method: "oac",
          engine: "vptq",
          calib: "data/stories.txt",
          "oac-rows": "coupled",
        }),
      ),
      400,
      "unknown_method",
      server,
    );
    await expectError(
      await post(server, JSON.stringify({ model: "stories260K", method: "gptq" })),
      400,
      "bad_request",
      server,
    );
    await expectError(
      await post(server, JSON.stringify({ ...SMALL_RTN, backend: "cuda" })),
      400,
      "bad_request",
      server,
    );

    // Paths: absolute outside, `..` traversal (relative and absolute), links out of the roots, missing files.
    await expectError(await post(server, JSON.stringify({ ...SMALL_RTN, model: "/etc" })), 403, "forbidden", server);
    await expectError(
      await post(server, JSON.stringify({ ...SMALL_RTN, model: "../outside/tok512.bin" })),
      403,
      "forbidden",
      server,
    );
    await expectError(
      await post(server, JSON.stringify({ ...SMALL_RTN, eval: `${root}/data/../../outside/secret.txt` })),
      403,
      "forbidden",
      server,
    );
    await expectError(
      await post(server, JSON.stringify({ ...SMALL_RTN, eval: "stories260K/../../../../etc/passwd" })),
      403,
      "forbidden",
      server,
    );
    await expectError(await post(server, JSON.stringify({ ...SMALL_RTN, eval: "leak.txt" })), 403, "forbidden", server);
    await expectError(await post(server, JSON.stringify({ ...SMALL_RTN, model: "leaky" })), 403, "forbidden", server);
    await expectError(
      await post(server, JSON.stringify({ ...SMALL_RTN, model: "leaky/stories260K.bin" })),
      403,
      "forbidden",
      server,
    );
    await expectError(
      await post(server, JSON.stringify({ ...SMALL_RTN, eval: "nope.txt" })),
      400,
      "bad_request",
      server,
    );
    await expectError(await post(server, JSON.stringify({ ...SMALL_RTN, eval: "data" })), 400, "bad_request", server);

    // Bodies: over the limit (with and without a length), another content type.
    const big = JSON.stringify({ ...SMALL_RTN, "eval-text": "x".repeat(100 * 1024) });
    await expectError(await post(server, big), 413, "payload_too_large", server);
    const chunked = new ReadableStream<Uint8Array>({
      start(c) {
        for (let i = 0; i < 10; i++) c.enqueue(new Uint8Array(16 * 1024).fill(0x20));
        c.close();
      },
    });
    await expectError(await post(server, chunked), 413, "payload_too_large", server);
    await expectError(await post(server, "x", { "content-type": "text/plain" }), 415, "unsupported_media_type", server);

    // Unknown jobs and routes.
    const id = "00000000-0000-0000-0000-000000000000";
    for (const path of [`/jobs/${id}`, `/jobs/${id}/events`, `/jobs/${id}/result`, "/nowhere"]) {
      await expectError(await fetch(`${server.url}${path}`), 404, "not_found", server);
    }
    await expectError(await fetch(`${server.url}/jobs/${id}`, { method: "DELETE" }), 404, "not_found", server);

    equal(server.jobs.stats().submitted, 0, "no refused request made a job");
  });
});

Deno.test("server: bearer token", async () => {
  await withServer({ token: "s3cret" }, async (server) => {
    equal((await fetch(`${server.url}/health`)).status, 200, "health needs no token");
    const missing = await post(server, JSON.stringify(SMALL_RTN));
    equal(missing.headers.get("www-authenticate"), 'Bearer realm="ptq"');
    await expectError(missing, 401, "unauthorized", server);
    await expectError(
      await post(server, JSON.stringify(SMALL_RTN), { authorization: "Bearer wrong" }),
      401,
      "unauthorized",
      server,
    );
    await expectError(
      await post(server, JSON.stringify(SMALL_RTN), { authorization: "Basic s3cret" }),
      401,
      "unauthorized",
      server,
    );
    await expectError(await fetch(`${server.url}/jobs`), 401, "unauthorized", server);

    const client = new PtqClient(server.url, { token: "s3cret" });
    const job = await client.submit(SMALL_RTN);
    equal((await client.wait(job.id)).status, "succeeded");
    equal((await client.result(job.id)).layers, 35);
  });
});

Deno.test("server: a full queue answers 429, and cancelling makes room", async () => {
  await withServer({ maxJobs: 1, maxQueued: 1 }, async (server) => {
    const client = new PtqClient(server.url);
    const a = await client.submit(LONG_GPTQ);
    const b = await client.submit(SMALL_RTN);
    equal((await client.status(b.id)).position, 0, "b waits first in line");
    const refused = await post(server, JSON.stringify(SMALL_RTN));
    ok(refused.headers.get("retry-after"));
    await expectError(refused, 429, "too_many_jobs", server);
    await rejects(client.submit(SMALL_RTN), (e) => e instanceof PtqHttpError && e.status === 429);

    // Cancel the queued one (at once) and the running one (cooperatively).
    equal((await client.cancel(b.id)).job.status, "cancelled");
    const t0 = performance.now();
    const cancelling = await client.cancel(a.id);
    equal(cancelling.job.cancelRequested, true);
    equal((await client.wait(a.id)).status, "cancelled");
    const ms = performance.now() - t0;
    ok(ms < 4000, `cancelled in ${ms.toFixed(0)} ms`);
    await expectError(await fetch(`${server.url}/jobs/${a.id}/result`), 409, "conflict", server);

    const c = await client.submit(SMALL_RTN);
    equal((await client.wait(c.id)).status, "succeeded");
    deepEqual(
      { ...server.jobs.stats(), retained: 0 },
      { running: 0, queued: 0, retained: 0, submitted: 3, succeeded: 1, failed: 0, cancelled: 2, rejected: 2 },
    );
  });
});

Deno.test("server: cancel a running job from its progress stream", async () => {
  await withServer({}, async (server) => {
    const client = new PtqClient(server.url);
    const job = await client.submit(LONG_GPTQ);
    let cancelledAt = 0;
    const statuses: string[] = [];
    for await (const e of client.events(job.id)) {
      if (e.event === "progress" && e.progress.phase === "quantize" && !cancelledAt) {
        cancelledAt = performance.now();
        await client.cancel(job.id);
      }
      if (e.event === "status") statuses.push(e.job.status);
    }
    equal(statuses.at(-1), "cancelled");
    const ms = performance.now() - cancelledAt;
    ok(ms < 3000, `stopped ${ms.toFixed(0)} ms after the request`);
    // A failed job is reported as such, not as cancelled: a text shorter than one window.
    const failing = await client.submit({ ...SMALL_RTN, "eval-text": "Once upon a time." });
    const view = await client.wait(failing.id);
    equal(view.status, "failed");
    equal(view.error?.name, "OptionError");
    await expectError(await fetch(`${server.url}/jobs/${failing.id}/result`), 409, "conflict", server);
  });
});

/** stories260K as a Hugging Face safetensors file + config.json (RoPE pairing differs; fine for a smoke test). */
async function stories260KAsSafetensors(): Promise<
  { bytes: Uint8Array<ArrayBuffer>; config: Record<string, unknown> }
> {
  const loaded = parseLlama2cCheckpoint(await Deno.readFile(new URL("stories260K/stories260K.bin", DATA)), "s");
  const entries = [...loaded.weights].filter(([n]) => n !== "lm_head.weight").map(([name, m]) => ({
    name,
    dtype: "F32" as const,
    shape: m.shape[0] === 1 ? [m.shape[1]] : [...m.shape],
    data: m.data,
  }));
  const { bytes: header } = encodeHeader(entries);
  const parts = [header, ...entries.map((e) => encodeTensor("F32", e.data, e.data.length))];
  const bytes = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) bytes.set(p, off), off += p.length;
  const c = loaded.config;
  return {
    bytes,
    config: {
      model_type: "llama",
      hidden_size: c.hiddenSize,
      intermediate_size: c.intermediateSize,
      num_hidden_layers: c.numLayers,
      num_attention_heads: c.numHeads,
      num_key_value_heads: c.numKvHeads,
      vocab_size: c.vocabSize,
      rms_norm_eps: c.rmsNormEps,
      max_position_embeddings: c.maxPositionEmbeddings,
      tie_word_embeddings: true,
    },
  };
}

Deno.test("server: uploaded safetensors model, and an oversize upload", async () => {
  const { bytes, config } = await stories260KAsSafetensors();
  const tokenizer = await Deno.readFile(new URL("stories260K/tok512.bin", DATA));
  const text = (await Deno.readTextFile(new URL("tinystories/tinystories-valid.txt", DATA))).slice(0, 8000);
  const form = () => {
    const f = new FormData();
    f.set(
      "spec",
      JSON.stringify({ method: "gptq", bits: 3, "calib-text": text, samples: 4, seqlen: 64, "eval-text": text }),
    );
    f.set("model", new File([bytes], "model.safetensors"));
    f.set("config", JSON.stringify(config));
    f.set("tokenizer", new File([tokenizer], "tok512.bin"));
    return f;
  };
  await withServer({ maxUploadBytes: 2 * 1024 * 1024 }, async (server) => {
    const res = await fetch(`${server.url}/jobs`, { method: "POST", body: form() });
    equal(res.status, 202);
    const { job } = await res.json();
    const client = new PtqClient(server.url);
    const view = await client.wait(job.id);
    equal(view.status, "succeeded", JSON.stringify(view.error));
    const s = await client.result(job.id);
    equal(s.model, "model.safetensors");
    equal(s.method, "gptq");
    ok(Number.isFinite(s.ppl["eval-text"]));

    // Missing pieces of an upload.
    const noConfig = form();
    noConfig.delete("config");
    await expectError(
      await fetch(`${server.url}/jobs`, { method: "POST", body: noConfig }),
      400,
      "bad_request",
      server,
    );
    const withSave = form();
    withSave.set("spec", JSON.stringify({ method: "rtn", save: "ptq" }));
    await expectError(
      await fetch(`${server.url}/jobs`, { method: "POST", body: withSave }),
      400,
      "bad_request",
      server,
    );
    const withModelPath = form();
    withModelPath.set("spec", JSON.stringify({ method: "rtn", model: "stories260K" }));
    await expectError(
      await fetch(`${server.url}/jobs`, { method: "POST", body: withModelPath }),
      400,
      "bad_request",
      server,
    );
  });
  await withServer({ maxUploadBytes: 512 * 1024 }, async (server) => {
    await expectError(
      await fetch(`${server.url}/jobs`, { method: "POST", body: form() }),
      413,
      "payload_too_large",
      server,
    );
  });
});
