#!/usr/bin/env node
// `npm run demo`: the whole sidecar on this machine, no Docker. Starts the local servers
// (scripts/services.sh up), builds, migrates and seeds a `demo` ClickHouse database, runs
// `node dist/cli.js run` with short intervals for every job (the built-in ones, the example job
// module examples/jobs/author-stats.mjs loaded through JOB_MODULES, and the declarative jobs of
// examples/jobs.yaml loaded through JOBS_FILE) and shows a live status table from GET /jobs until
// Ctrl-C, then stops the runner cleanly (SIGTERM, drained runs, exit 0).
//
//   npm run demo                       live table until Ctrl-C
//   npm run demo -- --check            exit 0 once every enabled job has succeeded, 1 if not within the
//                                      deadline (60 s from the runner's start; --timeout SEC to change)
//   npm run demo -- --skip-build       reuse dist/ (tests: do not rebuild under other running tests)
//   npm run demo -- --check --run-for 60
//                                      as --check, but keep the runner up until 60 s after its start
//                                      (all five jobs must still have succeeded by the deadline)
//
// Environment: JOBS_FILE (examples/jobs.yaml), DEMO_DATABASE (demo), DEMO_PREFIX (demo: Redis key prefix), DEMO_HTTP_PORT (9464, or a
// free port when 9464 is taken), DEMO_USERS / DEMO_DAYS / DEMO_EVENTS (5000 / 2 / 200000).
// The runner's own logs go to data/demo/runner.log (DEMO_LOG_FILE to change).
import { spawn } from 'node:child_process';
import { createWriteStream, readFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { createServer } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
// Every job the runner lists must succeed; these are the ones it must list at least.
const JOBS = [
  'trending-1h',
  'trending-24h',
  'trending-7d',
  'suggested-users',
  'feed-warmer',
  'author-stats',
  'top-authors',
  'post-counters',
  'user-activity',
  'events-last-hour',
];
const JOB_MODULES = './examples/jobs/author-stats.mjs';
const INTERVALS = {
  TRENDING_1H_INTERVAL_SEC: '5',
  TRENDING_24H_INTERVAL_SEC: '10',
  TRENDING_7D_INTERVAL_SEC: '15',
  SUGGESTED_USERS_INTERVAL_SEC: '15',
  FEED_WARMER_INTERVAL_SEC: '5',
  AUTHOR_STATS_INTERVAL_SEC: '10',
  // examples/jobs.yaml's jobs: the environment overrides a declarative job's file settings too.
  TOP_AUTHORS_INTERVAL_SEC: '5',
  POST_COUNTERS_INTERVAL_SEC: '10',
  USER_ACTIVITY_INTERVAL_SEC: '15',
  // Its file's 60 s timeout would exceed the demo's interval (a start-up warning): keep them in step.
  USER_ACTIVITY_TIMEOUT_SEC: '15',
  EVENTS_LAST_HOUR_INTERVAL_SEC: '5',
};

const { values: opts } = parseArgs({
  options: {
    check: { type: 'boolean', default: false },
    timeout: { type: 'string', default: '60' },
    'run-for': { type: 'string', default: '0' },
    'skip-build': { type: 'boolean', default: false },
  },
});
const checkTimeoutSec = Number(opts.timeout);
if (!Number.isFinite(checkTimeoutSec) || checkTimeoutSec <= 0) {
  process.stderr.write(`demo: --timeout must be a positive number of seconds, got ${opts.timeout}\n`);
  process.exit(2);
}

const runForSec = Number(opts['run-for']);
if (!Number.isFinite(runForSec) || runForSec < 0) {
  process.stderr.write(`demo: --run-for must be a number of seconds >= 0, got ${opts['run-for']}\n`);
  process.exit(2);
}

const t0 = Date.now();
const say = (msg) => process.stdout.write(`demo: ${msg}\n`);
const since = (t) => `${((Date.now() - t) / 1000).toFixed(1)} s`;

/** Runs a command to completion with inherited output; rejects on a non-zero exit. */
function step(label, cmd, args, env = process.env) {
  say(`${label}: ${[cmd, ...args].join(' ')}`);
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: ROOT, env, stdio: ['ignore', 'inherit', 'inherit'] });
    child.on('error', (err) => {
      reject(new Error(`${label}: cannot run ${cmd}: ${err.message}`, { cause: err }));
    });
    child.on('exit', (code, signal) => {
      if (code === 0) resolve();
      else reject(new Error(`${label} failed (${signal ?? `exit code ${code}`})`));
    });
  });
}

