// Fenced Redis writes (issue 16 point 4, issue 15): the fenced write path as shipped against
// redis-benchmark's pipelined SET rate with the same value size, measured in the same run, with where
// the time goes (this process's CPU against Redis's own command time); and the suggestions write rate on
// a Redis Cluster against one node.
//
// Part of `npm run bench` (bench/run.ts calls benchFencedWrites; results under `fencedWrites`), or alone:
//   node dist-bench/bench/writes.js --redis-url redis://127.0.0.1:16379 [--cluster-nodes h:p,h:p]
//        [--value-bytes 1316] [--keys 100000] [--reps 3]
// which merges its result into bench/results.json under the same key.
import { readFileSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Cluster, Redis } from 'ioredis';
import { SET_SCRIPT } from '../src/cache/fenced-sets.js';
import { SUGGESTED_USERS_BATCH_DEFAULTS } from '../src/config.js';
import { keys as cacheKeys } from '../src/cache/keys.js';
import type { RedisClient } from '../src/cache/redis-client.js';
import { runSlotScripts, slotCalls } from '../src/cache/slot-scripts.js';
import { RedisCacheWriter, yieldToLoop, type CacheEntry, type Fence } from '../src/cache/writer.js';
import { redisBenchmark } from './redis-benchmark.js';
import { fmt, spread, type Spread } from './stats.js';

/** Entries per writer call, as streamUserValues hands them over. */
const ENTRIES_PER_CALL = 2000;
/**
 * Writer calls in flight at once: suggested-users' batches in flight by default, each streaming its
 * result into Redis one awaited call at a time (SUGGESTED_USERS_PARALLELISM).
 */
const STREAMS = SUGGESTED_USERS_BATCH_DEFAULTS.parallelism;
/** redis-benchmark's pipeline depth for the reference rate (issue 16: `-P 64`). */
const BENCHMARK_DEPTH = 64;

export interface FencedWritesOptions {
  redisUrl: string;
  /** `REDIS_CLUSTER_NODES` of a cluster to compare against, if any. */
  clusterNodes?: string | undefined;
  /** Bytes per value (the suggestions' mean value size). */
  valueBytes: number;
  keys: number;
  reps: number;
  note: (line: string) => void;
}

interface PathFigures {
  setsPerSec: Spread;
  /** This process's CPU (user + system) per key written, µs. */
  clientCpuUsPerKey: Spread;
  /** Redis's own CPU per key written (INFO cpu, user + system), µs. */
  serverUsPerKey: Spread;
}

/** A value shaped like a suggestions list, `size` bytes. */
function suggestionsValue(size: number): string {
  const unit = '{"user_id":"12345","mutual_count":3,"reason":"3 mutual connections"},';
  return `[${unit.repeat(Math.ceil(size / unit.length)).slice(0, Math.max(0, size - 2))}]`;
}

/**
 * Redis's own CPU time so far (user + system, µs), over every master of a cluster: everything the server
 * spent, parsing and I/O included. (INFO commandstats would count a command inside EXEC or a script
 * twice, once for itself and once in its caller.)
 */
async function serverCpuUs(redis: RedisClient): Promise<number> {
  const nodes = redis instanceof Cluster ? redis.nodes('master') : [redis];
  let us = 0;
  for (const node of nodes) {
    const text = await node.info('cpu');
    for (const m of text.matchAll(/^used_cpu_(?:user|sys):([\d.]+)/gm)) us += Number(m[1]) * 1e6;
  }
  return us;
}

/**
 * Writes `entries` `ENTRIES_PER_CALL` at a time with `write`, from `streams` (default `STREAMS`) streams
 * that each await their call and yield to the event loop before the next, as streamUserValues does under
 * suggested-users' batches; rate and where the time went.
 */
async function measure(
  redis: RedisClient,
  entries: readonly CacheEntry[],
  write: (chunk: readonly CacheEntry[]) => Promise<unknown>,
  streams: number = STREAMS,
): Promise<{ rate: number; clientUs: number; serverUs: number }> {
  const server0 = await serverCpuUs(redis);
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  let next = 0;
  const stream = async (): Promise<void> => {
    while (next < entries.length) {
      const start = next;
      next += ENTRIES_PER_CALL;
      await write(entries.slice(start, start + ENTRIES_PER_CALL));
      await yieldToLoop();
    }
  };
  await Promise.all(Array.from({ length: streams }, stream));
  const ms = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  const serverUs = (await serverCpuUs(redis)) - server0;
  return {
    rate: entries.length / (ms / 1000),
    clientUs: (cpu.user + cpu.system) / entries.length,
    serverUs: serverUs / entries.length,
  };
}

/** A fence of our own: a lease taken for the bench, epoch 1 (no sidecar shares the prefix). */
async function benchFence(redis: RedisClient, prefix: string): Promise<Fence> {
  const key = cacheKeys.leader(prefix);
  const token = `1:bench-${process.pid}`;
  await redis.set(key, token, 'EX', 3600);
  return {
    key,
    token: () => token,
    lost: () => {
      throw new Error('bench: the fence refused the bench lease');
    },
  };
}

