// The systemd files say what the docs promise: the env example only names real flags with
// valid values, and the unit keeps its hardening, memory limits and notify contract.
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { parseArgs } from "../../src/cli/flags.ts";
import { FLAGS } from "../../src/config.ts";
import { parseBytes, parseDuration } from "../../src/units.ts";

const DIR = resolve(import.meta.dir, "../../deploy/systemd");

/** Every `KAGAMI_X=v` line, commented-out examples included (they must work when uncommented). */
function envLines(text: string): [string, string][] {
  return text
    .split("\n")
    .map((l) => l.replace(/^#\s?/, ""))
    .filter((l) => /^KAGAMI_[A-Z0-9_]+=/.test(l))
    .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]);
}

/** [Section] -> key -> values (a key may repeat). */
function parseUnit(text: string): Map<string, Map<string, string[]>> {
  const sections = new Map<string, Map<string, string[]>>();
  let current: Map<string, string[]> | undefined;
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const header = line.match(/^\[(.+)\]$/);
    if (header) {
      current = new Map();
      sections.set(header[1]!, current);
      continue;
    }
    const eq = line.indexOf("=");
    const key = line.slice(0, eq);
    current!.set(key, [...(current!.get(key) ?? []), line.slice(eq + 1)]);
  }
  return sections;
}

describe("kagami.env", () => {
  const lines = envLines(readFileSync(join(DIR, "kagami.env"), "utf8"));
  const serveEnvNames = Object.entries(FLAGS)
    .filter(([, s]) => (s.commands as readonly string[]).includes("serve"))
    .map(([n]) => `KAGAMI_${n.toUpperCase().replace(/-/g, "_")}`);

  test("names only flags of kagami serve", () => {
    expect(lines.length).toBeGreaterThan(5);
    for (const [name] of lines) expect(serveEnvNames).toContain(name);
  });

  test("each value parses as its flag", () => {
    for (const [name, value] of lines) expect(() => parseArgs("serve", [], { [name]: value })).not.toThrow();
  });
});

describe("kagami.service", () => {
  const unit = parseUnit(readFileSync(join(DIR, "kagami.service"), "utf8"));
  const service = unit.get("Service")!;
  const one = (key: string) => service.get(key)?.at(-1);

  test("runs kagami serve as a notify service that restarts on failure", () => {
    expect(one("ExecStart")).toBe("/usr/local/bin/kagami serve");
    expect(one("Type")).toBe("notify");
    expect(one("Restart")).toBe("on-failure");
    expect(one("EnvironmentFile")).toBe("-/etc/kagami/kagami.env");
    expect(unit.get("Install")!.get("WantedBy")).toEqual(["multi-user.target"]);
  });

  test("keeps its state in StateDirectory, the data dir kagami is told", () => {
    expect(one("StateDirectory")).toBe("kagami");
    expect(service.get("Environment")).toContain("KAGAMI_DATA_DIR=/var/lib/kagami");
    expect(one("DynamicUser")).toBe("yes");
  });

  test("is sandboxed with no capability", () => {
    for (const [k, v] of Object.entries({ ProtectSystem: "strict", ProtectHome: "yes", NoNewPrivileges: "yes", PrivateTmp: "yes", CapabilityBoundingSet: "", AmbientCapabilities: "" })) {
      expect(`${k}=${one(k)}`).toBe(`${k}=${v}`);
    }
    // JavaScriptCore's JIT needs writable+executable pages.
    expect(one("MemoryDenyWriteExecute")).toBeUndefined();
  });

  test("MemoryHigh sits below MemoryMax", () => {
    const high = parseBytes(one("MemoryHigh")!.replace(/([KMG])$/, "$1i"));
    const max = parseBytes(one("MemoryMax")!.replace(/([KMG])$/, "$1i"));
    expect(high).toBeLessThan(max);
    expect(max).toBeGreaterThanOrEqual(128 * 2 ** 20);
  });

  test("stops after in-flight responses had --shutdown-timeout to finish", () => {
    const stop = parseDuration(one("TimeoutStopSec")!);
    expect(stop).toBeGreaterThan(parseDuration(String(FLAGS["shutdown-timeout"].default)));
  });
});
