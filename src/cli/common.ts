/**
 * What every command shares: option parsing with errors that name the option, help text, and the
 * top-level handler that prints a VimError as one line (no stack trace) and exits non-zero.
 */
import { parseArgs } from 'node:util';
import { VimError } from '../errors.js';
import { outputPathProblem, sniffModelFile } from '../io/safetensors.js';

export interface OptionSpec {
  type: 'string' | 'boolean';
  short?: string;
  default?: string | boolean;
  multiple?: boolean;
  /** One line for --help, e.g. "training epochs". */
  help: string;
  /** Shown in help as the value's name, e.g. "N" or "FILE". */
  arg?: string;
}

export interface CommandSpec {
  name: string;
  summary: string;
  usage: string;
  options: Record<string, OptionSpec>;
  allowPositionals?: boolean;
  epilog?: string;
}

export interface Parsed {
  values: Record<string, string | boolean | string[] | undefined>;
  positionals: string[];
}

export function helpText(spec: CommandSpec): string {
  const rows = Object.entries(spec.options).map(([k, o]) => {
    const flag = `${o.short ? `-${o.short}, ` : '    '}--${k}${o.type === 'string' ? ` ${o.arg ?? 'VALUE'}` : ''}`;
    const def = o.default !== undefined && o.default !== false ? ` (default: ${String(o.default)})` : '';
    return [flag, `${o.help}${def}`];
  });
  rows.push(['-h, --help', 'show this help']);
  const w = Math.max(...rows.map((r) => r[0].length)) + 2;
  return [
    `${spec.name}: ${spec.summary}`,
    '',
    `usage: ${spec.usage}`,
    '',
    'options:',
    ...rows.map(([a, b]) => `  ${a.padEnd(w)}${b}`),
    ...(spec.epilog ? ['', spec.epilog] : []),
  ].join('\n');
}

/**
 * Negative numbers as option values: `--epochs -3` reads to Node's parseArgs as an option
 * missing its value followed by an unknown option "-3". Joining such a pair into `--epochs=-3`
 * lets the option's own range check answer with a one-line error that names it.
 */
export function joinNegativeValues(spec: CommandSpec, argv: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const o = a.startsWith('--') ? spec.options[a.slice(2)] : undefined;
    const next = argv[i + 1];
    if (o?.type === 'string' && next !== undefined && /^-\d|^-\.\d|^-Infinity$/.test(next)) {
      out.push(`${a}=${next}`);
      i++;
    } else {
      out.push(a);
    }
  }
  return out;
}

/** Edit distance (insertions, deletions, substitutions, adjacent swaps) between two short strings. */
function editDistance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.length][b.length];
}

/** The command's option closest to a mistyped one (`--epocs` → `--epochs`), if one is close. */
export function closestOption(spec: CommandSpec, typed: string): string | undefined {
  const name = typed.replace(/^-+/, '').split('=')[0];
  let best: [string, number] | undefined;
  for (const k of [...Object.keys(spec.options), 'help']) {
    const dist = editDistance(name, k);
    if (dist <= Math.max(1, Math.floor(k.length / 3)) && (best === undefined || dist < best[1])) best = [k, dist];
  }
  return best?.[0];
}

/** Options npm itself has: `npm run X --json` is npm's, not a sign of a missing `--`. */
const NPM_OWN_OPTIONS = new Set(['json']);

/**
 * `npm run train-vim --epochs 1` (no `--` before the options) gives the command's options to npm,
 * which sets npm_config_epochs and passes on only the values. Under `npm run`, name the options
 * npm took and say where the `--` goes.
 */
export function optionsTakenByNpm(spec: CommandSpec, env: NodeJS.ProcessEnv = process.env): VimError | undefined {
  if (env.npm_lifecycle_event !== spec.name) return undefined;
  const taken = Object.keys(spec.options).filter((k) => !NPM_OWN_OPTIONS.has(k) && env[`npm_config_${k.replaceAll('-', '_')}`] !== undefined);
  if (taken.length === 0) return undefined;
  return new VimError(
    `npm took ${taken.map((k) => `--${k}`).join(', ')} for itself, so ${spec.name} never saw ${taken.length === 1 ? 'it' : 'them'}: ` +
    `put -- between the command and its options, e.g. npm run ${spec.name} -- --${taken[0]} …`,
  );
}

