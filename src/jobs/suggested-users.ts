import { setTimeout as delay } from 'node:timers/promises';
import { keys } from '../cache/keys.js';
import { readJsonEachRow } from '../clickhouse/result-stream.js';
import {
  ACTIVE_IN_WINDOW_SQL,
  BAD_EVENTS_IN_WINDOW_SQL,
  BAD_RELATIONSHIP_SQL,
  ROLLUPS,
  USER_ACTIVITY,
} from '../clickhouse/schema.js';
import { isTransientError } from '../runner/retry.js';
import { JOB_DEFAULTS, type Config } from '../config.js';
import { JobError, type RunFacts, type RunResult } from '../runner/job.js';
import { defineJob, type RefreshJob } from './define.js';
import {
  IncrementalMemory,
  IncrementalSuggestedUsers,
  type IncrementalOptions,
} from './suggested-users-incremental.js';
import { markFullModeWrites } from './suggested-users-marker.js';
import type {
  BatchWriter,
  SubsetWritten,
  SuggestedUsersOptions,
  UserSubset,
} from './suggested-users-types.js';
import { ACTIVE_RANGE_USERS_SQL, suggestionsSql } from './suggestions-sql.js';
import { planWindow, windowPlanParams } from './window-plan.js';
import { streamUserValues } from './user-values.js';

export type { SubsetWritten, SuggestedUsersOptions, UserSubset } from './suggested-users-types.js';
export {
  ACTIVE_RANGE_USERS_SQL,
  LISTED_USERS_SQL,
  SUGGESTIONS_BATCH_SQL,
  suggestionsSql,
} from './suggestions-sql.js';

/**
 * suggested-users (CONTRACT §4): "people you may know" for EVERY active user, every run.
 *
 * A run plans its batches once: the active users of the window, read from the activity rollup
 * (USER_ACTIVITY), cut into contiguous user-id ranges of about SUGGESTED_USERS_BATCH_SIZE users. Ranges,
 * not hashes: every table the batch query reads is ordered by user id first (the rollup by (day,
 * user_id), user_relationships by follower_id), so a batch reads its own users' rows and nobody else's.
 * Only the range bounds travel between the job and ClickHouse, never id lists.
 *
 * Each batch is ONE query (suggestionsSql) that computes and renders the batch's values inside
 * ClickHouse. Up to SUGGESTED_USERS_PARALLELISM batches run at once; each result streams back row by
 * row and is written to Redis in pipelined chunks while later rows are still arriving, so memory stays
 * flat however many users there are.
 */

/**
 * The run's plan: how many users are active and the first id of every batch of `batch_size` of them
 * in id order (as decimal strings: UInt64 does not fit a JSON number).
 */
export const BATCH_PLAN_SQL = `
SELECT count() AS n,
  arrayMap(x -> toString(x),
    arrayFilter((x, i) -> (i - 1) % {batch_size:UInt32} = 0, arraySort(groupArray(user_id)) AS ids, arrayEnumerate(ids))) AS starts
FROM (SELECT DISTINCT user_id FROM ${USER_ACTIVITY.table} WHERE ${ACTIVE_IN_WINDOW_SQL})`;

/**
 * The run's bad rows: events of the activity window, and relationship rows of the whole follow graph
 * (both hops may reach any of them). Events are counted from the hour rollup for whole hours and from
 * raw rows at the window's edges (BAD_EVENTS_IN_WINDOW_SQL, as feed-warmer counts them): measured on
 * the bench's 100 000-user data, this count read 12.2 M of a full refresh's 33 M rows with a raw scan
 * of the window's events, and reads 3.9 M (relationship rows included) this way. Relationship rows
 * are counted as stored, without FINAL: a bad row is bad whichever row of its pair is the latest, and
 * the count stays a cheap scan.
 */
export const SKIPPED_ROWS_SQL = `
SELECT
  ${BAD_EVENTS_IN_WINDOW_SQL} AS bad_events,
  (SELECT count() FROM user_relationships WHERE ${BAD_RELATIONSHIP_SQL}) AS bad_relationships`;

/** The largest UInt64: the last batch's range is open-ended. */
const MAX_USER_ID = '18446744073709551615';

/**
 * Inclusive id ranges from the plan's batch starts: the first starts at 0 and the last ends at the
 * largest id, so together they cover every id (a user who became active after the plan is still in
 * exactly one batch).
 */
export function batchRanges(starts: readonly string[]): { lo: string; hi: string }[] {
  if (starts.length === 0) return [{ lo: '0', hi: MAX_USER_ID }];
  return starts.map((start, i) => {
    const next = starts[i + 1];
    return {
      lo: i === 0 ? '0' : start,
      hi: next === undefined ? MAX_USER_ID : (BigInt(next) - 1n).toString(),
    };
  });
}

/** Consecutive batches failing on a transient (connection, timeout) error that mean an outage. */
const OUTAGE_BATCHES = 2;
/** How often a long run reports progress. */
const PROGRESS_EVERY_MS = 5000;
/** How long the mark after a full-mode run's last write may take (a cancelled run's signal is spent). */
const MARK_AFTER_MS = 5000;

