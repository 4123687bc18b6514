import { Writable } from 'node:stream';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { busy, harness, job, settings } from './helpers/runner-fixture.js';
import { FakeClock } from './helpers/fake-clock.js';

const SEC = 1000;
const HOUR = 3600 * SEC;

/** A logger whose lines the test can read. */
function capturedLog(): {
  log: pino.Logger;
  lines: () => { level: number; msg: string; jump_ms?: number }[];
} {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      chunks.push(chunk.toString());
      done();
    },
  });
  return {
    log: pino({ level: 'info' }, stream),
    lines: () =>
      chunks
        .join('')
        .split('\n')
        .filter((l) => l !== '')
        .map((l) => JSON.parse(l) as { level: number; msg: string; jump_ms?: number }),
  };
}

describe('Runner: wall-clock steps (issue 13 point 3)', () => {
  it('an interval job keeps its schedule when the wall clock steps back 1 h, and the step is logged', async () => {
    const clock = new FakeClock();
    const captured = capturedLog();
    const h = harness(
      [
        {
          job: job('every-10s', (ctx) => busy(clock, 1 * SEC, ctx)),
          settings: settings({ intervalSec: 10 }),
        },
      ],
      { clock, log: captured.log },
    );
    h.runner.start();
    await clock.advance(25 * SEC); // runs at 10 s and 20 s
    expect(h.started).toHaveLength(2);
    clock.stepWall(-HOUR);
    await clock.advance(60 * SEC); // 30 s … 80 s of monotonic time: six more ticks
    expect(h.started).toHaveLength(8);
    expect(h.ended.every((e) => e.outcome === 'success' && e.durationMs === 1 * SEC)).toBe(true);
    // The runs after the step carry the wall time as it now reads.
    const last = h.started.at(-1)!;
    expect(last.scheduledAt.getTime()).toBe(clock.now() - 5 * SEC);
    const jump = captured.lines().find((l) => l.msg.includes('wall clock stepped back'));
    expect(jump?.level).toBe(40);
    expect(jump?.jump_ms).toBe(-HOUR);
    const status = h.runner.status()[0]!;
    expect(Date.parse(status.next_run_at!) - clock.now()).toBe(5 * SEC);
    await h.runner.stop(0);
  });

  it('an interval job neither bursts nor skips when the wall clock steps forward 1 h', async () => {
    const clock = new FakeClock();
    const h = harness([{ job: job('every-10s', (ctx) => busy(clock, 1 * SEC, ctx)), settings: settings() }], {
      clock,
    });
    h.runner.start();
    await clock.advance(15 * SEC);
    clock.stepWall(HOUR);
    await clock.advance(50 * SEC);
    expect(h.started).toHaveLength(6); // 10, 20, …, 60 s: one per interval, as without a step
    expect(h.skipped).toHaveLength(0);
    await h.runner.stop(0);
  });

  it('a cron job follows the wall clock as it reads after stepping back 1 h', async () => {
    const clock = new FakeClock(); // 2026-01-01T00:00:00Z
    const h = harness(
      [
        {
          job: job('cron', (ctx) => busy(clock, 1 * SEC, ctx)),
          settings: settings({ cron: '*/10 * * * * *' }),
        },
      ],
      { clock },
    );
    h.runner.start();
    await clock.advance(25 * SEC); // fires at :10 and :20
    expect(h.started.map((s) => s.scheduledAt.toISOString())).toEqual([
      '2026-01-01T00:00:10.000Z',
      '2026-01-01T00:00:20.000Z',
    ]);
    clock.stepWall(-HOUR); // now 2025-12-31T23:00:25Z
    await clock.advance(40 * SEC);
    // Re-aimed within one heartbeat at the pattern's next time as the clock now reads: :30, :40, :50,
    // :00 of 23:00–23:01, not an hour later.
    expect(h.started.slice(2).map((s) => s.scheduledAt.toISOString())).toEqual([
      '2025-12-31T23:00:30.000Z',
      '2025-12-31T23:00:40.000Z',
      '2025-12-31T23:00:50.000Z',
      '2025-12-31T23:01:00.000Z',
    ]);
    await h.runner.stop(0);
  });

  it('a cron job whose fire time a forward step skipped fires once at once, then on the new time', async () => {
    const clock = new FakeClock(Date.UTC(2026, 0, 1, 0, 30, 0));
    const h = harness(
      [
        {
          job: job('hourly', (ctx) => busy(clock, 1 * SEC, ctx)),
          settings: settings({ cron: '0 0 * * * *' }),
        },
      ],
      { clock },
    );
    h.runner.start();
    await clock.advance(5 * SEC);
    clock.stepWall(HOUR); // 01:30:05: the 01:00 fire time has passed
    await clock.advance(3 * SEC);
    expect(h.started.map((s) => s.scheduledAt.toISOString())).toEqual(['2026-01-01T01:00:00.000Z']);
    expect(h.runner.status()[0]!.next_run_at).toBe('2026-01-01T02:00:00.000Z');
    await h.runner.stop(0);
  });

  it('backoff lasts its length in elapsed time, whatever the wall clock does', async () => {
    const clock = new FakeClock();
    const h = harness(
      [
        {
          job: job('failing', () => Promise.reject(new Error('query failed'))),
          settings: settings({ intervalSec: 1 }),
        },
      ],
      { clock },
    );
    h.runner.start();
    await clock.advance(3 * SEC + 100); // three failures: backoff 2^3 s × u (u ≈ 1) ≈ 8 s
    expect(h.ended).toHaveLength(3);
    clock.stepWall(-HOUR);
    await clock.advance(9 * SEC);
    expect(h.ended).toHaveLength(4);
    expect(h.skipped.filter((s) => s.reason === 'backoff').length).toBeGreaterThanOrEqual(6);
    await h.runner.stop(0);
  });
});
