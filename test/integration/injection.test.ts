import { randomUUID } from 'node:crypto';
import { createClient, type ClickHouseClient } from '@clickhouse/client';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisCacheWriter } from '../../src/cache/writer.js';
import { ensureDatabase } from '../../src/clickhouse/schema.js';
import { TrendingJob } from '../../src/jobs/trending.js';
import { servicesEnv } from './env.js';
import { scratchDatabase, type ScratchDatabase } from './scratch-database.js';

/**
 * CONTRACT §3: every value reaches ClickHouse as a query parameter, so data rows and configuration
 * holding quotes cannot change a query.
 */
describe('SQL injection', () => {
  let db: ScratchDatabase;
  let ch: ClickHouseClient;
  let redis: Redis;

  beforeAll(async () => {
    db = await scratchDatabase('test_inject');
    ch = db.client;
    redis = new Redis(servicesEnv().redisUrl);
  });
  afterAll(async () => {
    await db.drop();
    await redis.quit();
  });

  it('rows whose strings hold SQL are skipped as bad data and change nothing', async () => {
    const now = Math.floor(Date.now() / 1000);
    const evil = [
      "post_like'); DROP TABLE post_events; --",
      "post_share' OR 1=1 --",
      'post_view\\',
      "'; TRUNCATE TABLE posts; SELECT '",
    ];
    await ch.insert({
      table: 'post_events',
      format: 'JSONEachRow',
      values: [
        { event_time: now - 60, post_id: 11, author_id: 1, user_id: 2, event_type: 'post_like' },
        ...evil.map((t, i) => ({
          event_time: now - 30,
          post_id: 12 + i,
          author_id: 1,
          user_id: 2,
          event_type: t,
        })),
      ],
    });
    const prefix = `test-inject-${randomUUID()}`;
    const job = new TrendingJob({
      window: '1h',
      clickhouse: ch,
      cache: new RedisCacheWriter(redis),
      keyPrefix: prefix,
      topK: 50,
      decay: 0.9,
      ttlSec: 60,
    });
    const result = await job.run({
      jobId: 'trending-1h',
      runId: randomUUID(),
      scheduledAt: new Date(),
      startedAt: new Date(now * 1000),
      signal: new AbortController().signal,
      log: pino({ level: 'silent' }),
      attempt: 1,
    });
    expect(result.context).toMatchObject({ skipped_rows: 4 });
    const value = JSON.parse((await redis.get(`${prefix}:trending:1h`))!) as { post_id: string }[];
    expect(value.map((e) => e.post_id)).toEqual(['11']);
    const count = await ch.query({ query: 'SELECT count() AS n FROM post_events', format: 'JSONEachRow' });
    expect(Number((await count.json<{ n: string }>())[0]!.n)).toBe(5);
    await redis.del(`${prefix}:trending:1h`);
  });

  it('a database name holding quotes and SQL is an identifier, not SQL', async () => {
    const s = servicesEnv();
    const admin = createClient({ url: s.clickhouseUrl });
    const name = `x\`; DROP DATABASE ${db.name}; --`;
    try {
      await ensureDatabase(admin, name);
      const rs = await admin.query({
        query: 'SELECT count() AS n FROM system.databases WHERE name IN ({names:Array(String)})',
        query_params: { names: [name, db.name] },
        format: 'JSONEachRow',
      });
      // Both exist: the odd name was created as a name, and the test database was not dropped.
      expect(Number((await rs.json<{ n: string }>())[0]!.n)).toBe(2);
    } finally {
      await admin.command({ query: 'DROP DATABASE IF EXISTS {db:Identifier}', query_params: { db: name } });
      await admin.close();
    }
  });
});
