// service: deploys gatekeeper / trustedhost / proxy as systemd units running
// on Bun. Artifact = the service bundled by `bun build` on the controller +
// the Bun runtime from the npm package (offline, reproducible); config JSON
// 0600 owned by the service user (the only place credentials go); a unit with
// restart policy and sandboxing. Uploads only what differs (sha256 from
// facts); restarts only when something changed, then waits for /health.
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { HostError } from '../core/errors.ts';
import { fileFactCommand, shq } from '../core/ssh.ts';
import { defineRole } from '../core/roles.ts';
import { teamApiKey } from '../core/secrets.ts';
import type { Cluster, Host, SecretStore, ServiceName, Task, TaskContext } from '../core/types.ts';
import { callerOf, CREDENTIAL_HEADER, nextHopOf } from '../services/contract.ts';
import type { GatekeeperConfig, ProxyConfig, ServiceConfig, TrustedHostConfig, Upstream } from '../services/schemas.ts';
import { CPU_FACT, runtimeArtifact, runtimePackage, serviceBundle } from './lib/artifact.ts';
import { fileTask } from './lib/files.ts';
import { DB_USERS, SECRETS } from './lib/names.ts';
import { files, unitRunning } from './lib/ops.ts';
import { nodeTls, publicKeyPin } from './lib/tls.ts';

export const SERVICE_USER = 'rampart';
export const RUNTIME_PATH = '/opt/rampart/bin/bun';
/** `sha256 size mtime` of the runtime as installed (hashing 100 MB on every run is too slow for a no-op). */
export const RUNTIME_STAMP_PATH = '/opt/rampart/bin/bun.sha256';
export const DB_PORT = 3306;

export const unitName = (s: ServiceName) => `rampart-${s}.service`;
export const unitPath = (s: ServiceName) => `/etc/systemd/system/${unitName(s)}`;
export const bundlePath = (s: ServiceName) => `/opt/rampart/${s}/service.js`;
export const configPath = (s: ServiceName) => `/etc/rampart/${s}.json`;
/** Where a service node keeps its TLS files: the cluster CA, its certificate, its key (0600, the service user's). */
export const TLS_PATHS = { ca: '/etc/rampart/tls/ca.pem', cert: '/etc/rampart/tls/server.pem', key: '/etc/rampart/tls/server.key' } as const;

export function servicePort(cluster: Cluster, s: ServiceName): number {
  return cluster.services[s].port;
}

function hostWithService(hosts: Host[], s: ServiceName, forNode: string): Host {
  const h = hosts.find((x) => x.node.service === s);
  if (!h) throw new HostError(`${forNode}: no node runs the ${s} service`, `add a node with \`service: ${s}\` to cluster.yaml`);
  return h;
}

/** The secret a service expects from its caller (one per link of the hop chain; the gatekeeper's callers use API keys). */
export const INBOUND_SECRET: Record<ServiceName, string | null> = { gatekeeper: null, trustedhost: SECRETS.gatekeeperToTrusted, proxy: SECRETS.trustedToProxy };

/**
 * A rotation's overlap (npx zx rotate; `secrets` then holds the new values):
 * the old values, still accepted by their receivers, and whether the senders
 * still send the old ones (step 1) or the new ones (step 2). The proxy may log
 * in with either (db.fallbackPasswords) while an overlap is set.
 */
export interface Overlap {
  previous: Record<string, string>;
  send: 'old' | 'new';
}

function inboundCredential(s: ServiceName, secrets: SecretStore): string {
  const name = INBOUND_SECRET[s];
  if (!name || !callerOf(s)) throw new HostError(`${s} has no caller credential (it is the public side)`);
  return secrets.get(name);
}

/** During a rotation's overlap: the old credential `s` accepts besides the new one. */
function previousInbound(s: ServiceName, overlap?: Overlap): { previousCredentials?: string[] } {
  const name = INBOUND_SECRET[s];
  const old = name ? overlap?.previous[name] : undefined;
  return old ? { previousCredentials: [old] } : {};
}

