import assert from "node:assert/strict";
import { join } from "node:path";
import { bf16BitsToF32, f32ToBf16, f32ToF16 } from "../core/dtype.ts";
import { FormatError, OptionError, ShapeError } from "../core/errors.ts";
import { createRng } from "../core/random.ts";
import { sharedPath, sharedTest } from "../tests/shared.ts";
import {
  decodeTensor,
  decodeToF32,
  DTYPE_SIZES,
  encodeHeader,
  INDEX_FILE,
  memorySource,
  openSafetensors,
  openSafetensorsFolder,
  openSafetensorsSource,
  parseSafetensorsHeader,
  readHeaderLength,
  type SafetensorsDtype,
  type TensorToWrite,
  writeSafetensors,
  writeSafetensorsSharded,
} from "./safetensors.ts";

const enc = new TextEncoder();

/** A whole file from a header (object or raw JSON text) and `dataLen` data bytes valued 0, 1, 2, … */
function fileBytes(header: unknown, dataLen: number, lengthField?: number): Uint8Array {
  const json = enc.encode(typeof header === "string" ? header : JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + dataLen);
  new DataView(out.buffer).setBigUint64(0, BigInt(lengthField ?? json.length), true);
  out.set(json, 8);
  for (let i = 0; i < dataLen; i++) out[8 + json.length + i] = i & 0xff;
  return out;
}

/** Parses a whole in-memory file with the pure functions. */
function parseFile(bytes: Uint8Array, path = "x.safetensors") {
  const n = readHeaderLength(bytes.subarray(0, 8), bytes.length, path);
  return parseSafetensorsHeader(bytes.subarray(8, 8 + n), bytes.length, path);
}

function assertFormatError(fn: () => unknown, pattern: RegExp, path = "x.safetensors"): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof FormatError, `expected FormatError, got ${e}`);
    assert.equal(e.path, path);
    assert.match(e.message, pattern);
    return true;
  });
}

async function tempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "ptq-st-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function listDir(dir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const e of Deno.readDir(dir)) names.push(e.name);
  return names.sort();
}

const t = (dtype: string, shape: number[], begin: number, end: number) => ({
  dtype,
  shape,
  data_offsets: [begin, end],
});

Deno.test("parse: a valid header gives names in file order, offsets and metadata", () => {
  const bytes = fileBytes({
    b: t("F32", [2, 2], 0, 16),
    __metadata__: { format: "pt" },
    a: t("BF16", [3], 16, 22),
    empty: t("I64", [0, 5], 22, 22),
  }, 22);
  const h = parseFile(bytes);
  assert.deepEqual(h.names, ["b", "a", "empty"]);
  assert.deepEqual(h.metadata, { format: "pt" });
  const a = h.tensors.get("a")!;
  assert.equal(a.byteOffset, h.dataStart + 16);
  assert.equal(a.byteLength, 6);
  assert.deepEqual(a.shape, [3]);
  assert.equal(h.dataStart, bytes.length - 22);
});

