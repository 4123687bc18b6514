// Structural checks of the deployment files, without Docker or servers: the Dockerfile's build and
// runtime hygiene, the compose stack's services, pins, wiring and environment (validated by the real
// parseConfig), and the Grafana dashboard's datasource and targets.
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { JOB_DEFAULTS, JOB_IDS, jobEnvPrefix, parseConfig } from '../../src/config.js';
import { parseJobsFile } from '../../src/declarative/parse-jobs-file.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const read = (p: string): string => readFileSync(path.join(root, p), 'utf8');

// ---------------------------------------------------------------------------------------------------------
// Dockerfile

interface Instruction {
  op: string;
  args: string;
  stage: number;
}

/** Dockerfile instructions with line continuations joined and comments dropped; stage = index of its FROM. */
function dockerInstructions(text: string): Instruction[] {
  const logical: string[] = [];
  let current = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (current === '' && (line === '' || line.startsWith('#'))) continue;
    if (line.endsWith('\\')) {
      current += `${line.slice(0, -1)} `;
      continue;
    }
    logical.push(current + line);
    current = '';
  }
  if (current !== '') logical.push(current);
  let stage = -1;
  return logical.map((l) => {
    const m = /^(\S+)\s*(.*)$/.exec(l);
    const op = (m?.[1] ?? '').toUpperCase();
    if (op === 'FROM') stage++;
    return { op, args: m?.[2] ?? '', stage };
  });
}

const SECRET_NAME = /token|passw|secret|api_?key|credential|private|auth/i;

describe('Dockerfile', () => {
  const ins = dockerInstructions(read('Dockerfile'));
  const lastStage = Math.max(...ins.map((i) => i.stage));
  const final = ins.filter((i) => i.stage === lastStage);
  const all = (op: string): Instruction[] => ins.filter((i) => i.op === op);

  it('is multi-stage, every FROM on the same exact Node 20 slim tag', () => {
    const froms = all('FROM').map((i) => i.args.split(/\s+/)[0] ?? '');
    expect(froms.length).toBeGreaterThanOrEqual(2);
    for (const image of froms) expect(image).toMatch(/^node:20\.\d+\.\d+-[a-z]+-slim$/);
    expect(new Set(froms).size).toBe(1);
  });

  it('builds with dev dependencies and ships only production ones', () => {
    const build = ins.filter((i) => i.stage < lastStage && i.op === 'RUN').map((i) => i.args);
    expect(build.some((r) => r.includes('npm ci') && !r.includes('--omit=dev'))).toBe(true);
    expect(build.some((r) => r.includes('npm run build'))).toBe(true);
    expect(
      ins.some((i) => i.op === 'RUN' && /npm (prune|ci)\b.*--omit=dev/.test(i.args)),
      'npm prune --omit=dev or npm ci --omit=dev',
    ).toBe(true);
    expect(final.some((i) => i.op === 'COPY' && i.args.includes('--from='))).toBe(true);
  });

  it('runs as the unprivileged node user in the final stage', () => {
    const users = final.filter((i) => i.op === 'USER').map((i) => i.args.trim());
    expect(users.length).toBeGreaterThanOrEqual(1);
    expect(users.at(-1)).toBe('node');
  });

  it('has a /healthz HEALTHCHECK without curl, STOPSIGNAL SIGTERM, EXPOSE 9464', () => {
    const health = final.filter((i) => i.op === 'HEALTHCHECK');
    expect(health).toHaveLength(1);
    expect(health[0]!.args).toContain('/healthz');
    expect(health[0]!.args).not.toMatch(/\bcurl\b|\bwget\b/);
    expect(final.filter((i) => i.op === 'STOPSIGNAL').map((i) => i.args.trim())).toEqual(['SIGTERM']);
    expect(final.some((i) => i.op === 'EXPOSE' && i.args.split(/\s+/).includes('9464'))).toBe(true);
  });

  it('starts the CLI: ENTRYPOINT node dist/cli.js, CMD run', () => {
    expect(JSON.parse(final.find((i) => i.op === 'ENTRYPOINT')!.args)).toEqual(['node', 'dist/cli.js']);
    expect(JSON.parse(final.find((i) => i.op === 'CMD')!.args)).toEqual(['run']);
  });

  it('declares the DLQ spool as a volume owned by node', () => {
    const volumes = final.filter((i) => i.op === 'VOLUME').map((i) => i.args);
    expect(volumes.some((v) => v.includes('/app/data/dlq'))).toBe(true);
    expect(final.some((i) => i.op === 'RUN' && /chown[^&]*node:node[^&]*\/app\/data/.test(i.args))).toBe(
      true,
    );
  });

  it('bakes no secret-looking ENV or ARG', () => {
    const names = [...all('ENV'), ...all('ARG')].flatMap((i) =>
      [...i.args.matchAll(/(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)(?==|\s|$)/g)].map((m) => m[1] ?? ''),
    );
    expect(names.length).toBeGreaterThan(0);
    expect(names.filter((n) => SECRET_NAME.test(n))).toEqual([]);
  });

  it('.dockerignore keeps local state, dependencies and secrets out of the context', () => {
    const ignored = read('.dockerignore')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l !== '' && !l.startsWith('#'));
    expect(ignored).toEqual(
      expect.arrayContaining(['.git', 'node_modules', 'dist', '.services', 'data', '.env']),
    );
  });
});

