/**
 * Finite-difference checks of every float64 reference op, plus forward checks of what finite
 * differences cannot see (layouts, reversal, the scan against its closed-form sum, AdamW by hand).
 *
 * Each op is checked on random inputs of odd sizes with loss = Σ g ⊙ out for a random upstream g.
 * The gradient buffers start filled with random values, so the check also proves that backward
 * accumulates (+=) instead of overwriting. Every coordinate of every input and parameter is
 * compared (the tensors are small): |analytic − numeric| / max(|analytic|, |numeric|, 1e-5) < 1e-6.
 */
import { describe, expect, it } from 'vitest';
import { CIFAR10_MEAN, CIFAR10_STD } from '../src/model/config.js';
import { Rng } from '../src/rng.js';
import {
  adamw_update, check_gradient, combine_backward, combine_forward, conv1d_silu_backward, conv1d_silu_forward,
  decay_mask, head_backward, head_forward, linear_backward, linear_forward, normalize_images, numeric_derivative,
  patch_embed_backward, patch_embed_forward, residual_rmsnorm_backward, residual_rmsnorm_forward,
  selective_scan_backward, selective_scan_forward, sigmoid, silu, silu_grad, smooth_targets,
  softmax_cross_entropy_backward, softmax_cross_entropy_forward, softplus, tokens_backward, tokens_forward,
  type GradCheckResult,
} from '../src/reference/index.js';
import type { ParamSpec } from '../src/model/params.js';

const TOL = 1e-6;

function randn(rng: Rng, n: number, std = 1, mean = 0): Float64Array {
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = mean + std * rng.normal();
  return out;
}

function dot(a: Float64Array, b: Float64Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

function expectClose(actual: Float64Array, expected: Float64Array, tol = 1e-12): void {
  expect(actual.length).toBe(expected.length);
  let num = 0;
  let den = 0;
  for (let i = 0; i < actual.length; i++) {
    num += (actual[i] - expected[i]) ** 2;
    den += expected[i] ** 2;
  }
  expect(Math.sqrt(num / Math.max(den, 1e-300))).toBeLessThan(tol);
}

/** Reverse the token axis of a (B, L, cols) tensor. */
function flipTokens(x: Float64Array, B: number, L: number, cols: number): Float64Array {
  const out = new Float64Array(x.length);
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < L; t++) {
      out.set(x.subarray((b * L + t) * cols, (b * L + t + 1) * cols), (b * L + (L - 1 - t)) * cols);
    }
  }
  return out;
}

/**
 * Checks an op's backward against finite differences of loss() on every coordinate of every
 * tensor in `inputs`. backward receives gradient buffers pre-filled with random values (named as
 * the inputs) and must add its gradients to them.
 */
function checkOp(
  inputs: Record<string, Float64Array>,
  loss: () => number,
  backward: (grads: Record<string, Float64Array>) => void,
): GradCheckResult[] {
  const rng = new Rng(12345);
  const grads: Record<string, Float64Array> = {};
  const before: Record<string, Float64Array> = {};
  for (const [name, x] of Object.entries(inputs)) {
    grads[name] = randn(rng, x.length);
    before[name] = grads[name].slice();
  }
  backward(grads);
  const results: GradCheckResult[] = [];
  for (const [name, x] of Object.entries(inputs)) {
    const analytic = grads[name].map((v, i) => v - before[name][i]);
    const r = check_gradient(name, x, analytic, loss, { samples: Infinity });
    results.push(r);
    if (process.env.GRADCHECK_VERBOSE) console.log(`${name}: ${r.checked} coords, max err ${r.maxError.toExponential(2)}`);
    expect(r.maxError, `${name}: worst at ${r.worstIndex}, analytic ${r.analytic} vs numeric ${r.numeric}`).toBeLessThan(TOL);
  }
  return results;
}