/** Every key under `prefix`, deleted (every master of a cluster). */
async function deleteUnder(redis: RedisClient, prefix: string): Promise<void> {
  const nodes = redis instanceof Cluster ? redis.nodes('master') : [redis];
  for (const node of nodes) {
    let cursor = '0';
    do {
      const [next, found] = await node.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 10_000);
      cursor = next;
      for (const k of found) await node.unlink(k);
    } while (cursor !== '0');
  }
}

/**
 * The fenced write path as shipped (RedisCacheWriter with a fence: guarded MULTI/EXEC of plain SETs),
 * the previous design (SETs inside the fenced Lua script) for where the time went, and redis-benchmark
 * (`-P 64`, 50 clients, same value size) as the physical reference — and the same redis-benchmark
 * writing `SET … EX` over as many distinct keys as the fenced path, the unfenced cost of the same work —
 * all in one run; then, with a cluster, the same suggestions-shaped writes on the cluster against the
 * one node.
 */
export async function benchFencedWrites(o: FencedWritesOptions) {
  const size = Math.max(2, Math.round(o.valueBytes));
  const value = suggestionsValue(size);
  const prefix = `bench-writes-${process.pid}`;
  o.note(
    `fenced writes: ${o.keys.toLocaleString('en-US')} SETs of ${size} B, fenced path vs redis-benchmark -P ${BENCHMARK_DEPTH}`,
  );
  // The machine is shared: the 1-minute load average at the start and the end says how idle it was.
  const loadBefore = loadavg()[0] ?? Number.NaN;
  const redis = new Redis(o.redisUrl, { maxRetriesPerRequest: 1 });
  const cluster = o.clusterNodes === undefined ? undefined : clusterOf(o.clusterNodes);
  try {
    const entries: CacheEntry[] = Array.from({ length: o.keys }, (_, i) => ({
      key: cacheKeys.suggestedUsers(prefix, String(i + 1)),
      value,
    }));
    const fence = await benchFence(redis, prefix);
    const shipped = new RedisCacheWriter(redis, fence);
    const signal = new AbortController().signal;
    const ttl = '600';
    const runs = {
      shipped: [] as Awaited<ReturnType<typeof measure>>[],
      oneStream: [] as Awaited<ReturnType<typeof measure>>[],
      lua: [] as Awaited<ReturnType<typeof measure>>[],
    };
    const kinds = ['shipped', 'oneStream', 'lua'] as const;
    const benchmark: number[] = [];
    const distinctBenchmark: number[] = [];
    const clusterRuns: number[] = [];
    const nodeRuns: number[] = [];
    const clusterFence = cluster ? await benchFence(cluster, prefix) : undefined;
    // One unmeasured pass: every rep then overwrites existing keys, as a refresh does, and the first rep
    // does not pay for compiling the path and growing this process's heap, which a long run pays once.
    await measure(redis, entries, (chunk) => shipped.write(chunk, 600, signal));
    for (let rep = 0; rep < o.reps; rep++) {
      // Each rep in another order, so no path always runs first (or right after redis-benchmark).
      const order = kinds.map((_, i) => kinds[(i + rep) % kinds.length] ?? 'shipped');
      for (const kind of order) {
        runs[kind].push(
          await measure(
            redis,
            entries,
            (chunk) =>
              kind !== 'lua'
                ? shipped.write(chunk, 600, signal)
                : runSlotScripts(
                    redis,
                    fence,
                    SET_SCRIPT,
                    slotCalls(
                      redis,
                      chunk,
                      (e) => e.key,
                      500,
                      (c) => [ttl, ...c.map((e) => e.value)],
                    ),
                    'bench',
                  ),
            kind === 'oneStream' ? 1 : STREAMS,
          ),
        );
      }
      const reference = {
        size,
        clients: 50,
        depth: BENCHMARK_DEPTH,
        requests: Math.max(200_000, o.keys * 4),
      };
      benchmark.push(await redisBenchmark(o.redisUrl, reference));
      // The same SETs over as many distinct keys as the fenced path writes, each with its TTL: what the
      // work costs Redis without the fence, for where the time goes (not the target's reference).
      distinctBenchmark.push(
        await redisBenchmark(o.redisUrl, {
          ...reference,
          distinct: { keyPrefix: `${prefix}:rb:`, keys: o.keys, value, ttlSec: 600 },
        }),
      );
      await deleteUnder(redis, `${prefix}:rb:`);
      if (cluster && clusterFence) {
        const onCluster = new RedisCacheWriter(cluster, clusterFence);
        clusterRuns.push(
          (await measure(cluster, entries, (chunk) => onCluster.write(chunk, 600, signal))).rate,
        );
        nodeRuns.push((await measure(redis, entries, (chunk) => shipped.write(chunk, 600, signal))).rate);
      }
      o.note(
        `  rep ${rep + 1}: fenced (shipped) ${fmt(runs.shipped.at(-1)?.rate ?? 0)}/s, one stream ${fmt(runs.oneStream.at(-1)?.rate ?? 0)}/s, SETs in Lua ${fmt(runs.lua.at(-1)?.rate ?? 0)}/s, redis-benchmark -P ${BENCHMARK_DEPTH} ${fmt(benchmark.at(-1) ?? 0)}/s (distinct keys, EX ${fmt(distinctBenchmark.at(-1) ?? 0)}/s)` +
          (cluster
            ? `; suggestions writes on the cluster ${fmt(clusterRuns.at(-1) ?? 0)}/s, one node ${fmt(nodeRuns.at(-1) ?? 0)}/s`
            : ''),
      );
    }
    const figures = (list: Awaited<ReturnType<typeof measure>>[]): PathFigures => ({
      setsPerSec: spread(list.map((r) => r.rate)),
      clientCpuUsPerKey: spread(list.map((r) => r.clientUs)),
      serverUsPerKey: spread(list.map((r) => r.serverUs)),
    });
    const shippedFig = figures(runs.shipped);
    const luaFig = figures(runs.lua);
    const oneStreamFig = figures(runs.oneStream);
    const bench = spread(benchmark);
    const paired = (list: Awaited<ReturnType<typeof measure>>[]): Spread =>
      spread(list.map((r, i) => r.rate / (benchmark[i] ?? Number.NaN)));
    return {
      valueBytes: size,
      keys: o.keys,
      loadAverage1m: { start: loadBefore, end: loadavg()[0] ?? Number.NaN },
      entriesPerWriterCall: ENTRIES_PER_CALL,
      writerCallsInFlight: STREAMS,
      fenced: shippedFig,
      fencedOneStream: oneStreamFig,
      fencedSetsInLua: luaFig,
      redisBenchmark: { setsPerSec: bench, pipelineDepth: BENCHMARK_DEPTH, clients: 50 },
      ratioFenced: shippedFig.setsPerSec.median / bench.median,
      /** Each rep's fenced rate over that rep's redis-benchmark rate. */
      pairedRatiosFenced: paired(runs.shipped),
      ratioFencedOneStream: oneStreamFig.setsPerSec.median / bench.median,
      ratioFencedSetsInLua: luaFig.setsPerSec.median / bench.median,
      /**
       * redis-benchmark's `SET <key> <value> EX 600` over `keys` distinct keys (-r), same depth and
       * clients: the unfenced cost of the same writes, beside the one-key reference above.
       */
      redisBenchmarkDistinctKeysSetEx: { setsPerSec: spread(distinctBenchmark), keys: o.keys },
      ratioFencedToDistinctKeysSetEx: shippedFig.setsPerSec.median / spread(distinctBenchmark).median,
      ...(cluster
        ? {
            cluster: {
              suggestionsWritesPerSec: spread(clusterRuns),
              oneNodeWritesPerSec: spread(nodeRuns),
              ratio: spread(clusterRuns).median / spread(nodeRuns).median,
            },
          }
        : {}),
    };
  } finally {
    await deleteUnder(redis, prefix);
    if (cluster) {
      await deleteUnder(cluster, prefix);
      cluster.disconnect();
    }
    redis.disconnect();
  }
}

