/** Charts of an app's traffic and resources (`GET /v1/apps/APP/metrics`) over 1 h, 24 h or 7 d. */
import { useMemo, useState } from 'preact/hooks';
import type { AppMetricsView, AutoscaleView, ReleaseView } from '../../common/api-types.js';
import { api, appPath } from '../api.js';
import { formatBytes, formatMs, formatPercent, formatRate } from '../format.js';
import { usePoll } from '../use-poll.js';
import { Chart, type ChartMark } from './chart.js';
import { Problem } from './problem.js';

const WINDOWS = ['1h', '24h', '7d'] as const;

export function MetricsPanel({ app }: { app: string }) {
  const [since, setSince] = useState<(typeof WINDOWS)[number]>('1h');
  const metrics = usePoll(
    (signal) => api<{ metrics: AppMetricsView }>('GET', `${appPath(app, 'metrics')}?since=${since}`, { signal }).then((r) => r.metrics),
    5000,
    [app, since],
  );
  // Deploys and autoscaling decisions, marked on the time axis.
  const events = usePoll(
    async (signal): Promise<ChartMark[]> => {
      const [{ releases }, autoscale] = await Promise.all([
        api<{ releases: ReleaseView[] }>('GET', appPath(app, 'releases'), { signal }),
        api<{ autoscale: AutoscaleView }>('GET', appPath(app, 'autoscale'), { signal }).then(
          (r) => r.autoscale,
          () => null,
        ),
      ]);
      const all: ChartMark[] = [
        ...releases.map((r) => ({ ts: Date.parse(r.createdAt) / 1000, label: r.name, kind: 'deploy' as const })),
        ...(autoscale?.decisions ?? []).map((d) => ({
          ts: Date.parse(d.ts) / 1000,
          label: `${d.type} ${d.from}→${d.to}`,
          kind: 'autoscale' as const,
        })),
      ];
      return all.sort((a, b) => a.ts - b.ts);
    },
    10_000,
    [app],
  );
  const marks = events.data ?? [];
  const m = metrics.data;
  const times = useMemo(() => (m?.series ?? []).map((p) => Date.parse(p.ts) / 1000), [m]);
  const series = m?.series ?? [];
  const range = useMemo(
    (): [number, number] | undefined => (m ? [Date.parse(m.since) / 1000, Date.parse(m.until) / 1000] : undefined),
    [m],
  );
  return (
    <section aria-labelledby="metrics-h" class="card wide">
      <div class="bar">
        <h2 id="metrics-h">Metrics</h2>
        <div role="group" aria-label="Time window" class="segmented">
          {WINDOWS.map((w) => (
            <button key={w} type="button" aria-pressed={since === w} onClick={() => setSince(w)}>
              {w}
            </button>
          ))}
        </div>
      </div>
      <Problem error={metrics.error} />
      {m && (
        <>
          <p class="summary">
            {formatRate(m.traffic.rps)} · p50 {formatMs(m.traffic.p50Ms)} · p95 {formatMs(m.traffic.p95Ms)} · p99{' '}
            {formatMs(m.traffic.p99Ms)} · {m.traffic.status['5xx']} × 5xx of {m.traffic.requests} requests
          </p>
          <div class="charts">
            <Chart
              title="Requests"
              marks={marks}
              range={range}
              times={times}
              series={[
                { label: 'req/s', values: series.map((p) => p.rps), format: (v) => formatRate(v) },
                { label: '5xx', values: series.map((p) => p.status5xx), scale: 'y2' },
              ]}
            />
            <Chart
              title="p95 latency"
              marks={marks}
              range={range}
              times={times}
              series={[{ label: 'p95', values: series.map((p) => p.p95Ms), format: formatMs }]}
            />
            <Chart
              title="CPU and memory"
              marks={marks}
              range={range}
              times={times}
              series={[
                { label: 'CPU', values: series.map((p) => p.cpuPct), format: (v) => formatPercent(v) },
                { label: 'RSS', values: series.map((p) => p.rssBytes), scale: 'y2', format: formatBytes },
              ]}
            />
          </div>
          <p class="muted small" data-marks={marks.length}>
            Dashed lines: releases (green) and autoscaling decisions (purple)
            {marks.length > 0 &&
              `: ${marks
                .slice(-6)
                .map((k) => `${k.label} at ${new Date(k.ts * 1000).toLocaleTimeString()}`)
                .join(', ')}`}
            .
          </p>
          {m.types.length > 0 && (
            <div class="scroll">
              <table class="types">
                <thead>
                  <tr>
                    <th scope="col">Type</th>
                    <th scope="col">Instances</th>
                    <th scope="col">CPU</th>
                    <th scope="col">Memory</th>
                    <th scope="col">Requests</th>
                    <th scope="col">p50 / p95 / p99</th>
                  </tr>
                </thead>
                <tbody>
                  {m.types.map((t) => (
                    <tr key={t.type}>
                      <th scope="row">{t.type}</th>
                      <td>{t.instances}</td>
                      <td>{formatPercent(t.cpuPct)}</td>
                      <td>{formatBytes(t.rssBytes)}</td>
                      <td>{t.traffic ? formatRate(t.traffic.rps) : '–'}</td>
                      <td>
                        {t.traffic ? `${formatMs(t.traffic.p50Ms)} / ${formatMs(t.traffic.p95Ms)} / ${formatMs(t.traffic.p99Ms)}` : '–'}
                      </td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          )}
        </>
      )}
    </section>
  );
}
