/**
 * safetensors reading and writing, and model checkpoints on top of it.
 *
 * Files of other dtypes and broken files are built byte by byte here, independently of the
 * writer under test.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { VimError } from '../src/errors.js';
import {
  f16BitsToF32, f32ToF16Bits, parseSafetensors, readSafetensors, readSafetensorsHeader, safetensorsChunks,
  serializeSafetensors, writeFileAtomicAsync, writeSafetensors, type TensorToWrite,
} from '../src/io/safetensors.js';
import { CHECKPOINT_FORMAT, checkpointChunks, loadCheckpoint, readCheckpointInfo, saveCheckpoint } from '../src/model/checkpoint.js';
import { configToJson, loadConfig } from '../src/model/config.js';
import { initParams, initParams64 } from '../src/model/init.js';

const tmp = mkdtempSync(join(tmpdir(), 'vim-checkpoint-test-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
let fileNo = 0;
/** A fresh file path in its own folder (so folder listings show only what one test wrote). */
function freshPath(name = 'model.safetensors'): string {
  const dir = join(tmp, `case-${fileNo++}`);
  mkdirSync(dir);
  return join(dir, name);
}

function vimErrorOf(f: () => unknown): VimError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(VimError);
    return e as VimError;
  }
  throw new Error('expected a VimError, nothing was thrown');
}

/** A safetensors file by hand: u64 LE header length, the header text as given, then the data. */
function rawFile(headerText: string, data: Uint8Array = new Uint8Array(0), claimedLength?: number): Uint8Array {
  const h = new TextEncoder().encode(headerText);
  const out = new Uint8Array(8 + h.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(claimedLength ?? h.length), true);
  out.set(h, 8);
  out.set(data, 8 + h.length);
  return out;
}

/** Little-endian u16 values as bytes. */
function u16Bytes(values: number[]): Uint8Array {
  const b = new Uint8Array(values.length * 2);
  const v = new DataView(b.buffer);
  values.forEach((x, i) => v.setUint16(2 * i, x, true));
  return b;
}

const nano = loadConfig('vim-nano');
const tiny = loadConfig('vim-tiny');

