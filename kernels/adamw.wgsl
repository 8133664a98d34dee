// AdamW (decoupled weight decay, PyTorch's torch.optim.AdamW) over every parameter in one dispatch.
//
//   params, grads, m, v: (N_PARAMS) flat f32 arrays with the same layout (the model's parameter
//   layout); decay_mask: (ceil(N_PARAMS / 32)) u32, bit i % 32 of word i / 32 set where element i
//   decays. Per step (uniform, rewritten with queue.writeBuffer before each step, step t ≥ 1):
//     p ← p − lr·wd·p                     where the decay bit is set
//     m ← β1·m + (1 − β1)·g;  v ← β2·v + (1 − β2)·g²
//     p ← p − lr · (m / bc1) / (sqrt(v / bc2) + eps),   bc1 = 1 − β1^t, bc2 = 1 − β2^t
//   The host computes 1 − β1, 1 − β2, lr·wd, bc1 and bc2 in float64 and rounds each once to f32
//   (1 − 0.999 evaluated in f32 would be off by 5e-5).
//
// Two entry points:
//   adamw_update:        g = grads[i]
//   adamw_update_scaled: g = grads[i] · grad_stats[1] (the clip scale of kernels/grad-norm.wgsl,
//                        read from a storage buffer the same submit wrote, so clipping needs no
//                        read-back); when grad_stats[2] ≠ 0 (a non-finite gradient norm) nothing
//                        is written: the step is skipped and params, m and v keep their values.
//
// Geometry: one invocation per element, workgroups of 256, flat index
// gid.x + gid.y · num_workgroups.x · 256 (y folds grids beyond the per-dimension limit).

struct Hyper {
  lr: f32,
  beta1: f32,
  beta2: f32,
  one_minus_beta1: f32,
  one_minus_beta2: f32,
  eps: f32,
  lr_wd: f32,  // lr · weight decay
  bc1: f32,    // 1 − β1^t
  bc2: f32,    // 1 − β2^t
}

override N_PARAMS: u32;

@group(0) @binding(0) var<storage, read_write> params: array<f32>;
@group(0) @binding(1) var<storage, read_write> m: array<f32>;
@group(0) @binding(2) var<storage, read_write> v: array<f32>;
@group(0) @binding(3) var<storage, read> grads: array<f32>;
@group(0) @binding(4) var<storage, read> decay_mask: array<u32>;
@group(0) @binding(5) var<uniform> hp: Hyper;

// One element's update with gradient g.
fn update(i: u32, g: f32) {
  var p = params[i];
  if (((decay_mask[i / 32u] >> (i % 32u)) & 1u) != 0u) { p -= hp.lr_wd * p; }
  let mi = hp.beta1 * m[i] + hp.one_minus_beta1 * g;
  let vi = hp.beta2 * v[i] + hp.one_minus_beta2 * g * g;
  m[i] = mi;
  v[i] = vi;
  params[i] = p - hp.lr * (mi / hp.bc1) / (sqrt(vi / hp.bc2) + hp.eps);
}

@compute @workgroup_size(256)
fn adamw_update(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= N_PARAMS) { return; }
  update(i, grads[i]);
}

@group(0) @binding(6) var<storage, read> grad_stats: array<f32>; // (4) see kernels/grad-norm.wgsl

@compute @workgroup_size(256)
fn adamw_update_scaled(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= N_PARAMS || grad_stats[2] != 0.0) { return; }
  update(i, grads[i] * grad_stats[1]);
}
