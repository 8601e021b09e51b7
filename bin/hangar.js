#!/usr/bin/env node
// The one `hangar` binary: a thin shim over the compiled CLI (run `npm run build` first).
import { main } from '../dist/cli/main.js';

process.exitCode = await main(process.argv);
