// The CRI ImageService over gRPC on containerd's socket: what the kubelet calls to pull,
// inspect and remove images (crictl is not packaged in Debian). CRI always works in
// containerd's k8s.io namespace.
import * as grpc from "@grpc/grpc-js";
import { fromJSON } from "@grpc/proto-loader";
import protobuf from "protobufjs";
import api from "./cri-api.proto" with { type: "text" };

const root = new protobuf.Root();
protobuf.parse(api, root);
root.resolveAll();
const loaded = grpc.loadPackageDefinition(fromJSON(root.toJSON(), { longs: Number, defaults: true })) as unknown as {
  runtime: { v1: { ImageService: grpc.ServiceClientConstructor } };
};

export interface CriImage {
  id: string;
  repoTags: string[];
  repoDigests: string[];
  size: number;
}

export interface PullOptions {
  /** Basic credentials for the registry (CRI's AuthConfig). */
  auth?: { username: string; password: string };
  /** Default 120 s. */
  timeoutMs?: number;
}

type Callback = (err: grpc.ServiceError | null, res: unknown) => void;

/** A CRI call that failed: the gRPC status and containerd's message (which says why a pull failed). */
export class CriError extends Error {
  override readonly name = "CriError";
  constructor(
    readonly method: string,
    readonly code: grpc.status,
    readonly details: string,
  ) {
    super(`CRI ${method}: ${grpc.status[code]}: ${details}`);
  }
}

export class CriClient {
  private readonly client: grpc.Client;

  constructor(
    readonly socket: string,
    private readonly timeoutMs = 10_000,
  ) {
    this.client = new loaded.runtime.v1.ImageService(`unix:${socket}`, grpc.credentials.createInsecure(), {
      "grpc.max_receive_message_length": 16 << 20,
    });
  }

  private call<T>(method: string, request: unknown, timeoutMs = this.timeoutMs): Promise<T> {
    const fn = (this.client as unknown as Record<string, (req: unknown, opts: grpc.CallOptions, cb: Callback) => void>)[method]!;
    return new Promise<T>((resolve, reject) => {
      fn.call(this.client, request, { deadline: new Date(Date.now() + timeoutMs) }, (err, res) => {
        if (err) reject(new CriError(method, err.code, err.details));
        else resolve(res as T);
      });
    });
  }

  /** Pulls an image (`127.0.0.1:5000/repo:tag`, `docker.io/library/x@sha256:…`); resolves with its image id. */
  async pullImage(image: string, opts: PullOptions = {}): Promise<string> {
    const req: Record<string, unknown> = { image: { image } };
    if (opts.auth) req.auth = { username: opts.auth.username, password: opts.auth.password };
    const res = await this.call<{ imageRef: string }>("PullImage", req, opts.timeoutMs ?? 120_000);
    return res.imageRef;
  }

  async listImages(): Promise<CriImage[]> {
    const res = await this.call<{ images: CriImage[] }>("ListImages", {});
    return res.images.map(normalise);
  }

  /** The image, or undefined when containerd does not hold it. */
  async imageStatus(image: string): Promise<CriImage | undefined> {
    const res = await this.call<{ image: CriImage | null }>("ImageStatus", { image: { image } });
    return res.image ? normalise(res.image) : undefined;
  }

  async removeImage(image: string): Promise<void> {
    await this.call("RemoveImage", { image: { image } }, 60_000);
  }

  close(): void {
    this.client.close();
  }
}

function normalise(i: CriImage): CriImage {
  return { id: i.id, repoTags: i.repoTags ?? [], repoDigests: i.repoDigests ?? [], size: i.size };
}
