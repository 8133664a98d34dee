/**
 * The selective scan kernels (kernels/selective-scan.wgsl) against the float64 reference, both
 * directions, at sizes that fill workgroups partially (E = 13, 37, 40) with one and several
 * workgroups per sample, partial backward segments, N = 5 and the model's N = 16 with L = 65,
 * and the accumulate variants (dz of both directions adding into one dxz); the split backward
 * for each lanes-per-channel and segment length it takes; the combine of the two directions fused
 * into the forward (combine) and into each backward kernel (doutCombined), with and without the
 * drop-path factors.
 */
import { describe, expect, it } from 'vitest';
import { Rng } from '../src/rng.js';
import type { Gpu } from '../src/gpu/device.js';
import type { GpuTensor } from '../src/gpu/tensor.js';
import {
  describeScanBackwardPlan, reduceParamsGeometry, scanCheckpointElements, scanCheckpointsInForward, scanRecomputesDelta, scanForwardTuningFromEnv, scanTuningFromEnv, scanKernelDefault, scanSubgroupSize, scanPairElements, scanPairViews, scanTuning, selectiveScanBackward, selectiveScanBackwardPair, selectiveScanBackwardPlan,
  selectiveScanForward, selectiveScanScratch, type ScanTuning, type ScanWalkForm,
} from '../src/gpu/ops/selective-scan.js';
import { selective_scan_backward, selective_scan_forward } from '../src/reference/selective-scan.js';
import { combine_backward, combine_forward } from '../src/reference/combine.js';
import { randArray, read, relErr, run, tensorFrom, testGpu, zerosTensor } from './helpers/gpu.js';
import { withEnv } from './helpers/env.js';
import { runKernelChecks } from '../src/bench/check.js';
import { loadConfig } from '../src/model/config.js';

const TOL = 1e-5;

interface Case {
  B: number; L: number; E: number; N: number; R: number;
  u: Float64Array; // (B, L, E)
  delta_raw: Float64Array; // (B, L, E)
  dt_bias: Float64Array; // (E)
  A_log: Float64Array; // (E, N)
  Bm: Float64Array; // (B, L, N)
  Cm: Float64Array; // (B, L, N)
  Dskip: Float64Array; // (E)
  xz: Float64Array; // (B, L, 2E)
  xdbl: Float64Array; // (B, L, R+2N): random dt_low columns, then Bm, Cm
}

function makeCase(seed: number, B: number, L: number, E: number, N: number, R: number): Case {
  const rng = new Rng(seed);
  const u = randArray(rng, B * L * E, -1, 1);
  // Δ = softplus(delta_raw + bias) spans about 0.02 … 3, so a = exp(ΔA) spans ~1 down to ~1e-20
  const delta_raw = randArray(rng, B * L * E, -2, 2);
  const dt_bias = randArray(rng, E, -2, 0);
  const A_log = new Float64Array(E * N);
  for (let e = 0; e < E; e++) {
    for (let n = 0; n < N; n++) A_log[e * N + n] = Math.fround(Math.log(n + 1) + rng.range(-0.3, 0.3));
  }
  const Bm = randArray(rng, B * L * N, -1, 1);
  const Cm = randArray(rng, B * L * N, -1, 1);
  const Dskip = randArray(rng, E, 0.5, 1.5);
  const xz = randArray(rng, B * L * 2 * E, -3, 3);
  const xdbl = randArray(rng, B * L * (R + 2 * N), -1, 1);
  for (let bt = 0; bt < B * L; bt++) {
    for (let n = 0; n < N; n++) {
      xdbl[bt * (R + 2 * N) + R + n] = Bm[bt * N + n];
      xdbl[bt * (R + 2 * N) + R + N + n] = Cm[bt * N + n];
    }
  }
  return { B, L, E, N, R, u, delta_raw, dt_bias, A_log, Bm, Cm, Dskip, xz, xdbl };
}

interface GpuInputs {
  u: GpuTensor; delta_raw: GpuTensor; dt_bias: GpuTensor; A_log: GpuTensor; xdbl: GpuTensor; Dskip: GpuTensor; xz: GpuTensor;
}

function upload(gpu: Gpu, c: Case): GpuInputs {
  return {
    u: tensorFrom(gpu, c.u, 'u'),
    delta_raw: tensorFrom(gpu, c.delta_raw, 'delta_raw'),
    dt_bias: tensorFrom(gpu, c.dt_bias, 'dt_bias'),
    A_log: tensorFrom(gpu, c.A_log, 'A_log'),
    xdbl: tensorFrom(gpu, c.xdbl, 'xdbl'),
    Dskip: tensorFrom(gpu, c.Dskip, 'Dskip'),
    xz: tensorFrom(gpu, c.xz, 'xz'),
  };
}

/** Per-sample factors of the combine (drop path): `row` (B) at `offset` of a (rows, B) `table`. */
interface Drop { table: Float64Array; offset: number; row: number[] }

/** Row 1 of a (3, B) table: sample 0 dropped (0), the others kept (1/(1 − p), p varying); 7 elsewhere. */
function dropRow(B: number): Drop {
  const row = Array.from({ length: B }, (_, b) => (b === 0 ? 0 : Math.fround(1 / (1 - 0.1 * b))));
  const table = new Float64Array(3 * B).fill(7);
  table.set(row, B);
  return { table, offset: B, row };
}

/** The combine's scale argument on the GPU (absent without `drop`). */
function scaleArg(gpu: Gpu, drop: Drop | undefined): { scale?: { t: GpuTensor; offset: number } } {
  return drop ? { scale: { t: tensorFrom(gpu, drop.table, 'drop-path factors'), offset: drop.offset } } : {};
}

/**
 * What one direction's backward reads as its dout when fed the combined output's gradient dcmb
 * (B, L, E, original order): the float64 combine backward's dy_f, or dy_b with `reverse`.
 */
function combinedDout(dcmb: Float64Array, c: { B: number; L: number; E: number }, reverse: boolean, drop?: Drop): Float64Array {
  const { B, L, E } = c;
  const dyF = new Float64Array(B * L * E);
  const dyB = new Float64Array(B * L * E);
  combine_backward(dyF, dyB, dcmb, B, L, E, drop ? drop.row : null);
  return reverse ? dyB : dyF;
}

async function checkForward(c: Case, reverse: boolean, tuning: ScanTuning = {}): Promise<Float64Array> {
  const gpu = await testGpu();
  const { B, L, E, N, R } = c;
  const inp = upload(gpu, c);
  const out = zerosTensor(gpu, B * L * E, 'out');
  await run(gpu, [selectiveScanForward(gpu, { ...inp, out, B, L, E, N, R, reverse, ...tuning })]);
  const ref = new Float64Array(B * L * E);
  selective_scan_forward(ref, c.u, c.delta_raw, c.dt_bias, c.A_log, c.Bm, c.Cm, c.Dskip, c.xz, B, L, E, N, reverse);
  const got = await read(gpu, out);
  expect(relErr(got, ref)).toBeLessThan(TOL);
  return got;
}

/**
 * The forward with dt_proj fused: Δraw = xdbl[:, 0…R−1] · Wᵀ computed in the kernel (and written
 * when `write`), against the reference fed the float64 product.
 */
async function checkForwardFused(c: Case, reverse: boolean, write: boolean, tuning: ScanTuning = {}): Promise<void> {
  const gpu = await testGpu();
  const { B, L, E, N, R } = c;
  const W = randArray(new Rng(70 + E), E * R, -0.5, 0.5); // (E, R)
  const delta = new Float64Array(B * L * E);
  for (let bt = 0; bt < B * L; bt++) {
    for (let e = 0; e < E; e++) {
      let s = 0;
      for (let r = 0; r < R; r++) s += c.xdbl[bt * (R + 2 * N) + r] * W[e * R + r];
      delta[bt * E + e] = s;
    }
  }
  const out = zerosTensor(gpu, B * L * E, 'out');
  const dOut = write ? zerosTensor(gpu, B * L * E, 'delta_raw out') : undefined;
  await run(gpu, [selectiveScanForward(gpu, {
    ...upload(gpu, c), delta_raw: dOut, dtWeight: tensorFrom(gpu, W, 'dt weight'), out, B, L, E, N, R, reverse, ...tuning,
  })]);
  const ref = new Float64Array(B * L * E);
  selective_scan_forward(ref, c.u, delta, c.dt_bias, c.A_log, c.Bm, c.Cm, c.Dskip, c.xz, B, L, E, N, reverse);
  expect(relErr(await read(gpu, out), ref)).toBeLessThan(TOL);
  if (dOut) expect(relErr(await read(gpu, dOut), delta)).toBeLessThan(TOL);
}

/** Gradient buffers: the reference's float64 arrays and the GPU's tensors, both starting at `init`. */
interface Grads {
  du: Float64Array; ddelta_raw: Float64Array; ddt_bias: Float64Array; dA_log: Float64Array;
  dBm: Float64Array; dCm: Float64Array; dDskip: Float64Array; dxz: Float64Array; dxdbl: Float64Array;
}

function gradArrays(rng: Rng | null, c: Case): Grads {
  const { B, L, E, N, R } = c;
  const mk = (n: number): Float64Array => (rng ? randArray(rng, n, -1, 1) : new Float64Array(n));
  const g: Grads = {
    du: mk(B * L * E), ddelta_raw: mk(B * L * E), ddt_bias: mk(E), dA_log: mk(E * N),
    dBm: mk(B * L * N), dCm: mk(B * L * N), dDskip: mk(E), dxz: mk(B * L * 2 * E), dxdbl: mk(B * L * (R + 2 * N)),
  };
  // dxdbl's B/C columns hold what dBm/dCm hold
  for (let bt = 0; bt < B * L; bt++) {
    for (let n = 0; n < N; n++) {
      g.dxdbl[bt * (R + 2 * N) + R + n] = g.dBm[bt * N + n];
      g.dxdbl[bt * (R + 2 * N) + R + N + n] = g.dCm[bt * N + n];
    }
  }
  return g;
}

interface GradTensors {
  du: GpuTensor; ddelta_raw: GpuTensor; ddt_bias: GpuTensor; dA_log: GpuTensor; dDskip: GpuTensor; dxz: GpuTensor; dxdbl: GpuTensor;
}

function gradTensors(gpu: Gpu, g: Grads): GradTensors {
  return {
    du: tensorFrom(gpu, g.du, 'du'),
    ddelta_raw: tensorFrom(gpu, g.ddelta_raw, 'ddelta_raw'),
    ddt_bias: tensorFrom(gpu, g.ddt_bias, 'ddt_bias'),
    dA_log: tensorFrom(gpu, g.dA_log, 'dA_log'),
    dDskip: tensorFrom(gpu, g.dDskip, 'dDskip'),
    dxz: tensorFrom(gpu, g.dxz, 'dxz'),
    dxdbl: tensorFrom(gpu, g.dxdbl, 'dxdbl'),
  };
}

function refBackward(g: Grads, dout: Float64Array, c: Case, reverse: boolean): void {
  selective_scan_backward(g.du, g.ddelta_raw, g.ddt_bias, g.dA_log, g.dBm, g.dCm, g.dDskip, g.dxz,
    dout, c.u, c.delta_raw, c.dt_bias, c.A_log, c.Bm, c.Cm, c.Dskip, c.xz, c.B, c.L, c.E, c.N, reverse);
}

