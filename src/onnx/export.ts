/**
 * Export a Vim (bimamba v2) classifier to one ONNX graph that runs in any ONNX runtime.
 *
 * Shape letters: B batch (dynamic, named "batch"), L tokens (Np patches + 1 class token), D model
 * width, E inner width, N state size, R Δ rank, K conv width, C classes, P patch size, H = W image
 * side. "2" is the direction axis: index 0 the forward direction, 1 the backward one.
 *
 * The graph, from `pixel_values` (B, 3, H, W) float32 RGB in 0…1 to `logits` (B, C):
 *   normalise ((x − mean)/std per channel) → Conv P×P stride P → (B, Np, D) → class token
 *   inserted at clsPos = floor(Np/2) → + pos_embed → depth blocks → residual add → class token →
 *   RMSNorm → head.
 * A block: r = r + h (r = tokens in block 0); u = RMSNorm(r)·w; x = u·in_proj[:E]ᵀ and
 * z = u·in_proj[E:]ᵀ (B, L, E) each. The two directions run side by side on an axis of 2 after
 * the batch: the backward one reads x with its tokens reversed (a Slice with step −1), so from
 * there on every tensor is (B, 2, L, ·) and each per-direction weight is the forward and backward
 * tensor stacked.
 * Per direction:
 *   causal depthwise Conv (group 2E, left pad K−1) + bias → SiLU → u (B, 2, L, E)
 *   x_proj (batched MatMul) → Δlow (R), B_t (N), C_t (N); Δ = softplus(Δlow·dt_projᵀ + bias)
 *   the selective scan: one ONNX Scan over the token axis, both directions in one state
 *   h (B, 2, N, E). Its body gets Δ_t, Δ_t·u_t (B, 2, 1, E), B_t (B, 2, N, 1), C_t (B, 2, 1, N)
 *   and computes h = exp(Δ_t·A) ⊙ h + (Δ_t u_t) ⊗ B_t and y_t = C_t·h there, so no tensor of
 *   B·L·E·N values ever exists; it emits y (B, 2, L, E).
 *   y + D·u.
 * combine (y_fwd + reverse(y_bwd))/2, gated by SiLU(z) → out_proj (B, L, D) = h of the next
 * block. (Each direction's gate is SiLU of z in its own token order, so once the backward output
 * is back in token order both share one gate, applied after the sum: z is never reversed.)
 * Only the Δ·u product is formed before the scan (B·L·E values, like Δ itself).
 *
 * Weights are stored once. Those used as they are keep their PyTorch Vim name and shape
 * (patch_embed.*, cls_token, pos_embed, layers.i.norm.weight, norm_f.weight, head.*). The rest
 * are stored in the form the graph uses, replacing the original, under a name that says how:
 * "X.T" is X transposed, "X[:E]" and "X[E:]" its first and last E rows (in_proj's x and z
 * halves), "X+Y" is the forward tensor X and backward tensor Y stacked on a
 * leading axis of 2, "A.T+A_b.T" is −exp(A_log)ᵀ stacked with −exp(A_b_log)ᵀ, (2, N, E),
 * computed in float64 and rounded once.
 * Small int64/float constants (shapes, slice bounds, mean, std) are shared by value.
 */
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { VimError } from '../errors.js';
import { outputPathProblem, writeFileAtomic as writeBytesAtomic } from '../io/safetensors.js';
import { CIFAR10_MEAN, CIFAR10_STD, configToJson, sameArchitecture, type VimConfig } from '../model/config.js';
import { DIRECTION_NAMES, paramCount, type ParamSet } from '../model/params.js';
import { attr, floatTensor, GraphBuilder, valueInfo } from './graph-builder.js';
import { DataType, encodeModel, type Graph, type Model, type StringStringEntry } from './proto.js';

export const DEFAULT_OPSET = 17;
/** The opsets this exporter writes (and onnxruntime 1.30 runs); 17 keeps the Python checker usable. */
export const MIN_OPSET = 17;
export const MAX_OPSET = 23;

