import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { RunnerProcess } from '../fixtures/child.js';
import { servicesEnv } from './env.js';

function runnerEnv(extra: Record<string, string> = {}): Record<string, string> {
  const s = servicesEnv();
  return {
    REDIS_URL: s.redisUrl,
    CLICKHOUSE_URL: s.clickhouseUrl,
    CACHE_KEY_PREFIX: `test-shutdown-${randomUUID()}`,
    HTTP_PORT: '0',
    LEADER_ELECTION: 'false',
    ...extra,
  };
}

describe('cache-refresher run: graceful shutdown (real child process)', () => {
  it('on SIGTERM mid-run waits for the run to finish, then exits 0', async () => {
    const runner = new RunnerProcess(runnerEnv({ SHUTDOWN_GRACE_SEC: '30' }), [
      { id: 'slow', kind: 'sleep', ms: 3000, intervalSec: 3600, timeoutSec: 60 },
    ]);
    // No freshness record under a new prefix: catch-up starts the run at once.
    await runner.waitForLog((l) => l.msg === 'fixture job running');
    const signalledAt = Date.now();
    runner.kill('SIGTERM');
    const exit = await runner.exited;
    expect(exit).toEqual({ code: 0, signal: null });
    const ended = runner.lines.find((l) => l.msg === 'run succeeded' && l.job === 'slow');
    expect(ended).toMatchObject({ outcome: 'success', job: 'slow' });
    expect(typeof ended?.run_id).toBe('string');
    expect(runner.lines.at(-1)?.msg).toBe('shutdown complete');
    // It really waited for the 3 s run rather than exiting at once.
    expect(Date.now() - signalledAt).toBeGreaterThan(1500);
  });

  it('with SHUTDOWN_GRACE_SEC=1 aborts the run after the grace period and still exits 0', async () => {
    const runner = new RunnerProcess(runnerEnv({ SHUTDOWN_GRACE_SEC: '1' }), [
      { id: 'slow', kind: 'sleep', ms: 30_000, intervalSec: 3600, timeoutSec: 60 },
    ]);
    await runner.waitForLog((l) => l.msg === 'fixture job running');
    runner.kill('SIGTERM');
    const exit = await runner.exited;
    expect(exit).toEqual({ code: 0, signal: null });
    expect(runner.lines.find((l) => l.job === 'slow' && typeof l.outcome === 'string')).toMatchObject({
      msg: 'run cancelled',
      outcome: 'cancelled',
    });
    expect(runner.lines.some((l) => l.msg === 'shutdown grace period over; aborting in-flight runs')).toBe(
      true,
    );
  });

  it('a second signal during draining forces exit 1', async () => {
    const runner = new RunnerProcess(runnerEnv({ SHUTDOWN_GRACE_SEC: '60' }), [
      { id: 'slow', kind: 'sleep', ms: 30_000, intervalSec: 3600, timeoutSec: 60 },
    ]);
    await runner.waitForLog((l) => l.msg === 'fixture job running');
    runner.kill('SIGTERM');
    await runner.waitForLog((l) => l.msg === 'shutting down: draining in-flight runs');
    runner.kill('SIGINT');
    expect(await runner.exited).toEqual({ code: 1, signal: null });
  });

  it('exits 2 naming every bad variable before connecting to anything', async () => {
    const runner = new RunnerProcess(
      { REDIS_URL: 'nope', MAX_CONCURRENT_JOBS: '0', TRENDING_1H_INTERVAL_SEC: 'abc' },
      [],
    );
    expect(await runner.exited).toEqual({ code: 2, signal: null });
    for (const name of ['REDIS_URL', 'MAX_CONCURRENT_JOBS', 'TRENDING_1H_INTERVAL_SEC']) {
      expect(runner.stderrText).toContain(`${name}: got`);
    }
  });
});
