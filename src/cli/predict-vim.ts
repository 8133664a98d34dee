#!/usr/bin/env node
/**
 * `predict-vim --checkpoint FILE IMAGE…`: the top classes of each image, with probabilities.
 *
 * Each image is read with sharp and made into the model's input the way CIFAR-10 frames its
 * photos (src/io/images.ts): upright, on white where transparent, the shorter side scaled to
 * 32 px and the centre square kept (Lanczos-3). A file that cannot be read is reported on stderr
 * by name and the others are still classified; the exit code is then 1.
 */
import { VimError } from '../errors.js';
import { acquireGpu } from '../gpu/device.js';
import { loadImageAsInput, RESIZE_DESCRIPTION } from '../io/images.js';
import { loadConfig } from '../model/config.js';
import { loadCheckpoint } from '../model/checkpoint.js';
import { VimGpu } from '../model/vim-gpu.js';
import { softmax, topK } from '../train/metrics.js';
import { boolOpt, numberOpt, runCli, stringOpt, type CommandSpec, type Parsed } from './common.js';

const spec: CommandSpec = {
  name: 'predict-vim',
  summary: 'classify images with a Vim checkpoint',
  usage: 'predict-vim --checkpoint FILE [options] IMAGE…',
  allowPositionals: true,
  options: {
    checkpoint: { type: 'string', arg: 'FILE', help: 'the checkpoint (.safetensors written by train-vim) (required)' },
    model: { type: 'string', arg: 'NAME|FILE', help: 'refuse the checkpoint unless it is for this config; also the config of a checkpoint that carries none' },
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
  const path = stringOpt(p, 'checkpoint');
  if (path === undefined) throw new VimError('--checkpoint is required: the .safetensors file to classify with (see predict-vim --help)');
  if (p.positionals.length === 0) throw new VimError('give at least one image file, e.g. predict-vim --checkpoint best.safetensors cat.jpg');
  const modelOpt = stringOpt(p, 'model');
  const { cfg, params } = loadCheckpoint(path, modelOpt !== undefined ? loadConfig(modelOpt) : undefined);
  const k = Math.min(numberOpt(p, 'top', { integer: true, min: 1 }) ?? 5, cfg.C);
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

  if (inputs.length > 0) {
    const gpu = await acquireGpu();
    const B = Math.min(inputs.length, MAX_BATCH);
    const model = await VimGpu.create(gpu, cfg, { batch: B, training: false });
    try {
      model.setParams(params);
      const per = 3 * cfg.imgSize * cfg.imgSize;
      for (let start = 0; start < inputs.length; start += B) {
        const chunk = inputs.slice(start, start + B);
        const pixels = new Uint8Array(chunk.length * per);
        chunk.forEach((c, i) => pixels.set(c.pixels, i * per));
        model.setBatch(pixels, chunk.length);
        const logits = await model.forward(); // (B, C)
        chunk.forEach((c, i) => {
          const probs = softmax(logits.subarray(i * cfg.C, (i + 1) * cfg.C));
          results[c.index].predictions = topK(probs, k).map(([index, probability]) => ({ class: cfg.classNames[index], index, probability }));
        });
      }
    } finally {
      model.destroy();
    }
  }

  if (json) {
    console.log(JSON.stringify({ checkpoint: path, model: cfg.name, images: results }));
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
