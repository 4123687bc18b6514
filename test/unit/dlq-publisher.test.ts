// The publisher's decisions with a scripted transport (the real broker is in the integration tests):
// dropped records are counted and logged in full, a failing offset write never makes the flusher
// resend, and a record the broker refuses permanently moves to rejected.jsonl while the records behind
// it are delivered in order.
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { DlqMessage, DlqTransport } from '../../src/dlq/kafka.js';
import { DlqPublisher, type DlqDestination } from '../../src/dlq/publisher.js';
import type { DlqRecord } from '../../src/dlq/record.js';
import { DlqSpool } from '../../src/dlq/spool.js';
import { FaultyFs } from './helpers/faulty-fs.js';

function record(n: number): DlqRecord {
  return {
    schema: 'cache-refresher.dlq.v1',
    job: 'boom',
    run_id: `run-${n}`,
    scheduled_at: '2026-01-01T00:00:00.000Z',
    started_at: '2026-01-01T00:00:00.000Z',
    failed_at: '2026-01-01T00:00:01.000Z',
    duration_ms: 1000,
    outcome: 'failure',
    consecutive_failures: n,
    attempts: 1,
    error: { name: 'Error', message: `boom ${n}`, code: null },
    context: {},
    runner: { version: 'test', host: 'test', pid: 1 },
  };
}

/** A transport whose answer per send is scripted; it records what it was asked to send. */
class ScriptedTransport implements DlqTransport {
  readonly topic = 'test-topic';
  readonly sent: string[][] = [];
  /** Returns an error to refuse the send, undefined to acknowledge it. */
  answer: (runIds: string[]) => Error | undefined = () => undefined;

