/**
 * Reading and writing safetensors files.
 *
 * Layout: an 8-byte little-endian u64 header length H, H bytes of UTF-8 JSON, then the raw
 * little-endian tensor data. The header maps each tensor name to
 * `{ "dtype": "F32", "shape": [..], "data_offsets": [begin, end] }` (offsets in bytes, relative
 * to the start of the data) and may hold `"__metadata__": { string: string }`. The writer pads
 * the header with spaces so the data starts on an 8-byte boundary.
 *
 * Tensors are written as F32 (or F16 on request) and read from F32, F16 or BF16, always coming
 * back as Float32Array. Files are written atomically: into a temporary file in the same folder,
 * flushed to disk, then renamed over the target, so an interrupted write never leaves a broken
 * file behind.
 */
import {
  accessSync, closeSync, constants, fsyncSync, openSync, readFileSync, readSync, renameSync, statSync, unlinkSync, writeSync,
  type Stats,
} from 'node:fs';
import { open, rename, unlink } from 'node:fs/promises';
import { endianness } from 'node:os';
import { basename, dirname, join, sep } from 'node:path';
import { VimError } from '../errors.js';

/** The dtypes this module reads. */
export type SafetensorsDtype = 'F32' | 'F16' | 'BF16';
/** The dtypes this module writes. */
export type SafetensorsWriteDtype = 'F32' | 'F16';

const BYTES_PER_ELEMENT: Record<SafetensorsDtype, number> = { F32: 4, F16: 2, BF16: 2 };

/** A tensor as read from a file: its stored dtype, its shape, its values widened to f32. */
export interface LoadedTensor {
  dtype: SafetensorsDtype;
  shape: number[];
  data: Float32Array; // row-major, product(shape) elements
}

/** A whole file in memory. Tensors keep the order of the file's header. */
export interface SafetensorsContent {
  tensors: Map<string, LoadedTensor>;
  metadata: Record<string, string>;
}

/** One header entry, without the data. */
export interface TensorInfo {
  dtype: SafetensorsDtype;
  shape: number[];
  dataOffsets: [number, number]; // bytes, relative to the start of the data section
}

/** The header alone (cheap to read: the tensor data is not touched). */
export interface SafetensorsHeader {
  tensors: Map<string, TensorInfo>;
  metadata: Record<string, string>;
  dataStart: number; // absolute byte offset of the data section, 8 + header length
}

/** A tensor to write. Float64 data is rounded to the stored dtype. */
export interface TensorToWrite {
  name: string;
  shape: number[];
  data: Float32Array | Float64Array; // row-major, product(shape) elements
  dtype?: SafetensorsWriteDtype; // overrides the file-wide dtype for this tensor
}

export interface WriteOptions {
  /** Storage dtype for tensors that do not name their own; default 'F32'. */
  dtype?: SafetensorsWriteDtype;
}

const LITTLE_ENDIAN_HOST = endianness() === 'LE';

// ---------------------------------------------------------------------------------------------
// f16 / bf16 conversions (Node 20 has no Float16Array)

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

let f16Table: Float32Array | undefined;

/** The f32 value of each of the 65,536 half-precision bit patterns, built on first use. */
function f16ToF32Table(): Float32Array {
  if (f16Table) return f16Table;
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >>> 10) & 0x1f;
    const man = h & 0x3ff;
    let v: number;
    if (exp === 0) v = man * 2 ** -24; // zero or subnormal
    else if (exp === 31) v = man === 0 ? Infinity : NaN;
    else v = (1 + man / 1024) * 2 ** (exp - 15);
    t[h] = sign * v;
  }
  f16Table = t;
  return t;
}

/** Half-precision bits → f32 value. */
export function f16BitsToF32(h: number): number {
  return f16ToF32Table()[h & 0xffff];
}

/** bfloat16 bits → f32 value (bf16 is the top half of an f32). */
export function bf16BitsToF32(h: number): number {
  u32Scratch[0] = (h & 0xffff) << 16;
  return f32Scratch[0];
}

