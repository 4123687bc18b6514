import { randomUUID } from 'node:crypto';
import { ClickHouseError } from '@clickhouse/client';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisCacheWriter } from '../../src/cache/writer.js';
import { missingTables } from '../../src/clickhouse/missing-tables.js';
import { backfillRollups, migrate, MIGRATIONS } from '../../src/clickhouse/schema.js';
import { seedDatabase, tableCounts } from '../../src/clickhouse/seed.js';
import { checkJobColumns } from '../../src/declarative/column-check.js';
import { DeclarativeJob } from '../../src/declarative/declarative-job.js';
import { parseJobsFile } from '../../src/declarative/parse-jobs-file.js';
import { FEED_SQL, FEED_WARMER_TABLES, FeedWarmerJob } from '../../src/jobs/feed-warmer.js';
import { SUGGESTIONS_BATCH_SQL, SuggestedUsersJob } from '../../src/jobs/suggested-users.js';
import { TrendingJob } from '../../src/jobs/trending.js';
import { planWindow, windowPlanParams } from '../../src/jobs/window-plan.js';
import {
  clusterDatabase,
  startLocalCluster,
  type ClusterDatabase,
  type LocalCluster,
} from './clickhouse-cluster.js';
import { runFacts } from './run-facts.js';
import { servicesEnv } from './env.js';
import {
  activeUsers,
  exactTrendingTop,
  expectedFeeds,
  expectedSuggestions,
  expectFeedMatches,
  expectTrendingMatches,
  followGraph,
  topFeedUsers,
  TRENDING_DECAY,
  type FeedEntry,
  type Suggestion,
  type TrendingEntry,
} from './job-expectations.js';

/**
 * CLICKHOUSE_CLUSTER on a real two-shard cluster (scripts/services.sh up --clickhouse-cluster): the
 * schema laid out as migrate lays it out, data loaded through the Distributed tables, every built-in
 * job and a declarative job run through node 1, and every value checked with the same reference
 * computations as the single-server tests (job-expectations.ts), run on the Distributed tables.
 */

const USERS = 3000;
const NOW = new Date(Math.floor(Date.now() / 60_000) * 60_000 - 17_000); // not on a minute boundary
const NOW_S = Math.floor(NOW.getTime() / 1000);
const prefix = `test-cluster-${randomUUID()}`;

let cluster: LocalCluster;
let db: ClusterDatabase;
let redis: Redis;

async function count(client: ClusterDatabase['client'], query: string): Promise<number> {
  const rs = await client.query({ query, format: 'JSONEachRow' });
  return Number((await rs.json<{ n: string }>())[0]?.n);
}

beforeAll(async () => {
  cluster = await startLocalCluster();
  db = await clusterDatabase(cluster, 'test_cluster');
  redis = new Redis(servicesEnv().redisUrl);
  await seedDatabase(db.client, { users: USERS, days: 7, events: 150_000, seed: 23, now: NOW });
  // A follow later removed: the remove must win (FINAL per pair, on the pair's one shard).
  await db.client.command({
    query: `INSERT INTO user_relationships VALUES (1, 2, 'active', toDateTime({a:UInt32})), (1, 2, 'removed', toDateTime({b:UInt32}))`,
    query_params: { a: NOW_S - 7200, b: NOW_S - 60 },
  });
  // Bad rows, each of which every job must skip and count: two events (post id 0 and an unknown type)
  // inside the last hour, a relationship with an unknown status, a post with author 0 in the lookback.
  await db.client.insert({
    table: 'post_events',
    values: [
      { event_time: NOW_S - 100, post_id: 0, author_id: 4, user_id: 5, event_type: 'post_like' },
      { event_time: NOW_S - 200, post_id: 7, author_id: 4, user_id: 5, event_type: 'post_impression' },
    ],
    format: 'JSONEachRow',
  });
  await db.client.command({
    query: `INSERT INTO user_relationships VALUES (3, 4, 'blocked', toDateTime({t:UInt32}))`,
    query_params: { t: NOW_S - 600 },
  });
  await db.client.command({
    query: `INSERT INTO posts VALUES (99, 0, toDateTime({t:UInt32}))`,
    query_params: { t: NOW_S - 600 },
  });
  await redis.ping();
}, 240_000);

afterAll(async () => {
  let cursor = '0';
  do {
    const [next, found] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 10_000);
    cursor = next;
    if (found.length > 0) await redis.del(...found);
  } while (cursor !== '0');
  await redis.quit();
  await db.drop();
});

