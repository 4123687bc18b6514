import type { ClickHouseClient } from '@clickhouse/client';
import { keys } from '../cache/keys.js';
import type { CacheWriter } from '../cache/writer.js';
import { readJsonEachRow } from '../clickhouse/result-stream.js';
import {
  BAD_EVENTS_IN_WINDOW_SQL,
  BAD_POST_SQL,
  BAD_RELATIONSHIP_SQL,
  GOOD_EVENT_SQL,
  ROLLUPS,
  WEIGHT_X10_SQL,
} from '../clickhouse/schema.js';
import { JOB_DEFAULTS, type Config } from '../config.js';
import type { RunFacts, RunResult } from '../runner/job.js';
import { defineJob, type RefreshJob } from './define.js';
import { planWindow, windowPlanParams } from './window-plan.js';
import { streamUserValues } from './user-values.js';

/**
 * feed-warmer (CONTRACT §4): the first feed page of the most active users, in one set-based query.
 *
 *   score(post) = (1 + Σ weight of the post's events in the lookback) · decay^(age_h since created_at)
 *
 * over posts by the user's active followees created within the lookback. A post's engagement is summed
 * from the per-minute rollup for whole minutes and from raw events for the partial minutes at the
 * lookback's edges; weights are summed as integer tenths, so the sum is exact, not approximated.
 * ClickHouse ranks, cuts with `LIMIT n BY user` and renders each user's JSON list; Node only streams the
 * rows into pipelined Redis writes.
 */
export const FEED_SQL = `
WITH
  top_users AS (
    SELECT user_id AS u
    FROM post_events
    WHERE event_time > toDateTime({active_since:UInt32}) AND event_time <= toDateTime({now:UInt32})
      AND ${GOOD_EVENT_SQL}
    GROUP BY user_id
    ORDER BY count() DESC, user_id ASC
    LIMIT {users:UInt32}
  ),
  follows AS (
    SELECT follower_id AS u, followee_id AS a
    FROM user_relationships FINAL
    WHERE follower_id GLOBAL IN (SELECT u FROM top_users) AND status = 'active' AND NOT ${BAD_RELATIONSHIP_SQL}
  ),
  recent_posts AS (
    SELECT post_id, author_id, created_at
    FROM posts FINAL
    WHERE created_at > toDateTime({lookback_since:UInt32}) AND created_at <= toDateTime({now:UInt32})
      AND author_id GLOBAL IN (SELECT a FROM follows) AND NOT ${BAD_POST_SQL}
  ),
  engagement AS (
    SELECT post_id, sum(w) AS weight_x10
    FROM (
      SELECT post_id, weight_x10 AS w
      FROM ${ROLLUPS.minute.table}
      WHERE bucket >= toDateTime({buckets_from:UInt32}) AND bucket < toDateTime({buckets_to:UInt32})
        AND post_id GLOBAL IN (SELECT post_id FROM recent_posts)
      UNION ALL
      SELECT post_id, ${WEIGHT_X10_SQL} AS w
      FROM post_events
      WHERE ((event_time >= toDateTime({head_from:UInt32}) AND event_time < toDateTime({head_to:UInt32}))
          OR (event_time >= toDateTime({tail_from:UInt32}) AND event_time < toDateTime({tail_to:UInt32})))
        AND post_id GLOBAL IN (SELECT post_id FROM recent_posts) AND ${GOOD_EVENT_SQL}
    )
    GROUP BY post_id
  ),
  ranked AS (
    SELECT f.u AS u, p.post_id AS post_id, p.author_id AS author_id,
      (1 + e.weight_x10 / 10) * pow({decay:Float64}, ({now:UInt32} - toUInt32(p.created_at)) / 3600) AS score
    FROM follows AS f
    INNER JOIN recent_posts AS p ON p.author_id = f.a
    LEFT JOIN engagement AS e ON e.post_id = p.post_id
    ORDER BY u, score DESC, post_id ASC
    LIMIT {page_size:UInt32} BY u
  ),
  rendered AS (
    SELECT u,
      arrayStringConcat(
        arrayMap(x -> concat('{"post_id":"', toString(x.2), '","author_id":"', toString(x.3),
                             '","score":', toString(round(x.1, 6)), '}'),
          arraySort(x -> (-x.1, x.2), groupArray((score, post_id, author_id)))),
        ',') AS items
    FROM ranked
    GROUP BY u
  )
SELECT toString(t.u) AS user_id, concat('[', r.items, ']') AS value
FROM top_users AS t
LEFT JOIN rendered AS r ON r.u = t.u
SETTINGS join_use_nulls = 0`;

