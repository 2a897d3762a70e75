// `kagami configure`: points containerd at the mirrors by writing hosts.toml files into its
// registry config_path (existing configuration is kept in _backup/ for `kagami cleanup`).
import { configureMirrors } from "../containerd-config/configure.ts";
import { ConfigError } from "../config.ts";
import { InvalidError } from "../errors.ts";
import { createLogger, type LogLevel } from "../observability/log.ts";
import { parseArgs, usage } from "./flags.ts";

const SYNOPSIS = "configure [flags]";
const ABOUT =
  "Writes <containerd-registry-config-path>/<registry>/hosts.toml for each mirrored registry (or _default for all),\n" +
  "so containerd tries the mirror targets first and the registry after them. Existing files move to _backup/;\n" +
  "running it again changes nothing. containerd reads the files on every pull: no restart is needed.";

export async function configureCommand(argv: string[]): Promise<number> {
  const { config, positionals, help } = parseArgs("configure", argv);
  if (help) {
    console.log(usage("configure", SYNOPSIS, ABOUT));
    return 0;
  }
  if (positionals.length > 0) throw new ConfigError(`unexpected argument ${JSON.stringify(positionals[0])}\nUsage: kagami ${SYNOPSIS}`);
  const log = createLogger(config.logLevel as LogLevel);
  const configPath = config.containerdRegistryConfigPath;
  try {
    const changes = await configureMirrors({
      configPath,
      mirroredRegistries: config.mirroredRegistries,
      mirrorTargets: config.mirrorTargets,
      resolveTags: config.resolveTags,
      prependExisting: config.prependExisting,
    });
    log.info({ configPath, ...changes }, changes.written.length + changes.removed.length > 0 ? "containerd mirror configuration written" : "containerd mirror configuration already up to date");
    return 0;
  } catch (e) {
    if (e instanceof InvalidError) throw new ConfigError(e.message);
    log.error({ configPath, err: (e as Error).message }, "cannot write containerd mirror configuration");
    return 1;
  }
}
