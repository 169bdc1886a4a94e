// The local provider: one LXC container per node on this machine, on the
// cluster's own bridge, fenced to its subnet and the package mirror.
//   host.ts     prerequisites (Linux, root, apt packages)
//   image.ts    the cached debootstrap base image
//   network.ts  bridge, nftables fence, ip_forward
//   cache.ts    the package cache (apt-cacher-ng) the nodes fetch through
//   lxc.ts      containers and SSH readiness
//   resource.ts the resource contract (check / apply): plan() checks, up() checks and applies
import { join } from 'node:path';
import { rm } from 'node:fs/promises';
import { ProviderError } from '../core/errors.ts';
import { ensureSshKey, ensureStateDir, readJson, statePaths, writeFileAtomic } from '../core/state.ts';
import type { Cluster, Host, NodeSpec, PlanItem, Provider, ProviderEvents } from '../core/types.ts';
import { APT_CACHE_CONF, APT_CACHE_CONF_PATH, cacheRoot, cacheState, CACHE_PORT, ensurePackageCache, releasePackageCache } from './local/cache.ts';
import { checkPlatform, ensureHostLimits, ensureHostPackages, hostPackages, lowHostLimits, missingHostPackages } from './local/host.ts';
import { aptSources, ensureBaseImage, ensureBaseRootfs, imageAge, imageExists, imagePath, pruneBaseLayers, staleImageNote } from './local/image.ts';
import {
  applyFence, bridgeExists, bridgeState, deleteBridge, deleteFence, enableIpForward, ensureBridge, fenceRuleset, fenceState,
  fenceTable, ipForward, parseSubnet, resolveMirror, restoreIpForward, type BridgeState, type Subnet,
} from './local/network.ts';
import {
  containerDrift, createContainer, destroyContainer, detachedVeth, ensureHostKey, forgetHostKey, listContainers, reattachVeth, sshBanner, sshLogin,
  startContainer, syncMirror, waitForSsh, type ContainerInfo, type ContainerTodo,
} from './local/lxc.ts';
import { converge, resource, type Resource, type Step } from './local/resource.ts';

/** What the provider remembers about the host between runs (.rampart/local.json, 0600). */
export interface LocalState {
  cluster: string;
  bridge: string;
  subnet: string;
  table: string;
  /** net.ipv4.ip_forward as found before this cluster's first up. */
  ipForwardFound?: string;
  mirrorAddrs?: string[];
}

const DEFAULT_SUITE = 'bookworm';
const SSH_TIMEOUT_MS = Number(process.env.RAMPART_SSH_TIMEOUT_MS ?? 90_000);

interface NodeTarget {
  node: NodeSpec;
  container: string;
  address: string;
}

export class LocalProvider implements Provider {
  readonly name = 'local' as const;
  private readonly subnet: Subnet;
  private readonly suite: string;
  private readonly table: string;

  constructor(private readonly cluster: Cluster) {
    const spec = cluster.provider.local;
    this.subnet = parseSubnet(spec.subnet);
    this.suite = spec.suite || DEFAULT_SUITE;
    this.table = fenceTable(cluster.name);
  }

  private get spec() {
    return this.cluster.provider.local;
  }

  /** apt sources for the nodes: through the cache on their gateway, or straight from the mirror. */
  private get sources(): string {
    const root = this.spec.packageCache ? cacheRoot(this.subnet.gateway, this.spec.mirror) : undefined;
    return aptSources(this.spec.mirror, this.suite, this.spec.checkValidUntil, root);
  }

  /** What the fence admits besides the subnet (null: nothing, the nodes use the cache) and the nodes' /etc/hosts pin. */
  private egress(mirrorAddrs: string[]): { fence: string[] | null; pin: string[]; detail: string } {
    return this.spec.packageCache
      ? { fence: null, pin: [], detail: `subnet only; packages through the cache on ${this.subnet.gateway}:${CACHE_PORT}` }
      : { fence: mirrorAddrs, pin: mirrorAddrs, detail: `subnet + ${this.spec.mirror} (${mirrorAddrs.join(', ')}) tcp 80/443` };
  }

  /** The nodes' apt options for the cache (removed again with packageCache: false). */
  private get aptConf() {
    return { path: APT_CACHE_CONF_PATH, text: this.spec.packageCache ? APT_CACHE_CONF : '' };
  }

