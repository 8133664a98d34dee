/**
 * train-vim, eval-vim and predict-vim run as a user types them (node dist/cli/….js, built once
 * here): a one-epoch run and the folder it leaves, evaluation of its checkpoint, prediction on a
 * PNG and a JPEG, a run stopped with Ctrl-C and resumed against an uninterrupted one, a diverging
 * run, and bad inputs. Shapes are tiny (D=16, depth 1, 8-px patches) so that lavapipe keeps up.
 */
import { copyFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadCifar10Split } from '../src/data/cifar10.js';
import { saveChwImage } from '../src/io/images.js';
import { readCheckpointInfo } from '../src/model/checkpoint.js';
import type { EpochRecord, StepRecord } from '../src/train/run-dir.js';
import { pngStats } from './helpers/png.js';
import { buildIfStale, expectOneLineError, runCommand, type Ran } from './helpers/cli.js';

const TMP = mkdtempSync(join(tmpdir(), 'vim-cli-'));
const MODEL = join(TMP, 'vim-test.json');
const PER = 3 * 32 * 32;

/** Run a built command in the test's folder. */
function cli(cmd: string, args: string[], onStdout?: (text: string) => boolean, signals?: NodeJS.Signals[]): Promise<Ran> {
  return runCommand(TMP, cmd, args, onStdout, signals);
}

function jsonl<T>(path: string): T[] {
  return readFileSync(path, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as T);
}

const TRAIN = ['--model', MODEL, '--batch-size', '8', '--test-subset', '16', '--log-every', '0'];

beforeAll(async () => {
  buildIfStale();
  writeFileSync(MODEL, JSON.stringify({ name: 'vim-test', patch_size: 8, embed_dim: 16, depth: 1 }));
  const test = loadCifar10Split(undefined, 'test', { verify: false });
  await saveChwImage(join(TMP, 'cat.png'), test.images.subarray(0, PER), 32, 32); // test image 0 is a cat
  await saveChwImage(join(TMP, 'ship.jpg'), test.images.subarray(PER, 2 * PER), 32, 32);
  writeFileSync(join(TMP, 'notes.txt'), 'not an image');
});

afterAll(() => rmSync(TMP, { recursive: true, force: true }));

