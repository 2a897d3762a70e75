// The README's configuration reference is the FLAGS table: no flag undocumented, no stale default.
import { expect, test } from "bun:test";
import { readFileSync } from "node:fs";

test("README's configuration reference matches the flags (regenerate: bun scripts/readme-flags.ts)", () => {
  const readme = readFileSync(new URL("../../README.md", import.meta.url), "utf8");
  const table = Bun.spawnSync(["bun", new URL("../../scripts/flags-table.ts", import.meta.url).pathname]).stdout.toString();
  expect(table.length).toBeGreaterThan(100);
  const section = readme.match(/<!-- flags:begin[^\n]*-->\n([\s\S]*?)<!-- flags:end -->/)?.[1];
  expect(section).toBe(table);
});
