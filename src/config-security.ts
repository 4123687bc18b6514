import { X509Certificate } from 'node:crypto';

/**
 * TLS and credentials for Redis, ClickHouse and Kafka (README "Connecting to managed services"), read
 * from the environment by `parseConfig`. Secrets are read here once, from a variable or from its
 * `*_FILE` twin (the container convention: a file mounted from a secret store), and from then on live
 * only in this typed object: no URL handed to a client carries them and every problem report describes
 * them without printing them.
 */

/** The certificate authority a client trusts for one service. */
export interface TlsTrust {
  /** The CA file's path as configured; undefined: the platform's default CAs (a public CA). */
  caFile: string | undefined;
  /** That file's PEM text (one or more certificates). */
  ca: string | undefined;
}

export type KafkaSaslMechanism = 'plain' | 'scram-sha-256' | 'scram-sha-512';
export const KAFKA_SASL_MECHANISMS: readonly KafkaSaslMechanism[] = [
  'plain',
  'scram-sha-256',
  'scram-sha-512',
];

export interface KafkaSasl {
  mechanism: KafkaSaslMechanism;
  username: string;
  password: string;
}

export interface ConnectionSecurity {
  /**
   * Redis ACL user and password (from `REDIS_URL`'s user info, or `REDIS_PASSWORD`/`REDIS_PASSWORD_FILE`)
   * and, for a `rediss://` URL, the TLS trust (`REDIS_TLS_CA_FILE`). Shared by every Redis client the
   * sidecar makes (standalone today; cluster and sentinel clients take the same options).
   */
  redis: {
    username: string | undefined;
    password: string | undefined;
    tls: TlsTrust | undefined;
    /**
     * The sentinels' own ACL user and password (`REDIS_SENTINEL_USERNAME`, `REDIS_SENTINEL_PASSWORD` or
     * `REDIS_SENTINEL_PASSWORD_FILE`), when they differ from the data nodes' (sentinels protected with
     * `requirepass` or ACLs); absent or undefined fields: the sentinels are asked without AUTH.
     */
    sentinel?: { username: string | undefined; password: string | undefined };
  };
  /** For an `https://` `CLICKHOUSE_URL`: the TLS trust (`CLICKHOUSE_TLS_CA_FILE`). */
  clickhouse: { tls: TlsTrust | undefined };
  /** `KAFKA_SSL` with `KAFKA_SSL_CA_FILE`, and SASL (`KAFKA_SASL_*`); undefined when off. */
  kafka: { ssl: TlsTrust | undefined; sasl: KafkaSasl | undefined };
  /**
   * Every secret value configured (passwords, the admin token), for the redaction of logs and outputs.
   */
  secrets: readonly string[];
}

/** One bad variable, in the shape of `ConfigProblem` (kept local so the two modules do not import each other). */
export interface SecurityProblem {
  name: string;
  value: string | undefined;
  expected: string;
}

/** Reads a file as UTF-8 text; `parseConfig` takes one so tests need no files. */
export type ReadTextFile = (path: string) => string;

type Env = Readonly<Record<string, string | undefined>>;

/** How a secret appears in a problem report: never its value. */
export function describeSecret(value: string): string {
  return `<secret of ${value.length} characters>`;
}

/**
 * `scheme://user:password@host` with the password replaced by `***`, for reports and logs; a value that
 * is not a URL has anything between `://` and `@` masked.
 */
export function maskUrlCredentials(value: string): string {
  if (URL.canParse(value)) {
    const url = new URL(value);
    if (url.password === '') return value;
    url.password = '***';
    return url.toString();
  }
  return value.replace(/\/\/[^/@]*@/, '//***@');
}

class SecurityReader {
  readonly problems: SecurityProblem[] = [];
  readonly secrets = new Set<string>();

  constructor(
    private readonly env: Env,
    private readonly readFile: ReadTextFile,
  ) {}

  raw(name: string): string | undefined {
    const v = this.env[name];
    return v === undefined || v.trim() === '' ? undefined : v.trim();
  }

  problem(name: string, value: string | undefined, expected: string): void {
    this.problems.push({ name, value, expected });
  }