/** The producer written into every file. */
export const ONNX_PRODUCER = 'vim-webgpu';
/** The value of the "format" metadata key. */
export const ONNX_FORMAT = 'vim-webgpu-onnx';
export const INPUT_NAME = 'pixel_values';
export const OUTPUT_NAME = 'logits';

export interface ExportOptions {
  /** ONNX opset, MIN_OPSET…MAX_OPSET (default 17). */
  opset?: number;
  /** The source checkpoint's metadata (recipe, metrics, …), recorded in the file's metadata. */
  checkpointMeta?: Record<string, unknown>;
  /** Where the weights came from (a checkpoint path), recorded in the file's metadata. */
  source?: string;
  /** How the weights are stored: float32 (default) or float16, cast to float32 as the model loads. */
  weights?: 'f32' | 'f16';
}

export interface ExportResult {
  path: string;
  bytes: number;
  /** Parameters of the model (every element stored exactly once). */
  paramCount: number;
  /** Nodes of the main graph (the Scan bodies not counted). */
  nodeCount: number;
  /** Nodes in each Scan body. */
  scanBodyNodeCount: number;
  opset: number;
  /** Time to build and write the file. */
  ms: number;
}

/** The IR version that goes with an opset (the oldest IR that carries it, for older readers). */
function irVersionFor(opset: number): number {
  if (opset <= 18) return 8;
  if (opset <= 20) return 9;
  if (opset <= 22) return 10;
  return 11;
}

function packageVersion(): string {
  try {
    const here = dirname(fileURLToPath(import.meta.url));
    const pkg = JSON.parse(readFileSync(resolve(here, '..', '..', 'package.json'), 'utf8')) as { version?: unknown };
    return typeof pkg.version === 'string' ? pkg.version : '';
  } catch {
    return '';
  }
}

function checkOpset(opset: number): void {
  if (!Number.isInteger(opset) || opset < MIN_OPSET || opset > MAX_OPSET) {
    throw new VimError(
      `expected an integer opset in ${MIN_OPSET}…${MAX_OPSET} but received ${opset}; ` +
      `${DEFAULT_OPSET} is the default and what the Python onnx checker accepts`,
    );
  }
}

// ---------------------------------------------------------------------------------------------
// Weight layouts

/** (rows, cols) → (cols, rows), row-major. */
function transpose(src: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) out[c * rows + r] = src[r * cols + c]!;
  }
  return out;
}

/** The forward and backward direction's tensors, one after the other (a leading axis of 2). */
function stack(fwd: Float32Array, bwd: Float32Array): Float32Array {
  const out = new Float32Array(fwd.length + bwd.length);
  out.set(fwd, 0);
  out.set(bwd, fwd.length);
  return out;
}

/** A = −exp(A_log), computed in float64 and rounded once. */
function negExp(aLog: Float32Array): Float32Array {
  return Float32Array.from(aLog, (v) => -Math.exp(v));
}

// ---------------------------------------------------------------------------------------------
// Graph pieces

interface Ops {
  b: GraphBuilder;
  opset: number;
}

function slice(o: Ops, x: string, starts: number[], ends: number[], axes: number[], steps?: number[], name?: string): string {
  const inputs = [x, o.b.i64(starts), o.b.i64(ends), o.b.i64(axes)];
  if (steps) inputs.push(o.b.i64(steps));
  return o.b.op('Slice', inputs, {}, name);
}

/** x with the tokens of axis `axis` (of static length len) in reverse order. */
function reverse(o: Ops, x: string, axis: number, len: number, name: string): string {
  // start at the last token, stop past the first (ends < −len clamps to "before index 0")
  return slice(o, x, [len - 1], [-len - 1], [axis], [-1], name);
}

function unsqueeze(o: Ops, x: string, axes: number[], name?: string): string {
  return o.b.op('Unsqueeze', [x, o.b.i64(axes)], {}, name);
}

function squeeze(o: Ops, x: string, axes: number[], name?: string): string {
  return o.b.op('Squeeze', [x, o.b.i64(axes)], {}, name);
}

function reshape(o: Ops, x: string, shape: number[], name?: string): string {
  return o.b.op('Reshape', [x, o.b.i64(shape)], {}, name);
}

