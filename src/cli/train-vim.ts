#!/usr/bin/env node
/**
 * `train-vim`: train a Vim on CIFAR-10 and leave the run in runs/NAME/ (see src/train/run-dir.ts).
 *
 * The defaults fit the adapter (src/train/recipe.ts): the full Vim-Ti recipe on a GPU, a
 * 10-minute vim-nano run on a CPU fallback adapter such as lavapipe. Ctrl-C (SIGINT), SIGTERM or
 * SIGHUP (the terminal closed, an SSH connection dropped) finishes the current step, saves the
 * training state and says how to resume; --resume continues exactly.
 */
import { existsSync } from 'node:fs';
import { constants } from 'node:os';
import { basename, resolve } from 'node:path';
import { VimError } from '../errors.js';
import { acquireGpu, describeGpu } from '../gpu/device.js';
import { ensureCifar10, loadCifar10Split } from '../data/cifar10.js';
import { removePendingTemps } from '../io/safetensors.js';
import { loadConfig, resolveConfig, type VimConfig } from '../model/config.js';
import { describeConfig } from '../model/checkpoint.js';
import { paramCount } from '../model/params.js';
import { TrainProgress, formatDuration, pct } from '../train/progress.js';
import {
  augmentNames, checkResumeOptions, defaultRecipe, describeRecipe, MIX_ALPHA, parseAugmentList, RESUME_OPTIONS, scaledLr, storedRecipe,
  validateRecipe, type Recipe, type RecipeKind,
} from '../train/recipe.js';
import { describeHoldout } from '../train/holdout.js';
import { checkNewRunFolder, checkResumable, readJson, RUN_FILES, runPath, type RunFolderKind } from '../train/run-dir.js';
import { Trainer } from '../train/trainer.js';
import { numberOpt, runCli, stringOpt, type CommandSpec, type Parsed } from './common.js';

/** The options --resume takes besides the folder, for its help: "--epochs, … and --data-dir". */
const resumable = RESUME_OPTIONS.filter((o) => o !== 'resume').map((o) => `--${o}`);
const resumableList = `${resumable.slice(0, -1).join(', ')} and ${resumable[resumable.length - 1]}`;

