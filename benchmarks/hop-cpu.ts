// CPU per request of ONE hop against a fixed upstream, loopback only: the
// trusted host (rampart's relay, from its bundle as the nodes run it) and
// the bare hop (benchmarks/bare-hop.ts) each sit in front of the same
// upstream (a Bun.serve answering a fixed proxy-shaped body), loaded at
// `--concurrency` for `--seconds`; runs alternate `--runs` times and the
// medians are printed. The figure that matters is the hop's CPU per request
// (user + system, /proc), which other load on the machine disturbs least.
//
//   node_modules/.bin/bun benchmarks/hop-cpu.ts [--seconds 3] [--runs 5] [--concurrency 64] [--profile DIR]
//
// --profile DIR: the rampart hop runs under `bun --cpu-prof-md` (its profile in DIR at exit).

import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { serviceBundle } from '../roles/lib/artifact.ts';
import { CREDENTIAL_HEADER, ROUTE_HEADER } from '../services/contract.ts';
import { freePort, secret } from '../test/support/mariadb.ts';

function flag(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
}

function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
}

function rssMb(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : 0;
}

async function waitPort(port: number): Promise<void> {
  for (let i = 0; i < 200; i++) {
    try {
      await fetch(`http://127.0.0.1:${port}/health`);
      return;
    } catch {
      await Bun.sleep(25);
    }
  }
  throw new Error(`nothing listening on ${port}`);
}

const median = (v: number[]): number => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];

async function main(): Promise<void> {
  const SECONDS = flag('seconds', 3);
  const RUNS = flag('runs', 5);
  const CONCURRENCY = flag('concurrency', 64);
  const bun = resolve(import.meta.dir, '../node_modules/.bin/bun');
  const dir = mkdtempSync(join(tmpdir(), 'hop-cpu-'));
  const children: ChildProcess[] = [];
  const start = (args: string[], env: Record<string, string>, out = 'ignore'): ChildProcess => {
    const c = spawn(bun, args, { env: { ...process.env, ...env }, stdio: ['ignore', out === 'ignore' ? 'ignore' : openSync(out, 'w'), 'inherit'] });
    children.push(c);
    return c;
  };
  try {
    const upPort = await freePort();
    start([import.meta.path], { HOP_CPU_UPSTREAM: String(upPort) });
    await waitPort(upPort);
    const upstream = `http://127.0.0.1:${upPort}`;

    const cred = secret();
    const thPort = await freePort();
    const config = join(dir, 'trustedhost.json');
    writeFileSync(config, JSON.stringify({
      service: 'trustedhost', listen: { host: '127.0.0.1', port: thPort }, maxBodyBytes: 65536,
      policy: { statements: ['SELECT', 'INSERT', 'UPDATE', 'DELETE'], schemas: ['bench'] },
      credential: cred, upstream: { url: upstream, credential: secret() },
    }));
    chmodSync(config, 0o600);
    const bundle = (await serviceBundle(dir, 'trustedhost')).path;
    const profDir = process.argv.includes('--profile') ? process.argv[process.argv.indexOf('--profile') + 1] : '';
    const prof = profDir ? ['--cpu-prof-md', `--cpu-prof-dir=${profDir}`, '--cpu-prof-interval=200'] : [];
    const rampart = start([...prof, bundle], { RAMPART_SERVICE_CONFIG: config }, join(dir, 'trustedhost.log'));
    const barePort = await freePort();
    const bare = start([resolve(import.meta.dir, 'bare-hop.ts')], { BARE_PORT: String(barePort), BARE_SECRET: cred, BARE_NEXT: upstream });
    await waitPort(thPort);
    await waitPort(barePort);

    const sql = 'SELECT id, name, qty FROM items WHERE id = ?';
    const load = async (port: number, header: string, seconds: number): Promise<number> => {
      let n = 0;
      const stopAt = performance.now() + seconds * 1000;
      await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
        while (performance.now() < stopAt) {
          const res = await fetch(`http://127.0.0.1:${port}/query`, {
            method: 'POST',
            headers: { 'content-type': 'application/json', [header]: cred },
            body: JSON.stringify({ sql, params: [1 + (n % 1000)], request_id: `r${n}` }),
          });
          await res.text();
          if (res.status !== 200) throw new Error(`port ${port}: ${res.status}`);
          n++;
        }
      }));
      return n;
    };
    const targets = [
      { name: 'rampart trustedhost', port: thPort, header: CREDENTIAL_HEADER, pid: rampart.pid ?? 0, us: [] as number[], rps: [] as number[] },
      { name: 'bare hop', port: barePort, header: 'x-hop', pid: bare.pid ?? 0, us: [] as number[], rps: [] as number[] },
    ];
    for (const t of targets) await load(t.port, t.header, 1); // warm-up
    for (let r = 0; r < RUNS; r++) {
      for (const t of r % 2 ? [...targets].reverse() : targets) {
        const c0 = cpuSeconds(t.pid);
        const t0 = performance.now();
        const n = await load(t.port, t.header, SECONDS);
        t.us.push(((cpuSeconds(t.pid) - c0) / n) * 1e6);
        t.rps.push(n / ((performance.now() - t0) / 1000));
      }
    }
    for (const t of targets) {
      console.log(`${t.name.padEnd(20)} CPU/request ${median(t.us).toFixed(1)} us (runs ${t.us.map((u) => u.toFixed(1)).join(', ')}), ${median(t.rps).toFixed(0)} req/s, peak RSS ${rssMb(t.pid).toFixed(0)} MB`);
    }
    console.log(`rampart - bare: ${(median(targets[0].us) - median(targets[1].us)).toFixed(1)} us per request`);
  } finally {
    for (const c of children) c.kill('SIGTERM');
    await Promise.all(children.map((c) => new Promise((r) => (c.exitCode !== null ? r(null) : c.once('exit', r)))));
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.env.HOP_CPU_UPSTREAM) {
  // the fixed upstream: what the proxy answers for one row
  const body = JSON.stringify({ request_id: 'x', mode: 'random', type: 'read', node: 'worker1', rows: [{ id: 7, name: 'item-7', qty: 7 }], duration_ms: 0.2 });
  Bun.serve({
    hostname: '127.0.0.1',
    port: Number(process.env.HOP_CPU_UPSTREAM),
    fetch: () => new Response(body, { headers: { 'content-type': 'application/json', [ROUTE_HEADER]: 'worker1 random read' } }),
  });
} else {
  await main();
}
