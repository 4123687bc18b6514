import { ClickHouseError } from '@clickhouse/client';
import { describe, expect, it } from 'vitest';
import { explainMissingTable, MissingTableError } from '../../src/clickhouse/missing-tables.js';

const unknownTable = (message: string): ClickHouseError =>
  new ClickHouseError({ message, code: '60', type: 'UNKNOWN_TABLE' });

describe('explainMissingTable', () => {
  it('names the table, the database and migrate, keeping code and type', () => {
    const err = explainMissingTable(
      unknownTable(
        "Unknown table expression identifier 'post_events' in scope SELECT count() FROM post_events. ",
      ),
      'analytics',
    );
    expect(err).toBeInstanceOf(MissingTableError);
    expect(err).toBeInstanceOf(ClickHouseError);
    expect(err).toMatchObject({
      name: 'MissingTableError',
      code: '60',
      type: 'UNKNOWN_TABLE',
      table: 'post_events',
    });
    expect((err as Error).message).toMatch(
      /^table analytics\.post_events does not exist: run `cache-refresher migrate` with this CLICKHOUSE_DATABASE to create it/,
    );
  });

  it("reads older servers' wording, which already qualifies the table", () => {
    const err = explainMissingTable(unknownTable('Table default.posts does not exist. '), 'default');
    expect((err as Error).message).toMatch(
      /^table default\.posts does not exist: run `cache-refresher migrate`/,
    );
  });

  it('leaves every other error as it is', () => {
    const other = new ClickHouseError({
      message: 'Memory limit',
      code: '241',
      type: 'MEMORY_LIMIT_EXCEEDED',
    });
    expect(explainMissingTable(other, 'default')).toBe(other);
    const plain = new Error("Unknown table expression identifier 'x'");
    expect(explainMissingTable(plain, 'default')).toBe(plain);
  });
});