/** Where `s` forwards to: the next hop's private address and the credential it expects. */
function upstreamOf(cluster: Cluster, s: ServiceName, forNode: string, hosts: Host[], secrets: SecretStore, overlap?: Overlap): Upstream {
  const next = nextHopOf(s);
  if (!next) throw new HostError(`${forNode}: the ${s} service forwards to no other service`);
  const h = hostWithService(hosts, next, forNode);
  const old = overlap?.send === 'old' ? overlap.previous[INBOUND_SECRET[next] ?? ''] : undefined;
  return { url: `https://${h.privateAddress}:${servicePort(cluster, next)}`, credential: old ?? inboundCredential(next, secrets), ca: TLS_PATHS.ca };
}

/** The DB logins the proxy's config holds (user -> secret): what db.fallbackPasswords may cover. */
export const PROXY_LOGINS: readonly { user: string; secret: string }[] = [
  { user: DB_USERS.app, secret: SECRETS.mysqlApp },
  { user: DB_USERS.monitor, secret: SECRETS.mysqlMonitor },
  { user: DB_USERS.failover, secret: SECRETS.mysqlFailover },
];

/** The key clients send (X-API-Key): the team's own (services.gatekeeper.apiKeyFile / apiKeyEnv), else the generated one. */
export function clientApiKey(cluster: Cluster, secrets: SecretStore): string {
  return teamApiKey(cluster.services.gatekeeper) ?? secrets.get(SECRETS.apiKey);
}

/** The config object the service reads from RAMPART_SERVICE_CONFIG. */
export function serviceConfig(cluster: Cluster, host: Host, hosts: Host[], secrets: SecretStore, overlap?: Overlap): ServiceConfig {
  const s = host.node.service;
  if (!s) throw new HostError(`${host.name}: node has no service`, 'set `service:` on the node in cluster.yaml');
  const gk = cluster.services.gatekeeper;
  const common = {
    listen: { host: host.privateAddress, port: servicePort(cluster, s) },
    tls: { cert: TLS_PATHS.cert, key: TLS_PATHS.key },
    maxBodyBytes: gk.maxBodyBytes,
    policy: { statements: [...gk.statements], schemas: [...gk.schemas], ...(gk.routines.length ? { routines: [...gk.routines] } : {}) },
  };
  if (s === 'gatekeeper') {
    const c: GatekeeperConfig = {
      service: 'gatekeeper',
      ...common,
      apiKeys: [clientApiKey(cluster, secrets), ...(overlap?.previous[SECRETS.apiKey] && !teamApiKey(gk) ? [overlap.previous[SECRETS.apiKey]] : [])],
      rateLimit: { requests: gk.rateLimit.requests, perSeconds: gk.rateLimit.perSeconds },
      upstream: upstreamOf(cluster, s, host.name, hosts, secrets, overlap),
    };
    return c;
  }
  if (s === 'trustedhost') {
    const c: TrustedHostConfig = {
      service: 'trustedhost',
      ...common,
      credential: inboundCredential(s, secrets),
      ...previousInbound(s, overlap),
      upstream: upstreamOf(cluster, s, host.name, hosts, secrets, overlap),
    };
    return c;
  }
  const manager = hosts.find((h) => h.node.db === 'manager');
  if (!manager) throw new HostError(`${host.name}: the proxy needs a node with \`db: manager\``, 'add one to cluster.yaml');
  const px = cluster.services.proxy;
  const fallback = Object.fromEntries(PROXY_LOGINS.flatMap((l) => (overlap?.previous[l.secret] ? [[l.user, overlap.previous[l.secret]]] : [])));
  const c: ProxyConfig = {
    service: 'proxy',
    ...common,
    credential: inboundCredential(s, secrets),
    ...previousInbound(s, overlap),
    db: {
      manager: { name: manager.name, host: manager.privateAddress, port: DB_PORT },
      workers: hosts.filter((h) => h.node.db === 'worker').map((h) => ({ name: h.name, host: h.privateAddress, port: DB_PORT })),
      user: DB_USERS.app,
      password: secrets.get(SECRETS.mysqlApp),
      monitor: { user: DB_USERS.monitor, password: secrets.get(SECRETS.mysqlMonitor) },
      ...(px.failover.enabled ? { admin: { user: DB_USERS.failover, password: secrets.get(SECRETS.mysqlFailover) } } : {}),
      database: cluster.database.schema,
      ...(Object.keys(fallback).length ? { fallbackPasswords: fallback } : {}),
      ssl: { ca: TLS_PATHS.ca },
    },
    defaultMode: px.defaultMode,
    modes: [...px.modes],
    probeIntervalMs: px.probeIntervalMs,
    maxLagSeconds: px.maxLagSeconds,
    failover: { ...px.failover },
    semiSync: { enabled: cluster.database.semiSync.enabled, onTimeout: cluster.database.semiSync.onTimeout },
  };
  return c;
}

