#!/usr/bin/env node
/**
 * What the selective scan's recurrences cost without the rest of their kernels: small WGSL
 * kernels at vim-tiny's shape of one direction (B = 256 samples, L = 65 tokens, E = 384 channels,
 * N = 16 states, one invocation a channel, 128 a workgroup), each one part more than the one
 * before, timed by wall clock over back-to-back dispatches (median of rounds):
 *   - core:        h_t = exp(Δ_t A) ⊙ h_{t−1} + Δ_t u_t B_t, y_t = C_t · h_t, with Δ_t, u_t, B_t,
 *                  C_t made from the token and channel (no memory but one store at the end);
 *   - core-noexp:  the same with the decay as 1 + Δ_t A (what the exponentials cost);
 *   - core-bc:     B_t, C_t read from workgroup memory (all L tokens staged once, as broadcasts);
 *   - io:          core-bc plus u_t, Δraw_t, z_t read from memory two tokens ahead, softplus and the
 *                  SiLU gate, and out_t stored: the forward's own work without dt_proj, the combine
 *                  or the checkpoints; io-noexp the same with the decay as 1 + Δ_t A;
 *   - io-noload, io-nostore, io-nofn: io without its loads (inputs made from the token), without its
 *                  stores (one at the end), without softplus and the gate's sigmoid;
 *   - io-batch:    io in groups of 4 tokens, the next group's inputs loaded at a group's start and
 *                  the group's outputs stored together at its end; io-batch-break leaves the group's
 *                  loop at the last token (io-batch computes its last group whole, on repeated inputs);
 *                  io-batch-chunk restages B_t, C_t every 16 tokens between two barriers; io-batch-xz
 *                  reads u, Δraw, z from three separate regions (io and io-batch read one, at offsets
 *                  0, 1, 2: a third of the traffic); io-batch-rw also reads out's present value and
 *                  stores (that + y) / 2, as the fused combine does; io-batch-tokstore stores each
 *                  token's output when it is made (the group's loads still at its start);
 *   - io-staged:   io with each 12 tokens' u, Δraw, z loaded by the whole workgroup at once (16-byte
 *                  loads, all in flight together) into workgroup memory, then read from there.
 *   - bwd-*:       the backward's walk (192 invocations a workgroup, segments of 4 tokens) alone
 *                  and with its parts, described at backward() below; bwd-grp*, bwd-grpx*,
 *                  bwd-grpl: the same work as bwd-full with a segment's states a group of 4 at a
 *                  time (performance.md, measurement 17), at backwardGroups() and after it.
 * Results are not checked: these are timing kernels, not the model's. The first kernel runs for
 * half a second before it is timed (the GPU's clocks rise under load); run one GPU at a time.
 *
 *   node scripts/bench/scan-core.mjs [--repeat 20] [--rounds 7] [--only core,io,…] [--compare]
 *
 * --compare reads back each kind's du, dΔraw, dz and per-channel sums and prints their worst
 * relative difference from the first kind's (for backward kinds that must agree: bwd-full and the
 * bwd-grp* kinds with segments of 4; -s8's read other checkpoints).
 *
 * Needs the build (`npm run build`).
 */
import { parseArgs } from 'node:util';
import { acquireGpu, describeGpu } from '../../dist/gpu/device.js';

const { values } = parseArgs({
  options: {
    repeat: { type: 'string', default: '20' },
    rounds: { type: 'string', default: '7' },
    only: { type: 'string' },
    compare: { type: 'boolean', default: false },
  },
});
const B = 256, L = 65, E = 384, N = 16, WG = 128;
const repeat = Number(values.repeat);
const rounds = Number(values.rounds);

// the shapes (WG invocations a workgroup), the bindings, B_t, C_t's workgroup memory, the functions
const header = (wg) => `
const B = ${B}u; const L = ${L}u; const E = ${E}u; const NV = ${N / 4}u; const WG = ${wg}u;
@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> inp: array<f32>;
var<workgroup> s_bc: array<vec4<f32>, ${L * 2 * (N / 4)}>;
fn sigmoid(x: f32) -> f32 { let e = exp(-abs(x)); return select(e, 1.0, x >= 0.0) / (1.0 + e); }
fn softplus(x: f32) -> f32 { let y = exp(-abs(x)); let w = 1.0 + y; return max(x, 0.0) + select(log(w) * (y / (w - 1.0)), y, w == 1.0); }
`;
// every kernel's start: its sample and channel, A (made up) and the state h
const entry = `@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let b = wid.y;
  let e = wid.x * WG + lid;
  var A: array<vec4<f32>, NV>;
  var h: array<vec4<f32>, NV>;
  for (var i = 0u; i < NV; i++) { A[i] = -vec4<f32>(1.0, 2.0, 3.0, 4.0) * f32(i + 1u) * (1.0 + f32(e) * 1e-4); h[i] = vec4<f32>(0.0); }`;
// all L tokens' B_t, C_t (made up from the input) in workgroup memory
const stageBC = 'for (var k = lid; k < L * 2u * NV; k += WG) { s_bc[k] = vec4<f32>(inp[(b * L) * E + k % E], inp[(b * L) * E + (k + 7u) % E], 0.25, -0.5); }';
// one token's state update and y, with Bv, Cv of state vec4 i given by `bc` (default: from s_bc at token t)
const stateStep = (bc = 'let Bv = s_bc[t * 2u * NV + i]; let Cv = s_bc[t * 2u * NV + NV + i];') => `var y4 = vec4<f32>(0.0);
      for (var i = 0u; i < NV; i++) {
        ${bc}
        h[i] = decay(delta * A[i]) * h[i] + du * Bv;
        y4 += Cv * h[i];
      }
      let y = (y4.x + y4.y) + (y4.z + y4.w);`;

