import { describe, expect, it } from 'vitest';
import { epochOf } from '../../src/cache/fence.js';
import { epochKey } from '../../src/cache/leader-lease.js';
import { temporaryKey } from '../../src/cache/replace.js';
import { fenceKeyForSlot, sameSlotKey, SLOT_COUNT, slotOf, tagForSlot } from '../../src/cache/slots.js';

describe('hash slots for per-slot fencing', () => {
  it('computes the cluster’s slot (CRC16/XMODEM mod 16384), honouring hash tags', () => {
    expect(slotOf('123456789')).toBe(0x31c3); // the spec's check value
    expect(slotOf('{user1000}.following')).toBe(slotOf('user1000'));
    expect(slotOf('foo{}{bar}')).toBe(slotOf('foo{}{bar}')); // an empty first tag: the whole key
  });

  it('has a tag for every slot, and each fence key lies in its slot', () => {
    for (let slot = 0; slot < SLOT_COUNT; slot++) expect(slotOf(tagForSlot(slot))).toBe(slot);
    for (const lease of ['cache:leader', '{app}:leader', 'odd}{:leader']) {
      for (const slot of [0, 1, 777, 9215, 16383]) {
        expect(slotOf(fenceKeyForSlot(lease, slot)), `${lease} slot ${slot}`).toBe(slot);
      }
    }
    expect(() => tagForSlot(SLOT_COUNT)).toThrow(RangeError);
  });

  it('names temporary keys and the epoch counter in the slot of the key they belong to', () => {
    for (const key of [
      'cache:leader',
      'cache:top',
      '{user:1}:feed',
      'x{y}z{w}',
      'a{}b',
      'a{b',
      'a}b',
      '{}',
    ]) {
      expect(slotOf(sameSlotKey(key, 'tmp:1')), key).toBe(slotOf(key));
      expect(slotOf(temporaryKey(key, 'c0ffee')), key).toBe(slotOf(key));
      expect(slotOf(epochKey(key)), key).toBe(slotOf(key));
      expect(sameSlotKey(key, 'tmp:1')).not.toBe(key);
    }
    expect(epochKey('cache:leader')).toBe('{cache:leader}:epoch');
  });

  it('reads the epoch of a lease token and refuses a token without one', () => {
    expect(epochOf('42:host:123:abcd')).toBe('42');
    expect(() => epochOf('epoch-1')).toThrow(/does not start with an epoch/);
  });
});