  send(messages: DlqMessage[]): Promise<void> {
    const ids = messages.map((m) => (JSON.parse(m.value) as DlqRecord).run_id);
    this.sent.push(ids);
    const err = this.answer(ids);
    return err ? Promise.reject(err) : Promise.resolve();
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** What kafkajs throws for a produce request the broker refuses (a protocol error inside a wrapper). */
function brokerRefusal(type: string): Error {
  const protocol = Object.assign(new Error(`broker says ${type}`), {
    name: 'KafkaJSProtocolError',
    type,
    retriable: false,
  });
  return Object.assign(new Error(protocol.message, { cause: protocol }), {
    name: 'KafkaJSNonRetriableError',
  });
}

describe('DlqPublisher', () => {
  let dir: string;
  let fs: FaultyFs;
  const closers: (() => Promise<void>)[] = [];
  const counted: [string, DlqDestination][] = [];
  const logged: Record<string, unknown>[] = [];
  const log = pino(
    { level: 'info' },
    {
      write: (line: string) => {
        logged.push(JSON.parse(line) as Record<string, unknown>);
      },
    },
  );

  const setup = async (
    opts: { transport?: ScriptedTransport; maxBytes?: number } = {},
  ): Promise<{ spool: DlqSpool; publisher: DlqPublisher }> => {
    const spool = await DlqSpool.open(dir, log, {
      fs,
      ...(opts.maxBytes ? { maxBytes: opts.maxBytes } : {}),
    });
    const publisher = new DlqPublisher({
      transport: opts.transport,
      spool,
      log,
      retryMinMs: 20,
      retryMaxMs: 50,
      onRecord: (job, destination) => counted.push([job, destination]),
    });
    closers.push(async () => {
      await publisher.close();
      await spool.close();
    });
    return { spool, publisher };
  };

  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'dlq-publisher-'));
    fs = new FaultyFs();
    counted.length = 0;
    logged.length = 0;
  });
  afterEach(async () => {
    fs.clear();
    for (const close of closers.splice(0)) await close();
    await rm(dir, { recursive: true, force: true });
  });

  it('drops a record the full spool refuses: counted, logged in full, resolved at once', async () => {
    const { publisher } = await setup({ maxBytes: JSON.stringify(record(1)).length + 1 });
    expect(await publisher.publish(record(1))).toBe('spool');
    const started = performance.now();
    expect(await publisher.publish(record(2))).toBe('dropped');
    expect(performance.now() - started).toBeLessThan(1_000);
    expect(counted).toEqual([
      ['boom', 'spool'],
      ['boom', 'dropped'],
    ]);
    const line = logged.find((l) => l.destination === 'dropped');
    expect(line).toMatchObject({ level: 50, run_id: 'run-2', record: record(2) });
  });

  it('sends a record the full spool refuses straight to Kafka when Kafka may be up', async () => {
    const transport = new ScriptedTransport();
    transport.answer = () => new Error('broker down');
    const { publisher, spool } = await setup({ transport, maxBytes: JSON.stringify(record(1)).length + 1 });
    expect(await publisher.publish(record(1))).toBe('spool');
    // Kafka failed a moment ago: the next refused record is dropped without waiting for Kafka again.
    // (The spool's flusher may retry record 1 meanwhile; what matters is that record 2 was never sent.)
    expect(await publisher.publish(record(2))).toBe('dropped');
    expect(transport.sent.flat()).not.toContain('run-2');
    // Kafka is back while the spool is still full (and its flusher has not emptied it yet).
    await publisher.close();
    const again = new DlqPublisher({ transport, spool, log, onRecord: (job, d) => counted.push([job, d]) });
    transport.answer = () => undefined;
    expect(await again.publish(record(3))).toBe('kafka');
    expect(transport.sent.at(-1)).toEqual(['run-3']);
    expect(spool.pending).toBe(1);
  });

  it('drops a record when the disk is full (append fails), and spools again once it is not', async () => {
    const { publisher, spool } = await setup();
    fs.fail('write', /spool\.jsonl$/, { partial: true });
    expect(await publisher.publish(record(1))).toBe('dropped');
    expect(await publisher.publish(record(2))).toBe('spool');
    expect((await spool.read(10)).records.map((r) => r.record.run_id)).toEqual(['run-2']);
  });

  it('while offset writes fail, the flusher backs off and sends each batch once', async () => {
    const transport = new ScriptedTransport();
    transport.answer = () => new Error('broker down');
    const { publisher, spool } = await setup({ transport });
    for (let i = 1; i <= 5; i++) expect(await publisher.publish(record(i))).toBe('spool');
    // Kafka back, but the disk is full: the offset cannot be written for a while.
    fs.fail('open', /spool\.offset\..*\.tmp$/, { times: 5, code: 'EIO' });
    transport.sent.length = 0;
    transport.answer = () => undefined;
    await expect.poll(() => spool.pending, { timeout: 5_000 }).toBe(0);
    await expect.poll(() => spool.offsetDirty, { timeout: 5_000 }).toBe(false);
    // Five failed offset writes, each retried after a backoff, before the flusher sent anything new.
    expect(fs.calls.filter((c) => c.step === 'open' && /\.tmp$/.test(c.file)).length).toBeGreaterThanOrEqual(
      6,
    );
    const sent = transport.sent.flat();
    expect(sent).toEqual(['run-1', 'run-2', 'run-3', 'run-4', 'run-5']);
    expect((await readdir(dir)).filter((f) => f.endsWith('.tmp'))).toEqual([]);
  });

  it('moves a record the broker refuses to rejected.jsonl and delivers the rest in order', async () => {
    const transport = new ScriptedTransport();
    transport.answer = () => new Error('broker down');
    const { publisher, spool } = await setup({ transport });
    for (let i = 1; i <= 5; i++) await publisher.publish(record(i));
    transport.sent.length = 0;
    transport.answer = (ids) => (ids.includes('run-3') ? brokerRefusal('MESSAGE_TOO_LARGE') : undefined);
    await expect.poll(() => spool.pending, { timeout: 5_000 }).toBe(0);
    const delivered = transport.sent.filter((ids) => !ids.includes('run-3')).flat();
    expect(delivered).toEqual(['run-1', 'run-2', 'run-4', 'run-5']);
    const rejected = (await readFile(path.join(dir, 'rejected.jsonl'), 'utf8'))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { error: { type: string }; record: DlqRecord });
    expect(rejected.map((r) => [r.record.run_id, r.error.type])).toEqual([['run-3', 'MESSAGE_TOO_LARGE']]);
    expect(counted.filter(([, d]) => d === 'rejected')).toEqual([['boom', 'rejected']]);
    expect(spool.rejected).toBe(1);
  });

  it('keeps order and retries on a transient error (nothing is rejected)', async () => {
    const transport = new ScriptedTransport();
    transport.answer = () => new Error('broker down');
    const { publisher, spool } = await setup({ transport });
    for (let i = 1; i <= 3; i++) await publisher.publish(record(i));
    let failures = 3;
    transport.answer = () => (failures-- > 0 ? new Error('NOT_LEADER_FOR_PARTITION') : undefined);
    await expect.poll(() => spool.pending, { timeout: 5_000 }).toBe(0);
    expect(transport.sent.at(-1)).toEqual(['run-1', 'run-2', 'run-3']);
    expect(spool.rejected).toBe(0);
  });
});
