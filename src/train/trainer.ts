/**
 * The training loop: epochs of augmented batches through VimGpu.trainStepFull (one submit and one
 * read-back per step), evaluation on the test images (and, with a recipe's `holdout`, on the
 * held-out validation images: see holdout.ts), checkpoints, metrics and plots in the run folder
 * (see run-dir.ts), and a training state from which a stopped run continues exactly.
 *
 * Exact resumption: the weights, AdamW moments, EMA and step come back bit for bit from
 * state.safetensors; the sampler's shuffle is a function of (seed, epoch) and its position is
 * saved; the augmentation RNG's four words are saved. Every kernel sums in a fixed order, so the
 * resumed run computes the same losses as an uninterrupted one.
 *
 * Two steps are in flight: step t + 1 is submitted before step t's result (loss, gradient norm,
 * logits) is awaited, and while the GPU runs them the CPU prepares batch t + 2 (sampling, crop,
 * flip, RandAugment, mixing), so the GPU does not wait for the CPU between steps. When a stop is
 * requested, the step in flight is finished too and the sampler and RNG are put back to before the
 * batch prepared after it, so the saved state is the state after the last step run.
 *
 * At the end of an epoch the weights, the AdamW moments and the EMA are read back once (for
 * last/best.safetensors and state.safetensors alike) and the files are queued to be written in
 * the background (write-queue.ts) while the next epoch trains: the encoding into safetensors
 * pieces is views of the read-back arrays, and the writes, fsyncs, renames and PNG rendering run
 * on Node's thread pool. The next epoch's end waits for any of them left; a stop or the end of
 * the run waits for all of them, so run() returns with every file on disk.
 *
 * The library prints nothing: progress goes to the `events` callbacks (the CLI draws bars or
 * lines from them). A stop is requested with requestStop() (the CLI calls it on Ctrl-C, SIGTERM
 * or SIGHUP).
 */
import { accessSync, constants, existsSync, mkdirSync } from 'node:fs';
import { VimError } from '../errors.js';
import type { Gpu } from '../gpu/device.js';
import { confusionPng, curvesPng } from '../io/plots.js';
import { checkpointChunks, loadCheckpoint, type LoadedCheckpoint } from '../model/checkpoint.js';
import { configToJson, resolveConfig, sameArchitecture, type VimConfig } from '../model/config.js';
import { initParams } from '../model/init.js';
import { ParamSet } from '../model/params.js';
import { VimGpu, type OptimizerHyper, type StepResult } from '../model/vim-gpu.js';
import { Rng, type RngState } from '../rng.js';
import { makeTrainBatch, type TrainBatch } from './augment.js';
import { evaluate, firstImages, imageRange, type LabelledImages } from './evaluate.js';
import { holdoutSplit } from './holdout.js';
import { argmaxRow, type ClassificationResult } from './metrics.js';
import { dropPathRates, validateRecipe, type Recipe } from './recipe.js';
import {
  checkNewRunFolder, checkResumable, emptyTotals, jsonlText, lockRunFolder, readJson, readJsonl, removeStaleLogs, RUN_FILES, runPath, writeJson,
  type EpochRecord, type EpochTotals, type StepRecord, type TrainState,
} from './run-dir.js';
import { EpochSampler, type SamplerState } from './sampler.js';
import { emaDecayAt, lrAt, type LrSchedule } from './schedule.js';
import { WriteQueue } from './write-queue.js';

/** Prefix of the training-state tensors stored next to the weights in state.safetensors. */
const STATE_PREFIX = 'train.';

export interface StepEvent {
  step: number; // 1-based over the run
  epoch: number; // 1-based
  epochs: number;
  index: number; // 1-based step within the epoch
  stepsPerEpoch: number;
  totalSteps: number;
  loss: number;
  lr: number;
  gradNorm: number;
  /** Running means of the epoch so far. */
  epochLoss: number;
  epochAcc: number;
  /** Training images per second over the epoch so far. */
  imagesPerS: number;
  /** Mean wall seconds per step over the epoch so far. */
  stepS: number;
}

