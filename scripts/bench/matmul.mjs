#!/usr/bin/env node
// Tuning harness for the matmuls of one Vim training step (kernels/matmul.wgsl through
// src/gpu/ops/matmul.ts), after `npm run build`:
//
//   node scripts/bench/matmul.mjs [--batch-size 256] [--model vim-tiny] [--json FILE] [--quick]
//                                 [--budget SECONDS] [--only TEXT] [--no-model-check]
//
// For every distinct matmul problem of a training step (the calls and shapes of
// src/model/vim-gpu.ts, cross-checked against a built model's dispatch list: counts and flops per
// kernel label) and every kernel variant the op layer can run for it (the fixed 64/128 tiles, the
// parametrised kernel's tiles, register blocks, reduction steps, vec4 loads, double buffering;
// the narrow and rows kernels for input gradients of at most 16 columns; for the weight gradient
// also split sizes and the three split sums), on the current adapter:
//   - correctness: one run on random inputs, the output read back and compared with a float64
//     product on sampled elements: max |gpu − ref| / rms(ref) over the samples ("rel err"); rows
//     and columns a strided output must not touch are checked to be untouched, and elements the
//     kernel should write start as NaN, so a variant that skips some shows up. Over 1e-4 it is
//     marked WRONG and can never be "best";
//   - speed: a warm-up, then several submits of ~20 repeated dispatches (more for kernels under
//     ~0.1 ms), cycling over copies of the operands bigger than the L2 together, wall clock from
//     submit to onSubmittedWorkDone, minus an empty submit's time, median, per dispatch (a weight
//     gradient's split pass and its sum count as one).
// Prints a table per problem (* = today's default, < = fastest correct), the step total of the
// defaults against the best of each problem (weighted by how often each problem occurs in a step),
// and the MATMUL_TUNED entries (src/gpu/ops/matmul.ts) that would make the best ones default.
// Shape letters: B batch, L tokens, D, E = 2D, N, R, C classes, P patch, Np patches, BL = B·L.
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { acquireGpu, describeGpu } from '../../dist/gpu/device.js';
import { compileCheck, encodeDispatches } from '../../dist/gpu/kernels.js';
import { createTensor, download, upload } from '../../dist/gpu/tensor.js';
import {
  NARROW_MAX_I, matmulBackwardInput, matmulBackwardWeight, matmulBackwardWeightPlan, matmulEntrySource, matmulForward,
  matmulKernelFor, parseMatmulVariant,
} from '../../dist/gpu/ops/matmul.js';
import { loadConfig } from '../../dist/model/config.js';
import { VimGpu } from '../../dist/model/vim-gpu.js';
import { Rng } from '../../dist/rng.js';

// ---- arguments -----------------------------------------------------------------------------------

const USAGE = 'usage: node scripts/bench/matmul.mjs [--batch-size 256] [--model vim-tiny] [--json FILE] [--quick] [--budget SECONDS] [--only TEXT] [--no-model-check]';

