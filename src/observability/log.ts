// Structured JSON logs (pino) with the request's digest and peer as fields; a human format
// when stderr is a terminal. Written synchronously to stderr so nothing is lost on exit.
import pino, { type Logger } from "pino";
import pretty from "pino-pretty";

export type { Logger };

export type LogLevel = "debug" | "info" | "warn" | "error";

export function createLogger(level: LogLevel = "info", opts: { pretty?: boolean } = {}): Logger {
  const human = opts.pretty ?? (process.stderr.isTTY === true);
  const base = { level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime };
  if (human) return pino(base, pretty({ sync: true, destination: 2, colorize: true, ignore: "pid" }));
  return pino(base, pino.destination({ fd: 2, sync: true }));
}

/** A logger that drops everything (unit tests of logic). */
export function silentLogger(): Logger {
  return pino({ level: "silent" });
}
