/** Follows a deploy (build, release phase, rollout) as `hangar deploy` prints it, by polling. */
import { useEffect, useRef, useState } from 'preact/hooks';
import type { DeployView } from '../../common/api-types.js';
import { api, ApiError, appPath } from '../api.js';

export function DeployProgress({ app, first, onDone }: { app: string; first: DeployView; onDone?: (d: DeployView) => void }) {
  const [deploy, setDeploy] = useState(first);
  const [lines, setLines] = useState(first.lines);
  const [problem, setProblem] = useState<string | null>(null);
  const done = useRef(onDone);
  done.current = onDone;

  useEffect(() => {
    let after = first.next;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let stopped = false;
    const finished = (d: DeployView) => d.status === 'succeeded' || d.status === 'failed';
    const poll = async () => {
      try {
        const { deploy: d } = await api<{ deploy: DeployView }>('GET', `${appPath(app, 'deploys', first.id)}?after=${after}`);
        if (stopped) return;
        after = Math.max(after, d.next);
        setDeploy(d);
        if (d.lines.length) setLines((old) => [...old, ...d.lines].slice(-2000));
        setProblem(null);
        if (finished(d)) return done.current?.(d);
      } catch (err) {
        if (stopped) return;
        setProblem(err instanceof ApiError ? err.message : String(err));
      }
      timer = setTimeout(() => void poll(), 400);
    };
    if (finished(first)) done.current?.(first);
    else timer = setTimeout(() => void poll(), 300);
    return () => {
      stopped = true;
      clearTimeout(timer);
    };
  }, [app, first.id]);

  return (
    <div class="deploy" data-status={deploy.status} aria-live="polite">
      <p>
        Deploy {deploy.release ?? ''}: <strong class={`status-${deploy.status}`}>{deploy.status.replace('_', ' ')}</strong>
        {deploy.error && <span class="error"> — {deploy.error}</span>}
      </p>
      {problem && <p class="error">{problem}</p>}
      <pre class="deploy-lines" tabIndex={0} aria-label="Deploy output">
        {lines.map((l) => l.line).join('\n')}
      </pre>
    </div>
  );
}
