import assert from "node:assert/strict";
import { quantizeCommand } from "./quantize.ts";
import { registerBackend } from "../backends/registry.ts";
import { tsBackend } from "../backends/ts/mod.ts";
import type { FloatArray, Matrix } from "../core/tensor.ts";

const data = new URL("../examples/data/", import.meta.url).pathname;
const model = `${data}stories260K/stories260K.bin`;
const text = `${data}tinystories/tinystories-valid.txt`;

/** Runs the command with console output captured; returns the status and what went to stdout and stderr. */
async function run(args: string[]): Promise<{ status: number; out: string[]; err: string[] }> {
  const out: string[] = [], err: string[] = [];
  const { log, error } = console;
  console.log = (...a: unknown[]) => void out.push(a.join(" "));
  console.error = (...a: unknown[]) => void err.push(a.join(" "));
  try {
    return { status: await quantizeCommand(args), out, err };
  } finally {
    Object.assign(console, { log, error });
  }
}

const small = [
  "--calib",
  text,
  "--samples",
  "4",
  "--seqlen",
  "64",
  "--eval",
  text,
  "--windows",
  "2",
  "--backend",
  "ts",
];

Deno.test("ptq quantize --json: one JSON line with the method, bits, perplexity per file and seconds", async () => {
  const { status, out } = await run([
    "--model",
    model,
    "--method",
    "gptq",
    "--bits",
    "3",
    "--group",
    "16",
    ...small,
    "--json",
  ]);
  assert.equal(status, 0);
  const summary = JSON.parse(out.at(-1)!);
  assert.equal(summary.method, "gptq");
  assert.deepEqual([summary.bits, summary.group, summary.act_order], [3, 16, false]);
  // 3-bit codes plus a 16-bit scale and a 3-bit zero per group of 16 (as GPTQ stores them).
  assert.ok(Math.abs(summary.avg_bits - (3 + 19 / 16)) < 0.05, `avg_bits ${summary.avg_bits}`);
  const ppl = summary.ppl["tinystories-valid.txt"];
  assert.ok(Number.isFinite(ppl) && ppl > 1 && ppl < 512, `ppl ${ppl}`);
  for (const k of ["calibrate", "quantize", "eval"]) assert.ok(summary.seconds[k] >= 0, k);
});

Deno.test("ptq quantize --factor-precision: the engines get H in that precision; f32 changes the perplexity little", async () => {
  // A TS backend that records the element type of every Hessian handed to the factorisation.
  const seen: string[] = [];
  registerBackend("ts-factor-spy", () => ({
    ...tsBackend,
    name: "ts-factor-spy",
    upperCholeskyOfInverse: <A extends FloatArray>(h: Matrix<A>) => {
      seen.push(h.data.constructor.name);
      return tsBackend.upperCholeskyOfInverse(h);
    },
    reverseCholesky: <A extends FloatArray>(h: Matrix<A>) => {
      seen.push(h.data.constructor.name);
      return tsBackend.reverseCholesky(h);
    },
  }), -1);
  const args = ["--model", model, "--method", "gptq", "--bits", "4", "--group", "16", ...small, "--json"];
  args[args.indexOf("ts")] = "ts-factor-spy";
  const ppl: number[] = [];
  for (const precision of ["f64", "f32"]) {
    seen.length = 0;
    const r = await run([...args, "--factor-precision", precision]);
    assert.equal(r.status, 0);
    const summary = JSON.parse(r.out.at(-1)!);
    assert.equal(summary.factor_precision, precision);
    assert.ok(seen.length > 0, "no factorisation seen");
    assert.deepEqual(new Set(seen), new Set([precision === "f32" ? "Float32Array" : "Float64Array"]));
    ppl.push(summary.ppl["tinystories-valid.txt"]);
  }
  assert.ok(Math.abs(ppl[0] - ppl[1]) <= 1e-3 * ppl[0], `ppl ${ppl[0]} (f64) against ${ppl[1]} (f32)`);
});

