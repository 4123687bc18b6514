// `cache-refresher dlq replay` (the built CLI) against the real Kafka broker.
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DlqRecord } from '../../src/dlq/record.js';
import { DlqSpool } from '../../src/dlq/spool.js';
import { servicesEnv } from './env.js';
import { createTopic, testKafka, topicSize } from './kafka-helpers.js';

const CLI = fileURLToPath(new URL('../../dist/cli.js', import.meta.url));

function replay(env: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [CLI, 'dlq', 'replay'],
      { env: { PATH: process.env.PATH ?? '', LOG_LEVEL: 'warn', ...env }, timeout: 60_000 },
      (err, stdout, stderr) => {
        const code = err === null ? 0 : typeof err.code === 'number' ? err.code : -1;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

function record(n: number): DlqRecord {
  const at = new Date(Date.UTC(2026, 0, 1, 0, 0, n)).toISOString();
  return {
    schema: 'cache-refresher.dlq.v1',
    job: 'trending-1h',
    run_id: `replay-${n}-${randomUUID()}`,
    scheduled_at: at,
    started_at: at,
    failed_at: at,
    duration_ms: 0,
    outcome: 'failure',
    consecutive_failures: n,
    attempts: 1,
    error: { name: 'Error', message: 'x', code: null },
    context: { window: '1h' },
    runner: { version: 'test', host: 'test', pid: 1 },
  };
}

describe('cache-refresher dlq replay', () => {
  const s = servicesEnv();
  const topic = `test-dlq-replay-${randomUUID()}`;
  let dir: string;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'dlq-replay-'));
    const spool = await DlqSpool.open(dir, pino({ level: 'silent' }));
    for (let i = 1; i <= 3; i++) await spool.append(record(i));
    await spool.close();
    await createTopic(testKafka(s.kafkaBrokers), topic);
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('exits 1 without Kafka, delivers everything with it (exit 0), and is a no-op afterwards', async () => {
    const noKafka = await replay({ DLQ_SPOOL_DIR: dir, DLQ_TOPIC: topic });
    expect(noKafka.code).toBe(1);
    expect(noKafka.stderr).toContain('KAFKA_BROKERS is not set; 3 record(s) remain');

    const env = { DLQ_SPOOL_DIR: dir, DLQ_TOPIC: topic, KAFKA_BROKERS: s.kafkaBrokers.join(',') };
    const first = await replay(env);
    expect(first.stdout).toBe(`delivered 3 record(s) to ${topic}; 0 remain in ${dir}\n`);
    expect(first.code).toBe(0);
    expect(await topicSize(testKafka(s.kafkaBrokers), topic)).toBe(3);

    const again = await replay(env);
    expect(again.code).toBe(0);
    expect(again.stdout).toBe(`delivered 0 record(s) to ${topic}; 0 remain in ${dir}\n`);
    expect(await topicSize(testKafka(s.kafkaBrokers), topic)).toBe(3);
  }, 90_000);
});
