/**
 * The whole Vision Mamba (Vim, bimamba v2) in float64: forward, backward and loss, as a plain
 * sequence of the reference ops. Shape letters: B batch, L = Np + 1 tokens, D model width,
 * E = expand·D inner width, N state size, R Δ rank, K conv width, C classes, P patch size,
 * H = W image size, Np patches.
 *
 *   x      = normalise(images)                                    (B, 3, H, W)
 *   tokens = [patches ; cls at clsPos] + pos_embed                (B, L, D)
 *   r = 0, h = tokens
 *   per block:   r = r + h;  hn = RMSNorm(r) · w                  (B, L, D)
 *                xz = hn · in_projᵀ   (x = cols 0…E−1, z = E…2E−1)     (B, L, 2E)
 *                per direction (fwd on tokens 0…L−1; bwd on the reversed sequence, kept in that
 *                reversed order until the combine):
 *                  u        = SiLU(causal depthwise conv1d(x))         (B, L, E)
 *                  x_dbl    = u · x_projᵀ → dt_low | B | C             (B, L, R+2N)
 *                  Δraw     = dt_low · dt_projᵀ  (its bias goes into the scan's softplus)  (B, L, E)
 *                  y_dir    = scan(u, Δraw, B, C) ⊙ SiLU(z)            (B, L, E)
 *                y  = (y_fwd + reverse(y_bwd)) / 2                    (B, L, E)
 *                h  = y · out_projᵀ                                   (B, L, D)
 *   r = r + h;  x_f = RMSNorm(r) · norm_f                            (B, L, D)
 *   logits = head(x_f[:, clsPos])                                     (B, C)
 *
 * The backward runs the same ops in reverse and returns the gradient of every parameter, under
 * the same names, in a ParamSet. The cache holds every activation, so a kernel test can also
 * compare intermediate tensors against it.
 */
import { VimError } from '../errors.js';
import { DIRECTION_NAMES, ParamSet } from '../model/params.js';
import { combine_backward, combine_forward } from './combine.js';
import { conv1d_silu_backward, conv1d_silu_forward } from './conv1d.js';
import { softmax_cross_entropy_backward, softmax_cross_entropy_forward } from './cross-entropy.js';
import { normalize_images, patch_embed_backward, patch_embed_forward, tokens_backward, tokens_forward } from './embed.js';
import { head_backward, head_forward } from './head.js';
import { linear_backward, linear_forward } from './linear.js';
import { residual_rmsnorm_backward, residual_rmsnorm_forward } from './rmsnorm.js';
import { selective_scan_backward, selective_scan_forward } from './selective-scan.js';

/** What one direction of a block's mixer computed; every tensor is in that direction's token order. */
export interface VimDirectionCache {
  u: Float64Array; // (B, L, E) conv1d + SiLU output, the scan's input
  xDbl: Float64Array; // (B, L, R+2N) x_proj output
  dtLow: Float64Array; // (B, L, R) columns 0…R−1 of xDbl
  Bm: Float64Array; // (B, L, N) columns R…R+N−1 of xDbl
  Cm: Float64Array; // (B, L, N) columns R+N…R+2N−1 of xDbl
  deltaRaw: Float64Array; // (B, L, E) dt_proj output before its bias
  y: Float64Array; // (B, L, E) gated scan output
}

/** What one Vim block computed. */
export interface VimLayerCache {
  r: Float64Array; // (B, L, D) the residual stream after this block's add
  rstd: Float64Array; // (B, L) RMSNorm's 1/rms of r
  hn: Float64Array; // (B, L, D) RMSNorm(r) · w, the mixer's input
  xz: Float64Array; // (B, L, 2E) in_proj output
  dirs: [VimDirectionCache, VimDirectionCache]; // [forward, backward] direction
  y: Float64Array; // (B, L, E) the combined directions
  h: Float64Array; // (B, L, D) out_proj output, the block's hidden
}

/** Every activation of a forward pass. */
export interface VimCache {
  B: number;
  x: Float64Array; // (B, 3, H, W) normalised input
  patches: Float64Array; // (B, Np, D) patch embeddings
  tokens: Float64Array; // (B, L, D) with the class token and position embedding
  layers: VimLayerCache[];
  r: Float64Array; // (B, L, D) the final residual stream
  rstd: Float64Array; // (B, L) norm_f's 1/rms
  xf: Float64Array; // (B, L, D) norm_f output
  logits: Float64Array; // (B, C)
  dropScales: Float64Array | null; // (depth, B) the drop-path factors of the blocks' outputs, if any
}

