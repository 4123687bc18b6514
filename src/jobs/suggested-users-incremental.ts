import { hostname } from 'node:os';
import type { ClickHouseClient } from '@clickhouse/client';
import { GuardMismatchError, type CacheWriter } from '../cache/writer.js';
import { keys } from '../cache/keys.js';
import { streamLines } from '../clickhouse/result-stream.js';
import type { RunFacts, RunResult } from '../runner/job.js';
import { INSERT_COVERED_SQL, readChangeLogPosition, REFRESH_PLAN_SQL } from './suggested-users-changes.js';
import {
  configFingerprint,
  decideRefresh,
  MAX_STATE_AGE_SEC,
  readLatestRun,
  writeRun,
  type RefreshDecision,
  type RunStateRow,
} from './suggested-users-state.js';

/**
 * suggested-users with `SUGGESTED_USERS_MODE=incremental`: recompute only the active users whose inputs
 * changed since the last successful run (suggested-users-changes.ts says which), extend the TTL of every
 * other active user's key, and fall back to a full refresh every `fullEvery` runs and whenever the state
 * is doubtful (suggested-users-state.ts).
 *
 * One run:
 * 1. read the change log's watermark W (before any input), the newest state row, and decide;
 * 2. record a `started` row and the run's covered set (the active users of the window), before writing
 *    anything: every covered user gets a fresh value or a verified extension in this run;
 * 3. incremental: stream the plan (each covered user, recompute or not); extend the others' TTLs in
 *    fenced batches guarded by the Redis marker (which must still name the previous run), recompute
 *    the rest plus any whose key had vanished; full: the full refresh;
 * 4. record a `finished` row with W, then set the marker to this run's generation.
 * A failure anywhere leaves the `started` row last, so the next run is a full one.
 */

/** What the incremental mode needs of suggested-users (given by suggested-users.ts, no import cycle). */
export interface IncrementalOptions {
  clickhouse: ClickHouseClient;
  cache: CacheWriter;
  keyPrefix: string;
  perUser: number;
  activeDays: number;
  maxFollowees: number;
  batchSize: number;
  ttlSec: number;
  /** `SUGGESTED_USERS_FULL_EVERY`. */
  fullEvery: number;
  /** The full refresh (resolves to its run result, whose `items` are the users written). */
  runFull: (ctx: RunFacts) => Promise<RunResult>;
  /** Computes and writes the suggestions of exactly these users (decimal ids); `tag` names the query. */
  writeUsers: (ctx: RunFacts, userIds: readonly string[], tag: string) => Promise<{ written: number }>;
  /** Identity of this process in the state (default host:pid). */
  replica?: string;
}

/** Keys per TTL-extension call (the writer pipelines them further). */
const EXTEND_CHUNK = 4000;

/** The Redis key holding the generation of the last successful run (see step 4). */
export function generationMarkerKey(keyPrefix: string): string {
  return `${keyPrefix}:job:suggested-users:generation`;
}

export class IncrementalSuggestedUsers {
  readonly #o: IncrementalOptions;
  readonly #replica: string;

  constructor(opts: IncrementalOptions) {
    this.#o = opts;
    this.#replica = opts.replica ?? `${hostname()}:${process.pid}`;
  }

