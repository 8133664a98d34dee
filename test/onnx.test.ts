/**
 * The ONNX export: the file's logits against the float64 reference and the WebGPU engine on real
 * CIFAR-10 test images (onnxruntime-node and onnxruntime-web; random and trained weights), its size, its initializers, the Scan that keeps the
 * state per token, its metadata, and the errors a user can run into.
 *
 * The Python onnx checker runs when `${VIM_ONNX_PYTHON:-python3} -c "import onnx"` works and is
 * reported as skipped otherwise; set VIM_REQUIRE_ONNX_CHECKER=1 to make its absence a failure.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as ortw from 'onnxruntime-web';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { main as exportCli } from '../src/cli/export-vim.js';
import { loadCifar10Split } from '../src/data/cifar10.js';
import { VimError } from '../src/errors.js';
import { CIFAR10_CLASSES, configToJson, loadConfig, type VimConfig } from '../src/model/config.js';
import { loadCheckpoint, saveCheckpoint } from '../src/model/checkpoint.js';
import { initParams } from '../src/model/init.js';
import { ParamSet, paramCount } from '../src/model/params.js';
import { f16BitsToF32, f32ToF16Bits } from '../src/io/safetensors.js';
import { buildVimOnnx, exportVimOnnx, INPUT_NAME, OUTPUT_NAME } from '../src/onnx/export.js';
import { DataType, decodeModel, encodeMessage, encodeModel, type Graph, type Model, type Tensor } from '../src/onnx/proto.js';
import { benchOnnx, imagesToPixels, OnnxVim, readOnnxMetadata } from '../src/onnx/runtime.js';
import { VimGpu } from '../src/model/vim-gpu.js';
import { evaluateOnnx, onnxFromCheckpoint } from '../src/onnx/classify.js';
import { OnnxWorkerPool } from '../src/onnx/pool.js';
import { vimForward } from '../src/reference/vim.js';
import { testGpu } from './helpers/gpu.js';

const TOL = 1e-4;
const IMG = 3 * 32 * 32;

let dir: string;
let testImages: Uint8Array; // (16, 3, 32, 32)

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'vim-onnx-'));
  testImages = loadCifar10Split(undefined, 'test', { verify: false }).images.slice(0, 16 * IMG);
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/** Rows [from, from+count) of a (B, C) array. */
function rows(x: ArrayLike<number>, C: number, from: number, count: number): number[] {
  return Array.from({ length: count * C }, (_, i) => x[from * C + i]!);
}

function reference(params: ParamSet<Float32Array>, images: Uint8Array, B: number): Float64Array {
  return vimForward(params.toFloat64(), images, B).logits;
}

/** Logits from onnxruntime-node for images (B, 3, 32, 32), and for batches of 1 and 7 of them. */
async function checkAgainstReference(path: string, params: ParamSet<Float32Array>, B: number): Promise<void> {
  const cfg = params.cfg;
  const images = testImages.subarray(0, B * IMG);
  const ref = reference(params, images, B); // (B, C)
  const model = await OnnxVim.load(path);
  try {
    const all = await model.run(images, B);
    const dAll = maxAbsDiff(all, ref);
    const one = await model.run(images.subarray(0, IMG), 1);
    const dOne = maxAbsDiff(one, rows(ref, cfg.C, 0, 1));
    const seven = await model.run(images.subarray(1 * IMG, 8 * IMG), 7);
    const dSeven = maxAbsDiff(seven, rows(ref, cfg.C, 1, 7));
    console.log(`${cfg.name}: max |onnx − f64 reference| = ${dAll.toExponential(2)} (batch ${B}), ${dOne.toExponential(2)} (1), ${dSeven.toExponential(2)} (7)`);
    expect(dAll).toBeLessThan(TOL);
    expect(dOne).toBeLessThan(TOL);
    expect(dSeven).toBeLessThan(TOL);
    // the logits are not trivially equal: different images give different answers
    expect(maxAbsDiff(rows(ref, cfg.C, 0, 1), rows(ref, cfg.C, 1, 1))).toBeGreaterThan(1e-3);
  } finally {
    await model.release();
  }
}

function pythonOnnx(): string | null {
  const py = process.env.VIM_ONNX_PYTHON ?? 'python3';
  const r = spawnSync(py, ['-c', 'import onnx'], { encoding: 'utf8' });
  return r.status === 0 ? py : null;
}

