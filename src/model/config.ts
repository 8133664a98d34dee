/**
 * Vim model configuration: the JSON files in models/ and what follows from them.
 *
 * Shape letters used across the project:
 *   B batch, L tokens (patches + 1 class token), D model width, E inner width (expand·D),
 *   N state size, R Δ rank, K conv width, C classes, P patch size.
 */
import { readFileSync, existsSync, readdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { VimError } from '../errors.js';

export const CIFAR10_CLASSES = [
  'airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck',
] as const;

/** Per-channel mean and std of the CIFAR-10 training set (0…1 scale), used to normalise inputs. */
export const CIFAR10_MEAN = [125.307 / 255, 122.95 / 255, 113.865 / 255] as const;
export const CIFAR10_STD = [62.993 / 255, 62.089 / 255, 66.705 / 255] as const;

/** The config as written in a models/*.json file. */
export interface VimConfigFile {
  name: string;
  img_size?: number;
  in_chans?: number;
  patch_size: number;
  embed_dim: number;
  depth: number;
  d_state?: number;
  expand?: number;
  d_conv?: number;
  dt_rank?: number | 'auto';
  num_classes?: number;
  norm_eps?: number;
  dt_min?: number;
  dt_max?: number;
  dt_init_floor?: number;
  class_names?: string[];
}

/** A validated config with every size resolved. */
export interface VimConfig {
  name: string;
  imgSize: number; // H = W
  inChans: number; // 3
  P: number; // patch size
  D: number; // model width
  depth: number; // number of Vim blocks
  N: number; // SSM state size
  expand: number;
  E: number; // inner width, expand·D
  K: number; // depthwise conv width
  R: number; // Δ rank
  C: number; // classes
  Np: number; // patch tokens, (imgSize/P)²
  L: number; // tokens, Np + 1
  clsPos: number; // index of the middle class token, floor(Np/2)
  normEps: number;
  dtMin: number;
  dtMax: number;
  dtInitFloor: number;
  classNames: string[];
}

const here = dirname(fileURLToPath(import.meta.url));
/** The package's models/ folder (works from src/ under vitest and from dist/ when built). */
export const MODELS_DIR = resolve(here, '..', '..', 'models');

function posInt(key: string, value: unknown, where: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value <= 0) {
    throw VimError.at(where, `expected a positive integer for ${key} but received ${JSON.stringify(value)}`);
  }
  return value;
}

function posNum(key: string, value: unknown, where: string): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    throw VimError.at(where, `expected a positive number for ${key} but received ${JSON.stringify(value)}`);
  }
  return value;
}

