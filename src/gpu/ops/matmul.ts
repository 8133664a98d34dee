/**
 * Dense layers over rows on the GPU (kernels/matmul.wgsl), the counterparts of
 * `linear_forward` / `linear_backward` in src/reference/linear.ts:
 *
 *   matmulForward         out (M, O) (+)= inp (M, I) · weight (O, I)ᵀ (+ bias (O))
 *   matmulBackwardInput   dinp (M, I) (+)= dout (M, O) · weight (O, I)
 *   matmulBackwardWeight  dweight (O, I) (+)= dout (M, O)ᵀ · inp (M, I)      (split-K over M)
 *   biasBackward          dbias (O) (+)= Σ_m dout[m, :]                       (split over M)
 *   linearBackward        the three backward ops of one layer, in that order
 *
 * Every linear layer of the Vim runs through these: in_proj (D → 2E), x_proj (E → R+2N),
 * dt_proj (R → E), out_proj (E → D), the patch embedding (3P² → D over patches) and the head
 * (D → C on the class-token rows).
 *
 * Strides and offsets are in elements. The input side (inp, dinp) has row stride `ldi` (≥ I,
 * default I) and starts `inpOffset` elements into its tensor; the output side (out, dout) has
 * row stride `ldo` (≥ O, default O) and starts `outOffset` elements in. Offsets are WGSL
 * override constants, so they need not meet the 256-byte binding-offset alignment: the head reads
 * the class-token row of each sample with ldi = L·D, inpOffset = clsPos·D. weight, dweight and
 * dbias are contiguous. Gradient writes through strides touch only the M×I (or M×O) elements
 * addressed, so the other columns/rows of a wider tensor are left as they are.
 *
 * The reductions over M (dweight, dbias) are deterministic: with `splits` > 1 each split writes
 * its own partial result to a scratch tensor and a second pass (`sum_partials`) adds them in
 * split order; with one split the first pass writes the result directly. No atomics.
 * `matmulBackwardWeightPlan` / `biasBackwardPlan` give the default split count and the scratch
 * size; pass `scratch` (shared between layers is fine: dispatches run in order) or let the
 * wrapper allocate one when the dispatch is built (never per step).
 *
 * Tiles: each matmul has two kernels, 64×64 result tiles (4×4 register blocks, 16×16 invocations)
 * and 128×128 result tiles (8×8 register blocks, 16×16 invocations, vec4 workgroup-memory reads).
 * The wrapper picks the 128×128 kernel when the result is large enough to fill a big GPU with
 * it and wide enough not to waste much of a tile (`matmulTile`); `tile` forces one.
 *
 * Costs: each Dispatch carries `flops` and `bytes`, the minimum that dispatch must compute and
 * move (f32 = 4 bytes; an accumulate reads its output once more).
 */
import type { Gpu } from '../device.js';
import { ceilDiv, makeDispatch, type Dispatch } from '../kernels.js';
import { createTensor, numel, type GpuTensor } from '../tensor.js';

const FILE = 'matmul';
/** Result tile of one workgroup (rows × columns) and the reduction step, as in matmul.wgsl. */
export const MATMUL_TILE = { rows: 64, cols: 64, k: 16 } as const;
/** The large tile (matmul.wgsl's *_128 entry points), used for big problems. */
export const MATMUL_TILE_LARGE = { rows: 128, cols: 128, k: 16 } as const;
/** Result tile edge: 64 (the small kernels) or 128 (the large ones). */
export type MatmulTile = 64 | 128;
/** Large tiles only when they make at least about one workgroup per SM of a big GPU (132 on an H200). */
const LARGE_MIN_TILES = 132;
/** Workgroups the split reduction of dweight aims for with large tiles (two per SM of an H200). */
const LARGE_TARGET_WORKGROUPS = 264;
/** Columns per workgroup of bias_backward (64 columns × 4 row lanes). */
const BIAS_COLS = 64;
/** Workgroups the reductions over M aim for (a big GPU holds a few per SM; ≥ 4 × 132 on an H200). */
const TARGET_WORKGROUPS = 512;

interface Strides {
  /** Row stride of inp / dinp in elements (≥ I); default I. */
  ldi?: number;
  /** Row stride of out / dout in elements (≥ O); default O. */
  ldo?: number;
  /** First element of inp / dinp inside its tensor; default 0. */
  inpOffset?: number;
  /** First element of out / dout inside its tensor; default 0. */
  outOffset?: number;
  /** Result tile (64 or 128); default chosen by the problem's size (`matmulTile`). */
  tile?: MatmulTile;
}

