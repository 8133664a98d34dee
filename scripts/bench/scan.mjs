#!/usr/bin/env node
/**
 * Timing of the selective scan alone at vim-tiny shapes, for a list of kernel variants (tuning
 * options), on the current adapter: forward and backward of one direction, wall clock of
 * `--repeat` back-to-back dispatches per submit, median over `--rounds` submits. Variants that
 * compute real results are compared with the first variant (max relative difference), so a fast
 * but wrong variant shows.
 *
 *   node scripts/bench/scan.mjs [--batch-size 256] [--json FILE] [--quick] [--variants a,b,…]
 *
 * Needs the build (`npm run build`).
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { acquireGpu, describeGpu } from '../../dist/gpu/device.js';
import { compileCheck, encodeDispatches } from '../../dist/gpu/kernels.js';
import { createTensor, download } from '../../dist/gpu/tensor.js';
import * as scan from '../../dist/gpu/ops/selective-scan.js';
import { Rng } from '../../dist/rng.js';

const { values } = parseArgs({
  options: {
    'batch-size': { type: 'string', default: '256' },
    json: { type: 'string' },
    quick: { type: 'boolean', default: false },
    variants: { type: 'string' },
    repeat: { type: 'string', default: '10' },
    rounds: { type: 'string', default: '5' },
  },
});
const B = Number(values['batch-size']);
const L = 65, E = 384, N = 16, R = 12;
const repeat = Number(values.repeat);
const rounds = values.quick ? 2 : Number(values.rounds);

// name → { fwd: tuning of the forward, bwd: tuning of the backward, exact: results are real }
const ALL = {
  default: { fwd: {}, bwd: {}, exact: true }, // the engine's choice for this adapter (scanTuning), filled in below
  segmented: { fwd: {}, bwd: { kernel: 'segmented' }, exact: true },
  'KB2': { fwd: {}, bwd: { tokenBlock: 2 }, exact: true },
  'S4': { fwd: {}, bwd: { segment: 4 }, exact: true },
  'S4-KB4': { fwd: {}, bwd: { segment: 4, tokenBlock: 4 }, exact: true },
  'S6-KB2-WG32': { fwd: {}, bwd: { segment: 6, tokenBlock: 2, workgroupSize: 32 }, exact: true },
  'no-reduce': { fwd: {}, bwd: { diag: 1 }, exact: false },
  'no-pass1': { fwd: {}, bwd: { diag: 2 }, exact: false },
  'no-recompute': { fwd: {}, bwd: { diag: 4 }, exact: false },
  'no-reduce-pass1-recompute': { fwd: {}, bwd: { diag: 7 }, exact: false },
  'S1': { fwd: {}, bwd: { segment: 1 }, exact: true },
  'S2': { fwd: {}, bwd: { segment: 2 }, exact: true },
  'S5': { fwd: {}, bwd: { segment: 5 }, exact: true },
  'S8': { fwd: {}, bwd: { segment: 8, workgroupSize: 32 }, exact: true },
  'WG32': { fwd: { workgroupSize: 64 }, bwd: { workgroupSize: 32 }, exact: true },
  'WG128-S1': { fwd: { workgroupSize: 256 }, bwd: { workgroupSize: 128, segment: 1 }, exact: true },
  'KB1': { fwd: { chunk: 8 }, bwd: { tokenBlock: 1 }, exact: true },
  'KB4': { fwd: { chunk: 32 }, bwd: { tokenBlock: 4 }, exact: true },
  // the stream kernel; its shuffle sums use the adapter's subgroup size unless a variant says 0
  stream: { fwd: {}, bwd: { kernel: 'stream' }, exact: true },
  'stream-lds': { fwd: {}, bwd: { kernel: 'stream', subgroupSize: 0 }, exact: true },
  'stream-S2': { fwd: {}, bwd: { kernel: 'stream', segment: 2 }, exact: true },
  'stream-S4': { fwd: {}, bwd: { kernel: 'stream', segment: 4 }, exact: true },
  'stream-S6-WG32': { fwd: {}, bwd: { kernel: 'stream', segment: 6, workgroupSize: 32 }, exact: true },
  'stream-S8-WG32': { fwd: {}, bwd: { kernel: 'stream', segment: 8, workgroupSize: 32 }, exact: true },
  'stream-WG32': { fwd: {}, bwd: { kernel: 'stream', workgroupSize: 32 }, exact: true },
  'stream-WG128-S1': { fwd: {}, bwd: { kernel: 'stream', workgroupSize: 128, segment: 1 }, exact: true },
  'stream-no-lookahead': { fwd: {}, bwd: { kernel: 'stream', lookahead: false }, exact: true },
  'stream-KB1': { fwd: {}, bwd: { kernel: 'stream', tokenBlock: 1 }, exact: true },
  'stream-KB4': { fwd: {}, bwd: { kernel: 'stream', tokenBlock: 4 }, exact: true },
  'stream-no-reduce': { fwd: {}, bwd: { kernel: 'stream', diag: 1 }, exact: false },
  'stream-no-pass1': { fwd: {}, bwd: { kernel: 'stream', diag: 2 }, exact: false },
  'stream-no-recompute': { fwd: {}, bwd: { kernel: 'stream', diag: 4 }, exact: false },
  'stream-walk-alone': { fwd: {}, bwd: { kernel: 'stream', diag: 7 }, exact: false },
  // the split kernel (docs/performance.md, change 20): its default is one lane a channel, 4-token
  // segments, 192 channels where 192 divides E
  split: { fwd: {}, bwd: { kernel: 'split' }, exact: true },
  'split-S2': { fwd: {}, bwd: { kernel: 'split', segment: 2 }, exact: true },
  'split-S3': { fwd: {}, bwd: { kernel: 'split', segment: 3 }, exact: true },
  'split-WG128': { fwd: {}, bwd: { kernel: 'split', workgroupSize: 128 }, exact: true },
  'split-P2-S1': { fwd: {}, bwd: { kernel: 'split', split: 2, segment: 1 }, exact: true },
  'split-P4-S1': { fwd: {}, bwd: { kernel: 'split', split: 4, segment: 1 }, exact: true },
  'split-no-lookahead': { fwd: {}, bwd: { kernel: 'split', lookahead: false }, exact: true },
  'split-KB1': { fwd: {}, bwd: { kernel: 'split', tokenBlock: 1 }, exact: true },
  'split-KB8': { fwd: {}, bwd: { kernel: 'split', tokenBlock: 8 }, exact: true },
  'split-no-reduce': { fwd: {}, bwd: { kernel: 'split', diag: 1 }, exact: false },
  'split-no-pass1': { fwd: {}, bwd: { kernel: 'split', diag: 2 }, exact: false },
  'split-no-recompute': { fwd: {}, bwd: { kernel: 'split', diag: 4 }, exact: false },
  'split-walk-alone': { fwd: {}, bwd: { kernel: 'split', diag: 7 }, exact: false },
};
const names = values.variants ? values.variants.split(',') : values.quick ? ['default', 'stream'] : Object.keys(ALL);
for (const n of names) if (!ALL[n]) throw new Error(`unknown variant ${n}; known: ${Object.keys(ALL).join(', ')}`);

const gpu = await acquireGpu();
console.log(`adapter: ${describeGpu(gpu)}`);
const sg = scan.scanSubgroupSize(gpu);
ALL.default.bwd = scan.scanTuning(gpu);
for (const v of Object.values(ALL)) {
  if ((v.bwd.kernel === 'stream' || v.bwd.kernel === 'split') && v.bwd.subgroupSize === undefined) v.bwd.subgroupSize = sg;
}
console.log(`selective scan, one direction: B=${B} L=${L} E=${E} N=${N} R=${R}; ${repeat} dispatches a submit, median of ${rounds}`);

const rng = new Rng(3);
const rand = (n, lo, hi) => Float32Array.from({ length: n }, () => rng.range(lo, hi));
const t = (n, label, data) => createTensor(gpu, n, label, data);
const inputs = {
  u: t(B * L * E, 'u', rand(B * L * E, -1, 1)),
  delta_raw: t(B * L * E, 'delta_raw', rand(B * L * E, -2, 2)),
  dt_bias: t(E, 'dt_bias', rand(E, -2, 0)),
  A_log: t(E * N, 'A_log', Float32Array.from({ length: E * N }, (_, i) => Math.log((i % N) + 1) + rng.range(-0.3, 0.3))),
  xdbl: t(B * L * (R + 2 * N), 'xdbl', rand(B * L * (R + 2 * N), -1, 1)),
  Dskip: t(E, 'Dskip', rand(E, 0.5, 1.5)),
  xz: t(B * L * 2 * E, 'xz', rand(B * L * 2 * E, -3, 3)),
};
const shape = { B, L, E, N, R };
const out = t(B * L * E, 'out');
const dout = t(B * L * E, 'dout', rand(B * L * E, -1, 1));
const grads = {
  du: t(B * L * E, 'du'), ddelta_raw: t(B * L * E, 'ddelta_raw'), dxz: t(B * L * 2 * E, 'dxz'),
  dxdbl: t(B * L * (R + 2 * N), 'dxdbl'), dA_log: t(E * N, 'dA_log'), dDskip: t(E, 'dDskip'), ddt_bias: t(E, 'ddt_bias'),
};

async function timeList(list) {
  const times = [];
  for (let r = 0; r < rounds + 1; r++) {
    const enc = gpu.device.createCommandEncoder();
    for (let i = 0; i < repeat; i++) encodeDispatches(enc, list);
    const t0 = performance.now();
    gpu.queue.submit([enc.finish()]);
    await gpu.queue.onSubmittedWorkDone();
    if (r > 0) times.push((performance.now() - t0) / repeat);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)] * 1e3; // µs
}

function maxRel(a, b) {
  let m = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) scale = Math.max(scale, Math.abs(b[i]));
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m / (scale || 1);
}

// The GPU's clocks and caches settle over the first second of work: the first variant timed
// without a warm-up ran 2–4× slow on an H200. So one second of the first variant's forward first.
{
  const fwd = scan.selectiveScanForward(gpu, { ...inputs, ...shape, out, reverse: true });
  await compileCheck();
  for (const t0 = performance.now(); performance.now() - t0 < 1000;) await timeList([fwd]);
}

const rows = [];
let ref = null;
for (const name of names) {
  try {
    await timeVariant(name);
  } catch (err) {
    console.log(`${name.padEnd(28)} not measured: ${err.message.split('\n')[0]}`);
  }
}

async function timeVariant(name) {
  const v = ALL[name];
  const fwd = scan.selectiveScanForward(gpu, { ...inputs, ...shape, out, reverse: true, ...v.fwd });
  const sizes = scan.selectiveScanScratch(shape, v.bwd);
  const scratch = { bcPartials: t(sizes.bcPartials, 'bc'), paramPartials: t(sizes.paramPartials, 'par') };
  const plan = scan.selectiveScanBackwardPlan(shape, v.bwd);
  const bwd = scan.selectiveScanBackward(gpu, { ...inputs, ...shape, ...grads, dout, scratch, reverse: true, ...v.bwd });
  await compileCheck();
  const fwdUs = await timeList([fwd]);
  const scanUs = await timeList([bwd[0]]);
  const bwdUs = await timeList(bwd);
  let diff = null;
  if (v.exact) {
    const got = {};
    for (const k of ['du', 'ddelta_raw', 'dxdbl', 'dA_log']) got[k] = await download(gpu, grads[k]);
    got.out = await download(gpu, out);
    if (!ref) ref = got;
    else diff = Math.max(...Object.keys(got).map((k) => maxRel(got[k], ref[k])));
  }
  scratch.bcPartials.buffer.destroy();
  scratch.paramPartials.buffer.destroy();
  const row = { name, fwd: v.fwd, bwd: v.bwd, plan, fwdUs, scanUs, bwdUs, diff };
  rows.push(row);
  console.log(`${name.padEnd(28)} forward ${fwdUs.toFixed(1).padStart(8)} µs   backward scan ${scanUs.toFixed(1).padStart(8)} µs, ` +
    `with reductions ${bwdUs.toFixed(1).padStart(8)} µs   ${plan.kernel} WG ${plan.workgroupSize} S ${plan.segment} SG ${plan.subgroupSize} ${plan.workgroupBytes} B` +
    `${diff === null ? '' : `   max rel diff ${diff.toExponential(2)}`}`);
}
console.log(`(one step of vim-tiny runs 48 of each: ×48 gives ms a step)`);
if (values.json) writeFileSync(values.json, JSON.stringify({ adapter: describeGpu(gpu), B, L, E, N, R, repeat, rounds, rows }, null, 1));
process.exit(0);
