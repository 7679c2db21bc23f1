#!/usr/bin/env bash
# The test suite on Node 24 as well as on this machine's Node. Node 24 comes from npm (the
# node-linux-<arch> package that the `node@24` package installs, which also carries the headers), and
# better-sqlite3 is rebuilt against those headers in a copy of the project, so that this
# checkout's own build for its Node stays as it is. Takes a few minutes: the copy, the compile
# (about two minutes here) and the suite (or the test files given as arguments).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# The package of this machine's architecture, as the node@24 package would pick it.
case "$(uname -m)" in
  x86_64) arch=x64 ;;
  aarch64 | arm64) arch=arm64 ;;
  *) echo "test:node24: no Node 24 package for $(uname -m) on npm" >&2; exit 1 ;;
esac
npm install --prefix "$work/node24" --no-save --no-audit --no-fund "node-linux-$arch@24" >/dev/null
node24="$work/node24/node_modules/node-linux-$arch"
echo "test:node24: node $("$node24/bin/node" --version)"

# The project without its builds and data, then its installed packages.
mkdir "$work/kvhub"
tar -C "$root" --exclude=./node_modules --exclude=./dist --exclude=./data --exclude=./.git -cf - . | tar -C "$work/kvhub" -xf -
cp -a "$root/node_modules" "$work/kvhub/"
cd "$work/kvhub"
export PATH="$node24/bin:$PATH"
npm rebuild better-sqlite3 --nodedir="$node24" >/dev/null
node -e "const Database = require('better-sqlite3'); new Database(':memory:').close(); console.log('test:node24: better-sqlite3 loads on', process.version)"
npx vitest run "$@"
