// Deterministic column sums: out (X) = Σ_rows inp (M, X), for bias and weight gradients. WGSL has
// no float atomics, so a large M goes through two dispatches of this same entry point:
//   pass 1: inp (M rows)  → partials (G, X), group g summing rows g·ROWS_PER_GROUP … +ROWS_PER_GROUP−1
//   pass 2: partials (G)  → out (X) with one group (ROWS_PER_GROUP ≥ G), ACCUMULATE chooses = or +=
// Small M takes pass 2 alone. The sum order is fixed by the geometry, so results repeat bit for bit.
//
//   colsum: inp row m, column x is inp[IN_OFFSET + m·IN_STRIDE + x] (a column window of a wider
//           matrix when IN_STRIDE > X); out[g·X + x] (= or +=) Σ over group g's rows.
//   grid:   (ceil(X / 64), G) workgroups of 64 columns × 4 row lanes; lane y sums rows y, y+4, …
//           of its group in order, then lane 0 adds the four lane sums in order.

override M: u32;               // rows of inp
override X: u32;               // columns summed
override IN_STRIDE: u32 = X;   // elements between rows of inp
override IN_OFFSET: u32 = 0u;  // element offset of column 0 of row 0
override ROWS_PER_GROUP: u32;  // rows summed by one workgroup row (grid y)
override ACCUMULATE: bool = false;

@group(0) @binding(0) var<storage, read_write> out: array<f32>; // (G, X)
@group(0) @binding(1) var<storage, read> inp: array<f32>;        // (M, IN_STRIDE)

const COLS = 64u;
const LANES = 4u;
var<workgroup> lane_sum: array<f32, 256>; // [lane][column]

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
