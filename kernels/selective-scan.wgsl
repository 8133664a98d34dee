// The selective scan of one Mamba direction, with its softplus, D skip, SiLU(z) gate and the
// direction's token reversal of z fused in (src/reference/selective-scan.ts holds the math).
//
//   Δ_t = softplus(Δraw_t + dt_bias)   A = −exp(A_log)   a_t = exp(Δ_t A)
//   h_t = a_t ⊙ h_{t−1} + (Δ_t u_t) ⊗ B_t,  y_t = h_t · C_t + D ⊙ u_t,  out_t = y_t ⊙ SiLU(z_t)
//
// Tensors (f32, row-major; "direction order" = token t of this direction's sequence):
//   u, delta_raw, out, dout, du, ddelta_raw  (B, L, E)   direction order
//   xdbl, dxdbl (B, L, R+2N): B_t = columns R…R+N−1, C_t = columns R+N…R+2N−1 (direction order);
//               columns 0…R−1 (the Δ low-rank input) are neither read nor written here
//   xz, dxz (B, L, 2E): z = columns E…2E−1 in ORIGINAL token order: with REVERSE, step t uses
//               row L−1−t; the x half of dxz is never touched
//   dt_bias, Dskip, ddt_bias, dDskip (E);  A_log, dA_log (E, N)
//   ckpt     (B, NSEG−1, NV, E) vec4   backward scratch: the state entering segments 1…NSEG−1
//   part_bc  (B, NWG, L, 2N)           backward scratch: per-workgroup sums over channels of [dB_t | dC_t]
//   part_par (B, N+2, E)               backward scratch: per-sample rows 0…N−1 dA_log (already ⊙ A),
//                                      N dDskip, N+1 ddt_bias
// The N states of a channel are held as NV = ceil(N/4) vec4 (states N…4NV−1 are padding whose
// B_t and C_t are 0, so they stay 0).
//
// selective_scan_forward: grid (NWG = ceil(E / WG), B) of WG invocations; invocation = (b, e)
//   holds its states in registers and walks the L tokens, loading the u, Δraw, z of the token FA
//   ahead while it computes the current one (with EXP2 the decay is exp2 of Δ·A log2 e). The
//   workgroup covers WG channels of ONE sample and stages
//   that sample's B_t, C_t in workgroup memory, TC tokens at a time, so every channel reads them
//   from there (as vec4 broadcasts). Nothing but out is stored. With FUSE_DT (dt_proj fused) it
//   stages the token's dt_low = xdbl[t, 0…R−1] with them and computes Δraw_t = dt_low · dt_weight[e]
//   itself (R FMAs a token, against a dt_proj matmul dispatch writing Δraw and the scan reading it);
//   WRITE_DELTA also stores Δraw for the backward. With CKPT_S > 0 (training) it also writes the
//   state entering each segment of CKPT_S tokens to ckpt, in the backward's layout, so that the
//   backward (CKPT_IN, the same S) skips its pass 1. With COMBINE the combine of the two
//   directions is fused in: out holds, on entry, the other direction's output (B, L, E) in original
//   token order, and token t's output lands at its original token t' = (REVERSE ? L−1−t : t) as
//   out[b,t'] = (out[b,t'] + y_t ⊙ SiLU(z_t)) · 0.5 (· scale[SCALE_OFFSET + b] with SCALED), the
//   order of combine_forward(_scaled) in combine.wgsl; the model's backward direction writes its
//   block's combined output this way, with no y_b buffer and no combine dispatch.
// selective_scan_backward: same grid; segments of S = TC tokens, NSEG = ceil(L / S).
//   Pass 1 walks the tokens of segments 0…NSEG−2 forward, KB at a time, and writes the state
//   entering each following segment to ckpt (the only state that leaves the chip); with CKPT_IN
//   the forward wrote them and pass 1 is skipped (in all three backward kernels). With
//   DOUT_COMBINED (all three kernels) dout is the gradient of the COMBINED output (B, L, E) in
//   original token order, and token t's gradient is dout[b,t'] · 0.5 (· scale[SCALE_OFFSET + b]
//   with SCALED), t' its original token: combine_backward fused into the read (scan_dout).
//   Pass 2 takes the segments last to first: it recomputes the segment's states from its
//   checkpoint into workgroup memory (each invocation its own column [token][vec4][lane], so no
//   barrier guards them), then walks the segment backward with the carry a_{t+1} ⊙ gh_{t+1} in
//   registers, writing du, ddelta_raw and dz and accumulating gA, gD, gbias in registers. Per
//   token the [gB_t | gC_t] contributions of the WG channels go to workgroup memory and 2N
//   invocations add them up in channel order, one partial per workgroup into part_bc. At the end
//   each invocation writes its gA ⊙ A, gD, gbias to part_par. Inputs are loaded KB tokens at a
//   time, all loads issued before the first use. Three exps per state and token in all (pass 1,
//   the recomputation, the walk). No atomics: results repeat bit for bit.
//   Workgroup memory: S·NV·WG vec4 of states + WG·(2NV+1) of contributions + BCT·2NV of B, C.
//   Short segments (S = 3) keep it small; on an H200 through Dawn it is what limits how many
//   workgroups run at once, more than the checkpoint traffic that short segments add.
// selective_scan_backward_split: the streaming form with SPLIT lanes per channel (1, 2 or 4; grid
//   (ceil(E·SPLIT / WG), B) of WG invocations, WG / SPLIT channels a workgroup). Lane q of a channel
//   holds its state vec4 q·NV/SPLIT … (q+1)·NV/SPLIT−1, so each lane carries 1/SPLIT of the state
//   arrays; per-token sums over the channel's states (C·h for y, the du and dΔ sums) are lane
//   partials added by shuffles across the channel's lanes, the same bits in every lane. A segment's
//   S ≤ 4 recomputed states are held by the invocation (no s_h; with LANE_MEM's "states" in its own
//   slots of workgroup memory), so longer segments cut the checkpoints. A segment's loads,
//   recomputation and walk are per-token functions, called with constant token indices (UNROLL:
//   every token-indexed array can stay in registers) or in loops (the driver may keep those arrays
//   in local memory, and fewer registers). Per token the [gB | gC] sums over a subgroup's channels
//   are shuffles between the lanes that hold the same states, one partial row per subgroup as with
//   SGR above. Workgroup memory: the sample's B, C (L·2NV vec4), and LANE_MEM's arrays.
// selective_scan_reduce: both reductions of the backward's partials in one dispatch, workgroups of
//   RW = RP_COLS · RP_LANES invocations numbered w = wid.x + wid.y · nwg.x (folded into y past the
//   grid limit). Workgroups w < RBC: dxdbl[b, t, R + c] (= or += by ACC_BC) Σ_w' part_bc[b, w', t, c],
//   w' in order, RW outputs a workgroup. The next ceil((N+2)·E / RP_COLS): RP_COLS outputs × RP_LANES
//   batch lanes; lane y sums samples y, y + RP_LANES, … in order (B/RP_LANES loads in flight each),
//   then lane 0 adds the lane sums in order, and the sum lands in dA_log, dDskip or ddt_bias (= or
//   += by ACC_PAR).

override B: u32;              // batch (reduce kernels)
override L: u32;              // tokens
override E: u32;              // channels (inner width)
override N: u32;              // states, at most 4·NVMAX
override R: u32;              // Δ rank: B_t starts at column R of xdbl, whose rows hold R + 2N
override WG: u32 = 64u;       // channels (invocations) per workgroup of the scan kernels
override TC: u32;             // forward: tokens of B, C staged at once; backward: segment length S
override FA: u32 = 1u;        // forward: tokens whose u, Δraw, z (and combine input) are loaded ahead (≤ FAMAX)
override NWG: u32 = 1u;       // partial rows per sample of the scan (reduce)
override REVERSE: bool = false;
override ACC_DU: bool = false;      // du += instead of =
override ACC_DDELTA: bool = false;  // ddelta_raw += instead of =
override ACC_DZ: bool = false;      // dz += instead of = (both directions add into one dxz)
override ACC_BC: bool = false;      // reduce: += into dxdbl's B/C columns
override ACC_PAR: bool = false;     // reduce: += into dA_log, dDskip, ddt_bias
override NV: u32 = (N + 3u) / 4u;   // vec4 per state vector
override KB: u32 = 1u;              // backward: tokens whose inputs are loaded together (≤ KBMAX)
override BCT: u32 = TC;             // tokens s_bc holds (backward: max(S, KB); backward_stream, _split: L)
// For timing experiments only (results are then wrong): bit 0 skips the backward's per-token
// channel reduction, bit 1 its pass 1, bit 2 its recomputation of the segment's states; bit 3 makes
// backward_split's channel reduction sum the gB half alone, bit 4 writes dz where it would add it, bit 5
// makes backward_split read and write in direction order where REVERSE would reverse z and dout.
// In the forward and backward_split, bit 6 (64) takes the decay as 1 + x instead of an exponential
// and bit 7 (128) softplus and sigmoid as x and 1/2 + x/4; in the forward, bit 8 (256) stores no
// checkpoints, bit 9 (512) no Δraw, bit 10 (1024) takes Δraw as one staged dt_low value instead of
// its dot product with dt_proj's weight, and bit 11 (2048) stages B_t, C_t (and dt_low) only once,
// for the first chunk of tokens.
override DIAG: u32 = 0u;
override ADD_DZ: bool = ACC_DZ && (DIAG & 16u) == 0u;      // dz added to (ACC_DZ, less DIAG bit 4)
override REVERSE_IO: bool = REVERSE && (DIAG & 32u) == 0u; // z, dout at token L−1−t (REVERSE, less DIAG bit 5)
// backward_stream: the subgroup size when the per-token [gB | gC] channel sums are made by
// shuffles within each subgroup (no barrier; one partial per subgroup); 0 = through s_red.
// backward_split: the subgroup size (never 0).
override SGR: u32 = 0u;
override QP: u32 = 1u;              // backward_stream with SGR: NV rounded up to a power of two (≤ SGR)
override LOOKAHEAD: u32 = 1u;       // backward_stream, _split: 1 loads the next segment's inputs before computing this one, 0 when needed
// backward_split: lanes per channel (1, 2 or 4, dividing NV and at most SGR); each holds NV / SPLIT state vec4
override SPLIT: u32 = 1u;
override QS: u32 = 1u;              // backward_split: NV / SPLIT rounded up to a power of two (items of its shuffle sums)
// backward_split: gB and gC summed in one shuffle sum of 2·QS items (needs 2·QS ≤ SGR / SPLIT), else one sum each
override BCJ: bool = false;
override RED_ROWS: u32 = WG * (2u * NV + 1u); // vec4 rows of s_red (1 where nothing uses it)
override SH_ROWS: u32 = TC * NV * WG;          // vec4 rows of s_h (backward_stream: max((S−1)·NV·WG, 1))
// forward: dt_proj fused: Δraw_t = xdbl[t, 0…R−1] · dt_weight[e, :] is computed here, binding 2
// holds dt_proj's weight (E, R) instead of Δraw, and R ≤ 4·RVMAX
override FUSE_DT: bool = false;
override WRITE_DELTA: bool = false;   // forward with FUSE_DT: also write Δraw to f_delta_out (for the backward)
override CKPT_S: u32 = 0u;            // forward: write the state entering every segment of CKPT_S tokens to f_ckpt (0: none)
// forward with FA = 2: the tokens taken two at a time, each with its own slot of inputs loaded two
// tokens ahead (s0 even tokens, s1 odd), instead of slots moved down one each token, whose moves wait
// on the loads issued a token before (on an H200 the training forward 0.06 ms a step faster)
override PING: bool = FA == 2u;
override CKPT_IN: bool = false;        // backward: the forward wrote the checkpoints (CKPT_S = TC): no pass 1
// backward_split with CKPT_IN: Δraw recomputed from dt_low (xdbl's first R columns, staged in s_bc
// after the L tokens' [B_t | C_t], RV vec4 a token) and dt_proj's weight row (bound as g_delta_raw,
// (E, R); each lane's row in s_dtw, DTW_ROWS = RV·WG), the fused forward's dot product in its order,
// instead of read from a Δraw the forward stored
override DT_REC: bool = false;
override DTW_ROWS: u32 = 1u;
override RV: u32 = (R + 3u) / 4u;     // vec4 of dt_low values staged per token with FUSE_DT
override BCW: u32 = 2u * NV;          // vec4 staged per token in s_bc: B_t, C_t (and with FUSE_DT, RV of dt_low)
override COMBINE: bool = false;        // forward: out = (out + this direction's output at the original token) · 0.5 (· scale)
override DOUT_COMBINED: bool = false;  // backward: dout is the combined output's gradient, original order; read · 0.5 (· scale)
override SCALED: bool = false;         // with COMBINE or DOUT_COMBINED: × scale[SCALE_OFFSET + b] (the drop path)
override SCALE_OFFSET: u32 = 0u;       // this block's row of the (rows, B) factors
// backward_split: per-lane arrays held in workgroup memory instead of registers, each lane its own
// slots (no lane reads another's, so no barrier guards them): bit 0 A, bit 1 the gA sums, bit 2 the
// carry, bit 3 (8) the segment's states after its first token (sh[1 … S−1]); LM_ROWS = (bits set
// among the first three) · NV/SPLIT · WG vec4 rows, plus (S−1) · NV/SPLIT · WG with bit 3 (1 where none)
override LANE_MEM: u32 = 0u;
override LM_ROWS: u32 = 1u;
// backward_split's walk: bit 0 ("lean") sums gh ⊙ a_t ⊙ h_{t−1} once for both dΔ and dA_log and
// takes dΔ's u_t B_t term from the du sum (Σ gh (u B + A a h) = u Σ gh B + Σ A (gh a h)): two
// operations a state and token fewer, the same sums rounded in another order; bit 1 ("keep-a")
// keeps a_t = exp(Δ_t A) from the segment's recomputation for the walk: one exp a state and token
// fewer, S·NV/SPLIT vec4 more registers; bit 2 ("fold", with BCJ) takes the first halving of the
// [gB | gC] sum (gB_i with gC_i, at lane distance SGR/2) inside the walk, as each state vec4's items
// are computed, so QS vec4 of items are live across the walk instead of 2·QS (the same exchanges
// and adds: the same bits); bit 3 ("fold2", with fold and QS ≥ 2) takes the second halving there
// too (item j with j + QS/2, at lane distance SGR/4), as soon as the state vec4 of j + QS/2 is done
override WALK: u32 = 0u;
override FOLD2: bool = (WALK & 12u) == 12u && BCJ && QS >= 2u && (DIAG & 1u) == 0u;
// backward_split: every channel of every workgroup is one of the E (E a multiple of WG / SPLIT), so
// no lane needs its [gB | gC] items zeroed
override ALL_LIVE: bool = false;
// backward_split with one lane a channel and BCJ, where each item's group of SGR / (2·QS) lanes is 4
// or more: the [gB | gC] sums' halvings carried on into each item's vec4 (split_sum_scalar), so that
// every lane ends with one column of the token's partial row and the lanes store it together (the
// same sums in the same order, so the same bits as without)
override SCALAR_SUMS: bool = false;
// forward and backward_split: a_t = exp(Δ_t A) taken as exp2(Δ_t A log2(e)), A held pre-scaled by
// log2(e) (A_SCALE), so that the decay is one base-2 exponential; where A itself is a factor (dΔ,
// dA_log) the sums are scaled back by ln 2
override EXP2: bool = false;
const LOG2E = 1.4426950408889634;
const LN2 = 0.6931471805599453;
override A_SCALE: f32 = select(1.0, LOG2E, EXP2);

