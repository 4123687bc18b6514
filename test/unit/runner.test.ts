import { describe, expect, it } from 'vitest';
import { busy, harness, job, MemoryFreshness, settings } from './helpers/runner-fixture.js';
import { FakeClock } from './helpers/fake-clock.js';

const SEC = 1000;

describe('Runner: the semaphore bounds runs, not job loops', () => {
  it('runs all 6 jobs on 5 permits, never more than 5 at once, starving none', async () => {
    const clock = new FakeClock();
    let running = 0;
    let peak = 0;
    const runsPerJob = new Map<string, number>();
    const jobs = Array.from({ length: 6 }, (_, i) => ({
      job: job(`job-${i}`, async (ctx) => {
        running++;
        peak = Math.max(peak, running);
        runsPerJob.set(ctx.jobId, (runsPerJob.get(ctx.jobId) ?? 0) + 1);
        try {
          return await busy(clock, 15 * SEC, ctx); // longer than the 10 s interval
        } finally {
          running--;
        }
      }),
      settings: settings({ intervalSec: 10, timeoutSec: 60 }),
    }));
    const h = harness(jobs, { maxConcurrentJobs: 5, clock });
    h.runner.start();
    await clock.advance(300 * SEC);

    expect(peak).toBe(5);
    expect(h.runner.semaphore.inUse).toBeLessThanOrEqual(5);
    for (let i = 0; i < 6; i++) {
      // 300 s of 15 s runs, every other tick lost to overlap or waiting: each job gets several turns.
      expect(runsPerJob.get(`job-${i}`) ?? 0).toBeGreaterThanOrEqual(5);
    }
    const counts = [...runsPerJob.values()];
    expect(Math.max(...counts) - Math.min(...counts)).toBeLessThanOrEqual(2);
    await h.runner.stop(0);
  });

  it('serves waiting runs by priority, then first come first served', async () => {
    const clock = new FakeClock();
    const order: string[] = [];
    const mk = (id: string, priority: number) => ({
      job: job(id, async (ctx) => {
        order.push(id);
        return busy(clock, 5 * SEC, ctx);
      }),
      settings: settings({ intervalSec: 100, priority }),
    });
    const h = harness([mk('blocker', 0), mk('low', 1), mk('high', 3), mk('mid', 2), mk('low2', 1)], {
      maxConcurrentJobs: 1,
      clock,
    });
    h.runner.start();
    // All five tick at t=100 s; the first to tick takes the only permit, the rest queue.
    await clock.advance(100 * SEC + 30 * SEC);
    expect(order.slice(0, 5)).toEqual(['blocker', 'high', 'mid', 'low', 'low2']);
    await h.runner.stop(0);
  });
});

describe('Runner: overlap', () => {
  it('skips ticks while the previous run is still running, and runs of one job never overlap', async () => {
    const clock = new FakeClock();
    let active = 0;
    let maxActive = 0;
    const h = harness(
      [
        {
          job: job('slow', async (ctx) => {
            active++;
            maxActive = Math.max(maxActive, active);
            try {
              return await busy(clock, 35 * SEC, ctx);
            } finally {
              active--;
            }
          }),
          settings: settings({ intervalSec: 10, timeoutSec: 100 }),
        },
      ],
      { clock },
    );
    h.runner.start();
    await clock.advance(55 * SEC);
    // Run 1 starts at 10 s and ends at 45 s: ticks 20, 30, 40 are skipped; tick 50 starts run 2.
    expect(h.skipped.map((s) => [s.reason, s.at.getTime() - h.started[0]!.startedAt.getTime()])).toEqual([
      ['overlap', 10 * SEC],
      ['overlap', 20 * SEC],
      ['overlap', 30 * SEC],
    ]);
    expect(h.started).toHaveLength(2);
    expect(maxActive).toBe(1);
    await h.runner.stop(0);
  });

  it('counts a run still waiting for a permit as running', async () => {
    const clock = new FakeClock();
    const h = harness(
      [
        {
          job: job('hog', (ctx) => busy(clock, 100 * SEC, ctx)),
          settings: settings({ intervalSec: 10, timeoutSec: 200 }),
        },
        { job: job('waiter', (ctx) => busy(clock, 1 * SEC, ctx)), settings: settings({ intervalSec: 10 }) },
      ],
      { clock, maxConcurrentJobs: 1 },
    );
    h.runner.start();
    await clock.advance(25 * SEC);
    expect(h.runner.semaphore.waiting).toBe(1);
    expect(h.skipped.filter((s) => s.job === 'waiter').map((s) => s.reason)).toEqual(['overlap']);
    await h.runner.stop(0);
  });
});

