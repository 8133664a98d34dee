/**
 * The training recipe: every knob of a run, with defaults that fit the adapter.
 *
 * Two sets of defaults:
 *   - 'gpu' (a real GPU): Vim-Ti (models/vim-tiny.json) on all 50,000 training images for 115
 *     epochs, batch 256, AdamW with peak lr 2e-3 · batch/512 (1e-3 at 256), 5 epochs of linear
 *     warm-up then cosine decay to 1e-5, weight decay 0.1, label smoothing 0.1, random crop (4-px
 *     zero padding), horizontal flip, RandAugment (2 operations at magnitude 5), and mixup or
 *     cutmix (one of the two a batch, both at α 0.2), drop path 0.1, an EMA of the weights (decay
 *     0.9995) for evaluation, gradient clipping at norm 1, evaluation on the 10,000 test images
 *     every 5 epochs and after the last: the recipe of the released model (docs/recipe.md: chosen
 *     on held-out images in experiments 5, 11 and 13, its length set by the time budget in the
 *     final run, experiment 18), about 18 minutes on one H200.
 *   - 'cpu' (a CPU fallback adapter such as lavapipe, a few GFLOP/s): vim-nano on the first 1,600
 *     training images for 3 epochs, batch 32, peak lr 3e-3, evaluation on the first 1,000 test
 *     images: about 3½ minutes on 2 cores. It shows the whole pipeline working, not a good model.
 * Neither holds anything out (holdout 0). With `holdout` N > 0 (--holdout N) the last N of the
 * 50,000 training images in file order (the end of data_batch_5 first; see holdout.ts) are never
 * trained on: they are evaluated, next to the test images, at every evaluation, a validation set
 * for choosing a recipe without looking at the test set. `subset` then counts from the images
 * left. The holdout is fixed for a run (--resume keeps it). The CPU recipe leaves drop path off
 * (see dropPathRates).
 * Command-line options override single fields; the resolved recipe is saved with the run.
 */
import { VimError } from '../errors.js';
import { CIFAR10_TRAIN_IMAGES, describeHoldout, holdoutSplit } from './holdout.js';

export type RecipeKind = 'cpu' | 'gpu';

export interface AugmentRecipe {
  /** Random crop with zero padding of `padding` px. */
  crop: boolean;
  padding: number;
  /** Random horizontal flip. */
  flip: boolean;
  /** Mixup's Beta(α, α); 0 = off. */
  mixupAlpha: number;
  /** Cutmix's Beta(α, α); 0 = off. */
  cutmixAlpha: number;
  /** RandAugment: operations per image (0 = off) and their magnitude (0…10). */
  randaugOps: number;
  randaugMagnitude: number;
  /** Random erasing: probability per image (0 = off). */
  eraseProb: number;
}

export interface Recipe {
  /** Which defaults the recipe started from. */
  kind: RecipeKind;
  /** Model config: a name in models/ or a path to a .json config. */
  model: string;
  epochs: number;
  batchSize: number;
  /** Peak learning rate (after warm-up). */
  lr: number;
  /** Learning rate at the end of the cosine decay. */
  minLr: number;
  /** Warm-up length in epochs (may be fractional). */
  warmupEpochs: number;
  weightDecay: number;
  beta1: number;
  beta2: number;
  eps: number;
  labelSmoothing: number;
  augment: AugmentRecipe;
  /** EMA decay of the weights used for evaluation; 0 = no EMA (evaluate the weights themselves). */
  ema: number;
  /** Clip gradients to this global L2 norm; 0 = no clipping. */
  gradClip: number;
  seed: number;
  /** Train on the first `subset` training images not held out; 0 = all of them. */
  subset: number;
  /**
   * Hold the last `holdout` of the 50,000 training images out of training and validate on them at
   * every evaluation; 0 = no validation set. Fixed for a run (see holdout.ts for the split).
   */
  holdout: number;
  /**
   * Drop path (stochastic depth) rate: block i's output joins the residual stream with drop
   * probability dropPathRates(depth, rate)[i] per sample (0 = off). Fixed for a run.
   */
  dropPath: number;
  /** Evaluate on the first `testSubset` test images; 0 = all. */
  testSubset: number;
  /** Evaluate every this many epochs (and always after the last). */
  evalEvery: number;
}

