#!/usr/bin/env node
// our_logits.mjs: the logits of our WebGPU engine (inference forward) for the first K CIFAR-10
// test images, from one of our checkpoints, as JSON for match_logits.py:
//   {checkpoint, config, adapter, indices, labels, logits: [[C floats] × K]}
// It loads the checkpoint and runs the model exactly as eval-vim does (loadCheckpoint, VimGpu
// built for inference, setParams, setBatch, forward) and reads the images with the project's
// CIFAR-10 loader (test_batch.bin checked against its official sha256). Needs the built project
// (npm run build): it imports from dist/.
//
//   node scripts/peer/our_logits.mjs --checkpoint FILE [--count 64] [--data-dir DIR] [--out FILE]
import { resolve } from 'node:path';
import { boolOpt, numberOpt, runCli, stringOpt } from '../../dist/cli/common.js';
import { VimError } from '../../dist/errors.js';
import { acquireGpu, describeGpu } from '../../dist/gpu/device.js';
import { loadCifar10Split } from '../../dist/data/cifar10.js';
import { writeFileAtomic } from '../../dist/io/safetensors.js';
import { configToJson, loadConfig } from '../../dist/model/config.js';
import { describeConfig, loadCheckpoint } from '../../dist/model/checkpoint.js';
import { VimGpu } from '../../dist/model/vim-gpu.js';

const spec = {
  name: 'our_logits',
  summary: "write our WebGPU engine's logits for the first K CIFAR-10 test images as JSON",
  usage: 'node scripts/peer/our_logits.mjs --checkpoint FILE [--count K] [--data-dir DIR] [--out FILE]',
  options: {
    checkpoint: { type: 'string', arg: 'FILE', help: 'a checkpoint written by train-vim (.safetensors)' },
    count: { type: 'string', arg: 'K', default: '64', help: 'how many test images, from the first one' },
    'data-dir': { type: 'string', arg: 'DIR', help: 'where CIFAR-10 is (default: $VIM_DATA_DIR, else datasets/)' },
    model: { type: 'string', arg: 'NAME|FILE', help: 'refuse the checkpoint unless it is for this config; also the config of a checkpoint that carries none' },
    'batch-size': { type: 'string', arg: 'N', help: 'images per forward pass (default: K, at most 256)' },
    out: { type: 'string', arg: 'FILE', default: 'our-logits.json', help: 'the JSON file to write' },
    quiet: { type: 'boolean', help: 'print nothing but errors' },
  },
  epilog: 'The images are read in file order; the logits are the f32 values read back from the GPU.',
};

runCli(spec, async (p) => {
  const path = stringOpt(p, 'checkpoint');
  if (path === undefined) throw new VimError('--checkpoint FILE is required: the checkpoint whose logits to compute');
  const K = numberOpt(p, 'count', { integer: true, min: 1, max: 10000 });
  const modelOpt = stringOpt(p, 'model');
  const expected = modelOpt !== undefined ? loadConfig(modelOpt) : undefined;
  const out = resolve(stringOpt(p, 'out'));
  const say = (line) => {
    if (!boolOpt(p, 'quiet')) console.log(line);
  };

  const { cfg, params, meta } = loadCheckpoint(path, expected);
  say(`checkpoint: ${path}: ${describeConfig(cfg)}${typeof meta.weights === 'string' ? ` (${meta.weights} weights)` : ''}`);
  const test = loadCifar10Split(stringOpt(p, 'data-dir'), 'test', { verify: true });
  const B = Math.min(numberOpt(p, 'batch-size', { integer: true, min: 1 }) ?? Math.min(K, 256), K);
  const gpu = await acquireGpu();
  say(`adapter: ${describeGpu(gpu)}`);
  const model = await VimGpu.create(gpu, cfg, { batch: B, training: false });
  const per = 3 * cfg.imgSize * cfg.imgSize;
  const logits = [];
  try {
    model.setParams(params);
    for (let start = 0; start < K; start += B) {
      const n = Math.min(B, K - start);
      model.setBatch(test.images.subarray(start * per, (start + n) * per), n);
      const l = await model.forward(); // (B, C); rows ≥ n are padding
      for (let i = 0; i < n; i++) logits.push(Array.from(l.subarray(i * cfg.C, (i + 1) * cfg.C)));
    }
  } finally {
    model.destroy();
  }
  const indices = Array.from({ length: K }, (_, i) => i);
  const json = {
    checkpoint: resolve(path), config: configToJson(cfg), adapter: describeGpu(gpu), engine: 'webgpu',
    indices, labels: Array.from(test.labels.subarray(0, K)), logits,
  };
  writeFileAtomic(out, new TextEncoder().encode(JSON.stringify(json)));
  const correct = logits.filter((row, i) => row.indexOf(Math.max(...row)) === test.labels[i]).length;
  say(`wrote the logits of test images 0…${K - 1} to ${out} (top-1 ${correct}/${K}, batch ${B})`);
});
