import { randomUUID } from 'node:crypto';
import type { ClickHouseClient } from '@clickhouse/client';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { keys } from '../../src/cache/keys.js';
import { RedisCacheWriter, type Fence } from '../../src/cache/writer.js';
import { IncrementalMemory } from '../../src/jobs/suggested-users-incremental.js';
import { incrementalSuggestedUsers, SuggestedUsersJob } from '../../src/jobs/suggested-users.js';
import type { RunFacts } from '../../src/runner/job.js';
import { builtHelperScript } from './built-helper.js';
import { runFacts } from './run-facts.js';
import { servicesEnv } from './env.js';
import { scratchDatabase, type ScratchDatabase } from './scratch-database.js';
import { mulberry32 } from '../unit/helpers/random.js';

/**
 * Property: after any sequence of incremental runs, every active user's cached value equals what a
 * full refresh computes at the same `now`, key by key. Random follow churn (adds, removals, re-adds,
 * rows arriving late with old `updated_at`, ties), users becoming active and inactive as `now` moves,
 * several incremental runs in a row. Small settings (MAX_FOLLOWEES 4, PER_USER 5) so the followee cap
 * and the top-k cut both matter. Seeded: set INCREMENTAL_SEED to replay a failure (the seed is in
 * every failure message).
 */

const SEED = Number(process.env.INCREMENTAL_SEED ?? Math.floor(Math.random() * 2 ** 31));
const USERS = 150;
const RUNS = 7;
/** From this run on, the helper thread is gone. */
const HELPER_CLOSED_AT = 5;
const STEP_SEC = 7 * 3600; // `now` moves 7 h a run: with ACTIVE_DAYS 1, users drop out and come back
const SETTINGS = { perUser: 5, activeDays: 1, maxFollowees: 4, batchSize: 40, ttlSec: 3600 };

/** One view of post 1 by each of `users` at `at` (Unix seconds), which makes them active. */
async function viewPost(ch: ClickHouseClient, users: number[], at: number): Promise<void> {
  await ch.insert({
    table: 'post_events',
    values: users.map((u) => ({
      event_time: at,
      post_id: 1,
      author_id: 1,
      user_id: u,
      event_type: 'post_view',
    })),
    format: 'JSONEachRow',
  });
}

/**
 * suggested-users in incremental mode under `prefix` and its full refresh under `${prefix}-full`,
 * both writing through `cache`, with `settings` (default SETTINGS) and the test's replica name.
 */
function bothModes(
  ch: ClickHouseClient,
  cache: RedisCacheWriter,
  prefix: string,
  settings: typeof SETTINGS = SETTINGS,
  threads: { helperScript?: URL | null; usersPerChunk?: number; memory?: IncrementalMemory } = {},
): { incremental: ReturnType<typeof incrementalSuggestedUsers>; full: SuggestedUsersJob } {
  return {
    incremental: incrementalSuggestedUsers({
      clickhouse: ch,
      cache,
      keyPrefix: prefix,
      ...settings,
      fullEvery: 1000,
      replica: 'test',
      // Under vitest the sources are TypeScript: no helper thread unless a test asks for one.
      helperScript: null,
      ...threads,
    }),
    full: new SuggestedUsersJob({ clickhouse: ch, cache, keyPrefix: `${prefix}-full`, ...settings }),
  };
}

/** A describe block's scratch database client and Redis client, filled in by scratchServices' beforeAll. */
interface Services {
  ch: ClickHouseClient;
  redis: Redis;
}

/**
 * A scratch database and a Redis client for one describe block: made in a beforeAll (with the lease
 * token '1:test' under `prefix:leader`), dropped in an afterAll with every key under `prefix`.
 */
function scratchServices(dbName: string, prefix: string): Services {
  const services = {} as Services;
  let db: ScratchDatabase | undefined;
  beforeAll(async () => {
    db = await scratchDatabase(dbName);
    services.ch = db.client;
    services.redis = new Redis(servicesEnv().redisUrl);
    await services.redis.set(`${prefix}:leader`, '1:test', 'EX', 600);
  });
  afterAll(async () => {
    const stale = await services.redis.keys(`${prefix}*`);
    if (stale.length > 0) await services.redis.del(...stale);
    services.redis.disconnect();
    await db?.drop();
  });
  return services;
}

