/**
 * Builds kvhub's browser files into the output directory (dist/ unless `--out-dir` says otherwise),
 * where the built server serves them from:
 *
 *   browser/kvhub.js                  the SDK as one ES module for browsers (no `ws`, no zod, no node:)
 *   server/inspector/public/*         the web inspector: its page, style, icon and bundled script
 *
 * Run after `tsc -p tsconfig.build.json`: `npx tsx scripts/build-browser.ts [--out-dir dist]`.
 */
import { copyFile, mkdir, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { ASSETS, PUBLIC_DIR } from '../server/inspector/assets.js';
import { bundle } from '../server/inspector/bundle.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

/** Writes every inspector asset and the SDK bundle under `outDir`; returns the files written. */
export async function buildBrowser(outDir: string): Promise<string[]> {
  const written: string[] = [];
  for (const asset of ASSETS) {
    const target = join(outDir, asset.built);
    await mkdir(dirname(target), { recursive: true });
    if ('file' in asset.source) await copyFile(join(ROOT, PUBLIC_DIR, asset.source.file), target);
    else await writeFile(target, (await bundle(asset.source.bundle)).code);
    written.push(target);
  }
  return written;
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({ options: { 'out-dir': { type: 'string', default: join(ROOT, 'dist') } } });
  const files = await buildBrowser(resolve(values['out-dir']));
  for (const file of files) process.stdout.write(`wrote ${file}\n`);
}