// exp(x), or with EXP2 exp2(x) for an x already scaled by log2(e)
fn decay(x: vec4<f32>) -> vec4<f32> {
  if ((DIAG & 64u) != 0u) { return 1.0 + x; } // timing only
  if (EXP2) { return exp2(x); }
  return exp(x);
}

// backward_split: the [gB | gC] rows of a segment's tokens summed over the workgroup's subgroups
// in workgroup memory (s_pbc, PBC_ROWS = S · (WG / SGR) · 2N floats), one partial row per workgroup
// and token instead of one per subgroup
override WGSUM: bool = false;
override PBC_ROWS: u32 = 1u;

// backward_split: the segment's recomputation and walk written out once per token (every per-token
// array indexed by constants, so it can stay in registers), or as loops over the tokens
override UNROLL: bool = true;

// NVMAX (vec4 of states the register arrays hold: ⌈N/4⌉ rounded up to a power of two, at most 8, so
// N ≤ 32) and SPLIT_ITEMS (2·NVMAX: most items of one of backward_split's shuffle sums) come from
// the prelude each pipeline is built with (scanPrelude): arrays no larger than the shape needs, so
// that what the driver keeps in local memory is no larger either
const KBMAX = 8u; // largest KB
const SMAX = 8u;  // backward_stream: longest segment
const RVMAX = 8u; // forward with FUSE_DT: R ≤ 32
const FAMAX = 8u;  // forward: most tokens whose inputs are loaded ahead
const FSTAGE = 8u; // forward: loads an invocation issues at once when it stages B_t, C_t
const SPLIT_SMAX = 4u;   // backward_split: longest segment

// ---- forward bindings ----
@group(0) @binding(0) var<storage, read_write> f_out: array<f32>;  // (B, L, E)
@group(0) @binding(1) var<storage, read> f_u: array<f32>;          // (B, L, E)
@group(0) @binding(2) var<storage, read> f_delta_raw: array<f32>;  // (B, L, E), or with FUSE_DT dt_proj's weight (E, R)
@group(0) @binding(3) var<storage, read> f_dt_bias: array<f32>;    // (E)
@group(0) @binding(4) var<storage, read> f_A_log: array<f32>;      // (E, N)
@group(0) @binding(5) var<storage, read> f_xdbl: array<f32>;       // (B, L, R+2N)
@group(0) @binding(6) var<storage, read> f_Dskip: array<f32>;      // (E)
@group(0) @binding(7) var<storage, read> f_xz: array<f32>;         // (B, L, 2E)
@group(0) @binding(8) var<storage, read_write> f_delta_out: array<f32>; // (B, L, E) with WRITE_DELTA; else a placeholder
@group(0) @binding(9) var<storage, read_write> f_ckpt: array<vec4<f32>>;    // (B, NSEG−1, NV, E) with CKPT_S > 0; else a placeholder
@group(0) @binding(10) var<storage, read> f_scale: array<f32>;             // (rows, B) with COMBINE and SCALED; else a placeholder

// ---- backward bindings ----
@group(0) @binding(0) var<storage, read_write> g_du: array<f32>;            // (B, L, E)
@group(0) @binding(1) var<storage, read_write> g_ddelta_raw: array<f32>;    // (B, L, E)
@group(0) @binding(2) var<storage, read_write> g_dxz: array<f32>;           // (B, L, 2E), z half
@group(0) @binding(3) var<storage, read_write> g_part_bc: array<f32>;       // (B, NWG, L, 2N)
@group(0) @binding(4) var<storage, read_write> g_part_par: array<f32>;      // (B, N+2, E)
@group(0) @binding(5) var<storage, read_write> g_ckpt: array<vec4<f32>>;    // (B, NSEG−1, NV, E)
@group(0) @binding(6) var<storage, read> g_dout: array<f32>;                // (B, L, E)
@group(0) @binding(7) var<storage, read> g_u: array<f32>;                   // (B, L, E)
@group(0) @binding(8) var<storage, read> g_delta_raw: array<f32>;           // (B, L, E)
@group(0) @binding(9) var<storage, read> g_dt_bias: array<f32>;             // (E)
@group(0) @binding(10) var<storage, read> g_A_log: array<f32>;              // (E, N)
@group(0) @binding(11) var<storage, read> g_xdbl: array<f32>;               // (B, L, R+2N)
@group(0) @binding(12) var<storage, read> g_Dskip: array<f32>;              // (E)
@group(0) @binding(13) var<storage, read> g_xz: array<f32>;                 // (B, L, 2E)
@group(0) @binding(14) var<storage, read> g_scale: array<f32>;              // (rows, B) with DOUT_COMBINED and SCALED; else a placeholder

// ---- reduce bindings ----
@group(0) @binding(0) var<storage, read_write> r_dxdbl: array<f32>;    // (B, L, R+2N)
@group(0) @binding(1) var<storage, read> r_part_bc: array<f32>;        // (B, NWG, L, 2N)
@group(0) @binding(2) var<storage, read_write> r_dA_log: array<f32>;   // (E, N)
@group(0) @binding(3) var<storage, read_write> r_dDskip: array<f32>;   // (E)
@group(0) @binding(4) var<storage, read_write> r_ddt_bias: array<f32>; // (E)
@group(0) @binding(5) var<storage, read> r_part_par: array<f32>;       // (B, N+2, E)
// with DIRS = 2 the second direction's parameter gradients (its dxdbl and partials follow the
// first's in the bindings above, at DX_OFF1, BC_OFF1, PAR_OFF1); else placeholders
@group(0) @binding(6) var<storage, read_write> r_dA_log1: array<f32>;   // (E, N)
@group(0) @binding(7) var<storage, read_write> r_dDskip1: array<f32>;   // (E)
@group(0) @binding(8) var<storage, read_write> r_ddt_bias1: array<f32>; // (E)

// [token][B_t (NV vec4) | C_t (NV vec4) | forward with FUSE_DT: dt_low (RV vec4)] of one sample, padding 0
var<workgroup> s_bc: array<vec4<f32>, BCT * BCW>;
// backward: the segment's states, [token][vec4 i][lane]; SH_ROWS rows (backward_stream: only the
// first S−1 tokens' are ever read back, so (S−1)·NV·WG, and one unused row for one-token segments)
var<workgroup> s_h: array<vec4<f32>, SH_ROWS>;
// backward: one token's contributions, [lane][gB (NV vec4) | gC (NV vec4) | pad]
var<workgroup> s_red: array<vec4<f32>, RED_ROWS>;
// reduce: [lane][parameter output]
var<workgroup> s_lane: array<f32, 1024>; // reduce: RP_COLS · RP_LANES ≤ 1024
// backward_split with LANE_MEM: [array][vec4 i][lane] (lm_row)
var<workgroup> s_lm: array<vec4<f32>, LM_ROWS>;
// backward_split with WGSUM: a segment's [gB | gC] rows, [token of the segment][subgroup][2N]
var<workgroup> s_pbc: array<f32, PBC_ROWS>;
var<workgroup> s_dtw: array<vec4<f32>, DTW_ROWS>;

// 1 / (1 + e^−x) for x ≥ 0, e^x / (1 + e^x) below: one exp and one division, no branch (a branch
// whose lanes disagree runs both sides, two exps and two divisions)
fn sigmoid(x: f32) -> f32 {
  if ((DIAG & 128u) != 0u) { return 0.5 + 0.25 * x; } // timing only
  let e = exp(-abs(x));
  return select(e, 1.0, x >= 0.0) / (1.0 + e);
}

// log(1 + y) for y ≥ 0, accurate when y is tiny (log(w)·y/(w−1) cancels the rounding of w = 1 + y).
fn log1p_pos(y: f32) -> f32 {
  let w = 1.0 + y;
  if (w == 1.0) { return y; }
  return log(w) * (y / (w - 1.0));
}

// softplus(x) = log(1 + e^x) = max(x, 0) + log(1 + e^−|x|), exact for every finite x.
fn softplus(x: f32) -> f32 {
  if ((DIAG & 128u) != 0u) { return x; } // timing only
  return max(x, 0.0) + log1p_pos(exp(-abs(x)));
}

// ============================================================================================
// Forward
// ============================================================================================