export interface TrainEvents {
  start?(e: {
    resumed: boolean; step: number; epoch: number; stepsPerEpoch: number; totalSteps: number; trainImages: number; testImages: number;
    /** Held-out validation images (0 without --holdout). */
    valImages: number;
  }): void;
  epochStart?(e: { epoch: number; epochs: number; done: number; stepsPerEpoch: number }): void;
  step?(e: StepEvent): void;
  /** An evaluation begins: of the test images, then (with a holdout) of the validation images. */
  evalStart?(e: { epoch: number; images: number; set: EvalSet }): void;
  evalProgress?(done: number, total: number): void;
  epochEnd?(record: EpochRecord, best: { epoch: number; test_acc: number } | null): void;
}

/** Which images an evaluation is of: the test set, or the held-out part of the training set. */
export type EvalSet = 'test' | 'validation';

export interface TrainerSetup {
  gpu: Gpu;
  /** The model config (on resume, the run's config.json decides; this must match it). */
  cfg: VimConfig;
  recipe: Recipe;
  /** The run folder. */
  dir: string;
  /** The whole training and test sets; the recipe's holdout and subset sizes are applied here. */
  train: LabelledImages;
  test: LabelledImages;
  /** Continue the run in `dir` from its state.safetensors. */
  resume: boolean;
  events?: TrainEvents;
  /** Extra metadata for the checkpoints (e.g. the adapter). */
  info?: Record<string, unknown>;
}

export interface TrainOutcome {
  status: 'done' | 'stopped';
  /** Epochs completed (evaluated and recorded). */
  epochs: number;
  step: number;
  best: { epoch: number; test_acc: number } | null;
  last: EpochRecord | null;
  /** With a holdout: the latest and the best validation accuracy, and their epochs (null before any evaluation). */
  val: { last: { epoch: number; val_acc: number } | null; best: { epoch: number; val_acc: number } | null } | null;
}

interface Prepared {
  batch: TrainBatch;
  before: { sampler: SamplerState; rng: RngState };
}

/** A submitted training step whose result has not been taken yet. */
interface InFlight {
  pending: Promise<StepResult>;
  prepared: Prepared;
  step: number;
  lr: number;
  /** Batches of the epoch done once this step is (the progress bar's position). */
  index: number;
}

/** What the training state holds of the GPU, read back once for the state and the checkpoints. */
interface GpuState {
  params: ParamSet<Float32Array>;
  opt: { m: Float32Array; v: Float32Array; step: number };
  ema: ParamSet<Float32Array> | null;
}

export class Trainer {
  private stopRequested = false;
  /** Gives the run folder back (lockRunFolder); destroy calls it. */
  private unlock: () => void = () => undefined;
  private rng: Rng;
  private steps: StepRecord[] = [];
  private metrics: EpochRecord[] = [];
  private totals: EpochTotals = emptyTotals();
  private best: { epoch: number; test_acc: number } | null = null;
  private elapsedBase = 0; // seconds of earlier sessions of this run
  private readonly sessionStart = performance.now();
  private readonly schedule: LrSchedule;
  /** The run folder's files, written in the background (write-queue.ts). */
  private readonly writes = new WriteQueue();
  /** steps.jsonl's text for the first `rows` steps (the log only grows; each save adds the new lines). */
  private stepsText = { rows: 0, text: '' };

  private constructor(
    private readonly s: TrainerSetup,
    readonly cfg: VimConfig,
    readonly recipe: Recipe,
    readonly train: LabelledImages,
    readonly test: LabelledImages,
    /** The held-out validation images (null without a holdout). */
    readonly val: LabelledImages | null,
    readonly sampler: EpochSampler,
    readonly model: VimGpu,
    private readonly evalModel: VimGpu,
  ) {
    this.rng = new Rng((recipe.seed ^ 0xa5a5a5a5) >>> 0);
    const spe = sampler.stepsPerEpoch;
    this.schedule = {
      lr: recipe.lr, minLr: recipe.minLr, warmupSteps: Math.round(recipe.warmupEpochs * spe), totalSteps: recipe.epochs * spe,
    };
  }

