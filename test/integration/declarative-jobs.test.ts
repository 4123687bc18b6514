// CONTRACT §11 declarative jobs under a real `cache-refresher run` (JOBS_FILE): one job of each output
// type over seeded tables, every value in Redis checked against SQL written here independently of the
// jobs' queries; a reader polling the sorted set through replacements; a failing query that keeps the
// previous value and produces exactly one dead-letter record naming the job.
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Kafka } from 'kafkajs';
import type { RedisClient } from '../../src/cache/redis-client.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { seedDatabase } from '../../src/clickhouse/seed.js';
import { RunnerProcess } from '../fixtures/child.js';
import { servicesEnv } from './env.js';
import { createTopic, testKafka, TopicReader } from './kafka-helpers.js';
import { scratchDatabase, type ScratchDatabase } from './scratch-database.js';
import { deleteMatching, getMany, keysMatching, redisFor, TOPOLOGIES } from './topologies.js';

const ADMIN_TOKEN = 'test-admin-token';
const NOW = new Date(Math.floor(Date.now() / 1000) * 1000 - 60_000);
/** A fixed window start, so every run and the checks below see the same rows. */
const SINCE = Math.floor(NOW.getTime() / 1000) - 86_400;

const JOBS_YAML = `jobs:
  - id: top-followed
    interval_sec: 1
    # A run over a busy machine (or a cluster's per-slot writes) may take more than its 1 s interval.
    timeout_sec: 5
    query: |
      SELECT toString(followee_id) AS member, count() AS score
      FROM user_relationships FINAL
      WHERE status = 'active' AND updated_at <= toDateTime({now:UInt32})
      GROUP BY followee_id
    output: { type: sorted_set, key: "{prefix}:top_followed", member: member, score: score }
  - id: post-stats
    interval_sec: 2
    # As above: under a loaded CI machine a 2 s timeout dead-letters runs that only ran slow.
    timeout_sec: 10
    params: { since: ${SINCE} }
    query: |
      SELECT post_id, any(author_id) AS author_id,
             countIf(event_type = 'post_view') AS views, countIf(event_type = 'post_like') AS likes
      FROM post_events
      WHERE event_time > toDateTime({since:UInt32}) AND event_time <= toDateTime({now:UInt32})
        AND post_id != 0
      GROUP BY post_id
    output: { type: hash, key: "{prefix}:post_stats:{post_id}" }
  - id: user-events
    interval_sec: 2
    timeout_sec: 10
    params: { since: ${SINCE} }
    query: |
      SELECT user_id, count() AS events, uniqExact(post_id) AS posts
      FROM post_events
      WHERE event_time > toDateTime({since:UInt32}) AND event_time <= toDateTime({now:UInt32})
        AND user_id != 0
      GROUP BY user_id
    output: { type: per_row, key: "{prefix}:user_events:{user_id}" }
  - id: event-types
    interval_sec: 3600
    params: { since: ${SINCE} }
    query: |
      SELECT toString(event_type) AS event_type, count() AS events
      FROM post_events
      WHERE event_time > toDateTime({since:UInt32}) AND event_time <= toDateTime({now:UInt32})
      GROUP BY event_type ORDER BY event_type
    output: { type: string, key: "{prefix}:event_types" }
  - id: fragile
    interval_sec: 3600
    retries: 0
    query: SELECT k, v FROM fragile ORDER BY k
    output: { type: string, key: "{prefix}:fragile" }
`;

