// The git-ignored state folder (.rampart/ beside cluster.yaml, mode 0700):
// SSH key pair, pinned host keys, generated secrets (0600), provider state.
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';

export interface StatePaths {
  dir: string;
  sshKey: string;
  sshPub: string;
  knownHosts: string;
  secrets: string;
}

export function statePaths(clusterDir: string): StatePaths {
  const dir = process.env.RAMPART_STATE_DIR ?? join(clusterDir, '.rampart');
  return {
    dir,
    sshKey: join(dir, 'id_ed25519'),
    sshPub: join(dir, 'id_ed25519.pub'),
    knownHosts: join(dir, 'known_hosts'),
    secrets: join(dir, 'secrets.json'),
  };
}

/** Is a process (a lock holder, the owner of a scratch folder) still running? EPERM: it is, as another user's. */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export function ensureStateDir(clusterDir: string): StatePaths {
  const p = statePaths(clusterDir);
  mkdirSync(p.dir, { recursive: true, mode: 0o700 });
  chmodSync(p.dir, 0o700);
  return p;
}

/** The project's SSH key pair, generated once (ed25519, no passphrase, 0600). */
export function ensureSshKey(clusterDir: string): { privateKey: string; publicKey: string; path: string } {
  const p = ensureStateDir(clusterDir);
  if (!existsSync(p.sshKey)) {
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'rampart', '-f', p.sshKey], { stdio: 'ignore' });
  }
  chmodSync(p.sshKey, 0o600);
  return { privateKey: readFileSync(p.sshKey, 'utf8'), publicKey: readFileSync(p.sshPub, 'utf8').trim(), path: p.sshKey };
}

/** Write a file atomically with the given mode (state files are never half-written). */
export function writeFileAtomic(path: string, content: string, mode = 0o600): void {
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, content, { mode });
  chmodSync(tmp, mode);
  renameSync(tmp, path);
}

export function readJson<T>(path: string, fallback: T): T {
  if (!existsSync(path)) return fallback;
  return JSON.parse(readFileSync(path, 'utf8')) as T;
}
