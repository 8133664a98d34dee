/**
 * What a training run leaves in its folder (runs/NAME/), and reading it back:
 *
 *   config.json        the resolved model config
 *   recipe.json        the resolved training recipe (what --resume continues with)
 *   metrics.jsonl      one JSON line per epoch (EpochRecord); with --holdout also the validation figures
 *   steps.jsonl        one JSON line per training step (StepRecord): loss, lr, gradient norm
 *   last.safetensors   the evaluated weights (the EMA when the recipe keeps one) after the latest epoch
 *   best.safetensors   the same at the epoch with the best test accuracy
 *   state.safetensors  everything to resume: the weights, AdamW moments, the EMA, and in the
 *                      metadata the step, the sampler position, the augmentation RNG and the
 *                      running totals of the current epoch
 *   curves.png         loss and accuracy over epochs
 *   confusion.png      the test confusion matrix of the latest evaluation
 *
 * Every file is written whole to a temporary name and renamed (writeFileAtomic), so an interrupted
 * write never leaves a broken file. The files of an epoch's end are written in the background
 * while the next epoch trains (write-queue.ts), in order: steps.jsonl, metrics.jsonl,
 * last.safetensors, best.safetensors, state.safetensors, then the plots. So the logs and
 * checkpoints on disk are never behind the training state (--resume drops log lines past it),
 * and a run killed before an epoch's state is on disk resumes from the epoch before.
 *
 * While a process trains in the folder it holds train-vim.lock there (its pid and host; removed
 * when it ends): a second train-vim given the same folder, to start over in it or to resume it,
 * is refused while the first runs. A lock left by a process that no longer runs (killed with
 * SIGKILL, the machine restarted) is taken over.
 *
 * A run that ends in its first epoch without saving (its loss became NaN, it was killed, it quit
 * without saving) leaves only config.json, recipe.json and the logs: nothing to resume or keep.
 * A new run may start over in such a folder (runFolderKind: 'unfinished'), never in one with a
 * training state, a checkpoint, a plot or a recorded epoch, nor in a folder of other files.
 */
