/**
 * kernels/matmul.wgsl against the float64 reference (src/reference/linear.ts): forward, the
 * input, weight and bias gradients, on sizes that are not multiples of the 64×64×16 or 128×128×16
 * tiles (both kernels of each matmul), with
 * row strides wider than the rows, base offsets (the head's class-token rows), the split
 * reductions over M, and the accumulate variants. Strided operands live in wider buffers filled
 * with noise: the kernels must read only the addressed elements and write nothing else.
 */
import { describe, expect, it } from 'vitest';
import type { Gpu } from '../src/gpu/device.js';
import {
  biasBackward, biasBackwardPlan, linearBackward, linearBackwardScratchElements, matmulBackwardInput,
  matmulBackwardWeight, matmulBackwardWeightPlan, matmulForward, matmulTile, type MatmulTile,
} from '../src/gpu/ops/matmul.js';
import { linear_backward, linear_forward } from '../src/reference/linear.js';
import { Rng } from '../src/rng.js';
import { randArray, read, relErr, run, tensorFrom, testGpu, zerosTensor } from './helpers/gpu.js';

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
  return { ldi: c.ldi, ldo: c.ldo, inpOffset: c.inpOffset, outOffset: c.outOffset, tile: c.tile };
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
    M: c.M, I: c.I, O: c.O, accumulate, splits, ...strideArgs(c),
  });
  const plan = matmulBackwardWeightPlan(c.M, c.I, c.O, splits, c.tile);
  expect(list.length).toBe(plan.splits > 1 ? 2 : 1);
  await run(gpu, list);
  const ref = accumulate ? Float64Array.from(dweight) : new Float64Array(c.O * c.I);
  linear_backward(null, ref, null, dense(dout), dense(inp), new Float64Array(c.O * c.I), c.M, c.I, c.O);
  expect(relErr(await read(gpu, tDweight), ref), `backward weight ${c.name} splits ${plan.splits}`).toBeLessThan(TOL);
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
    const p = matmulBackwardWeightPlan(16640, 192, 768);
    expect(p.splits * 6 * 2).toBeGreaterThanOrEqual(200);
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
