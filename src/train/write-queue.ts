/**
 * The run folder's files written in the background: whole-file atomic writes
 * (writeFileAtomicAsync: a temporary file, fsync, rename) done one at a time, in the order they
 * were queued, while the caller goes on (the trainer starts the next epoch). The order matters:
 * the trainer queues the logs before the training state, so that what is on disk at any moment
 * is a state from which a run resumes, with logs that cover it, and a later write of a file
 * always lands after an earlier one.
 *
 * A write that fails is kept as the queue's error and the writes queued after it are dropped (the
 * files on disk stay as they were, consistent with one another); check() and flush() throw it.
 */
import { writeFileAtomicAsync } from '../io/safetensors.js';

/** A file's contents: bytes, pieces of bytes in order, or a promise of either (e.g. a PNG being rendered). */
export type FileData = Uint8Array | readonly Uint8Array[];

export class WriteQueue {
  private tail: Promise<void> = Promise.resolve();
  private failure: { error: unknown } | null = null;
  private queued = 0;

  /** Files queued and not yet written. */
  get pending(): number {
    return this.queued;
  }

  /** Queue a write of `data` to `path`. The data must not change until it is written. */
  write(path: string, data: FileData | Promise<FileData>): void {
    const ready = Promise.resolve(data);
    ready.catch(() => {}); // a rejection is reported in turn, below, not as an unhandled one
    this.queued++;
    this.tail = this.tail.then(async () => {
      try {
        if (this.failure === null) await writeFileAtomicAsync(path, await ready);
      } catch (e) {
        this.failure ??= { error: e };
      } finally {
        this.queued--;
      }
    });
  }

  /** Throw the error of a failed write, if one has failed. */
  check(): void {
    if (this.failure) throw this.failure.error;
  }

  /** Wait until every queued write is done; throw the error of one that failed. */
  async flush(): Promise<void> {
    await this.tail;
    this.check();
  }

  /** Wait until every queued write is done or dropped, never throwing (on the way out of an error). */
  async settle(): Promise<void> {
    await this.tail;
  }
}