describe('Runner: consecutive-failure backoff', () => {
  function failing(clock: FakeClock, fail: () => boolean) {
    let runs = 0;
    const startTimes: number[] = [];
    const j = job('flaky', () => {
      runs++;
      startTimes.push(clock.now());
      return fail() ? Promise.reject(new Error(`boom ${runs}`)) : Promise.resolve({ items: 1 });
    });
    return { j, startTimes, runs: () => runs };
  }

  it('retries runs 1-2 on schedule, then waits 8 s·u, 16 s·u, 32 s·u … capped at BACKOFF_MAX_SEC', async () => {
    const clock = new FakeClock();
    const t0 = clock.now();
    const f = failing(clock, () => true);
    // u = 0.5 exactly: the delays are 4, 8, 16 … seconds, capped at 300 · 0.5 = 150 s.
    const h = harness([{ job: f.j, settings: settings({ intervalSec: 1, timeoutSec: 1 }) }], {
      clock,
      random: () => 0,
    });
    h.runner.start();
    await clock.advance(1200 * SEC);
    const rel = f.startTimes.map((t) => (t - t0) / SEC);
    // runs at 1, 2, 3; failure 3 -> 8·0.5 = 4 s -> 7; failure 4 -> 16·0.5 = 8 s -> 15; then 16 s, 32 s, 64 s,
    // 128 s, then the cap of 300·0.5 = 150 s.
    expect(rel.slice(0, 10)).toEqual([1, 2, 3, 7, 15, 31, 63, 127, 255, 405]);
    const gaps = rel.slice(1).map((t, i) => t - rel[i]!);
    expect(Math.max(...gaps)).toBe(150);
    expect(h.ended.every((e) => e.outcome === 'failure')).toBe(true);
    expect(h.ended.map((e) => e.consecutiveFailures).slice(0, 4)).toEqual([1, 2, 3, 4]);
    // Ticks inside the window are skipped and counted as backoff, never run in a burst afterwards.
    expect(h.skipped.every((s) => s.reason === 'backoff')).toBe(true);
    expect(h.skipped.length).toBeGreaterThan(1000);
    await h.runner.stop(0);
  });

  it('applies jitter u in [0.5, 1] to the delay', async () => {
    const clock = new FakeClock();
    const t0 = clock.now();
    const f = failing(clock, () => true);
    const h = harness([{ job: f.j, settings: settings({ intervalSec: 1, timeoutSec: 1 }) }], {
      clock,
      random: () => 1 - Number.EPSILON, // u just under 1
    });
    h.runner.start();
    await clock.advance(40 * SEC);
    // failure 3 at 3 s -> just under 8 s -> next grid tick 11 s; failure 4 at 11 s -> just under 16 s -> 27 s.
    expect(f.startTimes.map((t) => (t - t0) / SEC)).toEqual([1, 2, 3, 11, 27]);
    await h.runner.stop(0);
  });

  it('resets after a success, and a manual trigger bypasses backoff', async () => {
    const clock = new FakeClock();
    const t0 = clock.now();
    let shouldFail = true;
    const f = failing(clock, () => shouldFail);
    const h = harness([{ job: f.j, settings: settings({ intervalSec: 1, timeoutSec: 1 }) }], {
      clock,
      random: () => 0,
    });
    h.runner.start();
    await clock.advance(4 * SEC); // failures at 1, 2, 3; backoff until 7
    expect(h.runner.status()[0]!.backoff_until).toBe(new Date(t0 + 7 * SEC).toISOString());
    shouldFail = false;
    expect(h.runner.trigger('flaky')).toBe('started');
    await clock.advance(0);
    expect(h.ended.at(-1)!.outcome).toBe('success');
    expect(h.ended.at(-1)!.trigger).toBe('manual');
    expect(h.runner.status()[0]!.consecutive_failures).toBe(0);
    expect(h.runner.status()[0]!.backoff_until).toBeNull();
    await clock.advance(3 * SEC);
    // After the reset every tick runs again: 5, 6, 7.
    expect(f.startTimes.map((t) => (t - t0) / SEC)).toEqual([1, 2, 3, 4, 5, 6, 7]);
    await h.runner.stop(0);
  });
});

