import type { FollowGraph } from './follow-graph.js';
import {
  bringForward,
  rankFromScratch,
  type LoggedPairs,
  type RankingBuffers,
  type RankingScratch,
  type RankingSettings,
} from './suggested-users-ranking.js';

/**
 * One incremental run's users to bring forward, in chunks that two threads claim (the run's own and
 * the helper thread of bring-forward-helper.ts): a chunk is claimed by an atomic add on a shared
 * counter, so each is brought forward exactly once, by whichever thread is free first, and the run's
 * thread (which also renders values and talks to Redis) takes fewer of them. All arrays are in shared
 * memory.
 *
 * A chunk's outcome per user is written to `codes`, then the chunk is marked done with an atomic
 * store: the thread that reads a done mark with an atomic load sees the codes and the buffers written
 * before it (both are sequentially consistent).
 */
export interface ForwardWork {
  /** User index per position. */
  users: Uint32Array;
  /** Outcome per position: 0 until its chunk is done, then RECOMPUTED, SAME_HEAD or NEW_HEAD. */
  codes: Uint8Array;
  /** `[0]`: the next chunk to claim; `[1 + k]`: 1 once chunk k's codes are written. */
  claims: Int32Array;
  /** Users per chunk (the last may hold fewer). */
  chunkSize: number;
}

/**
 * In ForwardWork.codes: the user had no buffer (newly active) or theirs could not answer them, so they
 * were ranked from scratch: write the value.
 */
export const RECOMPUTED = 1;
/** In ForwardWork.codes: the head (the cached value) is the same: extend the key's TTL. */
export const SAME_HEAD = 2;
/** In ForwardWork.codes: the buffer was brought forward and its head changed: write the value. */
export const NEW_HEAD = 3;

/** The work of bringing `users` forward, `chunkSize` per chunk, in shared memory. */
export function forwardWork(users: readonly number[], chunkSize: number): ForwardWork {
  const work: ForwardWork = {
    users: new Uint32Array(new SharedArrayBuffer(users.length * 4)),
    codes: new Uint8Array(new SharedArrayBuffer(users.length)),
    claims: new Int32Array(new SharedArrayBuffer((1 + Math.ceil(users.length / chunkSize)) * 4)),
    chunkSize,
  };
  work.users.set(users);
  return work;
}

/** How many chunks the work has. */
export function chunkCount(work: ForwardWork): number {
  return work.claims.length - 1;
}

/** Positions `from` … `to - 1` of chunk k. */
export function chunkRange(work: ForwardWork, k: number): { from: number; to: number } {
  const from = k * work.chunkSize;
  return { from, to: Math.min(from + work.chunkSize, work.users.length) };
}

/** Claims the next chunk: its number, or -1 when every chunk is claimed. */
export function claimChunk(work: ForwardWork): number {
  const k = Atomics.add(work.claims, 0, 1);
  return k < chunkCount(work) ? k : -1;
}

/** Whether chunk k's codes are written. */
export function chunkDone(work: ForwardWork, k: number): boolean {
  return Atomics.load(work.claims, 1 + k) === 1;
}

/** Leaves no chunk to claim (a run that stops early: the other thread stops after its chunk). */
export function stopClaims(work: ForwardWork): void {
  Atomics.store(work.claims, 0, chunkCount(work));
}

/** What a thread needs to bring users forward: its graph (or replica) and the run's shared inputs. */
export interface ForwardInputs {
  graph: FollowGraph;
  buffers: RankingBuffers;
  logged: LoggedPairs;
  /** 1 for each user a logged pair can reach (the others' heads cannot change). */
  reached: Uint8Array;
  settings: RankingSettings;
  /** This thread's own. */
  scratch: RankingScratch;
}

/**
 * Brings chunk k's users forward in place, or ranks them from scratch (each user's buffer is written by
 * one thread only; the store must already hold every user index: RankingBuffers.fit), and marks the
 * chunk done. A user no logged pair reaches keeps the same head.
 */
export function forwardChunk(work: ForwardWork, k: number, inputs: ForwardInputs): void {
  const { graph, buffers, logged, reached, settings, scratch } = inputs;
  const { from, to } = chunkRange(work, k);
  for (let p = from; p < to; p++) {
    const u = work.users[p] as number;
    const brought = !buffers.has(u)
      ? 'unanswered'
      : reached[u] !== 1
        ? 'same-head'
        : bringForward(graph, u, buffers, logged, settings, scratch);
    if (brought === 'unanswered') {
      const ranked = rankFromScratch(graph, u, settings, scratch);
      buffers.set(u, ranked.candidates, ranked.counts, ranked.complete);
    }
    work.codes[p] = brought === 'unanswered' ? RECOMPUTED : brought === 'same-head' ? SAME_HEAD : NEW_HEAD;
  }
  Atomics.store(work.claims, 1 + k, 1);
}
