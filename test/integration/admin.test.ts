import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RunnerProcess } from '../fixtures/child.js';
import { servicesEnv } from './env.js';

/** CONTRACT §7 admin routes on a real runner process: bearer auth, trigger, pause/resume, cancel. */
describe('admin API on a running runner', () => {
  const TOKEN = `token-${randomUUID()}`;
  let r: RunnerProcess;

  beforeAll(async () => {
    const s = servicesEnv();
    r = new RunnerProcess(
      {
        REDIS_URL: s.redisUrl,
        CLICKHOUSE_URL: s.clickhouseUrl,
        CACHE_KEY_PREFIX: `test-admin-${randomUUID()}`,
        DLQ_SPOOL_DIR: `/tmp/cache-refresher-test-${randomUUID()}`,
        HTTP_PORT: '0',
        ADMIN_TOKEN: TOKEN,
        LEADER_ELECTION: 'true',
      },
      [
        { id: 'manual', kind: 'sleep', ms: 1500, intervalSec: 3600, timeoutSec: 60 },
        { id: 'ticker', kind: 'sleep', ms: 0, intervalSec: 1 },
      ],
    );
    await r.waitForLog((l) => l.msg === 'became leader');
    // The catch-up run of 'manual' at start-up.
    await r.waitForLog((l) => l.job === 'manual' && l.msg === 'run succeeded');
  });
  afterAll(async () => {
    r.kill('SIGTERM');
    await r.exited;
  });

  const runsOf = (job: string): number => r.logs((l) => l.job === job && l.msg === 'run succeeded').length;

  it('401 without a token, 403 with a wrong one, 202 with the right one and the run happens', async () => {
    const before = runsOf('manual');
    expect((await r.request('POST', '/jobs/manual/trigger')).status).toBe(401);
    expect((await r.request('POST', '/jobs/manual/trigger', 'wrong')).status).toBe(403);
    expect((await r.request('POST', '/jobs/manual/trigger', `${TOKEN}x`)).status).toBe(403);
    expect(runsOf('manual')).toBe(before);
    const ok = await r.request('POST', '/jobs/manual/trigger', TOKEN);
    expect(ok.status).toBe(202);
    // While it runs: a second trigger is 409; then cancel aborts it.
    expect((await r.request('POST', '/jobs/manual/trigger', TOKEN)).status).toBe(409);
    expect((await r.request('POST', '/jobs/nope/trigger', TOKEN)).status).toBe(404);
    await expect.poll(() => runsOf('manual'), { timeout: 10_000 }).toBe(before + 1);
    expect(
      r.logs((l) => l.job === 'manual' && l.trigger === 'manual' && l.outcome === 'success'),
    ).toHaveLength(1);
  });

  it('cancel aborts an in-flight run (outcome cancelled) and is 409 when nothing runs', async () => {
    expect((await r.request('POST', '/jobs/manual/cancel', TOKEN)).status).toBe(409);
    expect((await r.request('POST', '/jobs/manual/trigger', TOKEN)).status).toBe(202);
    expect((await r.request('POST', '/jobs/manual/cancel', TOKEN)).status).toBe(202);
    await r.waitForLog((l) => l.job === 'manual' && l.outcome === 'cancelled');
    expect(await r.metric('cache_refresher_job_runs_total', { job: 'manual', outcome: 'cancelled' })).toBe(1);
  });

  it('pause skips ticks with reason paused; resume runs the job again', async () => {
    expect((await r.request('POST', '/jobs/ticker/pause')).status).toBe(401);
    expect((await r.request('POST', '/jobs/ticker/pause', TOKEN)).status).toBe(200);
    const pausedRuns = runsOf('ticker');
    await expect
      .poll(() => r.metric('cache_refresher_job_skipped_total', { job: 'ticker', reason: 'paused' }), {
        timeout: 5000,
      })
      .toBeGreaterThanOrEqual(2);
    // At most one run that was already in flight when the pause landed.
    expect(runsOf('ticker')).toBeLessThanOrEqual(pausedRuns + 1);
    const detail = (await r.request('GET', '/jobs/ticker')).json() as {
      paused: boolean;
      recent_runs: unknown[];
    };
    expect(detail.paused).toBe(true);
    expect(detail.recent_runs.length).toBeGreaterThan(0);

    expect((await r.request('POST', '/jobs/ticker/resume', TOKEN)).status).toBe(200);
    const resumedFrom = runsOf('ticker');
    await expect.poll(() => runsOf('ticker'), { timeout: 5000 }).toBeGreaterThanOrEqual(resumedFrom + 2);
    expect(((await r.request('GET', '/jobs/ticker')).json() as { paused: boolean }).paused).toBe(false);
  });
});
