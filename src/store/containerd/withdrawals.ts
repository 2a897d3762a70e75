// Deleting an image in containerd removes only its name; its content goes when garbage
// collection runs (at once for CRI's synchronous deletes, later otherwise), and content
// still used by another image stays. containerd < 2.1 sends no event for that, so after an
// image delete the digests it held are checked a few times and reported once gone.
import type { Digest } from "../../oci/index.ts";

/** Delays of the checks after a delete: about 30 s in all. */
const CHECK_DELAYS_MS = [250, 500, 1_000, 2_000, 4_000, 8_000, 16_000];
/** Images remembered, and deletes being checked, at most. */
const MAX_IMAGES = 50_000;
const MAX_PENDING = 1_000;

export class Withdrawals {
  private readonly digestsByImage = new Map<string, Digest[]>();
  private readonly timers = new Set<ReturnType<typeof setTimeout>>();
  private stopped = false;

  constructor(
    /** Size of held content, undefined when gone. */
    private readonly held: (digest: Digest) => Promise<number | undefined>,
    private readonly removed: (digest: Digest) => void,
    private readonly delays: readonly number[] = CHECK_DELAYS_MS,
  ) {}

  remember(image: string, digests: Digest[]): void {
    if (this.digestsByImage.size >= MAX_IMAGES && !this.digestsByImage.has(image)) this.digestsByImage.clear();
    this.digestsByImage.set(image, digests);
  }

  imageDeleted(image: string): void {
    const digests = this.digestsByImage.get(image);
    this.digestsByImage.delete(image);
    if (!digests || digests.length === 0 || this.timers.size >= MAX_PENDING) return;
    this.check(new Set(digests), 0);
  }

  stop(): void {
    this.stopped = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
  }

  private check(pending: Set<Digest>, attempt: number): void {
    const delay = this.delays[attempt];
    if (delay === undefined || this.stopped) return;
    const t = setTimeout(async () => {
      this.timers.delete(t);
      for (const digest of [...pending]) {
        if (this.stopped) return;
        try {
          if ((await this.held(digest)) !== undefined) continue;
        } catch {
          continue; // containerd unreachable: the resync after it returns covers this
        }
        pending.delete(digest);
        this.removed(digest);
      }
      if (pending.size > 0) this.check(pending, attempt + 1);
    }, delay);
    this.timers.add(t);
  }
}
