import type { Logger } from 'pino';
import { App } from './app.js';
import { ConfigError, readConfig, type Config, type Env } from './config.js';
import { logConfigWarnings } from './config-warnings.js';
import { checkJobsFileAtStart } from './declarative/deploy-check.js';
import { builtInEntries } from './jobs/built-in.js';
import type { RefreshJob } from './jobs/define.js';
import {
  describeOrigin,
  registerJobs,
  type JobEntry,
  type JobSource,
  type RegisteredJob,
} from './jobs/registration.js';
import { JOB_SOURCES } from './jobs/sources.js';
import { createLogger } from './observability/logger.js';
import { createRedactor } from './observability/redact.js';

/** The configuration and the registered jobs of one sidecar, checked before anything connects. */
export interface PreparedSidecar {
  readonly config: Config;
  readonly jobs: readonly RegisteredJob[];
}

export interface PrepareOptions {
  env: Env;
  /** A program's jobs, registered after the built-ins and before `JOB_MODULES` / `JOBS_FILE` jobs. */
  jobs?: readonly RefreshJob[] | undefined;
  /** Base of relative `JOB_MODULES` / `JOBS_FILE` paths. Default `process.cwd()`. */
  cwd?: string | undefined;
  /** The origins the environment may name. Default: every one (`JOB_SOURCES`). */
  sources?: readonly JobSource[] | undefined;
}

/**
 * Reads the configuration, loads the jobs of every origin and reads each job's settings, collecting
 * every problem on the way: what `run`, `once`, `jobs` and `createSidecar` all do before connecting.
 *
 * @throws ConfigError listing every bad variable, every module that failed to load and every
 *   duplicate job id (the CLI prints it and exits 2).
 */
export async function prepareSidecar(opts: PrepareOptions): Promise<PreparedSidecar> {
  const { config, problems } = readConfig(opts.env);
  const lines: string[] = [];
  const entries: JobEntry[] = [
    ...builtInEntries(config),
    ...(opts.jobs ?? []).map((job) => ({ job, origin: { variable: 'jobs', where: 'createSidecar' } })),
  ];
  const cwd = opts.cwd ?? process.cwd();
  for (const source of opts.sources ?? JOB_SOURCES) {
    const loaded = await source(opts.env, { cwd });
    entries.push(...loaded.entries);
    lines.push(...loaded.problems);
  }
  const registered = registerJobs(opts.env, entries, config.cronTimezone);
  problems.push(...registered.problems);
  if (problems.length > 0 || lines.length > 0) throw new ConfigError(problems, lines);
  return { config, jobs: registered.jobs };
}

export interface SidecarOptions {
  /** The environment to read (every variable of CONTRACT §9 and §11), usually `process.env`. */
  env: Env;
  /** Jobs made with `defineJob`, run beside the built-in jobs and any `JOB_MODULES` / `JOBS_FILE` jobs. */
  jobs?: readonly RefreshJob[];
  /** Base of relative `JOB_MODULES` / `JOBS_FILE` paths. Default `process.cwd()`. */
  cwd?: string;
  /** A pino logger. Default: JSON lines on stderr at `LOG_LEVEL`. */
  log?: Logger;
}

/** One registered job as a program sees it. */
export interface SidecarJob {
  readonly id: string;
  /** Where it came from: `built-in`, `jobs createSidecar`, `JOB_MODULES ./x.mjs`, … */
  readonly origin: string;
  readonly enabled: boolean;
  /** Seconds between runs after the environment's overrides (for a cron: between its next two fires). */
  readonly intervalSec: number;
  /** The cron pattern in force, if the job runs on one. */
  readonly cron: string | undefined;
}

/** The process `cache-refresher run` starts, held by a program. */
export interface Sidecar {
  /**
   * Checks the configuration and loads every job (throws `ConfigError` listing every problem, before
   * connecting), checks `JOBS_FILE`'s queries against ClickHouse (a query that does not compile or
   * lacks a column its output names is a `ConfigError` too; an unreachable ClickHouse is only logged),
   * then opens the DLQ spool, serves HTTP (`HTTP_HOST`:`HTTP_PORT`) and starts scheduling.
   * A dependency that is down does not fail it: runs fail and are dead-lettered instead.
   * @throws ConfigError, or the error of binding the HTTP port / locking the spool.
   */
  start(): Promise<void>;
  /**
   * Stops scheduling, lets in-flight runs finish for up to `graceMs` (default `SHUTDOWN_GRACE_SEC`),
   * aborts the rest, then closes every client. Idempotent.
   */
  stop(graceMs?: number): Promise<void>;
  /** The bound HTTP port once started (useful with `HTTP_PORT=0`). */
  readonly httpPort: number | undefined;
  /** The registered jobs once started, in registration order. */
  readonly jobs: readonly SidecarJob[];
}

/**
 * Builds the sidecar `cache-refresher run` runs: the built-in jobs plus `jobs`, plus whatever
 * `JOB_MODULES` and `JOBS_FILE` name in `env`, with every guarantee of the contract (leader lease and
 * fenced writes, semaphore, timeouts, retries, backoff, catch-up, dead-letter records, metrics, admin
 * API). Nothing happens until `start()`.
 *
 * @example
 *   const sidecar = createSidecar({ env: process.env, jobs: [topAuthors] });
 *   await sidecar.start();
 *   process.once('SIGTERM', () => void sidecar.stop());
 */
export function createSidecar(opts: SidecarOptions): Sidecar {
  let app: App | undefined;
  let starting: Promise<void> | undefined;
  let stopped = false;
  const start = async (): Promise<void> => {
    const prepared = await prepareSidecar(opts);
    if (stopped) return;
    // Its own logger redacts the configured secrets, as the command line's does; an embedder's is its own.
    const log =
      opts.log ??
      createLogger(prepared.config.logLevel, undefined, createRedactor(prepared.config.security.secrets));
    logConfigWarnings(log, opts.env, prepared.config, { jobs: prepared.jobs });
    // The deploy-time check of JOBS_FILE's queries, as `run` does it: a wrong query fails the start.
    const problems = await checkJobsFileAtStart(prepared.config, log, opts.cwd);
    if (problems.length > 0) throw new ConfigError([], problems);
    const started = new App({ config: prepared.config, log, jobs: prepared.jobs });
    app = started;
    try {
      await started.start();
    } catch (err) {
      await started.shutdown(0);
      throw err;
    }
  };
  return {
    start: () => (starting ??= start()),
    async stop(graceMs?: number) {
      stopped = true;
      // A failed start already rejected the caller's start(); stopping must still close what it opened.
      await starting?.catch((err: unknown) => err);
      if (app) await app.shutdown(graceMs ?? app.opts.config.shutdownGraceSec * 1000);
    },
    get httpPort() {
      return app?.httpPort;
    },
    get jobs() {
      return (app?.jobs ?? []).map(({ job, settings, origin }) => ({
        id: job.id,
        origin: describeOrigin(origin),
        enabled: settings.enabled,
        intervalSec: settings.intervalSec,
        cron: settings.cron,
      }));
    },
  };
}
