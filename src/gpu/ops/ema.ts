/**
 * Exponential moving average of the weights (kernels/ema.wgsl), one dispatch per step:
 *
 *   emaUpdate: ema (n) ← decay · ema + (1 − decay) · params (n), skipped with the AdamW step
 *              when stats[2] (the non-finite flag of gradClipScale) is set
 *
 * The decay lives in a uniform (createEmaUniform) rewritten before each step with writeEmaUniform,
 * so a warm-up of the decay needs no new dispatch.
 */
import type { Gpu } from '../device.js';
import { makeDispatch, type Dispatch } from '../kernels.js';
import type { GpuTensor } from '../tensor.js';
import { GRAD_STATS_WORDS } from './grad-norm.js';
import { checkPositive, grid1d, need } from './reduce.js';

export function createEmaUniform(gpu: Gpu, label = 'ema decay'): GPUBuffer {
  return gpu.device.createBuffer({ size: 16, usage: 0x0040 /* UNIFORM */ | 0x0008 /* COPY_DST */, label });
}

/** The uniform's words: decay and 1 − decay, each computed in float64 and rounded once. */
export function emaUniformWords(decay: number): Float32Array {
  if (!(decay >= 0 && decay <= 1)) throw new Error(`ema: expected a decay in [0, 1] but received ${decay}`);
  return Float32Array.from([decay, 1 - decay, 0, 0]);
}

export function writeEmaUniform(gpu: Gpu, uniform: GPUBuffer, decay: number): void {
  const w = emaUniformWords(decay);
  gpu.queue.writeBuffer(uniform, 0, w.buffer, w.byteOffset, w.byteLength);
}

export interface EmaUpdateArgs {
  ema: GpuTensor; // (n) in place
  params: GpuTensor; // (n)
  stats: GpuTensor; // (4) from gradClipScale
  uniform: GPUBuffer; // createEmaUniform
  n: number;
}

export function emaUpdate(gpu: Gpu, a: EmaUpdateArgs): Dispatch {
  const { n } = a;
  checkPositive('emaUpdate', { n });
  need('emaUpdate', 'ema', a.ema, n);
  need('emaUpdate', 'params', a.params, n);
  need('emaUpdate', 'stats', a.stats, GRAD_STATS_WORDS);
  return makeDispatch(gpu, 'ema', 'ema_update', { N_PARAMS: n }, [a.ema, a.params, a.stats, a.uniform], grid1d(gpu, n), {
    bytes: 12 * n, flops: 3 * n,
  });
}
