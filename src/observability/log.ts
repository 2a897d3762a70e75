// Structured JSON logs (pino) with the request's digest and peer as fields; a human format
// when stderr is a terminal. Written synchronously to stderr so nothing is lost on exit.
import pino, { type Logger } from "pino";

export type { Logger };

export type LogLevel = "debug" | "info" | "warn" | "error";

export function createLogger(level: LogLevel = "info", opts: { pretty?: boolean } = {}): Logger {
  const human = opts.pretty ?? (process.stderr.isTTY === true);
  const base = { level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime };
  if (human) {
    // Loaded only on a terminal: it costs ~9 MiB of RSS that a daemon never needs.
    const pretty = require("pino-pretty") as typeof import("pino-pretty");
    return pino(base, pretty({ sync: true, destination: 2, colorize: true, ignore: "pid" }));
  }
  return pino(base, pino.destination({ fd: 2, sync: true }));
}

/** A logger that drops everything (unit tests of logic). */
export function silentLogger(): Logger {
  return pino({ level: "silent" });
}