export function configText(cluster: Cluster, host: Host, hosts: Host[], secrets: SecretStore, overlap?: Overlap): string {
  return JSON.stringify(serviceConfig(cluster, host, hosts, secrets, overlap), null, 2) + '\n';
}

/** The systemd unit: restart policy, sandboxing, the config path (never a secret). */
export function unitText(s: ServiceName, port: number): string {
  // Only a port below 1024 (the gatekeeper's 443) needs a capability; the others get none.
  const caps = port < 1024
    ? ['CapabilityBoundingSet=CAP_NET_BIND_SERVICE', 'AmbientCapabilities=CAP_NET_BIND_SERVICE']
    : ['CapabilityBoundingSet=', 'AmbientCapabilities='];
  return `# managed by rampart
[Unit]
Description=rampart ${s} (Bun)
After=network-online.target rampart-firewall.service
Wants=network-online.target
StartLimitIntervalSec=0

[Service]
Type=simple
User=${SERVICE_USER}
Group=${SERVICE_USER}
Environment=RAMPART_SERVICE_CONFIG=${configPath(s)}
Environment=NODE_ENV=production
Environment=BUN_RUNTIME_TRANSPILER_CACHE_PATH=0
ExecStart=${RUNTIME_PATH} ${bundlePath(s)}
Restart=always
RestartSec=1
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
RestrictSUIDSGID=yes
LockPersonality=yes
${caps.join('\n')}
MemoryMax=256M
LimitNOFILE=65536
# one log line per request: journald's default per-unit rate limit would drop lines under load
LogRateLimitIntervalSec=0

[Install]
WantedBy=multi-user.target
`;
}

// ------------------------------------------------------------ tasks

type Ctx = Omit<TaskContext, 'facts'>;
const svc = (ctx: Ctx): ServiceName => ctx.host.node.service as ServiceName;
const noService = (ctx: Ctx) => (ctx.host.node.service ? null : 'no service on this node');
const RESTART = 'restart service';

const user: Task = {
  name: 'service user',
  when: noService,
  facts: () => ({ user: `getent passwd ${SERVICE_USER} | cut -d: -f7` }),
  check: ({ facts }) => (facts.user.code === 0 && /nologin|false/.test(facts.user.stdout) ? null : { message: `create system user ${SERVICE_USER}` }),
  apply: async ({ conn }) => {
    await conn.exec(`if id -u ${SERVICE_USER} >/dev/null 2>&1; then usermod -s /usr/sbin/nologin ${SERVICE_USER}; else useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin ${SERVICE_USER}; fi`);
  },
};

/** Parse `size mtime` + the stamp line `sha size mtime` printed by the runtime fact. */
export function runtimeState(stdout: string): { sha: string; current: boolean } | null {
  const [stat, stamp] = stdout.split('\n');
  if (!stat || !stamp) return null;
  const [size, mtime] = stat.trim().split(/\s+/);
  const [sha, sSize, sMtime] = stamp.trim().split(/\s+/);
  if (!sha || !size) return null;
  return { sha, current: size === sSize && mtime === sMtime };
}

