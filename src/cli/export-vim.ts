#!/usr/bin/env node
/**
 * export-vim: turn a checkpoint into one ONNX file that runs in any ONNX runtime.
 *
 * Reads the checkpoint (its config comes from its metadata; --model insists on one), writes the
 * graph with the weights to --out atomically, then loads the file once in onnxruntime-node to
 * show that it works and how fast it loads.
 */
import { realpathSync, statSync } from 'node:fs';
import { basename, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { VimError } from '../errors.js';
import { loadConfig } from '../model/config.js';
import { loadCheckpoint, saveCheckpoint, type CheckpointMeta } from '../model/checkpoint.js';
import { paramCount, type ParamSet } from '../model/params.js';
import { DEFAULT_OPSET, exportVimOnnx, MAX_OPSET, MIN_OPSET, type ExportResult } from '../onnx/export.js';
import { OnnxVim } from '../onnx/runtime.js';
import { boolOpt, helpText, numberOpt, parseCommand, runCli, stringOpt, type CommandSpec, type Parsed } from './common.js';

export const spec: CommandSpec = {
  name: 'export-vim',
  summary: 'export a Vim checkpoint to one ONNX file (input "pixel_values" float32 (batch, 3, H, W) RGB in 0…1, output "logits" (batch, classes)), or to a float16 checkpoint',
  usage: 'export-vim --checkpoint FILE --out MODEL.onnx [--opset N] [--model NAME] [--f16]\n       export-vim --checkpoint FILE --out SMALL.safetensors --f16',
  options: {
    checkpoint: { type: 'string', arg: 'FILE', help: 'the .safetensors checkpoint to export (required)' },
    out: { type: 'string', arg: 'FILE', help: 'where to write the .onnx file, or with a .safetensors name a checkpoint (required; written atomically)' },
    opset: { type: 'string', arg: 'N', default: String(DEFAULT_OPSET), help: `ONNX opset, ${MIN_OPSET}…${MAX_OPSET}; ${DEFAULT_OPSET} is what the Python onnx checker accepts` },
    model: { type: 'string', arg: 'NAME', help: 'refuse the checkpoint unless it is for this config (a name in models/ or a .json path); also the config of a checkpoint that carries none' },
    f16: { type: 'boolean', help: 'store the weights as float16: half the file; each is cast to float32 when the model loads (logits change by about 1e-3 of their size). For a .safetensors --out, A_log and A_b_log stay float32' },
    'no-check': { type: 'boolean', help: 'do not load the written file in onnxruntime to check it' },
  },
  epilog: 'The normalisation is inside the graph; the batch size is dynamic. The class names, the model config and the ' +
    "checkpoint's metadata go into the file's metadata_props. With a .safetensors --out, the checkpoint is written again " +
    '(float16 with --f16, for a smaller file to ship) with its metadata, and read back to report the largest change of a weight.',
};

function mb(bytes: number): string {
  return `${(bytes / 1e6).toFixed(1)} MB`;
}

/** What a checkpoint written again holds. */
export interface ResaveResult {
  path: string;
  bytes: number;
  paramCount: number;
  dtype: 'F32' | 'F16';
  /** The largest |stored − original| over all weights, and over the original's largest |weight|. */
  maxAbsChange: number;
  maxRelChange: number;
}

/** Write the checkpoint's parameters and metadata to `out` (F16 or F32), read it back and compare. */
function resaveCheckpoint(source: string, out: string, params: ParamSet<Float32Array>, meta: CheckpointMeta, f16: boolean): ResaveResult {
  if (resolve(out) === resolve(source)) throw new VimError(`--out ${out} is the --checkpoint itself; choose another file name`);
  const dtype = f16 ? 'F16' : 'F32';
  const { format: _format, ...rest } = meta;
  saveCheckpoint(out, params, { ...rest, config: meta.config, converted_from: basename(source), stored_as: dtype }, { dtype });
  const back = loadCheckpoint(out, params.cfg);
  let maxAbs = 0;
  let maxW = 0;
  for (const s of params.specs) {
    const a = params.get(s.name);
    const b = back.params.get(s.name);
    for (let i = 0; i < a.length; i++) {
      maxAbs = Math.max(maxAbs, Math.abs(a[i] - b[i]));
      maxW = Math.max(maxW, Math.abs(a[i]));
    }
  }
  const result: ResaveResult = {
    path: out, bytes: statSync(out).size, paramCount: paramCount(params.cfg), dtype,
    maxAbsChange: maxAbs, maxRelChange: maxW > 0 ? maxAbs / maxW : 0,
  };
  console.log(
    `wrote ${out}: ${mb(result.bytes)}, ${result.paramCount.toLocaleString('en-US')} parameters as ${dtype === 'F16' ? 'float16 (A_log, A_b_log float32)' : 'float32'}, ` +
    `${params.cfg.name}; read back, the largest weight change is ${maxAbs.toExponential(2)} (${result.maxRelChange.toExponential(1)} of the largest weight)`,
  );
  return result;
}

/** Export as the parsed options say and print what was written. */
export async function exportCommand(p: Parsed): Promise<ExportResult | ResaveResult> {
  const checkpoint = stringOpt(p, 'checkpoint');
  const out = stringOpt(p, 'out');
  if (checkpoint === undefined) throw new VimError('--checkpoint is required: the .safetensors file to export (see export-vim --help)');
  if (out === undefined) throw new VimError('--out is required: where to write the .onnx file, e.g. --out vim-tiny.onnx');
  const opset = numberOpt(p, 'opset', { integer: true, min: MIN_OPSET, max: MAX_OPSET }) ?? DEFAULT_OPSET;
  const modelName = stringOpt(p, 'model');

  const expected = modelName !== undefined ? loadConfig(modelName) : undefined;
  const { cfg, params, meta } = loadCheckpoint(checkpoint, expected);
  if (out.toLowerCase().endsWith('.safetensors')) return resaveCheckpoint(checkpoint, out, params, meta, boolOpt(p, 'f16'));
  const result = exportVimOnnx(params, cfg, out, { opset, checkpointMeta: meta, source: checkpoint, weights: boolOpt(p, 'f16') ? 'f16' : 'f32' });
  console.log(
    `wrote ${result.path}: ${mb(result.bytes)}, ${result.paramCount.toLocaleString('en-US')} parameters ` +
    `(${mb(4 * result.paramCount)} as float32), ${cfg.name}, opset ${result.opset}, ` +
    `${result.nodeCount} nodes + a ${result.scanBodyNodeCount}-node scan body per block, in ${(result.ms / 1000).toFixed(2)} s`,
  );
  if (!boolOpt(p, 'no-check')) {
    const model = await OnnxVim.load(result.path);
    try {
      const logits = await model.runPixels(new Float32Array(3 * cfg.imgSize * cfg.imgSize).fill(0.5), 1);
      if (!logits.every(Number.isFinite)) {
        throw new VimError(`${result.path} gives non-finite logits on a grey image: the checkpoint's weights hold NaN or Inf; export a healthy checkpoint`);
      }
      console.log(`onnxruntime-node loads it in ${model.sessionMs.toFixed(0)} ms; classes: ${model.classNames.join(', ')}`);
    } finally {
      await model.release();
    }
  }
  return result;
}

/** The command on an argument list, for tests and callers in-process: 0 on success; VimErrors are thrown. */
export async function main(argv: string[]): Promise<number> {
  const p = parseCommand(spec, argv);
  if (p === 'help') {
    console.log(helpText(spec));
    return 0;
  }
  await exportCommand(p);
  return 0;
}

/** True when this file is the program node runs (also through an npm bin symlink). */
function isEntry(): boolean {
  const argv1 = process.argv[1];
  if (argv1 === undefined) return false;
  try {
    return realpathSync(argv1) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isEntry()) {
  runCli(spec, async (p) => {
    await exportCommand(p);
  });
}