/** Every gradient output against the reference; the untouched halves/columns bit for bit. */
async function compareGrads(
  gpu: Gpu, t: GradTensors, ref: Grads, before: Grads, c: Case, opts: { skip?: string[] } = {},
): Promise<void> {
  const { B, L, E, N, R } = c;
  const errs: Record<string, number> = {};
  errs.du = relErr(await read(gpu, t.du), ref.du);
  errs.ddelta_raw = relErr(await read(gpu, t.ddelta_raw), ref.ddelta_raw);
  errs.ddt_bias = relErr(await read(gpu, t.ddt_bias), ref.ddt_bias);
  errs.dA_log = relErr(await read(gpu, t.dA_log), ref.dA_log);
  errs.dDskip = relErr(await read(gpu, t.dDskip), ref.dDskip);
  const dxz = await read(gpu, t.dxz);
  const dz = [];
  const dzRef = [];
  for (let bt = 0; bt < B * L; bt++) {
    for (let e = 0; e < E; e++) {
      expect(dxz[bt * 2 * E + e]).toBe(before.dxz[bt * 2 * E + e]); // x half untouched
      dz.push(dxz[bt * 2 * E + E + e]);
      dzRef.push(ref.dxz[bt * 2 * E + E + e]);
    }
  }
  if (!opts.skip?.includes('dz')) errs.dz = relErr(dz, dzRef);
  const dxdbl = await read(gpu, t.dxdbl);
  const dB = [];
  const dC = [];
  for (let bt = 0; bt < B * L; bt++) {
    const row = bt * (R + 2 * N);
    for (let r = 0; r < R; r++) expect(dxdbl[row + r]).toBe(before.dxdbl[row + r]); // dt_low columns untouched
    for (let n = 0; n < N; n++) {
      dB.push(dxdbl[row + R + n]);
      dC.push(dxdbl[row + R + N + n]);
    }
  }
  errs.dB = relErr(dB, ref.dBm);
  errs.dC = relErr(dC, ref.dCm);
  for (const [k, v] of Object.entries(errs)) expect(v, `${k} rel err ${v}`).toBeLessThan(TOL);
}

/** Scratch tensors for one backward plan (without a checkpoint region where the forward writes them). */
function scratchFor(gpu: Gpu, c: Case, tuning: ScanTuning, forwardCheckpoints = false): { bcPartials: GpuTensor; paramPartials: GpuTensor } {
  const sizes = selectiveScanScratch(c, tuning, { forwardCheckpoints });
  return {
    bcPartials: zerosTensor(gpu, sizes.bcPartials, 'bcPartials'),
    paramPartials: zerosTensor(gpu, sizes.paramPartials, 'paramPartials'),
  };
}

/**
 * One direction's backward. Overwriting runs start from random garbage on the GPU (to be
 * overwritten) and zeros in the reference; accumulating ones from the same random values in both.
 */
async function checkBackward(
  c: Case, reverse: boolean, accumulate: boolean, tuning: ScanTuning = {},
  opts: { forwardCheckpoints?: boolean; combined?: { drop?: Drop }; dtWeight?: Float64Array } = {},
): Promise<Record<string, Float64Array>> {
  const gpu = await testGpu();
  const { B, L, E, N, R } = c;
  const rng = new Rng(1000 + c.E + (reverse ? 1 : 0));
  // with `combined` these are the combined output's gradients (original order); the reference
  // direction sees them flipped, halved and scaled
  const dout = randArray(rng, B * L * E, -1, 1);
  const cmb = opts.combined && scaleArg(gpu, opts.combined.drop);
  const init = gradArrays(rng, c);
  const ref = gradArrays(null, c);
  if (accumulate) {
    for (const k of Object.keys(init) as (keyof Grads)[]) ref[k].set(init[k]);
  } else {
    for (let bt = 0; bt < B * L; bt++) {
      for (let e = 0; e < E; e++) ref.dxz[bt * 2 * E + e] = init.dxz[bt * 2 * E + e]; // the x half stays
    }
  }
  refBackward(ref, opts.combined ? combinedDout(dout, c, reverse, opts.combined.drop) : dout, c, reverse);
  const t = gradTensors(gpu, init);
  const inp = upload(gpu, c);
  // with forwardCheckpoints the forward writes the checkpoints (over garbage) and the backward
  // reads them, with a scratch sized without a checkpoint region of its own
  let checkpoints: GpuTensor | undefined;
  const pre = [];
  if (opts.forwardCheckpoints) {
    const segment = selectiveScanBackwardPlan(c, tuning).segment;
    checkpoints = tensorFrom(gpu, randArray(rng, Math.max(4, scanCheckpointElements(c, segment)), -9, 9), 'checkpoints');
    // the model's forward (with `combined`, the combine fused in too) writes the checkpoints
    pre.push(selectiveScanForward(gpu, {
      ...inp, out: zerosTensor(gpu, B * L * E, 'out'), B, L, E, N, R, reverse, checkpoints: { out: checkpoints, segment },
      ...(cmb ? { combine: cmb } : {}), ...(tuning.exp2 !== undefined ? { exp2: tuning.exp2 } : {}),
    }));
  }
  await run(gpu, [...pre, ...selectiveScanBackward(gpu, {
    ...inp, ...(opts.dtWeight ? { dtWeight: tensorFrom(gpu, opts.dtWeight, 'dt_proj weight') } : {}),
    ...t, dout: tensorFrom(gpu, dout, 'dout'), scratch: scratchFor(gpu, c, tuning, checkpoints !== undefined),
    B, L, E, N, R, reverse, accumulate, ...tuning, checkpoints, ...(cmb ? { doutCombined: cmb } : {}),
  })]);
  await compareGrads(gpu, t, ref, init, c);
  const out: Record<string, Float64Array> = {};
  for (const [k, v] of Object.entries(t)) out[k] = await read(gpu, v);
  return out;
}

/**
 * Both directions of one block, as the model runs them: the forward direction overwrites its
 * gradients (the GPU buffers start as garbage), then the backward direction accumulates into
 * its own (starting from random values) and into the SAME dxz, whose z half then holds the sum.
 */
async function checkBothDirections(
  seed: number, B: number, L: number, E: number, N: number, R: number, tuning: ScanTuning, opts: { combined?: { drop?: Drop } } = {},
): Promise<void> {
  const gpu = await testGpu();
  const fwd = makeCase(seed, B, L, E, N, R);
  const bwd = makeCase(seed + 1, B, L, E, N, R);
  bwd.xz.set(fwd.xz); // one in_proj output feeds both directions
  const rng = new Rng(seed + 2);
  const doutF = randArray(rng, B * L * E, -1, 1);
  const doutB = randArray(rng, B * L * E, -1, 1);
  const garbage = gradArrays(rng, fwd);
  const initB = gradArrays(rng, bwd);
  initB.dxz = garbage.dxz; // shared
  // reference: forward direction from zeros (x half of dxz untouched), backward direction adds
  const refF = gradArrays(null, fwd);
  for (let bt = 0; bt < B * L; bt++) {
    for (let e = 0; e < E; e++) refF.dxz[bt * 2 * E + e] = garbage.dxz[bt * 2 * E + e];
  }
  const refB = gradArrays(null, bwd);
  for (const k of Object.keys(initB) as (keyof Grads)[]) refB[k].set(initB[k]);
  refB.dxz = refF.dxz;
  // with `combined`, as the model runs it: both directions read one dcmb (doutF), original order
  const comb = opts.combined;
  refBackward(refF, comb ? combinedDout(doutF, fwd, false, comb.drop) : doutF, fwd, false);
  refBackward(refB, comb ? combinedDout(doutF, bwd, true, comb.drop) : doutB, bwd, true);

  const tF = gradTensors(gpu, garbage);
  const tB = { ...gradTensors(gpu, initB), dxz: tF.dxz };
  const inF = upload(gpu, fwd);
  const inB = { ...upload(gpu, bwd), xz: inF.xz };
  const scratch = scratchFor(gpu, fwd, tuning); // one scratch serves both, dispatches run in order
  const dF = tensorFrom(gpu, doutF);
  const c = comb && { doutCombined: scaleArg(gpu, comb.drop) };
  await run(gpu, [
    ...selectiveScanBackward(gpu, { ...inF, ...tF, dout: dF, scratch, B, L, E, N, R, reverse: false, ...tuning, ...c }),
    ...selectiveScanBackward(gpu, {
      ...inB, ...tB, dout: c ? dF : tensorFrom(gpu, doutB), scratch, B, L, E, N, R, reverse: true, accumulate: true, ...tuning, ...c,
    }),
  ]);
  await compareGrads(gpu, tF, refF, garbage, fwd, { skip: ['dz'] }); // dz: checked as the sum below
  await compareGrads(gpu, tB, refB, initB, bwd);
}

/**
 * Both directions of one block as the model runs them (the second adds its dz), their partials'
 * reductions either one dispatch each (selectiveScanBackward twice) or one for both
 * (selectiveScanBackwardPair, each direction's dxdbl and scratch views of one tensor): every output.
 */
async function bothDirectionsOutputs(seed: number, c: Case, tuning: ScanTuning, pair: boolean): Promise<Record<string, Float64Array>> {
  const gpu = await testGpu();
  const { B, L, E, N, R } = c;
  const bwd = makeCase(seed + 1, B, L, E, N, R);
  bwd.xz.set(c.xz);
  const rng = new Rng(seed + 2);
  const dout = [randArray(rng, B * L * E, -1, 1), randArray(rng, B * L * E, -1, 1)];
  const init = [gradArrays(rng, c), gradArrays(rng, bwd)];
  const sizes = selectiveScanScratch(c, tuning);
  const nx = B * L * (R + 2 * N);
  const dxdbl = tensorFrom(gpu, [...init[0].dxdbl, ...new Float64Array(scanPairElements(nx) - 2 * nx), ...init[1].dxdbl], 'dxdbl pair');
  const bc = scanPairViews(zerosTensor(gpu, scanPairElements(sizes.bcPartials), 'bcPartials pair'), sizes.bcPartials);
  const par = scanPairViews(zerosTensor(gpu, scanPairElements(sizes.paramPartials), 'paramPartials pair'), sizes.paramPartials);
  const t = init.map((g) => gradTensors(gpu, g));
  t[1].dxz = t[0].dxz; // both directions' dz in one tensor
  [t[0].dxdbl, t[1].dxdbl] = scanPairViews(dxdbl, nx);
  const scratch = [0, 1].map((d) => ({ bcPartials: bc[d], paramPartials: par[d] }));
  const inp = [upload(gpu, c), { ...upload(gpu, bwd), xz: upload(gpu, c).xz }];
  const args = [0, 1].map((d) => ({
    ...inp[d], ...t[d], dout: tensorFrom(gpu, dout[d]), scratch: scratch[d], B, L, E, N, R, reverse: d === 1, accumulate: { dz: d === 1 }, ...tuning,
  }));
  await run(gpu, pair ? selectiveScanBackwardPair(gpu, [args[0], args[1]]) : [...selectiveScanBackward(gpu, args[0]), ...selectiveScanBackward(gpu, args[1])]);
  const out: Record<string, Float64Array> = {};
  for (const d of [0, 1]) for (const [k, v] of Object.entries(t[d])) out[`${k} ${d}`] = await read(gpu, v);
  return out;
}

