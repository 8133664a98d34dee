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
// The three matmuls share one tiling: a workgroup of 16×16 invocations computes a 64×64 tile of
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
//   matmul_forward:         out, inp, weight, bias (bias: any read-only tensor when HAS_BIAS is false)
//   matmul_backward_input:  dinp, dout, weight
//   matmul_backward_weight: dweight (or partials), dout, saved_inp
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
