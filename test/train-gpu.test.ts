/**
 * The GPU side of training beyond forward and backward: the global gradient norm and clip scale,
 * AdamW with clipped gradients (and skipped on a non-finite norm), the EMA of the weights, each
 * against a float64 reference; then the same inside VimGpu (a tiny config), where a step still
 * submits once and maps once while returning the loss, the gradient norm and the logits, and two
 * steps in flight give the results of one at a time, bit for bit; and a
 * one-epoch run with a held-out validation set (--holdout) that never trains on it.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { adamw_update, decay_mask } from '../src/reference/adamw.js';
import {
  adamwUpdate, createAdamwUniform, decayMaskWords, packDecayMask, uploadDecayMask, writeAdamwUniform,
} from '../src/gpu/ops/adamw.js';
import { createClipUniform, gradClipScale, gradNormPartials, writeClipUniform } from '../src/gpu/ops/grad-norm.js';
import { createEmaUniform, emaUpdate, writeEmaUniform } from '../src/gpu/ops/ema.js';
import { createTensor, upload } from '../src/gpu/tensor.js';
import { paramSpecs } from '../src/model/params.js';
import { resolveConfig } from '../src/model/config.js';
import { initParams } from '../src/model/init.js';
import { VimGpu } from '../src/model/vim-gpu.js';
import { loadCifar10Split } from '../src/data/cifar10.js';
import { loadCheckpoint } from '../src/model/checkpoint.js';
import { Rng } from '../src/rng.js';
import { defaultRecipe } from '../src/train/recipe.js';
import { Trainer, type EvalSet } from '../src/train/trainer.js';
import { evaluate, meanLogits, mirrorImages } from '../src/train/evaluate.js';
import { ClassificationTally } from '../src/train/metrics.js';
import type { EpochRecord } from '../src/train/run-dir.js';
import { countSubmitsAndMaps, flatSpecs, randArray, read, relErr, run, tensorFrom, testGpu, zerosTensor } from './helpers/gpu.js';

/** PyTorch's clip_grad_norm_: the norm, and the factor min(1, maxNorm / (norm + 1e-6)). */
function clip_grad_norm(grads: Float64Array, maxNorm: number): { norm: number; scale: number } {
  let s = 0;
  for (const g of grads) s += g * g;
  const norm = Math.sqrt(s);
  return { norm, scale: maxNorm > 0 && norm > maxNorm ? maxNorm / (norm + 1e-6) : 1 };
}

/** ema ← decay · ema + (1 − decay) · params */
function ema_update(ema: Float64Array, params: ArrayLike<number>, decay: number): void {
  for (let i = 0; i < ema.length; i++) ema[i] = decay * ema[i] + (1 - decay) * params[i];
}

