import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { DlqDestination } from '../dlq/publisher.js';
import type { Outcome, Runner, SkipReason } from '../runner/runner.js';

const OUTCOMES: readonly Outcome[] = ['success', 'failure', 'timeout', 'cancelled'];
const SKIP_REASONS: readonly SkipReason[] = ['overlap', 'backoff', 'paused', 'not_leader'];
const DESTINATIONS: readonly DlqDestination[] = ['kafka', 'spool', 'dropped', 'rejected'];

/** Runs last from a few milliseconds (a cheap trending query) to the 600 s timeout cap. */
export const DURATION_BUCKETS = [
  0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600,
];

/** A job is stale when its last success is older than this many intervals (matches the default TTL). */
export const STALE_AFTER_INTERVALS = 3;

export interface MetricsSources {
  runner: Pick<Runner, 'events' | 'gauges' | 'semaphore' | 'isLeader' | 'jobIds'>;
  /** Records waiting in the DLQ spool. */
  spoolPending: () => number;
  /** Spooled records delivered to Kafka and corrupt spool lines skipped, since start. */
  spoolDelivered?: () => number;
  spoolCorrupt?: () => number;
  /** Wall clock in ms (the runner's clock), for staleness. */
  now: () => number;
}

export interface Metrics {
  readonly registry: Registry;
  /** Counts one dead-letter record at a destination (a spooled record may later count as rejected). */
  dlqRecorded(job: string, destination: DlqDestination): void;
}

/**
 * All metrics of CONTRACT §6 on one registry created here and owned by the app (never prom-client's
 * global one, so two apps in one process, as in tests, do not collide). Counters and the histogram are
 * fed by runner events; gauges are read from the runner at scrape time, so they can never drift.
 */
