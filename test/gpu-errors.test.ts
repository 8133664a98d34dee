/**
 * Bad inputs to the engine: no adapter, a config that does not fit the adapter's limits.
 * Each is a clear one-line error, never a hang or a crash.
 */
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { resolveConfig } from '../src/model/config.js';
import { VimGpu } from '../src/model/vim-gpu.js';
import { VimError } from '../src/errors.js';
import { acquireGpu } from '../src/gpu/device.js';
import { createTensor, download } from '../src/gpu/tensor.js';
import { testGpu } from './helpers/gpu.js';

describe('engine errors', () => {
  it('a machine without a WebGPU adapter gets a one-line error that says what to install', () => {
    // No Vulkan driver at all: the loader finds none and Dawn offers no adapter.
    const r = spawnSync(process.execPath, ['dist/cli/bench-vim.js', '--check'], {
      encoding: 'utf8', timeout: 60_000,
      env: { ...process.env, VK_ICD_FILENAMES: '/nonexistent/icd.json', VK_DRIVER_FILES: '/nonexistent/icd.json' },
    });
    expect(r.status).toBe(1);
    const lines = r.stderr.split('\n').filter((l) => l.startsWith('bench-vim:'));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/no WebGPU adapter found/);
    expect(lines[0]).toMatch(/scripts\/setup\.sh/);
    expect(r.stderr).not.toMatch(/\s+at .*\.(js|ts):\d+/); // no JavaScript stack trace (Dawn's own Vulkan warnings may print)
  });

  it('a config whose tensors exceed the adapter\'s storage binding limit is refused with the sizes', async () => {
    const gpu = await testGpu();
    const big = resolveConfig({ name: 'too-wide', patch_size: 4, embed_dim: 4096, depth: 1 });
    const limitMiB = gpu.limits.maxStorageBufferBindingSize / 2 ** 20;
    // batch · L · 2E floats for in_proj's output: pick a batch that needs more than one binding allows
    const batch = Math.ceil((gpu.limits.maxStorageBufferBindingSize / (65 * 2 * 8192 * 4)) * 1.5);
    const err = await VimGpu.create(gpu, big, { batch, training: false }).then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(VimError);
    expect((err as Error).message).toMatch(new RegExp(`at most ${limitMiB.toFixed(1)} MiB`));
    expect((err as Error).message).toMatch(/smaller --batch-size/);
  });

  it('a lost device is reported on the next read-back instead of hanging', async () => {
    const gpu = await acquireGpu();
    const t = createTensor(gpu, 4, 'x', [1, 2, 3, 4]);
    gpu.device.destroy();
    await expect(download(gpu, t)).rejects.toThrow(/destroyed|lost/);
  });

  it('a batch size that is not a positive integer is refused', async () => {
    const gpu = await testGpu();
    const cfg = resolveConfig({ name: 'small', patch_size: 8, embed_dim: 8, depth: 1 });
    await expect(VimGpu.create(gpu, cfg, { batch: 0, training: false })).rejects.toThrow(VimError);
  });
});
