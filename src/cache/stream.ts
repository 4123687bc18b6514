import type { ResultSet } from '@clickhouse/client';
import { streamLines } from '../clickhouse/result-stream.js';
import { yieldToLoop, type CacheEntry, type CacheWriter } from './writer.js';

/** Entries per write by default: a few thousand keys per pipeline amortise round trips cheaply. */
const DEFAULT_CHUNK = 2000;

/** What `writeStream` needs of a run: its writer, its TTL and its signal (a `RunContext` has all three). */
export interface StreamTarget {
  readonly cache: Pick<CacheWriter, 'write'>;
  readonly settings: { readonly ttlSec: number };
  readonly signal: AbortSignal;
}

/**
 * Writes entries as they arrive, `chunkSize` (default 2000) at a time, awaiting each chunk's write before
 * pulling more: with a streamed query as the source this is backpressure, so memory holds one chunk
 * however many rows there are. TTL defaults to the job's `ttlSec`. Resolves to the number of keys
 * written.
 *
 * @throws what the writer throws (`FencedError` after a lost lease, the signal's reason on abort); keys
 *   of chunks already written stay written.
 */
export async function writeStream(
  target: StreamTarget,
  entries: AsyncIterable<CacheEntry> | Iterable<CacheEntry>,
  opts: { ttlSec?: number; chunkSize?: number } = {},
): Promise<number> {
  const ttlSec = opts.ttlSec ?? target.settings.ttlSec;
  const size = Math.max(1, opts.chunkSize ?? DEFAULT_CHUNK);
  let written = 0;
  let chunk: CacheEntry[] = [];
  for await (const entry of entries) {
    chunk.push(entry);
    if (chunk.length >= size) {
      written += await target.cache.write(chunk, ttlSec, target.signal);
      chunk = [];
      await yieldToLoop();
    }
  }
  if (chunk.length > 0) written += await target.cache.write(chunk, ttlSec, target.signal);
  return written;
}

/**
 * The rows of a `JSONEachRow` query, one parsed object at a time, pulled from the response stream as
 * they are consumed (for `writeStream`). 64-bit integers arrive as strings unless the query says
 * otherwise (`output_format_json_quote_64bit_integers`).
 *
 * @throws the server's error (a `ClickHouseError`) when the query fails after rows were sent.
 */
export async function* eachRow<T = Record<string, unknown>>(
  result: ResultSet<'JSONEachRow'>,
): AsyncGenerator<T> {
  // streamLines throws a server exception sent mid-result instead of handing it over as a row.
  for await (const lines of streamLines(result)) {
    for (const line of lines) if (line !== '') yield JSON.parse(line) as T;
  }
}
