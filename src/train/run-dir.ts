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
 */
import { existsSync, readFileSync } from 'node:fs';
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

/** True when a folder already holds a run (its recipe, metrics or training state). */
export function holdsRun(dir: string): boolean {
  return ['recipe', 'metrics', 'state'].some((f) => existsSync(runPath(dir, f as keyof typeof RUN_FILES)));
}