  /** Build the models and either start a fresh run in `dir` or load its training state. */
  static async create(s: TrainerSetup): Promise<Trainer> {
    const recipe = validateRecipe(s.recipe);
    const per = 3 * s.cfg.imgSize * s.cfg.imgSize;
    if (s.train.images.length !== s.train.n * per || s.test.images.length !== s.test.n * per) {
      throw new VimError(`the data's images are not ${s.cfg.imgSize}×${s.cfg.imgSize} RGB, as ${s.cfg.name} expects`);
    }
    // The held-out images are the last `holdout` of the whole set; training takes the first images before them.
    const split = holdoutSplit(s.train.n, recipe.holdout, recipe.subset);
    const train = imageRange(s.train, split.train.start, split.train.end, per);
    const val = recipe.holdout > 0 ? imageRange(s.train, split.val.start, split.val.end, per) : null;
    const test = firstImages(s.test, recipe.testSubset || undefined, per);
    const sampler = new EpochSampler(train.n, recipe.batchSize, recipe.seed);

    let cfg = s.cfg;
    let unlock: () => void;
    if (s.resume) {
      checkResumable(s.dir);
      if (existsSync(runPath(s.dir, 'config'))) {
        cfg = resolveConfig(readJson(runPath(s.dir, 'config'), 'model config'), runPath(s.dir, 'config'));
        if (!sameArchitecture(cfg, s.cfg)) {
          throw new VimError(`the run in ${s.dir} trains ${cfg.name}, not ${s.cfg.name}: resume it without --model`);
        }
      }
      // The held-out images are part of what the run is: another split would train on images it validated on.
      if (existsSync(runPath(s.dir, 'recipe'))) {
        const held = (readJson(runPath(s.dir, 'recipe'), 'the recipe of the run') as { holdout?: number }).holdout ?? 0;
        if (held !== recipe.holdout) {
          throw new VimError(
            `the run in ${s.dir} holds out ${held} training ${held === 1 ? 'image' : 'images'} (--holdout ${held}), not ${recipe.holdout}: ` +
            'a resumed run keeps its held-out images',
          );
        }
      }
      unlock = lockRunFolder(s.dir);
    } else {
      // A new, empty or unfinished folder (see runFolderKind); the CLI has said when it starts over.
      checkNewRunFolder(s.dir);
      try {
        mkdirSync(s.dir, { recursive: true });
      } catch (e) {
        throw new VimError(`cannot create the run folder ${s.dir} (${(e as Error).message}); choose another --out`);
      }
      unlock = lockRunFolder(s.dir); // then look again: another run may have started in it since
      if (checkNewRunFolder(s.dir) === 'unfinished') removeStaleLogs(s.dir);
    }

    let t: Trainer | undefined;
    try {
      const model = await VimGpu.create(s.gpu, cfg, {
        batch: recipe.batchSize, training: true, ema: recipe.ema > 0, dropPath: recipe.dropPath > 0,
      });
      const evalModel = await VimGpu.create(s.gpu, cfg, { batch: recipe.batchSize, training: false });
      t = new Trainer(s, cfg, recipe, train, test, val, sampler, model, evalModel);
      t.unlock = unlock;
      if (s.resume) {
        t.loadState();
        writeJson(runPath(s.dir, 'recipe'), recipe); // with any option changed on resuming (e.g. more --epochs)
      } else {
        model.setParams(initParams(cfg, recipe.seed));
        if (model.ema) model.resetEma();
        writeJson(runPath(s.dir, 'config'), configToJson(cfg));
        writeJson(runPath(s.dir, 'recipe'), recipe);
      }
      return t;
    } catch (e) {
      if (t !== undefined) t.destroy();
      else unlock();
      throw e;
    }
  }

  /** Ask the loop to stop after the current step (or evaluation batch) and save its state. */
  requestStop(): void {
    this.stopRequested = true;
  }

  get stopping(): boolean {
    return this.stopRequested;
  }

  /** Steps per epoch and in the whole run. */
  get stepsPerEpoch(): number {
    return this.sampler.stepsPerEpoch;
  }

  get totalSteps(): number {
    return this.schedule.totalSteps;
  }

  private get elapsed(): number {
    return this.elapsedBase + (performance.now() - this.sessionStart) / 1000;
  }

