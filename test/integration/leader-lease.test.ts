import { randomUUID } from 'node:crypto';
import { createServer, connect, type AddressInfo, type Socket } from 'node:net';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisFreshnessStore } from '../../src/cache/freshness.js';
import { LeaderLease } from '../../src/cache/leader-lease.js';
import { fenceKeyForSlot } from '../../src/cache/slots.js';
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

  it('fences bulk writes (the MULTI/EXEC path, several transactions in flight): values and TTLs land together; a deposed leader and a lower epoch change nothing', async () => {
    const a: boolean[] = [];
    const la = lease(client(), 10_000, a);
    la.start();
    await expect.poll(() => la.isLeader).toBe(true);
    const writerA = new RedisCacheWriter(client(), la.fence());
    const signal = new AbortController().signal;
    // About 1 KB a value, as the suggestions lists: 400 keys make several transactions per call.
    const pad = 'x'.repeat(1000);
    const entries = (tag: string) =>
      Array.from({ length: 400 }, (_, i) => ({ key: `${prefix}:bulk:${i}`, value: `${tag}:${i}:${pad}` }));
    const keys = entries('').map((e) => e.key);

    // A reader on its own connection, between transactions: never a value without its TTL.
    const reader = client();
    const untimed = `local n = 0
for _, k in ipairs(KEYS) do
  if redis.call('TTL', k) == -1 then n = n + 1 end
end
return n`;
    const done = new AbortController();
    const seen: number[] = [];
    const polling = (async () => {
      while (!done.signal.aborted) seen.push(Number(await reader.eval(untimed, keys.length, ...keys)));
    })();
    for (let rep = 0; rep < 3; rep++) expect(await writerA.write(entries('a'), 60, signal)).toBe(400);
    done.abort();
    await polling;
    expect(seen.length).toBeGreaterThan(0);
    expect(seen.every((n) => n === 0)).toBe(true);
    for (const ttl of await Promise.all(keys.map((k) => admin.ttl(k)))) expect(ttl).toBeGreaterThan(50);

    // A newer epoch has written this slot (the fence key) while A's lease still holds: refused.
    const fenceKey = fenceKeyForSlot(leaseKey, 0);
    const epochA = Number(la.fence().token()!.split(':')[0]);
    await admin.set(fenceKey, String(epochA + 1));
    await expect(writerA.write(entries('lower'), 60, signal)).rejects.toBeInstanceOf(FencedError);
    expect(a).toEqual([true, false]);
    expect(await admin.mget(keys)).toEqual(entries('a').map((e) => e.value));
    await la.stop();

    // B takes over while a second A-like writer still believes it leads: refused at its first write.
    await admin.del(leaseKey);
    const c: boolean[] = [];
    const lc = lease(client(), 10_000, c);
    lc.start();
    await expect.poll(() => lc.isLeader).toBe(true);
    const writerC = new RedisCacheWriter(client(), lc.fence());
    await admin.del(leaseKey);
    const lb = lease(client(), 10_000, []);
    lb.start();
    await expect.poll(() => lb.isLeader).toBe(true);
    expect(lc.isLeader).toBe(true); // C has not noticed yet: only the fence protects B's data
    await expect(writerC.write(entries('stale'), 60, signal)).rejects.toBeInstanceOf(FencedError);
    expect(c).toEqual([true, false]);
    expect(await admin.mget(keys)).toEqual(entries('a').map((e) => e.value));
    await new RedisCacheWriter(client(), lb.fence()).write(entries('b'), 60, signal);
    expect(await admin.mget(keys)).toEqual(entries('b').map((e) => e.value));
    await lb.stop();
  });

  it("compare-and-set (the incremental mode's marker): sets value and TTL only on a match; fenced like every write", async () => {
    const a: boolean[] = [];
    const la = lease(client(), 10_000, a);
    la.start();
    await expect.poll(() => la.isLeader).toBe(true);
    const writerA = new RedisCacheWriter(client(), la.fence());
    const key = `${prefix}:job:suggested-users:generation`;
    const signal = new AbortController().signal;
    expect(await writerA.compareAndSet(key, 'g1', 'g2', 60, signal)).toBe(false); // no key: no match
    expect(await admin.exists(key)).toBe(0);
    await admin.set(key, 'g1');
    expect(await writerA.compareAndSet(key, 'other', 'g2', 60, signal)).toBe(false);
    expect(await admin.get(key)).toBe('g1');
    expect(await admin.ttl(key)).toBe(-1);
    expect(await writerA.compareAndSet(key, 'g1', 'g2', 60, signal)).toBe(true);
    expect(await admin.get(key)).toBe('g2');
    expect(await admin.ttl(key)).toBeGreaterThan(55);

    // A deposed leader's compare-and-set is refused inside Redis even when the value matches.
    await admin.del(leaseKey);
    const lb = lease(client(), 10_000, []);
    lb.start();
    await expect.poll(() => lb.isLeader).toBe(true);
    await new RedisCacheWriter(client(), lb.fence()).write([{ key, value: 'from-b' }], 60, signal);
    await expect(writerA.compareAndSet(key, 'from-b', 'stale-a', 60, signal)).rejects.toBeInstanceOf(
      FencedError,
    );
    expect(await admin.get(key)).toBe('from-b');
    expect(a).toEqual([true, false]);
    await lb.stop();
  });

  it('a connection lost in the middle of a transaction: what the client sends again after reconnecting is fenced, the rest never lands', async () => {
    const l = lease(client(), 10_000, []);
    l.start();
    await expect.poll(() => l.isLeader).toBe(true);
    const epoch = Number(l.fence().token()!.split(':')[0]);
    // Several transactions per call, 1.3 KB a value; the keys hold older values first.
    const pad = 'z'.repeat(1300);
    const entries = (tag: string) =>
      Array.from({ length: 500 }, (_, i) => ({ key: `${prefix}:cut:${i}`, value: `${tag}:${i}:${pad}` }));
    const keys = entries('').map((e) => e.key);
    await admin.mset(entries('old').flatMap((e) => [e.key, e.value]));

    // A proxy between the writer and Redis. Armed, it passes the writer's first 4 KB (the first
    // transaction's WATCH, check, MULTI and the start of its MSET), hands the writer Redis's first answer
    // (WATCH, check, MULTI: answered), then cuts the connection; before the writer gets a new one, a
    // newer epoch has written the slot. ioredis then sends the unanswered commands again on it.
    const upstream = new URL(servicesEnv().redisUrl);
    const sockets = new Set<Socket>();
    let armed = false;
    let cut = false;
    let newerEpochWrote: Promise<unknown> = Promise.resolve();
    const proxy = createServer((down) => {
      const up = connect(Number(upstream.port), upstream.hostname);
      for (const s of [down, up]) {
        sockets.add(s);
        s.on('error', () => undefined);
      }
      down.pause();
      void newerEpochWrote.then(() => {
        let passed = 0;
        down.on('data', (chunk: Buffer) => {
          if (!armed) return void up.write(chunk);
          const room = Math.max(0, 4096 - passed);
          passed += chunk.length;
          if (room > 0) up.write(chunk.subarray(0, room));
        });
        up.on('data', (chunk: Buffer) => {
          down.write(chunk);
          if (!armed || passed === 0 || cut) return;
          cut = true;
          armed = false;
          newerEpochWrote = admin.set(fenceKeyForSlot(leaseKey, 0), String(epoch + 1));
          down.destroy();
          up.destroy();
        });
        down.resume();
      });
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
    // Reconnecting and sending unanswered commands again, as the sidecar's own clients do.
    const writerRedis = new Redis(`redis://127.0.0.1:${(proxy.address() as AddressInfo).port}`, {
      maxRetriesPerRequest: 1,
    });
    try {
      await writerRedis.ping();
      armed = true;
      const writer = new RedisCacheWriter(writerRedis, l.fence());
      await expect(writer.write(entries('stale'), 60, new AbortController().signal)).rejects.toThrow();
      expect(cut).toBe(true);
      expect(await admin.mget(keys)).toEqual(entries('old').map((e) => e.value));
    } finally {
      writerRedis.disconnect();
      for (const s of sockets) s.destroy();
      await new Promise((r) => proxy.close(r));
      await l.stop();
    }
  });
});
