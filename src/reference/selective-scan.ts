/**
 * The selective scan of one Mamba direction with its fused softplus, D skip and SiLU(z) gate,
 * written as the recurrence, token by token. Per sample b, channel e, state n:
 *
 *   Δ_t    = softplus(Δraw_t + dt_bias)                 (B, L, E)
 *   A      = −exp(A_log)                                (E, N)
 *   a_t    = exp(Δ_t ⊙ A)                               (E, N) per sample and token
 *   h_t    = a_t ⊙ h_{t−1} + (Δ_t u_t) ⊗ B_t,   h_{−1} = 0      (E, N)
 *   y_t    = h_t · C_t + D ⊙ u_t                        (E)   (sum over N)
 *   out_t  = y_t ⊙ SiLU(z_t)                            (E)
 *
 * u, Δraw, B, C and out are in direction order. z is read from columns E…2E−1 of in_proj's output
 * xz (B, L, 2E) in original token order: with reverse, step t uses z[L−1−t], which is the
 * backward direction's gate on its token-reversed sequence.
 *
 * Backward (closed forms; g· is ∂loss/∂·), the reverse recurrence for gh runs from t = L−1 to 0:
 *   gy_t   = gout_t ⊙ SiLU(z_t)
 *   gz_t   = gout_t ⊙ y_t ⊙ SiLU'(z_t)
 *   gh_t   = gy_t ⊗ C_t + a_{t+1} ⊙ gh_{t+1}            gh_L = 0
 *   gC_t   = Σ_e gy_t[e] h_t[e,:]
 *   gB_t   = Σ_e gh_t[e,:] Δ_t[e] u_t[e]
 *   gu_t   = Σ_n gh_t[:,n] Δ_t B_t[n] + D ⊙ gy_t
 *   gΔ_t   = Σ_n gh_t[:,n] (u_t B_t[n] + A[:,n] a_t[:,n] h_{t−1}[:,n])
 *   gA     = Σ_{b,t} gh_t ⊙ a_t ⊙ h_{t−1} ⊙ Δ_t,     gA_log = gA ⊙ A   (since ∂A/∂A_log = A)
 *   gD     = Σ_{b,t} gy_t ⊙ u_t
 *   gΔraw  = gΔ ⊙ σ(Δraw + dt_bias),                  gdt_bias = Σ_{b,t} gΔraw
 * The backward recomputes the states h_t of one sample (L+1 of them, E·N each) from the inputs
 * instead of taking them from the forward. Backward accumulates (+=) into its outputs.
 */
import { sigmoid, silu, silu_grad, softplus } from './activations.js';

/** A = −exp(A_log), (E, N). */
function negExp(A_log: Float64Array): Float64Array {
  return A_log.map((v) => -Math.exp(v)); // (E, N)
}

/**
 * out (B,L,E) = the gated scan output, from u (B,L,E), delta_raw (B,L,E) (dt_proj output without
 * its bias), dt_bias (E), A_log (E,N), Bm (B,L,N), Cm (B,L,N), Dskip (E), and the gate z taken from
 * xz (B,L,2E) columns E…2E−1 (original order; reversed when reverse).
 */
export function selective_scan_forward(
  out: Float64Array, u: Float64Array, delta_raw: Float64Array, dt_bias: Float64Array, A_log: Float64Array,
  Bm: Float64Array, Cm: Float64Array, Dskip: Float64Array, xz: Float64Array,
  B: number, L: number, E: number, N: number, reverse: boolean,
): void {
  const A = negExp(A_log); // (E, N)
  const h = new Float64Array(E * N); // (E, N) the state of one sample
  for (let b = 0; b < B; b++) {
    h.fill(0); // h_{−1} = 0
    for (let t = 0; t < L; t++) {
      const bt = b * L + t;
      const tz = reverse ? L - 1 - t : t; // the gate's token in original order
      for (let e = 0; e < E; e++) {
        const delta = softplus(delta_raw[bt * E + e] + dt_bias[e]);
        const ut = u[bt * E + e];
        let y = Dskip[e] * ut;
        for (let n = 0; n < N; n++) {
          const a = Math.exp(delta * A[e * N + n]);
          h[e * N + n] = a * h[e * N + n] + delta * ut * Bm[bt * N + n];
          y += Cm[bt * N + n] * h[e * N + n];
        }
        const z = xz[(b * L + tz) * 2 * E + E + e];
        out[bt * E + e] = y * silu(z);
      }
    }
  }
}

