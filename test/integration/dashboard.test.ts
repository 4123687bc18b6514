// The Grafana dashboard against a real Prometheus (Debian's, installed by scripts/services.sh up) scraping a
// real `cache-refresher run` child every second: every panel query must return data, the `job` variable
// must list the running jobs, and the alert rules must load and evaluate without errors.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RunnerProcess } from '../fixtures/child.js';
import { servicesEnv } from './env.js';
import { createTopic, testKafka } from './kafka-helpers.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const dashboardPath = path.join(repoRoot, 'deploy', 'grafana', 'dashboards', 'cache-refresher.json');
const alertsPath = path.join(repoRoot, 'deploy', 'prometheus', 'alerts.yml');

interface Target {
  expr: string;
  refId: string;
}
interface Panel {
  title: string;
  type: string;
  targets?: Target[];
  panels?: Panel[];
}
interface Dashboard {
  panels: Panel[];
}

/** Every (panel title, target) of the dashboard, rows' nested panels included. */
function panelTargets(dashboard: Dashboard): { panel: string; target: Target }[] {
  const out: { panel: string; target: Target }[] = [];
  const visit = (panels: Panel[]): void => {
    for (const p of panels) {
      for (const target of p.targets ?? []) out.push({ panel: p.title, target });
      visit(p.panels ?? []);
    }
  };
  visit(dashboard.panels);
  return out;
}

/** Grafana's template variables as a Prometheus query sees them with "All" selected. */
function substituteVariables(expr: string): string {
  return expr
    .replaceAll('$__rate_interval', '1m')
    .replaceAll('$__interval', '15s')
    .replaceAll('$__range', '5m')
    .replaceAll('$job', '.*');
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => {
        resolve(port);
      });
    });
  });
}