// ---------------------------------------------------------------------------------------------------------
// docker-compose.yml

interface ComposeService {
  image?: string;
  build?: unknown;
  environment?: Record<string, string | number | boolean | null>;
  depends_on?: Record<string, { condition: string }>;
  healthcheck?: { test: unknown };
  volumes?: string[];
  ports?: string[];
  entrypoint?: string[];
  command?: string[] | string;
}
interface Compose {
  services: Record<string, ComposeService>;
}

/** Compose's `${NAME:-default}` / `${NAME-default}` / `${NAME}` interpolation, with nothing set. */
function interpolate(value: string): string {
  return value.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}/g, (_m, _name, fallback?: string) => {
    return fallback ?? '';
  });
}

/** CONTRACT §9: every variable the sidecar reads. */
const GLOBAL_VARS = [
  'REDIS_URL',
  'CLICKHOUSE_URL',
  'CLICKHOUSE_USER',
  'CLICKHOUSE_PASSWORD',
  'CLICKHOUSE_DATABASE',
  'KAFKA_BROKERS',
  'KAFKA_CLIENT_ID',
  'DLQ_TOPIC',
  'DLQ_SPOOL_DIR',
  'CACHE_KEY_PREFIX',
  'MAX_CONCURRENT_JOBS',
  'BACKOFF_AFTER_FAILURES',
  'BACKOFF_BASE_SEC',
  'BACKOFF_MAX_SEC',
  'LEADER_ELECTION',
  'LEADER_LEASE_SEC',
  'HTTP_HOST',
  'HTTP_PORT',
  'ADMIN_TOKEN',
  'SHUTDOWN_GRACE_SEC',
  'LOG_LEVEL',
  'CRON_TIMEZONE',
  'TRENDING_TOP_K',
  'TRENDING_1H_DECAY',
  'TRENDING_24H_DECAY',
  'TRENDING_7D_DECAY',
  'SUGGESTED_USERS_PER_USER',
  'SUGGESTED_USERS_ACTIVE_DAYS',
  'SUGGESTED_USERS_MAX_FOLLOWEES',
  'SUGGESTED_USERS_BATCH_SIZE',
  'FEED_WARMER_USERS',
  'FEED_WARMER_PAGE_SIZE',
  'FEED_WARMER_ACTIVE_DAYS',
  'FEED_WARMER_LOOKBACK_HOURS',
  'FEED_WARMER_DECAY',
  'JOBS_FILE',
];
const PER_JOB_SUFFIXES = ['ENABLED', 'INTERVAL_SEC', 'CRON', 'TIMEOUT_SEC', 'TTL_SEC', 'RETRIES', 'PRIORITY'];
// The compose stack also loads the example job module (examples/jobs/author-stats.mjs) through JOB_MODULES.
const MODULE_JOB_PREFIXES = ['AUTHOR_STATS_'];
/** The declarative jobs the compose stack mounts (CONTRACT §11): their per-job variables are valid too. */
const EXAMPLE_JOBS = parseJobsFile(read('examples/jobs.yaml'), 'examples/jobs.yaml', {
  reservedIds: JOB_IDS,
  cronTimezone: 'UTC',
});
const CONTRACT_VARS = new Set([
  ...GLOBAL_VARS,
  'JOB_MODULES',
  ...[...Object.values(JOB_DEFAULTS).map((d) => d.envPrefix), ...MODULE_JOB_PREFIXES].flatMap((p) =>
    PER_JOB_SUFFIXES.map((s) => `${p}${s}`),
  ),
  ...EXAMPLE_JOBS.jobs.flatMap((j) => PER_JOB_SUFFIXES.map((s) => `${jobEnvPrefix(j.id)}${s}`)),
]);

const LONG_RUNNING = ['cache-refresher', 'redis', 'kafka', 'clickhouse', 'prometheus', 'grafana'];

