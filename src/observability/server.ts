// The observability HTTP server on --metrics-addr (default :9090), apart from the registry
// port as in Spegel: /metrics for Prometheus, /debug (HTML, or JSON at /debug.json and
// /debug?format=json), and /id, the node's record for HTTP bootstrap, once the router has one.
import { Hono } from "hono";
import type { Address } from "../config.ts";
import { formatAddress } from "../config.ts";
import type { DebugState } from "./debug.ts";
import page from "./debug.html" with { type: "text" };
import type { Logger } from "./log.ts";
import type { Metrics } from "./metrics.ts";

// With { type: "text" } Bun hands over the file's text (and `bun build --compile` embeds
// it); bun-types declares *.html as an HTML bundle, hence the cast.
const DEBUG_HTML = page as unknown as string;

export interface ObservabilityOptions {
  address: Address;
  metrics: Metrics;
  debug: DebugState;
  /** GET /id: the router's bootstrap record handler (--bootstrap-kind http reads it). */
  idHandler?: (req: Request) => Response | Promise<Response>;
  logger: Logger;
}

export interface ObservabilityServer {
  url: string;
  stop(): Promise<void>;
}

export function createObservabilityApp(opts: Omit<ObservabilityOptions, "address" | "logger">): Hono {
  const app = new Hono();
  app.get("/metrics", async () => {
    const { body, contentType } = await opts.metrics.render();
    return new Response(body, { headers: { "Content-Type": contentType } });
  });
  const json = (c: { json: (v: unknown) => Response }) => c.json(opts.debug.snapshot());
  app.get("/debug.json", (c) => json(c));
  app.get("/debug", (c) => {
    const wantsJson = c.req.query("format") === "json" || (c.req.header("Accept") ?? "").startsWith("application/json");
    if (wantsJson) return json(c);
    return c.html(DEBUG_HTML, 200, { "Cache-Control": "no-store" });
  });
  app.get("/debug/", (c) => c.redirect("/debug"));
  app.get("/", (c) => c.redirect("/debug"));
  app.get("/id", (c) => (opts.idHandler ? opts.idHandler(c.req.raw) : c.json({ error: "no router on this node" }, 404)));
  app.notFound((c) => c.text("not found: try /metrics or /debug\n", 404));
  return app;
}

export function startObservabilityServer(opts: ObservabilityOptions): ObservabilityServer {
  const app = createObservabilityApp(opts);
  const server = Bun.serve({
    hostname: opts.address.hostname || "0.0.0.0",
    port: opts.address.port,
    fetch: app.fetch,
    idleTimeout: 30,
    maxRequestBodySize: 1024,
  });
  const url = `http://${formatAddress({ hostname: server.hostname ?? "", port: server.port ?? 0 })}`;
  opts.logger.info({ addr: url }, "metrics and debug listening");
  return {
    url,
    async stop() {
      await server.stop(true);
    },
  };
}
