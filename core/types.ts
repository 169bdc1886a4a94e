// The shapes every layer shares: the validated cluster, the hosts a provider
// hands to the engine, and the role/task contract the engine runs.
import type { RoleRegistry } from './roles.ts';

import type { ProxyMode, ServiceName } from '../services/contract.ts';

export type { ProxyMode, ServiceName };
export type DbRole = 'manager' | 'worker';
export type DbEngine = 'auto' | 'mariadb' | 'mysql';
/** A role's name: built-in or a user role loaded through `roleDirs` (the registry knows which exist). */
export type RoleName = string;

export interface NodeSpec {
  name: string;
  /** Instance type (EC2 type; informational sizing for local nodes). */
  type: string;
  roles: RoleName[];
  /** Database role, for nodes that run MySQL/MariaDB. */
  db?: DbRole;
  /** The HTTP service this node runs (with the `service` role). */
  service?: ServiceName;
  /** Gets a public address / is reachable from outside (gatekeeper). */
  public?: boolean;
  /** Local provider only: fixed address on the bridge subnet (default: .10 + index). */
  address?: string;
}

/** An inbound flow: `from` may open TCP connections to `to` on `port`. */
export interface FlowSpec {
  from: string[]; // node names, or 'internet' / 'controller'
  to: string[];   // node names
  port: number;
}

export interface EgressSpec {
  /** Node whose OUTPUT is restricted to its declared outbound flows. */
  node: string;
  /** Also allow HTTP(S) to the package mirror. */
  mirror: boolean;
}

export interface LocalProviderSpec {
  subnet: string;   // e.g. 10.77.0.0/24; host (controller) is .1
  bridge: string;   // Linux bridge name (<= 15 chars)
  mirror: string;   // Debian mirror host name
  suite: string;    // Debian suite for the base image
  /** apt refuses a Release file past its Valid-Until (false only for a frozen snapshot mirror). */
  checkValidUntil: boolean;
  /** Nodes fetch packages through apt-cacher-ng on the controller (their gateway), not from the mirror. */
  packageCache: boolean;
}

/** Ubuntu LTS releases the AWS provider knows images of. */
export type UbuntuRelease = '26.04' | '24.04';

export interface AwsProviderSpec {
  region?: string;
  profile?: string;
  /** Ubuntu LTS whose newest Canonical image the nodes run (26.04: MySQL 8.4; 24.04: MySQL 8.0); ignored when `ami` is set. */
  ubuntu: UbuntuRelease;
  ami?: string;
  vpcId?: string;
  subnetId?: string;
  /** CIDR allowed to SSH; default: the controller's public address /32, detected at apply time. */
  sshCidr?: string;
  /** Reach non-public nodes over SSH through the gatekeeper (ProxyJump). */
  jump: boolean;
  keyName?: string;
  /** How long apply waits for a new node's SSH port (fails sooner on errors that waiting cannot fix). */
  sshTimeoutSeconds: number;
}

export interface ProviderSpec {
  type: 'local' | 'aws';
  local: LocalProviderSpec;
  aws: AwsProviderSpec;
}

export interface SakilaSpec {
  url: string;
  sha256: string;
  /** Local tarball used instead of downloading (offline); env RAMPART_SAKILA overrides. */
  path?: string;
}

export interface DatabaseSpec {
  engine: DbEngine;
  schema: string;
  /** Accounts (`user@host`) rampart does not manage but must keep, although they have network access or global privileges. */
  keepUsers: string[];
  sakila: SakilaSpec;
  sysbench: { tables: number; tableSize: number; threads: number; time: number };
  semiSync: SemiSyncSpec;
}

/** Semi-synchronous replication (database.semiSync). */
export interface SemiSyncSpec {
  enabled: boolean;
  /** A commit waits this long for a worker's acknowledgement, then the manager falls back to async. */
  timeoutMs: number;
  /** async: writes go on without the guarantee; refuse: the proxy refuses writes while no worker acknowledges. */
  onTimeout: 'async' | 'refuse';
}

export interface GatekeeperSpec {
  port: number;
  statements: string[];     // allowed statement types, e.g. SELECT/INSERT/UPDATE/DELETE
  schemas: string[];        // allowed schemas
  routines: string[];       // stored functions queries may call (schema.name)
  maxBodyBytes: number;
  rateLimit: { requests: number; perSeconds: number };
  /** The gatekeeper's own certificate and key (absolute paths); unset: one issued by the cluster CA. */
  tls?: { cert: string; key: string };
  /** A file holding the clients' API key (absolute path; its first line), instead of the generated one. */
  apiKeyFile?: string;
  /** An environment variable holding the clients' API key (read when a command runs, never stored), instead of the generated one. */
  apiKeyEnv?: string;
}