describe('the cluster schema', () => {
  it('puts the contract names on Distributed tables over shard-local tables, views on the local tables', async () => {
    for (const node of db.nodes) {
      const rs = await node.query({
        query: `SELECT name, engine, engine_full FROM system.tables WHERE database = currentDatabase()`,
        format: 'JSONEachRow',
      });
      const tables = new Map(
        (await rs.json<{ name: string; engine: string; engine_full: string }>()).map((t) => [t.name, t]),
      );
      for (const m of MIGRATIONS) {
        if (m.kind === 'view') {
          expect(tables.get(m.name)?.engine).toBe('MaterializedView');
          continue;
        }
        expect(tables.get(m.name)?.engine).toBe('Distributed');
        expect(tables.get(m.name)?.engine_full).toContain(`'${m.name}_local', ${m.shardingKey}`);
        expect(tables.get(`${m.name}_local`)?.engine).toMatch(/MergeTree$/);
      }
    }
  });

  it("spreads the rows over both shards, and each shard's views fill its own rollups", async () => {
    const total = await count(db.client, 'SELECT count() AS n FROM post_events');
    expect(total).toBe(150_002);
    let sum = 0;
    for (const node of db.nodes) {
      const local = await count(node, 'SELECT count() AS n FROM post_events_local');
      expect(local).toBeGreaterThan(total / 4);
      // The rollups of this shard count exactly this shard's events (views on the local tables).
      expect(
        await count(
          node,
          'SELECT sum(views + likes + comments + shares + unknown) AS n FROM post_engagement_1m_local',
        ),
      ).toBe(local);
      sum += local;
    }
    expect(sum).toBe(total);
    // A post's events are on one shard only (sharding by post_id).
    expect(
      await count(
        db.client,
        `SELECT count() AS n FROM (SELECT post_id FROM post_events GROUP BY post_id HAVING uniqExact(_shard_num) > 1)`,
      ),
    ).toBe(0);
    const counts = await tableCounts(db.client, undefined, { cluster: cluster.name });
    expect(counts.post_events).toBe(total);
    expect(counts.post_engagement_1h).toBeGreaterThan(0);
  });

  it('migrate sends every statement ON CLUSTER (these servers have no distributed-DDL queue to run it)', async () => {
    const err = await migrate(db.client, undefined, { cluster: cluster.name }).then(
      () => undefined,
      (e: unknown) => e,
    );
    // clickhouse-local has no Keeper client and no DDL worker: its answer to ON CLUSTER is this one.
    expect(err).toBeInstanceOf(ClickHouseError);
    expect((err as ClickHouseError).message).toMatch(/Replicated DDL queries are disabled/);
  });

  it("backfill on each node rebuilds that shard's rollups from its own events (the jobs below read them)", async () => {
    for (const node of db.nodes) {
      // Empty one rollup partition of this shard first, as data loaded before the views would leave it.
      await node.command({ query: 'TRUNCATE TABLE post_engagement_1h_local' });
      const report = await backfillRollups(node, { layout: { cluster: cluster.name } });
      expect(report.tables.map((t) => t.table)).toEqual([
        'post_engagement_1m_local',
        'post_engagement_1h_local',
        'post_moments_1h_local',
        'post_moments_6h_local',
        'post_moments_1d_local',
        'user_activity_1d_local',
      ]);
      const local = await count(node, 'SELECT count() AS n FROM post_events_local');
      for (const rollup of ['post_engagement_1m_local', 'post_engagement_1h_local']) {
        expect(
          await count(node, `SELECT sum(views + likes + comments + shares + unknown) AS n FROM ${rollup}`),
        ).toBe(local);
      }
    }
  });

  it('readiness sees the tables the jobs read', async () => {
    expect(await missingTables(db.client, FEED_WARMER_TABLES)).toEqual([]);
  });
});

