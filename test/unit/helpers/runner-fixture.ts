import { pino, type Logger } from 'pino';
import type { JobSettings } from '../../../src/config.js';
import type { RunnerJob, RunFacts, RunResult } from '../../../src/runner/job.js';
import { Runner, type FreshnessStore, type RunEnded, type RunnerEvents } from '../../../src/runner/runner.js';
import { FakeClock } from './fake-clock.js';

export function settings(overrides: Partial<JobSettings> = {}): JobSettings {
  const intervalSec = overrides.intervalSec ?? 10;
  return {
    enabled: true,
    intervalSec,
    cron: undefined,
    timeoutSec: Math.min(intervalSec, 600),
    ttlSec: 3 * intervalSec,
    retries: 0,
    priority: 0,
    ...overrides,
  };
}

/** A job whose runs are driven by the test: each run calls `body` with the context. */
export function job(id: string, body: (ctx: RunFacts) => Promise<RunResult>): RunnerJob {
  return { id, context: { test: true }, run: body };
}

/** Resolves after `ms` on the fake clock, rejecting when the run's signal aborts. */
export function busy(clock: FakeClock, ms: number, ctx: RunFacts, items = 1): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const t = clock.setTimer(ms, () => {
      resolve({ items });
    });
    ctx.signal.addEventListener('abort', () => {
      t.cancel();
      reject(ctx.signal.reason as Error);
    });
  });
}

export class MemoryFreshness implements FreshnessStore {
  readonly records = new Map<
    string,
    { lastSuccessAt: number; runId: string; items: number; durationMs: number }
  >();
  lastSuccessAt(jobId: string): Promise<number | null> {
    return Promise.resolve(this.records.get(jobId)?.lastSuccessAt ?? null);
  }
  recordSuccess(
    jobId: string,
    record: { lastSuccessAt: number; runId: string; items: number; durationMs: number },
  ): Promise<void> {
    this.records.set(jobId, record);
    return Promise.resolve();
  }
}

export interface Harness {
  clock: FakeClock;
  runner: Runner;
  freshness: MemoryFreshness;
  ended: RunEnded[];
  skipped: RunnerEvents['tick:skipped'][];
  started: RunnerEvents['run:started'][];
}

export function harness(
  jobs: { job: RunnerJob; settings: JobSettings }[],
  opts: {
    maxConcurrentJobs?: number;
    random?: () => number;
    clock?: FakeClock;
    freshness?: MemoryFreshness;
    log?: Logger;
  } = {},
): Harness {
  const clock = opts.clock ?? new FakeClock();
  const freshness = opts.freshness ?? new MemoryFreshness();
  const runner = new Runner({
    jobs,
    maxConcurrentJobs: opts.maxConcurrentJobs ?? 5,
    backoff: { afterFailures: 3, baseSec: 1, maxSec: 300 },
    cronTimezone: 'UTC',
    clock,
    log: opts.log ?? pino({ level: 'silent' }),
    freshness,
    random: opts.random ?? (() => 1 - Number.EPSILON),
  });
  const h: Harness = { clock, runner, freshness, ended: [], skipped: [], started: [] };
  runner.events.on('run:ended', (e) => {
    h.ended.push(e);
  });
  runner.events.on('tick:skipped', (e) => {
    h.skipped.push(e);
  });
  runner.events.on('run:started', (e) => {
    h.started.push(e);
  });
  return h;
}
