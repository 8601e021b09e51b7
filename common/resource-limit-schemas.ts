/**
 * The zod schemas of app.json's `formation.TYPE.memory`/`cpu` (coordinator and CLI); the sizes,
 * bounds and formatting they use are in resource-limits.ts, which stays free of zod for the agent.
 */
import { z } from 'zod';
import { MAX_CPU_CORES, MAX_MEMORY_BYTES, MIN_CPU_CORES, MIN_MEMORY_BYTES, parseMemorySize } from './resource-limits.js';

/**
 * A memory limit as text (`"512M"`), between {@link MIN_MEMORY_BYTES} and {@link MAX_MEMORY_BYTES}.
 * It stays text (what is stored is parsed again); {@link parseMemorySize} gives its bytes.
 */
export const memoryLimitSchema = z.string({ error: 'write a memory limit as a size such as "512M" or "1G"' }).superRefine((text, ctx) => {
  const bytes = parseMemorySize(text);
  if (bytes === null) ctx.addIssue({ code: 'custom', message: `"${text}" is not a size; write one such as "512M" or "1G"` });
  else if (bytes < MIN_MEMORY_BYTES || bytes > MAX_MEMORY_BYTES) {
    ctx.addIssue({ code: 'custom', message: `${text} is out of range; give between 32M and 1T` });
  }
});

/** A CPU limit in cores (`0.5` = half of one core, `2` = two cores). */
export const cpuLimitSchema = z
  .number({ error: 'write a CPU limit as a number of cores such as 0.5 or 2' })
  .min(MIN_CPU_CORES, 'give at least 0.01 of a core')
  .max(MAX_CPU_CORES, 'give at most 1024 cores');