  private get cacheReg() {
    return { table: this.table, gateway: this.subnet.gateway, mirror: this.spec.mirror };
  }

  private get user(): string {
    return this.cluster.adminUser || 'ubuntu';
  }

  private get statePath(): string {
    return join(statePaths(this.cluster.dir).dir, 'local.json');
  }

  /** Node SSH host keys, kept so a recreated node keeps its identity. */
  private get hostKeyDir(): string {
    return join(statePaths(this.cluster.dir).dir, 'local-hostkeys');
  }

  containerName(node: NodeSpec): string {
    return `${this.cluster.name}-${node.name}`;
  }

  /** Every node's container name and address (explicit `address` or .10 + index). */
  targets(): NodeTarget[] {
    const seen = new Map<string, string>();
    return this.cluster.nodes.map((node, i) => {
      const address = node.address ?? this.subnet.nodeAddress(i);
      if (!this.subnet.contains(address) || address === this.subnet.gateway) {
        throw new ProviderError(`node ${node.name}: address ${address} is not a node address in ${this.subnet.cidr}`,
          `use an address in ${this.subnet.cidr} other than ${this.subnet.gateway} (the host)`);
      }
      const other = seen.get(address);
      if (other) throw new ProviderError(`nodes ${other} and ${node.name} both get address ${address}`, 'give one of them another `address`');
      seen.set(address, node.name);
      return { node, container: this.containerName(node), address };
    });
  }

  private host(t: NodeTarget): Host {
    return {
      name: t.node.name,
      address: t.address,
      privateAddress: t.address,
      port: 22,
      user: this.user,
      sshFrom: `${this.subnet.gateway}/32`,
      node: t.node,
    };
  }

  private async containers(targets: NodeTarget[], lxcInstalled = true): Promise<Map<string, ContainerInfo>> {
    if (!lxcInstalled) return new Map();
    return listContainers(this.cluster.name, targets.map((t) => t.container));
  }

  /** A container is ours when its marker names this cluster; a same-named foreign one is an error. */
  private ours(info: ContainerInfo | undefined, t: NodeTarget): ContainerInfo | undefined {
    if (!info) return undefined;
    if (!info.marker || info.marker.cluster !== this.cluster.name) {
      throw new ProviderError(`a container named ${t.container} exists but was not created by rampart for cluster ${this.cluster.name}`,
        `remove it (lxc-destroy -f -n ${t.container}) or rename the cluster/node`);
    }
    return info;
  }

  private extras(found: Map<string, ContainerInfo>, targets: NodeTarget[]): string[] {
    const wanted = new Set(targets.map((t) => t.container));
    return [...found.values()].filter((c) => c.marker?.cluster === this.cluster.name && !wanted.has(c.name)).map((c) => c.name).sort();
  }

  // ---------------------------------------------------------------- resources

