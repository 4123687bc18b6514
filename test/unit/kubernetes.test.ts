// deploy/kubernetes: the kustomization rendered, every object validated against the pinned Kubernetes API
// schemas (kubernetes-models: Kubernetes 1.33 OpenAPI; @kubernetes-models/prometheus-operator: the
// ServiceMonitor and PrometheusRule CRDs of Prometheus Operator 0.65), the wiring between the objects,
// and the PrometheusRule equal to deploy/prometheus/alerts.yml.
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';
import { PrometheusRule } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule';
import { ServiceMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor';
import { Deployment } from 'kubernetes-models/apps/v1/Deployment';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget';
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap';
import { Service } from 'kubernetes-models/v1/Service';
import { ServiceAccount } from 'kubernetes-models/v1/ServiceAccount';
import { JOB_DEFAULTS, parseConfig } from '../../src/config.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const dir = path.join(root, 'deploy', 'kubernetes');
const read = (p: string): string => readFileSync(path.join(root, p), 'utf8');

/** A Kubernetes object as read from YAML (validated by its model below, so only the envelope is typed). */
interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; labels?: Record<string, string> };
  [field: string]: unknown;
}

// ---------------------------------------------------------------------------------------------------------
// The kustomization, rendered as `kubectl apply -k` would (the features it uses, no more)

interface Kustomization {
  resources: string[];
  configMapGenerator?: { name: string; files: string[] }[];
  images?: { name: string; newName?: string; newTag?: string }[];
}

const KUSTOMIZATION_FIELDS = ['apiVersion', 'kind', 'resources', 'configMapGenerator', 'images'];

/**
 * The objects `kustomize build deploy/kubernetes` makes, except the generated ConfigMap's name hash
 * suffix (and the references to it). Throws on any kustomization field it does not apply, so a
 * kustomization that outgrows it fails here instead of being checked half.
 */
function renderKustomization(): K8sObject[] {
  const k = parse(readFileSync(path.join(dir, 'kustomization.yaml'), 'utf8')) as Record<string, unknown>;
  const unknown = Object.keys(k).filter((f) => !KUSTOMIZATION_FIELDS.includes(f));
  if (unknown.length > 0)
    throw new Error(`kustomization.yaml: fields this test does not render: ${unknown.join()}`);
  const kust = k as unknown as Kustomization;
  const objects = kust.resources.flatMap((file) =>
    parseAllDocuments(readFileSync(path.join(dir, file), 'utf8')).map((d) => d.toJS() as K8sObject),
  );
  for (const gen of kust.configMapGenerator ?? []) {
    objects.push({
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: { name: gen.name },
      data: Object.fromEntries(
        gen.files.map((f) => [path.basename(f), readFileSync(path.join(dir, f), 'utf8')]),
      ),
    });
  }
  for (const object of objects) {
    for (const container of podSpecOf(object)?.containers ?? []) {
      const [name, tag] = container.image.split(':');
      const rule = kust.images?.find((i) => i.name === name);
      if (rule) container.image = `${rule.newName ?? name}:${rule.newTag ?? tag ?? 'latest'}`;
    }
  }
  return objects;
}

/** kustomize's generated-name suffix: a dash and ten characters of a hash. */
const withoutHash = (text: string, names: string[]): string =>
  names.reduce((t, n) => t.replace(new RegExp(`\\b${n}-[a-z0-9]{10}\\b`, 'g'), n), text);

// ---------------------------------------------------------------------------------------------------------
// Typed views of the objects the assertions read

