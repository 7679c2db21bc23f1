import type { Command } from 'commander';
import { base64ToBytes, type KvRecord } from '../../sdk/index.js';
import { dataOf, wholeNumber, withConnection, type Act, type CommandContext } from '../command.js';
import { withClient } from '../connect.js';
import { capitalize, CliError, ExitCode } from '../errors.js';
import { listPages } from '../listing.js';
import { describeWrite, isBinary, place, recordLine } from '../output.js';

/** `get`, `set`, `del`, `incr` and `list`: one namespace's keys. */
export function registerKeyCommands(program: Command, act: Act): void {
  act(withConnection(program.command('get').description('print the value of a key (exit 1 when it does not exist)')).arguments('<instance> <namespace> <key>'), get);

  act(
    withConnection(program.command('set').description('write a key'))
      .arguments('<instance> <namespace> <key> <json>')
      .addHelpText('after', "\n<json> is a JSON value: quote strings, as in '\"text\"'. Give - to read it from stdin.")
      .option('--ttl <ms>', 'expire the key this many milliseconds from now')
      .option('--create', 'create the instance if it does not exist'),
    set,
  );

  act(withConnection(program.command('del').description('delete a key (exit 1 when it does not exist)')).arguments('<instance> <namespace> <key>'), del);

  act(
    withConnection(program.command('incr').description('add to the number at a key (a missing key counts as 0) and print the result'))
      .arguments('<instance> <namespace> <key> [by]')
      .option('--ttl <ms>', 'expiry of the key when this creates it')
      .option('--create', 'create the instance if it does not exist'),
    incr,
  );

  act(
    withConnection(program.command('list').description('list the keys of a namespace in byte order, one per line: key, tab, value'))
      .arguments('<instance> <namespace>')
      .option('--prefix <prefix>', 'only keys starting with this text')
      .option('--limit <n>', 'stop after this many keys (default: all)')
      .option('--cursor <cursor>', "continue where a listing stopped (the cursor of --json's output)")
      .option('--keys-only', 'print keys without values'),
    list,
  );
}

async function get({ args, settings, io, out }: CommandContext): Promise<number> {
  const [instanceId, namespace, key] = args as [string, string, string];
  const data = await withClient(settings, io, async (client) => dataOf(await client.kvStore.get(instanceId, namespace, key)));
  if (out.json) out.line(JSON.stringify(data));
  if (!data.exists || data.record === null) throw keyAbsent(instanceId, namespace, key);
  if (out.json) return ExitCode.OK;
  const { value, contentType } = data.record;
  if (!isBinary(contentType)) out.line(JSON.stringify(value, null, 2));
  // Raw bytes suit a pipe or a file (`kvhub get … > logo.png`), not a terminal.
  else if (io.stdout.isTTY === true) out.line(`<${base64ToBytes(value as string).length} bytes of ${contentType}: redirect the output to save them, or use --json for base64>`);
  else out.bytes(base64ToBytes(value as string));
  return ExitCode.OK;
}

async function set({ args, settings, io, out }: CommandContext): Promise<void> {
  const [instanceId, namespace, key, text] = args as [string, string, string, string];
  const value = parseJsonValue(text === '-' ? await readAll(io.stdin) : text);
  const ttlMs = wholeNumber(settings, 'ttl', 1);
  const create = settings.on('create');
  const data = await withClient(settings, io, async (client) =>
    dataOf(await orCreateHint(create, client.kvStore.set(instanceId, namespace, key, value, create || undefined, ttlMs !== undefined ? { ttlMs } : undefined))),
  );
  out.result(data, ({ record }) => describeWrite(record));
}

async function del({ args, settings, io, out }: CommandContext): Promise<void> {
  const [instanceId, namespace, key] = args as [string, string, string];
  const data = await withClient(settings, io, async (client) => dataOf(await client.kvStore.delete(instanceId, namespace, key)));
  if (out.json) out.line(JSON.stringify(data));
  if (!data.deleted) throw keyAbsent(instanceId, namespace, key);
  if (!out.json) out.line(`Deleted ${place(instanceId, namespace, key)}.`);
}

async function incr({ args, settings, io, out }: CommandContext): Promise<void> {
  const [instanceId, namespace, key, byText] = args as [string, string, string, string | undefined];
  const by = byText === undefined ? 1 : Number(byText);
  if (byText !== undefined && (byText.trim() === '' || !Number.isFinite(by))) throw new CliError(`[by] must be a number, not '${byText}'.`);
  const ttlMs = wholeNumber(settings, 'ttl', 1);
  const create = settings.on('create');
  const params = { instanceId, namespace, key, by, ...(ttlMs !== undefined && { ttlMs }), ...(create && { autoCreateInstance: true }) };
  const data = await withClient(settings, io, async (client) => dataOf(await orCreateHint(create, client.kvStore.incr(params))));
  out.result(data, ({ value }) => String(value));
}

async function list({ args, settings, io, out }: CommandContext): Promise<void> {
  const [instanceId, namespace] = args as [string, string];
  const limit = wholeNumber(settings, 'limit', 1) ?? Infinity;
  const keysOnly = settings.on('keys-only');
  const prefix = settings.text('prefix');
  const cursor = settings.text('cursor');
  const request = { instanceId, namespace, ...(prefix !== undefined && { prefix }), ...(cursor !== undefined && { cursor }), ...(keysOnly && { keysOnly }) };
  await withClient(settings, io, async (client) => {
    // Text goes out page by page; --json gathers the pages into one object shaped like a page.
    const items: (string | KvRecord)[] = [];
    let last: string | null = null;
    for await (const page of listPages(client, request, limit)) {
      last = page.cursor;
      const pageItems = keysOnly ? (page.keys ?? []) : (page.records ?? []);
      if (out.json) items.push(...pageItems);
      else for (const item of pageItems) out.line(typeof item === 'string' ? item : recordLine(item));
    }
    if (out.json) out.line(JSON.stringify({ [keysOnly ? 'keys' : 'records']: items, cursor: last }));
  });
}

/** Exit 1: the key asked for does not exist. */
function keyAbsent(instanceId: string, namespace: string, key: string): CliError {
  return new CliError(`${capitalize(place(instanceId, namespace, key))} does not exist.`, ExitCode.ABSENT);
}

/** Parses the `<json>` of `set`; bad JSON is a usage error. */
function parseJsonValue(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new CliError(`The value is not JSON (${(error as Error).message}); quote a string, as in '"text"'.`);
  }
}

/** A write's reply, with a hint about --create when its instance does not exist. */
async function orCreateHint<T extends { success: boolean; code?: string; error?: string }>(create: boolean, reply: Promise<T>): Promise<T> {
  const settled = await reply;
  if (!create && !settled.success && settled.code === 'INSTANCE_NOT_FOUND') {
    throw new CliError(`${capitalize(settled.error ?? 'the instance does not exist')}; give --create to create it.`, ExitCode.ABSENT);
  }
  return settled;
}

async function readAll(stream: NodeJS.ReadableStream): Promise<string> {
  let text = '';
  stream.setEncoding('utf8');
  for await (const chunk of stream) text += chunk as string;
  return text;
}