import { existsSync, readdirSync, readFileSync, rmSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { VimError } from '../errors.js';
import { writeFileAtomic } from '../io/safetensors.js';
import type { RngState } from '../rng.js';
import type { SamplerState } from './sampler.js';

export const RUN_FILES = {
  config: 'config.json',
  recipe: 'recipe.json',
  metrics: 'metrics.jsonl',
  steps: 'steps.jsonl',
  last: 'last.safetensors',
  best: 'best.safetensors',
  state: 'state.safetensors',
  curves: 'curves.png',
  confusion: 'confusion.png',
  lock: 'train-vim.lock',
} as const;

export function runPath(dir: string, file: keyof typeof RUN_FILES): string {
  return join(dir, RUN_FILES[file]);
}

/** One training step, as logged in steps.jsonl. */
export interface StepRecord {
  step: number; // 1-based, over the whole run
  epoch: number; // 1-based
  lr: number;
  loss: number; // mean loss of the batch (with label smoothing and mixing), before the update
  grad_norm: number; // global L2 norm of the gradients, before clipping
}

/**
 * One epoch, as logged in metrics.jsonl (test fields are null when the epoch was not evaluated).
 * The val_* fields are there only in runs with --holdout: the same figures for the held-out
 * validation images (the last `holdout` training images, never trained on), null when the epoch
 * was not evaluated.
 */
export interface EpochRecord {
  epoch: number; // 1-based
  step: number; // steps taken so far
  lr: number; // learning rate of the epoch's last step
  train_loss: number; // mean of the epoch's step losses
  train_acc: number; // fraction of training images whose top class is their (dominant) label
  test_loss: number | null;
  test_acc: number | null;
  test_top5: number | null;
  test_images: number | null;
  val_loss?: number | null;
  val_acc?: number | null; // top-1
  val_top5?: number | null;
  val_images?: number | null;
  weights: 'ema' | 'raw'; // which weights the test (and validation) figures are for
  grad_norm: number; // mean gradient norm over the epoch
  clipped: number; // fraction of the epoch's steps whose gradients were clipped
  images_per_s: number; // training throughput (data preparation included)
  epoch_s: number; // wall time of the epoch: training and evaluation (not the read-back of the state after it, which elapsed_s counts)
  elapsed_s: number; // wall time of the run so far (resumed runs add up)
  time: string; // ISO time the epoch ended
}

/** Running totals of the current epoch (saved mid-epoch, so a resumed epoch reports the same). */
export interface EpochTotals {
  steps: number;
  lossSum: number;
  correct: number;
  seen: number;
  gradNormSum: number;
  clipped: number;
  trainS: number; // wall seconds spent on the epoch's steps
  lastLr: number;
}

export function emptyTotals(): EpochTotals {
  return { steps: 0, lossSum: 0, correct: 0, seen: 0, gradNormSum: 0, clipped: 0, trainS: 0, lastLr: 0 };
}

/** The metadata of state.safetensors besides the config and recipe. */
export interface TrainState {
  version: 1;
  step: number; // AdamW steps taken
  sampler: SamplerState;
  rng: RngState; // augmentation RNG
  totals: EpochTotals; // of the epoch the sampler is in
  best: { epoch: number; test_acc: number } | null;
  elapsed_s: number;
  ema: boolean;
}

export function writeJson(path: string, value: unknown): void {
  writeFileAtomic(path, new TextEncoder().encode(`${JSON.stringify(value, null, 2)}\n`));
}

/** The text of a .jsonl file: one JSON line per row. */
export function jsonlText(rows: readonly unknown[]): string {
  return rows.map((r) => `${JSON.stringify(r)}\n`).join('');
}

export function readJson(path: string, what: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new VimError(`cannot read ${what} ${path} (${(e as Error).message})`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new VimError(`${path} is not valid JSON (${(e as Error).message}); the run folder is damaged`);
  }
}

/** Rows of a .jsonl file ([] when it does not exist). */
export function readJsonl<T>(path: string): T[] {
  if (!existsSync(path)) return [];
  const text = readFileSync(path, 'utf8');
  const rows: T[] = [];
  for (const [i, line] of text.split('\n').entries()) {
    if (line.trim() === '') continue;
    try {
      rows.push(JSON.parse(line) as T);
    } catch {
      throw new VimError(`${path}: line ${i + 1} is not valid JSON; the run folder is damaged`);
    }
  }
  return rows;
}

/**
 * What a folder named for a run holds:
 *   new         nothing is there yet
 *   empty       an empty folder
 *   unfinished  a train-vim run that never finished an epoch and saved no state (it failed, was
 *               killed, or quit without saving in its first epoch): nothing in it can be resumed
 *               or evaluated, so a new run may start over in it
 *   run         a run with something to keep: a training state, a checkpoint, a plot or a
 *               recorded epoch (never reused)
 *   other       a folder with other files and no train-vim recipe, or a file
 */
export type RunFolderKind = 'new' | 'empty' | 'unfinished' | 'run' | 'other';

/** Files that exist only once a run has something to keep (an epoch's end or a saved stop). */
const KEPT_FILES = ['state', 'last', 'best', 'curves', 'confusion'] as const;

/** Logs a run that starts over in an unfinished folder removes (it writes config and recipe anew). */
const STALE_LOGS = ['steps', 'metrics'] as const;

export function runFolderKind(dir: string): RunFolderKind {
  if (!existsSync(dir)) return 'new';
  if (!statSync(dir).isDirectory()) return 'other';
  let entries: string[];
  try {
    entries = readdirSync(dir);
  } catch (e) {
    throw new VimError(`cannot read the folder ${dir} (${(e as Error).message}); choose another folder`);
  }
  if (entries.every((e) => e === RUN_FILES.lock)) return 'empty';
  if (KEPT_FILES.some((f) => existsSync(runPath(dir, f)))) return 'run';
  // Any text in metrics.jsonl is a recorded epoch (a damaged line too); one that cannot be read counts as one.
  const metrics = runPath(dir, 'metrics');
  if (existsSync(metrics)) {
    try {
      if (readFileSync(metrics, 'utf8').trim() !== '') return 'run';
    } catch {
      return 'run';
    }
  }
  return isRecipeFile(runPath(dir, 'recipe')) ? 'unfinished' : 'other';
}

/** True when `path` is a recipe.json that train-vim wrote (an object with a model and epochs). */
function isRecipeFile(path: string): boolean {
  if (!existsSync(path)) return false;
  try {
    const r = JSON.parse(readFileSync(path, 'utf8')) as { model?: unknown; epochs?: unknown } | null;
    return typeof r === 'object' && r !== null && typeof r.model === 'string' && typeof r.epochs === 'number';
  } catch {
    return false;
  }
}

/**
 * Check that a new run may start in `dir` (named `shown` in messages): a new or empty folder, or
 * one holding a run that never finished an epoch. Returns the folder's kind; throws VimError for
 * a folder that holds a run with something to keep, or other files.
 */
export function checkNewRunFolder(dir: string, shown = dir): RunFolderKind {
  refuseHeldFolder(dir, shown);
  const kind = runFolderKind(dir);
  if (kind === 'run') {
    throw new VimError(`${shown} already holds a run: continue it with --resume ${shown}, or choose another --out`);
  }
  if (kind === 'other') {
    const what = statSync(dir).isDirectory() ? 'a folder with other files in it and no train-vim run' : 'a file, not a folder';
    throw new VimError(`--out ${shown} is ${what}: choose a new or empty folder for the run`);
  }
  return kind;
}

/** Remove the logs of an unfinished run that a new run starts over from (see runFolderKind). */
export function removeStaleLogs(dir: string): void {
  for (const f of STALE_LOGS) rmSync(runPath(dir, f), { force: true });
}

/**
 * Check that `dir` (named `shown` in messages) holds a training state to resume; throws VimError
 * saying what to do instead when it does not. The recipe is checked by the caller.
 */
export function checkResumable(dir: string, shown = dir): void {
  refuseHeldFolder(dir, shown);
  if (existsSync(runPath(dir, 'state'))) return;
  if (runFolderKind(dir) === 'unfinished') {
    throw new VimError(
      `${shown} holds a run that never finished an epoch (it has no ${RUN_FILES.state}), so there is nothing to resume: ` +
      `start it again with --out ${shown} and its options (they are in ${runPath(shown, 'recipe')})`,
    );
  }
  throw new VimError(
    `${shown} holds no training state (${runPath(shown, 'state')}), so the run cannot be resumed: start a new run with another --out`,
  );
}

/** Who holds a run folder's lock: a process id on a host. */
interface LockHolder {
  pid: number;
  host: string;
}

function readLock(path: string): LockHolder | null {
  try {
    const h = JSON.parse(readFileSync(path, 'utf8')) as Partial<LockHolder>;
    return typeof h.pid === 'number' && typeof h.host === 'string' ? { pid: h.pid, host: h.host } : null;
  } catch {
    return null; // gone, or not written whole: nobody holds it
  }
}

/** Whether the holder still runs: on this host, a signal 0 finds it (EPERM: another user's, alive). */
function holderRuns(h: LockHolder): boolean {
  if (h.host !== hostname()) return true; // cannot tell from here: assume it does
  if (h.pid === process.pid) return false; // this process: a lock of its own left by an earlier Trainer
  try {
    process.kill(h.pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Throw VimError when another process that still runs holds `dir` (named `shown`). */
function refuseHeldFolder(dir: string, shown: string): void {
  const path = runPath(dir, 'lock');
  const h = existsSync(path) ? readLock(path) : null;
  if (h === null || !holderRuns(h)) return;
  throw new VimError(
    `${shown} is in use: train-vim (process ${h.pid} on ${h.host}) is training in it; wait for it to end or stop it ` +
    `(Ctrl-C, or kill ${h.pid}: it saves and quits). If no train-vim runs there, delete ${runPath(shown, 'lock')}`,
  );
}

/**
 * Take the run folder `dir` (which exists) for this process until the returned function is called
 * or the process exits; throws VimError while another process that still runs holds it.
 */
export function lockRunFolder(dir: string): () => void {
  const path = runPath(dir, 'lock');
  const mine = `${JSON.stringify({ pid: process.pid, host: hostname(), started: new Date().toISOString() })}\n`;
  for (let attempt = 0; ; attempt++) {
    try {
      writeFileSync(path, mine, { flag: 'wx' });
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST' || attempt > 0) {
        throw new VimError(`cannot take the run folder ${dir} for this run (${(e as Error).message}); check its permissions`);
      }
    }
    refuseHeldFolder(dir, dir);
    rmSync(path, { force: true }); // left by a process that no longer runs
  }
  const release = () => {
    try {
      if (readFileSync(path, 'utf8') === mine) unlinkSync(path);
    } catch {
      // already gone
    }
  };
  process.once('exit', release);
  return () => {
    process.off('exit', release);
    release();
  };
}
