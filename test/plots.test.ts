/**
 * The SVG plots: nice ticks, and curves.png / confusion.png that decode as PNG of a sensible size
 * and are not blank (their pixels vary).
 */
import { describe, expect, it } from 'vitest';
import { confusionPng, confusionSvg, curvesPng, curvesSvg, escapeXml, niceAxis, tickLabel } from '../src/io/plots.js';
import type { EpochRecord, StepRecord } from '../src/train/run-dir.js';
import { CIFAR10_CLASSES } from '../src/model/config.js';
import { pngStats } from './helpers/png.js';

function record(epoch: number, testEvery = 1): EpochRecord {
  const evaluated = epoch % testEvery === 0;
  return {
    epoch, step: epoch * 10, lr: 1e-3, train_loss: 2.3 / epoch, train_acc: 0.1 * epoch,
    test_loss: evaluated ? 2.4 / epoch : null, test_acc: evaluated ? 0.09 * epoch : null, test_top5: evaluated ? 0.5 : null,
    test_images: evaluated ? 100 : null, weights: 'raw', grad_norm: 1, clipped: 0, images_per_s: 10, epoch_s: 1, elapsed_s: epoch,
    time: new Date(0).toISOString(),
  };
}

describe('plots', () => {
  it('picks round ticks that cover the data', () => {
    const a = niceAxis(0.13, 2.71, 5);
    expect(a.lo).toBeLessThanOrEqual(0.13);
    expect(a.hi).toBeGreaterThanOrEqual(2.71);
    expect(a.step).toBe(0.5);
    expect(a.ticks).toEqual([0, 0.5, 1, 1.5, 2, 2.5, 3]);
    expect(niceAxis(5, 5).ticks.length).toBeGreaterThan(1); // one value still gets an axis
    expect(tickLabel(0.25, 0.25)).toBe('0.25');
    expect(tickLabel(3, 1)).toBe('3');
    expect(tickLabel(0.30000000000000004, 0.1)).toBe('0.3');
    expect(escapeXml('a<b & "c"')).toBe('a&lt;b &amp; &quot;c&quot;');
  });

  it('draws loss and accuracy curves that decode as a non-blank PNG', async () => {
    const metrics = Array.from({ length: 6 }, (_, i) => record(i + 1, 2));
    const steps: StepRecord[] = Array.from({ length: 60 }, (_, i) => ({ step: i + 1, epoch: Math.floor(i / 10) + 1, lr: 1e-3, loss: 2.3 - i / 40 + 0.1 * Math.sin(i), grad_norm: 1 }));
    const svg = curvesSvg(metrics, steps, 10, 'vim-test: runs/x & <y>');
    expect(svg).toContain('accuracy');
    expect(svg).toContain('&amp; &lt;y&gt;');
    const s = await pngStats(await curvesPng(metrics, steps, 10, 'title'));
    expect(s.format).toBe('png');
    expect(s.width).toBeGreaterThanOrEqual(800);
    expect(s.height).toBeGreaterThanOrEqual(300);
    expect(s.stdev).toBeGreaterThan(15);
    // A single epoch still gives a drawing (markers, not an empty frame).
    const one = await pngStats(await curvesPng([record(1)], steps.slice(0, 10), 10, 'one epoch'));
    expect(one.stdev).toBeGreaterThan(15);
  });

  it('draws the held-out validation curves only for runs that have them', async () => {
    const steps: StepRecord[] = Array.from({ length: 30 }, (_, i) => ({ step: i + 1, epoch: Math.floor(i / 10) + 1, lr: 1e-3, loss: 2.3 - i / 40, grad_norm: 1 }));
    const plain = Array.from({ length: 3 }, (_, i) => record(i + 1));
    expect(curvesSvg(plain, steps, 10, 'no holdout')).not.toContain('validation');
    const withVal = plain.map((m): EpochRecord => ({
      ...m, val_loss: m.test_loss === null ? null : m.test_loss + 0.05, val_acc: m.test_acc === null ? null : m.test_acc - 0.02,
      val_top5: m.test_top5, val_images: m.test_images,
    }));
    withVal[1] = { ...withVal[1], val_loss: null, val_acc: null, val_top5: null, val_images: null }; // an epoch not evaluated
    const svg = curvesSvg(withVal, steps, 10, 'holdout');
    expect(svg).toContain('>validation (held out)</text>');
    expect(svg).toContain('>validation loss (held out)</text>');
    expect(svg).not.toContain('NaN');
    const s = await pngStats(await curvesPng(withVal, steps, 10, 'holdout'));
    expect(s.stdev).toBeGreaterThan(15);
  });

  it('draws the confusion matrix with class names and counts', async () => {
    const C = 10;
    const conf = Array.from({ length: C }, (_, r) => Array.from({ length: C }, (_, c) => (r === c ? 80 + r : (r * 7 + c * 3) % 9)));
    const svg = confusionSvg(conf, [...CIFAR10_CLASSES], 'test confusion');
    for (const name of CIFAR10_CLASSES) expect(svg).toContain(`>${name}</text>`);
    expect(svg).toContain('>89</text>');
    const s = await pngStats(await confusionPng(conf, [...CIFAR10_CLASSES], 'test confusion'));
    expect(s.format).toBe('png');
    expect(s.width).toBeGreaterThanOrEqual(400);
    expect(s.height).toBeGreaterThanOrEqual(400);
    expect(s.stdev).toBeGreaterThan(15);
  });
});
