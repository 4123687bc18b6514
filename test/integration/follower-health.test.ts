import { randomUUID } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import type { FixtureJob, RunnerProcess } from '../fixtures/child.js';
import { startReplica } from './replica.js';

/**
 * Issue 13 point 4 with two real runner processes: the leader fails 3 runs in a row, loses the lease,
 * and the job succeeds on the new leader. Within one lease the former leader's own gauges follow the
 * new leader's freshness record (consecutive_failures 0, job_healthy 1), so CacheRefresherJobFailing
 * has nothing to fire on (the rule itself is tested on two replicas in alerts.test.yml).
 */
const LEASE_SEC = 3;

describe('a former leader follows the new leader’s health (two real runner processes)', () => {
  const running: RunnerProcess[] = [];

  function start(prefix: string, jobs: FixtureJob[]): RunnerProcess {
    const r = startReplica(prefix, jobs, LEASE_SEC);
    running.push(r);
    return r;
  }

  afterEach(async () => {
    for (const r of running.splice(0)) {
      r.kill('SIGCONT');
      r.kill('SIGKILL');
      await r.exited;
    }
  });

  it(
    'within one lease of losing it, the former leader reports job_healthy 1 and 0 failures',
    { timeout: 60_000 },
    async () => {
      const prefix = `test-follower-health-${randomUUID()}`;
      // The same job fails on replica a (say, it cannot reach ClickHouse) and succeeds on replica b.
      const a = start(prefix, [
        { id: 'flaky', kind: 'fail', message: 'clickhouse unreachable', intervalSec: 1 },
      ]);
      await a.waitForLog((l) => l.msg === 'became leader');
      await a.httpPort();
      await expect
        .poll(() => a.metric('cache_refresher_job_consecutive_failures', { job: 'flaky' }), {
          timeout: 15_000,
        })
        .toBeGreaterThanOrEqual(3);
      expect(await a.metric('cache_refresher_job_healthy', { job: 'flaky' })).toBe(0);

      const b = start(prefix, [{ id: 'flaky', kind: 'sleep', ms: 50, intervalSec: 1 }]);
      await b.httpPort();
      // a loses the lease: frozen past it, b takes over and succeeds.
      a.kill('SIGSTOP');
      await b.waitForLog((l) => l.msg === 'became leader', 15_000);
      await b.waitForLog((l) => l.msg === 'run succeeded' && l.job === 'flaky', 10_000);
      a.kill('SIGCONT');
      const thawed = Date.now();
      await a.waitForLog((l) => l.msg === 'no longer leader', 5_000);

      await expect
        .poll(
          async () =>
            (await a.metric('cache_refresher_job_healthy', { job: 'flaky' })) === 1 &&
            (await a.metric('cache_refresher_job_consecutive_failures', { job: 'flaky' })) === 0,
          { timeout: 10_000, interval: 100 },
        )
        .toBe(true);
      const recoveredMs = Date.now() - thawed;
      console.log(
        `follower health: former leader healthy ${recoveredMs} ms after it woke (lease ${LEASE_SEC} s)`,
      );
      expect(recoveredMs).toBeLessThanOrEqual(LEASE_SEC * 1000);
      expect(await a.metric('cache_refresher_leader')).toBe(0);
      expect(await b.metric('cache_refresher_leader')).toBe(1);
      const jobs = (await a.request('GET', '/jobs')).json() as {
        name: string;
        consecutive_failures: number;
      }[];
      expect(jobs.find((j) => j.name === 'flaky')?.consecutive_failures).toBe(0);
    },
  );
});
