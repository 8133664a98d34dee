// Softmax cross-entropy against soft targets (label smoothing, mixup and cutmix all give soft rows).
//
//   softmax_cross_entropy_forward: for row b of logits (B, C) and targets (B, C):
//     lse_b = max_c ℓ[b,c] + log Σ_c exp(ℓ[b,c] − max);  probs[b,c] = exp(ℓ[b,c] − lse_b)   (B, C)
//     losses[b] = −Σ_c targets[b,c] · (ℓ[b,c] − lse_b)                                      (B)
//   mean_loss: loss[0] = Σ_b losses[b] / B     (the one value a training step reads back)
//   softmax_cross_entropy_backward: dlogits (B, C) (= or +=) SCALE · (probs − targets)
//     (SCALE = 1/B for the mean loss; valid for target rows that sum to 1)
//
// Geometry: forward: one workgroup of 64 per row (columns c = lid, lid + 64, …, tree reductions in
// workgroup memory), rows numbered wg.x + wg.y · num_workgroups.x. mean_loss: one workgroup of
// 256, strided partial sums then a tree reduction (fixed order). backward: one invocation per
// element, workgroups of 256, flat index gid.x + gid.y · num_workgroups.x · 256.

override B: u32;
override C: u32;
override SCALE: f32 = 1.0;
override ACCUMULATE: bool = false;

const WG = 64u;
var<workgroup> red: array<f32, 256>;

// Tree reduction over the first n ≤ 256 slots of red (n a power of two); max or sum.
fn reduce_red(lid: u32, n: u32, is_max: bool) -> f32 {
  for (var half = n / 2u; half > 0u; half >>= 1u) {
    if (lid < half) {
      if (is_max) { red[lid] = max(red[lid], red[lid + half]); } else { red[lid] += red[lid + half]; }
    }
    workgroupBarrier();
  }
  let total = red[0];
  workgroupBarrier();
  return total;
}

// ---- forward ------------------------------------------------------------------------------------
@group(0) @binding(0) var<storage, read_write> losses: array<f32>; // (B)
@group(0) @binding(1) var<storage, read_write> probs: array<f32>;  // (B, C)
@group(0) @binding(2) var<storage, read> logits: array<f32>;       // (B, C)
@group(0) @binding(3) var<storage, read> targets: array<f32>;      // (B, C)

@compute @workgroup_size(WG)
fn softmax_cross_entropy_forward(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u,
                                 @builtin(local_invocation_index) lid: u32) {
  let b = wg.x + wg.y * nwg.x;
  if (b >= B) { return; }
  let o = b * C;
  var m = -3.0e38;
  for (var c = lid; c < C; c += WG) { m = max(m, logits[o + c]); }
  red[lid] = m;
  workgroupBarrier();
  m = reduce_red(lid, WG, true);
  var s = 0.0;
  for (var c = lid; c < C; c += WG) { s += exp(logits[o + c] - m); }
  red[lid] = s;
  workgroupBarrier();
  let lse = m + log(reduce_red(lid, WG, false));
  var loss = 0.0;
  for (var c = lid; c < C; c += WG) {
    let logp = logits[o + c] - lse;
    probs[o + c] = exp(logp);
    loss -= targets[o + c] * logp;
  }
  red[lid] = loss;
  workgroupBarrier();
  loss = reduce_red(lid, WG, false);
  if (lid == 0u) { losses[b] = loss; }
}

// ---- mean loss ----------------------------------------------------------------------------------
@group(0) @binding(0) var<storage, read_write> mean_out: array<f32>; // (1)
@group(0) @binding(1) var<storage, read> mean_losses: array<f32>;    // (B)

@compute @workgroup_size(256)
fn mean_loss(@builtin(local_invocation_index) lid: u32) {
  var s = 0.0;
  for (var b = lid; b < B; b += 256u) { s += mean_losses[b]; }
  red[lid] = s;
  workgroupBarrier();
  s = reduce_red(lid, 256u, false);
  if (lid == 0u) { mean_out[0] = s / f32(B); }
}

// ---- backward -----------------------------------------------------------------------------------
@group(0) @binding(0) var<storage, read_write> dlogits: array<f32>; // (B, C)
@group(0) @binding(1) var<storage, read> b_probs: array<f32>;       // (B, C)
@group(0) @binding(2) var<storage, read> b_targets: array<f32>;     // (B, C)

@compute @workgroup_size(256)
fn softmax_cross_entropy_backward(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= B * C) { return; }
  let g = SCALE * (b_probs[i] - b_targets[i]);
  if (ACCUMULATE) { dlogits[i] += g; } else { dlogits[i] = g; }
}
