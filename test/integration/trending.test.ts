import { randomUUID } from 'node:crypto';
import { createClient, type ClickHouseClient } from '@clickhouse/client';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisCacheWriter, type RedisClient } from '../../src/cache/writer.js';
import { ensureDatabase, migrate } from '../../src/clickhouse/schema.js';
import { seedDatabase } from '../../src/clickhouse/seed.js';
import { TrendingJob, type TrendingWindow } from '../../src/jobs/trending.js';
import type { RunFacts, RunResult } from '../../src/runner/job.js';
import { servicesEnv } from './env.js';
import {
  exactTrendingTop,
  expectTrendingMatches,
  TRENDING_DECAY,
  type TrendingEntry,
} from './job-expectations.js';
import { longRequests } from './scratch-database.js';
import { deleteMatching, redisFor, TOPOLOGIES, type Topology } from './topologies.js';

/**
 * CONTRACT §4 trending on a real ClickHouse and Redis. The reference ranking is written here, apart from
 * the job: one plain SQL query over raw `post_events` that decays every event by its own age and
 * compares times as fractional seconds (no rollups, no window plan).
 */

const env = servicesEnv();
const suffix = randomUUID().replace(/-/g, '').slice(0, 10);
const SEEDED_DB = `test_trending_${suffix}`;
const SMALL_DB = `test_trending_small_${suffix}`;
const PREFIX = `test-trending-${suffix}`;
const DECAY = TRENDING_DECAY;
const TTL_SEC = 300;

/** The seeded data ends here; the jobs run 5000.75 s earlier, so later events exist and must be left out. */
const SEED_END_SEC = Math.floor(Date.now() / 1000);
const NOW_MS = (SEED_END_SEC - 5000) * 1000 + 750;

let boot: ClickHouseClient;
let seeded: ClickHouseClient;
let small: ClickHouseClient;
let redis: Redis;
let writer: RedisCacheWriter;
/** The exact-value checks run on each Redis topology (issue 15: unchanged on a cluster). */
const targets = new Map<Topology, { redis: RedisClient; writer: RedisCacheWriter }>();

function job(window: TrendingWindow, clickhouse: ClickHouseClient, cache = writer): TrendingJob {
  return new TrendingJob({
    window,
    clickhouse,
    cache,
    keyPrefix: PREFIX,
    topK: 50,
    decay: DECAY[window],
    ttlSec: TTL_SEC,
  });
}

function context(window: TrendingWindow, nowMs: number): RunFacts {
  return {
    jobId: `trending-${window}`,
    runId: randomUUID(),
    scheduledAt: new Date(nowMs),
    startedAt: new Date(nowMs),
    signal: new AbortController().signal,
    log: pino({ level: 'silent' }),
    attempt: 1,
  };
}

type Entry = TrendingEntry;

async function cached(window: TrendingWindow, client: RedisClient = redis): Promise<Entry[] | null> {
  const raw = await client.get(`${PREFIX}:trending:${window}`);
  return raw === null ? null : (JSON.parse(raw) as Entry[]);
}

async function readRowsOf(client: ClickHouseClient, queryId: string): Promise<number> {
  await client.command({ query: 'SYSTEM FLUSH LOGS' });
  const result = await client.query({
    query: `SELECT read_rows FROM system.query_log WHERE query_id = {id:String} AND type = 'QueryFinish'`,
    query_params: { id: queryId },
    format: 'JSONEachRow',
  });
  const [row] = await result.json<{ read_rows: string }>();
  if (!row) throw new Error(`query ${queryId} not found in system.query_log`);
  return Number(row.read_rows);
}

async function rawRows(client: ClickHouseClient): Promise<number> {
  const result = await client.query({ query: 'SELECT count() AS n FROM post_events', format: 'JSONEachRow' });
  const [row] = await result.json<{ n: string }>();
  return Number(row?.n);
}

beforeAll(async () => {
  boot = createClient({ url: env.clickhouseUrl, ...longRequests(120_000) });
  await ensureDatabase(boot, SEEDED_DB);
  await ensureDatabase(boot, SMALL_DB);
  seeded = createClient({ url: env.clickhouseUrl, database: SEEDED_DB, ...longRequests(120_000) });
  small = createClient({ url: env.clickhouseUrl, database: SMALL_DB, ...longRequests(120_000) });
  await migrate(seeded);
  await migrate(small);
  await seedDatabase(seeded, { events: 1_000_000, seed: 5, now: new Date(SEED_END_SEC * 1000) });
  redis = new Redis(env.redisUrl, { maxRetriesPerRequest: 1 });
  writer = new RedisCacheWriter(redis);
  for (const topology of TOPOLOGIES) {
    const client = (await redisFor(topology)).redis;
    targets.set(topology, { redis: client, writer: new RedisCacheWriter(client) });
  }
});

afterAll(async () => {
  for (const db of [SEEDED_DB, SMALL_DB]) {
    await boot.command({ query: 'DROP DATABASE IF EXISTS {db:Identifier}', query_params: { db } });
  }
  const stale = await redis.keys(`${PREFIX}:*`);
  if (stale.length > 0) await redis.del(...stale);
  await redis.quit();
  for (const t of targets.values()) {
    await deleteMatching(t.redis, `${PREFIX}:*`);
    await t.redis.quit();
  }
  await Promise.all([seeded.close(), small.close(), boot.close()]);
});

