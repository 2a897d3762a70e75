// Rewrites the configuration reference between the flags markers of README.md:
//   bun scripts/readme-flags.ts
import { readFileSync, writeFileSync } from "node:fs";

const path = new URL("../README.md", import.meta.url).pathname;
const table = Bun.spawnSync(["bun", new URL("./flags-table.ts", import.meta.url).pathname]).stdout.toString();
const readme = readFileSync(path, "utf8");
const next = readme.replace(/(<!-- flags:begin[^\n]*-->\n)[\s\S]*?(<!-- flags:end -->)/, `$1${table}$2`);
writeFileSync(path, next);
