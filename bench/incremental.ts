import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { createClient, type ClickHouseClient } from '@clickhouse/client';
import type { Redis } from 'ioredis';
import { pino } from 'pino';
import { keys } from '../src/cache/keys.js';
import { RedisCacheWriter, type Fence } from '../src/cache/writer.js';
import { createStandaloneRedis } from '../src/clients.js';
import { migrate } from '../src/clickhouse/schema.js';
import { SUGGESTED_USERS_BATCH_DEFAULTS } from '../src/config.js';
import { seedDatabase } from '../src/clickhouse/seed.js';
import { IncrementalMemory } from '../src/jobs/suggested-users-incremental.js';
import { incrementalSuggestedUsers, SuggestedUsersJob } from '../src/jobs/suggested-users.js';
import type { RunResult } from '../src/runner/job.js';
import { fmt, round, spread, type Spread } from './stats.js';
import { runFacts } from '../test/integration/run-facts.js';

/**
 * suggested-users' incremental mode against its full refresh, on the same data in the same run:
 * after a full run establishes the state, each repetition changes a share of the follows (half new
 * follows drawn like the seed's, half removals of existing ones, all through ordinary INSERTs), then
 * runs the incremental job and a full refresh into another key prefix, and compares every active
 * user's value key by key. Rows read come from `system.query_log` (each measured run has its own
 * `log_comment`), times from the wall clock around the run. Also measured: a run with no change at all
 * (only TTL extensions), the floor of the mode.
 *
 * Standalone: `tsc -p tsconfig.bench.json && node dist-bench/bench/incremental.js [--users N --events N
 * --reps N --churn 0.01]` seeds its own database; `bench/run.ts` calls `benchIncremental` on its own.
 */

/**
 * The job's settings in both modes: the shipped batch size and parallelism, so the full refresh the
 * incremental run is measured against is the one an operator gets by default.
 */
const SETTINGS = {
  perUser: 20,
  activeDays: 7,
  maxFollowees: 1000,
  ...SUGGESTED_USERS_BATCH_DEFAULTS,
};
const silent = pino({ level: 'silent' });

export interface IncrementalBenchInput {
  clickhouseUrl: string;
  database: string;
  redis: Redis;
  fence: Fence;
  /** Key prefix for this bench's keys (two sub-prefixes are used under it). */
  prefix: string;
  now: Date;
  /** Shares of follows changed between runs (0.01 = 1 %), each measured `reps` times. */
  levels: readonly { churn: number; reps: number }[];
  note: (msg: string) => void;
}

interface Measured {
  seconds: number;
  rowsRead: number;
  /** ClickHouse CPU (user + system) of the run's queries, seconds: the work, whatever the load. */
  clickhouseCpuSec: number;
  /** The largest ClickHouse memory of one of the run's queries, MiB. */
  peakMemoryMiB: number;
  /** This process's resident memory after the run, MiB (the incremental mode's state lives here). */
  rssMiB: number;
  /** Live JS heap plus array buffers after a full GC, MiB (0 when the bench runs without --expose-gc). */
  liveMiB: number;
  context: Record<string, unknown>;
}

/** One churn level: per repetition, the incremental run against a full refresh of the same data. */
export interface ChurnLevelResult {
  churn: number;
  changedPerRep: number[];
  incremental: {
    seconds: Spread;
    rowsRead: Spread;
    clickhouseCpuSec: Spread;
    /** Largest ClickHouse memory of one query of the run (the delta step's), MiB. */
    peakMemoryMiB: Spread;
    /** This process's RSS after the run, MiB: the follow graph and buffers held between runs. */
    rssMiB: Spread;
    /**
     * The incremental state's memory, MiB: live heap plus array buffers after a full GC, after the
     * run, less the same before the first run (0 without --expose-gc).
     */
    stateMiB: Spread;
    usersRecomputed: number[];
    /** Users updated from their ranking buffers (the delta step), value written. */
    usersUpdated: number[];
    usersExtended: number[];
  };
  full: { seconds: Spread; rowsRead: Spread; clickhouseCpuSec: Spread; peakMemoryMiB: Spread };
  /** Full / incremental, per repetition. */
  timeRatio: Spread;
  rowsRatio: Spread;
  /** Full / incremental ClickHouse CPU, per repetition: the time ratio without the machine's load. */
  clickhouseCpuRatio: Spread;
  /** Active users' values compared key by key with the full refresh's, and how many were equal. */
  agreement: { compared: number; identical: number };
  /**
   * The Redis part alone, per repetition, seconds: the run's written values written again and every
   * other active user's TTL extended, through the same fenced writer in the job's chunks, with no
   * ClickHouse work. Any design that refreshes from this process does at least this.
   */
  redisFloorSeconds: Spread;
  /** Full refresh / Redis floor, per repetition: the largest time ratio any such design could reach. */
  timeRatioLimit: Spread;
}

