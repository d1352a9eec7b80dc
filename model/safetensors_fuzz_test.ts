/**
 * Seeded fuzzing of the safetensors reader: thousands of mutated headers and truncated files must each either load
 * (when the mutation left the file valid, and then every tensor must read back in bounds) or fail with a
 * FormatError, never another exception type, and all within a bounded time.
 */

import assert from "node:assert/strict";
import { FormatError } from "../core/errors.ts";
import { createRng, type Rng } from "../core/random.ts";
import {
  DTYPE_SIZES,
  encodeHeader,
  memorySource,
  openSafetensorsSource,
  type SafetensorsDtype,
} from "./safetensors.ts";

const DTYPES = Object.keys(DTYPE_SIZES) as SafetensorsDtype[];
const enc = new TextEncoder(), dec = new TextDecoder();

/** A small valid file with random tensors and data. */
function validFile(rng: Rng): Uint8Array {
  const n = 1 + rng.int(5);
  const entries = Array.from({ length: n }, (_, i) => ({
    name: `t${i}.${rng.int(100)}`,
    dtype: DTYPES[rng.int(DTYPES.length)],
    shape: Array.from({ length: rng.int(4) }, () => rng.int(5)),
  }));
  const { bytes: header, sizes } = encodeHeader(
    entries,
    rng.int(2) ? { format: "pt", k: String(rng.int(9)) } : undefined,
  );
  const data = sizes.reduce((a, b) => a + b, 0);
  const out = new Uint8Array(header.length + data);
  out.set(header);
  for (let i = header.length; i < out.length; i++) out[i] = rng.int(256);
  return out;
}

function headerOf(file: Uint8Array): { json: string; data: Uint8Array } {
  const n = Number(new DataView(file.buffer, file.byteOffset).getBigUint64(0, true));
  return { json: dec.decode(file.subarray(8, 8 + n)), data: file.subarray(8 + n) };
}

function assemble(json: string | Uint8Array, data: Uint8Array, lengthField?: bigint): Uint8Array {
  const j = typeof json === "string" ? enc.encode(json) : json;
  const out = new Uint8Array(8 + j.length + data.length);
  new DataView(out.buffer).setBigUint64(0, lengthField ?? BigInt(j.length), true);
  out.set(j, 8);
  out.set(data, 8 + j.length);
  return out;
}

const ODD_VALUES: unknown[] = [
  -1,
  0,
  1,
  2.5,
  1e300,
  -0,
  2 ** 53,
  2 ** 64,
  "4",
  null,
  true,
  [],
  [1, 2],
  {},
  "F32",
  "",
  "\u0000",
];
const DTYPE_STRINGS = [...DTYPES, "f32", "F128", "", "FLOAT", "BF16 ", "Q4_0", "F8_E4M3FN", "I4", "U1", "C64"];

function pick<T>(rng: Rng, xs: readonly T[]): T {
  return xs[rng.int(xs.length)];
}

/** Applies one structural mutation to a parsed header object. */
function mutateJson(rng: Rng, h: Record<string, Record<string, unknown>>): void {
  const names = Object.keys(h).filter((k) => k !== "__metadata__");
  const name = names.length ? pick(rng, names) : "__metadata__";
  // An earlier mutation may have replaced the entry by a non-object; start from an empty one then.
  const current = h[name] as unknown;
  const e = typeof current === "object" && current !== null ? current as Record<string, unknown> : (h[name] = {});
  switch (rng.int(9)) {
    case 0: // dtype strings
      e.dtype = rng.int(4) ? pick(rng, DTYPE_STRINGS) : pick(rng, ODD_VALUES);
      break;
    case 1: { // offsets: nudge, swap, replace
      const off = Array.isArray(e.data_offsets) ? [...e.data_offsets as number[]] : [0, 0];
      const k = rng.int(2);
      const r = rng.int(4);
      if (r === 0) off[k] += rng.int(17) - 8;
      else if (r === 1) off.reverse();
      else if (r === 2) off[k] = pick(rng, ODD_VALUES) as number;
      else off.push(rng.int(10));
      e.data_offsets = off;
      break;
    }
    case 2: { // shape
      const shape = Array.isArray(e.shape) ? [...e.shape as unknown[]] : [];
      const r = rng.int(4);
      if (r === 0 && shape.length) shape[rng.int(shape.length)] = pick(rng, ODD_VALUES);
      else if (r === 1) shape.push(rng.int(4));
      else if (r === 2) shape.pop();
      else e.shape = pick(rng, ODD_VALUES);
      if (r !== 3) e.shape = shape;
      break;
    }
    case 3: // drop a field
      delete e[pick(rng, ["dtype", "shape", "data_offsets"])];
      break;
    case 4: // replace an entry wholesale
      h[name] = pick(rng, ODD_VALUES) as Record<string, unknown>;
      break;
    case 5: // metadata
      (h as Record<string, unknown>).__metadata__ = rng.int(2)
        ? pick(rng, ODD_VALUES)
        : { a: pick(rng, ODD_VALUES), b: "ok" };
      break;
    case 6: // duplicate an entry under a new name: overlapping offsets
      h[`${name}.copy`] = { ...e };
      break;
    case 7: // remove an entry: leaves a gap or trailing bytes
      delete h[name];
      break;
    default: // extra field, ignored by the parser
      e.extra = pick(rng, ODD_VALUES);
  }
}

