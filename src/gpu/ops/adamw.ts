/**
 * AdamW over all parameters in one dispatch (kernels/adamw.wgsl).
 *
 *   adamwUpdate: params, m, v (n) updated in place from grads (n), decay mask (ceil(n/32) u32)
 *
 * The model keeps params, grads, m and v as flat f32 buffers in its parameter layout. The decay
 * mask is one bit per element (bit i % 32 of word i / 32; see packDecayMask), uploaded once. The
 * per-step hyperparameters live in a small uniform buffer (createAdamwUniform) that the trainer
 * rewrites before each step with writeAdamwUniform; the dispatch itself is built once.
 *
 * With `gradStats` (the (4) stats of gradClipScale in ./grad-norm.ts) the kernel multiplies every
 * gradient by the clip scale stats[1] and skips the whole step when stats[2] flags a non-finite
 * gradient norm, so clipping and the NaN guard need no read-back inside the step.
 */
import type { Gpu } from '../device.js';
import { makeDispatch, type Dispatch } from '../kernels.js';
import type { GpuTensor } from '../tensor.js';
import { checkPositive, grid1d, need } from './reduce.js';

/** u32 words of a decay mask for n parameters. */
export function decayMaskWords(n: number): number {
  return Math.ceil(n / 32);
}

/** Pack a per-element decay mask (truthy = decays; e.g. the reference's decay_mask) into bits. */
export function packDecayMask(mask: ArrayLike<number | boolean>): Uint32Array {
  const words = new Uint32Array(decayMaskWords(mask.length));
  for (let i = 0; i < mask.length; i++) if (mask[i]) words[i >>> 5] |= 1 << (i & 31);
  return words;
}

/** Write a packed decay mask into a tensor of decayMaskWords(n) words. */
export function uploadDecayMask(gpu: Gpu, t: GpuTensor, words: Uint32Array): void {
  if (words.byteLength > t.size) throw new Error(`uploadDecayMask: ${words.length} words exceed ${t.label}'s ${t.size / 4}`);
  gpu.queue.writeBuffer(t.buffer, t.offset, words.buffer, words.byteOffset, words.byteLength);
}

export interface AdamwHyper {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** 1-based step count t (bias corrections 1 − β^t). */
  step: number;
}

const UNIFORM_BYTES = 48; // 9 f32, padded to 16 bytes

/** The uniform buffer adamwUpdate reads its per-step hyperparameters from. */
export function createAdamwUniform(gpu: Gpu, label = 'adamw hyperparameters'): GPUBuffer {
  return gpu.device.createBuffer({ size: UNIFORM_BYTES, usage: 0x0040 /* UNIFORM */ | 0x0008 /* COPY_DST */, label });
}

/** The uniform's 32-bit words for one step (host math in float64, each rounded once to f32). */
export function adamwUniformWords(h: AdamwHyper): Float32Array {
  if (!Number.isInteger(h.step) || h.step < 1) throw new Error(`adamw: expected a 1-based integer step but received ${h.step}`);
  for (const k of ['lr', 'beta1', 'beta2', 'eps', 'weightDecay'] as const) {
    if (!Number.isFinite(h[k]) || h[k] < 0) throw new Error(`adamw: expected a finite non-negative ${k} but received ${h[k]}`);
  }
  if (h.beta1 >= 1 || h.beta2 >= 1) throw new Error(`adamw: betas must be below 1, got ${h.beta1}, ${h.beta2}`);
  const w = new Float32Array(UNIFORM_BYTES / 4);
  w.set([h.lr, h.beta1, h.beta2, 1 - h.beta1, 1 - h.beta2, h.eps, h.lr * h.weightDecay,
    1 - h.beta1 ** h.step, 1 - h.beta2 ** h.step]);
  return w;
}

/** Rewrite the uniform for the next step (queued before that step's submit). */
export function writeAdamwUniform(gpu: Gpu, uniform: GPUBuffer, h: AdamwHyper): void {
  const w = adamwUniformWords(h);
  gpu.queue.writeBuffer(uniform, 0, w.buffer, w.byteOffset, w.byteLength);
}

export interface AdamwUpdateArgs {
  params: GpuTensor; // (n) updated in place
  m: GpuTensor; // (n) first moments, in place
  v: GpuTensor; // (n) second moments, in place
  grads: GpuTensor; // (n)
  decayMask: GpuTensor; // (decayMaskWords(n)) u32 bits
  uniform: GPUBuffer; // createAdamwUniform, rewritten each step
  n: number;
  /** (4) gradClipScale's stats: scale the gradients by stats[1], skip the step when stats[2] ≠ 0. */
  gradStats?: GpuTensor;
}

/** One AdamW step on n parameters, one dispatch. */
export function adamwUpdate(gpu: Gpu, a: AdamwUpdateArgs): Dispatch {
  const { n } = a;
  checkPositive('adamwUpdate', { n });
  for (const [k, t] of [['params', a.params], ['m', a.m], ['v', a.v], ['grads', a.grads]] as const) need('adamwUpdate', k, t, n);
  need('adamwUpdate', 'decayMask', a.decayMask, decayMaskWords(n));
  const bindings = [a.params, a.m, a.v, a.grads, a.decayMask, a.uniform];
  if (a.gradStats) need('adamwUpdate', 'gradStats', a.gradStats, 4);
  return makeDispatch(gpu, 'adamw', a.gradStats ? 'adamw_update_scaled' : 'adamw_update', { N_PARAMS: n },
    a.gradStats ? [...bindings, a.gradStats] : bindings, grid1d(gpu, n), {
      label: 'adamw_update', bytes: 4 * 7 * n + decayMaskWords(n) * 4, flops: 16 * n,
    });
}
