#!/usr/bin/env bun
// Entry: argv -> one subcommand in src/cli/.
import { run } from "./cli/run.ts";

// Exit as soon as the command is done: libp2p and gRPC leave timers behind that would keep
// a stopped server alive for a while.
process.exit(await run(process.argv.slice(2)));
