/**
 * Evaluation of a model on a labelled image set, in batches of the model's batch size B; the last
 * partial batch is padded with zero images (setBatch does it) whose logits are ignored.
 */
import { VimError } from '../errors.js';
import type { VimGpu } from '../model/vim-gpu.js';
import { cropFlip } from './augment.js';
import { ClassificationTally, type ClassificationResult } from './metrics.js';

export interface LabelledImages {
  /** (n, 3, H, W) u8 */
  images: Uint8Array;
  /** (n) class indices */
  labels: Uint8Array;
  n: number;
}

export interface EvaluateOptions {
  /** Evaluate only the first `limit` images. */
  limit?: number;
  /** Called after every batch with images done and the total. */
  onProgress?: (done: number, total: number) => void;
  /** Polled between batches; when it returns true the evaluation stops and returns null. */
  shouldStop?: () => boolean;
  /**
   * Test-time flip: classify each image and its mirror image (left–right) and average the two
   * logits (twice the forward passes).
   */
  flip?: boolean;
}

/** The n images (n, 3, S, S) u8, each mirrored left–right. */
export function mirrorImages(images: Uint8Array, n: number, imgSize: number): Uint8Array {
  const per = 3 * imgSize * imgSize;
  const out = new Uint8Array(n * per);
  for (let i = 0; i < n; i++) {
    cropFlip(out.subarray(i * per, (i + 1) * per), images.subarray(i * per, (i + 1) * per), imgSize, imgSize, 0, 0, true);
  }
  return out;
}

/** (a + b) / 2 elementwise, for the first `count` values. */
export function meanLogits(a: ArrayLike<number>, b: ArrayLike<number>, count: number): Float32Array {
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) out[i] = (a[i] + b[i]) / 2;
  return out;
}

/** The first `limit` (default all) images of a set. */
export function firstImages(data: LabelledImages, limit: number | undefined, per: number): LabelledImages {
  if (limit === undefined || limit >= data.n) return data;
  if (!Number.isInteger(limit) || limit < 1) throw new VimError(`expected a positive number of images but received ${limit}`);
  return { images: data.images.subarray(0, limit * per), labels: data.labels.subarray(0, limit), n: limit };
}

/** Images start … end − 1 of a set (views, not copies). */
export function imageRange(data: LabelledImages, start: number, end: number, per: number): LabelledImages {
  if (!Number.isInteger(start) || !Number.isInteger(end) || start < 0 || end < start || end > data.n) {
    throw new VimError(`expected an image range within 0…${data.n} but received ${start}…${end}`);
  }
  if (start === 0 && end === data.n) return data;
  return { images: data.images.subarray(start * per, end * per), labels: data.labels.subarray(start, end), n: end - start };
}

/** Top-1, top-5, loss, per-class accuracy and the confusion matrix of `model` on `data`. */
export async function evaluate(model: VimGpu, data: LabelledImages, opts: EvaluateOptions = {}): Promise<ClassificationResult | null> {
  const { imgSize, C } = model.cfg;
  const per = 3 * imgSize * imgSize;
  const set = firstImages(data, opts.limit, per);
  const tally = new ClassificationTally(C);
  const B = model.B;
  // Each batch is submitted (forward() records, submits and queues the copy of its logits before it
  // returns its promise) before the one before it is tallied, so the GPU runs batch i + 1 while the
  // CPU waits for and counts batch i; the logits of each come from its own copy, in queue order.
  type Pending = { start: number; n: number; logits: Promise<Float32Array>; mirrored: Promise<Float32Array> | null };
  const take = async (q: Pending): Promise<void> => {
    const [a, m] = await Promise.all([q.logits, q.mirrored]); // (B, C) each; rows ≥ n are padding; fresh arrays
    tally.add(m ? meanLogits(a, m, q.n * C) : a, set.labels.subarray(q.start, q.start + q.n), q.n);
    opts.onProgress?.(q.start + q.n, set.n);
  };
  let inFlight: Pending | null = null;
  try {
    for (let start = 0; start < set.n; start += B) {
      if (opts.shouldStop?.()) return null;
      const n = Math.min(B, set.n - start);
      const images = set.images.subarray(start * per, (start + n) * per);
      model.setBatch(images, n);
      const logits = model.forward();
      let mirrored: Promise<Float32Array> | null = null;
      if (opts.flip) {
        model.setBatch(mirrorImages(images, n, imgSize), n);
        mirrored = model.forward();
      }
      const q: Pending = { start, n, logits, mirrored };
      for (const pr of [logits, mirrored]) pr?.catch(() => undefined); // awaited one batch later; a failure surfaces there
      if (inFlight) await take(inFlight);
      inFlight = q;
    }
    if (inFlight) await take(inFlight);
    inFlight = null;
  } finally {
    // a batch still in flight (a stop, an error) is awaited so that no read-back is left pending
    if (inFlight) await Promise.allSettled([inFlight.logits, inFlight.mirrored]);
  }
  return tally.result();
}
