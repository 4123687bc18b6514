/**
 * The follow graph in this process's memory, for suggested-users' incremental mode
 * (suggested-users-incremental.ts): every (follower, followee) pair of `user_relationships` as
 * `FINAL` keeps it (its newest row), loaded once by a full refresh and brought forward from the change
 * log by each incremental run, so that a run reads only the rows inserted since the last one.
 *
 * Layout: users are dense indices (UserIds). Pairs are held as loaded in compressed sparse rows
 * (one offset array, then followee, updated_at and status per pair, grouped by follower) and, for a
 * follower whose pairs changed since the load, as a small edited copy. The active followers of each
 * user (the reverse direction, which says whom a changed follower affects) are kept the same way.
 * The loaded arrays take 13 bytes per pair (followee, updated_at, status, and the reverse direction's
 * follower for an active one) and 8 per user.
 */

/** A pair's status as the ranking sees it. */
export const REMOVED = 0;
/** An active, well-formed follow: the only kind the ranking counts. */
export const ACTIVE = 1;
/** A row whose status is neither `active` nor `removed` (bad data): the pair counts as not active. */
export const OTHER_STATUS = 2;

/**
 * User ids (UInt64 as decimal strings) as dense indices, in order of first sight. `compare` gives the
 * ids' numeric order, which breaks ties in the ranking.
 */
export class UserIds {
  readonly #index = new Map<string, number>();
  readonly #ids: string[] = [];
  /** Number(id): exact up to 2^53, and monotonic above, so equal values fall back to the strings. */
  readonly #approx: number[] = [];

  get size(): number {
    return this.#ids.length;
  }

  /** The index of `id` (a canonical decimal string), a new one when it is first seen. */
  intern(id: string): number {
    let i = this.#index.get(id);
    if (i === undefined) {
      i = this.#ids.length;
      this.#index.set(id, i);
      this.#ids.push(id);
      this.#approx.push(Number(id));
    }
    return i;
  }

  /** The id (decimal string) of index `i`. */
  id(i: number): string {
    const id = this.#ids[i];
    if (id === undefined) throw new RangeError(`no user index ${i}`);
    return id;
  }

  /** The ids of indices `from` … `to - 1` (a copy: what a helper thread's replica interns in order). */
  slice(from: number, to: number): string[] {
    return this.#ids.slice(from, to);
  }