// The same checks on each Redis topology (issue 15: every output type is unchanged on a cluster).
describe.each(TOPOLOGIES)('JOBS_FILE under a real run (%s Redis)', (topology) => {
  const s = servicesEnv();
  const prefix = `test-decl-${randomUUID()}`;
  const topic = `test-decl-dlq-${randomUUID()}`;
  let db: ScratchDatabase;
  let redis: RedisClient;
  let redisEnv: Record<string, string>;
  let kafka: Kafka;
  let reader: TopicReader;
  let dir: string;
  let runner: RunnerProcess | undefined;

  beforeAll(async () => {
    db = await scratchDatabase('test_decl');
    await seedDatabase(db.client, { users: 3000, days: 2, events: 100_000, seed: 5, now: NOW });
    await db.client.command({
      query: 'CREATE TABLE fragile (k UInt64, v String) ENGINE = MergeTree ORDER BY k',
    });
    await db.client.command({
      query: "INSERT INTO fragile VALUES (18446744073709551615, 'max'), (1, 'one')",
    });
    ({ redis, env: redisEnv } = await redisFor(topology));
    kafka = testKafka(s.kafkaBrokers);
    await createTopic(kafka, topic);
    reader = await TopicReader.start(kafka, topic);
    dir = await mkdtemp(path.join(os.tmpdir(), 'decl-it-'));
    await writeFile(path.join(dir, 'jobs.yaml'), JOBS_YAML);
  });

  afterAll(async () => {
    if (runner) {
      runner.kill('SIGKILL');
      await runner.exited;
    }
    await reader.stop();
    await deleteMatching(redis, `${prefix}:*`);
    await redis.quit();
    await db.drop();
    await rm(dir, { recursive: true, force: true });
  });

  const query = async <T>(sql: string): Promise<T[]> =>
    (await db.client.query({ query: sql, query_params: { since: SINCE }, format: 'JSONEachRow' })).json<T>();

  it('writes every output type, replaces the sorted set atomically, dead-letters a failing query once', async () => {
    runner = new RunnerProcess(
      {
        ...redisEnv,
        CLICKHOUSE_URL: s.clickhouseUrl,
        CLICKHOUSE_DATABASE: db.name,
        KAFKA_BROKERS: s.kafkaBrokers.join(','),
        DLQ_TOPIC: topic,
        DLQ_SPOOL_DIR: path.join(dir, 'spool'),
        CACHE_KEY_PREFIX: prefix,
        HTTP_PORT: '0',
        ADMIN_TOKEN,
        LEADER_LEASE_SEC: '5',
        JOBS_FILE: path.join(dir, 'jobs.yaml'),
        // The environment wins over the file (CONTRACT §11).
        EVENT_TYPES_INTERVAL_SEC: '1',
        EVENT_TYPES_TIMEOUT_SEC: '5',
      },
      [],
    );
    const child = runner;
    const succeeded = (job: string): number =>
      child.lines.filter((l) => l.job === job && l.outcome === 'success').length;
    for (const job of ['top-followed', 'post-stats', 'user-events', 'event-types', 'fragile']) {
      await child.waitForLog((l) => l.job === job && l.outcome === 'success', 30_000);
    }
    const jobs = (await child.request('GET', '/jobs')).json() as { name: string; schedule: string }[];
    expect(jobs.find((j) => j.name === 'event-types')?.schedule).toMatch(/every 1 ?s/);

    // sorted_set: followers per followee, latest row per pair by argMax instead of FINAL.
    const followers = await query<{ m: string; n: string }>(`
      SELECT toString(followee_id) AS m, toString(count()) AS n FROM (
        SELECT follower_id, followee_id, argMax(status, updated_at) AS st
        FROM user_relationships GROUP BY follower_id, followee_id)
      WHERE st = 'active' GROUP BY followee_id`);
    expect(followers.length).toBeGreaterThan(500);
    const zset = await redis.zrange(`${prefix}:top_followed`, 0, -1, 'WITHSCORES');
    const inRedis = new Map<string, string>();
    for (let i = 0; i < zset.length; i += 2) inRedis.set(zset[i]!, zset[i + 1]!);
    expect(inRedis).toEqual(new Map(followers.map((r) => [r.m, r.n])));

    // A reader polling while the set is replaced every second sees the whole set every time.
    const runsBefore = succeeded('top-followed');
    const sizes = new Map<number, number>();
    const deadline = Date.now() + 4_000;
    while (Date.now() < deadline || succeeded('top-followed') < runsBefore + 3) {
      const n = await redis.zcard(`${prefix}:top_followed`);
      sizes.set(n, (sizes.get(n) ?? 0) + 1);
    }
    expect([...sizes.keys()]).toEqual([followers.length]);
    expect(sizes.get(followers.length)).toBeGreaterThan(100);

    // hash: per post, counted per event type and the author taken from `posts`.
    const posts = await query<{ post_id: string; author_id: string; views: string; likes: string }>(`
      SELECT toString(e.post_id) AS post_id, toString(p.author_id) AS author_id,
             toString(sum(e.event_type = 'post_view')) AS views, toString(sum(e.event_type = 'post_like')) AS likes
      FROM post_events AS e INNER JOIN posts AS p ON p.post_id = e.post_id
      WHERE e.event_time > toDateTime({since:UInt32}) AND e.post_id != 0
      GROUP BY e.post_id, p.author_id`);
    expect(posts.length).toBeGreaterThan(500);
    const got = await Promise.all(posts.map((p) => redis.hgetall(`${prefix}:post_stats:${p.post_id}`)));
    expect(got).toEqual(posts.map(({ post_id: _id, ...fields }) => fields));
    expect(await keysMatching(redis, `${prefix}:post_stats:*`)).toHaveLength(posts.length);

    // per_row: the row without its key column, as JSON.
    const users = await query<{ u: string; events: string; posts: string }>(`
      SELECT toString(user_id) AS u, toString(count()) AS events, toString(count(DISTINCT post_id)) AS posts
      FROM post_events WHERE event_time > toDateTime({since:UInt32}) AND user_id != 0 GROUP BY user_id`);
    expect(users.length).toBeGreaterThan(500);
    const values = await getMany(
      redis,
      users.map((u) => `${prefix}:user_events:${u.u}`),
    );
    expect(values).toEqual(users.map((u) => JSON.stringify({ events: u.events, posts: u.posts })));
    expect(await redis.ttl(`${prefix}:user_events:${users[0]!.u}`)).toBeGreaterThan(0);

    // string: the rows as a JSON array of objects, 64-bit integers as decimal strings.
    const types = await query<{ event_type: string; events: string }>(`
      SELECT toString(event_type) AS event_type, toString(count()) AS events
      FROM post_events WHERE event_time > toDateTime({since:UInt32}) GROUP BY event_type ORDER BY event_type`);
    expect(JSON.parse((await redis.get(`${prefix}:event_types`))!)).toEqual(types);
    expect(succeeded('event-types')).toBeGreaterThanOrEqual(2);

    // A failing query: the last good value stays, and exactly one DLQ record names the job.
    const fragileKey = `${prefix}:fragile`;
    const good = await redis.get(fragileKey);
    expect(JSON.parse(good!)).toEqual([
      { k: '1', v: 'one' },
      { k: '18446744073709551615', v: 'max' },
    ]);
    await db.client.command({ query: 'DROP TABLE fragile' });
    const trigger = await child.request('POST', '/jobs/fragile/trigger', ADMIN_TOKEN);
    expect(trigger.status).toBe(202);
    await child.waitForLog((l) => l.job === 'fragile' && l.outcome === 'failure');
    // The jobs each record names, so a failure says which job was dead-lettered.
    const named = (): string[] => reader.received.map((r) => `${r.key}: ${r.record.error.message}`);
    await expect.poll(() => reader.received.length, { timeout: 20_000 }).toBeGreaterThanOrEqual(1);
    // Other jobs keep succeeding meanwhile; no further record may arrive.
    await new Promise((r) => setTimeout(r, 3_000));
    expect(named()).toEqual([expect.stringMatching(/^fragile: /)]);
    const [dlq] = reader.received;
    expect(dlq!.key).toBe('fragile');
    expect(dlq!.record).toMatchObject({
      job: 'fragile',
      outcome: 'failure',
      attempts: 1,
      context: { jobs_file: path.join(dir, 'jobs.yaml'), output: 'string' },
    });
    expect(dlq!.record.error.message).toMatch(/fragile/);
    expect(await redis.get(fragileKey)).toBe(good);
    expect(await redis.ttl(fragileKey)).toBeGreaterThan(3600);
  }, 120_000);
});
