import { describe, expect, it } from 'vitest';
import {
  buildDlqRecord,
  capRecord,
  DEFAULT_MAX_RECORD_BYTES,
  needsDlqRecord,
  recordBytes,
  runnerInfo,
  toKafkaMessage,
  type RecordTruncation,
} from '../../src/dlq/record.js';
import { JobError } from '../../src/runner/job.js';
import type { RunEnded } from '../../src/runner/runner.js';

function ended(overrides: Partial<RunEnded> = {}): RunEnded {
  return {
    job: 'trending-1h',
    runId: 'run-1',
    trigger: 'schedule',
    outcome: 'failure',
    scheduledAt: new Date('2026-01-01T00:00:00.000Z'),
    startedAt: new Date('2026-01-01T00:00:00.250Z'),
    endedAt: new Date('2026-01-01T00:00:05.262Z'),
    durationMs: 5012,
    attempts: 3,
    items: undefined,
    error: Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }),
    consecutiveFailures: 3,
    context: { window: '1h' },
    ...overrides,
  };
}

describe('DLQ record', () => {
  const info = { version: '1.2.3', host: 'box', pid: 42 };

  it('has exactly the CONTRACT §5 shape', () => {
    const e = ended();
    if (!needsDlqRecord(e)) throw new Error('expected a failure');
    expect(buildDlqRecord(e, info)).toStrictEqual({
      schema: 'cache-refresher.dlq.v1',
      job: 'trending-1h',
      run_id: 'run-1',
      scheduled_at: '2026-01-01T00:00:00.000Z',
      started_at: '2026-01-01T00:00:00.250Z',
      failed_at: '2026-01-01T00:00:05.262Z',
      duration_ms: 5012,
      outcome: 'failure',
      consecutive_failures: 3,
      attempts: 3,
      error: { name: 'Error', message: 'connect ECONNREFUSED', code: 'ECONNREFUSED' },
      context: { window: '1h' },
      runner: { version: '1.2.3', host: 'box', pid: 42 },
    });
  });

  it('is only for failed and timed-out runs', () => {
    expect(needsDlqRecord({ outcome: 'failure' })).toBe(true);
    expect(needsDlqRecord({ outcome: 'timeout' })).toBe(true);
    expect(needsDlqRecord({ outcome: 'success' })).toBe(false);
    expect(needsDlqRecord({ outcome: 'cancelled' })).toBe(false);
  });

  it('stringifies numeric codes, uses null for none, and survives unserialisable context', () => {
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    const e = ended({
      outcome: 'timeout',
      error: Object.assign(new JobError('bad batch'), { code: 159 }),
      context: { user_id: 10n ** 20n },
    });
    if (!needsDlqRecord(e)) throw new Error('expected a timeout');
    const r = buildDlqRecord(e, info);
    expect(r.error).toEqual({ name: 'JobError', message: 'bad batch', code: '159' });
    expect(r.context).toEqual({ user_id: '100000000000000000000' });
    const noCode = ended({ error: new TypeError('x'), context: cyclic });
    if (!needsDlqRecord(noCode)) throw new Error('expected a failure');
    const r2 = buildDlqRecord(noCode, info);
    expect(r2.error.code).toBeNull();
    expect(Object.keys(r2.context)).toEqual(['unserializable_context']);
  });

  it('truncates a huge error message so one record cannot block the spool', () => {
    const e = ended({ error: new Error('x'.repeat(100_000)) });
    if (!needsDlqRecord(e)) throw new Error('expected a failure');
    const message = buildDlqRecord(e, info).error.message;
    expect(message.length).toBeLessThan(8300);
    expect(message).toMatch(/… \(91808 more characters\)$/);
  });

  it('keys the Kafka message by job with job and error_name headers', () => {
    const e = ended();
    if (!needsDlqRecord(e)) throw new Error('expected a failure');
    const r = buildDlqRecord(e, info);
    expect(toKafkaMessage(r)).toEqual({
      key: 'trending-1h',
      value: JSON.stringify(r),
      headers: { job: 'trending-1h', error_name: 'Error' },
    });
  });

  it('reads the runner version from package.json at run time', async () => {
    const { readFile } = await import('node:fs/promises');
    const pkg = JSON.parse(await readFile(new URL('../../package.json', import.meta.url), 'utf8')) as {
      version: string;
    };
    const info = runnerInfo();
    expect(info.version).toBe(pkg.version);
    expect(info.pid).toBe(process.pid);
    expect(info.host).toBe((await import('node:os')).hostname());
  });

  describe('size cap (DLQ_MAX_RECORD_BYTES)', () => {
    /** What suggested-users reports when thousands of batches fail with long ClickHouse messages. */
    const failedBatches = (n: number): { batch: number; of: number; error: string }[] =>
      Array.from({ length: n }, (_v, i) => ({
        batch: i,
        of: n,
        error: `Code: 241. DB::Exception: Memory limit (total) exceeded: would use 3.51 GiB ${'x'.repeat(300)}`,
      }));

    it('leaves a record within the bound exactly as it is', () => {
      const e = ended({ context: { failed_batches: failedBatches(20) } });
      if (!needsDlqRecord(e)) throw new Error('expected a failure');
      const r = buildDlqRecord(e, info);
      expect(r.context.failed_batches).toHaveLength(20);
      expect(r.context.record_truncated).toBeUndefined();
    });

    for (const batches of [2_000, 4_000, 20_000]) {
      it(`summarises ${batches} failed batches to the first entries plus counts, under 512 KiB`, () => {
        const e = ended({ context: { active_users: 1, failed_batches: failedBatches(batches) } });
        if (!needsDlqRecord(e)) throw new Error('expected a failure');
        const r = buildDlqRecord(e, info);
        expect(recordBytes(r)).toBeLessThanOrEqual(DEFAULT_MAX_RECORD_BYTES);
        expect(r.context.active_users).toBe(1);
        expect(r.context.failed_batches).toEqual(failedBatches(batches).slice(0, 10));
        const cut = r.context.record_truncated as RecordTruncation;
        expect(cut.lists).toEqual({ failed_batches: batches });
        expect(cut.original_bytes).toBeGreaterThan(DEFAULT_MAX_RECORD_BYTES);
        expect(cut.max_bytes).toBe(DEFAULT_MAX_RECORD_BYTES);
      });
    }

    it('cuts long strings, then drops the context, then cuts the message, to fit any bound', () => {
      const base = buildDlqRecord(
        ended({ context: { sql: 'y'.repeat(50_000), rows: failedBatches(30) } }) as never,
        info,
        10_000_000,
      );
      const strings = capRecord(base, 20_000);
      expect(recordBytes(strings)).toBeLessThanOrEqual(20_000);
      expect(String(strings.context.sql)).toMatch(/… \(48976 more characters\)$/);
      expect((strings.context.record_truncated as RecordTruncation).strings_cut).toBe(1);

      const noContext = capRecord(base, 4_096);
      expect(recordBytes(noContext)).toBeLessThanOrEqual(4_096);
      expect(Object.keys(noContext.context)).toEqual(['record_truncated']);
      expect((noContext.context.record_truncated as RecordTruncation).context_dropped).toBe(true);

      const hugeMessage = capRecord({ ...base, error: { ...base.error, message: 'z'.repeat(8192) } }, 4_096);
      expect(recordBytes(hugeMessage)).toBeLessThanOrEqual(4_096);
      expect(hugeMessage.error.message).toMatch(/… \(cut\)$/);
      expect(hugeMessage.run_id).toBe(base.run_id);
    });
  });
});
