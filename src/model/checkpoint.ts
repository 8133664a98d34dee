/**
 * Model checkpoints: a safetensors file with every parameter under its PyTorch Vim name and
 * shape (so it maps onto the hustvl/Vim state dict key for key), and `__metadata__` saying
 * what the tensors are:
 *   "format":  "vim-webgpu"                 (plain string)
 *   "config":  the model config as JSON      (configToJson; enough to rebuild the layout)
 *   "recipe", "metrics", …: anything else the caller passes, each value as a JSON string.
 *
 * A training-state checkpoint stores more tensors next to the parameters (optimizer moments);
 * they go in through `extra` and come back for the prefixes the loader names.
 */
import { VimError } from '../errors.js';
import {
  readSafetensors, readSafetensorsHeader, safetensorsChunks, writeSafetensors,
  type LoadedTensor, type SafetensorsWriteDtype, type TensorToWrite,
} from '../io/safetensors.js';
import { configToJson, resolveConfig, sameArchitecture, type VimConfig, type VimConfigFile } from './config.js';
import { DIRECTION_NAMES, ParamSet, paramSpecs } from './params.js';

/** The value of the "format" metadata key in files this project writes. */
export const CHECKPOINT_FORMAT = 'vim-webgpu';

/** What goes into a checkpoint's metadata besides the tensors. */
export interface CheckpointMetaInput {
  /** The model config; defaults to configToJson(params.cfg) and must describe the same layout. */
  config?: VimConfigFile;
  /** The training recipe (optimizer, schedule, augmentation, seed, …). */
  recipe?: unknown;
  /** Results (accuracy, loss, epoch, …). */
  metrics?: unknown;
  /** Anything else JSON-serialisable; each key becomes one metadata entry. */
  [key: string]: unknown;
}

/** The metadata of a loaded checkpoint, each JSON value parsed back. */
export interface CheckpointMeta {
  format?: string;
  config: VimConfigFile;
  recipe?: unknown;
  metrics?: unknown;
  [key: string]: unknown;
}

export interface SaveOptions {
  /**
   * Storage dtype of the tensors; default 'F32'. F16 halves the file at a precision cost, except
   * for A_log and A_b_log, which stay F32 (the decays are exp(Δ·−exp(A_log)): rounding their logs
   * to f16 would move every decay by up to 1e-3 of itself, and they are 4% of the parameters).
   */
  dtype?: SafetensorsWriteDtype;
  /** More tensors to store next to the parameters (e.g. "optim.m.<param>"); names must not clash. */
  extra?: readonly TensorToWrite[];
}

export interface LoadOptions {
  /**
   * Tensors whose names start with one of these prefixes are returned in `extra` instead of
   * being refused as unexpected (e.g. ["optim."] for a training-state checkpoint).
   */
  extraPrefixes?: readonly string[];
}

export interface LoadedCheckpoint {
  /** The config the checkpoint was saved with (from its metadata). */
  cfg: VimConfig;
  /** Every parameter, widened to f32 whatever the stored dtype. */
  params: ParamSet<Float32Array>;
  meta: CheckpointMeta;
  /** The tensors that matched LoadOptions.extraPrefixes, by name. */
  extra: Map<string, LoadedTensor>;
}

/** A one-line description of an architecture, for messages: "vim-tiny (D=192, depth 24, …)". */
export function describeConfig(cfg: VimConfig): string {
  return `${cfg.name} (D=${cfg.D}, depth ${cfg.depth}, N=${cfg.N}, E=${cfg.E}, R=${cfg.R}, K=${cfg.K}, ` +
    `patch ${cfg.P} on ${cfg.imgSize}×${cfg.imgSize} images, ${cfg.C} classes)`;
}

function fmtShape(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

/**
 * Save parameters (and optional extra tensors) with their config and any metadata, atomically.
 * Throws VimError when the file cannot be written, Error when the arguments disagree (a bug).
 */
export function saveCheckpoint(
  path: string,
  params: ParamSet<Float32Array> | ParamSet<Float64Array>,
  meta: CheckpointMetaInput = {},
  opts: SaveOptions = {},
): void {
  const { tensors, metadata, dtype } = checkpointContents(params, meta, opts);
  writeSafetensors(path, tensors, metadata, { dtype });
}

/**
 * The bytes saveCheckpoint writes, as pieces for writeFileAtomicAsync (see safetensorsChunks: the
 * f32 tensors are views of `params` and `opts.extra`, which must not change until they are written).
 */
export function checkpointChunks(
  params: ParamSet<Float32Array> | ParamSet<Float64Array>,
  meta: CheckpointMetaInput = {},
  opts: SaveOptions = {},
): Uint8Array[] {
  const { tensors, metadata, dtype } = checkpointContents(params, meta, opts);
  return safetensorsChunks(tensors, metadata, { dtype });
}

function checkpointContents(
  params: ParamSet<Float32Array> | ParamSet<Float64Array>, meta: CheckpointMetaInput, opts: SaveOptions,
): { tensors: TensorToWrite[]; metadata: Record<string, string>; dtype: SafetensorsWriteDtype } {
  const config = meta.config ?? configToJson(params.cfg);
  if (!sameArchitecture(resolveConfig(config, 'checkpoint config'), params.cfg)) {
    throw new Error(`saveCheckpoint: meta.config describes another architecture than the parameters (${params.cfg.name})`);
  }
  const metadata: Record<string, string> = { format: CHECKPOINT_FORMAT, config: JSON.stringify(config) };
  for (const [k, v] of Object.entries(meta)) {
    if (k === 'config' || v === undefined) continue;
    if (k === 'format') throw new Error('saveCheckpoint: "format" is reserved');
    metadata[k] = JSON.stringify(v);
  }
  const keepF32 = (name: string) => DIRECTION_NAMES.ALog.some((n) => name.endsWith(`.${n}`));
  const tensors: TensorToWrite[] = params.specs.map((s) => ({
    name: s.name, shape: s.shape, data: params.get(s.name), ...(keepF32(s.name) ? { dtype: 'F32' as const } : {}),
  }));
  for (const t of opts.extra ?? []) {
    if (params.has(t.name)) throw new Error(`saveCheckpoint: extra tensor "${t.name}" clashes with a parameter`);
    tensors.push(t);
  }
  return { tensors, metadata, dtype: opts.dtype ?? 'F32' };
}

/** Parse each metadata value as JSON where it is JSON, keeping plain strings (like "format") as they are. */
function parseMetadata(metadata: Record<string, string>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(metadata)) {
    if (k === 'format') {
      out[k] = v;
      continue;
    }
    try {
      out[k] = JSON.parse(v);
    } catch {
      out[k] = v;
    }
  }
  return out;
}

