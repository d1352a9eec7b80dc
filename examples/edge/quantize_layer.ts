/**
 * An edge function that quantizes one linear layer: a fetch handler (`export default { fetch }`) using only web APIs,
 * no file system, so it runs under `deno serve`, Deno Deploy, Cloudflare Workers, Vercel's edge runtime or a browser
 * service worker (bundled with esbuild for those that do not read TypeScript).
 *
 * ```sh
 * deno serve --port 8000 examples/edge/quantize_layer.ts
 * ```
 *
 * `POST /` with JSON:
 *
 * ```json
 * { "method": "gptq", "bits": 4, "group": 128, "act-order": true,
 *   "w": { "shape": [rows, cols], "data": [ ... ] },
 *   "x": { "shape": [tokens, cols], "data": "<base64 float32 little-endian>" } }
 * ```
 *
 * `w` is the weight `[out, in]`; the calibration is either `x` (inputs, `H = 2/N·XᵀX` is formed here) or `h` (the
 * Hessian `[cols, cols]`); RTN needs neither. `data` is an array of numbers or base64 of little-endian float32. The
 * answer has the stats (`layerLoss`, `avgBits`, `seconds`), the grid, `dequantized`, `codes` (uint8), `scales` and
 * `zeros` (`[rows, groups]`), and with act-order `permutation` and `groupIndex`; arrays come back in the encoding `w`
 * came in (`"encoding": "base64"` or `"json"` overrides).
 *
 * `POST /?method=gptq&bits=4&rows=R&cols=C&x=N` with `Content-Type: application/octet-stream`: the body is W (R·C
 * float32, little-endian) followed by X (N·C) — or by H (C·C) with `h=1` instead of `x=N`. The answer is the
 * dequantized W as raw float32 with the stats in an `X-Ptq-Stats` header (JSON), or the JSON answer with
 * `&format=json`. Options in the query: `method`, `bits`, `group`, `act-order`, `sym`, `mse`, `damping`,
 * `static-groups`.
 *
 * Errors are `{"error": {"status", "code", "message"}}` (the service's shape): 400, 405, 413, 415.
 *
 * @module
 */

import { gptq } from "../../algorithms/gptq.ts";
import { hessianOf } from "../../algorithms/hessian.ts";
import type { QuantizedLayer } from "../../algorithms/result.ts";
import { rtn } from "../../algorithms/rtn.ts";
import { PtqError } from "../../core/errors.ts";
import type { FloatArray, Matrix } from "../../core/tensor.ts";

/**
 * Bounds that keep one request within an edge isolate's 128 MB (Cloudflare Workers, Vercel's edge runtime). Measured
 * with the TS backend in Deno: GPTQ on a 1024×1024 layer with 1024 calibration rows peaks about 90 MB above the
 * runtime's own memory (the Hessian and its factors are float64, W is copied a few times). Raise them where isolates
 * get more (Deno Deploy: 512 MB).
 */
export const LIMITS = {
  /** Largest body in bytes (W and X as float32 at the limits below, with room to spare). */
  maxBodyBytes: 24 * 1024 * 1024,
  /** Most input columns (the Hessian is `cols × cols`). */
  maxCols: 1024,
  /** Most weights (`rows · cols`). */
  maxWeights: 1024 * 1024,
  /** Most calibration rows. */
  maxTokens: 4096,
} as const;

class RequestError extends Error {
  constructor(readonly status: number, readonly code: string, message: string) {
    super(message);
  }
}

const bad = (message: string) => new RequestError(400, "bad_request", message);

function json(body: unknown, status = 200, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json", ...headers } });
}

/** Options shared by both request forms. */
interface LayerOptions {
  method: "gptq" | "rtn";
  bits: number;
  group: number;
  actOrder: boolean;
  staticGroups: boolean;
  symmetric: boolean;
  mse: boolean;
  damping: number;
}

