/**
 * Model configs, the parameter layout and the initialisation.
 *
 * The layout is checked against a list written out here from the architecture's rules (names as
 * in the PyTorch Vim state dict), not derived from src/model/params.ts.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { VimError } from '../src/errors.js';
import { loadConfig, resolveConfig, type VimConfig } from '../src/model/config.js';
import { initParams, initParams64 } from '../src/model/init.js';
import { paramCount, paramSpecs, type ParamSet } from '../src/model/params.js';

const tmp = mkdtempSync(join(tmpdir(), 'vim-config-test-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** vim-tiny's tensors as the PyTorch Vim names them, for D=192, E=384, N=16, R=12, K=4, P=4, L=65. */
function vimTinyExpected(): Map<string, number[]> {
  const m = new Map<string, number[]>([
    ['patch_embed.proj.weight', [192, 3, 4, 4]],
    ['patch_embed.proj.bias', [192]],
    ['pos_embed', [1, 65, 192]],
    ['cls_token', [1, 1, 192]],
    ['norm_f.weight', [192]],
    ['head.weight', [10, 192]],
    ['head.bias', [10]],
  ]);
  const perLayer: [string, number[]][] = [
    ['norm.weight', [192]],
    ['mixer.in_proj.weight', [768, 192]],
    ['mixer.conv1d.weight', [384, 1, 4]],
    ['mixer.conv1d.bias', [384]],
    ['mixer.x_proj.weight', [44, 384]],
    ['mixer.dt_proj.weight', [384, 12]],
    ['mixer.dt_proj.bias', [384]],
    ['mixer.A_log', [384, 16]],
    ['mixer.D', [384]],
    ['mixer.conv1d_b.weight', [384, 1, 4]],
    ['mixer.conv1d_b.bias', [384]],
    ['mixer.x_proj_b.weight', [44, 384]],
    ['mixer.dt_proj_b.weight', [384, 12]],
    ['mixer.dt_proj_b.bias', [384]],
    ['mixer.A_b_log', [384, 16]],
    ['mixer.D_b', [384]],
    ['mixer.out_proj.weight', [192, 384]],
  ];
  for (let i = 0; i < 24; i++) for (const [s, shape] of perLayer) m.set(`layers.${i}.${s}`, shape);
  return m;
}

function vimErrorOf(f: () => unknown): VimError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(VimError);
    return e as VimError;
  }
  throw new Error('expected a VimError, nothing was thrown');
}

const nano = loadConfig('vim-nano');
const tiny = loadConfig('vim-tiny');

