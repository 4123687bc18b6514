// /metrics, /healthz and /readyz of a real `cache-refresher run` child against the real servers.
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RunnerProcess } from '../fixtures/child.js';
import { servicesEnv } from './env.js';

const run = promisify(execFile);
const ADMIN_TOKEN = 'observability-token';

/** Parses Prometheus text into `name{labels}` -> value, plus each metric's declared type. */
function parseMetrics(text: string): { values: Map<string, number>; types: Map<string, string> } {
  const values = new Map<string, number>();
  const types = new Map<string, string>();
  for (const line of text.split('\n')) {
    const type = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (type?.[1] && type[2]) types.set(type[1], type[2]);
    const sample = /^([a-zA-Z_:][\w:]*(?:\{[^}]*\})?) (\S+)$/.exec(line);
    if (sample?.[1] && sample[2]) values.set(sample[1], Number(sample[2]));
  }
  return { values, types };
}

describe('observability of a running sidecar', () => {
  const s = servicesEnv();
  let spoolDir: string;
  let child: RunnerProcess;
  let base: string;

  const scrape = async (): Promise<ReturnType<typeof parseMetrics>> =>
    parseMetrics(await (await fetch(`${base}/metrics`)).text());
  const value = async (series: string): Promise<number | undefined> => (await scrape()).values.get(series);
  const admin = (jobId: string, action: string): Promise<Response> =>
    fetch(`${base}/jobs/${jobId}/${action}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    });

  beforeAll(async () => {
    spoolDir = await mkdtemp(path.join(os.tmpdir(), 'obs-it-'));
    child = new RunnerProcess(
      {
        REDIS_URL: s.redisUrl,
        CLICKHOUSE_URL: s.clickhouseUrl,
        // No Kafka: dead-letter records go to the spool, which the metrics must show.
        DLQ_SPOOL_DIR: spoolDir,
        CACHE_KEY_PREFIX: `test-obs-${randomUUID()}`,
        HTTP_PORT: '0',
        HTTP_HOST: '127.0.0.1',
        LEADER_ELECTION: 'false',
        ADMIN_TOKEN,
        BACKOFF_AFTER_FAILURES: '1000',
      },
      [
        { id: 'ok', kind: 'sleep', ms: 10, intervalSec: 1 },
        { id: 'boom', kind: 'fail', intervalSec: 1 },
        { id: 'slow', kind: 'sleep', ms: 2500, intervalSec: 1, timeoutSec: 30 },
      ],
    );
    const port = Number((await child.waitForLog((l) => l.msg === 'http server listening')).port);
    base = `http://127.0.0.1:${port}`;
  });

  afterAll(async () => {
    child.kill('SIGTERM');
    await child.exited;
    await rm(spoolDir, { recursive: true, force: true });
  });

  it('/metrics shows every CONTRACT §6 series with values matching what happened', async () => {
    // Every labelled series exists from the first scrape.
    const initial = await scrape();
    for (const job of ['ok', 'boom', 'slow']) {
      for (const outcome of ['success', 'failure', 'timeout', 'cancelled']) {
        expect(initial.values.has(`cache_refresher_job_runs_total{job="${job}",outcome="${outcome}"}`)).toBe(
          true,
        );
      }
      for (const reason of ['overlap', 'backoff', 'paused', 'not_leader']) {
        expect(initial.values.has(`cache_refresher_job_skipped_total{job="${job}",reason="${reason}"}`)).toBe(
          true,
        );
      }
    }

    await expect
      .poll(() => value('cache_refresher_job_runs_total{job="ok",outcome="success"}'), { timeout: 15_000 })
      .toBeGreaterThanOrEqual(2);
    await expect
      .poll(() => value('cache_refresher_job_runs_total{job="boom",outcome="failure"}'), { timeout: 15_000 })
      .toBeGreaterThanOrEqual(2);
    await expect
      .poll(() => value('cache_refresher_job_skipped_total{job="slow",reason="overlap"}'), {
        timeout: 15_000,
      })
      .toBeGreaterThanOrEqual(1);
    await expect.poll(() => value('cache_refresher_job_running{job="slow"}'), { timeout: 5_000 }).toBe(1);

    // Freeze ok and boom, so the numbers below are stable while we compare them with the logs.
    expect((await admin('ok', 'pause')).status).toBe(200);
    expect((await admin('boom', 'pause')).status).toBe(200);
    await expect
      .poll(() => value('cache_refresher_job_skipped_total{job="boom",reason="paused"}'), { timeout: 5_000 })
      .toBeGreaterThanOrEqual(1);
    await expect
      .poll(() => value('cache_refresher_job_skipped_total{job="ok",reason="paused"}'), { timeout: 5_000 })
      .toBeGreaterThanOrEqual(1);
    const failures = child.lines.filter((l) => l.job === 'boom' && l.outcome === 'failure').length;
    // The last DLQ append is asynchronous: wait until every failed run has its spooled record.
    await expect
      .poll(() => value('cache_refresher_dlq_records_total{job="boom",destination="spool"}'), {
        timeout: 5_000,
      })
      .toBe(failures);

    const { values, types } = await scrape();
    const v = (series: string): number | undefined => values.get(series);
    const expectedTypes: Record<string, string> = {
      cache_refresher_job_runs_total: 'counter',
      cache_refresher_job_duration_seconds: 'histogram',
      cache_refresher_job_last_success_timestamp_seconds: 'gauge',
      cache_refresher_job_last_run_timestamp_seconds: 'gauge',
      cache_refresher_job_next_run_timestamp_seconds: 'gauge',
      cache_refresher_job_healthy: 'gauge',
      cache_refresher_job_consecutive_failures: 'gauge',
      cache_refresher_job_items_processed: 'gauge',
      cache_refresher_job_running: 'gauge',
      cache_refresher_job_skipped_total: 'counter',
      cache_refresher_dlq_records_total: 'counter',
      cache_refresher_dlq_spool_pending: 'gauge',
      cache_refresher_leader: 'gauge',
      cache_refresher_semaphore_waiting: 'gauge',
      // Default process metrics.
      process_cpu_user_seconds_total: 'counter',
      process_resident_memory_bytes: 'gauge',
      nodejs_eventloop_lag_seconds: 'gauge',
    };
    for (const [name, type] of Object.entries(expectedTypes)) expect(types.get(name), name).toBe(type);

    const okRuns = child.lines.filter((l) => l.job === 'ok' && l.outcome === 'success');
    expect(v('cache_refresher_job_runs_total{job="ok",outcome="success"}')).toBe(okRuns.length);
    expect(v('cache_refresher_job_runs_total{job="ok",outcome="failure"}')).toBe(0);
    expect(v('cache_refresher_job_duration_seconds_count{job="ok",outcome="success"}')).toBe(okRuns.length);
    expect(v('cache_refresher_job_duration_seconds_bucket{le="600",job="ok",outcome="success"}')).toBe(
      okRuns.length,
    );
    expect(v('cache_refresher_job_runs_total{job="boom",outcome="failure"}')).toBe(failures);
    expect(v('cache_refresher_job_consecutive_failures{job="boom"}')).toBe(failures);
    expect(v('cache_refresher_job_consecutive_failures{job="ok"}')).toBe(0);

    // Timestamps in seconds: ok's last success is its last "run succeeded" line.
    const lastOk = Date.parse(String(okRuns.at(-1)?.time)) / 1000;
    expect(
      Math.abs((v('cache_refresher_job_last_success_timestamp_seconds{job="ok"}') ?? 0) - lastOk),
    ).toBeLessThan(0.05);
    expect(v('cache_refresher_job_last_success_timestamp_seconds{job="boom"}')).toBe(0);
    const lastBoom = child.lines.filter((l) => l.job === 'boom' && l.outcome === 'failure').at(-1);
    expect(
      Math.abs(
        (v('cache_refresher_job_last_run_timestamp_seconds{job="boom"}') ?? 0) -
          Date.parse(String(lastBoom?.time)) / 1000,
      ),
    ).toBeLessThan(0.05);
    const now = Date.now() / 1000;
    expect(v('cache_refresher_job_next_run_timestamp_seconds{job="ok"}')).toBeGreaterThan(now - 1);
    expect(v('cache_refresher_job_next_run_timestamp_seconds{job="ok"}')).toBeLessThan(now + 2);

    expect(v('cache_refresher_job_healthy{job="ok"}')).toBe(1);
    expect(v('cache_refresher_job_healthy{job="boom"}')).toBe(0);
    expect(v('cache_refresher_job_items_processed{job="ok"}')).toBe(1);
    expect(v('cache_refresher_job_running{job="ok"}')).toBe(0);
    expect(v('cache_refresher_job_skipped_total{job="ok",reason="backoff"}')).toBe(0);
    expect(v('cache_refresher_dlq_records_total{job="boom",destination="kafka"}')).toBe(0);
    expect(v('cache_refresher_dlq_records_total{job="ok",destination="spool"}')).toBe(0);
    expect(v('cache_refresher_dlq_spool_pending')).toBe(failures);
    expect(v('cache_refresher_leader')).toBe(1);
    expect(v('cache_refresher_semaphore_waiting')).toBe(0);
  }, 60_000);

  it('/readyz turns 503 naming redis within 5 s of Redis stopping, /healthz stays 200', async () => {
    const readyz = async (): Promise<{ status: number; body: Record<string, unknown> }> => {
      const res = await fetch(`${base}/readyz`);
      return { status: res.status, body: (await res.json()) as Record<string, unknown> };
    };
    const healthStatuses: number[] = [];
    const health = async (): Promise<void> => {
      healthStatuses.push((await fetch(`${base}/healthz`)).status);
    };
    expect(await readyz()).toMatchObject({ status: 200, body: { status: 'ready' } });
    await health();
    try {
      await run('bash', [s.servicesScript, 'stop', 'redis'], { timeout: 60_000 });
      const stoppedAt = Date.now();
      await expect
        .poll(
          async () => {
            await health();
            return (await readyz()).status;
          },
          { timeout: 5_000, interval: 100 },
        )
        .toBe(503);
      const unreadyAfterMs = Date.now() - stoppedAt;
      const down = await readyz();
      console.log(
        `/readyz answered 503 ${unreadyAfterMs} ms after redis stopped: ${JSON.stringify(down.body)}`,
      );
      expect(down.body).toMatchObject({
        status: 'unready',
        failing: ['redis'],
        checks: { redis: { ok: false }, clickhouse: { ok: true } },
      });
      await health();
    } finally {
      // Other test files need Redis: always bring it back.
      await run('bash', [s.servicesScript, 'start', 'redis'], { timeout: 120_000 });
    }
    await expect
      .poll(
        async () => {
          await health();
          return (await readyz()).status;
        },
        { timeout: 15_000, interval: 200 },
      )
      .toBe(200);
    expect(healthStatuses.length).toBeGreaterThan(3);
    expect(healthStatuses.every((st) => st === 200)).toBe(true);
  }, 120_000);
});