function split(o: Ops, x: string, sizes: number[], axis: number, name: string): string[] {
  return o.b.add('Split', [x, o.b.i64(sizes)], sizes.length, { axis: attr.int(axis) }, name);
}

function silu(o: Ops, x: string, name: string): string {
  return o.b.op('Mul', [x, o.b.op('Sigmoid', [x], {}, `${name}/sigmoid`)], {}, name);
}

/**
 * softplus(x) = max(x, 0) + log1p(exp(−|x|)), from vectorised elementwise ops: onnxruntime's own
 * Softplus kernel is scalar and cost several times more than all of these together. log1p(y) of
 * y ∈ (0, 1] is log(u) − ((u − 1) − y)/u with u = 1 + y rounded: the second term is the rounding
 * error of u, so the result keeps full float32 precision even where Δ is tiny (log(1 + y) alone
 * would lose it: Δ ≈ 1e-3 is typical).
 */
function softplus(o: Ops, x: string, name: string): string {
  const b = o.b;
  const one = b.f32([1]);
  const y = b.op('Exp', [b.op('Neg', [b.op('Abs', [x], {}, `${name}/abs`)], {}, `${name}/neg`)], {}, `${name}/exp`); // e^−|x|
  const u = b.op('Add', [y, one], {}, `${name}/u`);
  const err = b.op('Sub', [b.op('Sub', [u, one], {}, `${name}/u_minus_1`), y], {}, `${name}/rounding`);
  const log1p = b.op('Sub', [b.op('Log', [u], {}, `${name}/log_u`), b.op('Div', [err, u], {}, `${name}/correction`)], {}, `${name}/log1p`);
  return b.op('Add', [b.op('Relu', [x], {}, `${name}/relu`), log1p], {}, name);
}

/** out = x / sqrt(mean over the last axis of x² + eps) · weight. */
function rmsnorm(o: Ops, x: string, weight: string, eps: number, name: string): string {
  const sq = o.b.op('Mul', [x, x], {}, `${name}/square`);
  const ms = o.opset >= 18
    ? o.b.op('ReduceMean', [sq, o.b.i64([-1])], { keepdims: attr.int(1) }, `${name}/mean`)
    : o.b.op('ReduceMean', [sq], { axes: attr.ints([-1]), keepdims: attr.int(1) }, `${name}/mean`);
  const rms = o.b.op('Sqrt', [o.b.op('Add', [ms, o.b.f32([eps])], {}, `${name}/add_eps`)], {}, `${name}/sqrt`);
  const normed = o.b.op('Div', [x, rms], {}, `${name}/div`);
  return o.b.op('Mul', [normed, weight], {}, name);
}

/**
 * The Scan body of one block: state h (B, 2, N, E); per token Δ_t, Δ_t·u_t (B, 2, 1, E),
 * B_t (B, 2, N, 1), C_t (B, 2, 1, N); A (2, N, E) read from the outer graph. E is the
 * innermost axis everywhere, so every elementwise op runs over contiguous rows of E.
 *   h_t = exp(Δ_t·A) ⊙ h_{t−1} + (Δ_t u_t) ⊗ B_t        (B, 2, N, E)
 *   y_t = C_t · h_t                                      (B, 2, 1, E)
 */
function scanBody(outer: GraphBuilder, prefix: string, A: string, E: number, N: number): Graph {
  const b = new GraphBuilder(prefix, outer);
  const hPrev = b.claim(`${prefix}h_prev`);
  const delta = b.claim(`${prefix}delta_t`);
  const du = b.claim(`${prefix}delta_u_t`);
  const Bt = b.claim(`${prefix}B_t`);
  const Ct = b.claim(`${prefix}C_t`);
  const dA = b.op('Exp', [b.op('Mul', [delta, A], {}, 'delta_A')], {}, 'exp_delta_A'); // (B, 2, N, E)
  const dBu = b.op('Mul', [du, Bt], {}, 'delta_B_u'); // (B, 2, N, E)
  const decayed = b.op('Mul', [dA, hPrev], {}, 'decay'); // (B, 2, N, E)
  const [h] = b.add('Add', [decayed, dBu], [`${prefix}h`], {}, 'h'); // (B, 2, N, E)
  const [y] = b.add('MatMul', [Ct, h!], [`${prefix}y_t`], {}, 'y'); // (B, 2, 1, E)
  const bt = 'batch';
  return b.graph(
    `${prefix}selective_scan`,
    [
      valueInfo(hPrev, [bt, 2, N, E]),
      valueInfo(delta, [bt, 2, 1, E]),
      valueInfo(du, [bt, 2, 1, E]),
      valueInfo(Bt, [bt, 2, N, 1]),
      valueInfo(Ct, [bt, 2, 1, N]),
    ],
    [valueInfo(h!, [bt, 2, N, E]), valueInfo(y!, [bt, 2, 1, E])],
  );
}

