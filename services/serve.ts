// Starts one service from RAMPART_SERVICE_CONFIG: reads its config, builds
// its app (each entry point passes its own builder, so a service's bundle
// holds only its own code), listens, stops cleanly on SIGTERM/SIGINT.
// Progress and failures go to stderr.

import { connect } from 'node:net';
import { ConfigError, loadConfig, reloadable } from './config.ts';
import type { ServiceName } from './contract.ts';
import type { ConfigFor } from './schemas.ts';
import type { Hop } from './hop.ts';
import { DRAIN_MS, flushLogs, listen } from './http.ts';

async function waitListening(host: string, port: number): Promise<void> {
  const target = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host;
  for (let i = 0; i < 100; i++) {
    const ok = await new Promise<boolean>((resolve) => {
      const sock = connect({ host: target, port }, () => { sock.destroy(); resolve(true); });
      sock.on('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`could not listen on ${host}:${port}`);
}

/**
 * What holds a busy hop's memory is garbage, not live data (the proxy's live
 * heap is about 6 MB at 100+ MB RSS under load): JSC collects lazily, and each
 * dead Request, Response and buffer keeps its native memory until then. A
 * full collection every second (about 2 ms of a 3-6 MB heap) keeps RSS near
 * the live set.
 */
const GC_INTERVAL_MS = 1000;

/** What a service's builder hands back: its app and what to stop besides it. */
export interface Built {
  app: Hop;
  stop?(): Promise<void>;
}

export type Builder<S extends ServiceName> = (config: ConfigFor<S>) => Built | Promise<Built>;

interface Listening {
  stop(): Promise<void> | void;
}

export async function serve<S extends ServiceName>(name: S, build: Builder<S>): Promise<Listening> {
  // SIGHUP: read the config again and swap in an app built from it (new secrets, no restart).
  // One arriving while the service starts must not kill it (the default action): it reloads once started.
  let hupWhileStarting = false;
  const early = (): void => void (hupWhileStarting = true);
  process.on('SIGHUP', early);
  const config = loadConfig(name);
  const live = reloadable(name, await build(config), build, { retireMs: DRAIN_MS });
  process.off('SIGHUP', early);
  if (hupWhileStarting) void live.reload();
  const { host, port } = config.listen;
  const server = await listen(live.hop, host, port, config.tls);
  // The Node adapter binds asynchronously (its callback fires early): announce only once a connect succeeds.
  await waitListening(host, port);
  process.stderr.write(`${name}: listening on ${config.tls ? 'https' : 'http'}://${host}:${port} (${typeof Bun === 'undefined' ? 'node' : 'bun'})\n`);
  const gc = typeof Bun === 'undefined' ? undefined : setInterval(() => Bun.gc(true), GC_INTERVAL_MS);
  const stop = async (): Promise<void> => {
    clearInterval(gc);
    await server.stop();
    await live.stop();
    flushLogs();
  };
  const onSignal = (): void => {
    void stop().finally(() => process.exit(0));
  };
  process.once('SIGTERM', onSignal);
  process.once('SIGINT', onSignal);
  return { stop };
}

/** Entry-point wrapper: typed errors become one actionable line and exit code 1. */
export function main<S extends ServiceName>(name: S, build: Builder<S>): void {
  // journald or a closed pipe must not take the service down with EPIPE.
  process.stdout.on('error', () => undefined);
  serve(name, build).catch((e: unknown) => {
    const hint = e instanceof ConfigError && e.hint ? `\n  hint: ${e.hint}` : '';
    process.stderr.write(`${name}: ${(e as Error).message}${hint}\n`);
    process.exit(1);
  });
}