describe('the built-in jobs on the Distributed tables', () => {
  it.each(['1h', '24h', '7d'] as const)(
    'trending-%s: top 50 and scores as the exact formula',
    async (window) => {
      const result = await new TrendingJob({
        window,
        clickhouse: db.client,
        cache: new RedisCacheWriter(redis),
        keyPrefix: prefix,
        topK: 50,
        decay: TRENDING_DECAY[window],
        ttlSec: 300,
      }).run(runFacts(`trending-${window}`, NOW));
      const raw = await redis.get(`${prefix}:trending:${window}`);
      const got = raw === null ? null : (JSON.parse(raw) as TrendingEntry[]);
      const want = await exactTrendingTop(db.client, window, NOW.getTime(), 50);
      expect(want).toHaveLength(50);
      expectTrendingMatches(window, got, want);
      // The two bad events of the last hour, counted once across the shards.
      expect(result.context).toMatchObject({ posts: 50, skipped_rows: 2 });
    },
  );

  it("suggested-users: every active user's list equals the independent computation", async () => {
    const result = await new SuggestedUsersJob({
      clickhouse: db.client,
      cache: new RedisCacheWriter(redis),
      keyPrefix: prefix,
      perUser: 20,
      activeDays: 7,
      maxFollowees: 1000,
      batchSize: 1000, // several batches
      ttlSec: 600,
    }).run(runFacts('suggested-users', NOW));
    const active = await activeUsers(db.client, NOW_S);
    expect(active.size).toBeGreaterThan(1000);
    expect(result.context).toMatchObject({ users: active.size, skipped_rows: 3 });
    const graph = await followGraph(db.client);
    expect(graph.follows.get('1')?.some((x) => x.f === '2') ?? false).toBe(false);
    const users = [...active];
    const values = await redis.mget(users.map((u) => `${prefix}:suggested_users:${u}`));
    let nonEmpty = 0;
    users.forEach((u, i) => {
      expect(values[i], `user ${u} has a key`).not.toBeNull();
      const got = JSON.parse(values[i]!) as Suggestion[];
      expect(got, `suggestions of user ${u}`).toEqual(expectedSuggestions(graph, u));
      if (got.length > 0) nonEmpty++;
    });
    expect(nonEmpty).toBeGreaterThan(active.size / 2);
  }, 120_000);

  it("feed-warmer: every top user's page equals the raw-table computation", async () => {
    const result = await new FeedWarmerJob({
      clickhouse: db.client,
      cache: new RedisCacheWriter(redis),
      keyPrefix: prefix,
      users: 1000,
      pageSize: 20,
      activeDays: 7,
      lookbackHours: 72,
      decay: 0.95,
      ttlSec: 120,
    }).run(runFacts('feed-warmer', NOW));
    expect(result.items).toBe(1000);
    expect(result.context).toMatchObject({ skipped_rows: 4 });
    const top = await topFeedUsers(db.client, NOW_S, 1000);
    const want = await expectedFeeds(db.client, top, NOW_S);
    const values = await redis.mget(top.map((u) => `${prefix}:feed:${u}`));
    let compared = 0;
    top.forEach((u, i) => {
      const got = JSON.parse(values[i]!) as FeedEntry[];
      expectFeedMatches(got, want.get(u)!);
      compared += got.length;
    });
    expect(compared).toBeGreaterThan(5000);
  }, 120_000);

  it('a declarative job over user_relationships FINAL, after the deploy-time column check', async () => {
    const parsed = parseJobsFile(
      `jobs:
  - id: top-followed
    interval_sec: 60
    params: { min_followers: 5 }
    query: |
      SELECT toString(followee_id) AS member, count() AS score
      FROM user_relationships FINAL
      WHERE status = 'active' AND updated_at <= toDateTime({now:UInt32})
      GROUP BY followee_id HAVING score >= {min_followers:UInt32}
      ORDER BY score DESC, followee_id ASC LIMIT 100
    output: { type: sorted_set, key: "{prefix}:top_followed", member: member, score: score }
`,
      'jobs.yaml',
      { reservedIds: [], cronTimezone: 'UTC' },
    );
    expect(parsed.problems).toEqual([]);
    const spec = parsed.jobs[0]!;
    expect(
      await checkJobColumns(db.client, [spec], { now: NOW, signal: AbortSignal.timeout(15_000) }),
    ).toEqual([]);
    await new DeclarativeJob({
      spec,
      clickhouse: db.client,
      cache: new RedisCacheWriter(redis),
      keyPrefix: prefix,
      ttlSec: 180,
    }).run(runFacts('top-followed', NOW));
    const got = await redis.zrevrange(`${prefix}:top_followed`, 0, -1, 'WITHSCORES');
    const graph = await followGraph(db.client);
    const followers = new Map<string, number>();
    for (const r of graph.latest.values()) {
      if (r.s === 'active') followers.set(r.b, (followers.get(r.b) ?? 0) + 1);
    }
    const want = [...followers.entries()]
      .filter(([, n]) => n >= 5)
      .sort((x, y) => y[1] - x[1] || (BigInt(x[0]) < BigInt(y[0]) ? -1 : 1))
      .slice(0, 100);
    const gotMap = new Map<string, number>();
    for (let i = 0; i < got.length; i += 2) gotMap.set(got[i]!, Number(got[i + 1]));
    expect(gotMap).toEqual(new Map(want));
  });
});

