import { randomUUID } from 'node:crypto';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { createClickHouse, createRedis } from '../src/clients.js';
import { RedisCacheWriter } from '../src/cache/writer.js';
import { SuggestedUsersJob } from '../src/jobs/suggested-users.js';
import { SUGGESTED_USERS_BATCH_DEFAULTS } from '../src/config.js';

/**
 * Runs only the suggestions job, once, in a process of its own, and prints one JSON line with the
 * process's peak RSS: the parent's heap (seed bookkeeping, baselines) must not blur the figure.
 */

const { values } = parseArgs({
  options: {
    'clickhouse-url': { type: 'string' },
    'redis-url': { type: 'string' },
    database: { type: 'string' },
    prefix: { type: 'string' },
    now: { type: 'string' },
    'batch-size': { type: 'string' },
    parallelism: { type: 'string' },
  },
});

function required(name: keyof typeof values): string {
  const v = values[name];
  if (typeof v !== 'string' || v === '') throw new Error(`memory-child: --${name} is required`);
  return v;
}

async function main(): Promise<void> {
  const log = pino({ level: 'silent' });
  const clickhouse = createClickHouse({
    clickhouse: {
      url: required('clickhouse-url'),
      user: 'default',
      password: '',
      database: required('database'),
    },
  });
  const redis = createRedis({ redisUrl: required('redis-url') }, log);
  await redis.connect();
  const now = new Date(Number(required('now')));
  const job = new SuggestedUsersJob({
    clickhouse,
    cache: new RedisCacheWriter(redis),
    keyPrefix: required('prefix'),
    perUser: 20,
    activeDays: 7,
    maxFollowees: 1000,
    batchSize: Number(values['batch-size'] ?? SUGGESTED_USERS_BATCH_DEFAULTS.batchSize),
    parallelism: Number(values.parallelism ?? SUGGESTED_USERS_BATCH_DEFAULTS.parallelism),
    ttlSec: 900,
  });
  // maxRSS is the kernel's high-water mark; sampling as well shows where the peak sits against the
  // idle process (runtime, clients) measured just before the run.
  const idleRss = process.memoryUsage.rss();
  let sampledPeak = idleRss;
  const sampler = setInterval(() => {
    sampledPeak = Math.max(sampledPeak, process.memoryUsage.rss());
  }, 50);
  const started = performance.now();
  const result = await job.run({
    jobId: job.id,
    runId: randomUUID(),
    scheduledAt: now,
    startedAt: now,
    signal: new AbortController().signal,
    log,
    attempt: 1,
  });
  const ms = performance.now() - started;
  clearInterval(sampler);
  const mb = 1024 * 1024;
  process.stdout.write(
    `${JSON.stringify({
      users: result.items,
      ms,
      idleRssMb: idleRss / mb,
      sampledPeakRssMb: Math.max(sampledPeak, process.memoryUsage.rss()) / mb,
      // resourceUsage().maxRSS is in kilobytes.
      maxRssMb: (process.resourceUsage().maxRSS * 1024) / mb,
    })}\n`,
  );
  await clickhouse.close();
  redis.disconnect();
}

main().catch((err: unknown) => {
  process.stderr.write(`memory-child: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
});
