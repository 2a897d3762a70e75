import { afterEach, describe, expect, test } from "bun:test";
import pino from "pino";
import { Registry } from "prom-client";
import type { MemorySample } from "../../src/governor/cgroup.ts";
import { ServedFiles } from "../../src/governor/pagecache.ts";
import { createGovernor, type Governor, type GovernorConfig } from "../../src/governor/pressure.ts";

const MiB = 2 ** 20;
const GiB = 2 ** 30;

/** A cgroup reading: 128Mi limit unless given; usage split into page cache and the rest. */
function reading(over: Partial<MemorySample> = {}): MemorySample {
  return {
    cgroup: { version: 2, dir: "/sys/fs/cgroup/kagami", mount: "/sys/fs/cgroup" },
    limit: 128 * MiB,
    usage: 40 * MiB,
    inactiveFile: 0,
    pageCache: 10 * MiB,
    workingSet: 40 * MiB,
    oomKills: 0,
    alone: false,
    rss: 30 * MiB,
    rssPeak: 31 * MiB,
    ...over,
  };
}

/** usage = committed + page cache; all of the page cache is active (in the working set). */
function loaded(committedMiB: number, pageCacheMiB: number, over: Partial<MemorySample> = {}): MemorySample {
  const usage = (committedMiB + pageCacheMiB) * MiB;
  return reading({ usage, workingSet: usage, pageCache: pageCacheMiB * MiB, ...over });
}

let current: MemorySample;
let governors: Governor[] = [];
let logs: { level: number; msg: string; [k: string]: unknown }[];
let gcRuns: number;
let dropped: string[];
let clock: number;

function governor(config: Partial<GovernorConfig> = {}, over: { budgetMaxWaiters?: number } = {}) {
  logs = [];
  gcRuns = 0;
  dropped = [];
  clock = 1_000_000;
  const log = pino({ level: "info" }, { write: (line: string) => void logs.push(JSON.parse(line)) });
  const servedFiles = new ServedFiles({ now: () => clock, drop: (p) => (dropped.push(p), true) });
  const g = createGovernor({ memoryGovernor: true, ...config }, log, {
    read: () => current,
    gc: () => void gcRuns++,
    servedFiles,
    now: () => clock,
    intervalMs: 5000,
    totalMemory: 8 * GiB,
    maxWaiters: over.budgetMaxWaiters,
  });
  governors.push(g);
  return g;
}

afterEach(() => {
  for (const g of governors) g.stop();
  governors = [];
});

describe("limit and budget", () => {
  test("the cgroup's limit applies, and the budget is 1/12 of it", () => {
    current = reading();
    const s = governor().state();
    expect(s.limit).toEqual({ bytes: 128 * MiB, source: "cgroup" });
    expect(s.budget.total).toBe(Math.floor((128 * MiB) / 12));
    expect(s.thresholds).toMatchObject({ soft: 64 * MiB, hard: Math.floor(0.8 * 128 * MiB) });
  });

  test("--memory-limit overrides the cgroup's limit", () => {
    current = reading();
    const s = governor({ memoryLimit: 96 * MiB }).state();
    expect(s.limit).toEqual({ bytes: 96 * MiB, source: "flag" });
    expect(s.budget.total).toBe(8 * MiB);
  });

  test("--memory-budget overrides the derived budget, also when the limit changes", () => {
    current = reading();
    const g = governor({ memoryBudget: 10 * MiB });
    expect(g.state().budget.total).toBe(10 * MiB);
    current = reading({ limit: 256 * MiB });
    g.sample();
    expect(g.state().budget.total).toBe(10 * MiB);
  });

  test("without a limit anywhere, in a shared cgroup: a quarter of RAM up to 512 MiB, measured by the process's RSS", () => {
    current = reading({ limit: null });
    const s = governor().state();
    expect(s.limit).toEqual({ bytes: 512 * MiB, source: "default" });
    expect(s.budget.total).toBe(Math.floor((512 * MiB) / 12));
    expect(s.measuredBy).toBe("process");
    expect(s.memory.workingSet).toBe(30 * MiB);
  });

  test("an unlimited cgroup that holds kagami alone is measured by its working set, page cache included", () => {
    current = reading({ limit: null, alone: true });
    const s = governor().state();
    expect(s.limit.source).toBe("default");
    expect(s.measuredBy).toBe("cgroup");
    expect(s.memory.workingSet).toBe(40 * MiB);
  });

  test("a limit changed live resizes the budget", () => {
    current = reading();
    const g = governor();
    current = reading({ limit: 256 * MiB });
    g.sample();
    expect(g.budget.total).toBe(Math.floor((256 * MiB) / 12));
    expect(logs.some((l) => l.msg === "memory limit changed")).toBe(true);
  });
});

