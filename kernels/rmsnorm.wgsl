// The residual add fused with RMSNorm (Vim's fused_add_norm, residual in f32), forward and backward.
//
//   forward:  r_out = r_in + h;  rstd = 1 / sqrt(mean_d(r_out²) + EPS);  out = r_out · rstd · weight
//   backward: with s = rstd, g = dout ⊙ weight, c = s² · (Σ_d g_d r_d) / D:
//             dr (= or +=) dr_next + s · (g − r · c);   dweight partial[grp] = Σ_rows dout · r · s
//
// Tensors (row-major): weight (D); the row-selected tensors r_in, h, dr_next, dr are (BL, D) and
// row k of the op is their row ROW_OFFSET + k·ROW_STRIDE; the compact tensors r_out, out, rstd,
// dout, r (the saved r_out) are (ROWS, D) / (ROWS) with row k at k. With ROW_STRIDE = 1 and
// ROW_OFFSET = 0 every tensor is (BL, D). A larger stride normalises only some rows: the final norm
// at the class tokens (ROW_STRIDE = L, ROW_OFFSET = clsPos, ROWS = B) gives out (B, D) for the
// head, and its backward writes dr only at those rows of a (BL, D) tensor (the others are left
// as they are: zero them once).
//
// Optional inputs: HAS_R_IN = false (the first block: r_out = h) and HAS_DR_NEXT = false (the final
// norm) skip the read; the binding must still be given a (read-only) tensor, e.g. h / dout.
//
// Geometry: 128 invocations per workgroup, columns d = lid, lid + 128, …; the row sum is a tree
// reduction in workgroup memory (fixed order: deterministic).
//   forward:  one workgroup per row; ROWS workgroups as (x, y) with k = wg.x + wg.y · nwg.x.
//   backward: one workgroup per ROWS_PER_GROUP consecutive rows, G = ceil(ROWS / ROWS_PER_GROUP)
//             workgroups; each keeps its dweight sums in workgroup memory and writes them as row
//             grp of partials (G, D), which reduce.wgsl's colsum adds into dweight.

override D: u32;
override ROWS: u32;
override ROW_STRIDE: u32 = 1u;
override ROW_OFFSET: u32 = 0u;
override EPS: f32 = 1e-5;
override HAS_R_IN: bool = true;
override HAS_DR_NEXT: bool = true;
override ROWS_PER_GROUP: u32 = 1u;
override ACCUMULATE: bool = false;

const WG = 128u;
var<workgroup> red: array<f32, WG>;

// Sum of v over the workgroup (every invocation gets the total).
fn workgroup_sum(v: f32, lid: u32) -> f32 {
  red[lid] = v;
  workgroupBarrier();
  for (var half = WG / 2u; half > 0u; half >>= 1u) {
    if (lid < half) { red[lid] += red[lid + half]; }
    workgroupBarrier();
  }
  let total = red[0];
  workgroupBarrier(); // red is reused by the next call
  return total;
}

// ---- forward ------------------------------------------------------------------------------------
@group(0) @binding(0) var<storage, read_write> f_r_out: array<f32>; // (ROWS, D)
@group(0) @binding(1) var<storage, read_write> f_out: array<f32>;   // (ROWS, D)
@group(0) @binding(2) var<storage, read_write> f_rstd: array<f32>;  // (ROWS)
@group(0) @binding(3) var<storage, read> f_h: array<f32>;           // (BL, D)
@group(0) @binding(4) var<storage, read> f_weight: array<f32>;      // (D)
@group(0) @binding(5) var<storage, read> f_r_in: array<f32>;        // (BL, D), read if HAS_R_IN

@compute @workgroup_size(WG)
fn residual_rmsnorm_forward(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u,
                            @builtin(local_invocation_index) lid: u32) {
  let k = wg.x + wg.y * nwg.x; // uniform across the workgroup
  if (k >= ROWS) { return; }
  let src = (ROW_OFFSET + k * ROW_STRIDE) * D;
  let dst = k * D;
  var ss = 0.0;
  for (var d = lid; d < D; d += WG) {
    var r = f_h[src + d];
    if (HAS_R_IN) { r += f_r_in[src + d]; }
    f_r_out[dst + d] = r;
    ss += r * r;
  }
  let s = 1.0 / sqrt(workgroup_sum(ss, lid) / f32(D) + EPS);
  if (lid == 0u) { f_rstd[k] = s; }
  for (var d = lid; d < D; d += WG) {
    f_out[dst + d] = f_r_out[dst + d] * s * f_weight[d];
  }
}

// ---- backward -----------------------------------------------------------------------------------
@group(0) @binding(0) var<storage, read_write> b_dr: array<f32>;       // (BL, D)
@group(0) @binding(1) var<storage, read_write> b_partial: array<f32>;  // (G, D) dweight partials
@group(0) @binding(2) var<storage, read> b_dout: array<f32>;           // (ROWS, D)
@group(0) @binding(3) var<storage, read> b_r: array<f32>;              // (ROWS, D)
@group(0) @binding(4) var<storage, read> b_rstd: array<f32>;           // (ROWS)
@group(0) @binding(5) var<storage, read> b_weight: array<f32>;         // (D)
@group(0) @binding(6) var<storage, read> b_dr_next: array<f32>;        // (BL, D), read if HAS_DR_NEXT

var<workgroup> dw_acc: array<f32, D>;

@compute @workgroup_size(WG)
fn residual_rmsnorm_backward(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u,
                             @builtin(local_invocation_index) lid: u32) {
  let grp = wg.x + wg.y * nwg.x;
  let k0 = grp * ROWS_PER_GROUP;
  if (k0 >= ROWS) { return; }
  let k1 = min(k0 + ROWS_PER_GROUP, ROWS);
  for (var d = lid; d < D; d += WG) { dw_acc[d] = 0.0; }
  for (var k = k0; k < k1; k++) {
    let row = k * D;
    let s = b_rstd[k];
    var gr = 0.0;
    for (var d = lid; d < D; d += WG) {
      let g = b_dout[row + d];
      let r = b_r[row + d];
      gr += g * b_weight[d] * r;
      dw_acc[d] += g * r * s; // only this invocation touches column d
    }
    let c = s * s * workgroup_sum(gr, lid) / f32(D);
    let sel = (ROW_OFFSET + k * ROW_STRIDE) * D;
    for (var d = lid; d < D; d += WG) {
      var v = s * (b_dout[row + d] * b_weight[d] - b_r[row + d] * c);
      if (HAS_DR_NEXT) { v += b_dr_next[sel + d]; }
      if (ACCUMULATE) { b_dr[sel + d] += v; } else { b_dr[sel + d] = v; }
    }
  }
  for (var d = lid; d < D; d += WG) { b_partial[grp * D + d] = dw_acc[d]; }
}
