/**
 * kernels/matmul.wgsl against the float64 reference (src/reference/linear.ts): forward, the
 * input, weight and bias gradients, on sizes that are not multiples of the 64×64×16 or 128×128×16
 * tiles (both fixed kernels of each matmul) nor of the parametrised kernel's tiles (every load
 * path, register block, step, double buffering, exact and ragged edges), with
 * row strides wider than the rows, base offsets (the head's class-token rows), the split
 * reductions over M, and the accumulate variants; the input gradient's narrow kernel (results
 * of at most 16 columns) and the skinny forward and input gradient (layers of at most 64 outputs,
 * x_proj's). Strided operands live in wider buffers filled with noise: the kernels
 * must read only the addressed elements and write nothing else.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { Gpu } from '../src/gpu/device.js';
import type { GpuTensor } from '../src/gpu/tensor.js';
import {
  MATMUL_TUNED, NARROW_MAX_I, SKINNY_MAX_O, biasBackward, biasBackwardPlan, linearBackward, linearBackwardScratchElements, matmulBackwardInput,
  matmulBackwardWeight, matmulBackwardWeightPlan, matmulDefault, matmulForward, matmulKernelFor, matmulTile,
  matmulVariantName, parseMatmulVariant, tiledWorkgroupBytes, weightSumsDispatch, weightSumsElements, weightSumsRegion, WeightSums, type MatmulOp, type MatmulSum, type MatmulTile, type MatmulTunedEntry,
  type TiledVariant,
} from '../src/gpu/ops/matmul.js';
import { linear_backward, linear_forward } from '../src/reference/linear.js';
import { Rng } from '../src/rng.js';
import { download, upload } from '../src/gpu/tensor.js';
import { randArray, read, relErr, run, tensorFrom, testGpu, zerosTensor } from './helpers/gpu.js';
import { withEnv } from './helpers/env.js';

const TOL = 1e-5;

/** A (rows, cols) matrix stored at `off` with row stride `ld` inside a buffer of noise. */
interface Strided {
  buf: Float64Array; // the whole buffer (f32-rounded values)
  off: number;
  ld: number;
  rows: number;
  cols: number;
}

function strided(rng: Rng, rows: number, cols: number, ld = cols, off = 0, tail = 0): Strided {
  const n = off + (rows - 1) * ld + cols + tail;
  return { buf: randArray(rng, n), off, ld, rows, cols };
}

/** The addressed (rows, cols) elements, dense. */
function dense(s: Strided, buf: ArrayLike<number> = s.buf): Float64Array {
  const d = new Float64Array(s.rows * s.cols);
  for (let r = 0; r < s.rows; r++) {
    for (let c = 0; c < s.cols; c++) d[r * s.cols + c] = buf[s.off + r * s.ld + c];
  }
  return d;
}

/** Whether buffer index j is one of the addressed elements. */
function addressed(s: Strided, j: number): boolean {
  const k = j - s.off;
  if (k < 0) return false;
  const r = Math.floor(k / s.ld);
  return r < s.rows && k - r * s.ld < s.cols;
}

/**
 * Checks a GPU result buffer against the reference on the addressed elements (rel err) and
 * that every other element kept its initial value.
 */
function expectStrided(got: Float64Array, s: Strided, ref: Float64Array, what: string): void {
  expect(relErr(dense(s, got), ref), what).toBeLessThan(TOL);
  let changed = 0;
  for (let j = 0; j < got.length; j++) if (!addressed(s, j) && got[j] !== s.buf[j]) changed++;
  expect(changed, `${what}: elements outside the addressed rows/columns changed`).toBe(0);
}

interface Case {
  name: string;
  M: number;
  I: number;
  O: number;
  ldi?: number;
  ldo?: number;
  inpOffset?: number;
  outOffset?: number;
  tile?: MatmulTile;
  variant?: string;
  /** Weight gradient: rows per split, and how the partials are summed. */
  splitRows?: number;
  sum?: MatmulSum;
}

const CASES: Case[] = [
  { name: 'odd sizes', M: 37, I: 19, O: 23 },
  { name: 'O smaller than a tile row', M: 37, I: 19, O: 3 },
  { name: 'I smaller than a reduction step', M: 41, I: 5, O: 29 },
  { name: 'several tiles each way', M: 131, I: 45, O: 70 },
  { name: 'strided rows and base offsets', M: 37, I: 19, O: 23, ldi: 26, ldo: 31, inpOffset: 7, outOffset: 11 },
  // The head: the class-token row (clsPos = 3) of each of B = 5 samples of L = 7 tokens, D = 19.
  { name: 'class-token rows (head)', M: 5, I: 19, O: 10, ldi: 7 * 19, inpOffset: 3 * 19 },
  // dt_proj: dt_low = the first R = 4 of R + 2N = 14 columns of xdbl.
  { name: 'column slice (dt_proj)', M: 37, I: 4, O: 13, ldi: 14 },
];

function operands(rng: Rng, c: Case) {
  const inp = strided(rng, c.M, c.I, c.ldi ?? c.I, c.inpOffset ?? 0, 3);
  const out = strided(rng, c.M, c.O, c.ldo ?? c.O, c.outOffset ?? 0, 2);
  const weight = randArray(rng, c.O * c.I);
  const bias = randArray(rng, c.O);
  return { inp, out, weight, bias };
}

function strideArgs(c: Case) {
  return { ldi: c.ldi, ldo: c.ldo, inpOffset: c.inpOffset, outOffset: c.outOffset, tile: c.tile, variant: c.variant };
}

async function gpuForward(gpu: Gpu, c: Case, withBias: boolean, accumulate: boolean, seed: number) {
  const rng = new Rng(seed);
  const { inp, out, weight, bias } = operands(rng, c);
  const tOut = tensorFrom(gpu, out.buf, 'out');
  await run(gpu, [matmulForward(gpu, {
    out: tOut, inp: tensorFrom(gpu, inp.buf, 'inp'), weight: tensorFrom(gpu, weight, 'weight'),
    bias: withBias ? tensorFrom(gpu, bias, 'bias') : null, M: c.M, I: c.I, O: c.O, accumulate, ...strideArgs(c),
  })]);
  const ref = new Float64Array(c.M * c.O);
  linear_forward(ref, dense(inp), weight, withBias ? bias : null, c.M, c.I, c.O);
  if (accumulate) {
    const prev = dense(out);
    for (let j = 0; j < ref.length; j++) ref[j] += prev[j];
  }
  expectStrided(await read(gpu, tOut), out, ref, `forward ${c.name}`);
}

describe('matmul_forward', () => {
  // Each pipeline costs a compile on lavapipe, so cases alternate between with and without bias.
  it.each(CASES.map((c, k) => ({ ...c, withBias: k % 2 === 0 })))('$name (bias: $withBias)', async (c) => {
    const gpu = await testGpu();
    await gpuForward(gpu, c, c.withBias, false, 1);
  });

  it('accumulates (with and without bias, strided)', async () => {
    const gpu = await testGpu();
    await gpuForward(gpu, CASES[0], true, true, 3);
    await gpuForward(gpu, CASES[4], false, true, 4);
  });
});

async function gpuBackwardInput(gpu: Gpu, c: Case, accumulate: boolean, seed: number) {
  const rng = new Rng(seed);
  const { inp: dinp, out: dout, weight } = operands(rng, c);
  const tDinp = tensorFrom(gpu, dinp.buf, 'dinp');
  await run(gpu, [matmulBackwardInput(gpu, {
    dinp: tDinp, dout: tensorFrom(gpu, dout.buf, 'dout'), weight: tensorFrom(gpu, weight, 'weight'),
    M: c.M, I: c.I, O: c.O, accumulate, ...strideArgs(c),
  })]);
  // The reference accumulates: start from the old dinp for the accumulate variant, else zeros.
  const ref = accumulate ? dense(dinp) : new Float64Array(c.M * c.I);
  const inpDummy = new Float64Array(c.M * c.I);
  linear_backward(ref, new Float64Array(c.O * c.I), null, dense(dout), inpDummy, weight, c.M, c.I, c.O);
  expectStrided(await read(gpu, tDinp), dinp, ref, `backward input ${c.name}`);
}

describe('matmul_backward_input', () => {
  it.each(CASES)('$name', async (c) => {
    const gpu = await testGpu();
    await gpuBackwardInput(gpu, c, false, 11);
  });

  it('accumulates', async () => {
    const gpu = await testGpu();
    await gpuBackwardInput(gpu, CASES[4], true, 13);
  });
});

async function gpuBackwardWeight(gpu: Gpu, c: Case, accumulate: boolean, splits: number | undefined, seed: number) {
  const rng = new Rng(seed);
  const { inp, out: dout } = operands(rng, c);
  const dweight = randArray(rng, c.O * c.I);
  const tDweight = tensorFrom(gpu, dweight, 'dweight');
  const list = matmulBackwardWeight(gpu, {
    dweight: tDweight, dout: tensorFrom(gpu, dout.buf, 'dout'), inp: tensorFrom(gpu, inp.buf, 'inp'),
    M: c.M, I: c.I, O: c.O, accumulate, splits, splitRows: c.splitRows, sum: c.sum, ...strideArgs(c),
  });
  const plan = matmulBackwardWeightPlan(c.M, c.I, c.O, splits, c.tile ?? c.variant, c.splitRows);
  expect(list.length).toBe(plan.splits > 1 ? 2 : 1);
  await run(gpu, list);
  const ref = accumulate ? Float64Array.from(dweight) : new Float64Array(c.O * c.I);
  linear_backward(null, ref, null, dense(dout), dense(inp), new Float64Array(c.O * c.I), c.M, c.I, c.O);
  expect(relErr(await read(gpu, tDweight), ref), `backward weight ${c.name} splits ${plan.splits}`).toBeLessThan(TOL);
  return plan;
}

