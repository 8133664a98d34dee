/**
 * The selective scan of one Mamba direction on the GPU (kernels/selective-scan.wgsl), with the
 * softplus of Δ, the D skip, the SiLU(z) gate and the direction's reversal of z fused in.
 *
 *   selectiveScanForward:  out (B, L, E) ← u, delta_raw (B, L, E), dt_bias (E), A_log (E, N),
 *                          xdbl (B, L, R+2N) [B_t, C_t columns], Dskip (E), xz (B, L, 2E) [z half]
 *   selectiveScanBackward: du, ddelta_raw (B, L, E), the z half of dxz (B, L, 2E), the B/C columns
 *                          of dxdbl (B, L, R+2N), dA_log (E, N), dDskip (E), ddt_bias (E) ← dout
 *
 * u, delta_raw, B_t, C_t, out, dout, du, ddelta_raw are in direction order; z and dz are in the
 * original token order (with `reverse`, step t uses token L−1−t). The backward is two
 * dispatches: the scan itself, which writes partials of [dB | dC] (one per workgroup, or per
 * subgroup) and one of (dA_log, dD, dbias) per sample into caller-owned scratch (sizes from
 * `selectiveScanScratch`), then one small pass that adds both kinds of partials in a fixed order
 * (no float atomics). The scan has three forms, 'segmented', 'stream' and 'split' (ScanTuning.kernel;
 * scanTuning(gpu) picks the one measured fastest for the adapter, docs/performance.md changes 9
 * and 20).
 * The forward can take dt_proj's weight instead of Δraw and compute Δraw itself (dtWeight).
 *
 * The combine of the two directions (combine.ts) can be fused into both: the forward's `combine`
 * adds this direction's output into the other's, already in `out`, at the original tokens (· 0.5,
 * · the drop-path factor), and the backward's `doutCombined` reads the combined output's gradient
 * in original order (· 0.5, · the factor) as its dout. The model does both by default: per block
 * no combine dispatches, no y_b, dy_f, dy_b buffers.
 */
import { VimError } from '../../errors.js';
import { fixedSubgroupSize, type Gpu } from '../device.js';
import { ceilDiv, makeDispatch, type Dispatch } from '../kernels.js';
import { align, createTensor, type GpuTensor } from '../tensor.js';
import { checkPositive, need, workgroupGrid } from './reduce.js';
import { checkCombineScale, type CombineScale } from './combine.js';

/** Largest state size the kernels hold (NVMAX = 8 vec4 of states). */
export const SCAN_MAX_N = 32;
/** Channels per workgroup of the forward by default. */
export const SCAN_FORWARD_WORKGROUP = 128;
/** Channels per workgroup of the backward by default (fewer where workgroup memory is short). */
export const SCAN_BACKWARD_WORKGROUP = 64;
/**
 * Tokens of B_t, C_t the forward stages at once by default: a small staging buffer keeps more
 * workgroups resident (on an H200, 16 tokens ran 1.4× faster than all 65).
 */
export const SCAN_FORWARD_CHUNK = 16;
/** Tokens whose inputs the forward loads ahead by default (two alternating slots; docs/performance.md change 37). */
export const SCAN_FORWARD_AHEAD = 2;
/** Most tokens the forward loads ahead (FAMAX in the kernel). */
export const SCAN_FORWARD_MAX_AHEAD = 8;

/** An environment switch, 0 or 1, where set (checked). */
function envSwitch(name: string): boolean | undefined {
  const v = process.env[name];
  if (v === '0' || v === '1') return v === '1';
  if (v !== undefined && v !== '') throw new VimError(`${name} must be 0 or 1; it is '${v}'`);
  return undefined;
}

/**
 * The forward's tuning from the environment, for measurements in the whole model:
 * $VIM_SCAN_FORWARD_CHUNK (tokens of B_t, C_t staged at once), $VIM_SCAN_FORWARD_AHEAD (tokens
 * whose inputs are loaded ahead, 1…8) and $VIM_SCAN_EXP2 (the decay as exp2), each pinned where set;
 * $VIM_SCAN_FORWARD_DIAG (ScanTuning.forwardDiag) for timing experiments only.
 */
export function scanForwardTuningFromEnv(): Pick<ScanTuning, 'chunk' | 'ahead' | 'exp2' | 'forwardDiag'> {
  const out: Pick<ScanTuning, 'chunk' | 'ahead' | 'exp2' | 'forwardDiag'> = {};
  const fd = envPositiveInt('VIM_SCAN_FORWARD_DIAG', 4095);
  if (fd !== undefined) {
    if ((fd & 63) !== 0) throw new VimError(`VIM_SCAN_FORWARD_DIAG takes the bits 64 … 2048; it is '${fd}'`);
    out.forwardDiag = fd;
  }
  const x2 = envSwitch('VIM_SCAN_EXP2');
  if (x2 !== undefined) out.exp2 = x2;
  const chunk = envPositiveInt('VIM_SCAN_FORWARD_CHUNK', 4096);
  const ahead = envPositiveInt('VIM_SCAN_FORWARD_AHEAD', SCAN_FORWARD_MAX_AHEAD);
  if (chunk !== undefined) out.chunk = chunk;
  if (ahead !== undefined) out.ahead = ahead;
  return out;
}

export interface ScanShape {
  B: number;
  L: number;
  E: number;
  N: number;
  /** Δ rank: B_t starts at column R of xdbl, whose rows hold R + 2N values. */
  R: number;
}

export interface ScanTuning {
  /**
   * Channels (invocations) per workgroup (default: 128 forward; backward 64 or what fits). The
   * 'split' backward: invocations per workgroup, covering workgroupSize / split channels (default:
   * with one lane a channel 192 where 192 divides E, else 128; with more, 256).
   */
  workgroupSize?: number;
  /**
   * Backward: tokens per recomputed segment (default: max(3, ⌈√L / 3⌉), less where memory is short;
   * 'split': 1…4, default 4).
   */
  segment?: number;
  /**
   * Forward: tokens of B_t, C_t staged in workgroup memory at once (default 16, or
   * $VIM_SCAN_FORWARD_CHUNK).
   */
  chunk?: number;
  /**
   * Forward: tokens whose u, Δraw and z are loaded ahead of the token computed, 1…8 (default 2, or
   * $VIM_SCAN_FORWARD_AHEAD; docs/performance.md, change 28). At 2 the tokens are taken two at a
   * time, each from its own slot (change 37); otherwise the slots move down one each token.
   */
  ahead?: number;
  /**
   * Forward and backward 'split': the decay exp(Δ A) as exp2(Δ · A log2(e)), with A held scaled by
   * log2(e), or $VIM_SCAN_EXP2 = 0 or 1 where set. Default: the backward false, and the forward true
   * where it keeps nothing for a backward (no checkpoints, no Δraw written: inference), so that a
   * training forward and the backward that recomputes its states round alike (on an H200 exp2 made
   * the inference forward 10% faster and the backward 1% slower; docs/performance.md, change 28).
   * scanTuning(gpu) sets it on a GPU, and the model passes it to its training forward too: with the
   * fold2 walk the backward is 0.15 ms a step faster with it and the training forward 0.09 (change 35).
   */
  exp2?: boolean;
  /**
   * Backward: tokens whose inputs are loaded together, all loads in flight before the first use
   * (1…8; default 8 on a GPU, 4 for the stream form, 1 on a CPU adapter, where the unrolled loops
   * only cost compile time). The stream form loads pass 1 in such blocks, the next block while it
   * computes this one.
   */
  tokenBlock?: number;
  /**
   * For timing experiments only (scripts/bench/scan.mjs, $VIM_SCAN_DIAG): bits that skip parts of
   * the backward, whose results are then wrong: 1 the per-token channel reduction, 2 pass 1, 4 the
   * recomputation, 8 the gC half of the split backward's channel reduction, 16 dz's accumulation
   * (written instead), 32 the split backward's reversal of z and dout; in the split backward also 64
   * the decay taken as 1 + x (no exponential) and 128 softplus and sigmoid as cheap stand-ins.
   */
  diag?: number;
  /**
   * For timing experiments only ($VIM_SCAN_FORWARD_DIAG): the forward's bits, results then wrong:
   * 64 the decay as 1 + x, 128 softplus and sigmoid as cheap stand-ins, 256 no checkpoints stored,
   * 512 no Δraw stored, 1024 Δraw as one staged dt_low value (no dot product with dt_proj's weight),
   * 2048 B_t, C_t (and dt_low) staged for the first chunk of tokens only.
   */
  forwardDiag?: number;
  /**
   * Backward: 'segmented' (selective_scan_backward) or 'stream' (selective_scan_backward_stream:
   * the sample's B, C staged once, pass 1 streamed, each segment's inputs loaded one segment
   * ahead). Default: scanKernelDefault() ('segmented' here; scanTuning(gpu) chooses by adapter).
   * 'stream' falls back to 'segmented' where the sample's B, C do not fit workgroup memory (unless
   * pinned). 'split' (selective_scan_backward_split: the stream form with each channel's states
   * split over `split` lanes and the segment's states in registers) falls back to 'stream' where
   * it cannot run (no subgroups, states that do not split into `split` lanes, B, C beyond
   * workgroup memory, checkpoints beyond maxCheckpointBytes).
   */
  kernel?: ScanBackwardKernel;
  /**
   * Backward 'split': lanes per channel (1, 2 or 4), each holding ⌈N/4⌉ / split of the channel's
   * state vec4 (default 1: on an H200 two and four lanes a channel ran slower, docs/performance.md
   * change 20).
   */
  split?: number;
  /**
   * Backward 'stream': the adapter's subgroup size, for per-token sums over channels by shuffles
   * (no barriers); 0 or absent: through workgroup memory. 'split' needs it (0 or absent: 'stream'
   * serves). scanTuning(gpu) gives the adapter's.
   */
  subgroupSize?: number;
  /**
   * Backward 'stream' and 'split': load each segment's inputs one segment ahead (default: true for
   * 'stream'; false for 'split', whose backward took 14.9 ms a step with it off against 15.5 with
   * it on, vim-tiny at batch 256 on an H200, docs/performance.md change 26).
   */
  lookahead?: boolean;
  /**
   * Backward 'split': per-lane arrays held in workgroup memory instead of registers, each lane its
   * own slots: 'A' (the channel's −exp(A_log)), 'gA' (the dA_log sums) and 'carry' (a_{t+1} ⊙
   * gh_{t+1}), ⌈N/4⌉/split vec4 a lane each; 'states', the segment's recomputed states after its
   * first token, (S − 1)·⌈N/4⌉/split vec4 a lane. Fewer registers an invocation, more workgroup
   * memory (default: none).
   */
  laneMemory?: readonly ScanLaneArray[];
  /**
   * Backward 'split': forms of the walk (default: SCAN_WALK_DEFAULT, ['lean', 'fold2']; [] for the plain
   * walk), each fewer operations a state and token:
   * 'lean' sums gh ⊙ a_t ⊙ h_{t−1} once for both dΔ and dA_log and takes dΔ's u_t B_t term from the
   * du sum (the same sums, rounded in another order); 'keep-a' keeps a_t = exp(Δ_t A) from the
   * segment's recomputation for the walk (one exp fewer, S·⌈N/4⌉/split vec4 more registers);
   * 'fold' takes the first exchange of each token's [dB | dC] sum inside the walk, as each state
   * vec4's items are computed, so half as many items are live across it (the same exchanges and
   * adds: the same results); 'fold2' (implies 'fold') takes the second exchange there too, as soon
   * as both of its items are made (the same results).
   */
  walk?: readonly ScanWalkForm[];
  /**
   * Backward 'split': the segment's recomputation and walk written out once per token, so that
   * every per-token array is indexed by constants and can stay in registers (default: with two or
   * more lanes a channel), or as loops over the segment's tokens, where the compiler may keep those
   * arrays in local memory (default with one lane a channel; docs/performance.md, change 28).
   */
  unroll?: boolean;
  /**
   * Backward 'split': each segment's [dB | dC] rows summed over the workgroup's subgroups in
   * workgroup memory, so one partial row a workgroup and token goes to the reduction instead of
   * one a subgroup (default false, or $VIM_SCAN_WGSUM = 0 or 1: on an H200 it took 0.3 ms off
   * the reduction and added 0.5–0.7 ms to the backward, docs/performance.md change 28).
   */
  groupSums?: boolean;
  /**
   * Backward 'split' with one lane a channel: where each [dB | dC] item's group of lanes is 4 or
   * more (N = 16 on subgroups of 32), the halving exchanges go on inside each item's vec4 until every
   * lane holds one column of the token's partial row, and the lanes store the row together: the
   * same sums in the same order, so the same results (default true, or $VIM_SCAN_SCALAR_SUMS = 0 or 1).
   */
  scalarSums?: boolean;
  /**
   * Backward 'stream', where neither workgroupSize nor segment is given: try the wide geometry
   * first (segments of one token on 192 channels a workgroup where that divides E, else on 128:
   * SCAN_STREAM_WIDE_LARGE, SCAN_STREAM_WIDE), kept where its workgroup memory is within 32 KiB and
   * its checkpoints within maxCheckpointBytes. scanTuning(gpu) sets it on a GPU, where it measured
   * fastest (docs/performance.md, changes 14 and 18).
   */
  wide?: boolean;
  /** Most bytes of state checkpoints the wide geometry may use (one storage binding); default: no bound. */
  maxCheckpointBytes?: number;
  /**
   * Backward 'stream': the workgroup memory it may use where the sample's B, C are too long for the
   * portable 32 KiB (the adapter's limit; scanTuning(gpu) sets it). Shapes that fit 32 KiB are
   * planned within 32 KiB whatever this is. Default: 32 KiB.
   */
  maxWorkgroupBytes?: number;
}

