import { ClickHouseError, type ClickHouseClient } from '@clickhouse/client';
import { createClickHouse } from '../clients.js';
import { backfillRollups, ensureDatabase, migrate } from '../clickhouse/schema.js';
import type { Config } from '../config.js';
import { EXIT, parseCommandArgs, type CommandInput } from './command.js';

/**
 * Runs `fn` with a client on the configured database, creating that database first. The creation needs
 * a second, short-lived client on `default`: ClickHouse rejects any request that names a database that
 * does not exist yet, including the one that would create it.
 */
export async function withMigratedDatabase<T>(
  config: Config,
  fn: (client: ClickHouseClient) => Promise<T>,
  signal?: AbortSignal,
): Promise<T> {
  const bootstrap = createClickHouse({
    ...config,
    clickhouse: { ...config.clickhouse, database: 'default' },
  });
  try {
    await ensureDatabase(bootstrap, config.clickhouse.database, signal);
  } finally {
    await bootstrap.close();
  }
  const client = createClickHouse(config);
  try {
    return await fn(client);
  } finally {
    await client.close();
  }
}

/** Aborts on the first SIGTERM/SIGINT so a long statement stops server-side too; a second one exits. */
export function abortOnSignal(input: CommandInput): AbortSignal {
  const controller = new AbortController();
  input.io.onSignal((signal) => {
    if (controller.signal.aborted) input.io.forceExit(EXIT.failure);
    input.io.stderr(`cache-refresher: ${signal} received, stopping\n`);
    controller.abort(new Error(`interrupted by ${signal}`));
  });
  return controller.signal;
}

/**
 * `migrate [--backfill]`: creates the database, tables, rollups and views that are missing (safe on
 * every deploy). `--backfill` then rebuilds the rollups from `post_events`, for data that was loaded
 * before the views existed; it can be repeated and never double counts (see `backfillRollups`).
 */
export async function migrateCommand(input: CommandInput): Promise<number> {
  const { values } = parseCommandArgs({
    args: input.args,
    options: { backfill: { type: 'boolean', default: false } },
    allowPositionals: false,
  });
  const { config, io } = input;
  const signal = abortOnSignal(input);
  const db = config.clickhouse.database;
  try {
    await withMigratedDatabase(
      config,
      async (client) => {
        const layout = { cluster: config.clickhouse.cluster };
        const report = await migrate(client, signal, layout);
        io.stdout(
          `migrate: database ${db}: created ${report.created.length} (${report.created.join(', ') || '-'}), ` +
            `${report.existing.length} already present\n`,
        );
        if (report.updated.length > 0)
          io.stdout(`migrate: updated the SELECT of ${report.updated.join(', ')}\n`);
        if (values.backfill) {
          const started = Date.now();
          const result = await backfillRollups(client, {
            signal,
            layout,
            onProgress: (p) => {
              if (p.step === 'replaced')
                io.stdout(`backfill: ${p.table} partition ${p.partition}: ${p.rows} rows\n`);
            },
          });
          for (const t of result.tables)
            io.stdout(`backfill: ${t.table}: ${t.partitions} partitions, ${t.rows} rows rebuilt\n`);
          io.stdout(`backfill: done in ${Date.now() - started} ms\n`);
        } else if (report.backfillAdvised) {
          io.stderr(
            'migrate: the rollups do not match post_events (rows loaded before the views, or a view ' +
              'updated above): run `cache-refresher migrate --backfill`\n',
          );
        }
      },
      signal,
    );
    return EXIT.ok;
  } catch (err) {
    io.stderr(`cache-refresher migrate: ${err instanceof Error ? err.message : String(err)}\n`);
    if (
      config.clickhouse.cluster !== undefined &&
      err instanceof ClickHouseError &&
      DDL_QUEUE_MISSING.test(err.message)
    ) {
      io.stderr(
        `cache-refresher migrate: CLICKHOUSE_CLUSTER=${config.clickhouse.cluster}: the DDL runs ON CLUSTER, ` +
          "which needs the servers' distributed DDL (ClickHouse Keeper or ZooKeeper, and <distributed_ddl>)\n",
      );
    }
    return EXIT.failure;
  }
}

/** ClickHouse's answers to ON CLUSTER on a server without a working distributed-DDL queue. */
const DDL_QUEUE_MISSING =
  /Replicated DDL queries are disabled|ZooKeeper|Keeper|DistributedDDL|distributed_ddl/i;