  private loadState(): void {
    const { dir } = this.s;
    const path = runPath(dir, 'state');
    let ck: LoadedCheckpoint;
    try {
      ck = loadCheckpoint(path, this.cfg, { extraPrefixes: [STATE_PREFIX] });
    } catch (e) {
      // The reader's advice (re-create the file, pass --model, …) does not apply to a run's state.
      if (e instanceof VimError && readable(path)) throw damagedState(dir, e.reason ?? e.message);
      throw e;
    }
    const st = ck.meta.train_state as TrainState | undefined;
    if (!st || st.version !== 1 || !Array.isArray(st.rng) || typeof st.step !== 'number') {
      throw damagedState(dir, 'its metadata holds no training state');
    }
    const tensor = (name: string): Float32Array => {
      const x = ck.extra.get(STATE_PREFIX + name);
      if (!x) throw damagedState(dir, `it lacks the tensor ${STATE_PREFIX}${name}`);
      return Float32Array.from(x.data);
    };
    this.model.setParams(ck.params);
    this.model.setOptimizerState({ m: tensor('adamw_m'), v: tensor('adamw_v'), step: st.step });
    if (this.model.ema) {
      if (!st.ema) throw new VimError(`the run in ${dir} kept no EMA of its weights; it cannot add one when resumed`);
      this.model.setEma(new ParamSet(this.cfg, tensor('ema')));
    } else if (st.ema) {
      throw new VimError(`the run in ${dir} keeps an EMA of its weights; it cannot drop it when resumed`);
    }
    if (st.sampler.cursor > this.sampler.stepsPerEpoch) {
      throw new VimError(`the training state of ${dir} does not fit its recipe (batch ${st.sampler.cursor} of ${this.sampler.stepsPerEpoch}); the run folder is damaged`);
    }
    this.sampler.state = st.sampler;
    this.rng = new Rng(st.rng);
    this.totals = st.totals;
    this.best = st.best;
    this.elapsedBase = st.elapsed_s;
    // Logs may run past the saved state (a crash after the last save): keep what the state covers.
    this.steps = readJsonl<StepRecord>(runPath(dir, 'steps')).filter((r) => r.step <= st.step);
    this.stepsText = { rows: 0, text: '' };
    this.metrics = readJsonl<EpochRecord>(runPath(dir, 'metrics')).filter((r) => r.epoch <= st.sampler.epoch);
  }

  /** Read back the weights, the AdamW moments and the EMA (all at once: the read-backs overlap). */
  private async readGpuState(): Promise<GpuState> {
    const [params, opt, ema] = await Promise.all([
      this.model.getParams(), this.model.getOptimizerState(), this.model.ema ? this.model.getEma() : null,
    ]);
    return { params, opt, ema };
  }

  /** Queue steps.jsonl and metrics.jsonl as they are now. */
  private queueLogs(): void {
    const c = this.stepsText;
    if (c.rows < this.steps.length) {
      c.text += jsonlText(this.steps.slice(c.rows));
      c.rows = this.steps.length;
    }
    const encode = (text: string) => new TextEncoder().encode(text);
    this.writes.write(runPath(this.s.dir, 'steps'), encode(c.text));
    this.writes.write(runPath(this.s.dir, 'metrics'), encode(jsonlText(this.metrics)));
  }

  /** Queue state.safetensors: `gpu` (read back after the last step) with the CPU's side of the state now. */
  private queueState(gpu: GpuState): void {
    const { params, opt, ema } = gpu;
    const n = params.flat.length;
    const extra = [
      { name: `${STATE_PREFIX}adamw_m`, shape: [n], data: opt.m },
      { name: `${STATE_PREFIX}adamw_v`, shape: [n], data: opt.v },
    ];
    if (ema) extra.push({ name: `${STATE_PREFIX}ema`, shape: [n], data: ema.flat });
    const state: TrainState = {
      version: 1, step: opt.step, sampler: this.sampler.state, rng: this.rng.state, totals: this.totals,
      best: this.best, elapsed_s: this.elapsed, ema: ema !== null,
    };
    this.writes.write(runPath(this.s.dir, 'state'), checkpointChunks(params, { recipe: this.recipe, train_state: state, ...this.s.info }, { extra }));
  }

