import { setTimeout as delay } from 'node:timers/promises';
import type { ClickHouseClient } from '@clickhouse/client';
import { keys } from '../cache/keys.js';
import { readJsonEachRow } from '../clickhouse/result-stream.js';
import { BAD_EVENT_SQL, BAD_RELATIONSHIP_SQL, GOOD_EVENT_SQL } from '../clickhouse/schema.js';
import type { CacheWriter } from '../cache/writer.js';
import { isTransientError } from '../runner/retry.js';
import { JOB_DEFAULTS, type Config } from '../config.js';
import { JobError, type RunFacts, type RunResult } from '../runner/job.js';
import { defineJob, type RefreshJob } from './define.js';
import { IncrementalSuggestedUsers } from './suggested-users-incremental.js';
import { streamUserValues } from './user-values.js';

/**
 * suggested-users (CONTRACT §4): "people you may know" for EVERY active user, every run.
 *
 * Active users are split into batches by a hash of their id (`cityHash64(user_id) % batches`), so no id
 * list ever travels to the server and each batch is a stable, independent slice. Each batch is ONE
 * set-based query: the batch's followees (capped per user at the most recent
 * SUGGESTED_USERS_MAX_FOLLOWEES, which bounds celebrity fan-out), their followees, mutual counts,
 * exclusions and `LIMIT n BY user` all happen inside ClickHouse, which also renders each user's JSON
 * value. The result streams back row by row and is written to Redis in pipelined chunks while later
 * rows are still arriving, so memory stays flat however many users there are.
 */

/**
 * One batch, for the users `batchUsersSql` selects (a SELECT of one UInt64 column `u`; its parameters
 * join the query's). "Latest row per pair wins" is ReplacingMergeTree's own rule, which `FINAL` applies, so
 * the status filter sees only each pair's newest row. Ids are compared as UInt64 and rendered as
 * decimal strings. Users with no candidate still get a row (an empty list) through the LEFT JOIN.
 */
export function suggestionsSql(batchUsersSql: string): string {
  return `
WITH
  batch_users AS (${batchUsersSql}),
  follows_of_batch AS (
    SELECT follower_id AS u, followee_id AS f, updated_at AS ts
    FROM user_relationships FINAL
    WHERE follower_id IN (SELECT u FROM batch_users) AND status = 'active' AND NOT ${BAD_RELATIONSHIP_SQL}
  ),
  recent_follows AS (
    SELECT u, f FROM follows_of_batch
    ORDER BY u, ts DESC, f ASC
    LIMIT {max_followees:UInt32} BY u
  ),
  second_hop AS (
    SELECT follower_id AS f, followee_id AS c
    FROM user_relationships FINAL
    WHERE follower_id IN (SELECT f FROM recent_follows) AND status = 'active' AND NOT ${BAD_RELATIONSHIP_SQL}
  ),
  ranked AS (
    SELECT r.u AS u, s.c AS c, count() AS mutual
    FROM recent_follows AS r
    INNER JOIN second_hop AS s ON r.f = s.f
    WHERE s.c != r.u
      AND (r.u, s.c) NOT IN (SELECT u, f FROM follows_of_batch)
    GROUP BY u, c
    ORDER BY u, mutual DESC, c ASC
    LIMIT {per_user:UInt32} BY u
  ),
  rendered AS (
    SELECT u,
      arrayStringConcat(
        arrayMap(x -> concat(
            '{"user_id":"', toString(x.2), '","mutual_count":', toString(x.1),
            ',"reason":"', toString(x.1), if(x.1 = 1, ' mutual connection', ' mutual connections'), '"}'),
          arraySort(x -> (-toInt64(x.1), x.2), groupArray((mutual, c)))),
        ',') AS items
    FROM ranked
    GROUP BY u
  )
SELECT toString(b.u) AS user_id, concat('[', r.items, ']') AS value
FROM batch_users AS b
LEFT JOIN rendered AS r ON r.u = b.u
SETTINGS join_use_nulls = 0`;
}

/** The full refresh's users: one hash slice of the active users. */
export const ACTIVE_BATCH_USERS_SQL = `
    SELECT DISTINCT user_id AS u
    FROM post_events
    WHERE event_time > toDateTime({since:UInt32}) AND event_time <= toDateTime({now:UInt32})
      AND ${GOOD_EVENT_SQL}
      AND cityHash64(user_id) % {batches:UInt32} = {batch:UInt32}`;

/**
 * An explicit list of users (query parameter `users`: decimal strings, so 64-bit ids stay exact), for
 * refreshing a chosen subset.
 */
