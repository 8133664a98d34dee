/**
 * Several onnxruntime sessions of one model, each in its own child process, that classify batches
 * at the same time: eval-vim's way to use a CPU's cores.
 *
 * One session with two threads splits every operation over both: the Scan bodies' many small
 * elementwise operations then wait on each other's threads thousands of times a batch. Two
 * sessions of one thread each run two batches side by side with no such waits: on a 2-core VM,
 * 10–13% more images/s (docs/performance.md, "ONNX on a CPU"). Each process loads onnxruntime-node
 * and the model bytes; batches go to whichever session is free. Processes, not worker threads:
 * onnxruntime-node keeps process-wide state, and with sessions in two worker threads of one process
 * it aborted the whole process now and then ("terminate called after throwing an instance of
 * 'Napi::Error'").
 *
 * Shape letters: B batch, C classes, H = W image side. Images are (B, 3, H, W) u8 CHW planes.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { VimError } from '../errors.js';
import { INPUT_NAME, OUTPUT_NAME } from './export.js';
import { sessionOptions, u8BatchPixels } from './runtime.js';

/**
 * The child: its first message is the session's settings and the model's bytes; then each message
 * a batch of float32 pixels, each answer its logits (or an error); { close } releases the session
 * and ends the process, as does the parent's end (its channel closes).
 */
const CHILD_SOURCE = `
let session, ort, start;
process.on('disconnect', () => process.exit(0)); // the parent is gone: nothing more will come
process.on('message', (m) => {
  if (m.setup) {
    start = m.setup;
    ort = require(start.ortPath);
    ort.InferenceSession.create(start.bytes, start.options).then((s) => {
      session = s;
      process.send({ ready: true });
    }, (e) => process.send({ failed: String(e && e.message || e) }));
    return;
  }
  if (m.close) {
    Promise.resolve(session && session.release()).catch(() => {}).then(() => process.disconnect());
    return;
  }
  session.run({ [start.input]: new ort.Tensor('float32', m.pixels, [m.n, 3, start.side, start.side]) }).then((out) => {
    process.send({ id: m.id, logits: Float32Array.from(out[start.output].data) });
  }, (e) => process.send({ id: m.id, error: String(e && e.message || e) }));
});
`;

interface Job {
  id: number;
  resolve: (logits: Float32Array) => void;
  reject: (e: Error) => void;
}

interface Slot {
  child: ChildProcess;
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
      slot.child.on('message', (m: { id: number; logits?: Float32Array; error?: string }) => this.answer(slot, m));
      slot.child.on('error', (e) => this.fail(new VimError(`${label}: an onnxruntime process failed: ${e.message}`)));
      slot.child.on('exit', (code, signal) => {
        if (!this.closing) this.fail(new VimError(`${label}: an onnxruntime process stopped (${signal ?? `exit code ${code}`})`));
      });
    }
  }

  private closing = false;

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
    const setup = { ortPath, bytes, options, input: INPUT_NAME, output: OUTPUT_NAME, side };
    const started = Array.from({ length: workers }, () =>
      spawn(process.execPath, ['-e', CHILD_SOURCE], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], serialization: 'advanced' }));
    try {
      await Promise.all(started.map((c) => new Promise<void>((resolve, reject) => {
        c.once('message', (m: { ready?: boolean; failed?: string }) => {
          if (m.ready) resolve();
          else reject(new VimError(`${label} could not be loaded by onnxruntime in a child process: ${m.failed}; export it again with export-vim`));
        });
        c.once('error', (e) => reject(new VimError(`${label}: an onnxruntime process could not start: ${e.message}`)));
        c.once('exit', (code, signal) => reject(new VimError(`${label}: an onnxruntime process ended while loading the model (${signal ?? `exit code ${code}`})`)));
        c.send({ setup });
      })));
    } catch (e) {
      for (const c of started) c.kill();
      throw e;
    }
    for (const c of started) for (const ev of ['message', 'error', 'exit']) c.removeAllListeners(ev);
    return new OnnxWorkerPool(label, started.map((child) => ({ child })), side);
  }

  /** Logits (n, C) of n u8 images (n, 3, H, W), from the first session free. */
  async run(images: Uint8Array, n: number): Promise<Float32Array> {
    if (this.failure) throw this.failure;
    const pixels = u8BatchPixels(images, n, this.side); // a new array, copied to the child
    return new Promise((resolve, reject) => {
      this.waiting.push({ pixels, n, job: { id: this.nextId++, resolve, reject } });
      this.dispatch();
    });
  }

  /**
   * Stop every session's process; jobs still waiting fail. Each releases its session and ends by
   * itself; one that has not ended after 10 s is killed. Resolves to how many had to be.
   */
  async release(): Promise<number> {
    this.closing = true;
    this.fail(new VimError(`${this.label}: the onnxruntime workers were released`));
    const late = await Promise.all(this.slots.map(async ({ child }) => {
      if (child.exitCode !== null || child.signalCode !== null) return 0;
      const ended = new Promise<'ended'>((resolve) => child.once('exit', () => resolve('ended')));
      let timer: NodeJS.Timeout | undefined;
      const wait = new Promise<'late'>((resolve) => { timer = setTimeout(() => resolve('late'), 10_000); });
      if (child.connected) child.send({ close: true });
      const how = await Promise.race([ended, wait]);
      clearTimeout(timer);
      if (how === 'late') child.kill();
      return how === 'late' ? 1 : 0;
    }));
    return late.reduce((a: number, b: number) => a + b, 0);
  }

  private dispatch(): void {
    for (const slot of this.slots) {
      if (slot.job || this.waiting.length === 0) continue;
      const { pixels, n, job } = this.waiting.shift()!;
      slot.job = job;
      slot.child.send({ id: job.id, pixels, n });
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
