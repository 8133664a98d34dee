#!/usr/bin/env node
/**
 * `eval-vim --checkpoint FILE` or `eval-vim --onnx MODEL.onnx`: test-set accuracy of a checkpoint
 * (on the WebGPU adapter; through onnxruntime-node, exported in memory, with --use-onnx or where
 * the adapter is a CPU fallback unless --webgpu) or of an exported model (through
 * onnxruntime-node): top-1, top-5, per-class accuracy and the confusion matrix (printed, as PNG
 * with --plot, as JSON with --json).
 */
import cliProgress from 'cli-progress';
import { describeGpu } from '../gpu/device.js';
import { ensureCifar10, loadCifar10Split } from '../data/cifar10.js';
import { VimError } from '../errors.js';
import { writeFileAtomic } from '../io/safetensors.js';
import { confusionPng } from '../io/plots.js';
import { loadConfig, type VimConfig } from '../model/config.js';
import { describeConfig, loadCheckpoint } from '../model/checkpoint.js';
import { VimGpu } from '../model/vim-gpu.js';
import { chooseModelSource, checkpointEngine, evaluateOnnx, ONNX_DEFAULT_BATCH, onnxFromCheckpoint, openOnnxModel } from '../onnx/classify.js';
import { defaultOnnxWorkers, threadsPerWorker } from '../onnx/pool.js';
import { describeOnnxRuntime, type OnnxVim } from '../onnx/runtime.js';
import { evaluate, imageRange, type LabelledImages } from '../train/evaluate.js';
import { CIFAR10_TRAIN_IMAGES, describeHoldout, holdoutSplit } from '../train/holdout.js';
import type { ClassificationResult } from '../train/metrics.js';
import { pct } from '../train/progress.js';
import { boolOpt, checkOutputPath, numberOpt, refuseOnnxCheckpoint, runCli, stringOpt, type CommandSpec, type Parsed } from './common.js';

const spec: CommandSpec = {
  name: 'eval-vim',
  summary: 'evaluate a Vim checkpoint or ONNX model on the CIFAR-10 test set (or held-out training images)',
  usage: 'eval-vim (--checkpoint FILE [--use-onnx | --webgpu] | --onnx MODEL.onnx) [options]',
  options: {
    checkpoint: { type: 'string', arg: 'FILE', help: 'the checkpoint (.safetensors written by train-vim), run on the WebGPU adapter; where that is a CPU fallback (or there is none), through onnxruntime, exported in memory (this or --onnx)' },
    onnx: { type: 'string', arg: 'FILE', help: 'an ONNX model written by export-vim, run through onnxruntime-node on the CPU (this or --checkpoint)' },
    'use-onnx': { type: 'boolean', help: 'export the --checkpoint to ONNX in memory and run it through onnxruntime-node, on any adapter' },
    webgpu: { type: 'boolean', help: 'run the --checkpoint on the WebGPU adapter even where it is a CPU fallback (lavapipe: exact, and many times slower than onnxruntime)' },
    model: { type: 'string', arg: 'NAME|FILE', help: 'refuse the checkpoint or ONNX model unless it is for this config; also the config of a checkpoint that carries none' },
    'data-dir': { type: 'string', arg: 'DIR', help: 'where CIFAR-10 is, or is fetched to (default: $VIM_DATA_DIR, else datasets/)' },
    'batch-size': { type: 'string', arg: 'N', help: `images per forward pass (default: 256 on a GPU, 32 on a CPU adapter, ${ONNX_DEFAULT_BATCH} through onnxruntime)` },
    limit: { type: 'string', arg: 'N', help: 'evaluate only the first N of the images (default: all: the 10,000 test images, or the --holdout N)' },
    holdout: {
      type: 'string', arg: 'N',
      help: 'evaluate on held-out training images instead of the test images: the last N of the 50,000, those train-vim --holdout N kept out of training (to choose settings such as --flip without the test set)',
    },
    flip: { type: 'boolean', help: 'test-time flip: classify each image and its left–right mirror and average the two logits (twice the work)' },
    workers: {
      type: 'string', arg: 'N',
      help: `through onnxruntime: run N sessions at once, each in a child process with its share of the cores (default: ${defaultOnnxWorkers()} here; 2 where there are 2 cores or more); 1 runs one session on all cores`,
    },
    plot: { type: 'string', arg: 'FILE', help: 'also draw the confusion matrix as a PNG into FILE' },
    json: { type: 'boolean', help: 'print the results as one JSON object (and nothing else) on stdout' },
  },
  epilog: 'Accuracy is over the test images (or with --holdout the held-out ones) in their file order; the last partial batch is padded and its padding ignored.',
};

