// The systemd unit: systemd-analyze verify accepts it (with and without the containerd
// drop-in) against a root holding the compiled executable, and kagami keeps the Type=notify
// contract: READY=1 once it listens, WATCHDOG=1 when asked, STOPPING=1 on SIGTERM, sent as
// datagrams to $NOTIFY_SOCKET (a path, or an abstract "@name").
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { cpSync, existsSync, mkdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { tempDir, teardown } from "../../scripts/e2e/cleanup.ts";
import { kagamiCommand } from "../../scripts/e2e/kagami.ts";
import { freePort, run, spawnProcess, waitFor, type Proc } from "../../scripts/e2e/proc.ts";
import { requireTools } from "../../scripts/e2e/require.ts";

const ROOT = resolve(import.meta.dir, "..", "..");
const UNIT = join(ROOT, "deploy/systemd/kagami.service");
const DROP_IN = join(ROOT, "deploy/systemd/kagami.service.d/containerd.conf");

let dir: string;
let analyze: string;
let python: string;

beforeAll(() => {
  [analyze, python] = requireTools("systemd-analyze", "python3") as [string, string];
  dir = tempDir("systemd");
});

afterAll(async () => {
  await teardown();
});

/** A root for `systemd-analyze verify --root`: the system's units, the executable, our unit. */
async function verifyRoot(unitText: string, dropIn?: string): Promise<string> {
  const root = join(dir, `root-${Math.random().toString(36).slice(2, 8)}`);
  mkdirSync(join(root, "usr/lib/systemd"), { recursive: true });
  mkdirSync(join(root, "usr/local/bin"), { recursive: true });
  mkdirSync(join(root, "etc/systemd/system/kagami.service.d"), { recursive: true });
  cpSync("/usr/lib/systemd/system", join(root, "usr/lib/systemd/system"), { recursive: true, verbatimSymlinks: true });
  const bin = process.env.KAGAMI_BIN ? resolve(process.env.KAGAMI_BIN) : join(dir, "kagami");
  if (!existsSync(bin)) await run(["bun", "scripts/build.ts", `--outfile=${bin}`], { cwd: ROOT, timeoutMs: 180_000 });
  cpSync(bin, join(root, "usr/local/bin/kagami"));
  await Bun.write(join(root, "etc/systemd/system/kagami.service"), unitText);
  if (dropIn) await Bun.write(join(root, "etc/systemd/system/kagami.service.d/containerd.conf"), dropIn);
  return root;
}

async function verify(root: string): Promise<{ code: number; output: string }> {
  const r = await run([analyze, "verify", "--man=no", `--root=${root}`, "/etc/systemd/system/kagami.service"], { allowFailure: true });
  return { code: r.code, output: (r.stdout + r.stderr).trim() };
}

describe("systemd-analyze verify", () => {
  test("the unit verifies with no warning", async () => {
    expect(await verify(await verifyRoot(readFileSync(UNIT, "utf8")))).toEqual({ code: 0, output: "" });
  }, 240_000);

  test("the unit with the containerd drop-in verifies with no warning", async () => {
    expect(await verify(await verifyRoot(readFileSync(UNIT, "utf8"), readFileSync(DROP_IN, "utf8")))).toEqual({ code: 0, output: "" });
  }, 240_000);

  test("verify does report a broken directive here (so the checks above can fail)", async () => {
    const broken = readFileSync(UNIT, "utf8").replace("ProtectSystem=strict", "ProtectSystem=stricter");
    const r = await verify(await verifyRoot(broken));
    expect(r.output).toContain("stricter");
  }, 240_000);
});

/** A datagram socket like systemd's notify socket; prints each message on a line. */
function notifyReceiver(address: string): Proc {
  const script = [
    "import socket, sys",
    "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)",
    "a = sys.argv[1]",
    "s.bind('\\0' + a[1:] if a.startswith('@') else a)",
    "print('BOUND', flush=True)",
    "s.settimeout(60)",
    "while True: print(s.recv(4096).decode(), flush=True)",
  ].join("\n");
  return spawnProcess({ name: `notify-${address.startsWith("@") ? "abstract" : "path"}`, cmd: [python, "-c", script, address] });
}

function messages(p: Proc): string[] {
  return p.log().trim().split("\n").filter((l) => l && l !== "BOUND");
}

describe("sd_notify", () => {
  for (const kind of ["path", "abstract"] as const) {
    test(`READY=1 after the ports listen, WATCHDOG=1, STOPPING=1 on SIGTERM (${kind} socket)`, async () => {
      const address = kind === "path" ? join(dir, `notify-${process.pid}.sock`) : `@kagami-test-${process.pid}-${Date.now()}`;
      const receiver = notifyReceiver(address);
      await waitFor("notify socket bound", () => receiver.log().includes("BOUND"), { proc: receiver, timeoutMs: 20_000 });
      const [port, metricsPort] = [await freePort(), await freePort()];
      const kagami = spawnProcess({
        name: `kagami-notify-${kind}`,
        cmd: [...kagamiCommand(), "serve", "--mdns=false", `--registry-addr=127.0.0.1:${port}`, `--metrics-addr=127.0.0.1:${metricsPort}`, `--data-dir=${join(dir, `data-${kind}`)}`],
        env: { NOTIFY_SOCKET: address, WATCHDOG_USEC: "500000", NO_COLOR: "1" },
      });
      await waitFor("READY=1", () => messages(receiver).includes("READY=1"), { proc: kagami, timeoutMs: 20_000 });
      // Ready means serving: both ports answer the moment READY=1 has arrived.
      expect((await fetch(`http://127.0.0.1:${port}/livez`)).status).toBe(200);
      expect((await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).status).toBe(200);
      await waitFor("WATCHDOG=1", () => messages(receiver).includes("WATCHDOG=1"), { proc: kagami, timeoutMs: 5_000 });
      expect((await kagami.stop()).code).toBe(0);
      await waitFor("STOPPING=1", () => messages(receiver).includes("STOPPING=1"), { timeoutMs: 5_000 });
      const seen = messages(receiver);
      expect(seen[0]).toBe("READY=1");
      expect(seen.indexOf("STOPPING=1")).toBeGreaterThan(seen.indexOf("WATCHDOG=1"));
      await receiver.stop();
    }, 60_000);
  }

  test("without NOTIFY_SOCKET nothing is sent and serving is unaffected", async () => {
    const [port, metricsPort] = [await freePort(), await freePort()];
    const kagami = spawnProcess({
      name: "kagami-no-notify",
      cmd: [...kagamiCommand(), "serve", "--mdns=false", `--registry-addr=127.0.0.1:${port}`, `--metrics-addr=127.0.0.1:${metricsPort}`, `--data-dir=${join(dir, "data-none")}`],
      env: { NOTIFY_SOCKET: undefined, WATCHDOG_USEC: undefined },
    });
    await waitFor("/livez", async () => (await fetch(`http://127.0.0.1:${port}/livez`)).status === 200, { proc: kagami, timeoutMs: 20_000 });
    expect((await kagami.stop()).code).toBe(0);
  }, 60_000);
});