interface Probe {
  httpGet?: { path: string; port: number | string };
}
interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: {
    secretKeyRef?: { name: string; key: string; optional?: boolean };
    fieldRef?: { fieldPath: string };
  };
}
interface Container {
  name: string;
  image: string;
  args?: string[];
  ports?: { name?: string; containerPort: number }[];
  env?: EnvVar[];
  livenessProbe?: Probe;
  readinessProbe?: Probe;
  lifecycle?: { preStop?: unknown };
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
  securityContext?: {
    runAsNonRoot?: boolean;
    runAsUser?: number;
    readOnlyRootFilesystem?: boolean;
    allowPrivilegeEscalation?: boolean;
    privileged?: boolean;
    capabilities?: { drop?: string[] };
  };
  volumeMounts?: { name: string; mountPath: string; readOnly?: boolean }[];
}
interface PodSpec {
  containers: Container[];
  terminationGracePeriodSeconds?: number;
  serviceAccountName?: string;
  automountServiceAccountToken?: boolean;
  securityContext?: { runAsNonRoot?: boolean; runAsUser?: number; fsGroup?: number };
  volumes?: { name: string; emptyDir?: unknown; configMap?: { name: string } }[];
}

function podSpecOf(object: K8sObject): PodSpec | undefined {
  if (object.kind !== 'Deployment') return undefined;
  return (object as unknown as { spec: { template: { spec: PodSpec } } }).spec.template.spec;
}

// ---------------------------------------------------------------------------------------------------------
// Schemas

/** The model (with its compiled API schema) for each apiVersion/kind the manifests may contain. */
const MODELS: Record<string, (data: object) => { validate(): void }> = {
  'apps/v1/Deployment': (d) => new Deployment(d),
  'policy/v1/PodDisruptionBudget': (d) => new PodDisruptionBudget(d),
  'v1/Service': (d) => new Service(d),
  'v1/ServiceAccount': (d) => new ServiceAccount(d),
  'v1/ConfigMap': (d) => new ConfigMap(d),
  // The CRD models type `spec` as required; the schema check is what decides here.
  'monitoring.coreos.com/v1/ServiceMonitor': (d) =>
    new ServiceMonitor(d as ConstructorParameters<typeof ServiceMonitor>[0]),
  'monitoring.coreos.com/v1/PrometheusRule': (d) =>
    new PrometheusRule(d as ConstructorParameters<typeof PrometheusRule>[0]),
};

/** Validation errors of one object ('' when valid), or why it has no schema. */
function schemaErrors(object: K8sObject): string {
  const model = MODELS[`${object.apiVersion}/${object.kind}`];
  if (!model) return `no pinned schema for ${object.apiVersion} ${object.kind}`;
  try {
    model(object).validate();
    return '';
  } catch (err) {
    return err instanceof Error ? err.message : String(err);
  }
}

const clone = <T>(value: T): T => structuredClone(value);

// ---------------------------------------------------------------------------------------------------------

const objects = renderKustomization();
const byKind = (kind: string): K8sObject => {
  const found = objects.filter((o) => o.kind === kind);
  if (found.length !== 1) throw new Error(`expected one ${kind}, found ${found.length}`);
  return found[0]!;
};
const deployment = byKind('Deployment');
const pod = podSpecOf(deployment)!;
const container = pod.containers[0]!;
const envValue = (name: string): string | undefined => container.env?.find((e) => e.name === name)?.value;

