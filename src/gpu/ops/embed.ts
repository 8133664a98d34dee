/**
 * The input side of Vim on the GPU (kernels/embed.wgsl): the u8 image batch normalised straight
 * into patch rows (so the patch embedding is a matmul with patch_embed.proj.weight viewed as
 * (D, 3P²)), and the token sequence with its middle class token and position embedding.
 *
 *   normalizePatches: patches (B·Np, 3P²) ← images (B, 3, H, W) u8, four pixels per u32 word
 *   tokensForward:    out (B, L, D) ← patches (B, Np, D), cls_token (D), pos_embed (L, D)
 *   tokensBackward:   dpatches (B, Np, D), dcls_token (D), dpos_embed (L, D) ← dout (B, L, D)
 *
 * L = Np + 1, class token at clsPos = floor(Np / 2).
 */
import type { Gpu } from '../device.js';
import { makeDispatch, type Dispatch } from '../kernels.js';
import type { GpuTensor } from '../tensor.js';
import { CIFAR10_MEAN, CIFAR10_STD } from '../../model/config.js';
import { checkPositive, grid1d, need } from './reduce.js';

/** u32 words holding a (B, 3, H, W) u8 image batch (four pixels a word, the last one padded). */
export function imageWords(B: number, H: number, W: number): number {
  return Math.ceil((B * 3 * H * W) / 4);
}

/** Write a (B, 3, H, W) u8 batch into an image tensor of imageWords(B, H, W) words. */
export function uploadImages(gpu: Gpu, images: GpuTensor, bytes: Uint8Array): void {
  const padded = Math.ceil(bytes.length / 4) * 4;
  if (padded > images.size) {
    throw new Error(`uploadImages: ${bytes.length} bytes exceed ${images.label}'s ${images.size} bytes`);
  }
  let src = bytes;
  if (padded !== bytes.length || bytes.byteOffset % 4 !== 0) {
    src = new Uint8Array(padded);
    src.set(bytes);
  }
  gpu.queue.writeBuffer(images.buffer, images.offset, src.buffer, src.byteOffset, padded);
}

export interface NormalizePatchesArgs {
  /** (B·Np, 3·P·P) normalised patch rows, row b·Np + py·(W/P) + px, column (c·P + i)·P + j. */
  out: GpuTensor;
  /** (B, 3, H, W) u8 pixels packed four a u32 word (imageWords(B, H, W) words). */
  images: GpuTensor;
  B: number;
  H: number;
  W: number;
  P: number;
  /** Per-channel mean and std on the 0…1 scale (default: the CIFAR-10 statistics). */
  mean?: readonly number[];
  std?: readonly number[];
}

/** out (B·Np, 3P²) = (images / 255 − mean_c) / std_c, gathered patch by patch. */
export function normalizePatches(gpu: Gpu, a: NormalizePatchesArgs): Dispatch {
  const { B, H, W, P } = a;
  checkPositive('normalizePatches', { B, H, W, P });
  if (H % P !== 0 || W % P !== 0) throw new Error(`normalizePatches: patch size ${P} must divide the image size ${H}×${W}`);
  const mean = a.mean ?? CIFAR10_MEAN;
  const std = a.std ?? CIFAR10_STD;
  if (mean.length !== 3 || std.length !== 3) throw new Error('normalizePatches: mean and std need 3 channels');
  const n = B * 3 * H * W;
  need('normalizePatches', 'out', a.out, n);
  need('normalizePatches', 'images', a.images, imageWords(B, H, W));
  return makeDispatch(gpu, 'embed', 'normalize_patches', {
    B, H, W, P, MEAN0: mean[0], MEAN1: mean[1], MEAN2: mean[2], STD0: std[0], STD1: std[1], STD2: std[2],
  }, [a.out, a.images], grid1d(gpu, n), { bytes: n + 4 * n, flops: 2 * n });
}

export interface TokensForwardArgs {
  out: GpuTensor; // (B, L, D)
  patches: GpuTensor; // (B, Np, D) the embedded patches
  clsToken: GpuTensor; // (D)
  posEmbed: GpuTensor; // (L, D)
  B: number;
  Np: number;
  D: number;
}

/** out (B, L, D) = patches with cls_token inserted at floor(Np/2), plus pos_embed. */
export function tokensForward(gpu: Gpu, a: TokensForwardArgs): Dispatch {
  const { B, Np, D } = a;
  checkPositive('tokensForward', { B, Np, D });
  const L = Np + 1;
  need('tokensForward', 'out', a.out, B * L * D);
  need('tokensForward', 'patches', a.patches, B * Np * D);
  need('tokensForward', 'clsToken', a.clsToken, D);
  need('tokensForward', 'posEmbed', a.posEmbed, L * D);
  const n = B * L * D;
  return makeDispatch(gpu, 'embed', 'tokens_forward', { B, Np, D },
    [a.out, a.patches, a.clsToken, a.posEmbed], grid1d(gpu, n), { bytes: 4 * (2 * n + L * D), flops: n });
}

export interface TokensBackwardArgs {
  dpatches: GpuTensor; // (B, Np, D)
  dclsToken: GpuTensor; // (D)
  dposEmbed: GpuTensor; // (L, D)
  dout: GpuTensor; // (B, L, D)
  B: number;
  Np: number;
  D: number;
  /** Add into dpatches, dcls_token and dpos_embed instead of overwriting them. */
  accumulate?: boolean;
}

/**
 * dpatches (B, Np, D) = dout at the patch tokens; dpos_embed (L, D) = Σ_b dout; dcls_token (D) =
 * Σ_b dout[:, clsPos] (each = or += by `accumulate`). Two dispatches; the sums over the batch run
 * in a fixed order (no atomics).
 */
export function tokensBackward(gpu: Gpu, a: TokensBackwardArgs): Dispatch[] {
  const { B, Np, D } = a;
  checkPositive('tokensBackward', { B, Np, D });
  const L = Np + 1;
  need('tokensBackward', 'dpatches', a.dpatches, B * Np * D);
  need('tokensBackward', 'dclsToken', a.dclsToken, D);
  need('tokensBackward', 'dposEmbed', a.dposEmbed, L * D);
  need('tokensBackward', 'dout', a.dout, B * L * D);
  const acc = a.accumulate ? 1 : 0;
  const nP = B * Np * D;
  return [
    makeDispatch(gpu, 'embed', 'tokens_backward_patches', { B, Np, D, ACCUMULATE: acc },
      [a.dpatches, a.dout], grid1d(gpu, nP), { bytes: 4 * nP * (2 + acc) }),
    makeDispatch(gpu, 'embed', 'tokens_backward_params', { B, Np, D, ACCUMULATE: acc },
      [a.dclsToken, a.dposEmbed, a.dout], grid1d(gpu, L * D), { bytes: 4 * (B * L * D + (L * D + D) * (1 + acc)), flops: B * L * D }),
  ];
}
