import { Cron } from 'croner';

/** When a job fires: every `intervalSec` seconds, or on a croner pattern in a time zone. */
export type Schedule =
  { kind: 'interval'; intervalSec: number } | { kind: 'cron'; pattern: string; timezone: string };

export function describeSchedule(s: Schedule): string {
  return s.kind === 'interval' ? `every ${s.intervalSec}s` : `cron "${s.pattern}" (${s.timezone})`;
}

/**
 * The first fire time strictly after `afterMs`. Interval ticks sit on a fixed grid anchored at
 * `anchorMs` (the runner's start), so they never drift, and a long pause (a backoff, a blocked event
 * loop) skips the missed grid points instead of firing them in a burst. Pure: no timers, no clock.
 */
export function nextFireAt(schedule: Schedule, afterMs: number, anchorMs: number): number | null {
  if (schedule.kind === 'interval') {
    const step = schedule.intervalSec * 1000;
    const elapsed = afterMs - anchorMs;
    const k = elapsed < 0 ? 0 : Math.floor(elapsed / step) + 1;
    return anchorMs + k * step;
  }
  const next = new Cron(schedule.pattern, { timezone: schedule.timezone, paused: true }).nextRun(
    new Date(afterMs),
  );
  return next === null ? null : next.getTime();
}