export const LISTED_USERS_SQL = 'SELECT DISTINCT toUInt64(arrayJoin({users:Array(String)})) AS u';

export const SUGGESTIONS_BATCH_SQL = suggestionsSql(ACTIVE_BATCH_USERS_SQL);

/**
 * The run's active users and its bad rows: events of the activity window, and relationship rows of the
 * whole follow graph (both hops may reach any of them). Relationship rows are counted as stored, without
 * FINAL: a bad row is bad whichever row of its pair is the latest, and the count stays a cheap scan.
 */
export const ACTIVE_USERS_SQL = `
SELECT
  uniqExactIf(user_id, ${GOOD_EVENT_SQL}) AS n,
  countIf(${BAD_EVENT_SQL}) AS bad_events,
  (SELECT count() FROM user_relationships WHERE ${BAD_RELATIONSHIP_SQL}) AS bad_relationships
FROM post_events
WHERE event_time > toDateTime({since:UInt32}) AND event_time <= toDateTime({now:UInt32})`;

/** Consecutive batches failing on a transient (connection, timeout) error that mean an outage. */
const OUTAGE_BATCHES = 2;
/** How often a long run reports progress. */
const PROGRESS_EVERY_MS = 5000;

export interface SuggestedUsersOptions {
  clickhouse: ClickHouseClient;
  cache: CacheWriter;
  keyPrefix: string;
  perUser: number;
  activeDays: number;
  maxFollowees: number;
  batchSize: number;
  ttlSec: number;
}

/** How many hash batches to use for `activeUsers`: enough that each holds about `batchSize` users. */
export function batchCount(activeUsers: number, batchSize: number): number {
  return Math.max(1, Math.ceil(activeUsers / batchSize));
}

export class SuggestedUsersJob {
  readonly id = 'suggested-users';
  readonly #o: SuggestedUsersOptions;

  constructor(opts: SuggestedUsersOptions) {
    this.#o = opts;
  }

  async run(ctx: RunFacts): Promise<RunResult> {
    const now = Math.floor(ctx.startedAt.getTime() / 1000);
    const since = now - this.#o.activeDays * 86_400;
    const counted = await this.#o.clickhouse.query({
      query: ACTIVE_USERS_SQL,
      query_params: { since, now },
      format: 'JSONEachRow',
      abort_signal: ctx.signal,
    });
    const [first] = await readJsonEachRow<{
      n: string | number;
      bad_events: string | number;
      bad_relationships: string | number;
    }>(counted);
    const activeUsers = Number(first?.n ?? 0);
    const badRows = Number(first?.bad_events ?? 0) + Number(first?.bad_relationships ?? 0);
    const batches = batchCount(activeUsers, this.#o.batchSize);
    ctx.log.info({ active_users: activeUsers, batches }, 'suggested-users: starting');

    const progress = { users: 0, skipped: badRows, batchesDone: 0, lastLog: Date.now(), started: Date.now() };
    const failed: { batch: number; of: number; error: string }[] = [];
    let outageStreak = 0;
    let skippedFrom: number | undefined;
    for (let batch = 0; batch < batches; batch++) {
      if (outageStreak >= OUTAGE_BATCHES) {
        // A dependency is down, not one slice bad: the remaining batches would fail the same way,
        // slowly. Fail now so the dead-letter record goes out while this replica still leads.
        skippedFrom = batch;
        ctx.log.warn({ batch, batches }, 'suggested-users: dependency unavailable; not attempting the rest');
        break;
      }
      try {
        await this.#batchWithRetry(ctx, { now, since, batch, batches }, progress);
        outageStreak = 0;
      } catch (err) {
        // Keep the other batches' users fresh: one bad slice must not leave everyone stale.
        if (ctx.signal.aborted) throw err;
        outageStreak = isTransientError(err) ? outageStreak + 1 : 0;
        const error = err instanceof Error ? err.message : String(err);
        // warn, not error: the run's one error line (with failed_batches) follows when it ends.
        ctx.log.warn({ err, batch, batches }, 'suggested-users: batch failed');
        failed.push({ batch, of: batches, error });
      }
      progress.batchesDone++;
      if (Date.now() - progress.lastLog >= PROGRESS_EVERY_MS) {
        progress.lastLog = Date.now();
        const secs = (Date.now() - progress.started) / 1000;
        ctx.log.info(
          {
            batches_done: progress.batchesDone,
            batches,
            users: progress.users,
            users_per_sec: Math.round(progress.users / Math.max(secs, 0.001)),
          },
          'suggested-users: progress',
        );
      }
    }
    const context = {
      active_users: activeUsers,
      batches,
      users: progress.users,
      skipped_rows: progress.skipped,
    };
    if (failed.length > 0) {
      const skipped =
        skippedFrom === undefined ? {} : { skipped_batches: { from: skippedFrom, to: batches - 1 } };
      throw new JobError(`${failed.length} of ${batches} suggested-users batches failed`, {
        cause: failed[0]?.error,
        context: {
          ...context,
          failed_batches: failed,
          ...skipped,
          partitioning: 'cityHash64(user_id) % batches',
        },
      });
    }
    if (progress.skipped > 0) ctx.log.info(context, 'suggested-users: skipped bad rows');
    return { items: progress.users, context };
  }

  /** One retry for a transient failure of a batch: a blip should not cost a whole slice of users. */
  async #batchWithRetry(
    ctx: RunFacts,
    slice: { now: number; since: number; batch: number; batches: number },
    progress: { users: number; skipped: number },
  ): Promise<void> {
    try {
      await this.#batch(ctx, slice, progress);
    } catch (err) {
      if (ctx.signal.aborted || !isTransientError(err)) throw err;
      ctx.log.warn({ err, batch: slice.batch }, 'suggested-users: transient batch failure; retrying once');
      await delay(1000, undefined, { signal: ctx.signal });
      await this.#batch(ctx, slice, progress);
    }
  }

  async #batch(
    ctx: RunFacts,
    slice: { now: number; since: number; batch: number; batches: number },
    progress: { users: number; skipped: number },
  ): Promise<void> {
    const { written, skipped } = await writeSuggestions(this.#o, ctx, {
      batchUsersSql: ACTIVE_BATCH_USERS_SQL,
      params: slice,
      tag: `b${slice.batch}`,
    });
    progress.users += written;
    progress.skipped += skipped;
  }
}

