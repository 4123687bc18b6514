// Kafka down: dead-letter records go to the durable spool, survive kill -9 of the runner, and reach the
// topic exactly once, oldest first, after a restarted runner sees Kafka come back.
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import type { Kafka } from 'kafkajs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DlqRecord } from '../../src/dlq/record.js';
import { RunnerProcess } from '../fixtures/child.js';
import { servicesEnv } from './env.js';
import { createTopic, testKafka, TopicReader, topicSize } from './kafka-helpers.js';

const run = promisify(execFile);
const RECORDS = 10;

/** The valid records in the spool file now (a torn last line is skipped, like the spool does). */
function spooledRecords(dir: string): DlqRecord[] {
  const text = readFileSync(path.join(dir, 'spool.jsonl'), 'utf8');
  return text
    .split('\n')
    .filter((line) => line.startsWith('{') && line.endsWith('}'))
    .map((line) => JSON.parse(line) as DlqRecord);
}

describe('DLQ spool while Kafka is down (real broker stopped and started)', () => {
  const s = servicesEnv();
  const topic = `test-dlq-spool-${randomUUID()}`;
  let kafka: Kafka;
  let spoolDir: string;
  const children: RunnerProcess[] = [];
  const services = (action: 'stop' | 'start'): Promise<unknown> =>
    run('bash', [s.servicesScript, action, 'kafka'], { timeout: 180_000 });

  beforeAll(async () => {
    kafka = testKafka(s.kafkaBrokers);
    await createTopic(kafka, topic);
    spoolDir = await mkdtemp(path.join(os.tmpdir(), 'dlq-spool-it-'));
  });

  afterAll(async () => {
    for (const child of children) {
      child.kill('SIGKILL');
      await child.exited;
    }
    await rm(spoolDir, { recursive: true, force: true });
  });

  it('spools every record, loses none to kill -9, then delivers them once, oldest first', async () => {
    const env = {
      REDIS_URL: s.redisUrl,
      CLICKHOUSE_URL: s.clickhouseUrl,
      KAFKA_BROKERS: s.kafkaBrokers.join(','),
      DLQ_TOPIC: topic,
      DLQ_SPOOL_DIR: spoolDir,
      CACHE_KEY_PREFIX: `test-dlq-spool-${randomUUID()}`,
      HTTP_PORT: '0',
      LEADER_ELECTION: 'false',
      BACKOFF_AFTER_FAILURES: '1000',
    };
    let reader: TopicReader | undefined;
    try {
      await services('stop');

      const first = new RunnerProcess(env, [
        { id: 'boom', kind: 'fail', intervalSec: 1, message: 'no kafka' },
      ]);
      children.push(first);
      const spooled = (): Record<string, unknown>[] =>
        first.lines.filter((l) => l.msg === 'dlq record spooled');
      await expect
        .poll(() => spooled().length, { timeout: 40_000, interval: 50 })
        .toBeGreaterThanOrEqual(RECORDS);
      // Every record reached the spool without waiting for kafkajs to give up on the dead broker.
      expect(first.lines.some((l) => l.msg === 'dlq record published')).toBe(false);
      const failedAt = new Map(
        first.lines
          .filter((l) => l.outcome === 'failure')
          .map((l) => [String(l.run_id), Date.parse(String(l.time))]),
      );
      const spoolLatencies = spooled().map(
        (l) => Date.parse(String(l.time)) - (failedAt.get(String(l.run_id)) ?? 0),
      );
      // The first record waits for the short (2 s) direct-send timeout and the few that failed meanwhile
      // queue behind it; once the spool is non-empty, records go straight to disk.
      expect(Math.max(...spoolLatencies)).toBeLessThan(2_500);
      expect(Math.max(...spoolLatencies.slice(3))).toBeLessThan(300);
      first.kill('SIGKILL');
      await first.exited;

      const onDisk = spooledRecords(spoolDir);
      const logged = spooled().map((l) => String(l.run_id));
      expect(onDisk.length).toBeGreaterThanOrEqual(RECORDS);
      // Whatever was acknowledged as spooled is on disk, in the order the runs failed.
      expect(onDisk.map((r) => r.run_id).slice(0, logged.length)).toEqual(logged);
      expect(onDisk.map((r) => r.consecutive_failures)).toEqual(onDisk.map((_r, i) => i + 1));

      // A new runner on the same spool, no failing jobs of its own; Kafka still down.
      const second = new RunnerProcess(env, []);
      children.push(second);
      const opened = await second.waitForLog((l) => l.msg === 'dlq spool opened');
      expect(opened.pending).toBe(onDisk.length);
      const port = Number((await second.waitForLog((l) => l.msg === 'http server listening')).port);
      const metric = async (): Promise<string> => (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      expect(await metric()).toContain(`cache_refresher_dlq_spool_pending ${onDisk.length}`);

      const kafkaBack = Date.now();
      await services('start');
      const kafkaUp = Date.now();
      const drained = await second.waitForLog((l) => l.msg === 'dlq spool drained', 90_000);
      const deliveredAt = Date.parse(String(drained.time));
      console.log(
        `spool of ${onDisk.length} delivered ${deliveredAt - kafkaBack} ms after 'services.sh start kafka' ` +
          `was issued (the script itself returned after ${kafkaUp - kafkaBack} ms)`,
      );
      expect(drained).toMatchObject({ destination: 'kafka', delivered: onDisk.length, spool_pending: 0 });
      await expect.poll(metric, { timeout: 5_000 }).toContain('cache_refresher_dlq_spool_pending 0');
      // Compacted: nothing left to redeliver.
      expect(statSync(path.join(spoolDir, 'spool.jsonl')).size).toBe(0);

      // Exactly once: the topic holds as many messages as the spool had records, in spool order.
      expect(await topicSize(kafka, topic)).toBe(onDisk.length);
      reader = await TopicReader.start(kafka, topic);
      const received = reader.received;
      await expect.poll(() => received.length, { timeout: 30_000 }).toBe(onDisk.length);
      expect(received.map((r) => r.record.run_id)).toEqual(onDisk.map((r) => r.run_id));
      expect(new Set(received.map((r) => r.record.run_id)).size).toBe(onDisk.length);
      const times = received.map((r) => Date.parse(r.record.failed_at));
      expect(times).toEqual([...times].sort((a, b) => a - b));
      expect(received.every((r) => r.key === 'boom' && r.headers.error_name === 'Error')).toBe(true);
      // Records keep the pid of the runner that failed, not of the one that delivered them.
      expect(new Set(received.map((r) => r.record.runner.pid))).toEqual(new Set([first.pid]));
    } finally {
      await reader?.stop();
      // Other test files need Kafka: always bring it back, whatever happened above.
      await services('start');
    }
  }, 240_000);
});