describe('selective scan forward', () => {
  const small = makeCase(1, 3, 7, 13, 5, 3);
  const wide = makeCase(2, 3, 7, 37, 5, 3);
  const model = makeCase(3, 2, 65, 40, 16, 12);
  for (const reverse of [false, true]) {
    const dir = reverse ? 'reverse' : 'forward';
    it(`B=3 L=7 E=13 N=5, one partial workgroup per sample (${dir})`, () => checkForward(small, reverse));
    it(`B=3 L=7 E=37 N=5, three workgroups of 16, chunks of 3 tokens (${dir})`,
      () => checkForward(wide, reverse, { workgroupSize: 16, chunk: 3 }));
    it(`B=2 L=65 E=40 N=16, two workgroups of 32 (${dir})`, () => checkForward(model, reverse, { workgroupSize: 32 }));
    it(`B=3 L=7 E=37 N=5, inputs 3 tokens ahead, chunks of 3 tokens (${dir})`,
      () => checkForward(wide, reverse, { workgroupSize: 16, chunk: 3, ahead: 3 }));
    it(`B=3 L=7 E=13 N=5, inputs 8 tokens ahead, more than L (${dir})`, () => checkForward(small, reverse, { ahead: 8 }));
  }
  it('two tokens ahead in two alternating slots: the same bits as 1 and 3 tokens ahead in moving slots, chunks that start on odd and even tokens', async () => {
    for (const [c, t] of [[wide, { workgroupSize: 16, chunk: 3 }], [model, { workgroupSize: 32 }], [small, { chunk: 2 }]] as [Case, ScanTuning][]) {
      for (const reverse of [false, true]) {
        const two = await checkForward(c, reverse, { ...t, ahead: 2 });
        expect(await checkForward(c, reverse, { ...t, ahead: 1 })).toEqual(two);
        expect(await checkForward(c, reverse, { ...t, ahead: 3 })).toEqual(two);
      }
    }
  });
  it('the decay as exp2: B=2 L=65 E=40 N=16 (reverse), and dt_proj fused with inputs 2 tokens ahead (forward)', async () => {
    await checkForward(model, true, { workgroupSize: 32, exp2: true });
    await checkForwardFused(model, false, true, { workgroupSize: 32, ahead: 2, exp2: true });
  });
  it('dt_proj fused: R=12 N=16 L=65, inputs 4 tokens ahead, all tokens staged at once (forward)',
    () => checkForwardFused(model, false, true, { workgroupSize: 32, ahead: 4, chunk: 65 }));
  it('dt_proj fused: R=3, three workgroups of 16, chunks of 3 tokens, Δraw written (forward)',
    () => checkForwardFused(wide, false, true, { workgroupSize: 16, chunk: 3 }));
  it('dt_proj fused: R=12 N=16 L=65, Δraw not written (reverse)', () => checkForwardFused(model, true, false, { workgroupSize: 32 }));
  it('refuses a call with neither Δraw nor dt_proj\'s weight, and a fused R over 32', async () => {
    const gpu = await testGpu();
    const c = makeCase(1, 1, 2, 4, 2, 3);
    const { delta_raw: _, ...inp } = upload(gpu, c);
    const out = zerosTensor(gpu, 8, 'out');
    expect(() => selectiveScanForward(gpu, { ...inp, out, B: 1, L: 2, E: 4, N: 2, R: 3, reverse: false }))
      .toThrow(/pass delta_raw \(Δraw to read\) or dtWeight/);
    const c33 = makeCase(1, 1, 2, 4, 2, 33);
    expect(() => selectiveScanForward(gpu, {
      ...upload(gpu, c33), dtWeight: zerosTensor(gpu, 4 * 33, 'w'), out, B: 1, L: 2, E: 4, N: 2, R: 33, reverse: false,
    })).toThrow(/the fused dt_proj needs 1 ≤ R ≤ 32; R is 33/);
  });
});

/** The backward's forms: the segmented kernel, and the stream kernel with each way of summing over channels. */
const FORMS: [string, (gpu: Gpu) => ScanTuning][] = [
  ['segmented', () => ({ kernel: 'segmented' })],
  ['stream, sums by subgroup shuffles', (gpu) => ({ kernel: 'stream', subgroupSize: scanSubgroupSize(gpu) })],
  ['stream, sums through workgroup memory', () => ({ kernel: 'stream', subgroupSize: 0 })],
];

for (const [how, form] of FORMS) {
  const base = async (): Promise<ScanTuning> => form(await testGpu());
  describe(`selective scan backward (${how})`, () => {
    const small = makeCase(4, 3, 7, 13, 5, 3);
    it('B=3 L=7 E=13 N=5, one partial workgroup, segments 3+3+1, inputs loaded 2 tokens at a time (forward)',
      async () => checkBackward(small, false, false, { ...(await base()), tokenBlock: 2 }));
    it('B=3 L=7 E=13 N=5, one partial workgroup, segments 3+3+1 (reverse)', async () => checkBackward(small, true, false, await base()));
    it('B=3 L=7 E=37 N=5, three workgroups of 16: both directions, dz accumulating into one dxz',
      async () => checkBothDirections(5, 3, 7, 37, 5, 3, { ...(await base()), workgroupSize: 16 }));
    it('B=2 L=65 E=40 N=16 R=12, two workgroups of 32, 22 segments (reverse, accumulate)',
      async () => checkBackward(makeCase(8, 2, 65, 40, 16, 12), true, true, { ...(await base()), workgroupSize: 32 }));
    it('B=2 L=65 E=40 N=16 R=12, inputs loaded 8 tokens at a time (the GPU default; 63 tokens in pass 1, a partial last block)',
      async () => checkBackward(makeCase(11, 2, 65, 40, 16, 12), false, false, { ...(await base()), tokenBlock: 8 }));
    it('one-token segments with workgroups narrower than 2N; one segment (no checkpoints), accumulating', async () => {
      const t = await base();
      await checkBackward(small, true, false, { ...t, segment: 1, workgroupSize: 4 });
      await checkBackward(small, false, true, { ...t, segment: 7, workgroupSize: 8 });
    });
    it('N=20 (five state vectors, padded to eight in the shuffle sums), segments of 5, workgroups of 16', async () => {
      await checkBackward(makeCase(9, 2, 11, 21, 20, 4), false, false, { ...(await base()), segment: 5, workgroupSize: 16 });
    });
    it('B=2 L=65 E=40 N=16, each segment loaded when it is computed, not one ahead (forward, accumulate)',
      async () => checkBackward(makeCase(10, 2, 65, 40, 16, 12), false, true, { ...(await base()), lookahead: false }));
    if (how.startsWith('stream')) {
      it('the wide geometry (the GPU default): 128 channels a workgroup, one-token segments, blocks of 4 tokens; E=136 (reverse, accumulate)',
        async () => checkBackward(makeCase(12, 2, 65, 136, 16, 12), true, true, { ...(await base()), wide: true, tokenBlock: 4 }));
      it('the wide geometry on 192 channels a workgroup (the GPU default where 192 divides E): E=192, one-token segments, blocks of 4 tokens (forward)',
        async () => {
          const t = { ...(await base()), wide: true, tokenBlock: 4 };
          const c = makeCase(13, 2, 65, 192, 16, 12);
          // with shuffle sums 192 channels take 8.3 KB; summing through workgroup memory 36 KB, beyond 32 KiB: 128 channels (26.8 KB)
          expect(selectiveScanBackwardPlan(c, t).workgroupSize).toBe((t.subgroupSize ?? 0) > 0 ? 192 : 128);
          await checkBackward(c, false, false, t);
        });
    }
  });
}

/**
 * The split form: P lanes a channel (dividing ⌈N/4⌉), segments of S ≤ 4 tokens whose states stay in
 * registers. Workgroups of two subgroups hold 2·SGR / P channels, so E = 37 leaves idle channels
 * (lanes) in the last workgroup for every P; L = 7 and 13 end on a partial segment for S ≥ 2. Each
 * (P, S) runs one of three ways (forward overwriting, reverse accumulating, both directions with dz
 * adding into one dxz), so that every P and every S meets each way and both lengths.
 */
describe('selective scan backward (split)', () => {
  const split = async (P: number, S: number, more: ScanTuning = {}): Promise<ScanTuning> => {
    const sg = scanSubgroupSize(await testGpu());
    return { kernel: 'split', subgroupSize: sg, split: P, segment: S, workgroupSize: 2 * sg, ...more };
  };
  /** `t`, checked to plan the split kernel with P lanes a channel (not a fallback). */
  const planned = (c: Case, t: ScanTuning, P: number): ScanTuning => {
    expect(selectiveScanBackwardPlan(c, t)).toMatchObject({ kernel: 'split', split: P });
    return t;
  };
  const ways = ['forward', 'reverse, accumulating', 'both directions'] as const;
  [1, 2, 4].forEach((P, pi) => {
    for (const S of [1, 2, 3, 4]) {
      const L = (S + pi) % 2 === 1 ? 7 : 13;
      const way = ways[(S + pi) % 3];
      const R = 3;
      it(`${P} lane${P > 1 ? 's' : ''} a channel, segments of ${S}: L=${L} E=37 N=16 (${way}${L === 13 ? '; each segment loaded one ahead' : ''})`, async () => {
        const t = planned(makeCase(40 + L, 2, L, 37, 16, R), await split(P, S, L === 13 ? { tokenBlock: 4, lookahead: true } : {}), P);
        if (way === 'both directions') await checkBothDirections(40 + L, 2, L, 37, 16, R, t);
        else await checkBackward(makeCase(40 + L, 2, L, 37, 16, R), way !== 'forward', way !== 'forward', t);
      });
    }
  });
  it('the default geometry (one lane a channel, 128 channels a workgroup, segments of 4): B=2 L=65 E=40 N=16 (reverse, accumulating)', async () => {
    const c = makeCase(33, 2, 65, 40, 16, 12);
    const t: ScanTuning = { kernel: 'split', subgroupSize: scanSubgroupSize(await testGpu()) };
    expect(selectiveScanBackwardPlan(c, t)).toMatchObject({ kernel: 'split', split: 1, workgroupSize: 128, segment: 4, segments: 17 });
    await checkBackward(c, true, true, t);
  });
  it('L=65, segments of 4, inputs loaded 4 tokens at a time, each segment loaded when it is computed (the default; forward)', async () => {
    const c = makeCase(34, 2, 65, 40, 16, 12);
    await checkBackward(c, false, false, planned(c, await split(4, 4, { tokenBlock: 4, lookahead: false }), 4));
  });
  it('N=8 (two state vec4): 2 and 1 lanes a channel; 4 lanes fall back to the stream kernel', async () => {
    const c = makeCase(35, 2, 13, 37, 8, 3);
    await checkBackward(c, true, false, planned(c, await split(2, 3), 2));
    await checkBackward(c, false, true, planned(c, await split(1, 4), 1));
    expect(selectiveScanBackwardPlan(c, await split(4, 3))).toMatchObject({ kernel: 'stream', workgroupSize: 16, segment: 3 });
    expect(selectiveScanBackwardPlan(c, { ...(await split(4, 3)), split: undefined }), 'by default one lane a channel')
      .toMatchObject({ kernel: 'split', split: 1 });
  });
  it('N=20: five state vec4 on one lane, their items padded to eight; gB and gC summed apart where 2·8 items exceed a subgroup (lavapipe: 8 lanes)', async () => {
    const c = makeCase(36, 2, 7, 21, 20, 4);
    const t = await split(1, 3);
    expect(selectiveScanBackwardPlan(c, { ...t, split: undefined })).toMatchObject({ kernel: 'split', split: 1 });
    await checkBackward(c, false, false, planned(c, t, 1));
  });
});

/**
 * The forward writes the checkpoints (the state entering each segment) and the backward skips its
 * pass 1, for each backward kernel; segments that end exactly at L (no checkpoint past the last).
 */
