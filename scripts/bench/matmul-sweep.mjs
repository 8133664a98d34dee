#!/usr/bin/env node
// Matmul variants timed inside the whole model rather than alone: bench-vim's per-dispatch GPU
// timestamps (exact: src/gpu/device.ts turns off Dawn's rounding of them), one row per kernel and
// problem shape, with one tuning table after another. After `npm run build`:
//
//   node scripts/bench/matmul-sweep.mjs gen DIR [--base FILE] [--candidates FILE]
//   node scripts/bench/matmul-sweep.mjs run DIR [--batch-size 256] [--model vim-tiny] [--gpus N]
//                                       [--steps N] [--warmup N] [--time-limit SECONDS]
//   node scripts/bench/matmul-sweep.mjs pick DIR OUT.json [--min-gain PERCENT]
//
// A problem is `op:IxO` (forward, backward_input or backward_weight of a layer with I input and O
// output features), the key of MATMUL_TUNED (src/gpu/ops/matmul.ts). The candidates file
// (default scripts/bench/matmul-candidates.json) lists, per problem, variants to try: names as
// parseMatmulVariant reads them, or { variant, splitRows } for a weight gradient.
//   gen   writes DIR/cand-0.json … cand-K.json (K = the longest list), tables in the form
//         $VIM_MATMUL_TUNED reads: cand-0 is the base table (MATMUL_TUNED of dist/gpu/ops/matmul.js,
//         or --base FILE: a table, or scripts/bench/matmul.mjs's --json output), and cand-k gives
//         every listed problem its k-th candidate (a problem whose list is shorter keeps its base
//         entry). Every variant is checked before anything is written.
//   run   runs `bench-vim --by-shape --json` with VIM_MATMUL_TUNED=DIR/cand-k.json for every k,
//         then cand-0 once more (the machine's drift shows as a difference), into
//         DIR/run-k-gG.json and .txt (G: the GPU; the repeat is run-0-gG-again); --steps and
//         --warmup go to bench-vim (its defaults otherwise). With --gpus N (default 1: the first
//         adapter, as bench-vim takes it) the tables are shared out over N GPUs of one host, one
//         process a GPU at a time, through scripts/vkdev/on-gpu.sh (each GPU's share ends with
//         cand-0). Each bench-vim has a time limit (--time-limit, default 120 s); one that fails
//         or runs out of time is reported and left out. Earlier run-* files in DIR are removed first.
//   pick  sums, per listed problem and run, the GPU time of the problem's by-shape rows (a weight
//         gradient's split pass and the sum of its partials, `matmul_backward_weight_sum n=I·O`),
//         prints one line per problem (the base's time, the fastest candidate, every time), the
//         images/s of each run, and writes OUT.json: the base table with each problem's fastest
//         candidate where it beats the base by at least --min-gain percent (default 3), usable as
//         VIM_MATMUL_TUNED and printed as MATMUL_TUNED entries. A candidate equal to the base entry
//         counts as a base measurement; the base's time is its fastest measurement.
// Shape letters (bench-vim's by-shape rows): M rows (B·L, batch × tokens), I input and O output
// features, S splits of a weight gradient, n = I·O the elements its partial sums add up.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, openSync, closeSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const BENCH_VIM = join(ROOT, 'dist/cli/bench-vim.js');
const ON_GPU = join(ROOT, 'scripts/vkdev/on-gpu.sh');
const DEFAULT_CANDIDATES = join(ROOT, 'scripts/bench/matmul-candidates.json');
const KEY = /^(forward|backward_input|backward_weight):(\d+)x(\d+)$/;

const USAGE = `usage:
  node scripts/bench/matmul-sweep.mjs gen DIR [--base FILE] [--candidates FILE]
  node scripts/bench/matmul-sweep.mjs run DIR [--batch-size 256] [--model vim-tiny] [--gpus N] [--steps N] [--warmup N] [--time-limit SECONDS]
  node scripts/bench/matmul-sweep.mjs pick DIR OUT.json [--min-gain PERCENT]`;

/** A wrong argument or input: printed with the usage. */
class UsageError extends Error {}
/** A sweep that could not be done (no run succeeded): printed alone. */
class SweepError extends Error {}

