// Vitest globalSetup for the integration project: starts (or reuses) the real Redis, ClickHouse and Kafka
// with scripts/services.sh and hands their addresses to the tests (read them with servicesEnv() from
// ./env.js). The servers are left running afterwards: `scripts/services.sh down` stops them.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TestProject } from 'vitest/node';

export interface ServicesInfo {
  redisUrl: string;
  clickhouseUrl: string;
  kafkaBrokers: string[];
  /** Absolute path of scripts/services.sh (tests run `bash <it> stop|start <name>` for fault injection). */
  servicesScript: string;
  /** Absolute path of .services/, where `<name>.pid` holds each server's pid. */
  stateDir: string;
}

declare module 'vitest' {
  export interface ProvidedContext {
    services: ServicesInfo;
  }
}

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const servicesScript = path.join(repoRoot, 'scripts', 'services.sh');
const stateDir = path.join(repoRoot, '.services');

/** Runs `bash scripts/services.sh up`, showing its progress live; rejects with its last output on failure. */
function servicesUp(): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', [servicesScript, 'up'], {
      cwd: repoRoot,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let tail = '';
    const keep = (chunk: Buffer, to: NodeJS.WriteStream): void => {
      to.write(chunk);
      tail = (tail + chunk.toString('utf8')).slice(-4000);
    };
    child.stdout.on('data', (chunk: Buffer) => {
      keep(chunk, process.stdout);
    });
    child.stderr.on('data', (chunk: Buffer) => {
      keep(chunk, process.stderr);
    });
    child.on('error', (error) => {
      reject(new Error(`cannot run ${servicesScript}: ${error.message}`));
    });
    child.on('close', (code, signal) => {
      if (code === 0) {
        resolve();
        return;
      }
      const how = signal === null ? `exit code ${code ?? 'unknown'}` : `signal ${signal}`;
      reject(new Error(`scripts/services.sh up failed (${how}):\n${tail.trim()}`));
    });
  });
}

/** Parses the `export NAME=value` lines of .services/env. */
function readEnvFile(file: string): Map<string, string> {
  const values = new Map<string, string>();
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const match = /^\s*(?:export\s+)?([A-Z_][A-Z0-9_]*)=(.*)$/.exec(line);
    if (match?.[1] !== undefined && match[2] !== undefined) {
      values.set(match[1], match[2].trim().replace(/^(['"])(.*)\1$/, '$2'));
    }
  }
  return values;
}

function required(values: Map<string, string>, name: string, file: string): string {
  const value = values.get(name);
  if (value === undefined || value === '') {
    throw new Error(`${file} has no ${name}: run scripts/services.sh up`);
  }
  return value;
}

export default async function setup(project: TestProject): Promise<void> {
  await servicesUp();
  const envFile = path.join(stateDir, 'env');
  const values = readEnvFile(envFile);
  project.provide('services', {
    redisUrl: required(values, 'REDIS_URL', envFile),
    clickhouseUrl: required(values, 'CLICKHOUSE_URL', envFile),
    kafkaBrokers: required(values, 'KAFKA_BROKERS', envFile)
      .split(',')
      .map((broker) => broker.trim())
      .filter((broker) => broker !== ''),
    servicesScript,
    stateDir,
  });
}
