// deploy/grafana/dashboard.json queries only metrics kagami exports (its own, the governor's
// and the router's, registered here exactly as serve registers them), and is a well-formed
// Grafana dashboard: unique panel ids, panels inside the 24-column grid, one data source.
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { ByteBudget } from "../../src/governor/budget.ts";
import { registerGovernorMetrics } from "../../src/governor/metrics.ts";
import { createMetrics } from "../../src/observability/metrics.ts";

interface Panel {
  id: number;
  type: string;
  title: string;
  gridPos: { x: number; y: number; w: number; h: number };
  datasource?: { uid: string };
  targets?: { expr: string }[];
}

const dashboard = JSON.parse(readFileSync(resolve(import.meta.dir, "../../deploy/grafana/dashboard.json"), "utf8")) as { uid: string; panels: Panel[]; templating: { list: { name: string; query: unknown }[] } };

async function exportedNames(): Promise<Set<string>> {
  const metrics = createMetrics();
  metrics.watchRouter(() => ({ peerId: "p", addresses: [], routingTableSize: 0, peers: [], advertisedKeys: 0 }));
  const sample = { cgroup: null, alone: true, limit: 1, usage: 1, inactiveFile: 0, pageCache: 0, workingSet: 1, oomKills: 0, rss: 1, rssPeak: 1 };
  registerGovernorMetrics({ budget: new ByteBudget({ total: 1 << 20 }), latest: { sample, limit: { bytes: 1, source: "flag" }, level: "ok", shed: new Map() } }, metrics.registry);
  const text = (await metrics.render()).body;
  return new Set([...text.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1]!));
}

describe("grafana dashboard", () => {
  const exprs = dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr));
  const variables = dashboard.templating.list.map((v) => (typeof v.query === "object" && v.query ? (v.query as { query: string }).query : String(v.query)));

  test("every metric a panel or variable queries is one kagami exports", async () => {
    const names = await exportedNames();
    const used = new Set([...exprs, ...variables].flatMap((e) => [...e.matchAll(/\b((?:spegel|kagami|http|process)_[a-z_]+)/g)].map((m) => m[1]!.replace(/_(bucket|sum|count)$/, ""))));
    expect(used.size).toBeGreaterThan(15);
    for (const name of used) expect(`${name} ${names.has(name) ? "exported" : "missing"}`).toBe(`${name} exported`);
  });

  test("panels have unique ids and fit the 24-column grid without overlapping", () => {
    const ids = dashboard.panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    const cells = new Set<string>();
    for (const p of dashboard.panels) {
      expect(p.gridPos.x + p.gridPos.w).toBeLessThanOrEqual(24);
      for (let x = p.gridPos.x; x < p.gridPos.x + p.gridPos.w; x++) {
        for (let y = p.gridPos.y; y < p.gridPos.y + p.gridPos.h; y++) {
          expect(cells.has(`${x},${y}`)).toBe(false);
          cells.add(`${x},${y}`);
        }
      }
    }
  });

  test("every query panel uses the dashboard's data source variable", () => {
    expect(dashboard.templating.list.map((v) => v.name)).toEqual(["datasource", "job", "instance"]);
    for (const p of dashboard.panels.filter((p) => p.type !== "row")) expect(p.datasource?.uid).toBe("${datasource}");
    expect(exprs.every((e) => e.includes('instance=~"$instance"'))).toBe(true);
  });
});