describe('activations', () => {
  it('silu_grad and the derivative of softplus match finite differences', () => {
    for (const x0 of [-30, -7.5, -1.3, -1e-3, 0, 0.4, 2.2, 9, 25]) {
      const x = new Float64Array([x0]);
      const dSilu = numeric_derivative(x, 0, () => silu(x[0]), 1e-3);
      const dSoftplus = numeric_derivative(x, 0, () => softplus(x[0]), 1e-3);
      expect(Math.abs(silu_grad(x0) - dSilu)).toBeLessThan(1e-9);
      expect(Math.abs(sigmoid(x0) - dSoftplus)).toBeLessThan(1e-9);
    }
  });

  it('stays finite and exact at extreme inputs', () => {
    expect(softplus(1000)).toBe(1000);
    expect(softplus(-1000)).toBe(0);
    expect(softplus(0)).toBeCloseTo(Math.LN2, 15);
    expect(softplus(30)).toBeCloseTo(30 + Math.exp(-30), 15);
    expect(softplus(-30)).toBeCloseTo(Math.exp(-30), 25);
    expect(sigmoid(-1000)).toBe(0);
    expect(sigmoid(1000)).toBe(1);
    expect(Math.abs(silu(-1000))).toBe(0);
    expect(Math.abs(silu_grad(-1000))).toBe(0);
    expect(silu_grad(1000)).toBe(1);
  });
});

describe('embedding', () => {
  it('normalize_images applies the CIFAR-10 channel statistics', () => {
    const B = 2, H = 3, W = 5;
    const rng = new Rng(1);
    const images = Uint8Array.from({ length: B * 3 * H * W }, () => rng.int(256));
    const out = new Float64Array(images.length);
    normalize_images(out, images, B, H, W);
    for (const i of [0, 17, 44, 61, 89]) {
      const c = Math.floor(i / (H * W)) % 3;
      expect(out[i]).toBeCloseTo((images[i] / 255 - CIFAR10_MEAN[c]) / CIFAR10_STD[c], 14);
    }
  });

  it('patch_embed_forward puts patches in row-major grid order', () => {
    const B = 2, H = 6, W = 9, P = 3, D = 4, Wp = 3, Np = 6;
    const inp = new Float64Array(B * 3 * H * W);
    const weight = new Float64Array(D * 3 * P * P);
    const bias = new Float64Array(D);
    // A single lit pixel (b=1, c=2, row 4, col 7) lies in patch (py 1, px 2) at offset (1, 1).
    inp[((1 * 3 + 2) * H + 4) * W + 7] = 1;
    weight[((3 * 3 + 2) * P + 1) * P + 1] = 5; // d = 3 reads channel 2, patch offset (1, 1)
    const out = new Float64Array(B * Np * D);
    patch_embed_forward(out, inp, weight, bias, B, H, W, P, D);
    const t = 1 * Wp + 2;
    expect(out[(1 * Np + t) * D + 3]).toBe(5);
    expect(out.reduce((a, v) => a + Math.abs(v), 0)).toBe(5);
  });

  it('patch_embed backward matches finite differences', () => {
    const B = 2, H = 6, W = 9, P = 3, D = 5, Np = 6;
    const rng = new Rng(2);
    const inp = randn(rng, B * 3 * H * W);
    const weight = randn(rng, D * 3 * P * P, 0.3);
    const bias = randn(rng, D);
    const g = randn(rng, B * Np * D);
    const out = new Float64Array(B * Np * D);
    const loss = () => (patch_embed_forward(out, inp, weight, bias, B, H, W, P, D), dot(g, out));
    checkOp({ inp, weight, bias }, loss, (d) => {
      patch_embed_backward(d.weight, d.bias, d.inp, g, inp, weight, B, H, W, P, D);
    });
    // dinp = null skips the input gradient and leaves the others unchanged.
    const dw1 = new Float64Array(weight.length), db1 = new Float64Array(D);
    const dw2 = new Float64Array(weight.length), db2 = new Float64Array(D);
    patch_embed_backward(dw1, db1, null, g, inp, weight, B, H, W, P, D);
    patch_embed_backward(dw2, db2, new Float64Array(inp.length), g, inp, weight, B, H, W, P, D);
    expect(dw1).toEqual(dw2);
    expect(db1).toEqual(db2);
  });

  it('tokens_forward inserts the class token at floor(Np/2)', () => {
    const B = 2, Np = 7, D = 3, L = 8, clsPos = 3;
    const patches = Float64Array.from({ length: B * Np * D }, (_, i) => 100 + i);
    const cls = Float64Array.from([-1, -2, -3]);
    const pos = new Float64Array(L * D);
    const out = new Float64Array(B * L * D);
    tokens_forward(out, patches, cls, pos, B, Np, D);
    const row = (b: number, t: number) => Array.from(out.subarray((b * L + t) * D, (b * L + t + 1) * D));
    const patch = (b: number, s: number) => Array.from(patches.subarray((b * Np + s) * D, (b * Np + s + 1) * D));
    for (let b = 0; b < B; b++) {
      for (let t = 0; t < clsPos; t++) expect(row(b, t)).toEqual(patch(b, t));
      expect(row(b, clsPos)).toEqual([-1, -2, -3]);
      for (let t = clsPos + 1; t < L; t++) expect(row(b, t)).toEqual(patch(b, t - 1));
    }
  });

  it('tokens backward matches finite differences', () => {
    const B = 3, Np = 9, D = 5, L = 10;
    const rng = new Rng(3);
    const patches = randn(rng, B * Np * D);
    const cls = randn(rng, D);
    const pos = randn(rng, L * D);
    const g = randn(rng, B * L * D);
    const out = new Float64Array(B * L * D);
    const loss = () => (tokens_forward(out, patches, cls, pos, B, Np, D), dot(g, out));
    checkOp({ patches, cls, pos }, loss, (d) => tokens_backward(d.patches, d.cls, d.pos, g, B, Np, D));
  });
});

