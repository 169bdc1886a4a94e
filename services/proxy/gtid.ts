// GTID sets of both dialects and the promotion choice, as pure functions.
// MySQL: `uuid:1-5:7,uuid2:1-3` (origin = the server_uuid that wrote them,
// a set of intervals). MariaDB: `domain-server_id-seq,...` (per replication
// domain the last transaction; with gtid_strict_mode every earlier seq of the
// domain is there too, so a domain reads as the interval 1..seq, and its
// origin is the server_id that wrote that last transaction).

export type GtidDialect = 'mariadb' | 'mysql';

export interface GtidSet {
  dialect: GtidDialect;
  /** MySQL: uuid -> intervals; MariaDB: domain -> [[1, seq]]. */
  intervals: Map<string, [number, number][]>;
  /** Who wrote each key's transactions: MySQL the uuid itself; MariaDB the server_id of the domain's last GTID. */
  origin: Map<string, string>;
}

export class GtidParseError extends Error {}

export function parseGtidSet(dialect: GtidDialect, text: string): GtidSet {
  const set: GtidSet = { dialect, intervals: new Map(), origin: new Map() };
  const clean = text.replace(/\s+/g, '');
  if (!clean) return set;
  for (const part of clean.split(',')) {
    if (dialect === 'mariadb') {
      const m = /^(\d+)-(\d+)-(\d+)$/.exec(part);
      if (!m) throw new GtidParseError(`not a MariaDB GTID: ${part}`);
      const seq = Number(m[3]);
      const prev = set.intervals.get(m[1])?.[0]?.[1] ?? 0;
      if (seq >= prev) {
        set.intervals.set(m[1], [[1, seq]]);
        set.origin.set(m[1], m[2]);
      }
    } else {
      const [uuid, ...ranges] = part.split(':');
      if (!/^[0-9a-fA-F-]{36}$/.test(uuid) || ranges.length === 0) throw new GtidParseError(`not a MySQL GTID set: ${part}`);
      const list = set.intervals.get(uuid.toLowerCase()) ?? [];
      for (const r of ranges) {
        const m = /^(\d+)(?:-(\d+))?$/.exec(r);
        if (!m) throw new GtidParseError(`not a MySQL GTID interval: ${r}`);
        list.push([Number(m[1]), Number(m[2] ?? m[1])]);
      }
      set.intervals.set(uuid.toLowerCase(), normalise(list));
      set.origin.set(uuid.toLowerCase(), uuid.toLowerCase());
    }
  }
  return set;
}

function normalise(list: [number, number][]): [number, number][] {
  const sorted = [...list].sort((a, b) => a[0] - b[0]);
  const out: [number, number][] = [];
  for (const [a, b] of sorted) {
    const last = out[out.length - 1];
    if (last && a <= last[1] + 1) last[1] = Math.max(last[1], b);
    else out.push([a, b]);
  }
  return out;
}

/** a ∪ b (MariaDB: per domain the later position). */
export function union(a: GtidSet, b: GtidSet): GtidSet {
  const out: GtidSet = { dialect: a.dialect, intervals: new Map(), origin: new Map() };
  for (const s of [a, b]) {
    for (const [k, iv] of s.intervals) {
      if (a.dialect === 'mariadb') {
        const have = out.intervals.get(k)?.[0]?.[1] ?? -1;
        if (iv[0][1] > have) {
          out.intervals.set(k, iv.map((x) => [...x] as [number, number]));
          out.origin.set(k, s.origin.get(k)!);
        }
      } else {
        out.intervals.set(k, normalise([...(out.intervals.get(k) ?? []), ...iv.map((x) => [...x] as [number, number])]));
        out.origin.set(k, s.origin.get(k)!);
      }
    }
  }
  return out;
}

/** Number of transactions in the set. */
export function count(s: GtidSet): number {
  let n = 0;
  for (const iv of s.intervals.values()) for (const [a, b] of iv) n += b - a + 1;
  return n;
}

/** Transactions of `a` not in `b`, as a set. */
export function minus(a: GtidSet, b: GtidSet): GtidSet {
  const out: GtidSet = { dialect: a.dialect, intervals: new Map(), origin: new Map() };
  for (const [k, iv] of a.intervals) {
    let rest = iv.map((x) => [...x] as [number, number]);
    for (const [c, d] of b.intervals.get(k) ?? []) {
      rest = rest.flatMap(([x, y]): [number, number][] => {
        if (d < x || c > y) return [[x, y]];
        const parts: [number, number][] = [];
        if (c > x) parts.push([x, c - 1]);
        if (d < y) parts.push([d + 1, y]);
        return parts;
      });
    }
    if (rest.length) {
      out.intervals.set(k, rest);
      out.origin.set(k, a.origin.get(k)!);
    }
  }
  return out;
}

