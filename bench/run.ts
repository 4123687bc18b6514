import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import os, { availableParallelism, cpus } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { ClickHouseClient } from '@clickhouse/client';
import type { Redis } from 'ioredis';
import { pino } from 'pino';
import { keys } from '../src/cache/keys.js';
import { RedisCacheWriter, yieldToLoop, type CacheEntry, type Fence } from '../src/cache/writer.js';
import { createClickHouse, createStandaloneRedis } from '../src/clients.js';
import { migrate } from '../src/clickhouse/schema.js';
import { seedDatabase } from '../src/clickhouse/seed.js';
import { SUGGESTED_USERS_BATCH_DEFAULTS, type JobSettings } from '../src/config.js';
import { FeedWarmerJob } from '../src/jobs/feed-warmer.js';
import { SuggestedUsersJob } from '../src/jobs/suggested-users.js';
import { TrendingJob, TRENDING_WINDOWS, type TrendingWindow } from '../src/jobs/trending.js';
import { planWindow } from '../src/jobs/window-plan.js';
import { createSystemClock } from '../src/runner/clock.js';
import type { RunnerJob } from '../src/runner/job.js';
import { Runner, type FreshnessStore } from '../src/runner/runner.js';
import {
  feedBaseline,
  suggestionsBaseline,
  TRENDING_RAW_SQL,
  BASELINE_IN_FLIGHT,
  type BaselineRun,
} from './baselines.js';
import { fmt, fmtSpread, percentile, round, spread, type Spread } from './stats.js';
import { redisBenchmark } from './redis-benchmark.js';
import { benchTrendingExact, trendingExactRows, trendingExactTargets } from './trending.js';
import { benchMillion } from './suggestions.js';
import { benchIncremental, incrementalLevels, incrementalReport } from './incremental.js';
import { benchFencedWrites } from './writes.js';
import { runFacts } from '../test/integration/run-facts.js';

/**
 * `npm run bench [-- --quick | --users N --events N --reps N --keep --with-1m]`
 *
 * Measures, in one run against the local servers, cache-refresher's jobs against the per-user design
 * they replace and against the hardware's own limit (redis-benchmark), and writes every figure to
 * bench/results.json. The machines are shared and noisy, so each figure is repeated and reported as a
 * median with its min–max spread, and job and baseline repetitions alternate so both meet the same noise.
 */

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const RESULTS_PATH = join(ROOT, 'bench', 'results.json');
const silent = pino({ level: 'silent' });

/** Contract defaults (CONTRACT §4, §9): the benchmark measures the product as shipped. */
const PER_USER = 20;
const ACTIVE_DAYS = 7;
const MAX_FOLLOWEES = 1000;
const { batchSize: BATCH_SIZE, parallelism: PARALLELISM } = SUGGESTED_USERS_BATCH_DEFAULTS;
/** The suggested-users target of the "performance at a million users" issue, at 50 k and 100 k users. */
const SUGGESTIONS_TARGET = 80;
const FEED = { users: 10_000, pageSize: 20, activeDays: 7, lookbackHours: 72, decay: 0.95 };
const TRENDING = {
  topK: 50,
  decay: { '1h': 0.9, '24h': 0.95, '7d': 0.98 } as Record<TrendingWindow, number>,
};
/** streamUserValues hands the writer 2000 entries at a time: the pipelining depth to compare with. */
const WRITE_CHUNK = 2000;
/** Enough 1 s ticks for a p99 that is more than the maximum of a handful. */
const MIN_TICKS = 30;
/** Sampling interval of the event-loop delay histogram during the suggestions run. */
const LOOP_RESOLUTION_MS = 10;

/**
 * monitorEventLoopDelay records how long each sampling timer took to fire, resolution included: the
 * loop's own delay is what exceeds the resolution.
 */
function loopDelayMs(ns: number, resolutionMs: number): number {
  return Math.max(0, ns / 1e6 - resolutionMs);
}

/** The smaller chunk measured alongside (see benchRedisWrites). */
const SMALL_CHUNK = 250;

const { values: argv } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    users: { type: 'string' },
    events: { type: 'string' },
    reps: { type: 'string' },
    keep: { type: 'boolean', default: false },
    'with-1m': { type: 'boolean', default: false },
    // `--scale 1m`: only the suggested-users full refresh at 1 M active users (bench/suggestions.ts);
    // `--database D --now MS` reuse a database seeded that way instead of seeding one.
    scale: { type: 'string' },
    database: { type: 'string' },
    now: { type: 'string' },
  },
});

function intArg(name: 'users' | 'events' | 'reps', fallback: number): number {
  const raw = argv[name];
  if (raw === undefined) return fallback;
  const n = Number(raw.replaceAll('_', ''));
  if (!Number.isSafeInteger(n) || n < 1)
    throw new Error(`bench: --${name} must be a positive integer, got ${raw}`);
  return n;
}

const quick = argv.quick;
const users = intArg('users', quick ? 10_000 : 100_000);
const events = intArg('events', argv.users === undefined ? (quick ? 500_000 : 10_000_000) : users * 100);
const reps = intArg('reps', quick ? 2 : 3);
const scale = {
  users,
  events,
  reps,
  suggestionsBaselineSample: quick ? 300 : 1000,
  feedBaselineSample: quick ? 60 : 200,
  redisWriteKeys: quick ? 60_000 : 200_000,
  redisBenchmarkRequests: quick ? 500_000 : 2_000_000,
};

function note(msg: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

function servicesEnv(): { redisUrl: string; clickhouseUrl: string } {
  const vars: Record<string, string> = {};
  for (const line of readFileSync(join(ROOT, '.services', 'env'), 'utf8').split('\n')) {
    const m = /^export ([A-Z_]+)=(.*)$/.exec(line.trim());
    if (m?.[1] !== undefined && m[2] !== undefined) vars[m[1]] = m[2];
  }
  const redisUrl = vars.REDIS_URL;
  const clickhouseUrl = vars.CLICKHOUSE_URL;
  if (redisUrl === undefined || clickhouseUrl === undefined) {
    throw new Error('bench: .services/env lacks REDIS_URL or CLICKHOUSE_URL');
  }
  return { redisUrl, clickhouseUrl };
}

async function timed<T>(fn: () => Promise<T>): Promise<{ value: T; ms: number }> {
  const started = performance.now();
  const value = await fn();
  return { value, ms: performance.now() - started };
}

/** Deletes every key under `prefix` (the bench's own keys on the shared Redis). */
async function deleteKeys(redis: Redis, prefix: string): Promise<number> {
  let deleted = 0;
  let cursor = '0';
  do {
    const [next, batch] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 5000);
    cursor = next;
    if (batch.length > 0) deleted += await redis.unlink(...batch);
  } while (cursor !== '0');
  return deleted;
}

