import { Cron } from 'croner';
import { JOB_IDS } from '../config.js';
import { EXIT, parseCommandArgs, type CommandInput } from '../main.js';
import { describeSchedule, nextFireAt, type Schedule } from '../runner/schedule.js';
import { jobsCheckCommand } from './jobs-check.js';

/**
 * Prints each job's schedule, next run and settings without connecting to anything; with `--check`,
 * checks JOBS_FILE's queries against ClickHouse instead (jobs-check.ts).
 */
export function jobsCommand(input: CommandInput): Promise<number> {
  const { values } = parseCommandArgs({
    args: input.args,
    options: { check: { type: 'boolean', default: false } },
  });
  if (values.check) return jobsCheckCommand(input);
  const { config, io } = input;
  const now = Date.now();
  const rows = JOB_IDS.map((id) => {
    const s = config.jobs[id];
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
    return {
      job: id,
      enabled: s.enabled,
      schedule: describeSchedule(schedule),
      next_run_at: next === null ? null : new Date(next).toISOString(),
      timeout_sec: s.timeoutSec,
      ttl_sec: s.ttlSec,
      retries: s.retries,
      priority: s.priority,
    };
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
  ];
  const table = rows.map((r) => [
    r.job,
    String(r.enabled),
    r.schedule,
    r.next_run_at ?? '-',
    `${r.timeout_sec}s`,
    `${r.ttl_sec}s`,
    String(r.retries),
    String(r.priority),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...table.map((row) => row[i]?.length ?? 0)));
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => c.padEnd(widths[i] ?? 0))
      .join('  ')
      .trimEnd();
  io.stdout([line(header), ...table.map(line)].join('\n') + '\n');
  return Promise.resolve(EXIT.ok);
}
