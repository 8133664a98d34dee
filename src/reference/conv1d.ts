/**
 * The causal depthwise conv1d + SiLU of one Mamba direction, over the x half of in_proj's output
 * xz (B, L, 2E): x = columns 0…E−1, z = columns E…2E−1 (z is the scan's gate, not used here).
 *
 * Forward direction (reverse = false), PyTorch Conv1d(E, E, K, groups=E, padding=K−1)[..., :L]:
 *
 *   pre[b,t,e] = bias[e] + Σ_{k=0}^{K−1} weight[e,k] · x[b, t−(K−1)+k, e]     (x = 0 before t = 0)
 *   out[b,t,e] = SiLU(pre[b,t,e])                                             (B, L, E)
 *
 * Backward direction (reverse = true): the same op on the token-reversed sequence x'[t] = x[L−1−t],
 * with out stored in that reversed (direction) order. Everything the backward direction computes
 * downstream (x_proj_b, dt_proj_b, the scan) stays in direction order until the combine.
 *
 * Backward, with g = dout · SiLU'(pre):
 *   dbias[e] += Σ_{b,t} g;  dweight[e,k] += Σ_{b,t} g · x'[t−(K−1)+k];  dx'[t−(K−1)+k] += g · weight[e,k]
 * and dx' is routed back to original token order. Backward accumulates (+=) into its outputs;
 * dxz receives only its x half.
 */
import { silu, silu_grad } from './activations.js';

/** The original token index read at direction-order position s (s ≥ 0). */
function sourceToken(s: number, L: number, reverse: boolean): number {
  return reverse ? L - 1 - s : s;
}

/** The pre-activation at direction-order token t, channel e of sample b. */
function conv_pre(
  xz: Float64Array, weight: Float64Array, bias: Float64Array,
  b: number, t: number, e: number, L: number, E: number, K: number, reverse: boolean,
): number {
  let acc = bias[e];
  for (let k = 0; k < K; k++) {
    const s = t - (K - 1) + k; // direction-order input position; causal zero padding before 0
    if (s < 0) continue;
    acc += weight[e * K + k] * xz[(b * L + sourceToken(s, L, reverse)) * 2 * E + e];
  }
  return acc;
}

/** out (B,L,E) in direction order = SiLU(causal depthwise conv of xz's x half with weight (E,K), bias (E)). */
export function conv1d_silu_forward(
  out: Float64Array, xz: Float64Array, weight: Float64Array, bias: Float64Array,
  B: number, L: number, E: number, K: number, reverse: boolean,
): void {
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < L; t++) {
      for (let e = 0; e < E; e++) {
        out[(b * L + t) * E + e] = silu(conv_pre(xz, weight, bias, b, t, e, L, E, K, reverse));
      }
    }
  }
}

/**
 * dxz (B,L,2E) x half, dweight (E,K), dbias (E) += from dout (B,L,E) (direction order). The
 * pre-activation is recomputed from xz, weight and bias.
 */
export function conv1d_silu_backward(
  dxz: Float64Array, dweight: Float64Array, dbias: Float64Array,
  dout: Float64Array, xz: Float64Array, weight: Float64Array, bias: Float64Array,
  B: number, L: number, E: number, K: number, reverse: boolean,
): void {
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < L; t++) {
      for (let e = 0; e < E; e++) {
        const pre = conv_pre(xz, weight, bias, b, t, e, L, E, K, reverse);
        const g = dout[(b * L + t) * E + e] * silu_grad(pre);
        dbias[e] += g;
        for (let k = 0; k < K; k++) {
          const s = t - (K - 1) + k;
          if (s < 0) continue;
          const xi = (b * L + sourceToken(s, L, reverse)) * 2 * E + e;
          dweight[e * K + k] += g * xz[xi];
          dxz[xi] += g * weight[e * K + k];
        }
      }
    }
  }
}
