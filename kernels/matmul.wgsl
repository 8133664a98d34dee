// Dense layers over rows (PyTorch's F.linear), forward and backward, f32, row-major:
//
//   matmul_forward          out (M, O) (+)= inp (M, I) · weight (O, I)ᵀ (+ bias (O))
//   matmul_backward_input   dinp (M, I) (+)= dout (M, O) · weight (O, I)
//   matmul_backward_weight  dweight (O, I) (+)= Σ_m dout[m, :]ᵀ inp[m, :]       (split-K over M)
//   bias_backward           dbias (O) (+)= Σ_m dout[m, :]                        (split over M)
//   sum_partials            sums (SUM_N) (+)= Σ_s partials[s, :]                 (second pass)
//
// Strides: the "input side" tensors (inp, dinp) have row stride LDI ≥ I and start at element
// INP_OFF of their binding; the "output side" tensors (out, dout) have row stride LDO ≥ O and
// start at OUT_OFF. So a caller can read a column slice of a wider tensor (dt_proj reads the first
// R of the R+2N columns of xdbl: LDI = R+2N) or every L-th row (the head reads the class token of
// each sample: LDI = L·D, INP_OFF = clsPos·D). weight (O, I) and the gradient outputs dweight,
// dbias and partials are contiguous. ACCUMULATE chooses out = value or out += value.
//
// Each matmul has two kernels: the 64×64-tile one described here and a 128×128-tile one (the *_128
// entry points at the end of the file, same bindings, overrides and split scheme) that the wrapper
// picks for large problems. The 64×64 tiling: a workgroup of 16×16 invocations computes a 64×64 tile of
// the result (TM × TN), each invocation a 4×4 register block at rows ty + 16r and columns
// tx + 16c (so neighbouring invocations store neighbouring columns), walking the reduction in
// steps of TK = 16 through two workgroup tiles As (TK × TM) and Bs (TK × TN). Loads are
// bounds-checked (zero-filled), so no size needs to be a multiple of a tile. Each load is
// coalesced along whichever dimension of its tensor is contiguous.
//   matmul_forward:         grid (⌈O/64⌉, ⌈M/64⌉)
//   matmul_backward_input:  grid (⌈I/64⌉, ⌈M/64⌉)
//   matmul_backward_weight: grid (⌈I/64⌉, ⌈O/64⌉, SPLITS); split s reduces rows
//     m ∈ [s·CHUNK, min(M, (s+1)·CHUNK)) and writes its own (O, I) slice s of the output
//     binding: with SPLITS = 1 that is dweight itself (ACCUMULATE as asked); with SPLITS > 1 it
//     is a partials buffer (SPLITS, O, I) (ACCUMULATE false) that sum_partials then adds up in
//     split order. No atomics, so the result is deterministic.
//   bias_backward:          workgroups of 64 columns × 4 row lanes, grid (⌈O/64⌉, SPLITS); the
//     same split/partials scheme, producing (SPLITS, O) partials or dbias directly.
//   sum_partials:           grid ⌈SUM_N/256⌉ of 256.

override M: u32;
override I: u32;
override O: u32;
override LDI: u32;
override LDO: u32;
override INP_OFF: u32 = 0u;
override OUT_OFF: u32 = 0u;
override HAS_BIAS: bool = false;
override ACCUMULATE: bool = false;
override SPLITS: u32 = 1u;
override CHUNK: u32 = 1u; // rows of M per split
override SUM_N: u32 = 1u; // elements summed by sum_partials

const TM: u32 = 64u; // result rows per workgroup
const TN: u32 = 64u; // result columns per workgroup
const TK: u32 = 16u; // reduction step
const SA: u32 = 65u; // row pitch of the workgroup tiles (TM or TN + 1 against bank conflicts)

// Bindings (one group; which names an entry point uses, in order):
//   matmul_forward(_128):         out, inp, weight, bias (bias: any read-only tensor when HAS_BIAS is false)
//   matmul_backward_input(_128):  dinp, dout, weight
//   matmul_backward_weight(_128): dweight (or partials), dout, saved_inp
//   bias_backward:          dbias (or partials), dout
//   sum_partials:           sums, partials
@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(0) var<storage, read_write> dinp: array<f32>;
@group(0) @binding(0) var<storage, read_write> dweight: array<f32>;
@group(0) @binding(0) var<storage, read_write> dbias: array<f32>;
@group(0) @binding(0) var<storage, read_write> sums: array<f32>;
@group(0) @binding(1) var<storage, read> inp: array<f32>;
@group(0) @binding(1) var<storage, read> dout: array<f32>;
@group(0) @binding(1) var<storage, read> partials: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(2) var<storage, read> saved_inp: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;