describe(`suggested-users incremental mode equals a full refresh (seed ${SEED})`, () => {
  let db: ScratchDatabase;
  let ch: ClickHouseClient;
  let redis: Redis;
  const prefix = `test-incr-${randomUUID()}`;
  const fullPrefix = `${prefix}-full`;
  const rnd = mulberry32(SEED);
  const pick = (n: number): number => 1 + Math.floor(n * rnd() ** 2); // low ids followed most
  let fence: Fence;

  beforeAll(async () => {
    db = await scratchDatabase('test_incr');
    ch = db.client;
    redis = new Redis(servicesEnv().redisUrl);
    await redis.set(`${prefix}:leader`, '1:test', 'EX', 600);
    fence = { key: `${prefix}:leader`, token: () => '1:test', lost: () => undefined };
  });

  // The helper thread's runs share a memory, so that its thread is stopped at the end.
  const helperMemory = new IncrementalMemory();

  afterAll(async () => {
    await helperMemory.helper?.close();
    const stale = await redis.keys(`${prefix}*`);
    if (stale.length > 0) await redis.del(...stale);
    redis.disconnect();
    await db.drop();
  });

  it('stays key-by-key equal through churn, late rows and activity changes', async () => {
    const t0 = Math.floor(Date.now() / 1000) - 30 * 86_400;
    const follows = new Map<string, { active: boolean; at: number }>();
    const relRows: string[] = [];
    const eventRows: string[] = [];
    const follow = (f: number, e: number, active: boolean, at: number): void => {
      if (f === e) return;
      relRows.push(
        JSON.stringify({
          follower_id: f,
          followee_id: e,
          status: active ? 'active' : 'removed',
          updated_at: at,
        }),
      );
      const k = `${f}:${e}`;
      const cur = follows.get(k);
      if (!cur || cur.at <= at) follows.set(k, { active, at });
    };
    const act = (u: number, at: number): void => {
      eventRows.push(
        JSON.stringify({
          event_time: at,
          post_id: 1 + u,
          author_id: 1 + ((u * 7) % USERS),
          user_id: u,
          event_type: 'post_like',
        }),
      );
    };
    const flush = async (): Promise<void> => {
      // Several inserts: each is its own block (and part) of the change log.
      while (relRows.length > 0) {
        const part = relRows.splice(0, 1 + Math.floor(rnd() * 40));
        await ch.insert({
          table: 'user_relationships',
          values: part.map((r) => JSON.parse(r) as object),
          format: 'JSONEachRow',
        });
      }
      if (eventRows.length > 0) {
        await ch.insert({
          table: 'post_events',
          values: eventRows.map((r) => JSON.parse(r) as object),
          format: 'JSONEachRow',
        });
        eventRows.length = 0;
      }
    };

    // The starting graph and activity.
    let now = t0;
    for (let u = 1; u <= USERS; u++) {
      const n = Math.floor(rnd() * 8);
      for (let i = 0; i < n; i++) follow(u, pick(USERS), true, now - Math.floor(rnd() * 90) * 86_400 - 1);
      if (rnd() < 0.6) act(u, now - Math.floor(rnd() * 86_000));
    }
    await flush();

    const writer = new RedisCacheWriter(redis, fence);
    const { incremental, full } = bothModes(ch, writer, prefix, SETTINGS);
    // The same mode through a writer without writeBytes (as a custom CacheWriter may be): its values
    // go as strings, rendered by renderList instead of SuggestionListBytes.
    const stringsOnly = new RedisCacheWriter(redis, fence);
    Object.defineProperty(stringsOnly, 'writeBytes', { value: undefined });
    const stringsPrefix = `${prefix}-strings`;
    const incrementalStrings = bothModes(ch, stringsOnly, stringsPrefix, SETTINGS).incremental;
    // The same mode with the helper thread (the built worker, as the product runs it) and chunks of 7
    // users, so that both threads bring users forward in every run.
    const helperPrefix = `${prefix}-helper`;
    const incrementalHelped = bothModes(ch, writer, helperPrefix, SETTINGS, {
      helperScript: builtHelperScript(),
      usersPerChunk: 7,
      memory: helperMemory,
    }).incremental;
    let byHelperTotal = 0;
    const modes: string[] = [];
    let extendedTotal = 0;
    let recomputedTotal = 0;
    let updatedTotal = 0;

    for (let run = 0; run <= RUNS; run++) {
      if (run > 0) {
        now += STEP_SEC;
        const pairs = [...follows.entries()];
        const churn = 3 + Math.floor(rnd() * 12);
        for (let i = 0; i < churn; i++) {
          const r = rnd();
          const [key, state] = pairs[Math.floor(rnd() * pairs.length)] ?? ['1:2', { active: false, at: 0 }];
          const [f, e] = key.split(':').map(Number) as [number, number];
          if (r < 0.35) follow(pick(USERS), pick(USERS), true, now - Math.floor(rnd() * 3600));
          else if (r < 0.55) follow(f, e, false, Math.max(state.at, now - 7200) + 1 + Math.floor(rnd() * 60));
          else if (r < 0.7)
            follow(f, e, true, state.at + 1 + Math.floor(rnd() * 600)); // re-add (or refresh)
          else if (r < 0.85)
            follow(f, e, !state.active, state.at - 1 - Math.floor(rnd() * 86_400)); // late: loses
          else follow(pick(USERS), pick(USERS), rnd() < 0.8, now - 200 * 86_400 - Math.floor(rnd() * 1000)); // late, old
        }
        // Some users act (newly active, or staying active); others fall out of the 1-day window.
        const actors = 2 + Math.floor(rnd() * 15);
        for (let i = 0; i < actors; i++)
          act(1 + Math.floor(rnd() * USERS), now - Math.floor(rnd() * STEP_SEC));
        await flush();
      }
      const at = new Date(now * 1000);
      const result = await incremental.run(runFacts('suggested-users', at));
      const ctx = result.context ?? {};
      const stringsCtx = (await incrementalStrings.run(runFacts('suggested-users', at))).context ?? {};
      expect(stringsCtx.mode, `seed ${SEED} run ${run}: the strings writer's run`).toBe(ctx.mode);
      const helpedCtx = (await incrementalHelped.run(runFacts('suggested-users', at))).context ?? {};
      expect(helpedCtx.mode, `seed ${SEED} run ${run}: the helped run`).toBe(ctx.mode);
      expect(
        [helpedCtx.users_recomputed, helpedCtx.users_updated, helpedCtx.users_extended],
        `seed ${SEED} run ${run}: the helped run's counts`,
      ).toEqual([ctx.users_recomputed, ctx.users_updated, ctx.users_extended]);
      if (run < HELPER_CLOSED_AT) byHelperTotal += Number(helpedCtx.users_by_helper_thread ?? 0);
      else {
        expect(
          helpedCtx.users_by_helper_thread,
          `seed ${SEED} run ${run}: with its thread gone, a run brings every user forward itself`,
        ).toBe(0);
      }
      // The helper thread stops (as when it crashes): the runs after go on in one thread.
      if (run === HELPER_CLOSED_AT - 1) await helperMemory.helper?.close();
      modes.push(String(ctx.mode));
      extendedTotal += Number(ctx.users_extended);
      recomputedTotal += Number(ctx.users_recomputed);
      updatedTotal += Number(ctx.users_updated ?? 0);
      const reference = await full.run(runFacts('suggested-users', at));

      // Every active user's key in the full refresh's prefix, compared with the incremental prefix.
      const active = await ch.query({
        query: `SELECT DISTINCT toString(user_id) AS u FROM post_events
          WHERE event_time > toDateTime({since:UInt32}) AND event_time <= toDateTime({now:UInt32})`,
        query_params: { since: now - 86_400, now },
        format: 'JSONEachRow',
      });
      const users = (await active.json<{ u: string }>()).map((r) => r.u);
      expect(users.length, `seed ${SEED} run ${run}`).toBe(reference.items);
      expect(result.items, `seed ${SEED} run ${run}: items = recomputed + updated + extended`).toBe(
        users.length,
      );
      const want = await redis.mget(users.map((u) => keys.suggestedUsers(fullPrefix, u)));
      const got = await redis.mget(users.map((u) => keys.suggestedUsers(prefix, u)));
      const diff = users.map((u, i) => ({ u, want: want[i], got: got[i] })).filter((d) => d.want !== d.got);
      expect(diff, `seed ${SEED} run ${run} (${String(ctx.mode)}): users whose cached value differs`).toEqual(
        [],
      );
      const gotStrings = await redis.mget(users.map((u) => keys.suggestedUsers(stringsPrefix, u)));
      expect(
        users.filter((u, i) => want[i] !== gotStrings[i]),
        `seed ${SEED} run ${run}: users whose value written as a string differs`,
      ).toEqual([]);
      const gotHelped = await redis.mget(users.map((u) => keys.suggestedUsers(helperPrefix, u)));
      expect(
        users.filter((u, i) => want[i] !== gotHelped[i]),
        `seed ${SEED} run ${run}: users whose value differs with the helper thread`,
      ).toEqual([]);
    }
    expect(modes[0], `seed ${SEED}`).toBe('full');
    expect(modes.slice(1), `seed ${SEED}`).toEqual(Array(RUNS).fill('incremental'));
    expect(extendedTotal, `seed ${SEED}: some users only extended`).toBeGreaterThan(0);
    expect(recomputedTotal, `seed ${SEED}`).toBeGreaterThan(0);
    expect(updatedTotal, `seed ${SEED}: some users updated from their buffers`).toBeGreaterThan(0);
    expect(byHelperTotal, `seed ${SEED}: users brought forward by the helper thread`).toBeGreaterThan(0);
  }, 60_000);
});

