#!/usr/bin/env node
/**
 * `predict-vim --checkpoint FILE IMAGE…` (on the WebGPU adapter; through onnxruntime-node with
 * --use-onnx or where the adapter is a CPU fallback unless --webgpu)
 * or `predict-vim --onnx MODEL.onnx IMAGE…` (through onnxruntime-node): the top classes of each
 * image, with probabilities.
 *
 * Each image is read with sharp and made into the model's input the way CIFAR-10 frames its
 * photos (src/io/images.ts): upright, on white where transparent, the shorter side scaled to
 * 32 px and the centre square kept (Lanczos-3). A file that cannot be read is reported on stderr
 * by name and the others are still classified; the exit code is then 1.
 */
import { VimError } from '../errors.js';
import type { Gpu } from '../gpu/device.js';
import { loadImageAsInput, RESIZE_DESCRIPTION } from '../io/images.js';
import { loadConfig, type VimConfig } from '../model/config.js';
import { loadCheckpoint } from '../model/checkpoint.js';
import type { ParamSet } from '../model/params.js';
import { VimGpu } from '../model/vim-gpu.js';
import { chooseModelSource, checkpointEngine, onnxFromCheckpoint, openOnnxModel } from '../onnx/classify.js';
import type { OnnxVim } from '../onnx/runtime.js';
import { softmax, topK } from '../train/metrics.js';
import { boolOpt, numberOpt, refuseOnnxCheckpoint, runCli, stringOpt, type CommandSpec, type Parsed } from './common.js';

const spec: CommandSpec = {
  name: 'predict-vim',
  summary: 'classify images with a Vim checkpoint or ONNX model',
  usage: 'predict-vim (--checkpoint FILE [--use-onnx | --webgpu] | --onnx MODEL.onnx) [options] IMAGE…',
  allowPositionals: true,
  options: {
    checkpoint: { type: 'string', arg: 'FILE', help: 'the checkpoint (.safetensors written by train-vim), run on the WebGPU adapter; where that is a CPU fallback (or there is none), through onnxruntime, exported in memory (this or --onnx)' },
    onnx: { type: 'string', arg: 'FILE', help: 'an ONNX model written by export-vim, run through onnxruntime-node on the CPU (this or --checkpoint)' },
    'use-onnx': { type: 'boolean', help: 'export the --checkpoint to ONNX in memory and run it through onnxruntime-node, on any adapter' },
    webgpu: { type: 'boolean', help: 'run the --checkpoint on the WebGPU adapter even where it is a CPU fallback (lavapipe: exact, and many times slower than onnxruntime)' },
    model: { type: 'string', arg: 'NAME|FILE', help: 'refuse the checkpoint or ONNX model unless it is for this config; also the config of a checkpoint that carries none' },
    top: { type: 'string', arg: 'K', help: 'how many classes to show per image (default: 5)' },
    json: { type: 'boolean', help: 'print one JSON object per run: every image with its classes or its error' },
  },
  epilog: `Images: any format sharp reads (PNG, JPEG, WebP, GIF, AVIF, TIFF, …), any size; each is ${RESIZE_DESCRIPTION}.`,
};

interface Prediction {
  file: string;
  predictions?: { class: string; index: number; probability: number }[];
  error?: string;
}

const MAX_BATCH = 64;