/** One Vim block's mixer: u (B, L, D) → out (B, L, D); h0 (B, 2, N, E) zeros. */
function mixer(o: Ops, cfg: VimConfig, params: ParamSet<Float32Array>, i: number, u: string, h0: string): string {
  const { D, E, N, R, K, L } = cfg;
  const b = o.b;
  const p = `layers.${i}.mixer.`;
  const nm = (s: string) => `/layers.${i}/mixer/${s}`;
  const names = DIRECTION_NAMES;
  const both = (key: keyof typeof DIRECTION_NAMES) => [params.layer(i, names[key][0]), params.layer(i, names[key][1])] as const;

  // The weights in the form the graph uses (each replaces the checkpoint tensor it comes from).
  const inProj = params.layer(i, 'in_proj.weight'); // (2E, D): the x rows, then the z rows
  const inProjXT = b.initializer(`${p}in_proj.weight[:E].T`, [D, E], transpose(inProj.subarray(0, E * D), E, D));
  const inProjZT = b.initializer(`${p}in_proj.weight[E:].T`, [D, E], transpose(inProj.subarray(E * D), E, D));
  const [cwF, cwB] = both('conv1dWeight');
  const convW = b.initializer(`${p}conv1d.weight+conv1d_b.weight`, [2 * E, 1, K], stack(cwF, cwB));
  const [cbF, cbB] = both('conv1dBias');
  const convB = b.initializer(`${p}conv1d.bias+conv1d_b.bias`, [2 * E], stack(cbF, cbB));
  const [xpF, xpB] = both('xProj');
  const xProjT = b.initializer(`${p}x_proj.weight.T+x_proj_b.weight.T`, [2, E, R + 2 * N],
    stack(transpose(xpF, R + 2 * N, E), transpose(xpB, R + 2 * N, E)));
  const [dwF, dwB] = both('dtProjWeight');
  const dtProjT = b.initializer(`${p}dt_proj.weight.T+dt_proj_b.weight.T`, [2, R, E], stack(transpose(dwF, E, R), transpose(dwB, E, R)));
  const [dbF, dbB] = both('dtProjBias');
  const dtBias = b.initializer(`${p}dt_proj.bias+dt_proj_b.bias`, [2, 1, E], stack(dbF, dbB));
  const [alF, alB] = both('ALog');
  // A = −exp(A_log) is computed here, so it stays float32 even with float16 weights
  const A = b.initializer(`${p}A.T+A_b.T`, [2, N, E], stack(transpose(negExp(alF), E, N), transpose(negExp(alB), E, N)), { float32: true });
  const [dsF, dsB] = both('D');
  const Dskip = b.initializer(`${p}D+D_b`, [2, 1, E], stack(dsF, dsB));
  const outProjT = b.initializer(`${p}out_proj.weight.T`, [E, D], transpose(params.layer(i, 'out_proj.weight'), D, E));

  const x = b.op('MatMul', [u, inProjXT], {}, nm('in_proj_x')); // (B, L, E)
  const z = b.op('MatMul', [u, inProjZT], {}, nm('in_proj_z')); // (B, L, E)
  // the backward direction reads the sequence from the last token to the first
  const xRev = reverse(o, x, 1, L, nm('reverse_tokens')); // (B, L, E)
  const x2 = b.op('Concat', [unsqueeze(o, x, [1], nm('fwd')), unsqueeze(o, xRev, [1], nm('bwd'))], { axis: attr.int(1) }, nm('stack_directions')); // (B, 2, L, E)

  // causal depthwise conv over tokens, channels-first (B, 2E, L) with K−1 zeros before token 0;
  // swapping the last two axes is a plain batched matrix transpose
  const xc = reshape(o, b.op('Transpose', [x2], { perm: attr.ints([0, 1, 3, 2]) }, nm('to_channels')), [0, 2 * E, L], nm('merge_directions')); // (B, 2E, L)
  const conv = b.op('Conv', [xc, convW, convB], {
    group: attr.int(2 * E), kernel_shape: attr.ints([K]), pads: attr.ints([K - 1, 0]), strides: attr.ints([1]), dilations: attr.ints([1]),
  }, nm('conv1d')); // (B, 2E, L)
  const convT = b.op('Transpose', [reshape(o, conv, [0, 2, E, L], nm('split_directions'))], { perm: attr.ints([0, 1, 3, 2]) }, nm('to_tokens')); // (B, 2, L, E)
  const uu = silu(o, convT, nm('conv_silu')); // (B, 2, L, E)

  const xdbl = b.op('MatMul', [uu, xProjT], {}, nm('x_proj')); // (B, 2, L, R+2N)
  const [dtLow, Bm, Cm] = split(o, xdbl, [R, N, N], 3, nm('split_dt_B_C')); // (B, 2, L, R), (B, 2, L, N), (B, 2, L, N)
  const dtRaw = b.op('Add', [b.op('MatMul', [dtLow!, dtProjT], {}, nm('dt_proj')), dtBias], {}, nm('dt_proj/bias')); // (B, 2, L, E)
  const delta = softplus(o, dtRaw, nm('softplus')); // (B, 2, L, E)
  const deltaU = b.op('Mul', [delta, uu], {}, nm('delta_u')); // (B, 2, L, E)

  // the scan reads token t of axis 2 of each input
  const body = scanBody(b, `layers.${i}.scan/`, A, E, N);
  const [, yScan] = b.add('Scan', [
    h0,
    reshape(o, delta, [0, 2, L, 1, E], nm('scan_in/delta')), // (B, 2, L, 1, E)
    reshape(o, deltaU, [0, 2, L, 1, E], nm('scan_in/delta_u')), // (B, 2, L, 1, E)
    reshape(o, Bm!, [0, 2, L, N, 1], nm('scan_in/B')), // (B, 2, L, N, 1)
    reshape(o, Cm!, [0, 2, L, 1, N], nm('scan_in/C')), // (B, 2, L, 1, N)
  ], 2, {
    body: attr.graph(body),
    num_scan_inputs: attr.int(4),
    scan_input_axes: attr.ints([2, 2, 2, 2]),
    scan_output_axes: attr.ints([2]),
  }, nm('selective_scan'));
  const y = squeeze(o, yScan!, [3], nm('scan_out')); // (B, 2, L, E)
  const ySkip = b.op('Add', [y, b.op('Mul', [uu, Dskip], {}, nm('D_skip'))], {}, nm('add_D_skip')); // (B, 2, L, E)

  // (y_fwd + y_bwd back in token order) / 2, then the gate both directions share
  const [yF, yB] = split(o, ySkip, [1, 1], 1, nm('split_directions_out')); // (B, 1, L, E) each
  const sum = b.op('Add', [yF!, reverse(o, yB!, 2, L, nm('unreverse_tokens'))], {}, nm('combine'));
  const half = squeeze(o, b.op('Mul', [sum, b.f32([0.5])], {}, nm('combine/half')), [1], nm('combine/squeeze')); // (B, L, E)
  const gated = b.op('Mul', [half, silu(o, z, nm('z_silu'))], {}, nm('gate')); // (B, L, E)
  return b.op('MatMul', [gated, outProjT], {}, nm('out_proj')); // (B, L, D)
}

