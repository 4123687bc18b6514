import { Cron } from 'croner';
import { isMap, isScalar, isSeq, LineCounter, parseDocument, type Node } from 'yaml';
import { parseOutput } from './parse-output.js';
import type { JobsFileProblem } from './problems.js';
import { queryPlaceholders, type ParamValue } from './query-params.js';
import type { DeclarativeJobSpec } from './spec.js';
import { Fields, FileContext } from './yaml-fields.js';

/**
 * Parses and validates a jobs file (CONTRACT §11) without connecting to anything: YAML syntax, known
 * fields only, types and ranges, ids (format, unique, not a built-in), schedules (croner's own check),
 * query parameters, key templates. Whether the query's columns exist is a question for the server,
 * asked later by the deploy-time check (column-check.ts).
 */

export interface ParseOptions {
  /** Ids the file may not take (the built-in jobs'). */
  reservedIds: readonly string[];
  /** CRON_TIMEZONE, for validating `cron`. */
  cronTimezone: string;
}

export interface ParsedJobsFile {
  jobs: DeclarativeJobSpec[];
  problems: JobsFileProblem[];
}

const JOB_ID = /^[a-z0-9][a-z0-9-]*$/;
const PARAM_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
/** The same bounds as the per-job environment variables (config.ts). */
const MAX_SECONDS = 366 * 24 * 3600;

const JOB_FIELDS = [
  'id',
  'interval_sec',
  'cron',
  'timeout_sec',
  'ttl_sec',
  'priority',
  'retries',
  'params',
  'query',
  'output',
] as const;
export function parseJobsFile(text: string, file: string, opts: ParseOptions): ParsedJobsFile {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, uniqueKeys: true, prettyErrors: true });
  const problems: JobsFileProblem[] = [];
  if (doc.errors.length > 0) {
    for (const e of doc.errors) {
      // prettyErrors appends " at line L, column C:" and a code frame; the line is ours to print.
      const message = e.message.split(/ at line \d+, column \d+/)[0] ?? e.message;
      problems.push({ file, line: e.linePos?.[0].line ?? 1, field: 'yaml', message });
    }
    return { jobs: [], problems };
  }
  const ctx = new FileContext(file, lineCounter, problems);
  const root = doc.contents;
  if (!isMap(root)) {
    ctx.problem(root, 'jobs', 'the file must be a mapping with a "jobs" list');
    return { jobs: [], problems };
  }
  ctx.unknownFields(root, ['jobs'], '');
  const list = root.get('jobs', true);
  if (!isSeq(list)) {
    ctx.problem(list ?? root, 'jobs', 'expected a list of jobs');
    return { jobs: [], problems };
  }
  const jobs: DeclarativeJobSpec[] = [];
  const seen = new Map<string, number>();
  list.items.forEach((item, index) => {
    const job = parseJob(ctx, item as Node | null, index, opts);
    if (!job) return;
    const first = seen.get(job.id);
    if (first !== undefined) {
      problems.push({
        file,
        line: job.lines.job,
        field: `${job.id}: id`,
        message: `duplicate of the job on line ${first}`,
      });
      return;
    }
    seen.set(job.id, job.lines.job);
    jobs.push(job);
  });
  // In file order (stable: problems of one line keep the order they were found in).
  problems.sort((a, b) => a.line - b.line);
  return { jobs: problems.length > 0 ? [] : jobs, problems };
}