describe('residual_rmsnorm', () => {
  for (const withResidual of [true, false]) {
    it(`backward matches finite differences (${withResidual ? 'with r_in' : 'r_in null'})`, () => {
      const BL = 7, D = 6, eps = 1e-5;
      const rng = new Rng(4);
      const r_in = randn(rng, BL * D);
      const h = randn(rng, BL * D);
      const weight = randn(rng, D, 0.3, 1);
      const gr = randn(rng, BL * D); // upstream gradient of r_out
      const go = randn(rng, BL * D); // upstream gradient of out
      const r = new Float64Array(BL * D), out = new Float64Array(BL * D), rstd = new Float64Array(BL);
      const forward = () => residual_rmsnorm_forward(r, out, rstd, withResidual ? r_in : null, h, weight, BL, D, eps);
      const loss = () => (forward(), dot(gr, r) + dot(go, out));
      const inputs: Record<string, Float64Array> = withResidual ? { r_in, h, weight } : { h, weight };
      checkOp(inputs, loss, (d) => {
        forward();
        const dr = new Float64Array(BL * D);
        residual_rmsnorm_backward(dr, d.weight, go, gr, r, rstd, weight, BL, D);
        for (let i = 0; i < dr.length; i++) {
          d.h[i] += dr[i];
          if (withResidual) d.r_in[i] += dr[i];
        }
      });
    });
  }

  it('computes r · rstd · w with rstd = 1/sqrt(mean(r²) + eps)', () => {
    const D = 4;
    const h = Float64Array.from([1, -2, 3, 0.5]);
    const w = Float64Array.from([1, 2, 0.5, -1]);
    const r = new Float64Array(D), out = new Float64Array(D), rstd = new Float64Array(1);
    residual_rmsnorm_forward(r, out, rstd, null, h, w, 1, D, 1e-5);
    const s = 1 / Math.sqrt((1 + 4 + 9 + 0.25) / 4 + 1e-5);
    expect(rstd[0]).toBeCloseTo(s, 15);
    expectClose(out, Float64Array.from([s, -4 * s, 1.5 * s, -0.5 * s]));
  });
});

