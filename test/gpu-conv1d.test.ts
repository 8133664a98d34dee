import { describe, expect, it } from 'vitest';
import { conv1d_silu_backward, conv1d_silu_forward } from '../src/reference/conv1d.js';
import { conv1dBackwardScratchElements, conv1dSiluBackward, conv1dSiluForward } from '../src/gpu/ops/conv1d.js';
import type { Dispatch } from '../src/gpu/kernels.js';
import type { GpuTensor } from '../src/gpu/tensor.js';
import { Rng } from '../src/rng.js';
import { randArray, read, relErr, run, tensorFrom, testGpu, zerosTensor } from './helpers/gpu.js';

const TOL = 1e-5;

describe('conv1d + SiLU kernels', () => {
  for (const reverse of [false, true]) {
    it(`forward${reverse ? ' (reverse)' : ''} B=3 L=7 E=13 K=4`, async () => {
      const gpu = await testGpu();
      const rng = new Rng(reverse ? 2 : 1);
      const [B, L, E, K] = [3, 7, 13, 4];
      const xz = randArray(rng, B * L * 2 * E, -2, 2);
      const weight = randArray(rng, E * K);
      const bias = randArray(rng, E);
      const out = zerosTensor(gpu, B * L * E, 'out');
      await run(gpu, [conv1dSiluForward(gpu, {
        out, xz: tensorFrom(gpu, xz), weight: tensorFrom(gpu, weight), bias: tensorFrom(gpu, bias), B, L, E, K, reverse,
      })]);
      const want = new Float64Array(B * L * E);
      conv1d_silu_forward(want, xz, weight, bias, B, L, E, K, reverse);
      expect(relErr(await read(gpu, out), want)).toBeLessThan(TOL);
    });
  }

  const cases = [
    { B: 3, L: 7, E: 13, K: 4, reverse: false, accumulate: false },
    { B: 3, L: 7, E: 13, K: 4, reverse: true, accumulate: false },
    { B: 3, L: 7, E: 13, K: 4, reverse: true, accumulate: true },
    { B: 151, L: 7, E: 3, K: 3, reverse: false, accumulate: true }, // several rows per group, K = 3
  ];
  for (const { B, L, E, K, reverse, accumulate } of cases) {
    it(`backward${reverse ? ' (reverse)' : ''}${accumulate ? ' (accumulate)' : ''} B=${B} L=${L} E=${E} K=${K}`, async () => {
      const gpu = await testGpu();
      const rng = new Rng(B + L + E + K + (reverse ? 100 : 0));
      const xz = randArray(rng, B * L * 2 * E, -2, 2);
      const weight = randArray(rng, E * K);
      const bias = randArray(rng, E);
      const dout = randArray(rng, B * L * E);
      const dxz = randArray(rng, B * L * 2 * E); // z half must be left as it is
      const dw = accumulate ? randArray(rng, E * K) : new Float64Array(E * K);
      const db = accumulate ? randArray(rng, E) : new Float64Array(E);
      const tdxz = tensorFrom(gpu, dxz, 'dxz');
      const tdw = tensorFrom(gpu, accumulate ? dw : randArray(rng, E * K), 'dweight');
      const tdb = tensorFrom(gpu, accumulate ? db : randArray(rng, E), 'dbias');
      await run(gpu, conv1dSiluBackward(gpu, {
        dxz: tdxz, dweight: tdw, dbias: tdb, dout: tensorFrom(gpu, dout), xz: tensorFrom(gpu, xz),
        weight: tensorFrom(gpu, weight), bias: tensorFrom(gpu, bias), B, L, E, K, reverse,
        scratch: zerosTensor(gpu, conv1dBackwardScratchElements(B, L, E, K)),
        accumulate, accumulateParams: accumulate,
      }));
      if (!accumulate) for (let r = 0; r < B * L; r++) dxz.fill(0, r * 2 * E, r * 2 * E + E);
      conv1d_silu_backward(dxz, dw, db, dout, xz, weight, bias, B, L, E, K, reverse);
      expect(relErr(await read(gpu, tdxz), dxz)).toBeLessThan(TOL);
      expect(relErr(await read(gpu, tdw), dw)).toBeLessThan(TOL);
      expect(relErr(await read(gpu, tdb), db)).toBeLessThan(TOL);
    });
  }

  it('both directions add into one dxz', async () => {
    const gpu = await testGpu();
    const rng = new Rng(5);
    const [B, L, E, K] = [3, 7, 13, 4];
    const xz = randArray(rng, B * L * 2 * E, -2, 2);
    const txz = tensorFrom(gpu, xz);
    const dxz = new Float64Array(B * L * 2 * E);
    const tdxz = zerosTensor(gpu, dxz.length, 'dxz');
    const list: Dispatch[] = [];
    const checks: { dw: Float64Array; db: Float64Array; tdw: GpuTensor; tdb: GpuTensor }[] = [];
    for (const reverse of [false, true]) {
      const weight = randArray(rng, E * K);
      const bias = randArray(rng, E);
      const dout = randArray(rng, B * L * E);
      const dw = new Float64Array(E * K);
      const db = new Float64Array(E);
      conv1d_silu_backward(dxz, dw, db, dout, xz, weight, bias, B, L, E, K, reverse);
      const tdw = zerosTensor(gpu, E * K);
      const tdb = zerosTensor(gpu, E);
      list.push(...conv1dSiluBackward(gpu, {
        dxz: tdxz, dweight: tdw, dbias: tdb, dout: tensorFrom(gpu, dout), xz: txz, weight: tensorFrom(gpu, weight),
        bias: tensorFrom(gpu, bias), B, L, E, K, reverse, scratch: zerosTensor(gpu, conv1dBackwardScratchElements(B, L, E, K)),
        accumulate: reverse, // the second direction adds into the first's dx
      }));
      checks.push({ dw, db, tdw, tdb });
    }
    await run(gpu, list);
    expect(relErr(await read(gpu, tdxz), dxz)).toBeLessThan(TOL);
    for (const c of checks) {
      expect(relErr(await read(gpu, c.tdw), c.dw)).toBeLessThan(TOL);
      expect(relErr(await read(gpu, c.tdb), c.db)).toBeLessThan(TOL);
    }
  });
});
