/**
 * Inputs a user gets wrong in eval-vim, bench-vim and predict-vim, and what the commands say: an
 * output path that cannot be written (refused before the work starts, named as given; a write
 * that fails after the work still leaves the results printed), a --filter that is no regular
 * expression or matches nothing, a bad number, an ONNX model given as --checkpoint and a
 * checkpoint given as --onnx (whatever their names), a --holdout past the training set, a
 * mistyped option (the closest one suggested) and options npm took for itself (no `--`).
 * The model is vim-nano with random weights; nothing here evaluates more than a few batches.
 */
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { VimError } from '../src/errors.js';
import {
  looksLikeOnnx, looksLikeSafetensors, outputPathProblem, readSafetensors, readSafetensorsHeader, serializeSafetensors,
  sniffModelFile, writeFileAtomic,
} from '../src/io/safetensors.js';
import { saveCheckpoint } from '../src/model/checkpoint.js';
import { loadConfig } from '../src/model/config.js';
import { initParams } from '../src/model/init.js';
import { exportVimOnnx } from '../src/onnx/export.js';
import { readOnnxMetadata } from '../src/onnx/runtime.js';
import { closestOption, optionsTakenByNpm, type CommandSpec } from '../src/cli/common.js';
import { buildIfStale, expectOneLineError, runCommand, type Ran } from './helpers/cli.js';

const TMP = mkdtempSync(join(tmpdir(), 'vim-cli-inputs-'));
const CKPT = join(TMP, 'nano.safetensors');
const ONNX = join(TMP, 'nano.onnx');
const ONNX_AS_BIN = join(TMP, 'model.bin'); // an ONNX model under a name that says nothing
const CKPT_AS_BIN = join(TMP, 'weights.bin'); // a checkpoint under a name that says nothing

function cli(cmd: string, args: string[], onStdout?: (text: string) => boolean): Promise<Ran> {
  return runCommand(TMP, cmd, args, onStdout, []);
}

/** A user error as expectOneLineError sees it, and nothing on stdout: the command stopped at the door. */
async function refusedAtTheDoor(cmd: string, args: string[], message: RegExp): Promise<Ran> {
  const r = await cli(cmd, args);
  expectOneLineError(r, cmd, args, message);
  expect(r.stdout, `${cmd} ${args.join(' ')}`).toBe('');
  return r;
}

function vimErrorOf(f: () => unknown): VimError {
  try {
    f();
  } catch (e) {
    if (e instanceof VimError) return e;
    throw e;
  }
  throw new Error('expected a VimError');
}

beforeAll(() => {
  buildIfStale();
  const cfg = loadConfig('vim-nano');
  const params = initParams(cfg, 5);
  saveCheckpoint(CKPT, params);
  exportVimOnnx(params, cfg, ONNX, { source: 'cli-inputs test (random init)' });
  copyFileSync(ONNX, ONNX_AS_BIN);
  copyFileSync(CKPT, CKPT_AS_BIN);
});

afterAll(() => rmSync(TMP, { recursive: true, force: true }));

