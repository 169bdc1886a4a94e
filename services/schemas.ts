// The shapes of the services' contract (services/contract.ts), declared
// once with TypeBox, which gives both the TypeScript type and the validator:
// the request body every hop accepts and each service's config file. Only
// the services load it at run time (config at start, bodies per request);
// the CLI uses its types only.

import { Type as T, type Static, type TLiteral } from '@sinclair/typebox';
import { callerOf, CREDENTIAL_HEADER, PROXY_MODES, type ServiceName } from './contract.ts';

const literals = <V extends string>(values: readonly V[]) => values.map((v) => T.Literal(v)) as TLiteral<V>[];
const Mode = (error: string) => T.Union(literals(PROXY_MODES), { error });

// ------------------------------------------------------------ the request

/** The request body, the same at every hop (unknown fields are an error). */
export const QueryBody = T.Object(
  {
    sql: T.String({ minLength: 1, maxLength: 65536 }),
    params: T.Optional(T.Array(T.Union([T.String({ maxLength: 65536 }), T.Number(), T.Boolean(), T.Null()]), { maxItems: 1000 })),
    mode: T.Optional(Mode(`mode: must be ${PROXY_MODES.join(', ')}`)),
    request_id: T.Optional(T.String({ pattern: '^[A-Za-z0-9._:-]{1,64}$', error: 'request_id: 1-64 characters of A-Z a-z 0-9 . _ : -' })),
  },
  { additionalProperties: false },
);
export type QueryRequest = Static<typeof QueryBody>;
export type SqlParam = NonNullable<QueryRequest['params']>[number];

// ------------------------------------------------------------ the config files
// Written by the service role (one 0600 JSON file per node, it holds
// credentials), read through RAMPART_SERVICE_CONFIG. `error` is the message a
// failing field reports (services/config.ts prefixes the file).

const Port = T.Integer({ minimum: 1, maximum: 65535 });
const Secret = (field: string, description: string) =>
  T.String({ minLength: 16, description, error: `${field} must be a string of at least 16 characters` });

const Listen = T.Object({
  host: T.String({ description: 'Address to bind (0.0.0.0 on the gatekeeper, the private address elsewhere, 127.0.0.1 in tests).' }),
  port: Port,
}, { error: 'listen must be { host, port }' });

/** The next hop. */
const Upstream = T.Object({
  url: T.String({ pattern: '^https?://', description: 'Base URL, e.g. http://10.77.0.12:5000 (the service POSTs to `${url}/query`).', error: 'upstream.url must be an http(s) URL' }),
  credential: Secret('upstream.credential', `Sent as header ${CREDENTIAL_HEADER}; the next hop accepts nothing else.`),
  timeoutMs: T.Optional(T.Integer({ minimum: 1, description: 'Whole request timeout towards the next hop (default 10000).', error: 'upstream.timeoutMs must be a positive integer' })),
  ca: T.Optional(T.String({ minLength: 1, description: 'CA file (PEM) the next hop\'s https certificate must chain to (the cluster CA).', error: 'upstream.ca must be a file path' })),
}, { error: 'upstream must be { url, credential }' });

/** The hop's own certificate: it serves HTTPS (else plain HTTP, only in tests). */
const ServerTls = T.Object({
  cert: T.String({ minLength: 1, description: 'Certificate file (PEM, chain after the leaf).' }),
  key: T.String({ minLength: 1, description: 'Private key file (PEM, 0600, owned by the service user).' }),
}, { error: 'tls must be { cert, key } (file paths)' });
export type Upstream = Static<typeof Upstream>;