describe('model configs', () => {
  it('resolves vim-tiny to D=192, depth 24, E=384, N=16, R=12, L=65 with the class token in the middle', () => {
    expect(tiny).toMatchObject({
      name: 'vim-tiny', imgSize: 32, P: 4, D: 192, depth: 24, N: 16, expand: 2, E: 384, K: 4, R: 12, C: 10,
      Np: 64, L: 65, clsPos: 32,
    });
  });

  it('gives vim-tiny every tensor with the PyTorch Vim name and shape, 6,793,354 parameters in all', () => {
    const expected = vimTinyExpected();
    const specs = paramSpecs(tiny);
    const names = specs.map((s) => s.name);
    expect(new Set(names).size).toBe(names.length); // no duplicates
    expect([...names].sort()).toEqual([...expected.keys()].sort());
    for (const s of specs) {
      expect(s.shape, s.name).toEqual(expected.get(s.name));
      expect(s.size).toBe(s.shape.reduce((a, b) => a * b, 1));
    }
    // contiguous offsets in one flat array
    let off = 0;
    for (const s of specs) {
      expect(s.offset, s.name).toBe(off);
      off += s.size;
    }
    const total = [...expected.values()].reduce((a, sh) => a + sh.reduce((x, y) => x * y, 1), 0);
    expect(total).toBe(6_793_354);
    expect(paramCount(tiny)).toBe(6_793_354);
  });

  it('counts vim-nano parameters from the block formula', () => {
    const { D, E, N, R, K, C, P, L, depth } = nano;
    const perDir = E * K + E + (R + 2 * N) * E + E * R + E + E * N + E;
    const perLayer = D + 2 * E * D + 2 * perDir + D * E;
    const expected = D * 3 * P * P + D + D + L * D + depth * perLayer + D + C * D + C;
    expect(paramCount(nano)).toBe(expected);
  });

  it('exempts A_log, D, biases, norms and embeddings from weight decay', () => {
    const decayed = paramSpecs(nano).filter((s) => s.decay).map((s) => s.name.replace(/^layers\.\d+\./, ''));
    expect(new Set(decayed)).toEqual(new Set([
      'patch_embed.proj.weight', 'mixer.in_proj.weight', 'mixer.conv1d.weight', 'mixer.conv1d_b.weight',
      'mixer.x_proj.weight', 'mixer.x_proj_b.weight', 'mixer.dt_proj.weight', 'mixer.dt_proj_b.weight',
      'mixer.out_proj.weight', 'head.weight',
    ]));
  });

  const base = { name: 't', patch_size: 4, embed_dim: 64, depth: 2 };

  it('rejects a patch size that does not divide the image', () => {
    expect(vimErrorOf(() => resolveConfig({ ...base, patch_size: 5 })).message).toMatch(/patch_size 5 does not divide img_size 32/);
  });

  it('rejects a negative depth, naming the field', () => {
    expect(vimErrorOf(() => resolveConfig({ ...base, depth: -3 })).message)
      .toMatch(/expected a positive integer for depth but received -3/);
    expect(vimErrorOf(() => resolveConfig({ ...base, depth: 1.5 })).message).toMatch(/depth/);
  });

  it('rejects an unknown field, naming it', () => {
    expect(vimErrorOf(() => resolveConfig({ ...base, embed_dims: 64 })).message).toMatch(/unknown field "embed_dims"/);
  });

  it('rejects a config that is not an object', () => {
    expect(vimErrorOf(() => resolveConfig([1, 2])).message).toMatch(/expected a JSON object/);
  });

  it('rejects an unknown model name, listing the known ones', () => {
    const msg = vimErrorOf(() => loadConfig('vim-gigantic')).message;
    expect(msg).toMatch(/unknown model "vim-gigantic"/);
    expect(msg).toMatch(/vim-nano/);
    expect(msg).toMatch(/vim-tiny/);
  });

  it('rejects a config file that is not JSON, naming the file', () => {
    const p = join(tmp, 'broken.json');
    writeFileSync(p, '{ "name": "broken", patch_size: 4 ');
    const msg = vimErrorOf(() => loadConfig(p)).message;
    expect(msg).toContain(p);
    expect(msg).toMatch(/not valid JSON/);
  });

  it('loads a config file by path', () => {
    const p = join(tmp, 'mine.json');
    writeFileSync(p, JSON.stringify({ ...base, name: 'mine' }));
    expect(loadConfig(p)).toMatchObject({ name: 'mine', D: 64, depth: 2, E: 128, R: 4 });
  });
});

// ---------------------------------------------------------------------------------------------

function stats(a: ArrayLike<number>): { mean: number; std: number; maxAbs: number; min: number; max: number } {
  let s = 0;
  let min = Infinity;
  let max = -Infinity;
  for (let i = 0; i < a.length; i++) {
    s += a[i];
    min = Math.min(min, a[i]);
    max = Math.max(max, a[i]);
  }
  const mean = s / a.length;
  let v = 0;
  for (let i = 0; i < a.length; i++) v += (a[i] - mean) ** 2;
  return { mean, std: Math.sqrt(v / a.length), maxAbs: Math.max(-min, max), min, max };
}

/** All layers' copies of one mixer tensor, concatenated. */
function allLayers(p: ParamSet<Float32Array>, suffix: string): Float32Array {
  const size = p.layer(0, suffix).length;
  const out = new Float32Array(p.cfg.depth * size);
  for (let i = 0; i < p.cfg.depth; i++) out.set(p.layer(i, suffix), i * size);
  return out;
}

const softplus = (x: number): number => (x > 20 ? x : Math.log1p(Math.exp(x)));

