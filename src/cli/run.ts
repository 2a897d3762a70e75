// Subcommand dispatch. Each subcommand is imported on demand so `kagami version` does not
// pay for libp2p.
import { ConfigError } from "../config.ts";

type CommandMain = (argv: string[]) => Promise<number>;

const COMMANDS: Record<string, { about: string; load: () => Promise<CommandMain> }> = {
  serve: { about: "Run the registry mirror (the default)", load: async () => (await import("./serve.ts")).serveCommand },
  import: { about: "Put an image from an OCI layout into the local store", load: async () => (await import("./import.ts")).importCommand },
  configure: {
    about: "Point containerd's registry mirrors (certs.d hosts.toml) at kagami",
    load: async () => (await import("./configure.ts")).configureCommand,
  },
  cleanup: { about: "Restore containerd's registry configuration from before configure", load: async () => (await import("./cleanup.ts")).cleanupCommand },
  gc: { about: "Evict least recently used content past --cache-size or --cache-ttl", load: async () => (await import("./gc.ts")).gcCommand },
  version: { about: "Print version, commit and Bun version", load: async () => (await import("./version.ts")).versionCommand },
};

export function topLevelHelp(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((c) => c.length));
  return [
    "kagami: a peer-to-peer OCI registry mirror and edge cache",
    "",
    "Usage: kagami [command] [flags]",
    "",
    "Commands:",
    ...Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(width)}  ${c.about}`),
    "",
    "Run 'kagami <command> --help' for the flags of a command.",
  ].join("\n");
}

export async function run(argv: string[]): Promise<number> {
  const [first, ...rest] = argv;
  if (first === "--help" || first === "-h" || first === "help") {
    console.log(topLevelHelp());
    return 0;
  }
  if (first === "--version") return (await COMMANDS.version!.load())([]);
  const explicit = first !== undefined && !first.startsWith("-");
  const name = explicit ? first : "serve";
  const command = COMMANDS[name];
  if (!command) {
    console.error(`kagami: unknown command ${JSON.stringify(name)}\n\n${topLevelHelp()}`);
    return 2;
  }
  try {
    return await (await command.load())(explicit ? rest : argv);
  } catch (e) {
    if (e instanceof ConfigError) {
      console.error(`kagami ${name}: ${e.message}`);
      return 2;
    }
    // A start-up failure (a port in use, an unreadable data dir) is one clear line, not a trace.
    console.error(`kagami ${name}: ${e instanceof Error ? e.message : String(e)}`);
    return 1;
  }
}