async function main(p: Parsed): Promise<void> {
  const source = chooseModelSource(stringOpt(p, 'checkpoint'), stringOpt(p, 'onnx'), boolOpt(p, 'use-onnx'), 'predict-vim', 'classify', boolOpt(p, 'webgpu'));
  if (p.positionals.length === 0) throw new VimError('give at least one image file, e.g. predict-vim --checkpoint best.safetensors cat.jpg');
  const modelOpt = stringOpt(p, 'model');
  const expected = modelOpt !== undefined ? loadConfig(modelOpt) : undefined;
  const top = numberOpt(p, 'top', { integer: true, min: 1 }) ?? 5;
  if (source.checkpoint !== undefined) refuseOnnxCheckpoint(source.checkpoint);
  let cfg: VimConfig;
  let names: string[];
  let params: ParamSet<Float32Array> | undefined;
  let onnx: OnnxVim | undefined;
  let gpu: Gpu | undefined;
  if (source.onnx !== undefined) {
    onnx = await openOnnxModel(source.onnx, expected);
    cfg = onnx.cfg;
    names = onnx.classNames;
  } else {
    const loaded = loadCheckpoint(source.checkpoint!, expected);
    cfg = loaded.cfg;
    names = cfg.classNames;
    params = loaded.params;
    const engine = await checkpointEngine(source);
    gpu = engine.gpu;
    // stdout holds only the predictions; the note goes to a terminal's stderr.
    if (engine.note !== undefined && process.stderr.isTTY) console.error(`predict-vim: ${engine.note}`);
    if (gpu === undefined) onnx = (await onnxFromCheckpoint(cfg, params, source.checkpoint!, { checkpointMeta: loaded.meta })).model;
  }
  const k = Math.min(top, cfg.C);
  const json = boolOpt(p, 'json');

  const results: Prediction[] = [];
  const inputs: { index: number; pixels: Uint8Array }[] = [];
  for (const file of p.positionals) {
    try {
      inputs.push({ index: results.length, pixels: await loadImageAsInput(file, cfg.imgSize) });
      results.push({ file });
    } catch (e) {
      if (!(e instanceof VimError)) throw e;
      results.push({ file, error: e.message });
      if (!json) console.error(`predict-vim: error: ${e.message}`);
    }
  }

  const per = 3 * cfg.imgSize * cfg.imgSize;
  const B = Math.min(inputs.length, MAX_BATCH);
  const record = (chunk: typeof inputs, logits: Float32Array) => { // logits (≥ chunk.length, C)
    chunk.forEach((c, i) => {
      const probs = softmax(logits.subarray(i * cfg.C, (i + 1) * cfg.C));
      results[c.index].predictions = topK(probs, k).map(([index, probability]) => ({ class: names[index], index, probability }));
    });
  };
  const chunks: (typeof inputs)[] = [];
  for (let start = 0; start < inputs.length; start += B) chunks.push(inputs.slice(start, start + B));
  const pack = (chunk: typeof inputs) => {
    const pixels = new Uint8Array(chunk.length * per); // (n, 3, H, W)
    chunk.forEach((c, i) => pixels.set(c.pixels, i * per));
    return pixels;
  };

  if (onnx !== undefined) {
    try {
      for (const chunk of chunks) record(chunk, await onnx.run(pack(chunk), chunk.length));
    } finally {
      await onnx.release();
    }
  } else if (inputs.length > 0 && gpu !== undefined) {
    const model = await VimGpu.create(gpu, cfg, { batch: B, training: false });
    try {
      model.setParams(params!);
      for (const chunk of chunks) {
        model.setBatch(pack(chunk), chunk.length);
        record(chunk, await model.forward()); // (B, C)
      }
    } finally {
      model.destroy();
    }
  }

  if (json) {
    console.log(JSON.stringify({
      ...(source.onnx !== undefined ? { onnx: source.onnx } : { checkpoint: source.checkpoint }),
      engine: onnx !== undefined ? 'onnxruntime' : 'webgpu', model: cfg.name, images: results,
    }));
  } else {
    for (const r of results) {
      if (!r.predictions) continue;
      console.log(r.file);
      for (const q of r.predictions) console.log(`  ${(100 * q.probability).toFixed(2).padStart(6)}%  ${q.class}`);
    }
  }
  const failed = results.filter((r) => r.error).length;
  if (failed > 0) {
    if (!json && results.length > 1) console.error(`predict-vim: ${failed} of ${results.length} files could not be read as images`);
    process.exitCode = 1;
  }
}
runCli(spec, main);