function options() {
  const { values } = parseArgs({
    options: {
      'batch-size': { type: 'string', default: '256' },
      model: { type: 'string', default: 'vim-tiny' },
      json: { type: 'string' },
      quick: { type: 'boolean', default: false },
      budget: { type: 'string', default: '170' },
      only: { type: 'string' },
      'no-model-check': { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  const int = (name) => {
    const n = Number(values[name]);
    if (!Number.isInteger(n) || n < 1) throw new Error(`expected a positive integer for --${name} but received ${values[name]}`);
    return n;
  };
  return {
    batch: int('batch-size'), model: values.model, json: values.json ?? null, quick: values.quick, budget: int('budget'),
    only: values.only ?? null, modelCheck: !values['no-model-check'],
  };
}

// ---- the problems of one training step (as src/model/vim-gpu.ts calls them) -------------------------

const LABEL = { forward: 'matmul_forward', backward_input: 'matmul_backward_input', backward_weight: 'matmul_backward_weight' };

function stepProblems(cfg, B) {
  const { D, E, N, R, C, P, L, Np, depth } = cfg;
  const BL = B * L;
  const P3 = 3 * P * P;
  const xw = R + 2 * N; // xdbl's row: dt_low (R), B (N), C (N)
  const p = [];
  const add = (layer, op, M, I, O, count, extra = {}) => p.push({ layer, op, M, I, O, count, ...extra });
  // forward
  add('patch_embed', 'forward', B * Np, P3, D, 1, { bias: true });
  add('in_proj', 'forward', BL, D, 2 * E, depth);
  add('x_proj', 'forward', BL, E, xw, 2 * depth);
  // (dt_proj's forward runs inside the scan forward: docs/performance.md change 10)
  add('out_proj', 'forward', BL, E, D, depth);
  add('head', 'forward', B, D, C, 1, { bias: true });
  // input gradients
  add('head', 'backward_input', B, D, C, 1);
  add('out_proj', 'backward_input', BL, E, D, depth);
  add('dt_proj', 'backward_input', BL, R, E, 2 * depth, { ldi: xw });
  add('x_proj', 'backward_input', BL, E, xw, 2 * depth, { accumulate: true });
  add('in_proj', 'backward_input', BL, D, 2 * E, depth);
  // weight gradients (split over M, then summed)
  add('head', 'backward_weight', B, D, C, 1);
  add('out_proj', 'backward_weight', BL, E, D, depth);
  add('dt_proj', 'backward_weight', BL, R, E, 2 * depth, { ldi: xw });
  add('x_proj', 'backward_weight', BL, E, xw, 2 * depth);
  add('in_proj', 'backward_weight', BL, D, 2 * E, depth);
  add('patch_embed', 'backward_weight', B * Np, P3, D, 1);
  for (const q of p) {
    q.ldi ??= q.I;
    q.ldo ??= q.O;
    q.bias ??= false;
    q.accumulate ??= false;
    q.key = `${q.op}:${q.I}x${q.O}`;
    q.flopsEach = 2 * q.M * q.I * q.O;
  }
  return p;
}

/** The result's rows × columns and the reduction length of a problem. */
function dims(p) {
  if (p.op === 'forward') return { rows: p.M, cols: p.O, K: p.I };
  if (p.op === 'backward_input') return { rows: p.M, cols: p.I, K: p.O };
  return { rows: p.O, cols: p.I, K: p.M };
}

// ---- the variant grid ------------------------------------------------------------------------------

/** Tiles (with register blocks) for one result dimension pair. */
function tiles(rows, cols, quick) {
  const thin = (n) => (n <= 16 ? 16 : n <= 32 ? 32 : n <= 48 ? 48 : null);
  const tr = thin(rows);
  const tc = thin(cols);
  if (tc && tr) return [`${tr}x${tc}/4x4`];
  if (tc === 16) return quick ? ['128x16/8x4', '64x16/4x4'] : ['128x16/8x4', '128x16/4x4', '256x16/8x4', '64x16/4x4', '32x16/4x4'];
  if (tc) return quick ? [`128x${tc}/8x4`, `64x${tc}/4x4`] : [`128x${tc}/8x4`, `64x${tc}/4x4`, `64x${tc}/8x4`, `32x${tc}/4x4`];
  if (tr === 16) return quick ? ['16x128/4x8', '16x64/4x4'] : ['16x128/4x8', '16x64/4x4', '16x256/4x8'];
  if (tr) return quick ? [`${tr}x128/4x8`, `${tr}x64/4x4`] : [`${tr}x128/4x8`, `${tr}x64/4x4`, `${tr}x64/4x8`];
  return quick
    ? ['128x128/8x8', '128x64/8x8', '64x64/4x4']
    : ['128x128/8x8', '128x64/8x8', '64x128/8x8', '128x64/8x4', '64x64/8x8', '64x64/4x4'];
}

/** Reduction steps and load/buffer flags to try with each tile. */
function stepFlags(K, quick) {
  const s = [];
  if (K <= 64 && K % 4 === 0) s.push(`k${K}/v4`); // the whole reduction in one step
  if (K > 16) s.push('k16/v4', 'k16/v4/db');
  else if (K > 8 && K % 4 !== 0) s.push('k16/v4');
  if (!quick && K > 16) s.push('k8/v4/db', 'k32/v4', 'k16');
  if (!quick && K <= 16) s.push(`k${Math.ceil(K / 4) * 4}`); // scalar loads
  return [...new Set(s)];
}

/**
 * Phase 1 choices for a problem: the fixed kernels, the narrow and rows ones where they run (input
 * gradients of at most NARROW_MAX_I columns) and the parametrised grid (default split for dweight).
 */
function grid(p, quick) {
  const d = dims(p);
  const out = [{ variant: 'tile64' }, { variant: 'tile128' }];
  if (p.op === 'backward_input' && p.I <= NARROW_MAX_I) out.push({ variant: 'narrow' }, { variant: 'rows' });
  // The problems that occur once a step (patch embedding, head) get the small grid. Flags
  // outermost: if the budget runs short, the later (less likely) flags go, not whole tiles.
  const small = quick || p.count === 1;
  for (const f of stepFlags(d.K, small)) {
    for (const t of tiles(d.rows, d.cols, small)) {
      const name = `${t}/${f}`;
      try {
        parseMatmulVariant(name);
        out.push({ variant: name });
      } catch { /* not a valid shape (too many items per invocation, …): skip */ }
    }
  }
  return out;
}

/** Phase 2 for the weight gradient: split sizes and the other two sums, for the fastest variant. */
function splitGrid(p, ranked, quick) {
  const rowsList = quick ? [128, 512, 2048] : [64, 128, 256, 512, 1024, 2048];
  const out = [];
  const best = ranked[0];
  if (!best) return out;
  for (const sum of ['lanes', 'vec4']) {
    if (sum === 'vec4' && (p.O * p.I) % 4 !== 0) continue;
    out.push({ variant: best.choice.variant, sum });
    for (const rows of rowsList) if (rows * 2 <= p.M) out.push({ variant: best.choice.variant, splitRows: rows, sum });
  }
  return out;
}

// ---- operands, runs, checks ---------------------------------------------------------------------------

const L2_BYTES = 64 * 2 ** 20; // an H200 has 60 MB of L2: cycle over operand copies at least twice that

function randF32(rng, n) {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = rng.range(-1, 1);
  return a;
}

/** The operands of a problem: one CPU copy for the reference and `sets` GPU copies. */
function makeOperands(gpu, p, rng, quick) {
  const { M, I, O, ldi, ldo } = p;
  // the "input side" (inp / dinp: M × I at ldi) and "output side" (out / dout: M × O at ldo)
  const inSide = (M - 1) * ldi + I;
  const outSide = (M - 1) * ldo + O;
  const host = { weight: randF32(rng, O * I), bias: p.bias ? randF32(rng, O) : null };
  let aN;
  let resN;
  if (p.op === 'forward') {
    host.a = randF32(rng, inSide); // inp
    resN = outSide;
  } else if (p.op === 'backward_input') {
    host.a = randF32(rng, outSide); // dout
    resN = inSide;
  } else {
    host.a = randF32(rng, outSide); // dout
    host.b = randF32(rng, inSide); // inp
    resN = O * I;
  }
  aN = host.a.length;
  const bytes = 4 * (aN + (host.b?.length ?? O * I) + resN);
  const sets = quick ? 1 : Math.max(1, Math.min(4, Math.ceil((2 * L2_BYTES) / bytes)));
  // The result's first values: the addressed elements NaN (or random, for an accumulate), the rest 3.25.
  host.init = new Float32Array(resN).fill(3.25);
  const addressed = resultAddressed(p);
  const initVals = randF32(rng, resN);
  for (let j = 0; j < resN; j++) if (addressed(j)) host.init[j] = p.accumulate ? initVals[j] : NaN;
  const gpuSets = [];
  for (let s = 0; s < sets; s++) {
    gpuSets.push({
      a: createTensor(gpu, aN, `a${s}`, host.a),
      b: host.b ? createTensor(gpu, host.b.length, `b${s}`, host.b) : null,
      weight: createTensor(gpu, O * I, `weight${s}`, host.weight),
      bias: host.bias ? createTensor(gpu, O, `bias${s}`, host.bias) : null,
      result: createTensor(gpu, resN, `result${s}`, host.init),
    });
  }
  return { host, sets: gpuSets, bytes: bytes * sets };
}

function destroyOperands(ops) {
  for (const s of ops.sets) for (const t of Object.values(s)) t?.buffer.destroy();
}

/** Whether element j of the result tensor is one the problem writes. */
function resultAddressed(p) {
  if (p.op === 'backward_weight') return () => true;
  const ld = p.op === 'forward' ? p.ldo : p.ldi;
  const cols = p.op === 'forward' ? p.O : p.I;
  return (j) => j % ld < cols;
}

/** Arguments of the op call for operand set `s` and a choice ({variant?, splitRows?, sum?}). */
function callArgs(p, s, choice, scratch) {
  const base = { M: p.M, I: p.I, O: p.O, ldi: p.ldi, ldo: p.ldo, accumulate: p.accumulate };
  if (choice.variant) base.variant = choice.variant;
  if (p.op === 'forward') return { ...base, out: s.result, inp: s.a, weight: s.weight, bias: s.bias };
  if (p.op === 'backward_input') return { ...base, dinp: s.result, dout: s.a, weight: s.weight };
  return { ...base, dweight: s.result, dout: s.a, inp: s.b, splitRows: choice.splitRows, sum: choice.sum, scratch };
}

function build(gpu, p, s, choice, scratch) {
  const a = callArgs(p, s, choice, scratch);
  if (p.op === 'forward') return [matmulForward(gpu, a)];
  if (p.op === 'backward_input') return [matmulBackwardInput(gpu, a)];
  return matmulBackwardWeight(gpu, a);
}

/** float64 value of result element (r, c) (row-major in the result's own rows × columns). */
function reference(p, h, r, c) {
  let acc = 0;
  if (p.op === 'forward') { // out[m, o] = Σ_i inp[m, i] · w[o, i] (+ bias)
    for (let i = 0; i < p.I; i++) acc += h.a[r * p.ldi + i] * h.weight[c * p.I + i];
    if (h.bias) acc += h.bias[c];
    if (p.accumulate) acc += h.init[r * p.ldo + c];
  } else if (p.op === 'backward_input') { // dinp[m, i] = Σ_o dout[m, o] · w[o, i]
    for (let o = 0; o < p.O; o++) acc += h.a[r * p.ldo + o] * h.weight[o * p.I + c];
    if (p.accumulate) acc += h.init[r * p.ldi + c];
  } else { // dweight[o, i] = Σ_m dout[m, o] · inp[m, i]
    for (let m = 0; m < p.M; m++) acc += h.a[m * p.ldo + r] * h.b[m * p.ldi + c];
  }
  return acc;
}

/** Max |gpu − ref| / rms(ref) over sampled elements; Infinity for a NaN, or when an element it must not touch changed. */
function checkResult(p, h, got, rng) {
  const d = dims(p);
  const ld = p.op === 'forward' ? p.ldo : p.op === 'backward_input' ? p.ldi : p.I;
  const samples = [[0, 0], [d.rows - 1, d.cols - 1], [d.rows - 1, 0], [0, d.cols - 1]];
  for (let k = 0; k < 160; k++) samples.push([rng.int(d.rows), rng.int(d.cols)]);
  let maxDiff = 0;
  let sumSq = 0;
  for (const [r, c] of samples) {
    const ref = reference(p, h, r, c);
    const g = got[r * ld + c];
    const diff = Math.abs(g - ref);
    maxDiff = Number.isNaN(diff) ? Infinity : Math.max(maxDiff, diff);
    sumSq += ref * ref;
  }
  if (ld > d.cols) { // a strided result: the columns between must keep their first value
    for (let k = 0; k < 64; k++) {
      const j = rng.int(d.rows) * ld + d.cols + rng.int(ld - d.cols);
      if (j < got.length && got[j] !== h.init[j]) return Infinity;
    }
  }
  const rms = Math.sqrt(sumSq / samples.length);
  return maxDiff / (rms || 1);
}

// ---- timing ------------------------------------------------------------------------------------------

function median(a) {
  const s = [...a].sort((x, y) => x - y);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

/** Wall-clock ms of one submit of `reps` rounds of the per-set lists, from submit to done. */
async function timeSubmit(gpu, lists, reps) {
  const seq = [];
  for (let i = 0; i < reps; i++) seq.push(...lists[i % lists.length]);
  const enc = gpu.device.createCommandEncoder();
  encodeDispatches(enc, seq);
  const cb = enc.finish();
  const t0 = performance.now();
  gpu.queue.submit([cb]);
  await gpu.queue.onSubmittedWorkDone();
  return performance.now() - t0;
}

/** Median ms of an empty submit, subtracted from every measurement. */
async function emptySubmitMs(gpu) {
  const t = [];
  for (let i = 0; i < 30; i++) t.push(await timeSubmit(gpu, [[]], 1));
  return median(t.slice(5));
}

/** Work per timed submit: ~20 dispatches of a 0.25 ms kernel; more of shorter ones, fewer (≥ 3) on a slow adapter. */
const SUBMIT_MS = 5;

async function timeChoice(gpu, lists, overheadMs, quick) {
  await timeSubmit(gpu, lists, 1); // first use: pipelines, residency
  const warm = await timeSubmit(gpu, lists, 2);
  const per = Math.max(1e-4, (warm - overheadMs) / 2);
  const reps = Math.max(3, Math.min(400, Math.ceil(SUBMIT_MS / per)));
  const times = [];
  for (let i = 0; i < (quick ? 3 : 5); i++) times.push(await timeSubmit(gpu, lists, reps));
  return { us: (Math.max(0, median(times) - overheadMs) / reps) * 1e3, reps };
}

// ---- one problem ---------------------------------------------------------------------------------

let scratch = null; // one split-partials buffer for all problems, grown as needed
function scratchFor(gpu, elements) {
  if (elements <= 0) return undefined;
  if (!scratch || scratch.size / 4 < elements) {
    scratch?.buffer.destroy();
    scratch = createTensor(gpu, elements, 'bench scratch');
  }
  return scratch;
}

async function runChoice(gpu, p, ops, choice, overheadMs, quick, rng) {
  const plan = p.op === 'backward_weight'
    ? matmulBackwardWeightPlan(p.M, p.I, p.O, undefined, choice.variant, choice.splitRows)
    : null;
  const scr = plan ? scratchFor(gpu, plan.scratchElements) : undefined;
  const lists = ops.sets.map((s) => build(gpu, p, s, choice, scr));
  await compileCheck();
  const first = lists[0];
  const info = matmulKernelFor(gpu, p.op, callArgs(p, ops.sets[0], choice, scr));
  // correctness: the first set's result from its first values, one run
  upload(gpu, ops.sets[0].result, ops.host.init);
  const enc = gpu.device.createCommandEncoder();
  encodeDispatches(enc, first);
  gpu.queue.submit([enc.finish()]);
  const got = await download(gpu, ops.sets[0].result);
  const relErr = checkResult(p, ops.host, got, rng);
  const t = await timeChoice(gpu, lists, overheadMs, quick);
  const flops = first.reduce((a, d) => a + (d.flops ?? 0), 0);
  const bytes = first.reduce((a, d) => a + (d.bytes ?? 0), 0);
  return {
    choice, name: info.name, fallback: info.fallback, splits: info.splits ?? null, sum: info.sum ?? null, us: t.us, reps: t.reps,
    tflops: t.us > 0 ? flops / t.us / 1e6 : 0, gbps: t.us > 0 ? bytes / t.us / 1e3 : 0, relErr,
    ok: Number.isFinite(relErr) && relErr < 1e-4,
  };
}

/** describe() of a choice before running it: the kernel the op layer would pick, the split and sum. */
function choiceId(gpu, p, ops, choice) {
  const plan = p.op === 'backward_weight' ? matmulBackwardWeightPlan(p.M, p.I, p.O, undefined, choice.variant, choice.splitRows) : null;
  const info = matmulKernelFor(gpu, p.op, callArgs(p, ops.sets[0], choice, plan?.scratchElements ? scratchFor(gpu, plan.scratchElements) : undefined));
  return describe({ name: info.name, splits: info.splits ?? null, sum: info.sum ?? null });
}

function describe(r) {
  let s = r.name;
  if (r.splits !== null) s += `  split ${r.splits}${r.sum === 'vec4' || r.sum === 'lanes' ? ` ${r.sum} sum` : ''}`;
  return s;
}

/**
 * The entry of MATMUL_TUNED that makes result r (a variant asked for by name) the default of
 * problem p, as a JSON value (the --json output's `tuned`, which VIM_MATMUL_TUNED reads).
 */
function tunedValue(p, r) {
  const v = r.choice.variant ?? r.name;
  const sum = r.sum === 'vec4' || r.sum === 'lanes' ? r.sum : undefined;
  if (p.op !== 'backward_weight' || (r.choice.splitRows === undefined && !sum)) return v;
  return { variant: v, ...(r.choice.splitRows ? { splitRows: r.choice.splitRows } : {}), ...(sum ? { sum } : {}) };
}

/** The same entry as TypeScript source, to paste into the table. */
function tunedEntry(p, r) {
  return matmulEntrySource(tunedValue(p, r));
}

function fmtRate(x) {
  return x >= 100 ? x.toFixed(0) : x >= 0.01 ? x.toPrecision(3) : x.toExponential(1);
}

function fmtUs(us) {
  return us >= 100 ? us.toFixed(0) : us >= 10 ? us.toFixed(1) : us.toFixed(2);
}

function printTable(p, results, defaultIdx, bestIdx) {
  const shape = `M=${p.M} I=${p.I} O=${p.O}${p.ldi !== p.I ? ` ldi=${p.ldi}` : ''}${p.bias ? ' +bias' : ''}${p.accumulate ? ' +=' : ''}`;
  console.log(`\n${p.op} ${p.layer}  ${shape}  ×${p.count} a step  (${(p.flopsEach / 1e9).toFixed(3)} GFLOP each)`);
  const w = Math.max(30, ...results.map((r) => describe(r).length + 2));
  console.log(`  ${'variant'.padEnd(w)} ${'µs'.padStart(9)} ${'TFLOP/s'.padStart(8)} ${'GB/s'.padStart(7)} ${'rel err'.padStart(9)}`);
  const order = results.map((_, i) => i).sort((a, b) => results[a].us - results[b].us);
  for (const i of order) {
    const r = results[i];
    const mark = (i === defaultIdx ? '*' : ' ') + (i === bestIdx ? '<' : ' ');
    const err = r.ok ? r.relErr.toExponential(1) : `WRONG ${Number.isFinite(r.relErr) ? r.relErr.toExponential(1) : r.relErr}`;
    console.log(`${mark}${describe(r).padEnd(w)} ${fmtUs(r.us).padStart(9)} ${fmtRate(r.tflops).padStart(8)} ${fmtRate(r.gbps).padStart(7)} ${err.padStart(9)}${r.fallback ? `  (default fell back: ${r.fallback})` : ''}`);
  }
}

// ---- main ------------------------------------------------------------------------------------------

async function main() {
  const opts = options();
  const t0 = performance.now();
  const elapsed = () => (performance.now() - t0) / 1e3;
  const gpu = await acquireGpu();
  const cfg = loadConfig(opts.model);
  const B = opts.batch;
  console.log(`adapter: ${describeGpu(gpu)}`);
  console.log(`${cfg.name}, batch ${B}: BL = ${B * cfg.L} rows; ${opts.quick ? 'quick grid' : 'full grid'}, budget ${opts.budget} s`);
  let problems = stepProblems(cfg, B);

  // The model's own dispatch list: the same matmuls, as many, with the same flops?
  if (opts.modelCheck) {
    const model = await VimGpu.create(gpu, cfg, { batch: B, training: true });
    const seen = {};
    for (const d of [...model.forwardList, ...model.backwardList]) {
      if (!Object.values(LABEL).includes(d.label)) continue;
      seen[d.label] ??= { count: 0, flops: 0 };
      seen[d.label].count += 1;
      seen[d.label].flops += d.flops ?? 0;
    }
    model.destroy();
    const mine = {};
    for (const p of problems) {
      const m = (mine[LABEL[p.op]] ??= { count: 0, flops: 0 });
      m.count += p.count;
      // as the op layer counts them: a bias or an accumulate adds one flop per result element
      const resultElems = p.op === 'forward' ? p.M * p.O : p.op === 'backward_input' ? p.M * p.I : 0;
      m.flops += p.count * (p.flopsEach + (p.bias ? resultElems : 0) + (p.accumulate ? resultElems : 0));
    }
    const bad = Object.values(LABEL).filter((l) => seen[l]?.count !== mine[l].count || Math.abs((seen[l]?.flops ?? 0) - mine[l].flops) > 1e-9 * mine[l].flops);
    const line = Object.values(LABEL).map((l) => `${l} ${seen[l]?.count ?? 0}`).join(', ');
    if (bad.length) {
      console.log(`model check: MISMATCH with vim-gpu.ts for ${bad.join(', ')}: model ${JSON.stringify(seen)}, harness ${JSON.stringify(mine)}`);
    } else {
      console.log(`model check: the problems below are the model's matmul dispatches (${line}; flops agree)`);
    }
  }
  if (opts.only) problems = problems.filter((p) => `${p.op} ${p.layer} ${p.key}`.includes(opts.only));

  const overheadMs = await emptySubmitMs(gpu);
  console.log(`empty submit: ${(overheadMs * 1e3).toFixed(0)} µs (subtracted)`);
  const rng = new Rng(7);
  const report = [];
  let trimmed = false;
  for (const [pi, p] of problems.entries()) {
    const ops = makeOperands(gpu, p, rng, opts.quick);
    const results = [];
    const seen = new Set();
    const refused = new Map(); // reason → variants the op layer refused for this call
    const tryChoice = async (choice) => {
      if (choice.variant !== undefined) {
        let id;
        try {
          id = choiceId(gpu, p, ops, choice);
        } catch (e) { // alignment, the adapter's limits
          const why = String(e.message).replace(/^.*?: /, '').replace(/^variant \S+ cannot run .*?: /, '');
          refused.set(why, [...(refused.get(why) ?? []), choice.variant]);
          return null;
        }
        if (seen.has(id)) return null; // the same kernel, split and sum as one already timed
      }
      const r = await runChoice(gpu, p, ops, choice, overheadMs, opts.quick, rng);
      seen.add(describe(r));
      results.push(r);
      return r;
    };
    // Problems left share what remains of the budget; past a problem's share, only the default, the
    // fixed kernels and the narrow and rows ones run.
    const share = (opts.budget - elapsed()) / (problems.length - pi);
    const pStart = elapsed();
    const def = await tryChoice({});
    for (const c of grid(p, opts.quick)) {
      if (elapsed() - pStart > share && !['tile64', 'tile128', 'narrow', 'rows'].includes(c.variant)) {
        trimmed = true;
        continue;
      }
      await tryChoice(c);
    }
    if (p.op === 'backward_weight' && p.count > 1) {
      const ranked = results.filter((r) => r.ok && r.choice.variant).sort((a, b) => a.us - b.us);
      for (const c of splitGrid(p, ranked, opts.quick)) {
        if (elapsed() - pStart > share * 1.2) {
          trimmed = true;
          break;
        }
        await tryChoice(c);
      }
    }
    // The default once more at the end: a machine whose speed changed while this problem was
    // timed (clocks, another job) shows as a difference, and its ranking is then not evidence.
    const again = await runChoice(gpu, p, ops, {}, overheadMs, opts.quick, rng);
    const drift = def.ok && again.ok ? again.us / def.us - 1 : 0;
    destroyOperands(ops);
    const defaultIdx = results.indexOf(def);
    let bestIdx = -1;
    results.forEach((r, i) => {
      if (r.ok && (bestIdx < 0 || r.us < results[bestIdx].us)) bestIdx = i;
    });
    printTable(p, results, defaultIdx, bestIdx);
    if (Math.abs(drift) > 0.1) {
      console.log(`  UNSTEADY: the default took ${def.us.toFixed(1)} µs first and ${again.us.toFixed(1)} µs last (${(100 * drift).toFixed(0)}%): ` +
        'the machine\'s speed changed while this problem was timed; its ranking is left out of the suggestions');
    }
    for (const [why, names] of refused) console.log(`  (${names.length} not run: ${why}: ${names.slice(0, 3).join(', ')}${names.length > 3 ? ', …' : ''})`);
    report.push({ p, results, def, best: bestIdx >= 0 ? results[bestIdx] : def, drift });
  }

  // ---- step totals: defaults against the best of each problem
  console.log(`\nper training step (each problem × its count a step):`);
  console.log(`  ${'kernel'.padEnd(38)} ${'default ms'.padStart(10)} ${'best ms'.padStart(9)} ${'saved'.padStart(7)}`);
  const byLabel = {};
  for (const { p, def, best } of report) {
    const l = (byLabel[LABEL[p.op] + (p.op === 'backward_weight' ? ' (+ split sum)' : '')] ??= { def: 0, best: 0 });
    l.def += (p.count * def.us) / 1e3;
    l.best += (p.count * best.us) / 1e3;
  }
  let td = 0;
  let tb = 0;
  for (const [l, v] of Object.entries(byLabel)) {
    console.log(`  ${l.padEnd(38)} ${v.def.toFixed(2).padStart(10)} ${v.best.toFixed(2).padStart(9)} ${(v.def - v.best).toFixed(2).padStart(7)}`);
    td += v.def;
    tb += v.best;
  }
  console.log(`  ${'all matmuls'.padEnd(38)} ${td.toFixed(2).padStart(10)} ${tb.toFixed(2).padStart(9)} ${(td - tb).toFixed(2).padStart(7)}`);
  const better = report.filter(({ def, best, drift }) => best !== def && best.us < 0.97 * def.us && Math.abs(drift) <= 0.1);
  if (better.length) {
    console.log(`\nMATMUL_TUNED entries (src/gpu/ops/matmul.ts) for the problems whose best beats the default by ≥ 3%:`);
    for (const { p, best, def } of better) {
      console.log(`  '${p.key}': ${tunedEntry(p, best)}, // ${p.layer}: ${fmtUs(def.us)} → ${fmtUs(best.us)} µs`);
    }
  }
  if (trimmed) console.log(`\n(some variants were skipped to stay within the ${opts.budget} s budget: see --budget)`);
  console.log(`\ndone in ${elapsed().toFixed(0)} s`);

  if (opts.json) {
    const json = {
      adapter: describeGpu(gpu), model: cfg.name, batch: B, quick: opts.quick, emptySubmitMs: overheadMs,
      problems: report.map(({ p, results, def, best, drift }) => ({
        layer: p.layer, op: p.op, key: p.key, M: p.M, I: p.I, O: p.O, ldi: p.ldi, ldo: p.ldo, bias: p.bias,
        accumulate: p.accumulate, count: p.count, flops: p.flopsEach, defaultDrift: drift,
        default: describe(def), best: describe(best), bestEntry: tunedEntry(p, best),
        results: results.map((r) => ({
          variant: r.name, asked: r.choice, splits: r.splits, sum: r.sum, us: r.us, reps: r.reps,
          tflops: r.tflops, gbps: r.gbps, relErr: Number.isFinite(r.relErr) ? r.relErr : null, ok: r.ok, fallback: r.fallback ?? null,
        })),
      })),
      totals: Object.fromEntries(Object.entries(byLabel).map(([l, v]) => [l, { defaultMs: v.def, bestMs: v.best }])),
      // the entries of `better` (each beats its default by ≥ 3% on a steady machine), as
      // VIM_MATMUL_TUNED=FILE reads them
      tuned: Object.fromEntries(better.map(({ p, best }) => [p.key, tunedValue(p, best)])),
    };
    writeFileSync(opts.json, JSON.stringify(json, null, 2));
    console.log(`wrote ${opts.json}`);
  }
}

main().then(() => process.exit(0), (e) => {
  console.error(`matmul bench: ${e instanceof Error ? e.message : e}`);
  process.exit(1);
});