export interface MatmulForwardArgs extends Strides {
  out: GpuTensor; // (M, O) at stride ldo
  inp: GpuTensor; // (M, I) at stride ldi
  weight: GpuTensor; // (O, I)
  bias: GpuTensor | null; // (O)
  M: number;
  I: number;
  O: number;
  /** out += inp · weightᵀ (+ bias) instead of out = …; default false. */
  accumulate?: boolean;
}

export interface MatmulBackwardInputArgs extends Strides {
  dinp: GpuTensor; // (M, I) at stride ldi
  dout: GpuTensor; // (M, O) at stride ldo
  weight: GpuTensor; // (O, I)
  M: number;
  I: number;
  O: number;
  /** dinp += … instead of dinp = …; default false. */
  accumulate?: boolean;
}

export interface MatmulBackwardWeightArgs extends Strides {
  dweight: GpuTensor; // (O, I)
  dout: GpuTensor; // (M, O) at stride ldo
  inp: GpuTensor; // (M, I) at stride ldi
  M: number;
  I: number;
  O: number;
  /** dweight += … instead of dweight = …; default false. */
  accumulate?: boolean;
  /** Parts the reduction over M is split into; default from matmulBackwardWeightPlan. */
  splits?: number;
  /** Scratch of ≥ plan.scratchElements f32 when splits > 1; allocated here once if omitted. */
  scratch?: GpuTensor;
}

export interface BiasBackwardArgs {
  dbias: GpuTensor; // (O)
  dout: GpuTensor; // (M, O) at stride ldo
  M: number;
  O: number;
  ldo?: number;
  outOffset?: number;
  accumulate?: boolean;
  splits?: number;
  scratch?: GpuTensor;
}

export interface LinearBackwardArgs extends Strides {
  dinp: GpuTensor | null; // (M, I) at stride ldi; null: not needed (e.g. the first layer)
  dweight: GpuTensor; // (O, I)
  dbias: GpuTensor | null; // (O); null: the layer has no bias
  dout: GpuTensor; // (M, O) at stride ldo
  inp: GpuTensor; // (M, I) at stride ldi
  weight: GpuTensor; // (O, I)
  M: number;
  I: number;
  O: number;
  /** Accumulate into each gradient (as the reference does) or overwrite it; default false. */
  accumulate?: boolean | { dinp?: boolean; dweight?: boolean; dbias?: boolean };
  /** Scratch for the split reductions, ≥ linearBackwardScratchElements(M, I, O, …). */
  scratch?: GpuTensor;
}

/** How a reduction over M is split: `splits` parts of `chunk` rows; scratch for the partials. */
export interface SplitPlan {
  splits: number;
  chunk: number;
  /** f32 elements of scratch the partials need (0 when splits = 1). */
  scratchElements: number;
}

// ---- plans ----------------------------------------------------------------------------------------

/**
 * The result tile for a matmul whose result is rows × cols (forward: M × O, input gradient:
 * M × I), or, with `reduction` given, for the weight gradient (O × I, reduced over M rows, split).
 * 128×128 tiles do 4× the work per workgroup with half the workgroup-memory traffic per flop;
 * they pay off when there are enough of them to fill the GPU and the columns (and rows) are at
 * least 96, so a ragged edge tile wastes at most about a third.
 */
export function matmulTile(rows: number, cols: number, reduction?: number): MatmulTile {
  if (rows < 96 || cols < 96) return 64;
  if (reduction !== undefined) return reduction >= 512 ? 128 : 64; // splits over M fill the GPU
  return ceilDiv(rows, 128) * ceilDiv(cols, 128) >= LARGE_MIN_TILES ? 128 : 64;
}

function planSplits(M: number, perSplitElements: number, splits: number, rowAlign: number): SplitPlan {
  const chunk = Math.ceil(Math.ceil(M / splits) / rowAlign) * rowAlign;
  const s = Math.ceil(M / chunk); // rounding the chunk up can leave fewer splits than asked
  return { splits: s, chunk, scratchElements: s > 1 ? s * perSplitElements : 0 };
}

/**
 * The split of dweight's reduction over M: enough workgroups to fill a big GPU
 * (⌈O/64⌉·⌈I/64⌉ tiles × splits ≈ 512), but at least 256 rows per split so the partials
 * (splits·O·I written and read back) stay small next to the M·(O+I) inputs.
 */
