// One SSH connection per host, reused by every task: exec (as root through
// sudo), file writes through stdin, host keys pinned on first use.
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { Readable } from 'node:stream';
import { NodeSSH } from 'node-ssh';
import { Client, type ClientChannel } from 'ssh2';
import { SshError } from './errors.ts';
import type { CommandLogger } from './runlog.ts';
import { writeFileAtomic } from './state.ts';
import type { Connection, ExecOptions, ExecResult, Host } from './types.ts';

/** Quote a value for a POSIX shell. */
export function shq(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

// ------------------------------------------------------------ known_hosts

/** Pinned host keys in OpenSSH known_hosts format (`[addr]:port type base64`). */
export class KnownHosts {
  constructor(private readonly path: string) {}

  private read(): Map<string, string> {
    const map = new Map<string, string>();
    if (!existsSync(this.path)) return map;
    for (const line of readFileSync(this.path, 'utf8').split('\n')) {
      const [id, type, key] = line.trim().split(/\s+/);
      if (id && type && key) map.set(id, `${type} ${key}`);
    }
    return map;
  }

  private write(map: Map<string, string>): void {
    const lines = [...map].map(([id, key]) => `${id} ${key}`);
    writeFileAtomic(this.path, lines.length ? lines.join('\n') + '\n' : '', 0o600);
  }

  static id(address: string, port: number): string {
    return port === 22 ? address : `[${address}]:${port}`;
  }

  /** Trust on first use; afterwards only the pinned key is accepted. */
  verify(address: string, port: number, key: Buffer): { ok: true } | { ok: false; expected: string; got: string } {
    const typeLen = key.readUInt32BE(0);
    const type = key.subarray(4, 4 + typeLen).toString('latin1');
    const entry = `${type} ${key.toString('base64')}`;
    const id = KnownHosts.id(address, port);
    const map = this.read();
    const pinned = map.get(id);
    if (pinned === undefined) {
      map.set(id, entry);
      this.write(map);
      return { ok: true };
    }
    if (pinned === entry) return { ok: true };
    return { ok: false, expected: fingerprint(pinned), got: fingerprint(entry) };
  }

  /** Forget hosts (a node was created anew, or torn down). */
  forget(ids: string[]): void {
    const map = this.read();
    let changed = false;
    for (const id of ids) changed = map.delete(id) || changed;
    if (changed) this.write(map);
  }
}

function fingerprint(entry: string): string {
  const b64 = entry.split(' ')[1] ?? '';
  return 'SHA256:' + createHash('sha256').update(Buffer.from(b64, 'base64')).digest('base64').replace(/=+$/, '');
}

// ------------------------------------------------------------ connection

export interface ConnectOptions {
  privateKey: string;
  knownHosts: KnownHosts;
  /** Keep retrying refused/timed-out connects for this long (a node may still be booting). */
  retryForMs?: number;
  /** Told of every command sent and its result (the run log, -v). */
  log?: CommandLogger;
}

class SshConnection implements Connection {
  constructor(
    readonly host: Host,
    private readonly ssh: NodeSSH,
    private readonly jumpClient?: Client,
    private readonly log: CommandLogger = () => undefined,
  ) {}

  private wrap(script: string, sudo: boolean): string {
    // The script travels as one quoted argument; secrets never do (they go through stdin).
    const asRoot = sudo && this.host.user !== 'root';
    return asRoot ? `sudo -n bash -c ${shq(script)}` : `bash -c ${shq(script)}`;
  }

  async exec(script: string, opts: ExecOptions = {}): Promise<ExecResult> {
    const { stdin, sudo = true, check = true } = opts;
    const t0 = Date.now();
    let res;
    try {
      res = await this.ssh.execCommand(this.wrap(script, sudo), { stdin, noTrim: true });
    } catch (e) {
      this.log({ host: this.host.name, kind: 'exec', command: script, code: 255, durationMs: Date.now() - t0, stderr: `connection lost: ${(e as Error).message}` });
      throw new SshError(this.host.name, `connection lost: ${(e as Error).message}`);
    }
    const out: ExecResult = { stdout: res.stdout, stderr: res.stderr, code: res.code ?? 255 };
    if (opts.log !== false) this.log({ host: this.host.name, kind: 'exec', command: script, code: out.code, durationMs: Date.now() - t0, stdout: out.stdout, stderr: out.stderr });
    if (check && out.code !== 0) {
      const first = script.split('\n').find((l) => l.trim()) ?? script;
      // enough of the end of the output to act on (the run log has all of it)
      const err = (out.stderr.trim() || out.stdout.trim()).split('\n').slice(-8).join(' | ');
      throw new SshError(this.host.name, `command failed (exit ${out.code}): ${first.trim().slice(0, 120)}${err ? ` -> ${err}` : ''}`);
    }
    return out;
  }

  /** Write a file atomically as root with content from stdin (never on a command line). */
  async writeFile(path: string, content: string | Buffer, opts: { mode?: string; owner?: string } = {}): Promise<void> {
    const { mode = '0644', owner = 'root:root' } = opts;
    const tmp = `${path}.rampart-tmp`;
    const script = `set -e; mkdir -p "$(dirname ${shq(path)})"; umask 077; cat > ${shq(tmp)}; chown ${shq(owner)} ${shq(tmp)}; chmod ${shq(mode)} ${shq(tmp)}; mv -f ${shq(tmp)} ${shq(path)}`;
    const bytes = typeof content === 'string' ? Buffer.from(content) : content;
    const t0 = Date.now();
    const res = await this.ssh.execCommand(this.wrap(script, true), { stdin: Readable.from([bytes]) });
    // the content is not logged (it may hold credentials): only what was written where
    this.log({ host: this.host.name, kind: 'write', command: `write ${path} (${bytes.length} bytes, mode ${mode}, ${owner})`, code: res.code ?? 255, durationMs: Date.now() - t0, stderr: res.stderr });
    if (res.code !== 0) throw new SshError(this.host.name, `writing ${path} failed: ${res.stderr.trim()}`);
  }

  async putFile(localPath: string, remotePath: string): Promise<void> {
    const t0 = Date.now();
    const command = `upload ${localPath} -> ${remotePath}`;
    try {
      await this.ssh.putFile(localPath, remotePath);
    } catch (e) {
      this.log({ host: this.host.name, kind: 'put', command, code: 1, durationMs: Date.now() - t0, stderr: (e as Error).message });
      throw new SshError(this.host.name, `upload of ${localPath} to ${remotePath} failed: ${(e as Error).message}`);
    }
    this.log({ host: this.host.name, kind: 'put', command, code: 0, durationMs: Date.now() - t0 });
  }

  close(): void {
    this.ssh.dispose();
    this.jumpClient?.end();
  }
}

/** The shell command whose output describes a file: `sha256 mode owner:group`, or `absent`. */
export function fileFactCommand(path: string): string {
  const p = shq(path);
  return `if [ -f ${p} ]; then printf '%s %s %s' "$(sha256sum < ${p} | cut -d' ' -f1)" "$(stat -c '%a' ${p})" "$(stat -c '%U:%G' ${p})"; else printf absent; fi`;
}

/** What fileFactCommand prints for the desired file. */
export function fileState(content: string | Buffer, mode: string, owner: string): string {
  const sha = createHash('sha256').update(content).digest('hex');
  return `${sha} ${Number.parseInt(mode, 8).toString(8)} ${owner.includes(':') ? owner : `${owner}:${owner}`}`;
}

function hostKeyError(host: Host, address: string, expected: string, got: string): SshError {
  return new SshError(
    host.name,
    `host key mismatch for ${address}: pinned ${expected}, offered ${got}. Refusing to connect.`,
    `If ${host.name} was rebuilt on purpose, remove its line from .rampart/known_hosts (or run teardown); otherwise investigate.`,
  );
}

async function openJump(host: Host, opts: ConnectOptions): Promise<{ client: Client; sock: ClientChannel }> {
  const j = host.jump!;
  const client = new Client();
  let mismatch: SshError | undefined;
  await new Promise<void>((resolve, reject) => {
    client.once('ready', () => resolve());
    client.once('error', (e) => reject(mismatch ?? e));
    client.connect({
      host: j.address,
      port: j.port,
      username: j.user,
      privateKey: opts.privateKey,
      readyTimeout: 10_000,
      hostVerifier: (key: Buffer) => {
        const v = opts.knownHosts.verify(j.address, j.port, key);
        if (!v.ok) mismatch = hostKeyError(host, j.address, v.expected, v.got);
        return v.ok;
      },
    });
  });
  const sock = await new Promise<ClientChannel>((resolve, reject) =>
    client.forwardOut('127.0.0.1', 0, host.privateAddress, host.port, (err, ch) => (err ? reject(err) : resolve(ch))),
  );
  return { client, sock };
}

/** Connect to a host, retrying while it boots; refuse a changed host key. */
export async function connect(host: Host, opts: ConnectOptions): Promise<Connection> {
  const deadline = Date.now() + (opts.retryForMs ?? 60_000);
  let delay = 200;
  for (;;) {
    const ssh = new NodeSSH();
    let mismatch: SshError | undefined;
    let jump: { client: Client; sock: ClientChannel } | undefined;
    const target = host.jump ? host.privateAddress : host.address;
    try {
      if (host.jump) jump = await openJump(host, opts);
      await ssh.connect({
        host: target,
        port: host.port,
        username: host.user,
        privateKey: opts.privateKey,
        readyTimeout: 10_000,
        keepaliveInterval: 15_000,
        ...(jump ? { sock: jump.sock } : {}),
        hostVerifier: (key: Buffer) => {
          const v = opts.knownHosts.verify(target, host.port, key);
          if (!v.ok) mismatch = hostKeyError(host, target, v.expected, v.got);
          return v.ok;
        },
      });
      return new SshConnection(host, ssh, jump?.client, opts.log);
    } catch (e) {
      ssh.dispose();
      jump?.client.end();
      if (mismatch) throw mismatch;
      if (e instanceof SshError) throw e;
      const msg = (e as Error).message;
      if (/authentication methods failed|All configured authentication/i.test(msg)) {
        // sshd may be up before the admin user's key is in place on a fresh node: retry a little
        if (Date.now() > deadline) throw new SshError(host.name, `SSH authentication as ${host.user} failed`, 'Is .rampart/id_ed25519 the key the node was created with?');
      } else if (Date.now() > deadline) {
        throw new SshError(host.name, `cannot reach ${target}:${host.port}: ${msg}`, 'Is the node running? Try `npx zx apply` to (re)create it.');
      }
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 2_000);
    }
  }
}

/**
 * One SSH connection per host, opened on first use and kept for the command
 * (apply: the topology read, then the roles; rotate, switchover: many steps
 * on the same nodes). `reset` closes them and
 * opens later ones with new options (a run log that masks more values).
 */
export class Connections {
  private readonly open = new Map<string, Connection>();
  constructor(private opts: ConnectOptions) {}

  get options(): ConnectOptions {
    return this.opts;
  }

  /** The host's connection, opened now if it is not yet (`retryForMs`: this attempt's own patience). */
  async get(host: Host, retryForMs?: number): Promise<Connection> {
    let c = this.open.get(host.name);
    if (!c) {
      c = await connect(host, retryForMs === undefined ? this.opts : { ...this.opts, retryForMs });
      this.open.set(host.name, c);
    }
    return c;
  }

  reset(opts: ConnectOptions): void {
    this.close();
    this.opts = opts;
  }

  close(): void {
    for (const c of this.open.values()) c.close();
    this.open.clear();
  }
}
