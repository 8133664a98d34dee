/**
 * The parameter layout of a Vim: every tensor's name (as in the PyTorch Vim's state dict, so a
 * checkpoint maps onto it key for key), shape, offset in one flat array, and whether AdamW
 * decays it. All parameters live in one flat array (llm.c style); tensors are views into it.
 */
import type { VimConfig } from './config.js';

export interface ParamSpec {
  name: string;
  shape: number[];
  size: number; // product of shape
  offset: number; // in elements, into the flat array
  decay: boolean; // weight decay applies (matrices only: not A_log, D, biases, norms, embeddings)
}

/** The per-direction mixer parameters: [suffix used for the forward direction, for the backward]. */
export const DIRECTION_NAMES = {
  conv1dWeight: ['conv1d.weight', 'conv1d_b.weight'],
  conv1dBias: ['conv1d.bias', 'conv1d_b.bias'],
  xProj: ['x_proj.weight', 'x_proj_b.weight'],
  dtProjWeight: ['dt_proj.weight', 'dt_proj_b.weight'],
  dtProjBias: ['dt_proj.bias', 'dt_proj_b.bias'],
  ALog: ['A_log', 'A_b_log'],
  D: ['D', 'D_b'],
} as const;

export function paramSpecs(cfg: VimConfig): ParamSpec[] {
  const { D, E, N, R, K, C, P, inChans, L, depth } = cfg;
  const out: ParamSpec[] = [];
  let offset = 0;
  const add = (name: string, shape: number[], decay: boolean) => {
    const size = shape.reduce((a, b) => a * b, 1);
    out.push({ name, shape, size, offset, decay });
    offset += size;
  };
  add('patch_embed.proj.weight', [D, inChans, P, P], true); // (D, 3, P, P)
  add('patch_embed.proj.bias', [D], false); // (D)
  add('cls_token', [1, 1, D], false); // (1, 1, D)
  add('pos_embed', [1, L, D], false); // (1, L, D)
  for (let i = 0; i < depth; i++) {
    const p = `layers.${i}.`;
    const m = `${p}mixer.`;
    add(`${p}norm.weight`, [D], false); // (D)
    add(`${m}in_proj.weight`, [2 * E, D], true); // (2E, D)
    for (let dir = 0; dir < 2; dir++) {
      add(m + DIRECTION_NAMES.conv1dWeight[dir], [E, 1, K], true); // (E, 1, K)
      add(m + DIRECTION_NAMES.conv1dBias[dir], [E], false); // (E)
      add(m + DIRECTION_NAMES.xProj[dir], [R + 2 * N, E], true); // (R+2N, E)
      add(m + DIRECTION_NAMES.dtProjWeight[dir], [E, R], true); // (E, R)
      add(m + DIRECTION_NAMES.dtProjBias[dir], [E], false); // (E)
      add(m + DIRECTION_NAMES.ALog[dir], [E, N], false); // (E, N)
      add(m + DIRECTION_NAMES.D[dir], [E], false); // (E)
    }
    add(`${m}out_proj.weight`, [D, E], true); // (D, E)
  }
  add('norm_f.weight', [D], false); // (D)
  add('head.weight', [C, D], true); // (C, D)
  add('head.bias', [C], false); // (C)
  return out;
}

export function paramCount(cfg: VimConfig): number {
  return paramSpecs(cfg).reduce((a, s) => a + s.size, 0);
}

/** A flat parameter (or gradient, or moment) array with named views into it. */
export class ParamSet<T extends Float32Array | Float64Array> {
  readonly specs: ParamSpec[];
  private readonly byName: Map<string, ParamSpec>;

  constructor(readonly cfg: VimConfig, readonly flat: T) {
    this.specs = paramSpecs(cfg);
    this.byName = new Map(this.specs.map((s) => [s.name, s]));
    const total = this.specs.reduce((a, s) => a + s.size, 0);
    if (flat.length !== total) throw new Error(`ParamSet: flat array has ${flat.length} elements, layout needs ${total}`);
  }

  static zeros64(cfg: VimConfig): ParamSet<Float64Array> {
    return new ParamSet(cfg, new Float64Array(paramCount(cfg)));
  }

  static zeros32(cfg: VimConfig): ParamSet<Float32Array> {
    return new ParamSet(cfg, new Float32Array(paramCount(cfg)));
  }

  spec(name: string): ParamSpec {
    const s = this.byName.get(name);
    if (!s) throw new Error(`no parameter named ${name}`);
    return s;
  }

  has(name: string): boolean {
    return this.byName.has(name);
  }

  /** A view (not a copy) of one tensor. */
  get(name: string): T {
    const s = this.spec(name);
    return this.flat.subarray(s.offset, s.offset + s.size) as T;
  }

  /** Layer i's mixer tensor, e.g. layer(3, 'in_proj.weight'). */
  layer(i: number, suffix: string): T {
    return this.get(`layers.${i}.mixer.${suffix}`);
  }

  toFloat64(): ParamSet<Float64Array> {
    return new ParamSet(this.cfg, Float64Array.from(this.flat));
  }

  toFloat32(): ParamSet<Float32Array> {
    return new ParamSet(this.cfg, Float32Array.from(this.flat));
  }
}
