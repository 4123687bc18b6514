/**
 * What a run's `AbortSignal` carries besides "aborted": which run it belongs to, how much of the run's
 * timeout budget is left, and a way for an adapter to make the run wait for its clean-up after an abort.
 *
 * Adapters (the ClickHouse query path) find the scope from the signal a job already passes them
 * (`abort_signal: ctx.signal`), so every job, built-in or not, gets server-side cancellation and a
 * server-side time limit without a line of its own. The scope rides on the signal under a private
 * symbol; a signal that is not a run's has none.
 */
export interface RunScope {
  readonly jobId: string;
  readonly runId: string;
  /** Milliseconds left before the run's timeout aborts it (negative once past). */
  remainingMs(): number;
  /**
   * Keeps the run's permit (and its overlap guard) until `work` settles after an abort, bounded like the
   * job itself: e.g. until the server has really stopped a query the client gave up on.
   */
  holdUntil(work: Promise<unknown>): void;
}

const SCOPE = Symbol('cache-refresher.runScope');

type ScopedSignal = AbortSignal & { [SCOPE]?: RunScope };

export function attachRunScope(signal: AbortSignal, scope: RunScope): void {
  Object.defineProperty(signal, SCOPE, { value: scope, enumerable: false, configurable: true });
}

/** The run a signal belongs to, or undefined for any other signal (or none). */
export function runScopeOf(signal: AbortSignal | undefined): RunScope | undefined {
  return signal === undefined ? undefined : (signal as ScopedSignal)[SCOPE];
}
