// `kagami import <layout-dir>:<tag> <registry>/<repo>:<tag>`
import { ConfigError } from "../config.ts";
import { errorMessage } from "../errors.ts";
import { formatTagReference, parseTagReference, ReferenceError, type TagReference } from "../oci/index.ts";
import { LocalStore } from "../store/local.ts";
import { importLayout, type ImportProgress } from "../store/oci-layout.ts";
import { formatBytes } from "../units.ts";
import { parseArgs, usage } from "./flags.ts";

const SYNOPSIS = "import [--data-dir D] <layout-dir>:<tag> <registry>/<repo>:<tag>";
const ABOUT = "Copies every blob reachable from the layout's tag into the local store, verifying each digest, then records the tag.";

export function splitLayoutArg(arg: string): { dir: string; tag: string } {
  const colon = arg.lastIndexOf(":");
  if (colon <= 0 || arg.slice(colon + 1).includes("/")) throw new ConfigError(`expected <layout-dir>:<tag>, got ${JSON.stringify(arg)}`);
  return { dir: arg.slice(0, colon), tag: arg.slice(colon + 1) };
}

export async function importCommand(argv: string[]): Promise<number> {
  const { config, positionals, help } = parseArgs("import", argv);
  if (help) {
    console.log(usage("import", SYNOPSIS, ABOUT));
    return 0;
  }
  if (positionals.length !== 2) throw new ConfigError(`expected two arguments\nUsage: kagami ${SYNOPSIS}`);
  const source = splitLayoutArg(positionals[0]!);
  let target: TagReference;
  try {
    target = parseTagReference(positionals[1]!);
  } catch (e) {
    throw new ConfigError(e instanceof ReferenceError ? e.message : String(e));
  }
  const store = await LocalStore.open(config.dataDir);
  const tty = process.stderr.isTTY === true;
  const show = (p: ImportProgress) => {
    if (tty) process.stderr.write(`\r${p.blobs}/${p.totalBlobs} blobs, ${formatBytes(p.bytes)} / ${formatBytes(p.totalBytes)}   `);
  };
  try {
    const result = await importLayout(store, source.dir, source.tag, target, show);
    if (tty) process.stderr.write("\n");
    console.log(
      `imported ${formatTagReference(target)} ${result.root.digest}: ${result.blobs} blobs, ${formatBytes(result.bytes)}` +
        (result.skippedManifests ? ` (${result.skippedManifests} platform manifests not in the layout)` : ""),
    );
    return 0;
  } catch (e) {
    if (tty) process.stderr.write("\n");
    console.error(`kagami import: ${errorMessage(e)}`);
    return 1;
  } finally {
    await store.close();
  }
}
