import { JOB_IDS, type Env } from '../config.js';
import { defineJob, type RefreshJob } from '../jobs/define.js';
import type { JobSource } from '../jobs/registration.js';
import { DeclarativeJob } from './declarative-job.js';
import { loadJobsFile } from './jobs-file.js';
import { formatJobsFileProblem } from './problems.js';
import type { DeclarativeJobSpec } from './spec.js';

/**
 * `JOBS_FILE` (CONTRACT §11) as an origin of jobs: each job of the file becomes a `defineJob` job whose
 * defaults are the file's settings, so the per-job variables override them exactly as for any job
 * (`TOP_AUTHORS_INTERVAL_SEC`). Reads and validates the file without connecting; every problem is one
 * `file:line:` line. The queries' columns are checked against the server later (deploy-check.ts).
 */
export const jobsFileSource: JobSource = async (env, { cwd }) => {
  const file = env.JOBS_FILE?.trim();
  if (file === undefined || file === '') return { entries: [], problems: [] };
  const parsed = await loadJobsFile(file, { reservedIds: JOB_IDS, cronTimezone: cronTimezone(env), cwd });
  return {
    entries: parsed.jobs.map((spec) => ({
      job: declarativeJob(spec),
      origin: { variable: 'JOBS_FILE', where: `${spec.file}:${spec.lines.job}` },
    })),
    problems: parsed.problems.map(formatJobsFileProblem),
  };
};

/** CRON_TIMEZONE as the configuration will read it; an invalid zone is reported there, not per job. */
function cronTimezone(env: Env): string {
  const zone = env.CRON_TIMEZONE?.trim();
  if (zone === undefined || zone === '') return 'UTC';
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: zone });
    return zone;
  } catch {
    // An unknown zone: CRON_TIMEZONE's own check reports it; the file's crons are read in UTC meanwhile.
    return 'UTC';
  }
}

/** The job for one spec: its run reads the sidecar's clients and the job's settings from the context. */
export function declarativeJob(spec: DeclarativeJobSpec): RefreshJob {
  return defineJob({
    id: spec.id,
    schedule: spec.cron === undefined ? { intervalSec: spec.intervalSec ?? 60 } : { cron: spec.cron },
    ...(spec.timeoutSec === undefined ? {} : { timeoutSec: spec.timeoutSec }),
    ...(spec.ttlSec === undefined ? {} : { ttlSec: spec.ttlSec }),
    ...(spec.retries === undefined ? {} : { retries: spec.retries }),
    ...(spec.priority === undefined ? {} : { priority: spec.priority }),
    context: { jobs_file: spec.file, output: spec.output.type },
    run: (ctx) =>
      new DeclarativeJob({
        spec,
        clickhouse: ctx.clickhouse,
        cache: ctx.cache,
        keyPrefix: ctx.keyPrefix,
        ttlSec: ctx.settings.ttlSec,
      }).run(ctx),
  });
}