// io-staged: io with the inputs of TS tokens staged in workgroup memory by the whole workgroup at
// once (16-byte loads, all in flight together), then read from there token by token
const TS = 12;
function staged(noexp) {
  return `${header(WG)}
@group(0) @binding(2) var<storage, read> inp4: array<vec4<f32>>;
var<workgroup> s_in: array<f32, ${3 * TS * WG}>; // [array][token][lane]
fn decay(x: vec4<f32>) -> vec4<f32> { return ${noexp ? '(1.0 + (x))' : 'exp(x)'}; }
${entry}
  ${stageBC}
  for (var t0 = 0u; t0 < L; t0 += ${TS}u) {
    let tn = min(${TS}u, L - t0);
    workgroupBarrier();
    // rows (array a, token tt) of WG floats = WG/4 vec4; lane lid takes vec4 lid % (WG/4) of rows lid / (WG/4) + 4j
    var v: array<vec4<f32>, ${3 * TS / 4}>;
    let q = lid % (WG / 4u);
    let r0 = lid / (WG / 4u);
    for (var j = 0u; j < ${3 * TS / 4}u; j++) {
      let r = r0 + j * 4u; // row: array r / TS, token r % TS
      let a = r / ${TS}u;
      let tt = min(r % ${TS}u, tn - 1u);
      v[j] = inp4[((b * L + t0 + tt) * E + wid.x * WG) / 4u + q + a]; // (a shifts the array, as io's +1, +2)
    }
    for (var j = 0u; j < ${3 * TS / 4}u; j++) {
      let r = r0 + j * 4u;
      let base = r * WG + 4u * q;
      s_in[base] = v[j].x; s_in[base + 1u] = v[j].y; s_in[base + 2u] = v[j].z; s_in[base + 3u] = v[j].w;
    }
    workgroupBarrier();
    for (var tt = 0u; tt < tn; tt++) {
      let t = t0 + tt;
      let uu = s_in[tt * WG + lid];
      let draw = s_in[(${TS}u + tt) * WG + lid];
      let z = s_in[(${2 * TS}u + tt) * WG + lid];
      let delta = softplus(draw);
      let du = delta * uu;
      ${stateStep()}
      out[(b * L + t) * E + e] = y * z * sigmoid(z);
    }
  }
}`;
}

// io-batch: io in groups of G tokens: the next group's inputs loaded at the start of a group (after
// the previous group's stores), the group's outputs kept and stored together at its end
const G = 4;
function batched(mode = '') {
  // u, Δraw, z of the group's tokens from g0 on (io-batch-xz: u, Δraw and z from three separate
  // (B, L, E) regions of the input, as the model's are; io-batch-rw also the output's present value,
  // as the combine reads it)
  const sep = mode === 'xz' || mode === 'rw';
  const loadGroup = (g0) => `for (var j = 0u; j < ${G}u; j++) { let row = (b * L + min(${g0} + j, L - 1u)) * E + e;
    nu[j] = inp[row]; nd[j] = inp[row + ${sep ? 'B * L * E' : '1u'}]; nz[j] = inp[row + ${sep ? '2u * B * L * E' : '2u'}];
    ${mode === 'rw' ? 'nc[j] = out[row];' : ''} }`;
  return `${header(WG)}
fn decay(x: vec4<f32>) -> vec4<f32> { return exp(x); }
${entry}
  ${stageBC}
  workgroupBarrier();
  var nu: vec4<f32>; var nd: vec4<f32>; var nz: vec4<f32>; var nc: vec4<f32>;
  ${loadGroup('0u')}
  for (var t0 = 0u; t0 < L; t0 += ${G}u) {
    ${mode === 'chunk' ? `if (t0 % 16u == 0u) { // B, C of 16 tokens restaged, as the model's forward does
      workgroupBarrier();
      let k = min(t0, L - 16u) * 2u * NV + lid;
      s_bc[k] = vec4<f32>(inp[(b * L + t0) * E + lid], inp[(b * L + t0) * E + lid + 3u], 0.25, -0.5);
      workgroupBarrier();
    }` : ''}
    let cu = nu; let cd = nd; let cz = nz; let cc = nc;
    ${loadGroup(`t0 + ${G}u`)}
    var yo: vec4<f32>;
    for (var j = 0u; j < ${G}u; j++) {
      ${mode === 'break' ? 'if (t0 + j >= L) { break; }' : ''}
      let t = min(t0 + j, L - 1u);
      let delta = softplus(cd[j]);
      let du = delta * cu[j];
      ${stateStep()}
      yo[j] = y * cz[j] * sigmoid(cz[j]);
      ${mode === 'rw' ? 'yo[j] = (cc[j] + yo[j]) * 0.5;' : ''}
      ${mode === 'tokstore' ? 'if (t0 + j < L) { out[(b * L + t0 + j) * E + e] = yo[j]; }' : ''}
    }
    ${mode === 'tokstore' ? '' : `for (var j = 0u; j < ${G}u; j++) { if (t0 + j < L) { out[(b * L + t0 + j) * E + e] = yo[j]; } }`}
  }
}`;
}

