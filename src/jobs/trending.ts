import type { ClickHouseClient, ResponseJSON } from '@clickhouse/client';
import { keys } from '../cache/keys.js';
import { readJsonDocument } from '../clickhouse/result-stream.js';
import type { CacheWriter } from '../cache/writer.js';
import { BAD_EVENT_SQL, ROLLUPS, WEIGHT_X10_SQL, type Rollup } from '../clickhouse/schema.js';
import { JOB_DEFAULTS, type Config } from '../config.js';
import type { RunFacts, RunResult } from '../runner/job.js';
import { defineJob, type RefreshJob } from './define.js';

/**
 * trending-1h, trending-24h, trending-7d (CONTRACT §4): one job per window, built by `trendingJob`.
 *
 *   score(post) = Σ weight(event) · d^(age_h)   over events with now − W < event_time ≤ now
 *
 * computed in ClickHouse from the rollups (schema.ts): whole minute buckets for 1h/24h, whole hour
 * buckets for 7d, each decayed by the age of its weighted mean event time. The window's edges rarely
 * fall on bucket boundaries, so the partial bucket at each end is read from raw `post_events`, event by
 * event: that is at most one bucket's worth of rows per edge, found through the table's time-first key.
 * The result is exact at the edges and within a second-order error inside (see schema.ts).
 */

export type TrendingWindow = '1h' | '24h' | '7d';

interface WindowSpec {
  jobId: 'trending-1h' | 'trending-24h' | 'trending-7d';
  windowSec: number;
  rollup: Rollup;
}

export const TRENDING_WINDOWS: Readonly<Record<TrendingWindow, WindowSpec>> = {
  '1h': { jobId: 'trending-1h', windowSec: 3600, rollup: ROLLUPS.minute },
  '24h': { jobId: 'trending-24h', windowSec: 24 * 3600, rollup: ROLLUPS.minute },
  '7d': { jobId: 'trending-7d', windowSec: 7 * 24 * 3600, rollup: ROLLUPS.hour },
};

/** Half-open ranges of unix seconds, `[from, to)`. Empty when `from >= to`. */
export interface SecondsRange {
  from: number;
  to: number;
}

export interface WindowPlan {
  /** Every event second in the window: `now − W < t ≤ now` on whole seconds. */
  window: SecondsRange;
  /** Bucket starts whose whole bucket lies inside the window: read from the rollup. */
  buckets: SecondsRange;
  /** The partial buckets before and after `buckets`: read from raw events. */
  head: SecondsRange;
  tail: SecondsRange;
}

/**
 * Splits the window ending at `nowMs` into whole rollup buckets and the raw edges around them. Events
 * carry whole seconds, so `t > now − W` is `t ≥ floor(now) − W + 1` and `t ≤ now` is `t ≤ floor(now)`,
 * whatever the milliseconds of `now`.
 */
export function planWindow(nowMs: number, windowSec: number, bucketSec: number): WindowPlan {
  const last = Math.floor(nowMs / 1000);
  const window = { from: last - windowSec + 1, to: last + 1 };
  const first = Math.ceil(window.from / bucketSec) * bucketSec;
  const end = Math.floor(window.to / bucketSec) * bucketSec;
  if (first >= end) {
    // The window holds no whole bucket (only when it is shorter than two buckets): all of it is raw.
    return {
      window,
      buckets: { from: first, to: first },
      head: window,
      tail: { from: window.to, to: window.to },
    };
  }
  return {
    window,
    buckets: { from: first, to: end },
    head: { from: window.from, to: first },
    tail: { from: end, to: window.to },
  };
}

/** The query parameters every rollup-plus-raw-edges query takes for a plan. */
export function windowPlanParams(plan: WindowPlan): Record<string, number> {
  return {
    buckets_from: plan.buckets.from,
    buckets_to: plan.buckets.to,
    head_from: plan.head.from,
    head_to: plan.head.to,
    tail_from: plan.tail.from,
    tail_to: plan.tail.to,
  };
}

export interface TrendingEntry {
  post_id: string;
  score: number;
}

/** Scores keep 6 significant digits: plenty to rank and compare, and a compact value for readers. */
export function roundScore(score: number): number {
  return Number(score.toPrecision(6));
}

/** One row of the trending query: the post id as decimal text, its score. */
export interface TrendingRow {
  id: unknown;
  score: unknown;
}

/**
 * Turns query rows into the cached list. A row scoring exactly 0 is a post whose every event in the
 * window was bad data: the query has already counted those events, so it is left out silently (it
 * reaches here only when the window has fewer than K good posts). Anything else that is not a positive
 * finite score for a decimal post id is dropped and counted, so a surprise in the data never becomes a
 * malformed cache value.
 */
export function buildTrendingValue(rows: readonly TrendingRow[]): {
  entries: TrendingEntry[];
  dropped: number;
} {
  const entries: TrendingEntry[] = [];
  let dropped = 0;
  for (const row of rows) {
    const score = typeof row.score === 'number' ? row.score : Number(row.score);
    const id = row.id;
    if (score === 0) continue;
    if (typeof id === 'string' && /^[1-9]\d{0,19}$/.test(id) && Number.isFinite(score) && score > 0) {
      entries.push({ post_id: id, score: roundScore(score) });
    } else {
      dropped++;
    }
  }
  return { entries, dropped };
}

