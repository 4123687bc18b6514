import { JOB_IDS } from '../config.js';
import { deployCheck, withCheckClient } from '../declarative/deploy-check.js';
import { formatJobsFileProblem } from '../declarative/problems.js';
import { EXIT, type CommandInput } from './command.js';

/**
 * `jobs --check`: the deploy-time check of JOBS_FILE against the configured ClickHouse, the same one
 * `run` does at start-up (deploy-check.ts). Exit 0 when every query compiles and returns the columns its output names,
 * 2 with one `file:line:` line per problem, 1 when ClickHouse cannot be asked.
 */
export async function jobsCheckCommand({ config, log, io }: CommandInput): Promise<number> {
  const file = config.jobsFile;
  if (file === undefined) {
    io.stdout('JOBS_FILE is not set: no declarative jobs to check\n');
    return EXIT.ok;
  }
  const result = await withCheckClient(config, log, (clickhouse) =>
    deployCheck(file, { reservedIds: JOB_IDS, cronTimezone: config.cronTimezone, clickhouse, cwd: io.cwd }),
  );
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
}