describe('output paths', () => {
  it('a --plot or --json path that cannot be written is refused before anything runs, named as the user gave it', async () => {
    const missing = join(TMP, 'no-such-folder', 'x.png');
    const t0 = performance.now();
    await refusedAtTheDoor('eval-vim', ['--onnx', ONNX, '--limit', '600', '--plot', missing],
      new RegExp(`--plot: cannot write ${missing}: the folder ${join(TMP, 'no-such-folder')} does not exist; create it or choose another path$`));
    expect(performance.now() - t0).toBeLessThan(10_000); // no model loaded, no image evaluated
    const underFile = await refusedAtTheDoor('eval-vim', ['--onnx', ONNX, '--plot', '/dev/null/x.png'],
      /--plot: cannot write \/dev\/null\/x\.png: \/dev\/null is not a folder; choose another path$/);
    expect(underFile.stderr).not.toMatch(/\.tmp|x\.png\.\d/); // never the temporary file's name
    await refusedAtTheDoor('eval-vim', ['--checkpoint', CKPT, '--json', '--plot', TMP], /--plot: cannot write .*: it is a folder; give a file name/);
    await refusedAtTheDoor('eval-vim', ['--onnx', ONNX, '--plot', `${TMP}/`], /--plot: cannot write .*: it names a folder/);
    // bench-vim --json, in each of its modes: before the GPU is asked for, or the model exported
    const json = join(TMP, 'no-such-folder', 'bench.json');
    const noFolder = /--json: cannot write .*no-such-folder\/bench\.json: the folder .*no-such-folder does not exist/;
    await refusedAtTheDoor('bench-vim', ['--model', 'vim-nano', '--steps', '1', '--json', json], noFolder);
    await refusedAtTheDoor('bench-vim', ['--check', '--model', 'vim-nano', '--json', json], noFolder);
    await refusedAtTheDoor('bench-vim', ['--onnx', '--model', 'vim-nano', '--json', json], noFolder);
    await refusedAtTheDoor('bench-vim', ['--onnx', ONNX, '--json', '/dev/null/bench.json'], /--json: cannot write \/dev\/null\/bench\.json: \/dev\/null is not a folder/);
  });

  it('the atomic writer names the path it was given, never its temporary file', () => {
    const m = vimErrorOf(() => writeFileAtomic('/dev/null/x.png', new Uint8Array(4))).message;
    expect(m).toBe('cannot write /dev/null/x.png: /dev/null is not a folder; choose another path');
    expect(outputPathProblem(join(TMP, 'fine.png'))).toBeUndefined();
    expect(outputPathProblem(join(TMP, 'a', 'b', 'c.png'))).toBe(`the folder ${join(TMP, 'a', 'b')} does not exist; create it or choose another path`);
    expect(outputPathProblem(join(CKPT, 'x.png'))).toBe(`${CKPT} is not a folder; choose another path`);
  });
});

describe('bench-vim options', () => {
  it('a --filter that is not a regular expression, or matches no kernel, is a one-line error', async () => {
    await refusedAtTheDoor('bench-vim', ['--check', '--model', 'vim-nano', '--filter', '(['],
      /--filter '\(\[' is not a valid regular expression: Unterminated character class; give a JavaScript regular expression/);
    const none = await cli('bench-vim', ['--check', '--model', 'vim-nano', '--filter', 'nomatch']);
    expectOneLineError(none, 'bench-vim', ['--filter', 'nomatch'], /--filter 'nomatch' matches no kernel check; the kernels \(matched case-insensitively\) are: patch embedding forward; .*selective scan .*; AdamW \(3 steps, decay mask\)$/);
    expect(none.stdout).not.toMatch(/passed|checking every kernel/);
    await refusedAtTheDoor('bench-vim', ['--filter', 'scan'], /--filter chooses which kernels --check tests: add --check/);
  });

  it('bad numbers are refused before the model is built', async () => {
    await refusedAtTheDoor('bench-vim', ['--model', 'vim-nano', '--steps', '0'], /--steps: expected an integer ≥ 1 but received "0"$/);
    await refusedAtTheDoor('bench-vim', ['--check', '--model', 'vim-nano', '--steps', '0'], /--steps: expected an integer ≥ 1/);
    await refusedAtTheDoor('bench-vim', ['--check', '--model', 'vim-nano', '--seed', '-1'], /--seed: expected an integer ≥ 0 but received "-1"/);
    await refusedAtTheDoor('bench-vim', ['--model', 'vim-nano', '--warmup', 'x'], /--warmup: expected an integer ≥ 0 but received "x"/);
    await refusedAtTheDoor('bench-vim', ['--onnx', '--model', 'vim-nano', '--batch-size', '0'], /--batch-size: expected an integer ≥ 1/);
  });
});