const PY = pythonOnnx();
if (PY === null) {
  console.warn(
    'onnx.test: the Python onnx package is not importable, so onnx.checker.check_model is NOT run ' +
    '(install python3-onnx or set VIM_ONNX_PYTHON to a python that has it; VIM_REQUIRE_ONNX_CHECKER=1 makes this a failure)',
  );
}

function runChecker(path: string): void {
  const r = spawnSync(PY!, ['-c', 'import onnx, sys\nonnx.checker.check_model(sys.argv[1], full_check=True)\nprint("onnx", onnx.__version__, "checker: ok")', path], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`onnx.checker.check_model(${path}, full_check=True) failed:\n${r.stderr}`);
  console.log(r.stdout.trim(), `(${path})`);
}

/** Logits (B, C) of the WebGPU engine (an inference build, as eval-vim runs it) for images (B, 3, 32, 32). */
async function engineLogits(params: ParamSet<Float32Array>, images: Uint8Array, B: number): Promise<Float32Array> {
  const model = await VimGpu.create(await testGpu(), params.cfg, { batch: B, training: false });
  try {
    model.setParams(params);
    model.setBatch(images, B);
    return (await model.forward()).slice(0, B * params.cfg.C);
  } finally {
    model.destroy();
  }
}

/**
 * onnxruntime-node against the WebGPU engine and, with `withReference`, the float64 reference,
 * on the 16 test images; the ONNX model is exported in memory as eval-vim --use-onnx does.
 */
async function checkAgainstEngine(params: ParamSet<Float32Array>, what: string, withReference: boolean): Promise<void> {
  const B = 16;
  const images = testImages.subarray(0, B * IMG);
  const { model } = await onnxFromCheckpoint(params.cfg, params, what);
  let onnx: Float32Array;
  try {
    onnx = await model.run(images, B);
  } finally {
    await model.release();
  }
  const gpu = await engineLogits(params, images, B);
  const dGpu = maxAbsDiff(onnx, gpu);
  let line = `${what}: max |onnx − WebGPU engine| = ${dGpu.toExponential(2)}`;
  if (withReference) {
    const ref = reference(params, images, B);
    const dRef = maxAbsDiff(onnx, ref);
    line += `, max |onnx − f64 reference| = ${dRef.toExponential(2)}, max |engine − reference| = ${maxAbsDiff(gpu, ref).toExponential(2)}`;
    expect(dRef).toBeLessThan(TOL);
  }
  console.log(`${line} (16 CIFAR-10 test images)`);
  expect(dGpu).toBeLessThan(TOL);
  expect(maxAbsDiff(rows(onnx, params.cfg.C, 0, 1), rows(onnx, params.cfg.C, 1, 1))).toBeGreaterThan(1e-3);
}

/** The released vim-tiny checkpoint (float16 weights), where models/ has it. */
const TRAINED = fileURLToPath(new URL('../models/vim-tiny-cifar10.safetensors', import.meta.url));

// ---------------------------------------------------------------------------------------------

describe('onnxruntime-node gives the WebGPU engine\'s logits', () => {
  it('vim-nano, random weights: onnx = engine = float64 reference on 16 CIFAR-10 test images', async () => {
    await checkAgainstEngine(initParams(loadConfig('vim-nano'), 21), 'vim-nano (random init)', true);
  });

  it(`trained weights: ${existsSync(TRAINED) ? 'the released models/vim-tiny-cifar10.safetensors' : 'vim-nano after a few AdamW steps on the engine'}`, async () => {
    let params: ParamSet<Float32Array>;
    let what: string;
    if (existsSync(TRAINED)) {
      params = loadCheckpoint(TRAINED).params;
      what = 'models/vim-tiny-cifar10.safetensors';
    } else {
      // No trained checkpoint here: train vim-nano for a few AdamW steps on WebGPU, on test images
      // other than the 16 compared (any labelled images serve to move the weights off their init).
      const cfg = loadConfig('vim-nano');
      const init = initParams(cfg, 8);
      const B = 16;
      const split = loadCifar10Split(undefined, 'test', { verify: false });
      const trainer = await VimGpu.create(await testGpu(), cfg, { batch: B, training: true });
      try {
        trainer.setParams(init);
        const losses: number[] = [];
        for (let step = 0; step < 6; step++) {
          const from = 100 + step * B;
          const targets = new Float32Array(B * cfg.C); // (B, C) one-hot
          for (let b = 0; b < B; b++) targets[b * cfg.C + split.labels[from + b]!] = 1;
          trainer.setBatch(split.images.subarray(from * IMG, (from + B) * IMG), B, targets);
          losses.push(await trainer.trainStep({ lr: 3e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.05 }));
        }
        params = await trainer.getParams();
        expect(losses.every(Number.isFinite)).toBe(true);
      } finally {
        trainer.destroy();
      }
      // the weights did move: the head is no longer its initial value
      expect(maxAbsDiff(params.get('head.weight'), init.get('head.weight'))).toBeGreaterThan(1e-3);
      what = 'vim-nano after 6 AdamW steps';
    }
    await checkAgainstEngine(params, what, true);
  });

  it('vim-tiny, random weights: onnx = engine on 16 CIFAR-10 test images', async () => {
    // the float64 reference of vim-tiny is checked against onnx below ("export of vim-tiny")
    await checkAgainstEngine(initParams(loadConfig('vim-tiny'), 5), 'vim-tiny (random init)', false);
  });
});