describe('deploy/kubernetes: schemas', () => {
  it('renders the expected objects', () => {
    expect(objects.map((o) => `${o.kind}/${o.metadata.name}`).sort()).toEqual(
      [
        'ConfigMap/cache-refresher-jobs',
        'Deployment/cache-refresher',
        'PodDisruptionBudget/cache-refresher',
        'PrometheusRule/cache-refresher',
        'Service/cache-refresher',
        'ServiceAccount/cache-refresher',
        'ServiceMonitor/cache-refresher',
      ].sort(),
    );
  });

  it.each(objects.map((o) => [`${o.kind}/${o.metadata.name}`, o] as const))(
    '%s validates against its pinned API schema',
    (_name, object) => {
      expect(schemaErrors(object)).toBe('');
    },
  );

  it('the validator rejects what the API server would (so the passes above mean something)', () => {
    const badReplicas = clone(deployment) as K8sObject & { spec: { replicas: unknown } };
    badReplicas.spec.replicas = 'two';
    expect(schemaErrors(badReplicas)).toMatch(/replicas must be integer/);

    const noName = clone(deployment);
    delete (podSpecOf(noName)!.containers[0] as Partial<Container>).name;
    expect(schemaErrors(noName)).toMatch(/containers\/0 must have required property name/);

    const badQuantity = clone(deployment);
    podSpecOf(badQuantity)!.containers[0]!.resources!.limits!.memory = 'half a gig';
    expect(schemaErrors(badQuantity)).toMatch(/memory/);

    const rule = clone(byKind('PrometheusRule')) as K8sObject & { spec: { groups: { rules: object[] }[] } };
    rule.spec.groups[0]!.rules.push({ alert: 'X', expr: 'up', labels: { severity: 1 } });
    expect(schemaErrors(rule)).toMatch(/severity must be string/);

    const monitor = clone(byKind('ServiceMonitor')) as K8sObject & { spec: { endpoints: object[] } };
    monitor.spec.endpoints = [{ port: 'http', honorLabels: 'yes' }];
    expect(schemaErrors(monitor)).toMatch(/honorLabels must be boolean/);

    expect(schemaErrors({ apiVersion: 'v1', kind: 'Secret', metadata: { name: 'x' } })).toMatch(
      /no pinned schema/,
    );
  });

  const kubectl = spawnSync('kubectl', ['version', '--client'], { encoding: 'utf8' });
  it.skipIf(kubectl.status !== 0)('renders like `kubectl kustomize` (where kubectl is installed)', () => {
    const generated = objects.filter((o) => o.kind === 'ConfigMap').map((o) => o.metadata.name);
    const text = withoutHash(execFileSync('kubectl', ['kustomize', dir], { encoding: 'utf8' }), generated);
    const real = parseAllDocuments(text).map((d) => d.toJS() as K8sObject);
    const key = (o: K8sObject): string => `${o.kind}/${o.metadata.name}`;
    expect(Object.fromEntries(real.map((o) => [key(o), o]))).toEqual(
      Object.fromEntries(objects.map((o) => [key(o), o])),
    );
  });
});

