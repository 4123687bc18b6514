// The bad-data rule (README "What the jobs compute"): rows with a zero id, an unknown event type or an
// unknown relationship status are skipped by every built-in job, never reach a cached value, never make
// a user active, and are counted in each run's skipped_rows.
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisCacheWriter } from '../../src/cache/writer.js';
import { GOOD_EVENT_SQL, migrate, rollupSelectSql, ROLLUPS } from '../../src/clickhouse/schema.js';
import { FeedWarmerJob } from '../../src/jobs/feed-warmer.js';
import { SuggestedUsersJob } from '../../src/jobs/suggested-users.js';
import { TrendingJob, type TrendingWindow } from '../../src/jobs/trending.js';
import type { RunFacts, RunResult } from '../../src/runner/job.js';
import { runFacts } from './run-facts.js';
import { servicesEnv } from './env.js';
import { scratchDatabase, type ScratchDatabase } from './scratch-database.js';

const NOW = new Date(Math.floor(Date.now() / 60_000) * 60_000 - 23_000); // not on a minute boundary
const NOW_S = Math.floor(NOW.getTime() / 1000);
const at = (secAgo: number): number => NOW_S - secAgo;

// Good rows: users 1 and 3 act; 1 follows 2, 2 follows 3 (so 3 is 1's one suggestion); 2 wrote post 100.
const GOOD_EVENTS = [
  { event_time: at(30), post_id: 100, author_id: 2, user_id: 1, event_type: 'post_like' },
  { event_time: at(900), post_id: 100, author_id: 2, user_id: 3, event_type: 'post_view' },
];
// Bad events, each of which would change a value if it were read: heavy weights on post 0 and on post
// 100, and "activity" of users 0 and 50 (50 follows 2, so as an active user it would get keys).
const BAD_EVENTS = [
  { event_time: at(20), post_id: 0, author_id: 2, user_id: 1, event_type: 'post_share' },
  { event_time: at(600), post_id: 0, author_id: 2, user_id: 3, event_type: 'post_share' },
  { event_time: at(25), post_id: 100, author_id: 0, user_id: 3, event_type: 'post_share' },
  { event_time: at(700), post_id: 100, author_id: 2, user_id: 0, event_type: 'post_share' },
  // Older ones too: whole hours (counted from the hour rollup) and the far edges of the 7-day windows
  // (raw rows: one just inside, one just outside).
  ...[40, 400, 1200, 5 * 3600 + 17, 7 * 86_400 - 10, 7 * 86_400 + 10].map((ago) => ({
    event_time: at(ago),
    post_id: 100,
    author_id: 2,
    user_id: 50,
    event_type: 'garbage',
  })),
];
const GOOD_RELATIONSHIPS = [
  { follower_id: 1, followee_id: 2, status: 'active', updated_at: at(86_400) },
  { follower_id: 2, followee_id: 3, status: 'active', updated_at: at(86_400) },
  { follower_id: 50, followee_id: 2, status: 'active', updated_at: at(86_400) },
  // Pair (1, 6): followed, then a row with an unknown status is the latest: 6 is not followed.
  { follower_id: 1, followee_id: 6, status: 'active', updated_at: at(7200) },
];
const BAD_RELATIONSHIPS = [
  { follower_id: 2, followee_id: 0, status: 'active', updated_at: at(3600) },
  { follower_id: 0, followee_id: 3, status: 'active', updated_at: at(3600) },
  { follower_id: 2, followee_id: 5, status: 'blocked', updated_at: at(3600) },
  { follower_id: 1, followee_id: 6, status: 'muted', updated_at: at(60) },
];
const GOOD_POSTS = [
  { post_id: 100, author_id: 2, created_at: at(3600) },
  { post_id: 106, author_id: 6, created_at: at(3600) },
];
const BAD_POSTS = [
  { post_id: 0, author_id: 2, created_at: at(1800) },
  { post_id: 101, author_id: 0, created_at: at(1800) },
];

/** What the test needs of a built-in job's class: its id and one run. */
interface Job {
  readonly id: string;
  run(ctx: RunFacts): Promise<RunResult>;
}

