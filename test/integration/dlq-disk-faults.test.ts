// The dead-letter spool on a real full disk (a 64 KiB tmpfs) while the real Kafka is stopped, and with a
// damaged offset file: records that were reported spooled all reach the topic, records the full disk
// could not take are dropped, counted and logged in full, nothing hangs, nothing is left behind.
// Needs root (mount -t tmpfs), as CI has; without it the test fails rather than skipping.
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DlqRecord } from '../../src/dlq/record.js';
import { DlqSpool } from '../../src/dlq/spool.js';
import { RunnerProcess } from '../fixtures/child.js';
import { servicesEnv } from './env.js';
import { createTopic, testKafka, TopicReader, topicSize } from './kafka-helpers.js';

const run = promisify(execFile);

/** The run_id → log line of every DLQ outcome a runner logged. */
function outcomes(runner: RunnerProcess, destination: string): Map<string, Record<string, unknown>> {
  return new Map(
    runner.lines
      .filter((l) => l.destination === destination && typeof l.run_id === 'string')
      .map((l) => [String(l.run_id), l]),
  );
}

describe('DLQ spool on a full disk (real tmpfs, real Kafka stopped)', () => {
  const s = servicesEnv();
  const topic = `test-dlq-disk-${randomUUID()}`;
  let mnt: string;
  let mounted = false;
  const children: RunnerProcess[] = [];
  const services = (action: 'stop' | 'start'): Promise<unknown> =>
    run('bash', [s.servicesScript, action, 'kafka'], { timeout: 180_000 });

  beforeAll(async () => {
    await createTopic(testKafka(s.kafkaBrokers), topic);
    mnt = await mkdtemp(path.join(os.tmpdir(), 'dlq-tmpfs-'));
    await run('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', mnt]);
    mounted = true;
  });

  afterAll(async () => {
    for (const child of children) {
      child.kill('SIGKILL');
      await child.exited;
    }
    if (mounted) await run('umount', [mnt]);
    await rm(mnt, { recursive: true, force: true });
  });

  it('spooled records all arrive, dropped ones are counted and logged, nothing hangs', async () => {
    const spoolDir = path.join(mnt, 'spool');
    const ballast = path.join(mnt, 'ballast');
    // Room to free later: "free a little space" as an operator would.
    await writeFile(ballast, Buffer.alloc(16 * 1024, 1));
    const env = {
      REDIS_URL: s.redisUrl,
      CLICKHOUSE_URL: s.clickhouseUrl,
      KAFKA_BROKERS: s.kafkaBrokers.join(','),
      DLQ_TOPIC: topic,
      DLQ_SPOOL_DIR: spoolDir,
      CACHE_KEY_PREFIX: `test-dlq-disk-${randomUUID()}`,
      HTTP_PORT: '0',
      LEADER_ELECTION: 'false',
      BACKOFF_AFTER_FAILURES: '1000',
      SHUTDOWN_GRACE_SEC: '5',
    };
    let reader: TopicReader | undefined;
    try {
      await services('stop');
      // About 3 KiB per record, three records a second: the 64 KiB disk is full within seconds.
      const jobs = ['a', 'b', 'c'].map((id) => ({ id, kind: 'fail' as const, intervalSec: 1, pad: 3000 }));
      const droppedCounted = async (r: RunnerProcess): Promise<number> => {
        let sum = 0;
        for (const job of ['a', 'b', 'c']) {
          sum += (await r.metric('cache_refresher_dlq_records_total', { job, destination: 'dropped' })) ?? 0;
        }
        return sum;
      };
      const first = new RunnerProcess(env, jobs);
      children.push(first);
      await expect
        .poll(() => outcomes(first, 'dropped').size, { timeout: 60_000, interval: 100 })
        .toBeGreaterThanOrEqual(3);
      expect(outcomes(first, 'spool').size).toBeGreaterThanOrEqual(3);
      // Every drop is counted, per job, exactly as logged.
      await expect
        .poll(async () => (await droppedCounted(first)) === outcomes(first, 'dropped').size)
        .toBe(true);

      // SIGTERM at the worst moment (disk full, Kafka down), then a restart on the same full volume.
      let signalled = Date.now();
      first.kill('SIGTERM');
      expect(await first.exited).toEqual({ code: 0, signal: null });
      const firstExitMs = Date.now() - signalled;
      expect(firstExitMs).toBeLessThan(15_000);
      const second = new RunnerProcess(env, jobs);
      children.push(second);
      const opened = await second.waitForLog((l) => l.msg === 'dlq spool opened');
      expect(opened.pending).toBe(outcomes(first, 'spool').size);
      await expect
        .poll(() => outcomes(second, 'dropped').size, { timeout: 30_000, interval: 100 })
        .toBeGreaterThanOrEqual(1);

      await rm(ballast);
      const freedAt = Date.now();
      // With space again, new records are spooled once more.
      await expect
        .poll(
          () => [...outcomes(second, 'spool').values()].some((l) => Date.parse(String(l.time)) > freedAt),
          { timeout: 20_000 },
        )
        .toBe(true);

      await services('start');
      // Kafka back: the spool drains (its offset writes work even on the full disk) and is compacted.
      await expect
        .poll(() => second.metric('cache_refresher_dlq_spool_pending'), { timeout: 90_000, interval: 500 })
        .toBe(0);
      await expect
        .poll(() => outcomes(second, 'kafka').size, { timeout: 30_000, interval: 200 })
        .toBeGreaterThanOrEqual(1);
      await expect
        .poll(async () => (await droppedCounted(second)) === outcomes(second, 'dropped').size)
        .toBe(true);

      signalled = Date.now();
      second.kill('SIGTERM');
      expect(await second.exited).toEqual({ code: 0, signal: null });
      const secondExitMs = Date.now() - signalled;
      expect(secondExitMs).toBeLessThan(15_000);

      const all = (destination: string): Map<string, Record<string, unknown>> =>
        new Map([...outcomes(first, destination), ...outcomes(second, destination)]);
      const dropped = all('dropped');
      // Dropped records are logged at error level with the whole record, to be recovered from the logs.
      for (const [runId, line] of dropped) {
        expect(line.level).toBe('error');
        const record = line.record as DlqRecord;
        expect(record.run_id).toBe(runId);
        expect(record.schema).toBe('cache-refresher.dlq.v1');
        expect((record.context.pad as string).length).toBe(3000);
      }

      // No publish took more than 3 s from the end of its run to its outcome.
      const ended = new Map(
        [...first.lines, ...second.lines]
          .filter((l) => l.outcome === 'failure' && typeof l.run_id === 'string')
          .map((l) => [String(l.run_id), Date.parse(String(l.time))]),
      );
      const resolvedIn: number[] = [];
      for (const destination of ['kafka', 'spool', 'dropped']) {
        for (const [runId, line] of all(destination)) {
          const end = ended.get(runId);
          if (end !== undefined) resolvedIn.push(Date.parse(String(line.time)) - end);
        }
      }
      expect(resolvedIn.length).toBeGreaterThan(10);
      expect(Math.max(...resolvedIn)).toBeLessThanOrEqual(3_000);

      // Every record reported spooled or published is on the topic, at most twice.
      const spooled = all('spool');
      const published = all('kafka');
      const expected = [...spooled.keys(), ...published.keys()];
      reader = await TopicReader.start(testKafka(s.kafkaBrokers), topic);
      const received = reader.received;
      await expect
        .poll(() => expected.filter((id) => !received.some((r) => r.record.run_id === id)), {
          timeout: 30_000,
        })
        .toEqual([]);
      const copies = new Map<string, number>();
      for (const r of received) copies.set(r.record.run_id, (copies.get(r.record.run_id) ?? 0) + 1);
      expect(Math.max(...copies.values())).toBeLessThanOrEqual(2);
      // Dropped records never reached the topic (they were neither sent nor spooled), unless kafkajs
      // finished a send after it had timed out, which the runner then logs.
      const lateAcked = new Set(
        [...first.lines, ...second.lines]
          .filter((l) => l.late_destination === 'kafka' && typeof l.run_id === 'string')
          .map((l) => String(l.run_id)),
      );
      expect([...dropped.keys()].filter((id) => copies.has(id) && !lateAcked.has(id))).toEqual([]);
      expect((await readdir(spoolDir)).filter((f) => f.endsWith('.tmp'))).toEqual([]);
      console.log(
        `full disk: ${spooled.size} spooled, ${published.size} direct, ${dropped.size} dropped; ` +
          `slowest publish ${Math.max(...resolvedIn)} ms; SIGTERM exits after ${firstExitMs} ms ` +
          `(disk full, Kafka down) and ${secondExitMs} ms; max copies per run_id ${Math.max(...copies.values())}`,
      );
    } finally {
      await reader?.stop();
      await services('start');
    }
  }, 300_000);
});