/** Round half to even, for a non-negative value held exactly in f64. */
function roundHalfEven(v: number): number {
  const fl = Math.floor(v);
  const diff = v - fl;
  if (diff > 0.5) return fl + 1;
  if (diff < 0.5) return fl;
  return fl % 2 === 0 ? fl : fl + 1;
}

/**
 * f32 value → half-precision bits, rounding to nearest with ties to even (as IEEE casts do):
 * magnitudes from 65520 up become ±Inf, below 2⁻²⁵ become ±0, NaN stays a quiet NaN.
 */
export function f32ToF16Bits(x: number): number {
  f32Scratch[0] = x; // work on the f32 value, so f64 inputs round the way an f32 cast would
  const bits = u32Scratch[0];
  const a = Math.abs(f32Scratch[0]);
  const sign = (bits >>> 16) & 0x8000;
  if (Number.isNaN(a)) return sign | 0x7e00;
  if (a >= 65520) return sign | 0x7c00; // past the midpoint of 65504 and 2¹⁶: overflow
  if (a < 2 ** -14) {
    // subnormal range: multiples of 2⁻²⁴; a rounding up to 1024 lands on the smallest normal
    return sign | roundHalfEven(a * 2 ** 24);
  }
  const e = ((bits >>> 23) & 0xff) - 127; // a is a normal f32 here
  const mant = roundHalfEven((a * 2 ** -e - 1) * 1024); // exact in f64; may round up to 1024
  return sign | (((e + 15) << 10) + mant); // a carry into the exponent is the right answer
}

// ---------------------------------------------------------------------------------------------
// Parsing

function isNonNegInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

function product(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function fmtShape(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

const NOT_SAFETENSORS = 'is it a safetensors file? Re-create it or choose another file';
const CHOOSE_CHECKPOINT = 'give a .safetensors checkpoint, such as the best.safetensors that train-vim writes in its run folder';
const TORCH_ZIP = 'a zip archive, as PyTorch\'s torch.save writes (.pt, .pth)';
const TORCH_PICKLE = 'a Python pickle, as older PyTorch versions\' torch.save writes (.pt, .pth)';
const FROM_PYTORCH = 'load it in PyTorch and save it as safetensors with save_checkpoint in scripts/peer/vim_peer.py, whose parameter names are this project\'s';

/**
 * Validate a decoded header object against a data section of `dataLength` bytes.
 * `source` names the file in messages.
 */
function validateHeader(
  raw: unknown, dataLength: number, source: string, dataStart: number,
): SafetensorsHeader {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw VimError.at(source, 'the safetensors header is not a JSON object', NOT_SAFETENSORS);
  }
  const metadata: Record<string, string> = {};
  const tensors = new Map<string, TensorInfo>();
  for (const [name, entry] of Object.entries(raw as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) {
        throw VimError.at(source, '"__metadata__" in the header must be an object of strings');
      }
      for (const [k, v] of Object.entries(entry as Record<string, unknown>)) {
        if (typeof v !== 'string') {
          throw VimError.at(source, `metadata "${k}" must be a string but is ${JSON.stringify(v)}`);
        }
        metadata[k] = v;
      }
      continue;
    }
    const where = `tensor "${name}"`;
    if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) {
      throw VimError.at(source, `${where}: header entry must be an object with dtype, shape and data_offsets`);
    }
    const e = entry as Record<string, unknown>;
    if (typeof e.dtype !== 'string') throw VimError.at(source, `${where}: missing dtype`);
    if (!Object.hasOwn(BYTES_PER_ELEMENT, e.dtype)) {
      throw VimError.at(source, `${where}: dtype ${JSON.stringify(e.dtype)} is not supported`, 'only F32, F16 and BF16 tensors can be read');
    }
    const dtype = e.dtype as SafetensorsDtype;
    if (!Array.isArray(e.shape) || !e.shape.every(isNonNegInt)) {
      throw VimError.at(source, `${where}: shape must be an array of non-negative integers but is ${JSON.stringify(e.shape)}`);
    }
    const shape = e.shape as number[];
    const offs = e.data_offsets;
    if (!Array.isArray(offs) || offs.length !== 2 || !isNonNegInt(offs[0]) || !isNonNegInt(offs[1]) || offs[0] > offs[1]) {
      throw VimError.at(source, `${where}: data_offsets must be [begin, end] with 0 ≤ begin ≤ end but is ${JSON.stringify(offs)}`);
    }
    const [begin, end] = offs as [number, number];
    if (end > dataLength) {
      throw VimError.at(
        source,
        `${where}: its data ends at byte ${dataStart + end} but the file has only ${dataStart + dataLength} bytes`,
        'the file is truncated (an interrupted copy or download?); copy it again or use another file',
      );
    }
    const want = product(shape) * BYTES_PER_ELEMENT[dtype];
    if (end - begin !== want) {
      throw VimError.at(
        source,
        `${where}: data_offsets [${begin}, ${end}] span ${end - begin} bytes but shape ${fmtShape(shape)} of ${dtype} needs ${want}`,
        'the file is corrupt',
      );
    }
    tensors.set(name, { dtype, shape: [...shape], dataOffsets: [begin, end] });
  }
  // Tensors must not share bytes.
  const spans = [...tensors.entries()]
    .filter(([, t]) => t.dataOffsets[1] > t.dataOffsets[0])
    .sort((x, y) => x[1].dataOffsets[0] - y[1].dataOffsets[0]);
  for (let i = 1; i < spans.length; i++) {
    const [prevName, prev] = spans[i - 1];
    const [name, cur] = spans[i];
    if (cur.dataOffsets[0] < prev.dataOffsets[1]) {
      throw VimError.at(
        source,
        `tensors "${prevName}" ${JSON.stringify(prev.dataOffsets)} and "${name}" ${JSON.stringify(cur.dataOffsets)} overlap`,
        'the file is corrupt',
      );
    }
  }
  return { tensors, metadata, dataStart };
}

