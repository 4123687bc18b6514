/** Every Redis key cache-refresher reads or writes (CONTRACT §2, §4). `p` is CACHE_KEY_PREFIX. */
export const keys = {
  trending: (p: string, window: '1h' | '24h' | '7d'): string => `${p}:trending:${window}`,
  suggestedUsers: (p: string, userId: string): string => `${p}:suggested_users:${userId}`,
  feed: (p: string, userId: string): string => `${p}:feed:${userId}`,
  jobFreshness: (p: string, jobId: string): string => `${p}:job:${jobId}`,
  leader: (p: string): string => `${p}:leader`,
};