// ---- arguments -----------------------------------------------------------------------------------

function options() {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      base: { type: 'string' },
      candidates: { type: 'string' },
      'batch-size': { type: 'string', default: '256' },
      model: { type: 'string', default: 'vim-tiny' },
      gpus: { type: 'string', default: '1' },
      steps: { type: 'string' },
      warmup: { type: 'string' },
      'time-limit': { type: 'string', default: '120' },
      'min-gain': { type: 'string', default: '3' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  const [cmd, ...args] = positionals;
  const want = { gen: 1, run: 1, pick: 2 }[cmd];
  if (want === undefined) throw new UsageError(cmd === undefined ? 'expected a command: gen, run or pick' : `unknown command "${cmd}": expected gen, run or pick`);
  if (args.length !== want) {
    throw new UsageError(`${cmd} takes ${want === 1 ? 'a directory (DIR)' : 'a directory and an output file (DIR OUT.json)'} but received ${args.length} argument(s)${args.length ? `: ${args.join(' ')}` : ''}`);
  }
  const only = { gen: ['base', 'candidates'], run: ['batch-size', 'model', 'gpus', 'steps', 'warmup', 'time-limit'], pick: ['min-gain'] };
  const given = process.argv.slice(2).filter((a) => a.startsWith('--')).map((a) => a.slice(2).split('=')[0]);
  for (const g of given) {
    if (g !== 'help' && !only[cmd].includes(g)) throw new UsageError(`--${g} is not an option of ${cmd} (${cmd} takes ${only[cmd].map((o) => `--${o}`).join(', ')})`);
  }
  const int = (name, min = 1) => {
    if (values[name] === undefined) return undefined;
    const n = Number(values[name]);
    if (!Number.isInteger(n) || n < min) throw new UsageError(`expected an integer of at least ${min} for --${name} but received ${values[name]}`);
    return n;
  };
  const gain = Number(values['min-gain']);
  if (!Number.isFinite(gain) || gain < 0 || gain >= 100) throw new UsageError(`expected a percentage from 0 to 100 for --min-gain but received ${values['min-gain']}`);
  return {
    cmd, dir: args[0], out: args[1], base: values.base, candidates: values.candidates ?? DEFAULT_CANDIDATES,
    batch: int('batch-size'), model: values.model, gpus: int('gpus'), steps: int('steps'), warmup: int('warmup', 0),
    timeLimit: int('time-limit'), minGain: gain / 100,
  };
}

// ---- tables and candidates --------------------------------------------------------------------------

async function matmulModule() {
  try {
    return await import('../../dist/gpu/ops/matmul.js');
  } catch (e) {
    if (e?.code === 'ERR_MODULE_NOT_FOUND') throw new UsageError('dist/ is missing: run `npm run build` first');
    throw e;
  }
}

function readJson(file, what) {
  let text;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new UsageError(`cannot read the ${what} ${file} (${e.code ?? e.message})`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new UsageError(`the ${what} ${file} is not JSON (${e.message})`);
  }
}

/**
 * A table from a file (an object of entries, or scripts/bench/matmul.mjs's --json output): every
 * entry checked by the op layer's checkMatmulTable, whose VimError becomes a UsageError.
 */
function readTable(file, what, checkMatmulTable) {
  const json = readJson(file, what);
  return asUsage(() => checkMatmulTable(json, `the ${what} ${file}`));
}

/** f(), with the op layer's VimError (a bad table or candidate) reported as a UsageError. */
function asUsage(f) {
  try {
    return f();
  } catch (e) {
    if (e?.name === 'VimError') throw new UsageError(e.message);
    throw e;
  }
}

const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);


const candFiles = (dir) => readdirSync(dir).filter((f) => /^cand-\d+\.json$/.test(f));
const RUN_FILE = /^run-(\d+)-g(\d+)(-again)?\.json$/;

// ---- gen ---------------------------------------------------------------------------------------------

