import { describe, expect, it } from 'vitest';
import { makeDispatch, getPipeline, compileCheck, registerize } from '../src/gpu/kernels.js';
import { describeGpu } from '../src/gpu/device.js';
import { read, run, testGpu, tensorFrom, uniformBuffer } from './helpers/gpu.js';

describe('GPU device', () => {
  it('finds an adapter and runs a kernel', async () => {
    const gpu = await testGpu();
    expect(describeGpu(gpu).length).toBeGreaterThan(0);
    const t = tensorFrom(gpu, [1, 2, 3, 4, 5]);
    const u = uniformBuffer(gpu, [{ u32: 5 }, { f32: 2.5 }]);
    await run(gpu, [makeDispatch(gpu, 'util', 'scale', {}, [t, u], [1])]);
    expect(Array.from(await read(gpu, t))).toEqual([2.5, 5, 7.5, 10, 12.5]);
  });

  it('surfaces the WGSL compiler message of a kernel that does not build', async () => {
    const gpu = await testGpu();
    getPipeline(gpu, 'util', 'no_such_entry');
    await expect(compileCheck()).rejects.toThrow(/util:no_such_entry/);
  });
});

describe('registerize', () => {
  const src = [
    'fn f(x: f32) -> f32 {',
    '  var h: array<vec4<f32>, NVMAX>; // h[0] is a comment',
    '  var s = 0.0;',
    '  for (var i = 0u; i < 2u * NV; i++) { s += x; }',
    '  for (var i = 0u; i < NV; i++) { h[i] = vec4<f32>(x); s += h[i].x; }',
    '  return s;',
    '}',
  ].join('\n');

  it('unrolls constant loops and turns the arrays into named variables', () => {
    const out = registerize(src, { NV: 3, NVMAX_ARRAY: 3 });
    expect(out).toContain('var h_0: vec4<f32>; var h_1: vec4<f32>; var h_2: vec4<f32>;');
    expect(out).not.toMatch(/\bh\[|for \(/);
    expect(out.match(/s \+= x;/g)).toHaveLength(6);
    expect(out).toContain('h_2 = vec4<f32>(x); s += h_2.x;');
  });

  it('refuses an index it cannot make constant', () => {
    const dyn = src.replace('i < NV; i++) { h[i]', 'i < NV; i++) { if (x > 0.0) { break; } h[i]');
    expect(() => registerize(dyn, { NV: 3, NVMAX_ARRAY: 3 })).toThrow(/h is still indexed by a value that is not a constant \(line 5/);
  });
});