/** describeOnnxRuntime's arguments for `workers` sessions at once (one session: onnxruntime's own thread count). */
function onnxThreads(workers: number): [number?, number?] {
  return workers > 1 ? [threadsPerWorker(workers), workers] : [];
}

async function main(p: Parsed): Promise<void> {
  const source = chooseModelSource(stringOpt(p, 'checkpoint'), stringOpt(p, 'onnx'), boolOpt(p, 'use-onnx'), 'eval-vim', 'evaluate', boolOpt(p, 'webgpu'));
  const modelOpt = stringOpt(p, 'model');
  const expected = modelOpt !== undefined ? loadConfig(modelOpt) : undefined;
  const limit = numberOpt(p, 'limit', { integer: true, min: 1 });
  const workersOpt = numberOpt(p, 'workers', { integer: true, min: 1, max: 64 });
  const holdout = numberOpt(p, 'holdout', { integer: true, min: 1 });
  if (holdout !== undefined && holdout >= CIFAR10_TRAIN_IMAGES) {
    const fmt = (n: number) => n.toLocaleString('en-US');
    const why = holdout > CIFAR10_TRAIN_IMAGES
      ? `the CIFAR-10 training set has only ${fmt(CIFAR10_TRAIN_IMAGES)} images`
      : `that is the whole CIFAR-10 training set, which train-vim never holds out`;
    throw new VimError(`--holdout ${holdout}: ${why}; give N from 1 to ${fmt(CIFAR10_TRAIN_IMAGES - 1)} ` +
      '(the last N training images, those train-vim --holdout N keeps out of training)');
  }
  // with --holdout, the record range of the training set to evaluate
  const held = holdout !== undefined ? holdoutSplit(CIFAR10_TRAIN_IMAGES, holdout, 0).val : undefined;
  const setName = held ? 'held-out' : 'test';
  const what = held ? `held-out training image${holdout === 1 ? '' : 's'}` : 'test images';
  const flip = boolOpt(p, 'flip');
  const batchOpt = numberOpt(p, 'batch-size', { integer: true, min: 1 });
  const json = boolOpt(p, 'json');
  const plot = stringOpt(p, 'plot');
  checkOutputPath('plot', plot); // before the evaluation, not after it
  if (source.checkpoint !== undefined) refuseOnnxCheckpoint(source.checkpoint);
  const say = (line: string) => {
    if (!json) console.log(line);
  };

  // The model: an ONNX file, or a checkpoint (run on WebGPU, or exported in memory with --use-onnx).
  let cfg: VimConfig;
  let names: string[];
  let onnx: OnnxVim | undefined;
  let gpuModel: VimGpu | undefined;
  const header: string[] = [];
  let B: number;
  const batches = async () => ensureCifar10({
    dir: stringOpt(p, 'data-dir'), progress: !json, log: () => undefined, notice: (m) => console.error(`data: ${m}`),
  });
  // the images evaluated: the test set, or with --holdout the last N training images
  const loadImages = async (): Promise<LabelledImages> => {
    if (!held) return loadCifar10Split(await batches(), 'test', { verify: false });
    const train = loadCifar10Split(await batches(), 'train', { verify: false });
    return imageRange(train, held.start, held.end, train.images.length / train.n);
  };
  let test: LabelledImages;
  const workers = workersOpt ?? defaultOnnxWorkers(); // sessions at once, where onnxruntime runs the model
  if (source.onnx !== undefined) {
    onnx = await openOnnxModel(source.onnx, expected);
    cfg = onnx.cfg;
    names = onnx.classNames;
    header.push(`model: ${source.onnx}: ${describeConfig(cfg)} (ONNX, opset ${onnx.meta.opset})`);
    header.push(`engine: ${describeOnnxRuntime(...onnxThreads(workers))}, session created in ${onnx.sessionMs.toFixed(0)} ms`);
    test = await loadImages();
    B = Math.min(batchOpt ?? ONNX_DEFAULT_BATCH, limit ?? test.n);
  } else {
    const path = source.checkpoint!;
    const loaded = loadCheckpoint(path, expected);
    const { params, meta } = loaded;
    cfg = loaded.cfg;
    names = cfg.classNames;
    const metrics = meta.metrics as { epoch?: number; test_acc?: number } | undefined;
    header.push(`checkpoint: ${path}: ${describeConfig(cfg)}${metrics?.epoch !== undefined ? `, epoch ${metrics.epoch}` : ''}` +
      `${typeof meta.weights === 'string' ? ` (${meta.weights} weights)` : ''}`);
    test = await loadImages();
    const { gpu, note } = await checkpointEngine(source);
    if (note !== undefined) {
      if (!json) header.push(note);
      else if (process.stderr.isTTY) console.error(`eval-vim: ${note}`);
    }
    if (gpu === undefined) {
      const r = await onnxFromCheckpoint(cfg, params, path, { checkpointMeta: meta });
      onnx = r.model;
      header.push(`engine: ${describeOnnxRuntime(...onnxThreads(workers))}: exported to ONNX in memory in ${r.exportMs.toFixed(0)} ms, ` +
        `session created in ${onnx.sessionMs.toFixed(0)} ms`);
      B = Math.min(batchOpt ?? ONNX_DEFAULT_BATCH, limit ?? test.n);
    } else {
      B = Math.min(batchOpt ?? (gpu.info.isCpu ? 32 : 256), limit ?? test.n);
      gpuModel = await VimGpu.create(gpu, cfg, { batch: B, training: false });
      gpuModel.setParams(params);
      header.push(`adapter: ${describeGpu(gpu)}`);
    }
  }
  if (flip) header.push('test-time flip: each image and its mirror, logits averaged');
  if (holdout !== undefined) header.push(`images: ${describeHoldout(holdout)} (the held-out validation images of train-vim --holdout ${holdout}), not the test set`);
  header.forEach(say);

  const total = Math.min(limit ?? test.n, test.n);
  const bar = !json && process.stderr.isTTY
    ? new cliProgress.SingleBar({
      format: `${setName} |{bar}| {value}/{total} images | {ips} img/s | ETA {eta_formatted}`,
      barCompleteChar: '█', barIncompleteChar: '░',
      hideCursor: true, clearOnComplete: true, fps: 5,
    })
    : null;
  bar?.start(total, 0, { ips: '–' });
  const t0 = performance.now();
  const onProgress = (done: number) => bar?.update(done, { ips: (done / ((performance.now() - t0) / 1000)).toFixed(1) });
  let result: ClassificationResult;
  try {
    result = onnx !== undefined
      ? await evaluateOnnx(onnx, test, B, { limit, onProgress, flip, workers })
      : (await evaluate(gpuModel!, test, { limit, onProgress, flip }))!;
  } finally {
    bar?.stop();
    gpuModel?.destroy();
    await onnx?.release();
  }
  const seconds = (performance.now() - t0) / 1000;
  // The results are printed first, the plot written after: a failed write loses nothing computed.
  const drawPlot = async (path: string) => writeFileAtomic(path, await confusionPng(result.confusion, names,
    `${cfg.name}: ${setName} confusion (${pct(result.top1)} of ${result.n.toLocaleString('en-US')})`));
  if (json) {
    console.log(JSON.stringify({
      ...(source.onnx !== undefined ? { onnx: source.onnx } : { checkpoint: source.checkpoint }),
      engine: onnx !== undefined ? 'onnxruntime' : 'webgpu', model: cfg.name, images: result.n,
      split: held ? 'holdout' : 'test', ...(held ? { holdout } : {}),
      flip, top1: result.top1, top5: result.top5, loss: result.loss,
      per_class: Object.fromEntries(names.map((n, i) => [n, result.perClass[i]])), class_names: names,
      confusion: result.confusion, seconds, ...(plot !== undefined ? { plot } : {}),
    }));
    if (plot !== undefined) await drawPlot(plot);
    return;
  }
  say(`evaluated ${result.n.toLocaleString('en-US')} ${what}${flip ? ' and their mirrors' : ''} in ${seconds.toFixed(1)} s ` +
    `(${(result.n / seconds).toFixed(1)} images/s, batch ${B})`);
  say('');
  say(`top-1 accuracy  ${pct(result.top1)}`);
  say(`top-5 accuracy  ${pct(result.top5)}`);
  say(`loss            ${result.loss.toFixed(4)}`);
  say('');
  say('per-class accuracy:');
  const w = Math.max(...names.map((n) => n.length));
  names.forEach((n, i) => {
    const row = result.confusion[i];
    const count = row.reduce((a, b) => a + b, 0);
    say(`  ${n.padEnd(w)}  ${pct(result.perClass[i]).padStart(7)}  (${row[i]}/${count})`);
  });
  say('');
  say('confusion matrix (rows: true class, columns: predicted class):');
  const cw = Math.max(5, String(Math.max(...result.confusion.flat())).length + 1);
  say(`  ${''.padEnd(w)} ${names.map((n) => n.slice(0, cw - 1).padStart(cw)).join('')}`);
  names.forEach((n, i) => say(`  ${n.padEnd(w)} ${result.confusion[i].map((v) => String(v).padStart(cw)).join('')}`));
  if (plot !== undefined) {
    await drawPlot(plot);
    say(`\nconfusion matrix drawn in ${plot}`);
  }
}
runCli(spec, main);
