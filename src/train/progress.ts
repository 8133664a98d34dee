/**
 * What a person watching a training run sees, drawn from the trainer's events:
 *   - on a terminal: a cli-progress bar per epoch (steps, loss, accuracy, images/s, ETA) and one
 *     for each evaluation, on stderr;
 *   - otherwise (CI logs, a file): a plain line every `logEvery` seconds, nothing that redraws;
 *   - either way: one summary line per epoch on stdout (with --holdout, the validation figures
 *     after the test figures).
 */
import cliProgress from 'cli-progress';
import type { EpochRecord } from './run-dir.js';
import type { EvalSet, StepEvent, TrainEvents } from './trainer.js';

/** "1h02m", "3m05s", "12s" */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '?';
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  const h = Math.floor(s / 3600);
  return `${h}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

export function pct(x: number | null, digits = 2): string {
  return x === null || !Number.isFinite(x) ? '–' : `${(100 * x).toFixed(digits)}%`;
}

export interface ProgressOptions {
  /** Draw redrawing bars (a terminal) or print plain lines. */
  tty: boolean;
  /** Seconds between plain lines (0: every step). */
  logEvery: number;
  /** Where summary and plain lines go. */
  print: (line: string) => void;
  /** Where bars are drawn (default process.stderr). */
  stream?: NodeJS.WritableStream;
}

export class TrainProgress implements TrainEvents {
  private bar: cliProgress.SingleBar | null = null;
  private lastLine = -Infinity;
  private evalS = 0; // seconds the latest evaluation took (test and validation)
  private evalStarted = 0;
  private stepS = 0; // latest mean seconds per step
  private totalSteps = 0;
  private epochs = 0;
  private evalEvery = 1;

  constructor(private readonly o: ProgressOptions) {}

  /** Set what the ETA needs to know about the recipe. */
  plan(epochs: number, evalEvery: number): void {
    this.epochs = epochs;
    this.evalEvery = evalEvery;
  }

  start(e: { resumed: boolean; step: number; epoch: number; stepsPerEpoch: number; totalSteps: number }): void {
    this.totalSteps = e.totalSteps;
  }

  /** Seconds left in the run: the remaining steps at the current pace plus the evaluations still to come. */
  private eta(step: number, epoch: number): number {
    const evalsLeft = Array.from({ length: Math.max(0, this.epochs - epoch + 1) }, (_, i) => epoch + i)
      .filter((e) => e % this.evalEvery === 0 || e === this.epochs).length;
    return (this.totalSteps - step) * this.stepS + evalsLeft * this.evalS;
  }

  epochStart(e: { epoch: number; epochs: number; done: number; stepsPerEpoch: number }): void {
    if (!this.o.tty) return;
    this.bar = new cliProgress.SingleBar({
      format: `epoch ${e.epoch}/${e.epochs} |{bar}| {value}/{total} steps | loss {loss} | acc {acc} | {ips} img/s | ETA {eta_formatted}` +
        (e.epochs > 1 ? ' (run {run})' : ''),
      barCompleteChar: '█', barIncompleteChar: '░', hideCursor: true, clearOnComplete: true, stream: this.o.stream ?? process.stderr,
      etaBuffer: 50, fps: 5,
    });
    this.bar.start(e.stepsPerEpoch, e.done, { loss: '–', acc: '–', ips: '–', run: '–' });
  }

  step(e: StepEvent): void {
    this.stepS = e.stepS;
    if (this.bar) {
      this.bar.update(e.index, {
        loss: e.epochLoss.toFixed(4), acc: pct(e.epochAcc, 1), ips: e.imagesPerS.toFixed(e.imagesPerS < 100 ? 1 : 0),
        run: formatDuration(this.eta(e.step, e.epoch)),
      });
      if (e.index === e.stepsPerEpoch) {
        this.bar.stop();
        this.bar = null;
      }
      return;
    }
    const now = performance.now() / 1000;
    if (now - this.lastLine < this.o.logEvery && e.index !== e.stepsPerEpoch && e.index !== 1) return;
    this.lastLine = now;
    this.o.print(
      `epoch ${e.epoch}/${e.epochs} step ${e.index}/${e.stepsPerEpoch}  loss ${e.loss.toFixed(4)} (epoch mean ${e.epochLoss.toFixed(4)})  ` +
      `acc ${pct(e.epochAcc, 1)}  ${e.imagesPerS.toFixed(1)} img/s  lr ${e.lr.toExponential(2)}  ETA ${formatDuration(this.eta(e.step, e.epoch))}`,
    );
  }

  evalStart(e: { epoch: number; images: number; set?: EvalSet }): void {
    const set = e.set ?? 'test';
    if (set === 'test') this.evalStarted = performance.now(); // the validation set follows the test set
    this.stopBar();
    if (this.o.tty) {
      this.bar = new cliProgress.SingleBar({
        format: `epoch ${e.epoch} ${set} |{bar}| {value}/{total} images | ETA {eta_formatted}`,
        barCompleteChar: '█', barIncompleteChar: '░', hideCursor: true, clearOnComplete: true, stream: this.o.stream ?? process.stderr, fps: 5,
      });
      this.bar.start(e.images, 0);
    } else if (this.o.logEvery > 0) {
      this.o.print(`epoch ${e.epoch}: evaluating on ${e.images.toLocaleString('en-US')} ${set === 'test' ? 'test' : 'held-out validation'} images`);
    }
  }

  evalProgress(done: number, total: number): void {
    this.bar?.update(done);
    if (done >= total) this.stopBar();
  }

  epochEnd(r: EpochRecord, best: { epoch: number; test_acc: number } | null): void {
    this.stopBar();
    if (r.test_images !== null) this.evalS = (performance.now() - this.evalStarted) / 1000;
    const test = r.test_acc === null
      ? 'not evaluated'
      : `loss ${r.test_loss!.toFixed(4)} acc ${pct(r.test_acc)} top-5 ${pct(r.test_top5, 1)}${r.weights === 'ema' ? ' (EMA)' : ''}` +
        (best ? `, best ${pct(best.test_acc)} @${best.epoch}` : '');
    // The held-out validation figures (runs with --holdout), when the epoch was evaluated.
    const val = typeof r.val_acc === 'number'
      ? `  |  val loss ${r.val_loss!.toFixed(4)} acc ${pct(r.val_acc)} top-5 ${pct(r.val_top5 ?? null, 1)}`
      : '';
    const left = this.epochs > r.epoch ? `, ETA ${formatDuration(this.eta(r.step, r.epoch + 1))}` : '';
    this.o.print(
      `epoch ${r.epoch}/${this.epochs}  train loss ${r.train_loss.toFixed(4)} acc ${pct(r.train_acc)}  |  test ${test}${val}  |  ` +
      `lr ${r.lr.toExponential(2)}  |  ${formatDuration(r.epoch_s)} (${r.images_per_s.toFixed(r.images_per_s < 100 ? 1 : 0)} img/s${left})`,
    );
  }

  /** Stop any bar (before printing a message). */
  stopBar(): void {
    if (this.bar) {
      this.bar.stop();
      this.bar = null;
    }
  }
}
