// The local provider: one LXC container per node on this machine, on the
// cluster's own bridge, fenced to its subnet and the package mirror.
//   host.ts     prerequisites (Linux, root, apt packages)
//   image.ts    the cached debootstrap base image
//   network.ts  bridge, nftables fence, ip_forward
//   cache.ts    the package cache (apt-cacher-ng) the nodes fetch through
//   lxc.ts      containers and SSH readiness
import { join } from 'node:path';
import { rm } from 'node:fs/promises';
import { ProviderError } from '../core/errors.ts';
import { ensureSshKey, ensureStateDir, readJson, statePaths, writeFileAtomic } from '../core/state.ts';
import type { Cluster, Host, NodeSpec, PlanItem, Provider, ProviderEvents } from '../core/types.ts';
import { APT_CACHE_CONF, APT_CACHE_CONF_PATH, cacheRoot, cacheState, CACHE_PORT, ensurePackageCache, releasePackageCache } from './local/cache.ts';
import { checkPlatform, ensureHostLimits, ensureHostPackages, hostPackages, missingHostPackages } from './local/host.ts';
import { aptSources, ensureBaseImage, ensureBaseRootfs, imageAge, imageExists, imagePath, staleImageNote } from './local/image.ts';
import {
  applyFence, bridgeExists, bridgeState, deleteBridge, deleteFence, enableIpForward, ensureBridge, fenceRuleset, fenceState,
  fenceTable, ipForward, parseSubnet, resolveMirror, restoreIpForward, type Subnet,
} from './local/network.ts';
import {
  createContainer, destroyContainer, ensureHostKey, forgetHostKey, listContainers, reattachVeth, sshBanner, sshLogin, startContainer, syncMirror, waitForSsh,
  type ContainerInfo,
} from './local/lxc.ts';

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

  // ---------------------------------------------------------------- plan

  async plan(_events?: ProviderEvents): Promise<PlanItem[]> {
    checkPlatform();
    const targets = this.targets();
    const items: PlanItem[] = [];
    const missing = await missingHostPackages(hostPackages(this.spec.packageCache));
    const installed = missing.length === 0;
    items.push(installed ? { action: 'ok', resource: 'host packages' } : { action: 'create', resource: 'host packages', detail: `apt-get install ${missing.join(' ')}` });
    items.push(imageExists(this.suite)
      ? { action: 'ok', resource: 'base image', detail: `${imagePath(this.suite)}, ${await imageAge(this.suite)} (nodes refresh its package lists once older than apt.cacheValidSeconds)` }
      : { action: 'create', resource: 'base image', detail: `debootstrap ${this.suite} -> ${imagePath(this.suite)} (about 70 s)` });
    const staleImage = await staleImageNote(this.suite, this.cluster.apt.cacheValidSeconds);
    if (staleImage) items.push({ action: 'ok', resource: 'base image package lists', detail: staleImage, info: true });

    const bridge = await bridgeState(this.spec.bridge, this.subnet);
    items.push({ action: bridge === 'ok' ? 'ok' : bridge === 'missing' ? 'create' : 'change', resource: `bridge ${this.spec.bridge}`, detail: `${this.subnet.gateway}/${this.subnet.prefix}` });
    const mirrorAddrs = await resolveMirror(this.spec.mirror);
    const egress = this.egress(mirrorAddrs);
    const ruleset = fenceRuleset(this.table, this.spec.bridge, this.subnet, egress.fence);
    const fence = installed ? await fenceState(this.table, ruleset) : 'missing';
    items.push({ action: fence === 'ok' ? 'ok' : fence === 'missing' ? 'create' : 'change', resource: `fence inet ${this.table}`, detail: egress.detail });
    if (this.spec.packageCache) {
      const cache = installed ? await cacheState(this.cacheReg) : 'missing';
      items.push({ action: cache === 'ok' ? 'ok' : cache === 'missing' ? 'create' : 'change', resource: 'package cache', detail: `apt-cacher-ng on ${this.subnet.gateway}:${CACHE_PORT} for ${this.spec.mirror}` });
    }

    const fwd = await ipForward();
    items.push({ action: fwd === '1' ? 'ok' : 'change', resource: 'ip_forward', detail: fwd === '1' ? 'on' : 'turn on (restored by down)' });

    const found = await this.containers(targets, installed);
    for (const t of targets) {
      const c = this.ours(found.get(t.container), t);
      const resource = `container ${t.container}`;
      if (!c || !c.marker?.complete) items.push({ action: 'create', resource, detail: `${t.address}, then start` });
      else if (c.marker.address !== t.address) items.push({ action: 'change', resource, detail: `recreate: address ${c.marker.address} -> ${t.address}` });
      else if (!c.running) items.push({ action: 'change', resource, detail: 'start' });
      else if (await syncMirror(t.container, this.spec.mirror, egress.pin, this.sources, false, this.aptConf)) {
        items.push({ action: 'change', resource, detail: 'rewrite mirror pin (/etc/hosts) and apt sources' });
      } else items.push({ action: 'ok', resource, detail: t.address });
    }
    for (const name of this.extras(found, targets)) {
      items.push({ action: 'delete', resource: `container ${name}`, detail: 'not in cluster.yaml; removed by down' });
    }
    return items;
  }

  // ---------------------------------------------------------------- up

  async up(events?: ProviderEvents): Promise<{ hosts: Host[]; changes: PlanItem[] }> {
    checkPlatform();
    const targets = this.targets();
    const progress = (m: string) => events?.progress?.(m);
    const changes: PlanItem[] = [];

    const installed = await ensureHostPackages(events, hostPackages(this.spec.packageCache));
    const raised = await ensureHostLimits(events);
    if (raised.length) changes.push({ action: 'change', resource: 'host limits', detail: raised.join(' ') });
    changes.push(installed.length ? { action: 'create', resource: 'host packages', detail: installed.join(' ') } : { action: 'ok', resource: 'host packages' });

    const bridge = await bridgeState(this.spec.bridge, this.subnet);
    if (bridge !== 'ok') {
      progress(`creating bridge ${this.spec.bridge} (${this.subnet.gateway}/${this.subnet.prefix})`);
      await ensureBridge(this.spec.bridge, this.subnet);
    }
    changes.push({ action: bridge === 'ok' ? 'ok' : bridge === 'missing' ? 'create' : 'change', resource: `bridge ${this.spec.bridge}`, detail: `${this.subnet.gateway}/${this.subnet.prefix}` });

    // The fence and the nodes' /etc/hosts pin are rewritten from the same lookup, so they always agree.
    const mirrorAddrs = await resolveMirror(this.spec.mirror);
    const egress = this.egress(mirrorAddrs);
    const ruleset = fenceRuleset(this.table, this.spec.bridge, this.subnet, egress.fence);
    const fence = await fenceState(this.table, ruleset);
    if (fence !== 'ok') {
      progress(`writing nftables fence inet ${this.table} (${egress.detail})`);
      await applyFence(this.table, ruleset);
    }
    changes.push({ action: fence === 'ok' ? 'ok' : fence === 'missing' ? 'create' : 'change', resource: `fence inet ${this.table}`, detail: egress.detail });
    if (this.spec.packageCache) {
      const cache = await ensurePackageCache(this.cacheReg);
      if (cache !== 'ok') progress(`${cache === 'missing' ? 'starting' : 'restarting'} the package cache (apt-cacher-ng) on ${this.subnet.gateway}:${CACHE_PORT}`);
      changes.push({ action: cache === 'ok' ? 'ok' : cache === 'missing' ? 'create' : 'change', resource: 'package cache', detail: `apt-cacher-ng on ${this.subnet.gateway}:${CACHE_PORT} for ${this.spec.mirror}` });
    }

    // After the cache: with it, debootstrap fetches through it on loopback (a rebuilt image downloads nothing cached).
    const imageRoot = this.spec.packageCache ? cacheRoot('127.0.0.1', this.spec.mirror) : undefined;
    const built = await ensureBaseImage(this.spec.mirror, this.suite, events, this.spec.checkValidUntil, imageRoot);
    changes.push({ action: built ? 'create' : 'ok', resource: 'base image', detail: `${imagePath(this.suite)}, ${await imageAge(this.suite)}` });
    const stale = await staleImageNote(this.suite, this.cluster.apt.cacheValidSeconds);
    if (stale) changes.push({ action: 'ok', resource: 'base image package lists', detail: stale, info: true });
    const base = await ensureBaseRootfs(this.suite, events);

    // Forwarding only once the fence stands; what was found is recorded so down can put it back.
    ensureStateDir(this.cluster.dir);
    const prev = readJson<LocalState | null>(this.statePath, null);
    const fwdFound = await enableIpForward();
    const state: LocalState = {
      cluster: this.cluster.name,
      bridge: this.spec.bridge,
      subnet: this.subnet.cidr,
      table: this.table,
      ipForwardFound: prev?.ipForwardFound ?? fwdFound,
      mirrorAddrs,
    };
    writeFileAtomic(this.statePath, JSON.stringify(state, null, 2) + '\n', 0o600);
    changes.push({ action: fwdFound === '1' ? 'ok' : 'change', resource: 'ip_forward', detail: fwdFound === '1' ? 'on' : `turned on (was ${fwdFound})` });

    const key = ensureSshKey(this.cluster.dir);
    const found = await this.containers(targets);
    for (const name of this.extras(found, targets)) progress(`container ${name} is not in cluster.yaml: left alone (down removes it)`);

    const sources = this.sources;
    const started = new Set<string>();
    const results = await Promise.all(targets.map(async (t): Promise<PlanItem> => {
      const resource = `container ${t.container}`;
      const c = this.ours(found.get(t.container), t);
      let action: PlanItem['action'] = 'ok';
      let detail = t.address;
      let newNode: string | undefined;
      if (!c || !c.marker?.complete || c.marker.address !== t.address) {
        if (c) await destroyContainer(t.container);
        progress(`creating ${t.node.name} (${t.container}, ${t.address})`);
        const hostKeyPath = await ensureHostKey(this.hostKeyDir, t.container, t.node.name);
        await createContainer({
          name: t.container, cluster: this.cluster.name, node: t.node.name, hostname: t.node.name,
          address: t.address, prefix: this.subnet.prefix, gateway: this.subnet.gateway, bridge: this.spec.bridge,
          baseRootfs: base.path, adminUser: this.user, publicKey: key.publicKey,
          mirror: this.spec.mirror, mirrorAddrs: egress.pin, aptSources: sources, aptConf: this.aptConf, hostKeyPath,
        });
        action = c ? 'change' : 'create';
        newNode = t.node.name; // a new machine: apply pins its new host key
        detail = c ? `recreated (${c.marker?.complete ? 'address changed' : 'incomplete'}), ${t.address}` : t.address;
        progress(`starting ${t.node.name}`);
        await startContainer(t.container);
        started.add(t.container);
      } else {
        if (await syncMirror(t.container, this.spec.mirror, egress.pin, sources, true, this.aptConf)) {
          action = 'change';
          detail = `mirror pin (/etc/hosts) or apt sources updated`;
        }
        // A bridge deleted under running nodes takes their veths with it.
        if (c.running && bridge !== 'ok' && (await reattachVeth(t.container, this.spec.bridge))) {
          action = 'change';
          detail = `re-attached to ${this.spec.bridge}${detail === t.address ? '' : `; ${detail}`}`;
        }
        if (!c.running) {
          progress(`starting ${t.node.name}`);
          await startContainer(t.container);
          started.add(t.container);
          action = 'change';
          detail = `started${detail === t.address ? '' : `; ${detail}`}`;
        }
      }
      return newNode ? { action, resource, detail, newNode } : { action, resource, detail };
    }));
    changes.push(...results);

    if (started.size) progress(`waiting for SSH on ${started.size} node(s)`);
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