/**
 * The config a checkpoint was saved with. A file without one (e.g. converted from the PyTorch
 * Vim) is read as `expected` when that is given.
 */
function checkpointConfig(path: string, metadata: Record<string, string>, expected?: VimConfig): VimConfig {
  const text = metadata.config;
  if (text === undefined) {
    if (expected) return expected;
    throw VimError.at(
      path, "the checkpoint's metadata holds no model config, so its architecture is unknown",
      'pass --model with the config it was trained with, or use a checkpoint saved by train-vim',
    );
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw VimError.at(path, `the "config" in the checkpoint's metadata is not valid JSON (${(e as Error).message})`, 'the file is damaged');
  }
  return resolveConfig(raw, `${path} (model config in the metadata)`);
}

/** Read a checkpoint's config and metadata without loading its tensors. */
export function readCheckpointInfo(path: string, expected?: VimConfig): { cfg: VimConfig; meta: CheckpointMeta } {
  const header = readSafetensorsHeader(path);
  const cfg = checkpointConfig(path, header.metadata, expected);
  const meta = { ...parseMetadata(header.metadata), config: configToJson(cfg) } as CheckpointMeta;
  return { cfg, meta };
}

/**
 * Load a checkpoint. With `expected`, a checkpoint of another architecture is refused with a
 * message naming both. Every parameter of the config must be present with its exact shape and
 * nothing else may be in the file (except tensors under opts.extraPrefixes); otherwise a
 * VimError names the tensor, the expected shape and the one found.
 */
export function loadCheckpoint(path: string, expected?: VimConfig, opts: LoadOptions = {}): LoadedCheckpoint {
  const file = readSafetensors(path);
  const cfg = checkpointConfig(path, file.metadata, expected);
  if (expected && !sameArchitecture(cfg, expected)) {
    const what = `was trained for ${describeConfig(cfg)}, but the model is ${describeConfig(expected)}`;
    throw new VimError(`checkpoint ${path} ${what}: pass --model ${cfg.name} or another checkpoint`, `it ${what}`);
  }

  const params = ParamSet.zeros32(cfg);
  const problems: string[] = [];
  for (const spec of paramSpecs(cfg)) {
    const t = file.tensors.get(spec.name);
    if (!t) {
      problems.push(`tensor "${spec.name}" is missing (expected shape ${fmtShape(spec.shape)})`);
      continue;
    }
    const same = t.shape.length === spec.shape.length && t.shape.every((d, i) => d === spec.shape[i]);
    if (!same) {
      problems.push(`tensor "${spec.name}" has shape ${fmtShape(t.shape)} but ${cfg.name} expects ${fmtShape(spec.shape)}`);
      continue;
    }
    params.flat.set(t.data, spec.offset);
  }
  const extra = new Map<string, LoadedTensor>();
  const prefixes = opts.extraPrefixes ?? [];
  for (const [name, t] of file.tensors) {
    if (params.has(name)) continue;
    if (prefixes.some((p) => name.startsWith(p))) {
      extra.set(name, t);
      continue;
    }
    problems.push(`unexpected tensor "${name}" (shape ${fmtShape(t.shape)}) that ${cfg.name} has no parameter for`);
  }
  if (problems.length > 0) {
    const shown = problems.slice(0, 6).join('; ');
    const more = problems.length > 6 ? `; and ${problems.length - 6} more` : '';
    const what = `does not match its config ${describeConfig(cfg)}: ${shown}${more}`;
    throw new VimError(
      `checkpoint ${path} ${what}. The file is damaged or was written for another model; use a checkpoint saved for this config`,
      `it ${what}`,
    );
  }

  const meta = { ...parseMetadata(file.metadata), config: configToJson(cfg) } as CheckpointMeta;
  return { cfg, params, meta, extra };
}
