import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { rm } from 'node:fs/promises';
import type { ClickHouseClient } from '@clickhouse/client';
import { Redis } from 'ioredis';
import type { Kafka } from 'kafkajs';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { seedDatabase } from '../../src/clickhouse/seed.js';
import { RunnerProcess } from '../fixtures/child.js';
import { servicesEnv } from './env.js';
import { scratchDatabase, type ScratchDatabase } from './scratch-database.js';
import { createTopic, testKafka, TopicReader } from './kafka-helpers.js';
import { deleteMatching } from './topologies.js';

/**
 * What the runner does on a dependency's worst day, injected with scripts/services.sh and signals:
 * Redis stopped in the middle of a suggested-users run, ClickHouse frozen in the middle of a trending run.
 */

const TOKEN = 'fault-test-token';

function services(action: 'stop' | 'start', name: 'redis' | 'clickhouse'): void {
  execFileSync('bash', [servicesEnv().servicesScript, action, name], { stdio: 'pipe', timeout: 120_000 });
}

describe('fault injection against a running runner', () => {
  let db: ScratchDatabase;
  let ch: ClickHouseClient;
  let kafka: Kafka;
  let runner: RunnerProcess | undefined;
  // What the runners leave behind (a seeded suggestions run writes 20 000 keys), removed in afterAll.
  const keyPrefixes: string[] = [];
  const spoolDirs: string[] = [];

  beforeAll(async () => {
    db = await scratchDatabase('test_faults');
    ch = db.client;
    await seedDatabase(ch, { users: 20_000, days: 7, events: 400_000, seed: 3 });
    kafka = testKafka(servicesEnv().kafkaBrokers);
  }, 240_000);

  afterEach(async () => {
    if (runner) {
      runner.kill('SIGKILL');
      await runner.exited;
      runner = undefined;
    }
  });

  afterAll(async () => {
    await db.drop();
    const redis = new Redis(servicesEnv().redisUrl);
    try {
      for (const prefix of keyPrefixes) {
        await deleteMatching(redis, `${prefix}:*`);
        await deleteMatching(redis, `{${prefix}*`);
      }
    } finally {
      redis.disconnect();
    }
    for (const dir of spoolDirs) await rm(dir, { recursive: true, force: true });
  });

  function startRunner(topic: string, env: Record<string, string>): RunnerProcess {
    const s = servicesEnv();
    const prefix = `test-faults-${randomUUID()}`;
    const spoolDir = `/tmp/cache-refresher-test-${randomUUID()}`;
    keyPrefixes.push(prefix);
    spoolDirs.push(spoolDir);
    return new RunnerProcess(
      {
        REDIS_URL: s.redisUrl,
        CLICKHOUSE_URL: s.clickhouseUrl,
        CLICKHOUSE_DATABASE: db.name,
        KAFKA_BROKERS: s.kafkaBrokers.join(','),
        DLQ_TOPIC: topic,
        DLQ_SPOOL_DIR: spoolDir,
        CACHE_KEY_PREFIX: prefix,
        HTTP_PORT: '0',
        ADMIN_TOKEN: TOKEN,
        FIXTURE_KEEP_BUILTINS: '1',
        TRENDING_1H_ENABLED: 'false',
        TRENDING_24H_ENABLED: 'false',
        TRENDING_7D_ENABLED: 'false',
        SUGGESTED_USERS_ENABLED: 'false',
        FEED_WARMER_ENABLED: 'false',
        ...env,
      },
      [],
    );
  }

  it('Redis stopped mid suggested-users run: one DLQ record, runner up, /readyz 503; Redis back: healthy again', async () => {
    const topic = `test-faults-dlq-${randomUUID()}`;
    await createTopic(kafka, topic);
    const reader = await TopicReader.start(kafka, topic);
    try {
      runner = startRunner(topic, {
        SUGGESTED_USERS_ENABLED: 'true',
        SUGGESTED_USERS_INTERVAL_SEC: '3600',
        SUGGESTED_USERS_BATCH_SIZE: '300', // many small batches: the run lasts long enough to cut it
        SUGGESTED_USERS_RETRIES: '0',
      });
      const r = runner;
      await r.waitForLog((l) => l.msg === 'suggested-users: starting', 30_000);
      try {
        services('stop', 'redis');
        const failed = await r.waitForLog(
          (l) => l.job === 'suggested-users' && l.msg === 'run failed',
          60_000,
        );
        expect(failed.outcome).toBe('failure');
        await expect.poll(() => reader.received.length, { timeout: 20_000 }).toBe(1);
        const rec = reader.received[0]!.record;
        expect(rec).toMatchObject({ job: 'suggested-users', outcome: 'failure', consecutive_failures: 1 });
        expect(rec.context).toHaveProperty('failed_batches');
        const ready = await r.request('GET', '/readyz');
        expect(ready.status).toBe(503);
        expect(ready.body).toContain('redis');
        expect((await r.request('GET', '/healthz')).status).toBe(200);
      } finally {
        services('start', 'redis');
      }
      await expect
        .poll(async () => (await r.request('GET', '/readyz')).status, { timeout: 15_000 })
        .toBe(200);
      // Redis came back empty (it keeps nothing on disk), so the lease and freshness record are gone:
      // the replica re-wins the lease and catch-up may already be running the job (409), or we start it.
      await expect
        .poll(async () => (await r.request('POST', '/jobs/suggested-users/trigger', TOKEN)).status, {
          timeout: 30_000,
        })
        .toBeOneOf([202, 409]);
      await r.waitForLog((l) => l.job === 'suggested-users' && l.msg === 'run succeeded', 120_000);
      expect(await r.metric('cache_refresher_job_healthy', { job: 'suggested-users' })).toBe(1);
      expect(await r.metric('cache_refresher_job_consecutive_failures', { job: 'suggested-users' })).toBe(0);
      // Still exactly one record: the successful run produced none.
      expect(reader.received).toHaveLength(1);
    } finally {
      await reader.stop();
    }
  }, 240_000);

  it('ClickHouse frozen (SIGSTOP) mid run: the run ends as timeout at its timeout; after SIGCONT the next run succeeds', async () => {
    const topic = `test-faults-dlq-${randomUUID()}`;
    await createTopic(kafka, topic);
    const reader = await TopicReader.start(kafka, topic);
    const pid = servicesEnv().readPid('clickhouse');
    try {
      runner = startRunner(topic, {
        TRENDING_1H_ENABLED: 'true',
        TRENDING_1H_INTERVAL_SEC: '3600',
        TRENDING_1H_TIMEOUT_SEC: '3',
        LEADER_ELECTION: 'false',
      });
      const r = runner;
      await r.waitForLog((l) => l.job === 'trending-1h' && l.msg === 'run succeeded', 30_000);
      try {
        process.kill(pid, 'SIGSTOP');
        const triggeredAt = Date.now();
        expect((await r.request('POST', '/jobs/trending-1h/trigger', TOKEN)).status).toBe(202);
        const timedOut = await r.waitForLog(
          (l) => l.job === 'trending-1h' && l.msg === 'run timed out',
          15_000,
        );
        expect(timedOut.outcome).toBe('timeout');
        expect(Number(timedOut.duration_ms)).toBeGreaterThanOrEqual(3000);
        expect(Number(timedOut.duration_ms)).toBeLessThan(3500);
        expect(Date.parse(String(timedOut.time)) - triggeredAt).toBeLessThan(4500);
        await expect.poll(() => reader.received.length, { timeout: 20_000 }).toBe(1);
        expect(reader.received[0]!.record).toMatchObject({ job: 'trending-1h', outcome: 'timeout' });
      } finally {
        process.kill(pid, 'SIGCONT');
      }
      // The aborted request gave its permit back; the next run goes through.
      await expect
        .poll(async () => (await r.request('POST', '/jobs/trending-1h/trigger', TOKEN)).status, {
          timeout: 10_000,
        })
        .toBe(202);
      const ok = await r.waitForLog(
        (l) => l.job === 'trending-1h' && l.msg === 'run succeeded' && l.trigger === 'manual',
        30_000,
      );
      expect(ok.outcome).toBe('success');
      expect(await r.metric('cache_refresher_job_healthy', { job: 'trending-1h' })).toBe(1);
    } finally {
      await reader.stop();
    }
  }, 120_000);
});