async function seedScale(
  admin: ClickHouseClient,
  clickhouseUrl: string,
  database: string,
  opts: { users: number; events: number; now: Date },
): Promise<{ client: ClickHouseClient; seedMs: number; activeUsers: number }> {
  await admin.command({ query: 'CREATE DATABASE {db:Identifier}', query_params: { db: database } });
  const client = createClickHouse({
    clickhouse: { url: clickhouseUrl, user: 'default', password: '', database },
  });
  await migrate(client);
  const { ms } = await timed(() =>
    seedDatabase(client, {
      users: opts.users,
      days: 7,
      events: opts.events,
      seed: 42,
      now: opts.now,
      onProgress: (p) => {
        if (p.table !== 'post_events' || p.done === p.total || p.done % 4_000_000 === 0) {
          note(
            `  seed ${database}: ${p.table} ${p.done.toLocaleString('en-US')}/${p.total.toLocaleString('en-US')}`,
          );
        }
      },
    }),
  );
  const result = await client.query({
    query: `SELECT uniqExact(user_id) AS n FROM post_events
      WHERE event_time > toDateTime({since:UInt32}) AND event_time <= toDateTime({now:UInt32}) AND user_id != 0`,
    query_params: {
      since: Math.floor(opts.now.getTime() / 1000) - ACTIVE_DAYS * 86_400,
      now: Math.floor(opts.now.getTime() / 1000),
    },
    format: 'JSONEachRow',
  });
  const [row] = await result.json<{ n: string | number }>();
  return { client, seedMs: ms, activeUsers: Number(row?.n ?? 0) };
}

async function dropDatabase(admin: ClickHouseClient, database: string): Promise<void> {
  await admin.command({
    query: 'DROP DATABASE IF EXISTS {db:Identifier} SYNC',
    query_params: { db: database },
  });
}

interface Target {
  figure: string;
  target: string;
  value: string;
  met: boolean;
  /** How far off, when missed. */
  shortfall?: string;
}

// ---------------------------------------------------------------------------------------------------

interface Env {
  ch: ClickHouseClient;
  redis: Redis;
  writer: RedisCacheWriter;
  prefix: string;
  now: Date;
  nowSec: number;
  activeUsers: number;
}

/**
 * Runs the job and its per-user baseline `scale.reps` times, alternating, so each pair meets the same
 * machine noise, and summarises both as users/s. The last baseline's values are kept for the
 * agreement check.
 */
async function jobVersusBaseline(job: RunnerJob, env: Env, baseline: () => Promise<BaselineRun>) {
  const jobRate: number[] = [];
  const jobSeconds: number[] = [];
  const baseRate: number[] = [];
  let jobUsers = 0;
  let lastBaseline = new Map<string, string>();
  for (let rep = 0; rep < scale.reps; rep++) {
    const run = await timed(() => job.run(runFacts(job.id, env.now)));
    jobUsers = run.value.items;
    jobRate.push(jobUsers / (run.ms / 1000));
    jobSeconds.push(run.ms / 1000);
    const base = await baseline();
    lastBaseline = base.values;
    baseRate.push(base.users / (base.ms / 1000));
    note(
      `  rep ${rep + 1}: job ${jobUsers} users in ${fmt(run.ms / 1000)} s; baseline ${base.users} users in ${fmt(base.ms / 1000)} s`,
    );
  }
  const jobUsersPerSec = spread(jobRate);
  const baseUsersPerSec = spread(baseRate);
  return {
    jobUsers,
    lastBaseline,
    jobUsersPerSec,
    jobSeconds: spread(jobSeconds),
    baseUsersPerSec,
    ratio: jobUsersPerSec.median / baseUsersPerSec.median,
    // Each repetition's pair met the same noise: their ratios show how much of the headline ratio
    // the machine's noise can move.
    pairedRatios: spread(jobRate.map((r, i) => r / (baseRate[i] ?? Number.NaN))),
  };
}

async function benchSuggestions(env: Env) {
  note(
    `1. suggested-users: job on all ${env.activeUsers.toLocaleString('en-US')} active users vs per-user baseline on ${scale.suggestionsBaselineSample}`,
  );
  const jobPrefix = `${env.prefix}:sug`;
  const basePrefix = `${env.prefix}:sugbase`;
  const job = new SuggestedUsersJob({
    clickhouse: env.ch,
    cache: env.writer,
    keyPrefix: jobPrefix,
    perUser: PER_USER,
    activeDays: ACTIVE_DAYS,
    maxFollowees: MAX_FOLLOWEES,
    batchSize: BATCH_SIZE,
    parallelism: PARALLELISM,
    ttlSec: 1800,
  });
  // A deterministic sample spread over the id space (by hash), so it holds celebrities and tail users alike.
  const sampleResult = await env.ch.query({
    query: `SELECT toString(user_id) AS u FROM post_events
      WHERE event_time > toDateTime({since:UInt32}) AND event_time <= toDateTime({now:UInt32}) AND user_id != 0
      GROUP BY user_id ORDER BY cityHash64(user_id) LIMIT {n:UInt32}`,
    query_params: {
      since: env.nowSec - ACTIVE_DAYS * 86_400,
      now: env.nowSec,
      n: scale.suggestionsBaselineSample,
    },
    format: 'JSONEachRow',
  });
  const sample = (await sampleResult.json<{ u: string }>()).map((r) => r.u);

  const compared = await jobVersusBaseline(job, env, () =>
    suggestionsBaseline({
      clickhouse: env.ch,
      redis: env.redis,
      userIds: sample,
      keyOf: (u) => keys.suggestedUsers(basePrefix, u),
      perUser: PER_USER,
      maxFollowees: MAX_FOLLOWEES,
      ttlSec: 1800,
    }),
  );
  // Same answers, or the comparison would be of different work: the job's value for every sampled user
  // must equal the baseline's byte for byte.
  const jobValues = await env.redis.mget(sample.map((u) => keys.suggestedUsers(jobPrefix, u)));
  let agree = 0;
  let bytes = 0;
  let counted = 0;
  sample.forEach((u, i) => {
    const v = jobValues[i];
    if (v !== null && v !== undefined) {
      bytes += Buffer.byteLength(v);
      counted++;
      if (v === compared.lastBaseline.get(u)) agree++;
    }
  });
  await deleteKeys(env.redis, basePrefix);
  await deleteKeys(env.redis, jobPrefix);
  return {
    activeUsers: env.activeUsers,
    usersWritten: compared.jobUsers,
    job: {
      usersPerSec: compared.jobUsersPerSec,
      seconds: compared.jobSeconds,
      batchSize: BATCH_SIZE,
      parallelism: PARALLELISM,
    },
    baseline: {
      usersPerSec: compared.baseUsersPerSec,
      sampleUsers: sample.length,
      inFlight: BASELINE_IN_FLIGHT,
    },
    ratio: compared.ratio,
    pairedRatios: compared.pairedRatios,
    agreement: { identical: agree, compared: sample.length },
    avgValueBytes: counted > 0 ? bytes / counted : 0,
  };
}

