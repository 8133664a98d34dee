/**
 * RandAugment (Cubuk et al., 2020) and random erasing (Zhong et al., 2020) on one u8 image
 * (3, H, W) CHW, in place, for the training batches of augment.ts.
 *
 * RandAugment applies N operations, each drawn uniformly from the fourteen of the paper, all at
 * one magnitude M in 0…10 (level = M / 10):
 *   Identity, AutoContrast, Equalize               (no magnitude)
 *   Rotate        ±30° · level about the centre    ShearX, ShearY   ±0.3 · level
 *   TranslateX/Y  ±0.45 · level of the side        Solarize  invert pixels ≥ 256 − 256 · level
 *   Posterize     keep 8 − round(4 · level) bits   Color, Contrast, Brightness, Sharpness:
 *                                                  factor 1 ± 0.9 · level (the sign drawn)
 * Geometric operations sample the source pixel nearest to the inverse-mapped pixel centre and
 * fill what falls outside with grey 128. Color blends with the image's grey version
 * (L = 0.299 R + 0.587 G + 0.114 B), Contrast with its mean grey level, Brightness with black and
 * Sharpness with its 3×3 smoothed version ([1 1 1; 1 5 1; 1 1 1] / 13, the border kept); every
 * blend is rounded and clipped to 0…255. AutoContrast stretches each channel's range to 0…255;
 * Equalize equalises each channel's histogram.
 *
 * Random erasing: with probability p, a box of 2–33% of the image with aspect ratio 0.3…3.3
 * (log-uniform) is filled with uniform random pixels (up to 10 tries to fit it inside).
 *
 * Randomness comes from the batch's Rng in a fixed order per image: for RandAugment, per
 * operation, the operation's index then its sign; for erasing, the coin, then per try the area,
 * the aspect ratio and the corner, then the fill.
 */
import type { Rng } from '../rng.js';

export const RANDAUG_OPS = [
  'Identity', 'AutoContrast', 'Equalize', 'Rotate', 'Solarize', 'Color', 'Posterize',
  'Contrast', 'Brightness', 'Sharpness', 'ShearX', 'ShearY', 'TranslateX', 'TranslateY',
] as const;
export type RandAugOp = (typeof RANDAUG_OPS)[number];

const FILL = 128;

function clip8(v: number): number {
  return v < 0 ? 0 : v > 255 ? 255 : Math.round(v);
}

/** out = deg + f · (img − deg) per element, rounded and clipped (deg: the "degenerate" image). */
function blend(img: Uint8Array, deg: ArrayLike<number>, f: number): void {
  for (let i = 0; i < img.length; i++) img[i] = clip8(deg[i]! + f * (img[i]! - deg[i]!));
}

/** The grey level of every pixel, (H·W), rounded as 8-bit: (19595 R + 38470 G + 7471 B + 2^15) >> 16. */
function grey(img: Uint8Array, HW: number): Uint8Array {
  const g = new Uint8Array(HW);
  for (let p = 0; p < HW; p++) g[p] = (19595 * img[p]! + 38470 * img[HW + p]! + 7471 * img[2 * HW + p]! + 0x8000) >> 16;
  return g;
}

/**
 * Resample the image through an inverse map: output pixel (x, y) takes the source pixel nearest
 * to map(x + ½, y + ½), or FILL outside. `map` returns source coordinates in pixel units.
 */
function remap(img: Uint8Array, H: number, W: number, map: (x: number, y: number) => [number, number]): void {
  const src = img.slice();
  const HW = H * W;
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      const [sx, sy] = map(x + 0.5, y + 0.5);
      const ix = Math.floor(sx);
      const iy = Math.floor(sy);
      const inside = ix >= 0 && ix < W && iy >= 0 && iy < H;
      for (let c = 0; c < 3; c++) img[c * HW + y * W + x] = inside ? src[c * HW + iy * W + ix]! : FILL;
    }
  }
}