// Δraw = dt_low · wdt, dt_proj's row for the channel (zero past R), with dt_low's RV vec4 staged in
// s_bc from `row`: the fused forward's dot product, which backward_split's DT_REC repeats in the same
// order.
fn dt_dot(wdt: ptr<function, array<vec4<f32>, RVMAX>>, row: u32) -> f32 {
  var d4 = vec4<f32>(0.0);
  for (var j = 0u; j < RV; j++) { d4 += (*wdt)[j] * s_bc[row + j]; }
  return (d4.x + d4.y) + (d4.z + d4.w);
}

// Token t's inputs for selective_scan_forward: u, Δraw (unless FUSE_DT), z, and with COMBINE for a
// live invocation the other direction's output at the token's original position (the column is
// its own to write, and it reads each element before writing it).
fn fwd_in(b: u32, t: u32, ec: u32, e: u32, live: bool) -> vec4<f32> {
  let to = select(t, L - 1u - t, REVERSE);
  var r = vec4<f32>(f_u[(b * L + t) * E + ec], 0.0, f_xz[(b * L + to) * 2u * E + E + ec], 0.0);
  if (!FUSE_DT) { r.y = f_delta_raw[(b * L + t) * E + ec]; }
  if (COMBINE && live) { r.w = f_out[(b * L + to) * E + e]; }
  return r;
}

// Token t of selective_scan_forward (its B_t, C_t, dt_low at s_bc row `row`, its inputs `x` from
// fwd_in): the recurrence, the checkpoint where one is due, the output.
fn fwd_step(t: u32, row: u32, x: vec4<f32>, h: ptr<function, array<vec4<f32>, NVMAX>>, A: ptr<function, array<vec4<f32>, NVMAX>>,
            wdt: ptr<function, array<vec4<f32>, RVMAX>>, b: u32, e: u32, live: bool, bias: f32, Dv: f32, cscale: f32) {
  let uu = x.x;
  var draw = x.y;
  let z = x.z;
  let other = x.w;
  if (FUSE_DT) {
    if ((DIAG & 1024u) != 0u) { let d4 = s_bc[row + 2u * NV]; draw = (d4.x + d4.y) + (d4.z + d4.w); } // timing only
    else { draw = dt_dot(wdt, row + 2u * NV); }
    if (WRITE_DELTA && (DIAG & 512u) == 0u && live) { f_delta_out[(b * L + t) * E + e] = draw; }
  }
  let delta = softplus(draw + bias);
  let du = delta * uu;
  var y4 = vec4<f32>(0.0);
  for (var i = 0u; i < NV; i++) {
    (*h)[i] = decay(delta * (*A)[i]) * (*h)[i] + du * s_bc[row + i];
    y4 += s_bc[row + NV + i] * (*h)[i];
  }
  let cs = max(CKPT_S, 1u);
  if (CKPT_S > 0u && (DIAG & 256u) == 0u && live && (t + 1u) % cs == 0u && t + 1u < L) {
    let nseg = (L + cs - 1u) / cs;
    let slot = (t + 1u) / cs - 1u;
    for (var i = 0u; i < NV; i++) { f_ckpt[((b * (nseg - 1u) + slot) * NV + i) * E + e] = (*h)[i]; }
  }
  let y = Dv * uu + ((y4.x + y4.y) + (y4.z + y4.w));
  let yo = y * z * sigmoid(z);
  if (live) {
    if (COMBINE) {
      var cmb = (other + yo) * 0.5;
      if (SCALED) { cmb = cmb * cscale; }
      f_out[(b * L + select(t, L - 1u - t, REVERSE)) * E + e] = cmb;
    } else {
      f_out[(b * L + t) * E + e] = yo;
    }
  }
}

@compute @workgroup_size(WG)
fn selective_scan_forward(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let b = wid.y;
  let e = wid.x * WG + lid;
  let live = e < E;
  let ec = min(e, E - 1u); // a valid channel for the loads of idle invocations
  let stride = R + 2u * N;
  let per = 4u * BCW; // staged floats per token

  var A: array<vec4<f32>, NVMAX>; // A[e, :] = −exp(A_log[e, :]) (padding −1)
  var h: array<vec4<f32>, NVMAX>; // the state h_t[e, :]
  for (var i = 0u; i < NV; i++) {
    var a = vec4<f32>(0.0);
    for (var c = 0u; c < 4u; c++) {
      let n = 4u * i + c;
      if (n < N) { a[c] = f_A_log[ec * N + n]; }
    }
    A[i] = -exp(a) * A_SCALE;
    h[i] = vec4<f32>(0.0);
  }
  let bias = f_dt_bias[ec];
  let Dv = f_Dskip[ec];
  var wdt: array<vec4<f32>, RVMAX>; // with FUSE_DT: dt_proj's weight row e
  if (FUSE_DT) {
    for (var j = 0u; j < RV; j++) {
      for (var c = 0u; c < 4u; c++) {
        if (4u * j + c < R) { wdt[j][c] = f_delta_raw[ec * R + 4u * j + c]; }
      }
    }
  }

  // the inputs of the next tokens (fwd_in): with PING two slots, s0 for the next even token and s1
  // for the next odd one, each reloaded as it is taken, two tokens ahead; else FA slots, slot j
  // holding token t + j while token t is computed (slots past the last token repeat it, so every
  // load stays in the sample), moved down one each token
  var cscale = 1.0;
  if (COMBINE && live && SCALED) { cscale = f_scale[SCALE_OFFSET + b]; }
  var s0 = vec4<f32>(0.0);
  var s1 = vec4<f32>(0.0);
  if (PING) {
    s0 = fwd_in(b, 0u, ec, e, live);
    s1 = fwd_in(b, min(1u, L - 1u), ec, e, live);
  }
  var slots: array<vec4<f32>, FAMAX>;
  for (var j = 0u; j < select(FA, 0u, PING); j++) { slots[j] = fwd_in(b, min(j, L - 1u), ec, e, live); }

  for (var t0 = 0u; t0 < L; t0 += TC) {
    let tn = min(TC, L - t0);
    workgroupBarrier(); // everyone is done with the previous chunk of s_bc
    // FSTAGE values an invocation a round, all loads issued before the first store
    for (var base = lid; base < select(tn * per, 0u, t0 > 0u && (DIAG & 2048u) != 0u); base += FSTAGE * WG) {
      var v: array<f32, FSTAGE>;
      for (var j = 0u; j < FSTAGE; j++) {
        let k = min(base + j * WG, tn * per - 1u);
        let tt = k / per;
        let r = k - tt * per;
        let rowBase = (b * L + t0 + tt) * stride;
        var col = 0u; // dt_low's columns from 8·NV on; B_t's, C_t's padding reads a valid column
        if (r < 8u * NV) {
          let part = r / (4u * NV); // 0: B_t, 1: C_t
          col = R + part * N + min(r - part * 4u * NV, N - 1u);
        } else {
          col = min(r - 8u * NV, max(R, 1u) - 1u);
        }
        v[j] = f_xdbl[rowBase + col];
      }
      for (var j = 0u; j < FSTAGE; j++) {
        let k = base + j * WG;
        if (k < tn * per) {
          let tt = k / per;
          let r = k - tt * per;
          var keep = false;
          if (r < 8u * NV) { keep = r - (r / (4u * NV)) * 4u * NV < N; } else { keep = r - 8u * NV < R; }
          s_bc[tt * BCW + r / 4u][r % 4u] = select(0.0, v[j], keep);
        }
      }
    }
    workgroupBarrier();
    if (PING) { // token t from s0 where t is even, else s1
      var tt = 0u;
      if ((t0 & 1u) == 1u) { // (an odd TC): the chunk starts on an odd token
        let x1 = s1;
        if (t0 + 2u < L) { s1 = fwd_in(b, t0 + 2u, ec, e, live); }
        fwd_step(t0, 0u, x1, &h, &A, &wdt, b, e, live, bias, Dv, cscale);
        tt = 1u;
      }
      for (; tt < tn; tt += 2u) {
        let t = t0 + tt;
        let x0 = s0;
        if (t + 2u < L) { s0 = fwd_in(b, t + 2u, ec, e, live); }
        fwd_step(t, tt * BCW, x0, &h, &A, &wdt, b, e, live, bias, Dv, cscale);
        if (tt + 1u < tn) {
          let x1 = s1;
          if (t + 3u < L) { s1 = fwd_in(b, t + 3u, ec, e, live); }
          fwd_step(t + 1u, (tt + 1u) * BCW, x1, &h, &A, &wdt, b, e, live, bias, Dv, cscale);
        }
      }
    } else {
      for (var tt = 0u; tt < tn; tt++) {
        let t = t0 + tt;
        let x = slots[0];
        for (var j = 0u; j + 1u < FA; j++) { slots[j] = slots[j + 1u]; }
        if (t + FA < L) { slots[FA - 1u] = fwd_in(b, t + FA, ec, e, live); }
        fwd_step(t, tt * BCW, x, &h, &A, &wdt, b, e, live, bias, Dv, cscale);
      }
    }
  }
}

// ============================================================================================
// Backward
// ============================================================================================

// Stage tokens t0 … t0+tn−1 of sample b's [B_t | C_t] in s_bc (barriers on both sides).
fn load_bc_backward(b: u32, t0: u32, tn: u32, lid: u32) {
  let per = 8u * NV;
  let count = tn * per;
  workgroupBarrier();
  for (var base = lid; base < count; base += 4u * WG) {
    var v: array<f32, 4>;
    for (var j = 0u; j < 4u; j++) {
      let k = min(base + j * WG, count - 1u);
      let tt = k / per;
      let r = k - tt * per;
      let part = r / (4u * NV);
      let n = min(r - part * 4u * NV, N - 1u);
      v[j] = g_xdbl[(b * L + t0 + tt) * (R + 2u * N) + R + part * N + n];
    }
    for (var j = 0u; j < 4u; j++) {
      let k = base + j * WG;
      if (k < count) {
        let tt = k / per;
        let r = k - tt * per;
        let part = r / (4u * NV);
        let n = r - part * 4u * NV;
        s_bc[(tt * 2u + part) * NV + n / 4u][n % 4u] = select(0.0, v[j], n < N);
      }
    }
  }
  if (DT_REC) { // dt_low of the same tokens, RV vec4 each (zero past R), after all L tokens' [B_t | C_t]
    for (var k = lid; k < tn * 4u * RV; k += WG) {
      let tt = k / (4u * RV);
      let r = k - tt * 4u * RV;
      var v = 0.0;
      if (r < R) { v = g_xdbl[(b * L + t0 + tt) * (R + 2u * N) + r]; }
      s_bc[L * 2u * NV + (t0 + tt) * RV + r / 4u][r % 4u] = v;
    }
  }
  workgroupBarrier();
}

// The gradient of this direction's output at token t (direction order) of sample b, channel ec:
// dout's, or with DOUT_COMBINED the combined output's at the original token, · 0.5 (· scale), as
// combine_backward(_scaled) computes it (the combine's backward fused into the read).
fn scan_dout(b: u32, t: u32, ec: u32) -> f32 {
  if (!DOUT_COMBINED) { return g_dout[(b * L + t) * E + ec]; }
  let g = g_dout[(b * L + select(t, L - 1u - t, REVERSE_IO)) * E + ec] * 0.5;
  if (SCALED) { return g * g_scale[SCALE_OFFSET + b]; }
  return g;
}

// A[e, :] = −exp(A_log[e, :]) for the backward kernels (padding states −1).
fn backward_A(ec: u32) -> array<vec4<f32>, NVMAX> {
  var A: array<vec4<f32>, NVMAX>;
  for (var i = 0u; i < NV; i++) {
    var a = vec4<f32>(0.0);
    for (var c = 0u; c < 4u; c++) {
      let n = 4u * i + c;
      if (n < N) { a[c] = g_A_log[ec * N + n]; }
    }
    A[i] = -exp(a);
  }
  return A;
}

