// A query that fails after the server has sent rows, on the real server: the batch fails with the
// server's error, whether the client sees the exception frame's tag header or a proxy dropped it
// (then the frame arrives as plain lines, as an older server's appended exception text would).
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createClient, type ClickHouseClient } from '@clickhouse/client';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CacheEntry, CacheWriter } from '../../src/cache/writer.js';
import { clickhouseLoggerClass } from '../../src/clients.js';
import { streamUserValues } from '../../src/jobs/user-values.js';
import { servicesEnv } from './env.js';

// 10 000 (user_id, value) rows in blocks of 1000; the query fails at row 5001, after rows were sent.
const FAILING_QUERY = `
  SELECT toString(number + 1) AS user_id, concat('[]', substring(toString(throwIf(number = 5000)), 1, 0)) AS value
  FROM numbers(10000)
  SETTINGS max_block_size = 1000`;

class MemoryCache implements Pick<CacheWriter, 'write'> {
  readonly written: CacheEntry[] = [];
  write(entries: CacheEntry[]): Promise<number> {
    this.written.push(...entries);
    return Promise.resolve(entries.length);
  }
}

/** An HTTP proxy to ClickHouse that drops the exception tag header, as a header-filtering proxy would. */
function tagDroppingProxy(target: URL): Server {
  return createServer((req, res) => {
    const upstream = request(
      { host: target.hostname, port: target.port, path: req.url, method: req.method, headers: req.headers },
      (up) => {
        // Hop-by-hop headers belong to the upstream connection; node frames the response itself.
        const dropped = new Set([
          'x-clickhouse-exception-tag',
          'connection',
          'keep-alive',
          'transfer-encoding',
        ]);
        const headers = Object.fromEntries(Object.entries(up.headers).filter(([name]) => !dropped.has(name)));
        res.writeHead(up.statusCode ?? 502, headers);
        up.pipe(res);
      },
    );
    req.pipe(upstream);
  });
}

describe('an exception in the middle of a streamed result, on the real server', () => {
  const s = servicesEnv();
  let proxy: Server;
  const clients: ClickHouseClient[] = [];
  const client = (url: string): ClickHouseClient => {
    const c = createClient({
      url,
      log: { LoggerClass: clickhouseLoggerClass(pino({ level: 'silent' })) },
    });
    clients.push(c);
    return c;
  };

  beforeAll(async () => {
    proxy = tagDroppingProxy(new URL(s.clickhouseUrl));
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  });

  afterAll(async () => {
    for (const c of clients) await c.close();
    await new Promise((resolve) => proxy.close(resolve));
  });

  const run = async (ch: ClickHouseClient): Promise<{ error: unknown }> => {
    const cache = new MemoryCache();
    const result = await ch.query({ query: FAILING_QUERY, format: 'TabSeparatedRaw' });
    const error = await streamUserValues(result, {
      keyOf: (u) => `k:${u}`,
      cache,
      ttlSec: 60,
      signal: new AbortController().signal,
    }).then(
      (counts) => new Error(`succeeded: ${JSON.stringify(counts)}`),
      (err: unknown) => err,
    );
    return { error };
  };

  it('fails the batch when the client reads the frame itself', async () => {
    const { error } = await run(client(s.clickhouseUrl));
    expect(error).toMatchObject({ code: '395', type: 'FUNCTION_THROW_IF_VALUE_IS_NON_ZERO' });
  });

  it('fails the batch when a proxy dropped the tag header and the exception arrives as lines', async () => {
    const proxied = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`;
    // Only the line recognition raises this error: the client itself saw a 200 and rows, no error (as
    // with a server before 25.11, whose exception text arrives as one more line).
    const { error } = await run(client(proxied));
    expect(error).toMatchObject({
      name: 'ClickHouseMidStreamError',
      code: '395',
      type: 'FUNCTION_THROW_IF_VALUE_IS_NON_ZERO',
    });
  });
});
