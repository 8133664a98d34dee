/**
 * eval-vim, predict-vim and bench-vim on ONNX models as a user types them (node dist/cli/….js):
 * --onnx, --use-onnx, the checkpoint through onnxruntime where WebGPU is a CPU fallback (and --webgpu), and the errors. The model is tiny
 * (D=16, depth 1, 8-px patches, class names of its own) so that the WebGPU runs compared with keep up
 * on lavapipe.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadCifar10Split } from '../src/data/cifar10.js';
import { saveChwImage } from '../src/io/images.js';
import { saveCheckpoint } from '../src/model/checkpoint.js';
import { loadConfig } from '../src/model/config.js';
import { initParams } from '../src/model/init.js';
import { buildIfStale, expectOneLineError, ROOT, runCommand, type Ran } from './helpers/cli.js';

const TMP = mkdtempSync(join(tmpdir(), 'vim-onnx-cli-'));
const PER = 3 * 32 * 32;
const NAMES = ['avion', 'auto', 'oiseau', 'chat', 'cerf', 'chien', 'grenouille', 'cheval', 'bateau', 'camion'];
const CKPT = join(TMP, 'small.safetensors');
const ONNX = join(TMP, 'small.onnx');

/** Run a built command in the test's folder. */
function cli(cmd: string, args: string[]): Promise<Ran> {
  return runCommand(TMP, cmd, args);
}

interface EvalJson {
  engine: string;
  model: string;
  images: number;
  top1: number;
  top5: number;
  loss: number;
  per_class: Record<string, number>;
  confusion: number[][];
}

interface PredictJson {
  engine: string;
  images: { file: string; predictions: { class: string; index: number; probability: number }[] }[];
}

beforeAll(async () => {
  buildIfStale();
  const model = join(TMP, 'vim-small.json');
  writeFileSync(model, JSON.stringify({ name: 'vim-small', patch_size: 8, embed_dim: 16, depth: 1, class_names: NAMES }));
  const cfg = loadConfig(model);
  saveCheckpoint(CKPT, initParams(cfg, 17), { metrics: { epoch: 1 } });
  const test = loadCifar10Split(undefined, 'test', { verify: false });
  await saveChwImage(join(TMP, 'cat.png'), test.images.subarray(0, PER), 32, 32);
  await saveChwImage(join(TMP, 'ship.jpg'), test.images.subarray(PER, 2 * PER), 32, 32);
  writeFileSync(join(TMP, 'notes.txt'), 'not an image');
  const r = await cli('export-vim', ['--checkpoint', CKPT, '--out', ONNX]);
  if (r.code !== 0) throw new Error(`export-vim failed: ${r.stderr}`);
});

afterAll(() => rmSync(TMP, { recursive: true, force: true }));