// u and Δraw of tokens t0 … t0+tn−1 (tn ≤ KB) of sample b, channel ec; the slots from tn on
// repeat the last token, so every load stays inside the sample.
struct TokenBlock { u: array<f32, KBMAX>, d: array<f32, KBMAX> }
fn load_token_block(b: u32, t0: u32, tn: u32, ec: u32) -> TokenBlock {
  var blk: TokenBlock;
  for (var k = 0u; k < KB; k++) {
    let row = (b * L + t0 + min(k, tn - 1u)) * E + ec;
    blk.u[k] = g_u[row];
    blk.d[k] = g_delta_raw[row];
  }
  return blk;
}

// Pass 1 of the backward kernels on one block of tokens t0 … t0+tn−1: the forward recurrence of
// state h from the block's u, Δraw and B_t (token t0 + k's at s_bc[(bc0 + k)·2NV]), writing the
// state that enters each following segment of S = TC tokens to ckpt.
fn pass1_block(h: ptr<function, array<vec4<f32>, NVMAX>>, A: array<vec4<f32>, NVMAX>, blk: TokenBlock, bias: f32,
               b: u32, e: u32, live: bool, t0: u32, tn: u32, bc0: u32) {
  let nseg = (L + TC - 1u) / TC;
  for (var k = 0u; k < KB; k++) {
    if (k < tn) {
      let delta = softplus(blk.d[k] + bias);
      let du = delta * blk.u[k];
      for (var i = 0u; i < NV; i++) {
        (*h)[i] = exp(delta * A[i]) * (*h)[i] + du * s_bc[(bc0 + k) * 2u * NV + i];
      }
      let t = t0 + k;
      if (live && (t + 1u) % TC == 0u) {
        let slot = (t + 1u) / TC - 1u;
        for (var i = 0u; i < NV; i++) { g_ckpt[((b * (nseg - 1u) + slot) * NV + i) * E + e] = (*h)[i]; }
      }
    }
  }
}

// The gate's gradients at one token: y_t = C_t · h_t + D u_t recomputed from the state h (C_t
// from s_bc at `cbase`), then gy = gout · SiLU(z) and gz = gout · y · SiLU'(z).
struct GateGrads { gy: f32, gz: f32 }
fn gate_grads(h: array<vec4<f32>, NVMAX>, cbase: u32, Dv: f32, uu: f32, gout: f32, z: f32) -> GateGrads {
  var y4 = vec4<f32>(0.0); // four independent partial sums of C_t · h_t
  for (var i = 0u; i < NV; i++) { y4 += s_bc[cbase + i] * h[i]; }
  let y = Dv * uu + ((y4.x + y4.y) + (y4.z + y4.w));
  let sz = sigmoid(z);
  return GateGrads(gout * z * sz, gout * y * sz * (1.0 + z * (1.0 - sz)));
}

// One token's du and dΔraw (= or += by ACC_DU, ACC_DDELTA), and dz (dz_sum: = or + by ADD_DZ).
fn store_token_grads(rowT: u32, ziT: u32, gu: f32, gdr: f32, dz: f32) {
  if (ACC_DU) { g_du[rowT] += gu; } else { g_du[rowT] = gu; }
  if (ACC_DDELTA) { g_ddelta_raw[rowT] += gdr; } else { g_ddelta_raw[rowT] = gdr; }
  g_dxz[ziT] = dz;
}

// What dz at ziT becomes: gz, or with ADD_DZ its present value + gz.
fn dz_sum(ziT: u32, gz: f32) -> f32 {
  if (ADD_DZ) { return g_dxz[ziT] + gz; }
  return gz;
}

// One token's [gB_t | gC_t] contributions in s_red, column c summed over the WG channels in
// channel order into part_bc at `base` + c (two barriers: call in uniform control flow).
fn reduce_bc_workgroup(lid: u32, base: u32) {
  let redRow = 2u * NV + 1u;
  workgroupBarrier();
  for (var c = lid; c < 2u * N; c += WG) {
    let part = c / N;
    let n = c - part * N;
    let col = part * NV + n / 4u;
    let comp = n % 4u;
    var s = 0.0;
    for (var r = 0u; r < WG; r++) { s += s_red[r * redRow + col][comp]; }
    g_part_bc[base + c] = s;
  }
  workgroupBarrier();
}

// The per-sample partials of one channel's parameter gradients: rows 0…N−1 gA ⊙ A (dA_log),
// N dD, N+1 dbias.
fn write_param_partials(b: u32, e: u32, gA: array<vec4<f32>, NVMAX>, A: array<vec4<f32>, NVMAX>, gD: f32, gbias: f32) {
  for (var i = 0u; i < NV; i++) {
    let v = gA[i] * A[i];
    let o = (b * (N + 2u) + 4u * i) * E + e;
    g_part_par[o] = v.x;
    if (4u * i + 1u < N) { g_part_par[o + E] = v.y; }
    if (4u * i + 2u < N) { g_part_par[o + 2u * E] = v.z; }
    if (4u * i + 3u < N) { g_part_par[o + 3u * E] = v.w; }
  }
  g_part_par[(b * (N + 2u) + N) * E + e] = gD;
  g_part_par[(b * (N + 2u) + N + 1u) * E + e] = gbias;
}

@compute @workgroup_size(WG)
fn selective_scan_backward(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let b = wid.y;
  let e = wid.x * WG + lid;
  let live = e < E;
  let ec = min(e, E - 1u);
  let Q = 2u * N;
  let S = TC;
  let nseg = (L + S - 1u) / S;
  let redRow = 2u * NV + 1u; // s_red row stride in vec4: odd, so row writes do not conflict

  let A = backward_A(ec);              // A[e, :]
  var h: array<vec4<f32>, NVMAX>;     // running state, then h_t in the walk (zero-initialised)
  var hIn: array<vec4<f32>, NVMAX>;   // the state entering the current segment
  var carry: array<vec4<f32>, NVMAX>; // a_{t+1} ⊙ gh_{t+1}: the part of gh_t from later tokens
  var gA: array<vec4<f32>, NVMAX>;    // Σ_t gh_t ⊙ a_t ⊙ h_{t−1} ⊙ Δ_t
  let bias = g_dt_bias[ec];
  let Dv = g_Dskip[ec];
  var gD = 0.0;
  var gbias = 0.0;

  // Pass 1: the forward recurrence over the tokens of segments 0 … NSEG−2, KB tokens at a time,
  // keeping the state entering each following segment.
  let T1 = select((nseg - 1u) * S, 0u, (DIAG & 2u) != 0u || CKPT_IN);
  for (var t0 = 0u; t0 < T1; t0 += KB) {
    let tn = min(KB, T1 - t0);
    load_bc_backward(b, t0, tn, lid);
    pass1_block(&h, A, load_token_block(b, t0, tn, ec), bias, b, e, live, t0, tn, 0u);
  }

  // Pass 2: segments last to first.
  for (var kk = 0u; kk < nseg; kk++) {
    let k = nseg - 1u - kk;
    let t0 = k * S;
    let tn = min(S, L - t0);
    load_bc_backward(b, t0, tn, lid);
    // Recompute the segment's states from its checkpoint into this invocation's column of s_h.
    for (var i = 0u; i < NV; i++) {
      if (k == 0u || !live) { hIn[i] = vec4<f32>(0.0); }
      else { hIn[i] = g_ckpt[((b * (nseg - 1u) + k - 1u) * NV + i) * E + e]; }
      h[i] = hIn[i];
    }
    for (var tb = 0u; tb < select(tn, 0u, (DIAG & 4u) != 0u); tb += KB) {
      var pu: array<f32, KBMAX>;
      var pd: array<f32, KBMAX>;
      for (var j = 0u; j < KB; j++) {
        let row = (b * L + t0 + min(tb + j, tn - 1u)) * E + ec;
        pu[j] = g_u[row];
        pd[j] = g_delta_raw[row];
      }
      for (var j = 0u; j < KB; j++) {
        let tt = tb + j;
        if (tt < tn) {
          let delta = softplus(pd[j] + bias);
          let du = delta * pu[j];
          for (var i = 0u; i < NV; i++) {
            h[i] = exp(delta * A[i]) * h[i] + du * s_bc[tt * 2u * NV + i];
            s_h[(tt * NV + i) * WG + lid] = h[i];
          }
        }
      }
    }
    // Walk the segment backward, KB tokens at a time (their inputs loaded together); h holds h_t.
    for (var jb = 0u; jb < tn; jb += KB) {
      var pu: array<f32, KBMAX>;
      var pd: array<f32, KBMAX>;
      var pg: array<f32, KBMAX>;
      var pz: array<f32, KBMAX>;
      for (var j = 0u; j < KB; j++) {
        let t = t0 + tn - 1u - min(jb + j, tn - 1u);
        let row = (b * L + t) * E + ec;
        pu[j] = g_u[row];
        pd[j] = g_delta_raw[row];
        pg[j] = scan_dout(b, t, ec);
        pz[j] = g_xz[(b * L + select(t, L - 1u - t, REVERSE)) * 2u * E + E + ec];
      }
      for (var j = 0u; j < KB; j++) {
        if (jb + j < tn) { // uniform (tn is the workgroup's), so the barriers below are too
        let tt = tn - 1u - (jb + j);
        let t = t0 + tt;
        let rowT = (b * L + t) * E + ec;
        let ziT = (b * L + select(t, L - 1u - t, REVERSE)) * 2u * E + E + ec;
        let uu = pu[j];
        let gout = pg[j];
        let z = pz[j];
        let pre = pd[j] + bias;
        let delta = softplus(pre);
        let du = delta * uu;
        let gg = gate_grads(h, (tt * 2u + 1u) * NV, Dv, uu, gout, z);
        let gy = gg.gy;
        let gz = gg.gz;
        gD += gy * uu;
        var gu4 = vec4<f32>(0.0);     // Σ_n gh_t B_t, per lane of the vec4
        var gdelta4 = vec4<f32>(0.0); // Σ_n gh_t (u_t B_t + A a_t h_{t−1})
        for (var i = 0u; i < NV; i++) {
          var hPrev = hIn[i];
          if (tt > 0u) { hPrev = s_h[((tt - 1u) * NV + i) * WG + lid]; }
          let a = exp(delta * A[i]);
          let Bv = s_bc[tt * 2u * NV + i];
          let gh = gy * s_bc[(tt * 2u + 1u) * NV + i] + carry[i];
          s_red[lid * redRow + i] = gh * du;            // gB_t contribution
          s_red[lid * redRow + NV + i] = gy * h[i];     // gC_t contribution
          gu4 += gh * Bv;
          let ahp = a * hPrev; // a_t ⊙ h_{t−1}
          gdelta4 += gh * (uu * Bv + A[i] * ahp);
          gA[i] += gh * ahp * delta;
          carry[i] = a * gh;
          h[i] = hPrev;
        }
        let gu = Dv * gy + delta * ((gu4.x + gu4.y) + (gu4.z + gu4.w));
        let gdelta = (gdelta4.x + gdelta4.y) + (gdelta4.z + gdelta4.w);
        let gdr = gdelta * sigmoid(pre);
        gbias += gdr;
        if (live) {
          store_token_grads(rowT, ziT, gu, gdr, dz_sum(ziT, gz));
        } else {
          for (var i = 0u; i < 2u * NV; i++) { s_red[lid * redRow + i] = vec4<f32>(0.0); }
        }
        if ((DIAG & 1u) == 0u) { reduce_bc_workgroup(lid, ((b * NWG + wid.x) * L + t) * Q); }
        }
      }
    }
  }

  if (live) { write_param_partials(b, e, gA, A, gD, gbias); }
}

// ============================================================================================
// Backward, streaming form
// ============================================================================================

// One halving exchange of the subgroup sum below: lanes with bit `off` set keep items h…2h−1 and
// send 0…h−1, the others the reverse; both add what they receive into items 0…h−1.
fn sg_halve(v: ptr<function, array<vec4<f32>, NVMAX>>, h: u32, off: u32, lane: u32) {
  let upper = (lane & off) != 0u;
  for (var j = 0u; j < h; j++) {
    let lo = (*v)[j];
    let hi = (*v)[j + h];
    (*v)[j] = select(lo, hi, upper) + sg_shuffle_xor(select(hi, lo, upper), off);
  }
}

