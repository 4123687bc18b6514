import { describe, expect, it } from 'vitest';
import { ACTIVE, FollowGraphBuilder, OTHER_STATUS, REMOVED, UserIds } from '../../src/jobs/follow-graph.js';
import {
  bringForward,
  bufferDepth,
  loggedPairs,
  rankFromScratch,
  RankingBuffers,
  RankingScratch,
  renderList,
  type LoggedPairs,
  type RankingBuffer,
} from '../../src/jobs/suggested-users-ranking.js';
import { mulberry32 } from './helpers/random.js';

describe('UserIds', () => {
  it('orders ids numerically, beyond 2^53 too', () => {
    const ids = new UserIds();
    const big = ['18446744073709551615', '18446744073709551614', '9007199254740993', '9007199254740992'];
    const [a, b, c, d] = big.map((id) => ids.intern(id)) as [number, number, number, number];
    const nine = ids.intern('9');
    const ten = ids.intern('10');
    expect(ids.compare(nine, ten)).toBeLessThan(0);
    expect(ids.compare(b, a)).toBeLessThan(0);
    expect(ids.compare(d, c)).toBeLessThan(0);
    expect(ids.compare(a, a)).toBe(0);
    expect(ids.intern('10')).toBe(ten);
  });
});

describe('FollowGraph', () => {
  const build = (rows: [string, string, number, number][]) => {
    const b = new FollowGraphBuilder();
    for (const [f, e, s, t] of rows) b.add(f, e, s, t);
    return b.build();
  };

  it('applies rows as ReplacingMergeTree(updated_at) keeps the newest per pair', () => {
    const g = build([
      ['1', '2', ACTIVE, 100],
      ['1', '3', REMOVED, 100],
      ['4', '2', ACTIVE, 50],
    ]);
    const [u1, u2, u3, u4] = [g.ids.intern('1'), g.ids.intern('2'), g.ids.intern('3'), g.ids.intern('4')];
    const followers = (u: number) => [...Array.from(g.followers(u))].sort();
    expect(g.hasActive(u1, u2)).toBe(true);
    expect(g.hasActive(u1, u3)).toBe(false);
    expect(followers(u2)).toEqual([u1, u4].sort());
    // Older: nothing. Same time and status (a row seen again): nothing. Same time, other status: tie.
    expect(g.apply(u1, u2, REMOVED, 99)).toBe('unchanged');
    expect(g.apply(u1, u2, ACTIVE, 100)).toBe('unchanged');
    expect(g.apply(u1, u2, REMOVED, 100)).toBe('tie');
    // Newer: replaces, and the reverse direction follows.
    expect(g.apply(u1, u2, REMOVED, 101)).toBe('applied');
    expect(g.hasActive(u1, u2)).toBe(false);
    expect(followers(u2)).toEqual([u4]);
    expect(g.apply(u1, u3, ACTIVE, 150)).toBe('applied');
    expect(g.followed(u1)).toEqual([u3]);
    expect(followers(u3)).toEqual([u1]);
    // A bad status counts as not active; a new user appears through a row.
    expect(g.apply(u4, u2, OTHER_STATUS, 60)).toBe('applied');
    expect(followers(u2)).toEqual([]);
    const u5 = g.ids.intern('5');
    expect(g.apply(u5, u1, ACTIVE, 10)).toBe('applied');
    expect(Array.from(g.followers(u1))).toEqual([u5]);
  });

  it('E(u) is the max_followees most recent follows, then the lower id', () => {
    const g = build([
      ['1', '20', ACTIVE, 300],
      ['1', '10', ACTIVE, 300],
      ['1', '30', ACTIVE, 400],
      ['1', '40', ACTIVE, 100],
      ['1', '50', REMOVED, 900],
    ]);
    const id = (i: number) => g.ids.id(i);
    expect(g.recent(g.ids.intern('1'), 3).map(id)).toEqual(['30', '10', '20']);
    expect(g.recent(g.ids.intern('1'), 10).map(id).sort()).toEqual(['10', '20', '30', '40']);
  });
});

/**
 * bringForward against the definition: on random small graphs with random follow changes (and
 * random `updated_at` ties broken by time), a buffer brought forward is always an exact prefix of the
 * ranking from scratch on the new graph (the whole ranking when it says `complete`), and when it
 * cannot answer it says so (undefined). On odd seeds buffers are taken from a graph a few changes
 * *ahead* of the old one, as a full refresh's buffers can be; on even seeds they are exact for the old
 * graph and the pairs' changes are given (LoggedPairs.exact), as after an incremental run, so that
 * members move by their deltas.
 */
describe('bringForward equals a ranking from scratch', () => {
  for (let seed = 1; seed <= 60; seed++) {
    it(`seed ${seed}`, () => checkBringForward(seed, { exact: seed % 2 === 0, churn: 1 }));
  }
});

/**
 * The same with exact buffers and dense churn (three changed pairs per user, on graphs of few users):
 * most users change their own follows, and the followees they start or stop following have changed
 * pairs of their own, so that every term of a delta is exercised (u's kept, joined and left followees,
 * and a left followee becoming a candidate again).
 */
describe('bringForward with exact buffers under dense churn equals a ranking from scratch', () => {
  for (let seed = 101; seed <= 500; seed++) {
    it(`seed ${seed}`, () => checkBringForward(seed, { exact: true, churn: 3 }));
  }
});