/**
 * RandAugment's magnitude where none is given: 5 (experiment 5 of docs/recipe.md: 2 operations at
 * magnitude 9 with random erasing underfitted 54 epochs; at 5 without erasing, 58 epochs gained
 * 2.4 points on the held-out images over crop and flip alone).
 */
export const RANDAUG_MAGNITUDE = 5;

/**
 * Mixup's and cutmix's α where none is given, and in the GPU defaults: 0.2 (experiment 11 of
 * docs/recipe.md: 0.56 points above no mixing on the held-out images at 90 epochs, where α 0.8 for
 * mixup and 1 for cutmix, experiment 9, lost 0.50).
 */
export const MIX_ALPHA = 0.2;

/** Peak lr for a batch size under the linear scaling rule, from 1e-3 at batch 256. */
export function scaledLr(batchSize: number): number {
  return (2e-3 * batchSize) / 512;
}

/** The defaults of a recipe kind; `batchSize` changes the default lr of the 'gpu' kind. */
export function defaultRecipe(kind: RecipeKind, batchSize?: number): Recipe {
  const augment: AugmentRecipe = {
    crop: true, padding: 4, flip: true, mixupAlpha: 0, cutmixAlpha: 0, randaugOps: 0, randaugMagnitude: RANDAUG_MAGNITUDE, eraseProb: 0,
  };
  if (kind === 'gpu') {
    const B = batchSize ?? 256;
    return {
      // 115 epochs, evaluated every 5: the length the 20-minute budget holds (experiment 18)
      kind, model: 'vim-tiny', epochs: 115, batchSize: B, lr: scaledLr(B), minLr: 1e-5, warmupEpochs: 5,
      // weight decay 0.1: experiment 13, 0.50 points above 0.05 on the held-out images at 90 epochs
      weightDecay: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, labelSmoothing: 0.1,
      augment: { ...augment, randaugOps: 2, mixupAlpha: MIX_ALPHA, cutmixAlpha: MIX_ALPHA },
      ema: 0.9995, gradClip: 1,
      seed: 0, subset: 0, holdout: 0, dropPath: 0.1, testSubset: 0, evalEvery: 5,
    };
  }
  return {
    kind, model: 'vim-nano', epochs: 3, batchSize: batchSize ?? 32, lr: 3e-3, minLr: 1e-5, warmupEpochs: 0.5,
    weightDecay: 0.05, beta1: 0.9, beta2: 0.999, eps: 1e-8, labelSmoothing: 0.1, augment, ema: 0, gradClip: 1,
    seed: 0, subset: 1600, holdout: 0, dropPath: 0, testSubset: 1000, evalEvery: 1,
  };
}

/** The settings of the augmentations that take one (their command-line defaults where not given). */
export interface AugmentSettings {
  mixup: number;
  cutmix: number;
  randaugOps?: number;
  randaugMagnitude?: number;
  eraseProb?: number;
}

/**
 * Parse an --augment list: "crop,flip" (default), "none", or any of crop, flip, mixup, cutmix,
 * randaug, erase.
 */
export function parseAugmentList(list: string, s: AugmentSettings): AugmentRecipe {
  const items = list.split(',').map((x) => x.trim().toLowerCase()).filter(Boolean);
  const known = ['crop', 'flip', 'mixup', 'cutmix', 'randaug', 'erase', 'none'];
  for (const it of items) {
    if (!known.includes(it)) throw new VimError(`--augment: unknown augmentation "${it}"; use a comma list of crop, flip, mixup, cutmix, randaug, erase, or none`);
  }
  if (items.includes('none') && items.length > 1) throw new VimError('--augment: "none" cannot be combined with other augmentations');
  return {
    crop: items.includes('crop'), padding: 4, flip: items.includes('flip'),
    mixupAlpha: items.includes('mixup') ? s.mixup : 0, cutmixAlpha: items.includes('cutmix') ? s.cutmix : 0,
    randaugOps: items.includes('randaug') ? s.randaugOps ?? 2 : 0, randaugMagnitude: s.randaugMagnitude ?? RANDAUG_MAGNITUDE,
    eraseProb: items.includes('erase') ? s.eraseProb ?? 0.25 : 0,
  };
}