// The sum over the SGR lanes of a subgroup of QP items (vec4) each lane holds: halving exchanges
// at lane distances SGR/2, SGR/4, … until one item is left, then plain exchanges. Lane `lane` ends
// with the sum of item lane / (SGR / QP), as do the other lanes of its group of SGR / QP. Every
// lane adds in the same fixed order, so results repeat bit for bit. sg_shuffle_xor comes from the
// prelude the host adds (subgroupShuffleXor, or the identity where no kernel calls this).
fn sg_sum_items(items: array<vec4<f32>, NVMAX>, lane: u32) -> vec4<f32> {
  var v = items;
  var off = SGR / 2u;
  if (QP >= 8u) { sg_halve(&v, 4u, off, lane); off /= 2u; }
  if (QP >= 4u) { sg_halve(&v, 2u, off, lane); off /= 2u; }
  if (QP >= 2u) { sg_halve(&v, 1u, off, lane); off /= 2u; }
  var r = v[0];
  for (; off >= 1u; off /= 2u) { r += sg_shuffle_xor(r, off); }
  return r;
}

// Write a subgroup sum of sg_sum_items to the partial row at `base`: lane groups of SGR / QP
// hold item lane / (SGR / QP), four states each; `col` is 0 for gB, N for gC.
fn sg_write_items(r: vec4<f32>, lane: u32, base: u32, col: u32) {
  let grp = SGR / QP;
  let item = lane / grp;
  if (lane % grp == 0u && item < NV) {
    for (var c = 0u; c < 4u; c++) {
      let n = 4u * item + c;
      if (n < N) {
        if (WGSUM) { s_pbc[base + col + n] = r[c]; } else { g_part_bc[base + col + n] = r[c]; }
      }
    }
  }
}

// selective_scan_backward_stream: the same gradients as selective_scan_backward, arranged so that
// an invocation waits on memory as little as possible:
//   - all L tokens of the sample's [B_t | C_t] are staged in s_bc once (BCT = L), so no barrier
//     or load of B, C interrupts the walks;
//   - pass 1 streams the tokens in blocks of KB, the next block's u, Δraw loaded while the
//     current one is computed, and writes a checkpoint every S tokens;
//   - pass 2 loads a segment's u, Δraw, dout, z once for both its recomputation and its walk, and
//     issues the loads of the segment before it (and its checkpoint) before computing this one;
//   - with SGR > 0 the per-token [gB | gC] sums over channels are shuffles within each subgroup
//     (no barrier), one partial per subgroup (NWG = partials per sample, part_bc's second axis);
//     with SGR = 0 they go through s_red as in selective_scan_backward (two barriers a token).
// Segments hold at most SMAX tokens. Loops over a segment's tokens run to S (a constant of the
// pipeline) so that the per-token register arrays are indexed by constants.
@compute @workgroup_size(WG)
fn selective_scan_backward_stream(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let b = wid.y;
  let e = wid.x * WG + lid;
  let live = e < E;
  let ec = min(e, E - 1u);
  let Q = 2u * N;
  let S = TC;
  let nseg = (L + S - 1u) / S;
  let redRow = 2u * NV + 1u;
  let sg = max(SGR, 1u);
  let lane = lid % sg;
  // this invocation's partial row of part_bc: its workgroup's, or its subgroup's
  let part = select(wid.x, wid.x * (WG / sg) + lid / sg, SGR > 0u);

  let A = backward_A(ec);
  var h: array<vec4<f32>, NVMAX>;     // zero-initialised, as the other state arrays
  var hIn: array<vec4<f32>, NVMAX>;
  var carry: array<vec4<f32>, NVMAX>;
  var gA: array<vec4<f32>, NVMAX>;
  let bias = g_dt_bias[ec];
  let Dv = g_Dskip[ec];
  var gD = 0.0;
  var gbias = 0.0;

  load_bc_backward(b, 0u, L, lid);

  // Pass 1: the forward recurrence over segments 0 … NSEG−2 in blocks of KB tokens, the next
  // block's u, Δraw loaded while this one is computed (KB = 1: one token ahead).
  let T1 = select((nseg - 1u) * S, 0u, (DIAG & 2u) != 0u || CKPT_IN);
  var next = load_token_block(b, 0u, max(min(KB, T1), 1u), ec); // the next block's inputs
  for (var t0 = 0u; t0 < T1; t0 += KB) {
    let cur = next;
    if (t0 + KB < T1) { next = load_token_block(b, t0 + KB, min(KB, T1 - t0 - KB), ec); }
    pass1_block(&h, A, cur, bias, b, e, live, t0, min(KB, T1 - t0), t0);
  }

  // Pass 2: segments last to first. Iteration kk loads segment NSEG−1−kk and computes, with
  // LOOKAHEAD, the one after it (loaded by the iteration before), else that segment itself.
  var cu: array<f32, SMAX>;
  var cd: array<f32, SMAX>;
  var cg: array<f32, SMAX>;
  var cz: array<f32, SMAX>;
  var qu: array<f32, SMAX>;
  var qd: array<f32, SMAX>;
  var qg: array<f32, SMAX>;
  var qz: array<f32, SMAX>;
  var qh: array<vec4<f32>, NVMAX>;
  for (var kk = 0u; kk < nseg + LOOKAHEAD; kk++) {
    if (LOOKAHEAD == 1u) {
      cu = qu;
      cd = qd;
      cg = qg;
      cz = qz;
      hIn = qh;
    }
    if (kk < nseg) {
      let k = nseg - 1u - kk;
      let t0 = k * S;
      let tn = min(S, L - t0);
      for (var j = 0u; j < S; j++) {
        let t = t0 + min(j, tn - 1u);
        let row = (b * L + t) * E + ec;
        qu[j] = g_u[row];
        qd[j] = g_delta_raw[row];
        qg[j] = scan_dout(b, t, ec);
        qz[j] = g_xz[(b * L + select(t, L - 1u - t, REVERSE)) * 2u * E + E + ec];
      }
      for (var i = 0u; i < NV; i++) {
        if (k == 0u || !live) { qh[i] = vec4<f32>(0.0); }
        else { qh[i] = g_ckpt[((b * (nseg - 1u) + k - 1u) * NV + i) * E + e]; }
      }
    }
    if (LOOKAHEAD == 0u) {
      cu = qu;
      cd = qd;
      cg = qg;
      cz = qz;
      hIn = qh;
    }
    if (kk < LOOKAHEAD) { continue; }
    let k = nseg - 1u - (kk - LOOKAHEAD);
    let t0 = k * S;
    let tn = min(S, L - t0);

    // the segment's states from its checkpoint, into this invocation's column of s_h (the walk
    // reads token tt−1's for tt ≥ 1, so the last token's is never stored; one-token segments
    // store none)
    for (var i = 0u; i < NV; i++) { h[i] = hIn[i]; }
    var cdel: array<f32, SMAX>; // Δ_t of the segment's tokens
    for (var j = 0u; j < S; j++) {
      cdel[j] = softplus(cd[j] + bias);
      if (j < tn && (DIAG & 4u) == 0u) {
        let du = cdel[j] * cu[j];
        for (var i = 0u; i < NV; i++) {
          h[i] = exp(cdel[j] * A[i]) * h[i] + du * s_bc[(t0 + j) * 2u * NV + i];
          if (j + 1u < tn) { s_h[(j * NV + i) * WG + lid] = h[i]; }
        }
      }
    }
    // walk the segment backward; h holds h_t
    for (var j = 0u; j < S; j++) {
      let tt = S - 1u - j;
      if (tt < tn) { // uniform (tn is the workgroup's), so barriers and shuffles below are too
        let t = t0 + tt;
        let rowT = (b * L + t) * E + ec;
        let ziT = (b * L + select(t, L - 1u - t, REVERSE)) * 2u * E + E + ec;
        let uu = cu[tt];
        let gout = cg[tt];
        let z = cz[tt];
        let delta = cdel[tt];
        let du = delta * uu;
        let bct = t * 2u * NV; // token t's B_t in s_bc; C_t follows
        let gg = gate_grads(h, bct + NV, Dv, uu, gout, z);
        let gy = gg.gy;
        let gz = gg.gz;
        gD += gy * uu;
        let pbase = ((b * NWG + part) * L + t) * Q;
        if (SGR > 0u && (DIAG & 1u) == 0u) {
          var it: array<vec4<f32>, NVMAX>; // items NV… stay 0 (zero-initialised here each token)
          for (var i = 0u; i < NV; i++) { it[i] = select(vec4<f32>(0.0), gy * h[i], live); }
          sg_write_items(sg_sum_items(it, lane), lane, pbase, N);
        }
        var gu4 = vec4<f32>(0.0);
        var gdelta4 = vec4<f32>(0.0);
        var gBi: array<vec4<f32>, NVMAX>; // gB_t contributions for the shuffle sums; items NV… stay 0
        for (var i = 0u; i < NV; i++) {
          var hPrev = hIn[i];
          if (tt > 0u) { hPrev = s_h[((tt - 1u) * NV + i) * WG + lid]; }
          let a = exp(delta * A[i]);
          let Bv = s_bc[bct + i];
          let gh = gy * s_bc[bct + NV + i] + carry[i];
          gBi[i] = select(vec4<f32>(0.0), gh * du, live);
          if (SGR == 0u) {
            s_red[lid * redRow + i] = gh * du;
            s_red[lid * redRow + NV + i] = gy * h[i];
          }
          gu4 += gh * Bv;
          let ahp = a * hPrev;
          gdelta4 += gh * (uu * Bv + A[i] * ahp);
          gA[i] += gh * ahp * delta;
          carry[i] = a * gh;
          h[i] = hPrev;
        }
        let gu = Dv * gy + delta * ((gu4.x + gu4.y) + (gu4.z + gu4.w));
        let gdelta = (gdelta4.x + gdelta4.y) + (gdelta4.z + gdelta4.w);
        let gdr = gdelta * sigmoid(cd[tt] + bias);
        gbias += gdr;
        if (live) {
          store_token_grads(rowT, ziT, gu, gdr, dz_sum(ziT, gz));
        } else if (SGR == 0u) {
          for (var i = 0u; i < 2u * NV; i++) { s_red[lid * redRow + i] = vec4<f32>(0.0); }
        }
        if ((DIAG & 1u) == 0u) {
          if (SGR > 0u) {
            sg_write_items(sg_sum_items(gBi, lane), lane, pbase, 0u);
          } else {
            reduce_bc_workgroup(lid, pbase);
          }
        }
      }
    }
  }

  if (live) { write_param_partials(b, e, gA, A, gD, gbias); }
}

// ============================================================================================
// Backward, split form
// ============================================================================================

// The s_lm row of this lane's vec4 i of per-lane array `bit` (1 A, 2 gA, 4 carry): the arrays
// LANE_MEM holds, in bit order, NV/SPLIT rows of WG lanes each.
fn lm_row(bit: u32, i: u32, lid: u32) -> u32 {
  return (countOneBits(LANE_MEM & (bit - 1u)) * (NV / SPLIT) + i) * WG + lid;
}

// Row of s_lm holding vec4 i of this lane's part of sh[j] (1 ≤ j < S) with LANE_MEM bit 3: after
// the other arrays, [j − 1][i][lane].
fn sh_row(j: u32, i: u32, lid: u32) -> u32 {
  return ((countOneBits(LANE_MEM & 7u) + j - 1u) * (NV / SPLIT) + i) * WG + lid;
}

// vec4 i of this lane's per-lane array `bit` (1 A, 2 gA, 4 carry): from s_lm where LANE_MEM holds
// it, else from its register array `reg`.
fn lane_get(bit: u32, reg: ptr<function, array<vec4<f32>, NVMAX>>, i: u32, lid: u32) -> vec4<f32> {
  if ((LANE_MEM & bit) != 0u) { return s_lm[lm_row(bit, i, lid)]; }
  return (*reg)[i];
}

