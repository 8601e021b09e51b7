#!/usr/bin/env node
// The one `hangar` binary: a thin shim over the compiled CLI (run `npm run build` first).
import { run } from '../dist/cli/hangar.js';

process.exitCode = await run(process.argv);
