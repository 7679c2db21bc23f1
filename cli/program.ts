import { Command, CommanderError } from 'commander';
import { SERVER_VERSION } from '../server/version.js';
import type { Act } from './command.js';
import { registerCatalogCommands } from './commands/catalog.js';
import { registerKeyCommands } from './commands/keys.js';
import { registerServerCommands } from './commands/server.js';
import { registerTransferCommands } from './commands/transfer.js';
import { registerWatchCommand } from './commands/watch.js';
import { capitalize, ExitCode, explain } from './errors.js';
import type { CliIo } from './io.js';
import { Output } from './output.js';
import { resolveSettings } from './settings.js';

const HELP_AND_VERSION = new Set(['-h', '--help', '-V', '--version']);

/**
 * Runs `kvhub` with `argv` (the arguments after the script), reading and writing only through
 * `io`, and resolves with the exit code: 0 done, 1 the key or instance is absent, 2 anything else,
 * with one sentence on stderr whenever it is not 0. It never exits the process itself, so that
 * tests can run it in-process.
 */
export async function run(argv: readonly string[], io: CliIo): Promise<number> {
  let exitCode: number = ExitCode.OK;
  const program = new Command('kvhub')
    .description('A key-value store shared over WebSocket: run the server, or talk to one.')
    .version(SERVER_VERSION, '-V, --version', 'print the version')
    .helpOption('-h, --help', 'print help')
    .exitOverride()
    // Errors are told in run()'s own words (one sentence, exit code 2), never by commander.
    .configureOutput({ writeOut: (text) => io.stdout.write(text), writeErr: (text) => io.stderr.write(text), outputError: () => {} })
    .showSuggestionAfterError()
    .addHelpText(
      'after',
      `
serve is the default command: \`kvhub\` and \`kvhub --port 0\` run the server.

Settings: a flag beats its environment variable (KVHUB_URL for --url, KVHUB_TOKEN for --token),
which beats --config <file.json>, which holds flags by name: {"url": "ws://…", "token": "…"}.

Exit codes: 0 done, 1 the key or instance does not exist, 2 any other error (bad usage,
no connection, a refusal), with one sentence on stderr.`,
    );

  let knownNames: Set<string> | undefined;
  const act: Act = (command, handler) =>
    command.action(async (...params: unknown[]) => {
      const self = params.at(-1) as Command;
      knownNames ??= new Set(program.commands.flatMap((each) => each.options.map((option) => option.name())).filter((name) => name !== 'config' && name !== 'help'));
      try {
        const settings = resolveSettings(self, io, knownNames);
        exitCode = (await handler({ args: self.args, settings, io, out: new Output(io, settings.on('json')) })) ?? ExitCode.OK;
      } catch (error) {
        const failure = explain(error);
        io.stderr.write(`${failure.message}\n`);
        exitCode = failure.exitCode;
      }
    });
  registerServerCommands(program, act);
  registerKeyCommands(program, act);
  registerCatalogCommands(program, act);
  registerWatchCommand(program, act);
  registerTransferCommands(program, act);

  const args = routed(argv);
  try {
    await program.parseAsync(args, { from: 'user' });
  } catch (error) {
    if (!(error instanceof CommanderError)) throw error;
    // Help and --version end with exit code 0; everything else commander refuses is bad usage.
    if (error.exitCode === 0) return ExitCode.OK;
    const command = program.commands.find((each) => each.name() === args[0]);
    const problem = error.message.replace(/^error: /, '').replace(/\.$/, '').replaceAll('\n', ' ');
    // `kvhub --url … get …` lands in serve: say why its flags are unknown there.
    const defaulted = args[0] !== argv[0] ? '; serve is the default command, other commands go first: kvhub <command> [flags]' : '';
    io.stderr.write(`${capitalize(problem)} (see kvhub ${command === undefined ? '' : `${command.name()} `}--help${defaulted}).\n`);
    return ExitCode.FAILED;
  }
  return exitCode;
}

/** `argv` with `serve` in front when it starts with a flag other than help and version, or is empty: serve is the default. */
function routed(argv: readonly string[]): string[] {
  const first = argv[0];
  if (first === undefined || (first.startsWith('-') && !HELP_AND_VERSION.has(first))) return ['serve', ...argv];
  return [...argv];
}
