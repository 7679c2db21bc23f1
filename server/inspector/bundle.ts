import { fileURLToPath } from 'node:url';
import type { Metafile, Plugin } from 'esbuild';

/** The two browser bundles: the SDK, and the inspector page that imports it. */
export type BundleName = 'sdk' | 'page';

/** A bundle's code, and the source files that went into it (relative to the repository root). */
export interface Bundle {
  code: string;
  inputs: string[];
}

/** Where the page imports the SDK from: the served bundle, next to the page, so the page dogfoods it. */
export const PAGE_SDK_IMPORT = './kvhub.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const ENTRIES: Record<BundleName, string> = {
  sdk: fileURLToPath(new URL('../../sdk/browser.ts', import.meta.url)),
  page: fileURLToPath(new URL('./page/main.ts', import.meta.url)),
};

/**
 * The SDK opens `ws` through a dynamic import only when no WebSocket constructor is given, which
 * the browser entry never does; esbuild would still follow the import (and bundle `ws`'s browser
 * stub). Resolve it to a module that says what went wrong instead.
 */
const noWs: Plugin = {
  name: 'kvhub-no-ws',
  setup(build) {
    build.onResolve({ filter: /^ws$/ }, () => ({ path: 'ws', namespace: 'kvhub-no-ws' }));
    build.onLoad({ filter: /.*/, namespace: 'kvhub-no-ws' }, () => ({
      contents: "throw new Error('the browser build of kvhub has no `ws`: use createClient() from this bundle, which uses the global WebSocket');",
      loader: 'js',
    }));
  },
};

/** The page's import of the SDK's browser entry stays an import, of the served SDK bundle. */
const sdkFromServer: Plugin = {
  name: 'kvhub-sdk-from-server',
  setup(build) {
    build.onResolve({ filter: /\/sdk\/browser\.js$/ }, () => ({ path: PAGE_SDK_IMPORT, external: true }));
  },
};

/**
 * Bundles `name` from the TypeScript sources into one ES module for browsers. esbuild is a
 * development dependency: this runs in a source checkout (the server on first request, the
 * build script), never from the published package, which ships the bundles prebuilt.
 */
export async function bundle(name: BundleName): Promise<Bundle> {
  const { build } = await import('esbuild');
  const result = await build({
    entryPoints: [ENTRIES[name]],
    absWorkingDir: ROOT,
    bundle: true,
    write: false,
    format: 'esm',
    platform: 'browser',
    // What the page and SDK use (Object.hasOwn, class fields) runs as written in browsers since 2022.
    target: 'es2022',
    charset: 'utf8',
    legalComments: 'none',
    metafile: true,
    logLevel: 'silent',
    plugins: name === 'sdk' ? [noWs] : [sdkFromServer],
  });
  const [output] = result.outputFiles;
  if (output === undefined) throw new Error(`esbuild wrote no output for the ${name} bundle`);
  return { code: output.text, inputs: sourceFiles(result.metafile) };
}

function sourceFiles(metafile: Metafile): string[] {
  return Object.keys(metafile.inputs);
}
