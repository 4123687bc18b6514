import { randomUUID } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { createClient, type ClickHouseClient } from '@clickhouse/client';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  backfillRollups,
  ensureDatabase,
  migrate,
  MIGRATIONS,
  MOMENT_ROLLUPS,
  ROLLUPS,
} from '../../src/clickhouse/schema.js';
import { seedDatabase, type SeedOptions } from '../../src/clickhouse/seed.js';
import { parseConfig } from '../../src/config.js';
import { main, type ProcessIO } from '../../src/main.js';
import { servicesEnv } from './env.js';
import { longRequests } from './scratch-database.js';

/**
 * `migrate`, `seed` and `once` on the real ClickHouse: the CONTRACT §3 schema, idempotent migrations,
 * a backfill that never double counts, deterministic seed data, and the commands' exit codes.
 */

const env = servicesEnv();
const suffix = randomUUID().replace(/-/g, '').slice(0, 10);
const db = (name: string): string => `test_schema_${name}_${suffix}`;
const DBS = { cli: db('cli'), a: db('a'), b: db('b'), c: db('c'), backfill: db('backfill') };
const PREFIX = `test-schema-${suffix}`;
const END = new Date(Math.floor(Date.now() / 1000) * 1000);
const SMALL: SeedOptions = { users: 2_000, days: 3, events: 200_000, seed: 11, now: END };

let boot: ClickHouseClient;
const clients = new Map<string, ClickHouseClient>();
let redis: Redis;

function client(database: string): ClickHouseClient {
  let c = clients.get(database);
  if (!c) {
    c = createClient({ url: env.clickhouseUrl, database, ...longRequests(120_000) });
    clients.set(database, c);
  }
  return c;
}

async function rows<T>(c: ClickHouseClient, query: string): Promise<T[]> {
  return (await c.query({ query, format: 'JSONEachRow' })).json<T>();
}

/** Order-independent fingerprints of every table's content (FINAL: the latest follow row per pair). */
async function checksums(c: ClickHouseClient): Promise<Record<string, string>> {
  const [row] = await rows<Record<string, string>>(
    c,
    `SELECT
      (SELECT concat(toString(count()), ':', toString(sum(cityHash64(*)))) FROM post_events) AS post_events,
      (SELECT concat(toString(count()), ':', toString(sum(cityHash64(*)))) FROM posts) AS posts,
      (SELECT concat(toString(count()), ':', toString(sum(cityHash64(*)))) FROM user_relationships FINAL) AS follows`,
  );
  return row!;
}

/** A rollup's content with unmerged parts summed, as one fingerprint. */
async function rollupChecksum(c: ClickHouseClient, table: string): Promise<string> {
  const [row] = await rows<{ n: string; h: string; events: string }>(
    c,
    `SELECT count() AS n, sum(cityHash64(bucket, post_id, v, l, cm, s, u, w, ws)) AS h, sum(v + l + cm + s + u) AS events
     FROM (SELECT bucket, post_id, sum(views) v, sum(likes) l, sum(comments) cm, sum(shares) s, sum(unknown) u,
                  sum(weight_x10) w, sum(weight_x10_sec) ws
           FROM ${table} GROUP BY bucket, post_id)`,
  );
  return `${row!.n}:${row!.h}:${row!.events}`;
}

function fakeIo(): ProcessIO & { out: string[]; err: string[] } {
  const out: string[] = [];
  const err: string[] = [];
  return {
    out,
    err,
    stdout: (t) => out.push(t),
    stderr: (t) => err.push(t),
    onSignal: () => undefined,
    forceExit: (code) => {
      throw new Error(`forceExit(${code})`);
    },
  };
}

function cliEnv(database: string): Record<string, string> {
  return {
    CLICKHOUSE_URL: env.clickhouseUrl,
    CLICKHOUSE_DATABASE: database,
    REDIS_URL: env.redisUrl,
    CACHE_KEY_PREFIX: PREFIX,
    LOG_LEVEL: 'silent',
    DLQ_SPOOL_DIR: `/tmp/${PREFIX}-dlq`,
  };
}

beforeAll(async () => {
  boot = createClient({ url: env.clickhouseUrl, ...longRequests(120_000) });
  redis = new Redis(env.redisUrl, { maxRetriesPerRequest: 1 });
  for (const name of [DBS.a, DBS.b, DBS.c, DBS.backfill]) {
    await ensureDatabase(boot, name);
    await migrate(client(name));
  }
});

afterAll(async () => {
  for (const name of Object.values(DBS)) {
    await boot.command({ query: 'DROP DATABASE IF EXISTS {db:Identifier}', query_params: { db: name } });
  }
  rmSync(cliEnv('x').DLQ_SPOOL_DIR!, { recursive: true, force: true });
  const stale = await redis.keys(`${PREFIX}:*`);
  if (stale.length > 0) await redis.del(...stale);
  await redis.quit();
  await Promise.all([...clients.values()].map((c) => c.close()));
  await boot.close();
});

