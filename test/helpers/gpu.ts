/**
 * Shared helpers for GPU tests: one device for the whole test file, tensors from float64
 * reference arrays, read-backs, and the relative error ‖out − ref‖ / ‖ref‖.
 */
import { acquireGpu, type Gpu } from '../../src/gpu/device.js';
import { createTensor, download, type GpuTensor } from '../../src/gpu/tensor.js';
import { compileCheck, runDispatches, type Dispatch } from '../../src/gpu/kernels.js';
import { Rng } from '../../src/rng.js';
import type { ParamSpec } from '../../src/model/params.js';

let shared: Promise<Gpu> | null = null;

/** The test process's GPU (lavapipe on CI). Never skipped: a missing adapter fails the test. */
export function testGpu(): Promise<Gpu> {
  shared ??= acquireGpu();
  return shared;
}

export function tensorFrom(gpu: Gpu, data: ArrayLike<number>, label = 't'): GpuTensor {
  return createTensor(gpu, data.length, label, data);
}

export function zerosTensor(gpu: Gpu, n: number, label = 'zeros'): GpuTensor {
  return createTensor(gpu, n, label, new Float32Array(n));
}

export async function run(gpu: Gpu, list: Dispatch[]): Promise<void> {
  await compileCheck();
  runDispatches(gpu, list);
}

export async function read(gpu: Gpu, t: GpuTensor): Promise<Float64Array> {
  return Float64Array.from(await download(gpu, t));
}

/** ‖a − b‖₂ / ‖b‖₂ (b the reference); 0 when both are zero. */
export function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length mismatch ${a.length} vs ${b.length}`);
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  if (den === 0) return Math.sqrt(num);
  return Math.sqrt(num / den);
}

/** Random values in [lo, hi), rounded to f32 so that GPU and reference see the same inputs. */
export function randArray(rng: Rng, n: number, lo = -1, hi = 1): Float64Array {
  const a = new Float64Array(n);
  for (let i = 0; i < n; i++) a[i] = Math.fround(rng.range(lo, hi));
  return a;
}

/** A small uniform buffer from 32-bit words (u32 or f32 given as numbers with types). */
export function uniformBuffer(gpu: Gpu, words: ({ u32: number } | { f32: number } | { i32: number })[]): GPUBuffer {
  const size = Math.max(16, Math.ceil((words.length * 4) / 16) * 16);
  const buf = gpu.device.createBuffer({ size, usage: 0x0040 /* UNIFORM */ | 0x0008 /* COPY_DST */ });
  const dv = new DataView(new ArrayBuffer(size));
  words.forEach((w, i) => {
    if ('u32' in w) dv.setUint32(i * 4, w.u32, true);
    else if ('i32' in w) dv.setInt32(i * 4, w.i32, true);
    else dv.setFloat32(i * 4, w.f32, true);
  });
  gpu.queue.writeBuffer(buf, 0, dv.buffer);
  return buf;
}

/** Run `fn` while counting queue submits and buffer maps (the "one submit, one read-back" checks). */
export async function countSubmitsAndMaps<T>(gpu: Gpu, fn: () => Promise<T>): Promise<{ result: T; submits: number; maps: number }> {
  const queue = gpu.queue;
  const submit = queue.submit.bind(queue);
  const proto = Object.getPrototypeOf(gpu.device.createBuffer({ size: 4, usage: 8 })) as GPUBuffer;
  const mapAsync = proto.mapAsync;
  let submits = 0;
  let maps = 0;
  queue.submit = (cbs: Iterable<GPUCommandBuffer>) => { submits++; return submit(cbs); };
  proto.mapAsync = function (this: GPUBuffer, ...args: Parameters<GPUBuffer['mapAsync']>) { maps++; return mapAsync.apply(this, args); };
  try {
    return { result: await fn(), submits, maps };
  } finally {
    queue.submit = submit;
    proto.mapAsync = mapAsync;
  }
}

/** A flat layout of 1-D tensors of the given sizes and decay flags (for AdamW-style tests). */
export function flatSpecs(sizes: readonly [number, boolean][]): { specs: ParamSpec[]; n: number } {
  let offset = 0;
  const specs = sizes.map(([size, decay], i) => {
    const s: ParamSpec = { name: `t${i}`, shape: [size], size, offset, decay };
    offset += size;
    return s;
  });
  return { specs, n: offset };
}