var<workgroup> As: array<f32, TK * SA>; // As[k][row]: the left operand, transposed
var<workgroup> Bs: array<f32, TK * SA>; // Bs[k][col]: the right operand
var<workgroup> red: array<f32, 256>; // bias_backward: 4 row lanes × 64 columns

var<private> acc: array<f32, 16>; // the invocation's 4×4 block, acc[4r + c]

fn clear_acc() {
  for (var j = 0u; j < 16u; j++) { acc[j] = 0.0; }
}

// One reduction step: acc[r][c] += Σ_k As[k][ty + 16r] · Bs[k][tx + 16c].
fn multiply_tiles(tx: u32, ty: u32) {
  for (var k = 0u; k < TK; k++) {
    var a: array<f32, 4>;
    var b: array<f32, 4>;
    for (var r = 0u; r < 4u; r++) { a[r] = As[k * SA + ty + 16u * r]; }
    for (var c = 0u; c < 4u; c++) { b[c] = Bs[k * SA + tx + 16u * c]; }
    for (var r = 0u; r < 4u; r++) {
      for (var c = 0u; c < 4u; c++) {
        acc[4u * r + c] = fma(a[r], b[c], acc[4u * r + c]);
      }
    }
  }
}

// ---- forward ----------------------------------------------------------------------------------

fn fwd_inp(m: u32, i: u32) -> f32 {
  if (m < M && i < I) { return inp[INP_OFF + m * LDI + i]; }
  return 0.0;
}

fn fwd_weight(o: u32, i: u32) -> f32 {
  if (o < O && i < I) { return weight[o * I + i]; }
  return 0.0;
}

@compute @workgroup_size(16, 16)
fn matmul_forward(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let tx = lid.x;
  let ty = lid.y;
  let t = ty * 16u + tx;
  let row0 = wg.y * TM; // rows m
  let col0 = wg.x * TN; // columns o
  clear_acc();
  for (var k0 = 0u; k0 < I; k0 += TK) {
    // Both operands are contiguous along i: 16 neighbouring invocations read 16 neighbouring i.
    let k = t % 16u;
    for (var j = 0u; j < 4u; j++) {
      let r = t / 16u + 16u * j;
      As[k * SA + r] = fwd_inp(row0 + r, k0 + k);
      Bs[k * SA + r] = fwd_weight(col0 + r, k0 + k);
    }
    workgroupBarrier();
    multiply_tiles(tx, ty);
    workgroupBarrier();
  }
  for (var r = 0u; r < 4u; r++) {
    let m = row0 + ty + 16u * r;
    if (m >= M) { continue; }
    for (var c = 0u; c < 4u; c++) {
      let o = col0 + tx + 16u * c;
      if (o >= O) { continue; }
      var v = acc[4u * r + c];
      if (HAS_BIAS) { v += bias[o]; }
      let idx = OUT_OFF + m * LDO + o;
      if (ACCUMULATE) { v += out[idx]; }
      out[idx] = v;
    }
  }
}

// ---- backward: input gradient -------------------------------------------------------------------

fn bwd_dout(m: u32, o: u32) -> f32 {
  if (m < M && o < O) { return dout[OUT_OFF + m * LDO + o]; }
  return 0.0;
}

fn bwd_weight(o: u32, i: u32) -> f32 {
  if (o < O && i < I) { return weight[o * I + i]; }
  return 0.0;
}

@compute @workgroup_size(16, 16)
fn matmul_backward_input(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let tx = lid.x;
  let ty = lid.y;
  let t = ty * 16u + tx;
  let row0 = wg.y * TM; // rows m
  let col0 = wg.x * TN; // columns i
  clear_acc();
  for (var k0 = 0u; k0 < O; k0 += TK) {
    // dout is contiguous along o (the reduction), weight along i (the result columns).
    let k = t % 16u;
    let n = t % 64u;
    for (var j = 0u; j < 4u; j++) {
      let r = t / 16u + 16u * j;
      As[k * SA + r] = bwd_dout(row0 + r, k0 + k);
      let kk = t / 64u + 4u * j;
      Bs[kk * SA + n] = bwd_weight(k0 + kk, col0 + n);
    }
    workgroupBarrier();
    multiply_tiles(tx, ty);
    workgroupBarrier();
  }
  for (var r = 0u; r < 4u; r++) {
    let m = row0 + ty + 16u * r;
    if (m >= M) { continue; }
    for (var c = 0u; c < 4u; c++) {
      let i = col0 + tx + 16u * c;
      if (i >= I) { continue; }
      var v = acc[4u * r + c];
      let idx = INP_OFF + m * LDI + i;
      if (ACCUMULATE) { v += dinp[idx]; }
      dinp[idx] = v;
    }
  }
}

