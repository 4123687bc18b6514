import { randomUUID } from 'node:crypto';
import { createClient, type ClickHouseClient } from '@clickhouse/client';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { keys } from '../../src/cache/keys.js';
import { RedisCacheWriter } from '../../src/cache/writer.js';
import { seedDatabase } from '../../src/clickhouse/seed.js';
import { incrementalSuggestedUsers, SuggestedUsersJob } from '../../src/jobs/suggested-users.js';
import { runFacts } from './run-facts.js';
import { servicesEnv } from './env.js';
import { longRequests, scratchDatabase, type ScratchDatabase } from './scratch-database.js';

/**
 * The incremental mode on a ClickHouse that gives each query little memory: a real `max_memory_usage`
 * on the job's client, on the seeded 20 000-user graph. An incremental run's queries read only the
 * change log and the active users; the full refresh's batches and its read of the follow graph
 * stream. The ClickHouse delta step this mode used before took about 205 MB for all 20 000 users at
 * once and 65 MB for 1 000 (60 MB of it the follow graph, which every share read whole): under this
 * limit every run after the first fell back to a full refresh, for a cycle at a time.
 */
const USERS = 20_000;
const SETTINGS = { perUser: 20, activeDays: 30, maxFollowees: 50, batchSize: 1000, ttlSec: 600 };

describe('suggested-users incremental mode under a ClickHouse memory limit', () => {
  let db: ScratchDatabase;
  let redis: Redis;
  const limited: ClickHouseClient[] = [];
  const base = `test-incr-mem-${randomUUID()}`;
  let salt = 0;

  beforeEach(async () => {
    db = await scratchDatabase('test_incr_mem');
    await seedDatabase(db.client, { users: USERS, events: USERS * 10 });
  });
  afterEach(async () => {
    for (const c of limited.splice(0)) await c.close();
    await db.drop();
  });
  beforeAll(() => {
    redis = new Redis(servicesEnv().redisUrl);
  });
  afterAll(async () => {
    const stale = await redis.keys(`${base}*`);
    for (let i = 0; i < stale.length; i += 10_000) await redis.del(...stale.slice(i, i + 10_000));
    redis.disconnect();
  });

  /** The job's own client: every query it sends may use at most `bytes` of ClickHouse memory. */
  function limitedClient(bytes: number): ClickHouseClient {
    const options = longRequests(120_000);
    const client = createClient({
      url: servicesEnv().clickhouseUrl,
      database: db.name,
      ...options,
      clickhouse_settings: { ...options.clickhouse_settings, max_memory_usage: String(bytes) },
    });
    limited.push(client);
    return client;
  }

  /** The incremental mode under `prefix` on a client limited to `bytes` (see limitedClient). */
  function limitedJob(
    prefix: string,
    bytes: number,
    settings: { batchSize?: number; fullEvery: number },
  ): ReturnType<typeof incrementalSuggestedUsers> {
    return incrementalSuggestedUsers({
      clickhouse: limitedClient(bytes),
      cache: new RedisCacheWriter(redis),
      keyPrefix: prefix,
      ...SETTINGS,
      ...settings,
      replica: 'test',
    });
  }

  /** 2 000 follows removed (1 % of the graph): every run after it has a delta step to do. */
  async function churn(): Promise<void> {
    await db.client.command({
      query: `INSERT INTO user_relationships
        SELECT follower_id, followee_id, 'removed', now() FROM user_relationships FINAL
        WHERE status = 'active' ORDER BY cityHash64(follower_id, followee_id, {salt:UInt32}) LIMIT 2000`,
      query_params: { salt: salt++ },
    });
  }

  /** `mode` or `full:<reason>` of each run. */
  const outcome = (context: Record<string, unknown> | undefined) =>
    context?.mode === 'full' ? `full:${String(context.full_reason)}` : String(context?.mode);

  /** Every user's value under `prefix` against a full refresh (unlimited) of the same data. */
  async function expectEqualToFullRefresh(prefix: string): Promise<void> {
    const cache = new RedisCacheWriter(redis);
    await new SuggestedUsersJob({
      clickhouse: db.client,
      cache,
      keyPrefix: `${prefix}-full`,
      ...SETTINGS,
    }).run(runFacts('suggested-users'));
    const ids = Array.from({ length: USERS }, (_, i) => String(i + 1));
    const got = await redis.mget(...ids.map((id) => keys.suggestedUsers(prefix, id)));
    const want = await redis.mget(...ids.map((id) => keys.suggestedUsers(`${prefix}-full`, id)));
    expect(want.filter((v) => v !== null).length).toBeGreaterThan(USERS / 2);
    expect(got.filter((v, i) => v !== want[i]).length).toBe(0);
  }

  it('under a 50 MB limit: a full refresh, then incremental runs whose values equal a full refresh', async () => {
    const prefix = `${base}-limited`;
    const job = limitedJob(prefix, 50_000_000, { batchSize: 500, fullEvery: 100 });
    const outcomes: string[] = [];
    for (let run = 0; run < 4; run++) {
      if (run > 0) await churn();
      outcomes.push(outcome((await job.run(runFacts('suggested-users'))).context));
    }
    expect(outcomes).toEqual(['full:no_state', 'incremental', 'incremental', 'incremental']);
    await expectEqualToFullRefresh(prefix);
  }, 180_000);
});
