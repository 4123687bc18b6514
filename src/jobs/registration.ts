import { parseJobSettings, type ConfigProblem, type Env, type JobSettings } from '../config.js';
import type { RefreshJob } from './define.js';

/**
 * Where a job came from, for messages and the `jobs` listing. `variable` names the setting that brought
 * it in (`JOB_MODULES`, `JOBS_FILE`, or `jobs` for a program's `createSidecar({ jobs })`); built-in jobs
 * have none.
 */
export interface JobOrigin {
  readonly variable?: string;
  /** e.g. `built-in`, `./jobs/top-authors.mjs`, `jobs.yaml:12`. */
  readonly where: string;
}

/** A job as an origin hands it over, before its settings are read. */
export interface JobEntry {
  readonly job: RefreshJob;
  readonly origin: JobOrigin;
}

/** A job with the settings it runs under: what the runner, `jobs`, `once` and the HTTP API all use. */
export interface RegisteredJob {
  readonly job: RefreshJob;
  readonly settings: JobSettings;
  readonly origin: JobOrigin;
}

/**
 * An origin of jobs the environment names (`JOB_MODULES`, `JOBS_FILE`): reads its variables, loads what
 * they point at and returns the jobs, or one line per problem (`JOB_MODULES: got …, expected …`,
 * `jobs.yaml:3: …`). Must not connect to anything. Paths resolve against `cwd`.
 */
export type JobSource = (env: Env, opts: { cwd: string }) => Promise<JobSourceResult>;

export interface JobSourceResult {
  readonly entries: readonly JobEntry[];
  /** One line each, printed under the exit-2 report. */
  readonly problems: readonly string[];
}

/**
 * Reads every job's settings from `env` over its own defaults (one rule for every origin, CONTRACT §11)
 * and rejects an id registered twice. Returns the registered jobs in entry order and every problem.
 */
export function registerJobs(
  env: Env,
  entries: readonly JobEntry[],
  timezone: string,
): { jobs: RegisteredJob[]; problems: ConfigProblem[] } {
  const jobs: RegisteredJob[] = [];
  const problems: ConfigProblem[] = [];
  const byId = new Map<string, JobOrigin>();
  for (const { job, origin } of entries) {
    const first = byId.get(job.id);
    if (first) {
      problems.push({
        name: origin.variable ?? 'jobs',
        value: origin.where,
        expected: `a job id not registered yet ("${job.id}" is already registered by ${describeOrigin(first)})`,
      });
      continue;
    }
    byId.set(job.id, origin);
    const parsed = parseJobSettings(env, job.id, job.defaults, timezone);
    if (parsed.ok) jobs.push({ job, settings: parsed.settings, origin });
    else problems.push(...parsed.problems);
  }
  return { jobs, problems };
}

/** `built-in`, `JOB_MODULES ./x.mjs`, … */
export function describeOrigin(origin: JobOrigin): string {
  return origin.variable === undefined ? origin.where : `${origin.variable} ${origin.where}`;
}
