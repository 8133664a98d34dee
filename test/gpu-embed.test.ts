import { describe, expect, it } from 'vitest';
import { normalize_images, patch_embed_backward, patch_embed_forward, tokens_backward, tokens_forward } from '../src/reference/embed.js';
import { imageWords, normalizePatches, tokensBackward, tokensForward, uploadImages } from '../src/gpu/ops/embed.js';
import { colSumForward, colSumScratchElements } from '../src/gpu/ops/reduce.js';
import { createTensor } from '../src/gpu/tensor.js';
import { Rng } from '../src/rng.js';
import { randArray, read, relErr, run, tensorFrom, testGpu, zerosTensor } from './helpers/gpu.js';

const TOL = 1e-5;

/** Reference patches (B·Np, 3P²) gathered from a normalised (B, 3, H, W) batch. */
function im2col(x: Float64Array, B: number, H: number, W: number, P: number): Float64Array {
  const Wp = W / P;
  const Np = (H / P) * Wp;
  const F = 3 * P * P;
  const out = new Float64Array(B * Np * F);
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < Np; t++) {
      const py = Math.floor(t / Wp);
      const px = t % Wp;
      for (let c = 0; c < 3; c++) {
        for (let i = 0; i < P; i++) {
          for (let j = 0; j < P; j++) {
            out[(b * Np + t) * F + (c * P + i) * P + j] = x[((b * 3 + c) * H + py * P + i) * W + px * P + j];
          }
        }
      }
    }
  }
  return out;
}

describe('embed kernels', () => {
  for (const [B, H, W, P] of [[3, 6, 6, 2], [3, 6, 9, 3]] as const) {
    it(`normalize_patches matches normalize_images + im2col and makes patch embedding a matmul (B=${B} ${H}×${W} P=${P})`, async () => {
      const gpu = await testGpu();
      const rng = new Rng(11 + W);
      const D = 19;
      const Np = (H / P) * (W / P);
      const F = 3 * P * P;
      const bytes = new Uint8Array(B * 3 * H * W);
      for (let i = 0; i < bytes.length; i++) bytes[i] = rng.int(256);
      bytes[0] = 0;
      bytes[1] = 255;
      const images = createTensor(gpu, imageWords(B, H, W), 'images');
      uploadImages(gpu, images, bytes);
      const out = zerosTensor(gpu, B * Np * F, 'patches');
      await run(gpu, [normalizePatches(gpu, { out, images, B, H, W, P })]);
      const got = await read(gpu, out);

      const x = new Float64Array(B * 3 * H * W);
      normalize_images(x, bytes, B, H, W);
      const want = im2col(x, B, H, W, P);
      expect(relErr(got, want)).toBeLessThan(TOL);

      // patches · weightᵀ + bias (float64 product of the GPU's patches) = patch_embed_forward.
      const weight = randArray(rng, D * F, -0.5, 0.5); // (D, 3, P, P) viewed as (D, 3P²)
      const bias = randArray(rng, D);
      const mm = new Float64Array(B * Np * D);
      for (let r = 0; r < B * Np; r++) {
        for (let d = 0; d < D; d++) {
          let acc = bias[d];
          for (let f = 0; f < F; f++) acc += got[r * F + f] * weight[d * F + f];
          mm[r * D + d] = acc;
        }
      }
      const ref = new Float64Array(B * Np * D);
      patch_embed_forward(ref, x, weight, bias, B, H, W, P, D);
      expect(relErr(mm, ref)).toBeLessThan(TOL);
    });
  }

  it('tokens_forward inserts the middle class token and adds pos_embed', async () => {
    const gpu = await testGpu();
    const rng = new Rng(2);
    const [B, Np, D] = [3, 9, 19];
    const L = Np + 1;
    const patches = randArray(rng, B * Np * D);
    const cls = randArray(rng, D);
    const pos = randArray(rng, L * D);
    const out = zerosTensor(gpu, B * L * D, 'tokens');
    await run(gpu, [tokensForward(gpu, {
      out, patches: tensorFrom(gpu, patches), clsToken: tensorFrom(gpu, cls), posEmbed: tensorFrom(gpu, pos), B, Np, D,
    })]);
    const want = new Float64Array(B * L * D);
    tokens_forward(want, patches, cls, pos, B, Np, D);
    expect(relErr(await read(gpu, out), want)).toBeLessThan(TOL);
  });

  for (const accumulate of [false, true]) {
    for (const Np of [9, 6]) {
      it(`tokens_backward${accumulate ? ' (accumulate)' : ''} Np=${Np}`, async () => {
        const gpu = await testGpu();
        const rng = new Rng(3 + Np);
        const [B, D] = [3, 19];
        const L = Np + 1;
        const dout = randArray(rng, B * L * D);
        const init = (n: number) => (accumulate ? randArray(rng, n) : new Float64Array(n));
        const dp = init(B * Np * D);
        const dc = init(D);
        const dpe = init(L * D);
        const tdp = tensorFrom(gpu, accumulate ? dp : randArray(rng, dp.length), 'dpatches');
        const tdc = tensorFrom(gpu, accumulate ? dc : randArray(rng, D), 'dcls');
        const tdpe = tensorFrom(gpu, accumulate ? dpe : randArray(rng, dpe.length), 'dpos');
        await run(gpu, tokensBackward(gpu, {
          dpatches: tdp, dclsToken: tdc, dposEmbed: tdpe, dout: tensorFrom(gpu, dout), B, Np, D, accumulate,
        }));
        tokens_backward(dp, dc, dpe, dout, B, Np, D);
        expect(relErr(await read(gpu, tdp), dp)).toBeLessThan(TOL);
        expect(relErr(await read(gpu, tdc), dc)).toBeLessThan(TOL);
        expect(relErr(await read(gpu, tdpe), dpe)).toBeLessThan(TOL);
      });
    }
  }
  // The patch embedding's bias gradient is a column sum of dpatches (B·Np, D): reduce.wgsl.
  for (const [B, accumulate] of [[3, false], [31, true]] as const) {
    it(`patch_embed dbias as a column sum (B=${B}, ${B * 9} rows${accumulate ? ', accumulate' : ''})`, async () => {
      const gpu = await testGpu();
      const rng = new Rng(40 + B);
      const [H, W, P, D] = [6, 6, 2, 19];
      const Np = 9;
      const M = B * Np;
      const x = randArray(rng, B * 3 * H * W);
      const weight = randArray(rng, D * 3 * P * P);
      const dout = randArray(rng, M * D);
      const dbias = accumulate ? randArray(rng, D) : new Float64Array(D);
      const t = tensorFrom(gpu, accumulate ? dbias : randArray(rng, D), 'dbias');
      const scratchN = colSumScratchElements(M, D);
      expect(scratchN > 0).toBe(M > 256); // two passes beyond 256 rows
      await run(gpu, colSumForward(gpu, {
        out: t, inp: tensorFrom(gpu, dout), M, X: D, accumulate,
        scratch: scratchN ? zerosTensor(gpu, scratchN, 'scratch') : undefined,
      }));
      patch_embed_backward(new Float64Array(D * 3 * P * P), dbias, null, dout, x, weight, B, H, W, P, D);
      expect(relErr(await read(gpu, t), dbias)).toBeLessThan(TOL);
    });
  }
});