function options(get: (key: string) => unknown): LayerOptions {
  const method = get("method") ?? "gptq";
  if (method !== "gptq" && method !== "rtn") {
    throw new RequestError(400, "unknown_method", `unknown method ${JSON.stringify(method)}; available: gptq, rtn`);
  }
  const int = (key: string, fallback: number, min: number, max: number) => {
    const raw = get(key);
    const v = typeof raw === "string" ? Number(raw) : raw ?? fallback;
    if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) {
      throw bad(`"${key}" must be an integer in ${min}..${max}`);
    }
    return v;
  };
  const flag = (key: string) => {
    const v = get(key);
    if (v === undefined || v === false || v === "0" || v === "false") return false;
    if (v === true || v === "" || v === "1" || v === "true") return true;
    throw bad(`"${key}" must be true or false`);
  };
  const rawDamping = get("damping");
  const damping = typeof rawDamping === "string" ? Number(rawDamping) : rawDamping ?? 0.01;
  if (typeof damping !== "number" || !Number.isFinite(damping) || damping < 0) throw bad(`"damping" must be ≥ 0`);
  return {
    method,
    bits: int("bits", 4, method === "gptq" ? 2 : 1, 8),
    group: int("group", 0, 0, LIMITS.maxCols),
    actOrder: flag("act-order"),
    staticGroups: flag("static-groups"),
    symmetric: flag("sym"),
    mse: flag("mse"),
    damping,
  };
}

function base64ToBytes(s: string): Uint8Array {
  let bin: string;
  try {
    bin = atob(s);
  } catch {
    throw bad("invalid base64");
  }
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function bytesToBase64(bytes: Uint8Array): string {
  let s = "";
  // In slices: String.fromCharCode(...huge) would exceed the argument limit.
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

/** Little-endian float32 from bytes (copied, so alignment and host byte order do not matter). */
function floatsLE(bytes: Uint8Array, count: number): Float32Array {
  const out = new Float32Array(count);
  const v = new DataView(bytes.buffer, bytes.byteOffset, count * 4);
  for (let i = 0; i < count; i++) out[i] = v.getFloat32(4 * i, true);
  return out;
}

function floatBytesLE(a: Float32Array): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(a.length * 4);
  const v = new DataView(out.buffer);
  for (let i = 0; i < a.length; i++) v.setFloat32(4 * i, a[i], true);
  return out;
}

/** A `{ shape, data }` field of the JSON form. */
function matrixField(value: unknown, name: string): { m: Matrix; base64: boolean } {
  if (typeof value !== "object" || value === null) {
    throw bad(`"${name}" must be { "shape": [rows, cols], "data": ... }`);
  }
  const { shape, data } = value as { shape?: unknown; data?: unknown };
  if (
    !Array.isArray(shape) || shape.length !== 2 || !shape.every((d) => Number.isInteger(d) && d > 0)
  ) throw bad(`"${name}.shape" must be [rows, cols] of positive integers`);
  const [rows, cols] = shape as [number, number];
  // Refused before allocating: the sizes below are checked precisely once every field is read.
  if (rows * cols * 4 > LIMITS.maxBodyBytes) throw new RequestError(413, "payload_too_large", `"${name}" is too large`);
  let values: Float32Array;
  if (typeof data === "string") {
    const bytes = base64ToBytes(data);
    if (bytes.length !== rows * cols * 4) {
      throw bad(`"${name}.data" holds ${bytes.length} bytes, not ${rows * cols} float32`);
    }
    values = floatsLE(bytes, rows * cols);
  } else if (Array.isArray(data)) {
    if (data.length !== rows * cols) throw bad(`"${name}.data" has ${data.length} values, not ${rows}·${cols}`);
    values = new Float32Array(rows * cols);
    for (let i = 0; i < data.length; i++) {
      const x = data[i];
      if (typeof x !== "number" || !Number.isFinite(x)) throw bad(`"${name}.data[${i}]" is not a finite number`);
      values[i] = x;
    }
  } else throw bad(`"${name}.data" must be an array of numbers or base64 float32`);
  return { m: { data: values, shape: [rows, cols] }, base64: typeof data === "string" };
}

function checkSizes(w: Matrix, x?: Matrix, h?: Matrix): void {
  const [rows, cols] = w.shape;
  if (cols > LIMITS.maxCols) throw new RequestError(413, "payload_too_large", `at most ${LIMITS.maxCols} columns`);
  if (rows * cols > LIMITS.maxWeights) {
    throw new RequestError(413, "payload_too_large", `at most ${LIMITS.maxWeights} weights`);
  }
  if (x && x.shape[1] !== cols) throw bad(`x has ${x.shape[1]} columns, w has ${cols}`);
  if (x && x.shape[0] > LIMITS.maxTokens) {
    throw new RequestError(413, "payload_too_large", `at most ${LIMITS.maxTokens} rows of x`);
  }
  if (h && (h.shape[0] !== cols || h.shape[1] !== cols)) throw bad(`h must be [${cols}, ${cols}]`);
}

async function quantize(o: LayerOptions, w: Matrix, x?: Matrix, h?: Matrix): Promise<QuantizedLayer> {
  checkSizes(w, x, h);
  const hessian: Matrix<FloatArray> | undefined = h ?? (x ? await hessianOf(x) : undefined);
  if (o.method === "rtn") {
    return await rtn(w, hessian, { bits: o.bits, groupSize: o.group, symmetric: o.symmetric, mse: o.mse });
  }
  if (!hessian) throw bad("gptq needs calibration: x (inputs) or h (Hessian)");
  return await gptq(w, hessian, {
    bits: o.bits,
    groupSize: o.group,
    actOrder: o.actOrder,
    staticGroups: o.staticGroups,
    symmetric: o.symmetric,
    mse: o.mse,
    damping: o.damping,
  });
}

function answer(q: QuantizedLayer, base64: boolean): Record<string, unknown> {
  const f32 = (a: Float32Array) => base64 ? bytesToBase64(floatBytesLE(a)) : Array.from(a);
  const ints = (a: Uint8Array | Int32Array) =>
    base64 ? bytesToBase64(new Uint8Array(a.buffer, a.byteOffset, a.byteLength)) : Array.from(a);
  return {
    method: q.method,
    shape: q.dequantized.shape,
    stats: q.stats,
    grid: q.grid,
    groupSize: q.groupSize,
    encoding: base64 ? "base64" : "json",
    dequantized: f32(q.dequantized.data),
    ...(q.codes ? { codes: ints(q.codes) } : {}),
    ...(q.params ? { groups: q.params.groups, scales: f32(q.params.scale), zeros: f32(q.params.zero) } : {}),
    // Int32 arrays in base64 are little-endian int32, as every engine that runs this stores them.
    ...(q.permutation ? { permutation: ints(q.permutation) } : {}),
    ...(q.groupIndex && q.permutation ? { groupIndex: ints(q.groupIndex) } : {}),
  };
}

async function readBody(req: Request): Promise<Uint8Array> {
  const declared = Number(req.headers.get("content-length") ?? NaN);
  if (declared > LIMITS.maxBodyBytes) throw new RequestError(413, "payload_too_large", "body too large");
  if (!req.body) return new Uint8Array(0);
  // Counted while reading: a body without a length (chunked) must not grow past the limit either.
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of req.body) {
    size += chunk.length;
    if (size > LIMITS.maxBodyBytes) throw new RequestError(413, "payload_too_large", "body too large");
    chunks.push(chunk);
  }
  const out = new Uint8Array(size);
  let off = 0;
  for (const c of chunks) out.set(c, off), off += c.length;
  return out;
}

