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
// Each matmul has three kernels: the 64×64-tile one described here, a 128×128-tile one (the *_128
// entry points further down, same bindings, overrides and split scheme) that the wrapper picks for
// large problems, and a parametrised one (the *_g entry points after them: tile, register block,
// reduction step, vec4 loads and double buffering as override constants, vec4 result stores) for
// the tuned choices of src/gpu/ops/matmul.ts. The input gradient has a fourth for results of at
// most 16 columns (matmul_backward_input_narrow, last in the file: the reduction over O split
// across the invocations of a workgroup, weight staged in workgroup memory, the same bindings as
// matmul_backward_input), and a layer with at most 64 outputs (x_proj's) a fifth for its forward
// and its input gradient (matmul_forward_skinny and matmul_backward_input_skinny, last: blocks of
// rows of inp or dout and chunks of weight staged in workgroup memory by coalesced loads; the
// forward binds out, bias, inp4, weight4, the input gradient dinp4, dout, weight4_bi). The narrow
// input gradients have one more kernel in matmul-rows.wgsl (it needs subgroups).
// The 64×64 tiling: a workgroup of 16×16 invocations computes a 64×64 tile of the result (TM × TN),
// each invocation a 4×4 register block at rows ty + 16r and columns tx + 16c (so neighbouring
// invocations store neighbouring columns), walking the reduction in steps of TK = 16 through two
// workgroup tiles As (TK × TM) and Bs (TK × TN). Loads are bounds-checked (zero-filled), so no size
// needs to be a multiple of a tile. Each load is coalesced along whichever dimension of its tensor
// is contiguous.
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

// Batches (every matmul kernel but the skinny ones): several problems of one shape in one dispatch,
// problem z's operands z · Z_INP elements further in inp / dinp / saved_inp, z · Z_OUT in out /
// dout, z · Z_W in weight (forward, input gradient) or in the result (weight gradient: its
// partials or dweight); z = wg.z (forward, input gradient: the grid's third dimension) or
// wg.z / SPLITS (weight gradient, whose split is then wg.z % SPLITS). Strides of operands read or
// stored as vec4s are multiples of 4. One problem (all three 0) is what the kernels always did.
override Z_INP: u32 = 0u;
override Z_OUT: u32 = 0u;
override Z_W: u32 = 0u;
var<private> z_inp: u32; // this workgroup's problem's offsets: z · Z_INP, z · Z_OUT, z · Z_W
var<private> z_out: u32;
var<private> z_w: u32;

fn set_problem(z: u32) {
  z_inp = z * Z_INP;
  z_out = z * Z_OUT;
  z_w = z * Z_W;
}

const TM: u32 = 64u; // result rows per workgroup
const TN: u32 = 64u; // result columns per workgroup
const TK: u32 = 16u; // reduction step
const SA: u32 = 65u; // row pitch of the workgroup tiles (TM or TN + 1 against bank conflicts)

// Bindings (one group; which names an entry point uses, in order):
//   matmul_forward(_128):         out, inp, weight, bias (bias: any read-only tensor when HAS_BIAS is false)
//   matmul_backward_input(_128, _narrow): dinp, dout, weight
//   matmul_backward_weight(_128): dweight (or partials), dout, saved_inp
//   bias_backward:          dbias (or partials), dout
//   sum_partials, sum_partials_lanes: sums, partials (sum_partials4: sums4, partials4)
//   sum_partials_multi:     sums, partials, sum_table
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
@group(0) @binding(2) var<storage, read> sum_table: array<u32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;

var<workgroup> As: array<f32, TK * SA>; // As[k][row]: the left operand, transposed
var<workgroup> Bs: array<f32, TK * SA>; // Bs[k][col]: the right operand
var<workgroup> red: array<f32, 256>; // bias_backward: 4 row lanes × 64 columns; sum_partials_lanes: 8 × 32

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
  if (m < M && i < I) { return inp[INP_OFF + z_inp + m * LDI + i]; }
  return 0.0;
}

fn fwd_weight(o: u32, i: u32) -> f32 {
  if (o < O && i < I) { return weight[z_w + o * I + i]; }
  return 0.0;
}

@compute @workgroup_size(16, 16)
fn matmul_forward(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  set_problem(wg.z);
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
      let idx = OUT_OFF + z_out + m * LDO + o;
      if (ACCUMULATE) { v += out[idx]; }
      out[idx] = v;
    }
  }
}

// ---- backward: input gradient -------------------------------------------------------------------

fn bwd_dout(m: u32, o: u32) -> f32 {
  if (m < M && o < O) { return dout[OUT_OFF + z_out + m * LDO + o]; }
  return 0.0;
}

fn bwd_weight(o: u32, i: u32) -> f32 {
  if (o < O && i < I) { return weight[z_w + o * I + i]; }
  return 0.0;
}

@compute @workgroup_size(16, 16)
fn matmul_backward_input(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  set_problem(wg.z);
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
      let idx = INP_OFF + z_inp + m * LDI + i;
      if (ACCUMULATE) { v += dinp[idx]; }
      dinp[idx] = v;
    }
  }
}

// ---- backward: weight gradient (split-K over M) ----------------------------------------------------

fn bww_dout(m: u32, o: u32, m_end: u32) -> f32 {
  if (m < m_end && o < O) { return dout[OUT_OFF + z_out + m * LDO + o]; }
  return 0.0;
}

fn bww_inp(m: u32, i: u32, m_end: u32) -> f32 {
  if (m < m_end && i < I) { return saved_inp[INP_OFF + z_inp + m * LDI + i]; }
  return 0.0;
}

@compute @workgroup_size(16, 16)
fn matmul_backward_weight(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let tx = lid.x;
  let ty = lid.y;
  let t = ty * 16u + tx;
  let row0 = wg.y * TM; // rows o
  let col0 = wg.x * TN; // columns i
  set_problem(wg.z / SPLITS);
  let split = wg.z % SPLITS;
  let m_begin = split * CHUNK;
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
  let base = z_w + split * O * I;
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
  sum_split(0u, 0u, SUM_N, SPLITS, SUM_N, gid.x, ACCUMULATE);
}

// Element i < n of a split sum: sums[dst + i] (+)= Σ_s partials[src + s·stride + i], s in order
// (stride n where the splits' partials lie back to back).
fn sum_split(dst: u32, src: u32, n: u32, S: u32, stride: u32, i: u32, accumulate: bool) {
  if (i >= n) { return; }
  var v = 0.0;
  for (var s = 0u; s < S; s++) { v += partials[src + s * stride + i]; }
  if (accumulate) { v += sums[dst + i]; }
  sums[dst + i] = v;
}