Deno.test("parse: every malformation is a FormatError naming the file", () => {
  const cases: [string, Uint8Array, RegExp][] = [
    ["short file", new Uint8Array(5), /too short/],
    ["length past end", fileBytes({}, 0, 1000), /larger than the file/],
    ["huge length", fileBytes({}, 0, 2 ** 40), /exceeds/],
    ["tiny length", fileBytes("{}", 0, 1), /too small/],
    ["bad JSON", fileBytes('{"a": ', 0), /not valid UTF-8 JSON/],
    ["invalid UTF-8", fileBytes(new TextDecoder("latin1").decode(new Uint8Array([0x7b, 0x22, 0xff, 0x22])), 0), /JSON/],
    ["array header", fileBytes([], 0), /must be a JSON object, got an array/],
    ["number header", fileBytes("42", 0), /must be a JSON object/],
    ["entry not object", fileBytes({ a: 3 }, 0), /"a": entry must be an object/],
    ["unknown dtype", fileBytes({ a: t("F128", [1], 0, 16) }, 16), /unknown dtype "F128"/],
    ["missing dtype", fileBytes({ a: { shape: [1], data_offsets: [0, 4] } }, 4), /unknown dtype undefined/],
    ["shape not array", fileBytes({ a: t("F32", 4 as unknown as number[], 0, 16) }, 16), /shape must be an array/],
    ["negative dim", fileBytes({ a: t("F32", [-1], 0, 0) }, 0), /non-negative integers/],
    ["fractional dim", fileBytes({ a: t("F32", [1.5], 0, 6) }, 6), /non-negative integers/],
    ["string dim", fileBytes({ a: t("F32", ["2" as unknown as number], 0, 8) }, 8), /non-negative integers/],
    ["offsets reversed", fileBytes({ a: t("U8", [0], 4, 0) }, 4), /begin ≤ end/],
    ["three offsets", fileBytes({ a: { dtype: "U8", shape: [1], data_offsets: [0, 1, 2] } }, 1), /data_offsets/],
    ["size mismatch", fileBytes({ a: t("F32", [2], 0, 4) }, 4), /needs 8 bytes, but data_offsets span 4/],
    ["overlap", fileBytes({ a: t("U8", [4], 0, 4), b: t("U8", [4], 2, 6) }, 6), /"b" at \[2, 6\) overlaps "a"/],
    ["gap", fileBytes({ a: t("U8", [4], 0, 4), b: t("U8", [2], 6, 8) }, 8), /gap of 2 bytes before tensor "b"/],
    ["gap at start", fileBytes({ a: t("U8", [4], 2, 6) }, 6), /gap of 2 bytes before tensor "a"/],
    ["past the end", fileBytes({ a: t("U8", [8], 0, 8) }, 5), /ends at data byte 8 but the file has only 5/],
    ["trailing bytes", fileBytes({ a: t("U8", [4], 0, 4) }, 7), /3 trailing bytes/],
    ["metadata not object", fileBytes({ __metadata__: ["x"] }, 0), /__metadata__ must be an object/],
    ["metadata value", fileBytes({ __metadata__: { n: 3 } }, 0), /__metadata__\["n"\] must be a string/],
  ];
  for (const [what, bytes, pattern] of cases) {
    try {
      assertFormatError(() => parseFile(bytes), pattern);
    } catch (e) {
      throw new Error(`case "${what}": ${(e as Error).message}`);
    }
  }
});

Deno.test("decode: every dtype's bytes become its natural array", () => {
  const bytes = new Uint8Array(16).map((_, i) => i * 17);
  const kinds: Record<SafetensorsDtype, string> = {
    F64: "Float64Array",
    F32: "Float32Array",
    F16: "Float32Array",
    BF16: "Float32Array",
    F8_E4M3: "Float32Array",
    F8_E5M2: "Float32Array",
    I64: "BigInt64Array",
    U64: "BigUint64Array",
    I32: "Int32Array",
    U32: "Uint32Array",
    I16: "Int16Array",
    U16: "Uint16Array",
    I8: "Int8Array",
    U8: "Uint8Array",
    BOOL: "Uint8Array",
  };
  for (const [dtype, kind] of Object.entries(kinds) as [SafetensorsDtype, string][]) {
    const v = decodeTensor(dtype, bytes);
    assert.equal(v.constructor.name, kind, dtype);
    assert.equal(v.length, 16 / DTYPE_SIZES[dtype], dtype);
  }
  // Unaligned input still decodes (copied to an aligned buffer).
  const f = new Float32Array([1.5, -2]);
  const shifted = new Uint8Array(9);
  shifted.set(new Uint8Array(f.buffer), 1);
  assert.deepEqual(Array.from(decodeToF32("F32", shifted.subarray(1))), [1.5, -2]);
  assert.throws(() => decodeTensor("F32", new Uint8Array(6)), ShapeError);
});