const spec: CommandSpec = {
  name: 'train-vim',
  summary: 'train a Vision Mamba (Vim) on CIFAR-10 with WebGPU',
  usage: 'train-vim [options]            (a new run in --out)\n       train-vim --resume runs/NAME   (continue a stopped run)',
  options: {
    model: { type: 'string', arg: 'NAME|FILE', help: 'model config: a name in models/ (vim-nano, vim-tiny) or a .json path (default: vim-tiny on a GPU, vim-nano on a CPU adapter)' },
    epochs: { type: 'string', arg: 'N', help: 'training epochs (default: 115 on a GPU, 3 on a CPU adapter)' },
    'batch-size': { type: 'string', arg: 'N', help: 'images per step (default: 256 on a GPU, 32 on a CPU adapter)' },
    lr: { type: 'string', arg: 'X', help: 'peak learning rate of AdamW (default: 1e-3 × batch-size / 256 on a GPU, 3e-3 on a CPU adapter)' },
    'min-lr': { type: 'string', arg: 'X', help: 'learning rate at the end of the cosine decay (default: 1e-5)' },
    'weight-decay': { type: 'string', arg: 'X', help: 'AdamW weight decay; never applied to A_log, D, biases, norms or embeddings (default: 0.1 on a GPU, 0.05 on a CPU adapter)' },
    warmup: { type: 'string', arg: 'EPOCHS', help: 'epochs of linear learning-rate warm-up, fractions allowed (default: 5 on a GPU, 0.5 on a CPU adapter)' },
    'label-smoothing': { type: 'string', arg: 'X', help: 'label smoothing of the targets, 0…0.99 (default: 0.1)' },
    augment: { type: 'string', arg: 'LIST', help: 'comma list of crop (random crop, 4-px zero padding), flip (horizontal), mixup, cutmix (one of the two a batch where both are given), randaug (RandAugment), erase (random erasing); or none (default: crop,flip,randaug,mixup,cutmix on a GPU, crop,flip on a CPU adapter)' },
    'mixup-alpha': { type: 'string', arg: 'A', help: 'mixup\'s Beta(A, A) when --augment has mixup (default: 0.2)' },
    'cutmix-alpha': { type: 'string', arg: 'A', help: 'cutmix\'s Beta(A, A) when --augment has cutmix (default: 0.2)' },
    'randaug-ops': { type: 'string', arg: 'N', help: 'RandAugment\'s operations per image when --augment has randaug, 1…8 (default: 2)' },
    'randaug-magnitude': { type: 'string', arg: 'M', help: 'RandAugment\'s magnitude when --augment has randaug, 0…10 (default: 5)' },
    'erase-prob': { type: 'string', arg: 'P', help: 'the probability of random erasing per image when --augment has erase (default: 0.25)' },
    ema: { type: 'string', arg: 'DECAY', help: 'keep an exponential moving average of the weights with this decay and evaluate it; 0 = off (default: 0.9995 on a GPU, 0 on a CPU adapter)' },
    'grad-clip': { type: 'string', arg: 'NORM', help: 'clip the gradients to this global L2 norm; 0 = off (default: 1)' },
    seed: { type: 'string', arg: 'N', help: 'seed of the initialisation, the shuffle and the augmentation (default: 0)' },
    'data-dir': { type: 'string', arg: 'DIR', help: 'where CIFAR-10 is, or is fetched to (default: $VIM_DATA_DIR, else datasets/)' },
    out: { type: 'string', arg: 'DIR', help: 'run folder for checkpoints, metrics and plots (default: runs/MODEL-DATE-TIME)' },
    resume: { type: 'string', arg: 'DIR', help: `continue the run in DIR where it stopped (its recipe; ${resumableList} may change)` },
    'eval-every': { type: 'string', arg: 'N', help: 'evaluate on the test images (and the --holdout images) every N epochs, and after the last (default: 5 on a GPU, 1 on a CPU adapter)' },
    subset: { type: 'string', arg: 'N', help: 'train on the first N training images (of those --holdout leaves); 0 = all (default: 0 on a GPU, 1600 on a CPU adapter)' },
    'drop-path': { type: 'string', arg: 'RATE', help: 'drop path (stochastic depth): drop each block\'s output per sample with probability rising linearly over the blocks to RATE (as Vim does), 0…0.9; 0 = off (default: 0.1 on a GPU, 0 on a CPU adapter)' },
    holdout: { type: 'string', arg: 'N', help: 'a validation set for choosing a recipe without the test set: keep the last N of the 50,000 training images (in file order: the end of data_batch_5, then data_batch_4, …; the same images in every run) out of training and evaluate on them next to the test images; fixed for a run; 0 = off (default: 0)' },
    'test-subset': { type: 'string', arg: 'N', help: 'evaluate on the first N test images; 0 = all 10,000 (default: 0 on a GPU, 1000 on a CPU adapter)' },
    recipe: { type: 'string', arg: 'auto|gpu|cpu', help: 'which defaults to start from: the full GPU recipe, the short CPU one, or by the adapter (default: auto)' },
    'log-every': { type: 'string', arg: 'SECONDS', help: 'when the output is not a terminal: seconds between progress lines; 0 = every step (default: 30)' },
  },
  epilog: [
    'A run leaves in its folder: config.json and recipe.json, metrics.jsonl (one line per epoch),',
    'steps.jsonl (one line per step), last.safetensors and best.safetensors (the evaluated weights, the',
    'EMA when there is one), state.safetensors (everything --resume needs), curves.png and confusion.png.',
    'With --holdout, metrics.jsonl has val_loss, val_acc, val_top5 and val_images next to the test figures,',
    'and best.safetensors is the epoch best on those validation images (without, the epoch best on the test set).',
    'Ctrl-C, SIGTERM or SIGHUP (the terminal closed, an SSH connection dropped) finishes the current step, saves',
    'the state and prints the command that resumes the run.',
  ].join('\n'),
};

/** "1 epoch", "3 epochs": a count with its noun (regular plurals only). */
function count(n: number, noun: string): string {
  return `${n.toLocaleString('en-US')} ${noun}${n === 1 ? '' : 's'}`;
}

/** An argument as a POSIX shell reads it back (quoted when it has anything but plain path characters). */
function shellWord(arg: string): string {
  return /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", "'\\''")}'`;
}

/**
 * A command line to print as a hint: `train-vim …` when this process was started through the
 * linked bin (`npm link` put the commands on PATH; the script's name then has no .js), else
 * `npm run train-vim -- …`, which works in the project folder without it.
 */
function hint(command: string, args: string[]): string {
  const linked = basename(process.argv[1] ?? '') === spec.name;
  const line = args.map(shellWord).join(' ');
  return linked ? `${command} ${line}` : `npm run ${command} -- ${line}`;
}

function stamp(d = new Date()): string {
  const p = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}-${p(d.getHours())}${p(d.getMinutes())}${p(d.getSeconds())}`;
}