export interface IncrementalBenchResult {
  activeUsers: number;
  /** A run after no change at all: only TTL extensions. */
  unchanged: {
    seconds: number;
    rowsRead: number;
    usersExtended: number;
    timeRatio: number;
    rowsRatio: number;
  };
  levels: ChurnLevelResult[];
}

function client(url: string, database: string, comment?: string): ClickHouseClient {
  return createClient({
    url,
    database,
    request_timeout: 600_000,
    clickhouse_settings: {
      send_progress_in_http_headers: 1,
      http_headers_progress_interval_ms: '110000',
      ...(comment ? { log_comment: comment } : {}),
    },
  });
}

/** Changes `churn` of the active follows: half removed, half new (Zipf-like followees, as the seed). */
async function changeFollows(
  ch: ClickHouseClient,
  churn: number,
  salt: string,
  nowSec: number,
): Promise<number> {
  const [row] = await (
    await ch.query({
      query: `SELECT count() AS follows, max(follower_id) AS users FROM user_relationships FINAL WHERE status = 'active'`,
      format: 'JSONEachRow',
    })
  ).json<{ follows: string; users: string }>();
  const follows = Number(row?.follows ?? 0);
  const users = Number(row?.users ?? 1);
  const half = Math.max(1, Math.round((follows * churn) / 2));
  await ch.command({
    query: `INSERT INTO user_relationships
      SELECT follower_id, followee_id, 'removed', toDateTime({t:UInt32})
      FROM user_relationships FINAL
      WHERE status = 'active'
      ORDER BY cityHash64(follower_id, followee_id, {salt:String})
      LIMIT {n:UInt64}`,
    query_params: { salt, n: half, t: nowSec - 30 },
  });
  await ch.command({
    query: `INSERT INTO user_relationships
      SELECT f, e, 'active', toDateTime({t:UInt32}) FROM (
        SELECT 1 + cityHash64(number, {salt:String}, 'f') % {users:UInt64} AS f,
          least({users:UInt64}, toUInt64(floor(pow({users:UInt64}, pow(cityHash64(number, {salt:String}, 'e') / 18446744073709551615, 0.7))))) AS e
        FROM numbers({n:UInt64}))
      WHERE f != e`,
    query_params: { salt, n: half, users, t: nowSec - 20 },
  });
  return 2 * half;
}

/**
 * Rows read, ClickHouse CPU seconds and memory (the largest of one query) of the
 * queries logged with `comment`.
 */
async function queryCosts(
  ch: ClickHouseClient,
  comment: string,
): Promise<{ rowsRead: number; clickhouseCpuSec: number; peakMemoryMiB: number }> {
  await ch.command({ query: 'SYSTEM FLUSH LOGS' });
  const [row] = await (
    await ch.query({
      query: `SELECT sum(read_rows) AS rows,
          sum(ProfileEvents['UserTimeMicroseconds'] + ProfileEvents['SystemTimeMicroseconds']) / 1e6 AS cpu,
          max(memory_usage) / 1048576 AS peak
        FROM system.query_log
        WHERE log_comment = {comment:String} AND type = 'QueryFinish' AND event_date >= yesterday()`,
      query_params: { comment },
      format: 'JSONEachRow',
    })
  ).json<{ rows: string; cpu: number; peak: number }>();
  return {
    rowsRead: Number(row?.rows ?? 0),
    clickhouseCpuSec: round(row?.cpu ?? 0),
    peakMemoryMiB: round(row?.peak ?? 0),
  };
}

/**
 * Live JS heap plus array buffers after a full collection, MiB: what this process holds, garbage
 * aside. 0 when `gc` is not exposed (`node --expose-gc`, as `npm run bench` runs).
 */
function liveMemoryMiB(): number {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc === undefined) return 0;
  gc();
  const m = process.memoryUsage();
  return round((m.heapUsed + m.arrayBuffers) / 1048576);
}