describe('DLQ spool with a damaged spool.offset (real runner, real Kafka)', () => {
  const s = servicesEnv();
  const dirs: string[] = [];

  afterAll(async () => {
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  });

  for (const [what, content] of [
    ['empty', ''],
    ['torn', '{"offset":12'],
    ['NUL-filled', '\0'.repeat(4096)],
  ] as const) {
    it(`${what} spool.offset: the runner starts, warns, and redelivers every record`, async () => {
      const dir = await mkdtemp(path.join(os.tmpdir(), 'dlq-offset-'));
      dirs.push(dir);
      const topic = `test-dlq-offset-${randomUUID()}`;
      const kafka = testKafka(s.kafkaBrokers);
      await createTopic(kafka, topic);
      const spool = await DlqSpool.open(dir, pino({ level: 'silent' }));
      const runIds: string[] = [];
      for (let i = 1; i <= 3; i++) {
        const runId = `offset-${i}-${randomUUID()}`;
        runIds.push(runId);
        await spool.append({
          schema: 'cache-refresher.dlq.v1',
          job: 'trending-1h',
          run_id: runId,
          scheduled_at: '2026-01-01T00:00:00.000Z',
          started_at: '2026-01-01T00:00:00.000Z',
          failed_at: '2026-01-01T00:00:01.000Z',
          duration_ms: 1000,
          outcome: 'failure',
          consecutive_failures: i,
          attempts: 1,
          error: { name: 'Error', message: 'x', code: null },
          context: {},
          runner: { version: 'test', host: 'test', pid: 1 },
        });
      }
      await spool.close();
      await writeFile(path.join(dir, 'spool.offset'), content);

      const runner = new RunnerProcess(
        {
          REDIS_URL: s.redisUrl,
          CLICKHOUSE_URL: s.clickhouseUrl,
          KAFKA_BROKERS: s.kafkaBrokers.join(','),
          DLQ_TOPIC: topic,
          DLQ_SPOOL_DIR: dir,
          CACHE_KEY_PREFIX: `test-dlq-offset-${randomUUID()}`,
          HTTP_PORT: '0',
          LEADER_ELECTION: 'false',
        },
        [],
      );
      try {
        const warned = await runner.waitForLog((l) => String(l.msg).includes('invalid offset file'));
        expect(warned.level).toBe('warn');
        await runner.waitForLog((l) => l.msg === 'dlq spool drained', 60_000);
        expect(await topicSize(kafka, topic)).toBe(3);
        const reader = await TopicReader.start(kafka, topic);
        try {
          await expect.poll(() => reader.received.length, { timeout: 30_000 }).toBe(3);
          expect(reader.received.map((r) => r.record.run_id)).toEqual(runIds);
        } finally {
          await reader.stop();
        }
        runner.kill('SIGTERM');
        expect(await runner.exited).toEqual({ code: 0, signal: null });
      } finally {
        runner.kill('SIGKILL');
        await runner.exited;
      }
    }, 120_000);
  }
});
