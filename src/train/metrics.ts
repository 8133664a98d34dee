/**
 * Classification metrics from logits (B, C): the cross-entropy against the true labels, top-1 and
 * top-5 hits, and the confusion matrix (rows: true class, columns: predicted class).
 */

/** Running totals over any number of batches. */
export class ClassificationTally {
  readonly confusion: Uint32Array; // (C, C) row = true class, column = predicted class
  n = 0;
  top1 = 0;
  top5 = 0;
  lossSum = 0;

  constructor(readonly C: number) {
    this.confusion = new Uint32Array(C * C);
  }

  /** Add the first n rows of logits (≥ n, C) with their labels (n). */
  add(logits: ArrayLike<number>, labels: ArrayLike<number>, n: number): void {
    const C = this.C;
    const k = Math.min(5, C);
    for (let b = 0; b < n; b++) {
      const o = b * C;
      const label = labels[b];
      let max = -Infinity;
      let arg = 0;
      for (let c = 0; c < C; c++) {
        if (logits[o + c] > max) {
          max = logits[o + c];
          arg = c;
        }
      }
      let sum = 0;
      for (let c = 0; c < C; c++) sum += Math.exp(logits[o + c] - max);
      this.lossSum += max + Math.log(sum) - logits[o + label];
      // The true class is in the top k when fewer than k classes score above it (ties count for it).
      let above = 0;
      for (let c = 0; c < C; c++) if (logits[o + c] > logits[o + label]) above++;
      if (above < k) this.top5++;
      if (arg === label) this.top1++;
      this.confusion[label * C + arg]++;
      this.n++;
    }
  }

  result(): ClassificationResult {
    const C = this.C;
    const perClass: number[] = [];
    for (let c = 0; c < C; c++) {
      let row = 0;
      for (let p = 0; p < C; p++) row += this.confusion[c * C + p];
      perClass.push(row === 0 ? NaN : this.confusion[c * C + c] / row);
    }
    return {
      n: this.n,
      top1: this.n ? this.top1 / this.n : NaN,
      top5: this.n ? this.top5 / this.n : NaN,
      loss: this.n ? this.lossSum / this.n : NaN,
      perClass,
      confusion: Array.from({ length: C }, (_, r) => Array.from(this.confusion.subarray(r * C, (r + 1) * C))),
    };
  }
}

export interface ClassificationResult {
  /** Images evaluated. */
  n: number;
  /** Fraction whose top-scoring class is the true one. */
  top1: number;
  /** Fraction whose true class is among the five top-scoring ones. */
  top5: number;
  /** Mean cross-entropy against the true labels (no smoothing). */
  loss: number;
  /** (C) accuracy of each true class (NaN for a class with no image). */
  perClass: number[];
  /** (C, C) counts: row = true class, column = predicted class. */
  confusion: number[][];
}

/** Softmax of one row of logits. */
export function softmax(row: ArrayLike<number>): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < row.length; i++) max = Math.max(max, row[i]);
  const out = new Float64Array(row.length);
  let sum = 0;
  for (let i = 0; i < row.length; i++) sum += out[i] = Math.exp(row[i] - max);
  for (let i = 0; i < row.length; i++) out[i] /= sum;
  return out;
}

/** The k largest entries of a row as [index, value] pairs, largest first. */
export function topK(row: ArrayLike<number>, k: number): [number, number][] {
  return Array.from(row, (v, i): [number, number] => [i, v]).sort((a, b) => b[1] - a[1] || a[0] - b[0]).slice(0, k);
}

/** Argmax of row b of (B, C) values. */
export function argmaxRow(values: ArrayLike<number>, b: number, C: number): number {
  let best = 0;
  for (let c = 1; c < C; c++) if (values[b * C + c] > values[b * C + best]) best = c;
  return best;
}
