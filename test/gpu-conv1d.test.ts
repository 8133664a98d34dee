import { describe, expect, it } from 'vitest';
import { conv1d_silu_backward, conv1d_silu_forward } from '../src/reference/conv1d.js';
import {
  conv1dBackward2ScratchElements, conv1dBackwardPlan, conv1dBackwardScratchElements, conv1dForward2Plan, conv1dSiluBackward,
  conv1dSiluBackward2, conv1dSiluForward, conv1dSiluForward2,
} from '../src/gpu/ops/conv1d.js';
import type { Dispatch } from '../src/gpu/kernels.js';
import type { GpuTensor } from '../src/gpu/tensor.js';
import { weightSumsDispatch, weightSumsElements, WeightSums } from '../src/gpu/ops/matmul.js';
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
    { B: 3, L: 301, E: 70, K: 4, reverse: true, accumulate: false }, // 3 chunks (101, 101, 99), 2 channel blocks
    { B: 2, L: 150, E: 9, K: 8, reverse: false, accumulate: true }, // the widest conv (both window halves), 2 chunks
    { B: 5, L: 20, E: 7, K: 6, reverse: true, accumulate: true }, // K > 4, one chunk
    { B: 2, L: 3, E: 6, K: 4, reverse: true, accumulate: false }, // fewer tokens than taps
    { B: 6, L: 9, E: 4, K: 1, reverse: false, accumulate: false }, // no halo
    { B: 9, L: 65, E: 70, K: 4, reverse: true, accumulate: true }, // vim-tiny's L and K
    // 8 units a group, 138 partial groups (the last one short)
    { B: 1100, L: 9, E: 5, K: 4, reverse: false, accumulate: false },
    { B: 1100, L: 9, E: 5, K: 4, reverse: true, accumulate: true },
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

  it('the backward plan: equal chunks of at most 128 positions, at most 256 partial groups', () => {
    expect(conv1dBackwardPlan(256, 65)).toEqual({ chunk: 65, chunks: 1, unitsPerGroup: 4, groups: 64 });
    expect(conv1dBackwardPlan(256, 200)).toEqual({ chunk: 100, chunks: 2, unitsPerGroup: 4, groups: 128 });
    expect(conv1dBackwardPlan(3000, 65)).toEqual({ chunk: 65, chunks: 1, unitsPerGroup: 12, groups: 250 });
    expect(conv1dBackwardPlan(3, 7)).toEqual({ chunk: 7, chunks: 1, unitsPerGroup: 4, groups: 1 });
    for (const [B, L] of [[1, 1], [260, 65], [1000, 200], [7, 33]]) {
      const p = conv1dBackwardPlan(B, L);
      expect(p.chunk * p.chunks).toBeGreaterThanOrEqual(L);
      expect((p.chunk) * (p.chunks - 1)).toBeLessThan(L); // no empty chunk
      expect(p.groups).toBeLessThanOrEqual(256);
      expect(p.groups * p.unitsPerGroup).toBeGreaterThanOrEqual(B * p.chunks);
    }
  });

  it('backward repeats bit for bit', async () => {
    const gpu = await testGpu();
    const rng = new Rng(11);
    const [B, L, E, K] = [40, 33, 21, 4];
    const ins = {
      dout: tensorFrom(gpu, randArray(rng, B * L * E)), xz: tensorFrom(gpu, randArray(rng, B * L * 2 * E, -2, 2)),
      weight: tensorFrom(gpu, randArray(rng, E * K)), bias: tensorFrom(gpu, randArray(rng, E)),
    };
    const outs: Float64Array[][] = [];
    for (let rep = 0; rep < 2; rep++) {
      const dxz = zerosTensor(gpu, B * L * 2 * E);
      const dw = zerosTensor(gpu, E * K);
      const db = zerosTensor(gpu, E);
      await run(gpu, conv1dSiluBackward(gpu, {
        dxz, dweight: dw, dbias: db, ...ins, B, L, E, K, reverse: true,
        scratch: zerosTensor(gpu, conv1dBackwardScratchElements(B, L, E, K)),
      }));
      outs.push([await read(gpu, dxz), await read(gpu, dw), await read(gpu, db)]);
    }
    for (let i = 0; i < 3; i++) expect(outs[1][i]).toEqual(outs[0][i]);
  });

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

  // ---- both directions in one pass: against the reference run once per direction
  const cases2 = [
    { B: 3, L: 7, E: 13, K: 4, accumulate: false }, // B·L·E = 273, not a multiple of 256
    { B: 3, L: 7, E: 13, K: 4, accumulate: true },
    { B: 4, L: 37, E: 9, K: 3, accumulate: false }, // 3 forward units of 13
    { B: 151, L: 7, E: 3, K: 3, accumulate: true }, // several rows per group
    { B: 3, L: 301, E: 70, K: 4, accumulate: true }, // 3 backward chunks (101, 101, 99), 2 channel blocks
    { B: 2, L: 150, E: 9, K: 8, accumulate: false }, // the widest conv (both window halves), 2 chunks
    { B: 5, L: 22, E: 7, K: 6, accumulate: true }, // K > 4, 2 forward units of 11
    { B: 2, L: 3, E: 6, K: 4, accumulate: false }, // fewer tokens than taps
    { B: 6, L: 9, E: 4, K: 1, accumulate: false }, // no halo
    { B: 9, L: 65, E: 70, K: 4, accumulate: false }, // vim-tiny's L and K
    { B: 1100, L: 9, E: 5, K: 4, accumulate: true }, // 138 partial groups (the last one short)
  ];
  for (const { B, L, E, K } of cases2.filter((c) => !c.accumulate)) {
    it(`forward, both directions B=${B} L=${L} E=${E} K=${K}`, async () => {
      const gpu = await testGpu();
      const rng = new Rng(B * 7 + L + E + K);
      const xz = randArray(rng, B * L * 2 * E, -2, 2);
      const w = [randArray(rng, E * K), randArray(rng, E * K)];
      const bias = [randArray(rng, E), randArray(rng, E)];
      const out = [zerosTensor(gpu, B * L * E, 'out f'), zerosTensor(gpu, B * L * E, 'out b')];
      await run(gpu, [conv1dSiluForward2(gpu, {
        outF: out[0], outB: out[1], xz: tensorFrom(gpu, xz), weightF: tensorFrom(gpu, w[0]), biasF: tensorFrom(gpu, bias[0]),
        weightB: tensorFrom(gpu, w[1]), biasB: tensorFrom(gpu, bias[1]), B, L, E, K,
      })]);
      for (let d = 0; d < 2; d++) {
        const want = new Float64Array(B * L * E);
        conv1d_silu_forward(want, xz, w[d], bias[d], B, L, E, K, d === 1);
        expect(relErr(await read(gpu, out[d]), want)).toBeLessThan(TOL);
      }
    });
  }

  for (const { B, L, E, K, accumulate } of cases2) for (const viaSums of [false, true]) {
    it(`backward, both directions${accumulate ? ' (accumulate)' : ''} B=${B} L=${L} E=${E} K=${K}${viaSums ? ', parameters summed by weightSumsDispatch' : ''}`, async () => {
      const gpu = await testGpu();
      const rng = new Rng(B * 3 + L + E + K + (accumulate ? 100 : 0));
      const xz = randArray(rng, B * L * 2 * E, -2, 2);
      const w = [randArray(rng, E * K), randArray(rng, E * K)];
      const bias = [randArray(rng, E), randArray(rng, E)];
      const dout = [randArray(rng, B * L * E), randArray(rng, B * L * E)];
      const dxz = randArray(rng, B * L * 2 * E); // z half must be left as it is
      const tdxz = tensorFrom(gpu, dxz, 'dxz');
      // with accumulate the gradients start from random values, else from stale ones to be overwritten
      const dw = [0, 1].map(() => (accumulate ? randArray(rng, E * K) : new Float64Array(E * K)));
      const db = [0, 1].map(() => (accumulate ? randArray(rng, E) : new Float64Array(E)));
      const starts = [dw[0], db[0], dw[1], db[1]].map((a) => (accumulate ? a : randArray(rng, a.length)));
      let tdw: GpuTensor[];
      let tdb: GpuTensor[];
      let sums: WeightSums | undefined;
      if (viaSums) { // the four gradients as views of one buffer at 256-byte steps (weightSumsDispatch's results share one)
        const at = [0, 1, 2, 3].map((k) => 64 * starts.slice(0, k).reduce((t, a) => t + Math.ceil(a.length / 64), 0));
        const host = new Float64Array(at[3] + starts[3].length);
        starts.forEach((a, k) => host.set(a, at[k]));
        const flat = tensorFrom(gpu, host, 'gradients');
        const view = (k: number): GpuTensor => ({ buffer: flat.buffer, offset: flat.offset + 4 * at[k], size: 4 * starts[k].length, label: `gradient ${k}` });
        [tdw, tdb] = [[view(0), view(2)], [view(1), view(3)]];
        sums = new WeightSums(zerosTensor(gpu, weightSumsElements([conv1dBackward2ScratchElements(B, L, E, K)]), 'partials'));
      } else {
        tdw = [tensorFrom(gpu, starts[0], 'dweight'), tensorFrom(gpu, starts[2], 'dweight')];
        tdb = [tensorFrom(gpu, starts[1], 'dbias'), tensorFrom(gpu, starts[3], 'dbias')];
      }
      const list = conv1dSiluBackward2(gpu, {
        dxz: tdxz, dweightF: tdw[0], dbiasF: tdb[0], dweightB: tdw[1], dbiasB: tdb[1],
        doutF: tensorFrom(gpu, dout[0]), doutB: tensorFrom(gpu, dout[1]), xz: tensorFrom(gpu, xz),
        weightF: tensorFrom(gpu, w[0]), biasF: tensorFrom(gpu, bias[0]), weightB: tensorFrom(gpu, w[1]), biasB: tensorFrom(gpu, bias[1]),
        B, L, E, K, scratch: zerosTensor(gpu, conv1dBackward2ScratchElements(B, L, E, K)), accumulate, accumulateParams: accumulate, sums,
      });
      expect(list).toHaveLength(viaSums ? 1 : 2);
      if (sums) expect(sums.rows.map((r) => [r.n, r.stride])).toEqual([[E * K, 2 * E * (K + 1)], [E, 2 * E * (K + 1)], [E * K, 2 * E * (K + 1)], [E, 2 * E * (K + 1)]]);
      await run(gpu, sums ? [...list, ...weightSumsDispatch(gpu, sums)] : list);
      if (!accumulate) for (let r = 0; r < B * L; r++) dxz.fill(0, r * 2 * E, r * 2 * E + E);
      for (let d = 0; d < 2; d++) conv1d_silu_backward(dxz, dw[d], db[d], dout[d], xz, w[d], bias[d], B, L, E, K, d === 1);
      expect(relErr(await read(gpu, tdxz), dxz)).toBeLessThan(TOL);
      for (let d = 0; d < 2; d++) {
        expect(relErr(await read(gpu, tdw[d]), dw[d])).toBeLessThan(TOL);
        expect(relErr(await read(gpu, tdb[d]), db[d])).toBeLessThan(TOL);
      }
    });
  }

  it('the both-directions forward plan: equal units of at most 16 positions', () => {
    expect(conv1dForward2Plan(65)).toEqual({ chunk: 13, chunks: 5 });
    expect(conv1dForward2Plan(7)).toEqual({ chunk: 7, chunks: 1 });
    for (const L of [1, 16, 17, 37, 301]) {
      const p = conv1dForward2Plan(L);
      expect(p.chunk).toBeLessThanOrEqual(16);
      expect(p.chunk * p.chunks).toBeGreaterThanOrEqual(L);
      expect(p.chunk * (p.chunks - 1)).toBeLessThan(L);
    }
  });

  it('both-directions backward repeats bit for bit', async () => {
    const gpu = await testGpu();
    const rng = new Rng(12);
    const [B, L, E, K] = [40, 33, 21, 4];
    const ins = {
      doutF: tensorFrom(gpu, randArray(rng, B * L * E)), doutB: tensorFrom(gpu, randArray(rng, B * L * E)),
      xz: tensorFrom(gpu, randArray(rng, B * L * 2 * E, -2, 2)),
      weightF: tensorFrom(gpu, randArray(rng, E * K)), biasF: tensorFrom(gpu, randArray(rng, E)),
      weightB: tensorFrom(gpu, randArray(rng, E * K)), biasB: tensorFrom(gpu, randArray(rng, E)),
    };
    const outs: Float64Array[][] = [];
    for (let rep = 0; rep < 2; rep++) {
      const t = [zerosTensor(gpu, B * L * 2 * E), zerosTensor(gpu, E * K), zerosTensor(gpu, E), zerosTensor(gpu, E * K), zerosTensor(gpu, E)];
      await run(gpu, conv1dSiluBackward2(gpu, {
        dxz: t[0], dweightF: t[1], dbiasF: t[2], dweightB: t[3], dbiasB: t[4], ...ins, B, L, E, K,
        scratch: zerosTensor(gpu, conv1dBackward2ScratchElements(B, L, E, K)),
      }));
      outs.push(await Promise.all(t.map((x) => read(gpu, x))));
    }
    for (let i = 0; i < 5; i++) expect(outs[1][i]).toEqual(outs[0][i]);
  });
});
