import { inspect } from 'node:util';
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

/**
 * Turns anything a job threw or rejected with into an `Error` the runner, its log and the dead-letter
 * record can read. Never throws, whatever the value: a circular object, a BigInt, null, a Symbol, an
 * object whose getters or `toString` throw, a revoked Proxy. (A throw here once escaped as an
 * unhandled rejection, or left a run unfinished with its permit held.)
 *
 * An `Error` whose `name`, `message`, `stack` and own enumerable properties all read cleanly is
 * returned as is (its class, `code` and `cause` matter to retries and records); anything else becomes
 * an `Error` whose message describes the value (`util.inspect`, which handles cycles, BigInts and
 * getters without calling them), prefixed with what kind of value it was.
 */
export function toError(err: unknown): Error {
  try {
    if (err instanceof Error && readsCleanly(err)) return err;
  } catch {
    // `instanceof` itself threw (a Proxy with a throwing getPrototypeOf trap): describe it below.
  }
  return new Error(describeThrown(err));
}

function readsCleanly(err: Error): boolean {
  try {
    for (const key of ['name', 'message', 'stack', ...Object.keys(err)]) {
      const value: unknown = (err as unknown as Record<string, unknown>)[key];
      if ((key === 'name' || key === 'message') && typeof value !== 'string') return false;
    }
    return true;
  } catch {
    return false;
  }
}

/** A one-line description of a thrown non-Error (or unreadable Error) value; never throws. */
export function describeThrown(value: unknown): string {
  if (typeof value === 'string') return value;
  try {
    const kind = value === null ? 'null' : typeof value;
    const text = inspect(value, { depth: 2, breakLength: Infinity, maxStringLength: 1000, getters: false });
    return `non-Error value thrown (${kind}): ${text}`;
  } catch {
    return 'non-Error value thrown (it could not be described)';
  }
}