describe('linear', () => {
  for (const withBias of [true, false]) {
    it(`backward matches finite differences (${withBias ? 'with' : 'without'} bias)`, () => {
      const M = 7, I = 5, O = 3;
      const rng = new Rng(5);
      const inp = randn(rng, M * I);
      const weight = randn(rng, O * I);
      const bias = randn(rng, O);
      const g = randn(rng, M * O);
      const out = new Float64Array(M * O);
      const loss = () => (linear_forward(out, inp, weight, withBias ? bias : null, M, I, O), dot(g, out));
      const inputs: Record<string, Float64Array> = withBias ? { inp, weight, bias } : { inp, weight };
      checkOp(inputs, loss, (d) => linear_backward(d.inp, d.weight, withBias ? d.bias : null, g, inp, weight, M, I, O));
    });
  }
});

describe('conv1d_silu', () => {
  const B = 2, L = 7, E = 5, K = 4;

  for (const reverse of [false, true]) {
    it(`backward matches finite differences (${reverse ? 'reverse' : 'forward'} direction)`, () => {
      const rng = new Rng(reverse ? 61 : 6);
      const xz = randn(rng, B * L * 2 * E);
      const weight = randn(rng, E * K, 0.5);
      const bias = randn(rng, E, 0.3);
      const g = randn(rng, B * L * E);
      const out = new Float64Array(B * L * E);
      const loss = () => (conv1d_silu_forward(out, xz, weight, bias, B, L, E, K, reverse), dot(g, out));
      checkOp({ xz, weight, bias }, loss, (d) => conv1d_silu_backward(d.xz, d.weight, d.bias, g, xz, weight, bias, B, L, E, K, reverse));
    });
  }

  it('is the causal conv of PyTorch (padding K−1, truncated to L)', () => {
    const rng = new Rng(7);
    const xz = randn(rng, B * L * 2 * E);
    const weight = randn(rng, E * K);
    const bias = randn(rng, E);
    const out = new Float64Array(B * L * E);
    conv1d_silu_forward(out, xz, weight, bias, B, L, E, K, false);
    // Token 0 sees only itself (through the last tap); token 5 sees tokens 2…5.
    const x = (b: number, t: number, e: number) => xz[(b * L + t) * 2 * E + e];
    const e = 3, b = 1;
    expect(out[(b * L + 0) * E + e]).toBeCloseTo(silu(bias[e] + weight[e * K + 3] * x(b, 0, e)), 14);
    let pre = bias[e];
    for (let k = 0; k < K; k++) pre += weight[e * K + k] * x(b, 2 + k, e);
    expect(out[(b * L + 5) * E + e]).toBeCloseTo(silu(pre), 14);
  });

  it('reverse is the forward op on the token-reversed sequence', () => {
    const rng = new Rng(8);
    const xz = randn(rng, B * L * 2 * E);
    const weight = randn(rng, E * K);
    const bias = randn(rng, E);
    const rev = new Float64Array(B * L * E), fwd = new Float64Array(B * L * E);
    conv1d_silu_forward(rev, xz, weight, bias, B, L, E, K, true);
    conv1d_silu_forward(fwd, flipTokens(xz, B, L, 2 * E), weight, bias, B, L, E, K, false);
    expect(rev).toEqual(fwd);
  });
});

