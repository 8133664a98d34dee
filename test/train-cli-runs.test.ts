/**
 * train-vim's run folders as a user meets them (node dist/cli/train-vim.js, built once here): a run
 * that failed in its first epoch starts over in the same folder, and --resume says to do that; a
 * folder with anything to keep (a state, a checkpoint, a recorded epoch) or with other files is
 * refused and left as it was; SIGHUP saves like SIGTERM; a damaged state file says what to do;
 * counts read "1 epoch"; the hints are commands that work. Shapes are tiny (D=16, depth 1, 8-px
 * patches), as in cli.test.ts, so that lavapipe keeps up.
 */
import { spawnSync } from 'node:child_process';
import {
  cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync,
} from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runFolderKind, type EpochRecord, type StepRecord } from '../src/train/run-dir.js';
import { buildIfStale, expectOneLineError, ROOT, runCommand, type Ran } from './helpers/cli.js';

const TMP = mkdtempSync(join(tmpdir(), 'vim-runs-'));
const MODEL = join(TMP, 'vim-test.json');
const TRAIN = ['--model', MODEL, '--batch-size', '8', '--test-subset', '16', '--log-every', '0'];
const ONE_EPOCH = [...TRAIN, '--epochs', '1', '--subset', '48'];
const DIVERGE = [...ONE_EPOCH, '--lr', '1e30', '--warmup', '0', '--grad-clip', '0'];

/** train-vim in the test's folder (run folders below are named relative to it, as a user types them). */
function trainVim(args: string[], onStdout?: (text: string) => boolean, signals?: NodeJS.Signals[]): Promise<Ran> {
  return runCommand(TMP, 'train-vim', args, onStdout, signals);
}

function jsonl<T>(path: string): T[] {
  return readFileSync(path, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as T);
}

/** Every file of a folder with its contents, to show that a refused command changed nothing. */
function snapshot(dir: string): Record<string, string> {
  return Object.fromEntries(readdirSync(dir).sort().map((f) => [f, readFileSync(join(dir, f)).toString('base64')]));
}

beforeAll(() => {
  buildIfStale();
  writeFileSync(MODEL, JSON.stringify({ name: 'vim-test', patch_size: 8, embed_dim: 16, depth: 1 }));
});

afterAll(() => rmSync(TMP, { recursive: true, force: true }));

