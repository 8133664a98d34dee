/**
 * `bench-vim --check`: every kernel of a training step against the float64 reference, on fresh
 * random inputs at a model's real shapes, on whatever adapter is present. This is how a machine
 * without a test runner (the GPU host) proves its kernels right.
 *
 * Each check uploads f32-rounded random inputs, runs the kernel's dispatches, runs the reference
 * op in float64 on the same values, and reports ‖gpu − ref‖ / ‖ref‖ per output.
 * Shape letters: B batch, L tokens, D, E, N, R, K, C, P, Np patches, BL = B·L.
 */
import type { Gpu } from '../gpu/device.js';
import { compileCheck, runDispatches, type Dispatch } from '../gpu/kernels.js';
import { createTensor, download, type GpuTensor } from '../gpu/tensor.js';
import type { VimConfig } from '../model/config.js';
import { Rng } from '../rng.js';
import * as ref from '../reference/index.js';
import { imageWords, normalizePatches, tokensBackward, tokensForward, uploadImages } from '../gpu/ops/embed.js';
import {
  biasBackward, matmulBackwardInput, matmulBackwardWeight, matmulBackwardWeightBatchElements, matmulForward, WeightSums, weightSumsDispatch, weightSumsElements,
} from '../gpu/ops/matmul.js';
import { residualRmsnormBackward, residualRmsnormForward, rmsnormBackwardScratchElements } from '../gpu/ops/rmsnorm.js';
import {
  conv1dBackward2ScratchElements, conv1dBackwardScratchElements, conv1dSiluBackward, conv1dSiluBackward2, conv1dSiluForward,
  conv1dSiluForward2,
} from '../gpu/ops/conv1d.js';
import {
  scanCheckpointElements, scanCheckpointsInForward, scanRecomputesDelta, scanTuning, selectiveScanBackward, selectiveScanBackwardPair, selectiveScanBackwardPlan, selectiveScanForward, type ScanBackwardArgs,
  scanPairElements, scanPairViews,
  selectiveScanScratch,
} from '../gpu/ops/selective-scan.js';
import { combineBackward, combineForward } from '../gpu/ops/combine.js';
import { fuseCombineDefault } from '../model/vim-gpu.js';
import { softmaxCrossEntropyBackward, softmaxCrossEntropyForward } from '../gpu/ops/cross-entropy.js';
import {
  adamwUpdate, createAdamwUniform, decayMaskWords, packDecayMask, uploadDecayMask, writeAdamwUniform,
} from '../gpu/ops/adamw.js';

export interface CheckRow {
  kernel: string;
  shapes: string;
  /** The largest relative error over the kernel's outputs, and which output it was. */
  relErr: number;
  worst: string;
  pass: boolean;
  ms: number;
}

export const CHECK_TOLERANCE = 1e-5;

function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < b.length; i++) {
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return den === 0 ? Math.sqrt(num) : Math.sqrt(num / den);
}

class Ctx {
  private tensors: GpuTensor[] = [];
  constructor(readonly gpu: Gpu, readonly rng: Rng) {}

  /** f32-rounded uniform values, so that the GPU and the reference see the same inputs. */
  rand(n: number, lo = -1, hi = 1): Float64Array {
    const a = new Float64Array(n);
    for (let i = 0; i < n; i++) a[i] = Math.fround(lo + (hi - lo) * this.rng.uniform());
    return a;
  }

  t(data: ArrayLike<number> | number, label = 't'): GpuTensor {
    const n = typeof data === 'number' ? data : data.length;
    const t = createTensor(this.gpu, n, label, typeof data === 'number' ? undefined : data);
    this.tensors.push(t);
    return t;
  }

  async run(list: Dispatch[]): Promise<void> {
    await compileCheck();
    runDispatches(this.gpu, list);
  }

  async read(t: GpuTensor, n?: number): Promise<Float64Array> {
    return Float64Array.from(await download(this.gpu, t, n ?? t.size / 4));
  }

  free(): void {
    for (const t of this.tensors) t.buffer.destroy();
    this.tensors = [];
  }
}

type Errors = Record<string, number>;
interface Check {
  kernel: string;
  shapes: string;
  run: (c: Ctx) => Promise<Errors>;
}

/** Columns [c0, c0+n) of a (rows, cols) matrix. */
function cols(src: Float64Array, rows: number, ncols: number, c0: number, n: number): Float64Array {
  const out = new Float64Array(rows * n);
  for (let i = 0; i < rows; i++) for (let j = 0; j < n; j++) out[i * n + j] = src[i * ncols + c0 + j];
  return out;
}

