/**
 * The float64 reference: every op of Vim, forward and backward, and the whole model. It is the
 * specification the WebGPU kernels are tested against.
 */
export * from './activations.js';
export * from './adamw.js';
export * from './combine.js';
export * from './conv1d.js';
export * from './cross-entropy.js';
export * from './embed.js';
export * from './gradcheck.js';
export * from './head.js';
export * from './linear.js';
export * from './rmsnorm.js';
export * from './selective-scan.js';
export * from './vim.js';