export function contains(a: GtidSet, b: GtidSet): boolean {
  return count(minus(b, a)) === 0;
}

export function format(s: GtidSet): string {
  const parts: string[] = [];
  for (const [k, iv] of [...s.intervals].sort(([x], [y]) => x.localeCompare(y))) {
    if (s.dialect === 'mariadb') parts.push(`${k}-${s.origin.get(k)}-${iv[0][1]}`);
    else parts.push(`${k}:${iv.map(([a, b]) => (a === b ? `${a}` : `${a}-${b}`)).join(':')}`);
  }
  return parts.join(',');
}

/** What the proxy read from one worker to decide a promotion. */
export interface Candidate {
  name: string;
  /** Applied here (gtid_executed / gtid_current_pos). */
  executed: GtidSet;
  /** Received but maybe not applied yet (Retrieved_Gtid_Set / Gtid_IO_Pos): a semi-sync acknowledgement means received. */
  received: GtidSet;
  /** This server's own origin (server_uuid / server_id): a GTID of it on a replica is a local, errant write. */
  self: string;
  /** The replica's SQL thread stopped on an error: its data is not trustworthy. */
  broken?: string;
}

export type Promotion =
  | {
    ok: true;
    winner: string;
    /** The winner's position once it applied what it received. */
    position: string;
    /** Candidates not chosen, with why (errant, broken, behind). */
    passedOver: { name: string; why: string }[];
  }
  | { ok: false; reason: string };

/**
 * The errant transactions of a candidate: those whose origin is not one of
 * the primaries'. `primaries`: the origins seen on the primary while it was
 * alive (its own and those it replicated from earlier primaries); when unknown
 * (empty), every origin except the candidates' own counts as a primary's.
 */
export function errant(c: Candidate, primaries: Set<string>, all: Candidate[]): GtidSet {
  const own = new Set(all.map((x) => x.self));
  const isPrimary = (origin: string) => (primaries.size ? primaries.has(origin) : !own.has(origin));
  const out: GtidSet = { dialect: c.executed.dialect, intervals: new Map(), origin: new Map() };
  const have = union(c.executed, c.received);
  for (const [k, iv] of have.intervals) {
    const origin = have.origin.get(k)!;
    if (!isPrimary(origin)) {
      out.intervals.set(k, iv);
      out.origin.set(k, origin);
    }
  }
  return out;
}

/**
 * Which worker to promote: never one with a broken replica or errant
 * transactions (promoting it would push them onto every other node); among the
 * rest the most advanced by what it received (a set that holds every other's
 * wins; else the most transactions), ties broken by `order` (cluster.yaml's
 * order of the workers) then by name. No clean candidate: no promotion, the
 * reason says who needs a human.
 */
export function choosePromotion(candidates: Candidate[], primaries: Set<string>, order: string[] = []): Promotion {
  if (candidates.length === 0) return { ok: false, reason: 'no worker answers: nothing to promote' };
  const passedOver: { name: string; why: string }[] = [];
  const clean: Candidate[] = [];
  for (const c of candidates) {
    if (c.broken) {
      passedOver.push({ name: c.name, why: `replica broken: ${c.broken}` });
      continue;
    }
    const e = errant(c, primaries, candidates);
    if (count(e) > 0) {
      passedOver.push({ name: c.name, why: `errant transactions ${format(e)} (written on it, not by a primary)` });
      continue;
    }
    clean.push(c);
  }
  if (clean.length === 0) return { ok: false, reason: `no worker can be promoted safely: ${passedOver.map((p) => `${p.name}: ${p.why}`).join('; ')}` };
  const rank = (n: string) => {
    const i = order.indexOf(n);
    return i < 0 ? Number.MAX_SAFE_INTEGER : i;
  };
  const have = (c: Candidate) => union(c.executed, c.received);
  const sorted = [...clean].sort((a, b) => {
    const ha = have(a);
    const hb = have(b);
    const aHoldsB = contains(ha, hb);
    const bHoldsA = contains(hb, ha);
    if (aHoldsB && !bHoldsA) return -1;
    if (bHoldsA && !aHoldsB) return 1;
    return count(hb) - count(ha) || rank(a.name) - rank(b.name) || a.name.localeCompare(b.name);
  });
  const winner = sorted[0];
  const wHave = have(winner);
  for (const c of sorted.slice(1)) {
    const missing = minus(have(c), wHave);
    passedOver.push({ name: c.name, why: count(missing) ? `diverged: has ${format(missing)} the winner lacks` : 'not more advanced' });
  }
  return { ok: true, winner: winner.name, position: format(wHave), passedOver };
}