describe('both directions\' reductions in one dispatch', () => {
  it('selectiveScanBackwardPair gives the same bits as each direction\'s own reduction, with the default and the split kernel (idle channels), and says which views are out of order', async () => {
    const s = scanSubgroupSize(await testGpu());
    const c = makeCase(95, 2, 13, 37, 16, 3);
    for (const tuning of [{}, { kernel: 'split', subgroupSize: s, workgroupSize: 2 * s, segment: 3 }] as ScanTuning[]) {
      const own = await bothDirectionsOutputs(95, c, tuning, false);
      const paired = await bothDirectionsOutputs(95, c, tuning, true);
      for (const k of Object.keys(own)) expect(paired[k], k).toEqual(own[k]);
    }
    const gpu = await testGpu();
    const { B, L, E, N, R } = c;
    const sizes = selectiveScanScratch(c, {});
    const t = gradTensors(gpu, gradArrays(null, c));
    const a = (dxdbl: GpuTensor, reverse: boolean) => ({
      ...upload(gpu, c), ...t, dxdbl, dout: zerosTensor(gpu, B * L * E), B, L, E, N, R, reverse,
      scratch: { bcPartials: zerosTensor(gpu, sizes.bcPartials), paramPartials: zerosTensor(gpu, sizes.paramPartials) },
    });
    expect(() => selectiveScanBackwardPair(gpu, [a(t.dxdbl, false), a(zerosTensor(gpu, B * L * (R + 2 * N), 'other dxdbl'), true)]))
      .toThrow(/the second direction's dxdbl must follow the first's in the same buffer/);
  });
});

