import type { ClickHouseClient, ResponseJSON } from '@clickhouse/client';
import { keys } from '../cache/keys.js';
import { readJsonDocument } from '../clickhouse/result-stream.js';
import type { CacheWriter } from '../cache/writer.js';
import { BAD_EVENT_SQL, MOMENT_ORDER, WEIGHT_X10_SQL } from '../clickhouse/schema.js';
import { JOB_DEFAULTS, type Config } from '../config.js';
import type { RunFacts, RunResult } from '../runner/job.js';
import { defineJob, type RefreshJob } from './define.js';
import {
  momentBeta,
  planTrending,
  trendingLevels,
  type SecondsRange,
  type TrendingPlan,
} from './trending-plan.js';

export type { SecondsRange } from './trending-plan.js';

/**
 * trending-1h, trending-24h, trending-7d (CONTRACT §4): one job per window, built by `trendingJob`.
 *
 *   score(post) = Σ weight(event) · d^(age_h)   over events with now − W < event_time ≤ now
 *
 * computed in ClickHouse from rollups (trending-plan.ts): whole UTC days and hours from the moment
 * rollups, the minutes left at the window's ends from the minute rollup, and the seconds left at the
 * very edges from raw `post_events`, event by event, through the table's time-first key. Each level is
 * used only when its error bound at the configured decay is within 1e-6 relative (a steeper decay reads
 * finer buckets), so every score is within 1e-6 of the exact per-event sum before its 6-digit rounding.
 */

export type TrendingWindow = '1h' | '24h' | '7d';

interface WindowSpec {
  jobId: 'trending-1h' | 'trending-24h' | 'trending-7d';
  windowSec: number;
}

export const TRENDING_WINDOWS: Readonly<Record<TrendingWindow, WindowSpec>> = {
  '1h': { jobId: 'trending-1h', windowSec: 3600 },
  '24h': { jobId: 'trending-24h', windowSec: 24 * 3600 },
  '7d': { jobId: 'trending-7d', windowSec: 7 * 24 * 3600 },
};

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

function inRanges(column: string, name: string, ranges: readonly SecondsRange[]): string {
  return ranges
    .map(
      (_, j) =>
        `(${column} >= toDateTime({${name}_from${j}:UInt32}) AND ${column} < toDateTime({${name}_to${j}:UInt32}))`,
    )
    .join(' OR ');
}

function rangeParams(name: string, ranges: readonly SecondsRange[]): Record<string, number> {
  return Object.fromEntries(
    ranges.flatMap((r, j) => [
      [`${name}_from${j}`, r.from],
      [`${name}_to${j}`, r.to],
    ]),
  );
}

/**
 * One query for a plan: each level's rows decayed per bucket, raw events at the edges decayed one by
 * one, summed per post and ranked. `skipped` is the window's bad events (unknown type, zero ids),
 * totalled across all posts by a window function before LIMIT cuts the groups. Ranking is on the score
 * as cached (6 significant digits), so posts shown with equal scores are always in post id order.
 * Every value is a query parameter; the caller adds `decay`, `now` (unix seconds) and `top_k`.
 */
export function trendingQuery(
  plan: TrendingPlan,
  decay: number,
): { query: string; params: Record<string, number> } {
  const parts: string[] = [];
  let params: Record<string, number> = {};
  plan.levels.forEach(({ level, ranges }, i) => {
    const name = `l${i}`;
    params = { ...params, ...rangeParams(name, ranges) };
    let score: string;
    if (level.kind === 'moments') {
      // Σ w·d^((now − t)/3600) = d^((now − centre)/3600) · Σ_k β^k/k! · wu_k (schema.ts MOMENT_ROLLUPS).
      const beta = momentBeta(level.bucketSec, decay);
      let coefficient = 1;
      const terms = ['weight_x10'];
      for (let k = 1; k <= MOMENT_ORDER; k++) {
        coefficient *= beta / k;
        params[`${name}_c${k}`] = coefficient;
        terms.push(`{${name}_c${k}:Float64} * wu${k}`);
      }
      params[`${name}_half`] = level.bucketSec / 2;
      score = `if(weight_x10 = 0, 0,
           (${terms.join(' + ')}) / 10
           * pow({decay:Float64}, ({now:Float64} - toUInt32(bucket) - {${name}_half:UInt32}) / 3600))`;
    } else {
      score = `if(post_id = 0 OR weight_x10 = 0, 0,
           weight_x10 / 10 * pow({decay:Float64},
             ({now:Float64} - toUInt32(bucket) - weight_x10_sec / weight_x10) / 3600))`;
    }
    parts.push(`SELECT post_id, ${score} AS score, bad
      FROM ${level.table}
      WHERE ${inRanges('bucket', name, ranges)}`);
  });
  if (plan.raw.length > 0) {
    params = { ...params, ...rangeParams('raw', plan.raw) };
    parts.push(`SELECT
        post_id,
        if(${BAD_EVENT_SQL}, 0,
           ${WEIGHT_X10_SQL} / 10 * pow({decay:Float64}, ({now:Float64} - toUInt32(event_time)) / 3600)) AS score,
        toUInt64(${BAD_EVENT_SQL}) AS bad
      FROM post_events
      WHERE ${inRanges('event_time', 'raw', plan.raw)}`);
  }
  const query = `
    SELECT
      -- Named apart from post_id so that ORDER BY below sorts the UInt64 (numeric), not this text.
      toString(post_id) AS id,
      sum(score) AS score,
      toFloat64(sum(sum(bad)) OVER ()) AS skipped
    FROM (
      ${parts.join('\n      UNION ALL\n      ')}
    )
    GROUP BY post_id
    ORDER BY if(score > 0, round(score, 5 - toInt32(floor(log10(score)))), 0) DESC, post_id ASC
    LIMIT {top_k:UInt32}`;
  return { query, params };
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
    const plan = planTrending(
      ctx.startedAt.getTime(),
      this.#spec.windowSec,
      trendingLevels(this.#spec.windowSec, decay),
    );
    const { query, params } = trendingQuery(plan, decay);
    // Compute first, write last: a failed query throws here (as the client's own error, keeping its
    // code for the dead-letter record) and the cached list keeps its last good value.
    const result = await clickhouse.query({
      query,
      query_params: { ...params, decay, now: ctx.startedAt.getTime() / 1000, top_k: topK },
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
    readsTables: [
      'post_events',
      ...trendingLevels(TRENDING_WINDOWS[window].windowSec, config.trending.decay[window]).map(
        (l) => l.table,
      ),
    ],
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
