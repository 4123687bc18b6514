import { migrate } from '../clickhouse/schema.js';
import {
  resolveSeedOptions,
  seedDatabase,
  tableCounts,
  truncateData,
  type SeedOptions,
} from '../clickhouse/seed.js';
import { EXIT, parseCommandArgs, UsageError, type CommandInput } from './command.js';
import { abortOnSignal, withMigratedDatabase } from './migrate.js';

/** A whole number as typed by a person: digits, optionally grouped with `_` or `,` (10_000_000). */
export function parseCount(flag: string, text: string | undefined): bigint | undefined {
  if (text === undefined) return undefined;
  const clean = text.replace(/[_,]/g, '');
  if (!/^\d+$/.test(clean) || /^[_,]|[_,]$/.test(text)) {
    throw new UsageError(`--${flag} expects a whole number, got "${text}"`);
  }
  return BigInt(clean);
}

function smallCount(flag: string, text: string | undefined): number | undefined {
  const n = parseCount(flag, text);
  if (n === undefined) return undefined;
  if (n > BigInt(Number.MAX_SAFE_INTEGER)) throw new UsageError(`--${flag} is too large: ${text ?? ''}`);
  return Number(n);
}

/** Parses `seed` flags into validated options; every problem is a UsageError (exit 2). */
export function parseSeedArgs(args: string[]): { options: SeedOptions; replace: boolean } {
  const { values } = parseCommandArgs({
    args,
    options: {
      users: { type: 'string' },
      days: { type: 'string' },
      events: { type: 'string' },
      seed: { type: 'string' },
      replace: { type: 'boolean', default: false },
    },
    allowPositionals: false,
  });
  const options: SeedOptions = {};
  const users = smallCount('users', values.users);
  const days = smallCount('days', values.days);
  const events = smallCount('events', values.events);
  const seed = parseCount('seed', values.seed);
  if (users !== undefined) options.users = users;
  if (days !== undefined) options.days = days;
  if (events !== undefined) options.events = events;
  if (seed !== undefined) options.seed = seed;
  try {
    resolveSeedOptions(options);
  } catch (err) {
    if (err instanceof RangeError) throw new UsageError(err.message.replace(/^seed: /, ''), { cause: err });
    throw err;
  }
  return { options, replace: values.replace };
}

/**
 * `seed [--users N] [--days D] [--events N] [--seed S] [--replace]`: migrates, then loads deterministic
 * synthetic data ending now. It refuses to load on top of existing data (the same seed twice would
 * double every row) unless `--replace` empties the tables first.
 */
export async function seedCommand(input: CommandInput): Promise<number> {
  const { options, replace } = parseSeedArgs(input.args);
  const { config, io } = input;
  const signal = abortOnSignal(input);
  const db = config.clickhouse.database;
  try {
    return await withMigratedDatabase(
      config,
      async (client) => {
        const layout = { cluster: config.clickhouse.cluster };
        await migrate(client, signal, layout);
        const counts = await tableCounts(client, signal, layout);
        const nonEmpty = Object.entries(counts).filter(([, n]) => n > 0);
        if (nonEmpty.length > 0 && !replace) {
          io.stderr(
            `cache-refresher seed: database ${db} already holds data (${nonEmpty
              .map(([t, n]) => `${t}: ${n} rows`)
              .join(', ')}); seeding again would duplicate it. Use --replace to empty the tables first.\n`,
          );
          return EXIT.failure;
        }
        if (replace) await truncateData(client, signal, layout);
        const summary = await seedDatabase(client, {
          ...options,
          signal,
          onProgress: (p) => {
            const pct = p.total === 0 ? 100 : Math.round((p.done / p.total) * 100);
            io.stdout(
              `seed: ${p.table} ${p.done}/${p.total} (${pct}%) ${(p.elapsedMs / 1000).toFixed(1)} s\n`,
            );
          },
        });
        io.stdout(
          `seed: done in ${(summary.elapsedMs / 1000).toFixed(1)} s: database ${db}, seed ${summary.seed}, ` +
            `${summary.users} users, ${summary.relationshipRows} relationship rows, ${summary.posts} posts, ` +
            `${summary.events} events over ${summary.days} days ending ${new Date(summary.endSec * 1000).toISOString()}\n`,
        );
        return EXIT.ok;
      },
      signal,
    );
  } catch (err) {
    io.stderr(`cache-refresher seed: ${err instanceof Error ? err.message : String(err)}\n`);
    return EXIT.failure;
  }
}
