/**
 * RandAugment's operations and random erasing (src/train/randaugment.ts), each against what it
 * must do to a small image: identities at magnitude 0, exact pixel maps for rotation by 90° and
 * translation, the lookup tables of solarize, posterize, autocontrast and equalize, the blends at
 * factor 0; and their use in training batches (augment.ts, recipe.ts).
 */
import { describe, expect, it } from 'vitest';
import { Rng } from '../src/rng.js';
import { makeTrainBatch } from '../src/train/augment.js';
import { applyRandAugOp, RANDAUG_OPS, randAugment, randomErase } from '../src/train/randaugment.js';
import { augmentList, defaultRecipe, parseAugmentList, storedRecipe, validateRecipe } from '../src/train/recipe.js';

const H = 8;
const W = 8;
const HW = H * W;

function randomImage(seed: number, h = H, w = W): Uint8Array {
  const rng = new Rng(seed);
  return Uint8Array.from({ length: 3 * h * w }, () => rng.int(256));
}

const at = (img: Uint8Array, c: number, y: number, x: number, w = W, h = H) => img[c * h * w + y * w + x]!;

describe('RandAugment operations', () => {
  it('are the identity at magnitude 0 (those that have one)', () => {
    for (const op of RANDAUG_OPS) {
      if (op === 'AutoContrast' || op === 'Equalize') continue;
      for (const sign of [1, -1] as const) {
        const img = randomImage(1);
        const copy = img.slice();
        applyRandAugOp(op, img, H, W, 0, sign);
        expect(Array.from(img), `${op} ${sign}`).toEqual(Array.from(copy));
      }
    }
  });

  it('Rotate by 90° (level 3) moves pixel (x, W−1−y) to (y, x)', () => {
    const img = randomImage(2);
    const src = img.slice();
    applyRandAugOp('Rotate', img, H, W, 3, 1);
    for (let c = 0; c < 3; c++) {
      for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) expect(at(img, c, y, x)).toBe(at(src, c, x, W - 1 - y));
    }
  });

  it('TranslateX by 3 px shifts right and fills grey; TranslateY by −2 px shifts up', () => {
    const W32 = 32;
    const img = randomImage(3, 4, W32);
    const src = img.slice();
    applyRandAugOp('TranslateX', img, 4, W32, 3 / (0.45 * W32), 1); // d = round(0.45 · level · W) = 3
    for (let c = 0; c < 3; c++) {
      for (let y = 0; y < 4; y++) {
        for (let x = 0; x < W32; x++) expect(at(img, c, y, x, W32, 4)).toBe(x < 3 ? 128 : at(src, c, y, x - 3, W32, 4));
      }
    }
    const img2 = randomImage(4);
    const src2 = img2.slice();
    applyRandAugOp('TranslateY', img2, H, W, 2 / (0.45 * H), -1); // d = −2
    for (let c = 0; c < 3; c++) {
      for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) expect(at(img2, c, y, x)).toBe(y >= H - 2 ? 128 : at(src2, c, y + 2, x));
    }
  });

  it('ShearX leaves the middle rows in place and moves the outer rows in opposite directions', () => {
    const img = new Uint8Array(3 * HW);
    for (let c = 0; c < 3; c++) for (let y = 0; y < H; y++) img[c * HW + y * W + 4] = 255; // a vertical line at x = 4
    applyRandAugOp('ShearX', img, H, W, 1, 1); // source x = x + 0.3 (y − 4)
    const lineAt = (y: number) => [...Array(W).keys()].filter((x) => at(img, 0, y, x) === 255);
    expect(lineAt(3)).toEqual([4]);
    expect(lineAt(4)).toEqual([4]);
    expect(lineAt(0)[0]).toBeGreaterThan(4); // top rows read from the left: the line moves right
    expect(lineAt(7)[0]).toBeLessThan(4);
  });

  it('Solarize inverts the pixels at or above the threshold; Posterize keeps the top bits', () => {
    const img = Uint8Array.from({ length: 3 * HW }, (_, i) => (i * 7) % 256);
    const src = img.slice();
    applyRandAugOp('Solarize', img, H, W, 0.5, 1); // threshold 128
    for (let i = 0; i < img.length; i++) expect(img[i]).toBe(src[i]! >= 128 ? 255 - src[i]! : src[i]);
    const img2 = src.slice();
    applyRandAugOp('Posterize', img2, H, W, 0.5, 1); // 8 − 2 = 6 bits
    for (let i = 0; i < img2.length; i++) expect(img2[i]).toBe(src[i]! & 0xfc);
  });

  it('AutoContrast stretches each channel to 0…255; Equalize spreads a two-level channel to 0 and 255', () => {
    const img = new Uint8Array(3 * HW).fill(77);
    for (let i = 0; i < HW; i++) img[i] = i % 2 ? 150 : 50; // channel 0: 50 and 150
    img[HW] = 100; // channel 1: one pixel of 100 among 77s
    applyRandAugOp('AutoContrast', img, H, W, 0, 1);
    expect([img[0], img[1]]).toEqual([0, 255]);
    expect([img[HW], img[HW + 1]]).toEqual([255, 0]);
    expect(img[2 * HW]).toBe(77); // a flat channel stays
    const S = 32 * 32; // PIL's table: step = (pixels − those of the top level) // 255, here 2
    const eq = new Uint8Array(3 * S);
    for (let i = 0; i < S; i++) eq[i] = i < S / 2 ? 10 : 200;
    applyRandAugOp('Equalize', eq, 32, 32, 0, 1);
    expect([eq[0], eq[S - 1]]).toEqual([0, 255]);
    const small = new Uint8Array(3 * HW);
    for (let i = 0; i < HW; i++) small[i] = i < HW / 2 ? 10 : 200;
    applyRandAugOp('Equalize', small, H, W, 0, 1); // 32 pixels below the top level: step 0, no change
    expect([small[0], small[HW - 1]]).toEqual([10, 200]);
  });

  it('at factor 0, Color gives grey, Contrast the mean grey, Brightness black, Sharpness the smoothed image', () => {
    const level = 1 / 0.9; // factor 1 − 0.9 · level = 0 with sign −1
    const img = randomImage(5);
    const src = img.slice();
    applyRandAugOp('Color', img, H, W, level, -1);
    let sum = 0;
    for (let p = 0; p < HW; p++) {
      const g = (19595 * src[p]! + 38470 * src[HW + p]! + 7471 * src[2 * HW + p]! + 0x8000) >> 16;
      sum += g;
      expect([img[p], img[HW + p], img[2 * HW + p]]).toEqual([g, g, g]);
    }
    const con = src.slice();
    applyRandAugOp('Contrast', con, H, W, level, -1);
    expect(new Set(con)).toEqual(new Set([Math.floor(sum / HW + 0.5)]));
    const dark = src.slice();
    applyRandAugOp('Brightness', dark, H, W, level, -1);
    expect(dark.every((v) => v === 0)).toBe(true);
    const dot = new Uint8Array(3 * HW);
    dot[3 * W + 3] = 130; // one bright pixel, channel 0
    applyRandAugOp('Sharpness', dot, H, W, level, -1);
    expect(at(dot, 0, 3, 3)).toBe(50); // 5 · 130 / 13
    expect(at(dot, 0, 2, 2)).toBe(10); // 130 / 13
    expect(at(dot, 0, 5, 5)).toBe(0);
  });

  it('randAugment is reproducible from its Rng and draws two numbers an operation', () => {
    const a = randomImage(6);
    const b = a.slice();
    const r1 = new Rng(11);
    const r2 = new Rng(11);
    randAugment(a, H, W, 3, 9, r1);
    randAugment(b, H, W, 3, 9, r2);
    expect(Array.from(a)).toEqual(Array.from(b));
    const r3 = new Rng(11);
    for (let i = 0; i < 6; i++) r3.uniform();
    expect(r1.uniform()).toBe(r3.uniform());
  });
});

