import { Cron } from 'croner';
import { describeOrigin } from '../jobs/registration.js';
import { describeSchedule, nextFireAt, type Schedule } from '../runner/schedule.js';
import { EXIT, parseCommandArgs, type CommandInput } from './command.js';
import { jobsCheckCommand } from './jobs-check.js';

/**
 * Prints every registered job (built-in, a program's, JOB_MODULES, JOBS_FILE) with its origin,
 * schedule, next run and settings, without connecting to anything; with `--check`, checks JOBS_FILE's
 * queries against ClickHouse instead (jobs-check.ts).
 */
export function jobsCommand(input: CommandInput): Promise<number> {
  const { values } = parseCommandArgs({
    args: input.args,
    options: { check: { type: 'boolean', default: false } },
  });
  if (values.check) return jobsCheckCommand(input);
  const { config, io, jobs } = input;
  const now = Date.now();
  const rows = jobs.map(({ job, settings: s, origin }) => {
    const schedule: Schedule =
      s.cron === undefined
        ? { kind: 'interval', intervalSec: s.intervalSec }
        : { kind: 'cron', pattern: s.cron, timezone: config.cronTimezone };
    // For an interval the first tick comes one interval after start-up (or at once on catch-up).
    const next =
      schedule.kind === 'interval'
        ? nextFireAt(schedule, now, now)
        : (new Cron(schedule.pattern, { timezone: schedule.timezone, paused: true }).nextRun()?.getTime() ??
          null);
    return [
      job.id,
      String(s.enabled),
      describeSchedule(schedule),
      next === null ? '-' : new Date(next).toISOString(),
      `${s.timeoutSec}s`,
      `${s.ttlSec}s`,
      String(s.retries),
      String(s.priority),
      describeOrigin(origin),
    ];
  });
  const header = [
    'job',
    'enabled',
    'schedule',
    'next run (if started now)',
    'timeout',
    'ttl',
    'retries',
    'priority',
    'origin',
  ];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]?.length ?? 0)));
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => c.padEnd(widths[i] ?? 0))
      .join('  ')
      .trimEnd();
  io.stdout([line(header), ...rows.map(line)].join('\n') + '\n');
  return Promise.resolve(EXIT.ok);
}
