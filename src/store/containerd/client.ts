// A small typed client for the containerd services kagami uses, over one gRPC channel on
// containerd's unix socket. Every call carries the namespace and a deadline; gRPC status
// codes become the project's typed errors (NOT_FOUND -> NotFoundError, an unreachable
// containerd -> UnavailableError).
import * as grpc from "@grpc/grpc-js";
import { NotFoundError, UnavailableError } from "../../errors.ts";
import { SERVICES, type ServiceName } from "./proto.ts";

export interface ContainerdDescriptor {
  mediaType: string;
  digest: string;
  size: number;
}

export interface ImageRecord {
  name: string;
  labels: Record<string, string>;
  target: ContainerdDescriptor;
}

export interface ContentInfo {
  digest: string;
  size: number;
  labels: Record<string, string>;
}

export interface Envelope {
  namespace: string;
  topic: string;
  event: { typeUrl: string; value: Uint8Array } | null;
}

export interface ClientOptions {
  /** Deadline of each unary call and of each chunk read. */
  callTimeoutMs?: number;
}

/** Largest message containerd sends by default (its defaults.DefaultMaxRecvMsgSize). */
const MAX_MESSAGE_BYTES = 16 << 20;
/** Bytes asked of Content/Read per call: one containerd read buffer, so a stream holds at most one. */
export const READ_CHUNK_BYTES = 1 << 20;

type Callback = (err: grpc.ServiceError | null, res: unknown) => void;
type UnaryMethod = (req: unknown, md: grpc.Metadata, opts: grpc.CallOptions, cb: Callback) => grpc.ClientUnaryCall;
type StreamMethod = (req: unknown, md: grpc.Metadata, opts: grpc.CallOptions) => grpc.ClientReadableStream<unknown>;

export class ContainerdClient {
  readonly socket: string;
  readonly namespace: string;
  private readonly callTimeoutMs: number;
  private readonly clients: Record<ServiceName, grpc.Client>;

  constructor(socket: string, namespace: string, opts: ClientOptions = {}) {
    this.socket = socket;
    this.namespace = namespace;
    this.callTimeoutMs = opts.callTimeoutMs ?? 5_000;
    const channelOptions: grpc.ChannelOptions = {
      // containerd restarts are routine on a node: retry the socket quickly, not after minutes.
      "grpc.initial_reconnect_backoff_ms": 100,
      "grpc.max_reconnect_backoff_ms": 2_000,
      "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
    };
    const creds = grpc.credentials.createInsecure();
    const images = new SERVICES.images(`unix:${socket}`, creds, channelOptions);
    const shared = { ...channelOptions, channelOverride: images.getChannel() };
    this.clients = {
      images,
      content: new SERVICES.content("", creds, shared),
      events: new SERVICES.events("", creds, shared),
      introspection: new SERVICES.introspection("", creds, shared),
      version: new SERVICES.version("", creds, shared),
      leases: new SERVICES.leases("", creds, shared),
    };
  }

  /** gRPC metadata of every call: the namespace, and a lease when content is written. */
  metadata(extra: Record<string, string> = {}): grpc.Metadata {
    const md = new grpc.Metadata();
    md.set("containerd-namespace", this.namespace);
    for (const [k, v] of Object.entries(extra)) md.set(k, v);
    return md;
  }

  deadline(ms = this.callTimeoutMs): Date {
    return new Date(Date.now() + ms);
  }

  /** One unary call with the namespace and a deadline. */
  unary<T>(service: ServiceName, method: string, request: unknown, opts: { timeoutMs?: number; metadata?: Record<string, string> } = {}): Promise<T> {
    const client = this.clients[service] as unknown as Record<string, UnaryMethod>;
    const fn = client[method];
    if (!fn) throw new Error(`containerd client: no method ${service}.${method}`);
    return new Promise<T>((resolve, reject) => {
      fn.call(client, request, this.metadata(opts.metadata), { deadline: this.deadline(opts.timeoutMs) }, (err, res) => {
        if (err) reject(mapError(err, `${service}.${method}`));
        else resolve(res as T);
      });
    });
  }

  /** Starts a server-streaming call; the caller consumes and cancels it. */
  serverStream(service: ServiceName, method: string, request: unknown, deadline?: Date): grpc.ClientReadableStream<unknown> {
    const client = this.clients[service] as unknown as Record<string, StreamMethod>;
    const fn = client[method];
    if (!fn) throw new Error(`containerd client: no method ${service}.${method}`);
    return fn.call(client, request, this.metadata(), deadline ? { deadline } : {});
  }