describe('migrate', () => {
  it('creates the database and the CONTRACT §3 tables, and a second run changes nothing', async () => {
    const io = fakeIo();
    expect(await main(['migrate'], cliEnv(DBS.cli), io)).toBe(0);
    expect(io.out.join('')).toContain(`created ${MIGRATIONS.length}`);
    const again = fakeIo();
    expect(await main(['migrate'], cliEnv(DBS.cli), again)).toBe(0);
    expect(again.out.join('')).toContain(`created 0 (-), ${MIGRATIONS.length} already present`);

    const columns = await rows<{ table: string; name: string; type: string }>(
      client(DBS.cli),
      `SELECT table, name, type FROM system.columns
       WHERE database = currentDatabase() AND table IN ('post_events', 'user_relationships', 'posts')
       ORDER BY table, position`,
    );
    expect(columns.map((c) => `${c.table}.${c.name} ${c.type}`)).toEqual([
      'post_events.event_time DateTime',
      'post_events.post_id UInt64',
      'post_events.author_id UInt64',
      'post_events.user_id UInt64',
      'post_events.event_type LowCardinality(String)',
      'posts.post_id UInt64',
      'posts.author_id UInt64',
      'posts.created_at DateTime',
      'user_relationships.follower_id UInt64',
      'user_relationships.followee_id UInt64',
      'user_relationships.status LowCardinality(String)',
      'user_relationships.updated_at DateTime',
    ]);
    const [rel] = await rows<{ engine_full: string; sorting_key: string }>(
      client(DBS.cli),
      `SELECT engine_full, sorting_key FROM system.tables WHERE database = currentDatabase() AND name = 'user_relationships'`,
    );
    expect(rel!.engine_full).toMatch(/^ReplacingMergeTree\(updated_at\)/);
    expect(rel!.sorting_key).toBe('follower_id, followee_id');
  });
});

describe('seed', () => {
  it('is deterministic: same seed, same data, also when loaded in other chunk sizes', async () => {
    await seedDatabase(client(DBS.a), SMALL);
    await seedDatabase(client(DBS.b), { ...SMALL, chunkSize: 70_001 });
    await seedDatabase(client(DBS.c), { ...SMALL, seed: 12 });
    const [a, b, c] = await Promise.all([DBS.a, DBS.b, DBS.c].map((name) => checksums(client(name))));
    expect(b).toEqual(a);
    expect(a!.post_events).toMatch(/^200000:/);
    for (const table of ['post_events', 'posts', 'follows']) expect(c![table]).not.toBe(a![table]);
    // The rollups the views built are the same too.
    for (const r of Object.values(ROLLUPS)) {
      expect(await rollupChecksum(client(DBS.b), r.table)).toBe(await rollupChecksum(client(DBS.a), r.table));
    }
  });

  it('has the promised shapes', async () => {
    const c = client(DBS.a);
    const [s] = await rows<Record<string, string>>(
      c,
      `SELECT
        (SELECT countIf(event_type = 'post_view') FROM post_events) AS views,
        (SELECT countIf(event_type = 'post_like') FROM post_events) AS likes,
        (SELECT countIf(event_type = 'post_comment') FROM post_events) AS comments,
        (SELECT countIf(event_type = 'post_share') FROM post_events) AS shares,
        (SELECT min(event_time) > toDateTime(${END.getTime() / 1000 - 3 * 86_400 - 1}) AND max(event_time) <= toDateTime(${END.getTime() / 1000}) FROM post_events) AS in_range,
        (SELECT count() FROM post_events e LEFT ANY JOIN posts p ON e.post_id = p.post_id
           WHERE p.author_id != e.author_id OR p.created_at > e.event_time) AS inconsistent,
        (SELECT max(n) FROM (SELECT followee_id, count() n FROM user_relationships FINAL WHERE status = 'active' GROUP BY followee_id)) AS top_followers,
        (SELECT median(n) FROM (SELECT followee_id, count() n FROM user_relationships FINAL WHERE status = 'active' GROUP BY followee_id)) AS median_followers,
        (SELECT countIf(status = 'removed') / count() FROM user_relationships FINAL) AS removed_share,
        (SELECT sum(c) FROM (SELECT count() c FROM post_events GROUP BY post_id ORDER BY c DESC LIMIT 60)) AS top1pct_events`,
    );
    const n = (k: string): number => Number(s![k]);
    expect(n('views')).toBeGreaterThan(5 * n('likes'));
    expect(n('likes')).toBeGreaterThan(n('comments'));
    expect(n('comments')).toBeGreaterThan(n('shares'));
    expect(n('shares')).toBeGreaterThan(0);
    expect(n('in_range')).toBe(1);
    expect(n('inconsistent')).toBe(0);
    expect(n('top_followers')).toBeGreaterThan(50 * n('median_followers'));
    expect(n('removed_share')).toBeGreaterThan(0.04);
    expect(n('removed_share')).toBeLessThan(0.12);
    // 60 posts are 1 % of 6000: they draw far more than 1 % of the events.
    expect(n('top1pct_events') / 200_000).toBeGreaterThan(0.15);
  });

  it('the command refuses to load twice without --replace, and validates its flags', async () => {
    const first = fakeIo();
    expect(
      await main(['seed', '--users', '300', '--days', '1', '--events', '30000'], cliEnv(DBS.cli), first),
    ).toBe(0);
    expect(first.out.join('')).toMatch(/seed: post_events 30000\/30000 \(100%\)/);
    const twice = fakeIo();
    expect(await main(['seed', '--users', '300', '--events', '100'], cliEnv(DBS.cli), twice)).toBe(1);
    expect(twice.err.join('')).toMatch(/already holds data.*--replace/s);
    const replace = fakeIo();
    expect(
      await main(['seed', '--users', '300', '--events', '100', '--replace'], cliEnv(DBS.cli), replace),
    ).toBe(0);
    const [{ n }] = (await rows<{ n: string }>(client(DBS.cli), 'SELECT count() AS n FROM post_events')) as [
      { n: string },
    ];
    expect(Number(n)).toBe(100);
    const bad = fakeIo();
    expect(await main(['seed', '--events', 'lots'], cliEnv(DBS.cli), bad)).toBe(2);
  });
});