/** The --augment value of a recipe's augmentations ("crop,flip", "none", …). */
export function augmentNames(a: AugmentRecipe): string {
  const items = [
    a.crop && 'crop', a.flip && 'flip', a.mixupAlpha > 0 && 'mixup', a.cutmixAlpha > 0 && 'cutmix', a.randaugOps > 0 && 'randaug', a.eraseProb > 0 && 'erase',
  ].filter(Boolean);
  return items.length ? items.join(',') : 'none';
}

/** The --augment list of a recipe ("crop,flip", "none", …), with the settings of those that take one. */
export function augmentList(a: AugmentRecipe): string {
  return augmentNames(a).replace('mixup', `mixup (α ${a.mixupAlpha})`).replace('cutmix', `cutmix (α ${a.cutmixAlpha})`)
    .replace('randaug', `randaug (${a.randaugOps} ops at magnitude ${a.randaugMagnitude})`).replace('erase', `erase (p ${a.eraseProb})`);
}

/** Check every field; errors name the command-line option. */
export function validateRecipe(r: Recipe): Recipe {
  const bad = (opt: string, what: string, v: unknown): never => {
    throw new VimError(`--${opt}: expected ${what} but received ${JSON.stringify(v)}`);
  };
  const int = (opt: string, v: number, min: number) => {
    if (!Number.isInteger(v) || v < min) bad(opt, `an integer ≥ ${min}`, v);
  };
  const num = (opt: string, v: number, min: number, max = Infinity, openMin = false) => {
    if (!Number.isFinite(v) || v < min || v > max || (openMin && v === min)) {
      bad(opt, `a number ${openMin ? '>' : '≥'} ${min}${max < Infinity ? ` and ≤ ${max}` : ''}`, v);
    }
  };
  if (typeof r.model !== 'string' || r.model === '') bad('model', 'a model name or config path', r.model);
  int('epochs', r.epochs, 1);
  int('batch-size', r.batchSize, 1);
  num('lr', r.lr, 0, Infinity, true);
  num('min-lr', r.minLr, 0);
  if (r.minLr > r.lr) bad('min-lr', `a number ≤ --lr (${r.lr})`, r.minLr);
  num('warmup', r.warmupEpochs, 0);
  num('weight-decay', r.weightDecay, 0);
  num('label-smoothing', r.labelSmoothing, 0, 0.99);
  num('ema', r.ema, 0, 0.999999);
  num('grad-clip', r.gradClip, 0);
  num('drop-path', r.dropPath, 0, 0.9);
  int('seed', r.seed, 0);
  if (r.seed > 0xffffffff) bad('seed', 'an integer ≤ 4294967295', r.seed);
  int('subset', r.subset, 0);
  int('holdout', r.holdout, 0);
  holdoutSplit(CIFAR10_TRAIN_IMAGES, r.holdout, r.subset); // --holdout < 50,000, --subset ≤ what it leaves
  int('test-subset', r.testSubset, 0);
  int('eval-every', r.evalEvery, 1);
  num('mixup-alpha', r.augment.mixupAlpha, 0);
  num('cutmix-alpha', r.augment.cutmixAlpha, 0);
  int('randaug-ops', r.augment.randaugOps, 0);
  if (r.augment.randaugOps > 8) bad('randaug-ops', 'an integer ≤ 8', r.augment.randaugOps);
  num('randaug-magnitude', r.augment.randaugMagnitude, 0, 10);
  num('erase-prob', r.augment.eraseProb, 0, 1);
  if (!(r.beta1 >= 0 && r.beta1 < 1) || !(r.beta2 >= 0 && r.beta2 < 1) || !(r.eps > 0)) {
    throw new VimError(`invalid AdamW settings: beta1 ${r.beta1}, beta2 ${r.beta2}, eps ${r.eps}`);
  }
  return r;
}

