// Starts gatekeeper -> trustedhost -> proxy as separate processes on
// loopback, each from its own 0600 config file (as the service role would),
// and keeps their stdout (one JSON line per request) for assertions.

import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { GatekeeperConfig, ProxyConfig, TrustedHostConfig } from '../../services/config.ts';
import type { ProxyMode, ServiceName } from '../../services/contract.ts';
import { ensureServerCert } from '../../core/tls.ts';
import { freePort, secret } from '../support/mariadb.ts';

const ROOT = resolve(import.meta.dir ?? join(process.cwd(), 'test', 'integration'), '..', '..');
const BUN = join(ROOT, 'node_modules', '.bin', 'bun');

export interface ServiceProcess {
  name: string;
  url: string;
  pid: number;
  /** Parsed JSON log lines so far. */
  logs(): Array<Record<string, unknown>>;
  stop(): Promise<void>;
}

export interface Services {
  gatekeeper: ServiceProcess;
  trustedhost: ServiceProcess;
  proxy: ServiceProcess;
  apiKey: string;
  /** Credentials the trusted host and the proxy expect. */
  credentials: { trustedhost: string; proxy: string };
  /** The CA (PEM) the hops' certificates chain to, when launched with tls. */
  ca?: string;
  stop(): Promise<void>;
}

export interface LaunchOptions {
  db: ProxyConfig['db'];
  schemas: string[];
  defaultMode?: ProxyMode;
  probeIntervalMs?: number;
  maxLagSeconds?: number;
  log?: boolean;
  rateLimit?: { requests: number; perSeconds: number };
  /** Connections per DB node in the proxy. */
  poolSize?: number;
  /** Runtime of the three processes (default bun; node runs them through tsx and @elysiajs/node). */
  runtime?: 'bun' | 'node';
  /** Send each service's stdout to `<logDir>/<name>.log` instead of a pipe (cheaper under load). */
  logDir?: string;
  /** HTTPS on every hop with a certificate for 127.0.0.1 from a CA made for the run (core/tls.ts); the CA is in Services.ca. */
  tls?: boolean;
  /** What each service runs (default its sources, services/<name>/main.ts; e.g. its bundle, as on the nodes). */
  entry?: (name: ServiceName) => string;
}

function startProcess(name: ServiceName, configPath: string, port: number, opts: LaunchOptions): Promise<ServiceProcess> {
  const scheme = opts.tls ? 'https' : 'http';
  const { logDir, runtime = 'bun' } = opts;
  const logFile = logDir ? join(logDir, `${name}.log`) : undefined;
  const entry = opts.entry?.(name) ?? join(ROOT, 'services', name, 'main.ts');
  const bunFlags = (process.env.RAMPART_BUN_FLAGS ?? '').split(' ').filter(Boolean); // e.g. --smol
  const [cmd, args] = runtime === 'node' ? ['node', ['--import', 'tsx', entry]] : [BUN, [...bunFlags, entry]];
  const child: ChildProcess = spawn(cmd, args, {
    cwd: ROOT,
    env: { ...process.env, RAMPART_SERVICE_CONFIG: configPath },
    stdio: ['ignore', logFile ? openSync(logFile, 'w') : 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const proc: ServiceProcess = {
    name,
    url: `${scheme}://127.0.0.1:${port}`,
    pid: child.pid ?? 0,
    logs: () => (logFile ? readFileSync(logFile, 'utf8') : out).split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>),
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} did not start: ${err}`)), 15_000);
    const onData = (): void => {
      if (err.includes('listening on')) {
        clearTimeout(timer);
        child.stderr?.off('data', onData);
        resolvePromise(proc);
      }
    };
    child.stderr?.on('data', onData);
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`${name} exited with ${code}: ${err}`)); });
  });
}

export async function launchServices(opts: LaunchOptions): Promise<Services> {
  const dir = mkdtempSync(join(tmpdir(), 'rampart-services-'));
  const [gkPort, thPort, pxPort] = [await freePort(), await freePort(), await freePort()];
  const apiKey = secret();
  const credentials = { trustedhost: secret(), proxy: secret() };
  const policy = { statements: ['SELECT', 'INSERT', 'UPDATE', 'DELETE'], schemas: opts.schemas };
  let tls: { cert: string; key: string } | undefined;
  let caPath: string | undefined;
  let ca: string | undefined;
  if (opts.tls) {
    const made = ensureServerCert(dir, 'loopback', ['127.0.0.1', 'localhost']);
    tls = { cert: join(dir, 'server.pem'), key: join(dir, 'server.key') };
    caPath = join(dir, 'ca.pem');
    writeFileSync(tls.cert, made.cert);
    writeFileSync(tls.key, made.key, { mode: 0o600 });
    writeFileSync(caPath, made.ca);
    ca = made.ca;
  }
  const scheme = opts.tls ? 'https' : 'http';
  const link = (port: number, credential: string) => ({ url: `${scheme}://127.0.0.1:${port}`, credential, ...(caPath ? { ca: caPath } : {}) });
  const common = { maxBodyBytes: 65536, policy, log: opts.log ?? true, ...(tls ? { tls } : {}) };
  const proxy: ProxyConfig = {
    service: 'proxy', listen: { host: '127.0.0.1', port: pxPort }, ...common, credential: credentials.proxy,
    db: { ...opts.db, poolSize: opts.poolSize ?? opts.db.poolSize }, defaultMode: opts.defaultMode ?? 'customized', modes: ['direct', 'random', 'customized'],
    probeIntervalMs: opts.probeIntervalMs ?? 100, maxLagSeconds: opts.maxLagSeconds ?? 5,
  };
  const trustedhost: TrustedHostConfig = {
    service: 'trustedhost', listen: { host: '127.0.0.1', port: thPort }, ...common, credential: credentials.trustedhost,
    upstream: link(pxPort, credentials.proxy),
  };
  const gatekeeper: GatekeeperConfig = {
    service: 'gatekeeper', listen: { host: '127.0.0.1', port: gkPort }, ...common, apiKeys: [apiKey],
    rateLimit: opts.rateLimit ?? { requests: 1_000_000, perSeconds: 1 },
    upstream: link(thPort, credentials.trustedhost),
  };
  const write = (name: string, c: unknown): string => {
    const p = join(dir, `${name}.json`);
    writeFileSync(p, JSON.stringify(c), { mode: 0o600 });
    chmodSync(p, 0o600);
    return p;
  };
  const started: ServiceProcess[] = [];
  const stop = async (): Promise<void> => {
    await Promise.all(started.map((s) => s.stop()));
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    started.push(await startProcess('proxy', write('proxy', proxy), pxPort, opts));
    started.push(await startProcess('trustedhost', write('trustedhost', trustedhost), thPort, opts));
    started.push(await startProcess('gatekeeper', write('gatekeeper', gatekeeper), gkPort, opts));
  } catch (e) {
    await stop();
    throw e;
  }
  const [px, th, gk] = started;
  return { gatekeeper: gk, trustedhost: th, proxy: px, apiKey, credentials, ...(ca ? { ca } : {}), stop };
}
