// Run host CLIs without a shell: arguments are passed as an array, input (if
// any) goes through stdin, so user values are never parsed by a shell and
// nothing secret shows up in `ps`.
import { spawn } from 'node:child_process';
import { open, readFile, unlink } from 'node:fs/promises';
import { ProviderError } from '../../core/errors.ts';
import { pidAlive } from '../../core/state.ts';

export interface RunResult {
  stdout: string;
  stderr: string;
  code: number;
}

export interface RunOptions {
  /** Fed to stdin. */
  input?: string | Buffer;
  /** Throw a ProviderError on a non-zero exit (default true). */
  check?: boolean;
  /** Kill the command after this many milliseconds. */
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
  /** Hint attached to the error when the command fails. */
  hint?: string;
}

export function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: opts.env ?? { ...process.env, LC_ALL: 'C' },
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timedOut = false;
    const timer = opts.timeoutMs
      ? setTimeout(() => {
          timedOut = true;
          child.kill('SIGKILL');
        }, opts.timeoutMs)
      : undefined;
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', (e: NodeJS.ErrnoException) => {
      if (timer) clearTimeout(timer);
      if (e.code === 'ENOENT') {
        reject(new ProviderError(`command not found: ${cmd}`, opts.hint ?? 'install the host prerequisites (run `npx zx apply` as root, it installs them with apt)'));
      } else reject(new ProviderError(`${cmd}: ${e.message}`, opts.hint));
    });
    child.on('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      const res = { stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8'), code: code ?? 128 };
      if (timedOut) {
        reject(new ProviderError(`${cmd} ${args.join(' ')}: timed out after ${opts.timeoutMs} ms`, opts.hint));
      } else if (opts.check !== false && res.code !== 0) {
        const detail = (res.stderr.trim() || res.stdout.trim()).split('\n').slice(-5).join('\n');
        reject(new ProviderError(`${cmd} ${args.join(' ')} failed (exit ${signal ?? res.code}): ${detail}`, opts.hint));
      } else resolve(res);
    });
    child.stdin.on('error', () => { /* the command may exit before reading stdin */ });
    child.stdin.end(opts.input ?? '');
  });
}

/** Unmount everything mounted at or below `path` (deepest first), e.g. what an interrupted debootstrap left. */
export async function unmountUnder(path: string): Promise<void> {
  const mounts = (await readFile('/proc/self/mounts', 'utf8').catch(() => ''))
    .split('\n')
    .map((l) => l.split(' ')[1]?.replace(/\\040/g, ' '))
    .filter((m): m is string => !!m && (m === path || m.startsWith(`${path}/`)))
    .sort((a, b) => b.length - a.length);
  for (const m of mounts) await run('umount', ['-l', m], { check: false });
}

/**
 * Takes the lock file `path` (created exclusively, holding this process's pid;
 * the lock of a process that is gone is taken over). While a live process
 * holds it, `busy(pid, attempt)` decides: true stops waiting (returns false:
 * what the caller waited for is there), a throw fails, else it tries again
 * `intervalMs` later. Release with `unlink(path)`.
 */
export async function acquireLock(path: string, intervalMs: number, busy: (pid: number, attempt: number) => boolean | Promise<boolean> = () => false): Promise<boolean> {
  for (let attempt = 0; ; attempt++) {
    try {
      const fh = await open(path, 'wx', 0o600);
      await fh.writeFile(String(process.pid));
      await fh.close();
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    const pid = Number((await readFile(path, 'utf8').catch(() => '')).trim());
    if (!pid || !pidAlive(pid)) {
      await unlink(path).catch(() => undefined);
      continue;
    }
    if (await busy(pid, attempt)) return false;
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
