import type { ClickHouseClient } from '@clickhouse/client';
import { Cron } from 'croner';
import type { CacheWriter } from '../cache/writer.js';
import type { JobSettingDefaults, JobSettings } from '../config.js';
import type { RunFacts, RunResult } from '../runner/job.js';

/**
 * The public shape of a job: what `defineJob` makes and what the runner registers, whatever the job's
 * origin (built in, a program's `createSidecar({ jobs })`, a `JOB_MODULES` module, a `JOBS_FILE` entry).
 */

/** When a job runs by default: a fixed interval in seconds (≥ 1) or a croner pattern (seconds allowed). */
export type JobSchedule = { readonly intervalSec: number } | { readonly cron: string };

/**
 * What a job's `run` receives for one run: the runner's facts about the run plus the clients a job
 * needs. Everything here is scoped to this run; nothing is global.
 */
export interface RunContext extends RunFacts {
  /** The ClickHouse client of the sidecar (`CLICKHOUSE_*`). Pass `abort_signal: ctx.signal` to queries. */
  readonly clickhouse: ClickHouseClient;
  /**
   * Writes cache values: `SET key value EX ttl`, pipelined, fenced by the leader lease (a replica that
   * lost the lease has its writes refused inside Redis with `FencedError`). Never deletes.
   */
  readonly cache: CacheWriter;
  /** `CACHE_KEY_PREFIX` (default `cache`): start every key with it. */
  readonly keyPrefix: string;
  /** The settings in force for this job, after the environment's overrides (`ttlSec` for writes). */
  readonly settings: Readonly<JobSettings>;
}

/** What `defineJob` takes. Every field but `id`, `schedule` and `run` is optional. */
export interface JobSpec {
  /** `[a-z0-9][a-z0-9-]*`: appears in metric labels, env prefixes, DLQ records, the HTTP API. */
  readonly id: string;
  /** The default schedule; `<PREFIX>INTERVAL_SEC` / `<PREFIX>CRON` override it. */
  readonly schedule: JobSchedule;
  /**
   * One run. Must honour `ctx.signal`, compute first and write last (a failed run must not replace good
   * values with partial ones), and resolve to how many items it refreshed. Throwing fails the run: it is
   * retried if the error is transient (connection refused/reset, a dependency timeout), then recorded in
   * the dead-letter topic.
   */
  run(ctx: RunContext): Promise<RunResult>;
  /** Default `true`; `<PREFIX>ENABLED` overrides. */
  readonly enabled?: boolean;
  /** Seconds before the run's signal aborts. Default: the interval, at most 600. */
  readonly timeoutSec?: number;
  /** TTL of the keys the job writes, in seconds. Default 3 × the interval. */
  readonly ttlSec?: number;
  /** Retries of a transient failure inside one run, 0 to 10. Default 2. */
  readonly retries?: number;
  /** Order for a free permit, higher first, -1000 to 1000. Default 1. */
  readonly priority?: number;
  /** Static facts copied into every dead-letter record of the job (e.g. `{ window: '1h' }`). */
  readonly context?: Readonly<Record<string, unknown>>;
  /**
   * The ClickHouse tables the job reads, unqualified (they live in `CLICKHOUSE_DATABASE`), e.g.
   * `['post_events', 'posts']`. Optional. While the job is enabled, `/readyz` answers 503 naming any
   * of them that does not exist, so an empty or wrong database shows before the first run fails on it.
   * Leave it out for a job that reads no table, or reads tables that come and go.
   */
  readonly readsTables?: readonly string[];
}

/** A registered job: made only by `defineJob`, so its fields have been checked once. */
export interface RefreshJob {
  readonly id: string;
  readonly schedule: JobSchedule;
  /** The defaults the environment's per-job variables override (schedule included). */
  readonly defaults: Readonly<JobSettingDefaults>;
  readonly context?: Readonly<Record<string, unknown>>;
  /** See `JobSpec.readsTables`. */
  readonly readsTables?: readonly string[];
  run(ctx: RunContext): Promise<RunResult>;
}

export type { RunResult };

/**
 * Marks objects made by `defineJob`. `Symbol.for` (not a module-local symbol, not `instanceof`) so a job
 * module that resolved its own copy of the library is still recognised.
 */
const JOB_BRAND = Symbol.for('cache-refresher.job');

export const JOB_ID_PATTERN = /^[a-z0-9][a-z0-9-]*$/;
/** An unqualified ClickHouse table name as `readsTables` takes it. */
const TABLE_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/**
 * Makes a `RefreshJob` from a spec, checking every field. Built-in jobs are made with it too.
 *
 * @throws TypeError naming the field, the value received and what was expected, e.g.
 *   `defineJob(top-authors): schedule.intervalSec must be an integer >= 1, got 0`.
 */
