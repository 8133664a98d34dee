/**
 * Small SVG plots, rendered to PNG with sharp (librsvg): line charts with axes, "nice" ticks,
 * axis labels and a legend, and a confusion-matrix heat map with class names and counts. Enough
 * for a training run's curves.png and confusion.png, with no plotting dependency.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import sharp from 'sharp';
import type { EpochRecord, StepRecord } from '../train/run-dir.js';

const FONT = 'DejaVu Sans, Helvetica, Arial, sans-serif';

/** One line of a chart. */
export interface Series {
  name: string;
  /** [x, y] points; non-finite y values break the line. */
  points: [number, number][];
  color: string;
  width?: number;
  opacity?: number;
  dashed?: boolean;
  /** Draw a dot at every point (the default for series of up to 60 points). */
  markers?: boolean;
}

export interface ChartSpec {
  title: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
  /** Clamp the y axis to this range (the data decides within it). */
  yClamp?: [number, number];
  /** Tick labels of the y axis (default: the number with the tick step's decimals). */
  yUnit?: string;
  /** Start the x axis at 0 whatever the data. */
  xFromZero?: boolean;
  /** Where the legend goes (default top right). */
  legend?: 'top-right' | 'bottom-right';
}

export interface Box {
  x: number;
  y: number;
  w: number;
  h: number;
}

