/**
 * `hangar agents`: the servers that joined the coordinator.
 */
import type { Command } from 'commander';
import { formatJson, formatTable, heading, timeAgo } from '../output.js';
import type { CliContext } from './context.js';

/** Registers `agents` on `program`. */
export function registerAgentsCommands(program: Command, ctx: CliContext): void {
  program
    .command('agents')
    .description('list the agents (servers) and their capacity')
    .option('--json', 'print the API objects as a JSON array')
    .action(async (options: { json?: boolean }) => {
      const agents = await (await ctx.client()).listAgents();
      if (options.json) return ctx.out(formatJson(agents));
      if (agents.length === 0) {
        return ctx.out(
          'No agents have joined yet; start one on each server with `hangar agent --coordinator HOST:PORT --join-token TOKEN`.\n',
        );
      }
      const now = ctx.clock.now();
      ctx.out(heading('Agents'));
      ctx.out(
        formatTable(
          agents.map((agent) => [
            agent.name,
            agent.state,
            `${agent.address} (router :${agent.routerPort})`,
            `${agent.instances}/${agent.capacity.maxInstances}`,
            `${agent.capacity.cpus} cpu, ${agent.capacity.memoryMb} MB`,
            typeof agent.cpuPct === 'number' ? `${agent.cpuPct.toFixed(1)}%` : '-',
            typeof agent.memoryUsedMb === 'number' ? `${agent.memoryUsedMb} MB` : '-',
            timeAgo(agent.lastSeen, now),
            agent.version,
          ]),
          ['NAME', 'STATE', 'ADDRESS', 'INSTANCES', 'CAPACITY', 'CPU', 'MEMORY', 'LAST SEEN', 'VERSION'],
        ),
      );
    });

  program
    .command('agents:remove')
    .description('remove an agent: revokes its credential and moves its instances to other agents')
    .argument('<name>', 'the agent, as `hangar agents` shows it')
    .action(async (name: string) => {
      const apps = await (await ctx.client()).removeAgent(name);
      ctx.out(
        `Removed ${name}; it can no longer connect.` +
          (apps.length > 0 ? ` Its instances of ${apps.join(', ')} move to other agents.` : '') +
          `\nTo let it join again, delete credential.json in its data dir and restart it.\n`,
      );
    });
}
