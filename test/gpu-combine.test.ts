import { describe, expect, it } from 'vitest';
import { combine_backward, combine_forward } from '../src/reference/combine.js';
import { combineBackward, combineForward } from '../src/gpu/ops/combine.js';
import { Rng } from '../src/rng.js';
import { randArray, read, relErr, run, tensorFrom, testGpu, zerosTensor } from './helpers/gpu.js';

const TOL = 1e-5;
const [B, L, E] = [3, 7, 13];
const n = B * L * E;

/**
 * combineBackward against combine_backward on random dout (and random gradients to add to when
 * accumulating), with per-sample factors `drop.row` read from `drop.table` at `drop.offset`.
 */
async function checkBackward(seed: number, accumulate: boolean, drop?: { table: Float64Array; offset: number; row: number[] }): Promise<void> {
  const gpu = await testGpu();
  const rng = new Rng(seed);
  const dout = randArray(rng, n);
  const dyF = accumulate ? randArray(rng, n) : new Float64Array(n);
  const dyB = accumulate ? randArray(rng, n) : new Float64Array(n);
  const tF = tensorFrom(gpu, accumulate ? dyF : randArray(rng, n), 'dy_f');
  const tB = tensorFrom(gpu, accumulate ? dyB : randArray(rng, n), 'dy_b');
  const scale = drop && { t: tensorFrom(gpu, drop.table, 'scale'), offset: drop.offset };
  await run(gpu, [combineBackward(gpu, { dyF: tF, dyB: tB, dout: tensorFrom(gpu, dout), B, L, E, accumulate, ...(scale ? { scale } : {}) })]);
  combine_backward(dyF, dyB, dout, B, L, E, drop?.row);
  expect(relErr(await read(gpu, tF), dyF)).toBeLessThan(TOL);
  expect(relErr(await read(gpu, tB), dyB)).toBeLessThan(TOL);
}

describe('combine kernels', () => {
  it('forward: (y_f + reversed y_b) / 2', async () => {
    const gpu = await testGpu();
    const rng = new Rng(1);
    const yF = randArray(rng, n);
    const yB = randArray(rng, n);
    const out = zerosTensor(gpu, n, 'out');
    await run(gpu, [combineForward(gpu, { out, yF: tensorFrom(gpu, yF), yB: tensorFrom(gpu, yB), B, L, E })]);
    const want = new Float64Array(n);
    combine_forward(want, yF, yB, B, L, E);
    expect(relErr(await read(gpu, out), want)).toBeLessThan(TOL);
  });

  for (const accumulate of [false, true]) {
    it(`backward${accumulate ? ' (accumulate)' : ''}`, () => checkBackward(accumulate ? 3 : 2, accumulate));
  }
});

describe('combine kernels with per-sample factors (drop path)', () => {
  // factors 0 (dropped) and 1/(1 − p) (kept), for block 2 of a (4, B) table
  const table = new Float64Array(4 * B).fill(7);
  const row = [0, 1 / 0.8, 1 / 0.8];
  table.set(row, 2 * B);

  it('forward multiplies each sample by its factor', async () => {
    const gpu = await testGpu();
    const rng = new Rng(11);
    const yF = randArray(rng, n);
    const yB = randArray(rng, n);
    const out = zerosTensor(gpu, n, 'out');
    const scale = { t: tensorFrom(gpu, table, 'scale'), offset: 2 * B };
    await run(gpu, [combineForward(gpu, { out, yF: tensorFrom(gpu, yF), yB: tensorFrom(gpu, yB), B, L, E, scale })]);
    const want = new Float64Array(n);
    combine_forward(want, yF, yB, B, L, E, row);
    const got = await read(gpu, out);
    expect(relErr(got, want)).toBeLessThan(TOL);
    expect(got.subarray(0, L * E).every((v) => v === 0)).toBe(true); // the dropped sample
  });

  for (const accumulate of [false, true]) {
    it(`backward multiplies each sample's gradient by its factor${accumulate ? ' (accumulate)' : ''}`,
      () => checkBackward(accumulate ? 13 : 12, accumulate, { table, offset: 2 * B, row }));
  }

  it('refuses a factor table too short for the block', async () => {
    const gpu = await testGpu();
    const t = zerosTensor(gpu, n, 'x');
    const scale = { t: tensorFrom(gpu, table, 'scale'), offset: 3 * B + 1 };
    expect(() => combineForward(gpu, { out: t, yF: t, yB: t, B, L, E, scale })).toThrow(/scale/);
  });
});
