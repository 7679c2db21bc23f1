import { createReadStream, createWriteStream, statSync } from 'node:fs';
import { once } from 'node:events';
import { finished } from 'node:stream/promises';
import { createInterface } from 'node:readline';
import type { Command } from 'commander';
import { KvError, type Instance, type KvClient } from '../../sdk/index.js';
import { dataOf, withConnection, type Act, type CommandContext } from '../command.js';
import { withClient } from '../connect.js';
import { CliError } from '../errors.js';
import { instanceLine, parseLine, recordLine, type RecordLine } from '../jsonl.js';
import { listPages } from '../listing.js';
import { progress } from '../progress.js';

/** `export` and `import`: keys to and from JSON Lines (the format is in jsonl.ts). */
export function registerTransferCommands(program: Command, act: Act): void {
  act(
    withConnection(
      program
        .command('export')
        .description('write every key (of one instance, or one namespace) as JSON Lines, values, content types and expiry included'),
    )
      .arguments('[instance] [namespace]')
      .option('--prefix <prefix>', 'only keys starting with this text (needs <namespace>)')
      .option('--out <file>', 'write to this file instead of stdout'),
    exportKeys,
  );
  act(
    withConnection(program.command('import').description('write the keys of JSON Lines made by export, creating instances as needed'))
      .option('--file <file>', 'read this file instead of stdin'),
    importKeys,
  );
}

async function exportKeys({ args, settings, io, out }: CommandContext): Promise<void> {
  const [instanceId, namespace] = args as [string | undefined, string | undefined];
  const prefix = settings.text('prefix');
  if (prefix !== undefined && namespace === undefined) throw new CliError('--prefix needs a <namespace>.');
  const file = settings.text('out');
  const counts = await withClient(settings, io, async (client) => {
    const instances = instanceId === undefined ? dataOf(await client.kvStore.listInstances()).instances : [dataOf(await client.kvStore.getInstance(instanceId)).instance];
    // The count is taken before listing: keys written meanwhile can take the bar past its end.
    const total = prefix !== undefined ? undefined : await countKeys(client, instances, namespace);
    const sink = file === undefined ? io.stdout : await openFile(file);
    const bar = progress(io, total, 'keys');
    let records = 0;
    try {
      for (const instance of instances) {
        sink.write(`${instanceLine(instance)}\n`);
        const namespaces = namespace !== undefined ? [namespace] : dataOf(await client.kvStore.getNamespaces(instance.id)).namespaces;
        for (const name of namespaces) {
          for await (const page of listPages(client, { instanceId: instance.id, namespace: name, ...(prefix !== undefined && { prefix }) })) {
            const lines = (page.records ?? []).map((record) => `${recordLine(record)}\n`);
            if (!sink.write(lines.join(''))) await new Promise((resolve) => sink.once('drain', resolve));
            records += lines.length;
            bar.advance(lines.length);
          }
        }
      }
    } finally {
      bar.stop();
      if (sink !== io.stdout) {
        sink.end();
        await finished(sink);
      }
    }
    return { records, instances: instances.length };
  });
  // Without --out, stdout is the data itself.
  if (file !== undefined) out.result({ ...counts, file }, ({ records, instances }) => `Exported ${records} key${plural(records)} of ${instances} instance${plural(instances)} to ${file}.`);
}

/** A file to write the export to, open (so that a bad path is reported before anything is read). */
async function openFile(file: string): Promise<NodeJS.WritableStream> {
  const stream = createWriteStream(file);
  try {
    await once(stream, 'open');
    return stream;
  } catch (error) {
    throw new CliError(`Cannot write --out ${file}: ${(error as Error).message}.`);
  }
}

async function countKeys(client: KvClient, instances: Instance[], namespace: string | undefined): Promise<number> {
  let total = 0;
  for (const instance of instances) total += dataOf(await client.kvStore.getRecordCount(instance.id, namespace)).count;
  return total;
}

/** Entries of one `setMany`: consecutive lines of one namespace. */
interface Batch {
  instanceId: string;
  namespace: string;
  entries: { key: string; value: unknown; contentType: string; ttlMs?: number }[];
  firstLine: number;
  bytes: number;
}

