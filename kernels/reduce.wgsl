// Deterministic column sums: out (X) = Σ_rows inp (M, X), for bias and weight gradients. WGSL has
// no float atomics, so every sum is a fixed tree or chain given by the geometry, and results
// repeat bit for bit.
//
//   inp row m, column x is inp[IN_OFFSET + m·IN_STRIDE + x] (a column window of a wider matrix
//   when IN_STRIDE > X).
//
//   colsum:      partials of row groups. out[g·X + x] (= or +=) Σ over rows g·ROWS_PER_GROUP …
//                +ROWS_PER_GROUP−1. Grid (ceil(X / 64), G) workgroups of 64 columns × 4 row lanes;
//                lane y sums rows y, y+4, … of its group in order, then lane 0 adds the four lane
//                sums in order. Wide when G is large (the first pass over many rows), serial when
//                G = 1, so it is only used for the first pass.
//
//   colsum_tree: the final sum over all M rows, e.g. the G per-workgroup partials that rmsnorm's
//                and conv1d's backward kernels write. Many invocations cooperate per column:
//                workgroups of 256 invocations = TREE_COLS columns × TREE_LANES (= 256 / TREE_COLS)
//                row lanes; lane y sums rows y, y+TREE_LANES, … in order (a few rows each: the
//                host picks TREE_LANES ≥ M / 8), then a tree over the lanes in workgroup memory
//                (lane y += lane y + half, half = TREE_LANES/2 … 1). Grid: ceil(X / TREE_COLS)
//                workgroups (folded into y past the per-dimension limit), so a few hundred
//                workgroups read the M·X partials with every load of a lane independent.
//                ACCUMULATE chooses = or +=.
//                vim-tiny: conv1d's (G = 64, X = E·(K+1) = 1920) → 32 columns × 8 lanes, 60
//                workgroups, 8 rows a lane (0.5 MB, all of it in flight at once); rmsnorm's
//                (G = 1040, X = D = 192) → 1 column × 256 lanes, 192 workgroups, ≤ 5 rows a lane.
//                On an H200 either takes under 6 µs a dispatch (before: 45–75 µs, one invocation
//                per column looping over ~1000 rows in 3–24 workgroups).
//   colsum_tree_split: the same, with columns x ≥ SPLIT written to out_tail[x − SPLIT] instead of
//                out[x]: one dispatch finishes two parameter gradients stored side by side in one
//                partial row (conv1d's dweight (E·K) and dbias (E)).
//   colsum_tree_split3: the same with four outputs: columns x < SPLIT to out, SPLIT … SPLIT2−1 to
//                out_tail, SPLIT2 … SPLIT3−1 to out_tail2, SPLIT3 … X−1 to out_tail3 (the
//                both-directions conv1d backward's dweight, dbias of each direction).

override M: u32;               // rows of inp
override X: u32;               // columns summed
override IN_STRIDE: u32 = X;   // elements between rows of inp
override IN_OFFSET: u32 = 0u;  // element offset of column 0 of row 0
override ROWS_PER_GROUP: u32 = M; // colsum: rows summed by one workgroup row (grid y)
override ACCUMULATE: bool = false;
override TREE_COLS: u32 = 64u; // colsum_tree: columns per workgroup, a power of two ≤ 256
override SPLIT: u32 = X;       // colsum_tree_split: first column written to out_tail
override SPLIT2: u32 = X;      // colsum_tree_split3: first column written to out_tail2
override SPLIT3: u32 = X;      // colsum_tree_split3: first column written to out_tail3

@group(0) @binding(0) var<storage, read_write> out: array<f32>;      // (G, X) or (X) / (SPLIT)
@group(0) @binding(1) var<storage, read> inp: array<f32>;            // (M, IN_STRIDE)
@group(0) @binding(2) var<storage, read_write> out_tail: array<f32>; // (X − SPLIT) or (SPLIT2 − SPLIT)
@group(0) @binding(3) var<storage, read_write> out_tail2: array<f32>; // (SPLIT3 − SPLIT2)
@group(0) @binding(4) var<storage, read_write> out_tail3: array<f32>; // (X − SPLIT3)

