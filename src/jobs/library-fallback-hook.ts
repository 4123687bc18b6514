/**
 * A module resolve hook (`module.register`, run on Node's loader thread): when Node's own resolution of
 * `cache-refresher` fails for a job module, answer with the library that is running. See modules.ts.
 */

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
  try {
    return await nextResolve(specifier, context);
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    if (specifier !== 'cache-refresher' || libraryUrl === undefined || code !== 'ERR_MODULE_NOT_FOUND')
      throw err;
    return { url: libraryUrl, format: 'module', shortCircuit: true };
  }
}