describe('train-vim, eval-vim and predict-vim as a user runs them', () => {
  const run = join(TMP, 'run1');

  it('train-vim trains an epoch on a subset and leaves a complete run folder', async () => {
    const r = await cli('train-vim', [...TRAIN, '--epochs', '1', '--subset', '48', '--out', run]);
    expect(r.errors, r.stderr).toEqual([]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('CPU adapter');
    expect(r.stdout).toMatch(/epoch 1\/1 step 6\/6 {2}loss \d\.\d{4}/);
    expect(r.stdout).toMatch(/epoch 1\/1 {2}train loss \d\.\d{4} acc [\d.]+% {2}\| {2}test loss \d\.\d{4} acc [\d.]+%/);
    for (const f of ['config.json', 'recipe.json', 'metrics.jsonl', 'steps.jsonl', 'last.safetensors', 'best.safetensors', 'state.safetensors']) {
      expect(existsSync(join(run, f)), f).toBe(true);
    }
    const metrics = jsonl<EpochRecord>(join(run, 'metrics.jsonl'));
    expect(metrics.length).toBe(1);
    expect(metrics[0]).toMatchObject({ epoch: 1, step: 6, test_images: 16, weights: 'raw' });
    expect(jsonl<StepRecord>(join(run, 'steps.jsonl')).map((s) => s.step)).toEqual([1, 2, 3, 4, 5, 6]);
    const recipe = JSON.parse(readFileSync(join(run, 'recipe.json'), 'utf8'));
    expect(recipe).toMatchObject({ model: MODEL, epochs: 1, batchSize: 8, subset: 48, testSubset: 16, kind: 'cpu' });
    const { cfg, meta } = readCheckpointInfo(join(run, 'best.safetensors'));
    expect(cfg.name).toBe('vim-test');
    expect(meta.recipe).toMatchObject({ epochs: 1, batchSize: 8 });
    expect(meta.metrics).toMatchObject({ epoch: 1, test_acc: metrics[0].test_acc });
    for (const png of ['curves.png', 'confusion.png']) {
      const s = await pngStats(join(run, png));
      expect(s.format).toBe('png');
      expect(s.width).toBeGreaterThan(400);
      expect(s.stdev, png).toBeGreaterThan(15);
    }
  });

  it('eval-vim reports the checkpoint\'s accuracy as text, JSON and a confusion-matrix PNG', async () => {
    const ck = join(run, 'best.safetensors');
    const j = await cli('eval-vim', ['--checkpoint', ck, '--webgpu', '--limit', '16', '--batch-size', '8', '--json']);
    expect(j.errors, j.stderr).toEqual([]);
    expect(j.code).toBe(0);
    const res = JSON.parse(j.stdout);
    expect(res.images).toBe(16);
    expect(res.top5).toBeGreaterThanOrEqual(res.top1);
    expect(res.confusion.flat().reduce((a: number, b: number) => a + b, 0)).toBe(16);
    expect(Object.keys(res.per_class).length).toBe(10);
    // The same 16 images the run evaluated, with the same weights: the same accuracy.
    const m = jsonl<EpochRecord>(join(run, 'metrics.jsonl'))[0];
    expect(res.top1).toBe(m.test_acc);
    expect(Math.abs(res.loss - m.test_loss!)).toBeLessThan(1e-6);

    // --holdout: the last N training images (those train-vim --holdout N keeps out), not test images
    const h = await cli('eval-vim', ['--checkpoint', ck, '--holdout', '24', '--batch-size', '8', '--json']);
    expect(h.errors, h.stderr).toEqual([]);
    const hr = JSON.parse(h.stdout);
    expect(hr).toMatchObject({ images: 24, split: 'holdout', holdout: 24 });
    const trainLabels = loadCifar10Split(undefined, 'train', { verify: false }).labels.subarray(50_000 - 24);
    const perClass = Array.from({ length: 10 }, (_, c) => trainLabels.filter((l) => l === c).length);
    expect(hr.confusion.map((row: number[]) => row.reduce((a, b) => a + b, 0))).toEqual(perClass);

    const plot = join(TMP, 'confusion-eval.png');
    const t = await cli('eval-vim', ['--checkpoint', ck, '--limit', '20', '--batch-size', '8', '--plot', plot]);
    expect(t.code).toBe(0);
    expect(t.stdout).toMatch(/top-1 accuracy +[\d.]+%/);
    expect(t.stdout).toMatch(/top-5 accuracy +[\d.]+%/);
    expect(t.stdout).toContain('per-class accuracy');
    expect(t.stdout).toMatch(/ {2}airplane +[\d.–%]+/);
    expect(t.stdout).toContain('confusion matrix');
    expect((await pngStats(plot)).stdev).toBeGreaterThan(15);
  });

  it('predict-vim classifies a PNG and a JPEG, and names a file that is not an image', async () => {
    const ck = join(run, 'best.safetensors');
    const r = await cli('predict-vim', ['--checkpoint', ck, 'cat.png', 'ship.jpg']);
    expect(r.errors, r.stderr).toEqual([]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^cat\.png\n( +[\d.]+% {2}\w+\n){5}ship\.jpg\n( +[\d.]+% {2}\w+\n){5}$/);
    const j = await cli('predict-vim', ['--checkpoint', ck, '--json', 'notes.txt', 'cat.png', 'ship.jpg']);
    expect(j.code).toBe(1);
    const res = JSON.parse(j.stdout);
    expect(res.images.map((i: { file: string }) => i.file)).toEqual(['notes.txt', 'cat.png', 'ship.jpg']);
    expect(res.images[0].error).toMatch(/notes\.txt: not an image/);
    for (const img of res.images.slice(1)) {
      const probs = img.predictions.map((q: { probability: number }) => q.probability);
      expect(probs.length).toBe(5);
      for (let i = 1; i < 5; i++) expect(probs[i]).toBeLessThanOrEqual(probs[i - 1]);
      expect(probs.reduce((a: number, b: number) => a + b, 0)).toBeLessThanOrEqual(1 + 1e-6);
    }
    const mixed = await cli('predict-vim', ['--checkpoint', ck, 'notes.txt', 'cat.png']);
    expect(mixed.code).toBe(1);
    expect(mixed.errors[0]).toMatch(/^predict-vim: error: notes\.txt: not an image/);
    expect(mixed.stdout).toMatch(/^cat\.png\n/);
  });

  it('a run stopped with Ctrl-C and resumed gives the same per-step losses as an uninterrupted one', async () => {
    const args = [...TRAIN, '--epochs', '2', '--subset', '192', '--seed', '5', '--augment', 'crop,flip,mixup', '--ema', '0.9', '--drop-path', '0.2'];
    const a = join(TMP, 'whole');
    const b = join(TMP, 'stopped');
    const whole = await cli('train-vim', [...args, '--out', a]);
    expect(whole.code, whole.stderr).toBe(0);
    const stopped = await cli('train-vim', [...args, '--out', b], (out) => /step 3\/24/.test(out));
    expect(stopped.code, stopped.stderr).toBe(130);
    expect(stopped.stdout).toContain(`resume with: npm run train-vim -- --resume ${b}`);
    const before = jsonl<StepRecord>(join(b, 'steps.jsonl'));
    expect(before.length).toBeGreaterThanOrEqual(3);
    expect(before.length).toBeLessThan(48);
    const resumed = await cli('train-vim', ['--resume', b, '--log-every', '0']);
    expect(resumed.code, resumed.stderr).toBe(0);
    expect(resumed.stdout).toContain(`resuming ${b} at epoch`);
    const la = jsonl<StepRecord>(join(a, 'steps.jsonl'));
    const lb = jsonl<StepRecord>(join(b, 'steps.jsonl'));
    expect(lb.map((s) => s.step)).toEqual(la.map((s) => s.step));
    expect(la.length).toBe(48);
    for (let i = 0; i < la.length; i++) {
      expect(Math.abs(lb[i].loss - la[i].loss), `step ${i + 1}`).toBeLessThanOrEqual(1e-5);
      expect(lb[i].lr).toBe(la[i].lr);
    }
    const ma = jsonl<EpochRecord>(join(a, 'metrics.jsonl'));
    const mb = jsonl<EpochRecord>(join(b, 'metrics.jsonl'));
    expect(mb.map((m) => [m.epoch, m.train_acc, m.test_acc, m.weights])).toEqual(ma.map((m) => [m.epoch, m.train_acc, m.test_acc, m.weights]));
    // Stopped at the first step after an epoch's end, while that epoch's files may still be being
    // written in the background: they are all on disk when the command exits, and the run resumes the same.
    // The stop comes as SIGTERM sent twice at once, as `timeout` sends it: it still saves.
    const c = join(TMP, 'stopped-epoch-2');
    const stopped2 = await cli('train-vim', [...args, '--out', c], (out) => /epoch 2\/2 step 1\/24/.test(out), ['SIGTERM', 'SIGTERM']);
    expect(stopped2.code, stopped2.stderr).toBe(143);
    expect(stopped2.stdout).toContain('SIGTERM: stopping after the current step');
    expect(stopped2.stderr).not.toContain('quit without saving');
    expect(jsonl<EpochRecord>(join(c, 'metrics.jsonl')).map((m) => m.epoch)).toEqual([1]);
    expect(readCheckpointInfo(join(c, 'last.safetensors')).meta.metrics).toMatchObject({ epoch: 1 });
    expect(readdirSync(c).filter((f) => f.endsWith('.tmp'))).toEqual([]);
    const resumed2 = await cli('train-vim', ['--resume', c, '--log-every', '0']);
    expect(resumed2.code, resumed2.stderr).toBe(0);
    const lc = jsonl<StepRecord>(join(c, 'steps.jsonl'));
    expect(lc.map((s) => s.step)).toEqual(la.map((s) => s.step));
    for (let i = 0; i < la.length; i++) expect(Math.abs(lc[i].loss - la[i].loss), `step ${i + 1}`).toBeLessThanOrEqual(1e-5);
    expect(jsonl<EpochRecord>(join(c, 'metrics.jsonl')).map((m) => [m.epoch, m.train_acc, m.test_acc])).toEqual(ma.map((m) => [m.epoch, m.train_acc, m.test_acc]));
    // Resuming a finished run says so and changes nothing; with more --epochs it trains on.
    const again = await cli('train-vim', ['--resume', b]);
    expect(again.code).toBe(0);
    expect(again.stdout).toContain('already finished');
    const longer = await cli('train-vim', ['--resume', b, '--epochs', '3', '--log-every', '0']);
    expect(longer.code, longer.stderr).toBe(0);
    expect(jsonl<EpochRecord>(join(b, 'metrics.jsonl')).map((m) => m.epoch)).toEqual([1, 2, 3]);
    expect(JSON.parse(readFileSync(join(b, 'recipe.json'), 'utf8')).epochs).toBe(3);
  });

  it('a run whose loss becomes NaN stops with a clear message and writes no checkpoint', async () => {
    const dir = join(TMP, 'diverged');
    const r = await cli('train-vim', [...TRAIN, '--epochs', '1', '--subset', '48', '--lr', '1e30', '--warmup', '0', '--grad-clip', '0', '--out', dir]);
    expect(r.code).toBe(1);
    expect(r.errors.length, r.stderr).toBe(1);
    expect(r.errors[0]).toMatch(/^train-vim: error: the loss became (NaN|infinite) at step \d+ \(epoch 1\); training stopped/);
    expect(existsSync(join(dir, 'last.safetensors'))).toBe(false);
  });

  it('bad inputs give one line on stderr, no stack trace, and a non-zero exit code', async () => {
    const ck = join(run, 'best.safetensors');
    const corrupt = join(TMP, 'corrupt.safetensors');
    copyFileSync(ck, corrupt);
    writeFileSync(corrupt, readFileSync(corrupt).subarray(0, 500));
    const cases: [string, string[], RegExp][] = [
      ['eval-vim', ['--checkpoint', join(TMP, 'missing.safetensors')], /missing\.safetensors: no such file/],
      ['eval-vim', ['--checkpoint', corrupt], /corrupt\.safetensors: .*truncated/],
      ['eval-vim', ['--checkpoint', ck, '--model', 'vim-nano'], /was trained for vim-test .* but the model is vim-nano/],
      ['eval-vim', ['--checkpoint', ck, '--workers', '0'], /--workers: expected an integer ≥ 1 and ≤ 64 but received "0"/],
      ['predict-vim', ['--checkpoint', ck, '--model', 'vim-nano', 'cat.png'], /was trained for vim-test/],
      ['train-vim', ['--model', 'vim-enormous'], /unknown model "vim-enormous"/],
      ['train-vim', ['--epochs', '-3'], /--epochs: expected an? integer ≥ 1 but received "-3"/],
      ['train-vim', ['--lr', 'fast'], /--lr: expected a number > 0/],
      ['train-vim', ['--mixup-alpha', '0.3'], /--mixup-alpha sets mixup, which the default augmentations here \(crop,flip\) do not have: add it, e\.g\. --augment crop,flip,mixup/],
      ['train-vim', ['--augment', 'crop', '--erase-prob', '0.3'], /--erase-prob sets erase, which --augment does not have: add it, e\.g\. --augment crop,erase/],
      ['train-vim', ['--resume', join(TMP, 'no-run')], /holds no train-vim run/],
      ['train-vim', ['--out', run], /already holds a run: continue it with --resume/],
      ['predict-vim', ['--checkpoint', ck, 'notes.txt'], /notes\.txt: not an image/],
      ['predict-vim', ['--checkpoint', ck, 'nowhere.png'], /nowhere\.png: no such file/],
    ];
    for (const [cmd, args, message] of cases) expectOneLineError(await cli(cmd, args), cmd, args, message);
  });

  it('--help documents every option', async () => {
    const t = await cli('train-vim', ['--help']);
    expect(t.code).toBe(0);
    for (const o of ['model', 'epochs', 'batch-size', 'lr', 'weight-decay', 'warmup', 'label-smoothing', 'augment', 'ema', 'grad-clip',
      'seed', 'data-dir', 'out', 'resume', 'eval-every', 'subset', 'holdout', 'drop-path']) {
      expect(t.stdout).toMatch(new RegExp(`--${o} `));
    }
    const e = await cli('eval-vim', ['--help']);
    for (const o of ['checkpoint', 'limit', 'plot', 'json', 'batch-size', 'flip']) expect(e.stdout).toMatch(new RegExp(`--${o}`));
    const p = await cli('predict-vim', ['--help']);
    for (const o of ['checkpoint', 'json', 'top']) expect(p.stdout).toMatch(new RegExp(`--${o}`));
    expect(p.stdout).toMatch(/centre 32×32/);
  });
});
