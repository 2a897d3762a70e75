import { describe, expect, test } from "bun:test";
import { parseArgs } from "../../src/cli/flags.ts";
import { ConfigError } from "../../src/config.ts";
import { parseBytes, parseDuration } from "../../src/units.ts";

const noFile = () => {
  throw new Error("no file");
};

describe("flags, env and config file", () => {
  test("defaults", () => {
    const { config } = parseArgs("serve", [], {}, noFile);
    expect(config.registryAddr).toEqual({ hostname: "", port: 5000 });
    expect(config.defaultRegistry).toBe("docker.io");
    expect(config.mdns).toBe(true);
    expect(config.logLevel).toBe("info");
  });
  test("precedence flag > env > file > default", () => {
    const file = "log-level: warn\ndefault-registry: file.example\nregistry-addr: ':7000'\n";
    const env = { KAGAMI_CONFIG: "/etc/kagami.yaml", KAGAMI_DEFAULT_REGISTRY: "env.example" };
    const { config } = parseArgs("serve", ["--registry-addr=127.0.0.2:6000"], env, () => file);
    expect(config.logLevel).toBe("warn");
    expect(config.defaultRegistry).toBe("env.example");
    expect(config.registryAddr).toEqual({ hostname: "127.0.0.2", port: 6000 });
  });
  test("TOML files", () => {
    const { config } = parseArgs("serve", ["--config", "k.toml"], {}, () => 'mdns = false\n"log-level" = "debug"\n');
    expect(config.mdns).toBe(false);
    expect(config.logLevel).toBe("debug");
  });
  test("booleans: --flag, --flag=false, --no-flag, env", () => {
    expect(parseArgs("serve", ["--mdns"], {}, noFile).config.mdns).toBe(true);
    expect(parseArgs("serve", ["--mdns=false"], {}, noFile).config.mdns).toBe(false);
    expect(parseArgs("serve", ["--no-mdns"], {}, noFile).config.mdns).toBe(false);
    expect(parseArgs("serve", [], { KAGAMI_MDNS: "false" }, noFile).config.mdns).toBe(false);
  });
  test("values as the next argument, positionals kept", () => {
    const r = parseArgs("import", ["--data-dir", "/d", "a:b", "c"], {}, noFile);
    expect(r.config.dataDir).toBe("/d");
    expect(r.positionals).toEqual(["a:b", "c"]);
  });
  test.each([
    [["--bogus"], "unknown flag"],
    [["--mdns=maybe"], "expected true or false"],
    [["--registry-addr=5000"], "invalid address"],
    [["--registry-addr=:70000"], "invalid address"],
    [["--log-level=loud"], "expected one of"],
    [["--shutdown-timeout=soon"], "invalid duration"],
    [["--registry-addr"], "needs a value"],
    [["-x"], "unknown option"],
  ])("%p is a clear error", (argv, msg) => {
    expect(() => parseArgs("serve", argv, {}, noFile)).toThrow(ConfigError);
    expect(() => parseArgs("serve", argv, {}, noFile)).toThrow(msg);
  });
  test("a flag of another command is refused with the reason", () => {
    expect(() => parseArgs("import", ["--mdns"], {}, noFile)).toThrow("does not apply");
  });
  test("bad env values and unknown file keys are errors", () => {
    expect(() => parseArgs("serve", [], { KAGAMI_MDNS: "yes please" }, noFile)).toThrow(ConfigError);
    expect(() => parseArgs("serve", ["--config=x.yaml"], {}, () => "nonsense-key: 1\n")).toThrow("unknown key");
    expect(() => parseArgs("serve", ["--config=x.yaml"], {}, () => "- a\n- b\n")).toThrow("expected a map");
    expect(() => parseArgs("serve", ["--config=x.toml"], {}, () => "= broken")).toThrow(ConfigError);
  });
  test("a byte budget below its least value is refused, not clamped", () => {
    expect(() => parseArgs("serve", ["--memory-budget=64Ki"], {}, noFile)).toThrow("--memory-budget: at least 1.0 MiB, got 64.0 KiB");
    expect(() => parseArgs("serve", [], { KAGAMI_MEMORY_BUDGET: "0" }, noFile)).toThrow(ConfigError);
  });
});

describe("units", () => {
  test("durations", () => {
    expect(parseDuration("20ms")).toBe(20);
    expect(parseDuration("1.5s")).toBe(1500);
    expect(parseDuration("1h30m")).toBe(5_400_000);
    expect(parseDuration("250")).toBe(250);
    expect(() => parseDuration("10 minutes")).toThrow();
  });
  test("sizes", () => {
    expect(parseBytes("96Mi")).toBe(96 * 2 ** 20);
    expect(parseBytes("20Gi")).toBe(20 * 2 ** 30);
    expect(parseBytes("1G")).toBe(1e9);
    expect(parseBytes("512k")).toBe(512_000);
    expect(() => parseBytes("lots")).toThrow();
    expect(() => parseBytes("-5Mi")).toThrow();
  });
});
