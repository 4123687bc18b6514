import { describe, expect, it } from 'vitest';
import { createStatements, modifyViewQuery, type Migration } from '../../src/clickhouse/layout.js';
import { MIGRATIONS } from '../../src/clickhouse/schema.js';
import { ConfigError, parseConfig } from '../../src/config.js';

/** A migration pair as a new feature would declare it: a rollup table and the view that fills it. */
const NEW_ENTRIES: Migration[] = [
  {
    kind: 'table',
    name: 'author_rollup',
    shardingKey: 'cityHash64(author_id)',
    definition: '(author_id UInt64, n UInt64) ENGINE = SummingMergeTree ORDER BY author_id',
  },
  {
    kind: 'view',
    name: 'author_rollup_mv',
    to: 'author_rollup',
    select: (table) => `SELECT author_id, count() AS n FROM ${table('post_events')} GROUP BY author_id`,
  },
];

describe('CLICKHOUSE_CLUSTER', () => {
  it('is a cluster name from remote_servers, unset by default', () => {
    expect(parseConfig({}).clickhouse.cluster).toBeUndefined();
    expect(parseConfig({ CLICKHOUSE_CLUSTER: 'events_cluster' }).clickhouse.cluster).toBe('events_cluster');
  });

  it('must be a plain identifier (it is spliced into ON CLUSTER): anything else is a config problem', () => {
    for (const bad of ['my-cluster', "c'; DROP TABLE posts", '1cluster', 'a b']) {
      let caught: unknown;
      try {
        parseConfig({ CLICKHOUSE_CLUSTER: bad });
      } catch (err) {
        caught = err;
      }
      expect(caught).toBeInstanceOf(ConfigError);
      expect((caught as ConfigError).problems.map((p) => p.name)).toEqual(['CLICKHOUSE_CLUSTER']);
    }
  });
});

describe('schema layout', () => {
  it('on one server creates each migration as declared', () => {
    const sql = createStatements(NEW_ENTRIES, {}, 'db').map((s) => s.sql);
    expect(sql).toEqual([
      'CREATE TABLE IF NOT EXISTS author_rollup (author_id UInt64, n UInt64) ENGINE = SummingMergeTree ORDER BY author_id',
      'CREATE MATERIALIZED VIEW IF NOT EXISTS author_rollup_mv TO author_rollup AS SELECT author_id, count() AS n FROM post_events GROUP BY author_id',
    ]);
  });

  it('on a cluster: a local table ON CLUSTER, a Distributed table under the name, the view on the local tables', () => {
    const statements = createStatements(NEW_ENTRIES, { cluster: 'c1' }, 'db');
    expect(statements.map((s) => s.sql)).toEqual([
      'CREATE TABLE IF NOT EXISTS author_rollup_local ON CLUSTER c1 (author_id UInt64, n UInt64) ENGINE = SummingMergeTree ORDER BY author_id',
      'CREATE TABLE IF NOT EXISTS author_rollup ON CLUSTER c1 AS author_rollup_local ' +
        'ENGINE = Distributed({cluster:String}, {database:String}, {local:String}, cityHash64(author_id))',
      'CREATE MATERIALIZED VIEW IF NOT EXISTS author_rollup_mv ON CLUSTER c1 TO author_rollup_local AS SELECT author_id, count() AS n FROM post_events_local GROUP BY author_id',
    ]);
    expect(statements[1]!.params).toEqual({ cluster: 'c1', database: 'db', local: 'author_rollup_local' });
    expect(createStatements(NEW_ENTRIES, { cluster: 'c1', onCluster: false }, 'db')[0]!.sql).not.toContain(
      'ON CLUSTER',
    );
    expect(modifyViewQuery(NEW_ENTRIES[1] as Extract<Migration, { kind: 'view' }>, { cluster: 'c1' })).toBe(
      'ALTER TABLE author_rollup_mv ON CLUSTER c1 MODIFY QUERY SELECT author_id, count() AS n FROM post_events_local GROUP BY author_id',
    );
  });

  it('every view of MIGRATIONS reads and writes only local tables on a cluster', () => {
    const tables = MIGRATIONS.filter((m) => m.kind === 'table').map((m) => m.name);
    for (const s of createStatements(MIGRATIONS, { cluster: 'c1' }, 'db')) {
      if (!s.sql.startsWith('CREATE MATERIALIZED VIEW')) continue;
      for (const t of tables) expect(s.sql).not.toMatch(new RegExp(`\\b${t}\\b(?!_local)`));
    }
  });
});
