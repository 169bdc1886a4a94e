// Configuration of the three services. The service role writes one JSON file
// per node (mode 0600, it holds credentials) and points the env var
// RAMPART_SERVICE_CONFIG at it. Each service reads only its own shape.

import { readFileSync, statSync } from 'node:fs';
import { RampartError } from '../core/errors.ts';
import type { ProxyMode, ServiceName } from '../core/types.ts';
import type { SqlPolicy } from './sql/policy.ts';

export class ConfigError extends RampartError {}

export interface Listen {
  /** Address to bind (e.g. 0.0.0.0 on the gatekeeper, the private address elsewhere, 127.0.0.1 in tests). */
  host: string;
  port: number;
}

/** The next hop. */
export interface Upstream {
  /** Base URL, e.g. http://10.77.0.12:5000 (the service POSTs to `${url}/query`). */
  url: string;
  /** Sent as header `x-rampart-credential`; the next hop accepts nothing else. */
  credential: string;
  /** Whole request timeout towards the next hop (default 10000). */
  timeoutMs?: number;
}

export interface RateLimit {
  /** Requests allowed per client address ... */
  requests: number;
  /** ... in a window of this many seconds. */
  perSeconds: number;
}

interface CommonConfig {
  listen: Listen;
  /** Largest accepted request body in bytes (413 above). */
  maxBodyBytes: number;
  /** The SQL allow-list; every hop enforces it again (same module). */
  policy: SqlPolicy;
  /** One JSON line per request on stdout (default true). */
  log?: boolean;
}

export interface GatekeeperConfig extends CommonConfig {
  service: 'gatekeeper';
  /** Accepted client API keys (header `X-API-Key`), compared in constant time. */
  apiKeys: string[];
  /** Per client address (fixed window). */
  rateLimit: RateLimit;
  /** The trusted host. */
  upstream: Upstream;
}

export interface TrustedHostConfig extends CommonConfig {
  service: 'trustedhost';
  /** The credential the gatekeeper sends (header `x-rampart-credential`). */
  credential: string;
  /** The proxy. */
  upstream: Upstream;
}

export interface DbEndpoint {
  /** Node name as reported in responses and logs (e.g. manager, worker1). */
  name: string;
  host: string;
  port: number;
}

export interface DbConfig {
  /** Receives every write (and `direct` reads). */
  manager: DbEndpoint;
  /** Replicas serving `random` / `customized` reads. */
  workers: DbEndpoint[];
  /** Application user: DML on `database` (also the probes' user when `monitor` is not set). */
  user: string;
  password: string;
  /**
   * The probes' user (health, latency, replication lag), so the application user needs
   * no global privilege: REPLICA MONITOR (MariaDB) / REPLICATION CLIENT (MySQL) only.
   */
  monitor?: { user: string; password: string };
  /** Default schema of every connection. */
  database: string;
  /** Connections per node (default 16). */
  poolSize?: number;
  /** Per-query timeout (default 5000). */
  queryTimeoutMs?: number;
  /** Connect timeout of query connections (default 3000; probes use probeTimeoutMs). */
  connectTimeoutMs?: number;
}

export interface ProxyConfig extends CommonConfig {
  service: 'proxy';
  /** The credential the trusted host sends (header `x-rampart-credential`). */
  credential: string;
  db: DbConfig;
  /** Mode for requests naming none. */
  defaultMode: ProxyMode;
  /** Modes clients may ask for (422 otherwise). */
  modes: ProxyMode[];
  /** Interval of the active health/latency/lag probes. */
  probeIntervalMs: number;
  /** Probe timeout (default min(750, 3 * probeIntervalMs)): a node silent that long is down. */
  probeTimeoutMs?: number;
  /** Workers whose replication lag exceeds this (or whose replication is stopped) get no reads. */
  maxLagSeconds: number;
}

export type ServiceConfig = GatekeeperConfig | TrustedHostConfig | ProxyConfig;
export type ConfigFor<S extends ServiceName> = Extract<ServiceConfig, { service: S }>;

const MODES: ProxyMode[] = ['direct', 'random', 'customized'];

function problem(file: string, msg: string): never {
  throw new ConfigError(`${file}: ${msg}`, 'the service role writes this file; rerun `npx zx apply` or fix it by hand');
}

function need(cond: boolean, file: string, msg: string): asserts cond {
  if (!cond) problem(file, msg);
}

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isPort = (v: unknown): boolean => Number.isInteger(v) && (v as number) > 0 && (v as number) < 65536;
const isSecret = (v: unknown): boolean => typeof v === 'string' && v.length >= 16;