describe('gradient norm, clipping, AdamW with clipping, EMA (kernels)', () => {
  it('computes the global norm and the clip scale of an odd-sized gradient', async () => {
    const gpu = await testGpu();
    const rng = new Rng(4);
    for (const n of [1, 255, 4097, 3 * 4096 + 77]) {
      const grads = randArray(rng, n, -2, 2);
      const tg = tensorFrom(gpu, grads, 'grads');
      const stats = zerosTensor(gpu, 4, 'stats');
      const partials = zerosTensor(gpu, gradNormPartials(n), 'partials');
      const uniform = createClipUniform(gpu);
      const list = gradClipScale(gpu, { stats, partials, grads: tg, uniform, n });
      const ref = clip_grad_norm(grads, 0);
      for (const maxNorm of [0, ref.norm / 3, ref.norm * 2]) {
        writeClipUniform(gpu, uniform, maxNorm);
        await run(gpu, list);
        const s = await read(gpu, stats);
        const want = clip_grad_norm(grads, maxNorm);
        expect(Math.abs(s[0] - want.norm) / want.norm).toBeLessThan(1e-5);
        expect(Math.abs(s[1] - want.scale)).toBeLessThan(1e-5);
        expect(s[2]).toBe(0);
      }
      // A NaN or an infinity anywhere raises the flag.
      for (const bad of [NaN, Infinity]) {
        upload(gpu, tg, [bad], Math.floor(n / 2));
        await run(gpu, list);
        expect((await read(gpu, stats))[2]).toBe(1);
        upload(gpu, tg, [grads[Math.floor(n / 2)]], Math.floor(n / 2));
      }
    }
  });

  it('AdamW scales the gradients by the clip factor, skips a non-finite step, and the EMA follows', async () => {
    const gpu = await testGpu();
    const rng = new Rng(12);
    const sizes: [number, boolean][] = [[37, true], [5, false], [300, true], [4100, false], [77, true]];
    const { specs, n } = flatSpecs(sizes);
    const mask = decay_mask(specs);
    const params = randArray(rng, n, -0.1, 0.1);
    const m = new Float64Array(n);
    const v = new Float64Array(n);
    const ema = Float64Array.from(params);
    const tp = tensorFrom(gpu, params, 'params');
    const tm = zerosTensor(gpu, n, 'm');
    const tv = zerosTensor(gpu, n, 'v');
    const tg = zerosTensor(gpu, n, 'grads');
    const te = tensorFrom(gpu, params, 'ema');
    const tmask = createTensor(gpu, decayMaskWords(n), 'decay mask');
    uploadDecayMask(gpu, tmask, packDecayMask(mask));
    const stats = zerosTensor(gpu, 4, 'stats');
    const clipU = createClipUniform(gpu);
    const adamU = createAdamwUniform(gpu);
    const emaU = createEmaUniform(gpu);
    const list = [
      ...gradClipScale(gpu, { stats, partials: zerosTensor(gpu, gradNormPartials(n)), grads: tg, uniform: clipU, n }),
      adamwUpdate(gpu, { params: tp, m: tm, v: tv, grads: tg, decayMask: tmask, uniform: adamU, n, gradStats: stats }),
      emaUpdate(gpu, { ema: te, params: tp, stats, uniform: emaU, n }),
    ];
    const hyper = { lr: 0.02, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.05 };
    const maxNorm = 3;
    const decay = 0.8;
    writeClipUniform(gpu, clipU, maxNorm);
    writeEmaUniform(gpu, emaU, decay);
    let t = 0;
    for (let k = 1; k <= 4; k++) {
      const grads = randArray(rng, n, -1, 1);
      if (k === 3) grads[100] = NaN; // this step is skipped by every kernel
      upload(gpu, tg, grads);
      writeAdamwUniform(gpu, adamU, { ...hyper, step: k === 3 ? 3 : t + 1 });
      await run(gpu, list);
      if (k === 3) continue;
      t += 1;
      const { scale } = clip_grad_norm(grads, maxNorm);
      expect(scale).toBeLessThan(1); // the test really clips
      adamw_update(params, grads.map((g) => g * scale), m, v, mask, hyper.lr, hyper.beta1, hyper.beta2, hyper.eps, hyper.weightDecay, t);
      ema_update(ema, params, decay);
    }
    expect(relErr(await read(gpu, tp), params)).toBeLessThan(1e-5);
    expect(relErr(await read(gpu, tm), m)).toBeLessThan(1e-5);
    expect(relErr(await read(gpu, tv), v)).toBeLessThan(1e-5);
    expect(relErr(await read(gpu, te), ema)).toBeLessThan(1e-5);
  });
});

