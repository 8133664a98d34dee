/**
 * The Vim on the GPU: forward, backward and AdamW as a fixed sequence of kernel calls, llm.c
 * style. Every buffer (parameters, gradients, AdamW moments, activations, scratch) is allocated
 * once for a config and batch size; every dispatch (pipeline, bind group, grid) is built once;
 * a training step uploads the batch, records forward + backward + gradient norm and clip scale +
 * AdamW (+ the EMA of the weights) into one command encoder, submits once and reads back, with
 * one mapAsync, the loss, the gradient norm and, when asked, the batch's logits.
 *
 * Shape letters: B batch, L = Np + 1 tokens, D model width, E inner width, N state size,
 * R Δ rank, K conv width, C classes, P patch size, Np patches, BL = B·L rows.
 *
 * The data flow is the float64 reference's (src/reference/vim.ts):
 *   patches = normalise(images) gathered per patch                       (B·Np, 3P²)
 *   tokens  = insert_cls(patches · Wpᵀ + bp) + pos_embed                  (B, L, D)
 *   block i: R_i = R_{i−1} + H_{i−1}  (R_0 = tokens);  Hn_i = RMSNorm(R_i)·w   (B, L, D)
 *            xz = Hn_i · in_projᵀ                                          (B, L, 2E)
 *            both directions: u_f, u_b = SiLU(conv1d(x)), SiLU(conv1d_b(reverse(x)))   (B, L, E) each
 *            per direction d: xdbl_d = u_d·x_projᵀ                        (B, L, R+2N)
 *                             Δraw_d = dt_low·dt_projᵀ, y_d = scan(…) ⊙ SiLU(z)
 *            cmb_i = (y_f + reverse(y_b))/2;  H_i = cmb_i · out_projᵀ      (B, L, E), (B, L, D)
 *            (the combine is fused into the backward direction's scan, and its backward into
 *            both directions' scan backwards, unless VIM_FUSE_COMBINE=0: fuseCombineDefault)
 *   final:   R_f = R_{depth−1} + H_{depth−1}; xf = RMSNorm(R_f)·norm_f on the class-token rows (B, D)
 *   logits = xf · headᵀ + b                                               (B, C)
 */
import { VimError } from '../errors.js';
import type { Gpu } from '../gpu/device.js';
import { checkGpu } from '../gpu/device.js';
import { Arena, FLAT_ALIGN, FlatTensors, flatLayout } from '../gpu/arena.js';
import { compileCheck, encodeDispatches, type Dispatch } from '../gpu/kernels.js';
import { align, download, mapRead, upload, type GpuTensor } from '../gpu/tensor.js';
import { imageWords, normalizePatches, tokensBackward, tokensForward, uploadImages } from '../gpu/ops/embed.js';
import {
  biasBackward, biasBackwardPlan, matmulBackwardInput, matmulBackwardWeight, matmulBackwardWeightBatchElements, matmulBackwardWeightPlan, matmulForward,
  WEIGHT_SUM_ROW, weightSumsDispatch, weightSumsElements, WeightSums,
} from '../gpu/ops/matmul.js';
import { residualRmsnormBackward, residualRmsnormForward, rmsnormBackwardScratchElements } from '../gpu/ops/rmsnorm.js';
import { conv1dBackward2ScratchElements, conv1dSiluBackward2, conv1dSiluForward2 } from '../gpu/ops/conv1d.js';
import {
  scanCheckpointElements, scanCheckpointsInForward, scanRecomputesDelta, scanTuning, selectiveScanBackward, selectiveScanBackwardPair, selectiveScanBackwardPlan, selectiveScanForward, type ScanBackwardArgs,
  scanPairElements, scanPairViews, selectiveScanScratch,
} from '../gpu/ops/selective-scan.js';
import { combineBackward, combineForward } from '../gpu/ops/combine.js';
import { softmaxCrossEntropyBackward, softmaxCrossEntropyForward } from '../gpu/ops/cross-entropy.js';
import {
  adamwUpdate, createAdamwUniform, decayMaskWords, packDecayMask, uploadDecayMask, writeAdamwUniform, type AdamwHyper,
} from '../gpu/ops/adamw.js';
import { createClipUniform, gradClipScale, gradNormPartials, GRAD_STATS_WORDS, writeClipUniform } from '../gpu/ops/grad-norm.js';
import { createEmaUniform, emaUpdate, writeEmaUniform } from '../gpu/ops/ema.js';
import { sameArchitecture, type VimConfig } from './config.js';
import { DIRECTION_NAMES, ParamSet, paramSpecs } from './params.js';

export interface VimGpuOptions {
  /** The batch size every buffer is sized for; smaller batches are padded by the caller. */
  batch: number;
  /** Allocate gradients, AdamW moments and the per-layer activations backward needs. */
  training: boolean;
  /** Keep an exponential moving average of the weights, updated after every step (training only). */
  ema?: boolean;
  /**
   * Drop path (training only): every block's output is multiplied per sample by a factor that
   * setDropScales sets before each step (0 to drop, 1/(1 − p) to keep); 1 until then.
   */
  dropPath?: boolean;
  /**
   * Training: where the scan backward's checkpoints are written: 'forward' (kept from the forward
   * to the backward, one set a block and direction) or 'backward' (its pass 1, into scratch).
   * Default: scanCheckpointsInForward's choice; where that is 'forward' and the build does not fit
   * GPU memory, create() builds again with 'backward' and says so in `note`.
   */
  scanCheckpoints?: 'forward' | 'backward';
}

export interface OptimizerHyper {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** Clip the gradients to this global L2 norm (0 or absent: never clip). */
  maxGradNorm?: number;
  /** The EMA decay for this step (models built with `ema`; default 0.9999). */
  emaDecay?: number;
}

/** What one training step reports (read back with a single mapAsync). */
export interface StepResult {
  /** Mean loss of the batch before the update. */
  loss: number;
  /** Global L2 norm of the gradients, before clipping. */
  gradNorm: number;
  /** The factor the gradients were multiplied by (1 unless clipped). */
  clipScale: number;
  /** True when the gradient norm was NaN or infinite: the GPU left weights, moments and EMA as they were. */
  skipped: boolean;
  /** (B, C) the batch's logits, when asked for. */
  logits?: Float32Array;
}

/**
 * An environment switch that is on unless set to '0': '1', empty or unset mean on; anything else
 * is refused, naming what '0' (`off`) and '1' (`on`) select.
 */
function envOnByDefault(name: string, off: string, on: string): boolean {
  const v = process.env[name];
  if (v === undefined || v === '' || v === '1') return true;
  if (v === '0') return false;
  throw new VimError(`${name} must be '0' (${off}) or '1' (${on}); it is '${v}'`);
}