/**
 * One random graph and change set (see the describe blocks above): `exact`, the buffers are exact for
 * the old graph and the pairs' changes are given; `churn`, changed pairs per user (at most).
 */
function checkBringForward(seed: number, opts: { exact: boolean; churn: number }): void {
  const rnd = mulberry32(seed);
  const users = 12 + Math.floor(rnd() * 20);
  const settings = { perUser: 1 + Math.floor(rnd() * 3), maxFollowees: 2 + Math.floor(rnd() * 4) };
  const pick = () => String(1 + Math.floor(users * rnd() ** 1.5));
  const rows: [string, string, number, number][] = [];
  for (let i = 0; i < users * 4; i++) {
    rows.push([pick(), pick(), rnd() < 0.85 ? ACTIVE : REMOVED, 1000 + Math.floor(rnd() * 50)]);
  }
  // One row per pair (FINAL), the newest.
  const newest = new Map<string, [string, string, number, number]>();
  for (const r of rows) {
    const k = `${r[0]}:${r[1]}`;
    const cur = newest.get(k);
    if (cur === undefined || cur[3] < r[3]) newest.set(k, r);
  }
  const builder = new FollowGraphBuilder();
  for (const [f, e, s, t] of newest.values()) builder.add(f, e, s, t);
  const graph = builder.build();
  const ids = graph.ids;
  const scratch = new RankingScratch();
  for (let id = 1; id <= users; id++) ids.intern(String(id));

  // Changes: later rows, applied in two steps; buffers taken after the first (ahead of "before").
  const changes: [string, string, number, number][] = [];
  for (let i = 0; i < 1 + Math.floor(rnd() * users * opts.churn); i++) {
    changes.push([pick(), pick(), rnd() < 0.6 ? ACTIVE : REMOVED, 2000 + i]);
  }
  const exact = opts.exact;
  const cut = exact ? 0 : Math.floor(rnd() * (changes.length + 1));
  const apply = (list: typeof changes) => {
    for (const [f, e, s, t] of list) graph.apply(ids.intern(f), ids.intern(e), s, t);
  };
  apply(changes.slice(0, cut));
  const buffers = new RankingBuffers(bufferDepth(settings.perUser));
  for (let u = 0; u < ids.size; u++) {
    const b = rankFromScratch(graph, u, settings, scratch);
    buffers.set(u, b.candidates, b.counts, b.complete);
  }
  const activeBefore = new Map<string, boolean>();
  for (const [f, e] of changes) activeBefore.set(`${f}:${e}`, graph.hasActive(ids.intern(f), ids.intern(e)));
  apply(changes.slice(cut));

  const all = new Array<number[] | undefined>(ids.size).fill(undefined);
  for (const [f, e] of changes) {
    const fi = ids.intern(f);
    const list = (all[fi] ??= []);
    if (!list.includes(ids.intern(e))) list.push(ids.intern(e));
  }
  const before = all.map((cs, f) => cs?.map((c) => activeBefore.get(`${ids.id(f)}:${ids.id(c)}`) === true));
  const logged: LoggedPairs = loggedPairs(graph, all, before, exact);

  const head = (b: RankingBuffer) =>
    renderList(ids, b.candidates, b.counts, 0, Math.min(settings.perUser, b.candidates.length));
  let answered = 0;
  for (let u = 0; u < ids.size; u++) {
    const truth = rankFromScratch(graph, u, settings, scratch);
    // The ranking from scratch against the definition, counted the slow way.
    const via = graph.recent(u, settings.maxFollowees);
    const followed = new Set(graph.followed(u));
    const naive: [number, number][] = [];
    for (let c = 0; c < ids.size; c++) {
      if (c === u || followed.has(c)) continue;
      const n = via.filter((g) => graph.hasActive(g, c)).length;
      if (n > 0) naive.push([n, c]);
    }
    naive.sort((x, y) => y[0] - x[0] || ids.compare(x[1], y[1]));
    const depth = bufferDepth(settings.perUser);
    expect(truth.candidates).toEqual(naive.slice(0, depth).map((x) => x[1]));
    expect(truth.counts).toEqual(naive.slice(0, depth).map((x) => x[0]));
    expect(truth.complete).toBe(naive.length <= depth);
    const before = buffers.renderHead(u, ids, settings.perUser);
    const brought = bringForward(graph, u, buffers, logged, settings, scratch);
    if (brought === 'unanswered') {
      expect(buffers.renderHead(u, ids, settings.perUser), 'left as it was').toBe(before);
      continue;
    }
    const got = buffers.get(u) as RankingBuffer;
    expect(brought === 'same-head', `user ${ids.id(u)}`).toBe(
      buffers.renderHead(u, ids, settings.perUser) === before,
    );
    answered++;
    const n = got.candidates.length;
    expect(got.candidates, `user ${ids.id(u)}`).toEqual(truth.candidates.slice(0, n));
    expect(got.counts, `user ${ids.id(u)}`).toEqual(truth.counts.slice(0, n));
    if (got.complete) expect(truth.complete && truth.candidates.length === n).toBe(true);
    else expect(n).toBeGreaterThanOrEqual(settings.perUser);
    expect(n).toBeLessThanOrEqual(bufferDepth(settings.perUser));
    expect(head(got)).toBe(head(truth));
  }
  expect(answered).toBeGreaterThan(0);
}
