import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

/**
 * The hardware's own SET rate: `redis-benchmark -t set` against the server of `redisUrl`, with values
 * of `size` bytes, `clients` connections and `depth` commands pipelined per connection. Resolves to
 * SETs per second as redis-benchmark reports them. Without -r every request SETs the same key
 * (`key:__rand_int__`): nothing is left behind but that one key, which the caller deletes.
 *
 * With `distinct`, each request is instead `SET <keyPrefix><random> <value> EX <ttlSec>` over `keys`
 * distinct keys (-r), the work a refresh asks of Redis without the fence: keys that miss the CPU
 * caches, each with its TTL. The keys stay behind (at most `keys`, all under `keyPrefix`) for the caller
 * to delete.
 *
 * @throws when redis-benchmark fails or its output has no SET rate.
 */
export async function redisBenchmark(
  redisUrl: string,
  o: {
    size: number;
    clients: number;
    depth: number;
    requests: number;
    distinct?: { keyPrefix: string; keys: number; value: string; ttlSec: number };
  },
): Promise<number> {
  const url = new URL(redisUrl);
  const d = o.distinct;
  const { stdout } = await execFileAsync(
    'redis-benchmark',
    [
      ...['-h', url.hostname, '-p', url.port || '6379'],
      ...['-P', String(o.depth), '-c', String(o.clients), '-n', String(o.requests), '-q'],
      ...(d === undefined
        ? ['-t', 'set', '-d', String(o.size)]
        : ['-r', String(d.keys), 'SET', `${d.keyPrefix}__rand_int__`, d.value, 'EX', String(d.ttlSec)]),
    ],
    { maxBuffer: 16 * 1024 * 1024 },
  );
  // The summary line: `SET: <rate> requests per second`, or with a command, the command then the rate.
  const last = [...stdout.matchAll(/ ([\d.]+) requests per second/g)].at(-1)?.[1];
  if (last === undefined) throw new Error(`bench: cannot read redis-benchmark output: ${stdout.slice(-300)}`);
  return Number(last);
}
