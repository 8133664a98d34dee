/**
 * Scalar activations of the float64 reference, each safe for any finite input.
 *
 *   sigmoid(x)  = 1 / (1 + e^−x)
 *   silu(x)     = x · σ(x)             silu'(x)     = σ(x) · (1 + x · (1 − σ(x)))
 *   softplus(x) = log(1 + e^x)         softplus'(x) = σ(x)
 *
 * sigmoid never evaluates e^t for a large positive t, so it cannot overflow. softplus uses
 * log(1 + e^x) = x + log(1 + e^−x) for x > 0, which is exact for every x (PyTorch switches to the
 * identity above x = 20 instead; the two differ by less than 2.1e-9 there).
 */

export function sigmoid(x: number): number {
  if (x >= 0) return 1 / (1 + Math.exp(-x));
  const e = Math.exp(x); // x < 0, so e ∈ (0, 1)
  return e / (1 + e);
}

export function silu(x: number): number {
  return x * sigmoid(x);
}

/** d silu(x) / dx. */
export function silu_grad(x: number): number {
  const s = sigmoid(x);
  return s * (1 + x * (1 - s));
}

export function softplus(x: number): number {
  return x > 0 ? x + Math.log1p(Math.exp(-x)) : Math.log1p(Math.exp(x));
}
