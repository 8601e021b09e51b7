/**
 * Live logs over the websocket (`/v1/apps/APP/logs/stream`, the session token as a subprotocol,
 * never in the URL): source and text filters (applied server-side), pause, and the server's
 * "missed N lines" notice. An error line links to its group.
 */
import { useEffect, useRef, useState } from 'preact/hooks';
import type { LogLineView, LogStreamMessage } from '../../common/api-types.js';
import { appPath } from '../api.js';
import { appHref } from '../route.js';
import { currentSession } from '../session.js';

const KEEP = 2000;
const ERROR_PREFIX = 'hangar-error ';

type Status = 'connecting' | 'backfill' | 'live' | 'closed';

interface Shown extends LogLineView {
  n: number;
}

/** The error group of a `hangar-error {...}` line, or null. */
function errorGroupOf(line: string): { key: string; type: string } | null {
  if (!line.startsWith(ERROR_PREFIX)) return null;
  try {
    const e = JSON.parse(line.slice(ERROR_PREFIX.length)) as Record<string, unknown>;
    if (typeof e.type !== 'string') return null;
    const text = (v: unknown, fallback: string) => (typeof v === 'string' || typeof v === 'number' ? String(v) : fallback);
    return { key: `${e.type} ${text(e.file, '')}:${text(e.line, '0')}:${text(e.function, '')}`, type: e.type };
  } catch {
    return null;
  }
}

export function LiveLogs({ app }: { app: string }) {
  const [filter, setFilter] = useState({ source: '', grep: '' });
  const [draft, setDraft] = useState({ source: '', grep: '' });
  const [lines, setLines] = useState<Shown[]>([]);
  const [held, setHeld] = useState(0);
  const [paused, setPaused] = useState(false);
  const [status, setStatus] = useState<Status>('connecting');
  const [missed, setMissed] = useState(0);
  const pausedRef = useRef(false);
  const pending = useRef<Shown[]>([]);
  const box = useRef<HTMLDivElement>(null);
  const counter = useRef(0);
  /** Whether the view follows new lines: until the reader scrolls up. */
  const follow = useRef(true);

  useEffect(() => {
    let ws: WebSocket | null = null;
    let retry: ReturnType<typeof setTimeout> | undefined;
    let stopped = false;
    let first = true;
    setLines([]);
    follow.current = true;
    pending.current = [];
    setHeld(0);
    const connect = () => {
      const token = currentSession()?.token;
      if (!token || stopped) return;
      const q = new URLSearchParams({ n: first ? '200' : '0' });
      if (filter.source) q.set('source', filter.source);
      if (filter.grep) q.set('grep', filter.grep);
      const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}${appPath(app, 'logs', 'stream')}?${q.toString()}`;
      setStatus('connecting');
      ws = new WebSocket(url, ['hangar.v1', `hangar.token.${token}`]);
      ws.onopen = () => setStatus('backfill');
      ws.onmessage = (ev: MessageEvent<string>) => {
        const msg = JSON.parse(ev.data) as LogStreamMessage;
        if ('live' in msg) return setStatus('live');
        if ('missed' in msg) return setMissed((m) => m + msg.missed);
        const added = msg.lines.map((l) => ({ ...l, n: counter.current++ }));
        if (pausedRef.current) {
          pending.current = [...pending.current, ...added].slice(-KEEP);
          setHeld(pending.current.length);
        } else {
          setLines((old) => [...old, ...added].slice(-KEEP));
        }
      };
      ws.onclose = () => {
        setStatus('closed');
        first = false;
        if (!stopped) retry = setTimeout(connect, 2000);
      };
    };
    connect();
    return () => {
      stopped = true;
      clearTimeout(retry);
      ws?.close();
    };
  }, [app, filter.source, filter.grep]);

  // Follow the tail unless the reader scrolled up.
  useEffect(() => {
    const el = box.current;
    if (el && follow.current) el.scrollTop = el.scrollHeight;
  }, [lines]);

  const togglePause = () => {
    const next = !paused;
    pausedRef.current = next;
    setPaused(next);
    if (!next && pending.current.length) {
      const add = pending.current;
      pending.current = [];
      setHeld(0);
      setLines((old) => [...old, ...add].slice(-KEEP));
    }
  };

  return (
    <section aria-labelledby="logs-h" class="card wide">
      <div class="bar">
        <h2 id="logs-h">Live logs</h2>
        <span class={`badge stream-${status}`} data-stream={status}>
          {status}
        </span>
      </div>
      <form
        class="filters"
        onSubmit={(e) => {
          e.preventDefault();
          setFilter({ source: draft.source.trim(), grep: draft.grep.trim() });
        }}
      >
        <label>
          Source
          <input
            list="log-sources"
            placeholder="web, web.1, router…"
            value={draft.source}
            onInput={(e) => setDraft({ ...draft, source: e.currentTarget.value })}
          />
        </label>
        <datalist id="log-sources">
          {['web', 'worker', 'router', 'release', 'build', 'hangar'].map((s) => (
            <option key={s} value={s} />
          ))}
        </datalist>
        <label>
          Text
          <input
            type="search"
            placeholder="contains…"
            value={draft.grep}
            onInput={(e) => setDraft({ ...draft, grep: e.currentTarget.value })}
          />
        </label>
        <button type="submit">Filter</button>
        <button type="button" aria-pressed={paused} onClick={togglePause}>
          {paused ? `Resume${held ? ` (${held} new)` : ''}` : 'Pause'}
        </button>
      </form>
      {missed > 0 && (
        <p class="notice" role="status">
          The stream skipped {missed} lines while this page was too slow to take them.
        </p>
      )}
      <div
        class="log"
        ref={box}
        onScroll={(e) => {
          const el = e.currentTarget;
          follow.current = el.scrollHeight - el.scrollTop - el.clientHeight < 40;
        }}
        tabIndex={0}
        role="log"
        aria-label="Log lines"
        aria-live="off"
      >
        {lines.length === 0 && <p class="muted">No lines yet{filter.source || filter.grep ? ' for this filter' : ''}.</p>}
        {lines.map((l) => {
          const group = errorGroupOf(l.line);
          return (
            <div key={l.n} class={`line ${l.stream}`}>
              <time dateTime={l.ts} title={new Date(l.ts).toLocaleString()}>
                {l.ts.slice(11, 23)}
              </time>{' '}
              <span class="src">{l.source}</span>{' '}
              {group ? (
                <a href={appHref(app, 'errors', group.key)} class="err-link">
                  {group.type}: open the error group
                </a>
              ) : (
                <span class="text">{l.line}</span>
              )}
            </div>
          );
        })}
      </div>
    </section>
  );
}
