import type { FollowGraph, UserIds } from './follow-graph.js';
import type { SuggestionListBytes } from './suggestion-list-bytes.js';

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
 * candidates. `bringForward` recounts the touched candidates that can matter exactly from the current
 * graph (see its comment for which) and keeps the other entries' counts; untouched outsiders still
 * rank after the old bound, so the merged entries up to the bound are an exact prefix of the new
 * ranking. When that prefix is too short to fill the cached list, or u's own change can move the
 * `maxFollowees` cut of E(u), the user is ranked from scratch.
 *
 * Recounting (rather than adding the changes to the old counts) keeps a buffer right when it already
 * saw some of the changes: a full refresh's buffers come from a graph read after the run's watermark.
 * Once a run has recounted so, every buffer is exact for the graph in memory (LoggedPairs.exact), and
 * later runs move a touched candidate by its exact change in paths (a delta) whenever E(u) is F(u)
 * before and after the rows: the followees u kept bring their pairs' changes, one u started following
 * brings a path to each of its followees, one u stopped following takes one away from each of its
 * followees before (and becomes a candidate, recounted). Only those and risers from outside the buffer
 * are recounted.
 */

/** Buffer depth per user: twice the cached list, so a few lost entries do not force a recompute. */
export function bufferDepth(perUser: number): number {
  return perUser * 2;
}

/** The exact head of a user's ranking (as rankFromScratch returns it, and RankingBuffers.get). */
export interface RankingBuffer {
  /** Candidates (user indices), in ranking order. */
  candidates: number[];
  /** Their mutual counts. */
  counts: number[];
  /** Whether these are all of the user's candidates. */
  complete: boolean;
}

/** A RankingBuffers store's memory (its arrays' shared buffers), as one thread hands it to another. */
export interface SharedRankingBuffers {
  depth: number;
  candidates: SharedArrayBuffer;
  counts: SharedArrayBuffer;
  lengths: SharedArrayBuffer;
  flags: SharedArrayBuffer;
}

/** In RankingBuffers.flags: the user has a buffer. */
const PRESENT = 1;
/** In RankingBuffers.flags: the buffer is the user's whole ranking. */
const COMPLETE = 2;

/**
 * Every user's ranking buffer, by user index, in typed arrays: `depth` slots per user of candidate and
 * mutual count (user u's at `u * depth`), a length and flags. No object per buffer, and no allocation
 * per run: a run rewrites the buffers it changes in place (measured at 100 000 users: the state held
 * 144–194 MiB as one JavaScript object and two arrays per user). Memory: 8 × depth + 3 bytes per user
 * index, with or without a buffer (depth 40: 323 bytes).
 */
export class RankingBuffers {
  readonly depth: number;
  /** Candidates, `depth` slots per user (read directly by bringForward). */
  candidates: Uint32Array = new Uint32Array(new SharedArrayBuffer(0));
  /** Mutual counts, as `candidates`. */
  counts: Uint32Array = new Uint32Array(new SharedArrayBuffer(0));
  /** Entries per user. */
  lengths: Uint16Array = new Uint16Array(new SharedArrayBuffer(0));
  /** PRESENT and COMPLETE per user. */
  flags: Uint8Array = new Uint8Array(new SharedArrayBuffer(0));

  /** `depth`: entries per buffer, bufferDepth(perUser) (at most 65 535). */
  constructor(depth: number) {
    this.depth = depth;
  }

  /**
   * The store over arrays another thread made (RankingBuffers.shared of that thread's store), read and
   * written in place: the helper thread (bring-forward-helper.ts) brings its users forward in them.
   */
  static over(shared: SharedRankingBuffers): RankingBuffers {
    const buffers = new RankingBuffers(shared.depth);
    buffers.candidates = new Uint32Array(shared.candidates);
    buffers.counts = new Uint32Array(shared.counts);
    buffers.lengths = new Uint16Array(shared.lengths);
    buffers.flags = new Uint8Array(shared.flags);
    return buffers;
  }

  /** The store's memory, to be handed to another thread (RankingBuffers.over): valid until `fit` grows it. */
  shared(): SharedRankingBuffers {
    const buffer = (a: Uint32Array | Uint16Array | Uint8Array): SharedArrayBuffer => {
      if (!(a.buffer instanceof SharedArrayBuffer)) throw new Error('RankingBuffers: store not shared');
      return a.buffer;
    };
    return {
      depth: this.depth,
      candidates: buffer(this.candidates),
      counts: buffer(this.counts),
      lengths: buffer(this.lengths),
      flags: buffer(this.flags),
    };
  }