describe('selective_scan', () => {
  const B = 2, L = 7, E = 5, N = 3;

  function scanInputs(rng: Rng) {
    return {
      u: randn(rng, B * L * E),
      delta_raw: randn(rng, B * L * E, 0.8),
      dt_bias: Float64Array.from({ length: E }, () => rng.range(-3, 0)),
      A_log: Float64Array.from({ length: E * N }, (_, i) => Math.log(1 + (i % N)) + 0.3 * rng.normal()),
      Bm: randn(rng, B * L * N),
      Cm: randn(rng, B * L * N),
      Dskip: randn(rng, E, 0.3, 1),
      xz: randn(rng, B * L * 2 * E),
    };
  }

  for (const reverse of [false, true]) {
    it(`backward matches finite differences (${reverse ? 'reverse' : 'forward'} direction)`, () => {
      const rng = new Rng(reverse ? 91 : 9);
      const x = scanInputs(rng);
      const g = randn(rng, B * L * E);
      const out = new Float64Array(B * L * E);
      const loss = () => {
        selective_scan_forward(out, x.u, x.delta_raw, x.dt_bias, x.A_log, x.Bm, x.Cm, x.Dskip, x.xz, B, L, E, N, reverse);
        return dot(g, out);
      };
      checkOp(x, loss, (d) => {
        selective_scan_backward(
          d.u, d.delta_raw, d.dt_bias, d.A_log, d.Bm, d.Cm, d.Dskip, d.xz,
          g, x.u, x.delta_raw, x.dt_bias, x.A_log, x.Bm, x.Cm, x.Dskip, x.xz, B, L, E, N, reverse,
        );
      });
    });
  }

  it('equals the closed-form sum y_t = Σ_{s≤t} C_t·(Π_{s<r≤t} a_r) Δ_s u_s B_s + D u_t', () => {
    const x = scanInputs(new Rng(10));
    const out = new Float64Array(B * L * E);
    selective_scan_forward(out, x.u, x.delta_raw, x.dt_bias, x.A_log, x.Bm, x.Cm, x.Dskip, x.xz, B, L, E, N, false);
    const expected = new Float64Array(B * L * E);
    const delta = (b: number, t: number, e: number) => softplus(x.delta_raw[(b * L + t) * E + e] + x.dt_bias[e]);
    for (let b = 0; b < B; b++) {
      for (let t = 0; t < L; t++) {
        for (let e = 0; e < E; e++) {
          let y = x.Dskip[e] * x.u[(b * L + t) * E + e];
          for (let n = 0; n < N; n++) {
            const A = -Math.exp(x.A_log[e * N + n]);
            for (let s = 0; s <= t; s++) {
              let decay = 0; // Σ_{s<r≤t} Δ_r, so Π a_r = exp(A · decay)
              for (let r = s + 1; r <= t; r++) decay += delta(b, r, e);
              y += x.Cm[(b * L + t) * N + n] * Math.exp(A * decay) * delta(b, s, e) * x.u[(b * L + s) * E + e] * x.Bm[(b * L + s) * N + n];
            }
          }
          expected[(b * L + t) * E + e] = y * silu(x.xz[(b * L + t) * 2 * E + E + e]);
        }
      }
    }
    expectClose(out, expected, 1e-13);
  });

  it('reverse reads the gate z in original order, reversed', () => {
    const x = scanInputs(new Rng(11));
    const rev = new Float64Array(B * L * E), fwd = new Float64Array(B * L * E);
    selective_scan_forward(rev, x.u, x.delta_raw, x.dt_bias, x.A_log, x.Bm, x.Cm, x.Dskip, x.xz, B, L, E, N, true);
    const xzFlipped = flipTokens(x.xz, B, L, 2 * E);
    selective_scan_forward(fwd, x.u, x.delta_raw, x.dt_bias, x.A_log, x.Bm, x.Cm, x.Dskip, xzFlipped, B, L, E, N, false);
    expect(rev).toEqual(fwd);
  });
});

describe('combine', () => {
  const B = 3, L = 7, E = 5;

  it('averages y_f with the reversed y_b', () => {
    const rng = new Rng(12);
    const yf = randn(rng, B * L * E), yb = randn(rng, B * L * E);
    const out = new Float64Array(B * L * E);
    combine_forward(out, yf, yb, B, L, E);
    const ybBack = flipTokens(yb, B, L, E);
    expectClose(out, yf.map((v, i) => (v + ybBack[i]) / 2), 1e-15);
  });

  it('backward matches finite differences', () => {
    const rng = new Rng(13);
    const yf = randn(rng, B * L * E), yb = randn(rng, B * L * E);
    const g = randn(rng, B * L * E);
    const out = new Float64Array(B * L * E);
    const loss = () => (combine_forward(out, yf, yb, B, L, E), dot(g, out));
    checkOp({ yf, yb }, loss, (d) => combine_backward(d.yf, d.yb, g, B, L, E));
  });
});

