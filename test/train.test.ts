/**
 * The CPU side of training: the learning-rate and EMA schedules, the sampler and its saved state,
 * augmentation (crop, flip, mixup, cutmix, soft targets), metrics, recipes and their errors,
 * the held-out validation split (--holdout), negative option values, and reading images for
 * prediction.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, describe, expect, it } from 'vitest';
import { VimError } from '../src/errors.js';
import { Rng } from '../src/rng.js';
import { emaDecayAt, lrAt } from '../src/train/schedule.js';
import { EpochSampler } from '../src/train/sampler.js';
import { cropFlip, makeTrainBatch, sampleBeta } from '../src/train/augment.js';
import { ClassificationTally, softmax, topK } from '../src/train/metrics.js';
import {
  augmentList, checkResumeOptions, defaultRecipe, dropPathRates, describeRecipe, parseAugmentList, scaledLr, storedRecipe, validateRecipe, type Recipe,
} from '../src/train/recipe.js';
import { CIFAR10_TRAIN_IMAGES, holdoutSplit } from '../src/train/holdout.js';
import { dropPathFactors } from '../src/train/trainer.js';
import { imageRange, meanLogits, mirrorImages } from '../src/train/evaluate.js';
import { joinNegativeValues } from '../src/cli/common.js';
import type { CommandSpec } from '../src/cli/common.js';
import { chwToHwc, loadImageAsInput, saveChwImage } from '../src/io/images.js';
import { CIFAR10_FILES, CIFAR10_RECORD_BYTES, cifar10BatchesDir, loadCifar10Split } from '../src/data/cifar10.js';

const H = 32;
const W = 32;
const PER = 3 * H * W;

describe('learning-rate schedule', () => {
  const s = { lr: 1e-3, minLr: 1e-5, warmupSteps: 10, totalSteps: 110 };
  it('warms up linearly, then follows a cosine down to minLr at the last step', () => {
    expect(lrAt(1, s)).toBeCloseTo(1e-4, 15);
    expect(lrAt(5, s)).toBeCloseTo(5e-4, 15);
    expect(lrAt(10, s)).toBeCloseTo(1e-3, 15);
    expect(lrAt(60, s)).toBeCloseTo(1e-5 + (1e-3 - 1e-5) / 2, 15);
    expect(lrAt(110, s)).toBeCloseTo(1e-5, 15);
    for (let t = 11; t < 110; t++) expect(lrAt(t + 1, s)).toBeLessThanOrEqual(lrAt(t, s));
  });
  it('without warm-up starts at the peak', () => {
    expect(lrAt(1, { ...s, warmupSteps: 0 })).toBeCloseTo(1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + Math.cos(Math.PI / 110)), 15);
  });
  it('warms the EMA decay up from (1 + t) / (10 + t)', () => {
    expect(emaDecayAt(1, 0.9999)).toBeCloseTo(2 / 11, 15);
    expect(emaDecayAt(1e6, 0.9999)).toBe(0.9999);
  });
});

describe('sampler', () => {
  it('shuffles each epoch differently, drops the last partial batch, and resumes from its state', () => {
    const s = new EpochSampler(103, 10, 7);
    expect(s.stepsPerEpoch).toBe(10);
    const seen: number[][] = [];
    for (let e = 0; e < 2; e++) {
      const ids: number[] = [];
      while (!s.epochDone) ids.push(...s.next().indices);
      expect(ids.length).toBe(100);
      expect(new Set(ids).size).toBe(100);
      seen.push(ids);
      s.nextEpoch();
    }
    expect(seen[0]).not.toEqual(seen[1]);
    // Same seed, same order; a sampler put at (epoch 1, batch 4) continues as the first did.
    const t = new EpochSampler(103, 10, 7);
    t.state = { epoch: 1, cursor: 4 };
    expect(Array.from(t.next().indices)).toEqual(seen[1].slice(40, 50));
    expect(Array.from(new EpochSampler(103, 10, 8).order(0))).not.toEqual(Array.from(new EpochSampler(103, 10, 7).order(0)));
  });
  it('refuses a batch larger than the data with a VimError', () => {
    expect(() => new EpochSampler(5, 8, 0)).toThrow(/--batch-size 8 is larger than the 5 training images/);
  });
});

/** A random (n, 3, 32, 32) u8 image set. */
function randomImages(n: number, seed: number): Uint8Array {
  const rng = new Rng(seed);
  return Uint8Array.from({ length: n * PER }, () => rng.int(256));
}