describe('export of vim-nano with random weights', () => {
  let cfg: VimConfig;
  let params: ParamSet<Float32Array>;
  let path: string;
  let model: Model;
  let bytes: number;

  beforeAll(() => {
    cfg = loadConfig('vim-nano');
    params = initParams(cfg, 11);
    path = join(dir, 'nano.onnx');
    const r = exportVimOnnx(params, cfg, path);
    bytes = r.bytes;
    expect(statSync(path).size).toBe(r.bytes);
    model = decodeModel(readFileSync(path));
    console.log(`vim-nano: ${r.bytes} bytes, ${r.paramCount} parameters, ${r.nodeCount} nodes + ${r.scanBodyNodeCount} per scan body, ${r.ms.toFixed(0)} ms`);
  });

  it('gives the float64 reference logits on 16 CIFAR-10 test images, at batch 16, 1 and 7', async () => {
    await checkAgainstReference(path, params, 16);
  });

  it('gives the same logits in onnxruntime-web (wasm)', async () => {
    ortw.env.wasm.numThreads = 1;
    const session = await ortw.InferenceSession.create(readFileSync(path), { executionProviders: ['wasm'] });
    try {
      const B = 7;
      const images = testImages.subarray(0, B * IMG);
      const out = await session.run({ [INPUT_NAME]: new ortw.Tensor('float32', imagesToPixels(images), [B, 3, 32, 32]) });
      const logits = out[OUTPUT_NAME]!;
      expect(logits.dims).toEqual([B, cfg.C]);
      const d = maxAbsDiff(logits.data as Float32Array, reference(params, images, B));
      console.log(`vim-nano in onnxruntime-web: max |onnx − f64 reference| = ${d.toExponential(2)}`);
      expect(d).toBeLessThan(TOL);
    } finally {
      await session.release();
    }
  });

  it('is the size of its float32 weights: within 5% (+100 KB) of 4 bytes per parameter', () => {
    const weights = 4 * paramCount(cfg);
    expect(Math.abs(bytes - weights)).toBeLessThanOrEqual(0.05 * weights + 100_000);
  });

  it('stores every parameter exactly once', () => {
    const inits = model.graph!.initializer!;
    const names = inits.map((t) => t.name!);
    expect(new Set(names).size).toBe(names.length);
    const size = (t: Tensor) => (t.dims ?? []).reduce((a, d) => a * d, 1);
    const constants = inits.filter((t) => t.name!.startsWith('const_'));
    const weights = inits.filter((t) => !t.name!.startsWith('const_'));
    // every weight is float32 raw data; together they hold each parameter element once
    for (const t of weights) {
      expect(t.data_type).toBe(DataType.FLOAT);
      expect(t.raw_data!.length).toBe(4 * size(t));
    }
    expect(weights.reduce((a, t) => a + size(t), 0)).toBe(paramCount(cfg));
    // the rest are small shape/bound constants
    for (const t of constants) expect(size(t)).toBeLessThanOrEqual(8);
    // and no two weight matrices hold the same bytes (random init makes each distinct; A, D and
    // the biases start from constants, so equal values there are no duplication)
    const seen = new Map<string, string>();
    for (const t of weights) {
      if (size(t) < 1000 || !/weight|pos_embed/.test(t.name!)) continue;
      const key = Buffer.from(t.raw_data!).toString('base64');
      expect(seen.get(key), `${t.name} duplicates ${seen.get(key)}`).toBeUndefined();
      seen.set(key, t.name!);
    }
    // the PyTorch names survive where the tensor is stored as it is
    for (const n of ['patch_embed.proj.weight', 'cls_token', 'pos_embed', 'layers.0.norm.weight', 'norm_f.weight', 'head.weight', 'head.bias']) {
      expect(names).toContain(n);
    }
  });

  it('runs the selective scan as one ONNX Scan per block that computes exp(ΔA) and ΔuB per token', () => {
    const g = model.graph!;
    const scans = g.node!.filter((n) => n.op_type === 'Scan');
    expect(scans).toHaveLength(cfg.depth);
    expect(g.node!.some((n) => n.op_type === 'Loop')).toBe(false);
    const initNames = new Set(g.initializer!.map((t) => t.name!));
    for (const scan of scans) {
      const attrs = new Map(scan.attribute!.map((a) => [a.name, a]));
      expect(attrs.get('num_scan_inputs')!.i).toBe(4);
      const body: Graph = attrs.get('body')!.g!;
      expect(body.input).toHaveLength(5); // the state h and four per-token slices
      // h: (batch, 2, N, E); the per-token slices hold no token axis and never E and N together
      const dims = (i: number) => body.input![i]!.type!.tensor_type!.shape!.dim!.map((d) => d.dim_value ?? d.dim_param);
      expect(dims(0)).toEqual(['batch', 2, cfg.N, cfg.E]);
      expect(dims(1)).toEqual(['batch', 2, 1, cfg.E]); // Δ_t
      expect(dims(2)).toEqual(['batch', 2, 1, cfg.E]); // Δ_t u_t
      expect(dims(3)).toEqual(['batch', 2, cfg.N, 1]); // B_t
      expect(dims(4)).toEqual(['batch', 2, 1, cfg.N]); // C_t
      const [hPrev, delta, du, Bt] = body.input!.map((v) => v.name);
      // exp(Δ_t·A) inside the body, with A (2, N, E) from the outer graph
      const bodyNodes = body.node!;
      const mulDA = bodyNodes.find((n) => n.op_type === 'Mul' && n.input!.includes(delta!))!;
      const A = mulDA.input!.find((x) => x !== delta)!;
      expect(initNames.has(A)).toBe(true);
      expect(g.initializer!.find((t) => t.name === A)!.dims).toEqual([2, cfg.N, cfg.E]);
      expect(bodyNodes.some((n) => n.op_type === 'Exp' && n.input![0] === mulDA.output![0])).toBe(true);
      // (Δ_t u_t) ⊗ B_t and the decay of h inside the body
      expect(bodyNodes.some((n) => n.op_type === 'Mul' && n.input!.includes(du!) && n.input!.includes(Bt!))).toBe(true);
      expect(bodyNodes.some((n) => n.op_type === 'Mul' && n.input!.includes(hPrev!))).toBe(true);
      // A is read only by the body: the outer graph never forms Δ·A
      expect(g.node!.some((n) => n.input!.includes(A))).toBe(false);
    }
    // the outer graph's only exp() is softplus's e^−|x| for Δ, one per block: the decay factors
    // exp(Δ·A) exist only per token, inside the scans
    expect(g.node!.filter((n) => n.op_type === 'Exp').every((n) => n.name!.includes('/softplus/'))).toBe(true);
    expect(g.node!.filter((n) => n.op_type === 'Exp')).toHaveLength(cfg.depth);
  });

  it('says what it is in its metadata', async () => {
    const meta = readOnnxMetadata(path);
    expect(meta.producer).toBe('vim-webgpu');
    expect(meta.opset).toBe(17);
    expect(meta.classNames).toEqual([...CIFAR10_CLASSES]);
    expect(JSON.parse(meta.props.config!)).toEqual(configToJson(cfg));
    expect(model.producer_name).toBe('vim-webgpu');
    const input = model.graph!.input![0]!.type!.tensor_type!.shape!.dim!;
    expect(input.map((d) => d.dim_value ?? d.dim_param)).toEqual(['batch', 3, 32, 32]);
    const loaded = await OnnxVim.load(path);
    try {
      expect(loaded.classNames).toEqual([...CIFAR10_CLASSES]);
      expect(loaded.cfg.D).toBe(cfg.D);
      const { names, classes } = await loaded.classify(testImages.subarray(0, 2 * IMG), 2);
      expect(names).toHaveLength(2);
      expect(names[0]).toBe(CIFAR10_CLASSES[classes[0]!]);
    } finally {
      await loaded.release();
    }
  });

  it('gives the same logits at every supported opset, and refuses others', async () => {
    const base = await OnnxVim.load(path);
    const images = testImages.subarray(0, 3 * IMG);
    const want = await base.run(images, 3);
    await base.release();
    for (const opset of [18, 21, 23]) {
      const p = join(dir, `nano-opset${opset}.onnx`);
      exportVimOnnx(params, cfg, p, { opset });
      const m = await OnnxVim.load(p);
      expect(m.meta.opset).toBe(opset);
      expect(maxAbsDiff(await m.run(images, 3), want)).toBeLessThan(1e-6);
      await m.release();
    }
    expect(() => buildVimOnnx(cfg, params, { opset: 16 })).toThrow(VimError);
    await expect(exportCli(['--checkpoint', 'x.safetensors', '--out', 'x.onnx', '--opset', '12'])).rejects.toThrow(/--opset/);
  });

  it('evaluates the same on 2 sessions at once in child processes as on one (evaluateOnnx, OnnxWorkerPool)', async () => {
    const one = await OnnxVim.load(path);
    try {
      const data = { images: testImages, labels: Uint8Array.from(loadCifar10Split(undefined, 'test', { verify: false }).labels.subarray(0, 16)), n: 16 };
      const seen: number[] = [];
      for (const flip of [false, true]) {
        const a = await evaluateOnnx(one, data, 5, { flip }); // runs of 5, 5, 5 and 1
        const b = await evaluateOnnx(one, data, 5, { flip, workers: 2, onProgress: (done) => seen.push(done) });
        expect(b.confusion).toEqual(a.confusion);
        expect([b.top1, b.top5]).toEqual([a.top1, a.top5]);
        expect(Math.abs(b.loss - a.loss)).toBeLessThan(1e-6);
      }
      expect(seen.slice(-1)).toEqual([16]);
      // the pool's logits, batch by batch, against the float64 reference
      const pool = await OnnxWorkerPool.open(one.bytes, path, 32, 2, 1);
      try {
        const runs = await Promise.all([0, 7].map((from) => pool.run(testImages.subarray(from * IMG, (from + 7) * IMG), 7)));
        const ref = reference(params, testImages.subarray(0, 14 * IMG), 14);
        expect(maxAbsDiff([...runs[0]!, ...runs[1]!], ref)).toBeLessThan(TOL);
        await expect(pool.run(testImages.subarray(0, 10), 1)).rejects.toThrow(/expected 3072 bytes for a \(1, 3, 32, 32\) u8 batch/);
      } finally {
        expect(await pool.release()).toBe(0); // both processes released their sessions and ended by themselves
      }
      await expect(pool.run(testImages.subarray(0, IMG), 1)).rejects.toThrow(/workers were released/);
      // a session's process that dies fails the pool's runs with a clear error, not a hang
      const broken = await OnnxWorkerPool.open(one.bytes, path, 32, 2, 1);
      (broken as unknown as { slots: { child: { kill(s: string): void } }[] }).slots[0]!.child.kill('SIGKILL');
      await expect(broken.run(testImages.subarray(0, 7 * IMG), 7)).rejects.toThrow(/an onnxruntime process (stopped \(SIGKILL\)|failed: write EPIPE)/); // whichever the parent sees first
      expect(await broken.release()).toBe(0);
      await expect(OnnxWorkerPool.open(new Uint8Array([1, 2, 3]), 'junk.onnx', 32, 2)).rejects.toThrow(/junk\.onnx could not be loaded by onnxruntime in a child process/);
    } finally {
      await one.release();
    }
  });

  it('measures load time and throughput (benchOnnx)', async () => {
    const r = await benchOnnx(path, 2, 1, { threads: 1 });
    expect(r.sessionMs).toBeGreaterThan(0);
    expect(r.imagesPerSecond).toBeGreaterThan(0);
  });

  it('passes onnx.checker.check_model(full_check=True) where the Python onnx package is installed', () => {
    if (PY === null) {
      // CI installs python3-onnx and sets VIM_REQUIRE_ONNX_CHECKER=1, so there this cannot pass unchecked.
      if (process.env.VIM_REQUIRE_ONNX_CHECKER === '1') {
        expect.fail('VIM_REQUIRE_ONNX_CHECKER=1 but `import onnx` fails; install python3-onnx or set VIM_ONNX_PYTHON');
      }
      return;
    }
    // The default opset 17 is what Debian's python3-onnx (1.12) checks; newer opsets need a newer checker.
    runChecker(path);
  });
});

