import type { Command } from 'commander';
import { dataOf, withConnection, type Act, type CommandContext } from '../command.js';
import { withClient } from '../connect.js';

/** `instances` and `namespaces`: what the server holds. */
export function registerCatalogCommands(program: Command, act: Act): void {
  act(withConnection(program.command('instances').description('list the instances, one per line: id, tab, name (, tab, description)')), instances);
  act(
    withConnection(program.command('namespaces').description('list the namespaces of an instance that hold a key, one per line')).arguments('<instance>'),
    namespaces,
  );
}

async function instances({ settings, io, out }: CommandContext): Promise<void> {
  const data = await withClient(settings, io, async (client) => dataOf(await client.kvStore.listInstances()));
  out.result(data, ({ instances }) =>
    instances.map((instance) => [instance.id, instance.name, ...(instance.description !== undefined && instance.description !== '' ? [instance.description] : [])].join('\t')),
  );
}

async function namespaces({ args, settings, io, out }: CommandContext): Promise<void> {
  const [instanceId] = args as [string];
  const data = await withClient(settings, io, async (client) => dataOf(await client.kvStore.getNamespaces(instanceId)));
  out.result(data, ({ namespaces }) => namespaces);
}