describe('head', () => {
  it('backward matches finite differences', () => {
    const B = 3, L = 7, D = 6, C = 5, token = 3;
    const rng = new Rng(14);
    const x = randn(rng, B * L * D);
    const weight = randn(rng, C * D);
    const bias = randn(rng, C);
    const g = randn(rng, B * C);
    const logits = new Float64Array(B * C);
    const loss = () => (head_forward(logits, x, weight, bias, B, L, D, C, token), dot(g, logits));
    checkOp({ x, weight, bias }, loss, (d) => head_backward(d.x, d.weight, d.bias, g, x, weight, B, L, D, C, token));
  });
});

describe('cross-entropy', () => {
  const B = 3, C = 5;

  it('smooth_targets gives (1 − ε)·onehot + ε/C', () => {
    const t = new Float64Array(B * C);
    smooth_targets(t, [4, 0, 2], B, C, 0.1);
    expect(t[0 * C + 4]).toBeCloseTo(0.92, 15);
    expect(t[0 * C + 1]).toBeCloseTo(0.02, 15);
    expect(t[1 * C + 0]).toBeCloseTo(0.92, 15);
    for (let b = 0; b < B; b++) expect(t.subarray(b * C, (b + 1) * C).reduce((a, v) => a + v, 0)).toBeCloseTo(1, 15);
    expect(() => smooth_targets(t, [4, 5, 2], B, C, 0.1)).toThrow(/label 5/);
  });

  it('is stable for large logits and equals −Σ t·log softmax', () => {
    const logits = Float64Array.from([1000, 999, 998, 0, -1000, 1, 2, 3, 4, 5, -3, 0.5, 0, 2, 1]);
    const t = new Float64Array(B * C);
    smooth_targets(t, [1, 4, 0], B, C, 0.2);
    const losses = new Float64Array(B), probs = new Float64Array(B * C);
    softmax_cross_entropy_forward(losses, probs, logits, t, B, C);
    for (let b = 0; b < B; b++) {
      const row = logits.subarray(b * C, (b + 1) * C);
      const max = Math.max(...row);
      const lse = max + Math.log(row.reduce((a, v) => a + Math.exp(v - max), 0));
      let expected = 0;
      for (let c = 0; c < C; c++) expected -= t[b * C + c] * (row[c] - lse);
      expect(losses[b]).toBeCloseTo(expected, 12);
      expect(Number.isFinite(losses[b])).toBe(true);
    }
  });

  it('backward matches finite differences (soft targets, mean loss)', () => {
    const rng = new Rng(15);
    const logits = randn(rng, B * C, 2);
    // Mixup of two smoothed one-hots: rows still sum to 1.
    const t1 = new Float64Array(B * C), t2 = new Float64Array(B * C);
    smooth_targets(t1, [1, 4, 0], B, C, 0.1);
    smooth_targets(t2, [3, 4, 2], B, C, 0.1);
    const targets = t1.map((v, i) => 0.7 * v + 0.3 * t2[i]);
    const losses = new Float64Array(B), probs = new Float64Array(B * C);
    const loss = () => {
      softmax_cross_entropy_forward(losses, probs, logits, targets, B, C);
      return losses.reduce((a, v) => a + v, 0) / B;
    };
    checkOp({ logits }, loss, (d) => {
      loss();
      softmax_cross_entropy_backward(d.logits, 1 / B, probs, targets, B, C);
    });
  });
});