Deno.test("decode: bf16, f16 and float8 values", () => {
  const u16 = (xs: number[]) => new Uint8Array(new Uint16Array(xs).buffer);
  assert.deepEqual(Array.from(decodeToF32("BF16", u16([0x3f80, 0xc000, 0x7f80]))), [1, -2, Infinity]);
  assert.deepEqual(Array.from(decodeToF32("F16", u16([0x3c00, 0xc000, 0x0001]))), [1, -2, 2 ** -24]);
  // e4m3fn: 0x38 = 1.0, 0x7e = 448 (max), 0x7f = NaN, 0x01 = 2^-9 (smallest subnormal).
  const e4 = decodeToF32("F8_E4M3", new Uint8Array([0x38, 0x7e, 0x7f, 0x01, 0xb8]));
  assert.deepEqual(Array.from(e4.subarray(0, 2)), [1, 448]);
  assert.ok(Number.isNaN(e4[2]));
  assert.equal(e4[3], 2 ** -9);
  assert.equal(e4[4], -1);
  // e5m2: 0x3c = 1.0, 0x7b = 57344 (max), 0x7c = +inf, 0x7d = NaN, 0x01 = 2^-16.
  const e5 = decodeToF32("F8_E5M2", new Uint8Array([0x3c, 0x7b, 0x7c, 0x7d, 0x01]));
  assert.deepEqual(Array.from(e5.subarray(0, 3)), [1, 57344, Infinity]);
  assert.ok(Number.isNaN(e5[3]));
  assert.equal(e5[4], 2 ** -16);
  assert.deepEqual(Array.from(decodeToF32("I64", new Uint8Array(new BigInt64Array([-3n, 7n]).buffer))), [-3, 7]);
});

Deno.test("reader over memory: reads by name, reports missing names, refuses reads after close", async () => {
  const bytes = fileBytes({ a: t("U8", [2, 2], 0, 4), b: t("I16", [2], 4, 8) }, 8);
  const st = await openSafetensorsSource(memorySource(bytes), "mem.safetensors");
  assert.deepEqual(st.names, ["a", "b"]);
  assert.deepEqual(Array.from(await st.read("a")), [0, 1, 2, 3]);
  const b = await st.readArray("b");
  assert.ok(b.data instanceof Int16Array);
  assert.deepEqual(Array.from(b.data), [0x0504, 0x0706]);
  assert.deepEqual((await st.readF32("a")).shape, [2, 2]);
  assert.equal(st.has("zzz"), false);
  assertFormatError(() => st.info("zzz"), /no tensor "zzz" \(it has 2: "a", "b"\)/, "mem.safetensors");
  await assert.rejects(st.read("zzz"), FormatError);
  st.close();
  st.close();
  await assert.rejects(st.read("a"), /after close/);
});

sharedTest(
  "fixture: llama-12m.safetensors (F32 and I32) reads by offset",
  ["fixtures/llama-12m.safetensors"],
  async () => {
    const path = sharedPath("fixtures/llama-12m.safetensors");
    using st = await openSafetensors(path);
    assert.equal(st.names.length, 16);
    assert.match(st.metadata.model, /llama-12m/);
    const ids = await st.readArray("input_ids");
    assert.ok(ids.data instanceof Int32Array);
    assert.deepEqual(ids.shape, [128]);
    const tokens = JSON.parse(await Deno.readTextFile(sharedPath("fixtures/llama-12m.tokens.json")));
    assert.deepEqual(Array.from(ids.data.subarray(0, 64)), tokens.heldout_first_64);
    const loss = await st.readF32("loss");
    assert.deepEqual(loss.shape, [1]);
    assert.ok(loss.data[0] > 1 && loss.data[0] < 10);
    const h = await st.readF32("hessian.model.layers.0.self_attn.q_proj");
    assert.deepEqual(h.shape, [384, 384]);
    assert.equal(h.data[1 * 384 + 2], h.data[2 * 384 + 1]); // a Hessian is symmetric
    // Concurrent reads share one file position; the reader must serialise them.
    const [a, b, c] = await Promise.all([st.read("loss"), st.read("input_ids"), st.read("loss")]);
    assert.deepEqual(a, c);
    assert.deepEqual(new Int32Array(b.buffer), ids.data);
  },
);

sharedTest(
  "folder: the sharded bf16 llama-12m reads across shards",
  ["models/llama-12m/model.safetensors.index.json"],
  async () => {
    const dir = sharedPath("models/llama-12m");
    using st = await openSafetensorsFolder(dir);
    assert.equal(st.names.length, 57);
    assert.deepEqual(st.metadata, { format: "pt" });
    const lm = st.info("lm_head.weight");
    assert.match(lm.file, /model-00002-of-00002\.safetensors$/);
    assert.equal(lm.dtype, "BF16");
    assert.deepEqual(lm.shape, [4096, 384]);
    assert.match(st.info("model.embed_tokens.weight").file, /model-00001-of-00002/);
    const raw = await st.read("model.norm.weight");
    const norm = await st.readF32("model.norm.weight");
    assert.deepEqual(norm.shape, [384]);
    const bits = new Uint16Array(raw.buffer);
    for (let i = 0; i < 384; i++) assert.equal(norm.data[i], bf16BitsToF32(bits[i]));
    let params = 0;
    for (const name of st.names) params += st.info(name).shape.reduce((a, d) => a * d, 1);
    assert.equal(params, 12_587_904);
    assertFormatError(() => st.info("nope"), /no tensor "nope"/, dir);
  },
);

