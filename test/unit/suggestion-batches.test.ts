import { describe, expect, it } from 'vitest';
import { batchRanges } from '../../src/jobs/suggested-users.js';

const MAX = '18446744073709551615';

describe('batchRanges', () => {
  it('covers every UInt64 id exactly once, one range per planned batch start', () => {
    expect(batchRanges(['3', '10', '18446744073709551000'])).toEqual([
      { lo: '0', hi: '9' },
      { lo: '10', hi: '18446744073709550999' },
      { lo: '18446744073709551000', hi: MAX },
    ]);
  });

  it('gives one range for everything when the plan has no active user or one batch', () => {
    expect(batchRanges([])).toEqual([{ lo: '0', hi: MAX }]);
    expect(batchRanges(['42'])).toEqual([{ lo: '0', hi: MAX }]);
  });
});