/** A copy of columns c0…c0+n−1 of a (rows, cols) matrix: (rows, n). */
function take_columns(src: Float64Array, rows: number, cols: number, c0: number, n: number): Float64Array {
  const out = new Float64Array(rows * n); // (rows, n)
  for (let i = 0; i < rows; i++) for (let j = 0; j < n; j++) out[i * n + j] = src[i * cols + c0 + j];
  return out;
}

/** dst[:, c0…c0+n−1] += src, for dst (rows, cols) and src (rows, n): the backward of take_columns. */
function add_columns(dst: Float64Array, src: Float64Array, rows: number, cols: number, c0: number, n: number): void {
  for (let i = 0; i < rows; i++) for (let j = 0; j < n; j++) dst[i * cols + c0 + j] += src[i * n + j];
}

/** Layer i's tensor of direction dir (0 forward, 1 backward), e.g. dirTensor(p, 3, 1, 'ALog') is A_b_log. */
function dirTensor(p: ParamSet<Float64Array>, i: number, dir: 0 | 1, key: keyof typeof DIRECTION_NAMES): Float64Array {
  return p.layer(i, DIRECTION_NAMES[key][dir]);
}

function direction_forward(p: ParamSet<Float64Array>, i: number, dir: 0 | 1, xz: Float64Array, B: number): VimDirectionCache {
  const { L, E, N, R, K } = p.cfg;
  const BL = B * L;
  const reverse = dir === 1;
  const u = new Float64Array(BL * E); // (B, L, E)
  conv1d_silu_forward(u, xz, dirTensor(p, i, dir, 'conv1dWeight'), dirTensor(p, i, dir, 'conv1dBias'), B, L, E, K, reverse);
  const xDbl = new Float64Array(BL * (R + 2 * N)); // (B, L, R+2N)
  linear_forward(xDbl, u, dirTensor(p, i, dir, 'xProj'), null, BL, E, R + 2 * N);
  const dtLow = take_columns(xDbl, BL, R + 2 * N, 0, R); // (B, L, R)
  const Bm = take_columns(xDbl, BL, R + 2 * N, R, N); // (B, L, N)
  const Cm = take_columns(xDbl, BL, R + 2 * N, R + N, N); // (B, L, N)
  const deltaRaw = new Float64Array(BL * E); // (B, L, E)
  linear_forward(deltaRaw, dtLow, dirTensor(p, i, dir, 'dtProjWeight'), null, BL, R, E);
  const y = new Float64Array(BL * E); // (B, L, E)
  selective_scan_forward(
    y, u, deltaRaw, dirTensor(p, i, dir, 'dtProjBias'), dirTensor(p, i, dir, 'ALog'), Bm, Cm,
    dirTensor(p, i, dir, 'D'), xz, B, L, E, N, reverse,
  );
  return { u, xDbl, dtLow, Bm, Cm, deltaRaw, y };
}

/** Block i's mixer on hn (B, L, D); `scale` (B): the drop-path factors of its output. */
function mixer_forward(p: ParamSet<Float64Array>, i: number, hn: Float64Array, B: number, scale: ArrayLike<number> | null) {
  const { L, D, E } = p.cfg;
  const BL = B * L;
  const xz = new Float64Array(BL * 2 * E); // (B, L, 2E)
  linear_forward(xz, hn, p.layer(i, 'in_proj.weight'), null, BL, D, 2 * E);
  const dirs: [VimDirectionCache, VimDirectionCache] = [direction_forward(p, i, 0, xz, B), direction_forward(p, i, 1, xz, B)];
  const y = new Float64Array(BL * E); // (B, L, E)
  combine_forward(y, dirs[0].y, dirs[1].y, B, L, E, scale);
  const h = new Float64Array(BL * D); // (B, L, D)
  linear_forward(h, y, p.layer(i, 'out_proj.weight'), null, BL, E, D);
  return { xz, dirs, y, h };
}

/**
 * The forward pass. images: the raw u8 batch (B, 3, H, W), or a Float64Array already normalised
 * (which the cache then references, not copies). dropScales (depth, B): training-time drop path,
 * block i's output for sample b multiplied by dropScales[i·B + b] (0 or 1/(1 − p)) before it
 * joins the residual stream; null: none.
 */