// ---------------------------------------------------------------------------------------------
// What kind of file: a safetensors checkpoint, or an ONNX model given where a checkpoint belongs
// (and the reverse, for the ONNX reader)

/** Bytes to read from the start of a file for looksLikeSafetensors and looksLikeOnnx. */
export const SNIFF_BYTES = 16;

/**
 * Whether the first bytes of a file have a safetensors file's shape: a u64 little-endian header
 * length below 2⁴⁰ (its top three bytes zero) and the JSON header's "{" right after it. A
 * truncated file counts too (its length field may point past the end).
 */
export function looksLikeSafetensors(first: Uint8Array): boolean {
  return first.length >= 9 && first[5] === 0 && first[6] === 0 && first[7] === 0 && first[8] === 0x7b; // '{'
}

/**
 * Whether the first bytes of a file are those of an ONNX ModelProto (protobuf): every writer puts
 * field 1, ir_version, first (tag 0x08, a one-byte varint between 3 and 100), and the next field is
 * another of ModelProto's (producer_name, producer_version, domain, model_version, doc_string,
 * graph, opset_import or metadata_props). A safetensors file can start with 0x08 too (a header of
 * 0x..08 bytes) but then has '{' at byte 8 and zeros before it, so looksLikeSafetensors is asked first.
 */
export function looksLikeOnnx(first: Uint8Array): boolean {
  if (first.length < 3 || looksLikeSafetensors(first)) return false;
  if (first[0] !== 0x08 || first[1] < 3 || first[1] > 100) return false;
  const tag = first[2];
  const field = tag >>> 3;
  const wire = tag & 7;
  return (field === 5 && wire === 0) || ([2, 3, 4, 6, 7, 8, 14].includes(field) && wire === 2);
}

/**
 * What the file at `path` looks like from its first bytes: 'safetensors', 'onnx' or 'other'
 * ('other' too where it cannot be read: the reader that follows says why).
 */