// This lane's part of A[e, :] = −exp(A_log[e, :]): state vec4 v0 … v0 + NV/SPLIT − 1 of the
// channel, at 0 … NV/SPLIT − 1 (padding states −1).
fn split_A(ec: u32, v0: u32) -> array<vec4<f32>, NVMAX> {
  var A: array<vec4<f32>, NVMAX>;
  for (var i = 0u; i < NV / SPLIT; i++) {
    var a = vec4<f32>(0.0);
    for (var c = 0u; c < 4u; c++) {
      let n = 4u * (v0 + i) + c;
      if (n < N) { a[c] = g_A_log[ec * N + n]; }
    }
    A[i] = -exp(a) * A_SCALE;
  }
  return A;
}

// Pass 1 of selective_scan_backward_split on one block of tokens t0 … t0+tn−1 (tn ≤ KB): this
// lane's part of the forward recurrence (state vec4 v0 … v0 + NV/SPLIT − 1 of channel e, held at
// 0 … NV/SPLIT − 1), writing its part of the state that enters each following segment of S = TC
// tokens to ckpt. B_t of token t is at s_bc[t·2NV] (all L tokens staged).
fn split_pass1_block(h: ptr<function, array<vec4<f32>, NVMAX>>, A: array<vec4<f32>, NVMAX>, blk: TokenBlock, bias: f32,
                     b: u32, e: u32, v0: u32, live: bool, t0: u32, tn: u32) {
  let nseg = (L + TC - 1u) / TC;
  for (var k = 0u; k < KB; k++) {
    if (k < tn) {
      let t = t0 + k;
      let delta = softplus(blk.d[k] + bias);
      let du = delta * blk.u[k];
      for (var i = 0u; i < NV / SPLIT; i++) {
        (*h)[i] = decay(delta * A[i]) * (*h)[i] + du * s_bc[t * 2u * NV + v0 + i];
      }
      if (live && (t + 1u) % TC == 0u) {
        let slot = (t + 1u) / TC - 1u;
        for (var i = 0u; i < NV / SPLIT; i++) { g_ckpt[((b * (nseg - 1u) + slot) * NV + v0 + i) * E + e] = (*h)[i]; }
      }
    }
  }
}

// The sum of v over the SPLIT lanes of this lane's channel (neighbours in its subgroup): exchanges
// at distances SPLIT/2, …, 1, each lane adding what it receives to what it holds. a + b and b + a
// round alike, so every lane of the channel ends with the same bits. Call in uniform control flow.
fn split_channel_sum(v: vec4<f32>) -> vec4<f32> {
  var r = v;
  for (var off = SPLIT / 2u; off >= 1u; off /= 2u) { r += sg_shuffle_xor(r, off); }
  return r;
}

// The halving exchange of one item pair at lane distance off: the lower lane of each pair keeps lo
// plus its partner's lo, the upper one hi plus its partner's hi.
fn split_pair(lo: vec4<f32>, hi: vec4<f32>, off: u32, lane: u32) -> vec4<f32> {
  let upper = (lane & off) != 0u;
  return select(lo, hi, upper) + sg_shuffle_xor(select(hi, lo, upper), off);
}

// One halving exchange of split_sum_items (sg_halve on its longer item arrays).
fn split_halve(v: ptr<function, array<vec4<f32>, SPLIT_ITEMS>>, h: u32, off: u32, lane: u32) {
  for (var j = 0u; j < h; j++) { (*v)[j] = split_pair((*v)[j], (*v)[j + h], off, lane); }
}

// The sum of m = (BCJ ? 2·QS : QS) items (vec4) over the lanes of a subgroup that hold the same
// states (equal lane % SPLIT: one lane of each of its SGR / SPLIT channels): halving exchanges at
// lane distances SGR/2, SGR/4, … until one item is left, then plain exchanges down to distance
// SPLIT (m ≤ SGR / SPLIT, so the halvings end at or above it). Lane `lane` ends with the sum of
// item lane / (SGR / m) of its states, as do the other lanes of its group of SGR / m with the same
// lane % SPLIT. Every lane adds in the same fixed order, so results repeat bit for bit. Call in
// uniform control flow.
fn split_sum_items(items: array<vec4<f32>, SPLIT_ITEMS>, lane: u32) -> vec4<f32> {
  return split_sum_from(items, select(QS, 2u * QS, BCJ), SGR / 2u, lane);
}

// The halving exchanges of m items (a power of two ≤ 16) from lane distance off0 down to the lane's
// one item; the next exchange is at distance off0 / m.
fn split_halvings(items: array<vec4<f32>, SPLIT_ITEMS>, m: u32, off0: u32, lane: u32) -> vec4<f32> {
  var v = items;
  var off = off0;
  if (m >= 16u) { split_halve(&v, 8u, off, lane); off /= 2u; }
  if (m >= 8u) { split_halve(&v, 4u, off, lane); off /= 2u; }
  if (m >= 4u) { split_halve(&v, 2u, off, lane); off /= 2u; }
  if (m >= 2u) { split_halve(&v, 1u, off, lane); }
  return v[0];
}

// split_sum_items from m items left at lane distance off (with WALK's "fold": QS items at SGR / 4).
fn split_sum_from(items: array<vec4<f32>, SPLIT_ITEMS>, m: u32, off0: u32, lane: u32) -> vec4<f32> {
  var r = split_halvings(items, m, off0, lane);
  for (var off = off0 / m; off >= SPLIT; off /= 2u) { r += sg_shuffle_xor(r, off); }
  return r;
}

// split_sum_from (SPLIT = 1, g = SGR / m ≥ 4 lanes an item) carried down to one float: after the
// item halvings the lane's vec4 is halved at distances g/2 (keeping .zw where the lane's bit is set,
// else .xy) and g/4 (.y, else .x), then plain exchanges add the rest down to distance 1. Lane `lane`
// ends with component (lane % g) / (g/4) of item lane / g: the same additions in the same order as
// split_sum_from's for that component (a + b and b + a round alike), so the same bits. Call in
// uniform control flow.
fn split_sum_scalar(items: array<vec4<f32>, SPLIT_ITEMS>, m: u32, off0: u32, lane: u32) -> f32 {
  let r4 = split_halvings(items, m, off0, lane);
  var off = off0 / m;
  let u2 = (lane & off) != 0u;
  let r2 = select(r4.xy, r4.zw, u2) + sg_shuffle_xor2(select(r4.zw, r4.xy, u2), off);
  off /= 2u;
  let u1 = (lane & off) != 0u;
  var r = select(r2.x, r2.y, u1) + sg_shuffle_xor1(select(r2.y, r2.x, u1), off);
  for (off /= 2u; off >= 1u; off /= 2u) { r += sg_shuffle_xor1(r, off); }
  return r;
}

// Write a sum of split_sum_scalar to the partial row at `base`: the first lane of each group of g/4
// that holds a component writes it (with N = 16 and subgroups of 32, every lane: one 128-byte row).
fn split_write_scalar(r: f32, lane: u32, base: u32) {
  let grp = SGR / (2u * QS);
  let item = lane / grp;
  let n = 4u * (item % QS) + (lane % grp) / (grp / 4u);
  let col = select(0u, N, item >= QS) + n;
  if (lane % (grp / 4u) == 0u && n < N) {
    if (WGSUM) { s_pbc[base + col] = r; } else { g_part_bc[base + col] = r; }
  }
}

// The sum of m items from lane distance off0 (split_sum_from) written to the partial row at `base`:
// with SCALAR_SUMS carried down to one column a lane (split_sum_scalar, split_write_scalar), else as
// items (split_write_items; their gB half, or with BCJ both). Call in uniform control flow.
fn split_write_sum(items: array<vec4<f32>, SPLIT_ITEMS>, m: u32, off0: u32, lane: u32, base: u32) {
  if (SCALAR_SUMS) { split_write_scalar(split_sum_scalar(items, m, off0, lane), lane, base); }
  else { split_write_items(split_sum_from(items, m, off0, lane), lane, base, false); }
}

// Write a sum of split_sum_items to the partial row at `base`: in each group of SGR / m lanes that
// holds item lane / (SGR / m), the first SPLIT lanes (one per state part q = lane % SPLIT) write its
// four states. Item k is vec4 k % QS of the lane's part of gB, or of gC where `gc` or k ≥ QS (BCJ).
fn split_write_items(r: vec4<f32>, lane: u32, base: u32, gc: bool) {
  let m = select(QS, 2u * QS, BCJ);
  let grp = SGR / m;
  let item = lane / grp;
  let j = item % QS;
  let col = select(0u, N, gc || item >= QS);
  if (lane % grp < SPLIT && j < NV / SPLIT) {
    let v = (lane % SPLIT) * (NV / SPLIT) + j; // the channel's state vec4
    for (var c = 0u; c < 4u; c++) {
      let n = 4u * v + c;
      if (n < N) {
        if (WGSUM) { s_pbc[base + col + n] = r[c]; } else { g_part_bc[base + col + n] = r[c]; }
      }
    }
  }
}

// The per-sample partials of one channel's parameter gradients from its lane q: rows 4·v0 … of
// gA ⊙ A (dA_log) for the lane's states, and from lane 0 rows N (dD) and N+1 (dbias).
fn split_param_partials(b: u32, e: u32, q: u32, gA: array<vec4<f32>, NVMAX>, A: array<vec4<f32>, NVMAX>, gD: f32, gbias: f32) {
  let v0 = q * (NV / SPLIT);
  for (var i = 0u; i < NV / SPLIT; i++) {
    let v = select(gA[i] * A[i], gA[i] * (A[i] * LN2), EXP2);
    let n = 4u * (v0 + i);
    let o = (b * (N + 2u) + n) * E + e;
    g_part_par[o] = v.x;
    if (n + 1u < N) { g_part_par[o + E] = v.y; }
    if (n + 2u < N) { g_part_par[o + 2u * E] = v.z; }
    if (n + 3u < N) { g_part_par[o + 3u * E] = v.w; }
  }
  if (q == 0u) {
    g_part_par[(b * (N + 2u) + N) * E + e] = gD;
    g_part_par[(b * (N + 2u) + N + 1u) * E + e] = gbias;
  }
}

// WALK's "fold2": split_halve's second exchange (lane distance SGR/4) for the item pair (j, j + QS/2)
// of fold's QS items, into item j.
fn split_fold2(v: ptr<function, array<vec4<f32>, SPLIT_ITEMS>>, j: u32, lane: u32) {
  (*v)[j] = split_pair((*v)[j], (*v)[j + QS / 2u], SGR / 4u, lane);
}

// What every token of selective_scan_backward_split's pass 2 needs of its invocation.
struct SplitCtx {
  b: u32, e: u32, ec: u32, live: bool, q: u32, lane: u32, part: u32, v0: u32, lid: u32, Dv: f32, bias: f32,
}

// One segment's inputs: tok[j] = (u, Δraw, dout, z) of token t0 + j (slots past the segment's
// last token repeat it), and the lane's part of the state entering the segment.
// With ADD_DZ, pz[j] is dz's value at token t0 + j before this direction adds to it: read with the
// segment's inputs, before its recomputation, not when the walk adds to it (read then, its latency
// stood in each token's way: 0.9 ms a step, docs/performance.md change 32).
struct SplitIn { tok: array<vec4<f32>, SPLIT_SMAX>, h0: array<vec4<f32>, NVMAX>, pz: vec4<f32> }

// One segment's recomputation: sh[j] the lane's part of the state entering token t0 + j (sh[0]
// the checkpoint), del the tokens' Δ, and with WALK bit 1 sa[j] their a_t.
struct SplitSeg { sh: array<array<vec4<f32>, NVMAX>, SPLIT_SMAX>, del: vec4<f32>, sa: array<array<vec4<f32>, NVMAX>, SPLIT_SMAX> }

