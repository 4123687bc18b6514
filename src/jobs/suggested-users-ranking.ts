import type { FollowGraph, UserIds } from './follow-graph.js';

/**
 * suggested-users' ranking in this process (CONTRACT §4, as suggestions-sql.ts computes it in
 * ClickHouse), and how the incremental mode brings a user's ranking buffer forward from the changed
 * follows alone.
 *
 * A user's buffer is the exact head of their ranking: the first `bufferDepth(perUser)` entries as
 * (mutual count, candidate), in ranking order (count descending, then candidate id ascending), and
 * `complete` when that is the whole ranking. Every candidate outside an incomplete buffer ranks after
 * its last entry, the bound.
 *
 * Between two runs, a candidate c's mutual count for u, or its eligibility, can change only through a
 * changed pair (f, c) with f a followee of u (now or before), or through u's own changed pairs (u
 * starts or stops following g: every candidate g follows, and g itself). Those are u's touched
 * candidates (`touchedCandidates`). `mergeBuffer` recounts every touched candidate exactly from the
 * current graph and keeps the other entries' counts; untouched outsiders still rank after the old
 * bound, so the merged entries up to the bound are an exact prefix of the new ranking. When that
 * prefix is too short to fill the cached list, or u's own change can move the `maxFollowees` cut of
 * E(u), the user is ranked from scratch.
 *
 * Recounting (rather than adding the changes to the old counts) keeps a buffer right when it already
 * saw some of the changes: a full refresh's buffers come from a graph read after the run's watermark.
 */

/** Buffer depth per user: twice the cached list, so a few lost entries do not force a recompute. */
export function bufferDepth(perUser: number): number {
  return perUser * 2;
}

/**
 * The exact head of a user's ranking. Mutable: bringForward rewrites a user's buffer in place (a run
 * changes most buffers a little, and new arrays for each would be garbage for the collector).
 */
export interface RankingBuffer {
  /** Candidates (user indices), in ranking order. */
  candidates: number[];
  /** Their mutual counts. */
  counts: number[];
  /** Whether these are all of the user's candidates. */
  complete: boolean;
}

/**
 * What bringForward did with a buffer: `unanswered`, it cannot answer the user (left as it was: rank
 * them from scratch); `same-head`, it may have changed but its head (the cached list) did not;
 * `new-head`, the head changed (write the value).
 */
export type Brought = 'unanswered' | 'same-head' | 'new-head';

/** Reusable per-user work arrays, sized to the user ids (grown as ids are added). */
export class RankingScratch {
  /** Paths per candidate while counting (left all 0 between users). */
  counts = new Uint32Array(0);
  /** Upper bounds of paths gained per touched candidate, with FORCED (left all 0 between users). */
  gains = new Uint32Array(0);
  /** Stamp marks: touched candidates. */
  touched = new Int32Array(0);
  /** Stamp marks: not a candidate (u and whom u follows). */
  excluded = new Int32Array(0);
  /** Stamp marks: recounted in this user's merge. */
  recount = new Int32Array(0);
  /** Reused lists (emptied per user, not reallocated: this runs for most users every run). */
  readonly followed: number[] = [];
  readonly touchedList: number[] = [];
  readonly toRecount: number[] = [];
  readonly recounted: number[] = [];
  readonly outCandidates: number[] = [];
  readonly outCounts: number[] = [];
  #stamp = 0;

  /** Makes room for `users` indices. */
  fit(users: number): void {
    if (this.counts.length >= users) return;
    const size = Math.max(users, this.counts.length * 2, 1024);
    this.counts = new Uint32Array(size);
    this.gains = new Uint32Array(size);
    this.touched = new Int32Array(size);
    this.excluded = new Int32Array(size);
    this.recount = new Int32Array(size);
    this.#stamp = 0;
  }

  /** A stamp no mark holds yet (marks are compared with it, never cleared). */
  nextStamp(): number {
    if (this.#stamp === 0x7fffffff) {
      this.touched.fill(0);
      this.excluded.fill(0);
      this.recount.fill(0);
      this.#stamp = 0;
    }
    return ++this.#stamp;
  }
}