export function sniffModelFile(path: string): 'safetensors' | 'onnx' | 'other' {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch {
    return 'other';
  }
  try {
    const first = new Uint8Array(SNIFF_BYTES);
    const n = readSync(fd, first, 0, SNIFF_BYTES, 0);
    const got = first.subarray(0, n);
    return looksLikeSafetensors(got) ? 'safetensors' : looksLikeOnnx(got) ? 'onnx' : 'other';
  } catch {
    return 'other';
  } finally {
    closeSync(fd);
  }
}

/**
 * What a file that is not safetensors is, where its first bytes say so plainly: a PyTorch
 * checkpoint (a zip archive, or a pickle from older versions), an image, gzip data or JSON text;
 * undefined for anything else.
 */
export function otherFileKind(first: Uint8Array): string | undefined {
  const at = (offset: number, ...bytes: number[]): boolean => bytes.every((b, i) => first[offset + i] === b);
  const starts = (...bytes: number[]): boolean => at(0, ...bytes);
  if (starts(0x50, 0x4b, 0x03, 0x04)) return TORCH_ZIP;
  if (first[0] === 0x80 && first[1] >= 2 && first[1] <= 5) return TORCH_PICKLE; // pickle protocols 2–5
  if (starts(0x89, 0x50, 0x4e, 0x47)) return 'a PNG image';
  if (starts(0xff, 0xd8, 0xff)) return 'a JPEG image';
  if (starts(0x47, 0x49, 0x46, 0x38)) return 'a GIF image';
  if (starts(0x52, 0x49, 0x46, 0x46) && at(8, 0x57, 0x45, 0x42, 0x50)) return 'a WebP image'; // RIFF....WEBP
  if (starts(0x1f, 0x8b)) return 'gzip-compressed data';
  let i = 0;
  while (i < first.length && (first[i] === 0x20 || first[i] === 0x09 || first[i] === 0x0a || first[i] === 0x0d)) i++;
  if (i < first.length && (first[i] === 0x7b || first[i] === 0x5b) && first.every((b) => b >= 0x20 || b === 0x09 || b === 0x0a || b === 0x0d)) {
    return 'JSON text, such as a model config';
  }
  return undefined;
}

/** The error for an ONNX model given where a safetensors checkpoint belongs. */
function onnxNotSafetensors(source: string): never {
  throw new VimError(
    `${source} is an ONNX model, not a safetensors checkpoint: give the .safetensors checkpoint ` +
    '(eval-vim and predict-vim run an ONNX model with --onnx)',
    'it is an ONNX model, not a safetensors checkpoint',
  );
}

/**
 * Read the header length field from the file's first bytes (`first`: up to SNIFF_BYTES of them);
 * throws when it cannot be a safetensors header in `fileLength` bytes, or the file is ONNX.
 */
function headerLength(first: Uint8Array, fileLength: number, source: string): number {
  if (looksLikeOnnx(first)) onnxNotSafetensors(source);
  if (fileLength < 8) {
    throw VimError.at(source, `the file is ${fileLength} bytes long, too short for a safetensors header (8-byte length + JSON)`, NOT_SAFETENSORS);
  }
  const view = new DataView(first.buffer, first.byteOffset, 8);
  const n = view.getBigUint64(0, true);
  if (n > BigInt(fileLength - 8)) {
    const kind = otherFileKind(first);
    if (kind !== undefined) {
      throw VimError.at(source, `not a safetensors checkpoint: it is ${kind}`, kind === TORCH_ZIP || kind === TORCH_PICKLE ? FROM_PYTORCH : CHOOSE_CHECKPOINT);
    }
    throw VimError.at(
      source,
      `the header length field says ${n} bytes but only ${fileLength - 8} bytes follow it`,
      `the file is truncated or not safetensors; ${NOT_SAFETENSORS}`,
    );
  }
  return Number(n);
}

