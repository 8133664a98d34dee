/**
 * The residual add fused with RMSNorm, as in Vim's Block (fused_add_norm, residual kept in f32):
 *
 *   r        = r_in + h                                   (BL, D)   r_in = 0 for the first block
 *   rstd     = 1 / sqrt(mean_d(r²) + eps)                 (BL)
 *   out      = r · rstd · w                               (BL, D)
 *
 * Backward, for one row with s = rstd and g = dout ⊙ w:
 *
 *   ∂out_i/∂r_j = w_i · (s·δ_ij − s³ · r_i r_j / D)
 *   dr_j       += dr_next_j + s · (g_j − r_j · s² · (1/D) Σ_i g_i r_i)
 *   dw_i       += Σ_rows dout_i · r_i · s
 *
 * dr_next is the gradient that reaches r from later in the network (the next block's residual
 * add); because r = r_in + h, the resulting dr is the gradient of both r_in and h.
 * Backward functions accumulate (+=) into their outputs.
 */

/**
 * r_out (BL,D) = r_in + h; rstd (BL); out (BL,D) = r_out · rstd · weight (D). r_in null means
 * zeros (the first block, where the residual stream starts as the tokens themselves).
 */
export function residual_rmsnorm_forward(
  r_out: Float64Array, out: Float64Array, rstd: Float64Array,
  r_in: Float64Array | null, h: Float64Array, weight: Float64Array,
  BL: number, D: number, eps: number,
): void {
  for (let row = 0; row < BL; row++) {
    const o = row * D;
    let ss = 0;
    for (let d = 0; d < D; d++) {
      const r = (r_in === null ? 0 : r_in[o + d]) + h[o + d];
      r_out[o + d] = r;
      ss += r * r;
    }
    const s = 1 / Math.sqrt(ss / D + eps);
    rstd[row] = s;
    for (let d = 0; d < D; d++) out[o + d] = r_out[o + d] * s * weight[d];
  }
}

/**
 * dr (BL,D) += dr_next + ∂out/∂r · dout; dweight (D) += Σ_rows dout · r · rstd.
 * dr_next null means no gradient reaches r from later (the final norm). dr must not alias dr_next.
 */
export function residual_rmsnorm_backward(
  dr: Float64Array, dweight: Float64Array,
  dout: Float64Array, dr_next: Float64Array | null, r: Float64Array, rstd: Float64Array, weight: Float64Array,
  BL: number, D: number,
): void {
  for (let row = 0; row < BL; row++) {
    const o = row * D;
    const s = rstd[row];
    let gr = 0; // Σ_i dout_i · w_i · r_i
    for (let d = 0; d < D; d++) {
      gr += dout[o + d] * weight[d] * r[o + d];
      dweight[d] += dout[o + d] * r[o + d] * s;
    }
    const c = (s * s * gr) / D;
    for (let d = 0; d < D; d++) {
      const next = dr_next === null ? 0 : dr_next[o + d];
      dr[o + d] += next + s * (dout[o + d] * weight[d] - r[o + d] * c);
    }
  }
}
