import type { ClickHouseClient } from '@clickhouse/client';
import { checkJobColumns, ColumnCheckUnavailableError } from './column-check.js';
import { loadJobsFile } from './jobs-file.js';
import type { ParseOptions } from './parse-jobs-file.js';
import type { JobsFileProblem } from './problems.js';

/** How long the deploy-time check may take before it counts as "server unavailable". */
export const DEPLOY_CHECK_TIMEOUT_MS = 15_000;

export type DeployCheckResult =
  /** Every query compiles and returns every column its output names. */
  | { status: 'ok'; jobs: number }
  /** The file is wrong: exit 2 with these lines. */
  | { status: 'invalid'; problems: readonly JobsFileProblem[] }
  /** The server could not be asked: nothing is known (`run` carries on, `jobs --check` exits 1). */
  | { status: 'unavailable'; reason: string };

/**
 * The deploy-time check of a jobs file (CONTRACT §11): the static validation again (cheap, and it
 * gives the specs) and then each query described by the server with its parameters. Run by `run` at
 * start-up, before scheduling, and by `cache-refresher jobs --check`.
 */
export async function deployCheck(
  file: string,
  opts: ParseOptions & { clickhouse: Pick<ClickHouseClient, 'query'>; now?: Date; timeoutMs?: number },
): Promise<DeployCheckResult> {
  const parsed = await loadJobsFile(file, opts);
  if (parsed.problems.length > 0) return { status: 'invalid', problems: parsed.problems };
  try {
    const problems = await checkJobColumns(opts.clickhouse, parsed.jobs, {
      now: opts.now ?? new Date(),
      signal: AbortSignal.timeout(opts.timeoutMs ?? DEPLOY_CHECK_TIMEOUT_MS),
    });
    return problems.length > 0 ? { status: 'invalid', problems } : { status: 'ok', jobs: parsed.jobs.length };
  } catch (err) {
    if (err instanceof ColumnCheckUnavailableError) return { status: 'unavailable', reason: err.message };
    throw err;
  }
}