  /**
   * Every resource of the cluster on this host, each declared once (check:
   * reads only; apply: makes it so): host packages and limits, the base
   * image, the bridge, the fence, the package cache registration,
   * ip_forward and the record down restores it from, then one container per
   * node (created, configured, started, on the bridge). plan() checks them,
   * up() checks and applies them (providers/local/resource.ts).
   */
  private resources(events?: ProviderEvents, started = new Set<string>()): Step[] {
    const progress = (m: string) => events?.progress?.(m);
    const targets = this.targets();
    const packages = hostPackages(this.spec.packageCache);
    const bridgeLine = `${this.subnet.gateway}/${this.subnet.prefix}`;
    // What the later checks need to know of the earlier ones (the same in plan and up).
    let hostReady = false;
    let bridgeWas: BridgeState = 'ok';
    let fwdFound = '1';
    // The fence and the nodes' /etc/hosts pin come from the same lookup, so they always agree.
    let mirror: Promise<string[]> | undefined;
    const mirrorAddrs = () => (mirror ??= resolveMirror(this.spec.mirror));
    let base: Promise<{ path: string }> | undefined;
    // a new layer (the image was rebuilt): the earlier images' layers no node uses go
    const baseRootfs = () => (base ??= ensureBaseRootfs(this.suite, events).then(async (b) => {
      if (b.created) await pruneBaseLayers(this.suite, events);
      return b;
    }));
    const stateOf = (action: 'missing' | 'incomplete' | 'differs' | 'ok') => (action === 'ok' ? 'ok' : action === 'missing' ? 'create' : 'change');

    return [
      resource<string[]>({
        resource: 'host packages',
        check: async () => {
          const missing = await missingHostPackages(packages);
          hostReady = missing.length === 0;
          return hostReady ? { action: 'ok' } : { action: 'create', detail: `apt-get install ${missing.join(' ')}`, data: missing };
        },
        apply: async () => {
          const installed = await ensureHostPackages(events, packages);
          hostReady = true;
          return { detail: installed.join(' ') };
        },
      }),
      resource<undefined>({
        resource: 'host limits',
        check: async () => {
          const low = lowHostLimits();
          return low.length === 0
            ? { action: 'ok' }
            : { action: 'change', detail: low.map((l) => `${l.key.replaceAll('/', '.')} ${l.now} -> ${l.min}`).join(' '), data: undefined };
        },
        apply: async () => ({ detail: (await ensureHostLimits(events)).join(' ') }),
      }),
      resource<undefined>({
        resource: `bridge ${this.spec.bridge}`,
        check: async () => {
          bridgeWas = await bridgeState(this.spec.bridge, this.subnet);
          return bridgeWas === 'ok' ? { action: 'ok', detail: bridgeLine } : { action: stateOf(bridgeWas) as 'create', detail: bridgeLine, data: undefined };
        },
        apply: async () => {
          progress(`creating bridge ${this.spec.bridge} (${bridgeLine})`);
          await ensureBridge(this.spec.bridge, this.subnet);
        },
      }),
      resource<string>({
        resource: `fence inet ${this.table}`,
        check: async () => {
          const egress = this.egress(await mirrorAddrs());
          const ruleset = fenceRuleset(this.table, this.spec.bridge, this.subnet, egress.fence);
          const fence = hostReady ? await fenceState(this.table, ruleset) : 'missing';
          return fence === 'ok' ? { action: 'ok', detail: egress.detail } : { action: stateOf(fence) as 'create', detail: egress.detail, data: ruleset };
        },
        apply: async ({ detail, data }) => {
          progress(`writing nftables fence inet ${this.table} (${detail})`);
          await applyFence(this.table, data);
        },
      }),
      ...(this.spec.packageCache ? [resource<undefined>({
        resource: 'package cache',
        check: async () => {
          const detail = `apt-cacher-ng on ${this.subnet.gateway}:${CACHE_PORT} for ${this.spec.mirror}`;
          const cache = hostReady ? await cacheState(this.cacheReg) : 'missing';
          return cache === 'ok' ? { action: 'ok', detail } : { action: stateOf(cache) as 'create', detail, data: undefined };
        },
        apply: async ({ action }) => {
          progress(`${action === 'create' ? 'starting' : 'restarting'} the package cache (apt-cacher-ng) on ${this.subnet.gateway}:${CACHE_PORT}`);
          await ensurePackageCache(this.cacheReg);
        },
      })] : []),
      // After the cache (when it is on), so the image is built through it.
      resource<undefined>({
        resource: 'base image',
        check: async () => (imageExists(this.suite)
          ? { action: 'ok', detail: `${imagePath(this.suite)}, ${await imageAge(this.suite)} (nodes refresh its package lists once older than apt.cacheValidSeconds)` }
          : { action: 'create', detail: `debootstrap ${this.suite} and its updates -> ${imagePath(this.suite)} (about 90 s)`, data: undefined }),
        apply: async () => {
          // with the cache, debootstrap fetches through it on loopback (a rebuilt image downloads nothing cached)
          const root = this.spec.packageCache ? cacheRoot('127.0.0.1', this.spec.mirror) : undefined;
          await ensureBaseImage(this.spec.mirror, this.suite, events, this.spec.checkValidUntil, root, this.aptConf);
          return { detail: `${imagePath(this.suite)}, ${await imageAge(this.suite)}` };
        },
      }),
      // Forwarding only once the fence stands; what was found is recorded so down can put it back.
      resource<undefined>({
        resource: 'ip_forward',
        check: async () => {
          fwdFound = await ipForward();
          return fwdFound === '1' ? { action: 'ok', detail: 'on' } : { action: 'change', detail: 'turn on (restored by down)', data: undefined };
        },
        apply: async () => ({ detail: `turned on (was ${await enableIpForward()})` }),
      }),
      resource<LocalState>({
        resource: 'provider record .rampart/local.json',
        check: async () => {
          const prev = readJson<LocalState | null>(this.statePath, null);
          const want: LocalState = {
            cluster: this.cluster.name,
            bridge: this.spec.bridge,
            subnet: this.subnet.cidr,
            table: this.table,
            ipForwardFound: prev?.ipForwardFound ?? fwdFound,
            mirrorAddrs: await mirrorAddrs(),
          };
          if (prev && JSON.stringify(prev) === JSON.stringify(want)) return { action: 'ok', detail: 'bridge, fence, ip_forward as found' };
          return { action: prev ? 'change' : 'create', detail: 'bridge, fence, ip_forward as found', data: want };
        },
        apply: async ({ data }) => {
          ensureStateDir(this.cluster.dir);
          writeFileAtomic(this.statePath, JSON.stringify(data, null, 2) + '\n', 0o600);
        },
      }),
      async () => {
        const found = await this.containers(targets, hostReady);
        const extras = this.extras(found, targets).map((name) => resource<undefined>({
          resource: `container ${name}`,
          // no apply: up leaves it, down removes it
          check: async () => ({ action: 'delete', detail: 'not in cluster.yaml; removed by down', data: undefined }),
        }));
        return [...targets.map((t) => this.container(t, found, () => bridgeWas, baseRootfs, mirrorAddrs, progress, started)), ...extras];
      },
    ];
  }

