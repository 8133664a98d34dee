/**
 * Causal depthwise conv1d + SiLU of one Mamba direction, or of both directions of a Vim block
 * (kernels/conv1d.wgsl).
 *
 *   conv1dSiluForward:  out (B, L, E) (direction order) ← xz (B, L, 2E) x half, weight (E, K), bias (E)
 *   conv1dSiluBackward: dxz (B, L, 2E) x half, dweight (E, K), dbias (E) ← dout (B, L, E)
 *   conv1dSiluForward2, conv1dSiluBackward2: both directions of a Vim block in one pass over xz
 *     (the forward direction in token order, the reversed one in its own order), each with its own
 *     weight and bias; the backward writes dxz's x half once, the sum of both directions' parts.
 *
 * With reverse = true the op reads the tokens reversed and keeps its output in that (direction)
 * order, as the backward direction of the Vim block needs. The backward recomputes the
 * pre-activation from xz instead of storing it.
 */
import type { Gpu } from '../device.js';
import { ceilDiv, makeDispatch, type Dispatch } from '../kernels.js';
import type { GpuTensor } from '../tensor.js';
import { weightSumsRegion, type WeightSums } from './matmul.js';
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

// ---- both directions in one pass ----------------------------------------------------------------

/**
 * Most positions per unit of the both-directions forward. Short units give many invocations (one
 * per unit and channel, each walking its unit + K−1 steps); their halos (K−1 inputs on each side)
 * are re-read from cache, not memory. vim-tiny (L = 65): 5 units of 13, 491,520 invocations.
 */
const CONV1D_FORWARD2_CHUNK = 16;

/** How conv1dSiluForward2 splits L: `chunks` units of `chunk` positions (the last may be shorter). */
export function conv1dForward2Plan(L: number): { chunk: number; chunks: number } {
  const chunks = ceilDiv(L, CONV1D_FORWARD2_CHUNK);
  return { chunk: ceilDiv(L, chunks), chunks };
}

export interface Conv1dSiluForward2Args {
  outF: GpuTensor; // (B, L, E) forward direction (token order)
  outB: GpuTensor; // (B, L, E) reversed direction (position s holds token L−1−s's output)
  xz: GpuTensor; // (B, L, 2E), x = columns 0…E−1
  weightF: GpuTensor; // (E, K) conv1d.weight
  biasF: GpuTensor; // (E) conv1d.bias
  weightB: GpuTensor; // (E, K) conv1d_b.weight
  biasB: GpuTensor; // (E) conv1d_b.bias
  B: number;
  L: number;
  E: number;
  K: number;
}

/**
 * Both directions' conv1d + SiLU from one read of xz's x half, one dispatch: outF as
 * conv1dSiluForward (reverse false) with weightF, biasF; outB as reverse true with weightB, biasB.
 */
export function conv1dSiluForward2(gpu: Gpu, a: Conv1dSiluForward2Args): Dispatch {
  const { B, L, E, K } = a;
  const w = 'conv1dSiluForward2';
  checkSizes(w, B, L, E, K);
  need(w, 'outF', a.outF, B * L * E);
  need(w, 'outB', a.outB, B * L * E);
  need(w, 'xz', a.xz, B * L * 2 * E);
  need(w, 'weightF', a.weightF, E * K);
  need(w, 'biasF', a.biasF, E);
  need(w, 'weightB', a.weightB, E * K);
  need(w, 'biasB', a.biasB, E);
  const n = B * L * E;
  const plan = conv1dForward2Plan(L);
  return makeDispatch(gpu, 'conv1d', 'conv1d_silu_forward2', { B, L, E, K, CHUNK: plan.chunk },
    [a.outF, a.xz, a.weightF, a.biasF, a.outB, a.weightB, a.biasB], grid1d(gpu, B * plan.chunks * E), {
      // x read once, both outputs written, both directions' weights and biases read
      label: 'conv1d_silu_forward2', bytes: 4 * (3 * n + 2 * E * (K + 1)), flops: 2 * n * (2 * K + 5),
    });
}

/** Scratch elements conv1dSiluBackward2 needs for both directions' partials (G, 2·(E·K + E)). */
export function conv1dBackward2ScratchElements(B: number, L: number, E: number, K: number): number {
  return 2 * conv1dBackwardScratchElements(B, L, E, K);
}

