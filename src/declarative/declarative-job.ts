import type { ClickHouseClient, ResultSet } from '@clickhouse/client';
import type { Logger } from 'pino';
import { eachRow } from '../cache/stream.js';
import { yieldToLoop, type CacheWriter } from '../cache/writer.js';
import { readJsonEachRow } from '../clickhouse/result-stream.js';
import { renderKey } from './key-template.js';
import { runParams } from './query-params.js';
import { hashEntry, perRowEntry, scoredMember, type Row } from './row-values.js';
import type { DeclarativeJobSpec } from './spec.js';

/** Keys per Redis flush while streaming per-row outputs (as suggested-users does). */
const WRITE_CHUNK = 2000;

/** What one run of a declarative job needs to know about the run (a subset of every job's context). */
export interface DeclarativeRunFacts {
  readonly jobId: string;
  readonly runId: string;
  readonly attempt: number;
  /** The run's `now`: `{now:UInt32}` is its unix seconds. */
  readonly startedAt: Date;
  readonly signal: AbortSignal;
  readonly log: Logger;
}

export interface DeclarativeJobOptions {
  spec: DeclarativeJobSpec;
  clickhouse: Pick<ClickHouseClient, 'query'>;
  cache: CacheWriter;
  /** CACHE_KEY_PREFIX, the `{prefix}` of key templates. */
  keyPrefix: string;
  /** The job's TTL after environment overrides. */
  ttlSec: number;
}

/**
 * A job from a jobs file (CONTRACT §11): one ClickHouse query with named parameters, its rows written
 * to Redis by output type. Compute first, write last: one-key outputs (string, sorted_set) write only
 * after the whole result is in; per-row outputs (per_row, hash) stream, each chunk of rows written
 * before the next is read, so memory stays flat in the number of rows and a failure leaves the keys
 * not yet reached at their last good value.
 */
export class DeclarativeJob {
  readonly #o: DeclarativeJobOptions;

  constructor(opts: DeclarativeJobOptions) {
    this.#o = opts;
  }

  async run(ctx: DeclarativeRunFacts): Promise<{ items: number; context: Record<string, unknown> }> {
    const { spec, clickhouse } = this.#o;
    const result = await clickhouse.query({
      query: spec.query,
      query_params: runParams(spec.params, ctx.startedAt),
      format: 'JSONEachRow',
      abort_signal: ctx.signal,
      query_id: `cache-refresher:${ctx.jobId}:${ctx.runId}:${ctx.attempt}`,
      // UInt64 and wider as decimal strings (CONTRACT §11), whatever the server's default.
      clickhouse_settings: { output_format_json_quote_64bit_integers: 1 },
    });
    const counts = await this.#write(result, ctx.signal);
    const context = { rows: counts.rows, skipped_rows: counts.skipped };
    if (counts.skipped > 0) ctx.log.warn(context, `${ctx.jobId}: skipped rows that cannot be written`);
    return { items: counts.written, context };
  }

  async #write(
    result: ResultSet<'JSONEachRow'>,
    signal: AbortSignal,
  ): Promise<{ rows: number; written: number; skipped: number }> {
    const { spec, cache, keyPrefix, ttlSec } = this.#o;
    const output = spec.output;
    switch (output.type) {
      case 'string': {
        const rows = await readJsonEachRow<Row>(result);
        const key = renderKey(output.key, keyPrefix, {}) ?? output.key.source;
        await cache.write([{ key, value: JSON.stringify(rows) }], ttlSec, signal);
        return { rows: rows.length, written: rows.length, skipped: 0 };
      }
      case 'sorted_set': {
        const rows = await readJsonEachRow<Row>(result);
        const members = rows.map((row) => scoredMember(output, row));
        const good = members.filter((m) => m !== undefined);
        const key = renderKey(output.key, keyPrefix, {}) ?? output.key.source;
        const written = await cache.replaceSortedSet(key, good, ttlSec, signal);
        return { rows: rows.length, written, skipped: rows.length - good.length };
      }
      case 'per_row':
        return streamRows(
          result,
          signal,
          (row) => perRowEntry(output, keyPrefix, row),
          (chunk) => cache.write(chunk, ttlSec, signal),
        );
      case 'hash':
        return streamRows(
          result,
          signal,
          (row) => hashEntry(output, keyPrefix, row),
          (chunk) => cache.replaceHashes(chunk, ttlSec, signal),
        );
    }
  }
}

/**
 * Streams rows into `flush` in chunks. Awaiting each flush inside the loop pauses the response stream
 * (backpressure), so one chunk is held at a time however many rows the query returns.
 */
async function streamRows<T>(
  result: ResultSet<'JSONEachRow'>,
  signal: AbortSignal,
  toEntry: (row: Row) => T | undefined,
  flush: (chunk: T[]) => Promise<number>,
): Promise<{ rows: number; written: number; skipped: number }> {
  let rows = 0;
  let written = 0;
  let skipped = 0;
  let chunk: T[] = [];
  const write = async (): Promise<void> => {
    if (chunk.length === 0) return;
    const entries = chunk;
    chunk = [];
    written += await flush(entries);
    await yieldToLoop();
  };
  for await (const row of eachRow<Row>(result)) {
    rows++;
    const entry = toEntry(row);
    if (entry === undefined) {
      skipped++;
      continue;
    }
    chunk.push(entry);
    if (chunk.length >= WRITE_CHUNK) await write();
  }
  signal.throwIfAborted();
  await write();
  return { rows, written, skipped };
}