/**
 * Whether the model fuses the combine of the two directions into the selective scans (the
 * default): the backward direction's scan forward writes the block's combined output itself
 * (ScanForwardArgs.combine) and both scan backwards read its gradient directly
 * (ScanBackwardArgs.doutCombined), so a block runs no combine dispatch either way and keeps no
 * y_f, y_b, dy_f, dy_b buffers. VIM_FUSE_COMBINE=0 selects the separate combine dispatches
 * (combine.ts), for measurements; 1 or unset, the fused form.
 *
 * Expected on an H200 at vim-tiny batch 256 (B=256, L=65, E=384, 24 blocks; n = B·L·E = 6.39 M),
 * where the combine dispatches took 0.94 ms (forward) and 0.79 ms (backward) a step: per block
 * the separate forward moves 4n floats for the combine (the backward direction's scan writes y_b;
 * the combine reads y_f, y_b and writes cmb), the fused one 2n (that scan reads y_f and writes
 * cmb); the separate backward moves 5n (the combine reads dcmb and writes dy_f, dy_b; the scans
 * read dy_f, dy_b), the fused one 2n (the scans read dcmb). 5n floats fewer a block is 128 MB,
 * 3.07 GB a step: 0.30 ms (forward) + 0.45 ms (backward) = 0.75 ms at 4.1 TB/s, the least the step
 * saves. The combine dispatches ran at about half that bandwidth (1.84 GB each way in 0.94 and
 * 0.79 ms), and the scan backwards read as many values as before, so the step should save close
 * to their 1.73 ms less what the extra y_f read costs the scan forward (n floats a block, at most
 * 0.15 ms a step at 4.1 TB/s; less where its one-token-ahead load hides behind the compute):
 * about 1.6 ms. Memory: the four (B, L, E) buffers y_f, y_b, dy_f, dy_b (102 MB) are gone.
 */
export function fuseCombineDefault(): boolean {
  return envOnByDefault('VIM_FUSE_COMBINE', 'separate combine dispatches', 'fused into the scans');
}

/**
 * Whether a block's weight gradients (out_proj, dt_proj and x_proj of both directions, in_proj)
 * add up their split partials in one dispatch at the block's end (matmul.ts weightSumsDispatch:
 * the same sums, the same bits) instead of one dispatch each, and its RMSNorm weight's and both
 * directions' conv1d parameters' partials with them (summed in another order than their own tree
 * sums): one dispatch a block instead of eight, 168 fewer a step at depth 24, for a buffer holding
 * all their partials at once (48 MB for vim-tiny at batch 256, 46 of them the matmuls').
 * VIM_MERGE_WEIGHT_SUMS=0 selects one dispatch each, for measurements; 1 or unset, the merged form.
 */
export function mergeWeightSumsDefault(): boolean {
  return envOnByDefault('VIM_MERGE_WEIGHT_SUMS', 'a sum dispatch for each weight gradient', "a block's in one");
}

/**
 * Whether both directions' scan backwards sum their partials in one dispatch after both scans
 * (selectiveScanBackwardPair: the same sums, the same bits) instead of one after each: 24 dispatches
 * fewer a step at depth 24, for a second set of scan partials (at most 33 MB for vim-tiny at batch 256; a
 * second ddelta and dxdbl too where x_proj and dt_proj run a dispatch a direction). 1 or unset, one
 * for both; 0, one each. On an H200 with both directions' x_proj and dt_proj batched the pair saves
 * 0.25 ms of GPU time and 0.3 ms a step by wall clock (docs/performance.md change 41; change 38 found
 * it slower by wall clock when each direction's matmuls ran between the two scans).
 */
export function pairScanReduceDefault(): boolean {
  return envOnByDefault('VIM_SCAN_PAIR_REDUCE', "a reduction after each direction's scan backward", 'one after both');
}

/**
 * Whether a block's x_proj and dt_proj matmuls run both directions in one dispatch (MatmulBatch:
 * the directions' u, xdbl, du, dΔraw and dxdbl each one tensor with the reverse direction's from the
 * first 256-byte boundary after the forward one's, their weights a fixed stride apart in the flat
 * parameters): 120 dispatches fewer a training step at depth 24 (24 in inference), for a second
 * dΔraw and dxdbl (29 MB for vim-tiny at batch 256). The same sums in the same order, so the same
 * bits. VIM_BATCH_DIRECTIONS=0 selects a dispatch a direction, for measurements; 1 or unset, one for both.
 */
export function batchDirectionsDefault(): boolean {
  return envOnByDefault('VIM_BATCH_DIRECTIONS', 'x_proj and dt_proj a dispatch a direction', 'both directions in one');
}

/**
 * One binding over two views of one buffer, `second` at or after `first`: the tensor from first's
 * start to second's end and the elements between their starts (MatmulBatch's strides).
 */
function spanOf(first: GpuTensor, second: GpuTensor): { t: GpuTensor; stride: number } {
  if (first.buffer !== second.buffer || second.offset < first.offset || (second.offset - first.offset) % 4 !== 0) {
    throw new Error(`spanOf: ${second.label} does not follow ${first.label} in one buffer`);
  }
  return {
    t: { buffer: first.buffer, offset: first.offset, size: second.offset + second.size - first.offset, label: `${first.label} … ${second.label}` },
    stride: (second.offset - first.offset) / 4,
  };
}

/** Bytes of the step read-back buffer before the logits: loss at 0, the gradient stats at 16. */
const READBACK_STATS_OFFSET = 16;
const READBACK_LOGITS_OFFSET = 32;

/** The activations of one direction of one block. */
interface DirActs {
  u: GpuTensor; // (BL, E) conv1d + SiLU output, direction order
  xdbl: GpuTensor; // (BL, R+2N) x_proj output
  delta: GpuTensor | null; // (BL, E) dt_proj output without its bias (written by the scan forward; training where the backward does not recompute it)
  ckpt: GpuTensor | null; // (B, ⌈L/S⌉−1, 4⌈N/4⌉, E) the scan's states entering each segment (written by the forward; training only)
}

/** The activations of one block (in inference, one set shared by every block). */
interface LayerActs {
  r: GpuTensor; // (BL, D) R_i, the residual stream after this block's add
  rstd: GpuTensor; // (BL)
  hn: GpuTensor; // (BL, D) RMSNorm(R_i) · w
  xz: GpuTensor; // (BL, 2E) in_proj output
  dirs: [DirActs, DirActs];
  cmb: GpuTensor; // (BL, E) combined directions, out_proj's input
}

