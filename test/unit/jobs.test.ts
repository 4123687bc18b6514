import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config.js';
import { builtInEntries } from '../../src/jobs/built-in.js';
import { defineJob, isRefreshJob, type JobSpec } from '../../src/jobs/define.js';
import { registerJobs } from '../../src/jobs/registration.js';

const run = (): Promise<{ items: number }> => Promise.resolve({ items: 1 });

describe('defineJob', () => {
  it('makes a frozen, recognisable job whose defaults carry the schedule and overrides', () => {
    const job = defineJob({ id: 'top-authors', schedule: { intervalSec: 60 }, run, priority: 2, ttlSec: 90 });
    expect(job.id).toBe('top-authors');
    expect(job.schedule).toEqual({ intervalSec: 60 });
    expect(job.defaults).toEqual({ intervalSec: 60, priority: 2, ttlSec: 90 });
    expect(isRefreshJob(job)).toBe(true);
    expect(Object.isFrozen(job)).toBe(true);
    expect(isRefreshJob({ id: 'x', schedule: { intervalSec: 1 }, defaults: {}, run })).toBe(false);
  });

  it('names every bad field with the value received', () => {
    const bad = {
      id: 'Top Authors',
      schedule: { intervalSec: 0 },
      run,
      retries: 11,
      priority: 1.5,
    } as JobSpec;
    expect(() => defineJob(bad)).toThrow(
      'defineJob(Top Authors): id must match [a-z0-9][a-z0-9-]*, got "Top Authors"; ' +
        'schedule.intervalSec must be an integer >= 1, got 0; ' +
        'retries must be an integer from 0 to 10, got 11; priority must be an integer from -1000 to 1000, got 1.5',
    );
    expect(() => defineJob({ id: 'a', schedule: { intervalSec: 1, cron: '* * * * *' }, run })).toThrow(
      'schedule must have exactly one of intervalSec and cron',
    );
    expect(() => defineJob({ id: 'a', schedule: { cron: 'soon' }, run })).toThrow(
      /schedule\.cron must be a croner pattern, got "soon"/,
    );
    expect(() => defineJob(undefined as never)).toThrow('defineJob(?): expects an object, got undefined');
  });
});

describe('readsTables', () => {
  it('is carried (frozen) from the spec to the job and declared by every built-in job', () => {
    const job = defineJob({
      id: 'a',
      schedule: { intervalSec: 1 },
      run,
      readsTables: ['posts', 'post_events'],
    });
    expect(job.readsTables).toEqual(['posts', 'post_events']);
    expect(Object.isFrozen(job.readsTables)).toBe(true);
    expect(defineJob({ id: 'b', schedule: { intervalSec: 1 }, run }).readsTables).toBeUndefined();
    expect(() =>
      defineJob({ id: 'c', schedule: { intervalSec: 1 }, run, readsTables: ['db.posts; DROP'] }),
    ).toThrow('readsTables must be an array of table names, got ["db.posts; DROP"]');
    const tables = Object.fromEntries(
      builtInEntries(parseConfig({})).map(({ job: j }) => [j.id, j.readsTables]),
    );
    expect(tables).toEqual({
      'trending-1h': ['post_events', 'post_engagement_1m'],
      'trending-24h': ['post_events', 'post_moments_6h', 'post_moments_1h', 'post_engagement_1m'],
      'trending-7d': [
        'post_events',
        'post_moments_1d',
        'post_moments_6h',
        'post_moments_1h',
        'post_engagement_1m',
      ],
      'suggested-users': ['post_events', 'user_relationships', 'user_activity_1d', 'post_engagement_1h'],
      'feed-warmer': [
        'post_events',
        'user_relationships',
        'posts',
        'post_engagement_1m',
        'post_engagement_1h',
      ],
    });
  });
});

describe('registerJobs', () => {
  const env = { TOP_AUTHORS_INTERVAL_SEC: '15', TOP_AUTHORS_PRIORITY: '4' };
  const custom = defineJob({ id: 'top-authors', schedule: { cron: '0 */5 * * * *' }, run });

  it('registers built-in and other jobs by the same rule, in order, with env overrides', () => {
    const config = parseConfig(env);
    const { jobs, problems } = registerJobs(
      env,
      [...builtInEntries(config), { job: custom, origin: { variable: 'JOB_MODULES', where: './a.mjs' } }],
      'UTC',
    );
    expect(problems).toEqual([]);
    expect(jobs.map((j) => j.job.id)).toEqual([
      'trending-1h',
      'trending-24h',
      'trending-7d',
      'suggested-users',
      'feed-warmer',
      'top-authors',
    ]);
    expect(jobs[5]?.settings).toMatchObject({ intervalSec: 15, cron: undefined, priority: 4, ttlSec: 45 });
  });

  it('rejects an id registered twice, naming both origins, and reports settings problems', () => {
    const config = parseConfig({});
    const clash = defineJob({ id: 'trending-1h', schedule: { intervalSec: 5 }, run });
    const { jobs, problems } = registerJobs(
      { TOP_AUTHORS_RETRIES: '-1' },
      [
        ...builtInEntries(config),
        { job: clash, origin: { variable: 'JOB_MODULES', where: './clash.mjs' } },
        { job: custom, origin: { variable: 'JOB_MODULES', where: './a.mjs' } },
      ],
      'UTC',
    );
    expect(jobs).toHaveLength(5);
    expect(problems).toEqual([
      {
        name: 'JOB_MODULES',
        value: './clash.mjs',
        expected: 'a job id not registered yet ("trending-1h" is already registered by built-in)',
      },
      { name: 'TOP_AUTHORS_RETRIES', value: '-1', expected: 'an integer from 0 to 10' },
    ]);
  });
});
