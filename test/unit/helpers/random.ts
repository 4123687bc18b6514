/**
 * mulberry32: a tiny deterministic PRNG (32-bit state), so a seeded test draws the same numbers on
 * every run and a failure can be replayed from its seed. Returns numbers in [0, 1).
 */
export function mulberry32(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