describe('augmentation', () => {
  it('crop with 4-px zero padding and flip equal a window of the padded image, mirrored', () => {
    const src = randomImages(1, 1);
    const out = new Uint8Array(PER);
    for (const [dy, dx, flip] of [[0, 0, true], [-4, 3, false], [4, -4, true], [2, 1, false]] as const) {
      cropFlip(out, src, H, W, dy, dx, flip);
      for (let c = 0; c < 3; c++) {
        for (let y = 0; y < H; y++) {
          for (let x = 0; x < W; x++) {
            // pad by 4, take the window at (4 + dy, 4 + dx), then mirror it
            const xw = flip ? W - 1 - x : x;
            const sy = y + dy;
            const sx = xw + dx;
            const expected = sy >= 0 && sy < H && sx >= 0 && sx < W ? src[c * H * W + sy * W + sx] : 0;
            expect(out[c * H * W + y * W + x]).toBe(expected);
          }
        }
      }
    }
  });

  const data = { images: randomImages(16, 2), labels: Uint8Array.from({ length: 16 }, (_, i) => i % 10) };
  const shape = { H, W, C: 10 };

  it('gives smoothed one-hot targets and repeats exactly from the same RNG state', () => {
    const opts = { crop: true, flip: true, mixupAlpha: 0, cutmixAlpha: 0, labelSmoothing: 0.1 };
    const rng = new Rng(5);
    const state = rng.state;
    const a = makeTrainBatch(data, [3, 1, 4, 1, 5, 9], shape, opts, rng);
    const b = makeTrainBatch(data, [3, 1, 4, 1, 5, 9], shape, opts, new Rng(state));
    expect(a.images).toEqual(b.images);
    expect(a.targets).toEqual(b.targets);
    for (let i = 0; i < 6; i++) {
      const row = Array.from(a.targets.subarray(i * 10, i * 10 + 10));
      expect(row.reduce((x, y) => x + y, 0)).toBeCloseTo(1, 6);
      expect(row[data.labels[[3, 1, 4, 1, 5, 9][i]]]).toBeCloseTo(0.91, 6);
      expect(a.labels[i]).toBe(data.labels[[3, 1, 4, 1, 5, 9][i]]);
    }
    // Without crop and flip the images come through unchanged.
    const plain = makeTrainBatch(data, [2, 7], shape, { ...opts, crop: false, flip: false }, new Rng(1));
    expect(plain.images).toEqual(Uint8Array.from([...data.images.subarray(2 * PER, 3 * PER), ...data.images.subarray(7 * PER, 8 * PER)]));
  });

  it('mixup blends image i with image n−1−i (rounded u8) and mixes the targets with the same λ', () => {
    const idx = [0, 1, 2, 3];
    const m = makeTrainBatch(data, idx, shape, { crop: false, flip: false, mixupAlpha: 0.8, cutmixAlpha: 0, labelSmoothing: 0 }, new Rng(9));
    expect(m.mix?.kind).toBe('mixup');
    const lam = m.mix!.lambda;
    for (let i = 0; i < 4; i++) {
      const j = 3 - i;
      for (const p of [0, 100, 2000, PER - 1]) {
        expect(m.images[i * PER + p]).toBe(Math.round(lam * data.images[i * PER + p] + (1 - lam) * data.images[j * PER + p]));
      }
      expect(m.targets[i * 10 + data.labels[i]]).toBeCloseTo(lam, 6);
      expect(m.targets[i * 10 + data.labels[j]]).toBeCloseTo(1 - lam, 6);
    }
  });

  it('cutmix pastes a box of image n−1−i and weighs the targets by the box area', () => {
    const idx = [4, 5, 6, 7, 8];
    for (let seed = 0; seed < 5; seed++) {
      const m = makeTrainBatch(data, idx, shape, { crop: false, flip: false, mixupAlpha: 0, cutmixAlpha: 1, labelSmoothing: 0 }, new Rng(seed));
      expect(m.mix?.kind).toBe('cutmix');
      // The share of pixels taken from the partner image is 1 − λ (pixels equal in both images aside).
      let fromPartner = 0;
      let differing = 0;
      for (let p = 0; p < H * W; p++) {
        const own = data.images[idx[0] * PER + p];
        const partner = data.images[idx[4] * PER + p];
        if (own === partner) continue;
        differing++;
        if (m.images[p] === partner) fromPartner++;
        else expect(m.images[p]).toBe(own);
      }
      expect(fromPartner / differing).toBeCloseTo(1 - m.mix!.lambda, 1);
      expect(m.targets[4 + 0]).toBeCloseTo(m.mix!.lambda, 6); // label of image 4 is 4
    }
  });

  it('draws Beta(α, α) with mean ½ and the right spread', () => {
    const rng = new Rng(3);
    const xs = Array.from({ length: 20000 }, () => sampleBeta(rng, 0.8, 0.8));
    const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
    const variance = xs.reduce((a, b) => a + (b - mean) ** 2, 0) / xs.length;
    expect(mean).toBeCloseTo(0.5, 1);
    expect(variance).toBeCloseTo(1 / (4 * (2 * 0.8 + 1)), 2); // αβ / ((α+β)²(α+β+1))
    expect(xs.every((x) => x > 0 && x < 1)).toBe(true);
  });
});

