// Repository, tag and reference grammar of the OCI distribution spec, and the
// normalisation container runtimes apply (`nginx` -> `docker.io/library/nginx:latest`).
import { DigestError, parseDigest, type Digest } from "./digest.ts";

export const DEFAULT_REGISTRY = "docker.io";
const DOCKER_HUB_ALIASES = new Set(["docker.io", "index.docker.io", "registry-1.docker.io"]);

// path-component = [a-z0-9]+ (separator [a-z0-9]+)*, separator = "." | "_" | "__" | "-"+
const COMPONENT = "[a-z0-9]+(?:(?:\\.|_|__|-+)[a-z0-9]+)*";
const NAME_GRAMMAR = new RegExp(`^${COMPONENT}(?:/${COMPONENT})*$`);
const TAG_GRAMMAR = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/;
// A registry host: DNS labels or an IPv4 address, an optional bracketed IPv6, an optional port.
const HOST_GRAMMAR =
  /^(?:(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*|\[[0-9a-fA-F:.]+\])(?::[0-9]{1,5})?$/;
/** Registry host + repository name may not pass this length (distribution's reference package). */
export const MAX_NAME_LENGTH = 255;

export class ReferenceError extends Error {
  override readonly name = "ReferenceError";
}

export function isRepositoryName(name: string): boolean {
  return name.length > 0 && name.length <= MAX_NAME_LENGTH && NAME_GRAMMAR.test(name);
}

export function isTag(tag: string): boolean {
  return TAG_GRAMMAR.test(tag);
}

export function isRegistryHost(host: string): boolean {
  if (host.length === 0 || host.length > 253 || !HOST_GRAMMAR.test(host)) return false;
  const port = host.match(/:(\d+)$/);
  return !port || Number(port[1]) <= 65535;
}

/** Maps registry aliases to the name runtimes use in references (docker.io). */
export function canonicalRegistry(host: string): string {
  return DOCKER_HUB_ALIASES.has(host.toLowerCase()) ? DEFAULT_REGISTRY : host;
}

export function validateRepository(name: string): void {
  if (name.length > MAX_NAME_LENGTH) {
    throw new ReferenceError(`repository name is longer than ${MAX_NAME_LENGTH} characters`);
  }
  if (!NAME_GRAMMAR.test(name)) {
    throw new ReferenceError(
      `invalid repository name ${JSON.stringify(name.slice(0, 80))}: lowercase [a-z0-9] components separated by '/', '.', '_', '__' or '-'`,
    );
  }
}

export function validateTag(tag: string): void {
  if (!TAG_GRAMMAR.test(tag)) {
    throw new ReferenceError(`invalid tag ${JSON.stringify(tag.slice(0, 140))}: [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`);
  }
}

export function validateRegistry(host: string): void {
  if (!isRegistryHost(host)) throw new ReferenceError(`invalid registry host ${JSON.stringify(host.slice(0, 80))}`);
}

/** A fully qualified image reference: registry + repository, and a tag, a digest or both. */
export interface Reference {
  registry: string;
  repository: string;
  tag?: string;
  digest?: Digest;
}

/** A reference that names a tag (the form kagami records and advertises). */
export interface TagReference {
  registry: string;
  repository: string;
  tag: string;
}

/**
 * Parses a reference the way container runtimes do: a first component with '.', ':' or
 * `localhost` is a registry host; otherwise docker.io, where single names gain `library/`.
 * A reference with neither tag nor digest gets `latest` when `defaultTag` is set.
 */
export function parseReference(input: string, opts: { defaultTag?: boolean; defaultRegistry?: string } = {}): Reference {
  if (input.length === 0) throw new ReferenceError("empty reference");
  if (input.length > MAX_NAME_LENGTH + 200) throw new ReferenceError("reference is too long");
  let rest = input;
  let digest: Digest | undefined;
  const at = rest.indexOf("@");
  if (at >= 0) {
    try {
      digest = parseDigest(rest.slice(at + 1)).digest;
    } catch (e) {
      throw new ReferenceError(`invalid digest in reference: ${(e as DigestError).message}`);
    }
    rest = rest.slice(0, at);
  }
  let tag: string | undefined;
  const lastSlash = rest.lastIndexOf("/");
  const colon = rest.lastIndexOf(":");
  if (colon > lastSlash) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    validateTag(tag);
  }
  let registry = opts.defaultRegistry ?? DEFAULT_REGISTRY;
  let repository = rest;
  const slash = rest.indexOf("/");
  if (slash > 0) {
    const first = rest.slice(0, slash);
    if (first.includes(".") || first.includes(":") || first === "localhost" || first.startsWith("[")) {
      validateRegistry(first);
      registry = canonicalRegistry(first);
      repository = rest.slice(slash + 1);
    }
  }
  if (registry === DEFAULT_REGISTRY && !repository.includes("/")) repository = `library/${repository}`;
  validateRepository(repository);
  if (registry.length + 1 + repository.length > MAX_NAME_LENGTH) {
    throw new ReferenceError(`registry and repository name together pass ${MAX_NAME_LENGTH} characters`);
  }
  if (tag === undefined && digest === undefined && opts.defaultTag !== false) tag = "latest";
  const ref: Reference = { registry, repository };
  if (tag !== undefined) ref.tag = tag;
  if (digest !== undefined) ref.digest = digest;
  return ref;
}

/** Parses a reference that must name a tag (no digest), such as an import target. */
export function parseTagReference(input: string): TagReference {
  const ref = parseReference(input, { defaultTag: true });
  if (ref.digest !== undefined || ref.tag === undefined) {
    throw new ReferenceError(`expected <registry>/<repository>:<tag>, got ${JSON.stringify(input)}`);
  }
  return { registry: ref.registry, repository: ref.repository, tag: ref.tag };
}

/** `registry/repository:tag`: the string form kagami records and the DHT key of a tag. */
export function formatTagReference(ref: TagReference): string {
  return `${ref.registry}/${ref.repository}:${ref.tag}`;
}

export function formatReference(ref: Reference): string {
  let s = `${ref.registry}/${ref.repository}`;
  if (ref.tag !== undefined) s += `:${ref.tag}`;
  if (ref.digest !== undefined) s += `@${ref.digest}`;
  return s;
}