describe('random erasing', () => {
  it('fills one box of 2–33% of the image with noise and leaves the rest', () => {
    const Hs = 32;
    for (let seed = 0; seed < 20; seed++) {
      const img = randomImage(100 + seed, Hs, Hs);
      const src = img.slice();
      const box = randomErase(img, Hs, Hs, 1, new Rng(seed));
      expect(box).not.toBeNull();
      const { y, x, h, w } = box!;
      expect(y >= 0 && x >= 0 && y + h <= Hs && x + w <= Hs).toBe(true);
      const frac = (h * w) / (Hs * Hs);
      expect(frac).toBeGreaterThan(0.01);
      expect(frac).toBeLessThan(0.37);
      for (let c = 0; c < 3; c++) {
        for (let yy = 0; yy < Hs; yy++) {
          for (let xx = 0; xx < Hs; xx++) {
            const inBox = yy >= y && yy < y + h && xx >= x && xx < x + w;
            if (!inBox) expect(at(img, c, yy, xx, Hs, Hs)).toBe(at(src, c, yy, xx, Hs, Hs));
          }
        }
      }
    }
    const img = randomImage(7);
    const src = img.slice();
    expect(randomErase(img, H, W, 0, new Rng(1))).toBeNull();
    expect(Array.from(img)).toEqual(Array.from(src));
  });
});

