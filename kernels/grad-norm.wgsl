// The global L2 norm of every gradient and the clip scale AdamW applies (PyTorch's
// clip_grad_norm_), computed on the GPU so that a training step never waits for a read-back.
//
//   grad_sumsq_partial: partials (G) with partials[g] = Σ grads[i]² over chunk g, the CHUNK
//                       elements g·CHUNK … g·CHUNK + CHUNK − 1 of grads (N_PARAMS)
//   grad_clip_scale:    stats (4) from partials (G):
//                         stats[0] = ‖g‖ = sqrt(Σ partials)
//                         stats[1] = scale = MAX_NORM / (‖g‖ + 1e-6) when 0 < MAX_NORM < ‖g‖, else 1
//                         stats[2] = 1 when ‖g‖ is not finite (NaN or ±Inf), else 0: AdamW and the
//                                    EMA then leave every buffer as it was (the step is skipped)
//                         stats[3] = Σ g²
//
// Deterministic: every sum runs in a fixed order (strided partial sums per invocation, then a tree
// in workgroup memory), no atomics, so the same gradients always give the same bits.
//
// Geometry: grad_sumsq_partial: G = ceil(N_PARAMS / CHUNK) workgroups of 256, numbered
// wg.x + wg.y · num_workgroups.x (y folds grids beyond the per-dimension limit); invocation l sums
// elements l, l + 256, … of its chunk. grad_clip_scale: one workgroup of 256.

override N_PARAMS: u32;   // elements of grads
override G: u32;          // chunks (partials)
const CHUNK = 4096u;      // elements per chunk: 16 per invocation
const WG = 256u;

struct Clip {
  max_norm: f32,          // 0 (or below): never clip
}

var<workgroup> red: array<f32, 256>;

// Tree sum of red[0 … 255] in a fixed order; every invocation gets the total.
fn tree_sum(lid: u32) -> f32 {
  for (var half = WG / 2u; half > 0u; half >>= 1u) {
    if (lid < half) { red[lid] += red[lid + half]; }
    workgroupBarrier();
  }
  let total = red[0];
  workgroupBarrier();
  return total;
}

// ---- pass 1: sums of squares per chunk ------------------------------------------------------------
@group(0) @binding(0) var<storage, read_write> partials: array<f32>; // (G)
@group(0) @binding(1) var<storage, read> grads: array<f32>;          // (N_PARAMS)

@compute @workgroup_size(WG)
fn grad_sumsq_partial(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u,
                      @builtin(local_invocation_index) lid: u32) {
  let g = wg.x + wg.y * nwg.x;
  if (g >= G) { return; } // uniform per workgroup, so the barriers below stay uniform
  let start = g * CHUNK;
  let end = min(start + CHUNK, N_PARAMS);
  var s = 0.0;
  for (var i = start + lid; i < end; i += WG) {
    let x = grads[i];
    s += x * x;
  }
  red[lid] = s;
  workgroupBarrier();
  let total = tree_sum(lid);
  if (lid == 0u) { partials[g] = total; }
}

// ---- pass 2: the norm and the clip scale ----------------------------------------------------------
@group(0) @binding(0) var<storage, read_write> stats: array<f32>;   // (4)
@group(0) @binding(1) var<storage, read> c_partials: array<f32>;    // (G)
@group(0) @binding(2) var<uniform> clip: Clip;

@compute @workgroup_size(WG)
fn grad_clip_scale(@builtin(local_invocation_index) lid: u32) {
  var s = 0.0;
  for (var i = lid; i < G; i += WG) { s += c_partials[i]; }
  red[lid] = s;
  workgroupBarrier();
  let sumsq = tree_sum(lid);
  if (lid != 0u) { return; }
  let norm = sqrt(sumsq);
  // Exponent bits all ones: Inf or NaN (comparisons with NaN may be optimised away; bits may not).
  let nonfinite = (bitcast<u32>(sumsq) & 0x7f800000u) == 0x7f800000u;
  var scale = 1.0;
  if (!nonfinite && clip.max_norm > 0.0 && norm > clip.max_norm) { scale = clip.max_norm / (norm + 1e-6); }
  stats[0] = norm;
  stats[1] = scale;
  stats[2] = select(0.0, 1.0, nonfinite);
  stats[3] = sumsq;
}
