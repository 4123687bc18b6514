// suggested-users' helper thread (bring-forward-helper.ts) ending in the middle of an incremental run,
// as a crash of the thread would: the run fails instead of writing from buffers the thread may have
// left half brought forward, every key keeps either its last good value or the value this run
// computed for it, the next run is a full refresh that starts a new thread, and the incremental runs
// after it use that thread again, with values equal to a full refresh. Real servers and the built
// worker, as the product runs it.
import { randomUUID } from 'node:crypto';
import type { ClickHouseClient } from '@clickhouse/client';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { keys } from '../../src/cache/keys.js';
import { RedisCacheWriter, type Fence } from '../../src/cache/writer.js';
import { IncrementalMemory } from '../../src/jobs/suggested-users-incremental.js';
import { incrementalSuggestedUsers, SuggestedUsersJob } from '../../src/jobs/suggested-users.js';
import { builtHelperScript } from './built-helper.js';
import { servicesEnv } from './env.js';
import { runFacts } from './run-facts.js';
import { scratchDatabase, type ScratchDatabase } from './scratch-database.js';
import { mulberry32 } from '../unit/helpers/random.js';

const USERS = 6000;
const FOLLOWS_PER_USER = 6;
const SETTINGS = { perUser: 5, activeDays: 1, maxFollowees: 4, batchSize: 1000, ttlSec: 3600 };

