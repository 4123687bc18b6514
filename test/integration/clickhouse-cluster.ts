import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { createClient, type ClickHouseClient } from '@clickhouse/client';
import { pino } from 'pino';
import { createStatements } from '../../src/clickhouse/layout.js';
import { createClickHouse } from '../../src/clients.js';
import { ensureDatabase, MIGRATIONS } from '../../src/clickhouse/schema.js';
import { servicesEnv } from './env.js';
import { longRequests } from './scratch-database.js';

/**
 * The two-shard ClickHouse cluster of `scripts/services.sh up --clickhouse-cluster`, for the tests of
 * CLICKHOUSE_CLUSTER. Started on demand (idempotent), left running like the other servers.
 */
export interface LocalCluster {
  /** The cluster's name in every node's remote_servers (CLICKHOUSE_CLUSTER). */
  name: string;
  /** Each node's HTTP URL, node 1 first. */
  urls: string[];
}

export async function startLocalCluster(): Promise<LocalCluster> {
  const script = servicesEnv().servicesScript;
  await promisify(execFile)('bash', [script, 'up', '--clickhouse-cluster'], { timeout: 180_000 });
  const envFile = path.join(path.dirname(script), '..', '.services', 'clickhouse-cluster', 'env');
  const vars = new Map(
    [...readFileSync(envFile, 'utf8').matchAll(/^export ([A-Z_]+)=(.*)$/gm)].map((m) => [m[1]!, m[2]!]),
  );
  return { name: vars.get('CLICKHOUSE_CLUSTER')!, urls: vars.get('CLICKHOUSE_CLUSTER_URLS')!.split(',') };
}

export interface ClusterDatabase {
  name: string;
  /** The sidecar's client of node 1 on the database, with CLICKHOUSE_CLUSTER set: it uses the Distributed tables. */
  client: ClickHouseClient;
  /** A client per node on the database (node 1 first), for shard-local checks. */
  nodes: ClickHouseClient[];
  drop: () => Promise<void>;
}

/**
 * A database of this test's own on every node, with migrate's cluster schema laid out on each. These
 * servers have no distributed-DDL queue (no Keeper), so `ON CLUSTER` cannot run here: the statements
 * `migrate` sends with CLICKHOUSE_CLUSTER are rendered without it and run on each node in turn, which
 * is what the queue would do.
 */
export async function clusterDatabase(cluster: LocalCluster, prefix: string): Promise<ClusterDatabase> {
  const name = `${prefix}_${randomUUID().replaceAll('-', '').slice(0, 12)}`;
  const nodes: ClickHouseClient[] = [];
  for (const url of cluster.urls) {
    const admin = createClient({ url });
    try {
      await ensureDatabase(admin, name);
    } finally {
      await admin.close();
    }
    const node = createClient({ url, database: name, ...longRequests(300_000) });
    for (const s of createStatements(MIGRATIONS, { cluster: cluster.name, onCluster: false }, name)) {
      await node.command({ query: s.sql, query_params: s.params });
    }
    nodes.push(node);
  }
  // The sidecar's own client factory, so the settings it adds for CLICKHOUSE_CLUSTER are the ones tested.
  const client = createClickHouse(
    {
      clickhouse: {
        url: cluster.urls[0]!,
        user: 'default',
        password: '',
        database: name,
        cluster: cluster.name,
      },
    },
    pino({ level: 'warn' }),
  );
  return {
    name,
    client,
    nodes,
    drop: async () => {
      for (const node of nodes) {
        await node.command({ query: 'DROP DATABASE IF EXISTS {db:Identifier}', query_params: { db: name } });
        await node.close();
      }
      await client.close();
    },
  };
}
