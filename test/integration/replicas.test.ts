import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { FixtureJob, RunnerProcess } from '../fixtures/child.js';
import { servicesEnv } from './env.js';
import { startReplica } from './replica.js';

/**
 * CONTRACT §2 "single active replica", with real runner processes on one real Redis: exactly one
 * leads; a killed leader is replaced within the lease; a frozen leader that wakes up cannot write.
 */

const LEASE_SEC = 3;

describe('one active replica (two real runner processes)', () => {
  let redis: Redis;
  const running: RunnerProcess[] = [];

  function start(prefix: string, jobs: FixtureJob[]): RunnerProcess {
    const r = startReplica(prefix, jobs, LEASE_SEC);
    running.push(r);
    return r;
  }

  beforeAll(() => {
    redis = new Redis(servicesEnv().redisUrl);
  });
  afterEach(async () => {
    for (const r of running.splice(0)) {
      r.kill('SIGCONT');
      r.kill('SIGKILL');
      await r.exited;
    }
  });
  afterAll(async () => {
    await redis.quit();
  });

  it('exactly one leads; after kill -9 the other takes over within the lease + 2 s and runs the overdue job once', async () => {
    const prefix = `test-replicas-${randomUUID()}`;
    const jobs: FixtureJob[] = [
      { id: 'probe', kind: 'write', key: `${prefix}:probe`, intervalSec: 2, timeoutSec: 2 },
    ];
    const a = start(prefix, jobs);
    await a.waitForLog((l) => l.msg === 'became leader');
    const b = start(prefix, jobs);
    await b.httpPort();
    // Several renewal rounds of both replicas.
    await new Promise((r) => setTimeout(r, 2000));
    expect(await a.metric('cache_refresher_leader')).toBe(1);
    expect(await b.metric('cache_refresher_leader')).toBe(0);
    expect(a.logs((l) => l.msg === 'fixture job running').length).toBeGreaterThanOrEqual(1);
    expect(b.logs((l) => l.msg === 'fixture job running')).toHaveLength(0);
    expect(b.logs((l) => l.msg === 'became leader')).toHaveLength(0);
    expect(((await b.request('GET', '/jobs')).json() as { leader: boolean }[])[0]?.leader).toBe(false);
    // The follower runs nothing but follows the leader's freshness records, so its gauges stay true.
    await expect
      .poll(() => b.metric('cache_refresher_job_last_success_timestamp_seconds', { job: 'probe' }), {
        timeout: 5000,
      })
      .toBeGreaterThan(Date.now() / 1000 - 10);
    expect(await b.metric('cache_refresher_job_healthy', { job: 'probe' })).toBe(1);

    const killedAt = Date.now();
    a.kill('SIGKILL');
    const became = await b.waitForLog((l) => l.msg === 'became leader', 15_000);
    const takeoverMs = Date.parse(String(became.time)) - killedAt;
    console.info(`takeover after kill -9: ${takeoverMs} ms (lease ${LEASE_SEC} s)`);
    expect(takeoverMs).toBeLessThanOrEqual((LEASE_SEC + 2) * 1000);
    expect(await b.metric('cache_refresher_leader')).toBe(1);

    // The last success is at least the lease old by now, which is more than the 2 s interval: the
    // job is overdue and runs at once, exactly once, then one full interval later.
    await b.waitForLog((l) => l.msg === 'fixture job running');
    await new Promise((r) => setTimeout(r, 1500));
    const runs = b.logs((l) => l.msg === 'fixture job running');
    const becameAt = Date.parse(String(became.time));
    expect(runs.filter((r) => r.at < becameAt + 1500)).toHaveLength(1);
    expect(runs[0]!.at - becameAt).toBeLessThan(1000);
    expect(await redis.get(`${prefix}:probe`)).toMatch(new RegExp(`^${b.pid}:`));
  });

  it('a leader frozen past its lease cannot overwrite the new leader when it wakes, and steps down', async () => {
    const prefix = `test-frozen-${randomUUID()}`;
    const key = `${prefix}:probe`;
    const jobs: FixtureJob[] = [{ id: 'probe', kind: 'write', key, intervalSec: 1, timeoutSec: 5 }];
    const a = start(prefix, jobs);
    await a.waitForLog((l) => l.msg === 'became leader');
    const b = start(prefix, jobs);
    await b.httpPort();
    await expect.poll(() => redis.get(key), { timeout: 10_000 }).toMatch(new RegExp(`^${a.pid}:`));

    a.kill('SIGSTOP');
    await b.waitForLog((l) => l.msg === 'became leader', 15_000);
    await expect.poll(() => redis.get(key), { timeout: 10_000 }).toMatch(new RegExp(`^${b.pid}:`));
    // A slept well past its lease; B has been leading and writing since.
    const frozenUntil = Date.now();
    a.kill('SIGCONT');

    // For 4 s after waking, every write A attempts is fenced: the key only ever holds B's values.
    const seen = new Set<string>();
    const until = Date.now() + 4000;
    while (Date.now() < until) {
      const v = (await redis.get(key)) ?? '';
      seen.add(v.split(':')[0] ?? '');
      await new Promise((r) => setTimeout(r, 25));
    }
    expect([...seen]).toEqual([String(b.pid)]);
    const steppedDown = await a.waitForLog((l) => l.msg === 'no longer leader', 5000);
    expect(Date.parse(String(steppedDown.time))).toBeGreaterThanOrEqual(frozenUntil - 1000);
    expect(await a.metric('cache_refresher_leader')).toBe(0);
    expect(await b.metric('cache_refresher_leader')).toBe(1);
    // A keeps ticking but skips as not_leader instead of running.
    await expect
      .poll(() => a.metric('cache_refresher_job_skipped_total', { job: 'probe', reason: 'not_leader' }), {
        timeout: 5000,
      })
      .toBeGreaterThan(0);
  });
});
