// Waiting for a new node's SSH port: says what it waits for (node, address,
// time), keeps the last socket error, and gives up early on errors that
// waiting cannot fix.
//
// - no answer (timeout): a booting node, or a security group that does not
//   admit this machine (provider.aws.sshCidr): waited for up to the limit.
// - ENETUNREACH, EACCES, EPERM, EADDRNOTAVAIL: this machine has no route to
//   the address or may not connect at all: fails at once.
// - EHOSTUNREACH: a router says the host is unreachable; can flicker while an
//   address is wired up, so it fails once it has lasted 30 s.
// - ECONNREFUSED: the node is up but nothing listens on 22 yet (sshd
//   starting); fails once it has lasted 120 s.
import { connect } from 'node:net';
import { ProviderError } from '../../core/errors.ts';

export interface SshTarget {
  node: string;
  address: string;
  port: number;
}

/** The outcome of one connection attempt: undefined = connected. */
export interface ProbeError {
  code: string;
  message: string;
}

export type Probe = (address: string, port: number, timeoutMs: number) => Promise<ProbeError | undefined>;

export interface WaitOptions {
  timeoutMs: number;
  /** Pause between attempts; default 2000 ms. */
  retryMs?: number;
  /** Called after every failed attempt with a one-line status. */
  onStatus?: (line: string) => void;
  signal?: AbortSignal;
  /** How to try one connection (tests inject one); default: a TCP connect. */
  probe?: Probe;
}

const FATAL: Readonly<Record<string, string>> = {
  ENETUNREACH: 'this machine has no route to that network',
  EACCES: 'this machine refuses the connection (local firewall or policy)',
  EPERM: 'this machine refuses the connection (local firewall or policy)',
  EADDRNOTAVAIL: 'this machine has no usable source address for it',
};

/** Errors that may clear while a node boots: how long they may last before waiting stops. */
export const PERSIST_LIMIT_MS: Readonly<Record<string, number>> = { EHOSTUNREACH: 30_000, ECONNREFUSED: 120_000 };

const CONNECT_TIMEOUT_MS = 5000;

export const tcpProbe: Probe = (address, port, timeoutMs) => new Promise((resolve) => {
  const sock = connect({ host: address, port, timeout: timeoutMs });
  sock.once('connect', () => { sock.destroy(); resolve(undefined); });
  sock.once('timeout', () => { sock.destroy(); resolve({ code: 'ETIMEDOUT', message: `no answer within ${Math.round(timeoutMs / 1000)} s` }); });
  sock.once('error', (err: NodeJS.ErrnoException) => { sock.destroy(); resolve({ code: err.code ?? 'ERROR', message: err.message }); });
});

const seconds = (ms: number) => `${Math.round(ms / 1000)} s`;

/** Resolve once a TCP connection to the target succeeds; ProviderError naming the node otherwise. */
export async function waitForTcp(target: SshTarget, opts: WaitOptions): Promise<void> {
  const { node, address, port } = target;
  const where = `${node} (${address}:${port})`;
  const probe = opts.probe ?? tcpProbe;
  const started = Date.now();
  let streak: { code: string; since: number } | undefined;
  for (;;) {
    const left = opts.timeoutMs - (Date.now() - started);
    const err = await probe(address, port, Math.max(1, Math.min(CONNECT_TIMEOUT_MS, left)));
    if (!err) return;
    const now = Date.now();
    if (streak?.code !== err.code) streak = { code: err.code, since: now };
    const elapsed = now - started;
    opts.onStatus?.(`${node} ${address}:${port} ${seconds(elapsed)} of ${seconds(opts.timeoutMs)}, last: ${err.code}${err.message.includes(err.code) ? '' : ` (${err.message})`}`);
    const fatal = FATAL[err.code];
    if (fatal) {
      throw new ProviderError(`${where}: SSH port unreachable: ${err.message}: ${fatal}; waiting will not help`,
        'check this machine\'s network (default route, VPN, firewall) reaches the node\'s public address, then apply again');
    }
    const limit = PERSIST_LIMIT_MS[err.code];
    if (limit !== undefined && now - streak.since >= limit) {
      throw new ProviderError(`${where}: SSH port unreachable: ${err.code} for ${seconds(now - streak.since)} (${err.message})`,
        err.code === 'ECONNREFUSED'
          ? 'the node answers but nothing listens on port 22: look at its console output (EC2 console: Actions > Monitor > Get system log)'
          : 'a router reports the node unreachable: check the subnet\'s route table and the node\'s state in the EC2 console');
    }
    if (elapsed >= opts.timeoutMs) {
      throw new ProviderError(`${where} did not answer SSH within ${seconds(opts.timeoutMs)} (last: ${err.code}: ${err.message})`,
        'check that its security group admits this machine (provider.aws.sshCidr) and the instance\'s console output; a slow boot needs a larger provider.aws.sshTimeoutSeconds');
    }
    if (opts.signal?.aborted) throw new ProviderError(`${where}: SSH wait abandoned (another node failed)`);
    await new Promise((r) => setTimeout(r, Math.min(opts.retryMs ?? 2000, Math.max(0, opts.timeoutMs - elapsed))));
  }
}