  /** Save the training state and the logs (on a stop) and wait until they are on disk. */
  private async saveState(): Promise<void> {
    const gpu = await this.readGpuState();
    this.queueLogs();
    this.queueState(gpu);
    await this.writes.flush();
  }

  private prepare(): Prepared {
    const before = { sampler: this.sampler.state, rng: this.rng.state };
    const { indices } = this.sampler.next();
    const batch = makeTrainBatch(this.train, indices, { H: this.cfg.imgSize, W: this.cfg.imgSize, C: this.cfg.C }, {
      ...this.recipe.augment, labelSmoothing: this.recipe.labelSmoothing,
    }, this.rng);
    return { batch, before };
  }

  private hyper(step: number): OptimizerHyper & { lr: number } {
    const r = this.recipe;
    return {
      lr: lrAt(step, this.schedule), beta1: r.beta1, beta2: r.beta2, eps: r.eps, weightDecay: r.weightDecay,
      maxGradNorm: r.gradClip, emaDecay: r.ema > 0 ? emaDecayAt(step, r.ema) : undefined,
    };
  }

  private diverged(step: number, epoch: number, loss: number): VimError {
    const done = this.metrics.length;
    const kept = done > 0
      ? `${runPath(this.s.dir, 'last')} and the training state of epoch ${done} are kept`
      : 'no epoch had finished, so no checkpoint was written';
    return new VimError(
      `the loss became ${Number.isNaN(loss) ? 'NaN' : 'infinite'} at step ${step} (epoch ${epoch}); training stopped: ${kept}. ` +
      `Try a lower --lr, a longer --warmup or --grad-clip 1`,
    );
  }

  /**
   * Train until the last epoch is done or a stop is requested. Returns once every file is on disk
   * (on an error too, what was queued is written before the error propagates).
   */
  async run(): Promise<TrainOutcome> {
    try {
      const status = await this.loop();
      await this.writes.flush();
      return this.outcome(status);
    } finally {
      await this.writes.settle();
    }
  }