describe.each(TOPOLOGIES)(
  'trending on 1 M seeded events matches the exact formula (%s Redis)',
  (topology) => {
    it.each(['1h', '24h', '7d'] as const)('%s: top 50 and scores', async (window) => {
      const t = targets.get(topology)!;
      const ctx = context(window, NOW_MS);
      const result: RunResult = await job(window, seeded, t.writer).run(ctx);
      const got = await cached(window, t.redis);
      const want = await exactTrendingTop(seeded, window, NOW_MS, 50);
      expect(want).toHaveLength(50);
      expect(result.items).toBe(50);
      expect(result.context).toMatchObject({ window, posts: 50, skipped_rows: 0 });
      const { shared, maxError } = expectTrendingMatches(window, got, want);

      const ttl = await t.redis.ttl(`${PREFIX}:trending:${window}`);
      expect(ttl).toBeGreaterThan(0);
      expect(ttl).toBeLessThanOrEqual(TTL_SEC);

      // Rows read, from the server's own statistics (the job names its query after the run).
      const readRows = await readRowsOf(seeded, `cache-refresher:trending-${window}:${ctx.runId}:1`);
      const total = await rawRows(seeded);
      console.log(
        `trending-${window}: overlap ${shared}/50, max score error ${(maxError * 100).toFixed(5)} %, ` +
          `read ${readRows} rows of ${total} raw (${(total / readRows).toFixed(1)}x fewer)`,
      );
      expect(result.context?.rows_read).toBe(readRows);
      // The rollups make every window read a fraction of the raw table (1h: a tiny one).
      expect(readRows * (window === '1h' ? 10 : 2)).toBeLessThan(total);
    });
  },
);

describe('edge cases on a small database', () => {
  // Not on a minute boundary, so both raw edges and whole minutes are exercised.
  const now = Math.floor(Date.now() / 60_000) * 60_000 - 60_000 + 23_400;
  const nowSec = Math.floor(now / 1000);

  it('an empty database yields [] (a written key, not an error)', async () => {
    const result = await job('1h', small).run(context('1h', now));
    expect(result.items).toBe(0);
    expect(await redis.get(`${PREFIX}:trending:1h`)).toBe('[]');
    expect(await redis.ttl(`${PREFIX}:trending:1h`)).toBeGreaterThan(0);
  });

  it('fewer than 50 posts yields them all, ties by numeric id, bad rows skipped and counted', async () => {
    const at = (secAgo: number): number => nowSec - secAgo;
    const rows = [
      // Posts 9 and 10 tie exactly: lexical order would put "10" first, numeric order puts 9 first.
      ...[9, 10].flatMap((id) => [
        { event_time: at(30), post_id: id, author_id: 1, user_id: 2, event_type: 'post_like' },
        { event_time: at(1500), post_id: id, author_id: 1, user_id: 3, event_type: 'post_view' },
      ]),
      // Post 11 leads: a share in the head edge (just inside the window) and a comment in a whole minute.
      { event_time: at(3599), post_id: 11, author_id: 4, user_id: 2, event_type: 'post_share' },
      { event_time: at(600), post_id: 11, author_id: 4, user_id: 5, event_type: 'post_comment' },
      // Outside the window: exactly W old, and in the future.
      { event_time: at(3600), post_id: 12, author_id: 4, user_id: 5, event_type: 'post_share' },
      { event_time: at(-5), post_id: 12, author_id: 4, user_id: 5, event_type: 'post_share' },
      // Bad data inside the window: an unknown type and post id 0, one raw and one in a whole minute.
      { event_time: at(10), post_id: 13, author_id: 4, user_id: 5, event_type: 'post_impression' },
      { event_time: at(900), post_id: 0, author_id: 4, user_id: 5, event_type: 'post_like' },
    ];
    await small.insert({ table: 'post_events', values: rows, format: 'JSONEachRow' });

    const result = await job('1h', small).run(context('1h', now));
    const got = await cached('1h');
    const age = (secAgo: number): number => (now / 1000 - at(secAgo)) / 3600;
    const d = DECAY['1h'];
    const expected = [
      { post_id: '11', score: 5 * d ** age(3599) + 3 * d ** age(600) },
      { post_id: '9', score: 2 * d ** age(30) + 0.1 * d ** age(1500) },
      { post_id: '10', score: 2 * d ** age(30) + 0.1 * d ** age(1500) },
    ];
    expect(got?.map((e) => e.post_id)).toEqual(['11', '9', '10']);
    got!.forEach((e, i) => {
      expect(e.score / expected[i]!.score - 1).toBeCloseTo(0, 5);
    });
    expect(got![1]!.score).toBe(got![2]!.score);
    expect(result).toMatchObject({ items: 3, context: { window: '1h', posts: 3, skipped_rows: 2 } });
  });

  it('an aborted run stops without writing', async () => {
    const before = await redis.get(`${PREFIX}:trending:1h`);
    const controller = new AbortController();
    controller.abort(new Error('timed out'));
    const ctx = { ...context('1h', now), signal: controller.signal };
    await expect(job('1h', small).run(ctx)).rejects.toThrow();
    expect(await redis.get(`${PREFIX}:trending:1h`)).toBe(before);
  });

  it('a ClickHouse error fails the run and leaves the cached list alone', async () => {
    const before = await redis.get(`${PREFIX}:trending:1h`);
    expect(JSON.parse(before!)).toHaveLength(3);
    await small.command({ query: 'DROP TABLE post_engagement_1m' });
    await expect(job('1h', small).run(context('1h', now))).rejects.toThrow(/post_engagement_1m/);
    expect(await redis.get(`${PREFIX}:trending:1h`)).toBe(before);
  });
});
