/**
 * Several onnxruntime sessions of one model, each in its own worker thread, that classify batches
 * at the same time: eval-vim's way to use a CPU's cores.
 *
 * One session with two threads splits every operation over both: the Scan bodies' many small
 * elementwise operations then wait on each other's threads thousands of times a batch. Two
 * sessions of one thread each run two batches side by side with no such waits: on a 2-core VM,
 * 10–13% more images/s (docs/performance.md, "ONNX on a CPU"). Each worker loads onnxruntime-node
 * and the model bytes; batches go to whichever session is free.
 *
 * Shape letters: B batch, C classes, H = W image side. Images are (B, 3, H, W) u8 CHW planes.
 */
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { VimError } from '../errors.js';
import { INPUT_NAME, OUTPUT_NAME } from './export.js';
import { sessionOptions, u8BatchPixels } from './runtime.js';

/** The worker: one session; each message a batch of float32 pixels, each answer its logits (or an error). */
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const ort = require(workerData.ortPath);
const { input, output, side } = workerData;
ort.InferenceSession.create(workerData.bytes, workerData.options).then((session) => {
  parentPort.on('message', (job) => {
    if (job.close) { // release the session here, then let the thread end by itself
      session.release().catch(() => {}).then(() => parentPort.close());
      return;
    }
    session.run({ [input]: new ort.Tensor('float32', job.pixels, [job.n, 3, side, side]) }).then((out) => {
      const logits = Float32Array.from(out[output].data);
      parentPort.postMessage({ id: job.id, logits }, [logits.buffer]);
    }, (e) => parentPort.postMessage({ id: job.id, error: String(e && e.message || e) }));
  });
  parentPort.postMessage({ ready: true });
}, (e) => parentPort.postMessage({ failed: String(e && e.message || e) }));
`;

interface Job {
  id: number;
  resolve: (logits: Float32Array) => void;
  reject: (e: Error) => void;
}

interface Slot {
  worker: Worker;
  job?: Job;
}

/** The sessions eval-vim runs at once where none is asked for: 2 on 2 cores or more, else 1. */
export function defaultOnnxWorkers(): number {
  return availableParallelism() >= 2 ? 2 : 1;
}

/** Threads a session of `workers` gets: the cores shared out, at least 1. */
export function threadsPerWorker(workers: number): number {
  return Math.max(1, Math.floor(availableParallelism() / workers));
}

export class OnnxWorkerPool {
  private readonly waiting: { pixels: Float32Array; n: number; job: Job }[] = [];
  private nextId = 0;
  private failure: Error | undefined;

  private constructor(
    private readonly label: string,
    private readonly slots: Slot[],
    private readonly side: number,
  ) {
    for (const slot of slots) {
      slot.worker.on('message', (m: { id: number; logits?: Float32Array; error?: string }) => this.answer(slot, m));
      slot.worker.on('error', (e) => this.fail(new VimError(`${label}: an onnxruntime worker stopped: ${e.message}`)));
    }
  }

  /**
   * `workers` sessions of the model in `bytes` (an export-vim file, already checked by OnnxVim),
   * each with `threads` intra-op threads, for images of side `side`.
   */
  static async open(bytes: Uint8Array, label: string, side: number, workers: number, threads = threadsPerWorker(workers)): Promise<OnnxWorkerPool> {
    if (!Number.isInteger(workers) || workers < 1) throw new VimError(`expected a positive integer number of workers but received ${workers}`);
    let ortPath: string;
    try {
      ortPath = createRequire(import.meta.url).resolve('onnxruntime-node');
    } catch (e) {
      throw new VimError(`onnxruntime-node could not be found (${(e as Error).message.split('\n')[0]}); install the project's packages with npm ci`);
    }
    const options = { ...sessionOptions({ threads }), interOpNumThreads: 1 };
    const workerData = { ortPath, bytes, options, input: INPUT_NAME, output: OUTPUT_NAME, side };
    const started = Array.from({ length: workers }, () => new Worker(WORKER_SOURCE, { eval: true, workerData }));
    try {
      await Promise.all(started.map((w) => new Promise<void>((resolve, reject) => {
        w.once('message', (m: { ready?: boolean; failed?: string }) => {
          if (m.ready) resolve();
          else reject(new VimError(`${label} could not be loaded by onnxruntime in a worker: ${m.failed}; export it again with export-vim`));
        });
        w.once('error', (e) => reject(new VimError(`${label}: an onnxruntime worker could not start: ${e.message}`)));
      })));
    } catch (e) {
      await Promise.all(started.map((w) => w.terminate()));
      throw e;
    }
    return new OnnxWorkerPool(label, started.map((worker) => ({ worker })), side);
  }

  /** Logits (n, C) of n u8 images (n, 3, H, W), from the first session free. */
  async run(images: Uint8Array, n: number): Promise<Float32Array> {
    if (this.failure) throw this.failure;
    const pixels = u8BatchPixels(images, n, this.side); // a new array, moved to the worker
    return new Promise((resolve, reject) => {
      this.waiting.push({ pixels, n, job: { id: this.nextId++, resolve, reject } });
      this.dispatch();
    });
  }

  /**
   * Stop every worker; jobs still waiting fail. Each worker releases its session and ends by
   * itself (terminating a thread that still holds a session can abort the whole process when
   * onnxruntime's finalizers run in a torn-down thread); one that has not ended after 10 s is
   * terminated. Resolves to how many had to be.
   */
  async release(): Promise<number> {
    this.fail(new VimError(`${this.label}: the onnxruntime workers were released`));
    const late = await Promise.all(this.slots.map(async ({ worker }) => {
      const ended = new Promise<'ended'>((resolve) => worker.once('exit', () => resolve('ended')));
      let timer: NodeJS.Timeout | undefined;
      const wait = new Promise<'late'>((resolve) => { timer = setTimeout(() => resolve('late'), 10_000); });
      worker.postMessage({ close: true });
      const how = await Promise.race([ended, wait]);
      clearTimeout(timer);
      if (how === 'late') await worker.terminate();
      return how === 'late' ? 1 : 0;
    }));
    return late.reduce((a: number, b: number) => a + b, 0);
  }

  private dispatch(): void {
    for (const slot of this.slots) {
      if (slot.job || this.waiting.length === 0) continue;
      const { pixels, n, job } = this.waiting.shift()!;
      slot.job = job;
      slot.worker.postMessage({ id: job.id, pixels, n }, [pixels.buffer as ArrayBuffer]);
    }
  }

  private answer(slot: Slot, m: { id: number; logits?: Float32Array; error?: string }): void {
    const job = slot.job;
    if (!job || job.id !== m.id) return;
    slot.job = undefined;
    if (m.logits) job.resolve(m.logits);
    else job.reject(new VimError(`${this.label}: onnxruntime failed on a batch: ${m.error}`));
    this.dispatch();
  }

  private fail(e: Error): void {
    this.failure ??= e;
    for (const slot of this.slots) {
      slot.job?.reject(e);
      slot.job = undefined;
    }
    for (const w of this.waiting.splice(0)) w.job.reject(e);
  }
}
