/**
 * Run an exported Vim with onnxruntime-node: load the file, read what it is from its metadata,
 * classify batches of u8 images.
 *
 * Shape letters: B batch, C classes, H = W image side. Images are (B, 3, H, W) u8 CHW planes,
 * as CIFAR-10 stores them; the model takes float32 in 0…1 and normalises inside its graph.
 */
import { readFileSync, statSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import type * as Ort from 'onnxruntime-node';
import { VimError } from '../errors.js';
import { looksLikeSafetensors, otherFileKind, SNIFF_BYTES } from '../io/safetensors.js';
import { resolveConfig, type VimConfig } from '../model/config.js';
import { Rng } from '../rng.js';
import { INPUT_NAME, ONNX_FORMAT, OUTPUT_NAME } from './export.js';
import { decodeModelInfo } from './proto.js';

/** What a file says about itself, read without decoding its graph. */
export interface OnnxVimMetadata {
  irVersion: number;
  opset: number;
  producer: string;
  /** Every metadata_props entry, as stored (JSON values as text). */
  props: Record<string, string>;
  /** The model config from the "config" entry. */
  cfg: VimConfig;
  classNames: string[];
}

function readBytes(path: string): Uint8Array {
  let isFile: boolean;
  try {
    isFile = statSync(path).isFile();
  } catch {
    throw new VimError(`${path}: no such file; give the path of a .onnx file written by export-vim`);
  }
  if (!isFile) throw new VimError(`${path} is not a file; give the path of a .onnx file written by export-vim`);
  const buf = readFileSync(path);
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
}

/** What a file that is not ONNX is, where its first bytes say so; otherwise why it was refused. */
function kindOf(first: Uint8Array, why: string): string {
  const kind = otherFileKind(first);
  return kind === undefined ? why : `it is ${kind}`;
}

/**
 * The metadata of an ONNX file written by export-vim. A file that is not an ONNX model, or one
 * that export-vim did not write (no config in its metadata), is refused with a VimError; one that
 * is a safetensors checkpoint (whatever its name) is told to go to --checkpoint.
 */
export function readOnnxMetadata(pathOrBytes: string | Uint8Array, label?: string): OnnxVimMetadata {
  const bytes = typeof pathOrBytes === 'string' ? readBytes(pathOrBytes) : pathOrBytes;
  const where = label ?? (typeof pathOrBytes === 'string' ? pathOrBytes : 'the model');
  const first = bytes.subarray(0, SNIFF_BYTES);
  const notOnnx = (why: string) => looksLikeSafetensors(first)
    ? new VimError(`${where} is not an ONNX model: it looks like a safetensors checkpoint; pass it with --checkpoint`)
    : new VimError(`${where} is not an ONNX model: ${kindOf(first, why)}; give a .onnx file written by export-vim`);
  if (bytes.length === 0) throw notOnnx('the file is empty');
  let info;
  try {
    info = decodeModelInfo(bytes);
  } catch (e) {
    throw notOnnx(`it does not parse as an ONNX ModelProto (${(e as Error).message}), so it is another kind of file or a damaged one`);
  }
  const opset = (info.opset_import ?? []).find((o) => (o.domain ?? '') === '')?.version;
  if (!info.ir_version || info.ir_version < 3 || info.ir_version > 100 || !info.graph || info.graph.length === 0 || opset === undefined) {
    throw notOnnx('it has no IR version, graph or opset');
  }
  const props: Record<string, string> = {};
  for (const e of info.metadata_props ?? []) props[e.key] = e.value;
  if (props.config === undefined) {
    throw new VimError(
      `${where} is an ONNX model but not one written by export-vim (its metadata holds no Vim config); ` +
      'export the checkpoint again with export-vim',
    );
  }
  let raw: unknown;
  try {
    raw = JSON.parse(props.config);
  } catch (e) {
    throw new VimError(`${where}: the "config" in its metadata is not valid JSON (${(e as Error).message}); the file is damaged, export it again`);
  }
  const cfg = resolveConfig(raw, `${where} (model config in the metadata)`);
  let classNames = cfg.classNames;
  if (props.class_names !== undefined) {
    try {
      const names: unknown = JSON.parse(props.class_names);
      if (Array.isArray(names) && names.length === cfg.C && names.every((s) => typeof s === 'string')) classNames = names as string[];
    } catch {
      // keep the config's names
    }
  }
  return { irVersion: info.ir_version, opset, producer: info.producer_name ?? '', props, cfg, classNames };
}

/**
 * onnxruntime-node, loaded on first use: the commands that run on WebGPU (train-vim, eval-vim
 * --checkpoint) start without it, and work where it is not installed.
 */
let ortModule: typeof Ort | undefined;
async function loadOrt(): Promise<typeof Ort> {
  if (!ortModule) {
    try {
      ortModule = await import('onnxruntime-node');
    } catch (e) {
      throw new VimError(`onnxruntime-node could not be loaded (${(e as Error).message.split('\n')[0]}); install the project's packages with npm ci`);
    }
  }
  return ortModule;
}
function ort(): typeof Ort {
  if (!ortModule) throw new Error('onnxruntime-node is used before loadOrt()');
  return ortModule;
}

/**
 * "onnxruntime-node 1.30.0 on the CPU (2 cores)", for logs; with `workers` sessions at once of
 * `threads` threads each, "… (2 cores: 2 sessions at once, 1 thread each)".
 */
export function describeOnnxRuntime(threads?: number, workers?: number): string {
  const n = availableParallelism();
  const plural = (k: number, what: string) => `${k} ${what}${k === 1 ? '' : 's'}`;
  const how = workers !== undefined && workers > 1
    ? `${plural(n, 'core')}: ${workers} sessions at once, ${plural(threads ?? 1, 'thread')} each`
    : threads !== undefined ? `${plural(threads, 'thread')} of ${n} cores` : plural(n, 'core');
  const v = ortModule ? ` ${ortModule.env.versions.node ?? ortModule.env.versions.common}` : '';
  return `onnxruntime-node${v} on the CPU (${how})`;
}

/** u8 images (B, 3, H, W) → float32 in 0…1, the model's input. */
export function imagesToPixels(images: Uint8Array): Float32Array {
  const out = new Float32Array(images.length);
  for (let i = 0; i < images.length; i++) out[i] = images[i]! / 255;
  return out;
}

/** A batch of B u8 images (B, 3, H, H), checked, as the model's float32 input (a new array). */
export function u8BatchPixels(images: Uint8Array, B: number, H: number): Float32Array {
  if (!Number.isInteger(B) || B < 1) throw new VimError(`expected a positive integer batch size but received ${B}`);
  if (images.length !== B * 3 * H * H) {
    throw new VimError(`expected ${B * 3 * H * H} bytes for a (${B}, 3, ${H}, ${H}) u8 batch but received ${images.length}`);
  }
  return imagesToPixels(images);
}

export interface OnnxVimOptions {
  /** Threads for one run (default: onnxruntime's choice, all cores). */
  threads?: number;
  /**
   * onnxruntime graph optimisation level (default 'basic': its constant folding and fusions;
   * 'extended' and 'all' add passes that cost 30-40 ms a session and gain nothing on this graph,
   * docs/performance.md "ONNX session creation").
   */
  optimization?: 'disabled' | 'basic' | 'extended' | 'all';
}

/** The onnxruntime session options of an OnnxVim (and of each OnnxWorkerPool session): plain data. */
export function sessionOptions(opts: OnnxVimOptions): Ort.InferenceSession.SessionOptions {
  const options: Ort.InferenceSession.SessionOptions = {
    executionProviders: ['cpu'],
    graphOptimizationLevel: opts.optimization ?? 'basic',
  };
  if (opts.threads !== undefined) {
    if (!Number.isInteger(opts.threads) || opts.threads < 1) {
      throw new VimError(`expected a positive integer for threads but received ${opts.threads}`);
    }
    options.intraOpNumThreads = opts.threads;
  }
  return options;
}

/** An exported Vim loaded in onnxruntime-node. */
export class OnnxVim {
  private constructor(
    readonly path: string,
    private readonly session: Ort.InferenceSession,
    readonly meta: OnnxVimMetadata,
    /** Milliseconds to create the inference session (parse, optimise, allocate), the file already read. */
    readonly sessionMs: number,
    /** Milliseconds for the whole load: read the file, its metadata, and the session. */
    readonly loadMs: number,
    /** The model file's bytes, for more sessions of it (OnnxWorkerPool). */
    readonly bytes: Uint8Array,
  ) {}

  get cfg(): VimConfig {
    return this.meta.cfg;
  }

  get classNames(): string[] {
    return this.meta.classNames;
  }

  static async load(path: string, opts: OnnxVimOptions = {}): Promise<OnnxVim> {
    const t0 = performance.now();
    return OnnxVim.create(readBytes(path), path, opts, t0);
  }

  /**
   * A model already in memory (e.g. buildVimOnnx's bytes, never written to disk); `label` names
   * it in messages.
   */
  static async fromBytes(bytes: Uint8Array, label: string, opts: OnnxVimOptions = {}): Promise<OnnxVim> {
    return OnnxVim.create(bytes, label, opts, performance.now());
  }

  private static async create(bytes: Uint8Array, path: string, opts: OnnxVimOptions, t0: number): Promise<OnnxVim> {
    const meta = readOnnxMetadata(bytes, path);
    const ort = await loadOrt();
    const options = sessionOptions(opts);
    const t1 = performance.now();
    let session: Ort.InferenceSession;
    try {
      session = await ort.InferenceSession.create(bytes, options);
    } catch (e) {
      throw new VimError(`${path} could not be loaded by onnxruntime: ${(e as Error).message}; export it again with export-vim`);
    }
    const t2 = performance.now();
    if (!session.inputNames.includes(INPUT_NAME) || !session.outputNames.includes(OUTPUT_NAME)) {
      await session.release();
      throw new VimError(
        `${path} has inputs [${session.inputNames.join(', ')}] and outputs [${session.outputNames.join(', ')}], ` +
        `not "${INPUT_NAME}" → "${OUTPUT_NAME}"; export it again with export-vim`,
      );
    }
    if (meta.props.format !== undefined && meta.props.format !== ONNX_FORMAT) {
      await session.release();
      throw new VimError(`${path}: its metadata says format "${meta.props.format}", not "${ONNX_FORMAT}"; export it again with export-vim`);
    }
    return new OnnxVim(path, session, meta, t2 - t1, t2 - t0, bytes);
  }

  /** Logits (B, C) for float32 pixels (B, 3, H, W) in 0…1. */
  async runPixels(pixels: Float32Array, B: number): Promise<Float32Array> {
    const { imgSize: H, C } = this.meta.cfg;
    if (!Number.isInteger(B) || B < 1) throw new VimError(`expected a positive integer batch size but received ${B}`);
    if (pixels.length !== B * 3 * H * H) {
      throw new VimError(`expected ${B * 3 * H * H} values for a (${B}, 3, ${H}, ${H}) batch but received ${pixels.length}`);
    }
    const input = new (ort().Tensor)('float32', pixels, [B, 3, H, H]);
    const out = await this.session.run({ [INPUT_NAME]: input });
    const logits = out[OUTPUT_NAME];
    if (!logits || !(logits.data instanceof Float32Array) || logits.data.length !== B * C) {
      throw new Error(`OnnxVim: ${this.path} returned no (${B}, ${C}) float32 logits`);
    }
    return logits.data;
  }

  /** Logits (B, C) for u8 images (B, 3, H, W) CHW. */
  async run(images: Uint8Array, B: number): Promise<Float32Array> {
    return this.runPixels(u8BatchPixels(images, B, this.meta.cfg.imgSize), B);
  }

  /** The most likely class of each image and its logits. */
  async classify(images: Uint8Array, B: number): Promise<{ logits: Float32Array; classes: number[]; names: string[] }> {
    const logits = await this.run(images, B);
    const { C } = this.meta.cfg;
    const classes: number[] = [];
    for (let b = 0; b < B; b++) {
      let best = 0;
      for (let c = 1; c < C; c++) if (logits[b * C + c]! > logits[b * C + best]!) best = c;
      classes.push(best);
    }
    return { logits, classes, names: classes.map((c) => this.meta.classNames[c]!) };
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}

export interface OnnxBenchResult {
  /** Session creation, ms (the file already in memory). */
  sessionMs: number;
  /** The whole load (read, metadata, session), ms. */
  loadMs: number;
  batch: number;
  iterations: number;
  /** Mean time of one batch, ms, after one warm-up run. */
  msPerBatch: number;
  imagesPerSecond: number;
}

/** Load `path`, run `iterations` batches of `batch` random images after a warm-up, and time it. */
export async function benchOnnx(path: string, batch: number, iterations: number, opts: OnnxVimOptions = {}): Promise<OnnxBenchResult> {
  if (!Number.isInteger(batch) || batch < 1) throw new VimError(`expected a positive integer batch size but received ${batch}`);
  if (!Number.isInteger(iterations) || iterations < 1) throw new VimError(`expected a positive integer for iterations but received ${iterations}`);
  const model = await OnnxVim.load(path, opts);
  try {
    const { imgSize: H } = model.cfg;
    const rng = new Rng(1234);
    const images = new Uint8Array(batch * 3 * H * H);
    for (let i = 0; i < images.length; i++) images[i] = rng.nextU32() & 255;
    const pixels = imagesToPixels(images);
    await model.runPixels(pixels, batch); // warm-up: first-run allocations
    const t0 = performance.now();
    for (let i = 0; i < iterations; i++) await model.runPixels(pixels, batch);
    const ms = (performance.now() - t0) / iterations;
    return {
      sessionMs: model.sessionMs, loadMs: model.loadMs, batch, iterations, msPerBatch: ms, imagesPerSecond: (batch * 1000) / ms,
    };
  } finally {
    await model.release();
  }
}
