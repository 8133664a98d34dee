/**
 * Finite-difference checks of the whole float64 Vim: the gradient of every parameter tensor and of
 * the normalised input, at a small config with odd sizes (6×6 images, 2-px patches: Np = 9, L = 10,
 * class token at 4; D = 7, E = 14, R = 2, N = 3, depth 2, 5 classes) and random parameters of a
 * reasonable scale (not the init, whose zeros and ones would hide mistakes).
 * Per sampled coordinate: |analytic − numeric| / max(|analytic|, |numeric|, 1e-5) < 1e-6.
 */
import { describe, expect, it } from 'vitest';
import { resolveConfig, type VimConfig } from '../src/model/config.js';
import { DIRECTION_NAMES, ParamSet } from '../src/model/params.js';
import { Rng } from '../src/rng.js';
import {
  check_gradient, normalize_images, smooth_targets, softmax_cross_entropy_forward, vimBackward, vimForward, vimLoss,
  type GradCheckResult,
} from '../src/reference/index.js';

const TOL = 1e-6;
const SAMPLES = 12; // coordinates per tensor (all of a smaller tensor)

const cfg = resolveConfig({
  name: 'fd-test', img_size: 6, patch_size: 2, embed_dim: 7, depth: 2, d_state: 3, expand: 2, d_conv: 4,
  dt_rank: 2, num_classes: 5,
});
const B = 3;

/** Random parameters of the scale training sees: unit-variance activations, Δ around 0.05…1. */
function randomParams(seed: number, config: VimConfig = cfg): ParamSet<Float64Array> {
  const rng = new Rng(seed);
  const params = ParamSet.zeros64(config);
  for (const spec of params.specs) {
    const t = params.get(spec.name);
    const name = spec.name;
    const fanIn = spec.shape.slice(1).reduce((a, b) => a * b, 1);
    for (let i = 0; i < t.length; i++) {
      if (/A(_b)?_log$/.test(name)) t[i] = Math.log(1 + (i % config.N)) + 0.3 * rng.normal();
      else if (/\.D(_b)?$/.test(name)) t[i] = 1 + 0.3 * rng.normal();
      else if (/dt_proj(_b)?\.bias$/.test(name)) t[i] = rng.range(-3, 0);
      else if (/norm(_f)?\.weight$/.test(name)) t[i] = 1 + 0.2 * rng.normal();
      else if (name.endsWith('bias')) t[i] = 0.2 * rng.normal();
      else if (name === 'cls_token' || name === 'pos_embed') t[i] = 0.5 * rng.normal();
      else t[i] = rng.normal() / Math.sqrt(fanIn); // matrices: std 1/sqrt(fan-in)
    }
  }
  return params;
}

function randomImages(seed: number): Uint8Array {
  const rng = new Rng(seed);
  return Uint8Array.from({ length: B * 3 * cfg.imgSize * cfg.imgSize }, () => rng.int(256));
}

