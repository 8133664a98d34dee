// matmul_backward_input_rows: dinp (M, I) (+)= dout (M, O) · weight (O, I) for results of at most
// 16 columns (dt_proj's input gradient: I = R, O = E, M = B·L), each row's reduction over O taken
// by the SG lanes of one subgroup. The host adds `enable subgroups;` (it builds this kernel only
// where the adapter has subgroups of one fixed size, SG).
//
// Where the time goes is reading dout (M·O floats): the kernel is built to keep many of those reads
// in flight, and to hold everything else in registers (no array indexed in a loop, which a driver
// may keep in local memory). Geometry: a workgroup of NSG subgroups covers NSG · 4 · RIT rows;
// subgroup w takes RIT batches of 4 rows, one batch at a time. Lane s of a subgroup reads the vec4s
// p = s + SG·j (j < JQ, OQ = O/4 a row) of each of the batch's rows, d_r, and for each adds
//   acc_q += Wt_q(p) · Dt,  Dt = mat4x4(d_0, d_1, d_2, d_3) (column r: row r's four o = 4p + c),
//                           Wt_q(p) column c = weight[4p + c, 4q .. 4q+3],
// so acc_q (q < NQ = ⌈I/4⌉) holds in column r the lane's partial sums of row r, columns 4q .. 4q+3:
// 64 FMAs a matrix product, Wt_q(p) read from workgroup memory (4 vec4s for 64 FMAs).
//   grid (1, ⌈M / (4·NSG·RIT)⌉, Z): Z problems of one shape, problem z = wg.z's dinp, dout and
//   weight z · Z_INP, z · Z_OUT (Z_OUT a multiple of 4) and z · Z_W elements after problem 0's.
//   vim-tiny at batch 256 (M = 16 640, I = 12, O = 384), NSG = 8, RIT = 2: 260 workgroups of 256
//   invocations a problem, each lane 3 vec4s of each of 4 rows.
//
// weight is staged once a workgroup, transposed: Ws[(c·NQ + q)·OQ + p] = weight[4p + c, 4q .. 4q+3]
// (zero past I), so the lanes of a subgroup read SG neighbouring vec4s. (16 · NQ · O bytes: 18 KiB
// for dt_proj.)
//
// The subgroup's sums by halving: at lane bit m a lane keeps half of its items, the half its bit m
// selects, and adds the other lane's partial of them (shuffle with lane ⊕ m). Four halvings, at
// bits SG/2, SG/4, SG/8, SG/16 where the subgroup has them: rows (2, 3 against 0, 1), then rows (1
// against 0), then components (z, w against x, y), then (y against x); a lane then holds, for each
// q, one sum: row rb + 0, column 4q + cb, rb and cb from its bits. The lanes' bits below SG/16 are
// added without halving (every lane of such a pair ends with the sums), and the lanes whose bits
// there are 0 store. Shuffles a batch at I = 12 on 32 lanes: 24 + 12 + 6 + 3, then 3: 48 for 48
// sums. With fewer lanes a lane ends with more: on 8 lanes rows and components are halved once
// each, rows rb, rb + 1 and components cb, cb + 1 of each q stored by each lane.
// No atomics: the same bits run after run.

override M: u32;
override I: u32;
override O: u32;               // a multiple of 4 (dout is read as vec4s)
override LDI: u32;
override LDO: u32;             // a multiple of 4
override INP_OFF: u32 = 0u;
override OUT_OFF: u32 = 0u;    // a multiple of 4
override ACCUMULATE: bool = false;
override Z_INP: u32 = 0u;      // elements between problems in dinp
override Z_OUT: u32 = 0u;      // in dout (a multiple of 4)
override Z_W: u32 = 0u;        // in weight
override SG: u32 = 32u;        // lanes of a subgroup (a power of two)
override NSG: u32 = 8u;        // subgroups a workgroup
override RIT: u32 = 2u;        // batches of 4 rows a subgroup takes
override NQ: u32 = (I + 3u) / 4u;        // vec4s of a result row (≤ 4)
override OQ: u32 = O / 4u;               // vec4s of a dout row
override JQ: u32 = (OQ + SG - 1u) / SG;  // vec4s of a row a lane reads
// what a lane holds after the halvings that SG's bits allow (see above): NR rows, NC components of each q
override NR: u32 = select(select(4u, 2u, SG >= 2u), 1u, SG >= 4u);
override NC: u32 = select(select(4u, 2u, SG >= 8u), 1u, SG >= 16u);