describe('metrics', () => {
  it('counts top-1, top-5, the loss and the confusion matrix', () => {
    const C = 6;
    const t = new ClassificationTally(C);
    // 3 rows: right; wrong but in the top 5; wrong and last.
    const logits = [
      5, 1, 0, 0, 0, 0,
      0, 1, 2, 3, 4, 5,
      0, 1, 2, 3, 4, 5,
      9, 9, 9, 9, 9, 9, // padding row, ignored
    ];
    t.add(logits, [0, 4, 0], 3);
    const r = t.result();
    expect(r.n).toBe(3);
    expect(r.top1).toBeCloseTo(1 / 3, 12);
    expect(r.top5).toBeCloseTo(2 / 3, 12);
    expect(r.confusion[0][0]).toBe(1);
    expect(r.confusion[4][5]).toBe(1);
    expect(r.confusion[0][5]).toBe(1);
    expect(r.perClass[0]).toBe(0.5);
    expect(Number.isNaN(r.perClass[1])).toBe(true);
    const lse = (row: number[]) => Math.log(row.reduce((a, x) => a + Math.exp(x), 0));
    const expected = (lse(logits.slice(0, 6)) - 5 + lse(logits.slice(6, 12)) - 4 + lse(logits.slice(12, 18)) - 0) / 3;
    expect(r.loss).toBeCloseTo(expected, 10);
    expect(topK(softmax([1, 3, 2]), 2).map((x) => x[0])).toEqual([1, 2]);
  });
});

describe('recipes', () => {
  it('GPU defaults follow the linear scaling rule; CPU defaults are the short run', () => {
    const g = defaultRecipe('gpu');
    expect([g.model, g.epochs, g.batchSize, g.lr, g.warmupEpochs, g.weightDecay, g.labelSmoothing, g.dropPath, g.evalEvery]).toEqual(['vim-tiny', 115, 256, 1e-3, 5, 0.1, 0.1, 0.1, 5]);
    expect(g.augment).toEqual({ crop: true, padding: 4, flip: true, mixupAlpha: 0.2, cutmixAlpha: 0.2, randaugOps: 2, randaugMagnitude: 5, eraseProb: 0 });
    expect(augmentList(g.augment)).toBe('crop,flip,mixup (α 0.2),cutmix (α 0.2),randaug (2 ops at magnitude 5)');
    expect(defaultRecipe('gpu', 512).lr).toBe(2e-3);
    expect(scaledLr(128)).toBe(5e-4);
    const c = defaultRecipe('cpu');
    expect([c.model, c.subset, c.augment.crop, c.augment.flip]).toEqual(['vim-nano', 1600, true, true]);
  });
  it('names the option in its errors', () => {
    expect(() => validateRecipe({ ...defaultRecipe('cpu'), epochs: -1 })).toThrow(/--epochs: expected an integer ≥ 1/);
    expect(() => validateRecipe({ ...defaultRecipe('cpu'), labelSmoothing: 1 })).toThrow(/--label-smoothing/);
    expect(() => parseAugmentList('crop,blur', { mixup: 1, cutmix: 1 })).toThrow(VimError);
    expect(parseAugmentList('none', { mixup: 1, cutmix: 1 })).toMatchObject({ crop: false, flip: false, mixupAlpha: 0, cutmixAlpha: 0 });
    expect(parseAugmentList('flip,cutmix', { mixup: 0.8, cutmix: 1 })).toMatchObject({ crop: false, flip: true, mixupAlpha: 0, cutmixAlpha: 1 });
  });
  it('joins negative option values so that the range check can answer', () => {
    const spec: CommandSpec = { name: 't', summary: '', usage: '', options: { epochs: { type: 'string', help: '' }, json: { type: 'boolean', help: '' } } };
    expect(joinNegativeValues(spec, ['--epochs', '-3', '--json', 'x'])).toEqual(['--epochs=-3', '--json', 'x']);
    expect(joinNegativeValues(spec, ['--json', '-3'])).toEqual(['--json', '-3']);
  });
});

