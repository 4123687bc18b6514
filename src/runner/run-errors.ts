import type { AbortCause, Outcome } from './run-events.js';

/** The reason an aborted run's signal carries. */
export class AbortError extends Error {
  override readonly name = 'AbortError';
  constructor(readonly abortCause: AbortCause) {
    super(`run aborted: ${abortCause}`);
  }
}

export class TimeoutError extends Error {
  override readonly name = 'TimeoutError';
  readonly code = 'ETIMEOUT';
}

export function timeoutError(timeoutSec: number, cause: unknown): TimeoutError {
  return new TimeoutError(`run exceeded its timeout of ${timeoutSec}s`, { cause });
}

export function outcomeOfAbort(cause: AbortCause | undefined): Outcome {
  return cause === 'timeout' ? 'timeout' : 'cancelled';
}

export function toError(err: unknown): Error {
  return err instanceof Error ? err : new Error(typeof err === 'string' ? err : JSON.stringify(err));
}