async function benchFeed(env: Env) {
  note(
    `2. feed-warmer: job for the top ${FEED.users} users vs per-user baseline on ${scale.feedBaselineSample}`,
  );
  const jobPrefix = `${env.prefix}:feed`;
  const basePrefix = `${env.prefix}:feedbase`;
  const job = new FeedWarmerJob({
    clickhouse: env.ch,
    cache: env.writer,
    keyPrefix: jobPrefix,
    users: FEED.users,
    pageSize: FEED.pageSize,
    activeDays: FEED.activeDays,
    lookbackHours: FEED.lookbackHours,
    decay: FEED.decay,
    ttlSec: 600,
  });
  const topResult = await env.ch.query({
    query: `SELECT toString(user_id) AS u FROM post_events
      WHERE event_time > toDateTime({since:UInt32}) AND event_time <= toDateTime({now:UInt32}) AND user_id != 0
      GROUP BY user_id ORDER BY count() DESC, user_id ASC LIMIT {n:UInt32}`,
    query_params: { since: env.nowSec - FEED.activeDays * 86_400, now: env.nowSec, n: FEED.users },
    format: 'JSONEachRow',
  });
  const top = (await topResult.json<{ u: string }>()).map((r) => r.u);
  // Evenly spaced through the ranking: heavy users (many followees) and light ones in proportion.
  const step = Math.max(1, Math.floor(top.length / scale.feedBaselineSample));
  const sample = top.filter((_, i) => i % step === 0).slice(0, scale.feedBaselineSample);

  const compared = await jobVersusBaseline(job, env, () =>
    feedBaseline({
      clickhouse: env.ch,
      redis: env.redis,
      userIds: sample,
      keyOf: (u) => keys.feed(basePrefix, u),
      now: env.nowSec,
      lookbackHours: FEED.lookbackHours,
      decay: FEED.decay,
      pageSize: FEED.pageSize,
      ttlSec: 600,
    }),
  );
  // Scores are rendered by two different printers (ClickHouse, JavaScript): compare ids exactly and
  // scores to 1e-6 relative.
  const jobValues = await env.redis.mget(sample.map((u) => keys.feed(jobPrefix, u)));
  let agree = 0;
  sample.forEach((u, i) => {
    const a = jobValues[i];
    const b = compared.lastBaseline.get(u);
    if (a === null || a === undefined || b === undefined) return;
    const pa = JSON.parse(a) as { post_id: string; score: number }[];
    const pb = JSON.parse(b) as { post_id: string; score: number }[];
    const same =
      pa.length === pb.length &&
      pa.every((x, k) => {
        const y = pb[k];
        return (
          y !== undefined &&
          x.post_id === y.post_id &&
          Math.abs(x.score - y.score) <= 1e-6 * Math.max(1, Math.abs(y.score))
        );
      });
    if (same) agree++;
  });
  await deleteKeys(env.redis, basePrefix);
  await deleteKeys(env.redis, jobPrefix);
  return {
    users: compared.jobUsers,
    job: { usersPerSec: compared.jobUsersPerSec, seconds: compared.jobSeconds },
    baseline: {
      usersPerSec: compared.baseUsersPerSec,
      sampleUsers: sample.length,
      inFlight: BASELINE_IN_FLIGHT,
    },
    ratio: compared.ratio,
    pairedRatios: compared.pairedRatios,
    agreement: { identical: agree, compared: sample.length },
  };
}

interface TrendingResult {
  window: { events: number; posts: number; minuteRollupRows: number; hourRollupRows: number };
  perPostBoundRatio: number;
  rollup: { rowsRead: number; ms: Spread };
  raw: { rowsRead: number; ms: Spread };
  rowsReadRatio: number;
  speedRatio: number;
  agreement: { sameTopKPosts: number; topK: number; maxRelScoreDiff: number };
}

async function benchTrending(env: Env) {
  note('3. trending: rollups (TrendingJob) vs a raw scan of post_events');
  const prefix = `${env.prefix}:trend`;
  const out: Partial<Record<TrendingWindow, TrendingResult>> = {};
  for (const window of ['1h', '24h', '7d'] as const) {
    const job = new TrendingJob({
      window,
      clickhouse: env.ch,
      cache: env.writer,
      keyPrefix: prefix,
      topK: TRENDING.topK,
      decay: TRENDING.decay[window],
      ttlSec: 600,
    });
    const plan = planWindow(
      env.now.getTime(),
      TRENDING_WINDOWS[window].windowSec,
      60, // only plan.window is used: the raw scan's range
    );
    const jobMs: number[] = [];
    const rawMs: number[] = [];
    let jobRows = 0;
    let rawRows = 0;
    let rawTop: { pid: string; score: number }[] = [];
    for (let rep = 0; rep < scale.reps; rep++) {
      const run = await timed(() => job.run(runFacts(job.id, env.now)));
      jobMs.push(run.ms);
      jobRows = Number(run.value.context?.rows_read ?? 0);
      const raw = await timed(async () => {
        const result = await env.ch.query({
          query: TRENDING_RAW_SQL,
          query_params: {
            decay: TRENDING.decay[window],
            now: env.now.getTime() / 1000,
            from: plan.window.from,
            to: plan.window.to,
            top_k: TRENDING.topK,
          },
          format: 'JSON',
        });
        return result.json<{ pid: string; score: number }>();
      });
      rawMs.push(raw.ms);
      rawRows = raw.value.statistics?.rows_read ?? 0;
      rawTop = raw.value.data;
    }
    // The rollup answer is exact at the window's edges and within a second-order error inside
    // (schema.ts): the top K should hold the same posts.
    const cached = await env.redis.get(keys.trending(prefix, window));
    const jobTop = cached === null ? [] : (JSON.parse(cached) as { post_id: string; score: number }[]);
    const rawIds = new Set(rawTop.map((r) => r.pid));
    const common = jobTop.filter((e) => rawIds.has(e.post_id)).length;
    let maxRelDiff = 0;
    const rawById = new Map(rawTop.map((r) => [r.pid, r.score]));
    for (const e of jobTop) {
      const r = rawById.get(e.post_id);
      if (r !== undefined && r > 0) maxRelDiff = Math.max(maxRelDiff, Math.abs(e.score - r) / r);
    }
    // What bounds any design here: events per post in the window (a per-post pre-aggregate can read no
    // fewer rows than posts) and the rows each rollup holds for the window.
    const shape = await env.ch.query({
      query: `SELECT
          (SELECT count() FROM post_events WHERE event_time >= toDateTime({from:UInt32}) AND event_time < toDateTime({to:UInt32})) AS events,
          (SELECT uniqExact(post_id) FROM post_events WHERE event_time >= toDateTime({from:UInt32}) AND event_time < toDateTime({to:UInt32})) AS posts,
          (SELECT count() FROM post_engagement_1m WHERE bucket >= toDateTime({from:UInt32}) AND bucket < toDateTime({to:UInt32})) AS minute_rows,
          (SELECT count() FROM post_engagement_1h WHERE bucket >= toDateTime({from:UInt32}) AND bucket < toDateTime({to:UInt32})) AS hour_rows`,
      query_params: { from: plan.window.from, to: plan.window.to },
      format: 'JSONEachRow',
    });
    const [sh] = await shape.json<{
      events: string;
      posts: string;
      minute_rows: string;
      hour_rows: string;
    }>();
    const windowShape = {
      events: Number(sh?.events ?? 0),
      posts: Number(sh?.posts ?? 0),
      minuteRollupRows: Number(sh?.minute_rows ?? 0),
      hourRollupRows: Number(sh?.hour_rows ?? 0),
    };
    const job_ = spread(jobMs);
    const raw_ = spread(rawMs);
    out[window] = {
      window: windowShape,
      perPostBoundRatio: windowShape.events / Math.max(1, windowShape.posts),
      rollup: { rowsRead: jobRows, ms: job_ },
      raw: { rowsRead: rawRows, ms: raw_ },
      rowsReadRatio: rawRows / Math.max(1, jobRows),
      speedRatio: raw_.median / job_.median,
      agreement: { sameTopKPosts: common, topK: jobTop.length, maxRelScoreDiff: maxRelDiff },
    };
    note(
      `  ${window}: rollup ${jobRows} rows in ${fmt(job_.median)} ms; raw ${rawRows} rows in ${fmt(raw_.median)} ms`,
    );
  }
  await deleteKeys(env.redis, prefix);
  return out as Record<TrendingWindow, TrendingResult>;
}

