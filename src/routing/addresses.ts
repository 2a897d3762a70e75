// Multiaddr rules shared by the node, the router and bootstrap: which of our addresses are
// announced, and how a peer's libp2p address becomes the origin of its registry API.
import type { Multiaddr } from "@multiformats/multiaddr";
import { isIP } from "node:net";

/** IP and TCP port of an /ip4|/ip6 + /tcp multiaddr, else undefined. */
export function ipTcp(addr: Multiaddr): { ip: string; family: 4 | 6; port: number } | undefined {
  const [first, second] = addr.getComponents();
  if (!first || !second || second.name !== "tcp" || first.value === undefined || second.value === undefined) return undefined;
  if (first.name !== "ip4" && first.name !== "ip6") return undefined;
  return { ip: first.value, family: first.name === "ip4" ? 4 : 6, port: Number(second.value) };
}

export function isLoopback(ip: string): boolean {
  return ip.startsWith("127.") || ip === "::1" || ip.startsWith("::ffff:127.");
}

function isUnspecified(ip: string): boolean {
  return ip === "0.0.0.0" || ip === "::";
}

function isLinkLocal6(ip: string): boolean {
  return /^fe[89ab]/i.test(ip);
}

/**
 * The addresses a node announces: IP + TCP only (a /dns4 address makes Spegel drop the peer),
 * never unspecified or IPv6 link-local, and loopback only when the node listens on loopback
 * (tests on 127.0.0.x; a node bound to all interfaces must not tell others to dial 127.0.0.1).
 */
export function announceFilter(boundToLoopback: boolean): (addrs: Multiaddr[]) => Multiaddr[] {
  return (addrs) =>
    addrs.filter((addr) => {
      const a = ipTcp(addr);
      if (!a || isUnspecified(a.ip) || isLinkLocal6(a.ip)) return false;
      return boundToLoopback || !isLoopback(a.ip);
    });
}

/**
 * Origin of a peer's registry: the IP of its first usable address with our own registry port
 * (Spegel-compatible: all nodes share the port). Non-loopback addresses win over loopback.
 */
export function registryUrl(addrs: readonly Multiaddr[], registryPort: number): string | undefined {
  let loopback: string | undefined;
  for (const addr of addrs) {
    const a = ipTcp(addr);
    if (!a || isUnspecified(a.ip) || isLinkLocal6(a.ip)) continue;
    const url = `http://${a.family === 6 ? `[${a.ip}]` : a.ip}:${registryPort}`;
    if (!isLoopback(a.ip)) return url;
    loopback ??= url;
  }
  return loopback;
}

/** Listen multiaddrs for a router address; an empty host listens on every IPv4 and IPv6 interface. */
export function listenAddrs(hostname: string, port: number): string[] {
  if (hostname === "") return [`/ip4/0.0.0.0/tcp/${port}`, `/ip6/::/tcp/${port}`];
  const family = isIP(hostname);
  if (family === 4) return [`/ip4/${hostname}/tcp/${port}`];
  if (family === 6) return [`/ip6/${hostname}/tcp/${port}`];
  throw new Error(`--router-addr needs an IP address or an empty host, got ${JSON.stringify(hostname)}`);
}