// ---- backward: weight gradient (split-K over M) ----------------------------------------------------

fn bww_dout(m: u32, o: u32, m_end: u32) -> f32 {
  if (m < m_end && o < O) { return dout[OUT_OFF + m * LDO + o]; }
  return 0.0;
}

fn bww_inp(m: u32, i: u32, m_end: u32) -> f32 {
  if (m < m_end && i < I) { return saved_inp[INP_OFF + m * LDI + i]; }
  return 0.0;
}

@compute @workgroup_size(16, 16)
fn matmul_backward_weight(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let tx = lid.x;
  let ty = lid.y;
  let t = ty * 16u + tx;
  let row0 = wg.y * TM; // rows o
  let col0 = wg.x * TN; // columns i
  let m_begin = wg.z * CHUNK;
  let m_end = min(M, m_begin + CHUNK);
  clear_acc();
  for (var k0 = m_begin; k0 < m_end; k0 += TK) {
    // Both operands are contiguous along their result dimension (o, i), strided along m.
    let n = t % 64u;
    for (var j = 0u; j < 4u; j++) {
      let kk = t / 64u + 4u * j;
      As[kk * SA + n] = bww_dout(k0 + kk, row0 + n, m_end);
      Bs[kk * SA + n] = bww_inp(k0 + kk, col0 + n, m_end);
    }
    workgroupBarrier();
    multiply_tiles(tx, ty);
    workgroupBarrier();
  }
  let base = wg.z * O * I;
  for (var r = 0u; r < 4u; r++) {
    let o = row0 + ty + 16u * r;
    if (o >= O) { continue; }
    for (var c = 0u; c < 4u; c++) {
      let i = col0 + tx + 16u * c;
      if (i >= I) { continue; }
      var v = acc[4u * r + c];
      let idx = base + o * I + i;
      if (ACCUMULATE) { v += dweight[idx]; }
      dweight[idx] = v;
    }
  }
}

// ---- backward: bias gradient (column sums, split over M) ----------------------------------------

@compute @workgroup_size(64, 4)
fn bias_backward(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let o = wg.x * 64u + lid.x;
  let m_begin = wg.y * CHUNK;
  let m_end = min(M, m_begin + CHUNK);
  var s = 0.0;
  if (o < O) {
    for (var m = m_begin + lid.y; m < m_end; m += 4u) { s += dout[OUT_OFF + m * LDO + o]; }
  }
  red[lid.y * 64u + lid.x] = s;
  workgroupBarrier();
  if (lid.y == 0u && o < O) {
    var v = ((red[lid.x] + red[64u + lid.x]) + red[128u + lid.x]) + red[192u + lid.x];
    let idx = wg.y * O + o;
    if (ACCUMULATE) { v += dbias[idx]; }
    dbias[idx] = v;
  }
}

// ---- second pass: sum the per-split partials, in split order ------------------------------------

@compute @workgroup_size(256)
fn sum_partials(@builtin(global_invocation_id) gid: vec3u) {
  let n = gid.x;
  if (n >= SUM_N) { return; }
  var v = 0.0;
  for (var s = 0u; s < SPLITS; s++) { v += partials[s * SUM_N + n]; }
  if (ACCUMULATE) { v += sums[n]; }
  sums[n] = v;
}

// ---- 128×128 tiles (large problems) ------------------------------------------------------------
//
// The same three matmuls with a larger tile, for problems big enough to fill the GPU with it
// (the wrapper chooses by the result's size): a workgroup of 16×16 invocations computes a
// 128×128 tile, each invocation an 8×8 register block at rows {4·ty .. 4·ty+3, 64+4·ty .. 64+4·ty+3}
// and the same pattern of columns in tx (so neighbouring invocations store neighbouring groups of
// 4 columns). The reduction walks steps of BK = 16 through two workgroup tiles Av, Bv of
// BK × 32 vec4s (pitch BP = 33 vec4s): Av[k·BP + q] holds rows 4q .. 4q+3 of step k (transposed
// on store), so the inner loop reads 4 vec4s per k and does 64 FMAs (16 vec4 FMAs). The next
// step's operands are fetched from global memory into registers while the current step is
// multiplied. Loads are bounds-checked (zero-filled) as above; 2 × 16 × 33 × 16 B = 16.5 KiB of
// workgroup memory.
//   matmul_forward_128:         grid (⌈O/128⌉, ⌈M/128⌉)
//   matmul_backward_input_128:  grid (⌈I/128⌉, ⌈M/128⌉)
//   matmul_backward_weight_128: grid (⌈I/128⌉, ⌈O/128⌉, SPLITS), the split scheme above.

