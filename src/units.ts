// Parsing of the human units used in flags: durations (`20ms`, `10m`) and byte sizes
// (`96Mi`, `20Gi`, `512k`).

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
const BYTE_UNITS: Record<string, number> = {
  "": 1,
  b: 1,
  k: 1e3,
  kb: 1e3,
  m: 1e6,
  mb: 1e6,
  g: 1e9,
  gb: 1e9,
  t: 1e12,
  tb: 1e12,
  ki: 2 ** 10,
  kib: 2 ** 10,
  mi: 2 ** 20,
  mib: 2 ** 20,
  gi: 2 ** 30,
  gib: 2 ** 30,
  ti: 2 ** 40,
  tib: 2 ** 40,
};

/** Milliseconds from `1h30m`, `20ms`, `1.5s`; a bare number is milliseconds. */
export function parseDuration(input: string): number {
  const s = input.trim();
  if (/^\d+$/.test(s)) return Number(s);
  const parts = [...s.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g)];
  if (parts.length === 0 || parts.map((p) => p[0]).join("") !== s) {
    throw new Error(`invalid duration ${JSON.stringify(input)} (use e.g. 20ms, 1.5s, 10m, 1h)`);
  }
  return Math.round(parts.reduce((ms, p) => ms + Number(p[1]) * (DURATION_UNITS[p[2] ?? ""] ?? 0), 0));
}

/** Bytes from `96Mi`, `20Gi`, `1.5G`, `4096`. */
export function parseBytes(input: string): number {
  const m = input.trim().match(/^(\d+(?:\.\d+)?)\s*([a-zA-Z]*)$/);
  const unit = m ? BYTE_UNITS[(m[2] ?? "").toLowerCase()] : undefined;
  if (!m || unit === undefined) throw new Error(`invalid size ${JSON.stringify(input)} (use e.g. 96Mi, 20Gi, 512k)`);
  const n = Math.floor(Number(m[1]) * unit);
  if (!Number.isSafeInteger(n)) throw new Error(`size ${JSON.stringify(input)} is too large`);
  return n;
}

export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}