describe('Runner: timeouts and retries', () => {
  it('aborts the signal at the timeout and ends the run as timeout', async () => {
    const clock = new FakeClock();
    let sawAbort = false;
    const h = harness(
      [
        {
          job: job('stuck', async (ctx) => {
            ctx.signal.addEventListener('abort', () => {
              sawAbort = true;
            });
            return busy(clock, 60 * SEC, ctx);
          }),
          settings: settings({ intervalSec: 30, timeoutSec: 5 }),
        },
      ],
      { clock },
    );
    h.runner.start();
    await clock.advance(34 * SEC);
    expect(h.ended).toHaveLength(0);
    await clock.advance(1 * SEC);
    expect(sawAbort).toBe(true);
    expect(h.ended).toHaveLength(1);
    expect(h.ended[0]!.outcome).toBe('timeout');
    expect(h.ended[0]!.durationMs).toBe(5 * SEC);
    expect(h.ended[0]!.error?.name).toBe('TimeoutError');
    expect(h.ended[0]!.consecutiveFailures).toBe(1);
    await h.runner.stop(0);
  });

  it('ends at the timeout even if the job ignores its signal, and keeps the permit until it stops', async () => {
    const clock = new FakeClock();
    const h = harness(
      [
        {
          job: job(
            'deaf',
            () => new Promise((resolve) => clock.setTimer(20 * SEC, () => resolve({ items: 1 }))),
          ),
          settings: settings({ intervalSec: 100, timeoutSec: 5 }),
        },
      ],
      { clock },
    );
    h.runner.start();
    await clock.advance(105 * SEC);
    expect(h.ended.map((e) => e.outcome)).toEqual(['timeout']);
    expect(h.runner.semaphore.inUse).toBe(1); // the job is still running at 105 s
    await clock.advance(15 * SEC);
    expect(h.runner.semaphore.inUse).toBe(0);
    await h.runner.stop(0);
  });

  it('retries a transient error after 1 s and 2 s (× jitter) inside the run', async () => {
    const clock = new FakeClock();
    const attempts: number[] = [];
    const h = harness(
      [
        {
          job: job('net', (ctx) => {
            attempts.push(clock.now());
            if (ctx.attempt < 3) {
              return Promise.reject(
                Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }),
              );
            }
            return Promise.resolve({ items: 7 });
          }),
          settings: settings({ intervalSec: 60, timeoutSec: 30, retries: 2 }),
        },
      ],
      { clock, random: () => 0 },
    );
    h.runner.start();
    await clock.advance(70 * SEC);
    expect(attempts.map((t) => t - attempts[0]!)).toEqual([0, 500, 1500]);
    expect(h.ended).toHaveLength(1);
    expect(h.ended[0]).toMatchObject({ outcome: 'success', attempts: 3, items: 7, consecutiveFailures: 0 });
    await h.runner.stop(0);
  });

  it('does not retry an error that is not transient', async () => {
    const clock = new FakeClock();
    const h = harness(
      [
        {
          job: job('bug', () => Promise.reject(new TypeError('x is undefined'))),
          settings: settings({ intervalSec: 60, retries: 2 }),
        },
      ],
      { clock },
    );
    h.runner.start();
    await clock.advance(61 * SEC);
    expect(h.ended[0]).toMatchObject({ outcome: 'failure', attempts: 1 });
    expect(h.ended[0]!.error).toBeInstanceOf(TypeError);
    await h.runner.stop(0);
  });

  it('gives up after RETRIES transient failures and says how many attempts were made', async () => {
    const clock = new FakeClock();
    const h = harness(
      [
        {
          job: job('down', () => Promise.reject(Object.assign(new Error('reset'), { code: 'ECONNRESET' }))),
          settings: settings({ intervalSec: 60, timeoutSec: 30, retries: 2 }),
        },
      ],
      { clock },
    );
    h.runner.start();
    await clock.advance(70 * SEC);
    expect(h.ended[0]).toMatchObject({ outcome: 'failure', attempts: 3 });
    await h.runner.stop(0);
  });
});

