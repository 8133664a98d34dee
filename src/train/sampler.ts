/**
 * The order training images are seen in: a fresh seeded shuffle each epoch, taken in batches of
 * B; the last partial batch of an epoch is dropped (every step then averages the loss over a full
 * batch). The whole state is (epoch, cursor): the shuffle of an epoch is a function of the seed
 * and the epoch number alone, so a resumed run recomputes it instead of storing it.
 */
import { VimError } from '../errors.js';
import { Rng } from '../rng.js';

export interface SamplerState {
  /** 0-based epoch of the next batch. */
  epoch: number;
  /** Batches already taken in that epoch. */
  cursor: number;
}

export interface SampledBatch {
  epoch: number;
  /** 0-based batch number within the epoch. */
  index: number;
  /** (B) image indices into the training set. */
  indices: Uint32Array;
}

export class EpochSampler {
  private epoch = 0;
  private cursor = 0;
  private cached: { epoch: number; order: Uint32Array } | null = null;

  constructor(readonly n: number, readonly batch: number, readonly seed: number) {
    if (!Number.isInteger(n) || n < 1) throw new VimError(`the training set must hold at least one image; it holds ${n}`);
    if (!Number.isInteger(batch) || batch < 1) throw new VimError(`batch size must be a positive integer; received ${batch}`);
    if (batch > n) {
      throw new VimError(`--batch-size ${batch} is larger than the ${n} training images: use a smaller --batch-size or a larger --subset`);
    }
  }

  /** Full batches per epoch. */
  get stepsPerEpoch(): number {
    return Math.floor(this.n / this.batch);
  }

  get state(): SamplerState {
    return { epoch: this.epoch, cursor: this.cursor };
  }

  set state(s: SamplerState) {
    if (!Number.isInteger(s.epoch) || s.epoch < 0 || !Number.isInteger(s.cursor) || s.cursor < 0 || s.cursor > this.stepsPerEpoch) {
      throw new VimError(`invalid sampler state ${JSON.stringify(s)} for ${this.stepsPerEpoch} batches per epoch`);
    }
    this.epoch = s.epoch;
    this.cursor = s.cursor;
  }

  /** The permutation of 0…n−1 for an epoch (seeded by seed and epoch). */
  order(epoch: number): Uint32Array {
    if (this.cached?.epoch === epoch) return this.cached.order;
    const order = new Uint32Array(this.n);
    for (let i = 0; i < this.n; i++) order[i] = i;
    new Rng((Math.imul(this.seed ^ 0x5bd1e995, 0x9e3779b1) + Math.imul(epoch + 1, 0x85ebca6b)) >>> 0).shuffle(order);
    this.cached = { epoch, order };
    return order;
  }

  /** True when the current epoch has no batch left. */
  get epochDone(): boolean {
    return this.cursor >= this.stepsPerEpoch;
  }

  /** Move to the start of the next epoch. */
  nextEpoch(): void {
    this.epoch += 1;
    this.cursor = 0;
  }

  /** The next batch of the current epoch (call nextEpoch when epochDone). */
  next(): SampledBatch {
    if (this.epochDone) throw new Error(`sampler: epoch ${this.epoch} has no batch left`);
    const order = this.order(this.epoch);
    const index = this.cursor++;
    return { epoch: this.epoch, index, indices: order.slice(index * this.batch, (index + 1) * this.batch) };
  }
}
