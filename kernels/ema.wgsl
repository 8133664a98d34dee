// Exponential moving average of the weights over the flat parameter buffer, after each AdamW step:
//
//   ema_update: ema (N_PARAMS) ← decay · ema + (1 − decay) · params (N_PARAMS)
//
// decay and 1 − decay come from a uniform the trainer rewrites before each step (the host computes
// 1 − decay in float64, so 1 − 0.9999 is not rounded twice). When grad_stats[2] ≠ 0 (a non-finite
// gradient norm, see kernels/grad-norm.wgsl) AdamW skipped the step and so does the average.
//
// Geometry: one invocation per element, workgroups of 256, flat index
// gid.x + gid.y · num_workgroups.x · 256 (y folds grids beyond the per-dimension limit).

struct Ema {
  decay: f32,
  one_minus_decay: f32,
}

override N_PARAMS: u32;

@group(0) @binding(0) var<storage, read_write> ema: array<f32>;   // (N_PARAMS)
@group(0) @binding(1) var<storage, read> params: array<f32>;      // (N_PARAMS)
@group(0) @binding(2) var<storage, read> grad_stats: array<f32>;  // (4)
@group(0) @binding(3) var<uniform> e: Ema;

@compute @workgroup_size(256)
fn ema_update(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= N_PARAMS || grad_stats[2] != 0.0) { return; }
  ema[i] = e.decay * ema[i] + e.one_minus_decay * params[i];
}