/**
 * Computes and writes the suggestions of one subset of users with one query (suggestionsSql), its
 * result streamed into Redis in pipelined chunks. `now` and `since` (unix seconds) are the run's
 * activity window. Throws the query's or the writes' error (chunks before it stay written).
 */
export async function writeSuggestions(
  o: Pick<
    SuggestedUsersOptions,
    'clickhouse' | 'cache' | 'keyPrefix' | 'perUser' | 'maxFollowees' | 'ttlSec'
  >,
  ctx: RunFacts,
  window: { now: number; since: number },
  subset: UserSubset,
): Promise<SubsetWritten> {
  const result = await o.clickhouse.query({
    query: suggestionsSql(subset.sql),
    query_params: {
      ...subset.params,
      ...window,
      max_followees: o.maxFollowees,
      per_user: o.perUser,
    },
    // Raw TSV: the value is already JSON rendered by ClickHouse (see streamUserValues).
    format: 'TabSeparatedRaw',
    abort_signal: ctx.signal,
    query_id: `cache-refresher:${ctx.jobId}:${ctx.runId}:${ctx.attempt}:${subset.label}`,
  });
  return streamUserValues(result, {
    keyOf: (userId) => keys.suggestedUsers(o.keyPrefix, userId),
    cache: o.cache,
    ttlSec: o.ttlSec,
    signal: ctx.signal,
  });
}

export class SuggestedUsersJob {
  readonly id = 'suggested-users';
  readonly #o: SuggestedUsersOptions;

  constructor(opts: SuggestedUsersOptions) {
    this.#o = opts;
  }

  /**
   * One run of the full mode (SUGGESTED_USERS_MODE=full, and any one-off `once` under it): a full
   * refresh, with the incremental mode's cache marker set to name nobody before the first write and
   * again after the last (see suggested-users-marker.ts), so an incremental sidecar beside it never
   * extends a value this run wrote. The second mark is made whatever the outcome, within
   * MARK_AFTER_MS even when the run was cancelled; its failure is logged, not thrown: the values are
   * written, and the first mark already keeps an incremental run that starts later from trusting them.
   */
  async run(ctx: RunFacts): Promise<RunResult> {
    const { cache, keyPrefix } = this.#o;
    const generation = `${ctx.runId}:${ctx.attempt}`;
    await markFullModeWrites(cache, keyPrefix, generation, ctx.signal);
    try {
      return await this.fullRefresh(ctx);
    } finally {
      await markFullModeWrites(cache, keyPrefix, generation, AbortSignal.timeout(MARK_AFTER_MS)).catch(
        (err: unknown) => ctx.log.warn({ err }, 'suggested-users: could not mark the cache after the run'),
      );
    }
  }