  #file(name: string, path: string): string | undefined {
    try {
      return this.readFile(path);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      const why = code === 'ENOENT' ? 'it does not exist' : code === 'EACCES' ? 'permission denied' : code;
      this.problem(name, path, `a readable file (${why ?? String(err)})`);
      return undefined;
    }
  }

  /**
   * `<NAME>` or the contents of the file `<NAME>_FILE` (one trailing newline removed: `echo` and most
   * secret stores add one). Both set is ambiguous and reported; so is an empty file.
   */
  secret(name: string): string | undefined {
    const direct = this.env[name];
    const fileName = `${name}_FILE`;
    const path = this.raw(fileName);
    if (direct !== undefined && direct !== '' && path !== undefined) {
      this.problem(fileName, path, `either ${name} or ${fileName}, not both`);
      return undefined;
    }
    let value: string | undefined;
    if (path !== undefined) {
      const text = this.#file(fileName, path);
      if (text === undefined) return undefined;
      value = text.replace(/\r?\n$/, '');
      if (value === '') {
        this.problem(fileName, path, 'a file holding the secret (this one is empty)');
        return undefined;
      }
    } else {
      value = direct === '' ? undefined : direct;
    }
    if (value !== undefined) this.secrets.add(value);
    return value;
  }

  /** A PEM file of one or more CA certificates, checked by parsing the first one. */
  caFile(name: string): TlsTrust | undefined {
    const path = this.raw(name);
    if (path === undefined) return undefined;
    const pem = this.#file(name, path);
    if (pem === undefined) return undefined;
    try {
      new X509Certificate(pem);
    } catch (err) {
      const why = err instanceof Error ? err.message : String(err);
      this.problem(name, path, `a PEM file of CA certificates (${why})`);
      return undefined;
    }
    return { caFile: path, ca: pem };
  }
}

/**
 * A URL's percent-encoded user or password, decoded; a malformed escape (`%zz`) is kept as written
 * rather than failing the whole configuration on what is, after all, a valid password character.
 */
export function decodeUserInfo(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch (err) {
    if (err instanceof URIError) return text;
    throw err;
  }
}

/** The scheme of a URL-valued variable, or undefined when unset or unparsable (reported elsewhere). */
function schemeOf(value: string | undefined): string | undefined {
  return value !== undefined && URL.canParse(value) ? new URL(value).protocol : undefined;
}

function readRedis(r: SecurityReader): ConnectionSecurity['redis'] {
  const url = r.raw('REDIS_URL') ?? 'redis://127.0.0.1:6379';
  const parsed = URL.canParse(url) ? new URL(url) : undefined;
  const urlUser = parsed && parsed.username !== '' ? decodeUserInfo(parsed.username) : undefined;
  const urlPassword = parsed && parsed.password !== '' ? decodeUserInfo(parsed.password) : undefined;
  if (urlPassword !== undefined) r.secrets.add(urlPassword);
  const password = r.secret('REDIS_PASSWORD');
  if (password !== undefined && urlPassword !== undefined) {
    r.problem(
      r.raw('REDIS_PASSWORD_FILE') !== undefined ? 'REDIS_PASSWORD_FILE' : 'REDIS_PASSWORD',
      describeSecret(password),
      'no password while REDIS_URL carries one (set it in one place)',
    );
  }
  const trust = r.caFile('REDIS_TLS_CA_FILE');
  const tls = parsed?.protocol === 'rediss:';
  if (trust !== undefined && parsed !== undefined && !tls) {
    r.problem(
      'REDIS_TLS_CA_FILE',
      trust.caFile,
      `a CA only with a rediss:// REDIS_URL (REDIS_URL is ${parsed.protocol}//)`,
    );
  }
  const sentinelUser = r.raw('REDIS_SENTINEL_USERNAME');
  const sentinelPassword = r.secret('REDIS_SENTINEL_PASSWORD');
  if (
    (sentinelUser !== undefined || sentinelPassword !== undefined) &&
    r.raw('REDIS_SENTINELS') === undefined
  ) {
    const name = sentinelUser !== undefined ? 'REDIS_SENTINEL_USERNAME' : 'REDIS_SENTINEL_PASSWORD';
    r.problem(
      name,
      sentinelUser ?? describeSecret(sentinelPassword ?? ''),
      'unset unless REDIS_SENTINELS is set (it is how the sidecar logs in to the sentinels)',
    );
  }
  return {
    username: urlUser,
    password: password ?? urlPassword,
    tls: tls ? (trust ?? { caFile: undefined, ca: undefined }) : undefined,
    ...(sentinelUser !== undefined || sentinelPassword !== undefined
      ? { sentinel: { username: sentinelUser, password: sentinelPassword } }
      : {}),
  };
}