/**
 * One query: rollup rows for whole buckets plus raw events for the edges, scored, summed per post and
 * ranked. `skipped` is the window's bad events (unknown type, post id 0), totalled across all posts by a
 * window function before LIMIT cuts the groups. Every value is a query parameter.
 */
export function trendingQuery(rollup: Rollup): string {
  return `
    SELECT
      -- Named apart from post_id so that ORDER BY below sorts the UInt64 (numeric), not this text.
      toString(post_id) AS id,
      sum(score) AS score,
      toFloat64(sum(sum(bad)) OVER ()) AS skipped
    FROM (
      SELECT
        post_id,
        if(post_id = 0 OR weight_x10 = 0, 0,
           weight_x10 / 10 * pow({decay:Float64},
             ({now:Float64} - toUInt32(bucket) - weight_x10_sec / weight_x10) / 3600)) AS score,
        bad
      FROM ${rollup.table}
      WHERE bucket >= toDateTime({buckets_from:UInt32}) AND bucket < toDateTime({buckets_to:UInt32})
      UNION ALL
      SELECT
        post_id,
        if(${BAD_EVENT_SQL}, 0,
           ${WEIGHT_X10_SQL} / 10 * pow({decay:Float64}, ({now:Float64} - toUInt32(event_time)) / 3600)) AS score,
        toUInt64(${BAD_EVENT_SQL}) AS bad
      FROM post_events
      WHERE (event_time >= toDateTime({head_from:UInt32}) AND event_time < toDateTime({head_to:UInt32}))
         OR (event_time >= toDateTime({tail_from:UInt32}) AND event_time < toDateTime({tail_to:UInt32}))
    )
    GROUP BY post_id
    ORDER BY score DESC, post_id ASC
    LIMIT {top_k:UInt32}`;
}

export interface TrendingOptions {
  window: TrendingWindow;
  clickhouse: ClickHouseClient;
  cache: CacheWriter;
  keyPrefix: string;
  topK: number;
  decay: number;
  ttlSec: number;
}

export interface TrendingRunContext extends Record<string, unknown> {
  window: TrendingWindow;
  posts: number;
  skipped_rows: number;
  rows_read: number;
}

/** The computation of one trending window, given its clients (tests and benchmarks build it directly). */
export class TrendingJob {
  readonly id: string;
  readonly context: Readonly<Record<string, unknown>>;
  readonly #opts: TrendingOptions;
  readonly #spec: WindowSpec;

  constructor(opts: TrendingOptions) {
    this.#opts = opts;
    this.#spec = TRENDING_WINDOWS[opts.window];
    this.id = this.#spec.jobId;
    this.context = { window: opts.window };
  }

  async run(ctx: RunFacts): Promise<RunResult> {
    const { window, clickhouse, cache, keyPrefix, topK, decay, ttlSec } = this.#opts;
    const plan = planWindow(ctx.startedAt.getTime(), this.#spec.windowSec, this.#spec.rollup.bucketSec);
    // Compute first, write last: a failed query throws here (as the client's own error, keeping its
    // code for the dead-letter record) and the cached list keeps its last good value.
    const result = await clickhouse.query({
      query: trendingQuery(this.#spec.rollup),
      query_params: {
        decay,
        now: ctx.startedAt.getTime() / 1000,
        ...windowPlanParams(plan),
        top_k: topK,
      },
      // JSON (not JSONEachRow) ends with the query's statistics: rows read, for the run's log line.
      format: 'JSON',
      abort_signal: ctx.signal,
      // A recognisable id lets an operator find a run's query in system.query_log.
      query_id: `cache-refresher:${ctx.jobId}:${ctx.runId}:${ctx.attempt}`,
    });
    const body = await readJsonDocument<ResponseJSON<TrendingRow & { skipped: unknown }>>(result);
    const skipped = Number(body.data[0]?.skipped ?? 0);
    const rowsRead = body.statistics?.rows_read ?? 0;
    const rows = body.data;
    const { entries, dropped } = buildTrendingValue(rows);
    await cache.write(
      [{ key: keys.trending(keyPrefix, window), value: JSON.stringify(entries) }],
      ttlSec,
      ctx.signal,
    );
    const context: TrendingRunContext = {
      window,
      posts: entries.length,
      skipped_rows: skipped + dropped,
      rows_read: rowsRead,
    };
    if (context.skipped_rows > 0) ctx.log.info(context, 'trending: skipped bad event rows');
    return { items: entries.length, context };
  }
}

/**
 * The built-in job for one window (`trending-1h` …), made with the public `defineJob` like any job:
 * defaults from CONTRACT §2, formula settings from `TRENDING_TOP_K` and `TRENDING_<W>_DECAY`.
 */
export function trendingJob(window: TrendingWindow, config: Pick<Config, 'trending'>): RefreshJob {
  const jobId = TRENDING_WINDOWS[window].jobId;
  const { intervalSec, priority } = JOB_DEFAULTS[jobId];
  return defineJob({
    id: jobId,
    schedule: { intervalSec },
    priority,
    context: { window },
    readsTables: ['post_events', TRENDING_WINDOWS[window].rollup.table],
    run: (ctx) =>
      new TrendingJob({
        window,
        clickhouse: ctx.clickhouse,
        cache: ctx.cache,
        keyPrefix: ctx.keyPrefix,
        topK: config.trending.topK,
        decay: config.trending.decay[window],
        ttlSec: ctx.settings.ttlSec,
      }).run(ctx),
  });
}