export class VimGpu {
  readonly B: number;
  readonly training: boolean;
  /** Training: where the scan backward's checkpoints are written (null in inference). */
  readonly scanCheckpoints: 'forward' | 'backward' | null;
  /** Training: whether the scan forward stores Δraw for the backward or the backward recomputes it (scanRecomputesDelta; null in inference). */
  readonly scanDelta: 'stored' | 'recomputed' | null;
  /** A line for the user about a choice create() made for them (e.g. a fallback for memory), or null. */
  note: string | null = null;
  readonly params: FlatTensors;
  readonly grads: FlatTensors | null;
  private readonly m: FlatTensors | null;
  private readonly v: FlatTensors | null;
  /** The exponential moving average of the weights (models built with `ema`). */
  readonly ema: FlatTensors | null;
  private readonly arena: Arena;
  private readonly images: GpuTensor; // (imageWords) packed u8 pixels
  private readonly targets: GpuTensor; // (B, C) soft targets
  readonly logits: GpuTensor; // (B, C)
  private readonly loss: GpuTensor; // (1)
  /** Two read-back buffers, used by turns, so that a step can be submitted before the one before it is read. */
  private readonly stepStaging: [GPUBuffer, GPUBuffer];
  private stagingTurn = 0; // the read-back buffer of the next step
  private readonly adamUniform: GPUBuffer | null;
  private readonly clipUniform: GPUBuffer | null;
  private readonly emaUniform: GPUBuffer | null;
  private readonly gradStats: GpuTensor | null; // (4) [‖g‖, clip scale, non-finite flag, Σ g²]
  private readonly dropScales: GpuTensor | null; // (depth, dropStride) drop-path factors of the blocks' outputs, B a row
  private readonly dropStride: number; // elements between rows of dropScales: B rounded up to 256 bytes
  private nextStep: { key: string; cb: GPUCommandBuffer } | null = null; // the next step's commands, recorded ahead (they name its read-back buffer)
  private clipNorm = -1; // the max norm the clip uniform holds (−1: not written yet)
  /** Dispatch lists, built once. */
  readonly forwardList: Dispatch[] = [];
  readonly lossList: Dispatch[] = [];
  readonly backwardList: Dispatch[] = [];
  readonly optimizerList: Dispatch[] = [];
  step = 0; // AdamW steps taken (the next one is step + 1)

