/**
 * Shared pieces of the CLI commands: option parsing helpers and one way of reporting failures.
 *
 * @module
 */

import { parseArgs, type ParseArgsConfig } from "node:util";
import { PtqError } from "../core/errors.ts";

/** An invalid command line: reported with the usage, exit status 2. */
export class UsageError extends Error {}

type Options = NonNullable<ParseArgsConfig["options"]>;
const HELP = { help: { type: "boolean", short: "h", default: false } } as const;
/** The parsed flags of a command whose options are `O`, `-h/--help` added. */
type Values<O extends Options> = ReturnType<
  typeof parseArgs<{ args: string[]; strict: true; allowPositionals: false; options: O & typeof HELP }>
>["values"];

/**
 * Parses a command's flags (strict, no positionals, `-h/--help` added) the way every command does: an unknown or
 * malformed flag prints the message and the usage and gives exit status 2; `--help` prints the usage and gives 0.
 *
 * @returns the flags, or the exit status to return at once.
 */
export function parseCommand<const O extends Options>(
  command: string,
  usage: string,
  args: string[],
  options: O,
): Values<O> | number {
  let values: Values<O>;
  try {
    values = parseArgs({ args, strict: true, allowPositionals: false, options: { ...options, ...HELP } })
      .values as Values<O>;
  } catch (e) {
    console.error(`ptq ${command}: ${(e as Error).message}\n\n${usage}`);
    return 2;
  }
  if ((values as { help?: boolean }).help) {
    console.log(usage);
    return 0;
  }
  return values;
}

/**
 * An integer option: `fallback` when absent.
 * @throws {UsageError} unless the value is an integer in `[min, max]`.
 */
export function intOption(value: string | undefined, flag: string, fallback: number, min = 0, max = Infinity): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!/^-?\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < min || n > max) {
    throw new UsageError(
      `--${flag} must be an integer ${max < Infinity ? `in ${min}..${max}` : `≥ ${min}`}, got "${value}"`,
    );
  }
  return n;
}

/**
 * A number option: `fallback` when absent.
 * @throws {UsageError} unless the value is a finite number ≥ `min`.
 */
export function numberOption(value: string | undefined, flag: string, fallback: number, min = -Infinity): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (value.trim() === "" || !Number.isFinite(n) || n < min) {
    throw new UsageError(`--${flag} must be a number${min > -Infinity ? ` ≥ ${min}` : ""}, got "${value}"`);
  }
  return n;
}

/**
 * Checks that a path given on the command line exists.
 * @throws {UsageError} `--flag PATH: no such file or folder` when it does not.
 */
export async function requirePath(path: string, flag: string): Promise<void> {
  try {
    await Deno.stat(path);
  } catch {
    throw new UsageError(`--${flag} ${path}: no such file or folder`);
  }
}

/**
 * One of a fixed set of values: `fallback` when absent.
 * @throws {UsageError} for any other value.
 */
export function choice<T extends string>(
  value: string | undefined,
  flag: string,
  allowed: readonly T[],
  fallback: T,
): T {
  if (value === undefined) return fallback;
  if (!(allowed as readonly string[]).includes(value)) {
    throw new UsageError(`--${flag} must be one of ${allowed.join(", ")}, got "${value}"`);
  }
  return value as T;
}

/**
 * Prints an error the way every command does and returns its exit status: 2 with the usage for a bad command line,
 * 1 with the message for a failure while running (typed library errors and file errors carry readable messages),
 * 1 with the stack for anything unexpected (a bug).
 */
export function failure(command: string, e: unknown, usage: string): number {
  if (e instanceof UsageError) {
    console.error(`ptq ${command}: ${e.message}\n\n${usage}`);
    return 2;
  }
  if (e instanceof PtqError || e instanceof Deno.errors.NotFound || e instanceof Deno.errors.PermissionDenied) {
    console.error(`ptq ${command}: ${e.message}`);
    return 1;
  }
  console.error(`ptq ${command}: unexpected error`, e);
  return 1;
}
