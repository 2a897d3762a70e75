// The inputs of `kagami configure`, validated before anything on disk changes: the
// registries to mirror (hosts or URLs as Spegel takes them) and the mirror URLs.
import { InvalidError } from "../errors.ts";
import { isRegistryHost } from "../oci/index.ts";

/** The certs.d directory containerd reads for registries that have none of their own. */
export const DEFAULT_HOST_DIR = "_default";

export interface MirroredRegistry {
  /** Directory under config_path: the registry's host[:port], or _default. */
  dir: string;
  /** The `server` line: the registry itself, tried after the mirrors. None for _default. */
  server?: string;
}

/**
 * `https://docker.io`, `http://10.0.0.1:5000` (the scheme sets the server line) or a bare
 * `ghcr.io` (https). docker.io's server is registry-1.docker.io, as containerd's own default.
 * An empty list mirrors every registry through _default.
 */
export function parseMirroredRegistries(inputs: readonly string[]): MirroredRegistry[] {
  const out = new Map<string, MirroredRegistry>();
  for (const input of inputs) {
    const r = input === DEFAULT_HOST_DIR ? { dir: DEFAULT_HOST_DIR } : parseRegistry(input);
    const prior = out.get(r.dir);
    if (prior && prior.server !== r.server) {
      throw new InvalidError(`--mirrored-registries names ${r.dir} twice with different schemes (${prior.server}, ${r.server})`);
    }
    out.set(r.dir, r);
  }
  return out.size > 0 ? [...out.values()] : [{ dir: DEFAULT_HOST_DIR }];
}

function parseRegistry(input: string): MirroredRegistry {
  const u = parseUrl(input.includes("://") ? input : `https://${input}`, "--mirrored-registries");
  const server = u.host === "docker.io" && u.protocol === "https:" ? "https://registry-1.docker.io" : `${u.protocol}//${u.host}`;
  return { dir: u.host, server };
}

/** Mirror URLs (scheme + host[:port]), in order, without duplicates. At least one. */
export function parseMirrorTargets(inputs: readonly string[]): string[] {
  const out: string[] = [];
  for (const input of inputs) {
    const u = parseUrl(input, "--mirror-targets");
    const origin = `${u.protocol}//${u.host}`;
    if (!out.includes(origin)) out.push(origin);
  }
  if (out.length === 0) throw new InvalidError("--mirror-targets: at least one mirror URL is needed, e.g. http://127.0.0.1:5000");
  return out;
}

function parseUrl(input: string, flag: string): URL {
  let u: URL;
  try {
    u = new URL(input);
  } catch {
    throw new InvalidError(`${flag}: ${JSON.stringify(input)} is not a URL`);
  }
  if (u.protocol !== "http:" && u.protocol !== "https:") throw new InvalidError(`${flag}: ${JSON.stringify(input)}: scheme must be http or https`);
  if (u.username || u.password) throw new InvalidError(`${flag}: ${JSON.stringify(input)}: credentials do not belong in the URL`);
  if ((u.pathname !== "/" && u.pathname !== "") || u.search || u.hash) {
    throw new InvalidError(`${flag}: ${JSON.stringify(input)}: only scheme, host and port are allowed`);
  }
  if (!isRegistryHost(u.host)) throw new InvalidError(`${flag}: ${JSON.stringify(input)}: invalid host ${JSON.stringify(u.host)}`);
  return u;
}