const BT: u32 = 128u; // result rows and columns per workgroup
const BK: u32 = 16u; // reduction step
const BP: u32 = 33u; // pitch of Av / Bv in vec4s (32 + 1: conflict-free transposed stores)

var<workgroup> Av: array<vec4<f32>, BK * BP>; // Av[k·BP + q]: left operand, rows 4q .. 4q+3
var<workgroup> Bv: array<vec4<f32>, BK * BP>; // Bv[k·BP + q]: right operand, columns 4q .. 4q+3

// One reduction step on an 8×8 block: acc[2·rb + h] holds row block rb (rows 4·ty + rb for
// rb < 4, 64 + 4·ty + rb − 4 after), columns 64·h + 4·tx .. 64·h + 4·tx + 3.
fn multiply_tiles_128(acc: ptr<function, array<vec4<f32>, 16>>, tx: u32, ty: u32) {
  for (var k = 0u; k < BK; k++) {
    let a0 = Av[k * BP + ty];
    let a1 = Av[k * BP + 16u + ty];
    let b0 = Bv[k * BP + tx];
    let b1 = Bv[k * BP + 16u + tx];
    for (var r = 0u; r < 4u; r++) {
      (*acc)[2u * r] = fma(vec4<f32>(a0[r]), b0, (*acc)[2u * r]);
      (*acc)[2u * r + 1u] = fma(vec4<f32>(a0[r]), b1, (*acc)[2u * r + 1u]);
      (*acc)[8u + 2u * r] = fma(vec4<f32>(a1[r]), b0, (*acc)[8u + 2u * r]);
      (*acc)[9u + 2u * r] = fma(vec4<f32>(a1[r]), b1, (*acc)[9u + 2u * r]);
    }
  }
}

// Row (or column) of the tile for row block rb (0..7) of invocation t16 (ty or tx).
fn block_row(rb: u32, t16: u32) -> u32 {
  return (rb / 4u) * 64u + 4u * t16 + rb % 4u;
}

@compute @workgroup_size(16, 16)
fn matmul_forward_128(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let tx = lid.x;
  let ty = lid.y;
  let t = ty * 16u + tx;
  let row0 = wg.y * BT; // rows m
  let col0 = wg.x * BT; // columns o
  var acc: array<vec4<f32>, 16>;
  // Both operands are contiguous along i (the reduction): invocation t loads step k = t % 16 of
  // rows 4q .. 4q+3 and 64 + 4q .. 64 + 4q + 3, q = t / 16 (16 neighbours read 16 neighbouring i).
  let lk = t % 16u;
  let lq = t / 16u;
  let ra = row0 + 4u * lq;
  let rb = col0 + 4u * lq;
  var a0: vec4<f32>;
  var a1: vec4<f32>;
  var b0: vec4<f32>;
  var b1: vec4<f32>;
  for (var k0 = 0u; k0 < I; k0 += BK) {
    if (k0 == 0u) {
      let k = lk;
      a0 = vec4<f32>(fwd_inp(ra, k), fwd_inp(ra + 1u, k), fwd_inp(ra + 2u, k), fwd_inp(ra + 3u, k));
      a1 = vec4<f32>(fwd_inp(ra + 64u, k), fwd_inp(ra + 65u, k), fwd_inp(ra + 66u, k), fwd_inp(ra + 67u, k));
      b0 = vec4<f32>(fwd_weight(rb, k), fwd_weight(rb + 1u, k), fwd_weight(rb + 2u, k), fwd_weight(rb + 3u, k));
      b1 = vec4<f32>(fwd_weight(rb + 64u, k), fwd_weight(rb + 65u, k), fwd_weight(rb + 66u, k), fwd_weight(rb + 67u, k));
    }
    Av[lk * BP + lq] = a0;
    Av[lk * BP + 16u + lq] = a1;
    Bv[lk * BP + lq] = b0;
    Bv[lk * BP + 16u + lq] = b1;
    workgroupBarrier();
    let kn = k0 + BK;
    if (kn < I) {
      let k = kn + lk;
      a0 = vec4<f32>(fwd_inp(ra, k), fwd_inp(ra + 1u, k), fwd_inp(ra + 2u, k), fwd_inp(ra + 3u, k));
      a1 = vec4<f32>(fwd_inp(ra + 64u, k), fwd_inp(ra + 65u, k), fwd_inp(ra + 66u, k), fwd_inp(ra + 67u, k));
      b0 = vec4<f32>(fwd_weight(rb, k), fwd_weight(rb + 1u, k), fwd_weight(rb + 2u, k), fwd_weight(rb + 3u, k));
      b1 = vec4<f32>(fwd_weight(rb + 64u, k), fwd_weight(rb + 65u, k), fwd_weight(rb + 66u, k), fwd_weight(rb + 67u, k));
    }
    multiply_tiles_128(&acc, tx, ty);
    workgroupBarrier();
  }
  for (var r = 0u; r < 8u; r++) {
    let m = row0 + block_row(r, ty);
    if (m >= M) { continue; }
    for (var h = 0u; h < 2u; h++) {
      let v4 = acc[2u * r + h];
      for (var c = 0u; c < 4u; c++) {
        let o = col0 + 64u * h + 4u * tx + c;
        if (o >= O) { continue; }
        var v = v4[c];
        if (HAS_BIAS) { v += bias[o]; }
        let idx = OUT_OFF + m * LDO + o;
        if (ACCUMULATE) { v += out[idx]; }
        out[idx] = v;
      }
    }
  }
}

