/**
 * The global gradient norm and the clip scale (kernels/grad-norm.wgsl), all on the GPU.
 *
 *   gradClipScale: stats (4) = [‖g‖, clip scale, non-finite flag, Σ g²] ← grads (n)
 *
 * Two dispatches: sums of squares per chunk of GRAD_NORM_CHUNK elements into partials
 * (gradNormPartials(n)), then one workgroup that adds them in a fixed order and derives the clip
 * scale min(1, maxNorm / (‖g‖ + 1e-6)) (PyTorch's clip_grad_norm_). AdamW's scaled entry point
 * reads the scale from `stats` in the same submit, so clipping costs no read-back; the trainer
 * reads `stats` back together with the loss for its logs. The maximum norm lives in a small
 * uniform (createClipUniform / writeClipUniform; 0 means never clip).
 */
import type { Gpu } from '../device.js';
import { ceilDiv, makeDispatch, type Dispatch } from '../kernels.js';
import type { GpuTensor } from '../tensor.js';
import { checkPositive, need, workgroupGrid } from './reduce.js';

/** Elements per first-pass workgroup (the CHUNK constant of the kernel). */
export const GRAD_NORM_CHUNK = 4096;

/** Words of the stats tensor. */
export const GRAD_STATS_WORDS = 4;

/** Partial sums the first pass writes for n gradient elements. */
export function gradNormPartials(n: number): number {
  return ceilDiv(n, GRAD_NORM_CHUNK);
}

/** The uniform holding the maximum gradient norm. */
export function createClipUniform(gpu: Gpu, label = 'grad clip'): GPUBuffer {
  return gpu.device.createBuffer({ size: 16, usage: 0x0040 /* UNIFORM */ | 0x0008 /* COPY_DST */, label });
}

/** Set the maximum gradient norm (0 = never clip). */
export function writeClipUniform(gpu: Gpu, uniform: GPUBuffer, maxNorm: number): void {
  if (!Number.isFinite(maxNorm) || maxNorm < 0) {
    throw new Error(`gradient clipping: expected a finite non-negative max norm but received ${maxNorm}`);
  }
  const w = new Float32Array(4);
  w[0] = maxNorm;
  gpu.queue.writeBuffer(uniform, 0, w.buffer, w.byteOffset, w.byteLength);
}

export interface GradClipScaleArgs {
  stats: GpuTensor; // (4) [‖g‖, scale, non-finite flag, Σ g²]
  partials: GpuTensor; // (gradNormPartials(n)) scratch
  grads: GpuTensor; // (n)
  uniform: GPUBuffer; // createClipUniform
  n: number;
}

/** ‖grads‖ and the clip scale into stats: two dispatches. */
export function gradClipScale(gpu: Gpu, a: GradClipScaleArgs): Dispatch[] {
  const { n } = a;
  checkPositive('gradClipScale', { n });
  const G = gradNormPartials(n);
  need('gradClipScale', 'grads', a.grads, n);
  need('gradClipScale', 'partials', a.partials, G);
  need('gradClipScale', 'stats', a.stats, GRAD_STATS_WORDS);
  return [
    makeDispatch(gpu, 'grad-norm', 'grad_sumsq_partial', { N_PARAMS: n, G }, [a.partials, a.grads], workgroupGrid(gpu, G), {
      bytes: 4 * (n + G), flops: 2 * n,
    }),
    makeDispatch(gpu, 'grad-norm', 'grad_clip_scale', { N_PARAMS: n, G }, [a.stats, a.partials, a.uniform], [1], {
      bytes: 4 * (G + GRAD_STATS_WORDS), flops: G,
    }),
  ];
}
