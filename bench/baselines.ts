import type { ClickHouseClient } from '@clickhouse/client';
import type { Redis } from 'ioredis';
import { BAD_EVENT_SQL, WEIGHT_X10_SQL } from '../src/clickhouse/schema.js';
import { mapPool } from './stats.js';

/**
 * The design cache-refresher replaces, written here only to be measured against: one ClickHouse query
 * per user, ten in flight, each followed by its own pipelined Redis write. The queries compute the
 * same CONTRACT §4 values as the jobs (so the comparison is of designs, not of different answers) and
 * are as good as a per-user design gets: every lookup goes through the tables' primary keys.
 */

/** The old design's concurrency. */
export const BASELINE_IN_FLIGHT = 10;

/**
 * One user's friends-of-friends: latest relationship row wins (FINAL), the user's followee list cut to
 * the most recent `max_followees`, the user and their followees excluded, top `per_user`.
 */
const SUGGESTIONS_ONE_USER_SQL = `
WITH
  my_follows AS (
    SELECT followee_id AS f, updated_at AS ts
    FROM user_relationships FINAL
    WHERE follower_id = {u:UInt64} AND status = 'active' AND followee_id != 0
  ),
  recent AS (
    SELECT f FROM my_follows ORDER BY ts DESC, f ASC LIMIT {max_followees:UInt32}
  )
SELECT toString(c) AS candidate, mutual
FROM (
  SELECT followee_id AS c, count() AS mutual
  FROM user_relationships FINAL
  WHERE follower_id IN (SELECT f FROM recent) AND status = 'active' AND followee_id != 0
    AND followee_id != {u:UInt64} AND followee_id NOT IN (SELECT f FROM my_follows)
  GROUP BY c
  ORDER BY mutual DESC, c ASC
  LIMIT {per_user:UInt32}
)
ORDER BY mutual DESC, c ASC`;

/** One user's first feed page, engagement summed from raw events over the lookback. */
const FEED_ONE_USER_SQL = `
WITH
  follows AS (
    SELECT followee_id AS a FROM user_relationships FINAL
    WHERE follower_id = {u:UInt64} AND status = 'active'
  ),
  recent_posts AS (
    SELECT post_id, author_id, created_at FROM posts FINAL
    WHERE created_at > toDateTime({since:UInt32}) AND created_at <= toDateTime({now:UInt32})
      AND author_id IN (SELECT a FROM follows)
  ),
  engagement AS (
    SELECT post_id, sum(${WEIGHT_X10_SQL}) AS weight_x10
    FROM post_events
    WHERE event_time > toDateTime({since:UInt32}) AND event_time <= toDateTime({now:UInt32})
      AND post_id IN (SELECT post_id FROM recent_posts)
    GROUP BY post_id
  )
SELECT toString(p.post_id) AS pid, toString(p.author_id) AS aid,
  (1 + e.weight_x10 / 10) * pow({decay:Float64}, ({now:UInt32} - toUInt32(p.created_at)) / 3600) AS score
FROM recent_posts AS p
LEFT JOIN engagement AS e ON e.post_id = p.post_id
ORDER BY score DESC, p.post_id ASC
LIMIT {page_size:UInt32}
SETTINGS join_use_nulls = 0`;

/** The exact trending formula straight from raw events: every event of the window is read. */
export const TRENDING_RAW_SQL = `
SELECT toString(post_id) AS pid,
  sum(${WEIGHT_X10_SQL} / 10 * pow({decay:Float64}, ({now:Float64} - toUInt32(event_time)) / 3600)) AS score
FROM post_events
WHERE event_time >= toDateTime({from:UInt32}) AND event_time < toDateTime({to:UInt32})
  AND NOT ${BAD_EVENT_SQL}
GROUP BY post_id
ORDER BY score DESC, post_id ASC
LIMIT {top_k:UInt32}`;

export interface BaselineRun {
  users: number;
  ms: number;
  /** The values written, by user id (for the agreement check against the job). */
  values: Map<string, string>;
}

async function writeOne(redis: Redis, key: string, value: string, ttlSec: number): Promise<void> {
  const results = await redis.pipeline().set(key, value, 'EX', ttlSec).exec();
  const failed = results?.find(([err]) => err !== null);
  if (failed?.[0]) throw failed[0];
}

export async function suggestionsBaseline(opts: {
  clickhouse: ClickHouseClient;
  redis: Redis;
  userIds: readonly string[];
  keyOf: (userId: string) => string;
  perUser: number;
  maxFollowees: number;
  ttlSec: number;
}): Promise<BaselineRun> {
  const values = new Map<string, string>();
  const started = performance.now();
  await mapPool(opts.userIds, BASELINE_IN_FLIGHT, async (u) => {
    const result = await opts.clickhouse.query({
      query: SUGGESTIONS_ONE_USER_SQL,
      query_params: { u, max_followees: opts.maxFollowees, per_user: opts.perUser },
      format: 'JSONEachRow',
    });
    const rows = await result.json<{ candidate: string; mutual: string | number }>();
    const value = JSON.stringify(
      rows.map((r) => {
        const n = Number(r.mutual);
        return {
          user_id: r.candidate,
          mutual_count: n,
          reason: `${n} ${n === 1 ? 'mutual connection' : 'mutual connections'}`,
        };
      }),
    );
    await writeOne(opts.redis, opts.keyOf(u), value, opts.ttlSec);
    values.set(u, value);
  });
  return { users: opts.userIds.length, ms: performance.now() - started, values };
}

export async function feedBaseline(opts: {
  clickhouse: ClickHouseClient;
  redis: Redis;
  userIds: readonly string[];
  keyOf: (userId: string) => string;
  now: number;
  lookbackHours: number;
  decay: number;
  pageSize: number;
  ttlSec: number;
}): Promise<BaselineRun> {
  const values = new Map<string, string>();
  const started = performance.now();
  await mapPool(opts.userIds, BASELINE_IN_FLIGHT, async (u) => {
    const result = await opts.clickhouse.query({
      query: FEED_ONE_USER_SQL,
      query_params: {
        u,
        now: opts.now,
        since: opts.now - opts.lookbackHours * 3600,
        decay: opts.decay,
        page_size: opts.pageSize,
      },
      format: 'JSONEachRow',
    });
    const rows = await result.json<{ pid: string; aid: string; score: number }>();
    const value = JSON.stringify(
      rows.map((r) => ({ post_id: r.pid, author_id: r.aid, score: Number(r.score.toFixed(6)) })),
    );
    await writeOne(opts.redis, opts.keyOf(u), value, opts.ttlSec);
    values.set(u, value);
  });
  return { users: opts.userIds.length, ms: performance.now() - started, values };
}
