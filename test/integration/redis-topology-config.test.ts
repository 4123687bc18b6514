// The Redis topology variables (CONTRACT §12) on the real built CLI: contradictory or malformed
// settings exit 2 naming every bad variable, before connecting to anything.
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { createServer, type AddressInfo, type Server } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RunnerProcess } from '../fixtures/child.js';
import { servicesEnv } from './env.js';

const CLI = fileURLToPath(new URL('../../dist/cli.js', import.meta.url));

function cli(args: string[], env: Record<string, string>): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [CLI, ...args],
      { env: { PATH: process.env.PATH ?? '', ...env }, timeout: 30_000 },
      (err, _stdout, stderr) => {
        const code = err === null ? 0 : typeof err.code === 'number' ? err.code : -1;
        resolve({ code, stderr });
      },
    );
  });
}

describe('invalid Redis topology exits 2 before connecting', () => {
  // One listener stands in for every server, the sentinels and cluster nodes included: any connection
  // at all is a failure.
  let trap: Server;
  let connections = 0;
  let port: number;

  beforeAll(async () => {
    trap = createServer((socket) => {
      connections++;
      socket.destroy();
    });
    await new Promise<void>((resolve) => trap.listen(0, '127.0.0.1', resolve));
    port = (trap.address() as AddressInfo).port;
  });

  afterAll(async () => {
    await new Promise((resolve) => trap.close(resolve));
  });

  it('names both REDIS_CLUSTER_NODES and REDIS_SENTINELS, a malformed list and a missing master name', async () => {
    const base = {
      REDIS_URL: `redis://127.0.0.1:${port}`,
      CLICKHOUSE_URL: `http://127.0.0.1:${port}`,
      KAFKA_BROKERS: `127.0.0.1:${port}`,
      DLQ_SPOOL_DIR: path.join(os.tmpdir(), `never-${randomUUID()}`),
    };
    const both = await cli(['run'], {
      ...base,
      REDIS_CLUSTER_NODES: `127.0.0.1:${port}`,
      REDIS_SENTINELS: `127.0.0.1:${port}`,
      REDIS_SENTINEL_NAME: 'mymaster',
    });
    expect(both.code, both.stderr).toBe(2);
    expect(both.stderr).toContain('invalid configuration (2 problems)');
    expect(both.stderr).toContain(
      `REDIS_CLUSTER_NODES: got "127.0.0.1:${port}", expected unset when REDIS_SENTINELS is set`,
    );
    expect(both.stderr).toContain(
      `REDIS_SENTINELS: got "127.0.0.1:${port}", expected unset when REDIS_CLUSTER_NODES is set`,
    );

    const malformed = await cli(['run'], {
      ...base,
      REDIS_SENTINELS: `127.0.0.1:${port},,127.0.0.1`,
      REDIS_CLUSTER_NODES: '',
    });
    expect(malformed.code, malformed.stderr).toBe(2);
    expect(malformed.stderr).toContain('invalid configuration (2 problems)');
    expect(malformed.stderr).toContain(
      `REDIS_SENTINELS: got "127.0.0.1:${port},,127.0.0.1", expected a comma-separated list of host:port`,
    );
    expect(malformed.stderr).toContain('entry 2 is empty; entry 3 "127.0.0.1" has no port');
    expect(malformed.stderr).toContain('REDIS_SENTINEL_NAME: got nothing, expected the master');

    // Give a late connection attempt a moment to show up before asserting there was none.
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(connections).toBe(0);
  });
});

describe('sentinels that do not answer', () => {
  it('are one warning per outage naming REDIS_SENTINELS, not one per retry, and no crash', async () => {
    // A port nothing listens on: bound, then released.
    const probe = createServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
    const port = (probe.address() as AddressInfo).port;
    await new Promise((resolve) => probe.close(resolve));
    const runner = new RunnerProcess(
      {
        REDIS_SENTINELS: `127.0.0.1:${port}`,
        REDIS_SENTINEL_NAME: 'mymaster',
        CLICKHOUSE_URL: servicesEnv().clickhouseUrl,
        CACHE_KEY_PREFIX: `test-sentinel-down-${randomUUID()}`,
        HTTP_PORT: '0',
        DLQ_SPOOL_DIR: path.join(os.tmpdir(), `cache-refresher-test-${randomUUID()}`),
      },
      [],
    );
    try {
      await runner.httpPort();
      // Several rounds of "All sentinels are unreachable. Retrying from scratch after N ms".
      await new Promise((resolve) => setTimeout(resolve, 3_000));
      const warnings = runner.logs((l) => String(l.msg).startsWith('redis connection error'));
      expect(warnings.map((w) => w.msg)).toEqual([
        expect.stringMatching(/^redis connection error: no sentinel of REDIS_SENTINELS answered/),
      ]);
      expect((await runner.request('GET', '/readyz')).status).toBe(503);
    } finally {
      runner.kill('SIGKILL');
      await runner.exited;
    }
  });
});
