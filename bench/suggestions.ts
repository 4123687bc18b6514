import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createClickHouse, createRedis } from '../src/clients.js';
import { pino } from 'pino';
import { migrate } from '../src/clickhouse/schema.js';
import { seedDatabase } from '../src/clickhouse/seed.js';
import { SUGGESTED_USERS_BATCH_DEFAULTS } from '../src/config.js';
import { fmt, round } from './stats.js';

/**
 * The suggested-users full refresh at a million active users (`npm run bench -- --scale 1m`): one run
 * of the real SuggestedUsersJob, as shipped (batch size and parallelism defaults, fenced-free plain
 * writer as in memory-child.ts), in a process of its own so its peak RSS is the job's, not the
 * bench's. The figure goes to bench/results.json under `suggestions1m`, next to the default run's.
 */

/** 1 M users and 20 M events over 7 days: with the seed's skew every user acts at least once. */
export const MILLION = { users: 1_000_000, events: 20_000_000 } as const;
/** CONTRACT §1.4's target for the full refresh at 1 M active users. */
export const MILLION_TARGET = { seconds: 600, peakRssMb: 250 } as const;

export interface MillionPoint {
  users: number;
  events: number;
  activeUsers: number;
  usersWritten: number;
  seconds: number;
  usersPerSec: number;
  peakRssMb: number;
  idleRssMb: number;
  batchSize: number;
  parallelism: number;
  /** The machine's 1-minute load average before and after the run (the machine is shared). */
  loadBefore: number;
  loadAfter: number;
  seedSeconds?: number;
  met: { seconds: boolean; peakRss: boolean };
}

function note(msg: string): void {
  process.stderr.write(`[bench-1m ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

async function childRun(args: {
  clickhouseUrl: string;
  redisUrl: string;
  database: string;
  prefix: string;
  now: Date;
}): Promise<{ users: number; ms: number; idleRssMb: number; maxRssMb: number }> {
  const script = join(dirname(fileURLToPath(import.meta.url)), 'memory-child.js');
  const child = spawn(
    process.execPath,
    [
      script,
      ...['--clickhouse-url', args.clickhouseUrl, '--redis-url', args.redisUrl],
      ...['--database', args.database, '--prefix', args.prefix, '--now', String(args.now.getTime())],
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
  return JSON.parse(out.trim().split('\n').at(-1) ?? '') as {
    users: number;
    ms: number;
    idleRssMb: number;
    maxRssMb: number;
  };
}

/** Deletes the run's million keys (they would hold about 1.5 GB of the shared Redis until their TTL). */
async function deleteKeys(redisUrl: string, prefix: string): Promise<void> {
  const redis = createRedis({ redisUrl }, pino({ level: 'silent' }));
  await redis.connect();
  try {
    let cursor = '0';
    do {
      const [next, batch] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 10_000);
      cursor = next;
      if (batch.length > 0) await redis.unlink(...batch);
    } while (cursor !== '0');
  } finally {
    redis.disconnect();
  }
}

/**
 * Seeds a database of MILLION users (or uses `reuse`, a database already seeded that way, with the
 * seed's `now`), runs the job once and merges the point into `resultsPath`.
 */
export async function benchMillion(opts: {
  clickhouseUrl: string;
  redisUrl: string;
  resultsPath: string;
  reuse?: { database: string; now: Date };
  keep: boolean;
}): Promise<MillionPoint> {
  const runId = `${new Date().toISOString().replace(/[-:T]/g, '').slice(0, 14)}_${randomBytes(3).toString('hex')}`;
  const database = opts.reuse?.database ?? `bench_${runId}_1m`;
  const now = opts.reuse?.now ?? new Date(Math.floor(Date.now() / 1000) * 1000 - 17_000);
  const admin = createClickHouse({
    clickhouse: { url: opts.clickhouseUrl, user: 'default', password: '', database: 'default' },
  });
  const client = createClickHouse({
    clickhouse: { url: opts.clickhouseUrl, user: 'default', password: '', database },
  });
  let seedSeconds: number | undefined;
  try {
    if (opts.reuse === undefined) {
      await admin.command({ query: 'CREATE DATABASE {db:Identifier}', query_params: { db: database } });
      await migrate(client);
      const started = performance.now();
      note(`seeding ${database}: ${MILLION.users} users, ${MILLION.events} events`);
      await seedDatabase(client, { ...MILLION, days: 7, seed: 42, now });
      seedSeconds = (performance.now() - started) / 1000;
      note(`  seeded in ${fmt(seedSeconds)} s`);
    }
    const active = await client.query({
      query: `SELECT uniqExact(user_id) AS n FROM post_events
        WHERE event_time > toDateTime({since:UInt32}) AND event_time <= toDateTime({now:UInt32}) AND user_id != 0`,
      query_params: {
        now: Math.floor(now.getTime() / 1000),
        since: Math.floor(now.getTime() / 1000) - 7 * 86_400,
      },
      format: 'JSONEachRow',
    });
    const activeUsers = Number((await active.json<{ n: string | number }>())[0]?.n ?? 0);
    const loadBefore = loadavg()[0] ?? 0;
    note(`running suggested-users over ${activeUsers} active users (load ${fmt(loadBefore)})`);
    const r = await childRun({
      clickhouseUrl: opts.clickhouseUrl,
      redisUrl: opts.redisUrl,
      database,
      prefix: `bench-${runId}-1m`,
      now,
    });
    const loadAfter = loadavg()[0] ?? 0;
    await deleteKeys(opts.redisUrl, `bench-${runId}-1m`);
    const seconds = r.ms / 1000;
    const point: MillionPoint = {
      users: MILLION.users,
      events: MILLION.events,
      activeUsers,
      usersWritten: r.users,
      seconds: round(seconds, 4),
      usersPerSec: round(r.users / seconds, 4),
      peakRssMb: round(r.maxRssMb, 4),
      idleRssMb: round(r.idleRssMb, 4),
      ...SUGGESTED_USERS_BATCH_DEFAULTS,
      loadBefore,
      loadAfter,
      ...(seedSeconds === undefined ? {} : { seedSeconds: round(seedSeconds, 4) }),
      met: { seconds: seconds < MILLION_TARGET.seconds, peakRss: r.maxRssMb <= MILLION_TARGET.peakRssMb },
    };
    note(
      `  ${r.users} users in ${fmt(seconds)} s (${fmt(point.usersPerSec)} users/s), peak RSS ${fmt(r.maxRssMb)} MB; load ${fmt(loadBefore)} -> ${fmt(loadAfter)}`,
    );
    const results = existsSync(opts.resultsPath)
      ? (JSON.parse(readFileSync(opts.resultsPath, 'utf8')) as Record<string, unknown>)
      : {};
    results.suggestions1m = {
      date: new Date().toISOString(),
      machine: {
        cores: availableParallelism(),
        cpuModel: cpus()[0]?.model ?? 'unknown',
        node: process.version,
      },
      target: MILLION_TARGET,
      ...point,
    };
    writeFileSync(opts.resultsPath, `${JSON.stringify(results, null, 2)}\n`);
    return point;
  } finally {
    await client.close();
    if (opts.reuse === undefined && !opts.keep) {
      await admin.command({
        query: 'DROP DATABASE IF EXISTS {db:Identifier} SYNC',
        query_params: { db: database },
      });
    }
    await admin.close();
  }
}
