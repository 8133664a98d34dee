/**
 * The held-out validation split (--holdout N): a fixed part of the training images that the run
 * never trains on and evaluates on next to the test set, so that recipes can be compared without
 * looking at the test images.
 *
 * The split is the same in every run: of the 50,000 training images, in file order (the records
 * of data_batch_1 … data_batch_5 one after another, as loadCifar10Split gives them), the LAST N
 * are held out: --holdout 5000 is the second half of data_batch_5, --holdout 10000 all of it.
 * No shuffling, no seed. Training uses the images before them, or the first --subset S of those:
 *
 *   record  0 ……………………… S ……………………… total−N ……………………… total
 *           [ training (subset) )          [ validation (held out) )
 *
 * A --subset therefore never reaches into the held-out images, whatever S.
 */
import { VimError } from '../errors.js';

/** Training images of CIFAR-10: data_batch_1…5, 10,000 records each. */
export const CIFAR10_TRAIN_IMAGES = 50_000;

/** Half-open ranges [start, end) of record indices into the whole training set. */
export interface HoldoutSplit {
  /** What the run trains on: [0, subset or total − holdout). */
  train: { start: number; end: number };
  /** What it validates on: [total − holdout, total); empty (start = end = total) when holdout is 0. */
  val: { start: number; end: number };
}

/**
 * The split of `total` training images for `holdout` held-out images and a training `subset`
 * (0 = all that are left). Errors name the option and say what would fit.
 */
export function holdoutSplit(total: number, holdout: number, subset: number): HoldoutSplit {
  const fmt = (n: number) => n.toLocaleString('en-US');
  if (!Number.isInteger(holdout) || holdout < 0) {
    throw new VimError(`--holdout: expected an integer ≥ 0 but received ${JSON.stringify(holdout)}`);
  }
  if (!Number.isInteger(subset) || subset < 0) {
    throw new VimError(`--subset: expected an integer ≥ 0 but received ${JSON.stringify(subset)}`);
  }
  if (holdout >= total) {
    throw new VimError(`--holdout ${holdout} leaves no image to train on: hold out fewer than the ${fmt(total)} training images (e.g. --holdout 5000)`);
  }
  const left = total - holdout;
  if (subset > left) {
    throw new VimError(holdout > 0
      ? `--subset ${subset} is larger than the ${fmt(left)} training images that --holdout ${holdout} leaves: use --subset ${left} or less, or a smaller --holdout`
      : `--subset ${subset} is larger than the ${fmt(total)} training images`);
  }
  return { train: { start: 0, end: subset || left }, val: { start: left, end: total } };
}

/** "the last 5,000 training images" */
export function describeHoldout(holdout: number): string {
  return `the last ${holdout.toLocaleString('en-US')} training image${holdout === 1 ? '' : 's'}`;
}
