import { parentPort } from 'node:worker_threads';
import { claimChunk, forwardChunk } from './bring-forward-work.js';
import type { HelperReply, HelperRequest } from './bring-forward-helper.js';
import { FollowGraph, UserIds } from './follow-graph.js';
import { RankingBuffers, RankingScratch } from './suggested-users-ranking.js';

/**
 * The helper thread's entry (bring-forward-helper.ts starts it): a replica of the run's follow graph
 * over the same loaded arrays, the same rows applied to it in the same order, and the same user
 * indices; it claims chunks of each run's users and brings them forward in the shared buffers.
 */
class HelperThread {
  #replica: { load: number; ids: UserIds; graph: FollowGraph } | undefined;
  readonly #scratch = new RankingScratch();

  handle(request: HelperRequest): HelperReply | undefined {
    if (request.type === 'load') {
      const ids = new UserIds();
      for (const id of request.ids) ids.intern(id);
      this.#replica = { load: request.load, ids, graph: new FollowGraph(ids, request.arrays) };
      return undefined;
    }
    // A request for another load than the one held (the run's thread started a new one, or this
    // thread missed it) changes nothing: the run's thread brings every chunk forward itself.
    const replica = this.#replica?.load === request.load ? this.#replica : undefined;
    if (replica === undefined) {
      return request.type === 'forward' ? { type: 'done', run: request.run } : undefined;
    }
    if (replica.ids.size !== request.idsFrom) {
      throw new Error(`helper thread: ${replica.ids.size} user ids held, ${request.idsFrom} expected`);
    }
    for (const id of request.ids) replica.ids.intern(id);
    if (request.type === 'rows') {
      const { follower, followee, status, updatedAt } = request;
      // The run's thread throws on a tie and drops its state (so this replica's next use is a load).
      for (let i = 0; i < follower.length; i++) {
        replica.graph.apply(
          follower[i] as number,
          followee[i] as number,
          status[i] as number,
          updatedAt[i] as number,
        );
      }
      return undefined;
    }
    const inputs = {
      graph: replica.graph,
      buffers: RankingBuffers.over(request.buffers),
      logged: request.logged,
      reached: request.reached,
      settings: request.settings,
      scratch: this.#scratch,
    };
    for (let k = claimChunk(request.work); k >= 0; k = claimChunk(request.work)) {
      forwardChunk(request.work, k, inputs);
    }
    return { type: 'done', run: request.run };
  }
}

const port = parentPort;
if (port === null) throw new Error('bring-forward-worker.js runs as a worker thread');
const thread = new HelperThread();
port.on('message', (request: HelperRequest) => {
  const reply = thread.handle(request);
  if (reply !== undefined) port.postMessage(reply);
});
