// The input side of Vim: pixel normalisation as patch rows, and the token sequence.
//
//   normalize_patches: patches (B·Np, 3·P·P) from images (B, 3, H, W) u8, four pixels per u32 word
//     (little-endian: pixel i is byte i % 4 of word i / 4). Row b·Np + py·(W/P) + px, column
//     (c·P + i)·P + j holds (img[b, c, py·P+i, px·P+j] / 255 − MEAN_c) / STD_c, which is the
//     flattening of patch_embed.proj.weight (D, 3, P, P): the patch embedding is then the matmul
//     patches · weightᵀ + bias (D, 3P²) → (B·Np, D).
//   tokens_forward: out (B, L, D) = [patches 0…clsPos−1, cls_token, patches clsPos…Np−1] + pos_embed,
//     with L = Np + 1, clsPos = floor(Np / 2); patches (B, Np, D), cls_token (D), pos_embed (L, D).
//   tokens_backward_patches: dpatches (B, Np, D) (= or +=) dout (B, L, D) at the patch tokens.
//   tokens_backward_params: dpos_embed (L, D) (= or +=) Σ_b dout[b]; dcls_token (D) (= or +=)
//     Σ_b dout[b, clsPos] — one invocation per (l, d) summing over b in order (deterministic).
//
// Elementwise grids: workgroups of 256 invocations, one per output element, flat index
// gid.x + gid.y · num_workgroups.x · 256 (y folds grids beyond the per-dimension limit).

override B: u32;
override D: u32 = 1u;   // model width (tokens)
override Np: u32 = 1u;  // patch tokens (tokens)
override H: u32 = 1u;   // image height (normalize)
override W: u32 = 1u;   // image width (normalize)
override P: u32 = 1u;   // patch size (normalize)
override MEAN0: f32 = 0.0;
override MEAN1: f32 = 0.0;
override MEAN2: f32 = 0.0;
override STD0: f32 = 1.0;
override STD1: f32 = 1.0;
override STD2: f32 = 1.0;
override ACCUMULATE: bool = false;

const WG = 256u;

fn flat_index(gid: vec3u, nwg: vec3u) -> u32 {
  return gid.x + gid.y * nwg.x * WG;
}

// ---- normalize_patches --------------------------------------------------------------------------
@group(0) @binding(0) var<storage, read_write> np_out: array<f32>;  // (B·Np, 3·P·P)
@group(0) @binding(1) var<storage, read> np_images: array<u32>;     // (B, 3, H, W) bytes

@compute @workgroup_size(256)
fn normalize_patches(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let idx = flat_index(gid, nwg);
  let F = 3u * P * P;          // patch features
  let Wp = W / P;
  let Npat = (H / P) * Wp;
  if (idx >= B * Npat * F) { return; }
  let row = idx / F;
  let f = idx - row * F;
  let b = row / Npat;
  let t = row - b * Npat;
  let py = t / Wp;
  let px = t - py * Wp;
  let c = f / (P * P);
  let ij = f - c * P * P;
  let i = ij / P;
  let j = ij - i * P;
  let pix = ((b * 3u + c) * H + py * P + i) * W + px * P + j;
  let byte = (np_images[pix / 4u] >> ((pix % 4u) * 8u)) & 0xffu;
  var mean = MEAN0;
  var sd = STD0;
  if (c == 1u) { mean = MEAN1; sd = STD1; }
  if (c == 2u) { mean = MEAN2; sd = STD2; }
  np_out[idx] = (f32(byte) / 255.0 - mean) / sd;
}

// ---- tokens_forward -----------------------------------------------------------------------------
@group(0) @binding(0) var<storage, read_write> tf_out: array<f32>;   // (B, L, D)
@group(0) @binding(1) var<storage, read> tf_patches: array<f32>;     // (B, Np, D)
@group(0) @binding(2) var<storage, read> tf_cls: array<f32>;         // (D)
@group(0) @binding(3) var<storage, read> tf_pos: array<f32>;         // (L, D)

@compute @workgroup_size(256)
fn tokens_forward(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let idx = flat_index(gid, nwg);
  let L = Np + 1u;
  if (idx >= B * L * D) { return; }
  let bt = idx / D;
  let d = idx - bt * D;
  let b = bt / L;
  let t = bt - b * L;
  let cls_pos = Np / 2u;
  var x: f32;
  if (t == cls_pos) {
    x = tf_cls[d];
  } else {
    let s = select(t - 1u, t, t < cls_pos); // the patch this token copies
    x = tf_patches[(b * Np + s) * D + d];
  }
  tf_out[idx] = x + tf_pos[t * D + d];
}

// ---- tokens_backward ----------------------------------------------------------------------------
@group(0) @binding(0) var<storage, read_write> tbp_dpatches: array<f32>; // (B, Np, D)
@group(0) @binding(1) var<storage, read> tbp_dout: array<f32>;           // (B, L, D)

@compute @workgroup_size(256)
fn tokens_backward_patches(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let idx = flat_index(gid, nwg);
  if (idx >= B * Np * D) { return; }
  let bs = idx / D;
  let d = idx - bs * D;
  let b = bs / Np;
  let s = bs - b * Np;
  let t = select(s + 1u, s, s < Np / 2u); // the token that copied patch s
  let g = tbp_dout[(b * (Np + 1u) + t) * D + d];
  if (ACCUMULATE) { tbp_dpatches[idx] += g; } else { tbp_dpatches[idx] = g; }
}

@group(0) @binding(0) var<storage, read_write> tbq_dcls: array<f32>;  // (D)
@group(0) @binding(1) var<storage, read_write> tbq_dpos: array<f32>;  // (L, D)
@group(0) @binding(2) var<storage, read> tbq_dout: array<f32>;        // (B, L, D)

@compute @workgroup_size(256)
fn tokens_backward_params(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let idx = flat_index(gid, nwg);
  let L = Np + 1u;
  if (idx >= L * D) { return; }
  var acc = 0.0;
  for (var b = 0u; b < B; b++) {
    acc += tbq_dout[b * L * D + idx];
  }
  if (ACCUMULATE) { tbq_dpos[idx] += acc; } else { tbq_dpos[idx] = acc; }
  let t = idx / D;
  if (t == Np / 2u) {
    let d = idx - t * D;
    if (ACCUMULATE) { tbq_dcls[d] += acc; } else { tbq_dcls[d] = acc; }
  }
}