async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, ms: number): Promise<T> {
  const deadline = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${ms} ms waiting for ${what}`, { cause: last });
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

interface QueryAnswer {
  status: string;
  error?: string;
  data?: { resultType: string; result: { metric: Record<string, string>; value: [number, string] }[] };
}

describe('Grafana dashboard queries on a real Prometheus scraping a real runner', () => {
  const s = servicesEnv();
  const dashboard = JSON.parse(readFileSync(dashboardPath, 'utf8')) as Dashboard;
  let tmp: string;
  let runner: RunnerProcess | undefined;
  let prometheus: ChildProcess | undefined;
  let prometheusExited: Promise<void> | undefined;
  let prometheusLog = '';
  let promBase: string;

  const query = async (expr: string): Promise<QueryAnswer> => {
    const res = await fetch(`${promBase}/api/v1/query?query=${encodeURIComponent(expr)}`);
    return (await res.json()) as QueryAnswer;
  };
  const scalar = async (expr: string): Promise<number | undefined> => {
    const answer = await query(expr);
    const v = answer.data?.result[0]?.value[1];
    return v === undefined ? undefined : Number(v);
  };

  beforeAll(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'dashboard-it-'));
    const topic = `test-dashboard-${randomUUID()}`;
    await createTopic(testKafka(s.kafkaBrokers), topic);
    runner = new RunnerProcess(
      {
        REDIS_URL: s.redisUrl,
        CLICKHOUSE_URL: s.clickhouseUrl,
        KAFKA_BROKERS: s.kafkaBrokers.join(','),
        DLQ_TOPIC: topic,
        DLQ_SPOOL_DIR: path.join(tmp, 'spool'),
        CACHE_KEY_PREFIX: `test-dashboard-${randomUUID()}`,
        HTTP_PORT: '0',
        HTTP_HOST: '127.0.0.1',
        LEADER_ELECTION: 'false',
      },
      [
        { id: 'dash-ok', kind: 'sleep', ms: 20, intervalSec: 1 },
        { id: 'dash-boom', kind: 'fail', intervalSec: 1, message: 'dashboard fixture failure' },
      ],
    );
    const runnerPort = Number((await runner.waitForLog((l) => l.msg === 'http server listening')).port);

    const port = await freePort();
    promBase = `http://127.0.0.1:${port}`;
    const config = path.join(tmp, 'prometheus.yml');
    // The same scrape job name and honor_labels as deploy/prometheus/prometheus.yml, with 1 s scrapes.
    await writeFile(
      config,
      [
        'global:',
        '  scrape_interval: 1s',
        '  evaluation_interval: 1s',
        'rule_files:',
        `  - ${JSON.stringify(alertsPath)}`,
        'scrape_configs:',
        '  - job_name: cache-refresher',
        '    honor_labels: true',
        '    static_configs:',
        `      - targets: ['127.0.0.1:${runnerPort}']`,
        '',
      ].join('\n'),
    );
    const child = spawn(
      'prometheus',
      [
        `--config.file=${config}`,
        `--storage.tsdb.path=${path.join(tmp, 'tsdb')}`,
        `--web.listen-address=127.0.0.1:${port}`,
        '--log.level=warn',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    prometheus = child;
    const keep = (chunk: Buffer): void => {
      prometheusLog = (prometheusLog + chunk.toString('utf8')).slice(-4000);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    prometheusExited = new Promise((resolve) => {
      child.on('exit', () => {
        resolve();
      });
    });
    child.on('error', (err) => {
      prometheusLog += `\nspawn error: ${err.message}`;
    });

    try {
      await waitFor(
        'Prometheus to be ready',
        async () => ((await fetch(`${promBase}/-/ready`)).ok ? true : undefined),
        30_000,
      );
      // Enough 1 s scrapes for rate() over 1m, and both fixture jobs have run several times.
      await waitFor(
        'at least 8 scrapes of the runner',
        async () => {
          const n = await scalar('count_over_time(up{job="cache-refresher"}[1m])');
          return n !== undefined && n >= 8 ? n : undefined;
        },
        45_000,
      );
      await waitFor(
        'a success of dash-ok and a failure of dash-boom in Prometheus',
        async () => {
          const ok = await scalar('cache_refresher_job_runs_total{job="dash-ok",outcome="success"}');
          const failed = await scalar('cache_refresher_job_runs_total{job="dash-boom",outcome="failure"}');
          return ok !== undefined && ok >= 2 && failed !== undefined && failed >= 2 ? true : undefined;
        },
        30_000,
      );
    } catch (err) {
      throw new Error(`${(err as Error).message}\nprometheus output:\n${prometheusLog}`, { cause: err });
    }
  });

  afterAll(async () => {
    if (prometheus && prometheus.exitCode === null && prometheus.signalCode === null) {
      prometheus.kill('SIGTERM');
      await prometheusExited;
    }
    if (runner) {
      runner.kill('SIGTERM');
      await runner.exited;
    }
    await rm(tmp, { recursive: true, force: true });
  });

  it('every panel target returns at least one series', async () => {
    const targets = panelTargets(dashboard);
    expect(targets.length).toBeGreaterThanOrEqual(15);
    const problems: string[] = [];
    for (const { panel, target } of targets) {
      const expr = substituteVariables(target.expr);
      const answer = await query(expr);
      if (answer.status !== 'success') {
        problems.push(`${panel} [${target.refId}] ${expr}: ${answer.error ?? answer.status}`);
      } else if ((answer.data?.result.length ?? 0) < 1) {
        problems.push(`${panel} [${target.refId}] ${expr}: no series`);
      }
    }
    expect(problems).toEqual([]);
    console.log(`dashboard: ${targets.length} panel queries checked, all returned data`);
  });

  it('the job variable lists the running jobs', async () => {
    const res = await fetch(
      `${promBase}/api/v1/label/job/values?${new URLSearchParams({ 'match[]': 'cache_refresher_job_healthy' }).toString()}`,
    );
    const body = (await res.json()) as { status: string; data: string[] };
    expect(body.status).toBe('success');
    expect(body.data).toEqual(expect.arrayContaining(['dash-ok', 'dash-boom']));
    // honor_labels keeps the runner's job ids: none of them became the scrape job's name.
    expect(body.data).not.toContain('cache-refresher');
  });

  it('the panels show what the runner did', async () => {
    expect(await scalar('cache_refresher_job_healthy{job="dash-ok"}')).toBe(1);
    expect(await scalar('cache_refresher_job_healthy{job="dash-boom"}')).toBe(0);
    expect(await scalar('cache_refresher_job_consecutive_failures{job="dash-boom"}')).toBeGreaterThanOrEqual(
      1,
    );
    expect(
      await scalar('sum(cache_refresher_dlq_records_total{job="dash-boom",destination="kafka"})'),
    ).toBeGreaterThanOrEqual(1);
    expect(await scalar('sum(cache_refresher_leader)')).toBe(1);
    const staleness = await scalar(
      substituteVariables(
        '(time() - cache_refresher_job_last_success_timestamp_seconds{job="dash-ok"}) and (cache_refresher_job_last_success_timestamp_seconds{job="dash-ok"} > 0)',
      ),
    );
    expect(staleness).toBeLessThan(10);
  });

  it('the alert rules load into this Prometheus and evaluate without errors', async () => {
    const rules = await waitFor(
      'every rule to have been evaluated',
      async () => {
        const body = (await (await fetch(`${promBase}/api/v1/rules`)).json()) as {
          data: { groups: { rules: { name: string; health: string; lastError?: string }[] }[] };
        };
        const all = body.data.groups.flatMap((g) => g.rules);
        return all.length > 0 && all.every((r) => r.health !== 'unknown') ? all : undefined;
      },
      20_000,
    );
    expect(rules.filter((r) => r.health !== 'ok')).toEqual([]);
    expect(rules.map((r) => r.name)).toEqual(
      expect.arrayContaining([
        'CacheRefresherJobStale',
        'CacheRefresherJobFailing',
        'CacheRefresherDlqSpoolGrowing',
        'CacheRefresherNoLeader',
        'CacheRefresherTwoLeaders',
        'CacheRefresherDown',
      ]),
    );
  });
});