describe('VimGpu training extras (a tiny config)', () => {
  const cfg = resolveConfig({ name: 'tiny-test', patch_size: 8, embed_dim: 16, depth: 1 });
  const test = loadCifar10Split(undefined, 'test', { verify: false });
  const B = 8; // the batch of the CLI tests, whose compiled pipelines this shares
  const images = test.images.slice(0, B * 3 * 32 * 32);
  const targets = new Float32Array(B * cfg.C);
  for (let b = 0; b < B; b++) targets[b * cfg.C + test.labels[b]] = 1;

  it('clips by the global norm, keeps the EMA, and returns the logits with the loss in one submit and one map', async () => {
    const gpu = await testGpu();
    const model = await VimGpu.create(gpu, cfg, { batch: B, training: true, ema: true });
    const p0 = initParams(cfg, 5);
    model.setParams(p0);
    model.resetEma();
    model.setBatch(images, B, targets);
    const loss0 = await model.computeGradients();
    const grads = (await model.getGrads()).toFloat64().flat;
    const logits0 = await model.forward();
    const { norm } = clip_grad_norm(grads, 0);
    const maxNorm = norm / 4;

    const hyper = { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.05, maxGradNorm: maxNorm, emaDecay: 0.75 };
    const { result: r, submits, maps } = await countSubmitsAndMaps(gpu, () => model.trainStepFull(hyper, { logits: true }));
    expect(submits).toBe(1);
    expect(maps).toBe(1);
    expect(r.loss).toBe(loss0);
    expect(r.logits).toEqual(logits0);
    expect(Math.abs(r.gradNorm - norm) / norm).toBeLessThan(1e-5);
    expect(r.clipScale).toBeCloseTo(maxNorm / (norm + 1e-6), 5);
    expect(r.skipped).toBe(false);

    // The update is AdamW on the clipped gradients; the EMA moved a quarter of the way.
    const want = p0.toFloat64().flat;
    const n = want.length;
    const mask = decay_mask(paramSpecs(cfg));
    adamw_update(want, grads.map((g) => g * r.clipScale), new Float64Array(n), new Float64Array(n), mask,
      hyper.lr, hyper.beta1, hyper.beta2, hyper.eps, hyper.weightDecay, 1);
    const got = (await model.getParams()).flat;
    const p0f = p0.flat;
    expect(relErr(got.map((x, i) => x - p0f[i]), want.map((x, i) => x - p0f[i]))).toBeLessThan(1e-4);
    const ema = (await model.getEma()).flat;
    expect(relErr(ema, Array.from(p0f, (x, i) => 0.75 * x + 0.25 * got[i]))).toBeLessThan(1e-6);
    model.destroy();
  });

  it('runs two steps in flight (each batch queued before the step before it is read) with the results of one at a time, bit for bit, and refuses a third', async () => {
    const gpu = await testGpu();
    const hyper = { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.05, maxGradNorm: 1, emaDecay: 0.75 };
    // four batches: the test images rolled by one image a step, each with its own targets
    const batches = [0, 1, 2, 3].map((k) => {
      const im = test.images.slice(k * 3 * 32 * 32, (k + B) * 3 * 32 * 32);
      const tg = new Float32Array(B * cfg.C);
      for (let b = 0; b < B; b++) tg[b * cfg.C + test.labels[k + b]] = 1;
      return { im, tg };
    });
    const build = async () => {
      const m = await VimGpu.create(gpu, cfg, { batch: B, training: true, ema: true });
      m.setParams(initParams(cfg, 6));
      m.resetEma();
      return m;
    };
    const one = await build();
    const alone: { loss: number; gradNorm: number; logits?: Float32Array }[] = [];
    for (const { im, tg } of batches) {
      one.setBatch(im, B, tg);
      alone.push(await one.trainStepFull(hyper, { logits: true }));
    }
    const two = await build();
    const flowing: Promise<{ loss: number; gradNorm: number; logits?: Float32Array }>[] = [];
    two.setBatch(batches[0].im, B, batches[0].tg);
    flowing.push(two.trainStepFull(hyper, { logits: true }));
    for (let k = 1; k < batches.length; k++) {
      two.setBatch(batches[k].im, B, batches[k].tg); // queued behind step k − 1, which is still in flight
      flowing.push(two.trainStepFull(hyper, { logits: true }));
      if (k === 1) expect(() => two.trainStepFull(hyper), 'a third step in flight').toThrow(/at most two steps may be in flight/);
      await flowing[k - 1];
    }
    const got = await Promise.all(flowing);
    got.forEach((r, k) => {
      expect(r.loss, `step ${k + 1}`).toBe(alone[k].loss);
      expect(r.gradNorm).toBe(alone[k].gradNorm);
      expect(r.logits).toEqual(alone[k].logits);
    });
    expect((await two.getParams()).flat).toEqual((await one.getParams()).flat);
    expect((await two.getEma()).flat).toEqual((await one.getEma()).flat);
    expect(two.step).toBe(one.step);
    one.destroy();
    two.destroy();
  });

  it('evaluate submits each batch before it counts the one before: the tally of one batch at a time, with and without the flip', async () => {
    const gpu = await testGpu();
    const Bi = 4;
    const model = await VimGpu.create(gpu, cfg, { batch: Bi, training: false });
    model.setParams(initParams(cfg, 7));
    const n = 10; // two full batches and a partial one
    const data = { images: test.images.subarray(0, n * 3 * 32 * 32), labels: test.labels.subarray(0, n), n };
    for (const flip of [false, true]) {
      const want = new ClassificationTally(cfg.C);
      for (let start = 0; start < n; start += Bi) {
        const k = Math.min(Bi, n - start);
        const im = data.images.subarray(start * 3072, (start + k) * 3072);
        model.setBatch(im, k);
        let logits = await model.forward();
        if (flip) {
          model.setBatch(mirrorImages(im, k, 32), k);
          logits = meanLogits(logits, await model.forward(), k * cfg.C);
        }
        want.add(logits, data.labels.subarray(start, start + k), k);
      }
      const got = await evaluate(model, data, { flip });
      expect(got, `flip ${flip}`).toEqual(want.result());
    }
    model.destroy();
  });

  it('an inference build evaluates the weights or the EMA of a training build copied on the GPU', async () => {
    const gpu = await testGpu();
    const train = await VimGpu.create(gpu, cfg, { batch: B, training: true, ema: true });
    const infer = await VimGpu.create(gpu, cfg, { batch: B, training: false });
    train.setParams(initParams(cfg, 1));
    train.setEma(initParams(cfg, 2));
    infer.copyParamsFrom(train, 'ema');
    expect((await infer.getParams()).flat).toEqual(initParams(cfg, 2).flat);
    infer.copyParamsFrom(train, 'params');
    expect((await infer.getParams()).flat).toEqual(initParams(cfg, 1).flat);
    train.destroy();
    infer.destroy();
  });
});

