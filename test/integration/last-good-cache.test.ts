import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisFreshnessStore } from '../../src/cache/freshness.js';
import { RedisCacheWriter } from '../../src/cache/writer.js';
import { createSystemClock } from '../../src/runner/clock.js';
import type { RunFacts } from '../../src/runner/job.js';
import { Runner, type RunEnded } from '../../src/runner/runner.js';
import { servicesEnv } from './env.js';

/**
 * CONTRACT §2 failure semantics against a real Redis: a failed or timed-out run never deletes or
 * overwrites the value a previous run wrote, so readers keep the last good value until its TTL.
 */
describe('failed and timed-out runs keep the last good cache value', () => {
  const prefix = `test-lastgood-${randomUUID()}`;
  const key = `${prefix}:trending:1h`;
  let redis: Redis;

  beforeAll(async () => {
    redis = new Redis(servicesEnv().redisUrl);
    await redis.ping();
  });
  afterAll(async () => {
    const stale = await redis.keys(`${prefix}:*`);
    if (stale.length > 0) await redis.del(...stale);
    await redis.quit();
  });

  it('keeps the value and TTL of the last success through a failure and a timeout', async () => {
    const writer = new RedisCacheWriter(redis);
    let mode: 'ok' | 'fail-midway' | 'hang' = 'ok';
    let version = 0;
    const ended: RunEnded[] = [];
    const runner = new Runner({
      jobs: [
        {
          job: {
            id: 'trending-1h',
            async run(ctx: RunFacts) {
              version++;
              // Compute first, write last: a run that fails before its write leaves the key alone.
              if (mode === 'fail-midway') throw new Error('clickhouse query failed halfway');
              if (mode === 'hang') {
                await new Promise((_, reject) => {
                  ctx.signal.addEventListener('abort', () => {
                    reject(ctx.signal.reason as Error);
                  });
                });
              }
              await writer.write([{ key, value: JSON.stringify({ version }) }], 300, ctx.signal);
              return { items: 1 };
            },
          },
          settings: {
            enabled: true,
            intervalSec: 3600,
            cron: undefined,
            timeoutSec: 1,
            ttlSec: 300,
            retries: 0,
            priority: 0,
          },
        },
      ],
      maxConcurrentJobs: 1,
      backoff: { afterFailures: 3, baseSec: 1, maxSec: 300 },
      cronTimezone: 'UTC',
      clock: createSystemClock(),
      log: pino({ level: 'silent' }),
      freshness: new RedisFreshnessStore(redis, prefix),
    });
    runner.events.on('run:ended', (e) => {
      ended.push(e);
    });
    runner.start();
    const runOnce = async (): Promise<RunEnded> => {
      const before = ended.length;
      expect(runner.trigger('trending-1h')).toBe('started');
      await expect.poll(() => ended.length, { timeout: 10_000 }).toBe(before + 1);
      await expect.poll(() => runner.status()[0]?.running, { timeout: 10_000 }).toBe(false);
      return ended[before]!;
    };

    expect((await runOnce()).outcome).toBe('success');
    expect(await redis.get(key)).toBe('{"version":1}');
    const ttlAfterSuccess = await redis.ttl(key);
    expect(ttlAfterSuccess).toBeGreaterThan(290);

    mode = 'fail-midway';
    expect((await runOnce()).outcome).toBe('failure');
    mode = 'hang';
    const timedOut = await runOnce();
    expect(timedOut.outcome).toBe('timeout');
    expect(timedOut.durationMs).toBeGreaterThanOrEqual(1000);

    expect(await redis.get(key)).toBe('{"version":1}');
    expect(await redis.ttl(key)).toBeGreaterThan(280);
    const freshness = await redis.hgetall(`${prefix}:job:trending-1h`);
    expect(freshness.run_id).toBe(ended[0]!.runId);
    expect(Number(freshness.items)).toBe(1);
    await runner.stop(0);
  });
});