describe('what the cluster needs of the SQL', () => {
  async function run(query: string, params: Record<string, unknown>): Promise<string> {
    const rs = await db.client.query({ query, query_params: params, format: 'TabSeparatedRaw' });
    return rs.text();
  }

  it("the jobs' subqueries over Distributed tables must be GLOBAL: plain IN is refused", async () => {
    const suggestions = {
      now: NOW_S,
      since: NOW_S - 7 * 86_400,
      lo: '0',
      hi: '18446744073709551615',
      max_followees: 1000,
      per_user: 20,
    };
    const feed = {
      now: NOW_S,
      active_since: NOW_S - 7 * 86_400,
      lookback_since: NOW_S - 72 * 3600,
      users: 1000,
      page_size: 20,
      decay: 0.95,
      ...windowPlanParams(planWindow(NOW.getTime(), 72 * 3600, 60)),
    };
    // The queries as they are run: they answer.
    expect((await run(SUGGESTIONS_BATCH_SQL, suggestions)).length).toBeGreaterThan(0);
    expect((await run(FEED_SQL, feed)).length).toBeGreaterThan(0);
    // Without GLOBAL each shard would run the subquery over the Distributed tables itself.
    const plain = (sql: string): string => sql.replaceAll('GLOBAL IN', 'IN');
    await expect(run(plain(SUGGESTIONS_BATCH_SQL), suggestions)).rejects.toThrow(/Double-distributed/i);
    await expect(run(plain(FEED_SQL), feed)).rejects.toThrow(/Double-distributed/i);
  });

  it('plain IN with each shard reading only its own rows (distributed_product_mode=local) gives wrong lists', async () => {
    const rs = await db.client.query({
      query: SUGGESTIONS_BATCH_SQL.replaceAll('GLOBAL IN', 'IN'),
      query_params: {
        now: NOW_S,
        since: NOW_S - 7 * 86_400,
        lo: '0',
        hi: '18446744073709551615',
        max_followees: 1000,
        per_user: 20,
      },
      format: 'TabSeparatedRaw',
      clickhouse_settings: { distributed_product_mode: 'local' },
    });
    const graph = await followGraph(db.client);
    const lines = (await rs.text()).split('\n').filter((l) => l !== '');
    let wrong = 0;
    for (const line of lines) {
      const [u, value] = line.split('\t') as [string, string];
      if (JSON.stringify(JSON.parse(value)) !== JSON.stringify(expectedSuggestions(graph, u))) wrong++;
    }
    console.log(`plain IN, shard-local subqueries: ${wrong} of ${lines.length} users' lists wrong`);
    expect(lines.length).toBeGreaterThan(1000);
    expect(wrong).toBeGreaterThan(lines.length / 10);
  });

  it('FINAL is right only when every row of a key is on one shard, which the sharding key ensures', async () => {
    // The removed follow 1 -> 2: both rows on the shard its follower picks, so FINAL keeps the newest.
    const final = await db.client.query({
      query: `SELECT status, _shard_num AS shard FROM user_relationships FINAL WHERE follower_id = 1 AND followee_id = 2`,
      format: 'JSONEachRow',
    });
    expect((await final.json<{ status: string }>()).map((r) => r.status)).toEqual(['removed']);
    // The same two rows split over the shards (as a key that is not the pair's would put them): FINAL
    // merges per shard and keeps both, so the follow would count as active again.
    const [first, second] = db.nodes;
    await first!.command({
      query: `INSERT INTO user_relationships_local VALUES (900001, 900002, 'active', toDateTime({a:UInt32}))`,
      query_params: { a: NOW_S - 7200 },
    });
    await second!.command({
      query: `INSERT INTO user_relationships_local VALUES (900001, 900002, 'removed', toDateTime({b:UInt32}))`,
      query_params: { b: NOW_S - 60 },
    });
    const split = await db.client.query({
      query: `SELECT status FROM user_relationships FINAL WHERE follower_id = 900001 AND followee_id = 900002 ORDER BY status`,
      format: 'JSONEachRow',
    });
    expect((await split.json<{ status: string }>()).map((r) => r.status)).toEqual(['active', 'removed']);
    // Put back as the sharding key would have it (later tests read the graph).
    for (const node of db.nodes) {
      await node.command({
        query: `ALTER TABLE user_relationships_local DELETE WHERE follower_id = 900001 AND followee_id = 900002 SETTINGS mutations_sync = 1`,
      });
    }
  });
});