describe('a run with a held-out validation set (a tiny config)', () => {
  const cfg = resolveConfig({ name: 'tiny-test', patch_size: 8, embed_dim: 16, depth: 1 });
  const PER = 3 * 32 * 32;
  const test = loadCifar10Split(undefined, 'test', { verify: false });
  // A 64-image "training set": --holdout 16 keeps images 48…63 out, training samples 0…47.
  const all = { images: test.images.subarray(0, 64 * PER), labels: test.labels.subarray(0, 64), n: 64 };
  const tmp = mkdtempSync(join(tmpdir(), 'vim-holdout-'));
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));

  it('trains only on the images before the held-out ones and records the validation figures', async () => {
    const gpu = await testGpu();
    const dir = join(tmp, 'run');
    const recipe = {
      ...defaultRecipe('cpu'), model: 'tiny-test', epochs: 1, batchSize: 8, warmupEpochs: 0, subset: 0, holdout: 16, testSubset: 16,
      augment: { crop: false, padding: 4, flip: false, mixupAlpha: 0, cutmixAlpha: 0, randaugOps: 0, randaugMagnitude: 9, eraseProb: 0 },
    };
    const sets: EvalSet[] = [];
    const t = await Trainer.create({ gpu, cfg, recipe, dir, train: all, test, resume: false, events: { evalStart: (e) => sets.push(e.set) } });
    expect([t.train.n, t.val?.n, t.sampler.n, t.stepsPerEpoch]).toEqual([48, 16, 48, 6]);
    expect(Math.max(...t.sampler.order(0))).toBe(47);
    expect(Buffer.from(t.val!.images).equals(Buffer.from(all.images.subarray(48 * PER)))).toBe(true);
    // Every image the model is trained on (no augmentation here) is one of images 0…47.
    const trained: number[] = [];
    const setBatch = t.model.setBatch.bind(t.model);
    t.model.setBatch = (images, n, targets) => {
      for (let b = 0; b < n; b++) {
        const img = Buffer.from(images.subarray(b * PER, (b + 1) * PER));
        trained.push([...Array(64).keys()].find((i) => img.equals(all.images.subarray(i * PER, (i + 1) * PER))) ?? -1);
      }
      setBatch(images, n, targets);
    };
    const out = await t.run();
    t.destroy();
    expect(out.status).toBe('done');
    expect(trained.length).toBe(48);
    expect(new Set(trained)).toEqual(new Set([...Array(48).keys()]));
    expect(sets).toEqual(['test', 'validation']);
    const m = readFileSync(join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as EpochRecord);
    expect(m.length).toBe(1);
    expect(m[0]).toMatchObject({ test_images: 16, val_images: 16 });
    for (const k of ['val_acc', 'val_top5', 'val_loss'] as const) expect(Number.isFinite(m[0][k])).toBe(true);
    expect(out.val?.last).toEqual({ epoch: 1, val_acc: m[0].val_acc });
    expect(JSON.parse(readFileSync(join(dir, 'recipe.json'), 'utf8')).holdout).toBe(16);
    // A resumed run keeps its held-out images.
    await expect(Trainer.create({ gpu, cfg, recipe: { ...recipe, holdout: 8 }, dir, train: all, test, resume: true }))
      .rejects.toThrow(/holds out 16 training images \(--holdout 16\), not 8: a resumed run keeps its held-out images/);
  });

  it('chooses best.safetensors on the validation images, not the test images', async () => {
    const gpu = await testGpu();
    const dir = join(tmp, 'run-best');
    const recipe = {
      ...defaultRecipe('cpu'), model: 'tiny-test', epochs: 4, batchSize: 8, warmupEpochs: 0, lr: 1e-2, subset: 0, holdout: 16, testSubset: 16,
      augment: { crop: false, padding: 4, flip: false, mixupAlpha: 0, cutmixAlpha: 0, randaugOps: 0, randaugMagnitude: 9, eraseProb: 0 },
    };
    const t = await Trainer.create({ gpu, cfg, recipe, dir, train: all, test, resume: false });
    const out = await t.run();
    t.destroy();
    const m = readFileSync(join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as EpochRecord);
    let byVal = m[0];
    for (const r of m) if ((r.val_acc as number) > (byVal.val_acc as number)) byVal = r;
    expect(out.best).toEqual({ epoch: byVal.epoch, test_acc: byVal.test_acc });
    const best = loadCheckpoint(join(dir, 'best.safetensors'));
    expect((best.meta.metrics as EpochRecord).epoch).toBe(byVal.epoch);
  });
});