describe('Runner: catch-up after downtime', () => {
  it('runs at once when the last success is older than the interval, or missing', async () => {
    const clock = new FakeClock();
    const freshness = new MemoryFreshness();
    freshness.records.set('old', {
      lastSuccessAt: clock.now() - 61 * SEC,
      runId: 'r',
      items: 1,
      durationMs: 1,
    });
    freshness.records.set('fresh', {
      lastSuccessAt: clock.now() - 30 * SEC,
      runId: 'r',
      items: 1,
      durationMs: 1,
    });
    const ok = () => Promise.resolve({ items: 1 });
    const h = harness(
      [
        { job: job('old', ok), settings: settings({ intervalSec: 60 }) },
        { job: job('fresh', ok), settings: settings({ intervalSec: 60 }) },
        { job: job('never', ok), settings: settings({ intervalSec: 60 }) },
      ],
      { clock, freshness },
    );
    h.runner.start();
    await h.runner.catchUp();
    await clock.advance(0);
    expect(h.started.map((s) => [s.job, s.trigger]).sort()).toEqual([
      ['never', 'catch-up'],
      ['old', 'catch-up'],
    ]);
    // The fresh job waits for its next tick; last_success_at is known from the record already.
    expect(h.runner.detail('fresh')!.last_success_at).toBe(new Date(clock.now() - 30 * SEC).toISOString());
    await clock.advance(60 * SEC);
    expect(h.started.filter((s) => s.job === 'fresh')).toHaveLength(1);
    // A success writes the freshness record that the next start-up reads.
    expect(freshness.records.get('never')?.items).toBe(1);
    await h.runner.stop(0);
  });
});

describe('Runner: catch-up on gaining leadership', () => {
  it('runs an overdue job once, then restarts its interval from that run (no burst)', async () => {
    const clock = new FakeClock();
    const t0 = clock.now();
    const h = harness(
      [{ job: job('j', () => Promise.resolve({ items: 1 })), settings: settings({ intervalSec: 60 }) }],
      {
        clock,
      },
    );
    h.runner.setLeader(false);
    h.runner.start();
    await clock.advance(25 * SEC);
    h.runner.setLeader(true); // e.g. the previous leader died: no freshness record, so overdue
    await clock.advance(0);
    expect(h.started.map((s) => [s.trigger, (s.startedAt.getTime() - t0) / SEC])).toEqual([['catch-up', 25]]);
    await clock.advance(55 * SEC); // the old grid's tick at 60 s is gone
    expect(h.started).toHaveLength(1);
    await clock.advance(10 * SEC);
    expect(h.started.map((s) => (s.startedAt.getTime() - t0) / SEC)).toEqual([25, 85]);
    await h.runner.stop(0);
  });
});

describe('Runner: recent runs', () => {
  it("keeps each successful run's context (e.g. suggested-users' users recomputed and extended)", async () => {
    const clock = new FakeClock();
    const context = { mode: 'incremental', users_recomputed: 3, users_extended: 97 };
    const h = harness(
      [{ job: job('j', () => Promise.resolve({ items: 100, context })), settings: settings() }],
      {
        clock,
      },
    );
    h.runner.start();
    expect(h.runner.trigger('j')).toBe('started');
    await clock.advance(0);
    expect(h.runner.detail('j')!.recent_runs.at(-1)).toMatchObject({
      outcome: 'success',
      items: 100,
      context,
    });
    await h.runner.stop(0);
  });
});

