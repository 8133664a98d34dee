import { describe, expect, it } from 'vitest';
import { makeDispatch, getPipeline, compileCheck } from '../src/gpu/kernels.js';
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