describe('safetensors', () => {
  const tensors: TensorToWrite[] = [
    { name: 'a.weight', shape: [2, 3], data: Float32Array.from([1, -2.5, 3.25, 1e-30, -0, 6e7]) },
    { name: 'scalar', shape: [], data: Float32Array.from([Math.PI]) },
    { name: 'empty', shape: [0, 4], data: new Float32Array(0) },
    { name: 'odd', shape: [3], data: Float32Array.from([Infinity, -Infinity, 7]) },
  ];

  it('round-trips f32 tensors bit for bit, with their shapes and the metadata', () => {
    const path = freshPath();
    const meta = { purpose: 'test', json: JSON.stringify({ a: [1, 2], b: 'ü' }) };
    writeSafetensors(path, tensors, meta);
    const back = readSafetensors(path);
    expect([...back.tensors.keys()]).toEqual(tensors.map((t) => t.name));
    for (const t of tensors) {
      const got = back.tensors.get(t.name);
      expect(got?.dtype).toBe('F32');
      expect(got?.shape).toEqual(t.shape);
      expect(got?.data).toEqual(t.data);
    }
    expect(Object.is(back.tensors.get('a.weight')?.data[4], -0)).toBe(true);
    expect(back.metadata).toEqual(meta);
    expect(readSafetensorsHeader(path).metadata).toEqual(meta);
  });

  it('pads the header with spaces so the data starts 8-byte aligned', () => {
    const bytes = serializeSafetensors(tensors, { k: 'v' });
    const n = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
    expect((8 + n) % 8).toBe(0);
    const text = new TextDecoder().decode(bytes.subarray(8, 8 + n));
    expect(text.trimEnd().endsWith('}')).toBe(true);
    expect(text.slice(text.trimEnd().length)).toMatch(/^ *$/);
  });

  // Optional: only where python3 is installed.
  const hasPython = spawnSync('python3', ['-c', 'import json, struct'], { encoding: 'utf8' }).status === 0;
  it.skipIf(!hasPython)('writes a layout that a plain json+struct reader agrees with', () => {
    const path = freshPath();
    writeSafetensors(path, tensors, { k: 'v' });
    const script = [
      'import json, struct, sys',
      'b = open(sys.argv[1], "rb").read()',
      'n = struct.unpack("<Q", b[:8])[0]',
      'h = json.loads(b[8:8 + n])',
      'base = 8 + n',
      'out = {"meta": h.pop("__metadata__"), "aligned": base % 8 == 0, "end": base + max(v["data_offsets"][1] for v in h.values()) == len(b)}',
      'for k, v in h.items():',
      '    s, e = v["data_offsets"]',
      '    vals = struct.unpack("<%df" % ((e - s) // 4), b[base + s:base + e])',
      '    out[k] = {"dtype": v["dtype"], "shape": v["shape"], "values": [x if abs(x) != float("inf") else str(x) for x in vals]}',
      'print(json.dumps(out))',
    ].join('\n');
    const r = spawnSync('python3', ['-c', script, path], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    const got = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(got.meta).toEqual({ k: 'v' });
    expect(got.aligned).toBe(true);
    expect(got.end).toBe(true);
    expect(got['a.weight']).toEqual({ dtype: 'F32', shape: [2, 3], values: [...tensors[0].data] });
    expect(got.scalar).toEqual({ dtype: 'F32', shape: [], values: [Math.fround(Math.PI)] });
    expect(got.empty).toEqual({ dtype: 'F32', shape: [0, 4], values: [] });
    expect(got.odd).toEqual({ dtype: 'F32', shape: [3], values: ['inf', '-inf', 7] });
  });

  it('reads F16 tensors from hand-built bytes', () => {
    const bits = [0x3c00, 0xc000, 0x3800, 0x7bff, 0x0001, 0x0400, 0x8000, 0x7c00, 0xfc00, 0x7e00, 0x3555];
    const want = [1, -2, 0.5, 65504, 2 ** -24, 2 ** -14, -0, Infinity, -Infinity, NaN, 0.25 * (1 + 0x155 / 1024)];
    const data = u16Bytes(bits);
    const header = JSON.stringify({ h: { dtype: 'F16', shape: [bits.length], data_offsets: [0, data.length] } });
    const path = freshPath('half.safetensors');
    writeFileSync(path, rawFile(header, data));
    const t = readSafetensors(path).tensors.get('h');
    expect(t?.dtype).toBe('F16');
    expect(t?.shape).toEqual([bits.length]);
    expect([...(t?.data ?? [])]).toEqual(want);
    expect(Object.is(t?.data[6], -0)).toBe(true);
  });

  it('reads BF16 tensors from hand-built bytes', () => {
    const bits = [0x3f80, 0xc000, 0x4049, 0x0001, 0xff80, 0x7f7f, 0x3eab];
    const want = [1, -2, 3.140625, 2 ** -133, -Infinity, (1 + 127 / 128) * 2 ** 127, (1 + 0x2b / 128) * 2 ** -2];
    // bf16 tensors after a f32 one: offsets that are not the start of the data
    const f32 = new Uint8Array(Float32Array.from([42]).buffer);
    const bf = u16Bytes(bits);
    const data = new Uint8Array(f32.length + bf.length);
    data.set(f32, 0);
    data.set(bf, f32.length);
    const header = JSON.stringify({
      __metadata__: { format: 'pt' },
      first: { dtype: 'F32', shape: [1], data_offsets: [0, 4] },
      b: { dtype: 'BF16', shape: [7, 1], data_offsets: [4, 4 + bf.length] },
    });
    const file = parseSafetensors(rawFile(`${header}   `, data));
    expect(file.metadata).toEqual({ format: 'pt' });
    expect([...(file.tensors.get('first')?.data ?? [])]).toEqual([42]);
    const t = file.tensors.get('b');
    expect(t?.dtype).toBe('BF16');
    expect(t?.shape).toEqual([7, 1]);
    expect([...(t?.data ?? [])]).toEqual(want);
  });

  it('rounds to f16 to nearest, ties to even, with overflow and underflow', () => {
    const cases: [number, number][] = [
      [1, 0x3c00], [-2, 0xc000], [65504, 0x7bff], [65519, 0x7bff], [65520, 0x7c00], [1e9, 0x7c00],
      [-Infinity, 0xfc00], [1 + 2 ** -11, 0x3c00], [1 + 3 * 2 ** -11, 0x3c02], [1 + 2 ** -11 + 2 ** -20, 0x3c01],
      [2 ** -24, 0x0001], [2 ** -25, 0x0000], [3 * 2 ** -26, 0x0001], [-(2 ** -26), 0x8000],
      [2 ** -14 - 2 ** -25, 0x0400], [1023.5 * 2 ** -24, 0x0400], [1022.5 * 2 ** -24, 0x03fe], [-0, 0x8000],
    ];
    for (const [x, h] of cases) expect(f32ToF16Bits(x).toString(16), String(x)).toBe(h.toString(16));
    expect(Number.isNaN(f16BitsToF32(f32ToF16Bits(NaN)))).toBe(true);
    // every finite f16 value comes back unchanged
    for (let h = 0; h < 0x10000; h++) {
      const x = f16BitsToF32(h);
      if (Number.isFinite(x) && f32ToF16Bits(x) !== h) throw new Error(`f16 ${h.toString(16)} (${x}) does not round-trip`);
    }
  });

  it('writes F16 on request and reads it back as f32 within half precision', () => {
    const path = freshPath();
    const data = Float32Array.from({ length: 1000 }, (_, i) => Math.sin(i) * 10 ** ((i % 7) - 3));
    writeSafetensors(path, [{ name: 'x', shape: [10, 100], data }], {}, { dtype: 'F16' });
    const t = readSafetensors(path).tensors.get('x');
    expect(t?.dtype).toBe('F16');
    for (let i = 0; i < data.length; i++) {
      expect(Math.abs((t?.data[i] ?? NaN) - data[i])).toBeLessThanOrEqual(Math.abs(data[i]) * 2 ** -11 + 2 ** -25);
    }
  });

  it('mixes dtypes per tensor and reads data at any alignment', () => {
    // a 3-element F16 tensor first puts the F32 after it at an offset that is not a multiple of 4
    const mixed: TensorToWrite[] = [
      { name: 'h', shape: [3], data: Float32Array.from([0.5, -1, 2048]), dtype: 'F16' },
      { name: 'f', shape: [2, 2], data: Float32Array.from([1.1, -2.2, 3.3, Number.MIN_VALUE]) },
    ];
    const bytes = serializeSafetensors(mixed);
    const shifted = new Uint8Array(bytes.length + 1).subarray(1); // odd byteOffset
    shifted.set(bytes);
    for (const b of [bytes, shifted]) {
      const file = parseSafetensors(b);
      expect(file.tensors.get('h')).toEqual({ dtype: 'F16', shape: [3], data: Float32Array.from([0.5, -1, 2048]) });
      expect(file.tensors.get('f')?.data).toEqual(Float32Array.from([1.1, -2.2, 3.3, Number.MIN_VALUE]));
    }
  });

  it('writes atomically: no temporary file is left and an existing file is replaced whole', () => {
    const path = freshPath();
    writeSafetensors(path, tensors, { v: '1' });
    writeSafetensors(path, tensors.slice(0, 1), { v: '2' });
    const dir = join(path, '..');
    expect(readdirSync(dir)).toEqual(['model.safetensors']);
    const back = readSafetensors(path);
    expect(back.metadata).toEqual({ v: '2' });
    expect([...back.tensors.keys()]).toEqual(['a.weight']);
  });

  it('leaves no temporary file when the write fails, and says why', () => {
    const path = freshPath();
    mkdirSync(path); // a folder sits where the file should go: the rename must fail
    expect(vimErrorOf(() => writeSafetensors(path, tensors)).message).toMatch(/cannot write .*model\.safetensors/);
    expect(readdirSync(join(path, '..'))).toEqual(['model.safetensors']);
    expect(statSync(path).isDirectory()).toBe(true);
    const msg = vimErrorOf(() => writeSafetensors(join(tmp, 'no-such-folder', 'm.safetensors'), tensors)).message;
    expect(msg).toMatch(/no-such-folder does not exist/);
  });

  it('writes in pieces without blocking: views of the f32 data, the same bytes as serializeSafetensors, atomically', async () => {
    const mixed: TensorToWrite[] = [...tensors, { name: 'h', shape: [2], data: Float64Array.from([0.1, 2]), dtype: 'F16' }, { name: 'g', shape: [1], data: Float64Array.from([0.1]) }];
    const chunks = safetensorsChunks(mixed, { v: '3' });
    expect(chunks[1].buffer).toBe(tensors[0].data.buffer); // a view, not a copy
    const whole = serializeSafetensors(mixed, { v: '3' });
    expect(Buffer.concat(chunks)).toEqual(Buffer.from(whole));
    const path = freshPath();
    writeSafetensors(path, tensors.slice(0, 1), { v: '1' });
    await writeFileAtomicAsync(path, chunks);
    expect(readdirSync(join(path, '..'))).toEqual(['model.safetensors']);
    expect(new Uint8Array(readFileSync(path))).toEqual(whole);
    // A failed write leaves the previous file, and no temporary file, and says why.
    const blocked = freshPath();
    mkdirSync(blocked);
    await expect(writeFileAtomicAsync(blocked, chunks)).rejects.toThrow(/cannot write .*model\.safetensors/);
    expect(readdirSync(join(blocked, '..'))).toEqual(['model.safetensors']);
    await expect(writeFileAtomicAsync(join(tmp, 'no-such-folder', 'm.safetensors'), whole)).rejects.toThrow(/no-such-folder does not exist/);
  });

  describe('refuses bad files with a message naming the file and the problem', () => {
    function errorFor(bytes: Uint8Array): string {
      const path = freshPath('bad.safetensors');
      writeFileSync(path, bytes);
      const e = vimErrorOf(() => readSafetensors(path));
      expect(e.message).toContain(path);
      // its reason alone, for messages that wrap it: what is wrong, without the file's name or the advice
      expect(e.reason).toBeTruthy();
      expect(e.message.startsWith(`${path}: ${e.reason}`)).toBe(true);
      expect(e.reason).not.toContain(path);
      expect(e.reason).not.toMatch(/Re-create it|copy it again|choose another file/);
      return e.message;
    }
    const good = serializeSafetensors(tensors, { k: 'v' });
    const data8 = new Uint8Array(8);

    it('a missing file', () => {
      const path = join(tmp, 'nothing-here.safetensors');
      expect(vimErrorOf(() => readSafetensors(path)).message).toMatch(/nothing-here\.safetensors: no such file/);
    });
    it('a file too short for a header', () => {
      expect(errorFor(new Uint8Array([1, 2, 3]))).toMatch(/3 bytes long, too short for a safetensors header/);
    });
    it('a header length beyond the end of the file', () => {
      expect(errorFor(rawFile('{}', data8, 1000))).toMatch(/header length field says 1000 bytes but only 10 bytes follow/);
      expect(errorFor(rawFile('{}', data8, 2 ** 53))).toMatch(/header length field says/);
    });
    it('a file of another kind: a PyTorch checkpoint, an image, gzip data, JSON text', () => {
      const bytes = (...head: number[]): Uint8Array => Uint8Array.from([...head, ...new Array(40).fill(7)]);
      const text = (t: string): Uint8Array => new TextEncoder().encode(t);
      const pytorch = /not a safetensors checkpoint: it is a (zip archive|Python pickle), as .*torch\.save writes \(\.pt, \.pth\); load it in PyTorch and save it as safetensors with save_checkpoint in scripts\/peer\/vim_peer\.py/;
      expect(errorFor(bytes(0x50, 0x4b, 0x03, 0x04))).toMatch(pytorch);
      expect(errorFor(bytes(0x80, 0x02, 0x8a, 0x0a))).toMatch(pytorch);
      const other = (kind: string): RegExp => new RegExp(`not a safetensors checkpoint: it is ${kind}; give a \\.safetensors checkpoint, such as the best\\.safetensors that train-vim writes`);
      expect(errorFor(bytes(0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a))).toMatch(other('a PNG image'));
      expect(errorFor(bytes(0xff, 0xd8, 0xff, 0xe0))).toMatch(other('a JPEG image'));
      expect(errorFor(bytes(0x52, 0x49, 0x46, 0x46, 1, 2, 0, 0, 0x57, 0x45, 0x42, 0x50))).toMatch(other('a WebP image'));
      expect(errorFor(bytes(0x1f, 0x8b, 0x08))).toMatch(other('gzip-compressed data'));
      expect(errorFor(text('{\n  "name": "vim-tiny",\n  "dim": 192\n}\n'))).toMatch(other('JSON text, such as a model config'));
      // anything else keeps the plain message
      expect(errorFor(text('hello, this is not a model at all'))).toMatch(/header length field says \d+ bytes but only \d+ bytes follow/);
    });
    it('a header that is not JSON', () => {
      expect(errorFor(rawFile('{"a": {"dtype": "F32", garbage', data8))).toMatch(/header is not valid JSON/);
      expect(errorFor(rawFile('\u0000\u0001binary', data8))).toMatch(/header is not valid JSON/);
    });
    it('a header that is not an object', () => {
      expect(errorFor(rawFile('[1, 2, 3]', data8))).toMatch(/header is not a JSON object/);
    });
    it('a tensor entry with a bad dtype, shape or offsets', () => {
      const one = (entry: unknown): string => errorFor(rawFile(JSON.stringify({ t: entry }), data8));
      expect(one({ dtype: 'I64', shape: [1], data_offsets: [0, 8] })).toMatch(/tensor "t": dtype "I64" is not supported/);
      expect(one({ dtype: 'toString', shape: [1], data_offsets: [0, 8] })).toMatch(/dtype "toString" is not supported/);
      expect(one({ shape: [1], data_offsets: [0, 4] })).toMatch(/tensor "t": missing dtype/);
      expect(one({ dtype: 'F32', shape: [-1], data_offsets: [0, 4] })).toMatch(/tensor "t": shape must be an array of non-negative integers/);
      expect(one({ dtype: 'F32', shape: [1], data_offsets: [4, 0] })).toMatch(/tensor "t": data_offsets must be \[begin, end\]/);
      expect(one({ dtype: 'F32', shape: [3], data_offsets: [0, 8] })).toMatch(/tensor "t": data_offsets \[0, 8\] span 8 bytes but shape \[3\] of F32 needs 12/);
      expect(one('F32')).toMatch(/tensor "t": header entry must be an object/);
      expect(errorFor(rawFile(JSON.stringify({ __metadata__: { n: 1 } }), data8))).toMatch(/metadata "n" must be a string/);
    });
    it('data offsets out of range', () => {
      expect(errorFor(rawFile(JSON.stringify({ t: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }), data8)))
        .toMatch(/tensor "t": its data ends at byte \d+ but the file has only \d+ bytes; the file is truncated/);
    });
    it('overlapping tensors', () => {
      const header = JSON.stringify({
        a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
        b: { dtype: 'F16', shape: [2], data_offsets: [4, 8] },
      });
      expect(errorFor(rawFile(header, data8))).toMatch(/tensors "a" \[0,8\] and "b" \[4,8\] overlap/);
    });
    it('a truncated file', () => {
      expect(errorFor(good.subarray(0, good.length - 5))).toMatch(/the file is truncated/);
      expect(errorFor(good.subarray(0, 20))).toMatch(/header length field says/);
      // the header-only reader finds the same problem without reading the data
      const path = freshPath('cut.safetensors');
      writeFileSync(path, good.subarray(0, good.length - 5));
      expect(vimErrorOf(() => readSafetensorsHeader(path)).message).toMatch(/truncated/);
      const tiny3 = freshPath('three-bytes.safetensors');
      writeFileSync(tiny3, new Uint8Array(3));
      expect(vimErrorOf(() => readSafetensorsHeader(tiny3)).message).toMatch(/3 bytes long, too short/);
    });
  });
});

// ---------------------------------------------------------------------------------------------

describe('checkpoints', () => {
  const params = initParams(nano, 7);
  const recipe = { optimizer: 'adamw', lr: 1e-3, epochs: 2, seed: 7 };
  const metrics = { top1: 0.4123, loss: 1.62, epoch: 2 };
  const saved = freshPath('nano.safetensors');
  saveCheckpoint(saved, params, { config: configToJson(nano), recipe, metrics, note: 'hello' });

  it('round-trips every parameter bit for bit, under the PyTorch names and shapes', () => {
    const ck = loadCheckpoint(saved, nano);
    expect(ck.cfg).toEqual(nano);
    expect(ck.params.flat).toEqual(params.flat);
    const header = readSafetensorsHeader(saved);
    expect(header.tensors.get('layers.3.mixer.conv1d_b.weight')?.shape).toEqual([128, 1, 4]);
    expect(header.tensors.get('patch_embed.proj.weight')?.shape).toEqual([64, 3, 4, 4]);
    expect(header.tensors.get('layers.0.mixer.A_b_log')?.dtype).toBe('F32');
    expect(header.tensors.size).toBe(params.specs.length);
  });

  it('stores the format, config, recipe and metrics as metadata and parses them back', () => {
    const raw = readSafetensors(saved).metadata;
    expect(raw.format).toBe(CHECKPOINT_FORMAT);
    expect(JSON.parse(raw.config)).toEqual(configToJson(nano));
    expect(JSON.parse(raw.recipe)).toEqual(recipe);
    const { meta } = loadCheckpoint(saved);
    expect(meta).toEqual({ format: 'vim-webgpu', config: configToJson(nano), recipe, metrics, note: 'hello' });
    const info = readCheckpointInfo(saved);
    expect(info.cfg).toEqual(nano);
    expect(info.meta.metrics).toEqual(metrics);
  });

  it('takes the config from the checkpoint when none is expected', () => {
    expect(loadCheckpoint(saved).cfg.name).toBe('vim-nano');
  });

  it('saves float64 parameters as f32', () => {
    const path = freshPath();
    const p64 = initParams64(nano, 7);
    saveCheckpoint(path, p64, { metrics });
    expect(loadCheckpoint(path).params.flat).toEqual(params.flat);
  });

  it('loads an f16 checkpoint as f32; A_log and A_b_log stay f32', () => {
    const path = freshPath();
    saveCheckpoint(path, params, { recipe }, { dtype: 'F16' });
    // half the bytes, less the f32 decays' logs (2 · E · N per block)
    const logs = params.specs.filter((s) => /A(_b)?_log$/.test(s.name)).reduce((n, s) => n + s.size, 0);
    expect(logs).toBe(2 * nano.depth * nano.E * nano.N);
    expect(statSync(path).size).toBeLessThan(statSync(saved).size * 0.5 + 2 * logs + 20000);
    const ck = loadCheckpoint(path, nano);
    for (const spec of params.specs) {
      const got = ck.params.get(spec.name);
      const want = params.get(spec.name);
      const exact = /A(_b)?_log$/.test(spec.name);
      for (let i = 0; i < want.length; i++) {
        if (exact ? got[i] !== want[i] : Math.abs(got[i] - want[i]) > Math.abs(want[i]) * 2 ** -11 + 2 ** -25) {
          throw new Error(`${spec.name}[${i}]: ${got[i]} vs ${want[i]}`);
        }
      }
    }
  });

  it('refuses a checkpoint of another config, naming both and what to pass', () => {
    const e = vimErrorOf(() => loadCheckpoint(saved, tiny));
    expect(e.message).toContain(`checkpoint ${saved} was trained for vim-nano (D=64, depth 4`);
    expect(e.message).toContain('but the model is vim-tiny (D=192, depth 24');
    expect(e.message).toContain('pass --model vim-nano or another checkpoint');
    expect(e.reason).toMatch(/^it was trained for vim-nano \(D=64.*but the model is vim-tiny \(D=192, depth 24[^:]*$/);
  });

  /** Re-write the saved checkpoint with its tensors changed by `edit`, keeping the metadata. */
  function tampered(edit: (t: TensorToWrite[]) => TensorToWrite[]): string {
    const file = readSafetensors(saved);
    const list = [...file.tensors].map(([name, t]) => ({ name, shape: t.shape, data: t.data }));
    const path = freshPath('tampered.safetensors');
    writeSafetensors(path, edit(list), file.metadata);
    return path;
  }

  it('refuses a checkpoint with a missing tensor, naming it and its shape', () => {
    const path = tampered((l) => l.filter((t) => t.name !== 'layers.2.mixer.A_b_log'));
    const e = vimErrorOf(() => loadCheckpoint(path, nano));
    expect(e.message).toContain(path);
    expect(e.message).toContain('tensor "layers.2.mixer.A_b_log" is missing (expected shape [128, 16])');
    expect(e.reason).toMatch(/^it does not match its config vim-nano \(.*\): tensor "layers\.2\.mixer\.A_b_log" is missing \(expected shape \[128, 16\]\)$/);
  });

  it('refuses a checkpoint with an unexpected tensor, naming it', () => {
    const path = tampered((l) => [...l, { name: 'layers.0.mixer.gamma', shape: [64], data: new Float32Array(64) }]);
    const msg = vimErrorOf(() => loadCheckpoint(path, nano)).message;
    expect(msg).toContain('unexpected tensor "layers.0.mixer.gamma" (shape [64])');
  });

  it('refuses a tensor whose shape does not match the config, naming both shapes', () => {
    const path = tampered((l) => l.map((t) => (t.name === 'head.weight' ? { ...t, shape: [64, 10] } : t)));
    const msg = vimErrorOf(() => loadCheckpoint(path, nano)).message;
    expect(msg).toContain('tensor "head.weight" has shape [64, 10] but vim-nano expects [10, 64]');
  });

  it('keeps extra tensors (optimizer state) under the prefixes the caller names', () => {
    const path = freshPath();
    const m = Float32Array.from({ length: 640 }, (_, i) => i / 640);
    saveCheckpoint(path, params, { recipe }, { extra: [{ name: 'optim.m.head.weight', shape: [10, 64], data: m }] });
    expect(vimErrorOf(() => loadCheckpoint(path, nano)).message).toContain('unexpected tensor "optim.m.head.weight"');
    const ck = loadCheckpoint(path, nano, { extraPrefixes: ['optim.'] });
    expect(ck.extra.get('optim.m.head.weight')?.data).toEqual(m);
    expect(ck.params.flat).toEqual(params.flat);
  });

  it('gives the same file as pieces for a background write (checkpointChunks)', async () => {
    const path = freshPath();
    const m = Float32Array.from({ length: 640 }, (_, i) => i / 640);
    const extra = [{ name: 'optim.m.head.weight', shape: [10, 64], data: m }];
    saveCheckpoint(path, params, { recipe }, { extra });
    const again = freshPath();
    await writeFileAtomicAsync(again, checkpointChunks(params, { recipe }, { extra }));
    expect(readFileSync(again)).toEqual(readFileSync(path));
  });

  it('reads a file without a config as the expected one, and asks for --model otherwise', () => {
    const path = freshPath();
    writeSafetensors(path, params.specs.map((s) => ({ name: s.name, shape: s.shape, data: params.get(s.name) })));
    expect(loadCheckpoint(path, nano).params.flat).toEqual(params.flat);
    expect(vimErrorOf(() => loadCheckpoint(path)).message).toMatch(/holds no model config.*pass --model/);
  });

  it('refuses a damaged config in the metadata', () => {
    const path = freshPath();
    writeSafetensors(path, [], { format: 'vim-webgpu', config: '{"name": "x", ' });
    const notJson = vimErrorOf(() => loadCheckpoint(path));
    expect(notJson.message).toMatch(/"config" in the checkpoint's metadata is not valid JSON.*; the file is damaged$/);
    expect(notJson.reason).toMatch(/^the "config" in the checkpoint's metadata is not valid JSON \(.*\)$/);
    const bad = freshPath();
    writeSafetensors(bad, [], { format: 'vim-webgpu', config: JSON.stringify({ ...configToJson(nano), depth: -1 }) });
    const negative = vimErrorOf(() => loadCheckpoint(bad));
    expect(negative.message).toMatch(/positive integer for depth/);
    expect(negative.reason).toBe('expected a positive integer for depth but received -1');
  });

  it('refuses a missing checkpoint file', () => {
    const path = join(tmp, 'absent.safetensors');
    expect(vimErrorOf(() => loadCheckpoint(path, nano)).message).toMatch(/absent\.safetensors: no such file/);
  });

  it('leaves only the checkpoint in its folder after saving', () => {
    expect(readdirSync(join(saved, '..'))).toEqual(['nano.safetensors']);
    expect(readFileSync(saved).subarray(0, 8).length).toBe(8);
  });
});