export function defineJob(spec: JobSpec): RefreshJob {
  // Checked as `unknown`: modules written in plain JavaScript reach here without the compiler's help.
  const loose: unknown = spec;
  const problems = specProblems(loose);
  if (problems.length > 0) {
    const id = (loose as { id?: unknown } | null)?.id;
    const who = typeof id === 'string' ? id : '?';
    throw new TypeError(`defineJob(${who}): ${problems.join('; ')}`);
  }
  const schedule: JobSchedule =
    'cron' in spec.schedule ? { cron: spec.schedule.cron } : { intervalSec: spec.schedule.intervalSec };
  const defaults: JobSettingDefaults = {
    ...schedule,
    ...(spec.enabled === undefined ? {} : { enabled: spec.enabled }),
    ...(spec.timeoutSec === undefined ? {} : { timeoutSec: spec.timeoutSec }),
    ...(spec.ttlSec === undefined ? {} : { ttlSec: spec.ttlSec }),
    ...(spec.retries === undefined ? {} : { retries: spec.retries }),
    ...(spec.priority === undefined ? {} : { priority: spec.priority }),
  };
  const run = spec.run.bind(spec);
  const job: RefreshJob = {
    id: spec.id,
    schedule: Object.freeze(schedule),
    defaults: Object.freeze(defaults),
    ...(spec.context === undefined ? {} : { context: Object.freeze({ ...spec.context }) }),
    ...(spec.readsTables === undefined ? {} : { readsTables: Object.freeze([...spec.readsTables]) }),
    run,
  };
  Object.defineProperty(job, JOB_BRAND, { value: true });
  return Object.freeze(job);
}

/** True for a value made by `defineJob` (from this or any other copy of the library). */
export function isRefreshJob(value: unknown): value is RefreshJob {
  return (
    typeof value === 'object' &&
    value !== null &&
    (value as Record<symbol, unknown>)[JOB_BRAND] === true &&
    typeof (value as { run?: unknown }).run === 'function'
  );
}

function specProblems(value: unknown): string[] {
  if (typeof value !== 'object' || value === null) return [`expects an object, got ${typeof value}`];
  const spec = value as Record<string, unknown>;
  const problems: string[] = [];
  const got = (v: unknown): string => (typeof v === 'string' ? JSON.stringify(v) : String(v));
  if (typeof spec.id !== 'string' || !JOB_ID_PATTERN.test(spec.id))
    problems.push(`id must match [a-z0-9][a-z0-9-]*, got ${got(spec.id)}`);
  if (typeof spec.run !== 'function') problems.push(`run must be a function, got ${typeof spec.run}`);
  const schedule = spec.schedule;
  if (typeof schedule !== 'object' || schedule === null) {
    problems.push('schedule must be { intervalSec } or { cron }');
  } else if ('cron' in schedule === 'intervalSec' in schedule) {
    problems.push('schedule must have exactly one of intervalSec and cron');
  } else if ('cron' in schedule) {
    problems.push(...cronProblems(schedule.cron));
  } else if (!isIntIn((schedule as { intervalSec?: unknown }).intervalSec, 1, 366 * 86_400)) {
    const interval = (schedule as { intervalSec?: unknown }).intervalSec;
    problems.push(`schedule.intervalSec must be an integer >= 1, got ${got(interval)}`);
  }
  if (spec.enabled !== undefined && typeof spec.enabled !== 'boolean')
    problems.push(`enabled must be a boolean, got ${got(spec.enabled)}`);
  const ranges: [string, number, number][] = [
    ['timeoutSec', 1, 366 * 86_400],
    ['ttlSec', 1, 3 * 366 * 86_400],
    ['retries', 0, 10],
    ['priority', -1000, 1000],
  ];
  for (const [field, min, max] of ranges) {
    const v = spec[field];
    if (v !== undefined && !isIntIn(v, min, max))
      problems.push(`${field} must be an integer from ${min} to ${max}, got ${got(v)}`);
  }
  if (spec.context !== undefined && (typeof spec.context !== 'object' || spec.context === null))
    problems.push('context must be an object');
  const tables = spec.readsTables;
  if (
    tables !== undefined &&
    !(Array.isArray(tables) && tables.every((t) => typeof t === 'string' && TABLE_NAME.test(t)))
  )
    problems.push(`readsTables must be an array of table names, got ${JSON.stringify(tables)}`);
  return problems;
}

function cronProblems(pattern: unknown): string[] {
  if (typeof pattern !== 'string') return [`schedule.cron must be a string, got ${typeof pattern}`];
  try {
    // The zone does not change whether a pattern parses; it is applied when the job is registered.
    new Cron(pattern, { paused: true });
    return [];
  } catch (err) {
    return [`schedule.cron must be a croner pattern, got ${JSON.stringify(pattern)} (${String(err)})`];
  }
}

function isIntIn(v: unknown, min: number, max: number): boolean {
  return typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max;
}
