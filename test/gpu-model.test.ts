/**
 * The whole Vim on the GPU against the float64 reference: logits and every parameter gradient
 * for real CIFAR-10 images (the combine of the two directions fused into the scans, and with
 * drop path also through the separate combine dispatches; at 16 images with a block's weight
 * sums in one dispatch and in one each); a training step's submits and read-backs; overfitting
 * one batch.
 */
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../src/model/config.js';
import { initParams } from '../src/model/init.js';
import { ParamSet, paramSpecs } from '../src/model/params.js';
import { batchDirectionsDefault, fuseCombineDefault, mergeWeightSumsDefault, pairScanReduceDefault, VimGpu } from '../src/model/vim-gpu.js';
import { vimLoss } from '../src/reference/vim.js';
import { smooth_targets } from '../src/reference/cross-entropy.js';
import { loadCifar10Split } from '../src/data/cifar10.js';
import { VimError } from '../src/errors.js';
import { countSubmitsAndMaps, relErr, testGpu } from './helpers/gpu.js';
import { withEnv } from './helpers/env.js';
import { scanCheckpointElements, scanTuning, selectiveScanBackwardPlan } from '../src/gpu/ops/selective-scan.js';

const test = loadCifar10Split(undefined, 'test', { verify: false });
const train = loadCifar10Split(undefined, 'train', { verify: false });
const IMG = 3 * 32 * 32;

function batch(split: typeof test, start: number, n: number, C: number, smoothing = 0) {
  const images = split.images.slice(start * IMG, (start + n) * IMG);
  const labels = Array.from(split.labels.subarray(start, start + n));
  const targets = new Float64Array(n * C);
  smooth_targets(targets, labels, n, C, smoothing);
  return { images, labels, targets };
}

/**
 * One AdamW step of a fresh training model at batch B on training images from `start`, from
 * initParams(cfg, seed): what the model chose, its activation bytes, the loss and the new parameters.
 */
async function oneStep(gpu: Awaited<ReturnType<typeof testGpu>>, B: number, start: number, seed: number, opts: { scanCheckpoints?: 'forward' | 'backward' }) {
  const cfg = loadConfig('vim-nano');
  const { images, targets } = batch(train, start, B, cfg.C);
  const model = await VimGpu.create(gpu, cfg, { batch: B, training: true, ...opts });
  model.setParams(initParams(cfg, seed));
  model.setBatch(images, B, Float32Array.from(targets));
  const loss = await model.trainStep({ lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.05 });
  const out = {
    where: model.scanCheckpoints, delta: model.scanDelta, note: model.note, bytes: model.activationBytes, loss, params: await model.getParams(),
  };
  model.destroy();
  return out;
}

/** The parameter whose gradient is furthest from the reference's, and that relative error. */
function worstGradient(cfg: ReturnType<typeof loadConfig>, grads: ParamSet<Float32Array>, ref: ParamSet<Float64Array>): [string, number] {
  let worst: [string, number] = ['', 0];
  for (const s of paramSpecs(cfg)) {
    const e = relErr(grads.get(s.name), ref.get(s.name));
    if (e > worst[1]) worst = [s.name, e];
  }
  return worst;
}

