// sd_notify(3) for the systemd unit's Type=notify: "READY=1" once the registry listens,
// "STOPPING=1" on shutdown, and "WATCHDOG=1" keep-alives when the unit sets WatchdogSec=.
// The message is a datagram to the AF_UNIX socket named by $NOTIFY_SOCKET. Bun has no
// unix datagram API, so socket(2)/sendto(2) are called from libc through bun:ffi, loaded
// only when $NOTIFY_SOCKET is set (never outside systemd).
import { dlopen, FFIType, ptr } from "bun:ffi";

const AF_UNIX = 1;
const SOCK_DGRAM = 2;
const SOCK_CLOEXEC = 0o2000000;
/** sizeof(sockaddr_un.sun_path) on Linux. */
const SUN_PATH_MAX = 108;

type Libc = ReturnType<typeof openLibc>;
let libc: Libc | undefined;

function openLibc() {
  return dlopen("libc.so.6", {
    socket: { args: [FFIType.i32, FFIType.i32, FFIType.i32], returns: FFIType.i32 },
    sendto: { args: [FFIType.i32, FFIType.ptr, FFIType.u64, FFIType.i32, FFIType.ptr, FFIType.u32], returns: FFIType.i64 },
    close: { args: [FFIType.i32], returns: FFIType.i32 },
  }).symbols;
}

/** sockaddr_un for a path, or for an abstract name when it starts with "@". */
export function sockaddrUn(socketPath: string): { addr: Uint8Array; length: number } {
  const abstract = socketPath.startsWith("@");
  const name = new TextEncoder().encode(abstract ? socketPath.slice(1) : socketPath);
  if (name.length === 0 || name.length >= SUN_PATH_MAX) throw new RangeError(`NOTIFY_SOCKET ${JSON.stringify(socketPath)}: bad length`);
  const addr = new Uint8Array(2 + SUN_PATH_MAX);
  new DataView(addr.buffer).setUint16(0, AF_UNIX, true);
  // An abstract address starts with a NUL byte and its length counts no terminator.
  addr.set(name, abstract ? 3 : 2);
  return { addr, length: 2 + name.length + 1 };
}

/**
 * Sends one notification ("READY=1", "STATUS=...") to the service manager. Returns false when
 * not started by systemd (no $NOTIFY_SOCKET) or when sending failed: notification is advisory.
 */
export function sdNotify(state: string, env: Record<string, string | undefined> = process.env): boolean {
  const socketPath = env.NOTIFY_SOCKET;
  if (!socketPath) return false;
  let target;
  try {
    target = sockaddrUn(socketPath);
    libc ??= openLibc();
  } catch {
    return false;
  }
  const fd = libc.socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  try {
    const message = new TextEncoder().encode(state);
    const sent = libc.sendto(fd, ptr(message), message.length, 0, ptr(target.addr), target.length);
    return Number(sent) === message.length;
  } finally {
    libc.close(fd);
  }
}

/**
 * Sends WATCHDOG=1 at half the interval systemd asks for ($WATCHDOG_USEC, for this pid), so
 * a process whose event loop hangs is restarted. Returns a stop function.
 */
export function startWatchdog(env: Record<string, string | undefined> = process.env): () => void {
  const usec = Number(env.WATCHDOG_USEC);
  const forUs = env.WATCHDOG_PID === undefined || Number(env.WATCHDOG_PID) === process.pid;
  if (!env.NOTIFY_SOCKET || !Number.isFinite(usec) || usec <= 0 || !forUs) return () => {};
  const timer = setInterval(() => sdNotify("WATCHDOG=1", env), Math.max(1, Math.floor(usec / 2000)));
  timer.unref();
  return () => clearInterval(timer);
}