sharedTest("writer: rewriting a reference shard reproduces it byte for byte", [
  "models/llama-12m/model-00002-of-00002.safetensors",
], async () => {
  const src = sharedPath("models/llama-12m/model-00002-of-00002.safetensors");
  using st = await openSafetensors(src);
  await tempDir(async (dir) => {
    const out = join(dir, "copy.safetensors");
    await writeSafetensors(
      out,
      st.names.map((name) => ({ ...st.info(name), data: () => st.read(name) })),
      st.metadata,
    );
    const [a, b] = await Promise.all([Deno.readFile(src), Deno.readFile(out)]);
    assert.equal(b.length, a.length);
    assert.ok(a.every((x, i) => x === b[i]), "bytes differ");
  });
});

/** Random tensors of every dtype, as raw bytes (so NaN payloads and all bit patterns round-trip). */
function randomTensors(seed: number): TensorToWrite[] {
  const rng = createRng(seed);
  return (Object.keys(DTYPE_SIZES) as SafetensorsDtype[]).map((dtype, k) => {
    const shape = k % 3 === 0 ? [3, 5] : k % 3 === 1 ? [7] : [2, 0, 4];
    const n = shape.reduce((a, d) => a * d, 1) * DTYPE_SIZES[dtype];
    const data = new Uint8Array(n).map(() => rng.int(256));
    if (dtype === "BOOL") data.forEach((_, i) => data[i] &= 1);
    return { name: `t.${dtype.toLowerCase()}`, dtype, shape, data };
  });
}

Deno.test("writer: every dtype round-trips bit-exact, raw and as natural arrays", async () => {
  await tempDir(async (dir) => {
    const tensors = randomTensors(1);
    const path = join(dir, "all.safetensors");
    await writeSafetensors(path, tensors, { note: "round trip" });
    using st = await openSafetensors(path);
    assert.deepEqual(st.names, tensors.map((x) => x.name));
    assert.deepEqual(st.metadata, { note: "round trip" });
    const natural: TensorToWrite[] = [];
    for (const x of tensors) {
      assert.deepEqual(st.info(x.name).shape, x.shape);
      assert.deepEqual(await st.read(x.name), x.data, x.name);
      const { data } = await st.readArray(x.name);
      // Decoded 16- and 8-bit floats are float32 values, not the natural array; write those as raw bits.
      const halfOrByte = ["F16", "BF16", "F8_E4M3", "F8_E5M2"].includes(x.dtype);
      natural.push({ ...x, data: halfOrByte ? x.data : data });
    }
    const path2 = join(dir, "natural.safetensors");
    await writeSafetensors(
      path2,
      (async function* () {
        yield* natural;
      })(),
    );
    using st2 = await openSafetensors(path2);
    for (const x of tensors) assert.deepEqual(await st2.read(x.name), x.data, x.name);
    // The header is padded with spaces to 8 bytes, as the reference writer pads it.
    const bytes = await Deno.readFile(path);
    const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    assert.equal(n % 8, 0);
    const text = new TextDecoder().decode(bytes.subarray(8, 8 + n));
    assert.match(text, /^\{.*\} *$/s);
  });
});

Deno.test("writer: float32 values convert to F16, BF16 and F64 as core/dtype does", async () => {
  await tempDir(async (dir) => {
    const v = new Float32Array([0, 1, -2.5, 1 / 3, 65504, 1e-8, 3.4e38]);
    const path = join(dir, "conv.safetensors");
    await writeSafetensors(path, [
      { name: "h", dtype: "F16", shape: [7], data: v },
      { name: "b", dtype: "BF16", shape: [7], data: v },
      { name: "d", dtype: "F64", shape: [7], data: v },
      { name: "f", dtype: "F32", shape: [7], data: Float64Array.from(v) },
    ]);
    using st = await openSafetensors(path);
    assert.deepEqual(new Uint16Array((await st.read("h")).buffer), f32ToF16(v));
    assert.deepEqual(new Uint16Array((await st.read("b")).buffer), f32ToBf16(v));
    assert.deepEqual((await st.readF32("d")).data, v);
    assert.deepEqual((await st.readF32("f")).data, v);
  });
});