describe('adamw_update', () => {
  it('matches a hand-computed two-step example', () => {
    // Two parameters, the first decayed; lr 0.1, β1 0.9, β2 0.999, eps 1e-8, wd 0.1.
    const p = Float64Array.from([1, -2]);
    const m = new Float64Array(2), v = new Float64Array(2);
    const decay = Uint8Array.from([1, 0]);
    adamw_update(p, Float64Array.from([0.5, -1]), m, v, decay, 0.1, 0.9, 0.999, 1e-8, 0.1, 1);
    // Step 1: m = 0.1·g, v = 0.001·g², so m̂ = g, v̂ = g² and the step is lr·g/(|g| + eps).
    //   p0 = 1·(1 − 0.01) − 0.1·0.5/(0.5 + 1e-8) = 0.99 − 0.09999999800000004 = 0.890000002
    //   p1 = −2 − 0.1·(−1)/(1 + 1e-8)          = −2 + 0.0999999990000000   = −1.900000001
    expect(m[0]).toBeCloseTo(0.05, 16);
    expect(v[1]).toBeCloseTo(0.001, 16);
    expect(p[0]).toBeCloseTo(0.890000002, 14);
    expect(p[1]).toBeCloseTo(-1.900000001, 14);
    adamw_update(p, Float64Array.from([0.2, 0.4]), m, v, decay, 0.1, 0.9, 0.999, 1e-8, 0.1, 2);
    // Step 2: m0 = 0.9·0.05 + 0.1·0.2 = 0.065,  v0 = 0.999·0.00025 + 0.001·0.04 = 0.00028975
    //         m1 = 0.9·(−0.1) + 0.1·0.4 = −0.05, v1 = 0.999·0.001 + 0.001·0.16 = 0.001159
    //   bias corrections 1 − 0.9² = 0.19 and 1 − 0.999² = 0.001999:
    //   m̂0 = 0.342105263157894…, v̂0 = 0.144947473736868…, sqrt = 0.380719678…
    //   m̂1 = −0.263157894736842…, v̂1 = 0.579789894947474…, sqrt = 0.761439357…
    //   p0 = 0.890000002·0.99 − 0.1·0.342105263157894/0.380719687… = 0.88110000198 − 0.08985744…
    expect(m[0]).toBeCloseTo(0.065, 16);
    expect(v[0]).toBeCloseTo(0.00028975, 16);
    expect(m[1]).toBeCloseTo(-0.05, 16);
    expect(v[1]).toBeCloseTo(0.001159, 16);
    const p0 = 0.890000002 * 0.99 - (0.1 * (0.065 / 0.19)) / (Math.sqrt(0.00028975 / 0.001999) + 1e-8);
    const p1 = -1.900000001 - (0.1 * (-0.05 / 0.19)) / (Math.sqrt(0.001159 / 0.001999) + 1e-8);
    expect(p[0]).toBeCloseTo(p0, 13);
    expect(p[1]).toBeCloseTo(p1, 13);
    expect(p[0]).toBeCloseTo(0.7912425, 6);
    expect(p[1]).toBeCloseTo(-1.8654390, 6);
  });

  it('decay_mask expands per-tensor flags; a boolean applies to every element', () => {
    const specs: ParamSpec[] = [
      { name: 'a', shape: [2], size: 2, offset: 0, decay: true },
      { name: 'b', shape: [3], size: 3, offset: 2, decay: false },
    ];
    expect(Array.from(decay_mask(specs))).toEqual([1, 1, 0, 0, 0]);
    const p1 = Float64Array.from([1, 2, 3]), p2 = p1.slice();
    const g = Float64Array.from([0.1, -0.2, 0.3]);
    adamw_update(p1, g, new Float64Array(3), new Float64Array(3), true, 0.01, 0.9, 0.95, 1e-8, 0.05, 1);
    adamw_update(p2, g, new Float64Array(3), new Float64Array(3), [1, 1, 1], 0.01, 0.9, 0.95, 1e-8, 0.05, 1);
    expect(p1).toEqual(p2);
  });
});
