import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { RunnerProcess } from '../fixtures/child.js';
import { servicesEnv } from './env.js';

const STEP = fileURLToPath(new URL('../fixtures/wall-clock-step.mjs', import.meta.url));
const HOUR = 3_600_000;

/**
 * Issue 13 point 3 in a real process: its wall clock steps back 1 h while it runs (a preloaded module
 * shifts `Date`, what the sidecar and croner read; monotonic time and timers are untouched, as with an
 * NTP step). Before the fix every job stopped for an hour; now interval and cron jobs keep running.
 */
describe('a runner whose wall clock steps back 1 h keeps running its jobs', () => {
  it(
    'interval and cron jobs run on schedule after the step, which is logged',
    { timeout: 90_000 },
    async () => {
      const s = servicesEnv();
      const runner = new RunnerProcess(
        {
          REDIS_URL: s.redisUrl,
          CLICKHOUSE_URL: s.clickhouseUrl,
          CACHE_KEY_PREFIX: `test-wallstep-${randomUUID()}`,
          HTTP_PORT: '0',
          LEADER_ELECTION: 'true',
          LEADER_LEASE_SEC: '6',
          NODE_OPTIONS: `--import=${STEP}`,
          WALL_CLOCK_STEP_MS: String(-HOUR),
          WALL_CLOCK_STEP_AFTER_MS: '8000',
        },
        [
          { id: 'every-2s', kind: 'sleep', ms: 100, intervalSec: 2, timeoutSec: 2 },
          { id: 'cron-2s', kind: 'sleep', ms: 100, cron: '*/2 * * * * *', timeoutSec: 2 },
        ],
      );
      try {
        const jump = await runner.waitForLog(
          (l) => String(l.msg).startsWith('wall clock stepped back'),
          30_000,
        );
        expect(Number(jump.jump_ms)).toBeLessThan(-HOUR + 2_000);
        expect(Number(jump.jump_ms)).toBeGreaterThan(-HOUR - 2_000);
        const at = runner.lines.indexOf(jump);
        await new Promise((r) => setTimeout(r, 12_000));
        const after = runner.lines.slice(at + 1).filter((l) => l.msg === 'run succeeded');
        const count = (job: string): number => after.filter((l) => l.job === job).length;
        console.log(
          `wall step: after the step, every-2s ran ${count('every-2s')}, cron-2s ${count('cron-2s')} times in 12 s`,
        );
        // Six ticks each in 12 s; a contended CPU may cost one or two.
        expect(count('every-2s')).toBeGreaterThanOrEqual(4);
        expect(count('cron-2s')).toBeGreaterThanOrEqual(4);
        // The step was real for the process: its log timestamps went back by about an hour.
        const before = Date.parse(String(runner.lines[0]!.time));
        const later = Date.parse(String(runner.lines.at(-1)!.time));
        expect(before - later).toBeGreaterThan(HOUR - 30_000);
        expect(after.every((l) => Number(l.duration_ms) >= 0 && Number(l.duration_ms) < 2_000)).toBe(true);
      } finally {
        runner.kill('SIGTERM');
        await runner.exited;
      }
    },
  );
});