// The backward's walk (bwd-*): one invocation a channel, 192 a workgroup (grid (2, B)), the channel's
// 16 states, segments of S = 4 tokens taken last to first, each walked backward as the split
// backward's lean walk does (y recomputed, gy, gz, the carry a_{t+1} ⊙ gh_{t+1}, the du and dΔ sums
// over states, the gA sums). Parts added by the kind's name:
//   sums  each token's [dB | dC] items (8 vec4) summed over the subgroup's channels by halving shuffles
//   rec   each segment's states recomputed from its entering state into a token-indexed array (loops)
//   io    the segment's u, Δraw, dout, z and entering state loaded at its start (else made from t, e),
//         du, dΔraw, dz stored each token and the summed items written as a partial row
//   noexp the decay as 1 + x
//   nosel the halving exchanges without their selects (each lane keeps the first half and sends the
//         second: wrong sums, the exchanges' cost without the selects')
//   scalar the halvings carried down to single floats (31 exchanges of one float against 36: 16, 8 and 4
//         as vec4 items, then 2 and 1 within the lane's vec4), so lane j ends with column j of the
//         token's [dB | dC] row and every lane stores it (one 128-byte row, no branch)
//   fold2 scalar, with the first two halvings inside the walk as the state vec4s' items are made
//         (the model's walk form of that name)
//   pipe  scalar, with the last three halvings (4, 2, 1) of token t done at the start of the next
//         token's walk, so that their exchanges can overlap its arithmetic (2 vec4 more live a token);
//         the last token's are done after the loop; the first token's start finishes a zero row
//         into a spare row
const BWG = 192, S4 = 4;
// every backward kind's start after its state: B_t, C_t staged, the channel's dt bias and D (made up)
const bwdStart = `${stageBC}
  workgroupBarrier();
  let bias = -2.0 + f32(e % 5u) * 0.1;
  let Dv = 0.5;`;
