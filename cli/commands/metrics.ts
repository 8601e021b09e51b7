/**
 * `hangar metrics -a APP [--since 1h] [--json]` and `hangar metrics --agent NAME [--json]`.
 */
import type { Command } from 'commander';
import type { AgentMetricsView, AppMetricsView, TrafficView } from '../../common/api-types.js';
import { compareProcessTypes, formatBytes, formatJson, formatPairs, formatTable, heading } from '../output.js';
import { atEdge, badInput, type CliContext } from './context.js';

/** Checks `--since`: `30s`, `15m`, `1h`, `7d`. */
export function parseSinceOption(text: string): string {
  if (!/^\d{1,6}[smhd]$/.test(text)) throw badInput(`--since "${text}" is not a duration: write e.g. 30s, 15m, 1h or 7d`);
  return text;
}

const ms = (v: number) => `${Math.round(v)} ms`;
const pct = (v: number) => `${v.toFixed(1)}%`;

function trafficCells(t: TrafficView | null): string[] {
  if (!t) return ['-', '-', '-', '-', '-'];
  return [t.rps.toFixed(2), ms(t.p50Ms), ms(t.p95Ms), ms(t.p99Ms), String(t.status['5xx'])];
}

/** The human output of an app's metrics. */
export function formatAppMetrics(m: AppMetricsView): string {
  const t = m.traffic;
  let out = heading(`${m.app} since ${m.since}`);
  out += formatPairs([
    ['Requests', `${t.requests} (${t.rps.toFixed(2)}/s)`],
    ['Latency', `p50 ${ms(t.p50Ms)}, p95 ${ms(t.p95Ms)}, p99 ${ms(t.p99Ms)}`],
    ['Status', `2xx ${t.status['2xx']}, 3xx ${t.status['3xx']}, 4xx ${t.status['4xx']}, 5xx ${t.status['5xx']}`],
    ['In flight', String(t.inFlight)],
  ]);
  const types = [...m.types].sort((a, b) => compareProcessTypes(a.type, b.type));
  if (types.length > 0) {
    out += `\n${heading('Process types')}`;
    out += formatTable(
      types.map((ty) => [ty.type, String(ty.instances), pct(ty.cpuPct), formatBytes(ty.rssBytes), ...trafficCells(ty.traffic)]),
      ['TYPE', 'INSTANCES', 'CPU', 'RSS', 'RPS', 'P50', 'P95', 'P99', '5XX'],
    );
  }
  if (m.instances.length > 0) {
    out += `\n${heading('Instances')}`;
    out += formatTable(
      m.instances.map((i) => [i.id, i.release, i.agent, pct(i.cpuPct), formatBytes(i.rssBytes), ...trafficCells(i.traffic)]),
      ['ID', 'RELEASE', 'AGENT', 'CPU', 'RSS', 'RPS', 'P50', 'P95', 'P99', '5XX'],
    );
  } else {
    out += '\nNo instance has reported yet; metrics arrive every 10 s.\n';
  }
  return out;
}

/** The human output of an agent's metrics. */
export function formatAgentMetrics(m: AgentMetricsView): string {
  const h = m.host;
  const v = (k: string) => h[k] ?? 0;
  let out = heading(`${m.agent} (${m.state})`);
  if (m.reportedAt === null) return `${out}No metrics report yet; agents send one every 10 s.\n`;
  out += formatPairs([
    ['Reported', m.reportedAt],
    ['CPU', `${pct(v('cpu_pct'))} (mean ${pct(m.mean.cpu_pct ?? 0)} since ${m.since})`],
    ['Load', `${v('load1').toFixed(2)} ${v('load5').toFixed(2)} ${v('load15').toFixed(2)}`],
    ['Memory', `${formatBytes(v('mem_used_bytes'))} of ${formatBytes(v('mem_total_bytes'))}`],
    ['Disk', `${formatBytes(v('disk_used_bytes'))} of ${formatBytes(v('disk_total_bytes'))}`],
    ['Disk I/O', `read ${formatBytes(v('disk_read_bps'))}/s, write ${formatBytes(v('disk_write_bps'))}/s`],
    ['Network', `in ${formatBytes(v('net_rx_bps'))}/s, out ${formatBytes(v('net_tx_bps'))}/s`],
  ]);
  if (m.instances.length > 0) {
    out += `\n${heading('Instances')}`;
    out += formatTable(
      m.instances.map((i) => [i.app, i.id, i.release, pct(i.cpuPct), formatBytes(i.rssBytes), String(i.processes)]),
      ['APP', 'ID', 'RELEASE', 'CPU', 'RSS', 'PROCESSES'],
    );
  }
  return out;
}

/** Registers `metrics` on `program`. */
export function registerMetricsCommands(program: Command, ctx: CliContext): void {
  const command = program
    .command('metrics')
    .description("an app's metrics per process type and instance (CPU, RSS, requests/s, latency, 5xx), or an agent's")
    .option('-a, --app <app>', 'the app (default: $HANGAR_APP)')
    .option('--agent <name>', "an agent's host metrics instead of an app's")
    .option('--since <duration>', 'window: 30s, 15m, 1h, 7d', '1h')
    .option('--json', 'print the API object as JSON');
  command.action(async (options: { app?: string; agent?: string; since: string; json?: boolean }) => {
    const since = atEdge(command, () => parseSinceOption(options.since));
    const client = await ctx.client();
    if (options.agent) {
      const m = await client.agentMetrics(options.agent, since);
      return ctx.out(options.json ? formatJson(m) : formatAgentMetrics(m));
    }
    const app = options.app ?? ctx.io.env.HANGAR_APP;
    if (!app)
      atEdge(command, () => {
        throw badInput('No app given: pass -a APP (or --agent NAME), or set HANGAR_APP');
      });
    const m = await client.appMetrics(app as string, since);
    ctx.out(options.json ? formatJson(m) : formatAppMetrics(m));
  });
}
