/**
 * A tiny typed event emitter whose `emit` can never throw into the caller: the scheduler loop emits,
 * and a listener that throws (or rejects) must not stop the next tick. Listener failures go to
 * `onListenerError`, which the entry point wires to the log.
 */
export type Listener<T> = (payload: T) => void | Promise<void>;

export class GuardedEmitter<Events extends object> {
  readonly #listeners = new Map<keyof Events, Listener<never>[]>();

  constructor(private readonly onListenerError: (event: string, err: unknown) => void) {}

  on<K extends keyof Events>(event: K, listener: Listener<Events[K]>): () => void {
    const list = this.#listeners.get(event) ?? [];
    list.push(listener);
    this.#listeners.set(event, list);
    return () => {
      const i = list.indexOf(listener);
      if (i >= 0) list.splice(i, 1);
    };
  }

  emit<K extends keyof Events>(event: K, payload: Events[K]): void {
    for (const listener of [...(this.#listeners.get(event) ?? [])]) {
      try {
        const result = (listener as Listener<Events[K]>)(payload);
        if (result instanceof Promise) {
          result.catch((err: unknown) => {
            this.onListenerError(String(event), err);
          });
        }
      } catch (err) {
        this.onListenerError(String(event), err);
      }
    }
  }
}
