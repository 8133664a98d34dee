/**
 * Vim's parameter initialisation, seeded and reproducible.
 *
 * Follows the PyTorch Vim (models_mamba.py with mamba_simple.py): timm's segm_init_weights for
 * the patch embedding and the head, trunc-normal(0.02) for the position embedding and the class
 * token, PyTorch's layer defaults for the mixer's projections and convolutions, Mamba's special
 * Δ initialisation for dt_proj, S4D-real for A_log, and the GPT-2 style 1/√depth rescale of
 * out_proj. The rule of every tensor is written next to it below.
 *
 * All random draws come from one Rng stream, tensor by tensor in paramSpecs order (row-major
 * inside a tensor); deterministic tensors (ones, zeros, A_log) draw nothing. So a given
 * (config, seed) always gives the same parameters, and two configs that share a prefix of the
 * layout share the draws of that prefix.
 *
 * Shape letters: D model width, E inner width, N state size, R Δ rank, K conv width,
 * C classes, P patch size, L tokens.
 */
import { VimError } from '../errors.js';
import { Rng } from '../rng.js';
import type { VimConfig } from './config.js';
import { DIRECTION_NAMES, ParamSet } from './params.js';

/** The std of a standard normal truncated to [−2, 2]; timm divides by it so the truncated draw keeps the target std. */
const TRUNC_NORMAL_2SIGMA_STD = 0.87962566103423978;

export interface InitOptions {
  /**
   * How the backward direction's `dt_proj_b.bias` starts.
   * - 'dt-init' (default): the same log-uniform Δ through the inverse softplus as the forward
   *   direction, so both directions start with Δ in [dt_min, dt_max].
   * - 'zero': as the PyTorch Vim ends up, where `dt_proj_b` is a plain nn.Linear whose bias the
   *   model-wide `_init_weights` then zeroes (Δ = softplus(0) ≈ 0.69 at the start); nothing is
   *   drawn for it.
   */
  backwardDtBias?: 'dt-init' | 'zero';
}

function checkSeed(seed: number): void {
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) {
    throw new VimError(`expected an integer seed in 0…4294967295 but received ${seed}`);
  }
}

/** Fill `out` with U(−bound, bound). */
function fillUniform(rng: Rng, out: Float64Array, bound: number): void {
  for (let i = 0; i < out.length; i++) out[i] = rng.range(-bound, bound);
}

/** Fill `out` with N(0, std²) truncated to the absolute bounds [a, b] (timm's trunc_normal_). */
function fillTruncNormal(rng: Rng, out: Float64Array, std: number, a = -2, b = 2): void {
  for (let i = 0; i < out.length; i++) out[i] = rng.truncNormal(0, std, a, b);
}

/**
 * timm's lecun_normal_: a standard normal truncated at ±2 (in units of its std), scaled by
 * sqrt(1/fan_in)/0.8796…, so that the result has std sqrt(1/fan_in).
 */
function fillLecunNormal(rng: Rng, out: Float64Array, fanIn: number): void {
  const std = Math.sqrt(1 / fanIn) / TRUNC_NORMAL_2SIGMA_STD;
  for (let i = 0; i < out.length; i++) out[i] = std * rng.truncNormal(0, 1, -2, 2);
}

/**
 * Mamba's Δ bias: Δ = exp(U(log dt_min, log dt_max)) clamped below at dt_init_floor, stored as
 * its inverse softplus, Δ + log(−expm1(−Δ)), so that softplus(bias) = Δ when the input is 0.
 */
function fillDtBias(rng: Rng, out: Float64Array, cfg: VimConfig): void {
  const lo = Math.log(cfg.dtMin);
  const hi = Math.log(cfg.dtMax);
  for (let i = 0; i < out.length; i++) {
    const dt = Math.max(Math.exp(rng.range(lo, hi)), cfg.dtInitFloor);
    out[i] = dt + Math.log(-Math.expm1(-dt));
  }
}

/**
 * Initialise every parameter in float64 (the reference's precision).
 * Throws VimError for a seed that is not an integer in 0…2³²−1.
 */
