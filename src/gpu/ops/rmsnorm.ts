/**
 * The residual add fused with RMSNorm (kernels/rmsnorm.wgsl).
 *
 *   residualRmsnormForward:  r_out, out (rows, D), rstd (rows) ← r_in|null, h (BL, D), weight (D)
 *   residualRmsnormBackward: dr (BL, D), dweight (D) ← dout (rows, D), dr_next|null (BL, D),
 *                            r (rows, D), rstd (rows), weight (D)
 *
 * By default rows = BL and every tensor is (BL, D). With `select` the op runs on rows
 * offset + k·stride (k < count) of the (BL, D) tensors r_in, h, dr_next and dr, while r_out, out,
 * rstd, dout and r are compact (count, D): the final norm at the class tokens is
 * select = {count: B, stride: L, offset: clsPos}, giving out (B, D) for the head. Its backward
 * writes dr only at those rows; the other rows of dr keep what they held.
 */
import type { Gpu } from '../device.js';
import { ceilDiv, makeDispatch, type Dispatch } from '../kernels.js';
import type { GpuTensor } from '../tensor.js';
import { weightSumsRegion, type WeightSums } from './matmul.js';
import { checkPositive, colSumForward, need, workgroupGrid } from './reduce.js';

/** Rows of a strided row selection: row offset + k·stride of a (BL, D) tensor, k < count. */
export interface RowSelect {
  count: number;
  stride: number;
  offset: number;
}

/** Rows a workgroup of the rows forms (rmsnorm.wgsl's FR_ROWS). */
const ROWS_FORM_ROWS = 16;

export interface ResidualRmsnormForwardArgs {
  rOut: GpuTensor; // (rows, D) r_in + h, kept for backward and the next residual add
  out: GpuTensor; // (rows, D)
  rstd: GpuTensor; // (rows)
  /** (BL, D); null for the first block, where the residual stream starts as h. */
  rIn: GpuTensor | null;
  h: GpuTensor; // (BL, D)
  weight: GpuTensor; // (D)
  BL: number;
  D: number;
  eps: number;
  select?: RowSelect;
}

function rowsOf(where: string, BL: number, sel?: RowSelect): Required<RowSelect> {
  const s = sel ?? { count: BL, stride: 1, offset: 0 };
  checkPositive(where, { count: s.count, stride: s.stride });
  if (!Number.isInteger(s.offset) || s.offset < 0 || s.offset + (s.count - 1) * s.stride >= BL) {
    throw new Error(`${where}: row selection ${JSON.stringify(s)} reaches beyond ${BL} rows`);
  }
  return s;
}

/** r_out = r_in + h; rstd = 1/√(mean(r_out²) + eps); out = r_out · rstd · weight. One dispatch. */
export function residualRmsnormForward(gpu: Gpu, a: ResidualRmsnormForwardArgs): Dispatch {
  const { BL, D } = a;
  checkPositive('residualRmsnormForward', { BL, D });
  if (!(a.eps > 0)) throw new Error(`residualRmsnormForward: eps must be positive, got ${a.eps}`);
  const sel = rowsOf('residualRmsnormForward', BL, a.select);
  const rows = sel.count;
  const w = 'residualRmsnormForward';
  need(w, 'rOut', a.rOut, rows * D);
  need(w, 'out', a.out, rows * D);
  need(w, 'rstd', a.rstd, rows);
  need(w, 'h', a.h, BL * D);
  need(w, 'weight', a.weight, D);
  if (a.rIn) need(w, 'rIn', a.rIn, BL * D);
  const n = rows * D;
  // 16 rows a workgroup with vec4 columns where they fit, else a row a workgroup
  const rowsForm = rowsFormFits(D);
  return makeDispatch(gpu, 'rmsnorm', rowsForm ? 'residual_rmsnorm_forward_rows' : 'residual_rmsnorm_forward', {
    D, ROWS: rows, ROW_STRIDE: sel.stride, ROW_OFFSET: sel.offset, EPS: a.eps, HAS_R_IN: a.rIn ? 1 : 0,
  }, [a.rOut, a.out, a.rstd, a.h, a.weight, a.rIn ?? a.h], workgroupGrid(gpu, rowsForm ? ceilDiv(rows, ROWS_FORM_ROWS) : rows), {
    label: 'residual_rmsnorm_forward', bytes: 4 * (n * (a.rIn ? 4 : 3) + rows + D), flops: 5 * n,
  });
}

/**
 * Whether rows of D take the 16-rows-a-workgroup forms (residual_rmsnorm_forward_rows, _backward_rows):
 * D a multiple of 4, at most 256 (16 invocations a row, 4 vec4 each).
 */
function rowsFormFits(D: number): boolean {
  return D % 4 === 0 && D <= 256;
}

/** Rows the backward kernel has in flight per workgroup (row slots of 64 invocations). */
const RMSNORM_BACKWARD_SLOTS = 4;