describe('Runner: a follower follows freshness records', () => {
  it('refreshFreshness picks up successes another replica recorded', async () => {
    const clock = new FakeClock();
    const freshness = new MemoryFreshness();
    const h = harness([{ job: job('j', () => Promise.resolve({ items: 1 })), settings: settings() }], {
      clock,
      freshness,
    });
    h.runner.setLeader(false);
    h.runner.start();
    expect(h.runner.detail('j')!.last_success_at).toBeNull();
    freshness.records.set('j', {
      lastSuccessAt: clock.now() - 5000,
      runId: 'other',
      items: 3,
      durationMs: 9,
    });
    await h.runner.refreshFreshness();
    expect(h.runner.detail('j')!.last_success_at).toBe(new Date(clock.now() - 5000).toISOString());
    expect(h.started).toHaveLength(0);
    await h.runner.stop(0);
  });
});

describe('Runner: a former leader follows the new leader (issue 13 point 4)', () => {
  it('a success recorded after its failures ends its streak and backoff; an older one does not', async () => {
    const clock = new FakeClock();
    const freshness = new MemoryFreshness();
    const h = harness(
      [
        {
          job: job('j', () => Promise.reject(new Error('clickhouse down'))),
          settings: settings({ intervalSec: 1 }),
        },
      ],
      { clock, freshness },
    );
    h.runner.start();
    await clock.advance(3 * 1000 + 100);
    expect(h.runner.detail('j')!.consecutive_failures).toBe(3);
    expect(h.runner.detail('j')!.backoff_until).not.toBeNull();
    h.runner.setLeader(false);
    const lastRunAt = Date.parse(h.runner.detail('j')!.last_run_at!);
    // A success from before our last failure says nothing about the streak.
    freshness.records.set('j', { lastSuccessAt: lastRunAt - 1, runId: 'old', items: 1, durationMs: 1 });
    await h.runner.refreshFreshness();
    expect(h.runner.detail('j')!.consecutive_failures).toBe(3);
    // The new leader succeeds: the follower's streak and backoff end, its gauges say healthy.
    await clock.advance(2000);
    freshness.records.set('j', { lastSuccessAt: clock.now() - 500, runId: 'new', items: 1, durationMs: 1 });
    await h.runner.refreshFreshness();
    const detail = h.runner.detail('j')!;
    expect(detail.consecutive_failures).toBe(0);
    expect(detail.backoff_until).toBeNull();
    expect(detail.last_outcome).toBe('failure'); // its own last run is still what it was
    expect(h.runner.gauges()[0]!.consecutiveFailures).toBe(0);
    await h.runner.stop(0);
  });
});