describe('bad data in every built-in job', () => {
  let db: ScratchDatabase;
  let redis: Redis;
  const prefix = `test-bad-${randomUUID()}`;
  const results = new Map<string, RunResult>();

  beforeAll(async () => {
    db = await scratchDatabase('test_bad');
    redis = new Redis(servicesEnv().redisUrl);
    const insert = (table: string, values: object[]): Promise<unknown> =>
      db.client.insert({ table, values, format: 'JSONEachRow' });
    await insert('post_events', [...GOOD_EVENTS, ...BAD_EVENTS]);
    await insert('user_relationships', [...GOOD_RELATIONSHIPS, ...BAD_RELATIONSHIPS]);
    await insert('posts', [...GOOD_POSTS, ...BAD_POSTS]);

    const cache = new RedisCacheWriter(redis);
    const trending = (window: TrendingWindow): Job =>
      new TrendingJob({
        window,
        clickhouse: db.client,
        cache,
        keyPrefix: prefix,
        topK: 50,
        decay: 0.9,
        ttlSec: 600,
      });
    const jobs: Job[] = [
      trending('1h'),
      trending('24h'),
      trending('7d'),
      new SuggestedUsersJob({
        clickhouse: db.client,
        cache,
        keyPrefix: prefix,
        perUser: 20,
        activeDays: 7,
        maxFollowees: 1000,
        batchSize: 1,
        ttlSec: 600,
      }),
      new FeedWarmerJob({
        clickhouse: db.client,
        cache,
        keyPrefix: prefix,
        users: 1000,
        pageSize: 20,
        activeDays: 7,
        lookbackHours: 72,
        decay: 0.95,
        ttlSec: 600,
      }),
    ];
    for (const job of jobs) results.set(job.id, await job.run(runFacts(job.id, NOW)));
  }, 120_000);

  afterAll(async () => {
    const keys = await redis.keys(`${prefix}:*`);
    if (keys.length > 0) await redis.del(...keys);
    redis.disconnect();
    await db.drop();
  });

  it('keeps zero ids and bad rows out of every cached value', async () => {
    const keys = (await redis.keys(`${prefix}:*`)).sort();
    expect(keys).toEqual(
      [
        `${prefix}:feed:1`,
        `${prefix}:feed:3`,
        // The full mode's mark for an incremental sidecar beside it (README "Incremental suggested-users").
        `${prefix}:job:suggested-users:generation`,
        `${prefix}:suggested_users:1`,
        `${prefix}:suggested_users:3`,
        `${prefix}:trending:1h`,
        `${prefix}:trending:24h`,
        `${prefix}:trending:7d`,
      ].sort(),
    );
    const d = 0.9;
    const expectedScore = 2 * d ** (30 / 3600) + 0.1 * d ** (900 / 3600);
    for (const w of ['1h', '24h', '7d']) {
      const list = JSON.parse((await redis.get(`${prefix}:trending:${w}`))!) as {
        post_id: string;
        score: number;
      }[];
      expect(
        list.map((e) => e.post_id),
        w,
      ).toEqual(['100']);
      // Only the good like and view count: the bad shares on post 100 would more than double the score.
      expect(list[0]!.score / expectedScore - 1, w).toBeCloseTo(0, 3);
    }
    expect(JSON.parse((await redis.get(`${prefix}:suggested_users:1`))!)).toEqual([
      { user_id: '3', mutual_count: 1, reason: '1 mutual connection' },
    ]);
    expect(await redis.get(`${prefix}:suggested_users:3`)).toBe('[]');
    const feed = JSON.parse((await redis.get(`${prefix}:feed:1`))!) as {
      post_id: string;
      author_id: string;
    }[];
    // Post 0 (bad), 101 (author 0) and 106 (by 6, whose latest follow row has an unknown status) are out.
    expect(feed.map((e) => [e.post_id, e.author_id])).toEqual([['100', '2']]);
    expect(await redis.get(`${prefix}:feed:3`)).toBe('[]');
  });

  it('counts the bad rows each job read in its skipped_rows', () => {
    const skipped = Object.fromEntries([...results].map(([id, r]) => [id, r.context?.skipped_rows]));
    // The bad events of a window (now − sec, now].
    const badIn = (sec: number) => BAD_EVENTS.filter((e) => NOW_S - e.event_time < sec).length;
    const week = 7 * 86_400;
    expect(badIn(3600)).toBe(7);
    expect(badIn(week)).toBe(9);
    expect(skipped).toEqual({
      'trending-1h': badIn(3600),
      'trending-24h': badIn(86_400),
      'trending-7d': badIn(week),
      'suggested-users': badIn(week) + BAD_RELATIONSHIPS.length,
      'feed-warmer': badIn(week) + BAD_POSTS.length + BAD_RELATIONSHIPS.length,
    });
    expect(results.get('suggested-users')?.context).toMatchObject({ active_users: 2, users: 2 });
    expect(results.get('feed-warmer')).toMatchObject({ items: 2 });
  });

  it('migrate brings a rollup view of an older version up to the rule and advises a backfill', async () => {
    const view = ROLLUPS.minute.view;
    // The view as an earlier version defined it: every event's weight counted, whatever its ids.
    const oldSelect = rollupSelectSql(ROLLUPS.minute)
      .replaceAll(`, ${GOOD_EVENT_SQL})`, ')')
      .replaceAll('sumIf(', 'sum(');
    expect(oldSelect).not.toContain('sumIf');
    await db.client.command({ query: `ALTER TABLE ${view} MODIFY QUERY ${oldSelect}` });
    const report = await migrate(db.client);
    expect(report.updated).toEqual([view]);
    expect(report.backfillAdvised).toBe(true);
    const again = await migrate(db.client);
    expect(again.updated).toEqual([]);
    expect(again.backfillAdvised).toBe(false);
  });
});
