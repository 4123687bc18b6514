// CONTRACT §12 Sentinel, on real servers (`scripts/services.sh up --sentinel`: a master, a replica and
// three sentinels, down-after 2 s): the master is kill -9'd, the sentinels promote the replica, and a real
// runner process that found its master through the sentinels writes to the new master within the
// failover time plus one interval, without crashing; its lease and fencing keep working there.
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { createStandaloneRedis } from '../../src/clients.js';
import { RunnerProcess } from '../fixtures/child.js';
import { servicesEnv } from './env.js';

const run = promisify(execFile);

const INTERVAL_SEC = 1;
const LEASE_SEC = 10;

interface SentinelSet {
  sentinels: { host: string; port: number }[];
  name: string;
  /** Data node name in services.sh → its port. */
  nodes: { name: 'sentinel_master' | 'sentinel_replica'; port: number }[];
}

function readSentinelEnv(stateDir: string): SentinelSet {
  const text = readFileSync(path.join(stateDir, 'sentinel', 'env'), 'utf8');
  const value = (name: string): string => {
    const m = new RegExp(`^export ${name}=(.*)$`, 'm').exec(text);
    if (!m?.[1]) throw new Error(`.services/sentinel/env has no ${name}`);
    return m[1].trim();
  };
  return {
    sentinels: value('REDIS_SENTINELS')
      .split(',')
      .map((s) => {
        const [host = '', port = ''] = s.split(':');
        return { host, port: Number(port) };
      }),
    name: value('REDIS_SENTINEL_NAME'),
    nodes: [
      { name: 'sentinel_master', port: Number(value('SENTINEL_MASTER_PORT')) },
      { name: 'sentinel_replica', port: Number(value('SENTINEL_REPLICA_PORT')) },
    ],
  };
}

