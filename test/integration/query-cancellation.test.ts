import { randomUUID } from 'node:crypto';
import { createClient, type ClickHouseClient } from '@clickhouse/client';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisFreshnessStore } from '../../src/cache/freshness.js';
import { seedDatabase } from '../../src/clickhouse/seed.js';
import { RedisCacheWriter } from '../../src/cache/writer.js';
import { createClickHouse } from '../../src/clients.js';
import { SuggestedUsersJob } from '../../src/jobs/suggested-users.js';
import type { JobSettings } from '../../src/config.js';
import { createSystemClock } from '../../src/runner/clock.js';
import { attachRunScope } from '../../src/runner/run-scope.js';
import type { RunFacts } from '../../src/runner/job.js';
import { Runner, type RunEnded, type RunnerOptions } from '../../src/runner/runner.js';
import { servicesEnv } from './env.js';
import { scratchDatabase, type ScratchDatabase } from './scratch-database.js';

/**
 * Issue 13 point 1: whatever aborts a run (timeout, cancel, shutdown, lost leadership), its query stops
 * on the ClickHouse server within 2 s, and a job on a short interval never has two queries running.
 *
 * The query is the sidecar's real query path (the client `createClickHouse` builds, a Runner, a run's
 * signal) with a body that, like a suggested-users batch, computes for a long time before it writes a
 * byte: an aggregate over rows that sleep server-side. Such a query is exactly what aborting the HTTP
 * request alone does not stop (the server only notices a closed socket when it writes), so without
 * the KILL these tests see it in `system.processes` for the whole 60 s it takes.
 */
const SLOW_SQL = `SELECT count() AS n FROM numbers({rows:UInt32})
WHERE sleepEachRow(0.1) = 0 SETTINGS max_block_size = 1`;

function settings(overrides: Partial<JobSettings>): JobSettings {
  return {
    enabled: true,
    intervalSec: 3600,
    cron: undefined,
    timeoutSec: 600,
    ttlSec: 300,
    retries: 0,
    priority: 0,
    ...overrides,
  };
}

/**
 * A Runner of `jobs` with the tests' settings (no backoff, UTC, the system clock, silent log,
 * freshness records under `prefix`) and the list of its ended runs, in order. Not started.
 */
function observedRunner(
  jobs: RunnerOptions['jobs'],
  redis: Redis,
  prefix: string,
  maxConcurrentJobs: number,
): { runner: Runner; ended: RunEnded[] } {
  const ended: RunEnded[] = [];
  const runner = new Runner({
    jobs,
    maxConcurrentJobs,
    backoff: { afterFailures: 1000, baseSec: 1, maxSec: 1 },
    cronTimezone: 'UTC',
    clock: createSystemClock(),
    log: pino({ level: 'silent' }),
    freshness: new RedisFreshnessStore(redis, prefix),
  });
  runner.events.on('run:ended', (e) => {
    ended.push(e);
  });
  return { runner, ended };
}

