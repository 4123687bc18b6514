import { Readable } from 'node:stream';
import { ClickHouseError, ResultSet, type ClickHouseClient, type DataFormat } from '@clickhouse/client';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import type { CacheEntry, CacheWriter } from '../../src/cache/writer.js';
import {
  exceptionInLine,
  MidStreamError,
  readJsonDocument,
  readJsonEachRow,
  streamLines,
} from '../../src/clickhouse/result-stream.js';
import { DeclarativeJob } from '../../src/declarative/declarative-job.js';
import { parseJobsFile } from '../../src/declarative/parse-jobs-file.js';
import { streamUserValues } from '../../src/jobs/user-values.js';

// What a ClickHouse server before 25.11 appends to a body whose query fails after the rows were sent.
const OLD_SERVER_EXCEPTION =
  'Code: 241. DB::Exception: Memory limit (for query) exceeded: would use 9.31 GiB: While executing ' +
  'AggregatingTransform. (MEMORY_LIMIT_EXCEEDED) (version 24.3.5.47 (official build))';

/** A result set over a body that arrives in the given chunks, as the client builds it from a response. */
function resultOf<F extends DataFormat>(format: F, chunks: string[]): ResultSet<F> {
  return new ResultSet(Readable.from(chunks.map((c) => Buffer.from(c))), format, 'test-query', () => {
    // The client's own error logger: silent here, the test asserts on the thrown error instead.
  });
}

class MemoryCache implements Pick<CacheWriter, 'write'> {
  readonly written: CacheEntry[] = [];
  write(entries: CacheEntry[]): Promise<number> {
    this.written.push(...entries);
    return Promise.resolve(entries.length);
  }
}

describe('a server exception in the middle of a streamed result', () => {
  it('is recognised in a line, alone or after a partial row, and parsed into code and type', () => {
    const alone = exceptionInLine(OLD_SERVER_EXCEPTION);
    expect(alone).toBeInstanceOf(MidStreamError);
    expect(alone).toBeInstanceOf(ClickHouseError);
    expect(alone).toMatchObject({ code: '241', type: 'MEMORY_LIMIT_EXCEEDED' });
    expect(alone?.message).toMatch(/^query failed while streaming its result: Memory limit/);
    expect(exceptionInLine(`42\t[{"user_id":"7","mutual${OLD_SERVER_EXCEPTION}`)?.code).toBe('241');
    expect(exceptionInLine('__exception__\r')).toBeInstanceOf(MidStreamError);
    expect(exceptionInLine('42\t[{"user_id":"7","mutual_count":1}]')).toBeUndefined();
    expect(exceptionInLine('{"n":"12"}')).toBeUndefined();
  });

  it('fails a TabSeparatedRaw batch instead of counting the exception as a bad row', async () => {
    const cache = new MemoryCache();
    const result = resultOf('TabSeparatedRaw', [
      '1\t[]\n2\t[{"user_id":"9","mutual_count":1,"reason":"1 mutual connection"}]\n',
      '3\t[]\n',
      `${OLD_SERVER_EXCEPTION}\n`,
    ]);
    await expect(
      streamUserValues(result, {
        keyOf: (u) => `k:${u}`,
        cache,
        ttlSec: 60,
        signal: new AbortController().signal,
      }),
    ).rejects.toMatchObject({ name: 'ClickHouseMidStreamError', code: '241', type: 'MEMORY_LIMIT_EXCEEDED' });
  });

  it('still passes a clean stream through, counting malformed rows as skipped', async () => {
    const cache = new MemoryCache();
    const result = resultOf('TabSeparatedRaw', ['1\t[]\n', '0\t[]\nnot a row\n2\t[]\n']);
    const out = await streamUserValues(result, {
      keyOf: (u) => `k:${u}`,
      cache,
      ttlSec: 60,
      signal: new AbortController().signal,
    });
    expect(out).toEqual({ written: 2, skipped: 2 });
    expect(cache.written.map((e) => e.key)).toEqual(['k:1', 'k:2']);
  });

  it('fails JSONEachRow and JSON reads with the server error, not a SyntaxError', async () => {
    await expect(
      readJsonEachRow(resultOf('JSONEachRow', ['{"n":"1"}\n{"n"', `:"2"}\n${OLD_SERVER_EXCEPTION}\n`])),
    ).rejects.toMatchObject({ name: 'ClickHouseMidStreamError', type: 'MEMORY_LIMIT_EXCEEDED' });
    expect(await readJsonEachRow(resultOf('JSONEachRow', ['{"n":"1"}\n{"n"', ':"2"}\n']))).toEqual([
      { n: '1' },
      { n: '2' },
    ]);
    await expect(
      readJsonDocument(resultOf('JSON', ['{"meta":[],"data":[{"id":"1"', `\n${OLD_SERVER_EXCEPTION}\n`])),
    ).rejects.toMatchObject({ name: 'ClickHouseMidStreamError', code: '241' });
    expect(await readJsonDocument(resultOf('JSON', ['{"data":[{"id":"1"}]}\n']))).toEqual({
      data: [{ id: '1' }],
    });
  });

  it('yields the lines of every chunk as they arrive', async () => {
    const seen: string[][] = [];
    for await (const lines of streamLines(resultOf('TabSeparatedRaw', ['a\nb\n', 'c\n']))) seen.push(lines);
    expect(seen).toEqual([['a', 'b'], ['c']]);
  });
});

describe('a declarative job whose one-key output meets a server exception mid-result', () => {
  const yaml = `jobs:
  - id: top-members
    interval_sec: 60
    query: SELECT 'a' AS member, 1 AS score
    output: { type: sorted_set, key: "{prefix}:top", member: member, score: score }
  - id: member-list
    interval_sec: 60
    query: SELECT 'a' AS member
    output: { type: string, key: "{prefix}:list" }
`;
  const { jobs, problems } = parseJobsFile(yaml, 'jobs.yaml', { reservedIds: [], cronTimezone: 'UTC' });

  it.each(['top-members', 'member-list'])('%s fails with the server error and writes nothing', async (id) => {
    expect(problems).toEqual([]);
    const spec = jobs.find((j) => j.id === id);
    expect(spec).toBeDefined();
    const writes: string[] = [];
    const cache = {
      write: (entries: CacheEntry[]) => {
        writes.push(...entries.map((e) => e.key));
        return Promise.resolve(entries.length);
      },
      replaceSortedSet: (key: string) => {
        writes.push(key);
        return Promise.resolve(1);
      },
      replaceHashes: () => Promise.resolve(0),
    } satisfies CacheWriter;
    const clickhouse = {
      query: () =>
        Promise.resolve(resultOf('JSONEachRow', ['{"member":"a","score":1}\n', `${OLD_SERVER_EXCEPTION}\n`])),
    } as unknown as Pick<ClickHouseClient, 'query'>;
    const job = new DeclarativeJob({ spec: spec!, clickhouse, cache, keyPrefix: 't', ttlSec: 60 });
    const run = job.run({
      jobId: id,
      runId: 'r1',
      attempt: 1,
      startedAt: new Date(0),
      signal: new AbortController().signal,
      log: pino({ level: 'silent' }),
    });
    await expect(run).rejects.toBeInstanceOf(MidStreamError);
    expect(writes).toEqual([]);
  });
});
