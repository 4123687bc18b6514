import { existsSync } from 'node:fs';
import { register } from 'node:module';
import { isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { formatProblem, type ConfigProblem } from '../config.js';
import { isRefreshJob, type RefreshJob } from './define.js';
import { resolveFromSpecifier } from './library-fallback-hook.js';
import type { JobEntry, JobSource } from './registration.js';

/**
 * `JOB_MODULES` (CONTRACT §11): a comma-separated list of module paths or package names whose default
 * export is a job or an array of jobs made with `defineJob`.
 *
 * How each entry is found:
 * - an absolute path, or one starting with `./` or `../`: that file (relative to the working directory);
 * - a `file:` URL: that file;
 * - anything else is a package name (`@team/jobs`, `team-jobs/top-authors`), resolved from the working
 *   directory's `node_modules` first, then from where this library is installed.
 *
 * A module imports the library as `cache-refresher`. Node resolves that name by walking up from the
 * module's own directory through `node_modules` folders (or, inside the library's own folder, by
 * package self-reference), so a module mounted elsewhere (`/jobs/x.mjs` in a container) would find
 * nothing: before loading job modules a resolve hook is registered that, only when Node's own
 * resolution fails, answers `cache-refresher` with the running library. A module that ships its own
 * copy keeps it.
 */
export const jobModulesSource: JobSource = async (env, { cwd }) => {
  const list = (env.JOB_MODULES ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  if (list.length === 0) return { entries: [], problems: [] };
  const hooked = registerResolveHook();
  const entries: JobEntry[] = [];
  const problems: ConfigProblem[] = [];
  for (const spec of list) {
    const loaded = await loadJobModule(spec, cwd, hooked);
    if ('problem' in loaded) problems.push({ name: 'JOB_MODULES', value: spec, expected: loaded.problem });
    else
      entries.push(...loaded.jobs.map((job) => ({ job, origin: { variable: 'JOB_MODULES', where: spec } })));
  }
  return { entries, problems: problems.map((p) => formatProblem(p).trimStart()) };
};

const EXPECTED = 'a module whose default export is a job or an array of jobs made with defineJob';

async function loadJobModule(
  spec: string,
  cwd: string,
  hooked: boolean,
): Promise<{ jobs: RefreshJob[] } | { problem: string }> {
  let mod: { default?: unknown } | undefined;
  let firstError: unknown;
  for (const url of moduleCandidates(spec, cwd, hooked)) {
    try {
      mod = (await import(url)) as { default?: unknown };
      break;
    } catch (err) {
      firstError ??= err;
      // Only "not found here" moves on to the next place; a module that threw is reported as is.
      if ((err as { code?: unknown }).code !== 'ERR_MODULE_NOT_FOUND') break;
    }
  }
  if (mod === undefined) return { problem: `${EXPECTED} (importing it threw ${describeError(firstError)})` };
  const jobs = jobsOf(mod.default);
  return jobs ? { jobs } : { problem: `${EXPECTED} (its default export is ${describeValue(mod.default)})` };
}

/** The jobs a default export holds, or undefined when it is not a job or a non-empty array of jobs. */
function jobsOf(exported: unknown): RefreshJob[] | undefined {
  const list: unknown[] = Array.isArray(exported) ? exported : [exported];
  if (list.length === 0 || !list.every(isRefreshJob)) return undefined;
  return list;
}

/**
 * What to `import()` for a JOB_MODULES entry, in order (rules above). A package name is first resolved
 * by Node's own ES module resolution as if imported from a file in `cwd` (through the resolve hook:
 * `import.meta.resolve` takes no parent without a flag on Node 20), then from this library's place.
 */
export function moduleCandidates(spec: string, cwd: string, hooked: boolean): string[] {
  if (spec.startsWith('file:')) return [spec];
  if (isAbsolute(spec) || spec.startsWith('./') || spec.startsWith('../') || spec === '.' || spec === '..')
    return [pathToFileURL(resolve(cwd, spec)).href];
  const fromCwd = resolveFromSpecifier(spec, pathToFileURL(join(cwd, 'job-modules.js')).href);
  return hooked ? [fromCwd, spec] : [spec];
}

// Hooks are process-wide once registered; this flag mirrors that fact so a second load adds none.
let hookRegistered = false;

/**
 * Registers the resolve hook (once per process; see the comment at the top). Only the built library
 * has it as JavaScript: run from TypeScript sources (the unit tests), Node 20 cannot load it, and job
 * modules then resolve by Node's rules alone. Returns whether the hook is in place.
 */
function registerResolveHook(): boolean {
  if (hookRegistered) return true;
  const hook = new URL('./library-fallback-hook.js', import.meta.url);
  if (!existsSync(fileURLToPath(hook))) return false;
  register(hook, { data: { libraryUrl: new URL('../index.js', import.meta.url).href } });
  hookRegistered = true;
  return true;
}

function describeError(err: unknown): string {
  if (err instanceof Error) return `${err.name}: ${err.message.split('\n')[0] ?? ''}`;
  return String(err);
}

function describeValue(v: unknown): string {
  if (v === undefined) return 'missing';
  if (v === null) return 'null';
  if (Array.isArray(v))
    return v.length === 0 ? 'an empty array' : 'an array holding something that is not a job';
  if (typeof v === 'object') return 'an object not made with defineJob';
  return `a ${typeof v}`;
}
