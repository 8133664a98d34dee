import { describe, expect, it } from 'vitest';
import { residual_rmsnorm_backward, residual_rmsnorm_forward } from '../src/reference/rmsnorm.js';
import {
  residualRmsnormBackward, residualRmsnormForward, rmsnormBackwardRowsPerGroup, rmsnormBackwardScratchElements,
} from '../src/gpu/ops/rmsnorm.js';
import { weightSumsDispatch, weightSumsElements, WeightSums } from '../src/gpu/ops/matmul.js';
import { Rng } from '../src/rng.js';
import { randArray, read, relErr, run, tensorFrom, testGpu, zerosTensor } from './helpers/gpu.js';

const TOL = 1e-5;
const EPS = 1e-5;

/** Rows offset + k·stride (k < count) of a (BL, D) array, compacted to (count, D). */
function gather(x: Float64Array, D: number, count: number, stride: number, offset: number): Float64Array {
  const out = new Float64Array(count * D);
  for (let k = 0; k < count; k++) out.set(x.subarray((offset + k * stride) * D, (offset + k * stride + 1) * D), k * D);
  return out;
}

describe('residual rmsnorm kernels', () => {
  // a row a workgroup (D not a multiple of 4, or over 256), else 16 rows a workgroup in vec4s (the last group partly idle)
  for (const [BL, D, withRin] of [[21, 19, true], [21, 19, false], [10, 259, true], [21, 192, true], [37, 12, false], [16, 256, true], [1000, 100, true]] as const) {
    it(`forward BL=${BL} D=${D}${withRin ? '' : ' (no r_in)'}${D % 4 === 0 && D <= 256 ? ', 16 rows a workgroup' : ''}`, async () => {
      const gpu = await testGpu();
      const rng = new Rng(BL + D);
      const rIn = withRin ? randArray(rng, BL * D, -2, 2) : null;
      const h = randArray(rng, BL * D);
      const weight = randArray(rng, D, 0.5, 1.5);
      const rOut = zerosTensor(gpu, BL * D, 'r_out');
      const out = zerosTensor(gpu, BL * D, 'out');
      const rstd = zerosTensor(gpu, BL, 'rstd');
      await run(gpu, [residualRmsnormForward(gpu, {
        rOut, out, rstd, rIn: rIn ? tensorFrom(gpu, rIn) : null, h: tensorFrom(gpu, h), weight: tensorFrom(gpu, weight),
        BL, D, eps: EPS,
      })]);
      const [wr, wo, ws] = [new Float64Array(BL * D), new Float64Array(BL * D), new Float64Array(BL)];
      residual_rmsnorm_forward(wr, wo, ws, rIn, h, weight, BL, D, EPS);
      expect(relErr(await read(gpu, rOut), wr)).toBeLessThan(TOL);
      expect(relErr(await read(gpu, out), wo)).toBeLessThan(TOL);
      expect(relErr(await read(gpu, rstd), ws)).toBeLessThan(TOL);
    });
  }

  const cases = [
    { BL: 21, D: 19, drNext: true, accumulate: false },
    { BL: 21, D: 19, drNext: false, accumulate: false },
    { BL: 21, D: 19, drNext: true, accumulate: true },
    { BL: 10, D: 259, drNext: true, accumulate: true },
    { BL: 1500, D: 5, drNext: true, accumulate: false }, // several rows per workgroup
    { BL: 4133, D: 67, drNext: true, accumulate: true }, // 1034 partial groups, the last one row
    { BL: 9001, D: 130, drNext: false, accumulate: false }, // 8 rows a group (2 per slot), 1126 groups
    { BL: 9, D: 2100, drNext: true, accumulate: false }, // wide rows: fewer slots fit workgroup memory
    // D a multiple of 4 up to 256: 16 rows in flight in vec4 columns
    { BL: 21, D: 192, drNext: true, accumulate: false },
    { BL: 4133, D: 64, drNext: true, accumulate: true }, // 4 rows a group: 12 of the 16 row slots idle
    { BL: 70001, D: 12, drNext: false, accumulate: false }, // 68 rows a group: 5 steps, the last partly idle
    { BL: 37, D: 256, drNext: true, accumulate: true },
  ];
  for (const { BL, D, drNext, accumulate } of cases) for (const viaSums of [false, true]) {
    it(`backward BL=${BL} D=${D}${drNext ? '' : ' (no dr_next)'}${accumulate ? ' (accumulate)' : ''}${viaSums ? ', dweight summed by weightSumsDispatch' : ''}`, async () => {
      const gpu = await testGpu();
      const rng = new Rng(7 * BL + D);
      const r = randArray(rng, BL * D, -2, 2);
      const weight = randArray(rng, D, 0.5, 1.5);
      // rstd from the forward, so the inputs are consistent.
      const [rr, oo, rstd] = [new Float64Array(BL * D), new Float64Array(BL * D), new Float64Array(BL)];
      residual_rmsnorm_forward(rr, oo, rstd, null, r, weight, BL, D, EPS);
      const rstd32 = Float64Array.from(rstd, Math.fround);
      const dout = randArray(rng, BL * D);
      const dn = drNext ? randArray(rng, BL * D) : null;
      const dr = accumulate ? randArray(rng, BL * D) : new Float64Array(BL * D);
      const dw = accumulate ? randArray(rng, D) : new Float64Array(D);
      const tdr = tensorFrom(gpu, accumulate ? dr : randArray(rng, BL * D), 'dr');
      const tdw = tensorFrom(gpu, accumulate ? dw : randArray(rng, D), 'dweight');
      // with weight sums, the partials go to a region after another gradient's and the sum waits for weightSumsDispatch
      const sums = viaSums ? new WeightSums(zerosTensor(gpu, weightSumsElements([100, rmsnormBackwardScratchElements(BL, D)]), 'partials')) : undefined;
      if (sums) sums.used = 128;
      const list = residualRmsnormBackward(gpu, {
        dr: tdr, dweight: tdw, dout: tensorFrom(gpu, dout), drNext: dn ? tensorFrom(gpu, dn) : null,
        r: tensorFrom(gpu, r), rstd: tensorFrom(gpu, rstd32), weight: tensorFrom(gpu, weight), BL, D,
        scratch: zerosTensor(gpu, rmsnormBackwardScratchElements(BL, D), 'scratch'),
        accumulate, accumulateWeight: accumulate, sums,
      });
      expect(list).toHaveLength(viaSums ? 1 : 2);
      await run(gpu, sums ? [...list, ...weightSumsDispatch(gpu, sums)] : list);
      residual_rmsnorm_backward(dr, dw, dout, dn, r, rstd32, weight, BL, D);
      expect(relErr(await read(gpu, tdr), dr)).toBeLessThan(TOL);
      expect(relErr(await read(gpu, tdw), dw)).toBeLessThan(TOL);
    });
  }

  it('backward groups: a multiple of the 4 row slots, about 1024 workgroups', () => {
    expect(rmsnormBackwardRowsPerGroup(16640)).toBe(16); // vim-tiny, batch 256: 1040 groups
    expect(rmsnormBackwardRowsPerGroup(256)).toBe(4); // the final norm at the class tokens
    expect(rmsnormBackwardRowsPerGroup(1)).toBe(4);
    expect(rmsnormBackwardScratchElements(16640, 192)).toBe(1040 * 192);
  });

  for (const D of [19, 20]) it(`selected rows: the final norm at the class tokens, forward and backward, D=${D}`, async () => {
    const gpu = await testGpu();
    const rng = new Rng(99);
    const [B, L, clsPos] = [3, 7, 3];
    const BL = B * L;
    const select = { count: B, stride: L, offset: clsPos };
    const rIn = randArray(rng, BL * D, -2, 2);
    const h = randArray(rng, BL * D);
    const weight = randArray(rng, D, 0.5, 1.5);
    const rOut = zerosTensor(gpu, B * D, 'r_out');
    const out = zerosTensor(gpu, B * D, 'out');
    const rstd = zerosTensor(gpu, B, 'rstd');
    const tw = tensorFrom(gpu, weight);
    await run(gpu, [residualRmsnormForward(gpu, {
      rOut, out, rstd, rIn: tensorFrom(gpu, rIn), h: tensorFrom(gpu, h), weight: tw, BL, D, eps: EPS, select,
    })]);
    const [wr, wo, ws] = [new Float64Array(B * D), new Float64Array(B * D), new Float64Array(B)];
    residual_rmsnorm_forward(wr, wo, ws, gather(rIn, D, B, L, clsPos), gather(h, D, B, L, clsPos), weight, B, D, EPS);
    expect(relErr(await read(gpu, rOut), wr)).toBeLessThan(TOL);
    expect(relErr(await read(gpu, out), wo)).toBeLessThan(TOL);
    expect(relErr(await read(gpu, rstd), ws)).toBeLessThan(TOL);

    const dout = randArray(rng, B * D);
    const dr = new Float64Array(BL * D);
    const tdr = zerosTensor(gpu, BL * D, 'dr');
    const dw = new Float64Array(D);
    const tdw = zerosTensor(gpu, D, 'dweight');
    await run(gpu, residualRmsnormBackward(gpu, {
      dr: tdr, dweight: tdw, dout: tensorFrom(gpu, dout), drNext: null, r: rOut, rstd, weight: tw, BL, D,
      scratch: zerosTensor(gpu, rmsnormBackwardScratchElements(B, D)), select,
    }));
    const drc = new Float64Array(B * D);
    residual_rmsnorm_backward(drc, dw, dout, null, await read(gpu, rOut), await read(gpu, rstd), weight, B, D);
    for (let b = 0; b < B; b++) dr.set(drc.subarray(b * D, (b + 1) * D), (b * L + clsPos) * D);
    expect(relErr(await read(gpu, tdr), dr)).toBeLessThan(TOL); // other rows stay zero
    expect(relErr(await read(gpu, tdw), dw)).toBeLessThan(TOL);
  });
});