@group(0) @binding(0) var<storage, read_write> dinp: array<f32>;
@group(0) @binding(1) var<storage, read> dout4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;

var<workgroup> Ws: array<vec4<f32>, 4 * NQ * OQ>;

// Wt_q(p): column c = weight[4p + c, 4q .. 4q+3]
fn wt(q: u32, p: u32) -> mat4x4<f32> {
  return mat4x4<f32>(Ws[q * OQ + p], Ws[(NQ + q) * OQ + p], Ws[(2u * NQ + q) * OQ + p], Ws[(3u * NQ + q) * OQ + p]);
}

// Halvings of the rows (columns of a): keep rows 2, 3 (hi) or 0, 1 into 0, 1; keep row 1 (hi) or 0 into 0.
fn halve_rows2(a: mat4x4<f32>, m: u32, hi: bool) -> mat4x4<f32> {
  var o = a;
  o[0] = select(a[0], a[2], hi) + subgroupShuffleXor(select(a[2], a[0], hi), m);
  o[1] = select(a[1], a[3], hi) + subgroupShuffleXor(select(a[3], a[1], hi), m);
  return o;
}
fn halve_rows1(a: mat4x4<f32>, m: u32, hi: bool) -> mat4x4<f32> {
  var o = a;
  o[0] = select(a[0], a[1], hi) + subgroupShuffleXor(select(a[1], a[0], hi), m);
  return o;
}
// Halvings of the components of each held row: keep z, w (hi) or x, y into x, y; keep y (hi) or x into x.
fn halve_comp2(a: mat4x4<f32>, m: u32, hi: bool) -> mat4x4<f32> {
  var o = a;
  for (var r = 0u; r < NR; r++) {
    let v = a[r];
    let k = select(v.xy, v.zw, hi) + subgroupShuffleXor(select(v.zw, v.xy, hi), m);
    o[r] = vec4<f32>(k, v.zw);
  }
  return o;
}
fn halve_comp1(a: mat4x4<f32>, m: u32, hi: bool) -> mat4x4<f32> {
  var o = a;
  for (var r = 0u; r < NR; r++) {
    let v = a[r];
    o[r].x = select(v.x, v.y, hi) + subgroupShuffleXor(select(v.y, v.x, hi), m);
  }
  return o;
}
fn butterfly(a: mat4x4<f32>, m: u32) -> mat4x4<f32> {
  var o = a;
  for (var r = 0u; r < NR; r++) {
    for (var c = 0u; c < NC; c++) { o[r][c] = a[r][c] + subgroupShuffleXor(a[r][c], m); }
  }
  return o;
}

// acc_q's four halvings and the butterflies (see above), for the lane's bits
fn lane_sums(a: mat4x4<f32>, s: u32) -> mat4x4<f32> {
  var o = a;
  if (SG >= 2u) { o = halve_rows2(o, SG / 2u, (s & (SG / 2u)) != 0u); }
  if (SG >= 4u) { o = halve_rows1(o, SG / 4u, (s & (SG / 4u)) != 0u); }
  if (SG >= 8u) { o = halve_comp2(o, SG / 8u, (s & (SG / 8u)) != 0u); }
  if (SG >= 16u) { o = halve_comp1(o, SG / 16u, (s & (SG / 16u)) != 0u); }
  for (var m = SG / 32u; m >= 1u; m /= 2u) { o = butterfly(o, m); }
  return o;
}