describe('checkpoints written by the forward', () => {
  const sg = async (): Promise<number> => scanSubgroupSize(await testGpu());
  it('split, the default geometry: B=2 L=65 E=40 N=16, segments of 4 (reverse, accumulating)', async () => {
    const c = makeCase(61, 2, 65, 40, 16, 12);
    await checkBackward(c, true, true, { kernel: 'split', subgroupSize: await sg() }, { forwardCheckpoints: true });
  });
  it('split, 2 lanes a channel, segments of 3: L=13 E=37 N=16; segments of 4 ending at L=8 (forward)', async () => {
    const s = await sg();
    await checkBackward(makeCase(62, 2, 13, 37, 16, 3), false, false,
      { kernel: 'split', subgroupSize: s, split: 2, segment: 3, workgroupSize: 2 * s }, { forwardCheckpoints: true });
    await checkBackward(makeCase(63, 2, 8, 37, 16, 3), false, false,
      { kernel: 'split', subgroupSize: s, segment: 4, workgroupSize: 2 * s }, { forwardCheckpoints: true });
  });
  it('split with per-lane arrays in workgroup memory: A, gA and carry on 1 lane a channel (reverse, accumulating); A alone and gA with carry on 2 lanes, segments of 3 (forward)', async () => {
    const s = await sg();
    const splitPlanned = (c: Case, t: ScanTuning, P: number, rows: number): ScanTuning => {
      expect(selectiveScanBackwardPlan(c, t)).toMatchObject({ kernel: 'split', split: P, workgroupBytes: 16 * (c.L * 8 + rows) });
      return t;
    };
    const c1 = makeCase(69, 2, 65, 40, 16, 12);
    await checkBackward(c1, true, true, splitPlanned(c1,
      { kernel: 'split', subgroupSize: s, workgroupSize: 4 * s, laneMemory: ['A', 'gA', 'carry'] }, 1, 3 * 4 * 4 * s), { forwardCheckpoints: true });
    const c2 = makeCase(70, 2, 13, 37, 16, 3);
    await checkBackward(c2, false, false, splitPlanned(c2,
      { kernel: 'split', subgroupSize: s, split: 2, segment: 3, workgroupSize: 2 * s, laneMemory: ['A'] }, 2, 2 * 2 * s), { forwardCheckpoints: true });
    const c3 = makeCase(71, 2, 13, 37, 16, 3);
    await checkBackward(c3, false, false, splitPlanned(c3,
      { kernel: 'split', subgroupSize: s, split: 2, segment: 3, workgroupSize: 2 * s, laneMemory: ['gA', 'carry'], lookahead: false }, 2, 2 * 2 * 2 * s));
  });
  it('split with the segment\'s states in workgroup memory: alone on 1 lane a channel (segments of 4, reverse, accumulating), with A and the lookahead on 2 lanes (segments of 3), and one-token segments (no rows)', async () => {
    const s = await sg();
    const planned = (c: Case, t: ScanTuning, rows: number): ScanTuning => {
      expect(selectiveScanBackwardPlan(c, t)).toMatchObject({ kernel: 'split', workgroupBytes: 16 * (c.L * 2 * Math.ceil(c.N / 4) + rows) });
      return t;
    };
    const c1 = makeCase(77, 2, 65, 40, 16, 12);
    await checkBackward(c1, true, true, planned(c1, { kernel: 'split', subgroupSize: s, workgroupSize: 4 * s, laneMemory: ['states'] }, 3 * 4 * 4 * s),
      { forwardCheckpoints: true });
    const c2 = makeCase(78, 2, 13, 37, 16, 3);
    await checkBackward(c2, false, false, planned(c2,
      { kernel: 'split', subgroupSize: s, split: 2, segment: 3, workgroupSize: 2 * s, laneMemory: ['A', 'states'], lookahead: true }, (1 + 2) * 2 * 2 * s));
    const c3 = makeCase(79, 2, 13, 37, 5, 3);
    await checkBackward(c3, true, false, planned(c3, { kernel: 'split', subgroupSize: s, segment: 1, workgroupSize: s, laneMemory: ['states'] }, 0),
      { forwardCheckpoints: true });
  });
  it('split with the plain walk, the lean walk, a_t kept from the recomputation, and both: 1 lane a channel with every channel live (E=64), 2 lanes with idle ones (E=37), segments of 4 and 3', async () => {
    const s = await sg();
    const split = (c: Case, t: ScanTuning): ScanTuning => {
      expect(selectiveScanBackwardPlan(c, t).kernel).toBe('split');
      return t;
    };
    const c1 = makeCase(72, 2, 65, 64, 16, 12);
    const t1: ScanTuning = { kernel: 'split', subgroupSize: s, workgroupSize: 4 * s };
    await checkBackward(c1, true, true, split(c1, { ...t1, walk: [] }), { forwardCheckpoints: true }); // the plain walk
    await checkBackward(c1, true, true, split(c1, { ...t1, walk: ['lean', 'keep-a'] }), { forwardCheckpoints: true });
    await checkBackward(c1, false, false, split(c1, { ...t1, walk: ['keep-a'] }), { forwardCheckpoints: true });
    const c2 = makeCase(73, 2, 13, 37, 16, 3);
    const t2: ScanTuning = { kernel: 'split', subgroupSize: s, split: 2, segment: 3, workgroupSize: 2 * s };
    await checkBackward(c2, false, false, split(c2, { ...t2, walk: ['lean'] }), { forwardCheckpoints: true });
    await checkBackward(c2, true, true, split(c2, { ...t2, walk: ['lean', 'keep-a'] }));
    await expect(checkBackward(c2, true, true, split(c2, { ...t2, walk: ['fast'] as never })))
      .rejects.toThrow(/walk entries must be lean, keep-a, fold, fold2; received 'fast'/);
  });
  it('split with the first exchange of the [dB | dC] sums folded into the walk, and the second (fold2): the same bits as without, on 1 lane a channel (E=64, N=16; and N=10, whose items are padded) and 2 lanes with idle ones, the plain walk and the lean one', async () => {
    const s = await sg();
    const cases: [Case, ScanTuning, boolean][] = [
      [makeCase(74, 2, 65, 64, 16, 12), { kernel: 'split', subgroupSize: s, workgroupSize: 4 * s, walk: [] }, true],
      [makeCase(75, 2, 13, 2 * s, 10, 3), { kernel: 'split', subgroupSize: s, workgroupSize: 2 * s, segment: 3, walk: ['lean'] }, false],
      [makeCase(76, 2, 13, 37, 16, 3), { kernel: 'split', subgroupSize: s, split: 2, segment: 3, workgroupSize: 2 * s, walk: ['lean'] }, true],
    ];
    for (const [c, t, reverse] of cases) {
      expect(selectiveScanBackwardPlan(c, t).kernel).toBe('split');
      const plain = await checkBackward(c, reverse, false, t, { forwardCheckpoints: true });
      const folded = await checkBackward(c, reverse, false, { ...t, walk: [...(t.walk as ScanWalkForm[]), 'fold'] }, { forwardCheckpoints: true });
      for (const k of Object.keys(plain)) expect(folded[k], k).toEqual(plain[k]);
      if (t.split === undefined) { // one lane a channel: QS = 4 items of which fold2 pairs (0, 2) and (1, 3)
        const folded2 = await checkBackward(c, reverse, false, { ...t, walk: [...(t.walk as ScanWalkForm[]), 'fold2'] }, { forwardCheckpoints: true });
        for (const k of Object.keys(plain)) expect(folded2[k], k).toEqual(plain[k]);
      }
    }
  });
  it('split with the [dB | dC] sums carried down to single columns: the same bits as without, where each item has 4 lanes or more (N ≤ 4 on subgroups of 8; N = 3 pads its items), the plain and folded walks, idle channels', async () => {
    const s = await sg();
    const cases: [Case, ScanTuning, boolean][] = [
      [makeCase(77, 2, 65, 37, 4, 12), { kernel: 'split', subgroupSize: s, workgroupSize: 4 * s }, true],
      [makeCase(78, 2, 13, 2 * s, 3, 3), { kernel: 'split', subgroupSize: s, workgroupSize: 2 * s, segment: 3, walk: ['lean', 'fold'] }, false],
      [makeCase(79, 2, 13, 40, 4, 3), { kernel: 'split', subgroupSize: s, workgroupSize: 2 * s, segment: 2, walk: [] }, true],
    ];
    for (const [c, t, reverse] of cases) {
      expect(selectiveScanBackwardPlan(c, t)).toMatchObject({ kernel: 'split', split: 1, scalarSums: true });
      expect(selectiveScanBackwardPlan(c, { ...t, scalarSums: false }).scalarSums).toBeUndefined();
      const columns = await checkBackward(c, reverse, !reverse, t, { forwardCheckpoints: true });
      const items = await checkBackward(c, reverse, !reverse, { ...t, scalarSums: false }, { forwardCheckpoints: true });
      for (const k of Object.keys(items)) expect(columns[k], k).toEqual(items[k]);
    }
  });
  it('split with Δraw recomputed from dt_low and dt_proj\'s weight (dtWeight): as reading the Δraw the fused forward stores, to rounding, 1 and 2 lanes a channel, idle channels, exp2, the combine fused; and what it needs', async () => {
    const s = await sg();
    const gpu = await testGpu();
    const cases: [Case, ScanTuning, boolean, boolean][] = [
      [makeCase(86, 2, 65, 40, 16, 12), { kernel: 'split', subgroupSize: s, workgroupSize: 4 * s }, true, false],
      [makeCase(87, 2, 13, 37, 16, 5), { kernel: 'split', subgroupSize: s, split: 2, segment: 3, workgroupSize: 2 * s, exp2: true }, false, true],
      [makeCase(88, 3, 14, 2 * s, 8, 3), { kernel: 'split', subgroupSize: s, workgroupSize: 2 * s, segment: 2 }, true, true],
    ];
    for (const [c, t, reverse, combined] of cases) {
      const { B, L, E, N, R } = c;
      const W = randArray(new Rng(c.E + 7), E * R, -0.5, 0.5);
      // Δraw as the model's fused forward computes and stores it: the case's Δraw from now on
      const stored = zerosTensor(gpu, B * L * E, 'delta_raw');
      const inp = upload(gpu, c);
      await run(gpu, [selectiveScanForward(gpu, {
        ...inp, delta_raw: stored, dtWeight: tensorFrom(gpu, W, 'dt_proj weight'), out: zerosTensor(gpu, B * L * E, 'out'), B, L, E, N, R, reverse,
      })]);
      c.delta_raw = await read(gpu, stored);
      const o = { forwardCheckpoints: true, ...(combined ? { combined: { drop: dropRow(B) } } : {}) };
      const read_ = await checkBackward(c, reverse, !reverse, t, o);
      const rec = await checkBackward(c, reverse, !reverse, t, { ...o, dtWeight: W });
      // the float64 reference passed for both (checkBackward); the recomputed Δraw is the fused forward's
      // dot product in its order, which the shader compiler may contract differently in the two kernels:
      // the gradients then move by rounding only
      for (const k of Object.keys(read_)) expect(relErr(rec[k], read_[k]), k).toBeLessThan(1e-6);
    }
    const c = makeCase(89, 1, 5, 8, 4, 2);
    const base = { ...upload(gpu, c), ...gradTensors(gpu, gradArrays(null, c)), dout: zerosTensor(gpu, 5 * 8), B: 1, L: 5, E: 8, N: 4, R: 2, reverse: false };
    const dtWeight = zerosTensor(gpu, 16);
    expect(() => selectiveScanBackward(gpu, { ...base, dtWeight, scratch: scratchFor(gpu, c, { kernel: 'split', subgroupSize: s }), kernel: 'split', subgroupSize: s }))
      .toThrow(/dtWeight \(Δraw recomputed\) needs the 'split' kernel and the forward's checkpoints; pass delta_raw/);
    expect(() => selectiveScanBackward(gpu, { ...base, delta_raw: undefined, scratch: scratchFor(gpu, c, {}) }))
      .toThrow(/pass delta_raw \(Δraw to read\) or dtWeight \(Δraw recomputed\)/);
  });
  it('split with the decay as exp2: 1 lane a channel as loops, plain and lean (reverse, accumulating); 2 lanes written out, lean with idle channels', async () => {
    const s = await sg();
    const c1 = makeCase(82, 2, 65, 40, 16, 12);
    const t1: ScanTuning = { kernel: 'split', subgroupSize: s, workgroupSize: 4 * s, exp2: true };
    await checkBackward(c1, true, true, t1, { forwardCheckpoints: true });
    await checkBackward(c1, true, true, { ...t1, walk: ['lean'] }, { forwardCheckpoints: true });
    const c2 = makeCase(83, 2, 13, 37, 16, 3);
    await checkBackward(c2, false, false, { kernel: 'split', subgroupSize: s, split: 2, segment: 3, workgroupSize: 2 * s, walk: ['lean'], exp2: true },
      { forwardCheckpoints: true });
  });
  it('split with the [dB | dC] rows summed over the workgroup\'s subgroups: 1 lane a channel as loops (segments of 4, with the lookahead, reverse, accumulating), 2 lanes written out with idle channels (segments of 3)', async () => {
    const s = await sg();
    const c1 = makeCase(84, 2, 65, 40, 16, 12);
    const t1: ScanTuning = { kernel: 'split', subgroupSize: s, workgroupSize: 4 * s, lookahead: true, groupSums: true };
    expect(selectiveScanBackwardPlan(c1, t1)).toMatchObject({ kernel: 'split', partialsPerSample: Math.ceil(40 / (4 * s)), groupSums: true, workgroupBytes: 16 * 65 * 8 + 4 * 4 * 4 * 32 });
    await checkBackward(c1, true, true, t1, { forwardCheckpoints: true });
    const c2 = makeCase(85, 2, 13, 37, 16, 3);
    const t2: ScanTuning = { kernel: 'split', subgroupSize: s, split: 2, segment: 3, workgroupSize: 2 * s, groupSums: true };
    expect(selectiveScanBackwardPlan(c2, t2).partialsPerSample).toBe(Math.ceil(37 / s));
    await checkBackward(c2, false, false, t2, { forwardCheckpoints: true });
  });
  it('split written out per token and as loops: the same bits, on 1 lane a channel (segments of 4, with the lookahead) and 2 lanes (segments of 3, accumulating)', async () => {
    const s = await sg();
    const cases: [Case, ScanTuning, boolean][] = [
      [makeCase(80, 2, 65, 40, 16, 12), { kernel: 'split', subgroupSize: s, workgroupSize: 4 * s, lookahead: true }, false],
      [makeCase(81, 2, 13, 37, 16, 3), { kernel: 'split', subgroupSize: s, split: 2, segment: 3, workgroupSize: 2 * s }, true],
    ];
    for (const [c, t, acc] of cases) {
      const loops = await checkBackward(c, true, acc, { ...t, unroll: false }, { forwardCheckpoints: true });
      const unrolled = await checkBackward(c, true, acc, { ...t, unroll: true }, { forwardCheckpoints: true });
      for (const k of Object.keys(loops)) expect(unrolled[k], k).toEqual(loops[k]);
    }
  });
  it('stream, segments of 3 (3+3+1), and segmented, segments of 2 with a partial workgroup (reverse)', async () => {
    await checkBackward(makeCase(64, 3, 7, 37, 5, 2), true, false, { kernel: 'stream', subgroupSize: await sg(), segment: 3 }, { forwardCheckpoints: true });
    await checkBackward(makeCase(65, 3, 7, 13, 5, 2), true, true, { kernel: 'segmented', segment: 2 }, { forwardCheckpoints: true });
  });
  it('the scratch holds no checkpoint region where the forward writes them', () => {
    const c = makeCase(68, 2, 13, 8, 4, 2);
    const t: ScanTuning = { kernel: 'segmented', segment: 4 };
    expect(selectiveScanScratch(c, t).bcPartials - selectiveScanScratch(c, t, { forwardCheckpoints: true }).bcPartials)
      .toBe(scanCheckpointElements(c, 4));
  });
  it('refuses checkpoints too small for the segment, and a segment that is not a positive integer', async () => {
    const gpu = await testGpu();
    const c = makeCase(66, 2, 13, 8, 4, 2);
    const inp = upload(gpu, c);
    const out = zerosTensor(gpu, 2 * 13 * 8, 'out');
    const short = zerosTensor(gpu, scanCheckpointElements(c, 4) - 1, 'short');
    expect(() => selectiveScanForward(gpu, { ...inp, B: 2, L: 13, E: 8, N: 4, R: 2, out, reverse: false, checkpoints: { out: short, segment: 4 } }))
      .toThrow(/checkpoints\.out \(short\) holds 191 elements, needs 192/);
    expect(() => selectiveScanForward(gpu, { ...inp, B: 2, L: 13, E: 8, N: 4, R: 2, out, reverse: false, checkpoints: { out: short, segment: 0 } }))
      .toThrow(/checkpoints\.segment must be a positive integer; received 0/);
  });
  it('VIM_SCAN_CHECKPOINTS chooses where they are written; by default the forward where segments hold 2 tokens or more', () => {
    const plan = (segment: number) => ({ ...selectiveScanBackwardPlan(makeCase(67, 1, 9, 8, 4, 2), { kernel: 'segmented', segment }) });
    withEnv('VIM_SCAN_CHECKPOINTS', () => {
      delete process.env.VIM_SCAN_CHECKPOINTS;
      expect(scanCheckpointsInForward(plan(4))).toBe(true);
      expect(scanCheckpointsInForward(plan(1))).toBe(false);
      process.env.VIM_SCAN_CHECKPOINTS = 'backward';
      expect(scanCheckpointsInForward(plan(4))).toBe(false);
      process.env.VIM_SCAN_CHECKPOINTS = 'forward';
      expect(scanCheckpointsInForward(plan(1))).toBe(true);
      process.env.VIM_SCAN_CHECKPOINTS = 'both';
      expect(() => scanCheckpointsInForward(plan(4))).toThrow("VIM_SCAN_CHECKPOINTS must be 'forward' or 'backward'; it is 'both'");
    });
  });
});

describe('Δraw stored or recomputed', () => {
  it("scanRecomputesDelta: by default where the split kernel has the forward's checkpoints and the workgroup memory; VIM_SCAN_DELTA pins it", () => {
    const shape = { B: 256, L: 65, E: 384, N: 16, R: 12 };
    const split = selectiveScanBackwardPlan(shape, { kernel: 'split', subgroupSize: 32 });
    const stream = selectiveScanBackwardPlan(shape, { kernel: 'stream', subgroupSize: 32 });
    const extra = 16 * 3 * (65 + split.workgroupSize); // dt_low of the L tokens and the workgroup's dt_proj rows
    withEnv('VIM_SCAN_DELTA', () => {
      delete process.env.VIM_SCAN_DELTA;
      expect(scanRecomputesDelta(split, shape, true, 32768)).toBe(true);
      expect(scanRecomputesDelta(split, shape, false, 32768)).toBe(false);
      expect(scanRecomputesDelta(stream, shape, true, 32768)).toBe(false);
      expect(scanRecomputesDelta(split, shape, true, split.workgroupBytes + extra)).toBe(true);
      expect(scanRecomputesDelta(split, shape, true, split.workgroupBytes + extra - 1)).toBe(false);
      process.env.VIM_SCAN_DELTA = 'stored';
      expect(scanRecomputesDelta(split, shape, true, 32768)).toBe(false);
      process.env.VIM_SCAN_DELTA = 'recomputed';
      expect(scanRecomputesDelta(split, shape, true, 32768)).toBe(true);
      expect(() => scanRecomputesDelta(stream, shape, true, 32768)).toThrow(/VIM_SCAN_DELTA=recomputed needs the split backward \(VIM_SCAN_KERNEL=split\) with the forward's checkpoints/);
      process.env.VIM_SCAN_DELTA = 'yes';
      expect(() => scanRecomputesDelta(split, shape, true, 32768)).toThrow("VIM_SCAN_DELTA must be 'stored' or 'recomputed'; it is 'yes'");
    });
  });
});

describe("bench-vim --check's scan checks", () => {
  it('pass as the model runs the scans, with the split backward recomputing Δraw and with the default kernel storing it, both directions\' reductions in one dispatch too', async () => {
    const gpu = await testGpu();
    const cfg = loadConfig('vim-nano');
    for (const kernel of ['split', undefined]) {
      const rows = await withEnv('VIM_SCAN_KERNEL', async () => {
        if (kernel) process.env.VIM_SCAN_KERNEL = kernel;
        else delete process.env.VIM_SCAN_KERNEL;
        const plan = selectiveScanBackwardPlan({ B: 2, L: cfg.L, E: cfg.E, N: cfg.N, R: cfg.R }, scanTuning(gpu));
        const rec = scanRecomputesDelta(plan, { B: 2, L: cfg.L, E: cfg.E, N: cfg.N, R: cfg.R }, scanCheckpointsInForward(plan), gpu.limits.maxComputeWorkgroupStorageSize);
        expect(rec).toBe(kernel === 'split');
        return runKernelChecks(gpu, cfg, 2, { filter: /selective scan/ });
      });
      expect(rows.map((r) => [r.kernel, r.pass])).toEqual([
        ["selective scan forward direction, the combine's backward fused, drop path", true],
        ['selective scan backward direction, the combine fused both ways, drop path', true],
        ['selective scan reductions of both directions in one dispatch', true],
        ['selective scan forward, dt_proj fused', true],
      ]);
    }
  });
});

describe('the backward plan', () => {
  it('takes the wide stream geometry where asked, it fits and nothing is pinned', () => {
    const tiny = { B: 256, L: 65, E: 384, N: 16, R: 12 };
    const wide = selectiveScanBackwardPlan(tiny, { kernel: 'stream', subgroupSize: 32, wide: true, maxCheckpointBytes: 2 ** 31 });
    expect([wide.kernel, wide.workgroupSize, wide.segment, wide.segments, wide.subgroupSize]).toEqual(['stream', 192, 1, 65, 32]);
    expect(wide.workgroupBytes, 'B, C of 65 tokens; one-token segments keep no states in workgroup memory').toBe(16 * (65 * 8 + 1 + 1));
    // 192 channels only where they divide E; else 128 (no idle channels: E = 256, 136)
    for (const E of [256, 136]) {
      expect(selectiveScanBackwardPlan({ ...tiny, E }, { kernel: 'stream', subgroupSize: 32, wide: true }).workgroupSize).toBe(128);
    }
    expect(selectiveScanBackwardPlan({ ...tiny, E: 576 }, { kernel: 'stream', subgroupSize: 32, wide: true }).workgroupSize).toBe(192);
    const ck = 256 * 64 * 16 * 384 * 4; // B·(L−1)·4⌈N/4⌉·E floats: 403 MB
    expect(selectiveScanScratch(tiny, { kernel: 'stream', subgroupSize: 32, wide: true }).bcPartials * 4).toBeGreaterThanOrEqual(ck);
    const narrow = selectiveScanBackwardPlan(tiny, { kernel: 'stream', subgroupSize: 32 });
    expect([narrow.workgroupSize, narrow.segment]).toEqual([64, 3]);
    // checkpoints beyond the binding, a pinned geometry, or B, C beyond workgroup memory: the usual plan
    expect(selectiveScanBackwardPlan(tiny, { kernel: 'stream', wide: true, maxCheckpointBytes: ck - 1 }).segment).toBe(3);
    expect(selectiveScanBackwardPlan(tiny, { kernel: 'stream', wide: true, workgroupSize: 32 }).workgroupSize).toBe(32);
    expect(selectiveScanBackwardPlan(tiny, { kernel: 'stream', wide: true, segment: 2 })).toMatchObject({ workgroupSize: 64, segment: 2 });
    expect(selectiveScanBackwardPlan({ ...tiny, L: 300 }, { kernel: 'stream', wide: true }).workgroupSize).toBeLessThan(128);
  });

  it("plans the stream kernel within the adapter's larger workgroup memory only where the sample's B, C do not fit 32 KiB", () => {
    const p2 = { B: 256, L: 257, E: 256, N: 16, R: 8 }; // 2-px patches on 32×32 images: 256 patches + the class token
    const t = { kernel: 'stream' as const, subgroupSize: 32, wide: true, maxCheckpointBytes: 2 ** 31 };
    expect(selectiveScanBackwardPlan(p2, t).kernel, 'B, C of 257 tokens alone take 32.9 KB').toBe('segmented');
    const big = selectiveScanBackwardPlan(p2, { ...t, maxWorkgroupBytes: 49152 });
    expect([big.kernel, big.workgroupSize, big.segment, big.workgroupBytes]).toEqual(['stream', 128, 1, 16 * (257 * 8 + 1 + 1)]);
    const narrow = selectiveScanBackwardPlan(p2, { ...t, maxWorkgroupBytes: 49152, maxCheckpointBytes: 2 ** 28 });
    expect([narrow.kernel, narrow.workgroupSize, narrow.segment, narrow.workgroupBytes]).toEqual(['stream', 64, 3, 16 * (257 * 8 + 2 * 4 * 64 + 1)]);
    expect(selectiveScanBackwardPlan(p2, { ...t, maxWorkgroupBytes: 40000, maxCheckpointBytes: 2 ** 28 }), 'shorter segments first').toMatchObject({ workgroupSize: 64, segment: 2 });
    expect(selectiveScanBackwardPlan(p2, { ...t, maxWorkgroupBytes: 34000, maxCheckpointBytes: 2 ** 28 })).toMatchObject({ workgroupSize: 64, segment: 1 });
    // shapes that fit 32 KiB keep their plan whatever the adapter allows
    const tiny = { B: 256, L: 65, E: 384, N: 16, R: 12 };
    expect(selectiveScanBackwardPlan(tiny, { ...t, maxWorkgroupBytes: 49152, maxCheckpointBytes: 1 })).toMatchObject({ workgroupSize: 64, segment: 3 });
  });

  it('sums by shuffles where the adapter allows it, one partial row per subgroup', async () => {
    const gpu = await testGpu();
    const sg = scanSubgroupSize(gpu);
    expect(sg, 'lavapipe and the GPUs this runs on have one subgroup size').toBeGreaterThan(0);
    const p = selectiveScanBackwardPlan({ B: 2, L: 65, E: 40, N: 16, R: 12 }, { kernel: 'stream', subgroupSize: sg, workgroupSize: 32 });
    expect(p).toMatchObject({ kernel: 'stream', subgroupSize: sg, workgroupsPerSample: 2, partialsPerSample: 2 * (32 / sg) });
  });

  it('plans the split kernel where asked and where it can run, else the stream kernel', () => {
    const tiny = { B: 256, L: 65, E: 384, N: 16, R: 12 };
    const t = { kernel: 'split' as const, subgroupSize: 32 };
    expect(selectiveScanBackwardPlan(tiny, t), 'by default one lane a channel, 192 channels a workgroup, segments of 4').toEqual({
      kernel: 'split', split: 1, workgroupSize: 192, segment: 4, segments: 17, workgroupsPerSample: 2, subgroupSize: 32,
      partialsPerSample: 12, workgroupBytes: 16 * 65 * 8, scalarSums: true,
    });
    expect(selectiveScanBackwardPlan(tiny, { ...t, split: 4, segment: 2 }), 'more lanes: 256 invocations')
      .toMatchObject({ kernel: 'split', split: 4, workgroupSize: 256, segment: 2, segments: 33, workgroupsPerSample: 6, partialsPerSample: 48 });
    expect(selectiveScanBackwardPlan(tiny, { ...t, split: 2, segment: 4, workgroupSize: 192 }))
      .toMatchObject({ kernel: 'split', split: 2, segment: 4, segments: 17, workgroupsPerSample: 4, partialsPerSample: 24 });
    expect(selectiveScanBackwardPlan(tiny, { ...t, split: 1, workgroupSize: 256 }), 'E = 384 on 256 channels: two workgroups, the second half idle')
      .toMatchObject({ kernel: 'split', split: 1, workgroupsPerSample: 2, partialsPerSample: 16 });
    // scratch: a partial row per subgroup, then the checkpoints of 16 segments
    expect(selectiveScanScratch(tiny, t).bcPartials).toBe(256 * 12 * 65 * 32 + 256 * 16 * 16 * 384);
    // no subgroups, lanes that do not divide the states or exceed the subgroup, a workgroup not a
    // multiple of the subgroup: the stream kernel's plan for the same tuning
    expect(selectiveScanBackwardPlan(tiny, { kernel: 'split' })).toEqual(selectiveScanBackwardPlan(tiny, { kernel: 'stream' }));
    expect(selectiveScanBackwardPlan(tiny, { ...t, subgroupSize: 0, wide: true }))
      .toEqual(selectiveScanBackwardPlan(tiny, { kernel: 'stream', subgroupSize: 0, wide: true }));
    expect(selectiveScanBackwardPlan({ ...tiny, N: 8 }, { ...t, split: 4 }).kernel).toBe('stream');
    expect(selectiveScanBackwardPlan(tiny, { ...t, subgroupSize: 2, split: 4 }).kernel).toBe('stream');
    expect(selectiveScanBackwardPlan(tiny, { ...t, workgroupSize: 48 })).toMatchObject({ kernel: 'stream', workgroupSize: 48 });
    expect(selectiveScanBackwardPlan(tiny, { ...t, subgroupSize: 4, split: 4 }), 'four lanes in a subgroup of four').toMatchObject({ kernel: 'split', split: 4 });
    // the sample's B, C beyond 32 KiB: within the adapter's larger memory, else stream (here: segmented)
    const long = { B: 2, L: 300, E: 40, N: 32, R: 12 };
    expect(selectiveScanBackwardPlan(long, t).kernel).toBe('segmented');
    expect(selectiveScanBackwardPlan(long, { ...t, maxWorkgroupBytes: 98304 })).toMatchObject({ kernel: 'split', workgroupBytes: 16 * 300 * 16 });
    expect(selectiveScanBackwardPlan(tiny, { ...t, laneMemory: ['A', 'gA'], maxWorkgroupBytes: 49152 }), 'two per-lane arrays of 4 vec4 for 192 lanes')
      .toMatchObject({ kernel: 'split', workgroupBytes: 16 * (65 * 8 + 2 * 4 * 192) });
    expect(selectiveScanBackwardPlan(tiny, { ...t, laneMemory: ['A', 'gA'] }).kernel, 'beyond 32 KiB where the adapter has no more').toBe('stream');
    expect(() => selectiveScanBackwardPlan(tiny, { ...t, laneMemory: ['h'] as never })).toThrow(/laneMemory entries must be A, gA, carry, states; received 'h'/);
    expect(() => selectiveScanBackwardPlan(tiny, { ...t, split: 3 })).toThrow(/split \(lanes per channel\) must be 1, 2 or 4; received 3/);
    expect(() => selectiveScanBackwardPlan(tiny, { ...t, segment: 5 })).toThrow(/the split kernel's segment must be an integer in 1…4; received 5/);
    expect(() => selectiveScanBackwardPlan(tiny, { ...t, segment: 0 })).toThrow(/the split kernel's segment must be an integer in 1…4; received 0/);
  });

  it("serves the stream kernel with the segmented one where the sample's B, C do not fit workgroup memory", () => {
    const long = { B: 2, L: 300, E: 40, N: 32, R: 12 };
    expect(selectiveScanBackwardPlan(long, { kernel: 'stream' }).kernel).toBe('segmented');
    expect(selectiveScanBackwardPlan({ ...long, L: 65, N: 16 }, { kernel: 'stream' }).kernel).toBe('stream');
    expect(() => selectiveScanBackwardPlan(long, { kernel: 'stream', segment: 9 })).toThrow(/segment must be an integer in 1…8/);
  });
});

describe('VIM_SCAN_KERNEL', () => {
  it('chooses the backward kernel when a call does not, and refuses other values', async () => {
    await withEnv('VIM_SCAN_KERNEL', async () => {
      delete process.env.VIM_SCAN_KERNEL;
      expect(scanKernelDefault()).toBe('segmented');
      expect(scanKernelDefault(await testGpu()), 'a CPU adapter gets the stream kernel').toBe('stream');
      process.env.VIM_SCAN_KERNEL = 'stream';
      expect(scanKernelDefault()).toBe('stream');
      process.env.VIM_SCAN_KERNEL = 'split';
      expect(scanKernelDefault(await testGpu())).toBe('split');
      process.env.VIM_SCAN_KERNEL = 'chunked';
      expect(() => scanKernelDefault()).toThrow(/VIM_SCAN_KERNEL must be 'segmented', 'stream' or 'split'; it is 'chunked'/);
    });
  });
});

describe('the backward on a GPU by default', () => {
  it('is the split kernel with robustness off: one lane a channel, 4-token segments, 192 channels where 192 divides E', () => {
    withEnv('VIM_SCAN_KERNEL', () => {
      delete process.env.VIM_SCAN_KERNEL;
      const gpu = (toggles: string[]) => ({ info: { isCpu: false }, toggles }) as unknown as Parameters<typeof scanKernelDefault>[0];
      expect(scanKernelDefault(gpu(['disable_robustness', 'disable_workgroup_init']))).toBe('split');
      expect(scanKernelDefault(gpu([])), 'robustness on').toBe('segmented');
    });
    const tiny = { B: 256, L: 65, E: 384, N: 16, R: 12 };
    const t = { kernel: 'split' as const, subgroupSize: 32, wide: true, maxCheckpointBytes: 2 ** 31, maxWorkgroupBytes: 49152 };
    expect(selectiveScanBackwardPlan(tiny, t)).toMatchObject({
      kernel: 'split', split: 1, workgroupSize: 192, segment: 4, segments: 17, workgroupsPerSample: 2, partialsPerSample: 12, workgroupBytes: 16 * 65 * 8,
    });
    expect(selectiveScanBackwardPlan({ ...tiny, E: 256 }, t)).toMatchObject({ kernel: 'split', workgroupSize: 128, workgroupsPerSample: 2 });
    expect(describeScanBackwardPlan(selectiveScanBackwardPlan(tiny, t)), "bench-vim's header").toBe('split (1 lane a channel, 192 invocations a ' +
      'workgroup, segments of 4 tokens, 8320 bytes of workgroup memory, sums over channels by shuffles in subgroups of 32 down to one column a lane)');
    // the checkpoints of 4-token segments: B·16·N·E floats
    const ck = 4 * 256 * 16 * 16 * 384;
    expect(selectiveScanScratch(tiny, t).bcPartials * 4).toBeGreaterThanOrEqual(ck);
    expect(selectiveScanBackwardPlan(tiny, { ...t, maxCheckpointBytes: ck - 1 }).kernel, 'checkpoints past the binding').toBe('stream');
    expect(selectiveScanBackwardPlan(tiny, { ...t, subgroupSize: 0 }).kernel, 'no subgroups').not.toBe('split');
  });
});

describe('VIM_SCAN_SPLIT', () => {
  it('selects the split kernel with VIM_SCAN_KERNEL=split, pins its lanes a channel, and refuses other values', async () => {
    const gpu = await testGpu();
    const keys = ['VIM_SCAN_KERNEL', 'VIM_SCAN_SPLIT', 'VIM_SCAN_SEGMENT', 'VIM_SCAN_WORKGROUP'];
    const shape = { B: 2, L: 65, E: 40, N: 16, R: 12 };
    withEnv(keys, () => {
      for (const k of keys) delete process.env[k];
      expect(scanTuning(gpu).kernel, 'never by default').not.toBe('split');
      expect(selectiveScanBackwardPlan(shape, scanTuning(gpu)).kernel).toBe('stream');
      process.env.VIM_SCAN_KERNEL = 'split';
      expect(selectiveScanBackwardPlan(shape, scanTuning(gpu)), 'the default lanes and geometry')
        .toMatchObject({ kernel: 'split', split: 1, workgroupSize: 128, segment: 4 });
      process.env.VIM_SCAN_SPLIT = '2';
      process.env.VIM_SCAN_SEGMENT = '3';
      process.env.VIM_SCAN_WORKGROUP = '64';
      expect(scanTuningFromEnv()).toEqual({ workgroupSize: 64, segment: 3, split: 2 });
      expect(selectiveScanBackwardPlan(shape, scanTuning(gpu)))
        .toMatchObject({ kernel: 'split', split: 2, workgroupSize: 64, segment: 3, segments: 22, workgroupsPerSample: 2 });
      process.env.VIM_SCAN_SPLIT = '3';
      expect(() => scanTuningFromEnv()).toThrow(/VIM_SCAN_SPLIT must be 1, 2 or 4; it is '3'/);
      process.env.VIM_SCAN_SPLIT = '8';
      expect(() => scanTuningFromEnv()).toThrow(/VIM_SCAN_SPLIT must be an integer in 1…4; it is '8'/);
    });
  });
});

describe('VIM_SCAN_LOOKAHEAD, VIM_SCAN_LANE_MEMORY and VIM_SCAN_UNROLL', () => {
  it('set the split backward\'s lookahead, its per-lane arrays in workgroup memory and its unrolled walk, and refuse other values', () => {
    const keys = ['VIM_SCAN_LOOKAHEAD', 'VIM_SCAN_LANE_MEMORY', 'VIM_SCAN_UNROLL', 'VIM_SCAN_EXP2', 'VIM_SCAN_WGSUM', 'VIM_SCAN_SCALAR_SUMS'];
    withEnv(keys, () => {
      for (const k of keys) delete process.env[k];
      expect(scanTuningFromEnv()).toEqual({});
      process.env.VIM_SCAN_LOOKAHEAD = '0';
      process.env.VIM_SCAN_LANE_MEMORY = 'A, carry';
      expect(scanTuningFromEnv()).toEqual({ lookahead: false, laneMemory: ['A', 'carry'] });
      process.env.VIM_SCAN_LANE_MEMORY = 'none';
      process.env.VIM_SCAN_LOOKAHEAD = '1';
      expect(scanTuningFromEnv()).toEqual({ lookahead: true });
      process.env.VIM_SCAN_LOOKAHEAD = 'yes';
      expect(() => scanTuningFromEnv()).toThrow(/VIM_SCAN_LOOKAHEAD must be 0 or 1; it is 'yes'/);
      delete process.env.VIM_SCAN_LOOKAHEAD;
      process.env.VIM_SCAN_LANE_MEMORY = 'A,h';
      expect(() => scanTuningFromEnv()).toThrow(/VIM_SCAN_LANE_MEMORY must be a comma list of A, gA, carry, states \(or none\); it is 'A,h'/);
      delete process.env.VIM_SCAN_LANE_MEMORY;
      for (const [name, key] of [['VIM_SCAN_UNROLL', 'unroll'], ['VIM_SCAN_EXP2', 'exp2'], ['VIM_SCAN_WGSUM', 'groupSums'],
        ['VIM_SCAN_SCALAR_SUMS', 'scalarSums']]) {
        process.env[name] = '0';
        expect(scanTuningFromEnv()).toEqual({ [key]: false });
        process.env[name] = 'no';
        expect(() => scanTuningFromEnv()).toThrow(new RegExp(`${name} must be 0 or 1; it is 'no'`));
        delete process.env[name];
      }
    });
  });
});

describe('VIM_SCAN_DIAG and the parameter reduction\'s workgroup', () => {
  it('VIM_SCAN_DIAG pins the parts the backward skips (1…255), and refuses other values', () => {
    withEnv('VIM_SCAN_DIAG', () => {
      process.env.VIM_SCAN_DIAG = '5';
      expect(scanTuningFromEnv()).toEqual({ diag: 5 });
      process.env.VIM_SCAN_DIAG = '192';
      expect(scanTuningFromEnv()).toEqual({ diag: 192 });
      process.env.VIM_SCAN_DIAG = '256';
      expect(() => scanTuningFromEnv()).toThrow(/VIM_SCAN_DIAG must be an integer in 1…255; it is '256'/);
    });
  });
  it('VIM_SCAN_FORWARD_DIAG pins the forward\'s bits (64 … 2048), and refuses the backward\'s', () => {
    withEnv('VIM_SCAN_FORWARD_DIAG', () => {
      process.env.VIM_SCAN_FORWARD_DIAG = '3392';
      expect(scanForwardTuningFromEnv()).toEqual({ forwardDiag: 3392 });
      process.env.VIM_SCAN_FORWARD_DIAG = '65';
      expect(() => scanForwardTuningFromEnv()).toThrow(/VIM_SCAN_FORWARD_DIAG takes the bits 64 … 2048; it is '65'/);
      process.env.VIM_SCAN_FORWARD_DIAG = '4096';
      expect(() => scanForwardTuningFromEnv()).toThrow(/VIM_SCAN_FORWARD_DIAG must be an integer in 1…4095/);
    });
  });
  it('the partials\' reduction takes 32 × 32 where 1024 invocations are allowed, else 16 × 16; VIM_SCAN_REDUCE_PARAMS pins it within the limit, and a pinned 8 × 8 sums right', async () => {
    const gpu = (most: number) => ({ limits: { maxComputeInvocationsPerWorkgroup: most } }) as unknown as Gpu;
    await withEnv('VIM_SCAN_REDUCE_PARAMS', async () => {
      delete process.env.VIM_SCAN_REDUCE_PARAMS;
      expect(reduceParamsGeometry(gpu(1024))).toEqual([32, 32]);
      expect(reduceParamsGeometry(gpu(256))).toEqual([16, 16]);
      process.env.VIM_SCAN_REDUCE_PARAMS = '64x4';
      expect(reduceParamsGeometry(gpu(256))).toEqual([64, 4]);
      for (const bad of ['32x32', '3x3', '8x4', 'wide']) {
        process.env.VIM_SCAN_REDUCE_PARAMS = bad;
        expect(() => reduceParamsGeometry(gpu(256)), bad).toThrow(new RegExp(`VIM_SCAN_REDUCE_PARAMS must be COLSxLANES, powers of two whose product is 64…256 \\(such as 16x16\\); it is '${bad}'`));
      }
      process.env.VIM_SCAN_REDUCE_PARAMS = '8x8';
      await checkBackward(makeCase(90, 3, 7, 37, 5, 2), true, true, { kernel: 'stream', subgroupSize: scanSubgroupSize(await testGpu()), segment: 3 },
        { forwardCheckpoints: true });
    });
  });
});

describe('VIM_SCAN_WALK', () => {
  it('sets the split backward\'s forms of the walk, and refuses other values', () => {
    withEnv('VIM_SCAN_WALK', () => {
      process.env.VIM_SCAN_WALK = 'lean, keep-a';
      expect(scanTuningFromEnv()).toEqual({ walk: ['lean', 'keep-a'] });
      process.env.VIM_SCAN_WALK = 'none'; // the plain walk, where the default is lean
      expect(scanTuningFromEnv()).toEqual({ walk: [] });
      process.env.VIM_SCAN_WALK = 'fast';
      expect(() => scanTuningFromEnv()).toThrow(/VIM_SCAN_WALK must be a comma list of lean, keep-a, fold, fold2 \(or none\); it is 'fast'/);
    });
  });
});

describe('VIM_SCAN_WORKGROUP and VIM_SCAN_SEGMENT', () => {
  it('pin the backward geometry where set, and refuse what is not a positive integer', () => {
    const saved = { wg: process.env.VIM_SCAN_WORKGROUP, seg: process.env.VIM_SCAN_SEGMENT };
    const restore = (k: string, v: string | undefined) => { if (v === undefined) delete process.env[k]; else process.env[k] = v; };
    try {
      delete process.env.VIM_SCAN_WORKGROUP;
      delete process.env.VIM_SCAN_SEGMENT;
      expect(scanTuningFromEnv()).toEqual({});
      process.env.VIM_SCAN_WORKGROUP = '128';
      process.env.VIM_SCAN_SEGMENT = '1';
      const g = scanTuningFromEnv();
      expect(g).toEqual({ workgroupSize: 128, segment: 1 });
      const plan = selectiveScanBackwardPlan({ B: 2, L: 65, E: 384, N: 16, R: 12 }, { kernel: 'stream', ...g });
      expect([plan.kernel, plan.workgroupSize, plan.segment, plan.segments]).toEqual(['stream', 128, 1, 65]);
      process.env.VIM_SCAN_SEGMENT = '0';
      expect(() => scanTuningFromEnv()).toThrow(/VIM_SCAN_SEGMENT must be an integer in 1…1024; it is '0'/);
      process.env.VIM_SCAN_SEGMENT = '';
      process.env.VIM_SCAN_WORKGROUP = '64x';
      expect(() => scanTuningFromEnv()).toThrow(/VIM_SCAN_WORKGROUP must be an integer/);
    } finally {
      restore('VIM_SCAN_WORKGROUP', saved.wg);
      restore('VIM_SCAN_SEGMENT', saved.seg);
    }
  });
});

/**
 * The combine fused into the backward direction's forward, as the model runs it: the forward
 * direction's scan writes y_f into `out` (which starts as garbage), then the backward direction's
 * scan adds its output there at the original tokens · 0.5 (· the factors). Against both
 * directions of the float64 reference combined in float64. With `model`, the backward direction
 * also computes Δraw from dt_proj's weight, writes it and writes its checkpoints (the training
 * forward): those against a forward without the combine, bit for bit.
 */
async function checkForwardCombined(
  seed: number, B: number, L: number, E: number, N: number, R: number, tuning: ScanTuning, drop?: Drop, model = false,
): Promise<void> {
  const gpu = await testGpu();
  const fwd = makeCase(seed, B, L, E, N, R);
  const bwd = makeCase(seed + 1, B, L, E, N, R);
  bwd.xz.set(fwd.xz); // one in_proj output feeds both directions
  const inF = upload(gpu, fwd);
  const inB = { ...upload(gpu, bwd), xz: inF.xz };
  const out = tensorFrom(gpu, randArray(new Rng(seed + 2), B * L * E, -9, 9), 'cmb');
  const shape = { B, L, E, N, R };
  const extra: Parameters<typeof selectiveScanForward>[1][] = [];
  let deltaB = bwd.delta_raw;
  let bwdArgs: Partial<Parameters<typeof selectiveScanForward>[1]> = {};
  if (model) {
    const W = randArray(new Rng(seed + 3), E * R, -0.5, 0.5); // dt_proj's weight (E, R)
    deltaB = new Float64Array(B * L * E);
    for (let bt = 0; bt < B * L; bt++) {
      for (let e = 0; e < E; e++) {
        let s = 0;
        for (let r = 0; r < R; r++) s += bwd.xdbl[bt * (R + 2 * N) + r] * W[e * R + r];
        deltaB[bt * E + e] = s;
      }
    }
    const segment = 4;
    const ckN = Math.max(4, scanCheckpointElements(shape, segment));
    const w = tensorFrom(gpu, W, 'dt weight');
    bwdArgs = {
      dtWeight: w, delta_raw: zerosTensor(gpu, B * L * E, 'delta_raw out'), checkpoints: { out: zerosTensor(gpu, ckN, 'ckpt'), segment },
    };
    // the same forward without the combine, for its checkpoints
    extra.push({
      ...inB, ...shape, reverse: true, ...tuning, out: zerosTensor(gpu, B * L * E, 'y_b'), dtWeight: w,
      delta_raw: zerosTensor(gpu, B * L * E, 'delta_raw out 2'), checkpoints: { out: zerosTensor(gpu, ckN, 'ckpt 2'), segment },
    });
  }
  await run(gpu, [
    selectiveScanForward(gpu, { ...inF, ...shape, out, reverse: false, ...tuning }),
    selectiveScanForward(gpu, { ...inB, ...shape, ...bwdArgs, out, reverse: true, combine: scaleArg(gpu, drop), ...tuning }),
    ...extra.map((a) => selectiveScanForward(gpu, a)),
  ]);
  const yF = new Float64Array(B * L * E);
  const yB = new Float64Array(B * L * E);
  selective_scan_forward(yF, fwd.u, fwd.delta_raw, fwd.dt_bias, fwd.A_log, fwd.Bm, fwd.Cm, fwd.Dskip, fwd.xz, B, L, E, N, false);
  selective_scan_forward(yB, bwd.u, deltaB, bwd.dt_bias, bwd.A_log, bwd.Bm, bwd.Cm, bwd.Dskip, bwd.xz, B, L, E, N, true);
  const want = new Float64Array(B * L * E);
  combine_forward(want, yF, yB, B, L, E, drop?.row ?? null);
  const got = await read(gpu, out);
  expect(relErr(got, want)).toBeLessThan(TOL);
  if (drop) expect(got.subarray(0, L * E).every((v) => v === 0), 'the dropped sample').toBe(true);
  if (model) {
    expect(relErr(await read(gpu, bwdArgs.delta_raw as GpuTensor), deltaB)).toBeLessThan(TOL);
    const plain = extra[0];
    expect(await read(gpu, bwdArgs.checkpoints!.out), 'checkpoints as without the combine').toEqual(await read(gpu, plain.checkpoints!.out));
  }
}

describe('the combine fused into the scan forward', () => {
  for (const drop of [undefined, dropRow(3)]) {
    const how = drop ? 'with drop-path factors' : 'without factors';
    it(`B=3 L=7 E=13 N=5, one partial workgroup per sample (${how})`, () => checkForwardCombined(21, 3, 7, 13, 5, 3, {}, drop));
    it(`B=3 L=7 E=37 N=5, three workgroups of 16, chunks of 3 tokens (${how})`,
      () => checkForwardCombined(23, 3, 7, 37, 5, 3, { workgroupSize: 16, chunk: 3 }, drop));
    it(`B=3 L=7 E=37 N=5, inputs 4 tokens ahead, chunks of 3 tokens (${how})`,
      () => checkForwardCombined(23, 3, 7, 37, 5, 3, { workgroupSize: 16, chunk: 3, ahead: 4 }, drop));
  }
  it('B=2 L=65 E=40 N=16, two workgroups of 32, as the training forward: dt_proj fused, Δraw and checkpoints written (drop path)',
    () => checkForwardCombined(25, 2, 65, 40, 16, 12, { workgroupSize: 32 }, dropRow(2), true));
  it('the same with inputs 4 tokens ahead and all tokens staged at once',
    () => checkForwardCombined(25, 2, 65, 40, 16, 12, { workgroupSize: 32, ahead: 4, chunk: 65 }, dropRow(2), true));
  it('the forward direction may combine too: into the other direction\'s output already in original order', async () => {
    const gpu = await testGpu();
    const c = makeCase(27, 3, 9, 13, 5, 3);
    const { B, L, E, N, R } = c;
    const other = randArray(new Rng(28), B * L * E, -1, 1);
    const drop = dropRow(B);
    const out = tensorFrom(gpu, other, 'other');
    await run(gpu, [selectiveScanForward(gpu, { ...upload(gpu, c), B, L, E, N, R, out, reverse: false, combine: scaleArg(gpu, drop) })]);
    const y = new Float64Array(B * L * E);
    selective_scan_forward(y, c.u, c.delta_raw, c.dt_bias, c.A_log, c.Bm, c.Cm, c.Dskip, c.xz, B, L, E, N, false);
    const want = new Float64Array(B * L * E); // (other + y_f) / 2 · factor, all in original order
    for (let b = 0; b < B; b++) {
      for (let t = 0; t < L; t++) {
        for (let e = 0; e < E; e++) {
          const i = (b * L + t) * E + e;
          want[i] = ((other[i] + y[i]) / 2) * drop.row[b];
        }
      }
    }
    expect(relErr(await read(gpu, out), want)).toBeLessThan(TOL);
  });
  it('refuses a factor table too short for the batch', async () => {
    const gpu = await testGpu();
    const c = makeCase(29, 2, 5, 8, 4, 2);
    const out = zerosTensor(gpu, 2 * 5 * 8, 'out');
    const scale = { t: zerosTensor(gpu, 3, 'factors'), offset: 2 };
    expect(() => selectiveScanForward(gpu, { ...upload(gpu, c), B: 2, L: 5, E: 8, N: 4, R: 2, out, reverse: true, combine: { scale } }))
      .toThrow(/selectiveScanForward \(combine\): scale \(factors\) holds 3 elements, needs 4/);
  });
});

/**
 * The combine's backward fused into each backward kernel: dout is the combined output's gradient,
 * each direction reads it flipped (reverse), halved and scaled. Four runs a kernel cover every
 * pair of {forward, reverse} × {with, without factors} × {checkpoints from the backward, from the
 * (combined) forward}; then both directions of a block reading one dcmb, dz adding into one dxz.
 */
const COMBINED_FORMS: [string, (gpu: Gpu) => ScanTuning][] = [
  ['segmented', () => ({ kernel: 'segmented' })],
  ['stream', (gpu) => ({ kernel: 'stream', subgroupSize: scanSubgroupSize(gpu) })],
  ['split', (gpu) => {
    const sg = scanSubgroupSize(gpu);
    return { kernel: 'split', subgroupSize: sg, segment: 3, workgroupSize: 2 * sg };
  }],
];

for (const [form, tuneFor] of COMBINED_FORMS) {
  describe(`the combine's backward fused into the scan backward (${form})`, () => {
    const tuning = async (c: { B: number; L: number; E: number; N: number; R: number }): Promise<ScanTuning> => {
      const t = tuneFor(await testGpu());
      expect(selectiveScanBackwardPlan(c, t).kernel, 'the kernel under test, not a fallback').toBe(form);
      return t;
    };
    const c = makeCase(71, 3, 7, 37, 8, 3);
    const drop = dropRow(3);
    it('B=3 L=7 E=37 N=8, forward direction, no factors', async () => checkBackward(c, false, false, await tuning(c), { combined: {} }));
    it('reverse direction, with factors', async () => checkBackward(c, true, false, await tuning(c), { combined: { drop } }));
    it('forward direction, with factors, checkpoints from the forward', async () =>
      checkBackward(c, false, false, await tuning(c), { combined: { drop }, forwardCheckpoints: true }));
    it('reverse direction, no factors, checkpoints from the forward, accumulating', async () =>
      checkBackward(c, true, true, await tuning(c), { combined: {}, forwardCheckpoints: true }));
    it('both directions reading one dcmb, dz adding into one dxz (with factors)', async () =>
      checkBothDirections(73, 3, 7, 37, 8, 3, { ...(await tuning(c)), ...(form === 'split' ? {} : { workgroupSize: 16 }) }, { combined: { drop } }));
  });
}

describe('the combine\'s backward fused: arguments', () => {
  it('refuses a factor table too short for the batch', async () => {
    const gpu = await testGpu();
    const c = makeCase(75, 2, 5, 8, 4, 2);
    const z = zerosTensor(gpu, 2 * 5 * 16 + 64, 'g');
    const t = { kernel: 'segmented' as const };
    expect(() => selectiveScanBackward(gpu, {
      ...upload(gpu, c), du: z, ddelta_raw: z, dxz: z, dxdbl: z, dA_log: z, dDskip: z, ddt_bias: z, dout: z,
      scratch: scratchFor(gpu, c, t), B: 2, L: 5, E: 8, N: 4, R: 2, reverse: false, ...t,
      doutCombined: { scale: { t: zerosTensor(gpu, 2, 'factors'), offset: 1 } },
    })).toThrow(/selectiveScanBackward \(doutCombined\): scale \(factors\) holds 2 elements, needs 3/);
  });
});
