// The combine of the two Mamba directions before out_proj (bimamba v2, with the division by 2).
//
//   combine_forward:  out[b,t,e] = (y_f[b,t,e] + y_b[b,L−1−t,e]) / 2               (B, L, E)
//   combine_backward: dy_f[b,t,e] (= or +=) dout[b,t,e] / 2;
//                     dy_b[b,L−1−t,e] (= or +=) dout[b,t,e] / 2
// y_b / dy_b are in the backward direction's order (its position t is token L−1−t).
// The *_scaled entry points multiply sample b's values by scale[SCALE_OFFSET + b] (forward and
// backward alike): the training-time drop path of the block's output (0 or 1/(1 − p) per sample;
// out_proj is linear, so scaling its input scales the block's output).
//
// Geometry: one invocation per (b, t, e), workgroups of 256, flat index
// gid.x + gid.y · num_workgroups.x · 256 (e fastest: coalesced, the reversal moves whole rows).

override B: u32;
override L: u32;
override E: u32;
override ACCUMULATE: bool = false;
override SCALE_OFFSET: u32 = 0u;

const WG = 256u;

@group(0) @binding(0) var<storage, read_write> out: array<f32>; // (B, L, E)
@group(0) @binding(1) var<storage, read> y_f: array<f32>;       // (B, L, E)
@group(0) @binding(2) var<storage, read> y_b: array<f32>;       // (B, L, E) direction order

// The element of the reversed sequence matching flat index idx = (b·L + t)·E + e.
fn reversed_index(idx: u32) -> u32 {
  let bt = idx / E;
  let e = idx - bt * E;
  let b = bt / L;
  let t = bt - b * L;
  return (b * L + (L - 1u - t)) * E + e;
}

fn combined(idx: u32) -> f32 {
  return (y_f[idx] + y_b[reversed_index(idx)]) * 0.5;
}

@compute @workgroup_size(256)
fn combine_forward(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let idx = gid.x + gid.y * nwg.x * WG;
  if (idx >= B * L * E) { return; }
  out[idx] = combined(idx);
}

@group(0) @binding(3) var<storage, read> scale: array<f32>;   // (depth, B): this block's row at SCALE_OFFSET

@compute @workgroup_size(256)
fn combine_forward_scaled(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let idx = gid.x + gid.y * nwg.x * WG;
  if (idx >= B * L * E) { return; }
  out[idx] = combined(idx) * scale[SCALE_OFFSET + idx / (L * E)];
}

@group(0) @binding(0) var<storage, read_write> dy_f: array<f32>; // (B, L, E)
@group(0) @binding(1) var<storage, read_write> dy_b: array<f32>; // (B, L, E) direction order
@group(0) @binding(2) var<storage, read> dout: array<f32>;       // (B, L, E)

fn combine_backward_at(idx: u32, g: f32) {
  let r = reversed_index(idx);
  if (ACCUMULATE) {
    dy_f[idx] += g;
    dy_b[r] += g;
  } else {
    dy_f[idx] = g;
    dy_b[r] = g;
  }
}

@compute @workgroup_size(256)
fn combine_backward_scaled(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let idx = gid.x + gid.y * nwg.x * WG;
  if (idx >= B * L * E) { return; }
  combine_backward_at(idx, (dout[idx] * 0.5) * scale[SCALE_OFFSET + idx / (L * E)]);
}

@compute @workgroup_size(256)
fn combine_backward(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let idx = gid.x + gid.y * nwg.x * WG;
  if (idx >= B * L * E) { return; }
  combine_backward_at(idx, dout[idx] * 0.5);
}
