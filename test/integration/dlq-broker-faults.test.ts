// The dead-letter path against a real broker that refuses records, freezes (SIGSTOP), and a spool
// volume shared by two runners in separate PID namespaces (each is pid 1, as in two containers).
// The PID-namespace case needs root (unshare --pid), as CI has; without it the test fails, not skips.
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import type { DlqRecord, RecordTruncation } from '../../src/dlq/record.js';
import { RunnerProcess, type FixtureJob } from '../fixtures/child.js';
import { servicesEnv } from './env.js';
import { createTopic, testKafka, TopicReader } from './kafka-helpers.js';

const run = promisify(execFile);
const CLI = fileURLToPath(new URL('../../dist/cli.js', import.meta.url));
/** Its own PID namespace (the process is pid 1 in it), killed with the unshare process. */
const OWN_PID_NAMESPACE = ['unshare', '--pid', '--fork', '--mount-proc', '--kill-child'];

function outcomes(runner: RunnerProcess, destination: string): string[] {
  return runner.lines
    .filter((l) => l.destination === destination && typeof l.run_id === 'string')
    .map((l) => String(l.run_id));
}

describe('DLQ against a real broker that refuses, freezes, or shares a spool', () => {
  const s = servicesEnv();
  const dirs: string[] = [];
  const children: RunnerProcess[] = [];
  const readers: TopicReader[] = [];
  const kafka = testKafka(s.kafkaBrokers);

  const newDir = async (name: string): Promise<string> => {
    const dir = await mkdtemp(path.join(os.tmpdir(), `${name}-`));
    dirs.push(dir);
    return dir;
  };
  const runner = (
    env: Record<string, string>,
    jobs: FixtureJob[],
    args: string[] = ['run'],
    prefix: string[] = [],
  ): RunnerProcess => {
    const child = new RunnerProcess(
      {
        REDIS_URL: s.redisUrl,
        CLICKHOUSE_URL: s.clickhouseUrl,
        CACHE_KEY_PREFIX: `test-dlq-broker-${randomUUID()}`,
        HTTP_PORT: '0',
        LEADER_ELECTION: 'false',
        BACKOFF_AFTER_FAILURES: '1000',
        ...env,
      },
      jobs,
      args,
      prefix,
    );
    children.push(child);
    return child;
  };
  const read = async (topic: string): Promise<TopicReader> => {
    const reader = await TopicReader.start(kafka, topic);
    readers.push(reader);
    return reader;
  };

  afterAll(async () => {
    for (const child of children) {
      child.kill('SIGKILL');
      await child.exited;
    }
    for (const reader of readers) await reader.stop();
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  });

  it('a record the topic refuses moves to rejected.jsonl; the records behind it are delivered in order', async () => {
    const topic = `test-dlq-refuse-${randomUUID()}`;
    const admin = kafka.admin();
    await admin.connect();
    try {
      await admin.createTopics({
        topics: [{ topic, numPartitions: 1, configEntries: [{ name: 'max.message.bytes', value: '4096' }] }],
        waitForLeaders: true,
      });
    } finally {
      await admin.disconnect();
    }
    const dir = await newDir('dlq-refuse');
    const child = runner({ KAFKA_BROKERS: s.kafkaBrokers.join(','), DLQ_TOPIC: topic, DLQ_SPOOL_DIR: dir }, [
      // About 8 KiB per record: over the topic's 4 KiB, under DLQ_MAX_RECORD_BYTES.
      { id: 'big', kind: 'fail', intervalSec: 2, pad: 8000 },
      { id: 'small', kind: 'fail', intervalSec: 1 },
    ]);
    const reader = await read(topic);
    const rejectedLines = async (): Promise<{ error: { type: string }; record: DlqRecord }[]> => {
      const text = await readFile(path.join(dir, 'rejected.jsonl'), 'utf8').catch(() => '');
      return text
        .split('\n')
        .filter((l) => l !== '')
        .map((l) => JSON.parse(l) as { error: { type: string }; record: DlqRecord });
    };
    await expect
      .poll(async () => (await rejectedLines()).length, { timeout: 60_000 })
      .toBeGreaterThanOrEqual(3);
    // Small records that failed after the first big one still arrive.
    const firstBig = (await rejectedLines())[0]?.record;
    await expect
      .poll(
        () =>
          reader.received.filter(
            (r) =>
              r.record.job === 'small' &&
              Date.parse(r.record.failed_at) > Date.parse(firstBig?.failed_at ?? ''),
          ).length,
        { timeout: 60_000 },
      )
      .toBeGreaterThanOrEqual(5);

    const rejected = await rejectedLines();
    expect(new Set(rejected.map((r) => r.record.job))).toEqual(new Set(['big']));
    expect(new Set(rejected.map((r) => r.error.type))).toEqual(new Set(['MESSAGE_TOO_LARGE']));
    // Never on the topic; in order among themselves.
    expect(reader.received.filter((r) => r.record.job === 'big')).toEqual([]);
    // In order (by first arrival; a direct send that outlived its timeout may also arrive a second
    // time, later: at-least-once, at most twice).
    const smallRuns = reader.received.filter((r) => r.record.job === 'small').map((r) => r.record);
    const firstArrivals = [...new Map(smallRuns.map((r) => [r.run_id, r])).values()];
    const small = firstArrivals.map((r) => r.consecutive_failures);
    expect(small).toEqual([...small].sort((a, b) => a - b));
    expect(smallRuns.length).toBeLessThanOrEqual(2 * small.length);
    const counted = await child.metric('cache_refresher_dlq_records_total', {
      job: 'big',
      destination: 'rejected',
    });
    expect(counted).toBeGreaterThanOrEqual(rejected.length);
    expect(counted).toBe((await rejectedLines()).length);
    console.log(`refused: ${rejected.length} big records rejected, ${small.length} small delivered in order`);
  }, 180_000);

  it('no record over DLQ_MAX_RECORD_BYTES is produced, even for a run with 4000 failed batches', async () => {
    const topic = `test-dlq-cap-${randomUUID()}`;
    await createTopic(kafka, topic);
    const dir = await newDir('dlq-cap');
    const child = runner({ KAFKA_BROKERS: s.kafkaBrokers.join(','), DLQ_TOPIC: topic, DLQ_SPOOL_DIR: dir }, [
      { id: 'batches', kind: 'fail', intervalSec: 3600, batches: 4000 },
      { id: 'many', kind: 'fail', intervalSec: 3600, batches: 20_000 },
    ]);
    const reader = await read(topic);
    // Two runs, two records; a direct send that outlived its 2 s timeout (a busy machine) is also
    // spooled and so may arrive twice (at-least-once): count distinct run_ids.
    await expect
      .poll(() => new Set(reader.received.map((r) => r.record.run_id)).size, { timeout: 60_000 })
      .toBe(2);
    for (const { record } of reader.received) {
      const bytes = Buffer.byteLength(JSON.stringify(record));
      expect(bytes).toBeLessThanOrEqual(512 * 1024);
      const cut = record.context.record_truncated as RecordTruncation;
      expect(cut.original_bytes).toBeGreaterThan(1024 * 1024);
      expect(cut.lists).toEqual({ failed_batches: record.job === 'batches' ? 4000 : 20_000 });
      expect(record.context.failed_batches).toHaveLength(10);
      console.log(`record cap: ${record.job} ${cut.original_bytes} bytes cut to ${bytes}`);
    }
    // The runner logs a record's outcome after the broker acknowledged it, so the reader can see the
    // record before the log line is read from the child's output: wait for it.
    await expect
      .poll(() => outcomes(child, 'kafka').length + outcomes(child, 'spool').length, { timeout: 10_000 })
      .toBe(2);
    expect(reader.received.length).toBeLessThanOrEqual(4);
  }, 120_000);

  it('SIGTERM while the broker is frozen exits 0 within 15 s; after a thaw and restart every record arrives', async () => {
    const topic = `test-dlq-frozen-${randomUUID()}`;
    await createTopic(kafka, topic);
    const dir = await newDir('dlq-frozen');
    const env = {
      KAFKA_BROKERS: s.kafkaBrokers.join(','),
      DLQ_TOPIC: topic,
      DLQ_SPOOL_DIR: dir,
      SHUTDOWN_GRACE_SEC: '5',
    };
    const first = runner(env, [{ id: 'boom', kind: 'fail', intervalSec: 1 }]);
    await expect.poll(() => outcomes(first, 'kafka').length, { timeout: 30_000 }).toBeGreaterThanOrEqual(2);
    const kafkaPid = s.readPid('kafka');
    let exitMs: number;
    process.kill(kafkaPid, 'SIGSTOP');
    try {
      // Direct sends time out: records go to the spool while the flusher's request hangs.
      await expect.poll(() => outcomes(first, 'spool').length, { timeout: 30_000 }).toBeGreaterThanOrEqual(3);
      const signalled = Date.now();
      first.kill('SIGTERM');
      const exit = await first.exited;
      exitMs = Date.now() - signalled;
      expect(exit).toEqual({ code: 0, signal: null });
      expect(exitMs).toBeLessThan(15_000);
    } finally {
      process.kill(kafkaPid, 'SIGCONT');
    }
    const expected = [...outcomes(first, 'kafka'), ...outcomes(first, 'spool')];
    expect(outcomes(first, 'dropped')).toEqual([]);

    const second = runner(env, []);
    await second.waitForLog((l) => l.msg === 'dlq spool opened');
    await expect
      .poll(() => second.metric('cache_refresher_dlq_spool_pending'), { timeout: 90_000, interval: 500 })
      .toBe(0);
    const reader = await read(topic);
    await expect
      .poll(() => expected.filter((id) => !reader.received.some((r) => r.record.run_id === id)), {
        timeout: 60_000,
      })
      .toEqual([]);
    console.log(
      `frozen broker: SIGTERM exit after ${exitMs} ms; ${expected.length} records all on the topic ` +
        `after the thaw (${reader.received.length} messages)`,
    );
  }, 240_000);

  it('two runners in separate PID namespaces on one spool: the second refuses it naming the holder; nothing is lost', async () => {
    const topic = `test-dlq-shared-${randomUUID()}`;
    await createTopic(kafka, topic);
    const dir = await newDir('dlq-shared');
    // Spool only (no Kafka) for the first, so its records stay in the shared directory.
    const first = runner(
      { DLQ_SPOOL_DIR: dir },
      [{ id: 'boom', kind: 'fail', intervalSec: 1 }],
      ['run'],
      OWN_PID_NAMESPACE,
    );
    await expect.poll(() => outcomes(first, 'spool').length, { timeout: 30_000 }).toBeGreaterThanOrEqual(3);
    const lock = JSON.parse(readFileSync(path.join(dir, 'spool.lock'), 'utf8')) as {
      pid: number;
      id: string;
      host: string;
    };
    expect(lock.pid).toBe(1);

    const second = runner(
      { DLQ_SPOOL_DIR: dir },
      [{ id: 'boom', kind: 'fail', intervalSec: 1 }],
      ['run'],
      OWN_PID_NAMESPACE,
    );
    expect(await second.exited).toEqual({ code: 1, signal: null });
    expect(second.stderrText).toContain(
      `dlq spool ${dir} is in use by cache-refresher on host ${lock.host} (pid 1, lock id ${lock.id}`,
    );
    // `dlq replay` beside it (as `docker run … dlq replay` would be) is refused the same way.
    const replay = await run(
      'unshare',
      [...OWN_PID_NAMESPACE.slice(1), process.execPath, CLI, 'dlq', 'replay'],
      {
        env: {
          PATH: process.env.PATH ?? '',
          DLQ_SPOOL_DIR: dir,
          KAFKA_BROKERS: s.kafkaBrokers.join(','),
          DLQ_TOPIC: topic,
        },
      },
    ).then(
      () => ({ code: 0, stderr: '' }),
      (err: unknown) => {
        const e = err as { code?: unknown; stderr?: unknown };
        return { code: Number(e.code), stderr: String(e.stderr) };
      },
    );
    expect(replay.code).toBe(1);
    expect(replay.stderr).toContain(`lock id ${lock.id}`);
    // The holder went on spooling undisturbed.
    const before = outcomes(first, 'spool').length;
    await expect.poll(() => outcomes(first, 'spool').length, { timeout: 20_000 }).toBeGreaterThan(before);

    // The holder dies without releasing (kill -9): a new runner in yet another namespace takes the
    // spool over once the lock's heartbeat is stale, and delivers every record the first one spooled.
    first.kill('SIGKILL');
    await first.exited;
    const spooled = outcomes(first, 'spool');
    const killedAt = Date.now();
    const third = runner(
      { DLQ_SPOOL_DIR: dir, KAFKA_BROKERS: s.kafkaBrokers.join(','), DLQ_TOPIC: topic },
      [],
      ['run'],
      OWN_PID_NAMESPACE,
    );
    await third.waitForLog((l) => l.msg === 'dlq spool: taking over a stale lock', 60_000);
    const tookOverMs = Date.now() - killedAt;
    const reader = await read(topic);
    await expect
      .poll(() => spooled.filter((id) => !reader.received.some((r) => r.record.run_id === id)), {
        timeout: 60_000,
      })
      .toEqual([]);
    expect(new Set(reader.received.map((r) => r.record.runner.pid))).toEqual(new Set([1]));
    console.log(
      `shared spool: second refused naming ${lock.host}/pid 1/${lock.id}; takeover ${tookOverMs} ms after kill -9; ` +
        `${spooled.length} spooled records all delivered`,
    );
  }, 180_000);

  it('once beside a running sidecar (which holds the spool) still delivers its record to Kafka', async () => {
    const topic = `test-dlq-once-${randomUUID()}`;
    await createTopic(kafka, topic);
    const dir = await newDir('dlq-once');
    const env = { KAFKA_BROKERS: s.kafkaBrokers.join(','), DLQ_TOPIC: topic, DLQ_SPOOL_DIR: dir };
    const sidecar = runner(env, []);
    await sidecar.waitForLog((l) => l.msg === 'dlq spool opened');
    const lockBefore = readFileSync(path.join(dir, 'spool.lock'), 'utf8');
    const once = runner(env, [{ id: 'boom', kind: 'fail', intervalSec: 3600 }], ['once', 'boom']);
    expect(await once.exited).toEqual({ code: 1, signal: null });
    expect(
      once.lines.some((l) => l.msg === 'dlq spool is owned by another process; records go straight to kafka'),
    ).toBe(true);
    const [runId] = outcomes(once, 'kafka');
    expect(runId).toBeDefined();
    const reader = await read(topic);
    await expect
      .poll(() => reader.received.map((r) => r.record.run_id), { timeout: 30_000 })
      .toEqual([runId]);
    // The sidecar's lock is untouched and it still owns the spool.
    const lockId = (file: string): string => (JSON.parse(file) as { id: string }).id;
    expect(lockId(readFileSync(path.join(dir, 'spool.lock'), 'utf8'))).toBe(lockId(lockBefore));
  }, 120_000);
});