describe('backfill', () => {
  it('fills rollups for data loaded before the views, and repeating it never double counts', async () => {
    const c = client(DBS.backfill);
    for (const r of Object.values(ROLLUPS)) await c.command({ query: `DROP VIEW ${r.view}` });
    await seedDatabase(c, SMALL); // the same data as database a, but no view saw it
    const report = await migrate(c); // recreates the views
    expect(report.created).toEqual([ROLLUPS.minute.view, ROLLUPS.hour.view]);
    expect(report.backfillAdvised).toBe(true);

    const expected = await Promise.all(
      Object.values(ROLLUPS).map((r) => rollupChecksum(client(DBS.a), r.table)),
    );
    await backfillRollups(c);
    const once = await Promise.all(Object.values(ROLLUPS).map((r) => rollupChecksum(c, r.table)));
    expect(once).toEqual(expected);
    await backfillRollups(c);
    const twice = await Promise.all(Object.values(ROLLUPS).map((r) => rollupChecksum(c, r.table)));
    expect(twice).toEqual(expected);
    expect((await migrate(c)).backfillAdvised).toBe(false);

    // A live insert after the backfill reaches the rollups through the views, once.
    await c.insert({
      table: 'post_events',
      values: [
        { event_time: END.getTime() / 1000, post_id: 1, author_id: 1, user_id: 1, event_type: 'post_like' },
      ],
      format: 'JSONEachRow',
    });
    await backfillRollups(c);
    const [totals] = await rows<{ raw: string; minute: string; hour: string }>(
      c,
      `SELECT (SELECT count() FROM post_events) AS raw,
              (SELECT sum(views + likes + comments + shares + unknown) FROM ${ROLLUPS.minute.table}) AS minute,
              (SELECT sum(views + likes + comments + shares + unknown) FROM ${ROLLUPS.hour.table}) AS hour`,
    );
    expect([totals!.raw, totals!.minute, totals!.hour].map(Number)).toEqual([200_001, 200_001, 200_001]);
    const tables = await rows<{ name: string }>(
      c,
      `SELECT name FROM system.tables WHERE database = currentDatabase() AND name LIKE '%backfill%'`,
    );
    expect(tables).toEqual([]);
  });
});

describe('once', () => {
  it('runs one job against the configured servers and reports it as JSON', async () => {
    const io = fakeIo();
    const code = await main(['once', 'trending-24h', '--json'], cliEnv(DBS.a), io);
    const summary = JSON.parse(io.out.join('')) as Record<string, unknown>;
    // The summary first: on failure it names the error.
    expect(summary).toMatchObject({ job: 'trending-24h', outcome: 'success', items: 50 });
    expect(code).toBe(0);
    expect(typeof summary.duration_ms).toBe('number');
    const value = await redis.get(`${PREFIX}:trending:24h`);
    expect(JSON.parse(value!)).toHaveLength(50);
  });

  it('exits 1 when the run fails and 2 for an unknown job', async () => {
    await client(DBS.c).command({ query: `DROP TABLE ${MOMENT_ROLLUPS.day.table}` });
    const failed = fakeIo();
    expect(await main(['once', 'trending-7d'], cliEnv(DBS.c), failed)).toBe(1);
    expect(failed.out.join('')).toMatch(/outcome +failure/);
    // Its dead-letter record went to the spool (no KAFKA_BROKERS here).
    const spooled = readFileSync(path.join(cliEnv(DBS.c).DLQ_SPOOL_DIR!, 'spool.jsonl'), 'utf8');
    expect(spooled).toMatch(/"job":"trending-7d".*post_moments_1d/);
    const unknown = fakeIo();
    expect(await main(['once', 'trending-2h'], cliEnv(DBS.c), unknown)).toBe(2);
    expect(unknown.err.join('')).toContain('unknown job "trending-2h"');
    expect(await main(['once'], cliEnv(DBS.c), fakeIo())).toBe(2);
  });
});

// parseConfig is what main() uses; keep the test's environment valid by construction.
expect(() => parseConfig(cliEnv('x'))).not.toThrow();