  /**
   * Makes room for user indices below `users` (growing by half, copying what is held). The arrays are
   * in shared memory (RankingBuffers.shared), so a grown store is new memory: a thread that holds the
   * old one must be handed the new.
   */
  fit(users: number): void {
    if (users <= this.flags.length) return;
    const size = Math.max(users, Math.ceil(this.flags.length * 1.5), 1024);
    const candidates = new Uint32Array(new SharedArrayBuffer(size * this.depth * 4));
    candidates.set(this.candidates);
    this.candidates = candidates;
    const counts = new Uint32Array(new SharedArrayBuffer(size * this.depth * 4));
    counts.set(this.counts);
    this.counts = counts;
    const lengths = new Uint16Array(new SharedArrayBuffer(size * 2));
    lengths.set(this.lengths);
    this.lengths = lengths;
    const flags = new Uint8Array(new SharedArrayBuffer(size));
    flags.set(this.flags);
    this.flags = flags;
  }

  has(u: number): boolean {
    return ((this.flags[u] ?? 0) & PRESENT) !== 0;
  }

  /** Sets u's buffer to the first `depth` of the entries given. */
  set(u: number, candidates: ArrayLike<number>, counts: ArrayLike<number>, complete: boolean): void {
    this.fit(u + 1);
    const n = Math.min(candidates.length, this.depth);
    const at = u * this.depth;
    for (let i = 0; i < n; i++) {
      this.candidates[at + i] = candidates[i] as number;
      this.counts[at + i] = counts[i] as number;
    }
    this.lengths[u] = n;
    this.flags[u] = PRESENT | (complete ? COMPLETE : 0);
  }

  /**
   * Sets u's buffer to the first `n` (at most `depth`) entries of typed arrays (bringForward's merge);
   * u must be within the store already (it had a buffer).
   */
  setPrefix(u: number, candidates: Uint32Array, counts: Uint32Array, n: number, complete: boolean): void {
    const at = u * this.depth;
    const bufC = this.candidates;
    const bufN = this.counts;
    for (let i = 0; i < n; i++) {
      bufC[at + i] = candidates[i] as number;
      bufN[at + i] = counts[i] as number;
    }
    this.lengths[u] = n;
    this.flags[u] = PRESENT | (complete ? COMPLETE : 0);
  }

  delete(u: number): void {
    if (u < this.flags.length) this.flags[u] = 0;
  }

  /** A copy of u's buffer, or undefined. */
  get(u: number): RankingBuffer | undefined {
    if (!this.has(u)) return undefined;
    const at = u * this.depth;
    const n = this.lengths[u] as number;
    return {
      candidates: Array.from(this.candidates.subarray(at, at + n)),
      counts: Array.from(this.counts.subarray(at, at + n)),
      complete: ((this.flags[u] as number) & COMPLETE) !== 0,
    };
  }

  /** renderHead as bytes (SuggestionListBytes.encode: a view into its current arena). */
  encodeHead(u: number, lists: SuggestionListBytes, perUser: number): Buffer {
    return lists.encode(
      this.candidates,
      this.counts,
      u * this.depth,
      Math.min(perUser, this.lengths[u] ?? 0),
    );
  }