/** The ids of the window's active users (decimal strings), as the jobs count them. */
async function activeUserIds(ch: ClickHouseClient, nowSec: number): Promise<string[]> {
  const users = await (
    await ch.query({
      query: `SELECT DISTINCT toString(user_id) AS u FROM post_events
        WHERE event_time > toDateTime({since:UInt32}) AND event_time <= toDateTime({now:UInt32})
          AND user_id != 0 AND post_id != 0 AND author_id != 0`,
      query_params: { since: nowSec - SETTINGS.activeDays * 86_400, now: nowSec },
      format: 'JSONEachRow',
    })
  ).json<{ u: string }>();
  return users.map((r) => r.u);
}

/** The value of each of `users` under `a` against `b`, key by key (a missing key is a difference). */
async function compareAll(
  redis: Redis,
  users: readonly string[],
  a: string,
  b: string,
): Promise<{ compared: number; identical: number }> {
  let identical = 0;
  for (let k = 0; k < users.length; k += 5000) {
    const ids = users.slice(k, k + 5000);
    const va = await redis.mget(ids.map((u) => keys.suggestedUsers(a, u)));
    const vb = await redis.mget(ids.map((u) => keys.suggestedUsers(b, u)));
    identical += ids.filter((_, j) => va[j] !== null && va[j] === vb[j]).length;
  }
  return { compared: users.length, identical };
}

/** The job's Redis chunks (suggested-users-incremental.ts WRITE_CHUNK and EXTEND_CHUNK). */
const FLOOR_WRITE_CHUNK = 2000;
const FLOOR_EXTEND_CHUNK = 4000;

/**
 * The Redis floor of an incremental run (see ChurnLevelResult.redisFloorSeconds): the first `written`
 * of `ids` get their current value under `prefix` written again (read first, untimed), the rest get
 * their TTL extended under a guard, one call at a time. Resolves to the seconds it took.
 */
async function redisFloor(
  redis: Redis,
  writer: RedisCacheWriter,
  prefix: string,
  ids: readonly string[],
  written: number,
): Promise<number> {
  const signal = new AbortController().signal;
  const key = (u: string): string => keys.suggestedUsers(prefix, u);
  const entries: { key: string; value: string }[] = [];
  for (let k = 0; k < written; k += 5000) {
    const batch = ids.slice(k, Math.min(written, k + 5000));
    const values = await redis.mget(batch.map(key));
    batch.forEach((u, j) => entries.push({ key: key(u), value: values[j] ?? '[]' }));
  }
  const guard = { key: `${prefix}:bench-floor-guard`, value: 'floor' };
  await redis.set(guard.key, guard.value, 'EX', 600);
  const started = performance.now();
  for (let k = 0; k < entries.length; k += FLOOR_WRITE_CHUNK) {
    await writer.write(entries.slice(k, k + FLOOR_WRITE_CHUNK), 3600, signal);
  }
  for (let k = written; k < ids.length; k += FLOOR_EXTEND_CHUNK) {
    await writer.extendTtl(ids.slice(k, k + FLOOR_EXTEND_CHUNK).map(key), 3600, signal, guard);
  }
  const seconds = (performance.now() - started) / 1000;
  await redis.del(guard.key);
  return seconds;
}

