/**
 * cache-refresher as a library: `import { createSidecar, defineJob } from 'cache-refresher'`.
 *
 * This module is the whole public surface (CONTRACT §11): what it exports is kept stable across minor
 * versions; everything else in the package is internal and may change.
 */

export { createSidecar, type Sidecar, type SidecarJob, type SidecarOptions } from './sidecar.js';
export {
  defineJob,
  type JobSchedule,
  type JobSpec,
  type RefreshJob,
  type RunContext,
  type RunResult,
} from './jobs/define.js';
export { JobError } from './runner/job.js';
export { FencedError, type CacheEntry, type CacheWriter } from './cache/writer.js';
export { eachRow, writeStream, type StreamTarget } from './cache/stream.js';
export { ConfigError, type ConfigProblem, type Env, type JobSettings } from './config.js';
