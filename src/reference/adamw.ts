/**
 * AdamW (Loshchilov & Hutter; PyTorch's torch.optim.AdamW) on a flat parameter array, step t ≥ 1:
 *
 *   p  ← p − lr · wd · p                  only where decay is set (decoupled weight decay)
 *   m  ← β1 · m + (1 − β1) · g
 *   v  ← β2 · v + (1 − β2) · g²
 *   m̂  = m / (1 − β1^t),  v̂ = v / (1 − β2^t)
 *   p  ← p − lr · m̂ / (sqrt(v̂) + eps)
 *
 * The decay mask is per element (decay_mask expands the per-tensor flags of a parameter layout), or
 * one boolean for the whole array (to update one tensor at a time with its spec's flag).
 */
import type { ParamSpec } from '../model/params.js';
import { VimError } from '../errors.js';

/** One decay flag per element of the flat parameter array: 1 where the tensor's spec decays. */
export function decay_mask(specs: readonly ParamSpec[]): Uint8Array {
  const total = specs.reduce((a, s) => Math.max(a, s.offset + s.size), 0);
  const mask = new Uint8Array(total);
  for (const s of specs) if (s.decay) mask.fill(1, s.offset, s.offset + s.size);
  return mask;
}

/** Updates params, m and v in place from grads; all four arrays have the same length. */
export function adamw_update(
  params: Float64Array, grads: Float64Array, m: Float64Array, v: Float64Array,
  decay: ArrayLike<number | boolean> | boolean,
  lr: number, beta1: number, beta2: number, eps: number, weightDecay: number, step: number,
): void {
  if (!Number.isInteger(step) || step < 1) {
    throw new VimError(`adamw_update: expected a 1-based integer step but received ${step}`);
  }
  const n = params.length;
  if (grads.length !== n || m.length !== n || v.length !== n || (typeof decay !== 'boolean' && decay.length !== n)) {
    throw new VimError(`adamw_update: params, grads, m, v and the decay mask must all have ${n} elements`);
  }
  const bc1 = 1 - beta1 ** step; // bias corrections
  const bc2 = 1 - beta2 ** step;
  for (let i = 0; i < n; i++) {
    const decays = typeof decay === 'boolean' ? decay : Boolean(decay[i]);
    if (decays) params[i] -= lr * weightDecay * params[i];
    const g = grads[i];
    m[i] = beta1 * m[i] + (1 - beta1) * g;
    v[i] = beta2 * v[i] + (1 - beta2) * g * g;
    const mHat = m[i] / bc1;
    const vHat = v[i] / bc2;
    params[i] -= (lr * mHat) / (Math.sqrt(vHat) + eps);
  }
}
