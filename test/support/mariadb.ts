// Throw-away MariaDB instances on loopback for integration tests and the
// bench: installs mariadb-server with apt when missing, starts a primary and
// N GTID replicas from their own defaults files in a temp dir, loads a small
// schema, and removes everything on stop(). Secrets go through stdin or
// 0600 option files, never on a command line.

import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, chownSync, mkdirSync, readFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface Availability {
  ok: boolean;
  reason: string;
}

const BINARIES = ['mariadb-install-db', 'mysqld_safe', 'mariadb', 'mariadb-admin'];
const have = (bin: string): boolean => spawnSync('sh', ['-c', `command -v ${bin}`], { stdio: 'ignore' }).status === 0;

/** Installs mariadb-server/-client with apt when missing. Needs root. */
export function ensureMariadb(): Availability {
  if (BINARIES.every(have)) return { ok: true, reason: '' };
  if (process.getuid?.() !== 0) return { ok: false, reason: 'MariaDB is not installed and installing it needs root' };
  if (!have('apt-get')) return { ok: false, reason: 'MariaDB is not installed and apt-get is missing' };
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  process.stderr.write('installing mariadb-server mariadb-client with apt-get ...\n');
  const update = spawnSync('apt-get', ['update', '-qq'], { stdio: ['ignore', 'ignore', 'inherit'], env });
  if (update.status !== 0) return { ok: false, reason: 'apt-get update failed' };
  const install = spawnSync('apt-get', ['install', '-y', '-qq', '--no-install-recommends', 'mariadb-server', 'mariadb-client'], { stdio: ['ignore', 'ignore', 'inherit'], env });
  if (install.status !== 0 || !BINARIES.every(have)) return { ok: false, reason: 'apt-get install mariadb-server mariadb-client failed' };
  return { ok: true, reason: '' };
}

/** Whether MariaDB tests can run here; they must not be skipped when CI=true. */
export function mariadbAvailability(): Availability {
  if (process.getuid?.() !== 0) return { ok: false, reason: 'needs root (mysqld runs as the mysql user from a root-owned temp dir)' };
  return ensureMariadb();
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

export const secret = (): string => randomBytes(18).toString('base64url');

function run(cmd: string, args: string[], stdin?: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('close', (code) => resolve({ code: code ?? 1, stdout, stderr }));
    p.stdin.end(stdin ?? '');
  });
}

export interface Instance {
  name: string;
  port: number;
  serverId: number;
  dir: string;
  /** Runs SQL as root over the unix socket (stdin, batch mode); returns tab-separated stdout. */
  sql(statements: string): Promise<string>;
  /** Clean shutdown (mysqld_safe does not restart it). */
  shutdown(): Promise<void>;
  running: boolean;
}

async function startInstance(root: string, name: string, serverId: number, replica: boolean, generalLog: boolean): Promise<Instance> {
  const dir = join(root, name);
  const data = join(dir, 'data');
  mkdirSync(data, { recursive: true });
  mkdirSync(join(dir, 'tmp'));
  const port = await freePort();
  const socket = join(dir, 'mysqld.sock');
  const cnf = join(dir, 'my.cnf');
  writeFileSync(cnf, [
    '[client]', `socket=${socket}`, 'user=root', '',
    '[mysqld]', 'user=mysql', `datadir=${data}`, `socket=${socket}`, `pid-file=${join(dir, 'mysqld.pid')}`,
    `port=${port}`, 'bind-address=127.0.0.1', 'skip-name-resolve', `server_id=${serverId}`,
    'log_bin=mysql-bin', 'binlog_format=ROW', 'log_slave_updates=1', 'gtid_strict_mode=1',
    `log_error=${join(dir, 'error.log')}`, 'innodb_buffer_pool_size=64M',
    // Many instances on one host (other tests, other users) can exhaust fs.aio-max-nr: use synchronous I/O.
    'innodb_use_native_aio=0',
    // Own temp dir: temporary table names in a shared /tmp can collide with other servers'.
    `tmpdir=${join(dir, 'tmp')}`, 'max_connections=600',
    'performance_schema=OFF', 'log_output=TABLE', `general_log=${generalLog ? 1 : 0}`,
    `read_only=${replica ? 1 : 0}`, '',
    '[mysqld_safe]', `log_error=${join(dir, 'error.log')}`, `pid-file=${join(dir, 'mysqld.pid')}`, '',
  ].join('\n'));
  chmodSync(cnf, 0o600);
  spawnSync('chown', ['-R', 'mysql:mysql', dir]);
  chmodSync(dir, 0o755);
  const init = await run('mariadb-install-db', [`--defaults-file=${cnf}`, '--auth-root-authentication-method=socket', '--skip-test-db']);
  if (init.code !== 0) {
    let log = '';
    try { log = readFileSync(join(dir, 'error.log'), 'utf8').slice(-1500); } catch { /* none */ }
    throw new Error(`mariadb-install-db ${name} failed (exit ${init.code}): ${init.stderr.split('\n')[0]}\n${log}`);
  }
  const safe = spawn('mysqld_safe', [`--defaults-file=${cnf}`], { detached: true, stdio: 'ignore' });
  safe.unref();
  const inst: Instance = {
    name, port, serverId, dir, running: true,
    async sql(statements) {
      const r = await run('mariadb', [`--defaults-file=${cnf}`, '--batch', '--skip-column-names'], statements);
      if (r.code !== 0) throw new Error(`${name}: SQL failed: ${r.stderr.trim()}`);
      return r.stdout;
    },
    async shutdown() {
      if (!inst.running) return;
      inst.running = false;
      await run('mariadb-admin', [`--defaults-file=${cnf}`, 'shutdown']);
    },
  };
  const deadline = Date.now() + 30_000;
  for (;;) {
    const ping = await run('mariadb-admin', [`--defaults-file=${cnf}`, 'ping']);
    if (ping.code === 0) break;
    if (Date.now() > deadline) throw new Error(`${name}: mysqld did not start (see ${join(dir, 'error.log')})`);
    await new Promise((r) => setTimeout(r, 200));
  }
  return inst;
}

