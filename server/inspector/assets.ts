import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { bundle, type BundleName } from './bundle.js';

/** One file the inspector serves: where it comes from in a source checkout, and where a build puts it. */
export interface AssetSpec {
  /** The URL path it is served at. */
  readonly path: string;
  readonly contentType: string;
  /** A file under server/inspector/public/, or a bundle made from TypeScript sources. */
  readonly source: { readonly file: string } | { readonly bundle: BundleName };
  /** Its place in a build, relative to the output directory (dist/). */
  readonly built: string;
  /** Pages on any origin may load it. @default false */
  readonly crossOrigin?: boolean;
}

/** Where the inspector's static files are, relative to the repository root (and, in a build, to dist/). */
export const PUBLIC_DIR = 'server/inspector/public';

/** Everything the inspector serves. The page and the SDK bundle hold no data: all of it is public. */
export const ASSETS: readonly AssetSpec[] = [
  { path: '/', contentType: 'text/html; charset=utf-8', source: { file: 'index.html' }, built: `${PUBLIC_DIR}/index.html` },
  { path: '/inspector.css', contentType: 'text/css; charset=utf-8', source: { file: 'inspector.css' }, built: `${PUBLIC_DIR}/inspector.css` },
  { path: '/favicon.svg', contentType: 'image/svg+xml', source: { file: 'favicon.svg' }, built: `${PUBLIC_DIR}/favicon.svg` },
  { path: '/inspector.js', contentType: 'text/javascript; charset=utf-8', source: { bundle: 'page' }, built: `${PUBLIC_DIR}/inspector.js` },
  // Where a page outside kvhub can also import the browser SDK from.
  { path: '/kvhub.js', contentType: 'text/javascript; charset=utf-8', source: { bundle: 'sdk' }, built: 'browser/kvhub.js', crossOrigin: true },
];

/** A served file, ready to send. */
export interface Asset {
  readonly body: Buffer;
  readonly contentType: string;
  /** A strong validator of `body`, quoted. */
  readonly etag: string;
}

/** The inspector cannot serve a file; the message says how to get it. */
export class AssetUnavailableError extends Error {
  override readonly name = 'AssetUnavailableError';
}

/** The repository root in a source checkout, the output directory (dist/) in a build: both two levels up. */
const ROOT = new URL('../../', import.meta.url);

/**
 * True when this module runs from the TypeScript sources (tsx, vitest): the bundles are then made
 * from those sources on first request, so they can never be older than the code beside them.
 * A build has no .ts files and serves what the build script put there.
 */
const FROM_SOURCE = existsSync(fileURLToPath(new URL('sdk/browser.ts', ROOT)));

const loaded = new Map<string, Promise<Asset>>();

/** The asset served at `path`, or undefined when the inspector serves nothing there. */
export function findAsset(path: string): AssetSpec | undefined {
  return ASSETS.find((asset) => asset.path === path);
}

/**
 * The content of `spec`, read (or bundled) once per process and kept. A failure is not kept,
 * so a request after the cause is fixed (e.g. a syntax error in the page's source) succeeds.
 */
export function loadAsset(spec: AssetSpec): Promise<Asset> {
  let asset = loaded.get(spec.path);
  if (asset === undefined) {
    asset = produce(spec).then((body) => ({ body, contentType: spec.contentType, etag: etagOf(body) }));
    loaded.set(spec.path, asset);
    asset.catch(() => loaded.delete(spec.path));
  }
  return asset;
}

async function produce(spec: AssetSpec): Promise<Buffer> {
  if (!FROM_SOURCE) {
    try {
      return await readFile(new URL(spec.built, ROOT));
    } catch (cause) {
      throw new AssetUnavailableError(`${spec.built} is missing from this build of kvhub; build the browser files with \`npm run build\``, { cause });
    }
  }
  if ('file' in spec.source) return readFile(new URL(`${PUBLIC_DIR}/${spec.source.file}`, ROOT));
  try {
    return Buffer.from((await bundle(spec.source.bundle)).code, 'utf8');
  } catch (cause) {
    const missing = (cause as { code?: unknown }).code === 'ERR_MODULE_NOT_FOUND';
    throw new AssetUnavailableError(
      missing
        ? 'serving the inspector from source needs esbuild, a development dependency: run `npm install`'
        : `bundling ${spec.path} failed: ${(cause as Error).message}`,
      { cause },
    );
  }
}

function etagOf(body: Buffer): string {
  return `"${createHash('sha256').update(body).digest('base64url').slice(0, 27)}"`;
}
