import keySlot from 'cluster-key-slot';

/**
 * Redis Cluster hash slots, as the cache writes need them: a Lua script may only touch keys of one slot,
 * so every write is grouped by slot, and each group's fence key (and any temporary key) must live in that
 * same slot.
 */

/** Number of hash slots of a Redis Cluster. */
export const SLOT_COUNT = 16384;

/** The hash slot of `key` (CRC16 of the key, or of its `{hash tag}`, mod 16384), as the cluster computes it. */
export function slotOf(key: string): number {
  return keySlot(key);
}

/**
 * A short hash tag for every slot: `TAGS[s]` is the smallest decimal number whose slot is `s`, so
 * `…{TAGS[s]}` lands in slot `s`. Built once on first use (about 200 k CRC16s, a few tens of ms); it
 * is a pure function of the slot algorithm, the same in every process, which is what lets replicas
 * agree on fence key names without coordination.
 */
let tags: readonly string[] | undefined;

function slotTags(): readonly string[] {
  if (tags !== undefined) return tags;
  const table = new Array<string | undefined>(SLOT_COUNT).fill(undefined);
  let missing = SLOT_COUNT;
  for (let n = 0; missing > 0; n++) {
    const s = slotOf(String(n));
    if (table[s] === undefined) {
      table[s] = String(n);
      missing--;
    }
  }
  tags = table as string[];
  return tags;
}

/** A hash tag (`{…}` content) whose slot is `slot`. */
export function tagForSlot(slot: number): string {
  const tag = slotTags()[slot];
  if (tag === undefined) throw new RangeError(`hash slot ${slot} is outside 0..${SLOT_COUNT - 1}`);
  return tag;
}

/**
 * A key named after `base` and `suffix` in the same hash slot as `base`: a key with a hash tag keeps it
 * (`base:suffix`); a key without braces becomes the tag itself (`{base}:suffix`), since the slot of
 * `{k}…` is the slot of `k`. A key with braces but no usable tag (like `a{}b`) is hashed whole: it gets
 * its slot's tag in front (`{tag}:base:suffix`).
 */
export function sameSlotKey(base: string, suffix: string): string {
  const open = base.indexOf('{');
  const close = open >= 0 ? base.indexOf('}', open + 1) : -1;
  if (close > open + 1) return `${base}:${suffix}`;
  if (!base.includes('{') && !base.includes('}')) return `{${base}}:${suffix}`;
  return `{${tagForSlot(slotOf(base))}}:${base}:${suffix}`;
}

/**
 * The fence key of `slot` for the lease `leaseKey`: `<lease without braces>:fence:{<tag>}`. It holds the
 * highest writer epoch that has written to that slot (see fence.ts).
 */
export function fenceKeyForSlot(leaseKey: string, slot: number): string {
  return `${leaseKey.replace(/[{}]/g, '')}:fence:{${tagForSlot(slot)}}`;
}

/** Items grouped by the hash slot of their key, in first-seen order of slots and items. */
export function groupBySlot<T>(items: readonly T[], keyOf: (item: T) => string): Map<number, T[]> {
  const groups = new Map<number, T[]>();
  for (const item of items) {
    const slot = slotOf(keyOf(item));
    const group = groups.get(slot);
    if (group) group.push(item);
    else groups.set(slot, [item]);
  }
  return groups;
}
