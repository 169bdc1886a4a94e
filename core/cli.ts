// Shared command-line handling for the playbooks: flags, exit codes, errors.
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { resolve } from 'node:path';
import { RampartError, SpecError } from './errors.ts';

/** Exit codes (documented in the README). */
export const EXIT = { ok: 0, failed: 1, usage: 2, spec: 3, provider: 4, changes: 2 } as const;

export class UsageError extends RampartError {}

export const COMMON_OPTIONS = {
  file: { type: 'string', short: 'f' },
  json: { type: 'boolean', default: false },
  help: { type: 'boolean', short: 'h', default: false },
} as const satisfies ParseArgsConfig['options'];

export function parseFlags<O extends NonNullable<ParseArgsConfig['options']>>(args: string[], options: O) {
  try {
    return parseArgs({ args, options: { ...COMMON_OPTIONS, ...options }, strict: true, allowPositionals: false }).values;
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

/** cluster.yaml path: --file, else $RAMPART_CLUSTER, else ./cluster.yaml. */
export function clusterFile(flag: string | undefined): string {
  return resolve(flag ?? process.env.RAMPART_CLUSTER ?? 'cluster.yaml');
}

/** The exit code of a command that ended with `e` (README: "Exit codes"). */
export function exitCodeFor(e: unknown, detailedExitcode = false): number {
  if (detailedExitcode) return EXIT.failed;
  if (e instanceof UsageError) return EXIT.usage;
  if (e instanceof SpecError) return EXIT.spec;
  if (e instanceof RampartError) return e.exitCode ?? EXIT.provider;
  return EXIT.failed;
}

/**
 * Run a command's main: typed errors become a clear message (or JSON) and an exit code; never a stack trace.
 * With `detailedExitcode` (Terraform's convention) every error exits 1, so 2 means only "changes".
 */
export async function runMain(json: () => boolean, main: () => Promise<number>, opts: { detailedExitcode?: boolean } = {}): Promise<never> {
  let code: number;
  try {
    code = await main();
  } catch (e) {
    code = exitCodeFor(e, opts.detailedExitcode);
    const err = e as Error & { hint?: string; problems?: string[] };
    if (json()) {
      process.stdout.write(JSON.stringify({ error: { type: err.name, message: err.message, hint: err.hint, problems: err.problems } }) + '\n');
    } else {
      process.stderr.write(`error: ${err.message}\n${err.hint ? `hint: ${err.hint}\n` : ''}`);
      if (!(e instanceof RampartError) && process.env.RAMPART_DEBUG) process.stderr.write(`${err.stack}\n`);
    }
  }
  process.exit(code);
}