export function initParams64(cfg: VimConfig, seed: number, opts: InitOptions = {}): ParamSet<Float64Array> {
  checkSeed(seed);
  const backwardDtBias = opts.backwardDtBias ?? 'dt-init';
  const { D, E, N, R, K, P, inChans, depth } = cfg;
  const rng = new Rng(seed);
  const p = ParamSet.zeros64(cfg); // everything starts at 0; biases below simply stay there

  // patch_embed.proj: a Conv2d, timm's segm_init_weights → lecun_normal_ on the weight
  // (fan_in = 3·P·P), zeros on the bias.
  fillLecunNormal(rng, p.get('patch_embed.proj.weight'), inChans * P * P); // (D, 3, P, P)
  // patch_embed.proj.bias: 0.                                               // (D)

  // cls_token, pos_embed: timm trunc_normal_(std 0.02), absolute bounds ±2 (≈ ±100σ, so in
  // effect untruncated). Drawn in paramSpecs order: cls_token first.
  fillTruncNormal(rng, p.get('cls_token'), 0.02); // (1, 1, D)
  fillTruncNormal(rng, p.get('pos_embed'), 0.02); // (1, L, D)

  for (let i = 0; i < depth; i++) {
    // norm.weight: RMSNorm starts as the identity scale, 1.
    p.get(`layers.${i}.norm.weight`).fill(1); // (D)

    // in_proj: nn.Linear(D, 2E, bias=False) default, kaiming_uniform(a=√5) = U(±1/√D).
    fillUniform(rng, p.layer(i, 'in_proj.weight'), 1 / Math.sqrt(D)); // (2E, D)

    for (let dir = 0; dir < 2; dir++) {
      // conv1d(_b): nn.Conv1d(E, E, K, groups=E) default; depthwise, so fan_in = 1·K:
      // weight U(±1/√K), bias U(±1/√K).
      fillUniform(rng, p.layer(i, DIRECTION_NAMES.conv1dWeight[dir]), 1 / Math.sqrt(K)); // (E, 1, K)
      fillUniform(rng, p.layer(i, DIRECTION_NAMES.conv1dBias[dir]), 1 / Math.sqrt(K)); // (E)

      // x_proj(_b): nn.Linear(E, R+2N, bias=False) default, U(±1/√E).
      fillUniform(rng, p.layer(i, DIRECTION_NAMES.xProj[dir]), 1 / Math.sqrt(E)); // (R+2N, E)

      // dt_proj(_b).weight: dt_init "random" with dt_scale 1, U(±R^-½). (For the backward twin
      // the nn.Linear default, U(±1/√fan_in) with fan_in = R, is the same distribution.)
      fillUniform(rng, p.layer(i, DIRECTION_NAMES.dtProjWeight[dir]), 1 / Math.sqrt(R)); // (E, R)

      // dt_proj(_b).bias: Δ log-uniform in [dt_min, dt_max], stored through the inverse softplus.
      if (dir === 0 || backwardDtBias === 'dt-init') {
        fillDtBias(rng, p.layer(i, DIRECTION_NAMES.dtProjBias[dir]), cfg); // (E)
      }

      // A_log / A_b_log: S4D-real, A = −(1…N) for every channel, so row e is [log 1, …, log N].
      const aLog = p.layer(i, DIRECTION_NAMES.ALog[dir]); // (E, N)
      for (let e = 0; e < E; e++) {
        for (let n = 0; n < N; n++) aLog[e * N + n] = Math.log(n + 1);
      }

      // D / D_b: the skip connection starts at 1.
      p.layer(i, DIRECTION_NAMES.D[dir]).fill(1); // (E)
    }

    // out_proj: nn.Linear(E, D, bias=False), re-drawn with kaiming_uniform(a=√5) = U(±1/√E),
    // then divided by √depth (one residual branch per block) so the residual stream's variance
    // does not grow with depth.
    const outProj = p.layer(i, 'out_proj.weight'); // (D, E)
    fillUniform(rng, outProj, 1 / Math.sqrt(E));
    const scale = 1 / Math.sqrt(depth);
    for (let j = 0; j < outProj.length; j++) outProj[j] *= scale;
  }

  // norm_f.weight: 1.
  p.get('norm_f.weight').fill(1); // (D)

  // head: an nn.Linear under segm_init_weights, weight trunc_normal_(std 0.02), bias 0.
  fillTruncNormal(rng, p.get('head.weight'), 0.02); // (C, D)
  // head.bias: 0.                                      // (C)

  return p;
}

/**
 * Initialise every parameter and round to float32 (what the GPU trains). The same stream as
 * initParams64, so `initParams(cfg, s).flat[i] === Math.fround(initParams64(cfg, s).flat[i])`.
 */
export function initParams(cfg: VimConfig, seed: number, opts: InitOptions = {}): ParamSet<Float32Array> {
  return initParams64(cfg, seed, opts).toFloat32();
}
