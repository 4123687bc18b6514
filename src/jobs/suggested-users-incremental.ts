import { hostname } from 'node:os';
import { GuardMismatchError, yieldToLoop, type BytesEntry, type CacheEntry } from '../cache/writer.js';
import { keys } from '../cache/keys.js';
import { streamLines } from '../clickhouse/result-stream.js';
import type { RunFacts, RunResult } from '../runner/job.js';
import { BringForwardHelper, defaultHelperScript } from './bring-forward-helper.js';
import {
  chunkCount,
  chunkDone,
  chunkRange,
  claimChunk,
  forwardChunk,
  forwardWork,
  SAME_HEAD,
  stopClaims,
  RECOMPUTED,
} from './bring-forward-work.js';
import { UserIds, type FollowGraph } from './follow-graph.js';
import { readChangeLogPosition } from './suggested-users-changes.js';
import { claimMarker, generationMarkerKey, runningMarker, settleMarker } from './suggested-users-marker.js';
import {
  bufferBatchSql,
  loadFollowGraph,
  readActiveUsers,
  readLoggedRows,
  type RelationshipRow,
} from './suggested-users-reads.js';
import {
  bufferDepth,
  loggedPairs,
  RankingScratch,
  RankingBuffers,
  type RankingBuffer,
} from './suggested-users-ranking.js';
import type {
  BatchWriter,
  SubsetWritten,
  SuggestedUsersOptions,
  UserSubset,
} from './suggested-users-types.js';
import { parseUserValueRow } from './user-values.js';
import { SuggestionListBytes } from './suggestion-list-bytes.js';
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
 * changed since the last successful run, from the follow rows logged since then, in this process;
 * extend the TTL of every other active user's key; and fall back to a full refresh every `fullEvery`
 * runs and whenever the state is doubtful (suggested-users-state.ts).
 *
 * The state between runs is in this process's memory: the follow graph (follow-graph.ts) and each
 * active user's ranking buffer (suggested-users-ranking.ts), both as of the last successful run. A
 * full refresh (every first run of a process, so after any restart) computes the buffers in
 * ClickHouse, writes their heads, and then reads the whole follow graph. An incremental run reads only
 * the change log's new rows and the window's active users: it applies the rows to the graph, brings
 * forward the buffers of the users those rows can reach, ranks new users from scratch, writes the
 * values whose head changed and extends the others' TTLs.
 *
 * One run:
 * 1. read the change log's watermark W (before any input), the newest state row, and decide (an
 *    incremental run also needs this process to hold the state of that very run); claim the Redis
 *    marker (suggested-users-marker.ts): an incremental run only if it still names the previous run
 *    (else the run is a full refresh);
 * 2. record a `started` row;
 * 3. incremental: as above, the writes and TTL extensions fenced and guarded by the marker (which must
 *    still hold this run's claim); a key that vanished is written from its buffer. Full: the full
 *    refresh, keeping every user's buffer, then the graph;
 * 4. record a `finished` row with W, then hand the marker to this run's generation if it still holds
 *    the claim (else this run sets it to name nobody: another writer claimed it meanwhile).
 * A failure anywhere leaves the `started` row last, so the next run is a full one; the state in memory
 * is dropped at the start of every run and kept only when the run succeeds.
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
  /**
   * The helper thread's built entry (bring-forward-helper.ts), started once per `memory`: default
   * defaultHelperScript() (none on one core, or when run from TypeScript sources); null for none.
   */
  helperScript?: URL | null;
  /** Users per chunk of bringing forward (default USERS_PER_CHUNK; tests use a few). */
  usersPerChunk?: number;
  /**
   * Where the state is kept between runs: give every run of one job in one process the same (the
   * job's runs may each build their own IncrementalSuggestedUsers). Default: this instance's own.
   */
  memory?: IncrementalMemory;
}

/** The incremental mode's state between runs, held by the job that runs it (see MemoryState). */
export class IncrementalMemory {
  /** The last successful run's state; undefined before one, and while a run is under way. */
  state: MemoryState | undefined;
  /** The thread that brings part of each run's users forward, if any (it outlives runs, as the state). */
  helper: BringForwardHelper | undefined;
}