export type ScanBackwardKernel = 'segmented' | 'stream' | 'split';

/** The split backward's per-lane arrays that ScanTuning.laneMemory can move to workgroup memory, in LANE_MEM's bit order. */
export const SCAN_LANE_ARRAYS = ['A', 'gA', 'carry', 'states'] as const;
export type ScanLaneArray = (typeof SCAN_LANE_ARRAYS)[number];

/** The split backward's forms of the walk (ScanTuning.walk), in WALK's bit order. */
export const SCAN_WALK_FORMS = ['lean', 'keep-a', 'fold', 'fold2'] as const;
export type ScanWalkForm = (typeof SCAN_WALK_FORMS)[number];

/**
 * The split backward's walk where a call names none: 'lean' (on an H200 0.2–0.3 ms a step faster,
 * docs/performance.md measurement 10 and change 28) and 'fold2' (with the sums carried down to one
 * column a lane, 10.2 ms a step against 11.2; change 35).
 */
export const SCAN_WALK_DEFAULT: readonly ScanWalkForm[] = ['lean', 'fold2'];

/** Bits of a pipeline constant for a list of names (bit k: allowed[k]), checked; `what` names the option. */
function nameBits(where: string, what: string, allowed: readonly string[], list: readonly string[] | undefined): number {
  let bits = 0;
  for (const a of list ?? []) {
    const k = allowed.indexOf(a);
    if (k < 0) throw new Error(`${where}: ${what} entries must be ${allowed.join(', ')}; received '${a}'`);
    bits |= 1 << k;
  }
  return bits;
}

/** A comma list of names from the environment variable `name` (each one of `allowed`); undefined where unset, empty or 'none'. */
function envNameList<T extends string>(name: string, allowed: readonly T[], none?: T[]): T[] | undefined {
  const v = process.env[name];
  if (v === 'none') return none;
  if (v === undefined || v === '') return undefined;
  const list = v.split(',').map((x) => x.trim()).filter(Boolean);
  if (!list.every((x) => (allowed as readonly string[]).includes(x))) {
    throw new VimError(`${name} must be a comma list of ${allowed.join(', ')} (or none); it is '${v}'`);
  }
  return list as T[];
}

function bitCount(v: number): number {
  let c = 0;
  for (; v; v &= v - 1) c++;
  return c;
}

/**
 * The backward kernel when a call does not choose one: $VIM_SCAN_KERNEL where set; else, for an
 * adapter, 'stream' on a CPU adapter or with Dawn's robustness off (the default on a GPU, see
 * GPU_DEFAULT_TOGGLES), where it measured faster, and 'segmented' on a GPU with robustness on,
 * where 'stream' measured slower (docs/performance.md, change 9); without an adapter, 'segmented'.
 * On a GPU with robustness off, 'split' (one lane a channel, segments of 4 tokens in registers),
 * which measured faster than 'stream' there (change 20); 'stream' serves where it cannot run.
 */
export function scanKernelDefault(gpu?: Gpu): ScanBackwardKernel {
  const v = process.env.VIM_SCAN_KERNEL;
  if (v === 'segmented' || v === 'stream' || v === 'split') return v;
  if (v !== undefined && v !== '') throw new VimError(`VIM_SCAN_KERNEL must be 'segmented', 'stream' or 'split'; it is '${v}'`);
  if (!gpu) return 'segmented';
  if (gpu.info.isCpu) return 'stream';
  return gpu.toggles.includes('disable_robustness') ? 'split' : 'segmented';
}

/** The subgroup size the scan's shuffle sums may rely on (fixedSubgroupSize). */
export function scanSubgroupSize(gpu: Gpu): number {
  return fixedSubgroupSize(gpu);
}

/** A positive integer from the environment variable `name`, or undefined where it is unset or empty. */
function envPositiveInt(name: string, max: number): number | undefined {
  const v = process.env[name];
  if (v === undefined || v === '') return undefined;
  const n = Number(v);
  if (!/^[0-9]+$/.test(v.trim()) || !Number.isInteger(n) || n < 1 || n > max) {
    throw new VimError(`${name} must be an integer in 1…${max}; it is '${v}'`);
  }
  return n;
}

/**
 * The partials' reduction's workgroup (selective_scan_reduce): parameter outputs a workgroup
 * (RP_COLS) and batch lanes an output (RP_LANES), RP_COLS · RP_LANES invocations: 32 × 32 where the
 * adapter allows 1024 invocations a workgroup (on an H200 8% faster than 16 × 16, docs/performance.md
 * change 30), else 16 × 16; or $VIM_SCAN_REDUCE_PARAMS as COLSxLANES (powers of
 * two whose product is 64 or more and within the adapter's limit).
 */
export function reduceParamsGeometry(gpu: Gpu): [number, number] {
  const most = gpu.limits.maxComputeInvocationsPerWorkgroup;
  const v = process.env.VIM_SCAN_REDUCE_PARAMS;
  if (v === undefined || v === '') return most >= 1024 ? [32, 32] : [16, 16];
  const m = /^([0-9]+)x([0-9]+)$/.exec(v.trim());
  const pow2 = (n: number): boolean => n >= 1 && (n & (n - 1)) === 0;
  if (m) {
    const c = Number(m[1]);
    const l = Number(m[2]);
    if (pow2(c) && pow2(l) && c * l >= 64 && c * l <= Math.min(most, 1024)) return [c, l];
  }
  throw new VimError(`VIM_SCAN_REDUCE_PARAMS must be COLSxLANES, powers of two whose product is 64…${Math.min(most, 1024)} (such as 16x16); it is '${v}'`);
}

/** What scanTuningFromEnv can pin. */
export type ScanEnvTuning = Pick<ScanTuning, 'workgroupSize' | 'segment' | 'split' | 'lookahead' | 'laneMemory' | 'walk' | 'unroll' | 'exp2' | 'groupSums' | 'scalarSums' | 'diag'>;