describe('aborting a run stops its ClickHouse query on the server', () => {
  const prefix = `test-qcancel-${randomUUID()}`;
  let redis: Redis;
  let observer: ClickHouseClient;
  let clickhouse: ClickHouseClient;
  const runners: Runner[] = [];

  beforeAll(async () => {
    const env = servicesEnv();
    redis = new Redis(env.redisUrl);
    await redis.ping();
    observer = createClient({ url: env.clickhouseUrl });
    clickhouse = createClickHouse(
      {
        clickhouse: { url: env.clickhouseUrl, user: 'default', password: '', database: 'default' },
      },
      pino({ level: 'silent' }),
    );
  });
  afterAll(async () => {
    for (const runner of runners) await runner.stop(0);
    const stale = await redis.keys(`${prefix}:*`);
    if (stale.length > 0) await redis.del(...stale);
    await redis.quit();
    await clickhouse.close();
    await observer.close();
  });

  /** The queries of `jobId` (optionally of one run) the server is executing now, with their time limit. */
  async function serverQueries(jobId: string, runId = ''): Promise<{ query_id: string; limit: string }[]> {
    const rs = await observer.query({
      query: `SELECT query_id, Settings['max_execution_time'] AS limit FROM system.processes
              WHERE startsWith(query_id, {p:String})`,
      query_params: { p: `cache-refresher:${jobId}:${runId}` },
      format: 'JSONEachRow',
    });
    return rs.json();
  }

  async function waitFor(cond: () => Promise<boolean>, ms: number): Promise<number> {
    const t0 = Date.now();
    while (Date.now() - t0 < ms) {
      if (await cond()) return Date.now() - t0;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`condition not met within ${ms} ms`);
  }

  function slowRunner(jobId: string, jobSettings: JobSettings): { runner: Runner; ended: RunEnded[] } {
    const job = {
      id: jobId,
      async run(ctx: RunFacts) {
        const rs = await clickhouse.query({
          query: SLOW_SQL,
          query_params: { rows: 600 },
          format: 'JSONEachRow',
          abort_signal: ctx.signal,
          // As the built-in jobs name theirs (the cancellation path names it if a job does not).
          query_id: `cache-refresher:${ctx.jobId}:${ctx.runId}:${ctx.attempt}`,
        });
        await rs.json();
        return { items: 1 };
      },
    };
    const observed = observedRunner([{ job, settings: jobSettings }], redis, prefix, 2);
    runners.push(observed.runner);
    return observed;
  }

  /** Starts a run, waits until its query runs on the server, and returns the run id. */
  async function runningQuery(runner: Runner, jobId: string): Promise<string> {
    expect(runner.trigger(jobId)).toBe('started');
    let runId = '';
    await waitFor(async () => {
      const [q] = await serverQueries(jobId);
      runId = q?.query_id.split(':')[2] ?? '';
      return q !== undefined;
    }, 10_000);
    return runId;
  }

  it('timeout: the query is gone from system.processes within 2 s of the run ending', async () => {
    const jobId = `qc-timeout-${randomUUID().slice(0, 8)}`;
    const { runner, ended } = slowRunner(jobId, settings({ timeoutSec: 2 }));
    runner.start();
    const runId = await runningQuery(runner, jobId);
    await waitFor(() => Promise.resolve(ended.length === 1), 10_000);
    expect(ended[0]?.outcome).toBe('timeout');
    const gone = await waitFor(async () => (await serverQueries(jobId, runId)).length === 0, 2_000);
    console.log(`timeout: query gone ${gone} ms after the run ended`);
  });

  it('cancel: the query is gone within 2 s, and it ran with a server-side limit from the budget', async () => {
    const jobId = `qc-cancel-${randomUUID().slice(0, 8)}`;
    const { runner, ended } = slowRunner(jobId, settings({ timeoutSec: 30 }));
    runner.start();
    const runId = await runningQuery(runner, jobId);
    const [q] = await serverQueries(jobId, runId);
    // 30 s budget, a little of it spent: ceil(remaining) + 1 s of slack.
    expect(Number(q?.limit)).toBeGreaterThanOrEqual(29);
    expect(Number(q?.limit)).toBeLessThanOrEqual(31);
    const t0 = Date.now();
    expect(runner.cancel(jobId)).toBe(true);
    const gone = await waitFor(async () => (await serverQueries(jobId, runId)).length === 0, 2_000);
    console.log(`cancel: query gone ${Date.now() - t0} ms after the cancel (${gone} ms of polling)`);
    await waitFor(() => Promise.resolve(ended.length === 1), 5_000);
    expect(ended[0]?.outcome).toBe('cancelled');
  });

  it('shutdown: the query is gone within 2 s of the grace period running out', async () => {
    const jobId = `qc-shutdown-${randomUUID().slice(0, 8)}`;
    const { runner } = slowRunner(jobId, settings({ timeoutSec: 30 }));
    runner.start();
    const runId = await runningQuery(runner, jobId);
    const t0 = Date.now();
    await runner.stop(0);
    // stop() waited for the KILL: the query is already gone, well within 2 s.
    expect(Date.now() - t0).toBeLessThan(2_000);
    expect(await serverQueries(jobId, runId)).toEqual([]);
  });

  it('lost leadership: the query is gone within 2 s of stepping down', async () => {
    const jobId = `qc-leader-${randomUUID().slice(0, 8)}`;
    const { runner, ended } = slowRunner(jobId, settings({ timeoutSec: 30 }));
    runner.start();
    const runId = await runningQuery(runner, jobId);
    runner.setLeader(false);
    await waitFor(async () => (await serverQueries(jobId, runId)).length === 0, 2_000);
    await waitFor(() => Promise.resolve(ended.length === 1), 5_000);
    expect(ended[0]?.outcome).toBe('cancelled');
  });

  it('the server-side limit stops a query on its own when no abort reaches the server', async () => {
    // A run's signal with 1.2 s of budget left that never aborts (as if the client had died): the
    // query carries max_execution_time = ceil(1.2) + 1 = 3 s, and the server ends it there.
    const signal = new AbortController().signal;
    attachRunScope(signal, {
      jobId: 'qc-backstop',
      runId: randomUUID(),
      remainingMs: () => 1_200,
      holdUntil: () => undefined,
    });
    const t0 = Date.now();
    const failure = await clickhouse
      .query({ query: SLOW_SQL, query_params: { rows: 600 }, format: 'JSONEachRow', abort_signal: signal })
      .then((rs) => rs.json())
      .then(
        () => new Error('the query was not stopped'),
        (err: unknown) => err,
      );
    const ms = Date.now() - t0;
    console.log(`backstop: the server stopped the query after ${ms} ms`);
    expect(String(failure)).toMatch(/TIMEOUT_EXCEEDED|Timeout exceeded/);
    expect(ms).toBeGreaterThanOrEqual(2_500);
    expect(ms).toBeLessThan(10_000);
  });

  it('a 2 s interval with a 1 s timeout never has two queries of the job running', async () => {
    const jobId = `qc-overlap-${randomUUID().slice(0, 8)}`;
    const { runner, ended } = slowRunner(jobId, settings({ intervalSec: 2, timeoutSec: 1 }));
    runner.start();
    let peak = 0;
    let samples = 0;
    const t0 = Date.now();
    while (Date.now() - t0 < 13_000) {
      peak = Math.max(peak, (await serverQueries(jobId)).length);
      samples++;
      await new Promise((r) => setTimeout(r, 100));
    }
    await runner.stop(0);
    console.log(`overlap: ${ended.length} runs, ${samples} samples, at most ${peak} query running`);
    expect(ended.filter((e) => e.outcome === 'timeout').length).toBeGreaterThanOrEqual(4);
    expect(peak).toBe(1);
    expect(await serverQueries(jobId)).toEqual([]);
  });
});

