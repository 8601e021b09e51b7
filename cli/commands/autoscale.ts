/**
 * `hangar autoscale TYPE --min N --max M [--p95 MS] [--cpu PCT] -a APP`, `autoscale TYPE --off -a APP`
 * and `hangar autoscale -a APP [--json]` (policies and recent decisions).
 */
import type { Command } from 'commander';
import type { AutoscaleView } from '../../common/api-types.js';
import { formatJson, formatTable, heading } from '../output.js';
import { atEdge, badInput, resolveApp, withAppOption, type CliContext } from './context.js';

/** Flags of `autoscale`. */
export interface AutoscaleFlags {
  min?: string;
  max?: string;
  p95?: string;
  cpu?: string;
  off?: boolean;
}

/** What `autoscale TYPE ...` asks for: a policy, or off. */
export type AutoscaleRequest = { off: true } | { off: false; min: number; max: number; p95Ms: number | null; cpuPct: number | null };

/** Validates the flags of `autoscale TYPE`; throws `BAD_INPUT` listing every problem. */
export function parseAutoscaleFlags(flags: AutoscaleFlags): AutoscaleRequest {
  const problems: string[] = [];
  if (flags.off) {
    if (flags.min !== undefined || flags.max !== undefined || flags.p95 !== undefined || flags.cpu !== undefined) {
      problems.push('--off takes no other flag');
    }
    if (problems.length > 0) throw badInput(problems.join('; '));
    return { off: true };
  }
  const whole = (name: string, v: string | undefined, min: number): number | null => {
    if (v === undefined) return null;
    if (!/^\d+$/.test(v) || Number(v) < min || Number(v) > 100_000) {
      problems.push(`--${name} "${v}" must be a whole number of at least ${min}`);
      return null;
    }
    return Number(v);
  };
  const min = whole('min', flags.min, 0);
  const max = whole('max', flags.max, 1);
  const p95Ms = whole('p95', flags.p95, 1);
  let cpuPct: number | null = null;
  if (flags.cpu !== undefined) {
    if (!/^\d+(\.\d+)?$/.test(flags.cpu) || Number(flags.cpu) <= 0)
      problems.push(`--cpu "${flags.cpu}" must be a percentage above 0, e.g. 70`);
    else cpuPct = Number(flags.cpu);
  }
  if (flags.min === undefined) problems.push('give --min N');
  if (flags.max === undefined) problems.push('give --max M');
  if (min !== null && max !== null && min > max) problems.push('--min must not be above --max');
  if (flags.p95 === undefined && flags.cpu === undefined) problems.push('give a target: --p95 MS and/or --cpu PCT');
  if (problems.length > 0 || min === null || max === null) throw badInput(problems.join('; '));
  return { off: false, min, max, p95Ms, cpuPct };
}

/** The human output of `autoscale -a APP`. */
export function formatAutoscale(v: AutoscaleView): string {
  let out = heading(`${v.app} autoscaling`);
  if (v.policies.length === 0) out += 'No policy; set one with `hangar autoscale web --min 1 --max 4 --p95 500`.\n';
  else {
    out += formatTable(
      v.policies.map((p) => [
        p.type,
        `${p.min}-${p.max}`,
        String(p.quantity),
        [p.p95Ms === null ? '' : `p95 ≤ ${p.p95Ms} ms`, p.cpuPct === null ? '' : `CPU ≤ ${p.cpuPct}%`].filter(Boolean).join(', '),
      ]),
      ['TYPE', 'RANGE', 'NOW', 'TARGET'],
    );
  }
  if (v.decisions.length > 0) {
    out += `\n${heading('Recent decisions')}`;
    out += formatTable(
      v.decisions.map((d) => [d.ts, d.type, `${d.from} → ${d.to}`, d.reason]),
      ['TIME', 'TYPE', 'CHANGE', 'REASON'],
    );
  }
  return out;
}

/** Registers `autoscale` on `program`. */
export function registerAutoscaleCommands(program: Command, ctx: CliContext): void {
  const command = withAppOption(
    program
      .command('autoscale [type]')
      .description('scale a process type automatically on p95 latency and/or CPU, or show the policies and decisions')
      .option('--min <n>', 'fewest instances')
      .option('--max <m>', 'most instances')
      .option('--p95 <ms>', 'target p95 latency of the app, ms (web)')
      .option('--cpu <pct>', 'target mean CPU per instance, % of one core')
      .option('--off', 'stop autoscaling the type (its current quantity stays)')
      .option('--json', 'print the API object as JSON'),
  );
  command.action(async (type: string | undefined, flags: AutoscaleFlags & { json?: boolean }) => {
    const app = resolveApp(command, ctx);
    if (type === undefined) {
      if (flags.min !== undefined || flags.max !== undefined || flags.off) {
        atEdge(command, () => {
          throw badInput('name the process type: hangar autoscale web --min 1 --max 4 --p95 500');
        });
      }
      const view = await (await ctx.client()).getAutoscale(app);
      return ctx.out(flags.json ? formatJson(view) : formatAutoscale(view));
    }
    if (!/^[A-Za-z0-9_-]{1,63}$/.test(type))
      atEdge(command, () => {
        throw badInput(`"${type}" is not a process type`);
      });
    const req = atEdge(command, () => parseAutoscaleFlags(flags));
    const client = await ctx.client();
    const view = req.off
      ? await client.removeAutoscale(app, type)
      : await client.setAutoscale(app, type, { min: req.min, max: req.max, p95Ms: req.p95Ms, cpuPct: req.cpuPct });
    if (flags.json) return ctx.out(formatJson(view));
    ctx.out(
      req.off
        ? `Autoscaling of ${type} is off; it keeps its current quantity.\n`
        : `Autoscaling ${type} of ${app} between ${req.min} and ${req.max}.\n`,
    );
  });
}
