import { describe, expect, it } from 'vitest';
import { combine_backward, combine_forward } from '../src/reference/combine.js';
import { combineBackward, combineForward } from '../src/gpu/ops/combine.js';
import { selectiveScanBackward, selectiveScanForward, selectiveScanScratch } from '../src/gpu/ops/selective-scan.js';
import type { GpuTensor } from '../src/gpu/tensor.js';
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

/**
 * The combine fused into the selective scans (the model's default) against these dispatches: the
 * same arithmetic in the same order, (y_f + y_b) · 0.5 then · the factor, and dout · 0.5 then ·
 * the factor, so the combined output and the scans' gradients agree to the last bits (a compiler
 * may still contract an add and a multiply differently in the two kernels: compared to 1e-6).
 */
describe('the combine fused into the selective scans', () => {
  const [Bs, Ls, Es, N, R] = [3, 9, 21, 4, 2];
  const ns = Bs * Ls * Es;
  const table = new Float64Array(2 * Bs).fill(5);
  table.set([1 / 0.9, 0, 1 / 0.7], Bs);

  /** One direction's scan inputs (xz shared by both directions). */
  function scanInputs(gpu: Awaited<ReturnType<typeof testGpu>>, rng: Rng, xz: GpuTensor) {
    const A_log = new Float64Array(Es * N);
    for (let i = 0; i < A_log.length; i++) A_log[i] = Math.fround(Math.log(1 + (i % N)) + 0.1 * rng.uniform());
    return {
      u: tensorFrom(gpu, randArray(rng, ns)), delta_raw: tensorFrom(gpu, randArray(rng, ns, -2, 1)),
      dt_bias: tensorFrom(gpu, randArray(rng, Es, -2, 0)), A_log: tensorFrom(gpu, A_log),
      xdbl: tensorFrom(gpu, randArray(rng, Bs * Ls * (R + 2 * N))), Dskip: tensorFrom(gpu, randArray(rng, Es, 0.5, 1.5)), xz,
    };
  }

  for (const scaled of [false, true]) {
    it(`forward and backward${scaled ? ' with per-sample factors' : ''}`, async () => {
      const gpu = await testGpu();
      const rng = new Rng(scaled ? 41 : 40);
      const shape = { B: Bs, L: Ls, E: Es, N, R };
      const xz = tensorFrom(gpu, randArray(rng, 2 * ns, -2, 2));
      const dirs = [scanInputs(gpu, rng, xz), scanInputs(gpu, rng, xz)];
      const scale = scaled ? { scale: { t: tensorFrom(gpu, table, 'factors'), offset: Bs } } : {};
      // forward: separate (y_f, y_b, combine) and fused (y_f into cmb, the backward direction adds)
      const yF = zerosTensor(gpu, ns), yB = zerosTensor(gpu, ns), sep = zerosTensor(gpu, ns), fused = zerosTensor(gpu, ns);
      await run(gpu, [
        selectiveScanForward(gpu, { ...dirs[0], ...shape, out: yF, reverse: false }),
        selectiveScanForward(gpu, { ...dirs[1], ...shape, out: yB, reverse: true }),
        combineForward(gpu, { out: sep, yF, yB, B: Bs, L: Ls, E: Es, ...scale }),
        selectiveScanForward(gpu, { ...dirs[0], ...shape, out: fused, reverse: false }),
        selectiveScanForward(gpu, { ...dirs[1], ...shape, out: fused, reverse: true, combine: scale }),
      ]);
      expect(relErr(await read(gpu, fused), await read(gpu, sep))).toBeLessThan(1e-6);
      // backward: each direction's scan fed combineBackward's dy, and fed dcmb directly
      const dcmb = tensorFrom(gpu, randArray(rng, ns));
      const dy = [zerosTensor(gpu, ns), zerosTensor(gpu, ns)];
      const tuning = { kernel: 'stream' as const };
      const sizes = selectiveScanScratch(shape, tuning);
      const scratch = { bcPartials: zerosTensor(gpu, sizes.bcPartials), paramPartials: zerosTensor(gpu, sizes.paramPartials) };
      const grads = () => ({
        du: zerosTensor(gpu, ns), ddelta_raw: zerosTensor(gpu, ns), dxz: zerosTensor(gpu, 2 * ns), dxdbl: zerosTensor(gpu, Bs * Ls * (R + 2 * N)),
        dA_log: zerosTensor(gpu, Es * N), dDskip: zerosTensor(gpu, Es), ddt_bias: zerosTensor(gpu, Es),
      });
      const gSep = [grads(), grads()], gFused = [grads(), grads()];
      const list = [combineBackward(gpu, { dyF: dy[0], dyB: dy[1], dout: dcmb, B: Bs, L: Ls, E: Es, ...scale })];
      for (let d = 0; d < 2; d++) {
        const common = { ...dirs[d], ...shape, reverse: d === 1, scratch, ...tuning };
        list.push(...selectiveScanBackward(gpu, { ...common, ...gSep[d], dout: dy[d] }));
        list.push(...selectiveScanBackward(gpu, { ...common, ...gFused[d], dout: dcmb, doutCombined: scale }));
      }
      await run(gpu, list);
      for (let d = 0; d < 2; d++) {
        for (const k of Object.keys(gSep[d]) as (keyof ReturnType<typeof grads>)[]) {
          expect(relErr(await read(gpu, gFused[d][k]), await read(gpu, gSep[d][k])), `${k} of direction ${d}`).toBeLessThan(1e-6);
        }
      }
    });
  }
});
