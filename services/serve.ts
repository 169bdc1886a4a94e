// Starts one service from RAMPART_SERVICE_CONFIG: builds the app, listens,
// stops cleanly on SIGTERM/SIGINT. Progress and failures go to stderr.

import { connect } from 'node:net';
import type { AnyElysia } from 'elysia';
import type { ServiceName } from '../core/types.ts';
import { ConfigError, loadConfig } from './config.ts';
import { buildGatekeeper } from './gatekeeper/app.ts';
import { flushLogs } from './http.ts';
import { createProxy } from './proxy/app.ts';
import { buildTrustedHost } from './trustedhost/app.ts';

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
  // The Node adapter binds asynchronously (its callback fires early): announce only once a connect succeeds.
  await waitListening(listen.host, listen.port);
  process.stderr.write(`${name}: listening on ${listen.host}:${listen.port} (${typeof Bun === 'undefined' ? 'node' : 'bun'})\n`);
  const stop = async (): Promise<void> => {
    await app.stop();
    await stopExtra();
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
export function main(name: ServiceName): void {
  // journald or a closed pipe must not take the service down with EPIPE.
  process.stdout.on('error', () => undefined);
  serve(name).catch((e: unknown) => {
    const hint = e instanceof ConfigError && e.hint ? `\n  hint: ${e.hint}` : '';
    process.stderr.write(`${name}: ${(e as Error).message}${hint}\n`);
    process.exit(1);
  });
}
