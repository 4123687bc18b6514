import { describe, expect, it } from 'vitest';
import { buildDlqRecord, needsDlqRecord, runnerInfo, toKafkaMessage } from '../../src/dlq/record.js';
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
});