describe('the wrong kind of model file', () => {
  it('an ONNX model given as --checkpoint is named as one, whatever its file name', async () => {
    const asOnnx = /is an ONNX model, not a safetensors checkpoint: pass it with --onnx$/;
    await refusedAtTheDoor('eval-vim', ['--checkpoint', ONNX], new RegExp(`${ONNX} ${asOnnx.source}`));
    await refusedAtTheDoor('eval-vim', ['--checkpoint', 'model.bin', '--use-onnx'], /model\.bin is an ONNX model, not a safetensors checkpoint: pass it with --onnx$/);
    await refusedAtTheDoor('predict-vim', ['--checkpoint', 'model.bin', 'cat.png'], asOnnx);
    // the reader itself (export-vim's --checkpoint, train-vim's files) says so too
    for (const read of [() => readSafetensors(ONNX_AS_BIN), () => readSafetensorsHeader(ONNX_AS_BIN)]) {
      expect(vimErrorOf(read).message).toMatch(/model\.bin is an ONNX model, not a safetensors checkpoint: give the \.safetensors checkpoint/);
    }
  });

  it('a safetensors checkpoint given as --onnx is named as one, whatever its file name', async () => {
    const asCkpt = /is not an ONNX model: it looks like a safetensors checkpoint; pass it with --checkpoint$/;
    await refusedAtTheDoor('eval-vim', ['--onnx', CKPT], new RegExp(`${CKPT} ${asCkpt.source}`));
    await refusedAtTheDoor('predict-vim', ['--onnx', 'weights.bin', 'cat.png'], /weights\.bin is not an ONNX model: it looks like a safetensors checkpoint/);
    await refusedAtTheDoor('bench-vim', ['--onnx', 'weights.bin'], /weights\.bin is a safetensors checkpoint, not an ONNX model: export it first \(export-vim --checkpoint weights\.bin --out model\.onnx\)/);
    // a truncated checkpoint still looks like one
    const cut = join(TMP, 'cut.bin');
    writeFileSync(cut, readFileSync(CKPT).subarray(0, 300));
    expect(vimErrorOf(() => readOnnxMetadata(cut)).message).toMatch(asCkpt);
    // any other file stays "not an ONNX model" without the guess
    const text = join(TMP, 'notes.onnx');
    writeFileSync(text, 'just some text, not a model');
    expect(vimErrorOf(() => readOnnxMetadata(text)).message).toMatch(/notes\.onnx is not an ONNX model: it does not parse/);
    // files whose first bytes say what they are, named as such
    const kinds: [string, Uint8Array, string][] = [
      ['cat.onnx', Uint8Array.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, ...new Array(40).fill(1)]), 'a PNG image'],
      ['vim.pth', Uint8Array.from([0x50, 0x4b, 0x03, 0x04, ...new Array(40).fill(1)]), String.raw`a zip archive, as PyTorch's torch\.save writes \(\.pt, \.pth\)`],
      ['config.onnx', new TextEncoder().encode('{"name": "vim-tiny", "dim": 192}'), 'JSON text, such as a model config'],
    ];
    for (const [name, bytes, kind] of kinds) {
      const path = join(TMP, name);
      writeFileSync(path, bytes);
      expect(vimErrorOf(() => readOnnxMetadata(path)).message).toMatch(new RegExp(`${name.replace('.', '\\.')} is not an ONNX model: it is ${kind}; give a \\.onnx file written by export-vim$`));
    }
  });

  it('the sniffing never takes a real safetensors file for ONNX, even one that starts with ONNX\'s first byte', () => {
    // a header of 0x308 bytes: the file starts 08 03 00 …, like an ONNX model's 08 <ir_version>
    let bytes: Uint8Array | undefined;
    for (let pad = 0; pad < 800 && bytes === undefined; pad++) {
      const b = serializeSafetensors([{ name: 't', shape: [2], data: Float32Array.from([1, 2]) }], { pad: 'x'.repeat(pad) });
      if (new DataView(b.buffer).getUint32(0, true) === 0x308) bytes = b;
    }
    expect(bytes).toBeDefined();
    const file = join(TMP, 'starts-with-08.onnx');
    writeFileSync(file, bytes!);
    expect(looksLikeSafetensors(bytes!)).toBe(true);
    expect(looksLikeOnnx(bytes!)).toBe(false);
    expect(sniffModelFile(file)).toBe('safetensors');
    expect(readSafetensors(file).tensors.get('t')?.data).toEqual(Float32Array.from([1, 2]));
    expect(sniffModelFile(ONNX_AS_BIN)).toBe('onnx');
    expect(sniffModelFile(CKPT_AS_BIN)).toBe('safetensors');
    expect(sniffModelFile(join(TMP, 'missing'))).toBe('other');
  });
});