/** The recipe of a new run: the defaults of its kind with the options given on top. */
function newRecipe(p: Parsed, kind: RecipeKind): Recipe {
  const batchSize = numberOpt(p, 'batch-size', { integer: true, min: 1 });
  const r = defaultRecipe(kind, batchSize);
  const set = <K extends keyof Recipe>(k: K, v: Recipe[K] | undefined) => {
    if (v !== undefined) r[k] = v;
  };
  set('model', stringOpt(p, 'model'));
  set('epochs', numberOpt(p, 'epochs', { integer: true, min: 1 }));
  set('lr', numberOpt(p, 'lr', { min: 0, exclusiveMin: true }));
  if (kind === 'gpu' && batchSize !== undefined && stringOpt(p, 'lr') === undefined) r.lr = scaledLr(batchSize);
  set('minLr', numberOpt(p, 'min-lr', { min: 0 }));
  if (r.minLr > r.lr && stringOpt(p, 'min-lr') === undefined) r.minLr = r.lr / 100;
  set('weightDecay', numberOpt(p, 'weight-decay', { min: 0 }));
  set('warmupEpochs', numberOpt(p, 'warmup', { min: 0 }));
  set('labelSmoothing', numberOpt(p, 'label-smoothing', { min: 0, max: 0.99 }));
  set('ema', numberOpt(p, 'ema', { min: 0, max: 0.999999 }));
  set('gradClip', numberOpt(p, 'grad-clip', { min: 0 }));
  set('seed', numberOpt(p, 'seed', { integer: true, min: 0, max: 0xffffffff }));
  set('subset', numberOpt(p, 'subset', { integer: true, min: 0 }));
  set('holdout', numberOpt(p, 'holdout', { integer: true, min: 0 }));
  set('dropPath', numberOpt(p, 'drop-path', { min: 0, max: 0.9 }));
  set('testSubset', numberOpt(p, 'test-subset', { integer: true, min: 0 }));
  set('evalEvery', numberOpt(p, 'eval-every', { integer: true, min: 1 }));
  const given = {
    mixup: numberOpt(p, 'mixup-alpha', { min: 0, exclusiveMin: true }),
    cutmix: numberOpt(p, 'cutmix-alpha', { min: 0, exclusiveMin: true }),
    randaugOps: numberOpt(p, 'randaug-ops', { integer: true, min: 1, max: 8 }),
    randaugMagnitude: numberOpt(p, 'randaug-magnitude', { min: 0, max: 10 }),
    eraseProb: numberOpt(p, 'erase-prob', { min: 0, max: 1, exclusiveMin: true }),
  };
  const list = stringOpt(p, 'augment');
  if (list !== undefined) {
    r.augment = parseAugmentList(list, { ...given, mixup: given.mixup ?? MIX_ALPHA, cutmix: given.cutmix ?? MIX_ALPHA });
  } else {
    // The defaults' list, with the settings given for the augmentations it has.
    const a = r.augment;
    r.augment = {
      ...a,
      mixupAlpha: a.mixupAlpha > 0 ? given.mixup ?? a.mixupAlpha : 0,
      cutmixAlpha: a.cutmixAlpha > 0 ? given.cutmix ?? a.cutmixAlpha : 0,
      randaugOps: a.randaugOps > 0 ? given.randaugOps ?? a.randaugOps : 0,
      randaugMagnitude: given.randaugMagnitude ?? a.randaugMagnitude,
      eraseProb: a.eraseProb > 0 ? given.eraseProb ?? a.eraseProb : 0,
    };
  }
  const a = r.augment;
  const needs = (opt: string, item: string, on: boolean) => {
    if (stringOpt(p, opt) === undefined || on) return;
    const names = augmentNames(a);
    const had = list !== undefined ? '--augment does not have' : `the default augmentations here (${names}) do not have`;
    throw new VimError(`--${opt} sets ${item}, which ${had}: add it, e.g. --augment ${names === 'none' ? item : `${names},${item}`}`);
  };
  needs('mixup-alpha', 'mixup', a.mixupAlpha > 0);
  needs('cutmix-alpha', 'cutmix', a.cutmixAlpha > 0);
  needs('randaug-ops', 'randaug', a.randaugOps > 0);
  needs('randaug-magnitude', 'randaug', a.randaugOps > 0);
  needs('erase-prob', 'erase', a.eraseProb > 0);
  return validateRecipe(r);
}

