// Causal depthwise conv1d + SiLU of one Mamba direction, or of both directions of a Vim block at
// once, over the x half of in_proj's output.
//
//   xz (B, L, 2E): x = columns 0…E−1 (z, columns E…2E−1, is the scan's gate, untouched here)
//   weight (E, K), bias (E); out, dout (B, L, E) in direction order.
//   Direction order: position s reads token src(s) = s (REVERSE = false) or L−1−s (REVERSE = true).
//
//   forward:  pre[b,t,e] = bias[e] + Σ_k weight[e,k] · x[b, src(t−(K−1)+k), e]   (zero before s = 0)
//             out[b,t,e] = SiLU(pre[b,t,e])
//   backward, with g[b,t,e] = dout[b,t,e] · SiLU'(pre[b,t,e]) (pre recomputed, never stored):
//     dxz[b, src(s), e] (= or +=) Σ_k g[b, s+(K−1)−k, e] · weight[e,k]
//                                  (x half only; ACCUMULATE lets both directions add into one dxz)
//     partial[grp] (G, E·K + E) = the sums over the group's (b, t) of g · x[b, src(t−(K−1)+k), e]
//                                  (at e·K + k) and of g (at E·K + e); reduce.wgsl's
//                                  colsum_tree_split adds the G rows into dweight and dbias.
//
// Geometry.
//   forward: one invocation per (b, t, e), workgroups of 256, flat index
//     gid.x + gid.y · num_workgroups.x · 256 (e fastest: coalesced).
//   backward (one kernel for dx and the parameter partials, so dout and x are read once):
//     a unit is (b, chunk c): positions c·CHUNK … min(c·CHUNK + CHUNK, L) − 1 of sample b (the
//     host splits L into equal chunks of at most 128: vim-tiny's L = 65 is one chunk). One
//     invocation walks one unit of one channel e, keeping the last K inputs x and gradients g in
//     a register window: each step computes pre and g of one position once, adds g into db/dw
//     (positions inside the chunk) and emits dx of the position K−1 back, whose K gradients are
//     then all known; the walk runs K−1 positions past the chunk (g = 0 past L−1) and starts
//     with the K−1 inputs before it. x and dout are loaded 4 positions at a time, so each
//     invocation has 8 independent loads in flight.
//     The window is two vec4 (Win), not an array: per-invocation arrays indexed in loops end up
//     in local memory on NVIDIA through Dawn; on an H200 an array version of this walk moved
//     0.7 TB/s, a vec4 one 2.4 TB/s. With K ≤ 4 only the upper vec4 is used (K is a constant
//     once the pipeline is built, so the other half compiles away).
//     Workgroups of 64 channels × 4 lanes over grid (ceil(E / 64), G); group grp owns units
//     grp·UNITS_PER_GROUP … +UNITS_PER_GROUP−1 (u = b·chunks + c), lane y takes every 4th, and
//     the lanes' K+1 sums per channel are added in order into row grp of the partials.
//     vim-tiny (B = 256, 256 units, UNITS_PER_GROUP = 4): G = 64, grid 6 × 64 = 384 workgroups,
//     98,304 invocations of 68 steps; partials 64 × 1920 (0.5 MB).
//
// Both directions of a Vim block in one pass (conv1d_silu_forward2, conv1d_silu_backward2): the
// forward direction (weight, bias; out, dout in token order) and the reversed one (weight_b, bias_b;
// out_b, dout_b in its own order: position s is token L−1−s) over the same x. Indexed by token t,
// with the reversed direction's pre-activation and gradient at token t meaning those at its
// position L−1−t:
//   pre_f[t] = bias[e]   + Σ_k weight[e,k]   · x[t−(K−1)+k]   (zero before token 0)
//   pre_b[t] = bias_b[e] + Σ_k weight_b[e,k] · x[t+(K−1)−k]   (zero past token L−1)
//   gf[t] = dout[t] · SiLU'(pre_f[t]),  gb[t] = dout_b[L−1−t] · SiLU'(pre_b[t])
//   dxz[b,τ,e] (= or +=) Σ_k gf[τ+(K−1)−k] · weight[e,k]  +  Σ_k gb[τ−(K−1)+k] · weight_b[e,k]
//     summed in that order: (dxz + forward part) + reversed part with ACCUMULATE, forward part +
//     reversed part without, as conv1d_silu_backward for the forward direction followed by an
//     accumulating one for the reversed direction.
//   partial2 row grp (G, 2·(E·K + E)): the forward direction's E·K + E sums as in partial (Σ gf · x
//     [t−(K−1)+k], Σ gf), then the reversed one's (Σ gb · x[t+(K−1)−k], Σ gb); reduce.wgsl's
//     colsum_tree_split3 adds the G rows into the four gradients.
// One invocation walks one channel of a run of tokens upwards, pushing x[j] into one register
// window x[j−(K−1) … j] (zero past L−1): at step j that window is pre_f[j]'s input and also
// pre_b[j−(K−1)]'s (x[t … t+K−1], t = j−(K−1)), so both directions come from the same walk with one
// read of x, each through its own taps on the window (the forward direction's weights at its end,
// the reversed one's reversed). The backward keeps gf[j−(K−1) … j] and gb[j−2(K−1) … j−(K−1)] in two
// more windows; at step j both directions' gradients of token τ = j−(K−1) are complete (it needs gf
// up to τ+K−1 and gb up to τ), so one invocation owns dxz[τ] and writes it once, the sum of both
// parts in a fixed order: one writer per element, no second pass over dxz. (Splitting the
// directions over invocations would need two writers per element or a second pass.) The gradients
// of the K−1 tokens past a unit (gf) and before it (gb) are recomputed by the walk, not exchanged.
//   forward2: units of CHUNK tokens (the host picks ≤ 16: vim-tiny's L = 65 is 5 units of 13), one
//     invocation per (unit, e), workgroups of 256, flat index gid.x + gid.y · num_workgroups.x · 256,
//     e fastest; invocation (b, c, e) walks j = s0 … s1+K−2 (s0 = c·CHUNK, s1 = min(s0+CHUNK, L))
//     from the window x[s0−(K−1) … s0−1], writing out[j] for j < s1 and out_b at position L−1−t for
//     t = j−(K−1) ≥ s0. Short units make many invocations (vim-tiny: 491,520 of 16 steps, 4 loads in
//     flight each); the 2(K−1) halo tokens per unit come from cache, memory sees x once.
//   backward2: the geometry of conv1d_silu_backward (units of ≤ 128 tokens, 64 channels × 4 lanes,
//     grid (ceil(E / 64), G)); a step loads x, dout and dout_b of 4 tokens together (12 loads in
//     flight), and the lanes' sums go through lane_sum one direction after the other.

