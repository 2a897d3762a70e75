// containerd's gRPC services from the project's own minimal .proto files. The files are
// imported as text (embedded by `bun build --compile`) and parsed in memory, so nothing
// is read from disk at run time.
import * as grpc from "@grpc/grpc-js";
import { fromJSON } from "@grpc/proto-loader";
import protobuf from "protobufjs";
import content from "./proto/content.proto" with { type: "text" };
import events from "./proto/events.proto" with { type: "text" };
import images from "./proto/images.proto" with { type: "text" };
import introspection from "./proto/introspection.proto" with { type: "text" };
import leases from "./proto/leases.proto" with { type: "text" };
import types from "./proto/types.proto" with { type: "text" };
import version from "./proto/version.proto" with { type: "text" };

const root = new protobuf.Root();
for (const text of [types, images, content, events, introspection, version, leases]) protobuf.parse(text, root);
root.resolveAll();

const definition = fromJSON(root.toJSON(), { longs: Number, enums: String, defaults: true });
const loaded = grpc.loadPackageDefinition(definition);

function service(path: string): grpc.ServiceClientConstructor {
  let node: unknown = loaded;
  for (const part of path.split(".")) node = (node as Record<string, unknown>)[part];
  if (typeof node !== "function") throw new Error(`proto: no service ${path}`);
  return node as grpc.ServiceClientConstructor;
}

/** Client constructors of the containerd services kagami calls. */
export const SERVICES = {
  images: service("containerd.services.images.v1.Images"),
  content: service("containerd.services.content.v1.Content"),
  events: service("containerd.services.events.v1.Events"),
  introspection: service("containerd.services.introspection.v1.Introspection"),
  version: service("containerd.services.version.v1.Version"),
  leases: service("containerd.services.leases.v1.Leases"),
} as const;

export type ServiceName = keyof typeof SERVICES;

const imageEvent = root.lookupType("containerd.services.events.v1.ImageEvent");
const contentEvent = root.lookupType("containerd.services.events.v1.ContentEvent");

/** Decodes the payload of an /images/* event. */
export function decodeImageEvent(bytes: Uint8Array): { name: string } {
  const o = imageEvent.toObject(imageEvent.decode(bytes), { defaults: true }) as { name: string };
  return { name: o.name };
}

/** Decodes the payload of a /content/* event. */
export function decodeContentEvent(bytes: Uint8Array): { digest: string } {
  const o = contentEvent.toObject(contentEvent.decode(bytes), { defaults: true }) as { digest: string };
  return { digest: o.digest };
}
