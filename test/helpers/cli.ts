/**
 * Running the built commands as a user types them (node dist/cli/<cmd>.js …) from tests, and
 * building dist/ first when it is older than the sources.
 */
import { spawn, spawnSync } from 'node:child_process';
import { expect } from 'vitest';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = resolve(fileURLToPath(new URL('../..', import.meta.url)));

export interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
  /** stderr without Dawn's start-up warnings */
  errors: string[];
}

/**
 * Runs dist/cli/CMD.js in cwd. When onStdout first returns true for the output so far, the child is
 * sent each of `signals` at once (default: one SIGINT, as Ctrl-C sends).
 */
export function runCommand(cwd: string, cmd: string, args: string[], onStdout?: (text: string) => boolean, signals: NodeJS.Signals[] = ['SIGINT']): Promise<Ran> {
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, [join(ROOT, 'dist', 'cli', `${cmd}.js`), ...args], {
      cwd, env: { ...process.env, FORCE_COLOR: '0' }, stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    let signalled = false;
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      if (!signalled && onStdout?.(stdout)) {
        signalled = true;
        for (const signal of signals) child.kill(signal);
      }
    });
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', fail);
    child.on('close', (code) => {
      const errors = stderr.split('\n').filter((l) => l.trim() !== '' && !/^Warning: /.test(l));
      done({ code, stdout, stderr, errors });
    });
  });
}

/** Newest modification time (ms) of the files under a folder. */
function newest(dir: string): number {
  let t = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    t = Math.max(t, e.isDirectory() ? newest(p) : statSync(p).mtimeMs);
  }
  return t;
}

/** Build dist/ with the project's TypeScript compiler unless every command is newer than src/. */
export function buildIfStale(): void {
  const outs = ['train-vim', 'eval-vim', 'predict-vim', 'export-vim', 'bench-vim'].map((c) => join(ROOT, 'dist', 'cli', `${c}.js`));
  if (outs.every(existsSync) && Math.min(...outs.map((f) => statSync(f).mtimeMs)) > newest(join(ROOT, 'src'))) return;
  const tsc = spawnSync(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(ROOT, 'tsconfig.json')], {
    cwd: ROOT, encoding: 'utf8',
  });
  if (tsc.status !== 0) throw new Error(`the build failed:\n${tsc.stdout}${tsc.stderr}`);
}

/** A user error: exit code 1 and exactly one `<cmd>: error: …` line matching `message`, no stack trace. */
export function expectOneLineError(r: Ran, cmd: string, args: readonly string[], message: RegExp): void {
  const what = `${cmd} ${args.join(' ')}: ${r.stderr}`;
  expect(r.code, what).toBe(1);
  expect(r.errors.length, what).toBe(1);
  expect(r.errors[0], what).toMatch(new RegExp(`^${cmd}: error: `));
  expect(r.errors[0], what).toMatch(message);
  expect(r.stderr, what).not.toMatch(/\n\s+at /);
}
