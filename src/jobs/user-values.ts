import type { ResultSet } from '@clickhouse/client';
import { yieldToLoop, type CacheEntry, type CacheWriter } from '../cache/writer.js';
import { streamLines } from '../clickhouse/result-stream.js';

/** Entries per Redis flush: a few thousand keys per pipeline amortise round trips without big buffers. */
const WRITE_CHUNK = 2000;

/**
 * A `user_id<TAB>json` line as the per-user queries render it, or undefined for bad data. The value is
 * JSON built by ClickHouse from ids and numbers only, so it holds no tab, newline or backslash and
 * needs no parsing here.
 */
export function parseUserValueRow(line: string): { userId: string; value: string } | undefined {
  const tab = line.indexOf('\t');
  if (tab <= 0) return undefined;
  const userId = line.slice(0, tab);
  const value = line.slice(tab + 1);
  if (!/^[1-9]\d{0,19}$/.test(userId) || !value.startsWith('[') || !value.endsWith(']')) return undefined;
  return { userId, value };
}

/**
 * Streams a `TabSeparatedRaw` result of (user_id, value) rows into Redis in pipelined chunks. Awaiting
 * each chunk's write inside the loop pauses the stream (backpressure), so memory holds one chunk at a
 * time however many users there are, and yielding between chunks keeps the event loop responsive.
 * Throws (after writing the chunks before it) when the server reports an error mid-result.
 */
export async function streamUserValues(
  result: ResultSet<'TabSeparatedRaw'>,
  opts: {
    keyOf: (userId: string) => string;
    cache: Pick<CacheWriter, 'write'>;
    ttlSec: number;
    signal: AbortSignal;
  },
): Promise<{ written: number; skipped: number }> {
  let written = 0;
  let skipped = 0;
  let chunk: CacheEntry[] = [];
  const flush = async (): Promise<void> => {
    if (chunk.length === 0) return;
    const entries = chunk;
    chunk = [];
    written += await opts.cache.write(entries, opts.ttlSec, opts.signal);
    await yieldToLoop();
  };
  // streamLines throws a server exception sent mid-result: the batch fails instead of losing rows.
  for await (const lines of streamLines(result)) {
    for (const line of lines) {
      const parsed = parseUserValueRow(line);
      if (!parsed) {
        skipped++;
        continue;
      }
      chunk.push({ key: opts.keyOf(parsed.userId), value: parsed.value });
      if (chunk.length >= WRITE_CHUNK) await flush();
    }
  }
  await flush();
  return { written, skipped };
}