  private constructor(readonly gpu: Gpu, readonly cfg: VimConfig, opts: VimGpuOptions) {
    const { D, E, N, R, K, C, P, L, Np, depth, imgSize } = cfg;
    const B = opts.batch;
    if (!Number.isInteger(B) || B < 1) throw new VimError(`batch size must be a positive integer; received ${B}`);
    if (opts.ema && !opts.training) throw new Error('VimGpu: an EMA of the weights needs a training build');
    if (opts.dropPath && !opts.training) throw new Error('VimGpu: drop path needs a training build');
    this.B = B;
    this.training = opts.training;
    const BL = B * L;
    const specs = paramSpecs(cfg);
    const layout = flatLayout(specs);
    this.params = new FlatTensors(gpu, layout, 'params');
    this.grads = opts.training ? new FlatTensors(gpu, layout, 'grads') : null;
    this.m = opts.training ? new FlatTensors(gpu, layout, 'adamw m') : null;
    this.v = opts.training ? new FlatTensors(gpu, layout, 'adamw v') : null;
    this.ema = opts.ema ? new FlatTensors(gpu, layout, 'ema') : null;
    const arena = (this.arena = new Arena(gpu, `vim ${cfg.name} batch ${B}`));
    const t = (label: string, n: number) => arena.tensor(label, n);

    // ---- inputs and outputs
    this.images = t('images', imageWords(B, imgSize, imgSize));
    this.targets = t('targets', B * C);
    this.logits = t('logits', B * C);
    this.loss = t('loss', 1);
    const losses = t('losses', B);
    const probs = t('probs', B * C);
    const staging = (k: number) => gpu.device.createBuffer({
      size: READBACK_LOGITS_OFFSET + 4 * B * C, usage: 0x0001 /* MAP_READ */ | 0x0008 /* COPY_DST */, label: `step readback ${k}`,
    });
    this.stepStaging = [staging(0), staging(1)];
    this.adamUniform = opts.training ? createAdamwUniform(gpu) : null;
    this.clipUniform = opts.training ? createClipUniform(gpu) : null;
    this.emaUniform = opts.ema ? createEmaUniform(gpu) : null;
    this.gradStats = opts.training ? t('gradient stats', GRAD_STATS_WORDS) : null;
    // Each block's row starts at a 256-byte boundary and is bound on its own (offset 0), so that
    // every block's scan and combine pipelines are the same ones (the row is not a constant of them).
    const dropStride = (this.dropStride = align(B, FLAT_ALIGN));
    const drops = (this.dropScales = opts.dropPath ? t('drop-path factors', depth * dropStride) : null);
    if (drops) upload(gpu, drops, new Float32Array(depth * dropStride).fill(1));
    const dropRow = (i: number) => (drops
      ? { scale: { t: { ...drops, offset: drops.offset + 4 * i * dropStride, size: 4 * B, label: `${drops.label} of block ${i}` }, offset: 0 } }
      : {});
    const fuseCombine = fuseCombineDefault();

    // ---- activations
    const patches = t('patches', B * Np * 3 * P * P); // (B·Np, 3P²)
    const pe = t('patch embeddings', B * Np * D); // (B·Np, D)
    const tokens = t('tokens', BL * D); // (BL, D)
    const hbuf = t('block output', BL * D); // (BL, D) H_i, read by the next block's residual add
    // (BL, E) each: the directions' outputs before the separate combine (fused: none)
    const yDir = fuseCombine ? null : [t('y forward', BL * E), t('y backward', BL * E)];
    // the scan backward's plan; in training, where it pays, the forward writes its checkpoints
    const scanT = scanTuning(gpu); // the backward kernel and the adapter's subgroup size
    const scanPlan = selectiveScanBackwardPlan({ B, L, E, N, R }, scanT);
    const fwdCkpt = opts.training && (opts.scanCheckpoints ? opts.scanCheckpoints === 'forward' : scanCheckpointsInForward(scanPlan));
    // in training, where the backward can recompute Δraw (it needs the forward's checkpoints), the forward stores none
    const dtRec = opts.training && scanRecomputesDelta(scanPlan, { B, L, E, N, R }, fwdCkpt, gpu.limits.maxComputeWorkgroupStorageSize);
    this.scanCheckpoints = opts.training ? (fwdCkpt ? 'forward' : 'backward') : null;
    this.scanDelta = opts.training ? (dtRec ? 'recomputed' : 'stored') : null;
    const ckElems = Math.max(4, scanCheckpointElements({ B, L, E, N, R }, scanPlan.segment));
    // (the batched weight gradients put their partials in a block's weight sums: not with VIM_MERGE_WEIGHT_SUMS=0)
    const batchDirs = batchDirectionsDefault() && (!opts.training || mergeWeightSumsDefault());
    const nx = BL * (R + 2 * N);
    // (n) a direction: with batchDirs both directions' views of one tensor (scanPairViews), else a tensor each
    const perDir = (label: string, n: number): [GpuTensor, GpuTensor] => (batchDirs
      ? scanPairViews(t(label, scanPairElements(n)), n)
      : [t(`${label} (forward)`, n), t(`${label} (backward)`, n)]);
    const newLayer = (i: number | string): LayerActs => {
      const u = perDir(`${i}.u`, BL * E);
      const xdbl = perDir(`${i}.xdbl`, nx);
      const dir = (d: number): DirActs => ({
        u: u[d], xdbl: xdbl[d],
        delta: opts.training && !dtRec ? t(`${i}.${'fb'[d]}.delta`, BL * E) : null, // with dtRec the backward recomputes it
        ckpt: fwdCkpt ? t(`${i}.${'fb'[d]}.scan checkpoints`, ckElems) : null,
      });
      return {
        r: t(`${i}.r`, BL * D), rstd: t(`${i}.rstd`, BL), hn: t(`${i}.hn`, BL * D), xz: t(`${i}.xz`, BL * 2 * E),
        dirs: [dir(0), dir(1)], cmb: t(`${i}.cmb`, BL * E),
      };
    };
    // Training keeps every block's activations for backward; inference shares one set, with the
    // residual stream in two buffers that alternate (a dispatch may not read and write one buffer).
    let layers: LayerActs[];
    if (opts.training) {
      layers = Array.from({ length: depth }, (_, i) => newLayer(i));
    } else {
      const shared = newLayer('shared');
      const r2 = t('shared.r2', BL * D);
      layers = Array.from({ length: depth }, (_, i) => ({ ...shared, r: i % 2 === 0 ? shared.r : r2 }));
    }
    const rf = t('final r', B * D); // (B, D) R_f at the class-token rows
    const rstdF = t('final rstd', B);
    const xf = t('final norm', B * D); // (B, D)

    // ---- scratch shared by every op (dispatches run in order, so one op's partials never overlap another's)
    const mm = (M: number, I: number, O: number) => Math.max(
      matmulBackwardWeightPlan(M, I, O).scratchElements, biasBackwardPlan(M, O).scratchElements);
    const scanScratch = selectiveScanScratch({ B, L, E, N, R }, scanT, { forwardCheckpoints: fwdCkpt });
    // with the pair reduction each direction's scan partials, parameter partials and dxdbl lie in
    // one tensor, the reverse direction's from the first 256-byte boundary after the forward one's
    const pair = opts.training && pairScanReduceDefault();
    const both = (n: number): number => (pair ? scanPairElements(n) : n);
    const scratchElems = Math.max(
      mm(BL, D, 2 * E), mm(BL, E, R + 2 * N), mm(BL, R, E), mm(BL, E, D), mm(B * Np, 3 * P * P, D), mm(B, D, C),
      rmsnormBackwardScratchElements(BL, D), rmsnormBackwardScratchElements(B, D),
      conv1dBackward2ScratchElements(B, L, E, K), both(scanScratch.bcPartials), 1);
    const scratch = opts.training ? t('scratch', scratchElems) : null;
    const scratch2 = opts.training ? t('scan parameter partials', Math.max(1, both(scanScratch.paramPartials))) : null;
    // a block's weight gradients' split partials, all at once where their sums run together at its end
    // (with batchDirs, dt_proj's and x_proj's both directions in one dispatch each, their partials a region a direction)
    const blockWeights = [[BL, E, D, false], [BL, R, E, batchDirs], [BL, R, E, batchDirs], [BL, E, R + 2 * N, batchDirs], [BL, E, R + 2 * N, batchDirs], [BL, D, 2 * E, false]] as const;
    const partialsOf = ([m, i, o, batched]: readonly [number, number, number, boolean]) => (batched
      ? matmulBackwardWeightBatchElements(m, i, o) : matmulBackwardWeightPlan(m, i, o).scratchElements);
    // (and the block's RMSNorm weight and both directions' conv1d parameters, whose partials join those sums)
    const otherPartials = [rmsnormBackwardScratchElements(BL, D), conv1dBackward2ScratchElements(B, L, E, K)];
    const weightSums = opts.training && mergeWeightSumsDefault()
      ? new WeightSums(t('block weight partials', Math.max(1, weightSumsElements([...blockWeights.map(partialsOf), ...otherPartials]))))
      : undefined;

    const p = (name: string) => this.params.get(name);
    const mix = (i: number, s: string) => p(`layers.${i}.mixer.${s}`);
    // both directions' weights of a block as one binding (batchDirs)
    const mixBoth = (i: number, names: readonly [string, string]) => spanOf(mix(i, names[0]), mix(i, names[1]));
    const F = this.forwardList;

    // ---------------------------------------------------------------- forward
    F.push(normalizePatches(gpu, { out: patches, images: this.images, B, H: imgSize, W: imgSize, P }));
    F.push(matmulForward(gpu, {
      out: pe, inp: patches, weight: p('patch_embed.proj.weight'), bias: p('patch_embed.proj.bias'),
      M: B * Np, I: 3 * P * P, O: D,
    }));
    F.push(tokensForward(gpu, { out: tokens, patches: pe, clsToken: p('cls_token'), posEmbed: p('pos_embed'), B, Np, D }));
    for (let i = 0; i < depth; i++) {
      const a = layers[i];
      F.push(residualRmsnormForward(gpu, {
        rOut: a.r, out: a.hn, rstd: a.rstd, rIn: i === 0 ? null : layers[i - 1].r, h: i === 0 ? tokens : hbuf,
        weight: p(`layers.${i}.norm.weight`), BL, D, eps: cfg.normEps,
      }));
      F.push(matmulForward(gpu, { out: a.xz, inp: a.hn, weight: mix(i, 'in_proj.weight'), bias: null, M: BL, I: D, O: 2 * E }));
      // both directions' conv1d + SiLU in one pass over x (u_b in the reversed direction's order)
      F.push(conv1dSiluForward2(gpu, {
        outF: a.dirs[0].u, outB: a.dirs[1].u, xz: a.xz,
        weightF: mix(i, DIRECTION_NAMES.conv1dWeight[0]), biasF: mix(i, DIRECTION_NAMES.conv1dBias[0]),
        weightB: mix(i, DIRECTION_NAMES.conv1dWeight[1]), biasB: mix(i, DIRECTION_NAMES.conv1dBias[1]), B, L, E, K,
      }));
      if (batchDirs) { // x_proj of both directions in one dispatch
        const u = spanOf(a.dirs[0].u, a.dirs[1].u), xd = spanOf(a.dirs[0].xdbl, a.dirs[1].xdbl), w = mixBoth(i, DIRECTION_NAMES.xProj);
        F.push(matmulForward(gpu, {
          out: xd.t, inp: u.t, weight: w.t, bias: null, M: BL, I: E, O: R + 2 * N, batch: { count: 2, inp: u.stride, out: xd.stride, weight: w.stride },
        }));
      }
      for (let d = 0; d < 2; d++) {
        const da = a.dirs[d];
        const reverse = d === 1;
        if (!batchDirs) F.push(matmulForward(gpu, { out: da.xdbl, inp: da.u, weight: mix(i, DIRECTION_NAMES.xProj[d]), bias: null, M: BL, I: E, O: R + 2 * N }));
        // dt_proj fused into the scan: Δraw = xdbl[:, 0…R−1] · dt_projᵀ, stored only for a backward that does not recompute it
        // fused: the forward direction writes y_f into cmb, the backward direction adds its output
        // there at the original tokens (· 0.5, · the drop-path factor), leaving the combined output
        F.push(selectiveScanForward(gpu, {
          out: yDir ? yDir[d] : a.cmb, ...(!yDir && reverse ? { combine: dropRow(i) } : {}), u: da.u, dtWeight: mix(i, DIRECTION_NAMES.dtProjWeight[d]), delta_raw: da.delta ?? undefined,
          dt_bias: mix(i, DIRECTION_NAMES.dtProjBias[d]),
          A_log: mix(i, DIRECTION_NAMES.ALog[d]), xdbl: da.xdbl, Dskip: mix(i, DIRECTION_NAMES.D[d]), xz: a.xz,
          B, L, E, N, R, reverse, ...(da.ckpt ? { checkpoints: { out: da.ckpt, segment: scanPlan.segment } } : {}),
          exp2: scanT.exp2, // as the backward's recomputation rounds (undefined: the forward's default)
        }));
      }
      if (yDir) F.push(combineForward(gpu, { out: a.cmb, yF: yDir[0], yB: yDir[1], B, L, E, ...dropRow(i) }));
      F.push(matmulForward(gpu, { out: hbuf, inp: a.cmb, weight: mix(i, 'out_proj.weight'), bias: null, M: BL, I: E, O: D }));
    }
    const clsRows = { count: B, stride: L, offset: cfg.clsPos };
    F.push(residualRmsnormForward(gpu, {
      rOut: rf, out: xf, rstd: rstdF, rIn: layers[depth - 1].r, h: hbuf, weight: p('norm_f.weight'), BL, D, eps: cfg.normEps,
      select: clsRows,
    }));
    F.push(matmulForward(gpu, { out: this.logits, inp: xf, weight: p('head.weight'), bias: p('head.bias'), M: B, I: D, O: C }));
    this.lossList.push(...softmaxCrossEntropyForward(gpu, { losses, probs, loss: this.loss, logits: this.logits, targets: this.targets, B, C }));

    if (!opts.training || !this.grads || !scratch || !scratch2) return;

    // ---------------------------------------------------------------- backward
    const g = (name: string) => this.grads!.get(name);
    const gm = (i: number, s: string) => g(`layers.${i}.mixer.${s}`);
    const W = this.backwardList;
    const dlogits = t('dlogits', B * C);
    const dxf = t('dxf', B * D); // (B, D)
    const drFinal = t('dr final', BL * D); // (BL, D) written only at the class-token rows; the rest stays 0
    const drPing = [t('dr ping', BL * D), t('dr pong', BL * D)];
    const dhn = t('dhn', BL * D);
    const dcmb = t('dcmb', BL * E);
    // (BL, E) each: the directions' output gradients of the separate combine (fused: the scans read dcmb)
    const dy = fuseCombine ? null : [t('dy forward', BL * E), t('dy backward', BL * E)];
    const dxz = t('dxz', BL * 2 * E);
    const du = perDir('du', BL * E); // (BL, E) each, direction order
    // (BL, E) and (BL, R+2N): one a direction where both scans run before the matmuls that read them
    // (the pair reduction, batchDirs), else one for both
    const apart = pair || batchDirs;
    const ddelta = apart ? perDir('ddelta', BL * E) : Array(2).fill(t('ddelta', BL * E));
    const dxdblAll = t('dxdbl', apart ? scanPairElements(nx) : nx);
    const dxdbl = apart ? scanPairViews(dxdblAll, nx) : [dxdblAll, dxdblAll];
    const bcPartials = pair ? scanPairViews(scratch, scanScratch.bcPartials) : [scratch, scratch];
    const paramPartials = pair ? scanPairViews(scratch2, scanScratch.paramPartials) : [scratch2, scratch2];
    const dpe = t('dpatch embeddings', B * Np * D);

    W.push(softmaxCrossEntropyBackward(gpu, { dlogits, probs, targets: this.targets, B, C, scale: 1 / B }));
    // head: logits = xf · Wᵀ + b
    W.push(...matmulBackwardWeight(gpu, { dweight: g('head.weight'), dout: dlogits, inp: xf, M: B, I: D, O: C, scratch }));
    W.push(...biasBackward(gpu, { dbias: g('head.bias'), dout: dlogits, M: B, O: C, scratch }));
    W.push(matmulBackwardInput(gpu, { dinp: dxf, dout: dlogits, weight: p('head.weight'), M: B, I: D, O: C }));
    // final norm on the class-token rows: drFinal = ∂loss/∂R_f (zero off those rows)
    W.push(...residualRmsnormBackward(gpu, {
      dr: drFinal, dweight: g('norm_f.weight'), dout: dxf, drNext: null, r: rf, rstd: rstdF, weight: p('norm_f.weight'),
      BL, D, scratch, select: clsRows,
    }));
    let gIn = drFinal; // ∂loss/∂R_{i+1} (for the last block, ∂loss/∂R_f), which is also ∂loss/∂H_i
    for (let i = depth - 1; i >= 0; i--) {
      const a = layers[i];
      const gOut = drPing[i % 2];
      // out_proj: H_i = cmb · Woutᵀ
      W.push(matmulBackwardInput(gpu, { dinp: dcmb, dout: gIn, weight: mix(i, 'out_proj.weight'), M: BL, I: E, O: D }));
      W.push(...matmulBackwardWeight(gpu, { dweight: gm(i, 'out_proj.weight'), dout: gIn, inp: a.cmb, M: BL, I: E, O: D, scratch, sums: weightSums }));
      if (dy) W.push(combineBackward(gpu, { dyF: dy[0], dyB: dy[1], dout: dcmb, B, L, E, ...dropRow(i) }));
      // the scans write du, ddelta, the B/C columns of dxdbl, the z half of dxz (both directions add) and their parameters
      const scanArgs = [0, 1].map((d): ScanBackwardArgs => {
        const da = a.dirs[d];
        return {
          du: du[d], ddelta_raw: ddelta[d], dxz, dxdbl: dxdbl[d], dA_log: gm(i, DIRECTION_NAMES.ALog[d]), dDskip: gm(i, DIRECTION_NAMES.D[d]),
          ddt_bias: gm(i, DIRECTION_NAMES.dtProjBias[d]), ...(dy ? { dout: dy[d] } : { dout: dcmb, doutCombined: dropRow(i) }),
          u: da.u, ...(da.delta ? { delta_raw: da.delta } : { dtWeight: mix(i, DIRECTION_NAMES.dtProjWeight[d]) }),
          dt_bias: mix(i, DIRECTION_NAMES.dtProjBias[d]), A_log: mix(i, DIRECTION_NAMES.ALog[d]),
          xdbl: da.xdbl, Dskip: mix(i, DIRECTION_NAMES.D[d]), xz: a.xz,
          B, L, E, N, R, reverse: d === 1, scratch: { bcPartials: bcPartials[d], paramPartials: paramPartials[d] },
          accumulate: { dz: d === 1 }, ...scanT, ...(da.ckpt ? { checkpoints: da.ckpt } : {}),
        };
      });
      if (pair) W.push(...selectiveScanBackwardPair(gpu, [scanArgs[0], scanArgs[1]]));
      else if (batchDirs) W.push(...selectiveScanBackward(gpu, scanArgs[0]), ...selectiveScanBackward(gpu, scanArgs[1]));
      if (batchDirs) { // dt_proj and x_proj of both directions, a dispatch each
        const dd = spanOf(ddelta[0], ddelta[1]), dx = spanOf(dxdbl[0], dxdbl[1]), xd = spanOf(a.dirs[0].xdbl, a.dirs[1].xdbl);
        const u = spanOf(a.dirs[0].u, a.dirs[1].u), dU = spanOf(du[0], du[1]);
        const wdt = mixBoth(i, DIRECTION_NAMES.dtProjWeight), wx = mixBoth(i, DIRECTION_NAMES.xProj);
        const grads = (names: readonly [string, string]) => [gm(i, names[0]), gm(i, names[1])];
        W.push(matmulBackwardInput(gpu, {
          dinp: dx.t, dout: dd.t, weight: wdt.t, M: BL, I: R, O: E, ldi: R + 2 * N, batch: { count: 2, inp: dx.stride, out: dd.stride, weight: wdt.stride },
        }));
        const dtW = grads(DIRECTION_NAMES.dtProjWeight);
        W.push(...matmulBackwardWeight(gpu, {
          dweight: dtW[0], dout: dd.t, inp: xd.t, M: BL, I: R, O: E, ldi: R + 2 * N, scratch, sums: weightSums,
          batch: { count: 2, inp: xd.stride, out: dd.stride, dweights: dtW },
        }));
        W.push(matmulBackwardInput(gpu, {
          dinp: dU.t, dout: dx.t, weight: wx.t, M: BL, I: E, O: R + 2 * N, accumulate: true, batch: { count: 2, inp: dU.stride, out: dx.stride, weight: wx.stride },
        }));
        const xW = grads(DIRECTION_NAMES.xProj);
        W.push(...matmulBackwardWeight(gpu, {
          dweight: xW[0], dout: dx.t, inp: u.t, M: BL, I: E, O: R + 2 * N, scratch, sums: weightSums,
          batch: { count: 2, inp: u.stride, out: dx.stride, dweights: xW },
        }));
      }
      for (let d = 0; d < 2 && !batchDirs; d++) {
        const da = a.dirs[d];
        if (!pair) W.push(...selectiveScanBackward(gpu, scanArgs[d]));
        const dd = ddelta[d];
        // dt_proj: Δraw = dt_low · Wdtᵀ, dt_low = xdbl[:, 0…R−1]
        W.push(matmulBackwardInput(gpu, { dinp: dxdbl[d], dout: dd, weight: mix(i, DIRECTION_NAMES.dtProjWeight[d]), M: BL, I: R, O: E, ldi: R + 2 * N }));
        W.push(...matmulBackwardWeight(gpu, {
          dweight: gm(i, DIRECTION_NAMES.dtProjWeight[d]), dout: dd, inp: da.xdbl, M: BL, I: R, O: E, ldi: R + 2 * N, scratch, sums: weightSums,
        }));
        // x_proj: xdbl = u · Wxᵀ; du already holds the scan's part, add this one
        W.push(matmulBackwardInput(gpu, { dinp: du[d], dout: dxdbl[d], weight: mix(i, DIRECTION_NAMES.xProj[d]), M: BL, I: E, O: R + 2 * N, accumulate: true }));
        W.push(...matmulBackwardWeight(gpu, { dweight: gm(i, DIRECTION_NAMES.xProj[d]), dout: dxdbl[d], inp: da.u, M: BL, I: E, O: R + 2 * N, scratch, sums: weightSums }));
      }
      // both directions' conv1d + SiLU: the x half of dxz written once (forward direction's part + reversed one's)
      W.push(...conv1dSiluBackward2(gpu, {
        dxz, dweightF: gm(i, DIRECTION_NAMES.conv1dWeight[0]), dbiasF: gm(i, DIRECTION_NAMES.conv1dBias[0]),
        dweightB: gm(i, DIRECTION_NAMES.conv1dWeight[1]), dbiasB: gm(i, DIRECTION_NAMES.conv1dBias[1]),
        doutF: du[0], doutB: du[1], xz: a.xz,
        weightF: mix(i, DIRECTION_NAMES.conv1dWeight[0]), biasF: mix(i, DIRECTION_NAMES.conv1dBias[0]),
        weightB: mix(i, DIRECTION_NAMES.conv1dWeight[1]), biasB: mix(i, DIRECTION_NAMES.conv1dBias[1]), B, L, E, K, scratch,
        sums: weightSums,
      }));
      // in_proj: xz = hn · Winᵀ
      W.push(matmulBackwardInput(gpu, { dinp: dhn, dout: dxz, weight: mix(i, 'in_proj.weight'), M: BL, I: D, O: 2 * E }));
      W.push(...matmulBackwardWeight(gpu, { dweight: gm(i, 'in_proj.weight'), dout: dxz, inp: a.hn, M: BL, I: D, O: 2 * E, scratch, sums: weightSums }));
      // residual add + norm: ∂loss/∂R_i = ∂loss/∂R_{i+1} + norm backward
      W.push(...residualRmsnormBackward(gpu, {
        dr: gOut, dweight: g(`layers.${i}.norm.weight`), dout: dhn, drNext: gIn, r: a.r, rstd: a.rstd,
        weight: p(`layers.${i}.norm.weight`), BL, D, scratch, sums: weightSums,
      }));
      // the block's weight sums: its matmuls' split ones (none where no gradient was split), its norm's and conv1d's
      if (weightSums) W.push(...weightSumsDispatch(gpu, weightSums, t(`weight sums table ${i}`, Math.max(1, WEIGHT_SUM_ROW * weightSums.rows.length))));
      gIn = gOut;
    }
    // R_0 = tokens
    W.push(...tokensBackward(gpu, { dpatches: dpe, dclsToken: g('cls_token'), dposEmbed: g('pos_embed'), dout: gIn, B, Np, D }));
    W.push(...matmulBackwardWeight(gpu, { dweight: g('patch_embed.proj.weight'), dout: dpe, inp: patches, M: B * Np, I: 3 * P * P, O: D, scratch }));
    W.push(...biasBackward(gpu, { dbias: g('patch_embed.proj.bias'), dout: dpe, M: B * Np, O: D, scratch }));

    // ---------------------------------------------------------------- AdamW over every parameter
    const mask = new Uint8Array(layout.total);
    for (const s of specs) if (s.decay) mask.fill(1, layout.byName.get(s.name)!.offset, layout.byName.get(s.name)!.offset + s.size);
    const maskWords = packDecayMask(mask);
    const decayMask = t('decay mask', decayMaskWords(layout.total));
    uploadDecayMask(gpu, decayMask, maskWords);
    // The global gradient norm and clip scale first: AdamW reads the scale (and skips a step whose
    // gradients are not finite) from the same buffer, so clipping needs no read-back.
    const gradStats = this.gradStats!;
    this.optimizerList.push(...gradClipScale(gpu, {
      stats: gradStats, partials: t('gradient norm partials', gradNormPartials(layout.total)), grads: this.grads.all,
      uniform: this.clipUniform!, n: layout.total,
    }));
    this.optimizerList.push(adamwUpdate(gpu, {
      params: this.params.all, m: this.m!.all, v: this.v!.all, grads: this.grads.all, decayMask, uniform: this.adamUniform!,
      n: layout.total, gradStats,
    }));
    if (this.ema) {
      this.optimizerList.push(emaUpdate(gpu, {
        ema: this.ema.all, params: this.params.all, stats: gradStats, uniform: this.emaUniform!, n: layout.total,
      }));
    }
  }