export function vimForward(
  params: ParamSet<Float64Array>, images: Uint8Array | Float64Array, B: number, dropScales: Float64Array | null = null,
): { logits: Float64Array; cache: VimCache } {
  const cfg = params.cfg;
  const { imgSize: H, P, D, C, Np, L, clsPos, depth, normEps } = cfg;
  const W = H;
  const BL = B * L;
  let x: Float64Array;
  if (images instanceof Float64Array) {
    if (images.length !== B * 3 * H * W) {
      throw new VimError(`vimForward: expected a normalised (${B}, 3, ${H}, ${W}) batch of ${B * 3 * H * W} values, got ${images.length}`);
    }
    x = images; // (B, 3, H, W)
  } else {
    x = new Float64Array(B * 3 * H * W); // (B, 3, H, W)
    normalize_images(x, images, B, H, W);
  }
  const patches = new Float64Array(B * Np * D); // (B, Np, D)
  patch_embed_forward(patches, x, params.get('patch_embed.proj.weight'), params.get('patch_embed.proj.bias'), B, H, W, P, D);
  const tokens = new Float64Array(BL * D); // (B, L, D)
  tokens_forward(tokens, patches, params.get('cls_token'), params.get('pos_embed'), B, Np, D);

  const layers: VimLayerCache[] = [];
  let rPrev: Float64Array | null = null; // (B, L, D) the residual stream; none before the first block
  let h = tokens; // (B, L, D) the hidden the next residual add takes in
  for (let i = 0; i < depth; i++) {
    const r = new Float64Array(BL * D); // (B, L, D) r = r + h
    const rstd = new Float64Array(BL); // (B, L)
    const hn = new Float64Array(BL * D); // (B, L, D) RMSNorm(r) · w
    residual_rmsnorm_forward(r, hn, rstd, rPrev, h, params.get(`layers.${i}.norm.weight`), BL, D, normEps);
    const mixer = mixer_forward(params, i, hn, B, dropScales ? dropScales.subarray(i * B, (i + 1) * B) : null);
    layers.push({ r, rstd, hn, ...mixer });
    rPrev = r;
    h = mixer.h;
  }
  const r = new Float64Array(BL * D); // (B, L, D) r = r + h after the last block
  const rstd = new Float64Array(BL); // (B, L)
  const xf = new Float64Array(BL * D); // (B, L, D) RMSNorm(r) · norm_f
  residual_rmsnorm_forward(r, xf, rstd, rPrev, h, params.get('norm_f.weight'), BL, D, normEps);
  const logits = new Float64Array(B * C); // (B, C)
  head_forward(logits, xf, params.get('head.weight'), params.get('head.bias'), B, L, D, C, clsPos);
  return { logits, cache: { B, x, patches, tokens, layers, r, rstd, xf, logits, dropScales } };
}

/** One direction's backward: accumulates into dxz (B, L, 2E) and the direction's parameter gradients. */
function direction_backward(
  g: ParamSet<Float64Array>, p: ParamSet<Float64Array>, i: number, dir: 0 | 1,
  dxz: Float64Array, dy: Float64Array, xz: Float64Array, c: VimDirectionCache, B: number,
): void {
  const { L, E, N, R, K } = p.cfg;
  const BL = B * L;
  const reverse = dir === 1;
  const du = new Float64Array(BL * E); // (B, L, E)
  const ddeltaRaw = new Float64Array(BL * E); // (B, L, E)
  const dBm = new Float64Array(BL * N); // (B, L, N)
  const dCm = new Float64Array(BL * N); // (B, L, N)
  selective_scan_backward(
    du, ddeltaRaw, dirTensor(g, i, dir, 'dtProjBias'), dirTensor(g, i, dir, 'ALog'), dBm, dCm, dirTensor(g, i, dir, 'D'), dxz,
    dy, c.u, c.deltaRaw, dirTensor(p, i, dir, 'dtProjBias'), dirTensor(p, i, dir, 'ALog'), c.Bm, c.Cm, dirTensor(p, i, dir, 'D'), xz,
    B, L, E, N, reverse,
  );
  const ddtLow = new Float64Array(BL * R); // (B, L, R)
  linear_backward(ddtLow, dirTensor(g, i, dir, 'dtProjWeight'), null, ddeltaRaw, c.dtLow, dirTensor(p, i, dir, 'dtProjWeight'), BL, R, E);
  const dxDbl = new Float64Array(BL * (R + 2 * N)); // (B, L, R+2N)
  add_columns(dxDbl, ddtLow, BL, R + 2 * N, 0, R);
  add_columns(dxDbl, dBm, BL, R + 2 * N, R, N);
  add_columns(dxDbl, dCm, BL, R + 2 * N, R + N, N);
  linear_backward(du, dirTensor(g, i, dir, 'xProj'), null, dxDbl, c.u, dirTensor(p, i, dir, 'xProj'), BL, E, R + 2 * N);
  conv1d_silu_backward(
    dxz, dirTensor(g, i, dir, 'conv1dWeight'), dirTensor(g, i, dir, 'conv1dBias'),
    du, xz, dirTensor(p, i, dir, 'conv1dWeight'), dirTensor(p, i, dir, 'conv1dBias'), B, L, E, K, reverse,
  );
}

