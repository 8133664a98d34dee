/**
 * Training-time augmentation on the CPU, on u8 images (n, 3, H, W) CHW, before the one upload of
 * a batch:
 *   - random crop with zero padding: the image is padded by `padding` px of zeros on every side
 *     and a random H×W window is taken (offsets uniform in 0…2·padding);
 *   - horizontal flip with probability ½;
 *   - RandAugment (N operations at magnitude M) and random erasing, per image after the crop and
 *     flip (randaugment.ts);
 *   - mixup (Zhang et al.): image i is blended with image n−1−i of the batch, λ ~ Beta(α, α),
 *     pixels rounded back to u8, targets mixed with the same λ;
 *   - cutmix (Yun et al.): a box of area (1 − λ)·H·W from image n−1−i is pasted into image i,
 *     λ ~ Beta(α, α) then corrected to the box actually pasted (boxes are clipped at the border).
 * With both mixup and cutmix on, each batch takes one of them with probability ½ (as timm does).
 * Targets start as label-smoothed one-hots, so every target row sums to 1 before and after mixing.
 * All randomness comes from one Rng, whose state the trainer saves to resume exactly. The crop and
 * flip draw whatever the options; RandAugment and erasing draw only when on, so the stream of a
 * recipe without them is what it was before they existed.
 */
import { VimError } from '../errors.js';
import type { Rng } from '../rng.js';
import { randAugment, randomErase } from './randaugment.js';

export interface AugmentOptions {
  /** Random crop with zero padding. */
  crop: boolean;
  /** Pixels of zero padding for the crop (default 4). */
  padding?: number;
  /** Random horizontal flip. */
  flip: boolean;
  /** Mixup's Beta(α, α); 0 turns it off. */
  mixupAlpha: number;
  /** Cutmix's Beta(α, α); 0 turns it off. */
  cutmixAlpha: number;
  /** RandAugment: operations per image (0 = off) and their magnitude, 0…10 (default 9). */
  randaugOps?: number;
  randaugMagnitude?: number;
  /** Random erasing: the probability an image gets a box of noise (0 = off). */
  eraseProb?: number;
}

export interface TrainBatch {
  /** (n, 3, H, W) u8 */
  images: Uint8Array;
  /** (n, C) soft targets, rows summing to 1 */
  targets: Float32Array;
  /** (n) the class each row's target weights most (for the training accuracy) */
  labels: Uint8Array;
  /** 'mixup' or 'cutmix' when this batch was mixed, with its λ */
  mix?: { kind: 'mixup' | 'cutmix'; lambda: number };
}

/** A Gamma(a, 1) draw (Marsaglia & Tsang; a < 1 through Gamma(a + 1) · U^(1/a)). */
export function sampleGamma(rng: Rng, a: number): number {
  if (!(a > 0)) throw new Error(`sampleGamma: expected a positive shape but received ${a}`);
  if (a < 1) {
    let u = 0;
    while (u === 0) u = rng.uniform();
    return sampleGamma(rng, a + 1) * u ** (1 / a);
  }
  const d = a - 1 / 3;
  const c = 1 / Math.sqrt(9 * d);
  for (;;) {
    let x: number;
    let v: number;
    do {
      x = rng.normal();
      v = 1 + c * x;
    } while (v <= 0);
    v = v * v * v;
    const u = rng.uniform();
    if (u < 1 - 0.0331 * x ** 4) return d * v;
    if (u > 0 && Math.log(u) < 0.5 * x * x + d * (1 - v + Math.log(v))) return d * v;
  }
}

/** A Beta(a, b) draw. */
export function sampleBeta(rng: Rng, a: number, b: number): number {
  const x = sampleGamma(rng, a);
  const y = sampleGamma(rng, b);
  return x / (x + y);
}

/**
 * out (3, H, W) = src (3, H, W) shifted by (dy, dx) ∈ [−pad, pad]² with zeros where it leaves the
 * image (a crop of the zero-padded image at offset (pad + dy, pad + dx)), mirrored when `flip`.
 */
export function cropFlip(out: Uint8Array, src: Uint8Array, H: number, W: number, dy: number, dx: number, flip: boolean): void {
  for (let c = 0; c < 3; c++) {
    const plane = c * H * W;
    for (let y = 0; y < H; y++) {
      const sy = y + dy;
      const row = plane + y * W;
      if (sy < 0 || sy >= H) {
        out.fill(0, row, row + W);
        continue;
      }
      const srow = plane + sy * W;
      for (let x = 0; x < W; x++) {
        const sx = (flip ? W - 1 - x : x) + dx;
        out[row + x] = sx >= 0 && sx < W ? src[srow + sx] : 0;
      }
    }
  }
}