/**
 * The backward's tuning from the environment, for measurements in the whole model:
 * $VIM_SCAN_WORKGROUP (channels per workgroup; for 'split' invocations), $VIM_SCAN_SEGMENT
 * (tokens per segment), $VIM_SCAN_SPLIT ('split': lanes per channel, 1, 2 or 4),
 * $VIM_SCAN_LOOKAHEAD (0 or 1), $VIM_SCAN_LANE_MEMORY and $VIM_SCAN_WALK ('split': comma lists of
 * ScanTuning.laneMemory's and .walk's names), each pinned where set; where unset, the plan and the
 * kernel's defaults choose (selectiveScanBackwardPlan). $VIM_SCAN_DIAG (1…255, ScanTuning.diag) skips
 * parts of the backward to time the rest: its gradients are then wrong, so it is for bench-vim only.
 */
export function scanTuningFromEnv(): ScanEnvTuning {
  const out: ScanEnvTuning = {};
  const walk = envNameList('VIM_SCAN_WALK', SCAN_WALK_FORMS, []); // 'none': the plain walk
  if (walk) out.walk = walk;
  const switches = [['VIM_SCAN_LOOKAHEAD', 'lookahead'], ['VIM_SCAN_EXP2', 'exp2'], ['VIM_SCAN_WGSUM', 'groupSums'], ['VIM_SCAN_UNROLL', 'unroll'],
    ['VIM_SCAN_SCALAR_SUMS', 'scalarSums']] as const;
  for (const [name, key] of switches) {
    const v = envSwitch(name);
    if (v !== undefined) out[key] = v;
  }
  const lm = envNameList('VIM_SCAN_LANE_MEMORY', SCAN_LANE_ARRAYS);
  if (lm) out.laneMemory = lm;
  const wg = envPositiveInt('VIM_SCAN_WORKGROUP', 1024);
  const seg = envPositiveInt('VIM_SCAN_SEGMENT', 1024);
  const split = envPositiveInt('VIM_SCAN_SPLIT', 4);
  if (split !== undefined && !SCAN_SPLIT_LANES.includes(split)) {
    throw new VimError(`VIM_SCAN_SPLIT must be 1, 2 or 4; it is '${process.env.VIM_SCAN_SPLIT}'`);
  }
  if (wg !== undefined) out.workgroupSize = wg;
  if (seg !== undefined) out.segment = seg;
  if (split !== undefined) out.split = split;
  const diag = envPositiveInt('VIM_SCAN_DIAG', 255);
  if (diag !== undefined) out.diag = diag;
  return out;
}

/**
 * The scan's tuning for an adapter: its subgroup size, the default backward kernel, on a GPU the
 * stream backward's wide geometry (within the adapter's storage binding) and the decay as exp2, and
 * what the environment pins (scanTuningFromEnv), which takes precedence.
 */
export function scanTuning(gpu: Gpu): ScanTuning {
  return {
    subgroupSize: scanSubgroupSize(gpu), kernel: scanKernelDefault(gpu), ...(gpu.info.isCpu ? {} : { exp2: true }),
    wide: !gpu.info.isCpu, maxCheckpointBytes: gpu.limits.maxStorageBufferBindingSize,
    maxWorkgroupBytes: gpu.limits.maxComputeWorkgroupStorageSize,
    ...scanTuningFromEnv(),
  };
}

/**
 * WGSL every pipeline of kernels/selective-scan.wgsl is built with: the state arrays' sizes for N
 * (NVMAX, SPLIT_ITEMS), and sg_shuffle_xor as the
 * subgroup shuffle where the stream backward sums by shuffles (`sgr` > 0), else as the identity
 * (no kernel calls it then), so that the file compiles without the subgroups feature.
 */
function scanPrelude(sgr: number, N: number): string {
  // the state arrays' size: ⌈N/4⌉ vec4 rounded up to a power of two (the stream backward's shuffle
  // items), so that a shape's pipelines hold no more than it needs (docs/performance.md, change 29)
  const nvmax = shuffleItems(N);
  const sizes = `const NVMAX = ${nvmax}u;\nconst SPLIT_ITEMS = ${2 * nvmax}u;\n`;
  return sgr > 0 // (an enable directive comes before any declaration)
    ? `enable subgroups;\n${sizes}fn sg_shuffle_xor(v: vec4<f32>, m: u32) -> vec4<f32> { return subgroupShuffleXor(v, m); }\n` +
      'fn sg_shuffle_xor2(v: vec2<f32>, m: u32) -> vec2<f32> { return subgroupShuffleXor(v, m); }\n' +
      'fn sg_shuffle_xor1(v: f32, m: u32) -> f32 { return subgroupShuffleXor(v, m); }\n'
    : `${sizes}fn sg_shuffle_xor(v: vec4<f32>, m: u32) -> vec4<f32> { return v; }\n` +
      'fn sg_shuffle_xor2(v: vec2<f32>, m: u32) -> vec2<f32> { return v; }\nfn sg_shuffle_xor1(v: f32, m: u32) -> f32 { return v; }\n';
}

/** The backward's geometry: channels per workgroup, segment length, segments, workgroups per sample. */
export interface ScanBackwardPlan {
  kernel: ScanBackwardKernel;
  /** Invocations per workgroup: channels, or for 'split' channels × split. */
  workgroupSize: number;
  segment: number;
  segments: number;
  workgroupsPerSample: number;
  /** 'stream', 'split': the subgroup size of its shuffle sums (0: through workgroup memory). */
  subgroupSize: number;
  /** 'split' only: lanes per channel. */
  split?: number;
  /** 'split' only: the subgroups' [dB | dC] rows summed in workgroup memory (ScanTuning.groupSums). */
  groupSums?: boolean;
  /** 'split' only: the [dB | dC] sums carried down to one column a lane (ScanTuning.scalarSums, where it applies). */
  scalarSums?: boolean;
  /** Rows of [dB | dC] partials per sample: one per workgroup, or per subgroup with shuffle sums. */
  partialsPerSample: number;
  /** Bytes of workgroup memory one workgroup of the backward uses. */
  workgroupBytes: number;
}

export interface ScanScratchSizes {
  /**
   * (B, NWG, L, 2N) per-workgroup partial sums over channels of [dB_t | dC_t], then from the next
   * 256-byte boundary the checkpoints (B, NSEG−1, 4·⌈N/4⌉, E): the states entering segments 1…NSEG−1.
   */
  bcPartials: number;
  /** (B, N+2, E): per-sample partials of dA_log, dDskip, ddt_bias. */
  paramPartials: number;
}

function checkShape(where: string, s: ScanShape): void {
  checkPositive(where, { B: s.B, L: s.L, E: s.E, N: s.N });
  if (!Number.isInteger(s.R) || s.R < 0) throw new Error(`${where}: expected a non-negative integer for R but received ${s.R}`);
  if (s.N > SCAN_MAX_N) throw new Error(`${where}: N = ${s.N} exceeds the largest supported state size ${SCAN_MAX_N}`);
}

function checkWorkgroup(where: string, gpu: Gpu, wg: number): void {
  if (!Number.isInteger(wg) || wg < 1 || wg > gpu.limits.maxComputeInvocationsPerWorkgroup) {
    throw new Error(`${where}: workgroupSize must be an integer in 1…${gpu.limits.maxComputeInvocationsPerWorkgroup}; received ${wg}`);
  }
}

/** Most tokens whose inputs the backward loads together (KBMAX in the kernel). */
const SCAN_TOKEN_BLOCK = 8;
/**
 * The stream form's pass-1 block on a GPU by default: on an H200 its backward took 712 µs a
 * dispatch with one token ahead, 642 with blocks of 8 and 612 with blocks of 4 (docs/performance.md, change 13).
 */
const SCAN_STREAM_TOKEN_BLOCK = 4;

function backwardBytes(N: number, wg: number, S: number): number {
  const NV = Math.ceil(N / 4);
  return 16 * (Math.max(S, SCAN_TOKEN_BLOCK) * 2 * NV + S * NV * wg + wg * (2 * NV + 1));
}

/** Longest segment of the stream backward (SMAX in the kernel). */
const SCAN_STREAM_MAX_SEGMENT = 8;
/** Segment of the stream backward by default. */
const SCAN_STREAM_SEGMENT = 3;
/**
 * The stream backward's wide geometry (ScanTuning.wide, the GPU default): 128 channels a workgroup
 * stage the sample's B, C once for twice the channels, and one-token segments keep no segment
 * states in workgroup memory; the price is a checkpoint per token, B·(L−1)·4⌈N/4⌉·E floats (403 MB
 * for vim-tiny at batch 256). On an H200 the backward took 26 ms a step against 34 for 64 channels
 * and segments of 3 (docs/performance.md, change 14); on a CPU adapter it is slower.
 */
export const SCAN_STREAM_WIDE = { workgroupSize: 128, segment: 1 } as const;
/**
 * The wide geometry's larger workgroup, taken first where it divides E (no idle channels): the
 * sample's B, C staged once for 192 channels, half the workgroups of a sample where E = 384. On an
 * H200 vim-tiny's backward took 20.6–21.4 ms a step against 25.6–25.7 for 128 channels
 * (docs/performance.md, change 18). There the time grows in steps with the workgroups per SM, so
 * fewer, larger workgroups pay; where 192 would leave channels idle (E = 256), 128 serves.
 */
export const SCAN_STREAM_WIDE_LARGE = 192;

/** The wide geometry's workgroups to try, in order, for E channels. */
function wideWorkgroups(E: number): number[] {
  return E % SCAN_STREAM_WIDE_LARGE === 0 ? [SCAN_STREAM_WIDE_LARGE, SCAN_STREAM_WIDE.workgroupSize] : [SCAN_STREAM_WIDE.workgroupSize];
}

/** vec4 rows of the stream backward's s_h: the states of a segment's first S−1 tokens (at least one row). */
function streamStateRows(N: number, wg: number, S: number): number {
  return Math.max(1, (S - 1) * Math.ceil(N / 4) * wg);
}

