// The shapes of one bench run: every request's outcome, the statistics
// derived from them, and the summary written to summary.json.
import type { ProxyMode } from '../../core/types.ts';
import type { FailoverSeen, WriteAccounting } from './writes.ts';

/** A load phase: the writes, then one read phase per proxy mode. */
export type Phase = 'write' | ProxyMode;

/** What the load generator saw for one request. */
export interface RequestRecord {
  /** The request_id we sent (the services log it on every hop). */
  id: string;
  phase: Phase;
  /** Offset of the request's start from the start of its phase (ms). */
  startMs: number;
  /** Client-side latency, send to last byte (ms). */
  latencyMs: number;
  /** HTTP status, or 0 when no answer came (connection refused/reset, timeout). */
  status: number;
  /** The node the response names (null when absent). */
  node: string | null;
  ok: boolean;
  /** Why it is not ok: the service's error code, `BAD_RESPONSE: ...`, or a network error. */
  error?: string;
}

export interface LatencyStats {
  count: number;
  ok: number;
  errors: number;
  /** Requests per second over the phase's wall time. */
  throughput: number;
  wallMs: number;
  avg: number;
  min: number;
  p50: number;
  p95: number;
  p99: number;
  max: number;
}

export interface PhaseStats extends LatencyStats {
  phase: Phase;
  type: 'read' | 'write';
  /** Successful requests per serving node, from the responses. */
  byNode: Record<string, number>;
  /** Failed requests per error code. */
  errorsByCode: Record<string, number>;
  /** Histogram of latencies (ms): counts per bucket of `bucketMs`. */
  histogram: { bucketMs: number; counts: number[] };
  /** Per node: first and last time (ms into the phase) it served a request. */
  nodeSpan: Record<string, { first: number; last: number }>;
}

export interface HopAccounting {
  hop: string;
  /** Log lines carrying one of our request_ids. */
  found: number;
  /** request_ids sent but absent from this hop's log. */
  missing: string[];
  /** request_ids logged more than once. */
  duplicates: string[];
  /** Where the log's status differs from what the client got. */
  statusMismatch: string[];
  /** Where the proxy's logged node differs from the response's node. */
  nodeMismatch: string[];
  /** Successful requests per node, as this hop logged them. */
  byNode: Record<string, number>;
  /** Time spent at this hop and below (its duration_ms) over our requests, ms. */
  durationP50: number;
  durationP99: number;
}

export interface DistributionCheck {
  phase: Phase;
  ok: boolean;
  message: string;
}

export type SysbenchSetup = 'standalone' | 'cluster-mixed' | 'cluster-read-only';

export interface SysbenchResult {
  test: 'oltp_read_write' | 'oltp_read_only';
  /**
   * `standalone`: this node alone; `cluster-mixed`: read_write on the manager
   * while read_only runs on every worker; `cluster-read-only`: read_only on
   * every DB node at once.
   */
  setup: SysbenchSetup;
  node: string;
  ok: boolean;
  error?: string;
  tps: number;
  qps: number;
  latencyAvgMs: number;
  latencyP95Ms: number;
  errors: number;
}

export interface NodeProof {
  node: string;
  /** actor rows before and after the run (null: not readable). */
  before: number | null;
  after: number | null;
  /** sha256 of `mysqldump --skip-dump-date sakila actor` (null: no dump). */
  dumpSha256: string | null;
  /** The replica reached the manager's GTID position (the manager itself: true). */
  caughtUp: boolean;
  error?: string;
}

export interface ReplicationProof {
  ok: boolean;
  expectedNewRows: number;
  gtid: string;
  nodes: NodeProof[];
  identicalDumps: boolean;
  messages: string[];
}

export interface BenchSummary {
  cluster: string;
  startedAt: string;
  wallMs: number;
  target: string;
  concurrency: number;
  rate?: number;
  /** Every write accounted for (planned = --writes). */
  writes: WriteAccounting;
  /** The primary changed during the writes (null: it did not). */
  failover: FailoverSeen | null;
  /** This run's rows removed after the proof and the id space given back (null: not done, see incidents). */
  cleanup: { node: string; removed: number; nextId: number } | null;
  reads: number;
  modes: ProxyMode[];
  phases: PhaseStats[];
  distribution: DistributionCheck[];
  logs: HopAccounting[];
  replication: ReplicationProof | null;
  sysbench: SysbenchResult[];
  /** What happened beyond the plan: nodes that stopped serving, a DB down, missing logs. */
  incidents: string[];
  /** Timings of the steps after the load (ms). */
  timings: Record<string, number>;
  /** Everything checked out: no failed request, logs complete, distribution and proof right. */
  ok: boolean;
  /** Folder holding the logs, dumps, report. */
  dir: string;
}