/** The `export NAME=value` lines scripts/services.sh writes. */
function servicesEnv() {
  const env = {};
  for (const line of readFileSync(path.join(ROOT, '.services', 'env'), 'utf8').split('\n')) {
    const m = /^export ([A-Z_]+)=(.*)$/.exec(line.trim());
    if (m) env[m[1]] = m[2].replace(/^'(.*)'$/, '$1');
  }
  return env;
}

function listenable(port) {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => {
      resolve(undefined);
    });
    server.listen(port, '127.0.0.1', () => {
      const bound = server.address().port;
      server.close(() => {
        resolve(bound);
      });
    });
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ---- formatting ------------------------------------------------------------------------------------
function ago(iso, now) {
  if (!iso) return '-';
  const s = Math.round((now - Date.parse(iso)) / 1000);
  return s < 1 ? 'just now' : `${s}s ago`;
}
function inSec(iso, now) {
  if (!iso) return '-';
  const s = Math.round((Date.parse(iso) - now) / 1000);
  return s <= 0 ? 'now' : `in ${s}s`;
}
function table(rows) {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => String(r[i]).length)));
  return rows
    .map((r) =>
      r
        .map((c, i) => String(c).padEnd(widths[i]))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}
function render(jobs, details, meta) {
  const now = Date.now();
  const rows = [
    ['JOB', 'SCHEDULE', 'STATE', 'LAST RUN', 'OUTCOME', 'ITEMS', 'DURATION', 'FAILS', 'NEXT RUN'],
  ];
  for (const j of jobs) {
    const last = details
      .get(j.name)
      ?.recent_runs?.reduce((a, r) => (a === undefined || r.started_at > a.started_at ? r : a), undefined);
    const state = !j.enabled ? 'disabled' : j.paused ? 'paused' : j.running ? 'running' : 'idle';
    rows.push([
      j.name,
      j.schedule,
      state,
      ago(j.last_run_at, now),
      j.last_outcome ?? '-',
      last?.items ?? '-',
      last ? `${last.duration_ms} ms` : '-',
      j.consecutive_failures,
      j.backoff_until ? `backoff ${inSec(j.backoff_until, now)}` : inSec(j.next_run_at, now),
    ]);
  }
  const green = jobs.filter((j) => meta.succeeded.has(j.name)).length;
  return (
    `cache-refresher demo  ${new Date(now).toISOString()}  ${meta.base}  ` +
    `(${green}/${jobs.length} jobs succeeded; runner up ${since(meta.runnerStart)})\n\n` +
    `${table(rows)}\n`
  );
}

// ---- main ------------------------------------------------------------------------------------------
let runner;
let runnerExited;
let stopping;

/** SIGTERM once, wait for the drained exit; SIGKILL only if it overruns the grace period. */
function stopRunner() {
  stopping ??= (async () => {
    if (!runner || runner.exitCode !== null || runner.signalCode !== null) return runner?.exitCode ?? 0;
    say('stopping the runner (SIGTERM, draining in-flight runs)');
    runner.kill('SIGTERM');
    const kill = setTimeout(() => {
      say('runner did not stop within 45 s: SIGKILL');
      runner.kill('SIGKILL');
    }, 45_000);
    const { code, signal } = await runnerExited;
    clearTimeout(kill);
    say(`runner exited (${signal ?? `code ${code}`})`);
    return code ?? 1;
  })();
  return stopping;
}

let interrupted = false;
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => {
    if (interrupted) return;
    interrupted = true;
    process.stdout.write('\n');
    stopRunner().then(
      (code) => process.exit(code === 0 ? 0 : 1),
      (err) => {
        process.stderr.write(`demo: ${err.stack ?? err}\n`);
        process.exit(1);
      },
    );
  });
}

