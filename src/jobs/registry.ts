import type { ClickHouseClient } from '@clickhouse/client';
import type { Logger } from 'pino';
import type { Config, JobId, JobSettings } from '../config.js';
import type { CacheWriter } from '../cache/writer.js';
import type { RefreshJob } from '../runner/job.js';
import { feedWarmerJob } from './feed-warmer.js';
import { suggestedUsersJob } from './suggested-users.js';
import { trendingJob } from './trending.js';

/** What a built-in job may be given. Each job takes only the parts it needs. */
export interface JobDeps {
  config: Config;
  clickhouse: ClickHouseClient;
  cache: CacheWriter;
  log: Logger;
}

export type JobFactory = (deps: JobDeps) => RefreshJob;

/**
 * The built-in jobs, by id. Adding a job is one file in this folder plus one line here (and, for a
 * built-in one, its id and defaults in config.ts).
 */
const BUILT_IN: Readonly<Record<JobId, JobFactory>> = {
  'trending-1h': trendingJob('1h'),
  'trending-24h': trendingJob('24h'),
  'trending-7d': trendingJob('7d'),
  'suggested-users': suggestedUsersJob,
  'feed-warmer': feedWarmerJob,
};

export interface RegisteredJob {
  job: RefreshJob;
  settings: JobSettings;
}

export function builtInJobs(deps: JobDeps): RegisteredJob[] {
  return Object.entries(BUILT_IN).map(([id, factory]) => ({
    job: factory(deps),
    settings: deps.config.jobs[id as JobId],
  }));
}
