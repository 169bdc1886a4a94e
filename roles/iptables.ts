// iptables: the node's filter table from cluster.yaml's security section
// (IPv4; IPv6 closed but for ICMPv6 and replies). Compared with the live
// ruleset (iptables-save, normalised) and loaded atomically with
// iptables-restore only when it differs (validated first); persisted in
// /etc/iptables/rules.v4 + rules.v6, restored at boot by a oneshot unit.
import { fileFactCommand, shq } from '../core/ssh.ts';
import { HostError } from '../core/errors.ts';
import { defineRole } from '../core/roles.ts';
import type { Fact, TaskContext, TaskWith } from '../core/types.ts';
import {
  egressOf, FIREWALL_UNIT, FIREWALL_UNIT_PATH, FIREWALL_UNIT_TEXT, firewallRules, firewallRules6, LIVE_RULES6_FACT, LIVE_RULES_FACT,
  MIRROR_FACT, normaliseRuleset, parseMirrorFact, RULES6_PATH, RULES_PATH, rulesetDelta, sameRuleset,
} from './lib/firewall.ts';
import { unifiedDiff } from '../core/diff.ts';
import { staleFiles, type WantedFile } from './lib/ops.ts';

type FactCtx = Omit<TaskContext, 'facts'>;

/** The mirror lookup runs only where apt's traffic must be let through. */
function mirrorFacts(ctx: FactCtx): Record<string, string> {
  return egressOf(ctx.cluster, ctx.host)?.mirror ? { mirror: MIRROR_FACT } : {};
}

function desired(ctx: TaskContext): string {
  const egress = egressOf(ctx.cluster, ctx.host);
  const mirror = egress?.mirror ? parseMirrorFact(ctx.facts.mirror?.stdout ?? '') : undefined;
  if (egress?.mirror && mirror && mirror.addresses.length === 0 && !mirror.endpoints?.length) {
    throw new HostError(`${ctx.host.name}: no address found for the package mirror named in the node's apt sources (egress mirror: true)`,
      'check /etc/apt/sources.list* on the node and that it resolves the mirror (getent ahostsv4 <mirror>)');
  }
  return firewallRules(ctx.cluster, ctx.host, ctx.hosts, mirror);
}

function deltaText(want: string, have: string): string {
  const d = rulesetDelta(want, have);
  const parts = [d.missing && `${d.missing} rule(s) missing`, d.extra && `${d.extra} extra`, d.policies.length && `policy ${d.policies.join(', ')}`];
  return parts.filter(Boolean).join(', ') || 'order differs';
}

interface Load {
  v4?: string;
  v6?: string;
}

const live: TaskWith<Load> = {
  name: 'firewall rules',
  facts: (ctx) => ({ live: LIVE_RULES_FACT, live6: LIVE_RULES6_FACT, ...mirrorFacts(ctx) }),
  check: (ctx) => {
    const want4 = desired(ctx);
    const want6 = firewallRules6(ctx.cluster, ctx.host);
    const have4 = (ctx.facts.live as Fact).stdout;
    const have6 = (ctx.facts.live6 as Fact).stdout;
    const load: Load = {};
    const msg: string[] = [];
    if (!sameRuleset(want4, have4)) {
      load.v4 = want4;
      msg.push(`IPv4: ${deltaText(want4, have4)}`);
    }
    if (!sameRuleset(want6, have6)) {
      load.v6 = want6;
      msg.push(`IPv6: ${deltaText(want6, have6)}`);
    }
    if (!msg.length) return null;
    // --diff: the rule lines added and removed, in iptables-save's normalised spelling
    const detail = async () => (await Promise.all([
      load.v4 ? unifiedDiff('iptables filter (IPv4)', `${normaliseRuleset(have4)}\n`, `${normaliseRuleset(want4)}\n`) : '',
      load.v6 ? unifiedDiff('ip6tables filter (IPv6)', `${normaliseRuleset(have6)}\n`, `${normaliseRuleset(want6)}\n`) : '',
    ])).join('');
    return { message: `load ruleset (${msg.join('; ')})`, data: load, detail };
  },
  apply: async ({ conn }, diff) => {
    const load = diff.data;
    // test the exact text first, then swap the whole table in one transaction
    const restore = (tool: string) => `set -e; t=$(mktemp); trap 'rm -f "$t"' EXIT; cat > "$t"; ${tool} --test "$t"; ${tool} "$t"`;
    if (load.v4) await conn.exec(restore('iptables-restore'), { stdin: load.v4 });
    if (load.v6) await conn.exec(restore('ip6tables-restore'), { stdin: load.v6 });
  },
};

/** A persisted file: which fact read it and how the diff names it. */
interface Persisted extends WantedFile {
  fact: 'rules' | 'rules6' | 'unit';
  label: string;
}

const persist: TaskWith<Persisted[]> = {
  name: 'firewall persistence',
  facts: (ctx) => ({
    rules: fileFactCommand(RULES_PATH),
    rules6: fileFactCommand(RULES6_PATH),
    unit: fileFactCommand(FIREWALL_UNIT_PATH),
    enabled: `systemctl is-enabled ${FIREWALL_UNIT}`,
    ...mirrorFacts(ctx),
  }),
  check: (ctx) => {
    const stale = staleFiles<Persisted>([
      { fact: 'rules', label: RULES_PATH, path: RULES_PATH, content: desired(ctx), mode: '0600', owner: 'root:root' },
      { fact: 'rules6', label: RULES6_PATH, path: RULES6_PATH, content: firewallRules6(ctx.cluster, ctx.host), mode: '0600', owner: 'root:root' },
      { fact: 'unit', label: FIREWALL_UNIT, path: FIREWALL_UNIT_PATH, content: FIREWALL_UNIT_TEXT, mode: '0644', owner: 'root:root' },
    ], (f) => ctx.facts[f.fact].stdout);
    const todo = [...stale.map((f) => f.label), ...(ctx.facts.enabled.stdout.trim() === 'enabled' ? [] : ['enable'])];
    return todo.length ? { message: `write ${todo.join(', ')}`, data: stale } : null;
  },
  apply: async ({ conn }, diff) => {
    for (const f of diff.data) await conn.writeFile(f.path, f.content, { mode: f.mode, owner: f.owner });
    // enable only (no start): the live table is the other task's job
    await conn.exec(`systemctl daemon-reload && systemctl enable ${shq(FIREWALL_UNIT)} 2>&1`);
  },
};

export const iptablesRole = defineRole({
  name: 'iptables',
  // right after base: every declared flow is open before a later role uses it
  // (a new worker replicates in the same apply; no replication link is cut by a first load)
  after: ['base'],
  tasks: [live, persist],
});