/** Keys per TTL-extension call (the writer pipelines them further). */
const EXTEND_CHUNK = 4000;
/** Values per Redis write call. */
const WRITE_CHUNK = 2000;
/**
 * Users per chunk of bringing forward (bring-forward-work.ts): a few milliseconds of work, between two
 * turns of the event loop; small enough that the two threads finish close together.
 */
const USERS_PER_CHUNK = 1000;

/**
 * The change log holds a row with the same `updated_at` as its pair's newest row, but another status.
 * ReplacingMergeTree keeps the row inserted last, which this process cannot tell (the graph may
 * already hold rows the log gives again): the run is a full refresh.
 */
class ChangeLogTieError extends Error {
  override readonly name = 'ChangeLogTieError';
}

/** What this process keeps between runs (see the module comment). */
interface MemoryState {
  /** The run that left it (`runId:attempt`), as its state row names it. */
  generation: string;
  graph: FollowGraph;
  /** The ranking buffer of each user that run covered (an active user). */
  buffers: RankingBuffers;
  /** That run's active users, in id order (an incremental run's; a full run does not list them). */
  active?: { ids: string[]; users: number[] };
  /** Renders values as bytes, with the users' id digits cached (made by the first incremental run). */
  lists?: SuggestionListBytes;
  /**
   * Whether every buffer is exact for `graph` (after an incremental run: it applied the rows a full
   * refresh's buffers may have missed and recounted what they touched), so that the next run may bring
   * members forward by deltas (LoggedPairs.exact). False after a full refresh.
   */
  exact: boolean;
}

export class IncrementalSuggestedUsers {
  readonly #o: IncrementalOptions;
  readonly #replica: string;
  readonly #scratch = new RankingScratch();
  readonly #memory: IncrementalMemory;

  constructor(opts: IncrementalOptions) {
    this.#o = opts;
    this.#replica = opts.replica ?? `${hostname()}:${process.pid}`;
    this.#memory = opts.memory ?? new IncrementalMemory();
    const script = opts.helperScript === undefined ? defaultHelperScript() : opts.helperScript;
    if (script !== null && script !== undefined) this.#memory.helper ??= new BringForwardHelper(script);
  }

