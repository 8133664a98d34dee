/**
 * The ONNX path of eval-vim and predict-vim: a checkpoint exported in memory and run through
 * onnxruntime-node, evaluation of an OnnxVim on a labelled set, and the choice of engine for a
 * checkpoint (onnxruntime by default where the only WebGPU adapter is a CPU fallback).
 *
 * Shape letters: B batch, C classes, H = W image side.
 */
import { VimError } from '../errors.js';
import { acquireGpu, describeGpu, type Gpu } from '../gpu/device.js';
import { sameArchitecture, type VimConfig } from '../model/config.js';
import { describeConfig } from '../model/checkpoint.js';
import type { ParamSet } from '../model/params.js';
import { firstImages, meanLogits, mirrorImages, type EvaluateOptions, type LabelledImages } from '../train/evaluate.js';
import { ClassificationTally, type ClassificationResult } from '../train/metrics.js';
import { buildVimOnnx } from './export.js';
import { OnnxWorkerPool } from './pool.js';
import { OnnxVim, type OnnxVimOptions } from './runtime.js';

/**
 * Images per onnxruntime run when the user gives no batch size. With one single-threaded session a
 * core (OnnxWorkerPool), 16 images a run keep each Scan step's (B, 2, N, E) tensors near the
 * core's caches: the released vim-tiny took 42–43 s for 2,048 test images at 8, 16 or 32, against
 * 49–52 s at 64, on a 2-core VM (docs/performance.md, "ONNX on a CPU").
 */
export const ONNX_DEFAULT_BATCH = 16;

/**
 * The one line eval-vim and predict-vim print where a --checkpoint would run on a WebGPU adapter
 * that is a CPU fallback (lavapipe), and so runs through onnxruntime instead: onnxruntime's CPU
 * kernels are far faster there than compute shaders on a software Vulkan driver (see README.md,
 * "ONNX", for the figures), with the same predictions.
 */
export function cpuFallbackNote(adapter: string): string {
  const name = adapter.replace(/\s*\[[^\]]*\]$/, '').replace(/\s*\(CPU\)$/, ''); // without the feature list
  return `this WebGPU adapter is a CPU fallback (${name}): the checkpoint runs through onnxruntime instead, ` +
    'exported to ONNX in memory (the same predictions, much faster here); --webgpu runs it on the adapter';
}

/** The same where there is no WebGPU adapter at all. */
export const NO_ADAPTER_NOTE = 'no WebGPU adapter here: the checkpoint runs through onnxruntime instead, exported to ONNX in memory ' +
  '(for --webgpu, scripts/setup.sh installs a Vulkan driver)';

/** Where a command's model comes from: exactly one of --checkpoint and --onnx. */
export interface ModelSource {
  checkpoint?: string;
  onnx?: string;
  /** With a checkpoint: export it to ONNX in memory and run it through onnxruntime. */
  useOnnx: boolean;
  /** With a checkpoint: run it on the WebGPU adapter even where that is a CPU fallback. */
  webgpu: boolean;
}

/** Check the --checkpoint / --onnx / --use-onnx options of `command`, which will `verb` the model. */
export function chooseModelSource(
  checkpoint: string | undefined, onnx: string | undefined, useOnnx: boolean, command: string, verb: string, webgpu = false,
): ModelSource {
  if (checkpoint !== undefined && onnx !== undefined) {
    throw new VimError(`give either --checkpoint or --onnx, not both (see ${command} --help)`);
  }
  if (checkpoint === undefined && onnx === undefined) {
    throw new VimError(`--checkpoint or --onnx is required: the .safetensors checkpoint or the .onnx model to ${verb} (see ${command} --help)`);
  }
  if (useOnnx && onnx !== undefined) throw new VimError('--use-onnx exports a --checkpoint to ONNX; an --onnx model already is one: drop --use-onnx');
  if (webgpu && onnx !== undefined) throw new VimError('--webgpu runs a --checkpoint on the WebGPU adapter; an --onnx model runs in onnxruntime: drop --webgpu');
  if (webgpu && useOnnx) throw new VimError('--webgpu and --use-onnx ask for two engines: give one of them');
  return { checkpoint, onnx, useOnnx, webgpu };
}

/**
 * Where a --checkpoint runs: on the WebGPU adapter (a GPU; any adapter with --webgpu), or exported
 * to ONNX in memory and run in onnxruntime: with --use-onnx, and by default where the adapter is a
 * CPU fallback or there is none, `note` then saying so in one line.
 */