  /**
   * Every active user, in id-range batches, up to `parallelism` at once. Each batch goes to
   * `writeBatch` (default: computed and written by writeSuggestions; the incremental mode also stores
   * each user's ranking buffer).
   */
  async fullRefresh(
    ctx: RunFacts,
    writeBatch: BatchWriter = (c, w, s) => writeSuggestions(this.#o, c, w, s),
  ): Promise<RunResult> {
    const window = this.#window(ctx);
    // The bad-row count (the hour rollup, the window's raw edges, the follow graph) is only reported at
    // the end: it runs beside the batches instead of delaying the first one. Settled into a value so an
    // early failure of the plan cannot leave it rejected with nobody listening.
    const counted = this.#skippedRows(ctx).then(
      (n) => ({ n }),
      (err: unknown) => ({ err }),
    );
    const plan = await this.#plan(ctx, window);
    const ranges = batchRanges(plan.starts);
    const batches = ranges.length;
    const parallelism = Math.max(1, Math.min(this.#o.parallelism ?? 1, batches));
    ctx.log.info({ active_users: plan.activeUsers, batches, parallelism }, 'suggested-users: starting');

    const progress = { users: 0, skipped: 0, batchesDone: 0, lastLog: Date.now(), started: Date.now() };
    const failed: { batch: number; of: number; error: string }[] = [];
    let outageStreak = 0;
    let skippedFrom: number | undefined;
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < batches && skippedFrom === undefined) {
        if (outageStreak >= OUTAGE_BATCHES) {
          // A dependency is down, not one slice bad: the remaining batches would fail the same way,
          // slowly. Fail now so the dead-letter record goes out while this replica still leads.
          skippedFrom = next;
          ctx.log.warn(
            { batch: next, batches },
            'suggested-users: dependency unavailable; not attempting the rest',
          );
          break;
        }
        const batch = next++;
        const range = ranges[batch] ?? { lo: '0', hi: MAX_USER_ID };
        try {
          const done = await this.#batchWithRetry(ctx, window, writeBatch, {
            sql: ACTIVE_RANGE_USERS_SQL,
            params: range,
            label: `b${batch}`,
          });
          progress.users += done.written;
          progress.skipped += done.skipped;
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
        this.#logProgress(ctx, progress, batches);
      }
    };
    await Promise.all(Array.from({ length: parallelism }, worker));
    const badRows = await counted;
    if ('err' in badRows) throw badRows.err;
    progress.skipped += badRows.n;
    const context = {
      active_users: plan.activeUsers,
      batches,
      users: progress.users,
      skipped_rows: progress.skipped,
    };
    if (failed.length > 0) {
      failed.sort((a, b) => a.batch - b.batch);
      const skipped =
        skippedFrom === undefined ? {} : { skipped_batches: { from: skippedFrom, to: batches - 1 } };
      throw new JobError(`${failed.length} of ${batches} suggested-users batches failed`, {
        cause: failed[0]?.error,
        context: {
          ...context,
          failed_batches: failed,
          ...skipped,
          partitioning: 'user_id ranges of the active users, in id order',
        },
      });
    }
    if (progress.skipped > 0) ctx.log.info(context, 'suggested-users: skipped bad rows');
    return { items: progress.users, context };
  }

  #window(ctx: RunFacts): { now: number; since: number } {
    const now = Math.floor(ctx.startedAt.getTime() / 1000);
    return { now, since: now - this.#o.activeDays * 86_400 };
  }

  async #plan(
    ctx: RunFacts,
    window: { now: number; since: number },
  ): Promise<{ activeUsers: number; starts: string[] }> {
    const result = await this.#o.clickhouse.query({
      query: BATCH_PLAN_SQL,
      query_params: { ...window, batch_size: this.#o.batchSize },
      format: 'JSONEachRow',
      abort_signal: ctx.signal,
    });
    const [row] = await readJsonEachRow<{ n: string | number; starts: string[] }>(result);
    return { activeUsers: Number(row?.n ?? 0), starts: row?.starts ?? [] };
  }

  async #skippedRows(ctx: RunFacts): Promise<number> {
    const activitySec = this.#o.activeDays * 86_400;
    const result = await this.#o.clickhouse.query({
      query: SKIPPED_ROWS_SQL,
      query_params: windowPlanParams(
        planWindow(ctx.startedAt.getTime(), activitySec, ROLLUPS.hour.bucketSec),
      ),
      format: 'JSONEachRow',
      abort_signal: ctx.signal,
    });
    const [row] = await readJsonEachRow<{ bad_events: string | number; bad_relationships: string | number }>(
      result,
    );
    return Number(row?.bad_events ?? 0) + Number(row?.bad_relationships ?? 0);
  }

  #logProgress(
    ctx: RunFacts,
    progress: { users: number; batchesDone: number; lastLog: number; started: number },
    batches: number,
  ): void {
    if (Date.now() - progress.lastLog < PROGRESS_EVERY_MS) return;
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

  /** One retry for a transient failure of a batch: a blip should not cost a whole slice of users. */
  async #batchWithRetry(
    ctx: RunFacts,
    window: { now: number; since: number },
    writeBatch: BatchWriter,
    subset: UserSubset,
  ): Promise<SubsetWritten> {
    try {
      return await writeBatch(ctx, window, subset);
    } catch (err) {
      if (ctx.signal.aborted || !isTransientError(err)) throw err;
      ctx.log.warn({ err, batch: subset.label }, 'suggested-users: transient batch failure; retrying once');
      await delay(1000, undefined, { signal: ctx.signal });
      return writeBatch(ctx, window, subset);
    }
  }
}

/** suggested-users in incremental mode (suggested-users-incremental.ts) over this module's queries. */
export function incrementalSuggestedUsers(
  opts: SuggestedUsersOptions &
    Pick<IncrementalOptions, 'fullEvery' | 'replica' | 'memory' | 'helperScript' | 'usersPerChunk'>,
): IncrementalSuggestedUsers {
  const job = new SuggestedUsersJob(opts);
  return new IncrementalSuggestedUsers({
    ...opts,
    runFull: (facts, writeBatch) => job.fullRefresh(facts, writeBatch),
  });
}

/** The built-in `suggested-users` job, made with the public `defineJob` like any job. */
export function suggestedUsersJob(config: Pick<Config, 'suggestedUsers'>): RefreshJob {
  const { intervalSec, priority } = JOB_DEFAULTS['suggested-users'];
  // The incremental mode's state (follow graph, ranking buffers) outlives each run's job object.
  const memory = new IncrementalMemory();
  return defineJob({
    id: 'suggested-users',
    schedule: { intervalSec },
    priority,
    readsTables: ['post_events', 'user_relationships', USER_ACTIVITY.table, ROLLUPS.hour.table],
    run: (ctx) => {
      const opts: SuggestedUsersOptions = {
        clickhouse: ctx.clickhouse,
        cache: ctx.cache,
        keyPrefix: ctx.keyPrefix,
        ...config.suggestedUsers,
        ttlSec: ctx.settings.ttlSec,
      };
      if (config.suggestedUsers.mode === 'full') return new SuggestedUsersJob(opts).run(ctx);
      return incrementalSuggestedUsers({ ...opts, fullEvery: config.suggestedUsers.fullEvery, memory }).run(
        ctx,
      );
    },
  });
}
