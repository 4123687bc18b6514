/**
 * Runs async operations one at a time, without making the caller wait for the one in flight:
 * `submit` waits only for the previous operation, then starts `op` and returns. An operation's error
 * is rethrown by the next `submit` or by `drain` (never left as an unhandled rejection while the
 * caller is busy elsewhere), and nothing is started after it.
 */
export class OneInFlight {
  #inFlight: Promise<void> = Promise.resolve();
  #failed: { err: unknown } | undefined;

  /** Waits for the operation in flight (rethrowing its error), then starts `op`. */
  async submit(op: () => Promise<unknown>): Promise<void> {
    await this.drain();
    this.#inFlight = op().then(
      () => undefined,
      (err: unknown) => {
        this.#failed = { err };
      },
    );
  }

  /** Waits for the operation in flight; rethrows the first error any operation raised. */
  async drain(): Promise<void> {
    await this.#inFlight;
    if (this.#failed !== undefined) throw this.#failed.err;
  }
}