/** A pair lookup (a binary search in a follower's pairs) against one step of a scan of them. */
const LOOKUP_COST = 4;

/** Settings of the ranking. */
export interface RankingSettings {
  perUser: number;
  maxFollowees: number;
}

/** u's ranking from the graph alone: its first `bufferDepth(perUser)` entries. */
export function rankFromScratch(
  graph: FollowGraph,
  u: number,
  settings: RankingSettings,
  scratch: RankingScratch,
): RankingBuffer {
  scratch.fit(graph.ids.size);
  const { counts, excluded } = scratch;
  const reached: number[] = [];
  graph.countPaths(graph.recent(u, settings.maxFollowees), counts, reached);
  const notCandidate = scratch.nextStamp();
  excluded[u] = notCandidate;
  for (const f of graph.followed(u)) excluded[f] = notCandidate;
  const candidates: number[] = [];
  for (const c of reached) {
    if (excluded[c] !== notCandidate) candidates.push(c);
  }
  const depth = bufferDepth(settings.perUser);
  const top = topByRank(candidates, counts, graph.ids, depth);
  const buffer = {
    candidates: top,
    counts: top.map((c) => counts[c] as number),
    complete: candidates.length <= depth,
  };
  for (const c of reached) counts[c] = 0;
  return buffer;
}

/**
 * The first `depth` of `candidates` in ranking order by `counts` (descending), then id. Selects by
 * count first: a user's candidates are hundreds, most with a count of 1 or 2, and only the head is
 * kept, so only the candidates at or above the head's lowest count are sorted.
 */
function topByRank(candidates: number[], counts: Uint32Array, ids: UserIds, depth: number): number[] {
  let kept = candidates;
  if (candidates.length > depth) {
    const byCount = new Map<number, number>();
    for (const c of candidates) {
      const n = counts[c] as number;
      byCount.set(n, (byCount.get(n) ?? 0) + 1);
    }
    let floor = 0;
    let above = 0;
    for (const n of [...byCount.keys()].sort((a, b) => b - a)) {
      above += byCount.get(n) ?? 0;
      floor = n;
      if (above >= depth) break;
    }
    kept = candidates.filter((c) => (counts[c] as number) >= floor);
  }
  kept.sort((a, b) => (counts[b] as number) - (counts[a] as number) || ids.compare(a, b));
  return kept.length > depth ? kept.slice(0, depth) : kept;
}

/**
 * The pairs logged since the last run, by follower index: `all[f]`, every followee f has a logged row
 * for; `activeNow[f]`, those whose pair is an active follow now (after the rows are applied).
 */
export interface LoggedPairs {
  all: readonly (readonly number[] | undefined)[];
  activeNow: readonly (readonly number[] | undefined)[];
}

/** In `RankingScratch.gains`: the candidate is g of u's own change, recounted whatever its gain. */
const FORCED = 0x80000000;

/**
 * u's buffer brought forward, in place, by the pairs logged since the last run, from the current graph
 * (see the module comment). `unanswered` (the buffer left as it was) when it cannot answer u: fewer
 * than `perUser` entries are sure, or u's own changes may move the `maxFollowees` cut of E(u) (more
 * followees than the cut, counting the changed ones).
 *
 * Work per user is kept to the few touched candidates that can matter: members (recounted), forced
 * candidates (recounted), outsiders that gained no path (skipped: they can only fall), and risers
 * (recounted only when their best place could reach the cached list; else they cut the buffer).
 */
