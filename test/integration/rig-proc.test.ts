// The rig's process handling: logs captured, bounded waits that fail with the log tail,
// SIGTERM then SIGKILL, teardown of everything still running, cgroup placement, and
// prerequisites that fail instead of skipping.
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { createMemoryCgroup } from "../../scripts/e2e/cgroup.ts";
import { Scope, teardown } from "../../scripts/e2e/cleanup.ts";
import { startKagami } from "../../scripts/e2e/kagami.ts";
import { freePort, httpStatus, spawnProcess, waitFor, waitForHttp, waitForPort } from "../../scripts/e2e/proc.ts";
import { MissingPrerequisiteError, requireTool } from "../../scripts/e2e/require.ts";

afterAll(() => teardown());

/** Running (zombies, which only wait to be reaped by init, count as gone). */
const alive = (pid: number) => {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return false;
  }
};

describe("spawnProcess", () => {
  test("stdout and stderr go to the log file", async () => {
    const p = spawnProcess({ name: "echo", cmd: ["bash", "-c", "echo out; echo err >&2"] });
    expect((await p.exited).code).toBe(0);
    expect(p.log()).toBe("out\nerr\n");
    expect(readFileSync(p.logPath, "utf8")).toBe("out\nerr\n");
  });

  test("stop() sends SIGTERM and a process that ignores it is killed after the deadline", async () => {
    const p = spawnProcess({ name: "stubborn", cmd: ["bash", "-c", "trap '' TERM; echo ready; while :; do sleep 0.1; done"] });
    await waitForLogLine(p.logPath, "ready");
    const status = await p.stop(300);
    expect(status.signal).toBe("SIGKILL");
    expect(alive(p.pid)).toBe(false);
  });

  test("stop() of a well-behaved process returns its exit", async () => {
    const p = spawnProcess({ name: "sleeper", cmd: ["sleep", "30"] });
    expect((await p.stop()).signal).toBe("SIGTERM");
    expect(p.running()).toBe(false);
  });

  test("teardown stops what is still running, children included", async () => {
    const scope = new Scope("child-scope");
    const p = spawnProcess({ name: "parent", cmd: ["bash", "-c", "sleep 30 & echo $! > /dev/stderr; wait"], scope });
    const childPid = Number(await waitForLogLine(p.logPath, /^\d+$/));
    expect(alive(childPid)).toBe(true);
    await scope.teardown();
    expect(p.running()).toBe(false);
    // SIGKILL is delivered asynchronously: give the kernel a moment.
    await waitFor("the child to die", () => !alive(childPid), { timeoutMs: 2000 });
  });

  test("waitForPort and waitForHttp see a server come up", async () => {
    const port = await freePort();
    const p = spawnProcess({ name: "http", cmd: [process.execPath, "-e", `Bun.serve({hostname: "127.0.0.1", port: ${port}, fetch: () => new Response("ok")})`] });
    await waitForPort({ host: "127.0.0.1", port, proc: p });
    expect(await waitForHttp(`http://127.0.0.1:${port}/`, { proc: p })).toBe(200);
    expect(await httpStatus(`http://127.0.0.1:${port}/`)).toBe(200);
    await p.stop();
  });

  test("a wait fails at once, with the log tail, when the process exits", async () => {
    const p = spawnProcess({ name: "crasher", cmd: ["bash", "-c", "echo 'fatal: bad config'; exit 3"] });
    const port = await freePort();
    await expect(waitForHttp(`http://127.0.0.1:${port}/`, { proc: p, timeoutMs: 10_000 })).rejects.toThrow(/crasher exited \(code 3[\s\S]*fatal: bad config/);
  });

  test("a wait is bounded", async () => {
    const port = await freePort();
    await expect(waitForPort({ host: "127.0.0.1", port, timeoutMs: 300 })).rejects.toThrow("timed out after 300 ms");
  });

  test("a process given a cgroup runs inside it, and the cgroup is removed", async () => {
    const cg = createMemoryCgroup({ limitBytes: 64 << 20, name: "proc-test" });
    const p = spawnProcess({ name: "in-cgroup", cmd: ["sleep", "30"], cgroup: cg.path });
    await waitForCgroupMember(cg.pids, p.pid);
    const suffix = cg.path.replace(/^\/sys\/fs\/cgroup(\/memory)?/, "");
    expect(readFileSync(`/proc/${p.pid}/cgroup`, "utf8")).toContain(suffix);
    expect(cg.usage()).toBeGreaterThan(0);
    expect(cg.usage()).toBeLessThanOrEqual(cg.limitBytes);
    expect(cg.oomKills()).toBe(0);
    await p.stop();
    await cg.remove();
    expect(existsSync(cg.path)).toBe(false);
  });
});

describe("requireTool", () => {
  test("a present tool resolves to its path", () => {
    expect(requireTool("bash")).toMatch(/\/bash$/);
  });

  test("a missing tool throws and names what to install, locally and in CI", () => {
    const ci = process.env.CI;
    try {
      delete process.env.CI;
      expect(() => requireTool("no-such-tool-kagami")).toThrow(MissingPrerequisiteError);
      expect(() => requireTool("skopeo-missing")).toThrow("does not skip");
      process.env.CI = "true";
      expect(() => requireTool("no-such-tool-kagami")).toThrow("on the CI machine");
    } finally {
      if (ci === undefined) delete process.env.CI;
      else process.env.CI = ci;
    }
  });
});

describe("startKagami", () => {
  test("starts kagami in the host namespace with --mdns=false and waits for /readyz", async () => {
    const k = await startKagami({ name: "rig-kagami" });
    expect(k.args).toContain("--mdns=false");
    expect(await httpStatus(`${k.url}/readyz`)).toBe(200);
    expect((await fetch(`${k.url}/v2/`)).status).toBe(200);
    await k.stop();
    expect(k.proc.exitStatus?.code).toBe(0);
    const again = await startKagami(k.options);
    expect([again.url, again.dataDir]).toEqual([k.url, k.dataDir]);
    await again.stop();
  });

  test("refuses mDNS outside a namespace", async () => {
    await expect(startKagami({ mdns: true })).rejects.toThrow("namespace");
    await expect(startKagami({ flags: { mdns: true } })).rejects.toThrow("mdns=false");
  });
});

async function waitForLogLine(path: string, match: string | RegExp): Promise<string> {
  for (let i = 0; i < 100; i++) {
    const line = readFileSync(path, "utf8")
      .split("\n")
      .find((l) => (typeof match === "string" ? l === match : match.test(l)));
    if (line !== undefined) return line;
    await Bun.sleep(50);
  }
  throw new Error(`no line ${match} in ${path}`);
}

async function waitForCgroupMember(pids: () => number[], pid: number): Promise<void> {
  for (let i = 0; i < 100 && !pids().includes(pid); i++) await Bun.sleep(20);
}