function dot(a: Float64Array, b: Float64Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

function expectPass(r: GradCheckResult): void {
  if (process.env.GRADCHECK_VERBOSE) console.log(`${r.name}: ${r.checked} coords, max err ${r.maxError.toExponential(2)}`);
  expect(r.maxError, `${r.name}: worst at ${r.worstIndex}, analytic ${r.analytic} vs numeric ${r.numeric}`).toBeLessThan(TOL);
}

describe('reference Vim', () => {
  it('has the expected small shapes', () => {
    expect([cfg.Np, cfg.L, cfg.clsPos, cfg.D, cfg.E, cfg.R, cfg.N, cfg.K, cfg.C]).toEqual([9, 10, 4, 7, 14, 2, 3, 4, 5]);
  });

  it('normalises u8 images exactly as a pre-normalised input', () => {
    const params = randomParams(1);
    const images = randomImages(2);
    const x = new Float64Array(images.length);
    normalize_images(x, images, B, cfg.imgSize, cfg.imgSize);
    const a = vimForward(params, images, B).logits;
    const b = vimForward(params, x, B).logits;
    expect(a).toEqual(b);
    expect(a.every(Number.isFinite)).toBe(true);
  });

  it('backward matches finite differences for every parameter tensor and the input', () => {
    const params = randomParams(3);
    const images = randomImages(4);
    const x = new Float64Array(images.length); // (B, 3, H, W)
    normalize_images(x, images, B, cfg.imgSize, cfg.imgSize);
    const g = Float64Array.from({ length: B * cfg.C }, (_, i) => Math.sin(1 + 3.7 * i)); // upstream dlogits
    const loss = () => dot(g, vimForward(params, x, B).logits); // Σ g ⊙ logits
    const { cache } = vimForward(params, x, B);
    const dx = new Float64Array(x.length);
    const grads = vimBackward(params, cache, g, dx);
    const rng = new Rng(5);
    for (const spec of params.specs) {
      expectPass(check_gradient(spec.name, params.get(spec.name), grads.get(spec.name), loss, { samples: SAMPLES, rng }));
    }
    expectPass(check_gradient('normalised input', x, dx, loss, { samples: 3 * SAMPLES, rng }));
  });

  it('with drop path: finite differences agree, and a dropped block leaves its sample\'s logits as if it were absent', () => {
    const params = randomParams(21);
    const images = randomImages(22);
    const g = Float64Array.from({ length: B * cfg.C }, (_, i) => Math.cos(0.3 + 1.9 * i));
    // block 0: sample 0 dropped, the others kept at 1/(1 − 0.2); block 1: all kept at 1/(1 − 0.4)
    const scales = Float64Array.from([0, 1.25, 1.25, 1 / 0.6, 1 / 0.6, 1 / 0.6]);
    const loss = () => dot(g, vimForward(params, images, B, scales).logits);
    const { cache } = vimForward(params, images, B, scales);
    const grads = vimBackward(params, cache, g);
    const rng = new Rng(23);
    for (const spec of params.specs) {
      expectPass(check_gradient(spec.name, params.get(spec.name), grads.get(spec.name), loss, { samples: 4, rng }));
    }
    // Dropping block 0's output for every sample is the same as a block 0 whose out_proj is zero.
    const zeroOut = randomParams(21);
    zeroOut.layer(0, 'out_proj.weight').fill(0);
    const allDropped = Float64Array.from([0, 0, 0, 1, 1, 1]);
    expect(vimForward(params, images, B, allDropped).logits).toEqual(vimForward(zeroOut, images, B).logits);
    // With block 0's output dropped for every sample, block 0's out_proj gets no gradient.
    expect(vimBackward(params, vimForward(params, images, B, allDropped).cache, g).layer(0, 'out_proj.weight').every((v) => v === 0)).toBe(true);
  });

  it('vimLoss: the mean cross-entropy with label smoothing and its gradient', () => {
    const params = randomParams(6);
    const images = randomImages(7);
    const targets = new Float64Array(B * cfg.C); // (B, C)
    smooth_targets(targets, [2, 0, 4], B, cfg.C, 0.1);
    const { loss, logits, grads } = vimLoss(params, images, targets, B);
    // The loss is −mean Σ t·log softmax(logits).
    const losses = new Float64Array(B), probs = new Float64Array(B * cfg.C);
    softmax_cross_entropy_forward(losses, probs, logits, targets, B, cfg.C);
    let expected = 0;
    for (let b = 0; b < B; b++) {
      const row = logits.subarray(b * cfg.C, (b + 1) * cfg.C);
      const lse = Math.log(row.reduce((a, v) => a + Math.exp(v), 0));
      for (let c = 0; c < cfg.C; c++) expected -= (targets[b * cfg.C + c] * (row[c] - lse)) / B;
    }
    expect(loss).toBeCloseTo(expected, 13);
    const lossOf = () => vimLoss(params, images, targets, B).loss;
    const rng = new Rng(8);
    for (const spec of params.specs) {
      expectPass(check_gradient(spec.name, params.get(spec.name), grads.get(spec.name), lossOf, { samples: 4, rng }));
    }
  });

  it('reversing the token sequence and swapping the two directions\' parameters leaves the logits unchanged', () => {
    // With Np = 16 the middle class token (clsPos 8) is its own mirror image (L − 1 − 8 = 8), and
    // rotating the image by 180° (with the patch kernel rotated too) reverses the patch order. The
    // backward direction of the reversed sequence then computes what the forward direction computed
    // before, and vice versa, so every block's output is the reversed original: this checks the
    // reversals of the conv, the scan's gate and the combine against each other.
    const c2 = resolveConfig({
      name: 'flip-test', img_size: 8, patch_size: 2, embed_dim: 5, depth: 2, d_state: 3, dt_rank: 2, num_classes: 3,
    });
    const { imgSize: H, P, L, D } = c2;
    expect([c2.Np, c2.clsPos, L - 1 - c2.clsPos]).toEqual([16, 8, 8]);
    const params = randomParams(9, c2);
    const mirrored = new ParamSet(c2, params.flat.slice());
    const w = params.get('patch_embed.proj.weight'); // (D, 3, P, P)
    const wm = mirrored.get('patch_embed.proj.weight');
    for (let dc = 0; dc < D * 3; dc++) {
      for (let i = 0; i < P; i++) for (let j = 0; j < P; j++) wm[(dc * P + i) * P + j] = w[(dc * P + P - 1 - i) * P + P - 1 - j];
    }
    const pos = params.get('pos_embed'); // (1, L, D)
    const posm = mirrored.get('pos_embed');
    for (let t = 0; t < L; t++) posm.set(pos.subarray((L - 1 - t) * D, (L - t) * D), t * D);
    for (let i = 0; i < c2.depth; i++) {
      for (const [fwd, bwd] of Object.values(DIRECTION_NAMES)) {
        mirrored.layer(i, fwd).set(params.layer(i, bwd));
        mirrored.layer(i, bwd).set(params.layer(i, fwd));
      }
    }
    const rng = new Rng(10);
    const x = Float64Array.from({ length: B * 3 * H * H }, () => rng.normal()); // (B, 3, H, W)
    const xm = new Float64Array(x.length); // rotated by 180°
    for (let bc = 0; bc < B * 3; bc++) {
      for (let i = 0; i < H; i++) for (let j = 0; j < H; j++) xm[(bc * H + i) * H + j] = x[(bc * H + H - 1 - i) * H + H - 1 - j];
    }
    const logits = vimForward(params, x, B).logits;
    const logitsMirrored = vimForward(mirrored, xm, B).logits;
    for (let i = 0; i < logits.length; i++) expect(logitsMirrored[i]).toBeCloseTo(logits[i], 12);
    // Not vacuous: the rotated image through the unswapped model gives other logits.
    const logitsUnswapped = vimForward(params, xm, B).logits;
    expect(Math.max(...logits.map((v, i) => Math.abs(v - logitsUnswapped[i])))).toBeGreaterThan(1e-3);
  });
});
