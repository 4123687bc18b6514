import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { ClickHouseClient } from '@clickhouse/client';
import { pino } from 'pino';
import { RedisCacheWriter } from '../src/cache/writer.js';
import { createClickHouse, createStandaloneRedis } from '../src/clients.js';
import { migrate } from '../src/clickhouse/schema.js';
import { seedDatabase } from '../src/clickhouse/seed.js';
import { benchTrendingExact, trendingExactTargets } from './trending.js';

/**
 * `npm run bench:trending [-- --events N --users N --reps N --keep --reuse ID]`: the exact-trending figures alone
 * (bench/trending.ts), without the rest of `npm run bench`. Seeds two databases of the same generator,
 * N/10 and N events (default 10 M; 100 000 users), runs every window on both with the repetitions
 * interleaved, and writes the figures under `trendingExact` in bench/results.json, leaving its other
 * keys as they are. Both databases and the Redis keys are removed at the end, unless `--keep` (then
 * `--reuse ID` measures the kept pair again without seeding).
 */

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const RESULTS_PATH = join(ROOT, 'bench', 'results.json');

const { values: argv } = parseArgs({
  options: {
    events: { type: 'string' },
    users: { type: 'string' },
    reps: { type: 'string' },
    keep: { type: 'boolean', default: false },
    reuse: { type: 'string' },
  },
});

function intArg(name: 'events' | 'users' | 'reps', fallback: number): number {
  const raw = argv[name];
  if (raw === undefined) return fallback;
  const n = Number(raw.replaceAll('_', ''));
  const min = name === 'reps' ? 1 : 10;
  if (!Number.isSafeInteger(n) || n < min)
    throw new Error(`bench: --${name} must be an integer ≥ ${min}, got ${raw}`);
  return n;
}

function note(msg: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

function servicesEnv(): { redisUrl: string; clickhouseUrl: string } {
  const vars: Record<string, string> = {};
  for (const line of readFileSync(join(ROOT, '.services', 'env'), 'utf8').split('\n')) {
    const m = /^export ([A-Z_]+)=(.*)$/.exec(line.trim());
    if (m?.[1] !== undefined && m[2] !== undefined) vars[m[1]] = m[2];
  }
  if (vars.REDIS_URL === undefined || vars.CLICKHOUSE_URL === undefined)
    throw new Error('bench: .services/env lacks REDIS_URL or CLICKHOUSE_URL');
  return { redisUrl: vars.REDIS_URL, clickhouseUrl: vars.CLICKHOUSE_URL };
}

async function main(): Promise<void> {
  const events = intArg('events', 10_000_000);
  const users = intArg('users', 100_000);
  const reps = intArg('reps', 5);
  execFileSync('bash', [join(ROOT, 'scripts', 'services.sh'), 'up'], { stdio: ['ignore', 2, 2] });
  const { redisUrl, clickhouseUrl } = servicesEnv();
  const runId =
    argv.reuse ??
    `${new Date().toISOString().replace(/[-:T]/g, '').slice(0, 14)}_${randomBytes(3).toString('hex')}`;
  if (!/^[0-9a-z_]+$/.test(runId)) throw new Error(`bench: bad --reuse ${runId}`);
  const prefix = `bench-trending-${runId}`;
  // A fixed `now` a little off the minute, shared by every run: repetitions compute identical values.
  // A reused pair of databases keeps the `now` it was seeded for.
  const nowFile = join(ROOT, '.services', `bench-trending-${runId}.now`);
  const now = argv.reuse
    ? new Date(Number(readFileSync(nowFile, 'utf8')))
    : new Date(Math.floor(Date.now() / 1000) * 1000 - 17_000);
  if (argv.keep) writeFileSync(nowFile, String(now.getTime()));
  const admin = createClickHouse({
    clickhouse: { url: clickhouseUrl, user: 'default', password: '', database: 'default' },
  });
  const redis = createStandaloneRedis({ redisUrl }, pino({ level: 'silent' }));
  await redis.connect();
  const clients: { db: string; client: ClickHouseClient }[] = [];
  try {
    const seed = async (n: number): Promise<ClickHouseClient> => {
      const db = `bench_trending_${runId}_${n}`;
      const client = createClickHouse({
        clickhouse: { url: clickhouseUrl, user: 'default', password: '', database: db },
      });
      clients.push({ db, client });
      if (argv.reuse) return client;
      await admin.command({ query: 'CREATE DATABASE {db:Identifier}', query_params: { db } });
      await migrate(client);
      const started = performance.now();
      await seedDatabase(client, { users, days: 7, events: n, seed: 42, now });
      note(
        `seeded ${n.toLocaleString('en-US')} events in ${((performance.now() - started) / 1000).toFixed(1)} s`,
      );
      return client;
    };
    const small = await seed(Math.floor(events / 10));
    const large = await seed(events);
    const result = await benchTrendingExact({
      small: { events: Math.floor(events / 10), clickhouse: small },
      large: { events, clickhouse: large },
      now,
      reps,
      writer: new RedisCacheWriter(redis),
      redis,
      prefix,
      note,
    });
    const targets = trendingExactTargets(result);
    const previous = existsSync(RESULTS_PATH)
      ? (JSON.parse(readFileSync(RESULTS_PATH, 'utf8')) as Record<string, unknown>)
      : {};
    const trendingExact = { date: new Date().toISOString(), users, ...result, targets };
    writeFileSync(RESULTS_PATH, `${JSON.stringify({ ...previous, trendingExact }, null, 2)}\n`);
    for (const t of targets)
      process.stdout.write(
        `${t.met ? 'met   ' : 'MISSED'} ${t.figure}: ${t.value} against ${t.target}${t.shortfall ? ` (${t.shortfall})` : ''}\n`,
      );
    process.stdout.write(`wrote trendingExact to ${RESULTS_PATH}\n`);
  } finally {
    const stale = await redis.keys(`${prefix}:*`);
    if (stale.length > 0) await redis.del(...stale);
    for (const { db, client } of clients) {
      await client.close();
      if (argv.keep) note(`kept database ${db}; rerun with --reuse ${runId}`);
      else
        await admin.command({ query: 'DROP DATABASE IF EXISTS {db:Identifier} SYNC', query_params: { db } });
    }
    await admin.close();
    redis.disconnect();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
});
