// Command line, environment and config file -> Config, with precedence
// flag > env > file > default. Unknown or malformed values are ConfigErrors (exit 2).
import { readFileSync, statSync } from "node:fs";
import {
  camelCase,
  coerce,
  ConfigError,
  defaults,
  envName,
  flagSpec,
  flagsOf,
  type Command,
  type Config,
} from "../config.ts";

export interface ParsedArgs {
  config: Config;
  positionals: string[];
  help: boolean;
}

/** Reads a config file's text; injectable for tests. */
export type ReadFile = (path: string) => string;

const MAX_CONFIG_FILE_BYTES = 1 << 20;

function readConfigFile(path: string): string {
  let size: number;
  try {
    size = statSync(path).size;
  } catch (e) {
    throw new ConfigError(`--config: cannot read ${path}: ${(e as Error).message}`);
  }
  if (size > MAX_CONFIG_FILE_BYTES) throw new ConfigError(`--config: ${path} is larger than 1 MiB`);
  return readFileSync(path, "utf8");
}

export function parseArgs(
  command: Command,
  argv: readonly string[],
  env: Record<string, string | undefined> = process.env,
  readFile: ReadFile = readConfigFile,
): ParsedArgs {
  const allowed = new Map(flagsOf(command));
  const fromArgs = new Map<string, unknown>();
  const positionals: string[] = [];
  let help = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] ?? "";
    if (arg === "--") {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (arg === "--help" || arg === "-h") {
      help = true;
      continue;
    }
    if (!arg.startsWith("--")) {
      if (arg.startsWith("-") && arg.length > 1) throw new ConfigError(`unknown option ${arg} (flags are --long-form)`);
      positionals.push(arg);
      continue;
    }
    const eq = arg.indexOf("=");
    let name = eq < 0 ? arg.slice(2) : arg.slice(2, eq);
    let value: unknown = eq < 0 ? undefined : arg.slice(eq + 1);
    let spec = allowed.get(name);
    if (!spec && name.startsWith("no-") && allowed.get(name.slice(3))?.kind === "boolean" && value === undefined) {
      name = name.slice(3);
      spec = allowed.get(name);
      value = false;
    }
    if (!spec) {
      throw new ConfigError(flagSpec(name) ? `--${name} does not apply to 'kagami ${command}'` : `unknown flag --${name}`);
    }
    if (value === undefined) {
      if (spec.kind === "boolean") value = true;
      else {
        const next = argv[i + 1];
        if (next === undefined || next.startsWith("--")) throw new ConfigError(`--${name} needs a value`);
        value = next;
        i++;
      }
    }
    fromArgs.set(name, coerce(name, spec, value));
  }

  const merged = defaults();
  const configPath = (fromArgs.get("config") as string | undefined) ?? env[envName("config")];
  if (configPath) {
    for (const [name, raw] of Object.entries(parseConfigFile(configPath, readFile(configPath)))) {
      const spec = flagSpec(name);
      if (!spec) throw new ConfigError(`${configPath}: unknown key ${JSON.stringify(name)}`);
      if (name === "config") throw new ConfigError(`${configPath}: a config file cannot name another`);
      merged[camelCase(name)] = coerce(name, spec, raw);
    }
  }
  for (const [name, spec] of allowed) {
    const v = env[envName(name)];
    if (v !== undefined && v !== "") merged[camelCase(name)] = coerce(name, spec, v);
  }
  for (const [name, v] of fromArgs) merged[camelCase(name)] = v;
  return { config: merged as Config, positionals, help };
}

function parseConfigFile(path: string, text: string): Record<string, unknown> {
  let doc: unknown;
  try {
    // Parsers load only when a config file is given (yaml alone costs ~6 MiB of RSS).
    doc = /\.toml$/i.test(path)
      ? (require("smol-toml") as typeof import("smol-toml")).parse(text)
      : (require("yaml") as typeof import("yaml")).parse(text);
  } catch (e) {
    throw new ConfigError(`${path}: ${(e as Error).message.split("\n")[0]}`);
  }
  if (doc === null || doc === undefined) return {};
  if (typeof doc !== "object" || Array.isArray(doc)) throw new ConfigError(`${path}: expected a map of flag names to values`);
  return doc as Record<string, unknown>;
}

/** Help text of a command, derived from FLAGS. */
export function usage(command: Command, synopsis: string, about: string): string {
  const lines = [`Usage: kagami ${synopsis}`, "", about, "", "Flags (each also read from KAGAMI_<FLAG> and --config):"];
  for (const [name, spec] of flagsOf(command)) {
    const def = spec.defaultText ?? (spec.default === undefined ? "" : ` (default ${JSON.stringify(spec.default)})`);
    const shown = spec.defaultText ? ` (default ${spec.defaultText})` : def;
    const choices = spec.choices ? ` [${spec.choices.join("|")}]` : "";
    lines.push(`  --${name}${spec.kind === "boolean" ? "" : " <" + spec.kind + ">"}${choices}`, `      ${spec.help}${shown}`);
  }
  lines.push("  --help", "      Show this help");
  return lines.join("\n");
}
