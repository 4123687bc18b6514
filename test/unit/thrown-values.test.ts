import { describe, expect, it } from 'vitest';
import { isTransientError } from '../../src/runner/retry.js';
import { toError } from '../../src/runner/run-errors.js';
import { harness, job, settings } from './helpers/runner-fixture.js';

/** Values a job can reject with that once made the runner's error conversion throw (issue 13 point 5). */
function hostileValues(): [string, unknown][] {
  const circular: Record<string, unknown> = { name: 'loop' };
  circular.self = circular;
  const throwingGetter = {
    get message(): string {
      throw new Error('getter exploded');
    },
  };
  const errorWithThrowingGetter = new Error('real message');
  Object.defineProperty(errorWithThrowingGetter, 'code', {
    enumerable: true,
    get() {
      throw new Error('code getter exploded');
    },
  });
  const errorWithThrowingMessage = Object.create(Error.prototype, {
    message: {
      get() {
        throw new Error('message getter exploded');
      },
    },
  }) as Error;
  const revoked = Proxy.revocable({}, {});
  revoked.revoke();
  const hostileProxy = new Proxy(
    {},
    {
      getPrototypeOf() {
        throw new Error('no prototype for you');
      },
      get() {
        throw new Error('no properties either');
      },
      ownKeys() {
        throw new Error('no keys');
      },
    },
  );
  const badToString = {
    toString: () => {
      throw new Error('toString exploded');
    },
  };
  return [
    ['a circular object', circular],
    ['a BigInt', 12345678901234567890n],
    ['an object holding a BigInt', { id: 9007199254740993n }],
    ['null', null],
    ['undefined', undefined],
    ['a symbol', Symbol('odd')],
    ['an object whose getter throws', throwingGetter],
    ['an Error whose enumerable getter throws', errorWithThrowingGetter],
    ['an Error whose message getter throws', errorWithThrowingMessage],
    ['a revoked Proxy', revoked.proxy],
    ['a Proxy whose every trap throws', hostileProxy],
    ['an object whose toString throws', badToString],
    ['a null-prototype object', Object.create(null) as object],
    ['a function', () => 1],
  ];
}

describe('toError: converting any thrown value never throws', () => {
  for (const [what, value] of hostileValues()) {
    it(`turns ${what} into an Error with a readable message`, () => {
      const err = toError(value);
      expect(err).toBeInstanceOf(Error);
      expect(typeof err.message).toBe('string');
      expect(err.message.length).toBeGreaterThan(0);
      expect(() => JSON.stringify({ message: err.message, name: err.name })).not.toThrow();
      expect(isTransientError(value)).toBe(false);
    });
  }

  it('keeps a well-formed Error as it is (class, code and cause matter to retries and records)', () => {
    const err = Object.assign(new TypeError('boom'), { code: 'ECONNRESET' });
    expect(toError(err)).toBe(err);
  });

  it('describes what it can: BigInts, cycles and the kind of value', () => {
    expect(toError(12n).message).toContain('12n');
    expect(toError(null).message).toContain('null');
    expect(toError({ a: 1, self: {} }).message).toContain('a: 1');
    expect(toError('plain text').message).toBe('plain text');
  });
});

describe('Runner: a job rejecting with any value still ends its run and frees its permit', () => {
  it('every hostile rejection ends as one failed run; the single permit serves the next job', async () => {
    const values = hostileValues();
    let i = 0;
    const h = harness(
      [
        {
          // The point of the test: a job that rejects with something that is not an Error.
          // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors
          job: job('hostile', () => Promise.reject(values[i++ % values.length]?.[1])),
          settings: settings({ intervalSec: 10 }),
        },
      ],
      { maxConcurrentJobs: 1 },
    );
    // Backoff after consecutive failures would hide later ticks; manual triggers bypass it.
    h.runner.start();
    for (let n = 0; n < values.length; n++) {
      expect(h.runner.trigger('hostile')).toBe('started');
      await h.clock.advance(1);
    }
    expect(h.ended).toHaveLength(values.length);
    for (const e of h.ended) {
      expect(e.outcome).toBe('failure');
      expect(e.error).toBeInstanceOf(Error);
    }
    expect(h.runner.semaphore.inUse).toBe(0);
    await h.runner.stop(0);
  });
});