/** services.proxy.failover: when the proxy declares the manager dead and promotes a worker. */
export interface FailoverSpec {
  enabled: boolean;
  failCount: number;
  downAfterMs: number;
}

export interface ProxySpec {
  failover: FailoverSpec;
  port: number;
  defaultMode: ProxyMode;
  modes: ProxyMode[];
  probeIntervalMs: number;
  maxLagSeconds: number;
}

export interface ServicesSpec {
  gatekeeper: GatekeeperSpec;
  trustedhost: { port: number };
  proxy: ProxySpec;
}

export interface BenchSpec {
  writes: number;
  reads: number;
  concurrency: number;
  firstName: string;
  lastName: string;
}

export interface AptSpec {
  /** Refresh a node's package lists when they are older than this (Ansible's cache_valid_time). */
  cacheValidSeconds: number;
  /** Which pending upgrades apply installs: security (default), all, none. */
  upgrades: 'security' | 'all' | 'none';
}

export interface Cluster {
  /** Absolute path of the cluster.yaml it came from. */
  file: string;
  /** Folder the cluster.yaml lives in (state lives in <dir>/.rampart). */
  dir: string;
  name: string;
  timezone: string;
  adminUser: string;
  provider: ProviderSpec;
  nodes: NodeSpec[];
  security: { flows: FlowSpec[]; egress: EgressSpec[] };
  database: DatabaseSpec;
  services: ServicesSpec;
  bench: BenchSpec;
  apt: AptSpec;
  /** Every role this cluster may use (built-in + its roleDirs), in declaration and engine order. */
  roles: RoleRegistry;
  /** Each role's own cluster.yaml section (defaults filled), by role name; read through RoleManifest.settingsOf. */
  settings: Record<string, unknown>;
}

/** A machine the engine can reach, as a provider describes it. */
export interface Host {
  name: string;
  /** Where SSH connects (public or bridge address). */
  address: string;
  /** Address other nodes use to reach it. */
  privateAddress: string;
  /** Public DNS name (AWS PublicDnsName), named in the node's certificate besides its address. */
  publicDns?: string;
  port: number;
  user: string;
  /** Source CIDR the controller's SSH comes from, as this node sees it (iptables/security groups allow 22 only from it). */
  sshFrom: string;
  /** SSH through this host first (bastion), if set. */
  jump?: { address: string; port: number; user: string };
  node: NodeSpec;
}

// ---------------------------------------------------------------- provider

export interface ProviderEvents {
  /** Progress lines for long steps ("building base image", "starting worker1"). */
  progress?(message: string): void;
}

export interface PlanItem {
  action: 'create' | 'change' | 'delete' | 'ok';
  resource: string;
  detail?: string;
  /** Set by up() when it created (or re-created) this node: a new machine, so a new host key to pin. */
  newNode?: string;
  /** Not a resource but a fact about the plan (e.g. the hourly cost): always `ok`, always shown with the plan. */
  info?: boolean;
}

export interface Provider {
  readonly name: 'local' | 'aws';
  /** What up() would do, changing nothing. */
  plan(events?: ProviderEvents): Promise<PlanItem[]>;
  /** Create/repair everything needed, wait until every node answers SSH, return the hosts. */
  up(events?: ProviderEvents): Promise<{ hosts: Host[]; changes: PlanItem[] }>;
  /** The hosts that exist now (no changes); missing nodes are absent. */
  describe(): Promise<Host[]>;
  /** Remove everything up() created; safe to rerun. */
  down(events?: ProviderEvents): Promise<PlanItem[]>;
}

// ---------------------------------------------------------------- engine

export type TaskStatus = 'ok' | 'changed' | 'failed' | 'skipped';

export interface ExecResult {
  stdout: string;
  stderr: string;
  code: number;
}

export interface ExecOptions {
  /** Fed to the command's stdin (use for secrets: never put them on a command line). */
  stdin?: string;
  /** Run as root through sudo (default true). */
  sudo?: boolean;
  /** Throw SshError when the exit code is not 0 (default true). */
  check?: boolean;
  /** false: not recorded in the run log (the caller records it, e.g. the fact round trip). */
  log?: false;
}

/** One open connection to a host; every task of the host reuses it. */
export interface Connection {
  readonly host: Host;
  /** Run a shell script (bash) on the host. */
  exec(script: string, opts?: ExecOptions): Promise<ExecResult>;
  /** Write a file as root, atomically, content through stdin (never on a command line). */
  writeFile(path: string, content: string | Buffer, opts?: { mode?: string; owner?: string }): Promise<void>;
  /** Upload a local file to a remote path over SFTP as the login user (no diff). */
  putFile(localPath: string, remotePath: string): Promise<void>;
  close(): void;
}

