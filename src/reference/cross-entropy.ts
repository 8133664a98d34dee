/**
 * Softmax cross-entropy against soft targets, so label smoothing, mixup and cutmix all fit:
 *
 *   targets[b,:]  = (1 − ε) · onehot(label_b) + ε / C                    (B, C)  (smooth_targets)
 *   lse_b         = max_c ℓ[b,c] + log Σ_c exp(ℓ[b,c] − max_c ℓ[b,c])   (stable log-sum-exp)
 *   probs[b,c]    = exp(ℓ[b,c] − lse_b)                                  (B, C)
 *   losses[b]     = −Σ_c targets[b,c] · (ℓ[b,c] − lse_b)                 (B)
 *
 * Backward of scale · Σ_b losses[b] (scale = 1/B for the mean loss), for target rows that sum to 1
 * (every mix of smoothed one-hots does):
 *   dlogits[b,c] += scale · (probs[b,c] − targets[b,c])
 * It accumulates (+=) into dlogits.
 */
import { VimError } from '../errors.js';

/** out (B,C) = (1 − smoothing) · onehot(labels) + smoothing / C. */
export function smooth_targets(out: Float64Array, labels: ArrayLike<number>, B: number, C: number, smoothing: number): void {
  if (!(smoothing >= 0 && smoothing <= 1)) {
    throw new VimError(`smooth_targets: expected label smoothing in [0, 1] but received ${smoothing}`);
  }
  for (let b = 0; b < B; b++) {
    const label = labels[b];
    if (!Number.isInteger(label) || label < 0 || label >= C) {
      throw new VimError(`smooth_targets: label ${label} of sample ${b} is not a class index in 0…${C - 1}`);
    }
    for (let c = 0; c < C; c++) out[b * C + c] = smoothing / C + (c === label ? 1 - smoothing : 0);
  }
}

/** losses (B) and probs (B,C) from logits (B,C) and soft targets (B,C). */
export function softmax_cross_entropy_forward(
  losses: Float64Array, probs: Float64Array, logits: Float64Array, targets: Float64Array, B: number, C: number,
): void {
  for (let b = 0; b < B; b++) {
    const o = b * C;
    let max = -Infinity;
    for (let c = 0; c < C; c++) max = Math.max(max, logits[o + c]);
    let sum = 0;
    for (let c = 0; c < C; c++) sum += Math.exp(logits[o + c] - max);
    const lse = max + Math.log(sum);
    let loss = 0;
    for (let c = 0; c < C; c++) {
      const logp = logits[o + c] - lse;
      probs[o + c] = Math.exp(logp);
      loss -= targets[o + c] * logp;
    }
    losses[b] = loss;
  }
}

/** dlogits (B,C) += dlosses_scale · (probs − targets). */
export function softmax_cross_entropy_backward(
  dlogits: Float64Array, dlosses_scale: number, probs: Float64Array, targets: Float64Array, B: number, C: number,
): void {
  for (let i = 0; i < B * C; i++) dlogits[i] += dlosses_scale * (probs[i] - targets[i]);
}
