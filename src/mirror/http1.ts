// A minimal HTTP/1.1 client for requests to peers, on a raw Bun.connect socket.
// Why not fetch(): measured with Bun 1.4.5 on loopback (1 GiB, scripts/bench/peer.ts notes),
// fetch() hands its body over in 64 KiB chunks from its own HTTP thread and costs ~1.2 CPU-s
// per GiB; a socket read delivers up to 512 KiB at once for ~0.5 CPU-s per GiB. And here the
// socket is paused whenever no read is waiting, so what sits in userspace is bounded by what
// the reader asked for (TCP back-pressures the peer), where fetch() reads ahead on its own.
// Scope is what peers answer (kagami, Spegel): one request per connection (Connection:
// close), bodies framed by Content-Length. An answer framed otherwise gets no body reader.
import type { Socket } from "bun";

/** Most bytes one socket read delivers (the uSockets receive buffer): what a reader may get at once. */
export const MAX_READ_BYTES = 512 * 1024;
const MAX_HEAD_BYTES = 64 * 1024;
const HEAD_END = new Uint8Array([13, 10, 13, 10]);

export type ReadResult = { done: false; value: Uint8Array } | { done: true; value?: undefined };

/** A pull-based body: bytes are read from the socket only while a read() waits. */
export interface BodyReader {
  /** Content-Length of the answer. */
  readonly length: number;
  /**
   * One read at a time; at most MAX_READ_BYTES per chunk, and no chunk shares its buffer with a
   * later one (the reader may free it once done). Rejects when the connection fails.
   */
  read(): Promise<ReadResult>;
  cancel(reason?: unknown): Promise<void>;
}

export interface Http1Request {
  /** An http:// URL with an IP literal or host name. */
  url: string;
  method: "GET" | "HEAD";
  headers: Record<string, string>;
  /** Aborting it closes the connection, before or after the answer's head. */
  signal: AbortSignal;
  /** The answer's head must arrive within this (connect included). */
  headerTimeoutMs: number;
}

export interface Http1Response {
  status: number;
  headers: Headers;
  /** null when the answer has no body (HEAD, 204, 304) or is not framed by Content-Length. */
  body: BodyReader | null;
}

export class HeaderTimeoutError extends Error {
  override readonly name = "HeaderTimeoutError";
}

/** Sends one request; resolves with the answer's head, its body still unread on the socket. */
export function request(req: Http1Request): Promise<Http1Response> {
  return new Exchange(req).head;
}

type Waiter = { resolve: (r: ReadResult) => void; reject: (e: unknown) => void };

class Exchange {
  readonly head: Promise<Http1Response>;
  #resolveHead!: (r: Http1Response) => void;
  #rejectHead!: (e: unknown) => void;
  #state: "head" | "body" | "done" | "failed" = "head";
  #failure: unknown;
  #socket: Socket<undefined> | undefined;
  #headParts: Uint8Array[] = [];
  #headBytes = 0;
  #queue: Uint8Array[] = [];
  #remaining = 0;
  #waiter: Waiter | undefined;
  #timer: ReturnType<typeof setTimeout>;
  readonly #signal: AbortSignal;
  readonly #method: string;

