import { describe, expect, it } from 'vitest';
import { adamw_update, decay_mask } from '../src/reference/adamw.js';
import {
  adamwUpdate, createAdamwUniform, decayMaskWords, packDecayMask, uploadDecayMask, writeAdamwUniform,
} from '../src/gpu/ops/adamw.js';
import { createTensor, upload } from '../src/gpu/tensor.js';
import { Rng } from '../src/rng.js';
import { flatSpecs, randArray, read, relErr, run, tensorFrom, testGpu, zerosTensor } from './helpers/gpu.js';

const TOL = 1e-5;

describe('AdamW kernel', () => {
  it('matches the reference over several steps, with a per-tensor decay mask', async () => {
    const gpu = await testGpu();
    const rng = new Rng(8);
    // A small layout of tensors with and without decay (sizes not multiples of 32 or 256).
    const sizes: [number, boolean][] = [[37, true], [5, false], [300, true], [19, false], [1, false], [77, true]];
    const { specs, n } = flatSpecs(sizes);
    const mask = decay_mask(specs);
    const params = randArray(rng, n, -0.1, 0.1);
    const p0 = Float64Array.from(params);
    const m = new Float64Array(n);
    const v = new Float64Array(n);
    const tp = tensorFrom(gpu, params, 'params');
    const tm = zerosTensor(gpu, n, 'm');
    const tv = zerosTensor(gpu, n, 'v');
    const tg = zerosTensor(gpu, n, 'grads');
    const tmask = createTensor(gpu, decayMaskWords(n), 'decay mask');
    uploadDecayMask(gpu, tmask, packDecayMask(mask));
    const uniform = createAdamwUniform(gpu);
    const step = adamwUpdate(gpu, { params: tp, m: tm, v: tv, grads: tg, decayMask: tmask, uniform, n });
    const hyper = { lr: 0.05, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.05 };
    for (let t = 1; t <= 5; t++) {
      const grads = randArray(rng, n, -1, 1);
      grads[3] = 0; // a zero gradient
      upload(gpu, tg, grads);
      writeAdamwUniform(gpu, uniform, { ...hyper, step: t });
      await run(gpu, [step]); // the same dispatch replayed every step
      adamw_update(params, grads, m, v, mask, hyper.lr, hyper.beta1, hyper.beta2, hyper.eps, hyper.weightDecay, t);
    }
    const gp = await read(gpu, tp);
    expect(relErr(gp, params)).toBeLessThan(TOL);
    expect(relErr(gp.map((x, i) => x - p0[i]), params.map((x, i) => x - p0[i]))).toBeLessThan(TOL);
    expect(relErr(await read(gpu, tm), m)).toBeLessThan(TOL);
    expect(relErr(await read(gpu, tv), v)).toBeLessThan(TOL);
  });

  it('packs the decay mask one bit per element', () => {
    const mask = Array.from({ length: 70 }, (_, i) => (i % 3 === 0 ? 1 : 0));
    const words = packDecayMask(mask);
    expect(words.length).toBe(3);
    for (let i = 0; i < 70; i++) expect((words[i >>> 5] >>> (i & 31)) & 1).toBe(mask[i]);
  });
});