const Common = {
  listen: Listen,
  tls: T.Optional(ServerTls),
  maxBodyBytes: T.Integer({ minimum: 256, description: 'Largest accepted request body in bytes (413 above).', error: 'maxBodyBytes must be an integer >= 256' }),
  policy: T.Object({
    statements: T.Array(T.String(), { minItems: 1, description: 'Allowed statement verbs, upper case.', error: 'policy.statements must be a non-empty list of statement verbs' }),
    schemas: T.Array(T.String(), { description: 'Schemas that qualified names may use.', error: 'policy.schemas must be a list of schema names' }),
    routines: T.Optional(T.Array(T.String(), { description: 'Stored routines (schema.name) queries may call.', error: 'policy.routines must be a list of schema.name' })),
  }, { description: 'The SQL allow-list; every hop enforces it again (same module).', error: 'policy must be { statements, schemas }' }),
  log: T.Optional(T.Boolean({ description: 'One JSON line per request on stdout (default true).', error: 'log must be true or false' })),
};

export const GatekeeperConfig = T.Object({
  service: T.Literal('gatekeeper'),
  ...Common,
  apiKeys: T.Array(T.String({ minLength: 16 }), { minItems: 1, description: 'Accepted client API keys (header X-API-Key), compared in constant time.', error: 'apiKeys must list keys of at least 16 characters' }),
  rateLimit: T.Object({
    requests: T.Integer({ exclusiveMinimum: 0, description: 'Requests allowed per client address ...' }),
    perSeconds: T.Number({ exclusiveMinimum: 0, description: '... in a window of this many seconds (fixed window).' }),
  }, { error: 'rateLimit must be { requests, perSeconds } (positive)' }),
  upstream: Upstream,
});
export type GatekeeperConfig = Static<typeof GatekeeperConfig>;

/** What a service behind another has in common: it accepts only its caller's credential. */
const Behind = <S extends 'trustedhost' | 'proxy'>(service: S) => ({
  service: T.Literal(service),
  ...Common,
  credential: Secret('credential', `The credential the ${callerOf(service)} sends (header ${CREDENTIAL_HEADER}).`),
  previousCredentials: T.Optional(T.Array(Secret('previousCredentials[]', 'A credential accepted besides `credential` while a rotation switches the caller over (npx zx rotate).'), {
    error: 'previousCredentials must list credentials of at least 16 characters',
  })),
});

export const TrustedHostConfig = T.Object({
  ...Behind('trustedhost'),
  upstream: Upstream,
});
export type TrustedHostConfig = Static<typeof TrustedHostConfig>;

const DbEndpoint = T.Object({
  name: T.String({ description: 'Node name as reported in responses and logs (e.g. manager, worker1).' }),
  host: T.String(),
  port: Port,
});
export type DbEndpoint = Static<typeof DbEndpoint>;

const DbConfig = T.Object({
  manager: T.Object(DbEndpoint.properties, { description: 'Receives every write (and direct reads).', error: 'db.manager must be { name, host, port }' }),
  workers: T.Array(DbEndpoint, { description: 'Replicas serving random / customized reads.', error: 'db.workers must be a list of { name, host, port }' }),
  user: T.String({ minLength: 1, description: 'Application user: DML on `database` (also the probes\' user when `monitor` is not set).', error: 'db needs user, password and database' }),
  password: T.String({ error: 'db needs user, password and database' }),
  monitor: T.Optional(T.Object({ user: T.String({ minLength: 1 }), password: T.String() }, {
    description: 'The probes\' user (health, latency, replication lag), so the application user needs no global privilege: REPLICA MONITOR (MariaDB) / REPLICATION CLIENT (MySQL) only.',
    error: 'db.monitor must be { user, password }',
  })),
  admin: T.Optional(T.Object({ user: T.String({ minLength: 1 }), password: T.String() }, {
    description: 'The failover user (promote, re-point, fence: replication admin and read_only only, no data).',
    error: 'db.admin must be { user, password }',
  })),
  database: T.String({ description: 'Default schema of every connection.', error: 'db needs user, password and database' }),
  fallbackPasswords: T.Optional(T.Record(T.String({ minLength: 1 }), T.String(), {
    description: 'user -> the password to log in with when the configured one is refused (access denied): set while a rotation changes the accounts\' passwords (npx zx rotate), so new connections authenticate on either side of the ALTER USER.',
    error: 'db.fallbackPasswords must map user names to passwords',
  })),
  poolSize: T.Optional(T.Integer({ minimum: 1, description: 'Connections per node (default 16).', error: 'db.poolSize must be a positive integer' })),
  queryTimeoutMs: T.Optional(T.Integer({ minimum: 1, description: 'Per-query timeout (default 5000).', error: 'db.queryTimeoutMs must be a positive integer' })),
  connectTimeoutMs: T.Optional(T.Integer({ minimum: 1, description: 'Connect timeout of query connections (default 3000; probes use probeTimeoutMs).', error: 'db.connectTimeoutMs must be a positive integer' })),
  ssl: T.Optional(T.Object({ ca: T.String({ minLength: 1, description: 'CA file (PEM) the servers\' certificates must chain to.' }) }, {
    description: 'TLS to every DB node, the server certificate verified against `ca` (name included).', error: 'db.ssl must be { ca }',
  })),
}, { error: 'db must be an object' });
export type DbConfig = Static<typeof DbConfig>;