describe('matmul_backward_weight', () => {
  // Cases alternate between one pass and a split into 3 over M (only where M > 16 rows).
  it.each(CASES.map((c, k) => ({ ...c, splits: k % 2 === 1 && c.M > 16 ? 3 : 1 })))('$name (splits: $splits)', async (c) => {
    const gpu = await testGpu();
    await gpuBackwardWeight(gpu, c, false, c.splits, 21);
  });

  it('accumulates, in one pass and split', async () => {
    const gpu = await testGpu();
    await gpuBackwardWeight(gpu, CASES[0], true, 1, 23);
    await gpuBackwardWeight(gpu, CASES[4], true, 3, 24);
  });

  it('default plan on a larger M (split, with a ragged last chunk)', async () => {
    const gpu = await testGpu();
    const c: Case = { name: 'M = 1000', M: 1000, I: 7, O: 9, ldo: 12, outOffset: 5 };
    const plan = matmulBackwardWeightPlan(c.M, c.I, c.O);
    expect(plan.splits).toBeGreaterThan(1);
    expect(plan.chunk % 16).toBe(0);
    expect(plan.splits * plan.chunk).toBeGreaterThanOrEqual(c.M);
    await gpuBackwardWeight(gpu, c, true, undefined, 25);
  });
});

async function gpuBiasBackward(gpu: Gpu, c: Case, accumulate: boolean, splits: number | undefined, seed: number) {
  const rng = new Rng(seed);
  const { out: dout } = operands(rng, c);
  const dbias = randArray(rng, c.O);
  const tDbias = tensorFrom(gpu, dbias, 'dbias');
  const list = biasBackward(gpu, {
    dbias: tDbias, dout: tensorFrom(gpu, dout.buf, 'dout'), M: c.M, O: c.O,
    ldo: c.ldo, outOffset: c.outOffset, accumulate, splits,
  });
  await run(gpu, list);
  const ref = accumulate ? Float64Array.from(dbias) : new Float64Array(c.O);
  linear_backward(null, new Float64Array(c.O), ref, dense(dout), new Float64Array(c.M), new Float64Array(c.O), c.M, 1, c.O);
  expect(relErr(await read(gpu, tDbias), ref), `bias backward ${c.name}`).toBeLessThan(TOL);
}

describe('bias_backward', () => {
  it.each(CASES.filter((c) => c.ldi === undefined || c.ldo !== undefined).map((c, k) => ({ ...c, splits: k % 2 === 1 ? 3 : 1 })))(
    '$name (splits: $splits)', async (c) => {
      const gpu = await testGpu();
      await gpuBiasBackward(gpu, c, false, c.splits, 31);
    });

  it('accumulates, and the default plan splits a larger M', async () => {
    const gpu = await testGpu();
    await gpuBiasBackward(gpu, CASES[0], true, 1, 33);
    await gpuBiasBackward(gpu, CASES[4], true, 3, 34);
    const c: Case = { name: 'M = 700', M: 700, I: 1, O: 70 };
    expect(biasBackwardPlan(c.M, c.O).splits).toBeGreaterThan(1);
    await gpuBiasBackward(gpu, c, true, undefined, 35);
  });
});

describe('linear backward (all three gradients)', () => {
  it('matches linear_backward, accumulating, with one scratch shared by the split reductions', async () => {
    const gpu = await testGpu();
    const c: Case = { name: 'composite', M: 300, I: 19, O: 23, ldi: 21, ldo: 24, inpOffset: 2, outOffset: 1 };
    const rng = new Rng(41);
    const { inp, out: dout, weight } = operands(rng, c);
    const dinp = strided(rng, c.M, c.I, c.ldi, c.inpOffset, 3);
    const dweight = randArray(rng, c.O * c.I);
    const dbias = randArray(rng, c.O);
    const need = linearBackwardScratchElements(c.M, c.I, c.O, true);
    expect(need).toBeGreaterThan(0); // M = 300 splits dbias's reduction
    const t = {
      dinp: tensorFrom(gpu, dinp.buf, 'dinp'), dweight: tensorFrom(gpu, dweight, 'dweight'),
      dbias: tensorFrom(gpu, dbias, 'dbias'), scratch: zerosTensor(gpu, need, 'scratch'),
    };
    await run(gpu, linearBackward(gpu, {
      ...t, dout: tensorFrom(gpu, dout.buf, 'dout'), inp: tensorFrom(gpu, inp.buf, 'inp'),
      weight: tensorFrom(gpu, weight, 'weight'), M: c.M, I: c.I, O: c.O, accumulate: true, ...strideArgs(c),
    }));
    const rDinp = dense(dinp);
    const rDweight = Float64Array.from(dweight);
    const rDbias = Float64Array.from(dbias);
    linear_backward(rDinp, rDweight, rDbias, dense(dout), dense(inp), weight, c.M, c.I, c.O);
    expectStrided(await read(gpu, t.dinp), dinp, rDinp, 'dinp');
    expect(relErr(await read(gpu, t.dweight), rDweight), 'dweight').toBeLessThan(TOL);
    expect(relErr(await read(gpu, t.dbias), rDbias), 'dbias').toBeLessThan(TOL);
  });

  it('rejects strides narrower than a row and tensors too small for their view', async () => {
    const gpu = await testGpu();
    const t = zerosTensor(gpu, 100);
    expect(() => matmulForward(gpu, { out: t, inp: t, weight: t, bias: null, M: 4, I: 5, O: 5, ldi: 4 })).toThrow(/ldi/);
    expect(() => matmulForward(gpu, { out: t, inp: t, weight: t, bias: null, M: 30, I: 5, O: 5 })).toThrow(/out/);
    expect(() => matmulBackwardWeight(gpu, { dweight: t, dout: t, inp: t, M: 4, I: 5, O: 5, splits: 0 })).toThrow(/splits/);
  });
});

// The 128×128-tile kernels (chosen for big problems), forced on sizes with ragged edges in every
// dimension: 300 = 2·128 + 44 rows, 260 = 2·128 + 4 columns, 200 = 12·16 + 8 reduction steps.
// Each of their pipelines takes seconds to build on a CPU adapter, so few variants are built.
const LARGE: Case[] = [
  { name: 'large tiles, ragged', M: 300, I: 200, O: 260, tile: 128 },
  { name: 'large tiles, strided with offsets', M: 300, I: 200, O: 260, ldi: 203, ldo: 261, inpOffset: 5, outOffset: 9, tile: 128 },
];

describe('128×128 tiles', () => {
  it('are chosen for big problems only', () => {
    expect(matmulTile(16640, 768)).toBe(128); // in_proj forward at batch 256
    expect(matmulTile(16640, 192)).toBe(128); // out_proj forward
    expect(matmulTile(16640, 44)).toBe(64); // x_proj forward: too narrow
    expect(matmulTile(300, 260)).toBe(64); // too few tiles to fill a big GPU
    expect(matmulTile(768, 192, 16640)).toBe(128); // in_proj weight gradient
    expect(matmulTile(384, 12, 16640)).toBe(64); // dt_proj weight gradient
    const p = matmulBackwardWeightPlan(16640, 192, 768); // in_proj weight gradient, MATMUL_TUNED's 64×64 tiles
    expect(p.splits * (768 / 64) * (192 / 64)).toBeGreaterThanOrEqual(200); // enough workgroups for a big GPU
  });

  it('forward, ragged (bias) and strided (accumulate)', async () => {
    const gpu = await testGpu();
    await gpuForward(gpu, LARGE[0], true, false, 51);
    await gpuForward(gpu, LARGE[1], false, true, 52);
  });

  it('input and weight gradients, ragged, one pass', async () => {
    const gpu = await testGpu();
    await gpuBackwardInput(gpu, LARGE[0], false, 53);
    await gpuBackwardWeight(gpu, LARGE[0], false, 1, 55);
  });

  it('linear backward, strided, accumulating, split weight gradient', async () => {
    const gpu = await testGpu();
    const c = LARGE[1];
    const rng = new Rng(57);
    const { inp, out: dout, weight } = operands(rng, c);
    const dinp = strided(rng, c.M, c.I, c.ldi, c.inpOffset, 3);
    const dweight = randArray(rng, c.O * c.I);
    const need = linearBackwardScratchElements(c.M, c.I, c.O, false, 128);
    expect(need).toBe(0); // M = 300 is one split by default: force 3 below
    const scratch = zerosTensor(gpu, matmulBackwardWeightPlan(c.M, c.I, c.O, 3, 128).scratchElements, 'scratch');
    const t = { dinp: tensorFrom(gpu, dinp.buf, 'dinp'), dweight: tensorFrom(gpu, dweight, 'dweight') };
    const tDout = tensorFrom(gpu, dout.buf, 'dout');
    const tInp = tensorFrom(gpu, inp.buf, 'inp');
    await run(gpu, [
      ...matmulBackwardWeight(gpu, { dweight: t.dweight, dout: tDout, inp: tInp, M: c.M, I: c.I, O: c.O, accumulate: true, splits: 3, scratch, ...strideArgs(c) }),
      matmulBackwardInput(gpu, { dinp: t.dinp, dout: tDout, weight: tensorFrom(gpu, weight, 'weight'), M: c.M, I: c.I, O: c.O, accumulate: true, ...strideArgs(c) }),
    ]);
    const rDinp = dense(dinp);
    const rDweight = Float64Array.from(dweight);
    linear_backward(rDinp, rDweight, null, dense(dout), dense(inp), weight, c.M, c.I, c.O);
    expectStrided(await read(gpu, t.dinp), dinp, rDinp, 'dinp');
    expect(relErr(await read(gpu, t.dweight), rDweight), 'dweight').toBeLessThan(TOL);
  });
});

