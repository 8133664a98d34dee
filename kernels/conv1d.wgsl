// Causal depthwise conv1d + SiLU of one Mamba direction, over the x half of in_proj's output.
//
//   xz (B, L, 2E): x = columns 0…E−1 (z, columns E…2E−1, is the scan's gate, untouched here)
//   weight (E, K), bias (E); out, dout (B, L, E) in direction order.
//   Direction order: position s reads token src(s) = s (REVERSE = false) or L−1−s (REVERSE = true).
//
//   forward:  pre[b,t,e] = bias[e] + Σ_k weight[e,k] · x[b, src(t−(K−1)+k), e]   (zero before s = 0)
//             out[b,t,e] = SiLU(pre[b,t,e])
//   backward, with g[b,t,e] = dout[b,t,e] · SiLU'(pre[b,t,e]) (pre recomputed, never stored):
//     conv1d_silu_backward_dx:     dxz[b, src(s), e] (= or +=) Σ_k g[b, s+(K−1)−k, e] · weight[e,k]
//                                  (x half only; ACCUMULATE lets both directions add into one dxz)
//     conv1d_silu_backward_params: partial[grp] (G, E·K + E) = the sums over the group's rows of
//                                  g · x[b, src(t−(K−1)+k), e] (at e·K + k) and of g (at E·K + e);
//                                  reduce.wgsl's colsum adds the G rows into dweight and dbias.
//
// Geometry: forward and backward_dx run one invocation per (b, t, e), workgroups of 256, flat index
// gid.x + gid.y · num_workgroups.x · 256 (e fastest: coalesced). backward_params runs workgroups of
// 64 channels × 4 row lanes over grid (ceil(E / 64), G); group grp owns rows (b·L + t)
// grp·ROWS_PER_GROUP … +ROWS_PER_GROUP−1, lane y takes every 4th, and the lanes are added in order.

override B: u32;
override L: u32;
override E: u32;
override K: u32 = 4u;           // at most MAX_K
override REVERSE: bool = false;
override ROWS_PER_GROUP: u32 = 1u;
override ACCUMULATE: bool = false;

const MAX_K = 8u;
const WG = 256u;

@group(0) @binding(1) var<storage, read> xz: array<f32>;     // (B, L, 2E)
@group(0) @binding(2) var<storage, read> weight: array<f32>; // (E, K)
@group(0) @binding(3) var<storage, read> bias: array<f32>;   // (E)

fn src_token(s: u32) -> u32 {
  return select(s, L - 1u - s, REVERSE);
}

fn x_at(b: u32, s: u32, e: u32) -> f32 {
  return xz[(b * L + src_token(s)) * 2u * E + e];
}

// The pre-activation at direction position t.
fn pre_at(b: u32, t: u32, e: u32) -> f32 {
  var acc = bias[e];
  for (var k = 0u; k < K; k++) {
    if (t + k + 1u >= K) { // s = t − (K−1) + k ≥ 0
      acc += weight[e * K + k] * x_at(b, t + k + 1u - K, e);
    }
  }
  return acc;
}

fn sigmoid(x: f32) -> f32 {
  return 1.0 / (1.0 + exp(-x));
}

fn silu_grad(x: f32) -> f32 {
  let s = sigmoid(x);
  return s * (1.0 + x * (1.0 - s));
}

// ---- forward ------------------------------------------------------------------------------------
@group(0) @binding(0) var<storage, read_write> out: array<f32>; // (B, L, E)

@compute @workgroup_size(256)
fn conv1d_silu_forward(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let idx = gid.x + gid.y * nwg.x * WG;
  if (idx >= B * L * E) { return; }
  let bt = idx / E;
  let e = idx - bt * E;
  let b = bt / L;
  let t = bt - b * L;
  let p = pre_at(b, t, e);
  out[idx] = p * sigmoid(p);
}

// ---- backward -----------------------------------------------------------------------------------
@group(0) @binding(0) var<storage, read_write> dxz: array<f32>;    // (B, L, 2E), x half written
@group(0) @binding(4) var<storage, read> dout: array<f32>;         // (B, L, E)

@compute @workgroup_size(256)
fn conv1d_silu_backward_dx(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let idx = gid.x + gid.y * nwg.x * WG;
  if (idx >= B * L * E) { return; }
  let bs = idx / E;
  let e = idx - bs * E;
  let b = bs / L;
  let s = bs - b * L;
  var acc = 0.0;
  for (var k = 0u; k < K; k++) {
    let t = s + K - 1u - k; // the output position that read s through tap k
    if (t < L) {
      let g = dout[(b * L + t) * E + e] * silu_grad(pre_at(b, t, e));
      acc += g * weight[e * K + k];
    }
  }
  let o = (b * L + src_token(s)) * 2u * E + e;
  if (ACCUMULATE) { dxz[o] += acc; } else { dxz[o] = acc; }
}

@group(0) @binding(0) var<storage, read_write> partial: array<f32>; // (G, E·K + E)

const COLS = 64u;
const LANES = 4u;
var<workgroup> lane_sum: array<f32, 256>; // [lane][channel]

@compute @workgroup_size(64, 4)
fn conv1d_silu_backward_params(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let e = wg.x * COLS + lid.x;
  let grp = wg.y;
  let row0 = grp * ROWS_PER_GROUP;
  let row1 = min(row0 + ROWS_PER_GROUP, B * L);
  var dw: array<f32, MAX_K>;
  var db = 0.0;
  if (e < E) {
    for (var row = row0 + lid.y; row < row1; row += LANES) {
      let b = row / L;
      let t = row - b * L;
      let g = dout[row * E + e] * silu_grad(pre_at(b, t, e));
      db += g;
      for (var k = 0u; k < K; k++) {
        if (t + k + 1u >= K) { dw[k] += g * x_at(b, t + k + 1u - K, e); }
      }
    }
  }
  let X = E * K + E;
  // The K + 1 sums of this channel, each added over the four lanes in order.
  for (var j = 0u; j <= K; j++) {
    var v = db;
    if (j < K) { v = dw[j]; }
    lane_sum[lid.y * COLS + lid.x] = v;
    workgroupBarrier();
    if (lid.y == 0u && e < E) {
      let s = ((lane_sum[lid.x] + lane_sum[COLS + lid.x]) + lane_sum[2u * COLS + lid.x]) + lane_sum[3u * COLS + lid.x];
      let col = select(E * K + e, e * K + j, j < K);
      partial[grp * X + col] = s;
    }
    workgroupBarrier();
  }
}
