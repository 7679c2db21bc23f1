import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startTestServer, type TestServer } from './helpers/server.js';

// The README's examples run as written, so that they stay true: the SDK example with only its URL
// pointed at a test server, the embedded one as it is, the command-line one in a shell whose
// KVHUB_URL names the test server (the example gives no --url, so the default would apply).
const README = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
const ROOT = fileURLToPath(new URL('..', import.meta.url));

/** The code block right after `<!-- example: <name> -->`. */
function example(name: string, language: string): string {
  const marker = `<!-- example: ${name} -->`;
  const match = new RegExp(`\`\`\`${language}\\n([\\s\\S]*?)\`\`\``).exec(README.slice(README.indexOf(marker)));
  expect(README.includes(marker) && match !== null).toBe(true);
  return match![1]!;
}

let server: TestServer;
let dir: string;
beforeAll(async () => {
  server = await startTestServer();
  dir = mkdtempSync(join(tmpdir(), 'kvhub-readme-'));
});
afterAll(async () => {
  await server.close();
  rmSync(dir, { recursive: true, force: true });
});

it('the README SDK example runs against a real server', async () => {
  const source = example('sdk', 'ts');
  expect(source).toContain("from 'kvhub'");
  const file = join(dir, 'sdk-example.ts');
  writeFileSync(file, source.replaceAll('ws://127.0.0.1:7420', server.url));
  await import(/* @vite-ignore */ file);
  // The example wrote through the server: its instance exists now.
  const { engine } = server.server;
  expect((await engine.listInstances()).length).toBeGreaterThan(0);
});

it('the README embedded example runs as written', async () => {
  const source = example('embedded', 'ts');
  expect(source).toContain("from 'kvhub/embedded'");
  const file = join(dir, 'embedded-example.ts');
  // Its console.log is what the reader sees: capture it.
  writeFileSync(file, `const logged: unknown[] = [];\nconst console = { log: (...args: unknown[]) => logged.push(args) };\n${source}\nexport { logged };\n`);
  const { logged } = (await import(/* @vite-ignore */ file)) as { logged: unknown[][] };
  expect(logged).toEqual([[1]]);
});

it('the README command-line example runs as written with npx', { timeout: 120_000 }, async () => {
  const script = example('cli', 'sh');
  // A project that has kvhub installed: npx finds its bin, as in the kvhub checkout itself.
  const project = join(dir, 'project');
  mkdirSync(join(project, 'node_modules', '.bin'), { recursive: true });
  writeFileSync(join(project, 'package.json'), '{"name":"readme-cli","private":true}');
  symlinkSync(join(ROOT, 'bin', 'kvhub.js'), join(project, 'node_modules', '.bin', 'kvhub'));
  const { stdout } = await promisify(execFile)('bash', ['-e', '-c', script], {
    cwd: project,
    env: { ...process.env, KVHUB_URL: server.url, npm_config_offline: 'true' },
  });
  expect(stdout).toContain('Ada');
  expect(stdout).toMatch(/exit code 1: no such key/);
  const record = await server.server.engine.get('app', 'users', 'ada');
  expect(record?.value).toEqual({ name: 'Ada', langs: ['en'] });
  expect((await server.server.engine.get('app', 'stats', 'visits'))?.value).toBe(1);
  expect(readFileSync(join(project, 'app.jsonl'), 'utf8')).toContain('"ada"');
});
