import { describe, expect, it } from 'vitest';
import type { ChangeLogPosition } from '../../src/jobs/suggested-users-changes.js';
import {
  configFingerprint,
  decideRefresh,
  MAX_STATE_AGE_SEC,
  type DecisionInput,
  type RunStateRow,
} from '../../src/jobs/suggested-users-state.js';
import { FakeClock } from './helpers/fake-clock.js';

/** suggested-users' incremental mode: when a run may be incremental, on an injected clock. */

const SETTINGS = { perUser: 20, maxFollowees: 1000, activeDays: 7 };
const LOG: ChangeLogPosition = { watermark: '120', uuid: 'u-1', engine: 'MergeTree', viewExists: true };

function setup(): { clock: FakeClock; nowSec: () => number; state: RunStateRow; input: () => DecisionInput } {
  const clock = new FakeClock(Date.UTC(2026, 5, 1, 12, 0, 0));
  const nowSec = (): number => Math.floor(clock.now() / 1000);
  const state: RunStateRow = {
    seq: 4,
    generation: 'run-a:1',
    phase: 'finished',
    mode: 'incremental',
    now: nowSec(),
    watermark: '100',
    logUuid: 'u-1',
    fingerprint: configFingerprint(SETTINGS),
    replica: 'host:1',
    incrementalRuns: 3,
  };
  const input = (): DecisionInput => ({
    latest: state,
    log: LOG,
    fingerprint: configFingerprint(SETTINGS),
    replica: 'host:1',
    nowSec: nowSec(),
    fullEvery: 12,
    canExtend: true,
  });
  return { clock, nowSec, state, input };
}

describe('decideRefresh', () => {
  it('runs incrementally on a sound state, carrying it for the change window', async () => {
    const { clock, state, input } = setup();
    await clock.advance(600_000);
    expect(decideRefresh(input())).toEqual({ mode: 'incremental', previous: state });
  });

  it('refreshes fully every fullEvery runs: after fullEvery - 1 incremental ones', () => {
    const { state, input } = setup();
    expect(decideRefresh({ ...input(), latest: { ...state, incrementalRuns: 10 } }).mode).toBe('incremental');
    expect(decideRefresh({ ...input(), latest: { ...state, incrementalRuns: 11 } })).toEqual({
      mode: 'full',
      reason: 'scheduled',
    });
    expect(decideRefresh({ ...input(), fullEvery: 1, latest: { ...state, incrementalRuns: 0 } })).toEqual({
      mode: 'full',
      reason: 'scheduled',
    });
  });

  it('refreshes fully when the state is missing or doubtful, naming why', () => {
    const { state, input } = setup();
    const reason = (patch: Partial<DecisionInput>): string | undefined => {
      const d = decideRefresh({ ...input(), ...patch });
      return d.mode === 'full' ? d.reason : undefined;
    };
    expect(reason({ latest: undefined })).toBe('no_state');
    expect(reason({ latest: { ...state, phase: 'started' } })).toBe('previous_run_unfinished');
    expect(reason({ fingerprint: configFingerprint({ ...SETTINGS, maxFollowees: 500 }) })).toBe(
      'config_changed',
    );
    expect(reason({ fingerprint: configFingerprint({ ...SETTINGS, activeDays: 3 }) })).toBe('config_changed');
    expect(reason({ fingerprint: configFingerprint({ ...SETTINGS, perUser: 10 }) })).toBe('config_changed');
    expect(reason({ log: { ...LOG, uuid: '' } })).toBe('change_log_missing');
    expect(reason({ log: { ...LOG, viewExists: false } })).toBe('change_log_missing');
    expect(reason({ log: { ...LOG, engine: 'ReplicatedMergeTree' } })).toBe('change_log_not_plain_mergetree');
    expect(reason({ log: { ...LOG, uuid: 'u-2' } })).toBe('change_log_replaced');
    expect(reason({ log: { ...LOG, watermark: '99' } })).toBe('watermark_ahead');
    expect(reason({ replica: 'host:2' })).toBe('replica_changed');
    expect(reason({ canExtend: false })).toBe('writer_cannot_extend');
  });

  it('compares watermarks as 64-bit integers, not as strings or doubles', () => {
    const { state, input } = setup();
    const big = (w: string, log: string): string =>
      decideRefresh({ ...input(), latest: { ...state, watermark: w }, log: { ...LOG, watermark: log } }).mode;
    expect(big('9', '10')).toBe('incremental'); // '9' > '10' as strings
    expect(big('18446744073709551614', '18446744073709551615')).toBe('incremental');
    expect(big('18446744073709551615', '18446744073709551614')).toBe('full'); // equal as doubles
  });

  it('distrusts a state from the future (the clock stepped back) and one too old for the change log', async () => {
    const { clock, input } = setup();
    clock.stepWall(-1000);
    expect(decideRefresh(input())).toEqual({ mode: 'full', reason: 'state_in_future' });
    clock.stepWall(1000 + MAX_STATE_AGE_SEC * 1000);
    expect(decideRefresh(input()).mode).toBe('incremental');
    await clock.advance(1000);
    expect(decideRefresh(input())).toEqual({ mode: 'full', reason: 'state_too_old' });
  });
});