export function matmulBackwardWeightPlan(M: number, I: number, O: number, splits?: number, tile?: MatmulTile): SplitPlan {
  checkDims({ M, I, O });
  const edge = tile ?? matmulTile(O, I, M);
  checkTile(edge);
  const tiles = ceilDiv(O, edge) * ceilDiv(I, edge);
  const target = edge === 128 ? LARGE_TARGET_WORKGROUPS : TARGET_WORKGROUPS;
  const s = splits ?? Math.max(1, Math.min(ceilDiv(target, tiles), Math.floor(M / 256)));
  checkPositiveInt('splits', s);
  return planSplits(M, O * I, Math.min(s, M), MATMUL_TILE.k);
}

/** The split of dbias's column sums over M (at least 64 rows per split). */
export function biasBackwardPlan(M: number, O: number, splits?: number): SplitPlan {
  checkDims({ M, O });
  const blocks = ceilDiv(O, BIAS_COLS);
  const s = splits ?? Math.max(1, Math.min(ceilDiv(TARGET_WORKGROUPS, blocks), Math.floor(M / 64)));
  checkPositiveInt('splits', s);
  return planSplits(M, O, Math.min(s, M), 4);
}

/** Scratch elements for linearBackward with default splits (dweight's and dbias's partials reuse it). */
export function linearBackwardScratchElements(M: number, I: number, O: number, hasBias: boolean, tile?: MatmulTile): number {
  const w = matmulBackwardWeightPlan(M, I, O, undefined, tile).scratchElements;
  return hasBias ? Math.max(w, biasBackwardPlan(M, O).scratchElements) : w;
}

// ---- dispatches -----------------------------------------------------------------------------------

/** out (M, O) (+)= inp (M, I) · weight (O, I)ᵀ (+ bias). One dispatch, grid (⌈O/T⌉, ⌈M/T⌉), T the tile. */
export function matmulForward(gpu: Gpu, a: MatmulForwardArgs): Dispatch {
  const { M, I, O } = a;
  const s = strides(a, M, I, O);
  checkTensor('out', a.out, s.outOffset, M, s.ldo, O);
  checkTensor('inp', a.inp, s.inpOffset, M, s.ldi, I);
  checkTensor('weight', a.weight, 0, O, I, I);
  if (a.bias) checkTensor('bias', a.bias, 0, 1, O, O);
  const acc = a.accumulate ?? false;
  const tile = a.tile ?? matmulTile(M, O);
  checkTile(tile);
  return makeDispatch(
    gpu, FILE, tile === 128 ? 'matmul_forward_128' : 'matmul_forward',
    { M, I, O, LDI: s.ldi, LDO: s.ldo, INP_OFF: s.inpOffset, OUT_OFF: s.outOffset, HAS_BIAS: a.bias ? 1 : 0, ACCUMULATE: acc ? 1 : 0 },
    // Without a bias the binding still needs a read-only tensor; the kernel never reads it.
    [a.out, a.inp, a.weight, a.bias ?? a.weight],
    [ceilDiv(O, tile), ceilDiv(M, tile)],
    {
      label: 'matmul_forward',
      flops: 2 * M * I * O + (a.bias ? M * O : 0) + (acc ? M * O : 0),
      bytes: 4 * (M * I + O * I + (a.bias ? O : 0) + M * O * (acc ? 2 : 1)),
    },
  );
}

/** dinp (M, I) (+)= dout (M, O) · weight (O, I). One dispatch, grid (⌈I/T⌉, ⌈M/T⌉), T the tile. */
export function matmulBackwardInput(gpu: Gpu, a: MatmulBackwardInputArgs): Dispatch {
  const { M, I, O } = a;
  const s = strides(a, M, I, O);
  checkTensor('dinp', a.dinp, s.inpOffset, M, s.ldi, I);
  checkTensor('dout', a.dout, s.outOffset, M, s.ldo, O);
  checkTensor('weight', a.weight, 0, O, I, I);
  const acc = a.accumulate ?? false;
  const tile = a.tile ?? matmulTile(M, I);
  checkTile(tile);
  return makeDispatch(
    gpu, FILE, tile === 128 ? 'matmul_backward_input_128' : 'matmul_backward_input',
    { M, I, O, LDI: s.ldi, LDO: s.ldo, INP_OFF: s.inpOffset, OUT_OFF: s.outOffset, ACCUMULATE: acc ? 1 : 0 },
    [a.dinp, a.dout, a.weight],
    [ceilDiv(I, tile), ceilDiv(M, tile)],
    {
      label: 'matmul_backward_input',
      flops: 2 * M * I * O + (acc ? M * I : 0),
      bytes: 4 * (M * O + O * I + M * I * (acc ? 2 : 1)),
    },
  );
}

