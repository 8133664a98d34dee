/**
 * Buffers allocated once for a config and batch size: the arena hands out one GPU buffer per
 * activation tensor, and packs parameter-shaped tensors (parameters, gradients, AdamW moments)
 * into one flat buffer each, every tensor starting at a 256-byte boundary so that it can be bound
 * on its own while AdamW still updates everything in one dispatch.
 */
import { VimError } from '../errors.js';
import type { ParamSpec } from '../model/params.js';
import type { Gpu } from './device.js';
import { STORAGE_USAGE, align, checkFits, type GpuTensor } from './tensor.js';

/** Elements between tensor starts in flat buffers: 64 floats = 256 bytes, WebGPU's largest offset alignment. */
export const FLAT_ALIGN = 64;

export interface FlatEntry {
  name: string;
  offset: number; // elements
  size: number; // elements
}

export interface FlatLayout {
  entries: FlatEntry[];
  byName: Map<string, FlatEntry>;
  total: number; // elements, padding included
}

export function flatLayout(specs: ParamSpec[]): FlatLayout {
  let offset = 0;
  const entries = specs.map((s) => {
    const e = { name: s.name, offset, size: s.size };
    offset = align(offset + s.size, FLAT_ALIGN);
    return e;
  });
  return { entries, byName: new Map(entries.map((e) => [e.name, e])), total: offset };
}

/** One flat buffer laid out as `layout`, with a tensor view per entry. */
export class FlatTensors {
  readonly buffer: GPUBuffer;
  readonly all: GpuTensor;
  private readonly views = new Map<string, GpuTensor>();

  constructor(gpu: Gpu, readonly layout: FlatLayout, readonly label: string) {
    const bytes = layout.total * 4;
    checkFits(gpu, bytes, label);
    this.buffer = gpu.device.createBuffer({ size: Math.max(16, bytes), usage: STORAGE_USAGE, label });
    this.all = { buffer: this.buffer, offset: 0, size: bytes, label };
    for (const e of layout.entries) {
      this.views.set(e.name, { buffer: this.buffer, offset: e.offset * 4, size: e.size * 4, label: `${label}:${e.name}` });
    }
  }

  get(name: string): GpuTensor {
    const v = this.views.get(name);
    if (!v) throw new Error(`${this.label}: no tensor ${name}`);
    return v;
  }

  /** Pack a contiguous parameter array (ParamSet order) into this layout's padded order. */
  pack(flat: ArrayLike<number>): Float32Array {
    const out = new Float32Array(this.layout.total);
    let src = 0;
    for (const e of this.layout.entries) {
      for (let i = 0; i < e.size; i++) out[e.offset + i] = flat[src + i];
      src += e.size;
    }
    return out;
  }

  /** The inverse of pack: padded layout → contiguous ParamSet order. */
  unpack(padded: Float32Array): Float32Array {
    const out = new Float32Array(this.layout.entries.reduce((a, e) => a + e.size, 0));
    let dst = 0;
    for (const e of this.layout.entries) {
      out.set(padded.subarray(e.offset, e.offset + e.size), dst);
      dst += e.size;
    }
    return out;
  }
}

/** Activation buffers: one GPU buffer per tensor, allocated once, with a running total. */
export class Arena {
  private buffers: GPUBuffer[] = [];
  bytes = 0;

  constructor(private readonly gpu: Gpu, readonly label: string) {}

  tensor(label: string, elements: number): GpuTensor {
    const size = Math.max(4, elements * 4);
    checkFits(this.gpu, size, `${this.label}: ${label}`);
    let buffer: GPUBuffer;
    try {
      buffer = this.gpu.device.createBuffer({ size: align(size, 16), usage: STORAGE_USAGE, label });
    } catch (e) {
      throw new VimError(`could not allocate ${label} (${(size / 2 ** 20).toFixed(1)} MiB): ${(e as Error).message}`);
    }
    this.buffers.push(buffer);
    this.bytes += align(size, 16);
    return { buffer, offset: 0, size, label };
  }

  destroy(): void {
    for (const b of this.buffers) b.destroy();
    this.buffers = [];
    this.bytes = 0;
  }
}