/** One mutated file, chosen among the mutation families the brief lists. */
function mutate(rng: Rng, file: Uint8Array): Uint8Array {
  const { json, data } = headerOf(file);
  switch (rng.int(7)) {
    case 0: { // byte flips anywhere in the length field and header
      const out = file.slice();
      const flips = 1 + rng.int(3);
      const end = Math.min(out.length, 8 + enc.encode(json).length);
      for (let i = 0; i < flips; i++) {
        const at = rng.int(end);
        out[at] = rng.int(2) ? out[at] ^ (1 << rng.int(8)) : rng.int(256);
      }
      return out;
    }
    case 1: { // length field
      const n = BigInt(enc.encode(json).length);
      const choices = [
        0n,
        1n,
        2n,
        n - 1n,
        n + 1n,
        n + BigInt(rng.int(64)),
        n - BigInt(rng.int(64)),
        2n ** 63n,
        2n ** 64n - 1n,
      ];
      let v = pick(rng, choices);
      if (v < 0n) v = 0n;
      return assemble(json, data, v);
    }
    case 2: { // structural JSON mutations (offsets, dtype strings, shapes, metadata)
      const h = JSON.parse(json) as Record<string, Record<string, unknown>>;
      const k = 1 + rng.int(2);
      for (let i = 0; i < k; i++) mutateJson(rng, h);
      return assemble(JSON.stringify(h), data);
    }
    case 3: { // JSON truncation, length field adjusted so the cut is inside the header
      const j = enc.encode(json);
      return assemble(j.subarray(0, rng.int(j.length)), data);
    }
    case 4: { // truncated file
      return file.subarray(0, rng.int(file.length));
    }
    case 5: { // extra or missing data bytes
      const extra = rng.int(2) ? new Uint8Array(1 + rng.int(8)) : new Uint8Array(0);
      const cut = data.subarray(0, Math.max(0, data.length - (extra.length ? 0 : 1 + rng.int(4))));
      const d = new Uint8Array(cut.length + extra.length);
      d.set(cut);
      return assemble(json, d);
    }
    default: { // random characters inserted into the JSON text
      const pos = rng.int(json.length + 1);
      const junk = pick(rng, ['"', "}", "{", ",", "\\", "\u00ff", "\ud800", "[", "]", ":", "1e999", "  "]);
      return assemble(json.slice(0, pos) + junk + json.slice(pos), data);
    }
  }
}

Deno.test("fuzz: 3,000 mutated safetensors files give a FormatError or load cleanly", async () => {
  const rng = createRng(20240601);
  const started = performance.now();
  let ok = 0, rejected = 0;
  for (let i = 0; i < 3000; i++) {
    const file = mutate(rng, validFile(rng));
    let reader;
    try {
      reader = await openSafetensorsSource(memorySource(file), `fuzz-${i}.safetensors`);
    } catch (e) {
      if (!(e instanceof FormatError)) {
        throw new Error(`case ${i}: ${(e as Error)?.constructor?.name} instead of FormatError: ${e}`);
      }
      assert.ok(e.message.startsWith(`fuzz-${i}.safetensors: `));
      rejected++;
      continue;
    }
    // A file that parses must be fully readable, every tensor in bounds and of the size its shape says.
    for (const name of reader.names) {
      const info = reader.info(name);
      assert.ok(info.byteOffset + info.byteLength <= file.length, `case ${i}: "${name}" out of bounds`);
      const { data, shape } = await reader.readArray(name);
      assert.equal(data.length, shape.reduce((a, d) => a * d, 1));
      await reader.readF32(name);
    }
    reader.close();
    ok++;
  }
  const ms = performance.now() - started;
  // Mutations of every family must have produced both outcomes, or the fuzzer is not exercising the parser.
  assert.ok(rejected > 1500, `only ${rejected} rejected`);
  assert.ok(ok > 100, `only ${ok} loaded`);
  assert.ok(ms < 20_000, `fuzzing took ${ms.toFixed(0)} ms`);
});

Deno.test("fuzz: random bytes and tiny files are FormatErrors", async () => {
  const rng = createRng(7);
  for (let i = 0; i < 500; i++) {
    const len = rng.int(64);
    const bytes = new Uint8Array(len).map(() => rng.int(256));
    // Small plausible length fields make the parser reach the JSON stage half of the time.
    if (len >= 8 && rng.int(2)) new DataView(bytes.buffer).setBigUint64(0, BigInt(rng.int(len - 7)), true);
    await assert.rejects(openSafetensorsSource(memorySource(bytes), "rnd"), FormatError);
  }
});
