import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisFreshnessStore } from '../../src/cache/freshness.js';
import { LeaderLease } from '../../src/cache/leader-lease.js';
import { FencedError, RedisCacheWriter } from '../../src/cache/writer.js';
import { createSystemClock } from '../../src/runner/clock.js';
import { servicesEnv } from './env.js';

const log = pino({ level: 'silent' });

describe('leader lease and write fencing (real Redis)', () => {
  const prefix = `test-lease-${randomUUID()}`;
  const leaseKey = `${prefix}:leader`;
  const clients: Redis[] = [];
  const leases: LeaderLease[] = [];
  const client = (): Redis => {
    const r = new Redis(servicesEnv().redisUrl, { maxRetriesPerRequest: 0, retryStrategy: () => null });
    clients.push(r);
    return r;
  };
  let admin: Redis;

  function lease(redis: Redis, leaseMs: number, changes: boolean[]): LeaderLease {
    const l = new LeaderLease({
      redis,
      key: leaseKey,
      leaseMs,
      clock: createSystemClock(),
      log,
      onChange: (leader) => changes.push(leader),
    });
    leases.push(l);
    return l;
  }

  beforeAll(async () => {
    admin = client();
    await admin.ping();
  });
  afterAll(async () => {
    for (const l of leases) await l.stop();
    const stale = await admin.keys(`${prefix}:*`);
    if (stale.length > 0) await admin.del(...stale);
    for (const r of clients) r.disconnect();
  });

  it('lets exactly one of two replicas lead, with a token that carries a growing epoch', async () => {
    const a: boolean[] = [];
    const b: boolean[] = [];
    const la = lease(client(), 3000, a);
    const lb = lease(client(), 3000, b);
    la.start();
    await expect.poll(() => la.isLeader).toBe(true);
    lb.start();
    await new Promise((r) => setTimeout(r, 1500)); // several renewal cycles of both
    expect([la.isLeader, lb.isLeader]).toEqual([true, false]);
    expect(a).toEqual([true]);
    expect(b).toEqual([]);
    const token = await admin.get(leaseKey);
    expect(token).toMatch(new RegExp(`^\\d+:${la.replicaId.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`));
    // Releasing on stop hands over without waiting for expiry.
    await la.stop();
    await expect.poll(() => lb.isLeader, { timeout: 3000 }).toBe(true);
    expect(Number((await admin.get(leaseKey))!.split(':')[0])).toBeGreaterThan(Number(token!.split(':')[0]));
    await lb.stop();
  });

  it('a leader cut off from Redis steps down locally no later than its lease expires', async () => {
    const cut: boolean[] = [];
    const redisA = client();
    const la = lease(redisA, 1500, cut);
    la.start();
    await expect.poll(() => la.isLeader).toBe(true);
    const b: boolean[] = [];
    const lb = lease(client(), 1500, b);
    redisA.disconnect(); // renewals now fail
    lb.start();
    await expect.poll(() => lb.isLeader, { timeout: 5000 }).toBe(true);
    // A had already given up by the time B could take the lease.
    expect(cut).toEqual([true, false]);
    await lb.stop();
  });

  it('fences writes inside Redis: a deposed leader cannot overwrite the new leader, and steps down', async () => {
    const a: boolean[] = [];
    const la = lease(client(), 10_000, a);
    la.start();
    await expect.poll(() => la.isLeader).toBe(true);
    const writerA = new RedisCacheWriter(client(), la.fence());
    const freshA = new RedisFreshnessStore(client(), prefix, la.fence());
    const key = `${prefix}:trending:1h`;
    const signal = new AbortController().signal;
    expect(await writerA.write([{ key, value: 'from-a' }], 60, signal)).toBe(1);
    await freshA.recordSuccess(
      'trending-1h',
      { lastSuccessAt: 1, runId: 'a', items: 1, durationMs: 1 },
      signal,
    );

    // B takes over while A still believes it leads (as after a long GC pause or a partition).
    await admin.del(leaseKey);
    const b: boolean[] = [];
    const lb = lease(client(), 10_000, b);
    lb.start();
    await expect.poll(() => lb.isLeader).toBe(true);
    const writerB = new RedisCacheWriter(client(), lb.fence());
    await writerB.write([{ key, value: 'from-b' }], 60, signal);
    expect(la.isLeader).toBe(true); // A has not noticed yet: only the fence protects B's data

    await expect(writerA.write([{ key, value: 'stale-a' }], 60, signal)).rejects.toBeInstanceOf(FencedError);
    expect(await admin.get(key)).toBe('from-b');
    expect(a).toEqual([true, false]); // the rejected write made A step down at once
    await expect(
      freshA.recordSuccess(
        'trending-1h',
        { lastSuccessAt: 2, runId: 'stale', items: 1, durationMs: 1 },
        signal,
      ),
    ).rejects.toBeInstanceOf(FencedError);
    expect(await admin.hget(`${prefix}:job:trending-1h`, 'run_id')).toBe('a');
    await lb.stop();
  });
});