describe('held-out validation split (--holdout)', () => {
  it('holds out the last N images and trains on the first (subset of the) images before them', () => {
    expect(CIFAR10_TRAIN_IMAGES).toBe(CIFAR10_FILES.filter((f) => f.split === 'train').reduce((a, f) => a + f.records, 0));
    expect(holdoutSplit(50000, 5000, 0)).toEqual({ train: { start: 0, end: 45000 }, val: { start: 45000, end: 50000 } });
    expect(holdoutSplit(50000, 5000, 1600)).toEqual({ train: { start: 0, end: 1600 }, val: { start: 45000, end: 50000 } });
    expect(holdoutSplit(50000, 5000, 45000)).toEqual({ train: { start: 0, end: 45000 }, val: { start: 45000, end: 50000 } });
    expect(holdoutSplit(50000, 0, 0)).toEqual({ train: { start: 0, end: 50000 }, val: { start: 50000, end: 50000 } });
    expect(holdoutSplit(50000, 0, 48)).toEqual({ train: { start: 0, end: 48 }, val: { start: 50000, end: 50000 } });
    expect(holdoutSplit(64, 16, 0)).toEqual({ train: { start: 0, end: 48 }, val: { start: 48, end: 64 } });
    expect(holdoutSplit(50000, 49999, 1).train.end).toBe(1);
  });

  it('refuses a holdout that leaves nothing, a negative one, and a subset larger than what is left, in one line', () => {
    const cases: [number, number, RegExp][] = [
      [-1, 0, /^--holdout: expected an integer ≥ 0 but received -1$/],
      [2.5, 0, /^--holdout: expected an integer ≥ 0 but received 2\.5$/],
      [50000, 0, /^--holdout 50000 leaves no image to train on: hold out fewer than the 50,000 training images/],
      [60000, 0, /^--holdout 60000 leaves no image to train on/],
      [5000, 45001, /^--subset 45001 is larger than the 45,000 training images that --holdout 5000 leaves: use --subset 45000 or less, or a smaller --holdout$/],
      [0, 50001, /^--subset 50001 is larger than the 50,000 training images$/],
    ];
    for (const [holdout, subset, message] of cases) {
      expect(() => holdoutSplit(50000, holdout, subset)).toThrow(VimError);
      expect(() => holdoutSplit(50000, holdout, subset)).toThrow(message);
      // validateRecipe gives the same errors, so train-vim reports them before the GPU starts.
      expect(() => validateRecipe({ ...defaultRecipe('gpu'), holdout, subset })).toThrow(message);
    }
    expect(validateRecipe({ ...defaultRecipe('cpu'), holdout: 5000 }).holdout).toBe(5000);
  });

  it('is the last N records of data_batch_1…5 in file order, the same in every run', () => {
    const train = loadCifar10Split(undefined, 'train', { verify: false });
    const split = holdoutSplit(train.n, 5000, 1600);
    const val = imageRange(train, split.val.start, split.val.end, PER);
    const trainPart = imageRange(train, split.train.start, split.train.end, PER);
    expect([val.n, trainPart.n]).toEqual([5000, 1600]);
    // The held-out images are records 5,000…9,999 of data_batch_5.bin, byte for byte.
    const file = readFileSync(join(cifar10BatchesDir(), 'data_batch_5.bin'));
    for (const k of [0, 1, 2500, 4999]) {
      const rec = file.subarray((5000 + k) * CIFAR10_RECORD_BYTES, (5001 + k) * CIFAR10_RECORD_BYTES);
      expect(val.labels[k]).toBe(rec[0]);
      expect(Buffer.from(val.images.subarray(k * PER, (k + 1) * PER)).equals(rec.subarray(1))).toBe(true);
    }
    // Views, not copies: the training part ends where it should and never reaches the held-out images.
    expect(trainPart.images.byteOffset).toBe(train.images.byteOffset);
    expect(trainPart.images.length).toBe(1600 * PER);
    expect(val.images.byteOffset - train.images.byteOffset).toBe(45000 * PER);
    expect(() => imageRange(train, 10, 5, PER)).toThrow(VimError);
    expect(() => imageRange(train, 0, 50001, PER)).toThrow(VimError);
  });

  it('is in the recipe (0 by default and in runs from before the option) and is described at the start', () => {
    expect(defaultRecipe('gpu').holdout).toBe(0);
    expect(defaultRecipe('cpu').holdout).toBe(0);
    const r = { ...defaultRecipe('cpu'), holdout: 5000 };
    expect(describeRecipe(r, 1600, 1000)).toMatch(/test on 1,000 images and validate on the last 5,000 training images \(held out\) every epoch$/);
    expect(describeRecipe(defaultRecipe('cpu'), 1600, 1000)).toMatch(/test on 1,000 images every epoch$/);
    const { holdout: _, ...old } = defaultRecipe('cpu');
    expect(storedRecipe(old).holdout).toBe(0);
    expect(storedRecipe(r).holdout).toBe(5000);
  });

  it('cannot change when a run is resumed', () => {
    const stored: Recipe = { ...defaultRecipe('cpu'), holdout: 5000 };
    expect(() => checkResumeOptions({ epochs: '5', lr: '1e-3', resume: 'runs/x', holdout: undefined }, stored, 'runs/x')).not.toThrow();
    expect(() => checkResumeOptions({ holdout: '1000' }, stored, 'runs/x')).toThrow(
      /^--holdout cannot change when a run is resumed: the run in runs\/x validates on the last 5,000 training images \(--holdout 5000\) and keeps that split; drop --holdout$/);
    expect(() => checkResumeOptions({ holdout: '10' }, defaultRecipe('cpu'), 'runs/y')).toThrow(/the run in runs\/y holds no image out \(--holdout 0\)/);
    expect(() => checkResumeOptions({ subset: '8' }, stored, 'runs/x')).toThrow(/^--subset cannot change when a run is resumed .*only --epochs, --eval-every/);
  });
});