function readClickHouse(r: SecurityReader): { password: string; tls: TlsTrust | undefined } {
  const password = r.secret('CLICKHOUSE_PASSWORD') ?? '';
  const trust = r.caFile('CLICKHOUSE_TLS_CA_FILE');
  const url = r.raw('CLICKHOUSE_URL') ?? 'http://127.0.0.1:8123';
  const scheme = schemeOf(url);
  // The client accepts credentials inside the URL too; such a password is a secret like any other.
  const urlPassword = scheme !== undefined ? new URL(url).password : '';
  if (urlPassword !== '') r.secrets.add(decodeUserInfo(urlPassword));
  if (trust !== undefined && scheme !== undefined && scheme !== 'https:') {
    r.problem(
      'CLICKHOUSE_TLS_CA_FILE',
      trust.caFile,
      `a CA only with an https:// CLICKHOUSE_URL (it is ${scheme}//)`,
    );
  }
  return { password, tls: scheme === 'https:' ? (trust ?? { caFile: undefined, ca: undefined }) : undefined };
}

function readKafka(r: SecurityReader): ConnectionSecurity['kafka'] {
  const sslRaw = r.raw('KAFKA_SSL')?.toLowerCase();
  let ssl = false;
  if (sslRaw !== undefined) {
    if (['true', '1', 'yes', 'on'].includes(sslRaw)) ssl = true;
    else if (!['false', '0', 'no', 'off'].includes(sslRaw))
      r.problem('KAFKA_SSL', r.raw('KAFKA_SSL'), 'a boolean (true/false, 1/0, yes/no, on/off)');
  }
  const trust = r.caFile('KAFKA_SSL_CA_FILE');
  if (trust !== undefined && !ssl && sslRaw !== undefined) {
    r.problem('KAFKA_SSL_CA_FILE', trust.caFile, 'a CA only with KAFKA_SSL=true (KAFKA_SSL is false)');
  } else if (trust !== undefined && sslRaw === undefined) {
    r.problem('KAFKA_SSL', undefined, 'true, since KAFKA_SSL_CA_FILE is set (a CA without TLS is a mistake)');
  }

  const mechanismRaw = r.raw('KAFKA_SASL_MECHANISM');
  const mechanism = KAFKA_SASL_MECHANISMS.find((m) => m === mechanismRaw?.toLowerCase());
  if (mechanismRaw !== undefined && mechanism === undefined) {
    r.problem('KAFKA_SASL_MECHANISM', mechanismRaw, `one of ${KAFKA_SASL_MECHANISMS.join(', ')}`);
  }
  const username = r.raw('KAFKA_SASL_USERNAME');
  const password = r.secret('KAFKA_SASL_PASSWORD');
  let sasl: KafkaSasl | undefined;
  if (mechanismRaw !== undefined) {
    if (username === undefined)
      r.problem('KAFKA_SASL_USERNAME', undefined, `a user name for SASL ${mechanismRaw}`);
    if (password === undefined && r.problems.every((p) => !p.name.startsWith('KAFKA_SASL_PASSWORD'))) {
      r.problem(
        'KAFKA_SASL_PASSWORD',
        undefined,
        `a password (or KAFKA_SASL_PASSWORD_FILE) for SASL ${mechanismRaw}`,
      );
    }
    if (mechanism !== undefined && username !== undefined && password !== undefined) {
      sasl = { mechanism, username, password };
    }
  } else if (username !== undefined || password !== undefined) {
    r.problem(
      'KAFKA_SASL_MECHANISM',
      undefined,
      `one of ${KAFKA_SASL_MECHANISMS.join(', ')}, since KAFKA_SASL_USERNAME or KAFKA_SASL_PASSWORD is set`,
    );
  }
  return { ssl: ssl ? (trust ?? { caFile: undefined, ca: undefined }) : undefined, sasl };
}

/**
 * Reads every TLS and credential variable. Problems are returned, not thrown, so `parseConfig` reports
 * them with all the others in one go. `clickhousePassword` is `CLICKHOUSE_PASSWORD` or its file twin.
 */
export function readConnectionSecurity(
  env: Env,
  readFile: ReadTextFile,
): { security: ConnectionSecurity; clickhousePassword: string; problems: SecurityProblem[] } {
  const r = new SecurityReader(env, readFile);
  const redis = readRedis(r);
  const clickhouse = readClickHouse(r);
  const kafka = readKafka(r);
  const adminToken = r.raw('ADMIN_TOKEN');
  if (adminToken !== undefined) r.secrets.add(adminToken);
  return {
    security: { redis, clickhouse: { tls: clickhouse.tls }, kafka, secrets: [...r.secrets] },
    clickhousePassword: clickhouse.password,
    problems: r.problems,
  };
}