function checkCommon(c: Record<string, unknown>, file: string): void {
  need(isObj(c.listen) && typeof c.listen.host === 'string' && isPort(c.listen.port), file, 'listen must be { host, port }');
  need(Number.isInteger(c.maxBodyBytes) && (c.maxBodyBytes as number) >= 256, file, 'maxBodyBytes must be an integer >= 256');
  need(isObj(c.policy), file, 'policy must be { statements, schemas }');
  const p = c.policy;
  need(Array.isArray(p.statements) && p.statements.length > 0 && p.statements.every((s) => typeof s === 'string'), file, 'policy.statements must be a non-empty list of statement verbs');
  need(Array.isArray(p.schemas) && p.schemas.every((s) => typeof s === 'string'), file, 'policy.schemas must be a list of schema names');
}

function checkUpstream(u: unknown, file: string): void {
  need(isObj(u) && typeof u.url === 'string' && /^https?:\/\//.test(u.url), file, 'upstream.url must be an http(s) URL');
  need(isSecret(u.credential), file, 'upstream.credential must be a string of at least 16 characters');
}

/** Validates an already parsed config object for `service`. */
export function validateConfig<S extends ServiceName>(raw: unknown, service: S, file = 'service config'): ConfigFor<S> {
  need(isObj(raw), file, 'must hold a JSON object');
  need(raw.service === service, file, `service must be "${service}" (found ${JSON.stringify(raw.service)})`);
  checkCommon(raw, file);
  if (service === 'gatekeeper') {
    need(Array.isArray(raw.apiKeys) && raw.apiKeys.length > 0 && raw.apiKeys.every(isSecret), file, 'apiKeys must list keys of at least 16 characters');
    need(isObj(raw.rateLimit) && Number.isInteger(raw.rateLimit.requests) && (raw.rateLimit.requests as number) > 0 &&
      typeof raw.rateLimit.perSeconds === 'number' && raw.rateLimit.perSeconds > 0, file, 'rateLimit must be { requests, perSeconds } (positive)');
    checkUpstream(raw.upstream, file);
  } else {
    need(isSecret(raw.credential), file, 'credential must be a string of at least 16 characters');
    if (service === 'trustedhost') checkUpstream(raw.upstream, file);
  }
  if (service === 'proxy') {
    const db = raw.db;
    need(isObj(db), file, 'db must be an object');
    const endpoint = (e: unknown): boolean => isObj(e) && typeof e.name === 'string' && typeof e.host === 'string' && isPort(e.port);
    need(endpoint(db.manager), file, 'db.manager must be { name, host, port }');
    need(Array.isArray(db.workers) && db.workers.every(endpoint), file, 'db.workers must be a list of { name, host, port }');
    need(typeof db.user === 'string' && db.user.length > 0 && typeof db.password === 'string' && typeof db.database === 'string', file, 'db needs user, password and database');
    const mon = (db as { monitor?: unknown }).monitor;
    need(mon === undefined || (isObj(mon) && typeof mon.user === 'string' && mon.user.length > 0 && typeof mon.password === 'string'), file, 'db.monitor must be { user, password }');
    need(Array.isArray(raw.modes) && raw.modes.length > 0 && raw.modes.every((m) => MODES.includes(m as ProxyMode)), file, `modes must be a subset of ${MODES.join(', ')}`);
    need(MODES.includes(raw.defaultMode as ProxyMode) && (raw.modes as unknown[]).includes(raw.defaultMode), file, 'defaultMode must be one of modes');
    need(Number.isInteger(raw.probeIntervalMs) && (raw.probeIntervalMs as number) >= 10, file, 'probeIntervalMs must be an integer >= 10');
    need(typeof raw.maxLagSeconds === 'number' && raw.maxLagSeconds >= 0, file, 'maxLagSeconds must be >= 0');
  }
  return raw as unknown as ConfigFor<S>;
}

/**
 * Reads the file named by RAMPART_SERVICE_CONFIG (or `path`). It holds
 * secrets, so it must not be readable by group or others.
 */
export function loadConfig<S extends ServiceName>(service: S, path = process.env.RAMPART_SERVICE_CONFIG): ConfigFor<S> {
  if (!path) throw new ConfigError('RAMPART_SERVICE_CONFIG is not set', 'point it at the JSON file the service role wrote');
  let text: string;
  try {
    const st = statSync(path);
    if ((st.mode & 0o077) !== 0) problem(path, `mode ${(st.mode & 0o777).toString(8)} is too open (it holds credentials); chmod 600 it`);
    text = readFileSync(path, 'utf8');
  } catch (e) {
    if (e instanceof ConfigError) throw e;
    throw new ConfigError(`${path}: cannot read (${(e as Error).message})`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    problem(path, `not valid JSON (${(e as Error).message})`);
  }
  return validateConfig(raw, service, path);
}