/**
 * dweight (O, I) (+)= dout (M, O)ᵀ · inp (M, I). With one split: one dispatch, grid
 * (⌈I/T⌉, ⌈O/T⌉), T the tile. With S splits: partials (S, O, I) into scratch, grid
 * (⌈I/T⌉, ⌈O/T⌉, S), then sum_partials over O·I elements.
 */
export function matmulBackwardWeight(gpu: Gpu, a: MatmulBackwardWeightArgs): Dispatch[] {
  const { M, I, O } = a;
  const s = strides(a, M, I, O);
  checkTensor('dweight', a.dweight, 0, O, I, I);
  checkTensor('dout', a.dout, s.outOffset, M, s.ldo, O);
  checkTensor('inp', a.inp, s.inpOffset, M, s.ldi, I);
  const tile = a.tile ?? matmulTile(O, I, M);
  checkTile(tile);
  const plan = matmulBackwardWeightPlan(M, I, O, a.splits, tile);
  const acc = a.accumulate ?? false;
  const entry = tile === 128 ? 'matmul_backward_weight_128' : 'matmul_backward_weight';
  const label = { label: 'matmul_backward_weight' };
  const grid: [number, number, number] = [ceilDiv(I, tile), ceilDiv(O, tile), plan.splits];
  const constants = {
    M, I, O, LDI: s.ldi, LDO: s.ldo, INP_OFF: s.inpOffset, OUT_OFF: s.outOffset,
    SPLITS: plan.splits, CHUNK: plan.chunk,
  };
  const inputBytes = 4 * (M * O + M * I);
  if (plan.splits === 1) {
    return [makeDispatch(gpu, FILE, entry, { ...constants, ACCUMULATE: acc ? 1 : 0 },
      [a.dweight, a.dout, a.inp], grid,
      { ...label, flops: 2 * M * I * O + (acc ? O * I : 0), bytes: inputBytes + 4 * O * I * (acc ? 2 : 1) })];
  }
  const scratch = scratchFor(gpu, 'matmul_backward_weight', a.scratch, plan.scratchElements);
  return [
    makeDispatch(gpu, FILE, entry, { ...constants, ACCUMULATE: 0 },
      [scratch, a.dout, a.inp], grid,
      { ...label, flops: 2 * M * I * O, bytes: inputBytes + 4 * plan.scratchElements }),
    sumPartials(gpu, 'matmul_backward_weight_sum', a.dweight, scratch, O * I, plan.splits, acc),
  ];
}

/**
 * dbias (O) (+)= Σ_m dout[m, :]. With one split: one dispatch, grid (⌈O/64⌉, 1). With S splits:
 * partials (S, O) into scratch, grid (⌈O/64⌉, S), then sum_partials over O elements.
 */
export function biasBackward(gpu: Gpu, a: BiasBackwardArgs): Dispatch[] {
  const { M, O } = a;
  const ldo = a.ldo ?? O;
  const outOffset = a.outOffset ?? 0;
  checkStride('ldo', ldo, O);
  checkOffset('outOffset', outOffset);
  checkTensor('dbias', a.dbias, 0, 1, O, O);
  checkTensor('dout', a.dout, outOffset, M, ldo, O);
  const plan = biasBackwardPlan(M, O, a.splits);
  const acc = a.accumulate ?? false;
  const grid: [number, number] = [ceilDiv(O, BIAS_COLS), plan.splits];
  const constants = { M, O, LDO: ldo, OUT_OFF: outOffset, CHUNK: plan.chunk };
  if (plan.splits === 1) {
    return [makeDispatch(gpu, FILE, 'bias_backward', { ...constants, ACCUMULATE: acc ? 1 : 0 },
      [a.dbias, a.dout], grid,
      { flops: M * O + (acc ? O : 0), bytes: 4 * (M * O + O * (acc ? 2 : 1)) })];
  }
  const scratch = scratchFor(gpu, 'bias_backward', a.scratch, plan.scratchElements);
  return [
    makeDispatch(gpu, FILE, 'bias_backward', { ...constants, ACCUMULATE: 0 },
      [scratch, a.dout], grid,
      { flops: M * O, bytes: 4 * (M * O + plan.scratchElements) }),
    sumPartials(gpu, 'bias_backward_sum', a.dbias, scratch, O, plan.splits, acc),
  ];
}

/**
 * The whole backward of a linear layer, as `linear_backward`: dweight, then dbias (when given),
 * then dinp (when given). One scratch serves both split reductions (they run one after another).
 */
