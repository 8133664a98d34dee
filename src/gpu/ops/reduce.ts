/**
 * Deterministic column sums (kernels/reduce.wgsl) for bias and weight gradients, and the grid
 * helper of the elementwise kernels.
 *
 *   colSum: out (X) (= or +=) Σ_m inp (M, X)
 *
 * The final sum is `colsum_tree`: workgroups of TREE_COLS columns × 256/TREE_COLS row lanes, each
 * lane adding at most about COLSUM_TREE_ROWS_PER_LANE rows before a tree over the lanes, so many
 * invocations share every column and no invocation walks a long serial chain. Up to
 * COLSUM_SINGLE_PASS_ROWS rows (or any M with `singlePass`) that is the only dispatch; more rows
 * first go through `colsum` row groups of COLSUM_ROWS_PER_GROUP into a (G, X) scratch. Kernels that
 * write their own (G, X) partials (rmsnorm, conv1d backward) finish with one `colSumForward`
 * (singlePass) over those partials; `split` lets that one dispatch finish two gradients that share
 * a partial row (or four, with three splits).
 */
import type { Gpu } from '../device.js';
import { ceilDiv, makeDispatch, type Dispatch } from '../kernels.js';
import { numel, type GpuTensor } from '../tensor.js';

/** Row counts up to this are summed by one dispatch. */
export const COLSUM_SINGLE_PASS_ROWS = 256;
/** Rows per workgroup row in the first of two passes. */
export const COLSUM_ROWS_PER_GROUP = 64;
/** Rows one lane of the tree pass adds serially, at most (for M ≤ 2048). */
export const COLSUM_TREE_ROWS_PER_LANE = 8;

/** Row groups of the first pass (1 when one pass suffices). */
export function colSumGroups(M: number): number {
  return M <= COLSUM_SINGLE_PASS_ROWS ? 1 : ceilDiv(M, COLSUM_ROWS_PER_GROUP);
}

/** Scratch elements `colSumForward` needs for an (M, X) sum: 0 when one pass suffices. */
export function colSumScratchElements(M: number, X: number): number {
  const G = colSumGroups(M);
  return G === 1 ? 0 : G * X;
}

/**
 * Columns per 256-invocation workgroup of `colsum_tree` for M rows: the row lanes (256 / columns)
 * are the power of two from 4 to 256 that leaves each lane about COLSUM_TREE_ROWS_PER_LANE rows.
 * Depends on M alone, so a given shape always sums in the same order.
 */
export function colSumTreeCols(M: number): number {
  let lanes = 4;
  while (lanes < 256 && lanes * COLSUM_TREE_ROWS_PER_LANE < M) lanes *= 2;
  return 256 / lanes;
}

/** Columns at … (the next split's at, or X) − 1 go to out[x − at]. */
export interface ColSumSplit {
  at: number;
  out: GpuTensor;
}

export interface ColSumArgs {
  /** (X) the sums (or (split.at) with `split`); written, or added to with `accumulate`. */
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
  /** One dispatch whatever M (for the partial rows that a kernel wrote itself). */
  singlePass?: boolean;
  /**
   * Columns at … X−1 go to split.out[x − at] (X − at elements) instead of out[x]; with three
   * splits (increasing at), columns at_i … at_{i+1}−1 go to split[i].out (the last up to X−1).
   */
  split?: ColSumSplit | readonly [ColSumSplit, ColSumSplit, ColSumSplit];
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
  const splits: readonly ColSumSplit[] = a.split === undefined ? [] : 'out' in a.split ? [a.split] : a.split;
  let from = 0;
  splits.forEach((sp, i) => {
    if (!Number.isInteger(sp.at) || sp.at <= from || sp.at >= X) {
      throw new Error(`colSumForward: split[${i}].at must be an integer in ${from + 1}…${X - 1}, got ${sp.at}`);
    }
    need('colSumForward', i === 0 ? 'out' : `split[${i - 1}].out`, i === 0 ? a.out : splits[i - 1].out, sp.at - from);
    from = sp.at;
  });
  const last = splits.length ? splits[splits.length - 1].out : a.out;
  need('colSumForward', splits.length ? `split[${splits.length - 1}].out` : 'out', last, X - from);
  const label = a.label ?? 'colsum';
  const G = a.singlePass ? 1 : colSumGroups(M);
  const acc = a.accumulate ? 1 : 0;
  /** The tree pass over R rows of src into out (and the splits' outputs). */
  const tree = (src: GpuTensor, R: number, stride: number, offset: number): Dispatch => {
    const cols = colSumTreeCols(R);
    const constants: Record<string, number> = { M: R, X, IN_STRIDE: stride, IN_OFFSET: offset, TREE_COLS: cols, ACCUMULATE: acc };
    (['SPLIT', 'SPLIT2', 'SPLIT3'] as const).forEach((k, i) => { if (i < splits.length) constants[k] = splits[i].at; });
    const entry = splits.length === 0 ? 'colsum_tree' : splits.length === 1 ? 'colsum_tree_split' : 'colsum_tree_split3';
    return makeDispatch(gpu, 'reduce', entry, constants,
      [a.out, src, ...splits.map((sp) => sp.out)], workgroupGrid(gpu, ceilDiv(X, cols)),
      { label, bytes: 4 * (R * X + X * (1 + acc)), flops: R * X });
  };
  if (G === 1) return [tree(a.inp, M, inStride, inOffset)];
  if (!a.scratch) throw new Error(`colSumForward: ${M} rows need a scratch tensor of ${G * X} elements`);
  need('colSumForward', 'scratch', a.scratch, G * X);
  return [
    makeDispatch(gpu, 'reduce', 'colsum', {
      M, X, IN_STRIDE: inStride, IN_OFFSET: inOffset, ROWS_PER_GROUP: COLSUM_ROWS_PER_GROUP, ACCUMULATE: 0,
    }, [a.scratch, a.inp], [ceilDiv(X, 64), G], { label: `${label}_partial`, bytes: 4 * (M * X + G * X), flops: M * X }),
    tree(a.scratch, G, X, 0),
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
