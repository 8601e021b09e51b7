/** Config vars, values masked until clicked; a read token may not see them at all (the API says so). */
import { useState } from 'preact/hooks';
import { api, appPath } from '../api.js';
import { usePoll } from '../use-poll.js';
import { Problem } from './problem.js';

export function ConfigPanel({ app, canRead }: { app: string; canRead: boolean }) {
  return (
    <section aria-labelledby="config-h" class="card">
      <h2 id="config-h">Config vars</h2>
      {canRead ? <ConfigList app={app} /> : <p class="muted">Config values need a deploy token.</p>}
    </section>
  );
}

function ConfigList({ app }: { app: string }) {
  const config = usePoll(
    (signal) => api<{ config: Record<string, string> }>('GET', appPath(app, 'config'), { signal }).then((r) => r.config),
    10_000,
    [app],
  );
  const [shown, setShown] = useState<ReadonlySet<string>>(new Set());
  const toggle = (key: string) =>
    setShown((old) => {
      const next = new Set(old);
      if (next.has(key)) next.delete(key);
      else next.add(key);
      return next;
    });
  if (config.error) return <Problem error={config.error} />;
  if (!config.data) return <p class="muted">Loading…</p>;
  const keys = Object.keys(config.data).sort();
  if (keys.length === 0) return <p class="muted">None.</p>;
  return (
    <dl class="config">
      {keys.map((k) => (
        <div key={k} data-key={k}>
          <dt class="mono">{k}</dt>
          <dd>
            <button
              type="button"
              class="reveal mono"
              aria-pressed={shown.has(k)}
              aria-label={shown.has(k) ? `Hide ${k}` : `Reveal ${k}`}
              onClick={() => toggle(k)}
            >
              {shown.has(k) ? config.data?.[k] : '••••••••'}
            </button>
          </dd>
        </div>
      ))}
    </dl>
  );
}