export function linearBackward(gpu: Gpu, a: LinearBackwardArgs): Dispatch[] {
  const acc = typeof a.accumulate === 'object' ? a.accumulate : { dinp: a.accumulate, dweight: a.accumulate, dbias: a.accumulate };
  const strideArgs: Strides = { ldi: a.ldi, ldo: a.ldo, inpOffset: a.inpOffset, outOffset: a.outOffset, tile: a.tile };
  const need = linearBackwardScratchElements(a.M, a.I, a.O, a.dbias !== null, a.tile);
  const scratch = need > 0 ? scratchFor(gpu, 'linear_backward', a.scratch, need) : undefined;
  const list = matmulBackwardWeight(gpu, {
    ...strideArgs, dweight: a.dweight, dout: a.dout, inp: a.inp, M: a.M, I: a.I, O: a.O, accumulate: acc.dweight, scratch,
  });
  if (a.dbias) {
    list.push(...biasBackward(gpu, {
      dbias: a.dbias, dout: a.dout, M: a.M, O: a.O, ldo: a.ldo, outOffset: a.outOffset, accumulate: acc.dbias, scratch,
    }));
  }
  if (a.dinp) {
    list.push(matmulBackwardInput(gpu, {
      ...strideArgs, dinp: a.dinp, dout: a.dout, weight: a.weight, M: a.M, I: a.I, O: a.O, accumulate: acc.dinp,
    }));
  }
  return list;
}

// ---- helpers --------------------------------------------------------------------------------------

function sumPartials(gpu: Gpu, label: string, sums: GpuTensor, partials: GpuTensor, n: number, splits: number, acc: boolean): Dispatch {
  return makeDispatch(gpu, FILE, 'sum_partials', { SUM_N: n, SPLITS: splits, ACCUMULATE: acc ? 1 : 0 },
    [sums, partials], [ceilDiv(n, 256)],
    { label, flops: (splits - 1) * n + (acc ? n : 0), bytes: 4 * (splits * n + n * (acc ? 2 : 1)) });
}

function scratchFor(gpu: Gpu, op: string, given: GpuTensor | undefined, elements: number): GpuTensor {
  if (!given) return createTensor(gpu, elements, `${op}.scratch`);
  if (numel(given) < elements) {
    throw new Error(`${op}: scratch ${given.label} holds ${numel(given)} f32, the split reduction needs ${elements}`);
  }
  return given;
}

function strides(a: Strides, M: number, I: number, O: number): Required<Omit<Strides, 'tile'>> {
  checkDims({ M, I, O });
  const s = { ldi: a.ldi ?? I, ldo: a.ldo ?? O, inpOffset: a.inpOffset ?? 0, outOffset: a.outOffset ?? 0 };
  checkStride('ldi', s.ldi, I);
  checkStride('ldo', s.ldo, O);
  checkOffset('inpOffset', s.inpOffset);
  checkOffset('outOffset', s.outOffset);
  return s;
}

function checkPositiveInt(name: string, v: number): void {
  if (!Number.isInteger(v) || v < 1 || v > 0xffffffff) throw new Error(`matmul: ${name} must be a positive integer, got ${v}`);
}

function checkTile(t: number): void {
  if (t !== 64 && t !== 128) throw new Error(`matmul: tile must be 64 or 128, got ${t}`);
}

function checkDims(d: Record<string, number>): void {
  for (const [k, v] of Object.entries(d)) checkPositiveInt(k, v);
}

function checkStride(name: string, v: number, min: number): void {
  checkPositiveInt(name, v);
  if (v < min) throw new Error(`matmul: ${name} = ${v} is smaller than the row length ${min}`);
}

function checkOffset(name: string, v: number): void {
  if (!Number.isInteger(v) || v < 0) throw new Error(`matmul: ${name} must be a non-negative integer, got ${v}`);
}

/** A (rows, cols) matrix at `offset` with row stride `ld` must lie inside the tensor. */
function checkTensor(name: string, t: GpuTensor, offset: number, rows: number, ld: number, cols: number): void {
  const need = offset + (rows - 1) * ld + cols;
  if (need > 0xffffffff) throw new Error(`matmul: ${name} spans ${need} elements, beyond 32-bit indexing`);
  if (numel(t) < need) {
    throw new Error(`matmul: ${name} (${t.label}) holds ${numel(t)} f32 but ${rows}×${cols} at stride ${ld} from element ${offset} needs ${need}`);
  }
}