describe('Sentinel failover (real master, replica and three sentinels)', () => {
  const s = servicesEnv();
  const stateDir = inject('services').stateDir;
  let set: SentinelSet;
  let sentinel: Redis;
  let runner: RunnerProcess | undefined;
  let r: RunnerProcess;
  let killed: string | undefined;

  /** The server pid of a node of the set (`sentinel_master`, `sentinel_1`, …), from services.sh. */
  function pidOf(name: string): number {
    return Number(readFileSync(path.join(stateDir, `${name}.pid`), 'utf8').trim());
  }

  /** The master's port as a sentinel names it (default: the first sentinel). */
  async function masterPort(via: Redis = sentinel): Promise<number> {
    const reply = (await via.call('SENTINEL', 'get-master-addr-by-name', set.name)) as string[];
    return Number(reply[1]);
  }

  beforeAll(async () => {
    // Idempotent: starts whatever of the set is not running (a node killed by an earlier run rejoins
    // as a replica) and waits until the sentinels know each other and the replica.
    await run('bash', [s.servicesScript, 'up', '--sentinel'], { timeout: 200_000 });
    set = readSentinelEnv(stateDir);
    const first = set.sentinels[0];
    if (!first) throw new Error('no sentinel');
    sentinel = new Redis({ host: first.host, port: first.port, maxRetriesPerRequest: 1 });
  });

  afterEach(async () => {
    runner?.kill('SIGKILL');
    await runner?.exited;
    runner = undefined;
  });

  afterAll(async () => {
    sentinel.disconnect();
    // Leave the set whole for the next file or run: the killed node comes back as a replica.
    if (killed) await run('bash', [s.servicesScript, 'start', killed], { timeout: 60_000 });
  });

  /** A runner process on the sentinel set with leader election and one write job every interval. */
  function startRunner(prefix: string, key: string): RunnerProcess {
    runner = new RunnerProcess(
      {
        // Its host is ignored with sentinels: an address nothing listens on proves it.
        REDIS_URL: 'redis://127.0.0.1:1',
        REDIS_SENTINELS: set.sentinels.map((x) => `${x.host}:${x.port}`).join(','),
        REDIS_SENTINEL_NAME: set.name,
        CLICKHOUSE_URL: s.clickhouseUrl,
        CACHE_KEY_PREFIX: prefix,
        HTTP_PORT: '0',
        LEADER_ELECTION: 'true',
        LEADER_LEASE_SEC: String(LEASE_SEC),
        DLQ_SPOOL_DIR: `/tmp/cache-refresher-test-${randomUUID()}`,
        // What is measured is how fast the client follows the failover, not the job's backoff: runs
        // tick every second and each fails about a second into the outage, so depending on where the
        // kill falls in a tick two or three fail before the switch (3.2-3.4 s). A third failure puts
        // the job in backoff (default BACKOFF_AFTER_FAILURES 3: 4-8 s), and the first write came
        // 9.9 s after the kill once. Backoff has its own tests.
        BACKOFF_AFTER_FAILURES: '1000',
      },
      [{ id: 'probe', kind: 'write', key, intervalSec: INTERVAL_SEC, timeoutSec: 5, retries: 0 }],
    );
    return runner;
  }

  it('writes to the promoted replica within the failover time plus one interval; lease and fence hold there', async () => {
    const prefix = `test-sentinel-${randomUUID()}`;
    const key = `${prefix}:probe`;
    r = startRunner(prefix, key);
    const oldPort = await masterPort();
    const oldNode = set.nodes.find((n) => n.port === oldPort);
    const newNode = set.nodes.find((n) => n.port !== oldPort);
    if (!oldNode || !newNode) throw new Error(`master port ${oldPort} is neither node of the set`);
    const oldMaster = new Redis({ port: oldPort, maxRetriesPerRequest: 0, retryStrategy: () => null });
    oldMaster.on('error', () => undefined);
    const newMaster = new Redis({ port: newNode.port, maxRetriesPerRequest: 1 });

    const announced = await r.waitForLog((l) => l.msg === 'redis master from sentinels');
    expect(announced.master).toBe(`127.0.0.1:${oldPort}`);
    await r.waitForLog((l) => l.msg === 'became leader');
    await r.waitForLog((l) => l.msg === 'run succeeded');
    expect(await oldMaster.get(key)).toMatch(new RegExp(`^${r.pid}:`));
    const token = await oldMaster.get(`${prefix}:leader`);
    expect(token).toMatch(/^\d+:/);
    // The replica has what the master wrote (the lease included) before the kill.
    await expect.poll(() => newMaster.get(`${prefix}:leader`), { timeout: 5_000 }).toBe(token);

    const pid = pidOf(oldNode.name);
    const killedAt = Date.now();
    process.kill(pid, 'SIGKILL');
    killed = oldNode.name;
    oldMaster.disconnect();

    // The sentinels' failover: from the kill to the moment they name the replica.
    await expect.poll(() => masterPort(), { timeout: 30_000, interval: 50 }).toBe(newNode.port);
    const failoverMs = Date.now() - killedAt;

    // The first run that succeeded after the kill wrote its key and freshness record to the new master.
    const firstRun = await r.waitForLog(
      (l) => l.msg === 'run succeeded' && Date.parse(String(l.time)) > killedAt,
      30_000,
    );
    const firstWriteMs = Date.parse(String(firstRun.time)) - killedAt;
    console.info(
      `sentinel failover: ${failoverMs} ms from kill -9 to the sentinels naming the replica; ` +
        `first successful write ${firstWriteMs} ms after the kill (interval ${INTERVAL_SEC} s)`,
    );
    // 500 ms: the client's reconnect period under Sentinel; a run ticks once per interval.
    expect(firstWriteMs).toBeLessThanOrEqual(failoverMs + INTERVAL_SEC * 1000 + 500);
    const value = await newMaster.get(key);
    expect(value).toMatch(new RegExp(`^${r.pid}:\\d+$`));
    expect(Number(value?.split(':')[1])).toBeGreaterThan(killedAt);
    const freshness = await newMaster.hget(`${prefix}:job:probe`, 'last_success_at');
    expect(Number(freshness)).toBeGreaterThan(killedAt);
    const changed = await r.waitForLog((l) => l.msg === 'redis master changed (failover)');
    expect(changed.master).toBe(`127.0.0.1:${newNode.port}`);
    // Still the leader, under the same lease the new master inherited, and still alive.
    expect(await newMaster.get(`${prefix}:leader`)).toBe(token);
    expect(await r.metric('cache_refresher_leader')).toBe(1);

    // The fence works on the new master: once another token holds the lease, this runner's writes are
    // refused there and it steps down; the key keeps the value written before.
    await newMaster.set(`${prefix}:leader`, `999999:intruder`, 'PX', 20_000);
    await r.waitForLog((l) => l.msg === 'no longer leader', 10_000);
    const before = await newMaster.get(key);
    await new Promise((resolve) => setTimeout(resolve, 2 * INTERVAL_SEC * 1000));
    expect(await newMaster.get(key)).toBe(before);
    expect(await newMaster.get(`${prefix}:leader`)).toBe('999999:intruder');

    let exited = false;
    void r.exited.then(() => {
      exited = true;
    });
    await new Promise((resolve) => setImmediate(resolve));
    expect(exited, r.stderrText.slice(-2000)).toBe(false);
    await newMaster.del(key, `${prefix}:leader`, `${prefix}:leader:epoch`, `${prefix}:job:probe`);
    newMaster.disconnect();
  });

  it('leaves a demoted master that is still up (SENTINEL FAILOVER) and keeps writing on the new one', async () => {
    // The previous test killed a node: bring it back as a replica first.
    if (killed) await run('bash', [s.servicesScript, 'up', '--sentinel'], { timeout: 200_000 });
    killed = undefined;
    const prefix = `test-sentinel-${randomUUID()}`;
    const key = `${prefix}:probe`;
    r = startRunner(prefix, key);
    const oldPort = await masterPort();
    const newPort = set.nodes.find((n) => n.port !== oldPort)?.port;
    await r.waitForLog((l) => l.msg === 'became leader');
    await r.waitForLog((l) => l.msg === 'run succeeded');
    const newMaster = new Redis({ port: newPort, maxRetriesPerRequest: 1 });
    // The replica must be in sync, else the sentinels refuse to fail over to it.
    await expect
      .poll(async () => (await newMaster.info('replication')).includes('master_link_status:up'), {
        timeout: 20_000,
      })
      .toBe(true);

    const switchedAt = Date.now();
    await sentinel.call('SENTINEL', 'failover', set.name);
    await expect.poll(() => masterPort(), { timeout: 30_000, interval: 50 }).toBe(newPort);
    const namedAt = Date.now();
    const changed = await r.waitForLog((l) => l.msg === 'redis master changed (failover)', 10_000);
    expect(changed.master).toBe(`127.0.0.1:${newPort}`);
    const changedAt = Date.parse(String(changed.time));
    const firstRun = await r.waitForLog(
      (l) => l.msg === 'run succeeded' && Date.parse(String(l.time)) > changedAt,
      30_000,
    );
    // Every run from then on lands on the new master: its value keeps advancing there.
    const after = Date.parse(String(firstRun.time));
    await expect
      .poll(async () => Number((await newMaster.get(key))?.split(':')[1] ?? 0), { timeout: 10_000 })
      .toBeGreaterThan(after);
    const failedSince = r.logs((l) => l.msg === 'run failed' && Date.parse(String(l.time)) > switchedAt);
    console.info(
      `SENTINEL FAILOVER: sentinels switched ${namedAt - switchedAt} ms after the command, ` +
        `client on the new master ${changedAt - switchedAt} ms after it, ` +
        `first successful write there ${after - switchedAt} ms after it; ` +
        `${failedSince.length} failed run(s) in between; READONLY seen: ${r.stderrText.includes('READONLY')}`,
    );
    // The client follows the switch, timed from when a sentinel first named the new master (polled
    // every 50 ms), not from the command: how long the sentinels take is theirs. They switched 1.1 s
    // after the command, or 9-10 s after it in about half the runs of this file (when the node the
    // kill -9 test killed, back as a replica, is the one promoted), and the client followed within
    // 0.14-0.16 s either way.
    expect(changedAt - namedAt).toBeLessThanOrEqual(2_000);
    expect(await r.metric('cache_refresher_leader')).toBe(1);
    await newMaster.del(key, `${prefix}:leader`, `${prefix}:leader:epoch`, `${prefix}:job:probe`);
    newMaster.disconnect();
  });
  it('keeps connecting when the failover lands while a reconnect is asking a frozen sentinel', async () => {
    // ioredis 5 ends a Sentinel client for good when its failover detector drops the connection
    // while a reconnect is still waiting on a sentinel's answer (clients.ts). Made likely here: the
    // sentinel the client asks first is frozen (SIGSTOP, so each reconnect waits out the 2 s sentinel
    // timeout on it, most of every reconnect cycle), then the master is kill -9'd and the other two
    // fail over. Before the fix the client ended in about four runs of five and never wrote again.
    if (killed) await run('bash', [s.servicesScript, 'up', '--sentinel'], { timeout: 200_000 });
    killed = undefined;
    const prefix = `test-sentinel-${randomUUID()}`;
    const key = `${prefix}:probe`;
    const lines: Record<string, unknown>[] = [];
    const log = pino(
      { level: 'debug' },
      { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) },
    );
    const client = createStandaloneRedis(
      {
        redisUrl: 'redis://127.0.0.1:1',
        redisTopology: { kind: 'sentinel', sentinels: set.sentinels, name: set.name },
      },
      log,
    );
    await client.connect();
    await client.set(key, 'before', 'EX', 60);
    const oldPort = await masterPort();
    const newPort = set.nodes.find((n) => n.port !== oldPort)?.port;
    const oldNode = set.nodes.find((n) => n.port === oldPort);
    if (newPort === undefined || !oldNode)
      throw new Error(`master port ${oldPort} is neither node of the set`);
    const newMaster = new Redis({ port: newPort, maxRetriesPerRequest: 1 });
    await expect
      .poll(async () => (await newMaster.info('replication')).includes('master_link_status:up'), {
        timeout: 20_000,
      })
      .toBe(true);
    // The detector subscribes right after the connect; give it time to be listening.
    await new Promise((resolve) => setTimeout(resolve, 500));

    const first = set.sentinels[0];
    const others = set.sentinels.slice(1);
    if (!first || others.length < 2) throw new Error('the set needs three sentinels');
    const frozenPid = pidOf('sentinel_1');
    const askOther = new Redis({ host: others[0]?.host, port: others[0]?.port, maxRetriesPerRequest: 1 });
    process.kill(frozenPid, 'SIGSTOP');
    try {
      // sentinel_1 is the first sentinel of the list, the one the client asks first.
      const probe = new Redis({
        ...first,
        commandTimeout: 500,
        maxRetriesPerRequest: 0,
        retryStrategy: () => null,
      });
      probe.on('error', () => undefined);
      await expect(probe.ping()).rejects.toThrow();
      probe.disconnect();

      const pid = pidOf(oldNode.name);
      const killedAt = Date.now();
      process.kill(pid, 'SIGKILL');
      killed = oldNode.name;
      await expect.poll(() => masterPort(askOther), { timeout: 30_000, interval: 50 }).toBe(newPort);
      const failoverMs = Date.now() - killedAt;

      // Within 15 s of the switch the client writes to the new master, however its reconnects went.
      await expect
        .poll(
          async () => {
            await client.set(key, 'after', 'EX', 60).catch(() => undefined);
            return newMaster.get(key);
          },
          { timeout: 15_000, interval: 200 },
        )
        .toBe('after');
      const cutShort = lines.some((l) => String(l.msg).startsWith('redis client gave up a connect'));
      console.info(
        `sentinel frozen during failover: switch ${failoverMs} ms after kill -9, client writing to the ` +
          `new master ${Date.now() - killedAt} ms after it; connect cut short and resumed: ${cutShort}`,
      );
      expect(client.status).toBe('ready');
    } finally {
      process.kill(frozenPid, 'SIGCONT');
      client.disconnect();
      askOther.disconnect();
      await newMaster.del(key).catch(() => undefined);
      newMaster.disconnect();
    }
  }, 90_000);
});