/**
 * Assemble one augmented training batch from `indices` into a dataset of images (N, 3, H, W) u8
 * and labels (N): crop and flip per image, smoothed one-hot targets, then mixup or cutmix over
 * the batch.
 */
export function makeTrainBatch(
  data: { images: Uint8Array; labels: Uint8Array },
  indices: ArrayLike<number>,
  shape: { H: number; W: number; C: number },
  opts: AugmentOptions & { labelSmoothing: number },
  rng: Rng,
): TrainBatch {
  const { H, W, C } = shape;
  const per = 3 * H * W;
  const n = indices.length;
  const pad = opts.padding ?? 4;
  if (!Number.isInteger(pad) || pad < 0 || pad >= Math.min(H, W)) {
    throw new VimError(`crop padding must be an integer in 0…${Math.min(H, W) - 1}; received ${pad}`);
  }
  const eps = opts.labelSmoothing;
  if (!(eps >= 0 && eps < 1)) throw new VimError(`--label-smoothing: expected a number in [0, 1) but received ${eps}`);
  const images = new Uint8Array(n * per);
  const targets = new Float32Array(n * C);
  const labels = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const k = indices[i];
    const src = data.images.subarray(k * per, (k + 1) * per);
    const out = images.subarray(i * per, (i + 1) * per);
    // Draw in a fixed order whatever the options, so the stream does not depend on them.
    const dy = opts.crop ? rng.int(2 * pad + 1) - pad : 0;
    const dx = opts.crop ? rng.int(2 * pad + 1) - pad : 0;
    const flip = opts.flip ? rng.uniform() < 0.5 : false;
    if (dy === 0 && dx === 0 && !flip) out.set(src);
    else cropFlip(out, src, H, W, dy, dx, flip);
    if ((opts.randaugOps ?? 0) > 0) randAugment(out, H, W, opts.randaugOps!, opts.randaugMagnitude ?? 9, rng);
    if ((opts.eraseProb ?? 0) > 0) randomErase(out, H, W, opts.eraseProb!, rng);
    const label = data.labels[k];
    labels[i] = label;
    for (let c = 0; c < C; c++) targets[i * C + c] = eps / C + (c === label ? 1 - eps : 0);
  }
  const useMixup = opts.mixupAlpha > 0;
  const useCutmix = opts.cutmixAlpha > 0;
  if (!useMixup && !useCutmix || n < 2) return { images, targets, labels };
  const kind = useMixup && useCutmix ? (rng.uniform() < 0.5 ? 'mixup' : 'cutmix') : useMixup ? 'mixup' : 'cutmix';
  const orig = images.slice();
  const origT = targets.slice();
  let lambda: number;
  if (kind === 'mixup') {
    lambda = sampleBeta(rng, opts.mixupAlpha, opts.mixupAlpha);
    for (let i = 0; i < n; i++) {
      const a = i * per;
      const b = (n - 1 - i) * per;
      for (let p = 0; p < per; p++) images[a + p] = Math.round(lambda * orig[a + p] + (1 - lambda) * orig[b + p]);
    }
  } else {
    const l0 = sampleBeta(rng, opts.cutmixAlpha, opts.cutmixAlpha);
    const ratio = Math.sqrt(1 - l0);
    const ch = Math.floor(H * ratio);
    const cw = Math.floor(W * ratio);
    const cy = rng.int(H);
    const cx = rng.int(W);
    const y0 = Math.max(0, cy - (ch >> 1));
    const y1 = Math.min(H, cy + (ch >> 1));
    const x0 = Math.max(0, cx - (cw >> 1));
    const x1 = Math.min(W, cx + (cw >> 1));
    for (let i = 0; i < n; i++) {
      const a = i * per;
      const b = (n - 1 - i) * per;
      for (let c = 0; c < 3; c++) {
        for (let y = y0; y < y1; y++) {
          const o = c * H * W + y * W;
          images.set(orig.subarray(b + o + x0, b + o + x1), a + o + x0);
        }
      }
    }
    lambda = 1 - ((y1 - y0) * (x1 - x0)) / (H * W);
  }
  for (let i = 0; i < n; i++) {
    const j = n - 1 - i;
    let best = 0;
    for (let c = 0; c < C; c++) {
      const t = lambda * origT[i * C + c] + (1 - lambda) * origT[j * C + c];
      targets[i * C + c] = t;
      if (t > targets[i * C + best]) best = c;
    }
    labels[i] = best;
  }
  return { images, targets, labels, mix: { kind, lambda } };
}
