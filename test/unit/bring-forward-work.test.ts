import { describe, expect, it } from 'vitest';
import {
  chunkCount,
  chunkDone,
  chunkRange,
  claimChunk,
  forwardChunk,
  forwardWork,
  NEW_HEAD,
  RECOMPUTED,
  SAME_HEAD,
  stopClaims,
} from '../../src/jobs/bring-forward-work.js';
import { ACTIVE, FollowGraphBuilder, REMOVED } from '../../src/jobs/follow-graph.js';
import {
  bufferDepth,
  loggedPairs,
  rankFromScratch,
  RankingBuffers,
  RankingScratch,
} from '../../src/jobs/suggested-users-ranking.js';

describe('ForwardWork: chunks two threads claim', () => {
  it('hands out each chunk once, in order, then none; stopClaims leaves none', () => {
    const work = forwardWork([5, 6, 7, 8, 9, 10, 11], 3);
    expect(chunkCount(work)).toBe(3);
    expect([0, 1, 2].map((k) => chunkRange(work, k))).toEqual([
      { from: 0, to: 3 },
      { from: 3, to: 6 },
      { from: 6, to: 7 },
    ]);
    expect(Array.from(work.users)).toEqual([5, 6, 7, 8, 9, 10, 11]);
    expect(work.users.buffer).toBeInstanceOf(SharedArrayBuffer);
    expect([claimChunk(work), claimChunk(work), claimChunk(work), claimChunk(work)]).toEqual([0, 1, 2, -1]);
    expect(claimChunk(work)).toBe(-1);

    const stopped = forwardWork([1, 2, 3, 4], 2);
    expect(claimChunk(stopped)).toBe(0);
    stopClaims(stopped);
    expect(claimChunk(stopped)).toBe(-1);
    expect(forwardWork([], 1000).claims.length).toBe(1);
  });

  it('writes each user outcome and marks the chunk done; a user without a buffer is ranked from scratch', () => {
    // 1 follows 2 and 3; 2 follows 4; 3 follows 4 and 5; 6 follows 2.
    const b = new FollowGraphBuilder();
    for (const [f, e] of [
      ['1', '2'],
      ['1', '3'],
      ['2', '4'],
      ['3', '4'],
      ['3', '5'],
      ['6', '2'],
    ] as const) {
      b.add(f, e, ACTIVE, 100);
    }
    const graph = b.build();
    const [u1, u2, u3, u4, u6] = ['1', '2', '3', '4', '6'].map((id) => graph.ids.intern(id));
    const settings = { perUser: 2, maxFollowees: 10 };
    const scratch = new RankingScratch();
    const buffers = new RankingBuffers(bufferDepth(settings.perUser));
    buffers.fit(graph.ids.size);
    for (const u of [u1, u6] as number[]) {
      const r = rankFromScratch(graph, u, settings, scratch);
      buffers.set(u, r.candidates, r.counts, r.complete);
    }
    // 2 stops following 4: it changes 1's head (4 had two paths) and 6's (4 was its only candidate).
    expect(graph.apply(u2 as number, u4 as number, REMOVED, 200)).toBe('applied');
    const all = new Array<number[] | undefined>(graph.ids.size).fill(undefined);
    all[u2 as number] = [u4 as number];
    const before = new Array<boolean[] | undefined>(graph.ids.size).fill(undefined);
    before[u2 as number] = [true];
    const logged = loggedPairs(graph, all, before, false);
    const reached = new Uint8Array(graph.ids.size);
    for (const u of [u1, u2, u6] as number[]) reached[u] = 1;

    // u3 has no buffer; u1 and u6 are reached; u2 is reached but has no buffer either.
    const work = forwardWork([u1, u3, u6, u2] as number[], 3);
    const inputs = { graph, buffers, logged, reached, settings, scratch };
    expect(chunkDone(work, 1)).toBe(false);
    forwardChunk(work, 1, inputs);
    expect(chunkDone(work, 1)).toBe(true);
    expect(chunkDone(work, 0)).toBe(false);
    expect(Array.from(work.codes)).toEqual([0, 0, 0, RECOMPUTED]);
    forwardChunk(work, 0, inputs);
    expect(Array.from(work.codes)).toEqual([NEW_HEAD, RECOMPUTED, NEW_HEAD, RECOMPUTED]);
    // Every buffer written equals a ranking from scratch of the graph now.
    for (const u of [u1, u2, u3, u6] as number[]) {
      const fresh = rankFromScratch(graph, u, settings, scratch);
      expect(buffers.get(u), `user ${graph.ids.id(u)}`).toEqual(fresh);
    }

    // Nobody reached: the heads stay.
    const again = forwardWork([u1, u6] as number[], 10);
    forwardChunk(again, 0, { ...inputs, reached: new Uint8Array(graph.ids.size) });
    expect(Array.from(again.codes)).toEqual([SAME_HEAD, SAME_HEAD]);
  });
});