export async function benchIncremental(input: IncrementalBenchInput): Promise<IncrementalBenchResult> {
  const { note } = input;
  const admin = client(input.clickhouseUrl, input.database);
  const nowSec = Math.floor(input.now.getTime() / 1000);
  const incPrefix = `${input.prefix}:inc`;
  const fullPrefix = `${input.prefix}:full`;
  const writer = new RedisCacheWriter(input.redis, input.fence);
  const replica = `bench:${randomBytes(4).toString('hex')}`;
  // One process's incremental state across the measured runs (each run builds its job anew).
  const memory = new IncrementalMemory();
  const tag = randomBytes(4).toString('hex');
  let runNo = 0;

  /** One measured run on a client of its own, so query_log attributes its rows. */
  const measure = async (run: (ch: ClickHouseClient) => Promise<RunResult>): Promise<Measured> => {
    const comment = `bench-incremental-${tag}-${runNo++}`;
    const ch = client(input.clickhouseUrl, input.database, comment);
    try {
      const started = performance.now();
      const result = await run(ch);
      const seconds = (performance.now() - started) / 1000;
      const rssMiB = round(process.memoryUsage().rss / 1048576);
      const liveMiB = liveMemoryMiB();
      return {
        seconds,
        rssMiB,
        liveMiB,
        ...(await queryCosts(admin, comment)),
        context: result.context ?? {},
      };
    } finally {
      await ch.close();
    }
  };
  const incremental = (ch: ClickHouseClient) =>
    incrementalSuggestedUsers({
      clickhouse: ch,
      cache: writer,
      keyPrefix: incPrefix,
      ...SETTINGS,
      ttlSec: 3600,
      fullEvery: 1000,
      replica,
      memory,
    }).run(runFacts('suggested-users', input.now));
  const full = (ch: ClickHouseClient) =>
    new SuggestedUsersJob({
      clickhouse: ch,
      cache: writer,
      keyPrefix: fullPrefix,
      ...SETTINGS,
      ttlSec: 3600,
    }).run(runFacts('suggested-users', input.now));

  try {
    const baselineMiB = liveMemoryMiB();
    note(`incremental: initial full run (no state yet)`);
    const first = await measure(incremental);
    if (first.context.mode !== 'full') throw new Error(`bench: first run was ${String(first.context.mode)}`);
    const activeUsers = Number(first.context.users_recomputed);

    note(`incremental: a run with no change (TTL extensions only)`);
    const same = await measure(incremental);
    const sameFull = await measure(full);

    // The window's active users: the data's events and `now` stay as they are through every level.
    const activeIds = await activeUserIds(admin, nowSec);
    const levels: ChurnLevelResult[] = [];
    let salt = 0;
    for (const level of input.levels) {
      const inc: Measured[] = [];
      const ref: Measured[] = [];
      const changedPerRep: number[] = [];
      let compared = 0;
      let identical = 0;
      const floors: number[] = [];
      for (let rep = 0; rep < level.reps; rep++) {
        const changed = await changeFollows(admin, level.churn, `${tag}-${salt++}`, nowSec);
        changedPerRep.push(changed);
        const i = await measure(incremental);
        if (i.context.mode !== 'incremental')
          throw new Error(`bench: run was ${String(i.context.mode)}: ${String(i.context.full_reason)}`);
        const f = await measure(full);
        inc.push(i);
        ref.push(f);
        note(
          `  churn ${level.churn * 100} % rep ${rep + 1}: ${changed} follows changed; incremental ${fmt(i.seconds)} s, ` +
            `${i.rowsRead} rows, ${fmt(i.clickhouseCpuSec)} ClickHouse CPU-s, ${String(i.context.users_recomputed)} recomputed, ` +
            `${String(i.context.users_updated)} updated from buffers, ` +
            `${String(i.context.users_extended)} extended; full ${fmt(f.seconds)} s, ${f.rowsRead} rows, ` +
            `${fmt(f.clickhouseCpuSec)} ClickHouse CPU-s`,
        );
        const agreed = await compareAll(input.redis, activeIds, incPrefix, fullPrefix);
        compared += agreed.compared;
        identical += agreed.identical;
        const written = Number(i.context.users_updated) + Number(i.context.users_recomputed);
        floors.push(await redisFloor(input.redis, writer, incPrefix, activeIds, written));
      }
      const ratios = (pick: (m: Measured) => number): number[] =>
        inc.map((m, j) => round(pick(ref[j] as Measured) / Math.max(pick(m), 1e-9)));
      levels.push({
        churn: level.churn,
        changedPerRep,
        incremental: {
          seconds: spread(inc.map((m) => round(m.seconds))),
          rowsRead: spread(inc.map((m) => m.rowsRead)),
          clickhouseCpuSec: spread(inc.map((m) => m.clickhouseCpuSec)),
          peakMemoryMiB: spread(inc.map((m) => m.peakMemoryMiB)),
          rssMiB: spread(inc.map((m) => m.rssMiB)),
          stateMiB: spread(inc.map((m) => round(Math.max(0, m.liveMiB - baselineMiB)))),
          usersRecomputed: inc.map((m) => Number(m.context.users_recomputed)),
          usersUpdated: inc.map((m) => Number(m.context.users_updated)),
          usersExtended: inc.map((m) => Number(m.context.users_extended)),
        },
        full: {
          seconds: spread(ref.map((m) => round(m.seconds))),
          rowsRead: spread(ref.map((m) => m.rowsRead)),
          clickhouseCpuSec: spread(ref.map((m) => m.clickhouseCpuSec)),
          peakMemoryMiB: spread(ref.map((m) => m.peakMemoryMiB)),
        },
        timeRatio: spread(ratios((m) => m.seconds)),
        rowsRatio: spread(ratios((m) => m.rowsRead)),
        clickhouseCpuRatio: spread(ratios((m) => m.clickhouseCpuSec)),
        agreement: { compared, identical },
        redisFloorSeconds: spread(floors.map((f) => round(f))),
        timeRatioLimit: spread(ref.map((m, j) => round(m.seconds / Math.max(floors[j] ?? 0, 1e-9)))),
      });
    }
    return {
      activeUsers,
      unchanged: {
        seconds: round(same.seconds),
        rowsRead: same.rowsRead,
        usersExtended: Number(same.context.users_extended),
        timeRatio: round(sameFull.seconds / same.seconds),
        rowsRatio: round(sameFull.rowsRead / Math.max(1, same.rowsRead)),
      },
      levels,
    };
  } finally {
    await admin.close();
  }
}

