import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';

const CLI = fileURLToPath(new URL('../../server/cli.ts', import.meta.url));
const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/** A kvhub CLI process started from source, as `npm start` runs it. */
export interface CliProcess {
  readonly child: ChildProcess;
  stdout: string;
  stderr: string;
  /** Resolves with the URL from the ready line, or rejects when the process exits first. */
  ready(): Promise<string>;
  /** Resolves with the exit code. */
  exited(): Promise<number | null>;
}

export function startCli(args: string[], cwd = ROOT): CliProcess {
  return watchCli(spawn(process.execPath, ['--import', 'tsx', CLI, ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'] }));
}

/** The CLI's path and the project root, for callers that start it their own way. */
export const CLI_PATH = CLI;
export const PROJECT_ROOT = ROOT;

/** Follows a started kvhub CLI process: collects its output and reads its ready line. */
export function watchCli(child: ChildProcess): CliProcess {
  const proc: CliProcess = {
    child,
    stdout: '',
    stderr: '',
    ready: () =>
      new Promise((resolve, reject) => {
        const check = () => {
          const match = /ws:\/\/\S+:\d+/.exec(proc.stdout);
          if (match) resolve(match[0]);
        };
        child.stdout!.on('data', check);
        child.once('exit', (code) => reject(new Error(`kvhub exited with ${code} before it was ready: ${proc.stderr}`)));
        check();
      }),
    exited: () => (child.exitCode !== null ? Promise.resolve(child.exitCode) : once(child, 'exit').then(([code]) => code as number | null)),
  };
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (proc.stdout += chunk));
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (proc.stderr += chunk));
  return proc;
}
