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
 * The incremental mode's delta step on a ClickHouse that cannot give it the memory it asks for: a real
 * `max_memory_usage` on the job's client, on the seeded 20 000-user graph. Measured there (2 cores):
 * a delta query takes about 205 MB for all 20 000 users at once, 85 MB for 5 000, 65 MB for 1 000
 * (about 60 MB of it the follow graph, which every share reads whole); a full refresh's batch of 1 000
 * users up to 55 MB, of 500 up to 33 MB; the incremental plan up to 69 MB. Before the delta step
 * adapted, each such run failed (a dead-letter record), the next was a full refresh, and the one
 * after failed again.
 */
const USERS = 20_000;
const SETTINGS = { perUser: 20, activeDays: 30, maxFollowees: 50, batchSize: 1000, ttlSec: 600 };

describe('suggested-users incremental mode under a ClickHouse memory limit', () => {
  let db: ScratchDatabase;
  let redis: Redis;
  const limited: ClickHouseClient[] = [];
  const base = `test-incr-mem-${randomUUID()}`;
  let salt = 0;

  // A database per test: the buffer table's history (one row per user and run until merges) is part
  // of what a full refresh's read-back holds in memory.
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
    settings: { batchSize?: number; fullEvery: number; deltaShareUsers: number },
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

  /** Delta-step queries (query ids `…:<run>:1:d<n>`) that ClickHouse started for a run. */
  async function deltaQueries(runId: string): Promise<number> {
    await db.client.command({ query: 'SYSTEM FLUSH LOGS' });
    const [row] = await (
      await db.client.query({
        query: `SELECT count() AS n FROM system.query_log
          WHERE type = 'QueryStart' AND startsWith(query_id, {id:String})`,
        query_params: { id: `cache-refresher:suggested-users:${runId}:1:d` },
        format: 'JSONEachRow',
      })
    ).json<{ n: string }>();
    return Number(row?.n);
  }

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

  it('a share out of memory: that run is a full refresh, later runs take smaller shares and are incremental again', async () => {
    const prefix = `${base}-halves`;
    const job = limitedJob(prefix, 130_000_000, { fullEvery: 100, deltaShareUsers: USERS });
    const outcomes = [outcome((await job.run(runFacts('suggested-users'))).context)];
    for (let run = 0; run < 3 && outcomes.at(-1) !== 'incremental'; run++) {
      await churn();
      outcomes.push(outcome((await job.run(runFacts('suggested-users'))).context));
    }
    // 20 000 users at once do not fit; 10 000 may or may not; 5 000 do.
    expect(outcomes.slice(0, 2)).toEqual(['full:no_state', 'full:delta_out_of_memory']);
    expect(outcomes.at(-1)).toBe('incremental');
    expect(outcomes.length).toBeLessThanOrEqual(4);
    await expectEqualToFullRefresh(prefix);
  }, 180_000);

  it('out of memory at the smallest share: full refreshes without trying the delta step for a cycle, then it tries again', async () => {
    const prefix = `${base}-floor`;
    const job = limitedJob(prefix, 50_000_000, { batchSize: 500, fullEvery: 3, deltaShareUsers: 1000 });
    const runs: { outcome: string; deltaQueries: number }[] = [];
    for (let run = 0; run < 6; run++) {
      if (run > 0) await churn();
      const f = runFacts('suggested-users');
      const { context } = await job.run(f);
      runs.push({ outcome: outcome(context), deltaQueries: await deltaQueries(f.runId) });
    }
    const OOM = 'full:delta_out_of_memory';
    expect(runs).toEqual([
      { outcome: 'full:no_state', deltaQueries: 0 },
      { outcome: OOM, deltaQueries: 1 }, // 1 000 users per query: out of memory
      { outcome: OOM, deltaQueries: 1 }, // 500 (one batch): out of memory again
      { outcome: OOM, deltaQueries: 0 }, // fullEvery − 1 = 2 runs without trying
      { outcome: OOM, deltaQueries: 0 },
      { outcome: OOM, deltaQueries: 1 }, // tried again, still out of memory
    ]);
    await expectEqualToFullRefresh(prefix);
  }, 180_000);
});
