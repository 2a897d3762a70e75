// The /debug page in a real browser (Debian's Chromium, headless, driven by playwright-core):
// it renders, and a pull that just happened is there, each request explained with its
// source, and a miss says why.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { chromium, type BrowserContext, type Page } from "playwright-core";
import { tempDir, teardown } from "../../scripts/e2e/cleanup.ts";
import type { DebugSnapshot } from "../../src/observability/debug.ts";
import { buildImage, type BuiltImage } from "../../scripts/e2e/image.ts";
import { kagamiCommand, startKagami, type Kagami } from "../../scripts/e2e/kagami.ts";
import { freePort, run } from "../../scripts/e2e/proc.ts";
import { requireTool } from "../../scripts/e2e/require.ts";
import { skopeoCopy } from "../../scripts/e2e/skopeo.ts";

let dir: string;
let image: BuiltImage;
let kagami: Kagami;
let debugUrl: string;
let browser: BrowserContext;
let page: Page;

beforeAll(async () => {
  const executablePath = requireTool("chromium");
  dir = tempDir("debug-page");
  const random = (n: number) => crypto.getRandomValues(new Uint8Array(n));
  image = await buildImage({ dir: join(dir, "layout"), tag: "1.0", layers: [{ files: { "bin/app": random(150_000) } }, { files: { "etc/conf": "x" } }] });
  const dataDir = join(dir, "data");
  await run([...kagamiCommand(), "import", `--data-dir=${dataDir}`, `${image.layout}:1.0`, "docker.io/team/web:1.0"]);
  const metricsPort = await freePort();
  debugUrl = `http://127.0.0.1:${metricsPort}/debug`;
  kagami = await startKagami({
    name: "kagami-debug",
    dataDir,
    flags: { "metrics-addr": `127.0.0.1:${metricsPort}`, "router-addr": `127.0.0.1:${await freePort()}`, "pull-through": "false" },
    readyPath: "/livez",
  });
  // A fresh profile each run (playwright passes it as --user-data-dir).
  browser = await chromium.launchPersistentContext(tempDir("chromium-profile"), {
    executablePath,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
    viewport: { width: 1400, height: 1000 },
    timeout: 60_000,
  });
  page = browser.pages()[0] ?? (await browser.newPage());
}, 180_000);

afterAll(async () => {
  await browser?.close();
  await teardown();
});

describe("/debug in Chromium", () => {
  test("renders with no pull yet", async () => {
    await page.goto(debugUrl);
    await page.waitForSelector("body[data-loaded=true]", { timeout: 15_000 });
    expect(await page.title()).toBe("kagami debug");
    expect(await page.textContent("#pulls .body")).toBe("no pull yet");
    expect(await page.textContent("#about")).toContain("version 0.1.0");
  }, 30_000);

  test("shows a pull that just happened, each request with its source and explanation", async () => {
    await skopeoCopy(`docker://${kagami.host}/team/web:1.0`, `oci:${join(dir, "pulled")}:1.0`);
    await page.reload();
    await page.waitForSelector("[data-testid=pull]", { timeout: 15_000 });
    const pulls = page.locator("[data-testid=pull]");
    expect(await pulls.count()).toBe(1);
    expect(await pulls.first().locator("[data-testid=pull-image]").textContent()).toBe("docker.io/team/web:1.0");
    const steps = pulls.first().locator("[data-testid=pull-step]");
    // The tag's manifest, then config and layers (skopeo may also HEAD or re-ask the manifest).
    expect(await steps.count()).toBeGreaterThanOrEqual(image.layers.length + 2);
    expect(new Set(await pulls.first().locator("[data-testid=step-source]").allTextContents())).toEqual(new Set(["local"]));
    const explanations = await pulls.first().locator("[data-testid=step-explanation]").allTextContents();
    expect(explanations.every((e) => e === "served from the local store on this node")).toBe(true);
    const rows = (await steps.allTextContents()).join("\n");
    for (const layer of image.layers) expect(rows).toContain(layer.digest.slice(0, 19));

    const shot = join(tempDir("screenshot"), "debug.png");
    await page.screenshot({ path: shot, fullPage: true });
    expect(Bun.file(shot).size).toBeGreaterThan(10_000);
    if (process.env.KAGAMI_SCREENSHOT) await Bun.write(process.env.KAGAMI_SCREENSHOT, Bun.file(shot));
  }, 60_000);

  test("a miss is listed as its own pull, explained", async () => {
    const miss = await fetch(`${kagami.url}/v2/team/gone/manifests/2.0?ns=docker.io`);
    expect(miss.status).toBe(404);
    await page.reload();
    await page.waitForSelector("text=docker.io/team/gone:2.0", { timeout: 15_000 });
    const pull = page.locator("[data-testid=pull]", { hasText: "docker.io/team/gone:2.0" });
    expect(await pull.locator("[data-testid=step-source]").textContent()).toBe("miss");
    expect(await pull.locator("[data-testid=step-explanation]").textContent()).toContain("not found");
  }, 30_000);

  test("the same data as JSON at /debug.json and /debug?format=json", async () => {
    const a = (await (await fetch(`${debugUrl}.json`)).json()) as DebugSnapshot;
    const b = (await (await fetch(`${debugUrl}?format=json`)).json()) as DebugSnapshot;
    expect(a.pulls.map((p) => p.image)).toEqual(["docker.io/team/gone:2.0", "docker.io/team/web:1.0"]);
    expect(b.pulls.length).toBe(a.pulls.length);
  });
});
