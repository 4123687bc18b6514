import { randomUUID } from 'node:crypto';
import type { BaseQueryParams, ClickHouseClient } from '@clickhouse/client';
import type { Logger } from 'pino';
import { runScopeOf } from '../runner/run-scope.js';

/** How long a `KILL QUERY … SYNC` may take before the run lets go anyway (the time limit remains). */
const KILL_TIMEOUT_MS = 5_000;
/**
 * Added to the run's remaining budget for the server-side limit: the client's abort (and its KILL) is
 * the primary stop; the server's own limit is the backstop for when neither reaches the server.
 */
const SERVER_LIMIT_SLACK_SEC = 1;

/** How many of a signal's most recent query ids a KILL names. */
const TRACKED_PER_SIGNAL = 64;

/** The client methods whose requests run a query on the server and take an `abort_signal`. */
const GUARDED = new Set<PropertyKey>(['query', 'command', 'exec', 'insert']);

/**
 * Wraps a ClickHouse client so that aborting a request also stops its query on the server.
 *
 * Why: aborting the HTTP request only closes the socket; the server notices when it next writes, which
 * for a query that aggregates before it answers can be many seconds (a timed-out suggested-users batch
 * was seen running 14 s and 2.4 GB past its run; `cancel_http_readonly_queries_on_client_close` did not
 * help). So every query gets a `query_id`, and when its signal aborts, whatever the cause (timeout,
 * cancel, shutdown, lost leadership), one separate request sends
 * `KILL QUERY WHERE query_id IN (…) SYNC` for the queries issued under that signal. For a run's signal
 * (see `RunScope`) the run's permit is held until the KILL returns, so the next run of the job never
 * overlaps a query still being stopped, and every query carries `max_execution_time` from the run's
 * remaining budget (rounded up, plus 1 s) as a server-side backstop.
 *
 * Calls without `abort_signal` pass through with only a `query_id` added. `close()` and every other
 * method are the wrapped client's own.
 */
export function withQueryCancellation(client: ClickHouseClient, log?: Logger): ClickHouseClient {
  // Per signal, the query ids issued under it; a run's signal lives as long as the run.
  const issued = new WeakMap<AbortSignal, string[]>();

  const kill = async (ids: string[]): Promise<void> => {
    const started = Date.now();
    try {
      await client.command({
        query: 'KILL QUERY WHERE query_id IN {ids:Array(String)} SYNC',
        query_params: { ids },
        abort_signal: AbortSignal.timeout(KILL_TIMEOUT_MS),
      });
      log?.debug({ query_ids: ids, ms: Date.now() - started }, 'clickhouse: killed aborted queries');
    } catch (err) {
      log?.warn(
        { err, query_ids: ids },
        'clickhouse: could not kill aborted queries; the time limit stops them',
      );
    }
  };

  const track = (signal: AbortSignal, queryId: string): void => {
    const ids = issued.get(signal);
    if (ids) {
      ids.push(queryId);
      // A run that issued hundreds of queries (one per batch) finished the old ones long ago; keeping
      // the most recent bounds the KILL request's size.
      if (ids.length > TRACKED_PER_SIGNAL) ids.shift();
      return;
    }
    issued.set(signal, [queryId]);
    // One listener per signal, however many queries the run makes (no listener pile-up on the signal).
    signal.addEventListener(
      'abort',
      () => {
        const all = issued.get(signal) ?? [];
        const killed = kill(all);
        runScopeOf(signal)?.holdUntil(killed);
      },
      { once: true },
    );
  };

  const guard = (params: BaseQueryParams): BaseQueryParams => {
    const signal = params.abort_signal;
    const scope = runScopeOf(signal);
    const queryId =
      params.query_id ??
      (scope
        ? `cache-refresher:${scope.jobId}:${scope.runId}:${randomUUID()}`
        : `cache-refresher:${randomUUID()}`);
    if (signal === undefined || signal.aborted) return { ...params, query_id: queryId };
    track(signal, queryId);
    if (scope === undefined) return { ...params, query_id: queryId };
    const budgetSec = Math.max(1, Math.ceil(scope.remainingMs() / 1000)) + SERVER_LIMIT_SLACK_SEC;
    // A job's own, tighter limit stays.
    const own = params.clickhouse_settings?.max_execution_time ?? Infinity;
    const limitSec = Math.min(budgetSec, own > 0 ? own : Infinity);
    return {
      ...params,
      query_id: queryId,
      clickhouse_settings: { ...params.clickhouse_settings, max_execution_time: limitSec },
    };
  };

  return new Proxy(client, {
    get(target, prop, receiver) {
      const value: unknown = Reflect.get(target, prop, receiver);
      if (typeof value !== 'function') return value;
      const method = value as (params: BaseQueryParams) => unknown;
      if (!GUARDED.has(prop)) return method.bind(target);
      return (params: BaseQueryParams) => method.call(target, guard(params));
    },
  });
}
