/**
 * Bounds how many *runs* execute at once. Permits are taken per run and given back when the run ends,
 * never held by a job's loop, so six jobs on five permits all get their turn. Waiters are served by
 * priority (higher first), then in arrival order.
 */
export type Release = () => void;

interface Waiter {
  priority: number;
  seq: number;
  grant: (release: Release) => void;
}

export class PrioritySemaphore {
  #available: number;
  #seq = 0;
  readonly #waiters: Waiter[] = [];

  constructor(readonly permits: number) {
    if (!Number.isInteger(permits) || permits < 1) {
      throw new TypeError(
        `PrioritySemaphore: expected permits to be an integer >= 1, got ${String(permits)}`,
      );
    }
    this.#available = permits;
  }

  get waiting(): number {
    return this.#waiters.length;
  }

  get inUse(): number {
    return this.permits - this.#available;
  }

  /**
   * Resolves with a release function once a permit is free. If `signal` aborts first the caller leaves
   * the queue and the promise rejects with the signal's reason; no permit is consumed.
   */
  acquire(priority: number, signal?: AbortSignal): Promise<Release> {
    if (signal?.aborted) return Promise.reject(signal.reason as Error);
    if (this.#available > 0 && this.#waiters.length === 0) {
      this.#available--;
      return Promise.resolve(this.#releaser());
    }
    return new Promise<Release>((resolve, reject) => {
      const waiter: Waiter = {
        priority,
        seq: this.#seq++,
        grant: (release) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(release);
        },
      };
      const onAbort = (): void => {
        const i = this.#waiters.indexOf(waiter);
        if (i >= 0) this.#waiters.splice(i, 1);
        reject(signal?.reason as Error);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      // Sorted insert: the queue stays short (one entry per job at most), so linear is fine.
      let at = this.#waiters.findIndex(
        (w) => w.priority < priority || (w.priority === priority && w.seq > waiter.seq),
      );
      if (at < 0) at = this.#waiters.length;
      this.#waiters.splice(at, 0, waiter);
    });
  }

  #releaser(): Release {
    let released = false;
    return () => {
      if (released) return; // Releasing twice must not mint a permit.
      released = true;
      const next = this.#waiters.shift();
      if (next) next.grant(this.#releaser());
      else this.#available++;
    };
  }
}
