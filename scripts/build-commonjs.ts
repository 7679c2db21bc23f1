/**
 * The CommonJS build, for `require('kvhub')` from agents and tools that are not ES modules: every
 * module of the entry points' folders compiled by esbuild into dist/cjs/, one file per module as
 * tsc lays them out (so the entry points share modules, and a KvError is the same class whichever
 * entry point threw it), next to a copy of their type declarations, under a package.json that
 * makes both CommonJS. Run after `tsc -p tsconfig.build.json` and scripts/build-browser.ts, whose
 * declarations and inspector files it copies (`npm run build` runs all three).
 *
 * Packages stay external (`require`d at run time) except nanoid, which ships only as an ES module
 * and is small: inlined into the modules that use it, so that the build loads on every Node line
 * kvhub supports.
 */
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build, type Plugin } from 'esbuild';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const OUT = join(ROOT, 'dist/cjs');
/** The folders of the package's entry points and of what they import; cli.ts is the command's own. */
const FOLDERS = ['sdk', 'protocol', 'server', 'embedded'];
const sources = FOLDERS.flatMap((folder) =>
  (readdirSync(join(ROOT, folder), { recursive: true }) as string[])
    .filter((file) => file.endsWith('.ts') && !file.endsWith('.d.ts'))
    .map((file) => join(ROOT, folder, file)),
).filter((file) => !file.startsWith(join(ROOT, 'server/inspector/page')) && file !== join(ROOT, 'server/cli.ts'));

const manifest = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as Record<'dependencies' | 'devDependencies', Record<string, string>>;
// esbuild, a dev dependency, is imported by the inspector only in a source checkout.
const external = Object.keys({ ...manifest.dependencies, ...manifest.devDependencies }).filter((name) => name !== 'nanoid');

/** Keeps every import of another kvhub module a `require` of its compiled file. */
const ownModulesExternal: Plugin = {
  name: 'own-modules-external',
  setup(on) {
    on.onResolve({ filter: /^\./ }, (args) =>
      args.kind === 'entry-point' || args.importer.includes('/node_modules/') ? undefined : { path: args.path, external: true },
    );
  },
};

// A fresh folder: a module deleted from the sources must not live on in the build.
rmSync(OUT, { recursive: true, force: true });
mkdirSync(OUT, { recursive: true });
writeFileSync(join(OUT, 'package.json'), `${JSON.stringify({ type: 'commonjs' }, null, 2)}\n`);
// import.meta.url has no CommonJS meaning: each bundle gets its own file's URL instead.
const shimDir = mkdtempSync(join(tmpdir(), 'kvhub-cjs-'));
const shim = join(shimDir, 'import-meta-url.js');
writeFileSync(shim, "export const importMetaUrl = require('node:url').pathToFileURL(__filename).href;\n");

try {
  await build({
    entryPoints: sources.map((file) => ({ in: file, out: relative(ROOT, file).replace(/\.ts$/, '') })),
    outdir: OUT,
    bundle: true,
    plugins: [ownModulesExternal],
    platform: 'node',
    format: 'cjs',
    target: 'node20',
    external,
    inject: [shim],
    define: { 'import.meta.url': 'importMetaUrl' },
    logLevel: 'warning',
  });

  // The declarations tsc wrote, copied under dist/cjs/ so that TypeScript reads them as CommonJS.
  for (const folder of readdirSync(join(ROOT, 'dist'))) {
    if (folder === 'cjs' || !statSync(join(ROOT, 'dist', folder)).isDirectory()) continue;
    cpSync(join(ROOT, 'dist', folder), join(OUT, folder), {
      recursive: true,
      filter: (path) => statSync(path).isDirectory() || path.endsWith('.d.ts'),
    });
  }
  // The inspector serves its files from two folders above its module (server/inspector/assets.ts),
  // which in this build is dist/cjs/: it gets its own copy of what scripts/build-browser.ts wrote.
  for (const folder of ['browser', 'server/inspector/public']) {
    if (existsSync(join(ROOT, 'dist', folder))) cpSync(join(ROOT, 'dist', folder), join(OUT, folder), { recursive: true });
  }
} finally {
  rmSync(shimDir, { recursive: true, force: true });
}