describe('suggested-users incremental mode: run context counts and full-refresh fallbacks', () => {
  let db: ScratchDatabase;
  let ch: ClickHouseClient;
  let redis: Redis;
  const prefix = `test-incr-ctx-${randomUUID()}`;
  const NOW = Math.floor(Date.now() / 1000) - 600;
  let clock = NOW;
  let fence: Fence;

  beforeAll(async () => {
    db = await scratchDatabase('test_incr_ctx');
    ch = db.client;
    redis = new Redis(servicesEnv().redisUrl);
    await redis.set(`${prefix}:leader`, '1:test', 'EX', 600);
    fence = { key: `${prefix}:leader`, token: () => '1:test', lost: () => undefined };
    // 2→1, 3→1, 4→2, 5→6; users 1..6 active.
    await ch.insert({
      table: 'user_relationships',
      values: [
        [2, 1],
        [3, 1],
        [4, 2],
        [5, 6],
      ].map(([f, e]) => ({ follower_id: f, followee_id: e, status: 'active', updated_at: NOW - 86_400 })),
      format: 'JSONEachRow',
    });
    await activate([1, 2, 3, 4, 5, 6]);
  });

  afterAll(async () => {
    const stale = await redis.keys(`${prefix}*`);
    if (stale.length > 0) await redis.del(...stale);
    redis.disconnect();
    await db.drop();
  });

  async function activate(users: number[]): Promise<void> {
    await viewPost(ch, users, NOW - 60);
  }

  // One process: every job object below with replica 'test' shares its state.
  const memory = new IncrementalMemory();
  function job(cache = new RedisCacheWriter(redis, fence), fullEvery = 1000) {
    return incrementalSuggestedUsers({
      clickhouse: ch,
      cache,
      keyPrefix: prefix,
      ...SETTINGS,
      fullEvery,
      replica: 'test',
      memory,
    });
  }

  async function run(j = job()): Promise<Record<string, unknown>> {
    clock += 60;
    const result = await j.run(runFacts('suggested-users', new Date(clock * 1000)));
    return { items: result.items, ...result.context };
  }

  const counts = (c: Record<string, unknown>) => ({
    mode: c.mode,
    full_reason: c.full_reason,
    users_recomputed: c.users_recomputed,
    users_updated: c.users_updated,
    users_extended: c.users_extended,
    users_key_missing: c.users_key_missing,
    items: c.items,
  });

  it('reports users recomputed and extended, and falls back to a full refresh when in doubt', async () => {
    const step = async (expected: Record<string, unknown>, j?: ReturnType<typeof job>): Promise<void> => {
      expect(counts(await run(j))).toEqual(expected);
    };
    const inc = { mode: 'incremental', full_reason: undefined };
    /** The counts of a full refresh of `users` users, for `reason`. */
    const full = (reason: string, users: number) => ({
      mode: 'full',
      full_reason: reason,
      users_recomputed: users,
      users_updated: undefined,
      users_extended: 0,
      users_key_missing: undefined,
      items: users,
    });
    // No state yet.
    await step(full('no_state', 6));
    // Nothing changed: every key only extended.
    await step({
      ...inc,
      users_recomputed: 0,
      users_updated: 0,
      users_extended: 6,
      users_key_missing: 0,
      items: 6,
    });
    // User 1 follows 5: user 1 and its followers 2 and 3 change (updated from their buffers); 4, 5, 6
    // do not.
    await ch.insert({
      table: 'user_relationships',
      values: [{ follower_id: 1, followee_id: 5, status: 'active', updated_at: NOW - 30 }],
      format: 'JSONEachRow',
    });
    await step({
      ...inc,
      users_recomputed: 0,
      users_updated: 3,
      users_extended: 3,
      users_key_missing: 0,
      items: 6,
    });
    // User 7 becomes active.
    await activate([7]);
    await step({
      ...inc,
      users_recomputed: 1,
      users_updated: 0,
      users_extended: 6,
      users_key_missing: 0,
      items: 7,
    });
    // A key vanished from Redis: it cannot be extended, so it is computed.
    await redis.del(keys.suggestedUsers(prefix, '4'));
    await step({
      ...inc,
      users_recomputed: 1,
      users_updated: 0,
      users_extended: 6,
      users_key_missing: 1,
      items: 7,
    });
    expect(await redis.get(keys.suggestedUsers(prefix, '4'))).toBe(
      '[{"user_id":"1","mutual_count":1,"reason":"1 mutual connection"}]',
    );
    // Redis no longer holds the last run's marker (data loss, a lagging replica promoted): full.
    await redis.del(`${prefix}:job:suggested-users:generation`);
    await step(full('cache_generation_mismatch', 7));
    // The marker found gone while the run extends TTLs, after it wrote some values: the full refresh
    // replacing the attempt counts and writes each user once.
    await ch.insert({
      table: 'user_relationships',
      values: [{ follower_id: 2, followee_id: 6, status: 'active', updated_at: NOW - 20 }],
      format: 'JSONEachRow',
    });
    const markerLost = new RedisCacheWriter(redis, fence);
    const extendTtl = markerLost.extendTtl.bind(markerLost);
    markerLost.extendTtl = async (keyList, ttlSec, signal, guard) => {
      await redis.del(`${prefix}:job:suggested-users:generation`);
      return extendTtl(keyList, ttlSec, signal, guard);
    };
    await step(full('cache_generation_mismatch', 7), job(markerLost));
    // A run that fails half-way leaves its start recorded: the next run is full.
    const failing = new RedisCacheWriter(redis, fence);
    failing.extendTtl = () => Promise.reject(new Error('injected'));
    await expect(run(job(failing))).rejects.toThrow('injected');
    await step(full('previous_run_unfinished', 7));
    // Another process's state (a leader change or a restart): full.
    const other = incrementalSuggestedUsers({
      clickhouse: ch,
      cache: new RedisCacheWriter(redis, fence),
      keyPrefix: prefix,
      ...SETTINGS,
      fullEvery: 1000,
      replica: 'another',
    });
    await step(full('replica_changed', 7), other);
    await step(full('replica_changed', 7));
    // Other settings: full.
    const perUser3 = incrementalSuggestedUsers({
      clickhouse: ch,
      cache: new RedisCacheWriter(redis, fence),
      keyPrefix: prefix,
      ...SETTINGS,
      perUser: 3,
      fullEvery: 1000,
      replica: 'test',
      memory,
    });
    await step(full('config_changed', 7), perUser3);
    // FULL_EVERY 3: full, incremental, incremental, full.
    await step(full('config_changed', 7), job(undefined, 3));
    await step(
      { ...inc, users_recomputed: 0, users_updated: 0, users_extended: 7, users_key_missing: 0, items: 7 },
      job(undefined, 3),
    );
    await step(
      { ...inc, users_recomputed: 0, users_updated: 0, users_extended: 7, users_key_missing: 0, items: 7 },
      job(undefined, 3),
    );
    await step(full('scheduled', 7), job(undefined, 3));
    // The change log emptied (block numbers no longer cover the state's watermark): full.
    await ch.command({ query: 'TRUNCATE TABLE user_follow_log' });
    await step(full('watermark_ahead', 7));
    // The extended keys got the run's TTL again.
    const ttl = await redis.ttl(keys.suggestedUsers(prefix, '6'));
    expect(ttl).toBeGreaterThan(SETTINGS.ttlSec - 60);
  }, 60_000);
});

