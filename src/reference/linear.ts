/**
 * A dense layer over rows, PyTorch's F.linear:
 *
 *   out[m,o] = bias[o] + Σ_i inp[m,i] · weight[o,i]         (M, O) from (M, I) and (O, I)
 *
 * Backward:
 *   dinp[m,i]    += Σ_o dout[m,o] · weight[o,i]
 *   dweight[o,i] += Σ_m dout[m,o] · inp[m,i]
 *   dbias[o]     += Σ_m dout[m,o]
 * Backward accumulates (+=) into its outputs.
 */

/** out (M,O) = inp (M,I) · weight (O,I)ᵀ + bias (O); bias null means no bias. */
export function linear_forward(
  out: Float64Array, inp: Float64Array, weight: Float64Array, bias: Float64Array | null,
  M: number, I: number, O: number,
): void {
  for (let m = 0; m < M; m++) {
    for (let o = 0; o < O; o++) {
      let acc = bias === null ? 0 : bias[o];
      for (let i = 0; i < I; i++) acc += inp[m * I + i] * weight[o * I + i];
      out[m * O + o] = acc;
    }
  }
}

/** dinp (M,I) (skipped when null), dweight (O,I), dbias (O) (skipped when null) += from dout (M,O). */
export function linear_backward(
  dinp: Float64Array | null, dweight: Float64Array, dbias: Float64Array | null,
  dout: Float64Array, inp: Float64Array, weight: Float64Array,
  M: number, I: number, O: number,
): void {
  for (let m = 0; m < M; m++) {
    for (let o = 0; o < O; o++) {
      const g = dout[m * O + o];
      if (dbias !== null) dbias[o] += g;
      for (let i = 0; i < I; i++) {
        dweight[o * I + i] += g * inp[m * I + i];
        if (dinp !== null) dinp[m * I + i] += g * weight[o * I + i];
      }
    }
  }
}