/**
 * The issue's own case: a real suggested-users run whose single batch (batch size 50 000) outlasts a
 * 1 s timeout on a seeded graph. Its batch query must be cancelled on the server within 1 s of the
 * run ending, and gone soon after, not run on for seconds until it tries to write.
 */
describe('a timed-out suggested-users run leaves no query on the server', () => {
  let db: ScratchDatabase;
  let redis: Redis;
  let clickhouse: ClickHouseClient;
  const prefix = `test-qcancel-sugg-${randomUUID()}`;

  beforeAll(async () => {
    const env = servicesEnv();
    db = await scratchDatabase('test_qcancel');
    await seedDatabase(db.client, { users: 50_000, days: 7, events: 3_000_000, seed: 13 });
    redis = new Redis(env.redisUrl);
    clickhouse = createClickHouse(
      { clickhouse: { url: env.clickhouseUrl, user: 'default', password: '', database: db.name } },
      pino({ level: 'silent' }),
    );
  });
  afterAll(async () => {
    const stale = await redis.keys(`${prefix}:*`);
    if (stale.length > 0) await redis.del(...stale);
    await redis.quit();
    await clickhouse.close();
    await db.drop();
  });

  it(
    'the batch query is cancelled within 1 s of the timeout and gone soon after',
    { timeout: 120_000 },
    async () => {
      const { runner, ended } = observedRunner(
        [
          {
            job: new SuggestedUsersJob({
              clickhouse,
              cache: new RedisCacheWriter(redis),
              keyPrefix: prefix,
              perUser: 20,
              activeDays: 7,
              maxFollowees: 1000,
              batchSize: 50_000,
              ttlSec: 1800,
            }),
            settings: settings({ timeoutSec: 1 }),
          },
        ],
        redis,
        prefix,
        1,
      );
      const observer = db.client;
      /** The job's queries on the server, each with whether a KILL has marked it cancelled. */
      const running = async (): Promise<{ query_id: string; is_cancelled: number }[]> => {
        const rs = await observer.query({
          query: `SELECT query_id, is_cancelled FROM system.processes WHERE startsWith(query_id, 'cache-refresher:suggested-users:')`,
          format: 'JSONEachRow',
        });
        return rs.json<{ query_id: string; is_cancelled: number }>();
      };
      const batchQueries = async (): Promise<string[]> => (await running()).map((r) => r.query_id);
      runner.start();
      expect(runner.trigger('suggested-users')).toBe('started');
      // The batch query must really be running on the server when the timeout strikes.
      let seenRunning = false;
      while (ended.length === 0) {
        if ((await batchQueries()).some((id) => id.endsWith(':b0'))) seenRunning = true;
        await new Promise((r) => setTimeout(r, 50));
      }
      expect(ended[0]?.outcome).toBe('timeout');
      expect(seenRunning).toBe(true);
      // Within 1 s every query of the run is gone or marked cancelled by the KILL (measured: 8 ms). An
      // aborted HTTP request alone leaves it running unmarked (seen 14 s past its run), and the
      // server's own time limit, without the KILL, ends it about 1.75 s after the run. How long a
      // cancelled query then takes to unwind is the server's: a step that does not check the flag held
      // it just over 2 s on a busy machine (2 011, 2 021 and 2 171 ms), so being gone has a wider bound.
      const t0 = Date.now();
      let left = await running();
      while (left.some((q) => q.is_cancelled !== 1)) {
        expect(Date.now() - t0).toBeLessThan(1_000);
        await new Promise((r) => setTimeout(r, 50));
        left = await running();
      }
      const cancelledAfter = Date.now() - t0;
      while (left.length > 0) {
        expect(Date.now() - t0).toBeLessThan(10_000);
        await new Promise((r) => setTimeout(r, 50));
        left = await running();
      }
      console.log(
        `suggested-users: batch query cancelled ${cancelledAfter} ms and gone ${Date.now() - t0} ms after the run timed out`,
      );
      await runner.stop(0);
    },
  );
});
