import type { Command } from 'commander';
import { wholeNumber, withConnection, type Act, type CommandContext } from '../command.js';
import { withClient } from '../connect.js';
import { CliError, ExitCode } from '../errors.js';
import { eventLine, place } from '../output.js';

/** `watch`: a change feed on stdout until Ctrl-C. */
export function registerWatchCommand(program: Command, act: Act): void {
  act(
    withConnection(
      program
        .command('watch')
        .description('print the changes of an instance, or of one namespace, one per line as they happen, until Ctrl-C: revision, kind, namespace, key, value'),
    )
      .arguments('<instance> [namespace]')
      .option('--prefix <prefix>', 'only keys starting with this text (needs <namespace>)')
      .option('--key <key>', 'only this key (needs <namespace>)')
      .option('--from-revision <n>', 'first replay the changes after this revision, then follow live ones'),
    watch,
  );
}

/**
 * Follows the subscription through reconnects (the SDK resumes it where it stopped, so no change
 * is missed or repeated) until Ctrl-C, which ends with exit code 0. It ends with 1 when the
 * instance is deleted and 2 when the subscription fails (e.g. COMPACTED after a long outage).
 */
async function watch({ args, settings, io, out }: CommandContext): Promise<number> {
  const [instanceId, namespace] = args as [string, string | undefined];
  const prefix = settings.text('prefix');
  const key = settings.text('key');
  if ((prefix !== undefined || key !== undefined) && namespace === undefined) throw new CliError(`--${prefix !== undefined ? 'prefix' : 'key'} needs a <namespace>.`);
  if (prefix !== undefined && key !== undefined) throw new CliError('--prefix and --key cannot be combined.');
  const fromRevision = wholeNumber(settings, 'from-revision', 0);
  const filter = {
    ...(namespace !== undefined && { namespace }),
    ...(prefix !== undefined && { prefix }),
    ...(key !== undefined && { key }),
    ...(fromRevision !== undefined && { fromRevision }),
  };
  return withClient(
    settings,
    io,
    async (client) => {
      const subscription = client.kvStore.watch(instanceId, filter);
      const { revision } = await subscription.ready;
      const what = namespace === undefined ? `instance '${instanceId}'` : place(instanceId, namespace);
      const which = prefix !== undefined ? `keys starting with '${prefix}' in ` : key !== undefined ? `key '${key}' in ` : '';
      io.stderr.write(`Watching ${which}${what} from revision ${fromRevision ?? revision}; Ctrl-C stops.\n`);
      let deleted = false;
      for await (const event of subscription) {
        out.result(event, eventLine);
        if (event.kind === 'instanceDeleted') deleted = true;
      }
      // The iteration ends normally on Ctrl-C (the client is closed) and after instanceDeleted.
      if (deleted) throw new CliError(`Instance '${instanceId}' was deleted; the watch has ended.`, ExitCode.ABSENT);
      return ExitCode.OK;
    },
    { stayConnected: true },
  );
}
