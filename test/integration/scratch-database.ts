import { randomUUID } from 'node:crypto';
import { createClient, type ClickHouseClient } from '@clickhouse/client';
import { ensureDatabase, migrate } from '../../src/clickhouse/schema.js';
import { servicesEnv } from './env.js';

export interface ScratchDatabase {
  name: string;
  /** A client whose default database is the scratch one. */
  client: ClickHouseClient;
  /** Drops the database and closes the client. */
  drop: () => Promise<void>;
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
  const client = createClient({ url, database: name, request_timeout: 300_000 });
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