describe("pressure levels", () => {
  test("ok below half the limit: nothing dropped, no GC, nothing shed", () => {
    current = loaded(40, 20);
    const g = governor();
    g.noteFileServed("/blobs/a", 10 * MiB);
    g.sample();
    expect(g.state().level).toBe("ok");
    expect(dropped).toEqual([]);
    expect(gcRuns).toBe(0);
    expect(g.shouldShed()).toBe(false);
  });

  test("soft: drops page cache of served files coldest first, runs the GC at most every 2 s as the RSS grows, sheds nothing", () => {
    current = loaded(40, 20);
    const g = governor();
    g.noteFileServed("/blobs/cold", 8 * MiB);
    g.noteFileServed("/blobs/warm", 8 * MiB);
    g.noteFileServed("/blobs/hot", 8 * MiB);
    // Working set 72 MiB: 13.6 MiB above the soft threshold less its hysteresis (57.6 MiB).
    current = loaded(40, 32);
    g.sample();
    expect(g.state().level).toBe("soft");
    expect(dropped).toEqual(["/blobs/cold", "/blobs/warm"]);
    expect(gcRuns).toBe(1);
    expect(g.shouldShed()).toBe(false);
    expect(logs.find((l) => l.msg.startsWith("memory pressure soft"))).toMatchObject({ from: "ok", to: "soft" });
    clock += 1000;
    current = loaded(40, 32, { rss: 40 * MiB });
    g.sample();
    expect(gcRuns).toBe(1);
    clock += 1000;
    g.sample();
    expect(gcRuns).toBe(2);
    // The RSS has not grown since: no GC however long it stays soft.
    clock += 10_000;
    g.sample();
    expect(gcRuns).toBe(2);
  });

  test("hard: new buffered requests are shed and counted; page cache alone never makes it hard", () => {
    current = loaded(40, 80);
    const g = governor();
    expect(g.state().level).toBe("soft");
    expect(g.shouldShed()).toBe(false);
    current = loaded(110, 10);
    g.sample();
    expect(g.state().level).toBe("hard");
    expect(g.shouldShed()).toBe(true);
    expect(g.shouldShed()).toBe(true);
    expect(g.state().shed).toEqual({ memory_pressure: 2 });
  });

  test("measured by the process, the executable's file pages in the RSS never make it hard", () => {
    // Inside a network namespace the cgroup is not visible: --memory-limit and the RSS stand in.
    current = reading({ cgroup: null, limit: null, usage: null, workingSet: null, pageCache: null, rss: 110 * MiB, rssAnon: 40 * MiB });
    const g = governor({ memoryLimit: 128 * MiB });
    expect(g.state()).toMatchObject({ measuredBy: "process", level: "soft" });
    expect(g.shouldShed()).toBe(false);
    current = reading({ cgroup: null, limit: null, usage: null, workingSet: null, pageCache: null, rss: 120 * MiB, rssAnon: 105 * MiB });
    g.sample();
    expect(g.state().level).toBe("hard");
    expect(g.shouldShed()).toBe(true);
  });

  test("a level is left only below its threshold by the hysteresis, and the end is logged", () => {
    current = loaded(110, 0);
    const g = governor();
    expect(g.state().level).toBe("hard");
    current = loaded(100, 0); // under 80% (102.4 MiB) but not under 75%
    g.sample();
    expect(g.state().level).toBe("hard");
    current = loaded(90, 0);
    g.sample();
    expect(g.state().level).toBe("soft");
    current = loaded(50, 0);
    g.sample();
    expect(g.state().level).toBe("ok");
    expect(logs.some((l) => l.msg === "memory pressure over")).toBe(true);
  });

  test("a full budget queue sheds new requests too", async () => {
    current = reading();
    const g = governor({}, { budgetMaxWaiters: 1 });
    await g.budget.acquire(g.budget.total);
    const waiting = g.budget.acquire(1);
    expect(g.shouldShed()).toBe(true);
    expect(g.state().shed).toEqual({ budget_queue_full: 1 });
    g.budget.release(g.budget.total);
    await waiting;
    expect(g.shouldShed()).toBe(false);
  });
});

describe("--memory-governor=false", () => {
  test("leaves the budget unbounded and never sheds, drops page cache or runs the GC", async () => {
    current = loaded(120, 8);
    const g = governor({ memoryGovernor: false });
    g.noteFileServed("/blobs/a", 8 * MiB);
    g.sample();
    expect(g.state().level).toBe("hard");
    expect(g.shouldShed()).toBe(false);
    expect(dropped).toEqual([]);
    expect(gcRuns).toBe(0);
    expect(g.budget.unbounded).toBe(true);
    await g.budget.acquire(GiB);
    expect(g.state().budget).toMatchObject({ total: null, inUse: GiB });
    const body = new ReadableStream<Uint8Array>();
    const reservedBytes = await g.reserveSource();
    expect(g.stream(body, { reservedBytes })).toBe(body);
    expect(g.budget.inUse).toBe(GiB);
  });
});

describe("metrics", () => {
  test("registers the memory, budget and shed metrics on the registry it is given", async () => {
    current = loaded(110, 10, { inactiveFile: 4 * MiB, workingSet: 116 * MiB });
    const g = governor();
    const registry = new Registry();
    g.registerMetrics(registry);
    g.shouldShed();
    await g.budget.acquire(MiB);
    const text = await registry.metrics();
    const value = (line: string) => text.split("\n").find((l) => l.startsWith(`${line} `))?.split(" ")[1];
    expect(value("kagami_memory_limit_bytes")).toBe(String(128 * MiB));
    expect(value("kagami_memory_working_set_bytes")).toBe(String(116 * MiB));
    expect(value("kagami_memory_rss_bytes")).toBe(String(30 * MiB));
    expect(value("kagami_memory_page_cache_bytes")).toBe(String(10 * MiB));
    expect(value("kagami_memory_pressure_level")).toBe("2");
    expect(value("kagami_budget_bytes")).toBe(String(Math.floor((128 * MiB) / 12)));
    expect(value("kagami_budget_in_use_bytes")).toBe(String(MiB));
    expect(value("kagami_budget_waiters")).toBe("0");
    expect(value('kagami_shed_requests_total{reason="memory_pressure"}')).toBe("1");
    expect(value('kagami_shed_requests_total{reason="budget_queue_full"}')).toBe("0");
  });

  test("leaves out cgroup figures the machine does not have", async () => {
    current = reading({ cgroup: null, limit: null, usage: null, workingSet: null, pageCache: null, inactiveFile: null });
    const registry = new Registry();
    governor().registerMetrics(registry);
    const text = await registry.metrics();
    expect(text).not.toContain("kagami_memory_working_set_bytes");
    expect(text).toContain("kagami_memory_rss_bytes");
  });
});