function parseJob(
  ctx: FileContext,
  item: Node | null,
  index: number,
  opts: ParseOptions,
): DeclarativeJobSpec | undefined {
  if (!isMap(item)) {
    ctx.problem(item, `jobs[${index}]`, 'expected a mapping (a job)');
    return;
  }
  const before = ctx.problems.length;
  const idNode = item.get('id', true) as Node | undefined;
  const rawId = isScalar(idNode) && typeof idNode.value === 'string' ? idNode.value : undefined;
  // Problems name the job by its id once it has a usable one, else by its position.
  const label = rawId !== undefined && JOB_ID.test(rawId) ? `${rawId}: ` : `jobs[${index}]: `;
  const f = new Fields(ctx, item, label);
  ctx.unknownFields(item, JOB_FIELDS, label);

  const id = f.string('id', true);
  if (id !== undefined) {
    if (!JOB_ID.test(id)) f.fail('id', `"${id}" must match [a-z0-9][a-z0-9-]*`);
    else if (opts.reservedIds.includes(id)) f.fail('id', `"${id}" is a built-in job id`);
  }

  const intervalSec = f.int('interval_sec', 1, MAX_SECONDS);
  const cron = f.string('cron', false);
  if (f.has('interval_sec') === f.has('cron')) {
    ctx.problem(item, `${label}interval_sec`, 'exactly one of interval_sec and cron is required');
  }
  if (cron !== undefined) checkCron(f, cron, opts.cronTimezone);
  const timeoutSec = f.int('timeout_sec', 1, MAX_SECONDS);
  const ttlSec = f.int('ttl_sec', 1, 3 * MAX_SECONDS);
  const priority = f.int('priority', -1000, 1000);
  const retries = f.int('retries', 0, 10);
  const params = parseParams(ctx, f);
  const query = f
    .string('query', true)
    ?.trim()
    .replace(/;+\s*$/, '');
  if (query !== undefined && params !== undefined) checkPlaceholders(f, query, params);
  const output = parseOutput(ctx, f);

  if (ctx.problems.length > before || id === undefined || query === undefined || !output || !params) {
    return undefined;
  }
  return {
    id,
    intervalSec,
    cron,
    timeoutSec,
    ttlSec,
    priority,
    retries,
    params,
    query,
    output: output.spec,
    file: ctx.file,
    lines: { job: ctx.lineOf(item), query: f.line('query'), ...output.lines },
  };
}

function checkCron(f: Fields, pattern: string, timezone: string): void {
  try {
    if (new Cron(pattern, { timezone, paused: true }).nextRun() === null) {
      f.fail('cron', 'the pattern never fires in the future');
    }
  } catch (err) {
    f.fail('cron', `not a croner pattern: ${err instanceof Error ? err.message : String(err)}`);
  }
}

function parseParams(ctx: FileContext, f: Fields): Record<string, ParamValue> | undefined {
  const node = f.node('params');
  if (node === undefined) return {};
  if (!isMap(node)) {
    f.fail('params', 'expected a mapping of parameter names to constants');
    return;
  }
  const params: Record<string, ParamValue> = {};
  let ok = true;
  for (const pair of node.items) {
    const name = isScalar(pair.key) ? String(pair.key.value) : '';
    const field = `${f.label}params.${name}`;
    const value = scalarOrList(pair.value as Node | null);
    if (!PARAM_NAME.test(name) || name === 'now') {
      ok = false;
      ctx.problem(
        pair.key as Node,
        field,
        name === 'now' ? '"now" is reserved for the run\'s start' : 'not a parameter name',
      );
    } else if (value === undefined) {
      ok = false;
      ctx.problem(pair.value as Node, field, 'expected a string, number, boolean or a list of them');
    } else {
      params[name] = value;
    }
  }
  return ok ? params : undefined;
}

function scalarOrList(node: Node | null): ParamValue | undefined {
  const scalar = (n: unknown): string | number | boolean | undefined => {
    if (!isScalar(n)) return undefined;
    const v = n.value;
    return typeof v === 'string' || typeof v === 'boolean' || (typeof v === 'number' && Number.isFinite(v))
      ? v
      : undefined;
  };
  if (isSeq(node)) {
    const values = node.items.map(scalar);
    return values.every((v) => v !== undefined) ? values : undefined;
  }
  return scalar(node);
}

/** Every `{name:Type}` must be `now` or a param, and every param must be used (an unused one is a typo). */
function checkPlaceholders(f: Fields, query: string, params: Readonly<Record<string, ParamValue>>): void {
  const used = queryPlaceholders(query);
  for (const p of used) {
    if (p.name !== 'now' && !(p.name in params)) {
      f.fail('query', `{${p.name}:${p.type}} is neither {now:UInt32} nor a key of params`);
    }
  }
  for (const name of Object.keys(params)) {
    if (!used.some((p) => p.name === name)) f.fail('params', `"${name}" is not used by the query`);
  }
}
