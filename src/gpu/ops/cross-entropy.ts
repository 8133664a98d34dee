/**
 * Softmax cross-entropy against soft targets (kernels/cross-entropy.wgsl).
 *
 *   softmaxCrossEntropyForward:  losses (B), probs (B, C), loss (1) = mean ← logits (B, C), targets (B, C)
 *   softmaxCrossEntropyBackward: dlogits (B, C) (= or +=) scale · (probs − targets)
 *
 * The trainer uploads the targets each step (smoothed one-hots, mixed by mixup or cutmix; every
 * row sums to 1) and reads back only the mean loss.
 */
import type { Gpu } from '../device.js';
import { makeDispatch, type Dispatch } from '../kernels.js';
import type { GpuTensor } from '../tensor.js';
import { checkPositive, grid1d, need, workgroupGrid } from './reduce.js';

export interface SoftmaxCrossEntropyForwardArgs {
  losses: GpuTensor; // (B)
  probs: GpuTensor; // (B, C)
  /** (1) the mean of losses; null to skip it (evaluation can read losses instead). */
  loss: GpuTensor | null;
  logits: GpuTensor; // (B, C)
  targets: GpuTensor; // (B, C)
  B: number;
  C: number;
}

/** Per-row losses and probabilities, then (unless loss is null) their mean: one or two dispatches. */
export function softmaxCrossEntropyForward(gpu: Gpu, a: SoftmaxCrossEntropyForwardArgs): Dispatch[] {
  const { B, C } = a;
  const w = 'softmaxCrossEntropyForward';
  checkPositive(w, { B, C });
  need(w, 'losses', a.losses, B);
  need(w, 'probs', a.probs, B * C);
  need(w, 'logits', a.logits, B * C);
  need(w, 'targets', a.targets, B * C);
  const list = [makeDispatch(gpu, 'cross-entropy', 'softmax_cross_entropy_forward', { B, C },
    [a.losses, a.probs, a.logits, a.targets], workgroupGrid(gpu, B), { bytes: 4 * (3 * B * C + B), flops: 6 * B * C })];
  if (a.loss) {
    need(w, 'loss', a.loss, 1);
    list.push(makeDispatch(gpu, 'cross-entropy', 'mean_loss', { B }, [a.loss, a.losses], [1], { bytes: 4 * (B + 1), flops: B }));
  }
  return list;
}

export interface SoftmaxCrossEntropyBackwardArgs {
  dlogits: GpuTensor; // (B, C)
  probs: GpuTensor; // (B, C)
  targets: GpuTensor; // (B, C)
  B: number;
  C: number;
  /** The gradient of the loss with respect to each row's loss: 1/B for the mean. */
  scale: number;
  /** dlogits += instead of =. */
  accumulate?: boolean;
}

/** dlogits (= or +=) scale · (probs − targets), one dispatch. */
export function softmaxCrossEntropyBackward(gpu: Gpu, a: SoftmaxCrossEntropyBackwardArgs): Dispatch {
  const { B, C } = a;
  const w = 'softmaxCrossEntropyBackward';
  checkPositive(w, { B, C });
  if (!Number.isFinite(a.scale)) throw new Error(`${w}: scale must be finite, got ${a.scale}`);
  need(w, 'dlogits', a.dlogits, B * C);
  need(w, 'probs', a.probs, B * C);
  need(w, 'targets', a.targets, B * C);
  const acc = a.accumulate ? 1 : 0;
  return makeDispatch(gpu, 'cross-entropy', 'softmax_cross_entropy_backward', { B, C, SCALE: a.scale, ACCUMULATE: acc },
    [a.dlogits, a.probs, a.targets], grid1d(gpu, B * C), { bytes: 4 * B * C * (3 + acc), flops: 2 * B * C });
}
