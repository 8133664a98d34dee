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
 * Per-invocation arrays as named variables, for GPU compilers that keep function-scope arrays in
 * per-invocation memory: in WGSL source,
 *   1. every loop `for (var i = 0u; i < BOUND; i++) { … }` whose BOUND is a product of integer
 *      literals and names in `sizes` (e.g. `NV`, `2u * NV`) and whose body has no `break` or
 *      `continue` is unrolled, each copy of the body in its own block with `i` replaced by its value;
 *   2. every function-scope `var x: array<T, S>;` whose size S is a literal or a name in `sizes`
 *      (with `sizes[S + '_ARRAY']` the length to keep, when given, else `sizes[S]`) becomes
 *      `var x_0: T; var x_1: T; …`, and every `x[ku]` becomes `x_k`.
 * Comments are dropped first. An index into such an array that is still not a literal after
 * unrolling is an error.
 */
export function registerize(code: string, sizes: Record<string, number>): string {
  code = code.replace(/\/\/.*$/gm, ''); // comments (lines stay where they were)
  const head = /for \(var (\w+) = 0u; \1 < ([\w\s*]+); \1\+\+\) \{/g;
  const value = (expr: string): number | null => {
    let v = 1;
    for (const f of expr.split('*').map((x) => x.trim())) {
      if (/^\d+u?$/.test(f)) v *= parseInt(f, 10);
      else if (f in sizes) v *= sizes[f];
      else return null;
    }
    return v;
  };
  for (let from = 0; ;) {
    head.lastIndex = from;
    const m = head.exec(code);
    if (!m) break;
    const n = value(m[2]);
    const open = m.index + m[0].length - 1;
    let depth = 0;
    let close = open;
    for (; close < code.length; close++) {
      if (code[close] === '{') depth++;
      else if (code[close] === '}' && --depth === 0) break;
    }
    const body = code.slice(open + 1, close);
    if (n === null || n > 64 || /\b(break|continue)\b/.test(body)) {
      from = open + 1;
      continue;
    }
    const name = new RegExp(`\\b${m[1]}\\b`, 'g');
    let out = '';
    for (let k = 0; k < n; k++) out += `{${body.replace(name, `${k}u`)}}`;
    code = code.slice(0, m.index) + out + code.slice(close + 1);
    from = m.index;
  }
  const decl = /var (\w+): array<([^,<>]+(?:<[^<>]+>)?), (\w+)>;/g;
  const arrays: string[] = [];
  code = code.replace(decl, (whole, name: string, type: string, size: string) => {
    const n = /^\d+u?$/.test(size) ? parseInt(size, 10) : sizes[`${size}_ARRAY`] ?? sizes[size];
    if (n === undefined) return whole;
    arrays.push(name);
    return Array.from({ length: n }, (_, k) => `var ${name}_${k}: ${type};`).join(' ');
  });
  for (const name of arrays) {
    code = code.replace(new RegExp(`\\b${name}\\[(\\d+)u\\]`, 'g'), `${name}_$1`);
    const left = new RegExp(`\\b${name}\\[`).exec(code);
    if (left) {
      const line = code.slice(0, left.index).split('\n').length;
      throw new Error(`registerize: ${name} is still indexed by a value that is not a constant (line ${line}: ${code.split('\n')[line - 1].trim()})`);
    }
  }
  return code;
}

/**
 * A compute pipeline for `entry` in kernels/`file`.wgsl with the given override constants.
 * `prelude` is prepended to the source (e.g. `enable f16;` or generated constants); with
 * `registers`, the source goes through registerize() with those sizes first.
 */
export function getPipeline(
  gpu: Gpu, file: string, entry: string, constants: Record<string, number> = {}, prelude = '',
  registers?: Record<string, number>,
): GPUComputePipeline {
  let cache = pipelineCache.get(gpu.device);
  if (!cache) {
    cache = new Map();
    pipelineCache.set(gpu.device, cache);
  }
  const key = `${file}|${entry}|${prelude}|${JSON.stringify(constants)}|${JSON.stringify(registers ?? null)}`;
  const hit = cache.get(key);
  if (hit) return hit;
  const code = prelude + (registers ? registerize(kernelSource(file), registers) : kernelSource(file));
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
export function bindTensors(gpu: Gpu, pipeline: GPUComputePipeline, bindings: (GpuTensor | GPUBuffer)[], label?: string): GPUBindGroup {
  return gpu.device.createBindGroup({
    layout: pipeline.getBindGroupLayout(0),
    entries: bindings.map((b, i) => ({
      binding: i,
      resource: 'buffer' in b ? { buffer: b.buffer, offset: b.offset, size: alignUp4(b.size) } : { buffer: b },
    })),
    label,
  });
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
  bindings: (GpuTensor | GPUBuffer)[],
  workgroups: [number, number?, number?],
  cost?: { bytes?: number; flops?: number; label?: string; prelude?: string; registers?: Record<string, number> },
): Dispatch {
  const pipeline = getPipeline(gpu, file, entry, constants, cost?.prelude ?? '', cost?.registers);
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
