import { isIP } from 'node:net';
import { maskUrlCredentials } from './config-security.js';

/**
 * Which kind of Redis deployment the sidecar talks to (CONTRACT §12), read from `REDIS_CLUSTER_NODES`,
 * `REDIS_SENTINELS` and `REDIS_SENTINEL_NAME` by `parseConfig`. `REDIS_URL` keeps one meaning in every
 * topology for what it says about security: its scheme (`rediss:` = TLS), user and password apply to
 * every data node. Where the data nodes are comes from the topology:
 *
 * - standalone (neither list set): `REDIS_URL`'s host, port and database number;
 * - cluster: the seed nodes; `REDIS_URL`'s host and port are ignored and its database must be 0 (a
 *   Redis Cluster has no other);
 * - sentinel: the master that the sentinels name `REDIS_SENTINEL_NAME`; `REDIS_URL`'s host and port
 *   are ignored, its database number is used on that master. The sentinels themselves are reached over
 *   TLS when the scheme is `rediss:` (same CA).
 */

/** One `host:port` of a node list; an IPv6 host is kept without brackets, as a socket takes it. */
export interface RedisNodeAddress {
  readonly host: string;
  readonly port: number;
}

export type RedisTopology =
  | { readonly kind: 'standalone' }
  /** `nodes`: the cluster's seed nodes, in the order given (ioredis discovers the rest). */
  | { readonly kind: 'cluster'; readonly nodes: readonly RedisNodeAddress[] }
  /** `sentinels`: where to ask; `name`: the master's name in the sentinels' `sentinel monitor` line. */
  | { readonly kind: 'sentinel'; readonly sentinels: readonly RedisNodeAddress[]; readonly name: string };

/** One bad variable, in the shape of `ConfigProblem` (kept local so config.ts and this module do not import each other). */
export interface TopologyProblem {
  name: string;
  value: string | undefined;
  expected: string;
}

type Env = Readonly<Record<string, string | undefined>>;

const NODE_LIST =
  'a comma-separated list of host:port (e.g. 10.0.0.1:6379,10.0.0.2:6379, IPv6 as [::1]:6379)';

/** Set and not blank: an empty value in a compose file means "not set", as for every other variable. */
function raw(env: Env, name: string): string | undefined {
  const v = env[name];
  return v === undefined || v.trim() === '' ? undefined : v.trim();
}

/** A DNS name (RFC 1123 labels) or an IPv4 address; IPv6 comes bracketed and is checked apart. */
function isHostName(host: string): boolean {
  const label = /^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$/;
  return (
    host.length > 0 &&
    host.length <= 253 &&
    host
      .replace(/\.$/, '')
      .split('.')
      .every((l) => label.test(l))
  );
}

/** Why one entry of a node list is not a `host:port`, or the address it names. */
function parseNode(entry: string): RedisNodeAddress | string {
  if (entry === '') return 'is empty';
  const bracketed = /^\[([^\]]*)\](?::(.*))?$/.exec(entry);
  let host: string;
  let port: string | undefined;
  if (bracketed) {
    host = bracketed[1] ?? '';
    port = bracketed[2];
    if (isIP(host) !== 6) return `has no valid IPv6 address between the brackets`;
  } else {
    const colon = entry.lastIndexOf(':');
    if (colon < 0) return 'has no port';
    host = entry.slice(0, colon);
    port = entry.slice(colon + 1);
    if (host.includes(':')) return 'is an IPv6 address without brackets (write [addr]:port)';
    if (host === '') return 'has no host';
    if (!isHostName(host)) return `has an invalid host ${JSON.stringify(host)}`;
  }
  if (port === undefined || port === '') return 'has no port';
  if (!/^\d{1,5}$/.test(port) || Number(port) < 1 || Number(port) > 65535)
    return `has an invalid port ${JSON.stringify(port)} (1 to 65535)`;
  return { host, port: Number(port) };
}

/**
 * Reads a node list; every bad entry is described in one problem for the variable, so an operator sees
 * all of them at once. `undefined` when unset or invalid.
 */