// Where z and dz of token t (direction order) are in xz and dxz: at the original token.
fn split_zi(cx: SplitCtx, t: u32) -> u32 {
  return (cx.b * L + select(t, L - 1u - t, REVERSE_IO)) * 2u * E + E + cx.ec;
}

// u, Δraw, dout, z of token t0 + min(j, tn − 1) (with DT_REC, Δraw from dt_low and wdt, dt_proj's row).
fn split_load_token(cx: SplitCtx, t0: u32, tn: u32, j: u32, wdt: ptr<function, array<vec4<f32>, RVMAX>>) -> vec4<f32> {
  let t = t0 + min(j, tn - 1u);
  let row = (cx.b * L + t) * E + cx.ec;
  var draw = 0.0;
  if (DT_REC) { draw = dt_dot(wdt, L * 2u * NV + t * RV); } else { draw = g_delta_raw[row]; }
  return vec4<f32>(g_u[row], draw, scan_dout(cx.b, t, cx.ec), g_xz[split_zi(cx, t)]);
}

// Segment k's inputs and checkpoint (zero for the first segment and idle channels).
fn split_load(cx: SplitCtx, k: u32, nseg: u32) -> SplitIn {
  var r: SplitIn;
  let t0 = k * TC;
  let tn = min(TC, L - t0);
  var wdt: array<vec4<f32>, RVMAX>; // with DT_REC: dt_proj's weight row ec (zero past R)
  if (DT_REC) {
    for (var j = 0u; j < RV; j++) { wdt[j] = s_dtw[j * WG + cx.lid]; }
  }
  r.tok[0] = split_load_token(cx, t0, tn, 0u, &wdt);
  if (1u < TC) { r.tok[1] = split_load_token(cx, t0, tn, 1u, &wdt); }
  if (2u < TC) { r.tok[2] = split_load_token(cx, t0, tn, 2u, &wdt); }
  if (3u < TC) { r.tok[3] = split_load_token(cx, t0, tn, 3u, &wdt); }
  if (ADD_DZ) {
    for (var j = 0u; j < TC; j++) { r.pz[j] = g_dxz[split_zi(cx, t0 + min(j, tn - 1u))]; }
  }
  for (var i = 0u; i < NV / SPLIT; i++) {
    if (k == 0u || !cx.live) { r.h0[i] = vec4<f32>(0.0); }
    else { r.h0[i] = g_ckpt[((cx.b * (nseg - 1u) + k - 1u) * NV + cx.v0 + i) * E + cx.e]; }
  }
  return r;
}

// Token t0 + j of the segment's recomputation: its Δ, h advanced over it, and the state after it
// kept as sh[j + 1]. The last token's state is made only where `full` (the caller has it otherwise).
fn split_recompute(j: u32, cx: SplitCtx, t0: u32, tn: u32, full: bool, inp: ptr<function, SplitIn>, seg: ptr<function, SplitSeg>,
                   h: ptr<function, array<vec4<f32>, NVMAX>>, A: ptr<function, array<vec4<f32>, NVMAX>>) {
  let tok = (*inp).tok[j];
  let delta = softplus(tok.y + cx.bias);
  (*seg).del[j] = delta;
  if ((j + 1u < tn || (full && j < tn)) && (DIAG & 4u) == 0u) {
    let du = delta * tok.x;
    for (var i = 0u; i < NV / SPLIT; i++) {
      let aj = decay(delta * lane_get(1u, A, i, cx.lid));
      if ((WALK & 2u) != 0u) { (*seg).sa[j][i] = aj; }
      (*h)[i] = aj * (*h)[i] + du * s_bc[(t0 + j) * 2u * NV + cx.v0 + i];
      if (j + 1u < TC) {
        if ((LANE_MEM & 8u) != 0u) { s_lm[sh_row(j + 1u, i, cx.lid)] = (*h)[i]; } else { (*seg).sh[j + 1u][i] = (*h)[i]; }
      }
    }
  }
}

// Token t0 + tt of the segment's backward walk (h holds h_t on entry, h_{t−1} on return).
fn split_walk(tt: u32, cx: SplitCtx, t0: u32, tn: u32, inp: ptr<function, SplitIn>, seg: ptr<function, SplitSeg>,
              h: ptr<function, array<vec4<f32>, NVMAX>>, A: ptr<function, array<vec4<f32>, NVMAX>>,
              carry: ptr<function, array<vec4<f32>, NVMAX>>, gA: ptr<function, array<vec4<f32>, NVMAX>>,
              gD: ptr<function, f32>, gbias: ptr<function, f32>) {
  if (tt >= tn) { return; } // uniform (tn is the workgroup's), so the shuffles below are too
  let lid = cx.lid;
  let lane = cx.lane;
  let NVL = NV / SPLIT;
  let t = t0 + tt;
  let rowT = (cx.b * L + t) * E + cx.ec;
  let ziT = split_zi(cx, t);
  let tok = (*inp).tok[tt];
  let uu = tok.x;
  let gout = tok.z;
  let z = tok.w;
  let delta = (*seg).del[tt];
  let du = delta * uu;
  let bct = t * 2u * NV + cx.v0; // the lane's part of B_t in s_bc; of C_t NV further
  // y_t = C_t · h_t + D u_t: four partial sums over the lane's states, then over the channel's lanes
  var y4 = vec4<f32>(0.0);
  for (var i = 0u; i < NVL; i++) { y4 += s_bc[bct + NV + i] * (*h)[i]; }
  let y = cx.Dv * uu + split_channel_sum(vec4<f32>((y4.x + y4.y) + (y4.z + y4.w), 0.0, 0.0, 0.0)).x;
  let sz = sigmoid(z);
  let gy = gout * z * sz;
  let gz = gout * y * sz * (1.0 + z * (1.0 - sz));
  *gD += gy * uu;
  var gu4 = vec4<f32>(0.0);     // Σ gh_t B_t over the lane's states, per component
  var gdelta4 = vec4<f32>(0.0); // Σ gh_t (u_t B_t + A a_t h_{t−1}) over the lane's states
  var itB: array<vec4<f32>, SPLIT_ITEMS>; // gB_t contributions (with BCJ then gC_t's from QS on); the rest stay 0
  var itC: array<vec4<f32>, SPLIT_ITEMS>; // gC_t contributions
  for (var i = 0u; i < NVL; i++) {
    var hPrev = (*seg).sh[tt][i];
    if (tt > 0u && (LANE_MEM & 8u) != 0u) { hPrev = s_lm[sh_row(tt, i, lid)]; }
    let Ai = lane_get(1u, A, i, lid);
    var a: vec4<f32>;
    if ((WALK & 2u) != 0u) { a = (*seg).sa[tt][i]; } else { a = decay(delta * Ai); }
    let Bv = s_bc[bct + i];
    let gh = gy * s_bc[bct + NV + i] + lane_get(4u, carry, i, lid);
    itB[i] = select(vec4<f32>(0.0), gh * du, ALL_LIVE || cx.live);
    itC[i] = select(vec4<f32>(0.0), gy * (*h)[i], ALL_LIVE || cx.live);
    if ((WALK & 4u) != 0u && BCJ && (DIAG & 1u) == 0u) { // split_halve's first exchange, for item pair (i, QS + i)
      itB[i] = split_pair(itB[i], itC[i], SGR / 2u, lane);
      if (FOLD2 && i >= QS / 2u) { split_fold2(&itB, i - QS / 2u, lane); }
    }
    gu4 += gh * Bv;
    let ahp = a * hPrev; // a_t ⊙ h_{t−1}
    var gAt: vec4<f32>; // this token's term of gA
    if ((WALK & 1u) != 0u) {
      let p = gh * ahp;
      gdelta4 += Ai * p; // the u_t B_t term is added from the du sum below (with EXP2 this sum is scaled by ln 2 there)
      gAt = p * delta;
    } else {
      gdelta4 += gh * (uu * Bv + select(Ai, Ai * LN2, EXP2) * ahp);
      gAt = gh * ahp * delta;
    }
    if ((LANE_MEM & 2u) != 0u) { s_lm[lm_row(2u, i, lid)] += gAt; } else { (*gA)[i] += gAt; }
    if ((LANE_MEM & 4u) != 0u) { s_lm[lm_row(4u, i, lid)] = a * gh; } else { (*carry)[i] = a * gh; }
    (*h)[i] = hPrev;
  }
  let sums = split_channel_sum(vec4<f32>((gu4.x + gu4.y) + (gu4.z + gu4.w), (gdelta4.x + gdelta4.y) + (gdelta4.z + gdelta4.w), 0.0, 0.0));
  let gu = cx.Dv * gy + delta * sums.x;
  let gdsum = select(sums.y, select(sums.y, sums.y * LN2, EXP2) + uu * sums.x, (WALK & 1u) != 0u); // Σ over the channel's states
  let gdr = gdsum * sigmoid(tok.y + cx.bias);
  *gbias += gdr;
  if (cx.live && cx.q == 0u) { store_token_grads(rowT, ziT, gu, gdr, select(gz, (*inp).pz[tt] + gz, ADD_DZ)); } // pz: SplitIn
  if ((DIAG & 1u) == 0u) {
    var pbase = ((cx.b * NWG + cx.part) * L + t) * (2u * N);
    if (WGSUM) { pbase = (tt * (WG / SGR) + lid / SGR) * (2u * N); }
    if ((DIAG & 8u) != 0u) { // timing only: the gB half alone
      split_write_items(split_sum_from(itB, QS, SGR / 2u, lane), lane, pbase, false);
    } else if (FOLD2) { // the second exchange of the pairs whose upper item is past the lane's states (0)
      for (var j = max(NVL, QS / 2u); j < QS; j++) { split_fold2(&itB, j - QS / 2u, lane); }
      split_write_sum(itB, QS / 2u, SGR / 8u, lane, pbase);
    } else if (BCJ && (WALK & 4u) != 0u) { // itB holds the QS items the first exchange left (0 from NVL on)
      split_write_sum(itB, QS, SGR / 4u, lane, pbase);
    } else if (BCJ) {
      for (var i = 0u; i < NVL; i++) { itB[QS + i] = itC[i]; }
      split_write_sum(itB, 2u * QS, SGR / 2u, lane, pbase); // (split_sum_items' m and distance with BCJ)
    } else {
      split_write_items(split_sum_items(itB, lane), lane, pbase, false);
      split_write_items(split_sum_items(itC, lane), lane, pbase, true);
    }
  }
}