/**
 * Computes the suggestions of the users `subset.batchUsersSql` selects (see `suggestionsSql`) in one
 * query and streams them into Redis. Resolves to the keys written and the bad rows skipped.
 */
export async function writeSuggestions(
  o: SuggestedUsersOptions,
  ctx: RunFacts,
  subset: { batchUsersSql: string; params: Record<string, unknown>; tag: string },
): Promise<{ written: number; skipped: number }> {
  const result = await o.clickhouse.query({
    query: suggestionsSql(subset.batchUsersSql),
    query_params: { ...subset.params, max_followees: o.maxFollowees, per_user: o.perUser },
    // Raw TSV: the value is already JSON rendered by ClickHouse (see streamUserValues).
    format: 'TabSeparatedRaw',
    abort_signal: ctx.signal,
    query_id: `cache-refresher:${ctx.jobId}:${ctx.runId}:${ctx.attempt}:${subset.tag}`,
  });
  return streamUserValues(result, {
    keyOf: (userId) => keys.suggestedUsers(o.keyPrefix, userId),
    cache: o.cache,
    ttlSec: o.ttlSec,
    signal: ctx.signal,
  });
}

/** suggested-users in incremental mode (suggested-users-incremental.ts) over this module's queries. */
export function incrementalSuggestedUsers(
  opts: SuggestedUsersOptions & { fullEvery: number; replica?: string },
): IncrementalSuggestedUsers {
  return new IncrementalSuggestedUsers({
    ...opts,
    runFull: (facts) => new SuggestedUsersJob(opts).run(facts),
    writeUsers: (facts, users, tag) =>
      writeSuggestions(opts, facts, { batchUsersSql: LISTED_USERS_SQL, params: { users }, tag }),
  });
}

/** The built-in `suggested-users` job, made with the public `defineJob` like any job. */
export function suggestedUsersJob(config: Pick<Config, 'suggestedUsers'>): RefreshJob {
  const { intervalSec, priority } = JOB_DEFAULTS['suggested-users'];
  return defineJob({
    id: 'suggested-users',
    schedule: { intervalSec },
    priority,
    readsTables: ['post_events', 'user_relationships'],
    run: (ctx) => {
      const opts: SuggestedUsersOptions = {
        clickhouse: ctx.clickhouse,
        cache: ctx.cache,
        keyPrefix: ctx.keyPrefix,
        ...config.suggestedUsers,
        ttlSec: ctx.settings.ttlSec,
      };
      if (config.suggestedUsers.mode === 'full') return new SuggestedUsersJob(opts).run(ctx);
      return incrementalSuggestedUsers({ ...opts, fullEvery: config.suggestedUsers.fullEvery }).run(ctx);
    },
  });
}