/** Workgroup memory of the stream backward: all L tokens' B, C, the segment's states, s_red. */
function streamBytes(L: number, N: number, wg: number, S: number, sgr: number): number {
  const NV = Math.ceil(N / 4);
  return 16 * (L * 2 * NV + streamStateRows(N, wg, S) + (sgr > 0 ? 1 : wg * (2 * NV + 1)));
}

/**
 * The items of a shuffle sum, the state vec4 a lane holds (NV / lanes) rounded up to a power of two:
 * the stream backward's QP (one lane a channel), the split backward's QS.
 */
function shuffleItems(N: number, lanes = 1): number {
  let q = 1;
  while (q < Math.ceil(N / 4) / lanes) q *= 2;
  return q;
}

/** Lanes per channel the split backward takes (ScanTuning.split). */
const SCAN_SPLIT_LANES: readonly number[] = [4, 2, 1];
/**
 * Lanes per channel of the split backward by default: one. On an H200 (vim-tiny, batch 256), two
 * and four lanes a channel took 21.5–40 ms a step against 17–19 for one (docs/performance.md,
 * change 20).
 */
const SCAN_SPLIT_DEFAULT_LANES = 1;
/** Longest segment of the split backward (SPLIT_SMAX in the kernel): its states stay in registers. */
const SCAN_SPLIT_MAX_SEGMENT = 4;
/**
 * Segment of the split backward by default: the longest. On an H200 one lane a channel took 20.6,
 * 19.1, 17.2 and 17.0 ms a step with segments of 1, 2, 3 and 4 tokens (change 20): a quarter of
 * the checkpoints of one-token segments for three more state arrays in registers.
 */
const SCAN_SPLIT_SEGMENT = 4;
/** Invocations per workgroup of the split backward by default with several lanes a channel. */
const SCAN_SPLIT_WORKGROUP = 256;

/** Whether the split backward sums gB and gC in one shuffle sum of 2·QS items (BCJ): they fit the subgroup's lanes. */
function joinedSums(N: number, P: number, sgr: number): boolean {
  return 2 * shuffleItems(N, P) <= sgr / P;
}

/**
 * Whether the split backward can hold N states on P lanes a channel with subgroups of `sgr`: P
 * divides ⌈N/4⌉, a subgroup holds whole channels, and its sums over channels have a lane for each item.
 */
function splitFits(N: number, P: number, sgr: number): boolean {
  return sgr >= P && Math.ceil(N / 4) % P === 0 && shuffleItems(N, P) <= sgr / P;
}

/**
 * Workgroup memory of the split backward: all L tokens' B, C (the segment's states stay in
 * registers), and the per-lane arrays of `laneArrays` (⌈N/4⌉/P vec4 a lane each).
 */
function splitBytes(L: number, N: number, wg: number, P: number, laneBits: number, S: number): number {
  return 16 * (L * 2 * Math.ceil(N / 4) + laneMemoryRows(N, wg, P, laneBits, S));
}

/**
 * vec4 rows of the split backward's s_lm for the arrays of `laneBits` (LANE_MEM): ⌈N/4⌉/P vec4 for
 * each of `wg` lanes an array, and with 'states' S − 1 such arrays (a segment of S tokens).
 */
function laneMemoryRows(N: number, wg: number, P: number, laneBits: number, S: number): number {
  return (bitCount(laneBits & 7) + ((laneBits & 8) ? S - 1 : 0)) * (Math.ceil(N / 4) / P) * wg;
}

/** Workgroup memory the backward's default plan stays within (what lavapipe and most GPUs offer). */
export const SCAN_BACKWARD_WORKGROUP_BYTES = 32768;
/** Byte alignment of the checkpoint region inside the bcPartials scratch (any adapter's offset alignment). */
const REGION_ALIGN = 256;

/**
 * Tokens per backward segment by default: short (3 at L = 65). Each workgroup keeps its segment's
 * states in workgroup memory, and on an H200 through Dawn that memory, not the checkpoint traffic,
 * limits how many workgroups run at once: segments of 2–3 tokens ran 1.6× faster than ⌈√L⌉ = 9 tokens
 * despite 2.6× the checkpoints. Longer sequences get longer segments so the checkpoints (one
 * state per segment and channel) stay within about 3·√L per channel.
 */
function defaultSegment(L: number): number {
  return Math.max(3, Math.ceil(Math.sqrt(L) / 3));
}

/**
 * The backward's geometry, from the shape alone (so scratch can be sized before a device
 * exists): 64 channels per workgroup and segments of defaultSegment(L) tokens, shortened until
 * the workgroup's memory (16·(max(S, 8)·2NV + S·NV·WG + WG·(2NV + 1)) bytes, NV = ⌈N/4⌉) is within 32 KiB,
 * then fewer channels. `tuning` pins either. The stream and split forms: streamPlan, splitPlan.
 */
export function selectiveScanBackwardPlan(s: ScanShape, tuning: ScanTuning = {}): ScanBackwardPlan {
  const where = 'selectiveScanBackward';
  checkShape(where, s);
  const kernel = tuning.kernel ?? scanKernelDefault();
  if (kernel !== 'segmented' && kernel !== 'stream' && kernel !== 'split') {
    throw new Error(`${where}: kernel must be 'segmented', 'stream' or 'split'; received ${String(kernel)}`);
  }
  if (kernel === 'split') {
    const p = splitPlan(s, tuning);
    if (p) return p;
  }
  if (kernel === 'stream' || kernel === 'split') {
    const p = streamPlan(s, tuning);
    if (p) return p;
  }
  const wgs = tuning.workgroupSize !== undefined ? [tuning.workgroupSize] : [SCAN_BACKWARD_WORKGROUP, 32, 16, 8, 4, 2, 1];
  const S0 = Math.min(s.L, tuning.segment ?? defaultSegment(s.L));
  if (!Number.isInteger(S0) || S0 < 1) throw new Error(`${where}: segment must be a positive integer; received ${tuning.segment}`);
  const Smin = tuning.segment !== undefined ? S0 : 1;
  let best: ScanBackwardPlan | null = null;
  for (const wg of wgs) {
    if (!Number.isInteger(wg) || wg < 1) throw new Error(`${where}: workgroupSize must be a positive integer; received ${wg}`);
    for (let S = S0; S >= Smin; S--) {
      const bytes = backwardBytes(s.N, wg, S);
      const nwg = ceilDiv(s.E, wg);
      best = {
        kernel: 'segmented', workgroupSize: wg, segment: S, segments: ceilDiv(s.L, S), workgroupsPerSample: nwg,
        subgroupSize: 0, partialsPerSample: nwg, workgroupBytes: bytes,
      };
      if (bytes <= SCAN_BACKWARD_WORKGROUP_BYTES) return best;
    }
  }
  return best as ScanBackwardPlan; // pinned by tuning beyond the default budget: the adapter decides
}

/** A plan in words, for bench-vim's header: the kernel and its geometry. */
export function describeScanBackwardPlan(p: ScanBackwardPlan): string {
  const sums = (p.subgroupSize > 0 ? `sums over channels by shuffles in subgroups of ${p.subgroupSize}` : 'sums over channels through workgroup memory') +
    (p.scalarSums ? ' down to one column a lane' : '') + (p.groupSums ? ', then over the workgroup\'s subgroups' : '');
  const lanes = p.kernel === 'split' ? `${p.split ?? 1} lane${(p.split ?? 1) > 1 ? 's' : ''} a channel, ` : '';
  return `${p.kernel} (${lanes}${p.workgroupSize} invocations a workgroup, segments of ${p.segment} token${p.segment > 1 ? 's' : ''}, ` +
    `${p.workgroupBytes} bytes of workgroup memory, ${sums})`;
}

/** tuning.subgroupSize (0 where absent), checked: 0 or a power of two. */
function tuningSubgroupSize(tuning: ScanTuning): number {
  const sg = tuning.subgroupSize ?? 0;
  if (!Number.isInteger(sg) || sg < 0 || (sg & (sg - 1)) !== 0) {
    throw new Error(`selectiveScanBackward: subgroupSize must be 0 or a power of two; received ${sg}`);
  }
  return sg;
}

/**
 * The stream backward's geometry: 64 channels a workgroup and segments of 3 tokens by default,
 * shortened, then fewer channels, until its workgroup memory is within 32 KiB; shuffle sums where
 * `tuning.subgroupSize` divides the workgroup and is at least QP. Where even one channel and one
 * token do not fit 32 KiB (the sample's B, C are too long), the same choice within
 * `tuning.maxWorkgroupBytes` where that is more; undefined where that fails too and nothing is
 * pinned: the segmented kernel then serves.
 */
