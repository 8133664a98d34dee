/**
 * GPU tensors: a range of one GPUBuffer, f32 unless said otherwise. All tensors of a run are
 * allocated once (see arena.ts); kernels bind them by buffer, offset and size.
 */
import { VimError } from '../errors.js';
import type { Gpu } from './device.js';
import { checkGpu } from './device.js';

export interface GpuTensor {
  buffer: GPUBuffer;
  offset: number; // bytes, a multiple of the device's minStorageBufferOffsetAlignment
  size: number; // bytes
  label: string;
}

export const STORAGE_USAGE = 0x0080 /* STORAGE */ | 0x0004 /* COPY_SRC */ | 0x0008; /* COPY_DST */

/** Elements of a tensor (f32). */
export function numel(t: GpuTensor): number {
  return t.size / 4;
}

/** A standalone buffer holding one tensor (tests, small tools). */
export function createTensor(gpu: Gpu, elements: number, label: string, data?: ArrayLike<number>): GpuTensor {
  const size = Math.max(4, elements * 4);
  checkFits(gpu, size, label);
  const buffer = gpu.device.createBuffer({ size: align(size, 16), usage: STORAGE_USAGE, label });
  const t: GpuTensor = { buffer, offset: 0, size, label };
  if (data) upload(gpu, t, data);
  return t;
}

export function checkFits(gpu: Gpu, bytes: number, label: string): void {
  const lim = Math.min(gpu.limits.maxStorageBufferBindingSize, gpu.limits.maxBufferSize);
  if (bytes > lim) {
    throw new VimError(
      `${label} needs ${(bytes / 2 ** 20).toFixed(1)} MiB in one GPU buffer, but this adapter allows at most ` +
      `${(lim / 2 ** 20).toFixed(1)} MiB per storage binding: use a smaller --batch-size or a smaller model`,
    );
  }
}

/** Write f32 values (converted from any numeric array) into a tensor. */
export function upload(gpu: Gpu, t: GpuTensor, data: ArrayLike<number>, elementOffset = 0): void {
  const f = data instanceof Float32Array ? data : Float32Array.from(data as ArrayLike<number>);
  if ((elementOffset + f.length) * 4 > t.size) {
    throw new Error(`upload to ${t.label}: ${f.length} values at ${elementOffset} exceed its ${t.size / 4} elements`);
  }
  gpu.queue.writeBuffer(t.buffer, t.offset + elementOffset * 4, f.buffer, f.byteOffset, f.byteLength);
}

/** Read a tensor back as f32 (one staging buffer, one mapAsync). */
export async function download(gpu: Gpu, t: GpuTensor, elements = t.size / 4, elementOffset = 0): Promise<Float32Array> {
  const bytes = elements * 4;
  const staging = gpu.device.createBuffer({ size: align(bytes, 4), usage: 0x0001 /* MAP_READ */ | 0x0008 /* COPY_DST */ });
  const enc = gpu.device.createCommandEncoder();
  enc.copyBufferToBuffer(t.buffer, t.offset + elementOffset * 4, staging, 0, bytes);
  gpu.queue.submit([enc.finish()]);
  try {
    await mapRead(gpu, staging, `reading ${t.label}`);
    const out = new Float32Array(staging.getMappedRange().slice(0));
    staging.unmap();
    return out;
  } finally {
    staging.destroy();
  }
}

/** mapAsync that rejects on a lost device instead of hanging. */
export async function mapRead(gpu: Gpu, buf: GPUBuffer, during: string): Promise<void> {
  checkGpu(gpu, during);
  const lost = gpu.device.lost.then((l) => {
    throw new VimError(`${during}: the GPU device was lost (${l.reason}): ${l.message}`);
  });
  await Promise.race([buf.mapAsync(0x0001 /* GPUMapMode.READ */), lost]);
  checkGpu(gpu, during);
}

export function align(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}
