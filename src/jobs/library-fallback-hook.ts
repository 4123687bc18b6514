/**
 * A module resolve hook (`module.register`, run on Node's loader thread), for JOB_MODULES (modules.ts):
 * - when Node's own resolution of `cache-refresher` fails for a job module, it answers with the library
 *   that is running;
 * - a specifier made by `resolveFromSpecifier` is resolved as if imported from the parent it names
 *   (a package name relative to the working directory).
 */

const FROM_PREFIX = 'cache-refresher-resolve-from:';

/** A specifier that this hook resolves as `specifier` imported from the module at `parentUrl`. */
export function resolveFromSpecifier(specifier: string, parentUrl: string): string {
  return FROM_PREFIX + encodeURIComponent(JSON.stringify({ specifier, parentUrl }));
}

interface HookData {
  libraryUrl: string;
}

type NextResolve = (
  specifier: string,
  context: { parentURL?: string | undefined },
) => Promise<{ url: string; format?: string | null | undefined }>;

let libraryUrl: string | undefined;

export function initialize(data: HookData): void {
  libraryUrl = data.libraryUrl;
}

export async function resolve(
  specifier: string,
  context: { parentURL?: string | undefined },
  nextResolve: NextResolve,
): Promise<{ url: string; format?: string | null | undefined; shortCircuit?: boolean }> {
  if (specifier.startsWith(FROM_PREFIX)) {
    const target = JSON.parse(decodeURIComponent(specifier.slice(FROM_PREFIX.length))) as {
      specifier: string;
      parentUrl: string;
    };
    return nextResolve(target.specifier, { ...context, parentURL: target.parentUrl });
  }
  try {
    return await nextResolve(specifier, context);
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    if (specifier !== 'cache-refresher' || libraryUrl === undefined || code !== 'ERR_MODULE_NOT_FOUND')
      throw err;
    return { url: libraryUrl, format: 'module', shortCircuit: true };
  }
}
