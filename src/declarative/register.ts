import type { ClickHouseClient } from '@clickhouse/client';
import type { CacheWriter } from '../cache/writer.js';
import {
  formatProblem,
  JOB_IDS,
  parseJobSettings,
  type Config,
  type Env,
  type JobSettings,
} from '../config.js';
import { DeclarativeJob } from './declarative-job.js';
import { loadJobsFile } from './jobs-file.js';
import { formatJobsFileProblem } from './problems.js';
import type { DeclarativeJobSpec } from './spec.js';

/** A job of the jobs file with the settings it runs under (the file's values, then the environment's). */
export interface LoadedDeclarativeJob {
  spec: DeclarativeJobSpec;
  settings: JobSettings;
}

/**
 * Loads JOBS_FILE (before connecting to anything) and reads each job's settings: the file's values
 * are the job's defaults and the usual per-job variables override them (`TOP_AUTHORS_INTERVAL_SEC`),
 * exactly as for a built-in job. Returns the jobs, or every problem as one printable line each.
 */
export async function loadDeclarativeJobs(
  env: Env,
  config: Pick<Config, 'jobsFile' | 'cronTimezone'>,
): Promise<{ jobs: LoadedDeclarativeJob[]; problems: string[] }> {
  if (config.jobsFile === undefined) return { jobs: [], problems: [] };
  const parsed = await loadJobsFile(config.jobsFile, {
    reservedIds: JOB_IDS,
    cronTimezone: config.cronTimezone,
  });
  const problems = parsed.problems.map(formatJobsFileProblem);
  const jobs: LoadedDeclarativeJob[] = [];
  for (const spec of parsed.jobs) {
    const settings = parseJobSettings(env, spec.id, settingDefaults(spec), config.cronTimezone);
    if (settings.ok) jobs.push({ spec, settings: settings.settings });
    else problems.push(...settings.problems.map((p) => formatProblem(p).trim()));
  }
  return { jobs, problems };
}

function settingDefaults(spec: DeclarativeJobSpec): Parameters<typeof parseJobSettings>[2] {
  const optional = {
    ...(spec.timeoutSec === undefined ? {} : { timeoutSec: spec.timeoutSec }),
    ...(spec.ttlSec === undefined ? {} : { ttlSec: spec.ttlSec }),
    ...(spec.retries === undefined ? {} : { retries: spec.retries }),
    ...(spec.priority === undefined ? {} : { priority: spec.priority }),
  };
  return spec.cron === undefined
    ? { intervalSec: spec.intervalSec ?? 60, ...optional }
    : { cron: spec.cron, ...optional };
}

/** The runnable job for a loaded spec, given the sidecar's clients. */
export function declarativeJob(
  loaded: LoadedDeclarativeJob,
  deps: { clickhouse: ClickHouseClient; cache: CacheWriter; keyPrefix: string },
): DeclarativeJob {
  return new DeclarativeJob({
    spec: loaded.spec,
    clickhouse: deps.clickhouse,
    cache: deps.cache,
    keyPrefix: deps.keyPrefix,
    ttlSec: loaded.settings.ttlSec,
  });
}
