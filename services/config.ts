// Reading and validating a service's config file: the JSON file named by
// RAMPART_SERVICE_CONFIG, written by the service role (mode 0600, it holds
// credentials). The shapes live in services/schemas.ts (fields documented
// there); each service reads only its own.

import { readFileSync, statSync } from 'node:fs';
import type { TSchema } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { RampartError } from '../core/errors.ts';
import type { ServiceName } from './contract.ts';
import { CONFIG_SCHEMAS, type ConfigFor } from './schemas.ts';

export type {
  ConfigFor, DbConfig, DbEndpoint, GatekeeperConfig, ProxyConfig, ServiceConfig, TrustedHostConfig, Upstream,
} from './schemas.ts';

export class ConfigError extends RampartError {}

function problem(file: string, msg: string): never {
  throw new ConfigError(`${file}: ${msg}`, 'the service role writes this file; rerun `npx zx apply` or fix it by hand');
}

/** The first schema error as `field: message` (the field's own `error` text when the contract gives one). */
function firstError(schema: TSchema, raw: unknown): string | null {
  const e = Value.Errors(schema, raw).First();
  if (!e) return null;
  const own = (e.schema as { error?: unknown }).error;
  if (typeof own === 'string') return own;
  const field = e.path.replace(/^\//, '').replace(/\/(\d+)(?=\/|$)/g, '[$1]').replace(/\//g, '.');
  return `${field || 'config'}: ${e.message}`;
}

/** Validates an already parsed config object for `service` against its contract schema. */
export function validateConfig<S extends ServiceName>(raw: unknown, service: S, file = 'service config'): ConfigFor<S> {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) problem(file, 'must hold a JSON object');
  const found = (raw as { service?: unknown }).service;
  if (found !== service) problem(file, `service must be "${service}" (found ${JSON.stringify(found)})`);
  const error = firstError(CONFIG_SCHEMAS[service], raw);
  if (error) problem(file, error);
  if (service === 'proxy') {
    const c = raw as ConfigFor<'proxy'>;
    if (!c.modes.includes(c.defaultMode)) problem(file, 'defaultMode must be one of modes');
  }
  return raw as ConfigFor<S>;
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

// ------------------------------------------------------------ reload (SIGHUP)

/** The log line a reload ends with (npx zx rotate waits for it in the journal). */
export const RELOADED = 'reloaded config';
export const RELOAD_FAILED = 'reload failed';

/** The part of a hop a reload swaps (services/hop.ts's Hop, without importing the hot path). */
interface Handler {
  handle(request: Request, clientAddress?: string | null): Promise<Response>;
}

/**
 * Takes new secrets without a restart: on SIGHUP the config file is read again
 * and the app built anew from it; requests arriving from then on go to the new
 * app, those in flight finish on the old one, which is stopped `retireMs` later
 * (its pools, its timers). A config that does not load keeps the running app.
 * The listening socket stays (listen address and certificate change with a
 * restart, as apply does). Returns the hop to serve and how to stop the live app.
 */
export function reloadable<S extends ServiceName, B extends { app: Handler; stop?(): Promise<void> }>(
  name: S,
  first: B,
  build: (config: ConfigFor<S>) => B | Promise<B>,
  opts: { retireMs: number; load?: () => ConfigFor<S>; signal?: NodeJS.Signals; log?: (line: string) => void } = { retireMs: 10_000 },
): { hop: B['app']; reload(): Promise<boolean>; stop(): Promise<void> } {
  const load = opts.load ?? (() => loadConfig(name));
  const log = opts.log ?? ((line: string) => void process.stderr.write(`${line}\n`));
  let live = first;
  let generation = 1;
  let pending: Promise<boolean> = Promise.resolve(true);
  const retiring = new Map<ReturnType<typeof setTimeout>, B>();
  const retired: Promise<void>[] = [];
  const reloadOnce = async (): Promise<boolean> => {
    let next: B;
    try {
      next = await build(load());
    } catch (e) {
      log(`${name}: ${RELOAD_FAILED}, still serving generation ${generation}: ${(e as Error).message}`);
      return false;
    }
    const old = live;
    live = next;
    generation += 1;
    log(`${name}: ${RELOADED} (generation ${generation})`);
    const t = setTimeout(() => {
      retiring.delete(t);
      retired.push(old.stop?.() ?? Promise.resolve());
    }, opts.retireMs);
    retiring.set(t, old);
    return true;
  };
  // one reload at a time, in the order the signals came
  const reload = (): Promise<boolean> => (pending = pending.then(reloadOnce));
  const onSignal = (): void => void reload();
  process.on(opts.signal ?? 'SIGHUP', onSignal);
  const hop = { ...first.app, handle: (request: Request, clientAddress?: string | null) => live.app.handle(request, clientAddress) } as B['app'];
  return {
    hop,
    reload,
    async stop() {
      process.off(opts.signal ?? 'SIGHUP', onSignal);
      await pending;
      const old = [...retiring.values()];
      for (const t of retiring.keys()) clearTimeout(t);
      retiring.clear();
      await Promise.allSettled([...retired, ...old.map((b) => b.stop?.()), live.stop?.()]);
    },
  };
}
