/** Grouped Python exceptions (`GET /v1/apps/APP/errors`): count, release, first/last seen, last traceback. */
import type { ErrorGroupView } from '../../common/api-types.js';
import { api, appPath } from '../api.js';
import { usePoll } from '../use-poll.js';
import { Problem } from './problem.js';
import { TimeAgo } from './time-ago.js';

export function ErrorsPanel({ app, focus }: { app: string; focus?: string | undefined }) {
  const errors = usePoll(
    (signal) => api<{ errors: ErrorGroupView[] }>('GET', appPath(app, 'errors'), { signal }).then((r) => r.errors),
    5000,
    [app],
  );
  return (
    <section aria-labelledby="errors-h" class="card wide">
      <h2 id="errors-h">Errors</h2>
      <Problem error={errors.error} />
      {errors.data && errors.data.length === 0 && (
        <p class="muted">No exceptions captured. Tracebacks of Django views show up here, grouped.</p>
      )}
      {errors.data?.map((g) => {
        const key = `${g.type} ${g.location}`;
        return (
          <details key={key} class="error-group" data-error={key} open={focus === key}>
            <summary>
              <strong>{g.type}</strong> at <span class="mono">{g.location}</span>
              <span class="count">
                {g.count} × · last <TimeAgo iso={g.lastSeen} /> in {g.release}
              </span>
            </summary>
            <p>{g.message}</p>
            <p class="muted small">
              First seen <TimeAgo iso={g.firstSeen} />, last seen <TimeAgo iso={g.lastSeen} /> (release {g.release})
            </p>
            <pre class="traceback" tabIndex={0}>
              {g.traceback}
            </pre>
          </details>
        );
      })}
    </section>
  );
}