describe('eval-vim --holdout', () => {
  it('a --holdout past the training set says how many images there are and what it accepts', async () => {
    await refusedAtTheDoor('eval-vim', ['--onnx', ONNX, '--holdout', '60000'],
      /--holdout 60000: the CIFAR-10 training set has only 50,000 images; give N from 1 to 49,999 \(the last N training images, those train-vim --holdout N keeps out of training\)$/);
    await refusedAtTheDoor('eval-vim', ['--onnx', ONNX, '--holdout', '50000'],
      /--holdout 50000: that is the whole CIFAR-10 training set, which train-vim never holds out; give N from 1 to 49,999/);
    await refusedAtTheDoor('eval-vim', ['--onnx', ONNX, '--holdout', '0'], /--holdout: expected an integer ≥ 1 but received "0"/);
  });
});

describe('mistyped options', () => {
  const spec: CommandSpec = {
    name: 'train-vim', summary: '', usage: '',
    options: {
      epochs: { type: 'string', help: '' }, 'batch-size': { type: 'string', help: '' }, lr: { type: 'string', help: '' },
      'min-lr': { type: 'string', help: '' }, json: { type: 'boolean', help: '' },
    },
  };

  it('an unknown option names the closest one when one is close', async () => {
    expect(closestOption(spec, '--epocs')).toBe('epochs');
    expect(closestOption(spec, '--ephocs')).toBe('epochs'); // two letters swapped
    expect(closestOption(spec, '--batchsize=8')).toBe('batch-size');
    expect(closestOption(spec, '--lrr')).toBe('lr');
    expect(closestOption(spec, '--hlep')).toBe('help');
    expect(closestOption(spec, '--foo')).toBeUndefined();
    expect(closestOption(spec, '--x')).toBeUndefined();
    await refusedAtTheDoor('eval-vim', ['--chekpoint', CKPT], /^eval-vim: error: Unknown option '--chekpoint'; did you mean --checkpoint\? see eval-vim --help$/);
    await refusedAtTheDoor('eval-vim', ['--foo'], /^eval-vim: error: Unknown option '--foo'; see eval-vim --help$/);
  });

  it('options npm took for itself (npm run without --) are named, with where the -- goes', () => {
    const run = { npm_lifecycle_event: 'train-vim' };
    expect(optionsTakenByNpm(spec, { ...run, npm_config_epochs: 'true', npm_config_batch_size: 'true' })?.message).toBe(
      'npm took --epochs, --batch-size for itself, so train-vim never saw them: put -- between the command and its options, ' +
      'e.g. npm run train-vim -- --epochs …');
    expect(optionsTakenByNpm(spec, { ...run, npm_config_json: 'true' })).toBeUndefined(); // npm's own option
    expect(optionsTakenByNpm(spec, { npm_lifecycle_event: 'test', npm_config_epochs: 'true' })).toBeUndefined(); // not npm run train-vim
    expect(optionsTakenByNpm(spec, run)).toBeUndefined();
  });
});