function streamPlan(s: ScanShape, tuning: ScanTuning): ScanBackwardPlan | undefined {
  const where = 'selectiveScanBackward';
  const pinned = tuning.workgroupSize !== undefined || tuning.segment !== undefined;
  const wgs = tuning.workgroupSize !== undefined ? [tuning.workgroupSize] : [SCAN_BACKWARD_WORKGROUP, 32, 16, 8, 4, 2, 1];
  const S0 = Math.min(s.L, tuning.segment ?? SCAN_STREAM_SEGMENT);
  if (!Number.isInteger(S0) || S0 < 1 || S0 > SCAN_STREAM_MAX_SEGMENT) {
    throw new Error(`${where}: the stream kernel's segment must be an integer in 1…${SCAN_STREAM_MAX_SEGMENT}; received ${tuning.segment}`);
  }
  const Smin = tuning.segment !== undefined ? S0 : 1;
  const sg = tuningSubgroupSize(tuning);
  const sgrFor = (wg: number): number => (sg > 0 && wg % sg === 0 && shuffleItems(s.N) <= sg ? sg : 0);
  const planFor = (wg: number, S: number): ScanBackwardPlan => {
    const sgr = sgrFor(wg);
    const nwg = ceilDiv(s.E, wg);
    return {
      kernel: 'stream', workgroupSize: wg, segment: S, segments: ceilDiv(s.L, S), workgroupsPerSample: nwg,
      subgroupSize: sgr, partialsPerSample: sgr > 0 ? nwg * (wg / sgr) : nwg, workgroupBytes: streamBytes(s.L, s.N, wg, S, sgr),
    };
  };
  let best: ScanBackwardPlan | undefined;
  // the wide geometry first where asked, then the widest workgroup and longest segment within `budget`
  const choose = (budget: number): ScanBackwardPlan | undefined => {
    if (tuning.wide && !pinned) {
      for (const wg of wideWorkgroups(s.E)) {
        const p = planFor(wg, SCAN_STREAM_WIDE.segment);
        if (p.workgroupBytes <= budget && 4 * checkpointElements(s, p) <= (tuning.maxCheckpointBytes ?? Infinity)) return p;
      }
    }
    for (const wg of wgs) {
      if (!Number.isInteger(wg) || wg < 1) throw new Error(`${where}: workgroupSize must be a positive integer; received ${wg}`);
      for (let S = S0; S >= Smin; S--) {
        best = planFor(wg, S);
        if (best.workgroupBytes <= budget) return best;
      }
    }
    return undefined;
  };
  const fit = choose(SCAN_BACKWARD_WORKGROUP_BYTES);
  if (fit) return fit;
  // the sample's B, C are too long for 32 KiB: within the adapter's workgroup memory if it has more
  const big = tuning.maxWorkgroupBytes ?? SCAN_BACKWARD_WORKGROUP_BYTES;
  if (!pinned && big > SCAN_BACKWARD_WORKGROUP_BYTES) {
    const p = choose(big);
    if (p) return p;
  }
  return pinned ? best : undefined;
}

/**
 * The split backward's geometry: `tuning.split` lanes a channel (default one), segments of 4
 * tokens, and a workgroup of 192 channels where 192 divides E, else 128, with one lane a channel
 * (256 invocations with more), unless pinned; one partial row of [dB | dC] per subgroup.
 * Undefined (the stream kernel then serves) where the adapter has no usable subgroup size, the
 * workgroup is not a multiple of it, the lanes do not fit (splitFits), the sample's B, C exceed
 * the workgroup memory (32 KiB, or tuning.maxWorkgroupBytes where that is more), or the
 * checkpoints exceed tuning.maxCheckpointBytes.
 */
function splitPlan(s: ScanShape, tuning: ScanTuning): ScanBackwardPlan | undefined {
  const where = 'selectiveScanBackward';
  const P0 = tuning.split;
  if (P0 !== undefined && !SCAN_SPLIT_LANES.includes(P0)) {
    throw new Error(`${where}: split (lanes per channel) must be 1, 2 or 4; received ${P0}`);
  }
  const S0 = tuning.segment ?? SCAN_SPLIT_SEGMENT;
  if (!Number.isInteger(S0) || S0 < 1 || S0 > SCAN_SPLIT_MAX_SEGMENT) {
    throw new Error(`${where}: the split kernel's segment must be an integer in 1…${SCAN_SPLIT_MAX_SEGMENT}; received ${tuning.segment}`);
  }
  const P = P0 ?? SCAN_SPLIT_DEFAULT_LANES;
  const wg = tuning.workgroupSize ?? (P === 1 ? wideWorkgroups(s.E)[0] : SCAN_SPLIT_WORKGROUP);
  if (!Number.isInteger(wg) || wg < 1) throw new Error(`${where}: workgroupSize must be a positive integer; received ${wg}`);
  const sg = tuningSubgroupSize(tuning);
  if (sg === 0 || wg % sg !== 0) return undefined;
  if (!splitFits(s.N, P, sg)) return undefined;
  const S = Math.min(s.L, S0);
  const groupSums = tuning.groupSums ?? SCAN_GROUP_SUMS;
  const bytes = splitBytes(s.L, s.N, wg, P, nameBits(where, 'laneMemory', SCAN_LANE_ARRAYS, tuning.laneMemory), S) +
    (groupSums ? 4 * groupSumFloats(s.N, wg, sg, S) : 0);
  if (bytes > Math.max(SCAN_BACKWARD_WORKGROUP_BYTES, tuning.maxWorkgroupBytes ?? 0)) return undefined;
  const nwg = ceilDiv(s.E * P, wg);
  // one column a lane: one lane a channel, gB and gC in one sum (2·qs items), 4 or more lanes an item
  const scalarSums = P === 1 && joinedSums(s.N, P, sg) && sg / (2 * shuffleItems(s.N, P)) >= 4 && (tuning.scalarSums ?? true);
  const plan: ScanBackwardPlan = {
    kernel: 'split', workgroupSize: wg, segment: S, segments: ceilDiv(s.L, S), workgroupsPerSample: nwg,
    subgroupSize: sg, partialsPerSample: groupSums ? nwg : nwg * (wg / sg), workgroupBytes: bytes, split: P,
    ...(groupSums ? { groupSums } : {}), ...(scalarSums ? { scalarSums } : {}),
  };
  if (tuning.maxCheckpointBytes !== undefined && 4 * checkpointElements(s, plan) > tuning.maxCheckpointBytes) return undefined;
  return plan;
}

/** Whether the split backward sums its subgroups' [dB | dC] rows in workgroup memory by default (ScanTuning.groupSums). */
export const SCAN_GROUP_SUMS = false;

/** Floats of s_pbc with ScanTuning.groupSums: a segment's S tokens × (wg / sg) subgroups × 2N. */
function groupSumFloats(N: number, wg: number, sg: number, S: number): number {
  return S * (wg / sg) * 2 * N;
}

function checkpointElements(s: ScanShape, p: ScanBackwardPlan): number {
  return scanCheckpointElements(s, p.segment);
}

/**
 * Whether a training forward writes the backward's checkpoints (ScanForwardArgs.checkpoints), so
 * that the backward skips its pass 1: $VIM_SCAN_CHECKPOINTS ('forward' or 'backward') where set;
 * else where the plan's segments hold two tokens or more. The checkpoints then stay allocated from
 * the forward to the backward, one set per block and direction: (L/S)·N floats a channel, about
 * four times u at S = 4, N = 16 (vim-tiny at batch 256: 101 MB a block and direction, 4.8 GB in
 * all). With the stream kernel's one-token segments they would be 16 times u, so there the
 * backward keeps writing them into its scratch (docs/performance.md, change 23).
 */
export function scanCheckpointsInForward(plan: ScanBackwardPlan): boolean {
  const v = process.env.VIM_SCAN_CHECKPOINTS;
  if (v === 'forward') return true;
  if (v === 'backward') return false;
  if (v !== undefined && v !== '') throw new VimError(`VIM_SCAN_CHECKPOINTS must be 'forward' or 'backward'; it is '${v}'`);
  return plan.segment >= 2;
}

/**
 * Workgroup memory the split backward adds where it recomputes Δraw (ScanBackwardArgs.dtWeight): the
 * L tokens' dt_low and the workgroup's dt_proj rows, ⌈R/4⌉ vec4 each.
 */
function deltaRecomputeBytes(L: number, R: number, wg: number): number {
  return 16 * Math.ceil(R / 4) * (L + wg);
}

/** Whether the plan's workgroup memory with deltaRecomputeBytes more is within `maxBytes`. */
function deltaRecomputeFits(plan: ScanBackwardPlan, s: Pick<ScanShape, 'L' | 'R'>, maxBytes: number): boolean {
  return plan.workgroupBytes + deltaRecomputeBytes(s.L, s.R, plan.workgroupSize) <= maxBytes;
}

/**
 * Training: whether the forward stores no Δraw and the backward recomputes it from dt_low and
 * dt_proj's weight (ScanBackwardArgs.dtWeight), which needs the split kernel, the forward's
 * checkpoints and deltaRecomputeBytes more workgroup memory than the plan's, within `maxBytes`.
 * Where it can, it does by default: on an H200 at vim-tiny's batch 256 the forward is 0.3 ms a step
 * faster, the backward 0.1–0.2 ms slower, and 25.6 MB a block and direction are not kept
 * (docs/performance.md, change 36). $VIM_SCAN_DELTA ('stored' or 'recomputed') pins it; 'recomputed'
 * where it cannot run is an error.
 */
export function scanRecomputesDelta(plan: ScanBackwardPlan, s: ScanShape, forwardCheckpoints: boolean, maxBytes: number): boolean {
  const v = process.env.VIM_SCAN_DELTA;
  if (v !== undefined && v !== '' && v !== 'stored' && v !== 'recomputed') {
    throw new VimError(`VIM_SCAN_DELTA must be 'stored' or 'recomputed'; it is '${v}'`);
  }
  const can = plan.kernel === 'split' && forwardCheckpoints && deltaRecomputeFits(plan, s, maxBytes);
  if (v === 'recomputed' && !can) {
    throw new VimError("VIM_SCAN_DELTA=recomputed needs the split backward (VIM_SCAN_KERNEL=split) with the forward's checkpoints, " +
      `and ${deltaRecomputeBytes(s.L, s.R, plan.workgroupSize)} bytes of workgroup memory more than its plan's ${plan.workgroupBytes} within ${maxBytes}`);
  }
  return can && v !== 'stored';
}

/** Elements of the state checkpoints for segments of S tokens: (B, ⌈L/S⌉−1, 4·⌈N/4⌉, E). */
export function scanCheckpointElements(s: ScanShape, S: number): number {
  return s.B * (Math.ceil(s.L / S) - 1) * 4 * Math.ceil(s.N / 4) * s.E;
}

/**
 * Elements of the two scratch tensors selectiveScanBackward needs (reusable across layers and
 * by other ops between its dispatches). bcPartials also holds the checkpoints, after the
 * partials at a 256-byte boundary, unless the forward writes them (`forwardCheckpoints`).
 */
