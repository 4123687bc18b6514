import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FencedError, RedisCacheWriter, type Fence, type ScoredMember } from '../../src/cache/writer.js';
import { servicesEnv } from './env.js';

/**
 * Whole-value replacement of sorted sets and hashes (declarative jobs' sorted_set and hash outputs)
 * against a real Redis: readers never see a partial or empty value, a stale leader changes nothing.
 */
describe('atomic sorted-set and hash replacement', () => {
  const prefix = `test-replace-${randomUUID()}`;
  const lease = `${prefix}:leader`;
  let redis: Redis;
  let reader: Redis;
  const signal = new AbortController().signal;

  const fence = (token: string): Fence & { losses: number } => {
    const f = {
      key: lease,
      losses: 0,
      token: () => token,
      lost: () => {
        f.losses++;
      },
    };
    return f;
  };
  const members = (n: number, tag: string): ScoredMember[] =>
    Array.from({ length: n }, (_, i) => ({ member: `${tag}${i}`, score: i }));

  beforeAll(async () => {
    redis = new Redis(servicesEnv().redisUrl);
    reader = new Redis(servicesEnv().redisUrl);
    await redis.set(lease, '1:test');
  });
  afterAll(async () => {
    const stale = await redis.keys(`*${prefix}*`);
    if (stale.length > 0) await redis.del(...stale);
    await Promise.all([redis.quit(), reader.quit()]);
  });

  it('a reader polling during replacements only ever sees a whole old or a whole new set', async () => {
    const key = `${prefix}:zset`;
    const writer = new RedisCacheWriter(redis, fence('1:test'));
    const sizes = [20_000, 35_000];
    expect(await writer.replaceSortedSet(key, members(sizes[0]!, 'a'), 300, signal)).toBe(sizes[0]);

    const seen = new Map<number, number>();
    const state = { polling: true };
    const poll = (async () => {
      while (state.polling) {
        const n = await reader.zcard(key);
        seen.set(n, (seen.get(n) ?? 0) + 1);
      }
    })();
    for (let round = 1; round <= 6; round++) {
      const n = sizes[round % 2]!;
      expect(await writer.replaceSortedSet(key, members(n, `r${round}-`), 300, signal)).toBe(n);
    }
    state.polling = false;
    await poll;

    // Only the two whole sizes were ever observed (never 0, never a set being built), and the
    // reader did poll while replacements ran.
    expect([...seen.keys()].sort((a, b) => a - b)).toEqual(sizes);
    expect([...seen.values()].reduce((a, b) => a + b, 0)).toBeGreaterThan(20);
    expect(await redis.zscore(key, 'r6-19999')).toBe('19999');
    expect(await redis.zscore(key, 'r5-0')).toBeNull();
    expect(await redis.ttl(key)).toBeGreaterThan(290);
    // No temporary set is left behind.
    expect(await redis.keys(`{${key}}:tmp:*`)).toEqual([]);
  });

  it('a replica whose token is stale changes nothing and steps down', async () => {
    const key = `${prefix}:fenced`;
    await new RedisCacheWriter(redis, fence('1:test')).replaceSortedSet(key, members(3, 'good'), 300, signal);
    await new RedisCacheWriter(redis, fence('1:test')).replaceHashes(
      [{ key: `${key}:h`, fields: [['v', 'good']] }],
      300,
      signal,
    );
    const stale = fence('0:test');
    const writer = new RedisCacheWriter(redis, stale);
    await expect(writer.replaceSortedSet(key, members(5, 'bad'), 300, signal)).rejects.toBeInstanceOf(
      FencedError,
    );
    await expect(
      writer.replaceHashes([{ key: `${key}:h`, fields: [['v', 'bad']] }], 300, signal),
    ).rejects.toBeInstanceOf(FencedError);
    expect(stale.losses).toBe(2);
    expect(await redis.zrange(key, 0, -1)).toEqual(['good0', 'good1', 'good2']);
    expect(await redis.hgetall(`${key}:h`)).toEqual({ v: 'good' });
    expect(await redis.keys(`{${key}}:tmp:*`)).toEqual([]);
  });

  it('replaces each hash whole, and an empty result removes the sorted set', async () => {
    const writer = new RedisCacheWriter(redis, fence('1:test'));
    const h = `${prefix}:post:1`;
    await redis.hset(h, 'views', '1', 'stale_field', 'x');
    expect(
      await writer.replaceHashes(
        [
          {
            key: h,
            fields: [
              ['views', '10'],
              ['likes', '2'],
            ],
          },
          { key: `${prefix}:post:2`, fields: [['views', '3']] },
        ],
        120,
        signal,
      ),
    ).toBe(2);
    expect(await redis.hgetall(h)).toEqual({ views: '10', likes: '2' });
    expect(await redis.ttl(h)).toBeGreaterThan(110);

    const z = `${prefix}:empty`;
    await writer.replaceSortedSet(z, members(2, 'x'), 300, signal);
    expect(await writer.replaceSortedSet(z, [], 300, signal)).toBe(0);
    expect(await redis.exists(z)).toBe(0);
  });

  it('works the same without a fence (LEADER_ELECTION=false, once)', async () => {
    const writer = new RedisCacheWriter(redis);
    const z = `${prefix}:unfenced`;
    await redis.zadd(z, 1, 'old');
    expect(await writer.replaceSortedSet(z, members(3, 'n'), 60, signal)).toBe(3);
    expect(await redis.zrange(z, 0, -1)).toEqual(['n0', 'n1', 'n2']);
    const h = `${prefix}:unfenced:h`;
    await redis.hset(h, 'old', '1');
    expect(await writer.replaceHashes([{ key: h, fields: [['new', '2']] }], 60, signal)).toBe(1);
    expect(await redis.hgetall(h)).toEqual({ new: '2' });
    expect(await redis.ttl(h)).toBeGreaterThan(50);
  });
});
