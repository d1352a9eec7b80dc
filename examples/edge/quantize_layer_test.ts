/** The edge handler, called directly (no server): both request forms, the library's numbers, and the refusals. */

import { deepEqual, equal, ok } from "node:assert/strict";
import { gptq } from "../../algorithms/gptq.ts";
import { hessianOf } from "../../algorithms/hessian.ts";
import { rtn } from "../../algorithms/rtn.ts";
import { createRng, randomNormal } from "../../core/random.ts";
import { matrix } from "../../core/tensor.ts";
import handler, { LIMITS } from "./quantize_layer.ts";

const rng = createRng(7);
const rows = 16, cols = 32, tokens = 128;
const w = matrix(rows, cols, randomNormal(rng, rows * cols, 0.05));
const x = matrix(tokens, cols, randomNormal(rng, tokens * cols));

function le(...arrays: Float32Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(arrays.reduce((n, a) => n + a.length * 4, 0));
  const v = new DataView(out.buffer);
  let o = 0;
  for (const a of arrays) for (const f of a) v.setFloat32(o, f, true), o += 4;
  return out;
}

const b64 = (a: Float32Array) => btoa(String.fromCharCode(...le(a)));

function post(body: BodyInit, type = "application/json", query = ""): Promise<Response> {
  return handler.fetch(
    new Request(`http://edge.test/${query}`, { method: "POST", headers: { "content-type": type }, body }),
  );
}

async function errorOf(res: Response): Promise<[number, string]> {
  const body = await res.json();
  equal(body.error.status, res.status);
  return [res.status, body.error.code];
}

Deno.test("edge: GPTQ from JSON arrays and base64 equals the library", async () => {
  const expected = await gptq(w, await hessianOf(x), { bits: 3, groupSize: 8, actOrder: true });
  const spec = { method: "gptq", bits: 3, group: 8, "act-order": true };
  const arrays = await (await post(JSON.stringify({
    ...spec,
    w: { shape: [rows, cols], data: Array.from(w.data) },
    x: { shape: [tokens, cols], data: Array.from(x.data) },
  }))).json();
  equal(arrays.encoding, "json");
  equal(arrays.stats.layerLoss, expected.stats.layerLoss);
  equal(arrays.stats.avgBits, expected.stats.avgBits);
  deepEqual(arrays.dequantized, Array.from(expected.dequantized.data));
  deepEqual(arrays.codes, Array.from(expected.codes!));
  deepEqual(arrays.permutation, Array.from(expected.permutation!));

  const base64 = await (await post(JSON.stringify({
    ...spec,
    w: { shape: [rows, cols], data: b64(w.data) },
    x: { shape: [tokens, cols], data: b64(x.data) },
  }))).json();
  equal(base64.encoding, "base64");
  equal(base64.stats.layerLoss, expected.stats.layerLoss);
  equal(base64.dequantized, b64(expected.dequantized.data));
});

Deno.test("edge: raw float32 with x, with h, and RTN", async () => {
  const h = await hessianOf(x);
  const expected = await gptq(w, h, { bits: 4 });
  const withX = await post(le(w.data, x.data), "application/octet-stream", `?rows=${rows}&cols=${cols}&x=${tokens}`);
  equal(withX.status, 200);
  equal(withX.headers.get("content-type"), "application/octet-stream");
  const got = new Float32Array(await withX.arrayBuffer());
  deepEqual(got, expected.dequantized.data);
  equal(JSON.parse(withX.headers.get("x-ptq-stats")!).layerLoss, expected.stats.layerLoss);

  const hf32 = Float32Array.from(h.data);
  const withH = await post(
    le(w.data, hf32),
    "application/octet-stream",
    `?rows=${rows}&cols=${cols}&h=1&format=json`,
  );
  const body = await withH.json();
  equal(body.stats.layerLoss, (await gptq(w, matrix(cols, cols, hf32), { bits: 4 })).stats.layerLoss);

  const r = await post(le(w.data), "application/octet-stream", `?method=rtn&bits=2&rows=${rows}&cols=${cols}`);
  deepEqual(new Float32Array(await r.arrayBuffer()), (await rtn(w, undefined, { bits: 2 })).dequantized.data);
});

Deno.test("edge: refusals", async () => {
  const wField = { shape: [rows, cols], data: Array.from(w.data) };
  deepEqual(await errorOf(await post("{oops")), [400, "bad_json"]);
  deepEqual(await errorOf(await post(JSON.stringify({ method: "awq", w: wField }))), [400, "unknown_method"]);
  deepEqual(await errorOf(await post(JSON.stringify({ method: "gptq", w: wField }))), [400, "bad_request"]);
  deepEqual(await errorOf(await post(JSON.stringify({ w: { shape: [rows, cols], data: [1, 2] } }))), [
    400,
    "bad_request",
  ]);
  deepEqual(
    await errorOf(await post(JSON.stringify({ method: "rtn", w: { shape: [1, 2], data: [1, null] } }))),
    [400, "bad_request"],
  );
  deepEqual(
    await errorOf(
      await post(JSON.stringify({ w: wField, x: { shape: [4, cols + 1], data: Array(4 * (cols + 1)).fill(0) } })),
    ),
    [400, "bad_request"],
  );
  deepEqual(
    await errorOf(await post(le(w.data), "application/octet-stream", `?rows=${rows}&cols=${cols}&x=3`)),
    [400, "bad_request"],
  );
  deepEqual(
    await errorOf(await post(le(w.data), "application/octet-stream", `?rows=1&cols=${LIMITS.maxCols + 1}`)),
    [413, "payload_too_large"],
  );
  const huge = new ReadableStream<Uint8Array>({
    pull(c) {
      c.enqueue(new Uint8Array(1 << 20));
    },
  });
  deepEqual(
    await errorOf(await post(huge, "application/octet-stream", `?rows=1024&cols=1024&x=4096`)),
    [413, "payload_too_large"],
  );
  deepEqual(await errorOf(await post("x", "text/plain")), [415, "unsupported_media_type"]);
  const put = await handler.fetch(new Request("http://edge.test/", { method: "PUT" }));
  equal(put.headers.get("allow"), "GET, POST");
  deepEqual(await errorOf(put), [405, "method_not_allowed"]);
  const usage = await (await handler.fetch(new Request("http://edge.test/"))).json();
  ok(usage.methods.includes("gptq"));
});
