/**
 * The body of the WASM backend's workers. It is serialised with `Function.prototype.toString` into a blob URL, so it
 * must stay self-contained: no imports, no references outside its own body.
 *
 * Protocol: the first message carries `{ module, memory }` (a compiled module and the shared memory) and is answered
 * `{ ready: true }`; each later message carries `{ calls }`, a list of `[exportName, ...numbers]` run in order, and is
 * answered `{}` or `{ error }`.
 *
 * @module
 */

/** The worker's entry point (runs inside the worker). */
export function workerMain(): void {
  interface Scope {
    onmessage: ((e: MessageEvent) => void) | null;
    postMessage(message: unknown): void;
  }
  const scope = globalThis as unknown as Scope;
  let exports: Record<string, (...args: number[]) => number> | undefined;
  scope.onmessage = (e: MessageEvent) => {
    const msg = e.data as {
      module?: WebAssembly.Module;
      memory?: WebAssembly.Memory;
      calls?: [string, ...number[]][];
    };
    try {
      if (msg.module) {
        const instance = new WebAssembly.Instance(msg.module, { env: { memory: msg.memory! } });
        exports = instance.exports as unknown as Record<string, (...args: number[]) => number>;
        scope.postMessage({ ready: true });
        return;
      }
      for (const [name, ...args] of msg.calls ?? []) exports![name](...args);
      scope.postMessage({});
    } catch (err) {
      scope.postMessage({ error: err instanceof Error ? err.message : String(err) });
    }
  };
}