async function gen(opts) {
  const { MATMUL_TUNED, checkMatmulEntry, checkMatmulTable } = await matmulModule();
  const base = opts.base ? readTable(opts.base, 'base table', checkMatmulTable) : { ...MATMUL_TUNED };
  const json = readJson(opts.candidates, 'candidates file');
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new UsageError(`the candidates file ${opts.candidates} must hold an object: problem ('forward:192x768') → list of candidates`);
  }
  const lists = {};
  for (const [key, list] of Object.entries(json)) {
    if (key.startsWith('_')) continue; // comments
    if (!Array.isArray(list) || list.length === 0) {
      throw new UsageError(`${opts.candidates}: problem '${key}' must have a non-empty list of candidates but has ${JSON.stringify(list)}`);
    }
    list.forEach((c, i) => asUsage(() => checkMatmulEntry(key, c, `${opts.candidates}: problem '${key}', candidate ${i + 1}`)));
    lists[key] = list;
  }
  const K = Math.max(0, ...Object.values(lists).map((l) => l.length));
  if (K === 0) throw new UsageError(`${opts.candidates} lists no problems: nothing to sweep`);
  mkdirSync(opts.dir, { recursive: true });
  for (const f of candFiles(opts.dir)) rmSync(join(opts.dir, f)); // tables of an earlier gen
  for (let k = 0; k <= K; k++) {
    const t = { ...base };
    for (const [key, list] of Object.entries(lists)) if (k > 0 && list[k - 1] !== undefined) t[key] = list[k - 1];
    writeFileSync(join(opts.dir, `cand-${k}.json`), `${JSON.stringify(t, null, 1)}\n`);
    const changed = Object.keys(lists).filter((key) => !same(t[key], base[key]));
    console.log(`cand-${k}.json: ${k === 0 ? 'the base table' : `${changed.length} of ${Object.keys(lists).length} problems differ from the base`}`);
  }
  console.log(`${K + 1} tables in ${opts.dir} for ${Object.keys(lists).length} problems (base: ${opts.base ?? 'MATMUL_TUNED of dist/gpu/ops/matmul.js'}; candidates: ${opts.candidates})`);
}

// ---- run ---------------------------------------------------------------------------------------------

/** One bench-vim, its output in DIR/NAME.txt; resolves to null on success, else what went wrong. */
function benchOnce(opts, k, gpu, name) {
  const args = [BENCH_VIM, '--model', opts.model, '--batch-size', String(opts.batch), '--by-shape', '--json', join(opts.dir, `${name}.json`)];
  if (opts.steps !== undefined) args.push('--steps', String(opts.steps));
  if (opts.warmup !== undefined) args.push('--warmup', String(opts.warmup));
  const [cmd, argv] = opts.gpus > 1 ? ['bash', [ON_GPU, String(gpu), process.execPath, ...args]] : [process.execPath, args];
  const fd = openSync(join(opts.dir, `${name}.txt`), 'w');
  const env = { ...process.env, VIM_MATMUL_TUNED: resolve(opts.dir, `cand-${k}.json`) };
  return new Promise((done) => {
    const child = spawn(cmd, argv, { cwd: ROOT, env, stdio: ['ignore', fd, fd] });
    let timedOut = false;
    let kill9;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGTERM');
      kill9 = setTimeout(() => child.kill('SIGKILL'), 10_000);
    }, opts.timeLimit * 1000);
    child.on('error', (e) => {
      clearTimeout(timer);
      closeSync(fd);
      done(`could not start ${cmd} (${e.message})`);
    });
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      clearTimeout(kill9);
      closeSync(fd);
      if (timedOut) done(`ran past its time limit of ${opts.timeLimit} s (--time-limit)`);
      else if (code !== 0) done(`exited with ${signal ? `signal ${signal}` : `status ${code}`}`);
      else if (!existsSync(join(opts.dir, `${name}.json`))) done('wrote no JSON');
      else done(null);
    });
  });
}