/** Validate a config object and resolve every size; throws VimError naming the bad field. */
export function resolveConfig(raw: unknown, where = 'model config'): VimConfig {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw VimError.at(where, 'expected a JSON object');
  }
  const c = raw as Record<string, unknown>;
  const known = new Set([
    'name', 'img_size', 'in_chans', 'patch_size', 'embed_dim', 'depth', 'd_state', 'expand', 'd_conv',
    'dt_rank', 'num_classes', 'norm_eps', 'dt_min', 'dt_max', 'dt_init_floor', 'class_names', 'description',
  ]);
  for (const k of Object.keys(c)) {
    if (!known.has(k)) throw VimError.at(where, `unknown field "${k}" (known: ${[...known].join(', ')})`);
  }
  const name = typeof c.name === 'string' && c.name.length > 0 ? c.name : 'vim';
  const imgSize = posInt('img_size', c.img_size ?? 32, where);
  const inChans = posInt('in_chans', c.in_chans ?? 3, where);
  if (inChans !== 3) throw VimError.at(where, `in_chans must be 3 (RGB images); received ${inChans}`);
  const P = posInt('patch_size', c.patch_size, where);
  const D = posInt('embed_dim', c.embed_dim, where);
  const depth = posInt('depth', c.depth, where);
  const N = posInt('d_state', c.d_state ?? 16, where);
  const expand = posInt('expand', c.expand ?? 2, where);
  const K = posInt('d_conv', c.d_conv ?? 4, where);
  const C = posInt('num_classes', c.num_classes ?? 10, where);
  const R = c.dt_rank === undefined || c.dt_rank === 'auto' ? Math.ceil(D / 16) : posInt('dt_rank', c.dt_rank, where);
  const normEps = posNum('norm_eps', c.norm_eps ?? 1e-5, where);
  const dtMin = posNum('dt_min', c.dt_min ?? 1e-3, where);
  const dtMax = posNum('dt_max', c.dt_max ?? 1e-1, where);
  const dtInitFloor = posNum('dt_init_floor', c.dt_init_floor ?? 1e-4, where);
  if (imgSize % P !== 0) {
    throw VimError.at(where, `patch_size ${P} does not divide img_size ${imgSize}`, 'choose a divisor such as 2, 4 or 8');
  }
  if (dtMin >= dtMax) throw VimError.at(where, `dt_min (${dtMin}) must be below dt_max (${dtMax})`);
  if (K < 2) throw VimError.at(where, `d_conv must be at least 2; received ${K}`);
  const Np = (imgSize / P) ** 2;
  if (Np < 2) throw VimError.at(where, `patch_size ${P} leaves ${Np} patch`, 'need at least 2 patches');
  let classNames: string[];
  if (c.class_names !== undefined) {
    if (!Array.isArray(c.class_names) || c.class_names.some((s) => typeof s !== 'string')) {
      throw VimError.at(where, 'class_names must be an array of strings');
    }
    classNames = c.class_names as string[];
    if (classNames.length !== C) {
      throw VimError.at(where, `class_names has ${classNames.length} names but num_classes is ${C}`);
    }
  } else {
    classNames = C === 10 ? [...CIFAR10_CLASSES] : Array.from({ length: C }, (_, i) => `class ${i}`);
  }
  return {
    name, imgSize, inChans, P, D, depth, N, expand, E: expand * D, K, R, C, Np, L: Np + 1,
    clsPos: Math.floor(Np / 2), normEps, dtMin, dtMax, dtInitFloor, classNames,
  };
}

/** The JSON form of a resolved config (what goes into checkpoints and ONNX metadata). */
export function configToJson(cfg: VimConfig): VimConfigFile {
  return {
    name: cfg.name, img_size: cfg.imgSize, in_chans: cfg.inChans, patch_size: cfg.P, embed_dim: cfg.D,
    depth: cfg.depth, d_state: cfg.N, expand: cfg.expand, d_conv: cfg.K, dt_rank: cfg.R,
    num_classes: cfg.C, norm_eps: cfg.normEps, dt_min: cfg.dtMin, dt_max: cfg.dtMax,
    dt_init_floor: cfg.dtInitFloor, class_names: cfg.classNames,
  };
}

/** True when two configs describe the same parameter shapes. */
export function sameArchitecture(a: VimConfig, b: VimConfig): boolean {
  return a.imgSize === b.imgSize && a.inChans === b.inChans && a.P === b.P && a.D === b.D &&
    a.depth === b.depth && a.N === b.N && a.E === b.E && a.K === b.K && a.R === b.R && a.C === b.C;
}

/**
 * Load a config by name (a file in models/, e.g. "vim-nano") or by path to a JSON file.
 */
export function loadConfig(nameOrPath: string): VimConfig {
  const candidates = nameOrPath.endsWith('.json') || nameOrPath.includes('/')
    ? [resolve(nameOrPath)]
    : [join(MODELS_DIR, `${nameOrPath}.json`), resolve(nameOrPath)];
  const file = candidates.find((p) => existsSync(p));
  if (!file) {
    throw new VimError(
      `unknown model "${nameOrPath}": no such config file; use one of ${listModelNames().join(', ')} or a path to a .json config`,
    );
  }
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new VimError(`${file}: not valid JSON (${(e as Error).message})`);
  }
  return resolveConfig(raw, file);
}

export function listModelNames(): string[] {
  try {
    return readdirSync(MODELS_DIR).filter((f) => f.endsWith('.json')).map((f) => f.replace(/\.json$/, '')).sort();
  } catch {
    return ['vim-nano', 'vim-tiny'];
  }
}