// The parametrised kernel (matmul.wgsl's *_g entry points): each case names the variant it forces
// and, in `kernel`, the kernel that must run (vec4 loads narrow to "/v4a" or "/v4b" when only one
// operand is aligned). Between them the cases take every load path (vec4 and scalar, along the
// reduction and across it), 4- and 8-wide register blocks, steps of 8, 12 and 16 and the whole
// reduction in one step, single and double buffering, ragged and exact rows, columns and steps,
// invocations with no item to load, the strided and sliced operands of the model, accumulation and
// bias, and, for the weight gradient, one pass, splits by count and by rows, and the three sums.
// Results are vec4 stores: their columns, stride and offset are multiples of 4 in every case.
interface TiledCase extends Case {
  variant: string;
  kernel: string;
  accumulate?: boolean;
  bias?: boolean;
  splits?: number;
}

const TILED_FORWARD: TiledCase[] = [
  { name: 'vec4 loads, ragged, strided with offsets', M: 37, I: 20, O: 28, ldi: 24, ldo: 32, inpOffset: 4, outOffset: 8, variant: '32x16/4x4/k8/v4', kernel: '32x16/4x4/k8/v4', bias: true },
  { name: 'scalar loads, 8×8 blocks, double-buffered, odd reduction', M: 37, I: 19, O: 28, ldi: 21, inpOffset: 3, variant: '64x32/8x8/k12/db', kernel: '64x32/8x8/k12/db', accumulate: true },
  { name: 'exact tiles and steps', M: 64, I: 32, O: 32, variant: '32x32/8x4/k16/v4/db', kernel: '32x32/8x4/k16/v4/db', bias: true },
  { name: 'vec4 asked, the input misaligned', M: 37, I: 20, O: 28, ldi: 21, variant: '32x16/4x8/k8/v4', kernel: '32x16/4x8/k8/v4b' },
  { name: 'column slice, one step (dt_proj)', M: 37, I: 12, O: 24, ldi: 44, variant: '64x16/4x4/k12/v4', kernel: '64x16/4x4/k12/v4' },
  { name: 'thin result, idle loaders (x_proj)', M: 70, I: 24, O: 44, variant: '32x48/4x4/k8/v4/db', kernel: '32x48/4x4/k8/v4/db' },
  { name: '8×4 blocks, k8 double-buffered, ragged (out_proj\'s form)', M: 70, I: 36, O: 40, variant: '64x32/8x4/k8/v4/db', kernel: '64x32/8x4/k8/v4/db' },
];

const TILED_INPUT: TiledCase[] = [
  { name: 'vec4 loads, ragged, strided with offsets', M: 37, I: 20, O: 28, ldi: 24, ldo: 32, inpOffset: 4, outOffset: 8, variant: '32x16/4x4/k8/v4', kernel: '32x16/4x4/k8/v4' },
  { name: 'scalar loads, 8×8 blocks, double-buffered, odd reduction', M: 37, I: 20, O: 19, ldo: 23, outOffset: 1, variant: '64x32/8x8/k12/db', kernel: '64x32/8x8/k12/db', accumulate: true },
  { name: 'exact tiles and steps', M: 64, I: 32, O: 48, variant: '32x32/4x8/k16/v4/db', kernel: '32x32/4x8/k16/v4/db' },
  { name: 'column slice (dt_proj), thin tile', M: 37, I: 12, O: 24, ldi: 44, variant: '128x16/8x4/k16/v4', kernel: '128x16/8x4/k16/v4' },
  { name: 'vec4 asked, dout misaligned', M: 37, I: 20, O: 19, variant: '32x16/4x4/k8/v4', kernel: '32x16/4x4/k8/v4b' },
  { name: '8×4 blocks, ragged rows and columns (in_proj\'s and out_proj\'s form)', M: 70, I: 36, O: 40, variant: '32x32/8x4/k16/v4', kernel: '32x32/8x4/k16/v4' },
];

const TILED_WEIGHT: TiledCase[] = [
  { name: 'one pass, vec4 asked, dout misaligned, strided', M: 37, I: 20, O: 23, ldi: 24, ldo: 26, inpOffset: 4, outOffset: 2, variant: '32x16/4x4/k8/v4', kernel: '32x16/4x4/k8/v4b', splits: 1 },
  { name: 'vec4 loads, 3 splits, vec4 sum, accumulate', M: 300, I: 20, O: 28, ldi: 24, variant: '32x16/4x4/k8/v4', kernel: '32x16/4x4/k8/v4', splits: 3, sum: 'vec4', accumulate: true },
  { name: 'scalar, 8×8 blocks, double-buffered, splits of 60 rows (exact steps of 12), lanes sum with idle lanes', M: 300, I: 20, O: 23, variant: '64x32/8x8/k12/db', kernel: '64x32/8x8/k12/db', splitRows: 64, sum: 'lanes' },
  { name: 'exact tiles and steps', M: 256, I: 32, O: 64, variant: '32x32/8x8/k16/v4/db', kernel: '32x32/8x8/k16/v4/db', splitRows: 64 },
  { name: 'thin rows, default split with a ragged last one (x_proj)', M: 700, I: 40, O: 44, variant: '48x64/4x4/k16/v4', kernel: '48x64/4x4/k16/v4' },
  { name: 'column slice (dt_proj), thin tile, 19 splits, lanes sum', M: 300, I: 12, O: 24, ldi: 44, variant: '128x16/8x4/k8/v4/db', kernel: '128x16/8x4/k8/v4/db', splitRows: 16, sum: 'lanes', accumulate: true },
  { name: '8×4 blocks, k8 double-buffered, ragged, default split (out_proj\'s form)', M: 300, I: 36, O: 40, variant: '32x32/8x4/k8/v4/db', kernel: '32x32/8x4/k8/v4/db' },
  { name: 'thin rows, k8 double-buffered, default split (x_proj\'s form)', M: 700, I: 40, O: 44, variant: '48x64/4x8/k8/v4/db', kernel: '48x64/4x8/k8/v4/db' },
  { name: '8×4 blocks on 64×64 tiles, ragged, default split (in_proj\'s form)', M: 300, I: 36, O: 72, variant: '64x64/8x4/k16/v4', kernel: '64x64/8x4/k16/v4' },
  { name: '8×4 blocks on 64×64 tiles, k8 double-buffered, splits of 64 rows, lanes sum (out_proj\'s form)', M: 300, I: 72, O: 40, variant: '64x64/8x4/k8/v4/db', kernel: '64x64/8x4/k8/v4/db', splitRows: 64, sum: 'lanes' },
  { name: 'column slice (dt_proj), 4×4 blocks, splits of 64 rows, lanes sum (dt_proj\'s form)', M: 300, I: 12, O: 24, ldi: 44, variant: '128x16/4x4/k16/v4', kernel: '128x16/4x4/k16/v4', splitRows: 64, sum: 'lanes' },
];

/** The kernel a call of `op` with this case's shapes and strides would run (tensors just big enough). */
function kernelOf(gpu: Gpu, op: MatmulOp, c: Case): string {
  const t = (n: number) => zerosTensor(gpu, n);
  const inSide = t((c.inpOffset ?? 0) + (c.M - 1) * (c.ldi ?? c.I) + c.I + 3);
  const outSide = t((c.outOffset ?? 0) + (c.M - 1) * (c.ldo ?? c.O) + c.O + 2);
  const weight = t(c.O * c.I);
  const dims = { M: c.M, I: c.I, O: c.O, ...strideArgs(c) };
  if (op === 'forward') return matmulKernelFor(gpu, op, { ...dims, out: outSide, inp: inSide, weight, bias: null }).name;
  if (op === 'backward_input') return matmulKernelFor(gpu, op, { ...dims, dinp: inSide, dout: outSide, weight }).name;
  return matmulKernelFor(gpu, op, { ...dims, dweight: weight, dout: outSide, inp: inSide }).name;
}

/** The weight gradient's split count and sum for a case's shapes (default choice unless the case forces one). */
function weightOf(gpu: Gpu, c: Case): { splits?: number; sum?: string } {
  const t = (n: number) => zerosTensor(gpu, n);
  const k = matmulKernelFor(gpu, 'backward_weight', {
    M: c.M, I: c.I, O: c.O, ...strideArgs(c), splitRows: c.splitRows, sum: c.sum,
    dweight: t(c.O * c.I), dout: t((c.outOffset ?? 0) + (c.M - 1) * (c.ldo ?? c.O) + c.O), inp: t((c.inpOffset ?? 0) + (c.M - 1) * (c.ldi ?? c.I) + c.I),
  });
  return { splits: k.splits, sum: k.sum };
}

