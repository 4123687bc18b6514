import { randomUUID } from 'node:crypto';
import { pino } from 'pino';
import type { RunFacts } from '../../src/runner/job.js';

/**
 * What a test (or the bench) passes to a job's `run()` when it calls the job directly, without the
 * runner: a fresh run id, attempt 1, `at` (default: now) as both the scheduled and the start time (jobs
 * take their `now` from `startedAt`), a signal nobody aborts and a silent logger.
 */
export function runFacts(jobId: string, at: Date = new Date()): RunFacts {
  return {
    jobId,
    runId: randomUUID(),
    scheduledAt: at,
    startedAt: at,
    signal: new AbortController().signal,
    log: pino({ level: 'silent' }),
    attempt: 1,
  };
}
