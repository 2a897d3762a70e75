// `kagami version`. The commit is stamped in by scripts/build.ts; from sources it is read
// from git when available.
import pkg from "../../package.json" with { type: "json" };

declare const KAGAMI_COMMIT: string | undefined;

export function versionInfo(): { version: string; commit: string; bun: string } {
  let commit = typeof KAGAMI_COMMIT === "string" ? KAGAMI_COMMIT : "";
  if (!commit) {
    const r = Bun.spawnSync(["git", "rev-parse", "--short=12", "HEAD"], { cwd: import.meta.dir, stderr: "ignore" });
    commit = r.success ? r.stdout.toString().trim() : "unknown";
  }
  return { version: pkg.version, commit, bun: Bun.version };
}

export async function versionCommand(argv: string[]): Promise<number> {
  const info = versionInfo();
  if (argv.includes("--json")) console.log(JSON.stringify(info));
  else console.log(`kagami ${info.version} (commit ${info.commit}, bun ${info.bun})`);
  return 0;
}
