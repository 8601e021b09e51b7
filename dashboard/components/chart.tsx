/** A uPlot time-series chart that follows its container's width and the colour scheme. */
import { useEffect, useRef } from 'preact/hooks';
import uPlot from 'uplot';

export interface ChartSeries {
  label: string;
  values: (number | null)[];
  /** Which y scale: left (`y`) or right (`y2`). Default `y`. */
  scale?: 'y' | 'y2';
  format?: (v: number) => string;
}

/** An event drawn as a dashed vertical line: a deploy or an autoscaling decision. */
export interface ChartMark {
  /** Unix seconds. */
  ts: number;
  label: string;
  kind: 'deploy' | 'autoscale';
}

export interface ChartProps {
  title: string;
  /** Unix seconds. */
  times: number[];
  series: ChartSeries[];
  marks?: ChartMark[];
  /** The time window shown, Unix seconds (default: the data's own span). */
  range?: [number, number];
}

const MARK_COLORS: Record<ChartMark['kind'], string> = { deploy: '#2f9e61', autoscale: '#c0399f' };

const COLORS = ['#5b6cf0', '#e0663d', '#2f9e61', '#c0399f'];

export function Chart({ title, times, series, marks = [], range }: ChartProps) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const marksRef = useRef(marks);
  marksRef.current = marks;
  const rangeRef = useRef(range);
  rangeRef.current = range;
  const shape = series.map((s) => `${s.label}:${s.scale ?? 'y'}`).join('|');

  useEffect(() => {
    const el = box.current;
    if (!el) return;
    const dark = matchMedia('(prefers-color-scheme: dark)').matches;
    const axis = {
      stroke: dark ? '#b8bcc8' : '#444a57',
      grid: { stroke: dark ? '#2a2e38' : '#e6e8ee' },
      ticks: { stroke: dark ? '#2a2e38' : '#e6e8ee' },
    };
    const yFormat = series.find((s) => (s.scale ?? 'y') === 'y')?.format;
    const y2 = series.find((s) => s.scale === 'y2');
    const ticksWith = (f?: (v: number) => string) => (_u: uPlot, ticks: number[]) => ticks.map((t) => (f ? f(t) : String(t)));
    const opts: uPlot.Options = {
      width: Math.max(260, el.clientWidth),
      height: 200,
      title,
      scales: {
        // One point would otherwise get a span of years around it.
        x: { time: true, range: (_u, min, max) => rangeRef.current ?? [min, max] },
      },
      hooks: {
        draw: [
          (u: uPlot) => {
            const { ctx } = u;
            const { left, top, width, height } = u.bbox;
            const px = devicePixelRatio || 1;
            ctx.save();
            ctx.setLineDash([4 * px, 4 * px]);
            ctx.font = `${11 * px}px system-ui, sans-serif`;
            for (const m of marksRef.current) {
              const x = Math.round(u.valToPos(m.ts, 'x', true));
              if (x < left || x > left + width) continue;
              ctx.strokeStyle = MARK_COLORS[m.kind];
              ctx.fillStyle = MARK_COLORS[m.kind];
              ctx.beginPath();
              ctx.moveTo(x, top);
              ctx.lineTo(x, top + height);
              ctx.stroke();
              ctx.fillText(m.label, x + 3 * px, top + 12 * px);
            }
            ctx.restore();
          },
        ],
      },
      axes: [
        axis,
        { ...axis, values: ticksWith(yFormat), size: 80 },
        ...(y2 ? [{ ...axis, scale: 'y2', side: 1, size: 80, grid: { show: false }, values: ticksWith(y2.format) }] : []),
      ],
      series: [
        {},
        ...series.map((s, i) => ({
          label: s.label,
          scale: s.scale ?? 'y',
          stroke: COLORS[i % COLORS.length],
          width: 2,
          points: { show: true, size: 5 },
          value: (_u: uPlot, v: number | null) => (v === null ? '–' : s.format ? s.format(v) : String(v)),
        })),
      ],
    };
    const p = new uPlot(opts, [times, ...series.map((s) => s.values)] as uPlot.AlignedData, el);
    plot.current = p;
    const resize = new ResizeObserver(() => p.setSize({ width: Math.max(260, el.clientWidth), height: 200 }));
    resize.observe(el);
    return () => {
      resize.disconnect();
      p.destroy();
      plot.current = null;
    };
  }, [title, shape]);

  useEffect(() => {
    plot.current?.setData([times, ...series.map((s) => s.values)] as uPlot.AlignedData);
  }, [times, series, marks, range?.[0], range?.[1]]);

  return <div class="chart" ref={box} role="img" aria-label={`${title}: ${times.length} points`} data-points={times.length} />;
}