const COLS = 64u;
const LANES = 4u;
const TREE_WG = 256u;
var<workgroup> lane_sum: array<f32, 256>; // colsum: [lane][column]; colsum_tree: [lane][column]

@compute @workgroup_size(64, 4)
fn colsum(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let x = wg.x * COLS + lid.x;
  let g = wg.y;
  let row0 = g * ROWS_PER_GROUP;
  let row1 = min(row0 + ROWS_PER_GROUP, M);
  var acc = 0.0;
  if (x < X) {
    for (var m = row0 + lid.y; m < row1; m += LANES) {
      acc += inp[IN_OFFSET + m * IN_STRIDE + x];
    }
  }
  lane_sum[lid.y * COLS + lid.x] = acc;
  workgroupBarrier();
  if (lid.y == 0u && x < X) {
    let s = ((lane_sum[lid.x] + lane_sum[COLS + lid.x]) + lane_sum[2u * COLS + lid.x]) + lane_sum[3u * COLS + lid.x];
    let o = g * X + x;
    if (ACCUMULATE) { out[o] += s; } else { out[o] = s; }
  }
}

// The sum over all M rows of column wgi·TREE_COLS + lid mod TREE_COLS, valid in lane 0
// (lid < TREE_COLS). Called from uniform control flow (it has barriers).
fn tree_colsum(wgi: u32, lid: u32) -> f32 {
  let lanes = TREE_WG / TREE_COLS;
  let c = lid % TREE_COLS;
  let lane = lid / TREE_COLS;
  let x = wgi * TREE_COLS + c;
  var acc = 0.0;
  if (x < X) {
    for (var m = lane; m < M; m += lanes) {
      acc += inp[IN_OFFSET + m * IN_STRIDE + x];
    }
  }
  lane_sum[lid] = acc;
  workgroupBarrier();
  for (var half = lanes / 2u; half > 0u; half >>= 1u) {
    if (lane < half) { lane_sum[lid] += lane_sum[lid + half * TREE_COLS]; }
    workgroupBarrier();
  }
  return lane_sum[c];
}

@compute @workgroup_size(256)
fn colsum_tree(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u,
               @builtin(local_invocation_index) lid: u32) {
  let wgi = wg.x + wg.y * nwg.x;
  let s = tree_colsum(wgi, lid);
  let x = wgi * TREE_COLS + lid;
  if (lid < TREE_COLS && x < X) {
    if (ACCUMULATE) { out[x] += s; } else { out[x] = s; }
  }
}

@compute @workgroup_size(256)
fn colsum_tree_split(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u,
                     @builtin(local_invocation_index) lid: u32) {
  let wgi = wg.x + wg.y * nwg.x;
  let s = tree_colsum(wgi, lid);
  let x = wgi * TREE_COLS + lid;
  if (lid < TREE_COLS && x < X) {
    if (x < SPLIT) {
      if (ACCUMULATE) { out[x] += s; } else { out[x] = s; }
    } else {
      if (ACCUMULATE) { out_tail[x - SPLIT] += s; } else { out_tail[x - SPLIT] = s; }
    }
  }
}

@compute @workgroup_size(256)
fn colsum_tree_split3(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) nwg: vec3u,
                      @builtin(local_invocation_index) lid: u32) {
  let wgi = wg.x + wg.y * nwg.x;
  let s = tree_colsum(wgi, lid);
  let x = wgi * TREE_COLS + lid;
  if (lid < TREE_COLS && x < X) {
    if (x < SPLIT) {
      if (ACCUMULATE) { out[x] += s; } else { out[x] = s; }
    } else if (x < SPLIT2) {
      if (ACCUMULATE) { out_tail[x - SPLIT] += s; } else { out_tail[x - SPLIT] = s; }
    } else if (x < SPLIT3) {
      if (ACCUMULATE) { out_tail2[x - SPLIT2] += s; } else { out_tail2[x - SPLIT2] = s; }
    } else {
      if (ACCUMULATE) { out_tail3[x - SPLIT3] += s; } else { out_tail3[x - SPLIT3] = s; }
    }
  }
}
