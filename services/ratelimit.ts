// Per-client fixed-window rate limit. Memory stays bounded: expired windows
// are swept whenever the table grows past `maxClients`.

export class RateLimiter {
  private readonly windows = new Map<string, { start: number; count: number }>();
  private readonly windowMs: number;

  constructor(private readonly requests: number, perSeconds: number, private readonly maxClients = 100_000) {
    this.windowMs = perSeconds * 1000;
  }

  /** Counts one request from `client`; returns 0 when allowed, else the seconds until the window resets. */
  hit(client: string, now = Date.now()): number {
    let w = this.windows.get(client);
    if (!w || now - w.start >= this.windowMs) {
      if (!w && this.windows.size >= this.maxClients) this.sweep(now);
      w = { start: now, count: 0 };
      this.windows.set(client, w);
    }
    w.count++;
    if (w.count <= this.requests) return 0;
    return Math.max(1, Math.ceil((w.start + this.windowMs - now) / 1000));
  }

  private sweep(now: number): void {
    for (const [k, w] of this.windows) if (now - w.start >= this.windowMs) this.windows.delete(k);
    // Still full (a flood of distinct addresses): start over rather than grow without bound.
    if (this.windows.size >= this.maxClients) this.windows.clear();
  }
}
