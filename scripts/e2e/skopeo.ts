// skopeo as the reference client: push built images to a registry and pull images back into
// an OCI layout, over plain HTTP, with our own accept-anything policy (a fresh machine may
// have no /etc/containers/policy.json).
import { existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { rootScope, type Scope } from "./cleanup.ts";
import { readLayout, type Built, type Platform } from "./image.ts";
import { run } from "./proc.ts";
import { requireTool } from "./require.ts";

export interface Credentials {
  username: string;
  password: string;
}

export interface CopyOptions {
  /** Copy every image of an index (else skopeo picks one platform). */
  all?: boolean;
  srcCreds?: Credentials;
  destCreds?: Credentials;
  /** Pick this platform from an index when not copying all. */
  platform?: Platform;
  netns?: string;
  /** Default 120 s. */
  timeoutMs?: number;
  scope?: Scope;
}

const configDirs = new WeakMap<Scope, string>();

/** A temp dir with policy.json, per scope; rewritten after the scope's teardown removed it. */
function configDir(scope: Scope): string {
  let dir = configDirs.get(scope);
  if (!dir || !existsSync(join(dir, "policy.json"))) {
    dir = scope.tempDir("skopeo");
    writeFileSync(join(dir, "policy.json"), JSON.stringify({ default: [{ type: "insecureAcceptAnything" }] }));
    configDirs.set(scope, dir);
  }
  return dir;
}

/** `skopeo copy` between any two transports (oci:DIR:TAG, docker://HOST/REPO:TAG). */
export async function skopeoCopy(src: string, dest: string, opts: CopyOptions = {}): Promise<void> {
  const skopeo = requireTool("skopeo");
  const scope = opts.scope ?? rootScope;
  const dir = configDir(scope);
  const args = [skopeo, "--policy", join(dir, "policy.json")];
  if (opts.platform) {
    args.push("--override-os", opts.platform.os, "--override-arch", opts.platform.architecture);
    if (opts.platform.variant) args.push("--override-variant", opts.platform.variant);
  }
  args.push("copy", "--retry-times", "0");
  if (src.startsWith("docker://")) args.push("--src-tls-verify=false");
  if (dest.startsWith("docker://")) args.push("--dest-tls-verify=false");
  if (opts.all) args.push("--all");
  if (opts.srcCreds) args.push("--src-creds", `${opts.srcCreds.username}:${opts.srcCreds.password}`);
  if (opts.destCreds) args.push("--dest-creds", `${opts.destCreds.username}:${opts.destCreds.password}`);
  args.push(src, dest);
  // No auth file or registries.conf from the machine leaks into the test.
  const env = { REGISTRY_AUTH_FILE: join(dir, "auth.json"), CONTAINERS_REGISTRIES_CONF: "/dev/null" };
  await run(args, { netns: opts.netns, env, timeoutMs: opts.timeoutMs ?? 120_000 });
}

export interface PushOptions {
  /** host:port of the registry, e.g. registry.host. */
  registry: string;
  repo: string;
  /** Default: the built image's tag. */
  tag?: string;
  creds?: Credentials;
  netns?: string;
  timeoutMs?: number;
  scope?: Scope;
}

/** Pushes a built image or index (with all its platforms); returns docker://host/repo:tag. */
export async function pushImage(image: Built, opts: PushOptions): Promise<string> {
  const dest = `docker://${opts.registry}/${opts.repo}:${opts.tag ?? image.tag}`;
  await skopeoCopy(image.ref, dest, {
    all: image.kind === "index",
    destCreds: opts.creds,
    netns: opts.netns,
    timeoutMs: opts.timeoutMs,
    scope: opts.scope,
  });
  return dest;
}

export interface PullOptions {
  registry: string;
  repo: string;
  /** A tag, or a digest (sha256:...). */
  reference: string;
  /** Layout to pull into; default a fresh temp dir. */
  dir?: string;
  /** Tag inside the layout. Default "pulled". */
  tag?: string;
  /** Copy every platform of an index. Default true. */
  all?: boolean;
  platform?: Platform;
  creds?: Credentials;
  netns?: string;
  timeoutMs?: number;
  /** Hash every pulled blob. Default true. */
  verify?: boolean;
  scope?: Scope;
}

/** Pulls registry/repo:reference into an OCI layout and reads it back (digests of every blob). */
export async function pullImage(opts: PullOptions): Promise<Built> {
  const scope = opts.scope ?? rootScope;
  const dir = opts.dir ?? join(scope.tempDir("pull"), "layout");
  const tag = opts.tag ?? "pulled";
  const sep = opts.reference.startsWith("sha256:") ? "@" : ":";
  await skopeoCopy(`docker://${opts.registry}/${opts.repo}${sep}${opts.reference}`, `oci:${dir}:${tag}`, {
    all: opts.all ?? true,
    platform: opts.platform,
    srcCreds: opts.creds,
    netns: opts.netns,
    timeoutMs: opts.timeoutMs,
    scope,
  });
  return readLayout(dir, tag, { verify: opts.verify ?? true });
}