function decodeHeaderJson(bytes: Uint8Array, source: string): unknown {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw VimError.at(source, 'the safetensors header is not UTF-8 text', NOT_SAFETENSORS);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw VimError.at(source, `the safetensors header is not valid JSON (${(e as Error).message})`, NOT_SAFETENSORS);
  }
}

/** Widen one tensor's bytes (little-endian, `dtype`) to f32. */
function decodeTensor(bytes: Uint8Array, dtype: SafetensorsDtype, count: number): Float32Array {
  const out = new Float32Array(count);
  if (dtype === 'F32') {
    if (LITTLE_ENDIAN_HOST && bytes.byteOffset % 4 === 0) {
      out.set(new Float32Array(bytes.buffer, bytes.byteOffset, count));
    } else {
      const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      for (let i = 0; i < count; i++) out[i] = v.getFloat32(4 * i, true);
    }
    return out;
  }
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (dtype === 'F16') {
    const table = f16ToF32Table();
    for (let i = 0; i < count; i++) out[i] = table[v.getUint16(2 * i, true)];
  } else {
    // BF16: the 16 bits are the top half of the f32
    const u = new Uint32Array(out.buffer);
    for (let i = 0; i < count; i++) u[i] = v.getUint16(2 * i, true) << 16;
  }
  return out;
}

/**
 * Parse a whole safetensors file held in memory. `source` names it in error messages.
 * Throws VimError when the bytes are not a well-formed safetensors file.
 */
export function parseSafetensors(bytes: Uint8Array, source = 'safetensors data'): SafetensorsContent {
  const n = headerLength(bytes.subarray(0, SNIFF_BYTES), bytes.length, source);
  const raw = decodeHeaderJson(bytes.subarray(8, 8 + n), source);
  const dataStart = 8 + n;
  const header = validateHeader(raw, bytes.length - dataStart, source, dataStart);
  const tensors = new Map<string, LoadedTensor>();
  for (const [name, t] of header.tensors) {
    const [begin, end] = t.dataOffsets;
    const data = decodeTensor(bytes.subarray(dataStart + begin, dataStart + end), t.dtype, product(t.shape));
    tensors.set(name, { dtype: t.dtype, shape: t.shape, data });
  }
  return { tensors, metadata: header.metadata };
}

function readError(path: string, e: unknown): never {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') throw VimError.at(path, 'no such file', 'check the path');
  if (code === 'EISDIR') throw new VimError(`${path}: is a folder, not a safetensors file; pass the .safetensors file inside it`, 'it is a folder, not a safetensors file');
  if (code === 'EACCES' || code === 'EPERM') throw VimError.at(path, 'permission denied', "check the file's permissions");
  throw VimError.at(path, `cannot read the file (${(e as Error).message})`);
}

/** Read and parse a safetensors file. Throws VimError naming the file on any problem. */
export function readSafetensors(path: string): SafetensorsContent {
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch (e) {
    readError(path, e);
  }
  return parseSafetensors(bytes, path);
}

/** Read only the header of a safetensors file (names, dtypes, shapes, metadata), not the data. */
export function readSafetensorsHeader(path: string): SafetensorsHeader {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (e) {
    readError(path, e);
  }
  try {
    let size: number;
    try {
      size = statSync(path).size;
    } catch (e) {
      readError(path, e);
    }
    const first = new Uint8Array(Math.min(size, SNIFF_BYTES)); // a file shorter than 8 bytes: headerLength reports it
    readFully(fd, first, 0, path);
    const n = headerLength(first, size, path);
    const headerBytes = new Uint8Array(n);
    readFully(fd, headerBytes, 8, path);
    const raw = decodeHeaderJson(headerBytes, path);
    return validateHeader(raw, size - 8 - n, path, 8 + n);
  } finally {
    closeSync(fd);
  }
}

