// deploy/Dockerfile (for hosts with a container engine) and scripts/image.sh (the image built
// here, with umoci) must make the same image: entrypoint, command, user, ports, environment.
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";

const ROOT = resolve(import.meta.dir, "../..");
const dockerfile = readFileSync(resolve(ROOT, "deploy/Dockerfile"), "utf8").replace(/\\\n/g, " ");
const imageSh = readFileSync(resolve(ROOT, "scripts/image.sh"), "utf8").replace(/\\\n/g, " ");

/** Instructions of the last stage: [INSTRUCTION, rest]. */
function finalStage(text: string): [string, string][] {
  const lines = text.split("\n").map((l) => l.trim()).filter((l) => l && !l.startsWith("#"));
  const from = lines.findLastIndex((l) => /^FROM\s/i.test(l));
  return lines.slice(from).map((l) => [l.split(/\s+/)[0]!.toUpperCase(), l.slice(l.indexOf(" ") + 1).trim()]);
}

/** Values of one `umoci config --config.X value` option in image.sh. */
function umociConfig(option: string): string[] {
  return [...imageSh.matchAll(new RegExp(`--config\\.${option} ("[^"]*"|\\S+)`, "g"))].map((m) => m[1]!.replace(/^"|"$/g, ""));
}

describe("Dockerfile and image.sh build the same image", () => {
  const stage = finalStage(dockerfile);
  const one = (instr: string) => stage.filter(([i]) => i === instr).map(([, v]) => v);

  test("distroless base with glibc", () => {
    expect(stage[0]![1]).toMatch(/^gcr\.io\/distroless\/(base|cc)-debian12(:nonroot)?$/);
  });

  test("entrypoint and command", () => {
    expect(JSON.parse(one("ENTRYPOINT")[0]!)).toEqual(umociConfig("entrypoint"));
    expect(JSON.parse(one("CMD")[0]!)).toEqual(umociConfig("cmd"));
  });

  test("nonroot user", () => {
    expect(one("USER")).toEqual(umociConfig("user"));
    expect(umociConfig("user")).toEqual(["65532:65532"]);
  });

  test("exposed ports", () => {
    expect(one("EXPOSE").join(" ").split(/\s+/).sort()).toEqual(umociConfig("exposedports").sort());
  });

  test("the data dir environment", () => {
    const env = one("ENV").map((e) => e.replace(/\s+/, "="));
    for (const e of env) expect(umociConfig("env")).toContain(e);
  });

  test("the executable's path", () => {
    expect(one("COPY").some((c) => c.endsWith(" /usr/local/bin/kagami"))).toBe(true);
    expect(imageSh).toContain('"$root/usr/local/bin/kagami"');
  });
});
