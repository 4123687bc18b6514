import { randomUUID } from 'node:crypto';
import { ClickHouseLogLevel, createClient, type ClickHouseClient } from '@clickhouse/client';
import { pino } from 'pino';
import { clickhouseLoggerClass } from '../../src/clients.js';
import { ensureDatabase, migrate } from '../../src/clickhouse/schema.js';
import { servicesEnv } from './env.js';

export interface ScratchDatabase {
  name: string;
  /** A client whose default database is the scratch one. */
  client: ClickHouseClient;
  /** Drops the database and closes the client. */
  drop: () => Promise<void>;
}

/**
 * Options for a test's own ClickHouse client with a request timeout above a minute: the progress headers
 * the client asks for (else it prints a WARN about load-balancer idle timeouts), and the project's
 * logger class, so errors the client also throws to the test (which expects some) stay out of the
 * output while anything else it reports still shows.
 */
export function longRequests(requestTimeoutMs: number): {
  request_timeout: number;
  clickhouse_settings: { send_progress_in_http_headers: 1; http_headers_progress_interval_ms: string };
  log: { LoggerClass: ReturnType<typeof clickhouseLoggerClass>; level: ClickHouseLogLevel };
} {
  return {
    request_timeout: requestTimeoutMs,
    clickhouse_settings: { send_progress_in_http_headers: 1, http_headers_progress_interval_ms: '110000' },
    log: { LoggerClass: clickhouseLoggerClass(pino({ level: 'warn' })), level: ClickHouseLogLevel.WARN },
  };
}

/** A migrated ClickHouse database of this test's own, named `<prefix>_<uuid>`. */
export async function scratchDatabase(prefix: string): Promise<ScratchDatabase> {
  const url = servicesEnv().clickhouseUrl;
  const name = `${prefix}_${randomUUID().replaceAll('-', '')}`;
  const admin = createClient({ url });
  try {
    await ensureDatabase(admin, name);
  } finally {
    await admin.close();
  }
  const client = createClient({ url, database: name, ...longRequests(300_000) });
  await migrate(client);
  return {
    name,
    client,
    drop: async () => {
      await client.command({ query: 'DROP DATABASE IF EXISTS {db:Identifier}', query_params: { db: name } });
      await client.close();
    },
  };
}