  /** Negative, 0 or positive as the id of `a` is numerically below, equal to or above that of `b`. */
  compare(a: number, b: number): number {
    if (a === b) return 0;
    const d = (this.#approx[a] ?? 0) - (this.#approx[b] ?? 0);
    if (d !== 0) return d;
    const x = this.id(a);
    const y = this.id(b);
    // Canonical decimals: a longer one is larger; of equal length, the string order is the number's.
    return x.length - y.length || (x < y ? -1 : x > y ? 1 : 0);
  }
}

/**
 * The first position in `a[lo, hi)` (sorted ascending) whose value is not below `x`; `hi` if none.
 * Two copies, one per array kind, so that each stays monomorphic (it runs millions of times a run).
 */
function lowerBound(a: readonly number[], lo: number, hi: number, x: number): number {
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((a[mid] as number) < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** lowerBound over a typed array. */
function lowerBoundTyped(a: Uint32Array, lo: number, hi: number, x: number): number {
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((a[mid] as number) < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Adds 1 to `a[i]`; returns the value before. */
function bump(a: Uint32Array, i: number): number {
  const v = a[i] as number;
  a[i] = v + 1;
  return v;
}

/**
 * One follower's pairs after an edit (plain arrays: a few per changed follower), in followee order as
 * the loaded pairs are, so that a lookup is a binary search (a prolific follower has thousands).
 */
interface EditedPairs {
  to: number[];
  at: number[];
  status: number[];
}

/** What applying one row did: changed the pair, nothing (an older or equal row), or an undecidable tie. */
export type ApplyOutcome = 'applied' | 'unchanged' | 'tie';

/** Growable columns of loaded rows, before they are grouped by follower. */
export class FollowGraphBuilder {
  readonly ids: UserIds;
  #from = new Uint32Array(1 << 16);
  #to = new Uint32Array(1 << 16);
  #at = new Uint32Array(1 << 16);
  #status = new Uint8Array(1 << 16);
  #n = 0;

  /** `ids`: the index of user ids to extend (one the caller already holds indices of), or a new one. */
  constructor(ids: UserIds = new UserIds()) {
    this.ids = ids;
  }

  /** Adds the newest row of one pair (each pair once, as `FINAL` returns them). */
  add(follower: string, followee: string, status: number, updatedAt: number): void {
    if (this.#n === this.#from.length) this.#grow();
    const i = this.#n++;
    this.#from[i] = this.ids.intern(follower);
    this.#to[i] = this.ids.intern(followee);
    this.#at[i] = updatedAt;
    this.#status[i] = status;
  }

  #grow(): void {
    const size = this.#from.length * 2;
    const grow = <T extends Uint32Array | Uint8Array>(a: T, make: (n: number) => T): T => {
      const b = make(size);
      b.set(a);
      return b;
    };
    this.#from = grow(this.#from, (n) => new Uint32Array(n));
    this.#to = grow(this.#to, (n) => new Uint32Array(n));
    this.#at = grow(this.#at, (n) => new Uint32Array(n));
    this.#status = grow(this.#status, (n) => new Uint8Array(n));
  }

  /**
   * The graph of the rows added (the builder is spent). Two stable counting sorts, by followee and
   * then by follower, leave each follower's pairs in followee order, for hasActive's binary search.
   */
  build(): FollowGraph {
    const users = this.ids.size;
    const m = this.#n;
    const byFollowee = countingOrder(
      this.#to,
      m,
      users,
      new Uint32Array(m).map((_, i) => i),
    );
    const order = countingOrder(this.#from, m, users, byFollowee);
    // In shared memory, so that a helper thread reads the same arrays (FollowGraph.loadedArrays).
    const outStart = sharedUint32(users + 1);
    const inStart = sharedUint32(users + 1);
    for (let i = 0; i < m; i++) {
      bump(outStart, (this.#from[i] as number) + 1);
      if (this.#status[i] === ACTIVE) bump(inStart, (this.#to[i] as number) + 1);
    }
    for (let u = 0; u < users; u++) {
      outStart[u + 1] = (outStart[u + 1] as number) + (outStart[u] as number);
      inStart[u + 1] = (inStart[u + 1] as number) + (inStart[u] as number);
    }
    const outTo = sharedUint32(m);
    const outAt = sharedUint32(m);
    const outStatus = new Uint8Array(new SharedArrayBuffer(m));
    const inFrom = sharedUint32(inStart[users] as number);
    const inNext = inStart.slice(0, users);
    for (let j = 0; j < m; j++) {
      const i = order[j] as number;
      outTo[j] = this.#to[i] as number;
      outAt[j] = this.#at[i] as number;
      outStatus[j] = this.#status[i] as number;
      if (this.#status[i] === ACTIVE) inFrom[bump(inNext, this.#to[i] as number)] = this.#from[i] as number;
    }
    return new FollowGraph(this.ids, { outStart, outTo, outAt, outStatus, inStart, inFrom });
  }
}

/** A Uint32Array of `n` zeros in shared memory. */
function sharedUint32(n: number): Uint32Array {
  return new Uint32Array(new SharedArrayBuffer(n * 4));
}

/**
 * The arrays a graph is loaded into, in compressed sparse rows: follower u's pairs are `outStart[u]` …
 * `outStart[u + 1] - 1` of `outTo` (followee), `outAt` (updated_at) and `outStatus`, in followee order;
 * followee u's active followers are `inStart[u]` … `inStart[u + 1] - 1` of `inFrom`.
 */
export interface LoadedArrays {
  outStart: Uint32Array;
  outTo: Uint32Array;
  outAt: Uint32Array;
  outStatus: Uint8Array;
  inStart: Uint32Array;
  inFrom: Uint32Array;
}

/** `items` (row numbers) stably reordered by `key[item]` (0 ≤ key < `keys`), a counting sort. */
function countingOrder(key: Uint32Array, m: number, keys: number, items: Uint32Array): Uint32Array {
  const start = new Uint32Array(keys + 1);
  for (let i = 0; i < m; i++) bump(start, (key[i] as number) + 1);
  for (let k = 0; k < keys; k++) start[k + 1] = (start[k + 1] as number) + (start[k] as number);
  const out = new Uint32Array(m);
  for (let j = 0; j < m; j++) {
    const item = items[j] as number;
    out[bump(start, key[item] as number)] = item;
  }
  return out;
}

/**
 * The follow graph: each pair's newest row (status, updated_at), the active followees of a user
 * (F(u)), their `maxFollowees` most recent (E(u)), and a user's active followers.
 */
export class FollowGraph {
  readonly ids: UserIds;
  /** Users covered by the loaded arrays (indices from later rows exist only as edits). */
  readonly #loaded: number;
  readonly #outStart: Uint32Array;
  readonly #outTo: Uint32Array;
  readonly #outAt: Uint32Array;
  readonly #outStatus: Uint8Array;
  readonly #inStart: Uint32Array;
  readonly #inFrom: Uint32Array;
  /** Edited followers' pairs by user index (an array, not a Map: read for every hop of a count). */
  readonly #outEdited: (EditedPairs | undefined)[];
  /** Edited followees' active followers, by user index (made when first read after a change). */
  readonly #inEdited: (number[] | undefined)[];
  /**
   * Changes to a followee's active followers not yet made to its list: `x` adds follower x, `~x`
   * removes it. Kept apart because a popular followee gains and loses followers in every run while
   * its list (tens of thousands) is rarely read: copying and searching it per change cost most of
   * applying the rows.
   */
  readonly #inPending: (number[] | undefined)[];
  /** Per followee, followers added less removed in `#inPending` (for followerCount). */
  #inNet = new Int32Array(0);

  /**
   * `csr`: the loaded pairs (never written: edits are copies). A helper thread builds its replica of a
   * graph over the same arrays (`loadedArrays`, in shared memory) and applies the same rows.
   */
  constructor(ids: UserIds, csr: LoadedArrays) {
    this.ids = ids;
    this.#loaded = csr.outStart.length - 1;
    this.#outStart = csr.outStart;
    this.#outTo = csr.outTo;
    this.#outAt = csr.outAt;
    this.#outStatus = csr.outStatus;
    this.#inStart = csr.inStart;
    this.#inFrom = csr.inFrom;
    this.#outEdited = new Array<EditedPairs | undefined>(this.#loaded).fill(undefined);
    this.#inEdited = new Array<number[] | undefined>(this.#loaded).fill(undefined);
    this.#inPending = new Array<number[] | undefined>(this.#loaded).fill(undefined);
  }

  /** The loaded arrays, as given to the constructor (shared memory when FollowGraphBuilder built them). */
  loadedArrays(): LoadedArrays {
    return {
      outStart: this.#outStart,
      outTo: this.#outTo,
      outAt: this.#outAt,
      outStatus: this.#outStatus,
      inStart: this.#inStart,
      inFrom: this.#inFrom,
    };
  }

  /** `list[i] = value`, growing `list` with undefined first so it stays a dense array. */
  #setAt<T>(list: (T | undefined)[], i: number, value: T): void {
    while (list.length < i) list.push(undefined);
    list[i] = value;
  }

  #loadedPairs(f: number): number {
    return f < this.#loaded ? (this.#outStart[f + 1] as number) - (this.#outStart[f] as number) : 0;
  }

  /**
   * Applies one row of `user_relationships` as ReplacingMergeTree(updated_at) keeps the newest row per
   * pair: a row with a later `updated_at` replaces the pair's, an earlier one changes nothing, and so
   * does one equal in both time and status (the same row seen again: the load may already hold rows
   * the change log gives later). An equal time with another status is a `tie`: the engine keeps the
   * row inserted last, which the caller cannot tell from here (it refreshes in full).
   */
  apply(follower: number, followee: number, status: number, updatedAt: number): ApplyOutcome {
    const pairs = this.#edit(follower);
    const i = lowerBound(pairs.to, 0, pairs.to.length, followee);
    let wasActive = false;
    if (pairs.to[i] !== followee) {
      pairs.to.splice(i, 0, followee);
      pairs.at.splice(i, 0, updatedAt);
      pairs.status.splice(i, 0, status);
    } else {
      const at = pairs.at[i] as number;
      if (updatedAt < at) return 'unchanged';
      if (updatedAt === at) return pairs.status[i] === status ? 'unchanged' : 'tie';
      wasActive = pairs.status[i] === ACTIVE;
      pairs.at[i] = updatedAt;
      pairs.status[i] = status;
    }
    const isActive = status === ACTIVE;
    if (wasActive !== isActive) {
      let pending = this.#inPending[followee];
      if (pending === undefined) {
        pending = [];
        this.#setAt(this.#inPending, followee, pending);
      }
      pending.push(isActive ? follower : ~follower);
      if (this.#inNet.length <= followee) {
        const net = new Int32Array(Math.max(followee + 1, this.#inNet.length * 2, 1024));
        net.set(this.#inNet);
        this.#inNet = net;
      }
      this.#inNet[followee] = (this.#inNet[followee] as number) + (isActive ? 1 : -1);
    }
    return 'applied';
  }

  #edit(f: number): EditedPairs {
    let e = this.#outEdited[f];
    if (e === undefined) {
      const to: number[] = [];
      const at: number[] = [];
      const status: number[] = [];
      if (f < this.#loaded) {
        for (let i = this.#outStart[f] as number; i < (this.#outStart[f + 1] as number); i++) {
          to.push(this.#outTo[i] as number);
          at.push(this.#outAt[i] as number);
          status.push(this.#outStatus[i] as number);
        }
      }
      e = { to, at, status };
      this.#setAt(this.#outEdited, f, e);
    }
    return e;
  }

  /** g's edited followers with its pending changes made, or undefined when g has no edits. */
  #editedFollowers(g: number): number[] | undefined {
    const pending = this.#inPending[g];
    if (pending === undefined) return this.#inEdited[g];
    let e = this.#inEdited[g];
    if (e === undefined) {
      e = g < this.#loaded ? Array.from(this.#inFrom.subarray(this.#inStart[g], this.#inStart[g + 1])) : [];
      this.#setAt(this.#inEdited, g, e);
    }
    for (const x of pending) {
      if (x >= 0) e.push(x);
      else {
        const j = e.indexOf(~x);
        // Order carries no meaning: the last one fills the gap.
        if (j >= 0) e[j] = e[e.length - 1] as number;
        e.pop();
      }
    }
    this.#inPending[g] = undefined;
    this.#inNet[g] = 0;
    return e;
  }

  /** F(u): u's active followees (in no particular order). */
  followed(u: number): number[] {
    return this.followedInto(u, []);
  }

  /** F(u) into `out` (emptied first), which is returned. */
  followedInto(u: number, out: number[]): number[] {
    out.length = 0;
    const e = this.#outEdited[u];
    if (e !== undefined) {
      for (let i = 0; i < e.to.length; i++) if (e.status[i] === ACTIVE) out.push(e.to[i] as number);
    } else if (u < this.#loaded) {
      for (let i = this.#outStart[u] as number; i < (this.#outStart[u + 1] as number); i++) {
        if (this.#outStatus[i] === ACTIVE) out.push(this.#outTo[i] as number);
      }
    }
    return out;
  }

  /**
   * E(u): the `maxFollowees` most recent of F(u) (updated_at descending, then followee id ascending),
   * as suggestions-sql.ts defines it; all of F(u) when it is no longer than that. `followed`: F(u)
   * when the caller has it (returned as it is, or sorted in place and cut).
   */
  recent(u: number, maxFollowees: number, followed: number[] = this.followed(u)): number[] {
    if (followed.length <= maxFollowees) return followed;
    const at = new Map<number, number>();
    const e = this.#outEdited[u];
    if (e !== undefined) e.to.forEach((c, i) => at.set(c, e.at[i] as number));
    else {
      for (let i = this.#outStart[u] as number; i < (this.#outStart[u + 1] as number); i++) {
        at.set(this.#outTo[i] as number, this.#outAt[i] as number);
      }
    }
    followed.sort((a, b) => (at.get(b) ?? 0) - (at.get(a) ?? 0) || this.ids.compare(a, b));
    return followed.slice(0, maxFollowees);
  }

  /** u's active followers (in no particular order). */
  followers(u: number): ArrayLike<number> {
    const e = this.#editedFollowers(u);
    if (e !== undefined) return e;
    if (u >= this.#loaded) return [];
    return this.#inFrom.subarray(this.#inStart[u], this.#inStart[u + 1]);
  }

  /** How many active followers c has: the cost of scanning them (countMarkedFollowers). */
  followerCount(c: number): number {
    const pending = c < this.#inNet.length ? (this.#inNet[c] as number) : 0;
    const e = this.#inEdited[c];
    if (e !== undefined) return e.length + pending;
    const loaded = c < this.#loaded ? (this.#inStart[c + 1] as number) - (this.#inStart[c] as number) : 0;
    return loaded + pending;
  }

  /**
   * How many of c's active followers x have `mark[x] === stamp`: the paths to c from a marked set of
   * users, by one scan of c's followers (cheaper than a lookup per marked user when c has few).
   */
  countMarkedFollowers(c: number, mark: Int32Array, stamp: number): number {
    let n = 0;
    const e = this.#editedFollowers(c);
    if (e !== undefined) {
      for (let i = 0; i < e.length; i++) if (mark[e[i] as number] === stamp) n++;
    } else if (c < this.#loaded) {
      const from = this.#inFrom;
      const end = this.#inStart[c + 1] as number;
      for (let i = this.#inStart[c] as number; i < end; i++) if (mark[from[i] as number] === stamp) n++;
    }
    return n;
  }

  /** How many pairs (of any status) g has: the cost of scanning g's follows. */
  pairCount(g: number): number {
    const e = this.#outEdited[g];
    if (e !== undefined) return e.to.length;
    return this.#loadedPairs(g);
  }

  /** Whether g follows c now (the pair's newest row is an active follow). */
  hasActive(g: number, c: number): boolean {
    const e = this.#outEdited[g];
    if (e !== undefined) {
      const i = lowerBound(e.to, 0, e.to.length, c);
      return e.to[i] === c && e.status[i] === ACTIVE;
    }
    if (g >= this.#loaded) return false;
    // Loaded pairs are in followee order (FollowGraphBuilder.build).
    const end = this.#outStart[g + 1] as number;
    const i = lowerBoundTyped(this.#outTo, this.#outStart[g] as number, end, c);
    return i < end && this.#outTo[i] === c && this.#outStatus[i] === ACTIVE;
  }

  /**
   * Counts paths: for every g in `via` and every active followee c of g, `counts[c]++`; each c whose
   * count leaves 0 is pushed to `reached`. With `only`, only the c where `only.mark[c] === only.stamp`.
   */
  countPaths(
    via: readonly number[],
    counts: Uint32Array,
    reached: number[],
    only?: { mark: Int32Array; stamp: number },
  ): void {
    const status = this.#outStatus;
    const to = this.#outTo;
    for (const g of via) {
      const e = this.#outEdited[g];
      if (e !== undefined) {
        for (let i = 0; i < e.to.length; i++) {
          if (e.status[i] !== ACTIVE) continue;
          const c = e.to[i] as number;
          if (only !== undefined && only.mark[c] !== only.stamp) continue;
          if (bump(counts, c) === 0) reached.push(c);
        }
      } else if (g < this.#loaded) {
        const end = this.#outStart[g + 1] as number;
        for (let i = this.#outStart[g] as number; i < end; i++) {
          if (status[i] !== ACTIVE) continue;
          const c = to[i] as number;
          if (only !== undefined && only.mark[c] !== only.stamp) continue;
          if (bump(counts, c) === 0) reached.push(c);
        }
      }
    }
  }
}
