import type { ClickHouseClient } from '@clickhouse/client';
import type { Logger } from 'pino';
import { createClickHouse } from '../clients.js';
import { JOB_IDS, type Config } from '../config.js';
import { checkJobColumns, ColumnCheckUnavailableError } from './column-check.js';
import { loadJobsFile } from './jobs-file.js';
import type { ParseOptions } from './parse-jobs-file.js';
import { formatJobsFileProblem, type JobsFileProblem } from './problems.js';

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
  opts: ParseOptions & {
    clickhouse: Pick<ClickHouseClient, 'query'>;
    cwd?: string;
    now?: Date;
    timeoutMs?: number;
  },
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

/**
 * The deploy-time check as the sidecar does it when starting (`run`, `createSidecar().start()`), with
 * a ClickHouse client of its own whose log stays quiet (a rejected query is the expected answer here,
 * not an error). Resolves to the problem lines (the start must fail, exit 2), or to none: the file is
 * good, or ClickHouse could not be asked, which is logged and never stops the sidecar (CONTRACT §1).
 */
export async function checkJobsFileAtStart(
  config: Config,
  log: Logger,
  cwd: string = process.cwd(),
): Promise<string[]> {
  if (config.jobsFile === undefined) return [];
  const result = await withCheckClient(config, log, (clickhouse) =>
    deployCheck(config.jobsFile ?? '', {
      reservedIds: JOB_IDS,
      cronTimezone: config.cronTimezone,
      clickhouse,
      cwd,
    }),
  );
  if (result.status === 'invalid') return result.problems.map(formatJobsFileProblem);
  if (result.status === 'unavailable') {
    log.warn(
      { jobs_file: config.jobsFile, reason: result.reason },
      'declarative queries not checked: ClickHouse unavailable',
    );
  } else {
    log.info(
      { jobs_file: config.jobsFile, jobs: result.jobs },
      'declarative queries checked against ClickHouse',
    );
  }
  return [];
}

/** Runs `check` with a quiet ClickHouse client of its own, closed afterwards. */
export async function withCheckClient<T>(
  config: Config,
  log: Logger,
  check: (clickhouse: ClickHouseClient) => Promise<T>,
): Promise<T> {
  const clickhouse = createClickHouse(config, log.child({ component: 'jobs-check' }, { level: 'silent' }));
  try {
    return await check(clickhouse);
  } finally {
    await clickhouse.close();
  }
}