/**
 * du, ddelta_raw (B,L,E), ddt_bias (E), dA_log (E,N), dBm, dCm (B,L,N), dDskip (E), and the z half of
 * dxz (B,L,2E) += the gradients from dout (B,L,E); the inputs are those of selective_scan_forward.
 */
export function selective_scan_backward(
  du: Float64Array, ddelta_raw: Float64Array, ddt_bias: Float64Array, dA_log: Float64Array,
  dBm: Float64Array, dCm: Float64Array, dDskip: Float64Array, dxz: Float64Array,
  dout: Float64Array, u: Float64Array, delta_raw: Float64Array, dt_bias: Float64Array, A_log: Float64Array,
  Bm: Float64Array, Cm: Float64Array, Dskip: Float64Array, xz: Float64Array,
  B: number, L: number, E: number, N: number, reverse: boolean,
): void {
  const A = negExp(A_log); // (E, N)
  const EN = E * N;
  const hs = new Float64Array((L + 1) * EN); // (L+1, E, N): hs[0] = h_{−1} = 0, hs[t+1] = h_t
  const carry = new Float64Array(EN); // (E, N): a_{t+1} ⊙ gh_{t+1}, the part of gh_t from later tokens
  for (let b = 0; b < B; b++) {
    // Recompute the states of this sample: the same recurrence as the forward.
    for (let t = 0; t < L; t++) {
      const bt = b * L + t;
      for (let e = 0; e < E; e++) {
        const delta = softplus(delta_raw[bt * E + e] + dt_bias[e]);
        const ut = u[bt * E + e];
        for (let n = 0; n < N; n++) {
          const a = Math.exp(delta * A[e * N + n]);
          hs[(t + 1) * EN + e * N + n] = a * hs[t * EN + e * N + n] + delta * ut * Bm[bt * N + n];
        }
      }
    }
    // The reverse recurrence for gh, applying the closed forms at each token.
    carry.fill(0); // gh_L = 0
    for (let t = L - 1; t >= 0; t--) {
      const bt = b * L + t;
      const zi = (b * L + (reverse ? L - 1 - t : t)) * 2 * E + E; // z row of this token, original order
      for (let e = 0; e < E; e++) {
        const pre = delta_raw[bt * E + e] + dt_bias[e];
        const delta = softplus(pre);
        const ut = u[bt * E + e];
        const z = xz[zi + e];
        const gout = dout[bt * E + e];
        let y = Dskip[e] * ut; // y_t, recomputed for the gate's gradient
        for (let n = 0; n < N; n++) y += Cm[bt * N + n] * hs[(t + 1) * EN + e * N + n];
        const gy = gout * silu(z);
        dxz[zi + e] += gout * y * silu_grad(z);
        dDskip[e] += gy * ut;
        let gu = Dskip[e] * gy;
        let gdelta = 0;
        for (let n = 0; n < N; n++) {
          const en = e * N + n;
          const a = Math.exp(delta * A[en]);
          const hPrev = hs[t * EN + en];
          const gh = gy * Cm[bt * N + n] + carry[en];
          dCm[bt * N + n] += gy * hs[(t + 1) * EN + en];
          dBm[bt * N + n] += gh * delta * ut;
          gu += gh * delta * Bm[bt * N + n];
          gdelta += gh * (ut * Bm[bt * N + n] + A[en] * a * hPrev);
          dA_log[en] += gh * a * hPrev * delta * A[en];
          carry[en] = a * gh;
        }
        du[bt * E + e] += gu;
        const gdeltaRaw = gdelta * sigmoid(pre);
        ddelta_raw[bt * E + e] += gdeltaRaw;
        ddt_bias[e] += gdeltaRaw;
      }
    }
  }
}
