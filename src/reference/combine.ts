/**
 * The combine of the two Mamba directions before out_proj (bimamba v2 with the division by 2):
 *
 *   out[b,t,e] = (y_f[b,t,e] + y_b[b,L−1−t,e]) / 2                  (B, L, E)
 *
 * y_b is in direction order (its token t is original token L−1−t), so it is reversed back here.
 * Backward: dy_f[t] += dout[t]/2, dy_b[L−1−t] += dout[t]/2; it accumulates (+=) into its outputs.
 *
 * With `scale` (B), sample b's output is multiplied by scale[b] (and so its gradients): the
 * training-time drop path of the block's output (0 for a dropped sample, 1/(1 − p) for a kept one;
 * out_proj is linear, so scaling its input scales the block's output).
 */

export function combine_forward(
  out: Float64Array, y_f: Float64Array, y_b: Float64Array, B: number, L: number, E: number, scale: ArrayLike<number> | null = null,
): void {
  for (let b = 0; b < B; b++) {
    const s = scale ? scale[b] : 1;
    for (let t = 0; t < L; t++) {
      const o = (b * L + t) * E;
      const r = (b * L + (L - 1 - t)) * E;
      for (let e = 0; e < E; e++) out[o + e] = ((y_f[o + e] + y_b[r + e]) / 2) * s;
    }
  }
}

export function combine_backward(
  dy_f: Float64Array, dy_b: Float64Array, dout: Float64Array, B: number, L: number, E: number, scale: ArrayLike<number> | null = null,
): void {
  for (let b = 0; b < B; b++) {
    const s = scale ? scale[b] : 1;
    for (let t = 0; t < L; t++) {
      const o = (b * L + t) * E;
      const r = (b * L + (L - 1 - t)) * E;
      for (let e = 0; e < E; e++) {
        dy_f[o + e] += (dout[o + e] / 2) * s;
        dy_b[r + e] += (dout[o + e] / 2) * s;
      }
    }
  }
}