/** XML-escape text for an SVG text node or attribute. */
export function escapeXml(s: string): string {
  return s.replace(/[<>&"']/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;', "'": '&apos;' })[c]!);
}

/**
 * A round tick step giving about `count` intervals over `span`: 1, 2 or 5 times a power of ten,
 * whichever is nearest to span / count on a log scale (cut-offs at √2, √10 and √50).
 */
export function niceStep(span: number, count: number): number {
  const raw = span / Math.max(1, count);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const f = raw / mag;
  return (f >= Math.sqrt(50) ? 10 : f >= Math.sqrt(10) ? 5 : f >= Math.SQRT2 ? 2 : 1) * mag;
}

/** An axis over [lo, hi] widened to whole steps, with its ticks. */
export function niceAxis(lo: number, hi: number, count = 5): { lo: number; hi: number; step: number; ticks: number[] } {
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) {
    lo = 0;
    hi = 1;
  }
  if (hi - lo < 1e-12 * Math.max(1, Math.abs(hi))) {
    const pad = Math.abs(hi) > 0 ? Math.abs(hi) * 0.1 : 1;
    lo -= pad;
    hi += pad;
  }
  const step = niceStep(hi - lo, count);
  const a = Math.floor(lo / step + 1e-9) * step;
  const b = Math.ceil(hi / step - 1e-9) * step;
  const ticks: number[] = [];
  for (let i = 0; a + i * step <= b + step * 1e-6; i++) ticks.push(a + i * step);
  return { lo: a, hi: b, step, ticks };
}

/** A tick label with as many decimals as the step needs. */
export function tickLabel(v: number, step: number): string {
  const decimals = Math.max(0, Math.ceil(-Math.log10(step) - 1e-9) + (Math.abs(step / 10 ** Math.floor(Math.log10(step)) - 2.5) < 1e-9 ? 1 : 0));
  const s = v.toFixed(Math.min(decimals, 10));
  return s === '-0' || /^-0\.0*$/.test(s) ? s.slice(1) : s;
}

/** A line chart inside `box` (an SVG fragment): frame, grid, ticks, labels, lines, legend. */
export function lineChartSvg(spec: ChartSpec, box: Box): string {
  const m = { left: 62, right: 14, top: 30, bottom: 46 };
  const px = box.x + m.left;
  const py = box.y + m.top;
  const pw = box.w - m.left - m.right;
  const ph = box.h - m.top - m.bottom;
  const xs: number[] = [];
  const ys: number[] = [];
  for (const s of spec.series) {
    for (const [x, y] of s.points) {
      if (Number.isFinite(x)) xs.push(x);
      if (Number.isFinite(y)) ys.push(y);
    }
  }
  let xlo = xs.length ? Math.min(...xs) : 0;
  const xhi = xs.length ? Math.max(...xs) : 1;
  if (spec.xFromZero) xlo = Math.min(0, xlo);
  let ylo = ys.length ? Math.min(...ys) : 0;
  let yhi = ys.length ? Math.max(...ys) : 1;
  if (spec.yClamp) {
    ylo = Math.max(spec.yClamp[0], ylo);
    yhi = Math.min(spec.yClamp[1], yhi);
  }
  const xa = niceAxis(xlo, xhi, 6);
  const ya = niceAxis(ylo, yhi, 5);
  const X = (x: number) => px + ((x - xa.lo) / (xa.hi - xa.lo)) * pw;
  const Y = (y: number) => py + ph - ((y - ya.lo) / (ya.hi - ya.lo)) * ph;
  const out: string[] = [];
  out.push(`<text x="${px + pw / 2}" y="${box.y + 19}" font-size="15" font-weight="bold" text-anchor="middle">${escapeXml(spec.title)}</text>`);
  out.push(`<rect x="${px}" y="${py}" width="${pw}" height="${ph}" fill="#ffffff" stroke="#333333" stroke-width="1"/>`);
  for (const t of ya.ticks) {
    const y = Y(t).toFixed(1);
    out.push(`<line x1="${px}" x2="${px + pw}" y1="${y}" y2="${y}" stroke="#e3e3e3" stroke-width="1"/>`);
    out.push(`<line x1="${px - 5}" x2="${px}" y1="${y}" y2="${y}" stroke="#333333"/>`);
    out.push(`<text x="${px - 8}" y="${y}" font-size="12" text-anchor="end" dominant-baseline="middle">${tickLabel(t, ya.step)}${spec.yUnit ?? ''}</text>`);
  }
  for (const t of xa.ticks) {
    const x = X(t).toFixed(1);
    out.push(`<line x1="${x}" x2="${x}" y1="${py}" y2="${py + ph}" stroke="#efefef" stroke-width="1"/>`);
    out.push(`<line x1="${x}" x2="${x}" y1="${py + ph}" y2="${py + ph + 5}" stroke="#333333"/>`);
    out.push(`<text x="${x}" y="${py + ph + 18}" font-size="12" text-anchor="middle">${tickLabel(t, xa.step)}</text>`);
  }
  out.push(`<text x="${px + pw / 2}" y="${py + ph + 38}" font-size="13" text-anchor="middle">${escapeXml(spec.xLabel)}</text>`);
  const ly = py + ph / 2;
  out.push(`<text x="${box.x + 16}" y="${ly}" font-size="13" text-anchor="middle" transform="rotate(-90 ${box.x + 16} ${ly})">${escapeXml(spec.yLabel)}</text>`);
  // Lines, clipped to the plot area.
  const clip = `clip${Math.round(box.x)}x${Math.round(box.y)}`;
  out.push(`<clipPath id="${clip}"><rect x="${px}" y="${py}" width="${pw}" height="${ph}"/></clipPath>`);
  out.push(`<g clip-path="url(#${clip})">`);
  for (const s of spec.series) {
    const segs: string[] = [];
    let cur: string[] = [];
    for (const [x, y] of s.points) {
      if (!Number.isFinite(x) || !Number.isFinite(y)) {
        if (cur.length) segs.push(cur.join(' '));
        cur = [];
        continue;
      }
      cur.push(`${cur.length ? 'L' : 'M'}${X(x).toFixed(2)},${Y(y).toFixed(2)}`);
    }
    if (cur.length) segs.push(cur.join(' '));
    const dash = s.dashed ? ' stroke-dasharray="6,4"' : '';
    for (const d of segs) {
      out.push(`<path d="${d}" fill="none" stroke="${s.color}" stroke-width="${s.width ?? 2}" stroke-opacity="${s.opacity ?? 1}" stroke-linejoin="round"${dash}/>`);
    }
    if (s.markers ?? s.points.length <= 60) {
      for (const [x, y] of s.points) {
        if (Number.isFinite(x) && Number.isFinite(y)) {
          out.push(`<circle cx="${X(x).toFixed(2)}" cy="${Y(y).toFixed(2)}" r="3.5" fill="${s.color}" fill-opacity="${s.opacity ?? 1}"/>`);
        }
      }
    }
  }
  out.push('</g>');
  // Legend, top right inside the plot.
  const named = spec.series.filter((s) => s.name);
  if (named.length) {
    const lw = Math.max(...named.map((s) => s.name.length)) * 7 + 44;
    const lh = named.length * 18 + 8;
    const lx = px + pw - lw - 8;
    const lyy = spec.legend === 'bottom-right' ? py + ph - lh - 8 : py + 8;
    out.push(`<rect x="${lx}" y="${lyy}" width="${lw}" height="${lh}" fill="#ffffff" fill-opacity="0.9" stroke="#bbbbbb"/>`);
    named.forEach((s, i) => {
      const yy = lyy + 13 + i * 18;
      const dash = s.dashed ? ' stroke-dasharray="6,4"' : '';
      out.push(`<line x1="${lx + 8}" x2="${lx + 30}" y1="${yy}" y2="${yy}" stroke="${s.color}" stroke-width="${Math.max(2, s.width ?? 2)}" stroke-opacity="${s.opacity ?? 1}"${dash}/>`);
      out.push(`<text x="${lx + 36}" y="${yy}" font-size="12" dominant-baseline="middle">${escapeXml(s.name)}</text>`);
    });
  }
  return out.join('\n');
}

function svgDocument(width: number, height: number, body: string): string {
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="${FONT}">\n` +
    `<rect x="0" y="0" width="${width}" height="${height}" fill="#ffffff"/>\n${body}\n</svg>\n`;
}

let fontsReady = false;

/**
 * Text in the SVG is drawn by librsvg through fontconfig, which finds nothing on a minimal server
 * (every glyph then renders as a box). Point fontconfig at the DejaVu fonts this package depends
 * on, next to the system's own, once per process and before the first render. A FONTCONFIG_FILE
 * the user set is left alone.
 */
function ensureFonts(): void {
  if (fontsReady || process.env.FONTCONFIG_FILE) return;
  fontsReady = true;
  try {
    const ttf = join(dirname(createRequire(import.meta.url).resolve('dejavu-fonts-ttf/package.json')), 'ttf');
    const dir = mkdtempSync(join(tmpdir(), 'vim-fonts-'));
    const conf = join(dir, 'fonts.conf');
    writeFileSync(conf, `<?xml version="1.0"?>\n<!DOCTYPE fontconfig SYSTEM "fonts.dtd">\n<fontconfig>\n` +
      `  <dir>/usr/share/fonts</dir>\n  <dir>/usr/local/share/fonts</dir>\n  <dir>${escapeXml(ttf)}</dir>\n` +
      `  <cachedir>${escapeXml(join(dir, 'cache'))}</cachedir>\n</fontconfig>\n`);
    process.env.FONTCONFIG_FILE = conf;
  } catch {
    // Without the bundled fonts the system's are used, as before.
  }
}

/** Render an SVG document to PNG bytes. */
export async function svgToPng(svg: string): Promise<Uint8Array> {
  ensureFonts();
  const buf = await sharp(Buffer.from(svg)).png({ compressionLevel: 9 }).toBuffer();
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
}

/** Mean of each run of `every` consecutive values (to draw thousands of steps as a readable line). */
function binned(points: [number, number][], maxPoints: number): [number, number][] {
  if (points.length <= maxPoints) return points;
  const every = Math.ceil(points.length / maxPoints);
  const out: [number, number][] = [];
  for (let i = 0; i < points.length; i += every) {
    const chunk = points.slice(i, i + every).filter((p) => Number.isFinite(p[1]));
    if (!chunk.length) continue;
    out.push([chunk.reduce((a, p) => a + p[0], 0) / chunk.length, chunk.reduce((a, p) => a + p[1], 0) / chunk.length]);
  }
  return out;
}

const TRAIN = '#1f77b4';
const TEST = '#d62728';
const VAL = '#2ca02c';

/**
 * Loss and accuracy over epochs, side by side; the per-step training loss as a faint line; with a
 * held-out validation set (runs with --holdout: metrics with val_* fields), its curves too.
 */
export function curvesSvg(metrics: readonly EpochRecord[], steps: readonly StepRecord[], stepsPerEpoch: number, title: string): string {
  const W = 1100;
  const H = 460;
  const num = (v: number | null): number => (v === null ? NaN : v);
  const stepPts = binned(steps.map((s): [number, number] => [s.step / stepsPerEpoch, s.loss]), 600);
  const lossPanel: ChartSpec = {
    title: 'loss', xLabel: 'epoch', yLabel: 'cross-entropy', xFromZero: true,
    series: [
      { name: 'train loss per step', points: stepPts, color: '#9ecae1', width: 1.2, markers: false },
      { name: 'train loss (epoch mean)', points: metrics.map((m) => [m.epoch, m.train_loss]), color: TRAIN },
      { name: 'test loss', points: metrics.map((m) => [m.epoch, num(m.test_loss)]), color: TEST },
    ],
  };
  const hasVal = metrics.some((m) => m.val_images !== undefined);
  const accPanel: ChartSpec = {
    title: 'accuracy', xLabel: 'epoch', yLabel: 'top-1 accuracy (%)', xFromZero: true, yClamp: [0, 100], legend: 'bottom-right',
    series: [
      { name: 'train', points: metrics.map((m) => [m.epoch, 100 * m.train_acc]), color: TRAIN },
      { name: 'test', points: metrics.map((m) => [m.epoch, 100 * num(m.test_acc)]), color: TEST },
    ],
  };
  if (hasVal) {
    lossPanel.series.push({ name: 'validation loss (held out)', points: metrics.map((m) => [m.epoch, num(m.val_loss ?? null)]), color: VAL, dashed: true });
    accPanel.series.push({ name: 'validation (held out)', points: metrics.map((m) => [m.epoch, 100 * num(m.val_acc ?? null)]), color: VAL, dashed: true });
  }
  // Test and validation points of epochs without evaluation are NaN: draw their lines through the evaluated ones.
  for (const p of [lossPanel, accPanel]) {
    for (const s of p.series) if (s.color === TEST || s.color === VAL) s.points = s.points.filter((q) => Number.isFinite(q[1]));
  }
  const body = [
    `<text x="${W / 2}" y="24" font-size="16" text-anchor="middle">${escapeXml(title)}</text>`,
    lineChartSvg(lossPanel, { x: 10, y: 34, w: W / 2 - 15, h: H - 40 }),
    lineChartSvg(accPanel, { x: W / 2 + 5, y: 34, w: W / 2 - 15, h: H - 40 }),
  ].join('\n');
  return svgDocument(W, H, body);
}

/** White → dark blue for t in 0…1. */
function blues(t: number): string {
  const a = [247, 251, 255];
  const b = [8, 48, 107];
  const u = Math.max(0, Math.min(1, t));
  const c = a.map((v, i) => Math.round(v + (b[i] - v) * u));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

/**
 * A confusion-matrix heat map: rows the true class, columns the predicted class, each cell shaded
 * by its share of the true class's images and labelled with its count.
 */
export function confusionSvg(confusion: readonly (readonly number[])[], classNames: readonly string[], title: string): string {
  const C = confusion.length;
  const cell = Math.max(14, Math.min(52, Math.floor(520 / Math.max(1, C))));
  const longest = Math.max(4, ...classNames.map((s) => s.length));
  const nameW = Math.min(160, longest * 7.5 + 12);
  const left = 40 + nameW;
  const top = 56;
  const gridW = cell * C;
  const bottom = nameW * 0.72 + 40;
  const barW = 16;
  const W = left + gridW + 100;
  const H = top + gridW + bottom;
  const out: string[] = [];
  out.push(`<text x="${left + gridW / 2}" y="28" font-size="16" font-weight="bold" text-anchor="middle">${escapeXml(title)}</text>`);
  const showCounts = cell >= 22;
  for (let r = 0; r < C; r++) {
    const row = confusion[r];
    const total = row.reduce((a, b) => a + b, 0);
    for (let c = 0; c < C; c++) {
      const v = row[c] ?? 0;
      const frac = total > 0 ? v / total : 0;
      const x = left + c * cell;
      const y = top + r * cell;
      out.push(`<rect x="${x}" y="${y}" width="${cell}" height="${cell}" fill="${blues(frac)}" stroke="#ffffff" stroke-width="1"/>`);
      if (showCounts) {
        const fs = Math.min(14, Math.floor(cell * (String(v).length > 3 ? 0.3 : 0.36)));
        out.push(`<text x="${x + cell / 2}" y="${y + cell / 2}" font-size="${fs}" text-anchor="middle" dominant-baseline="middle" fill="${frac > 0.5 ? '#ffffff' : '#222222'}"${r === c ? ' font-weight="bold"' : ''}>${v}</text>`);
      }
    }
  }
  out.push(`<rect x="${left}" y="${top}" width="${gridW}" height="${gridW}" fill="none" stroke="#333333"/>`);
  const fs = Math.min(13, Math.max(8, Math.floor(cell * 0.4)));
  for (let i = 0; i < C; i++) {
    const name = escapeXml(classNames[i] ?? `class ${i}`);
    const yc = top + i * cell + cell / 2;
    out.push(`<text x="${left - 6}" y="${yc}" font-size="${fs}" text-anchor="end" dominant-baseline="middle">${name}</text>`);
    const xc = left + i * cell + cell / 2;
    const yb = top + gridW + 8;
    out.push(`<text x="${xc}" y="${yb}" font-size="${fs}" text-anchor="end" dominant-baseline="middle" transform="rotate(-45 ${xc} ${yb})">${name}</text>`);
  }
  out.push(`<text x="${left + gridW / 2}" y="${H - 14}" font-size="13" text-anchor="middle">predicted class</text>`);
  const yl = top + gridW / 2;
  const xl = Math.max(16, left - 6 - longest * 7.5 - 14);
  out.push(`<text x="${xl}" y="${yl}" font-size="13" text-anchor="middle" transform="rotate(-90 ${xl} ${yl})">true class</text>`);
  // Colour bar: the share of the true class's images.
  const bx = left + gridW + 22;
  out.push('<defs><linearGradient id="share" x1="0" y1="1" x2="0" y2="0">' +
    `<stop offset="0" stop-color="${blues(0)}"/><stop offset="1" stop-color="${blues(1)}"/></linearGradient></defs>`);
  out.push(`<rect x="${bx}" y="${top}" width="${barW}" height="${gridW}" fill="url(#share)" stroke="#333333"/>`);
  for (const t of [0, 0.25, 0.5, 0.75, 1]) {
    const y = top + gridW - t * gridW;
    out.push(`<line x1="${bx + barW}" x2="${bx + barW + 4}" y1="${y}" y2="${y}" stroke="#333333"/>`);
    out.push(`<text x="${bx + barW + 7}" y="${y}" font-size="11" dominant-baseline="middle">${Math.round(t * 100)}%</text>`);
  }
  const bxl = bx + barW + 48;
  out.push(`<text x="${bxl}" y="${yl}" font-size="12" text-anchor="middle" transform="rotate(-90 ${bxl} ${yl})">share of the true class</text>`);
  return svgDocument(Math.round(W + 10), Math.round(H), out.join('\n'));
}

export async function curvesPng(metrics: readonly EpochRecord[], steps: readonly StepRecord[], stepsPerEpoch: number, title: string): Promise<Uint8Array> {
  return svgToPng(curvesSvg(metrics, steps, stepsPerEpoch, title));
}

export async function confusionPng(confusion: readonly (readonly number[])[], classNames: readonly string[], title: string): Promise<Uint8Array> {
  return svgToPng(confusionSvg(confusion, classNames, title));
}
