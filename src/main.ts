import { EXIT, UsageError, type Command, type ProcessIO } from './commands/command.js';
import { ConfigError, parseConfig, type Config } from './config.js';
import { logConfigWarnings } from './config-warnings.js';
import type { RegisteredJob } from './jobs/registration.js';
import { prepareSidecar } from './sidecar.js';
import { createLogger } from './observability/logger.js';
import { createRedactor, redactedIo } from './observability/redact.js';
import { runCommand } from './commands/run.js';
import { jobsCommand } from './commands/jobs.js';
import { dlqCommand } from './commands/dlq.js';
import { migrateCommand } from './commands/migrate.js';
import { onceCommand } from './commands/once.js';
import { seedCommand } from './commands/seed.js';

export { EXIT, UsageError, parseCommandArgs, type ProcessIO, type CommandInput } from './commands/command.js';

interface CommandSpec {
  usage: string;
  summary: string;
  run: Command;
  /** Loads every job (built-in, JOB_MODULES, JOBS_FILE) before the command; bad ones exit 2. */
  needsJobs?: boolean;
}

const COMMANDS: Record<string, CommandSpec> = {
  run: {
    usage: 'run',
    summary: 'run the sidecar: schedule every enabled job (default)',
    run: runCommand,
    needsJobs: true,
  },
  jobs: {
    usage: 'jobs [--check]',
    summary:
      "print each job's origin, schedule, next run and config; --check: JOBS_FILE's queries against ClickHouse",
    run: jobsCommand,
    needsJobs: true,
  },
  dlq: { usage: 'dlq replay', summary: 'deliver spooled dead-letter records to Kafka now', run: dlqCommand },
  once: {
    usage: 'once <job> [--json]',
    summary: 'run one job now and print its outcome',
    run: onceCommand,
    needsJobs: true,
  },
  migrate: {
    usage: 'migrate [--backfill]',
    summary: 'create or update the ClickHouse schema',
    run: migrateCommand,
  },
  seed: {
    usage: 'seed [--users N] [--days D] [--events N] [--seed S] [--replace]',
    summary: 'load deterministic synthetic data (default 20000 users, 7 days, 1000000 events, seed 42)',
    run: seedCommand,
  },
};

export function usage(): string {
  const width = Math.max(...Object.values(COMMANDS).map((c) => c.usage.length));
  return [
    'Usage: cache-refresher <command> [options]',
    '',
    'Commands:',
    ...Object.values(COMMANDS).map((c) => `  ${c.usage.padEnd(width)}  ${c.summary}`),
    '',
    'Options:',
    '  --help  show this help',
    '',
    'Configuration comes from environment variables; see the README for every one and its default.',
  ].join('\n');
}

/**
 * Parses the command line, validates configuration and dispatches. Returns the exit code; only
 * cli.ts turns that into `process.exit`.
 */
export async function main(
  argv: string[],
  env: Readonly<Record<string, string | undefined>>,
  io: ProcessIO,
): Promise<number> {
  const first = argv[0];
  if (first === '--help' || first === '-h' || first === 'help') {
    io.stdout(`${usage()}\n`);
    return EXIT.ok;
  }
  const name = first === undefined || first.startsWith('-') ? 'run' : first;
  const spec = COMMANDS[name];
  if (!spec) {
    io.stderr(`cache-refresher: unknown command "${name}"\n\n${usage()}\n`);
    return EXIT.usage;
  }
  const args = first === name ? argv.slice(1) : argv;
  if (args.includes('--help') || args.includes('-h')) {
    io.stdout(`${usage()}\n`);
    return EXIT.ok;
  }

  let config: Config;
  let jobs: readonly RegisteredJob[] = [];
  try {
    if (spec.needsJobs) {
      ({ config, jobs } = await prepareSidecar({ env, jobs: io.jobs, cwd: io.cwd }));
    } else {
      config = parseConfig(env);
    }
  } catch (err) {
    if (err instanceof ConfigError) {
      io.stderr(`cache-refresher: ${err.message}\n`);
      return EXIT.usage;
    }
    throw err;
  }
  // Everything this process writes passes the redactor: logs, command output, error messages.
  const redact = createRedactor(config.security.secrets);
  io = redactedIo(io, redact);
  const log = createLogger(config.logLevel, undefined, redact);
  logConfigWarnings(log, env, config, spec.needsJobs ? { jobs } : {});
  try {
    return await spec.run({ args, config, log, io, jobs });
  } catch (err) {
    if (err instanceof UsageError) {
      io.stderr(`cache-refresher ${name}: ${err.message}\n`);
      return EXIT.usage;
    }
    log.fatal({ err }, 'fatal error');
    return EXIT.failure;
  }
}
