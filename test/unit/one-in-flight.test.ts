import { describe, expect, it } from 'vitest';
import { OneInFlight } from '../../src/jobs/one-in-flight.js';

/** A promise and the functions that settle it. */
function deferred(): { promise: Promise<void>; resolve: () => void; reject: (err: Error) => void } {
  let resolve!: () => void;
  let reject!: (err: Error) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

describe('OneInFlight', () => {
  it('returns while an operation runs, and starts the next only after it', async () => {
    const q = new OneInFlight();
    const first = deferred();
    const log: string[] = [];
    await q.submit(async () => {
      log.push('first started');
      await first.promise;
      log.push('first done');
    });
    // The caller is free while the first operation is in flight.
    log.push('caller');
    const second = q.submit(() => {
      log.push('second started');
      return Promise.resolve();
    });
    await Promise.resolve();
    expect(log).toEqual(['first started', 'caller']);
    first.resolve();
    await second;
    await q.drain();
    expect(log).toEqual(['first started', 'caller', 'first done', 'second started']);
  });

  it('rethrows a failed operation at the next submit, without starting it, and at drain', async () => {
    const q = new OneInFlight();
    const op = deferred();
    await q.submit(() => op.promise);
    // Rejected while nobody awaits it: held, not an unhandled rejection.
    op.reject(new Error('redis went away'));
    await new Promise((resolve) => setImmediate(resolve));
    let started = false;
    await expect(
      q.submit(() => {
        started = true;
        return Promise.resolve();
      }),
    ).rejects.toThrow('redis went away');
    expect(started).toBe(false);
    await expect(q.drain()).rejects.toThrow('redis went away');
  });
});