function readNodeList(env: Env, name: string, problems: TopologyProblem[]): RedisNodeAddress[] | undefined {
  const v = raw(env, name);
  if (v === undefined) return undefined;
  const nodes: RedisNodeAddress[] = [];
  const faults: string[] = [];
  const seen = new Set<string>();
  v.split(',').forEach((part, i) => {
    const entry = part.trim();
    const node = parseNode(entry);
    const which = `entry ${i + 1}${entry === '' ? '' : ` ${JSON.stringify(entry)}`}`;
    if (typeof node === 'string') {
      faults.push(`${which} ${node}`);
      return;
    }
    const key = `${node.host.toLowerCase()}:${node.port}`;
    if (seen.has(key)) faults.push(`${which} repeats an earlier entry`);
    seen.add(key);
    nodes.push(node);
  });
  if (faults.length === 0) return nodes;
  problems.push({ name, value: env[name], expected: `${NODE_LIST}; ${faults.join('; ')}` });
  return undefined;
}

/** The database number in `REDIS_URL`'s path (`redis://host/3` → 3), 0 when absent or unreadable. */
function urlDatabase(redisUrl: string | undefined): number {
  if (redisUrl === undefined || !URL.canParse(redisUrl)) return 0;
  const path = new URL(redisUrl).pathname;
  return /^\/\d+$/.test(path) ? Number(path.slice(1)) : 0;
}

/**
 * The Redis topology of an environment and every problem with it (CONTRACT §9/§12 exit-2 shape).
 * Pure. Problems: a malformed node list (empty entry, missing or invalid port, bad host, repeated node),
 * both `REDIS_CLUSTER_NODES` and `REDIS_SENTINELS` set (each is named, the other is mentioned),
 * `REDIS_SENTINELS` without `REDIS_SENTINEL_NAME` or the reverse, a master name with whitespace, and a
 * cluster with a `REDIS_URL` database other than 0. On any problem the topology falls back to standalone.
 */
export function readRedisTopology(env: Env): { topology: RedisTopology; problems: TopologyProblem[] } {
  const problems: TopologyProblem[] = [];
  const clusterSet = raw(env, 'REDIS_CLUSTER_NODES') !== undefined;
  const sentinelsSet = raw(env, 'REDIS_SENTINELS') !== undefined;
  const nodes = readNodeList(env, 'REDIS_CLUSTER_NODES', problems);
  const sentinels = readNodeList(env, 'REDIS_SENTINELS', problems);
  const name = raw(env, 'REDIS_SENTINEL_NAME');
  const standalone = { topology: { kind: 'standalone' } as const, problems };

  if (clusterSet && sentinelsSet) {
    const why = 'a Redis Cluster and a Sentinel-managed master are different deployments: set one';
    problems.push(
      {
        name: 'REDIS_CLUSTER_NODES',
        value: env.REDIS_CLUSTER_NODES,
        expected: `unset when REDIS_SENTINELS is set (${why})`,
      },
      {
        name: 'REDIS_SENTINELS',
        value: env.REDIS_SENTINELS,
        expected: `unset when REDIS_CLUSTER_NODES is set (${why})`,
      },
    );
  }
  if (name !== undefined && /\s/.test(name)) {
    problems.push({
      name: 'REDIS_SENTINEL_NAME',
      value: env.REDIS_SENTINEL_NAME,
      expected: "the master's name from the sentinels' `sentinel monitor` line (no whitespace)",
    });
  }
  if (sentinelsSet && name === undefined) {
    problems.push({
      name: 'REDIS_SENTINEL_NAME',
      value: env.REDIS_SENTINEL_NAME,
      expected: "the master's name the sentinels monitor (required when REDIS_SENTINELS is set)",
    });
  }
  if (!sentinelsSet && name !== undefined) {
    problems.push({
      name: 'REDIS_SENTINELS',
      value: env.REDIS_SENTINELS,
      expected: `${NODE_LIST} of the sentinels (REDIS_SENTINEL_NAME is set, so the sidecar needs sentinels to ask)`,
    });
  }
  const db = urlDatabase(raw(env, 'REDIS_URL'));
  if (clusterSet && db !== 0) {
    problems.push({
      name: 'REDIS_URL',
      value: maskUrlCredentials(env.REDIS_URL ?? ''),
      expected: `database 0 (or none) with REDIS_CLUSTER_NODES: a Redis Cluster has only database 0, got ${db}`,
    });
  }

  if (problems.length > 0) return standalone;
  if (nodes !== undefined) return { topology: { kind: 'cluster', nodes }, problems };
  if (sentinels !== undefined && name !== undefined)
    return { topology: { kind: 'sentinel', sentinels, name }, problems };
  return standalone;
}

/** `host:port` as written in a node list (IPv6 bracketed), for log lines and reports. */
export function formatNodeAddress(node: RedisNodeAddress): string {
  return node.host.includes(':') ? `[${node.host}]:${node.port}` : `${node.host}:${node.port}`;
}