/** What a task sees. Facts are gathered for every task of a host in one round trip. */
export interface TaskContext {
  host: Host;
  conn: Connection;
  cluster: Cluster;
  /** Every host of the run (e.g. the manager's address for replication). */
  hosts: Host[];
  /** Output of this task's fact commands, by key. */
  facts: Record<string, Fact>;
  check: boolean;
  secrets: SecretStore;
  /** Notify a handler of the current role (runs once per host at the end). */
  notify(handler: string): void;
}

export interface Fact {
  stdout: string;
  code: number;
}

/** A difference a task found: a one-line message, plus anything apply() needs. */
export interface Diff {
  message: string;
  data?: unknown;
  /** --diff: what changes, in detail (a unified diff of a file, `old -> new` lines); secrets masked. */
  detail?: () => Promise<string> | string;
}

/** A Diff whose data has a type (see TaskWith). */
export interface DiffWith<D> extends Diff {
  data: D;
}

export interface Task {
  name: string;
  /** Shell commands (run as root) whose output this task's check needs, by key. */
  facts?: (ctx: Omit<TaskContext, 'facts'>) => Record<string, string>;
  /** Return null when the host is as desired, a Diff when not. Reads only; never changes. */
  check(ctx: TaskContext): Promise<Diff | null> | Diff | null;
  /** Make it so. Return an optional message for the result line. */
  apply(ctx: TaskContext, diff: Diff): Promise<string | void>;
  /** Skip this task on this host (e.g. not a DB node). Return the reason, or null to run. */
  when?(ctx: Omit<TaskContext, 'facts'>): string | null;
  /**
   * Earlier tasks whose change changes this one's inputs (`task name` of the same role, or
   * `role:task name`): --check reports this task as "would change: depends on X" when X would.
   */
  dependsOn?: string[];
  /** Handlers this task notifies when it changes (--check lists them as would run). */
  notifies?: string[];
}

/**
 * A task whose diff data is typed: what check returns is what apply receives,
 * with no cast. It is a Task (apply is a method, so a role lists it with the others).
 */
export interface TaskWith<D> extends Omit<Task, 'check' | 'apply'> {
  check(ctx: TaskContext): Promise<DiffWith<D> | null> | DiffWith<D> | null;
  apply(ctx: TaskContext, diff: DiffWith<D>): Promise<string | void>;
}

export interface Handler {
  name: string;
  run(ctx: Omit<TaskContext, 'facts'>): Promise<void>;
}

/** A rolling role (Ansible's `serial`): hosts in batches, each back in service before the next. */
export interface Serial {
  /** Hosts at a time. */
  size: number;
  /** Rollout order (default: cluster order), e.g. workers first, the manager last. */
  order?(hosts: Host[]): Host[];
  /**
   * After a batch changed a host: wait (bounded) until it serves again, e.g. a worker
   * back in replication and caught up. Throw to stop the rollout.
   */
  settle?(ctx: Omit<TaskContext, 'facts'>): Promise<string | void>;
}

export interface Role {
  name: RoleName;
  tasks: Task[];
  handlers?: Handler[];
  serial?: Serial;
}

export interface TaskResult {
  host: string;
  role: string;
  task: string;
  status: TaskStatus;
  message: string;
  durationMs: number;
  /** With --diff: what changes (or would), in detail. */
  diff?: string;
}

export interface HostRecap {
  ok: number;
  changed: number;
  failed: number;
  skipped: number;
  unreachable: boolean;
}

export interface RunReport {
  check: boolean;
  /** The engine's part: connect, facts, roles. */
  durationMs: number;
  /** The provider's part (creating/starting nodes, or checking they run), set by apply. */
  providerMs?: number;
  hosts: Record<string, HostRecap>;
  results: TaskResult[];
  provider?: PlanItem[];
  /** The run log (.rampart/logs/...jsonl): every command sent, its result and duration. */
  log?: string;
  /** Where clients query (set by apply when the cluster has a gatekeeper): its HTTPS URL and the CA file to trust (null: its own certificate). */
  endpoint?: { url: string; ca: string | null };
  /** Where the live primary is (set by apply): cluster.yaml's manager unless a failover moved it. */
  primary?: { live: string; preferred: string; moved: boolean };
}

export interface SecretStore {
  /** Get a named secret, generating (and storing 0600) it on first use. */
  get(name: string): string;
}
