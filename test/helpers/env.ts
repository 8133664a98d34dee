/**
 * Environment variables set for the length of a test body: `body` may set or delete them, and
 * withEnv puts each back as it was before (unset if it was), when the body returns, throws or its
 * promise settles.
 */
export function withEnv<T>(names: string | readonly string[], body: () => T): T {
  const keys = typeof names === 'string' ? [names] : names;
  const saved = keys.map((k) => process.env[k]);
  const restore = (): void => keys.forEach((k, i) => {
    if (saved[i] === undefined) delete process.env[k];
    else process.env[k] = saved[i];
  });
  let out: T;
  try {
    out = body();
  } catch (e) {
    restore();
    throw e;
  }
  if (out instanceof Promise) return out.finally(restore) as T;
  restore();
  return out;
}
