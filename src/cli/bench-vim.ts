#!/usr/bin/env node
/**
 * bench-vim: check every kernel against the float64 reference (--check), time training and
 * inference with a per-kernel table, or (--onnx [FILE]) time an ONNX model in onnxruntime-node:
 * session creation and images/s at batch 1 and 64.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sniffModelFile, writeFileAtomic } from '../io/safetensors.js';
import { acquireGpu, describeGpu } from '../gpu/device.js';
import { loadConfig, type VimConfig } from '../model/config.js';
import { kernelChecks, runKernelChecks, CHECK_TOLERANCE, type CheckRow } from '../bench/check.js';
import { benchTiming, H200_PEAK, type KernelTiming } from '../bench/timing.js';
import { describeScanBackwardPlan, scanCheckpointsInForward, scanTuning, selectiveScanBackwardPlan } from '../gpu/ops/selective-scan.js';
import { VimError } from '../errors.js';
import { describeConfig } from '../model/checkpoint.js';
import { initParams } from '../model/init.js';
import type { OnnxBenchResult } from '../onnx/runtime.js';
import { boolOpt, checkOutputPath, numberOpt, runCli, stringOpt, type CommandSpec, type Parsed } from './common.js';

const spec: CommandSpec = {
  name: 'bench-vim',
  summary: 'check every kernel against the float64 reference, or time training and inference on this adapter',
  usage: 'bench-vim [--check | --onnx [MODEL.onnx]] [--model NAME] [--batch-size N] [--by-shape] [--json FILE]',
  allowPositionals: true,
  options: {
    check: { type: 'boolean', help: 'run every kernel against the float64 reference and print a pass/fail table' },
    onnx: { type: 'boolean', arg: 'FILE', help: 'time an ONNX model (the file after --onnx; without one, --model with random weights exported to a temporary file) in onnxruntime-node: session creation and images/s' },
    model: { type: 'string', arg: 'NAME', help: 'model config name in models/ or a path (default: vim-tiny on a GPU and with --onnx, vim-nano on a CPU adapter)' },
    'batch-size': { type: 'string', arg: 'N', help: 'batch size (default: 128 on a GPU; 2 for --check and 8 for timing on a CPU adapter; 1 and 64 with --onnx)' },
    steps: { type: 'string', arg: 'N', help: 'timed steps (default: 10, the median is reported; with --onnx the mean of 20 batches of 1 and 3 larger ones)' },
    warmup: { type: 'string', arg: 'N', default: '3', help: 'warm-up steps before timing' },
    filter: { type: 'string', arg: 'REGEX', help: 'only the checks whose kernel name matches' },
    'by-shape': { type: 'boolean', help: 'timing: one row per kernel and problem shape (each matmul of a block: M, I, O and its split) instead of one per kernel' },
    seed: { type: 'string', arg: 'N', default: '1234', help: 'seed of the random inputs for --check' },
    json: { type: 'string', arg: 'FILE', help: 'also write the results as JSON to FILE' },
  },
  epilog: 'Timing uses GPU timestamp queries where the adapter has them, and wall clock for whole steps.',
};

function fmtErr(e: number): string {
  return Number.isFinite(e) ? e.toExponential(2) : String(e);
}

function table(headers: string[], rows: string[][], right: boolean[]): string {
  const w = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) => r.map((c, i) => (right[i] ? c.padStart(w[i]) : c.padEnd(w[i]))).join('  ');
  return [line(headers), w.map((x) => '-'.repeat(x)).join('  '), ...rows.map(line)].join('\n');
}

function kernelRows(k: KernelTiming[]): string[][] {
  return k.map((t) => [
    t.shape !== undefined ? `${t.kernel} ${t.shape}` : t.kernel, String(t.count), t.ms.toFixed(3), `${(100 * t.share).toFixed(1)}%`,
    (t.bytes / 1e6).toFixed(1), (t.flops / 1e9).toFixed(2), t.gbps.toFixed(0), t.gflops.toFixed(0), t.floorMs.toFixed(3),
  ]);
}

/** Every option's value, checked before anything is built, exported or measured. */
interface BenchOptions {
  batch?: number;
  steps?: number;
  warmup?: number;
  seed?: number;
  /** --filter as given, and as the case-insensitive regular expression it is */
  filter?: { text: string; re: RegExp };
  jsonPath?: string;
}

