// suggested-users finds its active users in the user_activity_1d rollup (README "ClickHouse schema and
// rollups"): exact at the activity window's edges, blind to events loaded before the view existed until
// `migrate --backfill`, and independent of batch size and parallelism.
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisCacheWriter } from '../../src/cache/writer.js';
import { backfillRollups, migrate, USER_ACTIVITY } from '../../src/clickhouse/schema.js';
import { SuggestedUsersJob } from '../../src/jobs/suggested-users.js';
import { runFacts } from './run-facts.js';
import { servicesEnv } from './env.js';
import { scratchDatabase, type ScratchDatabase } from './scratch-database.js';

const NOW = new Date(Math.floor(Date.now() / 60_000) * 60_000 - 23_000);
const NOW_S = Math.floor(NOW.getTime() / 1000);
const SINCE_S = NOW_S - 7 * 86_400;

/** Users 11–16 each follow 1, and 1 follows 2: every active one of them gets the suggestion 2. */
const FOLLOWS = [11, 12, 13, 14, 15, 16].map((u) => ({
  follower_id: u,
  followee_id: 1,
  status: 'active',
  updated_at: SINCE_S,
}));
FOLLOWS.push({ follower_id: 1, followee_id: 2, status: 'active', updated_at: SINCE_S });

const event = (user: number, t: number, type = 'post_view'): object => ({
  event_time: t,
  post_id: 7,
  author_id: 1,
  user_id: user,
  event_type: type,
});
/** The window is (since, now]: 12, 13 and 16 are in it; 11, 14 and 15 (only a bad event) are not. */
const EVENTS = [
  event(11, SINCE_S),
  event(12, SINCE_S + 1),
  event(13, NOW_S),
  event(14, NOW_S + 1),
  event(15, NOW_S - 60, 'post_unknown'),
  event(16, SINCE_S + 86_400 * 3),
];
const ACTIVE = ['12', '13', '16'];
const SUGGESTION = JSON.stringify([{ user_id: '2', mutual_count: 1, reason: '1 mutual connection' }]);

describe('suggested-users over the activity rollup', () => {
  let db: ScratchDatabase;
  let redis: Redis;
  const prefix = `test-activity-${randomUUID()}`;

  const run = async (keyPrefix: string, batchSize: number, parallelism: number): Promise<string[]> => {
    const job = new SuggestedUsersJob({
      clickhouse: db.client,
      cache: new RedisCacheWriter(redis),
      keyPrefix,
      perUser: 20,
      activeDays: 7,
      maxFollowees: 1000,
      batchSize,
      parallelism,
      ttlSec: 600,
    });
    await job.run(runFacts('suggested-users', NOW));
    const keys = await redis.keys(`${keyPrefix}:suggested_users:*`);
    for (const k of keys) expect(await redis.get(k), k).toBe(SUGGESTION);
    return keys.map((k) => k.slice(k.lastIndexOf(':') + 1)).sort();
  };

  beforeAll(async () => {
    db = await scratchDatabase('test_activity');
    redis = new Redis(servicesEnv().redisUrl);
    await db.client.insert({ table: 'user_relationships', values: FOLLOWS, format: 'JSONEachRow' });
  });

  afterAll(async () => {
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length > 0) await redis.del(...keys);
    redis.disconnect();
    await db.drop();
  });

  it('sees events loaded before its view only after a backfill, then exactly the window (since, now]', async () => {
    // Events loaded while the view does not exist, as in a database created by an older version.
    await db.client.command({ query: `DROP VIEW ${USER_ACTIVITY.view}` });
    await db.client.insert({ table: 'post_events', values: EVENTS, format: 'JSONEachRow' });
    const report = await migrate(db.client);
    expect(report.created).toEqual([USER_ACTIVITY.view]);
    expect(report.backfillAdvised).toBe(true);
    expect(await run(`${prefix}:before`, 2, 1)).toEqual([]);

    await backfillRollups(db.client);
    expect((await migrate(db.client)).backfillAdvised).toBe(false);
    expect(await run(`${prefix}:after`, 2, 1)).toEqual(ACTIVE);
  });

  it('writes the same users whatever the batch size and parallelism', async () => {
    expect(await run(`${prefix}:b1p3`, 1, 3)).toEqual(ACTIVE);
    expect(await run(`${prefix}:b1000p1`, 1000, 1)).toEqual(ACTIVE);
  });
});
