import { describe, expect, it } from 'vitest';
import { ConfigError, parseConfig } from '../../src/config.js';
import { formatNodeAddress, readRedisTopology } from '../../src/config-topology.js';
import { connectionCause } from '../../src/connection-errors.js';
import { isReadOnlyReplicaError, redisSentinelOptions } from '../../src/connection-options.js';

/** The problems of an environment as `name: value -> expected`, via the whole of parseConfig. */
function problemsOf(env: Record<string, string>): string[] {
  try {
    parseConfig(env);
  } catch (err) {
    if (err instanceof ConfigError)
      return err.problems.map((p) => `${p.name}: ${JSON.stringify(p.value)} -> ${p.expected}`);
    throw err;
  }
  return [];
}

describe('Redis topology (REDIS_CLUSTER_NODES, REDIS_SENTINELS, REDIS_SENTINEL_NAME)', () => {
  it('is standalone by default and when the variables are blank', () => {
    expect(parseConfig({}).redisTopology).toEqual({ kind: 'standalone' });
    expect(
      parseConfig({ REDIS_CLUSTER_NODES: '  ', REDIS_SENTINELS: '', REDIS_SENTINEL_NAME: '' }).redisTopology,
    ).toEqual({ kind: 'standalone' });
  });

  it('reads cluster seed nodes: host names, IPv4 and bracketed IPv6, spaces around entries', () => {
    const c = parseConfig({
      REDIS_CLUSTER_NODES: 'redis-0.redis.svc:6379, 10.0.0.2:7001 ,[::1]:7002',
      REDIS_URL: 'rediss://app:secret@ignored.example:1',
    });
    expect(c.redisTopology).toEqual({
      kind: 'cluster',
      nodes: [
        { host: 'redis-0.redis.svc', port: 6379 },
        { host: '10.0.0.2', port: 7001 },
        { host: '::1', port: 7002 },
      ],
    });
    // Credentials and TLS still come from REDIS_URL (its host is ignored by the cluster client).
    expect(c.redisUrl).toBe('rediss://app@ignored.example:1');
    expect(c.redisTopology.kind === 'cluster' && c.redisTopology.nodes.map(formatNodeAddress)).toEqual([
      'redis-0.redis.svc:6379',
      '10.0.0.2:7001',
      '[::1]:7002',
    ]);
  });

  it('reads sentinels and the master name', () => {
    expect(
      parseConfig({ REDIS_SENTINELS: 's1:26379,s2:26379,s3:26379', REDIS_SENTINEL_NAME: 'mymaster' })
        .redisTopology,
    ).toEqual({
      kind: 'sentinel',
      name: 'mymaster',
      sentinels: [
        { host: 's1', port: 26379 },
        { host: 's2', port: 26379 },
        { host: 's3', port: 26379 },
      ],
    });
  });

  it('names both variables when a cluster and sentinels are both set', () => {
    const problems = problemsOf({
      REDIS_CLUSTER_NODES: 'a:7000',
      REDIS_SENTINELS: 's1:26379',
      REDIS_SENTINEL_NAME: 'mymaster',
    });
    expect(problems).toEqual([
      expect.stringMatching(/^REDIS_CLUSTER_NODES: "a:7000" -> unset when REDIS_SENTINELS is set/),
      expect.stringMatching(/^REDIS_SENTINELS: "s1:26379" -> unset when REDIS_CLUSTER_NODES is set/),
    ]);
  });

  it('describes every malformed entry of a node list in one problem', () => {
    const [problem, ...rest] = problemsOf({
      REDIS_CLUSTER_NODES: 'a:7000,,b,c:0,:7001,bad_host!:7002,d:99999,::1:7003,[nope]:1,a:7000,e:x,',
    });
    expect(rest).toEqual([]);
    expect(problem).toContain('REDIS_CLUSTER_NODES: "a:7000,,b,');
    expect(problem).toContain('a comma-separated list of host:port');
    for (const fault of [
      'entry 2 is empty',
      'entry 3 "b" has no port',
      'entry 4 "c:0" has an invalid port "0" (1 to 65535)',
      'entry 5 ":7001" has no host',
      'entry 6 "bad_host!:7002" has an invalid host "bad_host!"',
      'entry 7 "d:99999" has an invalid port "99999"',
      'entry 8 "::1:7003" is an IPv6 address without brackets',
      'entry 9 "[nope]:1" has no valid IPv6 address between the brackets',
      'entry 10 "a:7000" repeats an earlier entry',
      'entry 11 "e:x" has an invalid port "x"',
      'entry 12 is empty',
    ])
      expect(problem).toContain(fault);
  });

  it('rejects a malformed sentinel list the same way', () => {
    expect(problemsOf({ REDIS_SENTINELS: 's1', REDIS_SENTINEL_NAME: 'm' })).toEqual([
      expect.stringMatching(
        /^REDIS_SENTINELS: "s1" -> a comma-separated list of host:port.*entry 1 "s1" has no port$/,
      ),
    ]);
  });

  it('needs REDIS_SENTINEL_NAME with REDIS_SENTINELS, and sentinels with a name', () => {
    expect(problemsOf({ REDIS_SENTINELS: 's1:26379' })).toEqual([
      "REDIS_SENTINEL_NAME: undefined -> the master's name the sentinels monitor (required when REDIS_SENTINELS is set)",
    ]);
    expect(problemsOf({ REDIS_SENTINEL_NAME: 'mymaster' })).toEqual([
      expect.stringMatching(
        /^REDIS_SENTINELS: undefined -> a comma-separated list of host:port.*\(REDIS_SENTINEL_NAME is set/,
      ),
    ]);
    expect(problemsOf({ REDIS_SENTINELS: 's1:26379', REDIS_SENTINEL_NAME: 'my master' })).toEqual([
      expect.stringMatching(/^REDIS_SENTINEL_NAME: "my master" -> .*no whitespace/),
    ]);
  });

  it('refuses a database other than 0 with a cluster, masking the password of REDIS_URL', () => {
    expect(problemsOf({ REDIS_CLUSTER_NODES: 'a:7000', REDIS_URL: 'redis://u:hunter2@x/3' })).toEqual([
      expect.stringMatching(/^REDIS_URL: "redis:\/\/u:\*\*\*@x\/3" -> database 0 .*got 3$/),
    ]);
    expect(parseConfig({ REDIS_CLUSTER_NODES: 'a:7000', REDIS_URL: 'redis://x/0' }).redisTopology.kind).toBe(
      'cluster',
    );
    // Sentinel: the database number is used on the master.
    expect(
      parseConfig({ REDIS_SENTINELS: 's:1', REDIS_SENTINEL_NAME: 'm', REDIS_URL: 'redis://x/3' })
        .redisTopology.kind,
    ).toBe('sentinel');
  });

  it('reports topology problems together with every other bad variable', () => {
    const problems = problemsOf({ REDIS_CLUSTER_NODES: 'x', MAX_CONCURRENT_JOBS: '0' });
    expect(problems.map((p) => p.split(':')[0])).toEqual(['REDIS_CLUSTER_NODES', 'MAX_CONCURRENT_JOBS']);
  });

  it('is pure: readRedisTopology returns problems instead of throwing, falling back to standalone', () => {
    const { topology, problems } = readRedisTopology({ REDIS_CLUSTER_NODES: 'a:1', REDIS_SENTINELS: 'b:2' });
    expect(topology).toEqual({ kind: 'standalone' });
    expect(problems.map((p) => p.name)).toEqual([
      'REDIS_CLUSTER_NODES',
      'REDIS_SENTINELS',
      'REDIS_SENTINEL_NAME',
    ]);
  });
});

describe('Sentinel client options', () => {
  const topology = {
    kind: 'sentinel',
    name: 'mymaster',
    sentinels: [
      { host: 's1', port: 26379 },
      { host: '::1', port: 26380 },
    ],
  } as const;

  it("asks the sentinels for the master; REDIS_URL's credentials and database apply to the master, its host not at all", () => {
    const o = redisSentinelOptions('redis://app:pw@ignored.example:1/2', topology);
    expect(o).toMatchObject({
      sentinels: [
        { host: 's1', port: 26379 },
        { host: '::1', port: 26380 },
      ],
      name: 'mymaster',
      role: 'master',
      db: 2,
      username: 'app',
      password: 'pw',
      failoverDetector: true,
    });
    expect(o).not.toHaveProperty('host');
    expect(o).not.toHaveProperty('port');
    expect(o).not.toHaveProperty('tls');
    expect(o).not.toHaveProperty('sentinelPassword');
  });

  it('rediss:// means TLS to the master and to the sentinels, with the same CA', () => {
    const o = redisSentinelOptions('rediss://h:1', topology, {
      username: undefined,
      password: undefined,
      tls: { caFile: '/ca.pem', ca: 'PEM' },
    });
    expect(o).toMatchObject({
      tls: { ca: 'PEM' },
      sentinelTLS: { ca: 'PEM' },
      enableTLSForSentinelMode: true,
    });
  });

  it('logs in to the sentinels with REDIS_SENTINEL_USERNAME/PASSWORD, only with sentinels', () => {
    const c = parseConfig({
      REDIS_SENTINELS: 's1:26379',
      REDIS_SENTINEL_NAME: 'mymaster',
      REDIS_SENTINEL_USERNAME: 'watcher',
      REDIS_SENTINEL_PASSWORD: 's3cret',
      REDIS_URL: 'redis://:datapw@x',
    });
    expect(c.security.secrets).toContain('s3cret');
    if (c.redisTopology.kind !== 'sentinel') throw new Error('expected a sentinel topology');
    expect(redisSentinelOptions(c.redisUrl, c.redisTopology, c.security.redis)).toMatchObject({
      password: 'datapw',
      sentinelUsername: 'watcher',
      sentinelPassword: 's3cret',
    });
    expect(problemsOf({ REDIS_SENTINEL_PASSWORD: 's3cret' })).toEqual([
      'REDIS_SENTINEL_PASSWORD: "<secret of 6 characters>" -> unset unless REDIS_SENTINELS is set (it is how the sidecar logs in to the sentinels)',
    ]);
  });

  it('reconnects and resends on READONLY only (a demoted master), and retries reconnects within 0.5 s', () => {
    const o = redisSentinelOptions('redis://h:1', topology);
    const onError = o.reconnectOnError as (err: Error) => boolean | 1 | 2;
    expect(onError(new Error("READONLY You can't write against a read only replica."))).toBe(2);
    expect(onError(new Error('FENCED lease lost'))).toBe(false);
    expect(onError(new Error('ERR unknown command'))).toBe(false);
    expect(isReadOnlyReplicaError(new Error('READONLY x'))).toBe(true);
    const retry = o.retryStrategy as (times: number) => number;
    expect([1, 3, 5, 50].map(retry)).toEqual([100, 300, 500, 500]);
  });
});

describe('Sentinel connection errors', () => {
  it('point at the sentinel settings, not at the data nodes', () => {
    const unreachable = new Error(
      'All sentinels are unreachable. Retrying from scratch after 100ms. Last error: Connection is closed.',
    );
    expect(connectionCause('redis', unreachable, { tls: false })).toMatch(
      /^no sentinel of REDIS_SENTINELS answered/,
    );
    const refused = new Error(
      'All sentinels are unreachable. Retrying from scratch after 100ms. Last error: WRONGPASS invalid username-password pair',
    );
    expect(connectionCause('redis', refused, { tls: false })).toMatch(/REDIS_SENTINEL_PASSWORD\)$/);
  });
});