describe('deploy/kubernetes: the Deployment', () => {
  it('runs two replicas with leader election on, the image of this version and the `run` command', () => {
    expect((deployment as unknown as { spec: { replicas: number } }).spec.replicas).toBe(2);
    expect(envValue('LEADER_ELECTION')).toBe('true');
    const { version } = JSON.parse(read('package.json')) as { version: string };
    expect(container.image).toBe(`cache-refresher:${version}`);
    expect(container.args).toEqual(['run']);
  });

  it('probes liveness on /healthz and readiness on /readyz, on the port HTTP_PORT names', () => {
    const port = container.ports?.find((p) => p.name === 'http');
    expect(port?.containerPort).toBe(Number(envValue('HTTP_PORT')));
    expect(container.livenessProbe?.httpGet).toEqual({ path: '/healthz', port: 'http' });
    expect(container.readinessProbe?.httpGet).toEqual({ path: '/readyz', port: 'http' });
  });

  it('stops gracefully without a preStop hook, with a grace period above SHUTDOWN_GRACE_SEC', () => {
    expect(container.lifecycle?.preStop).toBeUndefined();
    const shutdownGrace = parseConfig(envOf(container)).shutdownGraceSec;
    expect(shutdownGrace).toBe(Number(envValue('SHUTDOWN_GRACE_SEC')));
    expect(pod.terminationGracePeriodSeconds).toBeGreaterThan(shutdownGrace);
  });

  it('runs as the non-root node user with a read-only root file system and no privileges', () => {
    expect(pod.securityContext?.runAsNonRoot).toBe(true);
    expect(pod.securityContext?.runAsUser).toBe(1000);
    expect(pod.securityContext?.fsGroup).toBe(1000);
    expect(container.securityContext).toMatchObject({
      readOnlyRootFilesystem: true,
      allowPrivilegeEscalation: false,
      privileged: false,
      capabilities: { drop: ['ALL'] },
    });
    expect(pod.automountServiceAccountToken).toBe(false);
    expect(pod.serviceAccountName).toBe(byKind('ServiceAccount').metadata.name);
  });

  it('mounts writable volumes only at the DLQ spool and /tmp, and the jobs ConfigMap read-only at JOBS_FILE', () => {
    const mounts = Object.fromEntries((container.volumeMounts ?? []).map((m) => [m.mountPath, m]));
    const volume = (name: string | undefined) => pod.volumes?.find((v) => v.name === name);
    const spoolDir = parseConfig(envOf(container)).kafka.spoolDir;
    expect(volume(mounts[spoolDir]?.name)?.emptyDir).toBeDefined();
    expect(volume(mounts['/tmp']?.name)?.emptyDir).toBeDefined();
    const jobsFile = envValue('JOBS_FILE') ?? '';
    const jobsMount = mounts[path.dirname(jobsFile)];
    expect(jobsMount?.readOnly).toBe(true);
    const configMap = byKind('ConfigMap') as K8sObject & { data: Record<string, string> };
    expect(volume(jobsMount?.name)?.configMap?.name).toBe(configMap.metadata.name);
    expect(Object.keys(configMap.data)).toEqual([path.basename(jobsFile)]);
    expect(
      Object.values(mounts)
        .filter((m) => m.readOnly !== true)
        .map((m) => m.mountPath)
        .sort(),
    ).toEqual([spoolDir, '/tmp'].sort());
  });

  it('sets CPU and memory requests and limits, and a V8 heap inside the memory limit', () => {
    expect(Object.keys(container.resources?.requests ?? {}).sort()).toEqual(['cpu', 'memory']);
    expect(Object.keys(container.resources?.limits ?? {}).sort()).toEqual(['cpu', 'memory']);
    const limitMiB = Number(/^(\d+)Mi$/.exec(container.resources?.limits?.memory ?? '')?.[1]);
    const heapMiB = Number(/--max-old-space-size=(\d+)/.exec(envValue('NODE_OPTIONS') ?? '')?.[1]);
    expect(heapMiB).toBeGreaterThan(0);
    expect(heapMiB).toBeLessThan(limitMiB * 0.8);
  });

  it('is configured only with CONTRACT variables that parseConfig accepts; secrets come from a Secret', () => {
    const names = (container.env ?? []).map((e) => e.name);
    expect(names.filter((n) => !CONTRACT_VARS.has(n))).toEqual([]);
    expect(() => parseConfig(envOf(container))).not.toThrow();
    for (const e of container.env ?? []) {
      if (/PASSWORD|TOKEN/.test(e.name)) {
        expect(e.value, e.name).toBeUndefined();
        expect(e.valueFrom?.secretKeyRef?.optional, e.name).toBe(true);
      }
    }
  });
});

