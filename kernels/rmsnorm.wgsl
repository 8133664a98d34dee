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
// Geometry: the row sum is a tree reduction in workgroup memory (fixed order: deterministic).
//   forward:  one workgroup of 128 invocations per row, columns d = lid, lid + 128, …; ROWS
//             workgroups as (x, y) with k = wg.x + wg.y · nwg.x (residual_rmsnorm_forward_rows:
//             16 rows a workgroup of 256, for D a multiple of 4 up to 256).
//   backward: one workgroup of 256 invocations per ROWS_PER_GROUP consecutive rows,
//             G = ceil(ROWS / ROWS_PER_GROUP) workgroups as (x, y). The workgroup is SLOTS row slots
//             of 256 / SLOTS invocations (columns d = c, c + 256/SLOTS, …); slot q takes rows
//             k0 + q, k0 + q + SLOTS, …, so SLOTS rows share each tree reduction's barriers
//             (before: one row of 192 columns per 128-invocation workgroup, nine barriers a row).
//             Each slot keeps its dweight sums in workgroup memory (SLOTS · D); the slots are added
//             in order and written as row grp of partials (G, D), which reduce.wgsl's colsum_tree
//             adds into dweight (or the block's weight sums). For D a multiple of 4 up to 256,
//             residual_rmsnorm_backward_rows: 16 row slots of 16 invocations in vec4 columns, the
//             same groups and partials. vim-tiny (ROWS = 16,640, D = 192): 16 rows a group,
//             G = 1040 workgroups, 266,240 invocations, 3 vec4 columns each.

override D: u32;
override ROWS: u32;
override ROW_STRIDE: u32 = 1u;
override ROW_OFFSET: u32 = 0u;
override EPS: f32 = 1e-5;
override HAS_R_IN: bool = true;
override HAS_DR_NEXT: bool = true;
override ROWS_PER_GROUP: u32 = 1u;
override ACCUMULATE: bool = false;
override SLOTS: u32 = 4u;            // backward: rows in flight per workgroup, 1, 2 or 4
override DW_LEN: u32 = SLOTS * D;    // backward: workgroup memory for the slots' dweight sums

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

const BWG = 256u; // invocations of a backward workgroup and of the 16-row forms'
var<workgroup> slot_red: array<f32, BWG>; // [slot][c]

