import type { CacheEntry, HashEntry, ScoredMember } from '../cache/writer.js';
import { renderKey, scalarText } from './key-template.js';
import type { OutputSpec } from './spec.js';

/**
 * Turns result rows (JSONEachRow objects, 64-bit integers as decimal strings) into what each output
 * type writes. Pure: a row that cannot be written (a NULL in its key, member or score) yields
 * undefined and is counted by the caller as bad data.
 */

export type Row = Readonly<Record<string, unknown>>;

/** A column value as a Redis string: text as is, anything else (numbers, arrays, maps) as JSON. */
export function valueText(value: unknown): string {
  return typeof value === 'string' ? value : JSON.stringify(value);
}

/** The row without the columns its key was made from. */
function withoutKeyColumns(row: Row, keyColumns: readonly string[]): Record<string, unknown> {
  const rest: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(row)) if (!keyColumns.includes(name)) rest[name] = value;
  return rest;
}

export function perRowEntry(
  output: Extract<OutputSpec, { type: 'per_row' }>,
  prefix: string,
  row: Row,
): CacheEntry | undefined {
  const key = renderKey(output.key, prefix, row);
  if (key === undefined) return undefined;
  if (output.value === undefined) {
    return { key, value: JSON.stringify(withoutKeyColumns(row, output.key.columns)) };
  }
  const value = row[output.value];
  return value === null || value === undefined ? undefined : { key, value: valueText(value) };
}

/** A NULL column becomes an absent field, which is how a hash reader sees "no value". */
export function hashEntry(
  output: Extract<OutputSpec, { type: 'hash' }>,
  prefix: string,
  row: Row,
): HashEntry | undefined {
  const key = renderKey(output.key, prefix, row);
  if (key === undefined) return undefined;
  const fields: [string, string][] = [];
  for (const [name, value] of Object.entries(withoutKeyColumns(row, output.key.columns))) {
    if (value !== null && value !== undefined) fields.push([name, valueText(value)]);
  }
  return { key, fields };
}

export function scoredMember(
  output: Extract<OutputSpec, { type: 'sorted_set' }>,
  row: Row,
): ScoredMember | undefined {
  const member = scalarText(row[output.member]);
  const raw = row[output.score];
  const score = typeof raw === 'number' ? raw : typeof raw === 'string' && raw !== '' ? Number(raw) : NaN;
  if (member === undefined || !Number.isFinite(score)) return undefined;
  return { member, score };
}
