// Worker entry of the digest hashers (see hasher.ts): one hash per stream, fed in order; each
// chunk is freed once hashed and acknowledged so the main thread can give its budget back.
// A compiled executable must be built with this file as an entry point.
import { createHash, type Hash } from "node:crypto";
import { freeChunk } from "../governor/free-chunk.ts";
import type { FromHasher, ToHasher } from "./hasher.ts";

declare const self: Worker;

const hashes = new Map<number, Hash>();

const reply = (m: FromHasher): void => postMessage(m);

self.onmessage = (e: MessageEvent<ToHasher>) => {
  const m = e.data;
  switch (m.type) {
    case "open":
      hashes.set(m.id, createHash(m.algorithm));
      return;
    case "update":
      hashes.get(m.id)?.update(m.bytes);
      freeChunk(m.bytes);
      return reply({ type: "hashed", id: m.id });
    case "finish": {
      const hash = hashes.get(m.id);
      hashes.delete(m.id);
      if (!hash) return reply({ type: "failed", id: m.id, message: "unknown stream" });
      return reply({ type: "digest", id: m.id, hex: hash.update(m.bytes).digest("hex") });
    }
    case "drop":
      hashes.delete(m.id);
      return reply({ type: "dropped", id: m.id });
  }
};