async function run(opts) {
  if (!existsSync(BENCH_VIM)) throw new UsageError('dist/cli/bench-vim.js is missing: run `npm run build` first');
  if (!existsSync(opts.dir)) throw new UsageError(`${opts.dir} does not exist: write the tables first with \`node scripts/bench/matmul-sweep.mjs gen ${opts.dir}\``);
  let K = -1;
  while (existsSync(join(opts.dir, `cand-${K + 1}.json`))) K++;
  if (K < 1) throw new UsageError(`${opts.dir} has no cand-0.json and cand-1.json: write them first with \`node scripts/bench/matmul-sweep.mjs gen ${opts.dir}\``);
  if (opts.gpus > 1) { // build the layer once, before the GPUs' processes start side by side
    const r = spawnSync('bash', [ON_GPU, '0', 'true'], { cwd: ROOT, encoding: 'utf8' });
    if (r.status !== 0) throw new UsageError(`--gpus ${opts.gpus} runs each bench-vim through scripts/vkdev/on-gpu.sh, which failed: ${(r.stderr || r.stdout || r.error?.message || '').trim()}`);
  }
  for (const f of readdirSync(opts.dir)) if (/^run-\d+-g\d+(-again)?\.(json|txt)$/.test(f)) rmSync(join(opts.dir, f));

  // Contiguous shares of cand-0 … cand-K, one a GPU, each ending with cand-0.
  const per = Math.ceil((K + 1) / opts.gpus);
  const shares = [];
  for (let g = 0; g < opts.gpus && g * per <= K; g++) {
    const ks = [];
    for (let k = g * per; k <= Math.min(K, (g + 1) * per - 1); k++) ks.push(k);
    shares.push([...ks, 0]);
  }
  const extra = [opts.steps !== undefined ? `--steps ${opts.steps}` : '', opts.warmup !== undefined ? `--warmup ${opts.warmup}` : ''].filter(Boolean).join(' ');
  console.log(`bench-vim --model ${opts.model} --batch-size ${opts.batch} --by-shape${extra ? ` ${extra}` : ''}, VIM_MATMUL_TUNED=cand-0 … cand-${K}; ` +
    `${shares.length} GPU(s): ${shares.map((s, g) => `${g}: ${s.join(' ')}`).join('; ')}; at most ${opts.timeLimit} s each`);
  const t0 = performance.now();
  const failed = [];
  await Promise.all(shares.map(async (ks, g) => {
    const seen = new Set();
    for (const k of ks) {
      const name = `run-${k}-g${g}${seen.has(k) ? '-again' : ''}`;
      seen.add(k);
      const t = performance.now();
      const why = await benchOnce(opts, k, g, name);
      const s = ((performance.now() - t) / 1e3).toFixed(0);
      if (why) {
        failed.push(name);
        console.log(`${name}: FAILED, ${why}; see ${join(opts.dir, `${name}.txt`)} (left out)`);
      } else {
        let ips;
        try {
          ips = readJson(join(opts.dir, `${name}.json`), 'bench-vim output').train.imagesPerSecond;
        } catch (e) {
          failed.push(name);
          console.log(`${name}: FAILED, its JSON cannot be read (${e.message}) (left out)`);
          rmSync(join(opts.dir, `${name}.json`), { force: true });
          continue;
        }
        console.log(`${name}: ${ips.toFixed(ips < 100 ? 2 : 0)} images/s, ${s} s`);
      }
    }
  }));
  const total = shares.reduce((a, s) => a + s.length, 0);
  if (failed.length === total) throw new SweepError(`every bench-vim failed: see the run-*.txt files in ${opts.dir}`);
  console.log(`${total - failed.length} runs in ${((performance.now() - t0) / 1e3).toFixed(0)} s` +
    `${failed.length ? `; ${failed.length} failed: ${failed.join(' ')}` : ''}; next: node scripts/bench/matmul-sweep.mjs pick ${opts.dir} OUT.json`);
}

// ---- pick --------------------------------------------------------------------------------------------

/** Layer names of a config's problems (the I×O of src/model/vim-gpu.ts's matmuls). */
function layerNames(cfg) {
  const n = {};
  n[`${cfg.D}x${2 * cfg.E}`] = 'in_proj';
  n[`${cfg.E}x${cfg.R + 2 * cfg.N}`] = 'x_proj';
  n[`${cfg.R}x${cfg.E}`] = 'dt_proj';
  n[`${cfg.E}x${cfg.D}`] = 'out_proj';
  n[`${3 * cfg.P * cfg.P}x${cfg.D}`] = 'patch_embed';
  n[`${cfg.D}x${cfg.C}`] = 'head';
  return n;
}