export interface Conv1dSiluBackward2Args {
  dxz: GpuTensor; // (B, L, 2E), only the x half is written
  dweightF: GpuTensor; // (E, K)
  dbiasF: GpuTensor; // (E)
  dweightB: GpuTensor; // (E, K)
  dbiasB: GpuTensor; // (E)
  doutF: GpuTensor; // (B, L, E) token order
  doutB: GpuTensor; // (B, L, E) reversed direction's order
  xz: GpuTensor; // (B, L, 2E)
  weightF: GpuTensor; // (E, K)
  biasF: GpuTensor; // (E)
  weightB: GpuTensor; // (E, K)
  biasB: GpuTensor; // (E)
  B: number;
  L: number;
  E: number;
  K: number;
  /** (conv1dBackward2ScratchElements(B, L, E, K)) partial sums (not used with `sums`). */
  scratch: GpuTensor;
  /**
   * The partials to a region of `sums.partials` of their own, the four gradients' sums recorded
   * there for weightSumsDispatch (with a block's weight gradients' sums) instead of a dispatch here.
   */
  sums?: WeightSums;
  /** dxz x half += instead of =. */
  accumulate?: boolean;
  /** dweight, dbias of both directions += instead of =. */
  accumulateParams?: boolean;
}

/**
 * Both directions' conv1d + SiLU backward: dxz x half (= or +=) dxF + dxB (the forward direction's
 * part added first), dweightF, dbiasF, dweightB, dbiasB (= or +=) their sums over (b, t). As
 * conv1dSiluBackward for reverse false, then for reverse true accumulating into dxz, but xz is
 * read and dxz's x half written once. Two dispatches: the walk (dx and both directions' partials,
 * side by side in a (G, 2·(E·K + E)) row) and one tree column sum finishing all four gradients;
 * with `sums`, the walk alone (weightSumsDispatch adds the partials, in another order).
 */
export function conv1dSiluBackward2(gpu: Gpu, a: Conv1dSiluBackward2Args): Dispatch[] {
  const { B, L, E, K } = a;
  const w = 'conv1dSiluBackward2';
  checkSizes(w, B, L, E, K);
  need(w, 'dxz', a.dxz, B * L * 2 * E);
  need(w, 'dweightF', a.dweightF, E * K);
  need(w, 'dbiasF', a.dbiasF, E);
  need(w, 'dweightB', a.dweightB, E * K);
  need(w, 'dbiasB', a.dbiasB, E);
  need(w, 'doutF', a.doutF, B * L * E);
  need(w, 'doutB', a.doutB, B * L * E);
  need(w, 'xz', a.xz, B * L * 2 * E);
  need(w, 'weightF', a.weightF, E * K);
  need(w, 'biasF', a.biasF, E);
  need(w, 'weightB', a.weightB, E * K);
  need(w, 'biasB', a.biasB, E);
  const plan = conv1dBackwardPlan(B, L);
  const G = plan.groups;
  const X = E * (K + 1);
  // the four gradients' columns of a partial row (the tree sum below splits the row the same way)
  const outs = [{ dst: a.dweightF, at: 0, n: E * K }, { dst: a.dbiasF, at: E * K, n: E }, { dst: a.dweightB, at: X, n: E * K }, { dst: a.dbiasB, at: X + E * K, n: E }];
  const partials = a.sums ? weightSumsRegion(a.sums, w, G, 2 * X, outs, a.accumulateParams ?? false) : a.scratch;
  need(w, 'scratch', partials, 2 * G * X);
  const n = B * L * E;
  const acc = a.accumulate ? 1 : 0;
  const walk = makeDispatch(gpu, 'conv1d', 'conv1d_silu_backward2', {
    B, L, E, K, ACCUMULATE: acc, CHUNK: plan.chunk, UNITS_PER_GROUP: plan.unitsPerGroup,
  }, [a.dxz, a.xz, a.weightF, a.biasF, a.doutF, a.weightB, a.biasB, a.doutB, partials], [ceilDiv(E, 64), G], {
    // x and both douts read, dx written (and read when accumulating), both directions' weights
    // and biases read, the partials written
    label: 'conv1d_silu_backward2', bytes: 4 * (n * (4 + acc) + 2 * X + 2 * G * X), flops: n * (12 * K + 25),
  });
  if (a.sums) return [walk];
  const col = (o: (typeof outs)[number]) => ({ at: o.at, out: o.dst });
  return [
    walk,
    ...colSumForward(gpu, {
      out: outs[0].dst, inp: partials, M: G, X: 2 * X,
      split: [col(outs[1]), col(outs[2]), col(outs[3])],
      accumulate: a.accumulateParams, singlePass: true, label: 'conv1d_dparams2',
    }),
  ];
}
