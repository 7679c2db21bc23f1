import { readFileSync } from 'node:fs';
import { Option, type Command } from 'commander';
import { CliError } from './errors.js';
import type { CliIo } from './io.js';

/** The environment variables that stand in for a flag, by flag name. */
export const ENVIRONMENT: Readonly<Record<string, string>> = { url: 'KVHUB_URL', token: 'KVHUB_TOKEN' };

/** Options made by {@link repeatable}: a list in a config file stands for repeating them. */
const REPEATABLE = new WeakSet<Option>();

/** A flag that may be given several times, each value kept (a `string[]` setting, `[]` when not given). */
export function repeatable(flags: string, description: string): Option {
  const option = new Option(flags, description).argParser((value: string, previous: string[] | undefined) => [...(previous ?? []), value]);
  REPEATABLE.add(option);
  return option;
}

/** Where a setting came from; the first of these that has it wins. */
export type Source = 'flag' | 'environment' | 'config' | 'default';

/**
 * A command's settings, merged from its flags, the environment and `--config`: text for flags
 * that take a value, `string[]` for repeatable ones, `true` (or absent) for switches.
 */
export class Settings {
  constructor(
    private readonly values: ReadonlyMap<string, unknown>,
    private readonly sources: ReadonlyMap<string, Source>,
    private readonly configFile: string | undefined,
  ) {}

  /** The text of flag `name` (e.g. `token-file`), or undefined when nothing gave it. */
  text(name: string): string | undefined {
    const value = this.values.get(name);
    return typeof value === 'string' ? value : undefined;
  }

  /** The values of a repeatable flag. */
  list(name: string): string[] {
    const value = this.values.get(name);
    return Array.isArray(value) ? (value as string[]) : [];
  }

  /** True when switch `name` is on. */
  on(name: string): boolean {
    return this.values.get(name) === true;
  }

  /** Where `name` came from. */
  source(name: string): Source {
    return this.sources.get(name) ?? 'default';
  }

  /** What to call the setting `name` in a message: `--token`, `KVHUB_TOKEN` or `"token" in <file>`. */
  describe(name: string): string {
    switch (this.source(name)) {
      case 'environment':
        return ENVIRONMENT[name]!;
      case 'config':
        return `"${name}" in ${this.configFile}`;
      default:
        return `--${name}`;
    }
  }
}

/**
 * Merges `command`'s options: a flag beats its environment variable (see {@link ENVIRONMENT}; an
 * empty one counts as unset, as shells commonly clear a variable that way), which beats the
 * `--config` file, which beats the default. The file is a JSON object whose keys are flag names
 * (`{"url": "ws://…", "token-file": "tokens.txt"}`); one file can serve every command, so a key
 * another command takes is skipped, while a key no command takes is refused as a likely typo.
 */
export function resolveSettings(command: Command, io: CliIo, knownNames: ReadonlySet<string>): Settings {
  const given = command.opts();
  const configFile = command.getOptionValueSource('config') === 'cli' ? (given['config'] as string) : undefined;
  const config = configFile === undefined ? {} : readConfig(configFile, knownNames);
  const values = new Map<string, unknown>();
  const sources = new Map<string, Source>();
  for (const option of command.options) {
    const name = option.name();
    const key = option.attributeName();
    if (name === 'config' || name === 'help') continue;
    const variable = ENVIRONMENT[name];
    const fromEnvironment = variable === undefined ? undefined : io.env[variable];
    // Checked even when a flag or variable overrides it, so that a bad file does not wait to be found.
    const configured = Object.hasOwn(config, name) ? fromConfig(option, config[name], configFile!) : undefined;
    if (command.getOptionValueSource(key) === 'cli') {
      values.set(name, given[key]);
      sources.set(name, 'flag');
    } else if (fromEnvironment !== undefined && fromEnvironment !== '') {
      values.set(name, fromEnvironment);
      sources.set(name, 'environment');
    } else if (configured !== undefined) {
      values.set(name, configured);
      sources.set(name, 'config');
    } else {
      values.set(name, given[key]);
      sources.set(name, 'default');
    }
  }
  return new Settings(values, sources, configFile);
}

/** Reads a `--config` file: a JSON object of known flag names. */
function readConfig(file: string, knownNames: ReadonlySet<string>): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'it does not exist' : code === 'EACCES' ? 'permission denied' : (error as Error).message;
    throw new CliError(`cannot read --config ${file}: ${why}.`);
  }
  let config: unknown;
  try {
    config = JSON.parse(text);
  } catch (error) {
    throw new CliError(`--config ${file} is not JSON: ${(error as Error).message}.`);
  }
  if (typeof config !== 'object' || config === null || Array.isArray(config)) {
    throw new CliError(`--config ${file} must hold a JSON object of settings named like the flags, such as {"url": "ws://127.0.0.1:7420"}.`);
  }
  for (const name of Object.keys(config)) {
    if (!knownNames.has(name)) throw new CliError(`--config ${file} has "${name}", which is not a kvhub flag; settings are named like the flags, such as "url" or "token-file".`);
  }
  return config as Record<string, unknown>;
}

/** A config value in the form the flag would have given it. */
function fromConfig(option: Option, value: unknown, file: string): unknown {
  const name = option.name();
  if (option.isBoolean()) {
    if (typeof value !== 'boolean') throw new CliError(`"${name}" in ${file} must be true or false.`);
    return value;
  }
  const asText = (item: unknown): string => {
    if (typeof item === 'string') return item;
    if (typeof item === 'number' && Number.isFinite(item)) return String(item);
    throw new CliError(`"${name}" in ${file} must be a string or a number${REPEATABLE.has(option) ? ', or a list of them' : ''}.`);
  };
  // For a repeatable flag, a list in the file, or one value, stands for repeating the flag.
  if (REPEATABLE.has(option)) return Array.isArray(value) ? value.map(asText) : [asText(value)];
  return asText(value);
}
