import type { TestServer } from './server.js';

/** The value of the sample `name` (with its labels, as `/metrics` writes it) on `server`, 0 when it has none yet. */
export async function metric(server: Pick<TestServer, 'port'>, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${server.port}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? 0 : Number(line.split(' ')[1]);
}

/** Requests of `type` the server has answered so far. */
export function answered(server: Pick<TestServer, 'port'>, type: string): Promise<number> {
  return metric(server, `kvhub_requests_total{type="${type}"}`);
}

/** Requests the server has answered with error `code` so far. */
export function failed(server: Pick<TestServer, 'port'>, code: string): Promise<number> {
  return metric(server, `kvhub_errors_total{code="${code}"}`);
}
