import { existsSync, readFileSync } from 'node:fs';

interface PackageJson {
  name?: string;
  version: string;
}

/**
 * kvhub's package.json: the nearest one named kvhub above this module, which is one folder up
 * from server/ in a checkout, two from dist/server/, three from the CommonJS build.
 */
function readPackageJson(): PackageJson {
  for (let up = '../'; up.length <= 12; up += '../') {
    const url = new URL(`${up}package.json`, import.meta.url);
    if (!existsSync(url)) continue;
    const json = JSON.parse(readFileSync(url, 'utf8')) as PackageJson;
    if (json.name === 'kvhub') return json;
  }
  throw new Error('kvhub cannot find its package.json');
}

/** This package's version, reported as `serverVersion` in hello. */
export const SERVER_VERSION: string = readPackageJson().version;
