// containerd's event stream, kept alive. One supervisor loop pings containerd (Version,
// with a deadline), subscribes to the image and content topics of the namespace, hands
// each envelope to the store in order, and when the stream breaks reconnects with
// exponential backoff and reports a resync: events in the gap are lost, so consumers
// re-list. A periodic ping catches a connection that hangs without breaking.
import type { Logger } from "../../observability/log.ts";
import { errorMessage } from "../../errors.ts";
import { isCancelled, type ContainerdClient, type Envelope } from "./client.ts";

export interface FeedOptions {
  /** First wait after a failure; doubles up to maxBackoffMs. */
  minBackoffMs?: number;
  maxBackoffMs?: number;
  /** How often an open subscription checks that containerd still answers. */
  pingIntervalMs?: number;
}

export interface FeedHandlers {
  /** Called for each envelope, one at a time, in order. */
  onEnvelope(envelope: Envelope): Promise<void>;
  /** The stream broke and is back: events may have been missed. */
  onResync(): void;
  /** containerd answers (true) or not (false). */
  onHealth(healthy: boolean): void;
}

/** The topics kagami follows, in containerd's filter syntax (filters are OR-ed). */
export function subscriptionFilters(namespace: string): string[] {
  const ns = JSON.stringify(namespace);
  return [`namespace==${ns},topic~="^/images/"`, `namespace==${ns},topic~="^/content/"`];
}

const SETTLE_MS = 200;

export class EventFeed {
  private stopped = false;
  private wake: (() => void) | undefined;
  private current: { cancel(): void } | undefined;
  private readonly done: Promise<void>;

  constructor(
    private readonly client: ContainerdClient,
    private readonly handlers: FeedHandlers,
    private readonly log: Logger,
    private readonly opts: FeedOptions = {},
  ) {
    this.done = this.run();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.current?.cancel();
    this.wake?.();
    await this.done;
  }

  private async run(): Promise<void> {
    const minBackoff = this.opts.minBackoffMs ?? 100;
    const maxBackoff = this.opts.maxBackoffMs ?? 10_000;
    let backoff = minBackoff;
    let broken = false;
    while (!this.stopped) {
      try {
        await this.client.version();
      } catch (e) {
        this.handlers.onHealth(false);
        if (!broken) this.log.warn({ err: errorMessage(e), socket: this.client.socket }, "containerd is unreachable");
        broken = true;
        await this.sleep(backoff);
        backoff = Math.min(backoff * 2, maxBackoff);
        continue;
      }
      this.handlers.onHealth(true);
      backoff = minBackoff;
      const reason = await this.subscribeOnce(() => {
        if (broken) {
          broken = false;
          this.log.info({ socket: this.client.socket }, "containerd event stream is back; resynchronising");
          this.handlers.onResync();
        }
      });
      if (this.stopped) break;
      this.log.warn({ reason }, "containerd event stream broke; reconnecting");
      broken = true;
      await this.sleep(minBackoff);
    }
  }

  /** Runs one subscription until it breaks; resolves with why. */
  private async subscribeOnce(opened: () => void): Promise<string> {
    const call = this.client.serverStream("events", "Subscribe", { filters: subscriptionFilters(this.client.namespace) });
    this.current = call;
    const ping = setInterval(() => {
      this.client.version().catch((e) => {
        this.handlers.onHealth(false);
        this.log.warn({ err: errorMessage(e) }, "containerd stopped answering; dropping the event stream");
        call.cancel();
      });
    }, this.opts.pingIntervalMs ?? 5_000);
    // containerd confirms nothing until the first event: give it a moment to register the
    // subscription before consumers re-list, so an event right after the re-list is not lost.
    const settle = setTimeout(opened, SETTLE_MS);
    try {
      for await (const envelope of call as AsyncIterable<Envelope>) {
        if (this.stopped) break;
        try {
          await this.handlers.onEnvelope(envelope);
        } catch (e) {
          this.log.warn({ topic: envelope.topic, err: errorMessage(e) }, "containerd event not handled");
        }
      }
      return "the server ended the stream";
    } catch (e) {
      return isCancelled(e) ? "cancelled" : errorMessage(e);
    } finally {
      clearInterval(ping);
      clearTimeout(settle);
      call.cancel();
      this.current = undefined;
    }
  }

  private sleep(ms: number): Promise<void> {
    if (this.stopped) return Promise.resolve();
    return new Promise((resolve) => {
      const t = setTimeout(done, ms);
      function done() {
        clearTimeout(t);
        resolve();
      }
      this.wake = done;
    });
  }
}
