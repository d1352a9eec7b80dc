import assert from "node:assert/strict";
import { join } from "node:path";
import { tempDir } from "../tests/export_fixtures.ts";
import { benchCommand } from "./bench.ts";
import { fontFamily, renderPng } from "./png.ts";

async function run(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [], err: string[] = [];
  const log = console.log, error = console.error;
  console.log = (...a: unknown[]) => void out.push(a.join(" "));
  console.error = (...a: unknown[]) => void err.push(a.join(" "));
  try {
    return { code: await benchCommand(args), out: out.join("\n"), err: err.join("\n") };
  } finally {
    console.log = log, console.error = error;
  }
}

const RUNS = [2, 3, 4].flatMap((b) =>
  ["rtn", "gptq"].map((m) =>
    JSON.stringify({
      method: m,
      bits: b,
      group: 0,
      act_order: false,
      avg_bits: b + 0.25,
      ppl: { "valid.txt": (m === "rtn" ? 2 : 1.5) * 6 * 3 ** (4 - b) },
      seconds: { quantize: 0.1, calibrate: 1, eval: 1 },
    })
  )
).join("\n");

/** Width and height from a PNG's IHDR chunk. */
function pngSize(png: Uint8Array): [number, number] {
  const v = new DataView(png.buffer, png.byteOffset);
  return [v.getUint32(16), v.getUint32(20)];
}

Deno.test("ptq bench writes the SVG, a PNG rendering and the Markdown table", async () => {
  const dir = await tempDir();
  try {
    await Deno.writeTextFile(join(dir, "runs.jsonl"), `noise\n${RUNS}\n`);
    const r = await run([
      "--report",
      join(dir, "out"),
      "--results",
      join(dir, "runs.jsonl"),
      "--baseline",
      "5.9",
      "--json",
    ]);
    assert.equal(r.code, 0, r.err);
    const summary = JSON.parse(r.out);
    assert.equal(summary.points, 6);
    assert.equal(summary.series, 2);
    const svg = await Deno.readTextFile(join(dir, "out", "report.svg"));
    assert.equal([...svg.matchAll(/<g class="point"/g)].length, 6);
    const png = await Deno.readFile(join(dir, "out", "report.png"));
    assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
    assert.deepEqual(pngSize(png), [1520, 960]);
    const md = await Deno.readTextFile(join(dir, "out", "report.md"));
    assert.match(md, /\| gptq \| 2 \| row \| no \| 2\.250 \| 81\.000 \| 0\.1 \|/);
    assert.deepEqual([...Deno.readDirSync(join(dir, "out"))].map((e) => e.name).sort(), [
      "report.md",
      "report.png",
      "report.svg",
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("ptq bench: usage errors exit 2, unreadable results exit 1", async () => {
  const dir = await tempDir();
  try {
    assert.equal((await run(["--results", "x"])).code, 2);
    assert.equal((await run(["--report", dir])).code, 2);
    assert.equal((await run(["--report", dir, "--results", join(dir, "none.jsonl")])).code, 1);
    await Deno.writeTextFile(join(dir, "r.jsonl"), RUNS);
    const wrong = await run(["--report", dir, "--results", join(dir, "r.jsonl"), "--eval", "wiki.txt", "--no-png"]);
    assert.equal(wrong.code, 2);
    assert.match(wrong.err, /valid\.txt/);
    await Deno.writeTextFile(join(dir, "bad.jsonl"), `{"method": 1}`);
    assert.equal((await run(["--report", dir, "--results", join(dir, "bad.jsonl")])).code, 1);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("renderPng draws text with a system font (skipped without one) and reads font family names", async () => {
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="120" height="40"><rect width="120" height="40" ` +
    `fill="white"/><text x="4" y="28" font-family="sans-serif" font-size="24">ptq</text></svg>`;
  const r = await renderPng(svg, { zoom: 1 });
  assert.deepEqual([r.width, r.height], [120, 40]);
  if (!r.font) {
    console.warn("no system font found: the text check is skipped");
    return;
  }
  assert.ok(fontFamily(await Deno.readFile(r.font))!.length > 0);
  // Decoding PNG pixels would need zlib; instead compare with a rendering without text: the text adds bytes.
  const blank = await renderPng(svg.replace(/<text.*<\/text>/, ""), { zoom: 1 });
  assert.ok(r.png.length > blank.png.length + 100, `text did not render (${r.png.length} vs ${blank.png.length})`);
});
