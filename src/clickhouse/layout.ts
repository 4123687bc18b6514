/**
 * How the schema is laid out on the server: one server, or a cluster named by CLICKHOUSE_CLUSTER
 * (CONTRACT §12). `schema.ts` declares what exists (MIGRATIONS, by kind); this module turns each
 * declaration into DDL for the layout, so a new migration needs no cluster-specific code.
 *
 * On a cluster every table migration `t` becomes a shard-local table `t_local` (the declared engine) on
 * every node and a Distributed table `t` (the contract's name) over them; views sit on the local tables.
 * Queries keep using the contract's names and so read every shard.
 */

/**
 * Where a table is, for SQL that runs inside the server next to it (a view's SELECT, the backfill): on
 * one server a table is its own name; on a cluster it is the shard-local table under the Distributed
 * one (clickhouse/layout.ts). Takes a table migration's name.
 */
export type TableName = (table: string) => string;

/**
 * What `migrate` creates, declared by kind so that clickhouse/layout.ts can lay every entry out on one
 * server or on a cluster without knowing it: a new entry declared the same way needs no other change.
 *
 * A `table` holds rows: on one server it is created as is; on a cluster (CLICKHOUSE_CLUSTER) as a
 * shard-local table `<name>_local` on every node plus a Distributed table `<name>` over them, sharded
 * by `shardingKey`. Its rows come from producers (the raw tables, and `seed`) or from a view (rollups).
 *
 * A `view` is a materialized view writing into a table migration's table. On a cluster it sits on each
 * shard's local tables (its SELECT reads the local source, it writes the local target), so an insert
 * through the Distributed raw table reaches a shard and fires that shard's views there; the Distributed
 * table of the target then reads every shard's rows.
 */
export type Migration = TableMigration | ViewMigration;

export interface TableMigration {
  kind: 'table';
  name: string;
  /** Everything after `CREATE TABLE <name>`: columns, engine, partitioning, sorting key. */
  definition: string;
  /**
   * The Distributed table's sharding key on a cluster (an expression of the table's columns). Every
   * row of one sorting key must reach one shard when the engine merges rows by key (Replacing/Summing
   * MergeTree): `FINAL` and merges are per shard. So the key is a function of sorting-key columns.
   * A table filled by a view gets its rows where the view fires, on the shard of the source rows,
   * whatever this key says (it routes only direct inserts, such as a backfill through the Distributed
   * table). Readers that sum a rollup with GROUP BY are right whatever the shards hold; a reader that
   * takes one row per key (`FINAL`, a Replacing engine) needs every row of a key to come from one
   * source shard: a per-post rollup of `post_events` (sharded by post) has that, a per-author one not.
   */
  shardingKey: string;
}

export interface ViewMigration {
  kind: 'view';
  name: string;
  /** The table migration this view writes into. */
  to: string;
  /**
   * The view's SELECT, naming each table it reads through `table` (see `TableName`). On a cluster it
   * runs on each shard over the block inserted there: a join inside it sees only that shard's rows of
   * the joined table, which is right only if the joined rows share the source's sharding key.
   */
  select: (table: TableName) => string;
}

/** `TableName` on one server, and for SQL that names the Distributed tables on a cluster. */
export const SAME_NAME: TableName = (table) => table;

/** The suffix of a table migration's shard-local table on a cluster. */
export const LOCAL_SUFFIX = '_local';

export interface SchemaLayout {
  /** CLICKHOUSE_CLUSTER: a cluster of the server's `remote_servers`; unset: one server. */
  cluster?: string | undefined;
  /**
   * With a cluster: whether each statement carries `ON CLUSTER` (default true; the server then runs it
   * on every node through its distributed-DDL queue, which needs (Zoo)Keeper). False renders the same
   * statements without it, to be run on each node in turn.
   */
  onCluster?: boolean;
}

/** A cluster name is spliced into DDL (`ON CLUSTER` takes no parameter): it must be a plain identifier. */
export const CLUSTER_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** Where the table migrations' rows live under `layout` (see `TableName`). */
export function storageName(layout: SchemaLayout): TableName {
  return layout.cluster === undefined ? SAME_NAME : (table) => `${table}${LOCAL_SUFFIX}`;
}

function onClusterClause(layout: SchemaLayout): string {
  if (layout.cluster === undefined || layout.onCluster === false) return '';
  if (!CLUSTER_NAME.test(layout.cluster))
    throw new Error(`bad cluster name ${JSON.stringify(layout.cluster)}`);
  return ` ON CLUSTER ${layout.cluster}`;
}

/** One DDL statement of `migrate`, with the query parameters it takes. */
export interface SchemaStatement {
  /** The object it creates or changes. */
  object: string;
  sql: string;
  params: Record<string, string>;
}

/**
 * The `CREATE … IF NOT EXISTS` statements of `migrations` under `layout`, in order. `database` is where
 * the shard-local tables are on every node (the Distributed engine names it; CLICKHOUSE_DATABASE).
 * Names are the migrations' own constants; the cluster name is checked (`CLUSTER_NAME`).
 */
export function createStatements(
  migrations: readonly Migration[],
  layout: SchemaLayout,
  database: string,
): SchemaStatement[] {
  const on = onClusterClause(layout);
  const stored = storageName(layout);
  const out: SchemaStatement[] = [];
  for (const m of migrations) {
    if (m.kind === 'view') {
      out.push({
        object: m.name,
        sql: `CREATE MATERIALIZED VIEW IF NOT EXISTS ${m.name}${on} TO ${stored(m.to)} AS ${m.select(stored)}`,
        params: {},
      });
      continue;
    }
    out.push({
      object: stored(m.name),
      sql: `CREATE TABLE IF NOT EXISTS ${stored(m.name)}${on} ${m.definition}`,
      params: {},
    });
    if (layout.cluster === undefined) continue;
    out.push({
      object: m.name,
      sql:
        `CREATE TABLE IF NOT EXISTS ${m.name}${on} AS ${stored(m.name)} ` +
        `ENGINE = Distributed({cluster:String}, {database:String}, {local:String}, ${m.shardingKey})`,
      params: { cluster: layout.cluster, database, local: stored(m.name) },
    });
  }
  return out;
}

/** `ALTER TABLE … MODIFY QUERY`: gives an existing view `view`'s current SELECT under `layout`. */
export function modifyViewQuery(view: ViewMigration, layout: SchemaLayout): string {
  return `ALTER TABLE ${view.name}${onClusterClause(layout)} MODIFY QUERY ${view.select(storageName(layout))}`;
}