function benchOptions(p: Parsed): BenchOptions {
  const filterText = stringOpt(p, 'filter');
  let filter: BenchOptions['filter'];
  if (filterText !== undefined) {
    if (!boolOpt(p, 'check')) {
      throw new VimError(boolOpt(p, 'onnx')
        ? '--filter chooses which kernels --check tests; --onnx times a whole model: drop --filter'
        : '--filter chooses which kernels --check tests: add --check, or drop --filter');
    }
    try {
      filter = { text: filterText, re: new RegExp(filterText, 'i') };
    } catch (e) {
      const why = (e as Error).message.replace(/^Invalid regular expression: \/.*\/[a-z]*: /s, '');
      throw new VimError(`--filter '${filterText}' is not a valid regular expression: ${why}; give a JavaScript regular expression such as 'scan|conv1d'`);
    }
  }
  const jsonPath = stringOpt(p, 'json');
  checkOutputPath('json', jsonPath);
  return {
    batch: numberOpt(p, 'batch-size', { integer: true, min: 1 }),
    steps: numberOpt(p, 'steps', { integer: true, min: 1 }),
    warmup: numberOpt(p, 'warmup', { integer: true, min: 0 }),
    seed: numberOpt(p, 'seed', { integer: true, min: 0 }),
    filter, jsonPath,
  };
}

/** `bench-vim --onnx [FILE]`: no WebGPU involved; everything runs in onnxruntime-node on the CPU. */
async function benchOnnxCommand(p: Parsed): Promise<void> {
  if (boolOpt(p, 'check')) throw new VimError('--check tests the WebGPU kernels and --onnx times an ONNX model: give one of them');
  if (p.positionals.length > 1) throw new VimError(`--onnx takes one model file but received ${p.positionals.length}: ${p.positionals.join(' ')}`);
  const { batch: batchOpt, steps: stepsOpt, jsonPath } = benchOptions(p);
  const given = p.positionals[0];
  if (given !== undefined && stringOpt(p, 'model') !== undefined) {
    throw new VimError('--model chooses the config to export when no ONNX file is given; with a file, its own config is used: drop --model');
  }
  if (given !== undefined && sniffModelFile(given) === 'safetensors') {
    throw new VimError(`${given} is a safetensors checkpoint, not an ONNX model: export it first (export-vim --checkpoint ${given} --out model.onnx) and time model.onnx`);
  }
  // the model: the file given, or this config with random weights, exported to a temporary file
  const model: { file: string } | { cfg: VimConfig } = given !== undefined ? { file: given } : { cfg: loadConfig(stringOpt(p, 'model') ?? 'vim-tiny') };
  // onnxruntime loads only here: the GPU benchmarks run where it is not installed.
  const { exportVimOnnx } = await import('../onnx/export.js');
  const { benchOnnx, describeOnnxRuntime, readOnnxMetadata } = await import('../onnx/runtime.js');
  let tmp: string | undefined;
  let exportMs: number | undefined;
  try {
    let file: string;
    if ('file' in model) {
      file = model.file;
    } else {
      const { cfg } = model;
      tmp = mkdtempSync(join(tmpdir(), 'bench-vim-'));
      file = join(tmp, `${cfg.name}.onnx`);
      const r = exportVimOnnx(initParams(cfg, 1234), cfg, file, { source: 'bench-vim (random init)' });
      exportMs = r.ms;
      console.log(`exported ${cfg.name} with random init weights to a temporary file: ${(r.bytes / 1e6).toFixed(1)} MB in ${(r.ms / 1e3).toFixed(2)} s`);
    }
    const meta = readOnnxMetadata(file);
    console.log(`engine: ${describeOnnxRuntime()}`);
    console.log(`model: ${file}: ${describeConfig(meta.cfg)} (ONNX, opset ${meta.opset})`);
    const batches = batchOpt !== undefined ? [batchOpt] : [1, 64];
    const runs: OnnxBenchResult[] = [];
    for (const batch of batches) {
      const iterations = stepsOpt ?? (batch <= 8 ? 20 : 3);
      const r = await benchOnnx(file, batch, iterations);
      runs.push(r);
      console.log(`batch ${String(batch).padStart(3)}: ${r.imagesPerSecond.toFixed(1).padStart(8)} images/s  (${r.msPerBatch.toFixed(1)} ms a batch, ` +
        `mean of ${iterations} after a warm-up run; session created in ${r.sessionMs.toFixed(0)} ms, whole load ${r.loadMs.toFixed(0)} ms)`);
    }
    if (jsonPath) {
      writeFileAtomic(jsonPath, new TextEncoder().encode(JSON.stringify({
        engine: describeOnnxRuntime(), model: file, config: meta.cfg.name, random_init: tmp !== undefined,
        ...(exportMs !== undefined ? { exportMs } : {}), runs,
      }, null, 2)));
    }
  } finally {
    if (tmp !== undefined) rmSync(tmp, { recursive: true, force: true });
  }
}

