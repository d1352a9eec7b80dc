/**
 * Lexical path handling for confinement to the server's roots (POSIX paths). The lexical check comes first so that a
 * path outside the roots is refused (403) without the server ever touching it, which would also tell a client
 * whether it exists; the Deno adapter then resolves symbolic links with `realPath` and checks again.
 *
 * @module
 */

/**
 * `path` with `.` and `..` segments and repeated slashes removed; `..` never climbs above `/` (or above the start of
 * a relative path, where it is kept).
 *
 * @example
 * ```ts
 * import { normalizePath } from "./paths.ts";
 * console.assert(normalizePath("/srv/models/../../etc/passwd") === "/etc/passwd");
 * console.assert(normalizePath("a/./b//c/..") === "a/b");
 * ```
 */
export function normalizePath(path: string): string {
  const absolute = path.startsWith("/");
  const out: string[] = [];
  for (const part of path.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") {
      if (out.length && out[out.length - 1] !== "..") out.pop();
      else if (!absolute) out.push("..");
    } else out.push(part);
  }
  const joined = out.join("/");
  return absolute ? `/${joined}` : joined || ".";
}

/** True when the absolute, normalized `path` is `root` or lies below it. */
export function isInside(path: string, root: string): boolean {
  if (root === "/") return path.startsWith("/");
  return path === root || path.startsWith(root.endsWith("/") ? root : `${root}/`);
}

/**
 * The absolute paths a client's `path` may mean: itself when absolute, else the path under each root in order. Only
 * candidates that stay inside their root (lexically) are returned, so `..` cannot climb out.
 */
export function candidatePaths(path: string, roots: readonly string[]): string[] {
  if (path.startsWith("/")) {
    const p = normalizePath(path);
    return roots.some((r) => isInside(p, r)) ? [p] : [];
  }
  const out: string[] = [];
  for (const root of roots) {
    const p = normalizePath(`${root}/${path}`);
    if (isInside(p, root)) out.push(p);
  }
  return out;
}
