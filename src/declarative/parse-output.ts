import { isMap } from 'yaml';
import { parseKeyTemplate, type KeyTemplate } from './key-template.js';
import { OUTPUT_TYPES, type OutputSpec, type OutputType } from './spec.js';
import { Fields, type FileContext } from './yaml-fields.js';

/** The `output` of one job: its type, key template and the columns each type needs (CONTRACT §11). */

const OUTPUT_FIELDS: Readonly<Record<OutputType, readonly string[]>> = {
  string: ['type', 'key'],
  per_row: ['type', 'key', 'value'],
  hash: ['type', 'key'],
  sorted_set: ['type', 'key', 'member', 'score'],
};

export function parseOutput(
  ctx: FileContext,
  job: Fields,
): { spec: OutputSpec; lines: { key: number; member?: number; score?: number; value?: number } } | undefined {
  const node = job.node('output');
  if (node === undefined) {
    job.fail('output', 'required field is missing');
    return;
  }
  if (!isMap(node)) {
    job.fail('output', 'expected a mapping with type and key');
    return;
  }
  const f = new Fields(ctx, node, `${job.label}output.`);
  const type = f.string('type', true);
  if (type === undefined) return undefined;
  if (!(OUTPUT_TYPES as readonly string[]).includes(type)) {
    f.fail('type', `"${type}" is not one of ${OUTPUT_TYPES.join(', ')}`);
    return;
  }
  const outputType = type as OutputType;
  ctx.unknownFields(node, OUTPUT_FIELDS[outputType], f.label);
  const key = parseKey(f, outputType);
  const lines = { key: f.line('key') };
  if (outputType === 'sorted_set') {
    const member = f.string('member', true);
    const score = f.string('score', true);
    if (!key || member === undefined || score === undefined) return undefined;
    return {
      spec: { type: 'sorted_set', key, member, score },
      lines: { ...lines, member: f.line('member'), score: f.line('score') },
    };
  }
  if (!key) return undefined;
  if (outputType === 'per_row') {
    const value = f.string('value', false);
    const spec: OutputSpec = { type: 'per_row', key, value };
    return { spec, lines: value === undefined ? lines : { ...lines, value: f.line('value') } };
  }
  return { spec: { type: outputType, key }, lines };
}

/** One-key outputs must not name columns; per-row outputs must, or every row would hit one key. */
function parseKey(f: Fields, type: OutputType): KeyTemplate | undefined {
  const source = f.string('key', true);
  if (source === undefined) return undefined;
  const template = parseKeyTemplate(source);
  if ('error' in template) {
    f.fail('key', template.error);
    return;
  }
  const perRow = type === 'per_row' || type === 'hash';
  if (perRow && template.columns.length === 0) {
    f.fail('key', `a ${type} key must name at least one {column}, or every row writes the same key`);
    return;
  }
  if (!perRow && template.columns.length > 0) {
    f.fail('key', `a ${type} output is one key: it cannot name a {column}`);
    return;
  }
  return template;
}