/**
 * Exact trending (bench/trending.ts) at S = events / 10, seeded here with the same users and `now`,
 * and at 10·S = the main database.
 */
async function benchTrendingScales(
  env: Env,
  opts: { admin: ClickHouseClient; clickhouseUrl: string; database: string },
) {
  note('3b. trending, exact: S and 10·S events');
  const smallEvents = Math.floor(scale.events / 10);
  const smallDb = `${opts.database}_s`;
  const small = await seedScale(opts.admin, opts.clickhouseUrl, smallDb, {
    users: scale.users,
    events: smallEvents,
    now: env.now,
  });
  try {
    return await benchTrendingExact({
      small: { events: smallEvents, clickhouse: small.client },
      large: { events: scale.events, clickhouse: env.ch },
      now: env.now,
      reps: scale.reps,
      writer: env.writer,
      redis: env.redis,
      prefix: `${env.prefix}:exact`,
      note,
    });
  } finally {
    await small.client.close();
    if (!argv.keep) await dropDatabase(opts.admin, smallDb);
  }
}

/**
 * What one Node connection can push at all, with no client library: the same SETs (value size, EX,
 * depth) pre-encoded as RESP once and written to a raw socket. This is Node's own ceiling on this host,
 * between redis-benchmark (C) and any JavaScript client.
 */
async function nodeSocketCeiling(
  redisUrl: string,
  keyPrefix: string,
  value: string,
  total: number,
): Promise<number> {
  const url = new URL(redisUrl);
  const bulk = (s: string): string => `$${Buffer.byteLength(s)}\r\n${s}\r\n`;
  const parts: string[] = [];
  for (let j = 0; j < WRITE_CHUNK; j++) {
    parts.push(`*5\r\n${bulk('SET')}${bulk(`${keyPrefix}:${j}`)}${bulk(value)}${bulk('EX')}${bulk('600')}`);
  }
  const payload = Buffer.from(parts.join(''));
  const batches = Math.ceil(total / WRITE_CHUNK);
  const expected = batches * WRITE_CHUNK;
  const started = performance.now();
  await new Promise<void>((resolveDone, reject) => {
    const socket = createConnection({ host: url.hostname, port: Number(url.port || 6379) });
    let replies = 0;
    let sent = 0;
    socket.on('error', reject);
    socket.on('data', (d: Buffer) => {
      if (d[0] === 0x2d) reject(new Error(`bench: redis refused a raw SET: ${d.toString('utf8', 0, 200)}`));
      for (const byte of d) if (byte === 0x0a) replies++;
      if (replies >= expected) {
        socket.end();
        resolveDone();
      }
    });
    const pump = (): void => {
      while (sent < batches) {
        sent++;
        if (!socket.write(payload)) {
          socket.once('drain', pump);
          return;
        }
      }
    };
    socket.on('connect', pump);
  });
  return expected / ((performance.now() - started) / 1000);
}

async function benchRedisWrites(env: Env, redisUrl: string, fence: Fence, valueBytes: number) {
  const size = Math.max(2, Math.round(valueBytes));
  note(
    `4. redis writes: ${scale.redisWriteKeys.toLocaleString('en-US')} SETs of ${size} B through RedisCacheWriter vs redis-benchmark -P ${WRITE_CHUNK}`,
  );
  const prefix = `${env.prefix}:w`;
  // A value shaped like a suggestions list, padded to the measured mean size.
  const unit = '{"user_id":"12345","mutual_count":3,"reason":"3 mutual connections"},';
  const value = `[${unit.repeat(Math.ceil(size / unit.length)).slice(0, size - 2)}]`;
  const entries: CacheEntry[] = Array.from({ length: scale.redisWriteKeys }, (_, i) => ({
    key: `${prefix}:${i}`,
    value,
  }));
  const writers = { plain: new RedisCacheWriter(env.redis), fenced: new RedisCacheWriter(env.redis, fence) };
  const signal = new AbortController().signal;
  const loopMax: Record<'plain' | 'fenced' | 'fencedSmall', number[]> = {
    plain: [],
    fenced: [],
    fencedSmall: [],
  };
  const rates: Record<
    'plain' | 'fenced' | 'fencedSmall' | 'benchmark50' | 'benchmark1' | 'nodeSocket',
    number[]
  > = {
    plain: [],
    fenced: [],
    fencedSmall: [],
    benchmark50: [],
    benchmark1: [],
    nodeSocket: [],
  };
  for (let rep = 0; rep < scale.reps; rep++) {
    // Alternate which writer goes first: the first pass of a repetition pays for new keys and warm-up.
    const order =
      rep % 2 === 0
        ? (['plain', 'fenced', 'fencedSmall'] as const)
        : (['fencedSmall', 'fenced', 'plain'] as const);
    for (const kind of order) {
      // As shipped, streamUserValues hands the writer 2000 entries per call and yields between calls;
      // `fencedSmall` is the same fenced writer fed 250 at a time, the change this benchmark argues for.
      const chunk = kind === 'fencedSmall' ? SMALL_CHUNK : WRITE_CHUNK;
      const writer = kind === 'plain' ? writers.plain : writers.fenced;
      const delay = monitorEventLoopDelay({ resolution: 1 });
      delay.enable();
      const run = await timed(async () => {
        for (let i = 0; i < entries.length; i += chunk) {
          await writer.write(entries.slice(i, i + chunk), 600, signal);
          await yieldToLoop();
        }
      });
      delay.disable();
      rates[kind].push(entries.length / (run.ms / 1000));
      loopMax[kind].push(loopDelayMs(delay.max, 1));
    }
    rates.benchmark50.push(
      await redisBenchmark(redisUrl, {
        size,
        clients: 50,
        depth: WRITE_CHUNK,
        requests: scale.redisBenchmarkRequests,
      }),
    );
    rates.benchmark1.push(
      await redisBenchmark(redisUrl, {
        size,
        clients: 1,
        depth: WRITE_CHUNK,
        requests: scale.redisBenchmarkRequests,
      }),
    );
    rates.nodeSocket.push(await nodeSocketCeiling(redisUrl, prefix, value, scale.redisWriteKeys));
    note(
      `  rep ${rep + 1}: plain ${fmt(rates.plain.at(-1) ?? 0)}/s, fenced ${fmt(rates.fenced.at(-1) ?? 0)}/s, fenced by ${SMALL_CHUNK} ${fmt(rates.fencedSmall.at(-1) ?? 0)}/s, redis-benchmark 50 clients ${fmt(rates.benchmark50.at(-1) ?? 0)}/s, 1 client ${fmt(rates.benchmark1.at(-1) ?? 0)}/s, node raw socket ${fmt(rates.nodeSocket.at(-1) ?? 0)}/s`,
    );
  }
  await env.redis.unlink('key:__rand_int__');
  await deleteKeys(env.redis, prefix);
  const plain = spread(rates.plain);
  const fenced = spread(rates.fenced);
  const fencedSmall = spread(rates.fencedSmall);
  const b50 = spread(rates.benchmark50);
  const b1 = spread(rates.benchmark1);
  const nodeSocket = spread(rates.nodeSocket);
  return {
    valueBytes: size,
    pipelineDepth: WRITE_CHUNK,
    keys: entries.length,
    writer: {
      plain: { setsPerSec: plain, loopDelayMaxMs: spread(loopMax.plain) },
      fenced: { setsPerSec: fenced, loopDelayMaxMs: spread(loopMax.fenced) },
      fencedBy250: {
        setsPerSec: fencedSmall,
        loopDelayMaxMs: spread(loopMax.fencedSmall),
        entriesPerCall: SMALL_CHUNK,
      },
    },
    redisBenchmark: {
      clients50: { setsPerSec: b50 },
      clients1: { setsPerSec: b1 },
      requests: scale.redisBenchmarkRequests,
    },
    nodeRawSocket: { setsPerSec: nodeSocket },
    ratioNodeSocket: nodeSocket.median / b50.median,
    ratioFencedVsNodeSocket: fenced.median / nodeSocket.median,
    ratioPlain: plain.median / b50.median,
    ratioFenced: fenced.median / b50.median,
    ratioFencedBy250: fencedSmall.median / b50.median,
    ratioPlainVsOneClient: plain.median / b1.median,
  };
}