describe('initParams', () => {
  const p = initParams(nano, 1234);
  const t = initParams(tiny, 99);

  it('is reproducible for a seed and differs across seeds', () => {
    expect(initParams(nano, 1234).flat).toEqual(p.flat);
    const q = initParams(nano, 1235);
    let differ = 0;
    for (let i = 0; i < p.flat.length; i++) if (p.flat[i] !== q.flat[i]) differ++;
    // only the random tensors differ; ones, zeros and A_log do not
    const deterministic = ['patch_embed.proj.bias', 'norm.weight', 'norm_f.weight', 'A_log', 'A_b_log', 'mixer.D', 'mixer.D_b', 'head.bias'];
    const fixed = paramSpecs(nano)
      .filter((s) => deterministic.some((d) => s.name === d || s.name.endsWith(`.${d}`)))
      .reduce((a, s) => a + s.size, 0);
    expect(differ).toBe(p.flat.length - fixed);
  });

  it('rounds the float64 initialisation to float32', () => {
    const p64 = initParams64(nano, 1234);
    for (let i = 0; i < p.flat.length; i += 97) expect(p.flat[i]).toBe(Math.fround(p64.flat[i]));
  });

  it('draws tensors in layout order from one stream (a shallower model shares the first layers)', () => {
    const shallow: VimConfig = resolveConfig({ name: 'shallow', patch_size: 4, embed_dim: 64, depth: 2 });
    const s = initParams(shallow, 1234);
    for (const name of ['patch_embed.proj.weight', 'cls_token', 'pos_embed', 'layers.0.mixer.in_proj.weight',
      'layers.1.mixer.x_proj_b.weight', 'layers.1.mixer.dt_proj_b.bias']) {
      expect(s.get(name), name).toEqual(p.get(name));
    }
  });

  it('rejects a seed that is not a 32-bit unsigned integer', () => {
    expect(vimErrorOf(() => initParams(nano, -1)).message).toMatch(/seed/);
    expect(vimErrorOf(() => initParams(nano, 0.5)).message).toMatch(/seed/);
  });

  it('draws patch_embed.proj.weight lecun-normal: std sqrt(1/fan_in), truncated at ±2 std of the underlying normal', () => {
    const fanIn = 3 * 4 * 4;
    const w = stats(t.get('patch_embed.proj.weight')); // 192·48 = 9216 values
    expect(w.std / Math.sqrt(1 / fanIn)).toBeGreaterThan(0.97);
    expect(w.std / Math.sqrt(1 / fanIn)).toBeLessThan(1.03);
    expect(Math.abs(w.mean)).toBeLessThan(0.01);
    const cut = (2 * Math.sqrt(1 / fanIn)) / 0.87962566103423978;
    expect(w.maxAbs).toBeLessThanOrEqual(cut * (1 + 1e-6));
    expect(w.maxAbs).toBeGreaterThan(cut * 0.95); // the truncation is reached, not far inside
    expect(t.get('patch_embed.proj.bias').every((x) => x === 0)).toBe(true);
  });

  it('draws pos_embed, cls_token and head.weight trunc-normal with std 0.02; head.bias 0', () => {
    const pos = stats(t.get('pos_embed')); // 12,480 values
    expect(pos.std).toBeGreaterThan(0.0194);
    expect(pos.std).toBeLessThan(0.0206);
    expect(Math.abs(pos.mean)).toBeLessThan(0.001);
    const cls = stats(t.get('cls_token')); // 192 values
    expect(cls.std).toBeGreaterThan(0.016);
    expect(cls.std).toBeLessThan(0.024);
    const head = stats(t.get('head.weight')); // 1,920 values
    expect(head.std).toBeGreaterThan(0.0185);
    expect(head.std).toBeLessThan(0.0215);
    expect(t.get('head.bias').every((x) => x === 0)).toBe(true);
  });

  it('sets every norm weight and D to 1', () => {
    expect(t.get('norm_f.weight').every((x) => x === 1)).toBe(true);
    for (let i = 0; i < tiny.depth; i++) {
      expect(t.get(`layers.${i}.norm.weight`).every((x) => x === 1)).toBe(true);
      expect(t.layer(i, 'D').every((x) => x === 1)).toBe(true);
      expect(t.layer(i, 'D_b').every((x) => x === 1)).toBe(true);
    }
  });

  it('sets every row of A_log and A_b_log to log(1…N)', () => {
    const { E, N } = tiny;
    for (const i of [0, 11, 23]) {
      for (const name of ['A_log', 'A_b_log']) {
        const want = new Float32Array(E * N); // (E, N), row e = [log 1, …, log N]
        for (let e = 0; e < E; e++) for (let n = 0; n < N; n++) want[e * N + n] = Math.log(n + 1);
        expect(t.layer(i, name), `layers.${i}.mixer.${name}`).toEqual(want);
      }
    }
  });

  /** Uniform U(±bound): inside the bound, reaching close to it, std ≈ bound/√3. */
  function expectUniform(v: Float32Array, bound: number, what: string): void {
    const s = stats(v);
    expect(s.maxAbs, what).toBeLessThanOrEqual(Math.fround(bound));
    expect(s.max, what).toBeGreaterThan(bound * 0.98);
    expect(s.min, what).toBeLessThan(-bound * 0.98);
    expect(s.std / (bound / Math.sqrt(3)), what).toBeGreaterThan(0.97);
    expect(s.std / (bound / Math.sqrt(3)), what).toBeLessThan(1.03);
    expect(Math.abs(s.mean) / bound, what).toBeLessThan(0.03);
  }

  it('draws in_proj, conv1d, x_proj and dt_proj weights from their PyTorch uniform bounds', () => {
    const { D, E, K, R } = tiny;
    expectUniform(allLayers(t, 'in_proj.weight'), 1 / Math.sqrt(D), 'in_proj');
    for (const b of ['', '_b']) {
      expectUniform(allLayers(t, `conv1d${b}.weight`), 1 / Math.sqrt(K), `conv1d${b}.weight`);
      expectUniform(allLayers(t, `conv1d${b}.bias`), 1 / Math.sqrt(K), `conv1d${b}.bias`);
      expectUniform(allLayers(t, `x_proj${b}.weight`), 1 / Math.sqrt(E), `x_proj${b}`);
      expectUniform(allLayers(t, `dt_proj${b}.weight`), 1 / Math.sqrt(R), `dt_proj${b}.weight`);
    }
  });

  it('scales out_proj to U(±1/√E/√depth)', () => {
    const bound = 1 / Math.sqrt(tiny.E) / Math.sqrt(tiny.depth);
    expectUniform(allLayers(t, 'out_proj.weight'), bound, 'out_proj');
    const nb = 1 / Math.sqrt(nano.E) / Math.sqrt(nano.depth);
    expectUniform(allLayers(p, 'out_proj.weight'), nb, 'nano out_proj');
  });

  it('stores Δ log-uniform in [dt_min, dt_max] in dt_proj(_b).bias through the inverse softplus', () => {
    for (const b of ['', '_b']) {
      const bias = allLayers(t, `dt_proj${b}.bias`); // 24·384 values
      const logs = new Float64Array(bias.length);
      for (const [j, x] of bias.entries()) {
        const dt = softplus(x);
        expect(dt).toBeGreaterThanOrEqual(tiny.dtMin * (1 - 1e-5));
        expect(dt).toBeLessThanOrEqual(tiny.dtMax * (1 + 1e-5));
        logs[j] = Math.log(dt);
      }
      // log Δ is uniform on [log 1e-3, log 1e-1]: mean at the midpoint, std = width/√12
      const s = stats(logs);
      const lo = Math.log(tiny.dtMin);
      const hi = Math.log(tiny.dtMax);
      expect(Math.abs(s.mean - (lo + hi) / 2)).toBeLessThan(0.05);
      expect(s.std / ((hi - lo) / Math.sqrt(12))).toBeCloseTo(1, 1);
      expect(s.min).toBeLessThan(lo + 0.01 * (hi - lo));
      expect(s.max).toBeGreaterThan(hi - 0.01 * (hi - lo));
    }
  });

  it('clamps Δ below at dt_init_floor', () => {
    const cfg = resolveConfig({ name: 'floor', patch_size: 4, embed_dim: 32, depth: 1, dt_min: 1e-5, dt_max: 1e-3, dt_init_floor: 1e-4 });
    const q = initParams64(cfg, 5);
    const dts = [...q.layer(0, 'dt_proj.bias')].map(softplus);
    expect(Math.min(...dts)).toBeCloseTo(1e-4, 12);
    expect(dts.filter((d) => Math.abs(d - 1e-4) < 1e-12).length).toBeGreaterThan(10); // about half are clamped
  });

  it('can start the backward direction\'s Δ bias at 0, as the PyTorch Vim does', () => {
    const z = initParams(nano, 1234, { backwardDtBias: 'zero' });
    expect(z.layer(0, 'dt_proj_b.bias').every((x) => x === 0)).toBe(true);
    expect(z.layer(0, 'dt_proj.bias')).toEqual(p.layer(0, 'dt_proj.bias'));
  });
});