describe('Runner: control and robustness', () => {
  it('skips paused jobs with reason paused and runs them again after resume', async () => {
    const clock = new FakeClock();
    const h = harness(
      [{ job: job('p', () => Promise.resolve({ items: 1 })), settings: settings({ intervalSec: 10 }) }],
      {
        clock,
      },
    );
    h.runner.start();
    h.runner.setPaused('p', true);
    await clock.advance(30 * SEC);
    expect(h.skipped.map((s) => s.reason)).toEqual(['paused', 'paused', 'paused']);
    h.runner.setPaused('p', false);
    await clock.advance(10 * SEC);
    expect(h.ended).toHaveLength(1);
    await h.runner.stop(0);
  });

  it('skips with not_leader while not holding the lease, and aborts runs when losing it', async () => {
    const clock = new FakeClock();
    const h = harness(
      [
        {
          job: job('l', (ctx) => busy(clock, 50 * SEC, ctx)),
          settings: settings({ intervalSec: 10, timeoutSec: 100 }),
        },
      ],
      { clock },
    );
    h.runner.start();
    await clock.advance(15 * SEC);
    h.runner.setLeader(false);
    await clock.advance(0);
    expect(h.ended.map((e) => e.outcome)).toEqual(['cancelled']);
    await clock.advance(10 * SEC);
    expect(h.skipped.map((s) => s.reason)).toEqual(['not_leader']);
    expect(h.runner.trigger('l')).toBe('not_leader');
    await h.runner.stop(0);
  });

  it('cancel aborts the in-flight run with outcome cancelled and does not count a failure', async () => {
    const clock = new FakeClock();
    const h = harness(
      [
        {
          job: job('c', (ctx) => busy(clock, 50 * SEC, ctx)),
          settings: settings({ intervalSec: 10, timeoutSec: 100 }),
        },
      ],
      { clock },
    );
    h.runner.start();
    expect(h.runner.cancel('c')).toBe(false);
    await clock.advance(11 * SEC);
    expect(h.runner.trigger('c')).toBe('running');
    expect(h.runner.cancel('c')).toBe(true);
    await clock.advance(0);
    expect(h.ended[0]).toMatchObject({ outcome: 'cancelled', consecutiveFailures: 0 });
    expect(h.runner.trigger('nope')).toBe('unknown');
    await h.runner.stop(0);
  });

  it('keeps scheduling when an event listener throws or rejects', async () => {
    const clock = new FakeClock();
    const h = harness(
      [{ job: job('x', () => Promise.resolve({ items: 1 })), settings: settings({ intervalSec: 10 }) }],
      {
        clock,
      },
    );
    h.runner.events.on('run:started', () => {
      throw new Error('listener bug');
    });
    h.runner.events.on('run:ended', () => Promise.reject(new Error('async listener bug')));
    h.runner.start();
    await clock.advance(50 * SEC);
    expect(h.ended).toHaveLength(5);
    await h.runner.stop(0);
  });

  it('drops ticks missed while the loop was blocked instead of firing them in a burst', async () => {
    const clock = new FakeClock();
    const h = harness(
      [{ job: job('x', () => Promise.resolve({ items: 1 })), settings: settings({ intervalSec: 1 }) }],
      {
        clock,
      },
    );
    h.runner.start();
    // Simulate a blocked loop: time jumps 30 s while no timer can fire, then timers catch up.
    const t0 = clock.now();
    await clock.advance(1 * SEC);
    expect(h.started).toHaveLength(1);
    (clock as unknown as { now: () => number }).now = () => t0 + 31 * SEC;
    await clock.advance(1 * SEC);
    expect(h.started).toHaveLength(2);
    await h.runner.stop(0);
  });

  it('heartbeat: loopAlive reflects whether the scheduler timer keeps firing', async () => {
    const clock = new FakeClock();
    const h = harness([], { clock });
    h.runner.start();
    await clock.advance(10 * SEC);
    expect(h.runner.loopAlive(5 * SEC)).toBe(true);
    await h.runner.stop(0);
  });
});

describe('Runner: graceful stop', () => {
  it('lets an in-flight run finish within the grace period', async () => {
    const clock = new FakeClock();
    const h = harness(
      [
        {
          job: job('s', (ctx) => busy(clock, 3 * SEC, ctx)),
          settings: settings({ intervalSec: 10, timeoutSec: 30 }),
        },
      ],
      { clock },
    );
    h.runner.start();
    await clock.advance(11 * SEC);
    const stopped = h.runner.stop(30 * SEC);
    await clock.advance(2 * SEC);
    await stopped;
    expect(h.ended.map((e) => e.outcome)).toEqual(['success']);
  });

  it('aborts runs still going when the grace period ends (outcome cancelled)', async () => {
    const clock = new FakeClock();
    const h = harness(
      [
        {
          job: job('s', (ctx) => busy(clock, 30 * SEC, ctx)),
          settings: settings({ intervalSec: 10, timeoutSec: 60 }),
        },
      ],
      { clock },
    );
    h.runner.start();
    await clock.advance(11 * SEC);
    const stopped = h.runner.stop(1 * SEC);
    await clock.advance(1 * SEC);
    await stopped;
    expect(h.ended.map((e) => e.outcome)).toEqual(['cancelled']);
    expect(clock.pendingTimers).toBe(0);
  });
});