/** The churn levels `npm run bench` measures: the 1 % target with the bench's repetitions, and two lower levels once. */
export function incrementalLevels(reps: number): { churn: number; reps: number }[] {
  return [
    { churn: 0.01, reps },
    { churn: 0.001, reps: 1 },
    { churn: 0.0001, reps: 1 },
  ];
}

/** A target as bench/run.ts reports it. */
export interface IncrementalTarget {
  figure: string;
  target: string;
  value: string;
  met: boolean;
  shortfall?: string;
}

/** Targets (at 1 % churn: ≥ 10× fewer rows, ≥ 5× less time, identical values) and table rows. */
export function incrementalReport(r: IncrementalBenchResult): {
  targets: IncrementalTarget[];
  rows: string[][];
} {
  const targets: IncrementalTarget[] = [];
  const rows: string[][] = [];
  const x = (s: Spread): string => `${fmt(s.median)}× (${fmt(s.min)}–${fmt(s.max)})`;
  const at1 = r.levels.find((l) => l.churn === 0.01);
  if (at1 !== undefined) {
    const add = (figure: string, target: string, ratio: number, goal: number): void => {
      const met = ratio >= goal;
      targets.push({
        figure,
        target,
        value: `${fmt(ratio)}×`,
        met,
        ...(met ? {} : { shortfall: `${fmt((1 - ratio / goal) * 100)} % short` }),
      });
    };
    add('incremental suggestions at 1 % churn: fewer rows read', '≥ 10×', at1.rowsRatio.min, 10);
    add('incremental suggestions at 1 % churn: less time', '≥ 5×', at1.timeRatio.min, 5);
    const same = at1.agreement.identical === at1.agreement.compared && at1.agreement.compared > 0;
    targets.push({
      figure: 'incremental suggestions at 1 % churn: identical values',
      target: 'all',
      value: `${at1.agreement.identical}/${at1.agreement.compared}`,
      met: same,
    });
  }
  for (const l of r.levels) {
    const share = (n: number): string => `${fmt((n / Math.max(1, r.activeUsers)) * 100)} %`;
    const recomputed = l.incremental.usersRecomputed.map(share);
    const updated = l.incremental.usersUpdated.map(share);
    rows.push([
      '7',
      `incremental suggestions, ${l.churn * 100} % of follows changed: s / rows read (users recomputed: ${recomputed.join(', ')}; updated from buffers: ${updated.join(', ')})`,
      `${fmt(l.incremental.seconds.median)} s / ${l.incremental.rowsRead.median.toLocaleString('en-US')}`,
      `full: ${fmt(l.full.seconds.median)} s / ${l.full.rowsRead.median.toLocaleString('en-US')}`,
      `${x(l.timeRatio)} time, ${x(l.rowsRatio)} rows`,
      l.churn === 0.01 ? '≥ 5× time, ≥ 10× rows' : '',
      l.churn === 0.01 ? (targets.every((t) => t.met) ? 'yes' : 'NO') : '',
    ]);
    rows.push([
      '7',
      `the same, ClickHouse CPU-seconds of the run's queries (the work, whatever the machine's load)`,
      `${fmt(l.incremental.clickhouseCpuSec.median)} (${fmt(l.incremental.clickhouseCpuSec.min)}–${fmt(l.incremental.clickhouseCpuSec.max)})`,
      `full: ${fmt(l.full.clickhouseCpuSec.median)} (${fmt(l.full.clickhouseCpuSec.min)}–${fmt(l.full.clickhouseCpuSec.max)})`,
      `${x(l.clickhouseCpuRatio)} less CPU`,
      '',
      '',
    ]);
    rows.push([
      '7',
      'the same, the Redis part alone (values written again, TTLs extended, no ClickHouse work)',
      `${fmt(l.redisFloorSeconds.median)} s (${fmt(l.redisFloorSeconds.min)}–${fmt(l.redisFloorSeconds.max)})`,
      `full: ${fmt(l.full.seconds.median)} s`,
      `${x(l.timeRatioLimit)}: the most any design writing from this process could reach`,
      '',
      '',
    ]);
    const mib = (v: Spread): string => `${fmt(v.median)} (${fmt(v.min)}–${fmt(v.max)}) MiB`;
    rows.push([
      '7',
      "the same, memory: ClickHouse's largest query of the run / the state in this process (graph and buffers: live heap after GC, less before the first run) / RSS",
      `${mib(l.incremental.peakMemoryMiB)} / ${mib(l.incremental.stateMiB)} / ${mib(l.incremental.rssMiB)}`,
      `full: largest query ${mib(l.full.peakMemoryMiB)}`,
      '',
      '',
      '',
    ]);
  }
  rows.push([
    '7',
    'incremental suggestions, no change: s / rows read (TTL extensions only)',
    `${fmt(r.unchanged.seconds)} s / ${r.unchanged.rowsRead.toLocaleString('en-US')}`,
    '',
    `${fmt(r.unchanged.timeRatio)}× time, ${fmt(r.unchanged.rowsRatio)}× rows`,
    '',
    '',
  ]);
  return { targets, rows };
}

