// Several "hosts" on one machine: network namespaces joined by veth pairs to a bridge, with
// addresses in a private test subnet that exists only inside the namespaces (the bridge gets
// an address only when the test needs host -> namespace traffic). Links can be cut and
// rate-limited. Every name carries our pid, so parallel runs never clash, and everything is
// deleted at teardown, at process exit, and (for runs that died) the next time a network is
// created.
import { spawnSync } from "node:child_process";
import { RIG_PREFIX, rootScope, safeLabel, type Scope } from "./cleanup.ts";
import { run, spawnProcess, type Proc, type RunOptions, type RunResult, type SpawnOptions } from "./proc.ts";
import { requireNetns, requireTool } from "./require.ts";

export interface NetNode {
  /** The label given at creation, e.g. "registry" or "node1". */
  readonly label: string;
  /** Namespace name, for `ip netns exec`. */
  readonly netns: string;
  /** Address on the bridge, e.g. 10.251.37.2. */
  readonly ip: string;
  /** Interface name inside the namespace. */
  readonly ifname: "eth0";
  /** Host side of the veth pair (a bridge port). */
  readonly hostVeth: string;
}

export type Rate = `${number}${"kbit" | "mbit" | "gbit"}`;

export interface RateLimit {
  rate: Rate;
  /** egress: what the node sends (tbf on its eth0); ingress: what it receives (tbf on the host side veth). Default "egress". */
  direction?: "egress" | "ingress" | "both";
}

export interface NetworkOptions {
  /** A count (labels node1..nodeN) or the labels. At most 250. */
  nodes: number | string[];
  /** Give the bridge <subnet>.1 so the host namespace can reach the nodes. Default false. */
  hostAddress?: boolean;
  /** Route 224.0.0.0/4 via eth0 in every node, which mDNS needs. Default true. */
  multicastRoute?: boolean;
  scope?: Scope;
}

export interface Network {
  readonly bridge: string;
  /** e.g. 10.251.37.0/24 */
  readonly subnet: string;
  /** The bridge's address when hostAddress was set. */
  readonly hostIp: string | undefined;
  readonly nodes: readonly NetNode[];
  node(label: string): NetNode;
  /** Runs a command to completion inside the node. */
  exec(node: NetNode, cmd: readonly string[], opts?: Omit<RunOptions, "netns">): Promise<RunResult>;
  /** Starts a long-running process inside the node (stopped at teardown). */
  spawn(node: NetNode, opts: Omit<SpawnOptions, "netns">): Proc;
  /** Cuts the node off the bridge (down) or reconnects it (up); addresses and routes stay. */
  setLink(node: NetNode, state: "up" | "down"): Promise<void>;
  limitRate(node: NetNode, limit: RateLimit): Promise<void>;
  clearRate(node: NetNode): Promise<void>;
  teardown(): Promise<void>;
}

let networks = 0;
const pidTag = process.pid.toString(36);

