import type { ClickHouseClient } from '@clickhouse/client';
import type { CacheWriter } from '../cache/writer.js';
import type { RunFacts } from '../runner/job.js';

/**
 * Shapes shared by suggested-users' full refresh (suggested-users.ts) and its incremental mode
 * (suggested-users-incremental.ts), here so that neither imports the other for them.
 */

/** suggested-users' settings (CONTRACT §4) and the clients it runs with. */
export interface SuggestedUsersOptions {
  clickhouse: ClickHouseClient;
  cache: CacheWriter;
  keyPrefix: string;
  perUser: number;
  activeDays: number;
  maxFollowees: number;
  batchSize: number;
  /** Batch queries in flight at once (SUGGESTED_USERS_PARALLELISM). Default 1. */
  parallelism?: number;
  ttlSec: number;
}

/**
 * A set of users whose suggestions to compute and write: `sql` is the `batch_users` piece of
 * suggestionsSql (a SELECT of one UInt64 column `u`), `params` its own query parameters, `label` a
 * short name for logs and the query id (`b0`, `changed-3`; `[a-z0-9-]`).
 */
export interface UserSubset {
  sql: string;
  params: Record<string, unknown>;
  label: string;
}

/** Users written and result rows skipped as unparsable by one batch. */
export interface SubsetWritten {
  written: number;
  skipped: number;
}

/**
 * Writes one batch of users of a full refresh (`subset.sql` selects them) in the activity window
 * `window` (unix seconds): resolves to the users written and result rows skipped as unparsable.
 */
export type BatchWriter = (
  ctx: RunFacts,
  window: { now: number; since: number },
  subset: UserSubset,
) => Promise<SubsetWritten>;
