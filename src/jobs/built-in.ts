import type { Config } from '../config.js';
import type { RefreshJob } from './define.js';
import { feedWarmerJob } from './feed-warmer.js';
import type { JobEntry } from './registration.js';
import { suggestedUsersJob } from './suggested-users.js';
import { trendingJob } from './trending.js';

/**
 * The five jobs of CONTRACT §2, made with `defineJob` and registered through the same `registerJobs`
 * as every other job; only their formula settings (`TRENDING_TOP_K`, …) come from `Config`.
 */
export function builtInJobs(config: Config): RefreshJob[] {
  return [
    trendingJob('1h', config),
    trendingJob('24h', config),
    trendingJob('7d', config),
    suggestedUsersJob(config),
    feedWarmerJob(config),
  ];
}

export function builtInEntries(config: Config): JobEntry[] {
  return builtInJobs(config).map((job) => ({ job, origin: { where: 'built-in' } }));
}