  constructor(req: Http1Request) {
    this.head = new Promise((resolve, reject) => {
      this.#resolveHead = resolve;
      this.#rejectHead = reject;
    });
    this.#signal = req.signal;
    this.#method = req.method;
    this.#timer = setTimeout(() => this.#fail(new HeaderTimeoutError(`no answer within ${req.headerTimeoutMs} ms`)), req.headerTimeoutMs);
    if (req.signal.aborted) {
      this.#fail(req.signal.reason);
      return;
    }
    req.signal.addEventListener("abort", this.#onAbort, { once: true });
    const url = new URL(req.url);
    if (url.protocol !== "http:") {
      this.#fail(new Error(`unsupported peer URL ${req.url}`));
      return;
    }
    const lines = [`${req.method} ${url.pathname}${url.search} HTTP/1.1`, `Host: ${url.host}`, "Connection: close"];
    for (const [name, value] of Object.entries(req.headers)) {
      // Values come from the client's request (Range, Accept): never let one end the head.
      if (/[\r\n]/.test(name + value)) {
        this.#fail(new Error(`invalid header ${JSON.stringify(name)}`));
        return;
      }
      lines.push(`${name}: ${value}`);
    }
    const text = Buffer.from(`${lines.join("\r\n")}\r\n\r\n`, "latin1");
    let written = 0;
    const write = (s: Socket<undefined>): void => {
      written += Math.max(0, s.write(text.subarray(written)));
    };
    Bun.connect({
      hostname: url.hostname.replace(/^\[(.*)\]$/, "$1"),
      port: Number(url.port || 80),
      socket: {
        binaryType: "uint8array",
        open: (s) => {
          if (this.#state === "failed" || this.#state === "done") return void s.terminate();
          this.#socket = s;
          write(s);
        },
        drain: (s) => {
          if (written < text.byteLength) write(s);
        },
        data: (_s, chunk) => this.#onData(chunk),
        end: () => this.#onClose(),
        close: (_s, err) => this.#onClose(err),
        error: (_s, err) => this.#fail(err),
        connectError: (_s, err) => this.#fail(err),
      },
    }).catch((e: unknown) => this.#fail(e));
  }

  #onAbort = (): void => this.#fail(this.#signal.reason ?? new Error("aborted"));

  #onData(chunk: Uint8Array): void {
    if (this.#state === "head") return this.#onHeadBytes(chunk);
    if (this.#state === "body") this.#push(chunk);
  }

  #onHeadBytes(chunk: Uint8Array): void {
    this.#headParts.push(chunk);
    this.#headBytes += chunk.byteLength;
    const all = this.#headParts.length === 1 ? chunk : Buffer.concat(this.#headParts, this.#headBytes);
    const end = Buffer.from(all.buffer, all.byteOffset, all.byteLength).indexOf(HEAD_END);
    if (end < 0) {
      if (this.#headBytes > MAX_HEAD_BYTES) this.#fail(new Error(`answer head larger than ${MAX_HEAD_BYTES} bytes`));
      else if (this.#headParts.length > 1) this.#headParts = [all];
      return;
    }
    this.#headParts = [];
    let parsed: { status: number; headers: Headers };
    try {
      parsed = parseHead(Buffer.from(all.buffer, all.byteOffset, end).toString("latin1"));
    } catch (e) {
      return this.#fail(e);
    }
    clearTimeout(this.#timer);
    const { status, headers } = parsed;
    const length = this.#method === "HEAD" || status === 204 || status === 304 ? undefined : contentLength(headers);
    if (length === undefined) {
      this.#finish();
      return this.#resolveHead({ status, headers, body: null });
    }
    this.#state = "body";
    this.#remaining = length;
    const rest = all.subarray(end + HEAD_END.byteLength);
    this.#resolveHead({ status, headers, body: this.#reader(length) });
    if (length === 0) this.#finish();
    else if (rest.byteLength > 0) this.#push(rest);
  }

  // Hands a chunk to the waiting read, or queues it; either way the socket pauses until the
  // next read, so unread bytes wait in the kernel and the peer is back-pressured.
  #push(chunk: Uint8Array): void {
    let c = chunk;
    if (c.byteLength > this.#remaining) c = c.subarray(0, this.#remaining);
    this.#remaining -= c.byteLength;
    // Readers are promised at most MAX_READ_BYTES a chunk, whatever one socket read brought;
    // pieces of a larger read are copies, so a reader may free each chunk when done with it.
    const split = c.byteLength > MAX_READ_BYTES;
    for (let at = 0; at < c.byteLength; at += MAX_READ_BYTES) {
      const piece = split ? c.slice(at, at + MAX_READ_BYTES) : c;
      const w = this.#waiter;
      this.#waiter = undefined;
      if (w) w.resolve({ done: false, value: piece });
      else this.#queue.push(piece);
    }
    if (this.#remaining === 0) this.#finish();
    else this.#socket?.pause();
  }

  #reader(length: number): BodyReader {
    return {
      length,
      read: () => {
        const next = this.#queue.shift();
        if (next) return Promise.resolve({ done: false, value: next });
        if (this.#state === "done") return Promise.resolve({ done: true });
        if (this.#state === "failed") return Promise.reject(this.#failure);
        if (this.#waiter) return Promise.reject(new Error("concurrent reads of one body"));
        return new Promise<ReadResult>((resolve, reject) => {
          this.#waiter = { resolve, reject };
          this.#socket?.resume();
        });
      },
      cancel: async (reason) => {
        this.#queue = [];
        if (this.#state !== "done") this.#fail(reason ?? new Error("body cancelled"));
      },
    };
  }

  #onClose(err?: Error): void {
    if (this.#state === "done" || this.#state === "failed") return;
    const missing = this.#state === "body" ? `, ${this.#remaining} bytes of the body missing` : " before the answer's head";
    this.#fail(err ?? new Error(`peer closed the connection${missing}`));
  }

  // Everything of the answer arrived (or it has no body): the connection is not needed.
  #finish(): void {
    if (this.#state === "failed" || this.#state === "done") return;
    this.#state = "done";
    this.#cleanup();
    const w = this.#waiter;
    this.#waiter = undefined;
    w?.resolve({ done: true });
  }

  #fail(reason: unknown): void {
    if (this.#state === "failed" || this.#state === "done") return;
    this.#state = "failed";
    this.#failure = reason;
    this.#cleanup();
    this.#rejectHead(reason);
    const w = this.#waiter;
    this.#waiter = undefined;
    w?.reject(reason);
  }

  #cleanup(): void {
    clearTimeout(this.#timer);
    this.#signal.removeEventListener("abort", this.#onAbort);
    this.#socket?.terminate();
  }
}

function parseHead(text: string): { status: number; headers: Headers } {
  const lines = text.split("\r\n");
  const m = (lines[0] ?? "").match(/^HTTP\/1\.[01] (\d{3})(?: .*)?$/);
  if (!m) throw new Error(`not an HTTP/1.1 answer: ${JSON.stringify((lines[0] ?? "").slice(0, 80))}`);
  const headers = new Headers();
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(":");
    if (colon <= 0) throw new Error(`malformed header line ${JSON.stringify(line.slice(0, 80))}`);
    headers.append(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
  }
  // Transfer-Encoding overrides Content-Length (RFC 9112 6.3): such an answer has no length.
  if (headers.has("Transfer-Encoding")) headers.delete("Content-Length");
  return { status: Number(m[1]), headers };
}

function contentLength(headers: Headers): number | undefined {
  const v = headers.get("Content-Length");
  return v !== null && /^\d{1,15}$/.test(v) ? Number(v) : undefined;
}