describe('eval-vim and predict-vim on ONNX', () => {
  it('eval-vim --onnx and --use-onnx give the WebGPU engine\'s accuracy, loss and confusion matrix', async () => {
    const gpu = await cli('eval-vim', ['--checkpoint', CKPT, '--webgpu', '--limit', '32', '--json']);
    expect(gpu.errors, gpu.stderr).toEqual([]);
    const onnx = await cli('eval-vim', ['--onnx', 'small.onnx', '--limit', '32', '--json']);
    expect(onnx.errors, onnx.stderr).toEqual([]);
    expect(onnx.code).toBe(0);
    const use = await cli('eval-vim', ['--checkpoint', CKPT, '--use-onnx', '--limit', '32', '--batch-size', '10', '--json']);
    expect(use.errors, use.stderr).toEqual([]);
    const [g, o, u] = [gpu, onnx, use].map((r) => JSON.parse(r.stdout) as EvalJson);
    expect([g.engine, o.engine, u.engine]).toEqual(['webgpu', 'onnxruntime', 'onnxruntime']);
    for (const r of [o, u]) {
      expect(r.images).toBe(32);
      expect(r.model).toBe('vim-small');
      expect(r.top1).toBe(g.top1);
      expect(r.top5).toBe(g.top5);
      expect(r.confusion).toEqual(g.confusion);
      expect(Math.abs(r.loss - g.loss)).toBeLessThan(1e-5);
      expect(Object.keys(r.per_class)).toEqual(NAMES); // the class names from the model's metadata
    }
  });

  it('eval-vim --flip (test-time flip) agrees between WebGPU and onnxruntime, and says so', async () => {
    const gpu = await cli('eval-vim', ['--checkpoint', CKPT, '--webgpu', '--limit', '16', '--flip', '--json']);
    expect(gpu.errors, gpu.stderr).toEqual([]);
    const onnx = await cli('eval-vim', ['--onnx', ONNX, '--limit', '16', '--flip', '--json']);
    expect(onnx.errors, onnx.stderr).toEqual([]);
    const plain = await cli('eval-vim', ['--onnx', ONNX, '--limit', '16', '--json']);
    const [g, o, p] = [gpu, onnx, plain].map((r) => JSON.parse(r.stdout) as EvalJson & { flip: boolean });
    expect([g.flip, o.flip, p.flip]).toEqual([true, true, false]);
    expect(o.confusion).toEqual(g.confusion);
    expect(Math.abs(o.loss - g.loss)).toBeLessThan(1e-5);
    expect(Math.abs(o.loss - p.loss)).toBeGreaterThan(1e-6); // the mirrors change the logits
    const text = await cli('eval-vim', ['--onnx', ONNX, '--limit', '8', '--flip']);
    expect(text.stdout).toContain('test-time flip: each image and its mirror, logits averaged');
    expect(text.stdout).toMatch(/evaluated 8 test images and their mirrors in/);
  });

  it('eval-vim --onnx prints the same report as with a checkpoint', async () => {
    const r = await cli('eval-vim', ['--onnx', ONNX, '--limit', '32']);
    expect(r.errors, r.stderr).toEqual([]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^model: .*small\.onnx: vim-small \(D=16, depth 1.*\(ONNX, opset 17\)$/m);
    expect(r.stdout).toMatch(/^engine: onnxruntime-node [\d.]+ on the CPU/m);
    expect(r.stdout).toMatch(/evaluated 32 test images in [\d.]+ s \([\d.]+ images\/s, batch 16\)/); // onnxruntime's default batch (ONNX_DEFAULT_BATCH), under --limit
    expect(r.stdout).toMatch(/top-1 accuracy +[\d.]+%/);
    expect(r.stdout).toMatch(/top-5 accuracy +[\d.]+%/);
    expect(r.stdout).toMatch(/ {2}grenouille +[\d.–%]+/);
    expect(r.stdout).toContain('confusion matrix');
    expect(r.stdout).not.toMatch(/adapter:|CPU fallback/); // no WebGPU involved
  });

  it('eval-vim --checkpoint runs through onnxruntime where the WebGPU adapter is a CPU fallback, says so in one line, and --webgpu runs it there', async () => {
    const forced = await cli('eval-vim', ['--checkpoint', CKPT, '--webgpu', '--limit', '8']);
    expect(forced.code, forced.stderr).toBe(0);
    const adapter = /^adapter: (.*)$/m.exec(forced.stdout)![1]!;
    expect(forced.stdout).not.toContain('CPU fallback');
    const r = await cli('eval-vim', ['--checkpoint', CKPT, '--limit', '8']);
    expect(r.code, r.stderr).toBe(0);
    const notes = r.stdout.split('\n').filter((l) => l.includes('CPU fallback'));
    if (adapter.includes('(CPU)')) {
      expect(notes).toHaveLength(1);
      expect(notes[0]).toMatch(/^this WebGPU adapter is a CPU fallback \(.+\): the checkpoint runs through onnxruntime instead, exported to ONNX in memory \(the same predictions, much faster here\); --webgpu runs it on the adapter$/);
      expect(r.stdout).toMatch(/^engine: onnxruntime-node [\d.]+ on the CPU .*: exported to ONNX in memory in \d+ ms/m);
      expect(r.stdout).not.toMatch(/^adapter:/m);
    } else {
      expect(notes).toEqual([]);
      expect(r.stdout).toMatch(/^adapter: /m);
    }
    // the same accuracy either way
    const top1 = (s: string) => /top-1 accuracy +([\d.]+)%/.exec(s)?.[1];
    expect(top1(r.stdout)).toBe(top1(forced.stdout));
  });

  it('eval-vim --checkpoint on a machine with no WebGPU adapter runs through onnxruntime; --webgpu there is a one-line error', () => {
    const env = { ...process.env, FORCE_COLOR: '0', VK_ICD_FILENAMES: '/nonexistent/icd.json', VK_DRIVER_FILES: '/nonexistent/icd.json' };
    const run = (args: string[]) => spawnSync(process.execPath, [join(ROOT, 'dist', 'cli', 'eval-vim.js'), '--checkpoint', CKPT, '--limit', '8', ...args],
      { cwd: TMP, encoding: 'utf8', env, timeout: 120_000 });
    const r = run([]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^no WebGPU adapter here: the checkpoint runs through onnxruntime instead, exported to ONNX in memory/m);
    expect(r.stdout).toMatch(/evaluated 8 test images in/);
    const w = run(['--webgpu']);
    expect(w.status).toBe(1);
    const lines = w.stderr.split('\n').filter((l) => l.startsWith('eval-vim:'));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/no WebGPU adapter found/);
  });

  it('predict-vim --onnx and --use-onnx give the WebGPU engine\'s probabilities, with the model\'s class names', async () => {
    const text = await cli('predict-vim', ['--onnx', ONNX, 'cat.png', 'ship.jpg']);
    expect(text.errors, text.stderr).toEqual([]);
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/^cat\.png\n( +[\d.]+% {2}\w+\n){5}ship\.jpg\n( +[\d.]+% {2}\w+\n){5}$/);
    const runs = await Promise.all([
      cli('predict-vim', ['--checkpoint', CKPT, '--webgpu', '--json', 'cat.png', 'ship.jpg']),
      cli('predict-vim', ['--onnx', ONNX, '--json', 'cat.png', 'ship.jpg']),
      cli('predict-vim', ['--checkpoint', CKPT, '--use-onnx', '--json', 'cat.png', 'ship.jpg']),
    ]);
    for (const r of runs) expect(r.code, r.stderr).toBe(0);
    const [g, o, u] = runs.map((r) => JSON.parse(r.stdout) as PredictJson);
    expect([g.engine, o.engine, u.engine]).toEqual(['webgpu', 'onnxruntime', 'onnxruntime']);
    for (const r of [o, u]) {
      expect(r.images.map((i) => i.file)).toEqual(['cat.png', 'ship.jpg']);
      r.images.forEach((img, i) => {
        expect(img.predictions.map((q) => q.class)).toEqual(g.images[i]!.predictions.map((q) => q.class));
        img.predictions.forEach((q, k) => expect(Math.abs(q.probability - g.images[i]!.predictions[k]!.probability)).toBeLessThan(1e-5));
        for (const q of img.predictions) expect(NAMES).toContain(q.class);
      });
    }
    // an unreadable file is named and the others are still classified
    const mixed = await cli('predict-vim', ['--onnx', ONNX, 'notes.txt', 'cat.png']);
    expect(mixed.code).toBe(1);
    expect(mixed.errors[0]).toMatch(/^predict-vim: error: notes\.txt: not an image/);
    expect(mixed.stdout).toMatch(/^cat\.png\n/);
  });

  it('predict-vim --checkpoint gives the CPU-fallback note on a terminal', async () => {
    const script = spawnSync('script', ['--version'], { encoding: 'utf8' });
    if (script.status !== 0) return; // util-linux's script gives the command a terminal; without it this is not checked
    const cmd = [process.execPath, join(ROOT, 'dist', 'cli', 'predict-vim.js'), '--checkpoint', CKPT, 'cat.png'].map((a) => `'${a}'`).join(' ');
    const r = spawnSync('script', ['-qec', cmd, '/dev/null'], { cwd: TMP, encoding: 'utf8', env: { ...process.env, FORCE_COLOR: '0' } });
    expect(r.status, r.stdout).toBe(0);
    const probe = await cli('eval-vim', ['--checkpoint', CKPT, '--webgpu', '--limit', '1']);
    const cpu = /^adapter: .*\(CPU\)/m.test(probe.stdout);
    expect(r.stdout.split('\n').filter((l) => l.includes('CPU fallback'))).toHaveLength(cpu ? 1 : 0);
    if (cpu) expect(r.stdout).toMatch(/predict-vim: this WebGPU adapter is a CPU fallback \(.+\): the checkpoint runs through onnxruntime instead/);
  });

  it('bench-vim --onnx FILE reports session creation and images/s, as text and JSON', async () => {
    const out = join(TMP, 'bench.json');
    const r = await cli('bench-vim', ['--onnx', ONNX, '--steps', '2', '--json', out]);
    expect(r.errors, r.stderr).toEqual([]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^batch {3}1: +[\d.]+ images\/s .*session created in \d+ ms/m);
    expect(r.stdout).toMatch(/^batch {2}64: +[\d.]+ images\/s/m);
    const j = JSON.parse(readFileSync(out, 'utf8')) as { config: string; random_init: boolean; runs: { batch: number; sessionMs: number; imagesPerSecond: number }[] };
    expect(j.config).toBe('vim-small');
    expect(j.random_init).toBe(false);
    expect(j.runs.map((x) => x.batch)).toEqual([1, 64]);
    for (const x of j.runs) {
      expect(x.sessionMs).toBeGreaterThan(0);
      expect(x.imagesPerSecond).toBeGreaterThan(0);
    }
    const fresh = await cli('bench-vim', ['--onnx', '--model', join(TMP, 'vim-small.json'), '--batch-size', '4', '--steps', '1']);
    expect(fresh.code, fresh.stderr).toBe(0);
    expect(fresh.stdout).toMatch(/exported vim-small with random init weights to a temporary file/);
    expect(fresh.stdout).toMatch(/^batch {3}4: /m);
  });

  it('bad inputs give one line on stderr, no stack trace, and exit code 1', async () => {
    const cases: [string, string[], RegExp][] = [
      ['eval-vim', ['--checkpoint', CKPT, '--onnx', ONNX], /give either --checkpoint or --onnx, not both/],
      ['eval-vim', ['--limit', '4'], /--checkpoint or --onnx is required/],
      ['eval-vim', ['--onnx', ONNX, '--use-onnx'], /--use-onnx exports a --checkpoint .* drop --use-onnx/],
      ['eval-vim', ['--checkpoint', CKPT, '--webgpu', '--use-onnx'], /--webgpu and --use-onnx ask for two engines: give one of them/],
      ['predict-vim', ['--onnx', ONNX, '--webgpu', 'cat.png'], /--webgpu runs a --checkpoint on the WebGPU adapter; .* drop --webgpu/],
      ['eval-vim', ['--onnx', 'notes.txt'], /notes\.txt is not an ONNX model/],
      ['eval-vim', ['--onnx', 'missing.onnx'], /missing\.onnx: no such file/],
      ['eval-vim', ['--onnx', ONNX, '--model', 'vim-nano'], /is an export of vim-small .* but the model is vim-nano/],
      ['predict-vim', ['--onnx', CKPT, 'cat.png'], /small\.safetensors is not an ONNX model/],
      ['predict-vim', ['--checkpoint', CKPT, '--onnx', ONNX, 'cat.png'], /not both/],
      ['predict-vim', ['--onnx', ONNX], /give at least one image file/],
      ['bench-vim', ['--onnx', ONNX, '--check'], /give one of them/],
      ['bench-vim', ['--onnx', ONNX, '--model', 'vim-nano'], /drop --model/],
    ];
    for (const [cmd, args, message] of cases) expectOneLineError(await cli(cmd, args), cmd, args, message);
  });
});
