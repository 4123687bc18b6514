import type { ClickHouseClient } from '@clickhouse/client';
import type { Logger } from 'pino';
import { createClickHouse } from '../clients.js';
import { JOB_IDS, type Config } from '../config.js';
import { deployCheck } from '../declarative/deploy-check.js';
import { formatJobsFileProblem } from '../declarative/problems.js';
import { EXIT, type CommandInput } from './command.js';

/**
 * `jobs --check`: the deploy-time check of JOBS_FILE against the configured ClickHouse, the same one
 * `run` does at start-up. Exit 0 when every query compiles and returns the columns its output names,
 * 2 with one `file:line:` line per problem, 1 when ClickHouse cannot be asked.
 */
export async function jobsCheckCommand({ config, log, io }: CommandInput): Promise<number> {
  const file = config.jobsFile;
  if (file === undefined) {
    io.stdout('JOBS_FILE is not set: no declarative jobs to check\n');
    return EXIT.ok;
  }
  const clickhouse = checkClient(config, log);
  try {
    const result = await deployCheck(file, {
      reservedIds: JOB_IDS,
      cronTimezone: config.cronTimezone,
      clickhouse,
    });
    switch (result.status) {
      case 'ok':
        io.stdout(
          `${file}: ${result.jobs} declarative job${result.jobs === 1 ? '' : 's'} checked against ClickHouse: ` +
            'every query compiles and returns the columns its output names\n',
        );
        return EXIT.ok;
      case 'invalid':
        io.stderr(`${result.problems.map(formatJobsFileProblem).join('\n')}\n`);
        return EXIT.usage;
      case 'unavailable':
        io.stderr(`cache-refresher jobs --check: ClickHouse could not be asked: ${result.reason}\n`);
        return EXIT.failure;
    }
  } finally {
    await clickhouse.close();
  }
}

/**
 * The same check at `run`'s start-up, before scheduling: false (the caller exits 2) when the file's
 * queries are wrong. A ClickHouse that cannot be asked is not the file's fault and never stops the
 * sidecar (CONTRACT §1): it logs a warning and the jobs' own runs will fail and be dead-lettered.
 */
export async function startupJobsCheck({
  config,
  log,
  io,
}: Pick<CommandInput, 'config' | 'log' | 'io'>): Promise<boolean> {
  if (config.jobsFile === undefined) return true;
  const clickhouse = checkClient(config, log);
  let result: Awaited<ReturnType<typeof deployCheck>>;
  try {
    result = await deployCheck(config.jobsFile, {
      reservedIds: JOB_IDS,
      cronTimezone: config.cronTimezone,
      clickhouse,
    });
  } finally {
    await clickhouse.close();
  }
  if (result.status === 'invalid') {
    io.stderr(
      `cache-refresher: JOBS_FILE failed the check against ClickHouse (${result.problems.length} problem${
        result.problems.length === 1 ? '' : 's'
      }):\n${result.problems.map((p) => `  ${formatJobsFileProblem(p)}\n`).join('')}`,
    );
    return false;
  }
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
  return true;
}

/** A client of its own whose log stays quiet: a rejected query is the expected answer here, not an error. */
function checkClient(config: Config, log: Logger): ClickHouseClient {
  return createClickHouse(config, log.child({ component: 'jobs-check' }, { level: 'silent' }));
}