function readFully(fd: number, into: Uint8Array, position: number, path: string): void {
  let done = 0;
  while (done < into.length) {
    let got: number;
    try {
      got = readSync(fd, into, done, into.length - done, position + done);
    } catch (e) {
      readError(path, e);
    }
    if (got === 0) throw VimError.at(path, 'the file ended early', 'it is truncated; copy it again or use another file');
    done += got;
  }
}

// ---------------------------------------------------------------------------------------------
// Writing

/**
 * Serialise tensors and metadata to safetensors bytes. Tensors are laid out in the given order.
 * Throws Error (a caller bug, not a user problem) on a bad name, shape or data length.
 */
export function serializeSafetensors(
  tensors: readonly TensorToWrite[], metadata: Record<string, string> = {}, opts: WriteOptions = {},
): Uint8Array {
  const chunks = safetensorsChunks(tensors, metadata, opts);
  const out = new Uint8Array(chunks.reduce((a, c) => a + c.length, 0));
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

/**
 * The bytes of a safetensors file as consecutive pieces: the length and header, then each
 * tensor's data. An F32 tensor given as a Float32Array on a little-endian host is a view of the
 * caller's array, not a copy (the array must not change until the pieces are written); other
 * tensors are converted into new bytes. Throws as serializeSafetensors does.
 */
export function safetensorsChunks(
  tensors: readonly TensorToWrite[], metadata: Record<string, string> = {}, opts: WriteOptions = {},
): Uint8Array[] {
  const fileDtype = opts.dtype ?? 'F32';
  const header: Record<string, unknown> = {};
  const meta: Record<string, string> = {};
  for (const [k, v] of Object.entries(metadata)) {
    if (typeof v !== 'string') throw new Error(`safetensors metadata "${k}" must be a string`);
    meta[k] = v;
  }
  if (Object.keys(meta).length > 0) header.__metadata__ = meta;

  const seen = new Set<string>();
  const layout: { t: TensorToWrite; dtype: SafetensorsWriteDtype; count: number }[] = [];
  let offset = 0;
  for (const t of tensors) {
    if (t.name.length === 0 || t.name === '__metadata__') throw new Error(`invalid tensor name ${JSON.stringify(t.name)}`);
    if (seen.has(t.name)) throw new Error(`tensor "${t.name}" is listed twice`);
    seen.add(t.name);
    if (!t.shape.every(isNonNegInt)) throw new Error(`tensor "${t.name}": bad shape ${JSON.stringify(t.shape)}`);
    const count = product(t.shape);
    if (count !== t.data.length) {
      throw new Error(`tensor "${t.name}": shape ${fmtShape(t.shape)} needs ${count} values but data has ${t.data.length}`);
    }
    const dtype = t.dtype ?? fileDtype;
    if (dtype !== 'F32' && dtype !== 'F16') throw new Error(`tensor "${t.name}": cannot write dtype ${String(dtype)}`);
    const nbytes = count * BYTES_PER_ELEMENT[dtype];
    header[t.name] = { dtype, shape: t.shape, data_offsets: [offset, offset + nbytes] };
    layout.push({ t, dtype, count });
    offset += nbytes;
  }

  let json = JSON.stringify(header);
  const jsonBytes0 = new TextEncoder().encode(json);
  // Pad with spaces so that 8 + header length is a multiple of 8 (the data starts aligned).
  const pad = (8 - (jsonBytes0.length % 8)) % 8;
  json += ' '.repeat(pad);
  const jsonBytes = new TextEncoder().encode(json);

  const head = new Uint8Array(8 + jsonBytes.length);
  new DataView(head.buffer).setBigUint64(0, BigInt(jsonBytes.length), true);
  head.set(jsonBytes, 8);
  const chunks: Uint8Array[] = [head];
  for (const { t, dtype, count } of layout) {
    if (count === 0) continue;
    if (dtype === 'F32' && LITTLE_ENDIAN_HOST && t.data instanceof Float32Array) {
      chunks.push(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
    } else if (dtype === 'F32' && LITTLE_ENDIAN_HOST) {
      chunks.push(new Uint8Array(Float32Array.from(t.data).buffer)); // Float64 input rounds to f32 here
    } else {
      const bytes = new Uint8Array(count * BYTES_PER_ELEMENT[dtype]);
      const view = new DataView(bytes.buffer);
      if (dtype === 'F32') {
        for (let i = 0; i < count; i++) view.setFloat32(4 * i, t.data[i], true);
      } else {
        for (let i = 0; i < count; i++) view.setUint16(2 * i, f32ToF16Bits(t.data[i]), true);
      }
      chunks.push(bytes);
    }
  }
  return chunks;
}

/** A fresh temporary name next to `path` (hidden, with the process id, ending .tmp). */
function tempPath(path: string): string {
  return join(dirname(path), `.${basename(path)}.${process.pid}.${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}.tmp`);
}

/**
 * Why a file cannot be written at `path`, found before writing (the folder missing, a part of
 * its folder path not a folder, the path itself a folder, no permission to write in the folder),
 * or undefined where nothing stands in the way. Used by writeFileAtomic to explain a failure,
 * and by the commands to refuse an output path before the work that produces the file. With
 * `example` (a file name such as "model.onnx"), a path that is or names a folder is told so with
 * that name inside it as the file name to give.
 */
export function outputPathProblem(path: string, example?: string): string | undefined {
  if (path === '') return 'the path is empty; give a file name';
  const dir = dirname(path);
  const inFolder = example === undefined ? undefined : `it is a folder; give a file name such as ${join(path, example)}`;
  if (path.endsWith('/') || path.endsWith(sep)) return inFolder ?? 'it names a folder (it ends with a slash); give a file name';
  // the nearest part of the folder path that exists
  let at = dir;
  let st: Stats;
  for (;;) {
    try {
      st = statSync(at);
      break;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EACCES' || code === 'EPERM') return `permission denied in ${dir}; choose a folder you can write to`;
      const up = dirname(at);
      if ((code !== 'ENOENT' && code !== 'ENOTDIR') || up === at) return `the folder ${dir} cannot be used (${(e as Error).message})`;
      at = up;
    }
  }
  if (!st.isDirectory()) return `${at} is not a folder; choose another path`;
  if (at !== dir) return `the folder ${dir} does not exist; create it or choose another path`;
  try {
    if (statSync(path).isDirectory()) return inFolder ?? 'it is a folder; give a file name (inside it, or elsewhere)';
  } catch {
    // no file there yet: fine
  }
  try {
    accessSync(dir, constants.W_OK | constants.X_OK);
  } catch {
    return `permission denied in ${dir}; choose a folder you can write to`;
  }
  return undefined;
}

/** The VimError for a failed write of `path` through the temporary file `tmp`: names `path`, never `tmp`. */
function writeError(path: string, tmp: string, e: unknown): never {
  const code = (e as NodeJS.ErrnoException).code;
  const dir = dirname(path);
  if (code === 'ENOSPC' || code === 'EDQUOT') throw new VimError(`cannot write ${path}: the disk is full; free some space`);
  if (code === 'EROFS') throw new VimError(`cannot write ${path}: ${dir} is on a read-only file system; choose another folder`);
  if (code === 'ENAMETOOLONG') throw new VimError(`cannot write ${path}: the file name is too long; choose a shorter one`);
  const problem = outputPathProblem(path);
  if (problem !== undefined) throw new VimError(`cannot write ${path}: ${problem}`);
  if (code === 'ENOENT') throw new VimError(`cannot write ${path}: the folder ${dir} does not exist; create it or choose another path`);
  if (code === 'EACCES' || code === 'EPERM') {
    throw new VimError(`cannot write ${path}: permission denied in ${dir}; choose a folder you can write to`);
  }
  if (code === 'EISDIR') throw new VimError(`cannot write ${path}: it is a folder; choose a file name`);
  const why = ((e as Error).message ?? String(e)).split(tmp).join(path);
  throw new VimError(`cannot write ${path} (${why})`);
}

/**
 * Write bytes to `path` atomically: a temporary file in the same folder, fsync, rename over the
 * target, then fsync the folder so the rename itself survives a crash. On failure the temporary
 * file is removed and any previous file at `path` is left as it was.
 */
export function writeFileAtomic(path: string, bytes: Uint8Array): void {
  const dir = dirname(path);
  const tmp = tempPath(path);
  let fd: number | undefined;
  try {
    fd = openSync(tmp, 'wx');
    let done = 0;
    while (done < bytes.length) done += writeSync(fd, bytes, done, bytes.length - done);
    fsyncSync(fd);
    closeSync(fd);
    fd = undefined;
    renameSync(tmp, path);
  } catch (e) {
    if (fd !== undefined) {
      try { closeSync(fd); } catch { /* already failing; the original error matters */ }
    }
    try { unlinkSync(tmp); } catch { /* it may never have been created */ }
    writeError(path, tmp, e);
  }
  // Persist the rename. Folders cannot be opened for fsync everywhere (Windows); that is fine.
  try {
    const dfd = openSync(dir, 'r');
    try { fsyncSync(dfd); } finally { closeSync(dfd); }
  } catch { /* best effort */ }
}

/** Temporary files of writeFileAtomicAsync calls in progress. */
const pendingTemps = new Set<string>();

/**
 * writeFileAtomic without blocking the event loop: the writes, the fsyncs and the rename run on
 * Node's thread pool while the caller goes on. `data` may come in pieces (safetensorsChunks),
 * written in order as one file; they must not change until the promise settles. Rejects with the
 * same VimError as writeFileAtomic, leaving any previous file at `path` as it was.
 */
export async function writeFileAtomicAsync(path: string, data: Uint8Array | readonly Uint8Array[]): Promise<void> {
  const tmp = tempPath(path);
  let chunks = (data instanceof Uint8Array ? [data] : [...data]).filter((c) => c.length > 0);
  let fh: Awaited<ReturnType<typeof open>> | undefined;
  pendingTemps.add(tmp);
  try {
    fh = await open(tmp, 'wx');
    while (chunks.length > 0) {
      let { bytesWritten } = await fh.writev(chunks.slice(0, 1024)); // IOV_MAX pieces a call
      if (bytesWritten === 0) throw new Error('the file system took no bytes');
      while (chunks.length > 0 && bytesWritten >= chunks[0].length) bytesWritten -= chunks.shift()!.length;
      if (bytesWritten > 0) chunks[0] = chunks[0].subarray(bytesWritten);
    }
    await fh.sync();
    await fh.close();
    fh = undefined;
    await rename(tmp, path);
  } catch (e) {
    if (fh !== undefined) {
      try { await fh.close(); } catch { /* already failing; the original error matters */ }
    }
    try { await unlink(tmp); } catch { /* it may never have been created */ }
    writeError(path, tmp, e);
  } finally {
    pendingTemps.delete(tmp);
  }
  try {
    const dh = await open(dirname(path), 'r');
    try { await dh.sync(); } finally { await dh.close(); }
  } catch { /* best effort, as in writeFileAtomic */ }
}

/**
 * Remove the temporary files of writeFileAtomicAsync calls still in progress, for a process about
 * to exit at once (the targets keep their previous contents; nothing half-written stays behind).
 */
export function removePendingTemps(): void {
  for (const tmp of pendingTemps) {
    try { unlinkSync(tmp); } catch { /* not created yet, or already renamed */ }
  }
  pendingTemps.clear();
}

/**
 * Write a safetensors file atomically. Throws VimError naming the file when it cannot be
 * written (missing folder, permissions, full disk).
 */
export function writeSafetensors(
  path: string, tensors: readonly TensorToWrite[], metadata: Record<string, string> = {}, opts: WriteOptions = {},
): void {
  writeFileAtomic(path, serializeSafetensors(tensors, metadata, opts));
}