/** Parse argv; unknown options and missing values become VimErrors that name the option. */
export function parseCommand(spec: CommandSpec, rawArgv: readonly string[]): Parsed | 'help' {
  if (rawArgv.includes('--help') || rawArgv.includes('-h')) return 'help';
  const byNpm = optionsTakenByNpm(spec);
  if (byNpm !== undefined) throw byNpm;
  const argv = joinNegativeValues(spec, rawArgv);
  const options: Record<string, { type: 'string' | 'boolean'; short?: string; multiple?: boolean }> = {};
  for (const [k, o] of Object.entries(spec.options)) {
    options[k] = { type: o.type, ...(o.short ? { short: o.short } : {}), ...(o.multiple ? { multiple: true } : {}) };
  }
  try {
    const { values, positionals } = parseArgs({
      args: argv, options, allowPositionals: spec.allowPositionals ?? false, strict: true,
    });
    const out: Parsed['values'] = {};
    for (const [k, o] of Object.entries(spec.options)) out[k] = (values as Parsed['values'])[k] ?? o.default;
    return { values: out, positionals };
  } catch (e) {
    const message = (e as Error).message.replace(/\. To specify.*$/s, '');
    const unknown = /^Unknown option '([^']+)'/.exec(message)?.[1];
    const near = unknown !== undefined ? closestOption(spec, unknown) : undefined;
    throw new VimError(`${message}; ${near !== undefined ? `did you mean --${near}? ` : ''}see ${spec.name} --help`);
  }
}

export function stringOpt(p: Parsed, key: string): string | undefined {
  const v = p.values[key];
  return typeof v === 'string' ? v : undefined;
}

export function boolOpt(p: Parsed, key: string): boolean {
  return p.values[key] === true;
}

/** A number option checked against a range: errors name the option and the accepted values. */
export function numberOpt(
  p: Parsed, key: string, opts: { integer?: boolean; min?: number; max?: number; exclusiveMin?: boolean } = {},
): number | undefined {
  const raw = stringOpt(p, key);
  if (raw === undefined) return undefined;
  const v = Number(raw);
  const kind = opts.integer ? 'integer' : 'number';
  const article = opts.integer ? 'an' : 'a';
  const bad = !Number.isFinite(v) || (opts.integer && !Number.isInteger(v)) ||
    (opts.min !== undefined && (opts.exclusiveMin ? v <= opts.min : v < opts.min)) ||
    (opts.max !== undefined && v > opts.max);
  if (bad) {
    const range = [
      opts.min !== undefined ? `${opts.exclusiveMin ? '>' : '≥'} ${opts.min}` : '',
      opts.max !== undefined ? `≤ ${opts.max}` : '',
    ].filter(Boolean).join(' and ');
    throw new VimError(`--${key}: expected ${article} ${kind}${range ? ` ${range}` : ''} but received ${JSON.stringify(raw)}`);
  }
  return v;
}

/**
 * Refuse an output file's path before the work that produces it starts (its folder must exist,
 * be a folder and be writable; the path must not be a folder), naming the option and the path as
 * the user gave it: minutes of evaluation are not lost to a typo in --plot.
 */
export function checkOutputPath(option: string, path: string | undefined): void {
  if (path === undefined) return;
  const problem = outputPathProblem(path);
  if (problem !== undefined) throw new VimError(`--${option}: cannot write ${path}: ${problem}`);
}

/** Refuse an ONNX model given as --checkpoint, before anything else reads it. */
export function refuseOnnxCheckpoint(path: string): void {
  if (sniffModelFile(path) === 'onnx') throw new VimError(`${path} is an ONNX model, not a safetensors checkpoint: pass it with --onnx`);
}

/**
 * Run a command's main function: VimErrors (and a few plain system errors a user causes) print
 * as one line on stderr with exit code 1; anything else is a bug and keeps its stack.
 */
export function runCli(spec: CommandSpec, main: (p: Parsed) => Promise<void>): void {
  const argv = process.argv.slice(2);
  let parsed: Parsed | 'help';
  try {
    parsed = parseCommand(spec, argv);
  } catch (e) {
    fail(spec.name, e);
    return;
  }
  if (parsed === 'help') {
    console.log(helpText(spec));
    return;
  }
  main(parsed).then(
    () => {
      process.exitCode = process.exitCode ?? 0;
    },
    (e) => fail(spec.name, e),
  );
}

function fail(name: string, e: unknown): void {
  if (e instanceof VimError) {
    console.error(`${name}: error: ${e.message}`);
    process.exit(1);
  }
  const code = (e as NodeJS.ErrnoException)?.code;
  if (code === 'ENOENT' || code === 'EACCES' || code === 'EISDIR' || code === 'ENOTDIR') {
    console.error(`${name}: error: ${(e as Error).message}`);
    process.exit(1);
  }
  console.error(e);
  process.exit(2);
}
