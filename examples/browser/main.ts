/**
 * The page: settings from the form (defaults from the query string, e.g. `?method=rtn&bits=3&backend=wasm`), a run
 * in the worker (`worker.ts`, bundled beside this file as `worker.js`), a progress bar, and perplexity before and
 * after. `document.body.dataset.state` is `loading`, `ready`, `running`, `done` or `error`, for tests.
 *
 * @module
 */

import type { ExperimentResult } from "./experiment.ts";
import { DEFAULT_SETTINGS, type ExperimentSettings } from "./settings.ts";
import type { RunMessage, WorkerMessage } from "./worker.ts";

// The few DOM members used here, typed by hand: the project is type-checked with Deno's libs, which have no DOM, and
// a `/// <reference lib="dom" />` would apply to every file checked in the same run (and conflicts with Deno's).
interface Element {
  textContent: string | null;
  title: string;
  readonly dataset: Record<string, string | undefined>;
}
interface Control extends Element {
  readonly name: string;
  readonly type: string;
  value: string;
  checked: boolean;
}
interface Dom {
  readonly document: {
    getElementById(id: string): unknown;
    readonly body: Element;
  };
}
const { document } = globalThis as unknown as Dom;
const $ = <T = Element>(id: string) => document.getElementById(id) as T;

const query = new URLSearchParams(location.search);
const form = $<
  Element & { readonly elements: ArrayLike<Control>; addEventListener(t: string, f: (e: Event) => void): void }
>(
  "settings",
);
const bar = $<Element & { value: number }>("progress");
const status = $("status");
const run = $<Element & { disabled: boolean }>("run");
const controls = () => Array.from(form.elements).filter((c) => c.name);

/** Fractions seen, for tests (they check the bar moved forward). */
const progressLog: number[] = [];
(globalThis as unknown as { ptqProgress: number[] }).ptqProgress = progressLog;

// Query parameters preset the form.
for (const c of controls()) {
  const v = query.get(c.name);
  if (v === null) continue;
  if (c.type === "checkbox") c.checked = v === "1" || v === "true";
  else c.value = v;
}

function field(name: string): Control {
  return controls().find((c) => c.name === name)!;
}

function settings(): ExperimentSettings {
  const num = (k: keyof ExperimentSettings) => {
    const v = Number(field(k).value);
    return Number.isFinite(v) && field(k).value !== "" ? v : DEFAULT_SETTINGS[k] as number;
  };
  return {
    method: field("method").value === "rtn" ? "rtn" : "gptq",
    bits: num("bits"),
    group: num("group"),
    actOrder: field("actOrder").checked,
    samples: num("samples"),
    seqLen: num("seqLen"),
    windows: num("windows"),
    seed: num("seed"),
  };
}

function setState(state: string, text: string): void {
  document.body.dataset.state = state;
  status.textContent = text;
}

function show(r: ExperimentResult): void {
  const cell = (id: string, text: string) => $(id).textContent = text;
  cell("backend", r.backend);
  cell("ppl-before", r.pplBefore.toFixed(4));
  cell("ppl-after", r.pplAfter.toFixed(4));
  cell("delta", `${r.pplAfter >= r.pplBefore ? "+" : ""}${(r.pplAfter - r.pplBefore).toFixed(4)}`);
  cell("bits", r.avgBits.toFixed(3));
  cell("seconds", `${r.seconds.before.toFixed(2)} / ${r.seconds.quantize.toFixed(2)} / ${r.seconds.after.toFixed(2)}`);
  // The exact numbers, for tests.
  $("results").dataset.result = JSON.stringify(r);
}

/** Backends tried before the one that ran, shown with the result ("webgpu: no adapter"). */
let skippedNote = "";

const worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
worker.onmessage = (e: MessageEvent<WorkerMessage>) => {
  const m = e.data;
  if (m.type === "ready") {
    const note = m.skipped.length ? ` (skipped ${m.skipped.map((s) => s.split(":")[0]).join(", ")})` : "";
    $("backend").textContent = m.backend;
    $("backend").title = m.skipped.join("\n");
    skippedNote = note;
    setState("running", `stories260K and ${m.stories} stories loaded; running on ${m.backend}${note}`);
  } else if (m.type === "progress") {
    bar.value = m.progress.fraction;
    progressLog.push(m.progress.fraction);
    status.textContent = `${m.progress.phase}: ${m.progress.note}`;
  } else if (m.type === "result") {
    bar.value = 1;
    show(m.result);
    setState("done", `done on ${m.result.backend}${skippedNote}`);
    run.disabled = false;
  } else {
    setState("error", m.message);
    run.disabled = false;
  }
};
worker.onerror = (e) => {
  setState("error", `worker failed: ${e.message}`);
  run.disabled = false;
};

form.addEventListener("submit", (e) => {
  e.preventDefault();
  run.disabled = true;
  bar.value = 0;
  progressLog.length = 0;
  for (const id of ["ppl-before", "ppl-after", "delta", "bits", "seconds"]) $(id).textContent = "…";
  setState("running", "loading stories260K…");
  const message: RunMessage = {
    settings: settings(),
    backend: field("backend").value as RunMessage["backend"],
    // Absolute: the worker resolves URLs against its own script's location, not the page's.
    dataUrl: new URL(query.get("data") ?? "../data/", location.href).href,
  };
  worker.postMessage(message);
});

setState("ready", "ready");
