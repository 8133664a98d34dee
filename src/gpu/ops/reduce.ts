/**
 * Deterministic column sums (kernels/reduce.wgsl) for bias and weight gradients, and the grid
 * helper of the elementwise kernels.
 *
 *   colSum: out (X) (= or +=) Σ_m inp (M, X)
 *
 * Up to COLSUM_SINGLE_PASS_ROWS rows take one dispatch; more rows take two (row groups of
 * COLSUM_ROWS_PER_GROUP into a (G, X) scratch, then the G partials into out), so a big GPU has
 * enough workgroups and no float atomics are needed. Kernels that write their own (G, X) partials
 * (rmsnorm, conv1d backward) finish with `colSumForward` over those partials.
 */
import type { Gpu } from '../device.js';
import { ceilDiv, makeDispatch, type Dispatch } from '../kernels.js';
import { numel, type GpuTensor } from '../tensor.js';

/** Row counts up to this are summed by one dispatch. */
export const COLSUM_SINGLE_PASS_ROWS = 256;
/** Rows per workgroup row in the first of two passes. */
export const COLSUM_ROWS_PER_GROUP = 64;

/** Row groups of the first pass (1 when one pass suffices). */
export function colSumGroups(M: number): number {
  return M <= COLSUM_SINGLE_PASS_ROWS ? 1 : ceilDiv(M, COLSUM_ROWS_PER_GROUP);
}

/** Scratch elements `colSumForward` needs for an (M, X) sum: 0 when one pass suffices. */
export function colSumScratchElements(M: number, X: number): number {
  const G = colSumGroups(M);
  return G === 1 ? 0 : G * X;
}

export interface ColSumArgs {
  /** (X) the sums; written, or added to with `accumulate`. */
  out: GpuTensor;
  /** (M, inStride): row m, column x at element inOffset + m·inStride + x. */
  inp: GpuTensor;
  M: number;
  X: number;
  /** Elements between rows of inp (default X): sums a column window of a wider matrix. */
  inStride?: number;
  /** Element offset of column 0 in row 0 (default 0). */
  inOffset?: number;
  /** out += sums instead of out = sums. */
  accumulate?: boolean;
  /** (colSumScratchElements(M, X)) when M > COLSUM_SINGLE_PASS_ROWS; never aliases out or inp. */
  scratch?: GpuTensor;
  /** One dispatch whatever M (for a few hundred to a few thousand partial rows). */
  singlePass?: boolean;
  label?: string;
}

/** out (X) (= or +=) Σ_rows inp (M, X): one dispatch, or two through `scratch`. */
export function colSumForward(gpu: Gpu, a: ColSumArgs): Dispatch[] {
  const { M, X } = a;
  const inStride = a.inStride ?? X;
  const inOffset = a.inOffset ?? 0;
  checkPositive('colSumForward', { M, X });
  if (inStride < X) throw new Error(`colSumForward: inStride ${inStride} is below X ${X}`);
  need('colSumForward', 'inp', a.inp, inOffset + (M - 1) * inStride + X);
  need('colSumForward', 'out', a.out, X);
  const label = a.label ?? 'colsum';
  const G = a.singlePass ? 1 : colSumGroups(M);
  const cols = ceilDiv(X, 64);
  if (G === 1) {
    return [makeDispatch(gpu, 'reduce', 'colsum', {
      M, X, IN_STRIDE: inStride, IN_OFFSET: inOffset, ROWS_PER_GROUP: M, ACCUMULATE: a.accumulate ? 1 : 0,
    }, [a.out, a.inp], [cols, 1], { label, bytes: 4 * (M * X + X * (a.accumulate ? 2 : 1)), flops: M * X })];
  }
  if (!a.scratch) throw new Error(`colSumForward: ${M} rows need a scratch tensor of ${G * X} elements`);
  need('colSumForward', 'scratch', a.scratch, G * X);
  return [
    makeDispatch(gpu, 'reduce', 'colsum', {
      M, X, IN_STRIDE: inStride, IN_OFFSET: inOffset, ROWS_PER_GROUP: COLSUM_ROWS_PER_GROUP, ACCUMULATE: 0,
    }, [a.scratch, a.inp], [cols, G], { label: `${label}_partial`, bytes: 4 * (M * X + G * X), flops: M * X }),
    makeDispatch(gpu, 'reduce', 'colsum', {
      M: G, X, ROWS_PER_GROUP: G, ACCUMULATE: a.accumulate ? 1 : 0,
    }, [a.out, a.scratch], [cols, 1], { label, bytes: 4 * (G * X + X * (a.accumulate ? 2 : 1)), flops: G * X }),
  ];
}

/**
 * A grid of `workgroupSize`-invocation workgroups covering n invocations, folded into y when the
 * count exceeds the per-dimension limit. Kernels compute the flat index as
 * gid.x + gid.y · num_workgroups.x · workgroupSize and skip indices ≥ n.
 */
export function grid1d(gpu: Gpu, n: number, workgroupSize = 256): [number, number] {
  return workgroupGrid(gpu, ceilDiv(n, workgroupSize));
}

/**
 * `count` workgroups as an (x, y) grid within the per-dimension limit; kernels number them
 * wg.x + wg.y · num_workgroups.x and skip numbers ≥ count.
 */
export function workgroupGrid(gpu: Gpu, count: number): [number, number] {
  const groups = Math.max(1, count);
  const lim = gpu.limits.maxComputeWorkgroupsPerDimension;
  if (groups <= lim) return [groups, 1];
  const y = ceilDiv(groups, lim);
  return [ceilDiv(groups, y), y];
}

/** Throws when a size is not a positive integer. */
export function checkPositive(where: string, sizes: Record<string, number>): void {
  for (const [k, v] of Object.entries(sizes)) {
    if (!Number.isInteger(v) || v <= 0) throw new Error(`${where}: expected a positive integer for ${k} but received ${v}`);
  }
}

/** Throws when a tensor holds fewer than `elements` f32 values. */
export function need(where: string, name: string, t: GpuTensor, elements: number): void {
  if (numel(t) < elements) {
    throw new Error(`${where}: ${name} (${t.label}) holds ${numel(t)} elements, needs ${elements}`);
  }
}