describe('images for prediction', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vim-images-'));
  const test = loadCifar10Split(undefined, 'test', { verify: false });
  const img = test.images.subarray(0, PER);
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('reads a 32×32 PNG back exactly and a JPEG closely', async () => {
    await saveChwImage(join(dir, 'a.png'), img, H, W);
    expect(await loadImageAsInput(join(dir, 'a.png'))).toEqual(Uint8Array.from(img));
    await saveChwImage(join(dir, 'a.jpg'), img, H, W);
    const jpg = await loadImageAsInput(join(dir, 'a.jpg'));
    let err = 0;
    for (let i = 0; i < PER; i++) err += Math.abs(jpg[i] - img[i]);
    expect(err / PER).toBeLessThan(12);
  });

  it('scales a large image down and crops the centre square', async () => {
    // 200×100: left half red, right half blue, with a green centre square of 100×100.
    const w = 200;
    const h = 100;
    const raw = new Uint8Array(w * h * 3);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const o = (y * w + x) * 3;
        if (x >= 50 && x < 150) raw[o + 1] = 255;
        else raw[o + (x < 50 ? 0 : 2)] = 255;
      }
    }
    await sharp(Buffer.from(raw), { raw: { width: w, height: h, channels: 3 } }).toFile(join(dir, 'wide.png'));
    const got = await loadImageAsInput(join(dir, 'wide.png'));
    expect(got.length).toBe(PER);
    // The centre crop is all green: no red or blue survives away from the borders.
    for (let y = 2; y < 30; y++) {
      for (let x = 2; x < 30; x++) {
        expect(got[0 * 1024 + y * 32 + x]).toBeLessThan(10);
        expect(got[1 * 1024 + y * 32 + x]).toBeGreaterThan(245);
      }
    }
  });

  it('makes grey images RGB and puts transparency on white', async () => {
    await sharp(Buffer.from(new Uint8Array(40 * 40).fill(77)), { raw: { width: 40, height: 40, channels: 1 } }).png().toFile(join(dir, 'g.png'));
    const g = await loadImageAsInput(join(dir, 'g.png'));
    expect(new Set(g)).toEqual(new Set([77]));
    await sharp(Buffer.from(new Uint8Array(32 * 32 * 4)), { raw: { width: 32, height: 32, channels: 4 } }).png().toFile(join(dir, 't.png'));
    expect(new Set(await loadImageAsInput(join(dir, 't.png')))).toEqual(new Set([255]));
    expect(chwToHwc(Uint8Array.from([1, 2, 3, 4, 5, 6]), 1, 2)).toEqual(Uint8Array.from([1, 3, 5, 2, 4, 6]));
  });

  it('names the file that is not an image, or missing', async () => {
    writeFileSync(join(dir, 'notes.txt'), 'hello');
    await expect(loadImageAsInput(join(dir, 'notes.txt'))).rejects.toThrow(/notes\.txt: not an image/);
    await expect(loadImageAsInput(join(dir, 'missing.png'))).rejects.toThrow(/missing\.png: no such file/);
    await expect(loadImageAsInput(dir)).rejects.toThrow(VimError);
  });
});

