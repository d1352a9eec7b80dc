/**
 * Where benchmark results go: JSON and Markdown files under `bench/results/`, and tables spliced into README.md
 * between `<!-- NAME:start -->` and `<!-- NAME:end -->` markers, so README tables always come from a script.
 *
 * @module
 */

/** Writes `<base>.json` and `<base>.md` (atomically: temp name, then rename). */
export async function writeResults(base: string, results: unknown, markdown: string): Promise<void> {
  await Deno.mkdir(base.slice(0, base.lastIndexOf("/")) || ".", { recursive: true });
  await writeAtomic(`${base}.json`, JSON.stringify(results, null, 1) + "\n");
  await writeAtomic(`${base}.md`, markdown);
}

/**
 * The JSON-lines log of a long benchmark, `<base>.jsonl`: one finished run per line, appended as soon as it finishes,
 * so an interrupted benchmark can resume. Runs already there are returned; without `resume` they stop the benchmark
 * (exit status 2) rather than being mixed with a new run unawares.
 */
export async function openRunLog<T>(
  base: string,
  resume: boolean,
): Promise<{ runs: T[]; append: (run: T) => Promise<void> }> {
  const path = `${base}.jsonl`;
  const runs: T[] = [];
  try {
    for (const line of (await Deno.readTextFile(path)).split("\n")) if (line.trim()) runs.push(JSON.parse(line));
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  if (!resume && runs.length) {
    console.error(`${path} has ${runs.length} runs: pass --resume to add to them, or remove it`);
    Deno.exit(2);
  }
  await Deno.mkdir(base.slice(0, base.lastIndexOf("/")) || ".", { recursive: true });
  const append = async (run: T) => {
    runs.push(run);
    await Deno.writeTextFile(path, JSON.stringify(run) + "\n", { append: true });
  };
  return { runs, append };
}

/** Replaces the text between the markers of `name` in README.md. @throws {Error} when the markers are missing. */
export async function replaceReadmeSection(name: string, content: string, readme = "README.md"): Promise<void> {
  const text = await Deno.readTextFile(readme);
  const start = `<!-- ${name}:start -->`, end = `<!-- ${name}:end -->`;
  const i = text.indexOf(start), j = text.indexOf(end);
  if (i < 0 || j < i) throw new Error(`${readme} has no ${start} … ${end} section`);
  // Blank lines around the content keep the file as `deno fmt` writes it.
  await writeAtomic(readme, `${text.slice(0, i + start.length)}\n\n${content.trim()}\n\n${text.slice(j)}`);
}

async function writeAtomic(path: string, text: string): Promise<void> {
  const tmp = `${path}.tmp-${crypto.randomUUID().slice(0, 8)}`;
  try {
    await Deno.writeTextFile(tmp, text);
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
}
