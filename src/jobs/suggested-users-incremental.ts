import { hostname } from 'node:os';
import { GuardMismatchError, type CacheEntry } from '../cache/writer.js';
import { keys } from '../cache/keys.js';
import { readJsonEachRow, streamLines } from '../clickhouse/result-stream.js';
import type { RunFacts, RunResult } from '../runner/job.js';
import {
  bufferDepth,
  COMPUTED,
  COVERED_COUNT_SQL,
  deltaSql,
  fillBuffersSql,
  INSERT_COVERED_SQL,
  MATERIALIZED_CTE_SQL,
  RECOMPUTE_COUNT_SQL,
  RECOMPUTE_SHARE_SQL,
  RENDER_PLAN_SQL,
  renderBuffersSql,
  UNCHANGED,
} from './suggested-users-buffer.js';
import { isMemoryLimitExceeded } from '../clickhouse/memory-limit.js';
import { readChangeLogPosition } from './suggested-users-changes.js';
import { claimMarker, generationMarkerKey, runningMarker, settleMarker } from './suggested-users-marker.js';
import { LISTED_USERS_SQL } from './suggestions-sql.js';
import type {
  BatchWriter,
  SubsetWritten,
  SuggestedUsersOptions,
  UserSubset,
} from './suggested-users-types.js';
import { streamUserValues } from './user-values.js';
import { OneInFlight } from './one-in-flight.js';
import {
  configFingerprint,
  decideRefresh,
  readLatestRun,
  writeRun,
  type RefreshDecision,
  type RunStateRow,
} from './suggested-users-state.js';

/**
 * suggested-users with `SUGGESTED_USERS_MODE=incremental`: update only the active users whose inputs
 * changed since the last successful run, from the changed follows and each user's ranking buffer
 * (suggested-users-buffer.ts), recompute from scratch only those the buffer cannot answer, extend the
 * TTL of every other active user's key, and fall back to a full refresh every `fullEvery` runs and
 * whenever the state is doubtful (suggested-users-state.ts).
 *
 * One run:
 * 1. read the change log's watermark W (before any input), the newest state row, and decide; claim
 *    the Redis marker (suggested-users-marker.ts): an incremental run only if it still names the
 *    previous run (else the run is a full refresh);
 * 2. record a `started` row and the run's covered set (the active users of the window), before writing
 *    anything: every covered user gets a fresh value or a verified extension in this run;
 * 3. incremental: the delta step (one INSERT … SELECT in ClickHouse) stores new buffers for the users
 *    with touched candidates; users without a usable buffer are recomputed into buffers in batches;
 *    then the plan streams each covered user's action: write the new head, or extend the TTL in fenced
 *    batches guarded by the marker (which must still hold this run's claim); a key that vanished is
 *    computed again. Full: the full refresh, which also stores every covered user's buffer;
 * 4. record a `finished` row with W, then hand the marker to this run's generation if it still holds
 *    the claim (else this run sets it to name nobody: another writer claimed it meanwhile).
 * A failure anywhere leaves the `started` row last, so the next run is a full one.
 */

/** What the incremental mode needs of suggested-users (given by suggested-users.ts, no import cycle). */
export interface IncrementalOptions extends Omit<SuggestedUsersOptions, 'parallelism'> {
  /** `SUGGESTED_USERS_FULL_EVERY`. */
  fullEvery: number;
  /**
   * The full refresh, with each batch handed to `writeBatch` when given (resolves to its run result,
   * whose `items` are the users written).
   */
  runFull: (ctx: RunFacts, writeBatch?: BatchWriter) => Promise<RunResult>;
  /** Identity of this process in the state (default host:pid). */
  replica?: string;
  /** Users per delta-step query (default DELTA_BATCHES × batchSize). */
  deltaShareUsers?: number;
}

/** Keys per TTL-extension call (the writer pipelines them further). */
const EXTEND_CHUNK = 4000;
/** Values per Redis write call. */
const WRITE_CHUNK = 2000;
/**
 * Users per recompute of vanished keys: their ids travel as a query parameter, which ClickHouse's HTTP
 * interface limits (128 KiB per field by default): 5 000 ids of up to 20 digits fit.
 */