Deno.test("writer: bad input is rejected before anything is written", async () => {
  await tempDir(async (dir) => {
    const p = join(dir, "x.safetensors");
    const f32 = new Float32Array(4);
    await assert.rejects(
      writeSafetensors(p, [{ name: "a", dtype: "F32", shape: [4], data: f32 }, {
        name: "a",
        dtype: "F32",
        shape: [4],
        data: f32,
      }]),
      OptionError,
    );
    await assert.rejects(
      writeSafetensors(p, [{ name: "__metadata__", dtype: "F32", shape: [4], data: f32 }]),
      OptionError,
    );
    await assert.rejects(
      writeSafetensors(p, [{ name: "a", dtype: "X" as SafetensorsDtype, shape: [4], data: f32 }]),
      OptionError,
    );
    await assert.rejects(writeSafetensors(p, [{ name: "a", dtype: "F32", shape: [-4], data: f32 }]), OptionError);
    await assert.rejects(writeSafetensors(p, [], { n: 3 as unknown as string }), OptionError);
    assert.deepEqual(await listDir(dir), []);
  });
});

Deno.test("writer: a failure midway leaves nothing behind and keeps the old file", async () => {
  await tempDir(async (dir) => {
    const p = join(dir, "model.safetensors");
    await writeSafetensors(p, [{ name: "old", dtype: "U8", shape: [3], data: new Uint8Array([1, 2, 3]) }]);
    const before = await Deno.readFile(p);
    const good = { name: "a", dtype: "F32" as const, shape: [1000], data: new Float32Array(1000) };
    // A producer that throws after the header and one tensor were written.
    await assert.rejects(
      writeSafetensors(p, [good, {
        name: "b",
        dtype: "F32",
        shape: [2],
        data: () => {
          throw new Error("producer failed");
        },
      }]),
      /producer failed/,
    );
    // Data of the wrong length, and of the wrong type, discovered while writing.
    await assert.rejects(
      writeSafetensors(p, [good, { name: "c", dtype: "F32", shape: [3], data: () => new Float32Array(2) }]),
      ShapeError,
    );
    await assert.rejects(
      writeSafetensors(p, [good, { name: "c", dtype: "I32", shape: [2], data: new Int16Array(2) }]),
      OptionError,
    );
    await assert.rejects(
      writeSafetensors(p, [{ name: "c", dtype: "F8_E4M3", shape: [2], data: new Float32Array(2) }]),
      OptionError,
    );
    assert.deepEqual(await listDir(dir), ["model.safetensors"]);
    assert.deepEqual(await Deno.readFile(p), before);
  });
});

Deno.test("sharded writer: shards, index, and the folder reader agree", async () => {
  await tempDir(async (dir) => {
    const rng = createRng(5);
    const tensors = Array.from({ length: 7 }, (_, i) => ({
      name: `layer.${i}.weight`,
      dtype: "F32" as const,
      shape: [10, 10 + i],
      data: Float32Array.from({ length: 10 * (10 + i) }, () => rng.normal()),
    }));
    const files = await writeSafetensorsSharded(dir, tensors, { maxShardBytes: 1200, metadata: { format: "pt" } });
    assert.equal(files.at(-1), INDEX_FILE);
    assert.ok(files.length > 3);
    assert.deepEqual(await listDir(dir), [...files].sort());
    const index = JSON.parse(await Deno.readTextFile(join(dir, INDEX_FILE)));
    assert.equal(index.metadata.total_size, tensors.reduce((a, x) => a + x.data.length * 4, 0));
    using st = await openSafetensorsFolder(dir);
    assert.deepEqual(st.names, tensors.map((x) => x.name));
    for (const x of tensors) assert.deepEqual((await st.readF32(x.name)).data, x.data);
    // Everything in one shard: a plain model.safetensors, no index.
    await tempDir(async (one) => {
      assert.deepEqual(await writeSafetensorsSharded(one, tensors), ["model.safetensors"]);
      using st1 = await openSafetensorsFolder(one);
      assert.equal(st1.names.length, 7);
    });
  });
});

