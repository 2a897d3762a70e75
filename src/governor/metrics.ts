// The governor's Prometheus metrics, registered on a registry the caller owns. Values are
// those of the latest sample (taken every interval), read when the registry is scraped.
import { Counter, Gauge, type Registry } from "prom-client";
import type { ByteBudget } from "./budget.ts";
import type { MemorySample } from "./cgroup.ts";
import { LEVELS, SHED_REASONS, type Limit, type PressureLevel } from "./policy.ts";

/** What the metrics read: the governor's latest sample and its budget. */
export interface GovernorReadings {
  readonly budget: ByteBudget;
  readonly latest: { sample: MemorySample; limit: Limit; level: PressureLevel; shed: ReadonlyMap<string, number> };
}

export function registerGovernorMetrics(governor: GovernorReadings, registry: Registry): void {
  const registers = [registry];
  const gauge = (name: string, help: string, value: () => number | null): void => {
    // A figure this machine does not provide (no cgroup) is left out rather than shown as 0.
    if (value() === null) return;
    new Gauge({
      name,
      help,
      registers,
      collect() {
        this.set(value() ?? 0);
      },
    });
  };
  const latest = () => governor.latest;

  gauge("kagami_memory_limit_bytes", "Memory limit the governor keeps kagami under (flag, cgroup or default)", () => latest().limit.bytes);
  gauge("kagami_memory_working_set_bytes", "Working set: cgroup usage minus inactive file pages (the kubelet's figure)", () => latest().sample.workingSet);
  gauge("kagami_memory_rss_bytes", "Resident set size of the kagami process", () => latest().sample.rss);
  gauge("kagami_memory_page_cache_bytes", "Page cache charged to kagami's cgroup", () => latest().sample.pageCache);
  gauge("kagami_memory_pressure_level", `Memory pressure level: ${LEVELS.map((l, i) => `${i}=${l}`).join(", ")}`, () => LEVELS.indexOf(latest().level));
  gauge("kagami_budget_bytes", "Byte budget for userspace buffers (+Inf when the governor is off)", () => governor.budget.total);
  gauge("kagami_budget_in_use_bytes", "Bytes of the budget held by readers now", () => governor.budget.inUse);
  gauge("kagami_budget_waiters", "Readers waiting for budget", () => governor.budget.waiters);

  new Counter({
    name: "kagami_shed_requests_total",
    help: "Requests turned away at once instead of buffering, by reason",
    labelNames: ["reason"],
    registers,
    collect() {
      const shed = latest().shed;
      this.reset();
      for (const reason of SHED_REASONS) this.inc({ reason }, shed.get(reason) ?? 0);
    },
  });
}
