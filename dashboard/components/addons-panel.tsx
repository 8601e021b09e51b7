/** The app's add-ons with their state (URLs with the password masked, as the API gives them). */
import type { AddonView } from '../../common/api-types.js';
import { api, appPath } from '../api.js';
import { usePoll } from '../use-poll.js';
import { Problem } from './problem.js';
import { TimeAgo } from './time-ago.js';

export function AddonsPanel({ app }: { app: string }) {
  const addons = usePoll((signal) => api<{ addons: AddonView[] }>('GET', appPath(app, 'addons'), { signal }).then((r) => r.addons), 5000, [
    app,
  ]);
  return (
    <section aria-labelledby="addons-h" class="card">
      <h2 id="addons-h">Add-ons</h2>
      <Problem error={addons.error} />
      {addons.data && addons.data.length === 0 && (
        <p class="muted">
          None: <code>hangar addons:create postgres -a {app}</code>
        </p>
      )}
      {addons.data && addons.data.length > 0 && (
        <ul class="addons">
          {addons.data.map((a) => (
            <li key={a.name} data-addon={a.name}>
              <strong>{a.name}</strong> <span class={`badge state-${a.state}`}>{a.state}</span> on {a.agent}
              <div class="mono small">
                {a.configVar} = {a.url ?? '(not yet)'}
              </div>
              <div class="muted small">
                {a.message} · since <TimeAgo iso={a.since} />
              </div>
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}
