/**
 * Timing of training steps and inference on the current adapter: wall clock over whole steps
 * (after warm-up, median of many), and GPU timestamps per dispatch in a profiling step where
 * every dispatch gets its own compute pass, summed per kernel, with the bytes and flops each
 * kernel must move and do, the rates achieved and the floor they imply.
 */
import type { ScanBackwardPlan } from '../gpu/ops/selective-scan.js';
import type { Gpu } from '../gpu/device.js';
import { encodeDispatches, type Dispatch } from '../gpu/kernels.js';
import { mapRead } from '../gpu/tensor.js';
import type { VimConfig } from '../model/config.js';
import { initParams } from '../model/init.js';
import { VimGpu } from '../model/vim-gpu.js';
import { Rng } from '../rng.js';

export interface KernelTiming {
  kernel: string;
  /** With TimingOptions.byShape: the problem shape of these dispatches (where the op records one). */
  shape?: string;
  count: number; // dispatches per step
  ms: number; // GPU time per step
  share: number; // of the profiled step's GPU time
  bytes: number;
  flops: number;
  gbps: number;
  gflops: number;
  floorMs: number; // max(bytes / bandwidth, flops / rate)
}

export interface TimingResult {
  config: string;
  batch: number;
  adapter: string;
  /** The scan backward's plan at this batch (kernel and geometry), as the model takes it. */
  scanBackward?: ScanBackwardPlan;
  /**
   * stepMs, imagesPerSecond: one step at a time from an idle GPU (submit, then await its read-back;
   * the median), as the PyTorch peer times its steps. flowMs, flowImagesPerSecond: the same steps back
   * to back with two in flight, as train-vim runs them (the mean over the timed steps).
   */
  train: { stepMs: number; imagesPerSecond: number; flowMs: number; flowImagesPerSecond: number; gpuMs: number | null; dispatches: number };
  infer: { batchMs: number; imagesPerSecond: number; gpuMs: number | null; dispatches: number };
  kernels: KernelTiming[];
  inferKernels: KernelTiming[];
  peak: { gbps: number; gflops: number };
}

/** The floor column's default peak rates: an H200 through Vulkan (bytes, and a good f32 tiled matmul's flops). */
export const H200_PEAK = { gbps: 4100, gflops: 35000 } as const;

export interface TimingOptions {
  warmup?: number;
  steps?: number;
  /** The adapter's peak rates for the floor column (defaults: an H200 through Vulkan). */
  peakGBps?: number;
  peakGFlops?: number;
  /** One row per kernel and problem shape (e.g. each matmul of a block) instead of per kernel. */
  byShape?: boolean;
  onProgress?: (msg: string) => void;
}

