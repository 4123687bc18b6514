import type { ClickHouseClient } from '@clickhouse/client';
import type { CacheWriter } from '../cache/writer.js';
import type { JobSettings } from '../config.js';
import type { RunnerJob } from '../runner/job.js';
import type { RefreshJob } from './define.js';

/** The clients every job's run receives (see `RunContext`). */
export interface JobClients {
  clickhouse: ClickHouseClient;
  cache: CacheWriter;
  keyPrefix: string;
}

/**
 * The runner's view of a job: the runner knows runs (ids, times, signals, retries), not clients, so
 * each run's context is completed here with the clients and the job's settings.
 */
export function bindJob(job: RefreshJob, settings: JobSettings, clients: JobClients): RunnerJob {
  const frozen = Object.freeze({ ...settings });
  return {
    id: job.id,
    ...(job.context === undefined ? {} : { context: job.context }),
    ...(job.readsTables === undefined ? {} : { readsTables: job.readsTables }),
    run: (ctx) => job.run({ ...ctx, ...clients, settings: frozen }),
  };
}