function autoContrast(img: Uint8Array, HW: number): void {
  for (let c = 0; c < 3; c++) {
    const ch = img.subarray(c * HW, (c + 1) * HW);
    let lo = 255;
    let hi = 0;
    for (const v of ch) {
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    if (hi <= lo) continue;
    const scale = 255 / (hi - lo);
    for (let i = 0; i < HW; i++) ch[i] = clip8((ch[i]! - lo) * scale);
  }
}

/** Histogram equalisation per channel (the lookup table of PIL's ImageOps.equalize). */
function equalize(img: Uint8Array, HW: number): void {
  for (let c = 0; c < 3; c++) {
    const ch = img.subarray(c * HW, (c + 1) * HW);
    const hist = new Array<number>(256).fill(0);
    for (const v of ch) hist[v]!++;
    let last = 255;
    while (last > 0 && hist[last] === 0) last--;
    const step = Math.floor((HW - hist[last]!) / 255);
    if (step === 0) continue;
    const lut = new Uint8Array(256);
    let n = Math.floor(step / 2);
    for (let i = 0; i < 256; i++) {
      lut[i] = Math.min(255, Math.floor(n / step));
      n += hist[i]!;
    }
    for (let i = 0; i < HW; i++) ch[i] = lut[ch[i]!]!;
  }
}

function sharpnessDegenerate(img: Uint8Array, H: number, W: number): Float32Array {
  const HW = H * W;
  const out = Float32Array.from(img);
  for (let c = 0; c < 3; c++) {
    for (let y = 1; y < H - 1; y++) {
      for (let x = 1; x < W - 1; x++) {
        let s = 0;
        for (let dy = -1; dy <= 1; dy++) for (let dx = -1; dx <= 1; dx++) s += img[c * HW + (y + dy) * W + x + dx]!;
        s += 4 * img[c * HW + y * W + x]!; // centre weight 5
        out[c * HW + y * W + x] = s / 13;
      }
    }
  }
  return out;
}

/**
 * Apply one RandAugment operation in place at `level` (0…1) with `sign` (±1) for the signed ones.
 * Exported for the tests; randAugment draws the operation and the sign.
 */
export function applyRandAugOp(op: RandAugOp, img: Uint8Array, H: number, W: number, level: number, sign: 1 | -1): void {
  const HW = H * W;
  const cx = W / 2;
  const cy = H / 2;
  switch (op) {
    case 'Identity':
      return;
    case 'AutoContrast':
      return autoContrast(img, HW);
    case 'Equalize':
      return equalize(img, HW);
    case 'Rotate': {
      const t = (sign * 30 * level * Math.PI) / 180; // counter-clockwise as seen, y pointing down
      const cos = Math.cos(t);
      const sin = Math.sin(t);
      return remap(img, H, W, (x, y) => [cx + cos * (x - cx) - sin * (y - cy), cy + sin * (x - cx) + cos * (y - cy)]);
    }
    case 'ShearX': {
      const s = sign * 0.3 * level;
      return remap(img, H, W, (x, y) => [x + s * (y - cy), y]);
    }
    case 'ShearY': {
      const s = sign * 0.3 * level;
      return remap(img, H, W, (x, y) => [x, y + s * (x - cx)]);
    }
    case 'TranslateX': {
      const d = Math.round(sign * 0.45 * level * W);
      return remap(img, H, W, (x, y) => [x - d, y]);
    }
    case 'TranslateY': {
      const d = Math.round(sign * 0.45 * level * H);
      return remap(img, H, W, (x, y) => [x, y - d]);
    }
    case 'Solarize': {
      const threshold = 256 - 256 * level;
      for (let i = 0; i < img.length; i++) if (img[i]! >= threshold) img[i] = 255 - img[i]!;
      return;
    }
    case 'Posterize': {
      const bits = 8 - Math.round(4 * level);
      const mask = (0xff << (8 - bits)) & 0xff;
      for (let i = 0; i < img.length; i++) img[i] = img[i]! & mask;
      return;
    }
    case 'Color': {
      const g = grey(img, HW);
      const deg = new Uint8Array(3 * HW);
      for (let c = 0; c < 3; c++) deg.set(g, c * HW);
      return blend(img, deg, 1 + sign * 0.9 * level);
    }
    case 'Contrast': {
      const g = grey(img, HW);
      let sum = 0;
      for (const v of g) sum += v;
      const mean = Math.floor(sum / HW + 0.5);
      return blend(img, new Uint8Array(3 * HW).fill(mean), 1 + sign * 0.9 * level);
    }
    case 'Brightness':
      return blend(img, new Uint8Array(3 * HW), 1 + sign * 0.9 * level);
    case 'Sharpness':
      return blend(img, sharpnessDegenerate(img, H, W), 1 + sign * 0.9 * level);
  }
}

/** RandAugment in place: `n` operations drawn uniformly, at magnitude `m` (0…10). */
export function randAugment(img: Uint8Array, H: number, W: number, n: number, m: number, rng: Rng): void {
  for (let k = 0; k < n; k++) {
    const op = RANDAUG_OPS[rng.int(RANDAUG_OPS.length)]!;
    const sign = rng.uniform() < 0.5 ? -1 : 1;
    applyRandAugOp(op, img, H, W, m / 10, sign);
  }
}

/** Random erasing in place with probability `p`; returns the box erased, if any. */
export function randomErase(img: Uint8Array, H: number, W: number, p: number, rng: Rng): { y: number; x: number; h: number; w: number } | null {
  if (!(rng.uniform() < p)) return null;
  const HW = H * W;
  for (let attempt = 0; attempt < 10; attempt++) {
    const area = HW * (0.02 + rng.uniform() * (1 / 3 - 0.02));
    const aspect = Math.exp(Math.log(0.3) + rng.uniform() * (Math.log(1 / 0.3) - Math.log(0.3)));
    const h = Math.round(Math.sqrt(area * aspect));
    const w = Math.round(Math.sqrt(area / aspect));
    if (h < 1 || w < 1 || h >= H || w >= W) continue;
    const y = rng.int(H - h + 1);
    const x = rng.int(W - w + 1);
    for (let c = 0; c < 3; c++) {
      for (let yy = y; yy < y + h; yy++) {
        for (let xx = x; xx < x + w; xx++) img[c * HW + yy * W + xx] = rng.int(256);
      }
    }
    return { y, x, h, w };
  }
  return null;
}
