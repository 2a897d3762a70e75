// containerd's hosts.toml (registry host configuration, config_path/<registry>/hosts.toml):
// the mirrors first, tried in order with a short dial timeout so a dead mirror costs
// 200 ms, then the server line (the registry itself).
import { parse, stringify } from "smol-toml";
import { InvalidError } from "../errors.ts";

export interface HostsTomlOptions {
  /** The registry, tried after the mirrors; none for _default (containerd uses the requested host). */
  server?: string;
  mirrors: readonly string[];
  /** Mirrors may resolve tags (capability "resolve"), not only serve digests. */
  resolveTags: boolean;
  /** Host tables of the hosts.toml this one replaces, kept after ours (--prepend-existing). */
  existingHosts?: string;
}

export const DIAL_TIMEOUT = "200ms";

export function renderHostsToml(opts: HostsTomlOptions): string {
  const q = (s: string) => JSON.stringify(s);
  const capabilities = opts.resolveTags ? ["pull", "resolve"] : ["pull"];
  const parts: string[] = [];
  if (opts.server) parts.push(`server = ${q(opts.server)}`);
  for (const mirror of opts.mirrors) {
    parts.push(
      [`[host.${q(mirror)}]`, `  capabilities = [${capabilities.map(q).join(", ")}]`, `  dial_timeout = ${q(DIAL_TIMEOUT)}`].join("\n"),
    );
  }
  if (opts.existingHosts) parts.push(opts.existingHosts.trim());
  return `${parts.join("\n\n")}\n`;
}

/**
 * The `[host."…"]` tables of an existing hosts.toml, in their order, re-serialised (the
 * server line and top-level settings are not kept: ours replace them). Empty when it has none.
 * `skip` drops hosts that ours already list, so a host is not declared twice.
 */
export function existingHostTables(text: string, skip: readonly string[] = []): string {
  let doc: Record<string, unknown>;
  try {
    doc = parse(text) as Record<string, unknown>;
  } catch (e) {
    throw new InvalidError(`existing hosts.toml does not parse: ${(e as Error).message.split("\n")[0]}`);
  }
  const hosts = doc.host;
  if (typeof hosts !== "object" || hosts === null || Array.isArray(hosts)) return "";
  return Object.entries(hosts as Record<string, unknown>)
    .filter(([name]) => !skip.includes(name))
    .map(([name, table]) => stringify({ host: { [name]: table } }).trim())
    .join("\n\n");
}