  async run(ctx: RunFacts): Promise<RunResult> {
    const o = this.#o;
    const nowSec = Math.floor(ctx.startedAt.getTime() / 1000);
    const since = nowSec - o.activeDays * 86_400;
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
      canExtend: typeof o.cache.extendTtl === 'function',
    });
    const generation = `${ctx.runId}:${ctx.attempt}`;
    const seq = (latest?.seq ?? 0) + 1;
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
      query_params: { prefix: o.keyPrefix, generation, since, now: nowSec },
      abort_signal: ctx.signal,
    });

    let counts: { recomputed: number; extended: number; missing: number; covered: number } | undefined;
    if (decision.mode === 'incremental') {
      try {
        counts = await this.#incremental(ctx, decision.previous, generation, log.watermark);
      } catch (err) {
        if (!(err instanceof GuardMismatchError)) throw err;
        ctx.log.warn({ err }, 'suggested-users: cache marker does not match the state; full refresh');
        decision = { mode: 'full', reason: 'cache_generation_mismatch' };
      }
    }
    let fullContext: Record<string, unknown> = {};
    if (decision.mode === 'full') {
      const result = await o.runFull(ctx);
      fullContext = result.context ?? {};
      counts = { recomputed: result.items, extended: 0, missing: 0, covered: result.items };
    }
    if (counts === undefined) throw new Error('suggested-users: no refresh ran');

    const incrementalRuns = decision.mode === 'full' ? 0 : decision.previous.incrementalRuns + 1;
    await writeRun(
      o.clickhouse,
      o.keyPrefix,
      { ...row('finished', decision.mode, { incrementalRuns }), seq: seq + 1 },
      ctx.signal,
    );
    await o.cache.write(
      [{ key: generationMarkerKey(o.keyPrefix), value: generation }],
      MAX_STATE_AGE_SEC,
      ctx.signal,
    );
    const context = {
      ...fullContext,
      mode: decision.mode,
      ...(decision.mode === 'full' ? { full_reason: decision.reason } : {}),
      active_users: counts.covered,
      users_recomputed: counts.recomputed,
      users_extended: counts.extended,
      ...(decision.mode === 'incremental' ? { users_key_missing: counts.missing } : {}),
      change_log_watermark: log.watermark,
    };
    ctx.log.info(context, 'suggested-users: refreshed');
    return { items: counts.recomputed + counts.extended, context };
  }

  async #incremental(
    ctx: RunFacts,
    previous: RunStateRow,
    generation: string,
    watermark: string,
  ): Promise<{ recomputed: number; extended: number; missing: number; covered: number }> {
    const o = this.#o;
    const extendTtl = o.cache.extendTtl?.bind(o.cache);
    if (extendTtl === undefined) throw new Error('suggested-users: the cache writer cannot extend TTLs');
    const guard = { key: generationMarkerKey(o.keyPrefix), value: previous.generation };
    const plan = await o.clickhouse.query({
      query: REFRESH_PLAN_SQL,
      query_params: {
        prefix: o.keyPrefix,
        generation,
        previous: previous.generation,
        from: previous.watermark,
        to: watermark,
      },
      format: 'TabSeparatedRaw',
      abort_signal: ctx.signal,
      query_id: `cache-refresher:${ctx.jobId}:${ctx.runId}:${ctx.attempt}:plan`,
    });
    const recompute: string[] = [];
    let pending: string[] = [];
    let extended = 0;
    let missing = 0;
    let covered = 0;
    const flush = async (): Promise<void> => {
      if (pending.length === 0) return;
      const ids = pending;
      pending = [];
      const result = await extendTtl(
        ids.map((id) => keys.suggestedUsers(o.keyPrefix, id)),
        o.ttlSec,
        ctx.signal,
        guard,
      );
      // A key that vanished (evicted, expired, Redis restarted) cannot be extended: compute it.
      const gone = new Set(result.missing);
      ids.forEach((id, i) => (gone.has(i) ? recompute.push(id) : extended++));
      missing += gone.size;
    };
    for await (const lines of streamLines(plan)) {
      for (const line of lines) {
        const tab = line.indexOf('\t');
        if (tab <= 0) continue;
        covered++;
        const id = line.slice(0, tab);
        if (line.slice(tab + 1) === '1') recompute.push(id);
        else pending.push(id);
        if (pending.length >= EXTEND_CHUNK) await flush();
      }
    }
    await flush();
    let recomputed = 0;
    for (let i = 0; i < recompute.length; i += o.batchSize) {
      const slice = recompute.slice(i, i + o.batchSize);
      recomputed += (await o.writeUsers(ctx, slice, `i${i / o.batchSize}`)).written;
    }
    return { recomputed, extended, missing, covered };
  }
}
