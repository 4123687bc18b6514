/**
 * Turns a client's connection failure into a sentence that names the likely cause and the setting to
 * check. Clients report TLS and authentication failures in their own words ("self-signed certificate in
 * certificate chain", "WRONGPASS", "SASL SCRAM SHA512 authentication failed", "socket hang up"); an
 * operator wiring the sidecar to a managed service needs to know which of their variables is wrong.
 */

export type ServiceName = 'redis' | 'clickhouse' | 'kafka';

interface ServiceSettings {
  ca: string;
  credentials: string;
  /** How to turn TLS on for this service. */
  tlsOn: string;
  tlsOff: string;
}

const SETTINGS: Record<ServiceName, ServiceSettings> = {
  redis: {
    ca: 'REDIS_TLS_CA_FILE',
    credentials: "REDIS_URL's user and REDIS_PASSWORD / REDIS_PASSWORD_FILE",
    tlsOn: 'a rediss:// REDIS_URL',
    tlsOff: 'a redis:// REDIS_URL',
  },
  clickhouse: {
    ca: 'CLICKHOUSE_TLS_CA_FILE',
    credentials: 'CLICKHOUSE_USER and CLICKHOUSE_PASSWORD / CLICKHOUSE_PASSWORD_FILE',
    tlsOn: 'an https:// CLICKHOUSE_URL',
    tlsOff: 'an http:// CLICKHOUSE_URL',
  },
  kafka: {
    ca: 'KAFKA_SSL_CA_FILE',
    credentials:
      'KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD / KAFKA_SASL_PASSWORD_FILE',
    tlsOn: 'KAFKA_SSL=true',
    tlsOff: 'KAFKA_SSL=false',
  },
};

/** Node's codes for a server certificate that does not chain to a trusted CA. */
const UNTRUSTED_CERT_CODES = new Set([
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_SIGNATURE_FAILURE',
]);

/** The first `code` along the error's cause chain. */
function codeOf(err: unknown): string | undefined {
  let current: unknown = err;
  for (let depth = 0; depth < 5 && current instanceof Error; depth++) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === 'string' || typeof code === 'number') return String(code);
    current = current.cause;
  }
  return undefined;
}

/** The error's own message and those of its causes, for matching. */
function messagesOf(err: unknown): string {
  const parts: string[] = [];
  let current: unknown = err;
  for (let depth = 0; depth < 5 && current !== undefined && current !== null; depth++) {
    if (!(current instanceof Error)) {
      if (typeof current === 'string') parts.push(current);
      break;
    }
    // A wrapper often repeats its cause's message: keep each text once.
    const text = current.message;
    if (!parts.some((p) => p.includes(text))) parts.push(text);
    current = current.cause;
  }
  return parts.join(' | ');
}

/**
 * One sentence naming the probable cause of `err` for `service`, followed by the client's own message in
 * brackets. `tls` says whether the client was configured for TLS (it decides what a closed connection
 * most likely means). Unknown errors come back as their message alone.
 */
export function explainConnectionError(service: ServiceName, err: unknown, opts: { tls: boolean }): string {
  const message = messagesOf(err);
  const cause = connectionCause(service, err, opts);
  return cause === undefined ? message : `${cause} [${message}]`;
}

/** The probable cause alone (see `explainConnectionError`), or undefined when the error is not recognised. */
export function connectionCause(
  service: ServiceName,
  err: unknown,
  opts: { tls: boolean },
): string | undefined {
  const s = SETTINGS[service];
  const message = messagesOf(err);
  const code = codeOf(err);
  if (
    (code !== undefined && UNTRUSTED_CERT_CODES.has(code)) ||
    /self[- ]signed certificate|unable to (verify|get local issuer)/i.test(message)
  )
    return `TLS failed: the server's certificate is not signed by a CA this client trusts (check ${s.ca})`;
  if (code === 'CERT_HAS_EXPIRED' || /certificate has expired/i.test(message))
    return "TLS failed: the server's certificate has expired";
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID' || /altnames|Hostname\/IP does not match/i.test(message))
    return "TLS failed: the server's certificate does not name the host connected to (use the host name the certificate was issued for)";
  if (
    code === 'ERR_SSL_WRONG_VERSION_NUMBER' ||
    /wrong version number|packet length too long|http request/i.test(message)
  )
    return `TLS failed: the server does not speak TLS on this port (use ${s.tlsOff}, or the server's TLS port)`;
  if (opts.tls && /disconnected before secure TLS connection|ETIMEDOUT|Connection timeout/i.test(message))
    return `TLS failed: no TLS handshake with the server: it may not speak TLS on this port (use ${s.tlsOff}, or the server's TLS port), or it is unreachable`;
  // ioredis's Sentinel client, after asking every sentinel in turn (its "Last error" alone would point
  // at the data nodes' settings).
  if (service === 'redis' && /All sentinels are unreachable/.test(message))
    return /WRONGPASS|NOAUTH/.test(message)
      ? 'the sentinels refused the login (check REDIS_SENTINEL_USERNAME and REDIS_SENTINEL_PASSWORD)'
      : 'no sentinel of REDIS_SENTINELS answered (check the addresses, and REDIS_SENTINEL_PASSWORD if they require AUTH)';
  if (
    /WRONGPASS|NOAUTH|AUTHENTICATION_FAILED|Authentication failed|authentication failed|SASL.*(failed|Authentication)|invalid username-password/i.test(
      message,
    )
  )
    return `authentication failed: wrong user name or password (check ${s.credentials})`;
  if (/not authorized|AUTHORIZATION_FAILED|NOPERM/i.test(message))
    return `authorization failed: the user logged in but lacks a permission (check its ACLs / grants)`;
  if (/unsupported SASL mechanism|UNSUPPORTED_SASL_MECHANISM|SASL mechanism/i.test(message))
    return `authentication failed: the server does not offer this SASL mechanism (check KAFKA_SASL_MECHANISM)`;
  if (
    !opts.tls &&
    (code === 'ECONNRESET' ||
      /Connection is closed|socket hang up|ECONNRESET|Closed connection|Connection timeout|Request timed out/i.test(
        message,
      ))
  )
    return `the server closed the connection or did not answer (if it only speaks TLS, use ${s.tlsOn})`;
  if (code === 'ECONNREFUSED' || /ECONNREFUSED/.test(message))
    return 'connection refused: the server is not listening there';
  if (code === 'ENOTFOUND' || /ENOTFOUND|EAI_AGAIN/.test(message)) return 'the host name does not resolve';
  return undefined;
}