function linearChecks(name: string, M: number, I: number, O: number, bias: boolean): Check[] {
  const shapes = `M=${M} I=${I} O=${O}`;
  return [
    {
      kernel: `${name} forward`, shapes,
      run: async (c) => {
        const x = c.rand(M * I), w = c.rand(O * I, -0.2, 0.2), b = bias ? c.rand(O) : null;
        const out = c.t(M * O);
        await c.run([matmulForward(c.gpu, { out, inp: c.t(x), weight: c.t(w), bias: b ? c.t(b) : null, M, I, O })]);
        const r = new Float64Array(M * O);
        ref.linear_forward(r, x, w, b, M, I, O);
        return { out: relErr(await c.read(out), r) };
      },
    },
    {
      kernel: `${name} backward`, shapes,
      run: async (c) => {
        const x = c.rand(M * I), w = c.rand(O * I, -0.2, 0.2), g = c.rand(M * O);
        const dx = c.t(M * I), dw = c.t(O * I), db = bias ? c.t(O) : null;
        const gt = c.t(g), xt = c.t(x);
        const list = [
          matmulBackwardInput(c.gpu, { dinp: dx, dout: gt, weight: c.t(w), M, I, O }),
          ...matmulBackwardWeight(c.gpu, { dweight: dw, dout: gt, inp: xt, M, I, O }),
          ...(db ? biasBackward(c.gpu, { dbias: db, dout: gt, M, O }) : []),
        ];
        await c.run(list);
        const rdx = new Float64Array(M * I), rdw = new Float64Array(O * I), rdb = bias ? new Float64Array(O) : null;
        ref.linear_backward(rdx, rdw, rdb, g, x, w, M, I, O);
        const e: Errors = { dinp: relErr(await c.read(dx), rdx), dweight: relErr(await c.read(dw), rdw) };
        if (db && rdb) e.dbias = relErr(await c.read(db), rdb);
        return e;
      },
    },
  ];
}