/** One line describing a recipe, for the start of a run. */
export function describeRecipe(r: Recipe, trainImages: number, testImages: number): string {
  const fmt = (n: number) => n.toLocaleString('en-US');
  return `${r.model} on ${fmt(trainImages)} training images for ${r.epochs} epoch${r.epochs === 1 ? '' : 's'}, ` +
    `batch ${r.batchSize}, AdamW lr ${Number(r.lr.toPrecision(3))} (warm-up ${r.warmupEpochs} epochs, cosine to ${Number(r.minLr.toPrecision(3))}), ` +
    `weight decay ${r.weightDecay}, label smoothing ${r.labelSmoothing}, augment ${augmentList(r.augment)}, ` +
    `${r.ema > 0 ? `EMA ${r.ema}` : 'no EMA'}, ${r.gradClip > 0 ? `grad clip ${r.gradClip}` : 'no grad clip'}, ` +
    `${r.dropPath > 0 ? `drop path ${r.dropPath}, ` : ''}seed ${r.seed}; ` +
    `test on ${fmt(testImages)} images` +
    (r.holdout > 0 ? ` and validate on ${describeHoldout(r.holdout)} (held out)` : '') +
    ` every ${r.evalEvery === 1 ? 'epoch' : `${r.evalEvery} epochs`}`;
}

/** Options that may change when a run is resumed (the rest would make it another run). */
export const RESUME_OPTIONS: readonly string[] = ['epochs', 'eval-every', 'lr', 'min-lr', 'grad-clip', 'log-every', 'data-dir', 'resume'];

/**
 * Refuse options given with --resume that would change a fixed part of the run's recipe.
 * `given` holds the options the user gave (name → value), `stored` the run's recipe.
 */
export function checkResumeOptions(given: Readonly<Record<string, unknown>>, stored: Recipe, dir: string): void {
  const may = RESUME_OPTIONS.filter((o) => o !== 'resume').map((o) => `--${o}`).join(', ');
  for (const [k, v] of Object.entries(given)) {
    if (v === undefined || RESUME_OPTIONS.includes(k)) continue;
    if (k === 'holdout') {
      const kept = stored.holdout > 0 ? `validates on ${describeHoldout(stored.holdout)} (--holdout ${stored.holdout})` : 'holds no image out (--holdout 0)';
      throw new VimError(`--holdout cannot change when a run is resumed: the run in ${dir} ${kept} and keeps that split; drop --holdout`);
    }
    throw new VimError(`--${k} cannot change when a run is resumed (the run in ${dir} keeps its recipe); only ${may} may be given with --resume`);
  }
}

/**
 * A recipe read back from a run's recipe.json; runs from before --holdout held nothing out, runs
 * from before --drop-path dropped nothing.
 */
export function storedRecipe(
  stored: Omit<Recipe, 'holdout' | 'dropPath' | 'augment'> & {
    holdout?: number;
    dropPath?: number;
    augment: Omit<AugmentRecipe, 'randaugOps' | 'randaugMagnitude' | 'eraseProb'> & Partial<AugmentRecipe>;
  },
): Recipe {
  // recipes saved before RandAugment and erasing existed had neither
  return {
    ...stored, holdout: stored.holdout ?? 0, dropPath: stored.dropPath ?? 0,
    augment: { randaugOps: 0, randaugMagnitude: RANDAUG_MAGNITUDE, eraseProb: 0, ...stored.augment },
  };
}

/**
 * The drop probability of each block's output, as the Vim reference sets them: the rates
 * linspace(0, rate, depth) belong to the blocks' residual adds, and block i's output is added by
 * block i + 1 (rate·(i + 1)/(depth − 1)); the last block's output is added before the final norm,
 * with the full rate.
 */
export function dropPathRates(depth: number, rate: number): number[] {
  return Array.from({ length: depth }, (_, i) => (i === depth - 1 ? rate : (rate * (i + 1)) / (depth - 1)));
}
