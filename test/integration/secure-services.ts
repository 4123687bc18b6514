// The secure set of local servers (TLS + authentication), for the integration tests that need it. The
// test file's own beforeAll calls secureServicesUp(): only those tests pay its start-up (measured on a
// 2-core machine: 3.5 s for a first start, certificates and Kafka's storage format included; 0.4 s when up).
import { execFile } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { Kafka, logLevel } from 'kafkajs';
import { servicesEnv } from './env.js';

export interface SecureServices {
  /** The sidecar's variables for the secure servers (.services/secure/env): passwords by *_FILE. */
  env: Record<string, string>;
  /** The CA that signed every secure server's certificate. */
  caFile: string;
  /** Every password the secure servers know (read from .services/secure/secrets). */
  secrets: string[];
  /** The second Kafka user, for reading records back with credentials other than the sidecar's. */
  reader: { username: string; password: string };
  /** Absolute path of .services/secure. */
  dir: string;
  /** What `services.sh up --secure` printed (searched for secrets like every other output). */
  output: string;
}

function parseEnvFile(file: string): Record<string, string> {
  const values: Record<string, string> = {};
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const match = /^\s*export\s+([A-Z_][A-Z0-9_]*)=(.*)$/.exec(line);
    if (match?.[1] !== undefined && match[2] !== undefined) values[match[1]] = match[2].trim();
  }
  return values;
}

/** `scripts/services.sh up --secure` (idempotent), then what it wrote. */
export async function secureServicesUp(): Promise<SecureServices> {
  const script = servicesEnv().servicesScript;
  const output = await new Promise<string>((resolve, reject) => {
    execFile('bash', [script, 'up', '--secure'], { timeout: 240_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`services.sh up --secure failed: ${err.message}\n${stdout}\n${stderr}`));
      else resolve(stdout + stderr);
    });
  });
  const dir = path.join(path.dirname(script), '..', '.services', 'secure');
  const all = parseEnvFile(path.join(dir, 'env'));
  const { SECURE_KAFKA_READER_USERNAME, SECURE_KAFKA_READER_PASSWORD_FILE, ...env } = all;
  const secretsDir = path.join(dir, 'secrets');
  const secrets = readdirSync(secretsDir)
    .filter((f) => f.endsWith('.password'))
    .map((f) => readFileSync(path.join(secretsDir, f), 'utf8').trim());
  if (SECURE_KAFKA_READER_USERNAME === undefined || SECURE_KAFKA_READER_PASSWORD_FILE === undefined) {
    throw new Error(`${dir}/env names no Kafka reader user`);
  }
  return {
    env,
    caFile: env.REDIS_TLS_CA_FILE ?? '',
    secrets,
    reader: {
      username: SECURE_KAFKA_READER_USERNAME,
      password: readFileSync(SECURE_KAFKA_READER_PASSWORD_FILE, 'utf8').trim(),
    },
    dir,
    output,
  };
}

/** A kafkajs client that logs in as the reader user over SASL_SSL (SCRAM-SHA-512). */
export function readerKafka(s: SecureServices): Kafka {
  return new Kafka({
    clientId: `test-reader-${randomUUID().slice(0, 8)}`,
    brokers: (s.env.KAFKA_BROKERS ?? '').split(','),
    ssl: { ca: [readFileSync(s.caFile, 'utf8')] },
    sasl: { mechanism: 'scram-sha-512', username: s.reader.username, password: s.reader.password },
    logLevel: logLevel.NOTHING,
    retry: { retries: 10, initialRetryTime: 200, maxRetryTime: 2_000 },
  });
}

/**
 * The forms a secret can take in an output: verbatim, percent-encoded, and base64 of `user:secret`
 * (an HTTP Basic or SASL PLAIN credential) for any user name in `users`.
 */
export function secretForms(secret: string, users: readonly string[]): string[] {
  return [
    secret,
    encodeURIComponent(secret),
    ...users.map((u) => Buffer.from(`${u}:${secret}`).toString('base64')),
    ...users.map((u) => Buffer.from(`\u0000${u}\u0000${secret}`).toString('base64')),
  ];
}

/** Every (secret form, where) found in the named outputs. */
export function findSecrets(
  outputs: Record<string, string>,
  secrets: readonly string[],
  users: readonly string[],
): string[] {
  const found: string[] = [];
  for (const secret of secrets) {
    for (const form of secretForms(secret, users)) {
      for (const [where, text] of Object.entries(outputs)) {
        if (text.includes(form))
          found.push(`${where} contains a form of a ${secret.length}-character secret`);
      }
    }
  }
  return found;
}