async function benchLateness(env: Env, fence: Fence) {
  note('5. scheduler lateness: a 1 s job in a real Runner while suggested-users runs in the same process');
  const prefix = `${env.prefix}:late`;
  const lateness: number[] = [];
  let suggestionsRunning = false;
  const tick: RunnerJob = {
    id: 'bench-tick',
    run: (ctx) => {
      if (suggestionsRunning) lateness.push(Date.now() - ctx.scheduledAt.getTime());
      return Promise.resolve({ items: 0 });
    },
  };
  const suggestions = new SuggestedUsersJob({
    clickhouse: env.ch,
    cache: new RedisCacheWriter(env.redis, fence),
    keyPrefix: prefix,
    perUser: PER_USER,
    activeDays: ACTIVE_DAYS,
    maxFollowees: MAX_FOLLOWEES,
    batchSize: BATCH_SIZE,
    parallelism: PARALLELISM,
    ttlSec: 1800,
  });
  const settings = (intervalSec: number, priority: number): JobSettings => ({
    enabled: true,
    intervalSec,
    cron: undefined,
    timeoutSec: 600,
    ttlSec: 3 * intervalSec,
    retries: 0,
    priority,
  });
  const freshness = new Map<string, number>();
  const store: FreshnessStore = {
    lastSuccessAt: (job) => Promise.resolve(freshness.get(job) ?? null),
    recordSuccess: (job, record) => {
      freshness.set(job, record.lastSuccessAt);
      return Promise.resolve();
    },
  };
  const runner = new Runner({
    jobs: [
      { job: tick, settings: settings(1, 3) },
      // A day's interval: it runs only when triggered below.
      { job: suggestions, settings: settings(86_400, 1) },
    ],
    maxConcurrentJobs: 5,
    backoff: { afterFailures: 3, baseSec: 1, maxSec: 300 },
    cronTimezone: 'UTC',
    clock: createSystemClock(),
    log: silent,
    freshness: store,
  });
  let onEnded: ((e: { outcome: string; items: number | undefined; durationMs: number }) => void) | undefined;
  runner.events.on('run:ended', (e) => {
    if (e.job === suggestions.id) onEnded?.(e);
  });
  const nextEnd = (): Promise<{ outcome: string; items: number | undefined; durationMs: number }> =>
    new Promise((resolveEnded) => {
      onEnded = resolveEnded;
    });
  const loopDelay = monitorEventLoopDelay({ resolution: LOOP_RESOLUTION_MS });
  runner.start();
  try {
    // Let a few ticks fire first so the runner is in its steady state.
    await new Promise((r) => setTimeout(r, 2500));
    // One suggestions run at the default scale spans a minute or more of 1 s ticks; short (quick) runs
    // are repeated, up to the repetition count, until at least MIN_TICKS ticks have been observed.
    const runs: { outcome: string; items: number | undefined; durationMs: number }[] = [];
    loopDelay.enable();
    while (runs.length < (quick ? 10 : scale.reps) && (runs.length === 0 || lateness.length < MIN_TICKS)) {
      const ended = nextEnd();
      suggestionsRunning = true;
      let triggered = runner.trigger(suggestions.id);
      // The previous run's permit may still be on its way back when its end event fires.
      while (triggered === 'running') {
        await new Promise((r) => setTimeout(r, 20));
        triggered = runner.trigger(suggestions.id);
      }
      if (triggered !== 'started') throw new Error(`bench: could not trigger suggested-users: ${triggered}`);
      const run = await ended;
      suggestionsRunning = false;
      if (run.outcome !== 'success')
        throw new Error(`bench: suggested-users run under the Runner ended ${run.outcome}`);
      runs.push(run);
    }
    loopDelay.disable();
    const sorted = [...lateness].sort((a, b) => a - b);
    const result = {
      suggestionsRuns: runs.length,
      suggestionsRunSeconds: runs.map((r) => r.durationMs / 1000),
      suggestionsUsers: runs[0]?.items ?? 0,
      ticks: sorted.length,
      latenessMs: {
        p50: percentile(sorted, 50),
        p99: percentile(sorted, 99),
        max: sorted[sorted.length - 1] ?? Number.NaN,
      },
      // The histogram holds each sampling interval, so its own resolution is taken off.
      eventLoopDelayMs: {
        p50: loopDelayMs(loopDelay.percentile(50), LOOP_RESOLUTION_MS),
        p99: loopDelayMs(loopDelay.percentile(99), LOOP_RESOLUTION_MS),
        max: loopDelayMs(loopDelay.max, LOOP_RESOLUTION_MS),
      },
    };
    note(
      `  ${result.ticks} ticks: lateness p50 ${fmt(result.latenessMs.p50)} ms, p99 ${fmt(result.latenessMs.p99)} ms, max ${fmt(result.latenessMs.max)} ms; loop delay p99 ${fmt(result.eventLoopDelayMs.p99)} ms`,
    );
    return result;
  } finally {
    await runner.stop(5000);
    await deleteKeys(env.redis, prefix);
  }
}

interface MemoryPoint {
  label: string;
  users: number;
  events: number;
  activeUsers: number;
  usersWritten: number;
  seconds: number;
  idleRssMb: number;
  peakRssMb: number;
  sampledPeakRssMb: number;
}