function backward(kind) {
  const sums = kind.includes('sums') || kind.includes('full');
  const rec = kind.includes('rec') || kind.includes('full');
  const io = kind.includes('io') || kind.includes('full');
  const exp = kind.includes('noexp') ? '(1.0 + (x))' : 'exp(x)';
  const nosel = kind.includes('nosel');
  const pipe = kind.includes('pipe');
  const fold2 = kind.includes('fold2');
  const scalar = pipe || fold2 || kind.includes('scalar');
  const BLE = B * L * E;
  // the row of token t of this lane's subgroup in the partial rows (3·BLE on); row L of a subgroup is spare
  const prow = (t) => `(3u * BLE + ((b * 12u + wid.x * 6u + lid / 32u) * (L + 1u) + (${t})) * 32u)`;
  // halvings at lane distances 4, 2, 1 of two vec4 items p0, p1 (items 4·(lane & 4 ? 1 : 0) …), to token tok's row
  const tail = (p0, p1, tok) => `{
        let r4 = select(${p0}, ${p1}, (lane & 4u) != 0u) + subgroupShuffleXor(select(${p1}, ${p0}, (lane & 4u) != 0u), 4u);
        let r2 = select(r4.xy, r4.zw, (lane & 2u) != 0u) + subgroupShuffleXor(select(r4.zw, r4.xy, (lane & 2u) != 0u), 2u);
        let r1 = select(r2.x, r2.y, (lane & 1u) != 0u) + subgroupShuffleXor(select(r2.y, r2.x, (lane & 1u) != 0u), 1u);
        ${io ? `out[${prow(tok)} + lane] = r1;` : 'acc += r1;'}
      }`;
  return `enable subgroups;${header(BWG)}const S = ${S4}u; const BLE = ${BLE}u;
@group(0) @binding(2) var<storage, read> inp4: array<vec4<f32>>;
fn decay(x: vec4<f32>) -> vec4<f32> { return ${exp}; }
fn halve(v: ptr<function, array<vec4<f32>, 8>>, h: u32, off: u32, lane: u32) {
  let upper = (lane & off) != 0u;
  for (var j = 0u; j < h; j++) {
    let lo = (*v)[j];
    let hi = (*v)[j + h];
    (*v)[j] = ${nosel ? 'lo + subgroupShuffleXor(hi, off)' : 'select(lo, hi, upper) + subgroupShuffleXor(select(hi, lo, upper), off)'};
  }
}
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32, @builtin(subgroup_invocation_id) lane: u32) {
  let b = wid.y;
  let e = wid.x * WG + lid;
  var A: array<vec4<f32>, NV>;
  var h: array<vec4<f32>, NV>;
  var carry: array<vec4<f32>, NV>;
  var gA: array<vec4<f32>, NV>;
  for (var i = 0u; i < NV; i++) { A[i] = -vec4<f32>(1.0, 2.0, 3.0, 4.0) * f32(i + 1u) * (1.0 + f32(e) * 1e-4); h[i] = vec4<f32>(0.1); }
  ${bwdStart}
  var acc = 0.0;
  var gD = 0.0;
  var gbias = 0.0;
  let nseg = (L + S - 1u) / S;
  var pend: array<vec4<f32>, 2>; // pipe: the previous token's items after two halvings
  var pt = L;                    // pipe: their token (L: the spare row)
  for (var kk = 0u; kk < nseg; kk++) {
    let k = nseg - 1u - kk;
    let t0 = k * S;
    let tn = min(S, L - t0);
    var tok: array<vec4<f32>, 4>; // u, Δraw, dout, z of token t0 + j
    var h0: array<vec4<f32>, NV>;
    for (var j = 0u; j < S; j++) {
      let t = t0 + min(j, tn - 1u);
      ${io ? `let row = (b * L + t) * E + e;
      tok[j] = vec4<f32>(inp[row], inp[BLE + row], inp[2u * BLE + row], inp[3u * BLE + row]);` : `tok[j] = vec4<f32>(0.5 + f32(t) * 1e-3, -3.0 + f32((t + e) % 7u) * 0.1, 0.01 * f32(t % 3u), f32((t + 3u * e) % 5u) - 2.0);`}
    }
    for (var i = 0u; i < NV; i++) {
      ${io ? 'h0[i] = select(inp4[((b * 16u + max(k, 1u) - 1u) * NV + i) * E + e], vec4<f32>(0.0), k == 0u);' : 'h0[i] = h[i] * 0.5;'}
    }
    var sh: array<array<vec4<f32>, NV>, 4>; // the state entering token t0 + j
    var del: vec4<f32>;
    ${rec ? `var hr = h0;
    for (var j = 0u; j < S; j++) {
      let d = softplus(tok[j].y + bias);
      del[j] = d;
      sh[j] = hr;
      for (var i = 0u; i < NV; i++) { hr[i] = decay(d * A[i]) * hr[i] + (d * tok[j].x) * s_bc[(t0 + j) * 2u * NV + i]; }
    }` : `for (var j = 0u; j < S; j++) { del[j] = softplus(tok[j].y + bias); for (var i = 0u; i < NV; i++) { sh[j][i] = h0[i] * f32(j + 1u); } }`}
    for (var jj = 0u; jj < S; jj++) {
      let tt = S - 1u - jj;
      if (tt >= tn) { continue; }
      let t = t0 + tt;
      let tk = tok[tt];
      let uu = tk.x;
      let gout = tk.z;
      let z = tk.w;
      let delta = del[tt];
      let du = delta * uu;
      let bct = t * 2u * NV;
      ${pipe ? tail('pend[0]', 'pend[1]', 'pt') : ''}
      var y4 = vec4<f32>(0.0);
      for (var i = 0u; i < NV; i++) { y4 += s_bc[bct + NV + i] * h[i]; }
      let y = Dv * uu + ((y4.x + y4.y) + (y4.z + y4.w));
      let sz = sigmoid(z);
      let gy = gout * z * sz;
      let gz = gout * y * sz * (1.0 + z * (1.0 - sz));
      gD += gy * uu;
      var gu4 = vec4<f32>(0.0);
      var gd4 = vec4<f32>(0.0);
      var it: array<vec4<f32>, 8>; // gB (0…3), gC (4…7)
      for (var i = 0u; i < NV; i++) {
        let hPrev = sh[tt][i];
        let a = decay(delta * A[i]);
        let Bv = s_bc[bct + i];
        let gh = gy * s_bc[bct + NV + i] + carry[i];
        it[i] = gh * du;
        it[NV + i] = gy * h[i];
        ${fold2 && sums ? `{ // the first two halvings here, as the model's fold2 walk takes them
          let u16 = (lane & 16u) != 0u;
          it[i] = select(it[i], it[NV + i], u16) + subgroupShuffleXor(select(it[NV + i], it[i], u16), 16u);
          if (i >= 2u) {
            let u8 = (lane & 8u) != 0u;
            it[i - 2u] = select(it[i - 2u], it[i], u8) + subgroupShuffleXor(select(it[i], it[i - 2u], u8), 8u);
          }
        }` : ''}
        gu4 += gh * Bv;
        let p = gh * (a * hPrev);
        gd4 += A[i] * p;
        gA[i] += p * delta;
        carry[i] = a * gh;
        h[i] = hPrev;
      }
      let su = (gu4.x + gu4.y) + (gu4.z + gu4.w);
      let gu = Dv * gy + delta * su;
      let gdr = (((gd4.x + gd4.y) + (gd4.z + gd4.w)) + uu * su) * sigmoid(tk.y + bias);
      gbias += gdr;
      ${io ? `let row = (b * L + t) * E + e;
      out[row] = gu;
      out[BLE + row] = gdr;
      out[2u * BLE + row] = gz;` : 'acc += gu + gdr + gz;'}
      ${sums && pipe ? `${fold2 ? '' : `halve(&it, 4u, 16u, lane);
      halve(&it, 2u, 8u, lane);`}
      pend[0] = it[0];
      pend[1] = it[1];
      pt = t;` : sums && scalar ? `${fold2 ? '' : `halve(&it, 4u, 16u, lane);
      halve(&it, 2u, 8u, lane);`}
      ${tail('it[0]', 'it[1]', 't')}` : sums ? `halve(&it, 4u, 16u, lane);
      halve(&it, 2u, 8u, lane);
      halve(&it, 1u, 4u, lane);
      var r = it[0];
      r += subgroupShuffleXor(r, 2u);
      r += subgroupShuffleXor(r, 1u);
      ${io ? `if (lane % 4u == 0u) { let item = lane / 4u; let pr = ((b * 12u + wid.x * 6u + lid / 32u) * L + t) * 32u + 4u * item;
        out[3u * BLE + pr] = r.x; out[3u * BLE + pr + 1u] = r.y; out[3u * BLE + pr + 2u] = r.z; out[3u * BLE + pr + 3u] = r.w; }` : 'acc += r.x + r.w;'}` : `acc += it[0].x + it[7].w;`}
    }
  }
  ${pipe ? tail('pend[0]', 'pend[1]', 'pt') : ''}
  var g = gD + gbias;
  for (var i = 0u; i < NV; i++) { g += gA[i].x + gA[i].w; }
  out[4u * BLE + b * E + e] = acc + g;
}`;
}