describe('train-vim run folders', () => {
  it('a run that failed in its first epoch starts over in its folder; --resume says to do that', async () => {
    const failed = await trainVim([...DIVERGE, '--out', 'failed']);
    expect(failed.code, failed.stderr).toBe(1);
    expect(failed.errors[0]).toMatch(/the loss became (NaN|infinite) at step \d+ \(epoch 1\)/);
    expect(readdirSync(join(TMP, 'failed')).sort()).toEqual(['config.json', 'metrics.jsonl', 'recipe.json', 'steps.jsonl']);
    expect(runFolderKind(join(TMP, 'failed'))).toBe('unfinished');

    expectOneLineError(await trainVim(['--resume', 'failed']), 'train-vim', ['--resume', 'failed'],
      /^train-vim: error: failed holds a run that never finished an epoch \(it has no state\.safetensors\), so there is nothing to resume: start it again with --out failed and its options \(they are in failed\/recipe\.json\)$/);

    const again = await trainVim([...ONE_EPOCH, '--out', 'failed']);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toContain('run folder: failed (it held a run that never finished an epoch; starting over in it)');
    expect(again.stdout).toContain('6 steps per epoch, 6 in all');
    expect(again.stdout).toMatch(/^done: 1 epoch, 6 steps in /m);
    expect(again.stdout).toContain('evaluate with: npm run eval-vim -- --checkpoint failed/best.safetensors');
    // The failed run's log lines are gone: the folder holds the new run only.
    expect(jsonl<StepRecord>(join(TMP, 'failed', 'steps.jsonl')).map((s) => s.step)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(jsonl<EpochRecord>(join(TMP, 'failed', 'metrics.jsonl')).map((m) => m.epoch)).toEqual([1]);

    const finished = await trainVim(['--resume', 'failed']);
    expect(finished.code, finished.stderr).toBe(0);
    expect(finished.stdout).toContain('the run in failed has already finished its 1 epoch; pass --epochs');
    expectOneLineError(await trainVim([...ONE_EPOCH, '--out', 'failed']), 'train-vim', ['--out', 'failed'],
      /failed already holds a run: continue it with --resume failed, or choose another --out/);
  });

  it('a folder another train-vim still trains in is refused, to start over in or to resume; a lock left by a dead process is taken over', async () => {
    const dir = join(TMP, 'held');
    mkdirSync(dir);
    writeFileSync(join(dir, 'recipe.json'), JSON.stringify({ model: MODEL, epochs: 1 }));
    writeFileSync(join(dir, 'config.json'), '{}');
    writeFileSync(join(dir, 'state.safetensors'), 'x');
    // a process that runs (this test's own parent, on this host) holds it
    writeFileSync(join(dir, 'train-vim.lock'), JSON.stringify({ pid: process.ppid, host: hostname() }));
    const before = snapshot(dir);
    const inUse = new RegExp(`held is in use: train-vim \\(process ${process.ppid} on .*\\) is training in it; wait for it to end or stop it .*If no train-vim runs there, delete held/train-vim\\.lock$`);
    expectOneLineError(await trainVim(['--resume', 'held']), 'train-vim', ['--resume', 'held'], inUse);
    rmSync(join(dir, 'state.safetensors'));
    expectOneLineError(await trainVim([...ONE_EPOCH, '--out', 'held']), 'train-vim', ['--out', 'held'], inUse);
    expect(snapshot(dir)).toEqual(Object.fromEntries(Object.entries(before).filter(([f]) => f !== 'state.safetensors')));

    // the holder is gone (a process that has ended): the lock is stale and the run starts over in the folder
    const ended = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
    writeFileSync(join(dir, 'train-vim.lock'), JSON.stringify({ pid: Number(ended.stdout), host: hostname() }));
    const run = await trainVim([...ONE_EPOCH, '--out', 'held']);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toContain('run folder: held (it held a run that never finished an epoch; starting over in it)');
    expect(existsSync(join(dir, 'train-vim.lock'))).toBe(false); // given back at the end
  });

  it('never starts over in a folder with a recorded epoch, a state file or a checkpoint, and changes nothing in it', async () => {
    const recipe = JSON.stringify({ model: MODEL, epochs: 1 });
    const cases: [string, Record<string, string>][] = [
      ['with-epoch', { 'metrics.jsonl': '{"epoch":1}\n' }],
      ['with-damaged-epoch', { 'metrics.jsonl': 'not json' }],
      ['with-state', { 'state.safetensors': 'x', 'metrics.jsonl': '' }],
      ['with-last', { 'last.safetensors': 'x' }],
      ['with-best', { 'best.safetensors': 'x' }],
    ];
    for (const [name, files] of cases) {
      const dir = join(TMP, name);
      mkdirSync(dir);
      writeFileSync(join(dir, 'config.json'), readFileSync(MODEL));
      writeFileSync(join(dir, 'recipe.json'), recipe);
      writeFileSync(join(dir, 'steps.jsonl'), '{"step":1}\n');
      for (const [f, text] of Object.entries(files)) writeFileSync(join(dir, f), text);
      expect(runFolderKind(dir), name).toBe('run');
      const before = snapshot(dir);
      expectOneLineError(await trainVim([...ONE_EPOCH, '--out', name]), 'train-vim', ['--out', name],
        new RegExp(`^train-vim: error: ${name} already holds a run: continue it with --resume ${name}, or choose another --out$`));
      expect(snapshot(dir), name).toEqual(before);
    }
    // A run with checkpoints but no state cannot be resumed, nor started over: a new folder, says --resume.
    expectOneLineError(await trainVim(['--resume', 'with-last']), 'train-vim', ['--resume', 'with-last'],
      /with-last holds no training state \(with-last\/state\.safetensors\), so the run cannot be resumed: start a new run with another --out$/);
  });

  it('--out refuses a folder of other files and a file, and leaves them as they were', async () => {
    const notes = join(TMP, 'notes');
    mkdirSync(notes);
    writeFileSync(join(notes, 'plan.txt'), 'not a run');
    writeFileSync(join(notes, 'config.json'), '{"someone": "else"}');
    expect(runFolderKind(notes)).toBe('other');
    expectOneLineError(await trainVim([...ONE_EPOCH, '--out', 'notes']), 'train-vim', ['--out', 'notes'],
      /^train-vim: error: --out notes is a folder with other files in it and no train-vim run: choose a new or empty folder for the run$/);
    expect(snapshot(notes)).toEqual({ 'plan.txt': Buffer.from('not a run').toString('base64'), 'config.json': Buffer.from('{"someone": "else"}').toString('base64') });
    // the repository's models/ folder (the released model's files)
    expectOneLineError(await trainVim([...ONE_EPOCH, '--out', join(ROOT, 'models')]), 'train-vim', ['--out', 'models'],
      /--out .*models is a folder with other files in it and no train-vim run: choose a new or empty folder/);
    expectOneLineError(await trainVim([...ONE_EPOCH, '--out', MODEL]), 'train-vim', ['--out', MODEL],
      /--out .*vim-test\.json is a file, not a folder: choose a new or empty folder for the run$/);
    expect(runFolderKind(join(TMP, 'nowhere'))).toBe('new');
  });

  it('SIGHUP in an empty folder finishes the step, saves and exits 129; the run resumes, and a damaged state says what to do', async () => {
    mkdirSync(join(TMP, 'hup'));
    expect(runFolderKind(join(TMP, 'hup'))).toBe('empty');
    const args = [...TRAIN, '--epochs', '2', '--subset', '192'];
    const stopped = await trainVim([...args, '--out', 'hup'], (out) => /step 3\/24/.test(out), ['SIGHUP']);
    expect(stopped.code, stopped.stderr).toBe(129);
    expect(stopped.stdout).toContain('SIGHUP: stopping after the current step');
    expect(stopped.stdout).toContain('resume with: npm run train-vim -- --resume hup\n');
    expect(stopped.stderr).not.toContain('quit without saving');
    expect(existsSync(join(TMP, 'hup', 'state.safetensors'))).toBe(true);
    expect(readdirSync(join(TMP, 'hup')).filter((f) => f.endsWith('.tmp'))).toEqual([]);
    const steps = jsonl<StepRecord>(join(TMP, 'hup', 'steps.jsonl')).length;
    expect(steps).toBeGreaterThanOrEqual(3);
    expect(steps).toBeLessThan(48);

    // A copy with its state cut short: --resume names the state file as damaged, without the reader's advice.
    cpSync(join(TMP, 'hup'), join(TMP, 'hup-damaged'), { recursive: true });
    const state = join(TMP, 'hup-damaged', 'state.safetensors');
    writeFileSync(state, readFileSync(state).subarray(0, 2000));
    const damaged = await trainVim(['--resume', 'hup-damaged']);
    expectOneLineError(damaged, 'train-vim', ['--resume', 'hup-damaged'],
      /the run's training state .*hup-damaged\/state\.safetensors is damaged \(.+\), so the run cannot be resumed: start a new run with another --out$/);
    expect(damaged.stderr).not.toMatch(/Re-create it|choose another file/);

    // Resumed through a bin named train-vim (as `npm link` puts it on PATH): the hint is the bare command.
    mkdirSync(join(TMP, 'bin'));
    const bin = join(TMP, 'bin', 'train-vim');
    symlinkSync(join(ROOT, 'dist', 'cli', 'train-vim.js'), bin);
    const resumed = spawnSync(process.execPath, [bin, '--resume', 'hup', '--log-every', '0'], {
      cwd: TMP, encoding: 'utf8', env: { ...process.env, FORCE_COLOR: '0' },
    });
    expect(resumed.status, resumed.stderr).toBe(0);
    expect(resumed.stdout).toMatch(/resuming hup at epoch [12], step \d+/);
    expect(resumed.stdout).toMatch(/^done: 2 epochs, 48 steps in /m);
    expect(resumed.stdout).toContain('evaluate with: eval-vim --checkpoint hup/best.safetensors');
    expect(jsonl<StepRecord>(join(TMP, 'hup', 'steps.jsonl')).map((s) => s.step)).toEqual(Array.from({ length: 48 }, (_, i) => i + 1));
  });

  it('--help lists every option --resume may change, and the signals that save', async () => {
    const h = await trainVim(['--help']);
    expect(h.code).toBe(0);
    expect(h.stdout).toContain('--epochs, --eval-every, --lr, --min-lr, --grad-clip, --log-every and --data-dir may change');
    expect(h.stdout).toMatch(/Ctrl-C, SIGTERM or SIGHUP .*finishes the current step/);
  });
});