describe('export of vim-nano with float16 weights', () => {
  it('holds every weight once as float16 (A as float32), at half the size, and gives the reference logits of the rounded weights', async () => {
    const cfg = loadConfig('vim-nano');
    const params = initParams(cfg, 12);
    const path = join(dir, 'nano-f16.onnx');
    const r = exportVimOnnx(params, cfg, path, { weights: 'f16' });
    const f32Bytes = exportVimOnnx(params, cfg, join(dir, 'nano-f32.onnx')).bytes;
    expect(r.bytes).toBeLessThan(0.6 * f32Bytes); // A and the graph itself stay as they were
    const model = decodeModel(readFileSync(path));
    const inits = model.graph!.initializer!;
    const size = (t: Tensor) => (t.dims ?? []).reduce((a, d) => a * d, 1);
    const half = inits.filter((t) => t.data_type === DataType.FLOAT16);
    const casts = model.graph!.node!.filter((n) => n.op_type === 'Cast');
    expect(casts.map((n) => n.input![0]).sort()).toEqual(half.map((t) => t.name!).sort());
    for (const t of half) expect(t.raw_data!.length).toBe(2 * size(t));
    const A = inits.filter((t) => t.name!.includes('A.T+A_b.T'));
    expect(A.length).toBe(cfg.depth);
    for (const t of A) expect(t.data_type).toBe(DataType.FLOAT);
    expect(half.reduce((a, t) => a + size(t), 0) + A.reduce((a, t) => a + size(t), 0)).toBe(paramCount(cfg));
    expect(readOnnxMetadata(path).props.weights).toMatch(/^float16/);
    // The model computes with the weights rounded to float16 (A from the unrounded A_log): so must the reference.
    const rounded = ParamSet.zeros32(cfg);
    for (const spec of params.specs) {
      const from = params.get(spec.name);
      const to = rounded.get(spec.name);
      for (let i = 0; i < from.length; i++) to[i] = /A(_b)?_log$/.test(spec.name) ? from[i] : f16BitsToF32(f32ToF16Bits(from[i]));
    }
    await checkAgainstReference(path, rounded, 16);
    if (PY !== null) runChecker(path);
  });
});