Deno.test("ptq quantize --method oac: the engine and variant are reported", async () => {
  const { status, out } = await run([
    "--model",
    model,
    "--method",
    "oac",
    "--engine",
    "gptq",
    "--oac-refresh",
    "once",
    "--bits",
    "4",
    ...small,
    "--json",
  ]);
  assert.equal(status, 0);
  const summary = JSON.parse(out.at(-1)!);
  assert.equal(summary.engine, "gptq");
  assert.deepEqual(summary.oac, {
    labels: "data",
    form: "sequence",
    refresh: "once",
    mix: 0,
    role: "hessian",
    rows: "coupled", // the default where the engine rounds rows coupled and nothing asks for the paper's H_OAC
    firstOrder: 0, // the step needs per-layer refresh: with gradients taken once nothing is lost yet
    firstOrderGradient: "loss",
    firstOrderDamping: 10,
    firstOrderTrust: 0.05,
  });
  // The salience role: BiLLM only.
  const billm = await run([
    "--model",
    model,
    "--method",
    "oac",
    "--engine",
    "billm",
    "--oac-role",
    "salience",
    ...small,
    "--json",
  ]);
  assert.equal(billm.status, 0);
  assert.equal(JSON.parse(billm.out.at(-1)!).oac.role, "salience");
  assert.equal(JSON.parse(billm.out.at(-1)!).oac.rows, "independent", "the salience role builds on H_OAC");
  assert.equal(JSON.parse(billm.out.at(-1)!).oac.firstOrder, 0, "no step with the paper's rows by default");
  const refused = await run(["--model", model, "--method", "oac", "--oac-role", "salience", ...small]);
  assert.equal(refused.status, 2);
  assert.match(refused.err.join("\n"), /salience/);
  // Coupled rows: not with VPTQ's vector codebooks.
  const vptq = await run(["--model", model, "--method", "oac", "--engine", "vptq", "--oac-rows", "coupled", ...small]);
  assert.equal(vptq.status, 2);
  assert.match(vptq.err.join("\n"), /--oac-rows coupled needs --engine gptq, spqr or billm/);
  const mixed = await run(["--model", model, "--method", "oac", "--oac-rows", "coupled", "--oac-mix", "1", ...small]);
  assert.equal(mixed.status, 2);
  assert.match(mixed.err.join("\n"), /--oac-rows coupled takes GPTQ's input Hessian/);
});

Deno.test("ptq quantize: bad command lines exit 2 with a message, --help exits 0", async () => {
  const bad: [string[], RegExp][] = [
    [["--model", model, "--bogus"], /bogus/],
    [["--method", "gptq"], /--model is required/],
    [["--model", model, "--method", "nope"], /method/],
    [["--model", model, "--method", "oac", "--engine", "rtn", "--calib", text], /--engine/],
    [["--model", model, "--method", "gptq"], /--calib FILE is required/],
    [["--model", model, "--method", "gptq", "--bits", "9", "--calib", text], /bits/],
    [["--model", model, "--method", "gptq", "--calib", "/nonexistent.txt"], /no such file/],
    [["--model", model, "--method", "rtn", "--format", "gptq"], /--format needs --out/],
    [["--model", model, "--method", "gptq", "--calib", text, "--factor-precision", "f16"], /--factor-precision/],
  ];
  for (const [args, message] of bad) {
    const { status, err } = await run(args);
    assert.equal(status, 2, args.join(" "));
    assert.match(err.join("\n"), message, args.join(" "));
  }
  const help = await run(["--help"]);
  assert.equal(help.status, 0);
  assert.match(help.out.join("\n"), /Usage: ptq quantize/);
});

Deno.test("ptq quantize: a missing model is a failure naming the path", async () => {
  const { status, err } = await run(["--model", "/nonexistent/model", "--method", "rtn"]);
  assert.notEqual(status, 0);
  assert.match(err.join("\n"), /\/nonexistent\/model/);
});
