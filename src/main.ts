#!/usr/bin/env bun
// Entry: argv -> one subcommand in src/cli/.
import { run } from "./cli/run.ts";

process.exitCode = await run(process.argv.slice(2));