  /** The raw gRPC client of a service, for calls this wrapper does not cover (bidi writes). */
  raw(service: ServiceName): grpc.Client {
    return this.clients[service];
  }

  async version(): Promise<{ version: string; revision: string }> {
    return this.unary("version", "Version", {});
  }

  async getImage(name: string): Promise<ImageRecord> {
    const res = await this.unary<{ image: ImageRecord | null }>("images", "Get", { name });
    if (!res.image?.target) throw new NotFoundError(`containerd has no image ${name}`);
    return normaliseImage(res.image);
  }

  async listImages(filters: string[] = []): Promise<ImageRecord[]> {
    const res = await this.unary<{ images: ImageRecord[] }>("images", "List", { filters }, { timeoutMs: 4 * this.callTimeoutMs });
    return res.images.filter((i) => i.target).map(normaliseImage);
  }

  async info(digest: string): Promise<ContentInfo> {
    const res = await this.unary<{ info: ContentInfo | null }>("content", "Info", { digest });
    if (!res.info) throw new NotFoundError(`containerd has no content ${digest}`);
    return { digest: res.info.digest, size: res.info.size, labels: res.info.labels ?? {} };
  }

  /** Every content blob of the namespace (digest and size). */
  async listContent(): Promise<ContentInfo[]> {
    const call = this.serverStream("content", "List", { filters: [] }, this.deadline(6 * this.callTimeoutMs));
    const out: ContentInfo[] = [];
    try {
      for await (const msg of call as AsyncIterable<{ info: ContentInfo[] }>) {
        for (const i of msg.info) out.push({ digest: i.digest, size: i.size, labels: i.labels ?? {} });
      }
    } catch (e) {
      throw mapError(e, "content.List");
    }
    return out;
  }

  /**
   * Reads `size` bytes at `offset` in one call (size <= READ_CHUNK_BYTES keeps the
   * response to one containerd buffer). Fails if containerd returns fewer bytes.
   */
  async readChunk(digest: string, offset: number, size: number): Promise<Uint8Array> {
    const call = this.serverStream("content", "Read", { digest, offset, size }, this.deadline());
    const parts: Uint8Array[] = [];
    let got = 0;
    try {
      for await (const msg of call as AsyncIterable<{ offset: number; data: Uint8Array }>) {
        if (got + msg.data.byteLength > size) throw new Error(`containerd returned more than ${size} bytes of ${digest}`);
        parts.push(msg.data);
        got += msg.data.byteLength;
      }
    } catch (e) {
      call.cancel();
      throw mapError(e, "content.Read");
    }
    if (got !== size) throw new UnavailableError(`containerd returned ${got} of ${size} bytes of ${digest} at ${offset}`);
    if (parts.length === 1) return parts[0]!;
    const out = new Uint8Array(size);
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.byteLength;
    }
    return out;
  }

  /** The root directory exported by containerd's content plugin, if it says. */
  async contentRoot(): Promise<string | undefined> {
    const res = await this.unary<{ plugins: { type: string; id: string; exports: Record<string, string> }[] }>(
      "introspection",
      "Plugins",
      { filters: ['type=="io.containerd.content.v1"'] },
    );
    return res.plugins.find((p) => p.id === "content")?.exports?.root || undefined;
  }

  close(): void {
    this.clients.images.close();
  }
}

function normaliseImage(i: ImageRecord): ImageRecord {
  const t = i.target;
  return { name: i.name, labels: i.labels ?? {}, target: { mediaType: t.mediaType, digest: t.digest, size: t.size } };
}

function isServiceError(e: unknown): e is grpc.ServiceError {
  return typeof e === "object" && e !== null && typeof (e as { code?: unknown }).code === "number" && "details" in e;
}

/** gRPC status -> the error a caller decides on. */
export function mapError(e: unknown, call: string): Error {
  if (!isServiceError(e)) return e instanceof Error ? e : new Error(String(e));
  const what = `containerd ${call}: ${e.details || grpc.status[e.code]}`;
  switch (e.code) {
    case grpc.status.NOT_FOUND:
      return new NotFoundError(what);
    case grpc.status.UNAVAILABLE:
    case grpc.status.DEADLINE_EXCEEDED:
    case grpc.status.CANCELLED:
    case grpc.status.RESOURCE_EXHAUSTED:
      return new UnavailableError(what);
    default:
      return new Error(what);
  }
}

/** true for the gRPC status of a call cancelled by its own caller. */
export function isCancelled(e: unknown): boolean {
  return isServiceError(e) && e.code === grpc.status.CANCELLED;
}
