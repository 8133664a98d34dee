import { describe, expect, it } from 'vitest';
import { makeDispatch, getPipeline, compileCheck } from '../src/gpu/kernels.js';
import { dawnToggles, describeGpu } from '../src/gpu/device.js';
import { read, run, testGpu, tensorFrom, uniformBuffer } from './helpers/gpu.js';
import { withEnv } from './helpers/env.js';

describe('GPU device', () => {
  it('finds an adapter and runs a kernel', async () => {
    const gpu = await testGpu();
    expect(describeGpu(gpu).length).toBeGreaterThan(0);
    const t = tensorFrom(gpu, [1, 2, 3, 4, 5]);
    const u = uniformBuffer(gpu, [{ u32: 5 }, { f32: 2.5 }]);
    await run(gpu, [makeDispatch(gpu, 'util', 'scale', {}, [t, u], [1])]);
    expect(Array.from(await read(gpu, t))).toEqual([2.5, 5, 7.5, 10, 12.5]);
  });

  it('keeps Dawn\'s robustness on a CPU adapter (the GPU default turns it off), and reads $VIM_DAWN_TOGGLES', async () => {
    const gpu = await testGpu();
    if (process.env.VIM_DAWN_TOGGLES === undefined) expect(gpu.toggles, 'lavapipe gets no toggles by default').toEqual([]);
    withEnv('VIM_DAWN_TOGGLES', () => {
      delete process.env.VIM_DAWN_TOGGLES;
      expect(dawnToggles(), 'unset: each adapter its default').toBeUndefined();
      process.env.VIM_DAWN_TOGGLES = 'none';
      expect(dawnToggles()).toEqual([]);
      process.env.VIM_DAWN_TOGGLES = ' disable_robustness, -vulkan_use_buffer_robust_access_2 ';
      expect(dawnToggles()).toEqual(['disable_robustness', '-vulkan_use_buffer_robust_access_2']);
    });
  });

  it('surfaces the WGSL compiler message of a kernel that does not build', async () => {
    const gpu = await testGpu();
    getPipeline(gpu, 'util', 'no_such_entry');
    await expect(compileCheck()).rejects.toThrow(/util:no_such_entry/);
  });
});