export interface TestCluster {
  primary: Instance;
  replicas: Instance[];
  database: string;
  /** Application user (DML on `database`, SLAVE MONITOR for lag probes). */
  app: { user: string; password: string };
  /** Full-privilege user for direct checks from tests (TCP, 127.0.0.1). */
  admin: { user: string; password: string };
  /** Waits until every running replica applied everything the primary logged. */
  sync(): Promise<void>;
  stop(): Promise<void>;
}

export interface ClusterOptions {
  replicas: number;
  /** Log every statement to mysql.general_log (tests that prove nothing reached the database). */
  generalLog?: boolean;
  /** Rows in the `items` table. */
  rows?: number;
}

const q = (s: string): string => `'${s.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;

/** A primary and `replicas` GTID replicas with schema `rampart_test` (items, whoami). */
export async function startCluster(opts: ClusterOptions): Promise<TestCluster> {
  const root = mkdtempSync(join(tmpdir(), 'rampart-mariadb-'));
  chmodSync(root, 0o755);
  chownSync(root, 0, 0);
  const names = ['manager', ...Array.from({ length: opts.replicas }, (_, i) => `worker${i + 1}`)];
  let instances: Instance[] = [];
  const stopAll = async (): Promise<void> => {
    await Promise.all(instances.map((i) => i.shutdown()));
    rmSync(root, { recursive: true, force: true });
  };
  try {
    instances = await Promise.all(names.map((n, i) => startInstance(root, n, i + 1, i > 0, opts.generalLog ?? false)));
    const [primary, ...replicas] = instances;
    const database = 'rampart_test';
    const app = { user: 'app', password: secret() };
    const admin = { user: 'admin', password: secret() };
    const repl = { user: 'repl', password: secret() };
    const rows = opts.rows ?? 200;
    const values = Array.from({ length: rows }, (_, i) => `(${q(`item-${i + 1}`)}, ${i % 17})`).join(',');
    await primary.sql(`
      CREATE USER 'repl'@'127.0.0.1' IDENTIFIED BY ${q(repl.password)};
      GRANT REPLICATION SLAVE ON *.* TO 'repl'@'127.0.0.1';
      CREATE USER 'admin'@'127.0.0.1' IDENTIFIED BY ${q(admin.password)};
      GRANT ALL ON *.* TO 'admin'@'127.0.0.1';
      CREATE DATABASE ${database};
      CREATE USER 'app'@'127.0.0.1' IDENTIFIED BY ${q(app.password)};
      GRANT SELECT, INSERT, UPDATE, DELETE ON ${database}.* TO 'app'@'127.0.0.1';
      GRANT SLAVE MONITOR ON *.* TO 'app'@'127.0.0.1';
      CREATE TABLE ${database}.items (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(64) NOT NULL, qty INT NOT NULL, KEY (qty)) ENGINE=InnoDB;
      INSERT INTO ${database}.items (name, qty) VALUES ${values};
      CREATE TABLE ${database}.whoami (name VARCHAR(32) NOT NULL) ENGINE=InnoDB;
    `);
    await Promise.all(replicas.map((r) => r.sql(`
      CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=${primary.port}, MASTER_USER='repl',
        MASTER_PASSWORD=${q(repl.password)}, MASTER_USE_GTID=slave_pos;
      START SLAVE;
    `)));
    const sync = async (): Promise<void> => {
      const pos = (await primary.sql('SELECT @@gtid_binlog_pos')).trim();
      await Promise.all(replicas.filter((r) => r.running).map(async (r) => {
        const ok = (await r.sql(`SELECT MASTER_GTID_WAIT(${q(pos)}, 30)`)).trim();
        if (ok !== '0') throw new Error(`${r.name}: replica did not reach ${pos} within 30 s`);
      }));
    };
    await sync();
    // Each node answers "who am I" with its own row, written without binlog so it never replicates.
    await Promise.all(instances.map((i) => i.sql(`SET SESSION sql_log_bin=0; INSERT INTO ${database}.whoami VALUES (${q(i.name)});`)));
    if (opts.generalLog) await Promise.all(instances.map((i) => i.sql('SET SESSION sql_log_bin=0; TRUNCATE mysql.general_log;')));
    return { primary, replicas, database, app, admin, sync, stop: stopAll };
  } catch (e) {
    await stopAll();
    throw e;
  }
}

/**
 * A TCP relay on loopback that delays every chunk from the server by
 * `delayMs`, in order: a replica that is really slower on the wire, with no
 * test-only knob in the proxy.
 */
export async function startDelayRelay(targetPort: number, delayMs: number): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, '127.0.0.1');
    sockets.add(client);
    sockets.add(upstream);
    client.pipe(upstream);
    let last = 0;
    upstream.on('data', (chunk: Buffer) => {
      const due = Math.max(Date.now() + delayMs, last);
      last = due;
      setTimeout(() => { if (!client.destroyed) client.write(chunk); }, due - Date.now());
    });
    const end = (): void => { client.destroy(); upstream.destroy(); sockets.delete(client); sockets.delete(upstream); };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', () => setTimeout(end, delayMs + 5));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () => new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    }),
  };
}