const runtime: Task = {
  name: 'bun runtime',
  notifies: [RESTART],
  when: noService,
  facts: () => ({
    cpu: CPU_FACT,
    bin: `stat -c '%s %Y' ${RUNTIME_PATH} && cat ${RUNTIME_STAMP_PATH}`,
  }),
  check: async ({ facts, cluster }) => {
    const pkg = runtimePackage(facts.cpu.stdout);
    const want = await runtimeArtifact(cluster.dir, pkg);
    const have = runtimeState(facts.bin.stdout);
    if (have?.current && have.sha === want.sha256) return null;
    return { message: `install ${pkg} ${want.sha256.slice(0, 12)} (${(want.size / 1048576).toFixed(0)} MB)`, data: want };
  },
  apply: async (ctx, diff) => {
    const art = diff.data as { path: string; sha256: string };
    // big file: SFTP to the login user's home (not a shared /tmp), then install as root and verify
    const tmp = `.rampart-upload-${randomBytes(6).toString('hex')}`;
    await ctx.conn.putFile(art.path, tmp);
    await ctx.conn.exec(`set -e
src="$(getent passwd ${shq(ctx.host.user)} | cut -d: -f6)/${tmp}"
trap 'rm -f "$src"' EXIT
install -d -m 0755 /opt/rampart /opt/rampart/bin
install -m 0755 -o root -g root "$src" ${RUNTIME_PATH}.new
got=$(sha256sum < ${RUNTIME_PATH}.new | cut -d' ' -f1)
[ "$got" = ${shq(art.sha256)} ] || { rm -f ${RUNTIME_PATH}.new; echo "uploaded runtime is corrupt (sha256 $got)" >&2; exit 1; }
mv -f ${RUNTIME_PATH}.new ${RUNTIME_PATH}
printf '%s %s\\n' "$got" "$(stat -c '%s %Y' ${RUNTIME_PATH})" > ${RUNTIME_STAMP_PATH}`);
    ctx.notify(RESTART);
  },
};

const bundle: Task = {
  name: 'service bundle',
  notifies: [RESTART],
  when: noService,
  facts: (ctx) => ({ file: fileFactCommand(bundlePath(svc(ctx))) }),
  check: async (ctx) => {
    const art = await serviceBundle(ctx.cluster.dir, svc(ctx));
    if (ctx.facts.file.stdout === `${art.sha256} 644 root:root`) return null;
    return { message: `upload ${bundlePath(svc(ctx))} ${art.sha256.slice(0, 12)}`, data: art };
  },
  apply: async (ctx, diff) => {
    const art = diff.data as { path: string };
    await ctx.conn.writeFile(bundlePath(svc(ctx)), await readFile(art.path), { mode: '0644', owner: 'root:root' });
    ctx.notify(RESTART);
  },
};

const config = fileTask({
  name: 'service config',
  when: noService,
  path: (ctx) => configPath(svc(ctx)),
  content: (ctx) => configText(ctx.cluster, ctx.host, ctx.hosts, ctx.secrets),
  mode: '0600',
  owner: `${SERVICE_USER}:${SERVICE_USER}`,
  notify: RESTART,
});

const tls = files('tls certificate', [
  { path: () => TLS_PATHS.ca, content: (ctx) => nodeTls(ctx.cluster, ctx.host).ca, mode: '0644', owner: 'root:root' },
  { path: () => TLS_PATHS.cert, content: (ctx) => nodeTls(ctx.cluster, ctx.host).cert, mode: '0644', owner: 'root:root' },
  { path: () => TLS_PATHS.key, content: (ctx) => nodeTls(ctx.cluster, ctx.host).key, mode: '0600', owner: `${SERVICE_USER}:${SERVICE_USER}` },
], { when: noService, notify: RESTART });

const unit = fileTask({
  name: 'systemd unit',
  when: noService,
  path: (ctx) => unitPath(svc(ctx)),
  content: (ctx) => unitText(svc(ctx), servicePort(ctx.cluster, svc(ctx))),
  mode: '0644',
  owner: 'root:root',
  after: async (ctx) => void (await ctx.conn.exec('systemctl daemon-reload')),
  notify: RESTART,
});