describe('export of vim-tiny with random weights', () => {
  it('gives the float64 reference logits on 16 CIFAR-10 test images, at batch 16, 1 and 7', async () => {
    const cfg = loadConfig('vim-tiny');
    const params = initParams(cfg, 5);
    const path = join(dir, 'tiny.onnx');
    const r = exportVimOnnx(params, cfg, path);
    console.log(`vim-tiny: ${r.bytes} bytes, ${r.paramCount} parameters, ${r.nodeCount} nodes + ${r.scanBodyNodeCount} per scan body, ${r.ms.toFixed(0)} ms`);
    const weights = 4 * paramCount(cfg);
    expect(Math.abs(r.bytes - weights)).toBeLessThanOrEqual(0.05 * weights + 100_000);
    // the float64 reference of vim-tiny takes 1–2 s per image in TypeScript
    await checkAgainstReference(path, params, 16);
    if (PY !== null) runChecker(path);
  });
});

describe('export-vim from a checkpoint', () => {
  let ckpt: string;
  let logSpy: ReturnType<typeof vi.spyOn>;

  beforeAll(() => {
    const cfg = loadConfig('vim-nano');
    ckpt = join(dir, 'nano.safetensors');
    saveCheckpoint(ckpt, initParams(cfg, 99), { recipe: { epochs: 3, lr: 0.001 }, metrics: { test_accuracy: 0.42 } });
    logSpy = vi.spyOn(console, 'log').mockImplementation(() => {});
  });

  afterAll(() => {
    logSpy.mockRestore();
  });

  it('writes a model that matches the reference on the loaded checkpoint, with its metadata', async () => {
    const out = join(dir, 'from-ckpt.onnx');
    expect(await exportCli(['--checkpoint', ckpt, '--out', out, '--model', 'vim-nano'])).toBe(0);
    const printed = logSpy.mock.calls.map((c) => String(c[0])).join('\n');
    expect(printed).toMatch(/parameters/);
    expect(printed).toMatch(/MB/);
    const { params } = loadCheckpoint(ckpt);
    await checkAgainstReference(out, params, 8);
    const meta = readOnnxMetadata(out);
    const fromCkpt = JSON.parse(meta.props.checkpoint_metadata!) as { recipe: unknown; metrics: unknown };
    expect(fromCkpt.recipe).toEqual({ epochs: 3, lr: 0.001 });
    expect(fromCkpt.metrics).toEqual({ test_accuracy: 0.42 });
    expect(meta.props.source_checkpoint).toBe(ckpt);
  });

  it('prints help', async () => {
    expect(await exportCli(['--help'])).toBe(0);
    expect(String(logSpy.mock.calls.at(-1)![0])).toMatch(/--checkpoint FILE/);
    expect(String(logSpy.mock.calls.at(-1)![0])).toMatch(/--opset N/);
  });

  it('with a .safetensors --out and --f16 writes a float16 checkpoint (A_log float32) with the metadata', async () => {
    const small = join(dir, 'nano-f16.safetensors');
    expect(await exportCli(['--checkpoint', ckpt, '--out', small, '--f16'])).toBe(0);
    expect(String(logSpy.mock.calls.at(-1)![0])).toMatch(/float16 \(A_log, A_b_log float32\).*largest weight change/);
    const bytes = readFileSync(small);
    const header = JSON.parse(bytes.subarray(8, 8 + Number(bytes.readBigUInt64LE(0))).toString('utf8')) as Record<string, { dtype: string }>;
    expect(header['layers.0.mixer.A_log']!.dtype).toBe('F32');
    expect(header['layers.0.mixer.A_b_log']!.dtype).toBe('F32');
    expect(header['layers.0.mixer.in_proj.weight']!.dtype).toBe('F16');
    expect(statSync(small).size).toBeLessThan(0.6 * statSync(ckpt).size);
    const a = loadCheckpoint(ckpt);
    const b = loadCheckpoint(small);
    for (const spec of a.params.specs) {
      const x = a.params.get(spec.name);
      const y = b.params.get(spec.name);
      const exact = /A(_b)?_log$/.test(spec.name);
      for (let i = 0; i < x.length; i++) {
        if (exact) expect(y[i]).toBe(x[i]);
        else expect(Math.abs(y[i]! - x[i]!)).toBeLessThanOrEqual(Math.abs(x[i]!) * 2 ** -11 + 2 ** -25); // f16 rounding
      }
    }
    expect(b.meta.recipe).toEqual({ epochs: 3, lr: 0.001 });
    expect(b.meta.metrics).toEqual({ test_accuracy: 0.42 });
    expect([b.meta.converted_from, b.meta.stored_as]).toEqual(['nano.safetensors', 'F16']);
    await expect(exportCli(['--checkpoint', ckpt, '--out', ckpt, '--f16'])).rejects.toThrow(/is the --checkpoint itself/);
  });

  it('refuses a checkpoint whose config is not --model', async () => {
    await expect(exportCli(['--checkpoint', ckpt, '--out', join(dir, 'x.onnx'), '--model', 'vim-tiny']))
      .rejects.toThrow(VimError);
    await expect(exportCli(['--checkpoint', ckpt, '--out', join(dir, 'x.onnx'), '--model', 'vim-tiny']))
      .rejects.toThrow(/vim-nano.*vim-tiny|--model vim-nano/s);
  });

  it('refuses an output path that cannot be written, naming it', async () => {
    const file = join(dir, 'a-file');
    writeFileSync(file, 'x');
    const under = join(file, 'model.onnx'); // a folder that is a file
    await expect(exportCli(['--checkpoint', ckpt, '--out', under])).rejects.toThrow(VimError);
    await expect(exportCli(['--checkpoint', ckpt, '--out', under])).rejects.toThrow(under);
    const missing = join(dir, 'no-such-folder', 'model.onnx');
    await expect(exportCli(['--checkpoint', ckpt, '--out', missing])).rejects.toThrow(/does not exist/);
    const folder = join(dir, 'a-folder');
    mkdirSync(folder);
    await expect(exportCli(['--checkpoint', ckpt, '--out', folder])).rejects.toThrow(/is a folder/);
  });

  it('refuses missing arguments and unknown options', async () => {
    await expect(exportCli(['--out', join(dir, 'x.onnx')])).rejects.toThrow(/--checkpoint is required/);
    await expect(exportCli(['--checkpoint', ckpt])).rejects.toThrow(/--out is required/);
    await expect(exportCli(['--checkpoint', ckpt, '--out', 'x.onnx', '--frobnicate'])).rejects.toThrow(/unknown option.*frobnicate/i);
    await expect(exportCli(['--checkpoint', join(dir, 'missing.safetensors'), '--out', join(dir, 'x.onnx')])).rejects.toThrow(VimError);
  });
});

