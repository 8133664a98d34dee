/**
 * The classifier head on one token (Vim's middle class token, at position clsPos):
 *
 *   logits[b,c] = bias[c] + Σ_d weight[c,d] · x[b, token, d]          (B, C)
 *
 * Backward: dx[b,token,d] += Σ_c dlogits[b,c] weight[c,d], dweight[c,d] += Σ_b dlogits[b,c] x[b,token,d],
 * dbias[c] += Σ_b dlogits[b,c]; the other tokens get no gradient. It accumulates (+=) into its outputs.
 */

/** logits (B,C) from row `token` of x (B,L,D), weight (C,D), bias (C). */
export function head_forward(
  logits: Float64Array, x: Float64Array, weight: Float64Array, bias: Float64Array,
  B: number, L: number, D: number, C: number, token: number,
): void {
  for (let b = 0; b < B; b++) {
    const xo = (b * L + token) * D;
    for (let c = 0; c < C; c++) {
      let acc = bias[c];
      for (let d = 0; d < D; d++) acc += weight[c * D + d] * x[xo + d];
      logits[b * C + c] = acc;
    }
  }
}

/** dx (B,L,D) (row `token` only), dweight (C,D), dbias (C) += from dlogits (B,C). */
export function head_backward(
  dx: Float64Array, dweight: Float64Array, dbias: Float64Array,
  dlogits: Float64Array, x: Float64Array, weight: Float64Array,
  B: number, L: number, D: number, C: number, token: number,
): void {
  for (let b = 0; b < B; b++) {
    const xo = (b * L + token) * D;
    for (let c = 0; c < C; c++) {
      const g = dlogits[b * C + c];
      dbias[c] += g;
      for (let d = 0; d < D; d++) {
        dweight[c * D + d] += g * x[xo + d];
        dx[xo + d] += g * weight[c * D + d];
      }
    }
  }
}