describe('docker-compose.yml', () => {
  const compose = parse(read('docker-compose.yml'), { merge: true }) as Compose;
  const services = compose.services;
  const svc = (name: string): ComposeService => {
    const s = services[name];
    if (!s) throw new Error(`no service ${name}`);
    return s;
  };
  const envOf = (name: string): Record<string, string> =>
    Object.fromEntries(
      Object.entries(svc(name).environment ?? {}).map(([k, v]) => [k, interpolate(String(v ?? ''))]),
    );

  it('has the six long-running services and the init one-shot', () => {
    expect(Object.keys(services).sort()).toEqual([...LONG_RUNNING, 'init'].sort());
    expect(svc('init').command ?? '').toBeTruthy();
    const initCommand = [svc('init').entrypoint ?? [], svc('init').command ?? []].flat().join(' ');
    expect(initCommand).toMatch(/migrate.*&&.*seed/);
  });

  it('pins every image tag (no latest, no untagged)', () => {
    for (const [name, s] of Object.entries(services)) {
      expect(s.image, `${name}: image`).toBeDefined();
      const image = s.image ?? '';
      const tag = /^[^:@]+(?::([^@]+))?(@sha256:[0-9a-f]{64})?$/.exec(image);
      expect(tag?.[1], `${name}: ${image} has a tag`).toBeDefined();
      expect(tag?.[1], `${name}: ${image}`).toMatch(/\d+\.\d+/);
      expect(image).not.toMatch(/:latest$/);
    }
    expect(svc('kafka').image).toMatch(/^apache\/kafka:3\.9\.\d+$/);
    expect(svc('clickhouse').image).toMatch(/^clickhouse\/clickhouse-server:2[45]\.\d+\.\d+/);
  });

  it('starts the runner after healthy dependencies and a completed init', () => {
    const deps = svc('cache-refresher').depends_on ?? {};
    for (const dep of ['redis', 'kafka', 'clickhouse']) {
      expect(deps[dep]?.condition, dep).toBe('service_healthy');
      expect(svc(dep).healthcheck?.test, `${dep} healthcheck`).toBeDefined();
    }
    expect(deps.init?.condition).toBe('service_completed_successfully');
    expect(svc('cache-refresher').build).toBeDefined();
    expect(svc('init').image).toBe(svc('cache-refresher').image);
  });

  it('configures the runner and init only with CONTRACT §9 variables that parseConfig accepts', () => {
    for (const name of ['cache-refresher', 'init']) {
      const env = envOf(name);
      expect(
        Object.keys(env).filter((k) => !CONTRACT_VARS.has(k)),
        `${name}: unknown variables`,
      ).toEqual([]);
      expect(() => parseConfig(env), name).not.toThrow();
    }
    const config = parseConfig(envOf('cache-refresher'));
    expect(config.redisUrl).toBe('redis://redis:6379');
    expect(config.kafka.brokers).toEqual(['kafka:9092']);
    expect(config.clickhouse.url).toBe('http://clickhouse:8123');
    expect(config.http.port).toBe(9464);
    expect(config.kafka.spoolDir).toBe('/app/data/dlq');
    expect(config.clickhouse).toEqual(parseConfig(envOf('init')).clickhouse);
    // ClickHouse's image creates the same user, password and database the runner uses.
    const ch = envOf('clickhouse');
    expect(ch.CLICKHOUSE_USER).toBe(config.clickhouse.user);
    expect(ch.CLICKHOUSE_PASSWORD).toBe(config.clickhouse.password);
    expect(ch.CLICKHOUSE_DB).toBe(config.clickhouse.database);
  });

  it('runs examples/jobs.yaml: JOBS_FILE is where the file is mounted read-only, and the file is valid', () => {
    expect(EXAMPLE_JOBS.problems).toEqual([]);
    expect(EXAMPLE_JOBS.jobs.map((j) => j.output.type).sort()).toEqual([
      'hash',
      'per_row',
      'sorted_set',
      'string',
    ]);
    const jobsFile = envOf('cache-refresher').JOBS_FILE;
    expect(svc('cache-refresher').volumes ?? []).toContain(`./examples/jobs.yaml:${jobsFile ?? '?'}:ro`);
  });

  it('mounts the spool volume, the Prometheus config and rules, and Grafana provisioning that exist', () => {
    expect(svc('cache-refresher').volumes ?? []).toEqual(
      expect.arrayContaining([expect.stringMatching(/^[\w-]+:\/app\/data\/dlq$/)]),
    );
    for (const name of ['prometheus', 'grafana']) {
      for (const volume of svc(name).volumes ?? []) {
        if (!volume.startsWith('./')) continue;
        const host = volume.split(':')[0] ?? '';
        expect(existsSync(path.join(root, host)), `${name}: ${host}`).toBe(true);
      }
    }
    const promVolumes = svc('prometheus').volumes ?? [];
    expect(promVolumes).toContain('./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro');
    expect(promVolumes).toContain('./deploy/prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro');
  });

  it('Prometheus scrapes the runner as job cache-refresher with honor_labels and loads the rules', () => {
    const prom = parse(read('deploy/prometheus/prometheus.yml')) as {
      rule_files: string[];
      scrape_configs: { job_name: string; honor_labels?: boolean; static_configs: { targets: string[] }[] }[];
    };
    expect(prom.rule_files).toEqual(['/etc/prometheus/alerts.yml']);
    const job = prom.scrape_configs.find((s) => s.job_name === 'cache-refresher');
    expect(job?.honor_labels).toBe(true);
    expect(job?.static_configs.flatMap((s) => s.targets)).toEqual(['cache-refresher:9464']);
    // The alert on the scrape target names the same job.
    expect(read('deploy/prometheus/alerts.yml')).toContain('up{job="cache-refresher"}');
  });
});