describe('loading a file that is not an ONNX model', () => {
  it('is a VimError that says so', async () => {
    const text = join(dir, 'notes.onnx');
    writeFileSync(text, 'this is not a model\n');
    await expect(OnnxVim.load(text)).rejects.toThrow(/is not an ONNX model/);
    const empty = join(dir, 'empty.onnx');
    writeFileSync(empty, '');
    await expect(OnnxVim.load(empty)).rejects.toThrow(/is not an ONNX model: the file is empty/);
    const ckpt = join(dir, 'ck.safetensors');
    saveCheckpoint(ckpt, initParams(loadConfig('vim-nano'), 1));
    await expect(OnnxVim.load(ckpt)).rejects.toThrow(VimError);
    await expect(OnnxVim.load(ckpt)).rejects.toThrow(/is not an ONNX model/);
    await expect(OnnxVim.load(join(dir, 'nope.onnx'))).rejects.toThrow(/no such file/);
    // a truncated export
    const cfg = loadConfig('vim-nano');
    const whole = buildVimOnnx(cfg, initParams(cfg, 2));
    const cut = join(dir, 'cut.onnx');
    writeFileSync(cut, whole.subarray(0, whole.length >> 1));
    await expect(OnnxVim.load(cut)).rejects.toThrow(/is not an ONNX model/);
  });
});