export async function createNetwork(opts: NetworkOptions): Promise<Network> {
  requireNetns();
  const ip = requireTool("ip");
  const scope = opts.scope ?? rootScope;
  const labels = typeof opts.nodes === "number" ? Array.from({ length: opts.nodes }, (_, i) => `node${i + 1}`) : opts.nodes.map((l) => safeLabel(l, 12));
  if (labels.length === 0 || labels.length > 250) throw new Error(`createNetwork: 1 to 250 nodes, got ${labels.length}`);
  if (new Set(labels).size !== labels.length) throw new Error(`createNetwork: duplicate labels ${labels.join(",")}`);
  sweepStale();

  const n = ++networks;
  const prefix = await pickSubnet();
  const bridge = ifName(`${RIG_PREFIX}${pidTag}-b${n}`);
  const netnsNames: string[] = [];
  const links: string[] = [bridge];
  const deleteAll = () => {
    for (const ns of netnsNames) spawnSync(ip, ["netns", "del", ns]);
    for (const l of links) spawnSync(ip, ["link", "del", l], { stdio: "ignore" });
  };
  const release = scope.defer(`network ${bridge}`, deleteAll, deleteAll);
  const sh = (...args: string[]) => run([ip, ...args], { timeoutMs: 10_000 });

  const nodes: NetNode[] = [];
  try {
    await sh("link", "add", bridge, "type", "bridge", "mcast_snooping", "0");
    const hostIp = opts.hostAddress ? `${prefix}.1` : undefined;
    if (hostIp) await sh("addr", "add", `${hostIp}/24`, "dev", bridge);
    await sh("link", "set", bridge, "up");
    for (const [i, label] of labels.entries()) {
      const netns = `${RIG_PREFIX}-${pidTag}-${n}-${label}`;
      const hostVeth = ifName(`${RIG_PREFIX}${pidTag}-${n}v${i}`);
      const peer = ifName(`${RIG_PREFIX}${pidTag}-${n}p${i}`);
      const addr = `${prefix}.${i + 2}`;
      await sh("netns", "add", netns);
      netnsNames.push(netns);
      await sh("link", "add", hostVeth, "type", "veth", "peer", "name", peer);
      links.push(hostVeth);
      await sh("link", "set", peer, "netns", netns);
      await sh("-n", netns, "link", "set", peer, "name", "eth0");
      await sh("-n", netns, "addr", "add", `${addr}/24`, "dev", "eth0");
      await sh("-n", netns, "link", "set", "lo", "up");
      await sh("-n", netns, "link", "set", "eth0", "up");
      if (opts.multicastRoute ?? true) await sh("-n", netns, "route", "add", "224.0.0.0/4", "dev", "eth0");
      await sh("link", "set", hostVeth, "master", bridge);
      await sh("link", "set", hostVeth, "up");
      nodes.push({ label, netns, ip: addr, ifname: "eth0", hostVeth });
    }
  } catch (e) {
    deleteAll();
    release();
    throw e;
  }

  const tc = () => requireTool("tc");
  const tbf = (rate: Rate) => {
    const bits = parseRate(rate);
    // burst must hold a full GSO segment (64 KiB) and ~20 ms of traffic.
    const burst = Math.max(256 * 1024, Math.ceil(bits / 8 / 50));
    return ["tbf", "rate", rate, "burst", String(burst), "latency", "200ms"];
  };
  return {
    bridge,
    subnet: `${prefix}.0/24`,
    hostIp: opts.hostAddress ? `${prefix}.1` : undefined,
    nodes,
    node(label) {
      const found = nodes.find((x) => x.label === label);
      if (!found) throw new Error(`no node ${label} in network ${bridge} (have ${labels.join(", ")})`);
      return found;
    },
    exec: (node, cmd, runOpts) => run(cmd, { ...runOpts, netns: node.netns }),
    spawn: (node, spawnOpts) => spawnProcess({ scope, ...spawnOpts, netns: node.netns }),
    async setLink(node, state) {
      await sh("link", "set", node.hostVeth, state);
    },
    async limitRate(node, limit) {
      const dir = limit.direction ?? "egress";
      if (dir !== "ingress") await run([tc(), "qdisc", "replace", "dev", node.ifname, "root", ...tbf(limit.rate)], { netns: node.netns });
      if (dir !== "egress") await run([tc(), "qdisc", "replace", "dev", node.hostVeth, "root", ...tbf(limit.rate)]);
    },
    async clearRate(node) {
      await run([tc(), "qdisc", "del", "dev", node.ifname, "root"], { netns: node.netns, allowFailure: true });
      await run([tc(), "qdisc", "del", "dev", node.hostVeth, "root"], { allowFailure: true });
    },
    async teardown() {
      deleteAll();
      release();
    },
  };
}

function parseRate(rate: Rate): number {
  const m = rate.match(/^(\d+(?:\.\d+)?)(kbit|mbit|gbit)$/);
  if (!m) throw new Error(`invalid rate ${rate} (e.g. 100mbit)`);
  return Number(m[1]) * { kbit: 1e3, mbit: 1e6, gbit: 1e9 }[m[2] as "kbit"];
}

/** A 10.251.X prefix not routed on the host yet (only matters for hostAddress networks). */
async function pickSubnet(): Promise<string> {
  const routes = (await run(["ip", "-4", "route", "show"])).stdout;
  for (let k = 0; k < 256; k++) {
    const x = (process.pid + networks * 7 + k) % 256;
    const prefix = `10.251.${x}`;
    if (!routes.includes(`${prefix}.`)) return prefix;
  }
  throw new Error("no free 10.251.X.0/24 subnet");
}

/** Namespaces and links named by the rig whose owner process is gone. */
export function listRigObjects(pidFilter?: number): { netns: string[]; links: string[] } {
  const netns = spawnSync("ip", ["netns", "list"], { encoding: "utf8" })
    .stdout.split("\n")
    .map((l) => l.split(" ")[0] ?? "")
    .filter((name) => name.startsWith(`${RIG_PREFIX}-`));
  const links = spawnSync("ip", ["-o", "link", "show"], { encoding: "utf8" })
    .stdout.split("\n")
    .map((l) => l.split(":")[1]?.trim().split("@")[0] ?? "")
    .filter((name) => name.startsWith(RIG_PREFIX));
  if (pidFilter === undefined) return { netns, links };
  return { netns: netns.filter((x) => ownerPid(x) === pidFilter), links: links.filter((x) => ownerPid(x) === pidFilter) };
}

/** kgr-<pid36>-... (namespaces) and kgr<pid36>-... (links) -> pid. */
function ownerPid(name: string): number {
  return parseInt(name.slice(RIG_PREFIX.length).replace(/^-/, "").split("-")[0] ?? "", 36);
}

/** Linux interface names have at most 15 characters. */
function ifName(name: string): string {
  if (name.length > 15) throw new Error(`interface name ${name} is longer than 15 characters`);
  return name;
}

function sweepStale(): void {
  const all = listRigObjects();
  const alive = (name: string) => {
    const pid = ownerPid(name);
    if (!Number.isSafeInteger(pid) || pid <= 0) return true;
    try {
      process.kill(pid, 0);
      return true;
    } catch (e) {
      return (e as NodeJS.ErrnoException).code === "EPERM";
    }
  };
  for (const ns of all.netns) if (!alive(ns)) spawnSync("ip", ["netns", "del", ns]);
  for (const l of all.links) if (!alive(l)) spawnSync("ip", ["link", "del", l], { stdio: "ignore" });
}