export function selectiveScanScratch(
  s: ScanShape, tuning: ScanTuning = {}, opts: { forwardCheckpoints?: boolean } = {},
): ScanScratchSizes {
  const p = selectiveScanBackwardPlan(s, tuning);
  const partials = s.B * p.partialsPerSample * s.L * 2 * s.N;
  // with the forward's checkpoints (ScanBackwardArgs.checkpoints) the scratch holds none
  const ck = opts.forwardCheckpoints ? 0 : Math.max(4, checkpointElements(s, p));
  return {
    bcPartials: Math.ceil((4 * partials) / REGION_ALIGN) * (REGION_ALIGN / 4) + ck,
    paramPartials: s.B * (s.N + 2) * s.E,
  };
}

function scanGrid(gpu: Gpu, where: string, B: number, nwg: number): [number, number] {
  if (B > gpu.limits.maxComputeWorkgroupsPerDimension) {
    throw new Error(`${where}: batch ${B} exceeds the adapter's ${gpu.limits.maxComputeWorkgroupsPerDimension} workgroups per dimension`);
  }
  return [nwg, B];
}

/** The tensors of the forward, shared by the backward. */
export interface ScanInputs {
  u: GpuTensor; // (B, L, E) conv1d + SiLU output, direction order
  delta_raw: GpuTensor; // (B, L, E) dt_proj output without its bias, direction order
  dt_bias: GpuTensor; // (E)
  A_log: GpuTensor; // (E, N)
  xdbl: GpuTensor; // (B, L, R+2N) x_proj output: B_t = columns R…R+N−1, C_t = R+N…R+2N−1
  Dskip: GpuTensor; // (E)
  xz: GpuTensor; // (B, L, 2E) in_proj output, z = columns E…2E−1, original token order
}

export interface ScanForwardArgs extends Omit<ScanInputs, 'delta_raw'>, ScanShape, ScanTuning {
  out: GpuTensor; // (B, L, E) y ⊙ SiLU(z), direction order
  /** The backward direction: step t gates with z[L−1−t]. */
  reverse: boolean;
  /**
   * (B, L, E) Δraw, direction order: read; or, with dtWeight, written when given (the backward
   * needs it) and left out otherwise.
   */
  delta_raw?: GpuTensor;
  /**
   * dt_proj fused: its weight (E, R), and Δraw = xdbl[:, 0…R−1] · dtWeightᵀ is computed inside the
   * scan instead of read (R ≤ 32).
   */
  dtWeight?: GpuTensor;
  /**
   * Training: the state entering every segment of `segment` tokens, written to `out`
   * (scanCheckpointElements of the backward's plan) for a backward with the same plan, which then
   * skips its pass 1 (ScanBackwardArgs.checkpoints).
   */
  checkpoints?: { out: GpuTensor; segment: number };
  /**
   * The combine of the two directions fused in (the model's backward direction): `out` holds, on
   * entry, the other direction's output (B, L, E) in original token order, and each element is
   * replaced by (it + this direction's output at that original token) · 0.5 (· scale.t[scale.offset
   * + b]), the order of combineForward: `out` ends as the combined (B, L, E), original order. Read
   * and written in place (the invocation that reads an element writes it), so no other binding.
   */
  combine?: { scale?: CombineScale };
}

/** Largest Δ rank the forward's fused dt_proj holds (RVMAX = 8 vec4). */
export const SCAN_FUSED_MAX_R = 32;

/**
 * 16-byte storage buffers per device, bound where a kernel's optional output is not written (slots
 * 0, 1) or its optional drop-path factors are not read (slot 2, read-only); one per slot, since a
 * writable binding may not share its buffer with another binding of the same dispatch.
 */
const placeholders = new WeakMap<GPUDevice, GpuTensor[]>();
function placeholder(gpu: Gpu, slot = 0): GpuTensor {
  let list = placeholders.get(gpu.device);
  if (!list) placeholders.set(gpu.device, (list = []));
  list[slot] ??= createTensor(gpu, 4, `scan placeholder ${slot}`);
  return list[slot];
}

/** The inputs both directions of the scan read, delta_raw aside (the forward may compute it). */
function needInputs(where: string, a: Omit<ScanInputs, 'delta_raw'> & ScanShape): void {
  const { B, L, E, N, R } = a;
  need(where, 'u', a.u, B * L * E);
  need(where, 'dt_bias', a.dt_bias, E);
  need(where, 'A_log', a.A_log, E * N);
  need(where, 'xdbl', a.xdbl, B * L * (R + 2 * N));
  need(where, 'Dskip', a.Dskip, E);
  need(where, 'xz', a.xz, B * L * 2 * E);
}

/**
 * out (B, L, E) = (C_t · h_t + D ⊙ u_t) ⊙ SiLU(z_t) with h_t = exp(Δ_t A) ⊙ h_{t−1} + Δ_t u_t B_t,
 * Δ = softplus(delta_raw + dt_bias), A = −exp(A_log). One dispatch of (ceil(E/WG), B) workgroups.
 */
export function selectiveScanForward(gpu: Gpu, a: ScanForwardArgs): Dispatch {
  const where = 'selectiveScanForward';
  checkShape(where, a);
  const { B, L, E, N, R } = a;
  needInputs(where, a);
  need(where, 'out', a.out, B * L * E);
  const fused = a.dtWeight !== undefined;
  if (fused) {
    need(where, 'dtWeight', a.dtWeight as GpuTensor, E * R);
    if (R < 1 || R > SCAN_FUSED_MAX_R) throw new Error(`${where}: the fused dt_proj needs 1 ≤ R ≤ ${SCAN_FUSED_MAX_R}; R is ${R}`);
  } else if (!a.delta_raw) {
    throw new Error(`${where}: pass delta_raw (Δraw to read) or dtWeight (dt_proj fused)`);
  }
  if (a.delta_raw) need(where, 'delta_raw', a.delta_raw, B * L * E);
  const wg = a.workgroupSize ?? SCAN_FORWARD_WORKGROUP;
  checkWorkgroup(where, gpu, wg);
  const NV = Math.ceil(N / 4);
  const bcw = 2 * NV + (fused ? Math.ceil(R / 4) : 0); // vec4 staged per token: B_t, C_t (and dt_low)
  const fit = Math.max(1, Math.floor(gpu.limits.maxComputeWorkgroupStorageSize / (16 * bcw)));
  const env = scanForwardTuningFromEnv();
  const chunk = Math.min(L, a.chunk ?? env.chunk ?? Math.min(SCAN_FORWARD_CHUNK, fit));
  if (!Number.isInteger(chunk) || chunk < 1 || chunk > fit) {
    throw new Error(`${where}: chunk must be an integer in 1…${fit} (tokens of B_t, C_t that fit workgroup memory); received ${a.chunk ?? env.chunk}`);
  }
  const ahead = a.ahead ?? env.ahead ?? SCAN_FORWARD_AHEAD;
  if (!Number.isInteger(ahead) || ahead < 1 || ahead > SCAN_FORWARD_MAX_AHEAD) {
    throw new Error(`${where}: ahead must be an integer in 1…${SCAN_FORWARD_MAX_AHEAD} (tokens whose inputs are loaded ahead); received ${ahead}`);
  }
  const n = B * L * E;
  const writeDelta = fused && a.delta_raw !== undefined;
  const ck = a.checkpoints;
  let ckElems = 0;
  if (ck) {
    if (!Number.isInteger(ck.segment) || ck.segment < 1) {
      throw new Error(`${where}: checkpoints.segment must be a positive integer; received ${ck.segment}`);
    }
    ckElems = scanCheckpointElements(a, ck.segment);
    need(where, 'checkpoints.out', ck.out, Math.max(4, ckElems));
  }
  const cmb = a.combine;
  checkCombineScale(`${where} (combine)`, cmb?.scale, B);
  if (gpu.limits.maxStorageBuffersPerShaderStage < 11) {
    throw new Error(`${where}: needs 11 storage buffers per shader stage; the adapter allows ${gpu.limits.maxStorageBuffersPerShaderStage}`);
  }
  return makeDispatch(gpu, 'selective-scan', 'selective_scan_forward',
    {
      L, E, N, R, WG: wg, TC: chunk, FA: ahead, EXP2: (a.exp2 ?? env.exp2 ?? !(ck || writeDelta)) ? 1 : 0, REVERSE: a.reverse ? 1 : 0, ...(fused ? { FUSE_DT: 1, BCW: bcw, WRITE_DELTA: writeDelta ? 1 : 0 } : {}),
      ...(ck ? { CKPT_S: ck.segment } : {}), ...(env.forwardDiag ? { DIAG: env.forwardDiag } : {}),
      ...(cmb ? { COMBINE: 1, ...(cmb.scale ? { SCALED: 1, SCALE_OFFSET: cmb.scale.offset } : {}) } : {}),
    },
    [a.out, a.u, fused ? a.dtWeight as GpuTensor : a.delta_raw as GpuTensor, a.dt_bias, a.A_log, a.xdbl, a.Dskip, a.xz,
      writeDelta ? a.delta_raw as GpuTensor : placeholder(gpu, 0), ck ? ck.out : placeholder(gpu, 1),
      cmb?.scale ? cmb.scale.t : placeholder(gpu, 2)],
    scanGrid(gpu, where, B, ceilDiv(E, wg)),
    {
      // reads u, delta_raw (or dt_low), z, B_t, C_t and the parameters (with the combine the other
      // direction's output and the B factors too); writes out (and delta_raw, the checkpoints)
      bytes: 4 * ((fused ? 3 + (writeDelta ? 1 : 0) : 4) * n + (2 * N + (fused ? R : 0)) * B * L + E * (N + 2 + (fused ? R : 0)) + ckElems +
        (cmb ? n + (cmb.scale ? B : 0) : 0)),
      // per state and token: exp, multiply, 2 FMA (h), FMA (y); per token the softplus, gate (and 2R
      // for Δraw; the combine's add, halving and factor)
      flops: n * (6 * N + 30 + (fused ? 2 * R : 0) + (cmb ? (cmb.scale ? 3 : 2) : 0)),
      prelude: scanPrelude(0, N),
    });
}