describe('Vim on the GPU (vim-nano)', () => {
  const cfg = loadConfig('vim-nano');

  it('logits and every parameter gradient match the float64 reference for 3 real images', async () => {
    const gpu = await testGpu();
    const B = 3;
    const params = initParams(cfg, 7);
    // Perturb the deterministic tensors too (ones, zeros) so that every gradient path is exercised.
    const p64 = params.toFloat64();
    for (let i = 0; i < p64.flat.length; i++) p64.flat[i] = Math.fround(p64.flat[i] * (1 + 0.1 * Math.sin(i)) + 0.01 * Math.cos(3 * i));
    const { images, targets } = batch(test, 0, B, cfg.C, 0.1);
    const ref = vimLoss(p64, images, targets, B);

    const model = await VimGpu.create(gpu, cfg, { batch: B, training: true });
    model.setParams(p64);
    model.setBatch(images, B, Float32Array.from(targets));
    const loss = await model.computeGradients();
    const logits = await model.forward();
    expect(relErr(logits, ref.logits)).toBeLessThan(1e-4);
    expect(Math.abs(loss - ref.loss) / ref.loss).toBeLessThan(1e-4);
    const grads = await model.getGrads();
    const worst: [string, number][] = [];
    for (const s of paramSpecs(cfg)) {
      const e = relErr(grads.get(s.name), ref.grads.get(s.name));
      worst.push([s.name, e]);
    }
    worst.sort((a, b) => b[1] - a[1]);
    expect(worst[0][1], `worst gradient: ${worst[0][0]}`).toBeLessThan(1e-4);
    model.destroy();
  });

  /**
   * Drop path: logits (through the loss) and every parameter gradient against the reference;
   * `separate`: the model runs the combine dispatches (else none: fused into the scans).
   */
  async function checkDropPath(separate: boolean): Promise<void> {
    const gpu = await testGpu();
    const B = 3;
    const p64 = initParams(cfg, 9).toFloat64();
    for (let i = 0; i < p64.flat.length; i++) p64.flat[i] = Math.fround(p64.flat[i] * (1 + 0.1 * Math.cos(i)) + 0.01 * Math.sin(5 * i));
    const { images, targets } = batch(test, 3, B, cfg.C, 0.1);
    // (depth, B): a mix of dropped samples (0) and kept ones (1/(1 − p)), different per block
    const scales = new Float64Array(cfg.depth * B);
    for (let i = 0; i < scales.length; i++) scales[i] = i % 4 === 1 ? 0 : Math.fround(1 / (1 - 0.05 * (1 + (i % 3))));
    const ref = vimLoss(p64, images, targets, B, scales);

    const model = await VimGpu.create(gpu, cfg, { batch: B, training: true, dropPath: true });
    model.setParams(p64);
    model.setBatch(images, B, Float32Array.from(targets));
    model.setDropScales(Float32Array.from(scales));
    expect(model.forwardList.filter((d) => d.label === 'combine_forward').length).toBe(separate ? cfg.depth : 0);
    expect(model.backwardList.filter((d) => d.label === 'combine_backward').length).toBe(separate ? cfg.depth : 0);
    const loss = await model.computeGradients();
    expect(Math.abs(loss - ref.loss) / ref.loss).toBeLessThan(1e-4);
    const worst = worstGradient(cfg, await model.getGrads(), ref.grads);
    expect(worst[1], `worst gradient: ${worst[0]}`).toBeLessThan(1e-4);
    expect(() => model.setDropScales(new Float32Array(2))).toThrow(/drop-path factors/);
    model.destroy();
  }

  it('with drop path: logits and every parameter gradient match the float64 reference', () => checkDropPath(false));

  it('with drop path and the separate combine dispatches (VIM_FUSE_COMBINE=0): the same', async () => {
    await withEnv('VIM_FUSE_COMBINE', async () => {
      process.env.VIM_FUSE_COMBINE = '0';
      expect(fuseCombineDefault()).toBe(false);
      await checkDropPath(true);
      process.env.VIM_FUSE_COMBINE = 'yes';
      expect(() => fuseCombineDefault()).toThrow(/VIM_FUSE_COMBINE must be '0' \(separate combine dispatches\) or '1'/);
      delete process.env.VIM_FUSE_COMBINE;
      expect(fuseCombineDefault(), 'fused by default').toBe(true);
    });
  });

  it('16 images, where the weight gradients split: every gradient matches the float64 reference with the sums merged a block and x_proj, dt_proj a dispatch for both directions; both scan reductions of a block in one dispatch; VIM_SCAN_PAIR_REDUCE=0 (a scan reduction a direction) and VIM_BATCH_DIRECTIONS=0 (a dispatch a direction) give the same bits, VIM_MERGE_WEIGHT_SUMS=0 too but for the sums of the norm and conv1d parameters (another order)', async () => {
    const gpu = await testGpu();
    const B = 16;
    const p64 = initParams(cfg, 11).toFloat64();
    for (let i = 0; i < p64.flat.length; i++) p64.flat[i] = Math.fround(p64.flat[i] * (1 + 0.1 * Math.sin(2 * i)) + 0.01 * Math.cos(i));
    const { images, targets } = batch(test, 6, B, cfg.C, 0.1);
    const ref = vimLoss(p64, images, targets, B);
    const flats: Float64Array[] = [];
    await withEnv(['VIM_MERGE_WEIGHT_SUMS', 'VIM_SCAN_PAIR_REDUCE', 'VIM_BATCH_DIRECTIONS'], async () => {
      for (const [merged, pair, batched] of [[true, true, true], [false, true, true], [true, false, true], [true, true, false]]) {
        process.env.VIM_MERGE_WEIGHT_SUMS = merged ? '1' : '0';
        process.env.VIM_SCAN_PAIR_REDUCE = pair ? '1' : '0';
        process.env.VIM_BATCH_DIRECTIONS = batched ? '1' : '0';
        const model = await VimGpu.create(gpu, cfg, { batch: B, training: true });
        const count = (label: string) => model.backwardList.filter((d) => d.label === label).length;
        const sums = count('matmul_backward_weight_sums');
        const own = count('matmul_backward_weight_sum');
        expect([sums, own]).toEqual(merged ? [cfg.depth, 1] : [0, 6 * cfg.depth + 1]); // (+1: the patch embedding's)
        // the blocks' RMSNorm weights and conv1d parameters summed with the weights where merged (the final norm's on its own)
        expect([count('rmsnorm_dweight'), count('conv1d_dparams2')]).toEqual(merged ? [1, 0] : [cfg.depth + 1, cfg.depth]);
        // x_proj's forward, input and weight gradients and dt_proj's two: one dispatch for both directions where
        // batched (which needs the merged sums), one a direction otherwise
        const both = merged && batched;
        const xProj = (list: { shape?: string }[]) => list.filter((d) => d.shape?.startsWith(`M=${B * cfg.L} I=${cfg.E} O=${cfg.R + 2 * cfg.N}`));
        expect(xProj(model.forwardList).map((d) => d.shape?.endsWith(' ×2'))).toEqual(Array(both ? cfg.depth : 2 * cfg.depth).fill(both));
        expect(xProj(model.backwardList)).toHaveLength((both ? 2 : 4) * cfg.depth);
        const reductions = model.backwardList.filter((d) => d.label === 'selective_scan_reduce').length;
        expect(reductions).toBe(pair ? cfg.depth : 2 * cfg.depth);
        model.setParams(p64);
        model.setBatch(images, B, Float32Array.from(targets));
        const loss = await model.computeGradients();
        expect(Math.abs(loss - ref.loss) / ref.loss).toBeLessThan(1e-4);
        const grads = await model.getGrads();
        const worst = worstGradient(cfg, grads, ref.grads);
        expect(worst[1], `worst gradient: ${worst[0]}`).toBeLessThan(1e-4);
        flats.push(Float64Array.from(grads.flat));
        model.destroy();
      }
      // unmerged, the blocks' RMSNorm and conv1d parameter partials are summed by tree column sums,
      // in another order: those gradients agree closely, every other bit for bit
      const otherOrder = (name: string) => /^layers\.\d+\.(norm\.weight|mixer\.conv1d(_b)?\.(weight|bias))$/.test(name);
      const named = (flat: Float64Array, keep: (name: string) => boolean) => {
        const set = new ParamSet(cfg, flat);
        return set.specs.filter((sp) => keep(sp.name)).flatMap((sp) => Array.from(set.get(sp.name)));
      };
      expect(named(flats[1], (n) => !otherOrder(n))).toEqual(named(flats[0], (n) => !otherOrder(n)));
      expect(named(flats[1], otherOrder).length).toBe(cfg.depth * (cfg.D + 2 * cfg.E * (cfg.K + 1)));
      expect(relErr(Float64Array.from(named(flats[1], otherOrder)), Float64Array.from(named(flats[0], otherOrder)))).toBeLessThan(1e-6);
      expect(Array.from(flats[0])).toEqual(Array.from(flats[2]));
      expect(Array.from(flats[0])).toEqual(Array.from(flats[3]));
      process.env.VIM_BATCH_DIRECTIONS = 'no';
      expect(() => batchDirectionsDefault()).toThrow(/VIM_BATCH_DIRECTIONS must be '0' \(x_proj and dt_proj a dispatch a direction\) or '1'/);
      delete process.env.VIM_BATCH_DIRECTIONS;
      expect(batchDirectionsDefault(), 'both directions in one dispatch by default').toBe(true);
      process.env.VIM_MERGE_WEIGHT_SUMS = 'yes';
      expect(() => mergeWeightSumsDefault()).toThrow(/VIM_MERGE_WEIGHT_SUMS must be '0' \(a sum dispatch for each weight gradient\) or '1'/);
      delete process.env.VIM_SCAN_PAIR_REDUCE;
      expect(pairScanReduceDefault(), 'one reduction for both directions by default').toBe(true);
      process.env.VIM_SCAN_PAIR_REDUCE = '2';
      expect(() => pairScanReduceDefault()).toThrow(/VIM_SCAN_PAIR_REDUCE must be '0' \(a reduction after each direction's scan backward\) or '1'/);
    });
  });

  it('a training step submits once and reads back only the loss', async () => {
    const gpu = await testGpu();
    const B = 4;
    const model = await VimGpu.create(gpu, cfg, { batch: B, training: true });
    model.setParams(initParams(cfg, 1));
    const { images, targets } = batch(train, 0, B, cfg.C);
    model.setBatch(images, B, Float32Array.from(targets));
    const { result: loss, submits, maps } = await countSubmitsAndMaps(gpu,
      () => model.trainStep({ lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.05 }));
    expect(Number.isFinite(loss)).toBe(true);
    expect(submits).toBe(1);
    expect(maps).toBe(1);
    model.destroy();
  });

  it("the scan's checkpoints from the forward or from the backward's pass 1: the same step, 2·depth checkpoint tensors apart less the scratch's own", async () => {
    const gpu = await testGpu();
    const B = 4;
    const f = await oneStep(gpu, B, 8, 5, { scanCheckpoints: 'forward' });
    const b = await oneStep(gpu, B, 8, 5, { scanCheckpoints: 'backward' });
    expect([f.where, b.where, f.note, b.note]).toEqual(['forward', 'backward', null, null]);
    const shape = { B, L: cfg.L, E: cfg.E, N: cfg.N, R: cfg.R };
    const ck = 4 * scanCheckpointElements(shape, selectiveScanBackwardPlan(shape, scanTuning(gpu)).segment);
    // 2·depth checkpoint sets more, and the shared scratch (here sized by the scan's partials and
    // checkpoints, a region of them a direction where both directions' reductions run as one) one
    // checkpoint region a direction less
    expect(f.bytes - b.bytes).toBe((2 * cfg.depth - (pairScanReduceDefault() ? 2 : 1)) * ck);
    expect(Math.abs(f.loss - b.loss)).toBeLessThan(1e-6 * Math.abs(b.loss));
    expect(relErr(f.params.flat, b.params.flat)).toBeLessThan(1e-6);
    const inference = await VimGpu.create(gpu, cfg, { batch: B, training: false });
    expect(inference.scanCheckpoints).toBeNull();
    inference.destroy();
  });

  it('Δraw stored by the forward or recomputed by the split backward: the same step to rounding, 2·depth Δraw tensors apart', async () => {
    const gpu = await testGpu();
    const B = 4;
    const run = (delta: 'stored' | 'recomputed') => withEnv(['VIM_SCAN_KERNEL', 'VIM_SCAN_DELTA'], () => {
      process.env.VIM_SCAN_KERNEL = 'split';
      process.env.VIM_SCAN_DELTA = delta;
      return oneStep(gpu, B, 12, 6, {});
    });
    const s = await run('stored');
    const r = await run('recomputed');
    expect([s.delta, r.delta, s.where, r.where]).toEqual(['stored', 'recomputed', 'forward', 'forward']);
    expect(s.bytes - r.bytes).toBe(2 * cfg.depth * B * cfg.L * cfg.E * 4);
    expect(Math.abs(s.loss - r.loss)).toBeLessThan(1e-6 * Math.abs(s.loss));
    expect(relErr(r.params.flat, s.params.flat)).toBeLessThan(1e-6);
    const inference = await VimGpu.create(gpu, cfg, { batch: B, training: false });
    expect(inference.scanDelta).toBeNull();
    inference.destroy();
  });

  it('30 AdamW steps on one batch of 16 drive the loss below 10% of its start', async () => {
    const gpu = await testGpu();
    const B = 16;
    const model = await VimGpu.create(gpu, cfg, { batch: B, training: true });
    model.setParams(initParams(cfg, 3));
    const { images, targets } = batch(train, 100, B, cfg.C);
    model.setBatch(images, B, Float32Array.from(targets));
    const losses: number[] = [];
    for (let s = 0; s < 30; s++) {
      losses.push(await model.trainStep({ lr: 2e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 }));
    }
    expect(losses.every(Number.isFinite)).toBe(true);
    expect(losses[29], `losses: ${losses.map((l) => l.toFixed(3)).join(' ')}`).toBeLessThan(0.1 * losses[0]);
    model.destroy();
  });

  it('refuses a batch larger than its buffers, with a clear error', async () => {
    const gpu = await testGpu();
    const model = await VimGpu.create(gpu, cfg, { batch: 2, training: false });
    const images = test.images.slice(0, 3 * IMG);
    expect(() => model.setBatch(images, 3)).toThrow(VimError);
    expect(() => model.setBatch(images, 3)).toThrow(/larger than the 2/);
    model.destroy();
  });

  it('inference and training builds give the same logits', async () => {
    const gpu = await testGpu();
    const params: ParamSet<Float32Array> = initParams(cfg, 11);
    const { images } = batch(test, 5, 2, cfg.C);
    const a = await VimGpu.create(gpu, cfg, { batch: 2, training: false });
    const b = await VimGpu.create(gpu, cfg, { batch: 3, training: true });
    a.setParams(params);
    b.setParams(params);
    a.setBatch(images, 2);
    b.setBatch(images, 2);
    const la = await a.forward();
    const lb = (await b.forward()).subarray(0, 2 * cfg.C);
    expect(relErr(la, lb)).toBeLessThan(1e-6);
    a.destroy();
    b.destroy();
  });
});
