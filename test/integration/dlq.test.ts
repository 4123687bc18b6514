// Failed and timed-out runs of a real `cache-refresher run` child produce exactly one DLQ record each on
// the real Kafka topic, with every CONTRACT §5 field right.
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RunnerProcess } from '../fixtures/child.js';
import { servicesEnv } from './env.js';
import { openDlqTarget, topicSize, type DlqTarget, type ReceivedRecord } from './kafka-helpers.js';

const ADMIN_TOKEN = 'test-admin-token';
const pkgVersion = (
  JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }
).version;

describe('DLQ records on the real Kafka topic', () => {
  const s = servicesEnv();
  let dlq: DlqTarget;
  let runner: RunnerProcess | undefined;

  beforeAll(async () => {
    dlq = await openDlqTarget(s.kafkaBrokers, `test-dlq-${randomUUID()}`);
  });

  afterAll(async () => {
    if (runner) {
      runner.kill('SIGKILL');
      await runner.exited;
    }
    await dlq.close();
  });

  it('one record per failed or timed-out run, none for success or cancel', async () => {
    runner = new RunnerProcess(
      {
        REDIS_URL: s.redisUrl,
        CLICKHOUSE_URL: s.clickhouseUrl,
        KAFKA_BROKERS: s.kafkaBrokers.join(','),
        DLQ_TOPIC: dlq.topic,
        DLQ_SPOOL_DIR: dlq.spoolDir,
        CACHE_KEY_PREFIX: `test-dlq-${randomUUID()}`,
        HTTP_PORT: '0',
        LEADER_ELECTION: 'false',
        ADMIN_TOKEN,
        // Keep failing every second instead of backing off, so consecutive failures count up quickly.
        BACKOFF_AFTER_FAILURES: '1000',
      },
      [
        { id: 'boom', kind: 'fail', intervalSec: 1, message: 'kaboom' },
        { id: 'stuck', kind: 'hang', intervalSec: 3600, timeoutSec: 1 },
        { id: 'flaky', kind: 'fail', intervalSec: 3600, code: 'ECONNREFUSED', retries: 1 },
        { id: 'fine', kind: 'sleep', ms: 10, intervalSec: 1 },
        { id: 'sleepy', kind: 'sleep', ms: 60_000, intervalSec: 3600, timeoutSec: 120 },
      ],
    );
    const child = runner;
    const port = Number((await child.waitForLog((l) => l.msg === 'http server listening')).port);

    // Cancel the long run (an operator's doing): it must not be dead-lettered.
    await child.waitForLog((l) => l.job === 'sleepy' && l.msg === 'fixture job running');
    const cancel = await fetch(`http://127.0.0.1:${port}/jobs/sleepy/cancel`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    });
    expect(cancel.status).toBe(202);
    await child.waitForLog((l) => l.job === 'sleepy' && l.outcome === 'cancelled');

    const failedRuns = (job: string): Record<string, unknown>[] =>
      child.lines.filter((l) => l.job === job && (l.outcome === 'failure' || l.outcome === 'timeout'));
    await expect.poll(() => failedRuns('boom').length, { timeout: 20_000 }).toBeGreaterThanOrEqual(3);
    await child.waitForLog((l) => l.job === 'stuck' && l.outcome === 'timeout');
    await child.waitForLog((l) => l.job === 'flaky' && l.outcome === 'failure');
    await child.waitForLog((l) => l.job === 'fine' && l.outcome === 'success');

    // Freeze the picture: pause the failing job, wait until its last record was published, then stop.
    const pause = await fetch(`http://127.0.0.1:${port}/jobs/boom/pause`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    });
    expect(pause.status).toBe(200);
    const scrape = async (): Promise<string> => (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    // A tick skipped as paused means no boom run can start any more.
    await expect
      .poll(scrape, { timeout: 5_000 })
      .toMatch(/cache_refresher_job_skipped_total\{job="boom",reason="paused"\} [1-9]/);
    const published = (): number => child.lines.filter((l) => l.msg === 'dlq record published').length;
    const expectedRuns = (): Record<string, unknown>[] => [
      ...failedRuns('boom'),
      ...failedRuns('stuck'),
      ...failedRuns('flaky'),
    ];
    await expect.poll(() => published() === expectedRuns().length, { timeout: 10_000 }).toBe(true);

    // dlq_records_total counts them at their destination (Kafka, as it is up).
    const metrics = await scrape();
    const boomCount = failedRuns('boom').length;
    expect(metrics).toContain(
      `cache_refresher_dlq_records_total{job="boom",destination="kafka"} ${boomCount}`,
    );
    expect(metrics).toContain('cache_refresher_dlq_records_total{job="boom",destination="spool"} 0');
    expect(metrics).toContain('cache_refresher_dlq_spool_pending 0');

    child.kill('SIGTERM');
    expect(await child.exited).toEqual({ code: 0, signal: null });
    runner = undefined;

    const expected = expectedRuns();
    const total = await topicSize(dlq.kafka, dlq.topic);
    expect(total).toBe(expected.length);
    await expect.poll(() => dlq.reader.received.length, { timeout: 20_000 }).toBe(total);
    const byRun = new Map<string, ReceivedRecord[]>();
    for (const r of dlq.reader.received)
      byRun.set(r.record.run_id, [...(byRun.get(r.record.run_id) ?? []), r]);
    // Exactly one record per failed run, and nothing else (no success, no cancelled run).
    expect([...byRun.keys()].sort()).toEqual(expected.map((l) => String(l.run_id)).sort());
    expect([...byRun.values()].every((list) => list.length === 1)).toBe(true);
    expect(dlq.reader.received.some((r) => ['fine', 'sleepy'].includes(r.record.job))).toBe(false);

    const recordOf = (line: Record<string, unknown>): ReceivedRecord => {
      const got = byRun.get(String(line.run_id))?.[0];
      if (!got) throw new Error(`no record for run ${String(line.run_id)}`);
      return got;
    };

    // The failing job: every field, and consecutive_failures counting up 1, 2, 3 …
    const boomRecords = failedRuns('boom').map(recordOf);
    expect(boomRecords.map((r) => r.record.consecutive_failures)).toEqual(boomRecords.map((_r, i) => i + 1));
    for (const [i, r] of boomRecords.entries()) {
      const line = failedRuns('boom')[i]!;
      expect(r.key).toBe('boom');
      expect(r.headers).toEqual({ job: 'boom', error_name: 'Error' });
      expect(Object.keys(r.record).sort()).toEqual(
        [
          'schema',
          'job',
          'run_id',
          'scheduled_at',
          'started_at',
          'failed_at',
          'duration_ms',
          'outcome',
          'consecutive_failures',
          'attempts',
          'error',
          'context',
          'runner',
        ].sort(),
      );
      expect(r.record).toMatchObject({
        schema: 'cache-refresher.dlq.v1',
        job: 'boom',
        run_id: line.run_id,
        outcome: 'failure',
        attempts: 1,
        duration_ms: line.duration_ms,
        error: { name: 'Error', message: 'kaboom', code: null },
        context: { fixture: 'fail' },
        runner: { version: pkgVersion, host: os.hostname(), pid: child.pid },
      });
      const scheduled = Date.parse(r.record.scheduled_at);
      const started = Date.parse(r.record.started_at);
      const failed = Date.parse(r.record.failed_at);
      expect(new Date(failed).toISOString()).toBe(r.record.failed_at);
      expect(scheduled).toBeLessThanOrEqual(started);
      expect(failed - started).toBe(r.record.duration_ms);
    }

    // The timed-out run.
    const [stuck] = failedRuns('stuck').map(recordOf);
    expect(stuck?.record).toMatchObject({
      job: 'stuck',
      outcome: 'timeout',
      consecutive_failures: 1,
      attempts: 1,
      error: { name: 'TimeoutError', code: 'ETIMEOUT', message: 'run exceeded its timeout of 1s' },
      context: { fixture: 'hang' },
    });
    expect(stuck?.record.duration_ms).toBeGreaterThanOrEqual(1000);
    expect(stuck?.headers.error_name).toBe('TimeoutError');

    // A transient error retried once: two attempts in one run, one record.
    const [flaky] = failedRuns('flaky').map(recordOf);
    expect(flaky?.record).toMatchObject({
      job: 'flaky',
      outcome: 'failure',
      attempts: 2,
      consecutive_failures: 1,
      error: { name: 'Error', code: 'ECONNREFUSED', message: 'fixture failure' },
    });
  }, 90_000);
});
