import { describe, expect, it } from 'vitest';
import { UserIds } from '../../src/jobs/follow-graph.js';
import { renderList } from '../../src/jobs/suggested-users-ranking.js';
import { SuggestionListBytes } from '../../src/jobs/suggestion-list-bytes.js';
import { mulberry32 } from './helpers/random.js';

describe('SuggestionListBytes', () => {
  it('renders the same bytes as renderList: ids up to 20 digits, counts 1 and above, empty lists', () => {
    const random = mulberry32(16);
    const ids = new UserIds();
    const special = ['1', '9', '10', '18446744073709551615', '9007199254740993', '4294967296'];
    for (const id of special) ids.intern(id);
    for (let i = 0; i < 500; i++)
      ids.intern(String(1 + Math.floor(random() * 10 ** (1 + Math.floor(random() * 15)))));
    const lists = new SuggestionListBytes(ids);
    const held: { bytes: Buffer; text: string }[] = [];
    // Enough lists to fill more than one arena, all kept: an earlier view must stay as it was.
    for (let k = 0; k < 8000; k++) {
      const n = k % 50 === 0 ? 0 : 1 + Math.floor(random() * 20);
      const from = Math.floor(random() * 5);
      const candidates: number[] = [];
      const counts: number[] = [];
      for (let i = 0; i < from + n; i++) {
        candidates.push(Math.floor(random() * ids.size));
        counts.push(random() < 0.3 ? 1 : random() < 0.02 ? 4294967295 : Math.floor(random() * 1000));
      }
      held.push({
        bytes: lists.encode(candidates, counts, from, n),
        text: renderList(ids, candidates, counts, from, n),
      });
    }
    for (const { bytes, text } of held) expect(bytes.toString('latin1')).toBe(text);
    expect(new Set(held.map((h) => h.bytes.buffer)).size).toBeGreaterThan(1);
    expect(held.some((h) => h.text === '[]')).toBe(true);
    expect(held.some((h) => h.text.includes('"18446744073709551615"'))).toBe(true);
    expect(held.some((h) => h.text.includes('"reason":"1 mutual connection"}'))).toBe(true);
    expect(held.some((h) => h.text.includes('"mutual_count":4294967295,'))).toBe(true);
  });
});
