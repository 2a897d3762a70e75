// Prints the configuration reference of README.md from the FLAGS table:
//   bun scripts/flags-table.ts
import { envName, FLAGS } from "../src/config.ts";

const rows = Object.entries(FLAGS as Record<string, { kind: string; help: string; commands: readonly string[]; default?: unknown; defaultText?: string; choices?: readonly string[] }>);
console.log("| flag | env | commands | default | meaning |");
console.log("|---|---|---|---|---|");
for (const [name, s] of rows) {
  const def = s.defaultText ?? (s.default === undefined ? "—" : Array.isArray(s.default) ? (s.default.length ? s.default.join(",") : "(empty)") : String(s.default));
  const choices = s.choices ? ` One of ${s.choices.map((c) => `\`${c}\``).join(", ")}.` : "";
  const commands = s.commands.length >= 6 ? "all" : s.commands.join(", ");
  console.log(`| \`--${name}\` | \`${envName(name)}\` | ${commands} | ${def.includes("`") || def === "—" ? def : `\`${def}\``} | ${s.help}.${choices} |`);
}