// Sum of v over the `width` invocations of slot q, c the invocation's place in it (every invocation
// of the slot gets the total; the BWG invocations of a workgroup are BWG / width slots). Call in
// uniform control flow.
fn slot_sum(v: f32, q: u32, c: u32, width: u32) -> f32 {
  let base = q * width;
  slot_red[base + c] = v;
  workgroupBarrier();
  for (var half = width / 2u; half > 0u; half >>= 1u) {
    if (c < half) { slot_red[base + c] += slot_red[base + c + half]; }
    workgroupBarrier();
  }
  let total = slot_red[base];
  workgroupBarrier(); // slot_red is reused by the next call
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

// residual_rmsnorm_forward_rows: the same for D a multiple of 4 up to 4 · FR_LANES · FR_VMAX (256):
// a workgroup of 256 invocations takes FR_ROWS = 16 rows, FR_LANES = 16 invocations a row, each
// with vec4 v = c, c + 16, … of it held in registers (r_out read back from nowhere), the row sum a
// 4-level tree that the 16 rows share. ceil(ROWS / 16) workgroups as (x, y).
@group(0) @binding(0) var<storage, read_write> f4_r_out: array<vec4<f32>>; // (ROWS, D / 4)
@group(0) @binding(1) var<storage, read_write> f4_out: array<vec4<f32>>;   // (ROWS, D / 4)
@group(0) @binding(3) var<storage, read> f4_h: array<vec4<f32>>;           // (BL, D / 4)
@group(0) @binding(4) var<storage, read> f4_weight: array<vec4<f32>>;      // (D / 4)
@group(0) @binding(5) var<storage, read> f4_r_in: array<vec4<f32>>;        // (BL, D / 4), read if HAS_R_IN

const FR_LANES = 16u;                   // invocations a row
const FR_ROWS = 16u;                    // rows a workgroup (FR_ROWS · FR_LANES = 256)
const FR_VMAX = 4u;                     // vec4s a row an invocation holds at most
const FR_VCOLS = FR_LANES * FR_VMAX;    // vec4s of the widest row (D = 256)

@compute @workgroup_size(BWG)
fn residual_rmsnorm_forward_rows(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u,
                                 @builtin(local_invocation_index) lid: u32) {
  let grp = wg.x + wg.y * nwg.x;
  let j = lid / FR_LANES;
  let c = lid - j * FR_LANES;
  let k = grp * FR_ROWS + j;
  let live = k < ROWS;
  let kk = min(k, ROWS - 1u); // idle slots read the last row, write nothing and join the trees
  let V = D / 4u;
  let src = (ROW_OFFSET + kk * ROW_STRIDE) * V;
  let dst = kk * V;
  var r: array<vec4<f32>, FR_VMAX>;
  var ss = 0.0;
  for (var i = 0u; i < FR_VMAX; i++) {
    let v = c + i * FR_LANES;
    if (v < V) {
      var x = f4_h[src + v];
      if (HAS_R_IN) { x += f4_r_in[src + v]; }
      r[i] = x;
      ss += dot(x, x);
    }
  }
  let s = 1.0 / sqrt(slot_sum(ss, j, c, FR_LANES) / f32(D) + EPS);
  if (live) {
    if (c == 0u) { f_rstd[k] = s; }
    for (var i = 0u; i < FR_VMAX; i++) {
      let v = c + i * FR_LANES;
      if (v < V) {
        f4_r_out[dst + v] = r[i];
        f4_out[dst + v] = r[i] * s * f4_weight[v];
      }
    }
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

var<workgroup> dw_acc: array<f32, DW_LEN>; // [slot][d]

@compute @workgroup_size(BWG)
fn residual_rmsnorm_backward(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u,
                             @builtin(local_invocation_index) lid: u32) {
  let grp = wg.x + wg.y * nwg.x;
  let k0 = grp * ROWS_PER_GROUP;
  if (k0 >= ROWS) { return; } // uniform across the workgroup
  let k1 = min(k0 + ROWS_PER_GROUP, ROWS);
  let width = BWG / SLOTS;
  let q = lid / width; // row slot
  let c = lid - q * width;
  let acc_base = q * D;
  for (var d = c; d < D; d += width) { dw_acc[acc_base + d] = 0.0; }
  let steps = (k1 - k0 + SLOTS - 1u) / SLOTS; // uniform: every slot takes part in every tree
  for (var i = 0u; i < steps; i++) {
    let k = k0 + i * SLOTS + q;
    let live = k < k1;
    let row = k * D;
    var s = 0.0;
    var gr = 0.0;
    if (live) {
      s = b_rstd[k];
      for (var d = c; d < D; d += width) {
        let g = b_dout[row + d];
        let r = b_r[row + d];
        gr += g * b_weight[d] * r;
        dw_acc[acc_base + d] += g * r * s; // only this invocation touches (q, d)
      }
    }
    let cc = s * s * slot_sum(gr, q, c, width) / f32(D);
    if (live) {
      let sel = (ROW_OFFSET + k * ROW_STRIDE) * D;
      for (var d = c; d < D; d += width) {
        var v = s * (b_dout[row + d] * b_weight[d] - b_r[row + d] * cc);
        if (HAS_DR_NEXT) { v += b_dr_next[sel + d]; }
        if (ACCUMULATE) { b_dr[sel + d] += v; } else { b_dr[sel + d] = v; }
      }
    }
  }
  workgroupBarrier();
  for (var d = lid; d < D; d += BWG) {
    var t = dw_acc[d];
    for (var j = 1u; j < SLOTS; j++) { t += dw_acc[j * D + d]; }
    b_partial[grp * D + d] = t;
  }
}

// residual_rmsnorm_backward_rows: the same for D a multiple of 4 up to 256 (as the forward's rows
// form): 16 row slots of 16 invocations, each invocation vec4 v = c, c + 16, … of its row in
// registers (dout and r read once), the row sum Σ g·r a 4-level tree the 16 rows share; slot j
// takes rows k0 + j, k0 + j + 16, … of the group's ROWS_PER_GROUP, each invocation keeps its
// columns' dweight sums over its rows in registers, and the slots' sums are added in slot order
// into row grp of the partials (the same (G, D) as the slots form).
@group(0) @binding(0) var<storage, read_write> b4_dr: array<vec4<f32>>;      // (BL, D / 4)
@group(0) @binding(1) var<storage, read_write> b4_partial: array<vec4<f32>>; // (G, D / 4)
@group(0) @binding(2) var<storage, read> b4_dout: array<vec4<f32>>;          // (ROWS, D / 4)
@group(0) @binding(3) var<storage, read> b4_r: array<vec4<f32>>;             // (ROWS, D / 4)
@group(0) @binding(5) var<storage, read> b4_weight: array<vec4<f32>>;        // (D / 4)
@group(0) @binding(6) var<storage, read> b4_dr_next: array<vec4<f32>>;       // (BL, D / 4), read if HAS_DR_NEXT
var<workgroup> br_dw: array<vec4<f32>, FR_ROWS * FR_VCOLS>; // [row slot][vec4 column]

@compute @workgroup_size(BWG)
fn residual_rmsnorm_backward_rows(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u,
                                  @builtin(local_invocation_index) lid: u32) {
  let grp = wg.x + wg.y * nwg.x;
  let k0 = grp * ROWS_PER_GROUP;
  if (k0 >= ROWS) { return; } // uniform across the workgroup
  let k1 = min(k0 + ROWS_PER_GROUP, ROWS);
  let j = lid / FR_LANES;
  let c = lid - j * FR_LANES;
  let V = D / 4u;
  var w: array<vec4<f32>, FR_VMAX>;
  var dw: array<vec4<f32>, FR_VMAX>;
  for (var i = 0u; i < FR_VMAX; i++) {
    let v = c + i * FR_LANES;
    if (v < V) { w[i] = b4_weight[v]; }
    dw[i] = vec4<f32>(0.0);
  }
  let steps = (k1 - k0 + FR_ROWS - 1u) / FR_ROWS; // uniform: every slot takes part in every tree
  for (var step = 0u; step < steps; step++) {
    let k = k0 + step * FR_ROWS + j;
    let live = k < k1;
    let kk = min(k, k1 - 1u); // idle slots read the group's last row, write nothing and join the trees
    let row = kk * V;
    let s = b_rstd[kk];
    var g: array<vec4<f32>, FR_VMAX>;
    var r: array<vec4<f32>, FR_VMAX>;
    var gr = 0.0;
    for (var i = 0u; i < FR_VMAX; i++) {
      let v = c + i * FR_LANES;
      if (v < V) {
        g[i] = b4_dout[row + v];
        r[i] = b4_r[row + v];
        gr += dot(g[i] * w[i], r[i]);
        if (live) { dw[i] += g[i] * r[i] * s; }
      }
    }
    let cc = s * s * slot_sum(gr, j, c, FR_LANES) / f32(D);
    if (live) {
      let sel = (ROW_OFFSET + k * ROW_STRIDE) * V;
      for (var i = 0u; i < FR_VMAX; i++) {
        let v = c + i * FR_LANES;
        if (v < V) {
          var x = s * (g[i] * w[i] - r[i] * cc);
          if (HAS_DR_NEXT) { x += b4_dr_next[sel + v]; }
          if (ACCUMULATE) { b4_dr[sel + v] += x; } else { b4_dr[sel + v] = x; }
        }
      }
    }
  }
  for (var i = 0u; i < FR_VMAX; i++) {
    let v = c + i * FR_LANES;
    if (v < V) { br_dw[j * FR_VCOLS + v] = dw[i]; }
  }
  workgroupBarrier();
  for (var v = lid; v < V; v += BWG) {
    var t = br_dw[v];
    for (var q = 1u; q < FR_ROWS; q++) { t += br_dw[q * FR_VCOLS + v]; }
    b4_partial[grp * V + v] = t;
  }
}