describe('parametrised tiles', () => {
  it('names and shapes: parse, print, reject', () => {
    for (const n of ['tile64', 'tile128', '128x64/8x8/k16/v4/db', '48x128/4x8/k32', '256x16/8x4/k8/v4']) {
      expect(matmulVariantName(parseMatmulVariant(n))).toBe(n);
    }
    expect(() => parseMatmulVariant('128x64')).toThrow(/expected a variant/);
    expect(() => parseMatmulVariant('128x64/8x6/k16')).toThrow(/block columns must be 4 or 8/);
    expect(() => parseMatmulVariant('100x64/8x8/k16')).toThrow(/multiple of the block/);
    expect(() => parseMatmulVariant('128x64/8x8/k10')).toThrow(/multiple of 4/);
    expect(() => parseMatmulVariant('128x128/4x4/k16')).toThrow(/1024 invocations/);
    expect(() => parseMatmulVariant('64x64/8x8/k64')).toThrow(/vec4s of the rows operand/);
    const v = parseMatmulVariant('128x64/8x8/k16/db') as TiledVariant;
    expect(tiledWorkgroupBytes(v)).toBe(16 * 2 * 16 * (33 + 17));
  });

  it('takes MATMUL_TUNED\'s entries as the defaults, and the size rule for problems it does not list', () => {
    for (const [key, entry] of Object.entries(MATMUL_TUNED)) { // every entry names a variant that exists
      expect(parseMatmulVariant(typeof entry === 'string' ? entry : entry.variant)).toBeDefined();
      expect(key).toMatch(/^(forward|backward_input|backward_weight):\d+x\d+$/);
    }
    expect(matmulDefault('forward', 16640, 384, 44).variant).toEqual(parseMatmulVariant(MATMUL_TUNED['forward:384x44'] as string));
    expect(matmulDefault('forward', 16640, 256, 1024).variant).toEqual({ kernel: 'tile128' }); // not listed
    expect(matmulDefault('forward', 16640, 64, 256).variant).toEqual({ kernel: 'tile128' }); // vim-nano's in_proj: the rule
    expect(matmulDefault('backward_input', 1000, 64, 256).variant).toEqual({ kernel: 'tile64' });
    // narrow input gradients (dt_proj's, I = R ≤ 16) take the rows kernel: vim-tiny's R = 12, vim-nano's 4
    expect(matmulDefault('backward_input', 16640, 12, 384).variant).toEqual({ kernel: 'rows' });
    expect(matmulDefault('backward_input', 1040, 4, 128).variant).toEqual({ kernel: 'rows' });
    expect(matmulDefault('backward_input', 1000, 17, 256).variant).toEqual({ kernel: 'tile64' });
    expect(matmulDefault('forward', 1000, 12, 384).variant).not.toEqual({ kernel: 'narrow' });
    expect(matmulBackwardWeightPlan(1040, 128, 36)).toEqual(matmulBackwardWeightPlan(1040, 128, 36, undefined, 64)); // vim-nano x_proj: the rule
  });

  it.each(TILED_FORWARD)('forward: $name ($variant)', async (c) => {
    const gpu = await testGpu();
    expect(kernelOf(gpu, 'forward', c)).toBe(c.kernel);
    await gpuForward(gpu, c, c.bias ?? false, c.accumulate ?? false, 61);
  });

  it.each(TILED_INPUT)('input gradient: $name ($variant)', async (c) => {
    const gpu = await testGpu();
    expect(kernelOf(gpu, 'backward_input', c)).toBe(c.kernel);
    await gpuBackwardInput(gpu, c, c.accumulate ?? false, 63);
  });

  it.each(TILED_WEIGHT)('weight gradient: $name ($variant)', async (c) => {
    const gpu = await testGpu();
    expect(kernelOf(gpu, 'backward_weight', c)).toBe(c.kernel);
    const plan = await gpuBackwardWeight(gpu, c, c.accumulate ?? false, c.splits, 65);
    if (c.splitRows) expect(plan.chunk).toBeLessThanOrEqual(c.splitRows);
    if (c.splits === undefined && c.splitRows === undefined) expect(plan.splits).toBeGreaterThan(1);
  });

  it('the split sums: vec4 gives the serial sum\'s bits, lanes the same bits run after run', async () => {
    const gpu = await testGpu();
    const c = { M: 300, I: 20, O: 28 };
    const rng = new Rng(67);
    const hDout = randArray(rng, c.M * c.O);
    const hInp = randArray(rng, c.M * c.I);
    const dout = tensorFrom(gpu, hDout, 'dout');
    const inp = tensorFrom(gpu, hInp, 'inp');
    const init = randArray(rng, c.O * c.I);
    const results: Float64Array[] = [];
    for (const sum of ['serial', 'vec4', 'lanes', 'lanes'] as const) {
      const dweight = tensorFrom(gpu, init, 'dweight');
      const list = matmulBackwardWeight(gpu, { dweight, dout, inp, ...c, accumulate: true, splits: 19, sum, variant: '32x16/4x4/k8/v4' });
      expect(list).toHaveLength(2);
      expect(list[1].workgroups[0]).toBe(Math.ceil((c.O * c.I) / { serial: 256, vec4: 1024, lanes: 32 }[sum]));
      await run(gpu, list);
      results.push(await read(gpu, dweight));
    }
    const ref = Float64Array.from(init);
    linear_backward(null, ref, null, hDout, hInp, new Float64Array(c.O * c.I), c.M, c.I, c.O);
    expect(Array.from(results[1])).toEqual(Array.from(results[0]));
    expect(Array.from(results[3])).toEqual(Array.from(results[2]));
    expect(relErr(results[2], ref)).toBeLessThan(TOL);
  });

  it('several weight gradients\' split sums in one dispatch: each with the bits of its own sum (plain, vec4, lanes; adding or not), their results in one buffer', async () => {
    const gpu = await testGpu();
    const rng = new Rng(68);
    const cases = [
      { M: 300, I: 20, O: 28, splits: 19, sum: 'serial' as const, accumulate: true, variant: '32x16/4x4/k8/v4' },
      { M: 300, I: 12, O: 24, ldi: 44, splitRows: 16, sum: 'lanes' as const, accumulate: false, variant: '128x16/4x4/k16/v4' },
      { M: 300, I: 20, O: 28, splits: 5, sum: 'vec4' as const, accumulate: true, variant: '32x16/4x4/k8/v4' },
      { M: 40, I: 20, O: 28, splits: 1, sum: 'serial' as const, accumulate: false, variant: '32x16/4x4/k8/v4' }, // no split: nothing to sum
    ];
    const data = cases.map((c) => ({
      dout: tensorFrom(gpu, randArray(rng, c.M * c.O), 'dout'),
      inp: tensorFrom(gpu, randArray(rng, c.M * (c.ldi ?? c.I)), 'inp'),
      init: randArray(rng, c.O * c.I),
    }));
    // each on its own, with its own sum dispatch
    const own: Float64Array[] = [];
    for (const [k, c] of cases.entries()) {
      const dweight = tensorFrom(gpu, data[k].init, 'dweight');
      await run(gpu, matmulBackwardWeight(gpu, { ...c, dweight, dout: data[k].dout, inp: data[k].inp }));
      own.push(await read(gpu, dweight));
    }
    // the results as views of one buffer at 256-byte steps, the sums deferred to one dispatch
    const at = (k: number) => 64 * cases.slice(0, k).reduce((t, c) => t + Math.ceil((c.O * c.I) / 64), 0);
    const flat = zerosTensor(gpu, at(cases.length), 'flat');
    for (const k of cases.keys()) upload(gpu, flat, data[k].init, at(k));
    const view = (k: number) => ({ buffer: flat.buffer, offset: 4 * at(k), size: 4 * cases[k].O * cases[k].I, label: `dweight ${k}` });
    const plans = cases.map((c) => matmulBackwardWeightPlan(c.M, c.I, c.O, c.splits, c.variant, c.splitRows));
    const ws = new WeightSums(zerosTensor(gpu, weightSumsElements(plans.map((p) => p.scratchElements)), 'weight partials'));
    const list = cases.flatMap((c, k) => matmulBackwardWeight(gpu, { ...c, dweight: view(k), dout: data[k].dout, inp: data[k].inp, sums: ws }));
    expect(list).toHaveLength(cases.length); // no sum dispatches of their own
    expect(ws.rows).toHaveLength(3);
    expect(() => weightSumsDispatch(gpu, { ...ws, rows: [...ws.rows] } as WeightSums, zerosTensor(gpu, 17, 'short table')))
      .toThrow(/short table holds 17 elements, the table of 3 gradients needs 21/);
    const table = zerosTensor(gpu, 64 + 21, 'tables');
    const sums = weightSumsDispatch(gpu, ws, { ...table, offset: 256, size: 4 * 21, label: 'table' });
    expect(sums).toHaveLength(1);
    expect(sums[0].workgroups[0]).toBe(Math.ceil(560 / 256) + Math.ceil(288 / 32) + Math.ceil(560 / 256));
    expect(ws.rows).toHaveLength(0);
    expect(weightSumsDispatch(gpu, ws)).toEqual([]);
    await run(gpu, [...list, ...sums]);
    for (const [k, c] of cases.entries()) {
      const got = Float64Array.from(await download(gpu, flat, c.O * c.I, at(k)));
      expect(Array.from(got), `case ${k}`).toEqual(Array.from(own[k]));
    }
    const ref = Float64Array.from(data[1].init);
    const hInp = await read(gpu, data[1].inp);
    const hDout = await read(gpu, data[1].dout);
    const cols = Float64Array.from({ length: 300 * 12 }, (_, i) => hInp[Math.floor(i / 12) * 44 + (i % 12)]);
    ref.fill(0);
    linear_backward(null, ref, null, hDout, cols, new Float64Array(24 * 12), 300, 12, 24);
    expect(relErr(own[1], ref)).toBeLessThan(TOL);
  });
  it('refuses weight sums whose results lie in two buffers, and partials too small for the gradients recorded', async () => {
    const gpu = await testGpu();
    const c = { M: 300, I: 20, O: 28, splits: 19, variant: '32x16/4x4/k8/v4' };
    const dout = zerosTensor(gpu, c.M * c.O, 'dout');
    const inp = zerosTensor(gpu, c.M * c.I, 'inp');
    const need = matmulBackwardWeightPlan(c.M, c.I, c.O, c.splits, c.variant).scratchElements;
    const ws = new WeightSums(zerosTensor(gpu, 2 * need + 64, 'weight partials'));
    matmulBackwardWeight(gpu, { ...c, dweight: zerosTensor(gpu, c.O * c.I, 'dweight a'), dout, inp, sums: ws });
    matmulBackwardWeight(gpu, { ...c, dweight: zerosTensor(gpu, c.O * c.I, 'dweight b'), dout, inp, sums: ws });
    expect(() => weightSumsDispatch(gpu, ws)).toThrow(/dweight b is not in the buffer of dweight a/);
    const small = new WeightSums(zerosTensor(gpu, need - 1, 'small partials'));
    expect(() => matmulBackwardWeight(gpu, { ...c, dweight: zerosTensor(gpu, c.O * c.I, 'dweight'), dout, inp, sums: small }))
      .toThrow(new RegExp(`small partials holds ${need - 1} f32, the weight sums recorded need ${need}`));
  });

  it("another op's partials in weight sums: regions after the gradients', a row a column range with the row's stride", async () => {
    const gpu = await testGpu();
    const ws = new WeightSums(zerosTensor(gpu, 64 + 3 * 70, 'weight partials'));
    ws.used = 64;
    const flat = zerosTensor(gpu, 128, 'flat');
    const view = (at: number, n: number) => ({ buffer: flat.buffer, offset: 4 * at, size: 4 * n, label: `g${at}` });
    const region = weightSumsRegion(ws, 'op', 3, 70, [{ dst: view(0, 50), at: 0, n: 50 }, { dst: view(64, 20), at: 50, n: 20 }], true);
    expect([region.offset, region.size, ws.used]).toEqual([4 * 64, 4 * 210, 64 + 256]);
    expect(ws.rows.map((r) => [r.src, r.n, r.splits, r.stride, r.accumulate, r.lanes])).toEqual([[64, 50, 3, 70, true, false], [114, 20, 3, 70, true, false]]);
    expect(() => weightSumsRegion(new WeightSums(zerosTensor(gpu, 209, 'small')), 'op', 3, 70, [], false))
      .toThrow(/op: small holds 209 f32, the weight sums recorded need 210/);
    expect(() => weightSumsRegion(new WeightSums(zerosTensor(gpu, 210, 'p')), 'op', 3, 70, [{ dst: view(0, 30), at: 50, n: 30 }], false))
      .toThrow(/op: columns 50…79 of g0 are outside the 70 of a partial row/);
    // the sums: Σ over the 3 rows of each range, added to the gradients' present values
    const part = Float32Array.from({ length: 210 }, (_, i) => ((i * 7) % 13) - 6);
    gpu.queue.writeBuffer(region.buffer, region.offset, part);
    const init = Float32Array.from({ length: 128 }, (_, i) => i);
    gpu.queue.writeBuffer(flat.buffer, 0, init);
    await run(gpu, weightSumsDispatch(gpu, ws));
    const got = await read(gpu, flat);
    const want = Float64Array.from(init);
    for (let r = 0; r < 3; r++) {
      for (let i = 0; i < 50; i++) want[i] += part[r * 70 + i];
      for (let i = 0; i < 20; i++) want[64 + i] += part[r * 70 + 50 + i];
    }
    expect(Array.from(got)).toEqual(Array.from(want));
  });

  it('MATMUL_TUNED entries become the default, and fall back to the size rule where they cannot run', async () => {
    const gpu = await testGpu();
    const tuned = MATMUL_TUNED as Record<string, MatmulTunedEntry>;
    tuned['forward:20x28'] = '32x16/4x4/k8/v4';
    tuned['backward_weight:20x23'] = { variant: '32x16/4x4/k8/v4/db', splitRows: 64, sum: 'lanes' };
    try {
      const fwd: Case = { name: 'tuned forward', M: 37, I: 20, O: 28 };
      expect(kernelOf(gpu, 'forward', fwd)).toBe('32x16/4x4/k8/v4');
      await gpuForward(gpu, fwd, true, false, 71);
      // a result row stride that is not a multiple of 4: the tuned kernel cannot store it
      const odd: Case = { ...fwd, name: 'tuned forward, odd stride', ldo: 29 };
      expect(kernelOf(gpu, 'forward', odd)).toBe('tile64');
      await gpuForward(gpu, odd, false, false, 72);
      // the weight gradient: the tuned split (ceil(300 / 64) = 5 splits) and sum
      const w: Case = { name: 'tuned weight', M: 300, I: 20, O: 23, ldi: 24 };
      const plan = matmulBackwardWeightPlan(w.M, w.I, w.O);
      expect(plan.splits).toBe(5);
      expect(plan.scratchElements).toBeGreaterThanOrEqual(matmulBackwardWeightPlan(w.M, w.I, w.O, undefined, 64).scratchElements);
      expect(kernelOf(gpu, 'backward_weight', w)).toBe('32x16/4x4/k8/v4b/db'); // dout (O = 23) is loaded as f32s
      expect(weightOf(gpu, w)).toEqual({ splits: 5, sum: 'lanes' });
      await gpuBackwardWeight(gpu, w, true, undefined, 73);
    } finally {
      delete tuned['forward:20x28'];
      delete tuned['backward_weight:20x23'];
    }
  });

  it('VIM_MATMUL_TUNED names a file whose entries take the place of MATMUL_TUNED', () => {
    const dir = mkdtempSync(join(tmpdir(), 'vim-tuned-'));
    try {
      withEnv('VIM_MATMUL_TUNED', () => {
        const file = join(dir, 'matmul.json'); // the harness's --json output: entries under `tuned`
        writeFileSync(file, JSON.stringify({ problems: [], tuned: { 'forward:192x768': '64x64/4x4/k16/v4', 'backward_weight:384x44': { variant: 'tile64', splitRows: 128, sum: 'lanes' } } }));
        process.env.VIM_MATMUL_TUNED = file;
        expect(matmulDefault('forward', 16640, 192, 768).variant).toEqual(parseMatmulVariant('64x64/4x4/k16/v4'));
        expect(matmulDefault('backward_weight', 16640, 384, 44)).toEqual({ variant: { kernel: 'tile64' }, splitRows: 128, sum: 'lanes' });
        expect(matmulDefault('forward', 16640, 384, 44).variant).toEqual({ kernel: 'tile64' }); // not listed: the size rule
        const bad = join(dir, 'bad.json');
        writeFileSync(bad, JSON.stringify({ 'forward:192x768': 'tile96' }));
        process.env.VIM_MATMUL_TUNED = bad;
        expect(() => matmulDefault('forward', 16640, 192, 768)).toThrow(/tile96/);
        writeFileSync(bad, JSON.stringify({ forward: '128x64/8x4/k16/v4' }));
        expect(() => matmulDefault('forward', 16640, 192, 768)).toThrow(/VIM_MATMUL_TUNED: .*'forward' is not of the form/);
        writeFileSync(bad, JSON.stringify({ 'backward_weight:384x44': { variant: 'tile64', sum: 'fast' } }));
        expect(() => matmulDefault('forward', 16640, 192, 768)).toThrow(/VIM_MATMUL_TUNED: .*sum must be one of serial, vec4, lanes/);
        writeFileSync(bad, JSON.stringify({ 'forward:192x768': { variant: 'tile64', splitRows: 64 } }));
        expect(() => matmulDefault('forward', 16640, 192, 768)).toThrow(/VIM_MATMUL_TUNED: .*splitRows and sum are for weight gradients/);
        process.env.VIM_MATMUL_TUNED = join(dir, 'missing.json');
        expect(() => matmulDefault('forward', 16640, 192, 768)).toThrow(/VIM_MATMUL_TUNED: cannot read .*missing\.json/);
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses what the kernel cannot do, naming the reason', async () => {
    const gpu = await testGpu();
    const t = zerosTensor(gpu, 4000);
    const base = { out: t, inp: t, weight: t, bias: null, M: 37, I: 20 };
    expect(() => matmulForward(gpu, { ...base, O: 23, variant: '32x16/4x4/k8' })).toThrow(/multiples of 4/);
    expect(() => matmulForward(gpu, { ...base, O: 28, variant: '128x128/8x8/k64/db' })).toThrow(/workgroup memory/);
    expect(() => matmulForward(gpu, { ...base, O: 28, tile: 64, variant: 'tile64' })).toThrow(/tile or variant/);
    expect(() => matmulForward(gpu, { ...base, O: 28, variant: 'tile96' })).toThrow(/expected a variant/);
    expect(() => matmulBackwardWeight(gpu, { dweight: t, dout: t, inp: t, M: 37, I: 20, O: 28, splits: 2, splitRows: 16 })).toThrow(/splits or splitRows/);
    expect(() => matmulBackwardWeight(gpu, { dweight: t, dout: t, inp: t, M: 37, I: 19, O: 23, splits: 2, sum: 'vec4' })).toThrow(/multiple of 4/);
    expect(() => matmulBackwardWeight(gpu, { dweight: t, dout: t, inp: t, M: 37, I: 20, O: 28, splits: 2, sum: 'tree' as MatmulSum })).toThrow(/sum must be/);
  });
});

// The narrow input-gradient kernel (matmul.wgsl's matmul_backward_input_narrow): 32 slices of the
// reduction over O per row, 16 rows per workgroup, weight staged in chunks of 256 rows o. The cases
// take dt_proj's column slice with offsets (with and without accumulate) and two chunks of O, a
// ragged last workgroup, I not a multiple of 4, O not a multiple of the slices or smaller than
// them, and I = 16 and 1.
const NARROW_INPUT: (Case & { accumulate?: boolean })[] = [
  { name: 'dt_proj slice (I = 12 of 44 columns), offsets, two chunks of O', M: 37, I: 12, O: 300, ldi: 44, inpOffset: 5, ldo: 303, outOffset: 2 },
  { name: 'the same, accumulating', M: 37, I: 12, O: 300, ldi: 44, inpOffset: 5, ldo: 303, outOffset: 2, accumulate: true },
  { name: 'I not a multiple of 4, O not a multiple of the slices', M: 21, I: 5, O: 37, ldi: 7, inpOffset: 1 },
  { name: 'I = 16, ragged M, accumulating', M: 50, I: 16, O: 40, accumulate: true },
  { name: 'I = 1, O smaller than the slices', M: 19, I: 1, O: 9, ldi: 3, inpOffset: 2 },
];

describe('narrow input gradient', () => {
  it.each(NARROW_INPUT)('$name', async (c) => {
    const gpu = await testGpu();
    const n = { ...c, variant: 'narrow' };
    expect(kernelOf(gpu, 'backward_input', n)).toBe('narrow');
    await gpuBackwardInput(gpu, n, c.accumulate ?? false, 81);
  });

  it('one workgroup per 16 rows; the same bits run after run', async () => {
    const gpu = await testGpu();
    const c = { M: 21, I: 5, O: 37, ldi: 7, inpOffset: 1 }; // a case above: its pipeline is built
    const rng = new Rng(83);
    const dout = tensorFrom(gpu, randArray(rng, c.M * c.O), 'dout');
    const weight = tensorFrom(gpu, randArray(rng, c.O * c.I), 'weight');
    const results: Float64Array[] = [];
    for (let k = 0; k < 2; k++) {
      const dinp = zerosTensor(gpu, c.inpOffset + c.M * c.ldi, 'dinp');
      const d = matmulBackwardInput(gpu, { dinp, dout, weight, ...c, variant: 'narrow' });
      expect(d.workgroups).toEqual([1, 2, 1]);
      await run(gpu, [d]);
      results.push(await read(gpu, dinp));
    }
    expect(Array.from(results[1])).toEqual(Array.from(results[0]));
  });

  it('parses and prints as "narrow"', () => {
    expect(parseMatmulVariant('narrow')).toEqual({ kernel: 'narrow' });
    expect(matmulVariantName({ kernel: 'narrow' })).toBe('narrow');
    expect(() => parseMatmulVariant('narrow16')).toThrow(/"narrow"/);
  });

  it('refuses to run what it cannot, naming why', async () => {
    const gpu = await testGpu();
    const t = zerosTensor(gpu, 4000);
    const I = NARROW_MAX_I + 1;
    expect(() => matmulBackwardInput(gpu, { dinp: t, dout: t, weight: t, M: 37, I, O: 24, variant: 'narrow' }))
      .toThrow(new RegExp(`variant narrow cannot run backward_input M=37 I=${I} O=24: I = ${I} columns, at most ${NARROW_MAX_I}`));
    expect(() => matmulForward(gpu, { out: t, inp: t, weight: t, bias: null, M: 37, I: 12, O: 24, variant: 'narrow' }))
      .toThrow(/variant narrow cannot run forward .*only the input gradient/);
    expect(() => matmulBackwardWeight(gpu, { dweight: t, dout: t, inp: t, M: 37, I: 12, O: 24, variant: { kernel: 'narrow' } }))
      .toThrow(/variant narrow cannot run backward_weight .*only the input gradient/);
    expect(() => matmulBackwardWeightPlan(37, 12, 24, undefined, 'narrow')).toThrow(/narrow cannot run backward_weight/);
  });

  it('as a tuned entry (VIM_MATMUL_TUNED) it becomes the default, and the size rule runs where it cannot', async () => {
    const gpu = await testGpu();
    const dir = mkdtempSync(join(tmpdir(), 'vim-tuned-'));
    try {
      await withEnv('VIM_MATMUL_TUNED', async () => {
        const file = join(dir, 'narrow.json');
        writeFileSync(file, JSON.stringify({
          'backward_input:12x24': 'narrow', 'forward:12x24': 'narrow', 'backward_weight:12x24': 'narrow', 'backward_input:20x24': 'narrow',
        }));
        process.env.VIM_MATMUL_TUNED = file;
        const c: Case = { name: 'tuned narrow', M: 37, I: 12, O: 24, ldi: 44, inpOffset: 3 };
        expect(matmulDefault('backward_input', c.M, c.I, c.O).variant).toEqual({ kernel: 'narrow' });
        expect(kernelOf(gpu, 'backward_input', c)).toBe('narrow');
        await gpuBackwardInput(gpu, c, true, 85);
        // another op: the size rule's kernel, saying why
        const t = zerosTensor(gpu, 4000);
        const fwd = matmulKernelFor(gpu, 'forward', { out: t, inp: t, weight: t, bias: null, M: 37, I: 12, O: 24 });
        expect(fwd).toEqual({ name: 'tile64', fallback: 'narrow: it computes only the input gradient (backward_input)' });
        // the weight gradient: the size rule's kernel, split and scratch
        expect(kernelOf(gpu, 'backward_weight', c)).toBe('tile64');
        expect(matmulBackwardWeightPlan(300, 12, 24)).toEqual(matmulBackwardWeightPlan(300, 12, 24, undefined, 64));
        await gpuBackwardWeight(gpu, { ...c, M: 300 }, false, undefined, 87);
        // a result wider than it computes
        const wide = matmulKernelFor(gpu, 'backward_input', { dinp: t, dout: t, weight: t, M: 37, I: 20, O: 24 });
        expect(wide).toEqual({ name: 'tile64', fallback: `narrow: I = 20 columns, at most ${NARROW_MAX_I}` });
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

// The rows input-gradient kernel (kernels/matmul-rows.wgsl): each row's reduction over O taken by
// one subgroup's lanes, 4 rows at a time, dout read as vec4s, the lanes' sums added by halving
// shuffles (on lavapipe's subgroups of 8, rows and components halved once each). The cases take
// dt_proj's column slice with offsets at O = 384 (12 vec4s a lane on 8 lanes), with and without
// accumulate, I not a multiple of 4 with idle lanes past O, I = 16 (four products a vec4 of dout),
// I = 1 with O = 4 (one vec4 a row), ragged M, and other shapes of the workgroup
// ($VIM_MATMUL_ROWS: three batches a subgroup, two subgroups; one batch, one subgroup).
const ROWS_INPUT: (Case & { accumulate?: boolean; shape?: string })[] = [
  { name: 'dt_proj slice (I = 12 of 44 columns), offsets, O = 384', M: 37, I: 12, O: 384, ldi: 44, inpOffset: 5, ldo: 388, outOffset: 4 },
  { name: 'the same, accumulating', M: 37, I: 12, O: 384, ldi: 44, inpOffset: 5, ldo: 388, outOffset: 4, accumulate: true },
  { name: 'I not a multiple of 4, O not a multiple of the lanes', M: 21, I: 5, O: 36, ldi: 7, inpOffset: 1 },
  { name: 'I = 16, ragged M, accumulating', M: 50, I: 16, O: 40, accumulate: true },
  { name: 'I = 1, O = 4', M: 19, I: 1, O: 4, ldi: 3, inpOffset: 2 },
  { name: 'three batches a subgroup, two subgroups', M: 37, I: 12, O: 40, ldi: 44, shape: '3x2' },
  { name: 'one batch, one subgroup, accumulating', M: 37, I: 7, O: 24, shape: '1x1', accumulate: true },
];

describe('rows input gradient', () => {
  it.each(ROWS_INPUT)('$name', async (c) => {
    const gpu = await testGpu();
    await withEnv('VIM_MATMUL_ROWS', async () => {
      if (c.shape) process.env.VIM_MATMUL_ROWS = c.shape;
      else delete process.env.VIM_MATMUL_ROWS;
      expect(kernelOf(gpu, 'backward_input', c)).toBe('rows'); // the default for results of ≤ 16 columns
      await gpuBackwardInput(gpu, { ...c, variant: 'rows' }, c.accumulate ?? false, 91);
    });
  });

  it('one workgroup per NSG · RB · RIT rows; the same bits run after run', async () => {
    const gpu = await testGpu();
    const c = { M: 37, I: 12, O: 384, ldi: 44, inpOffset: 5, ldo: 388, outOffset: 4 }; // a case above: its pipeline is built
    const rng = new Rng(93);
    const dout = tensorFrom(gpu, randArray(rng, c.outOffset + c.M * c.ldo), 'dout');
    const weight = tensorFrom(gpu, randArray(rng, c.O * c.I), 'weight');
    const results: Float64Array[] = [];
    for (let k = 0; k < 2; k++) {
      const dinp = zerosTensor(gpu, c.inpOffset + c.M * c.ldi, 'dinp');
      const d = matmulBackwardInput(gpu, { dinp, dout, weight, ...c, variant: 'rows' });
      expect(d.workgroups).toEqual([1, 1, 1]); // 8 subgroups × 2 batches × 4 rows = 64 rows
      await run(gpu, [d]);
      results.push(await read(gpu, dinp));
    }
    expect(Array.from(results[1])).toEqual(Array.from(results[0]));
  });

  it('parses and prints as "rows"; refuses what it cannot run, and the default falls back to narrow', async () => {
    expect(parseMatmulVariant('rows')).toEqual({ kernel: 'rows' });
    expect(matmulVariantName({ kernel: 'rows' })).toBe('rows');
    expect(matmulDefault('backward_input', 16640, 12, 384).variant).toEqual({ kernel: 'rows' });
    const gpu = await testGpu();
    const t = zerosTensor(gpu, 4000);
    expect(() => matmulBackwardInput(gpu, { dinp: t, dout: t, weight: t, M: 37, I: 12, O: 37, variant: 'rows' }))
      .toThrow(/variant rows cannot run backward_input M=37 I=12 O=37: dout is read as vec4s/);
    expect(() => matmulBackwardInput(gpu, { dinp: t, dout: t, weight: t, M: 37, I: 17, O: 24, variant: 'rows' }))
      .toThrow(/variant rows cannot run backward_input M=37 I=17 O=24: I = 17 columns/);
    expect(() => matmulForward(gpu, { out: t, inp: t, weight: t, bias: null, M: 37, I: 12, O: 24, variant: 'rows' }))
      .toThrow(/variant rows cannot run forward .*only the input gradient/);
    expect(() => matmulBackwardWeightPlan(37, 12, 24, undefined, 'rows')).toThrow(/rows cannot run backward_weight/);
    // dout misaligned: the default's rows kernel cannot read it as vec4s, the narrow one runs it
    expect(matmulKernelFor(gpu, 'backward_input', { dinp: t, dout: t, weight: t, M: 37, I: 12, O: 37 }))
      .toEqual({ name: 'narrow', fallback: 'rows: dout is read as vec4s: O, its row stride and offset must be multiples of 4' });
    await withEnv('VIM_MATMUL_ROWS', () => {
      process.env.VIM_MATMUL_ROWS = '4x2x8';
      expect(() => matmulKernelFor(gpu, 'backward_input', { dinp: t, dout: t, weight: t, M: 37, I: 12, O: 24 })).toThrow(/VIM_MATMUL_ROWS must be RITxNSG/);
      process.env.VIM_MATMUL_ROWS = '1x2048'; // more invocations a workgroup than the adapter allows
      expect(matmulKernelFor(gpu, 'backward_input', { dinp: t, dout: t, weight: t, M: 37, I: 12, O: 24 }).name).toBe('narrow');
    });
  });
});

// The skinny forward (x_proj's R + 2N = 44 columns): 64-row blocks, chunks of 16 vec4s of I split
// in four slices of 4 (a short last chunk leaves slices partly or wholly idle), ragged rows
// (clamped, never stored), strides and offsets, bias and accumulation, results of 1 to 64 columns
// (outputs o ≡ g mod 4 shared unevenly by the 4 output groups; weight rows copied 16 a pass).
const SKINNY_FORWARD: (Case & { bias?: boolean; accumulate?: boolean })[] = [
  { name: 'x_proj-like (O = 44), two chunks of I, the last short, ragged M, bias', M: 70, I: 88, O: 44, bias: true },
  { name: "x_proj's I = 384 (six full chunks), O = 44, M = 1, bias, accumulating", M: 1, I: 384, O: 44, bias: true, accumulate: true },
  { name: 'strided rows with offsets, accumulating, O not a multiple of 4', M: 37, I: 20, O: 13, ldi: 24, inpOffset: 4, ldo: 17, outOffset: 3, accumulate: true },
  { name: 'O = 40, strided, two chunks, the last one vec4, one row past two workgroups', M: 129, I: 68, O: 40, ldi: 76, inpOffset: 8, ldo: 41, outOffset: 5 },
  { name: 'O = 12, I one vec4 short of a chunk, accumulating', M: 50, I: 60, O: 12, accumulate: true },
  { name: 'O = 64 (the widest), three chunks, one row short of two workgroups', M: 127, I: 132, O: 64 },
  { name: 'O = 1, one step of I', M: 65, I: 4, O: 1, bias: true },
];

// The skinny input gradient: 64-row × 64-column blocks with a short last column block, ragged
// rows, strides and offsets, accumulation, reductions of 1 to 64 (O not a multiple of 4: dout's
// last quad padded with zeros).
const SKINNY_INPUT: (Case & { accumulate?: boolean })[] = [
  { name: 'x_proj-like (O = 44), five column blocks, the last short, ragged M', M: 70, I: 264, O: 44 },
  { name: "x_proj's I = 384 (six column blocks), O = 44, M = 1, accumulating", M: 1, I: 384, O: 44, accumulate: true },
  { name: 'strided rows with offsets, accumulating, O not a multiple of 4', M: 37, I: 20, O: 13, ldi: 24, inpOffset: 4, ldo: 17, outOffset: 3, accumulate: true },
  { name: 'O = 40, strided, one row short of two workgroups, a column block of one vec4', M: 127, I: 68, O: 40, ldi: 76, inpOffset: 8, ldo: 41, outOffset: 5 },
  { name: 'O = 12, one row past a workgroup, accumulating', M: 65, I: 36, O: 12, accumulate: true },
  { name: 'O = 64 (the most), one row short of a workgroup', M: 63, I: 128, O: 64, accumulate: true },
  { name: 'O = 1', M: 33, I: 4, O: 1 },
];

/** gpu with its workgroup-memory limit replaced (for what the skinny kernels ask of an adapter). */
function withWorkgroupBytes(gpu: Gpu, bytes: number): Gpu {
  const l = gpu.limits;
  const limits = {
    maxComputeWorkgroupStorageSize: bytes,
    maxComputeInvocationsPerWorkgroup: l.maxComputeInvocationsPerWorkgroup,
    maxComputeWorkgroupsPerDimension: l.maxComputeWorkgroupsPerDimension,
  } as GPUSupportedLimits;
  return { ...gpu, limits };
}

describe('skinny forward and input gradient', () => {
  it.each(SKINNY_FORWARD)('$name', async (c) => {
    const gpu = await testGpu();
    const n = { ...c, variant: 'skinny' };
    expect(kernelOf(gpu, 'forward', n)).toBe('skinny');
    await gpuForward(gpu, n, c.bias ?? false, c.accumulate ?? false, 91);
  });

  it('one workgroup per 64 rows; parses and prints as "skinny"', () => {
    expect(parseMatmulVariant('skinny')).toEqual({ kernel: 'skinny' });
    expect(matmulVariantName({ kernel: 'skinny' })).toBe('skinny');
    return testGpu().then((gpu) => {
      const t = zerosTensor(gpu, 20000);
      const d = matmulForward(gpu, { out: t, inp: t, weight: t, bias: null, M: 127, I: 132, O: 64, variant: 'skinny' });
      expect(d.workgroups).toEqual([1, 2, 1]);
    });
  });

  it.each(SKINNY_INPUT)('input gradient: $name', async (c) => {
    const gpu = await testGpu();
    const n = { ...c, variant: 'skinny' };
    expect(kernelOf(gpu, 'backward_input', n)).toBe('skinny');
    await gpuBackwardInput(gpu, n, c.accumulate ?? false, 93);
  });

  it('input gradient: one workgroup per 64 rows and 64 columns', async () => {
    const gpu = await testGpu();
    const t = zerosTensor(gpu, 20000);
    const d = matmulBackwardInput(gpu, { dinp: t, dout: t, weight: t, M: 70, I: 264, O: 44, variant: 'skinny' });
    expect(d.workgroups).toEqual([5, 2, 1]);
  });

  it('fits 32 KiB of workgroup memory up to SKINNY_MAX_O, and names its need where less', async () => {
    const gpu = await testGpu();
    const t = zerosTensor(gpu, 40000);
    const fwd = (g: Gpu, O: number) => matmulKernelFor(g, 'forward', { out: t, inp: t, weight: t, bias: null, M: 64, I: 384, O, variant: 'skinny' }).name;
    const bwd = (g: Gpu, O: number) => matmulKernelFor(g, 'backward_input', { dinp: t, dout: t, weight: t, M: 64, I: 384, O, variant: 'skinny' }).name;
    const k32 = withWorkgroupBytes(gpu, 32768);
    expect(fwd(k32, SKINNY_MAX_O)).toBe('skinny');
    expect(bwd(k32, SKINNY_MAX_O)).toBe('skinny');
    // x_proj's O = 44: 16 KiB of inp and 44 · 256 bytes of weight; 11 KiB of dout and 11 KiB of weight
    const k16 = withWorkgroupBytes(gpu, 16384);
    expect(() => fwd(k16, 44)).toThrow(/27648 bytes of workgroup memory exceed the adapter's 16384/);
    expect(() => bwd(k16, 44)).toThrow(/22528 bytes of workgroup memory exceed the adapter's 16384/);
  });

  it('refuses to run what it cannot, naming why', async () => {
    const gpu = await testGpu();
    const t = zerosTensor(gpu, 20000);
    const O = SKINNY_MAX_O + 1;
    expect(() => matmulForward(gpu, { out: t, inp: t, weight: t, bias: null, M: 37, I: 20, O, variant: 'skinny' }))
      .toThrow(new RegExp(`variant skinny cannot run forward M=37 I=20 O=${O}: O = ${O} outputs, at most ${SKINNY_MAX_O}`));
    expect(() => matmulForward(gpu, { out: t, inp: t, weight: t, bias: null, M: 37, I: 18, O: 12, variant: 'skinny' }))
      .toThrow(/variant skinny cannot run forward .*inp is read as vec4s/);
    expect(() => matmulBackwardInput(gpu, { dinp: t, dout: t, weight: t, M: 37, I: 18, O: 12, variant: 'skinny' }))
      .toThrow(/variant skinny cannot run backward_input .*dinp is stored as vec4s/);
    expect(() => matmulBackwardInput(gpu, { dinp: t, dout: t, weight: t, M: 37, I: 20, O, variant: 'skinny' }))
      .toThrow(/variant skinny cannot run backward_input .*at most/);
    expect(() => matmulBackwardWeight(gpu, { dweight: t, dout: t, inp: t, M: 37, I: 20, O: 12, variant: 'skinny' }))
      .toThrow(/variant skinny cannot run backward_weight/);
    expect(() => matmulBackwardWeightPlan(37, 20, 12, undefined, 'skinny')).toThrow(/skinny cannot run backward_weight/);
  });
});

// Batches (MatmulBatch): Z problems of one shape in one dispatch, problem z's operands z · stride
// elements further in the same tensors, on every kernel that takes them. Each problem must come
// out with the bits of its own call (the same kernel on the same operands), near float64, and
// nothing else in the tensors may change.
describe('batches: several problems in one dispatch', () => {
  const Z = 3;
  // dt_proj's strided input (ldi), offsets and strides that keep the vec4 loads; the weight stride a
  // multiple of 64 elements, so that each problem's weight can be bound on its own for the single calls
  const c = { M: 37, I: 12, O: 24, ldi: 16, ldo: 28, inpOffset: 4, outOffset: 8 };
  const zs = { inp: c.M * c.ldi + 20, out: c.M * c.ldo + 12, weight: 320 };
  const kernels: { name: string; k: { tile?: MatmulTile; variant?: string }; ops: MatmulOp[] }[] = [
    { name: 'tile64', k: { tile: 64 }, ops: ['forward', 'backward_input', 'backward_weight'] },
    { name: 'tile128', k: { tile: 128 }, ops: ['forward', 'backward_input', 'backward_weight'] },
    { name: 'tiled 32x16/4x4/k8/v4/db', k: { variant: '32x16/4x4/k8/v4/db' }, ops: ['forward', 'backward_input', 'backward_weight'] },
    { name: 'narrow', k: { variant: 'narrow' }, ops: ['backward_input'] },
    { name: 'rows', k: { variant: 'rows' }, ops: ['backward_input'] },
  ];
  const cases = kernels.flatMap((kk) => kk.ops.map((op) => ({ ...kk, op })));
  /** The (M, cols) matrix at `off` with row stride `ld`, dense. */
  const rows = (buf: ArrayLike<number>, off: number, ld: number, cols: number) =>
    Float64Array.from({ length: c.M * cols }, (_, j) => buf[off + Math.floor(j / cols) * ld + (j % cols)]);

  it.each(cases)('$op, $name: each problem with the bits of its own call', async ({ k, op }) => {
    const gpu = await testGpu();
    const rng = new Rng(131);
    const inpN = c.inpOffset + (Z - 1) * zs.inp + c.M * c.ldi;
    const outN = c.outOffset + (Z - 1) * zs.out + c.M * c.ldo;
    const hInp = randArray(rng, inpN + 5);
    const hOut = randArray(rng, outN + 3);
    const hW = randArray(rng, (Z - 1) * zs.weight + c.O * c.I + 7);
    const wView = (t: GpuTensor, z: number) => ({ ...t, offset: t.offset + 4 * z * zs.weight, size: 4 * c.O * c.I });
    const batch = { count: Z, ...zs };
    const accumulate = op === 'backward_input'; // x_proj's input gradient adds to du
    if (op === 'forward' || op === 'backward_input') {
      const fwd = op === 'forward';
      const mk = () => ({ inp: tensorFrom(gpu, hInp, 'inp'), out: tensorFrom(gpu, hOut, 'out'), w: tensorFrom(gpu, hW, 'weight') });
      const call = (t: ReturnType<typeof mk>, extra: object) => (fwd
        ? matmulForward(gpu, { out: t.out, inp: t.inp, weight: t.w, bias: null, ...c, ...k, ...extra })
        : matmulBackwardInput(gpu, { dinp: t.inp, dout: t.out, weight: t.w, accumulate, ...c, ...k, ...extra }));
      const all = mk();
      const d = call(all, { batch });
      expect(d.workgroups[2]).toBe(Z);
      await run(gpu, [d]);
      const result = fwd ? all.out : all.inp;
      const got = await read(gpu, result);
      const one = mk();
      for (let z = 0; z < Z; z++) {
        await run(gpu, [call({ ...one, w: wView(one.w, z) }, { inpOffset: c.inpOffset + z * zs.inp, outOffset: c.outOffset + z * zs.out })]);
      }
      const each = await read(gpu, fwd ? one.out : one.inp);
      expect(Array.from(got), 'the whole tensor: each problem as its own call, the rest untouched').toEqual(Array.from(each));
      // float64: problem Z − 1
      const z = Z - 1;
      const w = hW.subarray(z * zs.weight, z * zs.weight + c.O * c.I);
      if (fwd) {
        const ref = new Float64Array(c.M * c.O);
        linear_forward(ref, rows(hInp, c.inpOffset + z * zs.inp, c.ldi, c.I), w, null, c.M, c.I, c.O);
        expect(relErr(rows(got, c.outOffset + z * zs.out, c.ldo, c.O), ref)).toBeLessThan(TOL);
      } else {
        const ref = rows(hInp, c.inpOffset + z * zs.inp, c.ldi, c.I);
        linear_backward(ref, new Float64Array(c.O * c.I), null, rows(hOut, c.outOffset + z * zs.out, c.ldo, c.O), new Float64Array(c.M * c.I), w, c.M, c.I, c.O);
        expect(relErr(rows(got, c.inpOffset + z * zs.inp, c.ldi, c.I), ref)).toBeLessThan(TOL);
      }
    } else {
      const inp = tensorFrom(gpu, hInp, 'inp');
      const dout = tensorFrom(gpu, hOut, 'dout');
      const init = randArray(rng, c.O * c.I);
      // the sums of one dispatch land in one buffer: the problems' dweights as views of one tensor, 256 bytes apart
      const step = 64 * Math.ceil((c.O * c.I) / 64);
      const flat = zerosTensor(gpu, Z * step, 'dweights');
      const dweights = Array.from({ length: Z }, (_, z) => {
        upload(gpu, flat, init, z * step);
        return { buffer: flat.buffer, offset: 4 * z * step, size: 4 * c.O * c.I, label: `dweight ${z}` };
      });
      const plan = matmulBackwardWeightPlan(c.M, c.I, c.O, 3, k.tile ?? k.variant);
      const ws = new WeightSums(zerosTensor(gpu, weightSumsElements(Array(Z).fill(plan.scratchElements)), 'partials'));
      const list = matmulBackwardWeight(gpu, {
        dweight: dweights[0], dout, inp, ...c, ...k, splits: 3, accumulate: true, sums: ws, batch: { count: Z, inp: zs.inp, out: zs.out, dweights },
      });
      expect(list).toHaveLength(1);
      expect(list[0].workgroups[2]).toBe(3 * Z);
      expect(ws.rows.map((r) => r.dst)).toEqual(dweights);
      await run(gpu, [...list, ...weightSumsDispatch(gpu, ws)]);
      const batched = await Promise.all(dweights.map(async (_, z) => Float64Array.from(await download(gpu, flat, c.O * c.I, z * step))));
      for (let z = 0; z < Z; z++) {
        const dweight = tensorFrom(gpu, init, 'dweight');
        await run(gpu, matmulBackwardWeight(gpu, {
          dweight, dout, inp, ...c, ...k, splits: 3, accumulate: true, inpOffset: c.inpOffset + z * zs.inp, outOffset: c.outOffset + z * zs.out,
        }));
        expect(Array.from(batched[z]), `problem ${z}`).toEqual(Array.from(await read(gpu, dweight)));
      }
      const z = Z - 1;
      const ref = Float64Array.from(init);
      linear_backward(null, ref, null, rows(hOut, c.outOffset + z * zs.out, c.ldo, c.O), rows(hInp, c.inpOffset + z * zs.inp, c.ldi, c.I),
        new Float64Array(c.O * c.I), c.M, c.I, c.O);
      expect(relErr(batched[z], ref)).toBeLessThan(TOL);
    }
  });

  it('refuses what a batch cannot be: a skinny kernel, a bias, a weight gradient without sums or with the wrong dweights, operands too small', async () => {
    const gpu = await testGpu();
    const t = (n: number, label: string) => zerosTensor(gpu, n, label);
    const s = { M: 8, I: 8, O: 8 };
    const batch = { count: 2, inp: 64, out: 64, weight: 64 };
    expect(() => matmulForward(gpu, { out: t(128, 'out'), inp: t(128, 'inp'), weight: t(128, 'w'), bias: null, ...s, batch, variant: 'skinny' }))
      .toThrow(/skinny kernels take one problem a dispatch/);
    expect(() => matmulForward(gpu, { out: t(128, 'out'), inp: t(128, 'inp'), weight: t(128, 'w'), bias: t(8, 'b'), ...s, batch }))
      .toThrow(/a batched forward takes no bias/);
    expect(() => matmulForward(gpu, { out: t(100, 'out'), inp: t(128, 'inp'), weight: t(128, 'w'), bias: null, ...s, batch }))
      .toThrow(/out \(out\) holds 100 f32 but 8×8 at stride 8 from element 64 needs 128/);
    const dw = [t(64, 'dw0'), t(64, 'dw1')];
    const ws = new WeightSums(t(1024, 'partials'));
    expect(() => matmulBackwardWeight(gpu, { dweight: dw[0], dout: t(128, 'dout'), inp: t(128, 'inp'), ...s, batch: { ...batch, dweights: dw } }))
      .toThrow(/a weight gradient in batches needs `sums`/);
    expect(() => matmulBackwardWeight(gpu, { dweight: dw[1], dout: t(128, 'dout'), inp: t(128, 'inp'), ...s, sums: ws, batch: { ...batch, dweights: dw } }))
      .toThrow(/takes 2 dweights in batch\.dweights, dweight the first/);
    expect(() => matmulBackwardWeight(gpu, { dweight: dw[0], dout: t(128, 'dout'), inp: t(128, 'inp'), ...s, sums: ws, batch: { ...batch, dweights: [dw[0]] } }))
      .toThrow(/takes 2 dweights/);
  });
});
