/**
 * Finite-difference checking for the reference backward functions.
 *
 * The numeric derivative of a scalar loss f with respect to one coordinate x_i is the central
 * difference of order 2 or 4, with step h = step · max(1, |x_i|):
 *
 *   order 2:  f'(x) ≈ (f(x+h) − f(x−h)) / 2h                              error O(h²)
 *   order 4:  f'(x) ≈ (f(x−2h) − 8 f(x−h) + 8 f(x+h) − f(x+2h)) / 12h     error O(h⁴)
 *
 * The fourth-order stencil lets h be large enough that rounding in f stays far below the checked
 * tolerance while the truncation error is still negligible, so gradients are checked to ~1e-9
 * rather than ~1e-6. Each coordinate is compared by |a − n| / max(|a|, |n|, floor): a relative
 * error where the gradient is larger than floor, an absolute one (scaled by 1/floor) below it,
 * where rounding in f (about 1e-16·|f|/h) is all a numeric derivative can resolve.
 */
import { Rng } from '../rng.js';

export interface GradCheckOptions {
  /** Coordinates to check: all of them when the tensor is no larger (default 24). */
  samples?: number;
  /** Picks the sampled coordinates (default Rng(1)). */
  rng?: Rng;
  /** Relative step (default 1e-3 for order 4, 1e-6 for order 2). */
  step?: number;
  /** Stencil order (default 4). */
  order?: 2 | 4;
  /** The smallest denominator of the relative error, so tiny and zero gradients compare (default 1e-5). */
  floor?: number;
}

export interface GradCheckResult {
  name: string;
  checked: number; // coordinates compared
  maxError: number; // max over them of |a − n| / max(|a|, |n|, floor)
  worstIndex: number;
  analytic: number; // at the worst index
  numeric: number;
}

/** The numeric derivative of loss() with respect to x[i]; x[i] is restored afterwards. */
export function numeric_derivative(x: Float64Array, i: number, loss: () => number, step: number, order: 2 | 4 = 4): number {
  const x0 = x[i];
  const h = step * Math.max(1, Math.abs(x0));
  const at = (k: number): number => {
    x[i] = x0 + k * h;
    const f = loss();
    x[i] = x0;
    return f;
  };
  if (order === 2) return (at(1) - at(-1)) / (2 * h);
  return (8 * (at(1) - at(-1)) - (at(2) - at(-2))) / (12 * h); // differences first: exact 0 for a constant f
}

/** The sorted coordinates to check: all of 0…n−1, or `samples` distinct ones drawn by rng. */
export function sample_indices(n: number, samples: number, rng: Rng): number[] {
  if (samples >= n) return Array.from({ length: n }, (_, i) => i);
  const all = Array.from({ length: n }, (_, i) => i);
  for (let k = 0; k < samples; k++) {
    const j = k + rng.int(n - k); // partial Fisher-Yates
    const t = all[k];
    all[k] = all[j];
    all[j] = t;
  }
  return all.slice(0, samples).sort((a, b) => a - b);
}

/**
 * Compares analytic (same length as x) against numeric derivatives of loss() at sampled
 * coordinates of x, which loss() must read (x is perturbed in place and restored).
 */
export function check_gradient(
  name: string, x: Float64Array, analytic: Float64Array, loss: () => number, opts: GradCheckOptions = {},
): GradCheckResult {
  if (analytic.length !== x.length) {
    throw new Error(`check_gradient(${name}): gradient has ${analytic.length} elements, tensor has ${x.length}`);
  }
  const order = opts.order ?? 4;
  const step = opts.step ?? (order === 4 ? 1e-3 : 1e-6);
  const floor = opts.floor ?? 1e-5;
  const indices = sample_indices(x.length, opts.samples ?? 24, opts.rng ?? new Rng(1));
  const result: GradCheckResult = { name, checked: indices.length, maxError: 0, worstIndex: -1, analytic: 0, numeric: 0 };
  for (const i of indices) {
    const a = analytic[i];
    const n = numeric_derivative(x, i, loss, step, order);
    const err = Math.abs(a - n) / Math.max(Math.abs(a), Math.abs(n), floor);
    if (err >= result.maxError) Object.assign(result, { maxError: err, worstIndex: i, analytic: a, numeric: n });
  }
  return result;
}
