import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { ForwardWork } from './bring-forward-work.js';
import type { FollowGraph, LoadedArrays } from './follow-graph.js';
import type { LoggedPairs, RankingSettings, SharedRankingBuffers } from './suggested-users-ranking.js';

/**
 * A helper thread for suggested-users' incremental mode: it brings users forward (bring-forward-work.ts)
 * while the run's thread renders values and talks to Redis, and brings forward whatever chunks it
 * claims between those (measured at 100 000 users: the helper took 85–97 % of them). Bringing buffers
 * forward was most of an incremental run's own work, bound by memory reads, so a second core takes it
 * off the run's thread; the Redis writes are then the run's critical path.
 *
 * The thread holds a replica of one follow graph: a full refresh's graph is loaded into it (the
 * loaded arrays are shared memory, so only the user ids are copied), and every incremental run sends
 * the same rows it applies, and the user ids it interned, before asking for help. The buffers are
 * shared memory too (RankingBuffers.shared). The replica follows the state in memory: when it is
 * lost (the thread exited), runs go on in one thread until the next full refresh loads a new one.
 *
 * Memory: the thread's copy of the user ids, and the edits and scratch arrays of its replica (the
 * loaded arrays and buffers are not copied).
 */
export class BringForwardHelper {
  readonly #script: URL;
  #worker: Worker | undefined;
  /** The graph the thread holds a replica of (undefined: none, or the thread exited). */
  #graph: FollowGraph | undefined;
  #load = 0;
  /** User ids the thread has (indices below this). */
  #idsSent = 0;
  #runs = 0;
  readonly #waiting = new Map<number, { resolve: () => void; reject: (err: Error) => void }>();

  /** `script`: the built worker entry (bring-forward-worker.js; see defaultHelperScript). */
  constructor(script: URL) {
    this.#script = script;
  }

  /** Starts the thread's replica of `graph` (a full refresh's, with no rows applied yet). */
  load(graph: FollowGraph): void {
    const worker = this.#thread();
    this.#load++;
    this.#graph = graph;
    this.#idsSent = graph.ids.size;
    worker.postMessage({
      type: 'load',
      load: this.#load,
      ids: graph.ids.slice(0, this.#idsSent),
      arrays: graph.loadedArrays(),
    } satisfies HelperRequest);
  }

  /** Whether the thread holds a replica of `graph` (it may be asked to help with it). */
  holds(graph: FollowGraph): boolean {
    return this.#worker !== undefined && this.#graph === graph;
  }

  /**
   * Applies rows to the replica of `graph`, as the caller applies them to `graph` (user indices; the
   * ids interned since the last request are sent first). Requires holds(graph).
   */
  applyRows(graph: FollowGraph, rows: RowColumns): void {
    this.#post(graph, (ids) => ({ type: 'rows', load: this.#load, ...ids, ...rows }));
  }

  /**
   * Asks the thread to claim and bring forward chunks of `work` until none is left. Resolves once it
   * is done (its chunks are marked done in `work`); rejects when the thread exits or fails before (the
   * buffers of its claimed chunks are then doubtful: the run must fail). Requires holds(graph).
   */
  forward(
    graph: FollowGraph,
    run: {
      work: ForwardWork;
      buffers: SharedRankingBuffers;
      logged: LoggedPairs;
      reached: Uint8Array;
      settings: RankingSettings;
    },
  ): Promise<void> {
    const id = ++this.#runs;
    const done = new Promise<void>((resolve, reject) => this.#waiting.set(id, { resolve, reject }));
    this.#post(graph, (ids) => ({ type: 'forward', load: this.#load, run: id, ...ids, ...run }));
    return done;
  }

  /** Stops the thread (it is unref'd, so a process may also exit without this). */
  async close(): Promise<void> {
    const worker = this.#worker;
    this.#worker = undefined;
    this.#graph = undefined;
    if (worker !== undefined) await worker.terminate();
  }

  #post(graph: FollowGraph, request: (ids: { idsFrom: number; ids: string[] }) => HelperRequest): void {
    const worker = this.#worker;
    if (worker === undefined || this.#graph !== graph) throw new Error('helper thread holds another graph');
    const idsFrom = this.#idsSent;
    this.#idsSent = graph.ids.size;
    worker.postMessage(request({ idsFrom, ids: graph.ids.slice(idsFrom, this.#idsSent) }));
  }

  #thread(): Worker {
    if (this.#worker !== undefined) return this.#worker;
    const worker = new Worker(this.#script);
    worker.on('message', (reply: HelperReply) => {
      const waiting = this.#waiting.get(reply.run);
      this.#waiting.delete(reply.run);
      waiting?.resolve();
    });
    const lost = (err: Error): void => {
      if (this.#worker === worker) {
        this.#worker = undefined;
        this.#graph = undefined;
      }
      for (const waiting of this.#waiting.values()) waiting.reject(err);
      this.#waiting.clear();
    };
    worker.on('error', (err) => lost(new Error('suggested-users helper thread failed', { cause: err })));
    worker.on('exit', (code) => lost(new Error(`suggested-users helper thread exited (code ${code})`)));
    // Never what keeps a process alive: a stopping runner does not wait for an idle helper. After the
    // listeners: adding a 'message' listener refs the worker again, and then no process that ever
    // loaded a helper exits by itself.
    worker.unref();
    this.#worker = worker;
    return worker;
  }
}

/** Applied rows as columns (one entry per row), in the order applied. */
export interface RowColumns {
  follower: Uint32Array;
  followee: Uint32Array;
  status: Uint8Array;
  updatedAt: Float64Array;
}

/** What the run's thread asks of the helper thread (bring-forward-worker.ts). */
export type HelperRequest =
  | { type: 'load'; load: number; ids: string[]; arrays: LoadedArrays }
  | ({ type: 'rows'; load: number; idsFrom: number; ids: string[] } & RowColumns)
  | {
      type: 'forward';
      load: number;
      run: number;
      idsFrom: number;
      ids: string[];
      work: ForwardWork;
      buffers: SharedRankingBuffers;
      logged: LoggedPairs;
      reached: Uint8Array;
      settings: RankingSettings;
    };

/** The helper thread's answer to a `forward` request. */
export interface HelperReply {
  type: 'done';
  run: number;
}

/**
 * The built helper thread's entry beside this module (bring-forward-worker.js), when this process may
 * use a second core (os.availableParallelism() ≥ 2) and the file exists; undefined otherwise (run from
 * TypeScript sources, or on one core: runs bring every user forward in their own thread).
 */
export function defaultHelperScript(): URL | undefined {
  if (availableParallelism() < 2) return undefined;
  const script = new URL('./bring-forward-worker.js', import.meta.url);
  return existsSync(fileURLToPath(script)) ? script : undefined;
}