@compute @workgroup_size(SG * NSG)
fn matmul_backward_input_rows(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) t: u32) {
  let s = t % SG; // lane
  let w = t / SG; // subgroup
  // weight, transposed (see above); neighbouring invocations fill neighbouring vec4s
  for (var k = t; k < 4u * NQ * OQ; k += SG * NSG) {
    let p = k % OQ;
    let cq = k / OQ;
    let q = cq % NQ;
    let o = 4u * p + cq / NQ;
    var v = vec4<f32>(0.0);
    for (var e = 0u; e < 4u; e++) {
      if (4u * q + e < I) { v[e] = weight[wg.z * Z_W + o * I + 4u * q + e]; }
    }
    Ws[k] = v;
  }
  workgroupBarrier();

  let out0 = OUT_OFF + wg.z * Z_OUT; // this problem's dout
  for (var it = 0u; it < RIT; it++) {
    let row0 = ((wg.y * RIT + it) * NSG + w) * 4u; // neighbouring subgroups, neighbouring batches
    // rows past M are clamped to the last (their sums are never stored)
    let b0 = (out0 + min(row0, M - 1u) * LDO) / 4u;
    let b1 = (out0 + min(row0 + 1u, M - 1u) * LDO) / 4u;
    let b2 = (out0 + min(row0 + 2u, M - 1u) * LDO) / 4u;
    let b3 = (out0 + min(row0 + 3u, M - 1u) * LDO) / 4u;
    var a0 = mat4x4<f32>(); // acc_q
    var a1 = mat4x4<f32>();
    var a2 = mat4x4<f32>();
    var a3 = mat4x4<f32>();
    for (var j = 0u; j < JQ; j++) {
      let p = s + SG * j;
      let pc = min(p, OQ - 1u);
      let live = p < OQ; // past OQ the lane adds zeros
      let z = vec4<f32>(0.0);
      let dt = mat4x4<f32>(select(z, dout4[b0 + pc], live), select(z, dout4[b1 + pc], live),
                           select(z, dout4[b2 + pc], live), select(z, dout4[b3 + pc], live));
      a0 += wt(0u, pc) * dt;
      if (NQ > 1u) { a1 += wt(1u, pc) * dt; }
      if (NQ > 2u) { a2 += wt(2u, pc) * dt; }
      if (NQ > 3u) { a3 += wt(3u, pc) * dt; }
    }
    a0 = lane_sums(a0, s);
    if (NQ > 1u) { a1 = lane_sums(a1, s); }
    if (NQ > 2u) { a2 = lane_sums(a2, s); }
    if (NQ > 3u) { a3 = lane_sums(a3, s); }
    // what the lane holds: rows rb .. rb + NR − 1, components cb .. cb + NC − 1 of each q
    var rb = 0u;
    if (SG >= 2u && (s & (SG / 2u)) != 0u) { rb += 2u; }
    if (SG >= 4u && (s & (SG / 4u)) != 0u) { rb += 1u; }
    var cb = 0u;
    if (SG >= 8u && (s & (SG / 8u)) != 0u) { cb += 2u; }
    if (SG >= 16u && (s & (SG / 16u)) != 0u) { cb += 1u; }
    let dupMask = select(0u, SG / 16u - 1u, SG >= 32u); // the bits added without halving
    if ((s & dupMask) == 0u) {
      for (var q = 0u; q < NQ; q++) {
        var a = a0;
        if (q == 1u) { a = a1; } else if (q == 2u) { a = a2; } else if (q == 3u) { a = a3; }
        for (var r = 0u; r < NR; r++) {
          for (var c = 0u; c < NC; c++) {
            let row = row0 + rb + r;
            let i = 4u * q + cb + c;
            if (i < I && row < M) {
              let idx = INP_OFF + wg.z * Z_INP + row * LDI + i;
              var v = a[r][c];
              if (ACCUMULATE) { v += dinp[idx]; }
              dinp[idx] = v;
            }
          }
        }
      }
    }
  }
}
