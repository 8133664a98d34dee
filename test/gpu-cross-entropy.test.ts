import { describe, expect, it } from 'vitest';
import { smooth_targets, softmax_cross_entropy_backward, softmax_cross_entropy_forward } from '../src/reference/cross-entropy.js';
import { softmaxCrossEntropyBackward, softmaxCrossEntropyForward } from '../src/gpu/ops/cross-entropy.js';
import { Rng } from '../src/rng.js';
import { randArray, read, relErr, run, tensorFrom, testGpu, zerosTensor } from './helpers/gpu.js';

const TOL = 1e-5;

/** Label-smoothed targets mixed pairwise as mixup does (rows sum to 1), rounded to f32. */
function mixedTargets(rng: Rng, B: number, C: number): Float64Array {
  const a = new Float64Array(B * C);
  const b = new Float64Array(B * C);
  smooth_targets(a, Array.from({ length: B }, () => rng.int(C)), B, C, 0.1);
  smooth_targets(b, Array.from({ length: B }, () => rng.int(C)), B, C, 0.1);
  const lam = rng.uniform();
  return a.map((x, i) => Math.fround(lam * x + (1 - lam) * b[i]));
}

describe('softmax cross-entropy kernels', () => {
  for (const [B, C] of [[3, 10], [37, 100]] as const) {
    it(`forward: losses, probs and the mean loss (B=${B} C=${C})`, async () => {
      const gpu = await testGpu();
      const rng = new Rng(B * C);
      const logits = randArray(rng, B * C, -6, 6);
      logits[0] = 40; // a large logit: the log-sum-exp must stay stable
      const targets = mixedTargets(rng, B, C);
      const losses = zerosTensor(gpu, B, 'losses');
      const probs = zerosTensor(gpu, B * C, 'probs');
      const loss = zerosTensor(gpu, 1, 'loss');
      await run(gpu, softmaxCrossEntropyForward(gpu, {
        losses, probs, loss, logits: tensorFrom(gpu, logits), targets: tensorFrom(gpu, targets), B, C,
      }));
      const [wl, wp] = [new Float64Array(B), new Float64Array(B * C)];
      softmax_cross_entropy_forward(wl, wp, logits, targets, B, C);
      expect(relErr(await read(gpu, losses), wl)).toBeLessThan(TOL);
      expect(relErr(await read(gpu, probs), wp)).toBeLessThan(TOL);
      const mean = wl.reduce((s, x) => s + x, 0) / B;
      expect(relErr(await read(gpu, loss), [mean])).toBeLessThan(TOL);
    });
  }

  for (const accumulate of [false, true]) {
    it(`backward${accumulate ? ' (accumulate)' : ''} (B=3 C=10)`, async () => {
      const gpu = await testGpu();
      const rng = new Rng(accumulate ? 5 : 4);
      const [B, C] = [3, 10];
      const logits = randArray(rng, B * C, -3, 3);
      const targets = mixedTargets(rng, B, C);
      const [l, p] = [new Float64Array(B), new Float64Array(B * C)];
      softmax_cross_entropy_forward(l, p, logits, targets, B, C);
      const probs = Float64Array.from(p, Math.fround);
      const dlogits = accumulate ? randArray(rng, B * C) : new Float64Array(B * C);
      const t = tensorFrom(gpu, accumulate ? dlogits : randArray(rng, B * C), 'dlogits');
      await run(gpu, [softmaxCrossEntropyBackward(gpu, {
        dlogits: t, probs: tensorFrom(gpu, probs), targets: tensorFrom(gpu, targets), B, C, scale: 1 / B, accumulate,
      })]);
      softmax_cross_entropy_backward(dlogits, 1 / B, probs, targets, B, C);
      expect(relErr(await read(gpu, t), dlogits)).toBeLessThan(TOL);
    });
  }
});