// The lanes' parts in a token's group exchange (bwd-grp*): the half each keeps at distances 16, 8
// and 4, the 8 lanes that store (one float each) and where their column of the partial rows starts
const groupLanes = `let u16 = (lane & 16u) != 0u;
  let u8 = (lane & 8u) != 0u;
  let u4 = (lane & 4u) != 0u;
  let w8 = (lane & 3u) == 0u;
  let prow = 3u * BLE + (b * 12u + wid.x * 6u + lid / 32u) * L * 32u + select(0u, 16u, u16) + select(0u, 2u, u8) + select(0u, 1u, u4);`;
// Token tt's step of group g's backward walk (bwd-grp*), hg holding the group's state after the
// token: at(name) is the token's value of a per-token array (del, gy, du, the sums ya, gua, gda,
// and sh, the group's state entering it); its [gB | gC] items summed over the subgroup's channels
const groupStep = (at, tt, g) => `let bct = (t0 + ${tt}) * 2u * NV + ${g};
        let Bv = s_bc[bct];
        let Cv = s_bc[bct + NV];
        let a = decay(${at('del')} * Ag);
        ${at('ya')} += dot(Cv, hg);
        let gh = ${at('gy')} * Cv + cg;
        let iB = gh * ${at('du')};
        let iC = ${at('gy')} * hg;
        ${at('gua')} += dot(gh, Bv);
        let p = gh * (a * ${at('sh')});
        ${at('gda')} += dot(Ag, p);
        gAg += p * ${at('del')};
        cg = a * gh;
        hg = ${at('sh')};
        let r16 = select(iB, iC, u16) + subgroupShuffleXor(select(iC, iB, u16), 16u);
        let r8 = select(r16.xy, r16.zw, u8) + subgroupShuffleXor(select(r16.zw, r16.xy, u8), 8u);
        let r4 = select(r8.x, r8.y, u4) + subgroupShuffleXor(select(r8.y, r8.x, u4), 4u);
        let r2 = r4 + subgroupShuffleXor(r4, 2u);
        let r1 = r2 + subgroupShuffleXor(r2, 1u);
        if (w8) { out[prow + (t0 + ${tt}) * 32u + 4u * ${g}] = r1; }`;
// A token's gradients after the segment's last group (bwd-grp*): at as for groupStep (and tok, its
// u, Δraw, dout, z), row its row of du, dΔraw and dz
const groupTokenGrads = (at, row) => `let z = ${at('tok')}.w;
      let sz = sigmoid(z);
      let y = Dv * ${at('tok')}.x + ${at('ya')};
      let gz = ${at('tok')}.z * y * sz * (1.0 + z * (1.0 - sz));
      gD += ${at('gy')} * ${at('tok')}.x;
      let gu = Dv * ${at('gy')} + ${at('del')} * ${at('gua')};
      let gdr = (${at('gda')} + ${at('tok')}.x * ${at('gua')}) * sigmoid(${at('tok')}.y + bias);
      gbias += gdr;
      out[${row}] = gu;
      out[BLE + ${row}] = gdr;
      out[2u * BLE + ${row}] = gz;`;