const LISTED_CHUNK = 5000;
/**
 * The delta step takes up to this many batches (SUGGESTED_USERS_BATCH_SIZE) of users per query: its
 * ClickHouse memory is the follow graph plus 6–9 KB per user of the query (measured: 0.7 GiB for
 * 100 000 users and 1.8 M follows; 3.7–3.9 GiB for 333 000 users and 18 M follows), and each query reads
 * the whole follow graph, so its shares are larger than a full refresh's batches (the default 20 000
 * gives 400 000 users per query). A share that runs out of ClickHouse memory halves the users per
 * query for this process's later runs (see #outOfMemory).
 */
const DELTA_BATCHES = 20;

/**
 * A delta-step query ran out of ClickHouse memory (MEMORY_LIMIT_EXCEEDED) with `shareUsers` users per
 * query. The run carries on as a full refresh, whose batches read only their own users' follows.
 */
class DeltaOutOfMemoryError extends Error {
  override readonly name = 'DeltaOutOfMemoryError';
  constructor(
    readonly shareUsers: number,
    options: { cause: unknown },
  ) {
    super(`a delta-step query of up to ${shareUsers} users ran out of ClickHouse memory`, options);
  }
}

export class IncrementalSuggestedUsers {
  readonly #o: IncrementalOptions;
  readonly #replica: string;
  #materializedCte: Promise<boolean> | undefined;
  /** Users per delta-step query now: the configured share, halved after each one out of memory. */
  #shareUsers: number;
  /** The smallest share: one full-refresh batch (or the configured share, if smaller). */
  readonly #minShareUsers: number;
  /** Runs left that skip the delta step: the smallest share ran out of memory too. */
  #deltaPausedRuns = 0;

  constructor(opts: IncrementalOptions) {
    this.#o = opts;
    this.#replica = opts.replica ?? `${hostname()}:${process.pid}`;
    this.#shareUsers = Math.max(1, opts.deltaShareUsers ?? DELTA_BATCHES * Math.max(1, opts.batchSize));
    this.#minShareUsers = Math.min(this.#shareUsers, Math.max(1, opts.batchSize));
  }

