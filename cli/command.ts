import { Option, type Command } from 'commander';
import type { Reply, ReplyData, RequestType } from '../sdk/index.js';
import { KvError } from '../sdk/index.js';
import { DEFAULT_URL } from './connect.js';
import { CliError } from './errors.js';
import type { CliIo } from './io.js';
import type { Output } from './output.js';
import type { Settings } from './settings.js';

/** What a command's handler gets. */
export interface CommandContext {
  /** The positional arguments, as given. */
  readonly args: readonly string[];
  /** The flags, merged with the environment and `--config`. */
  readonly settings: Settings;
  readonly io: CliIo;
  readonly out: Output;
}

/** Does a command's work; resolves with its exit code (0 when nothing is returned), or throws (see `explain`). */
export type Handler = (context: CommandContext) => Promise<number | void>;

/** Installs `handler` as `command`'s action; made by the program, given to each command module. */
export type Act = (command: Command, handler: Handler) => Command;

/** `--config`: every command takes it. */
export function withConfig(command: Command): Command {
  return command.option('--config <file>', 'a JSON file of settings named like the flags, e.g. {"url": "…", "token": "…"}; flags and environment variables win over it');
}

/** The flags of every command that talks to a server. */
export function withConnection(command: Command): Command {
  return withConfig(
    command
      .addOption(new Option('--url <url>', 'the server to talk to (env KVHUB_URL)').default(DEFAULT_URL))
      .addOption(new Option('--token <token>', 'the token to present, if the server needs one (env KVHUB_TOKEN)'))
      .option('--json', "print the reply's data as JSON instead of text"),
  );
}

/** A whole number of at least `minimum` from flag `flag`, or undefined when it was not given. */
export function wholeNumber(settings: Settings, flag: string, minimum: number): number | undefined {
  const text = settings.text(flag);
  if (text === undefined) return undefined;
  const value = /^\d+$/.test(text) ? Number(text) : Number.NaN;
  if (!Number.isSafeInteger(value) || value < minimum) throw new CliError(`${settings.describe(flag)} must be a whole number of at least ${minimum}, not '${text}'.`);
  return value;
}

/** The `data` of a successful reply; a failed one is thrown as a KvError (and explained by the program). */
export function dataOf<T extends RequestType>(reply: Reply<T>): ReplyData<T> {
  if (!reply.success) throw KvError.fromReply(reply);
  return reply.data;
}