describe('deploy/kubernetes: disruption budget, Service, ServiceMonitor', () => {
  const podLabels = (
    deployment as unknown as { spec: { template: { metadata: { labels: Record<string, string> } } } }
  ).spec.template.metadata.labels;
  const selects = (selector: Record<string, string> | undefined): boolean =>
    selector !== undefined &&
    Object.keys(selector).length > 0 &&
    Object.entries(selector).every(([k, v]) => podLabels[k] === v);

  it('the Deployment selector, PodDisruptionBudget and Service select the pods', () => {
    const spec = (o: K8sObject) => (o as unknown as { spec: Record<string, unknown> }).spec;
    expect(selects((spec(deployment).selector as { matchLabels: Record<string, string> }).matchLabels)).toBe(
      true,
    );
    const pdb = spec(byKind('PodDisruptionBudget'));
    expect(selects((pdb.selector as { matchLabels: Record<string, string> }).matchLabels)).toBe(true);
    // One replica at a time may go: the other keeps (or takes) the lease.
    expect(pdb.maxUnavailable ?? 2 - (pdb.minAvailable as number)).toBe(1);
    expect(selects(spec(byKind('Service')).selector as Record<string, string>)).toBe(true);
  });

  it('the ServiceMonitor scrapes the Service on its named port with honorLabels', () => {
    const service = byKind('Service') as K8sObject & {
      spec: { ports: { name: string; targetPort: string }[] };
    };
    const monitor = byKind('ServiceMonitor') as K8sObject & {
      spec: {
        selector: { matchLabels: Record<string, string> };
        endpoints: { port: string; path: string; honorLabels: boolean }[];
      };
    };
    expect(
      Object.entries(monitor.spec.selector.matchLabels).every(([k, v]) => service.metadata.labels?.[k] === v),
    ).toBe(true);
    expect(monitor.spec.endpoints).toHaveLength(1);
    const endpoint = monitor.spec.endpoints[0]!;
    expect(service.spec.ports.map((p) => p.name)).toContain(endpoint.port);
    expect(service.spec.ports.find((p) => p.name === endpoint.port)?.targetPort).toBe('http');
    expect(endpoint.path).toBe('/metrics');
    // The sidecar's `job` label is a job id (CONTRACT §6); Prometheus must not overwrite it.
    expect(endpoint.honorLabels).toBe(true);
    // Prometheus Operator names the scrape job after the Service: the alerts' up{job=...} must match.
    expect(read('deploy/prometheus/alerts.yml')).toContain(`up{job="${service.metadata.name}"}`);
  });
});

describe('deploy/kubernetes: the PrometheusRule', () => {
  it("carries exactly deploy/prometheus/alerts.yml's rule groups", () => {
    const alerts = parse(read('deploy/prometheus/alerts.yml')) as { groups: unknown[] };
    const rule = byKind('PrometheusRule') as K8sObject & { spec: { groups: unknown[] } };
    expect(alerts.groups.length).toBeGreaterThan(0);
    expect(rule.spec.groups).toEqual(alerts.groups);
  });

  it('is the file `npm run generate:prometheus-rule` writes', () => {
    const check = spawnSync(process.execPath, ['scripts/generate-prometheus-rule.mjs', '--check'], {
      cwd: root,
      encoding: 'utf8',
    });
    expect(check.stderr).toBe('');
    expect(check.status).toBe(0);
  });
});

// ---------------------------------------------------------------------------------------------------------

/** The environment a pod of this container gets: Secret and downward-API values as placeholders. */
function envOf(c: Container): Record<string, string> {
  return Object.fromEntries(
    (c.env ?? []).map((e) => {
      if (e.value !== undefined) return [e.name, e.value];
      if (e.valueFrom?.secretKeyRef) return [e.name, `secret-${e.valueFrom.secretKeyRef.key}`];
      if (e.valueFrom?.fieldRef) return [e.name, 'cache-refresher-5d9c7b6f4-x2x9q'];
      throw new Error(`${e.name}: no value`);
    }),
  );
}

/** CONTRACT §9 and §11: every variable the sidecar reads, plus Node's own NODE_OPTIONS. */
const CONTRACT_VARS = new Set([
  ...[
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
    'LEADER_ELECTION',
    'LEADER_LEASE_SEC',
    'HTTP_HOST',
    'HTTP_PORT',
    'ADMIN_TOKEN',
    'SHUTDOWN_GRACE_SEC',
    'LOG_LEVEL',
    'CRON_TIMEZONE',
    'JOBS_FILE',
    'JOB_MODULES',
    'NODE_OPTIONS',
  ],
  ...Object.values(JOB_DEFAULTS).flatMap((d) =>
    ['ENABLED', 'INTERVAL_SEC', 'CRON', 'TIMEOUT_SEC', 'TTL_SEC', 'RETRIES', 'PRIORITY'].map(
      (s) => `${d.envPrefix}${s}`,
    ),
  ),
]);