async function pick(opts) {
  const { checkMatmulTable, matmulEntrySource } = await matmulModule();
  const entrySource = (e) => (e === undefined ? '(the size rule)' : matmulEntrySource(e));
  if (!existsSync(opts.dir)) throw new UsageError(`${opts.dir} does not exist: run gen and run first`);
  const tables = {};
  for (const f of candFiles(opts.dir)) tables[+/\d+/.exec(f)[0]] = readTable(join(opts.dir, f), 'table', checkMatmulTable);
  const base = tables[0];
  if (!base) throw new UsageError(`${opts.dir} has no cand-0.json: write the tables with \`node scripts/bench/matmul-sweep.mjs gen ${opts.dir}\``);
  // The listed problems: those whose entry differs between the tables.
  const keys = [...new Set(Object.values(tables).flatMap((t) => Object.keys(t)))]
    .filter((key) => Object.values(tables).some((t) => !same(t[key], base[key])));
  const runs = readdirSync(opts.dir).filter((f) => RUN_FILE.test(f)).sort((a, b) => {
    const [, ka, ga, ra] = RUN_FILE.exec(a);
    const [, kb, gb, rb] = RUN_FILE.exec(b);
    return +ga - +gb || (ra ? Infinity : +ka) - (rb ? Infinity : +kb); // the order they ran in
  });
  if (runs.length === 0) throw new UsageError(`${opts.dir} has no run-*.json: time the tables first with \`node scripts/bench/matmul-sweep.mjs run ${opts.dir}\``);

  const times = Object.fromEntries(keys.map((k) => [k, []])); // key → [{ cand, ms, isBase }]
  const info = [];
  let config;
  for (const f of runs) {
    const cand = +RUN_FILE.exec(f)[1];
    const d = readJson(join(opts.dir, f), 'bench-vim output');
    if (!Array.isArray(d.kernels) || !d.train) throw new UsageError(`${join(opts.dir, f)} is not bench-vim --json output (no train or kernels)`);
    if (!d.kernels.some((r) => r.shape)) {
      throw new UsageError(`${join(opts.dir, f)} has no by-shape rows: bench-vim ran without --by-shape, or the adapter has no timestamp queries`);
    }
    if (config !== undefined && d.config !== config) throw new UsageError(`${opts.dir} mixes runs of ${config} and ${d.config}: run again`);
    config = d.config;
    info.push({ f, d });
    if (tables[cand] === undefined) throw new UsageError(`${f} timed cand-${cand}.json, which ${opts.dir} no longer has: run again`);
    const per = {};
    const sums = {};
    for (const r of d.kernels) {
      const m = /^M=\d+ I=(\d+) O=(\d+)/.exec(r.shape ?? '');
      const op = /^matmul_(forward|backward_input|backward_weight)$/.exec(r.kernel);
      if (op && m) per[`${op[1]}:${m[1]}x${m[2]}`] = (per[`${op[1]}:${m[1]}x${m[2]}`] ?? 0) + r.ms;
      const s = /^n=(\d+)/.exec(r.shape ?? '');
      if (r.kernel === 'matmul_backward_weight_sum' && s) sums[+s[1]] = (sums[+s[1]] ?? 0) + r.ms;
    }
    for (const key of keys) {
      if (per[key] === undefined) continue;
      let ms = per[key];
      const [, op, I, O] = KEY.exec(key);
      if (op === 'backward_weight') ms += sums[+I * +O] ?? 0;
      times[key].push({ cand, ms, isBase: same(tables[cand][key], base[key]) });
    }
  }
  // Weight gradients of one I·O share their sums' rows: both are charged with both.
  const wg = keys.filter((k) => k.startsWith('backward_weight:')).map((k) => KEY.exec(k)).map((m) => +m[2] * +m[3]);
  if (new Set(wg).size < wg.length) console.log('(two weight gradients have the same I·O: their partial sums cannot be told apart and count for both)');

  let names = {};
  try {
    const { loadConfig } = await import('../../dist/model/config.js');
    names = layerNames(loadConfig(config));
  } catch { /* a config no longer there: no layer names */ }
  const layer = (key) => names[key.split(':')[1]] ?? '';

  const best = { ...base };
  const notes = {};
  const w = Math.max(24, ...keys.map((k) => k.length));
  console.log(`${config}, ${info.length} runs; per problem, GPU ms a training step (* = the base entry; kept: the fastest beats the base by ≥ ${(100 * opts.minGain).toFixed(0)}%)`);
  let kept = 0;
  for (const key of keys) {
    const list = times[key];
    if (list.length === 0) {
      console.log(`${key.padEnd(w)} not in ${config}'s training step (no by-shape rows): left as it is`);
      continue;
    }
    const baseMs = Math.min(...list.filter((x) => x.isBase).map((x) => x.ms));
    const win = list.reduce((a, x) => (x.ms < a.ms ? x : a));
    const entry = tables[win.cand][key];
    const gain = 1 - win.ms / baseMs;
    const keep = !win.isBase && win.ms < (1 - opts.minGain) * baseMs;
    const verdict = !Number.isFinite(baseMs) ? 'the base did not run: not kept' : win.isBase ? 'the base is fastest' : `${(100 * gain).toFixed(1)}% faster: ${keep ? 'kept' : 'not kept'}`;
    console.log(`${key.padEnd(w)} ${layer(key).padEnd(11)} base ${baseMs.toFixed(3)} ms; fastest cand ${win.cand} ${JSON.stringify(entry)} ${win.ms.toFixed(3)} ms (${verdict}); ` +
      `all: ${list.map((x) => `${x.cand}${x.isBase ? '*' : ''}:${x.ms.toFixed(3)}`).join(' ')}`);
    if (keep && Number.isFinite(baseMs)) {
      best[key] = entry;
      notes[key] = `${baseMs.toFixed(3)} → ${win.ms.toFixed(3)} ms a step (was ${typeof base[key] === 'string' ? base[key] : entrySource(base[key]).replace(/'/g, '')})`;
      kept++;
    }
  }
  console.log('');
  for (const { f, d } of info) {
    const ips = d.train.imagesPerSecond;
    console.log(`${f.replace(/\.json$/, '').padEnd(18)} ${ips.toFixed(ips < 100 ? 2 : 0).padStart(8)} images/s  ${d.train.gpuMs === null ? '' : `${d.train.gpuMs.toFixed(2)} ms GPU`}`);
  }
  // The base first and last on one GPU: how much the machine drifted meanwhile.
  for (const { f, d } of info.filter((x) => /-again\.json$/.test(x.f))) {
    const first = info.find((x) => x.f === f.replace('-again', ''));
    if (first && first.d.train.gpuMs && d.train.gpuMs) {
      const drift = d.train.gpuMs / first.d.train.gpuMs - 1;
      console.log(`${f.replace(/\.json$/, '')}: the base's GPU time ${drift >= 0 ? '+' : ''}${(100 * drift).toFixed(1)}% against its first run${Math.abs(drift) >= opts.minGain ? ': UNSTEADY, the machine\'s speed changed; the ranking is not evidence' : ''}`);
    }
  }

  writeFileSync(opts.out, `${JSON.stringify(best, null, 1)}\n`);
  console.log(`\nMATMUL_TUNED entries (src/gpu/ops/matmul.ts) of ${opts.out}:`);
  for (const [key, e] of Object.entries(best)) {
    const note = [layer(key), notes[key]].filter(Boolean).join(': ');
    console.log(`  '${key}': ${entrySource(e)},${note ? ` // ${note}` : ''}`);
  }
  console.log(`\npicked: ${kept} of ${keys.length} problems changed from the base (≥ ${(100 * opts.minGain).toFixed(0)}% faster); table → ${opts.out} (VIM_MATMUL_TUNED=${opts.out} to use it)`);
}

// ---- main ------------------------------------------------------------------------------------------

try {
  const opts = options();
  await { gen, run, pick }[opts.cmd](opts);
} catch (e) {
  if (e instanceof UsageError || e?.code?.startsWith?.('ERR_PARSE_ARGS')) {
    console.error(`matmul-sweep: ${e.message}\n${USAGE}`);
    process.exit(2);
  }
  if (!(e instanceof SweepError)) throw e;
  console.error(`matmul-sweep: ${e.message}`);
  process.exit(1);
}