async function handleJson(req: Request): Promise<Response> {
  let body: unknown;
  try {
    body = JSON.parse(new TextDecoder().decode(await readBody(req)));
  } catch (e) {
    if (e instanceof RequestError) throw e;
    throw new RequestError(400, "bad_json", `the body is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof body !== "object" || body === null || Array.isArray(body)) throw bad("the body must be a JSON object");
  const o = body as Record<string, unknown>;
  const known = [
    "method",
    "bits",
    "group",
    "act-order",
    "static-groups",
    "sym",
    "mse",
    "damping",
    "w",
    "x",
    "h",
    "encoding",
  ];
  const unknown = Object.keys(o).filter((k) => !known.includes(k));
  if (unknown.length) throw bad(`unknown keys: ${unknown.join(", ")}`);
  const opts = options((k) => o[k]);
  if (o.w === undefined) throw bad(`"w" is required`);
  if (o.x !== undefined && o.h !== undefined) throw bad(`give "x" or "h", not both`);
  const w = matrixField(o.w, "w");
  const x = o.x === undefined ? undefined : matrixField(o.x, "x").m;
  const h = o.h === undefined ? undefined : matrixField(o.h, "h").m;
  if (o.encoding !== undefined && o.encoding !== "base64" && o.encoding !== "json") {
    throw bad(`"encoding" must be "base64" or "json"`);
  }
  const q = await quantize(opts, w.m, x, h);
  return json(answer(q, o.encoding === undefined ? w.base64 : o.encoding === "base64"));
}

async function handleRaw(req: Request, url: URL): Promise<Response> {
  const p = url.searchParams;
  const known = [
    "method",
    "bits",
    "group",
    "act-order",
    "static-groups",
    "sym",
    "mse",
    "damping",
    "rows",
    "cols",
    "x",
    "h",
    "format",
  ];
  const unknown = [...p.keys()].filter((k) => !known.includes(k));
  if (unknown.length) throw bad(`unknown query parameters: ${unknown.join(", ")}`);
  const opts = options((k) => p.get(k) ?? undefined);
  const dim = (key: string, min: number) => {
    const v = Number(p.get(key));
    if (!Number.isInteger(v) || v < min) throw bad(`query parameter "${key}" must be an integer ≥ ${min}`);
    return v;
  };
  const rows = dim("rows", 1), cols = dim("cols", 1);
  const tokens = p.has("x") ? dim("x", 1) : 0;
  const withH = p.get("h") === "1";
  if (tokens && withH) throw bad(`give x=N or h=1, not both`);
  checkSizes({ data: new Float32Array(0), shape: [rows, cols] });
  if (tokens > LIMITS.maxTokens) {
    throw new RequestError(413, "payload_too_large", `at most ${LIMITS.maxTokens} rows of x`);
  }
  const extra = tokens ? tokens * cols : withH ? cols * cols : 0;
  const bytes = await readBody(req);
  const expected = 4 * (rows * cols + extra);
  if (bytes.length !== expected) {
    throw bad(
      `the body has ${bytes.length} bytes; rows=${rows}, cols=${cols}${
        tokens ? `, x=${tokens}` : withH ? ", h=1" : ""
      } need ${expected}`,
    );
  }
  const w: Matrix = { data: floatsLE(bytes, rows * cols), shape: [rows, cols] };
  const tail = bytes.subarray(4 * rows * cols);
  const x: Matrix | undefined = tokens ? { data: floatsLE(tail, tokens * cols), shape: [tokens, cols] } : undefined;
  const h: Matrix | undefined = withH ? { data: floatsLE(tail, cols * cols), shape: [cols, cols] } : undefined;
  const q = await quantize(opts, w, x, h);
  if (p.get("format") === "json") return json(answer(q, true));
  return new Response(floatBytesLE(q.dequantized.data), {
    headers: {
      "content-type": "application/octet-stream",
      "x-ptq-stats": JSON.stringify({ ...q.stats, method: q.method, shape: q.dequantized.shape }),
    },
  });
}

const USAGE = {
  usage: "POST JSON { method, bits, group, act-order, w: { shape, data }, x | h } or raw float32 with " +
    "?rows=R&cols=C&x=N (or h=1); see examples/edge/quantize_layer.ts",
  methods: ["gptq", "rtn"],
  limits: LIMITS,
};

/** The fetch handler (`deno serve` and edge runtimes call `fetch`). */
const handler: { fetch(req: Request): Promise<Response> } = {
  async fetch(req: Request): Promise<Response> {
    try {
      const url = new URL(req.url);
      if (req.method === "GET") return json(USAGE);
      if (req.method !== "POST") {
        throw new RequestError(405, "method_not_allowed", `${req.method} is not allowed; POST a layer`);
      }
      const type = (req.headers.get("content-type") ?? "").split(";")[0].trim().toLowerCase();
      if (type === "application/json") return await handleJson(req);
      if (type === "application/octet-stream") return await handleRaw(req, url);
      throw new RequestError(415, "unsupported_media_type", "send application/json or application/octet-stream");
    } catch (e) {
      // ptq's own errors (non-finite weights, bad shapes, options) are the client's input: 400.
      const err = e instanceof RequestError
        ? e
        : e instanceof PtqError
        ? new RequestError(400, "bad_request", e.message)
        : new RequestError(500, "internal", "internal error");
      if (err.status === 500) console.error(e);
      return json(
        { error: { status: err.status, code: err.code, message: err.message } },
        err.status,
        err.status === 405 ? { allow: "GET, POST" } : {},
      );
    }
  },
};

export default handler;