/** Which gradient outputs add into what they hold instead of overwriting it. */
export interface ScanAccumulate {
  du?: boolean;
  ddelta_raw?: boolean;
  /** The z half of dxz: both directions add into one dxz. */
  dz?: boolean;
  /** The B/C columns of dxdbl. */
  dBC?: boolean;
  /** dA_log, dDskip, ddt_bias. */
  params?: boolean;
}

export interface ScanBackwardArgs extends Omit<ScanInputs, 'delta_raw'>, ScanShape, ScanTuning {
  /** (B, L, E) Δraw as the forward stored it; or pass dtWeight. */
  delta_raw?: GpuTensor;
  /**
   * (E, R) dt_proj's weight: the 'split' kernel with the forward's checkpoints recomputes Δraw from
   * xdbl's dt_low columns with the fused forward's dot product, in its order (the same values to
   * rounding: the compiler may contract it differently in the two kernels), so the forward need not
   * store it (scanRecomputesDelta).
   */
  dtWeight?: GpuTensor;
  du: GpuTensor; // (B, L, E)
  ddelta_raw: GpuTensor; // (B, L, E) gradient w.r.t. delta_raw (through the softplus)
  dxz: GpuTensor; // (B, L, 2E): only the z half (columns E…2E−1, original order) is written
  dxdbl: GpuTensor; // (B, L, R+2N): only the B/C columns R…R+2N−1 are written
  dA_log: GpuTensor; // (E, N) summed over the batch
  dDskip: GpuTensor; // (E)
  ddt_bias: GpuTensor; // (E)
  /** (B, L, E) gradient of out, direction order; with doutCombined the combined output's, original order. */
  dout: GpuTensor;
  /** Scratch of selectiveScanScratch(...) elements each; never aliases another tensor here. */
  scratch: { bcPartials: GpuTensor; paramPartials: GpuTensor };
  reverse: boolean;
  /** true: every output accumulates; or per output (default: all overwrite). */
  accumulate?: boolean | ScanAccumulate;
  /**
   * The checkpoints the forward wrote (ScanForwardArgs.checkpoints) with this plan's segment: the
   * scan skips its pass 1 and reads them instead of the scratch's checkpoint region.
   */
  checkpoints?: GpuTensor;
  /**
   * The combine's backward fused in: `dout` is the gradient of the COMBINED output (B, L, E) in
   * original token order (ScanForwardArgs.combine), and this direction's gradient at its token t
   * is dout[b, t'] · 0.5 (· scale.t[scale.offset + b]), t' = L−1−t with `reverse`, else t: what
   * combineBackward would have written to dy_f or dy_b, in the same order of operations. Both
   * directions' backwards read the one dout.
   */
  doutCombined?: { scale?: CombineScale };
}

/**
 * The gradients of selectiveScanForward (see src/reference/selective-scan.ts for the closed
 * forms): the scan (states recomputed from per-segment checkpoints; the forward stores none),
 * then one pass that sums the dB/dC partials over channels → dxdbl and the dA_log/dD/dbias partials
 * over the batch.
 */
export function selectiveScanBackward(gpu: Gpu, a: ScanBackwardArgs): Dispatch[] {
  const p = scanBackwardParts(gpu, a);
  return [p.scan, scanReduce(gpu, p.args, [p.dir])];
}

/** One direction's backward scan, and what its partials' reduction needs. */
interface ScanBackwardParts {
  scan: Dispatch;
  dir: ScanReduceDir;
  args: ScanReduceArgs;
}

function scanBackwardParts(gpu: Gpu, a: ScanBackwardArgs): ScanBackwardParts {
  const where = 'selectiveScanBackward';
  checkShape(where, a);
  const { B, L, E, N, R } = a;
  needInputs(where, a);
  const n = B * L * E;
  if (a.dtWeight) {
    need(where, 'dtWeight', a.dtWeight, E * R);
  } else if (a.delta_raw) {
    need(where, 'delta_raw', a.delta_raw, n);
  } else {
    throw new Error(`${where}: pass delta_raw (Δraw to read) or dtWeight (Δraw recomputed)`);
  }
  need(where, 'du', a.du, n);
  need(where, 'ddelta_raw', a.ddelta_raw, n);
  need(where, 'dxz', a.dxz, 2 * n);
  need(where, 'dxdbl', a.dxdbl, B * L * (R + 2 * N));
  need(where, 'dA_log', a.dA_log, E * N);
  need(where, 'dDskip', a.dDskip, E);
  need(where, 'ddt_bias', a.ddt_bias, E);
  need(where, 'dout', a.dout, n);
  const dc = a.doutCombined;
  checkCombineScale(`${where} (doutCombined)`, dc?.scale, B);
  const plan = selectiveScanBackwardPlan(a, a);
  if (plan.workgroupBytes > gpu.limits.maxComputeWorkgroupStorageSize) {
    throw new Error(`${where}: ${plan.workgroupBytes} bytes of workgroup memory (workgroupSize ${plan.workgroupSize}, segment ` +
      `${plan.segment}) exceed the adapter's ${gpu.limits.maxComputeWorkgroupStorageSize}; choose a smaller workgroupSize or segment`);
  }
  checkWorkgroup(where, gpu, plan.workgroupSize);
  const sizes = selectiveScanScratch(a, a, { forwardCheckpoints: a.checkpoints !== undefined });
  need(where, 'scratch.bcPartials', a.scratch.bcPartials, sizes.bcPartials);
  need(where, 'scratch.paramPartials', a.scratch.paramPartials, sizes.paramPartials);
  const stor = gpu.limits.maxStorageBuffersPerShaderStage;
  if (stor < 15) throw new Error(`${where}: needs 15 storage buffers per shader stage; the adapter allows ${stor}`);
  // the two regions of scratch.bcPartials: partials, then the checkpoints (16 unused bytes when there are none)
  const sc = a.scratch.bcPartials;
  const partialsElems = B * plan.partialsPerSample * L * 2 * N;
  const ckElems = checkpointElements(a, plan);
  const partialsView: GpuTensor = { ...sc, size: 4 * Math.max(1, partialsElems), label: `${sc.label} (scan partials)` };
  const ckSize = 4 * Math.max(4, ckElems);
  const maxBinding = gpu.limits.maxStorageBufferBindingSize;
  if (ckSize > maxBinding) {
    throw new Error(`${where}: the ${(ckSize / 2 ** 20).toFixed(1)} MiB of state checkpoints (${plan.segments - 1} per channel) exceed ` +
      `the adapter's ${(maxBinding / 2 ** 20).toFixed(1)} MiB per storage binding; pass a longer segment or a smaller batch`);
  }
  const ckView: GpuTensor = a.checkpoints
    ?? { ...sc, offset: sc.offset + 4 * sizes.bcPartials - ckSize, size: ckSize, label: `${sc.label} (scan checkpoints)` };
  if (a.checkpoints) need(where, 'checkpoints', a.checkpoints, Math.max(4, ckElems));

  const kb = a.tokenBlock ?? (gpu.info.isCpu ? 1 : plan.kernel !== 'segmented' ? SCAN_STREAM_TOKEN_BLOCK : SCAN_TOKEN_BLOCK);
  if (!Number.isInteger(kb) || kb < 1 || kb > SCAN_TOKEN_BLOCK) {
    throw new Error(`${where}: tokenBlock must be an integer in 1…${SCAN_TOKEN_BLOCK}; received ${a.tokenBlock}`);
  }

  const acc: ScanAccumulate = typeof a.accumulate === 'boolean'
    ? { du: a.accumulate, ddelta_raw: a.accumulate, dz: a.accumulate, dBC: a.accumulate, params: a.accumulate }
    : (a.accumulate ?? {});
  const b01 = (v: boolean | undefined): number => (v ? 1 : 0);
  const wg = plan.workgroupSize;
  const nwg = plan.workgroupsPerSample;
  const np = plan.partialsPerSample;
  const sgr = plan.subgroupSize;
  const prelude = scanPrelude(sgr, N);
  const accOuts = b01(acc.du) + b01(acc.ddelta_raw) + b01(acc.dz);
  const common = {
    L, E, N, R, WG: wg, TC: plan.segment, NWG: np, REVERSE: b01(a.reverse),
    ACC_DU: b01(acc.du), ACC_DDELTA: b01(acc.ddelta_raw), ACC_DZ: b01(acc.dz), ...(a.diag ? { DIAG: a.diag } : {}),
    ...(a.checkpoints ? { CKPT_IN: 1 } : {}),
    ...(dc ? { DOUT_COMBINED: 1, ...(dc.scale ? { SCALED: 1, SCALE_OFFSET: dc.scale.offset } : {}) } : {}),
  };
  const stream = plan.kernel === 'stream';
  const split = plan.kernel === 'split';
  const dtRec = a.dtWeight !== undefined;
  if (dtRec && !(split && a.checkpoints)) {
    throw new Error(`${where}: dtWeight (Δraw recomputed) needs the 'split' kernel and the forward's checkpoints; pass delta_raw`);
  }
  if (dtRec && !deltaRecomputeFits(plan, a, gpu.limits.maxComputeWorkgroupStorageSize)) {
    throw new Error(`${where}: recomputing Δraw takes ${deltaRecomputeBytes(L, R, wg)} bytes of workgroup memory more than the plan's ` +
      `${plan.workgroupBytes}, over the adapter's ${gpu.limits.maxComputeWorkgroupStorageSize}; pass delta_raw`);
  }
  if ((split || (stream && sgr > 0)) && !gpu.features.subgroups) {
    throw new Error(`${where}: subgroupSize ${sgr} needs the subgroups feature, which this device lacks`);
  }
  const lanes = plan.split ?? 1;
  const qs = shuffleItems(N, lanes);
  // the stream and split kernels' common constants: all L tokens' B, C staged, shuffle sums
  const walk = { ...common, KB: kb, BCT: L, SGR: sgr, LOOKAHEAD: (a.lookahead ?? !split) ? 1 : 0 };
  const lmBits = split ? nameBits(where, 'laneMemory', SCAN_LANE_ARRAYS, a.laneMemory) : 0;
  const wNamed = split ? nameBits(where, 'walk', SCAN_WALK_FORMS, a.walk ?? SCAN_WALK_DEFAULT) : 0;
  const wBits = wNamed & 8 ? wNamed | 4 : wNamed; // fold2 implies fold
  const allLive = split && E % (wg / lanes) === 0;
  const laneMem: Record<string, number> = lmBits ? { LANE_MEM: lmBits, LM_ROWS: Math.max(1, laneMemoryRows(N, wg, lanes, lmBits, plan.segment)) } : {};

  const scan = makeDispatch(gpu, 'selective-scan',
    split ? 'selective_scan_backward_split' : stream ? 'selective_scan_backward_stream' : 'selective_scan_backward',
    split
      ? { ...walk, SPLIT: lanes, QS: qs, BCJ: joinedSums(N, lanes, sgr) ? 1 : 0, ...(plan.scalarSums ? { SCALAR_SUMS: 1 } : {}), ...laneMem, ...(wBits ? { WALK: wBits } : {}), ...(allLive ? { ALL_LIVE: 1 } : {}),
        UNROLL: (a.unroll ?? lanes > 1) ? 1 : 0, EXP2: a.exp2 ? 1 : 0,
        ...(dtRec ? { DT_REC: 1, BCW: 2 * Math.ceil(N / 4) + Math.ceil(R / 4), DTW_ROWS: wg * Math.ceil(R / 4) } : {}),
        ...(plan.groupSums ? { WGSUM: 1, PBC_ROWS: groupSumFloats(N, wg, sgr, plan.segment) } : {}) }
      : stream
      ? { ...walk, QP: shuffleItems(N), SH_ROWS: streamStateRows(N, wg, plan.segment), ...(sgr > 0 ? { RED_ROWS: 1 } : {}) }
      : { ...common, KB: kb, BCT: Math.max(plan.segment, kb) },
    [a.du, a.ddelta_raw, a.dxz, partialsView, a.scratch.paramPartials, ckView,
      a.dout, a.u, (a.dtWeight ?? a.delta_raw) as GpuTensor, a.dt_bias, a.A_log, a.xdbl, a.Dskip, a.xz, dc?.scale ? dc.scale.t : placeholder(gpu, 2)],
    scanGrid(gpu, where, B, nwg),
    {
      label: 'selective_scan_backward',
      // the op's memory floor, less the dB/dC and parameter outputs (counted by the reduces):
      // reads u, delta_raw, z, dout, B_t, C_t, the parameters; writes du, ddelta_raw, dz (and
      // reads them when accumulating). The checkpoints and partials this design adds are not
      // counted, so GB/s against `bytes` measures the distance to the floor. doutCombined reads
      // as many dout values (other rows) and the B factors.
      // With dtWeight it reads dt_low and the weight instead of Δraw.
      bytes: 4 * ((dtRec ? 6 : 7) * n + accOuts * n + (2 * N + (dtRec ? R : 0)) * B * L + E * (N + 2 + (dtRec ? R : 0)) + (dc?.scale ? B : 0)),
      // three forward steps (pass 1, recomputation, walk; two with the forward's checkpoints) and
      // the backward step per state and token (doutCombined: the halving and the factor)
      flops: n * N * (a.checkpoints ? 26 : 30) + n * 60 + (dc ? n * (dc.scale ? 2 : 1) : 0),
      prelude,
      shape: `${a.reverse ? 'reverse' : 'forward'}${accOuts ? ', accumulating' : ''}`, // bench-vim --by-shape: one row per pipeline
    });
  const red: ScanReduceDir = { dxdbl: a.dxdbl, partials: partialsView, paramPartials: a.scratch.paramPartials, dA_log: a.dA_log, dDskip: a.dDskip, ddt_bias: a.ddt_bias };
  const reduceArgs: ScanReduceArgs = { shape: a, partialsPerSample: np, dBC: b01(acc.dBC), params: b01(acc.params), partialsElems, prelude };
  return { scan, dir: red, args: reduceArgs };
}