/** The recipe of a resumed run: its recipe.json with the few options that may change. */
function resumedRecipe(p: Parsed, dir: string): Recipe {
  const path = runPath(dir, 'recipe');
  if (!existsSync(path)) {
    throw new VimError(`${dir} holds no train-vim run (it has no ${RUN_FILES.recipe}): nothing to resume; check the folder name`);
  }
  checkResumable(dir);
  const stored = readJson(path, 'the recipe of the run') as Recipe;
  if (typeof stored !== 'object' || stored === null || typeof stored.model !== 'string' || typeof stored.epochs !== 'number') {
    throw new VimError(`${path} is not a recipe written by train-vim; the run folder is damaged`);
  }
  const r = storedRecipe(stored);
  checkResumeOptions(Object.fromEntries(Object.keys(spec.options).map((k) => [k, p.values[k]])), r, dir);
  r.epochs = numberOpt(p, 'epochs', { integer: true, min: 1 }) ?? r.epochs;
  r.evalEvery = numberOpt(p, 'eval-every', { integer: true, min: 1 }) ?? r.evalEvery;
  r.lr = numberOpt(p, 'lr', { min: 0, exclusiveMin: true }) ?? r.lr;
  r.minLr = numberOpt(p, 'min-lr', { min: 0 }) ?? r.minLr;
  r.gradClip = numberOpt(p, 'grad-clip', { min: 0 }) ?? r.gradClip;
  return validateRecipe(r);
}