  async run(ctx: RunFacts): Promise<RunResult> {
    const o = this.#o;
    // Taken, not read: a run that fails part-way has changed it; only a successful run puts it back.
    const memory = this.#memory.state;
    this.#memory.state = undefined;
    const nowSec = Math.floor(ctx.startedAt.getTime() / 1000);
    const window = { now: nowSec, since: nowSec - o.activeDays * 86_400 };
    // The window's active users, read while the run's bookkeeping goes on (about a tenth of an
    // incremental run), when the state is here to be brought forward; a full refresh ignores them.
    const activeRead =
      memory && settled(readActiveUsers(o.clickhouse, window, ctx.signal, this.#queryId(ctx, 'active')));
    const [log, latest] = await Promise.all([
      readChangeLogPosition(o.clickhouse, ctx.signal),
      readLatestRun(o.clickhouse, o.keyPrefix, ctx.signal),
    ]);
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
    if (decision.mode === 'incremental' && memory?.generation !== decision.previous.generation) {
      decision = { mode: 'full', reason: 'state_not_in_memory' };
    }
    // The logged rows, read while the marker is claimed and the `started` row written (they change
    // nothing; a run that turns full ignores them).
    const blocks =
      decision.mode === 'incremental' ? { from: decision.previous.watermark, to: log.watermark } : undefined;
    const rowsRead =
      blocks === undefined
        ? undefined
        : settled(
            blocks.from === blocks.to
              ? Promise.resolve([])
              : readLoggedRows(o.clickhouse, blocks, ctx.signal, this.#queryId(ctx, 'log')),
          );
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

    let counts: Counts | undefined;
    let next: MemoryState | undefined;
    if (
      decision.mode === 'incremental' &&
      memory !== undefined &&
      activeRead !== undefined &&
      rowsRead !== undefined
    ) {
      try {
        counts = await this.#incremental(ctx, memory, { generation, activeRead, rowsRead });
        next = { ...memory, generation, exact: true };
      } catch (err) {
        if (err instanceof GuardMismatchError) {
          ctx.log.warn({ err }, 'suggested-users: cache marker does not match the state; full refresh');
          decision = { mode: 'full', reason: 'cache_generation_mismatch' };
        } else if (err instanceof ChangeLogTieError) {
          ctx.log.warn({ err }, 'suggested-users: a change-log row ties with its pair; full refresh');
          decision = { mode: 'full', reason: 'change_log_tie' };
        } else {
          throw err;
        }
        await claimMarker(o.cache, o.keyPrefix, { previous: undefined, generation }, ctx.signal);
      }
    }
    let fullContext: Record<string, unknown> = {};
    if (decision.mode === 'full') {
      // The state only helps a next incremental run; without a usable change log (on a ClickHouse
      // cluster it is a Distributed table) every run is full, so write values directly.
      const reason = decision.reason;
      const buffered = reason !== 'change_log_missing' && reason !== 'change_log_not_plain_mergetree';
      const ids = new UserIds();
      const buffers = new RankingBuffers(bufferDepth(o.perUser));
      const result = await o.runFull(
        ctx,
        buffered ? (facts, w, subset) => this.#rankAndWrite(facts, w, subset, ids, buffers) : undefined,
      );
      if (buffered) {
        // Read after the buffers: a graph at least as new as theirs (see suggested-users-ranking.ts).
        const graph = await loadFollowGraph(o.clickhouse, ids, ctx.signal, this.#queryId(ctx, 'graph'));
        next = { generation, graph, buffers, exact: false };
      }
      fullContext = result.context ?? {};
      counts = {
        recomputed: result.items,
        updated: 0,
        extended: 0,
        missing: 0,
        covered: result.items,
        byHelper: 0,
      };
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
    this.#memory.state = next;
    // A full refresh's graph, replicated in the helper thread for the next runs (in the background).
    if (decision.mode === 'full' && next !== undefined) this.#memory.helper?.load(next.graph);
    const context = {
      ...fullContext,
      mode: decision.mode,
      ...(decision.mode === 'full' ? { full_reason: decision.reason } : {}),
      active_users: counts.covered,
      users_recomputed: counts.recomputed,
      ...(decision.mode === 'incremental' ? { users_updated: counts.updated } : {}),
      users_extended: counts.extended,
      ...(decision.mode === 'incremental' ? { users_key_missing: counts.missing } : {}),
      ...(decision.mode === 'incremental' ? { users_by_helper_thread: counts.byHelper } : {}),
      change_log_watermark: log.watermark,
    };
    ctx.log.info(context, 'suggested-users: refreshed');
    return { items: counts.recomputed + counts.updated + counts.extended, context };
  }

  #queryId(ctx: RunFacts, label: string): string {
    return `cache-refresher:${ctx.jobId}:${ctx.runId}:${ctx.attempt}:${label}`;
  }

  /**
   * A full refresh's batch: its users' ranking buffers computed in ClickHouse, kept in `buffers`
   * (indexed in `ids`), and their heads written.
   */
  async #rankAndWrite(
    ctx: RunFacts,
    window: { now: number; since: number },
    subset: UserSubset,
    ids: UserIds,
    buffers: RankingBuffers,
  ): Promise<SubsetWritten> {
    const o = this.#o;
    const depth = bufferDepth(o.perUser);
    const result = await o.clickhouse.query({
      query: bufferBatchSql(subset.sql),
      query_params: { ...subset.params, ...window, max_followees: o.maxFollowees, buffer_size: depth },
      format: 'TabSeparatedRaw',
      abort_signal: ctx.signal,
      query_id: this.#queryId(ctx, subset.label),
    });
    let written = 0;
    let skipped = 0;
    let chunk: CacheEntry[] = [];
    const redis = new OneInFlight();
    const flush = async (): Promise<void> => {
      const entries = chunk;
      chunk = [];
      await redis.submit(async () => (written += await o.cache.write(entries, o.ttlSec, ctx.signal)));
    };
    for await (const lines of streamLines(result)) {
      for (const line of lines) {
        const buffered = parseBufferRow(line, ids, depth);
        if (buffered === undefined) {
          if (line !== '') skipped++;
          continue;
        }
        const { user, buffer } = buffered;
        buffers.set(user, buffer.candidates, buffer.counts, buffer.complete);
        chunk.push({
          key: keys.suggestedUsers(o.keyPrefix, ids.id(user)),
          value: buffers.renderHead(user, ids, o.perUser),
        });
        if (chunk.length >= WRITE_CHUNK) await flush();
      }
    }
    if (chunk.length > 0) await flush();
    await redis.drain();
    return { written, skipped };
  }

  async #incremental(
    ctx: RunFacts,
    memory: MemoryState,
    run: {
      generation: string;
      /** The window's active users (read from the start of the run). */
      activeRead: Promise<Settled<string[]>>;
      /** The change log's rows since the last run (read from the decision on). */
      rowsRead: Promise<Settled<RelationshipRow[]>>;
    },
  ): Promise<Counts> {
    const o = this.#o;
    const extendTtl = o.cache.extendTtl?.bind(o.cache);
    if (extendTtl === undefined) throw new Error('suggested-users: the cache writer cannot extend TTLs');
    const guard = { key: generationMarkerKey(o.keyPrefix), value: runningMarker(run.generation) };
    const { graph, buffers } = memory;
    const ids = graph.ids;
    // The rows first: applying them does not need the active users, whose read (the larger one) goes
    // on meanwhile.
    const rows = unwrap(await run.rowsRead);

    // The logged pairs, applied to the graph: follower → its logged followees, each with whether it
    // was an active follow before this run's rows (for LoggedPairs.exact). Ids are interned first so
    // that the arrays by user index are made dense, at their full size (an index, not a hash lookup).
    const at = rows.map((r) => [ids.intern(r.follower), ids.intern(r.followee)] as const);
    // The helper thread applies the same rows to its replica meanwhile (when it holds one of this graph).
    const helper = this.#memory.helper?.holds(graph) === true ? this.#memory.helper : undefined;
    helper?.applyRows(graph, {
      follower: Uint32Array.from(at, ([f]) => f),
      followee: Uint32Array.from(at, ([, e]) => e),
      status: Uint8Array.from(rows, (r) => r.status),
      updatedAt: Float64Array.from(rows, (r) => r.updatedAt),
    });
    const all = new Array<number[] | undefined>(ids.size).fill(undefined);
    const activeBefore = new Array<boolean[] | undefined>(ids.size).fill(undefined);
    const followers: number[] = [];
    rows.forEach((r, i) => {
      const [f, e] = at[i] as readonly [number, number];
      let list = all[f];
      let before = activeBefore[f];
      if (list === undefined || before === undefined) {
        list = all[f] = [];
        before = activeBefore[f] = [];
        followers.push(f);
      }
      if (!list.includes(e)) {
        list.push(e);
        before.push(graph.hasActive(f, e));
      }
      if (graph.apply(f, e, r.status, r.updatedAt) === 'tie') {
        throw new ChangeLogTieError(
          `user_relationships row (${r.follower}, ${r.followee}) has the updated_at of its pair's newest row and another status`,
        );
      }
    });
    // Each logged pair's status now, looked up once, against its status before the rows.
    const logged = loggedPairs(graph, all, activeBefore, memory.exact);
    // Users a logged pair can reach: its follower, and whoever follows the follower now (whoever
    // followed them before and not now changed their own follows, so is a follower of a pair too).
    const reached = new Uint8Array(ids.size);
    for (const f of followers) {
      reached[f] = 1;
      const of = graph.followers(f);
      for (let i = 0; i < of.length; i++) reached[of[i] as number] = 1;
    }

    // The active users as indices: ids met in the last run's list (both in id order) reuse its index.
    const active = unwrap(await run.activeRead);
    const users = indexUsers(active, memory.active, ids);
    const settings = { perUser: o.perUser, maxFollowees: o.maxFollowees };
    const counts: Counts = { recomputed: 0, updated: 0, extended: 0, missing: 0, covered: 0, byHelper: 0 };
    // Users this run covers (each once); the others' buffers are dropped at the end.
    const covered = new Uint8Array(ids.size);
    const order: number[] = [];
    for (const u of users) {
      if (covered[u] === 1) continue;
      covered[u] = 1;
      order.push(u);
    }
    counts.covered = order.length;
    // Room for every user index now, so that no buffer written below grows the store: the helper
    // thread writes into this very memory.
    buffers.fit(ids.size);
    const work = forwardWork(order, o.usersPerChunk ?? USERS_PER_CHUNK);
    const inputs = { graph, buffers, logged, reached, settings, scratch: this.#scratch };
    const helped =
      helper === undefined
        ? undefined
        : settled(helper.forward(graph, { work, buffers: buffers.shared(), logged, reached, settings }));

    let pending: number[] = [];
    // Values as bytes when the writer takes them (see suggestion-list-bytes.ts), else as strings.
    const writeBytes = o.cache.writeBytes?.bind(o.cache);
    const lists = writeBytes === undefined ? undefined : (memory.lists ??= new SuggestionListBytes(ids));
    let values: CacheEntry[] = [];
    let valueBytes: BytesEntry[] = [];
    const vanished: number[] = [];
    // One Redis call in flight while the next users are brought forward.
    const redis = new OneInFlight();
    const extend = async (): Promise<void> => {
      if (pending.length === 0) return;
      const users = pending;
      pending = [];
      await redis.submit(async () => {
        const result = await extendTtl(
          users.map((u) => keys.suggestedUsers(o.keyPrefix, ids.id(u))),
          o.ttlSec,
          ctx.signal,
          guard,
        );
        // A key that vanished (evicted, expired, Redis restarted) cannot be extended: write it.
        const gone = new Set(result.missing);
        users.forEach((u, i) => (gone.has(i) ? vanished.push(u) : counts.extended++));
        counts.missing += gone.size;
      });
    };
    const write = async (): Promise<void> => {
      if (values.length + valueBytes.length === 0) return;
      const entries = values;
      const bytes = valueBytes;
      values = [];
      valueBytes = [];
      await redis.submit(() =>
        writeBytes === undefined
          ? o.cache.write(entries, o.ttlSec, ctx.signal)
          : writeBytes(bytes, o.ttlSec, ctx.signal),
      );
    };
    /** Queues u's value (its buffer's head); returns how many are queued. */
    const queueValue = (u: number): number => {
      const key = keys.suggestedUsers(o.keyPrefix, ids.id(u));
      if (lists === undefined) return values.push({ key, value: buffers.renderHead(u, ids, o.perUser) });
      return valueBytes.push({ key, value: buffers.encodeHead(u, lists, o.perUser) });
    };
    /** Acts on chunk k's outcomes (whichever thread brought it forward). */
    const settle = async (k: number): Promise<void> => {
      const { from, to } = chunkRange(work, k);
      for (let p = from; p < to; p++) {
        const u = work.users[p] as number;
        const code = work.codes[p];
        if (code === SAME_HEAD) {
          pending.push(u);
          if (pending.length >= EXTEND_CHUNK) await extend();
          continue;
        }
        if (code === RECOMPUTED) counts.recomputed++;
        else counts.updated++;
        if (queueValue(u) >= WRITE_CHUNK) await write();
      }
    };
    // Chunks are claimed from both threads; this one settles its own as it goes, and the helper's
    // once they are done (the lowest not yet settled first).
    const settledChunk = new Uint8Array(chunkCount(work));
    let lowest = 0;
    const settleDone = async (): Promise<void> => {
      for (let k = lowest; k < settledChunk.length; k++) {
        if (settledChunk[k] === 1 || !chunkDone(work, k)) continue;
        settledChunk[k] = 1;
        const { from, to } = chunkRange(work, k);
        counts.byHelper += to - from;
        await settle(k);
      }
      while (lowest < settledChunk.length && settledChunk[lowest] === 1) lowest++;
    };
    try {
      for (let k = claimChunk(work); k >= 0; k = claimChunk(work)) {
        await yieldToLoop();
        ctx.signal.throwIfAborted();
        forwardChunk(work, k, inputs);
        settledChunk[k] = 1;
        await settle(k);
        await settleDone();
      }
      if (helped !== undefined) unwrap(await helped);
      await settleDone();
    } finally {
      // A run that stops early leaves the helper nothing more to claim.
      stopClaims(work);
    }
    if (lowest !== settledChunk.length)
      throw new Error('suggested-users: a chunk of users was not brought forward');
    await write();
    await extend();
    await redis.drain();
    // A vanished key is written from the user's buffer: the value the next run compares heads with.
    for (let i = 0; i < vanished.length; i += WRITE_CHUNK) {
      for (const u of vanished.slice(i, i + WRITE_CHUNK)) queueValue(u);
      counts.recomputed += values.length + valueBytes.length;
      await write();
      await redis.drain();
    }
    for (let u = 0; u < buffers.flags.length; u++) if (covered[u] !== 1) buffers.delete(u);
    memory.active = { ids: active, users };
    return counts;
  }
}

/** A promise's outcome, held so that it is never an unhandled rejection while nobody awaits it. */
type Settled<T> = { value: T } | { error: unknown };

function settled<T>(promise: Promise<T>): Promise<Settled<T>> {
  return promise.then(
    (value) => ({ value }),
    (error: unknown) => ({ error }),
  );
}

function unwrap<T>(outcome: Settled<T>): T {
  if ('error' in outcome) throw outcome.error;
  return outcome.value;
}

/**
 * The indices of `active` (decimal ids in numeric order), reusing `previous`'s (the last run's list,
 * in the same order) for the ids in both: a merge walk instead of a hash lookup per id.
 */
function indexUsers(
  active: readonly string[],
  previous: { ids: string[]; users: number[] } | undefined,
  ids: UserIds,
): number[] {
  const users = new Array<number>(active.length);
  const before = previous?.ids ?? [];
  let j = 0;
  for (let i = 0; i < active.length; i++) {
    const id = active[i] as string;
    while (j < before.length && compareDecimal(before[j] as string, id) < 0) j++;
    users[i] = before[j] === id ? (previous?.users[j] as number) : ids.intern(id);
  }
  return users;
}

/** Numeric order of two canonical decimal strings. */
function compareDecimal(a: string, b: string): number {
  return a.length - b.length || (a < b ? -1 : a > b ? 1 : 0);
}

/**
 * A line of bufferBatchSql (`user_id<TAB>n<TAB>counts<TAB>candidates`) as a user index and buffer,
 * or undefined for a line that is not one.
 */
function parseBufferRow(
  line: string,
  ids: UserIds,
  depth: number,
): { user: number; buffer: RankingBuffer } | undefined {
  const [userId, n, countList, candidateList] = line.split('\t');
  if (userId === undefined || n === undefined || countList === undefined || candidateList === undefined) {
    return undefined;
  }
  if (parseUserValueRow(`${userId}\t[]`) === undefined) return undefined;
  const counts = countList === '' ? [] : countList.split(',').map(Number);
  const candidates = candidateList === '' ? [] : candidateList.split(',');
  if (counts.length !== candidates.length) return undefined;
  return {
    user: ids.intern(userId),
    buffer: {
      candidates: candidates.map((c) => ids.intern(c)),
      counts,
      complete: Number(n) <= depth,
    },
  };
}

/** Users per outcome of one run. */
interface Counts {
  /** Computed from scratch (a full refresh, new users, buffers that cannot answer, vanished keys). */
  recomputed: number;
  /** Brought forward from their buffer by the changed follows, value written. */
  updated: number;
  /** TTL extended only. */
  extended: number;
  /** Keys that had vanished from Redis (counted in `recomputed` too). */
  missing: number;
  covered: number;
  /** Brought forward by the helper thread (bring-forward-helper.ts). */
  byHelper: number;
}