/**
 * Rows per workgroup of the backward pass: a multiple of its 4 row slots giving about 1024
 * workgroups (vim-tiny, 16,640 rows: 16 rows, 1040 workgroups; the final norm's 256 rows: 4, 64).
 */
export function rmsnormBackwardRowsPerGroup(rows: number): number {
  return RMSNORM_BACKWARD_SLOTS * Math.max(1, Math.round(rows / (RMSNORM_BACKWARD_SLOTS * 1024)));
}

/** Scratch elements residualRmsnormBackward needs for its dweight partials (G, D). */
export function rmsnormBackwardScratchElements(rows: number, D: number): number {
  return ceilDiv(rows, rmsnormBackwardRowsPerGroup(rows)) * D;
}

/** Row slots that fit the slots' dweight sums (SLOTS · D floats) and the tree (256) in workgroup memory. */
function backwardSlots(gpu: Gpu, D: number): number {
  const bytes = gpu.limits.maxComputeWorkgroupStorageSize;
  for (let slots = RMSNORM_BACKWARD_SLOTS; slots > 1; slots /= 2) if (4 * (slots * D + 256) <= bytes) return slots;
  if (4 * (D + 256) > bytes) {
    throw new Error(`residualRmsnormBackward: D = ${D} needs ${4 * (D + 256)} bytes of workgroup memory, the device has ${bytes}`);
  }
  return 1;
}

export interface ResidualRmsnormBackwardArgs {
  dr: GpuTensor; // (BL, D) must not alias drNext
  dweight: GpuTensor; // (D)
  dout: GpuTensor; // (rows, D)
  /** (BL, D) the gradient reaching r from later blocks; null for the final norm. */
  drNext: GpuTensor | null;
  r: GpuTensor; // (rows, D) the forward's r_out
  rstd: GpuTensor; // (rows)
  weight: GpuTensor; // (D)
  BL: number;
  D: number;
  /** (rmsnormBackwardScratchElements(rows, D)) dweight partials (not used with `sums`). */
  scratch: GpuTensor;
  /**
   * The dweight partials to a region of `sums.partials` of their own, their sum recorded there
   * for weightSumsDispatch (with a block's weight gradients' sums) instead of a dispatch here.
   */
  sums?: WeightSums;
  select?: RowSelect;
  /** dr += instead of dr =. */
  accumulate?: boolean;
  /** dweight += instead of dweight =. */
  accumulateWeight?: boolean;
}

/**
 * dr (= or +=) dr_next + ∂out/∂r · dout; dweight (= or +=) Σ_rows dout · r · rstd. Two dispatches:
 * the rows (with per-workgroup dweight partials), then one tree column sum of the partials; with
 * `sums`, the first alone (weightSumsDispatch adds the partials, in another order).
 */
export function residualRmsnormBackward(gpu: Gpu, a: ResidualRmsnormBackwardArgs): Dispatch[] {
  const { BL, D } = a;
  const w = 'residualRmsnormBackward';
  checkPositive(w, { BL, D });
  const sel = rowsOf(w, BL, a.select);
  const rows = sel.count;
  need(w, 'dr', a.dr, BL * D);
  need(w, 'dweight', a.dweight, D);
  need(w, 'dout', a.dout, rows * D);
  need(w, 'r', a.r, rows * D);
  need(w, 'rstd', a.rstd, rows);
  need(w, 'weight', a.weight, D);
  if (a.drNext) need(w, 'drNext', a.drNext, BL * D);
  const rpg = rmsnormBackwardRowsPerGroup(rows);
  const G = ceilDiv(rows, rpg);
  const partials = a.sums
    ? weightSumsRegion(a.sums, w, G, D, [{ dst: a.dweight, at: 0, n: D }], a.accumulateWeight ?? false)
    : a.scratch;
  need(w, 'scratch', partials, G * D);
  const n = rows * D;
  const acc = a.accumulate ? 1 : 0;
  // 16 rows in flight in vec4 columns where they fit (as the forward), else the row slots
  const rowsForm = rowsFormFits(D);
  const main = makeDispatch(gpu, 'rmsnorm', rowsForm ? 'residual_rmsnorm_backward_rows' : 'residual_rmsnorm_backward', {
    D, ROWS: rows, ROW_STRIDE: sel.stride, ROW_OFFSET: sel.offset, HAS_DR_NEXT: a.drNext ? 1 : 0,
    ROWS_PER_GROUP: rpg, ACCUMULATE: acc, ...(rowsForm ? {} : { SLOTS: backwardSlots(gpu, D) }),
  }, [a.dr, partials, a.dout, a.r, a.rstd, a.weight, a.drNext ?? a.dout], workgroupGrid(gpu, G), {
    label: 'residual_rmsnorm_backward', bytes: 4 * (n * (3 + acc + (a.drNext ? 1 : 0)) + rows + D + G * D), flops: 9 * n,
  });
  if (a.sums) return [main];
  return [
    main,
    ...colSumForward(gpu, { out: a.dweight, inp: partials, M: G, X: D, accumulate: a.accumulateWeight, singlePass: true, label: 'rmsnorm_dweight' }),
  ];
}
