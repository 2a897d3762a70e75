// The peer HTTP/1.1 client against real servers on 127.0.0.1: framing, back-pressure (a body
// nobody reads stalls the sender instead of filling memory), and every way an answer fails.
import { afterEach, describe, expect, test } from "bun:test";
import { createHash, randomBytes } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createServer as createTcpServer, type AddressInfo, type Socket } from "node:net";
import { MAX_READ_BYTES, request, type BodyReader } from "../../src/mirror/http1.ts";

const servers: Server[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) {
    s.closeAllConnections();
    await new Promise<void>((resolve) => s.close(() => resolve()));
  }
});

async function serve(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<string> {
  const server = createServer(handler);
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

const get = (url: string, extra: { signal?: AbortSignal; method?: "GET" | "HEAD"; headerTimeoutMs?: number } = {}) =>
  request({ url, method: extra.method ?? "GET", headers: { "X-Test": "yes" }, signal: extra.signal ?? AbortSignal.timeout(10_000), headerTimeoutMs: extra.headerTimeoutMs ?? 5000 });

async function readAll(body: BodyReader): Promise<{ bytes: Uint8Array; largest: number }> {
  const parts: Uint8Array[] = [];
  let largest = 0;
  for (;;) {
    const r = await body.read();
    if (r.done) break;
    parts.push(r.value);
    largest = Math.max(largest, r.value.byteLength);
  }
  return { bytes: new Uint8Array(Buffer.concat(parts)), largest };
}

const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

describe("peer HTTP/1.1 client", () => {
  test("a Content-Length answer: status, headers, the whole body in chunks of at most one read", async () => {
    const blob = new Uint8Array(randomBytes(3 << 20));
    let seen: IncomingMessage | undefined;
    const url = await serve((req, res) => {
      seen = req;
      res.writeHead(200, { "Content-Length": String(blob.byteLength), "Docker-Content-Digest": "sha256:x" }).end(blob);
    });
    const res = await get(`${url}/v2/a/blobs/x?ns=docker.io`);
    expect(res.status).toBe(200);
    expect(res.headers.get("docker-content-digest")).toBe("sha256:x");
    expect(res.body?.length).toBe(blob.byteLength);
    const { bytes, largest } = await readAll(res.body!);
    expect(sha(bytes)).toBe(sha(blob));
    expect(largest).toBeLessThanOrEqual(MAX_READ_BYTES);
    expect(seen?.url).toBe("/v2/a/blobs/x?ns=docker.io");
    expect(seen?.headers["x-test"]).toBe("yes");
    expect(seen?.headers.connection).toBe("close");
  });

  test("a body nobody reads back-pressures the peer; reading resumes it", async () => {
    const size = 64 << 20;
    let written = 0;
    let finished = false;
    const url = await serve((_req, res) => {
      res.writeHead(200, { "Content-Length": String(size) });
      const piece = new Uint8Array(1 << 20);
      const pump = (): void => {
        while (written < size) {
          written += piece.byteLength;
          if (!res.write(piece)) return void res.once("drain", pump);
        }
        res.end(() => (finished = true));
      };
      pump();
    });
    const res = await get(url);
    const first = await res.body!.read();
    expect(first.done).toBe(false);
    await Bun.sleep(300);
    // Only what the socket buffers hold left the server, not the body.
    expect(finished).toBe(false);
    expect(written).toBeLessThan(size / 2);
    let got = first.value?.byteLength ?? 0;
    for (;;) {
      const r = await res.body!.read();
      if (r.done) break;
      got += r.value.byteLength;
    }
    expect(got).toBe(size);
  });

  test("HEAD and 204 answers have no body; a chunked answer has no length and no body reader", async () => {
    const url = await serve((req, res) => {
      if (req.method === "HEAD") return void res.writeHead(200, { "Content-Length": "1234" }).end();
      if (req.url === "/empty") return void res.writeHead(204).end();
      res.writeHead(404, { "Content-Type": "application/json" });
      res.write('{"errors":');
      res.end("[]}");
    });
    const head = await get(url, { method: "HEAD" });
    expect([head.status, head.headers.get("content-length"), head.body]).toEqual([200, "1234", null]);
    const empty = await get(`${url}/empty`);
    expect([empty.status, empty.body]).toEqual([204, null]);
    const chunked = await get(`${url}/missing`);
    expect([chunked.status, chunked.headers.get("content-length"), chunked.body]).toEqual([404, null, null]);
  });

  test("a peer that closes mid-body: the read fails, naming the missing bytes", async () => {
    const url = await serve((_req, res) => {
      res.writeHead(200, { "Content-Length": String(1 << 20) });
      res.write(new Uint8Array(1000), () => res.destroy());
    });
    const res = await get(url);
    const error = await readAll(res.body!).then(
      () => undefined,
      (e: Error) => e,
    );
    expect(error?.message).toContain("bytes of the body missing");
  });

  test("no answer within the header deadline; an unreachable peer; an abort mid-body", async () => {
    const held: Socket[] = [];
    const silent = createTcpServer((socket) => void held.push(socket));
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
    const silentUrl = `http://127.0.0.1:${(silent.address() as AddressInfo).port}`;
    await expect(get(silentUrl, { headerTimeoutMs: 150 })).rejects.toThrow("no answer within 150 ms");
    for (const socket of held) socket.destroy();
    silent.close();

    const closed = createTcpServer();
    await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    await expect(get(`http://127.0.0.1:${port}`)).rejects.toThrow();

    let serverSawClose = false;
    const url = await serve((_req, res) => {
      res.on("close", () => (serverSawClose = true));
      res.writeHead(200, { "Content-Length": String(32 << 20) });
      res.write(new Uint8Array(1 << 20));
    });
    const client = new AbortController();
    const res = await get(url, { signal: client.signal });
    await res.body!.read();
    client.abort(new Error("client went away"));
    await expect(res.body!.read()).rejects.toThrow("client went away");
    const end = Date.now() + 3000;
    while (!serverSawClose && Date.now() < end) await Bun.sleep(20);
    expect(serverSawClose).toBe(true);
  });
});