  private async loop(): Promise<TrainOutcome['status']> {
    const { events } = this.s;
    const r = this.recipe;
    const B = r.batchSize;
    const spe = this.sampler.stepsPerEpoch;
    events?.start?.({
      resumed: this.s.resume, step: this.model.step, epoch: this.sampler.state.epoch, stepsPerEpoch: spe,
      totalSteps: this.totalSteps, trainImages: this.train.n, testImages: this.test.n, valImages: this.val?.n ?? 0,
    });
    while (this.sampler.state.epoch < r.epochs) {
      const epoch = this.sampler.state.epoch + 1; // 1-based for people
      const epochStart = performance.now() - this.totals.trainS * 1000;
      if (!this.sampler.epochDone) {
        events?.epochStart?.({ epoch, epochs: r.epochs, done: this.sampler.state.cursor, stepsPerEpoch: spe });
        // Two steps in flight: step t + 1 is submitted (its batch prepared while step t ran) before
        // step t's result is awaited, so the GPU never waits for the CPU between steps; the results
        // are taken in order, one step behind.
        let prepared: Prepared | null = this.prepare();
        let inFlight: InFlight | null = null;
        let mark = performance.now();
        for (;;) {
          let submitted: InFlight | null = null;
          let next: Prepared | null = null;
          if (prepared) {
            const step = this.model.step + 1;
            const hyper = this.hyper(step);
            this.model.setBatch(prepared.batch.images, B, prepared.batch.targets);
            if (r.dropPath > 0) this.model.setDropScales(dropPathFactors(this.cfg.depth, B, r.dropPath, r.seed, step));
            const pending = this.model.trainStepFull(hyper, { logits: true });
            pending.catch(() => undefined); // awaited below, one step later; an error then propagates from there
            submitted = { pending, prepared, step, lr: hyper.lr, index: this.sampler.state.cursor };
            next = this.sampler.epochDone ? null : this.prepare(); // overlaps the GPU's work
          }
          if (inFlight) {
            const res = await inFlight.pending;
            const { step, lr, index } = inFlight;
            const labels = inFlight.prepared.batch.labels;
            let correct = 0;
            for (let b = 0; b < B; b++) if (argmaxRow(res.logits!, b, this.cfg.C) === labels[b]) correct++;
            this.steps.push({ step, epoch, lr, loss: res.loss, grad_norm: res.gradNorm });
            if (!Number.isFinite(res.loss) || res.skipped) {
              if (submitted) await submitted.pending.catch(() => undefined); // let the step after it finish before the error
              this.queueLogs(); // run() writes them before the error propagates
              throw this.diverged(step, epoch, Number.isFinite(res.loss) ? res.gradNorm : res.loss);
            }
            const now = performance.now();
            const tt = this.totals;
            tt.steps += 1;
            tt.lossSum += res.loss;
            tt.correct += correct;
            tt.seen += B;
            tt.gradNormSum += res.gradNorm;
            tt.clipped += res.clipScale < 1 ? 1 : 0;
            tt.trainS += (now - mark) / 1000;
            mark = now;
            tt.lastLr = lr;
            events?.step?.({
              step, epoch, epochs: r.epochs, index, stepsPerEpoch: spe,
              totalSteps: this.totalSteps, loss: res.loss, lr, gradNorm: res.gradNorm,
              epochLoss: tt.lossSum / tt.steps, epochAcc: tt.correct / tt.seen, imagesPerS: tt.seen / tt.trainS, stepS: tt.trainS / tt.steps,
            });
            if (this.stopRequested) {
              // put back the batch prepared after the step in flight, take that step, then save
              if (next) {
                this.sampler.state = next.before.sampler;
                this.rng = new Rng(next.before.rng);
              }
              if (submitted) {
                inFlight = submitted;
                prepared = null;
                continue;
              }
              await this.saveState();
              return 'stopped';
            }
            this.writes.check(); // a failed save of the previous epoch stops the run
          }
          if (!submitted) break;
          inFlight = submitted;
          prepared = next;
        }
      }

      // ---- end of epoch: evaluate, record, checkpoint, plot
      const evaluateNow = epoch % r.evalEvery === 0 || epoch === r.epochs;
      const weights = this.model.ema ? 'ema' : 'raw';
      let result: ClassificationResult | null = null;
      let valResult: ClassificationResult | null = null;
      if (evaluateNow) {
        this.evalModel.copyParamsFrom(this.model, this.model.ema ? 'ema' : 'params');
        const sets: [EvalSet, LabelledImages][] = [['test', this.test]];
        if (this.val) sets.push(['validation', this.val]);
        for (const [set, data] of sets) {
          events?.evalStart?.({ epoch, images: data.n, set });
          const res = await evaluate(this.evalModel, data, {
            onProgress: (done, total) => events?.evalProgress?.(done, total), shouldStop: () => this.stopRequested,
          });
          if (!res) {
            await this.saveState(); // the epoch's steps are done; its evaluations run on resume
            return 'stopped';
          }
          if (set === 'test') result = res;
          else valResult = res;
        }
      }
      const tt = this.totals;
      const record: EpochRecord = {
        epoch, step: this.model.step, lr: tt.lastLr, train_loss: tt.lossSum / tt.steps, train_acc: tt.correct / tt.seen,
        test_loss: result ? result.loss : null, test_acc: result ? result.top1 : null, test_top5: result ? result.top5 : null,
        test_images: result ? result.n : null,
        ...(this.val ? {
          val_loss: valResult ? valResult.loss : null, val_acc: valResult ? valResult.top1 : null,
          val_top5: valResult ? valResult.top5 : null, val_images: valResult ? valResult.n : null,
        } : {}),
        weights, grad_norm: tt.gradNormSum / tt.steps, clipped: tt.clipped / tt.steps,
        images_per_s: tt.seen / tt.trainS, epoch_s: (performance.now() - epochStart) / 1000, elapsed_s: this.elapsed,
        time: new Date().toISOString(),
      };
      this.metrics.push(record);
      // best.safetensors: the best epoch on the validation images when there are any (so that
      // the test set chooses nothing), else on the test images.
      let improved: boolean;
      if (this.val) {
        const bestVal = this.best ? this.metrics.find((m) => m.epoch === this.best!.epoch)?.val_acc ?? null : null;
        improved = result !== null && valResult !== null && (typeof bestVal !== 'number' || valResult.top1 > bestVal);
      } else {
        improved = result !== null && (this.best === null || result.top1 > this.best.test_acc);
      }
      if (improved) this.best = { epoch, test_acc: result!.top1 };
      // The files: read back what the GPU holds, queue the writes and go on with the next epoch
      // while they are written. The previous epoch's writes have had this epoch to finish: wait
      // for any left (so that at most one epoch's files are queued) and stop if one failed.
      await this.writes.flush();
      const gpu = await this.readGpuState();
      const evaluated = gpu.ema ?? gpu.params;
      const meta = { recipe: r, metrics: record, best: this.best, weights, ...this.s.info };
      this.sampler.nextEpoch();
      this.totals = emptyTotals();
      this.queueLogs();
      const checkpoint = checkpointChunks(evaluated, meta);
      this.writes.write(runPath(this.s.dir, 'last'), checkpoint);
      if (improved) this.writes.write(runPath(this.s.dir, 'best'), checkpoint);
      this.queueState(gpu);
      // The plots render on the thread pool meanwhile; their writes wait for them in the queue.
      this.writes.write(runPath(this.s.dir, 'curves'), curvesPng(this.metrics, this.steps, spe, `${this.cfg.name}: ${this.s.dir}`));
      if (result) {
        this.writes.write(runPath(this.s.dir, 'confusion'), confusionPng(result.confusion, this.cfg.classNames,
          `test confusion, epoch ${epoch} (${(100 * result.top1).toFixed(2)}% of ${result.n.toLocaleString('en-US')})`));
      }
      events?.epochEnd?.(record, this.best);
      if (this.stopRequested && this.sampler.state.epoch < r.epochs) return 'stopped';
    }
    return 'done';
  }

