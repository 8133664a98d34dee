/**
 * The input side of Vim: pixel normalisation, the patch embedding, and the token sequence with
 * its middle class token and position embedding.
 *
 *   normalize:   x[b,c,i,j]  = (img[b,c,i,j] / 255 − mean_c) / std_c            (B, 3, H, W)
 *   patch embed: p[b,t,d]    = bias[d] + Σ_{c,i,j} w[d,c,i,j] · x[b, c, py·P+i, px·P+j]
 *                with t = py·(W/P) + px (row-major patch grid), Np = (H/P)·(W/P)    (B, Np, D)
 *                — a Conv2d with kernel P and stride P, flattened and transposed.
 *   tokens:      the class token is inserted at clsPos = floor(Np/2): tokens 0…clsPos−1 are
 *                patches 0…clsPos−1, token clsPos is cls_token, tokens clsPos+1…Np are patches
 *                clsPos…Np−1 (Vim's `use_middle_cls_token` cat); then pos_embed is added.
 *                                                                                   (B, L, D)
 * Tensors are row-major Float64Arrays. Backward functions accumulate (+=) into their outputs.
 */
import { CIFAR10_MEAN, CIFAR10_STD } from '../model/config.js';
import { VimError } from '../errors.js';

/** out (B,3,H,W) = (images/255 − mean_c) / std_c, with the CIFAR-10 channel statistics. */
export function normalize_images(out: Float64Array, images: Uint8Array, B: number, H: number, W: number): void {
  const HW = H * W;
  if (images.length !== B * 3 * HW) {
    throw new VimError(`normalize_images: expected ${B * 3 * HW} bytes for a (${B}, 3, ${H}, ${W}) batch, got ${images.length}`);
  }
  for (let b = 0; b < B; b++) {
    for (let c = 0; c < 3; c++) {
      const base = (b * 3 + c) * HW;
      for (let i = 0; i < HW; i++) {
        out[base + i] = (images[base + i] / 255 - CIFAR10_MEAN[c]) / CIFAR10_STD[c];
      }
    }
  }
}

function patchGrid(H: number, W: number, P: number, where: string): [number, number] {
  if (H % P !== 0 || W % P !== 0) {
    throw new VimError(`${where}: patch size ${P} must divide the image size ${H}×${W}`);
  }
  return [H / P, W / P];
}

/** out (B,Np,D) = patches of inp (B,3,H,W) times weight (D,3,P,P), plus bias (D). */
export function patch_embed_forward(
  out: Float64Array, inp: Float64Array, weight: Float64Array, bias: Float64Array,
  B: number, H: number, W: number, P: number, D: number,
): void {
  const [Hp, Wp] = patchGrid(H, W, P, 'patch_embed_forward');
  const Np = Hp * Wp;
  for (let b = 0; b < B; b++) {
    for (let py = 0; py < Hp; py++) {
      for (let px = 0; px < Wp; px++) {
        const t = py * Wp + px;
        for (let d = 0; d < D; d++) {
          let acc = bias[d];
          for (let c = 0; c < 3; c++) {
            for (let i = 0; i < P; i++) {
              for (let j = 0; j < P; j++) {
                acc += weight[((d * 3 + c) * P + i) * P + j] * inp[((b * 3 + c) * H + py * P + i) * W + px * P + j];
              }
            }
          }
          out[(b * Np + t) * D + d] = acc;
        }
      }
    }
  }
}

/**
 * dweight (D,3,P,P) += Σ dout·patch, dbias (D) += Σ dout, dinp (B,3,H,W) += weightᵀ·dout (skipped
 * when dinp is null: the pixels need no gradient in training).
 */
export function patch_embed_backward(
  dweight: Float64Array, dbias: Float64Array, dinp: Float64Array | null,
  dout: Float64Array, inp: Float64Array, weight: Float64Array,
  B: number, H: number, W: number, P: number, D: number,
): void {
  const [Hp, Wp] = patchGrid(H, W, P, 'patch_embed_backward');
  const Np = Hp * Wp;
  for (let b = 0; b < B; b++) {
    for (let py = 0; py < Hp; py++) {
      for (let px = 0; px < Wp; px++) {
        const t = py * Wp + px;
        for (let d = 0; d < D; d++) {
          const g = dout[(b * Np + t) * D + d];
          dbias[d] += g;
          for (let c = 0; c < 3; c++) {
            for (let i = 0; i < P; i++) {
              for (let j = 0; j < P; j++) {
                const w = ((d * 3 + c) * P + i) * P + j;
                const x = ((b * 3 + c) * H + py * P + i) * W + px * P + j;
                dweight[w] += g * inp[x];
                if (dinp !== null) dinp[x] += g * weight[w];
              }
            }
          }
        }
      }
    }
  }
}

/** The source of token t: the patch index it copies, or −1 for the class token. */
function tokenSource(t: number, clsPos: number): number {
  return t < clsPos ? t : t === clsPos ? -1 : t - 1;
}

/** out (B,L,D) = [patches before clsPos, cls_token, patches from clsPos on] + pos_embed (L,D). */
export function tokens_forward(
  out: Float64Array, patches: Float64Array, cls_token: Float64Array, pos_embed: Float64Array,
  B: number, Np: number, D: number,
): void {
  const L = Np + 1;
  const clsPos = Math.floor(Np / 2);
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < L; t++) {
      const s = tokenSource(t, clsPos);
      for (let d = 0; d < D; d++) {
        const x = s < 0 ? cls_token[d] : patches[(b * Np + s) * D + d];
        out[(b * L + t) * D + d] = x + pos_embed[t * D + d];
      }
    }
  }
}

/** dpatches (B,Np,D), dcls_token (D), dpos_embed (L,D) += the gradient routed back from dout (B,L,D). */
export function tokens_backward(
  dpatches: Float64Array, dcls_token: Float64Array, dpos_embed: Float64Array, dout: Float64Array,
  B: number, Np: number, D: number,
): void {
  const L = Np + 1;
  const clsPos = Math.floor(Np / 2);
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < L; t++) {
      const s = tokenSource(t, clsPos);
      for (let d = 0; d < D; d++) {
        const g = dout[(b * L + t) * D + d];
        dpos_embed[t * D + d] += g;
        if (s < 0) dcls_token[d] += g;
        else dpatches[(b * Np + s) * D + d] += g;
      }
    }
  }
}