override B: u32;
override L: u32;
override E: u32;
override K: u32 = 4u;           // at most MAX_K
override REVERSE: bool = false;
override CHUNK: u32 = L;            // positions per unit (the last unit of a sample may be shorter)
override UNITS_PER_GROUP: u32 = 4u;
override ACCUMULATE: bool = false;

const MAX_K = 8u;
const WG = 256u;

@group(0) @binding(1) var<storage, read> xz: array<f32>;     // (B, L, 2E)
@group(0) @binding(2) var<storage, read> weight: array<f32>; // (E, K)
@group(0) @binding(3) var<storage, read> bias: array<f32>;   // (E)

fn src_token(s: u32) -> u32 {
  return select(s, L - 1u - s, REVERSE);
}

// x at token t; x_at: at direction position s (the same where REVERSE is false, as in the
// both-directions kernels, which never set it)
fn x_tok(b: u32, t: u32, e: u32) -> f32 {
  return xz[(b * L + t) * 2u * E + e];
}

fn x_at(b: u32, s: u32, e: u32) -> f32 {
  return x_tok(b, src_token(s), e);
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
@group(0) @binding(0) var<storage, read_write> dxz: array<f32>;     // (B, L, 2E), x half written
@group(0) @binding(4) var<storage, read> dout: array<f32>;          // (B, L, E)
@group(0) @binding(5) var<storage, read_write> partial: array<f32>; // (G, E·K + E)

// Eight window slots: slot 7 is the newest position t, slot 7 − j is position t − j;
// lo = slots 0…3, hi = slots 4…7. With K ≤ 4 only hi is used.
struct Win { lo: vec4f, hi: vec4f }

fn win_push(w: Win, v: f32) -> Win {
  if (K <= 4u) { return Win(w.lo, vec4f(w.hi.yzw, v)); }
  return Win(vec4f(w.lo.yzw, w.hi.x), vec4f(w.hi.yzw, v));
}

fn win_dot(a: Win, b: Win) -> f32 {
  if (K <= 4u) { return dot(a.hi, b.hi); }
  return dot(a.lo, b.lo) + dot(a.hi, b.hi);
}

fn win_set(w: ptr<function, Win>, slot: u32, v: f32) {
  if (slot < 4u) { (*w).lo[slot] = v; } else { (*w).hi[slot - 4u] = v; }
}

fn win_get(w: Win, slot: u32) -> f32 {
  return select(w.hi[slot & 3u], w.lo[slot & 3u], slot < 4u);
}

fn zero_win() -> Win {
  return Win(vec4f(0.0), vec4f(0.0));
}

const WIN = 8u;  // window slots (MAX_K)

// The window of x at direction positions s0−(K−1) … s0−1 (zero before 0) in slots WIN−K+1 … WIN−1.
fn x_halo(b: u32, s0: u32, e: u32) -> Win {
  var xw = zero_win();
  for (var j = 1u; j < K; j++) {
    let ok = s0 + j >= K;
    win_set(&xw, WIN - K + j, select(0.0, x_at(b, select(0u, s0 + j - K, ok), e), ok));
  }
  return xw;
}

const COLS = 64u;
const LANES = 4u;
const STEP = 4u; // positions loaded together
var<workgroup> lane_sum: array<f32, 2304>; // [lane][j ≤ MAX_K][channel]: LANES · (MAX_K + 1) · COLS

@compute @workgroup_size(64, 4)
fn conv1d_silu_backward(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let e = wg.x * COLS + lid.x;
  let grp = wg.y;
  let chunks = (L + CHUNK - 1u) / CHUNK;
  let u0 = grp * UNITS_PER_GROUP;
  let u1 = min(u0 + UNITS_PER_GROUP, B * chunks);
  var dw = zero_win(); // Σ g · x at slot WIN−K+k for tap k
  var db = 0.0;
  if (e < E) {
    // taps at the window's end (slot WIN−K+k = weight[e,k]) for pre; reversed (slot WIN−1−k =
    // weight[e,k]) for dx, which takes g at positions s+K−1−k = t−k
    var wpre = zero_win();
    var wdx = zero_win();
    for (var k = 0u; k < K; k++) {
      let wk = weight[e * K + k];
      win_set(&wpre, WIN - K + k, wk);
      win_set(&wdx, WIN - 1u - k, wk);
    }
    let bias_e = bias[e];
    for (var u = u0 + lid.y; u < u1; u += LANES) {
      let b = u / chunks;
      let s0 = (u - b * chunks) * CHUNK;
      let s1 = min(s0 + CHUNK, L);
      // x at positions s0−(K−1) … s0−1 (zero before 0); g before s0 is never used
      var xw = x_halo(b, s0, e);
      var gw = zero_win();
      // steps t = s0 … s1+K−2, STEP at a time (loads clamped into range)
      for (var t0 = s0; t0 + 1u < s1 + K; t0 += STEP) {
        let tc = vec4u(min(vec4u(t0) + vec4u(0u, 1u, 2u, 3u), vec4u(L - 1u)));
        let xs = vec4f(x_at(b, tc.x, e), x_at(b, tc.y, e), x_at(b, tc.z, e), x_at(b, tc.w, e));
        let row = b * L;
        let ds = vec4f(dout[(row + tc.x) * E + e], dout[(row + tc.y) * E + e], dout[(row + tc.z) * E + e],
                       dout[(row + tc.w) * E + e]);
        for (var i = 0u; i < STEP; i++) {
          let t = t0 + i;
          if (t + 1u >= s1 + K) { break; }
          var g = 0.0; // past L−1 the gradient is zero
          if (t < L) {
            xw = win_push(xw, xs[i]);
            g = ds[i] * silu_grad(bias_e + win_dot(wpre, xw));
            if (t < s1) {
              db += g;
              dw = Win(dw.lo + g * xw.lo, dw.hi + g * xw.hi);
            }
          }
          gw = win_push(gw, g);
          if (t + 1u >= s0 + K) { // s = t−(K−1) ≥ s0: its K gradients g[s … s+K−1] are in gw
            let o = (b * L + src_token(t + 1u - K)) * 2u * E + e;
            let d = win_dot(wdx, gw);
            if (ACCUMULATE) { dxz[o] += d; } else { dxz[o] = d; }
          }
        }
      }
    }
  }
  // The K + 1 sums of this channel from the four lanes, then added in lane order.
  for (var j = 0u; j <= K; j++) {
    var v = db;
    if (j < K) { v = win_get(dw, WIN - K + j); }
    lane_sum[(lid.y * (MAX_K + 1u) + j) * COLS + lid.x] = v;
  }
  workgroupBarrier();
  let X = E * K + E;
  let f = lid.y * COLS + lid.x;
  for (var q = f; q < (K + 1u) * COLS; q += LANES * COLS) {
    let j = q / COLS;
    let c = q - j * COLS;
    let ec = wg.x * COLS + c;
    if (ec < E) {
      let st = (MAX_K + 1u) * COLS;
      let i = j * COLS + c;
      let s = ((lane_sum[i] + lane_sum[st + i]) + lane_sum[2u * st + i]) + lane_sum[3u * st + i];
      let col = select(E * K + ec, ec * K + j, j < K);
      partial[grp * X + col] = s;
    }
  }
}

// ---- both directions in one pass ----------------------------------------------------------------
// conv1d_silu_forward2 / conv1d_silu_backward2: the two directions of a Vim block (see the second
// header comment below), each with its own weight and bias (…_b: the reversed direction, conv1d_b).
@group(0) @binding(4) var<storage, read_write> out_b: array<f32>; // (B, L, E) reversed order (forward2)
@group(0) @binding(5) var<storage, read> weight_b: array<f32>;    // (E, K)
@group(0) @binding(6) var<storage, read> bias_b: array<f32>;      // (E)
@group(0) @binding(7) var<storage, read> dout_b: array<f32>;      // (B, L, E) reversed order (backward2)
@group(0) @binding(8) var<storage, read_write> partial2: array<f32>; // (G, 2·(E·K + E))


@compute @workgroup_size(256)
fn conv1d_silu_forward2(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let idx = gid.x + gid.y * nwg.x * WG;
  let chunks = (L + CHUNK - 1u) / CHUNK;
  if (idx >= B * chunks * E) { return; }
  let unit = idx / E;
  let e = idx - unit * E;
  let b = unit / chunks;
  let s0 = (unit - b * chunks) * CHUNK;
  let s1 = min(s0 + CHUNK, L);
  // forward direction: weight[e,k] on x[j−(K−1)+k] = slot WIN−K+k;
  // reversed direction at token t = j−(K−1): weight_b[e,k] on x[t+(K−1)−k] = x[j−k] = slot WIN−1−k
  var wf = zero_win();
  var wb = zero_win();
  for (var k = 0u; k < K; k++) {
    win_set(&wf, WIN - K + k, weight[e * K + k]);
    win_set(&wb, WIN - 1u - k, weight_b[e * K + k]);
  }
  let bf = bias[e];
  let bb = bias_b[e];
  var xw = x_halo(b, s0, e);
  let row = b * L;
  // steps j = s0 … s1+K−2, STEP tokens loaded together (clamped; zero past L−1)
  for (var t0 = s0; t0 + 1u < s1 + K; t0 += STEP) {
    let tc = min(vec4u(t0) + vec4u(0u, 1u, 2u, 3u), vec4u(L - 1u));
    let xs = vec4f(x_tok(b, tc.x, e), x_tok(b, tc.y, e), x_tok(b, tc.z, e), x_tok(b, tc.w, e));
    for (var i = 0u; i < STEP; i++) {
      let j = t0 + i;
      if (j + 1u >= s1 + K) { break; }
      xw = win_push(xw, select(0.0, xs[i], j < L));
      if (j < s1) {
        let p = bf + win_dot(wf, xw);
        out[(row + j) * E + e] = p * sigmoid(p);
      }
      if (j + 1u >= s0 + K) { // t = j−(K−1) ≥ s0: its window x[t … t+K−1] is complete
        let p = bb + win_dot(wb, xw);
        out_b[(row + L + K - 2u - j) * E + e] = p * sigmoid(p); // direction position L−1−t
      }
    }
  }
}

@compute @workgroup_size(64, 4)
fn conv1d_silu_backward2(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let e = wg.x * COLS + lid.x;
  let grp = wg.y;
  let chunks = (L + CHUNK - 1u) / CHUNK;
  let u0 = grp * UNITS_PER_GROUP;
  let u1 = min(u0 + UNITS_PER_GROUP, B * chunks);
  var dwf = zero_win(); // Σ gf · x, tap k at slot WIN−K+k
  var dwb = zero_win(); // Σ gb · x, tap k at slot WIN−1−k
  var dbf = 0.0;
  var dbb = 0.0;
  if (e < E) {
    // gf[j] needs weight[e,k] on x[j−(K−1)+k] (slot WIN−K+k); dx[τ]'s forward part takes
    // gf[τ+(K−1)−k] (slot WIN−1−k of the gf window). gb[t] needs weight_b[e,k] on x[t+(K−1)−k]
    // (slot WIN−1−k when x[t+K−1] is the newest); dx[τ]'s reversed part takes gb[τ−(K−1)+k]
    // (slot WIN−K+k of the gb window).
    var wf_pre = zero_win();
    var wf_dx = zero_win();
    var wb_pre = zero_win();
    var wb_dx = zero_win();
    for (var k = 0u; k < K; k++) {
      let wk = weight[e * K + k];
      win_set(&wf_pre, WIN - K + k, wk);
      win_set(&wf_dx, WIN - 1u - k, wk);
      let vk = weight_b[e * K + k];
      win_set(&wb_pre, WIN - 1u - k, vk);
      win_set(&wb_dx, WIN - K + k, vk);
    }
    let bf = bias[e];
    let bb = bias_b[e];
    for (var u = u0 + lid.y; u < u1; u += LANES) {
      let b = u / chunks;
      let s0 = (u - b * chunks) * CHUNK;
      let s1 = min(s0 + CHUNK, L);
      let row = b * L;
      var xw = x_halo(b, s0, e);
      var gfw = zero_win(); // gf[j−7 … j]
      var gbw = zero_win(); // gb[j−(K−1)−7 … j−(K−1)]
      // steps j = s0 … s1+K−2, STEP at a time (loads clamped into range)
      for (var t0 = s0; t0 + 1u < s1 + K; t0 += STEP) {
        let jv = vec4u(t0) + vec4u(0u, 1u, 2u, 3u);
        let tc = min(jv, vec4u(L - 1u));
        // the reversed direction's token t = j−(K−1), clamped into 0 … L−1, at direction position L−1−t
        let th = min(max(jv, vec4u(K - 1u)) - vec4u(K - 1u), vec4u(L - 1u));
        let xs = vec4f(x_tok(b, tc.x, e), x_tok(b, tc.y, e), x_tok(b, tc.z, e), x_tok(b, tc.w, e));
        let dsf = vec4f(dout[(row + tc.x) * E + e], dout[(row + tc.y) * E + e], dout[(row + tc.z) * E + e],
                        dout[(row + tc.w) * E + e]);
        let rb = row + L - 1u;
        let dsb = vec4f(dout_b[(rb - th.x) * E + e], dout_b[(rb - th.y) * E + e], dout_b[(rb - th.z) * E + e],
                        dout_b[(rb - th.w) * E + e]);
        for (var i = 0u; i < STEP; i++) {
          let j = t0 + i;
          if (j + 1u >= s1 + K) { break; }
          xw = win_push(xw, select(0.0, xs[i], j < L)); // x[j−7 … j], zero past L−1
          var gf = 0.0; // past L−1 the gradient is zero
          if (j < L) {
            gf = dsf[i] * silu_grad(bf + win_dot(wf_pre, xw));
            if (j < s1) {
              dbf += gf;
              dwf = Win(dwf.lo + gf * xw.lo, dwf.hi + gf * xw.hi);
            }
          }
          gfw = win_push(gfw, gf);
          var gb = 0.0; // before token 0 the gradient is zero
          if (j + 1u >= K) { // t = j−(K−1) ≥ 0 (and t ≤ s1−1 < L): x[t … t+K−1] is the window
            gb = dsb[i] * silu_grad(bb + win_dot(wb_pre, xw));
            if (j + 1u >= s0 + K) { // t ≥ s0: the unit's own
              dbb += gb;
              dwb = Win(dwb.lo + gb * xw.lo, dwb.hi + gb * xw.hi);
            }
          }
          gbw = win_push(gbw, gb);
          if (j + 1u >= s0 + K) { // τ = j−(K−1) ≥ s0: gf[τ … τ+K−1] and gb[τ−(K−1) … τ] are known
            let o = (row + j + 1u - K) * 2u * E + e;
            let df = win_dot(wf_dx, gfw);
            let db = win_dot(wb_dx, gbw);
            if (ACCUMULATE) { dxz[o] = (dxz[o] + df) + db; } else { dxz[o] = df + db; }
          }
        }
      }
    }
  }
  // Per direction, the K + 1 sums of this channel from the four lanes, added in lane order.
  let X = E * K + E;
  let st = (MAX_K + 1u) * COLS;
  for (var r = 0u; r < 2u; r++) {
    for (var j = 0u; j <= K; j++) {
      var v = select(dbf, dbb, r == 1u);
      if (j < K) {
        v = select(win_get(dwf, WIN - K + j), win_get(dwb, WIN - 1u - j), r == 1u);
      }
      lane_sum[(lid.y * (MAX_K + 1u) + j) * COLS + lid.x] = v;
    }
    workgroupBarrier();
    for (var q = lid.y * COLS + lid.x; q < (K + 1u) * COLS; q += LANES * COLS) {
      let j = q / COLS;
      let c = q - j * COLS;
      let ec = wg.x * COLS + c;
      if (ec < E) {
        let i = j * COLS + c;
        let s = ((lane_sum[i] + lane_sum[st + i]) + lane_sum[2u * st + i]) + lane_sum[3u * st + i];
        let col = select(E * K + ec, ec * K + j, j < K);
        partial2[(2u * grp + r) * X + col] = s;
      }
    }
    workgroupBarrier();
  }
}