/** What the partials' reduction needs of one direction's backward. */
interface ScanReduceDir {
  dxdbl: GpuTensor;
  partials: GpuTensor; // the [dB | dC] partials' region of scratch.bcPartials
  paramPartials: GpuTensor;
  dA_log: GpuTensor;
  dDskip: GpuTensor;
  ddt_bias: GpuTensor;
}

/** What the partials' reduction needs of the backward's plan (the same for both directions of a pair). */
interface ScanReduceArgs {
  shape: ScanShape;
  partialsPerSample: number;
  dBC: number;
  params: number;
  partialsElems: number;
  prelude: string;
}

/** One binding over the regions `first` and `second` of one buffer (second after first), and second's start in elements. */
function spanOf(where: string, what: string, first: GpuTensor, second: GpuTensor): [GpuTensor, number] {
  if (first.buffer !== second.buffer || second.offset < first.offset + first.size) {
    throw new Error(`${where}: the second direction's ${what} must follow the first's in the same buffer ` +
      `(${first.label} at byte ${first.offset}, ${second.label} at byte ${second.offset})`);
  }
  const size = second.offset + second.size - first.offset;
  return [{ ...first, size, label: `${first.label} (both directions)` }, (second.offset - first.offset) / 4];
}

/**
 * The partials' reduction of one direction's backward, or of two in one dispatch (their dxdbl,
 * partials and parameter partials each in one buffer, the second after the first): the [dB | dC]
 * rows, then the parameters, each output with the same additions in the same order either way.
 */
function scanReduce(gpu: Gpu, r: ScanReduceArgs, dirs: readonly ScanReduceDir[]): Dispatch {
  const where = 'selectiveScanBackwardPair';
  const { B, L, E, N, R } = r.shape;
  const nbc = B * L * 2 * N;
  const X = (N + 2) * E;
  const [rpCols, rpLanes] = reduceParamsGeometry(gpu);
  const rbc = ceilDiv(nbc, rpCols * rpLanes);
  const [d0, d1] = dirs;
  let dx = d0.dxdbl, bc = d0.partials, par = d0.paramPartials;
  const offs: Record<string, number> = {};
  if (d1) {
    [dx, offs.DX_OFF1] = spanOf(where, 'dxdbl', d0.dxdbl, d1.dxdbl);
    [bc, offs.BC_OFF1] = spanOf(where, '[dB | dC] partials', d0.partials, d1.partials);
    [par, offs.PAR_OFF1] = spanOf(where, 'parameter partials', d0.paramPartials, d1.paramPartials);
  }
  const n = dirs.length;
  return makeDispatch(gpu, 'selective-scan', 'selective_scan_reduce',
    { B, L, E, N, R, NWG: r.partialsPerSample, ACC_BC: r.dBC, ACC_PAR: r.params, RP_COLS: rpCols, RP_LANES: rpLanes, RBC: rbc, ...(d1 ? { DIRS: 2, ...offs } : {}) },
    [dx, bc, d0.dA_log, d0.dDskip, d0.ddt_bias, par,
      d1?.dA_log ?? placeholder(gpu, 5), d1?.dDskip ?? placeholder(gpu, 6), d1?.ddt_bias ?? placeholder(gpu, 7)],
    workgroupGrid(gpu, n * (rbc + ceilDiv(X, rpCols))),
    // floor: the dB, dC outputs and the parameter gradients
    { bytes: n * 4 * (nbc * (1 + r.dBC) + X * (1 + r.params)), flops: n * (r.partialsElems + B * X), prelude: r.prelude });
}

/**
 * Elements of one tensor that holds both directions' n-element copies of a tensor in the layout
 * selectiveScanBackwardPair binds as one (scanPairViews): the second from the first 256-byte
 * boundary after the first.
 */
export function scanPairElements(n: number): number {
  return align(n, REGION_ALIGN / 4) + n;
}

/** The forward and backward direction's n-element views of a tensor of scanPairElements(n) elements. */
export function scanPairViews(t: GpuTensor, n: number): [GpuTensor, GpuTensor] {
  return [{ ...t, size: 4 * n, label: `${t.label} (forward)` },
    { ...t, offset: t.offset + 4 * align(n, REGION_ALIGN / 4), size: 4 * n, label: `${t.label} (backward)` }];
}

/**
 * Both directions' selectiveScanBackward with their partials' reductions in one dispatch: the two
 * scans, then one reduction (one dispatch fewer; the same results, bit for bit). Each direction's
 * dxdbl, scratch.bcPartials and scratch.paramPartials must lie in one buffer with the second
 * direction's after the first's (such as scanPairViews of one tensor each), its accumulate flags
 * for dBC and params the same.
 */
export function selectiveScanBackwardPair(gpu: Gpu, a: readonly [ScanBackwardArgs, ScanBackwardArgs]): Dispatch[] {
  const where = 'selectiveScanBackwardPair';
  const [p0, p1] = a.map((d) => scanBackwardParts(gpu, d));
  const same = (k: keyof ScanReduceArgs) => p0.args[k] === p1.args[k];
  const s0 = p0.args.shape, s1 = p1.args.shape;
  if (s0.B !== s1.B || s0.L !== s1.L || s0.E !== s1.E || s0.N !== s1.N || s0.R !== s1.R || !same('partialsPerSample') || !same('dBC') || !same('params')) {
    throw new Error(`${where}: both directions must have the same shape, plan and accumulate flags for dBC and params`);
  }
  return [p0.scan, p1.scan, scanReduce(gpu, p0.args, [p0.dir, p1.dir])];
}