/** Build the ONNX model object (what buildVimOnnx serialises). */
export function buildVimModel(cfg: VimConfig, params: ParamSet<Float32Array>, opts: ExportOptions = {}): Model {
  const opset = opts.opset ?? DEFAULT_OPSET;
  checkOpset(opset);
  if (!sameArchitecture(cfg, params.cfg)) {
    throw new VimError(`the parameters are for ${params.cfg.name} but the config is ${cfg.name}; export with the config the parameters were made for`);
  }
  const { imgSize: H, P, D, E, N, C, L, Np, clsPos, depth, normEps } = cfg;
  const b = new GraphBuilder();
  b.weights = opts.weights ?? 'f32';
  const o: Ops = { b, opset };
  const x = b.claim(INPUT_NAME);

  // pixels in 0…1 → normalised with the CIFAR-10 channel statistics
  const mean = b.f32([...CIFAR10_MEAN], [1, 3, 1, 1]);
  const std = b.f32([...CIFAR10_STD], [1, 3, 1, 1]);
  const xn = b.op('Div', [b.op('Sub', [x, mean], {}, '/normalize/sub_mean'), std], {}, '/normalize/div_std'); // (B, 3, H, W)

  // patch embedding: Conv P×P stride P → (B, D, H/P, W/P) → (B, Np, D)
  const pw = b.initializer('patch_embed.proj.weight', [D, 3, P, P], params.get('patch_embed.proj.weight'));
  const pb = b.initializer('patch_embed.proj.bias', [D], params.get('patch_embed.proj.bias'));
  const conv = b.op('Conv', [xn, pw, pb], {
    kernel_shape: attr.ints([P, P]), strides: attr.ints([P, P]), pads: attr.ints([0, 0, 0, 0]), dilations: attr.ints([1, 1]), group: attr.int(1),
  }, '/patch_embed/proj');
  const patches = b.op('Transpose', [reshape(o, conv, [0, D, Np], '/patch_embed/flatten')], { perm: attr.ints([0, 2, 1]) }, '/patch_embed/transpose'); // (B, Np, D)

  // the batch size, for the class token's expand and the scan's zero initial state
  const batch = b.op('Shape', [x], { start: attr.int(0), end: attr.int(1) }, '/batch_size'); // (1) = [B]
  const cls = b.initializer('cls_token', [1, 1, D], params.get('cls_token'));
  const clsB = b.op('Expand', [cls, b.op('Concat', [batch, b.i64([1, 1])], { axis: attr.int(0) }, '/cls_token/shape')], {}, '/cls_token/expand'); // (B, 1, D)
  const tokens = b.op('Concat', [
    slice(o, patches, [0], [clsPos], [1], undefined, '/tokens/before_cls'),
    clsB,
    slice(o, patches, [clsPos], [Np], [1], undefined, '/tokens/after_cls'),
  ], { axis: attr.int(1) }, '/tokens/insert_cls'); // (B, L, D)
  const pos = b.initializer('pos_embed', [1, L, D], params.get('pos_embed'));
  let r = b.op('Add', [tokens, pos], {}, '/tokens/pos_embed'); // (B, L, D): the residual stream
  const h0 = b.op('ConstantOfShape', [b.op('Concat', [batch, b.i64([2, N, E])], { axis: attr.int(0) }, '/scan_h0/shape')], {
    value: attr.tensor(floatTensor('', [1], new Float32Array([0]))),
  }, '/scan_h0'); // (B, 2, N, E) zeros

  let h: string | null = null;
  for (let i = 0; i < depth; i++) {
    if (h !== null) r = b.op('Add', [r, h], {}, `/layers.${i}/residual`);
    const w = b.initializer(`layers.${i}.norm.weight`, [D], params.get(`layers.${i}.norm.weight`));
    const u = rmsnorm(o, r, w, normEps, `/layers.${i}/norm`);
    h = mixer(o, cfg, params, i, u, h0);
  }
  // the last residual add, then only the class token goes on (the norm is per token)
  r = b.op('Add', [r, h!], {}, '/residual_f');
  const clsTok = b.op('Gather', [r, b.i64([clsPos], true)], { axis: attr.int(1) }, '/cls_gather'); // (B, D)
  const nf = b.initializer('norm_f.weight', [D], params.get('norm_f.weight'));
  const feat = rmsnorm(o, clsTok, nf, normEps, '/norm_f');
  const hw = b.initializer('head.weight', [C, D], params.get('head.weight'));
  const hb = b.initializer('head.bias', [C], params.get('head.bias'));
  b.add('Gemm', [feat, hw, hb], [OUTPUT_NAME], { transB: attr.int(1) }, '/head');

  const graph = b.graph(
    cfg.name,
    [valueInfo(INPUT_NAME, ['batch', 3, H, H], DataType.FLOAT, `RGB images, float32 in 0…1, (batch, 3, ${H}, ${H}); normalised inside the graph`)],
    [valueInfo(OUTPUT_NAME, ['batch', C], DataType.FLOAT, `class scores (batch, ${C}) before softmax, in the order of the "class_names" metadata`)],
    `Vision Mamba (Vim, bimamba v2) ${cfg.name}: ${depth} blocks, D=${D}, E=${E}, N=${N}, ${L} tokens with the class token at ${clsPos}`,
  );

  const meta: StringStringEntry[] = [
    { key: 'format', value: ONNX_FORMAT },
    { key: 'class_names', value: JSON.stringify(cfg.classNames) },
    { key: 'config', value: JSON.stringify(configToJson(cfg)) },
    { key: 'normalization', value: JSON.stringify({ mean: [...CIFAR10_MEAN], std: [...CIFAR10_STD], input_range: [0, 1] }) },
    { key: 'weights', value: b.weights === 'f16' ? 'float16 (cast to float32 as the model loads)' : 'float32' },
  ];
  if (opts.source !== undefined) meta.push({ key: 'source_checkpoint', value: opts.source });
  if (opts.checkpointMeta !== undefined) {
    const { config: _config, ...rest } = opts.checkpointMeta;
    meta.push({ key: 'checkpoint_metadata', value: JSON.stringify(rest) });
  }
  return {
    ir_version: irVersionFor(opset),
    producer_name: ONNX_PRODUCER,
    producer_version: packageVersion(),
    model_version: 1,
    doc_string: `${cfg.name}: a CIFAR-style Vision Mamba classifier. Input "${INPUT_NAME}" float32 (batch, 3, ${H}, ${H}) in 0…1; output "${OUTPUT_NAME}" (batch, ${C}).`,
    graph,
    opset_import: [{ domain: '', version: opset }],
    metadata_props: meta,
  };
}

