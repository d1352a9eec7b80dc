/**
 * Typed errors. Each names what went wrong and carries the numbers a caller needs to react, so a CLI can print a
 * helpful message and a program can catch one kind without parsing text.
 *
 * @module
 */

/** Base class of every error ptq throws on purpose. */
export class PtqError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** Operands whose shapes do not fit together, or a shape that does not match its data. */
export class ShapeError extends PtqError {}

/** NaN or infinite values where finite numbers are required (weights, Hessians, activations). */
export class NonFiniteError extends PtqError {}

/** Invalid options or arguments (out-of-range bits, unknown method, bad group size). */
export class OptionError extends PtqError {}

/**
 * Cholesky factorisation met a pivot that is not positive: the matrix is not (numerically) positive definite.
 * `pivot` is the 0-based row where it failed and `value` the offending diagonal value.
 */
export class NotPositiveDefiniteError extends PtqError {
  constructor(readonly size: number, readonly pivot: number, readonly value: number) {
    super(
      `matrix of size ${size} is not positive definite: pivot ${pivot} is ${value}` +
        ` (add damping, or check for dead or duplicated inputs)`,
    );
  }
}

/** An iterative routine (eigen-solver, SVD) that did not converge within its sweep limit. */
export class ConvergenceError extends PtqError {}

/** A kernel that a backend does not provide, or a backend that is unknown or failed to start. */
export class BackendError extends PtqError {}

/** A malformed or truncated file; `path` names it. */
export class FormatError extends PtqError {
  constructor(readonly path: string, message: string) {
    super(`${path}: ${message}`);
  }
}
