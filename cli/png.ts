/**
 * SVG → PNG with resvg compiled to WebAssembly (`@resvg/resvg-wasm`), offline: the package's `index_bg.wasm` is
 * located with Node's resolver (`createRequire(import.meta.url).resolve`), which in Deno resolves npm packages into
 * its npm cache (the JS half of the same package is imported statically, so the package is always there), read from
 * disk and compiled once per process. No fetch, no CDN. (`import source` of the wasm works at run time too, but
 * `deno check` does not parse source-phase imports yet.)
 *
 * resvg has no system font access in WebAssembly: text renders only with font files passed in. {@link findFont} looks
 * for a sans-serif font in the usual places (DejaVu, Liberation, Noto, Arial); a PNG rendered without one has no text.
 *
 * @module
 */

import { createRequire } from "node:module";
import { initWasm, Resvg } from "@resvg/resvg-wasm";

let ready: Promise<void> | undefined;

/** The path of resvg's wasm binary inside the installed npm package. */
export function resvgWasmPath(): string {
  return createRequire(import.meta.url).resolve("@resvg/resvg-wasm/index_bg.wasm");
}

/** Initialises resvg once (concurrent callers share the promise). */
function init(): Promise<void> {
  ready ??= Deno.readFile(resvgWasmPath()).then((bytes) => initWasm(bytes));
  return ready;
}

/** Sans-serif fonts that are commonly installed, most likely first. */
export const FONT_CANDIDATES: readonly string[] = [
  "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
  "/usr/share/fonts/TTF/DejaVuSans.ttf",
  "/usr/share/fonts/dejavu/DejaVuSans.ttf",
  "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
  "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
  "/usr/share/fonts/liberation/LiberationSans-Regular.ttf",
  "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
  "/usr/share/fonts/noto/NotoSans-Regular.ttf",
  "/System/Library/Fonts/Supplemental/Arial.ttf",
  "/Library/Fonts/Arial.ttf",
  "C:\\Windows\\Fonts\\arial.ttf",
];

/** The first readable font of {@link FONT_CANDIDATES}, or undefined. */
export async function findFont(): Promise<string | undefined> {
  for (const p of FONT_CANDIDATES) {
    try {
      if ((await Deno.stat(p)).isFile) return p;
    } catch {
      // not here; try the next
    }
  }
  return undefined;
}

/**
 * The family name of a TrueType/OpenType font (its `name` table, name ID 1), so the renderer can be told which family
 * `sans-serif` means. Undefined when the table cannot be read.
 */
export function fontFamily(font: Uint8Array): string | undefined {
  const v = new DataView(font.buffer, font.byteOffset, font.byteLength);
  if (font.length < 12) return undefined;
  const numTables = v.getUint16(4);
  for (let i = 0; i < numTables; i++) {
    const rec = 12 + 16 * i;
    if (rec + 16 > font.length) return undefined;
    if (String.fromCharCode(...font.subarray(rec, rec + 4)) !== "name") continue;
    const table = v.getUint32(rec + 8);
    if (table + 6 > font.length) return undefined;
    const count = v.getUint16(table + 2), strings = table + v.getUint16(table + 4);
    for (let k = 0; k < count; k++) {
      const r = table + 6 + 12 * k;
      if (r + 12 > font.length) return undefined;
      const platform = v.getUint16(r), nameId = v.getUint16(r + 6);
      const length = v.getUint16(r + 8), offset = strings + v.getUint16(r + 10);
      if (nameId !== 1 || offset + length > font.length) continue;
      const raw = font.subarray(offset, offset + length);
      // Windows and Unicode platforms store UTF-16BE; Macintosh platform names are single-byte.
      if (platform === 3 || platform === 0) {
        let s = "";
        for (let j = 0; j + 1 < raw.length; j += 2) s += String.fromCharCode((raw[j] << 8) | raw[j + 1]);
        return s;
      }
      if (platform === 1) return String.fromCharCode(...raw);
    }
  }
  return undefined;
}

/** Options of {@link renderPng}. */
export interface RenderOptions {
  /** Font file for the text; default {@link findFont}'s. */
  readonly font?: string;
  /** Scale factor (2 for a crisp image on high-density screens); default 2. */
  readonly zoom?: number;
}

/** A rendered image. */
export interface RenderedPng {
  readonly png: Uint8Array;
  readonly width: number;
  readonly height: number;
  /** The font file used, or undefined when none was found (the PNG then has no text). */
  readonly font?: string;
}

/**
 * Renders an SVG document to PNG bytes on a white background.
 *
 * @throws {Error} from resvg for an SVG it cannot parse; `Deno.errors.NotFound` for a missing `font` file.
 */
export async function renderPng(svg: string, options: RenderOptions = {}): Promise<RenderedPng> {
  await init();
  const fontPath = options.font ?? await findFont();
  const buffer = fontPath ? await Deno.readFile(fontPath) : undefined;
  const family = buffer ? fontFamily(buffer) ?? "sans-serif" : undefined;
  const resvg = new Resvg(svg, {
    background: "white",
    fitTo: { mode: "zoom", value: options.zoom ?? 2 },
    font: buffer ? { fontBuffers: [buffer], defaultFontFamily: family, sansSerifFamily: family } : { fontBuffers: [] },
  });
  try {
    const image = resvg.render();
    try {
      return { png: image.asPng(), width: image.width, height: image.height, font: fontPath };
    } finally {
      image.free();
    }
  } finally {
    resvg.free();
  }
}