runCli(spec, async (p) => {
  if (boolOpt(p, 'onnx')) return benchOnnxCommand(p);
  if (p.positionals.length > 0) throw new VimError(`unexpected argument "${p.positionals[0]}": only --onnx takes a file; see bench-vim --help`);
  const opts = benchOptions(p);
  const { jsonPath } = opts;
  const modelOpt = stringOpt(p, 'model');
  const chosenCfg = modelOpt !== undefined ? loadConfig(modelOpt) : undefined;
  const check = boolOpt(p, 'check');
  const gpu = await acquireGpu();
  const cpu = gpu.info.isCpu;
  const cfg = chosenCfg ?? loadConfig(cpu ? 'vim-nano' : 'vim-tiny');
  const batch = opts.batch ?? (cpu ? (check ? 2 : 8) : 128);
  if (check && opts.filter !== undefined) {
    const names = kernelChecks(cfg, batch).map((c) => c.kernel);
    const re = opts.filter.re;
    if (!names.some((n) => re.test(n))) {
      throw new VimError(`--filter '${opts.filter.text}' matches no kernel check; the kernels (matched case-insensitively) are: ${names.join('; ')}`);
    }
  }
  console.log(`adapter: ${describeGpu(gpu)}`);
  console.log(`model: ${cfg.name} (D=${cfg.D}, depth ${cfg.depth}, E=${cfg.E}, N=${cfg.N}, L=${cfg.L}), batch ${batch}`);
  const scanPlan = selectiveScanBackwardPlan({ B: batch, L: cfg.L, E: cfg.E, N: cfg.N, R: cfg.R }, scanTuning(gpu));
  const ckFrom = scanCheckpointsInForward(scanPlan) ? 'written by the forward' : 'written by the backward\'s pass 1';
  console.log(`scan backward: ${describeScanBackwardPlan(scanPlan)}; checkpoints ${ckFrom}`);

  if (check) {
    console.log(`checking every kernel against the float64 reference (pass: relative error < ${CHECK_TOLERANCE})\n`);
    const rows: CheckRow[] = await runKernelChecks(gpu, cfg, batch, {
      seed: opts.seed, filter: opts.filter?.re,
      onRow: (r) => console.log(`${r.pass ? 'pass' : 'FAIL'}  ${r.kernel}  (${r.shapes})  ${fmtErr(r.relErr)} [${r.worst}]  ${(r.ms / 1e3).toFixed(1)} s`),
    });
    console.log(`\n${table(['kernel', 'shapes', 'rel. error', 'worst output', 'result'],
      rows.map((r) => [r.kernel, r.shapes, fmtErr(r.relErr), r.worst, r.pass ? 'pass' : 'FAIL']), [false, false, true, false, false])}`);
    const failed = rows.filter((r) => !r.pass).length;
    console.log(`\n${rows.length - failed} passed, ${failed} failed`);
    if (jsonPath) writeFileAtomic(jsonPath, new TextEncoder().encode(JSON.stringify({ adapter: describeGpu(gpu), config: cfg.name, batch, rows }, null, 2)));
    if (failed) throw new VimError(`${failed} kernel check(s) failed on ${describeGpu(gpu)}`);
    return;
  }

  const steps = opts.steps ?? 10;
  const res = await benchTiming(gpu, cfg, batch, {
    steps, warmup: opts.warmup,
    byShape: boolOpt(p, 'by-shape'),
    onProgress: (m) => console.log(m),
  });
  res.adapter = describeGpu(gpu);
  res.scanBackward = scanPlan;
  console.log('');
  console.log(`training:  ${res.train.imagesPerSecond.toFixed(0)} images/s  (${res.train.stepMs.toFixed(2)} ms a step of ${batch}, median; ` +
    `${res.train.dispatches} dispatches${res.train.gpuMs !== null ? `; GPU time ${res.train.gpuMs.toFixed(2)} ms when profiled` : ''})`);
  console.log(`           ${res.train.flowImagesPerSecond.toFixed(0)} images/s with two steps in flight, as train-vim runs them ` +
    `(${res.train.flowMs.toFixed(2)} ms a step, the mean of ${steps})`);
  console.log(`inference: ${res.infer.imagesPerSecond.toFixed(0)} images/s  (${res.infer.batchMs.toFixed(2)} ms a batch, median; ` +
    `${res.infer.dispatches} dispatches${res.infer.gpuMs !== null ? `; GPU time ${res.infer.gpuMs.toFixed(2)} ms when profiled` : ''})`);
  const heads = ['kernel', 'count', 'ms', 'share', 'MB', 'GFLOP', 'GB/s', 'GFLOP/s', 'floor ms'];
  const right = [false, true, true, true, true, true, true, true, true];
  if (res.train.gpuMs !== null) {
    console.log(`\ntraining step, per kernel (floor: bytes / ${res.peak.gbps} GB/s or flops / ${res.peak.gflops} GFLOP/s, whichever is larger; ` +
      `${res.peak.gbps === H200_PEAK.gbps && res.peak.gflops === H200_PEAK.gflops ? 'an H200\'s rates through Vulkan' : 'the peak rates given'})`);
    console.log(table(heads, kernelRows(res.kernels), right));
    console.log('\ninference, per kernel');
    console.log(table(heads, kernelRows(res.inferKernels), right));
  } else {
    console.log('\n(this adapter has no timestamp queries: no per-kernel table)');
  }
  if (jsonPath) writeFileAtomic(jsonPath, new TextEncoder().encode(JSON.stringify(res, null, 2)));
});