  async run(ctx: RunFacts): Promise<RunResult> {
    const o = this.#o;
    const nowSec = Math.floor(ctx.startedAt.getTime() / 1000);
    const window = { now: nowSec, since: nowSec - o.activeDays * 86_400 };
    const log = await readChangeLogPosition(o.clickhouse, ctx.signal);
    const latest = await readLatestRun(o.clickhouse, o.keyPrefix, ctx.signal);
    const fingerprint = configFingerprint(o);
    let decision: RefreshDecision = decideRefresh({
      latest,
      log,
      fingerprint,
      replica: this.#replica,
      nowSec,
      fullEvery: o.fullEvery,
      canExtend: typeof o.cache.extendTtl === 'function' && typeof o.cache.compareAndSet === 'function',
    });
    if (decision.mode === 'incremental' && this.#deltaPausedRuns > 0) {
      this.#deltaPausedRuns--;
      decision = { mode: 'full', reason: 'delta_out_of_memory' };
    }
    const generation = `${ctx.runId}:${ctx.attempt}`;
    // Before anything is written: the marker must still name the previous run, or someone else wrote
    // suggestions since (see suggested-users-marker.ts) and only a full refresh is sure.
    const claimed = await claimMarker(
      o.cache,
      o.keyPrefix,
      { previous: decision.mode === 'incremental' ? decision.previous.generation : undefined, generation },
      ctx.signal,
    );
    if (!claimed) {
      ctx.log.warn('suggested-users: cache marker does not name the last run; full refresh');
      decision = { mode: 'full', reason: 'cache_generation_mismatch' };
      await claimMarker(o.cache, o.keyPrefix, { previous: undefined, generation }, ctx.signal);
    }
    const seq = (latest?.seq ?? 0) + 1;
    const version = String(seq);
    const row = (phase: RunStateRow['phase'], mode: RunStateRow['mode'], extra: Partial<RunStateRow>) => ({
      seq,
      generation,
      phase,
      mode,
      now: nowSec,
      watermark: log.watermark,
      logUuid: log.uuid,
      fingerprint,
      replica: this.#replica,
      incrementalRuns: 0,
      reason: decision.mode === 'full' ? decision.reason : '',
      ...extra,
    });
    await writeRun(o.clickhouse, o.keyPrefix, row('started', decision.mode, {}), ctx.signal);
    await o.clickhouse.command({
      query: INSERT_COVERED_SQL,
      query_params: { prefix: o.keyPrefix, generation, ...window },
      abort_signal: ctx.signal,
    });

    let counts: Counts | undefined;
    if (decision.mode === 'incremental') {
      try {
        counts = await this.#incremental(ctx, {
          previous: decision.previous,
          generation,
          version,
          window,
          log,
        });
      } catch (err) {
        if (err instanceof GuardMismatchError) {
          ctx.log.warn({ err }, 'suggested-users: cache marker does not match the state; full refresh');
          decision = { mode: 'full', reason: 'cache_generation_mismatch' };
        } else if (err instanceof DeltaOutOfMemoryError) {
          this.#outOfMemory(ctx, err);
          decision = { mode: 'full', reason: 'delta_out_of_memory' };
        } else {
          throw err;
        }
        // The full refresh replaces whatever the attempt wrote (buffers of this version included).
        await claimMarker(o.cache, o.keyPrefix, { previous: undefined, generation }, ctx.signal);
      }
    }
    let fullContext: Record<string, unknown> = {};
    if (decision.mode === 'full') {
      // Buffers only help a next incremental run; without a usable change log (on a ClickHouse
      // cluster it is a Distributed table) every run is full, so write values directly.
      const reason = decision.reason;
      const buffered = reason !== 'change_log_missing' && reason !== 'change_log_not_plain_mergetree';
      const result = await o.runFull(
        ctx,
        buffered ? (facts, w, subset) => this.#fillAndWrite(facts, w, subset, version) : undefined,
      );
      fullContext = result.context ?? {};
      counts = { recomputed: result.items, updated: 0, extended: 0, missing: 0, covered: result.items };
    }
    if (counts === undefined) throw new Error('suggested-users: no refresh ran');

    const incrementalRuns = decision.mode === 'full' ? 0 : decision.previous.incrementalRuns + 1;
    await writeRun(
      o.clickhouse,
      o.keyPrefix,
      { ...row('finished', decision.mode, { incrementalRuns }), seq: seq + 1 },
      ctx.signal,
    );
    if (!(await settleMarker(o.cache, o.keyPrefix, generation, ctx.signal))) {
      // Another writer (a one-off run, say) claimed the marker during this run; settleMarker set it
      // to name nobody, so the next run of either is a full refresh.
      ctx.log.warn(
        'suggested-users: another writer changed the cache marker during the run; next run is full',
      );
    }
    const context = {
      ...fullContext,
      mode: decision.mode,
      ...(decision.mode === 'full' ? { full_reason: decision.reason } : {}),
      active_users: counts.covered,
      users_recomputed: counts.recomputed,
      ...(decision.mode === 'incremental' ? { users_updated: counts.updated } : {}),
      users_extended: counts.extended,
      ...(decision.mode === 'incremental' ? { users_key_missing: counts.missing } : {}),
      change_log_watermark: log.watermark,
    };
    ctx.log.info(context, 'suggested-users: refreshed');
    return { items: counts.recomputed + counts.updated + counts.extended, context };
  }

  /** Parameters every buffer query takes. */
  #bufferParams(version: string): Record<string, unknown> {
    const o = this.#o;
    return {
      prefix: o.keyPrefix,
      version,
      max_followees: o.maxFollowees,
      per_user: o.perUser,
      buffer_size: bufferDepth(o.perUser),
    };
  }

  #queryId(ctx: RunFacts, label: string): string {
    return `cache-refresher:${ctx.jobId}:${ctx.runId}:${ctx.attempt}:${label}`;
  }

  /** A full refresh's batch: its users' buffers computed and stored, then their values written. */
  async #fillAndWrite(
    ctx: RunFacts,
    window: { now: number; since: number },
    subset: UserSubset,
    version: string,
  ): Promise<SubsetWritten> {
    const o = this.#o;
    const params = { ...subset.params, ...window, ...this.#bufferParams(version) };
    await o.clickhouse.command({
      query: fillBuffersSql(subset.sql),
      query_params: params,
      abort_signal: ctx.signal,
      query_id: this.#queryId(ctx, `${subset.label}-fill`),
    });
    const result = await o.clickhouse.query({
      query: renderBuffersSql(subset.sql),
      query_params: params,
      format: 'TabSeparatedRaw',
      abort_signal: ctx.signal,
      query_id: this.#queryId(ctx, subset.label),
    });
    return streamUserValues(result, {
      keyOf: (userId) => keys.suggestedUsers(o.keyPrefix, userId),
      cache: o.cache,
      ttlSec: o.ttlSec,
      signal: ctx.signal,
    });
  }

  async #incremental(
    ctx: RunFacts,
    run: {
      previous: RunStateRow;
      generation: string;
      version: string;
      window: { now: number; since: number };
      log: { watermark: string };
    },
  ): Promise<Counts> {
    const o = this.#o;
    const extendTtl = o.cache.extendTtl?.bind(o.cache);
    if (extendTtl === undefined) throw new Error('suggested-users: the cache writer cannot extend TTLs');
    const guard = { key: generationMarkerKey(o.keyPrefix), value: runningMarker(run.generation) };
    const params = {
      ...this.#bufferParams(run.version),
      ...run.window,
      generation: run.generation,
      previous: run.previous.generation,
      from: run.previous.watermark,
      to: run.log.watermark,
    };

    const materialized = (await this.#hasMaterializedCte(ctx)) ? 'MATERIALIZED' : '';
    if (run.previous.watermark !== run.log.watermark) {
      // The delta step, in shares of users: new buffers for every user with a touched candidate, and
      // users without a usable buffer (newly active, or not answered by it) computed from scratch.
      const covered = await this.#count(ctx, COVERED_COUNT_SQL, params);
      const perShare = this.#shareUsers;
      const shares = Math.max(1, Math.ceil(covered / perShare));
      for (let part = 0; part < shares; part++) {
        try {
          await o.clickhouse.command({
            query: deltaSql(materialized),
            query_params: { ...params, parts: shares, part },
            abort_signal: ctx.signal,
            query_id: this.#queryId(ctx, `d${part}`),
          });
        } catch (err) {
          if (isMemoryLimitExceeded(err)) throw new DeltaOutOfMemoryError(perShare, { cause: err });
          throw err;
        }
      }
    } else {
      // No block since the last run: nothing is touched; only users without a usable buffer (newly
      // active) are computed, in batches, each reading the follow graph once.
      const toCompute = await this.#count(ctx, RECOMPUTE_COUNT_SQL, params);
      const parts = Math.ceil(toCompute / Math.max(1, o.batchSize));
      for (let part = 0; part < parts; part++) {
        await o.clickhouse.command({
          query: fillBuffersSql(RECOMPUTE_SHARE_SQL, { from: 'graph', materialized }),
          query_params: { ...params, parts, part },
          abort_signal: ctx.signal,
          query_id: this.#queryId(ctx, `r${part}-fill`),
        });
      }
    }

    // 3. Each covered user's action: write the new head, or extend the TTL.
    const plan = await o.clickhouse.query({
      query: RENDER_PLAN_SQL,
      query_params: params,
      format: 'TabSeparatedRaw',
      abort_signal: ctx.signal,
      query_id: this.#queryId(ctx, 'plan'),
    });
    const counts: Counts = { recomputed: 0, updated: 0, extended: 0, missing: 0, covered: 0 };
    const vanished: string[] = [];
    let pending: string[] = [];
    let values: CacheEntry[] = [];
    // One Redis call in flight while the plan stream is read on: ClickHouse renders and sends the next
    // lines while Redis executes the last chunk, instead of each waiting for the other.
    const redis = new OneInFlight();
    const extend = async (): Promise<void> => {
      if (pending.length === 0) return;
      const ids = pending;
      pending = [];
      await redis.submit(async () => {
        const result = await extendTtl(
          ids.map((id) => keys.suggestedUsers(o.keyPrefix, id)),
          o.ttlSec,
          ctx.signal,
          guard,
        );
        // A key that vanished (evicted, expired, Redis restarted) cannot be extended: compute it.
        const gone = new Set(result.missing);
        ids.forEach((id, i) => (gone.has(i) ? vanished.push(id) : counts.extended++));
        counts.missing += gone.size;
      });
    };
    const write = async (): Promise<void> => {
      if (values.length === 0) return;
      const entries = values;
      values = [];
      await redis.submit(() => o.cache.write(entries, o.ttlSec, ctx.signal));
    };
    for await (const lines of streamLines(plan)) {
      for (const line of lines) {
        const [id, changed, value] = line.split('\t');
        if (id === undefined || id === '' || changed === undefined) continue;
        counts.covered++;
        if (Number(changed) === UNCHANGED) {
          pending.push(id);
          if (pending.length >= EXTEND_CHUNK) await extend();
          continue;
        }
        if (Number(changed) === COMPUTED) counts.recomputed++;
        else counts.updated++;
        values.push({ key: keys.suggestedUsers(o.keyPrefix, id), value: value ?? '[]' });
        if (values.length >= WRITE_CHUNK) await write();
      }
    }
    await write();
    await extend();
    await redis.drain();
    // A vanished key's user is computed again into a buffer of this run, and written from it. Not
    // straight into Redis: that value could include follows after this run's watermark, which the next
    // run applies to the buffer and compares heads with the buffer, not with Redis; a change undone
    // before then would leave such a value stale, and extended.
    for (let i = 0; i < vanished.length; i += LISTED_CHUNK) {
      const subset = {
        sql: LISTED_USERS_SQL,
        params: { users: vanished.slice(i, i + LISTED_CHUNK) },
        label: `k${i / LISTED_CHUNK}`,
      };
      counts.recomputed += (await this.#fillAndWrite(ctx, run.window, subset, run.version)).written;
    }
    return counts;
  }

  /**
   * After a delta-step query ran out of ClickHouse memory: later runs of this process take half as many
   * users per query (memory is the follow graph plus a part per user), down to one full-refresh batch;
   * when even that ran out, the next `fullEvery - 1` runs skip the delta step (full refreshes, which
   * read only their batch's follows), and the one after tries again.
   */
  #outOfMemory(ctx: RunFacts, err: DeltaOutOfMemoryError): void {
    const before = err.shareUsers;
    if (before > this.#minShareUsers) {
      this.#shareUsers = Math.max(this.#minShareUsers, Math.floor(before / 2));
      ctx.log.warn(
        { err, share_users_before: before, share_users: this.#shareUsers },
        'suggested-users: delta step out of ClickHouse memory; full refresh now, smaller delta queries from the next run',
      );
      return;
    }
    this.#deltaPausedRuns = Math.max(0, this.#o.fullEvery - 1);
    ctx.log.warn(
      { err, share_users: before, paused_runs: this.#deltaPausedRuns },
      'suggested-users: delta step out of ClickHouse memory at its smallest share; full refreshes for a cycle (give ClickHouse more memory, or lower SUGGESTED_USERS_BATCH_SIZE)',
    );
  }

  /** The number in column `n` of a one-row query. */
  async #count(ctx: RunFacts, query: string, params: Record<string, unknown>): Promise<number> {
    const [row] = await readJsonEachRow<{ n: string | number }>(
      await this.#o.clickhouse.query({
        query,
        query_params: params,
        format: 'JSONEachRow',
        abort_signal: ctx.signal,
      }),
    );
    return Number(row?.n ?? 0);
  }

  /**
   * Whether the server has materialized CTEs (see MATERIALIZED_CTE_SQL), asked once per instance:
   * a server's settings do not change under a running process often enough to ask every run.
   */
  async #hasMaterializedCte(ctx: RunFacts): Promise<boolean> {
    this.#materializedCte ??= this.#count(ctx, MATERIALIZED_CTE_SQL, {}).then((n) => n > 0);
    try {
      return await this.#materializedCte;
    } catch (err) {
      // Not known yet: ask again next run.
      this.#materializedCte = undefined;
      throw err;
    }
  }
}

/** Users per outcome of one run. */
interface Counts {
  /** Computed from scratch (a full refresh, new users, unusable buffers, vanished keys). */
  recomputed: number;
  /** Updated from the changed follows and their buffer (delta step), value written. */
  updated: number;
  /** TTL extended only. */
  extended: number;
  /** Keys that had vanished from Redis (counted in `recomputed` too). */
  missing: number;
  covered: number;
}