  /** Allocate every buffer and build every pipeline for this config and batch size. */
  static async create(gpu: Gpu, cfg: VimConfig, opts: VimGpuOptions): Promise<VimGpu> {
    let { model, oom } = await VimGpu.allocate(gpu, cfg, opts);
    if (oom && model.scanCheckpoints === 'forward' && opts.scanCheckpoints === undefined && !process.env.VIM_SCAN_CHECKPOINTS) {
      // the forward's checkpoints, chosen by default, are the one large option: without them the step is a few % slower
      ({ model, oom } = await VimGpu.allocate(gpu, cfg, { ...opts, scanCheckpoints: 'backward' }));
      if (!oom) {
        model.note = `the scan's checkpoints kept from the forward to the backward did not fit GPU memory at batch ${opts.batch}: ` +
          'the backward writes them itself (a few % slower a step; a smaller --batch-size keeps them)';
      }
    }
    if (oom) {
      throw new VimError(`the GPU ran out of memory allocating ${cfg.name} at batch ${opts.batch}: use a smaller --batch-size (${oom})`);
    }
    await compileCheck();
    checkGpu(gpu, `building ${cfg.name}`);
    return model;
  }

  /** A model with every buffer allocated; or, with the out-of-memory message, one whose buffers are released. */
  private static async allocate(gpu: Gpu, cfg: VimConfig, opts: VimGpuOptions): Promise<{ model: VimGpu; oom: string | null }> {
    gpu.device.pushErrorScope('out-of-memory');
    let model: VimGpu;
    let error: GPUError | null;
    try {
      model = new VimGpu(gpu, cfg, opts);
    } finally {
      error = await gpu.device.popErrorScope(); // the scope is closed whatever happened
    }
    if (error) model.destroy();
    return { model, oom: error ? error.message : null };
  }