async function standalone(): Promise<void> {
  const { values } = parseArgs({
    options: {
      users: { type: 'string', default: '20000' },
      events: { type: 'string' },
      reps: { type: 'string', default: '2' },
      churn: { type: 'string', default: '0.01' },
      write: { type: 'boolean', default: false },
    },
  });
  const users = Number(values.users);
  const events = Number(values.events ?? users * 100);
  const note = (m: string): void =>
    void process.stderr.write(`[incremental ${new Date().toISOString().slice(11, 19)}] ${m}\n`);
  const clickhouseUrl = process.env.CLICKHOUSE_URL ?? 'http://127.0.0.1:8123';
  const redis = createStandaloneRedis(
    { redisUrl: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379' },
    silent,
  );
  await redis.connect();
  const database = `bench_incr_${randomBytes(4).toString('hex')}`;
  const prefix = `bench-incr-${randomBytes(4).toString('hex')}`;
  const admin = client(clickhouseUrl, 'default');
  try {
    await admin.command({ query: 'CREATE DATABASE {db:Identifier}', query_params: { db: database } });
    const ch = client(clickhouseUrl, database);
    await migrate(ch);
    const now = new Date(Math.floor(Date.now() / 1000) * 1000 - 17_000);
    note(`seeding ${users} users, ${events} events`);
    await seedDatabase(ch, { users, days: 7, events, seed: 42, now });
    await ch.close();
    await redis.set(`${prefix}:leader`, '1:bench', 'EX', 3 * 3600);
    const fence: Fence = { key: `${prefix}:leader`, token: () => '1:bench', lost: () => note('lease lost') };
    const result = await benchIncremental({
      clickhouseUrl,
      database,
      redis,
      fence,
      prefix,
      now,
      levels: values.churn.split(',').map((c) => ({ churn: Number(c), reps: Number(values.reps) })),
      note,
    });
    const report = incrementalReport(result);
    process.stdout.write(`${report.rows.map((r) => r.join(' | ')).join('\n')}\n`);
    for (const t of report.targets)
      process.stdout.write(`${t.met ? 'met' : 'MISSED'}: ${t.figure}: ${t.value} (${t.target})\n`);
    if (values.write) {
      // Under its own key, with its own scale and date: the rest of the file is a full `npm run bench`.
      const path = resolve(dirname(fileURLToPath(import.meta.url)), '../../bench/results.json');
      const all = JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
      all.incremental = {
        date: new Date().toISOString(),
        scale: { users, events, days: 7, seed: 42, note: 'standalone bench/incremental.ts run' },
        ...result,
        targets: report.targets,
      };
      writeFileSync(path, `${JSON.stringify(all, null, 2)}\n`);
      note(`wrote ${path} (key "incremental")`);
    }
  } finally {
    await admin.command({
      query: 'DROP DATABASE IF EXISTS {db:Identifier} SYNC',
      query_params: { db: database },
    });
    await admin.close();
    let cursor = '0';
    do {
      const [next, batch] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 5000);
      cursor = next;
      if (batch.length > 0) await redis.unlink(...batch);
    } while (cursor !== '0');
    redis.disconnect();
  }
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  standalone().catch((err: unknown) => {
    process.stderr.write(
      `bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
    );
    process.exitCode = 1;
  });
}
