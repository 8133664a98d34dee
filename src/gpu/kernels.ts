/**
 * Kernels: WGSL sources from kernels/*.wgsl, compiled once into compute pipelines (cached by
 * file, entry point and override constants), with the WGSL compiler's messages surfaced when a
 * shader does not compile. A `Dispatch` is a pipeline, a bind group and a grid, built once when
 * a model is planned and replayed every step.
 */
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Gpu } from './device.js';
import type { GpuTensor } from './tensor.js';

const here = dirname(fileURLToPath(import.meta.url));
/** The package's kernels/ folder (from src/gpu under vitest, or dist/gpu when built). */
export const KERNELS_DIR = resolve(here, '..', '..', 'kernels');

export interface Dispatch {
  label: string; // kernel name for timing tables, e.g. "matmul_forward"
  pipeline: GPUComputePipeline;
  bindGroup: GPUBindGroup;
  workgroups: [number, number, number];
  /** Optional cost model for bench tables: bytes moved and flops. */
  bytes?: number;
  flops?: number;
  /** Optional problem shape for bench tables split by shape, e.g. "M=16640 I=192 O=384". */
  shape?: string;
}

const sourceCache = new Map<string, string>();
const pipelineCache = new WeakMap<GPUDevice, Map<string, GPUComputePipeline>>();

export function kernelSource(file: string): string {
  let s = sourceCache.get(file);
  if (s === undefined) {
    s = readFileSync(resolve(KERNELS_DIR, file.endsWith('.wgsl') ? file : `${file}.wgsl`), 'utf8');
    sourceCache.set(file, s);
  }
  return s;
}

/**
 * A compute pipeline for `entry` in kernels/`file`.wgsl with the given override constants.
 * `prelude` is prepended to the source (e.g. `enable f16;` or generated constants).
 */
export function getPipeline(
  gpu: Gpu, file: string, entry: string, constants: Record<string, number> = {}, prelude = '',
): GPUComputePipeline {
  let cache = pipelineCache.get(gpu.device);
  if (!cache) {
    cache = new Map();
    pipelineCache.set(gpu.device, cache);
  }
  const key = `${file}|${entry}|${prelude}|${JSON.stringify(constants)}`;
  const hit = cache.get(key);
  if (hit) return hit;
  const code = prelude + kernelSource(file);
  const device = gpu.device;
  device.pushErrorScope('validation');
  const module = device.createShaderModule({ code, label: file });
  const pipeline = device.createComputePipeline({
    layout: 'auto',
    compute: { module, entryPoint: entry, constants },
    label: `${file}:${entry}`,
  });
  // Errors are checked asynchronously; compileCheck() awaits them. Dawn also reports failures
  // synchronously as an invalid pipeline whose first use raises a validation error.
  pending.push(
    device.popErrorScope().then(async (err) => {
      if (!err) return;
      const info = await module.getCompilationInfo();
      const msgs = info.messages
        .map((m) => `${file}.wgsl:${m.lineNum}:${m.linePos} ${m.type}: ${m.message}`)
        .join('\n');
      throw new Error(`kernel ${file}:${entry} ${JSON.stringify(constants)} failed to build:\n${msgs || err.message}`);
    }),
  );
  cache.set(key, pipeline);
  return pipeline;
}

let pending: Promise<void>[] = [];

/** Await every pipeline built so far; throws the WGSL compiler's messages for any that failed. */
export async function compileCheck(): Promise<void> {
  const p = pending;
  pending = [];
  await Promise.all(p);
}

/** A bind group binding tensors (storage) and uniform buffers to @binding(0…) in order. */
export function bindTensors(gpu: Gpu, pipeline: GPUComputePipeline, bindings: (GpuTensor | GPUBuffer | null)[], label?: string): GPUBindGroup {
  const entries: GPUBindGroupEntry[] = [];
  bindings.forEach((b, i) => { // null: a binding index the entry point does not use
    if (b !== null) entries.push({ binding: i, resource: 'buffer' in b ? { buffer: b.buffer, offset: b.offset, size: alignUp4(b.size) } : { buffer: b } });
  });
  return gpu.device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries, label });
}

function alignUp4(n: number): number {
  return Math.ceil(n / 4) * 4;
}

/** Build a Dispatch in one call. */
export function makeDispatch(
  gpu: Gpu,
  file: string,
  entry: string,
  constants: Record<string, number>,
  bindings: (GpuTensor | GPUBuffer | null)[],
  workgroups: [number, number?, number?],
  cost?: { bytes?: number; flops?: number; label?: string; prelude?: string; shape?: string },
): Dispatch {
  const pipeline = getPipeline(gpu, file, entry, constants, cost?.prelude ?? '');
  const [x, y = 1, z = 1] = workgroups;
  const lim = gpu.limits.maxComputeWorkgroupsPerDimension;
  if (x > lim || y > lim || z > lim) {
    throw new Error(`${file}:${entry}: grid ${x}×${y}×${z} exceeds the adapter's ${lim} workgroups per dimension`);
  }
  return {
    label: cost?.label ?? entry,
    pipeline,
    bindGroup: bindTensors(gpu, pipeline, bindings, entry),
    workgroups: [x, y, z],
    bytes: cost?.bytes,
    flops: cost?.flops,
    ...(cost?.shape !== undefined ? { shape: cost.shape } : {}),
  };
}

/** Record dispatches into one compute pass (WebGPU orders storage writes between dispatches). */
export function encodeDispatches(enc: GPUCommandEncoder, list: Dispatch[]): void {
  const pass = enc.beginComputePass();
  for (const d of list) {
    if (d.workgroups[0] === 0 || d.workgroups[1] === 0 || d.workgroups[2] === 0) continue;
    pass.setPipeline(d.pipeline);
    pass.setBindGroup(0, d.bindGroup);
    pass.dispatchWorkgroups(d.workgroups[0], d.workgroups[1], d.workgroups[2]);
  }
  pass.end();
}

/** Run dispatches now: one encoder, one submit. */
export function runDispatches(gpu: Gpu, list: Dispatch[]): void {
  const enc = gpu.device.createCommandEncoder();
  encodeDispatches(enc, list);
  gpu.queue.submit([enc.finish()]);
}

export function ceilDiv(a: number, b: number): number {
  return Math.ceil(a / b);
}