describe('suggested-users incremental mode: the helper thread ends mid-run', () => {
  let db: ScratchDatabase;
  let ch: ClickHouseClient;
  let redis: Redis;
  const prefix = `test-helper-death-${randomUUID()}`;
  const fullPrefix = `${prefix}-full`;
  const NOW = Math.floor(Date.now() / 1000) - 3600;
  const rnd = mulberry32(20261201);
  /** A followee for `follower` (low ids followed most), never the follower itself. */
  const followee = (follower: number): number => {
    const e = 1 + Math.floor(USERS * rnd() ** 2);
    return e === follower ? (e % USERS) + 1 : e;
  };
  const memory = new IncrementalMemory();
  let fence: Fence;

  beforeAll(async () => {
    db = await scratchDatabase('test_helper_death');
    ch = db.client;
    redis = new Redis(servicesEnv().redisUrl);
    await redis.set(`${prefix}:leader`, '1:test', 'EX', 600);
    fence = { key: `${prefix}:leader`, token: () => '1:test', lost: () => undefined };
    const follows = Array.from({ length: USERS * FOLLOWS_PER_USER }, (_, i) => {
      const follower = 1 + Math.floor(i / FOLLOWS_PER_USER);
      return {
        follower_id: follower,
        followee_id: followee(follower),
        status: 'active',
        updated_at: NOW - 86_400,
      };
    });
    await ch.insert({ table: 'user_relationships', values: follows, format: 'JSONEachRow' });
    await ch.insert({
      table: 'post_events',
      values: Array.from({ length: USERS }, (_, i) => ({
        event_time: NOW - 60,
        post_id: 1,
        author_id: 1,
        user_id: i + 1,
        event_type: 'post_view',
      })),
      format: 'JSONEachRow',
    });
  });

  afterAll(async () => {
    await memory.helper?.close();
    const stale = await redis.keys(`${prefix}*`);
    if (stale.length > 0) await redis.del(...stale);
    redis.disconnect();
    await db.drop();
  });

  /**
   * Follow churn: `n` follows added at `at` by random users among the first `among` (the low ids are
   * the most followed: their new follows change the suggestions of most users).
   */
  async function churn(n: number, at: number, among = USERS): Promise<void> {
    const values = Array.from({ length: n }, () => {
      const follower = 1 + Math.floor(among * rnd());
      return { follower_id: follower, followee_id: followee(follower), status: 'active', updated_at: at };
    });
    await ch.insert({ table: 'user_relationships', values, format: 'JSONEachRow' });
  }

  const users = Array.from({ length: USERS }, (_, i) => String(i + 1));
  const values = (p: string) => redis.mget(users.map((u) => keys.suggestedUsers(p, u)));

  it('fails that run, keeps every key good, and the runs after recover the thread and equal a full refresh', async () => {
    const writer = new RedisCacheWriter(redis, fence);
    const job = incrementalSuggestedUsers({
      clickhouse: ch,
      cache: writer,
      keyPrefix: prefix,
      ...SETTINGS,
      fullEvery: 1000,
      replica: 'test',
      helperScript: builtHelperScript(),
      // One user a chunk: thousands of chunks, so the thread is still claiming when it ends.
      usersPerChunk: 1,
      memory,
    });
    const full = new SuggestedUsersJob({ clickhouse: ch, cache: writer, keyPrefix: fullPrefix, ...SETTINGS });
    let clock = NOW;
    const run = async (): Promise<{ at: Date; context: Record<string, unknown> }> => {
      clock += 60;
      const at = new Date(clock * 1000);
      return { at, context: (await job.run(runFacts('suggested-users', at))).context ?? {} };
    };
    /** Users whose incremental value differs from a full refresh at `at`. */
    const differing = async (at: Date): Promise<string[]> => {
      await full.run(runFacts('suggested-users', at));
      const [want, got] = [await values(fullPrefix), await values(prefix)];
      return users.filter((_, i) => want[i] !== got[i]);
    };

    const first = await run();
    expect(first.context.mode).toBe('full');
    const helper = memory.helper;
    if (helper === undefined) throw new Error('no helper thread: the job was built without one');

    // The next run's helper thread ends once both threads have claimed chunks of its work. Most users'
    // values change in it, so the run's thread writes some before the run fails.
    await churn(3000, clock + 30, 30);
    const before = await values(prefix);
    let claimedAtEnd = 0;
    const forward = helper.forward.bind(helper);
    const spy = vi.spyOn(helper, 'forward').mockImplementationOnce((graph, work) => {
      const done = forward(graph, work);
      const claims = work.work.claims;
      const endThread = (): void => {
        claimedAtEnd = Atomics.load(claims, 0);
        void helper.close();
      };
      const poll = (): void => {
        if (Atomics.load(claims, 0) >= 20) endThread();
        else setTimeout(poll, 1);
      };
      poll();
      return done;
    });
    await expect(run()).rejects.toThrow(/helper thread exited/);
    spy.mockRestore();
    expect(claimedAtEnd, 'chunks claimed when the thread ended').toBeGreaterThanOrEqual(20);
    expect(claimedAtEnd, 'chunks claimed when the thread ended').toBeLessThan(USERS);

    // Every key holds its last good value or the value this run's full refresh gives it: never a
    // value from a half brought-forward buffer.
    const failedAt = new Date(clock * 1000);
    await full.run(runFacts('suggested-users', failedAt));
    const reference = await values(fullPrefix);
    const after = await values(prefix);
    const neither = users.filter((_, i) => after[i] !== before[i] && after[i] !== reference[i]);
    expect(neither, 'keys that hold neither their last good value nor this run’s').toEqual([]);
    const changed = users.filter((_, i) => after[i] !== before[i]).length;
    const due = users.filter((_, i) => reference[i] !== before[i]).length;
    // Else the check above proves nothing: the run must have written values before it failed.
    expect(changed, 'values the failed run wrote').toBeGreaterThan(0);
    console.info(
      `helper thread ended with ${claimedAtEnd} of ${USERS} chunks claimed; the failed run wrote ` +
        `${changed} of the ${due} values it changes, each its own`,
    );

    // The failed run never finished (and took the state with it): a full refresh, which starts a new
    // thread.
    const recovered = await run();
    expect(recovered.context).toMatchObject({ mode: 'full', full_reason: 'previous_run_unfinished' });
    expect(await differing(recovered.at)).toEqual([]);

    // Incremental again, brought forward by both threads.
    for (let i = 0; i < 2; i++) {
      await churn(300, clock + 30);
      const next = await run();
      expect(next.context.mode).toBe('incremental');
      expect(
        Number(next.context.users_by_helper_thread),
        'users the new thread brought forward',
      ).toBeGreaterThan(0);
      expect(await differing(next.at)).toEqual([]);
    }
  }, 120_000);
});