// selective_scan_backward_split: the gradients of selective_scan_backward_stream with SGR > 0, the
// channel's states split over SPLIT lanes (lanes lid = c·SPLIT + q of a workgroup share its channel
// c; lane q holds state vec4 q·NV/SPLIT …, at index 0 … NV/SPLIT − 1 of its arrays):
//   - all L tokens of the sample's [B_t | C_t] are staged in s_bc once;
//   - pass 1 streams the tokens in blocks of KB (the next block's u, Δraw loaded while this one is
//     computed), each lane writing its part of the state entering each segment of S = TC tokens;
//   - pass 2 takes segments last to first (with LOOKAHEAD loading the segment before while it
//     computes this one), recomputes the segment's states from its checkpoint (split_recompute,
//     into SplitSeg.sh), then walks the segment backward (split_walk), token by token;
//   - per token, y_t = C_t · h_t and the du, dΔ sums over the channel's states are lane partials
//     summed by split_channel_sum, so every lane of the channel holds the same gy, gu, gdelta;
//     lane 0 alone writes du, ddelta_raw, dz and the channel's dD, dbias partials; each lane writes
//     its states' dA_log partials;
//   - per token the [gB | gC] sums over the subgroup's channels are shuffles between the lanes that
//     hold the same states, one partial row per subgroup (NWG = (workgroups per sample)·WG / SGR).
// Idle channels (e ≥ E) compute on channel E−1, write nothing and add zeros to the subgroup sums.
// Needs SGR ≥ SPLIT (a power of two dividing WG), NV % SPLIT == 0, QS ≤ SGR / SPLIT and S ≤ SPLIT_SMAX.
@compute @workgroup_size(WG)
fn selective_scan_backward_split(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let b = wid.y;
  let c = lid / SPLIT;          // the workgroup's channel
  let q = lid % SPLIT;          // which part of its states this lane holds
  let NVL = NV / SPLIT;         // state vec4 per lane
  let v0 = q * NVL;             // the lane's first state vec4
  let e = wid.x * (WG / SPLIT) + c;
  let live = e < E;
  let ec = min(e, E - 1u);
  let S = TC;
  let nseg = (L + S - 1u) / S;
  let lane = lid % SGR;
  let part = wid.x * (WG / SGR) + lid / SGR; // this lane's subgroup's partial row of part_bc

  var A = split_A(ec, v0);            // with LANE_MEM bit 0 only until it is in s_lm (lane_get)
  var h: array<vec4<f32>, NVMAX>;     // pass 1's running state, then h_t in the walk, which leaves it the state entering the segment walked (zero-initialised, as the others)
  var carry: array<vec4<f32>, NVMAX>; // a_{t+1} ⊙ gh_{t+1} (with LANE_MEM bit 2 in s_lm)
  var gA: array<vec4<f32>, NVMAX>;    // Σ_t gh_t ⊙ a_t ⊙ h_{t−1} ⊙ Δ_t (with LANE_MEM bit 1 in s_lm)
  for (var i = 0u; i < NVL; i++) {
    if ((LANE_MEM & 1u) != 0u) { s_lm[lm_row(1u, i, lid)] = A[i]; }
    if ((LANE_MEM & 2u) != 0u) { s_lm[lm_row(2u, i, lid)] = vec4<f32>(0.0); }
    if ((LANE_MEM & 4u) != 0u) { s_lm[lm_row(4u, i, lid)] = vec4<f32>(0.0); }
  }
  let bias = g_dt_bias[ec];
  let Dv = g_Dskip[ec];
  var gD = 0.0;
  var gbias = 0.0;

  if (DT_REC) { // this lane's dt_proj row (zero past R), read by this lane only
    for (var j = 0u; j < RV; j++) {
      var w = vec4<f32>(0.0);
      for (var c = 0u; c < 4u; c++) {
        if (4u * j + c < R) { w[c] = g_delta_raw[ec * R + 4u * j + c]; }
      }
      s_dtw[j * WG + lid] = w;
    }
  }
  load_bc_backward(b, 0u, L, lid);

  // Pass 1: the forward recurrence over segments 0 … NSEG−2 in blocks of KB tokens, the next
  // block's u, Δraw loaded while this one is computed.
  let T1 = select((nseg - 1u) * S, 0u, (DIAG & 2u) != 0u || CKPT_IN);
  var next = load_token_block(b, 0u, max(min(KB, T1), 1u), ec);
  for (var t0 = 0u; t0 < T1; t0 += KB) {
    let cur = next;
    if (t0 + KB < T1) { next = load_token_block(b, t0 + KB, min(KB, T1 - t0 - KB), ec); }
    split_pass1_block(&h, A, cur, bias, b, e, v0, live, t0, min(KB, T1 - t0));
  }

  // Pass 2: segments last to first. Iteration kk loads segment NSEG−1−kk and computes, with
  // LOOKAHEAD, the one after it (loaded by the iteration before), else that segment itself.
  // split_recompute and split_walk run once per token of the segment: written out with UNROLL (every
  // per-token array then indexed by constants), else in loops.
  let cx = SplitCtx(b, e, ec, live, q, lane, part, v0, lid, Dv, bias);
  var cin: SplitIn;  // the segment computed
  var nin: SplitIn;  // with LOOKAHEAD: the segment loaded ahead
  var seg: SplitSeg;
  for (var kk = 0u; kk < nseg + LOOKAHEAD; kk++) {
    if (LOOKAHEAD == 1u) { cin = nin; }
    if (kk < nseg) {
      let ld = split_load(cx, nseg - 1u - kk, nseg);
      if (LOOKAHEAD == 1u) { nin = ld; } else { cin = ld; }
    }
    if (kk < LOOKAHEAD) { continue; }
    let k = nseg - 1u - (kk - LOOKAHEAD);
    let t0 = k * S;
    let tn = min(S, L - t0);

    // the segment's states from its checkpoint: sh[j] for j ≥ 1 (into hr). The walk starts from the
    // last token's state, which the walk of the segment after this one left in h (the checkpoint
    // entering that segment, as the forward or pass 1 wrote it), so the recomputation stops a token
    // short; only the last segment (and keep-a, WALK & 2, which keeps every a_t) recomputes it.
    let full = k + 1u == nseg || (WALK & 2u) != 0u;
    var hr: array<vec4<f32>, NVMAX>;
    for (var i = 0u; i < NVL; i++) { hr[i] = cin.h0[i]; }
    seg.sh[0] = cin.h0;
    if (UNROLL) {
      split_recompute(0u, cx, t0, tn, full, &cin, &seg, &hr, &A);
      if (1u < S) { split_recompute(1u, cx, t0, tn, full, &cin, &seg, &hr, &A); }
      if (2u < S) { split_recompute(2u, cx, t0, tn, full, &cin, &seg, &hr, &A); }
      if (3u < S) { split_recompute(3u, cx, t0, tn, full, &cin, &seg, &hr, &A); }
      if (full) { for (var i = 0u; i < NVL; i++) { h[i] = hr[i]; } }
      // walk the segment backward; h holds h_t, seg.sh[tt] h_{t−1}
      if (3u < S) { split_walk(3u, cx, t0, tn, &cin, &seg, &h, &A, &carry, &gA, &gD, &gbias); }
      if (2u < S) { split_walk(2u, cx, t0, tn, &cin, &seg, &h, &A, &carry, &gA, &gD, &gbias); }
      if (1u < S) { split_walk(1u, cx, t0, tn, &cin, &seg, &h, &A, &carry, &gA, &gD, &gbias); }
      split_walk(0u, cx, t0, tn, &cin, &seg, &h, &A, &carry, &gA, &gD, &gbias);
    } else { // the same as loops: the compiler may keep the token-indexed arrays in memory
      for (var j = 0u; j < S; j++) { split_recompute(j, cx, t0, tn, full, &cin, &seg, &hr, &A); }
      if (full) { for (var i = 0u; i < NVL; i++) { h[i] = hr[i]; } }
      for (var j = 0u; j < S; j++) { split_walk(S - 1u - j, cx, t0, tn, &cin, &seg, &h, &A, &carry, &gA, &gD, &gbias); }
    }
    if (WGSUM && (DIAG & 1u) == 0u) { // the subgroups' rows of the segment's tokens, added in subgroup order
      workgroupBarrier();
      let nsg = WG / SGR;
      for (var kq = lid; kq < tn * 2u * N; kq += WG) {
        let tt = kq / (2u * N);
        let col = kq - tt * 2u * N;
        var acc = 0.0;
        for (var w = 0u; w < nsg; w++) { acc += s_pbc[(tt * nsg + w) * 2u * N + col]; }
        g_part_bc[((b * NWG + wid.x) * L + t0 + tt) * 2u * N + col] = acc;
      }
      workgroupBarrier(); // before the next segment's rows
    }
  }

  if (live) {
    var gAo: array<vec4<f32>, NVMAX>;
    var Ao: array<vec4<f32>, NVMAX>;
    for (var i = 0u; i < NVL; i++) {
      gAo[i] = lane_get(2u, &gA, i, lid);
      Ao[i] = lane_get(1u, &A, i, lid);
    }
    split_param_partials(b, e, q, gAo, Ao, gD, gbias);
  }
}

// ============================================================================================
// Reductions of the partials
// ============================================================================================

override RP_COLS: u32 = 16u;  // reduce: parameter outputs a workgroup (reduceParamsGeometry)
override RP_LANES: u32 = 16u; // reduce: batch lanes an output; RP_COLS · RP_LANES invocations a workgroup
override RBC: u32 = 1u;       // reduce: workgroups of the [dB | dC] part, per direction
override DIRS: u32 = 1u;      // reduce: directions summed by this dispatch (1 or 2)
override DX_OFF1: u32 = 0u;   // reduce, DIRS = 2: where the second direction's rows start in r_dxdbl,
override BC_OFF1: u32 = 0u;   // in r_part_bc
override PAR_OFF1: u32 = 0u;  // and in r_part_par (elements)

// selective_scan_reduce: the partials of DIRS directions' backwards summed, each direction's
// outputs with the same additions in the same order: its RBC workgroups of [dB | dC] rows (the NWG
// partial rows of each (b, t) in order), then its ⌈(N+2)·E / RP_COLS⌉ workgroups of parameters
// (each output's B partials in RP_LANES strided sums, then those in order).
@compute @workgroup_size(RP_COLS * RP_LANES)
fn selective_scan_reduce(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32, @builtin(num_workgroups) nwg: vec3u) {
  let w = wid.x + wid.y * nwg.x; // uniform in the workgroup, so are the returns below
  if (w < DIRS * RBC) { // [dB | dC]: the NWG partial rows of (b, t), summed in order
    let d = w / RBC;
    let Q = 2u * N;
    let i = (w - d * RBC) * RP_COLS * RP_LANES + lid;
    if (i < B * L * Q) {
      let bt = i / Q;
      let c = i - bt * Q;
      let b = bt / L;
      let t = bt - b * L;
      let pb = select(0u, BC_OFF1, d == 1u);
      var s = 0.0;
      for (var k = 0u; k < NWG; k++) { s += r_part_bc[pb + ((b * NWG + k) * L + t) * Q + c]; }
      let o = select(0u, DX_OFF1, d == 1u) + bt * (R + Q) + R + c;
      if (ACC_BC) { r_dxdbl[o] += s; } else { r_dxdbl[o] = s; }
    }
    return;
  }
  // the parameters: output k·E + e of part_par's rows, summed over the batch
  let X = (N + 2u) * E;
  let PW = (X + RP_COLS - 1u) / RP_COLS; // workgroups a direction
  let d = (w - DIRS * RBC) / PW;
  let pw = w - DIRS * RBC - d * PW;
  if (d >= DIRS) { return; }
  let lx = lid % RP_COLS;
  let ly = lid / RP_COLS;
  let o = pw * RP_COLS + lx;
  let pb = select(0u, PAR_OFF1, d == 1u);
  var acc = 0.0;
  if (o < X) {
    for (var b = ly; b < B; b += RP_LANES) { acc += r_part_par[pb + b * X + o]; }
  }
  s_lane[ly * RP_COLS + lx] = acc;
  workgroupBarrier();
  if (ly == 0u && o < X) {
    var s = s_lane[lx];
    for (var y = 1u; y < RP_LANES; y++) { s += s_lane[y * RP_COLS + lx]; }
    let k = o / E;
    let e = o - k * E;
    if (d == 0u) { reduce_param_out(k, e, s); } else { reduce_param_out1(k, e, s); }
  }
}

// Parameter output (k, e) of the first direction: dA_log[e, k] for k < N, then dD[e], dbias[e].
fn reduce_param_out(k: u32, e: u32, s: f32) {
  if (k < N) {
    let j = e * N + k;
    if (ACC_PAR) { r_dA_log[j] += s; } else { r_dA_log[j] = s; }
  } else if (k == N) {
    if (ACC_PAR) { r_dDskip[e] += s; } else { r_dDskip[e] = s; }
  } else {
    if (ACC_PAR) { r_ddt_bias[e] += s; } else { r_ddt_bias[e] = s; }
  }
}

// reduce_param_out for the second direction (DIRS = 2).
fn reduce_param_out1(k: u32, e: u32, s: f32) {
  if (k < N) {
    let j = e * N + k;
    if (ACC_PAR) { r_dA_log1[j] += s; } else { r_dA_log1[j] = s; }
  } else if (k == N) {
    if (ACC_PAR) { r_dDskip1[e] += s; } else { r_dDskip1[e] = s; }
  } else {
    if (ACC_PAR) { r_ddt_bias1[e] += s; } else { r_ddt_bias1[e] = s; }
  }
}
