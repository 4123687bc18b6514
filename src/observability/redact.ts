/**
 * Keeps configured secrets out of everything the sidecar writes: log lines, command output, HTTP answers
 * and dead-letter records. The clients are built so that no secret should reach any of them (passwords
 * travel in client options, never in URLs); this is the second line, for the message nobody foresaw, such
 * as a server error that quotes a rejected credential.
 */

/** Replaces every occurrence of a configured secret in a text with `[REDACTED]`. */
export type Redact = (text: string) => string;

export const REDACTED = '[REDACTED]';

/**
 * Secrets shorter than this are not searched for: replacing every "ab" in every log line would make logs
 * unreadable and protect nothing (a two-character password does not survive a guess anyway).
 */
export const MIN_REDACTED_LENGTH = 4;

/**
 * A redactor for `secrets`. Each is searched in the forms it takes in our outputs: verbatim, escaped
 * inside a JSON string, and percent-encoded (inside a URL). Longer secrets are replaced first, so one
 * that contains another is not left half-visible.
 */
export function createRedactor(secrets: readonly string[]): Redact {
  const forms = new Set<string>();
  for (const secret of secrets) {
    if (secret.length < MIN_REDACTED_LENGTH) continue;
    forms.add(secret);
    forms.add(JSON.stringify(secret).slice(1, -1));
    forms.add(encodeURIComponent(secret));
  }
  const ordered = [...forms].sort((a, b) => b.length - a.length);
  if (ordered.length === 0) return (text) => text;
  return (text) => {
    let out = text;
    for (const form of ordered) {
      if (out.includes(form)) out = out.split(form).join(REDACTED);
    }
    return out;
  };
}

/** `value` with every string in it redacted (through its JSON form: for plain data such as records). */
export function redactJson<T>(value: T, redact: Redact): T {
  // JSON.stringify's type says string, but it returns undefined for undefined and functions.
  const json = JSON.stringify(value) as string | undefined;
  if (json === undefined) return value;
  const redacted = redact(json);
  return redacted === json ? value : (JSON.parse(redacted) as T);
}

/** `io` whose `stdout` and `stderr` write through `redact` (command output, usage errors). */
export function redactedIo<T extends { stdout: (text: string) => void; stderr: (text: string) => void }>(
  io: T,
  redact: Redact,
): T {
  return {
    ...io,
    stdout: (text: string) => {
      io.stdout(redact(text));
    },
    stderr: (text: string) => {
      io.stderr(redact(text));
    },
  };
}