/**
 * The run's bad rows: events of the activity window and the lookback, posts of the lookback, and
 * relationship rows of the whole follow graph (counted as stored, as suggested-users counts them).
 * Events are counted from the hour rollup's `bad` column for whole hours and from raw rows only for
 * the partial hours at the window's edges, so the count costs little however long the window is.
 */
export const FEED_SKIPPED_SQL = `
SELECT
  ${BAD_EVENTS_IN_WINDOW_SQL} AS bad_events,
  (SELECT count() FROM posts
    WHERE created_at > toDateTime({lookback_since:UInt32}) AND created_at <= toDateTime({now:UInt32})
      AND ${BAD_POST_SQL}) AS bad_posts,
  (SELECT count() FROM user_relationships WHERE ${BAD_RELATIONSHIP_SQL}) AS bad_relationships`;

export interface FeedWarmerOptions {
  clickhouse: ClickHouseClient;
  cache: CacheWriter;
  keyPrefix: string;
  users: number;
  pageSize: number;
  activeDays: number;
  lookbackHours: number;
  decay: number;
  ttlSec: number;
}

/** What feed-warmer reads (`RefreshJob.readsTables`); the hour rollup only for its bad-row count. */
export const FEED_WARMER_TABLES = [
  'post_events',
  'user_relationships',
  'posts',
  ROLLUPS.minute.table,
  ROLLUPS.hour.table,
] as const;

export class FeedWarmerJob {
  readonly id = 'feed-warmer';
  readonly #o: FeedWarmerOptions;

  constructor(opts: FeedWarmerOptions) {
    this.#o = opts;
  }

  async run(ctx: RunFacts): Promise<RunResult> {
    const nowMs = ctx.startedAt.getTime();
    const now = Math.floor(nowMs / 1000);
    const plan = planWindow(nowMs, this.#o.lookbackHours * 3600, ROLLUPS.minute.bucketSec);
    const since = {
      now,
      active_since: now - this.#o.activeDays * 86_400,
      lookback_since: now - this.#o.lookbackHours * 3600,
    };
    const counted = await this.#o.clickhouse.query({
      query: FEED_SKIPPED_SQL,
      query_params: {
        ...since,
        ...windowPlanParams(
          planWindow(
            nowMs,
            Math.max(this.#o.activeDays * 86_400, this.#o.lookbackHours * 3600),
            ROLLUPS.hour.bucketSec,
          ),
        ),
      },
      format: 'JSONEachRow',
      abort_signal: ctx.signal,
      query_id: `cache-refresher:${ctx.jobId}:${ctx.runId}:${ctx.attempt}:skipped`,
    });
    const [bad] = await readJsonEachRow<Record<string, string | number>>(counted);
    const badRows = Object.values(bad ?? {}).reduce<number>((sum, n) => sum + Number(n), 0);
    const result = await this.#o.clickhouse.query({
      query: FEED_SQL,
      query_params: {
        ...since,
        users: this.#o.users,
        page_size: this.#o.pageSize,
        decay: this.#o.decay,
        ...windowPlanParams(plan),
      },
      format: 'TabSeparatedRaw',
      abort_signal: ctx.signal,
      query_id: `cache-refresher:${ctx.jobId}:${ctx.runId}:${ctx.attempt}`,
    });
    const { written, skipped } = await streamUserValues(result, {
      keyOf: (userId) => keys.feed(this.#o.keyPrefix, userId),
      cache: this.#o.cache,
      ttlSec: this.#o.ttlSec,
      signal: ctx.signal,
    });
    const context = { users: written, skipped_rows: badRows + skipped };
    if (context.skipped_rows > 0) ctx.log.info(context, 'feed-warmer: skipped bad rows');
    return { items: written, context };
  }
}

/** The built-in `feed-warmer` job, made with the public `defineJob` like any job. */
export function feedWarmerJob(config: Pick<Config, 'feedWarmer'>): RefreshJob {
  const { intervalSec, priority } = JOB_DEFAULTS['feed-warmer'];
  return defineJob({
    id: 'feed-warmer',
    schedule: { intervalSec },
    priority,
    readsTables: FEED_WARMER_TABLES,
    run: (ctx) =>
      new FeedWarmerJob({
        clickhouse: ctx.clickhouse,
        cache: ctx.cache,
        keyPrefix: ctx.keyPrefix,
        ...config.feedWarmer,
        ttlSec: ctx.settings.ttlSec,
      }).run(ctx),
  });
}
