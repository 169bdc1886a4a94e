// Starts one service from RAMPART_SERVICE_CONFIG: builds the app, listens,
// stops cleanly on SIGTERM/SIGINT. Progress and failures go to stderr.

import type { AnyElysia } from 'elysia';
import type { ServiceName } from '../core/types.ts';
import { ConfigError, loadConfig } from './config.ts';
import { buildGatekeeper } from './gatekeeper/app.ts';
import { createProxy } from './proxy/app.ts';
import { buildTrustedHost } from './trustedhost/app.ts';

interface Listening {
  stop(): Promise<void> | void;
}

export async function serve(name: ServiceName): Promise<Listening> {
  let stopExtra: () => Promise<void> = async () => undefined;
  let app: AnyElysia;
  let listen: { host: string; port: number };
  if (name === 'gatekeeper') {
    const config = loadConfig('gatekeeper');
    app = buildGatekeeper(config);
    listen = config.listen;
  } else if (name === 'trustedhost') {
    const config = loadConfig('trustedhost');
    app = buildTrustedHost(config);
    listen = config.listen;
  } else {
    const config = loadConfig('proxy');
    const proxy = createProxy(config);
    await proxy.start();
    app = proxy.app;
    listen = config.listen;
    stopExtra = () => proxy.stop();
  }
  app.listen({ hostname: listen.host, port: listen.port });
  process.stderr.write(`${name}: listening on ${listen.host}:${listen.port} (${typeof Bun === 'undefined' ? 'node' : 'bun'})\n`);
  const stop = async (): Promise<void> => {
    await app.stop();
    await stopExtra();
  };
  const onSignal = (): void => {
    void stop().finally(() => process.exit(0));
  };
  process.once('SIGTERM', onSignal);
  process.once('SIGINT', onSignal);
  return { stop };
}

/** Entry-point wrapper: typed errors become one actionable line and exit code 1. */
export function main(name: ServiceName): void {
  serve(name).catch((e: unknown) => {
    const hint = e instanceof ConfigError && e.hint ? `\n  hint: ${e.hint}` : '';
    process.stderr.write(`${name}: ${(e as Error).message}${hint}\n`);
    process.exit(1);
  });
}