async function main() {
  await step('servers', 'bash', [path.join(ROOT, 'scripts', 'services.sh'), 'up']);
  if (!opts['skip-build']) await step('build', 'npm', ['run', 'build', '--silent']);

  const port = (await listenable(Number(process.env.DEMO_HTTP_PORT ?? 9464))) ?? (await listenable(0));
  const base = `http://127.0.0.1:${port}`;
  const dataDir = path.join(ROOT, 'data', 'demo');
  await mkdir(dataDir, { recursive: true });
  const env = {
    ...process.env,
    ...servicesEnv(),
    CLICKHOUSE_DATABASE: process.env.DEMO_DATABASE ?? 'demo',
    CACHE_KEY_PREFIX: process.env.DEMO_PREFIX ?? 'demo',
    DLQ_TOPIC: `${process.env.DEMO_PREFIX ?? 'demo'}-dlq`,
    DLQ_SPOOL_DIR: path.join(dataDir, 'dlq'),
    LEADER_ELECTION: 'false',
    HTTP_HOST: '127.0.0.1',
    HTTP_PORT: String(port),
    LOG_LEVEL: process.env.LOG_LEVEL ?? 'info',
    JOB_MODULES,
    JOBS_FILE: process.env.JOBS_FILE ?? path.join(ROOT, 'examples', 'jobs.yaml'),
    ...INTERVALS,
  };
  const cli = path.join(ROOT, 'dist', 'cli.js');
  await step('migrate', process.execPath, [cli, 'migrate'], env);
  await step(
    'seed',
    process.execPath,
    [
      cli,
      'seed',
      '--replace',
      '--users',
      process.env.DEMO_USERS ?? '5000',
      '--days',
      process.env.DEMO_DAYS ?? '2',
      '--events',
      process.env.DEMO_EVENTS ?? '200000',
    ],
    env,
  );
  if (interrupted) return;

  const logFile = process.env.DEMO_LOG_FILE
    ? path.resolve(process.env.DEMO_LOG_FILE)
    : path.join(dataDir, 'runner.log');
  const log = createWriteStream(logFile, { flags: 'a' });
  say(`runner: node dist/cli.js run on ${base} (logs: ${path.relative(ROOT, logFile)})`);
  const runnerStart = Date.now();
  // Its own process group: a terminal's Ctrl-C reaches only this script, which then sends the single
  // SIGTERM (a second signal would make the runner skip draining).
  runner = spawn(process.execPath, [cli, 'run'], {
    cwd: ROOT,
    env,
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  runner.stdout.pipe(log, { end: false });
  runner.stderr.pipe(log, { end: false });
  runnerExited = new Promise((resolve) => {
    runner.on('exit', (code, signal) => {
      resolve({ code, signal });
      if (!stopping) {
        process.stderr.write(
          `demo: the runner exited on its own (${signal ?? `code ${code}`}); see ${logFile}\n`,
        );
        process.exit(1);
      }
    });
  });

  const tty = process.stdout.isTTY && !opts.check;
  const succeeded = new Map();
  let lastPrint = 0;
  let announced = false;
  for (;;) {
    if (interrupted) return;
    let jobs;
    const details = new Map();
    try {
      jobs = await (await fetch(`${base}/jobs`)).json();
      for (const j of jobs)
        details.set(j.name, await (await fetch(`${base}/jobs/${encodeURIComponent(j.name)}`)).json());
    } catch (err) {
      if (Date.now() - runnerStart > 30_000)
        throw new Error(`GET ${base}/jobs keeps failing: ${err.message}`, { cause: err });
      await sleep(250);
      continue;
    }
    for (const j of jobs) {
      // A success of this runner (the freshness record of an earlier demo does not count).
      if (
        !succeeded.has(j.name) &&
        j.last_outcome === 'success' &&
        Date.parse(j.last_success_at) >= runnerStart
      ) {
        succeeded.set(j.name, Date.now());
      }
    }
    const expected = [...new Set([...JOBS, ...jobs.filter((j) => j.enabled).map((j) => j.name)])];
    const allGreen = expected.every((id) => succeeded.has(id));
    const now = Date.now();
    if (tty) {
      process.stdout.write(
        `\x1b[H\x1b[2J${render(jobs, details, { base, runnerStart, succeeded })}\nCtrl-C to stop.\n`,
      );
    } else if ((allGreen && !announced) || now - lastPrint >= 2_000) {
      process.stdout.write(`\n${render(jobs, details, { base, runnerStart, succeeded })}`);
      lastPrint = now;
    }
    if (allGreen && !announced) {
      announced = true;
      say(
        `all ${expected.length} jobs succeeded: ${since(runnerStart)} after the runner started, ` +
          `${since(t0)} after the demo started`,
      );
    }
    if (opts.check && allGreen && now - runnerStart >= runForSec * 1000) {
      const code = await stopRunner();
      process.exit(code === 0 ? 0 : 1);
    }
    if (opts.check && now - runnerStart > checkTimeoutSec * 1000) {
      const missing = expected.filter((id) => !succeeded.has(id));
      process.stderr.write(`demo: no success within ${checkTimeoutSec} s for: ${missing.join(', ')}\n`);
      await stopRunner();
      process.exit(1);
    }
    await sleep(tty ? 1_000 : 500);
  }
}

main().catch(async (err) => {
  process.stderr.write(`demo: ${err.stack ?? err}\n`);
  await stopRunner();
  process.exit(1);
});
