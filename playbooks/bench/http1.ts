// A minimal HTTP/1.1 keep-alive client for the load generator: one TCP
// socket per concurrent worker, one request at a time on it, responses framed
// by Content-Length or chunked encoding (over TLS for https: one handshake
// per connection, then kept alive). About 4x less CPU per request than
// node:http, so the client stays far from being the bottleneck on a small
// machine that also runs the cluster.
import { connect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';

export interface Http1Response {
  status: number;
  body: string;
}

const CRLF2 = Buffer.from('\r\n\r\n');

interface Pending {
  resolve(r: Http1Response): void;
  reject(e: Error): void;
  timer: ReturnType<typeof setTimeout>;
}

/** One keep-alive connection; reconnects when the server closed it between requests. */
export class Http1Connection {
  private socket: Socket | null = null;
  private buf: Buffer = Buffer.alloc(0);
  private pending: Pending | null = null;

  /** `tls`: HTTPS, the server's certificate verified against `ca` (PEM; undefined: the system's roots) and its name. */
  constructor(private readonly host: string, private readonly port: number, private readonly tls?: { ca?: string }) {}

  private open(): Socket {
    const s = this.tls
      ? tlsConnect({ host: this.host, port: this.port, ca: this.tls.ca, noDelay: true, rejectUnauthorized: true })
      : connect({ host: this.host, port: this.port, noDelay: true });
    s.on('data', (d: Buffer) => {
      if (this.socket !== s) return;
      this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
      this.parse();
    });
    const fail = (e: Error) => {
      // a late event of an old socket must not touch the request on its successor
      if (this.socket !== s) return;
      this.socket = null;
      this.buf = Buffer.alloc(0);
      const p = this.pending;
      this.pending = null;
      if (p) {
        clearTimeout(p.timer);
        p.reject(e);
      }
    };
    s.on('error', (e: Error) => fail(e));
    s.on('close', () => fail(Object.assign(new Error('connection closed by the server before the answer'), { code: 'ECONNRESET' })));
    this.socket = s;
    return s;
  }

  /** Send one request (the previous one must have finished). */
  request(method: string, path: string, headers: Record<string, string>, body: string, timeoutMs: number): Promise<Http1Response> {
    if (this.pending) return Promise.reject(new Error('request already in flight on this connection'));
    const payload = Buffer.from(body);
    let head = `${method} ${path} HTTP/1.1\r\nhost: ${this.host}:${this.port}\r\nconnection: keep-alive\r\ncontent-length: ${payload.length}\r\n`;
    for (const [k, v] of Object.entries(headers)) head += `${k}: ${v}\r\n`;
    head += '\r\n';
    const socket = this.socket && !this.socket.destroyed ? this.socket : this.open();
    return new Promise<Http1Response>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending = null;
        if (this.socket === socket) this.socket = null;
        this.buf = Buffer.alloc(0);
        socket.destroy();
        reject(new Error(`TIMEOUT: no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending = { resolve, reject, timer };
      socket.write(payload.length ? Buffer.concat([Buffer.from(head), payload]) : head);
    });
  }

  private parse(): void {
    const p = this.pending;
    if (!p) return;
    const end = this.buf.indexOf(CRLF2);
    if (end < 0) return;
    const head = this.buf.subarray(0, end).toString('latin1');
    const lines = head.split('\r\n');
    const status = Number(lines[0].split(' ')[1]);
    let length = -1;
    let chunked = false;
    let close = false;
    for (let i = 1; i < lines.length; i++) {
      const c = lines[i].indexOf(':');
      const name = lines[i].slice(0, c).trim().toLowerCase();
      const value = lines[i].slice(c + 1).trim().toLowerCase();
      if (name === 'content-length') length = Number(value);
      else if (name === 'transfer-encoding') chunked = value.includes('chunked');
      else if (name === 'connection') close = value === 'close';
    }
    const start = end + 4;
    let body: Buffer;
    let consumed: number;
    if (chunked) {
      const parts: Buffer[] = [];
      let at = start;
      for (;;) {
        const eol = this.buf.indexOf('\r\n', at);
        if (eol < 0) return; // wait for more
        const size = Number.parseInt(this.buf.subarray(at, eol).toString('latin1'), 16);
        if (!(size >= 0)) return this.protocolError('bad chunk size');
        if (this.buf.length < eol + 2 + size + 2) return;
        if (size === 0) {
          // no trailers expected: the final CRLF follows
          consumed = eol + 4;
          break;
        }
        parts.push(this.buf.subarray(eol + 2, eol + 2 + size));
        at = eol + 2 + size + 2;
      }
      body = Buffer.concat(parts);
    } else if (length >= 0) {
      if (this.buf.length < start + length) return;
      body = this.buf.subarray(start, start + length);
      consumed = start + length;
    } else {
      return this.protocolError('response without Content-Length or chunked encoding');
    }
    this.buf = this.buf.subarray(consumed);
    this.pending = null;
    clearTimeout(p.timer);
    if (close) {
      const s = this.socket;
      this.socket = null;
      this.buf = Buffer.alloc(0);
      s?.destroy();
    }
    p.resolve({ status, body: body.toString('utf8') });
  }

  private protocolError(why: string): void {
    const p = this.pending;
    this.pending = null;
    const s = this.socket;
    this.socket = null;
    this.buf = Buffer.alloc(0);
    s?.destroy();
    if (p) {
      clearTimeout(p.timer);
      p.reject(Object.assign(new Error(why), { code: 'EPROTO' }));
    }
  }

  close(): void {
    const s = this.socket;
    this.socket = null;
    s?.destroy();
  }
}