// ---------------------------------------------------------------------------------------------------------
// Grafana

interface GrafanaTarget {
  expr?: string;
  refId?: string;
  datasource?: { uid?: string };
}
interface GrafanaPanel {
  id: number;
  type: string;
  title: string;
  datasource?: { type?: string; uid?: string };
  targets?: GrafanaTarget[];
  panels?: GrafanaPanel[];
}

describe('Grafana dashboard and provisioning', () => {
  const dashboard = JSON.parse(read('deploy/grafana/dashboards/cache-refresher.json')) as {
    title: string;
    uid: string;
    panels: GrafanaPanel[];
    templating: {
      list: { name: string; query: unknown; definition?: string; datasource?: { uid?: string } }[];
    };
  };
  const datasources = parse(read('deploy/grafana/provisioning/datasources/prometheus.yml')) as {
    datasources: { uid: string; type: string; url: string }[];
  };
  const providers = parse(read('deploy/grafana/provisioning/dashboards/cache-refresher.yml')) as {
    providers: { options: { path: string } }[];
  };
  const uid = datasources.datasources[0]?.uid;
  const flat = (panels: GrafanaPanel[]): GrafanaPanel[] =>
    panels.flatMap((p) => [p, ...flat(p.panels ?? [])]);
  const panels = flat(dashboard.panels).filter((p) => p.type !== 'row');

  it('provisions one Prometheus datasource with a fixed uid and the dashboards directory', () => {
    expect(datasources.datasources).toHaveLength(1);
    expect(datasources.datasources[0]?.type).toBe('prometheus');
    expect(datasources.datasources[0]?.url).toBe('http://prometheus:9090');
    expect(uid).toMatch(/^[\w-]+$/);
    const compose = parse(read('docker-compose.yml'), { merge: true }) as Compose;
    expect(compose.services.grafana?.volumes).toContain(
      `./deploy/grafana/dashboards:${providers.providers[0]?.options.path ?? '?'}:ro`,
    );
  });

  it('is titled, has a job variable from cache_refresher_job_healthy', () => {
    expect(dashboard.title).toBe('cache-refresher job health');
    const job = dashboard.templating.list.find((v) => v.name === 'job');
    expect(JSON.stringify(job?.query)).toContain('label_values(cache_refresher_job_healthy, job)');
    expect(job?.datasource?.uid).toBe(uid);
  });

  it('every panel uses the datasource uid and has at least one target with an expression', () => {
    expect(panels.length).toBeGreaterThanOrEqual(12);
    expect(new Set(flat(dashboard.panels).map((p) => p.id)).size).toBe(flat(dashboard.panels).length);
    for (const p of panels) {
      expect(p.datasource?.uid, p.title).toBe(uid);
      expect(p.targets?.length ?? 0, p.title).toBeGreaterThanOrEqual(1);
      for (const t of p.targets ?? []) {
        expect(t.expr, `${p.title} ${t.refId ?? ''}`).toMatch(/\S/);
        expect(t.datasource?.uid, `${p.title} ${t.refId ?? ''}`).toBe(uid);
      }
    }
  });

  it('charts every CONTRACT §6 metric and the event-loop lag', () => {
    const exprs = panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr ?? '')).join('\n');
    for (const metric of [
      'cache_refresher_job_runs_total',
      'cache_refresher_job_duration_seconds_bucket',
      'cache_refresher_job_last_success_timestamp_seconds',
      'cache_refresher_job_last_run_timestamp_seconds',
      'cache_refresher_job_next_run_timestamp_seconds',
      'cache_refresher_job_healthy',
      'cache_refresher_job_consecutive_failures',
      'cache_refresher_job_items_processed',
      'cache_refresher_job_running',
      'cache_refresher_job_skipped_total',
      'cache_refresher_dlq_records_total',
      'cache_refresher_dlq_spool_pending',
      'cache_refresher_leader',
      'cache_refresher_semaphore_waiting',
      'nodejs_eventloop_lag_p99_seconds',
    ]) {
      expect(exprs, metric).toContain(metric);
    }
  });
});
