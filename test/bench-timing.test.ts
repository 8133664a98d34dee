/**
 * bench-vim's timing tables: one row per kernel, or with byShape one per kernel and problem shape
 * (the matmuls of a block), the rows of either accounting for every dispatch of the step.
 */
import { describe, expect, it } from 'vitest';
import { benchTiming } from '../src/bench/timing.js';
import { loadConfig } from '../src/model/config.js';
import { testGpu } from './helpers/gpu.js';

describe('benchTiming', () => {
  it('splits the per-kernel table by problem shape where asked, each row counting its dispatches once', async () => {
    const gpu = await testGpu();
    const cfg = loadConfig('vim-nano');
    const B = 2;
    const plain = await benchTiming(gpu, cfg, B, { steps: 1, warmup: 0 });
    const split = await benchTiming(gpu, cfg, B, { steps: 1, warmup: 0, byShape: true });
    const sum = (rows: { count: number }[]) => rows.reduce((a, r) => a + r.count, 0);
    for (const [rows, dispatches] of [[plain.kernels, plain.train.dispatches], [split.kernels, split.train.dispatches],
      [split.inferKernels, split.infer.dispatches]] as const) {
      expect(sum(rows)).toBe(dispatches);
    }
    expect(plain.kernels.every((r) => r.shape === undefined)).toBe(true);
    expect(new Set(plain.kernels.map((r) => r.kernel)).size).toBe(plain.kernels.length);
    const { D, E, L } = cfg;
    const BL = B * L;
    // in_proj (D → 2E) and out_proj (E → D) of every block, forward and input gradient
    const row = (kernel: string, shape: string) => split.kernels.find((r) => r.kernel === kernel && r.shape === shape);
    expect(row('matmul_forward', `M=${BL} I=${D} O=${2 * E}`)?.count).toBe(cfg.depth);
    expect(row('matmul_forward', `M=${BL} I=${E} O=${D}`)?.count).toBe(cfg.depth);
    expect(row('matmul_backward_input', `M=${BL} I=${D} O=${2 * E}`)?.count).toBe(cfg.depth);
    const weightRows = split.kernels.filter((r) => r.kernel === 'matmul_backward_weight');
    expect(weightRows.length).toBeGreaterThan(1);
    expect(weightRows.every((r) => /^M=\d+ I=\d+ O=\d+( S=\d+)?( ×2)?$/.test(r.shape ?? ''))).toBe(true);
    // x_proj's and dt_proj's weight gradients: both directions in one dispatch, a row of depth dispatches each
    const { N, R } = cfg;
    for (const [I, O] of [[E, R + 2 * N], [R, E]]) {
      expect(weightRows.filter((r) => r.shape?.startsWith(`M=${BL} I=${I} O=${O}`) && r.shape.endsWith(' ×2')).map((r) => r.count)).toEqual([cfg.depth]);
    }
    // the flops of a kernel are the same whichever way the table is cut
    const flops = (rows: typeof plain.kernels, k: string) => rows.filter((r) => r.kernel === k).reduce((a, r) => a + r.flops, 0);
    expect(flops(split.kernels, 'matmul_forward')).toBe(flops(plain.kernels, 'matmul_forward'));
    // the scan backward: one row per direction's pipeline (the reverse one accumulates dz), the rest one row
    const scanRows = split.kernels.filter((r) => r.kernel.startsWith('selective_scan'));
    expect(scanRows.filter((r) => r.kernel === 'selective_scan_backward').map((r) => [r.shape, r.count]).sort())
      .toEqual([['forward', cfg.depth], ['reverse, accumulating', cfg.depth]]);
    expect(scanRows.filter((r) => r.kernel !== 'selective_scan_backward').every((r) => r.shape === undefined)).toBe(true);
    expect(flops(split.kernels, 'selective_scan_backward')).toBe(flops(plain.kernels, 'selective_scan_backward'));
    // exact timestamps: Dawn's default rounding down to 65,536 ns is off (src/gpu/device.ts), so the
    // kernels' times are not all whole multiples of it
    if (gpu.features.timestamps) {
      const q = 65536e-6; // ms
      expect(plain.kernels.some((r) => Math.abs(r.ms / q - Math.round(r.ms / q)) > 1e-3)).toBe(true);
    }
  });
});