/**
 * A riser (a candidate outside u's buffer whose mutual count grew) is spared its recount when enough
 * untouched entries are sure to stay ahead of its best possible place; the merged buffer must then end
 * before that place, or the riser hides behind entries it now outranks and surfaces wrongly once the
 * entries ahead of it leave. Built so that happens: per_user 2 (buffer depth 4), u = 1 follows 2, 3
 * and 4; mutual counts 10:3, 20:3, 30:2, 40:2, 35:1, 50:1. Run 1: 3 follows 35 (35 rises to 2, between
 * 30 and 40; its best place (3, 35) comes after the second sure entry (3, 20), so it is not recounted).
 * Run 2: u follows 10 and 20, which leave; the truth is [30, 35].
 */
describe('suggested-users incremental mode: a riser spared its recount', () => {
  const prefix = `test-incr-riser-${randomUUID()}`;
  const fullPrefix = `${prefix}-full`;
  const NOW = Math.floor(Date.now() / 1000) - 600;
  const settings = { ...SETTINGS, perUser: 2, maxFollowees: 10 };
  const services = scratchServices('test_incr_riser', prefix);

  const follow = (pairs: number[][], at: number) =>
    services.ch.insert({
      table: 'user_relationships',
      values: pairs.map(([f, e]) => ({ follower_id: f, followee_id: e, status: 'active', updated_at: at })),
      format: 'JSONEachRow',
    });

  it('never hides behind the entries it outranks', async () => {
    const { ch, redis } = services;
    await follow(
      [
        [1, 2],
        [1, 3],
        [1, 4],
        ...[2, 3, 4].flatMap((f) => [
          [f, 10],
          [f, 20],
        ]),
        ...[2, 3].flatMap((f) => [
          [f, 30],
          [f, 40],
        ]),
        [2, 35],
        [2, 50],
      ],
      NOW - 86_400,
    );
    await viewPost(ch, [1, 2, 3, 4], NOW - 60);
    const fence: Fence = { key: `${prefix}:leader`, token: () => '1:test', lost: () => undefined };
    const writer = new RedisCacheWriter(redis, fence);
    const { incremental, full } = bothModes(ch, writer, prefix, settings);
    const candidates = async (p: string): Promise<string[]> =>
      (JSON.parse((await redis.get(keys.suggestedUsers(p, '1'))) ?? 'null') as { user_id: string }[]).map(
        (s) => s.user_id,
      );
    let clock = NOW;
    const both = async (): Promise<string> => {
      clock += 60;
      const result = await incremental.run(runFacts('suggested-users', new Date(clock * 1000)));
      await full.run(runFacts('suggested-users', new Date(clock * 1000)));
      expect(await candidates(prefix)).toEqual(await candidates(fullPrefix));
      return String(result.context?.mode);
    };

    expect(await both()).toBe('full');
    expect(await candidates(prefix)).toEqual(['10', '20']);
    await follow([[3, 35]], NOW - 30);
    expect(await both()).toBe('incremental');
    expect(await candidates(prefix)).toEqual(['10', '20']);
    await follow(
      [
        [1, 10],
        [1, 20],
      ],
      NOW - 20,
    );
    expect(await both()).toBe('incremental');
    expect(await candidates(prefix)).toEqual(['30', '35']);
  }, 60_000);
});