describe('the ONNX wire format', () => {
  const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

  it('uses the ONNX field numbers, with proto2 repeated scalars unpacked unless marked packed', () => {
    // TensorProto: dims = 1 (one varint tag per value), data_type = 2, name = 8, raw_data = 9
    expect(hex(encodeMessage('TensorProto', { dims: [2, 3], data_type: 1, name: 'w', raw_data: new Uint8Array([1, 2, 3, 4]) })))
      .toBe('0802' + '0803' + '1001' + '420177' + '4a0401020304');
    // float_data = 4 is [packed = true]
    expect(hex(encodeMessage('TensorProto', { dims: [2], data_type: 1, float_data: [1, 2] })))
      .toBe('0802' + '1001' + '2208' + '0000803f' + '00000040');
    // AttributeProto: name = 1, ints = 8 (unpacked), type = 20
    expect(hex(encodeMessage('AttributeProto', { name: 'a', ints: [1, 2], type: 7 }))).toBe('0a0161' + '4001' + '4002' + 'a00107');
    // NodeProto: input = 1, output = 2, name = 3, op_type = 4, domain = 7
    expect(hex(encodeMessage('NodeProto', { input: ['a'], output: ['b'], name: 'n', op_type: 'Relu', domain: '' })))
      .toBe('0a0161' + '120162' + '1a016e' + '220452656c75' + '3a00');
    // ModelProto: ir_version = 1, producer_name = 2, graph = 7, opset_import = 8, metadata_props = 14;
    // GraphProto: name = 2, input = 11; ValueInfoProto: name = 1, type = 2; TypeProto.tensor_type = 1;
    // TypeProto.Tensor: elem_type = 1, shape = 2; TensorShapeProto.dim = 1; Dimension: dim_value = 1, dim_param = 2
    const model = encodeModel({
      ir_version: 8, producer_name: 'p',
      graph: { name: 'g', input: [{ name: 'x', type: { tensor_type: { elem_type: 1, shape: { dim: [{ dim_param: 'b' }, { dim_value: 3 }] } } } }] },
      opset_import: [{ domain: '', version: 17 }],
      metadata_props: [{ key: 'k', value: 'v' }],
    });
    expect(hex(model)).toBe(
      '0808' + '120170' +
      '3a19' + '120167' + '5a14' + '0a0178' + '120f' + '0a0d' + '0801' + '1209' + '0a03' + '120162' + '0a02' + '0803' +
      '4204' + '0a00' + '1011' +
      '7206' + '0a016b' + '120176',
    );
  });
});