async function importKeys({ settings, io, out }: CommandContext): Promise<void> {
  const file = settings.text('file');
  const source = file ?? 'stdin';
  let size: number | undefined;
  if (file !== undefined) {
    try {
      size = statSync(file).size;
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      throw new CliError(`Cannot read --file ${file}: ${code === 'ENOENT' ? 'it does not exist' : (error as Error).message}.`);
    }
  }
  const counts = await withClient(settings, io, async (client) => {
    const limits = client.server!.limits;
    // A batch stays well under the largest frame the server takes; the lines' length is a fair estimate of their frame.
    const maxBytes = Math.floor(limits.maxPayloadBytes / 2);
    const bar = progress(io, size, 'bytes');
    const instances = new Set<string>();
    let written = 0;
    let expired = 0;
    let batch: Batch | undefined;
    const flush = async () => {
      if (batch === undefined) return;
      const { instanceId, namespace, entries, firstLine } = batch;
      batch = undefined;
      const reply = await client.kvStore.setMany({ instanceId, namespace, entries, autoCreateInstance: true });
      if (!reply.success) {
        const lines = entries.length === 1 ? `line ${firstLine}` : `lines from ${firstLine} on`;
        throw new CliError(`The server refused the keys of ${lines} of ${source}: ${reply.error} (${reply.code}); ${written} key${plural(written)} before them were imported.`);
      }
      written += entries.length;
      instances.add(instanceId);
    };
    const input = file === undefined ? io.stdin : createReadStream(file);
    try {
      let lineNumber = 0;
      for await (const text of createInterface({ input, crlfDelay: Infinity })) {
        lineNumber++;
        bar.advance(Buffer.byteLength(text) + 1);
        if (text.trim() === '') continue;
        let line: ReturnType<typeof parseLine>;
        try {
          line = parseLine(text);
        } catch (error) {
          // What came before the bad line goes in, so that the message can say where the import stands.
          await flush();
          throw new CliError(`Line ${lineNumber} of ${source} is not a kvhub export line: ${(error as Error).message}; the ${written} key${plural(written)} before it were imported.`);
        }
        if (line.type === 'instance') {
          await flush();
          await upsertInstance(client, line);
          instances.add(line.id);
          continue;
        }
        const ttlMs = remainingTtl(line);
        if (ttlMs === 0) {
          expired++;
          continue;
        }
        if (batch !== undefined && (batch.instanceId !== line.instanceId || batch.namespace !== line.namespace || batch.entries.length >= limits.maxBatch || batch.bytes + text.length > maxBytes)) {
          await flush();
        }
        batch ??= { instanceId: line.instanceId, namespace: line.namespace, entries: [], firstLine: lineNumber, bytes: 0 };
        batch.entries.push({ key: line.key, value: line.value, contentType: line.contentType, ...(ttlMs !== undefined && { ttlMs }) });
        batch.bytes += text.length;
      }
      await flush();
    } finally {
      bar.stop();
      // A file read halfway (a bad line, a refused batch) is closed here, not left to the collector.
      if (input !== io.stdin) (input as ReturnType<typeof createReadStream>).destroy();
    }
    return { records: written, instances: instances.size, expired };
  });
  out.result(counts, ({ records, instances, expired }) => {
    const skipped = expired === 0 ? '' : `; skipped ${expired} that had expired`;
    return `Imported ${records} key${plural(records)} into ${instances} instance${plural(instances)} from ${source}${skipped}.`;
  });
}

/** Creates an exported instance, or gives an existing one the exported name and description. */
async function upsertInstance(client: KvClient, line: { id: string; name: string; description?: string | undefined }): Promise<void> {
  const created = await client.kvStore.createInstance(line.name, line.description, { id: line.id });
  if (created.success) return;
  if (created.code !== 'INSTANCE_EXISTS') throw KvError.fromReply(created);
  dataOf(await client.kvStore.updateInstance(line.id, { name: line.name, ...(line.description !== undefined && { description: line.description }) }));
}

/**
 * The `ttlMs` that gives a record its exported expiry again: undefined for none, 0 when it has
 * passed (the record is skipped), else the time left, rounded up so that it never ends early.
 */
function remainingTtl(line: RecordLine & { expiresAt: string | null }): number | undefined {
  if (line.expiresAt === null) return undefined;
  return Math.max(0, Math.ceil(Date.parse(line.expiresAt) - Date.now()));
}

function plural(count: number): string {
  return count === 1 ? '' : 's';
}