// The backward with the segment's states taken a group at a time (bwd-grp*): the same work as
// bwd-full, but each segment's loop nest inverted: for each group of 4 states (one vec4) the
// group's states are recomputed over the segment from the checkpoint and the group walked backward
// over the segment's tokens, its y, du and dΔ terms added into per-token sums; the per-token
// gradients are made and stored after the last group. Only one group's S states are live at once
// (4·S floats instead of 16·S). Each token's group items (gB, gC: 2 vec4) are summed over the
// subgroup's channels at once (exchanges at 16, 8, 4, then 2 and 1 on the float left), 8 lanes
// storing the 8 columns. Variants by name:
//   wm  the channel's A, carry and gA (48 floats) in workgroup memory, a group's read at its start
//       and its carry and gA written back at its end (registers: only the group's 12; 45 KB of
//       workgroup memory a workgroup with B_t, C_t's)
//   wa  only A in workgroup memory
//   s8  segments of 8 tokens (half the checkpoints)
function backwardGroups(kind) {
  const S = kind.includes('s8') ? 8 : 4;
  const wm = kind.includes('wm');
  const wa = wm || kind.includes('wa'); // A in workgroup memory
  const BLE = B * L * E;
  const nseg = Math.ceil(L / S);
  const st = (a, i) => `s_st[(${a}u * NV + ${i}) * WG + lid]`;
  return `enable subgroups;${header(BWG)}const S = ${S}u; const BLE = ${BLE}u; const NSEG = ${nseg}u;
@group(0) @binding(2) var<storage, read> inp4: array<vec4<f32>>;
${wa ? `var<workgroup> s_st: array<vec4<f32>, ${(wm ? 3 : 1) * (N / 4) * BWG}>; // A (, carry, gA): [array][vec4][lane]` : ''}
fn decay(x: vec4<f32>) -> vec4<f32> { return exp(x); }
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32, @builtin(subgroup_invocation_id) lane: u32) {
  let b = wid.y;
  let e = wid.x * WG + lid;
  var h: array<vec4<f32>, NV>;
  ${wa ? '' : 'var A: array<vec4<f32>, NV>;'}
  ${wm ? '' : 'var carry: array<vec4<f32>, NV>;\n  var gA: array<vec4<f32>, NV>;'}
  for (var i = 0u; i < NV; i++) {
    let a0 = -vec4<f32>(1.0, 2.0, 3.0, 4.0) * f32(i + 1u) * (1.0 + f32(e) * 1e-4);
    h[i] = vec4<f32>(0.1);
    ${wa ? `${st(0, 'i')} = a0;` : 'A[i] = a0;'}
    ${wm ? `${st(1, 'i')} = vec4<f32>(0.0); ${st(2, 'i')} = vec4<f32>(0.0);` : 'carry[i] = vec4<f32>(0.0); gA[i] = vec4<f32>(0.0);'}
  }
  ${bwdStart}
  var gD = 0.0;
  var gbias = 0.0;
  ${groupLanes}
  for (var kk = 0u; kk < NSEG; kk++) {
    let k = NSEG - 1u - kk;
    let t0 = k * S;
    let tn = min(S, L - t0);
    var tok: array<vec4<f32>, S>; // u, Δraw, dout, z of token t0 + j
    for (var j = 0u; j < S; j++) {
      let row = (b * L + t0 + min(j, tn - 1u)) * E + e;
      tok[j] = vec4<f32>(inp[row], inp[BLE + row], inp[2u * BLE + row], inp[3u * BLE + row]);
    }
    var del: array<f32, S>;
    var gy: array<f32, S>;
    var du: array<f32, S>;
    var ya: array<f32, S>;  // Σ over the groups: C_t · h_t
    var gua: array<f32, S>; // gh_t · B_t
    var gda: array<f32, S>; // A ⊙ gh_t ⊙ a_t ⊙ h_{t−1}
    for (var j = 0u; j < S; j++) {
      del[j] = softplus(tok[j].y + bias);
      gy[j] = tok[j].z * tok[j].w * sigmoid(tok[j].w);
      du[j] = del[j] * tok[j].x;
      ya[j] = 0.0; // (set, not left to the declaration: lavapipe does not zero a loop's variables each iteration)
      gua[j] = 0.0;
      gda[j] = 0.0;
    }
    for (var g = 0u; g < NV; g++) {
      let Ag = ${wa ? st(0, 'g') : 'A[g]'};
      var cg = ${wm ? st(1, 'g') : 'carry[g]'};
      var gAg = ${wm ? st(2, 'g') : 'gA[g]'};
      var sh: array<vec4<f32>, S>; // the group's state entering token t0 + j
      var hr = select(inp4[((b * (NSEG - 1u) + max(k, 1u) - 1u) * NV + g) * E + e], vec4<f32>(0.0), k == 0u);
      sh[0] = hr;
      for (var j = 0u; j + 1u < S; j++) {
        hr = decay(del[j] * Ag) * hr + du[j] * s_bc[(t0 + j) * 2u * NV + g];
        sh[j + 1u] = hr;
      }
      var hg = h[g];
      for (var jj = 0u; jj < S; jj++) {
        let tt = S - 1u - jj;
        if (tt >= tn) { continue; }
        ${groupStep((n) => `${n}[tt]`, 'tt', 'g')}
      }
      h[g] = hg;
      ${wm ? `${st(1, 'g')} = cg;\n      ${st(2, 'g')} = gAg;` : 'carry[g] = cg;\n      gA[g] = gAg;'}
    }
    for (var j = 0u; j < S; j++) {
      if (j >= tn) { continue; }
      let row = (b * L + t0 + j) * E + e;
      ${groupTokenGrads((n) => `${n}[j]`, 'row')}
    }
  }
  var gsum = gD + gbias;
  for (var i = 0u; i < NV; i++) { let v = ${wm ? st(2, 'i') : 'gA[i]'}; gsum += v.x + v.w; }
  out[4u * BLE + b * E + e] = gsum;
}`;
}

// bwd-grpx*: bwd-grp written out (every group and token loop generated, each per-token value a
// named variable), so no array is indexed by a variable; wa, wm as for bwd-grp (S = 4).
// bwd-grpl: the same with the groups in a loop the compiler cannot write out (its trip count is
// not a constant to it), the group's h, carry and gA in workgroup memory (read at the group's
// start, written at its end) and its A made anew (the model would read it from memory); the
// segment's tokens still written out, so the per-token values stay in registers.
function backwardGroupsWritten(kind) {
  const S = 4;
  const loop = kind.startsWith('bwd-grpl');
  const wm = loop || kind.includes('wm'); // carry, gA (and with loop, h) in workgroup memory
  const wa = !loop && (wm || kind.includes('wa'));
  const BLE = B * L * E;
  const nseg = Math.ceil(L / S);
  const NVn = N / 4;
  const arrays = loop ? ['h', 'carry', 'gA'] : wa ? ['A', ...(wm ? ['carry', 'gA'] : [])] : [];
  // group g's vec4 of an array: a register (h0, A2, …) or its row of s_st; g a number or 'g' (the loop's)
  const gi = (g) => (typeof g === 'number' ? `${g}u` : g);
  const v = (name, g) => (arrays.includes(name) ? `s_st[(${arrays.indexOf(name)}u * NV + ${gi(g)}) * WG + lid]` : `${name}${g}`);
  const makeA = (g) => `-vec4<f32>(1.0, 2.0, 3.0, 4.0) * f32(${gi(g)} + 1u) * (1.0 + f32(e) * 1e-4)`;
  const J = [...Array(S).keys()];
  const G = [...Array(NVn).keys()];
  const group = (g) => `{
      let Ag = ${loop ? makeA(g) : v('A', g)};
      var cg = ${v('carry', g)};
      var gAg = ${v('gA', g)};
      let sh0 = select(inp4[((b * (NSEG - 1u) + max(k, 1u) - 1u) * NV + ${gi(g)}) * E + e], vec4<f32>(0.0), k == 0u);
${J.slice(1).map((j) => `      let sh${j} = decay(del${j - 1} * Ag) * sh${j - 1} + du${j - 1} * s_bc[(t0 + ${j - 1}u) * 2u * NV + ${gi(g)}];`).join('\n')}
      var hg = ${v('h', g)};
${J.slice().reverse().map((tt) => `      if (${tt}u < tn) {
        ${groupStep((n) => `${n}${tt}`, `${tt}u`, gi(g))}
      }`).join('\n')}
      ${v('h', g)} = hg;
      ${v('carry', g)} = cg;
      ${v('gA', g)} = gAg;
    }`;
  return `enable subgroups;${header(BWG)}const S = ${S}u; const BLE = ${BLE}u; const NSEG = ${nseg}u;