/**
 * A key that vanished from Redis is computed again in the run that finds it gone, from a graph that
 * may already hold follows after the run's watermark. Those follows reach the next run as changes, and
 * that run compares each new head with the user's buffer, not with Redis: the value written for the
 * vanished key must be the buffer's head, or a change undone before the next run leaves it stale.
 * User 1 follows 2, who follows 10; while the run extends TTLs (after its watermark), 2 follows 11,
 * and before the next run 2 unfollows 11 again.
 */
describe('suggested-users incremental mode: a vanished key and follows after the watermark', () => {
  const prefix = `test-incr-vanish-${randomUUID()}`;
  const fullPrefix = `${prefix}-full`;
  const NOW = Math.floor(Date.now() / 1000) - 600;
  const services = scratchServices('test_incr_vanish', prefix);

  const follow = (f: number, e: number, status: string, at: number) =>
    services.ch.insert({
      table: 'user_relationships',
      values: [{ follower_id: f, followee_id: e, status, updated_at: at }],
      format: 'JSONEachRow',
    });

  it('is written from its buffer, so the next run sees every change to it', async () => {
    const { ch, redis } = services;
    await follow(1, 2, 'active', NOW - 86_400);
    await follow(2, 10, 'active', NOW - 86_400);
    await viewPost(ch, [1, 2], NOW - 60);
    const fence: Fence = { key: `${prefix}:leader`, token: () => '1:test', lost: () => undefined };
    const writer = new RedisCacheWriter(redis, fence);
    const extendTtl = writer.extendTtl.bind(writer);
    let duringExtension: (() => Promise<unknown>) | undefined;
    writer.extendTtl = async (keyList, ttlSec, signal, guard) => {
      const act = duringExtension;
      duringExtension = undefined;
      await act?.();
      return extendTtl(keyList, ttlSec, signal, guard);
    };
    const { incremental, full } = bothModes(ch, writer, prefix);
    const value = async (p: string) => redis.get(keys.suggestedUsers(p, '1'));
    let clock = NOW;
    const step = async () => {
      clock += 60;
      const { context } = await incremental.run(runFacts('suggested-users', new Date(clock * 1000)));
      await full.run(runFacts('suggested-users', new Date(clock * 1000)));
      expect(await value(prefix)).toBe(await value(fullPrefix));
      return { mode: context?.mode, users_key_missing: context?.users_key_missing };
    };

    expect(await step()).toEqual({ mode: 'full', users_key_missing: undefined });
    await redis.del(keys.suggestedUsers(prefix, '1'));
    duringExtension = () => follow(2, 11, 'active', NOW - 30);
    // The vanished key is written in this run; the full refresh after it already sees 2 → 11.
    clock += 60;
    const { context } = await incremental.run(runFacts('suggested-users', new Date(clock * 1000)));
    expect(context?.users_key_missing).toBe(1);
    await follow(2, 11, 'removed', NOW - 20);
    expect(await step()).toEqual({ mode: 'incremental', users_key_missing: 0 });
    expect(await value(prefix)).toBe('[{"user_id":"10","mutual_count":1,"reason":"1 mutual connection"}]');
  }, 60_000);
});