async function main(p: Parsed): Promise<void> {
  const resumeDir = stringOpt(p, 'resume');
  const recipeOpt = stringOpt(p, 'recipe') ?? 'auto';
  if (!['auto', 'gpu', 'cpu'].includes(recipeOpt)) throw new VimError(`--recipe: expected auto, gpu or cpu but received "${recipeOpt}"`);
  const logEvery = numberOpt(p, 'log-every', { min: 0 }) ?? 30;
  if (resumeDir !== undefined && stringOpt(p, 'out') !== undefined && resolve(stringOpt(p, 'out')!) !== resolve(resumeDir)) {
    throw new VimError('--out and --resume name different folders: a resumed run stays in its folder; drop --out');
  }
  // Check what can be checked before the GPU starts: the options, the model, the run folder.
  let recipe: Recipe | null = null;
  let cfg: VimConfig | null = null;
  let folder: RunFolderKind = 'new';
  if (resumeDir !== undefined) {
    recipe = resumedRecipe(p, resumeDir);
    cfg = resolveConfig(readJson(runPath(resumeDir, 'config'), 'the model config of the run'), runPath(resumeDir, 'config'));
  } else {
    const model = stringOpt(p, 'model');
    if (model !== undefined) cfg = loadConfig(model);
    const out = stringOpt(p, 'out');
    if (out !== undefined) folder = checkNewRunFolder(out); // Trainer.create checks again, and clears an unfinished run's logs
    if (recipeOpt !== 'auto') recipe = newRecipe(p, recipeOpt as RecipeKind);
    else newRecipe(p, 'gpu'); // validates the options now; the adapter decides the defaults below
  }

  const gpu = await acquireGpu();
  console.log(`adapter: ${describeGpu(gpu)}`);
  if (!recipe) {
    const kind: RecipeKind = gpu.info.isCpu ? 'cpu' : 'gpu';
    recipe = newRecipe(p, kind);
    if (kind === 'cpu') {
      console.log(
        'this is a CPU adapter (a few GFLOP/s), so train-vim starts from its short CPU recipe: by default vim-nano on the ' +
        'first 1,600 training images for 3 epochs, about 3½ minutes on 2 cores; it shows the pipeline working, not a good ' +
        'model. Options change any part of it; --recipe gpu starts from the full Vim-Ti recipe (days on a CPU).',
      );
    }
  }
  cfg ??= loadConfig(recipe.model);
  const dir = resolve(resumeDir ?? stringOpt(p, 'out') ?? `runs/${basename(recipe.model).replace(/\.json$/, '')}-${stamp()}`);
  const shown = resumeDir ?? stringOpt(p, 'out') ?? `runs/${basename(dir)}`;

  const dataDir = stringOpt(p, 'data-dir');
  const batches = await ensureCifar10({ dir: dataDir, progress: true, log: (m) => console.log(`data: ${m}`) });
  const train = loadCifar10Split(batches, 'train', { verify: false });
  const test = loadCifar10Split(batches, 'test', { verify: false });

  // Bars redraw on stderr; when either stream goes to a file or a pipe (CI logs, `| tee`), plain lines instead.
  const tty = process.stdout.isTTY === true && process.stderr.isTTY === true;
  const progress = new TrainProgress({ tty, logEvery, print: (l) => console.log(l) });
  const trainer = await Trainer.create({
    gpu, cfg, recipe, dir, train, test, resume: resumeDir !== undefined, events: progress,
    info: { adapter: describeGpu(gpu) },
  });
  progress.plan(recipe.epochs, recipe.evalEvery);
  console.log(`model: ${describeConfig(cfg)}, ${paramCount(cfg).toLocaleString('en-US')} parameters`);
  if (trainer.model.note) console.log(`note: ${trainer.model.note}`);
  console.log(`recipe: ${describeRecipe(recipe, trainer.train.n, trainer.test.n)}`);
  console.log(`${count(trainer.stepsPerEpoch, 'step')} per epoch, ${trainer.totalSteps.toLocaleString('en-US')} in all`);
  const st = trainer.sampler.state;
  if (resumeDir !== undefined) {
    if (st.epoch >= recipe.epochs) {
      console.log(`the run in ${shown} has already finished its ${count(recipe.epochs, 'epoch')}; pass --epochs with more to train longer`);
      trainer.destroy();
      return;
    }
    console.log(`resuming ${shown} at epoch ${st.epoch + 1}, step ${trainer.model.step} (batch ${st.cursor} of ${trainer.stepsPerEpoch} done)`);
  } else if (folder === 'unfinished') {
    console.log(`run folder: ${shown} (it held a run that never finished an epoch; starting over in it)`);
  } else {
    console.log(`run folder: ${shown}`);
  }

  // The first SIGINT (Ctrl-C), SIGTERM (a scheduler's stop, `timeout`, `kill`) or SIGHUP (the
  // terminal closed, an SSH connection dropped) finishes the step and saves; another more than a
  // second later quits at once. A signal that arrives twice within a second counts once: `timeout`
  // sends it to the process and then to its whole process group.
  const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
  let stopSignal: NodeJS.Signals | null = null;
  let stopAt = 0;
  const exitCode = (signal: NodeJS.Signals) => 128 + constants.signals[signal]; // 130, 143, 129
  const onSignal = (signal: NodeJS.Signals) => {
    if (signal === 'SIGHUP') {
      // The terminal may be gone: writing to it fails (EIO), which must not stop the save.
      for (const stream of [process.stdout, process.stderr]) stream.on('error', () => undefined);
    }
    if (stopSignal === null) {
      stopSignal = signal;
      stopAt = Date.now();
      progress.stopBar();
      console.log(`\n${signal === 'SIGINT' ? '' : `${signal}: `}stopping after the current step and saving the training state… (Ctrl-C again quits at once, without saving)`);
      trainer.requestStop();
    } else if (Date.now() - stopAt >= 1000) {
      console.error('train-vim: quit without saving; the last saved state (end of the previous epoch or stop) is kept');
      removePendingTemps(); // files being written in the background keep their previous contents
      process.exit(exitCode(signal));
    }
  };
  for (const signal of signals) process.on(signal, onSignal);
  let outcome;
  try {
    outcome = await trainer.run();
  } finally {
    for (const signal of signals) process.off(signal, onSignal);
    progress.stopBar();
    trainer.destroy();
  }
  let best = !outcome.best
    ? 'not evaluated yet'
    : recipe.holdout > 0
      ? `best.safetensors is epoch ${outcome.best.epoch}, chosen on the validation images (its test accuracy ${pct(outcome.best.test_acc)})`
      : `best test accuracy ${pct(outcome.best.test_acc)} (epoch ${outcome.best.epoch})`;
  const val = outcome.val;
  if (val?.last && val.best) {
    best += `; validation accuracy on ${describeHoldout(recipe.holdout)} ${pct(val.last.val_acc)} (epoch ${val.last.epoch}), ` +
      `best ${pct(val.best.val_acc)} (epoch ${val.best.epoch})`;
  }
  if (outcome.status === 'stopped') {
    const s = trainer.sampler.state;
    console.log(
      `stopped at step ${outcome.step} (epoch ${s.epoch + 1}, batch ${s.cursor} of ${trainer.stepsPerEpoch}); ${best}. ` +
      `The training state is saved in ${runPath(shown, 'state')}.\nresume with: ${hint('train-vim', ['--resume', shown])}`,
    );
    process.exitCode = exitCode(stopSignal ?? 'SIGINT');
    return;
  }
  const elapsed = outcome.last ? formatDuration(outcome.last.elapsed_s) : '';
  console.log(`done: ${count(outcome.epochs, 'epoch')}, ${count(outcome.step, 'step')} in ${elapsed}; ${best}`);
  console.log(`files in ${shown}: best.safetensors, last.safetensors, metrics.jsonl, steps.jsonl, curves.png, confusion.png, state.safetensors`);
  console.log(`evaluate with: ${hint('eval-vim', ['--checkpoint', runPath(shown, 'best')])}`);
}
runCli(spec, main);
