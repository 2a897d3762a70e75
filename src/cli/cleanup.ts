// `kagami cleanup`: undoes `kagami configure`, restoring containerd's registry config_path
// from its _backup/ exactly as it was. Without a backup there is nothing to undo.
import { cleanupMirrors } from "../containerd-config/configure.ts";
import { ConfigError } from "../config.ts";
import { createLogger, type LogLevel } from "../observability/log.ts";
import { parseArgs, usage } from "./flags.ts";

const SYNOPSIS = "cleanup [flags]";
const ABOUT = "Restores <containerd-registry-config-path> from the _backup/ that 'kagami configure' made, then removes the backup.";

export async function cleanupCommand(argv: string[]): Promise<number> {
  const { config, positionals, help } = parseArgs("cleanup", argv);
  if (help) {
    console.log(usage("cleanup", SYNOPSIS, ABOUT));
    return 0;
  }
  if (positionals.length > 0) throw new ConfigError(`unexpected argument ${JSON.stringify(positionals[0])}\nUsage: kagami ${SYNOPSIS}`);
  const log = createLogger(config.logLevel as LogLevel);
  const configPath = config.containerdRegistryConfigPath;
  try {
    const changes = await cleanupMirrors(configPath);
    log.info({ configPath, ...changes }, changes.backup ? "containerd registry configuration restored" : "no backup to restore: nothing to do");
    return 0;
  } catch (e) {
    log.error({ configPath, err: (e as Error).message }, "cannot restore containerd registry configuration");
    return 1;
  }
}