// The same for the 32 elements i0 … i0 + 31 (those below n) by a workgroup of 256 invocations, 8
// lanes an element: invocation lid takes element i0 + lid % 32 and lane lid / 32, which sums splits
// lane, lane + 8, … in order; then lane 0 adds the lanes in order. Call in uniform control flow.
fn sum_split_lanes(dst: u32, src: u32, n: u32, S: u32, stride: u32, i0: u32, lid: u32, accumulate: bool) {
  let x = lid % 32u;
  let y = lid / 32u;
  let i = i0 + x;
  var v = 0.0;
  if (i < n) {
    for (var s = y; s < S; s += 8u) { v += partials[src + s * stride + i]; }
  }
  red[lid] = v;
  workgroupBarrier();
  if (y == 0u && i < n) {
    var t = red[x];
    for (var l = 1u; l < 8u; l++) { t += red[l * 32u + x]; }
    if (accumulate) { t += sums[dst + i]; }
    sums[dst + i] = t;
  }
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
  set_problem(wg.z);
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
        let idx = OUT_OFF + z_out + m * LDO + o;
        if (ACCUMULATE) { v += out[idx]; }
        out[idx] = v;
      }
    }
  }
}

@compute @workgroup_size(16, 16)
fn matmul_backward_input_128(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  set_problem(wg.z);
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
        let idx = INP_OFF + z_inp + m * LDI + i;
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
  set_problem(wg.z / SPLITS);
  let split = wg.z % SPLITS;
  let m_begin = split * CHUNK;
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
  let base = z_w + split * O * I;
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

// ---- parametrised tiles (the *_g entry points) --------------------------------------------------
//
// The same three matmuls with the tile, register block, reduction step, load width and buffering
// as override constants, so the wrapper (and scripts/bench/matmul.mjs) can fit them to a problem:
// thin tiles for 12- and 44-wide results, 128×64 for 192-wide ones, short steps for a reduction
// of 12. A workgroup of WX × WY invocations computes a GTM × GTN tile (GTM = 4·HM·WY rows,
// GTN = 4·HN·WX columns); each invocation a (4·HM) × (4·HN) register block: rows
// g·4·WY + 4·ty + (0..3) for g < HM and columns h·4·WX + 4·tx + (0..3) for h < HN, so that
// neighbouring invocations read neighbouring vec4s of the workgroup tiles and store neighbouring
// vec4s of the result. The reduction walks steps of GK (a multiple of 4) through Ag (GK rows of
// GTM/4 vec4s, pitch GPA) and Bg (GK × GTN/4, pitch GPB): each k reads HM + HN vec4s and does
// 16·HM·HN FMAs. The next step's operands are fetched into registers (at most 8 vec4s per
// operand and invocation) while the current one is multiplied; with DB the workgroup tiles are
// doubled, so a step needs one barrier instead of two.
//
// Loads. An operand contiguous along the reduction (KC: inp and weight forward, dout for the input
// gradient) is read as items of 4 rows × 1 k (four scalar loads, neighbouring invocations on
// neighbouring k, one vec4 store to the tile) or, with VA / VB, of 1 row × 4 k (one vec4 load,
// four scalar stores). An operand contiguous along the tile's rows or columns (RC: weight for the
// input gradient, both operands of the weight gradient) as 4 neighbouring elements of one k (four
// scalar loads or, with VA / VB, one vec4 load), stored as one vec4. vec4 loads need the contiguous
// dimension, the row stride and the offset to be multiples of 4; the wrapper checks, and binds the
// operand both as f32s (bindings 1, 2) and as vec4s (the last two bindings).
// Edges. Rows and columns past the result's are clamped to its last one (the sums they feed are
// never stored); reduction indices past the end read zero. XR / XC / XK say that the result's
// rows / columns are a multiple of the tile's and the reduction (within every split) of GK, and
// drop those checks. Results are stored as vec4s: the result's columns, row stride and offset must
// be multiples of 4.
//   matmul_forward_g:         grid (⌈O/GTN⌉, ⌈M/GTM⌉, Z), Z problems (the batches at the top)
//   matmul_backward_input_g:  grid (⌈I/GTN⌉, ⌈M/GTM⌉, Z)
//   matmul_backward_weight_g: grid (⌈I/GTN⌉, ⌈O/GTM⌉, SPLITS · Z), the split scheme above, each
//                             problem's splits at Z_W elements from the previous one's.
//   sum_partials4:            sum_partials on vec4s (SUM_N a multiple of 4), grid ⌈SUM_N/1024⌉ of 256;
//                             the same additions in the same order, so the same bits.
//   sum_partials_lanes:       8 invocations per element (workgroups of 32 elements × 8 lanes, grid
//                             ⌈SUM_N/32⌉): lane l adds splits l, l + 8, …, then the 8 lane sums are
//                             added in lane order. Deterministic (a fixed order, not the serial
//                             one), with 8× the invocations and an eighth of each one's dependent
//                             loads: for small results split many ways.

override WX: u32 = 16u; // invocations along the tile's columns
override WY: u32 = 16u; // invocations along the tile's rows
override HM: u32 = 2u; // row groups of 4 per invocation (1 or 2)
override HN: u32 = 2u; // column groups of 4 per invocation (1 or 2)
override GK: u32 = 16u; // reduction step, a multiple of 4
override VA: bool = false; // vec4 global loads of the left operand (A: the tile's rows)
override VB: bool = false; // vec4 global loads of the right operand (B: the tile's columns)
override DB: bool = false; // double-buffered workgroup tiles
override XR: bool = false; // result rows a multiple of GTM
override XC: bool = false; // result columns a multiple of GTN
override XK: bool = false; // reduction (per split) a multiple of GK

override GTM: u32 = 4u * HM * WY; // tile rows
override GTN: u32 = 4u * HN * WX; // tile columns
override GPA: u32 = HM * WY + 1u; // pitch of Ag in vec4s (GTM/4 + 1)
override GPB: u32 = HN * WX + 1u; // pitch of Bg in vec4s
override GNT: u32 = WX * WY; // invocations
override GNA: u32 = GTM * GK / 4u; // vec4 items of A per step
override GNB: u32 = GTN * GK / 4u; // vec4 items of B per step
override GIA: u32 = (GNA + GNT - 1u) / GNT; // items of A per invocation (≤ 8)
override GIB: u32 = (GNB + GNT - 1u) / GNT; // items of B per invocation (≤ 8)
override GSA: u32 = GK * GPA; // one stage of Ag
override GSB: u32 = GK * GPB; // one stage of Bg
override GSTAGES: u32 = select(1u, 2u, DB);

@group(0) @binding(0) var<storage, read_write> out4: array<vec4<f32>>;
@group(0) @binding(0) var<storage, read_write> dinp4: array<vec4<f32>>;
@group(0) @binding(0) var<storage, read_write> dweight4: array<vec4<f32>>;
@group(0) @binding(0) var<storage, read_write> sums4: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> partials4: array<vec4<f32>>;
// matmul_forward_g:         out4, inp, weight, bias, inp4, weight4 (matmul_forward_skinny: out, -, -, bias, inp4, weight4)
// matmul_backward_input_g:  dinp4, dout, weight, dout4, weight4 (matmul_backward_input_skinny: dinp4, dout, -, -, weight4_bi)
// matmul_backward_weight_g: dweight4 (or partials), dout, saved_inp, dout4, saved_inp4
@group(0) @binding(3) var<storage, read> dout4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> inp4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> weight4_bi: array<vec4<f32>>; // weight as vec4s, input gradient
@group(0) @binding(4) var<storage, read> saved_inp4: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> weight4: array<vec4<f32>>; // weight as vec4s, forward

var<workgroup> Ag: array<vec4<f32>, GSTAGES * GSA>; // Ag[stage + k·GPA + q]: rows 4q .. 4q+3 of step k
var<workgroup> Bg: array<vec4<f32>, GSTAGES * GSB>; // Bg[stage + k·GPB + q]: columns 4q .. 4q+3

/** r, or the last valid index n − 1 when r is past it (unless the dimension is exact). */
fn clamp_g(r: u32, n: u32, exact: bool) -> u32 {
  return select(min(r, n - 1u), r, exact);
}

// Item j of a step into stage `base` of Ag / Bg, by the operand's layout (see above).
fn put_a(j: u32, v: vec4<f32>, base: u32, kc: bool, v4: bool) {
  if (kc && v4) { // row r, k 4·kq .. 4·kq+3
    let kq = j % (GK / 4u);
    let r = j / (GK / 4u);
    let b = base + 4u * kq * GPA + r / 4u;
    for (var c = 0u; c < 4u; c++) { Ag[b + c * GPA][r % 4u] = v[c]; }
  } else if (kc) { // rows 4q .. 4q+3, k
    Ag[base + (j % GK) * GPA + j / GK] = v;
  } else { // k, rows 4q .. 4q+3
    Ag[base + (j / (GTM / 4u)) * GPA + j % (GTM / 4u)] = v;
  }
}

fn put_b(j: u32, v: vec4<f32>, base: u32, kc: bool, v4: bool) {
  if (kc && v4) {
    let kq = j % (GK / 4u);
    let r = j / (GK / 4u);
    let b = base + 4u * kq * GPB + r / 4u;
    for (var c = 0u; c < 4u; c++) { Bg[b + c * GPB][r % 4u] = v[c]; }
  } else if (kc) {
    Bg[base + (j % GK) * GPB + j / GK] = v;
  } else {
    Bg[base + (j / (GTN / 4u)) * GPB + j % (GTN / 4u)] = v;
  }
}

fn put_tiles(pa: ptr<function, array<vec4<f32>, 8>>, pb: ptr<function, array<vec4<f32>, 8>>, t: u32, stage: u32,
             kca: bool, kcb: bool) {
  for (var u = 0u; u < GIA; u++) {
    let j = t + u * GNT;
    if (j < GNA) { put_a(j, (*pa)[u], stage * GSA, kca, VA); }
  }
  for (var u = 0u; u < GIB; u++) {
    let j = t + u * GNT;
    if (j < GNB) { put_b(j, (*pb)[u], stage * GSB, kcb, VB); }
  }
}

// One reduction step from stage `stage`: acc[(4g + r)·HN + h] += Σ_k A[row g,r] · B[columns h].
fn multiply_g(acc: ptr<function, array<vec4<f32>, 16>>, stage: u32, tx: u32, ty: u32) {
  let sa = stage * GSA + ty;
  let sb = stage * GSB + tx;
  for (var k = 0u; k < GK; k++) {
    var a: array<vec4<f32>, 2>;
    var b: array<vec4<f32>, 2>;
    for (var g = 0u; g < HM; g++) { a[g] = Ag[sa + k * GPA + g * WY]; }
    for (var h = 0u; h < HN; h++) { b[h] = Bg[sb + k * GPB + h * WX]; }
    for (var g = 0u; g < HM; g++) {
      for (var r = 0u; r < 4u; r++) {
        for (var h = 0u; h < HN; h++) {
          let i = (4u * g + r) * HN + h;
          (*acc)[i] = fma(vec4<f32>(a[g][r]), b[h], (*acc)[i]);
        }
      }
    }
  }
}

// Loads of one item (see put_a / put_b for what an item is), k0 the step's first reduction index.
fn fwd_a_g(j: u32, row0: u32, k0: u32) -> vec4<f32> { // inp (M, I): KC
  if (VA) {
    let k = k0 + 4u * (j % (GK / 4u));
    let m = clamp_g(row0 + j / (GK / 4u), M, XR);
    if (XK || k < I) { return inp4[(INP_OFF + z_inp + m * LDI + k) / 4u]; }
    return vec4<f32>(0.0);
  }
  let k = k0 + j % GK;
  let r = row0 + 4u * (j / GK);
  var v = vec4<f32>(0.0);
  if (XK || k < I) {
    for (var c = 0u; c < 4u; c++) { v[c] = inp[INP_OFF + z_inp + clamp_g(r + c, M, XR) * LDI + k]; }
  }
  return v;
}

fn fwd_b_g(j: u32, col0: u32, k0: u32) -> vec4<f32> { // weight (O, I): KC
  if (VB) {
    let k = k0 + 4u * (j % (GK / 4u));
    let o = clamp_g(col0 + j / (GK / 4u), O, XC);
    if (XK || k < I) { return weight4[(z_w + o * I + k) / 4u]; }
    return vec4<f32>(0.0);
  }
  let k = k0 + j % GK;
  let r = col0 + 4u * (j / GK);
  var v = vec4<f32>(0.0);
  if (XK || k < I) {
    for (var c = 0u; c < 4u; c++) { v[c] = weight[z_w + clamp_g(r + c, O, XC) * I + k]; }
  }
  return v;
}

fn bwi_a_g(j: u32, row0: u32, k0: u32) -> vec4<f32> { // dout (M, O): KC
  if (VA) {
    let k = k0 + 4u * (j % (GK / 4u));
    let m = clamp_g(row0 + j / (GK / 4u), M, XR);
    if (XK || k < O) { return dout4[(OUT_OFF + z_out + m * LDO + k) / 4u]; }
    return vec4<f32>(0.0);
  }
  let k = k0 + j % GK;
  let r = row0 + 4u * (j / GK);
  var v = vec4<f32>(0.0);
  if (XK || k < O) {
    for (var c = 0u; c < 4u; c++) { v[c] = dout[OUT_OFF + z_out + clamp_g(r + c, M, XR) * LDO + k]; }
  }
  return v;
}

fn bwi_b_g(j: u32, col0: u32, k0: u32) -> vec4<f32> { // weight (O, I): RC, k = o
  let k = k0 + j / (GTN / 4u);
  let c0 = col0 + 4u * (j % (GTN / 4u));
  if (!(XK || k < O)) { return vec4<f32>(0.0); }
  if (VB) { return weight4_bi[(z_w + k * I + select(min(c0, I - 4u), c0, XC)) / 4u]; }
  var v: vec4<f32>;
  for (var c = 0u; c < 4u; c++) { v[c] = weight[z_w + k * I + clamp_g(c0 + c, I, XC)]; }
  return v;
}

fn bww_a_g(j: u32, row0: u32, k0: u32, k_end: u32) -> vec4<f32> { // dout (M, O): RC, k = m
  let k = k0 + j / (GTM / 4u);
  let r0 = row0 + 4u * (j % (GTM / 4u));
  if (!(XK || k < k_end)) { return vec4<f32>(0.0); }
  if (VA) { return dout4[(OUT_OFF + z_out + k * LDO + select(min(r0, O - 4u), r0, XR)) / 4u]; }
  var v: vec4<f32>;
  for (var c = 0u; c < 4u; c++) { v[c] = dout[OUT_OFF + z_out + k * LDO + clamp_g(r0 + c, O, XR)]; }
  return v;
}

fn bww_b_g(j: u32, col0: u32, k0: u32, k_end: u32) -> vec4<f32> { // saved_inp (M, I): RC, k = m
  let k = k0 + j / (GTN / 4u);
  let c0 = col0 + 4u * (j % (GTN / 4u));
  if (!(XK || k < k_end)) { return vec4<f32>(0.0); }
  if (VB) { return saved_inp4[(INP_OFF + z_inp + k * LDI + select(min(c0, I - 4u), c0, XC)) / 4u]; }
  var v: vec4<f32>;
  for (var c = 0u; c < 4u; c++) { v[c] = saved_inp[INP_OFF + z_inp + k * LDI + clamp_g(c0 + c, I, XC)]; }
  return v;
}

@compute @workgroup_size(WX, WY)
fn matmul_forward_g(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  set_problem(wg.z);
  let tx = lid.x;
  let ty = lid.y;
  let t = ty * WX + tx;
  let row0 = wg.y * GTM; // rows m
  let col0 = wg.x * GTN; // columns o
  var acc: array<vec4<f32>, 16>;
  var pa: array<vec4<f32>, 8>;
  var pb: array<vec4<f32>, 8>;
  for (var u = 0u; u < GIA; u++) { let j = t + u * GNT; if (j < GNA) { pa[u] = fwd_a_g(j, row0, 0u); } }
  for (var u = 0u; u < GIB; u++) { let j = t + u * GNT; if (j < GNB) { pb[u] = fwd_b_g(j, col0, 0u); } }
  put_tiles(&pa, &pb, t, 0u, true, true);
  workgroupBarrier();
  var s = 0u;
  for (var k0 = 0u; k0 < I; k0 += GK) {
    let kn = k0 + GK;
    if (kn < I) {
      for (var u = 0u; u < GIA; u++) { let j = t + u * GNT; if (j < GNA) { pa[u] = fwd_a_g(j, row0, kn); } }
      for (var u = 0u; u < GIB; u++) { let j = t + u * GNT; if (j < GNB) { pb[u] = fwd_b_g(j, col0, kn); } }
    }
    let cur = select(0u, s % 2u, DB);
    multiply_g(&acc, cur, tx, ty);
    if (kn < I) {
      if (!DB) { workgroupBarrier(); }
      put_tiles(&pa, &pb, t, select(0u, 1u - cur, DB), true, true);
      workgroupBarrier();
    }
    s++;
  }
  for (var g = 0u; g < HM; g++) {
    for (var r = 0u; r < 4u; r++) {
      let m = row0 + g * 4u * WY + 4u * ty + r;
      if (!XR && m >= M) { continue; }
      for (var h = 0u; h < HN; h++) {
        let o = col0 + h * 4u * WX + 4u * tx;
        if (!XC && o >= O) { continue; }
        var v = acc[(4u * g + r) * HN + h];
        if (HAS_BIAS) { v += vec4<f32>(bias[o], bias[o + 1u], bias[o + 2u], bias[o + 3u]); }
        let idx = (OUT_OFF + z_out + m * LDO + o) / 4u;
        if (ACCUMULATE) { v += out4[idx]; }
        out4[idx] = v;
      }
    }
  }
}

@compute @workgroup_size(WX, WY)
fn matmul_backward_input_g(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  set_problem(wg.z);
  let tx = lid.x;
  let ty = lid.y;
  let t = ty * WX + tx;
  let row0 = wg.y * GTM; // rows m
  let col0 = wg.x * GTN; // columns i
  var acc: array<vec4<f32>, 16>;
  var pa: array<vec4<f32>, 8>;
  var pb: array<vec4<f32>, 8>;
  for (var u = 0u; u < GIA; u++) { let j = t + u * GNT; if (j < GNA) { pa[u] = bwi_a_g(j, row0, 0u); } }
  for (var u = 0u; u < GIB; u++) { let j = t + u * GNT; if (j < GNB) { pb[u] = bwi_b_g(j, col0, 0u); } }
  put_tiles(&pa, &pb, t, 0u, true, false);
  workgroupBarrier();
  var s = 0u;
  for (var k0 = 0u; k0 < O; k0 += GK) {
    let kn = k0 + GK;
    if (kn < O) {
      for (var u = 0u; u < GIA; u++) { let j = t + u * GNT; if (j < GNA) { pa[u] = bwi_a_g(j, row0, kn); } }
      for (var u = 0u; u < GIB; u++) { let j = t + u * GNT; if (j < GNB) { pb[u] = bwi_b_g(j, col0, kn); } }
    }
    let cur = select(0u, s % 2u, DB);
    multiply_g(&acc, cur, tx, ty);
    if (kn < O) {
      if (!DB) { workgroupBarrier(); }
      put_tiles(&pa, &pb, t, select(0u, 1u - cur, DB), true, false);
      workgroupBarrier();
    }
    s++;
  }
  for (var g = 0u; g < HM; g++) {
    for (var r = 0u; r < 4u; r++) {
      let m = row0 + g * 4u * WY + 4u * ty + r;
      if (!XR && m >= M) { continue; }
      for (var h = 0u; h < HN; h++) {
        let i = col0 + h * 4u * WX + 4u * tx;
        if (!XC && i >= I) { continue; }
        var v = acc[(4u * g + r) * HN + h];
        let idx = (INP_OFF + z_inp + m * LDI + i) / 4u;
        if (ACCUMULATE) { v += dinp4[idx]; }
        dinp4[idx] = v;
      }
    }
  }
}

@compute @workgroup_size(WX, WY)
fn matmul_backward_weight_g(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  set_problem(wg.z / SPLITS);
  let split = wg.z % SPLITS;
  let tx = lid.x;
  let ty = lid.y;
  let t = ty * WX + tx;
  let row0 = wg.y * GTM; // rows o
  let col0 = wg.x * GTN; // columns i
  let m_begin = split * CHUNK;
  let m_end = min(M, m_begin + CHUNK);
  var acc: array<vec4<f32>, 16>;
  var pa: array<vec4<f32>, 8>;
  var pb: array<vec4<f32>, 8>;
  for (var u = 0u; u < GIA; u++) { let j = t + u * GNT; if (j < GNA) { pa[u] = bww_a_g(j, row0, m_begin, m_end); } }
  for (var u = 0u; u < GIB; u++) { let j = t + u * GNT; if (j < GNB) { pb[u] = bww_b_g(j, col0, m_begin, m_end); } }
  put_tiles(&pa, &pb, t, 0u, false, false);
  workgroupBarrier();
  var s = 0u;
  for (var k0 = m_begin; k0 < m_end; k0 += GK) {
    let kn = k0 + GK;
    if (kn < m_end) {
      for (var u = 0u; u < GIA; u++) { let j = t + u * GNT; if (j < GNA) { pa[u] = bww_a_g(j, row0, kn, m_end); } }
      for (var u = 0u; u < GIB; u++) { let j = t + u * GNT; if (j < GNB) { pb[u] = bww_b_g(j, col0, kn, m_end); } }
    }
    let cur = select(0u, s % 2u, DB);
    multiply_g(&acc, cur, tx, ty);
    if (kn < m_end) {
      if (!DB) { workgroupBarrier(); }
      put_tiles(&pa, &pb, t, select(0u, 1u - cur, DB), false, false);
      workgroupBarrier();
    }
    s++;
  }
  let base = z_w + split * O * I;
  for (var g = 0u; g < HM; g++) {
    for (var r = 0u; r < 4u; r++) {
      let o = row0 + g * 4u * WY + 4u * ty + r;
      if (!XR && o >= O) { continue; }
      for (var h = 0u; h < HN; h++) {
        let i = col0 + h * 4u * WX + 4u * tx;
        if (!XC && i >= I) { continue; }
        var v = acc[(4u * g + r) * HN + h];
        let idx = (base + o * I + i) / 4u;
        if (ACCUMULATE) { v += dweight4[idx]; }
        dweight4[idx] = v;
      }
    }
  }
}

@compute @workgroup_size(256)
fn sum_partials4(@builtin(global_invocation_id) gid: vec3u) {
  let n4 = SUM_N / 4u;
  let n = gid.x;
  if (n >= n4) { return; }
  var v = vec4<f32>(0.0);
  for (var s = 0u; s < SPLITS; s++) { v += partials4[s * n4 + n]; }
  if (ACCUMULATE) { v += sums4[n]; }
  sums4[n] = v;
}

@compute @workgroup_size(32, 8)
fn sum_partials_lanes(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32) {
  sum_split_lanes(0u, 0u, SUM_N, SPLITS, SUM_N, wg.x * 32u, lid, ACCUMULATE);
}

// ---- several weight gradients' split sums in one dispatch (sum_partials_multi) ------------------
//
// sum_table holds SUM_ROWS rows of SUM_ROW u32, in workgroup order: the row's first workgroup, the
// element offset of its sums in `sums` and of its partials (S blocks of n, each `stride` after the
// one before) in `partials`, n, S, flags (1: add to the sums' present values; 2: the lanes form)
// and the stride. Workgroup w (of a 1-D grid, folded
// into y past the grid limit) takes the last row whose first workgroup is at most w. The plain form
// sums 256 elements a workgroup (sum_split, as sum_partials does; sum_partials4 adds in the same
// order), the lanes form 32 elements × 8 lanes (sum_split_lanes, as sum_partials_lanes): the same
// bits as one dispatch each.

override SUM_ROWS: u32 = 1u;
override SUM_ROW: u32 = 7u; // u32 a row (matmul.ts WEIGHT_SUM_ROW, which sets it)
var<workgroup> sum_pick: u32; // the row, and 65536 with the lanes form

@compute @workgroup_size(256)
fn sum_partials_multi(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32, @builtin(num_workgroups) nwg: vec3u) {
  let w = wg.x + wg.y * nwg.x;
  if (lid == 0u) {
    var k = 0u;
    for (var j = 1u; j < SUM_ROWS; j++) { if (w >= sum_table[j * SUM_ROW]) { k = j; } }
    sum_pick = k | select(0u, 65536u, (sum_table[k * SUM_ROW + 5u] & 2u) != 0u);
  }
  let pick = workgroupUniformLoad(&sum_pick); // uniform: the lanes form's barrier below is allowed
  let r = (pick & 65535u) * SUM_ROW;
  let w0 = sum_table[r];
  let dst = sum_table[r + 1u];
  let src = sum_table[r + 2u];
  let n = sum_table[r + 3u];
  let S = sum_table[r + 4u];
  let accumulate = (sum_table[r + 5u] & 1u) != 0u;
  let stride = sum_table[r + 6u];
  if (pick < 65536u) {
    sum_split(dst, src, n, S, stride, (w - w0) * 256u + lid, accumulate);
  } else {
    sum_split_lanes(dst, src, n, S, stride, (w - w0) * 32u, lid, accumulate);
  }
}

// ---- narrow input gradient (matmul_backward_input_narrow) ---------------------------------------
//
// dinp (M, I) (+)= dout (M, O) · weight (O, I) for results of at most 16 columns: dt_proj's input
// gradient (I = R, O = E, M = B·L). The tiled kernels give such a result few invocations, each
// walking the whole reduction (a 64×64 tile keeps 12 of its 64 columns busy); here the reduction
// over O is split across the invocations of a workgroup instead.
//
// Geometry: a workgroup of NSL × NRG = 32 × 8 invocations covers NROWS = 16 rows. Invocation
// (s, g) = (x, y) takes rows row0 + g + 8r (r < NRB = 2) and the reduction indices o ≡ s (mod 32):
// the 32 invocations of a row group read 32 neighbouring dout elements of each of their two rows
// per step (coalesced), and each keeps 2 × I sums, as 2 × NQ vec4s (NQ = ⌈I/4⌉, column 4q + c in
// component c of vec4 q). Rows past M are clamped to the last one (their sums are never stored).
//   grid (1, ⌈M/16⌉); vim-tiny at batch 256 (M = 16 640, I = 12, O = 384): 1 040 workgroups,
//   266 240 invocations, each 2 rows × 12 reduction indices.
// weight is staged in workgroup memory, transposed: Ws[q·NOC + o] = weight[c0 + o, 4q .. 4q+3], so
// the 32 invocations of a row group read 32 neighbouring vec4s (no bank conflicts) and each read
// feeds both rows (8·NQ FMAs). Read from global memory instead, weight[o, i] for 32 neighbouring o
// is a gather with a stride of I floats, touching I cache lines per load. All of weight does not
// fit WebGPU's default 16 KiB of workgroup memory at vim-tiny's O·I = 4 608, so it goes through in
// chunks of NOC = 256 rows o (NQ · 4 KiB: 12 KiB at I = 12, 16 KiB at I = 16), two barriers each.
// Every workgroup reads all of weight (O·I floats) next to its 16·O floats of dout: at I = 12 that
// is 3/4 as much again, but from the L2 cache (weight is 18 KiB), not from memory; the price of
// a thousand workgroups rather than a few hundred. Columns I .. 4·NQ − 1 of the last vec4 are
// staged as zeros.
// The 32 slices' sums are then added in a fixed order through the same workgroup memory: slice
// s + 16 hands its sums to slice s, then one invocation per result element (16·I of them) adds its
// 16 in slice order and stores it (neighbouring invocations, neighbouring columns). Three barriers
// besides the chunks'. No atomics: the same bits run after run.

const NSL: u32 = 32u; // slices of the reduction over O per row (invocations along x)
const NRG: u32 = 8u; // row groups (invocations along y)
const NRB: u32 = 2u; // rows per invocation: rows g and g + NRG of the workgroup's block
const NROWS: u32 = NRG * NRB; // rows per workgroup
const NOC: u32 = 256u; // rows o of weight per staged chunk
const NT: u32 = NSL * NRG; // invocations per workgroup

override NQ: u32 = (I + 3u) / 4u; // vec4s per row of weight (I ≤ 16: at most 4)

var<workgroup> Ws: array<vec4<f32>, NQ * NOC>; // weight chunk Ws[q·NOC + o]; then the slices' sums

@compute @workgroup_size(NSL, NRG)
fn matmul_backward_input_narrow(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  set_problem(wg.z);
  let s = lid.x; // slice: reduction indices o ≡ s (mod NSL)
  let g = lid.y; // row group: rows row0 + g + NRG·r
  let t = g * NSL + s;
  let row0 = wg.y * NROWS;
  var base: array<u32, NRB>; // each row's first dout element
  for (var r = 0u; r < NRB; r++) { base[r] = OUT_OFF + z_out + min(row0 + g + NRG * r, M - 1u) * LDO; }
  var acc: array<vec4<f32>, 8>; // acc[4r + q]: row g + NRG·r, columns 4q .. 4q+3
  for (var c0 = 0u; c0 < O; c0 += NOC) {
    let n = min(NOC, O - c0); // rows o in this chunk
    workgroupBarrier(); // the previous chunk has been read
    // weight[c0 .., :] is contiguous: neighbouring invocations load neighbouring groups of 4.
    for (var j = t; j < n * NQ; j += NT) {
      let o = j / NQ;
      let q = j - o * NQ;
      let k = (c0 + o) * I + 4u * q;
      var w = vec4<f32>(0.0);
      for (var c = 0u; c < 4u; c++) {
        if (4u * q + c < I) { w[c] = weight[z_w + k + c]; }
      }
      Ws[q * NOC + o] = w;
    }
    workgroupBarrier();
    for (var o = s; o < n; o += NSL) {
      var d: array<f32, NRB>;
      for (var r = 0u; r < NRB; r++) { d[r] = dout[base[r] + c0 + o]; }
      for (var q = 0u; q < NQ; q++) {
        let w = Ws[q * NOC + o];
        for (var r = 0u; r < NRB; r++) { acc[4u * r + q] = fma(vec4<f32>(d[r]), w, acc[4u * r + q]); }
      }
    }
  }
  // The slices' sums, in a fixed order: slice s + 16 hands its sums to slice s (s < 16), which
  // adds them and puts the total in the same place (no other invocation reads it meanwhile); then
  // one invocation per result element adds the 16 in slice order. Each step holds
  // NRB · NRG · 16 · NQ = NQ · NOC vec4s: all of Ws.
  let half = NSL / 2u;
  workgroupBarrier(); // the last chunk has been read
  if (s >= half) {
    for (var r = 0u; r < NRB; r++) {
      for (var q = 0u; q < NQ; q++) { Ws[((r * NRG + g) * half + s - half) * NQ + q] = acc[4u * r + q]; }
    }
  }
  workgroupBarrier();
  if (s < half) {
    for (var r = 0u; r < NRB; r++) {
      for (var q = 0u; q < NQ; q++) {
        let k = ((r * NRG + g) * half + s) * NQ + q;
        Ws[k] = acc[4u * r + q] + Ws[k];
      }
    }
  }
  workgroupBarrier();
  // Invocation t: the workgroup's row t / I (row g + NRG·r above is r·NRG + g), column i = t % I.
  if (t < NROWS * I) {
    let row = t / I;
    let i = t - row * I;
    let m = row0 + row;
    let k0 = row * half * NQ + i / 4u;
    let c = i % 4u;
    var v = Ws[k0][c];
    for (var j = 1u; j < half; j++) { v += Ws[k0 + j * NQ][c]; }
    if (m < M) {
      let idx = INP_OFF + z_inp + m * LDI + i;
      if (ACCUMULATE) { v += dinp[idx]; }
      dinp[idx] = v;
    }
  }
}

// ---- skinny forward (matmul_forward_skinny) -----------------------------------------------------
// out (M, O) (+)= inp (M, I) · weight (O, I)ᵀ (+ bias) for results of at most 64 columns (x_proj's
// R + 2N = 44): a reduction long next to a result a few quads wide.
// A workgroup of 256 invocations covers SKR = 64 rows and all O columns, walking I in chunks of
// SKC = 64 indices. Each chunk of inp (64 rows × 16 vec4s) and of weight (O rows × 16 vec4s) goes
// through workgroup memory, both copied as they lie: consecutive invocations load consecutive vec4s
// of a row (16 invocations a row, two rows a warp: coalesced), the next chunk loaded into registers
// while the current one is reduced. Rows are stored XOR-swizzled, Xs[r·16 + (kq ^ (r & 7))], so
// that eight rows read at one kq, or eight written along kq, hit eight different bank quads.
// Invocation (g, rg, ks), g = t % 4, rg = t / 4 % 16, ks = t / 64 (uniform in a warp): rows
// rg + 16i (i < 4), outputs o = g + 4j (j < ⌈O/4⌉: 11 for O = 44, 44 accumulators), and slice ks
// of each chunk (its vec4s 4ks .. 4ks+3). For each vec4 kq it reads one vec4 of each of its 4 rows
// (transposed in registers to 4 vec4s over rows) and one vec4 of each of its outputs' weight rows,
// then 4 vec4 FMAs an output: 4 + 11 reads for 176 FMAs, in 11 independent vec4 chains. In a warp
// the row reads are 8 addresses (broadcast over g), the weight reads 4 (broadcast over rows).
// At the end the four slices' partial sums are added in order through workgroup memory (Xs reused)
// and the 64 × O results stored with consecutive invocations on consecutive columns. Requires I,
// LDI and INP_OFF multiples of 4 (inp read through inp4, weight through weight4). Rows past M
// are clamped to the last one (never stored).
//   grid (1, ⌈M/64⌉); workgroup memory 16 KiB (Xs) + 1 KiB·⌈O/4⌉ (Wk): 27 KiB for O = 44.
// Prediction, vim-tiny at batch 256 on an H200 (M = B·L = 16 640, I = E = 384, O = R + 2N = 44;
// 260 workgroups, two an SM, one wave): 0.56 GFLOP is 16 µs at 35 TFLOP/s; inp and out from
// memory, 28.5 MB, 7 µs at 4.1 TB/s, overlapped; weight from L2 (260 × 68 KB); workgroup memory:
// 15 vec4 reads per 176 FMAs an invocation, a warp's 15 reads 15 wavefronts against 44 SM clocks of
// its FMAs, so not the bound. With 6 chunks of two barriers and the slice sums: about 20 µs
// (17–24) a dispatch against 38 for the tiles.

const SKR: u32 = 64u; // rows a workgroup
const SKCQ: u32 = 16u; // vec4s of a chunk of the reduction (SKC = 64 indices)
const SKG: u32 = 4u; // output groups: outputs o ≡ g (mod 4)
const SKRG: u32 = 16u; // row groups: rows rg + 16i, i < 4
const SKT: u32 = 256u; // invocations (SKG · SKRG · 4 slices)
override SKJ: u32 = (O + 3u) / 4u; // outputs an invocation (O ≤ 64: at most 16)

// Xs[r·16 + (kq ^ (r & 7))]: inp[row0 + r, k0 + 4kq .. +3]; at the end the slices' sums (64, O)
var<workgroup> Xs: array<vec4<f32>, SKR * SKCQ>;
// Wk[o·16 + (kq ^ (o & 7))]: weight[o, k0 + 4kq .. +3] (rows past O unused)
var<workgroup> Wk: array<vec4<f32>, SKG * SKJ * SKCQ>;

@compute @workgroup_size(256)
fn matmul_forward_skinny(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let t = lid.x;
  let g = t % SKG;
  let rg = (t / SKG) % SKRG;
  let ks = t / (SKG * SKRG);
  let row0 = wg.y * SKR;
  let iq = I / 4u; // vec4s of a row
  let nch = (iq + SKCQ - 1u) / SKCQ;
  // Copying a chunk: items t + 256p, p < 4, are vec4 sq of row (or weight row) sr + 16p.
  let sq = t % SKCQ;
  let sr = t / SKCQ;
  var xa: array<vec4<f32>, 4>;
  var wa: array<vec4<f32>, 4>;
  var arow: array<u32, 4>; // first vec4 of each copied row of inp
  for (var p = 0u; p < 4u; p++) { arow[p] = (INP_OFF + min(row0 + sr + 16u * p, M - 1u) * LDI) / 4u; }
  // chunk 0 into registers
  if (sq < iq) {
    for (var p = 0u; p < 4u; p++) {
      xa[p] = inp4[arow[p] + sq];
      let o = sr + 16u * p;
      if (o < O) { wa[p] = weight4[o * iq + sq]; }
    }
  }
  var acc: array<vec4<f32>, 16>; // acc[j][i]: row rg + 16i, output g + 4j, this slice's part
  for (var c = 0u; c < nch; c++) {
    let kq0 = c * SKCQ;
    workgroupBarrier(); // the previous chunk has been read
    for (var p = 0u; p < 4u; p++) {
      let r = sr + 16u * p;
      Xs[r * SKCQ + (sq ^ (r & 7u))] = xa[p];
      if (r < O) { Wk[r * SKCQ + (sq ^ (r & 7u))] = wa[p]; }
    }
    workgroupBarrier();
    if (c + 1u < nch && kq0 + SKCQ + sq < iq) { // the next chunk, in flight while this one is reduced
      for (var p = 0u; p < 4u; p++) {
        xa[p] = inp4[arow[p] + kq0 + SKCQ + sq];
        let o = sr + 16u * p;
        if (o < O) { wa[p] = weight4[o * iq + kq0 + SKCQ + sq]; }
      }
    }
    let nq = min(SKCQ, iq - kq0); // vec4s in this chunk
    for (var s = 0u; s < 4u; s++) {
      let kq = 4u * ks + s;
      if (kq < nq) {
        var a: array<vec4<f32>, 4>;
        for (var i = 0u; i < 4u; i++) { a[i] = Xs[(rg + 16u * i) * SKCQ + (kq ^ (rg & 7u))]; }
        let a0 = vec4<f32>(a[0].x, a[1].x, a[2].x, a[3].x);
        let a1 = vec4<f32>(a[0].y, a[1].y, a[2].y, a[3].y);
        let a2 = vec4<f32>(a[0].z, a[1].z, a[2].z, a[3].z);
        let a3 = vec4<f32>(a[0].w, a[1].w, a[2].w, a[3].w);
        // row o = g + 4j at Wk[16o + (kq ^ (o & 7))], o & 7 = g + 4(j & 1): constant offsets from two bases
        let w0 = SKCQ * g + (kq ^ g);
        let w1 = SKCQ * g + (kq ^ g ^ 4u);
        for (var j = 0u; j < SKJ; j++) {
          let w = Wk[select(w0, w1, (j & 1u) == 1u) + SKCQ * SKG * j]; // past O: stale, never stored
          var v = fma(a0, vec4<f32>(w.x), acc[j]);
          v = fma(a1, vec4<f32>(w.y), v);
          v = fma(a2, vec4<f32>(w.z), v);
          acc[j] = fma(a3, vec4<f32>(w.w), v);
        }
      }
    }
  }
  // The slices' sums, slice 0 first, into Xs as (64, O) floats.
  for (var step = 0u; step < 4u; step++) {
    workgroupBarrier();
    if (ks == step) {
      for (var j = 0u; j < SKJ; j++) {
        let o = g + SKG * j;
        if (o < O) {
          for (var i = 0u; i < 4u; i++) {
            let e = (rg + 16u * i) * O + o;
            var v = acc[j][i];
            if (step > 0u) { v += Xs[e / 4u][e % 4u]; }
            Xs[e / 4u][e % 4u] = v;
          }
        }
      }
    }
  }
  workgroupBarrier();
  for (var e = t; e < SKR * O; e += SKT) {
    let r = e / O;
    let o = e - r * O;
    let m = row0 + r;
    if (m < M) {
      var v = Xs[e / 4u][e % 4u];
      if (HAS_BIAS) { v += bias[o]; }
      let idx = OUT_OFF + m * LDO + o;
      if (ACCUMULATE) { v += out[idx]; }
      out[idx] = v;
    }
  }
}

// ---- skinny input gradient (matmul_backward_input_skinny) ---------------------------------------
// dinp (M, I) (+)= dout (M, O) · weight (O, I) for a reduction of at most 64 (x_proj's O = R + 2N =
// 44): the same layer as the skinny forward, from the other side.
// A workgroup of 128 invocations covers SBR = 64 rows and the SBC = 64 columns from c0 = 64·wg.x.
// It stages, once, the block's rows of dout (64 × O floats, contiguous rows: consecutive
// invocations load consecutive floats; Ds[r·⌈O/4⌉ + oq], zeros past O) and the O × 64 block of
// weight (Wb[o·16 + jq]: consecutive invocations load consecutive vec4s of a row; zeros past O),
// one barrier in all. Invocation (jq, rg), jq = t % 16, rg = t / 16: the vec4 of columns
// c0 + 4jq .. +3 of rows rg + 8i (i < 8), 8 vec4 accumulators. For each quad of O it reads 8 vec4s
// of dout (the 4 values of each of its rows; 2 addresses a warp, broadcast over jq, in different
// banks unless ⌈O/4⌉ is a multiple of 8) and 4 vec4s of weight (16 consecutive vec4s a warp), then
// 32 vec4 FMAs in 8 independent chains. Results are stored (read and added first when
// accumulating) as vec4s, 16 consecutive vec4s of a row a half warp: coalesced. Requires I, LDI
// and INP_OFF multiples of 4 (dinp4, weight4_bi). Rows past M are clamped to the last one (never
// stored).
//   grid (⌈I/64⌉, ⌈M/64⌉); workgroup memory 2 KiB·⌈O/4⌉ (Ds, Wb): 22 KiB for O = 44.
// Prediction, vim-tiny at batch 256 on an H200 (M = B·L = 16 640, I = E = 384, O = R + 2N = 44,
// accumulating as the model does; 1 560 workgroups of 128, about 6 an SM): 0.56 GFLOP is 16 µs at
// 35 TFLOP/s; dinp read and written and dout read, 54 MB, 13 µs at 4.1 TB/s (7 µs without the
// accumulate), overlapped with the FMAs of other workgroups; dout and weight staged from L2;
// workgroup memory: 12 vec4 reads per 128 FMAs an invocation, a warp's 16 wavefronts against 32 SM
// clocks of its FMAs, not the bound. About 20 µs (18–25) a dispatch against 38 for the tiles.

const SBR: u32 = 64u; // rows a workgroup
const SBQ: u32 = 16u; // column quads a workgroup (64 columns), one an invocation
const SBG: u32 = 8u; // row groups: rows rg + 8i, i < 8
const SBT: u32 = SBQ * SBG; // invocations (128)
override SBO: u32 = (O + 3u) / 4u; // quads of a row of dout

var<workgroup> Ds: array<vec4<f32>, SBR * SBO>; // Ds[r·SBO + oq]: dout[row0 + r, 4oq .. +3], zeros past O
var<workgroup> Wb: array<vec4<f32>, 4u * SBO * SBQ>; // Wb[o·16 + jq]: weight[o, c0 + 4jq .. +3], 0 past O

@compute @workgroup_size(128)
fn matmul_backward_input_skinny(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let t = lid.x;
  let jq = t % SBQ;
  let rg = t / SBQ;
  let iq = I / 4u; // vec4s of a row of dinp and of weight
  let cq = wg.x * SBQ + jq; // this invocation's column quad
  let row0 = wg.y * SBR;
  for (var e = t; e < SBR * 4u * SBO; e += SBT) {
    let r = e / (4u * SBO);
    let o = e - r * 4u * SBO;
    var v = 0.0;
    if (o < O) { v = dout[OUT_OFF + min(row0 + r, M - 1u) * LDO + o]; }
    Ds[e / 4u][e % 4u] = v;
  }
  for (var e = t; e < 4u * SBO * SBQ; e += SBT) {
    let o = e / SBQ;
    let q = wg.x * SBQ + (e - o * SBQ);
    var w = vec4<f32>(0.0);
    if (o < O && q < iq) { w = weight4_bi[o * iq + q]; }
    Wb[e] = w;
  }
  workgroupBarrier();
  var acc: array<vec4<f32>, 8>; // acc[i]: row rg + 8i
  for (var oq = 0u; oq < SBO; oq++) {
    var d: array<vec4<f32>, 8>;
    for (var i = 0u; i < 8u; i++) { d[i] = Ds[(rg + SBG * i) * SBO + oq]; }
    for (var c = 0u; c < 4u; c++) {
      let w = Wb[(4u * oq + c) * SBQ + jq];
      for (var i = 0u; i < 8u; i++) { acc[i] = fma(vec4<f32>(d[i][c]), w, acc[i]); }
    }
  }
  if (cq >= iq) { return; }
  for (var i = 0u; i < 8u; i++) {
    let m = row0 + rg + SBG * i;
    if (m < M) {
      let idx = (INP_OFF + m * LDI) / 4u + cq;
      var v = acc[i];
      if (ACCUMULATE) { v += dinp4[idx]; }
      dinp4[idx] = v;
    }
  }
}