Deno.test("folder: a wrong index or missing files are FormatErrors naming the culprit", async () => {
  await tempDir(async (dir) => {
    const tensors = ["a", "b", "c"].map((name) => ({
      name,
      dtype: "U8" as const,
      shape: [4],
      data: new Uint8Array(4),
    }));
    await writeSafetensorsSharded(dir, tensors, { maxShardBytes: 8 }); // shards [a, b] and [c]
    const indexPath = join(dir, INDEX_FILE);
    const index = JSON.parse(await Deno.readTextFile(indexPath));
    const writeIndex = (weightMap: Record<string, string>) =>
      Deno.writeTextFile(indexPath, JSON.stringify({ metadata: {}, weight_map: weightMap }));
    const shard = (k: number) => `model-0000${k}-of-00002.safetensors`;
    const expectError = async (pattern: RegExp, path = indexPath) => {
      const e = await openSafetensorsFolder(dir).then((r) => (r.close(), null), (e) => e);
      assert.ok(e instanceof FormatError, `expected FormatError, got ${e}`);
      assert.equal(e.path, path);
      assert.match(e.message, pattern);
    };
    assert.deepEqual(index.weight_map, { a: shard(1), b: shard(1), c: shard(2) });
    await writeIndex({ ...index.weight_map, c: shard(1) });
    await expectError(/says tensor "c" is in "model-00001-of-00002.safetensors", but that shard does not hold it/);
    await writeIndex({ a: shard(1), c: shard(2) });
    await expectError(/holds tensor "b", which model.safetensors.index.json does not list/, join(dir, shard(1)));
    await writeIndex({ a: shard(1), b: shard(2), c: shard(2) });
    await expectError(/says tensor "b" is in "model-00002-of-00002.safetensors", but that shard does not hold it/);
    await writeIndex({ ...index.weight_map, d: "model-00009-of-00009.safetensors" });
    await expectError(/lists shard "model-00009-of-00009.safetensors", which does not exist/);
    await writeIndex({ ...index.weight_map, a: "../escape.safetensors" });
    await expectError(/points outside the model folder/);
    await writeIndex({});
    await expectError(/weight_map is empty/);
    await Deno.writeTextFile(indexPath, "{not json");
    await expectError(/not valid JSON/);
    await Deno.writeTextFile(indexPath, JSON.stringify({ weight_map: index.weight_map }));
    await Deno.truncate(join(dir, shard(2)), 20);
    await expectError(/larger than the file/, join(dir, shard(2)));
    // A path to a file is opened as that file.
    using single = await openSafetensorsFolder(join(dir, shard(1)));
    assert.deepEqual(single.names, ["a", "b"]);
    await Deno.remove(indexPath);
    await expectError(/has neither model.safetensors.index.json nor model.safetensors/, dir);
  });
  const missing = "/nonexistent/ptq-model";
  await assert.rejects(openSafetensorsFolder(missing), (e) => e instanceof FormatError && /not found/.test(e.message));
  await assert.rejects(
    openSafetensors(`${missing}/x.safetensors`),
    (e) => e instanceof FormatError && /not found/.test(e.message),
  );
});

Deno.test("file: truncated data is a FormatError at open, never a short read", async () => {
  await tempDir(async (dir) => {
    const p = join(dir, "t.safetensors");
    await writeSafetensors(p, [{ name: "a", dtype: "F32", shape: [64], data: new Float32Array(64) }]);
    const size = (await Deno.stat(p)).size;
    await Deno.truncate(p, size - 1);
    await assert.rejects(openSafetensors(p), (e) => e instanceof FormatError && /truncated/.test(e.message));
    await Deno.truncate(p, 4);
    await assert.rejects(openSafetensors(p), (e) => e instanceof FormatError && /too short/.test(e.message));
  });
});

Deno.test("encodeHeader: tensors in the given order, integer-like names kept in place", () => {
  const { bytes, sizes } = encodeHeader([
    { name: "z", dtype: "F32", shape: [2] },
    { name: "10", dtype: "U8", shape: [3] },
  ]);
  assert.deepEqual(sizes, [8, 3]);
  const h = parseSafetensorsHeader(bytes.subarray(8), bytes.length + 11, "h");
  assert.deepEqual(h.names, ["z", "10"]);
  const text = new TextDecoder().decode(bytes.subarray(8));
  assert.ok(text.indexOf('"z"') < text.indexOf('"10"'));
});