@compute @workgroup_size(16, 16)
fn matmul_backward_input_128(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let tx = lid.x;
  let ty = lid.y;
  let t = ty * 16u + tx;
  let row0 = wg.y * BT; // rows m
  let col0 = wg.x * BT; // columns i
  var acc: array<vec4<f32>, 16>;
  // dout is contiguous along o (the reduction): step k = t % 16 of rows 4q .., q = t / 16.
  // weight is contiguous along i (the result columns): step k = t / 16 of columns 4q .., q = t % 16.
  let ak = t % 16u;
  let aq = t / 16u;
  let bk = t / 16u;
  let bq = t % 16u;
  let ra = row0 + 4u * aq;
  let cb = col0 + 4u * bq;
  var a0: vec4<f32>;
  var a1: vec4<f32>;
  var b0: vec4<f32>;
  var b1: vec4<f32>;
  for (var k0 = 0u; k0 < O; k0 += BK) {
    if (k0 == 0u) {
      let k = ak;
      a0 = vec4<f32>(bwd_dout(ra, k), bwd_dout(ra + 1u, k), bwd_dout(ra + 2u, k), bwd_dout(ra + 3u, k));
      a1 = vec4<f32>(bwd_dout(ra + 64u, k), bwd_dout(ra + 65u, k), bwd_dout(ra + 66u, k), bwd_dout(ra + 67u, k));
      let kb = bk;
      b0 = vec4<f32>(bwd_weight(kb, cb), bwd_weight(kb, cb + 1u), bwd_weight(kb, cb + 2u), bwd_weight(kb, cb + 3u));
      b1 = vec4<f32>(bwd_weight(kb, cb + 64u), bwd_weight(kb, cb + 65u), bwd_weight(kb, cb + 66u), bwd_weight(kb, cb + 67u));
    }
    Av[ak * BP + aq] = a0;
    Av[ak * BP + 16u + aq] = a1;
    Bv[bk * BP + bq] = b0;
    Bv[bk * BP + 16u + bq] = b1;
    workgroupBarrier();
    let kn = k0 + BK;
    if (kn < O) {
      let k = kn + ak;
      a0 = vec4<f32>(bwd_dout(ra, k), bwd_dout(ra + 1u, k), bwd_dout(ra + 2u, k), bwd_dout(ra + 3u, k));
      a1 = vec4<f32>(bwd_dout(ra + 64u, k), bwd_dout(ra + 65u, k), bwd_dout(ra + 66u, k), bwd_dout(ra + 67u, k));
      let kb = kn + bk;
      b0 = vec4<f32>(bwd_weight(kb, cb), bwd_weight(kb, cb + 1u), bwd_weight(kb, cb + 2u), bwd_weight(kb, cb + 3u));
      b1 = vec4<f32>(bwd_weight(kb, cb + 64u), bwd_weight(kb, cb + 65u), bwd_weight(kb, cb + 66u), bwd_weight(kb, cb + 67u));
    }
    multiply_tiles_128(&acc, tx, ty);
    workgroupBarrier();
  }
  for (var r = 0u; r < 8u; r++) {
    let m = row0 + block_row(r, ty);
    if (m >= M) { continue; }
    for (var h = 0u; h < 2u; h++) {
      let v4 = acc[2u * r + h];
      for (var c = 0u; c < 4u; c++) {
        let i = col0 + 64u * h + 4u * tx + c;
        if (i >= I) { continue; }
        var v = v4[c];
        let idx = INP_OFF + m * LDI + i;
        if (ACCUMULATE) { v += dinp[idx]; }
        dinp[idx] = v;
      }
    }
  }
}

