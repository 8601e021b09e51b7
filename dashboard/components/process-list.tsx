/** The process list (`hangar ps`) with each instance's CPU and memory from the metrics. */
import type { InstanceMetricsView, PsRow } from '../../common/api-types.js';
import { formatBytes, formatPercent } from '../format.js';
import { TimeAgo } from './time-ago.js';

export function ProcessList({ ps, instances }: { ps: PsRow[]; instances: InstanceMetricsView[] }) {
  const usage = new Map(instances.map((i) => [`${i.id}@${i.release}`, i]));
  return (
    <section aria-labelledby="ps-h" class="card wide">
      <h2 id="ps-h">Processes</h2>
      {ps.length === 0 ? (
        <p class="muted">Nothing runs.</p>
      ) : (
        <div class="scroll">
          <table class="ps">
            <thead>
              <tr>
                <th scope="col">Instance</th>
                <th scope="col">State</th>
                <th scope="col">Release</th>
                <th scope="col">Agent</th>
                <th scope="col">CPU</th>
                <th scope="col">Memory</th>
                <th scope="col">Restarts</th>
                <th scope="col">Since</th>
              </tr>
            </thead>
            <tbody>
              {ps.map((p) => {
                const u = usage.get(`${p.id}@${p.release}`);
                return (
                  <tr key={`${p.id}@${p.release}`} data-instance={p.id} data-state={p.state}>
                    <th scope="row" class="mono">
                      {p.id}
                    </th>
                    <td>
                      <span class={`badge state-${p.state}`}>{p.state}</span>
                    </td>
                    <td>{p.release}</td>
                    <td>{p.agent}</td>
                    <td>{u ? formatPercent(u.cpuPct) : '–'}</td>
                    <td>{u ? formatBytes(u.rssBytes) : '–'}</td>
                    <td>{p.restarts}</td>
                    <td>
                      <TimeAgo iso={p.since} />
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}