  /** Bytes of GPU memory held by activations and scratch (parameters and optimizer state excluded). */
  get activationBytes(): number {
    return this.arena.bytes;
  }

  setParams(params: ParamSet<Float32Array> | ParamSet<Float64Array>): void {
    upload(this.gpu, this.params.all, this.params.pack(params.flat));
  }

  async getParams(): Promise<ParamSet<Float32Array>> {
    const padded = await download(this.gpu, this.params.all);
    return new ParamSet(this.cfg, this.params.unpack(padded));
  }

  async getGrads(): Promise<ParamSet<Float32Array>> {
    if (!this.grads) throw new Error('getGrads: this model was built for inference');
    return new ParamSet(this.cfg, this.grads.unpack(await download(this.gpu, this.grads.all)));
  }

  /** AdamW moments and step, for a resumable training state. */
  async getOptimizerState(): Promise<{ m: Float32Array; v: Float32Array; step: number }> {
    if (!this.m || !this.v) throw new Error('getOptimizerState: this model was built for inference');
    return {
      m: this.m.unpack(await download(this.gpu, this.m.all)),
      v: this.v.unpack(await download(this.gpu, this.v.all)),
      step: this.step,
    };
  }

  setOptimizerState(s: { m: ArrayLike<number>; v: ArrayLike<number>; step: number }): void {
    if (!this.m || !this.v) throw new Error('setOptimizerState: this model was built for inference');
    upload(this.gpu, this.m.all, this.m.pack(s.m));
    upload(this.gpu, this.v.all, this.v.pack(s.v));
    this.step = s.step;
  }

