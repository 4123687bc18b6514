import { describe, expect, it } from 'vitest';
import { backoffUntil, jitter } from '../../src/runner/backoff.js';
import { isTransientError, retryDelayMs } from '../../src/runner/retry.js';
import { nextFireAt } from '../../src/runner/schedule.js';
import { PrioritySemaphore } from '../../src/runner/semaphore.js';

const T0 = Date.UTC(2026, 0, 1, 0, 0, 0);

describe('nextFireAt', () => {
  it('puts interval ticks on a grid anchored at start, skipping missed points', () => {
    const every10 = { kind: 'interval', intervalSec: 10 } as const;
    expect(nextFireAt(every10, T0, T0)).toBe(T0 + 10_000);
    expect(nextFireAt(every10, T0 + 10_000, T0)).toBe(T0 + 20_000);
    expect(nextFireAt(every10, T0 + 10_001, T0)).toBe(T0 + 20_000);
    expect(nextFireAt(every10, T0 + 95_000, T0)).toBe(T0 + 100_000);
  });

  it('follows croner patterns with a seconds field in the configured time zone', () => {
    expect(nextFireAt({ kind: 'cron', pattern: '*/15 * * * * *', timezone: 'UTC' }, T0 + 1, T0)).toBe(
      T0 + 15_000,
    );
    // 09:00 in Berlin on 1 Jan 2026 is 08:00 UTC.
    expect(nextFireAt({ kind: 'cron', pattern: '0 0 9 * * *', timezone: 'Europe/Berlin' }, T0, T0)).toBe(
      Date.UTC(2026, 0, 1, 8, 0, 0),
    );
  });
});

describe('backoffUntil', () => {
  const policy = { afterFailures: 3, baseSec: 1, maxSec: 300 };
  it('applies from the third failure: 8 s, 16 s, 32 s … times u, capped', () => {
    expect(backoffUntil(policy, 2, T0, 1)).toBeNull();
    expect(backoffUntil(policy, 3, T0, 1)).toBe(T0 + 8_000);
    expect(backoffUntil(policy, 4, T0, 1)).toBe(T0 + 16_000);
    expect(backoffUntil(policy, 5, T0, 0.5)).toBe(T0 + 16_000);
    expect(backoffUntil(policy, 9, T0, 1)).toBe(T0 + 300_000);
    expect(backoffUntil(policy, 5000, T0, 1)).toBe(T0 + 300_000);
  });
  it('draws jitter in [0.5, 1]', () => {
    expect(jitter(() => 0)).toBe(0.5);
    expect(jitter(() => 0.999999)).toBeLessThan(1);
    expect(jitter(() => 0.5)).toBe(0.75);
  });
});

describe('retry classification', () => {
  it('retries connection and timeout errors, including wrapped ones, but not bugs', () => {
    expect(isTransientError(Object.assign(new Error('x'), { code: 'ECONNREFUSED' }))).toBe(true);
    expect(isTransientError(new Error('Connection is closed.'))).toBe(true);
    expect(
      isTransientError(new Error('outer', { cause: Object.assign(new Error('in'), { code: 'ECONNRESET' }) })),
    ).toBe(true);
    expect(isTransientError(new Error('Syntax error: failed at position 1'))).toBe(false);
    expect(isTransientError(Object.assign(new Error('Connection is closed.'), { transient: false }))).toBe(
      false,
    );
    expect(isTransientError('ECONNREFUSED')).toBe(false);
  });
  it('waits 1 s then 2 s, times jitter', () => {
    expect([retryDelayMs(1, 1), retryDelayMs(2, 1), retryDelayMs(2, 0.5)]).toEqual([1000, 2000, 1000]);
  });
});

describe('PrioritySemaphore', () => {
  it('rejects a bad permit count with what it expected and what it got', () => {
    expect(() => new PrioritySemaphore(0)).toThrow(
      'PrioritySemaphore: expected permits to be an integer >= 1, got 0',
    );
  });

  it('grants by priority then arrival, and an aborted waiter leaves the queue without a permit', async () => {
    const sem = new PrioritySemaphore(1);
    const first = await sem.acquire(0);
    const order: string[] = [];
    const ac = new AbortController();
    const low = sem.acquire(1).then((r) => (order.push('low'), r));
    const gone = sem.acquire(9, ac.signal).then(
      () => order.push('gone'),
      () => order.push('aborted'),
    );
    const high = sem.acquire(5).then((r) => (order.push('high'), r));
    expect(sem.waiting).toBe(3);
    ac.abort(new Error('cancel'));
    await gone;
    expect(sem.waiting).toBe(2);
    first();
    first(); // a double release must not mint a permit
    (await high)();
    (await low)();
    expect(order).toEqual(['aborted', 'high', 'low']);
    expect(sem.inUse).toBe(0);
  });
});
