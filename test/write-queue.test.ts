/**
 * The background writes of a run folder (WriteQueue): in order, one file after another, each
 * atomic; a failed write keeps the files as they were and is reported; nothing half-written stays.
 */
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { VimError } from '../src/errors.js';
import { removePendingTemps, writeFileAtomicAsync } from '../src/io/safetensors.js';
import { WriteQueue } from '../src/train/write-queue.js';

const tmp = mkdtempSync(join(tmpdir(), 'vim-write-queue-test-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
let n = 0;
function freshDir(): string {
  const dir = join(tmp, `case-${n++}`);
  mkdirSync(dir);
  return dir;
}
const bytes = (s: string) => new TextEncoder().encode(s);

describe('WriteQueue', () => {
  it('writes in the order queued: a later write of a file lands after an earlier one, even one still being rendered', async () => {
    const dir = freshDir();
    const q = new WriteQueue();
    let render!: (b: Uint8Array) => void;
    const slow = new Promise<Uint8Array>((done) => (render = done));
    q.write(join(dir, 'a.txt'), slow);
    q.write(join(dir, 'a.txt'), bytes('second'));
    q.write(join(dir, 'b.txt'), [bytes('one '), bytes(''), bytes('two')]);
    expect(q.pending).toBe(3);
    setTimeout(() => render(bytes('first')), 20);
    await q.flush();
    expect(q.pending).toBe(0);
    expect(readFileSync(join(dir, 'a.txt'), 'utf8')).toBe('second');
    expect(readFileSync(join(dir, 'b.txt'), 'utf8')).toBe('one two');
    expect(readdirSync(dir).sort()).toEqual(['a.txt', 'b.txt']);
  });

  it('after a failed write drops the writes queued behind it, keeps the files as they were and reports the error', async () => {
    const dir = freshDir();
    writeFileSync(join(dir, 'state'), 'old state');
    mkdirSync(join(dir, 'blocked')); // a folder where a file should go: its rename fails
    const q = new WriteQueue();
    q.write(join(dir, 'log'), bytes('new log'));
    q.write(join(dir, 'blocked'), bytes('x'));
    q.write(join(dir, 'state'), bytes('new state'));
    await q.settle(); // never throws
    expect(() => q.check()).toThrow(VimError);
    await expect(q.flush()).rejects.toThrow(/cannot write .*blocked/);
    expect(readFileSync(join(dir, 'log'), 'utf8')).toBe('new log');
    expect(readFileSync(join(dir, 'state'), 'utf8')).toBe('old state');
    expect(readdirSync(dir).sort()).toEqual(['blocked', 'log', 'state']);
  });

  it('reports a plot that failed to render as the error of its write', async () => {
    const dir = freshDir();
    const q = new WriteQueue();
    q.write(join(dir, 'curves.png'), Promise.reject(new Error('render failed')));
    await expect(q.flush()).rejects.toThrow('render failed');
    expect(readdirSync(dir)).toEqual([]);
  });
});

describe('writeFileAtomicAsync', () => {
  it('leaves nothing behind when the process gives up on writes in progress (removePendingTemps)', async () => {
    const dir = freshDir();
    writeFileSync(join(dir, 'state'), 'old');
    const big = new Uint8Array(64 << 20);
    const writing = writeFileAtomicAsync(join(dir, 'state'), big).catch(() => {});
    await new Promise((r) => setTimeout(r, 1)); // the temporary file is open by now, or soon
    removePendingTemps();
    await writing;
    // Either the write had finished (the new file) or its temporary file is gone (the old one).
    const left = readdirSync(dir);
    expect(left.filter((f) => f.endsWith('.tmp'))).toEqual([]);
    expect(left).toEqual(['state']);
  });
});