function median(a: number[]): number {
  const s = [...a].sort((x, y) => x - y);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

/** Wall-clock time of one submit of `list` until the GPU is done. */
async function timeSubmit(gpu: Gpu, list: Dispatch[]): Promise<number> {
  const t0 = performance.now();
  const enc = gpu.device.createCommandEncoder();
  encodeDispatches(enc, list);
  gpu.queue.submit([enc.finish()]);
  await gpu.queue.onSubmittedWorkDone();
  return performance.now() - t0;
}

/**
 * One profiling run of `list`: each dispatch in its own pass with begin/end timestamps.
 * Returns per-dispatch nanoseconds, or null when the adapter has no timestamp queries.
 */
async function profile(gpu: Gpu, list: Dispatch[]): Promise<number[] | null> {
  if (!gpu.features.timestamps) return null;
  const maxQueries = 4096;
  const out: number[] = [];
  for (let start = 0; start < list.length; start += maxQueries / 2) {
    const chunk = list.slice(start, start + maxQueries / 2);
    const count = chunk.length * 2;
    const qs = gpu.device.createQuerySet({ type: 'timestamp', count });
    const resolve = gpu.device.createBuffer({ size: count * 8, usage: 0x0200 /* QUERY_RESOLVE */ | 0x0004 /* COPY_SRC */ });
    const read = gpu.device.createBuffer({ size: count * 8, usage: 0x0001 /* MAP_READ */ | 0x0008 /* COPY_DST */ });
    const enc = gpu.device.createCommandEncoder();
    chunk.forEach((d, i) => {
      const pass = enc.beginComputePass({ timestampWrites: { querySet: qs, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 } });
      pass.setPipeline(d.pipeline);
      pass.setBindGroup(0, d.bindGroup);
      pass.dispatchWorkgroups(...d.workgroups);
      pass.end();
    });
    enc.resolveQuerySet(qs, 0, count, resolve, 0);
    enc.copyBufferToBuffer(resolve, 0, read, 0, count * 8);
    gpu.queue.submit([enc.finish()]);
    await mapRead(gpu, read, 'reading timestamps');
    const ts = new BigUint64Array(read.getMappedRange().slice(0));
    read.unmap();
    for (let i = 0; i < chunk.length; i++) out.push(Number(ts[2 * i + 1] - ts[2 * i]));
    qs.destroy();
    resolve.destroy();
    read.destroy();
  }
  return out;
}

function kernelTable(list: Dispatch[], ns: number[] | null, peakGBps: number, peakGFlops: number, byShape = false): KernelTiming[] {
  const byKernel = new Map<string, { kernel: string; shape?: string; count: number; ns: number; bytes: number; flops: number }>();
  list.forEach((d, i) => {
    const shape = byShape ? d.shape : undefined;
    const key = shape !== undefined ? `${d.label} ${shape}` : d.label;
    const k = byKernel.get(key) ?? { kernel: d.label, ...(shape !== undefined ? { shape } : {}), count: 0, ns: 0, bytes: 0, flops: 0 };
    k.count += 1;
    k.ns += ns ? ns[i] : 0;
    k.bytes += d.bytes ?? 0;
    k.flops += d.flops ?? 0;
    byKernel.set(key, k);
  });
  const total = [...byKernel.values()].reduce((a, k) => a + k.ns, 0) || 1;
  return [...byKernel.values()]
    .map((k) => {
      const s = k.ns / 1e9;
      return {
        kernel: k.kernel, ...(k.shape !== undefined ? { shape: k.shape } : {}), count: k.count, ms: k.ns / 1e6, share: k.ns / total, bytes: k.bytes, flops: k.flops,
        gbps: s > 0 ? k.bytes / s / 1e9 : 0, gflops: s > 0 ? k.flops / s / 1e9 : 0,
        floorMs: Math.max(k.bytes / (peakGBps * 1e9), k.flops / (peakGFlops * 1e9)) * 1e3,
      };
    })
    .sort((a, b) => b.ms - a.ms);
}

export async function benchTiming(gpu: Gpu, cfg: VimConfig, batch: number, opts: TimingOptions = {}): Promise<TimingResult> {
  const warmup = opts.warmup ?? 3;
  const steps = opts.steps ?? 10;
  const peakGBps = opts.peakGBps ?? H200_PEAK.gbps;
  const peakGFlops = opts.peakGFlops ?? H200_PEAK.gflops;
  const log = opts.onProgress ?? (() => {});
  const rng = new Rng(5);
  const images = new Uint8Array(batch * 3 * cfg.imgSize * cfg.imgSize);
  for (let i = 0; i < images.length; i++) images[i] = rng.int(256);
  const targets = new Float32Array(batch * cfg.C);
  for (let b = 0; b < batch; b++) targets[b * cfg.C + rng.int(cfg.C)] = 1;
  const params = initParams(cfg, 1);
  // the step train-vim's GPU recipe runs: AdamW, clipping at norm 1, an EMA of the weights
  const hyper = { lr: 1e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.05, maxGradNorm: 1, emaDecay: 0.9995 };

  log(`building ${cfg.name} for training at batch ${batch}`);
  const model = await VimGpu.create(gpu, cfg, { batch, training: true, ema: true });
  if (model.note) log(`note: ${model.note}`);
  model.setParams(params);
  model.setBatch(images, batch, targets);
  const trainList = [...model.forwardList, ...model.lossList, ...model.backwardList, ...model.optimizerList];
  log(`training: ${warmup} warm-up steps, ${steps} timed`);
  for (let i = 0; i < warmup; i++) await model.trainStep(hyper);
  const stepTimes: number[] = [];
  for (let i = 0; i < steps; i++) {
    const t0 = performance.now();
    await model.trainStep(hyper);
    stepTimes.push(performance.now() - t0);
  }
  // the same steps with two in flight: step i + 1 submitted before step i's read-back is awaited
  const f0 = performance.now();
  let prev = model.trainStepFull(hyper);
  for (let i = 1; i < steps; i++) {
    const cur = model.trainStepFull(hyper);
    await prev;
    prev = cur;
  }
  await prev;
  const flowMs = (performance.now() - f0) / steps;
  const trainNs = await profile(gpu, trainList);
  const kernels = kernelTable(trainList, trainNs, peakGBps, peakGFlops, opts.byShape);
  model.destroy();

  log(`building ${cfg.name} for inference at batch ${batch}`);
  const inf = await VimGpu.create(gpu, cfg, { batch, training: false });
  inf.setParams(params);
  inf.setBatch(images, batch);
  for (let i = 0; i < warmup; i++) await timeSubmit(gpu, inf.forwardList);
  const inferTimes: number[] = [];
  for (let i = 0; i < steps; i++) inferTimes.push(await timeSubmit(gpu, inf.forwardList));
  const inferNs = await profile(gpu, inf.forwardList);
  const inferKernels = kernelTable(inf.forwardList, inferNs, peakGBps, peakGFlops, opts.byShape);
  inf.destroy();

  const stepMs = median(stepTimes);
  const batchMs = median(inferTimes);
  const sum = (a: number[] | null) => (a ? a.reduce((x, y) => x + y, 0) / 1e6 : null);
  return {
    config: cfg.name, batch, adapter: '',
    train: {
      stepMs, imagesPerSecond: (batch / stepMs) * 1e3, flowMs, flowImagesPerSecond: (batch / flowMs) * 1e3,
      gpuMs: sum(trainNs), dispatches: trainList.length,
    },
    infer: { batchMs, imagesPerSecond: (batch / batchMs) * 1e3, gpuMs: sum(inferNs), dispatches: inf.forwardList.length },
    kernels, inferKernels, peak: { gbps: peakGBps, gflops: peakGFlops },
  };
}
