/**
 * The one error class for problems a user can cause or fix: a bad path, a corrupt file, a wrong
 * shape, a missing GPU. The message says what was wrong and what to do. CLIs print it without a
 * stack trace and exit non-zero; anything else that is thrown is a bug and keeps its stack.
 */
export class VimError extends Error {
  override readonly name = 'VimError';
  constructor(message: string) {
    super(message);
  }
}

export function isVimError(e: unknown): e is VimError {
  return e instanceof VimError;
}