export function bringForward(
  graph: FollowGraph,
  u: number,
  buffer: RankingBuffer,
  logged: LoggedPairs,
  settings: RankingSettings,
  scratch: RankingScratch,
): Brought {
  const followed = graph.followedInto(u, scratch.followed);
  const own = logged.all[u];
  if (own !== undefined && followed.length + own.length > settings.maxFollowees) return 'unanswered';
  scratch.fit(graph.ids.size);
  const { counts, gains, touched, excluded, recount } = scratch;
  const ids = graph.ids;
  const perUser = settings.perUser;
  const depth = bufferDepth(perUser);

  const notCandidate = scratch.nextStamp();
  for (const f of followed) excluded[f] = notCandidate;
  excluded[u] = notCandidate;
  // Touched candidates, each with an upper bound of the paths it gained: one per logged pair (f, c)
  // that is an active follow now, f followed by u.
  const seen = scratch.nextStamp();
  touched[u] = seen;
  const list = scratch.touchedList;
  list.length = 0;
  for (const f of followed) {
    const cs = logged.all[f];
    if (cs === undefined) continue;
    for (const c of cs) {
      if (c === u || touched[c] === seen) continue;
      touched[c] = seen;
      list.push(c);
    }
    for (const c of logged.activeNow[f] ?? []) if (c !== u) gains[c] = (gains[c] as number) + 1;
  }
  for (const g of own ?? []) {
    // u started or stopped following g (or followed it again): g's logged pairs (counted above when u
    // follows g now), everyone g follows now (a path gained when u follows g), and g itself (no
    // longer a candidate, or a candidate again).
    const followsG = excluded[g] === notCandidate;
    if (!followsG) {
      for (const c of logged.all[g] ?? []) {
        if (c === u) continue;
        if (touched[c] !== seen) {
          touched[c] = seen;
          list.push(c);
        }
      }
    }
    for (const c of graph.followed(g)) {
      if (c === u) continue;
      if (touched[c] !== seen) {
        touched[c] = seen;
        list.push(c);
      }
      if (followsG) gains[c] = (gains[c] as number) + 1;
    }
    if (g === u) continue;
    if (touched[g] !== seen) {
      touched[g] = seen;
      list.push(g);
    }
    gains[g] = (gains[g] as number) | FORCED;
  }

  const size = buffer.candidates.length;
  const complete = buffer.complete;
  const boundC = complete ? -1 : (buffer.candidates[size - 1] as number);
  const boundN = complete ? 0 : (buffer.counts[size - 1] as number);
  // tau: the perUser-th untouched entry. Untouched entries keep their counts and order, so no entry
  // ranking after tau can reach the cached list, and a riser whose best place is after it needs no
  // recount.
  let tauC = -1;
  let tauN = 0;
  let sure = 0;
  let membersTouched = false;
  const stayMark = scratch.nextStamp();
  for (let i = 0; i < size; i++) {
    const c = buffer.candidates[i] as number;
    if (touched[c] === seen) {
      recount[c] = stayMark; // a touched member: recounted
      membersTouched = true;
      continue;
    }
    if (++sure === perUser) {
      tauC = c;
      tauN = buffer.counts[i] as number;
    }
  }
  const toRecount = scratch.toRecount;
  toRecount.length = 0;
  let threatC = -1;
  let threatN = 0;
  const base = complete ? 0 : boundN;
  for (const c of list) {
    const gain = gains[c] as number;
    gains[c] = 0;
    if (excluded[c] === notCandidate) {
      recount[c] = 0; // a member u follows now leaves, uncounted
      continue;
    }
    if (recount[c] === stayMark || (gain & FORCED) !== 0) {
      toRecount.push(c);
      continue;
    }
    if (gain === 0) continue; // only lost paths: still after the bound
    // A riser: at best (the bound's count + paths gained, c).
    const bestN = base + gain;
    const beforeTau = tauC < 0 || bestN > tauN || (bestN === tauN && ids.compare(c, tauC) < 0);
    if (beforeTau) {
      recount[c] = stayMark;
      toRecount.push(c);
    } else if (threatC < 0 || bestN > threatN || (bestN === threatN && ids.compare(c, threatC) < 0)) {
      threatC = c;
      threatN = bestN;
    }
  }

  // Recount over E(u): each candidate by looking its pairs up (binary searches), or all at once by
  // scanning E(u)'s follows, whichever costs less for this user.
  for (const c of toRecount) recount[c] = stayMark;
  // Nothing touched can change the entries: the buffer stands as it is (most users reached, most
  // runs: their touched candidates only lost paths or cannot reach the cached list).
  if (toRecount.length === 0 && threatC < 0 && !membersTouched) return 'same-head';
  const recounted = scratch.recounted;
  recounted.length = 0;
  if (toRecount.length > 0) {
    const via = graph.recent(u, settings.maxFollowees, followed);
    let scanCost = 0;
    for (const g of via) scanCost += graph.pairCount(g);
    if (toRecount.length * via.length * LOOKUP_COST < scanCost) {
      for (const c of toRecount) {
        let n = 0;
        for (const g of via) if (graph.hasActive(g, c)) n++;
        if (n === 0) continue;
        counts[c] = n;
        recounted.push(c);
      }
    } else {
      graph.countPaths(via, counts, recounted, { mark: recount, stamp: stayMark });
    }
    if (recounted.length > 1) {
      recounted.sort((a, b) => (counts[b] as number) - (counts[a] as number) || ids.compare(a, b));
    }
  }

  // Merge the untouched entries (in the buffer's order) with the recounted ones, keeping those sure:
  // up to the old bound (every unknown outsider ranks after it) and before the best place of any
  // riser left uncounted (the threat).
  const outC = scratch.outCandidates;
  const outN = scratch.outCounts;
  outC.length = 0;
  outN.length = 0;
  let sameHead = true;
  let total = 0;
  let i = 0;
  let j = 0;
  for (;;) {
    while (i < size && touched[buffer.candidates[i] as number] === seen) i++;
    const a = i < size ? (buffer.candidates[i] as number) : -1;
    const b = j < recounted.length ? (recounted[j] as number) : -1;
    if (a < 0 && b < 0) break;
    const an = a < 0 ? 0 : (buffer.counts[i] as number);
    const bn = b < 0 ? 0 : (counts[b] as number);
    let c: number;
    let n: number;
    if (b < 0 || (a >= 0 && (an > bn || (an === bn && ids.compare(a, b) < 0)))) {
      c = a;
      n = an;
      i++;
    } else {
      c = b;
      n = bn;
      j++;
    }
    if (!complete && (n < boundN || (n === boundN && ids.compare(c, boundC) > 0))) break;
    if (threatC >= 0 && !(n > threatN || (n === threatN && ids.compare(c, threatC) < 0))) break;
    total++;
    if (outC.length < depth) {
      if (
        sameHead &&
        outC.length < perUser &&
        (buffer.candidates[outC.length] !== c || buffer.counts[outC.length] !== n)
      ) {
        sameHead = false;
      }
      outC.push(c);
      outN.push(n);
    } else if (!complete) break;
  }
  for (const c of recounted) counts[c] = 0;
  const nowComplete = complete && threatC < 0 && total <= depth;
  if (!nowComplete && outC.length < perUser) return 'unanswered';
  // The head is the same only if it is as long as before (a shorter list differs).
  if (Math.min(perUser, outC.length) !== Math.min(perUser, size)) sameHead = false;
  copyInto(buffer.candidates, outC);
  copyInto(buffer.counts, outN);
  buffer.complete = nowComplete;
  return sameHead ? 'same-head' : 'new-head';
}

/** `to` becomes a copy of `from` (its own array kept: no new one). */
function copyInto(to: number[], from: readonly number[]): void {
  to.length = from.length;
  for (let i = 0; i < from.length; i++) to[i] = from[i] as number;
}

/** The cached value (CONTRACT §4) of a buffer: its first `perUser` entries as JSON, as renderValueSql. */
export function renderHead(buffer: RankingBuffer, ids: UserIds, perUser: number): string {
  const n = Math.min(perUser, buffer.candidates.length);
  const parts: string[] = [];
  for (let i = 0; i < n; i++) {
    const count = buffer.counts[i] as number;
    parts.push(
      `{"user_id":"${ids.id(buffer.candidates[i] as number)}","mutual_count":${count},"reason":"${count}${count === 1 ? ' mutual connection' : ' mutual connections'}"}`,
    );
  }
  return `[${parts.join(',')}]`;
}