  /** A node's container: created from the base image, its mirror pin and apt sources, on the bridge, started. */
  private container(
    t: NodeTarget, found: Map<string, ContainerInfo>, bridgeWas: () => BridgeState,
    baseRootfs: () => Promise<{ path: string }>, mirrorAddrs: () => Promise<string[]>, progress: (m: string) => void,
    started: Set<string>,
  ): Resource {
    const sources = this.sources;
    return resource<ContainerTodo>({
      resource: `container ${t.container}`,
      check: async () => {
        const info = this.ours(found.get(t.container), t);
        const usable = info?.marker?.complete && info.marker.address === t.address;
        const pin = this.egress(await mirrorAddrs()).pin;
        return containerDrift(t.address, {
          info,
          mirrorStale: usable ? await syncMirror(t.container, this.spec.mirror, pin, sources, false, this.aptConf) : false,
          // a bridge deleted under running nodes takes their veths with it
          vethDetached: usable && info.running && bridgeWas() !== 'ok' ? (await detachedVeth(t.container, this.spec.bridge)) !== null : false,
        });
      },
      apply: async ({ data }) => {
        const pin = this.egress(await mirrorAddrs()).pin;
        if (data.kind === 'create') {
          if (data.info) await destroyContainer(t.container);
          progress(`creating ${t.node.name} (${t.container}, ${t.address})`);
          const hostKeyPath = await ensureHostKey(this.hostKeyDir, t.container, t.node.name);
          await createContainer({
            name: t.container, cluster: this.cluster.name, node: t.node.name, hostname: t.node.name,
            address: t.address, prefix: this.subnet.prefix, gateway: this.subnet.gateway, bridge: this.spec.bridge,
            baseRootfs: (await baseRootfs()).path, adminUser: this.user, publicKey: ensureSshKey(this.cluster.dir).publicKey,
            mirror: this.spec.mirror, mirrorAddrs: pin, aptSources: sources, aptConf: this.aptConf, hostKeyPath,
          });
          progress(`starting ${t.node.name}`);
          await startContainer(t.container);
          started.add(t.container);
          return { newNode: t.node.name }; // a new machine: apply pins its new host key
        }
        if (data.sync) await syncMirror(t.container, this.spec.mirror, pin, sources, true, this.aptConf);
        if (data.reattach) await reattachVeth(t.container, this.spec.bridge);
        if (data.start) {
          await baseRootfs(); // the overlay's lower layer
          progress(`starting ${t.node.name}`);
          await startContainer(t.container);
          started.add(t.container);
        }
      },
    });
  }

  /** An info line when the base image's package lists are older than apt.cacheValidSeconds (nodes refresh them). */
  private async staleImage(): Promise<PlanItem[]> {
    const stale = await staleImageNote(this.suite, this.cluster.apt.cacheValidSeconds);
    return stale ? [{ action: 'ok', resource: 'base image package lists', detail: stale, info: true }] : [];
  }

