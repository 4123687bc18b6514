import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

/**
 * The hardware's own SET rate: `redis-benchmark -t set` against the server of `redisUrl`, with values
 * of `size` bytes, `clients` connections and `depth` commands pipelined per connection. Resolves to
 * SETs per second as redis-benchmark reports them. Without -r every request SETs the same key
 * (`key:__rand_int__`): nothing is left behind but that one key, which the caller deletes.
 *
 * @throws when redis-benchmark fails or its output has no SET rate.
 */
export async function redisBenchmark(
  redisUrl: string,
  o: { size: number; clients: number; depth: number; requests: number },
): Promise<number> {
  const url = new URL(redisUrl);
  const { stdout } = await execFileAsync(
    'redis-benchmark',
    [
      ...['-h', url.hostname, '-p', url.port || '6379', '-t', 'set', '-d', String(o.size)],
      ...['-P', String(o.depth), '-c', String(o.clients), '-n', String(o.requests), '-q'],
    ],
    { maxBuffer: 16 * 1024 * 1024 },
  );
  const last = [...stdout.matchAll(/SET: ([\d.]+) requests per second/g)].at(-1)?.[1];
  if (last === undefined) throw new Error(`bench: cannot read redis-benchmark output: ${stdout.slice(-300)}`);
  return Number(last);
}