@compute @workgroup_size(16, 16)
fn matmul_backward_weight_128(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let tx = lid.x;
  let ty = lid.y;
  let t = ty * 16u + tx;
  let row0 = wg.y * BT; // rows o
  let col0 = wg.x * BT; // columns i
  let m_begin = wg.z * CHUNK;
  let m_end = min(M, m_begin + CHUNK);
  var acc: array<vec4<f32>, 16>;
  // Both operands are contiguous along their result dimension (o, i), strided along m: step
  // k = t / 16 of rows / columns 4q .. 4q+3 and 64 + 4q .., q = t % 16.
  let lk = t / 16u;
  let lq = t % 16u;
  let ra = row0 + 4u * lq;
  let cb = col0 + 4u * lq;
  var a0: vec4<f32>;
  var a1: vec4<f32>;
  var b0: vec4<f32>;
  var b1: vec4<f32>;
  for (var k0 = m_begin; k0 < m_end; k0 += BK) {
    if (k0 == m_begin) {
      let k = k0 + lk;
      a0 = vec4<f32>(bww_dout(k, ra, m_end), bww_dout(k, ra + 1u, m_end), bww_dout(k, ra + 2u, m_end), bww_dout(k, ra + 3u, m_end));
      a1 = vec4<f32>(bww_dout(k, ra + 64u, m_end), bww_dout(k, ra + 65u, m_end), bww_dout(k, ra + 66u, m_end), bww_dout(k, ra + 67u, m_end));
      b0 = vec4<f32>(bww_inp(k, cb, m_end), bww_inp(k, cb + 1u, m_end), bww_inp(k, cb + 2u, m_end), bww_inp(k, cb + 3u, m_end));
      b1 = vec4<f32>(bww_inp(k, cb + 64u, m_end), bww_inp(k, cb + 65u, m_end), bww_inp(k, cb + 66u, m_end), bww_inp(k, cb + 67u, m_end));
    }
    Av[lk * BP + lq] = a0;
    Av[lk * BP + 16u + lq] = a1;
    Bv[lk * BP + lq] = b0;
    Bv[lk * BP + 16u + lq] = b1;
    workgroupBarrier();
    let kn = k0 + BK;
    if (kn < m_end) {
      let k = kn + lk;
      a0 = vec4<f32>(bww_dout(k, ra, m_end), bww_dout(k, ra + 1u, m_end), bww_dout(k, ra + 2u, m_end), bww_dout(k, ra + 3u, m_end));
      a1 = vec4<f32>(bww_dout(k, ra + 64u, m_end), bww_dout(k, ra + 65u, m_end), bww_dout(k, ra + 66u, m_end), bww_dout(k, ra + 67u, m_end));
      b0 = vec4<f32>(bww_inp(k, cb, m_end), bww_inp(k, cb + 1u, m_end), bww_inp(k, cb + 2u, m_end), bww_inp(k, cb + 3u, m_end));
      b1 = vec4<f32>(bww_inp(k, cb + 64u, m_end), bww_inp(k, cb + 65u, m_end), bww_inp(k, cb + 66u, m_end), bww_inp(k, cb + 67u, m_end));
    }
    multiply_tiles_128(&acc, tx, ty);
    workgroupBarrier();
  }
  let base = wg.z * O * I;
  for (var r = 0u; r < 8u; r++) {
    let o = row0 + block_row(r, ty);
    if (o >= O) { continue; }
    for (var h = 0u; h < 2u; h++) {
      let v4 = acc[2u * r + h];
      for (var c = 0u; c < 4u; c++) {
        let i = col0 + 64u * h + 4u * tx + c;
        if (i >= I) { continue; }
        var v = v4[c];
        let idx = base + o * I + i;
        if (ACCUMULATE) { v += dweight[idx]; }
        dweight[idx] = v;
      }
    }
  }
}
