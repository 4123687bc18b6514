import { appendFile, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { DlqRecord } from '../../src/dlq/record.js';
import { DlqSpool } from '../../src/dlq/spool.js';

const log = pino({ level: 'silent' });

function record(n: number): DlqRecord {
  return {
    schema: 'cache-refresher.dlq.v1',
    job: 'trending-1h',
    run_id: `run-${n}`,
    scheduled_at: new Date(Date.UTC(2026, 0, 1, 0, 0, n)).toISOString(),
    started_at: new Date(Date.UTC(2026, 0, 1, 0, 0, n)).toISOString(),
    failed_at: new Date(Date.UTC(2026, 0, 1, 0, 0, n, 500)).toISOString(),
    duration_ms: 500,
    outcome: 'failure',
    consecutive_failures: n,
    attempts: 1,
    error: { name: 'Error', message: `boom ${n}`, code: null },
    context: { window: '1h' },
    runner: { version: '0.0.0-test', host: 'test', pid: 1 },
  };
}

describe('DlqSpool', () => {
  let dir: string;
  const open: DlqSpool[] = [];
  const openSpool = async (): Promise<DlqSpool> => {
    const spool = await DlqSpool.open(dir, log);
    open.push(spool);
    return spool;
  };
  const dataFile = (): string => path.join(dir, 'spool.jsonl');

  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'dlq-spool-'));
  });
  afterEach(async () => {
    for (const spool of open.splice(0)) await spool.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('reads records oldest first and in bounded batches', async () => {
    const spool = await openSpool();
    for (let i = 1; i <= 5; i++) await spool.append(record(i));
    expect(spool.pending).toBe(5);
    const first = await spool.read(3);
    expect(first.records.map((r) => r.record.run_id)).toEqual(['run-1', 'run-2', 'run-3']);
    // Reading again without a commit gives the same records: nothing is removed before an ack.
    expect((await spool.read(3)).records.map((r) => r.record.run_id)).toEqual(['run-1', 'run-2', 'run-3']);
    await spool.commit(first.end, first.records.length);
    expect(spool.pending).toBe(2);
    const rest = await spool.read(10);
    expect(rest.records.map((r) => r.record.run_id)).toEqual(['run-4', 'run-5']);
  });

  it('removes records only after commit, and compacts the file once everything is acknowledged', async () => {
    const spool = await openSpool();
    for (let i = 1; i <= 3; i++) await spool.append(record(i));
    const batch = await spool.read(2);
    await spool.commit(batch.end, 2);
    // Partly delivered: the file still holds all three lines, the offset says where delivery stands.
    expect((await readFile(dataFile(), 'utf8')).trim().split('\n')).toHaveLength(3);
    const offset = JSON.parse(await readFile(path.join(dir, 'spool.offset'), 'utf8')) as { offset: number };
    expect(offset.offset).toBe(batch.end);
    const last = await spool.read(10);
    await spool.commit(last.end, last.records.length);
    expect(spool.pending).toBe(0);
    expect((await stat(dataFile())).size).toBe(0);
  });

  it('keeps un-acknowledged records across a reopen (a crash before the commit)', async () => {
    const a = await openSpool();
    for (let i = 1; i <= 4; i++) await a.append(record(i));
    const batch = await a.read(2);
    await a.commit(batch.end, 2);
    // Read but never committed: "sent, then crashed before the ack". No close(): the process died, and
    // its lock was found stale (what the next process does after the holder's heartbeat stops).
    await a.read(2);
    await rm(path.join(dir, 'spool.lock'));
    const b = await openSpool();
    expect(b.pending).toBe(2);
    expect((await b.read(10)).records.map((r) => r.record.run_id)).toEqual(['run-3', 'run-4']);
  });

  it('drops and counts a torn last line, and a later append does not glue onto it', async () => {
    const a = await openSpool();
    await a.append(record(1));
    await a.append(record(2));
    await a.close();
    // What kill -9 in the middle of an append leaves behind: a prefix of a line without its newline.
    const torn = JSON.stringify(record(3)).slice(0, 40);
    await appendFile(dataFile(), torn);

    const b = await openSpool();
    expect(b.pending).toBe(2);
    expect(b.corrupt).toBe(1);
    await b.append(record(4));
    // The fragment (never acknowledged) is gone; the new record starts a line of its own.
    expect(await readFile(dataFile(), 'utf8')).toBe(
      [record(1), record(2), record(4)].map((r) => JSON.stringify(r) + '\n').join(''),
    );
    const all = await b.read(10);
    expect(all.records.map((r) => r.record.run_id)).toEqual(['run-1', 'run-2', 'run-4']);
    await b.commit(all.end, all.records.length);
    expect(b.pending).toBe(0);

    // And the state survives yet another reopen.
    await b.close();
    const c = await openSpool();
    expect(c.pending).toBe(0);
    expect(c.corrupt).toBe(0);
  });

  it('skips a damaged line in the middle without losing the records after it', async () => {
    const a = await openSpool();
    await a.append(record(1));
    await a.close();
    await appendFile(dataFile(), '{"schema":"cache-refresher.dlq.v1", garbage\n');
    const b = await openSpool();
    await b.append(record(2));
    expect(b.pending).toBe(2);
    expect(b.corrupt).toBe(1);
    const all = await b.read(10);
    expect(all.records.map((r) => r.record.run_id)).toEqual(['run-1', 'run-2']);
  });

  it('recovers from a compaction interrupted between truncation and offset reset', async () => {
    const a = await openSpool();
    await a.append(record(1));
    await a.close();
    open.splice(0);
    // Offset points past the end: the file was truncated but the offset not yet reset.
    await writeFile(path.join(dir, 'spool.offset'), JSON.stringify({ offset: 10_000 }));
    await writeFile(dataFile(), '');
    const b = await openSpool();
    expect(b.pending).toBe(0);
    await b.append(record(2));
    expect((await b.read(10)).records.map((r) => r.record.run_id)).toEqual(['run-2']);
  });

  it('refuses a spool locked by another live process, naming it', async () => {
    const holder = await DlqSpool.open(dir, log, { lock: { staleMs: 1_000 } });
    open.push(holder);
    // Same process, another lock id: only the heartbeat can tell it is alive.
    await expect(DlqSpool.open(dir, log, { lock: { staleMs: 1_000 } })).rejects.toThrow(
      /in use by cache-refresher on host .* \(pid \d+, lock id [0-9a-f-]{36}/,
    );
  });

  it('stops writing when its lock is taken over, and close() leaves the new holder lock alone', async () => {
    const spool = await DlqSpool.open(dir, log, { lock: { staleMs: 400 } });
    open.push(spool);
    await spool.append(record(1));
    const foreign = JSON.stringify({
      id: 'someone-else',
      host: 'other-host',
      pid: 1,
      boot_id: null,
      pid_ns: null,
      acquired_at: new Date().toISOString(),
      heartbeat_at: new Date().toISOString(),
      beat: 7,
    });
    await writeFile(path.join(dir, 'spool.lock'), foreign);
    await expect
      .poll(
        () =>
          spool.append(record(2)).then(
            () => 'appended',
            (err: unknown) => (err as Error).message,
          ),
        {
          timeout: 5_000,
        },
      )
      .toMatch(/taken over by another process/);
    await spool.close();
    open.splice(0);
    expect(await readFile(path.join(dir, 'spool.lock'), 'utf8')).toBe(foreign);
  });

  it('takes over a lock whose heartbeat stopped, after the stale timeout', async () => {
    await writeFile(
      path.join(dir, 'spool.lock'),
      JSON.stringify({ id: 'dead', host: 'gone', pid: 1, boot_id: null, pid_ns: null, beat: 3 }),
    );
    const started = performance.now();
    const spool = await DlqSpool.open(dir, log, { lock: { staleMs: 600 } });
    open.push(spool);
    // It watched the heartbeat for the stale timeout before judging the holder gone.
    expect(performance.now() - started).toBeGreaterThanOrEqual(550);
    const lock = JSON.parse(await readFile(path.join(dir, 'spool.lock'), 'utf8')) as { id: string };
    expect(lock.id).toBe(spool.holder.id);
  });

  it('close() marks its lock released in place; the next process takes it at once', async () => {
    const a = await DlqSpool.open(dir, log, { lock: { staleMs: 5_000 } });
    const id = a.holder.id;
    await a.close();
    const lock = JSON.parse(await readFile(path.join(dir, 'spool.lock'), 'utf8')) as {
      id: string;
      released_at?: string;
    };
    expect(lock.id).toBe(id);
    expect(typeof lock.released_at).toBe('string');
    const started = performance.now();
    const b = await DlqSpool.open(dir, log, { lock: { staleMs: 5_000 } });
    open.push(b);
    // No waiting for a heartbeat: a released lock is free.
    expect(performance.now() - started).toBeLessThan(2_000);
    expect(b.holder.id).not.toBe(id);
  });
});
