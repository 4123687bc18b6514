import type { CacheWriter } from '../cache/writer.js';
import { MAX_STATE_AGE_SEC } from './suggested-users-state.js';

/**
 * The Redis marker of suggested-users, `{p}:job:suggested-users:generation`: which writer's values the
 * suggestion keys hold. The incremental mode only extends a key it did not rewrite while the marker
 * names the run whose state (buffers, watermark) describes that key; any other writer of suggestion
 * keys must leave the marker naming nobody, or a value that writer computed from a graph the state
 * never saw would be extended as if it were the state's (a follow made before that writer and undone
 * after it would stay cached until the next full refresh).
 *
 * Values (`g` is a run's `runId:attempt`):
 * - `g`: the incremental-mode run g finished, and nobody wrote suggestions while it ran or since;
 * - `running:g`: the incremental-mode run g is writing (set before its first write);
 * - `full:g`: the full-mode run g (a sidecar with SUGGESTED_USERS_MODE=full, or a one-off `once`
 *   beside an incremental sidecar) is writing or wrote values no state describes, or the
 *   incremental-mode run g lost its claim while it wrote.
 *
 * The hand-over: an incremental run claims the marker at its start, from the previous run's `g` to
 * `running:g'` by compare-and-set (a full run in that mode sets it outright), extends keys only while it
 * still reads `running:g'`, and at its end sets `g'` only if it still reads `running:g'`; if it does
 * not (another writer claimed it meanwhile, perhaps already handed it to its own run), it sets
 * `full:g'`, because its own writes may have landed after that writer's. A full-mode run sets `full:g`
 * before its first write and again after its last. So whichever way another writer's writes overlap
 * an incremental-mode run (or two incremental-mode processes' runs overlap), the marker ends naming
 * nobody, and the next run is a full refresh (`full_reason` `cache_generation_mismatch`).
 */

/** The marker's key. */
export function generationMarkerKey(keyPrefix: string): string {
  return `${keyPrefix}:job:suggested-users:generation`;
}

/** How long a marker lives: a state older than this is not trusted anyway (suggested-users-state.ts). */
const MARKER_TTL_SEC = MAX_STATE_AGE_SEC;

/** The marker of an incremental-mode run `generation` while it writes. */
export function runningMarker(generation: string): string {
  return `running:${generation}`;
}

/**
 * A full-mode run's mark: sets the marker to `full:<generation>` (fenced like every write of the run).
 * Called before the run's first write and again after its last, whatever the outcome.
 */
export function markFullModeWrites(
  cache: Pick<CacheWriter, 'write'>,
  keyPrefix: string,
  generation: string,
  signal: AbortSignal,
): Promise<void> {
  return setMarker(cache, keyPrefix, `full:${generation}`, signal);
}

/** Sets the marker outright to `value`, with its TTL. */
async function setMarker(
  cache: Pick<CacheWriter, 'write'>,
  keyPrefix: string,
  value: string,
  signal: AbortSignal,
): Promise<void> {
  await cache.write([{ key: generationMarkerKey(keyPrefix), value }], MARKER_TTL_SEC, signal);
}

/**
 * An incremental-mode run's claim before its first write: from `previous` (the last run's generation)
 * to `running:<generation>` by compare-and-set when given, outright for a full refresh (`previous`
 * undefined). Resolves to false when the marker did not name `previous`: the cache holds values the
 * state does not describe, and the run must be a full refresh.
 */
export async function claimMarker(
  cache: Pick<CacheWriter, 'write' | 'compareAndSet'>,
  keyPrefix: string,
  run: { previous: string | undefined; generation: string },
  signal: AbortSignal,
): Promise<boolean> {
  const key = generationMarkerKey(keyPrefix);
  const value = runningMarker(run.generation);
  if (run.previous !== undefined) {
    // Incremental runs are only decided with a writer that has it (decideRefresh's canExtend).
    if (cache.compareAndSet === undefined) return false;
    return cache.compareAndSet(key, run.previous, value, MARKER_TTL_SEC, signal);
  }
  await setMarker(cache, keyPrefix, value, signal);
  return true;
}

/**
 * An incremental-mode run's last step: the marker names `generation` if it still reads
 * `running:<generation>`. Resolves to false when another writer changed it during the run: the marker
 * is then set to `full:<generation>`, so the next run of any process is a full refresh. (Left as the
 * other writer left it, it could name that writer's finished run, whose next run would then extend
 * the values this run wrote after that writer's claim as if its own state described them.) A writer
 * without compareAndSet (every run of it is a full refresh) sets the marker outright.
 */
export async function settleMarker(
  cache: Pick<CacheWriter, 'write' | 'compareAndSet'>,
  keyPrefix: string,
  generation: string,
  signal: AbortSignal,
): Promise<boolean> {
  const key = generationMarkerKey(keyPrefix);
  if (cache.compareAndSet === undefined) {
    await setMarker(cache, keyPrefix, generation, signal);
    return true;
  }
  if (await cache.compareAndSet(key, runningMarker(generation), generation, MARKER_TTL_SEC, signal)) {
    return true;
  }
  await setMarker(cache, keyPrefix, `full:${generation}`, signal);
  return false;
}
