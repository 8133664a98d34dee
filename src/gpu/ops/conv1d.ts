/**
 * Causal depthwise conv1d + SiLU of one Mamba direction (kernels/conv1d.wgsl).
 *
 *   conv1dSiluForward:  out (B, L, E) (direction order) ← xz (B, L, 2E) x half, weight (E, K), bias (E)
 *   conv1dSiluBackward: dxz (B, L, 2E) x half, dweight (E, K), dbias (E) ← dout (B, L, E)
 *
 * With reverse = true the op reads the tokens reversed and keeps its output in that (direction)
 * order, as the backward direction of the Vim block needs. The backward recomputes the
 * pre-activation from xz instead of storing it.
 */
import type { Gpu } from '../device.js';
import { ceilDiv, makeDispatch, type Dispatch } from '../kernels.js';
import type { GpuTensor } from '../tensor.js';
import { checkPositive, colSumForward, grid1d, need } from './reduce.js';

/** The widest conv the kernels take (their per-invocation tap sums are a fixed array). */
export const CONV1D_MAX_K = 8;

function checkSizes(where: string, B: number, L: number, E: number, K: number): void {
  checkPositive(where, { B, L, E, K });
  if (K > CONV1D_MAX_K) throw new Error(`${where}: K = ${K} exceeds the kernels' maximum of ${CONV1D_MAX_K}`);
}

export interface Conv1dSiluForwardArgs {
  out: GpuTensor; // (B, L, E) direction order
  xz: GpuTensor; // (B, L, 2E), x = columns 0…E−1
  weight: GpuTensor; // (E, K) (conv1d.weight (E, 1, K))
  bias: GpuTensor; // (E)
  B: number;
  L: number;
  E: number;
  K: number;
  reverse: boolean;
}

/** out = SiLU(bias + causal depthwise conv of x with weight), one dispatch. */
export function conv1dSiluForward(gpu: Gpu, a: Conv1dSiluForwardArgs): Dispatch {
  const { B, L, E, K } = a;
  const w = 'conv1dSiluForward';
  checkSizes(w, B, L, E, K);
  need(w, 'out', a.out, B * L * E);
  need(w, 'xz', a.xz, B * L * 2 * E);
  need(w, 'weight', a.weight, E * K);
  need(w, 'bias', a.bias, E);
  const n = B * L * E;
  return makeDispatch(gpu, 'conv1d', 'conv1d_silu_forward', { B, L, E, K, REVERSE: a.reverse ? 1 : 0 },
    [a.out, a.xz, a.weight, a.bias], grid1d(gpu, n), {
      label: a.reverse ? 'conv1d_silu_forward_rev' : 'conv1d_silu_forward',
      bytes: 4 * (2 * n + E * (K + 1)), flops: n * (2 * K + 5),
    });
}

/** Rows (b, t) per workgroup row of the dweight/dbias pass: G ≤ 1024 groups. */
export function conv1dBackwardRowsPerGroup(B: number, L: number): number {
  const M = B * L;
  return ceilDiv(M, Math.min(M, 1024));
}

/** Scratch elements conv1dSiluBackward needs for its dweight/dbias partials (G, E·K + E). */
export function conv1dBackwardScratchElements(B: number, L: number, E: number, K: number): number {
  return ceilDiv(B * L, conv1dBackwardRowsPerGroup(B, L)) * E * (K + 1);
}

export interface Conv1dSiluBackwardArgs {
  dxz: GpuTensor; // (B, L, 2E), only the x half is written
  dweight: GpuTensor; // (E, K)
  dbias: GpuTensor; // (E)
  dout: GpuTensor; // (B, L, E) direction order
  xz: GpuTensor; // (B, L, 2E)
  weight: GpuTensor; // (E, K)
  bias: GpuTensor; // (E)
  B: number;
  L: number;
  E: number;
  K: number;
  reverse: boolean;
  /** (conv1dBackwardScratchElements(B, L, E, K)) partial sums. */
  scratch: GpuTensor;
  /** dxz x half += instead of = (the second direction adds into the first's). */
  accumulate?: boolean;
  /** dweight, dbias += instead of =. */
  accumulateParams?: boolean;
}

/**
 * dxz x half (= or +=) the input gradient; dweight (E, K), dbias (E) (= or +=) sums over (b, t).
 * Four dispatches: dx; the per-group partials; their column sums into dweight and into dbias.
 */
export function conv1dSiluBackward(gpu: Gpu, a: Conv1dSiluBackwardArgs): Dispatch[] {
  const { B, L, E, K } = a;
  const w = 'conv1dSiluBackward';
  checkSizes(w, B, L, E, K);
  need(w, 'dxz', a.dxz, B * L * 2 * E);
  need(w, 'dweight', a.dweight, E * K);
  need(w, 'dbias', a.dbias, E);
  need(w, 'dout', a.dout, B * L * E);
  need(w, 'xz', a.xz, B * L * 2 * E);
  need(w, 'weight', a.weight, E * K);
  need(w, 'bias', a.bias, E);
  const rpg = conv1dBackwardRowsPerGroup(B, L);
  const G = ceilDiv(B * L, rpg);
  const X = E * (K + 1);
  need(w, 'scratch', a.scratch, G * X);
  const n = B * L * E;
  const rev = a.reverse ? 1 : 0;
  const sfx = a.reverse ? '_rev' : '';
  const acc = a.accumulate ? 1 : 0;
  return [
    makeDispatch(gpu, 'conv1d', 'conv1d_silu_backward_dx', { B, L, E, K, REVERSE: rev, ACCUMULATE: acc },
      [a.dxz, a.xz, a.weight, a.bias, a.dout], grid1d(gpu, n), {
        label: `conv1d_silu_backward_dx${sfx}`, bytes: 4 * (n * (3 + acc) + X), flops: n * K * (2 * K + 12),
      }),
    makeDispatch(gpu, 'conv1d', 'conv1d_silu_backward_params', { B, L, E, K, REVERSE: rev, ROWS_PER_GROUP: rpg },
      [a.scratch, a.xz, a.weight, a.bias, a.dout], [ceilDiv(E, 64), G], {
        label: `conv1d_silu_backward_params${sfx}`, bytes: 4 * (2 * n + X + G * X), flops: n * (4 * K + 12),
      }),
    ...colSumForward(gpu, {
      out: a.dweight, inp: a.scratch, M: G, X: E * K, inStride: X, inOffset: 0,
      accumulate: a.accumulateParams, singlePass: true, label: `conv1d_dweight${sfx}`,
    }),
    ...colSumForward(gpu, {
      out: a.dbias, inp: a.scratch, M: G, X: E, inStride: X, inOffset: E * K,
      accumulate: a.accumulateParams, singlePass: true, label: `conv1d_dbias${sfx}`,
    }),
  ];
}