export function createMetrics(src: MetricsSources): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const registers = [registry];
  const { runner } = src;
  const jobs = runner.jobIds;

  const runs = new Counter({
    name: 'cache_refresher_job_runs_total',
    help: 'Finished runs by outcome.',
    labelNames: ['job', 'outcome'] as const,
    registers,
  });
  const duration = new Histogram({
    name: 'cache_refresher_job_duration_seconds',
    help: 'Run duration from getting a permit to the end of the run, by outcome.',
    labelNames: ['job', 'outcome'] as const,
    buckets: DURATION_BUCKETS,
    registers,
  });
  const skipped = new Counter({
    name: 'cache_refresher_job_skipped_total',
    help: 'Scheduled ticks that did not start a run, by reason.',
    labelNames: ['job', 'reason'] as const,
    registers,
  });
  const dlqRecords = new Counter({
    name: 'cache_refresher_dlq_records_total',
    help:
      'Dead-letter records by destination: kafka = acknowledged by Kafka at once, ' +
      'spool = written to the durable spool (delivered later; see dlq_spool_pending), ' +
      'dropped = neither (spool full or unwritable; the record is in the error log), ' +
      'rejected = a spooled record the broker refused permanently (moved to rejected.jsonl).',
    labelNames: ['job', 'destination'] as const,
    registers,
  });
  // Series exist from the first scrape, so dashboards and rate() see a 0 before the first event.
  for (const job of jobs) {
    for (const outcome of OUTCOMES) runs.inc({ job, outcome }, 0);
    for (const reason of SKIP_REASONS) skipped.inc({ job, reason }, 0);
    for (const destination of DESTINATIONS) dlqRecords.inc({ job, destination }, 0);
  }

  runner.events.on('run:ended', (e) => {
    runs.inc({ job: e.job, outcome: e.outcome });
    duration.observe({ job: e.job, outcome: e.outcome }, e.durationMs / 1000);
  });
  runner.events.on('tick:skipped', (e) => {
    skipped.inc({ job: e.job, reason: e.reason });
  });

  const seconds = (ms: number | null): number => (ms === null ? 0 : ms / 1000);
  /** Sets one gauge per job from the runner's state at scrape time. */
  const perJob = (
    name: string,
    help: string,
    value: (g: ReturnType<Runner['gauges']>[number], now: number) => number,
  ): void => {
    const gauge: Gauge<'job'> = new Gauge({
      name,
      help,
      labelNames: ['job'] as const,
      registers,
      collect: () => {
        const now = src.now();
        for (const g of runner.gauges()) gauge.set({ job: g.job }, value(g, now));
      },
    });
  };

  perJob(
    'cache_refresher_job_last_success_timestamp_seconds',
    'Unix time of the last successful run (0 = none known).',
    (g) => seconds(g.lastSuccessAt),
  );
  perJob(
    'cache_refresher_job_last_run_timestamp_seconds',
    'Unix time the last run ended, whatever its outcome (0 = none since start).',
    (g) => seconds(g.lastRunAt),
  );
  perJob(
    'cache_refresher_job_next_run_timestamp_seconds',
    'Unix time of the next scheduled tick (0 = none: disabled, stopped or no future fire time).',
    (g) => seconds(g.nextRunAt),
  );
  perJob(
    'cache_refresher_job_healthy',
    `1 when the job's last finished run (cancelled runs aside) succeeded and its last success is at ` +
      `most ${STALE_AFTER_INTERVALS} intervals old; else 0 (disabled jobs are 0).`,
    (g, now) => (isHealthy(g, now) ? 1 : 0),
  );
  perJob(
    'cache_refresher_job_consecutive_failures',
    'Failed or timed-out runs in a row (0 after a success).',
    (g) => g.consecutiveFailures,
  );
  perJob(
    'cache_refresher_job_items_processed',
    'Items refreshed by the last successful run.',
    (g) => g.lastItems ?? 0,
  );
  perJob(
    'cache_refresher_job_running',
    'Whether a run of the job is executing (holds a semaphore permit).',
    (g) => (g.executing ? 1 : 0),
  );

  const single = (name: string, help: string, value: () => number): void => {
    const gauge: Gauge = new Gauge({
      name,
      help,
      registers,
      collect: () => {
        gauge.set(value());
      },
    });
  };
  single('cache_refresher_dlq_spool_pending', 'Dead-letter records in the spool waiting for Kafka.', () =>
    src.spoolPending(),
  );
  single('cache_refresher_leader', '1 on the replica that holds the leader lease.', () =>
    runner.isLeader ? 1 : 0,
  );
  single(
    'cache_refresher_semaphore_waiting',
    'Runs waiting for a semaphore permit.',
    () => runner.semaphore.waiting,
  );
  // Beyond the contract: how the spool is doing, for the DLQ runbook.
  const { spoolDelivered, spoolCorrupt } = src;
  if (spoolDelivered) {
    single(
      'cache_refresher_dlq_spool_delivered',
      'Spooled dead-letter records delivered to Kafka since start.',
      spoolDelivered,
    );
  }
  if (spoolCorrupt) {
    single(
      'cache_refresher_dlq_spool_corrupt',
      'Torn or unparsable spool lines skipped since start (a torn line is an unacknowledged append cut by a crash).',
      spoolCorrupt,
    );
  }

  return {
    registry,
    dlqRecorded(job, destination) {
      dlqRecords.inc({ job, destination });
    },
  };
}

/**
 * The `job_healthy` definition: enabled, no failed or timed-out run since the last success (a cancelled
 * run is an operator's or shutdown's doing and says nothing about the job), and the last success is
 * not stale, i.e. at most STALE_AFTER_INTERVALS × interval old, which is also when the default TTL would
 * expire the cached value. Using consecutive failures rather than "this process's last run succeeded"
 * keeps a freshly restarted runner healthy when the freshness record in Redis is recent.
 */
export function isHealthy(
  g: Pick<
    ReturnType<Runner['gauges']>[number],
    'enabled' | 'consecutiveFailures' | 'lastSuccessAt' | 'intervalSec'
  >,
  now: number,
): boolean {
  return (
    g.enabled &&
    g.consecutiveFailures === 0 &&
    g.lastSuccessAt !== null &&
    now - g.lastSuccessAt <= STALE_AFTER_INTERVALS * g.intervalSec * 1000
  );
}
