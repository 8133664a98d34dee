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

/**
 * Most positions per backward unit. Whole sequences walk fastest: on an H200 at vim-tiny's shapes
 * (48 dispatches a step) units of all 65 positions took 1.77 ms, of 13 positions (5 chunks, each
 * re-reading a K−1 halo on both sides, 5× the invocations) 2.03 ms.
 */
const CONV1D_BACKWARD_CHUNK = 128;
/** The backward's partial rows are kept near this many: their tree sum is then one small pass. */
const CONV1D_BACKWARD_MAX_GROUPS = 256;

/**
 * How conv1dSiluBackward splits the (b, t) rows: units of `chunk` positions (`chunks` per sample,
 * the last may be shorter), `unitsPerGroup` units (a multiple of the kernel's 4 lanes) per
 * workgroup row, `groups` partial rows. vim-tiny (B = 256, L = 65): one chunk of 65, 4 units a
 * group, 64 groups.
 */
export function conv1dBackwardPlan(B: number, L: number): { chunk: number; chunks: number; unitsPerGroup: number; groups: number } {
  const chunks = ceilDiv(L, CONV1D_BACKWARD_CHUNK);
  const chunk = ceilDiv(L, chunks);
  const units = B * chunks;
  const unitsPerGroup = 4 * ceilDiv(units, 4 * CONV1D_BACKWARD_MAX_GROUPS);
  return { chunk, chunks, unitsPerGroup, groups: ceilDiv(units, unitsPerGroup) };
}

/** Rows (b, t) one workgroup row of the backward covers, at most (units per group × chunk). */
export function conv1dBackwardRowsPerGroup(B: number, L: number): number {
  const p = conv1dBackwardPlan(B, L);
  return p.unitsPerGroup * p.chunk;
}

/** Scratch elements conv1dSiluBackward needs for its dweight/dbias partials (G, E·K + E). */
export function conv1dBackwardScratchElements(B: number, L: number, E: number, K: number): number {
  return conv1dBackwardPlan(B, L).groups * E * (K + 1);
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
 * Two dispatches: one walk over the rows writes dx and per-group partials of dweight and dbias
 * side by side (G, E·K + E); one tree column sum of the partials finishes both gradients.
 * (Before: four, with dx and the partials reading dout and x separately, and the two final sums
 * looping serially over ~1000 partial rows in 6 and 24 workgroups.)
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
  const plan = conv1dBackwardPlan(B, L);
  const G = plan.groups;
  const X = E * (K + 1);
  need(w, 'scratch', a.scratch, G * X);
  const n = B * L * E;
  const sfx = a.reverse ? '_rev' : '';
  const acc = a.accumulate ? 1 : 0;
  return [
    makeDispatch(gpu, 'conv1d', 'conv1d_silu_backward', {
      B, L, E, K, REVERSE: a.reverse ? 1 : 0, ACCUMULATE: acc, CHUNK: plan.chunk, UNITS_PER_GROUP: plan.unitsPerGroup,
    }, [a.dxz, a.xz, a.weight, a.bias, a.dout, a.scratch], [ceilDiv(E, 64), G], {
      // dout and x read, dx written (and read when accumulating), the partials written
      label: `conv1d_silu_backward${sfx}`, bytes: 4 * (n * (3 + acc) + X + G * X), flops: n * (6 * K + 12),
    }),
    ...colSumForward(gpu, {
      out: a.dweight, split: { at: E * K, out: a.dbias }, inp: a.scratch, M: G, X,
      accumulate: a.accumulateParams, singlePass: true, label: `conv1d_dparams${sfx}`,
    }),
  ];
}