/** The checks for one config at batch B. */
export function kernelChecks(cfg: VimConfig, B: number): Check[] {
  const { D, E, N, R, K, C, P, L, Np, imgSize: H, clsPos, normEps } = cfg;
  const BL = B * L;
  const checks: Check[] = [];

  checks.push({
    kernel: 'patch embedding forward', shapes: `B=${B} ${H}×${H} P=${P} D=${D}`,
    run: async (c) => {
      const images = new Uint8Array(B * 3 * H * H);
      for (let i = 0; i < images.length; i++) images[i] = c.rng.int(256);
      const w = c.rand(D * 3 * P * P, -0.2, 0.2), b = c.rand(D);
      const img = c.t(imageWords(B, H, H));
      uploadImages(c.gpu, img, images);
      const patches = c.t(B * Np * 3 * P * P), out = c.t(B * Np * D);
      await c.run([
        normalizePatches(c.gpu, { out: patches, images: img, B, H, W: H, P }),
        matmulForward(c.gpu, { out, inp: patches, weight: c.t(w), bias: c.t(b), M: B * Np, I: 3 * P * P, O: D }),
      ]);
      const x = new Float64Array(B * 3 * H * H);
      ref.normalize_images(x, images, B, H, H);
      const r = new Float64Array(B * Np * D);
      ref.patch_embed_forward(r, x, w, b, B, H, H, P, D);
      return { out: relErr(await c.read(out), r) };
    },
  });
  checks.push(...linearChecks('patch embedding (matmul)', B * Np, 3 * P * P, D, true));
  checks.push({
    kernel: 'tokens (class token + pos) forward/backward', shapes: `B=${B} Np=${Np} D=${D}`,
    run: async (c) => {
      const pe = c.rand(B * Np * D), cls = c.rand(D), pos = c.rand(L * D), g = c.rand(BL * D);
      const out = c.t(BL * D), dpe = c.t(B * Np * D), dcls = c.t(D), dpos = c.t(L * D);
      await c.run([
        tokensForward(c.gpu, { out, patches: c.t(pe), clsToken: c.t(cls), posEmbed: c.t(pos), B, Np, D }),
        ...tokensBackward(c.gpu, { dpatches: dpe, dclsToken: dcls, dposEmbed: dpos, dout: c.t(g), B, Np, D }),
      ]);
      const r = new Float64Array(BL * D), rdpe = new Float64Array(B * Np * D), rdcls = new Float64Array(D), rdpos = new Float64Array(L * D);
      ref.tokens_forward(r, pe, cls, pos, B, Np, D);
      ref.tokens_backward(rdpe, rdcls, rdpos, g, B, Np, D);
      return {
        out: relErr(await c.read(out), r), dpatches: relErr(await c.read(dpe), rdpe),
        dcls_token: relErr(await c.read(dcls), rdcls), dpos_embed: relErr(await c.read(dpos), rdpos),
      };
    },
  });
  checks.push({
    kernel: 'residual add + RMSNorm forward/backward', shapes: `BL=${BL} D=${D}`,
    run: async (c) => {
      const rin = c.rand(BL * D), h = c.rand(BL * D), w = c.rand(D, 0.5, 1.5), g = c.rand(BL * D), gn = c.rand(BL * D);
      const rOut = c.t(BL * D), out = c.t(BL * D), rstd = c.t(BL), dr = c.t(BL * D), dw = c.t(D);
      const wt = c.t(w);
      await c.run([
        residualRmsnormForward(c.gpu, { rOut, out, rstd, rIn: c.t(rin), h: c.t(h), weight: wt, BL, D, eps: normEps }),
        ...residualRmsnormBackward(c.gpu, {
          dr, dweight: dw, dout: c.t(g), drNext: c.t(gn), r: rOut, rstd, weight: wt, BL, D,
          scratch: c.t(rmsnormBackwardScratchElements(BL, D)),
        }),
      ]);
      const rr = new Float64Array(BL * D), ro = new Float64Array(BL * D), rs = new Float64Array(BL);
      ref.residual_rmsnorm_forward(rr, ro, rs, rin, h, w, BL, D, normEps);
      const rdr = new Float64Array(BL * D), rdw = new Float64Array(D);
      ref.residual_rmsnorm_backward(rdr, rdw, g, gn, rr, rs, w, BL, D);
      return {
        out: relErr(await c.read(out), ro), rstd: relErr(await c.read(rstd), rs),
        dr: relErr(await c.read(dr), rdr), dweight: relErr(await c.read(dw), rdw),
      };
    },
  });
  checks.push(...linearChecks('in_proj', BL, D, 2 * E, false));
  for (const reverse of [false, true]) {
    checks.push({
      kernel: `conv1d + SiLU ${reverse ? 'backward direction' : 'forward direction'}`, shapes: `B=${B} L=${L} E=${E} K=${K}`,
      run: async (c) => {
        const xz = c.rand(BL * 2 * E), w = c.rand(E * K, -0.5, 0.5), b = c.rand(E, -0.5, 0.5), g = c.rand(BL * E);
        const out = c.t(BL * E), dxz = c.t(BL * 2 * E), dw = c.t(E * K), db = c.t(E);
        const xzt = c.t(xz), wt = c.t(w), bt = c.t(b);
        await c.run([
          conv1dSiluForward(c.gpu, { out, xz: xzt, weight: wt, bias: bt, B, L, E, K, reverse }),
          ...conv1dSiluBackward(c.gpu, {
            dxz, dweight: dw, dbias: db, dout: c.t(g), xz: xzt, weight: wt, bias: bt, B, L, E, K, reverse,
            scratch: c.t(conv1dBackwardScratchElements(B, L, E, K)),
          }),
        ]);
        const r = new Float64Array(BL * E), rdxz = new Float64Array(BL * 2 * E), rdw = new Float64Array(E * K), rdb = new Float64Array(E);
        ref.conv1d_silu_forward(r, xz, w, b, B, L, E, K, reverse);
        ref.conv1d_silu_backward(rdxz, rdw, rdb, g, xz, w, b, B, L, E, K, reverse);
        const gdxz = await c.read(dxz);
        return {
          out: relErr(await c.read(out), r), dx: relErr(cols(gdxz, BL, 2 * E, 0, E), cols(rdxz, BL, 2 * E, 0, E)),
          dweight: relErr(await c.read(dw), rdw), dbias: relErr(await c.read(db), rdb),
        };
      },
    });
  }
  checks.push({
    kernel: 'conv1d + SiLU, both directions in one pass (the model\'s)', shapes: `B=${B} L=${L} E=${E} K=${K}`,
    run: async (c) => {
      const xz = c.rand(BL * 2 * E), g = [c.rand(BL * E), c.rand(BL * E)];
      const w = [c.rand(E * K, -0.5, 0.5), c.rand(E * K, -0.5, 0.5)], b = [c.rand(E, -0.5, 0.5), c.rand(E, -0.5, 0.5)];
      const out = [c.t(BL * E), c.t(BL * E)], dxz = c.t(BL * 2 * E);
      const dw = [c.t(E * K), c.t(E * K)], db = [c.t(E), c.t(E)];
      const xzt = c.t(xz), wt = w.map((v) => c.t(v)), bt = b.map((v) => c.t(v));
      const dirs = { weightF: wt[0], biasF: bt[0], weightB: wt[1], biasB: bt[1], B, L, E, K };
      await c.run([
        conv1dSiluForward2(c.gpu, { outF: out[0], outB: out[1], xz: xzt, ...dirs }),
        ...conv1dSiluBackward2(c.gpu, {
          dxz, dweightF: dw[0], dbiasF: db[0], dweightB: dw[1], dbiasB: db[1], doutF: c.t(g[0]), doutB: c.t(g[1]), xz: xzt, ...dirs,
          scratch: c.t(conv1dBackward2ScratchElements(B, L, E, K)),
        }),
      ]);
      // the float64 reference, once per direction; the two directions' dx add
      const rdxz = new Float64Array(BL * 2 * E);
      const errs: Record<string, number> = {};
      for (let d = 0; d < 2; d++) {
        const r = new Float64Array(BL * E), rdw = new Float64Array(E * K), rdb = new Float64Array(E);
        ref.conv1d_silu_forward(r, xz, w[d], b[d], B, L, E, K, d === 1);
        ref.conv1d_silu_backward(rdxz, rdw, rdb, g[d], xz, w[d], b[d], B, L, E, K, d === 1);
        const tag = d === 0 ? 'forward' : 'backward';
        errs[`out ${tag}`] = relErr(await c.read(out[d]), r);
        errs[`dweight ${tag}`] = relErr(await c.read(dw[d]), rdw);
        errs[`dbias ${tag}`] = relErr(await c.read(db[d]), rdb);
      }
      errs.dx = relErr(cols(await c.read(dxz), BL, 2 * E, 0, E), cols(rdxz, BL, 2 * E, 0, E));
      return errs;
    },
  });
  checks.push(...linearChecks('x_proj', BL, E, R + 2 * N, false));
  checks.push({
    kernel: 'dt_proj (strided over x_proj output) forward/backward', shapes: `M=${BL} I=${R} O=${E} ldi=${R + 2 * N}`,
    run: async (c) => {
      const S = R + 2 * N;
      const xdbl = c.rand(BL * S), w = c.rand(E * R, -0.3, 0.3), g = c.rand(BL * E);
      const out = c.t(BL * E), dxdbl = c.t(BL * S), dw = c.t(E * R);
      const xt = c.t(xdbl), gt = c.t(g), wt = c.t(w);
      await c.run([
        matmulForward(c.gpu, { out, inp: xt, weight: wt, bias: null, M: BL, I: R, O: E, ldi: S }),
        matmulBackwardInput(c.gpu, { dinp: dxdbl, dout: gt, weight: wt, M: BL, I: R, O: E, ldi: S }),
        ...matmulBackwardWeight(c.gpu, { dweight: dw, dout: gt, inp: xt, M: BL, I: R, O: E, ldi: S }),
      ]);
      const lo = cols(xdbl, BL, S, 0, R);
      const r = new Float64Array(BL * E), rdx = new Float64Array(BL * R), rdw = new Float64Array(E * R);
      ref.linear_forward(r, lo, w, null, BL, R, E);
      ref.linear_backward(rdx, rdw, null, g, lo, w, BL, R, E);
      return {
        out: relErr(await c.read(out), r), dinp: relErr(cols(await c.read(dxdbl), BL, S, 0, R), rdx),
        dweight: relErr(await c.read(dw), rdw),
      };
    },
  });
  checks.push({
    kernel: 'x_proj and dt_proj, both directions in one dispatch each (the model\'s)', shapes: `M=${BL} E=${E} R+2N=${R + 2 * N} R=${R} ×2`,
    run: async (c) => {
      // each direction's operand at the first 256-byte boundary after the other's, in one tensor, as the model lays them out
      const S = R + 2 * N;
      const at = (n: number) => 64 * Math.ceil(n / 64);
      const two = (n: number, lo = -1, hi = 1) => {
        const v = [c.rand(n, lo, hi), c.rand(n, lo, hi)];
        const all = new Float64Array(at(n) + n);
        all.set(v[0]);
        all.set(v[1], at(n));
        return { v, t: c.t(all), stride: at(n) };
      };
      const u = two(BL * E), wx = two(S * E, -0.2, 0.2), dx = two(BL * S), wdt = two(E * R, -0.3, 0.3), dd = two(BL * E), du = two(BL * E);
      const xdbl = c.t(at(BL * S) + BL * S);
      // the weight gradients' partials and sums as the model records them (a block's sums in one dispatch,
      // their results in one buffer as the model's gradients: dt_proj's two, then x_proj's two)
      const dwAll = c.t(2 * at(E * R) + 2 * at(S * E), 'weight gradients');
      const view = (off: number, n: number, label: string): GpuTensor => ({ ...dwAll, offset: 4 * off, size: 4 * n, label });
      const dwdtV = [view(0, E * R, 'dt_proj dweight'), view(at(E * R), E * R, 'dt_proj_b dweight')];
      const dwxV = [view(2 * at(E * R), S * E, 'x_proj dweight'), view(2 * at(E * R) + at(S * E), S * E, 'x_proj_b dweight')];
      const px = matmulBackwardWeightBatchElements(BL, E, S), pdt = matmulBackwardWeightBatchElements(BL, R, E);
      const sums = new WeightSums(c.t(weightSumsElements([pdt, pdt, px, px])));
      const dxOut = c.t(dx.v[0].length + dx.stride); // dt_proj's input gradient into dxdbl's first R columns
      const list = [
        matmulForward(c.gpu, { out: xdbl, inp: u.t, weight: wx.t, bias: null, M: BL, I: E, O: S, batch: { count: 2, inp: u.stride, out: at(BL * S), weight: wx.stride } }),
        matmulBackwardInput(c.gpu, { dinp: dxOut, dout: dd.t, weight: wdt.t, M: BL, I: R, O: E, ldi: S, batch: { count: 2, inp: dx.stride, out: dd.stride, weight: wdt.stride } }),
        ...matmulBackwardWeight(c.gpu, { dweight: dwdtV[0], dout: dd.t, inp: dx.t, M: BL, I: R, O: E, ldi: S, sums, batch: { count: 2, inp: dx.stride, out: dd.stride, dweights: dwdtV } }),
        matmulBackwardInput(c.gpu, { dinp: du.t, dout: dx.t, weight: wx.t, M: BL, I: E, O: S, accumulate: true, batch: { count: 2, inp: du.stride, out: dx.stride, weight: wx.stride } }),
        ...matmulBackwardWeight(c.gpu, { dweight: dwxV[0], dout: dx.t, inp: u.t, M: BL, I: E, O: S, sums, batch: { count: 2, inp: u.stride, out: dx.stride, dweights: dwxV } }),
      ];
      await c.run([...list, ...weightSumsDispatch(c.gpu, sums)]);
      const errs: Errors = {};
      const part = async (t: GpuTensor, d: number, n: number) => Float64Array.from(await download(c.gpu, t, n, d * at(n)));
      for (let d = 0; d < 2; d++) {
        const tag = d === 0 ? 'forward' : 'backward';
        const rx = new Float64Array(BL * S);
        ref.linear_forward(rx, u.v[d], wx.v[d], null, BL, E, S);
        errs[`xdbl ${tag}`] = relErr(await part(xdbl, d, BL * S), rx);
        // dt_proj: dt_low = dx's first R columns here (any (BL, S) operand serves)
        const lo = cols(dx.v[d], BL, S, 0, R);
        const rdlo = new Float64Array(BL * R), rdwdt = new Float64Array(E * R);
        ref.linear_backward(rdlo, rdwdt, null, dd.v[d], lo, wdt.v[d], BL, R, E);
        errs[`dt_proj dinp ${tag}`] = relErr(cols(await part(dxOut, d, BL * S), BL, S, 0, R), rdlo);
        errs[`dt_proj dweight ${tag}`] = relErr(await c.read(dwdtV[d]), rdwdt);
        const rdu = Float64Array.from(du.v[d]), rdwx = new Float64Array(S * E);
        ref.linear_backward(rdu, rdwx, null, dx.v[d], u.v[d], wx.v[d], BL, E, S);
        errs[`x_proj dinp (added) ${tag}`] = relErr(await part(du.t, d, BL * E), rdu);
        errs[`x_proj dweight ${tag}`] = relErr(await c.read(dwxV[d]), rdwx);
      }
      return errs;
    },
  });
  // As the model runs them: by default the combine fused in (the backward direction's forward adds
  // its output into y_f, both backwards read the combined output's gradient), with drop-path
  // factors; with VIM_FUSE_COMBINE=0 the plain scans (the combine check below covers the rest).
  // Where the model's backward recomputes Δraw (scanRecomputesDelta), the forward takes dt_proj
  // fused and stores none, and the backward computes it from xdbl and dt_proj's weight too.
  const fuse = fuseCombineDefault();
  const shape = { B, L, E, N, R };
  // as the model trains: the forward writes the backward's checkpoints where that pays, and the
  // backward recomputes Δraw where it can
  const scanAsTrained = (gpu: Gpu) => {
    const st = scanTuning(gpu);
    const plan = selectiveScanBackwardPlan(shape, st);
    const fwdCk = scanCheckpointsInForward(plan);
    return { st, plan, fwdCk, dtRec: scanRecomputesDelta(plan, shape, fwdCk, gpu.limits.maxComputeWorkgroupStorageSize) };
  };
  // A_log near the S4D-real initialisation: log(n + 1) plus a little noise
  const scanALog = (c: Ctx): Float64Array => {
    const alog = new Float64Array(E * N);
    for (let e = 0; e < E; e++) for (let n = 0; n < N; n++) alog[e * N + n] = Math.fround(Math.log(n + 1) + 0.1 * c.rng.uniform());
    return alog;
  };
  for (const reverse of [false, true]) {
    const how = !fuse ? '' : reverse ? ', the combine fused both ways, drop path' : ', the combine\'s backward fused, drop path';
    checks.push({
      kernel: `selective scan ${reverse ? 'backward direction' : 'forward direction'}${how}`, shapes: `B=${B} L=${L} E=${E} N=${N}`,
      run: async (c) => {
        const S = R + 2 * N;
        const { st, plan, fwdCk, dtRec } = scanAsTrained(c.gpu);
        const u = c.rand(BL * E), dtb = c.rand(E, -4, -2);
        const alog = scanALog(c);
        const xdbl = c.rand(BL * S), dsk = c.rand(E, 0.5, 1.5), xz = c.rand(BL * 2 * E, -2, 2), g = c.rand(BL * E);
        // Δraw: given, or dt_low · dt_projᵀ where the backward recomputes it
        const w = c.rand(E * R, -0.3, 0.3);
        const delta = dtRec ? new Float64Array(BL * E) : c.rand(BL * E, -3, 1);
        if (dtRec) ref.linear_forward(delta, cols(xdbl, BL, S, 0, R), w, null, BL, R, E);
        // fused: g is the combined output's gradient (original order); drop-path factors in row 1
        // of a (2, B) table, about one sample in ten dropped; y_f (in the combined output's buffer
        // before the backward direction's scan adds its output there)
        const drop = fuse ? Array.from({ length: B }, () => (c.rng.uniform() < 0.1 ? 0 : Math.fround(1 / 0.9))) : null;
        const table = new Float64Array(2 * B).fill(3);
        if (drop) table.set(drop, B);
        const scale = drop ? { scale: { t: c.t(table), offset: B } } : {};
        const yf = fuse && reverse ? c.rand(BL * E) : null;
        const ins = {
          u: c.t(u), ...(dtRec ? { dtWeight: c.t(w) } : { delta_raw: c.t(delta) }), dt_bias: c.t(dtb), A_log: c.t(alog), xdbl: c.t(xdbl),
          Dskip: c.t(dsk), xz: c.t(xz),
        };
        const out = yf ? c.t(yf) : c.t(BL * E), du = c.t(BL * E), dd = c.t(BL * E), dxz = c.t(BL * 2 * E), dxdbl = c.t(BL * S);
        const dA = c.t(E * N), dD = c.t(E), dbias = c.t(E);
        const ck = fwdCk ? c.t(Math.max(4, scanCheckpointElements(shape, plan.segment))) : undefined;
        const sc = selectiveScanScratch(shape, st, { forwardCheckpoints: fwdCk });
        await c.run([
          selectiveScanForward(c.gpu, {
            out, ...ins, B, L, E, N, R, reverse, ...(ck ? { checkpoints: { out: ck, segment: plan.segment } } : {}),
            ...(yf ? { combine: scale } : {}), exp2: st.exp2,
          }),
          ...selectiveScanBackward(c.gpu, {
            du, ddelta_raw: dd, dxz, dxdbl, dA_log: dA, dDskip: dD, ddt_bias: dbias, dout: c.t(g), ...ins,
            B, L, E, N, R, reverse, scratch: { bcPartials: c.t(Math.max(1, sc.bcPartials)), paramPartials: c.t(Math.max(1, sc.paramPartials)) },
            ...st, checkpoints: ck, ...(fuse ? { doutCombined: scale } : {}),
          }),
        ]);
        const Bm = cols(xdbl, BL, S, R, N), Cm = cols(xdbl, BL, S, R + N, N);
        const r = new Float64Array(BL * E);
        ref.selective_scan_forward(r, u, delta, dtb, alog, Bm, Cm, dsk, xz, B, L, E, N, reverse);
        let rOut = r;
        if (yf) {
          rOut = new Float64Array(BL * E);
          ref.combine_forward(rOut, yf, r, B, L, E, drop);
        }
        // the direction's dout: fused, what the combine's backward gives it from the combined output's gradient
        let gd = g;
        if (drop) {
          const dyF = new Float64Array(BL * E), dyB = new Float64Array(BL * E);
          ref.combine_backward(dyF, dyB, g, B, L, E, drop);
          gd = reverse ? dyB : dyF;
        }
        const rdu = new Float64Array(BL * E), rdd = new Float64Array(BL * E), rdb = new Float64Array(E), rdA = new Float64Array(E * N);
        const rdB = new Float64Array(BL * N), rdC = new Float64Array(BL * N), rdD = new Float64Array(E), rdxz = new Float64Array(BL * 2 * E);
        ref.selective_scan_backward(rdu, rdd, rdb, rdA, rdB, rdC, rdD, rdxz, gd, u, delta, dtb, alog, Bm, Cm, dsk, xz, B, L, E, N, reverse);
        const gx = await c.read(dxdbl), gz = await c.read(dxz);
        return {
          [yf ? 'combined out' : 'out']: relErr(await c.read(out), rOut), du: relErr(await c.read(du), rdu), ddelta_raw: relErr(await c.read(dd), rdd),
          dz: relErr(cols(gz, BL, 2 * E, E, E), cols(rdxz, BL, 2 * E, E, E)),
          dB: relErr(cols(gx, BL, S, R, N), rdB), dC: relErr(cols(gx, BL, S, R + N, N), rdC),
          dA_log: relErr(await c.read(dA), rdA), dD: relErr(await c.read(dD), rdD), ddt_bias: relErr(await c.read(dbias), rdb),
        };
      },
    });
  }
  // the model sums both directions' partials in one dispatch (pairScanReduceDefault; with
  // VIM_SCAN_PAIR_REDUCE=0 one after each direction's scan): the same bits as one reduction a
  // direction, which the two rows above check against float64
  checks.push({
    kernel: 'selective scan reductions of both directions in one dispatch', shapes: `B=${B} L=${L} E=${E} N=${N}`,
    run: async (c) => {
      const S = R + 2 * N;
      const { st, plan, fwdCk, dtRec } = scanAsTrained(c.gpu);
      const alog = scanALog(c);
      const xz = c.t(c.rand(BL * 2 * E, -2, 2));
      const dirs = [false, true].map((reverse) => ({
        reverse, u: c.t(c.rand(BL * E)), ...(dtRec ? { dtWeight: c.t(c.rand(E * R, -0.3, 0.3)) } : { delta_raw: c.t(c.rand(BL * E, -3, 1)) }),
        dt_bias: c.t(c.rand(E, -4, -2)), A_log: c.t(alog), xdbl: c.t(c.rand(BL * S)), Dskip: c.t(c.rand(E, 0.5, 1.5)), xz,
        dout: c.t(c.rand(BL * E)), ck: fwdCk ? c.t(Math.max(4, scanCheckpointElements(shape, plan.segment))) : undefined,
      }));
      const fwd = dirs.map((d) => selectiveScanForward(c.gpu, {
        out: c.t(BL * E), ...d, B, L, E, N, R, ...(d.ck ? { checkpoints: { out: d.ck, segment: plan.segment } } : {}), exp2: st.exp2,
      }));
      const sc = selectiveScanScratch(shape, st, { forwardCheckpoints: fwdCk });
      // each form's outputs: per direction du, ddelta, dxdbl, dA_log, dD, dbias views of one tensor each (dxz shared)
      const outputs = async (pair: boolean): Promise<Float64Array[]> => {
        const sizes = [BL * E, BL * E, BL * S, E * N, E, E, Math.max(1, sc.bcPartials), Math.max(1, sc.paramPartials)];
        const all = sizes.map((n) => c.t(scanPairElements(n)));
        const dxz = c.t(BL * 2 * E);
        const args = dirs.map((d, k): ScanBackwardArgs => {
          const [du, dd, dxdbl, dA, dD, db, bc, pp] = sizes.map((n, i) => scanPairViews(all[i], n)[k]);
          return {
            ...d, du, ddelta_raw: dd, dxz, dxdbl, dA_log: dA, dDskip: dD, ddt_bias: db, B, L, E, N, R,
            scratch: { bcPartials: bc, paramPartials: pp }, accumulate: { dz: d.reverse }, ...st, checkpoints: d.ck,
          };
        });
        await c.run([...fwd, ...(pair ? selectiveScanBackwardPair(c.gpu, [args[0], args[1]]) : args.flatMap((a) => selectiveScanBackward(c.gpu, a)))]);
        return Promise.all([...all.slice(0, 6), dxz].map((x) => c.read(x)));
      };
      const own = await outputs(false), paired = await outputs(true);
      const names = ['du', 'ddelta_raw', 'dxdbl', 'dA_log', 'dD', 'ddt_bias', 'dxz'];
      return Object.fromEntries(names.map((k, i) => [`${k} (both)`, relErr(paired[i], own[i])]));
    },
  });
  checks.push({
    kernel: 'selective scan forward, dt_proj fused', shapes: `B=${B} L=${L} E=${E} N=${N} R=${R}`,
    run: async (c) => {
      const S = R + 2 * N;
      const u = c.rand(BL * E), dtb = c.rand(E, -4, -2), w = c.rand(E * R, -0.3, 0.3);
      const alog = scanALog(c);
      const xdbl = c.rand(BL * S), dsk = c.rand(E, 0.5, 1.5), xz = c.rand(BL * 2 * E, -2, 2);
      const out = c.t(BL * E), delta = c.t(BL * E);
      await c.run([selectiveScanForward(c.gpu, {
        out, delta_raw: delta, dtWeight: c.t(w), u: c.t(u), dt_bias: c.t(dtb), A_log: c.t(alog), xdbl: c.t(xdbl), Dskip: c.t(dsk),
        xz: c.t(xz), B, L, E, N, R, reverse: true,
      })]);
      const rd = new Float64Array(BL * E);
      ref.linear_forward(rd, cols(xdbl, BL, S, 0, R), w, null, BL, R, E);
      const r = new Float64Array(BL * E);
      ref.selective_scan_forward(r, u, rd, dtb, alog, cols(xdbl, BL, S, R, N), cols(xdbl, BL, S, R + N, N), dsk, xz, B, L, E, N, true);
      return { out: relErr(await c.read(out), r), delta_raw: relErr(await c.read(delta), rd) };
    },
  });
  checks.push({
    kernel: 'combine (/2, reversal) forward/backward', shapes: `B=${B} L=${L} E=${E}`,
    run: async (c) => {
      const yf = c.rand(BL * E), yb = c.rand(BL * E), g = c.rand(BL * E);
      const out = c.t(BL * E), dyf = c.t(BL * E), dyb = c.t(BL * E);
      await c.run([
        combineForward(c.gpu, { out, yF: c.t(yf), yB: c.t(yb), B, L, E }),
        combineBackward(c.gpu, { dyF: dyf, dyB: dyb, dout: c.t(g), B, L, E }),
      ]);
      const r = new Float64Array(BL * E), rf = new Float64Array(BL * E), rb = new Float64Array(BL * E);
      ref.combine_forward(r, yf, yb, B, L, E);
      ref.combine_backward(rf, rb, g, B, L, E);
      return { out: relErr(await c.read(out), r), dy_f: relErr(await c.read(dyf), rf), dy_b: relErr(await c.read(dyb), rb) };
    },
  });
  checks.push(...linearChecks('out_proj', BL, E, D, false));
  checks.push({
    kernel: 'head on the class token forward/backward', shapes: `B=${B} L=${L} D=${D} C=${C}`,
    run: async (c) => {
      const x = c.rand(BL * D), w = c.rand(C * D, -0.2, 0.2), b = c.rand(C), g = c.rand(B * C);
      const out = c.t(B * C), dx = c.t(BL * D), dw = c.t(C * D), db = c.t(C);
      const xt = c.t(x), gt = c.t(g), wt = c.t(w);
      const row = { ldi: L * D, inpOffset: clsPos * D };
      await c.run([
        matmulForward(c.gpu, { out, inp: xt, weight: wt, bias: c.t(b), M: B, I: D, O: C, ...row }),
        matmulBackwardInput(c.gpu, { dinp: dx, dout: gt, weight: wt, M: B, I: D, O: C, ...row }),
        ...matmulBackwardWeight(c.gpu, { dweight: dw, dout: gt, inp: xt, M: B, I: D, O: C, ...row }),
        ...biasBackward(c.gpu, { dbias: db, dout: gt, M: B, O: C }),
      ]);
      const r = new Float64Array(B * C), rdx = new Float64Array(BL * D), rdw = new Float64Array(C * D), rdb = new Float64Array(C);
      ref.head_forward(r, x, w, b, B, L, D, C, clsPos);
      ref.head_backward(rdx, rdw, rdb, g, x, w, B, L, D, C, clsPos);
      return {
        out: relErr(await c.read(out), r), dx: relErr(await c.read(dx), rdx),
        dweight: relErr(await c.read(dw), rdw), dbias: relErr(await c.read(db), rdb),
      };
    },
  });
  checks.push({
    kernel: 'softmax cross-entropy (label smoothing 0.1)', shapes: `B=${B} C=${C}`,
    run: async (c) => {
      const logits = c.rand(B * C, -4, 4);
      const labels = Array.from({ length: B }, () => c.rng.int(C));
      const targets = new Float64Array(B * C);
      ref.smooth_targets(targets, labels, B, C, 0.1);
      const losses = c.t(B), probs = c.t(B * C), loss = c.t(1), dl = c.t(B * C);
      const tt = c.t(targets);
      await c.run([
        ...softmaxCrossEntropyForward(c.gpu, { losses, probs, loss, logits: c.t(logits), targets: tt, B, C }),
        softmaxCrossEntropyBackward(c.gpu, { dlogits: dl, probs, targets: tt, B, C, scale: 1 / B }),
      ]);
      const rl = new Float64Array(B), rp = new Float64Array(B * C), rd = new Float64Array(B * C);
      ref.softmax_cross_entropy_forward(rl, rp, logits, targets, B, C);
      ref.softmax_cross_entropy_backward(rd, 1 / B, rp, targets, B, C);
      const mean = rl.reduce((a, v) => a + v, 0) / B;
      return {
        losses: relErr(await c.read(losses), rl), loss: relErr(await c.read(loss), [mean]),
        dlogits: relErr(await c.read(dl), rd),
      };
    },
  });
  checks.push({
    kernel: 'AdamW (3 steps, decay mask)', shapes: `n=${Math.min(1 << 20, 64 * D * E)}`,
    run: async (c) => {
      const n = Math.min(1 << 20, 64 * D * E);
      const p = c.rand(n), m = new Float64Array(n), v = new Float64Array(n);
      const mask = new Uint8Array(n);
      for (let i = 0; i < n; i++) mask[i] = (i >> 10) % 2;
      const pt = c.t(p), mt = c.t(n), vt = c.t(n), gt = c.t(n), mk = c.t(decayMaskWords(n));
      uploadDecayMask(c.gpu, mk, packDecayMask(mask));
      const uni = createAdamwUniform(c.gpu);
      const d = adamwUpdate(c.gpu, { params: pt, m: mt, v: vt, grads: gt, decayMask: mk, uniform: uni, n });
      const h = { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.05 };
      for (let step = 1; step <= 3; step++) {
        const g = c.rand(n);
        const gf = createTensor(c.gpu, n, 'g', g);
        const enc = c.gpu.device.createCommandEncoder();
        enc.copyBufferToBuffer(gf.buffer, 0, gt.buffer, 0, n * 4);
        c.gpu.queue.submit([enc.finish()]);
        writeAdamwUniform(c.gpu, uni, { ...h, step });
        await c.run([d]);
        gf.buffer.destroy();
        ref.adamw_update(p, g, m, v, mask, h.lr, h.beta1, h.beta2, h.eps, h.weightDecay, step);
      }
      const out = { params: relErr(await c.read(pt), p), m: relErr(await c.read(mt), m), v: relErr(await c.read(vt), v) };
      uni.destroy();
      return out;
    },
  });
  return checks;
}

/** Run every check; `onRow` sees each result as it lands (for a live table). */
export async function runKernelChecks(
  gpu: Gpu, cfg: VimConfig, B: number, opts: { seed?: number; onRow?: (r: CheckRow) => void; filter?: RegExp } = {},
): Promise<CheckRow[]> {
  const rows: CheckRow[] = [];
  const c = new Ctx(gpu, new Rng(opts.seed ?? 1234));
  for (const check of kernelChecks(cfg, B)) {
    if (opts.filter && !opts.filter.test(check.kernel)) continue;
    const t0 = performance.now();
    let errors: Errors;
    try {
      errors = await check.run(c);
    } finally {
      c.free();
    }
    const [worst, err] = Object.entries(errors).reduce((a, b) => (b[1] > a[1] || Number.isNaN(b[1]) ? b : a));
    const row: CheckRow = {
      kernel: check.kernel, shapes: check.shapes, relErr: err, worst,
      pass: Number.isFinite(err) && err < CHECK_TOLERANCE, ms: performance.now() - t0,
    };
    rows.push(row);
    opts.onRow?.(row);
  }
  return rows;
}
