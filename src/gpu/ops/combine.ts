/**
 * The combine of the two Mamba directions (kernels/combine.wgsl):
 *
 *   combineForward:  out[b,t] = (y_f[b,t] + y_b[b,L−1−t]) / 2          (B, L, E)
 *   combineBackward: dy_f[b,t] = dout[b,t] / 2, dy_b[b,L−1−t] = dout[b,t] / 2 (= or +=)
 *
 * y_b and dy_b are in the backward direction's (reversed) token order. With `scale`, sample b's
 * values are multiplied by scale.t[scale.offset + b] both ways (the training-time drop path).
 *
 * The model fuses both into the selective scan by default (ScanForwardArgs.combine,
 * ScanBackwardArgs.doutCombined, same arithmetic order); these dispatches are the separate path
 * that VIM_FUSE_COMBINE=0 selects.
 */
import type { Gpu } from '../device.js';
import { makeDispatch, type Dispatch } from '../kernels.js';
import type { GpuTensor } from '../tensor.js';
import { checkPositive, grid1d, need } from './reduce.js';

/** Per-sample factors: row `offset` … `offset` + B − 1 of a (rows, B) tensor. */
export interface CombineScale {
  t: GpuTensor;
  offset: number;
}

/** Checks that `scale` (when given) holds rows `offset` … `offset` + B − 1. */
export function checkCombineScale(where: string, scale: CombineScale | undefined, B: number): void {
  if (!scale) return;
  if (!Number.isInteger(scale.offset) || scale.offset < 0) throw new Error(`${where}: scale.offset must be a non-negative integer; received ${scale.offset}`);
  need(where, 'scale', scale.t, scale.offset + B);
}

export interface CombineForwardArgs {
  out: GpuTensor; // (B, L, E)
  yF: GpuTensor; // (B, L, E)
  yB: GpuTensor; // (B, L, E) direction order
  B: number;
  L: number;
  E: number;
  /** Per-sample factors (drop path); absent: 1. */
  scale?: CombineScale;
}

/** out = (y_f + reverse(y_b)) / 2 (· scale[b]), one dispatch. */
export function combineForward(gpu: Gpu, a: CombineForwardArgs): Dispatch {
  const { B, L, E } = a;
  checkPositive('combineForward', { B, L, E });
  const n = B * L * E;
  for (const [k, t] of [['out', a.out], ['yF', a.yF], ['yB', a.yB]] as const) need('combineForward', k, t, n);
  checkCombineScale('combineForward', a.scale, B);
  if (a.scale) {
    return makeDispatch(gpu, 'combine', 'combine_forward_scaled', { B, L, E, SCALE_OFFSET: a.scale.offset },
      [a.out, a.yF, a.yB, a.scale.t], grid1d(gpu, n), { bytes: 12 * n, flops: 3 * n, label: 'combine_forward' });
  }
  return makeDispatch(gpu, 'combine', 'combine_forward', { B, L, E }, [a.out, a.yF, a.yB], grid1d(gpu, n),
    { bytes: 12 * n, flops: 2 * n });
}

export interface CombineBackwardArgs {
  dyF: GpuTensor; // (B, L, E)
  dyB: GpuTensor; // (B, L, E) direction order
  dout: GpuTensor; // (B, L, E)
  B: number;
  L: number;
  E: number;
  /** dy_f, dy_b += instead of =. */
  accumulate?: boolean;
  /** The forward's per-sample factors (drop path); absent: 1. */
  scale?: CombineScale;
}

/** dy_f = dout / 2, dy_b = reverse(dout) / 2 (· scale[b]; = or +=), one dispatch. */
export function combineBackward(gpu: Gpu, a: CombineBackwardArgs): Dispatch {
  const { B, L, E } = a;
  checkPositive('combineBackward', { B, L, E });
  const n = B * L * E;
  for (const [k, t] of [['dyF', a.dyF], ['dyB', a.dyB], ['dout', a.dout]] as const) need('combineBackward', k, t, n);
  checkCombineScale('combineBackward', a.scale, B);
  const acc = a.accumulate ? 1 : 0;
  const cost = { bytes: 4 * n * (3 + 2 * acc), flops: n * (a.scale ? 2 : 1), label: 'combine_backward' };
  if (a.scale) {
    return makeDispatch(gpu, 'combine', 'combine_backward_scaled', { B, L, E, ACCUMULATE: acc, SCALE_OFFSET: a.scale.offset },
      [a.dyF, a.dyB, a.dout, a.scale.t], grid1d(gpu, n), cost);
  }
  return makeDispatch(gpu, 'combine', 'combine_backward', { B, L, E, ACCUMULATE: acc }, [a.dyF, a.dyB, a.dout], grid1d(gpu, n), cost);
}