/** Block i's mixer backward from dh (B, L, D); returns dhn (B, L, D), the gradient of its input. */
function mixer_backward(
  g: ParamSet<Float64Array>, p: ParamSet<Float64Array>, i: number, dh: Float64Array, c: VimLayerCache, B: number,
  scale: ArrayLike<number> | null,
): Float64Array {
  const { L, D, E } = p.cfg;
  const BL = B * L;
  const dy = new Float64Array(BL * E); // (B, L, E)
  linear_backward(dy, g.layer(i, 'out_proj.weight'), null, dh, c.y, p.layer(i, 'out_proj.weight'), BL, E, D);
  const dyF = new Float64Array(BL * E); // (B, L, E)
  const dyB = new Float64Array(BL * E); // (B, L, E) in the backward direction's order
  combine_backward(dyF, dyB, dy, B, L, E, scale);
  const dxz = new Float64Array(BL * 2 * E); // (B, L, 2E)
  direction_backward(g, p, i, 0, dxz, dyF, c.xz, c.dirs[0], B);
  direction_backward(g, p, i, 1, dxz, dyB, c.xz, c.dirs[1], B);
  const dhn = new Float64Array(BL * D); // (B, L, D)
  linear_backward(dhn, g.layer(i, 'in_proj.weight'), null, dxz, c.hn, p.layer(i, 'in_proj.weight'), BL, D, 2 * E);
  return dhn;
}

/**
 * The backward pass from dlogits (B, C): returns the gradient of every parameter (a fresh
 * ParamSet). When dinput (B, 3, H, W) is given, the gradient with respect to the normalised input
 * is accumulated into it.
 */
export function vimBackward(
  params: ParamSet<Float64Array>, cache: VimCache, dlogits: Float64Array, dinput: Float64Array | null = null,
): ParamSet<Float64Array> {
  const cfg = params.cfg;
  const { imgSize: H, P, D, C, Np, L, clsPos, depth } = cfg;
  const W = H;
  const B = cache.B;
  const BL = B * L;
  const grads = ParamSet.zeros64(cfg);
  const dxf = new Float64Array(BL * D); // (B, L, D)
  head_backward(dxf, grads.get('head.weight'), grads.get('head.bias'), dlogits, cache.xf, params.get('head.weight'), B, L, D, C, clsPos);
  // dr: the gradient of the residual stream after block i's add; it is also the gradient of the
  // hidden h that entered that add, i.e. of block i−1's output.
  let dr = new Float64Array(BL * D); // (B, L, D)
  residual_rmsnorm_backward(dr, grads.get('norm_f.weight'), dxf, null, cache.r, cache.rstd, params.get('norm_f.weight'), BL, D);
  for (let i = depth - 1; i >= 0; i--) {
    const c = cache.layers[i];
    const scale = cache.dropScales ? cache.dropScales.subarray(i * B, (i + 1) * B) : null;
    const dhn = mixer_backward(grads, params, i, dr, c, B, scale); // (B, L, D)
    const drIn = new Float64Array(BL * D); // (B, L, D)
    residual_rmsnorm_backward(drIn, grads.get(`layers.${i}.norm.weight`), dhn, dr, c.r, c.rstd, params.get(`layers.${i}.norm.weight`), BL, D);
    dr = drIn;
  }
  // The first block's residual is the tokens themselves (r = 0 + tokens).
  const dpatches = new Float64Array(B * Np * D); // (B, Np, D)
  tokens_backward(dpatches, grads.get('cls_token'), grads.get('pos_embed'), dr, B, Np, D);
  patch_embed_backward(
    grads.get('patch_embed.proj.weight'), grads.get('patch_embed.proj.bias'), dinput,
    dpatches, cache.x, params.get('patch_embed.proj.weight'), B, H, W, P, D,
  );
  return grads;
}

/**
 * The mean softmax cross-entropy of the batch against soft targets (B, C) (see smooth_targets),
 * its logits, and the gradient of every parameter.
 */
export function vimLoss(
  params: ParamSet<Float64Array>, images: Uint8Array | Float64Array, targets: Float64Array, B: number,
  dropScales: Float64Array | null = null,
): { loss: number; logits: Float64Array; grads: ParamSet<Float64Array> } {
  const C = params.cfg.C;
  if (targets.length !== B * C) throw new VimError(`vimLoss: expected (${B}, ${C}) targets, got ${targets.length} values`);
  const { logits, cache } = vimForward(params, images, B, dropScales);
  const losses = new Float64Array(B); // (B)
  const probs = new Float64Array(B * C); // (B, C)
  softmax_cross_entropy_forward(losses, probs, logits, targets, B, C);
  const loss = losses.reduce((a, v) => a + v, 0) / B;
  const dlogits = new Float64Array(B * C); // (B, C)
  softmax_cross_entropy_backward(dlogits, 1 / B, probs, targets, B, C);
  return { loss, logits, grads: vimBackward(params, cache, dlogits) };
}
