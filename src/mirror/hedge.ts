// Races providers for one response: ask the first provider as soon as the lookup finds it,
// ask the next one too when the first is slower than peers usually are (hedging), move on
// when one fails, and stop at the attempt limit. The first good answer wins; the others are
// aborted.
import type { Attempt } from "./source.ts";
import type { Peer } from "../routing/router.ts";
import type { ProviderSet } from "./providers.ts";

export type AttemptOutcome<T> =
  | { ok: true; value: T }
  /** notFound: the peer does not hold the key (it is skipped by later requests too). */
  | { ok: false; outcome: string; notFound?: boolean };

export interface RaceParams<T> {
  providers: ProviderSet;
  /** Most providers asked. */
  max: number;
  /** Wait for the first provider (--mirror-resolve-timeout). */
  firstWaitMs: number;
  /** Wait for another provider when every one asked so far failed. */
  nextWaitMs: number;
  /** Delay, after the latest launch, before hedging to one more provider. */
  hedgeDelayMs: (launched: number) => number;
  /** Providers not to ask (quarantined, already failed). */
  skip: (peer: Peer) => boolean;
  attempt: (peer: Peer, signal: AbortSignal) => Promise<AttemptOutcome<T>>;
  signal: AbortSignal;
}

export interface RaceWinner<T> {
  peer: Peer;
  value: T;
  /** Aborts the winner's request (its body is still streaming). */
  abort: AbortController;
}

export interface RaceResult<T> {
  winner?: RaceWinner<T>;
  attempts: Attempt[];
  /** Peers that failed (not the ones aborted because another won). */
  failed: Set<string>;
}

interface InFlight<T> {
  peer: Peer;
  abort: AbortController;
  started: number;
  done: Promise<{ n: number; outcome: AttemptOutcome<T> }>;
}

export async function raceProviders<T>(p: RaceParams<T>): Promise<RaceResult<T>> {
  const attempts: Attempt[] = [];
  const failed = new Set<string>();
  const inFlight = new Map<number, InFlight<T>>();
  let cursor = 0;
  let launched = 0;
  let lastLaunch = 0;
  let winner: number | undefined;

  const nextPeer = async (waitMs: number): Promise<Peer | undefined> => {
    for (;;) {
      const peer = await p.providers.next(cursor, p.signal, waitMs);
      if (!peer) return undefined;
      cursor++;
      if (!p.skip(peer) && !p.providers.missing.has(peer.id)) return peer;
    }
  };
  const launch = (peer: Peer): void => {
    const n = launched++;
    const abort = new AbortController();
    const signal = AbortSignal.any([abort.signal, p.signal]);
    const done = p.attempt(peer, signal).then(
      (outcome) => ({ n, outcome }),
      (e: unknown): { n: number; outcome: AttemptOutcome<T> } => ({ n, outcome: { ok: false, outcome: String((e as Error)?.message ?? e) } }),
    );
    inFlight.set(n, { peer, abort, started: performance.now(), done });
    lastLaunch = performance.now();
  };

  try {
    while (!p.signal.aborted) {
      if (inFlight.size === 0) {
        if (launched >= p.max) break;
        const peer = await nextPeer(launched === 0 ? p.firstWaitMs : p.nextWaitMs);
        if (!peer) {
          if (launched === 0) attempts.push({ source: "peers", outcome: "no provider found", ms: p.firstWaitMs });
          break;
        }
        launch(peer);
        continue;
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      const hedge =
        launched < p.max
          ? new Promise<"hedge">((resolve) => {
              timer = setTimeout(() => resolve("hedge"), Math.max(0, lastLaunch + p.hedgeDelayMs(launched) - performance.now()));
            })
          : undefined;
      const settled = [...inFlight.values()].map((f) => f.done);
      const event = await Promise.race(hedge ? [...settled, hedge] : settled);
      clearTimeout(timer);
      if (event === "hedge") {
        const peer = await nextPeer(0);
        if (peer) launch(peer);
        else lastLaunch = performance.now(); // nobody to hedge to yet: look again after another delay
        continue;
      }
      const flight = inFlight.get(event.n);
      if (!flight) continue;
      inFlight.delete(event.n);
      const ms = Math.round(performance.now() - flight.started);
      if (event.outcome.ok) {
        winner = event.n;
        attempts.push({ source: "peers", target: flight.peer.id, outcome: "ok", ms });
        return { winner: { peer: flight.peer, value: event.outcome.value, abort: flight.abort }, attempts, failed };
      }
      failed.add(flight.peer.id);
      if (event.outcome.notFound) p.providers.missing.add(flight.peer.id);
      attempts.push({ source: "peers", target: flight.peer.id, outcome: event.outcome.outcome, ms });
    }
    if (p.signal.aborted) attempts.push({ source: "peers", outcome: "client went away", ms: 0 });
    return { attempts, failed };
  } finally {
    for (const [n, f] of inFlight) if (n !== winner) f.abort.abort(new Error("another provider answered first"));
  }
}
