// Prerequisites of integration and e2e tests. A missing tool is always a failure with a
// message saying what to install: never a silent skip. In CI (env CI set) the message
// blames .ci/run, which must install it.
import { existsSync, readFileSync } from "node:fs";

/** Debian package that provides each tool the rig uses. */
const PACKAGES: Record<string, string> = {
  skopeo: "skopeo",
  umoci: "umoci",
  "docker-registry": "docker-registry",
  containerd: "containerd",
  runc: "runc",
  ip: "iproute2",
  tc: "iproute2",
  openssl: "openssl",
  bash: "bash",
  timeout: "coreutils",
  nginx: "nginx-light",
};

// Test processes often run without the sbin directories on PATH.
const EXTRA_PATH = ["/usr/local/sbin", "/usr/sbin", "/sbin"];

export class MissingPrerequisiteError extends Error {
  override readonly name = "MissingPrerequisiteError";
}

function missing(what: string, fix: string): never {
  const ci = process.env.CI !== undefined && process.env.CI !== "" && process.env.CI !== "false";
  throw new MissingPrerequisiteError(
    ci
      ? `prerequisite missing on the CI machine: ${what}. .ci/run must provide it (${fix}).`
      : `prerequisite missing: ${what}. This test needs it and does not skip; ${fix}.`,
  );
}

/** Absolute path of a tool, or a MissingPrerequisiteError naming the package to install. */
export function requireTool(name: string): string {
  const path = Bun.which(name) ?? Bun.which(name, { PATH: EXTRA_PATH.join(":") });
  if (path) return path;
  const pkg = PACKAGES[name];
  return missing(`'${name}' is not on PATH`, pkg ? `apt-get install -y ${pkg}` : `install '${name}'`);
}

export function requireTools(...names: string[]): string[] {
  return names.map(requireTool);
}

export function requireRoot(): void {
  if (process.getuid?.() !== 0) missing("root (namespaces, cgroups and containerd need it)", "run the tests as root");
}

/** Root, iproute2 and the kernel's network namespaces. */
export function requireNetns(): void {
  requireRoot();
  requireTools("ip", "bash", "timeout");
  if (!existsSync("/proc/self/ns/net")) missing("network namespace support in the kernel", "use a kernel with CONFIG_NET_NS");
}

/** A writable memory cgroup: v1 (/sys/fs/cgroup/memory) or v2 with the memory controller. */
export function requireMemoryCgroup(): 1 | 2 {
  requireRoot();
  if (existsSync("/sys/fs/cgroup/memory/cgroup.procs")) return 1;
  try {
    if (readFileSync("/sys/fs/cgroup/cgroup.controllers", "utf8").split(/\s+/).includes("memory")) return 2;
  } catch {
    // Neither hierarchy is mounted.
  }
  return missing("a memory cgroup (v1 /sys/fs/cgroup/memory or v2 with the memory controller)", "mount cgroupfs with the memory controller");
}