describe('test-time flip', () => {
  it('mirrors every plane of every image left–right and averages logits', () => {
    const S = 5;
    const n = 2;
    const images = Uint8Array.from({ length: n * 3 * S * S }, (_, i) => (i * 7) % 251);
    const m = mirrorImages(images, n, S);
    for (let i = 0; i < n; i++) {
      for (let c = 0; c < 3; c++) {
        for (let y = 0; y < S; y++) {
          for (let x = 0; x < S; x++) {
            expect(m[((i * 3 + c) * S + y) * S + x]).toBe(images[((i * 3 + c) * S + y) * S + (S - 1 - x)]);
          }
        }
      }
    }
    expect(mirrorImages(m, n, S)).toEqual(images);
    expect([...meanLogits([1, -2, 3, 9], [3, 2, 0, 9], 3)]).toEqual([2, 0, 1.5]);
  });
});

describe('drop path', () => {
  it('rates rise linearly over the blocks as in Vim, the last block at the full rate', () => {
    expect(dropPathRates(4, 0.3).map((r) => Number(r.toFixed(6)))).toEqual([0.1, 0.2, 0.3, 0.3]);
    expect(dropPathRates(1, 0.2)).toEqual([0.2]);
    expect(dropPathRates(3, 0)).toEqual([0, 0, 0]);
  });

  it('factors are 0 or 1/(1 − p) at about the rate, the same for the same seed and step', () => {
    const depth = 4;
    const B = 2000;
    const f = dropPathFactors(depth, B, 0.3, 5, 17);
    expect(dropPathFactors(depth, B, 0.3, 5, 17)).toEqual(f);
    expect(dropPathFactors(depth, B, 0.3, 5, 18)).not.toEqual(f);
    const rates = dropPathRates(depth, 0.3);
    for (let i = 0; i < depth; i++) {
      const row = f.subarray(i * B, (i + 1) * B);
      const keep = Math.fround(1 / (1 - rates[i]));
      expect(row.every((v) => v === 0 || v === keep)).toBe(true);
      const dropped = row.filter((v) => v === 0).length / B;
      expect(Math.abs(dropped - rates[i])).toBeLessThan(0.05);
    }
  });

  it('validates the rate and records it in the recipe line', () => {
    expect(() => validateRecipe({ ...defaultRecipe('gpu'), dropPath: 0.95 })).toThrow(/--drop-path/);
    expect(describeRecipe({ ...defaultRecipe('gpu'), dropPath: 0.1 }, 50000, 10000)).toMatch(/drop path 0\.1, seed 0/);
    expect(describeRecipe({ ...defaultRecipe('gpu'), dropPath: 0 }, 50000, 10000)).not.toMatch(/drop path/);
    expect(storedRecipe({ ...defaultRecipe('gpu'), dropPath: undefined } as never).dropPath).toBe(0);
  });
});
