// Turns changes of LocalStore's directories into StoreEvents, for writes from this process
// and from others (kagami import next to kagami serve). A change notification (fs.watch or
// an in-process poke) triggers a rescan that diffs against the last snapshot; a periodic
// rescan covers filesystems that send no notifications.
import { watch, type FSWatcher } from "node:fs";
import { readdir } from "node:fs/promises";
import { formatTagReference, type Digest } from "../oci/index.ts";
import { EventHub } from "./events.ts";
import type { LocalStore } from "./local.ts";
import type { TaggedDescriptor } from "./store.ts";

interface Snapshot {
  tags: Map<string, TaggedDescriptor>;
  digests: Set<Digest>;
}

export class LocalWatcher {
  private readonly hub = new EventHub();
  private snapshot?: Snapshot;
  private fsWatchers: FSWatcher[] = [];
  private timer?: ReturnType<typeof setInterval>;
  private scanning?: Promise<void>;
  private again = false;

  constructor(
    private readonly store: LocalStore,
    private readonly rescanMs: number,
  ) {}

  subscribe(signal: AbortSignal): AsyncIterable<import("./store.ts").StoreEvent> {
    if (!this.timer) this.start();
    const events = this.hub.subscribe(signal);
    const stopWhenIdle = () => setTimeout(() => this.hub.size === 0 && this.stop(), 0);
    signal.addEventListener("abort", stopWhenIdle, { once: true });
    return events;
  }

  /** Something changed: rescan soon. */
  poke(): void {
    if (this.timer) void this.rescan();
  }

  close(): void {
    this.stop();
  }

  private start(): void {
    this.timer = setInterval(() => void this.rescan(), this.rescanMs);
    this.timer.unref?.();
    const { tags, blobs } = this.store.layout;
    for (const dir of [tags, `${blobs}/sha256`, `${blobs}/sha512`]) {
      try {
        const w = watch(dir, { persistent: false }, () => this.poke());
        w.on("error", () => {});
        this.fsWatchers.push(w);
      } catch {
        // periodic rescans still see changes
      }
    }
    void this.rescan();
  }

  private stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    for (const w of this.fsWatchers) w.close();
    this.fsWatchers = [];
    this.snapshot = undefined;
  }

  private rescan(): Promise<void> {
    if (this.scanning) {
      this.again = true;
      return this.scanning;
    }
    this.scanning = (async () => {
      do {
        this.again = false;
        await this.diff();
      } while (this.again);
    })().finally(() => {
      this.scanning = undefined;
    });
    return this.scanning;
  }

  private async diff(): Promise<void> {
    const next: Snapshot = { tags: new Map(), digests: new Set() };
    try {
      for await (const d of this.store.digests()) next.digests.add(d);
      for (const name of await readdir(this.store.layout.tags)) {
        if (!name.endsWith(".json")) continue;
        const tagged = await this.store.readTag(`${this.store.layout.tags}/${name}`);
        if (tagged) next.tags.set(formatTagReference(tagged.reference), tagged);
      }
    } catch {
      return;
    }
    const prev = this.snapshot;
    this.snapshot = next;
    if (!prev) return;
    for (const d of next.digests) if (!prev.digests.has(d)) this.hub.publish({ type: "digest-added", digest: d });
    for (const [key, t] of next.tags) {
      const old = prev.tags.get(key);
      if (!old || old.descriptor.digest !== t.descriptor.digest) {
        this.hub.publish({ type: "tag-added", reference: t.reference, descriptor: t.descriptor });
      }
    }
    for (const [key, t] of prev.tags) if (!next.tags.has(key)) this.hub.publish({ type: "tag-removed", reference: t.reference });
    for (const d of prev.digests) if (!next.digests.has(d)) this.hub.publish({ type: "digest-removed", digest: d });
  }
}