function clusterOf(nodes: string): Cluster {
  return new Cluster(
    nodes.split(',').map((n) => ({ host: n.split(':')[0] ?? '127.0.0.1', port: Number(n.split(':')[1]) })),
    { scaleReads: 'master', redisOptions: { maxRetriesPerRequest: 1 } },
  );
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      'redis-url': { type: 'string' },
      'cluster-nodes': { type: 'string' },
      'value-bytes': { type: 'string', default: '1316' },
      keys: { type: 'string', default: '100000' },
      reps: { type: 'string', default: '3' },
    },
  });
  const redisUrl = values['redis-url'] ?? process.env.REDIS_URL;
  if (redisUrl === undefined) throw new Error('bench: --redis-url or REDIS_URL is required');
  const result = await benchFencedWrites({
    redisUrl,
    clusterNodes: values['cluster-nodes'] ?? process.env.REDIS_CLUSTER_NODES,
    valueBytes: Number(values['value-bytes']),
    keys: Number(values.keys),
    reps: Number(values.reps),
    note: (line) => process.stderr.write(`${line}\n`),
  });
  const path = join(resolve(dirname(fileURLToPath(import.meta.url)), '../..'), 'bench', 'results.json');
  const results = JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
  writeFileSync(path, `${JSON.stringify({ ...results, fencedWrites: result }, null, 2)}\n`);
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === resolve(process.argv[1])) {
  main().catch((err: unknown) => {
    process.stderr.write(
      `bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
    );
    process.exitCode = 1;
  });
}
