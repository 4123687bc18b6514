// The spool under file-system faults at every step of append, fsync, offset commit and compaction
// (injected through its SpoolFs): it either does the step or refuses it, and in both cases the files
// stay the truth: the data file ends on a complete record, memory matches it, no temp file is left,
// and a reopen sees exactly the records that were acknowledged as spooled and not yet delivered.
import { mkdtemp, readdir, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { DlqRecord } from '../../src/dlq/record.js';
import { DlqSpool, SpoolRefusedError } from '../../src/dlq/spool.js';
import { FaultyFs } from './helpers/faulty-fs.js';

const log = pino({ level: 'silent' });

function record(n: number): DlqRecord {
  return {
    schema: 'cache-refresher.dlq.v1',
    job: 'trending-1h',
    run_id: `run-${n}`,
    scheduled_at: '2026-01-01T00:00:00.000Z',
    started_at: '2026-01-01T00:00:00.000Z',
    failed_at: '2026-01-01T00:00:01.000Z',
    duration_ms: 1000,
    outcome: 'failure',
    consecutive_failures: n,
    attempts: 1,
    error: { name: 'Error', message: `boom ${n}`, code: null },
    context: { window: '1h' },
    runner: { version: '0.0.0-test', host: 'test', pid: 1 },
  };
}
const line = (n: number): string => JSON.stringify(record(n)) + '\n';

const DATA = /spool\.jsonl$/;
const OFFSET_TMP = /spool\.offset\.[0-9a-f-]+\.tmp$/;
const OFFSET = /spool\.offset$/;

describe('DlqSpool under injected file-system faults', () => {
  let dir: string;
  let fs: FaultyFs;
  const opened: DlqSpool[] = [];
  const openSpool = async (maxBytes?: number): Promise<DlqSpool> => {
    const spool = await DlqSpool.open(dir, log, { fs, ...(maxBytes ? { maxBytes } : {}) });
    opened.push(spool);
    return spool;
  };
  /** Closes every open spool (a clean stop) and opens the directory again with a healthy file layer. */
  const reopen = async (): Promise<DlqSpool> => {
    fs.clear();
    for (const s of opened.splice(0)) await s.close();
    return openSpool();
  };
  const dataText = (): Promise<string> => readFile(path.join(dir, 'spool.jsonl'), 'utf8');
  const ids = async (spool: DlqSpool): Promise<string[]> =>
    (await spool.read(1000)).records.map((r) => r.record.run_id);
  const tempFiles = async (): Promise<string[]> => (await readdir(dir)).filter((f) => f.endsWith('.tmp'));

  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'dlq-spool-faults-'));
    fs = new FaultyFs();
  });
  afterEach(async () => {
    fs.clear();
    for (const s of opened.splice(0)) await s.close();
    await rm(dir, { recursive: true, force: true });
  });

  describe('append', () => {
    it('a write that fails part-way (disk full) is truncated back; the next append works', async () => {
      const spool = await openSpool();
      await spool.append(record(1));
      fs.fail('write', DATA, { partial: true });
      const err = await spool.append(record(2)).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(SpoolRefusedError);
      expect((err as SpoolRefusedError).reason).toBe('disk_full');
      expect(await dataText()).toBe(line(1));
      expect(spool.pending).toBe(1);
      await spool.append(record(3));
      expect(await dataText()).toBe(line(1) + line(3));
      expect(await ids(spool)).toEqual(['run-1', 'run-3']);
      expect(await ids(await reopen())).toEqual(['run-1', 'run-3']);
    });

    it('a failed fsync refuses the record and truncates it away', async () => {
      const spool = await openSpool();
      await spool.append(record(1));
      fs.fail('datasync', DATA, { code: 'EIO' });
      const err = await spool.append(record(2)).catch((e: unknown) => e);
      expect((err as SpoolRefusedError).reason).toBe('io_error');
      expect(await dataText()).toBe(line(1));
      await spool.append(record(3));
      expect(await ids(await reopen())).toEqual(['run-1', 'run-3']);
    });

    it('if the truncation after a failed write fails too, the next append truncates first', async () => {
      const spool = await openSpool();
      await spool.append(record(1));
      fs.fail('write', DATA, { partial: true });
      fs.fail('truncate', DATA, { code: 'EIO' });
      await expect(spool.append(record(2))).rejects.toBeInstanceOf(SpoolRefusedError);
      // Half a line is still in the file, past the size the spool counts as complete.
      expect((await dataText()).length).toBeGreaterThan(line(1).length);
      expect(await ids(spool)).toEqual(['run-1']);
      await spool.append(record(3));
      expect(await dataText()).toBe(line(1) + line(3));
    });

    it('while the tail cannot be truncated, appends are refused; a reopen drops the torn tail', async () => {
      const spool = await openSpool();
      await spool.append(record(1));
      fs.fail('write', DATA, { partial: true });
      fs.fail('truncate', DATA, { code: 'EIO', times: 2 });
      await expect(spool.append(record(2))).rejects.toBeInstanceOf(SpoolRefusedError);
      await expect(spool.append(record(3))).rejects.toThrow(/EIO/);
      expect(spool.pending).toBe(1);
      const again = await reopen();
      expect(again.corrupt).toBe(1);
      expect(await ids(again)).toEqual(['run-1']);
      expect(await dataText()).toBe(line(1));
    });

    it('refuses a record that would pass maxBytes and never deletes spooled ones to make room', async () => {
      const spool = await openSpool(line(1).length * 2 + 10);
      await spool.append(record(1));
      await spool.append(record(2));
      const err = await spool.append(record(3)).catch((e: unknown) => e);
      expect((err as SpoolRefusedError).reason).toBe('full');
      expect((err as Error).message).toMatch(/DLQ_SPOOL_MAX_BYTES/);
      expect(await ids(spool)).toEqual(['run-1', 'run-2']);
      // Once delivered (and compacted), there is room again.
      const batch = await spool.read(10);
      await spool.commit(batch.end, 2);
      await spool.append(record(3));
      expect(await ids(spool)).toEqual(['run-3']);
    });
  });

  describe('offset commit', () => {
    for (const [step, file] of [
      ['open', OFFSET_TMP],
      ['write', OFFSET_TMP],
      ['datasync', OFFSET_TMP],
      ['rename', OFFSET],
    ] as const) {
      it(`a failed ${step} keeps the ack in memory, leaves no temp file, and is retried`, async () => {
        const spool = await openSpool();
        for (let i = 1; i <= 4; i++) await spool.append(record(i));
        const batch = await spool.read(2);
        fs.fail(step, file, { code: 'EIO' });
        await expect(spool.commit(batch.end, 2)).rejects.toThrow(/cannot write .*spool\.offset/);
        expect(await tempFiles()).toEqual([]);
        expect(spool.offsetDirty).toBe(true);
        // Acknowledged records are not read (and so not sent) again while the write is pending.
        expect(spool.pending).toBe(2);
        expect(await ids(spool)).toEqual(['run-3', 'run-4']);
        fs.fail(step, file, { code: 'EIO' });
        await expect(spool.persistOffset()).rejects.toThrow();
        expect(await tempFiles()).toEqual([]);
        await spool.persistOffset();
        expect(spool.offsetDirty).toBe(false);
        expect(await ids(await reopen())).toEqual(['run-3', 'run-4']);
      });
    }

    it('a crash while the offset write is failing redelivers those records once (never loses any)', async () => {
      const spool = await openSpool();
      for (let i = 1; i <= 3; i++) await spool.append(record(i));
      const batch = await spool.read(2);
      fs.fail('open', OFFSET_TMP, { times: 100, code: 'EIO' });
      await expect(spool.commit(batch.end, 2)).rejects.toThrow();
      // "Crash": the lock is found stale and another process opens the spool.
      fs.clear();
      await rm(path.join(dir, 'spool.lock'));
      const next = await openSpool();
      expect(await ids(next)).toEqual(['run-1', 'run-2', 'run-3']);
    });

    it('on a full disk (no temp file possible) the offset file is overwritten in place', async () => {
      const spool = await openSpool();
      for (let i = 1; i <= 3; i++) await spool.append(record(i));
      const batch = await spool.read(2);
      fs.fail('write', OFFSET_TMP, { times: 100 });
      await spool.commit(batch.end, 2);
      expect(spool.offsetDirty).toBe(false);
      expect(await tempFiles()).toEqual([]);
      const text = await readFile(path.join(dir, 'spool.offset'), 'utf8');
      expect(text).toHaveLength(64);
      expect(JSON.parse(text)).toEqual({ offset: batch.end });
      // Everything delivered: compaction also works without a temp file, and frees the space.
      const rest = await spool.read(10);
      await spool.commit(rest.end, 1);
      expect(await dataText()).toBe('');
      expect(await ids(await reopen())).toEqual([]);
    });

    it('on a full disk, if the in-place write fails too, the commit fails and is retried', async () => {
      const spool = await openSpool();
      for (let i = 1; i <= 2; i++) await spool.append(record(i));
      const batch = await spool.read(1);
      fs.fail('write', /spool\.offset/, { times: 2 });
      await expect(spool.commit(batch.end, 1)).rejects.toThrow(/cannot write/);
      expect(spool.offsetDirty).toBe(true);
      await spool.persistOffset();
      expect(await ids(await reopen())).toEqual(['run-2']);
    });

    it('a failed directory fsync after the rename is retried', async () => {
      const spool = await openSpool();
      for (let i = 1; i <= 3; i++) await spool.append(record(i));
      const batch = await spool.read(1);
      fs.fail('syncDir', /./);
      await expect(spool.commit(batch.end, 1)).rejects.toThrow();
      expect(spool.offsetDirty).toBe(true);
      await spool.persistOffset();
      expect(await ids(await reopen())).toEqual(['run-2', 'run-3']);
    });
  });

  describe('compaction', () => {
    it('a failed offset reset leaves the file as it is; nothing is redelivered or lost', async () => {
      const spool = await openSpool();
      for (let i = 1; i <= 2; i++) await spool.append(record(i));
      const batch = await spool.read(10);
      // The commit's own offset write succeeds; the compaction's reset to 0 fails.
      let writes = 0;
      const realCheck = fs.check.bind(fs);
      fs.check = (step, file) => {
        if (step === 'open' && OFFSET_TMP.test(file) && ++writes === 2) {
          throw Object.assign(new Error('EIO: injected'), { code: 'EIO' });
        }
        return realCheck(step, file);
      };
      await spool.commit(batch.end, 2);
      fs.check = realCheck;
      expect(spool.pending).toBe(0);
      expect(await dataText()).toBe(line(1) + line(2));
      await spool.append(record(3));
      expect(await ids(spool)).toEqual(['run-3']);
      expect(await ids(await reopen())).toEqual(['run-3']);
    });

    it('a failed truncation after the offset reset redelivers (duplicates), and the next append truncates first', async () => {
      const spool = await openSpool();
      for (let i = 1; i <= 2; i++) await spool.append(record(i));
      const batch = await spool.read(10);
      fs.fail('truncate', DATA, { code: 'EIO' });
      await spool.commit(batch.end, 2);
      expect(spool.pending).toBe(0);
      await spool.append(record(3));
      expect(await dataText()).toBe(line(3));
      expect(await ids(await reopen())).toEqual(['run-3']);
    });

    it('a crash between the offset reset and the truncation redelivers the file once', async () => {
      const spool = await openSpool();
      for (let i = 1; i <= 2; i++) await spool.append(record(i));
      const batch = await spool.read(10);
      fs.fail('truncate', DATA, { code: 'EIO', times: 100 });
      await spool.commit(batch.end, 2);
      fs.clear();
      await rm(path.join(dir, 'spool.lock'));
      expect(await ids(await openSpool())).toEqual(['run-1', 'run-2']);
    });
  });

  describe('open and read', () => {
    for (const [what, text] of [
      ['empty', ''],
      ['torn', '{"offs'],
      ['NUL-filled', '\0'.repeat(64)],
      ['pointing into a line', JSON.stringify({ offset: 7 })],
      ['pointing past the end', JSON.stringify({ offset: 1e9 })],
    ] as const) {
      it(`spool.offset ${what}: read as 0, every record is delivered again`, async () => {
        const spool = await openSpool();
        for (let i = 1; i <= 2; i++) await spool.append(record(i));
        await spool.close();
        opened.splice(0);
        await writeFile(path.join(dir, 'spool.offset'), text);
        const again = await openSpool();
        expect(again.pending).toBe(2);
        expect(await ids(again)).toEqual(['run-1', 'run-2']);
        // The bad file is replaced at the next commit.
        const batch = await again.read(1);
        await again.commit(batch.end, 1);
        expect(JSON.parse(await readFile(path.join(dir, 'spool.offset'), 'utf8'))).toEqual({
          offset: line(1).length,
        });
      });
    }

    it('removes temp files of an interrupted offset write', async () => {
      await writeFile(path.join(dir, 'spool.offset.1234-abcd.tmp'), '{"offset":');
      await openSpool();
      expect(await tempFiles()).toEqual([]);
    });

    it('a data file cut under it at run time ends the read instead of looping', async () => {
      const spool = await openSpool();
      for (let i = 1; i <= 3; i++) await spool.append(record(i));
      await truncate(path.join(dir, 'spool.jsonl'), line(1).length + 5);
      const { records, end } = await spool.read(10);
      expect(records.map((r) => r.record.run_id)).toEqual(['run-1']);
      expect(end).toBe(line(1).length * 3);
      expect(spool.corrupt).toBeGreaterThan(0);
      // Committing past the damage leaves nothing pending, so a flusher stops instead of spinning.
      await spool.commit(end, records.length);
      expect(spool.pending).toBe(0);
    });

    it('a failed read rejects (the flusher retries later) and changes nothing', async () => {
      const spool = await openSpool();
      await spool.append(record(1));
      fs.fail('read', DATA, { code: 'EIO' });
      await expect(spool.read(10)).rejects.toThrow(/EIO/);
      expect(await ids(spool)).toEqual(['run-1']);
    });
  });
});