/** Enabled, running and answering /health 200; (re)started by the handler, which waits for /health. */
const running = unitRunning({ among: (ctx) => [unitName(svc(ctx))], pick: (ctx) => unitName(svc(ctx)) }, {
  name: 'service enabled and running',
  when: noService,
  probe: {
    command: (ctx) => healthFact(svc(ctx), ctx.host.privateAddress, servicePort(ctx.cluster, svc(ctx)), healthTls(ctx)),
    failure: (out) => {
      const code = out.stdout.trim() || '000';
      return code === '200' ? null : `/health: HTTP ${code}`;
    },
  },
  handler: RESTART,
});

/**
 * How the node's own /health probe trusts the service: the cluster CA, or,
 * for a certificate of the team's own that may not name the private address,
 * its public key pinned.
 */
export function healthTls(ctx: Ctx): string {
  const t = nodeTls(ctx.cluster, ctx.host);
  return t.own ? `--insecure --pinnedpubkey '${publicKeyPin(t.cert)}'` : `--cacert ${TLS_PATHS.ca}`;
}

/**
 * One /health probe as a fact: the caller's credential is read from the
 * service's own 0600 config by root and piped into curl's config (never argv).
 */
export function healthFact(s: ServiceName, address: string, port: number, tlsOpts = `--cacert ${TLS_PATHS.ca}`): string {
  const header = !callerOf(s)
    ? 'echo'
    : `sed -n 's/^  "credential": "\\([^"]*\\)",\\{0,1\\}$/header = "${CREDENTIAL_HEADER}: \\1"/p' ${configPath(s)}`;
  return `${header} | curl -s -o /dev/null -w '%{http_code}' -m 2 ${tlsOpts} -K - https://${address}:${port}/health`;
}

/** Node-side poll of /health (bounded); the trusted host's credential travels on stdin into a 0600 curl config. */
export function healthScript(s: ServiceName, address: string, port: number, timeoutS = 30, tlsOpts = `--cacert ${TLS_PATHS.ca}`): string {
  const unit = unitName(s);
  return `umask 077; cfg=$(mktemp); trap 'rm -f "$cfg"' EXIT; cat > "$cfg"
end=$(( $(date +%s) + ${timeoutS} )); code=000
while [ "$(date +%s)" -lt "$end" ]; do
  code=$(curl -s -o /dev/null -w '%{http_code}' -m 2 ${tlsOpts} -K "$cfg" https://${address}:${port}/health) || true
  [ "$code" = 200 ] && exit 0
  sleep 0.2
done
echo "${s}: /health on ${address}:${port} did not answer 200 within ${timeoutS} s (last: HTTP $code); state: $(systemctl is-active ${unit}); last journal lines:"
journalctl -u ${unit} -n 12 --no-pager -o cat 2>/dev/null | cut -c1-300
exit 1`;
}

/** curl config (on stdin, never argv): the internal hops answer /health only to their caller's credential. */
export function healthCurlConfig(s: ServiceName, secrets: SecretStore): string {
  if (!callerOf(s)) return '\n';
  return `header = "${CREDENTIAL_HEADER}: ${inboundCredential(s, secrets)}"\n`;
}

export const serviceRole = defineRole({
  name: 'service',
  // the database users the services log in with exist first
  after: ['mysql'],
  requires: [{
    field: 'service',
    describe: '"service:" (one of gatekeeper, trustedhost, proxy)',
    orphan: { at: 'field', message: (i) => `nodes[${i}].service is set but roles lacks "service"` },
  }],
  tasks: [user, runtime, bundle, config, tls, unit, running],
  handlers: [
    {
      name: RESTART,
      run: async (ctx) => {
        const s = svc(ctx);
        await ctx.conn.exec(`systemctl daemon-reload && systemctl enable ${unitName(s)} 2>&1 && systemctl restart ${unitName(s)}`);
        const res = await ctx.conn.exec(healthScript(s, ctx.host.privateAddress, servicePort(ctx.cluster, s), 30, healthTls(ctx)), {
          stdin: healthCurlConfig(s, ctx.secrets), check: false,
        });
        if (res.code !== 0) {
          throw new HostError(`${ctx.host.name}: ${res.stdout.trim() || res.stderr.trim()}`, `journalctl -u ${unitName(s)} on ${ctx.host.name} has the full log`);
        }
      },
    },
  ],
});