async function memoryChild(args: {
  clickhouseUrl: string;
  redisUrl: string;
  database: string;
  prefix: string;
  now: Date;
}) {
  const script = join(dirname(fileURLToPath(import.meta.url)), 'memory-child.js');
  const child = spawn(
    process.execPath,
    [
      script,
      '--clickhouse-url',
      args.clickhouseUrl,
      '--redis-url',
      args.redisUrl,
      '--database',
      args.database,
      '--prefix',
      args.prefix,
      '--now',
      String(args.now.getTime()),
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  let out = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (d: string) => {
    out += d;
  });
  const code = await new Promise<number | null>((resolveExit, reject) => {
    child.on('error', reject);
    child.on('close', resolveExit);
  });
  if (code !== 0) throw new Error(`bench: memory child exited with ${String(code)}`);
  const line = out.trim().split('\n').at(-1) ?? '';
  return JSON.parse(line) as {
    users: number;
    ms: number;
    idleRssMb: number;
    sampledPeakRssMb: number;
    maxRssMb: number;
  };
}

async function benchMemory(
  env: Env,
  ctx: { admin: ClickHouseClient; clickhouseUrl: string; redisUrl: string; mainDatabase: string },
): Promise<MemoryPoint[]> {
  const eventsPerUser = scale.events / scale.users;
  const points: { users: number; events: number; database: string | undefined }[] = [];
  const extra = [20_000];
  if (!quick && scale.users !== 100_000) extra.push(100_000);
  if (argv['with-1m']) extra.push(1_000_000);
  for (const n of extra) {
    if (n !== scale.users)
      points.push({
        users: n,
        events: Math.min(10_000_000, Math.round(n * eventsPerUser)),
        database: undefined,
      });
  }
  points.push({ users: scale.users, events: scale.events, database: ctx.mainDatabase });
  points.sort((a, b) => a.users - b.users);
  note(
    `6. memory: peak RSS of a process running only suggested-users at ${points.map((p) => p.users.toLocaleString('en-US')).join(', ')} users`,
  );
  const out: MemoryPoint[] = [];
  for (const p of points) {
    let database = p.database;
    let activeUsers = env.activeUsers;
    let seeded: ClickHouseClient | undefined;
    if (database === undefined) {
      database = `${ctx.mainDatabase}_m${p.users}`;
      const s = await seedScale(ctx.admin, ctx.clickhouseUrl, database, {
        users: p.users,
        events: p.events,
        now: env.now,
      });
      seeded = s.client;
      activeUsers = s.activeUsers;
    }
    try {
      const prefix = `${env.prefix}:mem`;
      const r = await memoryChild({
        clickhouseUrl: ctx.clickhouseUrl,
        redisUrl: ctx.redisUrl,
        database,
        prefix,
        now: env.now,
      });
      await deleteKeys(env.redis, prefix);
      out.push({
        label: `${p.users.toLocaleString('en-US')} users`,
        users: p.users,
        events: p.events,
        activeUsers,
        usersWritten: r.users,
        seconds: r.ms / 1000,
        idleRssMb: r.idleRssMb,
        peakRssMb: r.maxRssMb,
        sampledPeakRssMb: r.sampledPeakRssMb,
      });
      note(
        `  ${p.users} users: ${r.users} written in ${fmt(r.ms / 1000)} s, peak RSS ${fmt(r.maxRssMb)} MB (idle ${fmt(r.idleRssMb)} MB)`,
      );
    } finally {
      if (seeded !== undefined) {
        await seeded.close();
        if (!argv.keep) await dropDatabase(ctx.admin, database);
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------

function table(rows: string[][]): string {
  const widths = rows[0]?.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length))) ?? [];
  const line = (r: string[]): string => `| ${r.map((cell, c) => cell.padEnd(widths[c] ?? 0)).join(' | ')} |`;
  const [head, ...body] = rows;
  if (head === undefined) return '';
  return [line(head), `| ${widths.map((w) => '-'.repeat(w)).join(' | ')} |`, ...body.map(line)].join('\n');
}

function x(ratio: number): string {
  return `${fmt(ratio)}×`;
}

/** The ratio of medians, with the range of the per-repetition ratios. */
function xPaired(ratio: number, paired: Spread): string {
  return paired.values.length > 1 ? `${x(ratio)} (${fmt(paired.min)}–${fmt(paired.max)} per rep)` : x(ratio);
}

async function main(): Promise<void> {
  const startedAt = Date.now();
  note(
    `scale: ${scale.users.toLocaleString('en-US')} users, ${scale.events.toLocaleString('en-US')} events, ${scale.reps} repetitions${quick ? ' (quick)' : ''}`,
  );
  note('starting local servers (scripts/services.sh up)');
  execFileSync('bash', [join(ROOT, 'scripts', 'services.sh'), 'up'], { stdio: ['ignore', 2, 2] });
  const { redisUrl, clickhouseUrl } = servicesEnv();

  const runId = `${new Date().toISOString().replace(/[-:T]/g, '').slice(0, 14)}_${randomBytes(3).toString('hex')}`;
  const database = `bench_${runId}`;
  const prefix = `bench-${runId}`;
  // A fixed `now` a little off the minute, shared by every run: repetitions compute identical values.
  const now = new Date(Math.floor(Date.now() / 1000) * 1000 - 17_000);
  const admin = createClickHouse({
    clickhouse: { url: clickhouseUrl, user: 'default', password: '', database: 'default' },
  });
  const redis = createStandaloneRedis({ redisUrl }, silent);
  await redis.connect();
  // The production write path is fenced (LEADER_ELECTION=true): hold a lease of our own for the run.
  const leaseKey = `${prefix}:leader`;
  const token = `1:bench-${runId}`;
  await redis.set(leaseKey, token, 'EX', 3 * 3600);
  const fence: Fence = {
    key: leaseKey,
    token: () => token,
    lost: () => {
      note('fence reported the bench lease lost');
    },
  };

  let ch: ClickHouseClient | undefined;
  try {
    note(`seeding ${database}`);
    const seeded = await seedScale(admin, clickhouseUrl, database, {
      users: scale.users,
      events: scale.events,
      now,
    });
    ch = seeded.client;
    note(
      `  seeded in ${fmt(seeded.seedMs / 1000)} s; ${seeded.activeUsers.toLocaleString('en-US')} active users`,
    );
    const env: Env = {
      ch,
      redis,
      writer: new RedisCacheWriter(redis, fence),
      prefix,
      now,
      nowSec: Math.floor(now.getTime() / 1000),
      activeUsers: seeded.activeUsers,
    };

    const suggestions = await benchSuggestions(env);
    // The same comparison on a second, smaller data set (same generator and seed), as the issue asks.
    const suggestions50k = quick
      ? undefined
      : await withSeeded(admin, clickhouseUrl, `${database}_s50k`, 50_000, env, benchSuggestions);
    const feed = await benchFeed(env);
    const trending = await benchTrending(env);
    const trendingExact = await benchTrendingScales(env, { admin, clickhouseUrl, database });
    const redisWrites = await benchRedisWrites(env, redisUrl, fence, suggestions.avgValueBytes);
    // bench/writes.ts: fenced path vs redis-benchmark -P 64, and the cluster against one node.
    const fencedWrites = await benchFencedWrites({
      redisUrl,
      clusterNodes: process.env.REDIS_CLUSTER_NODES,
      valueBytes: suggestions.avgValueBytes,
      keys: scale.redisWriteKeys / 2,
      reps: scale.reps,
      note,
    });
    const lateness = await benchLateness(env, fence);
    const memory = await benchMemory(env, { admin, clickhouseUrl, redisUrl, mainDatabase: database });
    // Last: it changes the follow graph of the bench database (bench/incremental.ts).
    const incremental = await benchIncremental({
      ...{ clickhouseUrl, database, redis, fence, now, note },
      prefix: `${prefix}:incr`,
      levels: incrementalLevels(scale.reps),
    });
    const incrementalFigures = incrementalReport(incremental);

    const at100k = memory.find((m) => m.users === 100_000);
    const targets: Target[] = [];
    const add = (figure: string, target: string, value: string, met: boolean, shortfall?: string): void => {
      targets.push({ figure, target, value, met, ...(met || shortfall === undefined ? {} : { shortfall }) });
    };
    for (const [label, s] of [
      [`${fmt(suggestions.activeUsers)} users`, suggestions],
      ...(suggestions50k ? [[`${fmt(suggestions50k.activeUsers)} users`, suggestions50k] as const] : []),
    ] as const) {
      add(
        `suggestions speed-up at ${label}`,
        `≥ ${SUGGESTIONS_TARGET}×`,
        x(s.ratio),
        s.ratio >= SUGGESTIONS_TARGET,
        `${fmt((1 - s.ratio / SUGGESTIONS_TARGET) * 100)} % short`,
      );
    }
    add(
      `suggestions: every active user (${suggestions.activeUsers.toLocaleString('en-US')}) refreshed`,
      '< 60 s',
      `${fmt(suggestions.job.seconds.median)} s`,
      suggestions.job.seconds.median < 60,
      `${fmt(suggestions.job.seconds.median - 60)} s over`,
    );
    add(
      'feed-warmer speed-up',
      '≥ 20×',
      x(feed.ratio),
      feed.ratio >= 20,
      `${fmt((1 - feed.ratio / 20) * 100)} % short`,
    );
    for (const w of ['1h', '24h', '7d'] as const) {
      const t = trending[w];
      add(
        `trending-${w}: fewer rows read`,
        '≥ 10×',
        x(t.rowsReadRatio),
        t.rowsReadRatio >= 10,
        `${fmt((1 - t.rowsReadRatio / 10) * 100)} % short`,
      );
    }
    /** A rate target as a share of a reference rate: `ratio` and `goal` are fractions. */
    const addShare = (figure: string, ratio: number, goal: number): void =>
      add(
        figure,
        `≥ ${fmt(goal * 100)} %`,
        `${fmt(ratio * 100)} %`,
        ratio >= goal,
        `${fmt((goal - ratio) * 100)} points short`,
      );
    addShare('redis writes vs redis-benchmark (fenced, as shipped)', redisWrites.ratioFenced, 0.5);
    addShare('fenced writes vs redis-benchmark -P 64 (bench/writes.ts)', fencedWrites.ratioFenced, 0.4);
    addShare('redis writes vs redis-benchmark (plain)', redisWrites.ratioPlain, 0.5);
    add(
      'scheduler lateness p99',
      '≤ 20 ms',
      `${fmt(lateness.latenessMs.p99)} ms`,
      lateness.latenessMs.p99 <= 20,
      `${fmt(lateness.latenessMs.p99 - 20)} ms over`,
    );
    targets.push(...trendingExactTargets(trendingExact));
    if (at100k !== undefined) {
      add(
        'peak RSS at 100 k users',
        '≤ 250 MB',
        `${fmt(at100k.peakRssMb)} MB`,
        at100k.peakRssMb <= 250,
        `${fmt(at100k.peakRssMb - 250)} MB over`,
      );
    }

    targets.push(...incrementalFigures.targets);
    const rows: string[][] = [
      ['#', 'figure', 'cache-refresher', 'naive design / hardware limit', 'ratio', 'target', 'met'],
    ];
    const met = (figure: string): string => {
      const t = targets.find((tt) => tt.figure.startsWith(figure));
      return t === undefined ? '' : t.met ? 'yes' : 'NO';
    };
    for (const s of [suggestions50k, suggestions]) {
      if (s === undefined) continue;
      rows.push([
        '1',
        `suggested users at ${fmt(s.activeUsers)}, users/s (baseline: ${s.baseline.sampleUsers} users, ${BASELINE_IN_FLIGHT} in flight)`,
        fmtSpread(s.job.usersPerSec),
        fmtSpread(s.baseline.usersPerSec),
        xPaired(s.ratio, s.pairedRatios),
        `≥ ${SUGGESTIONS_TARGET}×`,
        met(`suggestions speed-up at ${fmt(s.activeUsers)} users`),
      ]);
    }
    rows.push([
      '1',
      `suggested users, all ${suggestions.activeUsers.toLocaleString('en-US')} active users, s`,
      fmtSpread(suggestions.job.seconds),
      fmt(suggestions.activeUsers / suggestions.baseline.usersPerSec.median) + ' (extrapolated)',
      xPaired(suggestions.ratio, suggestions.pairedRatios),
      '< 60 s',
      met('suggestions: every'),
    ]);
    rows.push([
      '1',
      'suggested users, identical values on the sample',
      `${suggestions.agreement.identical}/${suggestions.agreement.compared}`,
      '',
      '',
      '',
      '',
    ]);
    rows.push([
      '2',
      `feed warmer, users/s (top ${feed.users.toLocaleString('en-US')}; baseline: ${feed.baseline.sampleUsers} users)`,
      fmtSpread(feed.job.usersPerSec),
      fmtSpread(feed.baseline.usersPerSec),
      xPaired(feed.ratio, feed.pairedRatios),
      '≥ 20×',
      met('feed-warmer'),
    ]);
    rows.push([
      '2',
      'feed warmer, identical pages on the sample',
      `${feed.agreement.identical}/${feed.agreement.compared}`,
      '',
      '',
      '',
      '',
    ]);
    for (const w of ['1h', '24h', '7d'] as const) {
      const t = trending[w];
      rows.push([
        '3',
        `trending-${w}, rows read (rollup vs raw scan)`,
        fmt(t.rollup.rowsRead),
        fmt(t.raw.rowsRead),
        x(t.rowsReadRatio),
        '≥ 10×',
        met(`trending-${w}`),
      ]);
      rows.push([
        '3',
        `trending-${w}, query time ms (same top ${t.agreement.topK}: ${t.agreement.sameTopKPosts})`,
        fmtSpread(t.rollup.ms),
        fmtSpread(t.raw.ms),
        x(t.speedRatio),
        '',
        '',
      ]);
      rows.push([
        '3',
        `trending-${w}, window: events / distinct posts (per-post bound)`,
        `${fmt(t.window.events)} / ${fmt(t.window.posts)}`,
        '',
        x(t.perPostBoundRatio),
        '',
        '',
      ]);
    }
    rows.push(...trendingExactRows(trendingExact));
    rows.push([
      '4',
      `redis SET/s, ${redisWrites.valueBytes} B values, depth ${redisWrites.pipelineDepth}, fenced (as shipped)`,
      fmtSpread(redisWrites.writer.fenced.setsPerSec),
      `${fmtSpread(redisWrites.redisBenchmark.clients50.setsPerSec)} (redis-benchmark, 50 clients)`,
      `${fmt(redisWrites.ratioFenced * 100)} %`,
      '≥ 50 %',
      met('redis writes vs redis-benchmark (fenced'),
    ]);
    rows.push([
      '4',
      `redis SET/s, ${fencedWrites.valueBytes} B values, fenced (as shipped, ${fencedWrites.writerCallsInFlight} writer streams) vs redis-benchmark -P ${fencedWrites.redisBenchmark.pipelineDepth}; per rep ${fmt(fencedWrites.pairedRatiosFenced.min * 100)}–${fmt(fencedWrites.pairedRatiosFenced.max * 100)} %`,
      fmtSpread(fencedWrites.fenced.setsPerSec),
      `${fmtSpread(fencedWrites.redisBenchmark.setsPerSec)} (redis-benchmark -P ${fencedWrites.redisBenchmark.pipelineDepth}, ${fencedWrites.redisBenchmark.clients} clients)`,
      `${fmt(fencedWrites.ratioFenced * 100)} %`,
      '≥ 40 %',
      met('fenced writes vs redis-benchmark -P 64'),
    ]);
    rows.push([
      '4',
      'redis SET/s, plain pipeline (no fence)',
      fmtSpread(redisWrites.writer.plain.setsPerSec),
      `${fmtSpread(redisWrites.redisBenchmark.clients1.setsPerSec)} (redis-benchmark, 1 client)`,
      `${fmt(redisWrites.ratioPlain * 100)} % of 50 cl., ${fmt(redisWrites.ratioPlainVsOneClient * 100)} % of 1 cl.`,
      '≥ 50 %',
      met('redis writes vs redis-benchmark (plain'),
    ]);
    rows.push([
      '4',
      `redis SET/s, fenced, ${SMALL_CHUNK} entries per writer call (proposed); loop-delay max ms: shipped ${fmt(redisWrites.writer.fenced.loopDelayMaxMs.median)}, proposed ${fmt(redisWrites.writer.fencedBy250.loopDelayMaxMs.median)}`,
      fmtSpread(redisWrites.writer.fencedBy250.setsPerSec),
      `${fmtSpread(redisWrites.redisBenchmark.clients50.setsPerSec)} (redis-benchmark, 50 clients)`,
      `${fmt(redisWrites.ratioFencedBy250 * 100)} %`,
      '',
      '',
    ]);
    rows.push([
      '4',
      'redis SET/s, raw Node socket, pre-encoded RESP (no client library)',
      fmtSpread(redisWrites.nodeRawSocket.setsPerSec),
      `${fmtSpread(redisWrites.redisBenchmark.clients50.setsPerSec)} (redis-benchmark, 50 clients)`,
      `${fmt(redisWrites.ratioNodeSocket * 100)} %`,
      '',
      '',
    ]);
    rows.push([
      '5',
      `1 s job lateness during a suggestions run, ms (${lateness.ticks} ticks)`,
      `p50 ${fmt(lateness.latenessMs.p50)}, p99 ${fmt(lateness.latenessMs.p99)}, max ${fmt(lateness.latenessMs.max)}`,
      '',
      '',
      'p99 ≤ 20 ms',
      met('scheduler lateness'),
    ]);
    rows.push([
      '5',
      'event-loop delay during that run, ms',
      `p50 ${fmt(lateness.eventLoopDelayMs.p50)}, p99 ${fmt(lateness.eventLoopDelayMs.p99)}, max ${fmt(lateness.eventLoopDelayMs.max)}`,
      '',
      '',
      '',
      '',
    ]);
    for (const m of memory) {
      rows.push([
        '6',
        `peak RSS, suggestions only, ${m.label} (${m.usersWritten.toLocaleString('en-US')} written in ${fmt(m.seconds)} s)`,
        `${fmt(m.peakRssMb)} MB (idle ${fmt(m.idleRssMb)} MB)`,
        '',
        '',
        m.users === 100_000 ? '≤ 250 MB' : 'flat',
        m.users === 100_000 ? met('peak RSS at 100 k') : '',
      ]);
    }

    rows.push(...incrementalFigures.rows);
    const durationSec = (Date.now() - startedAt) / 1000;
    const results = {
      schema: 'cache-refresher.bench.v1',
      date: new Date().toISOString(),
      durationSec: round(durationSec, 4),
      machine: {
        cores: availableParallelism(),
        cpuModel: cpus()[0]?.model ?? 'unknown',
        node: process.version,
        platform: `${process.platform}/${process.arch}`,
      },
      scale: {
        ...scale,
        quick,
        activeUsers: seeded.activeUsers,
        seedSeconds: seeded.seedMs / 1000,
        days: 7,
        seed: 42,
      },
      suggestions,
      suggestionsFullRefresh: {
        target: SUGGESTIONS_TARGET,
        batchSize: BATCH_SIZE,
        parallelism: PARALLELISM,
        loadAverage1m: os.loadavg()[0],
        points: [suggestions50k, suggestions].filter((p) => p !== undefined),
      },
      feed,
      trending,
      trendingExact,
      redisWrites,
      fencedWrites,
      lateness,
      memory,
      incremental,
      targets,
    };
    writeFileSync(RESULTS_PATH, `${JSON.stringify(results, null, 2)}\n`);
    process.stdout.write(
      `\ncache-refresher benchmark, ${results.date}, ${results.machine.cores} cores (${results.machine.cpuModel}), node ${process.version}\n`,
    );
    process.stdout.write(
      `scale: ${scale.users.toLocaleString('en-US')} users, ${scale.events.toLocaleString('en-US')} events over 7 days, ${seeded.activeUsers.toLocaleString('en-US')} active; median (min–max) of ${scale.reps} repetitions\n\n`,
    );
    process.stdout.write(`${table(rows)}\n\n`);
    for (const t of targets.filter((tt) => !tt.met)) {
      process.stdout.write(
        `MISSED: ${t.figure}: ${t.value} against ${t.target}${t.shortfall ? ` (${t.shortfall})` : ''}\n`,
      );
    }
    process.stdout.write(`\nwrote ${RESULTS_PATH}; total ${fmt(durationSec)} s\n`);
  } finally {
    await deleteKeys(redis, prefix).catch((err: unknown) => {
      note(`could not delete bench keys under ${prefix}: ${String(err)}`);
    });
    await ch?.close();
    if (argv.keep) note(`kept database ${database}`);
    else await dropDatabase(admin, database);
    await admin.close();
    redis.disconnect();
  }
}

/** Seeds `database` with `users` (100 events each), runs `fn` on it, and drops it. */
async function withSeeded<T>(
  admin: ClickHouseClient,
  clickhouseUrl: string,
  database: string,
  users: number,
  base: Env,
  fn: (env: Env) => Promise<T>,
): Promise<T> {
  note(`seeding ${database} (${users.toLocaleString('en-US')} users)`);
  const s = await seedScale(admin, clickhouseUrl, database, { users, events: users * 100, now: base.now });
  try {
    return await fn({
      ...base,
      ch: s.client,
      activeUsers: s.activeUsers,
      prefix: `${base.prefix}:s${users}`,
    });
  } finally {
    await s.client.close();
    if (!argv.keep) await dropDatabase(admin, database);
  }
}

async function millionOnly(): Promise<void> {
  if (argv.scale !== '1m') throw new Error(`bench: --scale takes only "1m", got ${String(argv.scale)}`);
  execFileSync('bash', [join(ROOT, 'scripts', 'services.sh'), 'up'], { stdio: ['ignore', 2, 2] });
  const { redisUrl, clickhouseUrl } = servicesEnv();
  const reuse =
    argv.database === undefined ? undefined : { database: argv.database, now: new Date(Number(argv.now)) };
  if (reuse && !Number.isFinite(reuse.now.getTime()))
    throw new Error('bench: --database needs --now (unix ms)');
  const p = await benchMillion({
    clickhouseUrl,
    redisUrl,
    resultsPath: RESULTS_PATH,
    keep: argv.keep,
    ...(reuse ? { reuse } : {}),
  });
  process.stdout.write(
    `suggested-users, ${p.activeUsers.toLocaleString('en-US')} active users: ${fmt(p.seconds)} s (target < 600 s: ${p.met.seconds ? 'met' : 'MISSED'}), ${fmt(p.usersPerSec)} users/s, peak RSS ${fmt(p.peakRssMb)} MB (target ≤ 250 MB: ${p.met.peakRss ? 'met' : 'MISSED'}); load ${fmt(p.loadBefore)} -> ${fmt(p.loadAfter)}\n`,
  );
}

(argv.scale === undefined ? main() : millionOnly()).catch((err: unknown) => {
  process.stderr.write(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
});