describe('in training batches and recipes', () => {
  const N = 6;
  const data = { images: Uint8Array.from({ length: N * 3 * 32 * 32 }, (_, i) => (i * 31) % 256), labels: Uint8Array.from([0, 1, 2, 3, 4, 5]) };
  const shape = { H: 32, W: 32, C: 10 };
  const base = { crop: true, padding: 4, flip: true, mixupAlpha: 0, cutmixAlpha: 0, labelSmoothing: 0.1 };

  it('leave the random stream of a recipe without them as it was', () => {
    const before = makeTrainBatch(data, [0, 1, 2, 3], shape, base, new Rng(3));
    const off = makeTrainBatch(data, [0, 1, 2, 3], shape, { ...base, randaugOps: 0, randaugMagnitude: 9, eraseProb: 0 }, new Rng(3));
    expect(Array.from(off.images)).toEqual(Array.from(before.images));
    const on = makeTrainBatch(data, [0, 1, 2, 3], shape, { ...base, randaugOps: 2, randaugMagnitude: 9, eraseProb: 0.5 }, new Rng(3));
    expect(Array.from(on.images)).not.toEqual(Array.from(before.images));
    expect(Array.from(on.targets)).toEqual(Array.from(before.targets)); // the targets do not change
  });

  it('are parsed, described, validated, and absent from recipes saved before them', () => {
    const a = parseAugmentList('crop,flip,randaug,erase', { mixup: 0.8, cutmix: 1 });
    expect(a).toMatchObject({ randaugOps: 2, randaugMagnitude: 5, eraseProb: 0.25 });
    expect(parseAugmentList('randaug', { mixup: 0.8, cutmix: 1, randaugOps: 3, randaugMagnitude: 5 })).toMatchObject({ randaugOps: 3, randaugMagnitude: 5, eraseProb: 0 });
    expect(augmentList(a)).toBe('crop,flip,randaug (2 ops at magnitude 5),erase (p 0.25)');
    expect(() => parseAugmentList('crop,autoaugment', { mixup: 1, cutmix: 1 })).toThrow(/randaug, erase/);
    const r = defaultRecipe('gpu');
    expect(r.augment, 'the GPU recipe: RandAugment, no erasing').toMatchObject({ randaugOps: 2, randaugMagnitude: 5, eraseProb: 0 });
    expect(defaultRecipe('cpu').augment).toMatchObject({ randaugOps: 0, eraseProb: 0 });
    expect(() => validateRecipe({ ...r, augment: { ...r.augment, randaugMagnitude: 11 } })).toThrow(/--randaug-magnitude/);
    expect(() => validateRecipe({ ...r, augment: { ...r.augment, eraseProb: 1.5 } })).toThrow(/--erase-prob/);
    const { randaugOps: _o, randaugMagnitude: _m, eraseProb: _e, ...old } = r.augment;
    expect(storedRecipe({ ...r, augment: old }).augment, 'a recipe saved before RandAugment existed had none')
      .toEqual({ ...r.augment, randaugOps: 0 });
  });
});