  private outcome(status: TrainOutcome['status']): TrainOutcome {
    let val: TrainOutcome['val'] = null;
    if (this.val) {
      val = { last: null, best: null };
      for (const m of this.metrics) {
        if (typeof m.val_acc !== 'number') continue;
        val.last = { epoch: m.epoch, val_acc: m.val_acc };
        if (val.best === null || m.val_acc > val.best.val_acc) val.best = val.last;
      }
    }
    return {
      status, epochs: this.metrics.length, step: this.model.step, best: this.best, last: this.metrics[this.metrics.length - 1] ?? null, val,
    };
  }

  /** Free the GPU models and give the run folder back (see lockRunFolder). */
  destroy(): void {
    this.model.destroy();
    this.evalModel.destroy();
    this.unlock();
  }
}

/**
 * The error for a run whose state.safetensors cannot be loaded. A run continues only from its
 * state (the checkpoints lack the AdamW moments, the sampler and the RNG) and train-vim has no
 * option to start from a checkpoint, so what is left is a new run; the checkpoints still evaluate.
 */
function damagedState(dir: string, reason: string): VimError {
  const kept = (['last', 'best'] as const).filter((f) => existsSync(runPath(dir, f))).map((f) => RUN_FILES[f]);
  const still = kept.length > 0 ? ` (its ${kept.join(' and ')} ${kept.length > 1 ? 'are' : 'is'} kept and can still be evaluated with eval-vim)` : '';
  return new VimError(
    `the run's training state ${runPath(dir, 'state')} is damaged (${reason}), so the run cannot be resumed: ` +
    `start a new run with another --out${still}`,
  );
}

function readable(path: string): boolean {
  try {
    accessSync(path, constants.R_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * The drop-path factors (depth, B) of one step: block i's output for sample b is dropped (0) with
 * probability dropPathRates(depth, rate)[i], else kept and scaled by 1/(1 − p). They depend only on
 * the seed and the step, so a resumed run draws the same ones.
 */
export function dropPathFactors(depth: number, B: number, rate: number, seed: number, step: number): Float32Array {
  const rates = dropPathRates(depth, rate);
  const rng = new Rng((Math.imul(seed, 0x9e3779b1) ^ Math.imul(step, 0x85ebca77)) >>> 0); // seeded through splitmix32
  const out = new Float32Array(depth * B);
  for (let i = 0; i < depth; i++) {
    const p = rates[i];
    for (let b = 0; b < B; b++) out[i * B + b] = rng.uniform() < p ? 0 : 1 / (1 - p);
  }
  return out;
}
