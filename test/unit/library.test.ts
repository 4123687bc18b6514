import { describe, expect, it } from 'vitest';
import { ConfigError, createSidecar, defineJob, writeStream, type CacheEntry } from '../../src/index.js';

describe('writeStream', () => {
  it('pulls no more entries than one chunk ahead of the writes (backpressure)', async () => {
    const events: string[] = [];
    let release: (() => void) | undefined;
    const cache = {
      write: async (entries: readonly CacheEntry[], ttlSec: number): Promise<number> => {
        events.push(`write ${entries.map((e) => e.key).join(',')} ttl=${ttlSec}`);
        await new Promise<void>((r) => (release = r));
        return entries.length;
      },
    };
    function* source(): Generator<CacheEntry> {
      for (let i = 1; i <= 5; i++) {
        events.push(`pull ${i}`);
        yield { key: `k${i}`, value: String(i) };
      }
    }
    const target = { cache, settings: { ttlSec: 90 }, signal: new AbortController().signal };
    const done = writeStream(target, source(), { chunkSize: 2 });
    const tick = (): Promise<void> => new Promise((r) => setImmediate(r));
    await tick();
    // The first chunk is being written: the source has not been asked for its third entry.
    expect(events).toEqual(['pull 1', 'pull 2', 'write k1,k2 ttl=90']);
    release?.();
    await tick();
    await tick();
    expect(events.slice(3)).toEqual(['pull 3', 'pull 4', 'write k3,k4 ttl=90']);
    release?.();
    await tick();
    await tick();
    release?.();
    expect(await done).toBe(5);
    expect(events.slice(6)).toEqual(['pull 5', 'write k5 ttl=90']);
  });
});

describe('createSidecar', () => {
  it('rejects start() with every problem before connecting to anything', async () => {
    const job = defineJob({
      id: 'mine',
      schedule: { intervalSec: 5 },
      run: () => Promise.resolve({ items: 0 }),
    });
    const sidecar = createSidecar({
      env: { REDIS_URL: 'nope', MINE_TTL_SEC: '0', JOB_MODULES: './does-not-exist.mjs' },
      jobs: [job],
    });
    const err = (await sidecar.start().then(
      () => undefined,
      (e: unknown) => e,
    )) as ConfigError;
    expect(err).toBeInstanceOf(ConfigError);
    expect(err.problems.map((p) => p.name)).toEqual(['REDIS_URL', 'MINE_TTL_SEC']);
    expect(err.lines).toHaveLength(1);
    expect(err.lines[0]).toMatch(/^JOB_MODULES: got "\.\/does-not-exist\.mjs", expected a module/);
    expect(sidecar.httpPort).toBeUndefined();
    await sidecar.stop();
  });
});
