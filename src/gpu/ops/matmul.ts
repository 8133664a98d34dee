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
 * its own partial result to a scratch tensor and a second pass adds them in a fixed order (split
 * order, or for dweight, with `sum: 'lanes'`, eight interleaved lanes then the lanes in order); with
 * one split the first pass writes the result directly. No atomics.
 * `matmulBackwardWeightPlan` / `biasBackwardPlan` give the default split count and the scratch
 * size; pass `scratch` (shared between layers is fine: dispatches run in order) or let the
 * wrapper allocate one when the dispatch is built (never per step).
 *
 * Kernels: each matmul has three. 'tile64' (64×64 result tiles, 4×4 register blocks, 16×16
 * invocations), 'tile128' (128×128 tiles, 8×8 blocks, vec4 workgroup-memory reads), and 'tiled', a
 * parametrised kernel whose result tile, register block, reduction step, vec4 global loads and
 * double-buffered workgroup tiles are chosen per problem (`TiledVariant`; written as strings like
 * "128x64/8x8/k16/v4/db"). The input gradient has a fourth, 'narrow', for results of at most
 * NARROW_MAX_I columns (dt_proj's, I = R): the reduction over O split across the 256 invocations
 * of a workgroup of 16 rows, so that the narrow result still has hundreds of thousands of
 * invocations; and a fifth, 'rows' (kernels/matmul-rows.wgsl, the default for those results where
 * the adapter has subgroups of one size): each row's reduction taken by the lanes of one subgroup,
 * four rows at a time, so that many of dout's vec4 loads are in flight. The forward and the input
 * gradient of a layer of at most SKINNY_MAX_O outputs (x_proj's) have 'skinny': blocks of 64 rows
 * of inp (or dout) and chunks of weight staged in workgroup memory by coalesced loads, a few
 * accumulators of (rows, columns) an invocation (a candidate for the in-model sweep, not a default).
 * Which one runs by default is decided in one place, `matmulDefault`
 * (the `MATMUL_TUNED` table, then the size rule `matmulTile`); `variant` (or the older `tile`)
 * forces one. scripts/bench/matmul.mjs times every variant of every matmul of a training step.
 *
 * Costs: each Dispatch carries `flops` and `bytes`, the minimum that dispatch must compute and
 * move (f32 = 4 bytes; an accumulate reads its output once more).
 */
import { readFileSync } from 'node:fs';
import { VimError } from '../../errors.js';
import { fixedSubgroupSize, type Gpu } from '../device.js';
import { ceilDiv, makeDispatch, type Dispatch } from '../kernels.js';
import { workgroupGrid } from './reduce.js';
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
/** Invocations the split reduction of dweight aims for with the parametrised kernel (2 × 256 per SM of an H200). */
const TILED_TARGET_INVOCATIONS = 264 * 256;
/** The parametrised kernel's limits: invocations per workgroup, vec4 items each loads per step, the step. */
const TILED_MAX_INVOCATIONS = 256;
const TILED_MAX_ITEMS = 8;
const TILED_MAX_K = 64;
/** The narrow kernel (matmul_backward_input_narrow): the widest result it computes, in columns. */
export const NARROW_MAX_I = 16;
/** The narrow kernel's rows per workgroup and invocations per workgroup (matmul.wgsl's NROWS, NT). */
const NARROW_ROWS = 16;
const NARROW_INVOCATIONS = 256;
/** Its workgroup memory: ⌈I/4⌉ vec4s for each of 256 rows o of weight (matmul.wgsl's Ws). */
function narrowWorkgroupBytes(I: number): number {
  return 16 * Math.ceil(I / 4) * 256;
}
/**
 * The rows kernel (matmul_backward_input_rows): subgroups a workgroup (NSG) and batches of 4 rows a
 * subgroup takes (RIT); rows a workgroup 4 · NSG · RIT. The defaults, or $VIM_MATMUL_ROWS as
 * RITxNSG (e.g. "2x8"), for measurements.
 */
export interface RowsShape { rit: number; nsg: number }
const ROWS_DEFAULT: RowsShape = { rit: 2, nsg: 8 };
export function rowsShape(): RowsShape {
  const v = process.env.VIM_MATMUL_ROWS;
  if (v === undefined || v === '') return ROWS_DEFAULT;
  const m = /^(\d+)x(\d+)$/.exec(v.trim());
  const shape = m ? { rit: +m[1], nsg: +m[2] } : undefined;
  if (!shape || shape.rit < 1 || shape.nsg < 1) {
    throw new VimError(`VIM_MATMUL_ROWS must be RITxNSG (batches of 4 rows a subgroup ≥ 1, subgroups a workgroup ≥ 1), e.g. "2x8"; it is '${v}'`);
  }
  return shape;
}

/** The skinny kernels: the most outputs O of the layer they run (the forward's result columns, the input gradient's reduction). */
export const SKINNY_MAX_O = 64;
/**
 * The result tile (rows × columns a workgroup), the invocations and the workgroup memory of each
 * (at most 32 KiB for O ≤ SKINNY_MAX_O): the forward's SKR = 64 rows and all O columns, 256
 * invocations, chunks of 64 reduction indices of inp (64 rows × 16 vec4s, Xs) and of weight
 * (4⌈O/4⌉ rows × 16 vec4s, Wk); the input gradient's SBR = 64 rows × 64 columns, 128 invocations,
 * the block's rows of dout (64 × ⌈O/4⌉ vec4s, Ds) and a 4⌈O/4⌉ × 16-vec4 block of weight (Wb).
 */
function skinnyShape(op: MatmulOp, O: number): { rows: number; cols: number; invocations: number; bytes: number } {
  const quads = Math.ceil(O / 4);
  if (op === 'forward') return { rows: 64, cols: SKINNY_MAX_O, invocations: 256, bytes: 16 * 64 * 16 + 16 * 4 * quads * 16 };
  return { rows: 64, cols: 64, invocations: 128, bytes: 16 * 64 * quads + 16 * 4 * quads * 16 };
}

/** Which matmul of a linear layer. */
export type MatmulOp = 'forward' | 'backward_input' | 'backward_weight';

/**
 * The parametrised kernel (matmul.wgsl's *_g entry points): a `rows` × `cols` result tile per
 * workgroup of (rows/blockRows) × (cols/blockCols) invocations, each a blockRows × blockCols
 * register block; the reduction in steps of `k`. `vec4`: vec4 global loads of each operand whose
 * contiguous dimension, row stride and offset are multiples of 4 (scalar loads for the others).
 * `doubleBuffer`: two stages of workgroup tiles, one barrier per step. Results are always stored
 * as vec4s, so the result's columns, row stride and offset must be multiples of 4.
 */
export interface TiledVariant {
  kernel: 'tiled';
  rows: number;
  cols: number;
  blockRows: 4 | 8;
  blockCols: 4 | 8;
  k: number;
  vec4: boolean;
  doubleBuffer: boolean;
}

/**
 * The input gradient's kernel for results of at most NARROW_MAX_I columns (matmul.wgsl's
 * matmul_backward_input_narrow): workgroups of 32 slices of the reduction over O × 8 row groups of
 * 2 rows, weight staged in workgroup memory, the slices' sums added in a fixed order there.
 */
export interface NarrowVariant {
  kernel: 'narrow';
}

/**
 * The input gradient's other kernel for results of at most NARROW_MAX_I columns
 * (kernels/matmul-rows.wgsl): each row's reduction over O taken by the lanes of one subgroup, 4
 * rows at a time as 4×4 matrix products (dout read as vec4s, weight staged once a workgroup), the
 * lanes' sums added by halving shuffles. Needs subgroups of one fixed size.
 */
export interface RowsVariant {
  kernel: 'rows';
}

/**
 * The kernels of a layer with at most SKINNY_MAX_O outputs (x_proj's R + 2N), forward and input
 * gradient (matmul.wgsl's matmul_forward_skinny and matmul_backward_input_skinny): the forward
 * stages 64 rows of inp and O rows of weight in chunks of 64 reduction indices, each invocation 4
 * rows × ⌈O/4⌉ outputs of a quarter of each chunk (the quarters added at the end); the input
 * gradient stages 64 rows of dout and an O × 64 block of weight once, each invocation one vec4 of
 * columns of 8 rows. Both load and store the (M, I) operand a row's consecutive vec4s at a time.
 */
export interface SkinnyVariant {
  kernel: 'skinny';
}

/** A matmul kernel: the fixed 64×64 or 128×128 one, the parametrised one, the narrow, rows or skinny one. */
export type MatmulVariant = { kernel: 'tile64' } | { kernel: 'tile128' } | NarrowVariant | RowsVariant | SkinnyVariant | TiledVariant;

/**
 * How the weight gradient's split partials are added up (all deterministic, in a fixed order):
 * 'serial', one invocation per element adding the splits in order (sum_partials); 'vec4', the same
 * with four elements per invocation, so the same bits (sum_partials4; O·I a multiple of 4);
 * 'lanes', eight invocations per element, each adding every eighth split, then the eight lane sums
 * in order (sum_partials_lanes): more parallel for small results split many ways.
 */
export type MatmulSum = 'serial' | 'vec4' | 'lanes';

/** What runs a matmul problem by default (matmulDefault) or when asked for (the ops' options). */
export interface MatmulChoice {
  variant: MatmulVariant;
  /** Weight gradient: rows of M per split (the count follows from M); default: the plan's rule. */
  splitRows?: number;
  /** Weight gradient: how the split partials are added up; default 'serial'. */
  sum?: MatmulSum;
}

/** An entry of MATMUL_TUNED: a variant's name, or a name with the weight gradient's split and sum. */
export type MatmulTunedEntry = string | { variant: string; splitRows?: number; sum?: MatmulSum };

/**
 * Measured choices, per problem: `${op}:${I}x${O}` (the layer's input and output features) → a
 * variant name (see parseMatmulVariant), or for the weight gradient
 * `{ variant, splitRows, sum }`. The one table to edit after measuring with
 * scripts/bench/matmul-sweep.mjs (inside the model) or scripts/bench/matmul.mjs (alone); both print
 * entries in this form. A problem not
 * listed, or whose entry cannot run a call (alignment, the adapter's limits), gets the size rule
 * of matmulTile. vim-tiny's problems: in_proj 192x768, x_proj 384x44, dt_proj 12x384 (strided
 * input), out_proj 384x192, patch embedding 48x192, head 192x10.
 */
// H200 (Dawn, Vulkan), vim-tiny at batch 256. First from scripts/bench/matmul.mjs
// (docs/bench/h200-matmul-harness-b256-2.txt; a training step 99.96 → 88.52 ms); then the entries
// marked "then" from three rounds of candidates timed inside the whole model with exact timestamps
// (scripts/bench/matmul-sweep.mjs, docs/bench/h200-matmul-inmodel-round*.txt; a step 54.40 → 51.1–51.4
// ms, docs/performance.md change 21; the weight gradients of in_proj, out_proj and dt_proj in round
// 3, 51.36 → 49.30 ms, change 22).
export const MATMUL_TUNED: Readonly<Record<string, MatmulTunedEntry>> = {
  'forward:192x768': '128x64/8x4/k16/v4', // in_proj (was tile128, the size rule, then this)
  'forward:48x192': '128x64/8x8/k16/v4', // patch_embed (was tile128)
  'forward:384x44': '64x48/4x4/k16/v4', // x_proj (was tile64)
  'forward:12x384': '64x64/4x4/k12/v4', // dt_proj (was tile128)
  'forward:384x192': '128x64/8x4/k8/v4/db', // out_proj (was tile128, then 128x64/8x8/k16)
  'backward_input:192x10': '64x64/4x4/k16/v4', // head (was tile64)
  'backward_input:384x192': '64x64/8x4/k16/v4', // out_proj (was tile128, then 64x128/8x8/k16/v4)
  'backward_input:384x44': '64x64/4x4/k16/v4', // x_proj (was tile128)
  'backward_input:192x768': '64x64/8x4/k16/v4', // in_proj (was tile128, then 128x64/8x8/k16/v4)
  'backward_weight:192x10': '16x64/4x4/k16/v4', // head (was tile64)
  'backward_weight:384x192': '64x64/8x4/k8/v4/db', // out_proj (was tile128, then 128x64/8x8/k16/v4, then 128x64/8x4/k8/v4/db)
  'backward_weight:12x384': { variant: '128x16/4x4/k16/v4', sum: 'lanes' }, // dt_proj (was tile64, then the serial sum)
  'backward_weight:384x44': '48x64/4x8/k8/v4/db', // x_proj (was tile64, then 48x64/4x8/k16/v4)
  'backward_weight:192x768': '64x64/8x4/k16/v4', // in_proj (was tile128, then 128x128/8x8/k8/v4/db)
  'backward_weight:48x192': '64x48/4x4/k16/v4', // patch_embed (was tile64)
};

let tunedOverride: { file: string; table: Record<string, MatmulTunedEntry> } | undefined;

const MATMUL_SUMS: readonly MatmulSum[] = ['serial', 'vec4', 'lanes'];

/** An entry as MATMUL_TUNED's source writes it ('variant' or { variant: '…', splitRows: n }), for the tuning scripts to print. */
export function matmulEntrySource(e: MatmulTunedEntry): string {
  if (typeof e === 'string') return `'${e}'`;
  return `{ ${Object.entries(e).map(([k, x]) => `${k}: ${typeof x === 'string' ? `'${x}'` : x}`).join(', ')} }`;
}

/**
 * One entry of a tuning table (or a candidate for one), checked: the key 'op:IxO', a variant name
 * some kernel has, and for a weight gradient only, splitRows (a positive integer) and sum. Throws
 * a VimError that begins with `where`.
 */
export function checkMatmulEntry(key: string, entry: unknown, where: string): MatmulTunedEntry {
  const op = /^(forward|backward_input|backward_weight):\d+x\d+$/.exec(key)?.[1];
  const obj = typeof entry === 'object' && entry !== null && !Array.isArray(entry) ? entry as Record<string, unknown> : null;
  const variant = typeof entry === 'string' ? entry : obj?.variant;
  if (op === undefined || typeof variant !== 'string') {
    throw new VimError(`${where} is not of the form 'op:IxO': 'variant' or { variant, splitRows?, sum? }`);
  }
  try {
    parseMatmulVariant(variant); // a name no kernel has
  } catch (e) {
    throw new VimError(`${where}: ${(e as Error).message}`);
  }
  if (obj) {
    for (const f of Object.keys(obj)) {
      if (!['variant', 'splitRows', 'sum'].includes(f)) throw new VimError(`${where}: unknown field "${f}" (an entry has variant, and for a weight gradient splitRows and sum)`);
    }
    if ((obj.splitRows !== undefined || obj.sum !== undefined) && op !== 'backward_weight') {
      throw new VimError(`${where}: splitRows and sum are for weight gradients (backward_weight:…), not ${op}`);
    }
    if (obj.splitRows !== undefined && !(Number.isInteger(obj.splitRows) && (obj.splitRows as number) >= 1)) {
      throw new VimError(`${where}: splitRows must be a positive integer (rows of M per split) but is ${JSON.stringify(obj.splitRows)}`);
    }
    if (obj.sum !== undefined && !MATMUL_SUMS.includes(obj.sum as MatmulSum)) {
      throw new VimError(`${where}: sum must be one of ${MATMUL_SUMS.join(', ')} but is ${JSON.stringify(obj.sum)}`);
    }
  }
  return entry as MatmulTunedEntry;
}

/**
 * A tuning table as read from JSON (an object of entries, or scripts/bench/matmul.mjs's --json
 * output, whose `tuned` holds them), every entry checked by checkMatmulEntry. `where` names the
 * file in the errors.
 */
export function checkMatmulTable(json: unknown, where: string): Record<string, MatmulTunedEntry> {
  const table = (json as { tuned?: unknown })?.tuned ?? json;
  if (typeof table !== 'object' || table === null || Array.isArray(table)) {
    throw new VimError(`${where} holds no object of entries ('forward:192x768': '128x64/8x4/k16/v4', …)`);
  }
  for (const [key, entry] of Object.entries(table)) checkMatmulEntry(key, entry, `${where}: entry '${key}'`);
  return table as Record<string, MatmulTunedEntry>;
}

/**
 * Entries from the JSON file named by $VIM_MATMUL_TUNED (see checkMatmulTable), which take the
 * place of MATMUL_TUNED's: so a tuning found on one machine can be measured inside the whole model
 * (bench-vim, train-vim) before it is written into the table.
 */
export function matmulTunedOverride(): Readonly<Record<string, MatmulTunedEntry>> | undefined {
  const file = process.env.VIM_MATMUL_TUNED;
  if (!file) return undefined;
  if (tunedOverride?.file === file) return tunedOverride.table;
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new VimError(`VIM_MATMUL_TUNED: cannot read ${file} as JSON (${(e as Error).message})`);
  }
  tunedOverride = { file, table: checkMatmulTable(json, `VIM_MATMUL_TUNED: ${file}`) };
  return tunedOverride.table;
}

/** The default kernel (and, for the weight gradient, split and sum) of a matmul problem. */
export function matmulDefault(op: MatmulOp, M: number, I: number, O: number): MatmulChoice {
  const tuned = (matmulTunedOverride() ?? MATMUL_TUNED)[`${op}:${I}x${O}`];
  if (typeof tuned === 'string') return { variant: parseMatmulVariant(tuned) };
  if (tuned !== undefined) return { ...tuned, variant: parseMatmulVariant(tuned.variant) };
  // Narrow input gradients (dt_proj's, I = R): the rows kernel, or where it cannot run the narrow
  // one (resolveKernel). On an H200 vim-tiny's (I = 12) went from 2.49 to 1.31 ms a step with the
  // narrow kernel against the size rule's tile (docs/performance.md change 17), and from 1.49 to
  // 1.21 with rows (change 39).
  if (op === 'backward_input' && I <= NARROW_MAX_I) return { variant: { kernel: 'rows' } };
  return { variant: fixedVariant(ruleTile(op, M, I, O)) };
}

/** The size rule (before tuning): 64 or 128 tiles by the result's size. */
function ruleTile(op: MatmulOp, M: number, I: number, O: number): MatmulTile {
  if (op === 'forward') return matmulTile(M, O);
  if (op === 'backward_input') return matmulTile(M, I);
  return matmulTile(O, I, M);
}

function fixedVariant(tile: MatmulTile): MatmulVariant {
  return { kernel: tile === 128 ? 'tile128' : 'tile64' };
}

// ---- variants: names and checks --------------------------------------------------------------------

/** The kernels named by a word (the parametrised one is named by its shape). */
const NAMED_KERNELS = ['tile64', 'tile128', 'narrow', 'rows', 'skinny'] as const;
type NamedKernel = (typeof NAMED_KERNELS)[number];
const NAMED_LIST = NAMED_KERNELS.map((n) => `"${n}"`).join(', ');

/** "tile64", "tile128", "narrow", "rows", "skinny", or the parametrised kernel as "ROWSxCOLS/BRxBC/kK[/v4][/db]". */
export function matmulVariantName(v: MatmulVariant): string {
  if (v.kernel !== 'tiled') return v.kernel;
  return `${v.rows}x${v.cols}/${v.blockRows}x${v.blockCols}/k${v.k}${v.vec4 ? '/v4' : ''}${v.doubleBuffer ? '/db' : ''}`;
}

/** The inverse of matmulVariantName; throws on anything else, saying what is accepted. */
export function parseMatmulVariant(name: string): MatmulVariant {
  if ((NAMED_KERNELS as readonly string[]).includes(name)) return { kernel: name as NamedKernel } as MatmulVariant;
  const m = /^(\d+)x(\d+)\/(\d+)x(\d+)\/k(\d+)((?:\/(?:v4|db))*)$/.exec(name);
  if (!m) {
    throw new Error(`matmul: expected a variant ${NAMED_LIST} or "ROWSxCOLS/BRxBC/kK[/v4][/db]" (e.g. "128x64/8x8/k16/v4") but received "${name}"`);
  }
  const flags = m[6].split('/').filter(Boolean);
  const v: TiledVariant = {
    kernel: 'tiled', rows: +m[1], cols: +m[2], blockRows: +m[3] as 4 | 8, blockCols: +m[4] as 4 | 8, k: +m[5],
    vec4: flags.includes('v4'), doubleBuffer: flags.includes('db'),
  };
  checkTiled(v);
  return v;
}

/** The shape rules of a TiledVariant (the adapter's limits are checked when a dispatch is built). */
function checkTiled(v: TiledVariant): void {
  const name = matmulVariantName(v);
  const bad = (what: string) => new Error(`matmul: variant ${name}: ${what}`);
  if (v.blockRows !== 4 && v.blockRows !== 8) throw bad(`block rows must be 4 or 8, got ${v.blockRows}`);
  if (v.blockCols !== 4 && v.blockCols !== 8) throw bad(`block columns must be 4 or 8, got ${v.blockCols}`);
  for (const [what, n, b] of [['rows', v.rows, v.blockRows], ['columns', v.cols, v.blockCols]] as const) {
    if (!Number.isInteger(n) || n < b || n % b !== 0) throw bad(`tile ${what} must be a positive multiple of the block's ${b}, got ${n}`);
  }
  if (!Number.isInteger(v.k) || v.k < 4 || v.k > TILED_MAX_K || v.k % 4 !== 0) {
    throw bad(`the reduction step k must be a multiple of 4 from 4 to ${TILED_MAX_K}, got ${v.k}`);
  }
  const threads = tiledThreads(v);
  if (threads > TILED_MAX_INVOCATIONS) throw bad(`${threads} invocations per workgroup, at most ${TILED_MAX_INVOCATIONS}`);
  for (const [what, n] of [['rows', v.rows], ['columns', v.cols]] as const) {
    const items = Math.ceil((n * v.k) / 4 / threads);
    if (items > TILED_MAX_ITEMS) {
      throw bad(`each invocation would load ${items} vec4s of the ${what} operand per step, at most ${TILED_MAX_ITEMS}: use a smaller k`);
    }
  }
}

function tiledThreads(v: TiledVariant): number {
  return (v.rows / v.blockRows) * (v.cols / v.blockCols);
}

/** Bytes of workgroup memory a TiledVariant uses. */
export function tiledWorkgroupBytes(v: TiledVariant): number {
  return 16 * (v.doubleBuffer ? 2 : 1) * v.k * (v.rows / 4 + 1 + v.cols / 4 + 1);
}

function toVariant(v: MatmulVariant | string): MatmulVariant {
  if (typeof v === 'string') return parseMatmulVariant(v);
  if (v.kernel === 'tiled') checkTiled(v);
  else if (!(NAMED_KERNELS as readonly string[]).includes(v.kernel)) {
    throw new Error(`matmul: variant kernel must be ${NAMED_LIST} or "tiled", got "${(v as { kernel: string }).kernel}"`);
  }
  return v;
}

interface Strides {
  /** Row stride of inp / dinp in elements (≥ I); default I. */
  ldi?: number;
  /** Row stride of out / dout in elements (≥ O); default O. */
  ldo?: number;
  /** First element of inp / dinp inside its tensor; default 0. */
  inpOffset?: number;
  /** First element of out / dout inside its tensor; default 0. */
  outOffset?: number;
  /** Result tile of the fixed kernels (64 or 128); default from matmulDefault. Not with `variant`. */
  tile?: MatmulTile;
  /** The kernel (a MatmulVariant or its name, e.g. "128x64/8x8/k16/v4"); default from matmulDefault. */
  variant?: MatmulVariant | string;
  /** Several problems of this shape in one dispatch (MatmulBatch); default one. */
  batch?: MatmulBatch;
}

/**
 * `count` problems of one shape in one dispatch, the grid's third dimension (every kernel but the
 * skinny ones, which give way to the size rule's): problem z's operands lie z · stride elements
 * after problem 0's, in the same tensors (which must hold them all). Each problem is computed as
 * it would be alone, by the same kernel, so to the same bits. Strides of operands read or written
 * as vec4s must be multiples of 4 for vec4 loads to be used.
 */
export interface MatmulBatch {
  count: number;
  /** Elements between problems in inp / dinp, the (M, I) operand. */
  inp: number;
  /** In out / dout, the (M, O) operand. */
  out: number;
  /** In weight (forward and input gradient); 0 or omitted: one weight for all. */
  weight?: number;
  /**
   * Weight gradient: each problem's dweight (`dweight` is the first of them). Their split partials
   * go to `sums`, one region a problem, and each gets its own row of the sums.
   */
  dweights?: GpuTensor[];
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
  /** Rows of M per split instead of `splits` (the count follows from M). */
  splitRows?: number;
  /** How the split partials are added up (MatmulSum); default from matmulDefault ('serial'). */
  sum?: MatmulSum;
  /** Scratch of ≥ plan.scratchElements f32 when splits > 1; allocated here once if omitted. */
  scratch?: GpuTensor;
  /**
   * With splits > 1: the partials go to a region of `sums.partials` of their own (not `scratch`)
   * and their sum waits in `sums` for weightSumsDispatch, which adds up every recorded gradient in
   * one dispatch (the same bits as this op's own sum).
   */
  sums?: WeightSums;
}

/**
 * Weight gradients whose split sums wait for one dispatch (matmulBackwardWeight with `sums`, or
 * another op's parameter partials through weightSumsRegion, then weightSumsDispatch): each takes
 * the next region of `partials` (aligned to 256 bytes), so they all stay there until the sums run.
 * Their results must lie in one buffer (a flat gradient buffer).
 */
export class WeightSums {
  /**
   * Rows of the sum table: where the sums go and their partials are, n, splits, accumulate, lanes
   * form, and the elements from one split's partials to the next (n where omitted).
   */
  rows: { dst: GpuTensor; src: number; n: number; splits: number; accumulate: boolean; lanes: boolean; stride?: number }[] = [];
  /** f32 elements of `partials` taken. */
  used = 0;
  constructor(readonly partials: GpuTensor) {}
}

/** Elements of WeightSums.partials that weight gradients with these plans' scratch need together. */
export function weightSumsElements(scratchElements: number[]): number {
  return scratchElements.reduce((t, e) => t + alignElements(e), 0);
}

/** u32 of weightSumsDispatch's table a recorded sum. */
export const WEIGHT_SUM_ROW = 7;

/**
 * The next region of `ws.partials` for an op's parameter partials, G rows of X (row-major), whose
 * column ranges `outs` (X columns from `at`, n wide) sum over the G rows into `dst` at the next
 * weightSumsDispatch, in the lanes form (eight interleaved lanes, then the lanes in order) from 32
 * rows on, else in row order. The region comes back as a tensor for the op to write its partials to.
 */
export function weightSumsRegion(
  ws: WeightSums, where: string, G: number, X: number, outs: readonly { dst: GpuTensor; at: number; n: number }[], accumulate: boolean,
): GpuTensor {
  for (const o of outs) {
    if (o.at < 0 || o.at + o.n > X) throw new Error(`${where}: columns ${o.at}…${o.at + o.n - 1} of ${o.dst.label} are outside the ${X} of a partial row`);
  }
  const region = takeWeightSumsRegion(ws, where, G * X);
  for (const o of outs) ws.rows.push({ dst: o.dst, src: region.at + o.at, n: o.n, splits: G, accumulate, lanes: G >= 32, stride: X });
  return region.view;
}

/**
 * The next `need` elements of `ws.partials` (from ws.used, which moves past them to the next
 * 256-byte boundary), as a tensor and their first element; throws where the partials end first.
 */
function takeWeightSumsRegion(ws: WeightSums, where: string, need: number): { at: number; view: GpuTensor } {
  const at = ws.used;
  if (at + need > numel(ws.partials)) {
    throw new Error(`${where}: ${ws.partials.label} holds ${numel(ws.partials)} f32, the weight sums recorded need ${at + need}`);
  }
  ws.used = at + alignElements(need);
  return { at, view: { buffer: ws.partials.buffer, offset: ws.partials.offset + 4 * at, size: 4 * need, label: `${ws.partials.label} @${at}` } };
}

const SUM_ALIGN = 64; // f32 elements: 256 bytes, the largest minStorageBufferOffsetAlignment WebGPU allows
function alignElements(e: number): number {
  return Math.ceil(e / SUM_ALIGN) * SUM_ALIGN;
}

/**
 * One dispatch (sum_partials_multi) that adds up the split partials of every weight gradient
 * recorded in `ws`, each in the order its own sum dispatch would (the same bits); none when nothing
 * was recorded. `ws` is emptied, so its regions serve the next gradients (whose partials are
 * written after these sums in the same stream). The dispatch's table of WEIGHT_SUM_ROW u32 a
 * gradient goes to `table` (a region the caller owns, at least WEIGHT_SUM_ROW elements a recorded
 * gradient), else to a buffer of its own.
 */
export function weightSumsDispatch(gpu: Gpu, ws: WeightSums, table?: GpuTensor): Dispatch[] {
  const rows = ws.rows;
  ws.rows = [];
  ws.used = 0;
  if (rows.length === 0) return [];
  const buffer = rows[0].dst.buffer;
  for (const r of rows) {
    if (r.dst.buffer !== buffer) throw new Error(`weightSumsDispatch: ${r.dst.label} is not in the buffer of ${rows[0].dst.label}; the sums of one dispatch must land in one buffer`);
  }
  const rowsU32 = new Uint32Array(rows.length * WEIGHT_SUM_ROW);
  let groups = 0;
  let bytes = 0;
  let flops = 0;
  rows.forEach((r, k) => {
    rowsU32.set([groups, r.dst.offset / 4, r.src, r.n, r.splits, (r.accumulate ? 1 : 0) | (r.lanes ? 2 : 0), r.stride ?? r.n], WEIGHT_SUM_ROW * k);
    groups += ceilDiv(r.n, r.lanes ? 32 : 256);
    const c = splitSumCost(r.n, r.splits, r.accumulate);
    bytes += c.bytes;
    flops += c.flops;
  });
  if (table && numel(table) < rowsU32.length) {
    throw new Error(`weightSumsDispatch: ${table.label} holds ${numel(table)} elements, the table of ${rows.length} gradients needs ${rowsU32.length}`);
  }
  const t = table ?? createTensor(gpu, rowsU32.length, 'weight sums table');
  gpu.queue.writeBuffer(t.buffer, t.offset, rowsU32);
  const sums: GpuTensor = { buffer, offset: 0, size: buffer.size, label: `${rows[0].dst.label} … (weight sums)` };
  return [makeDispatch(gpu, FILE, 'sum_partials_multi', { SUM_ROWS: rows.length, SUM_ROW: WEIGHT_SUM_ROW }, [sums, ws.partials, t], workgroupGrid(gpu, groups),
    { label: 'matmul_backward_weight_sums', shape: `${rows.length} gradients`, flops, bytes })];
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
 * The split of dweight's reduction over M. Fixed kernels: enough workgroups to fill a big GPU
 * (⌈O/64⌉·⌈I/64⌉ tiles × splits ≈ 512, or ≈ 264 with 128 tiles), but at least 256 rows per split
 * so the partials (splits·O·I written and read back) stay small next to the M·(O+I) inputs.
 * The parametrised kernel: about 264·256 invocations, the partials at most a quarter of the
 * inputs' size, and at least 2 steps per split. `tile` is the kernel (a fixed tile edge, a variant
 * or its name); without it, the default choice, whose scratch size also covers the fixed kernel
 * that replaces it where it cannot run. `splitRows` asks for rows per split instead of a count.
 */
export function matmulBackwardWeightPlan(
  M: number, I: number, O: number, splits?: number, tile?: MatmulTile | MatmulVariant | string, splitRows?: number,
): SplitPlan {
  checkDims({ M, I, O });
  if (splits !== undefined && splitRows !== undefined) throw new Error('matmul: give splits or splitRows, not both');
  if (splitRows !== undefined) {
    checkPositiveInt('splitRows', splitRows);
    splits = ceilDiv(M, splitRows);
  }
  if (tile === undefined) {
    const choice = matmulDefault('backward_weight', M, I, O);
    if (choice.variant.kernel === 'narrow' || choice.variant.kernel === 'rows' || choice.variant.kernel === 'skinny') { // cannot run the weight gradient: the size rule's kernel does
      return weightPlan(M, I, O, splits, fixedVariant(ruleTile('backward_weight', M, I, O)));
    }
    const plan = weightPlan(M, I, O, splits ?? splitsFromRows(M, choice.splitRows), choice.variant);
    if (choice.variant.kernel !== 'tiled') return plan;
    // Where the tuned variant cannot run a call, the size rule's kernel runs it: size scratch for both.
    const fallback = weightPlan(M, I, O, splits, fixedVariant(ruleTile('backward_weight', M, I, O)));
    return { ...plan, scratchElements: Math.max(plan.scratchElements, fallback.scratchElements) };
  }
  const v = typeof tile === 'number' ? (checkTile(tile), fixedVariant(tile)) : toVariant(tile);
  return weightPlan(M, I, O, splits, v);
}

/**
 * Elements of WeightSums.partials one problem of a default weight gradient in batches
 * (MatmulBatch) takes: its splits' partials, as for one problem, and a whole O·I where it runs
 * unsplit (one problem then writes dweight itself; a batch its partials, which are summed).
 */
export function matmulBackwardWeightBatchElements(M: number, I: number, O: number): number {
  return Math.max(matmulBackwardWeightPlan(M, I, O).scratchElements, O * I);
}

function splitsFromRows(M: number, splitRows: number | undefined): number | undefined {
  return splitRows === undefined ? undefined : ceilDiv(M, splitRows);
}

function weightPlan(M: number, I: number, O: number, splits: number | undefined, v: MatmulVariant): SplitPlan {
  if (v.kernel === 'narrow' || v.kernel === 'rows') throw new Error(`matmul: variant ${v.kernel} cannot run backward_weight: ${NARROW_OP_ONLY}`);
  if (v.kernel === 'skinny') throw new Error(`matmul: variant skinny cannot run backward_weight: ${SKINNY_OP_ONLY}`);
  if (v.kernel !== 'tiled') {
    const edge = v.kernel === 'tile128' ? 128 : 64;
    const tiles = ceilDiv(O, edge) * ceilDiv(I, edge);
    const target = edge === 128 ? LARGE_TARGET_WORKGROUPS : TARGET_WORKGROUPS;
    const s = splits ?? Math.max(1, Math.min(ceilDiv(target, tiles), Math.floor(M / 256)));
    checkPositiveInt('splits', s);
    return planSplits(M, O * I, Math.min(s, M), MATMUL_TILE.k);
  }
  const tiles = ceilDiv(O, v.rows) * ceilDiv(I, v.cols);
  const target = ceilDiv(TILED_TARGET_INVOCATIONS, tiledThreads(v));
  const s = splits ?? Math.max(1, Math.min(
    ceilDiv(target, tiles), Math.floor((M * (O + I)) / (4 * O * I)), Math.floor(M / (2 * v.k))));
  checkPositiveInt('splits', s);
  return planSplits(M, O * I, Math.min(s, M), v.k);
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
export function linearBackwardScratchElements(
  M: number, I: number, O: number, hasBias: boolean, tile?: MatmulTile | MatmulVariant | string,
): number {
  const w = matmulBackwardWeightPlan(M, I, O, undefined, tile).scratchElements;
  return hasBias ? Math.max(w, biasBackwardPlan(M, O).scratchElements) : w;
}

// ---- kernel choice ----------------------------------------------------------------------------------

/** A (rows, cols) matrix at element `off` with row stride `ld` inside tensor `t`. */
interface View {
  t: GpuTensor;
  off: number;
  rows: number;
  ld: number;
  cols: number;
  /** Problems (MatmulBatch.count) and the elements between them. */
  zn: number;
  zs: number;
}

/** Whether a view can be read or written as vec4s: aligned, and inside the tensor's whole vec4s. */
function vec4View(v: View): boolean {
  return v.cols % 4 === 0 && v.ld % 4 === 0 && v.off % 4 === 0 && v.zs % 4 === 0 &&
    v.off + (v.zn - 1) * v.zs + (v.rows - 1) * v.ld + v.cols <= Math.floor(numel(v.t) / 4) * 4;
}

/** The operands of a matmul as the kernels see them: A (tile rows × k), B (tile columns × k), the result. */
interface Problem {
  op: MatmulOp;
  M: number;
  I: number;
  O: number;
  /** Problems in the dispatch (MatmulBatch.count). */
  zn: number;
  a: View;
  b: View;
  result: View;
}

/** A resolved kernel: what runs, with the constants that depend on the kernel. */
interface Kernel {
  variant: MatmulVariant;
  /** vec4 loads of A / B actually used (the parametrised kernel). */
  vecA: boolean;
  vecB: boolean;
  /** Why the default's tuned variant was not used, when it was not. */
  fallback?: string;
}

/** Why the parametrised kernel `v` cannot run problem `p` on this adapter, or null when it can. */
function tiledUnfit(gpu: Gpu, v: TiledVariant, p: Problem): string | null {
  const threads = tiledThreads(v);
  const lim = gpu.limits;
  if (threads > lim.maxComputeInvocationsPerWorkgroup) return `${threads} invocations exceed the adapter's ${lim.maxComputeInvocationsPerWorkgroup}`;
  const bytes = tiledWorkgroupBytes(v);
  if (bytes > lim.maxComputeWorkgroupStorageSize) {
    return `${bytes} bytes of workgroup memory exceed the adapter's ${lim.maxComputeWorkgroupStorageSize}`;
  }
  if (!vec4View(p.result)) return 'the result is stored as vec4s: its columns, row stride and offset must be multiples of 4';
  if (numel(p.a.t) < 4 || numel(p.b.t) < 4) return 'operands of fewer than 4 elements';
  return null;
}

const NARROW_OP_ONLY = 'it computes only the input gradient (backward_input)';
const SKINNY_OP_ONLY = 'it computes only the forward and the input gradient';

/**
 * Why a kernel of `invocations` a workgroup, `bytes` of workgroup memory and one workgroup per
 * `rows` rows of M cannot run on this adapter, or null when it can (the narrow and skinny kernels).
 */
function limitsUnfit(gpu: Gpu, M: number, invocations: number, bytes: number, rows: number): string | null {
  const lim = gpu.limits;
  if (invocations > lim.maxComputeInvocationsPerWorkgroup) {
    return `${invocations} invocations exceed the adapter's ${lim.maxComputeInvocationsPerWorkgroup}`;
  }
  if (bytes > lim.maxComputeWorkgroupStorageSize) {
    return `${bytes} bytes of workgroup memory exceed the adapter's ${lim.maxComputeWorkgroupStorageSize}`;
  }
  const groups = ceilDiv(M, rows);
  if (groups > lim.maxComputeWorkgroupsPerDimension) {
    return `${groups} workgroups (M/${rows}) exceed the adapter's ${lim.maxComputeWorkgroupsPerDimension} per dimension`;
  }
  return null;
}

/** Why problem `p` is not a narrow input gradient (the narrow and rows kernels' problems), or null when it is. */
function notNarrowInput(p: Problem): string | null {
  if (p.op !== 'backward_input') return NARROW_OP_ONLY;
  if (p.I > NARROW_MAX_I) return `I = ${p.I} columns, at most ${NARROW_MAX_I}`;
  return null;
}

/** Why the narrow kernel cannot run problem `p` on this adapter, or null when it can. */
function narrowUnfit(gpu: Gpu, p: Problem): string | null {
  return notNarrowInput(p) ?? limitsUnfit(gpu, p.M, NARROW_INVOCATIONS, narrowWorkgroupBytes(p.I), NARROW_ROWS);
}

/** Why the rows kernel cannot run problem `p` on this adapter, or null when it can. */
function rowsUnfit(gpu: Gpu, p: Problem): string | null {
  const why = notNarrowInput(p);
  if (why) return why;
  const sg = fixedSubgroupSize(gpu);
  if (sg === 0) return 'the adapter has no subgroups of one fixed size';
  if (!vec4View(p.a)) return 'dout is read as vec4s: O, its row stride and offset must be multiples of 4';
  const { rit, nsg } = rowsShape();
  return limitsUnfit(gpu, p.M, sg * nsg, 16 * Math.ceil(p.I / 4) * p.O, 4 * nsg * rit);
}

/** Why a skinny kernel cannot run problem `p` on this adapter, or null when it can. */
function skinnyUnfit(gpu: Gpu, p: Problem): string | null {
  if (p.op === 'backward_weight') return SKINNY_OP_ONLY;
  if (p.O > SKINNY_MAX_O) return `O = ${p.O} outputs, at most ${SKINNY_MAX_O}`;
  if (p.op === 'forward' && !vec4View(p.a)) return 'inp is read as vec4s: I, its row stride and offset must be multiples of 4';
  if (p.op === 'backward_input' && !vec4View(p.result)) return 'dinp is stored as vec4s: I, its row stride and offset must be multiples of 4';
  const { rows, invocations, bytes } = skinnyShape(p.op, p.O);
  return limitsUnfit(gpu, p.M, invocations, bytes, rows);
}

/** Why variant `v` cannot run problem `p` on this adapter, or null when it can (the fixed kernels run anything). */
function unfit(gpu: Gpu, v: MatmulVariant, p: Problem): string | null {
  if (p.zn > 1 && v.kernel === 'skinny') return 'the skinny kernels take one problem a dispatch';
  if (v.kernel === 'tiled') return tiledUnfit(gpu, v, p);
  if (v.kernel === 'narrow') return narrowUnfit(gpu, p);
  if (v.kernel === 'rows') return rowsUnfit(gpu, p);
  if (v.kernel === 'skinny') return skinnyUnfit(gpu, p);
  return null;
}

function resolveKernel(gpu: Gpu, p: Problem, a: Strides): Kernel {
  if (a.tile !== undefined && a.variant !== undefined) throw new Error('matmul: give tile or variant, not both');
  let v: MatmulVariant;
  let fallback: string | undefined;
  if (a.tile !== undefined) {
    checkTile(a.tile);
    v = fixedVariant(a.tile);
  } else if (a.variant !== undefined) {
    v = toVariant(a.variant);
    const why = unfit(gpu, v, p);
    if (why) throw new Error(`matmul: variant ${matmulVariantName(v)} cannot run ${p.op} M=${p.M} I=${p.I} O=${p.O}: ${why}`);
  } else {
    v = matmulDefault(p.op, p.M, p.I, p.O).variant;
    const why = unfit(gpu, v, p);
    if (why) {
      fallback = `${matmulVariantName(v)}: ${why}`;
      // the rows kernel's results: the narrow kernel where it can run them, else the size rule
      const narrow: MatmulVariant = { kernel: 'narrow' };
      v = v.kernel === 'rows' && !unfit(gpu, narrow, p) ? narrow : fixedVariant(ruleTile(p.op, p.M, p.I, p.O));
    }
  }
  const vec = v.kernel === 'tiled' && v.vec4;
  return { variant: v, vecA: vec && vec4View(p.a), vecB: vec && vec4View(p.b), fallback };
}

/** The name of the kernel actually used, with "/v4" narrowed to "/v4a" or "/v4b" when only one operand is aligned. */
function kernelName(k: Kernel): string {
  const n = matmulVariantName(k.variant);
  if (k.variant.kernel !== 'tiled' || !k.variant.vec4 || (k.vecA && k.vecB)) return n;
  return n.replace('/v4', k.vecA ? '/v4a' : k.vecB ? '/v4b' : '/v4-');
}

/**
 * Which kernel a call would run and why: its name (as matmulVariantName, with "/v4a", "/v4b" or
 * "/v4-" when only one or neither operand could be loaded as vec4s), for the weight gradient the
 * split count and how the partials are summed ('none' with one split), and, when the default's
 * tuned variant could not run the call, the reason. Builds nothing. For the bench harness and tests.
 */
export function matmulKernelFor(
  gpu: Gpu, op: MatmulOp,
  a: (MatmulForwardArgs | MatmulBackwardInputArgs | MatmulBackwardWeightArgs),
): { name: string; fallback?: string; splits?: number; sum?: MatmulSum | 'none' } {
  if (op === 'backward_weight') {
    const w = weightSetup(gpu, a as MatmulBackwardWeightArgs);
    return { name: kernelName(w.k), fallback: w.k.fallback, splits: w.plan.splits, sum: w.plan.splits > 1 ? w.sum : 'none' };
  }
  const k = resolveKernel(gpu, problemOf(op, a), a);
  return { name: kernelName(k), fallback: k.fallback };
}

function problemOf(op: MatmulOp, a: MatmulForwardArgs | MatmulBackwardInputArgs | MatmulBackwardWeightArgs): Problem {
  const { M, I, O } = a;
  const s = strides(a, M, I, O);
  const zn = s.batch.count;
  const inpSide = { zn, zs: s.batch.inp };
  const outSide = { zn, zs: s.batch.out };
  const weightSide = { zn, zs: s.batch.weight ?? 0 };
  const one = { zn: 1, zs: 0 };
  if (op === 'forward') {
    const f = a as MatmulForwardArgs;
    return {
      op, M, I, O, zn,
      a: { t: f.inp, off: s.inpOffset, rows: M, ld: s.ldi, cols: I, ...inpSide },
      b: { t: f.weight, off: 0, rows: O, ld: I, cols: I, ...weightSide },
      result: { t: f.out, off: s.outOffset, rows: M, ld: s.ldo, cols: O, ...outSide },
    };
  }
  if (op === 'backward_input') {
    const b = a as MatmulBackwardInputArgs;
    return {
      op, M, I, O, zn,
      a: { t: b.dout, off: s.outOffset, rows: M, ld: s.ldo, cols: O, ...outSide },
      b: { t: b.weight, off: 0, rows: O, ld: I, cols: I, ...weightSide },
      result: { t: b.dinp, off: s.inpOffset, rows: M, ld: s.ldi, cols: I, ...inpSide },
    };
  }
  const w = a as MatmulBackwardWeightArgs;
  return {
    op, M, I, O, zn,
    a: { t: w.dout, off: s.outOffset, rows: M, ld: s.ldo, cols: O, ...outSide },
    b: { t: w.inp, off: s.inpOffset, rows: M, ld: s.ldi, cols: I, ...inpSide },
    result: { t: w.dweight, off: 0, rows: O, ld: I, cols: I, ...one }, // each problem's own tensor (or partials region)
  };
}

/** Override constants of the parametrised kernel for result rows × cols and reduction length K. */
function tiledConstants(k: Kernel, rows: number, cols: number, exactK: boolean): Record<string, number> {
  const v = k.variant as TiledVariant;
  return {
    WX: v.cols / v.blockCols, WY: v.rows / v.blockRows, HM: v.blockRows / 4, HN: v.blockCols / 4, GK: v.k,
    VA: k.vecA ? 1 : 0, VB: k.vecB ? 1 : 0, DB: v.doubleBuffer ? 1 : 0,
    XR: rows % v.rows === 0 ? 1 : 0, XC: cols % v.cols === 0 ? 1 : 0, XK: exactK ? 1 : 0,
  };
}

/** The tile (rows × columns of the result per workgroup) of a resolved kernel running `op` of a layer with O outputs. */
function tileOf(v: MatmulVariant, op: MatmulOp, O: number): { rows: number; cols: number } {
  if (v.kernel === 'tiled') return { rows: v.rows, cols: v.cols };
  if (v.kernel === 'narrow') return { rows: NARROW_ROWS, cols: NARROW_MAX_I };
  if (v.kernel === 'rows') {
    const { rit, nsg } = rowsShape();
    return { rows: 4 * nsg * rit, cols: NARROW_MAX_I };
  }
  if (v.kernel === 'skinny') {
    const { rows, cols } = skinnyShape(op, O);
    return { rows, cols };
  }
  const e = v.kernel === 'tile128' ? 128 : 64;
  return { rows: e, cols: e };
}

function entryOf(base: string, v: MatmulVariant): string {
  return v.kernel === 'tile64' ? base : v.kernel === 'tiled' ? `${base}_g` : v.kernel === 'tile128' ? `${base}_128` : `${base}_${v.kernel}`;
}

// ---- dispatches -----------------------------------------------------------------------------------

/**
 * out (M, O) (+)= inp (M, I) · weight (O, I)ᵀ (+ bias). One dispatch, grid (⌈O/Tc⌉, ⌈M/Tr⌉), Tr × Tc
 * the tile; the skinny kernel: grid (1, ⌈M/64⌉).
 */
export function matmulForward(gpu: Gpu, a: MatmulForwardArgs): Dispatch {
  const { M, I, O } = a;
  const s = strides(a, M, I, O);
  const z = s.batch.count;
  const last = z - 1; // the last problem's operands are checked
  checkTensor('out', a.out, s.outOffset + last * s.batch.out, M, s.ldo, O);
  checkTensor('inp', a.inp, s.inpOffset + last * s.batch.inp, M, s.ldi, I);
  checkTensor('weight', a.weight, last * (s.batch.weight ?? 0), O, I, I);
  if (a.bias) checkTensor('bias', a.bias, 0, 1, O, O);
  if (a.bias && z > 1) throw new Error('matmul: a batched forward takes no bias');
  const acc = a.accumulate ?? false;
  const k = resolveKernel(gpu, problemOf('forward', a), a);
  const tile = tileOf(k.variant, 'forward', O);
  const tiled = k.variant.kernel === 'tiled';
  // Without a bias the binding still needs a read-only tensor; the kernel never reads it.
  const skinny = k.variant.kernel === 'skinny'; // reads inp and weight only as vec4s: bindings 1 and 2 unused
  const bindings = [a.out, skinny ? null : a.inp, skinny ? null : a.weight, a.bias ?? a.weight];
  if (tiled || skinny) bindings.push(a.inp, a.weight); // the vec4 views (bindings 4, 5)
  return makeDispatch(
    gpu, FILE, entryOf('matmul_forward', k.variant),
    {
      M, I, O, LDI: s.ldi, LDO: s.ldo, INP_OFF: s.inpOffset, OUT_OFF: s.outOffset, HAS_BIAS: a.bias ? 1 : 0, ACCUMULATE: acc ? 1 : 0,
      ...(tiled ? tiledConstants(k, M, O, I % (k.variant as TiledVariant).k === 0) : {}), ...batchConstants(s.batch),
    },
    bindings,
    [ceilDiv(O, tile.cols), ceilDiv(M, tile.rows), z],
    {
      label: 'matmul_forward', shape: `M=${M} I=${I} O=${O}${batchShape(z)}`,
      flops: z * (2 * M * I * O + (a.bias ? M * O : 0) + (acc ? M * O : 0)),
      bytes: 4 * z * (M * I + O * I + (a.bias ? O : 0) + M * O * (acc ? 2 : 1)),
    },
  );
}

/**
 * dinp (M, I) (+)= dout (M, O) · weight (O, I). One dispatch, grid (⌈I/Tc⌉, ⌈M/Tr⌉), Tr × Tc the
 * tile; the narrow kernel: grid (1, ⌈M/16⌉); the rows kernel: grid (1, ⌈M/(4·NSG·RIT)⌉); the skinny one: grid (⌈I/64⌉, ⌈M/64⌉).
 */
export function matmulBackwardInput(gpu: Gpu, a: MatmulBackwardInputArgs): Dispatch {
  const { M, I, O } = a;
  const s = strides(a, M, I, O);
  const z = s.batch.count;
  const last = z - 1;
  checkTensor('dinp', a.dinp, s.inpOffset + last * s.batch.inp, M, s.ldi, I);
  checkTensor('dout', a.dout, s.outOffset + last * s.batch.out, M, s.ldo, O);
  checkTensor('weight', a.weight, last * (s.batch.weight ?? 0), O, I, I);
  const acc = a.accumulate ?? false;
  const k = resolveKernel(gpu, problemOf('backward_input', a), a);
  const tile = tileOf(k.variant, 'backward_input', O);
  const tiled = k.variant.kernel === 'tiled';
  const skinny = k.variant.kernel === 'skinny'; // reads weight only as vec4s (binding 4)
  const rows = k.variant.kernel === 'rows'; // its own file: dinp, dout (as vec4s), weight
  const bindings = [a.dinp, a.dout, skinny ? null : a.weight];
  if (tiled) bindings.push(a.dout, a.weight); // the vec4 views (bindings 3, 4)
  if (skinny) bindings.push(null, a.weight);
  let rowsConstants = {};
  if (rows) {
    const r = rowsShape();
    rowsConstants = { SG: fixedSubgroupSize(gpu), NSG: r.nsg, RIT: r.rit };
  }
  return makeDispatch(
    gpu, rows ? 'matmul-rows' : FILE, entryOf('matmul_backward_input', k.variant),
    {
      M, I, O, LDI: s.ldi, LDO: s.ldo, INP_OFF: s.inpOffset, OUT_OFF: s.outOffset, ACCUMULATE: acc ? 1 : 0,
      ...(tiled ? tiledConstants(k, M, I, O % (k.variant as TiledVariant).k === 0) : {}), ...rowsConstants, ...batchConstants(s.batch),
    },
    bindings,
    [ceilDiv(I, tile.cols), ceilDiv(M, tile.rows), z],
    {
      label: 'matmul_backward_input', shape: `M=${M} I=${I} O=${O}${batchShape(z)}`, ...(rows ? { prelude: 'enable subgroups;\n' } : {}),
      flops: z * (2 * M * I * O + (acc ? M * I : 0)),
      bytes: 4 * z * (M * O + O * I + M * I * (acc ? 2 : 1)),
    },
  );
}

/**
 * dweight (O, I) (+)= dout (M, O)ᵀ · inp (M, I). With one split: one dispatch, grid
 * (⌈I/Tc⌉, ⌈O/Tr⌉), Tr × Tc the tile. With S splits: partials (S, O, I) into scratch, grid
 * (⌈I/Tc⌉, ⌈O/Tr⌉, S), then a sum of the partials over O·I elements (`sum`: MatmulSum).
 * With a batch of Z problems (`batch.dweights`, needs `sums`): grid (…, S·Z), each problem's
 * partials in a region of `sums` of its own and its sum recorded there, as for Z calls.
 */
export function matmulBackwardWeight(gpu: Gpu, a: MatmulBackwardWeightArgs): Dispatch[] {
  const { M, I, O } = a;
  const s = strides(a, M, I, O);
  const z = s.batch.count;
  const dweights = z > 1 ? s.batch.dweights ?? [] : [a.dweight];
  if (dweights.length !== z || dweights[0] !== a.dweight) {
    throw new Error(`matmul: a weight gradient in batches of ${z} takes ${z} dweights in batch.dweights, dweight the first`);
  }
  if (z > 1 && !a.sums) throw new Error('matmul: a weight gradient in batches needs `sums` for its partials');
  for (const d of dweights) checkTensor('dweight', d, 0, O, I, I);
  const last = z - 1;
  checkTensor('dout', a.dout, s.outOffset + last * s.batch.out, M, s.ldo, O);
  checkTensor('inp', a.inp, s.inpOffset + last * s.batch.inp, M, s.ldi, I);
  const { k, plan, sum } = weightSetup(gpu, a);
  const acc = a.accumulate ?? false;
  const tile = tileOf(k.variant, 'backward_weight', O);
  const tiled = k.variant.kernel === 'tiled';
  const label = { label: 'matmul_backward_weight', shape: `M=${M} I=${I} O=${O}${plan.splits > 1 ? ` S=${plan.splits}` : ''}${batchShape(z)}` };
  const grid: [number, number, number] = [ceilDiv(I, tile.cols), ceilDiv(O, tile.rows), plan.splits * z];
  const partialsOne = plan.splits * O * I; // a problem's partials (where it has any: split, or in a batch)
  const region = alignElements(partialsOne); // and the elements from one problem's to the next's
  const constants = {
    M, I, O, LDI: s.ldi, LDO: s.ldo, INP_OFF: s.inpOffset, OUT_OFF: s.outOffset,
    SPLITS: plan.splits, CHUNK: plan.chunk,
    ...(tiled ? tiledConstants(k, O, I, plan.chunk % (k.variant as TiledVariant).k === 0 && M % (k.variant as TiledVariant).k === 0) : {}),
    ...batchConstants({ ...s.batch, weight: region }),
  };
  const entry = entryOf('matmul_backward_weight', k.variant);
  const extra = tiled ? [a.dout, a.inp] : []; // the vec4 views (bindings 3, 4)
  const inputBytes = 4 * z * (M * O + M * I);
  if (plan.splits === 1 && z === 1) {
    return [makeDispatch(gpu, FILE, entry, { ...constants, ACCUMULATE: acc ? 1 : 0 },
      [a.dweight, a.dout, a.inp, ...extra], grid,
      { ...label, flops: 2 * M * I * O + (acc ? O * I : 0), bytes: inputBytes + 4 * O * I * (acc ? 2 : 1) })];
  }
  const ws = a.sums;
  let scratch: GpuTensor;
  if (ws) { // the partials in regions of their own (one a problem, `region` apart); the sums recorded for weightSumsDispatch
    const taken = takeWeightSumsRegion(ws, 'matmul_backward_weight', (z - 1) * region + partialsOne);
    scratch = taken.view;
    dweights.forEach((dst, p) => ws.rows.push({ dst, src: taken.at + p * region, n: O * I, splits: plan.splits, accumulate: acc, lanes: sum === 'lanes' }));
  } else {
    scratch = scratchFor(gpu, 'matmul_backward_weight', a.scratch, plan.scratchElements);
  }
  const partials = makeDispatch(gpu, FILE, entry, { ...constants, ACCUMULATE: 0 },
    [scratch, a.dout, a.inp, ...extra], grid,
    { ...label, flops: z * 2 * M * I * O, bytes: inputBytes + 4 * z * partialsOne });
  if (ws) return [partials];
  return [partials, sumPartials(gpu, 'matmul_backward_weight_sum', a.dweight, scratch, O * I, plan.splits, acc, sum)];
}

/** The weight gradient's kernel, split and sum: asked for, else the default's (unless it fell back). */
function weightSetup(gpu: Gpu, a: MatmulBackwardWeightArgs): { k: Kernel; plan: SplitPlan; sum: MatmulSum } {
  const { M, I, O } = a;
  if (a.splits !== undefined && a.splitRows !== undefined) throw new Error('matmul: give splits or splitRows, not both');
  const k = resolveKernel(gpu, problemOf('backward_weight', a), a);
  const forced = a.tile !== undefined || a.variant !== undefined;
  const choice = forced ? undefined : matmulDefault('backward_weight', M, I, O);
  const tunedUsed = choice !== undefined && k.fallback === undefined; // the table's split and sum apply
  const splitRows = a.splitRows ?? (tunedUsed ? choice.splitRows : undefined);
  if (splitRows !== undefined) checkPositiveInt('splitRows', splitRows);
  const plan = weightPlan(M, I, O, a.splits ?? splitsFromRows(M, splitRows), k.variant);
  const sum = a.sum ?? (tunedUsed ? choice.sum : undefined) ?? 'serial';
  if (sum !== 'serial' && sum !== 'vec4' && sum !== 'lanes') {
    throw new Error(`matmul: sum must be "serial", "vec4" or "lanes", got "${String(sum)}"`);
  }
  if (sum === 'vec4' && (O * I) % 4 !== 0) throw new Error(`matmul: sum "vec4" needs O·I a multiple of 4, got ${O}·${I}`);
  return { k, plan, sum };
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
    sumPartials(gpu, 'bias_backward_sum', a.dbias, scratch, O, plan.splits, acc, 'serial'),
  ];
}

/**
 * The whole backward of a linear layer, as `linear_backward`: dweight, then dbias (when given),
 * then dinp (when given). One scratch serves both split reductions (they run one after another).
 * `tile` / `variant`, when given, apply to both matmuls.
 */
export function linearBackward(gpu: Gpu, a: LinearBackwardArgs): Dispatch[] {
  const acc = typeof a.accumulate === 'object' ? a.accumulate : { dinp: a.accumulate, dweight: a.accumulate, dbias: a.accumulate };
  const strideArgs: Strides = { ldi: a.ldi, ldo: a.ldo, inpOffset: a.inpOffset, outOffset: a.outOffset, tile: a.tile, variant: a.variant };
  const need = linearBackwardScratchElements(a.M, a.I, a.O, a.dbias !== null, a.tile ?? a.variant);
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

const SUM_ENTRY: Record<MatmulSum, { entry: string; perWorkgroup: number }> = {
  serial: { entry: 'sum_partials', perWorkgroup: 256 },
  vec4: { entry: 'sum_partials4', perWorkgroup: 1024 },
  lanes: { entry: 'sum_partials_lanes', perWorkgroup: 32 },
};

function sumPartials(
  gpu: Gpu, label: string, sums: GpuTensor, partials: GpuTensor, n: number, splits: number, acc: boolean, sum: MatmulSum,
): Dispatch {
  const e = SUM_ENTRY[sum];
  return makeDispatch(gpu, FILE, e.entry, { SUM_N: n, SPLITS: splits, ACCUMULATE: acc ? 1 : 0 },
    [sums, partials], [ceilDiv(n, e.perWorkgroup)],
    { label, shape: `n=${n} S=${splits}`, ...splitSumCost(n, splits, acc) });
}

/** What adding `splits` partials of n elements moves and computes (read, and with `acc` read back and add, the sums). */
function splitSumCost(n: number, splits: number, acc: boolean): { bytes: number; flops: number } {
  return { bytes: 4 * (splits * n + n * (acc ? 2 : 1)), flops: (splits - 1) * n + (acc ? n : 0) };
}

function scratchFor(gpu: Gpu, op: string, given: GpuTensor | undefined, elements: number): GpuTensor {
  if (!given) return createTensor(gpu, elements, `${op}.scratch`);
  if (numel(given) < elements) {
    throw new Error(`${op}: scratch ${given.label} holds ${numel(given)} f32, the split reduction needs ${elements}`);
  }
  return given;
}

function strides(a: Strides, M: number, I: number, O: number): Required<Omit<Strides, 'tile' | 'variant'>> {
  checkDims({ M, I, O });
  const s = {
    ldi: a.ldi ?? I, ldo: a.ldo ?? O, inpOffset: a.inpOffset ?? 0, outOffset: a.outOffset ?? 0,
    batch: a.batch ?? { count: 1, inp: 0, out: 0, weight: 0 },
  };
  checkStride('ldi', s.ldi, I);
  checkStride('ldo', s.ldo, O);
  checkOffset('inpOffset', s.inpOffset);
  checkOffset('outOffset', s.outOffset);
  checkPositiveInt('batch.count', s.batch.count);
  for (const k of ['inp', 'out', 'weight'] as const) checkOffset(`batch.${k}`, s.batch[k] ?? 0);
  return s;
}

/** " ×Z" after a batched call's shape in the bench tables (nothing for one problem). */
function batchShape(z: number): string {
  return z > 1 ? ` ×${z}` : '';
}

/** The override constants of a call's batch (none for one problem, so its pipelines stay as they were). */
function batchConstants(b: MatmulBatch): Record<string, number> {
  return b.count > 1 ? { Z_INP: b.inp, Z_OUT: b.out, Z_W: b.weight ?? 0 } : {};
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
