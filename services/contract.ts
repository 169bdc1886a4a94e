// The services' contract, declared once: the service names and the hop
// chain, the proxy's routing modes and the headers between hops. Read by
// core/spec (cluster checks), roles/service.ts (writes the configs) and the
// services; the shapes built on these lists (request body, config files) are
// in services/schemas.ts. No imports: the CLI loads this on every command.
// The JSON schema of cluster.yaml is checked in; a unit test holds its lists
// equal to these.

// ------------------------------------------------------------ names, chain, modes

/** The services, in the order a request passes them (the SQL path). */
export const SERVICE_NAMES = ['gatekeeper', 'trustedhost', 'proxy'] as const;
export type ServiceName = (typeof SERVICE_NAMES)[number];

/** The service calling `s` (null: any client; the gatekeeper is the public side). */
export function callerOf(s: ServiceName): ServiceName | null {
  const i = SERVICE_NAMES.indexOf(s);
  return i > 0 ? SERVICE_NAMES[i - 1] : null;
}

/** The service `s` forwards to (null: the proxy, which runs the statement). */
export function nextHopOf(s: ServiceName): ServiceName | null {
  const i = SERVICE_NAMES.indexOf(s);
  return i < SERVICE_NAMES.length - 1 ? SERVICE_NAMES[i + 1] : null;
}

/** How the proxy routes a read: the manager, a random worker, the lowest-latency worker. */
export const PROXY_MODES = ['direct', 'random', 'customized'] as const;
export type ProxyMode = (typeof PROXY_MODES)[number];

/** Header carrying the internal credential from one hop to the next. */
export const CREDENTIAL_HEADER = 'x-rampart-credential';

/**
 * Answer header with where the statement ran, `<node> <mode> <type>` (`-`
 * when unknown), so each hop logs it without parsing the body. One header,
 * not three: every header costs both ends of every hop.
 */
export const ROUTE_HEADER = 'x-rampart-route';

export interface Route {
  node: string;
  mode: string;
  type: string;
}

export function formatRoute(r: Partial<Route>): string {
  return `${r.node || '-'} ${r.mode || '-'} ${r.type || '-'}`;
}

export function parseRoute(header: string | null): Route {
  const [node = '-', mode = '-', type = '-'] = (header ?? '').split(' ');
  const known = (v: string): string => (v === '-' ? '' : v);
  return { node: known(node), mode: known(mode), type: known(type) };
}