  // ---------------------------------------------------------------- plan

  /** What up() would do: the same checks, nothing applied. */
  async plan(events?: ProviderEvents): Promise<PlanItem[]> {
    checkPlatform();
    return [...(await converge(this.resources(events), false)), ...(await this.staleImage())];
  }

  // ---------------------------------------------------------------- up

  async up(events?: ProviderEvents): Promise<{ hosts: Host[]; changes: PlanItem[] }> {
    checkPlatform();
    const targets = this.targets();
    const key = ensureSshKey(this.cluster.dir);
    const started = new Set<string>();
    const changes = [...(await converge(this.resources(events, started), true)), ...(await this.staleImage())];
    for (const c of changes) {
      if (c.action === 'delete') events?.progress?.(`${c.resource} is not in cluster.yaml: left alone (down removes it)`);
    }

    // Nodes just started: wait for sshd and one login; the others: one banner read.
    if (started.size) events?.progress?.(`waiting for SSH on ${started.size} node(s)`);
    await Promise.all(targets.map(async (t) => {
      if (started.has(t.container)) {
        await waitForSsh(t.node.name, t.address, SSH_TIMEOUT_MS);
        await sshLogin(t.node.name, t.address, this.user, key.path, SSH_TIMEOUT_MS);
      } else if (!(await sshBanner(t.address))) {
        await waitForSsh(t.node.name, t.address, SSH_TIMEOUT_MS);
      }
    }));
    return { hosts: targets.map((t) => this.host(t)), changes };
  }

  // ---------------------------------------------------------------- describe

  async describe(): Promise<Host[]> {
    checkPlatform();
    const targets = this.targets();
    const installed = (await missingHostPackages()).length === 0;
    const found = await this.containers(targets, installed);
    return targets
      .filter((t) => {
        const c = found.get(t.container);
        return c?.running && c.marker?.cluster === this.cluster.name && c.marker.complete;
      })
      .map((t) => this.host(t));
  }

  // ---------------------------------------------------------------- down

  async down(events?: ProviderEvents): Promise<PlanItem[]> {
    checkPlatform();
    const progress = (m: string) => events?.progress?.(m);
    const items: PlanItem[] = [];
    const installed = (await missingHostPackages()).length === 0;
    const targets = this.cluster.nodes.map((node) => ({ node, container: this.containerName(node), address: '' }));
    const found = await this.containers(targets, installed);
    const mine = [...found.values()].filter((c) => c.marker?.cluster === this.cluster.name).map((c) => c.name).sort();
    if (mine.length) progress(`destroying ${mine.length} container(s): ${mine.join(' ')}`);
    await Promise.all(mine.map(async (name) => {
      await destroyContainer(name);
      await forgetHostKey(this.hostKeyDir, name);
      items.push({ action: 'delete', resource: `container ${name}` });
    }));
    items.sort((a, b) => a.resource.localeCompare(b.resource));
    // the image kept; a layer of an earlier image that these nodes were the last to use goes
    for (const p of await pruneBaseLayers(this.suite, events)) items.push({ action: 'delete', resource: 'base layer', detail: p });

    if (installed && (await deleteFence(this.table))) items.push({ action: 'delete', resource: `fence inet ${this.table}` });
    if (await bridgeExists(this.spec.bridge)) {
      progress(`deleting bridge ${this.spec.bridge}`);
      await deleteBridge(this.spec.bridge);
      items.push({ action: 'delete', resource: `bridge ${this.spec.bridge}` });
    }
    // the cache's files stay (a rebuilt cluster downloads nothing); the daemon stops with the last cluster
    const cache = await releasePackageCache(this.table);
    if (cache) items.push({ action: cache === 'stopped' ? 'delete' : 'change', resource: 'package cache', detail: cache === 'stopped' ? 'daemon stopped (last cluster); cached files kept' : 'serves the other clusters only' });
    const state = readJson<LocalState | null>(this.statePath, null);
    const restored = installed ? await restoreIpForward(this.table, state?.ipForwardFound) : null;
    if (restored !== null) items.push({ action: 'change', resource: 'ip_forward', detail: `restored to ${restored}` });
    if (state) await rm(this.statePath, { force: true });
    return items;
  }
}