  /** The EMA of the weights (models built with `ema`). */
  async getEma(): Promise<ParamSet<Float32Array>> {
    if (!this.ema) throw new Error('getEma: this model keeps no EMA of its weights');
    return new ParamSet(this.cfg, this.ema.unpack(await download(this.gpu, this.ema.all)));
  }

  setEma(params: ParamSet<Float32Array> | ParamSet<Float64Array>): void {
    if (!this.ema) throw new Error('setEma: this model keeps no EMA of its weights');
    upload(this.gpu, this.ema.all, this.ema.pack(params.flat));
  }

  /** Start the EMA at the current weights (a GPU copy, queued). */
  resetEma(): void {
    if (!this.ema) throw new Error('resetEma: this model keeps no EMA of its weights');
    const enc = this.gpu.device.createCommandEncoder();
    enc.copyBufferToBuffer(this.params.buffer, 0, this.ema.buffer, 0, this.params.all.size);
    this.gpu.queue.submit([enc.finish()]);
  }

  /**
   * Copy another model's weights (or its EMA) into this one's on the GPU, without a read-back: an
   * inference build evaluating a training build's weights. Both must be built for the same config.
   */
  copyParamsFrom(src: VimGpu, which: 'params' | 'ema' = 'params'): void {
    const from = which === 'ema' ? src.ema : src.params;
    if (!from) throw new Error('copyParamsFrom: the source model keeps no EMA of its weights');
    if (from.layout.total !== this.params.layout.total || !sameArchitecture(src.cfg, this.cfg)) {
      throw new Error(`copyParamsFrom: ${src.cfg.name} and ${this.cfg.name} have different parameter layouts`);
    }
    const enc = this.gpu.device.createCommandEncoder();
    enc.copyBufferToBuffer(from.buffer, 0, this.params.buffer, 0, this.params.all.size);
    this.gpu.queue.submit([enc.finish()]);
  }

  /**
   * Queue a batch: images (n, 3, H, W) u8 with n ≤ B (the rest of the batch is zero images, whose
   * outputs the caller ignores) and, for training, soft targets (n, C).
   */
  /** The drop-path factors (depth, B) of the next steps: block i's output for sample b × scales[i·B + b]. */
  setDropScales(scales: Float32Array): void {
    if (!this.dropScales) throw new Error('VimGpu.setDropScales: the model was built without dropPath');
    const { depth } = this.cfg;
    const B = this.B;
    const n = depth * B;
    if (scales.length !== n) throw new VimError(`expected ${n} drop-path factors (depth ${depth} × batch ${B}) but received ${scales.length}`);
    const rows = new Float32Array(depth * this.dropStride); // each block's row at its 256-byte boundary
    for (let i = 0; i < depth; i++) rows.set(scales.subarray(i * B, (i + 1) * B), i * this.dropStride);
    upload(this.gpu, this.dropScales, rows);
  }