@group(0) @binding(2) var<storage, read> inp4: array<vec4<f32>>;
${arrays.length ? `var<workgroup> s_st: array<vec4<f32>, ${arrays.length * NVn * BWG}>; // ${arrays.join(', ')}: [array][vec4][lane]` : ''}
fn decay(x: vec4<f32>) -> vec4<f32> { return exp(x); }
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32, @builtin(subgroup_invocation_id) lane: u32) {
  let b = wid.y;
  let e = wid.x * WG + lid;
${G.map((g) => ['h', 'carry', 'gA', ...(loop ? [] : ['A'])].map((name) => {
    const init = name === 'h' ? 'vec4<f32>(0.1)' : name === 'A' ? makeA(g) : 'vec4<f32>(0.0)';
    return arrays.includes(name) ? `  ${v(name, g)} = ${init};` : `  var ${name}${g} = ${init};`;
  }).join('\n')).join('\n')}
  ${bwdStart}
  var gD = 0.0;
  var gbias = 0.0;
  ${groupLanes}
  let ng = select(NV, 0u, wid.x > 100000u); // NV, not known to the compiler (and uniform)
  for (var kk = 0u; kk < NSEG; kk++) {
    let k = NSEG - 1u - kk;
    let t0 = k * S;
    let tn = min(S, L - t0);
${J.map((j) => `    let row${j} = (b * L + t0 + min(${j}u, tn - 1u)) * E + e;
    let tok${j} = vec4<f32>(inp[row${j}], inp[BLE + row${j}], inp[2u * BLE + row${j}], inp[3u * BLE + row${j}]);
    let del${j} = softplus(tok${j}.y + bias);
    let gy${j} = tok${j}.z * tok${j}.w * sigmoid(tok${j}.w);
    let du${j} = del${j} * tok${j}.x;
    var ya${j} = 0.0;
    var gua${j} = 0.0;
    var gda${j} = 0.0;`).join('\n')}
${loop ? `    for (var g = 0u; g < ng; g++) ${group('g')}` : G.map(group).join('\n')}
${J.map((j) => `    if (${j}u < tn) {
      ${groupTokenGrads((n) => `${n}${j}`, `row${j}`)}
    }`).join('\n')}
  }
  var gsum = gD + gbias;
${G.map((g) => `  { let gv = ${v('gA', g)}; gsum += gv.x + gv.w; }`).join('\n')}
  out[4u * BLE + b * E + e] = gsum;
}`;
}

// body(kind): the per-token code; kinds share the prologue and the final store
function kernel(kind) {
  if (kind.startsWith('bwd-grpx') || kind.startsWith('bwd-grpl')) return backwardGroupsWritten(kind);
  if (kind.startsWith('bwd-grp')) return backwardGroups(kind);
  if (kind.startsWith('bwd')) return backward(kind);
  if (kind.startsWith('io-batch')) return batched(kind.slice(9));
  if (kind.startsWith('io-staged')) return staged(kind.endsWith('-noexp'));
  const exp = kind.endsWith('-noexp') ? '(1.0 + (x))' : 'exp(x)';
  const bc = kind === 'core' || kind === 'core-noexp'
    ? `let Bv = vec4<f32>(f32(t) * 1e-3) + A[i] * 1e-2; let Cv = vec4<f32>(f32(t) * 2e-3) - A[i] * 1e-2;`
    : `let Bv = s_bc[t * 2u * NV + i]; let Cv = s_bc[t * 2u * NV + NV + i];`;
  const io = kind.startsWith('io');
  const noload = kind === 'io-noload', nostore = kind === 'io-nostore', nofn = kind === 'io-nofn';
  return `${header(WG)}