export async function checkpointEngine(source: ModelSource): Promise<{ gpu?: Gpu; note?: string }> {
  if (source.useOnnx) return {};
  if (source.webgpu) return { gpu: await acquireGpu() };
  let gpu: Gpu;
  try {
    gpu = await acquireGpu();
  } catch (e) {
    if (e instanceof VimError) return { note: NO_ADAPTER_NOTE };
    throw e;
  }
  if (!gpu.info.isCpu) return { gpu };
  const note = cpuFallbackNote(describeGpu(gpu));
  gpu.destroy(); // only asked to learn what the adapter is
  return { note };
}

/** Refuse an ONNX model whose config is not the one --model names. */
export function checkOnnxConfig(path: string, cfg: VimConfig, expected: VimConfig | undefined): void {
  if (expected !== undefined && !sameArchitecture(cfg, expected)) {
    throw new VimError(`${path} is an export of ${describeConfig(cfg)} but the model is ${describeConfig(expected)}; give the matching --model or model file`);
  }
}

/** Load an exported model for a command, refusing one whose config is not `expected` (released on refusal). */
export async function openOnnxModel(path: string, expected: VimConfig | undefined): Promise<OnnxVim> {
  const onnx = await OnnxVim.load(path);
  try {
    checkOnnxConfig(path, onnx.cfg, expected);
  } catch (e) {
    await onnx.release();
    throw e;
  }
  return onnx;
}

/**
 * A checkpoint's weights exported to ONNX in memory (nothing is written to disk) and loaded in
 * onnxruntime-node. `source` names the checkpoint in messages and in the model's metadata.
 */
export async function onnxFromCheckpoint(
  cfg: VimConfig, params: ParamSet<Float32Array>, source: string,
  opts: OnnxVimOptions & { checkpointMeta?: Record<string, unknown> } = {},
): Promise<{ model: OnnxVim; exportMs: number }> {
  const t0 = performance.now();
  const bytes = buildVimOnnx(cfg, params, { checkpointMeta: opts.checkpointMeta, source });
  const exportMs = performance.now() - t0;
  const model = await OnnxVim.fromBytes(bytes, `${source} (exported to ONNX in memory)`, opts);
  return { model, exportMs };
}

/**
 * Top-1, top-5, loss, per-class accuracy and the confusion matrix of an ONNX model on `data`, in
 * runs of `batch` images (the last one smaller: the batch axis is dynamic, so nothing is padded).
 * With `workers` > 1 the runs go to that many sessions of the model at once, each in a child
 * process (OnnxWorkerPool) with its share of the cores: the same counts, the logits the same up to
 * float rounding.
 */
export async function evaluateOnnx(
  model: OnnxVim, data: LabelledImages, batch: number, opts: Omit<EvaluateOptions, 'shouldStop'> & { workers?: number } = {},
): Promise<ClassificationResult> {
  if (!Number.isInteger(batch) || batch < 1) throw new VimError(`expected a positive integer batch size but received ${batch}`);
  const { imgSize, C } = model.cfg;
  const per = 3 * imgSize * imgSize;
  const set = firstImages(data, opts.limit, per);
  const tally = new ClassificationTally(C);
  const workers = opts.workers ?? 1;
  const pool = workers > 1 ? await OnnxWorkerPool.open(model.bytes, model.path, imgSize, workers) : undefined;
  const run = (images: Uint8Array, n: number) => (pool ? pool.run(images, n) : model.run(images, n));
  let done = 0;
  const one = async (start: number) => {
    const n = Math.min(batch, set.n - start);
    const images = set.images.subarray(start * per, (start + n) * per);
    const [plain, mirrored] = await Promise.all([run(images, n), opts.flip ? run(mirrorImages(images, n, imgSize), n) : undefined]);
    const logits: ArrayLike<number> = mirrored ? meanLogits(plain, mirrored, n * C) : plain; // (n, C)
    tally.add(logits, set.labels.subarray(start, start + n), n);
    done += n;
    opts.onProgress?.(done, set.n);
  };
  try {
    // up to `workers` batches in flight; each one's counts are added as it ends
    const inFlight = new Set<Promise<void>>();
    for (let start = 0; start < set.n; start += batch) {
      const p: Promise<void> = one(start).finally(() => inFlight.delete(p));
      p.catch(() => undefined); // a failure is thrown by the race or the final wait, not left unhandled
      inFlight.add(p);
      if (inFlight.size >= workers) await Promise.race(inFlight);
    }
    await Promise.all(inFlight);
  } finally {
    await pool?.release();
  }
  return tally.result();
}