/** The model as ONNX bytes. */
export function buildVimOnnx(cfg: VimConfig, params: ParamSet<Float32Array>, opts: ExportOptions = {}): Uint8Array {
  return encodeModel(buildVimModel(cfg, params, opts));
}

/** Write `bytes` to `path` through a temporary file in the same folder and a rename. */
export function writeFileAtomic(path: string, bytes: Uint8Array, what = 'file'): void {
  const problem = outputPathProblem(path, 'model.onnx');
  if (problem !== undefined) throw new VimError(`cannot write the ${what} ${path}: ${problem}`);
  writeBytesAtomic(path, bytes);
}

/** Count the nodes of a graph and of the first Scan body in it. */
function countNodes(model: Model): { nodeCount: number; scanBodyNodeCount: number } {
  const nodes = model.graph?.node ?? [];
  const scan = nodes.find((n) => n.op_type === 'Scan');
  const body = scan?.attribute?.find((a) => a.name === 'body')?.g;
  return { nodeCount: nodes.length, scanBodyNodeCount: body?.node?.length ?? 0 };
}

/** Build the model and write it to outPath atomically. */
export function exportVimOnnx(params: ParamSet<Float32Array>, cfg: VimConfig, outPath: string, opts: ExportOptions = {}): ExportResult {
  const t0 = performance.now();
  const model = buildVimModel(cfg, params, opts);
  const bytes = encodeModel(model);
  writeFileAtomic(outPath, bytes, 'ONNX model');
  return {
    path: outPath,
    bytes: bytes.length,
    paramCount: paramCount(cfg),
    ...countNodes(model),
    opset: opts.opset ?? DEFAULT_OPSET,
    ms: performance.now() - t0,
  };
}
