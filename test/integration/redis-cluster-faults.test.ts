// Issue 15 on a real 3-master Redis Cluster (scripts/services.sh up --redis-cluster): a master killed with
// kill -9 in the middle of a run, and a leader frozen past its lease while another sidecar takes over.
// Serial: it kills and restarts cluster nodes and freezes runner processes.
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import type { Cluster } from 'ioredis';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { LeaderLease } from '../../src/cache/leader-lease.js';
import { FencedError, RedisCacheWriter } from '../../src/cache/writer.js';
import { slotOf } from '../../src/cache/slots.js';
import { isTransientError } from '../../src/runner/retry.js';
import { createSystemClock } from '../../src/runner/clock.js';
import { RunnerProcess, type FixtureJob } from '../fixtures/child.js';
import { servicesEnv } from './env.js';
import { openDlqTarget, type DlqTarget } from './kafka-helpers.js';
import { clusterClient, deleteMatching, getMany, redisClusterNodes } from './topologies.js';

const run = promisify(execFile);
const log = pino({ level: 'silent' });

describe('sidecars on a Redis Cluster under faults', () => {
  const s = servicesEnv();
  let nodes: string;
  let admin: Cluster;
  let dlq: DlqTarget;
  const running: RunnerProcess[] = [];
  const prefixes: string[] = [];

  function sidecar(prefix: string, jobs: FixtureJob[], leaseSec: number): RunnerProcess {
    const r = new RunnerProcess(
      {
        REDIS_URL: s.redisUrl,
        REDIS_CLUSTER_NODES: nodes,
        CLICKHOUSE_URL: s.clickhouseUrl,
        KAFKA_BROKERS: s.kafkaBrokers.join(','),
        DLQ_TOPIC: dlq.topic,
        DLQ_SPOOL_DIR: path.join(dlq.spoolDir, randomUUID()),
        CACHE_KEY_PREFIX: prefix,
        HTTP_PORT: '0',
        LEADER_ELECTION: 'true',
        LEADER_LEASE_SEC: String(leaseSec),
      },
      jobs,
    );
    running.push(r);
    return r;
  }

  /** The pid and port of the master serving `key`'s slot, and the services.sh name of that node. */
  async function masterOf(key: string): Promise<{ name: string; pid: number; port: number }> {
    const slot = await admin.cluster('KEYSLOT', key);
    const ranges = await admin.cluster('SLOTS');
    const range = ranges.find(([from, to]) => slot >= from && slot <= to);
    const port = range?.[2]?.[1];
    if (port === undefined) throw new Error(`no master serves slot ${slot}`);
    const base = Number(nodes.split(',')[0]?.split(':')[1]);
    const name = `redis_cluster_${port - base + 1}`;
    const pid = Number(readFileSync(path.join(path.dirname(s.pidFile('redis')), `${name}.pid`), 'utf8'));
    return { name, pid, port };
  }

  async function clusterOk(): Promise<boolean> {
    try {
      const info = await admin.cluster('INFO');
      return /cluster_state:ok/.test(info) && /cluster_slots_ok:16384/.test(info);
    } catch {
      return false;
    }
  }

  beforeAll(async () => {
    nodes = await redisClusterNodes();
    admin = clusterClient(nodes);
    dlq = await openDlqTarget(s.kafkaBrokers, `test-cluster-faults-${randomUUID()}`);
  }, 120_000);
  afterEach(async () => {
    for (const r of running.splice(0)) {
      r.kill('SIGCONT');
      r.kill('SIGKILL');
      await r.exited;
    }
  });
  afterAll(async () => {
    // Every node back (a killed master rejoins as a replica of the one promoted in its place).
    await run('bash', [s.servicesScript, 'up', '--redis-cluster'], { timeout: 120_000 });
    for (const deadline = Date.now() + 30_000; !(await clusterOk()) && Date.now() < deadline;) {
      await new Promise((r) => setTimeout(r, 250));
    }
    for (const prefix of prefixes) await deleteMatching(admin, `${prefix}*`);
    await admin.quit();
    await dlq.close();
  }, 180_000);

  it('a master kill -9ed mid-run: its replica takes over; that run completes or fails with one DLQ record; the next succeeds with every key right', async () => {
    const prefix = `test-cluster-kill-${randomUUID()}`;
    prefixes.push(prefix);
    const count = 3000;
    const keys = Array.from({ length: count }, (_, i) => `${prefix}:k:${i}`);
    const jobs: FixtureJob[] = [
      // About 3 s of writes per run, across every master; retries cover a failover (1 + 2 + 4 s).
      {
        id: 'spread',
        kind: 'write-many',
        key: `${prefix}:k`,
        count,
        chunk: 100,
        pauseMs: 80,
        intervalSec: 1,
        retries: 3,
        timeoutSec: 40,
      },
    ];
    // The lease outlives a failover, so leadership is not what this test is about.
    const a = sidecar(prefix, jobs, 20);
    await a.waitForLog((l) => l.job === 'spread' && l.outcome === 'success', 60_000);
    expect(await clusterOk()).toBe(true);

    // A master serving data keys but not the lease.
    const leaseMaster = await masterOf(`${prefix}:leader`);
    let victimKey = keys[0]!;
    let victim = await masterOf(victimKey);
    for (const key of keys) {
      [victimKey, victim] = [key, await masterOf(key)];
      if (victim.port !== leaseMaster.port) break;
    }
    expect(victim.port).not.toBe(leaseMaster.port);

    const since = Date.now();
    const started = await a.waitForLog(
      (l) => l.msg === 'fixture job running' && Date.parse(String(l.time)) >= since,
      10_000,
    );
    await new Promise((r) => setTimeout(r, 700)); // mid-run: some chunks written, most to come
    process.kill(victim.pid, 'SIGKILL');
    const killedAt = Date.now();
    const runId = JSON.stringify(started.run_id);

    // The replica is promoted within the node timeout plus a few seconds.
    const promoted = async (): Promise<boolean> => {
      try {
        return (await masterOf(victimKey)).port !== victim.port && (await clusterOk());
      } catch {
        return false;
      }
    };
    await expect.poll(promoted, { timeout: 30_000, interval: 250 }).toBe(true);
    console.info(`cluster ok again ${Date.now() - killedAt} ms after kill -9 of ${victim.name}`);

    // The run that was in flight ends one way or the other; then a whole run succeeds after it.
    const ended = await a.waitForLog(
      (l) => l.job === 'spread' && typeof l.outcome === 'string' && Date.parse(String(l.time)) > killedAt,
      60_000,
    );
    const after = await a.waitForLog(
      (l) =>
        l.job === 'spread' &&
        l.outcome === 'success' &&
        Date.parse(String(l.time)) > Date.parse(String(ended.time)),
      60_000,
    );
    console.info(
      `run in flight at the kill: ${String(ended.outcome)} after ${String(ended.attempts)} attempt(s) (run ${runId}): ${JSON.stringify(ended.err ?? null).slice(0, 600)}`,
    );
    const failures = a.logs((l) => l.job === 'spread' && l.outcome !== undefined && l.outcome !== 'success');
    expect(failures.length).toBeLessThanOrEqual(1);
    if (failures.length === 1) {
      await expect.poll(() => dlq.reader.received.length, { timeout: 20_000 }).toBe(1);
    }
    await new Promise((r) => setTimeout(r, 1000));
    expect(dlq.reader.received).toHaveLength(failures.length);

    // Every key holds a value of a run that succeeded after the failover or a later one: never a
    // missing key, never a value of a run older than the last one that completed.
    const values = await getMany(admin, keys);
    expect(values.filter((v) => v === null)).toHaveLength(0);
    const starts = values.map((v) => Number(String(v).split(':')[1]));
    const successAt = Date.parse(String(after.time));
    const durationMs = Number(after.duration_ms);
    // The successful run began at successAt - durationMs: every key was written by it or a later run.
    expect(Math.min(...starts)).toBeGreaterThanOrEqual(successAt - durationMs - 1000);
    expect(new Set(values.map((v) => String(v).split(':')[0]))).toEqual(new Set([String(a.pid)]));
  }, 180_000);

  it('a leader frozen past its lease: the other sidecar takes over and writes; on thaw none of the old leader’s writes lands after the new leader’s in any slot, and it steps down', async () => {
    await expect.poll(clusterOk, { timeout: 30_000 }).toBe(true);
    const prefix = `test-cluster-frozen-${randomUUID()}`;
    prefixes.push(prefix);
    const count = 600;
    const keys = Array.from({ length: count }, (_, i) => `${prefix}:k:${i}`);
    const jobs: FixtureJob[] = [
      {
        id: 'spread',
        kind: 'write-many',
        key: `${prefix}:k`,
        count,
        chunk: 50,
        pauseMs: 20,
        intervalSec: 1,
        timeoutSec: 10,
      },
    ];
    const a = sidecar(prefix, jobs, 3);
    await a.waitForLog((l) => l.msg === 'became leader', 30_000);
    const b = sidecar(prefix, jobs, 3);
    await b.httpPort();
    await a.waitForLog((l) => l.job === 'spread' && l.outcome === 'success', 30_000);

    // Frozen mid-run, between two writes, with its token in hand.
    const since = Date.now();
    await a.waitForLog((l) => l.msg === 'fixture job running' && Date.parse(String(l.time)) >= since, 10_000);
    await new Promise((r) => setTimeout(r, 150));
    a.kill('SIGSTOP');
    await b.waitForLog((l) => l.msg === 'became leader', 15_000);
    await b.waitForLog((l) => l.job === 'spread' && l.outcome === 'success', 30_000);
    const byB = await getMany(admin, keys);
    expect(byB.every((v) => String(v).startsWith(`${b.pid}:`))).toBe(true);

    a.kill('SIGCONT');
    const thawed = Date.now();
    // For 4 s after the thaw every key holds a value of B's, whatever A attempts.
    const seen = new Set<string>();
    while (Date.now() < thawed + 4000) {
      for (const v of await getMany(admin, keys)) seen.add(String(v).split(':')[0] ?? '');
      await new Promise((r) => setTimeout(r, 50));
    }
    expect([...seen]).toEqual([String(b.pid)]);
    await a.waitForLog((l) => l.msg === 'no longer leader', 5000);
    expect(await a.metric('cache_refresher_leader')).toBe(0);
    expect(await b.metric('cache_refresher_leader')).toBe(1);
  }, 120_000);

  it('the fence is checked by each slot’s master: a deposed leader that still believes it leads is rejected in every slot the new leader wrote', async () => {
    await expect.poll(clusterOk, { timeout: 30_000 }).toBe(true);
    const prefix = `test-cluster-fence-${randomUUID()}`;
    prefixes.push(prefix);
    const leaseKey = `${prefix}:leader`;
    const clock = createSystemClock();
    const clients: Cluster[] = [];
    const lease = (changes: boolean[]): LeaderLease => {
      const redis = clusterClient(nodes);
      clients.push(redis);
      return new LeaderLease({
        redis,
        key: leaseKey,
        leaseMs: 10_000,
        clock,
        log,
        onChange: (l) => changes.push(l),
      });
    };
    const signal = new AbortController().signal;
    // Keys spread over slots (one or two per slot: the fenced script path) and 200 of ~1 KB in one slot
    // (the MULTI/EXEC path, several transactions).
    const pad = 'x'.repeat(1000);
    const entries = (tag: string) => [
      ...Array.from({ length: 300 }, (_, i) => ({ key: `${prefix}:k:${i}`, value: `${tag}:${i}` })),
      ...Array.from({ length: 200 }, (_, i) => ({
        key: `${prefix}:{hot}:k:${i}`,
        value: `${tag}:${i}:${pad}`,
      })),
    ];
    try {
      const a: boolean[] = [];
      const la = lease(a);
      la.start();
      await expect.poll(() => la.isLeader).toBe(true);
      const writerA = new RedisCacheWriter(clients[0]!, la.fence());
      expect(await writerA.write(entries('a'), 60, signal)).toBe(500);
      const hot = entries('a').slice(300);
      expect(
        await getMany(
          admin,
          hot.map((e) => e.key),
        ),
      ).toEqual(hot.map((e) => e.value));
      for (const { key } of hot) expect(await admin.ttl(key)).toBeGreaterThan(50);

      // B takes over while A still believes it leads (a GC pause, a partition).
      await admin.del(leaseKey);
      const lb = lease([]);
      lb.start();
      await expect.poll(() => lb.isLeader).toBe(true);
      expect(Number(lb.fence().token()!.split(':')[0])).toBeGreaterThan(
        Number(la.fence().token()!.split(':')[0]),
      );
      await new RedisCacheWriter(clients[1]!, lb.fence()).write(entries('b'), 60, signal);
      expect(la.isLeader).toBe(true);

      await expect(writerA.write(entries('stale'), 60, signal)).rejects.toBeInstanceOf(FencedError);
      expect(a).toEqual([true, false]);
      const values = await getMany(
        admin,
        entries('b').map((e) => e.key),
      );
      expect(values).toEqual(entries('b').map((e) => e.value));
      await lb.stop();
      await la.stop();
    } finally {
      for (const c of clients) c.disconnect();
    }
  });

  it('a resharding under a running writer (slots migrating with their fence keys): every write lands or fails transiently and is retried; no value is wrong', async () => {
    await expect.poll(clusterOk, { timeout: 30_000 }).toBe(true);
    const prefix = `test-cluster-reshard-${randomUUID()}`;
    prefixes.push(prefix);
    const keys = Array.from({ length: 2000 }, (_, i) => `${prefix}:r:${i}`);
    const masters = admin.nodes('master');
    const portOf = (n: (typeof masters)[number]): number => Number(n.options.port);
    const source = masters.find((n) => portOf(n) === keysPort(keys[0]!))!;
    function keysPort(key: string): number {
      return Number(admin.slots[slotOf(key)]?.[0]?.split(':')[1]);
    }
    const target = masters.find((n) => n !== source)!;
    const [sourceId, targetId] = [await source.cluster('MYID'), await target.cluster('MYID')];
    // The slots of the first keys that live on the source: these move while the writer runs.
    const moving = [...new Set(keys.filter((k) => keysPort(k) === portOf(source)).map(slotOf))].slice(0, 12);
    expect(moving.length).toBeGreaterThan(5);

    const writer = new RedisCacheWriter(admin, {
      key: `${prefix}:leader`,
      token: () => '7:test',
      lost: () => undefined,
    });
    const signal = new AbortController().signal;
    let round = 0;
    let transientFailures = 0;
    const state = { done: false };
    const writes = (async () => {
      while (!state.done || round < 3) {
        round++;
        const entries = keys.map((key, i) => ({ key, value: `${round}:${i}` }));
        for (;;) {
          try {
            await writer.write(entries, 120, signal);
            break;
          } catch (err) {
            // The runner retries a transient error; anything else would be a defect.
            if (!isTransientError(err)) throw err;
            transientFailures++;
            await new Promise((r) => setTimeout(r, 100));
          }
        }
        const values = await getMany(admin, keys);
        expect(values).toEqual(entries.map((e) => e.value));
      }
    })();
    for (const slot of moving) {
      await target.cluster('SETSLOT', slot, 'IMPORTING', sourceId);
      await source.cluster('SETSLOT', slot, 'MIGRATING', targetId);
      for (;;) {
        const inSlot = await source.cluster('GETKEYSINSLOT', slot, 50);
        if (inSlot.length === 0) break;
        await source.migrate('127.0.0.1', portOf(target), '', 0, 5000, 'REPLACE', 'KEYS', ...inSlot);
        await new Promise((r) => setTimeout(r, 20)); // writes interleave with a half-moved slot
      }
      for (const node of masters) await node.cluster('SETSLOT', slot, 'NODE', targetId);
    }
    state.done = true;
    await writes;
    console.info(
      `resharding: ${moving.length} slots moved under ${round} write rounds, ${transientFailures} transient failures retried`,
    );
    // The fence keys moved with their slots: a lower epoch is still refused there.
    const stale = new RedisCacheWriter(admin, {
      key: `${prefix}:leader`,
      token: () => '6:old',
      lost: () => undefined,
    });
    await expect(stale.write([{ key: keys[0]!, value: 'stale' }], 60, signal)).rejects.toBeInstanceOf(
      FencedError,
    );
    expect(await admin.get(keys[0]!)).toBe(`${round}:0`);
  }, 120_000);
});
