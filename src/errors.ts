/**
 * The one error class for problems a user can cause or fix: a bad path, a corrupt file, a wrong
 * shape, a missing GPU. The message says what was wrong and what to do. CLIs print it without a
 * stack trace and exit non-zero; anything else that is thrown is a bug and keeps its stack.
 */
export class VimError extends Error {
  override readonly name = 'VimError';
  /**
   * What is wrong with the thing the message names, alone: without the name in front and without
   * what follows (the advice, the conclusion), worded to stand in another message (e.g. "the run's
   * state … is damaged (<reason>)"). Undefined where the message has no such part.
   */
  readonly reason: string | undefined;
  constructor(message: string, reason?: string) {
    super(message);
    this.reason = reason;
  }

  /** `where: reason`, with `; tail` after it where given (the value found, the conclusion, the advice). */
  static at(where: string, reason: string, tail?: string): VimError {
    return new VimError(tail === undefined ? `${where}: ${reason}` : `${where}: ${reason}; ${tail}`, reason);
  }
}

export function isVimError(e: unknown): e is VimError {
  return e instanceof VimError;
}