  setBatch(images: Uint8Array, n: number, targets?: Float32Array): void {
    const { imgSize, C } = this.cfg;
    const per = 3 * imgSize * imgSize;
    if (!Number.isInteger(n) || n < 1) throw new VimError(`batch must hold at least one image; received ${n}`);
    if (n > this.B) {
      throw new VimError(`a batch of ${n} images is larger than the ${this.B} this model's buffers were sized for: build it with a larger batch size`);
    }
    if (images.length !== n * per) {
      throw new VimError(`expected ${n} images of 3×${imgSize}×${imgSize} bytes (${n * per} bytes) but received ${images.length} bytes`);
    }
    let bytes = images;
    if (n < this.B) {
      bytes = new Uint8Array(this.B * per);
      bytes.set(images);
    }
    uploadImages(this.gpu, this.images, bytes);
    if (targets) {
      if (targets.length !== n * C) throw new VimError(`expected targets of ${n}×${C} values but received ${targets.length}`);
      const full = n < this.B ? new Float32Array(this.B * C) : targets;
      if (full !== targets) full.set(targets);
      upload(this.gpu, this.targets, full);
    }
  }

  /** Run the forward pass on the queued batch and read the logits (B, C) back. */
  async forward(): Promise<Float32Array> {
    const enc = this.gpu.device.createCommandEncoder();
    encodeDispatches(enc, this.forwardList);
    this.gpu.queue.submit([enc.finish()]);
    return download(this.gpu, this.logits);
  }

  /** Forward, loss and backward (no update): gradients land in `grads`. Returns the mean loss. */
  async computeGradients(): Promise<number> {
    return (await this.submitStep(false, false)).loss;
  }

  /**
   * One training step on the queued batch: forward, loss, backward, gradient norm and clip scale,
   * AdamW and the EMA in one command encoder and one submit; only the loss comes back. Returns the
   * mean loss before the update.
   */
  async trainStep(h: OptimizerHyper): Promise<number> {
    return (await this.trainStepFull(h)).loss;
  }

  /**
   * trainStep that also reports the gradient norm and, with `logits`, the batch's logits (B, C),
   * all read back with the loss in one mapAsync. The submit happens before this returns its
   * promise, so the caller may queue the next batch (setBatch) and submit the next step before
   * awaiting it: two steps may be in flight (their read-backs take turns between two buffers), and
   * their results are those of the same steps one at a time, bit for bit.
   */
  trainStepFull(h: OptimizerHyper, opts: { logits?: boolean } = {}): Promise<StepResult> {
    if (!this.adamUniform || !this.clipUniform) throw new Error('trainStep: this model was built for inference');
    this.checkTurn(); // before the optimizer's uniforms are written
    const hyper: AdamwHyper = { ...h, step: this.step + 1 };
    writeAdamwUniform(this.gpu, this.adamUniform, hyper);
    const maxNorm = h.maxGradNorm ?? 0;
    if (maxNorm !== this.clipNorm) {
      writeClipUniform(this.gpu, this.clipUniform, maxNorm);
      this.clipNorm = maxNorm;
    }
    if (this.emaUniform) writeEmaUniform(this.gpu, this.emaUniform, h.emaDecay ?? 0.9999);
    const result = this.submitStep(true, opts.logits ?? false);
    this.step += 1;
    return result;
  }

  /** One training step's command buffer: every dispatch, then the copies the read-back needs (into read-back buffer `turn`). */
  private encodeStep(update: boolean, withLogits: boolean, turn: number): GPUCommandBuffer {
    const enc = this.gpu.device.createCommandEncoder();
    encodeDispatches(enc, [...this.forwardList, ...this.lossList, ...this.backwardList, ...(update ? this.optimizerList : [])]);
    const staging = this.stepStaging[turn];
    enc.copyBufferToBuffer(this.loss.buffer, this.loss.offset, staging, 0, 4);
    if (update) enc.copyBufferToBuffer(this.gradStats!.buffer, this.gradStats!.offset, staging, READBACK_STATS_OFFSET, 4 * GRAD_STATS_WORDS);
    if (withLogits) enc.copyBufferToBuffer(this.logits.buffer, this.logits.offset, staging, READBACK_LOGITS_OFFSET, this.logits.size);
    return enc.finish();
  }

  /** Throws where the next step's read-back buffer is still being read (a third step in flight). */
  private checkTurn(): void {
    if (this.stepStaging[this.stagingTurn].mapState !== 'unmapped') {
      throw new Error('VimGpu: at most two steps may be in flight; await the older one first');
    }
  }

  private submitStep(update: boolean, withLogits: boolean): Promise<StepResult> {
    if (!this.training) throw new Error('this model was built for inference');
    // Every step records the same commands (what changes between steps, the batch and the
    // optimizer's uniforms, goes through queue writes, which take effect in queue order), so the
    // next step's command buffer is recorded right after this one is submitted, while the GPU
    // works, instead of while it waits: about a thousand dispatches take milliseconds to record.
    // The read-back buffers take turns, so a caller may submit step t + 1 before it awaits step t's
    // result (the GPU then never waits for the CPU between steps); a third step in flight would
    // reuse a buffer that is still being read.
    const turn = this.stagingTurn;
    this.checkTurn();
    const key = `${update}|${withLogits}|${turn}`;
    const cb = this.nextStep?.key === key ? this.nextStep.cb : this.encodeStep(update, withLogits, turn);
    this.nextStep = null;
    this.gpu.queue.submit([cb]);
    this.stagingTurn = 1 - turn;
    this.nextStep = { key: `${update}|${withLogits}|${1 - turn}`, cb: this.encodeStep(update, withLogits, 1 - turn) };
    const staging = this.stepStaging[turn];
    const bytes = withLogits ? READBACK_LOGITS_OFFSET + this.logits.size : READBACK_LOGITS_OFFSET;
    return mapRead(this.gpu, staging, 'training step').then(() => {
      const words = new Float32Array(staging.getMappedRange(0, bytes).slice(0));
      staging.unmap();
      const s = READBACK_STATS_OFFSET / 4;
      return {
        loss: words[0],
        gradNorm: update ? words[s] : NaN,
        clipScale: update ? words[s + 1] : 1,
        skipped: update ? words[s + 2] !== 0 : false,
        logits: withLogits ? words.slice(READBACK_LOGITS_OFFSET / 4) : undefined,
      };
    });
  }

  destroy(): void {
    this.arena.destroy();
    for (const f of [this.params, this.grads, this.m, this.v, this.ema]) f?.buffer.destroy();
    for (const b of this.stepStaging) b.destroy();
    this.adamUniform?.destroy();
    this.clipUniform?.destroy();
    this.emaUniform?.destroy();
  }
}