  /** The cached value (CONTRACT §4) of u's buffer: its first `perUser` entries (renderList). */
  renderHead(u: number, ids: UserIds, perUser: number): string {
    return renderList(
      ids,
      this.candidates,
      this.counts,
      u * this.depth,
      Math.min(perUser, this.lengths[u] ?? 0),
    );
  }
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
  /** Stamp marks: E(u), the followees whose paths count. */
  viaMark = new Int32Array(0);
  /** Paths gained less paths lost per touched candidate, with exact LoggedPairs (left all 0). */
  delta = new Int32Array(0);
  /** Stamp marks: the followees u started following (with exact LoggedPairs). */
  joined = new Int32Array(0);
  /** Reused lists (emptied per user, not reallocated: this runs for most users every run). */
  readonly followed: number[] = [];
  readonly touchedList: number[] = [];
  readonly toRecount: number[] = [];
  readonly recounted: number[] = [];
  /** A merged buffer, before it is copied into the store (typed: copied typed array to typed array). */
  outCandidates = new Uint32Array(0);
  outCounts = new Uint32Array(0);
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
    this.viaMark = new Int32Array(size);
    this.delta = new Int32Array(size);
    this.joined = new Int32Array(size);
    this.#stamp = 0;
  }

  /** Makes room for a merged buffer of `depth` entries. */
  fitOut(depth: number): void {
    if (this.outCandidates.length >= depth) return;
    this.outCandidates = new Uint32Array(depth);
    this.outCounts = new Uint32Array(depth);
  }

  /** A stamp no mark holds yet (marks are compared with it, never cleared). */
  nextStamp(): number {
    if (this.#stamp === 0x7fffffff) {
      this.touched.fill(0);
      this.excluded.fill(0);
      this.recount.fill(0);
      this.viaMark.fill(0);
      this.joined.fill(0);
      this.#stamp = 0;
    }
    return ++this.#stamp;
  }
}

/**
 * A pair lookup (a binary search in a follower's pairs) against one step of a scan of pairs or of a
 * candidate's followers: the cost model that picks, per user, lookups or one scan of E(u)'s follows,
 * and per candidate, lookups or one scan of its followers.
 */
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
 * Sorts `list` in ranking order by `counts` (descending), then id: by insertion for the few entries
 * bringForward recounts for most users (no comparator calls), else Array.prototype.sort.
 */