/**
 * Another writer of the same suggestion keys beside the incremental mode: a one-off `cache-refresher
 * once suggested-users` under the default full mode (unfenced, outside the lease). Its values come from
 * a graph the incremental state never saw; if the next incremental run extends them, a follow made
 * before the one-off and undone after it stays cached. User u follows v, who follows w; the one-off
 * runs while v also follows x, and v unfollows x before the next incremental run. Whenever the one-off
 * runs (between two runs, during a run's TTL extensions, just before a run hands over the marker), the
 * value after the next run must equal a full refresh. Last, a one-off in the incremental mode.
 */
describe('suggested-users incremental mode beside a one-off run', () => {
  const base = `test-incr-oneoff-${randomUUID()}`;
  const NOW = Math.floor(Date.now() / 1000) - 600;
  const services = scratchServices('test_incr_oneoff', base);
  const fence: Fence = { key: `${base}:leader`, token: () => '1:test', lost: () => undefined };

  const follow = (f: number, e: number, status: string, at: number) =>
    services.ch.insert({
      table: 'user_relationships',
      values: [{ follower_id: f, followee_id: e, status, updated_at: at }],
      format: 'JSONEachRow',
    });

  /** An action to take once, at the next such point of a run. */
  type Hooks = Partial<Record<'beforeExtend' | 'beforeHandOver', (() => Promise<unknown>) | undefined>>;

  /**
   * The sidecar's writer under `prefix`, with two places to act from: before its next TTL extension,
   * and before it hands the marker to its run's generation (the last write of a run).
   */
  function hookedWriter(prefix: string): {
    writer: RedisCacheWriter;
    hooks: Hooks;
  } {
    const writer = new RedisCacheWriter(services.redis, fence);
    const hooks: Hooks = {};
    const fire = async (name: keyof Hooks) => {
      const act = hooks[name];
      hooks[name] = undefined;
      await act?.();
    };
    const marker = `${prefix}:job:suggested-users:generation`;
    const handsOver = (key: string, value: string) => key === marker && !/^(running|full):/.test(value);
    const extendTtl = writer.extendTtl.bind(writer);
    const write = writer.write.bind(writer);
    writer.extendTtl = async (keyList, ttlSec, signal, guard) => {
      await fire('beforeExtend');
      return extendTtl(keyList, ttlSec, signal, guard);
    };
    // Optional in the writer interface (a writer without it gets full refreshes only).
    const compareAndSet = (writer as Partial<RedisCacheWriter>).compareAndSet?.bind(writer);
    if (compareAndSet !== undefined) {
      writer.compareAndSet = async (key, expected, value, ttlSec, signal) => {
        if (handsOver(key, value)) await fire('beforeHandOver');
        return compareAndSet(key, expected, value, ttlSec, signal);
      };
    }
    writer.write = async (entries, ttlSec, signal) => {
      if (entries.some((e) => handsOver(e.key, e.value))) await fire('beforeHandOver');
      return write(entries, ttlSec, signal);
    };
    return { writer, hooks };
  }

  // `runs`: each incremental-mode run's mode (and why it was full) after the first.
  const MISMATCH = 'full:cache_generation_mismatch';
  const cases = [
    { when: 'between two incremental runs', users: [1, 2, 10, 11], hook: undefined, runs: [MISMATCH] },
    {
      when: 'during a run’s TTL extensions',
      users: [21, 22, 30, 31],
      hook: 'beforeExtend',
      runs: [MISMATCH, 'incremental'],
    },
    {
      when: 'after a run’s last value, before its marker',
      users: [41, 42, 50, 51],
      hook: 'beforeHandOver',
      runs: ['incremental', MISMATCH],
    },
  ] as const;

  for (const { when, users, hook, runs } of cases) {
    it(`a one-off run ${when}: the next run's values equal a full refresh`, async () => {
      const { ch, redis } = services;
      const [u, v, w, x] = users;
      const prefix = `${base}-${u}`;
      await follow(u, v, 'active', NOW - 86_400);
      await follow(v, w, 'active', NOW - 86_400);
      await viewPost(ch, [u, v], NOW - 60);
      const { writer, hooks } = hookedWriter(prefix);
      const { incremental, full } = bothModes(ch, writer, prefix);
      // Like `once`: its own unfenced writer, the default (full) mode, the sidecar's key prefix.
      const oneOff = new SuggestedUsersJob({
        clickhouse: ch,
        cache: new RedisCacheWriter(redis),
        keyPrefix: prefix,
        ...SETTINGS,
      });
      let clock = NOW;
      const run = async (job: { run: (f: RunFacts) => Promise<{ context?: Record<string, unknown> }> }) => {
        clock += 60;
        return (await job.run(runFacts('suggested-users', new Date(clock * 1000)))).context ?? {};
      };
      const oneOffWhileVFollowsX = async () => {
        await follow(v, x, 'active', NOW - 30);
        await run(oneOff);
        expect(await redis.get(keys.suggestedUsers(prefix, String(u)))).toContain(`"user_id":"${x}"`);
      };
      const value = (p: string) => redis.get(keys.suggestedUsers(p, String(u)));

      const modes: string[] = [];
      const sidecarRun = async () => {
        const context = await run(incremental);
        modes.push(context.mode === 'full' ? `full:${String(context.full_reason)}` : String(context.mode));
      };
      await sidecarRun();
      expect(modes).toEqual(['full:no_state']);
      if (hook === undefined) await oneOffWhileVFollowsX();
      else hooks[hook] = oneOffWhileVFollowsX;
      if (hook !== undefined) await sidecarRun();
      expect(hooks[hook ?? 'beforeExtend']).toBeUndefined();
      await follow(v, x, 'removed', NOW - 20);
      await sidecarRun();
      await full.run(runFacts('suggested-users', new Date(clock * 1000)));
      expect(await value(prefix)).toBe(await value(`${prefix}-full`));
      expect(await value(prefix)).toBe(
        `[{"user_id":"${w}","mutual_count":1,"reason":"1 mutual connection"}]`,
      );
      expect(modes.slice(1)).toEqual(runs);
    }, 60_000);
  }

  // Two incremental-mode processes at once: the sidecar and a one-off `cache-refresher once suggested-
  // users` with SUGGESTED_USERS_MODE=incremental (another replica, so a full refresh that stores buffers
  // and hands the marker over like the sidecar's runs). User u follows v, who follows w. The one-off
  // reads the graph while v also follows x; before it writes u's value, v unfollows x and the sidecar
  // runs a whole refresh. The one-off's late value for u must not be extended by the sidecar's next run
  // as if the sidecar's state described it.
  it('a run that lost the marker during its writes leaves it naming nobody', async () => {
    const { ch, redis } = services;
    const [u, v, w, x] = [61, 62, 70, 71];
    const prefix = `${base}-${u}`;
    await follow(u, v, 'active', NOW - 86_400);
    await follow(v, w, 'active', NOW - 86_400);
    await viewPost(ch, [u, v], NOW - 60);
    const writer = new RedisCacheWriter(redis, fence);
    const { incremental: sidecar, full } = bothModes(ch, writer, prefix);
    // The one-off: its own writer (unfenced, as `once` runs), which holds back u's value until
    // `beforeValue` has run.
    const oneOffWriter = new RedisCacheWriter(redis);
    const uKey = keys.suggestedUsers(prefix, String(u));
    let beforeValue: (() => Promise<void>) | undefined;
    const write = oneOffWriter.write.bind(oneOffWriter);
    oneOffWriter.write = async (entries, ttlSec, signal) => {
      const act = entries.some((e) => e.key === uKey) ? beforeValue : undefined;
      if (act !== undefined) {
        beforeValue = undefined;
        await act();
      }
      return write(entries, ttlSec, signal);
    };
    const oneOff = incrementalSuggestedUsers({
      clickhouse: ch,
      cache: oneOffWriter,
      keyPrefix: prefix,
      ...SETTINGS,
      fullEvery: 1000,
      replica: 'one-off',
    });
    let clock = NOW;
    const modes: string[] = [];
    const run = async (job: { run: (f: RunFacts) => Promise<{ context?: Record<string, unknown> }> }) => {
      clock += 60;
      const context = (await job.run(runFacts('suggested-users', new Date(clock * 1000)))).context ?? {};
      return context.mode === 'full' ? `full:${String(context.full_reason)}` : String(context.mode);
    };

    modes.push(await run(sidecar));
    await follow(v, x, 'active', NOW - 30);
    beforeValue = async () => {
      await follow(v, x, 'removed', NOW - 20);
      modes.push(await run(sidecar));
    };
    const oneOffMode = await run(oneOff);
    expect(beforeValue).toBeUndefined();
    // The one-off's value for u came from the graph it read, with x.
    expect(await redis.get(uKey)).toContain(`"user_id":"${x}"`);
    modes.push(await run(sidecar));
    await full.run(runFacts('suggested-users', new Date(clock * 1000)));
    expect(await redis.get(uKey)).toBe(await redis.get(keys.suggestedUsers(`${prefix}-full`, String(u))));
    expect(await redis.get(uKey)).toBe(
      `[{"user_id":"${w}","mutual_count":1,"reason":"1 mutual connection"}]`,
    );
    expect(oneOffMode).toBe('full:replica_changed');
    expect(modes).toEqual([
      'full:no_state',
      'full:previous_run_unfinished',
      'full:cache_generation_mismatch',
    ]);
  }, 60_000);
});