export const ProxyConfig = T.Object({
  ...Behind('proxy'),
  db: DbConfig,
  defaultMode: Mode('defaultMode must be one of modes'),
  modes: T.Array(Mode(`modes must be a subset of ${PROXY_MODES.join(', ')}`), { minItems: 1, description: 'Modes clients may ask for (422 otherwise).', error: `modes must be a subset of ${PROXY_MODES.join(', ')}` }),
  probeIntervalMs: T.Integer({ minimum: 10, description: 'Interval of the active health/latency/lag probes.', error: 'probeIntervalMs must be an integer >= 10' }),
  probeTimeoutMs: T.Optional(T.Integer({ minimum: 1, description: 'Probe timeout (default min(750, 3 * probeIntervalMs)): a node silent that long is down.', error: 'probeTimeoutMs must be a positive integer' })),
  maxLagSeconds: T.Number({ minimum: 0, description: 'Workers whose replication lag exceeds this (or whose replication is stopped) get no reads.', error: 'maxLagSeconds must be >= 0' }),
  failover: T.Optional(T.Object({
    enabled: T.Boolean(),
    failCount: T.Integer({ minimum: 1 }),
    downAfterMs: T.Integer({ minimum: 1 }),
  }, { description: 'services.proxy.failover: the primary is dead after failCount failed probes in a row spanning downAfterMs; needs db.admin.', error: 'failover must be { enabled, failCount, downAfterMs }' })),
  control: T.Optional(T.Object({
    holdWrites: T.Boolean(),
    holdMs: T.Integer({ minimum: 1 }),
  }, {
    description: 'Written by npx zx switchover only (apply never renders it): hold new writes (queued, at most holdMs, then 503 not executed) and pause the automatic failover while the primary moves; the next config without it releases them.',
    error: 'control must be { holdWrites, holdMs }',
  })),
  semiSync: T.Optional(T.Object({
    enabled: T.Boolean(),
    onTimeout: T.Union([T.Literal('async'), T.Literal('refuse')]),
  }, {
    description: 'database.semiSync as the proxy holds it: /health reports when the primary runs without the guarantee; with onTimeout refuse, writes are refused (503 DB_UNAVAILABLE, not executed) meanwhile.',
    error: 'semiSync must be { enabled, onTimeout: async|refuse }',
  })),
});
export type ProxyConfig = Static<typeof ProxyConfig>;

/** Each service's config schema. */
export const CONFIG_SCHEMAS = { gatekeeper: GatekeeperConfig, trustedhost: TrustedHostConfig, proxy: ProxyConfig } as const;
export type ServiceConfig = GatekeeperConfig | TrustedHostConfig | ProxyConfig;
export type ConfigFor<S extends ServiceName> = Static<(typeof CONFIG_SCHEMAS)[S]>;