function sortByRank(list: number[], counts: Uint32Array, ids: UserIds): void {
  const n = list.length;
  if (n > 16) {
    list.sort((a, b) => (counts[b] as number) - (counts[a] as number) || ids.compare(a, b));
    return;
  }
  for (let i = 1; i < n; i++) {
    const c = list[i] as number;
    const cn = counts[c] as number;
    let j = i - 1;
    for (; j >= 0; j--) {
      const d = list[j] as number;
      const dn = counts[d] as number;
      if (dn > cn || (dn === cn && ids.compare(d, c) < 0)) break;
      list[j + 1] = d;
    }
    list[j + 1] = c;
  }
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

/** In LoggedPairs.kind: the pair is an active follow now (after the logged rows are applied). */
const NOW_ACTIVE = 1;
/** In LoggedPairs.kind: the pair became an active follow over the logged rows (set when `exact`). */
const GAINED = 2;
/** In LoggedPairs.kind: the pair stopped being an active follow over the logged rows (as GAINED). */
const LOST = 4;

/**
 * The pairs logged since the last run, grouped by follower index in flat arrays: follower f's pairs
 * are entries `start[f]` … `start[f + 1] - 1` of `followee` and `kind`. Flat, because bringForward
 * reads the pairs of every logged followee of nearly every user each run: one pass over contiguous
 * memory per followee, where a list per follower and per kind of change cost a pointer chase each.
 */
export interface LoggedPairs {
  /**
   * 1 for each follower with logged pairs, 0 for the others: read first, one byte per user, so that
   * the many followees without logged pairs cost one read of a small, cached array.
   */
  logs: Uint8Array;
  /** Where each user index's pairs start in `followee` and `kind`; one slot more than the users. */
  start: Uint32Array;
  /** Each pair's followee (user index). */
  followee: Uint32Array;
  /** Each pair's NOW_ACTIVE, GAINED and LOST bits. */
  kind: Uint8Array;
  /**
   * Whether every buffer is exact for the graph as it was before these pairs were applied (each run
   * after an incremental one: that run recounted whatever the full refresh's buffers might have
   * missed), with GAINED and LOST set. A member's count is then brought forward by the pairs' changes
   * (the paths through pairs that did not change are the same), not recounted.
   */
  exact: boolean;
}

/**
 * LoggedPairs of `all[f]` (every followee f has a logged row for, one slot per user index), once the
 * rows are applied to `graph`: `before[f][k]` says whether the pair (f, `all[f][k]`) was an active
 * follow before them. `exact`: the buffers are exact for the graph before the rows (GAINED and LOST
 * are then set).
 */
export function loggedPairs(
  graph: Pick<FollowGraph, 'hasActive'>,
  all: readonly (readonly number[] | undefined)[],
  before: readonly (readonly boolean[] | undefined)[],
  exact: boolean,
): LoggedPairs {
  const users = all.length;
  const logs = new Uint8Array(users);
  const start = new Uint32Array(users + 1);
  let total = 0;
  for (let f = 0; f < users; f++) {
    start[f] = total;
    const cs = all[f];
    if (cs === undefined) continue;
    logs[f] = 1;
    total += cs.length;
  }
  start[users] = total;
  const followee = new Uint32Array(total);
  const kind = new Uint8Array(total);
  for (let f = 0; f < users; f++) {
    const cs = all[f];
    if (cs === undefined) continue;
    const was = before[f];
    let k = start[f] as number;
    cs.forEach((c, i) => {
      const now = graph.hasActive(f, c);
      const then = was?.[i] === true;
      followee[k] = c;
      kind[k++] =
        (now ? NOW_ACTIVE : 0) | (exact && now && !then ? GAINED : 0) | (exact && !now && then ? LOST : 0);
    });
  }
  return { logs, start, followee, kind, exact };
}

/** walkPairs: only touch the pairs' followees. */
const TOUCH = 0;
/** walkPairs: touch, and add 1 to `gains` per pair active now (an upper bound of paths gained). */
const COUNT_GAINS = 1;
/** walkPairs: touch, and add each pair's change (+1 gained, -1 lost) to `delta`. */
const COUNT_DELTAS = 2;

/**
 * Walks follower f's logged pairs for user u's bringForward: each followee c (but u) is touched (marked
 * `seen` and listed once) and counted as `mode` says.
 */
function walkPairs(
  logged: LoggedPairs,
  f: number,
  scratch: RankingScratch,
  walk: { u: number; seen: number; list: number[] },
  mode: number,
): void {
  const { followee, kind } = logged;
  const { touched, gains, delta } = scratch;
  const { u, seen, list } = walk;
  const end = logged.start[f + 1] as number;
  for (let k = logged.start[f] as number; k < end; k++) {
    const c = followee[k] as number;
    if (c === u) continue;
    if (touched[c] !== seen) {
      touched[c] = seen;
      list.push(c);
    }
    const bits = kind[k] as number;
    if (mode === COUNT_GAINS) {
      if ((bits & NOW_ACTIVE) !== 0) gains[c] = (gains[c] as number) + 1;
    } else if (mode === COUNT_DELTAS) {
      if ((bits & GAINED) !== 0) delta[c] = (delta[c] as number) + 1;
      else if ((bits & LOST) !== 0) delta[c] = (delta[c] as number) - 1;
    }
  }
}

/** In `RankingScratch.gains`: the candidate is g of u's own change, recounted whatever its gain. */
const FORCED = 0x80000000;

/**
 * u's buffer in `buffers` brought forward, in place, by the pairs logged since the last run, from the current graph
 * (see the module comment). `unanswered` (the buffer left as it was) when it cannot answer u: fewer
 * than `perUser` entries are sure, or u's own changes may move the `maxFollowees` cut of E(u) (more
 * followees than the cut, counting the changed ones).
 *
 * Work per user is kept to the few touched candidates that can matter: members (recounted, or moved
 * by their deltas with exact LoggedPairs), forced candidates (recounted), outsiders that gained no
 * path (skipped: they can only fall), and risers (recounted only when their best place could reach
 * the cached list; else they cut the buffer).
 */
export function bringForward(
  graph: FollowGraph,
  u: number,
  buffers: RankingBuffers,
  logged: LoggedPairs,
  settings: RankingSettings,
  scratch: RankingScratch,
): Brought {
  const followed = graph.followedInto(u, scratch.followed);
  const { logs, start, followee, kind } = logged;
  // u's own logged pairs: entries ownFrom … ownTo - 1.
  const ownFrom = logs[u] === 1 ? (start[u] as number) : 0;
  const ownTo = logs[u] === 1 ? (start[u + 1] as number) : 0;
  if (followed.length + (ownTo - ownFrom) > settings.maxFollowees && ownTo > ownFrom) return 'unanswered';
  scratch.fit(graph.ids.size);
  const { counts, gains, touched, excluded, recount, viaMark, delta, joined } = scratch;
  const ids = graph.ids;
  const perUser = settings.perUser;
  const depth = bufferDepth(perUser);

  // Members move by deltas when the buffers are exact and E(u) is F(u), before and after the rows
  // (the check above: u's own changes cannot cross the maxFollowees cut). A delta is then exact:
  // paths through the followees u kept change by their pairs' changes; a followee u started following
  // adds a path to each of its followees now, and one u stopped following takes away a path to each
  // of its followees before.
  const deltas = logged.exact && followed.length <= settings.maxFollowees;
  const notCandidate = scratch.nextStamp();
  for (const f of followed) excluded[f] = notCandidate;
  excluded[u] = notCandidate;
  // Touched candidates, each with (without deltas) an upper bound of the paths it gained: one per
  // logged pair (f, c) that is an active follow now, f followed by u.
  const seen = scratch.nextStamp();
  touched[u] = seen;
  const list = scratch.touchedList;
  list.length = 0;
  // With deltas, the followees u started following: their paths are added whole (below).
  const joinedMark = scratch.nextStamp();
  if (deltas) {
    for (let k = ownFrom; k < ownTo; k++) {
      if (((kind[k] as number) & GAINED) !== 0) joined[followee[k] as number] = joinedMark;
    }
  }
  const walk = { u, seen, list };
  for (const f of followed) {
    if (logs[f] !== 1) continue;
    walkPairs(
      logged,
      f,
      scratch,
      walk,
      !deltas ? COUNT_GAINS : joined[f] === joinedMark ? TOUCH : COUNT_DELTAS,
    );
  }
  for (let k = ownFrom; k < ownTo; k++) {
    // u started or stopped following g (or followed it again): g's logged pairs (counted above when u
    // follows g now), everyone g follows now (a path gained when u follows g), and g itself (no
    // longer a candidate, or a candidate again).
    const g = followee[k] as number;
    const bits = kind[k] as number;
    const followsG = (bits & NOW_ACTIVE) !== 0;
    const lostG = deltas && (bits & LOST) !== 0;
    // Without deltas, g's pairs that are not active now, touched; with them, g's followees before
    // (those now, less the pairs gained, plus the pairs lost) each lose a path when u stopped: the
    // pairs' changes here, the followees now below.
    if (!followsG && logs[g] === 1) walkPairs(logged, g, scratch, walk, lostG ? COUNT_DELTAS : TOUCH);
    const step = !deltas ? 0 : (bits & GAINED) !== 0 ? 1 : lostG ? -1 : 0;
    for (const c of graph.followed(g)) {
      if (c === u) continue;
      if (touched[c] !== seen) {
        touched[c] = seen;
        list.push(c);
      }
      if (!deltas) {
        if (followsG) gains[c] = (gains[c] as number) + 1;
      } else delta[c] = (delta[c] as number) + step;
    }
    if (g === u) continue;
    if (touched[g] !== seen) {
      touched[g] = seen;
      list.push(g);
    }
    // Recounted: with deltas, only when u stopped following g (a candidate again, never counted).
    if (!deltas || lostG) gains[g] = (gains[g] as number) | FORCED;
  }

  // u's buffer, read in place: entries `at` … `at + size - 1` of the store's arrays.
  const bufC = buffers.candidates;
  const bufN = buffers.counts;
  const at = u * buffers.depth;
  const size = buffers.lengths[u] as number;
  const complete = ((buffers.flags[u] as number) & COMPLETE) !== 0;
  const boundC = complete ? -1 : (bufC[at + size - 1] as number);
  const boundN = complete ? 0 : (bufN[at + size - 1] as number);
  // tau: the perUser-th untouched entry. Untouched entries keep their counts and order, so no entry
  // ranking after tau can reach the cached list, and a riser whose best place is after it needs no
  // recount.
  let tauC = -1;
  let tauN = 0;
  let sure = 0;
  let membersTouched = false;
  const stayMark = scratch.nextStamp();
  const recounted = scratch.recounted;
  recounted.length = 0;
  for (let i = 0; i < size; i++) {
    const c = bufC[at + i] as number;
    if (touched[c] === seen) {
      recount[c] = stayMark; // a touched member: recounted, or moved by its delta
      membersTouched = true;
      // (A member u started following leaves.)
      if (deltas && excluded[c] !== notCandidate) {
        const n = (bufN[at + i] as number) + (delta[c] as number);
        if (n > 0) {
          counts[c] = n;
          recounted.push(c);
        }
      }
      continue;
    }
    if (++sure === perUser) {
      tauC = c;
      tauN = bufN[at + i] as number;
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
    const change = delta[c] as number;
    delta[c] = 0;
    if (excluded[c] === notCandidate) {
      // A member u follows now leaves, uncounted.
      recount[c] = 0;
      continue;
    }
    if (recount[c] === stayMark) {
      if (!deltas) toRecount.push(c);
      continue;
    }
    if ((gain & FORCED) !== 0) {
      toRecount.push(c);
      continue;
    }
    // Paths gained: exact with deltas, else an upper bound.
    const up = deltas ? change : gain;
    if (up <= 0) continue; // no path gained: still after the bound
    // A riser: at best (the bound's count + paths gained, c).
    const bestN = base + up;
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
  const countMark = scratch.nextStamp();
  for (const c of toRecount) recount[c] = countMark;
  // Nothing touched can change the entries: the buffer stands as it is (most users reached, most
  // runs: their touched candidates only lost paths or cannot reach the cached list).
  if (toRecount.length === 0 && threatC < 0 && !membersTouched) return 'same-head';
  if (toRecount.length > 0) {
    const via = graph.recent(u, settings.maxFollowees, followed);
    let scanCost = 0;
    for (const g of via) scanCost += graph.pairCount(g);
    // Per candidate: a lookup per member of E(u), or a scan of its followers (few for most users).
    const lookupCost = via.length * LOOKUP_COST;
    let countCost = 0;
    for (const c of toRecount) countCost += Math.min(lookupCost, graph.followerCount(c));
    if (countCost < scanCost) {
      const inVia = scratch.nextStamp();
      for (const g of via) viaMark[g] = inVia;
      for (const c of toRecount) {
        let n = 0;
        if (graph.followerCount(c) <= lookupCost) n = graph.countMarkedFollowers(c, viaMark, inVia);
        else for (const g of via) if (graph.hasActive(g, c)) n++;
        if (n === 0) continue;
        counts[c] = n;
        recounted.push(c);
      }
    } else {
      graph.countPaths(via, counts, recounted, { mark: recount, stamp: countMark });
    }
  }
  if (recounted.length > 1) sortByRank(recounted, counts, ids);

  // Merge the untouched entries (in the buffer's order) with the recounted ones, keeping those sure:
  // up to the old bound (every unknown outsider ranks after it) and before the best place of any
  // riser left uncounted (the threat).
  scratch.fitOut(depth);
  const outC = scratch.outCandidates;
  const outN = scratch.outCounts;
  let m = 0;
  let sameHead = true;
  let total = 0;
  let i = 0;
  let j = 0;
  for (;;) {
    while (i < size && touched[bufC[at + i] as number] === seen) i++;
    const a = i < size ? (bufC[at + i] as number) : -1;
    const b = j < recounted.length ? (recounted[j] as number) : -1;
    if (a < 0 && b < 0) break;
    const an = a < 0 ? 0 : (bufN[at + i] as number);
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
    if (m < depth) {
      if (sameHead && m < perUser && (m >= size || bufC[at + m] !== c || bufN[at + m] !== n)) {
        sameHead = false;
      }
      outC[m] = c;
      outN[m++] = n;
    } else if (!complete) break;
  }
  for (const c of recounted) counts[c] = 0;
  const nowComplete = complete && threatC < 0 && total <= depth;
  if (!nowComplete && m < perUser) return 'unanswered';
  // The head is the same only if it is as long as before (a shorter list differs).
  if (Math.min(perUser, m) !== Math.min(perUser, size)) sameHead = false;
  buffers.setPrefix(u, outC, outN, m, nowComplete);
  return sameHead ? 'same-head' : 'new-head';
}

/**
 * The cached value (CONTRACT §4) of `n` ranking entries from `from` in `candidates` and `counts`: a
 * JSON array, as renderValueSql renders it in ClickHouse.
 */
export function renderList(
  ids: UserIds,
  candidates: ArrayLike<number>,
  counts: ArrayLike<number>,
  from: number,
  n: number,
): string {
  const parts: string[] = [];
  for (let i = from; i < from + n; i++) {
    const count = counts[i] as number;
    parts.push(
      `{"user_id":"${ids.id(candidates[i] as number)}","mutual_count":${count},"reason":"${count}${count === 1 ? ' mutual connection' : ' mutual connections'}"}`,
    );
  }
  return `[${parts.join(',')}]`;
}