fn decay(x: vec4<f32>) -> vec4<f32> { return ${exp}; }
${entry}
  ${kind === 'core' || kind === 'core-noexp' ? '' : `
  ${stageBC}
  workgroupBarrier();`}
  var acc = 0.0;
  ${io && !noload ? `var pu0 = inp[(b * L + 0u) * E + e]; var pd0 = inp[(b * L + 0u) * E + e + 1u]; var pz0 = inp[(b * L + 0u) * E + e + 2u];
  var pu1 = inp[(b * L + 1u) * E + e]; var pd1 = inp[(b * L + 1u) * E + e + 1u]; var pz1 = inp[(b * L + 1u) * E + e + 2u];` : ''}
  for (var t = 0u; t < L; t++) {
    ${io ? `${noload ? 'let uu = 0.5 + f32(t) * 1e-3; let draw = -3.0 + f32((t + e) % 7u) * 0.1; let z = f32((t + 3u * e) % 5u) - 2.0;' : `let uu = pu0; let draw = pd0; let z = pz0;
    pu0 = pu1; pd0 = pd1; pz0 = pz1;
    if (t + 2u < L) { let row = (b * L + t + 2u) * E + e; pu1 = inp[row]; pd1 = inp[row + 1u]; pz1 = inp[row + 2u]; }`}
    let delta = ${nofn ? 'draw * 0.01' : 'softplus(draw)'};` : `let uu = 0.5 + f32(t) * 1e-3; let delta = 0.01 + f32((t + e) % 7u) * 1e-3;`}
    let du = delta * uu;
    ${stateStep(bc)}
    ${io && !nostore ? `out[(b * L + t) * E + e] = y * z * ${nofn ? '0.5' : 'sigmoid(z)'};` : io ? 'acc += y * z * sigmoid(z);' : `acc += y;`}
  }
  ${io && !nostore ? '' : 'out[b * E + e] = acc;'}
}`;
}

const gpu = await acquireGpu({});
console.log(describeGpu(gpu));
const dev = gpu.device;
const outBuf = dev.createBuffer({ size: 4 * (4 * B * L * E + B * E + B * 12 * 32), usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
const inBuf = dev.createBuffer({ size: 4 * (4 * B * L * E + 8), usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST });
dev.queue.writeBuffer(inBuf, 0, new Float32Array(4 * B * L * E + 8).map((_, i) => Math.sin(i) * 0.5));

const bgl = dev.createBindGroupLayout({ entries: [
  { binding: 0, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'storage' } },
  { binding: 1, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'read-only-storage' } },
  { binding: 2, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'read-only-storage' } },
] });
const layout = dev.createPipelineLayout({ bindGroupLayouts: [bgl] });
const kinds = (values.only ? values.only.split(',') : ['core', 'core-noexp', 'core-bc', 'io', 'io-noexp', 'io-noload', 'io-nostore', 'io-nofn', 'io-batch', 'io-batch-break', 'io-batch-chunk', 'io-batch-xz', 'io-batch-rw', 'io-batch-tokstore', 'io-staged', 'io-staged-noexp',
  'bwd-arith', 'bwd-arith-noexp', 'bwd-sums', 'bwd-sums-nosel', 'bwd-rec', 'bwd-sums-rec', 'bwd-io', 'bwd-full', 'bwd-full-noexp', 'bwd-full-nosel',
  'bwd-sums-scalar', 'bwd-sums-pipe', 'bwd-full-scalar', 'bwd-full-pipe', 'bwd-full-fold2', 'bwd-full-fold2-pipe']);
let first = null; // --compare: the first kind's outputs
for (const kind of kinds) {
  const module = dev.createShaderModule({ code: kernel(kind) });
  const info = await module.getCompilationInfo();
  const errs = info.messages.filter((m) => m.type === 'error');
  if (errs.length) { console.error(kind, errs.map((m) => `${m.lineNum}: ${m.message}`).join('\n')); process.exit(1); }
  const pipeline = await dev.createComputePipelineAsync({ layout, compute: { module, entryPoint: 'main' } });
  const bind = dev.createBindGroup({ layout: bgl, entries: [{ binding: 0, resource: { buffer: outBuf } }, { binding: 1, resource: { buffer: inBuf } }, { binding: 2, resource: { buffer: inBuf } }] });
  const run = async (n) => {
    const enc = dev.createCommandEncoder();
    const pass = enc.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bind);
    for (let i = 0; i < n; i++) pass.dispatchWorkgroups(E / (kind.startsWith('bwd') ? BWG : WG), B);
    pass.end();
    const t0 = performance.now();
    dev.queue.submit([enc.finish()]);
    await dev.queue.onSubmittedWorkDone();
    return performance.now() - t0;
  };
  await run(3);
  if (kind === kinds[0]) { // the GPU's clocks rise under load: half a second of it before the first measurement
    for (const t0 = performance.now(); performance.now() - t0 < 500;) await run(repeat);
  }
  const times = [];
  for (let r = 0; r < rounds; r++) times.push(((await run(repeat)) - (await run(1))) / (repeat - 1));
  times.sort((a, b) => a - b);
  const us = times[times.length >> 1] * 1000;
  let diff = '';
  if (values.compare) { // du, dΔraw, dz and the per-channel sums against the first kind's
    const read = dev.createBuffer({ size: 4 * (3 * B * L * E + B * E), usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    const enc = dev.createCommandEncoder();
    enc.copyBufferToBuffer(outBuf, 0, read, 0, 4 * 3 * B * L * E);
    enc.copyBufferToBuffer(outBuf, 4 * 4 * B * L * E, read, 4 * 3 * B * L * E, 4 * B * E);
    dev.queue.submit([enc.finish()]);
    await read.mapAsync(GPUMapMode.READ);
    const got = new Float32Array(read.getMappedRange().slice(0));
    read.unmap();
    if (!first) first = got;
    else {
      let worst = 0;
      for (let i = 0; i < got.length; i++) worst = Math.max(worst, Math.abs(got[i] - first[i]) / (Math.abs(first[i]) + 1e-3));
      diff = `, outputs against ${kinds[0]}'s: ${worst.toExponential(2)} (relative, worst)`;
    }
  }
  console.log(`${kind.padEnd(12)} ${us.toFixed(1)} µs a dispatch, ${(us * 48 / 1000).toFixed(2)} ms for 48${diff}`);
}
